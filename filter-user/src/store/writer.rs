//! The writer: one thread owns the only read-write connection and group-commits what is queued.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    HashedBody, Inserted, NewEvent, StoreError,
    checkpoint::{Checkpointer, WAL_KEEP_BYTES, WAL_SAFETY_PAGES},
    file::{FileId, check_file},
    queue::{PURGE_CHUNK, Purge, Update, apply_updates, purge_chunk},
    schema::migrate,
    sqlite_err,
};

/// Most requests (inserts, update lists, purge chunks) committed by one transaction. Bounds the
/// time the first request of a batch waits for the others and the size of one WAL append; at 256
/// the fsync is already amortised ~256 ways.
pub const BATCH_CAP: usize = 256;

/// Requests that may wait for the writer before `insert` itself waits (backpressure): enough for
/// many full batches, small enough that a stalled disk does not pile up unbounded memory.
const QUEUE_CAP: usize = 4096;

/// Inserts one event, as `pending` and due at once; on a duplicate key, or a key whose event was
/// purged and left a tombstone, it inserts nothing (and changes no row). No `RETURNING id`:
/// SQLite runs a RETURNING clause through an ephemeral table it opens and frees for every
/// execution, which cost about a third of the insert's time; the new id is `last_insert_rowid()`
/// instead, read when the insert changed a row. The tombstone check is a primary-key probe in the
/// same statement, so the common case (a new event) stays one statement. (`WHERE` is what lets
/// SQLite read `ON CONFLICT` after a `SELECT` as the upsert clause.)
const INSERT_SQL: &str = "INSERT INTO events
        (route, event_id, kind, received_at, body, body_sha256, headers,
         state, attempts, next_attempt_at)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?4
    WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE route = ?1 AND event_id = ?2)
    ON CONFLICT (route, event_id) DO NOTHING";

/// Opens the read-write connection with the durability settings and brings the schema up to date.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(sqlite_err("opening", path))?;
    conn.busy_timeout(busy_timeout)
        .map_err(sqlite_err("setting the busy timeout of", path))?;
    enable_wal(&conn, path)?;
    // In WAL mode, NORMAL syncs the WAL only at checkpoints: a commit survives a crash of the
    // daemon but can be lost to an OS crash or power cut, after the provider was told "accepted".
    // FULL fsyncs the WAL at every commit, so a returned commit is durable; group commit is what
    // keeps that one fsync per batch rather than per request. The writer relaxes it for batches
    // without new events (see `Writer::commit`).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_err("setting synchronous=FULL on", path))?;
    // Checkpoints run on their own thread ([`Checkpointer`]); left to SQLite, the commit that
    // crosses 1,000 WAL pages would copy them into the database file and fsync it before its
    // requests are answered, a latency spike every few seconds under load. The writer still
    // checkpoints past WAL_SAFETY_PAGES, which only a checkpoint thread that cannot keep up
    // lets the WAL reach: a bound on the WAL (and on its shared-memory index) whatever the load.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_SAFETY_PAGES)
        .map_err(sqlite_err(
            "setting the automatic checkpoint threshold on",
            path,
        ))?;
    // After a checkpoint resets the WAL, truncate the file to this size: a WAL that outgrew the
    // safety bound does not keep its disk space for ever. Anything smaller is kept and
    // overwritten: truncating and regrowing the file each cycle costs a slow commit (block
    // allocation, and a discard on file systems mounted with it).
    conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)
        .map_err(sqlite_err("setting journal_size_limit on", path))?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Switches to WAL (persistent in the file) and checks that SQLite really did.
fn enable_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite_err("switching to WAL mode in", path))?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(StoreError::NotWal {
            path: path.to_path_buf(),
            mode,
        })
    }
}

/// An event ready for the writer: encoded (and hashed, by [`HashedBody`]) on the caller's task, so
/// the writer thread (the one serial point) only runs SQL.
struct Row {
    route: String,
    event_id: String,
    kind: String,
    received_at_ms: i64,
    body: Vec<u8>,
    body_sha256: String,
    headers_json: String,
}

impl Row {
    fn encode(event: NewEvent) -> Result<Self, StoreError> {
        let headers_json = match serde_json::to_string(&event.headers) {
            Ok(json) => json,
            Err(e) => {
                return Err(StoreError::Encode {
                    route: event.route,
                    event_id: event.event_id,
                    source: Arc::new(e),
                });
            }
        };
        let HashedBody { bytes, sha256_hex } = event.body;
        Ok(Self {
            body_sha256: sha256_hex,
            route: event.route,
            event_id: event.event_id,
            kind: event.kind,
            received_at_ms: event.received_at_ms,
            body: bytes,
            headers_json,
        })
    }
}

/// An insert waiting for the writer, with where its answer goes.
struct PendingInsert {
    row: Row,
    reply: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// Delivery-state changes waiting for the writer; answered with how many rows changed.
struct PendingUpdate {
    updates: Vec<Update>,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// One chunk of a purge waiting for the writer; answered with how many rows were deleted.
struct PendingPurge {
    what: Purge,
    before_ms: i64,
    limit: u32,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// What the writer thread is asked to do.
enum Command {
    Insert(PendingInsert),
    Update(PendingUpdate),
    Purge(PendingPurge),
    /// Stop accepting; finish what is queued; exit.
    Close,
}

/// The requests one transaction serves. Within a kind they are applied in arrival order; across
/// kinds the order does not matter: an update names a row id its caller read after that row's
/// insert had committed, and a purge only deletes `delivered` rows, which inserts never create
/// (an insert before the purge of its key in one batch finds the row, one after it the tombstone).
/// Updates go before purges so an event delivered in this batch is already `delivered` for them.
#[derive(Default)]
struct Batch {
    inserts: Vec<PendingInsert>,
    updates: Vec<PendingUpdate>,
    purges: Vec<PendingPurge>,
}

impl Batch {
    fn len(&self) -> usize {
        self.inserts.len() + self.updates.len() + self.purges.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands `e` to every request and empties the batch.
    fn fail(&mut self, e: &StoreError) {
        // A failed reply send means the requester gave up waiting; the outcome stands either way.
        for pending in self.inserts.drain(..) {
            let _ = pending.reply.send(Err(e.clone()));
        }
        for pending in self.updates.drain(..) {
            let _ = pending.reply.send(Err(e.clone()));
        }
        for pending in self.purges.drain(..) {
            let _ = pending.reply.send(Err(e.clone()));
        }
    }

    /// Hands each request its result and empties the batch.
    fn answer(&mut self, done: Done) {
        for (pending, result) in self.inserts.drain(..).zip(done.inserted) {
            let _ = pending.reply.send(Ok(result));
        }
        for (pending, changed) in self.updates.drain(..).zip(done.updated) {
            let _ = pending.reply.send(Ok(changed));
        }
        for (pending, deleted) in self.purges.drain(..).zip(done.purged) {
            let _ = pending.reply.send(Ok(deleted));
        }
    }
}

/// What a committed batch did, request by request, in [`Batch`] order.
struct Done {
    inserted: Vec<Inserted>,
    updated: Vec<u64>,
    purged: Vec<u64>,
}

/// The async, cloneable way in to the writer thread.
///
/// When the last handle is dropped, the writer commits what is queued and the drop waits for the
/// thread to finish (at most one batch, plus the busy timeout if another process holds the lock);
/// prefer [`StoreHandle::close`] in async code.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    // Declared before `shared` so it is dropped first: when the last handle goes, its sender is
    // gone before `Shared::drop` joins the writer, which only ends once no sender is left.
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// Whether the store can take writes, as `/readyz` reports it: the writer thread is running
/// and the last batch it wrote committed. Cheap to clone; reading it takes no lock unless the
/// last batch failed.
#[derive(Debug, Clone, Default)]
pub struct WriterHealth(Arc<HealthState>);

#[derive(Debug, Default)]
struct HealthState {
    /// The writer thread has ended (closed, or panicked).
    stopped: AtomicBool,
    /// The last batch failed; its error is in `last_error`.
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl WriterHealth {
    /// `Ok` while the writer thread runs and the last batch it wrote (inserts, delivery
    /// updates, a purge chunk) committed; a store that has written nothing yet is writable.
    /// Otherwise why not. A failed batch is forgotten at the next one that commits.
    ///
    /// # Errors
    /// The reason the store is not writable, in one line.
    pub fn check(&self) -> Result<(), String> {
        if !self.running() {
            return Err("the writer thread has stopped".to_owned());
        }
        if self.0.failing.load(Ordering::Acquire) {
            let error = self
                .0
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            return Err(format!("the last commit failed: {error}"));
        }
        Ok(())
    }

    /// Whether the writer thread still runs: false once it has ended, by a panic or a close.
    #[must_use]
    pub fn running(&self) -> bool {
        !self.0.stopped.load(Ordering::Acquire)
    }

    fn committed(&self) {
        if self.0.failing.load(Ordering::Acquire) {
            *self
                .0
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            self.0.failing.store(false, Ordering::Release);
        }
    }

    fn failed(&self, e: &StoreError) {
        // One line: the probe's body has one line per failed check.
        let text = e.to_string().replace('\n', " ");
        *self
            .0
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text);
        self.0.failing.store(true, Ordering::Release);
    }
}

/// Marks the writer stopped when its thread ends, by returning or by a panic.
struct StoppedOnDrop(WriterHealth);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.0.stopped.store(true, Ordering::Release);
    }
}

/// State shared by all handles; dropping the last one joins the writer.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    commits: Arc<AtomicU64>,
    health: WriterHealth,
    /// New events committed since the store was opened; the writer bumps it.
    inserted: Arc<watch::Sender<u64>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn take_writer(&self) -> Option<JoinHandle<()>> {
        // A poisoned lock only means a panic elsewhere while holding it; the Option is still valid.
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let Some(writer) = self.take_writer() else {
            return;
        };
        if writer.join().is_err() {
            tracing::error!(path = %self.path.display(), "the event store's writer thread panicked");
        }
    }
}

impl StoreHandle {
    pub(super) fn spawn(path: &Path, conn: Connection, file: FileId) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_CAP);
        let commits = Arc::new(AtomicU64::new(0));
        let inserted = Arc::new(watch::Sender::new(0));
        let health = WriterHealth::default();
        let writer = Writer {
            conn,
            path: path.to_path_buf(),
            file,
            commits: Arc::clone(&commits),
            inserted: Arc::clone(&inserted),
            health: health.clone(),
            synced: true,
        };
        let thread = thread::Builder::new()
            .name("hookwall-store".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Create {
                what: "the writer thread",
                path: path.to_path_buf(),
                source: Arc::new(e),
            })?;
        let shared = Shared {
            path: path.to_path_buf(),
            commits,
            health,
            inserted,
            writer: Mutex::new(Some(thread)),
        };
        Ok(Self {
            tx,
            shared: Arc::new(shared),
        })
    }

    /// Stores `event` durably, or finds it already stored. Returns only after the transaction
    /// holding it has committed (or failed).
    ///
    /// If the future is dropped after the request was queued, the event may still be stored; a
    /// retry of the same event then reports [`Inserted::Duplicate`].
    ///
    /// # Errors
    /// The batch holding this event failed (the event is not acknowledged and may or may not
    /// be stored; a retry is safe), or the store is closed.
    pub async fn insert(&self, event: NewEvent) -> Result<Inserted, StoreError> {
        let row = Row::encode(event)?;
        let (reply, answer) = oneshot::channel();
        self.request(Command::Insert(PendingInsert { row, reply }), answer)
            .await
    }

    /// Applies the updates in one transaction (with whatever inserts are queued), durable when
    /// `Ok`. Only rows still `pending` change; returns how many rows changed.
    ///
    /// # Errors
    /// The batch holding these updates failed (none of them is applied), or the store is closed.
    pub async fn update(&self, updates: Vec<Update>) -> Result<u64, StoreError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        self.request(Command::Update(PendingUpdate { updates, reply }), answer)
            .await
    }

    /// Deletes `delivered` events with `delivered_at < before_ms`; returns how many. Each leaves a
    /// tombstone, written in the transaction that deletes it, that recognises a replay until
    /// [`StoreHandle::purge_tombstones`] removes it. Pending and dead events are never deleted.
    /// Works in chunks of at most [`PURGE_CHUNK`] rows, each group-committed with the inserts
    /// queued beside it, so a large purge never stalls them.
    ///
    /// # Errors
    /// A chunk failed (the chunks before it stay deleted; purging again is safe), or the store
    /// is closed.
    pub async fn purge_delivered(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.purge(Purge::Delivered, before_ms).await
    }

    /// Deletes the tombstones of events delivered before `before_ms` (`store.dedupe_window`
    /// ago); returns how many. After this a replay of those events is accepted as new. Chunked
    /// like [`StoreHandle::purge_delivered`].
    ///
    /// # Errors
    /// As for [`StoreHandle::purge_delivered`].
    pub async fn purge_tombstones(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.purge(Purge::Tombstones, before_ms).await
    }

    async fn purge(&self, what: Purge, before_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            let purge = PendingPurge {
                what,
                before_ms,
                limit: PURGE_CHUNK,
                reply,
            };
            let deleted = self.request(Command::Purge(purge), answer).await?;
            total += deleted;
            if deleted < u64::from(PURGE_CHUNK) {
                return Ok(total);
            }
        }
    }

    /// The number of events inserted since the store was opened, bumped after every commit that
    /// stored at least one new event (not for duplicates or updates): the delivery worker waits
    /// on it for new work.
    #[must_use]
    pub fn inserted(&self) -> watch::Receiver<u64> {
        self.shared.inserted.subscribe()
    }

    /// Sends `command` and waits for the writer's answer to it.
    async fn request<T>(
        &self,
        command: Command,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.tx.send(command).await.map_err(|_| self.closed())?;
        // The writer answers every request it received, even when it is closing; a dropped
        // reply therefore means the thread died.
        answer.await.map_err(|_| StoreError::WriterStopped {
            path: self.shared.path.clone(),
        })?
    }

    /// Transactions committed since the store was opened (each is one fsync of the WAL).
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether the store can take writes now (see [`WriterHealth::check`]).
    #[must_use]
    pub fn health(&self) -> WriterHealth {
        self.shared.health.clone()
    }

    /// Stops accepting requests (from every handle), commits what is already queued and waits
    /// for the writer thread to exit.
    ///
    /// # Errors
    /// The writer thread had panicked.
    pub async fn close(self) -> Result<(), StoreError> {
        // A send error means the writer is already gone, which is what we want.
        let _ = self.tx.send(Command::Close).await;
        let Some(writer) = self.shared.take_writer() else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || writer.join()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(StoreError::WriterStopped {
                path: self.shared.path.clone(),
            }),
        }
    }

    /// Whether the writer thread still takes requests: false once it has ended, by a panic or
    /// after [`StoreHandle::close`].
    #[must_use]
    pub fn writer_running(&self) -> bool {
        self.shared.health.running()
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.shared.path.clone(),
        }
    }
}

/// The writer thread: owns the read-write connection.
struct Writer {
    conn: Connection,
    path: PathBuf,
    file: FileId,
    commits: Arc<AtomicU64>,
    inserted: Arc<watch::Sender<u64>>,
    health: WriterHealth,
    /// The connection is at `synchronous = FULL` (else NORMAL).
    synced: bool,
}

impl Writer {
    /// Serves batches until every handle is gone or `Close` has been received and the queue
    /// drained (after `close()` the channel still yields what was queued, then `None`).
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let _stopped = StoppedOnDrop(self.health.clone());
        // Dropped when this returns, before the writer's connection (which, closed last,
        // checkpoints what is left and removes the WAL).
        let checkpointer = Checkpointer::start(&self.path);
        let mut batch = Batch::default();
        while let Some(first) = rx.blocking_recv() {
            take(&mut rx, first, &mut batch);
            drain(&mut rx, &mut batch);
            if !batch.is_empty() {
                self.write(&mut batch);
            }
            // After the batch is answered: only requests that arrive meanwhile wait for it.
            if checkpointer.take_tail() {
                self.checkpoint_tail();
            }
        }
    }

    /// Copies into the database file the WAL frames committed since the checkpointer's last
    /// pass: few, so this is short. No transaction of this writer is open, so nothing is
    /// appended meanwhile and the copy is complete (unless a reader still needs old frames),
    /// which lets the next transaction restart the WAL from its beginning.
    fn checkpoint_tail(&mut self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(path = %self.path.display(), error = %e, "WAL checkpoint failed");
        }
    }

    /// Commits the batch and answers every request in it; empties `batch`.
    fn write(&mut self, batch: &mut Batch) {
        let outcome = self
            .commit(batch)
            // After the commit: a file deleted at any time up to now has taken this batch with it.
            .and_then(|done| check_file(&self.path, self.file).map(|()| done));
        match outcome {
            Ok(done) => {
                let new = done
                    .inserted
                    .iter()
                    .filter(|i| matches!(i, Inserted::New { .. }))
                    .count() as u64;
                if new > 0 {
                    // Before the replies: whoever hears "stored" can already see the bump.
                    self.inserted.send_modify(|n| *n += new);
                }
                self.health.committed();
                batch.answer(done);
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "event store batch failed");
                self.health.failed(&e);
                batch.fail(&e);
            }
        }
    }

    /// Applies the whole batch in one transaction. Any error abandons the transaction (rolled
    /// back when dropped) and fails the batch: after some errors (I/O, disk full) SQLite has
    /// already rolled back, so carrying on would report rows that are not there.
    fn commit(&mut self, batch: &Batch) -> Result<Done, StoreError> {
        // A new event must survive an OS crash or power cut before its provider hears
        // "accepted": a batch with inserts fsyncs the WAL. Delivery results and purges need not:
        // a result lost that way leaves its event pending, sent again with the same id (at
        // least once), and a lost purge is done again. Their commits skip the fsync, which is
        // most of what a commit of a few results costs; the next batch with inserts, or the
        // next checkpoint, syncs them with it.
        self.set_synced(!batch.inserts.is_empty())?;
        let path = &self.path;
        // IMMEDIATE takes the write lock up front, so a lock held by another process shows up
        // here (after the busy timeout) rather than half-way through the batch.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_err("beginning a transaction in", path))?;
        let inserted = batch
            .inserts
            .iter()
            .map(|pending| insert_row(&tx, &pending.row))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite_err("inserting an event into", path))?;
        let updated = batch
            .updates
            .iter()
            .map(|pending| apply_updates(&tx, &pending.updates))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite_err("updating the delivery state of events in", path))?;
        let purged = batch
            .purges
            .iter()
            .map(|pending| purge_chunk(&tx, pending.what, pending.before_ms, pending.limit))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite_err("purging delivered events from", path))?;
        tx.commit().map_err(sqlite_err("committing to", path))?;
        // Relaxed: readers only need the count, and the reply that follows orders it for them.
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(Done {
            inserted,
            updated,
            purged,
        })
    }

    /// Sets `synchronous` to FULL (`synced`) or NORMAL, unless it is already.
    fn set_synced(&mut self, synced: bool) -> Result<(), StoreError> {
        if synced != self.synced {
            let level = if synced { "FULL" } else { "NORMAL" };
            self.conn
                .pragma_update(None, "synchronous", level)
                .map_err(sqlite_err("setting the sync level of", &self.path))?;
            self.synced = synced;
        }
        Ok(())
    }
}

/// Takes what is queued into the batch, up to [`BATCH_CAP`], without waiting.
fn drain(rx: &mut mpsc::Receiver<Command>, batch: &mut Batch) {
    while batch.len() < BATCH_CAP {
        match rx.try_recv() {
            Ok(command) => take(rx, command, batch),
            Err(_) => break,
        }
    }
}

/// Files a received command into the batch; `Close` shuts the channel so only what is already
/// queued is still received.
fn take(rx: &mut mpsc::Receiver<Command>, command: Command, batch: &mut Batch) {
    match command {
        Command::Insert(pending) => batch.inserts.push(pending),
        Command::Update(pending) => batch.updates.push(pending),
        Command::Purge(pending) => batch.purges.push(pending),
        Command::Close => rx.close(),
    }
}

/// Inserts one row, or finds the row or the tombstone already stored under its (route, event id).
fn insert_row(conn: &Connection, row: &Row) -> rusqlite::Result<Inserted> {
    let changed = conn.prepare_cached(INSERT_SQL)?.execute(params![
        row.route,
        row.event_id,
        row.kind,
        row.received_at_ms,
        row.body,
        row.body_sha256,
        row.headers_json,
    ])?;
    // The table has no triggers, so a changed row is this insert's own row, and the
    // connection's last rowid is its id (this connection is the writer's alone).
    if changed == 1 {
        return Ok(Inserted::New {
            id: conn.last_insert_rowid(),
        });
    }
    let id = conn
        .prepare_cached("SELECT id FROM events WHERE route = ?1 AND event_id = ?2")?
        .query_row(params![row.route, row.event_id], |r| r.get(0))
        .optional()?;
    // No row: the insert was skipped for the key's tombstone.
    Ok(id.map_or(Inserted::Purged, |id| Inserted::Duplicate { id }))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        pin::Pin,
        task::{Context, Poll, Waker},
        time::Duration,
    };

    use rusqlite::Connection;
    use tokio::task::{JoinSet, Unconstrained, unconstrained};

    use super::super::{
        Store, Update,
        testing::{db_path, event, insert_concurrently},
    };
    use super::*;

    #[tokio::test]
    async fn duplicate_is_reported_and_not_stored_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let first = handle.insert(event("/r", "e1")).await.expect("first");
        let mut again = event("/r", "e1");
        again.body = HashedBody::new(b"a different body".to_vec());
        let second = handle.insert(again).await.expect("second");
        assert!(matches!(first, Inserted::New { .. }), "{first:?}");
        assert_eq!(
            second,
            Inserted::Duplicate {
                id: first.id().expect("a row")
            }
        );
        assert_eq!(store.count().expect("count"), 1);
        let stored = store
            .get(first.id().expect("a row"))
            .expect("get")
            .expect("stored");
        assert_eq!(
            stored.body,
            event("/r", "e1").body.bytes(),
            "the first delivery is kept"
        );

        // The key is (route, event id): the same id on another route is another event.
        let other = handle.insert(event("/other", "e1")).await.expect("other");
        assert!(
            matches!(other, Inserted::New { id } if Some(id) != first.id()),
            "{other:?}"
        );
        assert_eq!(store.count().expect("count"), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn duplicates_in_one_batch_store_one_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let mut tasks = JoinSet::new();
        for _ in 0..50 {
            let handle = store.handle();
            tasks.spawn(async move { handle.insert(event("/r", "same")).await });
        }
        let results: Vec<Inserted> = tasks
            .join_all()
            .await
            .into_iter()
            .map(|r| r.expect("insert"))
            .collect();
        let new: Vec<_> = results
            .iter()
            .filter(|r| matches!(r, Inserted::New { .. }))
            .collect();
        assert_eq!(new.len(), 1, "{results:?}");
        assert!(results.iter().all(|r| r.id() == new[0].id()), "{results:?}");
        assert_eq!(store.count().expect("count"), 1);
    }

    /// A batch applied by a writer driven on the test's thread, so the test can read its
    /// connection's sync level between batches. Returns the level: 2 is FULL, 1 NORMAL.
    fn write_and_read_sync_level(writer: &mut Writer, batch: &mut Batch) -> i64 {
        writer.write(batch);
        writer
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("synchronous")
    }

    #[test]
    fn only_a_batch_with_new_events_waits_for_an_fsync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let file = super::super::file::create_file(&path).expect("create");
        let conn = open_writer(&path, Duration::from_secs(2)).expect("writer");
        let mut writer = Writer {
            conn,
            path,
            file,
            commits: Arc::default(),
            inserted: Arc::new(watch::Sender::new(0)),
            health: WriterHealth::default(),
            synced: true,
        };
        let insert = |id: &str| PendingInsert {
            row: Row::encode(event("/r", id)).expect("encode"),
            reply: oneshot::channel().0,
        };
        let delivered = |id: i64| PendingUpdate {
            updates: vec![Update::Delivered {
                id,
                attempts: 1,
                at_ms: 1,
            }],
            reply: oneshot::channel().0,
        };
        let mut batch = Batch::default();

        batch.inserts.push(insert("e1"));
        batch.inserts.push(insert("e2"));
        assert_eq!(write_and_read_sync_level(&mut writer, &mut batch), 2);
        // Results alone: no fsync of their own.
        batch.updates.push(delivered(1));
        assert_eq!(write_and_read_sync_level(&mut writer, &mut batch), 1);
        // A new event beside results: the batch is synced again.
        batch.inserts.push(insert("e3"));
        batch.updates.push(delivered(2));
        assert_eq!(write_and_read_sync_level(&mut writer, &mut batch), 2);
        batch.purges.push(PendingPurge {
            what: Purge::Delivered,
            before_ms: i64::MAX,
            limit: 10,
            reply: oneshot::channel().0,
        });
        assert_eq!(write_and_read_sync_level(&mut writer, &mut batch), 1);
        assert_eq!(writer.commits.load(Ordering::Relaxed), 4);
        let states: Vec<(i64, String)> = writer
            .conn
            .prepare("SELECT id, state FROM events ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            states,
            [(3, "pending".to_owned())],
            "every batch was applied: e1 and e2 delivered and purged, e3 pending"
        );
    }

    /// A purge command for the batching tests (its reply is never read).
    fn purge_command() -> Command {
        let (reply, _) = oneshot::channel();
        Command::Purge(PendingPurge {
            what: Purge::Delivered,
            before_ms: 0,
            limit: 1,
            reply,
        })
    }

    /// A batch never grows past the cap: the rest waits for the next one.
    #[test]
    fn drain_takes_no_more_than_the_cap() {
        let (tx, mut rx) = mpsc::channel(QUEUE_CAP);
        for _ in 0..BATCH_CAP + 10 {
            tx.try_send(purge_command()).expect("queue has room");
        }
        let mut batch = Batch::default();
        drain(&mut rx, &mut batch);
        assert_eq!(batch.len(), BATCH_CAP, "drained to the cap, no further");
        assert_eq!(rx.len(), 10, "the rest waits for the next batch");
    }

    /// New and duplicate events mixed in the same batches: each answer names the row stored
    /// under its own (route, event id), whether it was inserted now or found.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_answer_in_a_mixed_batch_names_its_own_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        for i in 0..20 {
            handle
                .insert(event("/r", &format!("old-{i}")))
                .await
                .expect("first insert");
        }
        let mut tasks = JoinSet::new();
        for i in 0..20 {
            for prefix in ["old", "new"] {
                let handle = handle.clone();
                let event_id = format!("{prefix}-{i}");
                tasks.spawn(async move {
                    let inserted = handle.insert(event("/r", &event_id)).await;
                    (event_id, inserted.expect("insert"))
                });
            }
        }
        for (event_id, inserted) in tasks.join_all().await {
            let expect_new = event_id.starts_with("new");
            assert_eq!(
                matches!(inserted, Inserted::New { .. }),
                expect_new,
                "{event_id}: {inserted:?}"
            );
            let stored = store.find("/r", &event_id).expect("find").expect("stored");
            assert_eq!(Some(stored.id), inserted.id(), "{event_id}");
        }
        assert_eq!(store.count().expect("count"), 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_are_stored_once_and_share_commits() {
        const TASKS: usize = 200;
        const PER_TASK: usize = 5;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let mut tasks = JoinSet::new();
        for task in 0..TASKS {
            let handle = store.handle();
            tasks.spawn(async move {
                let mut done = Vec::with_capacity(PER_TASK);
                for n in 0..PER_TASK {
                    let event_id = format!("t{task}-{n}");
                    let inserted = handle.insert(event("/r", &event_id)).await;
                    done.push((event_id, inserted.expect("insert")));
                }
                done
            });
        }
        let done: Vec<(String, Inserted)> = tasks.join_all().await.into_iter().flatten().collect();

        let inserts = TASKS * PER_TASK;
        assert_eq!(done.len(), inserts);
        let ids: HashSet<i64> = done.iter().map(|(_, r)| r.id().expect("a row")).collect();
        assert_eq!(ids.len(), inserts, "every insert got its own row");
        for (event_id, inserted) in &done {
            assert!(
                matches!(inserted, Inserted::New { .. }),
                "{event_id}: {inserted:?}"
            );
            let stored = store.find("/r", event_id).expect("find");
            assert_eq!(stored.map(|e| e.id), inserted.id(), "{event_id}");
        }
        assert_eq!(store.count().expect("count"), inserts as u64);

        let commits = store.commits();
        eprintln!("group commit: {inserts} concurrent inserts in {commits} commits");
        assert!(commits >= 1);
        assert!(
            commits < inserts as u64 / 2,
            "{commits} commits for {inserts} inserts: not grouped"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn locked_database_fails_every_waiting_request_then_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open_with(&path, Duration::from_millis(100)).expect("open");
        let handle = store.handle();

        // Another process holding the write lock: every batch times out on it.
        let locker = Connection::open(&path).expect("second connection");
        locker.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let results = insert_concurrently(&handle, 50, "locked").await;
        assert_eq!(results.len(), 50);
        for result in &results {
            assert!(
                matches!(
                    result,
                    Err(StoreError::Sqlite {
                        op: "beginning a transaction in",
                        ..
                    })
                ),
                "{result:?}"
            );
        }
        locker.execute_batch("ROLLBACK").expect("unlock");

        let after = handle
            .insert(event("/r", "after"))
            .await
            .expect("after unlock");
        assert!(matches!(after, Inserted::New { .. }), "{after:?}");
        assert_eq!(
            store.count().expect("count"),
            1,
            "nothing from the failed batches"
        );
    }

    /// Polls each future once (queueing an insert's request, or a close's command) and returns
    /// those still waiting; `unconstrained` so tokio's cooperative budget cannot make a poll
    /// return before it has sent.
    fn poll_once<F: Future + Unpin>(futures: Vec<Unconstrained<F>>) -> Vec<Unconstrained<F>> {
        let mut cx = Context::from_waker(Waker::noop());
        futures
            .into_iter()
            .filter_map(|mut f| match Pin::new(&mut f).poll(&mut cx) {
                Poll::Ready(_) => None,
                Poll::Pending => Some(f),
            })
            .collect()
    }

    /// An insert that has sent its request and waits for the answer.
    type QueuedInsert = Unconstrained<Pin<Box<dyn Future<Output = Result<Inserted, StoreError>>>>>;

    /// Starts `n` inserts and polls each once, so that all their requests are queued.
    fn queue_inserts(handle: &StoreHandle, prefix: &str, n: usize) -> Vec<QueuedInsert> {
        let inserts: Vec<QueuedInsert> = (0..n)
            .map(|i| {
                let (handle, event_id) = (handle.clone(), format!("{prefix}{i}"));
                let insert: Pin<Box<dyn Future<Output = _>>> =
                    Box::pin(async move { handle.insert(event("/r", &event_id)).await });
                unconstrained(insert)
            })
            .collect();
        let waiting = poll_once(inserts);
        assert_eq!(
            waiting.len(),
            n,
            "the writer is held up: nothing can have answered"
        );
        waiting
    }

    #[tokio::test]
    async fn health_follows_the_last_commit_and_the_writer_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open_with(&path, Duration::from_millis(50)).expect("open");
        let handle = store.handle();
        let health = handle.health();
        assert_eq!(health.check(), Ok(()), "a store that wrote nothing yet");

        // Another connection holds the write lock past the busy timeout: the batch fails.
        let locker = Connection::open(&path).expect("second connection");
        locker.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let failed = handle.insert(event("/r", "locked")).await;
        assert!(failed.is_err(), "{failed:?}");
        let why = health
            .check()
            .expect_err("not writable after a failed commit");
        assert!(why.starts_with("the last commit failed: "), "{why}");
        assert!(why.contains("locked"), "{why}");
        assert!(!why.contains('\n'), "{why}");

        // The next batch that commits clears it.
        locker.execute_batch("ROLLBACK").expect("unlock");
        handle.insert(event("/r", "after")).await.expect("insert");
        assert_eq!(health.check(), Ok(()));

        store.close().await.expect("close");
        assert_eq!(
            health.check(),
            Err("the writer thread has stopped".to_owned())
        );
    }

    #[tokio::test]
    async fn close_commits_everything_queued_and_refuses_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        // A busy timeout longer than the test: the writer waits on the lock below until released.
        let store = Store::open_with(&path, Duration::from_secs(60)).expect("open");
        let handle = store.handle();
        let locker = Connection::open(&path).expect("second connection");
        locker.execute_batch("BEGIN IMMEDIATE").expect("lock");

        let before = queue_inserts(&handle, "before", 50);
        // Let the writer take its first batch and stall on the lock, leaving the rest queued.
        std::thread::sleep(Duration::from_millis(300));
        let close = poll_once(vec![unconstrained(Box::pin(store.close()))]);
        assert_eq!(close.len(), 1, "close waits for the writer");
        // Sent after the close, but queued before the writer reads it: still committed.
        let after = queue_inserts(&handle, "after", 50);
        locker.execute_batch("ROLLBACK").expect("unlock");

        for close in close {
            close.await.expect("close");
        }
        for insert in before.into_iter().chain(after) {
            let result = insert.await;
            assert!(matches!(result, Ok(Inserted::New { .. })), "{result:?}");
        }
        let late = handle.insert(event("/r", "late")).await;
        assert!(matches!(late, Err(StoreError::Closed { .. })), "{late:?}");
        drop(handle);

        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.count().expect("count"), 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dropping_the_last_handle_drains_and_joins_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let wal = dir.path().join("events.db-wal");
        let store = Store::open(&path).expect("open");
        let mut tasks = JoinSet::new();
        for i in 0..50 {
            let handle = store.handle();
            tasks.spawn(async move { handle.insert(event("/r", &format!("d{i}"))).await });
        }
        drop(store);
        for result in tasks.join_all().await {
            assert!(matches!(result, Ok(Inserted::New { .. })), "{result:?}");
        }
        // The last task's handle joined the writer, whose connection (the last one) checkpointed
        // the WAL into the database and removed it.
        assert!(
            !wal.exists(),
            "WAL still there: the writer's connection is open"
        );
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.count().expect("count"), 50);
    }

    #[tokio::test]
    async fn the_writer_is_seen_running_until_it_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let watcher = store.handle();
        assert!(watcher.writer_running());
        store.handle().close().await.expect("close");
        assert!(
            !watcher.writer_running(),
            "a handle kept elsewhere sees the writer gone"
        );
    }

    #[tokio::test]
    async fn inserted_is_bumped_by_new_events_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let mut inserted = handle.inserted();
        assert!(!inserted.has_changed().expect("open"));

        let id = handle
            .insert(event("/r", "a"))
            .await
            .expect("insert")
            .id()
            .expect("a row");
        assert!(
            inserted.has_changed().expect("open"),
            "bumped before insert returned"
        );
        assert_eq!(*inserted.borrow_and_update(), 1);

        // A duplicate, an update and a purge commit without storing a new event.
        handle.insert(event("/r", "a")).await.expect("duplicate");
        let delivered = Update::Delivered {
            id,
            attempts: 1,
            at_ms: 1,
        };
        assert_eq!(handle.update(vec![delivered]).await.expect("update"), 1);
        assert_eq!(handle.purge_delivered(2).await.expect("purge"), 1);
        assert!(!inserted.has_changed().expect("open"));

        let results = insert_concurrently(&handle, 20, "more").await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(inserted.has_changed().expect("open"));
        assert_eq!(*inserted.borrow_and_update(), 21, "counts new events");
        // A receiver taken now starts from here.
        assert!(!handle.inserted().has_changed().expect("open"));
    }
}
