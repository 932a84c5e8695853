//! Watches the config file, the allowlist files and the certificate files for edits, and asks
//! the daemon for a reload when one of them changes.
//!
//! inotify watches their directories: editors and certbot replace a file by writing a new one
//! and renaming it over the old, which a watch on the file itself would not follow. The event
//! mask holds only what an edit ends with (a closed write, a rename, a creation, a deletion, an
//! attribute change), never `IN_MODIFY` or `IN_OPEN`: the event store, its WAL and the audit log
//! may share the config's directory, and with those events every commit and every audit line
//! would wake the watcher.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::{sync::mpsc, task::JoinHandle};

/// What an edit of a file in a watched directory ends with.
const EDIT_EVENTS: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::ONLYDIR);

/// The reason the watcher gives the daemon for a reload.
pub const TRIGGER: &str = "file change";

/// The watched directories (each with its inotify watch) and the files of interest in them.
#[derive(Default)]
struct Watched {
    dirs: BTreeMap<PathBuf, WatchDescriptor>,
    files: BTreeSet<PathBuf>,
}

impl Watched {
    /// Whether an event named `name` under watch `wd` concerns a file of interest.
    fn concerns(&self, wd: &WatchDescriptor, name: &OsString) -> bool {
        self.dirs
            .iter()
            .filter(|(_, w)| *w == wd)
            .any(|(dir, _)| self.files.contains(&dir.join(name)))
    }
}

/// Sends [`TRIGGER`] on its channel whenever a watched file is edited, replaced or removed.
pub struct FileWatcher {
    watches: Watches,
    watched: Arc<Mutex<Watched>>,
    /// Events read from inotify, of interest or not: what the mask lets wake the watcher.
    #[cfg(test)]
    events: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FileWatcher {
    /// Starts watching nothing yet; [`FileWatcher::watch`] names the files. Needs a tokio runtime.
    pub fn new(tx: mpsc::Sender<&'static str>) -> anyhow::Result<Self> {
        let inotify = Inotify::init().context("starting the config file watcher (inotify)")?;
        let watches = inotify.watches();
        let mut events = inotify
            .into_event_stream(vec![0u8; 4096])
            .context("registering the config file watcher with the runtime")?;
        let watched = Arc::new(Mutex::new(Watched::default()));
        let seen = Arc::clone(&watched);
        let events_read = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&events_read);
        let task = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading config file events failed; SIGHUP still reloads");
                        return;
                    }
                };
                counted.fetch_add(1, Ordering::Relaxed);
                // An overflowed queue may have lost an edit: reload to be sure.
                let reload = event.mask.contains(EventMask::Q_OVERFLOW)
                    || event.name.as_ref().is_some_and(|name| {
                        seen.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .concerns(&event.wd, name)
                    });
                if reload {
                    // A full channel already holds a pending reload; dropping this one loses nothing.
                    let _ = tx.try_send(TRIGGER);
                }
            }
        });
        Ok(Self {
            watches,
            watched,
            #[cfg(test)]
            events: events_read,
            task,
        })
    }

    /// Watches exactly `files` (absolute paths) from now on.
    pub fn watch(&mut self, files: &BTreeSet<PathBuf>) {
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(PathBuf::from))
            .collect();
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<PathBuf> = watched
            .dirs
            .keys()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for dir in gone {
            if let Some(wd) = watched.dirs.remove(&dir)
                // Two paths to one directory share its watch.
                && !watched.dirs.values().any(|w| *w == wd)
            {
                let _ = self.watches.remove(wd);
            }
        }
        for dir in dirs {
            if watched.dirs.contains_key(&dir) {
                continue;
            }
            match self.watches.add(&dir, EDIT_EVENTS) {
                Ok(wd) => {
                    watched.dirs.insert(dir, wd);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for changes; SIGHUP still reloads");
                }
            }
        }
        watched.files = files.clone();
    }

    /// Events read so far, whether they concerned a watched file or not.
    #[cfg(test)]
    pub fn events_read(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, io::Write as _, time::Duration};

    use super::*;

    /// Whether a reload is asked for within `wait`; then empties the channel.
    async fn asked(rx: &mut mpsc::Receiver<&'static str>, wait: Duration) -> bool {
        let got = tokio::time::timeout(wait, rx.recv()).await.is_ok();
        while rx.try_recv().is_ok() {}
        got
    }

    const SOON: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn an_edit_asks_for_a_reload_and_other_writes_in_the_directory_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hookwall.toml");
        fs::write(&config, "a = 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let mut watcher = FileWatcher::new(tx).unwrap();
        watcher.watch(&BTreeSet::from([config.clone()]));

        // A store and a log beside the config, written the way the daemon writes them: opened
        // once, then written and synced many times.
        let mut log = fs::File::create(dir.path().join("audit.log")).unwrap();
        let mut wal = fs::File::create(dir.path().join("events.db-wal")).unwrap();
        assert!(
            !asked(&mut rx, QUIET).await,
            "creating files not watched asked for a reload"
        );
        let before = watcher.events_read();
        for i in 0..200 {
            writeln!(log, "line {i}").unwrap();
            wal.write_all(&[0u8; 4096]).unwrap();
            wal.sync_all().unwrap();
        }
        assert!(
            !asked(&mut rx, QUIET).await,
            "writes to other files in the directory asked for a reload"
        );
        assert_eq!(
            watcher.events_read(),
            before,
            "writes to files kept open woke the watcher"
        );

        // An edit in place: open, truncate, write, close.
        fs::write(&config, "a = 2\n").unwrap();
        assert!(asked(&mut rx, SOON).await, "an edit in place was missed");

        // An editor's save: a new file renamed over the old one.
        let tmp = dir.path().join(".hookwall.toml.swp");
        fs::write(&tmp, "a = 3\n").unwrap();
        while rx.try_recv().is_ok() {}
        fs::rename(&tmp, &config).unwrap();
        assert!(
            asked(&mut rx, SOON).await,
            "a rename over the file was missed"
        );

        fs::remove_file(&config).unwrap();
        assert!(asked(&mut rx, SOON).await, "a removal was missed");
    }

    #[tokio::test]
    async fn a_file_no_longer_named_is_no_longer_watched() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a.toml"), dir.path().join("b.txt"));
        let other = tempfile::tempdir().unwrap();
        let third = other.path().join("c.txt");
        for f in [&first, &second, &third] {
            fs::write(f, "x\n").unwrap();
        }
        let (tx, mut rx) = mpsc::channel(8);
        let mut watcher = FileWatcher::new(tx).unwrap();
        watcher.watch(&BTreeSet::from([first.clone(), third.clone()]));
        fs::write(&third, "y\n").unwrap();
        assert!(
            asked(&mut rx, SOON).await,
            "the file in the second directory was missed"
        );

        // The second directory is dropped; the first keeps its watch with a new file of interest.
        watcher.watch(&BTreeSet::from([first.clone(), second.clone()]));
        fs::write(&third, "z\n").unwrap();
        assert!(
            !asked(&mut rx, QUIET).await,
            "a dropped directory is still watched"
        );
        fs::write(&second, "y\n").unwrap();
        assert!(asked(&mut rx, SOON).await, "a newly named file was missed");
        fs::write(&first, "y\n").unwrap();
        assert!(
            asked(&mut rx, SOON).await,
            "a file named in both calls was missed"
        );
    }
}
