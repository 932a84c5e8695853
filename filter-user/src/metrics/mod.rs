//! The Prometheus registry, `/healthz` and `/readyz`, and the listener that serves them (on
//! `metrics.listen`, never on the public listener).
//!
//! Kernel counters and attachments are not copied into the registry: collectors read the pinned
//! maps and links at each scrape, so the numbers are the kernel's own and survive daemon
//! restarts.
//!
//! - this file: the labels, [`Metrics`] and what records into it;
//! - `collect`: what is read at scrape time (kernel counters, attachments, the certificate);
//! - `health`: [`Health`], the state `/readyz` and the scrape-time metrics read;
//! - `routes`: which per-route series exist, so that a reload can remove a route's;
//! - `listener`: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.

mod collect;
mod health;
mod listener;
mod routes;
mod sources;

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU64},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter as PromCounter, family::Family, gauge::Gauge, histogram::Histogram,
    },
    registry::{Registry, Unit},
};

pub(crate) use self::listener::{Timeouts, serve_router};
use self::{
    collect::{StateCollector, XdpCollector},
    routes::RouteIndex,
};
pub use self::{
    health::Health,
    listener::{adopt, bind, serve},
    routes::Series,
    sources::SourceMetrics,
};
use crate::filter::Pins;

/// Labels of `hookwall_config_reloads_total` and `hookwall_upgrades_total`.
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

/// Labels of `hookwall_acme_orders_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrderLabels {
    /// `issued` or `failed`.
    pub result: &'static str,
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
    /// `hookwall_delivery_attempt_duration_seconds{sink}`: time of one attempt.
    pub attempt_duration: Family<SinkLabels, Histogram, fn() -> Histogram>,
    /// `hookwall_delivery_latency_seconds{sink}`: from the provider's request to delivery.
    pub latency: Family<SinkLabels, Histogram, fn() -> Histogram>,
    /// `hookwall_validation_requests_total{route,result}`: C2B validations and who decided.
    /// Counted through [`Metrics::count_validation`], as every per-route family, so that a
    /// reload can remove a route's series.
    pub validations: Family<ValidationLabels, PromCounter>,
}

impl DeliveryMetrics {
    /// Metrics in a registry of their own, for tests of the delivery worker.
    #[cfg(test)]
    pub(crate) fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            queue_events: Family::default(),
            oldest_pending_age: Gauge::default(),
            deliveries: Family::default(),
            attempt_duration: Family::new_with_constructor(duration_histogram),
            latency: Family::new_with_constructor(latency_histogram),
            validations: Family::default(),
        };
        registry.register(
            "delivery_queue_events",
            "Stored events by delivery state",
            this.queue_events.clone(),
        );
        registry.register_with_unit(
            "delivery_oldest_pending_age",
            "Age of the oldest event not yet delivered (0 when none)",
            Unit::Seconds,
            this.oldest_pending_age.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by sink and result",
            this.deliveries.clone(),
        );
        registry.register_with_unit(
            "delivery_attempt_duration",
            "Time of one delivery attempt, by sink",
            Unit::Seconds,
            this.attempt_duration.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "Time from the provider's request to the event's delivery, by sink",
            Unit::Seconds,
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

/// Labels of `hookwall_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate's version.
    pub version: &'static str,
    /// The git revision the binary was built from.
    pub revision: &'static str,
    /// SHA-256 of the XDP program the binary carries, in hex.
    pub program_sha256: &'static str,
}

/// Holds one unit of a gauge while alive: `inc` when made, `dec` when dropped, so every way
/// out of what it measures (an answer, an error, a cancelled future, a panic) gives it back.
#[derive(Debug)]
#[must_use = "the gauge is decremented when this is dropped"]
pub struct GaugeUnit(Gauge<i64, AtomicI64>);

impl GaugeUnit {
    fn hold(gauge: &Gauge<i64, AtomicI64>) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeUnit {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The daemon's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// `hookwall_config_reloads_total{result}`.
    pub reloads: Family<ReloadLabels, PromCounter>,
    /// `hookwall_upgrades_total{result}`.
    pub upgrades: Family<ReloadLabels, PromCounter>,
    /// `hookwall_allowlist_prefixes{family}`.
    pub prefixes: Family<FamilyLabels, Gauge<i64, AtomicI64>>,
    /// `hookwall_config_last_reload_success_timestamp_seconds`.
    pub last_reload_success: Gauge<f64, AtomicU64>,
    /// `hookwall_http_requests_total{route,outcome}`. This and the other per-route families
    /// are recorded through the methods below ([`Metrics::count_request`], ...), which note each
    /// series they create so that a reload can remove a route's; reading them directly is fine.
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
    /// `hookwall_http_connections_open`: connections of the HTTPS listener open now (see
    /// [`Metrics::connection_open`]).
    pub http_connections_open: Gauge<i64, AtomicI64>,
    /// `hookwall_http_requests_in_flight`: requests being handled now (see
    /// [`Metrics::request_in_flight`]).
    pub http_requests_in_flight: Gauge<i64, AtomicI64>,
    /// `hookwall_store_size_bytes`: the database file plus its WAL.
    pub store_size: Gauge<i64, AtomicI64>,
    /// The delivery worker's and the queue's metrics.
    pub delivery: DeliveryMetrics,
    /// `hookwall_acme_orders_total{result}`: certificate orders by result (`server.tls =
    /// "acme"`; the series exist only then).
    pub acme_orders: Family<OrderLabels, PromCounter>,
    /// The fetched address lists' metrics.
    pub sources: SourceMetrics,
    /// What `/readyz` and the scrape-time metrics read.
    health: Arc<Health>,
    /// Which per-route series exist.
    routes: Arc<RouteIndex>,
}

impl Metrics {
    /// A registry with every metric `docs/operations.md` lists; kernel counters come from the maps
    /// under `pins`.
    #[must_use]
    pub fn new(pins: &Pins) -> Self {
        let mut registry = Registry::with_prefix("hookwall");
        let reloads = Family::<ReloadLabels, PromCounter>::default();
        let upgrades = Family::<ReloadLabels, PromCounter>::default();
        registry.register(
            "upgrades",
            "In-place upgrades (SIGUSR2) tried by this process, by result",
            upgrades.clone(),
        );
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
        registry.register_with_unit(
            "config_last_reload_success_timestamp",
            "Unix time at which the config in force was loaded",
            Unit::Seconds,
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
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer, by route",
            Unit::Seconds,
            http_duration.clone(),
        );
        let http_connections_open = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_connections_open",
            "Connections of the HTTPS listener open now (TCP accepted, through TLS, until closed)",
            http_connections_open.clone(),
        );
        let http_requests_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_requests_in_flight",
            "HTTPS requests being handled now",
            http_requests_in_flight.clone(),
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
            let _ = upgrades.get_or_create(&ReloadLabels { result });
        }
        let delivery = DeliveryMetrics::register(&mut registry);
        let sources = SourceMetrics::register(&mut registry);
        let store_size = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "store_size",
            "Size of the event store: the database file plus its WAL",
            Unit::Bytes,
            store_size.clone(),
        );
        let acme_orders = Family::<OrderLabels, PromCounter>::default();
        registry.register(
            "acme_orders",
            "ACME certificate orders, by result (issued, failed)",
            acme_orders.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "build_info",
            "This build: version, git revision and the digest of its XDP program; always 1",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: crate::build_info::VERSION,
                revision: crate::build_info::GIT_REVISION,
                program_sha256: crate::build_info::program_sha256(),
            })
            .set(1);
        let health = Arc::new(Health::new(pins.clone()));
        registry.register_collector(Box::new(XdpCollector { pins: pins.clone() }));
        registry.register_collector(Box::new(StateCollector {
            health: Arc::clone(&health),
        }));
        Self {
            registry: Arc::new(registry),
            reloads,
            upgrades,
            prefixes,
            last_reload_success,
            http_requests,
            http_refusals,
            http_duration,
            connections_refused,
            http_connections_open,
            http_requests_in_flight,
            store_size,
            delivery,
            acme_orders,
            sources,
            health,
            routes: Arc::new(RouteIndex::default()),
        }
    }

    /// What `/readyz` and the scrape-time metrics read; the daemon and the receiver keep it up
    /// to date.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Counts one connection of the HTTPS listener open until the returned unit is dropped.
    pub fn connection_open(&self) -> GaugeUnit {
        GaugeUnit::hold(&self.http_connections_open)
    }

    /// Counts one request in flight until the returned unit is dropped.
    pub fn request_in_flight(&self) -> GaugeUnit {
        GaugeUnit::hold(&self.http_requests_in_flight)
    }

    /// Counts one request in `hookwall_http_requests_total`.
    pub fn count_request(&self, labels: &HttpLabels) {
        if let Some(counter) = self.http_requests.get(labels) {
            counter.inc();
            return;
        }
        self.routes
            .create(&labels.route, Series::Request(labels.clone()), || {
                self.http_requests.get_or_create(labels).inc();
            });
    }

    /// Counts one refusal in `hookwall_http_refusals_total`.
    pub fn count_refusal(&self, labels: &RefusalLabels) {
        if let Some(counter) = self.http_refusals.get(labels) {
            counter.inc();
            return;
        }
        self.routes
            .create(&labels.route, Series::Refusal(labels.clone()), || {
                self.http_refusals.get_or_create(labels).inc();
            });
    }

    /// Records one request's time in `hookwall_http_request_duration_seconds`.
    pub fn observe_duration(&self, labels: &RouteLabels, seconds: f64) {
        if let Some(histogram) = self.http_duration.get(labels) {
            histogram.observe(seconds);
            return;
        }
        self.routes
            .create(&labels.route, Series::Duration(labels.clone()), || {
                self.http_duration.get_or_create(labels).observe(seconds);
            });
    }

    /// Counts one C2B validation in `hookwall_validation_requests_total`.
    pub fn count_validation(&self, labels: &ValidationLabels) {
        let validations = &self.delivery.validations;
        if let Some(counter) = validations.get(labels) {
            counter.inc();
            return;
        }
        self.routes
            .create(&labels.route, Series::Validation(labels.clone()), || {
                validations.get_or_create(labels).inc();
            });
    }

    /// Creates the series of `labels` at zero, so that a dashboard sees a route before its first
    /// request (and an alert has a series to compute a rate from).
    pub fn register_zero(&self, labels: Series) {
        let route = labels.route().to_owned();
        self.routes
            .create(&route, labels.clone(), || match &labels {
                Series::Request(l) => drop(self.http_requests.get_or_create(l)),
                Series::Refusal(l) => drop(self.http_refusals.get_or_create(l)),
                Series::Duration(l) => drop(self.http_duration.get_or_create(l)),
                Series::Validation(l) => drop(self.delivery.validations.get_or_create(l)),
            });
    }

    /// Makes `routes` (the configured paths, and the label of requests no route matched) the
    /// only routes with series: every series of another route, in every per-route family, is
    /// removed; those of these routes stay as they are. From now on a series is created only
    /// for these routes: a request still in flight on a route a reload removed is answered but
    /// not counted.
    pub fn retain_routes<'a>(&self, routes: impl IntoIterator<Item = &'a str>) {
        self.routes.retain(routes, |series| {
            match series {
                Series::Request(l) => self.http_requests.remove(&l),
                Series::Refusal(l) => self.http_refusals.remove(&l),
                Series::Duration(l) => self.http_duration.remove(&l),
                Series::Validation(l) => self.delivery.validations.remove(&l),
            };
        });
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

    /// Counts one in-place upgrade that succeeded or failed.
    pub fn record_upgrade(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.upgrades.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The Prometheus text exposition of every metric (OpenMetrics text format).
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

#[cfg(test)]
mod tests;
