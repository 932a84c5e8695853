//! Unit tests of `bench flood`: options, prefix sets, trafgen configs, the figures' math.

use super::*;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn parse(list: &[&str]) -> anyhow::Result<Option<Options>> {
    parse_options(&args(list))
}

fn parse_err(list: &[&str]) -> String {
    format!("{:#}", parse(list).expect_err("refused"))
}

#[test]
fn options_defaults_and_values() {
    assert_eq!(parse(&[]).unwrap(), Some(Options::default()));
    let o = parse(&[
        "--rounds",
        "5",
        "--seconds=2.5",
        "--prefixes",
        "12,1000",
        "--only",
        "iptables-ipset,hookwall-native",
        "--rps",
        "on",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        o,
        Options {
            rounds: 5,
            seconds: 2.5,
            prefixes: vec![12, 1000],
            // The baselines are added, in the enum's order.
            only: vec![
                Filter::None,
                Filter::HookwallNative,
                Filter::NftNetdev,
                Filter::IptablesIpset
            ],
            rps: vec![true],
        }
    );
    // A baseline named explicitly is not listed twice.
    let o = parse(&["--only", "none,nft-netdev"]).unwrap().unwrap();
    assert_eq!(o.only, [Filter::None, Filter::NftNetdev]);
}

#[test]
fn help_is_asked_for_not_an_error() {
    assert_eq!(parse(&["--help"]).unwrap(), None);
    assert_eq!(parse(&["--rounds", "2", "-h"]).unwrap(), None);
    assert!(USAGE.contains("--prefixes") && USAGE.contains("iptables-ipset"));
}

#[test]
fn unknown_option_names_it_and_the_valid_ones() {
    let e = parse_err(&["--round", "2"]);
    assert!(e.contains("\"--round\""), "{e}");
    for valid in [
        "--rounds",
        "--seconds",
        "--prefixes",
        "--only",
        "--rps",
        "--help",
    ] {
        assert!(e.contains(valid), "{e}");
    }
    // A stray value is not taken for an option's.
    assert!(parse_err(&["3"]).contains("unknown option \"3\""));
}

#[test]
fn bad_values_say_what_is_wrong() {
    for (list, needle) in [
        (&["--rounds", "0"][..], "--rounds \"0\""),
        (&["--rounds", "x"], "--rounds \"x\""),
        (&["--seconds", "-1"], "--seconds \"-1\""),
        (&["--seconds", "NaN"], "--seconds \"NaN\""),
        (&["--prefixes", "12,x"], "--prefixes \"12,x\""),
        (&["--prefixes", "0"], "--prefixes \"0\""),
        (
            &["--only", "nft"],
            "unknown configuration \"nft\"; known: xdp-drop",
        ),
        (&["--rps", "maybe"], "\"maybe\" is not off or on"),
        (&["--rounds"], "--rounds needs a value"),
    ] {
        let e = parse_err(list);
        assert!(e.contains(needle), "{list:?}: {e}");
    }
}

fn allowlist(n: usize) -> Allowlist {
    Allowlist::new(&mut StdRng::seed_from_u64(7), n)
}

/// Sorted, and each prefix starts past the end of the one before.
fn disjoint_v4(nets: &[Ipv4Net]) -> bool {
    nets.windows(2)
        .all(|w| u32::from(w[0].broadcast()) < u32::from(w[1].network()))
}

#[test]
fn allowlist_has_mixed_lengths_and_merges_without_overlaps() {
    let n = 2000;
    let allow = allowlist(n);
    let v4: Vec<Ipv4Net> = allow
        .raw
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(p) => Some(*p),
            IpNet::V6(_) => None,
        })
        .collect();
    let v6: Vec<Ipv6Net> = allow
        .raw
        .iter()
        .filter_map(|p| match p {
            IpNet::V6(p) => Some(*p),
            IpNet::V4(_) => None,
        })
        .collect();
    // n per family plus the generator's own address.
    assert_eq!((v4.len(), v6.len()), (n + 1, n));
    assert!(v4.contains(&Ipv4Net::new(GEN_V4, 32).unwrap()));
    let lens4: std::collections::BTreeSet<u8> = v4.iter().map(Ipv4Net::prefix_len).collect();
    for want in [16..=23, 24..=24, 25..=31, 32..=32] {
        assert!(
            lens4.iter().any(|l| want.contains(l)),
            "{want:?}: {lens4:?}"
        );
    }
    let lens6: std::collections::BTreeSet<u8> = v6.iter().map(Ipv6Net::prefix_len).collect();
    for want in [29..=47, 48..=64, 128..=128] {
        assert!(
            lens6.iter().any(|l| want.contains(l)),
            "{want:?}: {lens6:?}"
        );
    }
    assert!(
        v6.iter().all(|p| p.addr().segments()[0] >> 13 == 1),
        "2000::/3"
    );
    // The interval sets refuse overlaps: the merged list has none and still holds every
    // prefix as written.
    assert!(disjoint_v4(&allow.merged_v4));
    assert!(allow.merged_v4.len() <= v4.len());
    for p in &v4 {
        assert!(allow.merged_v4.iter().any(|m| m.contains(p)), "{p} lost");
    }
    for w in allow.merged_v6.windows(2) {
        assert!(u128::from(w[0].broadcast()) < u128::from(w[1].network()));
    }
    for p in &v6 {
        assert!(allow.merged_v6.iter().any(|m| m.contains(p)), "{p} lost");
    }
    // The block pattern's prefixes: allowed, longer than /18, not the generator.
    assert!(!allow.long_v4.is_empty());
    for p in &allow.long_v4 {
        assert!(p.prefix_len() > 18 && v4.contains(p) && p.addr() != GEN_V4);
    }
}

/// The `{ ... }` templates of a trafgen config.
fn templates(conf: &str) -> Vec<&str> {
    conf.lines().filter(|l| l.starts_with('{')).collect()
}

/// The value after `key` up to the next `,` or `)`.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
    &rest[..rest.find([',', ')']).unwrap()]
}

fn config(sources: Sources, allow: &Allowlist) -> String {
    trafgen_config(
        sources,
        allow,
        "02:00:00:00:00:01",
        &mut StdRng::seed_from_u64(9),
    )
    .expect("a config")
}

#[test]
fn trafgen_blocks_flood_whole_18s_around_allowed_prefixes() {
    let allow = allowlist(1000);
    let conf = config(Sources::V4Blocks, &allow);
    let lines = templates(&conf);
    assert_eq!(lines.len(), TEMPLATES);
    for line in lines {
        assert!(line.contains("eth(da=02:00:00:00:00:01)"), "{line}");
        assert!(
            line.contains(&format!("dp={PORT}")) && line.contains("syn"),
            "{line}"
        );
        let base: Ipv4Addr = field(line, "sa=").parse().unwrap();
        let range = &line[line.find("sa[2:2]=drnd(").unwrap() + 13..];
        let (lo, hi) = range[..range.find(')').unwrap()].split_once(", ").unwrap();
        let (lo, hi): (u32, u32) = (lo.parse().unwrap(), hi.parse().unwrap());
        // The random low 16 bits span exactly the /18 the fixed part names.
        let block = Ipv4Net::new(base, 18).unwrap();
        assert_eq!(block.network(), base, "{line}");
        assert_eq!(lo, u32::from(base) & 0xffff, "{line}");
        assert_eq!(hi, lo + 0x3fff, "{line}");
        // The /18 holds an allowed prefix longer than /18 (the index's coarse level cannot
        // decide) and is not itself allowed whole (most of the flood must be dropped).
        assert!(allow.long_v4.iter().any(|p| block.contains(p)), "{line}");
        assert!(
            !allow.merged_v4.iter().any(|m| m.contains(&block)),
            "{block} is allowed whole"
        );
    }
}

#[test]
fn trafgen_any_and_v6_sources() {
    let allow = allowlist(100);
    let conf = config(Sources::V4Any, &allow);
    let lines = templates(&conf);
    assert_eq!(lines.len(), TEMPLATES);
    for line in lines {
        assert_eq!(field(line, "ipv4(sa="), "drnd(");
        assert_eq!(field(line, ", da="), SRV_V4.to_string());
    }
    let conf = config(Sources::V6, &allow);
    let lines = templates(&conf);
    assert_eq!(lines.len(), TEMPLATES);
    let mut highs = std::collections::HashSet::new();
    for line in lines {
        let fixed: Ipv6Addr = field(line, "ipv6(sa=").parse().unwrap();
        assert_eq!(fixed.segments()[0] >> 13, 1, "{fixed} in 2000::/3");
        assert_eq!(
            u128::from(fixed) & 0xffff_ffff,
            0,
            "{fixed}: random low 32 bits"
        );
        // Only the last 32 bits are drawn per packet (a bare `sa=drnd()` draws all 128).
        assert!(line.contains(", sa[12:4]=drnd(),"), "{line}");
        assert!(!line.contains(" sa=drnd()"), "{line}");
        assert_eq!(field(line, ", da="), SRV_V6.to_string());
        highs.insert(fixed);
    }
    assert!(highs.len() > TEMPLATES / 2, "random /96s: {}", highs.len());
}

#[test]
fn trafgen_blocks_need_a_long_prefix() {
    // The bench's seeded 12 prefixes have some; a list without any is refused, not indexed.
    let mut allow = allowlist(12);
    assert!(!allow.long_v4.is_empty());
    allow.long_v4.clear();
    let e = trafgen_config(
        Sources::V4Blocks,
        &allow,
        "02:00:00:00:00:01",
        &mut StdRng::seed_from_u64(1),
    )
    .expect_err("refused");
    assert!(format!("{e}").contains("longer than /18"), "{e}");
    assert!(config(Sources::V4Any, &allow).contains("sa=drnd()"));
}

#[test]
fn trafgen_sends_with_blocking_sendto() {
    let a = trafgen_args("hwfb", Path::new("/tmp/x.trafgen"));
    // `-t 0`: the blocking path; the TX ring exits on a full send buffer.
    let t = a.iter().position(|x| x == "-t").expect("-t");
    assert_eq!(a[t + 1], "0");
    assert!(a.iter().any(|x| x == "--no-sock-mem"), "{a:?}");
    let o = a.iter().position(|x| x == "-o").unwrap();
    assert_eq!(a[o + 1], "hwfb");
    assert_eq!(a.last().map(String::as_str), Some("/tmp/x.trafgen"));
}

fn sample(rx_pps: f64) -> Sample {
    Sample {
        rx_pps,
        ..Sample::default()
    }
}

#[test]
fn spread_and_per_round_ratios() {
    assert_eq!(spread(vec![3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
    assert_eq!(spread(vec![5.0, f64::NAN, 4.0, 9.0, 1.0]), (1.0, 5.0, 9.0));
    assert!(spread(vec![f64::INFINITY]).1.is_nan());
    // Each round against its own baseline: 200/100, 300/100, 100/50.
    let samples = [sample(200.0), sample(300.0), sample(100.0)];
    let base = [sample(100.0), sample(100.0), sample(50.0)];
    assert_eq!(round_ratios(&samples, &base, |s| s.rx_pps), (2.0, 2.0, 3.0));
    // Not the ratio of medians (200 / 100 = 2 here too, so change one round).
    let base = [sample(100.0), sample(50.0), sample(100.0)];
    assert_eq!(round_ratios(&samples, &base, |s| s.rx_pps), (1.0, 2.0, 6.0));
}

#[test]
fn percentiles_and_counter_sums() {
    let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&sorted, 0.5), 50.0);
    assert_eq!(percentile(&sorted, 0.99), 99.0);
    assert_eq!(percentile(&sorted[..1], 0.99), 1.0);
    assert!(percentile(&[], 0.5).is_nan());
    let chain = "chain flood {\n ip saddr != @allow4 tcp dport 8443 counter packets 5 \
                 bytes 300 drop\n ip6 saddr != @allow6 tcp dport 8443 counter packets 7 \
                 bytes 560 drop\n}";
    assert_eq!(sum_after(chain, "counter packets "), 12);
}

#[test]
fn an_interrupt_stops_the_next_wait() {
    assert!(sleep_interruptible(Duration::from_millis(1)).is_ok());
    on_signal(libc::SIGINT);
    let e = sleep_interruptible(Duration::from_secs(60)).expect_err("interrupted");
    assert!(format!("{e}").contains("interrupted"), "{e}");
    INTERRUPTED.store(false, Ordering::SeqCst);
}
