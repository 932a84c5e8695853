//! The HTTPS receiver: TLS (rustls, TLS 1.2 and 1.3, ALPN h2 and http/1.1) on `server.listen`,
//! one handler for every `[[route]]`, an audit line and metrics for every request.
//!
//! What a request goes through, in order (each refusal has its own outcome label and status;
//! docs/design/receiver.md says why this order):
//! 1. client address, from the one source `server.client_address` names (`client::client_addr`):
//!    the socket peer; or, when the peer is a trusted proxy, the right-most entry of the
//!    configured header that is not itself a trusted proxy; or the source of the PROXY protocol
//!    header a trusted balancer sent before TLS (`proxy`; a peer not trusted that sends one is
//!    closed before TLS). A trusted proxy that names no usable client leaves it unknown;
//! 2. per-client rate limit (429 with `Retry-After`) and the caps on requests in flight, for
//!    everyone and per client (503); a client is an IPv4 address or an IPv6 prefix
//!    (`budget::client_key`); the limits are `[server.limits]` ([`Limits`]), which a reload
//!    replaces ([`Server::apply_limits`]);
//! 3. the route by path (404, the same answer for every unknown path); `mpesa` routes take
//!    `{path}/{token}`;
//! 4. a route with `allow`, and an `mpesa` route without it: the client address must be known
//!    and in the route's list, `allow` or else the allowlist (403), also in monitor mode;
//! 5. method POST (405) and, for providers that send JSON, `Content-Type: application/json`
//!    (415);
//! 6. before the body: an `mpesa` route's path token (404 `not_found` when wrong or missing),
//!    the declared length (413), the signature header(s) a signed route's scheme needs (401);
//!    then the body, up to `server.limits.body_limit_bytes` (413) within
//!    `server.limits.body_timeout_ms` (408);
//! 7. the route's verifier (401, 400);
//! 8. the store: the answer leaves only after the event is committed (`accepted`) or found
//!    (`duplicate`); both get the provider's success answer; a store error gets 503, never a
//!    false success. A route with `validation` asks the application instead and stores nothing.
//!
//! The certificate and the routes can be swapped while serving ([`Server::apply`]; an ACME
//! certificate through [`Server::set_certificate`]), without closing a connection: each
//! connection keeps the config its handshake used. With `server.tls = "acme"` and no
//! certificate yet, every TLS handshake is refused. A graceful stop closes the listener, lets
//! requests in flight finish and waits for their connections (at most [`SHUTDOWN_GRACE`]); a
//! connection accepted but not yet sending has its first request served first
//! (`conn::serve_until_stopped`).

mod audit;
mod budget;
mod client;
#[cfg(test)]
mod client_props;
mod conn;
mod pipeline;
mod proxy;
mod routing;
mod tls;
pub mod validation;

#[cfg(test)]
mod tests;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::Router;
use governor::DefaultKeyedRateLimiter;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use self::{audit::Outcome, tls::install_crypto_provider};
use self::{budget::Budgets, routing::Routing, tls::SelfSigned};
use crate::{
    config::{Config, Limits, Tls},
    metrics::{HttpLabels, Metrics, RefusalLabels, Series},
    store::StoreHandle,
    verify::Refusal,
};

/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// How often the rate limiter forgets clients whose budget is full again: without it, every
/// address that ever called (or a flood of spoofed-then-dropped ones reaching userspace in
/// monitor mode) would keep an entry for the daemon's whole life.
pub const LIMITER_CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// What every request is handled with: the routes in force, the store, the metrics and the
/// limits. [`router`] serves it; [`Server`] puts TLS and a listener in front.
pub struct App {
    routing: ArcSwap<Routing>,
    store: StoreHandle,
    metrics: Metrics,
    /// The limits in force and the budgets they size.
    budgets: ArcSwap<Budgets>,
}

impl App {
    /// The routes and limits of `config`, storing into `store`; every route's request series is
    /// registered at zero, so dashboards see a route before its first request.
    ///
    /// # Errors
    /// If a route secret cannot be read, or a `validation` route has no `delivery.secret`.
    pub fn new(config: &Config, store: StoreHandle, metrics: Metrics) -> anyhow::Result<Self> {
        let routing = Routing::from_config(config)?;
        register_route_series(&metrics, &routing);
        Ok(Self {
            routing: ArcSwap::from_pointee(routing),
            store,
            metrics,
            budgets: ArcSwap::from_pointee(Budgets::new(config.server.limits)),
        })
    }
}

/// Makes the routes of `routing` the only ones with per-route series (a route a reload removed
/// loses its series) and registers every route's request series at zero, so dashboards see a
/// route before its first request and an alert on a forgery or on clock skew has a series to
/// compute a rate from.
fn register_route_series(metrics: &Metrics, routing: &Routing) {
    metrics.retain_routes(
        routing
            .routes
            .iter()
            .map(|route| route.path.as_str())
            .chain([audit::NO_ROUTE]),
    );
    for route in &routing.routes {
        for outcome in Outcome::ALL {
            metrics.register_zero(Series::Request(HttpLabels {
                route: route.path.clone(),
                outcome: outcome.as_str(),
            }));
        }
        for reason in Refusal::REASONS {
            metrics.register_zero(Series::Refusal(RefusalLabels {
                route: route.path.clone(),
                reason,
            }));
        }
        // A route's own `allow` is new to its operator: an alert on sources it refuses has a
        // series from the start.
        if let Some(sources) = &route.sources
            && sources.reason == routing::REASON_ROUTE_SOURCE
        {
            metrics.register_zero(Series::Refusal(RefusalLabels {
                route: route.path.clone(),
                reason: sources.reason,
            }));
        }
    }
}

/// The socket peer of a request's connection, set as a request extension by the connection
/// layer. A request without one (a test driving [`router`] directly) counts as coming from
/// `0.0.0.0:0`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The request handler for `app`, with no socket or TLS: every path goes to the one pipeline.
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(pipeline::handle).with_state(app)
}

/// A bound HTTPS server; [`Server::serve`] runs it, [`Server::apply`] swaps its certificate
/// and routes.
pub struct Server {
    listener: std::sync::Mutex<Option<TcpListener>>,
    listen: SocketAddr,
    tls: ArcSwap<rustls::ServerConfig>,
    self_signed: SelfSigned,
    /// Started with `server.tls = "acme"`: the certificate comes from the ACME task only, so a
    /// reload leaves it alone.
    acme: bool,
    app: Arc<App>,
}

impl Server {
    /// Builds the TLS config and the routes from `config` and binds `server.listen`, or serves
    /// on `handed`, a socket the service manager holds, already checked to listen there.
    ///
    /// # Errors
    /// If a certificate, key or route secret cannot be read, or the address cannot be bound.
    pub async fn bind(
        config: &Config,
        store: StoreHandle,
        metrics: Metrics,
        handed: Option<std::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let self_signed = if config.server.tls == Tls::SelfSigned {
            tracing::warn!(
                "!!! server.tls = \"self-signed\": serving HTTPS with a certificate generated now, \
                 which no provider will trust. For a first run only: set server.tls_cert and \
                 server.tls_key before giving this URL to a provider !!!"
            );
            tls::make_self_signed(listen)?
        } else {
            (Vec::new(), Vec::new())
        };
        let served = tls::tls_config(&config.server.tls, &self_signed)?;
        let acme = matches!(config.server.tls, Tls::Acme(_));
        metrics.health().watch_store(store.health());
        let app = App::new(config, store, metrics)?;
        let listener = match handed {
            Some(handed) => crate::metrics::adopt(handed)
                .context("using the handed HTTPS socket (server.listen)")?,
            None => TcpListener::bind(listen).await.with_context(|| {
                format!("binding the HTTPS listener on {listen} (server.listen)")
            })?,
        };
        app.metrics.health().https_bound(listen);
        let tls = match served {
            Some(served) => {
                app.metrics
                    .health()
                    .set_certificate_not_after(served.not_after);
                served.config
            }
            None => {
                app.metrics.health().expect_certificate();
                tls::no_certificate_yet()?
            }
        };
        Ok(Self {
            listener: std::sync::Mutex::new(Some(listener)),
            listen,
            tls: ArcSwap::new(tls),
            self_signed,
            acme,
            app: Arc::new(app),
        })
    }

    /// Re-reads the certificate (PEM files; a self-signed one is kept) and the routes from
    /// `config` and swaps them in for new connections and requests; nothing else of `config` is
    /// read (what a reload applies is the daemon's decision). On any error the old ones stay in
    /// force.
    ///
    /// # Errors
    /// If the certificate, key or a route secret cannot be read.
    pub fn apply(&self, config: &Config) -> anyhow::Result<()> {
        let served = if self.acme || matches!(config.server.tls, Tls::Acme(_)) {
            // The ACME task owns the certificate; a switch to or from ACME waits for a restart.
            None
        } else if config.server.tls == Tls::SelfSigned && self.self_signed.0.is_empty() {
            // Switching to self-signed while running: make one now.
            tls::tls_config(&config.server.tls, &tls::make_self_signed(self.listen)?)?
        } else {
            tls::tls_config(&config.server.tls, &self.self_signed)?
        };
        let routing = Routing::from_config(config)?;
        let metrics = &self.app.metrics;
        let certificate = served.is_some();
        if let Some(served) = served {
            self.tls.store(served.config);
            metrics.health().set_certificate_not_after(served.not_after);
        }
        register_route_series(metrics, &routing);
        self.app.routing.store(Arc::new(routing));
        if certificate {
            tracing::info!("HTTPS certificate and routes reloaded");
        } else {
            tracing::info!("HTTPS routes reloaded; the ACME task keeps the certificate");
        }
        Ok(())
    }

    /// Serves `certs` (the leaf first) with `key` to new connections from now on; connections
    /// open now keep the certificate their handshake used. Returns the leaf's notAfter (Unix
    /// seconds).
    ///
    /// # Errors
    /// If the leaf cannot be parsed or the key does not match it; the certificate in force
    /// stays.
    pub fn set_certificate(
        &self,
        certs: Vec<rustls_pki_types::CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> anyhow::Result<i64> {
        let leaf = certs.first().context("the chain holds no certificate")?;
        let not_after = tls::not_after(leaf)?;
        let served = tls::served(certs, key, not_after)?;
        self.tls.store(served.config);
        self.app
            .metrics
            .health()
            .set_certificate_not_after(served.not_after);
        Ok(served.not_after)
    }

    /// A duplicate of the listening socket, for a successor process to serve on; `None` once
    /// serving has begun (call it before [`Server::serve`]).
    ///
    /// # Errors
    /// If the fd cannot be duplicated.
    pub fn try_clone_listener(&self) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
        use std::os::fd::AsFd as _;
        self.listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|listener| listener.as_fd().try_clone_to_owned())
            .transpose()
    }

    /// Puts `limits` in force for the connections and requests admitted from now on (see
    /// `budget::Budgets::next`).
    pub fn apply_limits(&self, limits: Limits) {
        let next = self.app.budgets.load().next(limits);
        self.app.budgets.store(Arc::new(next));
        tracing::info!("server.limits reloaded");
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
        // Ready until the accept loop ends, whichever way it ends.
        let _serving = self.app.metrics.health().https_serving();
        let graceful = GracefulShutdown::new();
        let mut budgets = self.app.budgets.load_full();
        let mut shared = self.shared(&budgets);
        // What a connection's shutdown waits for; see `conn::serve_until_stopped`.
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        let mut cleanup = tokio::time::interval(LIMITER_CLEANUP_EVERY);
        cleanup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                _ = cleanup.tick() => {
                    forget_idle_clients(&self.app.budgets.load().limiter);
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
            // Limits a reload changed apply from the next connection on.
            let now = self.app.budgets.load_full();
            if !Arc::ptr_eq(&now, &budgets) {
                budgets = now;
                shared = self.shared(&budgets);
            }
            let Ok(permit) = Arc::clone(&budgets.connections).try_acquire_owned() else {
                tracing::debug!(%peer, "connection cap reached; closing a new connection");
                drop(tcp);
                continue;
            };
            // Counted by socket peer: a trusted proxy or balancer carries many clients on its
            // connections and is held only by the global cap.
            let client_permit = if client::is_trusted(
                self.app.routing.load().client_address.trusted_proxies(),
                peer.ip().to_canonical(),
            ) {
                None
            } else {
                let key = budget::client_key(peer.ip(), budgets.limits.ipv6_prefix);
                let Some(held) = budgets.connections_per_client.try_acquire(key) else {
                    tracing::debug!(
                        %peer,
                        "per-client connection cap reached; closing a new connection"
                    );
                    drop(tcp);
                    continue;
                };
                Some(held)
            };
            let _ = tcp.set_nodelay(true);
            let open = self.app.metrics.connection_open();
            let serve = conn::serve(
                tcp,
                peer,
                (permit, client_permit),
                TlsAcceptor::from(self.tls.load_full()),
                Arc::clone(&shared),
                (graceful.watcher(), stopping_rx.clone()),
            );
            tokio::spawn(async move {
                let _open = open;
                serve.await;
            });
        }
        // Closing this process's descriptor of the socket: a socket the service manager holds
        // stays open there, and connections queued on it wait for the next process.
        drop(listener);
        let _ = stopping.send(true);
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

impl Server {
    /// What the connections admitted under `budgets` are served with.
    fn shared(&self, budgets: &Budgets) -> Arc<conn::Shared> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(budgets.limits.header_timeout);
        Arc::new(conn::Shared {
            app: Arc::clone(&self.app),
            router: router(Arc::clone(&self.app)),
            http1: builder.clone().http1_only(),
            http2: builder.http2_only(),
            header_timeout: budgets.limits.header_timeout,
        })
    }
}

/// Drops the rate-limit state of clients whose budget has refilled (they are indistinguishable
/// from new clients), and gives the memory back.
fn forget_idle_clients(limiter: &DefaultKeyedRateLimiter<IpAddr>) {
    limiter.retain_recent();
    limiter.shrink_to_fit();
}
