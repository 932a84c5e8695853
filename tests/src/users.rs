//! [`TestUser`]: a system user made for one test (for `daemon.run_as`), removed on drop.

use std::{path::Path, process::Command};

use crate::unique_name;

/// A system user made for one test, removed on drop.
pub struct TestUser {
    /// The user's name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

impl TestUser {
    /// Makes the user (`useradd --system`).
    ///
    /// # Panics
    /// If `useradd` or `id` fails.
    #[must_use]
    pub fn create() -> Self {
        // hw-test-PIDxN: unique among the tests of this run, which run in parallel.
        let name = unique_name("hw-test-");
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .output()
            .expect("running useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // From here on the user is removed whatever happens.
        let mut user = Self {
            name,
            uid: 0,
            gid: 0,
        };
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, &user.name])
                .output()
                .expect("running id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("id {flag} {}: {e}", user.name))
        };
        (user.uid, user.gid) = (id("-u"), id("-g"));
        assert_ne!(user.uid, 0, "the test user is not root");
        user
    }

    /// Makes the user the owner of `dir` (so it can create the store's files there).
    ///
    /// # Panics
    /// If the chown fails.
    pub fn own(&self, dir: &Path) {
        std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
    }

    /// Makes the user the owner of the secret files in `dir`, which the lab writes 0600 as
    /// root's, as an operator gives the daemon's user its secrets (`chown hookwall: FILE`).
    ///
    /// # Panics
    /// If a chown fails.
    pub fn own_secrets(&self, dir: &Path, names: &[&str]) {
        for name in names {
            let path = dir.join(name);
            std::os::unix::fs::chown(&path, Some(self.uid), Some(self.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        match Command::new("userdel").arg(&self.name).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "userdel {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("userdel {}: {e}", self.name),
        }
    }
}
