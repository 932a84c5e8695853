//! Delivery: every stored event reaches the user's application at least once.
//!
//! # Design
//! - **The store is the queue.** An event is `pending` from the moment it is stored (before the
//!   provider is answered) until an attempt succeeds (`delivered`) or the retry policy gives up
//!   (`dead`). Nothing is deleted on failure; dead letters wait for `hookwall queue retry`.
//! - **At least once, one idempotency key.** Each attempt carries the event id (`webhook-id`,
//!   `idempotency-key`, `Nats-Msg-Id`), and the result is committed only after the sink answered.
//!   A crash between the two leads to the same event being sent again with the same key, never to
//!   a lost one; the application (or JetStream's duplicate window) drops the second copy.
//! - **The worker** ([`Worker::run`]) wakes when the store commits new events, when the next
//!   retry is due, and at least every [`IDLE_POLL`] (so `queue retry` from another process is
//!   seen); it reads due events in pages, keeps at most `delivery.concurrency` attempts in flight
//!   and never runs two attempts of the same event at once. A slot is free when the sink
//!   answers; the results gathered meanwhile are committed together, in one update.
//! - **Sinks.** `delivery.url`: an HTTP POST of the stored body, signed by hookwall with Standard
//!   Webhooks headers so the application can trust the last hop. `[delivery.nats]`: a JetStream
//!   publish, acknowledged by the server once stored. Several hookwall hosts can feed one stream;
//!   `Nats-Msg-Id` lets JetStream drop the copy a provider's retry made on another host.
//! - **Retry policy** ([`Policy`]): 2xx delivers; 4xx other than 408 and 429 is final (dead at
//!   once: the application says the event itself is wrong, and repeating it would not help);
//!   anything else is retried with exponential backoff and jitter, honouring `Retry-After`, until
//!   `max_attempts` or `max_age`.
//!
//! # Layout
//! - this file: the [`Sink`] events are sent through, and the queue upkeep (gauges, retention
//!   purge);
//! - `worker`: the [`Worker`]: pages of due events, attempts in flight, batched results;
//! - `policy`: what one attempt came to, and what follows it (retry when, or dead);
//! - `http`: the POST to `delivery.url`;
//! - `nats`: the JetStream publish;
//! - `tests_worker`: the worker's tests, with a scripted sink.

mod http;
mod nats;
mod policy;
#[cfg(test)]
mod tests_worker;
mod worker;

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicI64},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use self::policy::duration_ms;
pub use self::{
    http::{HttpSink, http_client},
    nats::NatsSink,
    policy::{Attempt, Next, Policy},
    worker::Worker,
};
use crate::{
    config::{DeliveryConfig, Sink as SinkConfig},
    metrics::DeliveryMetrics,
    store::{Reader, StoreHandle, StoredEvent, unix_ms},
};

/// Longest sleep of an idle worker: bounds how long an event re-queued by `hookwall queue retry`
/// (another process, so no in-process wake-up) waits for its attempt.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// How long a stopping worker lets attempts in flight finish before abandoning them (they stay
/// pending and are sent again, with the same id, after the restart).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often delivered events older than `store.retention` are purged.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// How often the queue gauges are refreshed from the store.
pub const GAUGES_EVERY: Duration = Duration::from_secs(2);

/// Where events go.
pub enum Sink {
    /// POST to the application.
    Http(HttpSink),
    /// Publish to NATS JetStream (boxed: the JetStream context is large, and one sink exists).
    Nats(Box<NatsSink>),
    /// A scripted sink for the worker's tests.
    #[cfg(test)]
    Fake(Arc<tests_worker::FakeSink>),
}

impl Sink {
    /// Builds the sink `config` names; a NATS sink connects in the background (a broker that is
    /// down at start only delays deliveries).
    ///
    /// # Errors
    /// The delivery secret cannot be read or decoded, the URL is invalid, or the HTTP client
    /// cannot be built.
    pub async fn from_config(config: &DeliveryConfig) -> anyhow::Result<Sink> {
        match &config.sink {
            SinkConfig::Http { url } => {
                let signer = crate::verify::delivery_signer(config)?
                    .context("delivery.url needs delivery.secret to sign what it sends")?;
                Ok(Sink::Http(HttpSink::new(
                    url,
                    Arc::new(signer),
                    config.timeout,
                )?))
            }
            SinkConfig::Nats(nats) => Ok(Sink::Nats(Box::new(
                NatsSink::connect(nats, config.timeout).await?,
            ))),
        }
    }

    /// The `sink` label of the metrics.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Sink::Http(_) => "http",
            Sink::Nats(_) => "nats",
            #[cfg(test)]
            Sink::Fake(_) => "fake",
        }
    }

    /// Sends one event; `attempt` counts this one (1 = the first).
    pub async fn send(&self, event: &StoredEvent, attempt: u32) -> Attempt {
        match self {
            Sink::Http(http) => http.send(event, attempt).await,
            Sink::Nats(nats) => nats.send(event).await,
            #[cfg(test)]
            Sink::Fake(fake) => fake.send(event).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queue upkeep: gauges and retention
// ---------------------------------------------------------------------------------------------

/// Refreshes the queue gauges and `store_size` (`hookwall_store_size_bytes`) every
/// [`GAUGES_EVERY`] until `stop`.
pub async fn watch_queue(
    reader: Arc<Reader>,
    metrics: DeliveryMetrics,
    store_size: Gauge<i64, AtomicI64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(GAUGES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let reader = Arc::clone(&reader);
        let size = store_size.clone();
        let read = tokio::task::spawn_blocking(move || {
            size.set(i64::try_from(store_bytes(reader.path())).unwrap_or(i64::MAX));
            Ok::<_, crate::store::StoreError>((reader.counts()?, reader.oldest_pending_ms()?))
        })
        .await;
        match read {
            Ok(Ok((counts, oldest))) => {
                for (state, n) in [
                    ("pending", counts.pending),
                    ("delivered", counts.delivered),
                    ("dead", counts.dead),
                ] {
                    metrics
                        .queue_events
                        .get_or_create(&crate::metrics::StateLabels { state })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                let age_ms = oldest.map_or(0, |at| (unix_ms(SystemTime::now()) - at).max(0));
                #[expect(clippy::cast_precision_loss, reason = "an age in ms fits f64 exactly")]
                metrics.oldest_pending_age.set(age_ms as f64 / 1e3);
            }
            Ok(Err(e)) => tracing::warn!("reading the queue for its gauges failed: {e}"),
            Err(e) => tracing::warn!("the queue gauge task failed: {e}"),
        }
    }
}

/// The size of the store at `path`: the database file plus its WAL (`-wal`); a file that is
/// not there counts 0. SQLite's shared-memory index (`-shm`) is not data and is left out.
fn store_bytes(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path, Path::new(&wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Purges delivered events older than `retention` (`store.retention`), and the tombstones they
/// leave once older than `dedupe_window` (`store.dedupe_window`), now and every [`PURGE_EVERY`]
/// until `stop`. Pending and dead events are never purged.
pub async fn purge_loop(
    store: StoreHandle,
    retention: Duration,
    dedupe_window: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let before = unix_ms(SystemTime::now()).saturating_sub(duration_ms(retention));
        match store.purge_delivered(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                purged = n,
                retention = %humantime::format_duration(retention),
                "purged delivered events older than store.retention"
            ),
            Err(e) => tracing::error!("purging delivered events failed: {e}"),
        }
        let before = unix_ms(SystemTime::now()).saturating_sub(duration_ms(dedupe_window));
        match store.purge_tombstones(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                purged = n,
                dedupe_window = %humantime::format_duration(dedupe_window),
                "purged tombstones older than store.dedupe_window"
            ),
            Err(e) => tracing::error!("purging tombstones failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::Update;

    #[tokio::test]
    async fn the_retention_purge_removes_old_delivered_events_only() {
        use crate::store::{HashedBody, NewEvent, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("events.db")).expect("open");
        let handle = store.handle();
        let now = unix_ms(SystemTime::now());
        let hour = 3_600_000;
        let mut ids = Vec::new();
        for name in ["old-delivered", "new-delivered", "old-dead", "old-pending"] {
            let event = NewEvent {
                route: "/r".to_owned(),
                event_id: name.to_owned(),
                kind: "test".to_owned(),
                received_at_ms: now - 3 * hour,
                body: HashedBody::new(b"{}".to_vec()),
                headers: Vec::new(),
            };
            ids.push(
                handle
                    .insert(event)
                    .await
                    .expect("insert")
                    .id()
                    .expect("a new row"),
            );
        }
        let updates = vec![
            Update::Delivered {
                id: ids[0],
                attempts: 1,
                at_ms: now - 2 * hour,
            },
            Update::Delivered {
                id: ids[1],
                attempts: 1,
                at_ms: now - hour / 2,
            },
            Update::Dead {
                id: ids[2],
                attempts: 3,
                error: "HTTP 400".to_owned(),
            },
        ];
        assert_eq!(handle.update(updates).await.expect("update"), 3);
        // The loop purges at once (its first tick), then waits an hour: stop it after the first.
        let (stop_tx, stop_rx) = watch::channel(false);
        let purge = tokio::spawn(purge_loop(
            handle.clone(),
            Duration::from_secs(3600),
            Duration::from_secs(7200),
            stop_rx,
        ));
        let reader = store.reader();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reader.get(ids[0]).expect("read").is_some() {
            assert!(
                Instant::now() < deadline,
                "the old delivered event was not purged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(true).expect("stop");
        purge.await.expect("the purge task");
        for (id, what) in [
            (ids[1], "a recent delivered"),
            (ids[2], "a dead"),
            (ids[3], "a pending"),
        ] {
            assert!(
                reader.get(id).expect("read").is_some(),
                "{what} event was purged"
            );
        }
    }
}
