//! In-place upgrade (`SIGUSR2`, `hookwall upgrade`): the running daemon starts the binary now at
//! its own path, with the same arguments, and hands it its listening sockets; it stops only once
//! the successor is serving, so no connection is refused and no request fails.
//!
//! 1. On `SIGUSR2` the daemon asks its upgrade helper ([`helper`], forked at the start while it
//!    still had root's privileges) to start the successor with every named listener the daemon
//!    holds as fds 3, 4, ... (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`: socket activation,
//!    as a service manager does it) and one end of a hand-over socket (`HOOKWALL_UPGRADE_FD`).
//! 2. The successor starts as a restart does (it re-adopts the pinned filter, opens the store,
//!    serves on the handed sockets beside the daemon) and writes `READY=1` on the hand-over
//!    socket when it is ready. Its delivery worker waits until the hand-over socket reaches its
//!    end, which is when the predecessor has exited: one process delivers at a time.
//! 3. The daemon then stops as on SIGTERM (it stops accepting, finishes requests in flight, stops
//!    its delivery worker, closes its store) and exits 0; under a service manager it first tells
//!    it the successor's `MAINPID=`.
//!
//! If the successor exits, or is not ready within [`READY_TIMEOUT`], the daemon ends it (through
//! the helper), logs why, counts `hookwall_upgrades_total{result="failure"}` and keeps serving.
//! A private socket pair, rather than a `NOTIFY_SOCKET` path, carries the `READY=1`: nobody else
//! can write to it, and its end tells the daemon at once that the successor has died.

mod helper;

use std::{
    io::{self, Write as _},
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    time::Duration,
};

use nix::{
    sys::socket::{AddressFamily, SockFlag, SockType, socketpair},
    unistd::{ForkResult, fork},
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader, unix::AsyncFd},
    time::Instant,
};

/// The environment variable that gives the successor the number of its hand-over socket.
pub(super) const UPGRADE_FD: &str = "HOOKWALL_UPGRADE_FD";

/// How long the successor has to be ready: a start re-adopting the filter takes well under a
/// second, loading a 100,000-prefix allowlist a few.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the helper has to answer, and a successor to end once told to.
const HELPER_PATIENCE: Duration = Duration::from_secs(5);

/// Why an upgrade did not happen; the daemon keeps serving in every case.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "no upgrade helper runs (it could not be started, or it ended; see the log at start), so \
         no successor can be started; restart hookwall instead"
    )]
    NoHelper,
    #[error("an upgrade is already under way")]
    Busy,
    #[error("asking the upgrade helper to start the successor failed: {0}")]
    Helper(#[source] io::Error),
    #[error("the successor could not be started: {0}")]
    Spawn(String),
    #[error(
        "the successor (PID {pid}) ended before it was ready ({status}); its log lines above \
         say why"
    )]
    Exited { pid: u32, status: String },
    #[error(
        "the successor (PID {pid}) was not ready within {timeout:?}; it was ended ({status}); \
         its log lines above say how far it got"
    )]
    NotReady {
        pid: u32,
        timeout: Duration,
        status: String,
    },
}

/// The daemon's side: the helper, and the listeners a successor is handed.
pub struct Upgrader {
    helper: Option<OwnedFd>,
    listeners: Vec<(&'static str, OwnedFd)>,
    busy: std::sync::atomic::AtomicBool,
}

/// A successor that is ready. Dropping it (when the daemon has stopped) lets the successor's
/// delivery worker start.
pub(super) struct Successor {
    pub(super) pid: u32,
    _handover: tokio::net::UnixStream,
}

impl Upgrader {
    /// Forks the upgrade helper. Call it first thing, while the process has one thread and root's
    /// privileges. The helper keeps standard input, output and error and closes every other fd
    /// it inherits (such as sockets a service manager handed over).
    ///
    /// Without a helper (the process already has threads, or the fork failed) the daemon runs
    /// as before and refuses upgrades with [`UpgradeError::NoHelper`]; the reason is logged.
    ///
    /// # Safety
    /// The process must have a single thread: the forked helper runs Rust code, allocating.
    #[must_use]
    pub unsafe fn start_helper() -> Self {
        let helper = match start_helper() {
            Ok(helper) => Some(helper),
            Err(e) => {
                tracing::warn!(
                    "the upgrade helper could not be started ({e}): SIGUSR2 and `hookwall \
                     upgrade` will be refused; a restart still works"
                );
                None
            }
        };
        Self {
            helper,
            listeners: Vec::new(),
            busy: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Adds a listening socket (this process's own duplicate of it) that a successor is handed
    /// as `name` (`https`, `metrics`, ...).
    pub(super) fn hand_over(&mut self, name: &'static str, socket: OwnedFd) {
        self.listeners.push((name, socket));
    }

    /// Starts the successor and waits until it is ready.
    ///
    /// # Errors
    /// See [`UpgradeError`]. A successor that was started is ended before this returns an
    /// error, also when the returned future is dropped before it completes.
    pub(super) async fn upgrade(&self) -> Result<Successor, UpgradeError> {
        let helper = self.helper.as_ref().ok_or(UpgradeError::NoHelper)?;
        if self.busy.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(UpgradeError::Busy);
        }
        let _busy = Busy(&self.busy);
        let helper = helper.try_clone().map_err(UpgradeError::Helper)?;
        // SAFETY: an OwnedFd's fd stays open, and the same, until it is dropped with the AsyncFd.
        let helper = unsafe { AsyncFd::register(helper) }
            .map_err(|e| UpgradeError::Helper(io::Error::from(e)))?;
        // A report of an earlier successor that ended late is of no interest now.
        while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::ZERO, recv(&helper)).await {}
        let (ours, theirs) = UnixStream::pair().map_err(UpgradeError::Helper)?;
        let names: Vec<&str> = self.listeners.iter().map(|(name, _)| *name).collect();
        let mut fds: Vec<RawFd> = self
            .listeners
            .iter()
            .map(|(_, fd)| fd.as_raw_fd())
            .collect();
        fds.push(theirs.as_raw_fd());
        helper::send(
            helper.get_ref(),
            &format!("SPAWN {}", names.join(":")),
            &fds,
        )
        .map_err(UpgradeError::Helper)?;
        drop(theirs);
        let reply = match tokio::time::timeout(HELPER_PATIENCE, recv(&helper)).await {
            Ok(Ok(Some(reply))) => reply,
            Ok(Ok(None)) => return Err(UpgradeError::Helper(io::Error::other("it has ended"))),
            Ok(Err(e)) => return Err(UpgradeError::Helper(e)),
            Err(_) => {
                return Err(UpgradeError::Helper(io::Error::other(format!(
                    "no answer within {HELPER_PATIENCE:?}"
                ))));
            }
        };
        let pid: u32 = match reply.strip_prefix("PID ").map(str::parse) {
            Some(Ok(pid)) => pid,
            _ => {
                let why = reply.strip_prefix("FAILED ").unwrap_or(&reply);
                return Err(UpgradeError::Spawn(why.to_owned()));
            }
        };
        tracing::info!(
            pid,
            "upgrade: started the successor; waiting until it is ready"
        );
        let mut pending = Pending {
            helper: &helper,
            armed: true,
        };
        ours.set_nonblocking(true).map_err(UpgradeError::Helper)?;
        let ours = tokio::net::UnixStream::from_std(ours).map_err(UpgradeError::Helper)?;
        let mut ours = BufReader::new(ours);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut line = String::new();
        let ended = loop {
            tokio::select! {
                read = ours.read_line(&mut line) => match read {
                    Ok(_) if line.trim_end() == "READY=1" => {
                        pending.armed = false;
                        return Ok(Successor { pid, _handover: ours.into_inner() });
                    }
                    // Anything else is not from a hookwall successor; only READY=1 counts.
                    Ok(n) if n > 0 => line.clear(),
                    // Its end closed: it has exited (or is exiting).
                    _ => break None,
                },
                report = recv(&helper) => match report {
                    Ok(Some(report)) => break report.strip_prefix("EXIT ").map(str::to_owned),
                    _ => break None,
                },
                () = tokio::time::sleep_until(deadline) => {
                    let status = pending.kill().await;
                    return Err(UpgradeError::NotReady { pid, timeout: READY_TIMEOUT, status });
                }
            }
        };
        let status = match ended {
            Some(status) => status,
            None => exit_report(&helper).await,
        };
        pending.armed = false;
        Err(UpgradeError::Exited { pid, status })
    }
}

/// Marks the upgrader free again when an upgrade ends, however it ends.
struct Busy<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// A successor started but not confirmed: ended if the upgrade is abandoned.
struct Pending<'a> {
    helper: &'a AsyncFd<OwnedFd>,
    armed: bool,
}

impl Pending<'_> {
    /// Ends the successor; returns how it ended, as the helper reports it.
    async fn kill(&mut self) -> String {
        self.armed = false;
        if let Err(e) = helper::send(self.helper.get_ref(), "KILL", &[]) {
            return format!("asking the helper to end it failed: {e}");
        }
        exit_report(self.helper).await
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = helper::send(self.helper.get_ref(), "KILL", &[]);
        }
    }
}

/// The helper's `EXIT` report of the successor, waited for briefly.
async fn exit_report(helper: &AsyncFd<OwnedFd>) -> String {
    let deadline = Instant::now() + HELPER_PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, recv(helper)).await {
            Ok(Ok(Some(report))) => {
                if let Some(status) = report.strip_prefix("EXIT ") {
                    return status.to_owned();
                }
            }
            Ok(Ok(None)) => return "the upgrade helper has ended".to_owned(),
            Ok(Err(e)) => return format!("the upgrade helper could not be read: {e}"),
            Err(_) => return format!("no exit reported within {HELPER_PATIENCE:?}"),
        }
    }
}

/// The next message from the helper; `None` once it has ended.
async fn recv(helper: &AsyncFd<OwnedFd>) -> io::Result<Option<String>> {
    loop {
        let mut guard = helper.readable().await?;
        match guard.try_io(|fd| helper::receive(fd.get_ref())) {
            Ok(result) => return result.map(|m| m.map(|(text, _)| text)),
            Err(_would_block) => {}
        }
    }
}

fn start_helper() -> io::Result<OwnedFd> {
    let threads = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<usize>().ok());
    if threads != Some(1) {
        return Err(io::Error::other(format!(
            "the process has {threads:?} threads; the helper is forked before any starts"
        )));
    }
    let program = helper::Program::current()?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: the process has one thread (checked above), so the child may run any code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ours);
            close_all_but(theirs.as_fd());
            helper::serve(&theirs, &program)
        }
        ForkResult::Parent { .. } => {
            drop(theirs);
            set_nonblocking(ours.as_fd())?;
            Ok(ours)
        }
    }
}

/// Closes every fd of this process from 3 up but `keep`: the helper holds no socket of the
/// daemon's (a listener a service manager handed over, for one) open.
fn close_all_but(keep: BorrowedFd<'_>) {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if fd > 2 && fd != keep.as_raw_fd() {
            // SAFETY: nothing in the helper uses these fds. The listing's own fd is among them
            // and already closed: close(2) fails on it with EBADF, harmlessly.
            unsafe { libc::close(fd) };
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on an open fd with integer arguments.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The successor's side: the hand-over socket its predecessor gave it.
#[derive(Debug, Default)]
pub struct Handover(Option<UnixStream>);

impl Handover {
    /// Takes the hand-over socket named by `HOOKWALL_UPGRADE_FD` and removes the variable; none
    /// when it is absent (a start that is not an upgrade).
    ///
    /// # Errors
    /// If the variable does not name an open socket.
    ///
    /// # Safety
    /// Changes the environment: no other thread may run.
    pub unsafe fn take_from_env() -> io::Result<Self> {
        let Some(value) = std::env::var_os(UPGRADE_FD) else {
            return Ok(Self(None));
        };
        // SAFETY: the caller guarantees no other thread reads or writes the environment.
        unsafe { std::env::remove_var(UPGRADE_FD) };
        let fd: RawFd = value
            .to_str()
            .and_then(|v| v.parse().ok())
            .filter(|fd| *fd > 2)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{UPGRADE_FD}={value:?} is not an fd number above 2"
                ))
            })?;
        // SAFETY: the predecessor's helper put the hand-over socket at this number for this
        // process, and nothing else here owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fcntl on the fd just taken.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = socket2::Socket::from(owned);
        socket
            .r#type()
            .map_err(|e| io::Error::other(format!("{UPGRADE_FD}={fd} is not a socket: {e}")))?;
        Ok(Self(Some(UnixStream::from(OwnedFd::from(socket)))))
    }

    /// Whether this start takes over from a predecessor.
    pub(super) fn is_upgrade(&self) -> bool {
        self.0.is_some()
    }

    /// Tells the predecessor that this process is ready: it stops, and exits.
    pub(super) fn ready(&self) {
        if let Some(socket) = &self.0
            && let Err(e) = (&*socket).write_all(b"READY=1\n")
        {
            tracing::warn!(
                "telling the previous process that this one is ready failed: {e}; it stops \
                 when its own wait ends"
            );
        }
    }

    /// Completes once the predecessor has exited (its end of the hand-over socket closed), at
    /// once when there is none.
    ///
    /// # Errors
    /// If the socket cannot be registered with the runtime.
    pub(super) fn predecessor_gone(&self) -> io::Result<impl Future<Output = ()> + Send + use<>> {
        let socket = match &self.0 {
            Some(socket) => {
                let socket = socket.try_clone()?;
                socket.set_nonblocking(true)?;
                Some(tokio::net::UnixStream::from_std(socket)?)
            }
            None => None,
        };
        Ok(async move {
            let Some(mut socket) = socket else { return };
            let mut buf = [0u8; 64];
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
    }
}
