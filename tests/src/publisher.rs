//! [`Publisher`]: a provider's address-list publisher for the `allow.sources` tests: a plain HTTP
//! server (an [`NsServer`]) on loopback inside a test network namespace (where the daemon
//! runs), serving documents the test sets and changes while it runs. The documents' shapes are
//! the fixtures under `tests/fixtures/sources/`, written from the publishers' documented
//! formats.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse as _, Response},
};

use crate::{netns::NetNs, ns_server::NsServer};

/// A document: the status and body served for a path.
type Documents = Arc<Mutex<HashMap<String, (u16, String)>>>;

/// The publisher; stops (and frees its port) when dropped.
pub struct Publisher {
    documents: Documents,
    addr: SocketAddr,
    _server: NsServer,
}

impl Publisher {
    /// A publisher on `127.0.0.1:port` in `ns`, serving nothing yet (404 for every path).
    ///
    /// # Panics
    /// If it cannot listen.
    #[must_use]
    pub fn start(ns: &NetNs, port: u16) -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let documents = Documents::default();
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&documents));
        let server = NsServer::start("test publisher", &ns.path(), addr, router);
        Self {
            documents,
            addr,
            _server: server,
        }
    }

    /// The URL of `path` (starting with `/`).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `body` with status 200 at `path` from now on.
    pub fn serve(&self, path: &str, body: &str) {
        self.set(path, 200, body);
    }

    /// Serves `status` with `body` at `path` from now on.
    pub fn set(&self, path: &str, status: u16, body: &str) {
        self.documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), (status, body.to_owned()));
    }
}

async fn handle(State(documents): State<Documents>, uri: Uri) -> Response {
    let found = documents
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(uri.path())
        .cloned();
    match found {
        Some((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
