//! `hookwall upgrade`: asks the running daemon to upgrade in place (SIGUSR2) and waits until
//! its successor serves and it has exited.
//!
//! The daemon is the process recorded in the pinned filter's META map (what `hookwall status`
//! shows), or the one `--pid` names. Success is seen in the same map: the successor records its
//! PID there when the filter is in force, and the old process exits once the successor is ready.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    filter::Pins,
    status::{self, process_is_hookwall},
};

/// How often the pinned META map and the old process are looked at.
const POLL: Duration = Duration::from_millis(100);

/// Signals the daemon (`pid`, else the one the pins under `pins` record) and waits up to
/// `timeout` for the hand-over. Returns the successor's PID.
///
/// # Errors
/// No running daemon, the signal failed, or the hand-over did not complete within `timeout`.
pub fn main(pins: &Pins, pid: Option<u32>, timeout: Duration) -> anyhow::Result<u32> {
    let recorded = || -> anyhow::Result<Option<u32>> {
        Ok(status::read(pins)
            .with_context(|| {
                format!(
                    "reading the filter pinned under {} (is hookwall running?)",
                    pins.root().display()
                )
            })?
            .daemon_pid)
    };
    let old = match pid {
        Some(pid) => pid,
        None => recorded()?.with_context(|| {
            format!(
                "no daemon PID is recorded under {}; give the daemon's PID with --pid",
                pins.root().display()
            )
        })?,
    };
    if !alive(old) || !process_is_hookwall(old) {
        bail!("PID {old} is not a running hookwall; give the daemon's PID with --pid");
    }
    let raw = libc::pid_t::try_from(old).context("the PID does not fit pid_t")?;
    // SAFETY: kill(2) with a checked PID and a signal number.
    if unsafe { libc::kill(raw, libc::SIGUSR2) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sending SIGUSR2 to PID {old}"));
    }
    eprintln!("asked PID {old} to upgrade in place (SIGUSR2); waiting for the hand-over");
    let deadline = Instant::now() + timeout;
    loop {
        thread::sleep(POLL);
        let now = recorded().ok().flatten();
        match now {
            Some(new) if new != old && process_is_hookwall(new) && !alive(old) => return Ok(new),
            _ if !alive(old) && now.is_none_or(|new| new == old || !alive(new)) => bail!(
                "PID {old} exited, but no successor serves (the filter records {}); start \
                 hookwall again",
                now.map_or_else(|| "no daemon".to_owned(), |pid| format!("PID {pid}"))
            ),
            _ => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "no hand-over within {timeout:?}: PID {old} still serves; its log says why the \
                 successor did not take over (hookwall_upgrades_total{{result=\"failure\"}} \
                 counts it)"
            );
        }
    }
}

/// Whether `pid` runs (a zombie, exited but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold anything.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[cfg(test)]
mod tests {
    use super::alive;

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!alive(pid));
    }
}
