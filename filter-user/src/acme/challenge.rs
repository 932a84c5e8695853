//! The HTTP-01 listener (`server.acme.http_listen`): plain HTTP, answering
//! `GET /.well-known/acme-challenge/TOKEN` with the key authorization of a challenge in flight
//! and 404 to everything else. It is never protected by the filter: the CA's validators connect
//! from addresses on no allowlist.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

/// The path prefix RFC 8555 section 8.3 fixes.
pub(crate) const PREFIX: &str = "/.well-known/acme-challenge/";
/// Time a validator has to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay open at all: a validator asks once.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The key authorizations of the challenges in flight, by token.
#[derive(Debug, Default)]
pub(crate) struct Challenges(Mutex<HashMap<String, String>>);

impl Challenges {
    pub(crate) fn insert(&self, token: String, key_authorization: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, key_authorization);
    }

    pub(crate) fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn get(&self, token: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }
}

/// The HTTP-01 listener on `listen`: `handed`, a socket the service manager holds and already
/// checked to listen there, else one bound now.
///
/// # Errors
/// If the address cannot be bound, or the handed socket cannot be registered with the runtime.
pub(crate) async fn bind(
    listen: SocketAddr,
    handed: Option<std::net::TcpListener>,
) -> anyhow::Result<tokio::net::TcpListener> {
    match handed {
        Some(handed) => crate::metrics::adopt(handed)
            .context("using the handed ACME socket (server.acme.http_listen)"),
        None => tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| {
                format!("binding the HTTP-01 listener on {listen} (server.acme.http_listen)")
            }),
    }
}

/// The router: the challenge path, 404 for everything else.
fn router(challenges: Arc<Challenges>) -> Router {
    Router::new()
        .route(&format!("{PREFIX}{{token}}"), get(answer))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(challenges)
}

async fn answer(
    State(challenges): State<Arc<Challenges>>,
    Path(token): Path<String>,
) -> impl IntoResponse {
    match challenges.get(&token) {
        Some(key_authorization) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            key_authorization,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serves the challenges on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    challenges: Arc<Challenges>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, "answering ACME HTTP-01 challenges");
    }
    let timeouts = crate::metrics::Timeouts {
        header: HEADER_TIMEOUT,
        connection: CONNECTION_TIMEOUT,
    };
    crate::metrics::serve_router(listener, router(challenges), shutdown, timeouts, "acme").await;
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower_service::Service as _;

    use super::*;

    async fn get(router: &mut Router, path: &str) -> (StatusCode, Option<String>, String) {
        let request = http::Request::get(path)
            .body(Body::empty())
            .expect("request");
        let response = router.call(request).await.expect("infallible");
        let status = response.status();
        let kind = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, kind, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_known_token_gets_its_key_authorization_and_anything_else_404() {
        let challenges = Arc::new(Challenges::default());
        challenges.insert("tok-1".into(), "tok-1.thumbprint".into());
        let mut router = router(Arc::clone(&challenges));
        let (status, kind, body) = get(&mut router, "/.well-known/acme-challenge/tok-1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(kind.as_deref(), Some("text/plain"));
        assert_eq!(body, "tok-1.thumbprint");
        for path in [
            "/.well-known/acme-challenge/tok-2",
            "/.well-known/acme-challenge/",
            "/",
            "/mpesa/confirm",
        ] {
            assert_eq!(
                get(&mut router, path).await.0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        challenges.clear();
        let (status, ..) = get(&mut router, "/.well-known/acme-challenge/tok-1").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a cleared challenge is gone");
    }
}
