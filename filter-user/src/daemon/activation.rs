//! Socket activation (`sd_listen_fds(3)`): listening sockets the service manager holds across
//! restarts and hands to each new `hookwall run`, so a restart never closes the port. An
//! in-place upgrade (`upgrade`) hands the running daemon's sockets to its successor the same way.
//!
//! The manager passes them as fds 3, 4, ... with `LISTEN_PID` (ours, else they are meant for
//! another process and ignored), `LISTEN_FDS` (their count) and `LISTEN_FDNAMES` (a name each,
//! the `.socket` unit's `FileDescriptorName=`). The names are `https` (the HTTPS listener,
//! `server.listen`), `metrics` (`metrics.listen`) and `acme` (the plain-HTTP listener for ACME
//! HTTP-01 challenges, `server.acme.http_listen`, only with `server.tls = "acme"`). Reading
//! them (the `sd-notify` crate) marks them close-on-exec and removes the three variables, so
//! no child inherits them.
//!
//! A handed socket must be a listening TCP socket on exactly the address the config names:
//! the filter protects the configured port, so a socket unit and a config that disagree would
//! serve one port and guard another. Anything else refuses the start with what to change.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use socket2::{Socket, Type};

use crate::config::{Config, Tls};

/// The name of the HTTPS listener's socket (`FileDescriptorName=https`).
pub const HTTPS: &str = "https";
/// The name of the metrics listener's socket (`FileDescriptorName=metrics`).
pub const METRICS: &str = "metrics";
/// The name of the ACME HTTP-01 listener's socket (`FileDescriptorName=acme`).
pub const ACME: &str = "acme";

/// Why the handed sockets cannot be used; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error(
        "socket activation: cannot read the sockets the service manager handed over \
         (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES): {0}; they must be numbers, and name every \
         socket (FileDescriptorName= in each .socket unit)"
    )]
    Environment(#[source] io::Error),
    #[error(
        "socket activation: fd {fd} (named \"{name}\") is not a listening TCP socket ({why}); \
         use ListenStream= (not ListenDatagram=, ListenFIFO= or Accept=yes) in the .socket unit"
    )]
    NotListeningTcp {
        fd: RawFd,
        name: String,
        why: String,
    },
    #[error(
        "socket activation: fd {fd} has the unknown name \"{name}\"; set FileDescriptorName=https \
         (HTTPS, server.listen), FileDescriptorName=metrics (metrics.listen) or \
         FileDescriptorName=acme (server.acme.http_listen) in its .socket unit"
    )]
    UnknownName { fd: RawFd, name: String },
    #[error(
        "socket activation: fd {fd} is named \"acme\", but no ACME listener is configured \
         (server.tls is not \"acme\", or the config has no [[route]]); remove that socket from \
         the service's Sockets=, or set server.tls = \"acme\" with a [server.acme] table"
    )]
    AcmeNotConfigured { fd: RawFd },
    #[error(
        "socket activation: two sockets are named \"{name}\" (fds {first} and {second}); hand \
         one socket per listener"
    )]
    Duplicate {
        name: String,
        first: RawFd,
        second: RawFd,
    },
    #[error(
        "socket activation: the socket named \"{name}\" listens on {handed}, but {key} is \
         {configured}; make the .socket unit's ListenStream={configured} (or set {key} = \
         \"{handed}\"): the filter protects the configured port, so both must agree"
    )]
    AddressMismatch {
        name: &'static str,
        key: &'static str,
        handed: SocketAddr,
        configured: SocketAddr,
    },
    #[error(
        "socket activation: a socket named \"https\" (fd {fd}) was handed over, but the config \
         has no [[route]], so nothing serves HTTPS; add a route, or remove hookwall.socket from \
         the service's Sockets="
    )]
    NoHttpsListener { fd: RawFd },
}

/// The sockets the service manager handed over, with their names, not yet checked.
#[derive(Debug, Default)]
pub struct Handed(Vec<(OwnedFd, String)>);

/// The handed sockets, checked against the config, one per listener.
#[derive(Debug, Default)]
pub struct Listeners {
    /// For the HTTPS listener (`server.listen`).
    pub https: Option<TcpListener>,
    /// For the metrics listener (`metrics.listen`).
    pub metrics: Option<TcpListener>,
    /// For the ACME HTTP-01 listener (`server.acme.http_listen`).
    pub acme: Option<TcpListener>,
}

impl Handed {
    /// Takes the sockets handed to this process and removes `LISTEN_PID`, `LISTEN_FDS` and
    /// `LISTEN_FDNAMES` from the environment; none when the variables are absent or meant for
    /// another process.
    ///
    /// # Errors
    /// If the variables are malformed (a count that is not a number, fewer names than fds).
    ///
    /// # Safety
    /// Changes the environment: no other thread may run (call it before the runtime starts).
    pub unsafe fn take_from_env() -> Result<Self, ActivationError> {
        // SAFETY: the caller guarantees no other thread reads or writes the environment.
        let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
            .map_err(ActivationError::Environment)?;
        Ok(Self(
            fds.map(|(fd, name)| {
                // SAFETY: the manager passed `fd` open to this process (LISTEN_PID is ours), and
                // nothing else in it owns the fd.
                (unsafe { OwnedFd::from_raw_fd(fd) }, name)
            })
            .collect(),
        ))
    }

    /// Checks the sockets and assigns them to the listeners of `config`.
    ///
    /// # Errors
    /// See [`ActivationError`].
    pub fn listeners(self, config: &Config) -> Result<Listeners, ActivationError> {
        let https = (!config.routes.is_empty()).then_some(config.server.listen);
        let acme = match &config.server.tls {
            Tls::Acme(acme) if https.is_some() => Some(acme.http_listen),
            _ => None,
        };
        self.sort(https, config.metrics.listen, acme)
    }

    /// [`Handed::listeners`] for an HTTPS listener on `https` (`None`: not served), a metrics
    /// listener on `metrics` and an ACME HTTP-01 listener on `acme` (`None`: not configured).
    fn sort(
        self,
        https: Option<SocketAddr>,
        metrics: SocketAddr,
        acme: Option<SocketAddr>,
    ) -> Result<Listeners, ActivationError> {
        let mut listeners = Listeners::default();
        for (fd, name) in self.0 {
            let raw = fd.as_raw_fd();
            let (slot, wanted, key) = match name.as_str() {
                HTTPS => {
                    let Some(configured) = https else {
                        return Err(ActivationError::NoHttpsListener { fd: raw });
                    };
                    (&mut listeners.https, configured, "server.listen")
                }
                METRICS => (&mut listeners.metrics, metrics, "metrics.listen"),
                ACME => {
                    let Some(configured) = acme else {
                        return Err(ActivationError::AcmeNotConfigured { fd: raw });
                    };
                    (&mut listeners.acme, configured, "server.acme.http_listen")
                }
                _ => return Err(ActivationError::UnknownName { fd: raw, name }),
            };
            let name: &'static str = match name.as_str() {
                HTTPS => HTTPS,
                METRICS => METRICS,
                _ => ACME,
            };
            if let Some(first) = slot {
                return Err(ActivationError::Duplicate {
                    name: name.to_owned(),
                    first: first.as_raw_fd(),
                    second: raw,
                });
            }
            let (listener, handed) =
                listening_tcp(fd).map_err(|why| ActivationError::NotListeningTcp {
                    fd: raw,
                    name: name.to_owned(),
                    why,
                })?;
            if handed != wanted {
                return Err(ActivationError::AddressMismatch {
                    name,
                    key,
                    handed,
                    configured: wanted,
                });
            }
            tracing::info!(
                name,
                listen = %handed,
                fd = raw,
                "using the socket handed over (by the service manager, or the previous process \
                 of an in-place upgrade)"
            );
            *slot = Some(listener);
        }
        Ok(listeners)
    }
}

/// `fd` as a listener and its address, if it is a listening TCP socket; else why not.
fn listening_tcp(fd: OwnedFd) -> Result<(TcpListener, SocketAddr), String> {
    let socket = Socket::from(fd);
    let kind = socket.r#type().map_err(|e| format!("not a socket: {e}"))?;
    if kind != Type::STREAM {
        return Err(format!("a {kind:?} socket, not a stream"));
    }
    let local = socket
        .local_addr()
        .map_err(|e| format!("its address cannot be read: {e}"))?;
    let Some(address) = local.as_socket() else {
        return Err("not an IPv4 or IPv6 socket (a Unix socket?)".to_owned());
    };
    if !socket
        .is_listener()
        .map_err(|e| format!("SO_ACCEPTCONN cannot be read: {e}"))?
    {
        return Err(format!("bound to {address} but not listening"));
    }
    Ok((socket.into(), address))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, UdpSocket};

    use socket2::{Domain, Protocol};

    use super::*;

    fn listener() -> (OwnedFd, SocketAddr) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind on loopback");
        let address = listener.local_addr().expect("local address");
        (listener.into(), address)
    }

    fn handed(sockets: Vec<(OwnedFd, &str)>) -> Handed {
        Handed(
            sockets
                .into_iter()
                .map(|(fd, name)| (fd, name.to_owned()))
                .collect(),
        )
    }

    fn other() -> SocketAddr {
        "127.0.0.1:9".parse().expect("address")
    }

    #[test]
    fn https_and_metrics_sockets_on_the_configured_addresses_are_used() {
        let (https_fd, https) = listener();
        let (metrics_fd, metrics) = listener();
        let listeners = handed(vec![(metrics_fd, METRICS), (https_fd, HTTPS)])
            .sort(Some(https), metrics, None)
            .expect("valid sockets");
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        assert_eq!(local(&listeners.https), Some(https));
        assert_eq!(local(&listeners.metrics), Some(metrics));
    }

    #[test]
    fn no_sockets_leaves_both_listeners_to_bind() {
        let listeners = Handed::default()
            .sort(Some(other()), other(), None)
            .expect("nothing handed");
        assert!(listeners.https.is_none() && listeners.metrics.is_none());
    }

    #[test]
    fn a_socket_on_another_address_names_both_and_the_fix() {
        let (fd, handed_at) = listener();
        let err = handed(vec![(fd, HTTPS)])
            .sort(Some(other()), other(), None)
            .expect_err("address differs")
            .to_string();
        assert!(err.contains(&handed_at.to_string()), "{err}");
        assert!(err.contains("server.listen is 127.0.0.1:9"), "{err}");
        assert!(err.contains("ListenStream=127.0.0.1:9"), "{err}");

        let (fd, handed_at) = listener();
        let err = handed(vec![(fd, METRICS)])
            .sort(None, other(), None)
            .expect_err("address differs")
            .to_string();
        assert!(err.contains(&handed_at.to_string()), "{err}");
        assert!(err.contains("metrics.listen is 127.0.0.1:9"), "{err}");
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let (fd, at) = listener();
        let err = handed(vec![(fd, "web")])
            .sort(Some(at), other(), None)
            .expect_err("unknown name");
        assert!(matches!(&err, ActivationError::UnknownName { name, .. } if name == "web"));
        let err = err.to_string();
        assert!(
            err.contains("FileDescriptorName=https") && err.contains("FileDescriptorName=metrics"),
            "{err}"
        );
    }

    #[test]
    fn an_acme_socket_is_refused_as_not_configured() {
        let (fd, at) = listener();
        let err = handed(vec![(fd, ACME)])
            .sort(Some(at), other(), None)
            .expect_err("acme");
        assert!(matches!(err, ActivationError::AcmeNotConfigured { .. }));
        assert!(err.to_string().contains("no ACME listener is configured"));
    }

    #[test]
    fn an_acme_socket_is_used_for_the_configured_http01_listener() {
        let (fd, at) = listener();
        let listeners = handed(vec![(fd, ACME)])
            .sort(Some(other()), other(), Some(at))
            .expect("acme configured");
        let local = listeners.acme.as_ref().and_then(|l| l.local_addr().ok());
        assert_eq!(local, Some(at));
        assert!(listeners.https.is_none() && listeners.metrics.is_none());

        let (fd, handed_at) = listener();
        let err = handed(vec![(fd, ACME)])
            .sort(Some(other()), other(), Some(other()))
            .expect_err("address differs")
            .to_string();
        assert!(err.contains(&handed_at.to_string()), "{err}");
        assert!(
            err.contains("server.acme.http_listen is 127.0.0.1:9"),
            "{err}"
        );
    }

    #[test]
    fn an_https_socket_without_routes_is_refused() {
        let (fd, _) = listener();
        let err = handed(vec![(fd, HTTPS)])
            .sort(None, other(), None)
            .expect_err("no routes");
        assert!(matches!(err, ActivationError::NoHttpsListener { .. }));
        assert!(err.to_string().contains("no [[route]]"), "{err}");
    }

    #[test]
    fn two_sockets_with_one_name_are_refused() {
        let (first, at) = listener();
        let (second, _) = listener();
        let err = handed(vec![(first, HTTPS), (second, HTTPS)])
            .sort(Some(at), other(), None)
            .expect_err("duplicate");
        assert!(matches!(err, ActivationError::Duplicate { .. }), "{err}");
    }

    #[test]
    fn sockets_that_are_not_listening_tcp_are_refused() {
        // Bound but never listen(2)ed, as a wrong fd could be.
        let bound = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        bound
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind");
        let at = bound
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("address");
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("udp");
        let (read, _write) = io::pipe().expect("pipe");
        let cases: Vec<(OwnedFd, &str)> = vec![
            (bound.into(), "not listening"),
            (udp.into(), "SOCK_DGRAM"),
            (read.into(), "not a socket"),
        ];
        for (fd, why) in cases {
            let err = handed(vec![(fd, HTTPS)])
                .sort(Some(at), other(), None)
                .expect_err(why);
            assert!(
                matches!(&err, ActivationError::NotListeningTcp { why: w, .. } if w.contains(why)),
                "{why}: {err}"
            );
            assert!(err.to_string().contains("ListenStream="), "{err}");
        }
    }
}
