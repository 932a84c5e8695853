//! `[store]`: the durable event store.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{Checker, DAY, DurationRule, HOUR, KeyPath, Table, human, serde_names};
use crate::config::RouteConfig;

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

/// `store.dedupe_window` default: how long a purged event's tombstone recognises a replay of it.
/// Three times the default retention: long after any provider stops retrying, short enough that
/// the tombstones (about 150 bytes each) stay a small fraction of the store.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(90 * DAY);
/// `store.dedupe_window`; that it is longer than `store.retention` is checked beside it.
const DEDUPE_WINDOW: DurationRule = DurationRule {
    default: DEFAULT_DEDUPE_WINDOW,
    min: Duration::from_secs(HOUR),
    max: None,
    why: "",
    examples: "\"90d\" or \"2160h\"",
};

/// `[store]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The SQLite file. Default: `/var/lib/hookwall/events.db`. Used as written: a relative path is
    /// relative to the daemon's working directory (the bundled dev config keeps its store under
    /// `target/` that way).
    pub path: PathBuf,
    /// Delivered events older than this are purged (hourly, and by `hookwall queue purge`).
    /// Default: [`DEFAULT_RETENTION`] (30 days); at least an hour, and more than twice the
    /// longest `route.tolerance_seconds` (checked with the routes).
    pub retention: Duration,
    /// How long after its delivery a purged event's key (its tombstone) still recognises a
    /// replay as a duplicate; tombstones older than this are purged with the events. Default:
    /// [`DEFAULT_DEDUPE_WINDOW`] (90 days), or twice `retention` when that is longer; longer
    /// than `retention` when set.
    pub dedupe_window: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawStore {
    path: Option<PathBuf>,
    // Durations are read untyped, so a number gets our message ("write it with a unit") instead of
    // serde's, and does not stop the other checks.
    retention: Option<toml::Value>,
    dedupe_window: Option<toml::Value>,
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
    /// `[store]`, resolved: by the full load and by `hookwall queue`'s (`config::partial`).
    pub(in crate::config) fn store(&mut self, raw: RawStore) -> Option<StoreConfig> {
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
        let dedupe_window = self.dedupe_window(raw.dedupe_window, retention);
        Some(StoreConfig {
            path,
            retention: retention?,
            dedupe_window: dedupe_window?,
        })
    }

    /// `store.dedupe_window`: when set, longer than `retention`, or the tombstones would be
    /// purged before the events they stand for and protect nothing; when not, the default or
    /// twice `retention`, whichever is longer, so that a long retention alone stays valid.
    fn dedupe_window(
        &mut self,
        raw: Option<toml::Value>,
        retention: Option<Duration>,
    ) -> Option<Duration> {
        let key = KeyPath::of("store.dedupe_window");
        let set = raw.is_some();
        let window = self.duration(&key, raw, &DEDUPE_WINDOW)?;
        let Some(retention) = retention else {
            return Some(window);
        };
        if !set {
            return Some(window.max(retention.saturating_mul(2)));
        }
        if window <= retention {
            self.error(
                &key,
                format!(
                    "{} is not longer than store.retention ({}): a purged event's tombstone is \
                     what recognises a replay of it once its row is gone, so keep tombstones \
                     longer than rows, e.g. dedupe_window = \"{}\"",
                    human(window),
                    human(retention),
                    human(retention.saturating_mul(3))
                ),
            );
            return None;
        }
        Some(window)
    }

    /// `store.retention` against the routes' `tolerance_seconds`: a callback with a signed
    /// timestamp passes the timestamp check while it is within the tolerance on either side of
    /// the clock, so one signed ahead by the tolerance is accepted for twice the tolerance. For
    /// that whole time a replay must find the event's row (with its body, for `hookwall queue
    /// show`), not depend on the tombstone alone.
    pub(super) fn retention_outlasts_tolerance(
        &mut self,
        store: Option<&StoreConfig>,
        routes: &[RouteConfig],
    ) {
        let Some(store) = store else { return };
        let Some(route) = routes
            .iter()
            .filter(|route| route.verify.has_timestamp())
            .max_by_key(|route| route.tolerance_seconds)
        else {
            return;
        };
        let replayable = Duration::from_secs(route.tolerance_seconds.saturating_mul(2));
        if store.retention > replayable {
            return;
        }
        self.error(
            &KeyPath::of("store.retention"),
            format!(
                "{} must be more than twice the longest signature tolerance, {} s on route \
                 \"{}\" (so more than {}): a signed callback passes its timestamp check for \
                 that long, and a replay within it must find the event's row; raise \
                 store.retention (e.g. retention = \"{}\") or lower that route's \
                 tolerance_seconds",
                human(store.retention),
                route.tolerance_seconds,
                route.path,
                human(replayable),
                human(DEFAULT_RETENTION)
            ),
        );
    }
}
