//! The metrics listener: `GET /metrics`, `GET /healthz` and `GET /readyz` on `metrics.listen`,
//! with timeouts that keep idle or slow clients from holding connections.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};

use super::Metrics;

/// The metrics listener on `listen` (`metrics.listen`): `handed`, a socket the service manager
/// holds and already checked to listen there, else one bound now.
///
/// # Errors
/// If the address cannot be bound (in use, not local, no permission), or the handed socket
/// cannot be registered with the runtime.
pub async fn bind(
    listen: SocketAddr,
    handed: Option<std::net::TcpListener>,
) -> anyhow::Result<tokio::net::TcpListener> {
    match handed {
        Some(handed) => adopt(handed).context("using the handed metrics socket (metrics.listen)"),
        None => tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the metrics listener on {listen} (metrics.listen)")),
    }
}

/// A listening socket the service manager handed over, as a tokio listener.
///
/// # Errors
/// If it cannot be made non-blocking or registered with the runtime.
pub fn adopt(listener: std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    // The manager may hand it blocking; tokio needs O_NONBLOCK. It is a flag of the shared
    // file description, which the manager does not read from.
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// How long a metrics connection may take. A scraper sends its request at once and reads the
/// answer in milliseconds; a client that connects and sends nothing, trickles its headers
/// (slowloris) or never reads the answer would otherwise hold its connection, and a task, for
/// as long as it liked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time to send a request's headers, counted from the connection's start or the previous
    /// answer: an idle keep-alive connection is closed after it too.
    pub header: Duration,
    /// Time a connection may stay open at all, however busy; a scraper reconnects.
    pub connection: Duration,
}

impl Timeouts {
    /// What [`serve`] uses: 10 s for headers, 5 min for a connection (Prometheus scrapes every
    /// 15 to 60 s on one keep-alive connection; a new one every few scrapes costs nothing).
    pub const DEFAULT: Self = Self {
        header: Duration::from_secs(10),
        connection: Duration::from_secs(300),
    };
}

/// How long a graceful stop waits for scrapes in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` on `listener` until `shutdown` completes, under [`Timeouts::DEFAULT`].
///
/// # Errors
/// If the listener's address cannot be read.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, metrics, shutdown, Timeouts::DEFAULT).await
}

/// [`serve`] under `timeouts`.
///
/// # Errors
/// If the listener's address cannot be read.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeouts: Timeouts,
) -> anyhow::Result<()> {
    let listen = listener
        .local_addr()
        .context("reading the metrics listener's address")?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    serve_router(listener, app, shutdown, timeouts, "metrics").await;
    Ok(())
}

/// Serves `app` over plain HTTP/1.1 on `listener` until `shutdown` completes, under `timeouts`,
/// then lets open connections finish for at most [`SHUTDOWN_GRACE`]. `name` says in the log
/// which listener a connection belongs to. The metrics listener and the ACME HTTP-01 listener
/// both serve this way.
pub(crate) async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeouts: Timeouts,
    name: &'static str,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            match tokio::time::timeout(timeouts.connection, conn).await {
                Err(_) => {
                    tracing::debug!(listener = name, %peer, "connection closed at its time limit")
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = name, %peer, error = %e, "connection ended")
                }
                Ok(Ok(())) => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            listener = name,
            "connections still open at shutdown; closing them"
        );
    }
}

async fn scrape(State(metrics): State<Metrics>) -> impl IntoResponse {
    match metrics.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

const TEXT: [(header::HeaderName, &str); 1] = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];

/// Liveness: the process answers.
async fn healthz() -> impl IntoResponse {
    (TEXT, "ok\n")
}

/// Readiness: 200 `ok` when every check of [`super::Health`] passes, else 503 with one line
/// per failed check.
async fn readyz(State(metrics): State<Metrics>) -> impl IntoResponse {
    // A few bpf() calls and stats: short, but blocking.
    let not_ready = tokio::task::spawn_blocking(move || metrics.health().not_ready()).await;
    match not_ready {
        Ok(lines) if lines.is_empty() => (StatusCode::OK, TEXT, "ok\n".to_owned()),
        Ok(lines) => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            lines.iter().map(|l| format!("{l}\n")).collect(),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!("readiness check failed: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::filter::Pins;

    /// Serves on a free loopback port under `timeouts`; the listener stops when the returned
    /// sender is dropped.
    async fn listener(timeouts: Timeouts) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap(), None)
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new(&Pins::new("/sys/fs/bpf/hookwall-unit-test-absent"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(
            listener,
            metrics,
            async move {
                let _ = stopped.await;
            },
            timeouts,
        ));
        (addr, stop)
    }

    /// Reads until the server closes the connection (or resets it); what it sent, or `None` if
    /// it was still open after `wait` (far longer than any bound under test).
    async fn read_until_closed(
        conn: &mut tokio::net::TcpStream,
        wait: Duration,
    ) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(wait, async {
            let mut buf = [0u8; 4096];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        read.is_ok().then_some(got)
    }

    const SHORT: Timeouts = Timeouts {
        header: Duration::from_millis(300),
        connection: Duration::from_secs(1),
    };

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed() {
        let (addr, _stop) = listener(SHORT).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let got = read_until_closed(&mut conn, Duration::from_secs(20)).await;
        assert!(got.is_some(), "an idle metrics connection was not closed");
    }

    #[tokio::test]
    async fn trickled_headers_do_not_hold_a_connection() {
        let (addr, _stop) = listener(SHORT).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("write");
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            // One header line at a time, each well within the header timeout, never the end.
            for i in 0.. {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if conn
                    .write_all(format!("x-{i}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buf = [0u8; 1024];
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await
                {
                    return;
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a slowloris client held the metrics connection"
        );
    }

    #[tokio::test]
    async fn a_scrape_is_answered_and_the_idle_connection_then_closed() {
        let (addr, _stop) = listener(SHORT).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let got = read_until_closed(&mut conn, Duration::from_secs(20))
            .await
            .expect("the keep-alive connection was not closed");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains("hookwall_config_reloads_total"),
            "{text}"
        );
    }

    /// One request on a fresh connection; the whole answer.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let got = read_until_closed(&mut conn, Duration::from_secs(20))
            .await
            .expect("the connection was not closed");
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let (addr, _stop) = listener(Timeouts::DEFAULT).await;
        let answer = get(addr, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    }

    #[tokio::test]
    async fn readyz_names_what_is_not_ready() {
        let (addr, _stop) = listener(Timeouts::DEFAULT).await;
        // No filter applied yet.
        let answer = get(addr, "/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.ends_with("\r\n\r\nfilter: not attached yet (starting)\n"),
            "{answer}"
        );
    }
}
