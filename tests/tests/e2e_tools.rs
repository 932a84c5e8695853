//! End-to-end tests of the tools that run beside the daemon: `hookwall queue` and `hookwall
//! status` read only their section of the config (`[store]`, `filter.pin_path`), so they work
//! from a network namespace that lacks the configured interface, as long as the store and the
//! pins are reachable.
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_tools`.

use std::net::IpAddr;

use hookwall_tests::{
    config::Route,
    daemon::{hookwall, output_text},
    lab::{Lab, assert_reply},
    netns::ALLOWED_V4,
};
use serde_json::Value;

const MPESA: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Zq8vX2pL9mW4rT7yK1sB6nD0fH5jG";
const JSON: (&str, &str) = ("Content-Type", "application/json");
const C2B_CONFIRMATION: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));
/// The `TransID` of [`C2B_CONFIRMATION`]: the event's id in the store.
const TRANS_ID: &str = "RKTQDM7W6S";

/// `hookwall ARGS` in the test's own (root) network namespace, which must succeed; its standard
/// output.
fn hookwall_ok(args: &[&str]) -> String {
    let out = hookwall(args);
    assert!(
        out.status.success(),
        "hookwall {}: {}",
        args.join(" "),
        output_text(&out)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn queue_and_status_run_outside_the_daemons_network_namespace() {
    let mut lab = Lab::https("hw-tools-");
    let token = lab.write_secret("token", TOKEN);
    lab.spec.routes = vec![Route::mpesa(MPESA, &token)];
    lab.write_config();
    let daemon = lab.start();
    let r = lab.post(
        IpAddr::V4(ALLOWED_V4),
        &format!("{MPESA}/{TOKEN}"),
        &[JSON],
        C2B_CONFIRMATION,
    );
    assert_reply(&r, 200, "C2B confirmation", &daemon);

    let config = lab.config.to_str().expect("UTF-8 path");
    let iface = lab.net.srv_if();
    // The filtered interface exists only in the daemon's namespace: from here the full load
    // (`hookwall check`, `hookwall run`) refuses this config.
    let out = hookwall(&["check", "-c", config]);
    let text = output_text(&out);
    assert!(
        !out.status.success() && text.contains(&format!("there is no interface `{iface}`")),
        "check outside the daemon's namespace must miss the interface: {text}"
    );

    let listed = hookwall_ok(&["queue", "-c", config, "list"]);
    assert!(
        listed.contains(TRANS_ID) && listed.contains(MPESA),
        "queue list shows the stored event: {listed}"
    );
    let events: Vec<Value> = hookwall_ok(&["queue", "-c", config, "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_id"], TRANS_ID);
    assert_eq!(events[0]["route"], MPESA);
    let shown = hookwall_ok(&["queue", "-c", config, "show", &events[0]["id"].to_string()]);
    assert!(
        shown.contains("TransID"),
        "queue show has the body: {shown}"
    );

    let report = hookwall_ok(&["status", "-c", config]);
    assert!(
        report.contains(&format!("pin path:    {}", lab.pins.as_str()))
            && report.contains("filter:      loaded, mode enforce")
            && report.contains(&format!("interface:   {iface}")),
        "status shows the daemon's pinned filter: {report}"
    );
    let status: Value =
        serde_json::from_str(&hookwall_ok(&["status", "-c", config, "--json"])).expect("JSON");
    assert_eq!(status["pin_path"], lab.pins.as_str());
    assert_eq!(status["loaded"], true);
    assert_eq!(status["daemon_pid"], daemon.pid());
    let links = status["links"].as_array().expect("links");
    assert!(
        links
            .iter()
            .any(|l| l["interface"] == iface && l["alive"] == true),
        "status names the interface the daemon attached to: {status}"
    );
}
