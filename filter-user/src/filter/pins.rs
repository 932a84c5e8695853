//! The layout of the pins under a pin path, what a failed first open takes back, and `hookwall
//! detach`.
//!
//! ```text
//! {pin_path}/prog                  the program
//! {pin_path}/maps/HW_*             every map (see filter_common::map_names); HW_FAST is the
//!                                  pinned program's own (see `fast`)
//! {pin_path}/links/{mode}-{iface}  one bpf_link per interface; the pin keeps it attached
//! ```

use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::XdpMode;

use super::{FilterError, boxed};
use crate::config::AttachMode;

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

    pub(super) const fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }

    pub(super) fn satisfies(self, wanted: AttachMode) -> bool {
        match wanted {
            AttachMode::Auto => true,
            AttachMode::Native => self == Self::Native,
            AttachMode::Generic => self == Self::Generic,
        }
    }
}

/// Pins of maps an older hookwall had and this one does not (its bitmaps now live in the fast
/// map): removed once the program that read them is replaced.
pub(super) const RETIRED_MAPS: [&str; 5] = [
    "HW_V4_SUMMARY",
    "HW_V6_SUMMARY",
    "HW_V4_COARSE",
    "HW_V6_COARSE",
    // The narrow map when it was a hash (now the bitmap `HW_V6_NARROW_BM`).
    "HW_V6_NARROW",
];

/// What a pin path held before [`Filter::open`] touched it.
pub(super) struct PinsBefore {
    pub(super) had_program: bool,
    /// [`Pins::dirs`], each with whether it existed.
    dirs: Vec<(PathBuf, bool)>,
    maps: BTreeSet<std::ffi::OsString>,
}

impl PinsBefore {
    pub(super) fn take(pins: &Pins) -> Self {
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
    pub(super) fn restore(&self, pins: &Pins) {
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
