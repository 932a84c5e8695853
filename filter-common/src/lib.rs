//! Types shared by the hookwall XDP program and its userspace controller.
//!
//! Everything the kernel and userspace must agree on lives here: map names, key and value
//! layouts, the counter indices, the settings flags and the geometry of the bitmaps.
#![no_std]

mod counter;
pub mod fast;
pub mod index;
mod settings;

pub use counter::{Counter, CounterValue, Reason, Verdict};
pub use settings::{Policy, Settings};

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
    /// One [`crate::Policy`] at index 0 (mmap-able): the mode flags and the protected ports.
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] plain integers and byte arrays with no padding holes.
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Policy {}
    unsafe impl aya::Pod for super::Meta {}
    unsafe impl aya::Pod for super::CounterValue {}
}
