//! The schema: one migration per version, applied when the daemon opens the file.

use std::{path::Path, time::SystemTime};

use rusqlite::{Connection, TransactionBehavior, params};

use super::{StoreError, sqlite_err, unix_ms};

/// The schema, one migration per version: `MIGRATIONS[i]` takes the database from version `i` to
/// `i + 1`. Append only; never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // Version 1: the events table, with its delivery-queue columns.
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
    // Version 3: tombstones. The purge of a delivered event leaves its key here, in the same
    // transaction, for `store.dedupe_window`: callbacks that sign no timestamp (GitHub, M-Pesa,
    // hmac-sha256, shared-secret) can be replayed at any time, and without the key a replay after
    // the purge would be stored and delivered again. The insert consults this table.
    "CREATE TABLE tombstones (
        route        TEXT    NOT NULL,
        event_id     TEXT    NOT NULL,
        body_sha256  TEXT    NOT NULL,               -- lowercase hex, of the purged event's body
        delivered_at INTEGER NOT NULL,               -- unix ms; the window counts from here
        PRIMARY KEY (route, event_id)
    ) WITHOUT ROWID;
    CREATE INDEX tombstones_age ON tombstones (delivered_at);",
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies every migration the file lacks, each with its version row, in one immediate
/// transaction (so two processes opening a new file at once cannot both apply them).
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
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
pub(super) fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )
    .map_err(sqlite_err("reading the schema version of", path))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::{Admin, EventState, Reader, Store, StoreError, testing::db_path};
    use super::*;

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
        assert_eq!(versions, vec![1, 2, 3]);
        assert_eq!(SCHEMA_VERSION, 3);
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
    async fn v2_file_is_migrated_to_v3_and_its_purge_leaves_tombstones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        {
            // A file as the previous release left it: the v2 schema, one delivered event.
            let raw = Connection::open(&path).expect("raw");
            raw.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,
                    applied_at INTEGER NOT NULL);
                INSERT INTO schema_version (version, applied_at) VALUES (1, 0), (2, 0);",
            )
            .expect("version table");
            raw.execute_batch(MIGRATIONS[0]).expect("v1 schema");
            raw.execute_batch(MIGRATIONS[1]).expect("v2 schema");
            raw.execute(
                "INSERT INTO events (route, event_id, kind, received_at, body, body_sha256,
                    headers, state, attempts, delivered_at)
                VALUES ('/r', 'old', 'test', 5, x'6869', 'abc', '[]', 'delivered', 1, 7)",
                [],
            )
            .expect("v2 row");
        }
        let store = Store::open(&path).expect("open migrates");
        let old = store.find("/r", "old").expect("find").expect("row kept");
        assert_eq!(old.state, EventState::Delivered);
        let handle = store.handle();
        assert_eq!(handle.purge_delivered(8).await.expect("purge"), 1);
        let replay = super::super::testing::event("/r", "old");
        assert_eq!(
            handle.insert(replay).await.expect("replay"),
            super::super::Inserted::Purged
        );
        drop(store);
        let raw = Connection::open(&path).expect("raw");
        let version: i64 = raw
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, 3);
        let kept: (String, String, String, i64) = raw
            .query_row(
                "SELECT route, event_id, body_sha256, delivered_at FROM tombstones",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("tombstone");
        assert_eq!(kept, ("/r".into(), "old".into(), "abc".into(), 7));
    }
}
