//! `[delivery]` and `[delivery.nats]`: where stored events are delivered.

use std::time::Duration;

use serde::Deserialize;

use super::{Checker, DAY, DurationRule, KeyPath, MINUTE, Table, human, serde_names};
use crate::config::{SecretRef, url::has_userinfo};

/// `delivery.timeout` default: the time one delivery attempt may take.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// `delivery.max_attempts` default: attempts before an event becomes a dead letter.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;
/// `delivery.max_age` default: age (since receipt) after which an event becomes a dead letter.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * DAY);
/// `delivery.backoff_initial` default: the wait before the first retry.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// `delivery.backoff_max` default: the longest wait between two attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10 * MINUTE);
/// `delivery.concurrency` default: deliveries in flight at once. 32 lets a JetStream sink
/// pipeline publishes (each attempt waits for its ack) and costs an HTTP application 32
/// keep-alive connections at most.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// `delivery.nats.subject` default.
pub const DEFAULT_NATS_SUBJECT: &str = "hookwall.events";
/// `delivery.nats.stream` default.
pub const DEFAULT_NATS_STREAM: &str = "HOOKWALL";
/// `delivery.nats.duplicate_window` default: the de-duplication window of the stream hookwall
/// creates (JetStream's own default).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * MINUTE);
/// Bounds for `delivery.max_attempts`.
const MAX_ATTEMPTS_RANGE: (i64, i64) = (1, 1000);
/// Bounds for `delivery.concurrency`.
const CONCURRENCY_RANGE: (i64, i64) = (1, 256);

/// `delivery.timeout`: shorter fails healthy applications on a busy network, longer lets a hung
/// application hold a delivery slot.
const DELIVERY_TIMEOUT: DurationRule = DurationRule {
    default: DEFAULT_DELIVERY_TIMEOUT,
    min: Duration::from_millis(100),
    max: Some(Duration::from_secs(5 * MINUTE)),
    why: "",
    examples: "\"10s\" or \"500ms\"",
};
/// `delivery.max_age`.
const MAX_AGE: DurationRule = DurationRule {
    default: DEFAULT_MAX_AGE,
    min: Duration::from_secs(1),
    max: None,
    why: "",
    examples: "\"72h\" or \"3d\"",
};
/// `delivery.backoff_initial` and `delivery.backoff_max` (the latter also >= the former). Short
/// waits are allowed: tests and local applications recover in milliseconds.
const BACKOFF_INITIAL: DurationRule = DurationRule {
    default: DEFAULT_BACKOFF_INITIAL,
    min: Duration::from_millis(1),
    max: Some(Duration::from_secs(DAY)),
    why: "",
    examples: "\"1s\" or \"250ms\"",
};
/// See [`BACKOFF_INITIAL`].
const BACKOFF_MAX: DurationRule = DurationRule {
    default: DEFAULT_BACKOFF_MAX,
    examples: "\"10m\" or \"1h\"",
    ..BACKOFF_INITIAL
};
/// `delivery.nats.duplicate_window`.
const DUPLICATE_WINDOW: DurationRule = DurationRule {
    default: DEFAULT_DUPLICATE_WINDOW,
    min: Duration::from_secs(1),
    max: None,
    why: "",
    examples: "\"2m\" or \"1h\"",
};
/// Examples for URLs in messages.
const DELIVERY_URL_EXAMPLE: &str = "http://127.0.0.1:8000/hookwall";
const NATS_URL_EXAMPLE: &str = "nats://127.0.0.1:4222";

/// `[delivery]`, resolved: how stored events reach the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Where events go: `url` or `[delivery.nats]`, exactly one.
    pub sink: Sink,
    /// The Standard Webhooks signing key for deliveries and validation forwards (`whsec_<base64>`
    /// or raw bytes). Always set with [`Sink::Http`] and when a route has `validation`.
    pub secret: Option<SecretRef>,
    /// Time one attempt may take. Default: [`DEFAULT_DELIVERY_TIMEOUT`]; 100ms to 5m.
    pub timeout: Duration,
    /// Attempts before the event becomes a dead letter. Default: [`DEFAULT_MAX_ATTEMPTS`];
    /// 1 to 1000.
    pub max_attempts: u32,
    /// Age since receipt after which the event becomes a dead letter. Default:
    /// [`DEFAULT_MAX_AGE`]; at least 1s.
    pub max_age: Duration,
    /// Wait before the first retry. Default: [`DEFAULT_BACKOFF_INITIAL`].
    pub backoff_initial: Duration,
    /// Longest wait between attempts; at least `backoff_initial`. Default: [`DEFAULT_BACKOFF_MAX`].
    pub backoff_max: Duration,
    /// Deliveries in flight at once. Default: [`DEFAULT_CONCURRENCY`]; 1 to 256.
    pub concurrency: usize,
}

/// Where deliveries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// `delivery.url`: an HTTP POST per event to the application.
    Http {
        /// An `http` or `https` URL with a host and without credentials.
        url: String,
    },
    /// `[delivery.nats]`: a JetStream publish per event.
    Nats(NatsConfig),
}

/// `[delivery.nats]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The server: `nats://HOST:PORT`, `tls://HOST:PORT` or `HOST:PORT`, without credentials.
    pub url: String,
    /// Messages are published to exactly this subject. Default: [`DEFAULT_NATS_SUBJECT`].
    pub subject: String,
    /// The stream, created if missing with subjects `[subject]`. Default: [`DEFAULT_NATS_STREAM`].
    pub stream: String,
    /// The stream's de-duplication window when hookwall creates it. Default:
    /// [`DEFAULT_DUPLICATE_WINDOW`].
    pub duplicate_window: Duration,
    /// Optional auth token.
    pub token: Option<SecretRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a [delivery] table")]
pub(crate) struct RawDelivery {
    url: Option<String>,
    pub(super) secret: Option<toml::Value>,
    timeout: Option<toml::Value>,
    max_attempts: Option<i64>,
    max_age: Option<toml::Value>,
    backoff_initial: Option<toml::Value>,
    backoff_max: Option<toml::Value>,
    concurrency: Option<i64>,
    nats: Option<RawNats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a [delivery.nats] table")]
struct RawNats {
    url: Option<String>,
    subject: Option<String>,
    stream: Option<String>,
    duplicate_window: Option<toml::Value>,
    token: Option<toml::Value>,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[
    Table {
        path: "delivery",
        array: false,
        keys: serde_names::<RawDelivery>,
        secret_refs: &["secret"],
        secret_ref_lists: &[],
    },
    Table {
        path: "delivery.nats",
        array: false,
        keys: serde_names::<RawNats>,
        secret_refs: &["token"],
        secret_ref_lists: &[],
    },
];

impl Checker<'_> {
    pub(super) fn delivery(&mut self, raw: Option<RawDelivery>) -> Option<Option<DeliveryConfig>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        let at = KeyPath::of("delivery");
        let url_given = raw.url.is_some();
        let nats_given = raw.nats.is_some();
        let secret_given = raw.secret.is_some();
        let url = raw
            .url
            .map(|url| self.http_url(&at.key("url"), url, DELIVERY_URL_EXAMPLE));
        let nats = raw.nats.map(|nats| self.nats(nats));
        let secret = self.optional_secret(&at.key("secret"), raw.secret.as_ref(), "secret = ");
        let timeout = self.duration(&at.key("timeout"), raw.timeout, &DELIVERY_TIMEOUT);
        let max_attempts = self.integer(
            &at.key("max_attempts"),
            raw.max_attempts,
            i64::from(DEFAULT_MAX_ATTEMPTS),
            MAX_ATTEMPTS_RANGE,
        );
        let max_age = self.duration(&at.key("max_age"), raw.max_age, &MAX_AGE);
        let backoff_initial = self.duration(
            &at.key("backoff_initial"),
            raw.backoff_initial,
            &BACKOFF_INITIAL,
        );
        let mut backoff_max = self.duration(&at.key("backoff_max"), raw.backoff_max, &BACKOFF_MAX);
        if let (Some(initial), Some(max)) = (backoff_initial, backoff_max)
            && max < initial
        {
            self.error(
                &at.key("backoff_max"),
                format!(
                    "backoff_max ({}) is below backoff_initial ({}): the wait between attempts \
                     starts at backoff_initial and doubles up to backoff_max; raise backoff_max \
                     or lower backoff_initial",
                    human(max),
                    human(initial)
                ),
            );
            backoff_max = None;
        }
        let concurrency = self.integer(
            &at.key("concurrency"),
            raw.concurrency,
            i64::try_from(DEFAULT_CONCURRENCY).unwrap_or(i64::MAX),
            CONCURRENCY_RANGE,
        );

        let sink = match (url, nats) {
            (Some(url), None) => url.map(|url| Sink::Http { url }),
            (None, Some(nats)) => nats.map(Sink::Nats),
            (Some(_), Some(_)) => {
                self.error(
                    &at.key("url"),
                    "`url` and [delivery.nats] both say where events go: keep `url` to POST each \
                     event to the application, or [delivery.nats] to publish it to NATS JetStream",
                );
                None
            }
            (None, None) => {
                self.error(
                    &at,
                    format!(
                        "[delivery] needs where to deliver: url = \"{DELIVERY_URL_EXAMPLE}\" to \
                         POST each event to the application, or a [delivery.nats] table to \
                         publish it to NATS JetStream; remove [delivery] to only store events"
                    ),
                );
                None
            }
        };
        if url_given && !nats_given && !secret_given {
            self.error(
                &at,
                "delivery.url needs `secret`: hookwall signs every delivery (Standard Webhooks) \
                 so the application can trust it; add secret = { env = \
                 \"HOOKWALL_DELIVERY_SECRET\" } and set it in the daemon's environment",
            );
            return None;
        }
        // Every value is within bounds that fit u32 and usize.
        Some(Some(DeliveryConfig {
            sink: sink?,
            secret: secret?,
            timeout: timeout?,
            max_attempts: u32::try_from(max_attempts?).unwrap_or(u32::MAX),
            max_age: max_age?,
            backoff_initial: backoff_initial?,
            backoff_max: backoff_max?,
            concurrency: usize::try_from(concurrency?).unwrap_or(usize::MAX),
        }))
    }

    fn nats(&mut self, raw: RawNats) -> Option<NatsConfig> {
        let at = KeyPath::of("delivery.nats");
        let url = match raw.url {
            Some(url) => self.nats_url(&at.key("url"), url),
            None => {
                self.error(
                    &at,
                    format!(
                        "[delivery.nats] needs the server to publish to: url = \
                         \"{NATS_URL_EXAMPLE}\""
                    ),
                );
                None
            }
        };
        let subject = self.nats_subject(&at.key("subject"), raw.subject);
        let stream = self.nats_stream(&at.key("stream"), raw.stream);
        let duplicate_window = self.duration(
            &at.key("duplicate_window"),
            raw.duplicate_window,
            &DUPLICATE_WINDOW,
        );
        let token = self.optional_secret(&at.key("token"), raw.token.as_ref(), "token = ");
        Some(NatsConfig {
            url: url?,
            subject: subject?,
            stream: stream?,
            duplicate_window: duplicate_window?,
            token: token?,
        })
    }

    /// `nats://HOST:PORT`, `tls://HOST:PORT` or `HOST:PORT`, without credentials.
    fn nats_url(&mut self, key: &KeyPath, url: String) -> Option<String> {
        if has_userinfo(&url) {
            self.error(
                key,
                "the URL carries credentials (user:password@), which `hookwall check` and logs \
                 would show: remove them and use token = { env = \"NATS_TOKEN\" } in \
                 [delivery.nats]",
            );
            return None;
        }
        let problem = match url.parse::<http::Uri>() {
            Err(err) => Some(format!("is not a URL ({err})")),
            Ok(uri) => {
                let scheme_ok = uri.scheme_str().is_none_or(|s| {
                    s.eq_ignore_ascii_case("nats") || s.eq_ignore_ascii_case("tls")
                });
                if !scheme_ok {
                    Some("has a scheme other than nats:// or tls://".to_owned())
                } else if uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() {
                    Some("needs a host and a port".to_owned())
                } else if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                    Some("has a path, which NATS does not use".to_owned())
                } else {
                    None
                }
            }
        };
        match problem {
            None => Some(url),
            Some(problem) => {
                self.error(
                    key,
                    format!(
                        "\"{url}\" {problem}: write e.g. \"{NATS_URL_EXAMPLE}\" (or tls:// for \
                         TLS)"
                    ),
                );
                None
            }
        }
    }

    fn nats_subject(&mut self, key: &KeyPath, raw: Option<String>) -> Option<String> {
        let Some(subject) = raw else {
            return Some(DEFAULT_NATS_SUBJECT.to_owned());
        };
        // A publish subject: dot-separated tokens, none empty, no wildcards, no spaces.
        let valid = subject.split('.').all(|token| {
            !token.is_empty()
                && !token.contains(['*', '>'])
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        if valid {
            return Some(subject);
        }
        self.error(
            key,
            format!(
                "\"{subject}\" is not a subject to publish to: dot-separated names without \
                 spaces or wildcards (* >), e.g. \"{DEFAULT_NATS_SUBJECT}\""
            ),
        );
        None
    }

    fn nats_stream(&mut self, key: &KeyPath, raw: Option<String>) -> Option<String> {
        let Some(stream) = raw else {
            return Some(DEFAULT_NATS_STREAM.to_owned());
        };
        // JetStream's rule for stream names (they become file names on the server).
        let valid = !stream.is_empty()
            && !stream.contains(['.', '*', '>', '/', '\\'])
            && !stream.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            return Some(stream);
        }
        self.error(
            key,
            format!(
                "\"{stream}\" is not a JetStream stream name: no spaces, '.', '*', '>', '/' or \
                 '\\', e.g. \"{DEFAULT_NATS_STREAM}\""
            ),
        );
        None
    }
}
