//! End-to-end tests of the filter with a real `hookwall run` daemon and real TCP traffic.
//!
//! Each test builds its own pair of network namespaces (`srv`, where the daemon runs and the XDP
//! program attaches to the veth, in native mode as `attach = "auto"` gives on a veth; and `cli`,
//! with an allowed and a refused source address of each family), its own pin path under
//! /sys/fs/bpf and its own daemon, and removes them all when it ends, also when it fails. Tests
//! can run in parallel.
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_filter`.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use hookwall_tests::{
    config::write_atomic,
    daemon::{hookwall, hookwall_in, output_text, poll_until},
    lab::Lab,
    netns::{
        ALLOWED, ALLOWED_V4_NET, ALLOWED_V6_NET, ClientLoop, EchoServer, PROTECTED_PORT, REFUSED,
        REFUSED_V4, REFUSED_V4_NET, REFUSED_V6_NET, UNPROTECTED_PORT,
    },
};
use serde_json::Value;

/// How long a connection from a refused source is given before it counts as dropped. SYNs are
/// retransmitted after 1 s, so within this only the first SYN is ever sent.
const REFUSED_TIMEOUT: Duration = Duration::from_millis(900);
/// Connect timeout of the client loops: a dropped SYN (1 s retransmission) fails the attempt.
const LOOP_TIMEOUT: Duration = Duration::from_millis(900);
const PACKETS: &str = "hookwall_xdp_packets_total";

fn labels<'a>(verdict: &'a str, reason: &'a str) -> [(&'static str, &'a str); 2] {
    [("verdict", verdict), ("reason", reason)]
}

/// The packets of one verdict counter in `hookwall status --json`.
fn status_packets(status: &Value, verdict: &str, reason: &str) -> u64 {
    status["counters"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["verdict"] == verdict && c["reason"] == reason)
        })
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {verdict}/{reason} in status: {status:#}"))
}

#[test]
fn allowed_sources_pass_refused_ones_are_dropped_on_ipv4_and_ipv6() {
    let lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]);
    let _protected = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    let _unprotected = EchoServer::start(&lab.net.srv, UNPROTECTED_PORT);
    // Without the filter every source gets through: what is dropped later is the filter's doing.
    lab.net.assert_all_connect(&REFUSED, PROTECTED_PORT);

    let daemon = lab.start();
    let xdp = lab.net.srv.xdp_on(lab.net.srv_if());
    assert!(
        xdp.is_some(),
        "no XDP program on {} after start",
        lab.net.srv_if()
    );

    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);
    // Other ports are not judged: the refused sources reach them.
    lab.net.assert_all_connect(&REFUSED, UNPROTECTED_PORT);

    let text = daemon.metrics();
    let value = |verdict, reason| {
        hookwall_tests::daemon::metric_value(&text, PACKETS, &labels(verdict, reason))
    };
    // At least the first SYN of each refused family.
    assert!(value("drop", "not_allowed") >= 2.0, "drops:\n{text}");
    // Two handshakes, requests and closes of each allowed family at least.
    assert!(value("pass", "allowed") >= 8.0, "passes:\n{text}");
    assert!(value("pass", "unprotected") > 0.0, "unprotected:\n{text}");
    assert_eq!(
        value("monitor", "not_allowed"),
        0.0,
        "nothing is monitored in enforce mode"
    );
    let family = |f| {
        hookwall_tests::daemon::metric_value(&text, "hookwall_allowlist_prefixes", &[("family", f)])
    };
    assert_eq!((family("ipv4"), family("ipv6")), (1.0, 1.0));

    let status = lab.status();
    assert_eq!(status["loaded"], true, "{status:#}");
    assert_eq!(status["mode"], "enforce", "{status:#}");
    assert_eq!(
        status["links"],
        serde_json::json!([{ "interface": lab.net.srv_if(), "mode": "native", "alive": true }]),
        "attach = \"auto\" on a veth must give native XDP: {status:#}"
    );
    assert_eq!(status["daemon_running"], true, "{status:#}");
    assert_eq!(status["daemon_pid"], daemon.pid(), "{status:#}");
}

#[test]
fn fifty_reloads_never_drop_a_kept_prefix() {
    const RELOADS: u32 = 50;
    let lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]).with_symlinked_config();
    let _server = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    let mut daemon = lab.start();
    let drops_before = daemon.metric(PACKETS, &labels("drop", "not_allowed"));
    assert_eq!(drops_before, 0.0, "no refused traffic was sent");

    let clients = ClientLoop::start(&lab.net.cli, &ALLOWED, PROTECTED_PORT, LOOP_TIMEOUT);
    clients.wait_for_more(4, Duration::from_secs(5));
    let started = Instant::now();
    for n in 1..=RELOADS {
        // Alternately add and remove other prefixes of each family next to the kept ones. The
        // IPv6 ones share the kept /64's index block (the same top 24 bits), so a prune that
        // cleared that block's bit would cut the kept prefix off; 203.0.113.0/24 and its /25
        // flip another block between full and partial.
        let cidrs: &[&str] = match n % 4 {
            1 => &[
                ALLOWED_V4_NET,
                ALLOWED_V6_NET,
                "203.0.113.0/24",
                "2001:db8:ffff::/48",
            ],
            2 => &[ALLOWED_V4_NET, ALLOWED_V6_NET],
            3 => &[
                ALLOWED_V4_NET,
                "203.0.113.128/25",
                ALLOWED_V6_NET,
                "2001:db8::/48",
            ],
            _ => &[ALLOWED_V6_NET, ALLOWED_V4_NET],
        };
        lab.write_cidrs(cidrs);
        daemon.hup();
        daemon.wait_metric(
            "hookwall_config_reloads_total",
            &[("result", "success")],
            Duration::from_secs(5),
            |v| v >= f64::from(n),
        );
        // Every reload is interleaved with live traffic.
        clients.wait_for_more(1, Duration::from_secs(5));
    }
    let reload_time = started.elapsed();
    clients.wait_for_more(4, Duration::from_secs(5));
    let report = clients.stop();

    let text = daemon.metrics();
    let m =
        |name, labels: &[(&str, &str)]| hookwall_tests::daemon::metric_value(&text, name, labels);
    assert_eq!(
        m("hookwall_config_reloads_total", &[("result", "success")]),
        f64::from(RELOADS)
    );
    assert_eq!(
        m("hookwall_config_reloads_total", &[("result", "failure")]),
        0.0
    );
    assert_eq!(
        report.failed, 0,
        "connections from kept prefixes failed during reloads: {:?}",
        report.errors
    );
    // The strongest check: not one packet of the allowed sources was dropped, not even a
    // retransmitted one that the client would never notice.
    assert_eq!(
        m(PACKETS, &labels("drop", "not_allowed")),
        0.0,
        "packets from kept prefixes were dropped during reloads ({} connections ok)",
        report.ok
    );
    assert!(
        report.ok >= u64::from(RELOADS),
        "only {} connections",
        report.ok
    );
    // The last config (n = 50: 50 % 4 == 2) has just the kept prefixes.
    assert_eq!(m("hookwall_allowlist_prefixes", &[("family", "ipv4")]), 1.0);
    assert_eq!(m("hookwall_allowlist_prefixes", &[("family", "ipv6")]), 1.0);
    eprintln!(
        "{RELOADS} reloads in {:.2} s; {} connections from kept prefixes, 0 failed, 0 packets dropped",
        reload_time.as_secs_f64(),
        report.ok
    );
    let status = daemon.term();
    assert!(
        status.success(),
        "hookwall run after SIGTERM: {status}; log:\n{}",
        daemon.log()
    );
}

#[test]
fn editing_the_file_adds_and_removes_a_prefix_without_a_signal() {
    let lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]);
    let _server = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    let daemon = lab.start();
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);

    lab.write_cidrs(&[
        ALLOWED_V4_NET,
        ALLOWED_V6_NET,
        REFUSED_V4_NET,
        REFUSED_V6_NET,
    ]);
    let edited = Instant::now();
    for src in REFUSED {
        poll_until(
            Duration::from_secs(5),
            || {
                lab.net
                    .echo(src, PROTECTED_PORT, Duration::from_millis(300))
                    .is_ok()
            },
            || {
                format!(
                    "{src} still refused 5 s after it was added to the file; log:\n{}",
                    daemon.log()
                )
            },
        );
    }
    let took_add = edited.elapsed();
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "success")],
        Duration::from_secs(5),
        |v| v >= 1.0,
    );
    assert_eq!(daemon.reloads("success"), 1.0, "one edit, one reload");

    lab.write_cidrs(&[ALLOWED_V4_NET, ALLOWED_V6_NET]);
    let edited = Instant::now();
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "success")],
        Duration::from_secs(5),
        |v| v >= 2.0,
    );
    let took_remove = edited.elapsed();
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);
    assert_eq!(daemon.reloads("success"), 2.0, "two edits, two reloads");
    assert_eq!(daemon.reloads("failure"), 0.0);
    eprintln!(
        "file edit to effect: add {} ms, remove {} ms",
        took_add.as_millis(),
        took_remove.as_millis()
    );
}

#[test]
fn the_filter_outlives_a_killed_daemon_is_re_adopted_and_detach_removes_it() {
    let lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]);
    let _server = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    let mut first = lab.start();
    let first_pid = first.pid();
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);

    let clients = ClientLoop::start(&lab.net.cli, &ALLOWED, PROTECTED_PORT, LOOP_TIMEOUT);
    clients.wait_for_more(4, Duration::from_secs(5));
    let killed = first.kill9();
    assert!(!killed.success(), "SIGKILL: {killed}");
    clients.wait_for_more(4, Duration::from_secs(5));
    // The pinned filter still enforces with no daemon at all.
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);

    let status = lab.status();
    assert_eq!(status["loaded"], true, "{status:#}");
    assert_eq!(status["mode"], "enforce", "{status:#}");
    assert_eq!(
        status["links"],
        serde_json::json!([{ "interface": lab.net.srv_if(), "mode": "native", "alive": true }]),
        "{status:#}"
    );
    assert_eq!(status["daemon_pid"], first_pid, "{status:#}");
    assert_eq!(status["daemon_running"], false, "{status:#}");
    assert_eq!(
        (
            status["ipv4_prefixes"].as_u64(),
            status["ipv6_prefixes"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let drops_dead = status_packets(&status, "drop", "not_allowed");
    assert!(
        drops_dead >= 2,
        "drops while the daemon was dead: {status:#}"
    );
    assert!(status_packets(&status, "pass", "allowed") > 0, "{status:#}");

    let mut second = lab.start();
    let log = second.log();
    assert!(
        log.contains("re-adopted"),
        "the second daemon must re-adopt the pinned filter; log:\n{log}"
    );
    clients.wait_for_more(4, Duration::from_secs(5));
    let report = clients.stop();
    assert_eq!(
        report.failed, 0,
        "connections from allowed sources failed across kill and restart: {:?}",
        report.errors
    );
    let status = lab.status();
    assert_eq!(status["daemon_pid"], second.pid(), "{status:#}");
    assert_eq!(status["daemon_running"], true, "{status:#}");
    // Kernel counters survive the restart.
    let drops = second.metric(PACKETS, &labels("drop", "not_allowed"));
    assert!(
        drops >= drops_dead as f64,
        "drops went back from {drops_dead} to {drops}"
    );

    // SIGTERM: a graceful stop that leaves the filter in force.
    let stopped = second.term();
    assert!(
        stopped.success(),
        "hookwall run after SIGTERM: {stopped}; log:\n{}",
        second.log()
    );
    lab.net
        .assert_all_time_out(&[IpAddr::V4(REFUSED_V4)], PROTECTED_PORT, REFUSED_TIMEOUT);

    let out = hookwall(&["detach", "--pin-path", lab.pins.as_str()]);
    assert!(
        out.status.success(),
        "hookwall detach: {}",
        output_text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("detached from {}", lab.net.srv_if())),
        "detach must name the interface: {stdout}"
    );
    assert_eq!(
        lab.net.srv.xdp_on(lab.net.srv_if()),
        None,
        "XDP still attached after detach"
    );
    assert!(
        !lab.pins.path().exists(),
        "{} still exists after detach",
        lab.pins.path().display()
    );
    lab.net.assert_all_connect(&REFUSED, PROTECTED_PORT);
    eprintln!(
        "{} connections across SIGKILL and restart, 0 failed",
        report.ok
    );
}

/// One broken config: how to break the good one, and what the error must say.
struct BadCase {
    what: &'static str,
    from: &'static str,
    to: String,
    line: usize,
    key: &'static str,
    why: String,
}

#[test]
fn bad_configs_are_refused_by_check_and_run_with_file_line_and_key() {
    let lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]);
    let good = lab.spec.render();
    let line_of = |needle: &str| {
        good.lines()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line {needle} in\n{good}"))
            + 1
    };
    let cases = [
        BadCase {
            what: "bad CIDR",
            from: "cidrs = ",
            to: format!("cidrs = [\"{ALLOWED_V4_NET}\", \"198.51.100.300/24\"]"),
            line: line_of("cidrs = "),
            key: "allow.cidrs[1]",
            why: "`198.51.100.300/24` is not an IP address or CIDR prefix".into(),
        },
        BadCase {
            what: "unknown key",
            from: "attach = ",
            to: "attach = \"auto\"\nattach_mod = \"native\"".into(),
            line: line_of("attach = ") + 1,
            key: "filter.attach_mod",
            why: "unknown key".into(),
        },
        BadCase {
            what: "empty allowlist in enforce mode",
            from: "cidrs = ",
            to: "cidrs = []".into(),
            line: line_of("[allow]"),
            key: "allow",
            why: "empty allowlist in enforce mode".into(),
        },
        BadCase {
            what: "missing interface",
            from: "interfaces = ",
            to: "interfaces = [\"hw-nosuch0\"]".into(),
            line: line_of("interfaces = "),
            key: "filter.interfaces[0]",
            // Checked against the namespace's own interfaces, which the message lists.
            why: format!(
                "no interface `hw-nosuch0` on this host (this host has: {}, lo)",
                lab.net.srv_if()
            ),
        },
        BadCase {
            what: "unknown preset",
            from: "presets = ",
            to: "presets = [\"nosuchpreset\"]".into(),
            line: line_of("presets = "),
            key: "allow.presets[0]",
            why: "unknown preset \"nosuchpreset\"".into(),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let text: String = good
            .lines()
            .map(|l| {
                if l.starts_with(case.from) {
                    case.to.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        assert_ne!(text, good, "{}: the case changed nothing", case.what);
        let path = lab.dir.path().join(format!("bad-{i}.toml"));
        write_atomic(&path, &text);
        let path_str = path.to_str().expect("UTF-8 path");
        let expected = format!("{path_str}:{}: `{}`", case.line, case.key);
        let what = case.what;

        let check = hookwall_in(&lab.net.srv, &["check", "-c", path_str]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(
            check.status.code(),
            Some(1),
            "check, {what}: {}",
            output_text(&check)
        );
        assert!(
            stderr.contains(&expected) && stderr.contains(&case.why),
            "check, {what}: expected an error at `{expected}` saying `{}`, got: {}\nconfig:\n{text}",
            case.why,
            output_text(&check)
        );

        let mut run = lab.spawn(&path);
        let status = run
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("run, {what}: still running 10 s with a bad config"));
        let log = run.log();
        assert_eq!(status.code(), Some(1), "run, {what}: {status}; log:\n{log}");
        assert!(
            log.contains(&expected) && log.contains(&case.why),
            "run, {what}: expected an error at `{expected}` saying `{}`, got:\n{log}",
            case.why
        );
        assert!(
            !lab.pins.path().exists(),
            "run, {what}: created {} with a bad config",
            lab.pins.path().display()
        );
        assert_eq!(
            lab.net.srv.xdp_on(lab.net.srv_if()),
            None,
            "run, {what}: attached XDP with a bad config"
        );
    }
}

#[test]
fn a_failed_attach_at_start_leaves_nothing_behind() {
    let mut lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]);
    // A valid config the kernel refuses: loopback has no native XDP.
    lab.spec.interfaces = vec!["lo".into()];
    lab.spec.attach = "native".into();
    lab.write_config();
    let mut run = lab.spawn(&lab.config);
    let status = run
        .wait_exit(Duration::from_secs(10))
        .expect("hookwall run exits when it cannot attach");
    let log = run.log();
    assert_eq!(status.code(), Some(1), "{status}; log:\n{log}");
    assert!(log.contains("interface lo in native mode"), "log:\n{log}");
    assert!(
        !lab.pins.path().exists(),
        "a run that attached nothing left pins under {}: {:?}; log:\n{log}",
        lab.pins.path().display(),
        std::fs::read_dir(lab.pins.path())
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

#[test]
fn an_invalid_config_on_reload_is_refused_and_the_old_one_stays() {
    let lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]).with_symlinked_config();
    let _server = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    let mut daemon = lab.start();
    assert_eq!(
        (daemon.reloads("success"), daemon.reloads("failure")),
        (0.0, 0.0)
    );

    // If any of this were applied, the refused sources would get in and ALLOWED_V6 would not.
    lab.write_cidrs(&[
        ALLOWED_V4_NET,
        REFUSED_V4_NET,
        REFUSED_V6_NET,
        "2001:db8:zz::/64",
    ]);
    daemon.hup();
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "failure")],
        Duration::from_secs(5),
        |v| v >= 1.0,
    );
    assert_eq!(daemon.reloads("failure"), 1.0);
    assert_eq!(daemon.reloads("success"), 0.0);
    let log = daemon.log();
    let cidrs_line = lab
        .spec
        .render()
        .lines()
        .position(|l| l.starts_with("cidrs = "))
        .expect("cidrs line")
        + 1;
    let expected = format!("{}:{cidrs_line}: `allow.cidrs[3]`", lab.config.display());
    assert!(
        log.contains(&expected) && log.contains("2001:db8:zz::/64"),
        "the refused reload must be reported as `{expected}`; log:\n{log}"
    );
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);
    lab.net
        .assert_all_time_out(&REFUSED, PROTECTED_PORT, REFUSED_TIMEOUT);
    let prefixes = |f| daemon.metric("hookwall_allowlist_prefixes", &[("family", f)]);
    assert_eq!((prefixes("ipv4"), prefixes("ipv6")), (1.0, 1.0));

    // The daemon is still healthy: a good config after the bad one is applied.
    lab.write_cidrs(&[ALLOWED_V4_NET, ALLOWED_V6_NET, REFUSED_V4_NET]);
    daemon.hup();
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "success")],
        Duration::from_secs(5),
        |v| v >= 1.0,
    );
    lab.net
        .assert_connects(IpAddr::V4(REFUSED_V4), PROTECTED_PORT);
}

#[test]
fn monitor_mode_counts_refused_sources_and_lets_them_through() {
    let mut lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]);
    lab.spec.mode = "monitor".into();
    lab.write_config();
    let _server = EchoServer::start(&lab.net.srv, PROTECTED_PORT);
    let daemon = lab.start();
    assert!(
        lab.net.srv.xdp_on(lab.net.srv_if()).is_some(),
        "XDP attached in monitor mode too"
    );

    lab.net.assert_all_connect(&REFUSED, PROTECTED_PORT);
    lab.net.assert_all_connect(&ALLOWED, PROTECTED_PORT);

    let text = daemon.metrics();
    let value = |verdict, reason| {
        hookwall_tests::daemon::metric_value(&text, PACKETS, &labels(verdict, reason))
    };
    // Handshake, request and close of both refused families.
    assert!(value("monitor", "not_allowed") >= 8.0, "monitored:\n{text}");
    assert!(value("pass", "allowed") >= 8.0, "passed:\n{text}");
    assert_eq!(
        value("drop", "not_allowed"),
        0.0,
        "monitor mode drops nothing"
    );
    let status = lab.status();
    assert_eq!(status["mode"], "monitor", "{status:#}");
    assert!(
        status_packets(&status, "monitor", "not_allowed") >= 8,
        "{status:#}"
    );
}

/// `status` and `detach` with a `-c` that does not give a pin path (a typo, an invalid
/// `[filter]`) exit 1 with the config's errors and touch nothing; they never fall back to another
/// pin path. Errors in other sections do not concern them.
#[test]
fn status_and_detach_with_a_config_that_does_not_load_touch_nothing() {
    let lab = Lab::filter(&[ALLOWED_V4_NET, ALLOWED_V6_NET]);
    let daemon = lab.start();
    let good = std::fs::read_to_string(&lab.config).expect("the lab's config");
    // The lab's own pin path, and a key `[filter]` does not have: invalid, but it names the pins.
    let bad = lab.dir.path().join("bad.toml");
    let bad_filter = good.replacen("[filter]\n", "[filter]\nno_such_key = 1\n", 1);
    assert_ne!(bad_filter, good, "the lab's config has a [filter] line");
    write_atomic(&bad, &bad_filter);
    let missing = lab.dir.path().join("typo.toml");
    for config in [&missing, &bad] {
        let config = config.to_str().expect("UTF-8 path");
        for command in ["detach", "status"] {
            let out = hookwall_in(&lab.net.srv, &[command, "-c", config]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{command} -c {config}: {}",
                output_text(&out)
            );
            assert!(
                stderr.contains(config) && stderr.contains("nothing was touched"),
                "{command} -c {config} must name the config and say nothing was touched: {}",
                output_text(&out)
            );
        }
    }
    assert!(
        lab.net.srv.xdp_on(lab.net.srv_if()).is_some(),
        "the filter was detached by a command whose config did not load"
    );
    assert!(lab.pins.path().exists(), "the pins were removed");
    assert_eq!(lab.status()["loaded"], true);

    // The good config leads `status` to the lab's pins, and so does one whose only error is in
    // a section `status` does not read (the key lands in the last table, not `[filter]`).
    let elsewhere = lab.dir.path().join("elsewhere.toml");
    write_atomic(&elsewhere, &format!("{good}\nno_such_key = 1\n"));
    let check = hookwall_in(
        &lab.net.srv,
        &["check", "-c", elsewhere.to_str().expect("UTF-8")],
    );
    assert!(
        !check.status.success() && output_text(&check).contains("no_such_key"),
        "check refuses the key: {}",
        output_text(&check)
    );
    for config in [&lab.config, &elsewhere] {
        let config = config.to_str().expect("UTF-8 path");
        let out = hookwall_in(&lab.net.srv, &["status", "--json", "-c", config]);
        assert!(
            out.status.success(),
            "status -c {config}: {}",
            output_text(&out)
        );
        let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(status["pin_path"], lab.pins.as_str(), "{status:#}");
        assert_eq!(status["daemon_pid"], daemon.pid(), "{status:#}");
    }
}
