//! The application hookwall delivers to, for the delivery tests: a real HTTP/1.1 server (an
//! [`NsServer`]: axum on its own thread) listening on loopback inside a test network
//! namespace (where the daemon runs).
//!
//! - Every request's Standard Webhooks signature is checked with the `standardwebhooks` crate
//!   (the reference library, not hookwall's code); a bad one is answered 401 and recorded as such.
//! - Every request is recorded as a [`Receipt`] when it arrives (ids, attempt, body, time).
//! - Behaviour is set while it runs: a status for every delivery ([`TestApp::set_status`]),
//!   per event id ([`TestApp::set_status_for`]), a delay, and for C2B validation requests
//!   (`POST /validate`) the answer body and its delay.
//! - [`TestApp::down`] stops listening and drops every connection at once (as a crashed
//!   application would); [`TestApp::up`] listens again on the same port. Drop stops it and frees
//!   the port.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::{netns::NetNs, ns_server::NsServer};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse as _, Response},
};

/// The path validation requests are sent to ([`TestApp::validation_url`]).
pub const VALIDATION_PATH: &str = "/validate";
/// The path deliveries are sent to ([`TestApp::delivery_url`]).
pub const DELIVERY_PATH: &str = "/hook";

/// One request the application received.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The request path.
    pub path: String,
    /// `webhook-id` (empty if missing).
    pub webhook_id: String,
    /// `idempotency-key`.
    pub idempotency_key: Option<String>,
    /// `hookwall-attempt`.
    pub attempt: Option<u32>,
    /// `hookwall-event` (the store row id).
    pub event: Option<i64>,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
    /// Whether the Standard Webhooks signature verified.
    pub signature_ok: bool,
    /// The status the application chose for it.
    pub status: u16,
    /// Every header, names lowercase, in order.
    pub headers: Vec<(String, String)>,
}

impl Receipt {
    /// The first header called `name` (lowercase).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this was a delivery (not a validation request).
    #[must_use]
    pub fn is_delivery(&self) -> bool {
        self.path == DELIVERY_PATH
    }
}

#[derive(Debug, Clone)]
struct Behaviour {
    status: u16,
    per_id: HashMap<String, u16>,
    delay: Duration,
    validation_answer: String,
    validation_delay: Duration,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    receipts: Mutex<Vec<Receipt>>,
    webhook: standardwebhooks::Webhook,
}

impl Shared {
    fn behaviour(&self) -> Behaviour {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The test application; see the module documentation.
pub struct TestApp {
    shared: Arc<Shared>,
    netns: PathBuf,
    addr: SocketAddr,
    /// The server thread while it is up (behind a lock so tests can stop it through `&self`).
    running: Mutex<Option<NsServer>>,
}

impl TestApp {
    /// An application for `ns` on `127.0.0.1:port` checking signatures made with `secret`
    /// (`whsec_...`), answering 200 to deliveries and accepting validations. Not listening yet:
    /// call [`TestApp::up`].
    ///
    /// # Panics
    /// If the secret is not a Standard Webhooks secret.
    #[must_use]
    pub fn new(ns: &NetNs, port: u16, secret: &str) -> Self {
        let webhook = standardwebhooks::Webhook::new(secret)
            .unwrap_or_else(|e| panic!("a Standard Webhooks secret: {e:?}"));
        Self {
            shared: Arc::new(Shared {
                behaviour: Mutex::new(Behaviour {
                    status: 200,
                    per_id: HashMap::new(),
                    delay: Duration::ZERO,
                    validation_answer: r#"{"ResultCode":0,"ResultDesc":"Accepted"}"#.to_owned(),
                    validation_delay: Duration::ZERO,
                }),
                receipts: Mutex::new(Vec::new()),
                webhook,
            }),
            netns: ns.path(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            running: Mutex::new(None),
        }
    }

    /// `http://127.0.0.1:PORT/hook`.
    #[must_use]
    pub fn delivery_url(&self) -> String {
        format!("http://{}{DELIVERY_PATH}", self.addr)
    }

    /// `http://127.0.0.1:PORT/validate`.
    #[must_use]
    pub fn validation_url(&self) -> String {
        format!("http://{}{VALIDATION_PATH}", self.addr)
    }

    /// Starts listening (in the namespace); returns once the socket accepts connections.
    ///
    /// # Panics
    /// If it is already up, or the thread cannot enter the namespace or bind.
    pub fn up(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(running.is_none(), "the test application is already up");
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&self.shared));
        *running = Some(NsServer::start(
            "test application",
            &self.netns,
            self.addr,
            router,
        ));
    }

    /// Stops listening and closes every connection; returns once the port is free.
    pub fn down(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(running);
    }

    /// Whether it is listening.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn change(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self
            .shared
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }

    /// The status every delivery gets (unless overridden per id).
    pub fn set_status(&self, status: u16) {
        self.change(|b| b.status = status);
    }

    /// The status deliveries of `webhook_id` get.
    pub fn set_status_for(&self, webhook_id: &str, status: u16) {
        self.change(|b| {
            b.per_id.insert(webhook_id.to_owned(), status);
        });
    }

    /// Removes the per-id status of `webhook_id`.
    pub fn clear_status_for(&self, webhook_id: &str) {
        self.change(|b| {
            b.per_id.remove(webhook_id);
        });
    }

    /// How long the application takes before answering a delivery.
    pub fn set_delay(&self, delay: Duration) {
        self.change(|b| b.delay = delay);
    }

    /// The answer body to validation requests and how long it takes to give it.
    pub fn set_validation(&self, answer: &str, delay: Duration) {
        self.change(|b| {
            answer.clone_into(&mut b.validation_answer);
            b.validation_delay = delay;
        });
    }

    /// Every request received so far, in order of arrival.
    #[must_use]
    pub fn receipts(&self) -> Vec<Receipt> {
        self.shared
            .receipts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The deliveries received so far (not validation requests).
    #[must_use]
    pub fn deliveries(&self) -> Vec<Receipt> {
        self.receipts()
            .into_iter()
            .filter(Receipt::is_delivery)
            .collect()
    }

    /// The validation requests received so far.
    #[must_use]
    pub fn validations(&self) -> Vec<Receipt> {
        self.receipts()
            .into_iter()
            .filter(|r| r.path == VALIDATION_PATH)
            .collect()
    }

    /// Deliveries answered 2xx, counted by webhook id.
    #[must_use]
    pub fn accepted_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.deliveries() {
            if (200..300).contains(&r.status) {
                *counts.entry(r.webhook_id).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.down();
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = shared.behaviour();
    let signature_ok = shared.webhook.verify(&body, &headers).is_ok();
    let webhook_id = header_text(&headers, "webhook-id").unwrap_or_default();
    let validation = uri.path() == VALIDATION_PATH;
    let status = if !signature_ok {
        401
    } else if validation {
        200
    } else {
        behaviour
            .per_id
            .get(&webhook_id)
            .copied()
            .unwrap_or(behaviour.status)
    };
    shared
        .receipts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Receipt {
            path: uri.path().to_owned(),
            idempotency_key: header_text(&headers, "idempotency-key"),
            attempt: header_text(&headers, "hookwall-attempt").and_then(|v| v.parse().ok()),
            event: header_text(&headers, "hookwall-event").and_then(|v| v.parse().ok()),
            webhook_id,
            body: body.to_vec(),
            at: Instant::now(),
            signature_ok,
            status,
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if validation && signature_ok {
        tokio::time::sleep(behaviour.validation_delay).await;
        return (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            behaviour.validation_answer,
        )
            .into_response();
    }
    tokio::time::sleep(behaviour.delay).await;
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"ok":true}"#,
    )
        .into_response()
}
