//! The dashboard and the rules against a real Prometheus scraping a real daemon: every panel's
//! query, every variable's selector and every rule's expression must parse in Prometheus, and
//! every metric name each one reads must be one Prometheus has from the live scrape (or from a
//! recording rule). A renamed metric, a typo in a panel or a rule reading a series nobody
//! records fails here, naming the panel or rule and the name. Against the healthy daemon, no
//! alert may be active.
//!
//! The daemon runs a delivery lab (an M-Pesa route delivering to the test application) and gets
//! accepted and refused callbacks first, so that counters, histograms and deliveries have
//! series. Prometheus (Debian's package, `cargo xtask setup`) runs in the server namespace with
//! `ip netns exec`, scraping the metrics listener every second and evaluating both rule files.
//!
//! Run as root with bpffs mounted: `cargo build -p hookwall --bins &&
//! HOOKWALL_BIN=$PWD/target/debug/hookwall cargo test -p hookwall-tests --test e2e_monitoring`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use hookwall_tests::{
    config::Route,
    daemon::poll_until,
    lab::{Lab, assert_reply},
    monitoring::{
        RULE_FILES, Variables, dashboard, prometheus_file, queries, referenced_names, rules,
        substitute,
    },
    netns::ALLOWED_V4,
    prometheus::{JOB, Prometheus},
};

const CONFIRMATION: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Zq8vX2pL9mW4rT7yK1sB6nD0fH5jG";
const DELIVERY_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const APP_PORT: u16 = 8000;
const JSON: (&str, &str) = ("Content-Type", "application/json");
/// Prometheus's web listener, on the server namespace's own loopback.
const PROMETHEUS_WEB: &str = "127.0.0.1:9090";
/// How long the recording rules may take to have produced every series the expressions read:
/// the rates need two scrapes, the rules one evaluation after them (both every second).
const NAMES_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an alert may stay active after the first scrape (the alerts are evaluated every
/// second; the longest `for` is minutes, so a condition that holds stays pending well past this).
const ALERTS_TIMEOUT: Duration = Duration::from_secs(10);

const C2B_CONFIRMATION: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));

fn confirmation(id: &str) -> Vec<u8> {
    assert!(C2B_CONFIRMATION.contains("\"RKTQDM7W6S\""));
    C2B_CONFIRMATION
        .replace("\"RKTQDM7W6S\"", &format!("{id:?}"))
        .into_bytes()
}

/// One expression to check: where it comes from and the PromQL Prometheus is asked.
struct Check {
    place: String,
    promql: String,
}

#[test]
fn every_panel_and_rule_reads_metrics_the_daemon_exports() {
    let mut lab = Lab::delivery("hw-monitor-", APP_PORT, DELIVERY_SECRET, |_| {});
    let token = lab.write_secret("token", TOKEN);
    lab.spec.routes = vec![Route::mpesa(CONFIRMATION, &token)];
    lab.write_config();
    lab.app().up();
    let daemon = lab.start();

    // Accepted callbacks (delivered to the application) and refused ones, so that the
    // request, refusal and delivery counters and histograms all have series.
    let src = IpAddr::V4(ALLOWED_V4);
    let path = format!("{CONFIRMATION}/{TOKEN}");
    for id in ["RKMON00001", "RKMON00002"] {
        let r = lab.post(src, &path, &[JSON], &confirmation(id));
        assert_reply(&r, 200, "a C2B confirmation", &daemon);
    }
    let r = lab.post(src, &format!("{CONFIRMATION}/wrong-token"), &[JSON], b"{}");
    assert_reply(&r, 404, "a wrong token", &daemon);
    let r = lab.post(src, &path, &[JSON], br#"{"not":"daraja"}"#);
    assert_reply(&r, 400, "a body that is not Daraja's", &daemon);
    poll_until(
        Duration::from_secs(15),
        || lab.app().deliveries().len() >= 2,
        || format!("two deliveries; log:\n{}", daemon.log()),
    );

    let web: SocketAddr = PROMETHEUS_WEB.parse().expect("address");
    let rule_files: Vec<_> = RULE_FILES.iter().map(|f| prometheus_file(f)).collect();
    let prometheus = Prometheus::start(&lab.net.srv, web, lab.spec.metrics_listen, &rule_files);
    prometheus.wait_scraped(Duration::from_secs(30));

    // What Grafana would send: its variables replaced by this target's values.
    let vars = Variables {
        job: JOB.to_owned(),
        instance: regex_quote(&lab.spec.metrics_listen.to_string()),
    };
    let mut checks: Vec<Check> = queries(&dashboard())
        .into_iter()
        .map(|q| Check {
            place: format!("dashboard {}", q.place),
            promql: substitute(&q.expr, &vars),
        })
        .collect();
    for file in RULE_FILES {
        checks.extend(rules(file).into_iter().map(|r| Check {
            place: r.describe(file),
            promql: r.expr,
        }));
    }
    assert!(checks.len() > 30, "only {} expressions found", checks.len());

    // Every expression parses and evaluates; a broken one would be refused (this proves the
    // check can fail).
    assert!(
        prometheus
            .query("sum(rate(hookwall_xdp_packets_total[5m])")
            .is_err(),
        "Prometheus accepted a query with an unclosed parenthesis"
    );
    let refused: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            prometheus
                .query(&c.promql)
                .err()
                .map(|e| format!("{}: {e}\n    {}", c.place, c.promql))
        })
        .collect();
    assert!(
        refused.is_empty(),
        "Prometheus refused these expressions:\n{}",
        refused.join("\n")
    );

    // Every name they read exists. Recorded series appear one evaluation after their inputs
    // have two samples, so wait for them; what is still missing then is missing for good.
    let wanted: BTreeMap<&str, BTreeSet<String>> = checks
        .iter()
        .map(|c| (c.place.as_str(), referenced_names(&c.promql)))
        .collect();
    let all: BTreeSet<&String> = wanted.values().flatten().collect();
    let deadline = Instant::now() + NAMES_TIMEOUT;
    let known = loop {
        let known = prometheus.names();
        if all.iter().all(|n| known.contains(*n)) || Instant::now() >= deadline {
            break known;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let missing: Vec<String> = wanted
        .iter()
        .flat_map(|(place, names)| {
            names
                .iter()
                .filter(|n| !known.contains(*n))
                .map(move |n| format!("{place}: {n}"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "names no scrape of the daemon and no recording rule produced (after {NAMES_TIMEOUT:?}):\n{}\n\
         hookwall_* names Prometheus has: {:?}",
        missing.join("\n"),
        known
            .iter()
            .filter(|n| n.contains("hookwall_"))
            .collect::<Vec<_>>()
    );
    // The check is not vacuous: the expressions read many of the daemon's names.
    assert!(all.len() > 15, "only {} names read: {all:?}", all.len());

    // A healthy daemon (filter attached, callbacks stored and delivered, a fresh certificate,
    // nothing counted after the first scrape) sets off no alert, not even a pending one. Before
    // the first scrape `absent(up)` held, so HookwallTargetMissing may still be pending until
    // the alerts' next evaluation: wait a few of those, not for ever.
    let deadline = Instant::now() + ALERTS_TIMEOUT;
    let active = loop {
        let active = prometheus
            .query("ALERTS")
            .unwrap_or_else(|e| panic!("querying ALERTS: {e}"));
        let active: Vec<String> = active["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["metric"].to_string())
            .collect();
        if active.is_empty() || Instant::now() >= deadline {
            break active;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        active.is_empty(),
        "alerts active against a healthy daemon after {ALERTS_TIMEOUT:?}:\n{}",
        active.join("\n")
    );
}

/// `s` as a regex matching only itself (the dashboard matches `instance` with `=~`).
fn regex_quote(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
            // PromQL string: the backslash itself must be escaped too.
            out.push('\\');
        }
        out.push(c);
    }
    out
}
