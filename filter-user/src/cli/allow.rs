//! `hookwall allow accept`: lets a refused shrink of a fetched address list through.
//!
//! The daemon refuses a fetched list that lost more than `allow.max_shrink` of its prefixes and
//! notes the refusal in the cache directory (`KEY.refused`). This command turns each note into
//! an acceptance (`KEY.accept`) and sends the running daemon SIGHUP: the reload makes every
//! list with an acceptance fetch at once, and the next fetch of it applies the list, however
//! much it shrank (an acceptance is used once). Without a running daemon the acceptance waits
//! for its next start.

use std::path::Path;

use anyhow::Context as _;

use crate::{
    allowlist::sources::accept_refused,
    config,
    filter::{Pins, pinned::PinnedFilter},
};

/// What `hookwall allow accept` did.
#[derive(Debug)]
pub struct Accepted {
    /// What it prints.
    pub text: String,
    /// Whether there was anything to accept.
    pub any: bool,
}

/// Accepts the refused shrinks under the cache directory of the config at `config_path` (only
/// that of `source`, a preset's name or a source's URL without its query, if given), and
/// signals the daemon.
///
/// # Errors
/// If the config does not load or the cache directory cannot be read or written.
pub fn accept(config_path: &Path, source: Option<&str>) -> anyhow::Result<Accepted> {
    let config = config::load(config_path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let dir = config.allow.cache_dir(&config.store.path);
    let accepted = accept_refused(&dir, source)
        .with_context(|| format!("reading the refused lists in {}", dir.display()))?;
    if accepted.is_empty() {
        let which = source.map_or("no fetched list".to_owned(), |s| format!("no list of {s}"));
        return Ok(Accepted {
            text: format!(
                "{which} was refused for shrinking (nothing noted in {}); nothing to accept\n",
                dir.display()
            ),
            any: false,
        });
    }
    let mut text = String::new();
    for shrink in &accepted {
        text.push_str(&format!(
            "accepted: {} may shrink from {} to {} prefixes at its next fetch\n",
            shrink.label, shrink.old, shrink.new
        ));
    }
    text.push_str(&signal_daemon(&config.filter.pin_path));
    Ok(Accepted { text, any: true })
}

/// Sends SIGHUP to the daemon recorded in the pins, if it runs; what happened, as a line.
fn signal_daemon(pin_path: &Path) -> String {
    let pins = Pins::new(pin_path);
    let pid = PinnedFilter::new(&pins)
        .meta()
        .ok()
        .map(|meta| meta.daemon_pid)
        .filter(|&pid| pid != 0 && is_hookwall(pid));
    let Some(pid) = pid else {
        return "no running daemon found under the pin path: the lists are fetched with the \
                acceptance at its next start\n"
            .to_owned();
    };
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return format!("daemon PID {pid} is out of range; send it SIGHUP yourself\n");
    };
    // SAFETY: kill(2) with a PID read from the pins and checked to be hookwall's.
    if unsafe { libc::kill(raw, libc::SIGHUP) } == 0 {
        format!("told the daemon (PID {pid}) to fetch them now (SIGHUP)\n")
    } else {
        format!(
            "could not signal the daemon (PID {pid}): {}; the lists are fetched with the \
             acceptance at their next refresh, or send SIGHUP yourself\n",
            std::io::Error::last_os_error()
        )
    }
}

fn is_hookwall(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "hookwall")
}
