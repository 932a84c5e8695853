//! End-to-end: the receiver behind an L4 load balancer that speaks the PROXY protocol. A real
//! `hookwall run` with `server.client_address = { proxy_protocol = true, ... }`; the client
//! namespace plays the balancer, writing PROXY v1 and v2 headers by hand on a raw TCP
//! connection, then running TLS over it.
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_proxy`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hookwall_tests::{
    config::Route,
    https::{Reply, handshake, post_after},
    lab::{Lab, assert_reply, requests},
    netns::{ALLOWED_V4, ALLOWED_V6, PROTECTED_PORT, srv_addr},
};

const MPESA: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Zq8vX2pL9mW4rT7yK1sB6nD0fH5jG";
const JSON: (&str, &str) = ("Content-Type", "application/json");
const C2B_CONFIRMATION: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));
/// The v2 header's fixed first twelve bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY v1 header: `client` connected to `server`.
fn v1(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        server.ip(),
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// A PROXY v2 header (command PROXY, TCP): `client` connected to `server`, same family.
fn v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut addresses = Vec::new();
    let family = match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            addresses.extend_from_slice(&c.octets());
            addresses.extend_from_slice(&s.octets());
            0x11
        }
        (IpAddr::V6(c), IpAddr::V6(s)) => {
            addresses.extend_from_slice(&c.octets());
            addresses.extend_from_slice(&s.octets());
            0x21
        }
        _ => panic!("one family for both ends"),
    };
    addresses.extend_from_slice(&client.port().to_be_bytes());
    addresses.extend_from_slice(&server.port().to_be_bytes());
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x21); // version 2, command PROXY
    header.push(family);
    header.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
    header.extend_from_slice(&addresses);
    header
}

#[test]
fn a_trusted_balancer_s_proxy_header_names_the_client_and_a_stranger_s_is_refused() {
    // The balancer is 192.0.2.10: allowed (the kernel filter judges it) and trusted. The
    // client namespace's IPv6 address is allowed too, but not a trusted balancer.
    let mut lab = Lab::https("hw-proxy-");
    lab.spec.mode = "enforce".to_owned();
    let token = lab.write_secret("token", TOKEN);
    lab.spec.routes = vec![Route::mpesa(MPESA, &token)];
    lab.spec.client_address = Some(format!(
        r#"{{ proxy_protocol = true, trusted_proxies = ["{ALLOWED_V4}/32"] }}"#
    ));
    lab.write_config();
    let daemon = lab.start();
    let path = format!("{MPESA}/{TOKEN}");
    let balancer = IpAddr::V4(ALLOWED_V4);
    let stranger = IpAddr::V6(ALLOWED_V6);
    let post = |src: IpAddr, preamble: Vec<u8>, n: usize| -> std::io::Result<Reply> {
        let dst = srv_addr(src, PROTECTED_PORT);
        let client = std::sync::Arc::clone(lab.client());
        let body = String::from_utf8_lossy(C2B_CONFIRMATION)
            .replace("RKTQDM7W6S", &format!("RKTQDM7P{n:02}"))
            .into_bytes();
        let path = path.clone();
        lab.net
            .cli
            .run(move || post_after(&preamble, src, dst, &client, &path, &[JSON], &body))
    };
    let server = srv_addr(balancer, PROTECTED_PORT);
    let server6 = srv_addr(stranger, PROTECTED_PORT);
    let allowed_client = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 77), 40_000));
    let other_client = SocketAddr::from((Ipv4Addr::new(203, 0, 113, 9), 40_001));
    let allowed_client6 =
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x77), 40_002));
    // (header, expected status, what the case shows)
    let cases = [
        (
            v1(allowed_client, server),
            200,
            "v1 naming an allowed client",
        ),
        (
            v1(other_client, server),
            403,
            "v1 naming a client off the allowlist",
        ),
        (
            v2(allowed_client, server),
            200,
            "v2 naming an allowed client",
        ),
        (
            v2(other_client, server),
            403,
            "v2 naming a client off the allowlist",
        ),
        (
            v2(allowed_client6, server6),
            200,
            "v2 naming an allowed IPv6 client",
        ),
    ];
    for (n, (header, status, what)) in cases.into_iter().enumerate() {
        let reply = post(balancer, header, n).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_reply(&reply, status, what, &daemon);
    }
    assert_eq!(requests(&daemon, MPESA, "accepted"), 3.0);
    assert_eq!(requests(&daemon, MPESA, "forbidden_peer"), 2.0);
    let log = daemon.log();
    assert!(log.contains(r#""client":"192.0.2.77""#), "{log}");
    assert!(log.contains(r#""client":"203.0.113.9""#), "{log}");

    // Counted as the connection closes: waited for, then checked exactly.
    let refused = |reason: &str, expect: f64| {
        daemon.wait_metric(
            "hookwall_connections_refused_total",
            &[("reason", reason)],
            std::time::Duration::from_secs(5),
            |v| v >= expect,
        )
    };
    // A peer that is not a trusted balancer may not name a client: closed before TLS.
    for (n, header) in [v1(allowed_client, server6), v2(allowed_client6, server6)]
        .into_iter()
        .enumerate()
    {
        assert!(
            post(stranger, header, 10 + n).is_err(),
            "a stranger's PROXY header was served"
        );
    }
    assert_eq!(refused("proxy_header_untrusted", 2.0), 2.0);
    // Without a header it is its own client (allowed here: the kernel let it through).
    let reply = post(stranger, Vec::new(), 20).expect("a stranger without a header");
    assert_reply(&reply, 200, "an untrusted peer without a header", &daemon);
    // The trusted balancer must send one: a bare TLS handshake is refused, and so is garbage.
    let client = std::sync::Arc::clone(lab.client());
    let bare = lab
        .net
        .cli
        .run(move || handshake(balancer, server, &client));
    assert!(
        bare.is_err(),
        "a trusted balancer's connection without a header was served"
    );
    assert_eq!(refused("proxy_header_missing", 1.0), 1.0);
    let garbage = b"PROXY TCP4 not-an-address 192.0.2.1 1 8443\r\n".to_vec();
    assert!(
        post(balancer, garbage, 30).is_err(),
        "a malformed header was served"
    );
    assert_eq!(refused("proxy_header_malformed", 1.0), 1.0);
    let log = daemon.log();
    assert!(log.contains("proxy_header_untrusted"), "{log}");
    assert_eq!(lab.stored(), 4);
}
