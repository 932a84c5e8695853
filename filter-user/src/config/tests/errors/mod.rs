//! Configs that are refused, as one table: each row is a config and every error it must give, in
//! order, with its key, line and fragments of its message. One test runs every row and reports
//! every row that fails.

use std::path::Path;

use super::{FILE, HTTP_DELIVERY, MPESA_ROUTE, host, http_delivery, lines};
use crate::config::{ConfigError, ConfigErrors, parse_with};

mod acme;
mod delivery;
mod routes;

use acme::acme_cases;
use delivery::{delivery_cases, validation_cases};
use routes::route_cases;

/// One error a row expects.
struct Expect {
    /// `None`: the error names no key (a TOML syntax error).
    key: Option<String>,
    /// `None`: the key is not in the file, so the error has no line.
    line: Option<usize>,
    /// Each must be in the message.
    fragments: Vec<String>,
    /// The whole message, where the row pins it down.
    exact: Option<String>,
}

/// An error at `key` on `line` whose message contains every fragment.
fn at(key: &str, line: usize, fragments: &[&str]) -> Expect {
    Expect {
        key: Some(key.to_owned()),
        line: Some(line),
        fragments: fragments.iter().map(|&f| f.to_owned()).collect(),
        exact: None,
    }
}

/// An error at `key` on `line` with exactly this message.
fn exact(key: &str, line: usize, message: &str) -> Expect {
    Expect {
        exact: Some(message.to_owned()),
        ..at(key, line, &[])
    }
}

/// An error at `key`, which is not in the file.
fn unplaced(key: &str, fragments: &[&str]) -> Expect {
    Expect {
        line: None,
        ..at(key, 0, fragments)
    }
}

/// An error on `line` that names no key.
fn keyless(line: usize, fragments: &[&str]) -> Expect {
    Expect {
        key: None,
        ..at("", line, fragments)
    }
}

/// One refused config.
struct Case {
    name: String,
    toml: String,
    errors: Vec<Expect>,
    /// Text that must not appear anywhere in the errors shown (secrets, passwords).
    hidden: Vec<String>,
}

fn case(name: impl Into<String>, toml: String, errors: Vec<Expect>) -> Case {
    Case {
        name: name.into(),
        toml,
        errors,
        hidden: Vec::new(),
    }
}

impl Case {
    fn hiding(mut self, hidden: &[&str]) -> Self {
        self.hidden = hidden.iter().map(|&h| h.to_owned()).collect();
        self
    }
}

/// `base` followed by `extra`, one per line.
fn with(base: &[&str], extra: &[&str]) -> String {
    let mut text = base.to_vec();
    text.extend(extra);
    lines(&text)
}

/// A `[delivery]`, then an M-Pesa route whose line 8 is `validation`.
fn validation_route(validation: &str) -> String {
    let mut text = HTTP_DELIVERY.to_vec();
    text.extend(MPESA_ROUTE);
    text.push(validation);
    lines(&text)
}

const STRIPE_ROUTE: &[&str] = &[
    "[[route]]",
    "path = \"/s\"",
    "verify = \"stripe\"",
    "secrets = [{ env = \"S\" }]",
];

const HMAC_ROUTE: &[&str] = &[
    "[[route]]",
    "path = \"/h\"",
    "verify = \"hmac-sha256\"",
    "secrets = [{ env = \"H\" }]",
];

const NATS: &[&str] = &["[delivery.nats]", "url = \"nats://127.0.0.1:4222\""];

fn filter_cases() -> Vec<Case> {
    vec![
        case(
            "a bad mode or attach lists the values",
            lines(&["[filter]", "mode = \"Enforce\"", "attach = \"skb\""]),
            vec![
                at(
                    "filter.mode",
                    2,
                    &[
                        "\"Enforce\" is not one of \"enforce\", \"monitor\"",
                        "did you mean \"enforce\"?",
                    ],
                ),
                at("filter.attach", 3, &["\"auto\", \"native\", \"generic\""]),
            ],
        ),
        case(
            "a missing interface is named with those that exist",
            lines(&[
                "[filter]",
                "interfaces = [",
                "  \"eth0\",",
                "  \"eht1\",",
                "]",
            ]),
            vec![at(
                "filter.interfaces[1]",
                4,
                &["no interface `eht1` on this host (this host has: eth0, lo)"],
            )],
        ),
        case(
            "bad interface names and duplicates",
            lines(&[
                "[filter]",
                "interfaces = [\"eth0\", \"eth0\", \"\", \"a-very-long-interface\"]",
            ]),
            vec![
                at("filter.interfaces[1]", 2, &["listed twice"]),
                at("filter.interfaces[2]", 2, &["not a valid interface name"]),
                at("filter.interfaces[3]", 2, &[]),
            ],
        ),
        case(
            "bad ports are each reported",
            lines(&[
                "[filter]",
                "protected_ports = [",
                "  443,",
                "  0,",
                "  70000,",
                "  -1,",
                "]",
            ]),
            vec![
                at("filter.protected_ports[1]", 4, &[]),
                at(
                    "filter.protected_ports[2]",
                    5,
                    &["70000 is not a port: ports are 1 to 65535"],
                ),
                at("filter.protected_ports[3]", 6, &[]),
            ],
        ),
        case(
            "an empty port list",
            lines(&["[filter]", "protected_ports = []"]),
            vec![at("filter.protected_ports", 2, &["protects nothing"])],
        ),
        case(
            "listen port zero cannot be the default protected port",
            lines(&["[server]", "listen = \"127.0.0.1:0\""]),
            vec![unplaced("filter.protected_ports", &["set protected_ports"])],
        ),
        case(
            "a relative pin path",
            lines(&["[filter]", "pin_path = \"bpf/hookwall\""]),
            vec![at("filter.pin_path", 2, &["absolute path"])],
        ),
    ]
}

fn allow_cases() -> Vec<Case> {
    vec![
        case(
            "a bad cidr is reported at its element",
            lines(&[
                "[allow]",
                "cidrs = [",
                "  \"198.51.100.7\",",
                "  \"2001:db8::/48\",",
                "  \"203.0.113.5/24\",",
                "]",
            ]),
            vec![exact(
                "allow.cidrs[2]",
                5,
                "203.0.113.5/24 has host bits set: write 203.0.113.0/24 for the network or \
                 203.0.113.5/32 for the one address",
            )],
        ),
        case(
            "an unknown preset lists the known ones",
            lines(&["[allow]", "presets = [\"mpesa\", \"mpsea\"]"]),
            vec![at(
                "allow.presets[1]",
                2,
                &[
                    "unknown preset \"mpsea\" (did you mean \"mpesa\"?)",
                    "mpesa, mpesa-extra",
                ],
            )],
        ),
        case(
            "an empty allowlist in enforce mode",
            lines(&["[filter]", "mode = \"enforce\"", "[allow]", "presets = []"]),
            vec![exact(
                "allow",
                3,
                "an empty allowlist in enforce mode would drop every packet to the protected \
                 ports: add presets, cidrs, files or sources, or set filter.mode = \"monitor\"",
            )],
        ),
        case(
            "an empty allowlist is reported beside other filter errors",
            lines(&[
                "[filter]",
                "interfaces = [\"eth7\"]",
                "[allow]",
                "presets = []",
            ]),
            vec![at("filter.interfaces[0]", 2, &[]), at("allow", 3, &[])],
        ),
        case(
            "an empty allowlist after bad entries reports only the entries",
            lines(&["[allow]", "presets = []", "cidrs = [\"nope\"]"]),
            vec![at("allow.cidrs[0]", 3, &["`nope` is not an IP address"])],
        ),
    ]
}

fn server_cases() -> Vec<Case> {
    let mut cases = vec![
        case(
            "server.limits out of range are each reported at their line",
            lines(&[
                "[server.limits]",
                "rate_per_second = 0",
                "rate_burst = -1",
                "max_connections = 0",
                "max_in_flight = 1000001",
                "body_limit_bytes = 0",
                "header_timeout_ms = 0",
                "body_timeout_ms = 300001",
            ]),
            vec![
                at(
                    "server.limits.rate_per_second",
                    2,
                    &["0 is out of range: use 1 to 1000000 (default 200)"],
                ),
                at("server.limits.rate_burst", 3, &[]),
                at("server.limits.max_connections", 4, &[]),
                at("server.limits.max_in_flight", 5, &[]),
                at("server.limits.body_limit_bytes", 6, &[]),
                at(
                    "server.limits.header_timeout_ms",
                    7,
                    &["use 100 to 300000 (default 10000)"],
                ),
                at("server.limits.body_timeout_ms", 8, &[]),
            ],
        ),
        case(
            "server.limits.body_limit_bytes above 64 MiB",
            lines(&["[server.limits]", "body_limit_bytes = 67108865"]),
            vec![at(
                "server.limits.body_limit_bytes",
                2,
                &["use 1 to 67108864 (default 1048576)"],
            )],
        ),
        case(
            "server.limits per-client caps above the global caps, ipv6_prefix under 48",
            lines(&[
                "[server.limits]",
                "max_connections = 10",
                "max_in_flight = 4",
                "max_connections_per_client = 11",
                "max_in_flight_per_client = 5",
                "ipv6_prefix = 32",
            ]),
            vec![
                at(
                    "server.limits.max_connections_per_client",
                    4,
                    &["11 is more than max_connections (10)"],
                ),
                at(
                    "server.limits.max_in_flight_per_client",
                    5,
                    &["5 is more than max_in_flight (4)", "use 1 to 4"],
                ),
                at(
                    "server.limits.ipv6_prefix",
                    6,
                    &["use 48 to 128 (default 64)"],
                ),
            ],
        ),
        case(
            "server.limits.max_in_flight x body_limit_bytes over the memory budget",
            lines(&[
                "[server.limits]",
                "body_limit_bytes = 67108864",
                "max_in_flight = 33",
            ]),
            vec![at(
                "server.limits.max_in_flight",
                3,
                &[
                    "max_in_flight (33) x body_limit_bytes (67108864) = 2214592512 bytes",
                    "server.limits.body_limit_bytes",
                ],
            )],
        ),
        case(
            "an unknown server.limits key",
            lines(&["[server.limits]", "rate_per_secnd = 5"]),
            vec![at(
                "server.limits.rate_per_secnd",
                2,
                &["did you mean `rate_per_second`?"],
            )],
        ),
        case(
            "a server.limits value of the wrong type",
            lines(&["[server.limits]", "body_timeout_ms = \"5s\""]),
            vec![at(
                "server.limits.body_timeout_ms",
                2,
                &["fix the value's type"],
            )],
        ),
        case(
            "a bad listen address says how to write one",
            lines(&["[server]", "listen = \"443\""]),
            vec![at("server.listen", 2, &["\"443\" is not an address:port"])],
        ),
        case(
            "tls self-signed and files conflict",
            lines(&["[server]", "tls = \"self-signed\"", "tls_key = \"/k.pem\""]),
            vec![at("server.tls", 2, &["remove tls_cert and tls_key"])],
        ),
        case(
            "a misspelled tls kind",
            lines(&["[server]", "tls = \"selfsigned\""]),
            vec![at("server.tls", 2, &["did you mean \"self-signed\"?"])],
        ),
        case(
            "a bad trusted proxy is reported at its element",
            lines(&[
                "[server]",
                "client_address = { header = \"x-forwarded-for\", trusted_proxies = [\"10.0.0.0/8\", \"10.1.2.3/16\"] }",
            ]),
            vec![at(
                "server.client_address.trusted_proxies[1]",
                2,
                &["host bits set"],
            )],
        ),
        case(
            "the removed server.trusted_proxies says what to write instead",
            lines(&["[server]", "trusted_proxies = [\"10.0.0.5\"]"]),
            vec![at(
                "server.trusted_proxies",
                2,
                &[
                    "no longer read",
                    "client_address = { header = \"x-forwarded-for\", trusted_proxies = [\"10.0.0.5\"] }",
                    "proxy_protocol = true",
                ],
            )],
        ),
        case(
            "a header name that is not a source of the client address",
            lines(&["[server]", "client_address = \"x-forwarded-for\""]),
            vec![at(
                "server.client_address",
                2,
                &["is not a source", "{ header = \"x-forwarded-for\""],
            )],
        ),
        case(
            "a misspelled header",
            lines(&[
                "[server]",
                "client_address = { header = \"x-forwarded-fro\", trusted_proxies = [\"10.0.0.5\"] }",
            ]),
            vec![at(
                "server.client_address.header",
                2,
                &["did you mean \"x-forwarded-for\"?"],
            )],
        ),
        case(
            "a header and the PROXY protocol at once",
            lines(&[
                "[server]",
                "client_address = { header = \"forwarded\", proxy_protocol = true, trusted_proxies = [\"10.0.0.5\"] }",
            ]),
            vec![at("server.client_address", 2, &["never both"])],
        ),
        case(
            "a header source without trusted proxies",
            lines(&["[server]", "client_address = { header = \"forwarded\" }"]),
            vec![at(
                "server.client_address",
                2,
                &["trusted_proxies is missing", "client_address = \"peer\""],
            )],
        ),
        case(
            "an empty trusted list",
            lines(&[
                "[server]",
                "client_address = { proxy_protocol = true, trusted_proxies = [] }",
            ]),
            vec![at(
                "server.client_address.trusted_proxies",
                2,
                &["the list is empty"],
            )],
        ),
        case(
            "proxy_protocol = false",
            lines(&[
                "[server]",
                "client_address = { proxy_protocol = false, trusted_proxies = [\"10.0.0.5\"] }",
            ]),
            vec![at(
                "server.client_address.proxy_protocol",
                2,
                &["client_address = \"peer\""],
            )],
        ),
        case(
            "an unknown key in the client address table",
            lines(&[
                "[server]",
                "client_address = { headers = \"forwarded\", trusted_proxies = [\"10.0.0.5\"] }",
            ]),
            vec![at(
                "server.client_address.headers",
                2,
                &["did you mean `header`?"],
            )],
        ),
    ];
    for (server, metrics) in [
        ("0.0.0.0:443", "0.0.0.0:443"),
        ("0.0.0.0:443", "127.0.0.1:443"),
        ("203.0.113.1:8443", "[::]:8443"),
        ("[::ffff:127.0.0.1]:9184", "127.0.0.1:9184"),
    ] {
        cases.push(case(
            format!("metrics {metrics} on the public listener {server}"),
            lines(&[
                "[server]",
                &format!("listen = \"{server}\""),
                "[metrics]",
                &format!("listen = \"{metrics}\""),
            ]),
            vec![at("metrics.listen", 4, &["public listener"])],
        ));
    }
    cases
}

fn store_and_duration_cases() -> Vec<Case> {
    vec![
        case(
            "store.retention below its minimum",
            lines(&["[store]", "retention = \"10m\""]),
            vec![at(
                "store.retention",
                2,
                &[
                    "\"10m\" is out of range: use at least 1h (default 30days)",
                    "duplicate",
                ],
            )],
        ),
        case(
            "store.dedupe_window not longer than store.retention",
            lines(&["[store]", "retention = \"30d\"", "dedupe_window = \"30d\""]),
            vec![at(
                "store.dedupe_window",
                3,
                &[
                    "30days is not longer than store.retention (30days)",
                    "tombstone",
                    "e.g. dedupe_window = \"90days\"",
                ],
            )],
        ),
        case(
            "store.dedupe_window below its minimum",
            lines(&["[store]", "dedupe_window = \"10m\""]),
            vec![at(
                "store.dedupe_window",
                2,
                &["\"10m\" is out of range: use at least 1h (default 90days)"],
            )],
        ),
        case(
            "store.retention within twice the longest signature tolerance",
            with(
                &["[store]", "retention = \"1h\""],
                &[
                    STRIPE_ROUTE.join("\n").as_str(),
                    "tolerance_seconds = 1800",
                    "[[route]]",
                    "path = \"/w\"",
                    "verify = \"standard-webhooks\"",
                    "secrets = [{ env = \"W\" }]",
                    "tolerance_seconds = 600",
                ],
            ),
            vec![at(
                "store.retention",
                2,
                &[
                    "1h must be more than twice the longest signature tolerance, 1800 s on \
                     route \"/s\" (so more than 1h)",
                    "raise store.retention (e.g. retention = \"30days\") or lower that \
                     route's tolerance_seconds",
                ],
            )],
        ),
        case(
            "a bad duration says why and how to write one",
            http_delivery(&["max_age = \"3 dayz\""]),
            vec![at(
                "delivery.max_age",
                4,
                &[
                    "\"3 dayz\" is not a duration: unknown time unit \"dayz\"",
                    "; write e.g. \"72h\" or \"3d\"",
                ],
            )],
        ),
        case(
            "an empty duration",
            http_delivery(&["timeout = \"\""]),
            vec![at("delivery.timeout", 4, &["\"\" is not a duration"])],
        ),
        case(
            "a duration of the wrong type says to write a unit",
            http_delivery(&["timeout = 10", "max_age = true", "backoff_max = 1.5"]),
            vec![
                at(
                    "delivery.timeout",
                    4,
                    &["10 has no unit: durations are strings with one, e.g. \"10s\""],
                ),
                at(
                    "delivery.max_age",
                    5,
                    &["this is a boolean, not a duration"],
                ),
                at(
                    "delivery.backoff_max",
                    6,
                    &["this is a number, not a duration"],
                ),
            ],
        ),
        // Unlike serde's type errors, these do not stop the other checks.
        case(
            "a duration of the wrong type does not hide other errors",
            lines(&[
                "[store]",
                "retention = 30",
                "[delivery]",
                "url = \"http://a\"",
                "secret = { env = \"S\" }",
                "max_attempts = 0",
            ]),
            vec![
                at("store.retention", 2, &[]),
                at("delivery.max_attempts", 6, &[]),
            ],
        ),
    ]
}

fn syntax_and_unknown_key_cases() -> Vec<Case> {
    vec![
        case(
            "a syntax error is reported with its line",
            lines(&["[filter]", "mode = \"enforce\"", "attach = auto"]),
            vec![keyless(3, &["fix the TOML syntax"])],
        ),
        case(
            "a wrong type is reported with its key and line",
            lines(&[
                "[filter]",
                "mode = \"monitor\"",
                "strict_fragments = \"yes\"",
            ]),
            vec![at("filter.strict_fragments", 3, &["expected a boolean"])],
        ),
        case(
            "an unknown key suggests the closest known one",
            lines(&["[filter]", "interface = [\"eth0\"]"]),
            vec![at("filter.interface", 2, &["did you mean `interfaces`?"])],
        ),
        case(
            "a key outside its section names the section",
            lines(&["mode = \"monitor\""]),
            vec![at("mode", 1, &["did you mean `filter.mode`?"])],
        ),
        case(
            "a key outside its sections names them all",
            lines(&["listen = \"0.0.0.0:443\""]),
            vec![at("listen", 1, &["`server.listen` or `metrics.listen`"])],
        ),
        case(
            "store.retention outside its section",
            lines(&["retention = \"30d\""]),
            vec![at("retention", 1, &["did you mean `store.retention`?"])],
        ),
        case(
            "an unknown key far from any lists the known ones",
            lines(&["[server]", "workers = 4"]),
            vec![at(
                "server.workers",
                2,
                &["listen, tls_cert, tls_key, tls, client_address"],
            )],
        ),
        case(
            "an unknown section lists the sections",
            lines(&["[logging]", "level = \"debug\""]),
            vec![at(
                "logging",
                1,
                &["filter, allow, server, store, metrics, route"],
            )],
        ),
        case(
            "an unknown key in a route",
            with(MPESA_ROUTE, &["secret = { env = \"X\" }"]),
            vec![at("route[0].secret", 5, &["did you mean `secrets`?"])],
        ),
        case(
            "a misspelled section",
            lines(&["[[routes]]", "path = \"/x\""]),
            vec![at("routes", 1, &["did you mean `route`?"])],
        ),
        case(
            "every unknown key is reported",
            lines(&[
                "[filter]",
                "mod = \"monitor\"",
                "attatch = \"auto\"",
                "[allow]",
                "cidr = []",
            ]),
            vec![
                at("filter.mod", 2, &[]),
                at("filter.attatch", 3, &[]),
                at("allow.cidr", 5, &[]),
            ],
        ),
        case(
            "every error in a file is reported in line order",
            lines(&[
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
            ]),
            vec![
                at("filter.interfaces[0]", 2, &[]),
                at("filter.mode", 3, &[]),
                at("filter.protected_ports[0]", 4, &[]),
                at("filter.pin_path", 5, &[]),
                at("filter.colour", 6, &[]),
                at("allow.presets[1]", 8, &[]),
                at("allow.cidrs[0]", 9, &[]),
                at("allow.files[0]", 10, &[]),
                at("metrics.listen", 14, &[]),
                at("route[0].path", 16, &[]),
                at("route[0].token", 18, &[]),
            ],
        ),
    ]
}

fn cases() -> Vec<Case> {
    [
        filter_cases(),
        allow_cases(),
        server_cases(),
        acme_cases(),
        store_and_duration_cases(),
        delivery_cases(),
        validation_cases(),
        route_cases(),
        syntax_and_unknown_key_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// What is wrong with `errors` for `case`; empty if nothing.
fn mismatches(case: &Case, errors: &[ConfigError]) -> Vec<String> {
    let mut wrong = Vec::new();
    if errors.len() != case.errors.len() {
        wrong.push(format!(
            "{} errors, expected {}",
            errors.len(),
            case.errors.len()
        ));
    }
    for (index, (error, expect)) in errors.iter().zip(&case.errors).enumerate() {
        if error.file != Path::new(FILE) {
            wrong.push(format!("error {index} is in {}", error.file.display()));
        }
        if error.key != expect.key {
            wrong.push(format!(
                "error {index} has key {:?}, expected {:?}",
                error.key, expect.key
            ));
        }
        if error.line != expect.line {
            wrong.push(format!(
                "error {index} is on line {:?}, expected {:?}",
                error.line, expect.line
            ));
        }
        for fragment in &expect.fragments {
            if !error.message.contains(fragment.as_str()) {
                wrong.push(format!("error {index} lacks {fragment:?}"));
            }
        }
        if let Some(message) = &expect.exact
            && &error.message != message
        {
            wrong.push(format!("error {index} is not exactly {message:?}"));
        }
    }
    // Display: one error per line, each "FILE:LINE: `key`: message" without the unknown parts.
    let shown = ConfigErrors(errors.to_vec()).to_string();
    for (index, (shown, error)) in shown.lines().zip(errors).enumerate() {
        let line = error.line.map(|l| format!(":{l}")).unwrap_or_default();
        let key = error
            .key
            .as_ref()
            .map(|k| format!(": `{k}`"))
            .unwrap_or_default();
        let expected = format!("{FILE}{line}{key}: {}", error.message);
        if shown != expected {
            wrong.push(format!("error {index} is shown as {shown:?}"));
        }
    }
    if shown.lines().count() != errors.len() {
        wrong.push("the errors are not shown one per line".to_owned());
    }
    for hidden in &case.hidden {
        if shown.contains(hidden.as_str()) {
            wrong.push(format!("{hidden:?} is shown"));
        }
    }
    wrong
}

#[test]
fn every_refused_config_gives_its_errors() {
    let cases = cases();
    let mut failures = Vec::new();
    let mut names = std::collections::HashSet::new();
    for case in &cases {
        if !names.insert(case.name.as_str()) {
            failures.push(format!("{}: the name is used twice", case.name));
        }
        let wrong = match parse_with(Path::new(FILE), &case.toml, &host()) {
            Ok(_) => vec!["accepted".to_owned()],
            Err(errors) => mismatches(case, &errors.0),
        };
        if !wrong.is_empty() {
            let got = match parse_with(Path::new(FILE), &case.toml, &host()) {
                Ok(_) => String::new(),
                Err(errors) => errors.to_string(),
            };
            failures.push(format!(
                "{}: {}\n  got:\n{}",
                case.name,
                wrong.join("; "),
                got.lines()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
