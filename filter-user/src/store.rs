//! The durable event store: every accepted callback is committed to SQLite before it is answered.
//!
//! # Design
//! - One file at `store.path`, embedded SQLite (bundled, so every host runs the same version) in
//!   WAL mode with `synchronous = FULL`: when a commit returns, the event survives a crash of the
//!   daemon, of the kernel and a power cut.
//! - **Group commit.** One writer thread owns the only read-write connection. Requests arrive over
//!   a bounded channel, each with a oneshot for its reply; the writer takes everything queued (up
//!   to [`BATCH_CAP`]), inserts it in one transaction, commits once (one fsync) and only then
//!   replies. Concurrent requests therefore share an fsync, and no request hears "stored" before
//!   the commit that holds it has returned. A batch is one unit: if anything in it fails, every
//!   request in it gets the error (the receiver answers 503 and the provider retries), never a
//!   false success.
//! - **Checkpoints off the commit path.** A thread of its own copies committed WAL frames into
//!   the database file every 500 ms (PASSIVE: it waits for no one), so no request's answer waits
//!   for the bulk copy or the database file's fsync. Under steady load the writer appends frames
//!   while that pass runs, so it never copies everything and the WAL could never start again
//!   from its beginning: it would grow to the safety bound and be truncated, each time with a
//!   slow commit. So after each pass the writer, between two batches, copies the few frames
//!   committed meanwhile; then the WAL restarts and is overwritten in place.
//! - **The file stays the file.** After each commit the writer checks that `store.path` still
//!   names the file it has open: SQLite keeps committing into a deleted or moved file, and what
//!   it commits there is gone at the next start, so such a batch is failed, not acknowledged.
//! - **Duplicates.** `UNIQUE (route, event_id)`: a second delivery of the same event is answered
//!   [`Inserted::Duplicate`] with the first row's id and is not stored again.
//! - **Delivery (issue 4).** Each row carries its delivery state (`pending`, `delivered`, `dead`),
//!   attempt count, next attempt time and last error. The delivery worker reads what is due
//!   ([`Reader::due`], a partial index on `next_attempt_at`) and reports results as [`Update`]s,
//!   which the writer group-commits with the inserts; an update only changes a row still
//!   `pending`, so a late result can never revive an event an operator has dealt with. Every
//!   commit that stored a new event bumps [`StoreHandle::inserted`], which wakes the worker.
//!   Delivered events older than `store.retention` are purged in bounded chunks (each its own
//!   short transaction, so a large backlog never holds the write lock for long); pending and dead
//!   events are never purged.
//! - **Operator commands.** `hookwall queue` runs beside the daemon with its own read-write
//!   connection ([`Admin`]): it never creates or migrates the file, waits for the writer's lock
//!   like the writer waits for it, and does each operation in one short immediate transaction.
//! - **Reads** go through a separate read-only connection ([`Reader`]); WAL lets them run while
//!   the writer commits. Queue depth and the oldest pending event come from an index on
//!   `(state, received_at)`, never a table scan.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

/// Most requests (inserts, update lists, purge chunks) committed by one transaction. Bounds the
/// time the first request of a batch waits for the others and the size of one WAL append; at 256
/// the fsync is already amortised ~256 ways.
pub const BATCH_CAP: usize = 256;

/// Requests that may wait for the writer before `insert` itself waits (backpressure): enough for
/// many full batches, small enough that a stalled disk does not pile up unbounded memory.
const QUEUE_CAP: usize = 4096;

/// How long SQLite waits for a lock held by another process (e.g. a `hookwall queue` command)
/// before giving up: long enough to ride out a short maintenance transaction, short enough that
/// the provider gets a 503 well before its own timeout (Daraja waits about 8 s).
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The schema, one migration per version: `MIGRATIONS[i]` takes the database from version `i` to
/// `i + 1`. Append only; never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // Version 1: the events table, with the delivery-queue columns issue 4 needs.
    "CREATE TABLE events (
        id              INTEGER PRIMARY KEY,
        route           TEXT    NOT NULL,
        event_id        TEXT    NOT NULL,
        kind            TEXT    NOT NULL,
        received_at     INTEGER NOT NULL,            -- unix ms
        body            BLOB    NOT NULL,
        body_sha256     TEXT    NOT NULL,            -- lowercase hex
        headers         TEXT    NOT NULL CHECK (json_valid(headers)),
        state           TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,                     -- unix ms; set while pending
        last_error      TEXT,
        delivered_at    INTEGER,                     -- unix ms
        UNIQUE (route, event_id)
    );
    -- The delivery worker's question: which pending events are due?
    CREATE INDEX events_due ON events (next_attempt_at) WHERE state = 'pending';",
    // Version 2: queue depth by state and the oldest pending event (metrics, `queue list`)
    // without a table scan; and the purge's question, which delivered events are past retention,
    // without reading every delivered row while the write lock is held.
    "CREATE INDEX events_state ON events (state, received_at);
    CREATE INDEX events_delivered ON events (delivered_at) WHERE state = 'delivered';",
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Inserts one event, as `pending` and due at once; on a duplicate key it inserts nothing (and
/// changes no row). No `RETURNING id`: SQLite runs a RETURNING clause through an ephemeral table
/// it opens and frees for every execution, which cost about a third of the insert's time; the
/// new id is `last_insert_rowid()` instead, read when the insert changed a row.
const INSERT_SQL: &str = "INSERT INTO events
        (route, event_id, kind, received_at, body, body_sha256, headers,
         state, attempts, next_attempt_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?4)
    ON CONFLICT (route, event_id) DO NOTHING";

/// The columns [`EventSummary`] is read from, in the order `RawSummary::read` expects.
const SUMMARY_COLUMNS: &str = "id, route, event_id, kind, received_at, state, attempts,
    next_attempt_at, last_error, delivered_at";

/// The columns [`StoredEvent`] is read from: the summary's, then body, digest and headers, in
/// the order `RawEvent::read` expects.
const EVENT_COLUMNS: &str = "id, route, event_id, kind, received_at, state, attempts,
    next_attempt_at, last_error, delivered_at, body, body_sha256, headers";

// The queue queries name their index: without `ANALYZE` statistics SQLite prefers the equality
// match on `events_state (state)` and then sorts every pending row, where the partial index hands
// them over in order. `INDEXED BY` pins the plan (and fails at prepare if the index were gone).

/// Pending events due by `?1`, oldest due first (the `events_due` index gives this order), at
/// most `?2`.
fn due_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events INDEXED BY events_due
        WHERE state = 'pending' AND next_attempt_at <= ?1
        ORDER BY next_attempt_at, id
        LIMIT ?2"
    )
}

/// The earliest due time after a given instant: events already due may be in flight, and the
/// delivery worker sleeps until the next one that is not.
const NEXT_DUE_AFTER_SQL: &str = "SELECT next_attempt_at FROM events INDEXED BY events_due
    WHERE state = 'pending' AND next_attempt_at > ?1
    ORDER BY next_attempt_at LIMIT 1";

/// When the oldest pending event arrived (the first `pending` entry of `events_state`).
const OLDEST_PENDING_SQL: &str = "SELECT received_at FROM events INDEXED BY events_state
    WHERE state = 'pending' ORDER BY received_at LIMIT 1";

/// Events per state (a scan of the `events_state` index, not of the table with its bodies).
const COUNTS_SQL: &str = "SELECT state, COUNT(*) FROM events GROUP BY state";

/// Deletes at most `?2` delivered events delivered before `?1` (through `events_delivered`).
const PURGE_SQL: &str = "DELETE FROM events WHERE id IN (
    SELECT id FROM events INDEXED BY events_delivered
    WHERE state = 'delivered' AND delivered_at < ?1 LIMIT ?2)";

/// Most rows one purge transaction deletes: a few milliseconds of work, so inserts queued behind
/// it (and the daemon's writer, when `hookwall queue purge` holds the lock) wait only briefly.
pub const PURGE_CHUNK: u32 = 5_000;

/// What went wrong in the store. Each variant says what was being done and with which file.
///
/// `Clone` because a failed batch hands the same error to every request in it; the sources are
/// behind `Arc` for that reason.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// A directory or the database file could not be created.
    #[error("creating {what} for the event store {path}: {source}")]
    Create {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// SQLite refused an operation; `op` says which.
    #[error("{op} the event store {path}: {source}")]
    Sqlite {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// `hookwall queue` was pointed at a file that does not exist (it never creates one).
    #[error(
        "the event store {path} does not exist; check store.path in the config \
         (the daemon creates the file when it first starts)"
    )]
    Missing { path: PathBuf },
    /// The database did not switch to WAL mode (some network filesystems cannot do it).
    #[error(
        "the event store {path} is in journal mode {mode:?}, not \"wal\"; \
         put store.path on a local filesystem"
    )]
    NotWal { path: PathBuf, mode: String },
    /// The file's schema is not the one this build knows.
    #[error(
        "the event store {path} has schema version {found}, this hookwall knows {known}; \
         {hint}"
    )]
    SchemaVersion {
        path: PathBuf,
        found: i64,
        known: i64,
        hint: &'static str,
    },
    /// The database file was deleted, moved or replaced while open. SQLite would keep writing to
    /// the unlinked file and the events would vanish at exit, so nothing is acknowledged.
    #[error(
        "the event store {path} is no longer the file hookwall opened ({detail}); \
         no event is accepted until hookwall is restarted"
    )]
    Moved { path: PathBuf, detail: String },
    /// The headers could not be encoded as JSON.
    #[error("encoding the headers of event {event_id} on route {route} as JSON: {source}")]
    Encode {
        route: String,
        event_id: String,
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// The store was closed; nothing more is accepted.
    #[error("the event store {path} is closed")]
    Closed { path: PathBuf },
    /// The writer thread stopped without answering (it panicked; the log says why).
    #[error("the writer of the event store {path} stopped unexpectedly")]
    WriterStopped { path: PathBuf },
    /// A stored row could not be read back into a [`StoredEvent`].
    #[error("event row {id} in the event store {path} is malformed: {detail}")]
    Corrupt {
        path: PathBuf,
        id: i64,
        detail: String,
    },
}

/// Builds the mapper from a SQLite error to [`StoreError::Sqlite`] for one operation on one file.
fn sqlite_err(op: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Sqlite {
        op,
        path,
        source: Arc::new(source),
    }
}

/// An event to store, as the receiver accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The route's configured path, e.g. `/hooks/stripe`.
    pub route: String,
    /// The provider's idempotency key (webhook-id, Stripe event id, TransID, ...).
    pub event_id: String,
    /// What kind of callback this is (e.g. `c2b-confirmation`, a Stripe event type).
    pub kind: String,
    /// When the request arrived, unix milliseconds (see [`unix_ms`]).
    pub received_at_ms: i64,
    /// The raw body, exactly as received (the signature covers these bytes), with its digest.
    pub body: HashedBody,
    /// Headers worth keeping, in order. Only non-secret ones: the caller filters.
    pub headers: Vec<(String, String)>,
}

/// A request body and its SHA-256, computed once when the body is read: the receiver's audit
/// line and the store both record the digest, and it can never disagree with the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedBody {
    bytes: Vec<u8>,
    sha256_hex: String,
}

impl HashedBody {
    /// Hashes `bytes`.
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        let sha256_hex = hex::encode(Sha256::digest(&bytes));
        Self { bytes, sha256_hex }
    }

    /// The body.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its SHA-256, lowercase hex.
    #[must_use]
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }
}

/// What [`StoreHandle::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The event was new and is now durable under this row id.
    New { id: i64 },
    /// The same (route, event id) was already stored under this row id; nothing was written.
    Duplicate { id: i64 },
}

impl Inserted {
    /// The row id, new or existing.
    #[must_use]
    pub fn id(self) -> i64 {
        match self {
            Self::New { id } | Self::Duplicate { id } => id,
        }
    }
}

/// Where an event is in its delivery to the application (issue 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    /// Stored, not yet delivered; due at `next_attempt_at`.
    Pending,
    /// The application acknowledged it.
    Delivered,
    /// Given up on (dead letter); kept until replayed or purged.
    Dead,
}

impl EventState {
    /// The value stored in the `state` column.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// One stored event, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Row id.
    pub id: i64,
    /// The route's configured path.
    pub route: String,
    /// The provider's idempotency key.
    pub event_id: String,
    /// What kind of callback this is.
    pub kind: String,
    /// When the request arrived, unix ms.
    pub received_at_ms: i64,
    /// The raw body.
    pub body: Vec<u8>,
    /// SHA-256 of the body, lowercase hex.
    pub body_sha256: String,
    /// The headers the receiver kept, in order.
    pub headers: Vec<(String, String)>,
    /// Delivery state.
    pub state: EventState,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the next delivery attempt is due, unix ms (`None` once it is no longer pending).
    pub next_attempt_at_ms: Option<i64>,
    /// Why the last delivery attempt failed.
    pub last_error: Option<String>,
    /// When the application acknowledged it, unix ms.
    pub delivered_at_ms: Option<i64>,
}

/// One delivery-state change, applied by the writer thread (group-committed with inserts). Each
/// changes its row only while the row is still `pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The application acknowledged the event after `attempts` attempts, at `at_ms` (unix ms).
    Delivered { id: i64, attempts: u32, at_ms: i64 },
    /// Attempt `attempts` failed with `error`; try again at `next_at_ms` (unix ms).
    Retry {
        id: i64,
        attempts: u32,
        next_at_ms: i64,
        error: String,
    },
    /// Given up after `attempts` attempts, the last failing with `error` (dead letter).
    Dead {
        id: i64,
        attempts: u32,
        error: String,
    },
}

/// How many events are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    /// Not yet delivered.
    pub pending: u64,
    /// Acknowledged by the application (until purged).
    pub delivered: u64,
    /// Given up on.
    pub dead: u64,
}

/// One line of `queue list`: an event without its body and headers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventSummary {
    /// Row id.
    pub id: i64,
    /// The route's configured path.
    pub route: String,
    /// The provider's idempotency key.
    pub event_id: String,
    /// What kind of callback this is.
    pub kind: String,
    /// When the request arrived, unix ms.
    pub received_at_ms: i64,
    /// Delivery state.
    pub state: EventState,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the next delivery attempt is due, unix ms (`None` once it is no longer pending).
    pub next_attempt_at_ms: Option<i64>,
    /// Why the last delivery attempt failed.
    pub last_error: Option<String>,
    /// When the application acknowledged it, unix ms.
    pub delivered_at_ms: Option<i64>,
}

/// What [`Admin::retry`] did with one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// It was dead and is pending again, due at once.
    Requeued,
    /// It is not a dead letter (it is in this state); left alone.
    NotDead(EventState),
    /// No event has this id.
    NotFound,
}

/// Milliseconds since the Unix epoch, saturating; negative before 1970.
#[must_use]
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The open event store: the writer thread (behind [`StoreHandle`]) and a read-only connection.
#[derive(Debug)]
pub struct Store {
    // Declared before `handle` so it is dropped first: the writer's connection, closed last,
    // then checkpoints the WAL into the database file and removes it.
    reader: Reader,
    handle: StoreHandle,
}

impl Store {
    /// Opens (creating if needed) the store at `path`: parent directories (mode 0700), the file
    /// (mode 0600: bodies hold payment data), WAL and durability settings, schema migrations;
    /// then starts the writer thread. Blocking; call at start-up.
    ///
    /// # Errors
    /// Any step above failing, with the path and the step in the message.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), BUSY_TIMEOUT)
    }

    fn open_with(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let file = create_file(path)?;
        let conn = open_writer(path, busy_timeout)?;
        let reader = Reader::open_with(path, busy_timeout)?;
        let handle = StoreHandle::spawn(path, conn, file)?;
        Ok(Self { reader, handle })
    }

    /// A cloneable handle for inserting from async code.
    #[must_use]
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// The read side (blocking; see [`Reader`]).
    #[must_use]
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Transactions committed by the writer since the store was opened.
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.handle.commits()
    }

    /// The event with this row id. Blocking.
    ///
    /// # Errors
    /// The read failed or the row is malformed.
    pub fn get(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        self.reader.get(id)
    }

    /// The event stored for this (route, event id). Blocking.
    ///
    /// # Errors
    /// The read failed or the row is malformed.
    pub fn find(&self, route: &str, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.reader.find(route, event_id)
    }

    /// How many events are stored. Blocking.
    ///
    /// # Errors
    /// The read failed.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.reader.count()
    }

    /// Stops accepting inserts, commits everything already queued and waits for the writer.
    /// Other handles' later inserts get [`StoreError::Closed`].
    ///
    /// # Errors
    /// The writer thread had panicked.
    pub async fn close(self) -> Result<(), StoreError> {
        let Self { reader, handle } = self;
        drop(reader);
        handle.close().await
    }
}

/// Creates the parent directories and the database file with private permissions, and makes
/// their directory entries durable; returns the file's identity. SQLite gives its WAL and
/// shared-memory files the database file's mode, so 0600 here covers all three.
fn create_file(path: &Path) -> Result<FileId, StoreError> {
    let create_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |e| StoreError::Create {
            what,
            path,
            source: Arc::new(e),
        }
    };
    let dir = parent_dir(path);
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(create_err("the directory", dir))?;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(create_err("the database file", path))?;
    // A new file or directory survives a power cut only once the directory holding it is synced;
    // SQLite does that for the WAL it creates, not for what we created here.
    for parent in missing.iter().map(|d| parent_dir(d)).chain([dir]) {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(create_err("(syncing) the directory", parent))?;
    }
    file.metadata()
        .map(|meta| FileId::from_meta(&meta))
        .map_err(create_err(
            "(reading the identity of) the database file",
            path,
        ))
}

/// The directory holding `path`; `.` for a bare file name (whose parent is empty).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Opens the read-write connection with the durability settings and brings the schema up to date.
fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(sqlite_err("opening", path))?;
    conn.busy_timeout(busy_timeout)
        .map_err(sqlite_err("setting the busy timeout of", path))?;
    enable_wal(&conn, path)?;
    // In WAL mode, NORMAL syncs the WAL only at checkpoints: a commit survives a crash of the
    // daemon but can be lost to an OS crash or power cut, after the provider was told "accepted".
    // FULL fsyncs the WAL at every commit, so a returned commit is durable; group commit is what
    // keeps that one fsync per batch rather than per request.
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

/// WAL pages (4 KiB) past which the writer checkpoints itself: 64 MiB, far above what the
/// checkpoint thread lets accumulate in 500 ms at the receiver's top rate.
const WAL_SAFETY_PAGES: i64 = 16_384;

/// Bytes of WAL file kept after a checkpoint reset it: the safety bound.
const WAL_KEEP_BYTES: i64 = WAL_SAFETY_PAGES * 4096;

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies committed WAL frames into the database file on its own thread and connection, off
/// the writer's commit path. PASSIVE checkpoints never wait for the writer or readers. After
/// each pass it raises `tail_due`, and the writer copies what was committed during the pass
/// (see [`Writer::checkpoint_tail`]); once everything is copied, the writer's next transaction
/// restarts the WAL from its beginning, so the WAL stays small. Stops (after a last
/// checkpoint) when dropped.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    tail_due: Arc<AtomicBool>,
}

impl Checkpointer {
    fn start(path: &Path) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let tail_due = Arc::new(AtomicBool::new(false));
        let passed = Arc::clone(&tail_due);
        let path = path.to_path_buf();
        let thread = thread::Builder::new()
            .name("hookwall-ckpt".to_owned())
            .spawn(move || {
                let conn = match Connection::open(&path) {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e,
                            "opening the checkpoint connection failed; the WAL is checkpointed only at close");
                        return;
                    }
                };
                loop {
                    let last = match stopped.recv_timeout(CHECKPOINT_EVERY) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
                        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => true,
                    };
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(path = %path.display(), error = %e, "WAL checkpoint failed");
                    }
                    passed.store(true, Ordering::Release);
                    if last {
                        return;
                    }
                }
            })
            .map_err(|e| tracing::error!(error = %e, "starting the checkpoint thread failed"))
            .ok();
        Self {
            stop: Some(stop),
            thread,
            tail_due,
        }
    }

    /// Whether a pass has ended since the last call: the writer's cue to copy the tail.
    fn take_tail(&self) -> bool {
        self.tail_due.swap(false, Ordering::Acquire)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the event store's checkpoint thread panicked");
        }
    }
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

/// Applies every migration the file lacks, each with its version row, in one immediate
/// transaction (so two processes opening a new file at once cannot both apply them).
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_err("beginning the migration of", path))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version    INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL  -- unix ms
        );",
    )
    .map_err(sqlite_err("creating the schema_version table in", path))?;
    let found = schema_version(&tx, path)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
            hint: "it was written by a newer hookwall; run that, or point store.path elsewhere",
        });
    }
    for (version, sql) in (1_i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.execute_batch(sql)
            .map_err(sqlite_err("applying a schema migration to", path))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, unix_ms(SystemTime::now())],
        )
        .map_err(sqlite_err("recording a schema migration in", path))?;
    }
    tx.commit()
        .map_err(sqlite_err("committing the migration of", path))
}

/// The highest applied migration; 0 for a new file.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )
    .map_err(sqlite_err("reading the schema version of", path))
}

/// The identity of the open database file, to notice it being deleted, moved or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn from_meta(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Checks that `path` still names the file the writer has open.
fn check_file(path: &Path, opened: FileId) -> Result<(), StoreError> {
    let detail = match fs::metadata(path) {
        Ok(meta) if FileId::from_meta(&meta) == opened => return Ok(()),
        Ok(_) => "the path now names another file".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(StoreError::Moved {
        path: path.to_path_buf(),
        detail,
    })
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
/// insert had committed, and a purge only deletes `delivered` rows, which inserts never create.
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

/// State shared by all handles; dropping the last one joins the writer.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    commits: Arc<AtomicU64>,
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
    fn spawn(path: &Path, conn: Connection, file: FileId) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_CAP);
        let commits = Arc::new(AtomicU64::new(0));
        let inserted = Arc::new(watch::Sender::new(0));
        let writer = Writer {
            conn,
            path: path.to_path_buf(),
            file,
            commits: Arc::clone(&commits),
            inserted: Arc::clone(&inserted),
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

    /// Deletes `delivered` events with `delivered_at < before_ms`; returns how many. Pending and
    /// dead events are never deleted. Works in chunks of at most [`PURGE_CHUNK`] rows, each
    /// group-committed with the inserts queued beside it, so a large purge never stalls them.
    ///
    /// # Errors
    /// A chunk failed (the chunks before it stay deleted; purging again is safe), or the store
    /// is closed.
    pub async fn purge_delivered(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            let purge = PendingPurge {
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
}

impl Writer {
    /// Serves batches until every handle is gone or `Close` has been received and the queue
    /// drained (after `close()` the channel still yields what was queued, then `None`).
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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
                batch.answer(done);
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "event store batch failed");
                batch.fail(&e);
            }
        }
    }

    /// Applies the whole batch in one transaction. Any error abandons the transaction (rolled
    /// back when dropped) and fails the batch: after some errors (I/O, disk full) SQLite has
    /// already rolled back, so carrying on would report rows that are not there.
    fn commit(&mut self, batch: &Batch) -> Result<Done, StoreError> {
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
            .map(|pending| purge_chunk(&tx, pending.before_ms, pending.limit))
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

/// Applies delivery-state changes to rows still `pending`; returns how many rows changed.
fn apply_updates(conn: &Connection, updates: &[Update]) -> rusqlite::Result<u64> {
    let mut changed = 0;
    for update in updates {
        let rows = match update {
            Update::Delivered {
                id,
                attempts,
                at_ms,
            } => conn
                .prepare_cached(
                    "UPDATE events SET state = 'delivered', attempts = ?2, delivered_at = ?3,
                        next_attempt_at = NULL
                    WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, attempts, at_ms])?,
            Update::Retry {
                id,
                attempts,
                next_at_ms,
                error,
            } => conn
                .prepare_cached(
                    "UPDATE events SET attempts = ?2, next_attempt_at = ?3, last_error = ?4
                    WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, attempts, next_at_ms, error])?,
            Update::Dead {
                id,
                attempts,
                error,
            } => conn
                .prepare_cached(
                    "UPDATE events SET state = 'dead', attempts = ?2, last_error = ?3,
                        next_attempt_at = NULL
                    WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, attempts, error])?,
        };
        changed += rows as u64;
    }
    Ok(changed)
}

/// Deletes at most `limit` delivered events delivered before `before_ms`; returns how many.
fn purge_chunk(conn: &Connection, before_ms: i64, limit: u32) -> rusqlite::Result<u64> {
    let deleted = conn
        .prepare_cached(PURGE_SQL)?
        .execute(params![before_ms, limit])?;
    Ok(deleted as u64)
}

/// Inserts one row, or finds the row already stored under its (route, event id).
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
        .query_row(params![row.route, row.event_id], |r| r.get(0))?;
    Ok(Inserted::Duplicate { id })
}

/// A read-only connection to the store (or [`Admin`]'s read-write one, for reading). Its methods
/// block (a short SQLite read); from async code on a hot path, call them through
/// `spawn_blocking`.
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Reader {
    /// Opens an existing store read-only, e.g. to inspect it from a command while the daemon runs.
    ///
    /// # Errors
    /// The file cannot be opened or its schema is not this build's.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), BUSY_TIMEOUT)
    }

    fn open_with(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(sqlite_err("opening read-only", path))?;
        conn.busy_timeout(busy_timeout)
            .map_err(sqlite_err("setting the busy timeout of", path))?;
        Self::with_conn(path, conn)
    }

    /// Wraps an open connection, once its schema is this build's.
    fn with_conn(path: &Path, conn: Connection) -> Result<Self, StoreError> {
        let found = schema_version(&conn, path)?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
                hint: "open it with the matching hookwall (`hookwall run` migrates older files)",
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// Pending events with `next_attempt_at <= now_ms`, oldest due first, at most `limit`.
    ///
    /// # Errors
    /// The read failed or a row is malformed.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let raws = self
            .conn()
            .prepare_cached(&due_sql())
            .and_then(|mut stmt| {
                stmt.query_map(params![now_ms, limit], RawEvent::read)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sqlite_err("reading the due events from", &self.path))?;
        raws.into_iter().map(|raw| raw.decode(&self.path)).collect()
    }

    /// The earliest `next_attempt_at` later than `after_ms` among pending events (`i64::MIN`:
    /// the earliest of all); `None` when there is none.
    ///
    /// # Errors
    /// The read failed.
    pub fn next_due_after(&self, after_ms: i64) -> Result<Option<i64>, StoreError> {
        self.conn()
            .prepare_cached(NEXT_DUE_AFTER_SQL)
            .and_then(|mut stmt| stmt.query_row([after_ms], |r| r.get(0)).optional())
            .map_err(sqlite_err("reading the next due time from", &self.path))
    }

    /// How many events are in each state.
    ///
    /// # Errors
    /// The read failed or a row has an unknown state.
    pub fn counts(&self) -> Result<QueueCounts, StoreError> {
        let rows: Vec<(String, i64)> = self
            .conn()
            .prepare_cached(COUNTS_SQL)
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(sqlite_err("counting the events by state in", &self.path))?;
        let mut counts = QueueCounts::default();
        for (state, n) in rows {
            // COUNT(*) is never negative.
            let n = u64::try_from(n).unwrap_or(0);
            match EventState::parse(&state) {
                Some(EventState::Pending) => counts.pending = n,
                Some(EventState::Delivered) => counts.delivered = n,
                Some(EventState::Dead) => counts.dead = n,
                // The CHECK constraint makes this unreachable short of a damaged file.
                None => {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        id: 0,
                        detail: format!("{n} rows have the unknown state {state:?}"),
                    });
                }
            }
        }
        Ok(counts)
    }

    /// When the oldest pending event arrived, unix ms; `None` when nothing is pending.
    ///
    /// # Errors
    /// The read failed.
    pub fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        self.conn()
            .prepare_cached(OLDEST_PENDING_SQL)
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)).optional())
            .map_err(sqlite_err(
                "reading the oldest pending event from",
                &self.path,
            ))
    }

    /// Events newest first (by row id), without bodies: those in `state` (all when `None`),
    /// with ids below `before_id` when given (the last id of the previous page), at most `limit`.
    ///
    /// # Errors
    /// The read failed or a row is malformed.
    pub fn list(
        &self,
        state: Option<EventState>,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // NULL parameters switch a filter off, so one cached statement serves every call.
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM events
            WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR id < ?2)
            ORDER BY id DESC LIMIT ?3"
        );
        let raws = self
            .conn()
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![state.map(EventState::as_str), before_id, limit],
                    RawSummary::read,
                )?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sqlite_err("listing the events in", &self.path))?;
        raws.into_iter().map(|raw| raw.decode(&self.path)).collect()
    }

    /// The event with this row id.
    ///
    /// # Errors
    /// The read failed or the row is malformed.
    pub fn get(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        self.query_event("id = ?1", params![id])
    }

    /// The event stored for this (route, event id).
    ///
    /// # Errors
    /// The read failed or the row is malformed.
    pub fn find(&self, route: &str, event_id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.query_event("route = ?1 AND event_id = ?2", params![route, event_id])
    }

    /// How many events are stored, in any state.
    ///
    /// # Errors
    /// The read failed.
    pub fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .map_err(sqlite_err("counting the events in", &self.path))?;
        // COUNT(*) is never negative.
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while reading leaves the connection usable: each query is its own transaction.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn query_event(
        &self,
        filter: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE {filter}");
        let raw = self
            .conn()
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row(params, RawEvent::read).optional())
            .map_err(sqlite_err("reading an event from", &self.path))?;
        raw.map(|raw| raw.decode(&self.path)).transpose()
    }
}

/// A read-write connection for `hookwall queue`, a process beside the running daemon.
///
/// It opens an existing store only (never creates or migrates one: that is the daemon's job, and
/// a typo in `-c` must not leave an empty database behind), waits for the daemon's writer lock
/// up to the same busy timeout the writer waits for it, and does each write in one immediate
/// transaction, kept short so the daemon's inserts behind it wait only briefly.
#[derive(Debug)]
pub struct Admin {
    // Reads and writes share the one connection: a CLI command does one thing at a time.
    reader: Reader,
}

impl Admin {
    /// Opens the store at `path` read-write. Blocking.
    ///
    /// # Errors
    /// The file does not exist ([`StoreError::Missing`]), cannot be opened, or its schema is not
    /// this build's.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), BUSY_TIMEOUT)
    }

    fn open_with(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        // SQLite would say only "unable to open database file"; say which file and where it is
        // configured. Without SQLITE_OPEN_CREATE it still refuses a file deleted in between.
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => {
                return Err(StoreError::Missing {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => {
                return Err(StoreError::Create {
                    what: "(checking the existence of) the database file",
                    path: path.to_path_buf(),
                    source: Arc::new(e),
                });
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(sqlite_err("opening read-write", path))?;
        conn.busy_timeout(busy_timeout)
            .map_err(sqlite_err("setting the busy timeout of", path))?;
        // The journal mode is stored in the file (the daemon set WAL); synchronous is not.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_err("setting synchronous=FULL on", path))?;
        Ok(Self {
            reader: Reader::with_conn(path, conn)?,
        })
    }

    /// The read side, on the same connection.
    #[must_use]
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Puts dead letters back in the queue: `dead` -> `pending`, attempts 0, due at `now_ms`,
    /// last error kept (it says why it died). Returns, per id in order, what happened; ids that
    /// are not dead are left alone. One transaction.
    ///
    /// # Errors
    /// The transaction failed (nothing is changed) or a row has an unknown state.
    pub fn retry(&self, ids: &[i64], now_ms: i64) -> Result<Vec<(i64, RetryOutcome)>, StoreError> {
        let path = &self.reader.path;
        let mut conn = self.reader.conn();
        let tx = begin_immediate(&mut conn, path)?;
        let mut outcomes = Vec::with_capacity(ids.len());
        for &id in ids {
            let changed = tx
                .prepare_cached(
                    "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = ?2
                    WHERE id = ?1 AND state = 'dead'",
                )
                .and_then(|mut stmt| stmt.execute(params![id, now_ms]))
                .map_err(sqlite_err("requeueing a dead event in", path))?;
            let outcome = if changed > 0 {
                RetryOutcome::Requeued
            } else {
                let state: Option<String> = tx
                    .prepare_cached("SELECT state FROM events WHERE id = ?1")
                    .and_then(|mut stmt| stmt.query_row(params![id], |r| r.get(0)).optional())
                    .map_err(sqlite_err("reading the state of an event in", path))?;
                match state {
                    None => RetryOutcome::NotFound,
                    Some(state) => {
                        RetryOutcome::NotDead(EventState::parse(&state).ok_or_else(|| {
                            StoreError::Corrupt {
                                path: path.clone(),
                                id,
                                detail: format!("unknown state {state:?}"),
                            }
                        })?)
                    }
                }
            };
            outcomes.push((id, outcome));
        }
        tx.commit()
            .map_err(sqlite_err("committing the requeue to", path))?;
        Ok(outcomes)
    }

    /// Puts every dead letter back in the queue (as [`Admin::retry`] does); returns how many.
    ///
    /// # Errors
    /// The transaction failed (nothing is changed).
    pub fn retry_all_dead(&self, now_ms: i64) -> Result<u64, StoreError> {
        let path = &self.reader.path;
        let mut conn = self.reader.conn();
        let tx = begin_immediate(&mut conn, path)?;
        let changed = tx
            .execute(
                "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = ?1
                WHERE state = 'dead'",
                params![now_ms],
            )
            .map_err(sqlite_err("requeueing the dead events in", path))?;
        tx.commit()
            .map_err(sqlite_err("committing the requeue to", path))?;
        Ok(changed as u64)
    }

    /// Deletes `delivered` events with `delivered_at < before_ms`; returns how many. Pending and
    /// dead events are never deleted. One transaction per [`PURGE_CHUNK`] rows, so the daemon's
    /// writer never waits on this longer than one chunk (it gives up after its busy timeout).
    ///
    /// # Errors
    /// A chunk failed (the chunks before it stay deleted; purging again is safe).
    pub fn purge_delivered(&self, before_ms: i64) -> Result<u64, StoreError> {
        let path = &self.reader.path;
        let mut total = 0;
        loop {
            let mut conn = self.reader.conn();
            let tx = begin_immediate(&mut conn, path)?;
            let deleted = purge_chunk(&tx, before_ms, PURGE_CHUNK)
                .map_err(sqlite_err("purging delivered events from", path))?;
            tx.commit()
                .map_err(sqlite_err("committing the purge to", path))?;
            total += deleted;
            if deleted < u64::from(PURGE_CHUNK) {
                return Ok(total);
            }
        }
    }
}

/// Begins an immediate transaction: the write lock is taken (or waited for, up to the busy
/// timeout) up front, not half-way through.
fn begin_immediate<'c>(
    conn: &'c mut Connection,
    path: &Path,
) -> Result<rusqlite::Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_err("beginning a transaction in", path))
}

/// A summary row as SQLite returns it, before the state is checked.
struct RawSummary {
    id: i64,
    route: String,
    event_id: String,
    kind: String,
    received_at_ms: i64,
    state: String,
    attempts: i64,
    next_attempt_at_ms: Option<i64>,
    last_error: Option<String>,
    delivered_at_ms: Option<i64>,
}

impl RawSummary {
    /// Reads the columns in [`SUMMARY_COLUMNS`] order.
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            route: r.get(1)?,
            event_id: r.get(2)?,
            kind: r.get(3)?,
            received_at_ms: r.get(4)?,
            state: r.get(5)?,
            attempts: r.get(6)?,
            next_attempt_at_ms: r.get(7)?,
            last_error: r.get(8)?,
            delivered_at_ms: r.get(9)?,
        })
    }

    fn decode(self, path: &Path) -> Result<EventSummary, StoreError> {
        let (state, attempts) = decode_state(path, self.id, &self.state, self.attempts)?;
        Ok(EventSummary {
            id: self.id,
            route: self.route,
            event_id: self.event_id,
            kind: self.kind,
            received_at_ms: self.received_at_ms,
            state,
            attempts,
            next_attempt_at_ms: self.next_attempt_at_ms,
            last_error: self.last_error,
            delivered_at_ms: self.delivered_at_ms,
        })
    }
}

/// Checks a row's state and attempt count.
fn decode_state(
    path: &Path,
    id: i64,
    state: &str,
    attempts: i64,
) -> Result<(EventState, u32), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        id,
        detail,
    };
    let parsed =
        EventState::parse(state).ok_or_else(|| corrupt(format!("unknown state {state:?}")))?;
    let attempts = u32::try_from(attempts)
        .map_err(|_| corrupt(format!("attempts out of range: {attempts}")))?;
    Ok((parsed, attempts))
}

/// A row as SQLite returns it, before the JSON and the state are checked: a summary row and
/// what only a whole event has.
struct RawEvent {
    summary: RawSummary,
    body: Vec<u8>,
    body_sha256: String,
    headers: String,
}

impl RawEvent {
    /// Reads the columns in [`EVENT_COLUMNS`] order.
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            summary: RawSummary::read(r)?,
            body: r.get(10)?,
            body_sha256: r.get(11)?,
            headers: r.get(12)?,
        })
    }

    fn decode(self, path: &Path) -> Result<StoredEvent, StoreError> {
        let id = self.summary.id;
        let headers = serde_json::from_str(&self.headers).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            id,
            detail: format!("headers are not a list of pairs: {e}"),
        })?;
        let s = self.summary.decode(path)?;
        Ok(StoredEvent {
            id: s.id,
            route: s.route,
            event_id: s.event_id,
            kind: s.kind,
            received_at_ms: s.received_at_ms,
            body: self.body,
            body_sha256: self.body_sha256,
            headers,
            state: s.state,
            attempts: s.attempts,
            next_attempt_at_ms: s.next_attempt_at_ms,
            last_error: s.last_error,
            delivered_at_ms: s.delivered_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        os::unix::fs::PermissionsExt as _,
        pin::Pin,
        task::{Context, Poll, Waker},
    };

    use rusqlite::types::Value;
    use tokio::task::{JoinSet, Unconstrained, unconstrained};

    use super::*;

    fn event(route: &str, event_id: &str) -> NewEvent {
        NewEvent {
            route: route.to_owned(),
            event_id: event_id.to_owned(),
            kind: "test".to_owned(),
            received_at_ms: 1_700_000_000_000,
            body: HashedBody::new(format!("{{\"id\":\"{event_id}\"}}").into_bytes()),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        }
    }

    fn db_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("events.db")
    }

    /// Runs `n` inserts at once, each from its own task, and returns their results.
    async fn insert_concurrently(
        handle: &StoreHandle,
        n: usize,
        prefix: &str,
    ) -> Vec<Result<Inserted, StoreError>> {
        let mut tasks = JoinSet::new();
        for i in 0..n {
            let handle = handle.clone();
            let event_id = format!("{prefix}-{i}");
            tasks.spawn(async move { handle.insert(event("/r", &event_id)).await });
        }
        tasks.join_all().await
    }

    #[test]
    fn open_creates_private_dirs_and_file_with_wal_and_full_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/events.db");
        let store = Store::open(&path).expect("open");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(mode(&path), 0o600);
        drop(store);

        // The same settings on a fresh writer connection, as the writer thread gets them.
        let conn = open_writer(&path, BUSY_TIMEOUT).expect("writer");
        let pragma = |name: &str| -> Value {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .expect(name)
        };
        assert_eq!(pragma("journal_mode"), Value::Text("wal".to_owned()));
        assert_eq!(pragma("synchronous"), Value::Integer(2), "2 is FULL");
        assert_eq!(pragma("busy_timeout"), Value::Integer(2000));
    }

    #[test]
    fn open_error_names_the_step_and_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"").expect("write");
        let path = blocker.join("events.db");
        let err = Store::open(&path).expect_err("a file where the directory should be");
        assert!(
            matches!(&err, StoreError::Create { what: "the directory", path: p, .. } if *p == blocker),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("creating the directory"), "{msg}");
        assert!(msg.contains(&blocker.display().to_string()), "{msg}");
    }

    /// The WAL header's checkpoint sequence number, which SQLite raises each time the WAL
    /// starts again from its beginning; `None` before the WAL has a header.
    fn wal_restarts(db: &Path) -> Option<u32> {
        use std::io::Read as _;
        let mut header = [0u8; 16];
        fs::File::open(format!("{}-wal", db.display()))
            .and_then(|mut f| f.read_exact(&mut header))
            .ok()?;
        Some(u32::from_be_bytes([
            header[12], header[13], header[14], header[15],
        ]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_load_the_wal_keeps_starting_again_from_its_beginning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open(&path).expect("open");
        // Small commits back to back, as at a steady request rate: the writer is appending
        // whenever the checkpointer's pass runs.
        let load = CHECKPOINT_EVERY * 8;
        let until = std::time::Instant::now() + load;
        let mut tasks = JoinSet::new();
        for t in 0..4 {
            let handle = store.handle();
            tasks.spawn(async move {
                let mut n = 0u64;
                while std::time::Instant::now() < until {
                    handle
                        .insert(event("/hooks/sw", &format!("msg_{t}_{n}")))
                        .await
                        .expect("insert");
                    n += 1;
                }
                n
            });
        }
        let (mut first, mut last) = (None, None);
        while std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let seen = wal_restarts(&path);
            first = first.or(seen);
            last = seen.or(last);
        }
        let mut inserted = 0;
        while let Some(n) = tasks.join_next().await {
            inserted += n.expect("insert task");
        }
        let restarts = last.unwrap_or(0) - first.unwrap_or(0);
        // Eight passes (half of them leave room for a slow machine). Without the writer copying
        // the tail, the WAL starts again only when a pass happens to fall between two commits.
        assert!(
            restarts >= 4,
            "the WAL started again {restarts} times in {load:?} of steady commits \
             ({inserted} inserts, {} commits)",
            store.commits()
        );
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn insert_then_reopen_shows_the_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open(&path).expect("open");
        let mut new = event("/hooks/stripe", "evt_1");
        new.body = HashedBody::new(b"abc".to_vec());
        new.headers
            .push(("webhook-id".to_owned(), "msg_1".to_owned()));
        let inserted = store.handle().insert(new.clone()).await.expect("insert");
        let Inserted::New { id } = inserted else {
            panic!("first insert reported {inserted:?}");
        };
        store.close().await.expect("close");

        let store = Store::open(&path).expect("reopen");
        let stored = store.get(id).expect("get").expect("event after reopen");
        let expected = StoredEvent {
            id,
            route: new.route,
            event_id: new.event_id,
            kind: new.kind,
            received_at_ms: new.received_at_ms,
            body: b"abc".to_vec(),
            body_sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                .to_owned(),
            headers: new.headers,
            state: EventState::Pending,
            attempts: 0,
            next_attempt_at_ms: Some(new.received_at_ms),
            last_error: None,
            delivered_at_ms: None,
        };
        assert_eq!(stored, expected);
        assert_eq!(
            store.find("/hooks/stripe", "evt_1").expect("find"),
            Some(expected)
        );
        assert_eq!(store.find("/hooks/stripe", "evt_2").expect("find"), None);
        assert_eq!(store.get(id + 1).expect("get"), None);
        assert_eq!(store.count().expect("count"), 1);
    }

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
        assert_eq!(second, Inserted::Duplicate { id: first.id() });
        assert_eq!(store.count().expect("count"), 1);
        let stored = store.get(first.id()).expect("get").expect("stored");
        assert_eq!(
            stored.body,
            event("/r", "e1").body.bytes(),
            "the first delivery is kept"
        );

        // The key is (route, event id): the same id on another route is another event.
        let other = handle.insert(event("/other", "e1")).await.expect("other");
        assert!(
            matches!(other, Inserted::New { id } if id != first.id()),
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

    #[tokio::test]
    async fn committed_frames_reach_the_database_file_without_waiting_for_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open(&path).expect("open");
        let handle = store.handle();
        let before = fs::metadata(&path).expect("stat").len();
        // About 2 MiB of events: with automatic checkpoints off on the writer, only the
        // checkpoint thread moves them from the WAL into the database file before close.
        for n in 0..256 {
            let mut e = event("/r", &format!("big-{n}"));
            e.body = HashedBody::new(vec![b'x'; 8192]);
            handle.insert(e).await.expect("insert");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = fs::metadata(&path).expect("stat").len();
            if now >= before + 2 * 1024 * 1024 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {now} bytes (was {before}): no checkpoint ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(handle);
        drop(store);
        assert!(
            !dir.path().join("events.db-wal").exists(),
            "closing removes the WAL"
        );
    }

    /// A purge command for the batching tests (its reply is never read).
    fn purge_command() -> Command {
        let (reply, _) = oneshot::channel();
        Command::Purge(PendingPurge {
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
            assert_eq!(stored.id, inserted.id(), "{event_id}");
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
        let ids: HashSet<i64> = done.iter().map(|(_, r)| r.id()).collect();
        assert_eq!(ids.len(), inserts, "every insert got its own row");
        for (event_id, inserted) in &done {
            assert!(
                matches!(inserted, Inserted::New { .. }),
                "{event_id}: {inserted:?}"
            );
            let stored = store.find("/r", event_id).expect("find");
            assert_eq!(stored.map(|e| e.id), Some(inserted.id()), "{event_id}");
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

    #[test]
    fn schema_is_migrated_once_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        drop(Store::open(&path).expect("first open"));
        drop(Store::open(&path).expect("second open"));
        let raw = Connection::open(&path).expect("raw");
        let versions: Vec<i64> = raw
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());

        raw.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (99, 0)",
            [],
        )
        .expect("bump");
        drop(raw);
        let err = Store::open(&path).expect_err("newer schema");
        assert!(
            matches!(
                err,
                StoreError::SchemaVersion {
                    found: 99,
                    known: SCHEMA_VERSION,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let err = Reader::open(&path).expect_err("reader refuses it too");
        assert!(
            matches!(err, StoreError::SchemaVersion { found: 99, .. }),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn removed_directory_fails_every_waiting_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("store");
        let store = Store::open(sub.join("events.db")).expect("open");
        let handle = store.handle();
        handle
            .insert(event("/r", "before"))
            .await
            .expect("insert before");

        // SQLite would happily go on committing into the unlinked file; the store must not.
        fs::remove_dir_all(&sub).expect("remove the store's directory");
        let results = insert_concurrently(&handle, 100, "after").await;
        assert_eq!(results.len(), 100);
        for result in results {
            assert!(
                matches!(result, Err(StoreError::Moved { .. })),
                "{result:?}"
            );
        }
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

    // ---- Delivery state (issue 4) ----

    /// Inserts `event_ids` on route `/r` with received_at = 1000 * (index + 1); returns row ids.
    async fn insert_at(handle: &StoreHandle, event_ids: &[&str]) -> Vec<i64> {
        let mut ids = Vec::new();
        for (n, event_id) in (1_i64..).zip(event_ids) {
            let mut new = event("/r", event_id);
            new.received_at_ms = 1_000 * n;
            let inserted = handle.insert(new).await.expect("insert");
            assert!(matches!(inserted, Inserted::New { .. }), "{inserted:?}");
            ids.push(inserted.id());
        }
        ids
    }

    fn state_of(reader: &Reader, id: i64) -> StoredEvent {
        reader.get(id).expect("get").expect("row")
    }

    #[tokio::test]
    async fn v1_file_is_migrated_to_v2_with_rows_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        {
            // A file as the first release left it: the v1 schema, version 1, one row.
            let raw = Connection::open(&path).expect("raw");
            raw.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,
                    applied_at INTEGER NOT NULL);
                INSERT INTO schema_version (version, applied_at) VALUES (1, 0);",
            )
            .expect("version table");
            raw.execute_batch(MIGRATIONS[0]).expect("v1 schema");
            raw.execute(
                "INSERT INTO events (route, event_id, kind, received_at, body, body_sha256,
                    headers, state, attempts, next_attempt_at)
                VALUES ('/r', 'old', 'test', 5, x'6869', 'abc', '[]', 'pending', 0, 5)",
                [],
            )
            .expect("v1 row");
        }
        let err = Admin::open(&path).expect_err("admin does not migrate");
        assert!(
            matches!(err, StoreError::SchemaVersion { found: 1, .. }),
            "{err:?}"
        );

        let store = Store::open(&path).expect("open migrates");
        let old = store.find("/r", "old").expect("find").expect("row kept");
        assert_eq!(
            (old.body.as_slice(), old.state, old.next_attempt_at_ms),
            (&b"hi"[..], EventState::Pending, Some(5))
        );
        assert_eq!(store.reader().oldest_pending_ms().expect("oldest"), Some(5));
        drop(store);
        let raw = Connection::open(&path).expect("raw");
        let versions: Vec<i64> = raw
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(versions, vec![1, 2]);
        assert_eq!(SCHEMA_VERSION, 2);
        let indexes: Vec<String> = raw
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'events_%' ORDER BY name")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(indexes, ["events_delivered", "events_due", "events_state"]);
    }

    #[tokio::test]
    async fn updates_change_only_pending_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let ids = insert_at(&handle, &["a", "b", "c"]).await;
        let (a, b, c) = (ids[0], ids[1], ids[2]);

        let changed = handle
            .update(vec![
                Update::Delivered {
                    id: a,
                    attempts: 1,
                    at_ms: 10_000,
                },
                Update::Retry {
                    id: b,
                    attempts: 2,
                    next_at_ms: 20_000,
                    error: "HTTP 503".to_owned(),
                },
                Update::Dead {
                    id: c,
                    attempts: 3,
                    error: "HTTP 400".to_owned(),
                },
                Update::Delivered {
                    id: 999,
                    attempts: 1,
                    at_ms: 1,
                },
            ])
            .await
            .expect("update");
        assert_eq!(changed, 3, "the missing id changes nothing");

        let reader = store.reader();
        let a_row = state_of(reader, a);
        assert_eq!(
            (
                a_row.state,
                a_row.attempts,
                a_row.delivered_at_ms,
                a_row.next_attempt_at_ms
            ),
            (EventState::Delivered, 1, Some(10_000), None)
        );
        let b_row = state_of(reader, b);
        assert_eq!(
            (
                b_row.state,
                b_row.attempts,
                b_row.next_attempt_at_ms,
                b_row.last_error.as_deref()
            ),
            (EventState::Pending, 2, Some(20_000), Some("HTTP 503"))
        );
        let c_row = state_of(reader, c);
        assert_eq!(
            (
                c_row.state,
                c_row.attempts,
                c_row.next_attempt_at_ms,
                c_row.last_error.as_deref(),
                c_row.delivered_at_ms
            ),
            (EventState::Dead, 3, None, Some("HTTP 400"), None)
        );

        // Late results for rows no longer pending change nothing, in any direction.
        let changed = handle
            .update(vec![
                Update::Retry {
                    id: a,
                    attempts: 9,
                    next_at_ms: 1,
                    error: "late".to_owned(),
                },
                Update::Delivered {
                    id: c,
                    attempts: 9,
                    at_ms: 1,
                },
                Update::Dead {
                    id: a,
                    attempts: 9,
                    error: "late".to_owned(),
                },
            ])
            .await
            .expect("late update");
        assert_eq!(changed, 0);
        assert_eq!(state_of(reader, a), a_row);
        assert_eq!(state_of(reader, c), c_row);
        assert_eq!(handle.update(Vec::new()).await.expect("empty"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_inserts_and_updates_share_commits() {
        const N: usize = 300;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let existing: Vec<i64> = insert_concurrently(&handle, N, "old")
            .await
            .into_iter()
            .map(|r| r.expect("insert").id())
            .collect();
        let before = store.commits();

        let mut tasks = JoinSet::new();
        for (i, id) in existing.into_iter().enumerate() {
            let handle = handle.clone();
            tasks.spawn(async move {
                let delivered = Update::Delivered {
                    id,
                    attempts: 1,
                    at_ms: 7,
                };
                let changed = handle.update(vec![delivered]).await.expect("update");
                let inserted = handle
                    .insert(event("/r", &format!("new-{i}")))
                    .await
                    .expect("insert");
                (changed, inserted)
            });
        }
        let results = tasks.join_all().await;
        assert!(
            results.iter().all(
                |(changed, inserted)| *changed == 1 && matches!(inserted, Inserted::New { .. })
            ),
            "{results:?}"
        );
        let counts = store.reader().counts().expect("counts");
        assert_eq!(
            counts,
            QueueCounts {
                pending: N as u64,
                delivered: N as u64,
                dead: 0
            }
        );
        let commits = store.commits() - before;
        eprintln!("group commit: {N} updates + {N} inserts in {commits} commits");
        assert!(
            commits < N as u64,
            "{commits} commits for {} requests: not grouped",
            2 * N
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_batch_fails_its_updates_and_purges_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open_with(&path, Duration::from_millis(100)).expect("open");
        let handle = store.handle();
        let id = handle.insert(event("/r", "a")).await.expect("insert").id();

        let locker = Connection::open(&path).expect("second connection");
        locker.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let delivered = Update::Delivered {
            id,
            attempts: 1,
            at_ms: 1,
        };
        let update = handle.update(vec![delivered.clone()]).await;
        assert!(
            matches!(update, Err(StoreError::Sqlite { .. })),
            "{update:?}"
        );
        let purge = handle.purge_delivered(i64::MAX).await;
        assert!(matches!(purge, Err(StoreError::Sqlite { .. })), "{purge:?}");
        locker.execute_batch("ROLLBACK").expect("unlock");

        assert_eq!(state_of(store.reader(), id).state, EventState::Pending);
        assert_eq!(handle.update(vec![delivered]).await.expect("retry"), 1);
    }

    #[tokio::test]
    async fn inserted_is_bumped_by_new_events_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let mut inserted = handle.inserted();
        assert!(!inserted.has_changed().expect("open"));

        let id = handle.insert(event("/r", "a")).await.expect("insert").id();
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

    #[tokio::test]
    async fn due_is_oldest_due_first_and_limited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let reader = store.reader();
        assert_eq!(reader.next_due_after(i64::MIN).expect("next"), None);
        assert_eq!(reader.oldest_pending_ms().expect("oldest"), None);
        assert_eq!(reader.counts().expect("counts"), QueueCounts::default());

        // Received at 1000, 2000, 3000, 4000, 5000: each due at once.
        let ids = insert_at(&handle, &["a", "b", "c", "d", "e"]).await;
        let retry = |id, next_at_ms| Update::Retry {
            id,
            attempts: 1,
            next_at_ms,
            error: "timeout".to_owned(),
        };
        let changed = handle
            .update(vec![
                retry(ids[0], 9_000), // a: due later than the rest
                retry(ids[3], 500),   // d: due first
                Update::Delivered {
                    id: ids[1],
                    attempts: 1,
                    at_ms: 1,
                }, // b: not pending
                Update::Dead {
                    id: ids[4],
                    attempts: 1,
                    error: "400".to_owned(),
                }, // e: not pending
            ])
            .await
            .expect("update");
        assert_eq!(changed, 4);

        let due_ids = |now, limit| -> Vec<i64> {
            reader
                .due(now, limit)
                .expect("due")
                .into_iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(due_ids(10_000, 10), [ids[3], ids[2], ids[0]]);
        assert_eq!(due_ids(10_000, 2), [ids[3], ids[2]]);
        assert_eq!(
            due_ids(3_000, 10),
            [ids[3], ids[2]],
            "c is due at exactly 3000"
        );
        assert_eq!(due_ids(2_999, 10), [ids[3]]);
        assert_eq!(due_ids(499, 10), Vec::<i64>::new());
        assert_eq!(due_ids(10_000, 0), Vec::<i64>::new());
        let first = reader.due(10_000, 1).expect("due");
        assert_eq!(
            first,
            vec![state_of(reader, ids[3])],
            "whole events, bodies included"
        );

        assert_eq!(reader.next_due_after(i64::MIN).expect("next"), Some(500));
        assert_eq!(
            reader.oldest_pending_ms().expect("oldest"),
            Some(1_000),
            "a arrived first and is still pending"
        );
        assert_eq!(
            reader.counts().expect("counts"),
            QueueCounts {
                pending: 3,
                delivered: 1,
                dead: 1
            }
        );
    }

    #[test]
    fn queue_queries_use_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        drop(Store::open(&path).expect("open"));
        let reader = Reader::open(&path).expect("reader");
        let plan = |sql: &str| -> Vec<String> {
            let sql = sql.replace("?2", "10").replace("?1", "0");
            reader
                .conn()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain")
                .query_map([], |r| r.get::<_, String>(3))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        for (sql, index) in [
            (due_sql().as_str(), "events_due"),
            (NEXT_DUE_AFTER_SQL, "events_due"),
            (OLDEST_PENDING_SQL, "events_state"),
            (COUNTS_SQL, "events_state"),
        ] {
            let plan = plan(sql);
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{sql}: {plan:?}"
            );
            assert!(
                plan.iter()
                    .all(|step| !step.contains("TEMP B-TREE") && !step.ends_with("SCAN events")),
                "{sql}: {plan:?}"
            );
        }
        let purge = plan(PURGE_SQL);
        assert!(
            purge.iter().any(|step| step.contains("events_delivered")),
            "{purge:?}"
        );
    }

    #[tokio::test]
    async fn list_is_newest_first_filtered_and_paged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let ids = insert_at(&handle, &["a", "b", "c", "d"]).await;
        let dead = Update::Dead {
            id: ids[1],
            attempts: 4,
            error: "HTTP 400".to_owned(),
        };
        handle.update(vec![dead]).await.expect("update");
        let reader = store.reader();
        let list = |state, limit, before| -> Vec<i64> {
            reader
                .list(state, limit, before)
                .expect("list")
                .into_iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(list(None, 10, None), [ids[3], ids[2], ids[1], ids[0]]);
        assert_eq!(list(None, 2, None), [ids[3], ids[2]]);
        assert_eq!(list(None, 2, Some(ids[2])), [ids[1], ids[0]]);
        assert_eq!(
            list(Some(EventState::Pending), 10, None),
            [ids[3], ids[2], ids[0]]
        );
        assert_eq!(list(Some(EventState::Pending), 10, Some(ids[2])), [ids[0]]);
        assert_eq!(
            list(Some(EventState::Delivered), 10, None),
            Vec::<i64>::new()
        );

        let summary = reader.list(Some(EventState::Dead), 10, None).expect("list");
        assert_eq!(
            summary,
            vec![EventSummary {
                id: ids[1],
                route: "/r".to_owned(),
                event_id: "b".to_owned(),
                kind: "test".to_owned(),
                received_at_ms: 2_000,
                state: EventState::Dead,
                attempts: 4,
                next_attempt_at_ms: None,
                last_error: Some("HTTP 400".to_owned()),
                delivered_at_ms: None,
            }]
        );
        let json = serde_json::to_value(&summary[0]).expect("json");
        assert_eq!(json["state"], "dead");
    }

    #[test]
    fn admin_never_creates_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("typo/events.db");
        let err = Admin::open(&path).expect_err("missing file");
        assert!(
            matches!(&err, StoreError::Missing { path: p } if *p == path),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("store.path"), "{msg}");
        assert!(!path.exists() && !dir.path().join("typo").exists());

        // A newer schema is refused like the reader refuses it.
        let path = db_path(&dir);
        drop(Store::open(&path).expect("open"));
        let raw = Connection::open(&path).expect("raw");
        raw.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (99, 0)",
            [],
        )
        .expect("bump");
        let err = Admin::open(&path).expect_err("newer schema");
        assert!(
            matches!(err, StoreError::SchemaVersion { found: 99, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn admin_retries_and_purges_beside_the_running_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open(&path).expect("open");
        let handle = store.handle();
        let ids = insert_at(&handle, &["dead1", "dead2", "delivered", "pending"]).await;
        handle
            .update(vec![
                Update::Dead {
                    id: ids[0],
                    attempts: 25,
                    error: "HTTP 400".to_owned(),
                },
                Update::Dead {
                    id: ids[1],
                    attempts: 25,
                    error: "HTTP 422".to_owned(),
                },
                Update::Delivered {
                    id: ids[2],
                    attempts: 1,
                    at_ms: 5_000,
                },
            ])
            .await
            .expect("update");

        let admin = Admin::open(&path).expect("admin");
        assert_eq!(
            admin.reader().counts().expect("counts"),
            QueueCounts {
                pending: 1,
                delivered: 1,
                dead: 2
            }
        );
        let outcomes = admin
            .retry(&[ids[0], ids[2], ids[3], 999], 50_000)
            .expect("retry");
        assert_eq!(
            outcomes,
            [
                (ids[0], RetryOutcome::Requeued),
                (ids[2], RetryOutcome::NotDead(EventState::Delivered)),
                (ids[3], RetryOutcome::NotDead(EventState::Pending)),
                (999, RetryOutcome::NotFound),
            ]
        );
        // The daemon's reader sees it at once: pending, due now, attempts reset, reason kept.
        let requeued = state_of(store.reader(), ids[0]);
        assert_eq!(
            (
                requeued.state,
                requeued.attempts,
                requeued.next_attempt_at_ms,
                requeued.last_error.as_deref()
            ),
            (EventState::Pending, 0, Some(50_000), Some("HTTP 400"))
        );
        let due: Vec<i64> = store
            .reader()
            .due(50_000, 10)
            .expect("due")
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            due,
            [ids[3], ids[0]],
            "the pending one (due at 4000), then the requeued"
        );

        // The writer keeps committing while the admin connection is open.
        let more = handle.insert(event("/r", "after")).await.expect("insert");
        assert!(matches!(more, Inserted::New { .. }), "{more:?}");

        assert_eq!(admin.retry_all_dead(60_000).expect("all dead"), 1);
        assert_eq!(admin.retry_all_dead(60_000).expect("none left"), 0);
        assert_eq!(
            state_of(store.reader(), ids[1]).next_attempt_at_ms,
            Some(60_000)
        );

        assert_eq!(
            admin.purge_delivered(5_000).expect("purge"),
            0,
            "at the cutoff: kept"
        );
        assert_eq!(admin.purge_delivered(5_001).expect("purge"), 1);
        assert_eq!(store.reader().get(ids[2]).expect("get"), None);
        assert_eq!(
            admin.purge_delivered(i64::MAX).expect("purge"),
            0,
            "only delivered"
        );
        assert_eq!(
            admin.reader().counts().expect("counts"),
            QueueCounts {
                pending: 4,
                delivered: 0,
                dead: 0
            }
        );
    }

    #[tokio::test]
    async fn purge_deletes_only_delivered_before_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let ids = insert_at(&handle, &["early", "at", "late", "dead", "pending"]).await;
        let delivered = |id, at_ms| Update::Delivered {
            id,
            attempts: 1,
            at_ms,
        };
        handle
            .update(vec![
                delivered(ids[0], 99),
                delivered(ids[1], 100),
                delivered(ids[2], 101),
                Update::Dead {
                    id: ids[3],
                    attempts: 1,
                    error: "HTTP 400".to_owned(),
                },
            ])
            .await
            .expect("update");

        assert_eq!(handle.purge_delivered(100).await.expect("purge"), 1);
        let reader = store.reader();
        assert_eq!(reader.get(ids[0]).expect("get"), None, "before the cutoff");
        for &kept in &ids[1..] {
            assert!(reader.get(kept).expect("get").is_some(), "{kept} kept");
        }
        assert_eq!(handle.purge_delivered(i64::MAX).await.expect("purge"), 2);
        assert_eq!(
            reader.counts().expect("counts"),
            QueueCounts {
                pending: 1,
                delivered: 0,
                dead: 1
            },
            "pending and dead are never purged"
        );
    }

    #[tokio::test]
    async fn purge_works_in_chunks() {
        let rows = u64::from(PURGE_CHUNK) * 2 + 7;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open(&path).expect("open");
        {
            let mut raw = Connection::open(&path).expect("raw");
            let tx = raw.transaction().expect("tx");
            for n in 0..rows {
                tx.execute(
                    "INSERT INTO events (route, event_id, kind, received_at, body, body_sha256,
                        headers, state, attempts, delivered_at)
                    VALUES ('/r', ?1, 'test', 0, x'', '', '[]', 'delivered', 1, 10)",
                    params![format!("e{n}")],
                )
                .expect("row");
            }
            tx.commit().expect("commit");
        }
        let handle = store.handle();
        let before = store.commits();
        assert_eq!(handle.purge_delivered(11).await.expect("purge"), rows);
        assert_eq!(store.commits() - before, 3, "two full chunks and the rest");
        assert_eq!(store.count().expect("count"), 0);
    }

    // The SIGKILL crash tests live in tests/tests/store_crash.rs: they run a child binary
    // (tests/src/bin/store_crash_child.rs) that inserts and acknowledges until it is killed.

    #[test]
    fn unix_ms_saturates_and_goes_negative_before_1970() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_millis(5)), -5);
    }
}
