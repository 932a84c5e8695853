//! [`Publisher`]: a provider's address-list publisher for the `allow.sources` tests: a plain HTTP
//! server (axum on its own thread) on loopback inside a test network namespace (where the daemon
//! runs), serving documents the test sets and changes while it runs. The documents' shapes are
//! the fixtures under `tests/fixtures/sources/`, written from the publishers' documented
//! formats.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread::JoinHandle,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse as _, Response},
};

use crate::{app::listen, netns::NetNs};

/// A document: the status and body served for a path.
type Documents = Arc<Mutex<HashMap<String, (u16, String)>>>;

/// The publisher; stops (and frees its port) when dropped.
pub struct Publisher {
    documents: Documents,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
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
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (netns, shared) = (ns.path(), Arc::clone(&documents));
        let thread = std::thread::Builder::new()
            .name("test-publisher".into())
            .spawn(move || {
                let listener = match listen(&netns, addr) {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("tokio listener: {e}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let router = Router::new().fallback(handle).with_state(shared);
                    tokio::select! {
                        served = axum::serve(listener, router) => {
                            if let Err(e) = served {
                                eprintln!("test publisher on {addr}: {e}");
                            }
                        }
                        _ = stop_rx => {}
                    }
                });
                drop(runtime);
            })
            .expect("spawning the test publisher thread");
        if let Err(e) = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("the thread ended without reporting".into()))
        {
            let _ = thread.join();
            panic!("starting the test publisher on {addr}: {e}");
        }
        Self {
            documents,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
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

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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
