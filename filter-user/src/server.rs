//! The HTTPS receiver: TLS (rustls, TLS 1.2 and 1.3, ALPN h2 and http/1.1) on `server.listen`,
//! one handler for every `[[route]]`, an audit line and metrics for every request.
//!
//! What a request goes through, in order (each refusal has its own outcome label and status):
//! 1. client address: the socket peer, or, when the peer is a trusted proxy, the right-most
//!    `Forwarded` / `X-Forwarded-For` hop that is not itself a trusted proxy ([`client_addr`]);
//! 2. per-client rate limit (429 with `Retry-After`) and the cap on requests in flight (503);
//!    the limits are `[server.limits]` ([`Limits`]), read at start.
//! 3. the route by path (404, the same answer for every unknown path); `mpesa` routes take
//!    `{path}/{token}`;
//! 4. `mpesa` routes: the client address must be on the allowlist (403), also in monitor mode;
//! 5. method POST (405) and, for providers that send JSON, `Content-Type: application/json`
//!    (415);
//! 6. the body, up to `server.limits.body_limit_bytes` (413) within
//!    `server.limits.body_timeout_ms` (408);
//! 7. [`Verifier::verify`] (401, 400; a wrong `mpesa` token gets the same 404 as an unknown path);
//! 8. the store: the answer leaves only after the event is committed ([`Inserted::New`]) or found
//!    ([`Inserted::Duplicate`]); both get the provider's success answer; a store error gets 503,
//!    never a false success.
//!
//! The certificate and the routes can be swapped while serving ([`Server::reload`]), without
//! closing a connection. A graceful stop closes the listener, lets requests in flight finish and
//! waits for their connections (at most [`SHUTDOWN_GRACE`]).

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use ipnet::IpNet;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    allowlist::Allowlist,
    config::{Config, Limits, RouteConfig, Tls, VerifyKind},
    delivery,
    metrics::{HttpLabels, Metrics, RouteLabels, ValidationLabels},
    store::{HashedBody, Inserted, NewEvent, StoreHandle, unix_ms},
    validation::Validator,
    verify::{self, Refusal, Verifier},
};

// The abuse limits (rate, connections, requests in flight, body size, header and body timeouts)
// are `[server.limits]`: see [`Limits`], whose defaults are defined in `config`.

/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// How often the rate limiter forgets clients whose budget is full again: without it, every
/// address that ever called (or a flood of spoofed-then-dropped ones reaching userspace in
/// monitor mode) would keep an entry for the daemon's whole life.
pub const LIMITER_CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// What became of a request: the `outcome` label of `hookwall_http_requests_total` and the
/// audit line's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and newly stored: 200.
    Accepted,
    /// Verified, already stored (a retry or replay): 200, not stored again.
    Duplicate,
    /// No route has this path (or an `mpesa` token is wrong): 404.
    NotFound,
    /// Not POST: 405.
    MethodNotAllowed,
    /// Not the content type the provider sends: 415.
    UnsupportedMediaType,
    /// An `mpesa` route called from an address not on the allowlist: 403.
    ForbiddenPeer,
    /// Body larger than `server.limits.body_limit_bytes`: 413.
    TooLarge,
    /// Body not received within `server.limits.body_timeout_ms`, or part of a request's
    /// headers not completed within `server.limits.header_timeout_ms` (route `none`): 408.
    Timeout,
    /// The verifier refused the callback: 401 or 400 (the reason says why).
    Refused,
    /// The body could not be read: 400.
    BadRequest,
    /// Client over its rate: 429.
    RateLimited,
    /// Too many requests in flight (`server.limits.max_in_flight`): 503 with `Retry-After: 1`,
    /// at once, not queued.
    Overloaded,
    /// The store failed: 503, the provider retries.
    StoreError,
    /// A C2B validation answered (route `validation`): 200 with the application's decision or
    /// the route's fallback (the reason says which); not stored.
    Validated,
}

impl Outcome {
    /// Every outcome, to pre-register metric series.
    pub const ALL: [Outcome; 14] = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::NotFound,
        Outcome::MethodNotAllowed,
        Outcome::UnsupportedMediaType,
        Outcome::ForbiddenPeer,
        Outcome::TooLarge,
        Outcome::Timeout,
        Outcome::Refused,
        Outcome::BadRequest,
        Outcome::RateLimited,
        Outcome::Overloaded,
        Outcome::StoreError,
        Outcome::Validated,
    ];

    /// The stable label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::NotFound => "not_found",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::ForbiddenPeer => "forbidden_peer",
            Outcome::TooLarge => "too_large",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
            Outcome::BadRequest => "bad_request",
            Outcome::RateLimited => "rate_limited",
            Outcome::Overloaded => "overloaded",
            Outcome::StoreError => "store_error",
            Outcome::Validated => "validated",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// Builds the rustls config for `tls`: TLS 1.3 and 1.2, ALPN h2 then http/1.1. For
/// [`Tls::SelfSigned`], `self_signed` is the certificate made at start (kept across reloads).
fn tls_config(
    tls: &Tls,
    self_signed: &(Vec<CertificateDer<'static>>, Vec<u8>),
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = match tls {
        Tls::Files { cert, key } => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .with_context(|| {
                    format!(
                        "reading the certificate chain {} (server.tls_cert)",
                        cert.display()
                    )
                })?;
            anyhow::ensure!(
                !certs.is_empty(),
                "{} (server.tls_cert) holds no PEM certificate",
                cert.display()
            );
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
                format!("reading the private key {} (server.tls_key)", key.display())
            })?;
            (certs, key)
        }
        Tls::SelfSigned => (
            self_signed.0.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self_signed.1.clone())),
        ),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and the private key do not make a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed certificate for `localhost` and the listen address: DER chain and PKCS#8 key.
fn make_self_signed(listen: SocketAddr) -> anyhow::Result<(Vec<CertificateDer<'static>>, Vec<u8>)> {
    let mut names = vec!["localhost".to_owned()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    Ok((
        vec![made.cert.der().clone()],
        made.signing_key.serialize_der(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

/// One route with its verifier.
struct Route {
    path: String,
    verify: VerifyKind,
    verifier: Verifier,
    /// C2B validation pass-through (`validation`): ask the application instead of storing.
    validator: Option<Validator>,
}

/// What a config says about requests: routes, the allowlist (for `mpesa`), trusted proxies.
struct Routing {
    routes: Vec<Route>,
    allowlist: Allowlist,
    trusted_proxies: Vec<IpNet>,
}

impl Routing {
    fn from_config(config: &Config) -> anyhow::Result<Self> {
        // Validation forwards are signed with delivery.secret, read once per config load.
        let forwarding = if config.routes.iter().any(|r| r.validation.is_some()) {
            let signer = config
                .delivery
                .as_ref()
                .map(delivery::delivery_signer)
                .transpose()?
                .flatten()
                .context("a route with `validation` needs delivery.secret to sign its forwards")?;
            Some((Arc::new(signer), delivery::http_client()?))
        } else {
            None
        };
        let routes = config
            .routes
            .iter()
            .map(|r: &RouteConfig| {
                let validator = match (&r.validation, &forwarding) {
                    (Some(validation), Some((signer, client))) => Some(
                        Validator::new(validation, Arc::clone(signer), client.clone())
                            .with_context(|| format!("route {}", r.path))?,
                    ),
                    _ => None,
                };
                Ok(Route {
                    path: r.path.clone(),
                    verify: r.verify,
                    verifier: Verifier::from_route(r)?,
                    validator,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            routes,
            allowlist: config.allowlist.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
        })
    }

    /// The route for `path`, and for `mpesa` routes the token segment (if any).
    fn find<'a>(&self, path: &'a str) -> Option<(&Route, Option<&'a str>)> {
        for route in &self.routes {
            if path == route.path {
                return Some((route, None));
            }
            if route.verify == VerifyKind::Mpesa
                && let Some(rest) = path.strip_prefix(route.path.as_str())
                && let Some(token) = rest.strip_prefix('/')
                && !token.is_empty()
                && !token.contains('/')
            {
                return Some((route, Some(token)));
            }
        }
        None
    }
}

/// The client's address: `peer` (IPv4-mapped IPv6 as IPv4) unless `peer` is a trusted proxy;
/// then the forwarding headers are walked from the right, through trusted hops only: the
/// `for=` parameters of `Forwarded` (RFC 7239) and the entries of `X-Forwarded-For`. A header
/// from an untrusted peer is never read; an unparsable hop (`unknown`, an obfuscated name,
/// garbage) ends the walk at the last trusted address.
///
/// A proxy sets one of the two headers, and a client can send the other: if both are present
/// and lead to different addresses, neither is believed and the answer is the proxy itself
/// (fail closed: a proxy's address is not on an `mpesa` allowlist).
#[must_use]
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let walk = |hops: Vec<Option<IpAddr>>| {
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(ip) = hop else {
                break;
            };
            client = ip.to_canonical();
            if !is_trusted(client) {
                break;
            }
        }
        client
    };
    let values = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let xff = values("x-forwarded-for");
    let forwarded = values("forwarded");
    let from_xff = (!xff.is_empty()).then(|| {
        walk(
            xff.iter()
                .flat_map(|v| v.split(','))
                .map(|hop| hop.trim().parse::<IpAddr>().ok())
                .collect(),
        )
    });
    let from_forwarded = (!forwarded.is_empty())
        .then(|| walk(forwarded.iter().flat_map(|v| forwarded_for(v)).collect()));
    match (from_xff, from_forwarded) {
        (Some(a), Some(b)) if a != b => peer,
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => peer,
    }
}

/// The `for=` address of each element of one `Forwarded` header value, in order; `None` for an
/// element whose `for` is missing, `unknown`, obfuscated or unparsable. RFC 7239 forms:
/// `for=192.0.2.60`, `for="192.0.2.60:4711"`, `for="[2001:db8::17]"`, `for="[2001:db8::17]:4711"`.
fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value
        .split(',')
        .map(|element| {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"'))
            })?;
            if let Some(rest) = node.strip_prefix('[') {
                let (v6, _port) = rest.split_once(']')?;
                return v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
            }
            // IPv4 with or without a port (a bare IPv6 is not valid here: it must be bracketed).
            let host = node.split_once(':').map_or(node, |(host, _port)| host);
            host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// State shared by every connection.
struct App {
    routing: ArcSwap<Routing>,
    store: StoreHandle,
    metrics: Metrics,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    in_flight: Semaphore,
    /// The limits in force (read at start).
    limits: Limits,
}

/// The socket peer of a request's connection (inserted by the connection's service).
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// A bound HTTPS server; [`Server::serve`] runs it, [`Server::reload`] swaps its certificate
/// and routes.
pub struct Server {
    listener: std::sync::Mutex<Option<TcpListener>>,
    listen: SocketAddr,
    tls: ArcSwap<rustls::ServerConfig>,
    self_signed: (Vec<CertificateDer<'static>>, Vec<u8>),
    app: Arc<App>,
}

impl Server {
    /// Builds the TLS config and the routes from `config` and binds `server.listen`.
    ///
    /// # Errors
    /// If a certificate, key or route secret cannot be read, or the address cannot be bound.
    pub async fn bind(
        config: &Config,
        store: StoreHandle,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let self_signed = if config.server.tls == Tls::SelfSigned {
            tracing::warn!(
                "!!! server.tls = \"self-signed\": serving HTTPS with a certificate generated now, \
                 which no provider will trust. For a first run only: set server.tls_cert and \
                 server.tls_key before giving this URL to a provider !!!"
            );
            make_self_signed(listen)?
        } else {
            (Vec::new(), Vec::new())
        };
        let tls = tls_config(&config.server.tls, &self_signed)?;
        let routing = Routing::from_config(config)?;
        for route in &routing.routes {
            for outcome in Outcome::ALL {
                let _ = metrics.http_requests.get_or_create(&HttpLabels {
                    route: route.path.clone(),
                    outcome: outcome.as_str(),
                });
            }
        }
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the HTTPS listener on {listen} (server.listen)"))?;
        let limits = config.server.limits;
        let quota =
            Quota::per_second(NonZeroU32::new(limits.rate_per_second).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(limits.rate_burst).unwrap_or(NonZeroU32::MIN));
        Ok(Self {
            listener: std::sync::Mutex::new(Some(listener)),
            listen,
            tls: ArcSwap::new(tls),
            self_signed,
            app: Arc::new(App {
                routing: ArcSwap::from_pointee(routing),
                store,
                metrics,
                limiter: RateLimiter::keyed(quota),
                in_flight: Semaphore::new(limits.max_in_flight),
                limits,
            }),
        })
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(self.listen)
    }

    /// Re-reads the certificate (PEM files; a self-signed one is kept) and the routes from
    /// `config` and swaps them in for new connections and requests. On any error the old ones
    /// stay in force.
    ///
    /// # Errors
    /// If the certificate, key or a route secret cannot be read.
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        if config.server.listen != self.listen {
            tracing::warn!("server.listen changed; it takes effect when hookwall restarts");
        }
        if config.server.limits != self.app.limits {
            tracing::warn!("server.limits changed; they take effect when hookwall restarts");
        }
        let tls = if config.server.tls == Tls::SelfSigned && self.self_signed.0.is_empty() {
            // Switching to self-signed while running: make one now.
            tls_config(&config.server.tls, &make_self_signed(self.listen)?)?
        } else {
            tls_config(&config.server.tls, &self.self_signed)?
        };
        let routing = Routing::from_config(config)?;
        self.tls.store(tls);
        self.app.routing.store(Arc::new(routing));
        tracing::info!("HTTPS certificate and routes reloaded");
        Ok(())
    }

    /// Accepts connections until `shutdown` completes, then stops accepting, lets requests in
    /// flight finish (at most [`SHUTDOWN_GRACE`]) and returns.
    ///
    /// # Errors
    /// If called twice.
    pub async fn serve(&self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .context("the HTTPS server is already serving")?;
        tracing::info!(listen = %self.listen, "serving HTTPS");
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&self.app));
        let graceful = GracefulShutdown::new();
        let limits = self.app.limits;
        let connections = Arc::new(Semaphore::new(limits.max_connections));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        // The protocol is the one ALPN chose (h2, else HTTP/1.1), so that no connection waits in
        // protocol detection, which has no timeout: the header timeout applies from the first
        // byte after the handshake.
        let builders = Arc::new((builder.clone().http1_only(), builder.http2_only()));
        tokio::pin!(shutdown);
        let mut cleanup = tokio::time::interval(LIMITER_CLEANUP_EVERY);
        cleanup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                _ = cleanup.tick() => {
                    forget_idle_clients(&self.app.limiter);
                    continue;
                }
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::debug!(%peer, "connection cap reached; closing a new connection");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(self.tls.load_full());
            let watcher = graceful.watcher();
            let router = router.clone();
            let builders = Arc::clone(&builders);
            let app = Arc::clone(&self.app);
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let activity = Activity::new();
                let requests = Arc::clone(&activity);
                let service =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(Peer(peer));
                        let mut router = router.clone();
                        let guard = requests.begin();
                        async move {
                            let response =
                                tower_service::Service::call(&mut router, req.map(Body::new)).await;
                            drop(guard);
                            response
                        }
                    });
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let builder = if h2 { &builders.1 } else { &builders.0 };
                let io = Tracked::new(tls);
                if h2 {
                    io.close_when_idle(activity, limits.header_timeout);
                }
                let conn = builder.serve_connection(TokioIo::new(io.clone()), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    if is_header_timeout(&*e) {
                        answer_header_timeout(&app, peer, io).await;
                    } else {
                        tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                    }
                }
            });
        }
        drop(listener);
        tracing::info!("HTTPS listener closed; finishing requests in flight");
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
        Ok(())
    }
}

/// Drops the rate-limit state of clients whose budget has refilled (they are indistinguishable
/// from new clients), and gives the memory back.
fn forget_idle_clients(limiter: &DefaultKeyedRateLimiter<IpAddr>) {
    limiter.retain_recent();
    limiter.shrink_to_fit();
}

// ---------------------------------------------------------------------------------------------
// Slow headers: 408
// ---------------------------------------------------------------------------------------------

/// A connection's stream, shared with hyper, that remembers whether the client has sent bytes
/// since the last answer: when hyper gives up on a request's headers
/// (`server.limits.header_timeout_ms`) it closes the connection without a word, so the stream
/// is taken back to answer 408 first, if part of a request arrived. A keep-alive connection that
/// merely sat idle is closed silently (an unasked-for 408 could be read as the answer to the
/// client's next request).
struct Tracked<T>(Arc<std::sync::Mutex<TrackedInner<T>>>);

struct TrackedInner<T> {
    io: T,
    /// Bytes were read since the last write.
    partial: bool,
    /// HTTP/2 only: ends the connection once it has carried no request for the header timeout.
    idle: Option<IdleCutoff>,
}

/// Requests on one connection: how many are being handled, and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    last_done: std::sync::Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_done: std::sync::Mutex::new(Instant::now()),
        })
    }

    /// Marks a request as being handled until the guard is dropped.
    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ActivityGuard(Arc::clone(self))
    }

    /// When the connection went idle, or `None` while a request is being handled.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            *self
                .last_done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// A request being handled; its drop records the end.
struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        *self
            .0
            .last_done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The idle limit of an HTTP/2 connection. hyper's HTTP/2 server has no counterpart of the
/// HTTP/1.1 header timeout: a client could open a connection (or send the preface, or keep
/// pinging) and never send a request, holding one of `max_connections` for ever. The stream
/// therefore reports end-of-file once no request has been in flight for the limit, which ends
/// the connection the same silent way an idle HTTP/1.1 keep-alive connection ends.
struct IdleCutoff {
    activity: Arc<Activity>,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl IdleCutoff {
    /// Whether the connection has been idle for the limit; otherwise arms the timer for the
    /// moment it would be (registering `cx` to be woken then).
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        loop {
            let deadline = match self.activity.idle_since() {
                Some(since) => since + self.limit,
                // A request is being handled; look again a full limit from now.
                None => Instant::now() + self.limit,
            };
            if Instant::now() >= deadline {
                return true;
            }
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl<T> Clone for Tracked<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Tracked<T> {
    fn new(io: T) -> Self {
        Self(Arc::new(std::sync::Mutex::new(TrackedInner {
            io,
            partial: false,
            idle: None,
        })))
    }

    /// Ends the stream (end-of-file) once `activity` has shown no request for `limit`.
    fn close_when_idle(&self, activity: Arc<Activity>, limit: Duration) {
        self.lock().idle = Some(IdleCutoff {
            activity,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackedInner<T>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut inner = self.lock();
        let before = buf.filled().len();
        let polled = Pin::new(&mut inner.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            inner.partial = true;
        }
        if polled.is_pending()
            && let Some(idle) = inner.idle.as_mut()
            && idle.expired(cx)
        {
            // Nothing read: end-of-file.
            return Poll::Ready(Ok(()));
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut inner = self.lock();
        let polled = Pin::new(&mut inner.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            inner.partial = false;
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut inner = self.lock();
        let polled = Pin::new(&mut inner.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            inner.partial = false;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.lock().io.is_write_vectored()
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.lock().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.lock().io).poll_shutdown(cx)
    }
}

/// Whether a connection ended because hyper's header read timeout fired.
fn is_header_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// After a header timeout: 408 (outcome `timeout`, reason `header_timeout`, route `none`) if
/// part of a request arrived, then close.
async fn answer_header_timeout<T: AsyncWrite + Unpin>(app: &App, peer: SocketAddr, io: Tracked<T>) {
    const ANSWER: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; \
        charset=utf-8\r\ncontent-length: 15\r\nconnection: close\r\n\r\nRequest Timeout";
    if !io.lock().partial {
        tracing::debug!(%peer, "idle connection closed after the header timeout");
        return;
    }
    let time = SystemTime::now();
    let mut io = io;
    let written = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(ANSWER).await?;
        io.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!(%peer, "could not write 408 after the header timeout");
    }
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: "none".to_owned(),
            outcome: Outcome::Timeout.as_str(),
        })
        .inc();
    AuditLine {
        time: rfc3339(time),
        peer,
        client: peer.ip().to_canonical(),
        route: None,
        outcome: Outcome::Timeout.as_str(),
        status: 408,
        reason: "header_timeout",
        event_id: None,
        body_sha256: None,
        latency_ms: app.limits.header_timeout.as_secs_f64() * 1e3,
    }
    .log();
}

// ---------------------------------------------------------------------------------------------
// One request
// ---------------------------------------------------------------------------------------------

/// One audit line (tracing target `audit`): who asked what, and what hookwall answered; never a
/// secret or a body. Serialized in one pass from borrowed fields, with no map of its own: it is
/// written for every request.
#[derive(serde::Serialize)]
struct AuditLine<'a> {
    time: String,
    peer: SocketAddr,
    client: IpAddr,
    route: Option<&'a str>,
    outcome: &'static str,
    status: u16,
    reason: &'a str,
    event_id: Option<&'a str>,
    body_sha256: Option<&'a str>,
    latency_ms: f64,
}

impl AuditLine<'_> {
    fn log(&self) {
        match serde_json::to_string(self) {
            Ok(line) => tracing::info!(target: "audit", "{line}"),
            // Only a serializer bug could get here; the line's fields are plain values.
            Err(e) => tracing::error!(error = %e, "formatting an audit line failed"),
        }
    }
}

/// What the audit line and metrics record about one request, filled in as it is handled.
struct Audit {
    route: Option<String>,
    outcome: Outcome,
    reason: &'static str,
    event_id: Option<String>,
    body_sha256: Option<String>,
}

async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let started = Instant::now();
    let time = SystemTime::now();
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
    let routing = app.routing.load_full();
    let client = client_addr(peer.ip(), req.headers(), &routing.trusted_proxies);
    let mut audit = Audit {
        route: None,
        outcome: Outcome::NotFound,
        reason: "",
        event_id: None,
        body_sha256: None,
    };
    let response = process(&app, &routing, client, time, req, &mut audit).await;
    let elapsed = started.elapsed();
    let route = audit.route.clone().unwrap_or_else(|| "none".to_owned());
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            outcome: audit.outcome.as_str(),
        })
        .inc();
    app.metrics
        .http_duration
        .get_or_create(&RouteLabels { route })
        .observe(elapsed.as_secs_f64());
    AuditLine {
        time: rfc3339(time),
        peer,
        client,
        route: audit.route.as_deref(),
        outcome: audit.outcome.as_str(),
        status: response.status().as_u16(),
        reason: audit.reason,
        event_id: audit.event_id.as_deref(),
        body_sha256: audit.body_sha256.as_deref(),
        latency_ms: elapsed.as_secs_f64() * 1e3,
    }
    .log();
    response
}

/// A bare answer: status and a short body that names no route.
fn answer(status: StatusCode) -> Response {
    (status, status.canonical_reason().unwrap_or("")).into_response()
}

fn json_answer(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Whether the provider of `kind` sends JSON (then anything else is refused with 415).
fn wants_json(kind: VerifyKind) -> bool {
    matches!(
        kind,
        VerifyKind::Mpesa | VerifyKind::StandardWebhooks | VerifyKind::Stripe | VerifyKind::Github
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Headers kept with a stored event: ids and descriptions, never a signature or a secret.
const KEPT_HEADERS: [&str; 6] = [
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-github-event",
    "x-github-delivery",
];

async fn process(
    app: &App,
    routing: &Routing,
    client: IpAddr,
    time: SystemTime,
    req: Request,
    audit: &mut Audit,
) -> Response {
    if let Err(not_until) = app.limiter.check_key(&client) {
        audit.outcome = Outcome::RateLimited;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = answer(StatusCode::TOO_MANY_REQUESTS);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return response;
    }
    let Ok(_in_flight) = app.in_flight.try_acquire() else {
        // Deliberately not queued: a provider retries a 503, and a queue would only hold its
        // connection open longer.
        audit.outcome = Outcome::Overloaded;
        audit.reason = "max_in_flight";
        let mut response = answer(StatusCode::SERVICE_UNAVAILABLE);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let (parts, body) = req.into_parts();
    let Some((route, token)) = routing.find(parts.uri.path()) else {
        audit.outcome = Outcome::NotFound;
        return answer(StatusCode::NOT_FOUND);
    };
    audit.route = Some(route.path.clone());
    if route.verify == VerifyKind::Mpesa && !routing.allowlist.contains(client) {
        audit.outcome = Outcome::ForbiddenPeer;
        audit.reason = "peer_not_allowed";
        return answer(StatusCode::FORBIDDEN);
    }
    if parts.method != Method::POST {
        audit.outcome = Outcome::MethodNotAllowed;
        let mut response = answer(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if wants_json(route.verify) && !is_json(&parts.headers) {
        audit.outcome = Outcome::UnsupportedMediaType;
        return answer(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = app.limits.body_limit_bytes;
    if declared.is_some_and(|n| n > limit as u64) {
        audit.outcome = Outcome::TooLarge;
        audit.reason = "content_length";
        return answer(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let body = match tokio::time::timeout(
        app.limits.body_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Err(_) => {
            audit.outcome = Outcome::Timeout;
            audit.reason = "body_timeout";
            return answer(StatusCode::REQUEST_TIMEOUT);
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                audit.outcome = Outcome::TooLarge;
                audit.reason = "body";
                return answer(StatusCode::PAYLOAD_TOO_LARGE);
            }
            audit.outcome = Outcome::BadRequest;
            audit.reason = "body_read";
            return answer(StatusCode::BAD_REQUEST);
        }
        Ok(Ok(body)) => body,
    };
    // Without a copy when the collected body owns its buffer (one chunk, not shared).
    let body = HashedBody::new(Vec::from(body));
    audit.body_sha256 = Some(body.sha256_hex().to_owned());
    let verified = match route.verifier.verify(&verify::Request {
        path_token: token,
        headers: &parts.headers,
        body: body.bytes(),
        now: time,
    }) {
        Ok(verified) => verified,
        Err(refusal) => {
            audit.outcome = Outcome::Refused;
            audit.reason = refusal.reason();
            return answer(refusal_status(&refusal));
        }
    };
    audit.event_id = Some(verified.event_id.clone());
    if let Some(validator) = &route.validator {
        let decision = validator
            .ask(
                &verified.event_id,
                bytes::Bytes::copy_from_slice(body.bytes()),
            )
            .await;
        app.metrics
            .delivery
            .validations
            .get_or_create(&ValidationLabels {
                route: route.path.clone(),
                result: decision.label(),
            })
            .inc();
        audit.outcome = Outcome::Validated;
        audit.reason = decision.label();
        return json_answer(StatusCode::OK, decision.answer());
    }
    let headers = KEPT_HEADERS
        .iter()
        .filter_map(|&name| {
            let value = parts.headers.get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    let event = NewEvent {
        route: route.path.clone(),
        event_id: verified.event_id,
        kind: verified.kind.as_str().to_owned(),
        received_at_ms: unix_ms(time),
        body,
        headers,
    };
    // Everything needed from the request is copied into `event`: free the header map now, while
    // it is in this thread's cache, rather than after the commit, when the task may have moved
    // to another worker (freeing it there took ~2 us a request, against ~0.5 us here).
    drop(parts);
    match app.store.insert(event).await {
        Ok(inserted) => {
            audit.outcome = match inserted {
                Inserted::New { .. } => Outcome::Accepted,
                Inserted::Duplicate { .. } => Outcome::Duplicate,
            };
            if route.verify == VerifyKind::Mpesa {
                json_answer(StatusCode::OK, verify::mpesa_accept_body())
            } else {
                json_answer(StatusCode::OK, r#"{"received":true}"#)
            }
        }
        Err(e) => {
            tracing::error!(route = %route.path, error = %e, "storing an event failed; answering 503");
            audit.outcome = Outcome::StoreError;
            audit.reason = "store";
            answer(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// The status of a verifier's refusal. A wrong or missing `mpesa` token gets 404, the answer
/// to an unknown path, so that probing does not reveal which paths are routes.
fn refusal_status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::MissingToken | Refusal::BadToken => StatusCode::NOT_FOUND,
        Refusal::BadBody { .. } | Refusal::NoEventId { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNAUTHORIZED,
    }
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-08-18T09:30:00.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn an_audit_line_is_one_json_object_with_every_field() {
        let line = AuditLine {
            time: rfc3339(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            peer: "[::ffff:198.51.100.20]:40000".parse().unwrap(),
            client: "192.0.2.10".parse().unwrap(),
            route: Some("/hooks/sw"),
            outcome: "accepted",
            status: 200,
            reason: "",
            event_id: Some("msg_1"),
            body_sha256: None,
            latency_ms: 1.5,
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains('\n'), "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "time": "2023-11-14T22:13:20.123Z",
                "peer": "[::ffff:198.51.100.20]:40000",
                "client": "192.0.2.10",
                "route": "/hooks/sw",
                "outcome": "accepted",
                "status": 200,
                "reason": "",
                "event_id": "msg_1",
                "body_sha256": null,
                "latency_ms": 1.5,
            })
        );
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn untrusted_peer_header_changes_nothing() {
        let peer: IpAddr = "198.51.100.20".parse().unwrap();
        let headers = xff(&["192.0.2.10"]);
        assert_eq!(client_addr(peer, &headers, &[]), peer);
        assert_eq!(
            client_addr(peer, &headers, &nets(&["203.0.113.0/24"])),
            peer
        );
    }

    #[test]
    fn walks_trusted_hops_from_the_right() {
        let trusted = nets(&["203.0.113.0/24"]);
        let peer: IpAddr = "203.0.113.1".parse().unwrap();
        // The left-most entry is whatever the client claimed; only the hop the trusted proxy
        // saw counts.
        let headers = xff(&["192.0.2.99, 198.51.100.7", "203.0.113.2"]);
        assert_eq!(
            client_addr(peer, &headers, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // All hops trusted: the left-most one.
        let headers = xff(&["203.0.113.9"]);
        assert_eq!(
            client_addr(peer, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last trusted address.
        let headers = xff(&["192.0.2.5, nonsense"]);
        assert_eq!(client_addr(peer, &headers, &trusted), peer);
        // No header: the peer.
        assert_eq!(client_addr(peer, &HeaderMap::new(), &trusted), peer);
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("forwarded", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn reads_rfc7239_forwarded_through_trusted_hops() {
        let trusted = nets(&["203.0.113.0/24", "2001:db8:ff::/48"]);
        let peer: IpAddr = "203.0.113.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The RFC's own examples, quoted, with ports, IPv6 in brackets, other parameters.
        for (value, expect) in [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            (r#"for="192.0.2.43:47011""#, "192.0.2.43"),
            (r#"For="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::17"),
            (r#"for="[2001:db8:cafe::17]""#, "2001:db8:cafe::17"),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            // Walked from the right through trusted hops only.
            (
                "for=192.0.2.99, for=198.51.100.7, for=203.0.113.2",
                "198.51.100.7",
            ),
            (r#"for=192.0.2.99, for="[2001:db8:ff::5]""#, "192.0.2.99"),
            // Unknown, obfuscated or garbage: the walk stops at the last trusted address.
            ("for=unknown", "203.0.113.1"),
            ("for=_hidden, for=203.0.113.7", "203.0.113.7"),
            ("for=2001:db8::1", "203.0.113.1"),
            ("proto=https", "203.0.113.1"),
        ] {
            assert_eq!(
                client_addr(peer, &forwarded(&[value]), &trusted),
                ip(expect),
                "{value}"
            );
        }
        // Several header lines are one list, in order.
        assert_eq!(
            client_addr(
                peer,
                &forwarded(&["for=192.0.2.1", "for=198.51.100.3"]),
                &trusted
            ),
            ip("198.51.100.3")
        );
        // From an untrusted peer the header is never read.
        let stranger = ip("198.51.100.20");
        assert_eq!(
            client_addr(stranger, &forwarded(&["for=192.0.2.10"]), &trusted),
            stranger
        );
    }

    #[test]
    fn disagreeing_forwarding_headers_are_not_believed() {
        let trusted = nets(&["203.0.113.0/24"]);
        let peer: IpAddr = "203.0.113.1".parse().unwrap();
        let mut both = xff(&["198.51.100.7"]);
        both.append("forwarded", HeaderValue::from_static("for=192.0.2.10"));
        assert_eq!(client_addr(peer, &both, &trusted), peer);
        let mut agree = xff(&["198.51.100.7"]);
        agree.append("forwarded", HeaderValue::from_static("for=198.51.100.7"));
        assert_eq!(
            client_addr(peer, &agree, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn mapped_peers_are_ipv4() {
        let peer: IpAddr = "::ffff:192.0.2.10".parse().unwrap();
        assert_eq!(
            client_addr(peer, &HeaderMap::new(), &[]),
            "192.0.2.10".parse::<IpAddr>().unwrap()
        );
        let trusted = nets(&["203.0.113.0/24"]);
        let peer: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
        assert_eq!(
            client_addr(peer, &xff(&["::ffff:192.0.2.7"]), &trusted),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_rate_limiter_forgets_clients_whose_budget_refilled() {
        // 10 per second, burst 2: a client's state is back to "fresh" 200 ms after its last call.
        let quota = Quota::per_second(NonZeroU32::new(10).unwrap())
            .allow_burst(NonZeroU32::new(2).unwrap());
        let limiter: DefaultKeyedRateLimiter<IpAddr> = RateLimiter::keyed(quota);
        for i in 0..5000_u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0xC633_0000 | i));
            assert!(limiter.check_key(&ip).is_ok());
        }
        assert_eq!(limiter.len(), 5000);
        std::thread::sleep(Duration::from_millis(300));
        // A client that is using its budget now is kept (it has 200 ms before it is fresh).
        let busy = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));
        while limiter.check_key(&busy).is_ok() {}
        forget_idle_clients(&limiter);
        assert_eq!(
            limiter.len(),
            1,
            "only the client still within its window is kept"
        );
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_614_265_330_123);
        assert_eq!(rfc3339(t), "2021-02-25T15:02:10.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
