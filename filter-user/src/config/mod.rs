//! The config file: its schema, defaults, loading and validation.
//!
//! Every key hookwall reads, its default and its rules live in this module. A config is
//! either valid as a whole or refused with every problem found, each with file, line, key and a
//! message that says why and how to fix it: an operator fixing a config on a production host should
//! not have to run `hookwall check` once per typo.
//!
//! Loading goes in three steps:
//! 1. parse the TOML (a syntax error stops here: nothing after it can be trusted);
//! 2. deserialise into permissive `Raw*` structs (strings for enums and addresses, untyped values
//!    for secrets) while `serde_ignored` collects every unknown key, so that value problems are
//!    found by our own checks, all of them, instead of by serde, which stops at the first;
//! 3. check and resolve every value into the typed [`Config`], looking up each offending key's
//!    line in the spans of the parsed document.
//!
//! `hookwall queue`, `status` and `detach` take the same steps over their one section only, and
//! ask the host nothing (see `partial`).
//!
//! Secrets are never read at load time (the variable may be set only in the daemon's environment);
//! [`SecretRef::resolve`] reads them when needed.
//!
//! Layout: each section of the file (`[filter]`, `[allow]`, `[server]`, `[store]`, `[metrics]`,
//! `[delivery]`, `[[route]]`, `[daemon]`) has one file under `check/` holding its `Raw*` schema, its resolved
//! type, its defaults and its checks, so that a key is added in one place (`route[].allow` has
//! its own, `check/route_allow.rs`, with the warning about entries the filter would drop). What
//! is shared lives
//! beside it: `diagnostics` (errors, key paths, suggestions, the keys each table accepts), `host`
//! (interfaces, default routes and users), `partial` (loading one section), `secret` (secret
//! references), `permissions` (secret files others can read) and `url` (URLs as text).

mod check;
mod diagnostics;
mod host;
mod partial;
mod permissions;
mod secret;
mod url;

#[cfg(test)]
pub(crate) mod tests;

use std::{
    ops::Range,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;
use toml::de::DeTable;

pub(crate) use check::human;
pub use check::{
    acme::{AcmeConfig, DEFAULT_ACME_CACHE, DEFAULT_ACME_DIRECTORY, DEFAULT_ACME_HTTP_LISTEN},
    allow::{AllowConfig, DEFAULT_CACHE_SUBDIR, DEFAULT_MAX_SHRINK, SourceConfig},
    daemon::{DaemonConfig, RunAs},
    delivery::{
        DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_CONCURRENCY,
        DEFAULT_DELIVERY_TIMEOUT, DEFAULT_DUPLICATE_WINDOW, DEFAULT_MAX_AGE, DEFAULT_MAX_ATTEMPTS,
        DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT, DeliveryConfig, NatsConfig, Sink,
    },
    filter::{AttachMode, DEFAULT_PIN_PATH, FilterConfig, Mode},
    metrics::MetricsConfig,
    route_allow::{RouteAllow, RouteAllowGap},
    routes::{
        DEFAULT_VALIDATION_TIMEOUT, Encoding, OnFailure, RouteConfig, ValidationConfig, VerifyKind,
    },
    server::{
        ClientAddress, DEFAULT_BODY_LIMIT_BYTES, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
        DEFAULT_IPV6_PREFIX, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_PER_CLIENT, DEFAULT_RATE_BURST,
        DEFAULT_RATE_PER_SECOND, ForwardedHeader, Limits, MEMORY_BUDGET_BYTES, ServerConfig, Tls,
    },
    store::{DEFAULT_RETENTION, StoreConfig},
};
pub use diagnostics::{ConfigError, ConfigErrors, accepted_keys, line_of};
pub use partial::{load_pin_path, load_store, parse_pin_path, parse_store};
pub use permissions::LooseFile;
pub use secret::{CREDENTIALS_DIRECTORY, Secret, SecretError, SecretRef};
pub(crate) use url::without_query;

use crate::allowlist::Allowlist;
use check::{Checker, RawConfig};
use diagnostics::{KeyPath, LineIndex, key_at, segments};
use host::{Host, LiveHost};

/// Where `hookwall run` and `hookwall check` look without `-c`.
pub const DEFAULT_PATH: &str = "/etc/hookwall/hookwall.toml";

/// A valid config, with every default applied and every path resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from, as given.
    pub path: PathBuf,
    /// `[filter]`: where and how the XDP program runs.
    pub filter: FilterConfig,
    /// `[allow]`: the inputs of the allowlist, as written (see [`Config::allowlist`] for the result).
    pub allow: AllowConfig,
    /// `[server]`: the HTTPS endpoint.
    pub server: ServerConfig,
    /// `[store]`: the durable event store.
    pub store: StoreConfig,
    /// `[metrics]`: the Prometheus listener.
    pub metrics: MetricsConfig,
    /// `[delivery]`: where stored events are delivered; `None`: they are stored only.
    pub delivery: Option<DeliveryConfig>,
    /// `[[route]]`: the webhook routes, in file order.
    pub routes: Vec<RouteConfig>,
    /// The effective allowlist built from presets, CIDRs and files.
    pub allowlist: Allowlist,
    /// `[daemon]`: the process `hookwall run` becomes once the filter is in force.
    pub daemon: DaemonConfig,
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    parse(path, &read(path)?)
}

/// The text of the config file at `path`.
fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!(
                "cannot read the config file: {err}: create it (the repository's \
                 filter-user/hookwall.dev.toml is an example) or pass another with -c FILE"
            ),
        }])
    })
}

/// Validates config `text` as if read from `path` (named in errors; relative `allow.files` and
/// secret files resolve against its directory). Interfaces are checked against this host.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse_with(path, text, &LiveHost)
}

fn parse_with(path: &Path, text: &str, host: &dyn Host) -> Result<Config, ConfigErrors> {
    check_with(
        path,
        text,
        host,
        |_| true,
        |checker, raw: RawConfig| checker.resolve(raw),
    )
}

/// Parses `text` (read from `path`), deserialises it into `R`, reports the unknown keys `report`
/// picks and turns `R` into `T` with `resolve`: the steps every load takes, whether of the whole
/// file or of one section (see `partial`).
fn check_with<R: DeserializeOwned, T>(
    path: &Path,
    text: &str,
    host: &dyn Host,
    report: impl Fn(&KeyPath) -> bool,
    resolve: impl FnOnce(&mut Checker<'_>, R) -> Option<T>,
) -> Result<T, ConfigErrors> {
    let error_at = |span: Option<Range<usize>>, key: Option<String>, message: String| ConfigError {
        file: path.to_path_buf(),
        line: span.map(|span| line_of(text, span.start)),
        key,
        message,
    };
    let doc = DeTable::parse(text).map_err(|err| {
        let message = format!("{}: fix the TOML syntax", err.message());
        ConfigErrors(vec![error_at(err.span(), None, message)])
    })?;

    let mut unknown = Vec::new();
    let raw: Result<R, _> =
        serde_ignored::deserialize(toml::Deserializer::from(doc.clone()), |ignored| {
            unknown.push(KeyPath(segments(&ignored)));
        });

    let mut checker = Checker {
        file: path,
        dir: path.parent().unwrap_or(Path::new("")),
        text,
        lines: LineIndex::new(text),
        doc: doc.get_ref(),
        host,
        errors: Vec::new(),
    };
    for key in unknown.iter().filter(|key| report(key)) {
        checker.unknown_key(key);
    }
    let resolved = match raw {
        Ok(raw) => resolve(&mut checker, raw),
        Err(err) => {
            // A value of the wrong type: serde stops there, so this is the last thing we learn.
            let key = err
                .span()
                .and_then(|span| key_at(doc.get_ref(), span.start));
            let message = format!("{}: fix the value's type", err.message());
            checker
                .errors
                .push(error_at(err.span(), key.map(|k| k.to_string()), message));
            None
        }
    };
    let mut errors = checker.errors;
    match resolved {
        Some(resolved) if errors.is_empty() => Ok(resolved),
        _ => {
            // The config file's own errors first, each file's in line order.
            errors.sort_by_key(|e| (e.file != path, e.file.clone(), e.line.unwrap_or(usize::MAX)));
            Err(ConfigErrors(errors))
        }
    }
}
