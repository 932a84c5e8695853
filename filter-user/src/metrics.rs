//! The Prometheus registry and the `/metrics` listener (on `metrics.listen`, never on the public
//! listener).
//!
//! Kernel counters are not copied into the registry: a collector reads the pinned per-CPU
//! counters map at each scrape, so the numbers are the kernel's own and survive daemon restarts.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64},
    },
    time::Duration,
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use filter_common::{Counter, CounterValue};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, text::encode},
    metrics::{
        counter::{ConstCounter, Counter as PromCounter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::filter::{Pins, pinned::PinnedFilter};

/// Labels of `hookwall_config_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of `hookwall_allowlist_prefixes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabels {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
}

/// Labels of `hookwall_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route's configured path, or `none` when no route matched (never the request's path:
    /// that would let any client create series).
    pub route: String,
    /// What became of the request (see `receiver::Outcome`).
    pub outcome: &'static str,
}

/// Labels of `hookwall_http_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// As in [`HttpLabels::route`].
    pub route: String,
    /// Why: the audit line's reason (a verifier's refusal such as `bad_signature` or
    /// `timestamp_too_old`, or a step's such as `content_length`), else the outcome when the
    /// step has no finer reason (`not_found`, `method_not_allowed`, `rate_limited`). Always one
    /// of a fixed set of the code's own words, never a value from the request.
    pub reason: &'static str,
}

/// Labels of `hookwall_connections_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Why the connection was closed before TLS (`proxy_header_untrusted`,
    /// `proxy_header_missing`, `proxy_header_malformed`).
    pub reason: &'static str,
}

/// Labels of `hookwall_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// As in [`HttpLabels::route`].
    pub route: String,
}

/// Buckets of `hookwall_http_request_duration_seconds`: 0.5 ms to 10 s; a provider retries after
/// a few seconds, so the interesting part is well under one.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Labels of `hookwall_delivery_queue_events`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `pending`, `delivered` or `dead`.
    pub state: &'static str,
}

/// Labels of `hookwall_deliveries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `http` or `nats`.
    pub sink: &'static str,
    /// `delivered`, `retry` (a failed attempt that will be tried again) or `dead`.
    pub result: &'static str,
}

/// Labels of the delivery histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// `http` or `nats`.
    pub sink: &'static str,
}

/// Labels of `hookwall_validation_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidationLabels {
    /// The route's configured path.
    pub route: String,
    /// `app_accept`, `app_reject` or `fallback` (timeout or error: the route's `on_failure`).
    pub result: &'static str,
}

/// Buckets of the delivery latency (received to delivered): 1 ms to a day, since a backlog
/// drained after an outage is measured in hours.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
    21_600.0, 86_400.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The delivery metrics; part of [`Metrics`].
#[derive(Clone)]
pub struct DeliveryMetrics {
    /// `hookwall_delivery_queue_events{state}`: stored events by delivery state.
    pub queue_events: Family<StateLabels, Gauge<i64, AtomicI64>>,
    /// `hookwall_delivery_oldest_pending_age_seconds`: age of the oldest undelivered event.
    pub oldest_pending_age: Gauge<f64, AtomicU64>,
    /// `hookwall_deliveries_total{sink,result}`: delivery attempts by result.
    pub deliveries: Family<DeliveryLabels, PromCounter>,
    /// `hookwall_delivery_dead_letters_total`: events moved to the dead-letter state.
    pub dead_letters: PromCounter,
    /// `hookwall_delivery_attempt_duration_seconds{sink}`: time of one attempt.
    pub attempt_duration: Family<SinkLabels, Histogram, fn() -> Histogram>,
    /// `hookwall_delivery_latency_seconds{sink}`: from the provider's request to delivery.
    pub latency: Family<SinkLabels, Histogram, fn() -> Histogram>,
    /// `hookwall_validation_requests_total{route,result}`: C2B validations and who decided.
    pub validations: Family<ValidationLabels, PromCounter>,
}

impl DeliveryMetrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            queue_events: Family::default(),
            oldest_pending_age: Gauge::default(),
            deliveries: Family::default(),
            dead_letters: PromCounter::default(),
            attempt_duration: Family::new_with_constructor(duration_histogram),
            latency: Family::new_with_constructor(latency_histogram),
            validations: Family::default(),
        };
        registry.register(
            "delivery_queue_events",
            "Stored events by delivery state",
            this.queue_events.clone(),
        );
        registry.register(
            "delivery_oldest_pending_age_seconds",
            "Age of the oldest event not yet delivered (0 when none)",
            this.oldest_pending_age.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by sink and result",
            this.deliveries.clone(),
        );
        registry.register(
            "delivery_dead_letters",
            "Events moved to the dead-letter state",
            this.dead_letters.clone(),
        );
        registry.register(
            "delivery_attempt_duration_seconds",
            "Time of one delivery attempt, by sink",
            this.attempt_duration.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from the provider's request to the event's delivery, by sink",
            this.latency.clone(),
        );
        registry.register(
            "validation_requests",
            "C2B validation requests, by route and who decided the answer",
            this.validations.clone(),
        );
        for state in ["pending", "delivered", "dead"] {
            let _ = this.queue_events.get_or_create(&StateLabels { state });
        }
        this
    }
}

/// The daemon's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// `hookwall_config_reloads_total{result}`.
    pub reloads: Family<ReloadLabels, PromCounter>,
    /// `hookwall_allowlist_prefixes{family}`.
    pub prefixes: Family<FamilyLabels, Gauge<i64, AtomicI64>>,
    /// `hookwall_config_last_reload_success_timestamp_seconds`.
    pub last_reload_success: Gauge<f64, AtomicU64>,
    /// `hookwall_http_requests_total{route,outcome}`.
    pub http_requests: Family<HttpLabels, PromCounter>,
    /// `hookwall_http_refusals_total{route,reason}`: every request not answered with success,
    /// by why.
    pub http_refusals: Family<RefusalLabels, PromCounter>,
    /// `hookwall_http_request_duration_seconds{route}`: time from the request's arrival to its
    /// answer.
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `hookwall_connections_refused_total{reason}`: connections closed before TLS because of
    /// their PROXY protocol header (or its absence).
    pub connections_refused: Family<ConnectionLabels, PromCounter>,
    /// The delivery worker's and the queue's metrics.
    pub delivery: DeliveryMetrics,
}

impl Metrics {
    /// A registry with every metric `docs/operations.md` lists; kernel counters come from the maps
    /// under `pins`.
    #[must_use]
    pub fn new(pins: &Pins) -> Self {
        let mut registry = Registry::with_prefix("hookwall");
        let reloads = Family::<ReloadLabels, PromCounter>::default();
        let prefixes = Family::<FamilyLabels, Gauge<i64, AtomicI64>>::default();
        let last_reload_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "config_reloads",
            "Config reloads tried, by result",
            reloads.clone(),
        );
        registry.register(
            "allowlist_prefixes",
            "Prefixes in the kernel maps now, by family",
            prefixes.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time at which the config in force was loaded",
            last_reload_success.clone(),
        );
        let http_requests = Family::<HttpLabels, PromCounter>::default();
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "http_requests",
            "HTTPS requests, by route and outcome",
            http_requests.clone(),
        );
        let http_refusals = Family::<RefusalLabels, PromCounter>::default();
        registry.register(
            "http_refusals",
            "HTTPS requests not answered with success, by route and reason",
            http_refusals.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            http_duration.clone(),
        );
        let connections_refused = Family::<ConnectionLabels, PromCounter>::default();
        registry.register(
            "connections_refused",
            "Connections closed before TLS because of their PROXY protocol header, by reason",
            connections_refused.clone(),
        );
        for reason in [
            "proxy_header_untrusted",
            "proxy_header_missing",
            "proxy_header_malformed",
        ] {
            let _ = connections_refused.get_or_create(&ConnectionLabels { reason });
        }
        for result in ["success", "failure"] {
            let _ = reloads.get_or_create(&ReloadLabels { result });
        }
        let delivery = DeliveryMetrics::register(&mut registry);
        registry.register_collector(Box::new(XdpCollector { pins: pins.clone() }));
        Self {
            registry: Arc::new(registry),
            reloads,
            prefixes,
            last_reload_success,
            http_requests,
            http_refusals,
            http_duration,
            connections_refused,
            delivery,
        }
    }

    /// Records the prefix counts now in the kernel.
    pub fn set_prefixes(&self, v4: usize, v6: usize) {
        for (family, n) in [("ipv4", v4), ("ipv6", v6)] {
            self.prefixes
                .get_or_create(&FamilyLabels { family })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Records that the config in force was loaded now (at start), without counting a reload.
    pub fn mark_loaded(&self) {
        self.last_reload_success.set(unix_now_f64());
    }

    /// Records one reload attempt.
    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        if success {
            self.mark_loaded();
        }
    }

    /// The Prometheus text exposition of every metric.
    ///
    /// # Errors
    /// Only if formatting fails, which the text encoder does not do in practice.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads the kernel's per-CPU verdict counters at scrape time.
#[derive(Debug)]
struct XdpCollector {
    pins: Pins,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
    reason: &'static str,
}

impl XdpCollector {
    fn read(&self) -> Option<[CounterValue; Counter::COUNT as usize]> {
        PinnedFilter::new(&self.pins).counters().ok()
    }
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // No pinned filter (detached): export nothing rather than zeros that look like a filter.
        let Some(values) = self.read() else {
            return Ok(());
        };
        type Pick = fn(&CounterValue) -> u64;
        let series: [(&str, &str, Pick); 2] = [
            (
                "xdp_packets",
                "Packets judged by the XDP filter, by verdict and reason",
                |v| v.packets,
            ),
            (
                "xdp_bytes",
                "Bytes of the packets judged by the XDP filter",
                |v| v.bytes,
            ),
        ];
        for (name, help, pick) in series {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for counter in Counter::ALL {
                let labels = VerdictLabels {
                    verdict: counter.verdict().as_str(),
                    reason: counter.reason().as_str(),
                };
                let metric = ConstCounter::new(pick(&values[counter as usize]));
                metric.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Binds the metrics listener on `listen` (`metrics.listen`).
///
/// # Errors
/// If the address cannot be bound (in use, not local, no permission).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener on {listen} (metrics.listen)"))
}

/// How long a metrics connection may take. A scraper sends its request at once and reads the
/// answer in milliseconds; a client that connects and sends nothing, trickles its headers
/// (slowloris) or never reads the answer would otherwise hold its connection, and a task, for
/// as long as it liked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time to send a request's headers, counted from the connection's start or the previous
    /// answer: an idle keep-alive connection is closed after it too.
    pub header: Duration,
    /// Time a connection may stay open at all, however busy; a scraper reconnects.
    pub connection: Duration,
}

impl Timeouts {
    /// What [`serve`] uses: 10 s for headers, 5 min for a connection (Prometheus scrapes every
    /// 15 to 60 s on one keep-alive connection; a new one every few scrapes costs nothing).
    pub const DEFAULT: Self = Self {
        header: Duration::from_secs(10),
        connection: Duration::from_secs(300),
    };
}

/// How long a graceful stop waits for scrapes in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` on `listener` until `shutdown` completes, under [`Timeouts::DEFAULT`].
///
/// # Errors
/// If the listener's address cannot be read.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, metrics, shutdown, Timeouts::DEFAULT).await
}

/// [`serve`] under `timeouts`.
///
/// # Errors
/// If the listener's address cannot be read.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeouts: Timeouts,
) -> anyhow::Result<()> {
    let listen = listener
        .local_addr()
        .context("reading the metrics listener's address")?;
    tracing::info!(%listen, "serving /metrics");
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            match tokio::time::timeout(timeouts.connection, conn).await {
                Err(_) => tracing::debug!(%peer, "metrics connection closed at its time limit"),
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection ended"),
                Ok(Ok(())) => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("metrics connections still open at shutdown; closing them");
    }
    Ok(())
}

async fn scrape(State(metrics): State<Metrics>) -> impl IntoResponse {
    match metrics.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Serves on a free loopback port under `timeouts`; the listener stops when the returned
    /// sender is dropped.
    async fn listener(timeouts: Timeouts) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new(&Pins::new("/sys/fs/bpf/hookwall-unit-test-absent"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(
            listener,
            metrics,
            async move {
                let _ = stopped.await;
            },
            timeouts,
        ));
        (addr, stop)
    }

    /// Reads until the server closes the connection (or resets it); what it sent, or `None` if
    /// it was still open after `wait` (far longer than any bound under test).
    async fn read_until_closed(
        conn: &mut tokio::net::TcpStream,
        wait: Duration,
    ) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(wait, async {
            let mut buf = [0u8; 4096];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        read.is_ok().then_some(got)
    }

    const SHORT: Timeouts = Timeouts {
        header: Duration::from_millis(300),
        connection: Duration::from_secs(1),
    };

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed() {
        let (addr, _stop) = listener(SHORT).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let got = read_until_closed(&mut conn, Duration::from_secs(20)).await;
        assert!(got.is_some(), "an idle metrics connection was not closed");
    }

    #[tokio::test]
    async fn trickled_headers_do_not_hold_a_connection() {
        let (addr, _stop) = listener(SHORT).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("write");
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            // One header line at a time, each well within the header timeout, never the end.
            for i in 0.. {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if conn
                    .write_all(format!("x-{i}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buf = [0u8; 1024];
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await
                {
                    return;
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a slowloris client held the metrics connection"
        );
    }

    #[tokio::test]
    async fn a_scrape_is_answered_and_the_idle_connection_then_closed() {
        let (addr, _stop) = listener(SHORT).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let got = read_until_closed(&mut conn, Duration::from_secs(20))
            .await
            .expect("the keep-alive connection was not closed");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains("hookwall_config_reloads_total"),
            "{text}"
        );
    }
}
