use std::{net::IpAddr, path::Path, time::Duration};

use super::{
    check::filter::RawFilter,
    diagnostics::{closest, edit_distance, serde_names},
    host::{default_route_v4, default_route_v6},
    *,
};
use crate::allowlist::Source;

const FILE: &str = "/etc/hookwall/hookwall.toml";

/// A host with `eth0` and `lo`, and a default route via `eth0` unless told otherwise.
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
}

fn host() -> FakeHost {
    FakeHost {
        interfaces: vec!["eth0".into(), "lo".into()],
        default: Some("eth0".into()),
    }
}

/// Joins lines, so that a test's line numbers are its array indices + 1.
fn lines(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

fn parse_ok(text: &str) -> Config {
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

fn parse_err(text: &str) -> Vec<ConfigError> {
    parse_err_with(text, &host())
}

/// The only error, checked to be at `key` on `line`.
fn single_error(text: &str, key: &str, line: usize) -> ConfigError {
    let errors = parse_err(text);
    assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    let error = errors.into_iter().next().unwrap();
    assert_eq!(error.key.as_deref(), Some(key), "{error}");
    assert_eq!(error.line, Some(line), "{error}");
    assert_eq!(error.file, Path::new(FILE), "{error}");
    error
}

fn assert_contains(error: &ConfigError, needle: &str) {
    assert!(error.message.contains(needle), "{needle:?} not in: {error}");
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

const MPESA_ROUTE: &[&str] = &[
    "[[route]]",
    "path = \"/mpesa/c2b/confirmation\"",
    "verify = \"mpesa\"",
    "token = { env = \"HOOKWALL_MPESA_TOKEN\" }",
];

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
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
        }
    );
    assert_eq!(config.store.path, Path::new("/var/lib/hookwall/events.db"));
    assert_eq!(config.store.retention, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(config.metrics.listen, "127.0.0.1:9184".parse().unwrap());
    assert_eq!(config.delivery, None);
    assert!(config.routes.is_empty());
}

/// The example in SPEC.md, verbatim.
const SPEC_EXAMPLE: &str = r#"
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
trusted_proxies = []         # only these peers' X-Forwarded-For is believed

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
fn the_spec_example_parses() {
    let config = parse_ok(SPEC_EXAMPLE);
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
                secrets: Vec::new(),
                tolerance_seconds: 300,
                header: None,
                encoding: None,
                prefix: None,
                validation: None,
            },
            RouteConfig {
                path: "/hooks/stripe".into(),
                verify: VerifyKind::Stripe,
                token: None,
                secrets: vec![SecretRef::Env("STRIPE_WEBHOOK_SECRET".into())],
                tolerance_seconds: 300,
                header: None,
                encoding: None,
                prefix: None,
                validation: None,
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

#[test]
fn protected_ports_default_to_the_listen_port() {
    let config = parse_ok(&lines(&["[server]", "listen = \"[::]:8443\""]));
    assert_eq!(config.filter.protected_ports, [8443]);
    let config = parse_ok(&lines(&["[filter]", "protected_ports = [9000, 443, 9000]"]));
    assert_eq!(
        config.filter.protected_ports,
        [443, 9000],
        "sorted and deduplicated"
    );
}

#[test]
fn listed_interfaces_are_kept_in_order() {
    let config = parse_ok(&lines(&["[filter]", "interfaces = [\"lo\", \"eth0\"]"]));
    assert_eq!(config.filter.interfaces, ["lo", "eth0"]);
    assert!(!config.filter.interfaces_from_default_route);
    // An empty list means the same as no key: the default route's interface.
    let config = parse_ok(&lines(&["[filter]", "interfaces = []"]));
    assert_eq!(config.filter.interfaces, ["eth0"]);
    assert!(config.filter.interfaces_from_default_route);
}

#[test]
fn every_route_kind_with_its_options() {
    let config = parse_ok(&lines(&[
        "[[route]]",
        "path = \"/hooks/github\"",
        "verify = \"github\"",
        "secrets = [{ file = \"secrets/github\" }, { env = \"GITHUB_OLD\" }]",
        "[[route]]",
        "path = \"/hooks/generic\"",
        "verify = \"hmac-sha256\"",
        "secrets = [{ env = \"GENERIC\" }]",
        "header = \"X-Signature\"",
        "encoding = \"base64\"",
        "prefix = \"sha256=\"",
        "[[route]]",
        "path = \"/hooks/plain\"",
        "verify = \"shared-secret\"",
        "secrets = [{ env = \"PLAIN\" }]",
        "header = \"Authorization\"",
        "prefix = \"Bearer \"",
        "[[route]]",
        "path = \"/hooks/sw\"",
        "verify = \"standard-webhooks\"",
        "secrets = [{ env = \"SW\" }]",
        "tolerance_seconds = 60",
        "[[route]]",
        "path = \"/hooks/hex\"",
        "verify = \"hmac-sha256\"",
        "secrets = [{ env = \"HEX\" }]",
        "header = \"X-Hub\"",
    ]));
    let routes = &config.routes;
    assert_eq!(
        routes[0].secrets,
        [
            SecretRef::File("/etc/hookwall/secrets/github".into()),
            SecretRef::Env("GITHUB_OLD".into()),
        ],
        "a relative secret file resolves against the config file's directory"
    );
    assert_eq!(routes[0].encoding, None);
    assert_eq!(routes[1].verify, VerifyKind::HmacSha256);
    assert_eq!(routes[1].header.as_deref(), Some("X-Signature"));
    assert_eq!(routes[1].encoding, Some(Encoding::Base64));
    assert_eq!(routes[1].prefix.as_deref(), Some("sha256="));
    assert_eq!(routes[2].verify, VerifyKind::SharedSecret);
    assert_eq!(routes[2].prefix.as_deref(), Some("Bearer "));
    assert_eq!(routes[2].encoding, None);
    assert_eq!(routes[3].tolerance_seconds, 60);
    assert_eq!(
        routes[4].encoding,
        Some(Encoding::Hex),
        "hex is the default encoding"
    );
}

#[test]
fn relative_tls_files_resolve_beside_the_config() {
    let config = parse_ok(&lines(&["[server]", "tls_cert = \"tls/cert.pem\""]));
    assert_eq!(
        config.server.tls,
        Tls::Files {
            cert: "/etc/hookwall/tls/cert.pem".into(),
            key: "/etc/hookwall/tls/privkey.pem".into(),
        }
    );
}

#[test]
fn trusted_proxies_are_parsed() {
    let config = parse_ok(&lines(&[
        "[server]",
        "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
    ]));
    let proxies: Vec<String> = config
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
}

#[test]
fn server_limits_default_to_the_documented_values() {
    let limits = parse_ok("").server.limits;
    assert_eq!(
        limits,
        Limits {
            rate_per_second: 200,
            rate_burst: 400,
            max_connections: 4096,
            max_in_flight: 1024,
            body_limit_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    );
    // An empty table changes nothing.
    assert_eq!(
        parse_ok(&lines(&["[server.limits]"])).server.limits,
        Limits::default()
    );
}

#[test]
fn server_limits_are_read() {
    let config = parse_ok(&lines(&[
        "[server]",
        "listen = \"0.0.0.0:443\"",
        "",
        "[server.limits]",
        "rate_per_second = 2",
        "rate_burst = 3",
        "max_connections = 10",
        "max_in_flight = 4",
        "body_limit_bytes = 1000",
        "header_timeout_ms = 500",
        "body_timeout_ms = 750",
    ]));
    assert_eq!(
        config.server.limits,
        Limits {
            rate_per_second: 2,
            rate_burst: 3,
            max_connections: 10,
            max_in_flight: 4,
            body_limit_bytes: 1000,
            header_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_millis(750),
        }
    );
    // The inline form is the same table.
    let config = parse_ok(&lines(&["[server]", "limits = { rate_burst = 7 }"]));
    assert_eq!(config.server.limits.rate_burst, 7);
    assert_eq!(config.server.limits.rate_per_second, 200);
    assert!(config.render_check().contains("200/s per client (burst 7)"));
}

#[test]
fn server_limits_out_of_range_are_each_reported_at_their_line() {
    let text = lines(&[
        "[server.limits]",
        "rate_per_second = 0",
        "rate_burst = -1",
        "max_connections = 0",
        "max_in_flight = 1000001",
        "body_limit_bytes = 0",
        "header_timeout_ms = 0",
        "body_timeout_ms = 300001",
    ]);
    let errors = parse_err(&text);
    let found: Vec<(Option<&str>, Option<usize>)> =
        errors.iter().map(|e| (e.key.as_deref(), e.line)).collect();
    assert_eq!(
        found,
        [
            (Some("server.limits.rate_per_second"), Some(2)),
            (Some("server.limits.rate_burst"), Some(3)),
            (Some("server.limits.max_connections"), Some(4)),
            (Some("server.limits.max_in_flight"), Some(5)),
            (Some("server.limits.body_limit_bytes"), Some(6)),
            (Some("server.limits.header_timeout_ms"), Some(7)),
            (Some("server.limits.body_timeout_ms"), Some(8)),
        ],
        "{}",
        ConfigErrors(errors.clone())
    );
    assert_contains(
        &errors[0],
        "0 is out of range: use 1 to 1000000 (default 200)",
    );
    assert_contains(&errors[5], "use 100 to 300000 (default 10000)");
    let error = single_error(
        &lines(&["[server.limits]", "body_limit_bytes = 67108865"]),
        "server.limits.body_limit_bytes",
        2,
    );
    assert_contains(&error, "use 1 to 67108864 (default 1048576)");
}

#[test]
fn server_limits_unknown_keys_and_wrong_types() {
    let error = single_error(
        &lines(&["[server.limits]", "rate_per_secnd = 5"]),
        "server.limits.rate_per_secnd",
        2,
    );
    assert_contains(&error, "did you mean `rate_per_second`?");
    let error = single_error(
        &lines(&["[server.limits]", "body_timeout_ms = \"5s\""]),
        "server.limits.body_timeout_ms",
        2,
    );
    assert_contains(&error, "fix the value's type");
}

// --- store.retention, [delivery], route validation ---

/// A valid HTTP `[delivery]`, for tests that vary one key (lines 1 to 3).
const HTTP_DELIVERY: &[&str] = &[
    "[delivery]",
    "url = \"http://127.0.0.1:8000/hookwall\"",
    "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }",
];

/// `HTTP_DELIVERY` plus `extra`, so the first extra line is line 4.
fn http_delivery(extra: &[&str]) -> String {
    let mut text = HTTP_DELIVERY.to_vec();
    text.extend(extra);
    lines(&text)
}

#[test]
fn store_retention_is_read_as_a_duration() {
    let config = parse_ok(&lines(&["[store]", "retention = \"7d\""]));
    assert_eq!(config.store.retention, Duration::from_secs(7 * 24 * 3600));
    let config = parse_ok(&lines(&["[store]", "retention = \"36h 30m\""]));
    assert_eq!(
        config.store.retention,
        Duration::from_secs(36 * 3600 + 1800)
    );
    // The minimum: a delivered row is what recognises a late retry as a duplicate.
    let error = single_error(
        &lines(&["[store]", "retention = \"10m\""]),
        "store.retention",
        2,
    );
    assert_contains(
        &error,
        "\"10m\" is out of range: use at least 1h (default 30days)",
    );
    assert_contains(&error, "duplicate");
}

#[test]
fn an_http_delivery_gets_the_documented_defaults() {
    let config = parse_ok(&lines(HTTP_DELIVERY));
    assert_eq!(
        config.delivery,
        Some(DeliveryConfig {
            sink: Sink::Http {
                url: "http://127.0.0.1:8000/hookwall".into()
            },
            secret: Some(SecretRef::Env("HOOKWALL_DELIVERY_SECRET".into())),
            timeout: Duration::from_secs(10),
            max_attempts: 25,
            max_age: Duration::from_secs(3 * 24 * 3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            concurrency: 8,
        })
    );
}

#[test]
fn every_delivery_key_is_read() {
    let config = parse_ok(&http_delivery(&[
        "timeout = \"2500ms\"",
        "max_attempts = 1000",
        "max_age = \"72h\"",
        "backoff_initial = \"5ms\"",
        "backoff_max = \"5ms\"",
        "concurrency = 256",
    ]));
    let delivery = config.delivery.unwrap();
    assert_eq!(delivery.timeout, Duration::from_millis(2500));
    assert_eq!(delivery.max_attempts, 1000);
    assert_eq!(delivery.max_age, Duration::from_secs(72 * 3600));
    assert_eq!(delivery.backoff_initial, Duration::from_millis(5));
    assert_eq!(
        delivery.backoff_max,
        Duration::from_millis(5),
        "equal to backoff_initial is fine"
    );
    assert_eq!(delivery.concurrency, 256);
    // https, a file secret beside the config, and the lowest bounds.
    let config = parse_ok(&lines(&[
        "[delivery]",
        "url = \"https://app.internal/hooks?from=hookwall\"",
        "secret = { file = \"secrets/delivery\" }",
        "timeout = \"100ms\"",
        "max_attempts = 1",
        "max_age = \"1s\"",
        "concurrency = 1",
    ]));
    let delivery = config.delivery.unwrap();
    assert_eq!(
        delivery.sink,
        Sink::Http {
            url: "https://app.internal/hooks?from=hookwall".into()
        }
    );
    assert_eq!(
        delivery.secret,
        Some(SecretRef::File("/etc/hookwall/secrets/delivery".into()))
    );
    assert_eq!(delivery.timeout, Duration::from_millis(100));
    assert_eq!(
        (
            delivery.max_attempts,
            delivery.max_age,
            delivery.concurrency
        ),
        (1, Duration::from_secs(1), 1)
    );
}

#[test]
fn a_nats_delivery_gets_its_defaults_and_needs_no_secret() {
    let config = parse_ok(&lines(&[
        "[delivery.nats]",
        "url = \"nats://127.0.0.1:4222\"",
    ]));
    let delivery = config.delivery.unwrap();
    assert_eq!(
        delivery.sink,
        Sink::Nats(NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject: "hookwall.events".into(),
            stream: "HOOKWALL".into(),
            duplicate_window: Duration::from_secs(120),
            token: None,
        })
    );
    assert_eq!(delivery.secret, None);
    assert_eq!(delivery.max_attempts, 25);

    let config = parse_ok(&lines(&[
        "[delivery]",
        "secret = { env = \"SIGN\" }",
        "[delivery.nats]",
        "url = \"tls://nats.internal:4443\"",
        "subject = \"payments.mpesa.confirmed\"",
        "stream = \"PAYMENTS-v2_A\"",
        "duplicate_window = \"10m\"",
        "token = { env = \"NATS_TOKEN\" }",
    ]));
    let delivery = config.delivery.unwrap();
    assert_eq!(delivery.secret, Some(SecretRef::Env("SIGN".into())));
    assert_eq!(
        delivery.sink,
        Sink::Nats(NatsConfig {
            url: "tls://nats.internal:4443".into(),
            subject: "payments.mpesa.confirmed".into(),
            stream: "PAYMENTS-v2_A".into(),
            duplicate_window: Duration::from_secs(600),
            token: Some(SecretRef::Env("NATS_TOKEN".into())),
        })
    );
    // Without a scheme, and IPv6.
    for url in ["127.0.0.1:4222", "nats://[::1]:4222"] {
        let config = parse_ok(&lines(&["[delivery.nats]", &format!("url = \"{url}\"")]));
        assert!(
            matches!(config.delivery.unwrap().sink, Sink::Nats(n) if n.url == url),
            "{url}"
        );
    }
}

#[test]
fn a_validation_route_is_read_with_its_default_timeout() {
    let mut text = HTTP_DELIVERY.to_vec();
    text.extend(MPESA_ROUTE);
    text.push(
        "validation = { url = \"http://127.0.0.1:8000/mpesa/validate\", on_failure = \"accept\" }",
    );
    text.extend(&MPESA_ROUTE[..3]);
    text[9] = "path = \"/mpesa/c2b/validation-strict\"";
    text.extend([
        "token = { env = \"T2\" }",
        "validation = { url = \"https://app/v\", timeout = \"7s\", on_failure = \"reject\" }",
    ]);
    let config = parse_ok(&lines(&text));
    assert_eq!(
        config.routes[0].validation,
        Some(ValidationConfig {
            url: "http://127.0.0.1:8000/mpesa/validate".into(),
            timeout: Duration::from_secs(5),
            on_failure: OnFailure::Accept,
        })
    );
    assert_eq!(
        config.routes[1].validation,
        Some(ValidationConfig {
            url: "https://app/v".into(),
            timeout: Duration::from_secs(7),
            on_failure: OnFailure::Reject,
        })
    );
    // A route without the key has none.
    assert_eq!(parse_ok(&lines(MPESA_ROUTE)).routes[0].validation, None);
}

#[test]
fn a_bad_duration_says_why_and_how_to_write_one() {
    let error = single_error(
        &http_delivery(&["max_age = \"3 dayz\""]),
        "delivery.max_age",
        4,
    );
    assert_contains(
        &error,
        "\"3 dayz\" is not a duration: unknown time unit \"dayz\"",
    );
    assert_contains(&error, "; write e.g. \"72h\" or \"3d\"");
    let error = single_error(&http_delivery(&["timeout = \"\""]), "delivery.timeout", 4);
    assert_contains(&error, "\"\" is not a duration");
}

#[test]
fn a_duration_of_the_wrong_type_says_to_write_a_unit() {
    let errors = parse_err(&http_delivery(&[
        "timeout = 10",
        "max_age = true",
        "backoff_max = 1.5",
    ]));
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("delivery.timeout".to_owned(), 4),
            ("delivery.max_age".to_owned(), 5),
            ("delivery.backoff_max".to_owned(), 6),
        ]
    );
    assert_contains(
        &errors[0],
        "10 has no unit: durations are strings with one, e.g. \"10s\"",
    );
    assert_contains(&errors[1], "this is a boolean, not a duration");
    assert_contains(&errors[2], "this is a number, not a duration");
    // Unlike serde's type errors, these do not stop the other checks.
    let errors = parse_err(&lines(&[
        "[store]",
        "retention = 30",
        "[delivery]",
        "url = \"http://a\"",
        "secret = { env = \"S\" }",
        "max_attempts = 0",
    ]));
    let keys: Vec<_> = errors.iter().map(|e| e.key.clone().unwrap()).collect();
    assert_eq!(keys, ["store.retention", "delivery.max_attempts"]);
}

#[test]
fn delivery_values_out_of_range_are_each_reported_at_their_line() {
    let errors = parse_err(&http_delivery(&[
        "timeout = \"50ms\"",       // 4
        "max_attempts = 0",         // 5
        "max_age = \"999ms\"",      // 6
        "backoff_initial = \"0s\"", // 7
        "backoff_max = \"2days\"",  // 8
        "concurrency = 257",        // 9
    ]));
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("delivery.timeout".to_owned(), 4),
            ("delivery.max_attempts".to_owned(), 5),
            ("delivery.max_age".to_owned(), 6),
            ("delivery.backoff_initial".to_owned(), 7),
            ("delivery.backoff_max".to_owned(), 8),
            ("delivery.concurrency".to_owned(), 9),
        ],
        "{}",
        ConfigErrors(errors.clone())
    );
    assert_contains(
        &errors[0],
        "\"50ms\" is out of range: use 100ms to 5m (default 10s)",
    );
    assert_contains(&errors[1], "0 is out of range: use 1 to 1000 (default 25)");
    assert_contains(&errors[2], "use at least 1s (default 3days)");
    assert_contains(&errors[3], "use 1ms to 1day (default 1s)");
    assert_contains(&errors[5], "257 is out of range: use 1 to 256 (default 8)");
    let error = single_error(
        &http_delivery(&["max_attempts = 1001"]),
        "delivery.max_attempts",
        4,
    );
    assert_contains(&error, "use 1 to 1000");
    let error = single_error(&http_delivery(&["timeout = \"6m\""]), "delivery.timeout", 4);
    assert_contains(&error, "use 100ms to 5m");
}

#[test]
fn backoff_max_must_not_be_below_backoff_initial() {
    let error = single_error(
        &http_delivery(&["backoff_initial = \"30s\"", "backoff_max = \"10s\""]),
        "delivery.backoff_max",
        5,
    );
    assert_contains(&error, "backoff_max (10s) is below backoff_initial (30s)");
    // Against the default backoff_max, the error points at [delivery].
    let error = single_error(
        &http_delivery(&["backoff_initial = \"1h\""]),
        "delivery.backoff_max",
        1,
    );
    assert_contains(&error, "backoff_max (10m) is below backoff_initial (1h)");
}

#[test]
fn delivery_integers_of_the_wrong_type() {
    let error = single_error(
        &http_delivery(&["max_attempts = \"25\""]),
        "delivery.max_attempts",
        4,
    );
    assert_contains(&error, "fix the value's type");
}

#[test]
fn delivery_needs_exactly_one_sink() {
    let error = single_error(
        &lines(&["[delivery]", "secret = { env = \"S\" }"]),
        "delivery",
        1,
    );
    assert_contains(&error, "[delivery] needs where to deliver: url = ");
    assert_contains(&error, "remove [delivery] to only store events");
    let error = single_error(
        &http_delivery(&["[delivery.nats]", "url = \"nats://127.0.0.1:4222\""]),
        "delivery.url",
        2,
    );
    assert_contains(&error, "`url` and [delivery.nats] both say where events go");
}

#[test]
fn an_http_delivery_needs_its_signing_secret() {
    let error = single_error(
        &lines(&["", "[delivery]", "url = \"http://127.0.0.1:8000/hookwall\""]),
        "delivery",
        2,
    );
    assert_contains(&error, "delivery.url needs `secret`");
    assert_contains(&error, "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }");
}

#[test]
fn delivery_urls_must_be_absolute_http_urls() {
    for (url, needle) in [
        ("ftp://app/x", "has scheme \"ftp\": only http and https"),
        ("127.0.0.1:8000/hookwall", "is not an absolute URL"),
        ("/hookwall", "is not an absolute URL"),
        ("http://", "is not a URL"),
        ("http://app/a b", "is not a URL"),
    ] {
        let text = lines(&[
            "[delivery]",
            "secret = { env = \"S\" }",
            &format!("url = \"{url}\""),
        ]);
        let error = single_error(&text, "delivery.url", 3);
        assert_contains(&error, needle);
        assert_contains(&error, "write e.g. \"http://127.0.0.1:8000/hookwall\"");
    }
}

#[test]
fn urls_with_credentials_are_refused_without_repeating_them() {
    let password = "hunter2-Sup3rS3cret";
    let text = lines(&[
        "[delivery]",
        "secret = { env = \"S\" }",
        &format!("url = \"https://app:{password}@127.0.0.1:8000/hookwall\""),
    ]);
    let error = single_error(&text, "delivery.url", 3);
    assert_contains(&error, "carries credentials (user:password@)");
    assert!(!error.to_string().contains(password), "{error}");

    let text = lines(&[
        "[delivery.nats]",
        &format!("url = \"nats://user:{password}@127.0.0.1:4222\""),
    ]);
    let error = single_error(&text, "delivery.nats.url", 2);
    assert_contains(&error, "use token = { env = \"NATS_TOKEN\" }");
    assert!(!error.to_string().contains(password), "{error}");

    // Even a URL that does not parse is not echoed when it has credentials.
    let text = lines(&[
        "[delivery]",
        "secret = { env = \"S\" }",
        &format!("url = \"http://u:{password} x@app\""),
    ]);
    let error = single_error(&text, "delivery.url", 3);
    assert!(!error.to_string().contains(password), "{error}");
}

#[test]
fn nats_settings_are_checked() {
    let error = single_error(
        &lines(&["[delivery.nats]", "subject = \"a.b\""]),
        "delivery.nats",
        1,
    );
    assert_contains(
        &error,
        "needs the server to publish to: url = \"nats://127.0.0.1:4222\"",
    );
    for (url, needle) in [
        (
            "http://127.0.0.1:4222",
            "a scheme other than nats:// or tls://",
        ),
        ("nats://127.0.0.1", "needs a host and a port"),
        ("nats.internal", "needs a host and a port"),
        ("nats://127.0.0.1:4222/x", "has a path"),
    ] {
        let text = lines(&["[delivery.nats]", &format!("url = \"{url}\"")]);
        let error = single_error(&text, "delivery.nats.url", 2);
        assert_contains(&error, needle);
    }
    for subject in ["", "a..b", "hookwall.*", "hookwall.>", "a b", ".a"] {
        let text = lines(&[
            "[delivery.nats]",
            "url = \"nats://127.0.0.1:4222\"",
            &format!("subject = \"{subject}\""),
        ]);
        let error = single_error(&text, "delivery.nats.subject", 3);
        assert_contains(&error, "is not a subject to publish to");
    }
    for stream in ["", "A.B", "A B", "A/B", "A*"] {
        let text = lines(&[
            "[delivery.nats]",
            "url = \"nats://127.0.0.1:4222\"",
            &format!("stream = \"{stream}\""),
        ]);
        let error = single_error(&text, "delivery.nats.stream", 3);
        assert_contains(&error, "is not a JetStream stream name");
    }
    let text = lines(&[
        "[delivery.nats]",
        "url = \"nats://127.0.0.1:4222\"",
        "duplicate_window = \"500ms\"",
    ]);
    let error = single_error(&text, "delivery.nats.duplicate_window", 3);
    assert_contains(&error, "use at least 1s (default 2m)");
}

#[test]
fn inline_delivery_secrets_are_refused_without_repeating_them() {
    let signing = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let token = "nats-T0ken-Sup3rS3cret";
    let text = lines(&[
        "[delivery]",
        &format!("secret = \"{signing}\""),
        "[delivery.nats]",
        "url = \"nats://127.0.0.1:4222\"",
        &format!("token = \"{token}\""),
    ]);
    let errors = parse_err(&text);
    let shown = ConfigErrors(errors.clone()).to_string();
    for secret in [signing, token] {
        assert!(!shown.contains(secret), "secret leaked:\n{shown}");
    }
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("delivery.secret".to_owned(), 2),
            ("delivery.nats.token".to_owned(), 5),
        ]
    );
    assert_contains(&errors[0], "write secret = { env = \"NAME\" }");
    assert_contains(&errors[1], "write token = { env = \"NAME\" }");
    // A malformed reference is an error too.
    let error = single_error(
        &lines(&[
            "[delivery]",
            "url = \"http://a\"",
            "secret = { env = \"A\", file = \"/b\" }",
        ]),
        "delivery.secret",
        3,
    );
    assert_contains(&error, "a secret reference is exactly");
}

#[test]
fn validation_is_for_mpesa_routes_only() {
    let text = http_delivery(&[
        "[[route]]",
        "path = \"/s\"",
        "verify = \"stripe\"",
        "secrets = [{ env = \"S\" }]",
        "validation = { url = \"http://a/v\", on_failure = \"accept\" }",
    ]);
    let error = single_error(&text, "route[0].validation", 8);
    assert_contains(
        &error,
        "`validation` applies only to verify = mpesa (M-Pesa C2B validation), not \"stripe\"",
    );
}

#[test]
fn validation_keys_are_checked() {
    let route = |validation: &str| {
        let mut text = HTTP_DELIVERY.to_vec();
        text.extend(MPESA_ROUTE);
        text.push(validation);
        lines(&text)
    };
    // Missing on_failure and url are reported at the table, together.
    let errors = parse_err(&route("validation = { timeout = \"2s\" }"));
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert!(
        errors
            .iter()
            .all(|e| e.key.as_deref() == Some("route[0].validation") && e.line == Some(8))
    );
    assert_contains(&errors[0], "needs the application's endpoint that decides");
    assert_contains(&errors[1], "needs on_failure = \"accept\" or \"reject\"");

    let error = single_error(
        &route("validation = { url = \"http://a/v\", on_failure = \"accpet\" }"),
        "route[0].validation.on_failure",
        8,
    );
    assert_contains(&error, "\"accpet\" is not one of \"accept\", \"reject\"");
    assert_contains(&error, "did you mean \"accept\"?");

    for (timeout, needle) in [
        (
            "\"8s\"",
            "\"8s\" is out of range: use 100ms to 7s (default 5s)",
        ),
        ("\"50ms\"", "Safaricom waits about 8 s"),
        ("5", "5 has no unit"),
    ] {
        let text = route(&format!(
            "validation = {{ url = \"http://a/v\", timeout = {timeout}, on_failure = \"accept\" }}"
        ));
        let error = single_error(&text, "route[0].validation.timeout", 8);
        assert_contains(&error, needle);
    }

    let error = single_error(
        &route("validation = { url = \"tcp://a/v\", on_failure = \"accept\" }"),
        "route[0].validation.url",
        8,
    );
    assert_contains(&error, "only http and https");
    assert_contains(&error, "\"http://127.0.0.1:8000/mpesa/validate\"");

    let error = single_error(
        &route("validation = { url = \"http://a/v\", on_failure = \"accept\", urll = \"x\" }"),
        "route[0].validation.urll",
        8,
    );
    assert_contains(&error, "did you mean `url`?");

    let error = single_error(
        &route("validation = \"http://a/v\""),
        "route[0].validation",
        8,
    );
    assert_contains(&error, "expected a table: validation = {");
}

#[test]
fn validation_needs_the_delivery_signing_key() {
    let mut text = MPESA_ROUTE.to_vec();
    text.push("validation = { url = \"http://a/v\", on_failure = \"reject\" }");
    let error = single_error(&lines(&text), "route[0].validation", 5);
    assert_contains(&error, "there is no [delivery] section");

    // [delivery] with NATS needs no secret of its own, but validation does.
    let mut text = vec!["[delivery.nats]", "url = \"nats://127.0.0.1:4222\""];
    text.extend(MPESA_ROUTE);
    text.push("validation = { url = \"http://a/v\", on_failure = \"reject\" }");
    let error = single_error(&lines(&text), "route[0].validation", 7);
    assert_contains(
        &error,
        "signed with delivery.secret, which is not set: add secret = { env = \
             \"HOOKWALL_DELIVERY_SECRET\" } to [delivery]",
    );
}

#[test]
fn unknown_delivery_keys_suggest_the_known_ones() {
    let error = single_error(
        &http_delivery(&["max_atempts = 3"]),
        "delivery.max_atempts",
        4,
    );
    assert_contains(&error, "did you mean `max_attempts`?");
    let error = single_error(
        &lines(&["[delivery.nats]", "url = \"nats://a:1\"", "sbject = \"x\""]),
        "delivery.nats.sbject",
        3,
    );
    assert_contains(&error, "did you mean `subject`?");
    let error = single_error(&lines(&["retention = \"30d\""]), "retention", 1);
    assert_contains(&error, "did you mean `store.retention`?");
    let error = single_error(
        &http_delivery(&["nats_url = \"x\""]),
        "delivery.nats_url",
        4,
    );
    assert_contains(&error, "remove it; the keys here are: url, secret, timeout");
}

// --- syntax and type errors ---

#[test]
fn a_syntax_error_is_reported_with_its_line() {
    let errors = parse_err(&lines(&["[filter]", "mode = \"enforce\"", "attach = auto"]));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(3), "{}", errors[0]);
    assert!(
        errors[0].message.contains("fix the TOML syntax"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_wrong_type_is_reported_with_its_key_and_line() {
    let text = lines(&[
        "[filter]",
        "mode = \"monitor\"",
        "strict_fragments = \"yes\"",
    ]);
    let error = single_error(&text, "filter.strict_fragments", 3);
    assert_contains(&error, "expected a boolean");
}

#[test]
fn a_wrong_type_inside_a_route_names_the_route() {
    let mut text = MPESA_ROUTE.to_vec();
    text.extend([
        "[[route]]",
        "path = \"/x\"",
        "verify = \"stripe\"",
        "tolerance_seconds = \"5\"",
    ]);
    single_error(&lines(&text), "route[1].tolerance_seconds", 8);
}

// --- unknown keys ---

#[test]
fn an_unknown_key_suggests_the_closest_known_one() {
    let text = lines(&["[filter]", "interface = [\"eth0\"]"]);
    let error = single_error(&text, "filter.interface", 2);
    assert_contains(&error, "did you mean `interfaces`?");
}

#[test]
fn a_key_outside_its_section_names_the_section() {
    let error = single_error(&lines(&["mode = \"monitor\""]), "mode", 1);
    assert_contains(&error, "did you mean `filter.mode`?");
    let error = single_error(&lines(&["listen = \"0.0.0.0:443\""]), "listen", 1);
    assert_contains(&error, "`server.listen` or `metrics.listen`");
}

#[test]
fn an_unknown_key_far_from_any_lists_the_known_ones() {
    let error = single_error(&lines(&["[server]", "workers = 4"]), "server.workers", 2);
    assert_contains(&error, "listen, tls_cert, tls_key, tls, trusted_proxies");
    let error = single_error(&lines(&["[logging]", "level = \"debug\""]), "logging", 1);
    assert_contains(&error, "filter, allow, server, store, metrics, route");
}

#[test]
fn unknown_keys_in_routes_and_misspelled_sections() {
    let mut text = MPESA_ROUTE.to_vec();
    text.push("secret = { env = \"X\" }");
    let error = single_error(&lines(&text), "route[0].secret", 5);
    assert_contains(&error, "did you mean `secrets`?");

    let error = single_error(&lines(&["[[routes]]", "path = \"/x\""]), "routes", 1);
    assert_contains(&error, "did you mean `route`?");
}

#[test]
fn every_unknown_key_is_reported() {
    let errors = parse_err(&lines(&[
        "[filter]",
        "mod = \"monitor\"",
        "attatch = \"auto\"",
        "[allow]",
        "cidr = []",
    ]));
    let keys: Vec<_> = errors
        .iter()
        .map(|e| (e.key.as_deref().unwrap(), e.line.unwrap()))
        .collect();
    assert_eq!(
        keys,
        [("filter.mod", 2), ("filter.attatch", 3), ("allow.cidr", 5)]
    );
}

// --- [filter] errors ---

#[test]
fn a_bad_mode_or_attach_lists_the_values() {
    let text = lines(&["[filter]", "mode = \"Enforce\"", "attach = \"skb\""]);
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 2);
    assert_eq!(
        (errors[0].key.as_deref(), errors[0].line),
        (Some("filter.mode"), Some(2))
    );
    assert_contains(
        &errors[0],
        "\"Enforce\" is not one of \"enforce\", \"monitor\"",
    );
    assert_contains(&errors[0], "did you mean \"enforce\"?");
    assert_eq!(
        (errors[1].key.as_deref(), errors[1].line),
        (Some("filter.attach"), Some(3))
    );
    assert_contains(&errors[1], "\"auto\", \"native\", \"generic\"");
}

#[test]
fn a_missing_interface_is_named_with_those_that_exist() {
    let text = lines(&[
        "[filter]",
        "interfaces = [",
        "  \"eth0\",",
        "  \"eht1\",",
        "]",
    ]);
    let error = single_error(&text, "filter.interfaces[1]", 4);
    assert_contains(
        &error,
        "no interface `eht1` on this host (this host has: eth0, lo)",
    );
}

#[test]
fn bad_interface_names_and_duplicates() {
    let text = lines(&[
        "[filter]",
        "interfaces = [\"eth0\", \"eth0\", \"\", \"a-very-long-interface\"]",
    ]);
    let errors = parse_err(&text);
    let keys: Vec<_> = errors.iter().map(|e| e.key.clone().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "filter.interfaces[1]",
            "filter.interfaces[2]",
            "filter.interfaces[3]"
        ]
    );
    assert_contains(&errors[0], "listed twice");
    assert_contains(&errors[1], "not a valid interface name");
}

#[test]
fn no_default_route_and_no_interfaces_is_an_error() {
    let host = FakeHost {
        interfaces: vec!["lo".into()],
        default: None,
    };
    let errors = parse_err_with("", &host);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key.as_deref(), Some("filter.interfaces"));
    assert_eq!(errors[0].line, None, "the key is not in the file");
    assert_contains(&errors[0], "no default route");
    assert_contains(&errors[0], "this host has: lo");
}

#[test]
fn bad_ports_are_each_reported() {
    let text = lines(&[
        "[filter]",
        "protected_ports = [",
        "  443,",
        "  0,",
        "  70000,",
        "  -1,",
        "]",
    ]);
    let errors = parse_err(&text);
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("filter.protected_ports[1]".to_owned(), 4),
            ("filter.protected_ports[2]".to_owned(), 5),
            ("filter.protected_ports[3]".to_owned(), 6),
        ]
    );
    assert_contains(&errors[1], "70000 is not a port: ports are 1 to 65535");
}

#[test]
fn an_empty_port_list_is_an_error() {
    let error = single_error(
        &lines(&["[filter]", "protected_ports = []"]),
        "filter.protected_ports",
        2,
    );
    assert_contains(&error, "protects nothing");
}

#[test]
fn listen_port_zero_cannot_be_the_default_protected_port() {
    let errors = parse_err(&lines(&["[server]", "listen = \"127.0.0.1:0\""]));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key.as_deref(), Some("filter.protected_ports"));
    assert_eq!(errors[0].line, None, "the key is not in the file");
    assert_contains(&errors[0], "set protected_ports");
    // With the ports given, an OS-chosen listen port is fine (tests bind port 0).
    let config = parse_ok(&lines(&[
        "[filter]",
        "protected_ports = [8443]",
        "[server]",
        "listen = \"127.0.0.1:0\"",
    ]));
    assert_eq!(config.server.listen.port(), 0);
}

#[test]
fn a_relative_pin_path_is_an_error() {
    let error = single_error(
        &lines(&["[filter]", "pin_path = \"bpf/hookwall\""]),
        "filter.pin_path",
        2,
    );
    assert_contains(&error, "absolute path");
}

// --- [allow] errors ---

#[test]
fn a_bad_cidr_is_reported_at_its_element() {
    let text = lines(&[
        "[allow]",
        "cidrs = [",
        "  \"198.51.100.7\",",
        "  \"2001:db8::/48\",",
        "  \"203.0.113.5/24\",",
        "]",
    ]);
    let error = single_error(&text, "allow.cidrs[2]", 5);
    assert_eq!(
        error.message,
        "203.0.113.5/24 has host bits set: write 203.0.113.0/24 for the network or \
             203.0.113.5/32 for the one address"
    );
}

#[test]
fn cidr_entries_record_their_line() {
    let config = parse_ok(&lines(&[
        "[allow]",
        "presets = []",
        "cidrs = [",
        "  \"198.51.100.7\",",
        "  \"::1\",",
        "]",
    ]));
    let sources: Vec<_> = config
        .allowlist
        .entries
        .iter()
        .map(|e| e.source.clone())
        .collect();
    assert_eq!(
        sources,
        [Source::Config { line: 4 }, Source::Config { line: 5 }]
    );
}

#[test]
fn an_unknown_preset_lists_the_known_ones() {
    let text = lines(&["[allow]", "presets = [\"mpesa\", \"mpsea\"]"]);
    let error = single_error(&text, "allow.presets[1]", 2);
    assert_contains(&error, "unknown preset \"mpsea\" (did you mean \"mpesa\"?)");
    assert_contains(&error, "mpesa, mpesa-extra");
}

#[test]
fn presets_combine() {
    let config = parse_ok(&lines(&[
        "[allow]",
        "presets = [\"mpesa\", \"mpesa-extra\"]",
    ]));
    assert_eq!(config.allowlist.entries.len(), 14);
    assert!(config.allowlist.contains(ip("196.201.212.132")));
}

#[test]
fn an_empty_allowlist_in_enforce_mode_is_an_error() {
    let text = lines(&["[filter]", "mode = \"enforce\"", "[allow]", "presets = []"]);
    let error = single_error(&text, "allow", 3);
    assert_eq!(
        error.message,
        "an empty allowlist in enforce mode would drop every packet to the protected ports: \
             add presets, cidrs or files, or set filter.mode = \"monitor\""
    );
    // Monitor mode drops nothing, so an empty list is fine there.
    let config = parse_ok(&lines(&[
        "[filter]",
        "mode = \"monitor\"",
        "[allow]",
        "presets = []",
    ]));
    assert!(config.allowlist.is_empty());
}

#[test]
fn an_empty_allowlist_is_reported_beside_other_filter_errors() {
    let text = lines(&[
        "[filter]",
        "interfaces = [\"eth7\"]",
        "[allow]",
        "presets = []",
    ]);
    let errors = parse_err(&text);
    let keys: Vec<_> = errors.iter().map(|e| e.key.clone().unwrap()).collect();
    assert_eq!(keys, ["filter.interfaces[0]", "allow"]);
}

#[test]
fn an_empty_allowlist_after_bad_entries_reports_only_the_entries() {
    let text = lines(&["[allow]", "presets = []", "cidrs = [\"nope\"]"]);
    let error = single_error(&text, "allow.cidrs[0]", 3);
    assert_contains(&error, "`nope` is not an IP address");
}

#[test]
fn allow_files_resolve_beside_the_config_and_report_their_own_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.txt"), "# partners\n198.51.100.0/24\n").unwrap();
    std::fs::write(
        dir.path().join("bad.txt"),
        "198.51.100.9\n\nnonsense # typo\n",
    )
    .unwrap();
    let config_path = dir.path().join("hookwall.toml");

    let text = lines(&["[allow]", "files = [\"good.txt\"]"]);
    let config = parse_with(&config_path, &text, &host()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.allow.files, [dir.path().join("good.txt")]);
    let last = config.allowlist.entries.last().unwrap();
    assert_eq!(
        last.source,
        Source::File {
            path: std::sync::Arc::from(dir.path().join("good.txt").as_path()),
            line: 2
        }
    );

    let text = lines(&[
        "[allow]",
        "files = [\"good.txt\", \"bad.txt\", \"missing.txt\"]",
    ]);
    let errors = parse_with(&config_path, &text, &host()).unwrap_err().0;
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    // The config file's own errors come first.
    assert_eq!(errors[0].file, config_path);
    assert_eq!(errors[0].key.as_deref(), Some("allow.files[2]"));
    assert_eq!(errors[0].line, Some(2));
    assert!(
        errors[0]
            .message
            .contains(&*dir.path().join("missing.txt").to_string_lossy())
    );
    assert_eq!(errors[1].file, dir.path().join("bad.txt"));
    assert_eq!(errors[1].line, Some(3));
    assert_eq!(errors[1].key.as_deref(), Some("allow.files[1]"));
    assert!(errors[1].message.contains("`nonsense`"), "{}", errors[1]);
}

/// `n` IPv6 /25s, none adjacent to another (so none merge), one per line.
fn slash_25s(n: u32) -> String {
    (0..n)
        .map(|i| {
            let top = 0x2000_0000u32 + (i << 8);
            format!("{}/25\n", std::net::Ipv6Addr::from(u128::from(top) << 96))
        })
        .collect()
}

#[test]
fn many_long_ipv6_prefixes_load_whatever_the_slash_32s_they_touch() {
    // 4096 /25s touch 524,288 /32s: the narrow bitmap has no limit on them (the hash it
    // replaced refused more than 262,144).
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("hookwall.toml");
    let text = lines(&["[allow]", "files = [\"long.txt\"]"]);
    std::fs::write(dir.path().join("long.txt"), slash_25s(4096)).unwrap();
    let config = parse_with(&config_path, &text, &host()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.allowlist.v6.len(), 4096);
}

// --- [server] and [metrics] errors ---

#[test]
fn a_bad_listen_address_says_how_to_write_one() {
    let error = single_error(
        &lines(&["[server]", "listen = \"443\""]),
        "server.listen",
        2,
    );
    assert_contains(&error, "\"443\" is not an address:port");
}

#[test]
fn metrics_never_share_the_public_listener() {
    for (server, metrics) in [
        ("0.0.0.0:443", "0.0.0.0:443"),
        ("0.0.0.0:443", "127.0.0.1:443"),
        ("203.0.113.1:8443", "[::]:8443"),
        ("[::ffff:127.0.0.1]:9184", "127.0.0.1:9184"),
    ] {
        let text = lines(&[
            "[server]",
            &format!("listen = \"{server}\""),
            "[metrics]",
            &format!("listen = \"{metrics}\""),
        ]);
        let error = single_error(&text, "metrics.listen", 4);
        assert_contains(&error, "public listener");
    }
    for (server, metrics) in [
        ("0.0.0.0:443", "0.0.0.0:9184"),
        ("203.0.113.1:443", "127.0.0.1:443"),
    ] {
        let text = lines(&[
            "[server]",
            &format!("listen = \"{server}\""),
            "[metrics]",
            &format!("listen = \"{metrics}\""),
        ]);
        parse_ok(&text);
    }
}

#[test]
fn tls_self_signed_and_files_conflict() {
    let text = lines(&["[server]", "tls = \"self-signed\"", "tls_key = \"/k.pem\""]);
    let error = single_error(&text, "server.tls", 2);
    assert_contains(&error, "remove tls_cert and tls_key");
    let error = single_error(
        &lines(&["[server]", "tls = \"selfsigned\""]),
        "server.tls",
        2,
    );
    assert_contains(&error, "did you mean \"self-signed\"?");
}

#[test]
fn a_bad_trusted_proxy_is_reported_at_its_element() {
    let text = lines(&[
        "[server]",
        "trusted_proxies = [\"10.0.0.0/8\", \"10.1.2.3/16\"]",
    ]);
    let error = single_error(&text, "server.trusted_proxies[1]", 2);
    assert_contains(&error, "host bits set");
}

// --- [[route]] errors ---

#[test]
fn route_paths_must_be_paths_and_unique() {
    let errors = parse_err(&lines(&[
        "[[route]]",
        "path = \"/a\"",
        "verify = \"github\"",
        "secrets = [{ env = \"A\" }]",
        "[[route]]",
        "path = \"/a\"",
        "verify = \"stripe\"",
        "secrets = [{ env = \"B\" }]",
        "[[route]]",
        "path = \"hooks\"",
        "verify = \"stripe\"",
        "secrets = [{ env = \"C\" }]",
    ]));
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert_eq!(
        (errors[0].key.as_deref(), errors[0].line),
        (Some("route[1].path"), Some(6))
    );
    assert_contains(&errors[0], "already used by route[0] (line 2)");
    assert_eq!(
        (errors[1].key.as_deref(), errors[1].line),
        (Some("route[2].path"), Some(10))
    );
    assert_contains(&errors[1], "must start with '/', e.g. \"/hooks\"");
}

#[test]
fn a_route_needs_path_and_verify() {
    let errors = parse_err(&lines(&["[[route]]", "token = { env = \"T\" }"]));
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert!(
        errors
            .iter()
            .all(|e| e.key.as_deref() == Some("route[0]") && e.line == Some(1))
    );
    assert!(errors.iter().any(|e| e.message.contains("needs a `path`")));
    assert!(errors.iter().any(|e| {
        e.message
            .contains("needs `verify`, one of: mpesa, standard-webhooks")
    }));
}

#[test]
fn an_unknown_verify_kind_suggests_one() {
    let text = lines(&["[[route]]", "path = \"/x\"", "verify = \"hmac-sha-256\""]);
    let error = single_error(&text, "route[0].verify", 3);
    assert_contains(&error, "did you mean \"hmac-sha256\"?");
}

#[test]
fn mpesa_routes_need_a_token_and_take_no_secrets() {
    let error = single_error(
        &lines(&["[[route]]", "path = \"/m\"", "verify = \"mpesa\""]),
        "route[0]",
        1,
    );
    assert_contains(&error, "needs token = { env = \"NAME\" }");
    let mut text = MPESA_ROUTE.to_vec();
    text.push("secrets = [{ env = \"S\" }]");
    let error = single_error(&lines(&text), "route[0].secrets", 5);
    assert_contains(&error, "remove secrets");
}

#[test]
fn signed_routes_need_secrets_and_take_no_token() {
    let error = single_error(
        &lines(&["[[route]]", "path = \"/s\"", "verify = \"stripe\""]),
        "route[0]",
        1,
    );
    assert_contains(
        &error,
        "needs the signing secret: secrets = [{ env = \"NAME\" }]",
    );
    let text = lines(&[
        "[[route]]",
        "path = \"/s\"",
        "verify = \"stripe\"",
        "secrets = []",
    ]);
    single_error(&text, "route[0].secrets", 4);
    let text = lines(&[
        "[[route]]",
        "path = \"/s\"",
        "verify = \"stripe\"",
        "secrets = { env = \"S\" }",
    ]);
    let error = single_error(&text, "route[0].secrets", 4);
    assert_contains(&error, "is a list");
    let text = lines(&[
        "[[route]]",
        "path = \"/s\"",
        "verify = \"stripe\"",
        "secrets = [{ env = \"S\" }]",
        "token = { env = \"T\" }",
    ]);
    let error = single_error(&text, "route[0].token", 5);
    assert_contains(&error, "for verify = \"mpesa\" only");
}

#[test]
fn malformed_secret_references_are_errors() {
    for (reference, _why) in [
        ("{ env = \"A\", file = \"/b\" }", "both"),
        ("{ env = \"\" }", "empty name"),
        ("{ env = \"A=B\" }", "an '=' in the name"),
        ("{ path = \"/b\" }", "neither env nor file"),
        ("{ env = 5 }", "not a string"),
        ("{}", "empty"),
    ] {
        let text = lines(&[
            "[[route]]",
            "path = \"/g\"",
            "verify = \"github\"",
            &format!("secrets = [{reference}]"),
        ]);
        let error = single_error(&text, "route[0].secrets[0]", 4);
        assert_contains(&error, "a secret reference is exactly { env = \"NAME\" }");
    }
}

#[test]
fn inline_secrets_are_refused_without_repeating_them() {
    let token = "tok3n-VALUE-Sup3rS3cret";
    let signing = "whsec_0123456789abcdefSECRET";
    let number = "8675309112233";
    let text = lines(&[
        "[[route]]",
        "path = \"/mpesa/c2b/confirmation\"",
        "verify = \"mpesa\"",
        &format!("token = \"{token}\""),
        "[[route]]",
        "path = \"/hooks/stripe\"",
        "verify = \"stripe\"",
        &format!("secrets = [{{ env = \"OK\" }}, \"{signing}\", {number}]"),
        "[[route]]",
        "path = \"/hooks/github\"",
        "verify = \"github\"",
        &format!("secrets = \"{signing}\""),
    ]);
    let errors = parse_err(&text);
    let shown = ConfigErrors(errors.clone()).to_string();
    for secret in [token, signing, number] {
        assert!(!shown.contains(secret), "secret leaked:\n{shown}");
    }
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("route[0].token".to_owned(), 4),
            ("route[1].secrets[1]".to_owned(), 8),
            ("route[1].secrets[2]".to_owned(), 8),
            ("route[2].secrets".to_owned(), 12),
        ]
    );
    assert_contains(&errors[0], "secrets are never written inline");
    assert_contains(&errors[0], "write token = { env = \"NAME\" }");
    assert_contains(&errors[1], "this is a string");
    assert_contains(&errors[2], "this is a number");
    assert_contains(&errors[3], "write secrets = [{ env = \"NAME\" }]");
}

#[test]
fn tolerance_applies_to_timestamped_kinds_only_and_is_bounded() {
    let text = lines(&[
        "[[route]]",
        "path = \"/g\"",
        "verify = \"github\"",
        "secrets = [{ env = \"G\" }]",
        "tolerance_seconds = 300",
    ]);
    let error = single_error(&text, "route[0].tolerance_seconds", 5);
    assert_contains(&error, "no signed timestamp");
    for bad in ["0", "-5", "86400"] {
        let text = lines(&[
            "[[route]]",
            "path = \"/s\"",
            "verify = \"stripe\"",
            "secrets = [{ env = \"S\" }]",
            &format!("tolerance_seconds = {bad}"),
        ]);
        let error = single_error(&text, "route[0].tolerance_seconds", 5);
        assert_contains(&error, "out of range");
    }
}

#[test]
fn header_encoding_and_prefix_rules() {
    let base = [
        "[[route]]",
        "path = \"/h\"",
        "verify = \"hmac-sha256\"",
        "secrets = [{ env = \"H\" }]",
    ];
    let error = single_error(&lines(&base), "route[0]", 1);
    assert_contains(
        &error,
        "needs the name of the header that carries the signature",
    );

    let mut text = base.to_vec();
    text.extend(["header = \"X Sig\""]);
    single_error(&lines(&text), "route[0].header", 5);

    let mut text = base.to_vec();
    text.extend(["header = \"X-Sig\"", "encoding = \"b64\""]);
    let error = single_error(&lines(&text), "route[0].encoding", 6);
    assert_contains(&error, "\"hex\", \"base64\"");

    let stripe = [
        "[[route]]",
        "path = \"/s\"",
        "verify = \"stripe\"",
        "secrets = [{ env = \"S\" }]",
    ];
    for (line, key) in [
        ("header = \"X\"", "header"),
        ("encoding = \"hex\"", "encoding"),
        ("prefix = \"v1=\"", "prefix"),
    ] {
        let mut text = stripe.to_vec();
        text.push(line);
        let error = single_error(&lines(&text), &format!("route[0].{key}"), 5);
        assert_contains(&error, "applies only to verify =");
    }
}

// --- many errors at once ---

#[test]
fn every_error_in_a_file_is_reported_in_line_order() {
    let text = lines(&[
        "[filter]",                                      // 1
        "interfaces = [\"eth9\"]",                       // 2
        "mode = \"enforcing\"",                          // 3
        "protected_ports = [0]",                         // 4
        "pin_path = \"relative\"",                       // 5
        "colour = \"blue\"",                             // 6
        "[allow]",                                       // 7
        "presets = [\"mpesa\", \"stripe\"]",             // 8
        "cidrs = [\"10.0.0.1/8\"]",                      // 9
        "files = [\"/nonexistent/hookwall/allow.txt\"]", // 10
        "[server]",                                      // 11
        "listen = \"0.0.0.0:443\"",                      // 12
        "[metrics]",                                     // 13
        "listen = \"0.0.0.0:443\"",                      // 14
        "[[route]]",                                     // 15
        "path = \"nope\"",                               // 16
        "verify = \"mpesa\"",                            // 17
        "token = \"inline\"",                            // 18
    ]);
    let errors = parse_err(&text);
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.line.unwrap(), e.key.clone().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            (2, "filter.interfaces[0]".to_owned()),
            (3, "filter.mode".to_owned()),
            (4, "filter.protected_ports[0]".to_owned()),
            (5, "filter.pin_path".to_owned()),
            (6, "filter.colour".to_owned()),
            (8, "allow.presets[1]".to_owned()),
            (9, "allow.cidrs[0]".to_owned()),
            (10, "allow.files[0]".to_owned()),
            (14, "metrics.listen".to_owned()),
            (16, "route[0].path".to_owned()),
            (18, "route[0].token".to_owned()),
        ]
    );
    // Display: one error per line, each "FILE:LINE: `key`: message".
    let shown = ConfigErrors(errors).to_string();
    assert_eq!(shown.lines().count(), 11);
    assert!(
        shown.starts_with("/etc/hookwall/hookwall.toml:2: `filter.interfaces[0]`: "),
        "{shown}"
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

// --- secrets ---

#[test]
fn secrets_resolve_from_files_without_trailing_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "s3cret\r\n\n").unwrap();
    let secret = SecretRef::File(path.clone()).resolve().unwrap();
    assert_eq!(secret.expose(), b"s3cret");
    assert_eq!(&*secret, b"s3cret");
    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");

    std::fs::write(&path, "\n").unwrap();
    let err = SecretRef::File(path.clone()).resolve().unwrap_err();
    assert!(matches!(err, SecretError::Empty { .. }), "{err}");

    let missing = dir.path().join("absent");
    let err = SecretRef::File(missing.clone()).resolve().unwrap_err();
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn secrets_resolve_from_the_environment() {
    // PATH is set in every test environment; setting a variable here would race other tests.
    let secret = SecretRef::Env("PATH".into()).resolve().unwrap();
    assert!(!secret.is_empty());
    let name = "HOOKWALL_TEST_VARIABLE_THAT_IS_NEVER_SET";
    let err = SecretRef::Env(name.into()).resolve().unwrap_err();
    assert!(matches!(err, SecretError::EnvNotSet { .. }));
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn secret_refs_display_where_not_what() {
    assert_eq!(SecretRef::Env("A".into()).to_string(), "env A");
    assert_eq!(SecretRef::File("/s/a".into()).to_string(), "file /s/a");
}

// --- `hookwall check` output ---

#[test]
fn render_check_shows_settings_sources_and_secret_origins() {
    let mut text = SPEC_EXAMPLE.to_owned();
    text.push_str("\n[[route]]\npath = \"/hooks/gh\"\nverify = \"github\"\nsecrets = [{ file = \"/run/gh\" }, { env = \"GH_OLD\" }]\n");
    let shown = parse_ok(&text).render_check();
    for needle in [
        "/etc/hookwall/hookwall.toml: valid",
        "interfaces        eth0\n",
        "mode              enforce (",
        "attach            auto",
        "protected ports   443",
        "pin path          /sys/fs/bpf/hookwall",
        "[allow] 12 IPv4 and 1 IPv6 prefixes after merging 14 entries",
        "196.201.214.200/32  preset mpesa (Safaricom Daraja documentation, published callback IP whitelist)",
        "203.0.113.0/24      config line 11",
        "2001:db8::/48       config line 11",
        "listen            127.0.0.1:9184",
        "listen            0.0.0.0:443",
        "/mpesa/c2b/confirmation  mpesa              token from env HOOKWALL_MPESA_TOKEN",
        "/hooks/stripe            stripe             secrets from env STRIPE_WEBHOOK_SECRET",
        "/hooks/gh                github             secrets from file /run/gh, env GH_OLD",
    ] {
        assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
    }
    assert!(!shown.contains("port 22"));

    let shown = parse_ok(&lines(&["[filter]", "protected_ports = [22, 443]"])).render_check();
    assert!(
        shown.contains("interfaces        eth0 (the default route's)"),
        "{shown}"
    );
    assert!(
        shown.contains("note              port 22 is protected"),
        "{shown}"
    );
}

#[test]
fn render_check_hides_the_query_of_delivery_and_validation_urls() {
    let mut text = lines(&[
        "[delivery]",
        "url = \"https://app.example/hooks?key=QUERYSECRET1\"",
        "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }",
    ]);
    text.push_str(&lines(MPESA_ROUTE));
    text.push_str(
            "validation = { url = \"https://app.example/v?key=QUERYSECRET2\", on_failure = \"accept\" }\n",
        );
    let shown = parse_ok(&text).render_check();
    assert!(
        shown.contains("POST https://app.example/hooks?…"),
        "{shown}"
    );
    assert!(
        shown.contains("validation by https://app.example/v?…"),
        "{shown}"
    );
    assert!(!shown.contains("QUERYSECRET"), "{shown}");
}

#[test]
fn render_check_shows_the_delivery_and_validation_routes() {
    let shown = parse_ok("").render_check();
    for needle in [
        "retention         30days (delivered events older than this are purged)",
        "[delivery]\n  sink              none (events are stored only)",
    ] {
        assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
    }

    let mut text = http_delivery(&["max_attempts = 10", "backoff_max = \"1h\""]);
    text.push_str(&lines(MPESA_ROUTE));
    text.push_str(
            "validation = { url = \"http://127.0.0.1:8000/v\", timeout = \"2s\", on_failure = \"reject\" }\n",
        );
    let shown = parse_ok(&text).render_check();
    for needle in [
        "sink              POST http://127.0.0.1:8000/hookwall",
        "signing secret    from env HOOKWALL_DELIVERY_SECRET",
        "attempts          10s per attempt, 8 in flight; dead letter after 10 attempts or 3days",
        "backoff           1s doubling up to 1h, with jitter (half to all of it)",
        "mpesa              token from env HOOKWALL_MPESA_TOKEN; validation by \
             http://127.0.0.1:8000/v within 2s, else reject",
    ] {
        assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
    }

    let shown = parse_ok(&lines(&[
        "[delivery.nats]",
        "url = \"nats://127.0.0.1:4222\"",
        "token = { file = \"/run/nats-token\" }",
    ]))
    .render_check();
    for needle in [
        "sink              NATS JetStream nats://127.0.0.1:4222",
        "subject           hookwall.events (stream HOOKWALL, duplicate window 2m)",
        "nats token        from file /run/nats-token",
    ] {
        assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
    }
    assert!(!shown.contains("signing secret"), "{shown}");
}
