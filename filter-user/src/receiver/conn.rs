//! One connection: the PROXY protocol header when `server.client_address` asks for one, the TLS
//! handshake, HTTP/1.1 or HTTP/2 as ALPN chose, the request count that
//! closes an idle HTTP/2 connection, and the 408 answered when a request's headers are too slow.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant, SystemTime},
};

use axum::{Router, body::Body, extract::Request};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::Watcher},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, watch},
};
use tokio_rustls::TlsAcceptor;

use super::{
    App, HANDSHAKE_TIMEOUT, Peer,
    audit::{Answered, Audit, Outcome},
    budget::ClientPermit,
    client::ProxiedClient,
    proxy::{self, Refused, Rewind},
};
use crate::{config::ClientAddress, metrics::ConnectionLabels};

/// What every connection of one server is served with.
pub(super) struct Shared {
    pub(super) app: Arc<App>,
    pub(super) router: Router,
    /// HTTP/1.1 only and HTTP/2 only. The protocol is the one ALPN chose (h2, else HTTP/1.1),
    /// so that no connection waits in protocol detection, which has no timeout: the header
    /// timeout applies from the first byte after the handshake.
    pub(super) http1: auto::Builder<TokioExecutor>,
    pub(super) http2: auto::Builder<TokioExecutor>,
    /// `server.limits.header_timeout` when the connection was admitted.
    pub(super) header_timeout: Duration,
}

/// Serves one accepted connection until it ends; `permit` holds its place under
/// `server.limits.max_connections` (and `max_connections_per_client`) until then. `stopping`
/// turns true when the server stops; `watcher` is held until the connection has ended, which
/// the server's graceful stop waits for.
pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: (OwnedSemaphorePermit, Option<ClientPermit>),
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    (watcher, stopping): (Watcher, watch::Receiver<bool>),
) {
    let _permit = permit;
    // One deadline for the PROXY header and the handshake together.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let routing = shared.app.routing.load_full();
    let (stream, proxied) = match &routing.client_address {
        ClientAddress::ProxyProtocol { trusted_proxies } => {
            match tokio::time::timeout_at(deadline, proxy::read_header(tcp, peer, trusted_proxies))
                .await
            {
                Ok(Ok(read)) => read,
                Ok(Err(refused)) => return refuse(&shared.app, peer, refused),
                Err(_) if proxy::is_trusted_peer(trusted_proxies, peer) => {
                    return refuse(&shared.app, peer, Refused::Missing);
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
        _ => (Rewind::new(Vec::new(), tcp), None),
    };
    // The routes in force change at reloads; a long connection must not keep old ones alive.
    drop(routing);
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
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
    // The client the audit line of a header timeout names.
    let client = match proxied {
        Some(ProxiedClient::Source(source)) => source.ip().to_canonical(),
        _ => peer.ip().to_canonical(),
    };
    let activity = Activity::new();
    let requests = Arc::clone(&activity);
    let service_shared = Arc::clone(&shared);
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        if let Some(proxied) = proxied {
            req.extensions_mut().insert(proxied);
        }
        let mut router = service_shared.router.clone();
        let guard = requests.begin();
        async move {
            let response = tower_service::Service::call(&mut router, req.map(Body::new)).await;
            drop(guard);
            response
        }
    });
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let builder = if h2 { &shared.http2 } else { &shared.http1 };
    let io = Tracked::new(tls);
    let header_timeout = shared.header_timeout;
    if h2 {
        io.close_when_idle(Arc::clone(&activity), header_timeout);
    }
    let conn = builder.serve_connection(TokioIo::new(io.clone()), service);
    let ended = serve_until_stopped(conn, &activity, stopping, header_timeout).await;
    drop(watcher);
    if let Err(e) = ended {
        if is_header_timeout(&*e) {
            answer_header_timeout(&shared, peer, client, io).await;
        } else {
            tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
        }
    }
}

/// Runs `conn` to its end. Once `stopping` turns true it is shut down gracefully (an answer in
/// progress is finished, then the connection closes), but not before its first request has
/// begun, for at most `first_request_wait`: the client of a connection accepted just before the
/// stop has sent, or is sending, a request it expects an answer to, and closing the connection
/// before reading it would fail that request. (A restart on a socket the service manager holds
/// refuses no connection; this keeps it from failing the ones the old process accepted.)
async fn serve_until_stopped<C>(
    conn: C,
    activity: &Activity,
    mut stopping: watch::Receiver<bool>,
    first_request_wait: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulShutdown,
{
    tokio::pin!(conn);
    let time_to_close = async {
        let _ = stopping.wait_for(|stop| *stop).await;
        if !activity.begun() {
            let _ = tokio::time::timeout(first_request_wait, activity.first.notified()).await;
        }
    };
    tokio::pin!(time_to_close);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            () = &mut time_to_close, if !closing => {
                closing = true;
                conn.as_mut().shut_down();
            }
        }
    }
}

/// A connection that can be asked to finish what it is doing and close.
trait GracefulShutdown {
    fn shut_down(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulShutdown for auto::Connection<'_, I, S, E>
where
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Closes a connection refused before TLS: counted in `hookwall_connections_refused_total` and
/// logged with the peer (there is no request, so no audit line).
fn refuse(app: &App, peer: SocketAddr, refused: Refused) {
    app.metrics
        .connections_refused
        .get_or_create(&ConnectionLabels {
            reason: refused.as_str(),
        })
        .inc();
    tracing::warn!(%peer, reason = refused.as_str(), "connection refused: {refused}");
}

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
    /// A request has begun on the connection.
    begun: std::sync::atomic::AtomicBool,
    /// Notified when the first request begins.
    first: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_done: std::sync::Mutex::new(Instant::now()),
            begun: std::sync::atomic::AtomicBool::new(false),
            first: tokio::sync::Notify::new(),
        })
    }

    /// Whether a request has begun on the connection.
    fn begun(&self) -> bool {
        self.begun.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks a request as being handled until the guard is dropped.
    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if !self.begun.swap(true, std::sync::atomic::Ordering::AcqRel) {
            // A stored permit if nobody waits yet: the stop that looks later still sees it.
            self.first.notify_one();
        }
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
async fn answer_header_timeout<T: AsyncWrite + Unpin>(
    shared: &Shared,
    peer: SocketAddr,
    client: IpAddr,
    io: Tracked<T>,
) {
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
    Audit::default().record(
        &shared.app.metrics,
        &Answered {
            time,
            peer,
            client,
            outcome: Outcome::Timeout,
            reason: "header_timeout",
            status: 408,
            latency: shared.header_timeout,
        },
    );
}
