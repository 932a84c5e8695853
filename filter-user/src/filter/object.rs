//! The eBPF objects this binary carries, built by `build.rs` from the `filter-ebpf` crate, and
//! the digest that tells this build's program from a pinned one.

use sha2::{Digest as _, Sha256};

/// The compiled XDP filter, built by `build.rs` from the `filter-ebpf` crate.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hookwall-filter"));

/// A program that drops at once: the floor the filter benchmark measures against.
#[cfg(feature = "bench")]
pub static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hookwall-floor"));

/// The floor plus one random read of a summary-sized array: a diagnostic of the benchmark.
#[cfg(feature = "bench")]
pub static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hookwall-probe"));

/// SHA-256 of [`EBPF_OBJECT`]: identifies the program version in the pinned META map.
#[must_use]
pub fn object_sha256() -> [u8; 32] {
    Sha256::digest(EBPF_OBJECT).into()
}
