//! `hookwall queue`'s connection: replays dead letters and purges delivered events beside the
//! running daemon.

use std::{path::Path, sync::Arc, time::Duration};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};

use super::{
    BUSY_TIMEOUT, EventState, StoreError,
    queue::{PURGE_CHUNK, Purge, purge_chunk},
    reader::Reader,
    sqlite_err,
};

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

    /// Deletes `delivered` events with `delivered_at < before_ms`, each leaving a tombstone (see
    /// [`StoreHandle::purge_delivered`](super::StoreHandle::purge_delivered)); returns how many.
    /// Pending and dead events are never deleted. One transaction per [`PURGE_CHUNK`] rows, so the
    /// daemon's writer never waits on this longer than one chunk (it gives up after its busy
    /// timeout).
    ///
    /// # Errors
    /// A chunk failed (the chunks before it stay deleted; purging again is safe).
    pub fn purge_delivered(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.purge(Purge::Delivered, before_ms)
    }

    /// Deletes the tombstones of events delivered before `before_ms`; returns how many.
    ///
    /// # Errors
    /// As for [`Admin::purge_delivered`].
    pub fn purge_tombstones(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.purge(Purge::Tombstones, before_ms)
    }

    fn purge(&self, what: Purge, before_ms: i64) -> Result<u64, StoreError> {
        let path = &self.reader.path;
        let mut total = 0;
        loop {
            let mut conn = self.reader.conn();
            let tx = begin_immediate(&mut conn, path)?;
            let op = match what {
                Purge::Delivered => "purging delivered events from",
                Purge::Tombstones => "purging expired tombstones from",
            };
            let deleted =
                purge_chunk(&tx, what, before_ms, PURGE_CHUNK).map_err(sqlite_err(op, path))?;
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

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::{
        Inserted, QueueCounts, Store, Update,
        testing::{db_path, event, insert_at, state_of},
    };
    use super::*;

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
}
