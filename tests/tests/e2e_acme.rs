//! End-to-end tests of `server.tls = "acme"` against a real ACME CA: Debian's `pebble`, which
//! validates HTTP-01 for real (its DNS server, `pebble-challtestsrv`, sends every name to the
//! daemon's addresses). Pebble runs in the client namespace on 192.0.2.10, the daemon in the
//! server namespace on 192.0.2.1 and 2001:db8:1::1, its filter protecting 8443 only.
//!
//! The first test also upgrades the daemon in place: the HTTP-01 listener is handed over.
//!
//! Run as root: `cargo build -p hookwall --bins && cargo test -p hookwall-tests --test
//! e2e_acme`.

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use hookwall_tests::{
    config::Route,
    daemon::{Daemon, Successor, hookwall_in, http_get_any, metric_value, output_text, poll_until},
    https::{connect_tls_named, get_keep_alive},
    lab::Lab,
    netns::{ALLOWED_V4, PROTECTED_PORT, SRV_V4, SRV_V6},
    pebble::{HTTP01_PORT, Pebble},
    users::TestUser,
};
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};

const DOMAIN: &str = "hooks.example.com";
const GH: &str = "/hooks/github";
const ISSUED: &[(&str, &str)] = &[("result", "issued")];
const FAILED: &[(&str, &str)] = &[("result", "failed")];
/// Pebble validates and issues in well under a second; the machine may be busy.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(90);

/// An HTTPS lab with one GitHub route whose certificate comes from pebble (in the client
/// namespace, not started yet), cached in `DIR/acme`, the daemon running as `run_as` if given
/// (which then owns the lab's directory). Pebble is dropped before the lab.
fn lab_as(run_as: Option<&TestUser>) -> (Lab, Pebble) {
    let mut lab = Lab::https("hw-acme-");
    let pebble = Pebble::prepare(
        IpAddr::V4(ALLOWED_V4),
        (IpAddr::V4(SRV_V4), IpAddr::V6(SRV_V6)),
    );
    let secret = lab.write_secret("gh", "It's a Secret to Everybody");
    lab.spec.routes = vec![Route::signed(GH, "github", &[secret])];
    // Beside the config, where the daemon's user can read it after the drop.
    let directory_ca = lab.dir.path().join("pebble-ca.pem");
    std::fs::copy(pebble.directory_ca(), &directory_ca).expect("copying pebble's CA");
    if let Some(user) = run_as {
        lab.spec.run_as = Some(user.name.clone());
        user.own(lab.dir.path());
        user.own_secrets(lab.dir.path(), &["gh"]);
    }
    lab.spec.acme = Some(format!(
        "domains = [\"{DOMAIN}\"]\ncontact = \"mailto:ops@example.com\"\ndirectory = \
         \"{}\"\ndirectory_ca = \"{}\"\ncache = \"{}\"\nhttp_listen = \"[::]:{HTTP01_PORT}\"",
        pebble.directory(),
        directory_ca.display(),
        lab.dir.path().join("acme").display(),
    ));
    lab.write_config();
    (lab, pebble)
}

fn lab() -> (Lab, Pebble) {
    lab_as(None)
}

/// A client that trusts only pebble's issuing root.
fn client(root: Vec<u8>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root))
        .expect("pebble's root as a trust anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The serial of the certificate the daemon serves for [`DOMAIN`], verified against `client`'s
/// roots (the handshake fails otherwise).
fn served_serial(lab: &Lab, client: &Arc<ClientConfig>) -> Result<String, String> {
    let client = Arc::clone(client);
    let dst = SocketAddr::new(IpAddr::V4(SRV_V4), PROTECTED_PORT);
    lab.net.cli.run(move || {
        let stream = connect_tls_named(IpAddr::V4(ALLOWED_V4), dst, &client, DOMAIN)
            .map_err(|e| e.to_string())?;
        let leaf = stream
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no peer certificate")?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
        Ok(cert.raw_serial_as_string())
    })
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Waits until `hookwall_acme_orders_total{result="issued"}` is `n`; fails at once on a failed
/// order (with pebble's log).
fn wait_issued(daemon: &Daemon, pebble: &Pebble, n: f64) -> Duration {
    let started = Instant::now();
    loop {
        let metrics = daemon.metrics();
        let issued = metric_value(&metrics, "hookwall_acme_orders_total", ISSUED);
        let failed = metric_value(&metrics, "hookwall_acme_orders_total", FAILED);
        assert!(
            failed == 0.0,
            "an order failed; daemon log:\n{}\n{}",
            daemon.log(),
            pebble.logs()
        );
        if issued >= n {
            assert!(issued == n, "{issued} certificates issued, expected {n}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < ISSUE_TIMEOUT,
            "no certificate issued within {ISSUE_TIMEOUT:?}; daemon log:\n{}\n{}",
            daemon.log(),
            pebble.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_certificate_is_issued_served_kept_across_a_restart_and_renewed_when_forced() {
    let (lab, mut pebble) = lab();
    pebble.start(&lab.net.cli);
    let cache = lab.dir.path().join("acme");

    // First start: nothing cached, so one order, validated by pebble over HTTP-01.
    let mut daemon = lab.start();
    let took = wait_issued(&daemon, &pebble, 1.0);
    eprintln!("first certificate issued {took:?} after the daemon served metrics");
    assert_eq!(pebble.issued(), 1, "{}", pebble.logs());
    assert_eq!(
        pebble.validated(),
        1,
        "validated over HTTP-01: {}",
        pebble.logs()
    );
    let client = client(pebble.issuing_root(&lab.net.cli, IpAddr::V4(ALLOWED_V4)));
    let first = served_serial(&lab, &client).unwrap_or_else(|e| {
        panic!(
            "the issued certificate does not verify: {e}; log:\n{}",
            daemon.log()
        )
    });
    assert!(
        daemon.metric("hookwall_tls_certificate_not_after_timestamp_seconds", &[]) > 0.0,
        "the expiry gauge shows the ACME certificate"
    );
    assert_eq!(
        daemon.get("/readyz").0,
        200,
        "ready once the certificate is served"
    );

    // The cache: the directory private, the account key and the certificate 0600.
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("account.json")), 0o600);
    assert_eq!(mode(&cache.join("certificate.pem")), 0o600);

    // The HTTP-01 listener answers the challenge path only, and nothing else: 404 everywhere
    // (no challenge is in flight now).
    let http01 = SocketAddr::new(IpAddr::V4(SRV_V4), HTTP01_PORT);
    for path in ["/", GH, "/.well-known/acme-challenge/no-such-token"] {
        let (status, _) = lab
            .net
            .cli
            .run(move || http_get_any(http01, path))
            .unwrap_or_else(|e| panic!("GET http://{http01}{path}: {e}"));
        assert_eq!(status, 404, "GET {path} on the HTTP-01 listener");
    }

    // A restart with the certificate cached orders nothing and serves the same certificate
    // from its first connection on.
    daemon.term();
    let daemon = lab.start();
    assert_eq!(
        served_serial(&lab, &client).as_deref(),
        Ok(first.as_str()),
        "after the restart; log:\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("serving the ACME certificate from the cache"),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("ordering a certificate"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.metric("hookwall_acme_orders_total", ISSUED), 0.0);
    assert_eq!(pebble.issued(), 1, "no new order after the restart");

    // A connection opened before the renewal keeps working after it.
    let mut held = {
        let client = Arc::clone(&client);
        let dst = SocketAddr::new(IpAddr::V4(SRV_V4), PROTECTED_PORT);
        lab.net.cli.run(move || {
            connect_tls_named(IpAddr::V4(ALLOWED_V4), dst, &client, DOMAIN).expect("connect")
        })
    };
    let before = get_keep_alive(&mut held, DOMAIN, "/nowhere").expect("GET before the renewal");
    assert_eq!(before.status, 404);

    // Forced renewal: the cached certificate removed, then SIGHUP.
    std::fs::remove_file(cache.join("certificate.pem")).expect("removing the cached certificate");
    let mut daemon = daemon;
    daemon.hup();
    let took = wait_issued(&daemon, &pebble, 1.0);
    eprintln!("forced renewal issued {took:?} after SIGHUP");
    assert_eq!(pebble.issued(), 2, "{}", pebble.logs());
    assert_eq!(pebble.validated(), 2, "validated again: {}", pebble.logs());
    let renewed = served_serial(&lab, &client).expect("the renewed certificate verifies");
    assert_ne!(
        renewed, first,
        "a new certificate is served after the forced renewal"
    );
    assert_eq!(mode(&cache.join("certificate.pem")), 0o600);
    let after = get_keep_alive(&mut held, DOMAIN, "/nowhere")
        .expect("the connection opened before the renewal still answers");
    assert_eq!(after.status, 404);

    // An in-place upgrade hands the HTTP-01 listener over with the others (the successor could
    // not bind its port while the old process holds it): the successor serves the cached
    // certificate, and a renewal it orders is validated through that listener.
    daemon.signal(libc::SIGUSR2);
    let status = daemon
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the old daemon hands over; log:\n{}", daemon.log()));
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    let pid = lab.status()["daemon_pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .expect("the successor records its PID");
    let successor = Successor::new(pid);
    assert_eq!(
        served_serial(&lab, &client).as_deref(),
        Ok(renewed.as_str()),
        "the successor serves the cached certificate; log:\n{}",
        daemon.log()
    );
    std::fs::remove_file(cache.join("certificate.pem")).expect("removing the cached certificate");
    successor.signal(libc::SIGHUP);
    poll_until(
        ISSUE_TIMEOUT,
        || pebble.issued() == 3,
        || {
            format!(
                "the successor orders; log:\n{}\n{}",
                daemon.log(),
                pebble.logs()
            )
        },
    );
    assert_eq!(
        pebble.validated(),
        3,
        "validated through the handed-over HTTP-01 listener: {}",
        pebble.logs()
    );
    poll_until(
        Duration::from_secs(10),
        || served_serial(&lab, &client).is_ok_and(|serial| serial != renewed),
        || {
            format!(
                "the successor serves its new certificate; log:\n{}",
                daemon.log()
            )
        },
    );
    successor.term();
}

#[test]
fn without_a_certificate_handshakes_are_refused_until_the_ca_issues_one() {
    let (lab, mut pebble) = lab();
    // The CA is down: the first order fails, and the daemon serves no certificate at all.
    let daemon = lab.start();
    daemon.wait_metric("hookwall_acme_orders_total", FAILED, ISSUE_TIMEOUT, |v| {
        v >= 1.0
    });
    assert_eq!(daemon.metric("hookwall_acme_orders_total", ISSUED), 0.0);
    let (status, body) = daemon.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("certificate: none yet"), "{body}");
    let refused = {
        let dst = SocketAddr::new(IpAddr::V4(SRV_V4), PROTECTED_PORT);
        let config = lab.client().clone();
        lab.net
            .cli
            .run(move || connect_tls_named(IpAddr::V4(ALLOWED_V4), dst, &config, DOMAIN).err())
    };
    // Refused by the server (an alert), not by the client's verification of some certificate.
    let refused = refused.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        refused.contains("alert"),
        "the handshake was not refused by the server ({refused:?}); log:\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("ordering the ACME certificate failed"),
        "{}",
        daemon.log()
    );
    assert!(!lab.dir.path().join("acme/certificate.pem").exists());

    // The CA comes up; a reload makes the daemon try again at once, without waiting out the
    // backoff.
    pebble.start(&lab.net.cli);
    let mut daemon = daemon;
    daemon.hup();
    daemon.wait_metric("hookwall_acme_orders_total", ISSUED, ISSUE_TIMEOUT, |v| {
        v >= 1.0
    });
    let client = client(pebble.issuing_root(&lab.net.cli, IpAddr::V4(ALLOWED_V4)));
    served_serial(&lab, &client).expect("the certificate issued after the failure verifies");
    assert_eq!(daemon.get("/readyz").0, 200);
    daemon.term();
}

#[test]
fn with_run_as_the_cache_belongs_to_that_user_who_orders_and_stores_the_certificate() {
    let user = TestUser::create();
    let (lab, mut pebble) = lab_as(Some(&user));
    pebble.start(&lab.net.cli);
    let daemon = lab.start();
    // The order runs after the drop to the user: the account and the certificate are written
    // as that user, into the cache the start made and handed over.
    wait_issued(&daemon, &pebble, 1.0);
    let cache = lab.dir.path().join("acme");
    for path in [
        cache.clone(),
        cache.join("account.json"),
        cache.join("certificate.pem"),
    ] {
        let meta = std::fs::metadata(&path).expect("cache entry");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (user.uid, user.gid),
            "{} belongs to the daemon's user",
            path.display()
        );
    }
    let client = client(pebble.issuing_root(&lab.net.cli, IpAddr::V4(ALLOWED_V4)));
    served_serial(&lab, &client).expect("the certificate verifies");
}

#[test]
fn check_refuses_a_filter_that_protects_the_http01_port() {
    let mut lab = Lab::https("hw-acme-check-");
    let secret = lab.write_secret("gh", "It's a Secret to Everybody");
    lab.spec.routes = vec![Route::signed(GH, "github", &[secret])];
    lab.spec.protected_ports = vec![PROTECTED_PORT, HTTP01_PORT];
    lab.spec.acme = Some(format!(
        "domains = [\"{DOMAIN}\"]\nhttp_listen = \"[::]:{HTTP01_PORT}\"\ncache = \"{}\"",
        lab.dir.path().join("acme").display()
    ));
    lab.write_config();
    let config = lab.config.to_str().expect("UTF-8 path");
    let out = hookwall_in(&lab.net.srv, &["check", "-c", config]);
    let text = output_text(&out);
    assert!(!out.status.success(), "check accepted it: {text}");
    assert!(
        text.contains("server.acme.http_listen")
            && text.contains(&format!("port {HTTP01_PORT} of the HTTP-01 listener"))
            && text.contains("validators connect from addresses on no allowlist"),
        "{text}"
    );

    // Without the HTTP-01 port among the protected ones, the same config passes.
    lab.spec.protected_ports = vec![PROTECTED_PORT];
    lab.write_config();
    let out = hookwall_in(&lab.net.srv, &["check", "-c", config]);
    assert!(out.status.success(), "{}", output_text(&out));
}
