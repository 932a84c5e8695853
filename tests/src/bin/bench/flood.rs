//! `bench flood`: a SYN flood from trafgen through a veth pair, against hookwall's XDP filter
//! (native and generic), nftables (netdev ingress and inet prerouting, interval sets) and
//! iptables' raw table with ipset `hash:net`, all with the same allowlist, alternated round by
//! round in one run; plus no filter at all and an `XDP_DROP` floor (the generator's ceiling).
//!
//! Topology, made here and removed on drop: a generator namespace and a server namespace joined
//! by one veth, addresses from 198.18.0.0/15 (IPv6: 2001:db8:18::/64). The server's only route
//! besides the link points back into the generator namespace, which does not forward, so every
//! answer to a forged source dies inside the pair. Every firewall command runs with
//! `ip netns exec` in the server namespace. Method and figures: docs/benchmarks.md.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use hookwall_tests::{
    config::{ConfigSpec, Route},
    daemon::{Daemon, PinsGuard, parse_samples},
    https::{TestCa, request},
    netns::{NetNs, VethPair},
    signal_child,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use rustls::ClientConfig;

use super::{Bare, random_v4, random_v6};

const SRV_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The generator's own address: the legitimate client's source, on the allowlist.
const GEN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SRV_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 1);
const GEN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
const PORT: u16 = 8443;
/// The CPU trafgen is pinned to; the other one is the server's (RPS steers receive work there).
const SENDER_CPU: usize = 0;
const SERVER_CPU: usize = 1;
/// The legitimate client's pace: one connect + request every this long.
const CLIENT_PACE: Duration = Duration::from_millis(50);
/// Packet templates per generated trafgen config (trafgen cycles through them).
const TEMPLATES: usize = 64;

/// One system judging the flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Filter {
    /// An XDP program that drops at once: what the generator can push at all.
    Floor,
    None,
    HookwallNative,
    HookwallGeneric,
    NftNetdev,
    NftInet,
    IptablesIpset,
}

impl Filter {
    const ALL: [Self; 7] = [
        Self::Floor,
        Self::None,
        Self::HookwallNative,
        Self::HookwallGeneric,
        Self::NftNetdev,
        Self::NftInet,
        Self::IptablesIpset,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Floor => "xdp-drop",
            Self::None => "none",
            Self::HookwallNative => "hookwall-native",
            Self::HookwallGeneric => "hookwall-generic",
            Self::NftNetdev => "nft-netdev",
            Self::NftInet => "nft-inet",
            Self::IptablesIpset => "iptables-ipset",
        }
    }
}

/// The source addresses of the flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sources {
    /// Uniform over the whole IPv4 space.
    V4Any,
    /// Uniform inside /18 blocks that each contain an allowed prefix longer than /18.
    V4Blocks,
    /// IPv6, random in 2000::/3 (random /96s, random last 32 bits).
    V6,
}

impl Sources {
    const ALL: [Self; 3] = [Self::V4Any, Self::V4Blocks, Self::V6];

    fn name(self) -> &'static str {
        match self {
            Self::V4Any => "v4 any",
            Self::V4Blocks => "v4 /18 blocks",
            Self::V6 => "v6",
        }
    }
}

struct Options {
    rounds: usize,
    seconds: f64,
    prefixes: Vec<usize>,
    only: Vec<Filter>,
    rps: Vec<bool>,
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        rounds: 3,
        seconds: 2.0,
        prefixes: vec![12, 100_000],
        only: Filter::ALL.to_vec(),
        rps: vec![false, true],
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value (see docs/benchmarks.md)"))?;
        match flag.as_str() {
            "--rounds" => o.rounds = value.parse().context("--rounds: a whole number")?,
            "--seconds" => o.seconds = value.parse().context("--seconds: a number")?,
            "--prefixes" => {
                o.prefixes = value
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--prefixes: whole numbers separated by commas, e.g. 12,100000")?;
            }
            "--only" => {
                o.only = value
                    .split(',')
                    .map(|name| {
                        Filter::ALL
                            .into_iter()
                            .find(|f| f.name() == name)
                            .with_context(|| {
                                format!(
                                    "--only: unknown configuration {name:?}; known: {}",
                                    Filter::ALL.map(Filter::name).join(", ")
                                )
                            })
                    })
                    .collect::<anyhow::Result<_>>()?;
                // The ratios need their baselines.
                for base in [Filter::None, Filter::NftNetdev] {
                    if !o.only.contains(&base) {
                        o.only.push(base);
                    }
                }
                o.only.sort();
            }
            "--rps" => {
                o.rps = value
                    .split(',')
                    .map(|v| match v {
                        "off" => Ok(false),
                        "on" => Ok(true),
                        other => bail!("--rps: {other:?} is not off or on"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => bail!(
                "unknown option {other:?}: use --rounds N, --seconds S, --prefixes 12,100000, \
                 --only CONFIG[,CONFIG], --rps off,on"
            ),
        }
    }
    ensure!(
        o.rounds > 0 && o.seconds > 0.0,
        "--rounds and --seconds must be positive"
    );
    Ok(o)
}

/// What one flood against one configuration measured.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Packets the generator's veth end sent, per second.
    sent_pps: f64,
    /// Packets the server's veth end received (as `ip -s link` counts them), per second.
    rx_pps: f64,
    /// Packets the filter itself counted as dropped, per second (none: no counter).
    dropped_pps: Option<f64>,
    /// Softirq time on all CPUs per million packets sent, ms.
    softirq_ms_per_m: f64,
    /// Busy time of the server's CPU per million packets sent, ms.
    srv_cpu_ms_per_m: f64,
    /// The legitimate client's connect + request latencies, ms, and its failures.
    latencies_ms: Vec<f64>,
    failures: usize,
}

type Key = (usize, bool, Sources, Filter);

/// `bench flood ARGS`.
pub(crate) fn bench_flood(args: &[String]) -> anyhow::Result<()> {
    let opts = parse_options(args)?;
    for tool in [
        "trafgen",
        "nft",
        "ipset",
        "iptables-legacy",
        "ip6tables-legacy",
    ] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} not found: run `cargo xtask setup` (Debian: netsniff-ng, nftables, ipset, \
             iptables)"
        );
    }
    ensure!(
        std::thread::available_parallelism().map_or(1, usize::from) >= 2,
        "bench flood pins the generator and the server to two different CPUs: it needs two"
    );
    let lab = Lab::new()?;
    let mut rng = StdRng::seed_from_u64(0x0066_6c6f_6f64);
    let mut results: BTreeMap<Key, Vec<Sample>> = BTreeMap::new();
    println!(
        "hookwall flood benchmark: trafgen SYNs to port {PORT} over a veth, {} round(s) of {} s \
         per configuration and source pattern; sender on CPU {SENDER_CPU}, server CPU \
         {SERVER_CPU}",
        opts.rounds, opts.seconds
    );
    for &n in &opts.prefixes {
        let allow = Allowlist::new(&mut rng, n);
        let confs: Vec<(Sources, std::path::PathBuf)> = Sources::ALL
            .into_iter()
            .map(|s| {
                let path = lab.dir.path().join(format!("{s:?}-{n}.trafgen"));
                std::fs::write(&path, trafgen_config(s, &allow, &lab.srv_mac, &mut rng))
                    .map(|()| (s, path))
            })
            .collect::<Result<_, _>>()
            .context("writing the trafgen configs")?;
        for &rps in &opts.rps {
            lab.set_rps(rps)?;
            for round in 0..opts.rounds {
                // A different configuration goes first each round.
                let mut order = opts.only.clone();
                let first = round % order.len();
                order.rotate_left(first);
                for &filter in &order {
                    let setup = lab
                        .install(filter, &allow)
                        .with_context(|| format!("setting up {}", filter.name()))?;
                    for (sources, conf) in &confs {
                        let sample = lab.flood(conf, &setup, opts.seconds)?;
                        results
                            .entry((n, rps, *sources, filter))
                            .or_default()
                            .push(sample);
                    }
                    drop(setup);
                }
                eprintln!(
                    "  {n} prefixes, RPS {}: round {} of {} done",
                    on_off(rps),
                    round + 1,
                    opts.rounds
                );
            }
        }
    }
    print!("{}", report(&results, &opts));
    Ok(())
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The allowlist every configuration gets: `n` random prefixes per family (the filter bench's
/// length mix) plus the generator's own address, as written (for hookwall) and merged (for the
/// interval sets and ipset, which refuse or duplicate overlaps).
struct Allowlist {
    raw: Vec<IpNet>,
    merged_v4: Vec<Ipv4Net>,
    merged_v6: Vec<Ipv6Net>,
    /// Allowed IPv4 prefixes longer than /18, whose /18 blocks the block pattern floods.
    long_v4: Vec<Ipv4Net>,
}

impl Allowlist {
    fn new(rng: &mut StdRng, n: usize) -> Self {
        let mut v4 = random_v4(rng, n);
        v4.push(Ipv4Net::new(GEN_V4, 32).expect("/32"));
        let v6 = random_v6(rng, n);
        let long_v4 = v4
            .iter()
            .filter(|p| p.prefix_len() > 18 && p.addr() != GEN_V4)
            .copied()
            .collect();
        Self {
            raw: v4
                .iter()
                .copied()
                .map(IpNet::V4)
                .chain(v6.iter().copied().map(IpNet::V6))
                .collect(),
            merged_v4: Ipv4Net::aggregate(&v4),
            merged_v6: Ipv6Net::aggregate(&v6),
            long_v4,
        }
    }
}

/// A trafgen config: [`TEMPLATES`] SYN templates (trafgen sends them in turn), each with random
/// source bits drawn by trafgen per packet (`drnd()`), a random source port and sequence number.
fn trafgen_config(sources: Sources, allow: &Allowlist, srv_mac: &str, rng: &mut StdRng) -> String {
    let mut s = String::from("# generated by `cargo xtask bench flood`\n");
    let tcp = format!("tcp(sp=drnd(), dp={PORT}, seq=drnd(), syn, win=64240)");
    for i in 0..TEMPLATES {
        let ip = match sources {
            Sources::V4Any => format!("ipv4(sa=drnd(), da={SRV_V4}, ttl=64, id=drnd())"),
            Sources::V4Blocks => {
                let net = allow.long_v4[rng.random_range(0..allow.long_v4.len())];
                let block = u32::from(net.addr()) & !0x3fff;
                let lo = block & 0xffff;
                format!(
                    "ipv4(sa={}, sa[2:2]=drnd({lo}, {}), da={SRV_V4}, ttl=64, id=drnd())",
                    Ipv4Addr::from(block),
                    lo + 0x3fff
                )
            }
            Sources::V6 => {
                let high = (rng.random::<u128>() >> 3) | (1u128 << 125);
                format!(
                    "ipv6(sa={}, sa=drnd(), da={SRV_V6}, hl=64)",
                    Ipv6Addr::from(high & !0xffff_ffff)
                )
            }
        };
        let _ = writeln!(s, "{{ eth(da={srv_mac}), {ip}, {tcp} }}");
        if i == 0 && allow.long_v4.is_empty() && sources == Sources::V4Blocks {
            break;
        }
    }
    s
}

/// The namespaces, the veth, the certificate and the legitimate client's TLS config.
struct Lab {
    dir: tempfile::TempDir,
    ca: TestCa,
    client: Arc<ClientConfig>,
    veth: VethPair,
    srv_mac: String,
    // Dropped last: deleting a namespace removes its interfaces and firewall state.
    srv: NetNs,
    gen_ns: NetNs,
}

impl Lab {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hw-bench-flood-")
            .tempdir()
            .context("making a temp dir")?;
        let srv = NetNs::new("hw-bench-srv");
        let gen_ns = NetNs::new("hw-bench-gen");
        let veth = VethPair::new(
            &srv,
            &[&format!("{SRV_V4}/24"), &format!("{SRV_V6}/64")],
            &gen_ns,
            &[&format!("{GEN_V4}/24"), &format!("{GEN_V6}/64")],
        );
        // Every answer to a forged source goes back into the generator namespace, which does
        // not forward (the default of a new namespace, set again here to be sure).
        srv.ip(&["route", "add", "default", "via", &GEN_V4.to_string()]);
        srv.ip(&["-6", "route", "add", "default", "via", &GEN_V6.to_string()]);
        sysctl(&gen_ns, "net.ipv4.ip_forward", "0")?;
        sysctl(&gen_ns, "net.ipv6.conf.all.forwarding", "0")?;
        // A spare veth inside the server namespace holds the daemon's XDP program when
        // something else filters (a dummy interface needs a module not every kernel has).
        srv.ip(&[
            "link", "add", "hwfidle", "type", "veth", "peer", "name", "hwfidlep",
        ]);
        srv.ip(&["link", "set", "hwfidle", "up"]);
        let link: serde_json::Value =
            serde_json::from_str(&srv.ip(&["-j", "link", "show", "dev", &veth.a]))
                .context("parsing `ip -j link`")?;
        let srv_mac = link[0]["address"]
            .as_str()
            .context("no MAC address on the server's veth end")?
            .to_owned();
        let ca = TestCa::new();
        let client = ca.http1_client();
        Ok(Self {
            dir,
            ca,
            client,
            veth,
            srv_mac,
            srv,
            gen_ns,
        })
    }

    fn set_rps(&self, on: bool) -> anyhow::Result<()> {
        let mask = if on { 1u32 << SERVER_CPU } else { 0 };
        let path = format!("/sys/class/net/{}/queues/rx-0/rps_cpus", self.veth.a);
        let out = self
            .srv
            .exec(&["sh", "-c", &format!("echo {mask:x} > {path}")]);
        ensure!(
            out.status.success(),
            "writing {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts the daemon and loads the configuration's rules.
    fn install(&self, filter: Filter, allow: &Allowlist) -> anyhow::Result<Setup> {
        let mut setup = Setup {
            filter,
            floor: None,
            daemon: None,
            pins: PinsGuard::new(),
            srv_name: self.srv.name().to_owned(),
        };
        let (iface, attach) = match filter {
            Filter::HookwallNative => (self.veth.a.as_str(), "native"),
            Filter::HookwallGeneric => (self.veth.a.as_str(), "generic"),
            _ => ("hwfidle", "generic"),
        };
        let dir = self.dir.path().join(format!("d-{}", filter.name()));
        std::fs::create_dir_all(&dir).context("making the daemon's directory")?;
        let (cert, key) = self.ca.issue(&dir, &[&SRV_V4.to_string()]);
        let cidrs: Vec<String> = allow.raw.iter().map(ToString::to_string).collect();
        let cidr_refs: Vec<&str> = cidrs.iter().map(String::as_str).collect();
        let mut spec = ConfigSpec::new(iface, setup.pins.path(), &dir, &cidr_refs);
        spec.attach = attach.into();
        spec.protected_ports = vec![PORT];
        spec.server_listen = format!("0.0.0.0:{PORT}");
        spec.tls = Some((cert, key));
        // Without a route the daemon opens no HTTPS listener; the client asks for another path
        // (404 before any body is read), which still takes a connection, TLS and a request.
        let secret = dir.join("sw");
        std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .context("writing the route's secret")?;
        spec.routes = vec![Route::signed("/hooks/sw", "standard-webhooks", &[secret])];
        let config = dir.join("hookwall.toml");
        std::fs::write(&config, spec.render()).context("writing the config")?;
        // 200,000 prefixes written inline take the daemon longer than the tests' 15 s to load
        // on a busy two-core machine.
        let mut daemon = Daemon::spawn(&self.srv, &config, spec.metrics_listen, &dir);
        daemon.wait_ready(Duration::from_secs(180));
        setup.daemon = Some(daemon);
        match filter {
            Filter::Floor => {
                let mut floor = Bare::floor()?;
                self.srv.run(|| floor.attach(&self.veth.a))?;
                setup.floor = Some(floor);
            }
            Filter::NftNetdev | Filter::NftInet => {
                let rules = nft_rules(filter, &self.veth.a, allow);
                let path = dir.join("rules.nft");
                std::fs::write(&path, rules).context("writing the nft rules")?;
                run_in(&self.srv, &["nft", "-f", path.to_str().expect("UTF-8")])?;
            }
            Filter::IptablesIpset => {
                let path = dir.join("ipset.restore");
                std::fs::write(&path, ipset_restore(allow)).context("writing the ipset file")?;
                run_in(
                    &self.srv,
                    &["ipset", "restore", "-f", path.to_str().expect("UTF-8")],
                )?;
                for (tool, set) in [
                    ("iptables-legacy", "hwallow4"),
                    ("ip6tables-legacy", "hwallow6"),
                ] {
                    run_in(
                        &self.srv,
                        &[
                            tool,
                            "-t",
                            "raw",
                            "-A",
                            "PREROUTING",
                            "-p",
                            "tcp",
                            "--dport",
                            &PORT.to_string(),
                            "-m",
                            "set",
                            "!",
                            "--match-set",
                            set,
                            "src",
                            "-j",
                            "DROP",
                        ],
                    )?;
                }
            }
            Filter::None | Filter::HookwallNative | Filter::HookwallGeneric => {}
        }
        Ok(setup)
    }

    /// One flood of `seconds` from the trafgen config `conf`, with the legitimate client
    /// running alongside.
    fn flood(&self, conf: &Path, setup: &Setup, seconds: f64) -> anyhow::Result<Sample> {
        let stop = Arc::new(AtomicBool::new(false));
        let client = self.start_client(Arc::clone(&stop));
        let mut trafgen = Trafgen::start(&self.gen_ns, &self.veth.b, conf)?;
        // Let the generator reach its rate before the window opens.
        std::thread::sleep(Duration::from_millis(300));
        let before = self.snapshot(setup)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let after = self.snapshot(setup)?;
        let window = t0.elapsed().as_secs_f64();
        trafgen.stop()?;
        stop.store(true, Ordering::Relaxed);
        let (latencies_ms, failures) = client
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))?;
        let sent = after.sent.saturating_sub(before.sent) as f64;
        ensure!(
            sent > 0.0,
            "trafgen sent nothing in {window:.1} s ({}); is it running?",
            setup.filter.name()
        );
        let ticks = |f: fn(&CpuTimes) -> u64| f(&after.cpu).saturating_sub(f(&before.cpu)) as f64;
        let tick_ms = 1000.0 / clock_ticks();
        Ok(Sample {
            sent_pps: sent / window,
            rx_pps: after.rx.saturating_sub(before.rx) as f64 / window,
            dropped_pps: after
                .dropped
                .zip(before.dropped)
                .map(|(a, b)| a.saturating_sub(b) as f64 / window),
            softirq_ms_per_m: ticks(|c| c.softirq_all) * tick_ms / sent * 1e6,
            srv_cpu_ms_per_m: ticks(|c| c.busy_server) * tick_ms / sent * 1e6,
            latencies_ms,
            failures,
        })
    }

    /// The legitimate client: connect + TLS + one request from the allowed address, paced.
    fn start_client(&self, stop: Arc<AtomicBool>) -> JoinHandle<(Vec<f64>, usize)> {
        let config = Arc::clone(&self.client);
        self.gen_ns.spawn(move || {
            let dst = SocketAddr::from((SRV_V4, PORT));
            let (mut lat, mut failures) = (Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match request(IpAddr::V4(GEN_V4), dst, &config, "GET", "/", &[], b"") {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        if failures == 0 {
                            eprintln!("  client: first failure: {e}");
                        }
                        failures += 1;
                    }
                }
                if let Some(rest) = CLIENT_PACE.checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            (lat, failures)
        })
    }

    fn snapshot(&self, setup: &Setup) -> anyhow::Result<Snapshot> {
        let gen_stats = link_stats(&self.gen_ns, &self.veth.b)?;
        let srv_stats = link_stats(&self.srv, &self.veth.a)?;
        Ok(Snapshot {
            sent: gen_stats["tx"]["packets"].as_u64().unwrap_or(0),
            rx: srv_stats["rx"]["packets"].as_u64().unwrap_or(0),
            dropped: setup.drops()?,
            cpu: cpu_times()?,
        })
    }
}

struct Snapshot {
    sent: u64,
    rx: u64,
    dropped: Option<u64>,
    cpu: CpuTimes,
}

/// One configuration, installed; removed on drop (the daemon by PID, its pins, the rules).
struct Setup {
    filter: Filter,
    floor: Option<Bare>,
    // Stopped before its pins are detached.
    daemon: Option<Daemon>,
    pins: PinsGuard,
    srv_name: String,
}

impl Setup {
    /// Packets the filter counted as dropped so far.
    fn drops(&self) -> anyhow::Result<Option<u64>> {
        Ok(match self.filter {
            Filter::HookwallNative | Filter::HookwallGeneric => {
                let daemon = self.daemon.as_ref().context("daemon running")?;
                let total: f64 = parse_samples(&daemon.metrics())
                    .iter()
                    .filter(|s| {
                        s.name == "hookwall_xdp_packets_total"
                            && s.labels.iter().any(|(k, v)| k == "verdict" && v == "drop")
                    })
                    .map(|s| s.value)
                    .sum();
                Some(total as u64)
            }
            Filter::NftNetdev | Filter::NftInet => {
                let text = ns_output(
                    &self.srv_name,
                    &["nft", "list", "table", nft_family(self.filter), "hwflood"],
                )?;
                Some(sum_after(&text, "counter packets "))
            }
            Filter::IptablesIpset => {
                let mut total = 0;
                for tool in ["iptables-legacy", "ip6tables-legacy"] {
                    let text = ns_output(
                        &self.srv_name,
                        &[tool, "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"],
                    )?;
                    total += text
                        .lines()
                        .filter(|l| l.contains("DROP"))
                        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                        .sum::<u64>();
                }
                Some(total)
            }
            Filter::Floor | Filter::None => None,
        })
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        drop(self.floor.take());
        if let Some(mut daemon) = self.daemon.take() {
            daemon.term();
        }
        // The firewall state goes with the server namespace at the end; between
        // configurations it is flushed here.
        let flush: &[&[&str]] = match self.filter {
            Filter::NftNetdev | Filter::NftInet => {
                &[&["nft", "delete", "table", nft_family(self.filter), "hwflood"]]
            }
            Filter::IptablesIpset => &[
                &["iptables-legacy", "-t", "raw", "-F", "PREROUTING"],
                &["ip6tables-legacy", "-t", "raw", "-F", "PREROUTING"],
                &["ipset", "destroy", "hwallow4"],
                &["ipset", "destroy", "hwallow6"],
            ],
            _ => &[],
        };
        for cmd in flush {
            if let Err(e) = ns_output(&self.srv_name, cmd) {
                eprintln!("removing {}: {e:#}", self.filter.name());
            }
        }
    }
}

fn nft_family(filter: Filter) -> &'static str {
    if filter == Filter::NftNetdev {
        "netdev"
    } else {
        "inet"
    }
}

fn nft_rules(filter: Filter, dev: &str, allow: &Allowlist) -> String {
    let join = |items: Vec<String>| items.join(",\n    ");
    let v4 = join(allow.merged_v4.iter().map(ToString::to_string).collect());
    let v6 = join(allow.merged_v6.iter().map(ToString::to_string).collect());
    let hook = match filter {
        Filter::NftNetdev => format!("type filter hook ingress device \"{dev}\" priority -500;"),
        _ => "type filter hook prerouting priority -300;".to_owned(),
    };
    format!(
        "table {family} hwflood {{\n  set allow4 {{\n    type ipv4_addr; flags interval;\n    \
         elements = {{ {v4} }}\n  }}\n  set allow6 {{\n    type ipv6_addr; flags interval;\n    \
         elements = {{ {v6} }}\n  }}\n  chain flood {{\n    {hook} policy accept;\n    \
         ip saddr != @allow4 tcp dport {PORT} counter drop\n    \
         ip6 saddr != @allow6 tcp dport {PORT} counter drop\n  }}\n}}\n",
        family = nft_family(filter)
    )
}

fn ipset_restore(allow: &Allowlist) -> String {
    let mut s = String::new();
    let max = allow.merged_v4.len().max(allow.merged_v6.len()).max(1024) * 2;
    let _ = writeln!(s, "create hwallow4 hash:net family inet maxelem {max}");
    let _ = writeln!(s, "create hwallow6 hash:net family inet6 maxelem {max}");
    for net in &allow.merged_v4 {
        let _ = writeln!(s, "add hwallow4 {net}");
    }
    for net in &allow.merged_v6 {
        let _ = writeln!(s, "add hwallow6 {net}");
    }
    s
}

/// Sum of the numbers that follow each `marker` in `text`.
fn sum_after(text: &str, marker: &str) -> u64 {
    text.match_indices(marker)
        .filter_map(|(i, _)| {
            text[i + marker.len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `ip netns exec NS CMD`: its stdout, or an error with its stderr.
fn ns_output(ns: &str, cmd: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .with_context(|| format!("running `{}` in {ns}", cmd.join(" ")))?;
    ensure!(
        out.status.success(),
        "`{}` in {ns} failed ({}): {}",
        cmd.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_in(ns: &NetNs, cmd: &[&str]) -> anyhow::Result<()> {
    ns_output(ns.name(), cmd).map(drop)
}

fn sysctl(ns: &NetNs, key: &str, value: &str) -> anyhow::Result<()> {
    run_in(ns, &["sysctl", "-q", "-w", &format!("{key}={value}")])
}

fn link_stats(ns: &NetNs, dev: &str) -> anyhow::Result<serde_json::Value> {
    let text = ns.ip(&["-s", "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&text).context("parsing `ip -s -j link`")?;
    Ok(v[0]["stats64"].clone())
}

/// trafgen in the generator namespace, pinned to [`SENDER_CPU`]; stopped by PID on drop.
struct Trafgen {
    child: Option<Child>,
}

impl Trafgen {
    fn start(ns: &NetNs, dev: &str, conf: &Path) -> anyhow::Result<Self> {
        // --no-sock-mem, --notouch-irq: leave the host's socket memory limits and IRQ affinities alone.
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "taskset", "-c"])
            .arg(SENDER_CPU.to_string())
            .args([
                "trafgen",
                "--cpus",
                "1",
                "--no-sock-mem",
                "--notouch-irq",
                "-o",
                dev,
                "-i",
            ])
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trafgen")?;
        Ok(Self { child: Some(child) })
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(status)) = child.try_wait() {
            let out = child
                .wait_with_output()
                .context("reading trafgen's output")?;
            bail!(
                "trafgen exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        signal_child(&mut child, libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal_child(&mut child, libc::SIGKILL);
        let _ = child.wait();
        Ok(())
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[derive(Default)]
struct CpuTimes {
    softirq_all: u64,
    busy_server: u64,
}

/// Ticks from /proc/stat: softirq on all CPUs, and all non-idle time on [`SERVER_CPU`].
fn cpu_times() -> anyhow::Result<CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut t = CpuTimes::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let name = f.next().unwrap_or_default();
        let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
        if v.len() < 7 {
            continue;
        }
        // user nice system idle iowait irq softirq steal ...
        if name == "cpu" {
            t.softirq_all = v[6];
        } else if name == format!("cpu{SERVER_CPU}") {
            t.busy_server = v[0] + v[1] + v[2] + v[5] + v[6];
        }
    }
    Ok(t)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// min / median / max.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(results: &BTreeMap<Key, Vec<Sample>>, opts: &Options) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nkpps: thousands of packets per second; sent = the generator's veth end, rx = the \
         server's end, drop = the filter's own drop counter; CPU = ms of softirq (all CPUs) / of \
         the server CPU's busy time per million packets sent; ratios per round to nft-netdev \
         and to none of the same round, min/median/max over {} round(s); client = connect + TLS \
         + request from the allowed source every {} ms: p50/p99 ms, failures",
        opts.rounds,
        CLIENT_PACE.as_millis()
    );
    for &n in &opts.prefixes {
        for &rps in &opts.rps {
            for sources in Sources::ALL {
                let _ = writeln!(
                    s,
                    "\n{n} prefixes per family, RPS {}, sources {}",
                    on_off(rps),
                    sources.name()
                );
                let _ = writeln!(
                    s,
                    "{:<17} {:>7} {:>7} {:>7} {:>17} {:>17} {:>7} {:>7} {:>17} {:>17} {:>13}",
                    "config",
                    "sent",
                    "rx",
                    "drop",
                    "rx/nft-netdev",
                    "rx/none",
                    "sirq",
                    "srvcpu",
                    "sirq/nft-netdev",
                    "sirq/none",
                    "client"
                );
                let base = |f| results.get(&(n, rps, sources, f));
                for &filter in &opts.only {
                    let Some(samples) = results.get(&(n, rps, sources, filter)) else {
                        continue;
                    };
                    let med =
                        |pick: fn(&Sample) -> f64| spread(samples.iter().map(pick).collect()).1;
                    let ratio = |base: Option<&Vec<Sample>>, pick: fn(&Sample) -> f64| {
                        let Some(base) = base else {
                            return "-".to_owned();
                        };
                        let (lo, mid, hi) = spread(
                            samples
                                .iter()
                                .zip(base)
                                .map(|(a, b)| pick(a) / pick(b))
                                .collect(),
                        );
                        format!("{lo:.2}/{mid:.2}/{hi:.2}")
                    };
                    let mut lat: Vec<f64> = samples
                        .iter()
                        .flat_map(|x| x.latencies_ms.clone())
                        .collect();
                    lat.sort_by(f64::total_cmp);
                    let failures: usize = samples.iter().map(|x| x.failures).sum();
                    let drop = if samples.iter().all(|x| x.dropped_pps.is_some()) {
                        format!("{:.0}", med(|x| x.dropped_pps.unwrap_or(0.0)) / 1e3)
                    } else {
                        "-".to_owned()
                    };
                    let _ = writeln!(
                        s,
                        "{:<17} {:>7.0} {:>7.0} {:>7} {:>17} {:>17} {:>7.0} {:>7.0} {:>17} {:>17} {:>13}",
                        filter.name(),
                        med(|x| x.sent_pps) / 1e3,
                        med(|x| x.rx_pps) / 1e3,
                        drop,
                        ratio(base(Filter::NftNetdev), |x| x.rx_pps),
                        ratio(base(Filter::None), |x| x.rx_pps),
                        med(|x| x.softirq_ms_per_m),
                        med(|x| x.srv_cpu_ms_per_m),
                        ratio(base(Filter::NftNetdev), |x| x.softirq_ms_per_m),
                        ratio(base(Filter::None), |x| x.softirq_ms_per_m),
                        format!(
                            "{:.1}/{:.1} {failures}",
                            percentile(&lat, 0.5),
                            percentile(&lat, 0.99)
                        ),
                    );
                }
            }
        }
    }
    s
}
