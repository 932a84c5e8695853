//! Layout of the fast map ([`crate::map_names::FAST`]) in `u64` words: what the program reads for
//! every packet, at fixed offsets of one global. Each region starts on a cache line.

use crate::{Policy, index};

/// The [`Policy`]: the settings word, then the ports.
pub const POLICY: usize = 0;
/// The IPv4 coarse bitmap ([`index::V4_COARSE_BITS`]).
pub const V4_COARSE: usize = line(POLICY + Policy::WORDS);
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
