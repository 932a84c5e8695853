//! A read-only view of the filter pinned under a pin path: what `hookwall status` and the
//! metrics collector read, straight from the pins, so it works while a daemon holds the filter
//! and after it has died.
//!
//! This is the only code that opens a pinned map; `super::fast` adopts the pinned fast map
//! through `open_map`.

use std::path::{Path, PathBuf};

use aya::maps::{Array, LpmTrie, Map, MapData, MapError, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use filter_common::{Counter, CounterValue, Meta, Policy, map_names};
use thiserror::Error;

use super::{LinkMode, Pins};

/// A pinned map could not be read.
#[derive(Debug, Error)]
#[error("reading pinned map {path}: {source}")]
pub struct PinnedError {
    /// The map's pin.
    pub path: PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// The verdict counters, summed over the CPUs, in [`Counter`] index order.
pub type Counters = [CounterValue; Counter::COUNT as usize];

/// One link pin and whether its link is alive in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedLinkState {
    /// Interface name.
    pub interface: String,
    /// The XDP mode of the link.
    pub mode: LinkMode,
    /// Whether the pinned link could be opened.
    pub alive: bool,
}

/// Whether the program is attached on one configured interface, as the kernel sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Interface name.
    pub interface: String,
    /// The mode of the link pinned for the interface; `None` when none is pinned.
    pub mode: Option<LinkMode>,
    /// `Ok` when attached; else why not, in words for an operator.
    pub attached: Result<(), String>,
}

/// The maps pinned under one pin path, opened on demand, never written.
#[derive(Clone, Debug)]
pub struct PinnedFilter<'a> {
    pins: &'a Pins,
}

impl<'a> PinnedFilter<'a> {
    /// A view of the filter pinned under `pins` (nothing is opened yet).
    #[must_use]
    pub const fn new(pins: &'a Pins) -> Self {
        Self { pins }
    }

    /// Whether a hookwall program is pinned there.
    #[must_use]
    pub fn loaded(&self) -> bool {
        self.pins.has_program()
    }

    /// Every link pin, with whether its link is alive; none when the links cannot be listed.
    #[must_use]
    pub fn links(&self) -> Vec<PinnedLinkState> {
        self.pins
            .links()
            .unwrap_or_default()
            .into_iter()
            .map(|(mode, interface, path)| PinnedLinkState {
                interface,
                mode,
                alive: PinnedLink::from_pin(&path)
                    .map(FdLink::from)
                    .and_then(|l| l.info())
                    .is_ok(),
            })
            .collect()
    }

    /// For each of `interfaces`, whether the program is attached to it now: a link is pinned
    /// for it, and the kernel says that link is attached to the interface of that name. The
    /// pin alone is not enough: a link whose interface was deleted, or that was detached with
    /// `BPF_LINK_DETACH` (`bpftool link detach`), stays pinned but filters nothing. A few
    /// system calls per interface: cheap enough for every scrape and probe.
    #[must_use]
    pub fn attachments(&self, interfaces: &[String]) -> Vec<Attachment> {
        let pinned = self.pins.links();
        interfaces
            .iter()
            .map(|interface| {
                let link = match &pinned {
                    Ok(links) => links.iter().find(|(_, i, _)| i == interface),
                    Err(_) => None,
                };
                let attached = match (&pinned, link) {
                    (Err(e), _) => Err(format!(
                        "the link pins in {} cannot be listed: {e}",
                        self.pins.links_dir().display()
                    )),
                    (Ok(_), None) => Err(format!(
                        "no link is pinned for it in {}",
                        self.pins.links_dir().display()
                    )),
                    (Ok(_), Some((_, _, path))) => link_state(interface, path),
                };
                Attachment {
                    interface: interface.clone(),
                    mode: link.map(|(mode, _, _)| *mode),
                    attached,
                }
            })
            .collect()
    }

    /// The settings map's value: the mode and the protected ports.
    ///
    /// # Errors
    /// If the settings map is missing or unreadable.
    pub fn policy(&self) -> Result<Policy, PinnedError> {
        let map: Array<MapData, Policy> = self.typed(map_names::SETTINGS)?;
        map.get(&0, 0).map_err(|e| self.err(map_names::SETTINGS, e))
    }

    /// Prefixes in the tries: (IPv4, IPv6).
    ///
    /// # Errors
    /// If a trie is missing or unreadable.
    pub fn prefix_counts(&self) -> Result<(usize, usize), PinnedError> {
        let v4: LpmTrie<MapData, [u8; 4], u8> = self.typed(map_names::V4_TRIE)?;
        let v6: LpmTrie<MapData, [u8; 16], u8> = self.typed(map_names::V6_TRIE)?;
        Ok((
            v4.keys().filter(Result::is_ok).count(),
            v6.keys().filter(Result::is_ok).count(),
        ))
    }

    /// The facts about the loaded program.
    ///
    /// # Errors
    /// If the meta map is missing or unreadable.
    pub fn meta(&self) -> Result<Meta, PinnedError> {
        let map: Array<MapData, Meta> = self.typed(map_names::META)?;
        map.get(&0, 0).map_err(|e| self.err(map_names::META, e))
    }

    /// The kernel's verdict counters, summed over the CPUs.
    ///
    /// # Errors
    /// If the counters map is missing or unreadable.
    pub fn counters(&self) -> Result<Counters, PinnedError> {
        let map: PerCpuArray<MapData, CounterValue> = self.typed(map_names::COUNTERS)?;
        sum_counters(&map).map_err(|e| self.err(map_names::COUNTERS, e))
    }

    fn typed<T: TryFrom<Map, Error = MapError>>(&self, name: &str) -> Result<T, PinnedError> {
        open_map(&self.pins.map(name))
            .and_then(Map::from_map_data)
            .and_then(T::try_from)
            .map_err(|e| self.err(name, e))
    }

    fn err(&self, name: &str, e: impl std::error::Error + Send + Sync + 'static) -> PinnedError {
        PinnedError {
            path: self.pins.map(name),
            source: Box::new(e),
        }
    }
}

/// Whether the XDP link pinned at `path` is attached to `interface` now.
fn link_state(interface: &str, path: &Path) -> Result<(), String> {
    let on = super::link_info::xdp_link_ifindex(path)
        .map_err(|e| format!("its pinned link {} cannot be read: {e}", path.display()))?;
    match super::link_info::ifindex(interface) {
        None => Err("no interface of that name exists".to_owned()),
        Some(_) if on == 0 => Err(
            "its pinned link is detached (the interface was removed, or the link was \
             detached)"
                .to_owned(),
        ),
        Some(index) if index != on => Err(format!(
            "its pinned link is on interface index {on}, not {interface}'s ({index})"
        )),
        Some(_) => Ok(()),
    }
}

/// Opens the map pinned at `path`.
pub(super) fn open_map(path: &Path) -> Result<MapData, MapError> {
    MapData::from_pin(path)
}

/// Sums a per-CPU counters map.
pub(super) fn sum_counters(map: &PerCpuArray<MapData, CounterValue>) -> Result<Counters, MapError> {
    let mut out = [CounterValue::default(); Counter::COUNT as usize];
    for counter in Counter::ALL {
        let values = map.get(&(counter as u32), 0)?;
        let cell = &mut out[counter as usize];
        for v in values.iter() {
            cell.packets += v.packets;
            cell.bytes += v.bytes;
        }
    }
    Ok(out)
}
