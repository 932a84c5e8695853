//! `cargo xtask bench <filter|http|delivery|flood>`: prints figures and ratios against baselines
//! measured in the same run. Method and results: docs/benchmarks.md.
/// The daemon's allocator (filter-user's main.rs): the reload figures time `Filter::apply` in
/// this process, and the cost of its large transient buffers depends on the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use filter_common::{FLOOR_PROGRAM_NAME, PROBE_PROGRAM_NAME};
use hookwall::config::AttachMode;
use hookwall::filter::{Desired, FLOOR_OBJECT, PROBE_OBJECT};
use hookwall_tests::{
    TestFilter, XDP_DROP, XDP_PASS,
    config::ConfigSpec,
    daemon::{Daemon, PinsGuard},
    netns::{NetNs, VethPair},
    settings,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

#[path = "bench/delivery.rs"]
mod delivery;
#[path = "bench/flood.rs"]
mod flood;
#[path = "bench/http.rs"]
mod http;

/// Prefix-set sizes per family the bar names.
const SIZES: [usize; 3] = [12, 10_000, 100_000];
/// Distinct source addresses per measured path.
const SOURCES: usize = 4096;
/// BPF_PROG_TEST_RUN repeats per source: 1 (every run a new, cache-cold source; the kernel's
/// timer read is inside the figure, for the floor too) and 64 (the first run of each source is
/// cold, the rest warm).
const REPEATS: [u32; 2] = [1, 64];
/// Measurement rounds; the median is reported.
const ROUNDS: usize = 5;
/// Array sizes of the one-read probe rows: the summary's 1 MiB and smaller.
const PROBE_KIB: [u32; 5] = [1024, 256, 128, 32, 8];
const PORT: u16 = 443;

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    match which.as_str() {
        "filter" => bench_filter(std::env::args().nth(2).as_deref().unwrap_or_default()),
        "http" => http::bench_http(std::env::args().nth(2).as_deref() == Some("latency")),
        "delivery" => delivery::bench_delivery(),
        "flood" => flood::bench_flood(&std::env::args().skip(2).collect::<Vec<_>>()),
        other => bail!("unknown benchmark {other:?}: use filter, http, delivery or flood"),
    }
}

/// The filter benchmark. `mode` "rss": just the daemon memory figures; "drop": just the random
/// drop paths at the largest size (a quick check while tuning the program); anything else: all.
fn bench_filter(mode: &str) -> anyhow::Result<()> {
    let (rss_only, drop_only) = (mode == "rss", mode == "drop");
    // BPF_PROG_TEST_RUN with repeat > 1 swaps the program into the kernel's XDP dispatcher and
    // back (two RCU grace periods, milliseconds) unless it is already there. Attaching both
    // programs natively to a veth pair in namespaces of our own keeps them there; no packet
    // ever crosses that pair.
    let (ns_a, ns_b) = (NetNs::new("hw-bench-a"), NetNs::new("hw-bench-b"));
    let veth = VethPair::new(&ns_a, &[], &ns_b, &[]);
    let mut floor = Bare::floor()?;
    ns_b.run(|| floor.attach(&veth.b))?;
    let mut rng = StdRng::seed_from_u64(0x686f_6f6b);
    println!(
        "hookwall filter benchmark: BPF_PROG_TEST_RUN, {SOURCES} distinct sources, median of \
         {ROUNDS} rounds; ns/pkt at repeat 1 (cold) and repeat 64; floor = XDP_DROP at once"
    );
    println!(
        "columns: hookwall, the same program with every lookup sent to the LPM trie (a plain-trie \
         filter, same prefixes), and the floor; hookwall and the floor alternate on each frame in \
         one pass, the trie and the floor in another; each ratio is to the floor of its own pass"
    );
    println!(
        "{:>8}  {:<6} {:<21} | {:>6} {:>6} {:>6} {:>5} {:>5} | {:>6} {:>6} {:>6} {:>5} {:>5}",
        "prefixes",
        "family",
        "path",
        "r1 hw",
        "trie",
        "floor",
        "hw/f",
        "tr/f",
        "r64 hw",
        "trie",
        "floor",
        "hw/f",
        "tr/f"
    );
    let veth_trie = VethPair::new(&ns_a, &[], &ns_b, &[]);
    let sizes: &[usize] = match (rss_only, drop_only) {
        (true, _) => &[],
        (_, true) => &SIZES[SIZES.len() - 1..],
        _ => &SIZES,
    };
    for &n in sizes {
        let v4 = random_v4(&mut rng, n);
        let v6 = random_v6(&mut rng, n);
        let desired = Desired {
            v4: v4.clone(),
            v6: v6.clone(),
            ports: vec![PORT],
            settings: settings(true, false),
        };
        let mut filter = TestFilter::new(&desired);
        ns_a.run(|| {
            filter
                .filter()
                .attach(std::slice::from_ref(&veth.a), AttachMode::Native)
        })
        .context("attaching the filter to the bench veth")?;
        // A plain-trie filter, for the baseline column: same program and prefixes, every summary
        // bit set and every index block "partial", so each lookup walks the trie.
        let mut trie = TestFilter::new(&desired);
        ns_a.run(|| {
            trie.filter()
                .attach(std::slice::from_ref(&veth_trie.a), AttachMode::Native)
        })
        .context("attaching the trie-only filter to the bench veth")?;
        trie.filter()
            .force_trie_lookups_for_bench()
            .context("forcing trie lookups")?;
        let v4_set = PrefixSet::new(v4.iter().copied().map(IpNet::V4));
        let v6_set = PrefixSet::new(v6.iter().copied().map(IpNet::V6));

        let drop4: Vec<Vec<u8>> = (0..SOURCES)
            .map(|_| {
                loop {
                    let a = Ipv4Addr::from(rng.random::<u32>());
                    if !v4_set.contains(a) {
                        break syn_v4(a);
                    }
                }
            })
            .collect();
        let pass4: Vec<Vec<u8>> = (0..SOURCES)
            .map(|_| {
                let net = v4[rng.random_range(0..v4.len())];
                let host =
                    u32::from(net.network()) | (rng.random::<u32>() & !u32::from(net.netmask()));
                syn_v4(Ipv4Addr::from(host))
            })
            .collect();
        let drop6: Vec<Vec<u8>> = (0..SOURCES)
            .map(|_| {
                loop {
                    // Global unicast 2000::/3, like real attack sources.
                    let bits = (rng.random::<u128>() >> 3) | (1u128 << 125);
                    let a = Ipv6Addr::from(bits);
                    if !v6_set.contains(a) {
                        break syn_v6(a);
                    }
                }
            })
            .collect();
        let pass6: Vec<Vec<u8>> = (0..SOURCES)
            .map(|_| {
                let net = v6[rng.random_range(0..v6.len())];
                let host =
                    u128::from(net.network()) | (rng.random::<u128>() & !u128::from(net.netmask()));
                syn_v6(Ipv6Addr::from(host))
            })
            .collect();
        // Diagnostic, not a bar figure: distinct sources all inside one /23 that no allowed
        // prefix touches, so every lookup reads the same summary word. Beside "drop (random)",
        // it separates the program's own cost from the cache miss on the summary.
        // Its own RNG, so the prefix sets of the later sizes stay those of earlier versions.
        let mut diag_rng = StdRng::seed_from_u64(n as u64);
        let quiet_block = loop {
            let base = diag_rng.random::<u32>() & !0x1ff;
            let block = Ipv4Net::new(Ipv4Addr::from(base), 23).expect("valid length");
            if !v4
                .iter()
                .any(|n| n.contains(&block.network()) || block.contains(&n.network()))
            {
                break base;
            }
        };
        let one_word4: Vec<Vec<u8>> = (0..SOURCES)
            .map(|_| {
                syn_v4(Ipv4Addr::from(
                    quiet_block | (diag_rng.random::<u32>() & 0x1ff),
                ))
            })
            .collect();
        // Diagnostic too: distinct sources anywhere in one /8, not allowed. Their summary bits
        // lie in one 4 KiB page (a /8 is 32,768 bits) but in 64 different cache lines; beside the
        // two rows above it tells a page-walk (TLB) cost from a cache-line cost.
        let slash8 = diag_rng.random::<u32>() & 0xff00_0000;
        let one_page4: Vec<Vec<u8>> = (0..SOURCES)
            .map(|_| {
                loop {
                    let a = Ipv4Addr::from(slash8 | (diag_rng.random::<u32>() & 0x00ff_ffff));
                    if !v4_set.contains(a) {
                        break syn_v4(a);
                    }
                }
            })
            .collect();
        // Sources just beside allowed long prefixes: their block is "partial", so the drop
        // needs the trie. The worst case for the index, reported separately.
        let near4: Vec<Vec<u8>> = (0..SOURCES)
            .filter_map(|i| {
                let net = v4[i % v4.len()];
                (net.prefix_len() > 24).then(|| {
                    let a = Ipv4Addr::from(u32::from(net.broadcast()).wrapping_add(1));
                    (!v4_set.contains(a)).then(|| syn_v4(a))
                })?
            })
            .collect();

        let rows: Vec<Row> = [
            ("ipv4", "drop (random)", &drop4, XDP_DROP),
            ("ipv4", "drop (one /23, diag)", &one_word4, XDP_DROP),
            ("ipv4", "drop (one /8, diag)", &one_page4, XDP_DROP),
            ("ipv4", "pass", &pass4, XDP_PASS),
            ("ipv4", "drop (beside a /25+)", &near4, XDP_DROP),
            ("ipv6", "drop (random)", &drop6, XDP_DROP),
            ("ipv6", "pass", &pass6, XDP_PASS),
        ]
        .into_iter()
        .filter(|(_, path, frames, _)| {
            let quick_row = path.starts_with("drop (random") || path.starts_with("drop (one");
            !frames.is_empty() && (quick_row || !drop_only)
        })
        .map(|(family, path, frames, expect)| Row {
            family,
            path,
            frames,
            expect,
        })
        .collect();
        for (row, figures) in rows
            .iter()
            .zip(measure(&mut filter, &mut trie, &floor, &rows))
        {
            println!("{n:>8}  {:<6} {:<21} | {figures}", row.family, row.path);
        }
        if n == *sizes.last().expect("at least one size") {
            // Diagnostic: the random IPv4 drop sources through the probe, the floor plus one
            // read of an array allocated like the summary, at the positions hookwall reads
            // (folded into smaller arrays for the smaller sizes). Beside "drop (random)" it
            // shows how much of that row a single random read costs, and how that cost
            // depends on the size of what is read.
            for kib in PROBE_KIB {
                let mut probe = Bare::probe(kib * 1024 / 8)?;
                ns_b.run(|| probe.attach(&veth_trie.b))?;
                let row = measure_bare(&probe, &floor, &drop4);
                let path = format!("one read of {kib} KiB");
                println!("{n:>8}  {:<6} {path:<21} | {row}", "diag");
            }
        }
        drop((filter, trie));
        if !drop_only {
            bench_reload(n, &v4, &v6, &mut rng);
        }
    }
    let rss_sizes: &[usize] = if drop_only { &[] } else { &[12, 100_000] };
    for &n in rss_sizes {
        let kib = daemon_rss_kib(&ns_a, &ns_b, n, &mut rng)?;
        println!(
            "{n:>8}  daemon RSS: {:.1} MiB with {n} IPv4 + {n} IPv6 prefixes (from an allowlist file)",
            kib as f64 / 1024.0
        );
    }
    Ok(())
}

/// Resident memory of a real `hookwall run` holding `n` prefixes per family, once it serves
/// metrics (the allowlist applied and attached).
fn daemon_rss_kib(ns_a: &NetNs, ns_b: &NetNs, n: usize, rng: &mut StdRng) -> anyhow::Result<u64> {
    let veth = VethPair::new(ns_a, &[], ns_b, &[]);
    let dir = tempfile::tempdir().context("making a temp dir")?;
    let list = dir.path().join("allow.txt");
    let mut text = String::new();
    for net in random_v4(rng, n) {
        text.push_str(&format!("{net}\n"));
    }
    for net in random_v6(rng, n) {
        text.push_str(&format!("{net}\n"));
    }
    std::fs::write(&list, text).context("writing the allowlist file")?;
    let pins = PinsGuard::new();
    let spec = ConfigSpec::new(&veth.a, pins.path(), dir.path(), &[]);
    let config = spec.render().replace(
        "files = []",
        &format!("files = [{:?}]", list.display().to_string()),
    );
    let config_path = dir.path().join("hookwall.toml");
    std::fs::write(&config_path, config).context("writing the config")?;
    let mut daemon = Daemon::start(ns_a, &config_path, spec.metrics_listen, dir.path());
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
        .context("reading the daemon's /proc status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")?;
    daemon.term();
    Ok(kib)
}

/// Reload timings for `n` prefixes per family: initial load, a no-op reload, 1% changed, and a
/// full replacement by a disjoint set.
fn bench_reload(n: usize, v4: &[Ipv4Net], v6: &[Ipv6Net], rng: &mut StdRng) {
    let empty = Desired {
        ports: vec![PORT],
        settings: settings(true, false),
        ..Desired::default()
    };
    let full = Desired {
        v4: v4.to_vec(),
        v6: v6.to_vec(),
        ..empty.clone()
    };
    let mut one_percent = full.clone();
    let changed = (n / 100).max(1);
    one_percent.v4[..changed].copy_from_slice(&random_v4(rng, changed));
    one_percent.v6[..changed].copy_from_slice(&random_v6(rng, changed));
    let other = Desired {
        v4: random_v4(rng, n),
        v6: random_v6(rng, n),
        ..empty.clone()
    };
    let mut filter = TestFilter::new(&empty);
    let mut time = |d: &Desired| {
        let t = Instant::now();
        filter.filter().apply(d).expect("apply");
        t.elapsed().as_secs_f64() * 1e3
    };
    let load = time(&full);
    let noop = time(&full);
    let small = time(&one_percent);
    let replace = time(&other);
    println!(
        "{n:>8}  reload ms: initial load {load:.2}, no-op {noop:.2}, 1% changed {small:.2}, full replace {replace:.2}"
    );
}

/// One row of the per-packet table: frames and the verdict each must get.
struct Row<'a> {
    family: &'static str,
    path: &'static str,
    frames: &'a [Vec<u8>],
    expect: u32,
}

/// Per-packet figures of hookwall and of the trie-only baseline, each against the floor, for
/// every row: one formatted line per row.
///
/// Each filter is measured in its own pass, alternating with the floor frame by frame, so that
/// a ratio's two figures see the same machine state. All of hookwall's rows come first, then
/// all of the trie's: a trie round walks up to 100,000 nodes per packet and evicts hookwall's
/// cache lines, which no deployment does between packets. Each row and repeat count starts with
/// one unmeasured warm-up round, then [`ROUNDS`] measured ones.
fn measure(
    filter: &mut TestFilter,
    trie: &mut TestFilter,
    floor: &Bare,
    rows: &[Row],
) -> Vec<String> {
    let mut hw = |frame: &[u8], repeat| filter.run_repeat(frame, repeat);
    let hw_figures: Vec<Vec<[f64; 2]>> = rows
        .iter()
        .map(|row| medians(row.frames, row.expect, &mut hw, floor))
        .collect();
    let mut tr = |frame: &[u8], repeat| trie.run_repeat(frame, repeat);
    let trie_figures: Vec<Vec<[f64; 2]>> = rows
        .iter()
        .map(|row| medians(row.frames, row.expect, &mut tr, floor))
        .collect();
    hw_figures
        .iter()
        .zip(&trie_figures)
        .map(|(hw, tr)| {
            hw.iter()
                .zip(tr)
                .map(|([h, fl], [t, tr_fl])| {
                    format!(
                        "{h:>6.1} {t:>6.1} {fl:>6.1} {:>5.2} {:>5.2}",
                        h / fl,
                        t / tr_fl
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// For each of [`REPEATS`]: a warm-up round, then the median over [`ROUNDS`] rounds of the
/// program's and the floor's mean ns per packet.
fn medians(
    frames: &[Vec<u8>],
    expect: u32,
    program: &mut RunFn<'_>,
    floor: &Bare,
) -> Vec<[f64; 2]> {
    REPEATS
        .iter()
        .map(|&repeat| {
            per_packet(frames, expect, repeat, program, floor);
            let rounds: Vec<[f64; 2]> = (0..ROUNDS)
                .map(|_| per_packet(frames, expect, repeat, program, floor))
                .collect();
            [0, 1].map(|i| median(rounds.iter().map(|r| r[i]).collect()))
        })
        .collect()
}

/// A bench-only program against the floor, in [`measure`]'s column layout without the trie
/// columns: "program floor ratio" at each repeat count.
fn measure_bare(program: &Bare, floor: &Bare, frames: &[Vec<u8>]) -> String {
    let mut run = |frame: &[u8], repeat| program.run(frame, repeat);
    medians(frames, XDP_DROP, &mut run, floor)
        .iter()
        .map(|[p, fl]| format!("{p:>6.1} {:>6} {fl:>6.1} {:>5.2} {:>5}", "", p / fl, ""))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs a frame `repeat` times through a program; returns its action and mean ns per run.
type RunFn<'a> = dyn FnMut(&[u8], u32) -> (u32, f64) + 'a;

/// Mean kernel-measured ns per packet of `filter` and of the floor over `frames`, the two run
/// back to back on each frame (which goes first alternates from frame to frame) so that both
/// see the same machine state; asserts every verdict. Samples over 100 times the median are
/// dropped: those are the thread being preempted (microseconds), not a lookup, and one would
/// outweigh thousands of packets.
fn per_packet(
    frames: &[Vec<u8>],
    expect: u32,
    repeat: u32,
    filter: &mut RunFn<'_>,
    floor: &Bare,
) -> [f64; 2] {
    let mut samples: [Vec<f64>; 2] = Default::default();
    for (n, frame) in frames.iter().enumerate() {
        let mut run_filter = |samples: &mut [Vec<f64>; 2]| {
            let (action, ns) = filter(frame, repeat);
            assert_eq!(action, expect, "benchmark frame got the wrong verdict");
            samples[0].push(ns);
        };
        let run_floor = |samples: &mut [Vec<f64>; 2]| {
            let (action, ns) = floor.run(frame, repeat);
            assert_eq!(action, XDP_DROP, "the floor must drop");
            samples[1].push(ns);
        };
        if n % 2 == 0 {
            run_filter(&mut samples);
            run_floor(&mut samples);
        } else {
            run_floor(&mut samples);
            run_filter(&mut samples);
        }
    }
    samples.map(|mut v| {
        let cutoff = median(v.clone()).max(1.0) * 100.0;
        v.retain(|&ns| ns <= cutoff);
        v.iter().sum::<f64>() / v.len() as f64
    })
}

/// A bench-only program run through the same harness: the floor (XDP_DROP at once) or the
/// one-read probe.
struct Bare {
    ebpf: Ebpf,
    name: &'static str,
}

impl Bare {
    /// The floor: a program that returns XDP_DROP at once.
    fn floor() -> anyhow::Result<Self> {
        Self::load(FLOOR_OBJECT, FLOOR_PROGRAM_NAME)
    }

    /// The floor plus one random read of a `words`-word array (a power of two) allocated like
    /// the summary.
    fn probe(words: u32) -> anyhow::Result<Self> {
        let mask = words - 1;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("HW_PROBE", words)
            .override_global("PROBE_WORD_MASK", &mask, true);
        Self::load_with(&mut loader, PROBE_OBJECT, PROBE_PROGRAM_NAME)
    }

    fn load(object: &[u8], name: &'static str) -> anyhow::Result<Self> {
        Self::load_with(&mut EbpfLoader::new(), object, name)
    }

    fn load_with(
        loader: &mut EbpfLoader<'_>,
        object: &[u8],
        name: &'static str,
    ) -> anyhow::Result<Self> {
        let mut ebpf = loader
            .load(object)
            .with_context(|| format!("loading {name}"))?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from its object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("loading {name} into the kernel"))?;
        Ok(Self { ebpf, name })
    }

    fn attach(&mut self, iface: &str) -> anyhow::Result<()> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(self.name)
            .context("program missing")?
            .try_into()?;
        let name = std::ffi::CString::new(iface)?;
        prog.attach(name.as_c_str(), aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching {} to {iface}", self.name))?;
        Ok(())
    }

    fn run(&self, frame: &[u8], repeat: u32) -> (u32, f64) {
        let prog: &Xdp = self
            .ebpf
            .program(self.name)
            .expect("loaded")
            .try_into()
            .expect("xdp");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let r = prog
            .test_run(opts)
            .unwrap_or_else(|e| panic!("test_run {}: {e}", self.name));
        (r.return_value, r.duration.as_secs_f64() * 1e9)
    }
}

/// IPv4 prefixes with a length mix like real allowlists: mostly /24 and /32, some shorter.
fn random_v4(rng: &mut StdRng, n: usize) -> Vec<Ipv4Net> {
    (0..n)
        .map(|_| {
            let len = match rng.random_range(0..100) {
                0..40 => 32,
                40..75 => 24,
                75..85 => rng.random_range(25..32),
                _ => rng.random_range(16..24),
            };
            Ipv4Net::new(Ipv4Addr::from(rng.random::<u32>()), len)
                .expect("valid length")
                .trunc()
        })
        .collect()
}

/// IPv6 prefixes in 2000::/3: mostly /48 to /64, some /128 and /32.
fn random_v6(rng: &mut StdRng, n: usize) -> Vec<Ipv6Net> {
    (0..n)
        .map(|_| {
            let len = match rng.random_range(0..100) {
                0..30 => 128,
                30..80 => rng.random_range(48..=64),
                _ => rng.random_range(29..48),
            };
            let bits = (rng.random::<u128>() >> 3) | (1u128 << 125);
            Ipv6Net::new(Ipv6Addr::from(bits), len)
                .expect("valid length")
                .trunc()
        })
        .collect()
}

/// Membership by masking the address at each prefix length present: exact, and independent of
/// the kernel's index.
struct PrefixSet {
    by_len: Vec<(u8, HashSet<IpNet>)>,
}

impl PrefixSet {
    fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut by_len: Vec<(u8, HashSet<IpNet>)> = Vec::new();
        for net in nets {
            match by_len.iter_mut().find(|(l, _)| *l == net.prefix_len()) {
                Some((_, set)) => {
                    set.insert(net);
                }
                None => by_len.push((net.prefix_len(), HashSet::from([net]))),
            }
        }
        Self { by_len }
    }

    fn contains(&self, a: impl Into<IpAddr>) -> bool {
        let a = a.into();
        self.by_len
            .iter()
            .any(|(len, set)| IpNet::new(a, *len).is_ok_and(|net| set.contains(&net.trunc())))
    }
}

/// A TCP SYN from `src` to the protected port.
fn syn_v4(src: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&[192, 0, 2, 1]);
    f.extend_from_slice(&tcp_syn());
    f
}

/// See [`syn_v4`].
fn syn_v6(src: Ipv6Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(74);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("literal").octets());
    f.extend_from_slice(&tcp_syn());
    f
}

fn tcp_syn() -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&PORT.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t
}
