//! `[server]` and `[server.limits]`: the HTTPS endpoint and its abuse limits.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

use super::{Checker, KeyPath, Table, acme::RawAcme, parse_choice, serde_names, type_name};
use crate::{allowlist, config::AcmeConfig};

/// `server.listen` default: the public HTTPS port on every IPv4 address.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 443);
/// `server.tls_cert` default (the name certbot and most ACME clients use).
const DEFAULT_TLS_CERT: &str = "/etc/hookwall/tls/fullchain.pem";
/// `server.tls_key` default.
const DEFAULT_TLS_KEY: &str = "/etc/hookwall/tls/privkey.pem";
/// `server.limits.rate_per_second` default: requests per second each client address may make on
/// average (429 beyond it).
pub const DEFAULT_RATE_PER_SECOND: u32 = 200;
/// `server.limits.rate_burst` default: requests a client may make at once before the rate applies.
pub const DEFAULT_RATE_BURST: u32 = 400;
/// `server.limits.max_connections` default: open connections at most (more are closed at once).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// `server.limits.max_in_flight` default: requests being handled at most (more get 503).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// `server.limits.max_in_flight_per_client` default (lowered to `max_in_flight` when that is
/// smaller): requests one client may have in flight (more get 503).
pub const DEFAULT_MAX_IN_FLIGHT_PER_CLIENT: usize = 64;
/// `server.limits.max_connections_per_client` default (lowered to `max_connections` when that is
/// smaller): connections one client may hold open (more are closed at once).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
/// `server.limits.ipv6_prefix` default: an IPv6 client is its /64, the smallest block a site
/// is given, so one host cannot be millions of clients.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// Bounds for `server.limits.ipv6_prefix`: a /48 is a whole site; 128 is one address.
const IPV6_PREFIX_RANGE: (i64, i64) = (48, 128);
/// What `max_in_flight` bodies of `body_limit_bytes` may hold in memory at once, at most: every
/// request in flight may buffer a whole body.
pub const MEMORY_BUDGET_BYTES: u64 = 2 * 1024 * 1024 * 1024;
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
    /// `server.tls = "acme"`: ordered from an ACME CA as `[server.acme]` says, kept in its cache
    /// and renewed by the daemon.
    Acme(AcmeConfig),
}

/// `[server]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Default: `0.0.0.0:443`.
    pub listen: SocketAddr,
    /// Default: [`Tls::Files`] with the default paths; never self-signed unless asked for.
    pub tls: Tls,
    /// `client_address`: where the client address comes from. Default: [`ClientAddress::Peer`].
    pub client_address: ClientAddress,
    /// `[server.limits]`: abuse limits. Defaults: [`Limits::default`].
    pub limits: Limits,
}

/// `server.client_address`, resolved: the one source of the client address the receiver judges
/// (the `mpesa` allowlist check, the rate limit, the audit line's `client`). One source only: a
/// proxy sets one header, and a second source is one the caller can write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientAddress {
    /// `"peer"`: the socket peer; every forwarding header is ignored.
    #[default]
    Peer,
    /// `{ header = "...", trusted_proxies = [...] }`: from a peer in `trusted_proxies`, the
    /// right-most entry of `header` that is not itself a trusted proxy; any other peer is the
    /// client itself.
    Header {
        /// The one header read.
        header: ForwardedHeader,
        /// Peers (and hops) whose header is believed; never empty.
        trusted_proxies: Vec<IpNet>,
    },
    /// `{ proxy_protocol = true, trusted_proxies = [...] }`: a peer in `trusted_proxies` must
    /// open with a PROXY protocol (v1 or v2) header, whose source is the client; any other peer
    /// is the client itself and is refused if it sends one.
    ProxyProtocol {
        /// L4 balancers whose PROXY header is believed; never empty.
        trusted_proxies: Vec<IpNet>,
    },
}

impl ClientAddress {
    /// The trusted proxies of this source (none for [`ClientAddress::Peer`]).
    #[must_use]
    pub fn trusted_proxies(&self) -> &[IpNet] {
        match self {
            Self::Peer => &[],
            Self::Header {
                trusted_proxies, ..
            }
            | Self::ProxyProtocol { trusted_proxies } => trusted_proxies,
        }
    }
}

/// The forwarding header of [`ClientAddress::Header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...` (nginx's `$proxy_add_x_forwarded_for`, most L7
    /// balancers).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (the `for=` parameters).
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lower case.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
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
    /// `max_in_flight_per_client`: requests one client (keyed like the rate limit) may have in
    /// flight; more get 503 (outcome `overloaded`, reason `max_in_flight_per_client`).
    /// Default: [`DEFAULT_MAX_IN_FLIGHT_PER_CLIENT`], at most `max_in_flight`.
    pub max_in_flight_per_client: usize,
    /// `max_connections_per_client`: connections one socket peer (keyed like the rate limit;
    /// a trusted proxy is exempt) may hold open; more are closed at once, unanswered.
    /// Default: [`DEFAULT_MAX_CONNECTIONS_PER_CLIENT`], at most `max_connections`.
    pub max_connections_per_client: usize,
    /// `ipv6_prefix`: the prefix length an IPv6 client is counted by in the rate limit and the
    /// per-client caps (an IPv4 client is its address). Default: [`DEFAULT_IPV6_PREFIX`].
    pub ipv6_prefix: u8,
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
            max_in_flight_per_client: DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawServer {
    listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls: Option<String>,
    client_address: Option<toml::Value>,
    limits: RawLimits,
    acme: Option<RawAcme>,
}

/// The keys of the table form of `server.client_address`. Read by hand from the TOML value (the
/// key takes a string or a table), so this struct only names them for the schema.
#[derive(Debug, Default, Deserialize)]
#[allow(
    dead_code,
    reason = "names the keys for the schema; the value is read by hand"
)]
struct RawClientAddress {
    header: Option<String>,
    proxy_protocol: Option<bool>,
    trusted_proxies: Vec<String>,
}

/// The only string value of `server.client_address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PeerKind {
    Peer,
}

/// Keys hookwall no longer reads, with what to write instead (`{value}` is replaced by the old
/// value as written). Reported instead of the plain unknown-key message.
pub(crate) const REMOVED_KEYS: &[(&str, &str)] = &[(
    "server.trusted_proxies",
    "server.trusted_proxies is no longer read: hookwall now takes the client address from one \
     source, so a caller cannot add a second header the proxy passes through. Replace it with \
     the one header your proxy sets, e.g. client_address = { header = \"x-forwarded-for\", \
     trusted_proxies = {value} } (or header = \"forwarded\" for RFC 7239), or, behind an L4 \
     balancer that sends a PROXY protocol header, client_address = { proxy_protocol = true, \
     trusted_proxies = {value} }; see docs/configuration.md",
)];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLimits {
    rate_per_second: Option<i64>,
    rate_burst: Option<i64>,
    max_connections: Option<i64>,
    max_in_flight: Option<i64>,
    max_in_flight_per_client: Option<i64>,
    max_connections_per_client: Option<i64>,
    ipv6_prefix: Option<i64>,
    body_limit_bytes: Option<i64>,
    header_timeout_ms: Option<i64>,
    body_timeout_ms: Option<i64>,
}

/// The only value of `server.tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum TlsKind {
    SelfSigned,
    Acme,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[
    Table {
        path: "server",
        array: false,
        keys: serde_names::<RawServer>,
        secret_refs: &[],
        secret_ref_lists: &[],
    },
    Table {
        path: "server.client_address",
        array: false,
        keys: serde_names::<RawClientAddress>,
        secret_refs: &[],
        secret_ref_lists: &[],
    },
    Table {
        path: "server.limits",
        array: false,
        keys: serde_names::<RawLimits>,
        secret_refs: &[],
        secret_ref_lists: &[],
    },
];

impl Checker<'_> {
    pub(super) fn server(&mut self, raw: RawServer) -> Option<ServerConfig> {
        let listen = self.socket_addr(&KeyPath::of("server.listen"), raw.listen, DEFAULT_LISTEN);
        let tls = self.tls(raw.tls, (raw.tls_cert, raw.tls_key), raw.acme);
        let client_address = self.client_address(raw.client_address);
        let limits = self.limits(raw.limits);
        Some(ServerConfig {
            listen: listen?,
            tls: tls?,
            client_address: client_address?,
            limits: limits?,
        })
    }

    /// `server.client_address`: `"peer"` (the default) or one table form.
    fn client_address(&mut self, raw: Option<toml::Value>) -> Option<ClientAddress> {
        const HOW: &str = "write client_address = \"peer\" (the default: no proxy in front), \
             { header = \"x-forwarded-for\", trusted_proxies = [\"10.0.0.5\"] } (or header = \
             \"forwarded\") behind an HTTP proxy, or { proxy_protocol = true, trusted_proxies = \
             [\"10.0.0.5\"] } behind an L4 balancer that sends a PROXY protocol header";
        let key = KeyPath::of("server.client_address");
        let table = match raw {
            None => return Some(ClientAddress::Peer),
            Some(toml::Value::String(text)) => {
                if let Ok(PeerKind::Peer) = parse_choice::<PeerKind>(&text) {
                    return Some(ClientAddress::Peer);
                }
                self.error(
                    &key,
                    format!("\"{text}\" is not a source of the client address: {HOW}"),
                );
                return None;
            }
            Some(toml::Value::Table(table)) => table,
            Some(other) => {
                self.error(&key, format!("this is {}: {HOW}", type_name(&other)));
                return None;
            }
        };
        let mut ok = true;
        for name in table.keys() {
            if !serde_names::<RawClientAddress>().contains(&name.as_str()) {
                self.unknown_key(&key.key(name));
                ok = false;
            }
        }
        let header = match table.get("header") {
            None => None,
            Some(toml::Value::String(text)) => match parse_choice::<ForwardedHeader>(text) {
                Ok(header) => Some(header),
                Err(message) => {
                    self.error(
                        &key.key("header"),
                        format!("{message}: name the one header your proxy sets"),
                    );
                    ok = false;
                    None
                }
            },
            Some(other) => {
                self.error(
                    &key.key("header"),
                    format!(
                        "this is {}: write header = \"x-forwarded-for\" or header = \"forwarded\"",
                        type_name(other)
                    ),
                );
                ok = false;
                None
            }
        };
        let proxy_protocol = match table.get("proxy_protocol") {
            None => None,
            Some(toml::Value::Boolean(true)) => Some(()),
            Some(toml::Value::Boolean(false)) => {
                self.error(
                    &key.key("proxy_protocol"),
                    "proxy_protocol = false reads no PROXY header: remove the table and write \
                     client_address = \"peer\" (or name a header)",
                );
                ok = false;
                None
            }
            Some(other) => {
                self.error(
                    &key.key("proxy_protocol"),
                    format!("this is {}: write proxy_protocol = true", type_name(other)),
                );
                ok = false;
                None
            }
        };
        let trusted_proxies =
            self.trusted_proxies(&key.key("trusted_proxies"), table.get("trusted_proxies"));
        let has_header = table.contains_key("header");
        let has_proxy = table.contains_key("proxy_protocol");
        if has_header && has_proxy {
            self.error(
                &key,
                "header and proxy_protocol are two sources of the client address: keep the one \
                 your proxy provides (a PROXY header from an L4 balancer, or a header from an \
                 HTTP proxy), never both",
            );
            return None;
        }
        if !has_header && !has_proxy && ok {
            self.error(&key, format!("the table names no source: {HOW}"));
            return None;
        }
        let trusted_proxies = trusted_proxies?;
        if !ok {
            return None;
        }
        match (header, proxy_protocol) {
            (Some(header), None) => Some(ClientAddress::Header {
                header,
                trusted_proxies,
            }),
            (None, Some(())) => Some(ClientAddress::ProxyProtocol { trusted_proxies }),
            _ => None,
        }
    }

    /// `client_address.trusted_proxies`: a non-empty list of addresses and prefixes.
    fn trusted_proxies(&mut self, key: &KeyPath, raw: Option<&toml::Value>) -> Option<Vec<IpNet>> {
        const WHY: &str = "list the addresses (or prefixes) your proxies connect from, e.g. \
             trusted_proxies = [\"10.0.0.5\"]: only they are believed; with no proxy in front, \
             write client_address = \"peer\" instead";
        let list = match raw {
            Some(toml::Value::Array(list)) if !list.is_empty() => list,
            Some(toml::Value::Array(_)) => {
                self.error(key, format!("the list is empty: {WHY}"));
                return None;
            }
            None => {
                self.error(
                    &KeyPath(key.parent().to_vec()),
                    format!("trusted_proxies is missing: {WHY}"),
                );
                return None;
            }
            Some(other) => {
                self.error(key, format!("this is {}: {WHY}", type_name(other)));
                return None;
            }
        };
        let mut nets = Vec::new();
        let mut ok = true;
        for (index, value) in list.iter().enumerate() {
            let parsed = match value {
                toml::Value::String(text) => allowlist::parse_entry(text),
                other => Err(format!(
                    "this is {}: write an address or prefix in quotes, e.g. \"10.0.0.5\"",
                    type_name(other)
                )),
            };
            match parsed {
                Ok(net) => nets.push(net),
                Err(message) => {
                    self.error(&key.index(index), message);
                    ok = false;
                }
            }
        }
        ok.then_some(nets)
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

    /// A per-client cap: unset, `default` lowered to the global cap `whole` (so that lowering
    /// the global cap alone stays valid); set, within 1 and the global cap.
    fn per_client(
        &mut self,
        name: &str,
        raw: Option<i64>,
        default: i64,
        (whole_name, whole): (&str, Option<i64>),
    ) -> Option<i64> {
        let whole = whole?;
        let value = self.limit(name, raw, default.min(whole), 1, MAX_LIMIT_COUNT)?;
        if value > whole {
            self.error(
                &KeyPath::of("server.limits").key(name),
                format!(
                    "{value} is more than {whole_name} ({whole}): one client cannot have more \
                     than everyone; use 1 to {whole}"
                ),
            );
            return None;
        }
        Some(value)
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
        let in_flight_per_client = self.per_client(
            "max_in_flight_per_client",
            raw.max_in_flight_per_client,
            count(d.max_in_flight_per_client),
            ("max_in_flight", in_flight),
        );
        let connections_per_client = self.per_client(
            "max_connections_per_client",
            raw.max_connections_per_client,
            count(d.max_connections_per_client),
            ("max_connections", connections),
        );
        let (p_min, p_max) = IPV6_PREFIX_RANGE;
        let prefix = self.limit(
            "ipv6_prefix",
            raw.ipv6_prefix,
            i64::from(d.ipv6_prefix),
            p_min,
            p_max,
        );
        if let (Some(n), Some(bytes)) = (in_flight, body) {
            let product = n.unsigned_abs().saturating_mul(bytes.unsigned_abs());
            if product > MEMORY_BUDGET_BYTES {
                self.error(
                    &KeyPath::of("server.limits").key("max_in_flight"),
                    format!(
                        "max_in_flight ({n}) x body_limit_bytes ({bytes}) = {product} bytes, \
                         more than the {MEMORY_BUDGET_BYTES} bytes (2 GiB) every request in \
                         flight may hold at once: lower server.limits.max_in_flight or \
                         server.limits.body_limit_bytes"
                    ),
                );
                return None;
            }
        }
        // Every value is within bounds that fit u8, u32 and usize.
        let as_u32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        let as_usize = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
        let as_ms = |v: i64| Duration::from_millis(v.unsigned_abs());
        Some(Limits {
            rate_per_second: as_u32(rate?),
            rate_burst: as_u32(burst?),
            max_connections: as_usize(connections?),
            max_in_flight: as_usize(in_flight?),
            max_in_flight_per_client: as_usize(in_flight_per_client?),
            max_connections_per_client: as_usize(connections_per_client?),
            ipv6_prefix: u8::try_from(prefix?).unwrap_or(u8::MAX),
            body_limit_bytes: as_usize(body?),
            header_timeout: as_ms(header?),
            body_timeout: as_ms(body_timeout?),
        })
    }

    fn tls(
        &mut self,
        kind: Option<String>,
        (cert, key): (Option<PathBuf>, Option<PathBuf>),
        acme: Option<RawAcme>,
    ) -> Option<Tls> {
        let tls_key = KeyPath::of("server.tls");
        let kind = match kind {
            None => None,
            Some(kind) => Some(self.choice(&tls_key, Some(kind), TlsKind::SelfSigned)?),
        };
        if kind != Some(TlsKind::Acme) && acme.is_some() {
            self.error(
                &KeyPath::of("server.acme"),
                "[server.acme] is only read with tls = \"acme\": add tls = \"acme\" to [server] \
                 to order the certificate from the CA, or remove [server.acme]",
            );
            return None;
        }
        let Some(kind) = kind else {
            let cert = cert.unwrap_or_else(|| PathBuf::from(DEFAULT_TLS_CERT));
            let key = key.unwrap_or_else(|| PathBuf::from(DEFAULT_TLS_KEY));
            return Some(Tls::Files {
                cert: self.beside_config(&cert),
                key: self.beside_config(&key),
            });
        };
        if cert.is_some() || key.is_some() {
            let name = match kind {
                TlsKind::SelfSigned => "self-signed",
                TlsKind::Acme => "acme",
            };
            self.error(
                &tls_key,
                format!(
                    "tls = \"{name}\" and tls_cert/tls_key both say where the certificate comes \
                     from: keep the files and remove tls, or remove tls_cert and tls_key"
                ),
            );
            return None;
        }
        match kind {
            TlsKind::SelfSigned => Some(Tls::SelfSigned),
            TlsKind::Acme => {
                let Some(acme) = acme else {
                    self.error(
                        &tls_key,
                        "tls = \"acme\" needs a [server.acme] table naming the certificate's \
                         domains, e.g. [server.acme] domains = [\"hooks.example.com\"] \
                         contact = \"mailto:ops@example.com\"",
                    );
                    return None;
                };
                self.acme(acme).map(Tls::Acme)
            }
        }
    }
}
