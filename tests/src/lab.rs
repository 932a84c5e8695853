//! [`Lab`]: the world of one end-to-end test (namespaces, pins, config, certificate, the
//! application deliveries go to), set up by one constructor per kind of test so that each test
//! file keeps only its own routes and helpers:
//!
//! - [`Lab::filter`]: the filter alone: no routes, so the daemon serves no HTTPS
//!   ([`Lab::with_symlinked_config`] for exact reload counts);
//! - [`Lab::https`]: the receiver, serving a certificate from a CA the test made, which the
//!   lab's client trusts;
//! - [`Lab::delivery`]: the receiver delivering to a [`TestApp`] in the server namespace.
//!
//! A test adjusts [`Lab::spec`] (routes, mode, limits, delivery) and calls
//! [`Lab::write_config`] before [`Lab::start`].

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Output,
    sync::Arc,
};

use hookwall::store::{EventSummary, QueueCounts, Reader};
use rustls::ClientConfig;
use serde_json::Value;

use crate::{
    app::TestApp,
    config::{ConfigSpec, DeliverySpec},
    daemon::{Daemon, PinsGuard, hookwall, hookwall_in, output_text},
    https::{Reply, TestCa, request},
    netns::{ALLOWED_V4_NET, ALLOWED_V6_NET, PROTECTED_PORT, Topology, srv_addr},
};

/// The names on the certificate the daemon serves: its IPv4 and IPv6 address.
pub const SERVER_NAMES: [&str; 2] = ["192.0.2.1", "2001:db8:1::1"];

/// The CA of an HTTPS lab and a client that trusts only it.
struct Tls {
    ca: TestCa,
    client: Arc<ClientConfig>,
}

/// Namespaces with the filter's veth, a pin path, a config and the temporary directory that
/// holds it, the secrets, the store and the logs; for HTTPS labs a CA and a client, for delivery
/// labs the application.
///
/// Fields drop in order: the application stops, the pins are detached, the namespaces removed,
/// the files removed last. A [`Daemon`] is a local declared after the `Lab`, so it is killed
/// before all of them.
pub struct Lab {
    /// The application of a delivery lab.
    app: Option<TestApp>,
    /// Detached and removed on drop.
    pub pins: PinsGuard,
    /// The namespaces and the veth.
    pub net: Topology,
    /// The config the daemon runs with; adjust it, then [`Lab::write_config`].
    pub spec: ConfigSpec,
    /// The CA and client of an HTTPS lab.
    tls: Option<Tls>,
    /// The path the daemon is given (`-c`).
    pub config: PathBuf,
    /// The test's files; removed when dropped, after everything that uses them.
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// The filter lab: enforce mode allowing `cidrs`, no routes (so no HTTPS); the config
    /// written to `DIR/hookwall.toml`.
    ///
    /// # Panics
    /// If the directory, the namespaces or the config cannot be made.
    #[must_use]
    pub fn filter(cidrs: &[&str]) -> Self {
        let lab = Self::unwritten("hw-e2e-", cidrs);
        lab.write_config();
        lab
    }

    /// The HTTPS lab: the client's networks allowed, the receiver on every address at
    /// [`PROTECTED_PORT`] serving a certificate for 192.0.2.1 and 2001:db8:1::1 from a CA the
    /// test made, no routes yet; its directory named `prefix...`.
    ///
    /// # Panics
    /// If the directory, the namespaces, the certificate or the config cannot be made.
    #[must_use]
    pub fn https(prefix: &str) -> Self {
        let mut lab = Self::unwritten(prefix, &[ALLOWED_V4_NET, ALLOWED_V6_NET]);
        lab.spec.server_listen = format!("[::]:{PROTECTED_PORT}");
        let ca = TestCa::new();
        let client = ca.http1_client();
        lab.spec.tls = Some(ca.issue(lab.dir.path(), &SERVER_NAMES));
        lab.tls = Some(Tls { ca, client });
        lab.write_config();
        lab
    }

    /// An [`https`](Lab::https) lab that delivers to a [`TestApp`] on 127.0.0.1:`app_port` in
    /// the server namespace, signing with `secret`; `tune` adjusts the delivery settings. The
    /// application is made but not listening ([`TestApp::up`]).
    ///
    /// # Panics
    /// As [`Lab::https`], or if `secret` is not a Standard Webhooks secret.
    #[must_use]
    pub fn delivery(
        prefix: &str,
        app_port: u16,
        secret: &str,
        tune: impl FnOnce(&mut DeliverySpec),
    ) -> Self {
        let mut lab = Self::https(prefix);
        let app = TestApp::new(&lab.net.srv, app_port, secret);
        let secret_file = lab.write_secret("delivery-secret", secret);
        let mut delivery = DeliverySpec::http(&app.delivery_url(), &secret_file);
        tune(&mut delivery);
        lab.spec.delivery = Some(delivery);
        lab.app = Some(app);
        lab.write_config();
        lab
    }

    fn unwritten(prefix: &str, cidrs: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temporary directory");
        let net = Topology::new();
        let pins = PinsGuard::new();
        let spec = ConfigSpec::new(net.srv_if(), pins.path(), dir.path(), cidrs);
        Self {
            app: None,
            pins,
            net,
            spec,
            tls: None,
            config: dir.path().join("hookwall.toml"),
            dir,
        }
    }

    /// This lab with the daemon given `DIR/etc/hookwall.toml`, a symlink to
    /// `DIR/real/hookwall.toml`, which is the file written. The daemon watches the directory of
    /// the path it was given, so a rewrite of the target raises no file event: the only reloads
    /// are the ones the test signals, and the reload counters can be asserted exactly.
    ///
    /// # Panics
    /// If the directories, the symlink or the config cannot be made.
    #[must_use]
    pub fn with_symlinked_config(mut self) -> Self {
        let d = self.dir.path();
        for sub in ["etc", "real"] {
            std::fs::create_dir(d.join(sub)).expect("config directory");
        }
        let real = d.join("real/hookwall.toml");
        std::fs::write(&real, "").expect("placeholder config");
        let config = d.join("etc/hookwall.toml");
        std::os::unix::fs::symlink(&real, &config).expect("config symlink");
        // The daemon is never given the file written so far.
        std::fs::remove_file(&self.config).expect("removing the unlinked config");
        self.config = config;
        self.write_config();
        self
    }

    /// Writes [`Lab::spec`] to [`Lab::config`] (atomically, so a running daemon never reads
    /// half of it).
    pub fn write_config(&self) {
        self.spec.write(&self.config);
    }

    /// Writes the config with these allowed prefixes instead of the spec's, which stays as it
    /// is.
    pub fn write_cidrs(&self, cidrs: &[&str]) {
        let mut spec = self.spec.clone();
        spec.cidrs = cidrs.iter().map(|&c| c.to_owned()).collect();
        spec.write(&self.config);
    }

    /// Writes `secret` to the file `name` in the test's directory; returns its path.
    ///
    /// # Panics
    /// If the write fails.
    pub fn write_secret(&self, name: &str, secret: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, secret)
            .unwrap_or_else(|e| panic!("writing the secret file {}: {e}", path.display()));
        // As an operator keeps one: hookwall warns about a secret file others can read.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("making {} private: {e}", path.display()));
        path
    }

    /// Starts `hookwall run` in the server namespace with the config and waits until it serves
    /// `/metrics`.
    #[must_use]
    pub fn start(&self) -> Daemon {
        Daemon::start(
            &self.net.srv,
            &self.config,
            self.spec.metrics_listen,
            self.dir.path(),
        )
    }

    /// Spawns `hookwall run -c config` in the server namespace and returns at once (for configs
    /// the daemon must refuse).
    #[must_use]
    pub fn spawn(&self, config: &Path) -> Daemon {
        Daemon::spawn(
            &self.net.srv,
            config,
            self.spec.metrics_listen,
            self.dir.path(),
        )
    }

    /// [`Lab::spawn`] with the lab's config, `tune` adjusting the command first (see
    /// [`Daemon::spawn_with`]).
    #[must_use]
    pub fn spawn_with(&self, tune: impl FnOnce(&mut std::process::Command)) -> Daemon {
        Daemon::spawn_with(
            &self.net.srv,
            &self.config,
            self.spec.metrics_listen,
            self.dir.path(),
            tune,
        )
    }

    /// `hookwall status --json --pin-path PINS`, parsed.
    ///
    /// # Panics
    /// If it fails or does not print JSON.
    #[must_use]
    pub fn status(&self) -> Value {
        let out = hookwall(&["status", "--json", "--pin-path", self.pins.as_str()]);
        assert!(
            out.status.success(),
            "hookwall status failed: {}",
            output_text(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", output_text(&out)))
    }

    fn tls(&self) -> &Tls {
        self.tls
            .as_ref()
            .expect("an HTTPS lab (Lab::https or Lab::delivery)")
    }

    /// The CA the daemon's certificate comes from.
    ///
    /// # Panics
    /// If this is not an HTTPS lab.
    #[must_use]
    pub fn ca(&self) -> &TestCa {
        &self.tls().ca
    }

    /// A client trusting only [`Lab::ca`] (TLS 1.3 and 1.2, ALPN http/1.1).
    ///
    /// # Panics
    /// If this is not an HTTPS lab.
    #[must_use]
    pub fn client(&self) -> &Arc<ClientConfig> {
        &self.tls().client
    }

    /// The application deliveries go to.
    ///
    /// # Panics
    /// If this is not a delivery lab.
    #[must_use]
    pub fn app(&self) -> &TestApp {
        self.app.as_ref().expect("a delivery lab (Lab::delivery)")
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
        let client = Arc::clone(self.client());
        // The closure runs on a thread in the client namespace, so it owns what it uses.
        let (method, path, body) = (method.to_owned(), path.to_owned(), body.to_vec());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self.net.cli.run(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            request(src, dst, &client, &method, &path, &headers, &body)
                .unwrap_or_else(|e| panic!("{method} {path} from {src}: {e}"))
        })
    }

    /// [`Lab::send`] with `POST`.
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

    /// The store's events by delivery state.
    ///
    /// # Panics
    /// If the store cannot be opened or counted.
    #[must_use]
    pub fn counts(&self) -> QueueCounts {
        self.store().counts().expect("counting the queue")
    }

    /// The store's row for the event `id`.
    ///
    /// # Panics
    /// If there is none.
    #[must_use]
    pub fn row(&self, id: &str) -> EventSummary {
        self.store()
            .list(None, 100_000, None)
            .expect("listing the store")
            .into_iter()
            .find(|e| e.event_id == id)
            .unwrap_or_else(|| panic!("no event {id} in the store"))
    }

    /// `hookwall queue -c CONFIG ARGS` (in the server namespace, like an operator on that host).
    #[must_use]
    pub fn queue(&self, args: &[&str]) -> Output {
        let config = self.config.to_str().expect("UTF-8 path");
        let mut all = vec!["queue", "-c", config];
        all.extend_from_slice(args);
        hookwall_in(&self.net.srv, &all)
    }

    /// `queue ARGS`, which must succeed; its standard output.
    ///
    /// # Panics
    /// If it fails.
    pub fn queue_ok(&self, args: &[&str]) -> String {
        let out = self.queue(args);
        assert!(
            out.status.success(),
            "hookwall queue {}: {}",
            args.join(" "),
            output_text(&out)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// `queue list --json ARGS`, parsed.
    ///
    /// # Panics
    /// If it fails or a line is not JSON.
    #[must_use]
    pub fn queue_list(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["list", "--json", "--limit", "100000"];
        all.extend_from_slice(args);
        self.queue_ok(&all)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }
}

/// Asserts that `reply` has `status`; the message names the case (`what`) and has the daemon's
/// log.
///
/// # Panics
/// If the status differs.
pub fn assert_reply(reply: &Reply, status: u16, what: &str, daemon: &Daemon) {
    assert_eq!(
        reply.status,
        status,
        "{what}: got {} {:?}; log:\n{}",
        reply.status,
        reply.text(),
        daemon.log()
    );
}

/// `hookwall_http_requests_total{route, outcome}` in a fresh scrape.
///
/// # Panics
/// If the scrape fails or the series is missing.
#[must_use]
pub fn requests(daemon: &Daemon, route: &str, outcome: &str) -> f64 {
    daemon.metric(
        "hookwall_http_requests_total",
        &[("route", route), ("outcome", outcome)],
    )
}
