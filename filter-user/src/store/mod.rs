//! The durable event store: every accepted callback is committed to SQLite before it is answered.
//!
//! The design (WAL with `synchronous = FULL`, group commit, checkpoints off the commit path,
//! delivery states, the dedup key, retention and crash safety) is described in
//! `docs/design/store.md`. In short: one writer thread owns the only read-write connection and
//! commits what is queued in one transaction, answering no request before the commit that holds
//! it has returned; readers use connections of their own.
//!
//! # Layout
//! - this file: the public types, [`StoreError`] and [`Store`], which opens the file and starts
//!   the writer;
//! - `file`: creates the database file privately and durably, and notices it being moved;
//! - `schema`: the migrations and the schema version;
//! - `writer`: [`StoreHandle`] and the group-commit writer thread;
//! - `checkpoint`: the thread that copies committed WAL frames into the database file;
//! - `reader`: [`Reader`], a read-only connection;
//! - `queue`: delivery state: what is due, [`Update`]s, counts, the purge of delivered events;
//! - `admin`: [`Admin`], the read-write connection of `hookwall queue`.

mod admin;
mod checkpoint;
mod file;
mod queue;
mod reader;
mod schema;
#[cfg(test)]
mod testing;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest as _, Sha256};
use thiserror::Error;

use self::{file::create_file, writer::open_writer};

pub use self::{
    admin::{Admin, RetryOutcome},
    queue::{PURGE_CHUNK, QueueCounts, Update},
    reader::Reader,
    schema::SCHEMA_VERSION,
    writer::{BATCH_CAP, StoreHandle, WriterHealth},
};

/// How long SQLite waits for a lock held by another process (e.g. a `hookwall queue` command)
/// before giving up: long enough to ride out a short maintenance transaction, short enough that
/// the provider gets a 503 well before its own timeout (Daraja waits about 8 s).
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The same (route, event id) was stored, delivered and purged after `store.retention`; its
    /// tombstone (kept for `store.dedupe_window`) recognises this replay. Nothing was written.
    Purged,
}

impl Inserted {
    /// The row id, new or existing; `None` for an event purged earlier.
    #[must_use]
    pub fn id(self) -> Option<i64> {
        match self {
            Self::New { id } | Self::Duplicate { id } => Some(id),
            Self::Purged => None,
        }
    }
}

/// Where an event is in its delivery to the application.
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

    /// As [`Store::open`], waiting at most `busy_timeout` for another connection's lock.
    pub(crate) fn open_with(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{
        testing::{db_path, event},
        *,
    };

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

    #[test]
    fn unix_ms_saturates_and_goes_negative_before_1970() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_millis(5)), -5);
    }

    // The SIGKILL crash tests live in tests/tests/store_crash.rs: they run a child binary
    // (tests/src/bin/store_crash_child.rs) that inserts and acknowledges until it is killed.
}
