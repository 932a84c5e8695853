//! The service manager's notify protocol (`sd_notify(3)`): what `hookwall run` tells systemd
//! about its state, for a `Type=notify` unit.
//!
//! - `READY=1`, with `STATUS=` and `MAINPID=`, once the filter is in force on every interface
//!   and the listeners are bound and serving;
//! - `RELOADING=1` with `MONOTONIC_USEC=` before a reload, then `READY=1` with a `STATUS=`
//!   saying how it went (also when it was refused);
//! - `STOPPING=1` when the stop begins, or `MAINPID=` of the successor when it stops after an
//!   in-place upgrade (`upgrade`);
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, from the daemon's main loop (see
//!   [`Notifier::watchdog_period`]).
//!
//! Without `NOTIFY_SOCKET` nothing is sent. The variable is read at start and left set.
//!
//! The messages are spelled by the `sd-notify` crate; the socket is this module's, because that
//! crate connects a new socket per message to a path only. Here the socket is connected once, at
//! start: the daemon may have dropped to `daemon.run_as` by the time it reports a reload, and
//! a connected socket keeps working whatever the directory of the path allows then. Abstract
//! socket names (`@name`) are supported, as systemd's own clients do.

use std::{
    io,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

use sd_notify::NotifyState;

/// Where the service manager listens, when it does.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog period the manager expects pings within, in microseconds.
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog period is meant for; absent means the main process.
const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// The connection to the service manager, if the daemon runs under one.
pub(super) struct Notifier {
    socket: Option<UnixDatagram>,
    /// Where `socket` is connected, for the messages.
    address: String,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Connects to `$NOTIFY_SOCKET`, if set, and reads the watchdog period. A socket that cannot
    /// be connected is reported once and then ignored: the daemon runs without telling.
    pub(super) fn from_env() -> Self {
        let address = std::env::var(NOTIFY_SOCKET).unwrap_or_default();
        let socket = if address.is_empty() {
            None
        } else {
            match connect(&address) {
                Ok(socket) => Some(socket),
                Err(e) => {
                    tracing::warn!(
                        "cannot connect to the service manager's NOTIFY_SOCKET {address}: {e}; \
                         it will not be told when hookwall is ready"
                    );
                    None
                }
            }
        };
        let watchdog = socket.as_ref().and_then(|_| {
            watchdog_period(
                std::env::var(WATCHDOG_USEC).ok().as_deref(),
                std::env::var(WATCHDOG_PID).ok().as_deref(),
                std::process::id(),
            )
        });
        Self {
            socket,
            address,
            watchdog,
        }
    }

    /// How often to ping the watchdog: half the manager's period, or `None` if it wants none.
    /// The pings are sent from the daemon's main loop, so that a wedged loop (or runtime) stops
    /// them and the manager restarts the daemon.
    pub(super) fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Start-up is complete: the filter is in force and the listeners serve.
    pub(super) fn ready(&self, status: &str) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status(status),
            NotifyState::MainPid(std::process::id()),
        ]);
    }

    /// A reload begins. `MONOTONIC_USEC` lets a manager with `Type=notify-reload` tell this
    /// reload from an earlier one.
    pub(super) fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            // CLOCK_MONOTONIC cannot fail on Linux; the reload is still announced.
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// A reload ended (applied or refused); `status` says which and what is in force.
    pub(super) fn reloaded(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// The stop begins.
    pub(super) fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// An upgrade succeeded: `pid` is the service's main process from now on. Sent while this
    /// process is still the main one, so that a manager accepting only the main process's
    /// notifications (`NotifyAccess=main`) takes it; the successor's own `READY=1` and
    /// `MAINPID=` follow or precede it and say the same.
    pub(super) fn handed_over(&self, pid: u32) {
        let status = format!("upgraded: PID {pid} serves now");
        self.send(&[NotifyState::MainPid(pid), NotifyState::Status(&status)]);
    }

    /// The daemon's main loop is alive.
    pub(super) fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(socket) = &self.socket else { return };
        let message = message(states);
        // Non-blocking: a manager that does not read must not stall the main loop; a lost
        // message is reported and the next one tried.
        match socket.send(message.as_bytes()) {
            Ok(sent) if sent == message.len() => {}
            Ok(sent) => tracing::warn!(
                "the service manager at {} took {sent} of {} bytes of a notification",
                self.address,
                message.len()
            ),
            Err(e) => tracing::warn!(
                "notifying the service manager at {} failed: {e}",
                self.address
            ),
        }
    }
}

/// One datagram: each state on a line of its own.
fn message(states: &[NotifyState<'_>]) -> String {
    states.iter().map(|state| format!("{state}\n")).collect()
}

/// A non-blocking datagram socket connected to `address`: a path, or `@name` for an abstract
/// socket.
fn connect(address: &str) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    match address.strip_prefix('@') {
        Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?,
        None if address.starts_with('/') => socket.connect(address)?,
        // systemd 254 and later may hand out vsock: addresses, for virtual machines.
        None => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only a socket path or an abstract @name is supported",
            ));
        }
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Half the watchdog period in `usec` (`WATCHDOG_USEC`), if it is meant for process `ours`
/// (`WATCHDOG_PID`, when set); `None` if unset, zero, or not a number.
fn watchdog_period(usec: Option<&str>, pid: Option<&str>, ours: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&usec| usec > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(ours)
    {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_at_half_its_period_when_it_is_ours() {
        let ours = 4242;
        assert_eq!(
            watchdog_period(Some("30000000"), None, ours),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_period(Some("200000"), Some("4242"), ours),
            Some(Duration::from_millis(100))
        );
        assert_eq!(watchdog_period(Some("200000"), Some("17"), ours), None);
        assert_eq!(watchdog_period(Some("0"), None, ours), None);
        assert_eq!(watchdog_period(Some("soon"), None, ours), None);
        assert_eq!(watchdog_period(None, Some("4242"), ours), None);
    }

    #[test]
    fn messages_reach_abstract_and_path_sockets_one_datagram_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        let name = format!("hookwall-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let by_name = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        for (address, receiver) in [
            (path.to_str().unwrap().to_owned(), &by_path),
            (format!("@{name}"), &by_name),
        ] {
            let notifier = Notifier {
                socket: Some(connect(&address).unwrap()),
                address,
                watchdog: None,
            };
            notifier.reloaded("reloaded: 1 IPv4, 0 IPv6 prefixes");
            let mut buf = [0u8; 512];
            let len = receiver.recv(&mut buf).unwrap();
            assert_eq!(
                std::str::from_utf8(&buf[..len]).unwrap(),
                "READY=1\nSTATUS=reloaded: 1 IPv4, 0 IPv6 prefixes\n"
            );
        }
        let err = connect("vsock:2:1234").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier {
            socket: None,
            address: String::new(),
            watchdog: None,
        };
        notifier.ready("ready");
        notifier.watchdog();
        assert_eq!(notifier.watchdog_period(), None);
    }
}
