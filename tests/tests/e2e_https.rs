//! End-to-end tests of the HTTPS receiver: a real `hookwall run` in the server namespace serving
//! a certificate from a CA the test made, and a real rustls client in the client namespace,
//! over the veth (through the XDP filter).
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_https`.

use std::{
    io::Write as _,
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hookwall_tests::{
    config::Route,
    daemon::poll_until,
    https::{
        TestCa, github_signature, handshake, post_declared, standard_webhooks_signature,
        stripe_signature,
    },
    lab::{Lab, SERVER_NAMES, assert_reply, requests},
    netns::{ALLOWED_V4, ALLOWED_V6, PROTECTED_PORT, REFUSED_V4, srv_addr},
};
use rustls::ClientConfig;

const MPESA: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Zq8vX2pL9mW4rT7yK1sB6nD0fH5jG";
const SW: &str = "/hooks/sw";
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GH: &str = "/hooks/github";
const GH_SECRET: &str = "It's a Secret to Everybody";
const STRIPE: &str = "/hooks/stripe";
const STRIPE_SECRET: &str = "whsec_test_5bKx8QeR2mWc7TzY1nP4dL9v";
const STRIPE_OLD_SECRET: &str = "whsec_test_previousSecretBeforeRotation";
const JSON: (&str, &str) = ("Content-Type", "application/json");

const C2B_CONFIRMATION: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));
const STK_SUCCESS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/stk_success.json"
));
const ACCEPTED: &str = r#"{"ResultCode":0,"ResultDesc":"Accepted"}"#;

/// An HTTPS lab in `mode` with this file's five routes (the client is the socket peer).
fn lab_in(mode: &str) -> Lab {
    let mut lab = Lab::https("hw-https-");
    lab.spec.mode = mode.to_owned();
    let token = lab.write_secret("token", TOKEN);
    let secret = |name, value| lab.write_secret(name, value);
    lab.spec.routes = vec![
        Route::mpesa(MPESA, &token),
        Route::mpesa("/mpesa/stk/result", &token),
        Route::signed(SW, "standard-webhooks", &[secret("sw", SW_SECRET)]),
        Route::signed(GH, "github", &[secret("gh", GH_SECRET)]),
        Route::signed(
            STRIPE,
            "stripe",
            &[
                secret("stripe", STRIPE_SECRET),
                secret("stripe-old", STRIPE_OLD_SECRET),
            ],
        ),
    ];
    lab.write_config();
    lab
}

fn v4() -> IpAddr {
    IpAddr::V4(ALLOWED_V4)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn mpesa_callbacks_are_stored_once_and_answered_as_daraja_expects() {
    let lab = lab_in("enforce");
    let mut daemon = lab.start();
    let path = format!("{MPESA}/{TOKEN}");

    let r = lab.post(v4(), &path, &[JSON], C2B_CONFIRMATION);
    assert_reply(&r, 200, "C2B confirmation", &daemon);
    assert_eq!(r.text(), ACCEPTED);
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Daraja retries: the same TransID again gets the same answer and is not stored twice.
    let r = lab.post(IpAddr::V6(ALLOWED_V6), &path, &[JSON], C2B_CONFIRMATION);
    assert_reply(&r, 200, "replayed C2B confirmation (IPv6)", &daemon);
    assert_eq!(r.text(), ACCEPTED);
    let r = lab.post(
        v4(),
        &format!("/mpesa/stk/result/{TOKEN}"),
        &[JSON],
        STK_SUCCESS,
    );
    assert_reply(&r, 200, "STK result", &daemon);

    // Refusals: wrong and missing token look like unknown paths.
    let r = lab.post(
        v4(),
        &format!("{MPESA}/wrong-token"),
        &[JSON],
        C2B_CONFIRMATION,
    );
    assert_reply(&r, 404, "wrong token", &daemon);
    let r = lab.post(v4(), MPESA, &[JSON], C2B_CONFIRMATION);
    assert_reply(&r, 404, "no token", &daemon);
    let r = lab.post(v4(), "/nowhere", &[JSON], b"{}");
    assert_reply(&r, 404, "unknown path", &daemon);
    assert!(
        !r.text().contains("mpesa"),
        "404 gives no hint: {}",
        r.text()
    );
    let r = lab.send(v4(), "GET", &path, &[], b"");
    assert_reply(&r, 405, "GET", &daemon);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = lab.post(
        v4(),
        &path,
        &[("Content-Type", "text/plain")],
        C2B_CONFIRMATION,
    );
    assert_reply(&r, 415, "text/plain", &daemon);
    let r = {
        let (src, dst, client, path) = (
            v4(),
            srv_addr(v4(), PROTECTED_PORT),
            Arc::clone(lab.client()),
            path.clone(),
        );
        lab.net.cli.run(move || {
            post_declared(src, dst, &client, &path, &[JSON], 1024 * 1024 + 1)
                .unwrap_or_else(|e| panic!("oversized POST: {e}"))
        })
    };
    assert_reply(&r, 413, "oversized body", &daemon);
    let r = lab.post(v4(), &path, &[JSON], br#"{"hello":"world"}"#);
    assert_reply(&r, 400, "not a Daraja body", &daemon);

    assert_eq!(requests(&daemon, MPESA, "accepted"), 1.0);
    assert_eq!(requests(&daemon, MPESA, "duplicate"), 1.0);
    // A wrong or missing token is counted like an unknown path (under the route it probed);
    // only the body that is not Daraja's is a refusal.
    assert_eq!(requests(&daemon, MPESA, "refused"), 1.0);
    assert_eq!(requests(&daemon, MPESA, "not_found"), 2.0);
    assert_eq!(requests(&daemon, "none", "not_found"), 1.0);
    assert_eq!(requests(&daemon, MPESA, "method_not_allowed"), 1.0);
    assert_eq!(requests(&daemon, MPESA, "unsupported_media_type"), 1.0);
    assert_eq!(requests(&daemon, MPESA, "too_large"), 1.0);
    assert!(
        daemon
            .metrics()
            .contains("hookwall_http_request_duration_seconds_bucket"),
        "duration histogram exported"
    );

    let status = daemon.term();
    assert!(
        status.success(),
        "graceful stop: {status}; log:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        !log.contains(TOKEN),
        "the token never appears in the log:\n{log}"
    );
    assert!(
        log.contains(r#""outcome":"duplicate""#) && log.contains(r#""event_id":"RKTQDM7W6S""#),
        "audit lines in the log:\n{log}"
    );
    assert!(
        log.contains(&format!(
            r#""route":"{MPESA}","outcome":"not_found","status":404,"reason":"bad_token""#
        )) && log.contains(r#""outcome":"not_found","status":404,"reason":"missing_token""#),
        "a wrong token is audited as not_found, its reason kept:\n{log}"
    );
    assert!(
        log.contains(r#""route":"none","outcome":"not_found""#) && !log.contains(r#""route":null"#),
        "an unknown path is audited under route none, as it is counted:\n{log}"
    );
    let store = lab.store();
    assert_eq!(store.count().expect("count"), 2, "C2B once, STK once");
    let event = store
        .find(MPESA, "RKTQDM7W6S")
        .expect("find")
        .expect("the C2B confirmation is stored");
    assert_eq!(event.body, C2B_CONFIRMATION);
}

#[test]
fn signed_routes_accept_fresh_signatures_and_refuse_forgeries() {
    let lab = lab_in("enforce");
    let daemon = lab.start();
    let body = br#"{"test": 2432232314}"#;
    let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    let ts = now().to_string();
    let sig = standard_webhooks_signature(SW_SECRET, id, now(), body);
    let headers = [
        JSON,
        ("webhook-id", id),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let r = lab.post(v4(), SW, &headers, body);
    assert_reply(&r, 200, "fresh Standard Webhooks signature", &daemon);
    let r = lab.post(v4(), SW, &headers, body);
    assert_reply(&r, 200, "replayed webhook-id", &daemon);
    let r = lab.post(v4(), SW, &headers, br#"{"test": 2432232315}"#);
    assert_reply(&r, 401, "tampered body", &daemon);
    // The published vector is genuine but five years old: outside the tolerance.
    let old = [
        JSON,
        ("webhook-id", id),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];
    let r = lab.post(v4(), SW, &old, body);
    assert_reply(&r, 401, "published vector, stale timestamp", &daemon);

    let gh_body = b"Hello, World!";
    let gh_sig = github_signature(GH_SECRET.as_bytes(), gh_body);
    assert_eq!(
        gh_sig,
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    let gh_headers = [
        JSON,
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-Hub-Signature-256", gh_sig.as_str()),
    ];
    let r = lab.post(IpAddr::V6(ALLOWED_V6), GH, &gh_headers, gh_body);
    assert_reply(&r, 200, "GitHub published vector", &daemon);
    let r = lab.post(v4(), GH, &gh_headers, b"Hello, World?");
    assert_reply(&r, 401, "GitHub tampered body", &daemon);
    // The same signed body under a fresh GUID: X-GitHub-Delivery is not signed, so it is not
    // what recognises the event, and the replay is a duplicate, not a new event.
    let mut replay = gh_headers;
    replay[2] = ("X-GitHub-Delivery", "11111111-2222-3333-4444-555555555555");
    let r = lab.post(v4(), GH, &replay, gh_body);
    assert_reply(&r, 200, "GitHub replay under a fresh GUID", &daemon);
    assert_eq!(requests(&daemon, GH, "duplicate"), 1.0);

    assert_eq!(requests(&daemon, SW, "accepted"), 1.0);
    assert_eq!(requests(&daemon, SW, "duplicate"), 1.0);
    assert_eq!(requests(&daemon, SW, "refused"), 2.0);
    assert_eq!(requests(&daemon, GH, "accepted"), 1.0);
    let log = daemon.log();
    assert!(log.contains(r#""reason":"timestamp_too_old""#), "{log}");
    assert!(log.contains(r#""reason":"bad_signature""#), "{log}");
    for secret in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", GH_SECRET, &sig] {
        assert!(!log.contains(secret), "no secret or signature in the log");
    }
    drop(daemon);
    assert_eq!(lab.store().count().expect("count"), 2);
}

#[test]
fn refused_peer_gets_403_on_mpesa_routes_and_forwarded_headers_change_nothing() {
    // Monitor mode: the kernel lets the refused source through, so the userspace check is what
    // answers.
    let lab = lab_in("monitor");
    let daemon = lab.start();
    let path = format!("{MPESA}/{TOKEN}");
    let refused = IpAddr::V4(REFUSED_V4);
    let r = lab.post(refused, &path, &[JSON], C2B_CONFIRMATION);
    assert_reply(&r, 403, "refused peer", &daemon);
    // An untrusted peer claiming an allowed address is judged by its socket address.
    let spoof = [JSON, ("X-Forwarded-For", "192.0.2.10")];
    let r = lab.post(refused, &path, &spoof, C2B_CONFIRMATION);
    assert_reply(
        &r,
        403,
        "refused peer with spoofed X-Forwarded-For",
        &daemon,
    );
    // And an allowed peer claiming a refused address is still allowed.
    let spoof = [JSON, ("X-Forwarded-For", "198.51.100.20")];
    let r = lab.post(v4(), &path, &spoof, C2B_CONFIRMATION);
    assert_reply(&r, 200, "allowed peer with a forwarded header", &daemon);
    assert_eq!(requests(&daemon, MPESA, "forbidden_peer"), 2.0);
    let log = daemon.log();
    assert!(
        log.contains(r#""client":"198.51.100.20","event_id":null"#)
            || log.contains(r#""client":"198.51.100.20""#),
        "audit shows the socket address as the client:\n{log}"
    );
    drop(daemon);
    assert_eq!(lab.store().count().expect("count"), 1);
}

#[test]
fn stripe_signatures_built_by_the_test_are_checked_with_rotation_and_tolerance() {
    let lab = lab_in("enforce");
    let daemon = lab.start();
    let body = br#"{"id":"evt_1QxT3e2eZvKYlo2C","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_3Qx","amount":2000}}}"#;
    let post = |signature: &str, body: &[u8]| {
        lab.post(v4(), STRIPE, &[JSON, ("Stripe-Signature", signature)], body)
    };
    let r = post(&stripe_signature(&[STRIPE_SECRET], now(), body), body);
    assert_reply(&r, 200, "fresh Stripe signature", &daemon);
    let r = post(&stripe_signature(&[STRIPE_SECRET], now(), body), body);
    assert_reply(&r, 200, "the same event again (Stripe retries)", &daemon);
    // Rotation: a signature under the previous secret, and a header with both.
    let rotated = br#"{"id":"evt_rotated","object":"event","type":"charge.refunded"}"#;
    let r = post(
        &stripe_signature(&[STRIPE_OLD_SECRET], now(), rotated),
        rotated,
    );
    assert_reply(&r, 200, "signature under the previous secret", &daemon);
    let both = br#"{"id":"evt_both","object":"event"}"#;
    let r = post(
        &stripe_signature(&["whsec_wrong", STRIPE_SECRET], now(), both),
        both,
    );
    assert_reply(&r, 200, "a wrong and a right v1 in one header", &daemon);
    let refusals: [(String, &[u8], u16, &str); 7] = [
        (
            stripe_signature(&[STRIPE_SECRET], now(), body),
            br#"{"id":"evt_1QxT3e2eZvKYlo2C","object":"event","amount":1}"#,
            401,
            "tampered body",
        ),
        (
            stripe_signature(&["whsec_not_the_secret"], now(), body),
            body,
            401,
            "wrong secret",
        ),
        (
            stripe_signature(&[STRIPE_SECRET], now() - 301, body),
            body,
            401,
            "timestamp older than the tolerance",
        ),
        (
            // A minute past the tolerance: the refusals are signed up front and sent one by one,
            // and a busy machine may take seconds to get to this one, which brings a timestamp
            // just past the tolerance back inside it. The boundary itself is a unit test's.
            stripe_signature(&[STRIPE_SECRET], now() + 360, body),
            body,
            401,
            "timestamp from the future",
        ),
        (format!("t={}", now()), body, 401, "no v1 signature"),
        (
            "v1=abc,t=notanumber".to_owned(),
            body,
            401,
            "malformed header",
        ),
        (
            stripe_signature(&[STRIPE_SECRET], now(), b"{}"),
            b"{}",
            400,
            "genuine signature but no event id in the body",
        ),
    ];
    for (signature, body, status, what) in &refusals {
        let r = post(signature, body);
        assert_reply(&r, *status, what, &daemon);
    }
    let r = lab.post(v4(), STRIPE, &[JSON], body);
    assert_reply(&r, 401, "no Stripe-Signature header", &daemon);

    assert_eq!(requests(&daemon, STRIPE, "accepted"), 3.0);
    assert_eq!(requests(&daemon, STRIPE, "duplicate"), 1.0);
    assert_eq!(requests(&daemon, STRIPE, "refused"), 8.0);
    let log = daemon.log();
    for reason in ["bad_signature", "timestamp_too_old", "timestamp_in_future"] {
        assert!(
            log.contains(&format!(r#""reason":"{reason}""#)),
            "{reason}:\n{log}"
        );
    }
    for secret in [STRIPE_SECRET, STRIPE_OLD_SECRET] {
        assert!(!log.contains(secret), "no secret in the log");
    }
    drop(daemon);
    let store = lab.store();
    let event = store
        .find(STRIPE, "evt_1QxT3e2eZvKYlo2C")
        .expect("read")
        .expect("the event is stored under Stripe's event id");
    assert_eq!(event.body, body);
    assert_eq!(store.count().expect("count"), 3);
}

#[test]
fn forwarding_headers_from_a_trusted_proxy_name_the_client() {
    // The proxy is 198.51.100.20: trusted, but not itself on the allowlist. Monitor mode lets
    // its packets through the kernel, so the userspace client check is what answers. The
    // source is the `Forwarded` header; a reload switches it to `X-Forwarded-For`.
    let mut lab = lab_in("monitor");
    let source = |header: &str| {
        Some(format!(
            r#"{{ header = "{header}", trusted_proxies = ["{REFUSED_V4}/32"] }}"#
        ))
    };
    lab.spec.client_address = source("forwarded");
    lab.write_config();
    let mut daemon = lab.start();
    let proxy = IpAddr::V4(REFUSED_V4);
    let path = format!("{MPESA}/{TOKEN}");
    let allowed = ALLOWED_V4.to_string();
    // (forwarding headers, expected status, what the case shows)
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case<'_>; 6] = [
        (&[], 403, "the proxy itself is not an allowed client"),
        (
            &[("X-Forwarded-For", allowed.as_str())],
            403,
            "X-Forwarded-For is not the configured source",
        ),
        (
            &[("Forwarded", "for=192.0.2.10;proto=https")],
            200,
            "RFC 7239 Forwarded from the trusted proxy",
        ),
        (
            &[("Forwarded", "for=203.0.113.9")],
            403,
            "Forwarded naming a refused client",
        ),
        (
            &[("Forwarded", "for=192.0.2.10, for=203.0.113.9")],
            403,
            "the hop the proxy saw is the right-most",
        ),
        (
            &[
                ("X-Forwarded-For", allowed.as_str()),
                ("Forwarded", "for=203.0.113.9"),
            ],
            403,
            "a second header the caller added is not read",
        ),
    ];
    for (n, (forwarding, status, what)) in cases.iter().enumerate() {
        let body = String::from_utf8_lossy(C2B_CONFIRMATION)
            .replace("RKTQDM7W6S", &format!("RKTQDM7W{n:02}"));
        let mut headers = vec![JSON];
        headers.extend_from_slice(forwarding);
        let r = lab.post(proxy, &path, &headers, body.as_bytes());
        assert_reply(&r, *status, what, &daemon);
    }
    // An untrusted peer's Forwarded header changes nothing.
    let r = lab.post(
        v4(),
        &path,
        &[JSON, ("Forwarded", "for=203.0.113.9")],
        C2B_CONFIRMATION,
    );
    assert_reply(
        &r,
        200,
        "Forwarded from an untrusted (allowed) peer",
        &daemon,
    );
    // The audit line keeps both: the socket peer (the proxy) and the client it vouched for.
    let log = daemon.log();
    assert!(log.contains(r#""peer":"[::ffff:198.51.100.20]:"#), "{log}");
    assert!(log.contains(r#""client":"192.0.2.10""#), "{log}");
    assert!(
        log.contains(r#""reason":"client_address_missing""#),
        "{log}"
    );
    assert_eq!(requests(&daemon, MPESA, "forbidden_peer"), 5.0);

    // The same proxy, now configured as setting X-Forwarded-For (applied by a reload).
    lab.spec.client_address = source("x-forwarded-for");
    lab.write_config();
    daemon.hup();
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "success")],
        Duration::from_secs(5),
        |v| v >= 1.0,
    );
    for (n, (forwarding, status, what)) in [
        (
            [("X-Forwarded-For", allowed.as_str())],
            200,
            "X-Forwarded-For from the trusted proxy",
        ),
        (
            [("Forwarded", "for=192.0.2.10")],
            403,
            "Forwarded is not the configured source any more",
        ),
    ]
    .iter()
    .enumerate()
    {
        let body = String::from_utf8_lossy(C2B_CONFIRMATION)
            .replace("RKTQDM7W6S", &format!("RKTQDM7X{n:02}"));
        let mut headers = vec![JSON];
        headers.extend_from_slice(forwarding);
        let r = lab.post(proxy, &path, &headers, body.as_bytes());
        assert_reply(&r, *status, what, &daemon);
    }
    assert_eq!(requests(&daemon, MPESA, "forbidden_peer"), 6.0);
}

#[test]
fn tls_versions_alpn_and_certificate_reload_on_replacement_and_on_sighup() {
    let lab = lab_in("enforce");
    let mut daemon = lab.start();
    let dst = srv_addr(v4(), PROTECTED_PORT);
    let src = v4();
    let check = |config: Arc<ClientConfig>| lab.net.cli.run(move || handshake(src, dst, &config));
    let (alpn, version) = check(
        lab.ca()
            .client(&[b"h2", b"http/1.1"], &[&rustls::version::TLS13]),
    )
    .expect("TLS 1.3 handshake");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
    let (alpn, version) = check(lab.ca().client(&[b"http/1.1"], &[&rustls::version::TLS12]))
        .expect("TLS 1.2 handshake");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));

    // A certificate from another CA renamed over the files, as certbot does: the file watcher
    // swaps it in, no signal needed.
    let second = TestCa::new();
    second.issue(lab.dir.path(), &SERVER_NAMES);
    let second_client = second.http1_client();
    poll_until(
        Duration::from_secs(10),
        || check(Arc::clone(&second_client)).is_ok(),
        || {
            format!(
                "the replaced certificate is not served; log:\n{}",
                daemon.log()
            )
        },
    );
    assert!(
        check(Arc::clone(lab.client())).is_err(),
        "the old certificate is no longer served"
    );

    // A third one written into the files in place and kept open: no edit has ended (no close,
    // no rename), so the watcher must not reload a half-written pair; SIGHUP loads it.
    let third = TestCa::new();
    let (cert, key) = third.issue_pem(&SERVER_NAMES);
    let mut held = Vec::new();
    for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
        let mut file = std::fs::File::options()
            .write(true)
            .truncate(true)
            .open(lab.dir.path().join(name))
            .expect("opening a PEM file");
        file.write_all(text.as_bytes()).expect("writing a PEM file");
        held.push(file);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        check(Arc::clone(&second_client)).is_ok(),
        "a write still in progress was loaded without a signal"
    );
    daemon.hup();
    let third_client = third.http1_client();
    poll_until(
        Duration::from_secs(10),
        || check(Arc::clone(&third_client)).is_ok(),
        || {
            format!(
                "SIGHUP did not load the new certificate; log:\n{}",
                daemon.log()
            )
        },
    );
    drop(held);
    let status = daemon.term();
    assert!(status.success(), "graceful stop: {status}");
}

#[test]
fn an_acknowledged_event_survives_sigkill() {
    let lab = lab_in("enforce");
    let mut daemon = lab.start();
    let path = format!("{MPESA}/{TOKEN}");
    let r = lab.post(v4(), &path, &[JSON], C2B_CONFIRMATION);
    assert_reply(&r, 200, "C2B confirmation", &daemon);
    daemon.kill9();
    let event = lab
        .store()
        .find(MPESA, "RKTQDM7W6S")
        .expect("reading the store after SIGKILL")
        .expect("the acknowledged event is in the store");
    assert_eq!(event.body, C2B_CONFIRMATION);

    let daemon = lab.start();
    let r = lab.post(v4(), &path, &[JSON], C2B_CONFIRMATION);
    assert_reply(&r, 200, "the retry after the restart", &daemon);
    assert_eq!(requests(&daemon, MPESA, "duplicate"), 1.0);
    drop(daemon);
    assert_eq!(lab.store().count().expect("count"), 1);
}

/// `hookwall check` warns, like ssh, about a secret file or TLS key that group or others can
/// read, naming the file and the fix; the config stays valid (exit 0).
#[test]
fn check_warns_about_a_secret_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let lab = lab_in("enforce");
    let (_, key) = lab.spec.tls.clone().expect("an HTTPS lab has a key");
    let private: Vec<std::path::PathBuf> = ["token", "sw", "gh", "stripe", "stripe-old"]
        .iter()
        .map(|name| lab.dir.path().join(name))
        .chain([key])
        .collect();
    let chmod = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    };
    for path in &private {
        chmod(path, 0o600);
    }
    let gh = lab.dir.path().join("gh");
    chmod(&gh, 0o644);
    let config = lab.config.to_str().expect("UTF-8 path");
    let check = || {
        let out = hookwall_tests::daemon::hookwall_in(&lab.net.srv, &["check", "-c", config]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "check: {}",
            hookwall_tests::daemon::output_text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = check();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(&format!("`chmod 600 {}`", gh.display()))
            && warnings[0].contains("mode 0644"),
        "{stderr}"
    );

    chmod(&gh, 0o600);
    let stderr = check();
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn mpesa_tokens_all_pass_for_rotation_and_a_weak_token_stops_the_start() {
    const NEW: &str = "3f9c1a7e5b2d4c6f8a0b1c2d3e4f5a6b";
    let mut lab = Lab::https("hw-tokens-");
    let old = lab.write_secret("token-old", TOKEN);
    let new = lab.write_secret("token-new", NEW);
    lab.spec.routes = vec![Route::mpesa_tokens(MPESA, &[new, old])];
    lab.write_config();
    let daemon = lab.start();
    for (token, body) in [(NEW, C2B_CONFIRMATION), (TOKEN, STK_SUCCESS)] {
        let r = lab.post(v4(), &format!("{MPESA}/{token}"), &[JSON], body);
        assert_reply(&r, 200, "a listed token", &daemon);
    }
    let r = lab.post(v4(), &format!("{MPESA}/{NEW}x"), &[JSON], C2B_CONFIRMATION);
    assert_reply(&r, 404, "a token not listed", &daemon);
    assert_eq!(requests(&daemon, MPESA, "accepted"), 2.0);
    drop(daemon);

    // hookwall check reads no secret; the daemon does, and refuses a short token at start.
    let weak = "t0k3n-for-tests";
    let short = lab.write_secret("token-short", weak);
    lab.spec.routes = vec![Route::mpesa(MPESA, &short)];
    lab.write_config();
    let mut run = lab.spawn(&lab.config);
    let status = run
        .wait_exit(Duration::from_secs(10))
        .expect("hookwall run exits with a weak token");
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{status}; log:\n{log}");
    assert!(log.contains("too short to be unguessable"), "log:\n{log}");
    assert!(log.contains("openssl rand -hex 16"), "log:\n{log}");
    assert!(!log.contains(weak), "the token is not in the log:\n{log}");
}
