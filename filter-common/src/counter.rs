//! The verdict counters: what the program did with each packet and why, one per-CPU cell per
//! (verdict, reason).

/// One counter cell: packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    /// Packets counted.
    pub packets: u64,
    /// Bytes of those packets (whole frame, from the Ethernet header on).
    pub bytes: u64,
}

/// What the program did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Passed on to the stack.
    Pass,
    /// Dropped (enforce mode).
    Drop,
    /// Would have been dropped; passed because the filter is in monitor mode.
    Monitor,
}

impl Verdict {
    /// The `verdict` label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::Monitor => "monitor",
        }
    }
}

/// Why the program decided as it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The source is inside an allowed prefix.
    Allowed,
    /// The source is outside every allowed prefix.
    NotAllowed,
    /// Not a TCP or UDP packet to a protected port (or not IP at all).
    Unprotected,
    /// A fragment that cannot be judged by its port.
    Fragment,
    /// Headers truncated or invalid where they had to be read.
    Malformed,
}

impl Reason {
    /// The `reason` label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::NotAllowed => "not_allowed",
            Self::Unprotected => "unprotected",
            Self::Fragment => "fragment",
            Self::Malformed => "malformed",
        }
    }
}

/// Index of each counter in the per-CPU counters array: one per (verdict, reason) the program
/// can produce.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Source allowed, packet passed.
    PassAllowed = 0,
    /// Not judged: not TCP/UDP to a protected port.
    PassUnprotected = 1,
    /// A non-first fragment passed (strict fragments off).
    PassFragment = 2,
    /// Dropped: source not allowed.
    DropNotAllowed = 3,
    /// Dropped: an unjudgeable fragment from a source not allowed.
    DropFragment = 4,
    /// Dropped: malformed headers.
    DropMalformed = 5,
    /// Monitor mode: would have dropped, source not allowed.
    MonitorNotAllowed = 6,
    /// Monitor mode: would have dropped, fragment.
    MonitorFragment = 7,
    /// Monitor mode: would have dropped, malformed.
    MonitorMalformed = 8,
}

impl Counter {
    /// Number of counters; the size of the counters map.
    pub const COUNT: u32 = 9;

    /// The drop counters are contiguous, and each monitor counter sits this far after the drop
    /// counter of the same reason; the program turns a drop into monitor by adding it.
    pub const MONITOR_OFFSET: u32 = 3;

    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::PassAllowed,
        Self::PassUnprotected,
        Self::PassFragment,
        Self::DropNotAllowed,
        Self::DropFragment,
        Self::DropMalformed,
        Self::MonitorNotAllowed,
        Self::MonitorFragment,
        Self::MonitorMalformed,
    ];

    /// The counter for a packet that is not passed outright: dropped when enforcing, counted as
    /// monitor otherwise.
    #[inline(always)]
    #[must_use]
    pub const fn refused(reason: Reason, enforce: bool) -> Self {
        match (reason, enforce) {
            (Reason::Fragment, true) => Self::DropFragment,
            (Reason::Fragment, false) => Self::MonitorFragment,
            (Reason::Malformed, true) => Self::DropMalformed,
            (Reason::Malformed, false) => Self::MonitorMalformed,
            (_, true) => Self::DropNotAllowed,
            (_, false) => Self::MonitorNotAllowed,
        }
    }

    /// The verdict this counter records.
    #[must_use]
    pub const fn verdict(self) -> Verdict {
        match self {
            Self::PassAllowed | Self::PassUnprotected | Self::PassFragment => Verdict::Pass,
            Self::DropNotAllowed | Self::DropFragment | Self::DropMalformed => Verdict::Drop,
            Self::MonitorNotAllowed | Self::MonitorFragment | Self::MonitorMalformed => {
                Verdict::Monitor
            }
        }
    }

    /// The reason this counter records.
    #[must_use]
    pub const fn reason(self) -> Reason {
        match self {
            Self::PassAllowed => Reason::Allowed,
            Self::PassUnprotected => Reason::Unprotected,
            Self::PassFragment | Self::DropFragment | Self::MonitorFragment => Reason::Fragment,
            Self::DropNotAllowed | Self::MonitorNotAllowed => Reason::NotAllowed,
            Self::DropMalformed | Self::MonitorMalformed => Reason::Malformed,
        }
    }

    /// The XDP action for this counter: only the drop counters drop.
    #[must_use]
    pub const fn drops(self) -> bool {
        matches!(self.verdict(), Verdict::Drop)
    }
}

#[cfg(test)]
mod tests {
    use super::{Counter, Reason, Verdict};

    /// The program's arithmetic on counter indices: drop counters are contiguous, and monitor =
    /// drop + MONITOR_OFFSET for every reason a refusal can carry.
    #[test]
    fn monitor_counters_sit_monitor_offset_after_drop_counters() {
        for reason in [Reason::NotAllowed, Reason::Fragment, Reason::Malformed] {
            let drop = Counter::refused(reason, true) as u32;
            let monitor = Counter::refused(reason, false) as u32;
            assert_eq!(monitor, drop + Counter::MONITOR_OFFSET, "{reason:?}");
        }
        for counter in Counter::ALL {
            let index = counter as u32;
            let in_drop_range =
                index.wrapping_sub(Counter::DropNotAllowed as u32) < Counter::MONITOR_OFFSET;
            assert_eq!(
                in_drop_range,
                counter.verdict() == Verdict::Drop,
                "{counter:?}"
            );
        }
    }
}
