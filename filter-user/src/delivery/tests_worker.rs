//! The worker against a scripted sink and a real store: every event delivered once, never two
//! attempts of one event at once (also while its result waits for the commit), results committed
//! in batches, no more answers waiting for a commit than there are slots, a failed commit leaving
//! its events pending, and a stop that records what the sink acknowledged and nothing else.
//!
//! The store's write lock, taken from a second connection, holds a commit back for as long as a
//! test needs; the tests wait for the worker's progress counters, never for a time. One pause
//! shows that nothing happens while a commit waits: it cannot fail a correct worker, however slow
//! the machine.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::Path,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use rusqlite::Connection;
use tokio::sync::{Notify, watch};

use super::{Attempt, Policy, Sink, Worker, worker::Progress};
use crate::{
    metrics::DeliveryMetrics,
    store::{EventState, HashedBody, NewEvent, Reader, Store, StoredEvent, unix_ms},
};

/// What the fake sink does with an event, by its event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Deliver,
    Fail,
    /// Never answers.
    Hang,
}

/// A sink that answers as its script says and records every send.
pub struct FakeSink {
    script: fn(&str) -> Script,
    sends: Mutex<HashMap<String, u32>>,
    in_flight: Mutex<HashSet<String>>,
    /// Set when an event was sent while an attempt of it was still in flight.
    overlap: AtomicBool,
    sent: Notify,
}

impl FakeSink {
    fn new(script: fn(&str) -> Script) -> Arc<Self> {
        Arc::new(Self {
            script,
            sends: Mutex::default(),
            in_flight: Mutex::default(),
            overlap: AtomicBool::new(false),
            sent: Notify::new(),
        })
    }

    pub(super) async fn send(&self, event: &StoredEvent) -> Attempt {
        let id = event.event_id.clone();
        if !lock(&self.in_flight).insert(id.clone()) {
            self.overlap.store(true, Ordering::SeqCst);
        }
        *lock(&self.sends).entry(id.clone()).or_default() += 1;
        self.sent.notify_waiters();
        let answer = match (self.script)(&id) {
            Script::Deliver => Attempt::Delivered,
            Script::Fail => Attempt::Failed {
                error: "scripted failure".to_owned(),
                retry_after: None,
            },
            Script::Hang => std::future::pending().await,
        };
        lock(&self.in_flight).remove(&id);
        answer
    }

    fn sends(&self) -> HashMap<String, u32> {
        lock(&self.sends).clone()
    }

    /// Waits until `done` holds for the sends so far.
    async fn wait_sends(&self, done: impl Fn(&HashMap<String, u32>) -> bool) {
        loop {
            let notified = self.sent.notified();
            if done(&lock(&self.sends)) {
                return;
            }
            notified.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const POLICY: Policy = Policy {
    max_attempts: 5,
    max_age: Duration::from_secs(3600),
    // Far beyond any test: a failed event is never due again while a test runs.
    backoff_initial: Duration::from_secs(600),
    backoff_max: Duration::from_secs(600),
};

/// A store at `dir` with `n` pending events `e0`..; their row ids.
async fn store_with(dir: &Path, n: usize, busy_timeout: Duration) -> (Store, Vec<i64>) {
    let store = Store::open_with(&dir.join("events.db"), busy_timeout).expect("open");
    // Received now: within the policy's `max_age`, so a failure is retried, not given up.
    let now = unix_ms(SystemTime::now());
    let mut ids = Vec::new();
    for i in 0..n {
        let inserted = store
            .handle()
            .insert(NewEvent {
                route: "/r".to_owned(),
                event_id: format!("e{i}"),
                kind: "test".to_owned(),
                received_at_ms: now,
                body: HashedBody::new(b"{}".to_vec()),
                headers: Vec::new(),
            })
            .await
            .expect("insert");
        ids.push(inserted.id().expect("a new row"));
    }
    (store, ids)
}

fn worker(store: &Store, sink: &Arc<FakeSink>, concurrency: usize) -> Worker {
    let reader = Reader::open(store.reader().path()).expect("reader");
    Worker::with_sink(
        Sink::Fake(Arc::clone(sink)),
        POLICY,
        concurrency,
        store.handle(),
        Arc::new(reader),
        DeliveryMetrics::unregistered(),
    )
}

/// Holds the store's write lock until dropped (or `release`d).
struct WriteLock(Option<Connection>);

impl WriteLock {
    fn take(store: &Store) -> Self {
        let conn = Connection::open(store.reader().path()).expect("second connection");
        conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
        Self(Some(conn))
    }

    fn release(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.execute_batch("ROLLBACK").expect("unlock");
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        self.release();
    }
}

/// Polls `done` (a cheap in-memory check) until it holds, yielding between tries.
async fn until(done: impl Fn() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn states(store: &Store, ids: &[i64]) -> Vec<(EventState, u32)> {
    ids.iter()
        .map(|&id| {
            let row = store.get(id).expect("get").expect("row");
            (row.state, row.attempts)
        })
        .collect()
}

/// Runs `worker` until `body` is done, then stops it and waits for it.
async fn running<F: Future<Output = ()>>(worker: Worker, body: impl FnOnce() -> F) {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(worker.run(stop_rx));
    body().await;
    stop.send(true).expect("stop");
    task.await.expect("the worker");
}

fn progress(p: &Progress) -> (u64, u64, u64) {
    (
        p.reads.load(Ordering::SeqCst),
        p.uncommitted.load(Ordering::SeqCst),
        p.failed.load(Ordering::SeqCst),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_delivered_once_each_through_few_commits() {
    const N: usize = 1_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, ids) = store_with(dir.path(), N, Duration::from_secs(2)).await;
    let sink = FakeSink::new(|_| Script::Deliver);
    let before = store.commits();
    let reader = Reader::open(store.reader().path()).expect("reader");
    running(worker(&store, &sink, 16), || async {
        until(|| reader.counts().expect("counts").delivered == N as u64).await;
    })
    .await;
    let sends = sink.sends();
    assert_eq!(sends.len(), N, "every event was sent");
    assert!(sends.values().all(|&n| n == 1), "an event was sent twice");
    assert!(!sink.overlap.load(Ordering::SeqCst));
    assert!(
        states(&store, &ids)
            .iter()
            .all(|s| *s == (EventState::Delivered, 1))
    );
    let commits = store.commits() - before;
    assert!(
        commits < N as u64 / 2,
        "{commits} commits for {N} results: not batched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_event_waiting_for_its_commit_is_not_sent_again() {
    const N: usize = 6;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, ids) = store_with(dir.path(), N, Duration::from_secs(600)).await;
    let sink = FakeSink::new(|_| Script::Deliver);
    let worker = worker(&store, &sink, 8);
    let progress_of = worker.progress();
    let before = store.commits();
    let mut lock = WriteLock::take(&store);
    running(worker, || async {
        // Every event answered and held, its result waiting behind the lock...
        until(|| progress(&progress_of).1 == N as u64).await;
        // ...while the worker reads the store again (it still says pending and due).
        let reads = progress(&progress_of).0;
        until(|| progress(&progress_of).0 >= reads + 2).await;
        assert!(
            states(&store, &ids)
                .iter()
                .all(|s| *s == (EventState::Pending, 0)),
            "nothing is recorded before the commit"
        );
        lock.release();
        until(|| progress(&progress_of).1 == 0).await;
    })
    .await;
    let sends = sink.sends();
    assert_eq!(sends.len(), N);
    assert!(
        sends.values().all(|&n| n == 1),
        "sent again while its result waited: {sends:?}"
    );
    assert!(!sink.overlap.load(Ordering::SeqCst));
    assert!(
        states(&store, &ids)
            .iter()
            .all(|s| *s == (EventState::Delivered, 1))
    );
    // One transaction was waiting for the lock; every update queued meanwhile went in the next.
    assert!(store.commits() - before <= 2, "results were not batched");
    assert_eq!(progress(&progress_of).2, 0);
}

/// A slot is free only once its result is committed, so a crash sends again at most as many
/// events as there are slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_waiting_for_their_commit_keep_their_slots() {
    const N: usize = 40;
    const SLOTS: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, ids) = store_with(dir.path(), N, Duration::from_secs(600)).await;
    let sink = FakeSink::new(|_| Script::Deliver);
    let worker = worker(&store, &sink, SLOTS);
    let progress_of = worker.progress();
    let mut lock = WriteLock::take(&store);
    running(worker, || async {
        until(|| progress(&progress_of).1 >= SLOTS as u64).await;
        // Nothing can free a slot while the commit waits for the lock: a worker that freed its
        // slots at the sink's answer would send the whole backlog within this pause.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            sink.sends().len(),
            SLOTS,
            "sent beyond the slots while their results waited for the commit"
        );
        assert_eq!(progress(&progress_of).1, SLOTS as u64);
        lock.release();
        let reader = Reader::open(store.reader().path()).expect("reader");
        until(|| reader.counts().expect("counts").delivered == N as u64).await;
    })
    .await;
    let sends = sink.sends();
    assert_eq!(sends.len(), N);
    assert!(sends.values().all(|&n| n == 1), "an event was sent twice");
    assert!(
        states(&store, &ids)
            .iter()
            .all(|s| *s == (EventState::Delivered, 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_leaves_its_events_pending_and_they_are_sent_again() {
    const N: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, ids) = store_with(dir.path(), N, Duration::from_millis(50)).await;
    let sink = FakeSink::new(|_| Script::Deliver);
    let worker = worker(&store, &sink, 8);
    let progress_of = worker.progress();
    let mut lock = WriteLock::take(&store);
    running(worker, || async {
        // Sent again only once the commit of its first result failed.
        sink.wait_sends(|s| s.len() == N && s.values().all(|&n| n >= 2))
            .await;
        assert!(progress(&progress_of).2 >= N as u64);
        assert!(
            states(&store, &ids)
                .iter()
                .all(|s| *s == (EventState::Pending, 0)),
            "a failed commit recorded something"
        );
        lock.release();
        let reader = Reader::open(store.reader().path()).expect("reader");
        until(|| reader.counts().expect("counts").delivered == N as u64).await;
    })
    .await;
    let sends = sink.sends();
    assert!(
        sends.values().all(|&n| n >= 2),
        "an event whose result was not recorded must be sent again: {sends:?}"
    );
    assert!(!sink.overlap.load(Ordering::SeqCst));
    assert!(
        states(&store, &ids)
            .iter()
            .all(|(state, _)| *state == EventState::Delivered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_records_what_was_answered_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    // e0, e1: delivered; e2: fails (a retry); e3: the sink never answers.
    let (store, ids) = store_with(dir.path(), 4, Duration::from_secs(600)).await;
    let sink = FakeSink::new(|id| match id {
        "e2" => Script::Fail,
        "e3" => Script::Hang,
        _ => Script::Deliver,
    });
    let mut worker = worker(&store, &sink, 8);
    worker.set_stop_grace(Duration::from_millis(50));
    let progress_of = worker.progress();
    let lock = WriteLock::take(&store);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(worker.run(stop_rx));
    // Three answered, held behind the lock; e3 in flight for ever.
    until(|| progress(&progress_of).1 == 3).await;
    sink.wait_sends(|s| s.len() == 4).await;
    stop.send(true).expect("stop");
    // The stop waits for its grace, then for the commits, which wait for the lock.
    until(|| progress_of.stopping.load(Ordering::SeqCst)).await;
    drop(lock);
    task.await.expect("the worker");
    let rows: Vec<StoredEvent> = ids
        .iter()
        .map(|&id| store.get(id).expect("get").expect("row"))
        .collect();
    assert_eq!(
        rows.iter()
            .map(|r| (r.state, r.attempts))
            .collect::<Vec<_>>(),
        [
            (EventState::Delivered, 1),
            (EventState::Delivered, 1),
            (EventState::Pending, 1),
            (EventState::Pending, 0),
        ],
        "answered results are recorded at the stop; the unanswered event is untouched"
    );
    assert_eq!(rows[2].last_error.as_deref(), Some("scripted failure"));
    assert_eq!(rows[3].last_error, None);
}
