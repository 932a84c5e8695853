//! Table-driven tests of the loaded XDP program: crafted frames, each with the XDP action and the
//! exact counter it must produce, run through BPF_PROG_TEST_RUN with [`TestFilter::judge`].
//!
//! Every row is also checked against the reference model ([`model::classify`]), so the table
//! pins down the model as well as the kernel. Each test loads the program once and switches
//! state between groups with `apply()`.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use aya_obj::programs::XdpAttachType;
use filter_common::Counter;
use hookwall::filter::Desired;
use hookwall_tests::{
    TestFilter, XDP_DROP, XDP_PASS,
    frames::{Ext, Ipv4, Ipv6, L3, L4, Packet, TPID_8021AD, TPID_8021Q, hex, proto, truncated},
    model, settings,
};
use ipnet::{Ipv4Net, Ipv6Net};

/// Allowed by the base allowlist (203.0.113.0/24).
const A4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// Not allowed.
const D4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// Allowed by the base allowlist (2001:db8:1::/48).
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7);
/// Not allowed.
const D6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 7);
/// The protected port of the base state.
const HTTPS: u16 = 443;

const PASS: u32 = XDP_PASS;
const DROP: u32 = XDP_DROP;

/// One crafted frame and what the program must do with it.
struct Row {
    name: String,
    frame: Vec<u8>,
    action: u32,
    counter: Counter,
}

/// A table under construction.
#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn row(&mut self, name: &str, frame: Vec<u8>, action: u32, counter: Counter) {
        self.0.push(Row {
            name: name.to_owned(),
            frame,
            action,
            counter,
        });
    }
}

fn base(enforce: bool, strict: bool) -> Desired {
    Desired {
        v4: vec!["203.0.113.0/24".parse().unwrap()],
        v6: vec!["2001:db8:1::/48".parse().unwrap()],
        ports: vec![HTTPS],
        settings: settings(enforce, strict),
    }
}

/// Applies `desired`, runs every row, and fails listing every row the kernel or the model got
/// wrong. Returns the number of rows checked.
fn check(tf: &mut TestFilter, desired: &Desired, table: &Table) -> usize {
    tf.filter()
        .apply(desired)
        .unwrap_or_else(|e| panic!("applying {desired:?}: {e}"));
    let mut failures = Vec::new();
    for row in &table.0 {
        let (action, counter) = tf.judge(&row.frame);
        let modelled = model::classify(
            &row.frame,
            &desired.v4,
            &desired.v6,
            &desired.ports,
            desired.settings,
        );
        if (action, counter) != (row.action, row.counter) {
            failures.push(format!(
                "{}: kernel gave (action {action}, {counter:?}), table wants (action {}, {:?})\n  frame ({} bytes): {}",
                row.name,
                row.action,
                row.counter,
                row.frame.len(),
                hex(&row.frame)
            ));
        }
        if modelled != row.counter {
            failures.push(format!(
                "{}: model gave {modelled:?}, table wants {:?}\n  frame ({} bytes): {}",
                row.name,
                row.counter,
                row.frame.len(),
                hex(&row.frame)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) in {} rows under {desired:?}:\n{}",
        failures.len(),
        table.0.len(),
        failures.join("\n")
    );
    table.0.len()
}

fn v6x(src: Ipv6Addr, ext: &[Ext], l4: L4) -> Packet {
    Ipv6 {
        ext: ext.to_vec(),
        ..Ipv6::new(src, l4)
    }
    .into()
}

fn v4frag(src: Ipv4Addr, l4: L4, offset: u16, more: bool) -> Packet {
    Ipv4 {
        frag_offset: offset,
        more_fragments: more,
        ..Ipv4::new(src, l4)
    }
    .into()
}

fn v4opts(src: Ipv4Addr, options: &[u8], l4: L4) -> Packet {
    Ipv4 {
        options: options.to_vec(),
        ..Ipv4::new(src, l4)
    }
    .into()
}

/// Payload bytes of a non-first fragment that would read as TCP/UDP port `port` at +2 if the
/// program wrongly parsed a transport header in it.
fn middle_of_payload(port: u16) -> Vec<u8> {
    let mut b = vec![0x9c, 0x40];
    b.extend_from_slice(&port.to_be_bytes());
    b.resize(24, 0xab);
    b
}

/// Eight extension headers of every kind and several sizes.
fn eight_ext() -> Vec<Ext> {
    vec![
        Ext::HopByHop { len: 0 },
        Ext::DestOpts { len: 1 },
        Ext::Routing { len: 2 },
        Ext::Fragment {
            offset: 0,
            more: false,
        },
        Ext::Ah { len: 1 },
        Ext::Other {
            protocol: proto::MH,
            len: 0,
        },
        Ext::Other {
            protocol: proto::HIP,
            len: 1,
        },
        Ext::Other {
            protocol: proto::SHIM6,
            len: 0,
        },
    ]
}

#[test]
#[rustfmt::skip]
fn every_header_path_reaches_the_right_verdict() {
    let desired = base(true, false);
    let mut tf = TestFilter::new(&desired);
    let mut t = Table::default();
    use Counter::*;

    // Plain IPv4 / IPv6, TCP / UDP.
    t.row("ipv4 tcp allowed source to 443", Packet::v4(A4, L4::tcp(HTTPS)).to_bytes(), PASS, PassAllowed);
    t.row("ipv4 tcp other source to 443", Packet::v4(D4, L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv4 udp allowed source to 443", Packet::v4(A4, L4::udp(HTTPS)).to_bytes(), PASS, PassAllowed);
    t.row("ipv4 udp other source to 443", Packet::v4(D4, L4::udp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv4 tcp other source to 80", Packet::v4(D4, L4::tcp(80)).to_bytes(), PASS, PassUnprotected);
    t.row("ipv4 tcp to 443 as source port, 80 as destination", Packet::v4(D4, L4::Tcp { src_port: HTTPS, dst_port: 80 }).to_bytes(), PASS, PassUnprotected);
    t.row("ipv4 icmp other source", Packet::v4(D4, L4::raw(proto::ICMP, &[8, 0, 0, 0, 1, 0xbb, 0, 1])).to_bytes(), PASS, PassUnprotected);
    t.row("ipv6 tcp allowed source to 443", Packet::v6(A6, L4::tcp(HTTPS)).to_bytes(), PASS, PassAllowed);
    t.row("ipv6 tcp other source to 443", Packet::v6(D6, L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv6 udp allowed source to 443", Packet::v6(A6, L4::udp(HTTPS)).to_bytes(), PASS, PassAllowed);
    t.row("ipv6 udp other source to 443", Packet::v6(D6, L4::udp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv6 udp other source to 80", Packet::v6(D6, L4::udp(80)).to_bytes(), PASS, PassUnprotected);
    t.row("ipv6 icmpv6 other source", Packet::v6(D6, L4::raw(proto::ICMPV6, &[128, 0, 0, 0, 1, 0xbb, 0, 1])).to_bytes(), PASS, PassUnprotected);
    t.row("ipv6 esp other source", Packet::v6(D6, L4::raw(proto::ESP, &[0, 0, 1, 0xbb, 0, 0, 0, 1])).to_bytes(), PASS, PassUnprotected);
    t.row("ipv6 no next header", Packet::v6(D6, L4::raw(proto::NONE, &[])).to_bytes(), PASS, PassUnprotected);
    t.row("arp", Packet::arp().to_bytes(), PASS, PassUnprotected);
    t.row("ipv4-mapped ipv6 source is judged as ipv6", Packet::v6(A4.to_ipv6_mapped(), L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);

    // VLAN tags.
    t.row("802.1q tag, ipv4 other source", Packet::v4(D4, L4::tcp(HTTPS)).with_vlan(TPID_8021Q).to_bytes(), DROP, DropNotAllowed);
    t.row("802.1q tag, ipv4 allowed", Packet::v4(A4, L4::tcp(HTTPS)).with_vlan(TPID_8021Q).to_bytes(), PASS, PassAllowed);
    t.row("802.1ad tag, ipv4 allowed", Packet::v4(A4, L4::udp(HTTPS)).with_vlan(TPID_8021AD).to_bytes(), PASS, PassAllowed);
    t.row("802.1ad tag, ipv6 other source", Packet::v6(D6, L4::udp(HTTPS)).with_vlan(TPID_8021AD).to_bytes(), DROP, DropNotAllowed);
    t.row("802.1ad + 802.1q tags, ipv6 other source", Packet::v6(D6, L4::tcp(HTTPS)).with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).to_bytes(), DROP, DropNotAllowed);
    t.row("802.1ad + 802.1q tags, ipv6 allowed", Packet::v6(A6, L4::tcp(HTTPS)).with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).to_bytes(), PASS, PassAllowed);
    t.row("802.1q + 802.1q tags, ipv4 other source", Packet::v4(D4, L4::tcp(HTTPS)).with_vlan(TPID_8021Q).with_vlan(TPID_8021Q).to_bytes(), DROP, DropNotAllowed);
    t.row("802.1q + 802.1ad tags, ipv4 other source to 80", Packet::v4(D4, L4::tcp(80)).with_vlan(TPID_8021Q).with_vlan(TPID_8021AD).to_bytes(), PASS, PassUnprotected);
    t.row("two tags, arp", Packet::arp().with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).to_bytes(), PASS, PassUnprotected);
    t.row("three tags, ipv4 allowed is malformed", Packet::v4(A4, L4::tcp(HTTPS)).with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).with_vlan(TPID_8021Q).to_bytes(), DROP, DropMalformed);
    t.row("three tags, arp is malformed", Packet::arp().with_vlan(TPID_8021Q).with_vlan(TPID_8021Q).with_vlan(TPID_8021AD).to_bytes(), DROP, DropMalformed);
    t.row("vlan tag with an unknown inner ethertype", { let mut p = Packet::arp().with_vlan(TPID_8021Q); p.l3 = L3::Other { ether_type: 0x9100, payload: vec![0x81, 0, 0, 1, 8, 0] }; p.to_bytes() }, PASS, PassUnprotected);

    // IPv4 header checks and options.
    t.row("ipv4 options 4 bytes, other source", v4opts(D4, &[1, 1, 1, 0], L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv4 options 4 bytes, other source to 80", v4opts(D4, &[1, 1, 1, 0], L4::tcp(80)).to_bytes(), PASS, PassUnprotected);
    t.row("ipv4 options 40 bytes (ihl 15), allowed", v4opts(A4, &[1; 40], L4::tcp(HTTPS)).to_bytes(), PASS, PassAllowed);
    t.row("ipv4 options 40 bytes (ihl 15), other source", v4opts(D4, &[1; 40], L4::udp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv4 options 40 bytes, other source to 80", v4opts(D4, &[1; 40], L4::udp(80)).to_bytes(), PASS, PassUnprotected);
    t.row("ipv4 options with a 443 inside, to 80", v4opts(D4, &[1, 1, 0x01, 0xbb, 0x01, 0xbb, 0, 0], L4::tcp(80)).to_bytes(), PASS, PassUnprotected);
    t.row("ipv4 options, 802.1ad + 802.1q, other source", v4opts(D4, &[1; 12], L4::tcp(HTTPS)).with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).to_bytes(), DROP, DropNotAllowed);
    let mut f = Packet::v4(A4, L4::tcp(HTTPS)).to_bytes();
    f[14] = 0x65;
    t.row("ipv4 ethertype with version 6, allowed", f, DROP, DropMalformed);
    let mut f = Packet::v4(A4, L4::tcp(HTTPS)).to_bytes();
    f[14] = 0x44;
    t.row("ipv4 ihl 4, allowed", f, DROP, DropMalformed);
    let mut f = Packet::v4(A4, L4::tcp(80)).to_bytes();
    f[14] = 0x40;
    t.row("ipv4 ihl 0, to 80", f, DROP, DropMalformed);
    let mut f = Packet::v6(A6, L4::tcp(HTTPS)).to_bytes();
    f[14] = 0x45;
    t.row("ipv6 ethertype with version 4, allowed", f, DROP, DropMalformed);

    // Each IPv6 extension header kind, with a body the program must skip.
    let other = |protocol| Ext::Other { protocol, len: 2 };
    let kinds = [
        ("hop-by-hop", Ext::HopByHop { len: 2 }),
        ("routing", Ext::Routing { len: 2 }),
        ("destination options", Ext::DestOpts { len: 2 }),
        ("atomic fragment", Ext::Fragment { offset: 0, more: false }),
        ("ah", Ext::Ah { len: 4 }),
        ("mobility", other(proto::MH)),
        ("hip", other(proto::HIP)),
        ("shim6", other(proto::SHIM6)),
    ];
    for (name, ext) in kinds {
        t.row(&format!("ipv6 {name}, tcp other source to 443"), v6x(D6, &[ext], L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
        t.row(&format!("ipv6 {name}, udp allowed to 443"), v6x(A6, &[ext], L4::udp(HTTPS)).to_bytes(), PASS, PassAllowed);
        t.row(&format!("ipv6 {name}, tcp other source to 80"), v6x(D6, &[ext], L4::tcp(80)).to_bytes(), PASS, PassUnprotected);
    }
    t.row("ipv6 ah then destination options, other source", v6x(D6, &[Ext::Ah { len: 1 }, Ext::DestOpts { len: 0 }], L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv6 two tags + hop-by-hop + routing, other source", v6x(D6, &[Ext::HopByHop { len: 0 }, Ext::Routing { len: 1 }], L4::udp(HTTPS)).with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).to_bytes(), DROP, DropNotAllowed);

    // The bound on the chain: 8 headers are walked, a 9th is malformed.
    let mut nine = eight_ext();
    nine.push(Ext::DestOpts { len: 0 });
    t.row("ipv6 8 extension headers, other source to 443", v6x(D6, &eight_ext(), L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv6 8 extension headers, allowed to 443", v6x(A6, &eight_ext(), L4::udp(HTTPS)).to_bytes(), PASS, PassAllowed);
    t.row("ipv6 8 extension headers, other source to 80", v6x(D6, &eight_ext(), L4::tcp(80)).to_bytes(), PASS, PassUnprotected);
    t.row("ipv6 8 extension headers then icmpv6", v6x(D6, &eight_ext(), L4::raw(proto::ICMPV6, &[128, 0, 0, 0])).to_bytes(), PASS, PassUnprotected);
    t.row("ipv6 9 extension headers, allowed to 443", v6x(A6, &nine, L4::tcp(HTTPS)).to_bytes(), DROP, DropMalformed);
    t.row("ipv6 9 extension headers, other source to 80", v6x(D6, &nine, L4::tcp(80)).to_bytes(), DROP, DropMalformed);
    t.row("ipv6 9 extension headers then icmpv6", v6x(D6, &nine, L4::raw(proto::ICMPV6, &[128, 0, 0, 0])).to_bytes(), DROP, DropMalformed);
    t.row("ipv6 9 hop-by-hop headers, allowed", v6x(A6, &[Ext::HopByHop { len: 0 }; 9], L4::udp(80)).to_bytes(), DROP, DropMalformed);

    // The bound on offsets: the transport header may start at 1022 (ports read at 1024), not
    // past 1024. Extension sizes are multiples of 4, so from 54 the chain ends at 1022 or 1026.
    t.row("ipv6 chain ends at 1022, other source", v6x(D6, &[Ext::HopByHop { len: 120 }], L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    t.row("ipv6 chain ends at 1022, allowed", v6x(A6, &[Ext::DestOpts { len: 60 }, Ext::HopByHop { len: 59 }], L4::tcp(HTTPS)).to_bytes(), PASS, PassAllowed);
    t.row("ipv6 chain ends at 1022, other source to 80", v6x(D6, &[Ext::HopByHop { len: 120 }], L4::tcp(80)).to_bytes(), PASS, PassUnprotected);
    t.row("ipv6 ah chain ends at 1026, allowed", v6x(A6, &[Ext::Ah { len: 241 }], L4::tcp(HTTPS)).to_bytes(), DROP, DropMalformed);
    t.row("ipv6 chain ends at 1026, other source to 80", v6x(D6, &[Ext::HopByHop { len: 119 }, Ext::Ah { len: 1 }], L4::tcp(80)).to_bytes(), DROP, DropMalformed);
    t.row("ipv6 vlan shifts a 1022 chain to 1026, allowed", v6x(A6, &[Ext::HopByHop { len: 120 }], L4::tcp(HTTPS)).with_vlan(TPID_8021Q).to_bytes(), DROP, DropMalformed);
    t.row("ipv6 chain ends at 1022 then icmpv6", v6x(D6, &[Ext::HopByHop { len: 120 }], L4::raw(proto::ICMPV6, &[128, 0, 0, 0])).to_bytes(), PASS, PassUnprotected);
    t.row("ipv6 huge hop-by-hop (2048 bytes), allowed", v6x(A6, &[Ext::HopByHop { len: 255 }], L4::tcp(HTTPS)).to_bytes(), DROP, DropMalformed);

    let rows = check(&mut tf, &desired, &t);
    eprintln!("header paths: {rows} rows");
}

#[test]
#[rustfmt::skip]
fn frames_cut_at_every_header_boundary_are_malformed() {
    let desired = base(true, false);
    let mut tf = TestFilter::new(&desired);
    let mut t = Table::default();
    use Counter::*;

    let v4 = Packet::v4(A4, L4::tcp(HTTPS)).to_bytes();
    let v4_80 = Packet::v4(D4, L4::tcp(80)).to_bytes();
    let tag1 = Packet::v4(A4, L4::tcp(HTTPS)).with_vlan(TPID_8021Q).to_bytes();
    let tag2 = Packet::v4(A4, L4::tcp(HTTPS)).with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).to_bytes();
    let opts = v4opts(A4, &[1; 8], L4::udp(HTTPS)).to_bytes();
    let v6 = Packet::v6(A6, L4::tcp(HTTPS)).to_bytes();
    let arp = Packet::arp().to_bytes();

    // Ethernet and VLAN.
    t.row("14 bytes: ethernet header only, ipv4 ethertype", truncated(&v4, 14), DROP, DropMalformed);
    t.row("14 bytes: ethernet header only, ipv6 ethertype", truncated(&v6, 14), DROP, DropMalformed);
    t.row("14 bytes: ethernet header only, arp ethertype", truncated(&arp, 14), PASS, PassUnprotected);
    t.row("16 bytes: inside the vlan tag", truncated(&tag1, 16), DROP, DropMalformed);
    t.row("17 bytes: inside the vlan tag's ethertype", truncated(&tag1, 17), DROP, DropMalformed);
    t.row("18 bytes: after the vlan tag, no ipv4", truncated(&tag1, 18), DROP, DropMalformed);
    t.row("20 bytes: inside the second vlan tag", truncated(&tag2, 20), DROP, DropMalformed);
    t.row("21 bytes: inside the second tag's ethertype", truncated(&tag2, 21), DROP, DropMalformed);
    t.row("two tags: inside the ipv4 header", truncated(&tag2, 22 + 19), DROP, DropMalformed);
    t.row("two tags: inside the ports", truncated(&tag2, 22 + 20 + 3), DROP, DropMalformed);
    t.row("two tags: just the ports, allowed", truncated(&tag2, 22 + 20 + 4), PASS, PassAllowed);
    t.row("one tag: just the ports, allowed", truncated(&tag1, 18 + 20 + 4), PASS, PassAllowed);

    // IPv4 header and options.
    t.row("ipv4: first byte only", truncated(&v4, 15), DROP, DropMalformed);
    t.row("ipv4: before the source address", truncated(&v4, 14 + 12), DROP, DropMalformed);
    t.row("ipv4: 19 of 20 header bytes", truncated(&v4, 14 + 19), DROP, DropMalformed);
    t.row("ipv4: header complete, no transport", truncated(&v4, 14 + 20), DROP, DropMalformed);
    t.row("ipv4 to 80: header complete, no transport", truncated(&v4_80, 14 + 20), DROP, DropMalformed);
    t.row("ipv4 options: inside the fixed header", truncated(&opts, 14 + 19), DROP, DropMalformed);
    t.row("ipv4 options: first option byte only", truncated(&opts, 14 + 21), DROP, DropMalformed);
    t.row("ipv4 options: last option byte missing", truncated(&opts, 14 + 27), DROP, DropMalformed);
    t.row("ipv4 options: options complete, no transport", truncated(&opts, 14 + 28), DROP, DropMalformed);
    t.row("ipv4 options: inside the ports", truncated(&opts, 14 + 28 + 3), DROP, DropMalformed);
    t.row("ipv4 options: just the ports, allowed", truncated(&opts, 14 + 28 + 4), PASS, PassAllowed);
    t.row("ipv4 ihl 15 but only 20 header bytes", { let mut f = truncated(&v4, 14 + 20); f[14] = 0x4f; f }, DROP, DropMalformed);

    // Before and inside the ports.
    t.row("ipv4 tcp: source port only, allowed", truncated(&v4, 34 + 2), DROP, DropMalformed);
    t.row("ipv4 tcp: half the destination port, allowed", truncated(&v4, 34 + 3), DROP, DropMalformed);
    t.row("ipv4 tcp: just the ports, allowed", truncated(&v4, 34 + 4), PASS, PassAllowed);
    t.row("ipv4 tcp: just the ports, other source", truncated(&Packet::v4(D4, L4::tcp(HTTPS)).to_bytes(), 34 + 4), DROP, DropNotAllowed);
    t.row("ipv4 tcp to 80: just the ports, other source", truncated(&v4_80, 34 + 4), PASS, PassUnprotected);
    t.row("ipv4 tcp to 80: half the destination port", truncated(&v4_80, 34 + 3), DROP, DropMalformed);
    t.row("ipv4 udp: half the destination port", truncated(&Packet::v4(D4, L4::udp(HTTPS)).to_bytes(), 34 + 3), DROP, DropMalformed);
    t.row("ipv4 icmp: header only (no ports needed)", truncated(&Packet::v4(D4, L4::raw(proto::ICMP, &[8, 0, 0, 0])).to_bytes(), 34), PASS, PassUnprotected);

    // IPv6 header and extension headers.
    t.row("ipv6: first byte only", truncated(&v6, 15), DROP, DropMalformed);
    t.row("ipv6: before the next header field", truncated(&v6, 14 + 6), DROP, DropMalformed);
    t.row("ipv6: 39 of 40 header bytes", truncated(&v6, 14 + 39), DROP, DropMalformed);
    t.row("ipv6: header complete, no transport", truncated(&v6, 54), DROP, DropMalformed);
    t.row("ipv6 tcp: half the destination port", truncated(&v6, 54 + 3), DROP, DropMalformed);
    t.row("ipv6 tcp: just the ports, allowed", truncated(&v6, 54 + 4), PASS, PassAllowed);
    t.row("ipv6 tcp: just the ports, other source", truncated(&Packet::v6(D6, L4::tcp(HTTPS)).to_bytes(), 54 + 4), DROP, DropNotAllowed);
    t.row("ipv6 icmpv6: header only", truncated(&Packet::v6(D6, L4::raw(proto::ICMPV6, &[128, 0, 0, 0])).to_bytes(), 54), PASS, PassUnprotected);
    let hbh = v6x(A6, &[Ext::HopByHop { len: 1 }], L4::tcp(HTTPS)).to_bytes();
    t.row("ipv6 hop-by-hop: next header byte only", truncated(&hbh, 55), DROP, DropMalformed);
    t.row("ipv6 hop-by-hop: inside the body", truncated(&hbh, 54 + 10), DROP, DropMalformed);
    t.row("ipv6 hop-by-hop: complete, no transport", truncated(&hbh, 54 + 16), DROP, DropMalformed);
    t.row("ipv6 hop-by-hop: just the ports", truncated(&hbh, 54 + 16 + 4), PASS, PassAllowed);
    let frag = v6x(A6, &[Ext::Fragment { offset: 0, more: false }], L4::tcp(HTTPS)).to_bytes();
    t.row("ipv6 fragment header: 7 of 8 bytes", truncated(&frag, 54 + 7), DROP, DropMalformed);
    let later = v6x(D6, &[Ext::Fragment { offset: 5, more: true }], L4::raw(proto::TCP, &middle_of_payload(HTTPS))).to_bytes();
    t.row("ipv6 later fragment: fragment header 7 of 8 bytes", truncated(&later, 54 + 7), DROP, DropMalformed);
    t.row("ipv6 later fragment: fragment header only", truncated(&later, 54 + 8), PASS, PassFragment);
    let ah = v6x(A6, &[Ext::Ah { len: 4 }], L4::udp(HTTPS)).to_bytes();
    t.row("ipv6 ah: next header byte only", truncated(&ah, 55), DROP, DropMalformed);
    t.row("ipv6 ah: inside the integrity value", truncated(&ah, 54 + 20), DROP, DropMalformed);
    t.row("ipv6 ah: just the ports", truncated(&ah, 54 + 24 + 4), PASS, PassAllowed);
    let chain = v6x(A6, &eight_ext(), L4::tcp(HTTPS));
    let end = chain.l4_offset().unwrap();
    let chain = chain.to_bytes();
    t.row("ipv6 8 headers: inside the last one", truncated(&chain, end - 3), DROP, DropMalformed);
    t.row("ipv6 8 headers: just the ports", truncated(&chain, end + 4), PASS, PassAllowed);
    t.row("ipv6 chain to 1022: inside the ports", truncated(&v6x(A6, &[Ext::HopByHop { len: 120 }], L4::tcp(HTTPS)).to_bytes(), 1022 + 3), DROP, DropMalformed);
    t.row("ipv6 chain to 1022: just the ports", truncated(&v6x(A6, &[Ext::HopByHop { len: 120 }], L4::tcp(HTTPS)).to_bytes(), 1022 + 4), PASS, PassAllowed);

    let rows = check(&mut tf, &desired, &t);
    eprintln!("truncations: {rows} rows");
}

#[test]
fn a_frame_shorter_than_ethernet_never_reaches_the_program() {
    let desired = base(true, false);
    let mut tf = TestFilter::new(&desired);
    let full = Packet::v4(D4, L4::tcp(HTTPS)).to_bytes();
    let before = tf.counters();
    for len in [0, 1, 6, 12, 13] {
        let frame = truncated(&full, len);
        // The model calls it malformed; the kernel refuses to run XDP on less than an Ethernet
        // header at all (BPF_PROG_TEST_RUN returns EINVAL), as a NIC would never deliver one.
        assert_eq!(
            model::classify(
                &frame,
                &desired.v4,
                &desired.v6,
                &desired.ports,
                desired.settings
            ),
            Counter::DropMalformed,
            "model on {len} bytes"
        );
        let prog = tf.filter().program().expect("program loaded");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        let result = prog.test_run(opts);
        assert!(
            result.is_err(),
            "BPF_PROG_TEST_RUN accepted a {len}-byte frame ({}) and returned {:?}",
            hex(&frame),
            result.map(|r| r.return_value)
        );
    }
    assert_eq!(
        tf.counters(),
        before,
        "no counter may move for a frame never run"
    );
}

/// `frame` with `bytes` appended as Ethernet padding (outside the IP packet's own length), then
/// zero-padded to the 60-byte Ethernet minimum.
fn padded(frame: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out.extend_from_slice(bytes);
    if out.len() < 60 {
        out.resize(60, 0);
    }
    out
}

#[test]
#[rustfmt::skip]
fn fragments_are_judged_per_rfc_1858_and_strict_mode() {
    let mut tf = TestFilter::new(&base(true, false));
    use Counter::*;

    // Frames whose verdict does not depend on strict mode.
    let mut both = Table::default();
    both.row("ipv4 first fragment with ports, other source to 443", v4frag(D4, L4::tcp(HTTPS), 0, true).to_bytes(), DROP, DropNotAllowed);
    both.row("ipv4 first fragment with ports, other source to 80", v4frag(D4, L4::udp(80), 0, true).to_bytes(), PASS, PassUnprotected);
    both.row("ipv4 first fragment with ports, allowed", v4frag(A4, L4::tcp(HTTPS), 0, true).to_bytes(), PASS, PassAllowed);
    both.row("ipv4 first fragment of exactly the ports, other source", v4frag(D4, L4::raw(proto::TCP, &[0x9c, 0x40, 0x01, 0xbb]), 0, true).to_bytes(), DROP, DropNotAllowed);
    both.row("ipv4 tiny first fragment (2 bytes), other source", v4frag(D4, L4::raw(proto::TCP, &[0x9c, 0x40]), 0, true).to_bytes(), DROP, DropFragment);
    both.row("ipv4 tiny first fragment (3 bytes udp), other source", v4frag(D4, L4::raw(proto::UDP, &[0x9c, 0x40, 0x00]), 0, true).to_bytes(), DROP, DropFragment);
    both.row("ipv4 tiny first fragment (0 bytes), other source", v4frag(D4, L4::raw(proto::TCP, &[]), 0, true).to_bytes(), DROP, DropFragment);
    both.row("ipv4 tiny first fragment, allowed", v4frag(A4, L4::raw(proto::TCP, &[0x9c, 0x40]), 0, true).to_bytes(), PASS, PassAllowed);
    both.row("ipv4 tiny first fragment with options, other source", Packet::from(Ipv4 { options: vec![1; 8], more_fragments: true, ..Ipv4::new(D4, L4::raw(proto::TCP, &[0x9c])) }).to_bytes(), DROP, DropFragment);
    both.row("ipv4 tiny first fragment behind two tags, other source", v4frag(D4, L4::raw(proto::UDP, &[0x9c]), 0, true).with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).to_bytes(), DROP, DropFragment);
    both.row("ipv4 not a fragment, 2 bytes of tcp, allowed", v4frag(A4, L4::raw(proto::TCP, &[0x9c, 0x40]), 0, false).to_bytes(), DROP, DropMalformed);
    both.row("ipv6 first fragment with ports, other source to 443", v6x(D6, &[Ext::Fragment { offset: 0, more: true }], L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    both.row("ipv6 first fragment with ports, other source to 80", v6x(D6, &[Ext::Fragment { offset: 0, more: true }], L4::udp(80)).to_bytes(), PASS, PassUnprotected);
    both.row("ipv6 first fragment with ports, allowed", v6x(A6, &[Ext::Fragment { offset: 0, more: true }], L4::tcp(HTTPS)).to_bytes(), PASS, PassAllowed);
    both.row("ipv6 tiny first fragment (2 bytes), other source", v6x(D6, &[Ext::Fragment { offset: 0, more: true }], L4::raw(proto::TCP, &[0x9c, 0x40])).to_bytes(), DROP, DropFragment);
    both.row("ipv6 tiny first fragment (0 bytes udp), other source", v6x(D6, &[Ext::Fragment { offset: 0, more: true }], L4::raw(proto::UDP, &[])).to_bytes(), DROP, DropFragment);
    both.row("ipv6 tiny first fragment, allowed", v6x(A6, &[Ext::Fragment { offset: 0, more: true }], L4::raw(proto::TCP, &[0x9c, 0x40])).to_bytes(), PASS, PassAllowed);
    both.row("ipv6 tiny first fragment after destination options, other source", v6x(D6, &[Ext::HopByHop { len: 0 }, Ext::Fragment { offset: 0, more: true }, Ext::DestOpts { len: 1 }], L4::raw(proto::TCP, &[0x9c, 0x40, 0x01])).to_bytes(), DROP, DropFragment);
    both.row("ipv6 first fragment cut inside a later extension header, allowed", truncated(&v6x(A6, &[Ext::Fragment { offset: 0, more: true }, Ext::DestOpts { len: 1 }], L4::tcp(HTTPS)).to_bytes(), 54 + 8 + 1), DROP, DropMalformed);
    both.row("ipv6 atomic fragment with ports, other source", v6x(D6, &[Ext::Fragment { offset: 0, more: false }], L4::udp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    both.row("ipv6 atomic fragment, 2 bytes of tcp, allowed", v6x(A6, &[Ext::Fragment { offset: 0, more: false }], L4::raw(proto::TCP, &[0x9c, 0x40])).to_bytes(), DROP, DropMalformed);

    // Ports must lie inside the IP packet's own length, never in Ethernet padding after it.
    both.row("ipv4 ports only in ethernet padding, allowed", padded(&v4frag(A4, L4::raw(proto::TCP, &[0x9c, 0x40]), 0, false).to_bytes(), &[0x01, 0xbb]), DROP, DropMalformed);
    both.row("ipv6 ports only in ethernet padding, allowed", padded(&Packet::v6(A6, L4::raw(proto::TCP, &[0x9c, 0x40])).to_bytes(), &[0x01, 0xbb]), DROP, DropMalformed);
    both.row("ipv6 3 bytes of udp, the port's last byte in padding, allowed", padded(&Packet::v6(A6, L4::raw(proto::UDP, &[0x9c, 0x40, 0x01])).to_bytes(), &[0xbb]), DROP, DropMalformed);
    both.row("ipv6 not a fragment, 0 bytes of tcp, other source to 80 in padding", padded(&Packet::v6(D6, L4::raw(proto::TCP, &[])).to_bytes(), &[0x9c, 0x40, 0x00, 0x50]), DROP, DropMalformed);
    both.row("ipv4 tiny first fragment padded with a fake port 80, other source", padded(&v4frag(D4, L4::raw(proto::TCP, &[0x9c, 0x40]), 0, true).to_bytes(), &[0x00, 0x50]), DROP, DropFragment);
    both.row("ipv6 tiny first fragment padded with a fake port 80, other source", padded(&v6x(D6, &[Ext::Fragment { offset: 0, more: true }], L4::raw(proto::TCP, &[0x9c, 0x40])).to_bytes(), &[0x00, 0x50]), DROP, DropFragment);

    // Non-first fragments, of any protocol: pass without strict fragments, judged by source
    // with it.
    let later: Vec<(&str, Vec<u8>, bool)> = vec![
        ("ipv4 non-first icmp fragment, other source", v4frag(D4, L4::raw(proto::ICMP, &middle_of_payload(HTTPS)), 1, true).to_bytes(), false),
        ("ipv6 non-first fragment of icmpv6, other source", v6x(D6, &[Ext::Fragment { offset: 3, more: true }], L4::raw(proto::ICMPV6, &middle_of_payload(HTTPS))).to_bytes(), false),
        ("ipv6 non-first fragment naming destination options, other source", v6x(D6, &[Ext::Fragment { offset: 3, more: true }], L4::raw(proto::DSTOPTS, &middle_of_payload(HTTPS))).to_bytes(), false),
        ("ipv4 non-first tcp fragment (fake 443 inside), other source", v4frag(D4, L4::raw(proto::TCP, &middle_of_payload(HTTPS)), 1, true).to_bytes(), false),
        ("ipv4 non-first tcp fragment (fake 80 inside), other source", v4frag(D4, L4::raw(proto::TCP, &middle_of_payload(80)), 1, true).to_bytes(), false),
        ("ipv4 last udp fragment, other source", v4frag(D4, L4::raw(proto::UDP, &middle_of_payload(HTTPS)), 0x1fff, false).to_bytes(), false),
        ("ipv4 non-first fragment behind a vlan tag, other source", v4frag(D4, L4::raw(proto::UDP, &middle_of_payload(HTTPS)), 185, true).with_vlan(TPID_8021Q).to_bytes(), false),
        ("ipv4 non-first fragment with options, other source", Packet::from(Ipv4 { options: vec![1; 4], frag_offset: 2, ..Ipv4::new(D4, L4::raw(proto::TCP, &middle_of_payload(22))) }).to_bytes(), false),
        ("ipv4 non-first fragment cut after the ip header, other source", truncated(&v4frag(D4, L4::raw(proto::TCP, &middle_of_payload(HTTPS)), 1, true).to_bytes(), 34), false),
        ("ipv4 non-first tcp fragment, allowed", v4frag(A4, L4::raw(proto::TCP, &middle_of_payload(HTTPS)), 1, true).to_bytes(), true),
        ("ipv6 non-first tcp fragment (fake 443 inside), other source", v6x(D6, &[Ext::Fragment { offset: 1, more: true }], L4::raw(proto::TCP, &middle_of_payload(HTTPS))).to_bytes(), false),
        ("ipv6 last udp fragment (fake 80 inside), other source", v6x(D6, &[Ext::Fragment { offset: 0x1fff, more: false }], L4::raw(proto::UDP, &middle_of_payload(80))).to_bytes(), false),
        ("ipv6 non-first fragment after hop-by-hop, other source", v6x(D6, &[Ext::HopByHop { len: 1 }, Ext::Fragment { offset: 2, more: false }], L4::raw(proto::TCP, &middle_of_payload(HTTPS))).to_bytes(), false),
        ("ipv6 non-first fragment as the 8th header, other source", { let mut ext = eight_ext()[..7].to_vec(); ext.push(Ext::Fragment { offset: 9, more: true }); v6x(D6, &ext, L4::raw(proto::UDP, &[])) }.to_bytes(), false),
        ("ipv6 non-first tcp fragment, allowed", v6x(A6, &[Ext::Fragment { offset: 1, more: true }], L4::raw(proto::TCP, &middle_of_payload(HTTPS))).to_bytes(), true),
    ];

    let mut lenient = Table::default();
    let mut strict = Table::default();
    for (name, frame, allowed) in later {
        lenient.row(&format!("{name}, strict off"), frame.clone(), PASS, PassFragment);
        if allowed {
            strict.row(&format!("{name}, strict on"), frame, PASS, PassAllowed);
        } else {
            strict.row(&format!("{name}, strict on"), frame, DROP, DropFragment);
        }
    }
    let mut rows = 0;
    for strict_on in [false, true] {
        rows += check(&mut tf, &base(true, strict_on), &both);
    }
    rows += check(&mut tf, &base(true, false), &lenient);
    rows += check(&mut tf, &base(true, true), &strict);
    eprintln!("fragments: {rows} rows");
}

#[test]
#[rustfmt::skip]
fn monitor_mode_counts_every_refusal_and_passes_it() {
    let mut tf = TestFilter::new(&base(true, true));
    use Counter::*;
    let refused: Vec<(&str, Vec<u8>, Counter)> = vec![
        ("ipv4 tcp other source to 443", Packet::v4(D4, L4::tcp(HTTPS)).to_bytes(), DropNotAllowed),
        ("ipv4 udp other source, two tags", Packet::v4(D4, L4::udp(HTTPS)).with_vlan(TPID_8021AD).with_vlan(TPID_8021Q).to_bytes(), DropNotAllowed),
        ("ipv6 tcp other source to 443", Packet::v6(D6, L4::tcp(HTTPS)).to_bytes(), DropNotAllowed),
        ("ipv6 udp other source after ah", v6x(D6, &[Ext::Ah { len: 2 }], L4::udp(HTTPS)).to_bytes(), DropNotAllowed),
        ("ipv4 cut inside the ports, allowed", truncated(&Packet::v4(A4, L4::tcp(HTTPS)).to_bytes(), 37), DropMalformed),
        ("three vlan tags", Packet::v4(A4, L4::tcp(HTTPS)).with_vlan(TPID_8021Q).with_vlan(TPID_8021Q).with_vlan(TPID_8021Q).to_bytes(), DropMalformed),
        ("ipv4 ihl 4", { let mut f = Packet::v4(A4, L4::tcp(80)).to_bytes(); f[14] = 0x44; f }, DropMalformed),
        ("ipv6 9 extension headers", v6x(A6, &[Ext::DestOpts { len: 0 }; 9], L4::tcp(HTTPS)).to_bytes(), DropMalformed),
        ("ipv6 chain past 1024", v6x(A6, &[Ext::Ah { len: 241 }], L4::tcp(HTTPS)).to_bytes(), DropMalformed),
        ("ipv4 tiny first fragment, other source", v4frag(D4, L4::raw(proto::TCP, &[0x9c, 0x40]), 0, true).to_bytes(), DropFragment),
        ("ipv6 tiny first fragment, other source", v6x(D6, &[Ext::Fragment { offset: 0, more: true }], L4::raw(proto::UDP, &[0x9c])).to_bytes(), DropFragment),
        ("ipv4 non-first fragment, other source", v4frag(D4, L4::raw(proto::TCP, &middle_of_payload(HTTPS)), 1, true).to_bytes(), DropFragment),
        ("ipv6 non-first fragment, other source", v6x(D6, &[Ext::Fragment { offset: 1, more: false }], L4::raw(proto::UDP, &middle_of_payload(HTTPS))).to_bytes(), DropFragment),
    ];
    let passed: Vec<(&str, Vec<u8>, Counter)> = vec![
        ("ipv4 tcp allowed to 443", Packet::v4(A4, L4::tcp(HTTPS)).to_bytes(), PassAllowed),
        ("ipv6 udp allowed to 443", Packet::v6(A6, L4::udp(HTTPS)).to_bytes(), PassAllowed),
        ("ipv4 tcp other source to 80", Packet::v4(D4, L4::tcp(80)).to_bytes(), PassUnprotected),
        ("arp", Packet::arp().to_bytes(), PassUnprotected),
        ("ipv4 non-first fragment, allowed", v4frag(A4, L4::raw(proto::TCP, &middle_of_payload(HTTPS)), 1, true).to_bytes(), PassAllowed),
    ];
    /// What monitor mode records instead of each drop.
    fn monitored(drop: Counter) -> Counter {
        match drop {
            Counter::DropNotAllowed => Counter::MonitorNotAllowed,
            Counter::DropFragment => Counter::MonitorFragment,
            Counter::DropMalformed => Counter::MonitorMalformed,
            other => panic!("{other:?} is not a drop"),
        }
    }
    let mut enforce = Table::default();
    let mut monitor = Table::default();
    for (name, frame, counter) in &refused {
        enforce.row(&format!("{name}, enforce"), frame.clone(), DROP, *counter);
        monitor.row(&format!("{name}, monitor"), frame.clone(), PASS, monitored(*counter));
    }
    for (name, frame, counter) in &passed {
        enforce.row(&format!("{name}, enforce"), frame.clone(), PASS, *counter);
        monitor.row(&format!("{name}, monitor"), frame.clone(), PASS, *counter);
    }
    let mut rows = check(&mut tf, &base(true, true), &enforce);
    rows += check(&mut tf, &base(false, true), &monitor);
    // And back: the mode switch is live both ways.
    rows += check(&mut tf, &base(true, true), &enforce);
    eprintln!("monitor: {rows} rows");
}

#[test]
#[rustfmt::skip]
fn only_protected_ports_are_judged_including_0_and_65535() {
    let edge = Desired { ports: vec![0, HTTPS, 65535], ..base(true, false) };
    let mut tf = TestFilter::new(&edge);
    use Counter::*;
    let mut t = Table::default();
    for (l4, name) in [(L4::tcp as fn(u16) -> L4, "tcp"), (L4::udp, "udp")] {
        for port in [0, HTTPS, 65535] {
            t.row(&format!("ipv4 {name} other source to protected {port}"), Packet::v4(D4, l4(port)).to_bytes(), DROP, DropNotAllowed);
            t.row(&format!("ipv6 {name} other source to protected {port}"), Packet::v6(D6, l4(port)).to_bytes(), DROP, DropNotAllowed);
            t.row(&format!("ipv4 {name} allowed to protected {port}"), Packet::v4(A4, l4(port)).to_bytes(), PASS, PassAllowed);
            t.row(&format!("ipv6 {name} allowed to protected {port}"), Packet::v6(A6, l4(port)).to_bytes(), PASS, PassAllowed);
        }
        for port in [1, 63, 64, 442, 444, 8443, 65534] {
            t.row(&format!("ipv4 {name} other source to unprotected {port}"), Packet::v4(D4, l4(port)).to_bytes(), PASS, PassUnprotected);
            t.row(&format!("ipv6 {name} other source to unprotected {port}"), Packet::v6(D6, l4(port)).to_bytes(), PASS, PassUnprotected);
        }
    }
    t.row("ipv4 tcp from protected source port 443 to 1", Packet::v4(D4, L4::Tcp { src_port: HTTPS, dst_port: 1 }).to_bytes(), PASS, PassUnprotected);
    let mut rows = check(&mut tf, &edge, &t);

    // Switch the protected set: 443 is released, 8443 judged.
    let moved = Desired { ports: vec![8443], ..base(true, false) };
    let mut t = Table::default();
    t.row("after switch: ipv4 other source to 443", Packet::v4(D4, L4::tcp(HTTPS)).to_bytes(), PASS, PassUnprotected);
    t.row("after switch: ipv4 other source to 0", Packet::v4(D4, L4::tcp(0)).to_bytes(), PASS, PassUnprotected);
    t.row("after switch: ipv4 other source to 8443", Packet::v4(D4, L4::tcp(8443)).to_bytes(), DROP, DropNotAllowed);
    t.row("after switch: ipv6 other source to 8443", Packet::v6(D6, L4::udp(8443)).to_bytes(), DROP, DropNotAllowed);
    rows += check(&mut tf, &moved, &t);

    // No protected port at all: nothing with a port is judged, but a tiny first fragment still
    // is (its port is unknown, so it is judged as if protected).
    let none = Desired { ports: vec![], ..base(true, false) };
    let mut t = Table::default();
    t.row("no ports: ipv4 other source to 443", Packet::v4(D4, L4::tcp(HTTPS)).to_bytes(), PASS, PassUnprotected);
    t.row("no ports: ipv6 other source to 443", Packet::v6(D6, L4::tcp(HTTPS)).to_bytes(), PASS, PassUnprotected);
    t.row("no ports: ipv4 tiny first fragment, other source", v4frag(D4, L4::raw(proto::TCP, &[0x9c, 0x40]), 0, true).to_bytes(), DROP, DropFragment);
    t.row("no ports: truncated ports, allowed", truncated(&Packet::v4(A4, L4::tcp(80)).to_bytes(), 37), DROP, DropMalformed);
    rows += check(&mut tf, &none, &t);
    eprintln!("ports: {rows} rows");
}

/// One desired state per prefix, alone in its family's list; rows for the first and last address
/// inside it (pass) and the addresses just outside each end (drop), when they exist.
#[test]
#[rustfmt::skip]
fn ipv4_prefix_boundaries_from_slash_0_to_slash_32() {
    let nets: [Ipv4Net; 10] = [
        "0.0.0.0/0",
        "128.0.0.0/1",
        "10.0.0.0/8",
        "172.16.0.0/16",
        "192.168.2.0/23",
        "203.0.113.0/24",
        "198.51.100.128/25",
        "198.51.100.0/25",
        "198.51.100.6/31",
        "192.0.2.255/32",
    ]
    .map(|s| s.parse().unwrap());
    let mut tf = TestFilter::new(&base(true, false));
    use Counter::*;
    let mut rows = 0;
    for net in nets {
        let desired = Desired {
            v4: vec![net],
            v6: vec![],
            ports: vec![HTTPS],
            settings: settings(true, false),
        };
        let first = u32::from(net.network());
        let last = u32::from(net.broadcast());
        let mut t = Table::default();
        for (what, addr) in [
            ("first", first),
            ("last", last),
            ("middle", first + (last - first) / 2),
        ] {
            let src = Ipv4Addr::from(addr);
            t.row(&format!("{net}: {what} address {src} passes"), Packet::v4(src, L4::tcp(HTTPS)).to_bytes(), PASS, PassAllowed);
        }
        for (what, addr) in [
            ("below", first.checked_sub(1)),
            ("above", last.checked_add(1)),
        ] {
            if let Some(addr) = addr {
                let src = Ipv4Addr::from(addr);
                t.row(&format!("{net}: {what} {src} is dropped"), Packet::v4(src, L4::udp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
            }
        }
        // The other family is empty: every IPv6 source is refused.
        t.row(&format!("{net}: ipv6 with an empty ipv6 list is dropped"), Packet::v6(A6, L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
        rows += check(&mut tf, &desired, &t);
    }
    eprintln!("ipv4 prefixes: {rows} rows");
}

#[test]
#[rustfmt::skip]
fn ipv6_prefix_boundaries_from_slash_0_to_slash_128() {
    // /25 to /31 sit between the index's /24 blocks and the narrow bitmap's /32s: their
    // last address is in the last of the /32s they expand to.
    let nets: [Ipv6Net; 13] = [
        "::/0",
        "2001:d00::/24",
        "2001:d80::/25",
        "2001:db8::/29",
        "2001:db8::/31",
        "ffff:fffe::/31",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "2001:db8:1:2::/64",
        "2001:db8:1:2::6/127",
        "2001:db8:1:2::9/128",
        "2001:db8:ffff:ffff::/64",
        "8000::/1",
    ]
    .map(|s| s.parse().unwrap());
    let mut tf = TestFilter::new(&base(true, false));
    use Counter::*;
    let mut rows = 0;
    for net in nets {
        let desired = Desired {
            v4: vec![],
            v6: vec![net],
            ports: vec![HTTPS],
            settings: settings(true, false),
        };
        let first = u128::from(net.network());
        let last = u128::from(net.broadcast());
        let mut t = Table::default();
        for (what, addr) in [
            ("first", first),
            ("last", last),
            ("middle", first + (last - first) / 2),
        ] {
            let src = Ipv6Addr::from(addr);
            t.row(&format!("{net}: {what} address {src} passes"), Packet::v6(src, L4::tcp(HTTPS)).to_bytes(), PASS, PassAllowed);
        }
        for (what, addr) in [
            ("below", first.checked_sub(1)),
            ("above", last.checked_add(1)),
        ] {
            if let Some(addr) = addr {
                let src = Ipv6Addr::from(addr);
                t.row(&format!("{net}: {what} {src} is dropped"), Packet::v6(src, L4::udp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
            }
        }
        // A source in the same /24 block as the prefix but in a /32 it does not touch: the
        // narrow bitmap refuses it without the trie (or, if its bit is shared, the trie).
        let other_slash_32 = Ipv6Addr::from(first ^ (1u128 << 96));
        if net.prefix_len() > 32 {
            t.row(&format!("{net}: {other_slash_32} in the same /24, another /32, is dropped"), Packet::v6(other_slash_32, L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
        }
        t.row(&format!("{net}: ipv4 with an empty ipv4 list is dropped"), Packet::v4(A4, L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
        rows += check(&mut tf, &desired, &t);
    }
    eprintln!("ipv6 prefixes: {rows} rows");
}

/// Thousands of /25s touch more /32s than the narrow hash of earlier versions held (262,144):
/// the narrow bitmap takes them all, and every /25 still lets its own sources through and
/// refuses the /25 beside it.
#[test]
#[rustfmt::skip]
fn many_ipv6_slash_25s_all_pass_and_their_neighbours_are_dropped() {
    const COUNT: u32 = 4096;
    // Every other /25 of 2000::/13, so that none merge: /25 number 2i is allowed.
    let slash_25 = |i: u32| u128::from(0x2000_0000u32 + (i << 7)) << 96;
    let v6: Vec<Ipv6Net> = (0..COUNT)
        .map(|i| Ipv6Net::new(Ipv6Addr::from(slash_25(2 * i)), 25).unwrap())
        .collect();
    let desired = Desired { v4: vec![], v6, ports: vec![HTTPS], settings: settings(true, false) };
    let mut tf = TestFilter::new(&desired);
    use Counter::*;
    let mut t = Table::default();
    for i in [0, 1, COUNT / 2, COUNT - 1] {
        let allowed = slash_25(2 * i);
        for (what, src) in [("first", allowed), ("last", allowed + (1u128 << 103) - 1), ("in its last /32", allowed + (127u128 << 96) + 9)] {
            let src = Ipv6Addr::from(src);
            t.row(&format!("/25 #{i}: {what} address {src} passes"), Packet::v6(src, L4::tcp(HTTPS)).to_bytes(), PASS, PassAllowed);
        }
        let beside = Ipv6Addr::from(slash_25(2 * i + 1) + 7);
        t.row(&format!("/25 #{i}: {beside} in the /25 beside it is dropped"), Packet::v6(beside, L4::tcp(HTTPS)).to_bytes(), DROP, DropNotAllowed);
    }
    check(&mut tf, &desired, &t);
}

/// Reloads between allowlists whose lookups take different levels (a /24 the index calls full,
/// long prefixes behind a partial block and the narrow bitmap, /25s to /31s that expand to several
/// /32s), judging probe sources after every step of each apply: a source allowed before and
/// after must pass at every step, one allowed by neither must be dropped at every step.
#[test]
fn reloads_keep_every_source_allowed_before_and_after_at_every_step() {
    let v4 = |s: &[&str]| -> Vec<Ipv4Net> { s.iter().map(|n| n.parse().unwrap()).collect() };
    let v6 = |s: &[&str]| -> Vec<Ipv6Net> { s.iter().map(|n| n.parse().unwrap()).collect() };
    // (IPv4 list, IPv6 list), applied in this order, each from the one before.
    let states = [
        (v4(&["203.0.113.0/24"]), v6(&["2001:d00::/24"])),
        (v4(&["203.0.113.0/25"]), v6(&["2001:db8:1::/48"])),
        (v4(&["203.0.113.0/24"]), v6(&["2001:d00::/24"])),
        (
            v4(&["203.0.113.7/32"]),
            v6(&["2001:db8:1::/48", "2001:db8:2::/48"]),
        ),
        (
            v4(&["203.0.113.0/31"]),
            v6(&["2001:db8:1::/48", "2001:db9::/32"]),
        ),
        (v4(&["203.0.113.0/31"]), v6(&["2001:db8::/29"])),
        (
            v4(&["203.0.113.0/31"]),
            v6(&["2001:db8::/31", "2001:dbf::/32"]),
        ),
        (v4(&[]), v6(&["2001:d00::/24", "2001:dbf:5::/48"])),
        (v4(&[]), v6(&["2001:dbf:5::/48"])),
    ];
    let probes4: Vec<Ipv4Addr> = ["203.0.113.0", "203.0.113.1", "203.0.113.7", "203.0.113.200"]
        .map(|a| a.parse().unwrap())
        .to_vec();
    let probes6: Vec<Ipv6Addr> = [
        "2001:db8:1::7",
        "2001:db8:2::7",
        "2001:db8:3::7",
        "2001:db9::7",
        "2001:dbe::7",
        "2001:dbf:5::7",
        "2001:dbf:6::7",
        "2001:d00::7",
    ]
    .map(|a| a.parse().unwrap())
    .to_vec();
    let desired = |(v4, v6): &(Vec<Ipv4Net>, Vec<Ipv6Net>)| Desired {
        v4: v4.clone(),
        v6: v6.clone(),
        ports: vec![HTTPS],
        settings: settings(true, false),
    };
    let mut tf = TestFilter::new(&desired(&states[0]));
    let prog_pin = tf.filter().pins().prog();
    for pair in states.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        // (frame, what it must do at every step, or None when the step decides it)
        let mut probes = Vec::new();
        for &a in &probes4 {
            let (was, is) = (
                before.0.iter().any(|n| n.contains(&a)),
                after.0.iter().any(|n| n.contains(&a)),
            );
            probes.push((
                a.to_string(),
                Packet::v4(a, L4::tcp(HTTPS)).to_bytes(),
                was,
                is,
            ));
        }
        for &a in &probes6 {
            let (was, is) = (
                before.1.iter().any(|n| n.contains(&a)),
                after.1.iter().any(|n| n.contains(&a)),
            );
            probes.push((
                a.to_string(),
                Packet::v6(a, L4::tcp(HTTPS)).to_bytes(),
                was,
                is,
            ));
        }
        let failures = Arc::new(Mutex::new(Vec::new()));
        let steps = Arc::new(Mutex::new(Vec::new()));
        let prog = Xdp::from_pin(&prog_pin, XdpAttachType::Interface).expect("the pinned program");
        let (seen, wrong) = (Arc::clone(&steps), Arc::clone(&failures));
        let label = format!("{:?} -> {:?}", before, after);
        tf.filter().observe_apply(Some(Box::new(move |step| {
            seen.lock().unwrap().push(step);
            for (name, frame, was, is) in &probes {
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(frame);
                let got = prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value;
                let want = match (was, is) {
                    (true, true) => PASS,
                    (false, false) => DROP,
                    _ => continue,
                };
                if got != want {
                    wrong.lock().unwrap().push(format!(
                        "{label}: after step {step}, {name} gave {got}, wants {want}"
                    ));
                }
            }
        })));
        tf.filter()
            .apply(&desired(after))
            .unwrap_or_else(|e| panic!("applying {after:?}: {e}"));
        tf.filter().observe_apply(None);
        let steps = steps.lock().unwrap();
        assert!(
            steps.contains(&filter_common::map_names::V6_NARROW),
            "the narrow bitmap is among the steps observed: {steps:?}"
        );
        let failures = failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} gap(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// The benchmark's plain-trie mode (every block partial, the narrow bitmap skipped) must judge as
/// the filter does, including sources allowed by prefixes the narrow bitmap never holds (/24 and
/// shorter), which without the skip flag it would refuse.
#[test]
#[rustfmt::skip]
fn the_plain_trie_bench_mode_judges_as_the_filter_does() {
    let desired = Desired {
        v4: vec!["10.0.0.0/8".parse().unwrap(), "198.51.100.7/32".parse().unwrap()],
        v6: vec!["2001:d00::/24".parse().unwrap(), "2001:e01:1::/48".parse().unwrap()],
        ports: vec![HTTPS],
        settings: settings(true, false),
    };
    let mut tf = TestFilter::new(&desired);
    tf.filter().force_trie_lookups_for_bench().expect("forcing trie lookups");
    use Counter::*;
    let mut t = Table::default();
    for (src, action, counter) in [
        ("2001:db8:1::7", PASS, PassAllowed),
        ("2001:e01:1::7", PASS, PassAllowed),
        ("2001:e01:2::7", DROP, DropNotAllowed),
        ("2001:f00::7", DROP, DropNotAllowed),
    ] {
        let src: Ipv6Addr = src.parse().unwrap();
        t.row(&format!("trie mode: {src}"), Packet::v6(src, L4::tcp(HTTPS)).to_bytes(), action, counter);
    }
    for (src, action, counter) in [
        ("10.1.2.3", PASS, PassAllowed),
        ("198.51.100.7", PASS, PassAllowed),
        ("198.51.100.8", DROP, DropNotAllowed),
    ] {
        let src: Ipv4Addr = src.parse().unwrap();
        t.row(&format!("trie mode: {src}"), Packet::v4(src, L4::tcp(HTTPS)).to_bytes(), action, counter);
    }
    // Judged without `check`, which would apply `desired` again and end the trie mode.
    for row in &t.0 {
        assert_eq!(tf.judge(&row.frame), (row.action, row.counter), "{}", row.name);
    }
}
