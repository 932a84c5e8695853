//! Helpers shared by the store's tests.

use std::path::PathBuf;

use tokio::task::JoinSet;

use super::{HashedBody, Inserted, NewEvent, Reader, StoreError, StoreHandle, StoredEvent};

pub(super) fn event(route: &str, event_id: &str) -> NewEvent {
    NewEvent {
        route: route.to_owned(),
        event_id: event_id.to_owned(),
        kind: "test".to_owned(),
        received_at_ms: 1_700_000_000_000,
        body: HashedBody::new(format!("{{\"id\":\"{event_id}\"}}").into_bytes()),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
    }
}

pub(super) fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("events.db")
}

/// Runs `n` inserts at once, each from its own task, and returns their results.
pub(super) async fn insert_concurrently(
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

/// Inserts `event_ids` on route `/r` with received_at = 1000 * (index + 1); returns row ids.
pub(super) async fn insert_at(handle: &StoreHandle, event_ids: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    for (n, event_id) in (1_i64..).zip(event_ids) {
        let mut new = event("/r", event_id);
        new.received_at_ms = 1_000 * n;
        let inserted = handle.insert(new).await.expect("insert");
        assert!(matches!(inserted, Inserted::New { .. }), "{inserted:?}");
        ids.push(inserted.id().expect("a new row"));
    }
    ids
}

pub(super) fn state_of(reader: &Reader, id: i64) -> StoredEvent {
    reader.get(id).expect("get").expect("row")
}
