//! End-to-end tests of the published address lists (`allow.sources`) with a real `hookwall run`
//! daemon, a real publisher (plain HTTP on loopback in the daemon's namespace, serving the
//! documents under `tests/fixtures/sources/`) and real TCP traffic through the XDP filter.
//!
//! Each test builds its own namespaces, pins, publisher and daemon (see `e2e_filter.rs`) and
//! removes them when it ends, also when it fails. The allowlist holds nothing but the fetched
//! list, so what connects is exactly what the publisher's document allows.
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_sources`.

use std::{net::IpAddr, time::Duration};

use hookwall_tests::{
    daemon::{Daemon, hookwall_in, output_text, poll_until},
    lab::Lab,
    netns::{ALLOWED, ClientLoop, EchoServer, PROTECTED_PORT, REFUSED},
    publisher::Publisher,
    users::TestUser,
};

const GITHUB_META: &str = include_str!("../fixtures/sources/github-meta.json");
const GITHUB_META_ADDED: &str = include_str!("../fixtures/sources/github-meta-added.json");
const STRIPE: &str = include_str!("../fixtures/sources/stripe-webhooks.json");
const STRIPE_SHRUNK: &str = include_str!("../fixtures/sources/stripe-webhooks-shrunk.json");
const STRIPE_BROKEN: &str = include_str!("../fixtures/sources/stripe-webhooks-broken.json");

/// The publisher's port, on loopback in the server namespace.
const PUBLISHER_PORT: u16 = 8181;
/// See `e2e_filter.rs`: within this only the first SYN is sent.
const REFUSED_TIMEOUT: Duration = Duration::from_millis(900);
const LOOP_TIMEOUT: Duration = Duration::from_millis(900);
/// How long a change at the publisher may take to reach the kernel: a 1 s refresh, a reload.
const PROPAGATION: Duration = Duration::from_secs(15);
const FETCHES: &str = "hookwall_allow_source_fetches_total";
const PACKETS: &str = "hookwall_xdp_packets_total";
const DROPPED: [(&str, &str); 2] = [("verdict", "drop"), ("reason", "not_allowed")];

/// A filter lab whose allowlist is the one source at `path` of `publisher`, in `format`,
/// refreshed every second, with `extra` further `[allow]` lines.
fn lab_with_source(format: &str, path: &str, extra: &[&str]) -> (Lab, Publisher) {
    let mut lab = Lab::filter(&[]);
    let publisher = Publisher::start(&lab.net.srv, PUBLISHER_PORT);
    lab.spec.allow_extra = vec![format!(
        "sources = [{{ url = {:?}, format = {format:?}, refresh = \"1s\" }}]",
        publisher.url(path)
    )];
    lab.spec
        .allow_extra
        .extend(extra.iter().map(|&l| l.to_owned()));
    lab.write_config();
    (lab, publisher)
}

/// Waits until every one of `srcs` connects (`connects`) or is dropped (`!connects`).
fn wait_for(lab: &Lab, daemon: &Daemon, srcs: &[IpAddr], connects: bool, why: &str) {
    for &src in srcs {
        poll_until(
            PROPAGATION,
            || {
                lab.net
                    .echo(src, PROTECTED_PORT, Duration::from_millis(300))
                    .is_ok()
                    == connects
            },
            || {
                format!(
                    "{src} still {} {PROPAGATION:?} after {why}; log:\n{}",
                    if connects { "dropped" } else { "connects" },
                    daemon.log()
                )
            },
        );
    }
}

#[test]
fn a_refresh_adds_and_removes_prefixes_without_a_gap() {
    let (lab, publisher) = lab_with_source("github-meta", "/meta", &[]);
    publisher.serve("/meta", GITHUB_META);
    let _server = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    let daemon = lab.start();
    let source = publisher.url("/meta");
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);

    // Sources allowed before and after keep connecting through both refreshes.
    let clients = ClientLoop::start(&lab.net.cli, &ALLOWED, PROTECTED_PORT, LOOP_TIMEOUT);
    clients.wait_for_more(4, Duration::from_secs(5));

    publisher.serve("/meta", GITHUB_META_ADDED);
    wait_for(&lab, &daemon, &REFUSED, true, "the publisher added them");
    clients.wait_for_more(2, Duration::from_secs(5));
    // The gauge follows the kernel maps once the reload has written them all.
    daemon.wait_metric(
        "hookwall_allowlist_prefixes",
        &[("family", "ipv4")],
        PROPAGATION,
        |v| v == 2.0,
    );

    // Back to the first list: half of it removed, which allow.max_shrink (0.5) lets through.
    publisher.serve("/meta", GITHUB_META);
    wait_for(&lab, &daemon, &REFUSED, false, "the publisher removed them");
    // Dropped in the kernel, not refused by a socket: the XDP drop counter counts them.
    let drops_before = daemon.metric(PACKETS, &DROPPED);
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);
    let drops_after = daemon.metric(PACKETS, &DROPPED);
    assert!(
        drops_after >= drops_before + 2.0,
        "the removed sources' SYNs were not dropped by the filter: {drops_before} -> \
         {drops_after}"
    );
    clients.wait_for_more(2, Duration::from_secs(5));
    let report = clients.stop();
    assert_eq!(
        report.failed, 0,
        "connections from sources allowed throughout failed during the refreshes: {:?}",
        report.errors
    );
    assert_eq!(
        daemon.metric("hookwall_allowlist_prefixes", &[("family", "ipv4")]),
        1.0
    );
    assert_eq!(
        daemon.metric("hookwall_allowlist_prefixes", &[("family", "ipv6")]),
        1.0
    );
    let ok = daemon.metric(FETCHES, &[("source", &source), ("result", "ok")]);
    assert!(ok >= 3.0, "{ok} good fetches");
    for result in ["fetch_failed", "invalid", "shrink_refused"] {
        assert_eq!(
            daemon.metric(FETCHES, &[("source", &source), ("result", result)]),
            0.0,
            "{result}"
        );
    }
    let age = daemon.metric("hookwall_allow_source_age_seconds", &[("source", &source)]);
    assert!(
        (0.0..30.0).contains(&age),
        "a list fetched every second is {age} s old"
    );
    eprintln!(
        "{} connections from kept sources through two refreshes, 0 failed",
        report.ok
    );
}

#[test]
fn bad_and_shrunken_lists_keep_the_old_one_until_accepted_and_a_restart_uses_the_cache() {
    let (lab, publisher) =
        lab_with_source("stripe-json", "/ips_webhooks.json", &["max_shrink = 0.25"]);
    publisher.serve("/ips_webhooks.json", STRIPE);
    let _server = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    let mut daemon = lab.start();
    let source = publisher.url("/ips_webhooks.json");
    let every: Vec<IpAddr> = ALLOWED.iter().chain(&REFUSED).copied().collect();
    lab.net.assert_all_connect(&every, PROTECTED_PORT);
    let count = |daemon: &Daemon, result: &str| {
        daemon.metric(FETCHES, &[("source", &source), ("result", result)])
    };

    // A document cut off: refused whole, the list in force stays.
    publisher.serve("/ips_webhooks.json", STRIPE_BROKEN);
    daemon.wait_metric(
        FETCHES,
        &[("source", &source), ("result", "invalid")],
        PROPAGATION,
        |v| v >= 2.0,
    );
    lab.net.assert_all_connect(&every, PROTECTED_PORT);

    // The publisher down: the same.
    publisher.set("/ips_webhooks.json", 503, "unavailable");
    daemon.wait_metric(
        FETCHES,
        &[("source", &source), ("result", "fetch_failed")],
        PROPAGATION,
        |v| v >= 2.0,
    );
    lab.net.assert_all_connect(&every, PROTECTED_PORT);

    // Half of the list gone, more than max_shrink = 0.25: refused until accepted.
    publisher.serve("/ips_webhooks.json", STRIPE_SHRUNK);
    daemon.wait_metric(
        FETCHES,
        &[("source", &source), ("result", "shrink_refused")],
        PROPAGATION,
        |v| v >= 2.0,
    );
    lab.net.assert_all_connect(&every, PROTECTED_PORT);
    let log = daemon.log();
    assert!(
        log.contains("shrank from 4 to 2 prefixes") && log.contains("hookwall allow accept"),
        "the refusal must say what to run; log:\n{log}"
    );

    let config = lab.config.to_str().expect("UTF-8 path");
    let accepted = hookwall_in(&lab.net.srv, &["allow", "accept", "-c", config]);
    let text = output_text(&accepted);
    assert!(accepted.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "accepted: {source} may shrink from 4 to 2 prefixes"
        )) && text.contains(&format!("told the daemon (PID {})", daemon.pid())),
        "{text}"
    );
    wait_for(&lab, &daemon, &REFUSED, false, "the shrink was accepted");
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);
    let ok_before_restart = count(&daemon, "ok");
    assert!(ok_before_restart >= 2.0, "{ok_before_restart}");
    // The acceptance was used up: nothing is left to accept.
    let again = hookwall_in(&lab.net.srv, &["allow", "accept", "-c", config]);
    assert_eq!(again.status.code(), Some(1), "{}", output_text(&again));

    // A restart with the publisher gone starts from the last good copy, the shrunken list.
    let status = daemon.term();
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    drop(daemon);
    drop(publisher);
    let daemon = lab.start();
    let log = daemon.log();
    assert!(
        log.contains("using the cached copy of the list"),
        "log:\n{log}"
    );
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);
    // It keeps trying the publisher, and keeps the cached list while it cannot.
    daemon.wait_metric(
        FETCHES,
        &[("source", &source), ("result", "fetch_failed")],
        PROPAGATION,
        |v| v >= 2.0,
    );
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);
    assert_eq!(
        daemon.metric("hookwall_allowlist_prefixes", &[("family", "ipv4")]),
        1.0
    );
    let cache = lab.dir.path().join("allow-sources");
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    let list = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "list"))
        .unwrap_or_else(|| panic!("no cached list in {files:?}"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(list).expect("cached list").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", list.display());
}

#[test]
fn after_dropping_to_run_as_the_daemon_keeps_writing_the_cache_the_start_made() {
    let user = TestUser::create();
    let (mut lab, publisher) = lab_with_source("github-meta", "/meta", &[]);
    publisher.serve("/meta", GITHUB_META);
    lab.spec.run_as = Some(user.name.clone());
    lab.write_config();
    user.own(lab.dir.path());
    let _server = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    // No cached copy yet: the start fetches the list and keeps it, as root.
    let daemon = lab.start();
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);

    // A refresh after the drop writes the copy as the daemon's user.
    publisher.serve("/meta", GITHUB_META_ADDED);
    wait_for(&lab, &daemon, &REFUSED, true, "the publisher added them");
    let cache = lab.dir.path().join("allow-sources");
    let list = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
        .map(|e| e.expect("directory entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "list"))
        .expect("a cached list");
    poll_until(
        PROPAGATION,
        || std::fs::read_to_string(&list).is_ok_and(|t| t.contains("198.51.100.0/24")),
        || {
            format!(
                "{} never got the new list; log:\n{}",
                list.display(),
                daemon.log()
            )
        },
    );
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&list).expect("list"));
    assert_eq!(owner, user.uid, "{}", list.display());
    let log = daemon.log();
    assert!(
        !log.contains("keeping the copy of the list failed"),
        "log:\n{log}"
    );
}
