//! `[server]`, `[server.limits]` and `[metrics]`: configs they accept.

use super::*;

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
fn client_address_sources_are_parsed() {
    assert_eq!(parse_ok("").server.client_address, ClientAddress::Peer);
    let config = parse_ok(&lines(&["[server]", "client_address = \"peer\""]));
    assert_eq!(config.server.client_address, ClientAddress::Peer);
    let nets =
        |list: &[&str]| -> Vec<ipnet::IpNet> { list.iter().map(|n| n.parse().unwrap()).collect() };
    let config = parse_ok(&lines(&[
        "[server]",
        "client_address = { header = \"x-forwarded-for\", trusted_proxies = [\"10.0.0.0/8\", \"::1\"] }",
    ]));
    assert_eq!(
        config.server.client_address,
        ClientAddress::Header {
            header: ForwardedHeader::XForwardedFor,
            trusted_proxies: nets(&["10.0.0.0/8", "::1/128"]),
        }
    );
    assert!(
        config
            .render_check()
            .contains("x-forwarded-for from trusted proxies 10.0.0.0/8, ::1/128"),
        "{}",
        config.render_check()
    );
    let config = parse_ok(&lines(&[
        "[server.client_address]",
        "header = \"forwarded\"",
        "trusted_proxies = [\"203.0.113.5\"]",
    ]));
    assert_eq!(
        config.server.client_address,
        ClientAddress::Header {
            header: ForwardedHeader::Forwarded,
            trusted_proxies: nets(&["203.0.113.5/32"]),
        }
    );
    let config = parse_ok(&lines(&[
        "[server]",
        "client_address = { proxy_protocol = true, trusted_proxies = [\"203.0.113.0/28\"] }",
    ]));
    assert_eq!(
        config.server.client_address,
        ClientAddress::ProxyProtocol {
            trusted_proxies: nets(&["203.0.113.0/28"]),
        }
    );
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
            max_in_flight_per_client: 64,
            max_connections_per_client: 256,
            ipv6_prefix: 64,
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
            max_in_flight_per_client: 4,
            max_connections_per_client: 10,
            ipv6_prefix: 64,
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
fn metrics_may_share_the_port_or_the_address_but_not_both() {
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
fn an_acme_certificate_is_configured_with_its_defaults() {
    let config = parse_ok(&lines(&[
        "[server]",
        "tls = \"acme\"",
        "[server.acme]",
        "domains = [\"Hooks.Example.com\", \"pay.example.com.\"]",
    ]));
    assert_eq!(
        config.server.tls,
        Tls::Acme(AcmeConfig {
            domains: vec!["hooks.example.com".into(), "pay.example.com".into()],
            contact: None,
            directory: DEFAULT_ACME_DIRECTORY.into(),
            directory_ca: None,
            cache: DEFAULT_ACME_CACHE.into(),
            http_listen: DEFAULT_ACME_HTTP_LISTEN,
        })
    );
    let config = parse_ok(&lines(&[
        "[server]",
        "tls = \"acme\"",
        "[server.acme]",
        "domains = [\"hooks.example.com\"]",
        "contact = \"mailto:ops@example.com\"",
        "directory = \"https://acme.example.com/dir\"",
        "directory_ca = \"test-ca.pem\"",
        "cache = \"acme\"",
        "http_listen = \"[::]:8080\"",
    ]));
    let Tls::Acme(acme) = &config.server.tls else {
        panic!("not ACME: {:?}", config.server.tls)
    };
    assert_eq!(acme.contact.as_deref(), Some("mailto:ops@example.com"));
    assert_eq!(acme.directory, "https://acme.example.com/dir");
    assert_eq!(
        acme.directory_ca.as_deref(),
        Some(Path::new("/etc/hookwall/test-ca.pem"))
    );
    assert_eq!(acme.cache, Path::new("/etc/hookwall/acme"));
    assert_eq!(acme.http_listen, "[::]:8080".parse().unwrap());
    let check = config.render_check();
    assert!(
        check.contains("acme: hooks.example.com from https://acme.example.com/dir")
            && check.contains("[::]:8080 (not protected by the filter)"),
        "{check}"
    );
}
