use axum::http::HeaderValue;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn header(header: ForwardedHeader, trusted: &[&str]) -> ClientAddress {
    ClientAddress::Header {
        header,
        trusted_proxies: nets(trusted),
    }
}

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

const PROXY: &str = "203.0.113.1";
const TRUSTED: &[&str] = &["203.0.113.0/24", "2001:db8:ff::/48"];

fn xff(lines: &[&str]) -> Client {
    let map = headers(
        &lines
            .iter()
            .map(|v| ("x-forwarded-for", *v))
            .collect::<Vec<_>>(),
    );
    client_addr(
        &header(ForwardedHeader::XForwardedFor, TRUSTED),
        ip(PROXY),
        &map,
        None,
    )
}

fn fwd(lines: &[&str]) -> Client {
    let map = headers(&lines.iter().map(|v| ("forwarded", *v)).collect::<Vec<_>>());
    client_addr(
        &header(ForwardedHeader::Forwarded, TRUSTED),
        ip(PROXY),
        &map,
        None,
    )
}

fn known(s: &str) -> Client {
    Client::Known(ip(s))
}

fn unknown(why: Unknown) -> Client {
    Client::Unknown {
        proxy: ip(PROXY),
        why,
    }
}

#[test]
fn peer_source_ignores_every_header() {
    let map = headers(&[
        ("x-forwarded-for", "192.0.2.10"),
        ("forwarded", "for=192.0.2.10"),
    ]);
    let peer = ip("198.51.100.20");
    assert_eq!(
        client_addr(&ClientAddress::Peer, peer, &map, None),
        Client::Known(peer)
    );
}

#[test]
fn untrusted_peer_is_the_client_and_its_header_is_not_read() {
    let stranger = ip("198.51.100.20");
    for (source, name, value) in [
        (
            header(ForwardedHeader::XForwardedFor, TRUSTED),
            "x-forwarded-for",
            "192.0.2.10",
        ),
        (
            header(ForwardedHeader::Forwarded, TRUSTED),
            "forwarded",
            "for=192.0.2.10",
        ),
        // Even garbage from a stranger changes nothing: its header is never read.
        (
            header(ForwardedHeader::XForwardedFor, TRUSTED),
            "x-forwarded-for",
            "nonsense",
        ),
    ] {
        assert_eq!(
            client_addr(&source, stranger, &headers(&[(name, value)]), None),
            Client::Known(stranger),
            "{name}: {value}"
        );
    }
}

#[test]
fn only_the_configured_header_is_read_when_two_disagree() {
    // The proxy sets X-Forwarded-For; the caller adds Forwarded naming an allowed address
    // (nginx passes it through). Only the configured header counts, whatever the other says.
    let map = headers(&[
        ("x-forwarded-for", "198.51.100.7"),
        ("forwarded", "for=192.0.2.10"),
    ]);
    let source = header(ForwardedHeader::XForwardedFor, TRUSTED);
    assert_eq!(
        client_addr(&source, ip(PROXY), &map, None),
        known("198.51.100.7")
    );
    // And the other way round.
    let map = headers(&[
        ("x-forwarded-for", "192.0.2.10"),
        ("forwarded", "for=198.51.100.7"),
    ]);
    let source = header(ForwardedHeader::Forwarded, TRUSTED);
    assert_eq!(
        client_addr(&source, ip(PROXY), &map, None),
        known("198.51.100.7")
    );
    // The other header alone is not a client address: the configured one is missing.
    let map = headers(&[("forwarded", "for=192.0.2.10")]);
    let source = header(ForwardedHeader::XForwardedFor, TRUSTED);
    assert_eq!(
        client_addr(&source, ip(PROXY), &map, None),
        unknown(Unknown::Missing)
    );
}

#[test]
fn appended_spoofed_entries_are_skipped_from_the_right() {
    // The caller sent "192.0.2.10" (an allowed address), and a trusted-looking hop; the proxy
    // appended the address it saw. Only the right-most untrusted entry counts.
    assert_eq!(xff(&["192.0.2.10, 198.51.100.7"]), known("198.51.100.7"));
    assert_eq!(
        xff(&["192.0.2.10, 203.0.113.9, 198.51.100.7"]),
        known("198.51.100.7")
    );
    // Two header lines are one list, in order: the proxy's line is the last.
    assert_eq!(xff(&["192.0.2.10", "198.51.100.7"]), known("198.51.100.7"));
    // Trusted hops on the right are skipped.
    assert_eq!(
        xff(&["192.0.2.99, 198.51.100.7", "203.0.113.2"]),
        known("198.51.100.7")
    );
    assert_eq!(
        fwd(&["for=192.0.2.10, for=198.51.100.7, for=203.0.113.2"]),
        known("198.51.100.7")
    );
    assert_eq!(
        fwd(&[r#"for=192.0.2.99, for="[2001:db8:ff::5]""#]),
        known("192.0.2.99")
    );
    // Every entry trusted: the left-most, which the first trusted proxy saw.
    assert_eq!(xff(&["203.0.113.9"]), known("203.0.113.9"));
}

#[test]
fn malformed_or_missing_entries_never_become_the_proxy() {
    // Garbage right of the client: not the last trusted address (the proxy), but unknown.
    assert_eq!(xff(&["192.0.2.5, nonsense"]), unknown(Unknown::Malformed));
    assert_eq!(xff(&[""]), unknown(Unknown::Malformed));
    assert_eq!(xff(&["192.0.2.5:443"]), unknown(Unknown::Malformed));
    assert_eq!(xff(&[]), unknown(Unknown::Missing));
    assert_eq!(fwd(&["for=unknown"]), unknown(Unknown::Malformed));
    assert_eq!(fwd(&["for=_hidden"]), unknown(Unknown::Malformed));
    assert_eq!(fwd(&["for=2001:db8::1"]), unknown(Unknown::Malformed));
    assert_eq!(fwd(&["proto=https"]), unknown(Unknown::Malformed));
    assert_eq!(fwd(&[]), unknown(Unknown::Missing));
    // Left of the client, garbage is never reached.
    assert_eq!(
        fwd(&["for=_hidden, for=198.51.100.7"]),
        known("198.51.100.7")
    );
    assert_eq!(xff(&["nonsense, 198.51.100.7"]), known("198.51.100.7"));
    // A value that is not text is malformed too.
    let mut map = HeaderMap::new();
    map.append(
        "x-forwarded-for",
        HeaderValue::from_bytes(b"192.0.2.10\xff").unwrap(),
    );
    let source = header(ForwardedHeader::XForwardedFor, TRUSTED);
    assert_eq!(
        client_addr(&source, ip(PROXY), &map, None),
        unknown(Unknown::Malformed)
    );
}

#[test]
fn reads_rfc7239_forms() {
    for (value, expect) in [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
        (r#"for="192.0.2.43:47011""#, "192.0.2.43"),
        (r#"For="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::17"),
        (r#"for="[2001:db8:cafe::17]""#, "2001:db8:cafe::17"),
        ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
    ] {
        assert_eq!(fwd(&[value]), known(expect), "{value}");
    }
}

#[test]
fn proxy_protocol_takes_the_connection_s_source() {
    let source = ClientAddress::ProxyProtocol {
        trusted_proxies: nets(TRUSTED),
    };
    let map = headers(&[("x-forwarded-for", "192.0.2.10")]);
    let balancer = ip(PROXY);
    assert_eq!(
        client_addr(
            &source,
            balancer,
            &map,
            Some(ProxiedClient::Source("198.51.100.7:40000".parse().unwrap()))
        ),
        known("198.51.100.7")
    );
    assert_eq!(
        client_addr(&source, balancer, &map, Some(ProxiedClient::Local)),
        unknown(Unknown::ProxyLocal)
    );
    // A connection the layer let through without a PROXY header is an untrusted peer's.
    let stranger = ip("198.51.100.20");
    assert_eq!(
        client_addr(&source, stranger, &map, None),
        Client::Known(stranger)
    );
}

#[test]
fn mapped_addresses_are_ipv4() {
    let peer = ip("::ffff:192.0.2.10");
    assert_eq!(
        client_addr(&ClientAddress::Peer, peer, &HeaderMap::new(), None),
        known("192.0.2.10")
    );
    let source = header(ForwardedHeader::XForwardedFor, TRUSTED);
    assert_eq!(
        client_addr(
            &source,
            ip("::ffff:203.0.113.1"),
            &headers(&[("x-forwarded-for", "::ffff:192.0.2.7")]),
            None
        ),
        known("192.0.2.7")
    );
}
