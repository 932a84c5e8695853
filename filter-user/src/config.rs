//! The config file: its schema, defaults, loading and validation.
//!
//! Every key hookwall reads, its default and its rules live in this one module. A config is
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
//! Secrets are never read at load time (the variable may be set only in the daemon's environment);
//! [`SecretRef::resolve`] reads them when needed.

use std::{
    collections::HashMap,
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use filter_common::MAX_ALLOWED_PREFIXES;
use ipnet::IpNet;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use toml::de::{DeTable, DeValue};

use crate::{
    allowlist::{self, Allowlist, Entry, Source},
    presets,
};

/// Where `hookwall run` and `hookwall check` look without `-c`.
pub const DEFAULT_PATH: &str = "/etc/hookwall/hookwall.toml";

/// `server.listen` default: the public HTTPS port on every IPv4 address.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 443);
/// `metrics.listen` default: loopback only, so metrics never face the internet by default.
const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9184);
/// `filter.pin_path` default.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/hookwall";
/// `allow.presets` default: Safaricom's published callback addresses.
const DEFAULT_PRESETS: &[&str] = &["mpesa"];
/// `server.tls_cert` default (the name certbot and most ACME clients use).
const DEFAULT_TLS_CERT: &str = "/etc/hookwall/tls/fullchain.pem";
/// `server.tls_key` default.
const DEFAULT_TLS_KEY: &str = "/etc/hookwall/tls/privkey.pem";
/// `store.path` default.
const DEFAULT_STORE_PATH: &str = "/var/lib/hookwall/events.db";
/// `route.tolerance_seconds` default: the five minutes Stripe and Standard Webhooks recommend.
const DEFAULT_TOLERANCE_SECONDS: u64 = 300;
/// Upper bound for `route.tolerance_seconds`: a wider window is a replay window, not a tolerance.
const MAX_TOLERANCE_SECONDS: i64 = 3600;
/// `server.limits.rate_per_second` default: requests per second each client address may make on
/// average (429 beyond it).
pub const DEFAULT_RATE_PER_SECOND: u32 = 200;
/// `server.limits.rate_burst` default: requests a client may make at once before the rate applies.
pub const DEFAULT_RATE_BURST: u32 = 400;
/// `server.limits.max_connections` default: open connections at most (more are closed at once).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// `server.limits.max_in_flight` default: requests being handled at most (more get 503).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// `server.limits.body_limit_bytes` default: provider callbacks are a few KiB (413 above it).
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// `server.limits.header_timeout_ms` default: time to send a request's headers (408 after it).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `server.limits.body_timeout_ms` default: time to send the body once the headers arrived (408).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the rates and counts in `[server.limits]`.
const MAX_LIMIT_COUNT: i64 = 1_000_000;
/// Upper bound for `server.limits.body_limit_bytes`: 64 MiB; no provider sends callbacks that big.
const MAX_BODY_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
/// Bounds for `server.limits.*_timeout_ms`: shorter fails honest clients on a slow network,
/// longer lets slow clients hold sockets.
const TIMEOUT_MS_RANGE: (i64, i64) = (100, 300_000);
/// Linux interface names are at most IFNAMSIZ - 1 bytes.
const MAX_INTERFACE_NAME: usize = 15;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// `store.retention` default: how long delivered events are kept before they are purged.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * DAY);
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
/// `delivery.concurrency` default: deliveries in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// `delivery.nats.subject` default.
pub const DEFAULT_NATS_SUBJECT: &str = "hookwall.events";
/// `delivery.nats.stream` default.
pub const DEFAULT_NATS_STREAM: &str = "HOOKWALL";
/// `delivery.nats.duplicate_window` default: the de-duplication window of the stream hookwall
/// creates (JetStream's own default).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * MINUTE);
/// `route.validation.timeout` default.
pub const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds for `delivery.max_attempts`.
const MAX_ATTEMPTS_RANGE: (i64, i64) = (1, 1000);
/// Bounds for `delivery.concurrency`.
const CONCURRENCY_RANGE: (i64, i64) = (1, 256);

/// `store.retention`: a delivered event's row is also what makes a provider's retry of it a
/// duplicate, so purging within the hour would deliver late retries again.
const RETENTION: DurationRule = DurationRule {
    default: DEFAULT_RETENTION,
    min: Duration::from_secs(HOUR),
    max: None,
    why: "; a delivered event's row is what recognises a provider's retry of it as a duplicate",
    examples: "\"30d\" or \"720h\"",
};
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
/// `route.validation.timeout`: Safaricom waits about 8 s for the answer, and hookwall needs a
/// moment after the deadline to answer for the application.
const VALIDATION_TIMEOUT: DurationRule = DurationRule {
    default: DEFAULT_VALIDATION_TIMEOUT,
    min: Duration::from_millis(100),
    max: Some(Duration::from_secs(7)),
    why: "; Safaricom waits about 8 s for the answer, so hookwall must answer before that",
    examples: "\"5s\" or \"2500ms\"",
};
/// Examples for URLs in messages.
const DELIVERY_URL_EXAMPLE: &str = "http://127.0.0.1:8000/hookwall";
const VALIDATION_URL_EXAMPLE: &str = "http://127.0.0.1:8000/mpesa/validate";
const NATS_URL_EXAMPLE: &str = "nats://127.0.0.1:4222";

// ---------------------------------------------------------------------------------------------
// The resolved config
// ---------------------------------------------------------------------------------------------

/// What the filter does with a packet from a source that is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop it.
    Enforce,
    /// Count it as "would drop" and pass it: for trying an allowlist out before enforcing it.
    Monitor,
}

impl Mode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic where the driver has no XDP support.
    Auto,
    /// Native mode only: fail rather than run slower.
    Native,
    /// Generic (SKB) mode: works on every interface, after the kernel has allocated the skb.
    Generic,
}

impl AttachMode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
}

/// `[filter]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// Interfaces to attach to; never empty. Default (key unset or `[]`): the interface of the
    /// default route, from /proc/net/route, else /proc/net/ipv6_route.
    pub interfaces: Vec<String>,
    /// Whether `interfaces` came from the default route rather than the file.
    pub interfaces_from_default_route: bool,
    /// Default: [`Mode::Enforce`].
    pub mode: Mode,
    /// Default: [`AttachMode::Auto`].
    pub attach: AttachMode,
    /// Destination ports (TCP and UDP) the filter judges; sorted, without duplicates, never empty.
    /// Default: the port of `server.listen`.
    pub protected_ports: Vec<u16>,
    /// Absolute bpffs directory for the pinned program and maps. Default: `/sys/fs/bpf/hookwall`.
    pub pin_path: PathBuf,
    /// Drop non-first IP fragments to protected ports from sources not allowed (their ports cannot
    /// be read, so by default they pass). Default: false.
    pub strict_fragments: bool,
}

/// `[allow]` as written; the merged result is [`Config::allowlist`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowConfig {
    /// Built-in lists by name. Default: `["mpesa"]`.
    pub presets: Vec<String>,
    /// Addresses and prefixes, as written. Default: none.
    pub cidrs: Vec<String>,
    /// Allowlist files, resolved against the config file's directory. Default: none.
    pub files: Vec<PathBuf>,
}

/// Where the HTTPS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// PEM files (`server.tls_cert`, `server.tls_key`), resolved against the config file's
    /// directory. Defaults: `/etc/hookwall/tls/fullchain.pem` and `/etc/hookwall/tls/privkey.pem`.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// `server.tls = "self-signed"`: a certificate generated at start, for a first run only.
    SelfSigned,
}

/// `[server]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Default: `0.0.0.0:443`.
    pub listen: SocketAddr,
    /// Default: [`Tls::Files`] with the default paths; never self-signed unless asked for.
    pub tls: Tls,
    /// Peers whose `X-Forwarded-For` is believed. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// `[server.limits]`: abuse limits. Defaults: [`Limits::default`].
    pub limits: Limits,
}

/// `[server.limits]`, resolved: the receiver's abuse limits, each with its own outcome label.
/// Read at start; a reload keeps the ones in force (they take effect at the next restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `rate_per_second`: requests per second per client address on average (429 with
    /// `Retry-After` beyond it). Default: [`DEFAULT_RATE_PER_SECOND`].
    pub rate_per_second: u32,
    /// `rate_burst`: requests a client may make at once. Default: [`DEFAULT_RATE_BURST`].
    pub rate_burst: u32,
    /// `max_connections`: open connections at most; more are closed at once, unanswered.
    /// Default: [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// `max_in_flight`: requests being handled at most; more get 503 (outcome `overloaded`).
    /// Default: [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// `body_limit_bytes`: largest body accepted (413 above it, declared or sent).
    /// Default: [`DEFAULT_BODY_LIMIT_BYTES`].
    pub body_limit_bytes: usize,
    /// `header_timeout_ms`: time to send a request's headers (HTTP/1.1; 408 if part of a request
    /// arrived, a silent close if the connection sat idle). Default: [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// `body_timeout_ms`: time to send the whole body once the headers arrived (408).
    /// Default: [`DEFAULT_BODY_TIMEOUT`].
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_per_second: DEFAULT_RATE_PER_SECOND,
            rate_burst: DEFAULT_RATE_BURST,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

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

/// `[delivery]`, resolved: how stored events reach the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Where events go: `url` or `[delivery.nats]`, exactly one.
    pub sink: Sink,
    /// The Standard Webhooks signing key for deliveries and validation forwards ("whsec_<base64>"
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

/// `[metrics]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Default: `127.0.0.1:9184`. Never the public listener.
    pub listen: SocketAddr,
}

/// How a route authenticates a callback (`route.verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyKind {
    /// M-Pesa Daraja: source address plus an unguessable token in the path (`token`).
    Mpesa,
    /// Standard Webhooks (`webhook-signature`, `webhook-timestamp`).
    StandardWebhooks,
    /// Stripe (`Stripe-Signature`).
    Stripe,
    /// GitHub (`X-Hub-Signature-256`).
    Github,
    /// Generic HMAC-SHA256 of the body in a configured `header`.
    HmacSha256,
    /// A shared secret sent verbatim in a configured `header`.
    SharedSecret,
}

impl VerifyKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyKind::Mpesa => "mpesa",
            VerifyKind::StandardWebhooks => "standard-webhooks",
            VerifyKind::Stripe => "stripe",
            VerifyKind::Github => "github",
            VerifyKind::HmacSha256 => "hmac-sha256",
            VerifyKind::SharedSecret => "shared-secret",
        }
    }

    /// Whether the provider signs a timestamp, so that `tolerance_seconds` means something.
    fn has_timestamp(self) -> bool {
        matches!(self, VerifyKind::StandardWebhooks | VerifyKind::Stripe)
    }

    /// Whether the user must name the header (no provider convention to fall back on).
    fn needs_header(self) -> bool {
        matches!(self, VerifyKind::HmacSha256 | VerifyKind::SharedSecret)
    }
}

impl fmt::Display for VerifyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an `hmac-sha256` signature is encoded in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lowercase or uppercase hex.
    Hex,
    /// Standard base64.
    Base64,
}

impl Encoding {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }
}

/// One `[[route]]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// URL path, starting with '/'; unique among routes. For `mpesa` the URL given to Daraja is
    /// `{path}/{token}`.
    pub path: String,
    /// How callbacks on this route are authenticated.
    pub verify: VerifyKind,
    /// `mpesa` only (required there): the path token.
    pub token: Option<SecretRef>,
    /// Every kind but `mpesa` (required, at least one): signing secrets; several for rotation.
    pub secrets: Vec<SecretRef>,
    /// Accepted clock skew for signed timestamps (`standard-webhooks`, `stripe`). Default: 300.
    pub tolerance_seconds: u64,
    /// `hmac-sha256` and `shared-secret` (required there): the header carrying the signature or
    /// secret.
    pub header: Option<String>,
    /// `hmac-sha256` only: the signature's encoding; `Some(Hex)` by default there, `None` for the
    /// other kinds.
    pub encoding: Option<Encoding>,
    /// `hmac-sha256` and `shared-secret`: text before the value in the header (e.g. `sha256=`).
    pub prefix: Option<String>,
    /// `mpesa` only: forward C2B validation requests to the application and answer Daraja with
    /// its decision. Default: none (hookwall answers with acceptance itself).
    pub validation: Option<ValidationConfig>,
}

/// A route's `validation = { url, timeout, on_failure }`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    /// The application's endpoint (`http` or `https`) that decides.
    pub url: String,
    /// Time the application has to answer. Default: [`DEFAULT_VALIDATION_TIMEOUT`]; 100ms to 7s.
    pub timeout: Duration,
    /// The answer Daraja gets on timeout, error or an invalid answer. Required.
    pub on_failure: OnFailure,
}

/// What a validation route answers when the application does not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Accept the payment (`ResultCode` 0).
    Accept,
    /// Reject the payment.
    Reject,
}

impl OnFailure {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Accept => "accept",
            OnFailure::Reject => "reject",
        }
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Where a secret is read from; the secret itself is never in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `{ env = "NAME" }`: the daemon's environment variable NAME.
    Env(String),
    /// `{ file = "PATH" }`: the file's content without trailing newlines; a relative PATH is
    /// resolved against the config file's directory.
    File(PathBuf),
}

impl fmt::Display for SecretRef {
    /// Names where the secret comes from, never its value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env {name}"),
            SecretRef::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A secret's bytes, wiped from memory when dropped and never printed by `Debug`.
pub struct Secret(zeroize::Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps bytes obtained elsewhere (e.g. generated by a test or a tool).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(zeroize::Zeroizing::new(bytes))
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for Secret {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be read. Messages name the variable or file, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set in the daemon's environment.
    #[error(
        "environment variable {name} is not set: set it in the daemon's environment (e.g. a \
         systemd EnvironmentFile=)"
    )]
    EnvNotSet {
        /// The variable.
        name: String,
    },
    /// The secret file could not be read.
    #[error("cannot read secret file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The variable or file is empty: an empty secret would authenticate anyone.
    #[error("secret from {origin} is empty: an empty secret would let anyone through")]
    Empty {
        /// Where it came from, as `env NAME` or `file PATH`.
        origin: String,
    },
}

impl SecretRef {
    /// Reads the secret now. A file's trailing newlines (`\n` or `\r\n`) are removed, since
    /// editors and `echo` add them.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let bytes = match self {
            SecretRef::Env(name) => {
                use std::os::unix::ffi::OsStringExt as _;
                std::env::var_os(name)
                    .ok_or_else(|| SecretError::EnvNotSet { name: name.clone() })?
                    .into_vec()
            }
            SecretRef::File(path) => {
                let mut bytes = std::fs::read(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                let kept = bytes.len()
                    - bytes
                        .iter()
                        .rev()
                        .take_while(|&&b| b == b'\n' || b == b'\r')
                        .count();
                // Wipe the part we cut off too: it is in the same allocation.
                bytes[kept..].fill(0);
                bytes.truncate(kept);
                bytes
            }
        };
        let secret = Secret(zeroize::Zeroizing::new(bytes));
        if secret.is_empty() {
            return Err(SecretError::Empty {
                origin: self.to_string(),
            });
        }
        Ok(secret)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem in a config, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in (the config file, or an allowlist file it names).
    pub file: PathBuf,
    /// 1-based line in `file`.
    pub line: Option<usize>,
    /// The key path in the config, e.g. `allow.cidrs[2]` or `route[0].verify` (indices 0-based).
    pub key: Option<String>,
    /// Why it is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// ``FILE:LINE: `key`: message``, leaving out the parts that are unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char('\n')?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The 1-based line of `byte_offset` in `text` (offsets past the end count as the last line).
pub fn line_of(text: &str, byte_offset: usize) -> usize {
    let end = byte_offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!(
                "cannot read the config file: {err}: create it (the repository's \
                 filter-user/hookwall.dev.toml is an example) or pass another with -c FILE"
            ),
        }])
    })?;
    parse(path, &text)
}

/// Validates config `text` as if read from `path` (named in errors; relative `allow.files` and
/// secret files resolve against its directory). Interfaces are checked against this host.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse_with(path, text, &LiveHost)
}

/// What the config needs to know about the host; a trait so tests do not depend on the machine's
/// interfaces and routes.
trait Host {
    /// Names of the host's network interfaces, sorted.
    fn interfaces(&self) -> Vec<String>;
    /// The interface of the default route: IPv4's, else IPv6's.
    fn default_route_interface(&self) -> Option<String>;
}

/// The machine we run on, read from /sys and /proc (reading only: `check` touches nothing).
struct LiveHost;

impl Host for LiveHost {
    fn interfaces(&self) -> Vec<String> {
        // if_nameindex asks the kernel (netlink) about this process's network namespace;
        // /sys/class/net would show the namespace sysfs was mounted in, which differs under
        // `nsenter --net`.
        let mut names = Vec::new();
        // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
        unsafe {
            let list = libc::if_nameindex();
            if list.is_null() {
                return names;
            }
            let mut entry = list;
            while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
                names.push(
                    std::ffi::CStr::from_ptr((*entry).if_name)
                        .to_string_lossy()
                        .into_owned(),
                );
                entry = entry.add(1);
            }
            libc::if_freenameindex(list);
        }
        names.sort();
        names
    }

    fn default_route_interface(&self) -> Option<String> {
        let read = |path| std::fs::read_to_string(path).ok();
        read("/proc/net/route")
            .and_then(|table| default_route_v4(&table))
            .or_else(|| read("/proc/net/ipv6_route").and_then(|table| default_route_v6(&table)))
    }
}

/// Kernel route flags (linux/route.h).
const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// The interface of the IPv4 default route with the lowest metric, from /proc/net/route
/// (`Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, hex fields).
fn default_route_v4(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [iface, dest, _gw, flags, _refcnt, _use, metric, mask, ..] = fields[..] else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let is_default = dest == "00000000" && mask == "00000000";
            (is_default && flags & RTF_UP != 0 && flags & RTF_REJECT == 0)
                .then(|| Some((metric.parse::<u32>().ok()?, iface.to_owned())))?
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the IPv6 default route with the lowest metric, from /proc/net/ipv6_route
/// (`dest plen src splen nexthop metric refcnt use flags iface`, hex fields, no header). The
/// kernel lists an unreachable default on `lo`; that one is skipped.
fn default_route_v6(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [
                dest,
                plen,
                _src,
                _splen,
                _hop,
                metric,
                _refcnt,
                _use,
                flags,
                iface,
            ] = fields[..]
            else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let is_default = plen == "00" && dest.bytes().all(|b| b == b'0');
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && iface != "lo";
            (is_default && usable)
                .then(|| Some((u32::from_str_radix(metric, 16).ok()?, iface.to_owned())))?
        })
        .min()
        .map(|(_, iface)| iface)
}

fn parse_with(path: &Path, text: &str, host: &dyn Host) -> Result<Config, ConfigErrors> {
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
    let raw: Result<RawConfig, _> =
        serde_ignored::deserialize(toml::Deserializer::from(doc.clone()), |ignored| {
            unknown.push(KeyPath(segments(&ignored)));
        });

    let mut checker = Checker {
        file: path,
        dir: path.parent().unwrap_or(Path::new("")),
        text,
        doc: doc.get_ref(),
        host,
        errors: Vec::new(),
    };
    for key in &unknown {
        checker.unknown_key(key);
    }
    let config = match raw {
        Ok(raw) => checker.resolve(raw),
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
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            // The config file's own errors first, each file's in line order.
            errors.sort_by_key(|e| (e.file != path, e.file.clone(), e.line.unwrap_or(usize::MAX)));
            Err(ConfigErrors(errors))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw schema: what serde reads, before our checks
// ---------------------------------------------------------------------------------------------
//
// Enums, addresses and ports are read as plain strings and integers so that a bad value is
// reported by our checks (with the others) rather than by serde (alone). `None` means "not in the
// file": the defaults are applied in `Checker`, from the constants at the top of this module.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    filter: RawFilter,
    allow: RawAllow,
    server: RawServer,
    store: RawStore,
    metrics: RawMetrics,
    route: Vec<RawRoute>,
    delivery: Option<RawDelivery>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawFilter {
    interfaces: Option<Vec<String>>,
    mode: Option<String>,
    attach: Option<String>,
    protected_ports: Option<Vec<i64>>,
    pin_path: Option<PathBuf>,
    strict_fragments: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAllow {
    presets: Option<Vec<String>>,
    cidrs: Vec<String>,
    files: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServer {
    listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls: Option<String>,
    trusted_proxies: Vec<String>,
    limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLimits {
    rate_per_second: Option<i64>,
    rate_burst: Option<i64>,
    max_connections: Option<i64>,
    max_in_flight: Option<i64>,
    body_limit_bytes: Option<i64>,
    header_timeout_ms: Option<i64>,
    body_timeout_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawStore {
    path: Option<PathBuf>,
    // Durations are read untyped, so a number gets our message ("write it with a unit") instead of
    // serde's, and does not stop the other checks.
    retention: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, expecting = "a [delivery] table")]
struct RawDelivery {
    url: Option<String>,
    secret: Option<toml::Value>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(
    default,
    expecting = "a table: validation = { url = \"...\", on_failure = \"accept\" }"
)]
struct RawValidation {
    url: Option<String>,
    timeout: Option<toml::Value>,
    on_failure: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRoute {
    path: Option<String>,
    verify: Option<String>,
    // Secrets are read untyped: a typed read would let serde quote an inline secret back in its
    // error message.
    token: Option<toml::Value>,
    secrets: Option<toml::Value>,
    tolerance_seconds: Option<i64>,
    header: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
    validation: Option<RawValidation>,
}

/// The only value of `server.tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum TlsKind {
    SelfSigned,
}

// ---------------------------------------------------------------------------------------------
// Key paths and their place in the file
// ---------------------------------------------------------------------------------------------

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a value in the document, shown as `route[0].secrets[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// A path of dotted keys, e.g. `"filter.mode"`.
    fn of(dotted: &str) -> Self {
        KeyPath(dotted.split('.').map(|k| Seg::Key(k.to_owned())).collect())
    }

    fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.to_owned()));
        path
    }

    fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    /// The path of the table holding the last key.
    fn parent(&self) -> &[Seg] {
        &self.0[..self.0.len().saturating_sub(1)]
    }

    fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(key)) => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut segs = segments(parent);
            segs.push(Seg::Index(*index));
            segs
        }
        Path::Map { parent, key } => {
            let mut segs = segments(parent);
            segs.push(Seg::Key(key.clone()));
            segs
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

/// Spans of the deepest item along `path` that exists in the document: (key span, value span).
/// A missing key thus points at its table (e.g. the `[[route]]` header it is missing from).
fn locate(root: &DeTable<'_>, path: &[Seg]) -> (Option<Range<usize>>, Option<Range<usize>>) {
    let mut spans = (None, None);
    let mut current: Option<&DeValue<'_>> = None;
    for seg in path {
        let table = match current {
            None => Some(root),
            Some(value) => value.as_table(),
        };
        let step = match seg {
            Seg::Key(key) => table
                .and_then(|t| t.get_key_value(key.as_str()))
                .map(|(k, v)| (Some(k.span()), v)),
            Seg::Index(index) => current
                .and_then(DeValue::as_array)
                .and_then(|array| array.get(*index))
                .map(|v| (None, v)),
        };
        let Some((key_span, value)) = step else { break };
        spans = (key_span, Some(value.span()));
        current = Some(value.get_ref());
    }
    spans
}

/// The key path of the innermost item whose key or value covers `offset`.
fn key_at(root: &DeTable<'_>, offset: usize) -> Option<KeyPath> {
    let mut best = None;
    key_at_table(root, &KeyPath(Vec::new()), offset, &mut best);
    best.map(|(_, path)| path)
}

/// The best match so far: its span's length and its path.
type KeyMatch = Option<(usize, KeyPath)>;

fn key_at_table(table: &DeTable<'_>, path: &KeyPath, offset: usize, best: &mut KeyMatch) {
    for (key, item) in table.iter() {
        let child = path.key(key.get_ref());
        key_at_span(key.span(), &child, offset, best);
        key_at_item(item, child, offset, best);
    }
}

fn key_at_item(
    item: &toml::Spanned<DeValue<'_>>,
    path: KeyPath,
    offset: usize,
    best: &mut KeyMatch,
) {
    key_at_span(item.span(), &path, offset, best);
    match item.get_ref() {
        DeValue::Table(table) => key_at_table(table, &path, offset, best),
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                key_at_item(element, path.index(index), offset, best);
            }
        }
        _ => {}
    }
}

/// Keeps `path` if its `span` covers `offset` at least as tightly as the best so far (ties go to
/// the later, deeper item).
fn key_at_span(span: Range<usize>, path: &KeyPath, offset: usize, best: &mut KeyMatch) {
    let covers = span.contains(&offset) || (span.is_empty() && span.start == offset);
    if covers && best.as_ref().is_none_or(|(len, _)| span.len() <= *len) {
        *best = Some((span.len(), path.clone()));
    }
}

// ---------------------------------------------------------------------------------------------
// Names serde knows, for suggestions
// ---------------------------------------------------------------------------------------------

/// The names `T`'s derived `Deserialize` accepts: a struct's fields or an enum's variants. Read
/// from serde itself so that suggestions and "expected one of" lists can never drift from the
/// schema.
fn serde_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The probe always fails after recording the names; that failure is the expected outcome.
    let _ = T::deserialize(NameProbe(&mut names));
    names
}

struct NameProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for NameProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("name probe"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("name probe"))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = variants;
        Err(serde::de::Error::custom("name probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// Parses one of `T`'s variant names (as serde spells them), with a message listing them all.
fn parse_choice<T: DeserializeOwned>(value: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer as _;
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        value.into_deserializer();
    T::deserialize(de).map_err(|_| {
        let names = serde_names::<T>();
        let list = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = closest(value, names.iter().copied())
            .map(|n| format!(" (did you mean \"{n}\"?)"))
            .unwrap_or_default();
        format!("\"{value}\" is not one of {list}{hint}")
    })
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), c))
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// Edit distance by characters, counting a swap of two neighbours as one edit (the commonest
/// typo): optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between the first i chars of a and the first j chars of b.
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The keys a table accepts, by its path (indices ignored); the sections for the root.
fn known_keys(table: &[Seg]) -> &'static [&'static str] {
    let keys: Vec<&str> = table
        .iter()
        .filter_map(|seg| match seg {
            Seg::Key(key) => Some(key.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    match keys.as_slice() {
        [] => serde_names::<RawConfig>(),
        ["filter"] => serde_names::<RawFilter>(),
        ["allow"] => serde_names::<RawAllow>(),
        ["server"] => serde_names::<RawServer>(),
        ["server", "limits"] => serde_names::<RawLimits>(),
        ["store"] => serde_names::<RawStore>(),
        ["metrics"] => serde_names::<RawMetrics>(),
        ["route"] => serde_names::<RawRoute>(),
        ["route", "validation"] => serde_names::<RawValidation>(),
        ["delivery"] => serde_names::<RawDelivery>(),
        ["delivery", "nats"] => serde_names::<RawNats>(),
        _ => &[],
    }
}

/// For a key written outside its section (e.g. `mode` at the top), the sections that have it.
fn sections_with(key: &str) -> Vec<String> {
    serde_names::<RawConfig>()
        .iter()
        .filter(|section| known_keys(&KeyPath::of(section).0).contains(&key))
        .map(|section| format!("{section}.{key}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checking and resolving
// ---------------------------------------------------------------------------------------------

/// Collects errors while turning the raw config into the resolved one.
///
/// Its methods return `None` exactly when they have recorded an error (so an optional setting comes
/// back as `Option<Option<T>>`); callers run every check first and combine the results with `?`
/// only afterwards, so that one bad key never hides another.
struct Checker<'a> {
    file: &'a Path,
    /// The config file's directory, for relative paths of files it names.
    dir: &'a Path,
    text: &'a str,
    doc: &'a DeTable<'a>,
    host: &'a dyn Host,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn line_of_span(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|span| line_of(self.text, span.start))
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

    fn unknown_key(&mut self, key: &KeyPath) {
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
    fn resolve(&mut self, mut raw: RawConfig) -> Option<Config> {
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

    // --- [filter] ---

    fn filter(
        &mut self,
        raw: RawFilter,
        mode: Option<Mode>,
        listen: Option<SocketAddr>,
    ) -> Option<FilterConfig> {
        let interfaces = self.interfaces(raw.interfaces);
        let attach = self.choice(&KeyPath::of("filter.attach"), raw.attach, AttachMode::Auto);
        let protected_ports = self.protected_ports(raw.protected_ports, listen);
        let pin_path = self.pin_path(raw.pin_path);
        let (interfaces, interfaces_from_default_route) = interfaces?;
        Some(FilterConfig {
            interfaces,
            interfaces_from_default_route,
            mode: mode?,
            attach: attach?,
            protected_ports: protected_ports?,
            pin_path: pin_path?,
            strict_fragments: raw.strict_fragments.unwrap_or(false),
        })
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

    fn interfaces(&mut self, raw: Option<Vec<String>>) -> Option<(Vec<String>, bool)> {
        let key = KeyPath::of("filter.interfaces");
        let names = raw.unwrap_or_default();
        let present = self.host.interfaces();
        if names.is_empty() {
            return match self.host.default_route_interface() {
                Some(name) => Some((vec![name], true)),
                None => {
                    let message = format!(
                        "no interfaces listed and this host has no default route (read \
                         /proc/net/route and /proc/net/ipv6_route) to take one from: list the \
                         interfaces to guard, e.g. interfaces = [\"eth0\"] ({})",
                        describe_interfaces(&present)
                    );
                    self.error(&key, message);
                    None
                }
            };
        }
        let before = self.errors.len();
        for (index, name) in names.iter().enumerate() {
            let at = key.index(index);
            if names[..index].contains(name) {
                self.error(
                    &at,
                    format!("interface `{name}` is listed twice: remove one"),
                );
            } else if name.is_empty()
                || name.len() > MAX_INTERFACE_NAME
                || name.contains(['/', ':'])
                || name.contains(char::is_whitespace)
            {
                self.error(
                    &at,
                    format!(
                        "`{name}` is not a valid interface name (1 to {MAX_INTERFACE_NAME} \
                         characters, no '/', ':' or spaces): see `ip link` for the names"
                    ),
                );
            } else if !present.contains(name) {
                self.error(
                    &at,
                    format!(
                        "there is no interface `{name}` on this host ({}): fix the name, or leave \
                         interfaces unset to use the default route's",
                        describe_interfaces(&present)
                    ),
                );
            }
        }
        (self.errors.len() == before).then_some((names, false))
    }

    fn protected_ports(
        &mut self,
        raw: Option<Vec<i64>>,
        listen: Option<SocketAddr>,
    ) -> Option<Vec<u16>> {
        let key = KeyPath::of("filter.protected_ports");
        let Some(raw) = raw else {
            let listen = listen?;
            if listen.port() == 0 {
                self.error(
                    &key,
                    "protected_ports defaults to the port of server.listen, which is 0 (picked by \
                     the OS at start, so unknown now): set protected_ports, or give server.listen \
                     a fixed port",
                );
                return None;
            }
            return Some(vec![listen.port()]);
        };
        if raw.is_empty() {
            self.error(
                &key,
                "an empty list protects nothing: remove the key to protect server.listen's port, \
                 or list the ports, e.g. protected_ports = [443]",
            );
            return None;
        }
        let mut ports = Vec::with_capacity(raw.len());
        let mut ok = true;
        for (index, &port) in raw.iter().enumerate() {
            match u16::try_from(port) {
                Ok(port) if port != 0 => ports.push(port),
                _ => {
                    ok = false;
                    self.error(
                        &key.index(index),
                        format!("{port} is not a port: ports are 1 to 65535"),
                    );
                }
            }
        }
        ports.sort_unstable();
        ports.dedup();
        ok.then_some(ports)
    }

    fn pin_path(&mut self, raw: Option<PathBuf>) -> Option<PathBuf> {
        let path = raw.unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_PATH));
        if path.is_absolute() {
            return Some(path);
        }
        self.error(
            &KeyPath::of("filter.pin_path"),
            format!(
                "pin_path `{}` is relative: pins live on the bpf filesystem and outlive the \
                 daemon, so they need an absolute path, e.g. \"{DEFAULT_PIN_PATH}\"",
                path.display()
            ),
        );
        None
    }

    // --- [allow] ---

    fn allow(&mut self, raw: RawAllow, mode: Option<Mode>) -> (AllowConfig, Allowlist) {
        let before = self.errors.len();
        let presets = raw
            .presets
            .unwrap_or_else(|| DEFAULT_PRESETS.iter().map(|&p| p.to_owned()).collect());
        let files: Vec<PathBuf> = raw.files.iter().map(|f| self.beside_config(f)).collect();

        let mut entries = self.preset_entries(&presets);
        entries.extend(self.cidr_entries(&raw.cidrs));
        entries.extend(self.file_entries(&files));
        let allowlist = Allowlist::from_entries(entries);
        self.allow_fits(&allowlist);

        // After a bad entry an empty list is a consequence, not news: report the cause only.
        if mode == Some(Mode::Enforce) && allowlist.is_empty() && self.errors.len() == before {
            self.error(
                &KeyPath::of("allow"),
                "an empty allowlist in enforce mode would drop every packet to the protected \
                 ports: add presets, cidrs or files, or set filter.mode = \"monitor\"",
            );
        }
        let allow = AllowConfig {
            presets,
            cidrs: raw.cidrs,
            files,
        };
        (allow, allowlist)
    }

    /// Refuses an allowlist the kernel maps could not hold through a reload, here rather than
    /// halfway through loading it (each limit is half a map, since a reload holds the old and
    /// the new list together).
    fn allow_fits(&mut self, allowlist: &Allowlist) {
        let key = KeyPath::of("allow");
        let limit = MAX_ALLOWED_PREFIXES as usize;
        for (family, count) in [("IPv4", allowlist.v4.len()), ("IPv6", allowlist.v6.len())] {
            if count > limit {
                self.error(
                    &key,
                    format!(
                        "the allowlist holds {count} {family} prefixes after merging, more than \
                         the {limit} the filter can load: merge them into shorter prefixes or \
                         list fewer (see `hookwall check`)"
                    ),
                );
            }
        }
    }

    fn preset_entries(&mut self, names: &[String]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let key = KeyPath::of("allow.presets").index(index);
            let Some(preset) = presets::find(name) else {
                let hint = closest(name, presets::names())
                    .map(|n| format!(" (did you mean \"{n}\"?)"))
                    .unwrap_or_default();
                let known = presets::names().collect::<Vec<_>>().join(", ");
                self.error(
                    &key,
                    format!(
                        "unknown preset \"{name}\"{hint}: the presets are {known} (see `hookwall \
                         presets`)"
                    ),
                );
                continue;
            };
            for entry in preset.entries {
                match allowlist::parse_entry(entry.cidr) {
                    Ok(net) => entries.push(Entry {
                        net,
                        source: Source::Preset {
                            name: preset.name.to_owned(),
                            citation: entry.source.to_owned(),
                        },
                    }),
                    // The presets are tested to parse; this only guards against a bad edit.
                    Err(message) => {
                        self.error(&key, format!("built-in preset is broken: {message}"))
                    }
                }
            }
        }
        entries
    }

    fn cidr_entries(&mut self, cidrs: &[String]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (index, text) in cidrs.iter().enumerate() {
            let key = KeyPath::of("allow.cidrs").index(index);
            match allowlist::parse_entry(text) {
                Ok(net) => entries.push(Entry {
                    net,
                    // An entry of a default or unlocatable list still needs a line: 0 = unknown.
                    source: Source::Config {
                        line: self.line(&key).unwrap_or(0),
                    },
                }),
                Err(message) => self.error(&key, message),
            }
        }
        entries
    }

    fn file_entries(&mut self, files: &[PathBuf]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (index, path) in files.iter().enumerate() {
            let key = KeyPath::of("allow.files").index(index);
            match allowlist::read_file(path) {
                Ok(found) => entries.extend(found),
                Err(allowlist::ReadFileError::Io { path, source }) => self.error(
                    &key,
                    format!(
                        "cannot read {}: {source}: create it or fix the path (a relative path is \
                         relative to the config file's directory), or remove it from allow.files",
                        path.display()
                    ),
                ),
                Err(allowlist::ReadFileError::BadLines { path, lines }) => {
                    for (line, message) in lines {
                        self.errors.push(ConfigError {
                            file: path.clone(),
                            line: Some(line),
                            key: Some(key.to_string()),
                            message,
                        });
                    }
                }
            }
        }
        entries
    }

    // --- [server], [store], [metrics] ---

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

    fn server(&mut self, raw: RawServer) -> Option<ServerConfig> {
        let listen = self.socket_addr(&KeyPath::of("server.listen"), raw.listen, DEFAULT_LISTEN);
        let tls = self.tls(raw.tls, raw.tls_cert, raw.tls_key);
        let mut trusted_proxies = Vec::new();
        for (index, text) in raw.trusted_proxies.iter().enumerate() {
            match allowlist::parse_entry(text) {
                Ok(net) => trusted_proxies.push(net),
                Err(message) => {
                    self.error(&KeyPath::of("server.trusted_proxies").index(index), message);
                }
            }
        }
        let limits = self.limits(raw.limits);
        Some(ServerConfig {
            listen: listen?,
            tls: tls?,
            trusted_proxies,
            limits: limits?,
        })
    }

    /// One `[server.limits]` integer: `default` if unset, else within `min..=max`.
    fn limit(
        &mut self,
        name: &str,
        raw: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        self.integer(
            &KeyPath::of("server.limits").key(name),
            raw,
            default,
            (min, max),
        )
    }

    fn limits(&mut self, raw: RawLimits) -> Option<Limits> {
        let d = Limits::default();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let ms = |t: Duration| i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
        let (t_min, t_max) = TIMEOUT_MS_RANGE;
        let rate = self.limit(
            "rate_per_second",
            raw.rate_per_second,
            i64::from(d.rate_per_second),
            1,
            MAX_LIMIT_COUNT,
        );
        let burst = self.limit(
            "rate_burst",
            raw.rate_burst,
            i64::from(d.rate_burst),
            1,
            MAX_LIMIT_COUNT,
        );
        let connections = self.limit(
            "max_connections",
            raw.max_connections,
            count(d.max_connections),
            1,
            MAX_LIMIT_COUNT,
        );
        let in_flight = self.limit(
            "max_in_flight",
            raw.max_in_flight,
            count(d.max_in_flight),
            1,
            MAX_LIMIT_COUNT,
        );
        let body = self.limit(
            "body_limit_bytes",
            raw.body_limit_bytes,
            count(d.body_limit_bytes),
            1,
            MAX_BODY_LIMIT_BYTES,
        );
        let header = self.limit(
            "header_timeout_ms",
            raw.header_timeout_ms,
            ms(d.header_timeout),
            t_min,
            t_max,
        );
        let body_timeout = self.limit(
            "body_timeout_ms",
            raw.body_timeout_ms,
            ms(d.body_timeout),
            t_min,
            t_max,
        );
        // Every value is within bounds that fit u32 and usize.
        let as_u32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        let as_usize = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
        let as_ms = |v: i64| Duration::from_millis(v.unsigned_abs());
        Some(Limits {
            rate_per_second: as_u32(rate?),
            rate_burst: as_u32(burst?),
            max_connections: as_usize(connections?),
            max_in_flight: as_usize(in_flight?),
            body_limit_bytes: as_usize(body?),
            header_timeout: as_ms(header?),
            body_timeout: as_ms(body_timeout?),
        })
    }

    fn tls(
        &mut self,
        kind: Option<String>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Option<Tls> {
        let Some(kind) = kind else {
            let cert = cert.unwrap_or_else(|| PathBuf::from(DEFAULT_TLS_CERT));
            let key = key.unwrap_or_else(|| PathBuf::from(DEFAULT_TLS_KEY));
            return Some(Tls::Files {
                cert: self.beside_config(&cert),
                key: self.beside_config(&key),
            });
        };
        // Only one value exists; parsing still rejects (and suggests for) anything else.
        self.choice(&KeyPath::of("server.tls"), Some(kind), TlsKind::SelfSigned)?;
        if cert.is_some() || key.is_some() {
            self.error(
                &KeyPath::of("server.tls"),
                "tls = \"self-signed\" and tls_cert/tls_key both say where the certificate comes \
                 from: keep the files and remove tls, or remove tls_cert and tls_key",
            );
            return None;
        }
        Some(Tls::SelfSigned)
    }

    fn store(&mut self, raw: RawStore) -> Option<StoreConfig> {
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

    // --- [delivery] ---

    fn delivery(&mut self, raw: Option<RawDelivery>) -> Option<Option<DeliveryConfig>> {
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

    fn metrics(&mut self, raw: RawMetrics, server: Option<SocketAddr>) -> Option<MetricsConfig> {
        let key = KeyPath::of("metrics.listen");
        let listen = self.socket_addr(&key, raw.listen, DEFAULT_METRICS_LISTEN)?;
        if let Some(server) = server.filter(|&server| listeners_overlap(listen, server)) {
            self.error(
                &key,
                format!(
                    "{listen} would put metrics on the public listener (server.listen = {server}): \
                     metrics must never be served there; use another port, e.g. \
                     \"{DEFAULT_METRICS_LISTEN}\""
                ),
            );
            return None;
        }
        Some(MetricsConfig { listen })
    }

    // --- [[route]] ---

    fn routes(&mut self, raw: Vec<RawRoute>, signing: SigningKey) -> Vec<RouteConfig> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut routes = Vec::new();
        for (index, raw) in raw.into_iter().enumerate() {
            let at = KeyPath::of("route").index(index);
            if let Some(path) = &raw.path {
                if let Some(&first) = seen.get(path) {
                    let line = self
                        .line(&KeyPath::of("route").index(first).key("path"))
                        .map(|line| format!(" (line {line})"))
                        .unwrap_or_default();
                    self.error(
                        &at.key("path"),
                        format!(
                            "path \"{path}\" is already used by route[{first}]{line}: each path \
                             has one route; remove or rename one"
                        ),
                    );
                } else {
                    seen.insert(path.clone(), index);
                }
            }
            if let Some(route) = self.route(&at, raw, signing) {
                routes.push(route);
            }
        }
        routes
    }

    fn route(&mut self, at: &KeyPath, raw: RawRoute, signing: SigningKey) -> Option<RouteConfig> {
        let path = self.route_path(at, raw.path);
        // Without a kind, nothing else in the route can be judged.
        let verify = self.route_verify(at, raw.verify)?;
        let token = self.route_token(at, verify, raw.token);
        let secrets = self.route_secrets(at, verify, raw.secrets);
        let tolerance_seconds = self.route_tolerance(at, verify, raw.tolerance_seconds);
        let header = self.route_header(at, verify, raw.header);
        let encoding = self.route_encoding(at, verify, raw.encoding);
        let prefix = self.route_prefix(at, verify, raw.prefix);
        let validation = self.route_validation(at, verify, raw.validation, signing);
        Some(RouteConfig {
            path: path?,
            verify,
            token: token?,
            secrets: secrets?,
            tolerance_seconds: tolerance_seconds?,
            header: header?,
            encoding: encoding?,
            prefix: prefix?,
            validation: validation?,
        })
    }

    fn route_validation(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<RawValidation>,
        signing: SigningKey,
    ) -> Option<Option<ValidationConfig>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        if verify != VerifyKind::Mpesa {
            self.not_for(
                at,
                "validation",
                verify,
                true,
                "mpesa (M-Pesa C2B validation)",
            );
            return None;
        }
        let key = at.key("validation");
        let before = self.errors.len();
        let example = format!(
            "validation = {{ url = \"{VALIDATION_URL_EXAMPLE}\", on_failure = \"accept\" }}"
        );
        let url = match raw.url {
            Some(url) => self.http_url(&key.key("url"), url, VALIDATION_URL_EXAMPLE),
            None => {
                self.error(
                    &key,
                    format!("needs the application's endpoint that decides: {example}"),
                );
                None
            }
        };
        let timeout = self.duration(&key.key("timeout"), raw.timeout, &VALIDATION_TIMEOUT);
        let on_failure = match raw.on_failure {
            Some(text) => parse_choice::<OnFailure>(&text)
                .map_err(|message| self.error(&key.key("on_failure"), message))
                .ok(),
            None => {
                self.error(
                    &key,
                    format!(
                        "needs on_failure = \"accept\" or \"reject\": the answer Daraja gets \
                         when the application does not answer in time or answers nonsense; \
                         e.g. {example}"
                    ),
                );
                None
            }
        };
        let fix = "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }";
        match signing {
            SigningKey::Set => {}
            SigningKey::NotSet => self.error(
                &key,
                format!(
                    "validation requests are signed with delivery.secret, which is not set: add \
                     {fix} to [delivery]"
                ),
            ),
            SigningKey::NoDelivery => self.error(
                &key,
                format!(
                    "validation requests are signed with delivery.secret, and there is no \
                     [delivery] section: add one with url (or [delivery.nats]) and {fix}"
                ),
            ),
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Some(ValidationConfig {
            url: url?,
            timeout: timeout?,
            on_failure: on_failure?,
        }))
    }

    fn route_verify(&mut self, at: &KeyPath, raw: Option<String>) -> Option<VerifyKind> {
        let Some(raw) = raw else {
            let kinds = serde_names::<VerifyKind>().join(", ");
            self.error(at, format!("every route needs `verify`, one of: {kinds}"));
            return None;
        };
        parse_choice(&raw)
            .map_err(|message| self.error(&at.key("verify"), message))
            .ok()
    }

    fn route_prefix(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<String>,
    ) -> Option<Option<String>> {
        if verify.needs_header() {
            return Some(raw);
        }
        let kinds = "hmac-sha256 and shared-secret";
        self.not_for(at, "prefix", verify, raw.is_some(), kinds);
        if raw.is_some() { None } else { Some(None) }
    }

    fn route_encoding(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<String>,
    ) -> Option<Option<Encoding>> {
        if verify != VerifyKind::HmacSha256 {
            self.not_for(at, "encoding", verify, raw.is_some(), "hmac-sha256");
            return if raw.is_some() { None } else { Some(None) };
        }
        // Resolved here, so the verifier has no default of its own to keep in step.
        self.choice(&at.key("encoding"), raw, Encoding::Hex)
            .map(Some)
    }

    /// Reports `key` set on a route kind it means nothing for.
    fn not_for(&mut self, at: &KeyPath, key: &str, verify: VerifyKind, present: bool, kinds: &str) {
        if present {
            self.error(
                &at.key(key),
                format!("`{key}` applies only to verify = {kinds}, not \"{verify}\": remove it"),
            );
        }
    }

    fn route_path(&mut self, at: &KeyPath, raw: Option<String>) -> Option<String> {
        let Some(path) = raw else {
            self.error(
                at,
                "every route needs a `path`, e.g. path = \"/hooks/stripe\"",
            );
            return None;
        };
        let problem = if !path.starts_with('/') {
            Some(format!("must start with '/', e.g. \"/{path}\""))
        } else if path.contains(['?', '#']) || path.contains(char::is_whitespace) {
            Some("must be a plain URL path, without spaces, '?' or '#'".to_owned())
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.error(&at.key("path"), format!("route path \"{path}\" {problem}"));
                None
            }
            None => Some(path),
        }
    }

    fn route_token(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<toml::Value>,
    ) -> Option<Option<SecretRef>> {
        let key = at.key("token");
        match (verify, raw) {
            (VerifyKind::Mpesa, Some(value)) => self.secret_ref(&key, &value, "token = ").map(Some),
            (VerifyKind::Mpesa, None) => {
                self.error(
                    at,
                    "verify = \"mpesa\" needs token = { env = \"NAME\" }: Daraja signs nothing, so \
                     an unguessable token in the callback URL ({path}/{token}) is what \
                     authenticates it",
                );
                None
            }
            (_, Some(_)) => {
                self.error(
                    &key,
                    format!(
                        "`token` is for verify = \"mpesa\" only; \"{verify}\" routes use secrets = \
                         [{{ env = \"NAME\" }}]"
                    ),
                );
                None
            }
            (_, None) => Some(None),
        }
    }

    fn route_secrets(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<toml::Value>,
    ) -> Option<Vec<SecretRef>> {
        let key = at.key("secrets");
        if verify == VerifyKind::Mpesa {
            if raw.is_some() {
                self.error(
                    &key,
                    "verify = \"mpesa\" routes are authenticated by `token` (Daraja signs nothing, \
                     so there is nothing to check a secret against): remove secrets",
                );
                return None;
            }
            return Some(Vec::new());
        }
        let example = "secrets = [{ env = \"NAME\" }]";
        let items = match raw {
            None => {
                self.error(
                    at,
                    format!("verify = \"{verify}\" needs the signing secret: {example}"),
                );
                return None;
            }
            Some(toml::Value::Array(items)) if !items.is_empty() => items,
            Some(toml::Value::Array(_)) => {
                self.error(&key, format!("needs at least one secret: {example}"));
                return None;
            }
            Some(toml::Value::Table(_)) => {
                self.error(
                    &key,
                    format!("secrets is a list, so secrets can be rotated: {example}"),
                );
                return None;
            }
            Some(other) => {
                self.error(&key, inline_secret_message(&other, example));
                return None;
            }
        };
        let before = self.errors.len();
        let secrets: Vec<SecretRef> = items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                self.secret_ref(&key.index(index), item, "secrets = [..., ")
            })
            .collect();
        (self.errors.len() == before).then_some(secrets)
    }

    /// Reads `{ env = "NAME" }` or `{ file = "PATH" }`. `written_as` is how the user's line begins,
    /// to show the fix in their own terms.
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
                "env" if !text.is_empty() && !text.contains(['=', '\0']) => {
                    Some(SecretRef::Env(text.clone()))
                }
                "file" if !text.is_empty() => {
                    Some(SecretRef::File(self.beside_config(Path::new(text))))
                }
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.error(
                key,
                format!(
                    "a secret reference is exactly {{ env = \"NAME\" }} (a variable name, no '=') \
                     or {{ file = \"PATH\" }}: e.g. {example}"
                ),
            );
        }
        parsed
    }

    fn route_tolerance(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<i64>,
    ) -> Option<u64> {
        let Some(seconds) = raw else {
            return Some(DEFAULT_TOLERANCE_SECONDS);
        };
        let key = at.key("tolerance_seconds");
        if !verify.has_timestamp() {
            self.error(
                &key,
                format!(
                    "\"{verify}\" callbacks carry no signed timestamp, so tolerance_seconds would \
                     protect nothing: remove it (it applies to standard-webhooks and stripe)"
                ),
            );
            return None;
        }
        match u64::try_from(seconds) {
            Ok(s) if (1..=MAX_TOLERANCE_SECONDS.unsigned_abs()).contains(&s) => Some(s),
            _ => {
                self.error(
                    &key,
                    format!(
                        "{seconds} is out of range: use 1 to {MAX_TOLERANCE_SECONDS} seconds (the \
                         default {DEFAULT_TOLERANCE_SECONDS} suits most senders); a longer window \
                         lets a captured callback be replayed for longer"
                    ),
                );
                None
            }
        }
    }

    fn route_header(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<String>,
    ) -> Option<Option<String>> {
        let key = at.key("header");
        if !verify.needs_header() {
            self.not_for(
                at,
                "header",
                verify,
                raw.is_some(),
                "hmac-sha256 and shared-secret",
            );
            return if raw.is_some() { None } else { Some(None) };
        }
        let Some(header) = raw else {
            self.error(
                at,
                format!(
                    "verify = \"{verify}\" needs the name of the header that carries the \
                     {}: e.g. header = \"X-Signature\"",
                    if verify == VerifyKind::HmacSha256 {
                        "signature"
                    } else {
                        "secret"
                    }
                ),
            );
            return None;
        };
        // RFC 9110 token characters: anything else can never match a received header.
        let valid = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            self.error(
                &key,
                format!("\"{header}\" is not a valid HTTP header name"),
            );
            return None;
        }
        Some(Some(header))
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
fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) | toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// Whether a URL carries `user:password@`. Read on the text, so it works (and nothing is echoed)
/// even when the URL does not parse.
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

/// A duration as the config file would write it ("30days", "10m", "500ms").
fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

/// Whether the validation routes have their signing key (`delivery.secret`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigningKey {
    /// `delivery.secret` is in the file (if it is malformed, that is reported on its own).
    Set,
    /// `[delivery]` is there without `secret`.
    NotSet,
    /// There is no `[delivery]` section.
    NoDelivery,
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

fn describe_interfaces(present: &[String]) -> String {
    if present.is_empty() {
        "no network interfaces found in this network namespace".to_owned()
    } else {
        format!("this host has: {}", present.join(", "))
    }
}

/// Whether binding both addresses would serve on the same socket address: same port, and the
/// same IP or one of them the wildcard (which on Linux also covers the other family for `[::]`).
fn listeners_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip().is_unspecified()
            || b.ip().is_unspecified()
            || a.ip().to_canonical() == b.ip().to_canonical())
}

// ---------------------------------------------------------------------------------------------
// `hookwall check` output
// ---------------------------------------------------------------------------------------------

impl Config {
    /// What `hookwall check` prints for a valid config: every resolved setting, the effective
    /// allowlist with the source of each entry, and the routes with where their secrets come
    /// from (never the secrets).
    pub fn render_check(&self) -> String {
        let mut out = format!("{}: valid\n", self.path.display());
        self.render_filter(&mut out);
        self.render_allowlist(&mut out);
        self.render_services(&mut out);
        self.render_routes(&mut out);
        out
    }

    fn render_filter(&self, out: &mut String) {
        let filter = &self.filter;
        let from = if filter.interfaces_from_default_route {
            " (the default route's)"
        } else {
            ""
        };
        let mode = match filter.mode {
            Mode::Enforce => "enforce (packets from sources not allowed are dropped)",
            Mode::Monitor => "monitor (nothing is dropped; would-be drops are counted)",
        };
        let ports: Vec<String> = filter.protected_ports.iter().map(u16::to_string).collect();
        let fragments = if filter.strict_fragments {
            "dropped unless the source is allowed (strict_fragments)"
        } else {
            "passed (their ports cannot be read)"
        };
        section(out, "[filter]");
        row(
            out,
            "interfaces",
            format_args!("{}{from}", filter.interfaces.join(", ")),
        );
        row(out, "mode", mode);
        row(out, "attach", filter.attach);
        row(out, "protected ports", ports.join(", "));
        row(out, "pin path", filter.pin_path.display());
        row(out, "later fragments", fragments);
        if filter.protected_ports.contains(&22) {
            row(
                out,
                "note",
                "port 22 is protected: SSH from sources not allowed will be cut off",
            );
        }
    }

    fn render_allowlist(&self, out: &mut String) {
        let list = &self.allowlist;
        section(
            out,
            format_args!(
                "[allow] {} IPv4 and {} IPv6 prefixes after merging {} entries",
                list.v4.len(),
                list.v6.len(),
                list.entries.len()
            ),
        );
        let nets: Vec<String> = list.entries.iter().map(|e| e.net.to_string()).collect();
        let width = nets.iter().map(String::len).max().unwrap_or(0);
        for (net, entry) in nets.iter().zip(&list.entries) {
            line(out, format_args!("  {net:<width$}  {}", entry.source));
        }
    }

    fn render_services(&self, out: &mut String) {
        let server = &self.server;
        section(out, "[server]");
        row(out, "listen", server.listen);
        match &server.tls {
            Tls::Files { cert, key } => {
                row(
                    out,
                    "tls",
                    format_args!("{} + {}", cert.display(), key.display()),
                );
            }
            Tls::SelfSigned => row(out, "tls", "self-signed (for a first run only)"),
        }
        let proxies: Vec<String> = server
            .trusted_proxies
            .iter()
            .map(IpNet::to_string)
            .collect();
        row(
            out,
            "trusted proxies",
            if proxies.is_empty() {
                "none".to_owned()
            } else {
                proxies.join(", ")
            },
        );
        let l = &server.limits;
        row(
            out,
            "limits",
            format_args!(
                "{}/s per client (burst {}), {} connections, {} in flight, body {} bytes, \
                 headers {} ms, body {} ms",
                l.rate_per_second,
                l.rate_burst,
                l.max_connections,
                l.max_in_flight,
                l.body_limit_bytes,
                l.header_timeout.as_millis(),
                l.body_timeout.as_millis()
            ),
        );
        section(out, "[store]");
        row(out, "path", self.store.path.display());
        row(
            out,
            "retention",
            format_args!(
                "{} (delivered events older than this are purged)",
                human(self.store.retention)
            ),
        );
        self.render_delivery(out);
        section(out, "[metrics]");
        row(out, "listen", self.metrics.listen);
    }

    fn render_delivery(&self, out: &mut String) {
        section(out, "[delivery]");
        let Some(delivery) = &self.delivery else {
            row(out, "sink", "none (events are stored only)");
            return;
        };
        // Userinfo is refused at load; a query string may still carry a key, so it is not shown.
        match &delivery.sink {
            Sink::Http { url } => row(out, "sink", format_args!("POST {}", without_query(url))),
            Sink::Nats(nats) => {
                row(out, "sink", format_args!("NATS JetStream {}", nats.url));
                row(
                    out,
                    "subject",
                    format_args!(
                        "{} (stream {}, duplicate window {})",
                        nats.subject,
                        nats.stream,
                        human(nats.duplicate_window)
                    ),
                );
                if let Some(token) = &nats.token {
                    row(out, "nats token", format_args!("from {token}"));
                }
            }
        }
        if let Some(secret) = &delivery.secret {
            row(out, "signing secret", format_args!("from {secret}"));
        }
        row(
            out,
            "attempts",
            format_args!(
                "{} per attempt, {} in flight; dead letter after {} attempts or {}",
                human(delivery.timeout),
                delivery.concurrency,
                delivery.max_attempts,
                human(delivery.max_age)
            ),
        );
        row(
            out,
            "backoff",
            format_args!(
                "{} doubling up to {}, with jitter (half to all of it)",
                human(delivery.backoff_initial),
                human(delivery.backoff_max)
            ),
        );
    }

    fn render_routes(&self, out: &mut String) {
        section(out, format_args!("routes: {}", self.routes.len()));
        let width = self.routes.iter().map(|r| r.path.len()).max().unwrap_or(0);
        for route in &self.routes {
            let secrets = match &route.token {
                Some(token) => format!("token from {token}"),
                None => {
                    let from: Vec<String> =
                        route.secrets.iter().map(SecretRef::to_string).collect();
                    format!("secrets from {}", from.join(", "))
                }
            };
            let verify = route.verify.as_str();
            let validation = route
                .validation
                .as_ref()
                .map(|v| {
                    format!(
                        "; validation by {} within {}, else {}",
                        without_query(&v.url),
                        human(v.timeout),
                        v.on_failure
                    )
                })
                .unwrap_or_default();
            line(
                out,
                format_args!(
                    "  {:<width$}  {verify:<17}  {secrets}{validation}",
                    route.path
                ),
            );
        }
    }
}

/// Appends one line to `out`. Writing to a String cannot fail, hence the ignored result.
fn line(out: &mut String, text: impl fmt::Display) {
    let _ = writeln!(out, "{text}");
}

/// A blank line and a section heading.
fn section(out: &mut String, heading: impl fmt::Display) {
    line(out, format_args!("\n{heading}"));
}

/// An aligned `label  value` row of a section.
fn row(out: &mut String, label: &str, value: impl fmt::Display) {
    line(out, format_args!("  {label:<17} {value}"));
}

/// A URL for display: its query string (which may carry a key) replaced by `?…`.
pub(crate) fn without_query(url: &str) -> std::borrow::Cow<'_, str> {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…").into(),
        None => url.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const FILE: &str = "/etc/hookwall/hookwall.toml";

    /// A host with `eth0` and `lo`, and a default route via `eth0` unless told otherwise.
    struct FakeHost {
        interfaces: Vec<String>,
        default: Option<String>,
    }

    impl Host for FakeHost {
        fn interfaces(&self) -> Vec<String> {
            self.interfaces.clone()
        }

        fn default_route_interface(&self) -> Option<String> {
            self.default.clone()
        }
    }

    fn host() -> FakeHost {
        FakeHost {
            interfaces: vec!["eth0".into(), "lo".into()],
            default: Some("eth0".into()),
        }
    }

    /// Joins lines, so that a test's line numbers are its array indices + 1.
    fn lines(lines: &[&str]) -> String {
        lines.join("\n") + "\n"
    }

    fn parse_ok(text: &str) -> Config {
        parse_with(Path::new(FILE), text, &host()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err_with(text: &str, host: &dyn Host) -> Vec<ConfigError> {
        match parse_with(Path::new(FILE), text, host) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(errors) => {
                assert!(!errors.0.is_empty());
                errors.0
            }
        }
    }

    fn parse_err(text: &str) -> Vec<ConfigError> {
        parse_err_with(text, &host())
    }

    /// The only error, checked to be at `key` on `line`.
    fn single_error(text: &str, key: &str, line: usize) -> ConfigError {
        let errors = parse_err(text);
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
        let error = errors.into_iter().next().unwrap();
        assert_eq!(error.key.as_deref(), Some(key), "{error}");
        assert_eq!(error.line, Some(line), "{error}");
        assert_eq!(error.file, Path::new(FILE), "{error}");
        error
    }

    fn assert_contains(error: &ConfigError, needle: &str) {
        assert!(error.message.contains(needle), "{needle:?} not in: {error}");
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const MPESA_ROUTE: &[&str] = &[
        "[[route]]",
        "path = \"/mpesa/c2b/confirmation\"",
        "verify = \"mpesa\"",
        "token = { env = \"HOOKWALL_MPESA_TOKEN\" }",
    ];

    // --- defaults and the bundled examples ---

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let config = parse_ok("");
        assert_eq!(config.path, Path::new(FILE));
        assert_eq!(
            config.filter,
            FilterConfig {
                interfaces: vec!["eth0".into()],
                interfaces_from_default_route: true,
                mode: Mode::Enforce,
                attach: AttachMode::Auto,
                protected_ports: vec![443],
                pin_path: "/sys/fs/bpf/hookwall".into(),
                strict_fragments: false,
            }
        );
        assert_eq!(config.allow.presets, ["mpesa"]);
        assert!(config.allow.cidrs.is_empty() && config.allow.files.is_empty());
        // 196.201.214.206 and .207 merge into one /31.
        assert_eq!(config.allowlist.v4.len(), 11);
        assert_eq!(config.allowlist.entries.len(), 12);
        assert!(config.allowlist.v6.is_empty());
        assert!(config.allowlist.contains(ip("196.201.214.200")));
        assert_eq!(
            config.server,
            ServerConfig {
                listen: "0.0.0.0:443".parse().unwrap(),
                tls: Tls::Files {
                    cert: "/etc/hookwall/tls/fullchain.pem".into(),
                    key: "/etc/hookwall/tls/privkey.pem".into(),
                },
                trusted_proxies: Vec::new(),
                limits: Limits::default(),
            }
        );
        assert_eq!(config.store.path, Path::new("/var/lib/hookwall/events.db"));
        assert_eq!(config.store.retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(config.metrics.listen, "127.0.0.1:9184".parse().unwrap());
        assert_eq!(config.delivery, None);
        assert!(config.routes.is_empty());
    }

    /// The example in SPEC.md, verbatim.
    const SPEC_EXAMPLE: &str = r#"
[filter]
interfaces = ["eth0"]        # where the XDP program attaches
mode = "enforce"             # "enforce" drops; "monitor" counts what it would drop and passes all
attach = "auto"              # "auto" (native, falling back to generic) | "native" | "generic"
protected_ports = [443]      # destination ports judged (TCP and UDP); default: the server's listen port
pin_path = "/sys/fs/bpf/hookwall"

[allow]
presets = ["mpesa"]          # built-in lists; "mpesa" = Safaricom's published callback addresses
cidrs = ["203.0.113.0/24", "2001:db8::/48"]
files = []                   # text files: one address or CIDR per line, '#' comments

[server]
listen = "0.0.0.0:443"
tls_cert = "/etc/hookwall/tls/fullchain.pem"
tls_key = "/etc/hookwall/tls/privkey.pem"
# tls = "self-signed"        # instead of the two files, for a first run only; never the default
trusted_proxies = []         # only these peers' X-Forwarded-For is believed

[store]
path = "/var/lib/hookwall/events.db"   # embedded SQLite; every accepted event, before it is answered

[metrics]
listen = "127.0.0.1:9184"    # GET /metrics, Prometheus text format; never on the public listener

[[route]]
path = "/mpesa/c2b/confirmation"
verify = "mpesa"             # mpesa | standard-webhooks | stripe | github | hmac-sha256 | shared-secret
token = { env = "HOOKWALL_MPESA_TOKEN" }   # mpesa: the URL given to Daraja is {path}/{token}

[[route]]
path = "/hooks/stripe"
verify = "stripe"
secrets = [{ env = "STRIPE_WEBHOOK_SECRET" }]   # several, for rotation
tolerance_seconds = 300
"#;

    #[test]
    fn the_spec_example_parses() {
        let config = parse_ok(SPEC_EXAMPLE);
        assert_eq!(config.filter.interfaces, ["eth0"]);
        assert!(!config.filter.interfaces_from_default_route);
        assert_eq!(config.filter.protected_ports, [443]);
        assert_eq!(config.allowlist.v4.len(), 12);
        assert_eq!(config.allowlist.v6.len(), 1);
        let cidr_lines: Vec<String> = config
            .allowlist
            .entries
            .iter()
            .filter(|e| matches!(e.source, Source::Config { .. }))
            .map(|e| e.source.to_string())
            .collect();
        assert_eq!(cidr_lines, ["config line 11", "config line 11"]);
        assert_eq!(
            config.routes,
            [
                RouteConfig {
                    path: "/mpesa/c2b/confirmation".into(),
                    verify: VerifyKind::Mpesa,
                    token: Some(SecretRef::Env("HOOKWALL_MPESA_TOKEN".into())),
                    secrets: Vec::new(),
                    tolerance_seconds: 300,
                    header: None,
                    encoding: None,
                    prefix: None,
                    validation: None,
                },
                RouteConfig {
                    path: "/hooks/stripe".into(),
                    verify: VerifyKind::Stripe,
                    token: None,
                    secrets: vec![SecretRef::Env("STRIPE_WEBHOOK_SECRET".into())],
                    tolerance_seconds: 300,
                    header: None,
                    encoding: None,
                    prefix: None,
                    validation: None,
                },
            ]
        );
    }

    #[test]
    fn the_bundled_dev_config_parses_and_guards_only_its_own_port() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("hookwall.dev.toml");
        let text = include_str!("../hookwall.dev.toml");
        let config = parse_with(&path, text, &host()).unwrap_or_else(|e| panic!("{e}"));
        let filter = &config.filter;
        assert_eq!(filter.interfaces, ["eth0"]);
        assert!(filter.interfaces_from_default_route);
        assert_eq!(filter.mode, Mode::Enforce);
        assert_eq!(filter.attach, AttachMode::Auto);
        assert_eq!(
            filter.protected_ports,
            [8443],
            "must never guard SSH or anything else"
        );
        assert_eq!(filter.pin_path, Path::new("/sys/fs/bpf/hookwall-dev"));
        assert!(config.allowlist.contains(ip("127.0.0.1")));
        assert!(config.allowlist.contains(ip("::1")));
        assert!(config.allowlist.contains(ip("203.0.113.77")));
        assert!(config.allowlist.contains(ip("196.201.212.69")));
        assert_eq!(config.server.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(config.server.tls, Tls::SelfSigned);
        assert_eq!(
            config.store.path,
            Path::new("target/hookwall-dev/events.db")
        );
        assert_eq!(config.metrics.listen, "127.0.0.1:9184".parse().unwrap());
        assert_eq!(config.store.retention, DEFAULT_RETENTION);
        assert_eq!(
            config.delivery, None,
            "delivery is an example, commented out"
        );
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.routes[0].path, "/mpesa/c2b/confirmation");
        assert_eq!(
            config.routes[0].token,
            Some(SecretRef::Env("HOOKWALL_MPESA_TOKEN".into()))
        );
    }

    #[test]
    fn the_dev_configs_commented_examples_parse_when_uncommented() {
        // Each example block starts at a commented table header and runs to the first line that
        // is not a comment; uncommenting means removing the leading "# ".
        let text = include_str!("../hookwall.dev.toml");
        let mut uncommented = String::new();
        let mut in_example = false;
        for line in text.lines() {
            if line.starts_with("# [") {
                in_example = true;
            } else if !line.starts_with('#') {
                in_example = false;
            }
            let line = if in_example {
                line.strip_prefix("# ").unwrap_or(line)
            } else {
                line
            };
            uncommented.push_str(line);
            uncommented.push('\n');
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("hookwall.dev.toml");
        let config = parse_with(&path, &uncommented, &host()).unwrap_or_else(|e| panic!("{e}"));
        let delivery = config.delivery.expect("the [delivery] example");
        assert_eq!(
            delivery.sink,
            Sink::Http {
                url: "http://127.0.0.1:8000/hookwall".into()
            }
        );
        assert_eq!(config.routes.len(), 2);
        assert_eq!(
            config.routes[1].validation.as_ref().map(|v| v.on_failure),
            Some(OnFailure::Accept)
        );
    }

    #[test]
    fn protected_ports_default_to_the_listen_port() {
        let config = parse_ok(&lines(&["[server]", "listen = \"[::]:8443\""]));
        assert_eq!(config.filter.protected_ports, [8443]);
        let config = parse_ok(&lines(&["[filter]", "protected_ports = [9000, 443, 9000]"]));
        assert_eq!(
            config.filter.protected_ports,
            [443, 9000],
            "sorted and deduplicated"
        );
    }

    #[test]
    fn listed_interfaces_are_kept_in_order() {
        let config = parse_ok(&lines(&["[filter]", "interfaces = [\"lo\", \"eth0\"]"]));
        assert_eq!(config.filter.interfaces, ["lo", "eth0"]);
        assert!(!config.filter.interfaces_from_default_route);
        // An empty list means the same as no key: the default route's interface.
        let config = parse_ok(&lines(&["[filter]", "interfaces = []"]));
        assert_eq!(config.filter.interfaces, ["eth0"]);
        assert!(config.filter.interfaces_from_default_route);
    }

    #[test]
    fn every_route_kind_with_its_options() {
        let config = parse_ok(&lines(&[
            "[[route]]",
            "path = \"/hooks/github\"",
            "verify = \"github\"",
            "secrets = [{ file = \"secrets/github\" }, { env = \"GITHUB_OLD\" }]",
            "[[route]]",
            "path = \"/hooks/generic\"",
            "verify = \"hmac-sha256\"",
            "secrets = [{ env = \"GENERIC\" }]",
            "header = \"X-Signature\"",
            "encoding = \"base64\"",
            "prefix = \"sha256=\"",
            "[[route]]",
            "path = \"/hooks/plain\"",
            "verify = \"shared-secret\"",
            "secrets = [{ env = \"PLAIN\" }]",
            "header = \"Authorization\"",
            "prefix = \"Bearer \"",
            "[[route]]",
            "path = \"/hooks/sw\"",
            "verify = \"standard-webhooks\"",
            "secrets = [{ env = \"SW\" }]",
            "tolerance_seconds = 60",
            "[[route]]",
            "path = \"/hooks/hex\"",
            "verify = \"hmac-sha256\"",
            "secrets = [{ env = \"HEX\" }]",
            "header = \"X-Hub\"",
        ]));
        let routes = &config.routes;
        assert_eq!(
            routes[0].secrets,
            [
                SecretRef::File("/etc/hookwall/secrets/github".into()),
                SecretRef::Env("GITHUB_OLD".into()),
            ],
            "a relative secret file resolves against the config file's directory"
        );
        assert_eq!(routes[0].encoding, None);
        assert_eq!(routes[1].verify, VerifyKind::HmacSha256);
        assert_eq!(routes[1].header.as_deref(), Some("X-Signature"));
        assert_eq!(routes[1].encoding, Some(Encoding::Base64));
        assert_eq!(routes[1].prefix.as_deref(), Some("sha256="));
        assert_eq!(routes[2].verify, VerifyKind::SharedSecret);
        assert_eq!(routes[2].prefix.as_deref(), Some("Bearer "));
        assert_eq!(routes[2].encoding, None);
        assert_eq!(routes[3].tolerance_seconds, 60);
        assert_eq!(
            routes[4].encoding,
            Some(Encoding::Hex),
            "hex is the default encoding"
        );
    }

    #[test]
    fn relative_tls_files_resolve_beside_the_config() {
        let config = parse_ok(&lines(&["[server]", "tls_cert = \"tls/cert.pem\""]));
        assert_eq!(
            config.server.tls,
            Tls::Files {
                cert: "/etc/hookwall/tls/cert.pem".into(),
                key: "/etc/hookwall/tls/privkey.pem".into(),
            }
        );
    }

    #[test]
    fn trusted_proxies_are_parsed() {
        let config = parse_ok(&lines(&[
            "[server]",
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
        ]));
        let proxies: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn server_limits_default_to_the_documented_values() {
        let limits = parse_ok("").server.limits;
        assert_eq!(
            limits,
            Limits {
                rate_per_second: 200,
                rate_burst: 400,
                max_connections: 4096,
                max_in_flight: 1024,
                body_limit_bytes: 1024 * 1024,
                header_timeout: Duration::from_secs(10),
                body_timeout: Duration::from_secs(10),
            }
        );
        // An empty table changes nothing.
        assert_eq!(
            parse_ok(&lines(&["[server.limits]"])).server.limits,
            Limits::default()
        );
    }

    #[test]
    fn server_limits_are_read() {
        let config = parse_ok(&lines(&[
            "[server]",
            "listen = \"0.0.0.0:443\"",
            "",
            "[server.limits]",
            "rate_per_second = 2",
            "rate_burst = 3",
            "max_connections = 10",
            "max_in_flight = 4",
            "body_limit_bytes = 1000",
            "header_timeout_ms = 500",
            "body_timeout_ms = 750",
        ]));
        assert_eq!(
            config.server.limits,
            Limits {
                rate_per_second: 2,
                rate_burst: 3,
                max_connections: 10,
                max_in_flight: 4,
                body_limit_bytes: 1000,
                header_timeout: Duration::from_millis(500),
                body_timeout: Duration::from_millis(750),
            }
        );
        // The inline form is the same table.
        let config = parse_ok(&lines(&["[server]", "limits = { rate_burst = 7 }"]));
        assert_eq!(config.server.limits.rate_burst, 7);
        assert_eq!(config.server.limits.rate_per_second, 200);
        assert!(config.render_check().contains("200/s per client (burst 7)"));
    }

    #[test]
    fn server_limits_out_of_range_are_each_reported_at_their_line() {
        let text = lines(&[
            "[server.limits]",
            "rate_per_second = 0",
            "rate_burst = -1",
            "max_connections = 0",
            "max_in_flight = 1000001",
            "body_limit_bytes = 0",
            "header_timeout_ms = 0",
            "body_timeout_ms = 300001",
        ]);
        let errors = parse_err(&text);
        let found: Vec<(Option<&str>, Option<usize>)> =
            errors.iter().map(|e| (e.key.as_deref(), e.line)).collect();
        assert_eq!(
            found,
            [
                (Some("server.limits.rate_per_second"), Some(2)),
                (Some("server.limits.rate_burst"), Some(3)),
                (Some("server.limits.max_connections"), Some(4)),
                (Some("server.limits.max_in_flight"), Some(5)),
                (Some("server.limits.body_limit_bytes"), Some(6)),
                (Some("server.limits.header_timeout_ms"), Some(7)),
                (Some("server.limits.body_timeout_ms"), Some(8)),
            ],
            "{}",
            ConfigErrors(errors.clone())
        );
        assert_contains(
            &errors[0],
            "0 is out of range: use 1 to 1000000 (default 200)",
        );
        assert_contains(&errors[5], "use 100 to 300000 (default 10000)");
        let error = single_error(
            &lines(&["[server.limits]", "body_limit_bytes = 67108865"]),
            "server.limits.body_limit_bytes",
            2,
        );
        assert_contains(&error, "use 1 to 67108864 (default 1048576)");
    }

    #[test]
    fn server_limits_unknown_keys_and_wrong_types() {
        let error = single_error(
            &lines(&["[server.limits]", "rate_per_secnd = 5"]),
            "server.limits.rate_per_secnd",
            2,
        );
        assert_contains(&error, "did you mean `rate_per_second`?");
        let error = single_error(
            &lines(&["[server.limits]", "body_timeout_ms = \"5s\""]),
            "server.limits.body_timeout_ms",
            2,
        );
        assert_contains(&error, "fix the value's type");
    }

    // --- store.retention, [delivery], route validation ---

    /// A valid HTTP `[delivery]`, for tests that vary one key (lines 1 to 3).
    const HTTP_DELIVERY: &[&str] = &[
        "[delivery]",
        "url = \"http://127.0.0.1:8000/hookwall\"",
        "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }",
    ];

    /// `HTTP_DELIVERY` plus `extra`, so the first extra line is line 4.
    fn http_delivery(extra: &[&str]) -> String {
        let mut text = HTTP_DELIVERY.to_vec();
        text.extend(extra);
        lines(&text)
    }

    #[test]
    fn store_retention_is_read_as_a_duration() {
        let config = parse_ok(&lines(&["[store]", "retention = \"7d\""]));
        assert_eq!(config.store.retention, Duration::from_secs(7 * 24 * 3600));
        let config = parse_ok(&lines(&["[store]", "retention = \"36h 30m\""]));
        assert_eq!(
            config.store.retention,
            Duration::from_secs(36 * 3600 + 1800)
        );
        // The minimum: a delivered row is what recognises a late retry as a duplicate.
        let error = single_error(
            &lines(&["[store]", "retention = \"10m\""]),
            "store.retention",
            2,
        );
        assert_contains(
            &error,
            "\"10m\" is out of range: use at least 1h (default 30days)",
        );
        assert_contains(&error, "duplicate");
    }

    #[test]
    fn an_http_delivery_gets_the_documented_defaults() {
        let config = parse_ok(&lines(HTTP_DELIVERY));
        assert_eq!(
            config.delivery,
            Some(DeliveryConfig {
                sink: Sink::Http {
                    url: "http://127.0.0.1:8000/hookwall".into()
                },
                secret: Some(SecretRef::Env("HOOKWALL_DELIVERY_SECRET".into())),
                timeout: Duration::from_secs(10),
                max_attempts: 25,
                max_age: Duration::from_secs(3 * 24 * 3600),
                backoff_initial: Duration::from_secs(1),
                backoff_max: Duration::from_secs(600),
                concurrency: 8,
            })
        );
    }

    #[test]
    fn every_delivery_key_is_read() {
        let config = parse_ok(&http_delivery(&[
            "timeout = \"2500ms\"",
            "max_attempts = 1000",
            "max_age = \"72h\"",
            "backoff_initial = \"5ms\"",
            "backoff_max = \"5ms\"",
            "concurrency = 256",
        ]));
        let delivery = config.delivery.unwrap();
        assert_eq!(delivery.timeout, Duration::from_millis(2500));
        assert_eq!(delivery.max_attempts, 1000);
        assert_eq!(delivery.max_age, Duration::from_secs(72 * 3600));
        assert_eq!(delivery.backoff_initial, Duration::from_millis(5));
        assert_eq!(
            delivery.backoff_max,
            Duration::from_millis(5),
            "equal to backoff_initial is fine"
        );
        assert_eq!(delivery.concurrency, 256);
        // https, a file secret beside the config, and the lowest bounds.
        let config = parse_ok(&lines(&[
            "[delivery]",
            "url = \"https://app.internal/hooks?from=hookwall\"",
            "secret = { file = \"secrets/delivery\" }",
            "timeout = \"100ms\"",
            "max_attempts = 1",
            "max_age = \"1s\"",
            "concurrency = 1",
        ]));
        let delivery = config.delivery.unwrap();
        assert_eq!(
            delivery.sink,
            Sink::Http {
                url: "https://app.internal/hooks?from=hookwall".into()
            }
        );
        assert_eq!(
            delivery.secret,
            Some(SecretRef::File("/etc/hookwall/secrets/delivery".into()))
        );
        assert_eq!(delivery.timeout, Duration::from_millis(100));
        assert_eq!(
            (
                delivery.max_attempts,
                delivery.max_age,
                delivery.concurrency
            ),
            (1, Duration::from_secs(1), 1)
        );
    }

    #[test]
    fn a_nats_delivery_gets_its_defaults_and_needs_no_secret() {
        let config = parse_ok(&lines(&[
            "[delivery.nats]",
            "url = \"nats://127.0.0.1:4222\"",
        ]));
        let delivery = config.delivery.unwrap();
        assert_eq!(
            delivery.sink,
            Sink::Nats(NatsConfig {
                url: "nats://127.0.0.1:4222".into(),
                subject: "hookwall.events".into(),
                stream: "HOOKWALL".into(),
                duplicate_window: Duration::from_secs(120),
                token: None,
            })
        );
        assert_eq!(delivery.secret, None);
        assert_eq!(delivery.max_attempts, 25);

        let config = parse_ok(&lines(&[
            "[delivery]",
            "secret = { env = \"SIGN\" }",
            "[delivery.nats]",
            "url = \"tls://nats.internal:4443\"",
            "subject = \"payments.mpesa.confirmed\"",
            "stream = \"PAYMENTS-v2_A\"",
            "duplicate_window = \"10m\"",
            "token = { env = \"NATS_TOKEN\" }",
        ]));
        let delivery = config.delivery.unwrap();
        assert_eq!(delivery.secret, Some(SecretRef::Env("SIGN".into())));
        assert_eq!(
            delivery.sink,
            Sink::Nats(NatsConfig {
                url: "tls://nats.internal:4443".into(),
                subject: "payments.mpesa.confirmed".into(),
                stream: "PAYMENTS-v2_A".into(),
                duplicate_window: Duration::from_secs(600),
                token: Some(SecretRef::Env("NATS_TOKEN".into())),
            })
        );
        // Without a scheme, and IPv6.
        for url in ["127.0.0.1:4222", "nats://[::1]:4222"] {
            let config = parse_ok(&lines(&["[delivery.nats]", &format!("url = \"{url}\"")]));
            assert!(
                matches!(config.delivery.unwrap().sink, Sink::Nats(n) if n.url == url),
                "{url}"
            );
        }
    }

    #[test]
    fn a_validation_route_is_read_with_its_default_timeout() {
        let mut text = HTTP_DELIVERY.to_vec();
        text.extend(MPESA_ROUTE);
        text.push(
            "validation = { url = \"http://127.0.0.1:8000/mpesa/validate\", on_failure = \"accept\" }",
        );
        text.extend(&MPESA_ROUTE[..3]);
        text[9] = "path = \"/mpesa/c2b/validation-strict\"";
        text.extend([
            "token = { env = \"T2\" }",
            "validation = { url = \"https://app/v\", timeout = \"7s\", on_failure = \"reject\" }",
        ]);
        let config = parse_ok(&lines(&text));
        assert_eq!(
            config.routes[0].validation,
            Some(ValidationConfig {
                url: "http://127.0.0.1:8000/mpesa/validate".into(),
                timeout: Duration::from_secs(5),
                on_failure: OnFailure::Accept,
            })
        );
        assert_eq!(
            config.routes[1].validation,
            Some(ValidationConfig {
                url: "https://app/v".into(),
                timeout: Duration::from_secs(7),
                on_failure: OnFailure::Reject,
            })
        );
        // A route without the key has none.
        assert_eq!(parse_ok(&lines(MPESA_ROUTE)).routes[0].validation, None);
    }

    #[test]
    fn a_bad_duration_says_why_and_how_to_write_one() {
        let error = single_error(
            &http_delivery(&["max_age = \"3 dayz\""]),
            "delivery.max_age",
            4,
        );
        assert_contains(
            &error,
            "\"3 dayz\" is not a duration: unknown time unit \"dayz\"",
        );
        assert_contains(&error, "; write e.g. \"72h\" or \"3d\"");
        let error = single_error(&http_delivery(&["timeout = \"\""]), "delivery.timeout", 4);
        assert_contains(&error, "\"\" is not a duration");
    }

    #[test]
    fn a_duration_of_the_wrong_type_says_to_write_a_unit() {
        let errors = parse_err(&http_delivery(&[
            "timeout = 10",
            "max_age = true",
            "backoff_max = 1.5",
        ]));
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                ("delivery.timeout".to_owned(), 4),
                ("delivery.max_age".to_owned(), 5),
                ("delivery.backoff_max".to_owned(), 6),
            ]
        );
        assert_contains(
            &errors[0],
            "10 has no unit: durations are strings with one, e.g. \"10s\"",
        );
        assert_contains(&errors[1], "this is a boolean, not a duration");
        assert_contains(&errors[2], "this is a number, not a duration");
        // Unlike serde's type errors, these do not stop the other checks.
        let errors = parse_err(&lines(&[
            "[store]",
            "retention = 30",
            "[delivery]",
            "url = \"http://a\"",
            "secret = { env = \"S\" }",
            "max_attempts = 0",
        ]));
        let keys: Vec<_> = errors.iter().map(|e| e.key.clone().unwrap()).collect();
        assert_eq!(keys, ["store.retention", "delivery.max_attempts"]);
    }

    #[test]
    fn delivery_values_out_of_range_are_each_reported_at_their_line() {
        let errors = parse_err(&http_delivery(&[
            "timeout = \"50ms\"",       // 4
            "max_attempts = 0",         // 5
            "max_age = \"999ms\"",      // 6
            "backoff_initial = \"0s\"", // 7
            "backoff_max = \"2days\"",  // 8
            "concurrency = 257",        // 9
        ]));
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                ("delivery.timeout".to_owned(), 4),
                ("delivery.max_attempts".to_owned(), 5),
                ("delivery.max_age".to_owned(), 6),
                ("delivery.backoff_initial".to_owned(), 7),
                ("delivery.backoff_max".to_owned(), 8),
                ("delivery.concurrency".to_owned(), 9),
            ],
            "{}",
            ConfigErrors(errors.clone())
        );
        assert_contains(
            &errors[0],
            "\"50ms\" is out of range: use 100ms to 5m (default 10s)",
        );
        assert_contains(&errors[1], "0 is out of range: use 1 to 1000 (default 25)");
        assert_contains(&errors[2], "use at least 1s (default 3days)");
        assert_contains(&errors[3], "use 1ms to 1day (default 1s)");
        assert_contains(&errors[5], "257 is out of range: use 1 to 256 (default 8)");
        let error = single_error(
            &http_delivery(&["max_attempts = 1001"]),
            "delivery.max_attempts",
            4,
        );
        assert_contains(&error, "use 1 to 1000");
        let error = single_error(&http_delivery(&["timeout = \"6m\""]), "delivery.timeout", 4);
        assert_contains(&error, "use 100ms to 5m");
    }

    #[test]
    fn backoff_max_must_not_be_below_backoff_initial() {
        let error = single_error(
            &http_delivery(&["backoff_initial = \"30s\"", "backoff_max = \"10s\""]),
            "delivery.backoff_max",
            5,
        );
        assert_contains(&error, "backoff_max (10s) is below backoff_initial (30s)");
        // Against the default backoff_max, the error points at [delivery].
        let error = single_error(
            &http_delivery(&["backoff_initial = \"1h\""]),
            "delivery.backoff_max",
            1,
        );
        assert_contains(&error, "backoff_max (10m) is below backoff_initial (1h)");
    }

    #[test]
    fn delivery_integers_of_the_wrong_type() {
        let error = single_error(
            &http_delivery(&["max_attempts = \"25\""]),
            "delivery.max_attempts",
            4,
        );
        assert_contains(&error, "fix the value's type");
    }

    #[test]
    fn delivery_needs_exactly_one_sink() {
        let error = single_error(
            &lines(&["[delivery]", "secret = { env = \"S\" }"]),
            "delivery",
            1,
        );
        assert_contains(&error, "[delivery] needs where to deliver: url = ");
        assert_contains(&error, "remove [delivery] to only store events");
        let error = single_error(
            &http_delivery(&["[delivery.nats]", "url = \"nats://127.0.0.1:4222\""]),
            "delivery.url",
            2,
        );
        assert_contains(&error, "`url` and [delivery.nats] both say where events go");
    }

    #[test]
    fn an_http_delivery_needs_its_signing_secret() {
        let error = single_error(
            &lines(&["", "[delivery]", "url = \"http://127.0.0.1:8000/hookwall\""]),
            "delivery",
            2,
        );
        assert_contains(&error, "delivery.url needs `secret`");
        assert_contains(&error, "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }");
    }

    #[test]
    fn delivery_urls_must_be_absolute_http_urls() {
        for (url, needle) in [
            ("ftp://app/x", "has scheme \"ftp\": only http and https"),
            ("127.0.0.1:8000/hookwall", "is not an absolute URL"),
            ("/hookwall", "is not an absolute URL"),
            ("http://", "is not a URL"),
            ("http://app/a b", "is not a URL"),
        ] {
            let text = lines(&[
                "[delivery]",
                "secret = { env = \"S\" }",
                &format!("url = \"{url}\""),
            ]);
            let error = single_error(&text, "delivery.url", 3);
            assert_contains(&error, needle);
            assert_contains(&error, "write e.g. \"http://127.0.0.1:8000/hookwall\"");
        }
    }

    #[test]
    fn urls_with_credentials_are_refused_without_repeating_them() {
        let password = "hunter2-Sup3rS3cret";
        let text = lines(&[
            "[delivery]",
            "secret = { env = \"S\" }",
            &format!("url = \"https://app:{password}@127.0.0.1:8000/hookwall\""),
        ]);
        let error = single_error(&text, "delivery.url", 3);
        assert_contains(&error, "carries credentials (user:password@)");
        assert!(!error.to_string().contains(password), "{error}");

        let text = lines(&[
            "[delivery.nats]",
            &format!("url = \"nats://user:{password}@127.0.0.1:4222\""),
        ]);
        let error = single_error(&text, "delivery.nats.url", 2);
        assert_contains(&error, "use token = { env = \"NATS_TOKEN\" }");
        assert!(!error.to_string().contains(password), "{error}");

        // Even a URL that does not parse is not echoed when it has credentials.
        let text = lines(&[
            "[delivery]",
            "secret = { env = \"S\" }",
            &format!("url = \"http://u:{password} x@app\""),
        ]);
        let error = single_error(&text, "delivery.url", 3);
        assert!(!error.to_string().contains(password), "{error}");
    }

    #[test]
    fn nats_settings_are_checked() {
        let error = single_error(
            &lines(&["[delivery.nats]", "subject = \"a.b\""]),
            "delivery.nats",
            1,
        );
        assert_contains(
            &error,
            "needs the server to publish to: url = \"nats://127.0.0.1:4222\"",
        );
        for (url, needle) in [
            (
                "http://127.0.0.1:4222",
                "a scheme other than nats:// or tls://",
            ),
            ("nats://127.0.0.1", "needs a host and a port"),
            ("nats.internal", "needs a host and a port"),
            ("nats://127.0.0.1:4222/x", "has a path"),
        ] {
            let text = lines(&["[delivery.nats]", &format!("url = \"{url}\"")]);
            let error = single_error(&text, "delivery.nats.url", 2);
            assert_contains(&error, needle);
        }
        for subject in ["", "a..b", "hookwall.*", "hookwall.>", "a b", ".a"] {
            let text = lines(&[
                "[delivery.nats]",
                "url = \"nats://127.0.0.1:4222\"",
                &format!("subject = \"{subject}\""),
            ]);
            let error = single_error(&text, "delivery.nats.subject", 3);
            assert_contains(&error, "is not a subject to publish to");
        }
        for stream in ["", "A.B", "A B", "A/B", "A*"] {
            let text = lines(&[
                "[delivery.nats]",
                "url = \"nats://127.0.0.1:4222\"",
                &format!("stream = \"{stream}\""),
            ]);
            let error = single_error(&text, "delivery.nats.stream", 3);
            assert_contains(&error, "is not a JetStream stream name");
        }
        let text = lines(&[
            "[delivery.nats]",
            "url = \"nats://127.0.0.1:4222\"",
            "duplicate_window = \"500ms\"",
        ]);
        let error = single_error(&text, "delivery.nats.duplicate_window", 3);
        assert_contains(&error, "use at least 1s (default 2m)");
    }

    #[test]
    fn inline_delivery_secrets_are_refused_without_repeating_them() {
        let signing = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let token = "nats-T0ken-Sup3rS3cret";
        let text = lines(&[
            "[delivery]",
            &format!("secret = \"{signing}\""),
            "[delivery.nats]",
            "url = \"nats://127.0.0.1:4222\"",
            &format!("token = \"{token}\""),
        ]);
        let errors = parse_err(&text);
        let shown = ConfigErrors(errors.clone()).to_string();
        for secret in [signing, token] {
            assert!(!shown.contains(secret), "secret leaked:\n{shown}");
        }
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                ("delivery.secret".to_owned(), 2),
                ("delivery.nats.token".to_owned(), 5),
            ]
        );
        assert_contains(&errors[0], "write secret = { env = \"NAME\" }");
        assert_contains(&errors[1], "write token = { env = \"NAME\" }");
        // A malformed reference is an error too.
        let error = single_error(
            &lines(&[
                "[delivery]",
                "url = \"http://a\"",
                "secret = { env = \"A\", file = \"/b\" }",
            ]),
            "delivery.secret",
            3,
        );
        assert_contains(&error, "a secret reference is exactly");
    }

    #[test]
    fn validation_is_for_mpesa_routes_only() {
        let text = http_delivery(&[
            "[[route]]",
            "path = \"/s\"",
            "verify = \"stripe\"",
            "secrets = [{ env = \"S\" }]",
            "validation = { url = \"http://a/v\", on_failure = \"accept\" }",
        ]);
        let error = single_error(&text, "route[0].validation", 8);
        assert_contains(
            &error,
            "`validation` applies only to verify = mpesa (M-Pesa C2B validation), not \"stripe\"",
        );
    }

    #[test]
    fn validation_keys_are_checked() {
        let route = |validation: &str| {
            let mut text = HTTP_DELIVERY.to_vec();
            text.extend(MPESA_ROUTE);
            text.push(validation);
            lines(&text)
        };
        // Missing on_failure and url are reported at the table, together.
        let errors = parse_err(&route("validation = { timeout = \"2s\" }"));
        assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
        assert!(
            errors
                .iter()
                .all(|e| e.key.as_deref() == Some("route[0].validation") && e.line == Some(8))
        );
        assert_contains(&errors[0], "needs the application's endpoint that decides");
        assert_contains(&errors[1], "needs on_failure = \"accept\" or \"reject\"");

        let error = single_error(
            &route("validation = { url = \"http://a/v\", on_failure = \"accpet\" }"),
            "route[0].validation.on_failure",
            8,
        );
        assert_contains(&error, "\"accpet\" is not one of \"accept\", \"reject\"");
        assert_contains(&error, "did you mean \"accept\"?");

        for (timeout, needle) in [
            (
                "\"8s\"",
                "\"8s\" is out of range: use 100ms to 7s (default 5s)",
            ),
            ("\"50ms\"", "Safaricom waits about 8 s"),
            ("5", "5 has no unit"),
        ] {
            let text = route(&format!(
                "validation = {{ url = \"http://a/v\", timeout = {timeout}, on_failure = \"accept\" }}"
            ));
            let error = single_error(&text, "route[0].validation.timeout", 8);
            assert_contains(&error, needle);
        }

        let error = single_error(
            &route("validation = { url = \"tcp://a/v\", on_failure = \"accept\" }"),
            "route[0].validation.url",
            8,
        );
        assert_contains(&error, "only http and https");
        assert_contains(&error, "\"http://127.0.0.1:8000/mpesa/validate\"");

        let error = single_error(
            &route("validation = { url = \"http://a/v\", on_failure = \"accept\", urll = \"x\" }"),
            "route[0].validation.urll",
            8,
        );
        assert_contains(&error, "did you mean `url`?");

        let error = single_error(
            &route("validation = \"http://a/v\""),
            "route[0].validation",
            8,
        );
        assert_contains(&error, "expected a table: validation = {");
    }

    #[test]
    fn validation_needs_the_delivery_signing_key() {
        let mut text = MPESA_ROUTE.to_vec();
        text.push("validation = { url = \"http://a/v\", on_failure = \"reject\" }");
        let error = single_error(&lines(&text), "route[0].validation", 5);
        assert_contains(&error, "there is no [delivery] section");

        // [delivery] with NATS needs no secret of its own, but validation does.
        let mut text = vec!["[delivery.nats]", "url = \"nats://127.0.0.1:4222\""];
        text.extend(MPESA_ROUTE);
        text.push("validation = { url = \"http://a/v\", on_failure = \"reject\" }");
        let error = single_error(&lines(&text), "route[0].validation", 7);
        assert_contains(
            &error,
            "signed with delivery.secret, which is not set: add secret = { env = \
             \"HOOKWALL_DELIVERY_SECRET\" } to [delivery]",
        );
    }

    #[test]
    fn unknown_delivery_keys_suggest_the_known_ones() {
        let error = single_error(
            &http_delivery(&["max_atempts = 3"]),
            "delivery.max_atempts",
            4,
        );
        assert_contains(&error, "did you mean `max_attempts`?");
        let error = single_error(
            &lines(&["[delivery.nats]", "url = \"nats://a:1\"", "sbject = \"x\""]),
            "delivery.nats.sbject",
            3,
        );
        assert_contains(&error, "did you mean `subject`?");
        let error = single_error(&lines(&["retention = \"30d\""]), "retention", 1);
        assert_contains(&error, "did you mean `store.retention`?");
        let error = single_error(
            &http_delivery(&["nats_url = \"x\""]),
            "delivery.nats_url",
            4,
        );
        assert_contains(&error, "remove it; the keys here are: url, secret, timeout");
    }

    // --- syntax and type errors ---

    #[test]
    fn a_syntax_error_is_reported_with_its_line() {
        let errors = parse_err(&lines(&["[filter]", "mode = \"enforce\"", "attach = auto"]));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(3), "{}", errors[0]);
        assert!(
            errors[0].message.contains("fix the TOML syntax"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_wrong_type_is_reported_with_its_key_and_line() {
        let text = lines(&[
            "[filter]",
            "mode = \"monitor\"",
            "strict_fragments = \"yes\"",
        ]);
        let error = single_error(&text, "filter.strict_fragments", 3);
        assert_contains(&error, "expected a boolean");
    }

    #[test]
    fn a_wrong_type_inside_a_route_names_the_route() {
        let mut text = MPESA_ROUTE.to_vec();
        text.extend([
            "[[route]]",
            "path = \"/x\"",
            "verify = \"stripe\"",
            "tolerance_seconds = \"5\"",
        ]);
        single_error(&lines(&text), "route[1].tolerance_seconds", 8);
    }

    // --- unknown keys ---

    #[test]
    fn an_unknown_key_suggests_the_closest_known_one() {
        let text = lines(&["[filter]", "interface = [\"eth0\"]"]);
        let error = single_error(&text, "filter.interface", 2);
        assert_contains(&error, "did you mean `interfaces`?");
    }

    #[test]
    fn a_key_outside_its_section_names_the_section() {
        let error = single_error(&lines(&["mode = \"monitor\""]), "mode", 1);
        assert_contains(&error, "did you mean `filter.mode`?");
        let error = single_error(&lines(&["listen = \"0.0.0.0:443\""]), "listen", 1);
        assert_contains(&error, "`server.listen` or `metrics.listen`");
    }

    #[test]
    fn an_unknown_key_far_from_any_lists_the_known_ones() {
        let error = single_error(&lines(&["[server]", "workers = 4"]), "server.workers", 2);
        assert_contains(&error, "listen, tls_cert, tls_key, tls, trusted_proxies");
        let error = single_error(&lines(&["[logging]", "level = \"debug\""]), "logging", 1);
        assert_contains(&error, "filter, allow, server, store, metrics, route");
    }

    #[test]
    fn unknown_keys_in_routes_and_misspelled_sections() {
        let mut text = MPESA_ROUTE.to_vec();
        text.push("secret = { env = \"X\" }");
        let error = single_error(&lines(&text), "route[0].secret", 5);
        assert_contains(&error, "did you mean `secrets`?");

        let error = single_error(&lines(&["[[routes]]", "path = \"/x\""]), "routes", 1);
        assert_contains(&error, "did you mean `route`?");
    }

    #[test]
    fn every_unknown_key_is_reported() {
        let errors = parse_err(&lines(&[
            "[filter]",
            "mod = \"monitor\"",
            "attatch = \"auto\"",
            "[allow]",
            "cidr = []",
        ]));
        let keys: Vec<_> = errors
            .iter()
            .map(|e| (e.key.as_deref().unwrap(), e.line.unwrap()))
            .collect();
        assert_eq!(
            keys,
            [("filter.mod", 2), ("filter.attatch", 3), ("allow.cidr", 5)]
        );
    }

    // --- [filter] errors ---

    #[test]
    fn a_bad_mode_or_attach_lists_the_values() {
        let text = lines(&["[filter]", "mode = \"Enforce\"", "attach = \"skb\""]);
        let errors = parse_err(&text);
        assert_eq!(errors.len(), 2);
        assert_eq!(
            (errors[0].key.as_deref(), errors[0].line),
            (Some("filter.mode"), Some(2))
        );
        assert_contains(
            &errors[0],
            "\"Enforce\" is not one of \"enforce\", \"monitor\"",
        );
        assert_contains(&errors[0], "did you mean \"enforce\"?");
        assert_eq!(
            (errors[1].key.as_deref(), errors[1].line),
            (Some("filter.attach"), Some(3))
        );
        assert_contains(&errors[1], "\"auto\", \"native\", \"generic\"");
    }

    #[test]
    fn a_missing_interface_is_named_with_those_that_exist() {
        let text = lines(&[
            "[filter]",
            "interfaces = [",
            "  \"eth0\",",
            "  \"eht1\",",
            "]",
        ]);
        let error = single_error(&text, "filter.interfaces[1]", 4);
        assert_contains(
            &error,
            "no interface `eht1` on this host (this host has: eth0, lo)",
        );
    }

    #[test]
    fn bad_interface_names_and_duplicates() {
        let text = lines(&[
            "[filter]",
            "interfaces = [\"eth0\", \"eth0\", \"\", \"a-very-long-interface\"]",
        ]);
        let errors = parse_err(&text);
        let keys: Vec<_> = errors.iter().map(|e| e.key.clone().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "filter.interfaces[1]",
                "filter.interfaces[2]",
                "filter.interfaces[3]"
            ]
        );
        assert_contains(&errors[0], "listed twice");
        assert_contains(&errors[1], "not a valid interface name");
    }

    #[test]
    fn no_default_route_and_no_interfaces_is_an_error() {
        let host = FakeHost {
            interfaces: vec!["lo".into()],
            default: None,
        };
        let errors = parse_err_with("", &host);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key.as_deref(), Some("filter.interfaces"));
        assert_eq!(errors[0].line, None, "the key is not in the file");
        assert_contains(&errors[0], "no default route");
        assert_contains(&errors[0], "this host has: lo");
    }

    #[test]
    fn bad_ports_are_each_reported() {
        let text = lines(&[
            "[filter]",
            "protected_ports = [",
            "  443,",
            "  0,",
            "  70000,",
            "  -1,",
            "]",
        ]);
        let errors = parse_err(&text);
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                ("filter.protected_ports[1]".to_owned(), 4),
                ("filter.protected_ports[2]".to_owned(), 5),
                ("filter.protected_ports[3]".to_owned(), 6),
            ]
        );
        assert_contains(&errors[1], "70000 is not a port: ports are 1 to 65535");
    }

    #[test]
    fn an_empty_port_list_is_an_error() {
        let error = single_error(
            &lines(&["[filter]", "protected_ports = []"]),
            "filter.protected_ports",
            2,
        );
        assert_contains(&error, "protects nothing");
    }

    #[test]
    fn listen_port_zero_cannot_be_the_default_protected_port() {
        let errors = parse_err(&lines(&["[server]", "listen = \"127.0.0.1:0\""]));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key.as_deref(), Some("filter.protected_ports"));
        assert_eq!(errors[0].line, None, "the key is not in the file");
        assert_contains(&errors[0], "set protected_ports");
        // With the ports given, an OS-chosen listen port is fine (tests bind port 0).
        let config = parse_ok(&lines(&[
            "[filter]",
            "protected_ports = [8443]",
            "[server]",
            "listen = \"127.0.0.1:0\"",
        ]));
        assert_eq!(config.server.listen.port(), 0);
    }

    #[test]
    fn a_relative_pin_path_is_an_error() {
        let error = single_error(
            &lines(&["[filter]", "pin_path = \"bpf/hookwall\""]),
            "filter.pin_path",
            2,
        );
        assert_contains(&error, "absolute path");
    }

    // --- [allow] errors ---

    #[test]
    fn a_bad_cidr_is_reported_at_its_element() {
        let text = lines(&[
            "[allow]",
            "cidrs = [",
            "  \"198.51.100.7\",",
            "  \"2001:db8::/48\",",
            "  \"203.0.113.5/24\",",
            "]",
        ]);
        let error = single_error(&text, "allow.cidrs[2]", 5);
        assert_eq!(
            error.message,
            "203.0.113.5/24 has host bits set: write 203.0.113.0/24 for the network or \
             203.0.113.5/32 for the one address"
        );
    }

    #[test]
    fn cidr_entries_record_their_line() {
        let config = parse_ok(&lines(&[
            "[allow]",
            "presets = []",
            "cidrs = [",
            "  \"198.51.100.7\",",
            "  \"::1\",",
            "]",
        ]));
        let sources: Vec<_> = config
            .allowlist
            .entries
            .iter()
            .map(|e| e.source.clone())
            .collect();
        assert_eq!(
            sources,
            [Source::Config { line: 4 }, Source::Config { line: 5 }]
        );
    }

    #[test]
    fn an_unknown_preset_lists_the_known_ones() {
        let text = lines(&["[allow]", "presets = [\"mpesa\", \"mpsea\"]"]);
        let error = single_error(&text, "allow.presets[1]", 2);
        assert_contains(&error, "unknown preset \"mpsea\" (did you mean \"mpesa\"?)");
        assert_contains(&error, "mpesa, mpesa-extra");
    }

    #[test]
    fn presets_combine() {
        let config = parse_ok(&lines(&[
            "[allow]",
            "presets = [\"mpesa\", \"mpesa-extra\"]",
        ]));
        assert_eq!(config.allowlist.entries.len(), 14);
        assert!(config.allowlist.contains(ip("196.201.212.132")));
    }

    #[test]
    fn an_empty_allowlist_in_enforce_mode_is_an_error() {
        let text = lines(&["[filter]", "mode = \"enforce\"", "[allow]", "presets = []"]);
        let error = single_error(&text, "allow", 3);
        assert_eq!(
            error.message,
            "an empty allowlist in enforce mode would drop every packet to the protected ports: \
             add presets, cidrs or files, or set filter.mode = \"monitor\""
        );
        // Monitor mode drops nothing, so an empty list is fine there.
        let config = parse_ok(&lines(&[
            "[filter]",
            "mode = \"monitor\"",
            "[allow]",
            "presets = []",
        ]));
        assert!(config.allowlist.is_empty());
    }

    #[test]
    fn an_empty_allowlist_is_reported_beside_other_filter_errors() {
        let text = lines(&[
            "[filter]",
            "interfaces = [\"eth7\"]",
            "[allow]",
            "presets = []",
        ]);
        let errors = parse_err(&text);
        let keys: Vec<_> = errors.iter().map(|e| e.key.clone().unwrap()).collect();
        assert_eq!(keys, ["filter.interfaces[0]", "allow"]);
    }

    #[test]
    fn an_empty_allowlist_after_bad_entries_reports_only_the_entries() {
        let text = lines(&["[allow]", "presets = []", "cidrs = [\"nope\"]"]);
        let error = single_error(&text, "allow.cidrs[0]", 3);
        assert_contains(&error, "`nope` is not an IP address");
    }

    #[test]
    fn allow_files_resolve_beside_the_config_and_report_their_own_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.txt"), "# partners\n198.51.100.0/24\n").unwrap();
        std::fs::write(
            dir.path().join("bad.txt"),
            "198.51.100.9\n\nnonsense # typo\n",
        )
        .unwrap();
        let config_path = dir.path().join("hookwall.toml");

        let text = lines(&["[allow]", "files = [\"good.txt\"]"]);
        let config = parse_with(&config_path, &text, &host()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.allow.files, [dir.path().join("good.txt")]);
        let last = config.allowlist.entries.last().unwrap();
        assert_eq!(
            last.source,
            Source::File {
                path: std::sync::Arc::from(dir.path().join("good.txt").as_path()),
                line: 2
            }
        );

        let text = lines(&[
            "[allow]",
            "files = [\"good.txt\", \"bad.txt\", \"missing.txt\"]",
        ]);
        let errors = parse_with(&config_path, &text, &host()).unwrap_err().0;
        assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
        // The config file's own errors come first.
        assert_eq!(errors[0].file, config_path);
        assert_eq!(errors[0].key.as_deref(), Some("allow.files[2]"));
        assert_eq!(errors[0].line, Some(2));
        assert!(
            errors[0]
                .message
                .contains(&*dir.path().join("missing.txt").to_string_lossy())
        );
        assert_eq!(errors[1].file, dir.path().join("bad.txt"));
        assert_eq!(errors[1].line, Some(3));
        assert_eq!(errors[1].key.as_deref(), Some("allow.files[1]"));
        assert!(errors[1].message.contains("`nonsense`"), "{}", errors[1]);
    }

    /// `n` IPv6 /25s, none adjacent to another (so none merge), one per line.
    fn slash_25s(n: u32) -> String {
        (0..n)
            .map(|i| {
                let top = 0x2000_0000u32 + (i << 8);
                format!("{}/25\n", std::net::Ipv6Addr::from(u128::from(top) << 96))
            })
            .collect()
    }

    #[test]
    fn many_long_ipv6_prefixes_load_whatever_the_slash_32s_they_touch() {
        // 4096 /25s touch 524,288 /32s: the narrow bitmap has no limit on them (the hash it
        // replaced refused more than 262,144).
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("hookwall.toml");
        let text = lines(&["[allow]", "files = [\"long.txt\"]"]);
        std::fs::write(dir.path().join("long.txt"), slash_25s(4096)).unwrap();
        let config = parse_with(&config_path, &text, &host()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.allowlist.v6.len(), 4096);
    }

    // --- [server] and [metrics] errors ---

    #[test]
    fn a_bad_listen_address_says_how_to_write_one() {
        let error = single_error(
            &lines(&["[server]", "listen = \"443\""]),
            "server.listen",
            2,
        );
        assert_contains(&error, "\"443\" is not an address:port");
    }

    #[test]
    fn metrics_never_share_the_public_listener() {
        for (server, metrics) in [
            ("0.0.0.0:443", "0.0.0.0:443"),
            ("0.0.0.0:443", "127.0.0.1:443"),
            ("203.0.113.1:8443", "[::]:8443"),
            ("[::ffff:127.0.0.1]:9184", "127.0.0.1:9184"),
        ] {
            let text = lines(&[
                "[server]",
                &format!("listen = \"{server}\""),
                "[metrics]",
                &format!("listen = \"{metrics}\""),
            ]);
            let error = single_error(&text, "metrics.listen", 4);
            assert_contains(&error, "public listener");
        }
        for (server, metrics) in [
            ("0.0.0.0:443", "0.0.0.0:9184"),
            ("203.0.113.1:443", "127.0.0.1:443"),
        ] {
            let text = lines(&[
                "[server]",
                &format!("listen = \"{server}\""),
                "[metrics]",
                &format!("listen = \"{metrics}\""),
            ]);
            parse_ok(&text);
        }
    }

    #[test]
    fn tls_self_signed_and_files_conflict() {
        let text = lines(&["[server]", "tls = \"self-signed\"", "tls_key = \"/k.pem\""]);
        let error = single_error(&text, "server.tls", 2);
        assert_contains(&error, "remove tls_cert and tls_key");
        let error = single_error(
            &lines(&["[server]", "tls = \"selfsigned\""]),
            "server.tls",
            2,
        );
        assert_contains(&error, "did you mean \"self-signed\"?");
    }

    #[test]
    fn a_bad_trusted_proxy_is_reported_at_its_element() {
        let text = lines(&[
            "[server]",
            "trusted_proxies = [\"10.0.0.0/8\", \"10.1.2.3/16\"]",
        ]);
        let error = single_error(&text, "server.trusted_proxies[1]", 2);
        assert_contains(&error, "host bits set");
    }

    // --- [[route]] errors ---

    #[test]
    fn route_paths_must_be_paths_and_unique() {
        let errors = parse_err(&lines(&[
            "[[route]]",
            "path = \"/a\"",
            "verify = \"github\"",
            "secrets = [{ env = \"A\" }]",
            "[[route]]",
            "path = \"/a\"",
            "verify = \"stripe\"",
            "secrets = [{ env = \"B\" }]",
            "[[route]]",
            "path = \"hooks\"",
            "verify = \"stripe\"",
            "secrets = [{ env = \"C\" }]",
        ]));
        assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
        assert_eq!(
            (errors[0].key.as_deref(), errors[0].line),
            (Some("route[1].path"), Some(6))
        );
        assert_contains(&errors[0], "already used by route[0] (line 2)");
        assert_eq!(
            (errors[1].key.as_deref(), errors[1].line),
            (Some("route[2].path"), Some(10))
        );
        assert_contains(&errors[1], "must start with '/', e.g. \"/hooks\"");
    }

    #[test]
    fn a_route_needs_path_and_verify() {
        let errors = parse_err(&lines(&["[[route]]", "token = { env = \"T\" }"]));
        assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
        assert!(
            errors
                .iter()
                .all(|e| e.key.as_deref() == Some("route[0]") && e.line == Some(1))
        );
        assert!(errors.iter().any(|e| e.message.contains("needs a `path`")));
        assert!(errors.iter().any(|e| {
            e.message
                .contains("needs `verify`, one of: mpesa, standard-webhooks")
        }));
    }

    #[test]
    fn an_unknown_verify_kind_suggests_one() {
        let text = lines(&["[[route]]", "path = \"/x\"", "verify = \"hmac-sha-256\""]);
        let error = single_error(&text, "route[0].verify", 3);
        assert_contains(&error, "did you mean \"hmac-sha256\"?");
    }

    #[test]
    fn mpesa_routes_need_a_token_and_take_no_secrets() {
        let error = single_error(
            &lines(&["[[route]]", "path = \"/m\"", "verify = \"mpesa\""]),
            "route[0]",
            1,
        );
        assert_contains(&error, "needs token = { env = \"NAME\" }");
        let mut text = MPESA_ROUTE.to_vec();
        text.push("secrets = [{ env = \"S\" }]");
        let error = single_error(&lines(&text), "route[0].secrets", 5);
        assert_contains(&error, "remove secrets");
    }

    #[test]
    fn signed_routes_need_secrets_and_take_no_token() {
        let error = single_error(
            &lines(&["[[route]]", "path = \"/s\"", "verify = \"stripe\""]),
            "route[0]",
            1,
        );
        assert_contains(
            &error,
            "needs the signing secret: secrets = [{ env = \"NAME\" }]",
        );
        let text = lines(&[
            "[[route]]",
            "path = \"/s\"",
            "verify = \"stripe\"",
            "secrets = []",
        ]);
        single_error(&text, "route[0].secrets", 4);
        let text = lines(&[
            "[[route]]",
            "path = \"/s\"",
            "verify = \"stripe\"",
            "secrets = { env = \"S\" }",
        ]);
        let error = single_error(&text, "route[0].secrets", 4);
        assert_contains(&error, "is a list");
        let text = lines(&[
            "[[route]]",
            "path = \"/s\"",
            "verify = \"stripe\"",
            "secrets = [{ env = \"S\" }]",
            "token = { env = \"T\" }",
        ]);
        let error = single_error(&text, "route[0].token", 5);
        assert_contains(&error, "for verify = \"mpesa\" only");
    }

    #[test]
    fn malformed_secret_references_are_errors() {
        for (reference, _why) in [
            ("{ env = \"A\", file = \"/b\" }", "both"),
            ("{ env = \"\" }", "empty name"),
            ("{ env = \"A=B\" }", "an '=' in the name"),
            ("{ path = \"/b\" }", "neither env nor file"),
            ("{ env = 5 }", "not a string"),
            ("{}", "empty"),
        ] {
            let text = lines(&[
                "[[route]]",
                "path = \"/g\"",
                "verify = \"github\"",
                &format!("secrets = [{reference}]"),
            ]);
            let error = single_error(&text, "route[0].secrets[0]", 4);
            assert_contains(&error, "a secret reference is exactly { env = \"NAME\" }");
        }
    }

    #[test]
    fn inline_secrets_are_refused_without_repeating_them() {
        let token = "tok3n-VALUE-Sup3rS3cret";
        let signing = "whsec_0123456789abcdefSECRET";
        let number = "8675309112233";
        let text = lines(&[
            "[[route]]",
            "path = \"/mpesa/c2b/confirmation\"",
            "verify = \"mpesa\"",
            &format!("token = \"{token}\""),
            "[[route]]",
            "path = \"/hooks/stripe\"",
            "verify = \"stripe\"",
            &format!("secrets = [{{ env = \"OK\" }}, \"{signing}\", {number}]"),
            "[[route]]",
            "path = \"/hooks/github\"",
            "verify = \"github\"",
            &format!("secrets = \"{signing}\""),
        ]);
        let errors = parse_err(&text);
        let shown = ConfigErrors(errors.clone()).to_string();
        for secret in [token, signing, number] {
            assert!(!shown.contains(secret), "secret leaked:\n{shown}");
        }
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.key.clone().unwrap(), e.line.unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                ("route[0].token".to_owned(), 4),
                ("route[1].secrets[1]".to_owned(), 8),
                ("route[1].secrets[2]".to_owned(), 8),
                ("route[2].secrets".to_owned(), 12),
            ]
        );
        assert_contains(&errors[0], "secrets are never written inline");
        assert_contains(&errors[0], "write token = { env = \"NAME\" }");
        assert_contains(&errors[1], "this is a string");
        assert_contains(&errors[2], "this is a number");
        assert_contains(&errors[3], "write secrets = [{ env = \"NAME\" }]");
    }

    #[test]
    fn tolerance_applies_to_timestamped_kinds_only_and_is_bounded() {
        let text = lines(&[
            "[[route]]",
            "path = \"/g\"",
            "verify = \"github\"",
            "secrets = [{ env = \"G\" }]",
            "tolerance_seconds = 300",
        ]);
        let error = single_error(&text, "route[0].tolerance_seconds", 5);
        assert_contains(&error, "no signed timestamp");
        for bad in ["0", "-5", "86400"] {
            let text = lines(&[
                "[[route]]",
                "path = \"/s\"",
                "verify = \"stripe\"",
                "secrets = [{ env = \"S\" }]",
                &format!("tolerance_seconds = {bad}"),
            ]);
            let error = single_error(&text, "route[0].tolerance_seconds", 5);
            assert_contains(&error, "out of range");
        }
    }

    #[test]
    fn header_encoding_and_prefix_rules() {
        let base = [
            "[[route]]",
            "path = \"/h\"",
            "verify = \"hmac-sha256\"",
            "secrets = [{ env = \"H\" }]",
        ];
        let error = single_error(&lines(&base), "route[0]", 1);
        assert_contains(
            &error,
            "needs the name of the header that carries the signature",
        );

        let mut text = base.to_vec();
        text.extend(["header = \"X Sig\""]);
        single_error(&lines(&text), "route[0].header", 5);

        let mut text = base.to_vec();
        text.extend(["header = \"X-Sig\"", "encoding = \"b64\""]);
        let error = single_error(&lines(&text), "route[0].encoding", 6);
        assert_contains(&error, "\"hex\", \"base64\"");

        let stripe = [
            "[[route]]",
            "path = \"/s\"",
            "verify = \"stripe\"",
            "secrets = [{ env = \"S\" }]",
        ];
        for (line, key) in [
            ("header = \"X\"", "header"),
            ("encoding = \"hex\"", "encoding"),
            ("prefix = \"v1=\"", "prefix"),
        ] {
            let mut text = stripe.to_vec();
            text.push(line);
            let error = single_error(&lines(&text), &format!("route[0].{key}"), 5);
            assert_contains(&error, "applies only to verify =");
        }
    }

    // --- many errors at once ---

    #[test]
    fn every_error_in_a_file_is_reported_in_line_order() {
        let text = lines(&[
            "[filter]",                                      // 1
            "interfaces = [\"eth9\"]",                       // 2
            "mode = \"enforcing\"",                          // 3
            "protected_ports = [0]",                         // 4
            "pin_path = \"relative\"",                       // 5
            "colour = \"blue\"",                             // 6
            "[allow]",                                       // 7
            "presets = [\"mpesa\", \"stripe\"]",             // 8
            "cidrs = [\"10.0.0.1/8\"]",                      // 9
            "files = [\"/nonexistent/hookwall/allow.txt\"]", // 10
            "[server]",                                      // 11
            "listen = \"0.0.0.0:443\"",                      // 12
            "[metrics]",                                     // 13
            "listen = \"0.0.0.0:443\"",                      // 14
            "[[route]]",                                     // 15
            "path = \"nope\"",                               // 16
            "verify = \"mpesa\"",                            // 17
            "token = \"inline\"",                            // 18
        ]);
        let errors = parse_err(&text);
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.line.unwrap(), e.key.clone().unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                (2, "filter.interfaces[0]".to_owned()),
                (3, "filter.mode".to_owned()),
                (4, "filter.protected_ports[0]".to_owned()),
                (5, "filter.pin_path".to_owned()),
                (6, "filter.colour".to_owned()),
                (8, "allow.presets[1]".to_owned()),
                (9, "allow.cidrs[0]".to_owned()),
                (10, "allow.files[0]".to_owned()),
                (14, "metrics.listen".to_owned()),
                (16, "route[0].path".to_owned()),
                (18, "route[0].token".to_owned()),
            ]
        );
        // Display: one error per line, each "FILE:LINE: `key`: message".
        let shown = ConfigErrors(errors).to_string();
        assert_eq!(shown.lines().count(), 11);
        assert!(
            shown.starts_with("/etc/hookwall/hookwall.toml:2: `filter.interfaces[0]`: "),
            "{shown}"
        );
    }

    // --- errors, display, helpers ---

    #[test]
    fn config_error_display_leaves_out_unknown_parts() {
        let mut error = ConfigError {
            file: "/x.toml".into(),
            line: Some(3),
            key: Some("filter.mode".into()),
            message: "bad".into(),
        };
        assert_eq!(error.to_string(), "/x.toml:3: `filter.mode`: bad");
        error.line = None;
        assert_eq!(error.to_string(), "/x.toml: `filter.mode`: bad");
        error.key = None;
        assert_eq!(error.to_string(), "/x.toml: bad");
    }

    #[test]
    fn line_of_counts_from_one() {
        let text = "a\nbc\n\nd";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 1), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 3);
        assert_eq!(line_of(text, 6), 4);
        assert_eq!(line_of(text, 999), 4);
    }

    #[test]
    fn load_reads_the_file_or_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let errors = load(&missing).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].file, missing);
        assert!(errors.0[0].message.contains("cannot read the config file"));

        // Monitor mode with an explicit interface that is on every Linux host: independent of
        // this machine's routes.
        let path = dir.path().join("hookwall.toml");
        std::fs::write(
            &path,
            "[filter]\ninterfaces = [\"lo\"]\nmode = \"monitor\"\n",
        )
        .unwrap();
        if Path::new("/sys/class/net/lo").exists() {
            let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.path, path);
            assert_eq!(config.filter.interfaces, ["lo"]);
        }
    }

    #[test]
    fn default_routes_are_read_from_proc() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  wlan0\t0000A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n\
                  wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                  eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  tun0\t00000000\t00000000\t0200\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_v4(v4).as_deref(), Some("eth0"));
        assert_eq!(default_route_v4("Iface\tDestination\n"), None);

        let v6 = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(default_route_v6(v6).as_deref(), Some("eth1"));
        assert_eq!(default_route_v6(""), None);
    }

    #[test]
    fn serde_names_read_the_schema() {
        assert_eq!(
            serde_names::<RawFilter>(),
            [
                "interfaces",
                "mode",
                "attach",
                "protected_ports",
                "pin_path",
                "strict_fragments"
            ]
        );
        assert_eq!(serde_names::<Mode>(), ["enforce", "monitor"]);
        assert_eq!(
            serde_names::<VerifyKind>(),
            [
                "mpesa",
                "standard-webhooks",
                "stripe",
                "github",
                "hmac-sha256",
                "shared-secret"
            ]
        );
    }

    #[test]
    fn as_str_matches_the_serde_names() {
        let modes = [Mode::Enforce, Mode::Monitor].map(Mode::as_str);
        assert_eq!(modes, serde_names::<Mode>());
        let attach =
            [AttachMode::Auto, AttachMode::Native, AttachMode::Generic].map(AttachMode::as_str);
        assert_eq!(attach, serde_names::<AttachMode>());
        let kinds = [
            VerifyKind::Mpesa,
            VerifyKind::StandardWebhooks,
            VerifyKind::Stripe,
            VerifyKind::Github,
            VerifyKind::HmacSha256,
            VerifyKind::SharedSecret,
        ]
        .map(VerifyKind::as_str);
        assert_eq!(kinds, serde_names::<VerifyKind>());
        assert_eq!(
            [Encoding::Hex, Encoding::Base64].map(Encoding::as_str),
            serde_names::<Encoding>()
        );
        assert_eq!(
            [OnFailure::Accept, OnFailure::Reject].map(OnFailure::as_str),
            serde_names::<OnFailure>()
        );
    }

    #[test]
    fn closest_finds_likely_typos_only() {
        assert_eq!(
            closest("interface", ["interfaces", "mode"]),
            Some("interfaces")
        );
        assert_eq!(closest("MODE", ["interfaces", "mode"]), Some("mode"));
        assert_eq!(closest("colour", ["interfaces", "mode"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("mpsea", "mpesa"), 1, "a swap is one edit");
    }

    // --- secrets ---

    #[test]
    fn secrets_resolve_from_files_without_trailing_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\r\n\n").unwrap();
        let secret = SecretRef::File(path.clone()).resolve().unwrap();
        assert_eq!(secret.expose(), b"s3cret");
        assert_eq!(&*secret, b"s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");

        std::fs::write(&path, "\n").unwrap();
        let err = SecretRef::File(path.clone()).resolve().unwrap_err();
        assert!(matches!(err, SecretError::Empty { .. }), "{err}");

        let missing = dir.path().join("absent");
        let err = SecretRef::File(missing.clone()).resolve().unwrap_err();
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn secrets_resolve_from_the_environment() {
        // PATH is set in every test environment; setting a variable here would race other tests.
        let secret = SecretRef::Env("PATH".into()).resolve().unwrap();
        assert!(!secret.is_empty());
        let name = "HOOKWALL_TEST_VARIABLE_THAT_IS_NEVER_SET";
        let err = SecretRef::Env(name.into()).resolve().unwrap_err();
        assert!(matches!(err, SecretError::EnvNotSet { .. }));
        assert!(err.to_string().contains(name), "{err}");
    }

    #[test]
    fn secret_refs_display_where_not_what() {
        assert_eq!(SecretRef::Env("A".into()).to_string(), "env A");
        assert_eq!(SecretRef::File("/s/a".into()).to_string(), "file /s/a");
    }

    // --- `hookwall check` output ---

    #[test]
    fn render_check_shows_settings_sources_and_secret_origins() {
        let mut text = SPEC_EXAMPLE.to_owned();
        text.push_str("\n[[route]]\npath = \"/hooks/gh\"\nverify = \"github\"\nsecrets = [{ file = \"/run/gh\" }, { env = \"GH_OLD\" }]\n");
        let shown = parse_ok(&text).render_check();
        for needle in [
            "/etc/hookwall/hookwall.toml: valid",
            "interfaces        eth0\n",
            "mode              enforce (",
            "attach            auto",
            "protected ports   443",
            "pin path          /sys/fs/bpf/hookwall",
            "[allow] 12 IPv4 and 1 IPv6 prefixes after merging 14 entries",
            "196.201.214.200/32  preset mpesa (Safaricom Daraja documentation, published callback IP whitelist)",
            "203.0.113.0/24      config line 11",
            "2001:db8::/48       config line 11",
            "listen            127.0.0.1:9184",
            "listen            0.0.0.0:443",
            "/mpesa/c2b/confirmation  mpesa              token from env HOOKWALL_MPESA_TOKEN",
            "/hooks/stripe            stripe             secrets from env STRIPE_WEBHOOK_SECRET",
            "/hooks/gh                github             secrets from file /run/gh, env GH_OLD",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        assert!(!shown.contains("port 22"));

        let shown = parse_ok(&lines(&["[filter]", "protected_ports = [22, 443]"])).render_check();
        assert!(
            shown.contains("interfaces        eth0 (the default route's)"),
            "{shown}"
        );
        assert!(
            shown.contains("note              port 22 is protected"),
            "{shown}"
        );
    }

    #[test]
    fn render_check_hides_the_query_of_delivery_and_validation_urls() {
        let mut text = lines(&[
            "[delivery]",
            "url = \"https://app.example/hooks?key=QUERYSECRET1\"",
            "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }",
        ]);
        text.push_str(&lines(MPESA_ROUTE));
        text.push_str(
            "validation = { url = \"https://app.example/v?key=QUERYSECRET2\", on_failure = \"accept\" }\n",
        );
        let shown = parse_ok(&text).render_check();
        assert!(
            shown.contains("POST https://app.example/hooks?…"),
            "{shown}"
        );
        assert!(
            shown.contains("validation by https://app.example/v?…"),
            "{shown}"
        );
        assert!(!shown.contains("QUERYSECRET"), "{shown}");
    }

    #[test]
    fn render_check_shows_the_delivery_and_validation_routes() {
        let shown = parse_ok("").render_check();
        for needle in [
            "retention         30days (delivered events older than this are purged)",
            "[delivery]\n  sink              none (events are stored only)",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }

        let mut text = http_delivery(&["max_attempts = 10", "backoff_max = \"1h\""]);
        text.push_str(&lines(MPESA_ROUTE));
        text.push_str(
            "validation = { url = \"http://127.0.0.1:8000/v\", timeout = \"2s\", on_failure = \"reject\" }\n",
        );
        let shown = parse_ok(&text).render_check();
        for needle in [
            "sink              POST http://127.0.0.1:8000/hookwall",
            "signing secret    from env HOOKWALL_DELIVERY_SECRET",
            "attempts          10s per attempt, 8 in flight; dead letter after 10 attempts or 3days",
            "backoff           1s doubling up to 1h, with jitter (half to all of it)",
            "mpesa              token from env HOOKWALL_MPESA_TOKEN; validation by \
             http://127.0.0.1:8000/v within 2s, else reject",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }

        let shown = parse_ok(&lines(&[
            "[delivery.nats]",
            "url = \"nats://127.0.0.1:4222\"",
            "token = { file = \"/run/nats-token\" }",
        ]))
        .render_check();
        for needle in [
            "sink              NATS JetStream nats://127.0.0.1:4222",
            "subject           hookwall.events (stream HOOKWALL, duplicate window 2m)",
            "nats token        from file /run/nats-token",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        assert!(!shown.contains("signing secret"), "{shown}");
    }
}
