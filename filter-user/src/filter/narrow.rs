//! The IPv6 narrow bitmap: the /32s behind the index's partial blocks (see
//! [`filter_common::index::V6_NARROW_BITS`]), derived from the IPv6 prefixes like the index and
//! written in the same two phases.

use std::ops::RangeInclusive;

use filter_common::index;
use ipnet::Ipv6Net;

use super::words::v6_top;

/// The narrow keys of `net`: every /32 it touches when it is longer than the index's blocks
/// (a /25 to /31 touches 128 to 2 of them, a /32 or longer one); none for a prefix of the
/// block's length or shorter, which the index answers "full".
#[must_use]
pub fn v6_narrow_keys(net: &Ipv6Net) -> Option<RangeInclusive<u32>> {
    let len = u32::from(net.prefix_len());
    if len <= index::V6_BLOCK_BITS {
        return None;
    }
    let span = index::V6_NARROW_BITS.saturating_sub(len);
    let first = index::narrow_key(v6_top(net.network())) & !((1u32 << span) - 1);
    // Inclusive: the last /32 of the space is key u32::MAX.
    Some(first..=first + ((1u32 << span) - 1))
}

/// The narrow bitmap of `nets`: the bit of every narrow key of every prefix.
#[must_use]
pub fn v6_narrow_words<'a>(nets: impl IntoIterator<Item = &'a Ipv6Net>) -> Vec<u64> {
    let mut words = vec![0u64; index::V6_NARROW_WORDS as usize];
    for keys in nets.into_iter().filter_map(v6_narrow_keys) {
        for key in keys {
            let (word, mask) = index::narrow_locate(key);
            words[word as usize] |= mask;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(nets: &[&str]) -> Vec<Ipv6Net> {
        nets.iter().map(|n| n.parse().expect("literal")).collect()
    }

    fn keys(list: &[&str]) -> Vec<u32> {
        let mut keys: Vec<u32> = nets(list)
            .iter()
            .filter_map(v6_narrow_keys)
            .flatten()
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The keys whose bits are set in `words`, among `candidates`.
    fn set_among(words: &[u64], candidates: impl IntoIterator<Item = u32>) -> Vec<u32> {
        candidates
            .into_iter()
            .filter(|&key| {
                let (word, mask) = index::narrow_locate(key);
                words[word as usize] & mask != 0
            })
            .collect()
    }

    #[test]
    fn a_prefix_of_the_block_length_or_shorter_needs_no_key() {
        assert!(keys(&["2001:d00::/24", "2001:db8::/16", "::/0"]).is_empty());
        let words = v6_narrow_words(&nets(&["2001:d00::/24", "::/0"]));
        assert!(words.iter().all(|&w| w == 0), "no bit set");
    }

    #[test]
    fn a_slash_32_or_longer_prefix_is_one_key_its_top_32_bits() {
        assert_eq!(keys(&["2001:db8::/32"]), vec![0x2001_0db8]);
        assert_eq!(keys(&["2001:db8:1::/48"]), vec![0x2001_0db8]);
        assert_eq!(keys(&["2001:db8:ffff:1::9/128"]), vec![0x2001_0db8]);
    }

    #[test]
    fn slash_25_to_31_expand_to_every_slash_32_they_cover() {
        assert_eq!(keys(&["2001:db8::/31"]), vec![0x2001_0db8, 0x2001_0db9]);
        assert_eq!(
            keys(&["2001:db8::/29"]),
            (0x2001_0db8..=0x2001_0dbf).collect::<Vec<_>>()
        );
        let slash_25 = keys(&["2001:d80::/25"]);
        assert_eq!(slash_25.len(), 128);
        assert_eq!(slash_25[0], 0x2001_0d80);
        assert_eq!(slash_25[127], 0x2001_0dff);
    }

    #[test]
    fn the_last_slash_32_of_the_space_does_not_overflow() {
        assert_eq!(keys(&["ffff:fffe::/31"]), vec![0xffff_fffe, 0xffff_ffff]);
    }

    #[test]
    fn prefixes_in_one_slash_32_share_its_key() {
        assert_eq!(
            keys(&["2001:db8:1::/48", "2001:db8:2::/64", "2001:db8::/31"]),
            vec![0x2001_0db8, 0x2001_0db9]
        );
    }

    #[test]
    fn the_bitmap_has_the_bit_of_every_key_and_few_others() {
        let list = nets(&["2001:d80::/25", "2001:db8:1::/48", "3fff:ffff::/32"]);
        let words = v6_narrow_words(&list);
        let wanted: Vec<u32> = list.iter().filter_map(v6_narrow_keys).flatten().collect();
        assert_eq!(set_among(&words, wanted.iter().copied()), wanted);
        // Each key has its own bit: the /25's 128 consecutive /32s (the /48 is one of them)
        // are spread, not folded, and the last /32 of the space adds one.
        let set: u32 = words.iter().map(|w| w.count_ones()).sum();
        assert_eq!(set, 128 + 1);
        // The /32s around them are mostly refused from the bitmap (a hash can share a bit).
        let around = set_among(
            &words,
            (0x2001_0000..0x2001_0d80).chain(0x2001_0e00..0x2002_0000),
        );
        assert!(around.len() < 10, "{} neighbours share a bit", around.len());
    }
}
