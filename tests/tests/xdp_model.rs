//! Property tests: the loaded XDP program and the reference model ([`model::classify`]) agree on
//! the action and the exact counter for random and mutated frames.
//!
//! Each proptest case is one random allowlist (IPv4 and IPv6 prefixes of random lengths, a random
//! set of protected ports) and 200 frames: structured random packets (VLAN stacks of 0 to 3 tags,
//! IPv4 with options and fragment fields, IPv6 with up to 10 extension headers and fragments, TCP,
//! UDP, other protocols, random bytes behind an IP ethertype) whose sources are drawn inside, at
//! the edges of, just outside and far from the allowlist, each then mutated 0 to 3 times
//! (truncated, bytes flipped, random bytes spliced in or written over). Every frame runs under all
//! four modes (enforce/monitor × strict fragments on/off) on one loaded program per case:
//! 32 cases × 200 frames × 4 modes = 25,600 frames checked against the model.

use std::{
    cell::RefCell,
    net::{Ipv4Addr, Ipv6Addr},
    panic::{AssertUnwindSafe, catch_unwind},
};

use filter_common::Counter;
use hookwall::filter::Desired;
use hookwall_tests::{
    TestFilter, XDP_DROP, XDP_PASS,
    frames::{
        ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ext, Ipv4, Ipv6, L3, L4, Packet,
        TPID_8021AD, TPID_8021Q, Vlan, hex, proto,
    },
    model, settings,
};
use ipnet::{Ipv4Net, Ipv6Net};
use proptest::{
    collection::vec,
    prelude::*,
    sample::{Index, select, subsequence},
    test_runner::{TestCaseError, TestRunner},
};

/// Frames per case.
const FRAMES: usize = 200;
/// Longest frame fed to the program (BPF_PROG_TEST_RUN keeps up to ~3.5 KiB linear).
const MAX_FRAME: usize = 2048;
/// Destination ports the packets use; the protected set is drawn from them.
const PORTS: [u16; 8] = [0, 1, 80, 442, 443, 444, 8443, 65535];

/// One allowlist case: what the maps hold.
#[derive(Clone, Debug)]
struct Allowlist {
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
    ports: Vec<u16>,
}

/// A change made to a built frame.
#[derive(Clone, Debug)]
enum Mutation {
    /// Cut the frame (never below an Ethernet header; the kernel refuses shorter test input).
    Truncate(Index),
    /// XOR one byte, anywhere or within the first 80 bytes (the headers).
    Flip { at: Index, headers: bool, mask: u8 },
    /// Insert random bytes.
    Splice { at: Index, bytes: Vec<u8> },
    /// Overwrite with random bytes.
    Overwrite { at: Index, bytes: Vec<u8> },
}

fn apply(frame: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Truncate(at) => {
            if frame.len() > ETH_HLEN {
                frame.truncate(ETH_HLEN + at.index(frame.len() - ETH_HLEN + 1));
            }
        }
        Mutation::Flip { at, headers, mask } => {
            let span = if *headers {
                frame.len().min(80)
            } else {
                frame.len()
            };
            frame[at.index(span)] ^= mask;
        }
        Mutation::Splice { at, bytes } => {
            let i = at.index(frame.len() + 1);
            frame.splice(i..i, bytes.iter().copied());
        }
        Mutation::Overwrite { at, bytes } => {
            let i = at.index(frame.len());
            for (d, s) in frame[i..].iter_mut().zip(bytes) {
                *d = *s;
            }
        }
    }
    frame.truncate(MAX_FRAME);
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<bool>(), 1u8..=255).prop_map(|(at, headers, mask)| Mutation::Flip {
            at,
            headers,
            mask
        }),
        (any::<Index>(), vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
        (any::<Index>(), vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

/// Prefix lengths: mostly long, sometimes very short (which allows most of the space).
fn prefix_len(max: u8) -> impl Strategy<Value = u8> {
    prop_oneof![6 => max / 4..=max, 1 => 0..=max / 4]
}

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    // Near a few bases, so prefixes nest and overlap, or anywhere.
    let base = prop_oneof![
        select(vec![0xcb00_7100u32, 0xc633_6400, 0x0a00_0000]),
        any::<u32>()
    ];
    (base, any::<u16>(), prefix_len(32)).prop_map(|(base, low, len)| {
        Ipv4Net::new(Ipv4Addr::from(base ^ u32::from(low)), len)
            .expect("length ≤ 32")
            .trunc()
    })
}

fn v6net() -> impl Strategy<Value = Ipv6Net> {
    let base = prop_oneof![
        select(vec![0x2001_0db8_0001u128 << 80, 0x2001_0db8_0002u128 << 80]),
        any::<u128>()
    ];
    // Besides the usual lengths, /24 to /33 often: around the index's blocks and the narrow
    // bitmap's /32s, where a /25 to /31 must expand to every /32 it covers. High bits vary
    // too, so such prefixes land anywhere.
    let len = prop_oneof![3 => prefix_len(128), 1 => 24..=33u8];
    let high = prop_oneof![3 => Just(0u128), 1 => (0..256u128).prop_map(|b| b << 96)];
    (base, any::<u64>(), high, len).prop_map(|(base, low, high, len)| {
        Ipv6Net::new(Ipv6Addr::from(base ^ u128::from(low) ^ high), len)
            .expect("length ≤ 128")
            .trunc()
    })
}

fn allowlist() -> impl Strategy<Value = Allowlist> {
    (
        vec(v4net(), 0..6),
        vec(v6net(), 0..6),
        subsequence(PORTS.to_vec(), 0..=5),
    )
        .prop_map(|(v4, v6, ports)| Allowlist { v4, v6, ports })
}

/// A source inside one of `nets` (random host bits), at or just past one of their ends, or
/// anywhere.
fn v4_source(nets: &[Ipv4Net]) -> BoxedStrategy<Ipv4Addr> {
    let anywhere = any::<u32>().prop_map(Ipv4Addr::from);
    if nets.is_empty() {
        return anywhere.boxed();
    }
    let inside = (select(nets.to_vec()), any::<u32>())
        .prop_map(|(n, r)| Ipv4Addr::from(u32::from(n.network()) | (r & u32::from(n.hostmask()))));
    let edge = (select(nets.to_vec()), 0..4u8).prop_map(|(n, k)| {
        let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
        Ipv4Addr::from(match k {
            0 => first,
            1 => last,
            2 => first.wrapping_sub(1),
            _ => last.wrapping_add(1),
        })
    });
    prop_oneof![2 => inside, 2 => edge, 1 => anywhere].boxed()
}

fn v6_source(nets: &[Ipv6Net]) -> BoxedStrategy<Ipv6Addr> {
    let anywhere = any::<u128>().prop_map(Ipv6Addr::from);
    if nets.is_empty() {
        return anywhere.boxed();
    }
    let inside = (select(nets.to_vec()), any::<u128>()).prop_map(|(n, r)| {
        Ipv6Addr::from(u128::from(n.network()) | (r & u128::from(n.hostmask())))
    });
    let edge = (select(nets.to_vec()), 0..4u8).prop_map(|(n, k)| {
        let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
        Ipv6Addr::from(match k {
            0 => first,
            1 => last,
            2 => first.wrapping_sub(1),
            _ => last.wrapping_add(1),
        })
    });
    prop_oneof![2 => inside, 2 => edge, 1 => anywhere].boxed()
}

/// TCP, UDP (to a protected port half the time), cut-short transport or another protocol.
fn l4(protected: &[u16]) -> impl Strategy<Value = L4> + use<> {
    let port = if protected.is_empty() {
        select(PORTS.to_vec()).boxed()
    } else {
        prop_oneof![select(protected.to_vec()), select(PORTS.to_vec())].boxed()
    };
    prop_oneof![
        4 => (port.clone(), any::<u16>()).prop_map(|(dst_port, src_port)| L4::Tcp { src_port, dst_port }),
        4 => (port, any::<u16>()).prop_map(|(dst_port, src_port)| L4::Udp { src_port, dst_port }),
        // A TCP/UDP header cut short, or the middle of a fragmented payload.
        2 => (select(vec![proto::TCP, proto::UDP]), vec(any::<u8>(), 0..12))
            .prop_map(|(protocol, payload)| L4::Raw { protocol, payload }),
        1 => (
            select(vec![proto::ICMP, proto::ICMPV6, proto::ESP, proto::NONE, proto::DSTOPTS, 4, 41, 47, 132]),
            vec(any::<u8>(), 0..12),
        )
            .prop_map(|(protocol, payload)| L4::Raw { protocol, payload }),
    ]
}

fn ext() -> impl Strategy<Value = Ext> {
    // Mostly short; now and then long enough to push the chain towards the 1024-byte bound.
    let len = prop_oneof![8 => 0u8..=3, 1 => 60u8..=127];
    prop_oneof![
        len.clone().prop_map(|len| Ext::HopByHop { len }),
        len.clone().prop_map(|len| Ext::Routing { len }),
        len.clone().prop_map(|len| Ext::DestOpts { len }),
        (prop_oneof![Just(0u16), 1u16..0x2000], any::<bool>())
            .prop_map(|(offset, more)| Ext::Fragment { offset, more }),
        prop_oneof![4 => 0u8..=6, 1 => 120u8..=255].prop_map(|len| Ext::Ah { len }),
        (select(vec![proto::MH, proto::HIP, proto::SHIM6]), len)
            .prop_map(|(protocol, len)| Ext::Other { protocol, len }),
    ]
}

fn vlans() -> impl Strategy<Value = Vec<Vlan>> {
    let tag = (select(vec![TPID_8021Q, TPID_8021AD]), any::<u16>())
        .prop_map(|(tpid, tci)| Vlan { tpid, tci });
    prop_oneof![6 => vec(tag.clone(), 0..=2), 1 => vec(tag, 3..=3)]
}

fn ipv4(
    sources: BoxedStrategy<Ipv4Addr>,
    l4: impl Strategy<Value = L4>,
) -> impl Strategy<Value = L3> {
    let fragment = prop_oneof![
        4 => Just((0u16, false)),
        2 => Just((0u16, true)),
        2 => (1u16..0x2000, any::<bool>()),
    ];
    (sources, vec(any::<u8>(), 0..=40), fragment, l4).prop_map(
        |(src, options, (frag_offset, more_fragments), l4)| {
            L3::V4(Ipv4 {
                options,
                frag_offset,
                more_fragments,
                ..Ipv4::new(src, l4)
            })
        },
    )
}

fn ipv6(
    sources: BoxedStrategy<Ipv6Addr>,
    l4: impl Strategy<Value = L4>,
) -> impl Strategy<Value = L3> {
    let chain = prop_oneof![
        6 => vec(ext(), 0..=3),
        2 => vec(ext(), 4..=8),
        1 => vec(ext(), 9..=10),
    ];
    (sources, chain, l4).prop_map(|(src, ext, l4)| {
        L3::V6(Ipv6 {
            ext,
            ..Ipv6::new(src, l4)
        })
    })
}

/// Random bytes behind an ethertype, IP ones included.
fn other_l3() -> impl Strategy<Value = L3> {
    (
        prop_oneof![
            select(vec![
                ETHERTYPE_IPV4,
                ETHERTYPE_IPV6,
                ETHERTYPE_ARP,
                TPID_8021Q,
                TPID_8021AD
            ]),
            any::<u16>()
        ],
        vec(any::<u8>(), 0..80),
    )
        .prop_map(|(ether_type, payload)| L3::Other {
            ether_type,
            payload,
        })
}

fn frame_for(allow: &Allowlist) -> impl Strategy<Value = (Packet, Vec<Mutation>)> + use<> {
    let l3 = prop_oneof![
        4 => ipv4(v4_source(&allow.v4), l4(&allow.ports)),
        4 => ipv6(v6_source(&allow.v6), l4(&allow.ports)),
        1 => other_l3(),
    ];
    let mutations = prop_oneof![1 => Just(vec![]), 1 => vec(mutation(), 1..=3)];
    (
        (vlans(), l3).prop_map(|(vlans, l3)| Packet { vlans, l3 }),
        mutations,
    )
}

fn case() -> impl Strategy<Value = (Allowlist, Vec<(Packet, Vec<Mutation>)>)> {
    allowlist().prop_flat_map(|allow| {
        let frames = vec(frame_for(&allow), FRAMES);
        (Just(allow), frames)
    })
}

/// Whether the model's counter is one of the drop counters (spelled out, not `Counter::drops`).
fn drops(counter: Counter) -> bool {
    matches!(
        counter,
        Counter::DropNotAllowed | Counter::DropFragment | Counter::DropMalformed
    )
}

fn check_case(
    allow: &Allowlist,
    frames: &[(Packet, Vec<Mutation>)],
    seen: &RefCell<[usize; Counter::COUNT as usize]>,
) -> Result<(), TestCaseError> {
    let mut desired = Desired {
        v4: allow.v4.clone(),
        v6: allow.v6.clone(),
        ports: allow.ports.clone(),
        settings: settings(true, false),
    };
    let mut tf = TestFilter::new(&desired);
    let built: Vec<Vec<u8>> = frames
        .iter()
        .map(|(packet, mutations)| {
            let mut frame = packet.to_bytes();
            frame.truncate(MAX_FRAME);
            for m in mutations {
                apply(&mut frame, m);
            }
            frame
        })
        .collect();
    for (enforce, strict) in [(true, false), (true, true), (false, false), (false, true)] {
        desired.settings = settings(enforce, strict);
        tf.filter()
            .apply(&desired)
            .map_err(|e| TestCaseError::fail(format!("applying {desired:?}: {e}")))?;
        for (i, frame) in built.iter().enumerate() {
            let want = model::classify(frame, &allow.v4, &allow.v6, &allow.ports, desired.settings);
            let want_action = if drops(want) { XDP_DROP } else { XDP_PASS };
            let describe = || {
                format!(
                    "frame {i} ({} bytes), enforce={enforce} strict={strict}\n  hex: {}\n  packet: {:?}\n  mutations: {:?}\n  allowlist: {allow:?}",
                    frame.len(),
                    hex(frame),
                    frames[i].0,
                    frames[i].1
                )
            };
            let got = catch_unwind(AssertUnwindSafe(|| tf.judge(frame)))
                .map_err(|_| TestCaseError::fail(format!("judge panicked on {}", describe())))?;
            prop_assert!(
                got == (want_action, want),
                "kernel gave (action {}, {:?}), model wants (action {want_action}, {want:?}) on {}",
                got.0,
                got.1,
                describe()
            );
            seen.borrow_mut()[want as usize] += 1;
        }
    }
    Ok(())
}

/// 32 allowlists × 200 random/mutated frames × 4 modes = 25,600 frames checked, and every one
/// of the nine counters must have been reached (so the generators cannot silently degenerate).
#[test]
fn kernel_verdict_equals_model_on_random_and_mutated_frames() {
    let config = ProptestConfig {
        cases: 32,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let seen = RefCell::new([0usize; Counter::COUNT as usize]);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |(allow, frames)| {
        check_case(&allow, &frames, &seen)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    let total: usize = seen.iter().sum();
    eprintln!("{total} frames checked; per counter:");
    for c in Counter::ALL {
        eprintln!("  {c:?}: {}", seen[c as usize]);
    }
    assert_eq!(total, 32 * FRAMES * 4, "frames checked");
    for c in Counter::ALL {
        assert!(
            seen[c as usize] >= 50,
            "the generated frames reached {c:?} only {} times: {seen:?}",
            seen[c as usize]
        );
    }
}
