//! `[store]`: the durable event store.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{Checker, DAY, DurationRule, HOUR, KeyPath, Table, serde_names};

/// `store.path` default.
const DEFAULT_STORE_PATH: &str = "/var/lib/hookwall/events.db";
/// `store.retention` default: how long delivered events are kept before they are purged.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * DAY);
/// `store.retention`: a delivered event's row is also what makes a provider's retry of it a
/// duplicate, so purging within the hour would deliver late retries again.
const RETENTION: DurationRule = DurationRule {
    default: DEFAULT_RETENTION,
    min: Duration::from_secs(HOUR),
    max: None,
    why: "; a delivered event's row is what recognises a provider's retry of it as a duplicate",
    examples: "\"30d\" or \"720h\"",
};

/// `[store]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The SQLite file. Default: `/var/lib/hookwall/events.db`. Used as written: a relative path is
    /// relative to the daemon's working directory (the bundled dev config keeps its store under
    /// `target/` that way).
    pub path: PathBuf,
    /// Delivered events older than this are purged (hourly, and by `hookwall queue purge`).
    /// Default: [`DEFAULT_RETENTION`] (30 days); at least an hour.
    pub retention: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawStore {
    path: Option<PathBuf>,
    // Durations are read untyped, so a number gets our message ("write it with a unit") instead of
    // serde's, and does not stop the other checks.
    retention: Option<toml::Value>,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[Table {
    path: "store",
    array: false,
    keys: serde_names::<RawStore>,
    secret_refs: &[],
    secret_ref_lists: &[],
}];

impl Checker<'_> {
    pub(super) fn store(&mut self, raw: RawStore) -> Option<StoreConfig> {
        let path = raw
            .path
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE_PATH));
        if path.as_os_str().is_empty() {
            self.error(
                &KeyPath::of("store.path"),
                format!("the store needs a file path, e.g. \"{DEFAULT_STORE_PATH}\""),
            );
        }
        let retention = self.duration(&KeyPath::of("store.retention"), raw.retention, &RETENTION);
        Some(StoreConfig {
            path,
            retention: retention?,
        })
    }
}
