//! What `hookwall run` keeps once the filter is in force, and the user it becomes.
//!
//! Bring-up needs root: mounting bpffs, loading and pinning the program, attaching it, binding
//! port 443, reading root-only secrets. Everything after it is reloads and serving, and serving
//! parses untrusted TLS, HTTP/2 and JSON. So once bring-up is done (`run` applies the
//! [`PrivilegeDrop`] just before the services start) the daemon keeps, on every thread:
//!
//! - the capabilities in [`KEPT`], in its effective, permitted and bounding sets, and no other;
//!   empty inheritable and ambient sets; no_new_privs;
//! - with `daemon.run_as`, that user's ids and groups instead of root's.
//!
//! Whether that identity can still do what the daemon does afterwards (read the config, the
//! certificate and the route secrets at each reload, write the store, make link pins under the
//! pin path) is checked at the start, before anything is touched, on a thread that takes it:
//! a problem refuses the start with the file and the fix. What the start itself creates for
//! later (the pins, a new store) is handed to that identity.

mod threads;

use std::{
    collections::BTreeMap,
    ffi::CString,
    fmt::Write as _,
    fs, io,
    os::unix::fs::chown,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use caps::{CapSet, Capability, CapsHashSet};

use self::threads::{Creds, Ids};
use super::reload::watched_files;
use crate::{
    config::{Config, RunAs, SecretRef, Tls},
    filter::Pins,
};

/// What reloads and scrapes need once the filter is in force. Tried on Linux 6.18 with nothing
/// kept, every path works: map updates and mmaps go through fds opened at start, a link on a
/// newly listed interface is created through the program's fd (the kernel checks
/// CAP_NET_ADMIN when an XDP program is loaded, not when it is attached), pins and unpins need
/// only write permission on `links/`, and the metrics open pins they own. Before Linux 5.19,
/// with `kernel.unprivileged_bpf_disabled` set (most distributions' default), every `bpf()`
/// command needs CAP_BPF, so it stays. CAP_NET_ADMIN does not: no reload path asks for it.
pub(super) const KEPT: [Capability; 1] = [Capability::CAP_BPF];

/// The drop prepared at start: the credentials every thread takes, and what to hand over to
/// them.
pub(super) struct PrivilegeDrop {
    creds: Creds,
    keep: CapsHashSet,
    run_as: Option<RunAs>,
    /// The store's directories and files that did not exist at the check: made by this start,
    /// as root, they are handed to the new identity.
    store_made: Vec<PathBuf>,
    /// Where the fetched address lists are kept (`allow.cache_dir`): what this start wrote
    /// there, as root, is handed to the new identity, which keeps writing there.
    cache_dir: Option<PathBuf>,
}

impl PrivilegeDrop {
    /// Works out the identity the daemon takes after bring-up and checks, on a thread that takes
    /// it, that it can do what the daemon does afterwards.
    ///
    /// # Errors
    /// Listing every file it could not read or write, each with the fix; or if the identity
    /// cannot be taken (hookwall run did not start as root).
    pub(super) fn prepare(config: &Config) -> anyhow::Result<Self> {
        let keep: CapsHashSet = KEPT.into_iter().collect();
        let known = caps::runtime::thread_all_supported()
            .iter()
            .fold(0, |mask, cap| mask | cap.bitmask());
        let ids = match &config.daemon.run_as {
            Some(user) => Some(ids_of(user)?),
            None => None,
        };
        let creds = Creds {
            keep: keep.iter().fold(0, |mask, cap| mask | cap.bitmask()),
            known,
            ids,
        };
        let needs = needs(config);
        let run_as = config.daemon.run_as.clone();
        let denied = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    threads::apply(&creds)?;
                    Ok(needs
                        .iter()
                        .filter_map(|(path, need)| {
                            need.denied(path).map(|e| (path.clone(), need.clone(), e))
                        })
                        .collect::<Vec<_>>())
                })
                .join()
        })
        .map_err(|_| {
            anyhow::anyhow!("checking the files as the daemon's user: the check panicked")
        })?
        .map_err(|failure: threads::Failure| {
            anyhow::anyhow!(
                "taking the identity the daemon keeps after start ({}): {failure}; hookwall run \
                 must start as root",
                who(run_as.as_ref())
            )
        })?;
        if !denied.is_empty() {
            let mut message = format!(
                "after start, hookwall runs as {} and could not reach what it still needs; \
                 nothing was changed:",
                who(run_as.as_ref())
            );
            for (path, need, error) in &denied {
                let _ = write!(
                    message,
                    "\n  - {}: cannot {} it ({error}): it is {}; fix: {}",
                    path.display(),
                    need.verb(),
                    need.what.join("; "),
                    need.fix(path, run_as.as_ref()),
                );
            }
            anyhow::bail!(message);
        }
        let store_made = if config.routes.is_empty() {
            Vec::new()
        } else {
            store_paths(&config.store.path)
                .into_iter()
                .filter(|p| !p.exists())
                .collect()
        };
        Ok(Self {
            creds,
            keep,
            run_as,
            store_made,
            cache_dir: (config.allow.presets_refresh.is_some() || !config.allow.sources.is_empty())
                .then(|| config.allow.cache_dir(&config.store.path)),
        })
    }

    /// Hands what bring-up made to the new identity, then drops to it on every thread.
    ///
    /// # Errors
    /// If a pin or a store file cannot be handed over, or a thread refuses the new credentials.
    pub(super) fn apply(self, pins: &Pins) -> anyhow::Result<()> {
        let (uid, gid) = self
            .creds
            .ids
            .as_ref()
            .map_or((0, 0), |ids| (ids.uid, ids.gid));
        let cached: Vec<PathBuf> = match &self.cache_dir {
            Some(dir) if self.run_as.is_some() && dir.is_dir() => std::iter::once(dir.clone())
                .chain(
                    std::fs::read_dir(dir)
                        .with_context(|| format!("reading {}", dir.display()))?
                        .filter_map(|entry| entry.ok().map(|e| e.path())),
                )
                .collect(),
            _ => Vec::new(),
        };
        for path in pin_tree(pins).iter().chain(&self.store_made).chain(&cached) {
            if path.exists() {
                chown(path, Some(uid), Some(gid)).with_context(|| {
                    format!(
                        "handing {} to {}",
                        path.display(),
                        who(self.run_as.as_ref())
                    )
                })?;
            }
        }
        let threads = threads::on_every_thread(&self.creds)
            .context("dropping the privileges only the start needed")?;
        for set in [CapSet::Effective, CapSet::Permitted, CapSet::Bounding] {
            let held = caps::read(None, set).context("reading the capability sets")?;
            anyhow::ensure!(
                held == self.keep,
                "after the drop, the {set:?} set holds {held:?}, not {:?}",
                self.keep
            );
        }
        let mut kept: Vec<String> = self.keep.iter().map(ToString::to_string).collect();
        kept.sort();
        tracing::info!(
            kept = %kept.join(", "),
            user = %who(self.run_as.as_ref()),
            threads,
            "dropped the privileges only the start needed"
        );
        Ok(())
    }
}

/// How messages name the identity.
fn who(run_as: Option<&RunAs>) -> String {
    match run_as {
        Some(user) => format!("user {} (uid {})", user.name, user.uid),
        None => "root without CAP_DAC_OVERRIDE (daemon.run_as is not set)".to_owned(),
    }
}

/// The ids `user` takes: its uid, primary group and supplementary groups.
fn ids_of(user: &RunAs) -> anyhow::Result<Ids> {
    let name = CString::new(user.name.as_str()).context("daemon.run_as holds a NUL byte")?;
    let groups = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(user.gid))
        .with_context(|| format!("listing the groups of user {}", user.name))?;
    Ok(Ids {
        uid: user.uid,
        gid: user.gid,
        groups: groups.into_iter().map(nix::unistd::Gid::as_raw).collect(),
    })
}

/// What the daemon does with a path after the drop.
#[derive(Clone, Debug, Default)]
struct Need {
    /// `access(2)` mode bits.
    mode: libc::c_int,
    /// What the path is to the daemon, for the message.
    what: Vec<String>,
}

impl Need {
    fn add(needs: &mut BTreeMap<PathBuf, Self>, path: PathBuf, mode: libc::c_int, what: String) {
        let need = needs.entry(path).or_default();
        need.mode |= mode;
        if !need.what.contains(&what) {
            need.what.push(what);
        }
    }

    /// Why the calling thread cannot access `path` as needed, if it cannot.
    fn denied(&self, path: &Path) -> Option<io::Error> {
        let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
            return Some(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: `c` is NUL-terminated; AT_EACCESS checks with this thread's own credentials.
        let rc =
            unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), self.mode, libc::AT_EACCESS) };
        (rc != 0).then(io::Error::last_os_error)
    }

    fn verb(&self) -> &'static str {
        let (r, w, x) = (
            self.mode & libc::R_OK != 0,
            self.mode & libc::W_OK != 0,
            self.mode & libc::X_OK != 0,
        );
        match (r, w, x) {
            (_, true, true) => "create files in",
            (true, true, false) => "read and write",
            (true, false, true) => "list",
            (false, false, true) => "pass through",
            _ => "read",
        }
    }

    fn fix(&self, path: &Path, run_as: Option<&RunAs>) -> String {
        let p = path.display();
        if self.mode == libc::X_OK {
            return format!(
                "let every user pass through it (`chmod o+x {p}`; systemd mounts /sys/fs/bpf \
                 with mode 0700), or choose a filter.pin_path the daemon's user can reach"
            );
        }
        match run_as {
            Some(user) => {
                let recursive = if self.mode & libc::W_OK != 0 && self.mode & libc::X_OK != 0 {
                    "-R "
                } else {
                    ""
                };
                format!(
                    "make {} its owner (`chown {recursive}{}: {p}`), or give a group of theirs \
                     access",
                    user.name, user.name
                )
            }
            None => format!(
                "make root its owner (`chown root: {p}`), or set daemon.run_as to the user \
                 that owns it"
            ),
        }
    }
}

/// Every path the daemon reads or writes after the drop, with what it needs of it.
fn needs(config: &Config) -> BTreeMap<PathBuf, Need> {
    let mut needs = BTreeMap::new();
    let (read, list, search, rw, create) = (
        libc::R_OK,
        libc::R_OK | libc::X_OK,
        libc::X_OK,
        libc::R_OK | libc::W_OK,
        libc::W_OK | libc::X_OK,
    );
    // Pins are made below the pin path at reloads (a link per newly listed interface); the pin
    // path itself is handed over, the directories above it must let the daemon through.
    let pin_root = &config.filter.pin_path;
    let above = if pin_root.exists() {
        pin_root.parent()
    } else {
        pin_root.ancestors().find(|dir| dir.exists())
    };
    if let Some(dir) = above {
        Need::add(
            &mut needs,
            dir.to_path_buf(),
            search,
            "on the way to filter.pin_path, where reloads pin links".to_owned(),
        );
    }
    for file in watched_files(config) {
        if let Some(dir) = file.parent() {
            Need::add(
                &mut needs,
                dir.to_path_buf(),
                list,
                format!("watched for edits of {}", file.display()),
            );
        }
        Need::add(&mut needs, file, read, "read at each reload".to_owned());
    }
    if config.routes.is_empty() {
        return needs;
    }
    for route in &config.routes {
        for secret in route.token.iter().chain(&route.secrets) {
            if let SecretRef::File(file) = secret {
                Need::add(
                    &mut needs,
                    file.clone(),
                    read,
                    format!("a secret of route {}, read at each reload", route.path),
                );
            }
            // Credentials are not here: the start reads them, as root, and they are kept
            // (`config::secret`): systemd never rewrites them while the unit runs.
        }
    }
    if let Tls::Acme(acme) = &config.server.tls
        && let Some(ca) = &acme.directory_ca
    {
        Need::add(
            &mut needs,
            ca.clone(),
            read,
            "server.acme.directory_ca, read at each ACME order".to_owned(),
        );
    }
    let store = &config.store.path;
    let dir = match store.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if dir.exists() {
        Need::add(
            &mut needs,
            dir.to_path_buf(),
            create,
            "the directory of store.path, where SQLite makes its -wal and -shm files".to_owned(),
        );
    } else if let Some(existing) = dir.ancestors().find(|d| d.exists()) {
        Need::add(
            &mut needs,
            existing.to_path_buf(),
            search,
            "on the way to store.path".to_owned(),
        );
    }
    for file in store_paths(store).into_iter().filter(|f| f.is_file()) {
        Need::add(
            &mut needs,
            file,
            rw,
            "the event store (store.path)".to_owned(),
        );
    }
    needs
}

/// The store's missing directories and its files: what a start may create there.
fn store_paths(store: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = match store.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect(),
        _ => Vec::new(),
    };
    paths.reverse();
    let mut with_suffix = |suffix: &str| {
        let mut name = store.as_os_str().to_owned();
        name.push(suffix);
        paths.push(PathBuf::from(name));
    };
    for suffix in ["", "-wal", "-shm", "-journal"] {
        with_suffix(suffix);
    }
    paths
}

/// The pin path, its directories and every pin in them.
fn pin_tree(pins: &Pins) -> Vec<PathBuf> {
    let mut paths = pins.dirs().to_vec();
    paths.push(pins.prog());
    for dir in [pins.maps_dir(), pins.links_dir()] {
        if let Ok(entries) = fs::read_dir(&dir) {
            paths.extend(entries.flatten().map(|e| e.path()));
        }
    }
    paths
}
