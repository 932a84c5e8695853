//! [`HttpsLab`]: the world of one HTTPS end-to-end test, shared by the receiver, limits,
//! delivery and NATS tests so that each of them keeps only its own routes and helpers.

use std::{net::IpAddr, path::PathBuf, sync::Arc};

use hookwall::store::Reader;
use rustls::ClientConfig;

use crate::{
    daemon::{ConfigSpec, Daemon, PinsGuard, write_atomic},
    https::{Reply, TestCa, render_config, request},
    netns::{ALLOWED_V4_NET, ALLOWED_V6_NET, Lab, PROTECTED_PORT, srv_addr},
};

/// The names on the certificate the daemon serves: its IPv4 and IPv6 address.
pub const SERVER_NAMES: [&str; 2] = ["192.0.2.1", "2001:db8:1::1"];

/// A lab (server and client namespaces, the filter on the veth), a config allowing the
/// client's networks with the receiver on every address at [`PROTECTED_PORT`], a test CA whose
/// certificate for 192.0.2.1 and 2001:db8:1::1 the daemon serves, and a temporary directory for
/// the config, the secrets and the store.
///
/// Fields drop in order: the pins are detached, the namespaces removed, the files removed last.
/// A [`Daemon`] is a local declared after the `HttpsLab`, so it is killed before all of them.
pub struct HttpsLab {
    /// Held for its drop: detaches and removes the pins.
    _pins: PinsGuard,
    /// The namespaces and the veth.
    pub lab: Lab,
    /// The config the daemon runs with; adjust it before [`HttpsLab::write_config`].
    pub spec: ConfigSpec,
    /// The CA the daemon's certificate comes from.
    pub ca: TestCa,
    /// A client trusting only [`HttpsLab::ca`] (TLS 1.3 and 1.2, ALPN http/1.1).
    pub client: Arc<ClientConfig>,
    /// The daemon's certificate chain file.
    cert: PathBuf,
    /// The daemon's private key file.
    key: PathBuf,
    /// Where the config is written.
    pub config: PathBuf,
    /// The test's files; removed when dropped, after everything that uses them.
    pub dir: tempfile::TempDir,
}

impl HttpsLab {
    /// Builds the lab, the config (not yet written) and the certificate, in a temporary
    /// directory named `prefix...`.
    ///
    /// # Panics
    /// If the directory, the namespaces, the pins or the certificate cannot be made.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temporary directory");
        let lab = Lab::new();
        let pins = PinsGuard::new();
        let mut spec = ConfigSpec::new(
            lab.srv_if(),
            pins.path(),
            dir.path(),
            &[ALLOWED_V4_NET, ALLOWED_V6_NET],
        );
        spec.server_listen = format!("[::]:{PROTECTED_PORT}");
        let ca = TestCa::new();
        let client = ca.http1_client();
        let (cert, key) = ca.issue(dir.path(), &SERVER_NAMES);
        Self {
            config: dir.path().join("hookwall.toml"),
            _pins: pins,
            lab,
            spec,
            ca,
            client,
            cert,
            key,
            dir,
        }
    }

    /// Writes `secret` to the file `name` in the test's directory; returns its path.
    ///
    /// # Panics
    /// If the write fails.
    pub fn write_secret(&self, name: &str, secret: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, secret)
            .unwrap_or_else(|e| panic!("writing the secret file {}: {e}", path.display()));
        path
    }

    /// Writes the config (atomically, so a running daemon never reads half of it): the spec,
    /// the certificate, `trusted_proxies` and `routes` (TOML appended as given).
    pub fn write_config(&self, trusted_proxies: &[&str], routes: &str) {
        write_atomic(
            &self.config,
            &render_config(&self.spec, &self.cert, &self.key, trusted_proxies, routes),
        );
    }

    /// Starts `hookwall run` in the server namespace with the config and waits until it serves
    /// `/metrics`.
    #[must_use]
    pub fn start(&self) -> Daemon {
        Daemon::start(
            &self.lab.srv,
            &self.config,
            self.spec.metrics_listen,
            self.dir.path(),
        )
    }

    /// One request from `src` in the client namespace to the receiver.
    ///
    /// # Panics
    /// If the exchange fails (an HTTP error status is an answer, not a failure).
    pub fn send(
        &self,
        src: IpAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let dst = srv_addr(src, PROTECTED_PORT);
        let client = Arc::clone(&self.client);
        // The closure runs on a thread in the client namespace, so it owns what it uses.
        let (method, path, body) = (method.to_owned(), path.to_owned(), body.to_vec());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self.lab.cli.run(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            request(src, dst, &client, &method, &path, &headers, &body)
                .unwrap_or_else(|e| panic!("{method} {path} from {src}: {e}"))
        })
    }

    /// [`HttpsLab::send`] with `POST`.
    pub fn post(&self, src: IpAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.send(src, "POST", path, headers, body)
    }

    /// The daemon's store, opened read-only (as `hookwall queue` does, beside a running
    /// daemon).
    ///
    /// # Panics
    /// If the store cannot be opened.
    #[must_use]
    pub fn store(&self) -> Reader {
        Reader::open(&self.spec.store_path).expect("opening the store read-only")
    }

    /// How many events the store holds.
    ///
    /// # Panics
    /// If the store cannot be opened or counted.
    #[must_use]
    pub fn stored(&self) -> u64 {
        self.store().count().expect("count")
    }
}
