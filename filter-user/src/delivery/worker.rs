//! The delivery worker: reads due events from the store in pages, keeps `delivery.concurrency`
//! attempts in flight, and records their results in batches.
//!
//! Every event the worker holds (read and waiting for a slot, in flight, or answered with its
//! result not yet committed) is in one in-memory set, so a page read while a result waits for
//! its commit never starts a second attempt of that event. The answers the worker finds on one
//! wake go to the store as one update request at once, without waiting for earlier ones; the
//! store's writer group-commits the requests queued while it writes, so one transaction carries
//! up to the slots' worth of results. A result is only ever written after the sink answered, so
//! a crash before the commit leaves the event `pending`: it is sent again, with the same id. A
//! slot stays taken until its result is committed, so a crash of the daemon repeats at most
//! `delivery.concurrency` events.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use tokio::{sync::watch, task::JoinSet};

use super::{Attempt, IDLE_POLL, Next, Policy, STOP_GRACE, Sink};
use crate::{
    config::DeliveryConfig,
    metrics::{DeliveryLabels, DeliveryMetrics, SinkLabels},
    store::{Reader, StoreError, StoreHandle, StoredEvent, Update, unix_ms},
};

/// Most events one page read takes from the store.
const PAGE: usize = 256;

/// Takes due events from the store to the sink until stopped.
pub struct Worker {
    sink: Arc<Sink>,
    policy: Policy,
    concurrency: usize,
    store: StoreHandle,
    reader: Arc<Reader>,
    metrics: DeliveryMetrics,
    stop_grace: Duration,
    progress: Arc<Progress>,
}

/// What the worker has done so far, for tests that wait for a step without timing it.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Page reads of the store.
    pub(super) reads: AtomicU64,
    /// Results answered by the sink and not yet committed (or given up on).
    pub(super) uncommitted: AtomicU64,
    /// Results whose commit failed (their events stay pending).
    pub(super) failed: AtomicU64,
    /// The worker is stopping.
    pub(super) stopping: AtomicBool,
}

/// One answered attempt: the event and the state change its answer calls for.
struct Answered {
    id: i64,
    update: Update,
}

/// What the store said to one update request of answered results.
struct Committed {
    /// Some result was a retry, which moved a due time.
    retries: bool,
    result: Result<u64, StoreError>,
}

impl Worker {
    /// A worker for `config`, reading the store at `store.path()` through its own connection.
    ///
    /// # Errors
    /// The sink cannot be built or the store cannot be opened for reading.
    pub async fn new(
        config: &DeliveryConfig,
        store: StoreHandle,
        metrics: DeliveryMetrics,
    ) -> anyhow::Result<Self> {
        let sink = Sink::from_config(config).await?;
        let reader = Reader::open(store.path()).with_context(|| {
            format!(
                "opening the event store {} for the delivery worker",
                store.path().display()
            )
        })?;
        Ok(Self::with_sink(
            sink,
            Policy::from_config(config),
            config.concurrency,
            store,
            Arc::new(reader),
            metrics,
        ))
    }

    pub(super) fn with_sink(
        sink: Sink,
        policy: Policy,
        concurrency: usize,
        store: StoreHandle,
        reader: Arc<Reader>,
        metrics: DeliveryMetrics,
    ) -> Self {
        let label = sink.label();
        for result in ["delivered", "retry", "dead"] {
            let _ = metrics.deliveries.get_or_create(&DeliveryLabels {
                sink: label,
                result,
            });
        }
        Self {
            sink: Arc::new(sink),
            policy,
            concurrency: concurrency.max(1),
            store,
            reader,
            metrics,
            stop_grace: STOP_GRACE,
            progress: Arc::default(),
        }
    }

    /// The sink's metrics label (`http` or `nats`).
    #[must_use]
    pub fn sink_label(&self) -> &'static str {
        self.sink.label()
    }

    #[cfg(test)]
    pub(super) fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    #[cfg(test)]
    pub(super) fn set_stop_grace(&mut self, grace: Duration) {
        self.stop_grace = grace;
    }

    /// Delivers until `stop` turns true, then lets attempts in flight finish (at most
    /// [`STOP_GRACE`]) and commits every result it has; what is left stays pending.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut inserted = self.store.inserted();
        let mut state = State::new(self.concurrency);
        loop {
            if *stop.borrow() {
                break;
            }
            if state.wants_page()
                && let Err(e) = self.read_page(&mut state).await
            {
                tracing::error!("delivery: reading due events failed: {e:#}; retrying");
                state.exhausted = true;
                state.next_due = None;
            }
            while state.slots_taken() < self.concurrency {
                let Some(event) = state.ready.pop_front() else {
                    break;
                };
                let id = event.id;
                let task = state.attempts.spawn(attempt(
                    Arc::clone(&self.sink),
                    self.policy,
                    self.metrics.clone(),
                    event,
                ));
                state.in_flight.insert(task.id(), id);
            }
            if !state.answered.is_empty() {
                let answered = std::mem::take(&mut state.answered);
                let ids: Vec<i64> = answered.iter().map(|a| a.id).collect();
                state.committing_count += ids.len();
                let task = state.commits.spawn(commit(self.store.clone(), answered));
                state.committing.insert(task.id(), ids);
            }
            let wake = state.wake();
            tokio::select! {
                Some(done) = state.attempts.join_next_with_id() => {
                    state.attempt_done(done, &self.progress);
                    // Everything else that has answered joins the same update request.
                    while let Some(done) = state.attempts.try_join_next_with_id() {
                        state.attempt_done(done, &self.progress);
                    }
                }
                Some(done) = state.commits.join_next_with_id() => {
                    state.committed(done, &self.progress);
                }
                _ = inserted.changed() => state.exhausted = false,
                () = tokio::time::sleep(wake) => state.exhausted = false,
                _ = stop.changed() => {}
            }
        }
        self.stop(state).await;
    }

    /// Reads the next page of due events after the last one read, keeping those not held yet.
    async fn read_page(&self, state: &mut State) -> anyhow::Result<()> {
        // Back to the start now and then: an event can be committed behind the position (its
        // due time is its receipt, a little before its commit), and `queue retry` from another
        // process re-queues events anywhere.
        if state.since_start.elapsed() >= IDLE_POLL {
            state.position = None;
        }
        if state.position.is_none() {
            state.since_start = Instant::now();
        }
        let now = unix_ms(SystemTime::now());
        let after = state.position;
        let reader = Arc::clone(&self.reader);
        let (page, next) = tokio::task::spawn_blocking(move || {
            let page = reader.due_after(now, after, PAGE)?;
            // The end of what is due: when to look again.
            let next = if page.len() < PAGE {
                Some(reader.next_due_after(now)?)
            } else {
                None
            };
            Ok::<_, StoreError>((page, next))
        })
        .await
        .context("the store read task")??;
        self.progress.reads.fetch_add(1, Ordering::Relaxed);
        state.position = page
            .last()
            .map(|e| (e.next_attempt_at_ms.unwrap_or(i64::MIN), e.id))
            .or(state.position);
        if let Some(next) = next {
            state.exhausted = true;
            state.next_due = next;
            state.position = None;
        }
        for event in page {
            if state.held.insert(event.id) {
                state.ready.push_back(event);
            }
        }
        Ok(())
    }

    /// Lets attempts in flight finish (at most the stop grace), then commits what was answered.
    async fn stop(self, mut state: State) {
        self.progress.stopping.store(true, Ordering::Relaxed);
        let grace = tokio::time::timeout(self.stop_grace, async {
            while let Some(done) = state.attempts.join_next_with_id().await {
                state.attempt_done(done, &self.progress);
            }
        })
        .await;
        if grace.is_err() {
            tracing::warn!(
                in_flight = state.attempts.len(),
                "delivery: stopping with attempts in flight; they stay pending and are sent \
                 again (same id) after the restart"
            );
            state.attempts.abort_all();
        }
        while let Some(done) = state.commits.join_next_with_id().await {
            state.committed(done, &self.progress);
        }
        if state.answered.is_empty() {
            return;
        }
        let count = state.answered.len();
        let updates = state.answered.into_iter().map(|a| a.update).collect();
        if let Err(e) = self.store.update(updates).await {
            tracing::error!(
                events = count,
                "delivery: recording the last results failed: {e}; those events stay pending \
                 and are sent again (same id) after the restart"
            );
        }
    }
}

/// The worker's loop state.
struct State {
    /// Read from the store, waiting for a slot.
    ready: VecDeque<StoredEvent>,
    /// Every event held: ready, in flight, answered and not yet committed.
    held: HashSet<i64>,
    /// Attempts in flight, by task (a panicked task reports only its task id).
    in_flight: HashMap<tokio::task::Id, i64>,
    attempts: JoinSet<Answered>,
    /// Answered, waiting to be sent to the store.
    answered: Vec<Answered>,
    /// Update requests sent to the store and not answered yet.
    commits: JoinSet<Committed>,
    /// The events of each update request in `commits`, by task.
    committing: HashMap<tokio::task::Id, Vec<i64>>,
    /// The events in `committing`, all requests together.
    committing_count: usize,
    /// The last event read (due time, id); the next page starts after it.
    position: Option<(i64, i64)>,
    /// When reading last started from the beginning.
    since_start: Instant,
    /// The last page reached the end of what is due: read again only once woken.
    exhausted: bool,
    /// The next due time after the end, when the last page reached it.
    next_due: Option<i64>,
    concurrency: usize,
}

impl State {
    fn new(concurrency: usize) -> Self {
        Self {
            ready: VecDeque::new(),
            held: HashSet::new(),
            in_flight: HashMap::new(),
            attempts: JoinSet::new(),
            answered: Vec::new(),
            commits: JoinSet::new(),
            committing: HashMap::new(),
            committing_count: 0,
            position: None,
            since_start: Instant::now(),
            exhausted: false,
            next_due: None,
            concurrency,
        }
    }

    /// Whether to read a page now: more is due and few are waiting for a slot. What the worker
    /// holds is bounded by that and by the slots: fewer than twice the slots plus a page.
    fn wants_page(&self) -> bool {
        !self.exhausted && self.ready.len() < self.concurrency
    }

    /// Slots in use: an attempt in flight, or an answer not committed yet. Freeing a slot only at
    /// the commit is what bounds the events a crash sends again to the slots.
    fn slots_taken(&self) -> usize {
        self.in_flight.len() + self.answered.len() + self.committing_count
    }

    /// How long to wait when nothing else happens: until the next due time once everything due
    /// has been read, at most [`IDLE_POLL`].
    fn wake(&self) -> Duration {
        match (self.exhausted, self.next_due) {
            (true, Some(at)) => {
                let now = unix_ms(SystemTime::now());
                Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(IDLE_POLL)
            }
            _ => IDLE_POLL,
        }
    }

    fn attempt_done(
        &mut self,
        done: Result<(tokio::task::Id, Answered), tokio::task::JoinError>,
        progress: &Progress,
    ) {
        match done {
            Ok((task, answered)) => {
                self.in_flight.remove(&task);
                progress.uncommitted.fetch_add(1, Ordering::Relaxed);
                self.answered.push(answered);
            }
            Err(e) => {
                tracing::error!("delivery: an attempt failed to complete: {e}");
                // Nothing was recorded: the event is still pending, and read again.
                if let Some(id) = self.in_flight.remove(&e.id()) {
                    self.held.remove(&id);
                }
                self.exhausted = false;
                self.position = None;
            }
        }
    }

    fn committed(
        &mut self,
        done: Result<(tokio::task::Id, Committed), tokio::task::JoinError>,
        progress: &Progress,
    ) {
        let (task, done) = match done {
            Ok((task, done)) => (task, Some(done)),
            Err(e) => {
                tracing::error!("delivery: an update of results failed to complete: {e}");
                (e.id(), None)
            }
        };
        let ids = self.committing.remove(&task).unwrap_or_default();
        self.committing_count -= ids.len();
        let count = ids.len() as u64;
        progress.uncommitted.fetch_sub(count, Ordering::Relaxed);
        for id in &ids {
            self.held.remove(id);
        }
        match done {
            Some(Committed {
                result: Ok(_),
                retries,
            }) => {
                if retries {
                    // A retry moved a due time: read on, which finds the next due time again.
                    self.exhausted = false;
                }
            }
            _ => {
                progress.failed.fetch_add(count, Ordering::Relaxed);
                // Still pending and due, and behind the position.
                self.exhausted = false;
                self.position = None;
            }
        }
    }
}

/// Commits the results of `answered` in one update.
async fn commit(store: StoreHandle, answered: Vec<Answered>) -> Committed {
    let count = answered.len();
    let retries = answered
        .iter()
        .any(|a| matches!(a.update, Update::Retry { .. }));
    let result = store
        .update(answered.into_iter().map(|a| a.update).collect())
        .await;
    if let Err(e) = &result {
        // The rows stay as they were (pending, due): they are attempted again, with the same
        // ids. The pause keeps a failing disk from turning that into a busy loop.
        tracing::error!(
            events = count,
            "delivery: recording results failed: {e}; the events stay pending"
        );
        tokio::time::sleep(IDLE_POLL).await;
    }
    Committed { retries, result }
}

/// One attempt of one event; returns the state change its answer calls for.
async fn attempt(
    sink: Arc<Sink>,
    policy: Policy,
    metrics: DeliveryMetrics,
    event: StoredEvent,
) -> Answered {
    let number = event.attempts.saturating_add(1);
    let label = sink.label();
    let started = Instant::now();
    let result = sink.send(&event, number).await;
    metrics
        .attempt_duration
        .get_or_create(&SinkLabels { sink: label })
        .observe(started.elapsed().as_secs_f64());
    let now = unix_ms(SystemTime::now());
    let (update, result_label) = match result {
        Attempt::Delivered => {
            let age = Duration::from_millis(u64::try_from(now - event.received_at_ms).unwrap_or(0));
            metrics
                .latency
                .get_or_create(&SinkLabels { sink: label })
                .observe(age.as_secs_f64());
            tracing::debug!(id = event.id, event_id = %event.event_id, attempt = number, "delivered");
            (
                Update::Delivered {
                    id: event.id,
                    attempts: number,
                    at_ms: now,
                },
                "delivered",
            )
        }
        Attempt::Rejected { error } => {
            tracing::warn!(id = event.id, event_id = %event.event_id, attempt = number, %error,
                "the application refused an event; it is a dead letter now (`hookwall queue retry` replays it)");
            (
                Update::Dead {
                    id: event.id,
                    attempts: number,
                    error: format!("{error}; not retried (a 4xx other than 408/429 is final)"),
                },
                "dead",
            )
        }
        Attempt::Failed { error, retry_after } => match policy.after_failure(
            number,
            event.received_at_ms,
            now,
            retry_after,
            fastrand::f64(),
        ) {
            Next::RetryAt(at) => {
                tracing::info!(id = event.id, event_id = %event.event_id, attempt = number, %error,
                    retry_in_ms = at - now, "delivery failed; will retry");
                (
                    Update::Retry {
                        id: event.id,
                        attempts: number,
                        next_at_ms: at,
                        error,
                    },
                    "retry",
                )
            }
            Next::Dead(why) => {
                tracing::warn!(id = event.id, event_id = %event.event_id, attempt = number, %error,
                    "{why}; the event is a dead letter now (`hookwall queue retry` replays it)");
                (
                    Update::Dead {
                        id: event.id,
                        attempts: number,
                        error: format!("{error}; {why}"),
                    },
                    "dead",
                )
            }
        },
    };
    metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            sink: label,
            result: result_label,
        })
        .inc();
    Answered {
        id: event.id,
        update,
    }
}
