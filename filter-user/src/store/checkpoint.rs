//! Checkpoints off the commit path: a thread of its own copies committed WAL frames into the
//! database file, so no request's answer waits for that copy or for the database file's fsync.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use rusqlite::Connection;

/// WAL pages (4 KiB) past which the writer checkpoints itself: 64 MiB, far above what the
/// checkpoint thread lets accumulate in 500 ms at the receiver's top rate.
pub(super) const WAL_SAFETY_PAGES: i64 = 16_384;

/// Bytes of WAL file kept after a checkpoint reset it: the safety bound.
pub(super) const WAL_KEEP_BYTES: i64 = WAL_SAFETY_PAGES * 4096;

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies committed WAL frames into the database file on its own thread and connection, off
/// the writer's commit path. PASSIVE checkpoints never wait for the writer or readers. After
/// each pass it raises `tail_due`, and the writer copies what was committed during the pass
/// (see `Writer::checkpoint_tail` in `writer.rs`); once everything is copied, the writer's next
/// transaction restarts the WAL from its beginning, so the WAL stays small. Stops (after a last
/// checkpoint) when dropped.
pub(super) struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    tail_due: Arc<AtomicBool>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Self {
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
    pub(super) fn take_tail(&self) -> bool {
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

#[cfg(test)]
mod tests {
    use std::{fs, path::Path, time::Duration};

    use tokio::task::JoinSet;

    use super::super::{
        HashedBody, Store,
        testing::{db_path, event},
    };
    use super::*;

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
}
