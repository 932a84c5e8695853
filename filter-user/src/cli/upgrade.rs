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
    wait_for_successor(
        old,
        timeout,
        POLL,
        &mut System {
            recorded: || recorded().ok().flatten(),
        },
    )
}

/// What the wait for a hand-over looks at: processes, and the PID the pinned filter records.
trait Observe {
    fn alive(&mut self, pid: u32) -> bool;
    fn is_hookwall(&mut self, pid: u32) -> bool;
    fn recorded(&mut self) -> Option<u32>;
}

/// This host's processes and pinned filter.
struct System<R> {
    recorded: R,
}

impl<R: FnMut() -> Option<u32>> Observe for System<R> {
    fn alive(&mut self, pid: u32) -> bool {
        alive(pid)
    }

    fn is_hookwall(&mut self, pid: u32) -> bool {
        process_is_hookwall(pid)
    }

    fn recorded(&mut self) -> Option<u32> {
        (self.recorded)()
    }
}

/// Waits until `old` has exited and a successor is recorded and runs; returns its PID.
fn wait_for_successor(
    old: u32,
    timeout: Duration,
    poll: Duration,
    observe: &mut impl Observe,
) -> anyhow::Result<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        thread::sleep(poll);
        // The old process's end is looked at before the record: the successor records its PID
        // before it is ready, and the old process exits only after that, so a record read after
        // the old process is seen gone already names the successor. Read the other way round, a
        // poll delayed between the two looks could pair a record from before the hand-over with
        // the old process already gone.
        let old_gone = !observe.alive(old);
        let now = observe.recorded();
        match now {
            Some(new) if new != old && old_gone && observe.is_hookwall(new) => return Ok(new),
            _ if old_gone && now.is_none_or(|new| new == old || !observe.alive(new)) => bail!(
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
    use std::time::Duration;

    use super::{Observe, alive, wait_for_successor};

    const OLD: u32 = 100;
    const NEW: u32 = 200;

    /// A hand-over that completes (the successor records its PID, then the old process exits)
    /// right after the `complete_after`-th look, as when the polling process is preempted there.
    struct HandOver {
        looks: usize,
        complete_after: Option<usize>,
        successor: Option<u32>,
    }

    impl HandOver {
        fn look(&mut self) -> bool {
            self.looks += 1;
            self.complete_after.is_some_and(|n| self.looks > n)
        }
    }

    impl Observe for HandOver {
        fn alive(&mut self, pid: u32) -> bool {
            let done = self.look();
            match pid {
                OLD => !done,
                pid => done && Some(pid) == self.successor,
            }
        }

        fn is_hookwall(&mut self, pid: u32) -> bool {
            self.alive(pid)
        }

        fn recorded(&mut self) -> Option<u32> {
            if self.look() {
                self.successor.or(Some(OLD))
            } else {
                Some(OLD)
            }
        }
    }

    fn wait(world: &mut HandOver) -> anyhow::Result<u32> {
        wait_for_successor(OLD, Duration::from_secs(5), Duration::ZERO, world)
    }

    #[test]
    fn a_hand_over_between_two_looks_of_one_poll_is_a_success() {
        for complete_after in 0..6 {
            let mut world = HandOver {
                looks: 0,
                complete_after: Some(complete_after),
                successor: Some(NEW),
            };
            assert_eq!(
                wait(&mut world).expect("the hand-over succeeded"),
                NEW,
                "hand-over after look {complete_after}"
            );
        }
    }

    #[test]
    fn an_old_process_that_exits_with_no_successor_is_a_failure() {
        let mut world = HandOver {
            looks: 0,
            complete_after: Some(2),
            successor: None,
        };
        let err = wait(&mut world).expect_err("no successor").to_string();
        assert!(
            err.contains("PID 100 exited, but no successor serves (the filter records PID 100)"),
            "{err}"
        );
    }

    #[test]
    fn an_old_process_that_keeps_serving_is_a_failure_after_the_timeout() {
        let mut world = HandOver {
            looks: 0,
            complete_after: None,
            successor: Some(NEW),
        };
        let err = wait_for_successor(OLD, Duration::from_millis(20), Duration::ZERO, &mut world)
            .expect_err("no hand-over")
            .to_string();
        assert!(
            err.contains("no hand-over within 20ms: PID 100 still serves"),
            "{err}"
        );
    }

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
