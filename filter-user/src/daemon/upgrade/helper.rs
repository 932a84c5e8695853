//! The upgrade helper: a process forked from `hookwall run` at its very start, while the daemon
//! is still one thread and still holds root's privileges, that starts the successor when the
//! daemon asks for an upgrade.
//!
//! It exists because the daemon cannot start the successor itself: once the filter is in force
//! the daemon keeps CAP_BPF alone, in its bounding set too, with no_new_privs, so a program it
//! executes can never hold the CAP_SYS_ADMIN that re-adopting the pinned filter takes. The
//! helper keeps what the start had, and does one thing with it: execute the binary the daemon
//! was started from, with the daemon's arguments and environment, handing it the sockets the
//! daemon sends. It reads no config, opens no file and no network socket, and exits when the
//! daemon's end of their socket closes (the daemon has exited), leaving a successor running.
//!
//! The protocol, one `SOCK_SEQPACKET` message each:
//! - daemon to helper: `SPAWN name:name:...` with the listening sockets (in the order of the
//!   names) and then the hand-over socket as `SCM_RIGHTS`; `KILL` ends the successor not yet
//!   confirmed;
//! - helper to daemon: `PID n` or `FAILED why` for a `SPAWN`; `EXIT status` when the successor
//!   it started ends while the daemon still runs.

use std::{
    ffi::{OsString, c_int},
    io::{self, IoSlice, IoSliceMut},
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::process::CommandExt as _,
    },
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg},
};

use super::UPGRADE_FD;

/// Most sockets one `SPAWN` carries: the listeners and the hand-over socket.
pub(super) const MAX_FDS: usize = 16;

/// How often the helper looks whether the successor it started has ended.
const CHILD_POLL: Duration = Duration::from_millis(50);

/// What the successor is started as: the daemon's own program and arguments.
pub(super) struct Program {
    /// The binary's path as resolved when the daemon started. A package upgrade renames the new
    /// binary onto this path, so it now names the new one (`/proc/self/exe` would still be the
    /// old, deleted file).
    pub(super) exe: PathBuf,
    pub(super) argv0: OsString,
    pub(super) args: Vec<OsString>,
}

impl Program {
    /// This process's binary and arguments.
    pub(super) fn current() -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut args = std::env::args_os();
        let argv0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        Ok(Self {
            exe,
            argv0,
            args: args.collect(),
        })
    }
}

/// The helper's life, in the forked process; exits when the daemon has gone.
pub(super) fn serve(socket: &OwnedFd, program: &Program) -> ! {
    let code = match run(socket, program) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hookwall upgrade helper: {e}; upgrades are no longer possible");
            1
        }
    };
    std::process::exit(code)
}

fn run(socket: &OwnedFd, program: &Program) -> io::Result<()> {
    let mut successor: Option<Child> = None;
    loop {
        let timeout = if successor.is_some() {
            PollTimeout::try_from(CHILD_POLL).unwrap_or(PollTimeout::MAX)
        } else {
            PollTimeout::NONE
        };
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(child) = successor.as_mut()
            && let Some(status) = child.try_wait()?
        {
            successor = None;
            send(socket, &format!("EXIT {status}"), &[])?;
        }
        let readable = fds[0].revents().is_some_and(|r| !r.is_empty());
        if !readable {
            continue;
        }
        let Some((message, fds)) = receive(socket)? else {
            // The daemon has exited: a successor it confirmed now serves alone, and one it had
            // not confirmed yet carries on too (it is the only daemon left).
            return Ok(());
        };
        if let Some(names) = message.strip_prefix("SPAWN ") {
            let reply = if successor.is_some() {
                "FAILED an upgrade is already under way".to_owned()
            } else {
                match spawn(program, names, fds) {
                    Ok(child) => {
                        let reply = format!("PID {}", child.id());
                        successor = Some(child);
                        reply
                    }
                    Err(e) => format!("FAILED starting {}: {e}", program.exe.display()),
                }
            };
            send(socket, &reply, &[])?;
        } else if message == "KILL"
            && let Some(child) = successor.as_mut()
        {
            // Reaped, and reported, by the next turn of the loop.
            let _ = child.kill();
        }
    }
}

/// Starts `program` with `fds` (the listeners named by `names`, `:`-separated, then the
/// hand-over socket) as fds 3, 4, ..., as a service manager would hand them.
fn spawn(program: &Program, names: &str, mut fds: Vec<OwnedFd>) -> io::Result<Child> {
    let handover = fds
        .pop()
        .ok_or_else(|| io::Error::other("no hand-over socket was sent"))?;
    let names: Vec<&str> = names.split(':').filter(|n| !n.is_empty()).collect();
    if names.len() != fds.len() {
        return Err(io::Error::other(format!(
            "{} socket names for {} sockets",
            names.len(),
            fds.len()
        )));
    }
    let listeners = fds.len();
    // LISTEN_PID must be the successor's PID, known only in the forked child. This process has
    // one thread (it was forked from a daemon that had one, and starts none), so the forked child
    // may set it with setenv(3) before exec: no other thread can hold the environment's or the
    // allocator's lock. std executes with the current `environ` when the Command's environment
    // is left untouched, so the variables are set on this process around the spawn instead.
    // SAFETY: this process has one thread; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("LISTEN_FDS", listeners.to_string());
        std::env::set_var("LISTEN_FDNAMES", names.join(":"));
        std::env::set_var(UPGRADE_FD, (3 + listeners).to_string());
        // The watchdog is the successor's once the manager is told its PID.
        std::env::remove_var("WATCHDOG_PID");
        std::env::remove_var("LISTEN_PID");
    }
    let mut sources: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    sources.push(handover.as_raw_fd());
    let count = c_int::try_from(sources.len()).map_err(io::Error::other)?;
    let mut command = Command::new(&program.exe);
    command.arg0(&program.argv0).args(&program.args);
    // SAFETY: between fork and exec the closure calls fcntl, dup2, getpid and setenv only; the
    // last allocates, which is sound here because this process has a single thread (above).
    unsafe {
        command.pre_exec(move || {
            // Every source out of the way of the target numbers first (a source may sit on one),
            // close-on-exec so that the copies end with the exec; then into place, where dup2
            // clears the flag.
            for fd in &mut sources {
                let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3 + count);
                if high < 0 {
                    return Err(io::Error::last_os_error());
                }
                *fd = high;
            }
            for (target, fd) in (3..).zip(sources.iter()) {
                if libc::dup2(*fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // libc's setenv, not std's: std holds its environment lock (for reading) across
            // the fork, so std::env::set_var here would wait for it forever.
            let pid =
                std::ffi::CString::new(std::process::id().to_string()).map_err(io::Error::other)?;
            if libc::setenv(c"LISTEN_PID".as_ptr(), pid.as_ptr(), 1) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    // SAFETY: as above, one thread.
    unsafe {
        for name in ["LISTEN_FDS", "LISTEN_FDNAMES", UPGRADE_FD] {
            std::env::remove_var(name);
        }
    }
    drop(fds);
    drop(handover);
    spawned
}

/// Sends `text` with `fds` as one message.
pub(super) fn send(socket: &OwnedFd, text: &str, fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(text.as_bytes())];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// One message and the fds it carried (close-on-exec); `None` once the other end has closed.
pub(super) fn receive(socket: &OwnedFd) -> io::Result<Option<(String, Vec<OwnedFd>)>> {
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let (len, fds) = loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        // SAFETY: the kernel just installed these fds in this process for us.
                        fds.extend(
                            received
                                .into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break (msg.bytes, fds);
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    if len == 0 {
        return Ok(None);
    }
    Ok(Some((
        String::from_utf8_lossy(&buf[..len]).into_owned(),
        fds,
    )))
}
