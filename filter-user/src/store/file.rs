//! The database file: created with private permissions and durable directory entries, and
//! checked after every commit to still be the file at `store.path`.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::Path,
    sync::Arc,
};

use super::StoreError;

/// Creates the parent directories and the database file with private permissions, and makes
/// their directory entries durable; returns the file's identity. SQLite gives its WAL and
/// shared-memory files the database file's mode, so 0600 here covers all three.
pub(super) fn create_file(path: &Path) -> Result<FileId, StoreError> {
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

/// The identity of the open database file, to notice it being deleted, moved or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
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
pub(super) fn check_file(path: &Path, opened: FileId) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

    use rusqlite::types::Value;

    use super::super::{
        BUSY_TIMEOUT, Store, StoreError,
        testing::{event, insert_concurrently},
        writer::open_writer,
    };

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
}
