//! `hookwall status`: what the pinned filter is doing, read straight from the pins (through
//! [`crate::filter::pinned`]), so it works while the daemon runs and after it has died. The
//! command's output, text or JSON, is [`crate::cli::status`]'s.

use std::path::PathBuf;

use filter_common::Counter;
use serde::Serialize;

use crate::filter::{Pins, object_sha256, pinned::PinnedFilter};

/// Why the status could not be read: a pinned map is missing or unreadable.
pub use crate::filter::pinned::PinnedError as StatusError;

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

/// Reads the status of the filter pinned under `pins`.
///
/// # Errors
/// If a program is pinned but its maps cannot be read.
pub fn read(pins: &Pins) -> Result<Status, StatusError> {
    let pinned = PinnedFilter::new(pins);
    let mut status = Status {
        pin_path: pins.root().to_path_buf(),
        loaded: pinned.loaded(),
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
    status.links = pinned
        .links()
        .into_iter()
        .map(|link| LinkStatus {
            interface: link.interface,
            mode: link.mode.as_str(),
            alive: link.alive,
        })
        .collect();
    if !status.loaded {
        return Ok(status);
    }

    let settings = pinned.policy()?.settings;
    status.mode = Some(settings.mode_name());
    status.strict_fragments = settings.strict_fragments();

    (status.ipv4_prefixes, status.ipv6_prefixes) = pinned.prefix_counts()?;

    let meta = pinned.meta()?;
    status.applied_at = meta.applied_at;
    status.program_matches_binary = meta.object_sha256 == object_sha256();
    if meta.daemon_pid != 0 {
        status.daemon_pid = Some(meta.daemon_pid);
        status.daemon_running = process_is_hookwall(meta.daemon_pid);
    }

    let values = pinned.counters()?;
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

/// Whether `pid` is a live process named hookwall (a recycled PID of another program is not).
#[must_use]
pub fn process_is_hookwall(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "hookwall")
}
