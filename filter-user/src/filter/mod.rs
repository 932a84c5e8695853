//! Loads, pins, attaches, re-adopts, feeds and detaches the XDP program.
//!
//! Everything lives under the configured pin path (laid out as [`Pins`]), so the filter
//! outlives the daemon.
//!
//! The daemon never holds a link's file descriptor after pinning it, so unpinning (`hookwall
//! detach`) is what removes the program from an interface.
//!
//! Allowlist updates never open a gap: [`Filter::apply`] first writes the union of the old and
//! new state (trie inserts, index, narrow and bitmap words `old | new`, ports `old | new`),
//! then removes what the new state lacks. A prefix present before and after is present at every
//! instant in between.
//!
//! - `object`: the eBPF objects this binary carries.
//! - `bpffs`: makes sure the pin path is on a bpffs.
//! - `pins`: the pin layout, the rollback of a failed first open, `hookwall detach`.
//! - [`pinned`]: a read-only view of the pinned maps and links, for `hookwall status`, the
//!   metrics and `/readyz`.
//! - `link_info`: the interface a pinned XDP link is attached to, asked of the kernel.
//! - `words`: the index, bitmap and port words derived from the prefixes and ports.
//! - `mmap`: atomic word stores through mappings of the mmap-able maps.
//! - `fast`: the program's fast map, written whole in the two phases of an update.
//! - `narrow`: the IPv6 narrow bitmap.
//! - See `docs/design/filter.md` for the lookup, the reload order and upgrades.

#[cfg(feature = "bench")]
mod bench;
mod bpffs;
mod fast;
mod link_info;
mod mmap;
mod narrow;
mod object;
pub mod pinned;
mod pins;
mod words;

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs, io,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use filter_common::{
    Counter, CounterValue, MAX_PREFIXES, Meta, PROGRAM_NAME, Policy, Settings, map_names,
};
use ipnet::{Ipv4Net, Ipv6Net};
use thiserror::Error;

pub use bpffs::ensure_bpffs;
#[cfg(feature = "bench")]
pub use fast::read_pinned as read_pinned_fast_map;
pub use object::{EBPF_OBJECT, object_sha256};
#[cfg(feature = "bench")]
pub use object::{FLOOR_OBJECT, PROBE_OBJECT};
pub use pins::{DetachReport, LinkMode, Pins, detach};
pub use words::{index_words, port_words, summary_words};

use crate::config::AttachMode;
use fast::FastMap;
use mmap::{IndexMmap, load_words, or_words, prune_index, set_words, update_index};
use pins::{PinsBefore, RETIRED_MAPS};
use words::{Derived, INDEXES, derived, fast_bitmaps};

/// What went wrong while driving the filter. Each variant says what was being done and with what.
#[derive(Debug, Error)]
pub enum FilterError {
    /// The eBPF object could not be loaded into the kernel (verifier, maps, pins).
    #[error("loading the XDP program (pins under {pin_path}): {source}")]
    Load {
        pin_path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Attaching to an interface failed.
    #[error("attaching the XDP program to interface {interface} in {mode} mode: {source}; {hint}")]
    Attach {
        interface: String,
        mode: &'static str,
        hint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map operation failed.
    #[error("{op} in map {map}: {source}")]
    Map {
        map: &'static str,
        op: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A bpffs or filesystem operation on the pins failed.
    #[error("{op} {path}: {source}")]
    Pin {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The desired state would not fit in the maps while a reload holds the old state too;
    /// nothing was changed.
    #[error(
        "the allowlist needs at least {needed} {what} while reloading (the loaded and the new list \
         together), more than the {limit} the filter holds; nothing was changed: merge long \
         prefixes into shorter ones or list fewer (or, accepting a moment with no filter, run \
         `hookwall detach` and start hookwall with the new list)"
    )]
    TooLarge {
        what: &'static str,
        needed: usize,
        limit: usize,
    },
    /// The pinned maps were made by an incompatible hookwall.
    #[error(
        "the pinned maps under {pin_path} do not match this hookwall's program ({detail}); \
         run `hookwall detach` to remove the old filter, then start again"
    )]
    Incompatible { pin_path: PathBuf, detail: String },
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// What the kernel maps should hold: the filter's whole desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Merged IPv4 prefixes.
    pub v4: Vec<Ipv4Net>,
    /// Merged IPv6 prefixes.
    pub v6: Vec<Ipv6Net>,
    /// Protected destination ports.
    pub ports: Vec<u16>,
    /// Mode flags.
    pub settings: Settings,
}

/// What one [`Filter::apply`] changed and how long it took.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    /// Prefixes inserted into the tries.
    pub inserted: usize,
    /// Prefixes removed from the tries.
    pub removed: usize,
    /// Index, bitmap and port words written.
    pub words_written: usize,
    /// Wall time of the whole update.
    pub elapsed: Duration,
}

/// How `run` came to hold the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Nothing was pinned: a new program was loaded.
    Fresh,
    /// The pinned program is this hookwall's: adopted as it is.
    Adopted,
    /// A different program was pinned: replaced atomically on every link.
    Replaced,
}

/// The loaded filter: its maps, the program and a mirror of the trie contents.
pub struct Filter {
    pins: Pins,
    ebpf: Ebpf,
    origin: Origin,
    v4_trie: LpmTrie<MapData, [u8; 4], u8>,
    v6_trie: LpmTrie<MapData, [u8; 16], u8>,
    /// The /24 indexes derived from the tries, in [`INDEXES`] order.
    indexes: Vec<MapData>,
    /// The program's fast map: its copy of the settings and ports, and the coarse bitmaps and
    /// summaries derived from the tries.
    fast: FastMap,
    /// The IPv6 narrow bitmap, derived from the IPv6 trie like the indexes.
    v6_narrow: MapData,
    /// The pinned record of the [`Policy`] (the mode and the ports), written word by word
    /// through a mapping; the program reads the copy in [`Filter::fast`].
    policy: MapData,
    counters: PerCpuArray<MapData, CounterValue>,
    meta: Array<MapData, Meta>,
    /// The pinned program, when it was adopted rather than loaded by this process.
    adopted: Option<Xdp>,
    /// What the tries hold now; the daemon is their only writer.
    v4: BTreeSet<Ipv4Net>,
    v6: BTreeSet<Ipv6Net>,
    /// Test hook: called with the name of each step of an apply, once that step is done.
    observer: Option<Observer>,
}

/// A test hook called after each step of [`Filter::apply`] with the step's name.
pub type Observer = Box<dyn FnMut(&'static str) + Send>;

/// Which half of a no-gap update [`Filter::write_derived`] performs.
#[derive(Clone, Copy)]
enum Phase {
    /// Add what the new state has: the maps hold old ∪ new after it.
    Add,
    /// Remove what the new state lacks.
    Prune,
}

impl Filter {
    /// Loads the filter, or re-adopts the one pinned under `pins`, without attaching anything
    /// new. A pinned program of another version is replaced on every existing link atomically.
    ///
    /// A first open (no program pinned) that fails takes back every pin and directory it made,
    /// so a refused start leaves the pin path as it found it.
    pub fn open(pins: Pins) -> Result<Self, FilterError> {
        ensure_bpffs(pins.root())?;
        let before = PinsBefore::take(&pins);
        let opened = Self::load(pins.clone());
        if opened.is_err() && !before.had_program {
            before.restore(&pins);
        }
        opened
    }

    /// [`Filter::open`] after bpffs is mounted.
    fn load(pins: Pins) -> Result<Self, FilterError> {
        for dir in pins.dirs() {
            fs::create_dir_all(&dir).map_err(|e| FilterError::Pin {
                op: "creating pin directory",
                path: dir.clone(),
                source: boxed(e),
            })?;
        }
        let load_err = |source| FilterError::Load {
            pin_path: pins.root().to_path_buf(),
            source,
        };
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.maps_dir())
            .load(EBPF_OBJECT)
            .map_err(|e| match e {
                aya::EbpfError::MapError(
                    MapError::PinError { .. } | MapError::IncompatiblePinnedMap { .. },
                ) => FilterError::Incompatible {
                    pin_path: pins.root().to_path_buf(),
                    detail: e.to_string(),
                },
                e => load_err(boxed(e)),
            })?;

        let meta: Array<MapData, Meta> = take_map(&mut ebpf, map_names::META)?;
        let pinned_meta = meta
            .get(&0, 0)
            .map_err(|e| map_err(map_names::META, "reading", e))?;
        let ours = object_sha256();
        let origin = if !pins.has_program() {
            Origin::Fresh
        } else if pinned_meta.object_sha256 == ours {
            Origin::Adopted
        } else {
            Origin::Replaced
        };

        // The loader made a fresh fast map; the pinned program reads the pinned one, if that is
        // still its own. If not, the program cannot run on what we could feed it: replace it.
        let loaded_fast = take_map_data(&mut ebpf, map_names::FAST_SECTION)?;
        let mut adopted = None;
        let mut origin = origin;
        let mut fast = None;
        if origin == Origin::Adopted {
            let prog = Xdp::from_pin(pins.prog(), aya_obj::programs::XdpAttachType::Interface)
                .map_err(|e| load_err(boxed(e)))?;
            match FastMap::pinned_for(&pins.map(map_names::FAST), &prog)? {
                Some(pinned) => {
                    fast = Some(pinned);
                    adopted = Some(prog);
                }
                None => {
                    tracing::warn!(
                        pin = %pins.map(map_names::FAST).display(),
                        "the pinned program's fast map is not pinned; replacing the program"
                    );
                    origin = Origin::Replaced;
                }
            }
        }
        let fast = match fast {
            Some(pinned) => pinned,
            None => {
                xdp_program(&mut ebpf)?
                    .load()
                    .map_err(|e| load_err(boxed(e)))?;
                FastMap::loaded(loaded_fast)?
            }
        };

        let indexes = INDEXES
            .iter()
            .map(|&name| take_map_data(&mut ebpf, name))
            .collect::<Result<_, _>>()?;
        let mut filter = Self {
            v4_trie: take_map(&mut ebpf, map_names::V4_TRIE)?,
            v6_trie: take_map(&mut ebpf, map_names::V6_TRIE)?,
            indexes,
            fast,
            v6_narrow: take_map_data(&mut ebpf, map_names::V6_NARROW)?,
            policy: take_map_data(&mut ebpf, map_names::SETTINGS)?,
            counters: take_map(&mut ebpf, map_names::COUNTERS)?,
            meta,
            adopted,
            pins,
            ebpf,
            origin,
            v4: BTreeSet::new(),
            v6: BTreeSet::new(),
            observer: None,
        };
        filter.sync_mirror()?;
        if origin != Origin::Adopted {
            filter.install_program()?;
        }
        filter.write_meta(|m| m.object_sha256 = ours)?;
        Ok(filter)
    }

    /// Pins the program loaded by [`Filter::open`] and its fast map; when it replaces an older
    /// program, first on every link, atomically per link.
    ///
    /// Before anything can run the new program, its fast map (created zeroed with it) gets the
    /// pinned settings and the bitmaps of the tries, and the indexes and the narrow bitmap are
    /// brought up to the tries: a map the older program did not have was just created empty,
    /// and the new program must not run on it (it would refuse every source until the next
    /// [`Filter::apply`]). Pins of maps the new program does not use go after the replacement.
    fn install_program(&mut self) -> Result<(), FilterError> {
        let policy = self.policy_words()?;
        let mut derived = derived(&self.v4, &self.v6);
        let value = fast::with_policy(std::mem::take(&mut derived.fast), &policy);
        self.write_derived(&derived, Phase::Add)?;
        self.fast.replace(&value)?;
        notify(&mut self.observer, map_names::FAST);
        self.fast.trusted = true;
        self.fast.pin(&self.pins.map(map_names::FAST))?;
        if self.origin == Origin::Replaced {
            replace_on_links(xdp_program(&mut self.ebpf)?, &self.pins)?;
            fs::remove_file(self.pins.prog()).map_err(|e| FilterError::Pin {
                op: "unpinning the replaced program",
                path: self.pins.prog(),
                source: boxed(e),
            })?;
            for name in RETIRED_MAPS {
                let path = self.pins.map(name);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(FilterError::Pin {
                            op: "unpinning a map no program uses any more",
                            path,
                            source: boxed(e),
                        });
                    }
                    _ => {}
                }
            }
        }
        xdp_program(&mut self.ebpf)?
            .pin(self.pins.prog())
            .map_err(|e| FilterError::Pin {
                op: "pinning the program at",
                path: self.pins.prog(),
                source: boxed(e),
            })
    }

    /// The pinned settings map's words.
    fn policy_words(&self) -> Result<Vec<u64>, FilterError> {
        Ok(load_words(
            IndexMmap::map(&self.policy, map_names::SETTINGS)?.words(),
        ))
    }

    /// Writes one phase of `derived` to the indexes and the narrow bitmap; returns the words
    /// that changed. The caller writes the fast map: after this in phase 1, before it in
    /// phase 2.
    ///
    /// The narrow bits are added before any index word can call a block partial, and removed
    /// only after the index words no longer do (a source whose block the index calls full never
    /// reaches the narrow bitmap, so a bit is needed exactly while its block is partial).
    fn write_derived(&mut self, derived: &Derived, phase: Phase) -> Result<usize, FilterError> {
        let write = match phase {
            Phase::Add => update_index,
            Phase::Prune => prune_index,
        };
        let narrow = (&self.v6_narrow, map_names::V6_NARROW, &derived.v6_narrow);
        let indexes = self.indexes.iter().zip(INDEXES).zip(&derived.indexes);
        let mut steps: Vec<_> = indexes
            .map(|((data, name), words)| (data, name, words))
            .collect();
        match phase {
            Phase::Add => steps.insert(0, narrow),
            Phase::Prune => steps.push(narrow),
        }
        let mut written = 0;
        for (data, name, words) in steps {
            written += write(data, name, words)?;
            notify(&mut self.observer, name);
        }
        Ok(written)
    }

    /// How this filter came to be held.
    #[must_use]
    pub const fn origin(&self) -> Origin {
        self.origin
    }

    /// The pins this filter lives under.
    #[must_use]
    pub const fn pins(&self) -> &Pins {
        &self.pins
    }

    /// The program in force (loaded here or adopted from its pin), e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> Option<&Xdp> {
        if let Some(prog) = &self.adopted {
            return Some(prog);
        }
        self.ebpf.program(PROGRAM_NAME)?.try_into().ok()
    }

    /// Prefixes now in the kernel's tries: (IPv4, IPv6).
    #[must_use]
    pub fn prefix_counts(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Reads the tries back into the mirror: the kernel is the truth after a restart.
    fn sync_mirror(&mut self) -> Result<(), FilterError> {
        let mut v4 = BTreeSet::new();
        for key in self.v4_trie.keys() {
            let key = key.map_err(|e| map_err(map_names::V4_TRIE, "listing keys", e))?;
            let net = Ipv4Net::new(Ipv4Addr::from(key.data()), key_len(&key))
                .map_err(|e| map_err(map_names::V4_TRIE, "decoding a key", e))?;
            v4.insert(net);
        }
        let mut v6 = BTreeSet::new();
        for key in self.v6_trie.keys() {
            let key = key.map_err(|e| map_err(map_names::V6_TRIE, "listing keys", e))?;
            let net = Ipv6Net::new(Ipv6Addr::from(key.data()), key_len(&key))
                .map_err(|e| map_err(map_names::V6_TRIE, "decoding a key", e))?;
            v6.insert(net);
        }
        self.v4 = v4;
        self.v6 = v6;
        Ok(())
    }

    /// Brings the maps to `desired` in two phases, so nothing kept is ever missing.
    pub fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, FilterError> {
        let started = Instant::now();
        let mut report = ApplyReport::default();
        let new_v4: BTreeSet<Ipv4Net> = desired.v4.iter().map(Ipv4Net::trunc).collect();
        let new_v6: BTreeSet<Ipv6Net> = desired.v6.iter().map(Ipv6Net::trunc).collect();
        let mut derived = derived(&new_v4, &new_v6);
        let new_ports = port_words(&desired.ports);
        // Refuse before writing anything what phase 1 could not hold: old ∪ new.
        let limit = MAX_PREFIXES as usize;
        for (what, needed) in [
            ("IPv4 prefixes", self.v4.union(&new_v4).count()),
            ("IPv6 prefixes", self.v6.union(&new_v6).count()),
        ] {
            if needed > limit {
                return Err(FilterError::TooLarge {
                    what,
                    needed,
                    limit,
                });
            }
        }

        let policy = IndexMmap::map(&self.policy, map_names::SETTINGS)?;
        if policy.words().len() != Policy::WORDS {
            return Err(map_err(
                map_names::SETTINGS,
                "checking the size",
                io::Error::other(format!(
                    "{} words, not {}",
                    policy.words().len(),
                    Policy::WORDS
                )),
            ));
        }
        // The fast map's value now (if trusted), and after phase 2.
        let mut fast_now = fast::with_policy(
            fast_bitmaps(&self.v4, &self.v6),
            &load_words(policy.words()),
        );
        let settings = desired.settings.word();
        let new_policy: Vec<u64> = std::iter::once(settings)
            .chain(new_ports.iter().copied())
            .collect();
        let new_fast = fast::with_policy(std::mem::take(&mut derived.fast), &new_policy);
        let trusted = std::mem::replace(&mut self.fast.trusted, false);

        // Phase 1: add. After it, the kernel holds old ∪ new.
        for net in new_v4.difference(&self.v4) {
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.v4_trie
                .insert(&key, &1, 0)
                .map_err(|e| map_err(map_names::V4_TRIE, &format!("inserting {net}"), e))?;
            report.inserted += 1;
        }
        for net in new_v6.difference(&self.v6) {
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.v6_trie
                .insert(&key, &1, 0)
                .map_err(|e| map_err(map_names::V6_TRIE, &format!("inserting {net}"), e))?;
            report.inserted += 1;
        }
        self.v4.extend(new_v4.iter().copied());
        self.v6.extend(new_v6.iter().copied());
        notify(&mut self.observer, "tries: inserted");
        let (settings_word, port_cells) = policy.words().split_at(1);
        report.words_written += or_words(port_cells, &new_ports);
        settings_word[0].store(settings, Ordering::Release);
        notify(&mut self.observer, "ports and settings: added");
        report.words_written += self.write_derived(&derived, Phase::Add)?;
        report.words_written += self.fast.add(&mut fast_now, &new_fast, trusted)?;
        notify(&mut self.observer, map_names::FAST);

        // Phase 2: remove what the new state lacks.
        report.words_written += self.fast.prune(&fast_now, &new_fast)?;
        notify(&mut self.observer, map_names::FAST);
        drop((fast_now, new_fast));
        report.words_written += self.write_derived(&derived, Phase::Prune)?;
        report.words_written += set_words(port_cells, &new_ports);
        notify(&mut self.observer, "ports: pruned");
        let gone_v4: Vec<Ipv4Net> = self.v4.difference(&new_v4).copied().collect();
        for net in gone_v4 {
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.v4_trie
                .remove(&key)
                .map_err(|e| map_err(map_names::V4_TRIE, &format!("removing {net}"), e))?;
            self.v4.remove(&net);
            report.removed += 1;
        }
        let gone_v6: Vec<Ipv6Net> = self.v6.difference(&new_v6).copied().collect();
        for net in gone_v6 {
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.v6_trie
                .remove(&key)
                .map_err(|e| map_err(map_names::V6_TRIE, &format!("removing {net}"), e))?;
            self.v6.remove(&net);
            report.removed += 1;
        }
        notify(&mut self.observer, "tries: removed");
        self.fast.trusted = true;

        let (v4_count, v6_count) = self.prefix_counts();
        self.write_meta(|m| {
            m.applied_at = unix_now();
            m.v4_prefixes = u32::try_from(v4_count).unwrap_or(u32::MAX);
            m.v6_prefixes = u32::try_from(v6_count).unwrap_or(u32::MAX);
        })?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    fn write_meta(&mut self, change: impl FnOnce(&mut Meta)) -> Result<(), FilterError> {
        let mut meta = self
            .meta
            .get(&0, 0)
            .map_err(|e| map_err(map_names::META, "reading", e))?;
        change(&mut meta);
        self.meta
            .set(0, &meta, 0)
            .map_err(|e| map_err(map_names::META, "writing", e))
    }

    /// Makes the program attached on exactly `interfaces`, each pinned. Interfaces already
    /// holding a hookwall link keep it (no gap), unless the kernel reports that link detached:
    /// it is unpinned and replaced. Interfaces no longer listed are detached.
    /// Returns the mode each interface ended up in.
    pub fn attach(
        &mut self,
        interfaces: &[String],
        wanted: AttachMode,
    ) -> Result<Vec<(String, LinkMode)>, FilterError> {
        let existing = self.pins.links().map_err(|e| FilterError::Pin {
            op: "listing link pins in",
            path: self.pins.links_dir(),
            source: boxed(e),
        })?;
        let mut result = Vec::new();
        for iface in interfaces {
            let pinned = existing.iter().find(|(_, i, _)| i == iface);
            if let Some((mode, _, path)) = pinned
                && link_info::xdp_link_ifindex(path).is_ok_and(|index| index == 0)
            {
                // The kernel says this link is detached (its interface was deleted and made
                // again, or someone ran `bpftool link detach`): it filters nothing, so its pin
                // goes and the interface gets a new link below.
                fs::remove_file(path).map_err(|e| FilterError::Pin {
                    op: "unpinning the detached link",
                    path: path.clone(),
                    source: boxed(e),
                })?;
                tracing::warn!(
                    interface = %iface,
                    mode = mode.as_str(),
                    "the pinned link was detached from its interface; attaching again"
                );
            } else if let Some((mode, _, _)) = pinned {
                if !mode.satisfies(wanted) {
                    // Native and generic XDP cannot coexist on one interface, so switching
                    // would leave it unfiltered for a moment: that takes an explicit detach.
                    tracing::warn!(
                        interface = %iface,
                        attached = mode.as_str(),
                        "filter.attach asks for another mode than the one attached; keeping the \
                         attached one (run `hookwall detach`, then `hookwall run`, to switch)"
                    );
                }
                result.push((iface.clone(), *mode));
                continue;
            }
            let mode = self.attach_one(iface, wanted)?;
            result.push((iface.clone(), mode));
        }
        for (_, iface, path) in existing {
            if !interfaces.contains(&iface) {
                fs::remove_file(&path).map_err(|e| FilterError::Pin {
                    op: "unpinning (detaching) link",
                    path,
                    source: boxed(e),
                })?;
                tracing::info!(interface = %iface, "detached: no longer in filter.interfaces");
            }
        }
        Ok(result)
    }

    fn attach_one(&mut self, iface: &str, wanted: AttachMode) -> Result<LinkMode, FilterError> {
        let candidates: &[LinkMode] = match wanted {
            AttachMode::Auto => &[LinkMode::Native, LinkMode::Generic],
            AttachMode::Native => &[LinkMode::Native],
            AttachMode::Generic => &[LinkMode::Generic],
        };
        let prog = self.loaded_or_pinned_program()?;
        let cname = CString::new(iface).map_err(|e| FilterError::Attach {
            interface: iface.to_owned(),
            mode: "any",
            hint: "interface names cannot contain NUL bytes".into(),
            source: boxed(e),
        })?;
        let mut last_err = None;
        for &mode in candidates {
            match prog.attach(cname.as_c_str(), mode.xdp_mode()) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(|e| attach_err(iface, mode, e))?;
                    let fd_link = FdLink::try_from(link).map_err(|e| attach_err(iface, mode, e))?;
                    let path = self.pins.link(mode, iface);
                    // Dropping the returned PinnedLink closes our fd; the pin keeps the link.
                    fd_link.pin(&path).map_err(|e| FilterError::Pin {
                        op: "pinning the link at",
                        path,
                        source: boxed(e),
                    })?;
                    tracing::info!(interface = iface, mode = mode.as_str(), "attached");
                    return Ok(mode);
                }
                Err(e) => {
                    if candidates.len() > 1 {
                        tracing::info!(interface = iface, mode = mode.as_str(), error = %e,
                            "attach failed, trying the next mode");
                    }
                    last_err = Some(attach_err(iface, mode, e));
                }
            }
        }
        Err(last_err.expect("at least one candidate mode"))
    }

    /// The program to attach: the adopted pinned one, or the one this process loaded.
    fn loaded_or_pinned_program(&mut self) -> Result<&mut Xdp, FilterError> {
        match self.adopted.as_mut() {
            Some(prog) => Ok(prog),
            None => xdp_program(&mut self.ebpf),
        }
    }

    /// Records which daemon holds the filter, for `hookwall status`.
    pub fn set_daemon_pid(&mut self, pid: u32) -> Result<(), FilterError> {
        self.write_meta(|m| m.daemon_pid = pid)
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<[CounterValue; Counter::COUNT as usize], FilterError> {
        pinned::sum_counters(&self.counters).map_err(|e| map_err(map_names::COUNTERS, "reading", e))
    }
}

fn attach_err(
    iface: &str,
    mode: LinkMode,
    e: impl std::error::Error + Send + Sync + 'static,
) -> FilterError {
    let text = e.to_string();
    let hint = if text.contains("UnknownInterface") || text.contains("unknown network interface") {
        format!("no interface named {iface} exists here; check filter.interfaces (`ip link`)")
    } else if text.contains("File exists") || text.contains("EEXIST") || text.contains("busy") {
        format!(
            "another XDP program is already attached to {iface}; remove it (`ip link set dev \
             {iface} xdp off`) or choose another interface"
        )
    } else if mode == LinkMode::Native {
        "the driver may not support native XDP: try filter.attach = \"generic\" (or \"auto\")"
            .to_owned()
    } else {
        "check that the interface is up and that this process has CAP_NET_ADMIN and CAP_BPF"
            .to_owned()
    };
    FilterError::Attach {
        interface: iface.to_owned(),
        mode: mode.as_str(),
        hint,
        source: boxed(e),
    }
}

fn map_err(
    map: &'static str,
    op: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> FilterError {
    FilterError::Map {
        map,
        op: op.to_owned(),
        source: boxed(e),
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, FilterError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| FilterError::Incompatible {
            pin_path: PathBuf::new(),
            detail: format!("program {PROGRAM_NAME} missing from the object"),
        })?
        .try_into()
        .map_err(|e| FilterError::Load {
            pin_path: PathBuf::new(),
            source: boxed(e),
        })
}

fn take_map_data(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, FilterError> {
    match ebpf.take_map(name) {
        Some(Map::Array(data)) => Ok(data),
        _ => Err(FilterError::Map {
            map: name,
            op: "taking".into(),
            source: "map missing from the object or not an array".into(),
        }),
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, FilterError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| FilterError::Map {
        map: name,
        op: "taking".into(),
        source: "map missing from the object".into(),
    })?;
    T::try_from(map).map_err(|e| map_err(name, "opening", e))
}

/// Replaces the program on every pinned link with `prog`, atomically per link.
fn replace_on_links(prog: &mut Xdp, pins: &Pins) -> Result<(), FilterError> {
    let links = pins.links().map_err(|e| FilterError::Pin {
        op: "listing link pins in",
        path: pins.links_dir(),
        source: boxed(e),
    })?;
    for (mode, iface, path) in links {
        let pinned = PinnedLink::from_pin(&path).map_err(|e| FilterError::Pin {
            op: "opening pinned link",
            path: path.clone(),
            source: boxed(e),
        })?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(|e| attach_err(&iface, mode, e))?;
        let id = prog
            .attach_to_link(link)
            .map_err(|e| attach_err(&iface, mode, e))?;
        // The pin still names the same link, which now runs the new program; our fd can go.
        drop(prog.take_link(id));
        tracing::info!(interface = %iface, mode = mode.as_str(), "replaced the program in place");
    }
    Ok(())
}

/// Calls the apply observer, if any, after the step `what`.
fn notify(observer: &mut Option<Observer>, what: &'static str) {
    if let Some(observer) = observer {
        observer(what);
    }
}

fn key_len<K: aya::Pod>(key: &Key<K>) -> u8 {
    u8::try_from(key.prefix_len()).unwrap_or(u8::MAX)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
