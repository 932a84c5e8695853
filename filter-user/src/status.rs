//! `hookwall status`: what the pinned filter is doing, read straight from the pins, so it works
//! while the daemon runs and after it has died.

use std::{fmt::Write as _, path::PathBuf};

use aya::maps::{Array, LpmTrie, Map, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use filter_common::{Counter, CounterValue, Meta, Policy, map_names};
use serde::Serialize;
use thiserror::Error;

use crate::filter::{LinkMode, Pins, object_sha256, read_counters};

/// Why the status could not be read.
#[derive(Debug, Error)]
pub enum StatusError {
    /// A pinned map is missing or unreadable.
    #[error("reading pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One interface the program is attached to.
#[derive(Debug, Serialize)]
pub struct LinkStatus {
    /// Interface name.
    pub interface: String,
    /// `native` or `generic`.
    pub mode: &'static str,
    /// Whether the pinned link could be opened (it is alive in the kernel).
    pub alive: bool,
}

/// One verdict counter.
#[derive(Debug, Serialize)]
pub struct CounterStatus {
    /// `pass`, `drop` or `monitor`.
    pub verdict: &'static str,
    /// `allowed`, `not_allowed`, `unprotected`, `fragment` or `malformed`.
    pub reason: &'static str,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Everything `hookwall status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The pin path read.
    pub pin_path: PathBuf,
    /// Whether a hookwall program is pinned there.
    pub loaded: bool,
    /// Interfaces and attach mode.
    pub links: Vec<LinkStatus>,
    /// `enforce` or `monitor` (absent when not loaded).
    pub mode: Option<&'static str>,
    /// Strict fragment policy in force.
    pub strict_fragments: bool,
    /// Prefixes in the IPv4 trie.
    pub ipv4_prefixes: usize,
    /// Prefixes in the IPv6 trie.
    pub ipv6_prefixes: usize,
    /// Unix time at which the allowlist in the maps was applied.
    pub applied_at: u64,
    /// PID of the daemon that last held the filter, and whether it still runs.
    pub daemon_pid: Option<u32>,
    /// Whether that daemon process is alive.
    pub daemon_running: bool,
    /// Whether the pinned program is the one this binary carries.
    pub program_matches_binary: bool,
    /// Kernel verdict counters.
    pub counters: Vec<CounterStatus>,
}

fn open_map(pins: &Pins, name: &str) -> Result<Map, StatusError> {
    let path = pins.map(name);
    MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|e| StatusError::Map {
            path,
            source: Box::new(e),
        })
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    pins: &Pins,
    name: &str,
) -> Result<T, StatusError> {
    T::try_from(open_map(pins, name)?).map_err(|e| StatusError::Map {
        path: pins.map(name),
        source: Box::new(e),
    })
}

fn map_read_err(
    pins: &Pins,
    name: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StatusError {
    StatusError::Map {
        path: pins.map(name),
        source: Box::new(e),
    }
}

/// Reads the status of the filter pinned under `pins`.
///
/// # Errors
/// If a program is pinned but its maps cannot be read.
pub fn read(pins: &Pins) -> Result<Status, StatusError> {
    let mut status = Status {
        pin_path: pins.root().to_path_buf(),
        loaded: pins.has_program(),
        links: Vec::new(),
        mode: None,
        strict_fragments: false,
        ipv4_prefixes: 0,
        ipv6_prefixes: 0,
        applied_at: 0,
        daemon_pid: None,
        daemon_running: false,
        program_matches_binary: false,
        counters: Vec::new(),
    };
    for (mode, interface, path) in pins.links().unwrap_or_default() {
        let alive = PinnedLink::from_pin(&path)
            .map(FdLink::from)
            .and_then(|l| l.info())
            .is_ok();
        status.links.push(LinkStatus {
            interface,
            mode: mode_name(mode),
            alive,
        });
    }
    if !status.loaded {
        return Ok(status);
    }

    let policy: Array<MapData, Policy> = typed(pins, map_names::SETTINGS)?;
    let settings = policy
        .get(&0, 0)
        .map_err(|e| map_read_err(pins, map_names::SETTINGS, e))?
        .settings;
    status.mode = Some(settings.mode_name());
    status.strict_fragments = settings.strict_fragments();

    let v4: LpmTrie<MapData, [u8; 4], u8> = typed(pins, map_names::V4_TRIE)?;
    status.ipv4_prefixes = v4.keys().filter(Result::is_ok).count();
    let v6: LpmTrie<MapData, [u8; 16], u8> = typed(pins, map_names::V6_TRIE)?;
    status.ipv6_prefixes = v6.keys().filter(Result::is_ok).count();

    let meta: Array<MapData, Meta> = typed(pins, map_names::META)?;
    let meta = meta
        .get(&0, 0)
        .map_err(|e| map_read_err(pins, map_names::META, e))?;
    status.applied_at = meta.applied_at;
    status.program_matches_binary = meta.object_sha256 == object_sha256();
    if meta.daemon_pid != 0 {
        status.daemon_pid = Some(meta.daemon_pid);
        status.daemon_running = process_is_hookwall(meta.daemon_pid);
    }

    let counters: PerCpuArray<MapData, CounterValue> = typed(pins, map_names::COUNTERS)?;
    let values =
        read_counters(&counters).map_err(|e| map_read_err(pins, map_names::COUNTERS, e))?;
    status.counters = Counter::ALL
        .iter()
        .map(|&c| CounterStatus {
            verdict: c.verdict().as_str(),
            reason: c.reason().as_str(),
            packets: values[c as usize].packets,
            bytes: values[c as usize].bytes,
        })
        .collect();
    Ok(status)
}

const fn mode_name(mode: LinkMode) -> &'static str {
    mode.as_str()
}

/// Whether `pid` is a live process named hookwall (a recycled PID of another program is not).
fn process_is_hookwall(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "hookwall")
}

impl Status {
    /// The human-readable report.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "pin path:    {}", self.pin_path.display());
        if !self.loaded {
            let _ = writeln!(out, "filter:      not loaded (nothing pinned here)");
            if !self.links.is_empty() {
                let _ = writeln!(
                    out,
                    "warning:     link pins without a program pin; run `hookwall detach`"
                );
            }
            return out;
        }
        let _ = writeln!(
            out,
            "filter:      loaded, mode {}{}",
            self.mode.unwrap_or("?"),
            if self.strict_fragments {
                ", strict fragments"
            } else {
                ""
            }
        );
        let enforcing = if self.links.iter().any(|l| l.alive) {
            "the pinned filter keeps enforcing"
        } else {
            "and the filter is attached nowhere"
        };
        let daemon = match (self.daemon_pid, self.daemon_running) {
            (Some(pid), true) => format!("running (pid {pid})"),
            (Some(pid), false) => format!("not running (last pid {pid}); {enforcing}"),
            (None, _) => format!("not running; {enforcing}"),
        };
        let _ = writeln!(out, "daemon:      {daemon}");
        if !self.program_matches_binary {
            let _ = writeln!(
                out,
                "program:     differs from this binary's; `hookwall run` replaces it in place"
            );
        }
        if self.links.is_empty() {
            let _ = writeln!(out, "interfaces:  none (not attached)");
        }
        for link in &self.links {
            let _ = writeln!(
                out,
                "interface:   {} ({}){}",
                link.interface,
                link.mode,
                if link.alive { "" } else { " LINK GONE" }
            );
        }
        let _ = writeln!(
            out,
            "allowlist:   {} IPv4 and {} IPv6 prefixes, applied at unix time {}",
            self.ipv4_prefixes, self.ipv6_prefixes, self.applied_at
        );
        let _ = writeln!(
            out,
            "counters:    {:<8} {:<12} {:>14} {:>16}",
            "verdict", "reason", "packets", "bytes"
        );
        for c in &self.counters {
            let _ = writeln!(
                out,
                "             {:<8} {:<12} {:>14} {:>16}",
                c.verdict, c.reason, c.packets, c.bytes
            );
        }
        out
    }
}
