//! Who is calling: the client address a request is judged by (the `mpesa` allowlist, the rate
//! limit, the audit line's `client`).

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address: `peer` (IPv4-mapped IPv6 as IPv4) unless `peer` is a trusted proxy;
/// then the forwarding headers are walked from the right, through trusted hops only: the
/// `for=` parameters of `Forwarded` (RFC 7239) and the entries of `X-Forwarded-For`. A header
/// from an untrusted peer is never read; an unparsable hop (`unknown`, an obfuscated name,
/// garbage) ends the walk at the last trusted address.
///
/// A proxy sets one of the two headers, and a client can send the other: if both are present
/// and lead to different addresses, neither is believed and the answer is the proxy itself
/// (fail closed: a proxy's address is not on an `mpesa` allowlist).
#[must_use]
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let walk = |hops: Vec<Option<IpAddr>>| {
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(ip) = hop else {
                break;
            };
            client = ip.to_canonical();
            if !is_trusted(client) {
                break;
            }
        }
        client
    };
    let values = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let xff = values("x-forwarded-for");
    let forwarded = values("forwarded");
    let from_xff = (!xff.is_empty()).then(|| {
        walk(
            xff.iter()
                .flat_map(|v| v.split(','))
                .map(|hop| hop.trim().parse::<IpAddr>().ok())
                .collect(),
        )
    });
    let from_forwarded = (!forwarded.is_empty())
        .then(|| walk(forwarded.iter().flat_map(|v| forwarded_for(v)).collect()));
    match (from_xff, from_forwarded) {
        (Some(a), Some(b)) if a != b => peer,
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => peer,
    }
}

/// The `for=` address of each element of one `Forwarded` header value, in order; `None` for an
/// element whose `for` is missing, `unknown`, obfuscated or unparsable. RFC 7239 forms:
/// `for=192.0.2.60`, `for="192.0.2.60:4711"`, `for="[2001:db8::17]"`, `for="[2001:db8::17]:4711"`.
fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value
        .split(',')
        .map(|element| {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"'))
            })?;
            if let Some(rest) = node.strip_prefix('[') {
                let (v6, _port) = rest.split_once(']')?;
                return v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
            }
            // IPv4 with or without a port (a bare IPv6 is not valid here: it must be bracketed).
            let host = node.split_once(':').map_or(node, |(host, _port)| host);
            host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn untrusted_peer_header_changes_nothing() {
        let peer: IpAddr = "198.51.100.20".parse().unwrap();
        let headers = xff(&["192.0.2.10"]);
        assert_eq!(client_addr(peer, &headers, &[]), peer);
        assert_eq!(
            client_addr(peer, &headers, &nets(&["203.0.113.0/24"])),
            peer
        );
    }

    #[test]
    fn walks_trusted_hops_from_the_right() {
        let trusted = nets(&["203.0.113.0/24"]);
        let peer: IpAddr = "203.0.113.1".parse().unwrap();
        // The left-most entry is whatever the client claimed; only the hop the trusted proxy
        // saw counts.
        let headers = xff(&["192.0.2.99, 198.51.100.7", "203.0.113.2"]);
        assert_eq!(
            client_addr(peer, &headers, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // All hops trusted: the left-most one.
        let headers = xff(&["203.0.113.9"]);
        assert_eq!(
            client_addr(peer, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last trusted address.
        let headers = xff(&["192.0.2.5, nonsense"]);
        assert_eq!(client_addr(peer, &headers, &trusted), peer);
        // No header: the peer.
        assert_eq!(client_addr(peer, &HeaderMap::new(), &trusted), peer);
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("forwarded", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn reads_rfc7239_forwarded_through_trusted_hops() {
        let trusted = nets(&["203.0.113.0/24", "2001:db8:ff::/48"]);
        let peer: IpAddr = "203.0.113.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The RFC's own examples, quoted, with ports, IPv6 in brackets, other parameters.
        for (value, expect) in [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            (r#"for="192.0.2.43:47011""#, "192.0.2.43"),
            (r#"For="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::17"),
            (r#"for="[2001:db8:cafe::17]""#, "2001:db8:cafe::17"),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            // Walked from the right through trusted hops only.
            (
                "for=192.0.2.99, for=198.51.100.7, for=203.0.113.2",
                "198.51.100.7",
            ),
            (r#"for=192.0.2.99, for="[2001:db8:ff::5]""#, "192.0.2.99"),
            // Unknown, obfuscated or garbage: the walk stops at the last trusted address.
            ("for=unknown", "203.0.113.1"),
            ("for=_hidden, for=203.0.113.7", "203.0.113.7"),
            ("for=2001:db8::1", "203.0.113.1"),
            ("proto=https", "203.0.113.1"),
        ] {
            assert_eq!(
                client_addr(peer, &forwarded(&[value]), &trusted),
                ip(expect),
                "{value}"
            );
        }
        // Several header lines are one list, in order.
        assert_eq!(
            client_addr(
                peer,
                &forwarded(&["for=192.0.2.1", "for=198.51.100.3"]),
                &trusted
            ),
            ip("198.51.100.3")
        );
        // From an untrusted peer the header is never read.
        let stranger = ip("198.51.100.20");
        assert_eq!(
            client_addr(stranger, &forwarded(&["for=192.0.2.10"]), &trusted),
            stranger
        );
    }

    #[test]
    fn disagreeing_forwarding_headers_are_not_believed() {
        let trusted = nets(&["203.0.113.0/24"]);
        let peer: IpAddr = "203.0.113.1".parse().unwrap();
        let mut both = xff(&["198.51.100.7"]);
        both.append("forwarded", HeaderValue::from_static("for=192.0.2.10"));
        assert_eq!(client_addr(peer, &both, &trusted), peer);
        let mut agree = xff(&["198.51.100.7"]);
        agree.append("forwarded", HeaderValue::from_static("for=198.51.100.7"));
        assert_eq!(
            client_addr(peer, &agree, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn mapped_peers_are_ipv4() {
        let peer: IpAddr = "::ffff:192.0.2.10".parse().unwrap();
        assert_eq!(
            client_addr(peer, &HeaderMap::new(), &[]),
            "192.0.2.10".parse::<IpAddr>().unwrap()
        );
        let trusted = nets(&["203.0.113.0/24"]);
        let peer: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
        assert_eq!(
            client_addr(peer, &xff(&["::ffff:192.0.2.7"]), &trusted),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
