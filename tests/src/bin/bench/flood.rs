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
    os::unix::process::CommandExt as _,
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

#[derive(Debug, PartialEq)]
struct Options {
    rounds: usize,
    seconds: f64,
    prefixes: Vec<usize>,
    only: Vec<Filter>,
    rps: Vec<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rounds: 3,
            seconds: 1.0,
            prefixes: vec![12, 100_000],
            only: Filter::ALL.to_vec(),
            rps: vec![false, true],
        }
    }
}

const USAGE: &str = "\
usage: bench flood [OPTIONS]   (cargo xtask bench flood -- [OPTIONS])

A SYN flood from trafgen over a veth between two network namespaces the bench makes, against
each configuration in turn, round by round. Needs root, two CPUs, trafgen, nft, ipset and
iptables-legacy (`cargo xtask setup`). Method and figures: docs/benchmarks.md.

options:
  --rounds N               rounds; each round installs every configuration once (default 3)
  --seconds S              length of one flood, per source pattern and RPS mode (default 1)
  --prefixes N[,N]         allowlist sizes per family (default 12,100000)
  --only CONFIG[,CONFIG]   configurations to run; none and nft-netdev are always added, as
                           the ratios' baselines (default: all)
                           CONFIG: xdp-drop, none, hookwall-native, hookwall-generic,
                           nft-netdev, nft-inet, iptables-ipset
  --rps off|on|off,on      receive packet steering on the server's veth (default off,on)
  -h, --help               print this help
";

/// The options, or `None` when the help was asked for (and printed by the caller).
fn parse_options(args: &[String]) -> anyhow::Result<Option<Options>> {
    const VALID: &str = "--rounds, --seconds, --prefixes, --only, --rps, --help";
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(None);
        }
        // `--flag value` and `--flag=value` both work.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value)),
            None => (arg.as_str(), None),
        };
        ensure!(
            matches!(
                flag,
                "--rounds" | "--seconds" | "--prefixes" | "--only" | "--rps"
            ),
            "unknown option {arg:?}; valid options: {VALID} (see --help)"
        );
        let value = match inline {
            Some(value) => value,
            None => it
                .next()
                .with_context(|| format!("{flag} needs a value (see --help)"))?,
        };
        match flag {
            "--rounds" => {
                o.rounds = value.parse().ok().filter(|&n| n > 0).with_context(|| {
                    format!("--rounds {value:?}: a whole number of rounds, at least 1")
                })?;
            }
            "--seconds" => {
                o.seconds = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .with_context(|| format!("--seconds {value:?}: a positive number, e.g. 2"))?;
            }
            "--prefixes" => {
                o.prefixes = value
                    .split(',')
                    .map(|v| v.parse().ok().filter(|&n: &usize| n > 0))
                    .collect::<Option<_>>()
                    .with_context(|| {
                        format!(
                            "--prefixes {value:?}: positive whole numbers separated by commas, \
                             e.g. 12,100000"
                        )
                    })?;
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
                o.only.extend([Filter::None, Filter::NftNetdev]);
                o.only.sort();
                o.only.dedup();
            }
            _ => {
                o.rps = value
                    .split(',')
                    .map(|v| match v {
                        "off" => Ok(false),
                        "on" => Ok(true),
                        other => bail!("--rps: {other:?} is not off or on (e.g. --rps off,on)"),
                    })
                    .collect::<anyhow::Result<_>>()?;
                o.rps.dedup();
            }
        }
    }
    Ok(Some(o))
}

/// Set by SIGINT and SIGTERM: the bench stops at the next check and its guards remove the
/// namespaces, the daemon and trafgen, as on any error.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // An atomic store is async-signal-safe; everything else happens in the main thread.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic. A spawned program gets the default
        // disposition back at exec.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn check_interrupted() -> anyhow::Result<()> {
    ensure!(
        !INTERRUPTED.load(Ordering::SeqCst),
        "interrupted: removed the namespaces and stopped the processes the bench started"
    );
    Ok(())
}

/// Sleeps `d` in short steps, returning early with an error on SIGINT or SIGTERM.
fn sleep_interruptible(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
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
    let Some(opts) = parse_options(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    catch_signals();
    let result = run(&opts);
    // A signal also reaches the children in the terminal's process group, whose errors then
    // say less than this.
    check_interrupted()?;
    result
}

fn run(opts: &Options) -> anyhow::Result<()> {
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
         per configuration, source pattern and RPS mode; sender on CPU {SENDER_CPU}, server CPU \
         {SERVER_CPU}",
        opts.rounds, opts.seconds
    );
    for &n in &opts.prefixes {
        let allow = Allowlist::new(&mut rng, n);
        let confs: Vec<(Sources, std::path::PathBuf)> = Sources::ALL
            .into_iter()
            .map(|s| {
                let path = lab.dir.path().join(format!("{s:?}-{n}.trafgen"));
                let conf = trafgen_config(s, &allow, &lab.srv_mac, &mut rng)?;
                std::fs::write(&path, conf)
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok((s, path))
            })
            .collect::<anyhow::Result<_>>()?;
        for round in 0..opts.rounds {
            // A different configuration goes first each round.
            let mut order = opts.only.clone();
            let first = round % order.len();
            order.rotate_left(first);
            for &filter in &order {
                check_interrupted()?;
                let t = Instant::now();
                let setup = lab
                    .install(filter, &allow)
                    .with_context(|| format!("setting up {}", filter.name()))?;
                eprintln!(
                    "  {n} prefixes, round {}: {} installed in {:.1} s",
                    round + 1,
                    filter.name(),
                    t.elapsed().as_secs_f64()
                );
                // Both RPS modes on one installation: loading 100,000 prefixes takes longer
                // than the floods.
                for &rps in &opts.rps {
                    lab.set_rps(rps)?;
                    for (sources, conf) in &confs {
                        let sample = lab.flood(conf, &setup, opts.seconds)?;
                        results
                            .entry((n, rps, *sources, filter))
                            .or_default()
                            .push(sample);
                    }
                }
                drop(setup);
            }
            eprintln!(
                "  {n} prefixes: round {} of {} done",
                round + 1,
                opts.rounds
            );
        }
    }
    print!("{}", report(&results, opts));
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
    /// Allowed IPv4 prefixes longer than /18 whose /18 is not allowed whole: the block
    /// pattern floods their /18s.
    long_v4: Vec<Ipv4Net>,
}

impl Allowlist {
    fn new(rng: &mut StdRng, n: usize) -> Self {
        let mut v4 = random_v4(rng, n);
        v4.push(Ipv4Net::new(GEN_V4, 32).expect("/32"));
        let v6 = random_v6(rng, n);
        let merged_v4 = Ipv4Net::aggregate(&v4);
        let long_v4 = v4
            .iter()
            .filter(|p| p.prefix_len() > 18 && p.addr() != GEN_V4)
            .filter(|p| {
                let block = Ipv4Net::new(p.network(), 18).expect("/18").trunc();
                // Sorted and disjoint: only the last merged prefix starting at or before the
                // block can hold it.
                let i = merged_v4.partition_point(|m| m.network() <= block.network());
                !(i > 0 && merged_v4[i - 1].contains(&block))
            })
            .copied()
            .collect();
        Self {
            raw: v4
                .iter()
                .copied()
                .map(IpNet::V4)
                .chain(v6.iter().copied().map(IpNet::V6))
                .collect(),
            merged_v4,
            merged_v6: Ipv6Net::aggregate(&v6),
            long_v4,
        }
    }
}

/// A trafgen config: [`TEMPLATES`] SYN templates (trafgen sends them in turn), each with random
/// source bits drawn by trafgen per packet (`drnd()`), a random source port and sequence number.
fn trafgen_config(
    sources: Sources,
    allow: &Allowlist,
    srv_mac: &str,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    ensure!(
        sources != Sources::V4Blocks || !allow.long_v4.is_empty(),
        "the allowlist has no IPv4 prefix longer than /18 to flood around; use more prefixes \
         (--prefixes)"
    );
    let mut s = String::from("# generated by `cargo xtask bench flood`\n");
    let tcp = format!("tcp(sp=drnd(), dp={PORT}, seq=drnd(), syn, win=64240)");
    for _ in 0..TEMPLATES {
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
                // `sa=drnd()` would draw all 128 bits: only the last 4 bytes are random.
                let high = (rng.random::<u128>() >> 3) | (1u128 << 125);
                format!(
                    "ipv6(sa={}, sa[12:4]=drnd(), da={SRV_V6}, hl=64)",
                    Ipv6Addr::from(high & !0xffff_ffff)
                )
            }
        };
        let _ = writeln!(s, "{{ eth(da={srv_mac}), {ip}, {tcp} }}");
    }
    Ok(s)
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
        let client = Client::start(&self.gen_ns, Arc::clone(&self.client));
        let mut trafgen = Trafgen::start(&self.gen_ns, &self.veth.b, conf)?;
        // Let the generator reach its rate before the window opens.
        sleep_interruptible(Duration::from_millis(300))?;
        let before = self.snapshot(setup)?;
        sleep_interruptible(Duration::from_secs_f64(seconds))?;
        let after = self.snapshot(setup)?;
        let window = after.at.duration_since(before.at).as_secs_f64();
        trafgen.stop()?;
        let (latencies_ms, failures) = client.finish()?;
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

    /// The counters, the link's read last: the window runs from one link read to the next.
    fn snapshot(&self, setup: &Setup) -> anyhow::Result<Snapshot> {
        let dropped = setup.drops()?;
        let cpu = cpu_times()?;
        let at = Instant::now();
        let gen_stats = link_stats(&self.gen_ns, &self.veth.b)?;
        let srv_stats = link_stats(&self.srv, &self.veth.a)?;
        Ok(Snapshot {
            at,
            sent: gen_stats["tx"]["packets"].as_u64().unwrap_or(0),
            rx: srv_stats["rx"]["packets"].as_u64().unwrap_or(0),
            dropped,
            cpu,
        })
    }
}

/// The legitimate client: connect + TLS + one request from the allowed address, paced; stopped
/// (and joined) by [`Client::finish`] or on drop, so an early error does not leave it running.
struct Client {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Vec<f64>, usize)>>,
}

impl Client {
    fn start(ns: &NetNs, config: Arc<ClientConfig>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = ns.spawn(move || {
            let dst = SocketAddr::from((SRV_V4, PORT));
            let (mut lat, mut failures) = (Vec::new(), 0);
            while !flag.load(Ordering::Relaxed) {
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
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the client; its latencies (ms) and failures.
    fn finish(mut self) -> anyhow::Result<(Vec<f64>, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .context("client joined twice")?
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Snapshot {
    at: Instant,
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
                    // The chain only: listing the table prints every set element, which
                    // takes seconds at 100,000 prefixes.
                    &[
                        "nft",
                        "list",
                        "chain",
                        nft_family(self.filter),
                        "hwflood",
                        "flood",
                    ],
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

/// trafgen's arguments. `--no-sock-mem`, `--notouch-irq`: leave the host's socket memory limits
/// and IRQ affinities alone. `-t 0`: one blocking `sendto` per packet instead of the TX ring.
/// Packets waiting for the receive side (in veth's ring or a CPU's backlog, when softirq work
/// is deferred or steered to the other CPU) stay charged to trafgen's socket; when its send
/// buffer (`net.core.wmem_default`, which a non-initial namespace cannot raise) fills, the
/// ring's non-blocking flush fails with EAGAIN and trafgen exits ("Flushing TX_RING failed").
/// A blocking `sendto` waits for room instead.
fn trafgen_args(dev: &str, conf: &Path) -> Vec<String> {
    [
        "trafgen",
        "--cpus",
        "1",
        "--no-sock-mem",
        "--notouch-irq",
        "-t",
        "0",
        "-o",
        dev,
        "-i",
    ]
    .map(String::from)
    .into_iter()
    .chain([conf.to_string_lossy().into_owned()])
    .collect()
}

impl Trafgen {
    fn start(ns: &NetNs, dev: &str, conf: &Path) -> anyhow::Result<Self> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "taskset", "-c"])
            .arg(SENDER_CPU.to_string())
            .args(trafgen_args(dev, conf))
            // Its own process group, to stop its worker with it (see `stop`); a terminal's
            // ctrl-c then reaches the bench only, which stops it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trafgen")?;
        Ok(Self { child: Some(child) })
    }

    /// Stops trafgen and its worker. trafgen forks one worker per CPU, and a worker spinning
    /// on a full receive backlog does not look at SIGINT, so the whole process group (made at
    /// spawn) gets SIGINT, then SIGKILL. The parent is reaped last: until then its PID, the
    /// group's ID, cannot name anyone else's processes.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let pgid = child.id();
        let early = process_state(pgid) == Some('Z');
        if !early {
            signal_group(pgid, libc::SIGINT);
            wait_group_gone(pgid, Duration::from_secs(2));
        }
        signal_group(pgid, libc::SIGKILL);
        let gone = wait_group_gone(pgid, Duration::from_secs(5));
        let out = child
            .wait_with_output()
            .context("reading trafgen's output")?;
        ensure!(gone, "trafgen's process group {pgid} outlived SIGKILL");
        if early {
            bail!(
                "trafgen exited early ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn signal_group(pgid: u32, sig: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) on the process group of a child we spawned and have not reaped.
    unsafe { libc::kill(-pgid, sig) };
}

/// The state letter of `/proc/PID/stat` (after the command name, which may hold spaces).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Waits until every process of group `pgid` has exited (zombies count as gone); false if some
/// still run after `patience`.
fn wait_group_gone(pgid: u32, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        let alive = std::fs::read_dir("/proc").is_ok_and(|dir| {
            dir.flatten().any(|e| {
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    return false;
                };
                let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                    return false;
                };
                // state ppid pgrp ...
                let mut f = rest.split_whitespace();
                let state = f.next();
                let pgrp = f.nth(1);
                state != Some("Z") && pgrp == Some(pgid.to_string().as_str())
            })
        });
        if !alive {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
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

/// min / median / max over rounds of `pick(sample) / pick(base)`, each sample paired with the
/// baseline of its own round.
fn round_ratios(samples: &[Sample], base: &[Sample], pick: fn(&Sample) -> f64) -> (f64, f64, f64) {
    spread(
        samples
            .iter()
            .zip(base)
            .map(|(a, b)| pick(a) / pick(b))
            .collect(),
    )
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
                        let (lo, mid, hi) = round_ratios(samples, base, pick);
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
                        if filter == Filter::Floor {
                            // The floor drops the client's packets too.
                            "-".to_owned()
                        } else {
                            format!(
                                "{:.1}/{:.1} {failures}",
                                percentile(&lat, 0.5),
                                percentile(&lat, 0.99)
                            )
                        },
                    );
                }
            }
        }
    }
    s
}

#[cfg(test)]
#[path = "flood_tests.rs"]
mod tests;
