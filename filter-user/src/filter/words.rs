//! The words derived from a set of prefixes and ports: the /24 index words, the fast map's
//! coarse bitmaps and summaries, the IPv6 narrow bitmap and the protected-ports bitmap. Pure
//! computation; [`super::mmap`] and [`super::fast`] write the words to the maps.

use std::{collections::BTreeSet, net::Ipv6Addr};

use filter_common::{PORT_WORDS, fast as fast_layout, index, map_names};
use ipnet::{Ipv4Net, Ipv6Net};

use super::narrow::v6_narrow_words;

/// The /24 indexes derived from the tries, each an mmap-able `Array<u64>`. [`bitmap_words`]
/// computes them in this order.
pub(super) const INDEXES: [&str; 2] = [map_names::V4_INDEX, map_names::V6_INDEX];

/// The state derived from the tries: the index words in [`INDEXES`] order, the fast map's
/// bitmaps (a whole fast-map value whose policy region is left zero) and the IPv6 narrow
/// bitmap.
pub(super) struct Derived {
    pub(super) indexes: [Vec<u64>; INDEXES.len()],
    pub(super) fast: Vec<u64>,
    pub(super) v6_narrow: Vec<u64>,
}

/// The state derived from a set of prefixes.
pub(super) fn derived(v4: &BTreeSet<Ipv4Net>, v6: &BTreeSet<Ipv6Net>) -> Derived {
    let (indexes, fast) = bitmap_words(v4, v6);
    Derived {
        indexes,
        fast,
        v6_narrow: v6_narrow_words(v6),
    }
}

/// The words of the indexes (in [`INDEXES`] order) and of the fast map's bitmaps (laid out as
/// [`fast_layout`], the policy region left zero) for a set of prefixes.
fn bitmap_words(
    v4: &BTreeSet<Ipv4Net>,
    v6: &BTreeSet<Ipv6Net>,
) -> ([Vec<u64>; INDEXES.len()], Vec<u64>) {
    let v4_tops = v4.iter().map(|n| (u32::from(n.network()), n.prefix_len()));
    let v6_tops = v6.iter().map(|n| (v6_top(n.network()), n.prefix_len()));
    (
        [
            index_words(v4_tops, index::V4_BLOCK_BITS, index::V4_WORDS),
            index_words(v6_tops, index::V6_BLOCK_BITS, index::V6_WORDS),
        ],
        fast_bitmaps(v4, v6),
    )
}

/// The fast map's bitmaps for a set of prefixes: a whole value, its policy region zero.
pub(super) fn fast_bitmaps(v4: &BTreeSet<Ipv4Net>, v6: &BTreeSet<Ipv6Net>) -> Vec<u64> {
    let v4_tops = || v4.iter().map(|n| (u32::from(n.network()), n.prefix_len()));
    let v6_skipped = || {
        v6.iter().map(|n| {
            let skip = index::V6_SUMMARY_SKIP_BITS;
            // Skipping leading bits shortens every prefix by as many (a /2 covers everything).
            let len = n.prefix_len().saturating_sub(skip as u8);
            (v6_top(n.network()) << skip, len)
        })
    };
    let mut fast = vec![0u64; fast_layout::WORDS];
    let mut set = |at: usize, prefixes: &mut dyn Iterator<Item = (u32, u8)>, bits: u32| {
        set_summary_bits(&mut fast[at..at + (1 << (bits - 6))], prefixes, bits);
    };
    set(
        fast_layout::V4_COARSE,
        &mut v4_tops(),
        index::V4_COARSE_BITS,
    );
    set(
        fast_layout::V4_SUMMARY,
        &mut v4_tops(),
        index::V4_SUMMARY_BITS,
    );
    set(
        fast_layout::V6_COARSE,
        &mut v6_skipped(),
        index::V6_COARSE_BITS,
    );
    set(
        fast_layout::V6_SUMMARY,
        &mut v6_skipped(),
        index::V6_SUMMARY_BITS,
    );
    fast
}

/// The /24 index words for a set of prefixes given as (top 32 bits, length): full bits for
/// every block a short prefix covers, a partial bit for the block of each long one.
#[must_use]
pub fn index_words(
    prefixes: impl Iterator<Item = (u32, u8)>,
    block_bits: u32,
    words: u32,
) -> Vec<u64> {
    let mut out = vec![0u64; words as usize];
    for (top, len) in prefixes {
        let len = u32::from(len);
        if len <= block_bits {
            let first = u64::from(top >> (32 - block_bits)) & !((1u64 << (block_bits - len)) - 1);
            let count = 1u64 << (block_bits - len);
            let mut block = first;
            while block < first + count {
                let (word, bit) = (
                    (block >> index::BLOCKS_PER_WORD_SHIFT) as usize,
                    (block & u64::from(index::BLOCKS_PER_WORD - 1)) as u32,
                );
                if bit == 0 && first + count - block >= u64::from(index::BLOCKS_PER_WORD) {
                    out[word] |= u64::from(u32::MAX);
                    block += u64::from(index::BLOCKS_PER_WORD);
                } else {
                    out[word] |= index::full_bit(bit);
                    block += 1;
                }
            }
        } else {
            let (word, bit) = index::locate(top, block_bits);
            out[word as usize] |= index::partial_bit(bit);
        }
    }
    out
}

/// A summary bitmap of `bits`-bit blocks: one bit per block any prefix touches, for prefixes
/// given as (top 32 bits, length).
#[must_use]
pub fn summary_words(prefixes: impl Iterator<Item = (u32, u8)>, bits: u32) -> Vec<u64> {
    let mut out = vec![0u64; 1 << (bits - 6)];
    set_summary_bits(&mut out, prefixes, bits);
    out
}

/// Sets in `out` (a summary bitmap of `bits`-bit blocks) the bit of every block any prefix
/// touches.
fn set_summary_bits(out: &mut [u64], prefixes: impl Iterator<Item = (u32, u8)>, bits: u32) {
    for (top, len) in prefixes {
        let len = u32::from(len).min(bits);
        let first = (top >> (32 - bits)) & !((1u32 << (bits - len)) - 1);
        let count = 1u32 << (bits - len);
        let mut block = first;
        while block - first < count {
            if block & 63 == 0 && count - (block - first) >= 64 {
                out[(block >> 6) as usize] = u64::MAX;
                block += 64;
            } else {
                out[(block >> 6) as usize] |= 1 << (block & 63);
                block += 1;
            }
        }
    }
}

/// The protected-ports bitmap.
#[must_use]
pub fn port_words(ports: &[u16]) -> Vec<u64> {
    let mut out = vec![0u64; PORT_WORDS as usize];
    for &p in ports {
        out[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    out
}

pub(super) fn v6_top(addr: Ipv6Addr) -> u32 {
    let o = addr.octets();
    u32::from_be_bytes([o[0], o[1], o[2], o[3]])
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn bits(words: &[u64]) -> Vec<(usize, u32, bool)> {
        let mut out = Vec::new();
        for (w, &v) in words.iter().enumerate() {
            for b in 0..32 {
                if v & index::full_bit(b) != 0 {
                    out.push((w, b, true));
                }
                if v & index::partial_bit(b) != 0 {
                    out.push((w, b, false));
                }
            }
        }
        out
    }

    #[test]
    fn a_slash_24_sets_one_full_bit() {
        let top = u32::from(Ipv4Addr::new(203, 0, 113, 0));
        let words = index_words([(top, 24)].into_iter(), 24, index::V4_WORDS);
        let (w, b) = index::locate(top, 24);
        assert_eq!(bits(&words), vec![(w as usize, b, true)]);
    }

    #[test]
    fn a_long_prefix_sets_the_partial_bit_of_its_block() {
        let top = u32::from(Ipv4Addr::new(198, 51, 100, 7));
        let words = index_words([(top, 32)].into_iter(), 24, index::V4_WORDS);
        let (w, b) = index::locate(top, 24);
        assert_eq!(bits(&words), vec![(w as usize, b, false)]);
    }

    #[test]
    fn a_slash_16_sets_256_full_bits_in_whole_words() {
        let top = u32::from(Ipv4Addr::new(10, 1, 0, 0));
        let words = index_words([(top, 16)].into_iter(), 24, index::V4_WORDS);
        let set = bits(&words);
        assert_eq!(set.len(), 256);
        assert!(set.iter().all(|&(_, _, full)| full));
        for block in 0..256u32 {
            let (w, b) = index::locate(top | (block << 8), 24);
            assert!(set.contains(&(w as usize, b, true)), "block {block}");
        }
    }

    #[test]
    fn slash_zero_covers_everything() {
        let words = index_words([(0, 0)].into_iter(), 24, index::V4_WORDS);
        assert!(words.iter().all(|&w| w == u64::from(u32::MAX)));
    }

    #[test]
    fn an_unaligned_short_prefix_inside_a_word() {
        // A /26-aligned run: a /27 is below block size, a /22 spans 4 blocks of one word.
        let top = u32::from(Ipv4Addr::new(192, 0, 4, 0));
        let words = index_words([(top, 22)].into_iter(), 24, index::V4_WORDS);
        let set = bits(&words);
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn summary_bits_cover_exactly_the_blocks_touched() {
        let a = u32::from(Ipv4Addr::new(203, 0, 113, 7));
        let bits = index::V4_SUMMARY_BITS;
        let words = summary_words([(a, 32)].into_iter(), bits);
        let (w, mask) = index::summary_locate(a, bits);
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 1);
        assert_eq!(words[w as usize], mask);
        // A /12 touches 2^(bits - 12) blocks; /0 touches all of them.
        let words = summary_words(
            [(u32::from(Ipv4Addr::new(10, 0, 0, 0)), 12)].into_iter(),
            bits,
        );
        assert_eq!(
            words.iter().map(|w| w.count_ones()).sum::<u32>(),
            1 << (bits - 12)
        );
        let words = summary_words([(0, 0)].into_iter(), bits);
        assert!(words.iter().all(|&w| w == u64::MAX));
    }

    #[test]
    fn port_bitmap() {
        let words = port_words(&[0, 63, 64, 443, 65535]);
        assert_eq!(words[0], 1 | (1 << 63));
        assert_eq!(words[1], 1);
        assert_eq!(words[443 / 64], 1 << (443 % 64));
        assert_eq!(words[1023], 1 << 63);
    }
}
