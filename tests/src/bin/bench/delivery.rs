//! `bench delivery`: how fast hookwall takes stored events to where they go, and how long a
//! callback takes from the provider's request to the application.
//!
//! Everything runs in a network namespace the bench makes, on its loopback: the real `hookwall
//! run` (release), a real `nats-server -js`, and, in this process, a minimal HTTP/1.1
//! "application" that verifies nothing and records when each `webhook-id` arrived, plus the
//! load generator of `bench http` (tokio + rustls).
//!
//! 1. Baselines: the application's own receive rate when sent to directly (plain HTTP/1.1
//!    keep-alive, as many connections as hookwall's `delivery.concurrency`), a direct
//!    JetStream publish rate (publish, wait for the ack; as many at once as hookwall), and
//!    hookwall's own intake (the closed loop of `bench http` against a daemon that only stores),
//!    which the drain rates are compared with.
//! 2. Store -> sink: [`DRAIN_EVENTS`] events written into a fresh store before the daemon starts;
//!    the rate is measured between the first and the last receipt (the application's clock, or
//!    JetStream's stored timestamps).
//! 3. End to end at [`RATE`] events/s (open loop, TLS, signed Standard Webhooks callbacks): from
//!    each request's scheduled send time to the application's receipt of that event (and to
//!    JetStream's stored timestamp for the NATS sink).
//!
//! Method and results: docs/benchmarks.md.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use hookwall::store::{HashedBody, NewEvent, Store};
use hookwall_tests::{
    config::{ConfigSpec, Route},
    daemon::{Daemon, PinsGuard},
    https::TestCa,
    nats::{NatsServer, with_jetstream},
    netns::{ALLOWED_V4_NET, NetNs, VethPair},
};
use rustls::ClientConfig;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

use crate::http::{Conn, HOOKWALL_PORT, ROUTE, SECRET, Target, event_body, event_id, source};

/// Events written into the store for the drain measurements, and sent in each baseline.
const DRAIN_EVENTS: u64 = 20_000;
/// Paced rate of the latency phases.
const RATE: u32 = 500;
/// The bar for the end-to-end p99 at [`RATE`].
const LATENCY_BAR_MS: f64 = 10.0;
/// The bar for the drain rates, events/s (or half the intake measured in the run, if lower).
const DRAIN_BAR: f64 = 25_000.0;
/// Connections of the paced generator.
const RATE_CONNS: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(10);
/// hookwall's `delivery.concurrency` default; the baselines use as many in flight.
const CONCURRENCY: usize = 32;
const APP_PORT: u16 = 8000;
const APP_PATH: &str = "/hookwall";
const SUBJECT: &str = "hookwall.bench";
const STREAM: &str = "HOOKWALL_BENCH";
const BASE_SUBJECT: &str = "bench.baseline";
const BASE_STREAM: &str = "BENCH_BASELINE";

/// When each event id reached the application, and how many arrived in all.
#[derive(Default)]
struct Receipts {
    at: Mutex<HashMap<String, Instant>>,
    total: AtomicU64,
}

impl Receipts {
    fn record(&self, id: String, at: Instant) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id)
            .or_insert(at);
    }

    fn take(&self) -> HashMap<String, Instant> {
        self.total.store(0, Ordering::Relaxed);
        std::mem::take(
            &mut *self
                .at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The delivery benchmark.
pub fn bench_delivery() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("hw-bench-delivery-")
        .tempdir()
        .context("making a temp dir")?;
    let ca = TestCa::new();
    let (cert, key) = ca.issue(dir.path(), &["127.0.0.1"]);
    let client = ca.http1_client();
    let ns = NetNs::new("hw-bench-dlv-");
    let ns_peer = NetNs::new("hw-bench-peer-");
    let veth = VethPair::new(&ns, &[], &ns_peer, &[]);
    let pins = PinsGuard::new();
    let nats = NatsServer::start_in(&ns, Ipv4Addr::LOCALHOST.into());
    let rt = ns_runtime(&ns)?;
    let receipts = Arc::new(Receipts::default());
    {
        let receipts = Arc::clone(&receipts);
        in_ns(&rt, async move { app(receipts).await })??;
    }
    std::fs::write(dir.path().join("sw"), SECRET).context("writing the route secret")?;
    std::fs::write(dir.path().join("delivery"), SECRET).context("writing the delivery secret")?;
    let lab = Lab {
        ns: &ns,
        dir: dir.path(),
        veth_if: &veth.a,
        pins: &pins,
        cert: (&cert, &key),
        client: &client,
        nats: &nats,
        rt: &rt,
        receipts: &receipts,
    };

    println!(
        "hookwall delivery benchmark: release daemon, nats-server {} with JetStream (file \
         storage), an in-process HTTP/1.1 application that records receipt times; all on the \
         loopback of a bench namespace; delivery.concurrency = {CONCURRENCY}",
        nats_version()
    );
    println!("\nbaselines (same run, same loopback):");
    let app_rate = lab.app_direct_rate()?;
    println!(
        "  application receiving directly: {app_rate:>8.0} events/s ({DRAIN_EVENTS} POSTs, \
         {CONCURRENCY} keep-alive connections, closed loop)"
    );
    let js_rate = lab.jetstream_direct_rate()?;
    println!(
        "  JetStream publish directly:     {js_rate:>8.0} events/s ({DRAIN_EVENTS} publishes, \
         {CONCURRENCY} at a time, each waiting for its ack)"
    );

    let intake = lab.intake_rate()?;
    println!(
        "  hookwall's intake:              {intake:>8.0} events/s (signed callbacks over TLS \
         accepted, as `bench http` sends them: {} connections, closed loop, {}s warm-up + {}s \
         measured; no [delivery])",
        crate::http::CONNS,
        crate::http::WARMUP.as_secs(),
        crate::http::MEASURE.as_secs()
    );

    println!("\nstore -> sink: {DRAIN_EVENTS} events in the store before the daemon starts");
    let (daemon, http_rate) = lab.drain_http()?;
    println!(
        "  HTTP  (POST to the application): {http_rate:>8.0} events/s  ({:.2} of the \
         application's own rate, {:.2} of hookwall's intake)",
        http_rate / app_rate,
        http_rate / intake
    );
    println!(
        "\nend to end at {RATE} events/s: signed callbacks over TLS (open loop, {RATE_CONNS} \
         connections, {}s warm-up + {}s measured), from each request's scheduled send time",
        WARMUP.as_secs(),
        MEASURE.as_secs()
    );
    let http_latency = lab.paced(Sink::Http)?;
    println!("  HTTP  provider -> application receipt: {http_latency}");
    drop(daemon);

    let (daemon, nats_rate) = lab.drain_nats()?;
    println!(
        "\nstore -> sink (again, fresh store):\n  NATS  (JetStream publish + ack):  \
         {nats_rate:>8.0} events/s  ({:.2} of the direct publish rate, {:.2} of hookwall's \
         intake)",
        nats_rate / js_rate,
        nats_rate / intake
    );
    let nats_latency = lab.paced(Sink::Nats)?;
    println!(
        "\nend to end at {RATE} events/s, NATS sink:\n  NATS  provider -> stored in the stream: \
         {nats_latency}"
    );
    drop(daemon);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let drain_bar = DRAIN_BAR.min(intake / 2.0);
    println!(
        "\nbars: drain at least {drain_bar:.0} events/s (the lower of {DRAIN_BAR:.0} and half \
         the intake): HTTP {}, NATS {}; p99 at {RATE}/s under {LATENCY_BAR_MS} ms: HTTP {:.2} ms \
         {}, NATS {:.2} ms {}",
        met(http_rate >= drain_bar),
        met(nats_rate >= drain_bar),
        http_latency.p99,
        met(http_latency.p99 < LATENCY_BAR_MS),
        nats_latency.p99,
        met(nats_latency.p99 < LATENCY_BAR_MS),
    );
    drop(rt);
    drop((nats, pins, veth, ns_peer, ns, dir));
    Ok(())
}

/// Writes back what earlier phases left dirty, so a latency phase does not share the disk with
/// it: the receiver answers after an fsync.
fn settle_disk() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// A runtime whose threads are inside `ns` (tasks spawned on it open sockets there).
fn ns_runtime(ns: &NetNs) -> anyhow::Result<Runtime> {
    let path = ns.path();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let file = std::fs::File::open(&path).expect("opening the bench namespace");
            // SAFETY: setns on a valid namespace fd only moves this (new) thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        })
        .build()
        .context("building the bench runtime")
}

/// Runs `f` to completion on a worker of `rt` (never on the calling thread, which is outside
/// the namespace); a detached task for `f`s that never end (the application).
fn in_ns<T: Send + 'static>(
    rt: &Runtime,
    f: impl Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    rt.block_on(async move { tokio::spawn(f).await })
        .context("a bench task panicked")
}

/// The application: binds at once (so it is up when this returns), serves in the background.
async fn app(receipts: Arc<Receipts>) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, APP_PORT))
        .await
        .context("binding the application's port")?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(app_conn(stream, Arc::clone(&receipts)));
        }
    });
    Ok(())
}

/// One keep-alive connection to the application: reads requests (headers, then Content-Length
/// bytes of body), records `webhook-id` with the time its body was complete, answers 204.
async fn app_conn(mut stream: TcpStream, receipts: Arc<Receipts>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let (mut len, mut id) = (0usize, String::new());
        for line in head.split("\r\n").skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("webhook-id") {
                    value.trim().clone_into(&mut id);
                }
            }
        }
        let total = head_end + 4 + len;
        while buf.len() < total {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        receipts.record(id, Instant::now());
        buf.drain(..total);
        if stream
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    Http,
    Nats,
}

/// Latency percentiles of one paced phase.
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    received: usize,
    sent: usize,
    provider_p99: f64,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} of {} measured \
             events arrived; the provider's own answer: p99 {:.2} ms)",
            self.p50, self.p99, self.p999, self.max, self.received, self.sent, self.provider_p99
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// What the phases share.
struct Lab<'a> {
    ns: &'a NetNs,
    dir: &'a Path,
    veth_if: &'a str,
    pins: &'a PinsGuard,
    cert: (&'a Path, &'a Path),
    client: &'a Arc<ClientConfig>,
    nats: &'a NatsServer,
    rt: &'a Runtime,
    receipts: &'a Arc<Receipts>,
}

impl Lab<'_> {
    /// Writes a config delivering with `delivery` (TOML) and a store at `store`; returns its path
    /// and the metrics address.
    fn config(
        &self,
        name: &str,
        store: &Path,
        delivery: &str,
    ) -> anyhow::Result<(std::path::PathBuf, SocketAddr)> {
        let mut spec = ConfigSpec::new(self.veth_if, self.pins.path(), self.dir, &[ALLOWED_V4_NET]);
        spec.server_listen = format!("127.0.0.1:{HOOKWALL_PORT}");
        spec.protected_ports = vec![HOOKWALL_PORT];
        spec.store_path = store.to_path_buf();
        spec.tls = Some((self.cert.0.to_path_buf(), self.cert.1.to_path_buf()));
        spec.routes = vec![Route::signed(
            ROUTE,
            "standard-webhooks",
            &[self.dir.join("sw")],
        )];
        let path = self.dir.join(format!("{name}.toml"));
        // `delivery` is appended as written: the bench keeps hookwall's own delivery defaults,
        // which `DeliverySpec` would replace with the tests' quick retries.
        std::fs::write(&path, format!("{}\n{delivery}", spec.render()))
            .context("writing the config")?;
        Ok((path, spec.metrics_listen))
    }

    fn http_delivery(&self) -> String {
        format!(
            "[delivery]\nurl = \"http://127.0.0.1:{APP_PORT}{APP_PATH}\"\nsecret = {{ file = {:?} }}\n\
             concurrency = {CONCURRENCY}\n",
            self.dir.join("delivery").display().to_string()
        )
    }

    fn nats_delivery(&self) -> String {
        format!(
            "[delivery]\nconcurrency = {CONCURRENCY}\n\n[delivery.nats]\nurl = {:?}\n\
             subject = {SUBJECT:?}\nstream = {STREAM:?}\n",
            self.nats.url()
        )
    }

    /// A store at `path` holding `DRAIN_EVENTS` pending events, ids `drain-{tag}-{i}`.
    fn prefill(&self, path: &Path, tag: &str) -> anyhow::Result<()> {
        let path = path.to_path_buf();
        let tag = tag.to_owned();
        in_ns(self.rt, async move {
            let store = Store::open(&path).context("opening the bench store")?;
            let handle = store.handle();
            let now = hookwall::store::unix_ms(SystemTime::now());
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..DRAIN_EVENTS {
                let (handle, tag) = (handle.clone(), tag.clone());
                tasks.spawn(async move {
                    handle
                        .insert(NewEvent {
                            route: ROUTE.to_owned(),
                            event_id: format!("drain-{tag}-{i}"),
                            kind: "bench".to_owned(),
                            received_at_ms: now,
                            body: HashedBody::new(event_body(i).into_bytes()),
                            headers: vec![(
                                "content-type".to_owned(),
                                "application/json".to_owned(),
                            )],
                        })
                        .await
                });
                if tasks.len() >= 512 {
                    let _inserted = tasks.join_next().await.context("insert task")??;
                }
            }
            while let Some(r) = tasks.join_next().await {
                r.context("insert task")??;
            }
            drop(handle);
            store.close().await.context("closing the bench store")?;
            anyhow::Ok(())
        })?
    }

    /// Baseline: the application receiving `DRAIN_EVENTS` POSTs from `CONCURRENCY` keep-alive
    /// connections.
    fn app_direct_rate(&self) -> anyhow::Result<f64> {
        self.receipts.take();
        let per_conn = DRAIN_EVENTS / CONCURRENCY as u64;
        let elapsed = in_ns(self.rt, async move {
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..CONCURRENCY {
                tasks.spawn(async move {
                    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, APP_PORT)).await?;
                    stream.set_nodelay(true)?;
                    let mut answer = [0u8; 64];
                    for i in 0..per_conn {
                        let body = event_body(i);
                        let req = format!(
                            "POST {APP_PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: \
                             application/json\r\nwebhook-id: direct-{c}-{i}\r\ncontent-length: \
                             {}\r\n\r\n{body}",
                            body.len()
                        );
                        stream.write_all(req.as_bytes()).await?;
                        let mut got = 0;
                        // The answer is exactly "HTTP/1.1 204 No Content\r\n\r\n".
                        while got < 27 {
                            let n = stream.read(&mut answer[got..]).await?;
                            ensure!(n > 0, "the application closed the connection");
                            got += n;
                        }
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.context("sender task")??;
            }
            anyhow::Ok(started.elapsed())
        })??;
        let got = self.receipts.take().len() as u64;
        ensure!(
            got == per_conn * CONCURRENCY as u64,
            "the application got {got} events"
        );
        Ok(got as f64 / elapsed.as_secs_f64())
    }

    /// Baseline: `DRAIN_EVENTS` JetStream publishes, `CONCURRENCY` at a time, each waiting for
    /// its ack, with a `Nats-Msg-Id` each (as hookwall publishes), into a stream of its own.
    fn jetstream_direct_rate(&self) -> anyhow::Result<f64> {
        let url = self.nats.url();
        let elapsed = with_jetstream(&self.ns.path(), &url, async move |js| {
            js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: BASE_STREAM.to_owned(),
                subjects: vec![BASE_SUBJECT.to_owned()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("making the baseline stream")?;
            let per_task = DRAIN_EVENTS / CONCURRENCY as u64;
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..CONCURRENCY {
                let js = js.clone();
                tasks.spawn(async move {
                    for i in 0..per_task {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert(
                            async_nats::header::NATS_MESSAGE_ID,
                            format!("base-{c}-{i}").as_str(),
                        );
                        js.publish_with_headers(
                            BASE_SUBJECT,
                            headers,
                            event_body(i).into_bytes().into(),
                        )
                        .await?
                        .await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.context("publisher task")??;
            }
            Ok(started.elapsed())
        })?;
        Ok(DRAIN_EVENTS as f64 / elapsed.as_secs_f64())
    }

    /// hookwall's intake: the accepted callbacks per second of a daemon that only stores (no
    /// `[delivery]`), loaded as `bench http` loads it.
    fn intake_rate(&self) -> anyhow::Result<f64> {
        let store = self.dir.join("events-intake.db");
        let (config, metrics) = self.config("intake", &store, "")?;
        let daemon = Daemon::start(self.ns, &config, metrics, self.dir);
        let client = Arc::clone(self.client);
        let target = hookwall_target();
        let stats = in_ns(self.rt, async move {
            crate::http::closed_loop(&target, &client).await
        })?;
        drop(daemon);
        // Hundreds of MB of events and log lines: removed, and written back now rather than
        // during a latency phase, where the kernel's writeback would delay the receiver's fsync.
        for suffix in ["", "-wal", "-shm"] {
            let mut path = store.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
        settle_disk();
        ensure!(
            stats.ok > 0,
            "no callback was accepted ({})",
            stats.anomalies()
        );
        Ok(stats.rps())
    }

    /// Store -> application: a daemon started on a full store; the rate between the first and
    /// the last receipt. Returns the daemon (still running, store drained).
    fn drain_http(&self) -> anyhow::Result<(Daemon, f64)> {
        self.receipts.take();
        let store = self.dir.join("events-http.db");
        self.prefill(&store, "http")?;
        let (config, metrics) = self.config("http", &store, &self.http_delivery())?;
        let daemon = Daemon::start(self.ns, &config, metrics, self.dir);
        let deadline = Instant::now() + Duration::from_secs(300);
        while (self.receipts.at.lock().map(|m| m.len()).unwrap_or(0) as u64) < DRAIN_EVENTS {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {DRAIN_EVENTS} events reached the application; log:\n{}",
                    self.receipts.total(),
                    daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let total = self.receipts.total();
        let got = self.receipts.take();
        let first = got.values().min().copied().context("no receipts")?;
        let last = got.values().max().copied().context("no receipts")?;
        if total != DRAIN_EVENTS {
            println!("  (the application received {total} POSTs for {DRAIN_EVENTS} events)");
        }
        Ok((
            daemon,
            (DRAIN_EVENTS - 1) as f64 / (last - first).as_secs_f64(),
        ))
    }

    /// Store -> JetStream: as [`Lab::drain_http`], timed by the stream's stored timestamps.
    fn drain_nats(&self) -> anyhow::Result<(Daemon, f64)> {
        let store = self.dir.join("events-nats.db");
        self.prefill(&store, "nats")?;
        let (config, metrics) = self.config("nats", &store, &self.nats_delivery())?;
        let daemon = Daemon::start(self.ns, &config, metrics, self.dir);
        hookwall_tests::nats::wait_stream_len(
            &self.ns.path(),
            &self.nats.url(),
            STREAM,
            DRAIN_EVENTS,
            Duration::from_secs(300),
        )
        .with_context(|| format!("waiting for the drain; log:\n{}", daemon.log()))?;
        let (first, last) = with_jetstream(&self.ns.path(), &self.nats.url(), async |js| {
            let mut s = js.get_stream(STREAM).await?;
            let state = s.info().await?.state.clone();
            let first = s.get_raw_message(state.first_sequence).await?;
            let last = s.get_raw_message(state.last_sequence).await?;
            ensure!(
                state.messages == DRAIN_EVENTS,
                "the stream holds {} messages for {DRAIN_EVENTS} events",
                state.messages
            );
            Ok((
                first.time.unix_timestamp_nanos(),
                last.time.unix_timestamp_nanos(),
            ))
        })?;
        let span = (last - first) as f64 / 1e9;
        Ok((daemon, (DRAIN_EVENTS - 1) as f64 / span))
    }

    /// `RATE` signed callbacks per second to hookwall; latency from each scheduled send time to
    /// the application's receipt (HTTP) or the stream's stored time (NATS).
    fn paced(&self, sink: Sink) -> anyhow::Result<Latency> {
        settle_disk();
        self.receipts.take();
        let client = Arc::clone(self.client);
        // The wall clock at a known instant, to compare with JetStream's timestamps.
        let (anchor, anchor_wall) = (Instant::now(), SystemTime::now());
        let base = 1_000_000_000 * (1 + u64::from(sink == Sink::Nats));
        let (scheduled, provider) = in_ns(self.rt, async move { open_loop(&client, base).await })??;
        let measured: Vec<(u64, Instant)> = scheduled;
        let sent = measured.len();
        let mut latencies: Vec<f64> = match sink {
            Sink::Http => {
                let deadline = Instant::now() + Duration::from_secs(30);
                let want: Vec<String> = measured.iter().map(|(n, _)| event_id(*n)).collect();
                loop {
                    let have = {
                        let at = self
                            .receipts
                            .at
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        want.iter().filter(|id| at.contains_key(*id)).count()
                    };
                    if have == want.len() || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let at = self.receipts.take();
                measured
                    .iter()
                    .filter_map(|(n, when)| {
                        at.get(&event_id(*n))
                            .map(|got| got.saturating_duration_since(*when).as_secs_f64() * 1e3)
                    })
                    .collect()
            }
            Sink::Nats => {
                let url = self.nats.url();
                let ns = self.ns.path();
                let want: HashMap<String, Instant> = measured
                    .iter()
                    .map(|(n, when)| (event_id(*n), *when))
                    .collect();
                let stored = with_jetstream(&ns, &url, async move |js| {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut s = js.get_stream(STREAM).await?;
                    loop {
                        let n = s.info().await?.state.messages;
                        if n >= DRAIN_EVENTS + want.len() as u64 || Instant::now() > deadline {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let state = s.info().await?.state.clone();
                    let mut out = Vec::new();
                    for seq in (DRAIN_EVENTS + 1).max(state.first_sequence)..=state.last_sequence {
                        let m = s.get_raw_message(seq).await?;
                        let id = m
                            .headers
                            .get(async_nats::header::NATS_MESSAGE_ID)
                            .map(|v| v.to_string());
                        if let Some(when) = id.and_then(|id| want.get(&id).copied()) {
                            out.push((when, m.time.unix_timestamp_nanos()));
                        }
                    }
                    Ok(out)
                })?;
                let anchor_ns = anchor_wall
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                stored
                    .into_iter()
                    .map(|(when, stored_ns)| {
                        let sched_ns = anchor_ns + when.duration_since(anchor).as_nanos() as i128;
                        (stored_ns - sched_ns).max(0) as f64 / 1e6
                    })
                    .collect()
            }
        };
        latencies.sort_by(f64::total_cmp);
        let mut provider = provider;
        provider.sort_by(f64::total_cmp);
        Ok(Latency {
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            p999: percentile(&latencies, 0.999),
            max: percentile(&latencies, 1.0),
            received: latencies.len(),
            sent,
            provider_p99: percentile(&provider, 0.99),
        })
    }
}

/// The daemon's HTTPS route, as the intake and the open loop send to it.
fn hookwall_target() -> Target {
    Target {
        label: "hookwall",
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, HOOKWALL_PORT)),
        path: ROUTE,
        expect: 200,
        pids: Vec::new(),
    }
}

/// `RATE` requests per second over `RATE_CONNS` connections for `WARMUP + MEASURE`; event
/// numbers from `base`. Returns each measured event's number and scheduled send time (answered
/// 200 only), and the provider-side latencies in ms.
async fn open_loop(
    client: &Arc<ClientConfig>,
    base: u64,
) -> anyhow::Result<(Vec<(u64, Instant)>, Vec<f64>)> {
    let target = hookwall_target();
    let start = Instant::now() + Duration::from_millis(300);
    let total = WARMUP + MEASURE;
    let interval = Duration::from_secs(1) / RATE;
    let per_conn = (total.as_secs_f64() * f64::from(RATE)) as usize / RATE_CONNS;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..RATE_CONNS {
        // Past the addresses `bench http` uses, so the rate limiter starts fresh.
        let mut conn = Conn::new(source(2048 + k), &target, client);
        tasks.spawn(async move {
            let (mut sched, mut provider, mut failed) = (Vec::new(), Vec::new(), 0u64);
            let _ = conn.connect().await;
            for j in 0..per_conn {
                let slot = k + j * RATE_CONNS;
                let at = start + interval * u32::try_from(slot).unwrap_or(u32::MAX);
                tokio::time::sleep_until(at.into()).await;
                let n = base + slot as u64;
                let status = conn.request_numbered(n).await;
                if at.duration_since(start) < WARMUP {
                    continue;
                }
                match status {
                    Ok(200) => {
                        provider.push(at.elapsed().as_secs_f64() * 1e3);
                        sched.push((n, at));
                    }
                    _ => failed += 1,
                }
            }
            (sched, provider, failed)
        });
    }
    let (mut sched, mut provider, mut failed) = (Vec::new(), Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (s, p, f) = r.context("generator task")?;
        sched.extend(s);
        provider.extend(p);
        failed += f;
    }
    ensure!(failed == 0, "{failed} callbacks were not answered 200");
    Ok((sched, provider))
}

fn nats_version() -> String {
    std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
