//! A real ACME CA for the certificate tests: Debian's `pebble`, with `pebble-challtestsrv` as
//! its DNS server, both in a test namespace.
//!
//! [`Pebble::prepare`] writes its config; [`Pebble::start`] serves the directory on `IP:14000` and the management API (its issuing
//! roots) on `IP:15000`, over HTTPS with a certificate from a [`TestCa`] made here (the
//! package ships none); it validates HTTP-01 on port [`HTTP01_PORT`] of the address its DNS
//! server gives for every name (the hookwall under test). Real validation: the environment has
//! `PEBBLE_VA_NOSLEEP=1`, `PEBBLE_AUTHZREUSE=0` and no `PEBBLE_VA_ALWAYS_VALID`. Both processes are stopped by PID on
//! drop; the temp dir (config, certificates, logs) goes with it.

use std::{
    fs::{self, File},
    io::Read as _,
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::ClientConfig;

use crate::{
    daemon::NsEntry,
    https::{TestCa, request},
    netns::NetNs,
    stop_child,
};

/// The port pebble connects to for HTTP-01 (its `httpPort`); hookwall's `http_listen` port.
pub const HTTP01_PORT: u16 = 5002;
/// The ACME directory's port.
const DIRECTORY_PORT: u16 = 14000;
/// The management API's port (`/roots/0`).
const MANAGEMENT_PORT: u16 = 15000;
/// The DNS server's port.
const DNS_PORT: u16 = 8053;
/// How long each process may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// `pebble` and `pebble-challtestsrv`, running in a namespace.
pub struct Pebble {
    pebble: Option<Child>,
    dns: Option<Child>,
    ip: IpAddr,
    /// What its DNS server answers A and AAAA queries with.
    targets: (IpAddr, IpAddr),
    /// A client trusting only the CA of pebble's own HTTPS certificate (`ca.pem` in the temp
    /// dir).
    client: Arc<ClientConfig>,
    /// Config, certificates, logs.
    dir: tempfile::TempDir,
}

impl Pebble {
    /// [`Pebble::prepare`], then [`Pebble::start`].
    #[must_use]
    pub fn start_in(ns: &NetNs, ip: IpAddr, targets: (IpAddr, IpAddr)) -> Self {
        let mut pebble = Self::prepare(ip, targets);
        pebble.start(ns);
        pebble
    }

    /// Writes the config and pebble's HTTPS certificate for `ip`; starts nothing (a test can
    /// give the directory to hookwall while the CA is still down). `targets` are the IPv4 and
    /// IPv6 addresses its DNS server answers every query with.
    ///
    /// # Panics
    /// If the temp dir or a file cannot be made.
    #[must_use]
    pub fn prepare(ip: IpAddr, targets: (IpAddr, IpAddr)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hw-pebble-")
            .tempdir()
            .expect("temporary directory for pebble");
        let ca = TestCa::new();
        fs::write(dir.path().join("ca.pem"), ca.pem()).expect("writing pebble's CA");
        let (cert, key) = ca.issue(dir.path(), &[&ip.to_string()]);
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": SocketAddr::new(ip, DIRECTORY_PORT).to_string(),
                "managementListenAddress": SocketAddr::new(ip, MANAGEMENT_PORT).to_string(),
                "certificate": cert,
                "privateKey": key,
                "httpPort": HTTP01_PORT,
                "tlsPort": 5001,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = dir.path().join("pebble-config.json");
        fs::write(&config_path, config.to_string()).expect("writing pebble's config");
        let client = ca.http1_client();
        Self {
            pebble: None,
            dns: None,
            ip,
            targets,
            client,
            dir,
        }
    }

    /// Starts the DNS server and pebble in `ns` and waits until both accept connections.
    ///
    /// # Panics
    /// If a process cannot be spawned (install them: `apt-get install pebble`), exits, or is
    /// not ready in time.
    pub fn start(&mut self, ns: &NetNs) {
        assert!(self.pebble.is_none(), "pebble is running already");
        let ip = self.ip;
        let config_path = self.dir.path().join("pebble-config.json");
        let dns = SocketAddr::new(ip, DNS_PORT).to_string();
        let mut challtestsrv = Command::new("pebble-challtestsrv");
        challtestsrv
            .args(["-defaultIPv4", &self.targets.0.to_string()])
            .args(["-defaultIPv6", &self.targets.1.to_string()])
            .args(["-dns01", &dns])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &SocketAddr::new(ip, 8055).to_string()]);
        self.dns = Some(self.spawn(ns, challtestsrv, "challtestsrv.log"));
        let mut pebble = Command::new("pebble");
        pebble
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order is validated anew, never from an earlier authorization.
            .env("PEBBLE_AUTHZREUSE", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID");
        self.pebble = Some(self.spawn(ns, pebble, "pebble.log"));
        self.wait_listening(ns, SocketAddr::new(ip, 8055));
        self.wait_listening(ns, SocketAddr::new(ip, DIRECTORY_PORT));
        self.wait_listening(ns, SocketAddr::new(ip, MANAGEMENT_PORT));
    }

    fn spawn(&self, ns: &NetNs, mut cmd: Command, log: &str) -> Child {
        let out = File::create(self.dir.path().join(log)).expect("log file");
        let err = out.try_clone().expect("dup of the log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let entry = NsEntry::new(ns);
        entry.apply(&mut cmd);
        cmd.spawn().unwrap_or_else(|e| {
            panic!("spawning {cmd:?} (install it: `apt-get install pebble`): {e}")
        })
    }

    fn wait_listening(&mut self, ns: &NetNs, addr: SocketAddr) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = [&mut self.pebble, &mut self.dns]
                .into_iter()
                .flatten()
                .find_map(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "a pebble process exited ({status}) while starting:\n{}",
                    self.logs()
                );
            }
            let connected =
                ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(300)));
            if connected.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing accepts on {addr} within {READY_TIMEOUT:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ACME directory URL.
    #[must_use]
    pub fn directory(&self) -> String {
        format!("https://{}/dir", SocketAddr::new(self.ip, DIRECTORY_PORT))
    }

    /// The PEM file of the CA that signed pebble's own HTTPS certificate (hookwall's
    /// `server.acme.directory_ca`).
    #[must_use]
    pub fn directory_ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root pebble issues under (`/roots/0` of its management API), fetched from `src` in
    /// `ns` over HTTPS verified against [`Pebble::directory_ca`]; DER.
    ///
    /// # Panics
    /// If the request fails or the answer is not one PEM certificate.
    #[must_use]
    pub fn issuing_root(&self, ns: &NetNs, src: IpAddr) -> Vec<u8> {
        let dst = SocketAddr::new(self.ip, MANAGEMENT_PORT);
        let client = Arc::clone(&self.client);
        let reply = ns.run(move || request(src, dst, &client, "GET", "/roots/0", &[], &[]));
        let reply = reply.unwrap_or_else(|e| panic!("GET https://{dst}/roots/0: {e}"));
        assert_eq!(reply.status, 200, "GET /roots/0: {}", reply.text());
        let pem = reply.text();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap_or_else(|e| panic!("/roots/0 is not PEM ({e}): {pem}"));
        der.contents
    }

    /// How many certificates pebble has issued so far (its log's "Issued certificate" lines).
    #[must_use]
    pub fn issued(&self) -> usize {
        self.log("pebble.log")
            .lines()
            .filter(|l| l.contains("Issued certificate serial"))
            .count()
    }

    /// How many authorizations pebble has validated by a completed challenge (HTTP-01 here).
    #[must_use]
    pub fn validated(&self) -> usize {
        self.log("pebble.log")
            .lines()
            .filter(|l| l.contains("set VALID by completed challenge"))
            .count()
    }

    fn log(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        let mut text = String::new();
        match File::open(&path).and_then(|mut f| f.read_to_string(&mut text)) {
            Ok(_) => text,
            Err(e) => format!("(cannot read {}: {e})", path.display()),
        }
    }

    /// Both logs, for a failure's message.
    #[must_use]
    pub fn logs(&self) -> String {
        format!(
            "---- pebble.log ----\n{}---- challtestsrv.log ----\n{}---- end ----",
            self.log("pebble.log"),
            self.log("challtestsrv.log")
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for child in [self.pebble.take(), self.dns.take()].into_iter().flatten() {
            stop_child(child, "pebble", Duration::from_secs(5));
        }
    }
}
