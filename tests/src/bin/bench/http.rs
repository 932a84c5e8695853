//! `bench http`: signed Standard Webhooks POSTs over TLS with keep-alive, against
//! (a) hookwall's `standard-webhooks` route (verification and the durable store),
//! (b) the same server on an unknown path (the floor: TLS, HTTP, rate limit, routing, audit line
//!     and metrics, then 404 before the body is verified or stored; no route kind was added),
//! (c) a FastAPI app under uvicorn (tests/bench/fastapi_receiver.py: peer check, HMAC, SQLite).
//!
//! All three run inside a network namespace the bench makes, on its loopback, with the same
//! certificate, and are loaded by the same generator (below: tokio + rustls, HTTP/1.1 written by
//! hand). Two phases per target: closed-loop maximum throughput with [`CONNS`] keep-alive
//! connections, and open-loop latency at [`RATE`] requests per second. Method and results:
//! docs/benchmarks.md.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use hookwall_tests::{
    config::{ConfigSpec, Route},
    daemon::{Daemon, NsEntry, PinsGuard, hookwall_bin},
    https::{TestCa, standard_webhooks_signature},
    netns::{ALLOWED_V4_NET, NetNs, VethPair},
};
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Keep-alive connections in the throughput phase, each from its own loopback address (hookwall
/// limits each client address to 200 req/s on average, and the floor reaches about 220 req/s per
/// address with 256 connections: 512 addresses keep every target well under that limit).
pub(crate) const CONNS: usize = 512;
/// Throughput phase: warm-up, then measured time; [`ROUNDS`] rounds per target, interleaved.
pub(crate) const WARMUP: Duration = Duration::from_secs(2);
pub(crate) const MEASURE: Duration = Duration::from_secs(10);
const ROUNDS: usize = 2;
/// Latency phase: requests per second (open loop), over this many connections, for this long
/// after one second of warm-up.
const RATE: u32 = 1000;
const RATE_CONNS: usize = 32;
const RATE_MEASURE: Duration = Duration::from_secs(10);

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const HOOKWALL_PORT: u16 = 8443;
const FASTAPI_PORT: u16 = 8444;
pub(crate) const ROUTE: &str = "/hooks/sw";
/// No route has this path: hookwall answers 404 before reading, verifying or storing the body.
const FLOOR_PATH: &str = "/hooks/no-such-route";

/// One system under load.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) label: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) path: &'static str,
    pub(crate) expect: u16,
    /// The server's processes, whose CPU time the throughput phase reports per request (none:
    /// not reported).
    pub(crate) pids: Vec<u32>,
}

/// What one phase against one target measured.
#[derive(Default)]
pub(crate) struct Stats {
    /// Answers with the expected status, in the measured window.
    pub(crate) ok: u64,
    /// Other statuses, by code.
    other: BTreeMap<u16, u64>,
    /// Connection or protocol errors.
    errors: u64,
    /// Connections opened after the first one of each worker (the server closed one).
    reconnects: u64,
    /// Latencies in microseconds of the measured, expected answers.
    latencies_us: Vec<u32>,
    /// Length of the measured window.
    window: Duration,
    /// CPU time (user + system) the server's processes and this load generator used in the
    /// measured window, if measured.
    cpu: Option<CpuUse>,
}

/// CPU time used in a window, by the server and by the load generator.
#[derive(Clone, Copy)]
struct CpuUse {
    server: Duration,
    generator: Duration,
}

impl Stats {
    fn merge(&mut self, other: Self) {
        self.ok += other.ok;
        for (k, v) in other.other {
            *self.other.entry(k).or_default() += v;
        }
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        self.latencies_us.extend(other.latencies_us);
    }

    pub(crate) fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, self.latencies_us.len())
            - 1;
        f64::from(self.latencies_us[i]) / 1e3
    }

    /// The server's and the generator's CPU time per answered request, in microseconds.
    fn cpu_per_request_us(&self) -> Option<(f64, f64)> {
        let cpu = self.cpu?;
        let n = self.ok.max(1) as f64;
        Some((
            cpu.server.as_secs_f64() * 1e6 / n,
            cpu.generator.as_secs_f64() * 1e6 / n,
        ))
    }

    pub(crate) fn anomalies(&self) -> String {
        let mut parts = Vec::new();
        if !self.other.is_empty() {
            parts.push(format!("unexpected statuses {:?}", self.other));
        }
        if self.errors > 0 {
            parts.push(format!("{} errors", self.errors));
        }
        if self.reconnects > 0 {
            parts.push(format!("{} reconnects", self.reconnects));
        }
        if parts.is_empty() {
            "clean".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// The http benchmark.
/// The http benchmark; `latency_only`: just (a)'s latency phase, four times in a row on one
/// store (a quick check of the store's tail latency while tuning it).
pub fn bench_http(latency_only: bool) -> anyhow::Result<()> {
    let target_dir = hookwall_bin()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the hookwall binary is not in target/<profile>/")?;
    let venv = python_venv(&target_dir)?;

    let dir = tempfile::Builder::new()
        .prefix("hw-bench-http-")
        .tempdir()
        .context("making a temp dir")?;
    let ca = TestCa::new();
    let (cert, key) = ca.issue(dir.path(), &["127.0.0.1"]);
    let client = ca.http1_client();

    // The daemon needs an interface for its XDP filter: one end of a veth that carries nothing.
    // All traffic stays on the namespace's loopback.
    let ns = NetNs::new("hw-bench-http-");
    let ns_peer = NetNs::new("hw-bench-peer-");
    let veth = VethPair::new(&ns, &[], &ns_peer, &[]);
    let pins = PinsGuard::new();
    let mut spec = ConfigSpec::new(&veth.a, pins.path(), dir.path(), &[ALLOWED_V4_NET]);
    spec.server_listen = format!("127.0.0.1:{HOOKWALL_PORT}");
    spec.protected_ports = vec![HOOKWALL_PORT];
    spec.tls = Some((cert.clone(), key.clone()));
    let secret_file = dir.path().join("sw");
    std::fs::write(&secret_file, SECRET).context("writing the secret file")?;
    spec.routes = vec![Route::signed(ROUTE, "standard-webhooks", &[secret_file])];
    let config = dir.path().join("hookwall.toml");
    std::fs::write(&config, spec.render()).context("writing the config")?;
    let daemon = Daemon::start(&ns, &config, spec.metrics_listen, dir.path());
    let uvicorn = Uvicorn::start(&ns, &venv, dir.path(), &cert, &key)?;

    let hookwall_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, HOOKWALL_PORT));
    let targets = [
        Target {
            label: "(a) hookwall",
            addr: hookwall_addr,
            path: ROUTE,
            expect: 200,
            pids: vec![daemon.pid()],
        },
        Target {
            label: "(b) floor",
            addr: hookwall_addr,
            path: FLOOR_PATH,
            expect: 404,
            pids: vec![daemon.pid()],
        },
        Target {
            label: "(c) fastapi",
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, FASTAPI_PORT)),
            path: ROUTE,
            expect: 200,
            pids: uvicorn.pids(),
        },
    ];

    println!(
        "hookwall http benchmark: signed Standard Webhooks POSTs, TLS 1.3, HTTP/1.1 keep-alive, \
         loopback of a bench namespace; load generator: tokio + rustls in this process"
    );
    println!(
        "(a) hookwall standard-webhooks route (verify + SQLite commit); (b) the same server on an \
         unknown path (404 before verify/store); (c) FastAPI + uvicorn --workers 2 (peer check, \
         HMAC, SQLite commit)"
    );
    let (rt_ns, client2) = (ns.path(), Arc::clone(&client));
    let result = hookwall_tests::netns::run_in(&rt_ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building the load generator's runtime")?;
        rt.block_on(async {
            if latency_only {
                latency_rounds(&targets[0], &client2).await
            } else {
                run_phases(&targets, &client2).await
            }
        })
    });
    let uvicorn_log = uvicorn.stop();
    let store_rows = count_rows(&spec.store_path);
    drop(daemon);
    if let Err(e) = &result {
        eprintln!("uvicorn log:\n{uvicorn_log}");
        bail!("the http benchmark failed: {e:#}");
    }
    if let Some(rows) = store_rows {
        println!("hookwall store after the run: {rows} events");
    }
    drop((pins, veth, ns_peer, ns, dir));
    result
}

async fn run_phases(targets: &[Target], client: &Arc<ClientConfig>) -> anyhow::Result<()> {
    for t in targets {
        let status = one_request(t, client, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
            .await
            .with_context(|| format!("a first request to {}", t.label))?;
        ensure!(
            status == t.expect,
            "{}: the first request got {status}, expected {}",
            t.label,
            t.expect
        );
    }

    latency_phase(&targets.iter().collect::<Vec<_>>(), client, "").await;

    println!(
        "\nthroughput: {CONNS} connections, closed loop, {}s warm-up + {}s measured, {ROUNDS} \
         rounds interleaved",
        WARMUP.as_secs(),
        MEASURE.as_secs()
    );
    let mut rounds: Vec<Vec<Stats>> = (0..targets.len()).map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (i, t) in targets.iter().enumerate() {
            let mut s = closed_loop(t, client).await;
            let cpu = s
                .cpu_per_request_us()
                .map(|(server, generator)| {
                    format!("  CPU/req: server {server:>6.1} us, generator {generator:>5.1} us")
                })
                .unwrap_or_default();
            println!(
                "  round {}  {:<13} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms{cpu}  ({})",
                round + 1,
                t.label,
                s.rps(),
                s.percentile_ms(0.50),
                s.percentile_ms(0.99),
                s.anomalies()
            );
            rounds[i].push(s);
        }
    }
    let mean: Vec<f64> = rounds
        .iter()
        .map(|r| r.iter().map(Stats::rps).sum::<f64>() / r.len() as f64)
        .collect();
    for ((t, m), r) in targets.iter().zip(&mean).zip(&rounds) {
        let cpu: Vec<f64> = r
            .iter()
            .filter_map(|s| s.cpu_per_request_us().map(|(server, _)| server))
            .collect();
        let cpu = if cpu.is_empty() {
            String::new()
        } else {
            format!(
                "  server CPU {:>6.1} us/req",
                cpu.iter().sum::<f64>() / cpu.len() as f64
            )
        };
        println!("  mean     {:<13} {m:>8.0} req/s{cpu}", t.label);
    }
    let (a, b, c) = (mean[0], mean[1], mean[2]);
    println!(
        "  ratios: (a)/(c) = {:.2} (bar >= 5), (a)/(b) = {:.2} (bar >= 0.5)",
        a / c,
        a / b
    );

    latency_phase(
        &[&targets[0]],
        client,
        ", again after the throughput phase (the store now holds every event sent so far)",
    )
    .await;

    Ok(())
}

/// (a)'s latency phase four times on the same daemon and store: fresh, then with about 11,000,
/// 22,000 and 33,000 events stored.
async fn latency_rounds(target: &Target, client: &Arc<ClientConfig>) -> anyhow::Result<()> {
    let status = one_request(target, client, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .await
        .with_context(|| format!("a first request to {}", target.label))?;
    ensure!(
        status == target.expect,
        "{}: the first request got {status}",
        target.label
    );
    for round in 1..=4 {
        latency_phase(
            &[target],
            client,
            &format!(", round {round} of 4 on one store"),
        )
        .await;
    }
    Ok(())
}

async fn latency_phase(targets: &[&Target], client: &Arc<ClientConfig>, note: &str) {
    let synced = settle_disk().await;
    println!(
        "\nlatency at {RATE} req/s: open loop over {RATE_CONNS} connections, latency from each \
         request's scheduled time, 1s warm-up + {}s measured{note}; sync(2) before it took {} ms",
        RATE_MEASURE.as_secs(),
        synced.as_millis()
    );
    for t in targets {
        let mut s = open_loop(t, client).await;
        let (p50, p99) = (s.percentile_ms(0.50), s.percentile_ms(0.99));
        println!(
            "  {:<13} {:>7.0} req/s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  p99.9 {:>6.2} ms  max {:>7.2} ms  ({})",
            t.label,
            s.rps(),
            s.percentile_ms(0.999),
            s.percentile_ms(1.0),
            s.anomalies()
        );
    }
}

/// Writes out every dirty page of the machine before a latency phase and returns how long that
/// took. The throughput phase leaves hundreds of MB of the servers' logs (an audit line per
/// request) in the page cache, which the kernel writes back 30 s later, in the middle of the
/// next phase; a latency phase should not share the disk with that, since (a) waits for fsyncs
/// and the others do not. The time is printed: it shows how much was still pending.
async fn settle_disk() -> Duration {
    let started = Instant::now();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    let _ = tokio::task::spawn_blocking(|| unsafe { libc::sync() }).await;
    started.elapsed()
}

/// One keep-alive connection of the generator.
pub(crate) struct Conn {
    src: IpAddr,
    target: Target,
    tls: TlsConnector,
    stream: Option<TlsStream<TcpStream>>,
    buf: Vec<u8>,
    opened: u64,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Conn {
    pub(crate) fn new(src: IpAddr, target: &Target, client: &Arc<ClientConfig>) -> Self {
        Self {
            src,
            target: target.clone(),
            tls: TlsConnector::from(Arc::clone(client)),
            stream: None,
            buf: Vec::with_capacity(4096),
            opened: 0,
        }
    }

    pub(crate) async fn connect(&mut self) -> std::io::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.src, 0))?;
        let tcp = socket.connect(self.target.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.target.addr.ip().into());
        self.stream = Some(self.tls.connect(name, tcp).await?);
        self.buf.clear();
        self.opened += 1;
        Ok(())
    }

    /// Sends one freshly signed request and reads the answer: its status.
    async fn request(&mut self) -> std::io::Result<u16> {
        self.request_numbered(SEQ.fetch_add(1, Ordering::Relaxed))
            .await
    }

    /// [`Conn::request`] for event number `n` (its id is [`event_id`]`(n)`).
    pub(crate) async fn request_numbered(&mut self, n: u64) -> std::io::Result<u16> {
        if self.stream.is_none() {
            self.connect().await?;
        }
        let result = self.exchange(n).await;
        match result {
            Ok((status, close)) => {
                if close {
                    self.stream = None;
                }
                Ok(status)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self, n: u64) -> std::io::Result<(u16, bool)> {
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
        let id = event_id(n);
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let body = event_body(n);
        let sig = standard_webhooks_signature(SECRET, &id, ts, body.as_bytes());
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nwebhook-id: {id}\r\n\
             webhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
            self.target.path,
            self.target.addr,
            body.len()
        );
        let stream = self.stream.as_mut().ok_or_else(|| bad("not connected"))?;
        stream.write_all(req.as_bytes()).await?;
        stream.flush().await?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head"))?;
                let mut lines = head.split("\r\n");
                let status: u16 = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("status line"))?;
                let (mut len, mut close) = (0usize, false);
                for line in lines {
                    if let Some((name, value)) = line.split_once(':') {
                        let (name, value) = (name.trim(), value.trim());
                        if name.eq_ignore_ascii_case("content-length") {
                            len = value.parse().map_err(|_| bad("content-length"))?;
                        } else if name.eq_ignore_ascii_case("connection") {
                            close = value.eq_ignore_ascii_case("close");
                        }
                    }
                }
                let total = end + 4 + len;
                while self.buf.len() < total {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(bad("closed in the body"));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                self.buf.drain(..total);
                return Ok((status, close));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(bad("closed before the answer"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The `webhook-id` of the generator's event number `n`.
pub(crate) fn event_id(n: u64) -> String {
    format!("msg_bench_{}_{n}", std::process::id())
}

/// A body like the generator's, for event number `n`.
pub(crate) fn event_body(n: u64) -> String {
    format!(
        r#"{{"type":"invoice.paid","timestamp":"2026-11-23T12:00:00Z","data":{{"id":"in_{n}","amount":1250,"currency":"KES","customer":"cus_8d7f3a"}}}}"#
    )
}

pub(crate) fn source(i: usize) -> IpAddr {
    // 127.0.1.0 onwards: one loopback address per connection.
    let i = u32::try_from(i).unwrap_or(0);
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 1, 0)) + i))
}

async fn one_request(t: &Target, client: &Arc<ClientConfig>, src: IpAddr) -> anyhow::Result<u16> {
    let mut conn = Conn::new(src, t, client);
    Ok(conn.request().await?)
}

/// [`CONNS`] connections, each sending its next request as soon as the previous is answered.
pub(crate) async fn closed_loop(t: &Target, client: &Arc<ClientConfig>) -> Stats {
    let start = Instant::now() + Duration::from_millis(200);
    let (from, until) = (start + WARMUP, start + WARMUP + MEASURE);
    let tasks: Vec<_> = (0..CONNS)
        .map(|i| {
            let mut conn = Conn::new(source(i), t, client);
            let expect = t.expect;
            tokio::spawn(async move {
                let mut s = Stats::default();
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let result = conn.request().await;
                    let done = Instant::now();
                    if sent < from {
                        continue;
                    }
                    record(&mut s, result, expect, done - sent);
                }
                s.reconnects = conn.opened.saturating_sub(1);
                s
            })
        })
        .collect();
    // Only for a target whose server processes are known.
    let cpu = (!t.pids.is_empty()).then(|| {
        let pids = t.pids.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            let before = (cpu_time(&pids), own_cpu_time());
            tokio::time::sleep_until(until.into()).await;
            let after = (cpu_time(&pids), own_cpu_time());
            Some(CpuUse {
                server: after.0?.checked_sub(before.0?)?,
                generator: after.1?.checked_sub(before.1?)?,
            })
        })
    });
    let mut stats = collect(tasks, MEASURE).await;
    if let Some(cpu) = cpu {
        stats.cpu = cpu.await.ok().flatten();
    }
    stats
}

/// User + system CPU time the processes have used so far (all their threads, including ended
/// ones), from `/proc/PID/stat`; `None` if one cannot be read.
fn cpu_time(pids: &[u32]) -> Option<Duration> {
    pids.iter()
        .map(|pid| stat_cpu_time(&format!("/proc/{pid}/stat")))
        .sum()
}

/// This process's CPU time so far.
fn own_cpu_time() -> Option<Duration> {
    stat_cpu_time("/proc/self/stat")
}

fn stat_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is the
    // first, utime the 12th and stime the 13th (proc(5) fields 14 and 15).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

/// [`RATE`] requests per second in all, spread over [`RATE_CONNS`] connections: connection `k`
/// sends request `j` at `start + (k + j * RATE_CONNS) / RATE` seconds, or as soon as it is free
/// if it is late; latency counts from the scheduled time (no coordinated omission).
async fn open_loop(t: &Target, client: &Arc<ClientConfig>) -> Stats {
    let start = Instant::now() + Duration::from_millis(200);
    let warm = Duration::from_secs(1);
    let total = warm + RATE_MEASURE;
    let interval = Duration::from_secs(1) / RATE;
    let per_conn = (total.as_secs_f64() * f64::from(RATE)) as usize / RATE_CONNS;
    let tasks: Vec<_> = (0..RATE_CONNS)
        .map(|k| {
            let mut conn = Conn::new(source(CONNS + k), t, client);
            let expect = t.expect;
            tokio::spawn(async move {
                let mut s = Stats::default();
                // Connect before the schedule starts, as the throughput phase's warm-up does.
                let _ = conn.connect().await;
                for j in 0..per_conn {
                    let slot = u32::try_from(k + j * RATE_CONNS).unwrap_or(u32::MAX);
                    let at = start + interval * slot;
                    tokio::time::sleep_until(at.into()).await;
                    let result = conn.request().await;
                    if at.duration_since(start) < warm {
                        continue;
                    }
                    record(&mut s, result, expect, at.elapsed());
                }
                s.reconnects = conn.opened.saturating_sub(1);
                s
            })
        })
        .collect();
    collect(tasks, RATE_MEASURE).await
}

fn record(s: &mut Stats, result: std::io::Result<u16>, expect: u16, latency: Duration) {
    match result {
        Ok(status) if status == expect => {
            s.ok += 1;
            s.latencies_us
                .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        }
        Ok(status) => *s.other.entry(status).or_default() += 1,
        Err(_) => s.errors += 1,
    }
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Stats>>, window: Duration) -> Stats {
    let mut all = Stats {
        window,
        ..Stats::default()
    };
    for task in tasks {
        match task.await {
            Ok(s) => all.merge(s),
            Err(_) => all.errors += 1,
        }
    }
    all
}

/// The venv with FastAPI and uvicorn: `target/bench-venv`, made with pip on first use.
fn python_venv(target_dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = target_dir.join("bench-venv");
    let uvicorn = venv.join("bin").join("uvicorn");
    if !uvicorn.is_file() {
        println!("==> making {} (fastapi, uvicorn[standard])", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("running python3 -m venv (is Python 3 installed?)")?;
        ensure!(status.success(), "python3 -m venv failed: {status}");
        let status = Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "fastapi", "uvicorn[standard]"])
            .status()
            .context("running pip install")?;
        ensure!(
            status.success(),
            "pip install fastapi uvicorn failed: {status}"
        );
    }
    let out = Command::new(venv.join("bin").join("python"))
        .args([
            "-c",
            "import sys, fastapi, uvicorn; print(sys.version.split()[0], fastapi.__version__, uvicorn.__version__)",
        ])
        .output()
        .context("asking the venv for versions")?;
    println!(
        "python, fastapi, uvicorn: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(venv)
}

/// uvicorn serving tests/bench/fastapi_receiver.py in the bench namespace; stopped by its PID.
struct Uvicorn {
    child: Option<Child>,
    log: PathBuf,
}

impl Uvicorn {
    fn start(ns: &NetNs, venv: &Path, dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let log = dir.join("uvicorn.log");
        let out = std::fs::File::create(&log).context("creating the uvicorn log")?;
        let err = out.try_clone().context("dup of the uvicorn log")?;
        let app_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
        let mut cmd = Command::new(venv.join("bin").join("uvicorn"));
        cmd.arg("fastapi_receiver:app")
            .arg("--app-dir")
            .arg(&app_dir)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(FASTAPI_PORT.to_string())
            .args(["--workers", "2"])
            .arg("--ssl-certfile")
            .arg(cert)
            .arg("--ssl-keyfile")
            .arg(key)
            .env("BENCH_SECRET", SECRET)
            .env("BENCH_DB", dir.join("fastapi.db"))
            .env("BENCH_ALLOW", "127.0.0.0/8")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let entry = NsEntry::new(ns);
        entry.apply(&mut cmd);
        let child = cmd.spawn().context("spawning uvicorn")?;
        drop(entry);
        let mut me = Self {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = me.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                me.child = None;
                bail!("uvicorn exited ({status}); log:\n{}", me.read_log());
            }
            // Ready once both workers could be serving: the log says so per worker.
            let ready = me
                .read_log()
                .matches("Application startup complete")
                .count()
                >= 2;
            if ready {
                return Ok(me);
            }
            if Instant::now() > deadline {
                bail!("uvicorn not ready within 30 s; log:\n{}", me.read_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn read_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// uvicorn's PID and those of its workers.
    fn pids(&self) -> Vec<u32> {
        let Some(child) = &self.child else {
            return Vec::new();
        };
        let mut pids = vec![child.id()];
        pids.extend(child_pids(child.id()));
        pids
    }

    /// SIGTERM (uvicorn stops its workers), SIGKILL to it and its children after 10 s; returns
    /// the log's last lines.
    fn stop(mut self) -> String {
        self.terminate();
        let log = self.read_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        let children = child_pids(child.id());
        // SAFETY: signals only our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for c in children {
            if let Ok(c) = libc::pid_t::try_from(c) {
                // SAFETY: a worker uvicorn (our child) started; it is still its child (the
                // parent has not exited, so the PID was not reused).
                unsafe { libc::kill(c, libc::SIGKILL) };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Uvicorn {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The direct children of `pid` (`/proc/PID/task/*/children`).
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Events in hookwall's store (a cross-check that (a) stored what it answered).
fn count_rows(db: &Path) -> Option<u64> {
    let reader = hookwall::store::Reader::open(db).ok()?;
    reader.count().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_reads_this_process_and_counts_work() {
        let before = own_cpu_time().expect("own CPU time");
        let by_pid = cpu_time(&[std::process::id()]).expect("CPU time by PID");
        assert!(by_pid >= before, "{by_pid:?} read after {before:?}");
        // Spin until the counter shows 100 ms of CPU; on a shared machine that may take
        // longer than 100 ms of wall time, but never 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let used = own_cpu_time()
                .expect("own CPU time")
                .checked_sub(before)
                .expect("CPU time never goes back");
            if used >= Duration::from_millis(100) || Instant::now() > deadline {
                break used;
            }
        };
        assert!(
            used >= Duration::from_millis(100),
            "only {used:?} of CPU counted in 10 s"
        );
        assert_eq!(cpu_time(&[u32::MAX]), None, "no such process");
    }
}
