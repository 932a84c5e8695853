//! Types shared by the hookwall XDP program and its userspace controller.
//!
//! Everything the kernel and userspace must agree on lives here: map names, key and value
//! layouts, the counter indices, the settings flags and the geometry of the bitmaps.
#![no_std]

/// Names of the maps in the eBPF object; they are also the file names of their pins.
pub mod map_names {
    /// IPv4 allowlist, `LpmTrie<[u8; 4], u8>`: the authority for every IPv4 prefix.
    pub const V4_TRIE: &str = "HW_V4_TRIE";
    /// IPv6 allowlist, `LpmTrie<[u8; 16], u8>`.
    pub const V6_TRIE: &str = "HW_V6_TRIE";
    /// IPv4 /24 index, `Array<u64>` (mmap-able); see [`crate::index`].
    pub const V4_INDEX: &str = "HW_V4_INDEX";
    /// IPv6 /24 index, `Array<u64>` (mmap-able).
    pub const V6_INDEX: &str = "HW_V6_INDEX";
    /// Pin of the program's fast map: a single-entry array holding the words of [`crate::fast`]
    /// (a copy of the settings and ports, and each family's coarse bitmap and summary). The
    /// loader creates it from the object's [`FAST_SECTION`] with every new program, so that
    /// the program reads it at a fixed address with no map lookup.
    pub const FAST: &str = "HW_FAST";
    /// The object's section (and the loader's name for the map) behind [`FAST`].
    pub const FAST_SECTION: &str = ".bss.hw_fast";
    /// IPv6 second level behind the index's "partial" answer: a bitmap of the /32s long
    /// prefixes touch, `Array<u64>` (mmap-able); see [`crate::index::narrow_locate`].
    pub const V6_NARROW: &str = "HW_V6_NARROW_BM";
    /// One [`crate::Config`] at index 0 (mmap-able): the mode flags and the protected ports.
    /// The program reads the copy in [`FAST`]; this pinned map is the record that outlives a
    /// program replacement and that `hookwall status` reads.
    pub const SETTINGS: &str = "HW_SETTINGS";
    /// Per-CPU [`crate::CounterValue`]s indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "HW_COUNTERS";
    /// One [`crate::Meta`] at index 0: facts about what is loaded, for `hookwall status`.
    pub const META: &str = "HW_META";
}

/// Name of the XDP program in the object (and of its function).
pub const PROGRAM_NAME: &str = "hookwall";
/// Name of the floor program used by the benchmark.
pub const FLOOR_PROGRAM_NAME: &str = "hookwall_floor";
/// Name of the benchmark's one-read diagnostic program.
pub const PROBE_PROGRAM_NAME: &str = "hookwall_probe";

/// Largest number of prefixes per family the tries accept.
pub const MAX_PREFIXES: u32 = 1 << 20;

/// Largest number of prefixes per family an allowlist may hold: half of [`MAX_PREFIXES`],
/// because during a reload the tries hold the old and the new prefixes together.
pub const MAX_ALLOWED_PREFIXES: u32 = MAX_PREFIXES / 2;

/// Number of `u64` words in the protected-ports bitmap (65536 bits).
pub const PORT_WORDS: u32 = 65536 / 64;

/// Geometry of the bitmaps that front each LPM trie: the /24 index, the summary and the coarse
/// bitmap.
///
/// Each family's address space is cut into blocks by the top [`index::V4_BLOCK_BITS`] (or
/// [`index::V6_BLOCK_BITS`]) bits of the address. Each block has two bits: *full* (every address in
/// the block is allowed, so no trie lookup is needed) and *partial* (some longer prefix lies inside
/// the block: ask the trie). A source whose block has neither bit is not allowed, which is the
/// common case for attack traffic and costs one array load. A word holds [`index::BLOCKS_PER_WORD`]
/// blocks: full bits in the low half, partial bits in the high half, so a block's two bits are
/// always written together.
pub mod index {
    /// IPv4 blocks are /24s.
    pub const V4_BLOCK_BITS: u32 = 24;
    /// IPv6 blocks are /24s of the 128-bit space (the RIR allocation level).
    pub const V6_BLOCK_BITS: u32 = 24;
    /// Blocks per `u64` word.
    pub const BLOCKS_PER_WORD: u32 = 32;
    /// log2 of [`BLOCKS_PER_WORD`].
    pub const BLOCKS_PER_WORD_SHIFT: u32 = 5;
    /// Words in the IPv4 index.
    pub const V4_WORDS: u32 = 1 << (V4_BLOCK_BITS - BLOCKS_PER_WORD_SHIFT);
    /// Words in the IPv6 index.
    pub const V6_WORDS: u32 = 1 << (V6_BLOCK_BITS - BLOCKS_PER_WORD_SHIFT);

    /// In front of the index, per family, a summary bitmap with one bit per block of the top
    /// address bits: set if any allowed prefix touches that block. It is small enough to stay
    /// in the CPU's L2 cache, where the 4 MiB index does not, so a random attack source is
    /// usually refused after one cache-hit load. IPv4: /23 blocks, 1 MiB.
    pub const V4_SUMMARY_BITS: u32 = 23;
    /// IPv6 summary blocks: 23 bits after the skipped ones (1 MiB).
    pub const V6_SUMMARY_BITS: u32 = 23;
    /// Words in the IPv4 summary.
    pub const V4_SUMMARY_WORDS: u32 = 1 << (V4_SUMMARY_BITS - 6);
    /// Words in the IPv6 summary.
    pub const V6_SUMMARY_WORDS: u32 = 1 << (V6_SUMMARY_BITS - 6);

    /// In front of the summary, a coarse bitmap of the same kind with /18 blocks: 32 KiB,
    /// small enough to stay cached where the 1 MiB summary is not. A random source costs one
    /// read of the summary, which is a cache miss more often than not; a source outside every
    /// allowed /18 (with a short allowlist, nearly all of them; with 100,000 random prefixes,
    /// about two in three) is refused from the coarse bitmap alone.
    pub const V4_COARSE_BITS: u32 = 18;
    /// IPv6 coarse blocks: 18 bits after the skipped ones (32 KiB).
    pub const V6_COARSE_BITS: u32 = 18;
    /// Words in the IPv4 coarse bitmap.
    pub const V4_COARSE_WORDS: u32 = 1 << (V4_COARSE_BITS - 6);
    /// Words in the IPv6 coarse bitmap.
    pub const V6_COARSE_WORDS: u32 = 1 << (V6_COARSE_BITS - 6);

    /// Behind an IPv6 block marked "partial", the narrow bitmap: a bit for every /32 that an
    /// allowed prefix longer than the block touches (a /25 to /31 touches 128 to 2 of them, a
    /// /32 or longer one), so that a source whose /32 has no bit is refused without walking the
    /// LPM trie. With many long prefixes spread over the space, about one random source in a
    /// hundred lands in a partial block, and nearly all of those in a /32 with no allowed
    /// prefix.
    ///
    /// The 2^32 /32s share [`V6_NARROW_MAP_BITS`] bits by a multiplicative hash: a /32 that
    /// shares a bit with an allowed one merely asks the trie, which decides exactly. An array
    /// read, where a hash map cost a helper call and a hash; and no limit on the number of
    /// /32s (more only means more sources ask the trie).
    pub const V6_NARROW_BITS: u32 = 32;
    /// log2 of the bits in the narrow bitmap: 2^23 bits, 1 MiB. With 100,000 long prefixes
    /// (at most a few hundred thousand /32s) a few percent of the bits are set.
    pub const V6_NARROW_MAP_BITS: u32 = 23;
    /// Words in the narrow bitmap.
    pub const V6_NARROW_WORDS: u32 = 1 << (V6_NARROW_MAP_BITS - 6);

    /// The narrow key of `top` (the address's top 32 bits, host order): its
    /// [`V6_NARROW_BITS`]-bit block number.
    #[inline(always)]
    #[must_use]
    pub const fn narrow_key(top: u32) -> u32 {
        top >> (32 - V6_NARROW_BITS)
    }

    /// Word index and bit mask of narrow key `key` in the narrow bitmap. Fibonacci hashing
    /// (multiply by 2^32 / golden ratio, keep the top bits) spreads the consecutive /32s of a
    /// /25 over the whole bitmap.
    #[inline(always)]
    #[must_use]
    pub const fn narrow_locate(key: u32) -> (u32, u64) {
        let bit = key.wrapping_mul(0x9E37_79B9) >> (32 - V6_NARROW_MAP_BITS);
        (bit >> 6, 1 << (bit & 63))
    }

    /// Leading IPv6 address bits the summary and the coarse bitmap skip: every global unicast
    /// address starts with `001` (2000::/3), so those bits would only waste seven eighths of
    /// the bitmap. Any address still maps to a bit, so the summary stays a superset for every
    /// prefix.
    pub const V6_SUMMARY_SKIP_BITS: u32 = 3;

    /// Word index and bit mask of the summary bit for `top` (the address's top 32 bits; for
    /// IPv6, shifted left by [`V6_SUMMARY_SKIP_BITS`]) in a summary of `bits`-bit blocks.
    #[inline(always)]
    #[must_use]
    pub const fn summary_locate(top: u32, bits: u32) -> (u32, u64) {
        let block = top >> (32 - bits);
        (block >> 6, 1 << (block & 63))
    }

    /// Word index and bit position of the block that holds `top` (the address's top 32 bits,
    /// host order) for an index of `block_bits`-bit blocks.
    #[inline(always)]
    #[must_use]
    pub const fn locate(top: u32, block_bits: u32) -> (u32, u32) {
        let block = top >> (32 - block_bits);
        (
            block >> BLOCKS_PER_WORD_SHIFT,
            block & (BLOCKS_PER_WORD - 1),
        )
    }

    /// The full bit of block position `bit` in a word.
    #[inline(always)]
    #[must_use]
    pub const fn full_bit(bit: u32) -> u64 {
        1 << bit
    }

    /// The partial bit of block position `bit` in a word.
    #[inline(always)]
    #[must_use]
    pub const fn partial_bit(bit: u32) -> u64 {
        1 << (bit + BLOCKS_PER_WORD)
    }
}

/// Layout of the fast map ([`map_names::FAST`]) in `u64` words: what the program reads for
/// every packet, at fixed offsets of one global. Each region starts on a cache line.
pub mod fast {
    use crate::{Config, index};

    /// The [`Config`]: the settings word, then the ports.
    pub const CONFIG: usize = 0;
    /// The IPv4 coarse bitmap ([`index::V4_COARSE_BITS`]).
    pub const V4_COARSE: usize = line(CONFIG + Config::WORDS);
    /// The IPv4 summary ([`index::V4_SUMMARY_BITS`]).
    pub const V4_SUMMARY: usize = line(V4_COARSE + index::V4_COARSE_WORDS as usize);
    /// The IPv6 coarse bitmap ([`index::V6_COARSE_BITS`]).
    pub const V6_COARSE: usize = line(V4_SUMMARY + index::V4_SUMMARY_WORDS as usize);
    /// The IPv6 summary ([`index::V6_SUMMARY_BITS`]).
    pub const V6_SUMMARY: usize = line(V6_COARSE + index::V6_COARSE_WORDS as usize);
    /// Words in the whole value.
    pub const WORDS: usize = V6_SUMMARY + index::V6_SUMMARY_WORDS as usize;

    // The kernel refuses an array value over KMALLOC_MAX_SIZE (4 MiB on x86-64 and arm64).
    const _: () = assert!(
        WORDS * 8 <= 4 << 20,
        "the fast map's value must stay under 4 MiB"
    );

    /// `words` rounded up to a whole 64-byte cache line.
    const fn line(words: usize) -> usize {
        words.next_multiple_of(8)
    }
}

/// Filter settings, written by userspace, read by the program on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Bit set of `FLAG_*`.
    pub flags: u32,
    /// Padding to 8 bytes; always 0.
    pub _reserved: u32,
}

impl Settings {
    /// Drop what is not allowed (otherwise count it as `monitor` and pass it).
    pub const FLAG_ENFORCE: u32 = 1;
    /// Judge non-first fragments by their source (they carry no port).
    pub const FLAG_STRICT_FRAGMENTS: u32 = 2;
    /// Benchmark only: skip the IPv6 narrow bitmap, so that every partial block asks the trie
    /// (the plain-trie baseline). Never set by a config.
    pub const FLAG_SKIP_NARROW: u32 = 4;
}

/// The mode and the protected ports: the value of the settings map and the first words of the
/// fast map ([`fast::CONFIG`]).
///
/// Word 0 holds the settings (flags in the low half), words 1.. the ports. Userspace writes the
/// settings map a `u64` word at a time with atomic stores through a mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The mode.
    pub settings: Settings,
    /// Protected destination ports: port `p` is bit `p % 64` of word `p / 64`.
    pub ports: [u64; PORT_WORDS as usize],
}

impl Config {
    /// Size of the value in `u64` words.
    pub const WORDS: usize = 1 + PORT_WORDS as usize;
}

/// Facts about the loaded program, kept in a pinned map so `hookwall status` can read them after
/// the daemon is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// SHA-256 of the eBPF object the running program was loaded from; tells `run` whether the
    /// pinned program is the one it carries or must be replaced.
    pub object_sha256: [u8; 32],
    /// Unix time (seconds) at which the allowlist in the maps was applied.
    pub applied_at: u64,
    /// Prefixes in the IPv4 trie.
    pub v4_prefixes: u32,
    /// Prefixes in the IPv6 trie.
    pub v6_prefixes: u32,
    /// PID of the `hookwall run` that holds the filter now (0: none since the last detach).
    pub daemon_pid: u32,
    /// Padding to 8 bytes; always 0.
    pub _reserved: u32,
}

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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] plain integers and byte arrays with no padding holes.
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Meta {}
    unsafe impl aya::Pod for super::CounterValue {}
}

#[cfg(test)]
mod tests {
    use super::{Config, Counter, Reason, Settings, Verdict};

    /// Userspace writes the config as words: settings in word 0, the ports after.
    #[test]
    fn config_is_the_settings_word_then_the_port_words() {
        assert_eq!(size_of::<Settings>(), 8);
        assert_eq!(size_of::<Config>(), Config::WORDS * 8);
        assert_eq!(core::mem::offset_of!(Config, ports), 8);
    }

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
