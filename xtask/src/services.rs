//! Keeps `cargo xtask setup` from leaving servers behind. Some Debian packages the tests need
//! (prometheus) ship an init script or a systemd unit whose maintainer script starts the server at
//! install: `invoke-rc.d` (and `deb-systemd-invoke`) start it unless `/usr/sbin/policy-rc.d` exits
//! 101 ("action forbidden"). The tests only want the binaries and run their own instances.
//!
//! - [`NoStartPolicy`]: a `policy-rc.d` that forbids every start, for the time of an install, made
//!   only where there is none (an existing one is the machine's own and stays as it is);
//! - [`running`]: the PIDs running a given program, to check that none was started.
use std::{
    collections::BTreeSet,
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// Where `invoke-rc.d` looks for the local policy.
pub const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// The policy: exit 101 forbids any action on any service.
const FORBID_ALL: &str = "#!/bin/sh\n# Written by `cargo xtask setup` for the time of an \
                          install: no package starts a service.\nexit 101\n";

/// A `policy-rc.d` forbidding service starts while it lives. Removed on drop if this made it.
#[derive(Debug)]
pub struct NoStartPolicy {
    /// The file this made, `None` when one was there already.
    made: Option<PathBuf>,
}

impl NoStartPolicy {
    /// Writes the forbidding policy at `path` unless a file is there. An existing one is left
    /// alone (and reported), since it is the machine's own: a container image's usually forbids
    /// everything already.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn install(path: &Path) -> Result<Self> {
        // symlink_metadata: a dangling symlink is still the machine's file, not ours to replace.
        if path.symlink_metadata().is_ok() {
            println!(
                "note: {} exists; keeping it (check that it forbids starts: `exit 101`)",
                path.display()
            );
            return Ok(Self { made: None });
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(FORBID_ALL.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        // The umask may have taken the execute bits; invoke-rc.d ignores a policy it cannot run.
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
        Ok(Self {
            made: Some(path.to_path_buf()),
        })
    }

    /// Whether this made the file (and so will remove it).
    #[cfg(test)]
    fn made(&self) -> bool {
        self.made.is_some()
    }
}

impl Drop for NoStartPolicy {
    fn drop(&mut self) {
        let Some(path) = self.made.take() else { return };
        if let Err(e) = fs::remove_file(&path) {
            println!(
                "warning: could not remove {} that setup wrote: {e}; remove it by hand \
                 (it forbids every package from starting its service)",
                path.display()
            );
        }
    }
}

/// The PIDs of the processes whose executable is `program` (an absolute path), read from
/// `/proc`. Processes that end while being read, or that this user may not inspect, are skipped.
///
/// # Errors
/// If `/proc` cannot be listed.
pub fn running(program: &Path) -> Result<BTreeSet<u32>> {
    running_in(Path::new("/proc"), program).context("listing processes in /proc")
}

fn running_in(proc: &Path, program: &Path) -> io::Result<BTreeSet<u32>> {
    let mut pids = BTreeSet::new();
    for entry in fs::read_dir(proc)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // The kernel appends " (deleted)" when the file was replaced since, as an upgrade does.
        let Ok(exe) = fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let exe = exe.to_string_lossy();
        let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
        if Path::new(exe) == program {
            pids.insert(pid);
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_policy_is_made_where_none_was_and_removed_after() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        let _ = fs::remove_file(&path);
        {
            let policy = NoStartPolicy::install(&path).unwrap();
            assert!(policy.made());
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755, "the policy must be executable");
            // What invoke-rc.d does with it: run it and read 101 as "forbidden".
            let status = Command::new(&path).arg("prometheus").arg("start").status();
            assert_eq!(status.unwrap().code(), Some(101));
        }
        assert!(!path.exists(), "the policy setup made outlived the install");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_existing_policy_is_kept_as_it_was() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-kept-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        {
            let policy = NoStartPolicy::install(&path).unwrap();
            assert!(!policy.made());
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), "#!/bin/sh\nexit 0\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn running_finds_this_process_by_its_executable() {
        let me = std::env::current_exe().unwrap();
        let pids = running(&me).unwrap();
        assert!(pids.contains(&std::process::id()), "{pids:?}");
        assert!(
            running(Path::new("/nonexistent/program"))
                .unwrap()
                .is_empty()
        );
    }
}
