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
//! - **The file stays the file.** After each commit the writer checks that `store.path` still
//!   names the file it has open: SQLite keeps committing into a deleted or moved file, and what
//!   it commits there is gone at the next start, so such a batch is failed, not acknowledged.
//! - **Duplicates.** `UNIQUE (route, event_id)`: a second delivery of the same event is answered
//!   [`Inserted::Duplicate`] with the first row's id and is not stored again.
//! - **Delivery (issue 4).** Each row carries its delivery state (`pending`, `delivered`, `dead`),
//!   attempt count, next attempt time and last error, and a partial index finds due events. Only
//!   inserting (as `pending`, due at once) and simple reads are implemented here.
//! - **Reads** go through a separate read-only connection ([`Reader`]); WAL lets them run while
//!   the writer commits.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Most inserts committed by one transaction. Bounds the time the first request of a batch waits
/// for the others and the size of one WAL append; at 256 the fsync is already amortised ~256 ways.
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
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Inserts one event, as `pending` and due at once; on a duplicate key it inserts nothing and
/// returns no row (the `RETURNING` clause only reports inserted rows).
const INSERT_SQL: &str = "INSERT INTO events
        (route, event_id, kind, received_at, body, body_sha256, headers,
         state, attempts, next_attempt_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?4)
    ON CONFLICT (route, event_id) DO NOTHING
    RETURNING id";

/// The columns [`StoredEvent`] is read from, in the order `read_event` expects.
const EVENT_COLUMNS: &str = "id, route, event_id, kind, received_at, body, body_sha256, headers,
    state, attempts, next_attempt_at, last_error, delivered_at";

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A request waiting for the writer, with where its answer goes.
struct Pending {
    row: Row,
    reply: oneshot::Sender<Result<Inserted, StoreError>>,
}

/// What the writer thread is asked to do.
enum Command {
    Insert(Pending),
    /// Stop accepting; finish what is queued; exit.
    Close,
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
        let writer = Writer {
            conn,
            path: path.to_path_buf(),
            file,
            commits: Arc::clone(&commits),
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
        self.tx
            .send(Command::Insert(Pending { row, reply }))
            .await
            .map_err(|_| self.closed())?;
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

    /// Stops accepting inserts (from every handle), commits what is already queued and waits for
    /// the writer thread to exit.
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
}

impl Writer {
    /// Serves batches until every handle is gone or `Close` has been received and the queue
    /// drained (after `close()` the channel still yields what was queued, then `None`).
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(BATCH_CAP);
        while let Some(first) = rx.blocking_recv() {
            take(&mut rx, first, &mut batch);
            while batch.len() < BATCH_CAP {
                match rx.try_recv() {
                    Ok(command) => take(&mut rx, command, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write(&mut batch);
            }
        }
    }

    /// Commits the batch and answers every request in it; empties `batch`.
    fn write(&mut self, batch: &mut Vec<Pending>) {
        let outcome = self
            .commit(batch)
            // After the commit: a file deleted at any time up to now has taken this batch with it.
            .and_then(|inserted| check_file(&self.path, self.file).map(|()| inserted));
        // A failed reply send means the requester gave up waiting; the outcome stands either way.
        match outcome {
            Ok(inserted) => {
                for (pending, result) in batch.drain(..).zip(inserted) {
                    let _ = pending.reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "event store batch failed");
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Inserts the whole batch in one transaction. Any error abandons the transaction (rolled
    /// back when dropped) and fails the batch: after some errors (I/O, disk full) SQLite has
    /// already rolled back, so carrying on would report rows that are not there.
    fn commit(&mut self, batch: &[Pending]) -> Result<Vec<Inserted>, StoreError> {
        let path = &self.path;
        // IMMEDIATE takes the write lock up front, so a lock held by another process shows up
        // here (after the busy timeout) rather than half-way through the batch.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_err("beginning a transaction in", path))?;
        let inserted = batch
            .iter()
            .map(|pending| insert_row(&tx, &pending.row))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite_err("inserting an event into", path))?;
        tx.commit().map_err(sqlite_err("committing to", path))?;
        // Relaxed: readers only need the count, and the reply that follows orders it for them.
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(inserted)
    }
}

/// Files a received command into the batch; `Close` shuts the channel so only what is already
/// queued is still received.
fn take(rx: &mut mpsc::Receiver<Command>, command: Command, batch: &mut Vec<Pending>) {
    match command {
        Command::Insert(pending) => batch.push(pending),
        Command::Close => rx.close(),
    }
}

/// Inserts one row, or finds the row already stored under its (route, event id).
fn insert_row(conn: &Connection, row: &Row) -> rusqlite::Result<Inserted> {
    let new: Option<i64> = conn
        .prepare_cached(INSERT_SQL)?
        .query_row(
            params![
                row.route,
                row.event_id,
                row.kind,
                row.received_at_ms,
                row.body,
                row.body_sha256,
                row.headers_json,
            ],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = new {
        return Ok(Inserted::New { id });
    }
    let id = conn
        .prepare_cached("SELECT id FROM events WHERE route = ?1 AND event_id = ?2")?
        .query_row(params![row.route, row.event_id], |r| r.get(0))?;
    Ok(Inserted::Duplicate { id })
}

/// A read-only connection to the store. Its methods block (a short SQLite read); from async code
/// on a hot path, call them through `spawn_blocking`.
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

/// A row as SQLite returns it, before the JSON and the state are checked.
struct RawEvent {
    id: i64,
    route: String,
    event_id: String,
    kind: String,
    received_at_ms: i64,
    body: Vec<u8>,
    body_sha256: String,
    headers: String,
    state: String,
    attempts: i64,
    next_attempt_at_ms: Option<i64>,
    last_error: Option<String>,
    delivered_at_ms: Option<i64>,
}

impl RawEvent {
    /// Reads the columns in [`EVENT_COLUMNS`] order.
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            route: r.get(1)?,
            event_id: r.get(2)?,
            kind: r.get(3)?,
            received_at_ms: r.get(4)?,
            body: r.get(5)?,
            body_sha256: r.get(6)?,
            headers: r.get(7)?,
            state: r.get(8)?,
            attempts: r.get(9)?,
            next_attempt_at_ms: r.get(10)?,
            last_error: r.get(11)?,
            delivered_at_ms: r.get(12)?,
        })
    }

    fn decode(self, path: &Path) -> Result<StoredEvent, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            id: self.id,
            detail,
        };
        let headers = serde_json::from_str(&self.headers)
            .map_err(|e| corrupt(format!("headers are not a list of pairs: {e}")))?;
        let state = EventState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state {:?}", self.state)))?;
        let attempts = u32::try_from(self.attempts)
            .map_err(|_| corrupt(format!("attempts out of range: {}", self.attempts)))?;
        Ok(StoredEvent {
            id: self.id,
            route: self.route,
            event_id: self.event_id,
            kind: self.kind,
            received_at_ms: self.received_at_ms,
            body: self.body,
            body_sha256: self.body_sha256,
            headers,
            state,
            attempts,
            next_attempt_at_ms: self.next_attempt_at_ms,
            last_error: self.last_error,
            delivered_at_ms: self.delivered_at_ms,
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

    // The SIGKILL crash tests live in tests/tests/store_crash.rs: they run a child binary
    // (tests/src/bin/store_crash_child.rs) that inserts and acknowledges until it is killed.

    #[test]
    fn unix_ms_saturates_and_goes_negative_before_1970() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_millis(5)), -5);
    }
}
