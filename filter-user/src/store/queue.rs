//! The delivery queue, kept in the events table: each row's delivery state, what is due, the
//! results the delivery worker reports, counts for the gauges, and the purge of delivered events.

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{
    EventState, StoreError, StoredEvent,
    reader::{EVENT_COLUMNS, RawEvent, Reader},
    sqlite_err,
};

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

/// Pending events due by `?1` that come after the position (`?2` due time, `?3` id) in the
/// `events_due` order, oldest due first, at most `?4`: the delivery worker reads a backlog in
/// pages, without reading again the rows it already holds.
fn due_after_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events INDEXED BY events_due
        WHERE state = 'pending' AND next_attempt_at <= ?1
            AND (next_attempt_at, id) > (?2, ?3)
        ORDER BY next_attempt_at, id
        LIMIT ?4"
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

/// Deletes at most `?2` delivered events delivered before `?1` (through `events_delivered`),
/// returning what their tombstones keep.
const PURGE_SQL: &str = "DELETE FROM events WHERE id IN (
    SELECT id FROM events INDEXED BY events_delivered
    WHERE state = 'delivered' AND delivered_at < ?1 LIMIT ?2)
    RETURNING route, event_id, body_sha256, delivered_at";

/// A purged event's tombstone. `OR REPLACE`: the insert never stores a key that has one, so a
/// conflict means a hand-edited file, and the later purge is the one to remember.
const TOMBSTONE_SQL: &str = "INSERT OR REPLACE INTO tombstones
    (route, event_id, body_sha256, delivered_at) VALUES (?1, ?2, ?3, ?4)";

/// Deletes at most `?2` tombstones of events delivered before `?1` (through `tombstones_age`).
const PURGE_TOMBSTONES_SQL: &str = "DELETE FROM tombstones WHERE (route, event_id) IN (
    SELECT route, event_id FROM tombstones INDEXED BY tombstones_age
    WHERE delivered_at < ?1 LIMIT ?2)";

/// Most rows one purge transaction deletes: a few milliseconds of work, so inserts queued behind
/// it (and the daemon's writer, when `hookwall queue purge` holds the lock) wait only briefly.
pub const PURGE_CHUNK: u32 = 5_000;

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

/// Applies delivery-state changes to rows still `pending`; returns how many rows changed.
pub(super) fn apply_updates(conn: &Connection, updates: &[Update]) -> rusqlite::Result<u64> {
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

/// What one purge request deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purge {
    /// Delivered events delivered before the cutoff, each leaving a tombstone.
    Delivered,
    /// Tombstones of events delivered before the cutoff (`store.dedupe_window` has passed).
    Tombstones,
}

/// Deletes at most `limit` rows of `what` from before `before_ms`; returns how many.
pub(super) fn purge_chunk(
    conn: &Connection,
    what: Purge,
    before_ms: i64,
    limit: u32,
) -> rusqlite::Result<u64> {
    match what {
        Purge::Delivered => purge_delivered_chunk(conn, before_ms, limit),
        Purge::Tombstones => {
            let deleted = conn
                .prepare_cached(PURGE_TOMBSTONES_SQL)?
                .execute(params![before_ms, limit])?;
            Ok(deleted as u64)
        }
    }
}

/// Deletes at most `limit` delivered events delivered before `before_ms` and writes their
/// tombstones, in the caller's transaction: a key is never without both its row and its
/// tombstone, so no moment lets a replay through.
fn purge_delivered_chunk(conn: &Connection, before_ms: i64, limit: u32) -> rusqlite::Result<u64> {
    let purged: Vec<(String, String, String, i64)> = conn
        .prepare_cached(PURGE_SQL)?
        .query_map(params![before_ms, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut tombstone = conn.prepare_cached(TOMBSTONE_SQL)?;
    for (route, event_id, body_sha256, delivered_at) in &purged {
        tombstone.execute(params![route, event_id, body_sha256, delivered_at])?;
    }
    Ok(purged.len() as u64)
}

// The queue's reads, next to the SQL they run; the rest of `Reader` is in `reader.rs`.
impl Reader {
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

    /// Pending events with `next_attempt_at <= now_ms` that come after `after` (a due time and
    /// a row id, e.g. the last event of the previous page; `None`: from the start) in the order
    /// of [`Reader::due`], at most `limit`.
    ///
    /// # Errors
    /// The read failed or a row is malformed.
    pub fn due_after(
        &self,
        now_ms: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (after_ms, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
        let raws = self
            .conn()
            .prepare_cached(&due_after_sql())
            .and_then(|mut stmt| {
                stmt.query_map(params![now_ms, after_ms, after_id, limit], RawEvent::read)?
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rusqlite::Connection;
    use tokio::task::JoinSet;

    use super::super::{
        Inserted, Store, StoreError,
        testing::{db_path, event, insert_at, insert_concurrently, state_of},
    };
    use super::*;

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
            .map(|r| r.expect("insert").id().expect("a row"))
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
        let id = handle
            .insert(event("/r", "a"))
            .await
            .expect("insert")
            .id()
            .expect("a row");

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

    #[tokio::test]
    async fn due_after_pages_through_the_due_events_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(db_path(&dir)).expect("open");
        let handle = store.handle();
        let reader = store.reader();
        // Received (and due) at 1000 .. 5000; then c is rescheduled to 1000, beside a.
        let ids = insert_at(&handle, &["a", "b", "c", "d", "e"]).await;
        handle
            .update(vec![Update::Retry {
                id: ids[2],
                attempts: 1,
                next_at_ms: 1_000,
                error: "timeout".to_owned(),
            }])
            .await
            .expect("update");
        let page = |after, limit| -> Vec<i64> {
            reader
                .due_after(4_000, after, limit)
                .expect("due after")
                .into_iter()
                .map(|e| e.id)
                .collect()
        };
        let order = [ids[0], ids[2], ids[1], ids[3]];
        assert_eq!(page(None, 10), order, "e is not due by 4000");
        assert_eq!(page(None, 2), order[..2]);
        // Ties on the due time are broken by id: after (1000, a) comes (1000, c).
        assert_eq!(page(Some((1_000, ids[0])), 2), order[1..3]);
        assert_eq!(page(Some((1_000, ids[2])), 10), order[2..]);
        assert_eq!(page(Some((4_000, ids[3])), 10), Vec::<i64>::new());
        assert_eq!(
            reader.due_after(4_000, None, 10).expect("due after"),
            reader.due(4_000, 10).expect("due"),
            "from the start it is `due`"
        );
    }

    #[test]
    fn queue_queries_use_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        drop(Store::open(&path).expect("open"));
        let reader = Reader::open(&path).expect("reader");
        let plan = |sql: &str| -> Vec<String> {
            let sql = sql
                .replace("?4", "10")
                .replace("?3", "0")
                .replace("?2", "10")
                .replace("?1", "0");
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
            (due_after_sql().as_str(), "events_due"),
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

    /// The tombstones in the file: (route, event id, body SHA-256, delivered at).
    fn tombstones(path: &std::path::Path) -> Vec<(String, String, String, i64)> {
        Connection::open(path)
            .expect("raw")
            .prepare("SELECT route, event_id, body_sha256, delivered_at FROM tombstones ORDER BY event_id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[tokio::test]
    async fn a_purged_event_replayed_is_a_duplicate_until_its_tombstone_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open(&path).expect("open");
        let handle = store.handle();
        let ids = insert_at(&handle, &["paid", "other"]).await;
        let paid = state_of(store.reader(), ids[0]);
        handle
            .update(vec![Update::Delivered {
                id: ids[0],
                attempts: 1,
                at_ms: 5_000,
            }])
            .await
            .expect("delivered");
        assert_eq!(handle.purge_delivered(6_000).await.expect("purge"), 1);
        assert_eq!(store.reader().get(ids[0]).expect("get"), None, "purged");
        assert_eq!(
            tombstones(&path),
            [("/r".to_owned(), "paid".to_owned(), paid.body_sha256, 5_000)],
            "the purge left the key behind"
        );

        // The same callback again, after the purge: recognised, not stored.
        let replay = handle.insert(event("/r", "paid")).await.expect("replay");
        assert_eq!(replay, Inserted::Purged);
        assert_eq!(replay.id(), None);
        assert_eq!(store.count().expect("count"), 1, "only `other`");
        assert_eq!(store.find("/r", "paid").expect("find"), None);
        // The same id on another route is another event.
        let elsewhere = handle.insert(event("/s", "paid")).await.expect("insert");
        assert!(matches!(elsewhere, Inserted::New { .. }), "{elsewhere:?}");

        // Tombstones younger than the cutoff stay; older ones go, and the key is free again.
        assert_eq!(handle.purge_tombstones(5_000).await.expect("purge"), 0);
        assert_eq!(tombstones(&path).len(), 1);
        assert_eq!(handle.purge_tombstones(5_001).await.expect("purge"), 1);
        assert_eq!(tombstones(&path), []);
        let after = handle.insert(event("/r", "paid")).await.expect("insert");
        assert!(matches!(after, Inserted::New { .. }), "{after:?}");
    }

    #[tokio::test]
    async fn hookwall_queue_purge_leaves_tombstones_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Store::open(&path).expect("open");
        let handle = store.handle();
        let ids = insert_at(&handle, &["a"]).await;
        handle
            .update(vec![Update::Delivered {
                id: ids[0],
                attempts: 1,
                at_ms: 10,
            }])
            .await
            .expect("delivered");
        let admin = super::super::Admin::open(&path).expect("admin");
        assert_eq!(admin.purge_delivered(11).expect("purge"), 1);
        let replay = handle.insert(event("/r", "a")).await.expect("replay");
        assert_eq!(replay, Inserted::Purged);
        assert_eq!(admin.purge_tombstones(11).expect("purge"), 1);
        let after = handle.insert(event("/r", "a")).await.expect("insert");
        assert!(matches!(after, Inserted::New { .. }), "{after:?}");
    }

    #[test]
    fn tombstone_queries_use_their_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        drop(Store::open(&path).expect("open"));
        let reader = Reader::open(&path).expect("reader");
        let plan: Vec<String> = reader
            .conn()
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                PURGE_TOMBSTONES_SQL.replace("?2", "10").replace("?1", "0")
            ))
            .expect("explain")
            .query_map([], |r| r.get::<_, String>(3))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(
            plan.iter().any(|step| step.contains("tombstones_age")),
            "{plan:?}"
        );
        assert!(
            plan.iter().all(|step| !step.ends_with("SCAN tombstones")),
            "{plan:?}"
        );
    }
}
