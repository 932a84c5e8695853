//! The settings word (the mode flags) and the [`Policy`] around it: what userspace writes and
//! the program tests on every packet.

use crate::PORT_WORDS;

/// The settings word: the filter's mode flags. The one encoding of the flags, for the daemon
/// that writes them, the program that tests them and `hookwall status` that reads them back.
///
/// The flags sit in the low half of the word; the high half is always 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    flags: u32,
    _reserved: u32,
}

impl Settings {
    /// Drop what is not allowed (otherwise count it as `monitor` and pass it).
    const ENFORCE: u32 = 1;
    /// Judge non-first fragments by their source (they carry no port).
    const STRICT_FRAGMENTS: u32 = 2;
    /// Benchmark only: skip the IPv6 narrow bitmap, so that every partial block asks the trie
    /// (the plain-trie baseline). Never set by a config.
    const SKIP_NARROW: u32 = 4;

    /// The settings of a config: enforce or monitor, strict fragments or not.
    #[inline(always)]
    #[must_use]
    pub const fn new(enforce: bool, strict_fragments: bool) -> Self {
        let mut flags = 0;
        if enforce {
            flags |= Self::ENFORCE;
        }
        if strict_fragments {
            flags |= Self::STRICT_FRAGMENTS;
        }
        Self::from_flags(flags)
    }

    #[inline(always)]
    const fn from_flags(flags: u32) -> Self {
        Self {
            flags,
            _reserved: 0,
        }
    }

    /// The settings held in a settings word (its high half is ignored).
    #[inline(always)]
    #[must_use]
    pub const fn from_word(word: u64) -> Self {
        // Truncation keeps the low half, where the flags are.
        Self::from_flags(word as u32)
    }

    /// The settings word, as userspace stores it.
    #[inline(always)]
    #[must_use]
    pub const fn word(self) -> u64 {
        self.flags as u64
    }

    /// Whether what is not allowed is dropped (enforce mode); otherwise it is passed and counted
    /// as `monitor`.
    #[inline(always)]
    #[must_use]
    pub const fn enforce(self) -> bool {
        self.flags & Self::ENFORCE != 0
    }

    /// Whether non-first fragments are judged by their source (otherwise they pass).
    #[inline(always)]
    #[must_use]
    pub const fn strict_fragments(self) -> bool {
        self.flags & Self::STRICT_FRAGMENTS != 0
    }

    /// Whether the IPv6 narrow bitmap is skipped (benchmark only).
    #[inline(always)]
    #[must_use]
    pub const fn skip_narrow(self) -> bool {
        self.flags & Self::SKIP_NARROW != 0
    }

    /// These settings with the narrow bitmap skipped: the benchmark's plain-trie baseline.
    #[must_use]
    pub const fn with_skip_narrow(self) -> Self {
        Self::from_flags(self.flags | Self::SKIP_NARROW)
    }

    /// These settings without the benchmark's skip of the narrow bitmap.
    #[must_use]
    pub const fn without_skip_narrow(self) -> Self {
        Self::from_flags(self.flags & !Self::SKIP_NARROW)
    }

    /// `enforce` or `monitor`: the mode's name in the config and in `hookwall status`.
    #[must_use]
    pub const fn mode_name(self) -> &'static str {
        if self.enforce() { "enforce" } else { "monitor" }
    }
}

/// The mode and the protected ports: the value of the settings map and the first words of the
/// fast map ([`crate::fast::POLICY`]).
///
/// Word 0 holds the [`Settings`], words 1.. the ports. Userspace writes the settings map a `u64`
/// word at a time with atomic stores through a mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The mode.
    pub settings: Settings,
    /// Protected destination ports: port `p` is bit `p % 64` of word `p / 64`.
    pub ports: [u64; PORT_WORDS as usize],
}

impl Policy {
    /// Size of the value in `u64` words.
    pub const WORDS: usize = 1 + PORT_WORDS as usize;
}

#[cfg(test)]
mod tests {
    use super::{Policy, Settings};

    /// Userspace writes the policy as words: settings in word 0, the ports after.
    #[test]
    fn policy_is_the_settings_word_then_the_port_words() {
        assert_eq!(size_of::<Settings>(), 8);
        assert_eq!(size_of::<Policy>(), Policy::WORDS * 8);
        assert_eq!(core::mem::offset_of!(Policy, ports), 8);
    }

    /// Each flag reads back as written, through the word userspace stores and the program
    /// loads.
    #[test]
    fn settings_round_trip_through_the_word() {
        for enforce in [false, true] {
            for strict in [false, true] {
                let settings = Settings::new(enforce, strict);
                let read = Settings::from_word(settings.word());
                assert_eq!(read, settings);
                assert_eq!(read.enforce(), enforce);
                assert_eq!(read.strict_fragments(), strict);
                assert!(!read.skip_narrow());
                let skipping = Settings::from_word(settings.with_skip_narrow().word());
                assert!(skipping.skip_narrow());
                assert_eq!(skipping.without_skip_narrow(), settings);
            }
        }
    }

    /// The bit values are part of the pinned settings map's format: a hookwall that re-adopts
    /// pins written by another build must read the same mode.
    #[test]
    fn the_flag_bits_keep_their_values() {
        assert_eq!(Settings::new(true, false).word(), 1);
        assert_eq!(Settings::new(false, true).word(), 2);
        assert_eq!(Settings::default().with_skip_narrow().word(), 4);
        assert_eq!(Settings::from_word(1 << 32), Settings::default());
        assert_eq!(Settings::new(true, false).mode_name(), "enforce");
        assert_eq!(Settings::new(false, true).mode_name(), "monitor");
    }
}
