//! Reads: a read-only connection beside the writer; WAL lets it read while the writer commits.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use super::{
    BUSY_TIMEOUT, EventState, EventSummary, StoreError, StoredEvent,
    schema::{SCHEMA_VERSION, schema_version},
    sqlite_err,
};

/// The columns [`EventSummary`] is read from, in the order `RawSummary::read` expects.
pub(super) const SUMMARY_COLUMNS: &str = "id, route, event_id, kind, received_at, state, attempts,
    next_attempt_at, last_error, delivered_at";

/// The columns [`StoredEvent`] is read from: the summary's, then body, digest and headers, in
/// the order `RawEvent::read` expects.
pub(super) const EVENT_COLUMNS: &str = "id, route, event_id, kind, received_at, state, attempts,
    next_attempt_at, last_error, delivered_at, body, body_sha256, headers";

/// A read-only connection to the store (or [`Admin`](super::Admin)'s read-write one, for
/// reading). Its methods block (a short SQLite read); from async code on a hot path, call them
/// through `spawn_blocking`.
#[derive(Debug)]
pub struct Reader {
    pub(super) path: PathBuf,
    conn: Mutex<Connection>,
}

impl Reader {
    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens an existing store read-only, e.g. to inspect it from a command while the daemon runs.
    ///
    /// # Errors
    /// The file cannot be opened or its schema is not this build's.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), BUSY_TIMEOUT)
    }

    pub(super) fn open_with(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(sqlite_err("opening read-only", path))?;
        conn.busy_timeout(busy_timeout)
            .map_err(sqlite_err("setting the busy timeout of", path))?;
        Self::with_conn(path, conn)
    }

    /// Wraps an open connection, once its schema is this build's.
    pub(super) fn with_conn(path: &Path, conn: Connection) -> Result<Self, StoreError> {
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

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
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

/// A summary row as SQLite returns it, before the state is checked.
pub(super) struct RawSummary {
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
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
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

    pub(super) fn decode(self, path: &Path) -> Result<EventSummary, StoreError> {
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
pub(super) struct RawEvent {
    summary: RawSummary,
    body: Vec<u8>,
    body_sha256: String,
    headers: String,
}

impl RawEvent {
    /// Reads the columns in [`EVENT_COLUMNS`] order.
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            summary: RawSummary::read(r)?,
            body: r.get(10)?,
            body_sha256: r.get(11)?,
            headers: r.get(12)?,
        })
    }

    pub(super) fn decode(self, path: &Path) -> Result<StoredEvent, StoreError> {
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
    use super::super::{
        EventState, EventSummary, Store, Update,
        testing::{db_path, insert_at},
    };

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
}
