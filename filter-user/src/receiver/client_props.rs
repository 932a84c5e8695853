//! Property tests of `client_addr`'s contract under a header source, whatever algorithm walks the
//! header: it never panics; it returns the peer (IPv4-mapped IPv6 as IPv4), an address written in
//! the configured header (never in the other one), or "unknown" for a trusted proxy; and it never
//! reads a header when the peer is not a trusted proxy.
//!
//! "Written in a header" means: some run of the header's text made of the characters an address
//! is written with (hex digits, `.`, `:`), or a `:`-separated piece of such a run (an IPv4 address
//! with its port), parses to it. Only `client_addr`'s signature is relied on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use proptest::{prelude::*, sample::Index};

use super::client::{Client, client_addr};
use crate::{
    config::{ClientAddress, ForwardedHeader},
    verify::props::config,
};

/// The forwarding headers a client may send.
const HEADERS: [&str; 2] = ["forwarded", "x-forwarded-for"];

/// Every address written in `text`, as the module doc defines it, canonical (mapped as IPv4).
fn written(text: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for run in text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')) {
        found.extend(run.parse::<IpAddr>().ok());
        found.extend(
            run.split(':')
                .filter_map(|piece| piece.parse::<IpAddr>().ok()),
        );
    }
    found.iter().map(|ip| ip.to_canonical()).collect()
}

/// Addresses from the documentation ranges, some IPv4-mapped, and a few anywhere.
fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        3 => (prop::sample::select(&[[192, 0, 2], [198, 51, 100], [203, 0, 113]][..]), any::<u8>())
            .prop_map(|([a, b, c], d)| IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
        2 => (any::<u16>(), any::<u16>())
            .prop_map(|(x, y)| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, x, 0, 0, 0, 0, y))),
        1 => (any::<u8>()).prop_map(|d| IpAddr::V6(Ipv4Addr::new(203, 0, 113, d).to_ipv6_mapped())),
        1 => any::<IpAddr>(),
    ]
}

/// One hop as a client or a proxy may write it, in either header's syntax or in neither.
fn hop() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => address().prop_map(|ip| ip.to_string()),
        2 => (address(), any::<u16>(), any::<bool>()).prop_map(|(ip, port, quoted)| {
            let node = match ip {
                IpAddr::V4(v4) => format!("{v4}:{port}"),
                IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            };
            if quoted { format!("for=\"{node}\"") } else { format!("for={node}") }
        }),
        2 => address().prop_map(|ip| match ip {
            IpAddr::V4(v4) => format!("for={v4};proto=https;by=203.0.113.43"),
            IpAddr::V6(v6) => format!("For=\"[{v6}]\""),
        }),
        1 => address().prop_map(|ip| format!("for={ip}")),
        1 => prop::sample::select(&[
            "unknown", "for=unknown", "for=_hidden", "for=", "for=\"", "for=\"[", "for=[::1",
            "proto=http", ";;", "=", "[]", "\"\"", "999.1.1.1", "1.2.3", "::ffff:", "for=1.2.3.4:",
            "for=\"1.2.3.4\":x", "  ", "",
        ][..]).prop_map(str::to_owned),
        1 => "[ -~]{0,16}",
        1 => "\\PC{0,6}",
    ]
}

/// Header lines: each a header name and a list of hops joined by commas (or other separators).
fn lines() -> impl Strategy<Value = Vec<(usize, String)>> {
    prop::collection::vec(
        (
            0..HEADERS.len(),
            prop::collection::vec(hop(), 0..6),
            prop::sample::select(&[",", ", ", " , ", ";", ",,"][..]),
        )
            .prop_map(|(name, hops, separator)| (name, hops.join(separator))),
        0..5,
    )
}

/// Header lines as a map; a line HTTP could not carry (a control character) is made
/// readable, and one with bytes beyond ASCII is kept, as `HeaderValue` allows.
fn header_map(lines: &[(usize, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        let clean: Vec<u8> = value
            .bytes()
            .map(|b| {
                if (b < 0x20 && b != b'\t') || b == 0x7f {
                    b'?'
                } else {
                    b
                }
            })
            .collect();
        map.append(
            HeaderName::from_static(HEADERS[*name]),
            HeaderValue::from_bytes(&clean).expect("cleaned"),
        );
    }
    map
}

/// Trusted proxy ranges: some around the peer, some elsewhere, sometimes everything.
fn trusted(peer: IpAddr) -> impl Strategy<Value = Vec<IpNet>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0u8..=32).prop_map(move |len| {
                IpNet::new(peer.to_canonical(), len.min(if peer.to_canonical().is_ipv4() { 32 } else { 128 }))
                    .expect("a valid length")
                    .trunc()
            }),
            2 => (address(), any::<u8>()).prop_map(|(ip, len)| {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                IpNet::new(ip, len % (max + 1)).expect("a valid length").trunc()
            }),
            1 => prop::sample::select(&["0.0.0.0/0", "::/0", "203.0.113.0/24", "2001:db8::/32"][..])
                .prop_map(|net| net.parse().expect("a network")),
        ],
        0..4,
    )
}

fn case() -> impl Strategy<Value = (IpAddr, Vec<IpNet>, Vec<(usize, String)>)> {
    address().prop_flat_map(|peer| (Just(peer), trusted(peer), lines()))
}

/// The source with `header` and `trusted` proxies.
fn source(header: bool, trusted: &[IpNet]) -> ClientAddress {
    ClientAddress::Header {
        header: if header {
            ForwardedHeader::Forwarded
        } else {
            ForwardedHeader::XForwardedFor
        },
        trusted_proxies: trusted.to_vec(),
    }
}

/// The contract for one call, with the header `forwarded` (else `x-forwarded-for`) configured.
fn check_contract(
    peer: IpAddr,
    trusted: &[IpNet],
    forwarded: bool,
    map: &HeaderMap,
) -> Result<(), TestCaseError> {
    let got = client_addr(&source(forwarded, trusted), peer, map, None);
    let peer = peer.to_canonical();
    let is_trusted = trusted.iter().any(|net| net.contains(&peer));
    let ip = match got {
        Client::Known(ip) if ip == peer => return Ok(()),
        Client::Known(ip) => ip,
        Client::Unknown { proxy, .. } => {
            prop_assert_eq!(proxy, peer, "an unknown client is counted under the peer");
            prop_assert!(
                is_trusted,
                "unknown from the headers of an untrusted peer {}",
                peer
            );
            return Ok(());
        }
    };
    let configured = HEADERS[usize::from(!forwarded)];
    let text: String = map
        .get_all(configured)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned() + "\n")
        .collect();
    prop_assert!(
        written(&text).contains(&ip),
        "{ip} is neither the peer {peer} nor written in {configured}: {text:?}"
    );
    prop_assert!(
        is_trusted,
        "{ip} from the headers of an untrusted peer {peer}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn the_client_is_the_peer_or_an_address_written_in_the_header(
        (peer, trusted, lines) in case(),
        forwarded in any::<bool>(),
    ) {
        check_contract(peer, &trusted, forwarded, &header_map(&lines))?;
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_never_read(
        (peer, _, lines) in case(),
        others in prop::collection::vec(
            prop::sample::select(&["192.0.2.0/24", "2001:db8::/48", "10.0.0.0/8"][..]),
            0..3,
        ),
    ) {
        let trusted: Vec<IpNet> = others
            .iter()
            .map(|net| net.parse::<IpNet>().expect("a network"))
            .filter(|net| !net.contains(&peer.to_canonical()))
            .collect();
        for forwarded in [false, true] {
            prop_assert_eq!(
                client_addr(&source(forwarded, &trusted), peer, &header_map(&lines), None),
                Client::Known(peer.to_canonical())
            );
        }
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// Thousands of hops, every one through trusted proxies or not: the contract holds.
    #[test]
    fn the_contract_holds_for_huge_headers(
        peer in address(),
        count in 1usize..5_000,
        hop in hop(),
        garbage_at in proptest::option::of(any::<Index>()),
        everything_trusted in any::<bool>(),
        forwarded in any::<bool>(),
    ) {
        let trusted: Vec<IpNet> = if everything_trusted {
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
        } else {
            vec![IpNet::from(peer.to_canonical())]
        };
        let garbage_at = garbage_at.map(|index| index.index(count));
        let hops: Vec<String> = (0..count)
            .map(|n| if Some(n) == garbage_at { "unknown".to_owned() } else if n % 2 == 0 { hop.clone() } else { format!("203.0.113.{}", n % 256) })
            .collect();
        let lines = [(1, hops.join(", ")), (0, hops.iter().map(|hop| format!("for={hop}")).collect::<Vec<_>>().join(", "))];
        check_contract(peer, &trusted, forwarded, &header_map(&lines))?;
    }
}

#[test]
fn written_addresses_are_found_in_either_syntax() {
    let text = r#"for="[2001:db8::17]:4711";proto=https, for=192.0.2.43:47011, 198.51.100.7, ::ffff:203.0.113.9"#;
    let found = written(text);
    for ip in ["2001:db8::17", "192.0.2.43", "198.51.100.7", "203.0.113.9"] {
        assert!(found.contains(&ip.parse().unwrap()), "{ip}");
    }
    assert!(!found.contains(&"192.0.2.4".parse().unwrap()));
}
