//! The IPv6 narrow map: the /32s behind the index's partial blocks (see
//! [`filter_common::index::V6_NARROW_BITS`]), and the two phases that bring it to a set of keys.
//!
//! The daemon is the map's only writer; [`Narrow`] mirrors what it holds, read back from the
//! kernel when the filter is opened, so a restart (or an apply cut short) starts from the truth.

use std::collections::BTreeSet;

use aya::maps::{HashMap, MapData};
use filter_common::{index, map_names};
use ipnet::Ipv6Net;

use super::{FilterError, map_err, v6_top};

/// The narrow keys of `nets`: every /32 touched by a prefix longer than the index's blocks
/// (a /25 to /31 touches 128 to 2 of them, a /32 or longer one). Prefixes of the block's
/// length or shorter are answered "full" by the index and need none.
///
/// Stops and returns `Err(limit + 1)` as soon as there are more than `limit` keys, so that a
/// config of a million /25s costs no more memory than the limit.
pub fn v6_narrow_keys<'a>(
    nets: impl IntoIterator<Item = &'a Ipv6Net>,
    limit: usize,
) -> Result<BTreeSet<u32>, usize> {
    let mut keys = BTreeSet::new();
    for net in nets {
        let len = u32::from(net.prefix_len());
        if len <= index::V6_BLOCK_BITS {
            continue;
        }
        let span = index::V6_NARROW_BITS.saturating_sub(len);
        let first = index::narrow_key(v6_top(net.network())) & !((1u32 << span) - 1);
        // Inclusive: the last /32 of the space is key u32::MAX.
        for key in first..=first + ((1u32 << span) - 1) {
            keys.insert(key);
            if keys.len() > limit {
                return Err(limit + 1);
            }
        }
    }
    Ok(keys)
}

/// The narrow map and a mirror of its keys.
pub(super) struct Narrow {
    map: HashMap<MapData, u32, u8>,
    keys: BTreeSet<u32>,
}

impl Narrow {
    /// Takes the map and reads its keys back.
    pub(super) fn open(map: HashMap<MapData, u32, u8>) -> Result<Self, FilterError> {
        let keys = map
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| map_err(map_names::V6_NARROW, "listing keys", e))?;
        Ok(Self { map, keys })
    }

    /// How many keys the map would hold with `want` added to what it holds now.
    pub(super) fn union_len(&self, want: &BTreeSet<u32>) -> usize {
        self.keys.len() + want.difference(&self.keys).count()
    }

    /// Phase 1: inserts every key of `want` the map lacks; returns how many.
    pub(super) fn add(&mut self, want: &BTreeSet<u32>) -> Result<usize, FilterError> {
        let missing: Vec<u32> = want.difference(&self.keys).copied().collect();
        for &key in &missing {
            self.map.insert(&key, &1, 0).map_err(|e| {
                map_err(
                    map_names::V6_NARROW,
                    &format!("inserting /32 key {key:#010x}"),
                    e,
                )
            })?;
            self.keys.insert(key);
        }
        Ok(missing.len())
    }

    /// Phase 2: removes every key the map holds that `want` lacks; returns how many.
    pub(super) fn prune(&mut self, want: &BTreeSet<u32>) -> Result<usize, FilterError> {
        let gone: Vec<u32> = self.keys.difference(want).copied().collect();
        for key in &gone {
            self.map.remove(key).map_err(|e| {
                map_err(
                    map_names::V6_NARROW,
                    &format!("removing /32 key {key:#010x}"),
                    e,
                )
            })?;
            self.keys.remove(key);
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(nets: &[&str]) -> Vec<u32> {
        let nets: Vec<Ipv6Net> = nets.iter().map(|n| n.parse().expect("literal")).collect();
        v6_narrow_keys(&nets, usize::MAX)
            .expect("no limit")
            .into_iter()
            .collect()
    }

    #[test]
    fn a_prefix_of_the_block_length_or_shorter_needs_no_key() {
        assert!(keys(&["2001:d00::/24", "2001:db8::/16", "::/0"]).is_empty());
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
    fn more_keys_than_the_limit_stop_the_count() {
        let nets: Vec<Ipv6Net> = vec!["2001:d80::/25".parse().expect("literal")];
        assert_eq!(v6_narrow_keys(&nets, 100), Err(101));
        assert_eq!(v6_narrow_keys(&nets, 128).map(|k| k.len()), Ok(128));
    }
}
