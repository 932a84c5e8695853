//! `[daemon]`: the process `hookwall run` becomes once the filter is in force.

use serde::Deserialize;

use super::{Checker, KeyPath, Table, serde_names};

/// `[daemon]`, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonConfig {
    /// `daemon.run_as`: the user `hookwall run` switches to once the filter is in force; `None`
    /// (the default): it stays root, with only the capabilities reloads need.
    pub run_as: Option<RunAs>,
}

/// A user of this host, as the config names it and as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The name written in the config.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawDaemon {
    run_as: Option<String>,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[Table {
    path: "daemon",
    array: false,
    keys: serde_names::<RawDaemon>,
    secret_refs: &[],
    secret_ref_lists: &[],
}];

impl Checker<'_> {
    pub(super) fn daemon(&mut self, raw: RawDaemon) -> Option<DaemonConfig> {
        let Some(name) = raw.run_as else {
            return Some(DaemonConfig::default());
        };
        let key = KeyPath::of("daemon.run_as");
        if name.trim().is_empty() {
            self.error(
                &key,
                "the user name is empty: name the user hookwall runs as, e.g. \"hookwall\", or \
                 remove the key to keep running as root",
            );
            return None;
        }
        let Some((uid, gid)) = self.host.user(&name) else {
            self.error(
                &key,
                format!(
                    "no user `{name}` on this host: create it (`useradd --system --no-create-home \
                     --shell /usr/sbin/nologin {name}`), or remove the key to keep running as root"
                ),
            );
            return None;
        };
        Some(DaemonConfig {
            run_as: Some(RunAs { name, uid, gid }),
        })
    }
}
