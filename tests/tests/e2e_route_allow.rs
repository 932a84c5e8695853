//! End-to-end: a route's own `allow`. A real `hookwall run` in enforce mode whose allowlist
//! lets both client addresses through the XDP filter; a GitHub route accepts only one of them,
//! over real HTTPS, and a reload swaps which.
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_route_allow`.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hookwall_tests::{
    config::Route,
    daemon::{Daemon, hookwall_in, output_text},
    https::{github_signature, stripe_signature},
    lab::{Lab, assert_reply, requests},
    netns::{ALLOWED_V4, REFUSED_V4, REFUSED_V4_NET},
};

const GH: &str = "/hooks/github";
const GH_SECRET: &str = "gh-route-allow-e2e-secret-Zq8vX2pL9m";
const STRIPE: &str = "/hooks/stripe";
const STRIPE_SECRET: &str = "whsec_test_routeAllowE2eSecret7TzY1n";
const JSON: (&str, &str) = ("Content-Type", "application/json");

/// The client's two IPv4 sources, both on the allowlist here: the GitHub route accepts the
/// first only (until the reload).
const INSIDE: IpAddr = IpAddr::V4(ALLOWED_V4);
const OUTSIDE: IpAddr = IpAddr::V4(REFUSED_V4);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A correctly signed GitHub delivery from `src` whose body is made distinct by `n` (GitHub's
/// event id is the body's digest); its status.
fn github(lab: &Lab, daemon: &Daemon, src: IpAddr, n: u32, status: u16, what: &str) {
    let body = format!(r#"{{"zen":"delivery {n}"}}"#);
    let signature = github_signature(GH_SECRET.as_bytes(), body.as_bytes());
    let headers = [
        JSON,
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let reply = lab.post(src, GH, &headers, body.as_bytes());
    assert_reply(&reply, status, what, daemon);
}

fn route_source_refusals(daemon: &Daemon) -> f64 {
    daemon.metric(
        "hookwall_http_refusals_total",
        &[("route", GH), ("reason", "route_source")],
    )
}

#[test]
fn a_route_allow_refuses_a_source_the_filter_passes_and_follows_a_reload() {
    let mut lab = Lab::https("hw-rallow-");
    lab.spec.mode = "enforce".to_owned();
    lab.spec.cidrs.push(REFUSED_V4_NET.to_owned());
    let gh = lab.write_secret("gh", GH_SECRET);
    let stripe = lab.write_secret("stripe", STRIPE_SECRET);
    let github_route =
        |allow: &[&str]| Route::signed(GH, "github", std::slice::from_ref(&gh)).allow(allow);
    lab.spec.routes = vec![
        // 203.0.113.7 is not on the allowlist: check warns that the filter drops it.
        github_route(&["192.0.2.10", "203.0.113.7"]),
        Route::signed(STRIPE, "stripe", &[stripe]),
    ];
    lab.write_config();

    let config = lab.config.to_str().expect("UTF-8 path");
    let out = hookwall_in(&lab.net.srv, &["check", "-c", config]);
    assert_eq!(out.status.code(), Some(0), "check: {}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("allow 192.0.2.10, 203.0.113.7 (2 IPv4 and 0 IPv6 prefixes after merging)"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // (The test CA's key file is readable by others, which check also warns about.)
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: route"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("route \"/hooks/github\" allows 203.0.113.7/32")
            && warnings[0].contains("is not on the allowlist"),
        "{stderr}"
    );

    let mut daemon = lab.start();
    assert_eq!(route_source_refusals(&daemon), 0.0, "registered at zero");
    github(
        &lab,
        &daemon,
        OUTSIDE,
        1,
        403,
        "a valid delivery from outside the route's allow",
    );
    github(
        &lab,
        &daemon,
        INSIDE,
        2,
        200,
        "a valid delivery from inside it",
    );
    // A route without allow takes any source the filter passes.
    let body = br#"{"id":"evt_route_allow_1","type":"charge.succeeded"}"#;
    let signature = stripe_signature(&[STRIPE_SECRET], now(), body);
    let reply = lab.post(
        OUTSIDE,
        STRIPE,
        &[JSON, ("Stripe-Signature", &signature)],
        body,
    );
    assert_reply(&reply, 200, "Stripe from the other source", &daemon);

    assert_eq!(requests(&daemon, GH, "forbidden_peer"), 1.0);
    assert_eq!(requests(&daemon, GH, "accepted"), 1.0);
    assert_eq!(requests(&daemon, STRIPE, "accepted"), 1.0);
    assert_eq!(route_source_refusals(&daemon), 1.0);
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains(r#""client":"198.51.100.20""#)
                && l.contains(r#""reason":"route_source""#)
                && l.contains(r#""status":403"#)),
        "{log}"
    );
    assert!(!log.contains(GH_SECRET), "no secret in the log");

    // The route's list is part of the route: a reload swaps it.
    lab.spec.routes[0] = github_route(&["198.51.100.0/24"]);
    lab.write_config();
    daemon.hup();
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "success")],
        Duration::from_secs(5),
        |v| v >= 1.0,
    );
    github(
        &lab,
        &daemon,
        OUTSIDE,
        3,
        200,
        "after the reload, the other source",
    );
    github(
        &lab,
        &daemon,
        INSIDE,
        4,
        403,
        "after the reload, the first source",
    );
    assert_eq!(route_source_refusals(&daemon), 2.0);
    assert_eq!(requests(&daemon, GH, "accepted"), 2.0);
    drop(daemon);
    assert_eq!(lab.stored(), 3);
}
