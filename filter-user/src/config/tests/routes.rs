//! `[[route]]`: configs it accepts.

use super::*;

#[test]
fn every_route_kind_with_its_options() {
    let config = parse_ok(&lines(&[
        "[[route]]",
        "path = \"/hooks/github\"",
        "verify = \"github\"",
        "secrets = [{ file = \"secrets/github\" }, { env = \"GITHUB_OLD\" }, { credential = \"github.new\" }]",
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
            SecretRef::Credential("github.new".into()),
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
fn a_route_allow_mixes_presets_and_cidrs_and_keeps_their_sources() {
    let mut text = STRIPE_LINES.to_vec();
    text.push(
        "allow = [\"mpesa-extra\", \"203.0.113.0/24\", \"::ffff:198.51.100.7\", \"2001:db8::/48\"]",
    );
    let config = parse_ok(&lines(&text));
    let allow = config.routes[0].allow.as_ref().expect("allow is read");
    assert_eq!(
        allow.written,
        [
            "mpesa-extra",
            "203.0.113.0/24",
            "::ffff:198.51.100.7",
            "2001:db8::/48"
        ]
    );
    let nets: Vec<String> = allow
        .list
        .entries
        .iter()
        .map(|e| e.net.to_string())
        .collect();
    assert_eq!(
        nets,
        [
            "196.201.212.128/32",
            "196.201.212.132/32",
            "203.0.113.0/24",
            "198.51.100.7/32",
            "2001:db8::/48"
        ],
        "a mapped address is read as IPv4"
    );
    assert_eq!(allow.list.entries[2].source, Source::Config { line: 5 });
    assert!(matches!(
        &allow.list.entries[0].source,
        Source::Preset { name, .. } if name == "mpesa-extra"
    ));
    assert!(allow.list.contains(ip("203.0.113.9")));
    assert!(
        !allow.list.contains(ip("196.201.214.200")),
        "only the presets named"
    );
    // Without the key, a route has none (the receiver applies the kind's default).
    assert_eq!(parse_ok(&lines(MPESA_ROUTE)).routes[0].allow, None);
    assert_eq!(parse_ok(&lines(STRIPE_LINES)).routes[0].allow, None);
}

const STRIPE_LINES: &[&str] = &[
    "[[route]]",
    "path = \"/hooks/stripe\"",
    "verify = \"stripe\"",
    "secrets = [{ env = \"S\" }]",
];

#[test]
fn route_allow_entries_the_filter_would_drop_are_warned_about() {
    // Line 2: [allow] holds mpesa and 203.0.113.0/25 only.
    let mut text = vec!["[allow]", "cidrs = [\"203.0.113.0/25\"]"];
    text.extend(STRIPE_LINES);
    text.push("allow = [\"mpesa\", \"203.0.113.0/24\", \"198.51.100.7\", \"203.0.113.64/26\"]");
    let config = parse_ok(&lines(&text));
    let gaps = config.route_allow_gaps();
    let shown: Vec<String> = gaps.iter().map(ToString::to_string).collect();
    assert_eq!(gaps.len(), 2, "{shown:#?}");
    assert_eq!(gaps[0].net.to_string(), "203.0.113.0/24");
    assert!(gaps[0].partly);
    assert_eq!(gaps[1].net.to_string(), "198.51.100.7/32");
    assert!(!gaps[1].partly);
    assert_eq!(
        shown[1],
        "route \"/hooks/stripe\" allows 198.51.100.7/32 (config line 7), which is not on the \
         allowlist: in enforce mode the filter drops those sources on the protected port before \
         the route sees them; add it to [allow] (presets, cidrs or files) or remove it from the \
         route's allow"
    );
    assert!(
        shown[0].contains("is only partly on the allowlist"),
        "{}",
        shown[0]
    );

    // The filter does not judge the client: monitor mode, a port it does not protect, a proxy.
    for extra in [
        &["[filter]", "mode = \"monitor\""][..],
        &["[filter]", "protected_ports = [8443]"],
        &[
            "[server]",
            "client_address = { header = \"x-forwarded-for\", trusted_proxies = [\"203.0.113.1\"] }",
        ],
    ] {
        let mut text = extra.to_vec();
        text.extend(["[allow]", "cidrs = [\"203.0.113.0/25\"]"]);
        text.extend(STRIPE_LINES);
        text.push("allow = [\"198.51.100.7\"]");
        let config = parse_ok(&lines(&text));
        assert_eq!(config.route_allow_gaps(), [], "{extra:?}");
    }
    // The same route where the filter judges it is warned about.
    let mut text = vec!["[allow]", "cidrs = [\"203.0.113.0/25\"]"];
    text.extend(STRIPE_LINES);
    text.push("allow = [\"198.51.100.7\"]");
    assert_eq!(parse_ok(&lines(&text)).route_allow_gaps().len(), 1);
}
