//! Checking the raw config and resolving it into [`Config`]: the [`Checker`], the rules every
//! section shares (durations, integers, choices, addresses, URLs, secret references), and one
//! file per section with its schema, defaults and checks.

pub(crate) mod acme;
pub(crate) mod allow;
pub(crate) mod daemon;
pub(crate) mod delivery;
pub(crate) mod filter;
pub(crate) mod metrics;
pub(crate) mod providers;
pub(crate) mod route_allow;
pub(crate) mod routes;
pub(crate) mod server;
pub(crate) mod store;

use std::{
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, de::DeserializeOwned};
use toml::de::DeTable;

use super::{
    Config,
    diagnostics::{
        ConfigError, KeyPath, LineIndex, Table, closest, known_keys, locate, parse_choice,
        sections_with, serde_names,
    },
    host::Host,
    secret::{CREDENTIAL_KEY, ENV_KEY, FILE_KEY, SecretRef, is_credential_name},
    url::has_userinfo,
};
use allow::RawAllow;
use daemon::RawDaemon;
use delivery::RawDelivery;
use filter::{Mode, RawFilter};
use metrics::RawMetrics;
use routes::{RawRoute, SigningKey};
use server::RawServer;
use store::RawStore;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

// ---------------------------------------------------------------------------------------------
// The raw schema: what serde reads, before our checks
// ---------------------------------------------------------------------------------------------
//
// Enums, addresses and ports are read as plain strings and integers so that a bad value is
// reported by our checks (with the others) rather than by serde (alone). `None` means "not in the
// file": the defaults are applied in `Checker`, from the constants of each section's file.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawConfig {
    filter: RawFilter,
    allow: RawAllow,
    server: RawServer,
    store: RawStore,
    metrics: RawMetrics,
    route: Vec<RawRoute>,
    delivery: Option<RawDelivery>,
    daemon: RawDaemon,
}

/// Every table of the schema, the root first; each section's file lists its own.
pub(crate) const SCHEMA: &[&[Table]] = &[
    &[Table {
        path: "",
        array: false,
        keys: serde_names::<RawConfig>,
        secret_refs: &[],
        secret_ref_lists: &[],
    }],
    filter::TABLES,
    allow::TABLES,
    server::TABLES,
    acme::TABLES,
    store::TABLES,
    metrics::TABLES,
    routes::TABLES,
    delivery::TABLES,
    daemon::TABLES,
];

/// Collects errors while turning the raw config into the resolved one.
///
/// Its methods return `None` exactly when they have recorded an error (so an optional setting comes
/// back as `Option<Option<T>>`); callers run every check first and combine the results with `?`
/// only afterwards, so that one bad key never hides another.
pub(super) struct Checker<'a> {
    pub(super) file: &'a Path,
    /// The config file's directory, for relative paths of files it names.
    pub(super) dir: &'a Path,
    pub(super) text: &'a str,
    /// The lines of `text`, for the line of each error and entry.
    pub(super) lines: LineIndex,
    pub(super) doc: &'a DeTable<'a>,
    pub(super) host: &'a dyn Host,
    pub(super) errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn line_of_span(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|span| self.lines.line_of(span.start))
    }

    /// The line of the value at `key` (or of its nearest enclosing item).
    fn line(&self, key: &KeyPath) -> Option<usize> {
        let (_, value) = locate(self.doc, &key.0);
        self.line_of_span(value)
    }

    fn error(&mut self, key: &KeyPath, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: self.line(key),
            key: Some(key.to_string()),
            message: message.into(),
        });
    }

    pub(super) fn unknown_key(&mut self, key: &KeyPath) {
        let dotted = key.to_string();
        if let Some((_, message)) = server::REMOVED_KEYS.iter().find(|(k, _)| *k == dotted) {
            let (key_span, value_span) = locate(self.doc, &key.0);
            let value = value_span
                .clone()
                .and_then(|span| self.text.get(span))
                .unwrap_or("[\"10.0.0.5\"]");
            self.errors.push(ConfigError {
                file: self.file.to_path_buf(),
                line: self.line_of_span(key_span.or(value_span)),
                key: Some(dotted),
                message: message.replace("{value}", value),
            });
            return;
        }
        let name = key.last_key().unwrap_or_default();
        let known = known_keys(key.parent());
        let elsewhere = if key.parent().is_empty() {
            sections_with(name)
        } else {
            Vec::new()
        };
        let advice = if let Some(near) = closest(name, known.iter().copied()) {
            format!("did you mean `{near}`?")
        } else if !elsewhere.is_empty() {
            format!(
                "it belongs in a section: did you mean `{}`?",
                elsewhere.join("` or `")
            )
        } else if known.is_empty() {
            "remove it".to_owned()
        } else {
            format!("remove it; the keys here are: {}", known.join(", "))
        };
        let (key_span, value_span) = locate(self.doc, &key.0);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: self.line_of_span(key_span.or(value_span)),
            key: Some(key.to_string()),
            message: format!("unknown key, hookwall does not read it: {advice}"),
        });
    }

    /// A relative path in the config names a file next to the config file.
    fn beside_config(&self, path: &Path) -> PathBuf {
        self.dir.join(path)
    }

    /// Resolves everything; `None` only if an error was recorded.
    pub(super) fn resolve(&mut self, mut raw: RawConfig) -> Option<Config> {
        let server = self.server(raw.server);
        let listen = server.as_ref().map(|s| s.listen);
        let metrics = self.metrics(raw.metrics, listen);
        // Read apart from the rest of [filter]: the allowlist check needs it even if, say, an
        // interface is wrong.
        let mode = self.choice(
            &KeyPath::of("filter.mode"),
            raw.filter.mode.take(),
            Mode::Enforce,
        );
        let filter = self.filter(raw.filter, mode, listen);
        let (allow, allowlist) = self.allow(raw.allow, mode);
        let store = self.store(raw.store);
        // Validation routes sign with delivery.secret: judged from the raw keys, so that a bad
        // value elsewhere in [delivery] is not also reported as a missing secret.
        let signing = match &raw.delivery {
            None => SigningKey::NoDelivery,
            Some(delivery) if delivery.secret.is_none() => SigningKey::NotSet,
            Some(_) => SigningKey::Set,
        };
        let delivery = self.delivery(raw.delivery);
        let routes = self.routes(raw.route, signing);
        let daemon = self.daemon(raw.daemon);
        self.retention_outlasts_tolerance(store.as_ref(), &routes);
        if let (Some(server), Some(filter)) = (&server, &filter) {
            self.acme_port_unprotected(server, filter, metrics.as_ref());
        }
        if !self.errors.is_empty() {
            return None;
        }
        Some(Config {
            path: self.file.to_path_buf(),
            filter: filter?,
            allow,
            server: server?,
            store: store?,
            metrics: metrics?,
            delivery: delivery?,
            routes,
            allowlist,
            daemon: daemon?,
        })
    }

    /// A duration key: `rule.default` if absent, else a string `humantime` reads ("30d", "10s",
    /// "500ms") within the rule's bounds.
    fn duration(
        &mut self,
        key: &KeyPath,
        raw: Option<toml::Value>,
        rule: &DurationRule,
    ) -> Option<Duration> {
        let Some(value) = raw else {
            return Some(rule.default);
        };
        let examples = rule.examples;
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => {
                self.error(
                    key,
                    format!(
                        "{n} has no unit: durations are strings with one, e.g. \"{n}s\" for \
                         seconds, or {examples}"
                    ),
                );
                return None;
            }
            other => {
                self.error(
                    key,
                    format!(
                        "this is {}, not a duration: write a string with a unit, e.g. {examples}",
                        type_name(&other)
                    ),
                );
                return None;
            }
        };
        let duration = match humantime::parse_duration(text.trim()) {
            Ok(duration) => duration,
            Err(err) => {
                self.error(
                    key,
                    format!("\"{text}\" is not a duration: {err}; write e.g. {examples}"),
                );
                return None;
            }
        };
        if duration >= rule.min && rule.max.is_none_or(|max| duration <= max) {
            return Some(duration);
        }
        let range = match rule.max {
            Some(max) => format!("use {} to {}", human(rule.min), human(max)),
            None => format!("use at least {}", human(rule.min)),
        };
        self.error(
            key,
            format!(
                "\"{text}\" is out of range: {range} (default {}){}",
                human(rule.default),
                rule.why
            ),
        );
        None
    }

    /// An integer key: `default` if absent, else within `min..=max`.
    fn integer(
        &mut self,
        key: &KeyPath,
        raw: Option<i64>,
        default: i64,
        (min, max): (i64, i64),
    ) -> Option<i64> {
        let Some(value) = raw else {
            return Some(default);
        };
        if (min..=max).contains(&value) {
            return Some(value);
        }
        self.error(
            key,
            format!("{value} is out of range: use {min} to {max} (default {default})"),
        );
        None
    }

    /// An optional secret reference: `Some(None)` if absent.
    fn optional_secret(
        &mut self,
        key: &KeyPath,
        raw: Option<&toml::Value>,
        written_as: &str,
    ) -> Option<Option<SecretRef>> {
        match raw {
            None => Some(None),
            Some(value) => self.secret_ref(key, value, written_as).map(Some),
        }
    }

    /// An `http` or `https` URL with a host and without credentials, for the application.
    fn http_url(&mut self, key: &KeyPath, url: String, example: &str) -> Option<String> {
        // Checked on the text before anything else, so that the credentials are never echoed.
        if has_userinfo(&url) {
            self.error(
                key,
                "the URL carries credentials (user:password@), which `hookwall check` and logs \
                 would show: remove them; hookwall signs what it sends with delivery.secret \
                 (the webhook-signature header), which the application checks instead",
            );
            return None;
        }
        let problem = match url.parse::<http::Uri>() {
            _ if !url.contains("://") => {
                Some("is not an absolute URL with scheme and host".to_owned())
            }
            Err(err) => Some(format!("is not a URL ({err})")),
            Ok(uri) => match (uri.scheme_str(), uri.host()) {
                (Some(scheme), Some(host))
                    if (scheme.eq_ignore_ascii_case("http")
                        || scheme.eq_ignore_ascii_case("https"))
                        && !host.is_empty() =>
                {
                    None
                }
                (Some(scheme), _)
                    if !scheme.eq_ignore_ascii_case("http")
                        && !scheme.eq_ignore_ascii_case("https") =>
                {
                    Some(format!(
                        "has scheme \"{scheme}\": only http and https are supported"
                    ))
                }
                _ => Some("is not an absolute URL with scheme and host".to_owned()),
            },
        };
        match problem {
            None => Some(url),
            Some(problem) => {
                self.error(
                    key,
                    format!("\"{url}\" {problem}: write e.g. \"{example}\""),
                );
                None
            }
        }
    }

    /// A config value naming one of `T`'s variants, or `default` if absent.
    fn choice<T: DeserializeOwned>(
        &mut self,
        key: &KeyPath,
        raw: Option<String>,
        default: T,
    ) -> Option<T> {
        let Some(raw) = raw else { return Some(default) };
        parse_choice(&raw)
            .map_err(|message| self.error(key, message))
            .ok()
    }

    fn socket_addr(
        &mut self,
        key: &KeyPath,
        raw: Option<String>,
        default: SocketAddr,
    ) -> Option<SocketAddr> {
        let Some(raw) = raw else { return Some(default) };
        match raw.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    key,
                    format!(
                        "\"{raw}\" is not an address:port: write e.g. \"0.0.0.0:443\", \
                         \"127.0.0.1:9184\" or \"[::]:443\""
                    ),
                );
                None
            }
        }
    }

    /// Reads `{ env = "NAME" }`, `{ file = "PATH" }` or `{ credential = "NAME" }`. `written_as` is
    /// how the user's line begins, to show the fix in their own terms.
    fn secret_ref(
        &mut self,
        key: &KeyPath,
        value: &toml::Value,
        written_as: &str,
    ) -> Option<SecretRef> {
        let example = format!("{written_as}{{ env = \"NAME\" }}");
        let Some(table) = value.as_table() else {
            self.error(key, inline_secret_message(value, &example));
            return None;
        };
        let mut fields = table.iter();
        let parsed = match (fields.next(), fields.next()) {
            (Some((name, toml::Value::String(text))), None) => match name.as_str() {
                ENV_KEY if !text.is_empty() && !text.contains(['=', '\0']) => {
                    Some(SecretRef::Env(text.clone()))
                }
                FILE_KEY if !text.is_empty() => {
                    Some(SecretRef::File(self.beside_config(Path::new(text))))
                }
                CREDENTIAL_KEY if is_credential_name(text) => {
                    Some(SecretRef::Credential(text.clone()))
                }
                CREDENTIAL_KEY => {
                    self.error(
                        key,
                        format!(
                            "{text:?} is not a credential name: a credential is a file of \
                             systemd's $CREDENTIALS_DIRECTORY, named as in the unit's \
                             LoadCredential=NAME:PATH, so NAME is not empty, \".\" or \"..\" and \
                             has no '/': e.g. {written_as}{{ credential = \"stripe\" }}"
                        ),
                    );
                    return None;
                }
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.error(
                key,
                format!(
                    "a secret reference is exactly {{ env = \"NAME\" }} (a variable name, no '='), \
                     {{ file = \"PATH\" }} or {{ credential = \"NAME\" }} (a systemd \
                     credential): e.g. {example}"
                ),
            );
        }
        parsed
    }
}

/// The message for a secret written as a value instead of a reference. It names the value's type
/// only: the value may be the secret itself.
fn inline_secret_message(value: &toml::Value, example: &str) -> String {
    format!(
        "secrets are never written inline (config files get copied, backed up and committed), and \
         this is {}: write {example} and set NAME in the daemon's environment, or use \
         {{ file = \"/etc/hookwall/secrets/NAME\" }} for a file only the daemon can read",
        type_name(value)
    )
}

/// A value's type, in words, for messages that must not repeat the value.
pub(super) fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) | toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// A duration as the config file would write it ("30days", "10m", "500ms"). Whole days stay
/// days ("90days"): humantime would write 90 days as "2months 29days 2h 52m 48s", its month
/// being a twelfth of a year.
pub(crate) fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_nanos() == 0 && secs > 0 && secs.is_multiple_of(DAY) {
        let days = secs / DAY;
        return if days == 1 {
            "1day".to_owned()
        } else {
            format!("{days}days")
        };
    }
    humantime::format_duration(duration).to_string()
}

/// How one duration key is checked: its default, bounds, and the examples its errors give.
#[derive(Debug, Clone, Copy)]
struct DurationRule {
    default: Duration,
    min: Duration,
    /// `None`: no upper bound.
    max: Option<Duration>,
    /// Appended to the out-of-range message: why the bounds are what they are ("" for none).
    why: &'static str,
    /// E.g. `"10s" or "500ms"`.
    examples: &'static str,
}
