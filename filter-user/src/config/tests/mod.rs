//! The config's tests: [`errors`] is the table of refused configs; each section's accepted
//! configs are in their own file; what is shared (the bundled examples, diagnostics, the host
//! probes) is here.

mod allow;
mod daemon;
mod delivery;
mod errors;
mod filter;
mod partial;
mod routes;
mod secret;
mod server;
mod store;

use std::{net::IpAddr, path::Path, time::Duration};

use super::{
    check::filter::RawFilter,
    diagnostics::{Seg, accepted_keys, closest, edit_distance, known_keys, serde_names},
    host::{Host, default_route_v4, default_route_v6},
    secret::SECRET_REF_KEYS,
    *,
};
use crate::allowlist::Source;

pub(crate) const FILE: &str = "/etc/hookwall/hookwall.toml";

/// A host with `eth0` and `lo`, a default route via `eth0` unless told otherwise, and one user
/// besides root: `hookwall` (uid 990, gid 985).
struct FakeHost {
    interfaces: Vec<String>,
    default: Option<String>,
}

impl Host for FakeHost {
    fn interfaces(&self) -> Vec<String> {
        self.interfaces.clone()
    }

    fn default_route_interface(&self) -> Option<String> {
        self.default.clone()
    }

    fn user(&self, name: &str) -> Option<(u32, u32)> {
        (name == "hookwall").then_some((990, 985))
    }
}

fn host() -> FakeHost {
    FakeHost {
        interfaces: vec!["eth0".into(), "lo".into()],
        default: Some("eth0".into()),
    }
}

/// Joins lines, so that a test's line numbers are its array indices + 1.
pub(crate) fn lines(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

/// The config `text` gives on a host with `eth0` and `lo`; panics with the errors if refused.
pub(crate) fn parse_ok(text: &str) -> Config {
    parse_with(Path::new(FILE), text, &host()).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err_with(text: &str, host: &dyn Host) -> Vec<ConfigError> {
    match parse_with(Path::new(FILE), text, host) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => {
            assert!(!errors.0.is_empty());
            errors.0
        }
    }
}

fn assert_contains(error: &ConfigError, needle: &str) {
    assert!(error.message.contains(needle), "{needle:?} not in: {error}");
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub(crate) const MPESA_ROUTE: &[&str] = &[
    "[[route]]",
    "path = \"/mpesa/c2b/confirmation\"",
    "verify = \"mpesa\"",
    "token = { env = \"HOOKWALL_MPESA_TOKEN\" }",
];

/// A valid HTTP `[delivery]`, for tests that vary one key (lines 1 to 3).
pub(crate) const HTTP_DELIVERY: &[&str] = &[
    "[delivery]",
    "url = \"http://127.0.0.1:8000/hookwall\"",
    "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }",
];

/// `HTTP_DELIVERY` plus `extra`, so the first extra line is line 4.
pub(crate) fn http_delivery(extra: &[&str]) -> String {
    let mut text = HTTP_DELIVERY.to_vec();
    text.extend(extra);
    lines(&text)
}

// --- defaults and the bundled examples ---

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let config = parse_ok("");
    assert_eq!(config.path, Path::new(FILE));
    assert_eq!(
        config.filter,
        FilterConfig {
            interfaces: vec!["eth0".into()],
            interfaces_from_default_route: true,
            mode: Mode::Enforce,
            attach: AttachMode::Auto,
            protected_ports: vec![443],
            pin_path: "/sys/fs/bpf/hookwall".into(),
            strict_fragments: false,
        }
    );
    assert_eq!(config.allow.presets, ["mpesa"]);
    assert!(config.allow.cidrs.is_empty() && config.allow.files.is_empty());
    // 196.201.214.206 and .207 merge into one /31.
    assert_eq!(config.allowlist.v4.len(), 11);
    assert_eq!(config.allowlist.entries.len(), 12);
    assert!(config.allowlist.v6.is_empty());
    assert!(config.allowlist.contains(ip("196.201.214.200")));
    assert_eq!(
        config.server,
        ServerConfig {
            listen: "0.0.0.0:443".parse().unwrap(),
            tls: Tls::Files {
                cert: "/etc/hookwall/tls/fullchain.pem".into(),
                key: "/etc/hookwall/tls/privkey.pem".into(),
            },
            client_address: ClientAddress::Peer,
            limits: Limits::default(),
        }
    );
    assert_eq!(config.store.path, Path::new("/var/lib/hookwall/events.db"));
    assert_eq!(config.store.retention, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(config.metrics.listen, "127.0.0.1:9184".parse().unwrap());
    assert_eq!(config.delivery, None);
    assert!(config.routes.is_empty());
}

/// A config with every section but `[delivery]` and two routes, commented as an operator would
/// write it: the base many tests start from.
pub(crate) const BASE_EXAMPLE: &str = r#"
[filter]
interfaces = ["eth0"]        # where the XDP program attaches
mode = "enforce"             # "enforce" drops; "monitor" counts what it would drop and passes all
attach = "auto"              # "auto" (native, falling back to generic) | "native" | "generic"
protected_ports = [443]      # destination ports judged (TCP and UDP); default: the server's listen port
pin_path = "/sys/fs/bpf/hookwall"

[allow]
presets = ["mpesa"]          # built-in lists; "mpesa" = Safaricom's published callback addresses
cidrs = ["203.0.113.0/24", "2001:db8::/48"]
files = []                   # text files: one address or CIDR per line, '#' comments

[server]
listen = "0.0.0.0:443"
tls_cert = "/etc/hookwall/tls/fullchain.pem"
tls_key = "/etc/hookwall/tls/privkey.pem"
# tls = "self-signed"        # instead of the two files, for a first run only; never the default
client_address = "peer"      # who the client is: the socket peer (no proxy in front)

[store]
path = "/var/lib/hookwall/events.db"   # embedded SQLite; every accepted event, before it is answered

[metrics]
listen = "127.0.0.1:9184"    # GET /metrics, Prometheus text format; never on the public listener

[[route]]
path = "/mpesa/c2b/confirmation"
verify = "mpesa"             # mpesa | standard-webhooks | stripe | github | hmac-sha256 | shared-secret
token = { env = "HOOKWALL_MPESA_TOKEN" }   # mpesa: the URL given to Daraja is {path}/{token}

[[route]]
path = "/hooks/stripe"
verify = "stripe"
secrets = [{ env = "STRIPE_WEBHOOK_SECRET" }]   # several, for rotation
tolerance_seconds = 300
"#;

#[test]
fn the_base_example_parses() {
    let config = parse_ok(BASE_EXAMPLE);
    assert_eq!(config.filter.interfaces, ["eth0"]);
    assert!(!config.filter.interfaces_from_default_route);
    assert_eq!(config.filter.protected_ports, [443]);
    assert_eq!(config.allowlist.v4.len(), 12);
    assert_eq!(config.allowlist.v6.len(), 1);
    let cidr_lines: Vec<String> = config
        .allowlist
        .entries
        .iter()
        .filter(|e| matches!(e.source, Source::Config { .. }))
        .map(|e| e.source.to_string())
        .collect();
    assert_eq!(cidr_lines, ["config line 11", "config line 11"]);
    assert_eq!(
        config.routes,
        [
            RouteConfig {
                path: "/mpesa/c2b/confirmation".into(),
                verify: VerifyKind::Mpesa,
                token: Some(SecretRef::Env("HOOKWALL_MPESA_TOKEN".into())),
                tokens: Vec::new(),
                secrets: Vec::new(),
                tolerance_seconds: 300,
                header: None,
                encoding: None,
                prefix: None,
                validation: None,
                allow: None,
            },
            RouteConfig {
                path: "/hooks/stripe".into(),
                verify: VerifyKind::Stripe,
                token: None,
                tokens: Vec::new(),
                secrets: vec![SecretRef::Env("STRIPE_WEBHOOK_SECRET".into())],
                tolerance_seconds: 300,
                header: None,
                encoding: None,
                prefix: None,
                validation: None,
                allow: None,
            },
        ]
    );
}

#[test]
fn the_bundled_dev_config_parses_and_guards_only_its_own_port() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("hookwall.dev.toml");
    let text = include_str!("../../../hookwall.dev.toml");
    let config = parse_with(&path, text, &host()).unwrap_or_else(|e| panic!("{e}"));
    let filter = &config.filter;
    assert_eq!(filter.interfaces, ["eth0"]);
    assert!(filter.interfaces_from_default_route);
    assert_eq!(filter.mode, Mode::Enforce);
    assert_eq!(filter.attach, AttachMode::Auto);
    assert_eq!(
        filter.protected_ports,
        [8443],
        "must never guard SSH or anything else"
    );
    assert_eq!(filter.pin_path, Path::new("/sys/fs/bpf/hookwall-dev"));
    assert!(config.allowlist.contains(ip("127.0.0.1")));
    assert!(config.allowlist.contains(ip("::1")));
    assert!(config.allowlist.contains(ip("203.0.113.77")));
    assert!(config.allowlist.contains(ip("196.201.212.69")));
    assert_eq!(config.server.listen, "0.0.0.0:8443".parse().unwrap());
    assert_eq!(config.server.tls, Tls::SelfSigned);
    assert_eq!(
        config.store.path,
        Path::new("target/hookwall-dev/events.db")
    );
    assert_eq!(config.metrics.listen, "127.0.0.1:9184".parse().unwrap());
    assert_eq!(config.store.retention, DEFAULT_RETENTION);
    assert_eq!(
        config.delivery, None,
        "delivery is an example, commented out"
    );
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].path, "/mpesa/c2b/confirmation");
    assert_eq!(
        config.routes[0].token,
        Some(SecretRef::Env("HOOKWALL_MPESA_TOKEN".into()))
    );
}

#[test]
fn the_dev_configs_commented_examples_parse_when_uncommented() {
    // Each example block starts at a commented table header and runs to the first line that
    // is not a comment; uncommenting means removing the leading "# ".
    let text = include_str!("../../../hookwall.dev.toml");
    let mut uncommented = String::new();
    let mut in_example = false;
    for line in text.lines() {
        if line.starts_with("# [") {
            in_example = true;
        } else if !line.starts_with('#') {
            in_example = false;
        }
        let line = if in_example {
            line.strip_prefix("# ").unwrap_or(line)
        } else {
            line
        };
        uncommented.push_str(line);
        uncommented.push('\n');
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("hookwall.dev.toml");
    let config = parse_with(&path, &uncommented, &host()).unwrap_or_else(|e| panic!("{e}"));
    let delivery = config.delivery.expect("the [delivery] example");
    assert_eq!(
        delivery.sink,
        Sink::Http {
            url: "http://127.0.0.1:8000/hookwall".into()
        }
    );
    assert_eq!(config.routes.len(), 2);
    assert_eq!(
        config.routes[1].validation.as_ref().map(|v| v.on_failure),
        Some(OnFailure::Accept)
    );
}

// --- errors, display, helpers ---

#[test]
fn config_error_display_leaves_out_unknown_parts() {
    let mut error = ConfigError {
        file: "/x.toml".into(),
        line: Some(3),
        key: Some("filter.mode".into()),
        message: "bad".into(),
    };
    assert_eq!(error.to_string(), "/x.toml:3: `filter.mode`: bad");
    error.line = None;
    assert_eq!(error.to_string(), "/x.toml: `filter.mode`: bad");
    error.key = None;
    assert_eq!(error.to_string(), "/x.toml: bad");
}

#[test]
fn line_of_counts_from_one() {
    let text = "a\nbc\n\nd";
    assert_eq!(line_of(text, 0), 1);
    assert_eq!(line_of(text, 1), 1);
    assert_eq!(line_of(text, 2), 2);
    assert_eq!(line_of(text, 5), 3);
    assert_eq!(line_of(text, 6), 4);
    assert_eq!(line_of(text, 999), 4);
}

#[test]
fn the_line_index_counts_as_line_of_does() {
    for text in ["a\nbc\n\nd", "", "\n", "x", "a\n\n\nb\n"] {
        let index = super::diagnostics::LineIndex::new(text);
        for offset in 0..text.len() + 3 {
            assert_eq!(
                index.line_of(offset),
                line_of(text, offset),
                "{text:?} at {offset}"
            );
        }
    }
}

#[test]
fn load_reads_the_file_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let errors = load(&missing).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].file, missing);
    assert!(errors.0[0].message.contains("cannot read the config file"));

    // Monitor mode with an explicit interface that is on every Linux host: independent of
    // this machine's routes.
    let path = dir.path().join("hookwall.toml");
    std::fs::write(
        &path,
        "[filter]\ninterfaces = [\"lo\"]\nmode = \"monitor\"\n",
    )
    .unwrap();
    if Path::new("/sys/class/net/lo").exists() {
        let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.path, path);
        assert_eq!(config.filter.interfaces, ["lo"]);
    }
}

#[test]
fn default_routes_are_read_from_proc() {
    let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
              wlan0\t0000A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n\
              wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
              eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
              tun0\t00000000\t00000000\t0200\t0\t0\t0\t00000000\t0\t0\t0\n";
    assert_eq!(default_route_v4(v4).as_deref(), Some("eth0"));
    assert_eq!(default_route_v4("Iface\tDestination\n"), None);

    let v6 = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
              00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n\
              00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
    assert_eq!(default_route_v6(v6).as_deref(), Some("eth1"));
    assert_eq!(default_route_v6(""), None);
}

#[test]
fn serde_names_read_the_schema() {
    assert_eq!(
        serde_names::<RawFilter>(),
        [
            "interfaces",
            "mode",
            "attach",
            "protected_ports",
            "pin_path",
            "strict_fragments"
        ]
    );
    assert_eq!(serde_names::<Mode>(), ["enforce", "monitor"]);
    assert_eq!(
        serde_names::<VerifyKind>(),
        [
            "mpesa",
            "standard-webhooks",
            "stripe",
            "github",
            "hmac-sha256",
            "shared-secret"
        ]
    );
}

#[test]
fn as_str_matches_the_serde_names() {
    let modes = [Mode::Enforce, Mode::Monitor].map(Mode::as_str);
    assert_eq!(modes, serde_names::<Mode>());
    let attach =
        [AttachMode::Auto, AttachMode::Native, AttachMode::Generic].map(AttachMode::as_str);
    assert_eq!(attach, serde_names::<AttachMode>());
    let kinds = [
        VerifyKind::Mpesa,
        VerifyKind::StandardWebhooks,
        VerifyKind::Stripe,
        VerifyKind::Github,
        VerifyKind::HmacSha256,
        VerifyKind::SharedSecret,
    ]
    .map(VerifyKind::as_str);
    assert_eq!(kinds, serde_names::<VerifyKind>());
    assert_eq!(
        [Encoding::Hex, Encoding::Base64].map(Encoding::as_str),
        serde_names::<Encoding>()
    );
    assert_eq!(
        [OnFailure::Accept, OnFailure::Reject].map(OnFailure::as_str),
        serde_names::<OnFailure>()
    );
}

#[test]
fn closest_finds_likely_typos_only() {
    assert_eq!(
        closest("interface", ["interfaces", "mode"]),
        Some("interfaces")
    );
    assert_eq!(closest("MODE", ["interfaces", "mode"]), Some("mode"));
    assert_eq!(closest("colour", ["interfaces", "mode"]), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("mpsea", "mpesa"), 1, "a swap is one edit");
}

// --- the keys the file accepts ---

#[test]
fn accepted_keys_list_every_key_once() {
    let keys = accepted_keys();
    for key in [
        "filter",
        "filter.mode",
        "allow.cidrs",
        "server.tls",
        "server.limits",
        "server.limits.rate_per_second",
        "store.retention",
        "metrics.listen",
        "delivery.secret",
        "delivery.secret.env",
        "delivery.nats.token.file",
        "delivery.nats.duplicate_window",
        "route",
        "route[].verify",
        "route[].token.env",
        "route[].secrets",
        "route[].secrets[].env",
        "route[].secrets[].file",
        "route[].validation",
        "route[].validation.url",
        "route[].validation.on_failure",
    ] {
        assert!(
            keys.iter().any(|k| k == key),
            "{key} missing from {keys:#?}"
        );
    }
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "duplicates in {keys:#?}");
    // Not tables of their own: `tls` is a string, `secrets` a list of references.
    for key in [
        "server.tls.self-signed",
        "route[].secrets.env",
        "route.verify",
    ] {
        assert!(!keys.iter().any(|k| k == key), "{key} in {keys:#?}");
    }
}

#[test]
fn every_accepted_key_passes_the_unknown_key_check() {
    // One schema decides both, so every key listed is one the file may hold.
    for key in accepted_keys() {
        let dotted = key.replace("[]", "");
        let mut parts: Vec<&str> = dotted.split('.').collect();
        let name = parts.pop().unwrap();
        if SECRET_REF_KEYS.contains(&name) {
            continue;
        }
        let table: Vec<Seg> = parts.iter().map(|&p| Seg::Key(p.to_owned())).collect();
        assert!(
            known_keys(&table).contains(&name),
            "{key}: `{name}` is not a known key of `{}`",
            parts.join(".")
        );
    }
}
