//! Loads, pins, attaches, re-adopts, feeds and detaches the XDP program.
//!
//! Everything lives under the configured pin path, so the filter outlives the daemon:
//!
//! ```text
//! {pin_path}/prog                  the program
//! {pin_path}/maps/HW_*             every map (see filter_common::map_names); HW_FAST is the
//!                                  pinned program's own (see `fast`)
//! {pin_path}/links/{mode}-{iface}  one bpf_link per interface; the pin keeps it attached
//! ```
//!
//! The daemon never holds a link's file descriptor after pinning it, so unpinning (`hookwall
//! detach`) is what removes the program from an interface.
//!
//! Allowlist updates never open a gap: [`Filter::apply`] first writes the union of the old and
//! new state (trie inserts, index, narrow and bitmap words `old | new`, ports `old | new`),
//! then removes what the new state lacks. A prefix present before and after is present at every
//! instant in between.

mod fast;
mod narrow;

use fast::FastMap;

#[doc(hidden)]
pub use fast::read_pinned as read_pinned_fast_map;

use narrow::v6_narrow_words;

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs, io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use filter_common::{
    Counter, CounterValue, MAX_PREFIXES, Meta, PORT_WORDS, PROGRAM_NAME, Policy, Settings,
    fast as fast_layout, index, map_names,
};
use ipnet::{Ipv4Net, Ipv6Net};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::config::AttachMode;

/// The compiled XDP filter, built by `build.rs` from the `filter-ebpf` crate.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hookwall-filter"));

/// A program that drops at once: the floor the filter benchmark measures against.
#[doc(hidden)]
pub static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hookwall-floor"));

/// The floor plus one random read of a summary-sized array: a diagnostic of the benchmark.
#[doc(hidden)]
pub static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hookwall-probe"));

/// `BPF_FS_MAGIC` from linux/magic.h: the statfs type of a bpffs mount.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

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

/// SHA-256 of [`EBPF_OBJECT`]: identifies the program version in the pinned META map.
#[must_use]
pub fn object_sha256() -> [u8; 32] {
    Sha256::digest(EBPF_OBJECT).into()
}

/// The layout of the pins under a pin path.
#[derive(Clone, Debug)]
pub struct Pins {
    root: PathBuf,
}

impl Pins {
    /// Pins rooted at `root` (the config's `filter.pin_path`).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The pin path itself.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the map pins.
    #[must_use]
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Pin of one map.
    #[must_use]
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Pin of the program.
    #[must_use]
    pub fn prog(&self) -> PathBuf {
        self.root.join("prog")
    }

    /// Directory of the link pins.
    #[must_use]
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// The pin path and its two subdirectories, parents first (the order to make them in).
    #[must_use]
    pub fn dirs(&self) -> [PathBuf; 3] {
        [self.root.clone(), self.maps_dir(), self.links_dir()]
    }

    /// Pin of the link on `interface` in `mode`.
    #[must_use]
    pub fn link(&self, mode: LinkMode, interface: &str) -> PathBuf {
        self.links_dir()
            .join(format!("{}-{interface}", mode.as_str()))
    }

    /// Every link pin present: (mode, interface, path).
    pub fn links(&self) -> io::Result<Vec<(LinkMode, String, PathBuf)>> {
        let dir = self.links_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut links = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((mode, iface)) = name.split_once('-')
                && let Some(mode) = LinkMode::parse(mode)
            {
                links.push((mode, iface.to_owned(), entry.path()));
            }
        }
        links.sort();
        Ok(links)
    }

    /// Whether a hookwall program is pinned here.
    #[must_use]
    pub fn has_program(&self) -> bool {
        self.prog().exists()
    }
}

/// The XDP mode a link was made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// In the generic network stack path (XDP_FLAGS_SKB_MODE).
    Generic,
}

impl LinkMode {
    /// The name used in pins, status and logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "native" => Some(Self::Native),
            "generic" => Some(Self::Generic),
            _ => None,
        }
    }

    const fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }

    fn satisfies(self, wanted: AttachMode) -> bool {
        match wanted {
            AttachMode::Auto => true,
            AttachMode::Native => self == Self::Native,
            AttachMode::Generic => self == Self::Generic,
        }
    }
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
#[doc(hidden)]
pub type Observer = Box<dyn FnMut(&'static str) + Send>;

/// The state derived from the tries: the index words in [`INDEXES`] order, the fast map's
/// bitmaps (a whole fast-map value whose policy region is left zero) and the IPv6 narrow
/// bitmap.
struct Derived {
    indexes: [Vec<u64>; INDEXES.len()],
    fast: Vec<u64>,
    v6_narrow: Vec<u64>,
}

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

    /// Test hook: calls `observer` after each step of every later [`Filter::apply`] (trie
    /// inserts, each map written, trie removals) with the step's name, so a test can judge
    /// packets between the steps.
    #[doc(hidden)]
    pub fn observe_apply(&mut self, observer: Option<Observer>) {
        self.observer = observer;
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
    /// holding a hookwall link keep it (no gap); interfaces no longer listed are detached.
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
            if let Some((mode, _, _)) = existing.iter().find(|(_, i, _)| i == iface) {
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

    /// Benchmark hook: sets every coarse and summary bit, marks every index block "partial" and
    /// sets [`Settings::skip_narrow`], so each lookup walks the LPM trie as a plain-trie
    /// filter would. Verdicts stay correct; only the fast path is gone until the next
    /// [`Filter::apply`] rewrites the words (the fast map in any case, index words it changes).
    #[doc(hidden)]
    pub fn force_trie_lookups_for_bench(&mut self) -> Result<(), FilterError> {
        let policy = IndexMmap::map(&self.policy, map_names::SETTINGS)?;
        if let Some(settings) = policy.words().first() {
            let skip_narrow = Settings::default().with_skip_narrow().word();
            settings.fetch_or(skip_narrow, Ordering::Release);
        }
        let all_partial = u64::from(u32::MAX) << index::BLOCKS_PER_WORD;
        for (data, name) in self.indexes.iter().zip(INDEXES) {
            let mmap = IndexMmap::map(data, name)?;
            for cell in mmap.words() {
                cell.store(all_partial, Ordering::Release);
            }
        }
        let mut value =
            fast::with_policy(vec![u64::MAX; fast_layout::WORDS], &self.policy_words()?);
        let settings = Settings::from_word(value[fast_layout::POLICY]);
        value[fast_layout::POLICY] = settings.with_skip_narrow().word();
        self.fast.trusted = false;
        self.fast.replace(&value)
    }

    /// Records which daemon holds the filter, for `hookwall status`.
    pub fn set_daemon_pid(&mut self, pid: u32) -> Result<(), FilterError> {
        self.write_meta(|m| m.daemon_pid = pid)
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<[CounterValue; Counter::COUNT as usize], FilterError> {
        read_counters(&self.counters)
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

/// The canonical bpffs mount point.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Makes sure `path` will be on a bpffs: if its closest existing ancestor is not on one, mounts
/// bpffs at /sys/fs/bpf when that is the ancestor (the usual, empty mount point), otherwise at
/// `path` itself. Serialised and re-checked so that concurrent callers never stack two mounts
/// (a second mount would hide the first one's pins).
pub fn ensure_bpffs(path: &Path) -> Result<(), FilterError> {
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = MOUNTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    if is_bpffs(probe) {
        return Ok(());
    }
    if in_private_mount_namespace() {
        return Err(FilterError::Pin {
            op: "refusing to mount a private bpffs for",
            path: path.to_path_buf(),
            source: "this process runs in its own mount namespace (e.g. under `ip netns exec`), \
                     where pins would vanish with it and the filter with them: run hookwall in \
                     the host's mount namespace (`nsenter --net=/run/netns/NAME hookwall ...`), \
                     or mount bpffs at /sys/fs/bpf first"
                .into(),
        });
    }
    let target = if probe == Path::new(BPFFS_ROOT) {
        probe.to_path_buf()
    } else {
        fs::create_dir_all(path).map_err(|e| FilterError::Pin {
            op: "creating pin path",
            path: path.to_path_buf(),
            source: boxed(e),
        })?;
        path.to_path_buf()
    };
    let c_target =
        CString::new(target.as_os_str().as_encoded_bytes()).map_err(|e| FilterError::Pin {
            op: "mounting bpffs at",
            path: target.clone(),
            source: boxed(e),
        })?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(FilterError::Pin {
            op: "mounting bpffs at",
            path: target,
            source: boxed(io::Error::last_os_error()),
        });
    }
    tracing::info!(path = %target.display(), "mounted bpffs");
    Ok(())
}

/// Whether this process's mount namespace differs from init's, where a bpffs we mount would
/// not be seen by anyone else and would disappear with us.
fn in_private_mount_namespace() -> bool {
    match (
        fs::read_link("/proc/self/ns/mnt"),
        fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(ours), Ok(init)) => ours != init,
        // Cannot tell (e.g. /proc/1 hidden): do not block a start on a guess.
        _ => false,
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; `c` is NUL-terminated.
    #[allow(
        clippy::useless_conversion,
        reason = "f_type is narrower than i64 on some targets"
    )]
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &raw mut st) == 0 && i64::from(st.f_type) == BPF_FS_MAGIC
    }
}

fn key_len<K: aya::Pod>(key: &Key<K>) -> u8 {
    u8::try_from(key.prefix_len()).unwrap_or(u8::MAX)
}

fn v6_top(addr: Ipv6Addr) -> u32 {
    let o = addr.octets();
    u32::from_be_bytes([o[0], o[1], o[2], o[3]])
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The /24 indexes derived from the tries, each an mmap-able `Array<u64>`. [`bitmap_words`]
/// computes them in this order.
const INDEXES: [&str; 2] = [map_names::V4_INDEX, map_names::V6_INDEX];

/// Pins of maps an older hookwall had and this one does not (its bitmaps now live in the fast
/// map): removed once the program that read them is replaced.
const RETIRED_MAPS: [&str; 5] = [
    "HW_V4_SUMMARY",
    "HW_V6_SUMMARY",
    "HW_V4_COARSE",
    "HW_V6_COARSE",
    // The narrow map when it was a hash (now the bitmap `HW_V6_NARROW_BM`).
    "HW_V6_NARROW",
];

/// What a pin path held before [`Filter::open`] touched it.
struct PinsBefore {
    had_program: bool,
    /// [`Pins::dirs`], each with whether it existed.
    dirs: Vec<(PathBuf, bool)>,
    maps: BTreeSet<std::ffi::OsString>,
}

impl PinsBefore {
    fn take(pins: &Pins) -> Self {
        let maps = fs::read_dir(pins.maps_dir())
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        Self {
            had_program: pins.has_program(),
            dirs: pins
                .dirs()
                .into_iter()
                .map(|dir| {
                    let existed = dir.exists();
                    (dir, existed)
                })
                .collect(),
            maps,
        }
    }

    /// Removes the program pin, the map pins and the directories made since [`Self::take`], for
    /// a path that had no program (nothing can run on what was pinned). Best effort: the error
    /// being returned matters more than a failed cleanup, which is logged.
    fn restore(&self, pins: &Pins) {
        let mut made: Vec<PathBuf> = fs::read_dir(pins.maps_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| !self.maps.contains(&e.file_name()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        if pins.prog().exists() {
            made.push(pins.prog());
        }
        for path in made {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(pin = %path.display(), "removing a pin of a failed open: {e}");
            }
        }
        for (dir, existed) in self.dirs.iter().rev() {
            // Only if empty: a link pinned meanwhile by someone else stays.
            if !existed && let Err(e) = fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), "removing a directory of a failed open: {e}");
            }
        }
    }
}

/// Calls the apply observer, if any, after the step `what`.
fn notify(observer: &mut Option<Observer>, what: &'static str) {
    if let Some(observer) = observer {
        observer(what);
    }
}

/// The state derived from a set of prefixes.
fn derived(v4: &BTreeSet<Ipv4Net>, v6: &BTreeSet<Ipv6Net>) -> Derived {
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
fn fast_bitmaps(v4: &BTreeSet<Ipv4Net>, v6: &BTreeSet<Ipv6Net>) -> Vec<u64> {
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

/// A writable shared mapping of an mmap-able array map of `u64`s.
struct IndexMmap {
    ptr: *mut AtomicU64,
    len: usize,
}

impl IndexMmap {
    fn map(data: &MapData, name: &'static str) -> Result<Self, FilterError> {
        let info = data.info().map_err(|e| map_err(name, "reading info", e))?;
        // Every value is a whole number of u64 words, so the value area is exactly this many.
        let len =
            info.max_entries() as usize * info.value_size() as usize / std::mem::size_of::<u64>();
        let bytes = len * std::mem::size_of::<u64>();
        // SAFETY: a fresh shared mapping of the map's fd, sized to the map's value area.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(map_err(name, "mmap", io::Error::last_os_error()));
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `len` aligned u64s for as long as self lives; the kernel
        // reads them concurrently, hence atomics.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for IndexMmap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len * std::mem::size_of::<u64>());
        }
    }
}

/// Phase 1 for an index: every word becomes `old | new`.
fn update_index(data: &MapData, name: &'static str, new: &[u64]) -> Result<usize, FilterError> {
    Ok(or_words(IndexMmap::map(data, name)?.words(), new))
}

/// Phase 2 for an index: every word becomes exactly `new`.
fn prune_index(data: &MapData, name: &'static str, new: &[u64]) -> Result<usize, FilterError> {
    Ok(set_words(IndexMmap::map(data, name)?.words(), new))
}

/// The cells' values now.
fn load_words(cells: &[AtomicU64]) -> Vec<u64> {
    cells.iter().map(|w| w.load(Ordering::Acquire)).collect()
}

/// Makes every cell `old | new`, each with one atomic store; returns the cells written.
fn or_words(cells: &[AtomicU64], new: &[u64]) -> usize {
    let mut written = 0;
    for (cell, &want) in cells.iter().zip(new) {
        let cur = cell.load(Ordering::Relaxed);
        if cur | want != cur {
            cell.store(cur | want, Ordering::Release);
            written += 1;
        }
    }
    written
}

/// Makes every cell exactly `new`, each with one atomic store; returns the cells written.
fn set_words(cells: &[AtomicU64], new: &[u64]) -> usize {
    let mut written = 0;
    for (cell, &want) in cells.iter().zip(new) {
        if cell.load(Ordering::Relaxed) != want {
            cell.store(want, Ordering::Release);
            written += 1;
        }
    }
    written
}

/// Sums a per-CPU counters map.
pub fn read_counters(
    map: &PerCpuArray<MapData, CounterValue>,
) -> Result<[CounterValue; Counter::COUNT as usize], FilterError> {
    let mut out = [CounterValue::default(); Counter::COUNT as usize];
    for counter in Counter::ALL {
        let values = map
            .get(&(counter as u32), 0)
            .map_err(|e| map_err(map_names::COUNTERS, "reading", e))?;
        let cell = &mut out[counter as usize];
        for v in values.iter() {
            cell.packets += v.packets;
            cell.bytes += v.bytes;
        }
    }
    Ok(out)
}

/// What `hookwall detach` removed.
#[derive(Debug, Default)]
pub struct DetachReport {
    /// Interfaces the program was removed from, with the mode it ran in.
    pub links: Vec<(String, LinkMode)>,
    /// Pins removed (program and maps).
    pub pins_removed: usize,
}

/// Removes the program from every interface and every pin under `pins`. Safe to run twice.
pub fn detach(pins: &Pins) -> Result<DetachReport, FilterError> {
    let mut report = DetachReport::default();
    let pin_err = |op, path: &Path, e: io::Error| FilterError::Pin {
        op,
        path: path.to_path_buf(),
        source: boxed(e),
    };
    for (mode, iface, path) in pins
        .links()
        .map_err(|e| pin_err("listing", &pins.links_dir(), e))?
    {
        fs::remove_file(&path).map_err(|e| pin_err("unpinning link", &path, e))?;
        report.links.push((iface, mode));
    }
    let prog = pins.prog();
    if prog.exists() {
        fs::remove_file(&prog).map_err(|e| pin_err("unpinning program", &prog, e))?;
        report.pins_removed += 1;
    }
    if let Ok(entries) = fs::read_dir(pins.maps_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("HW_"))
            {
                fs::remove_file(&path).map_err(|e| pin_err("unpinning map", &path, e))?;
                report.pins_removed += 1;
            }
        }
    }
    // Remove the directories we made; leave anything else someone put there.
    for dir in pins.dirs().into_iter().rev() {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %dir.display(), error = %e, "left in place"),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn link_pin_names_round_trip() {
        let pins = Pins::new("/sys/fs/bpf/x");
        let path = pins.link(LinkMode::Generic, "eth0.100-a");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (mode, iface) = name.split_once('-').unwrap();
        assert_eq!(LinkMode::parse(mode), Some(LinkMode::Generic));
        assert_eq!(iface, "eth0.100-a");
    }
}
