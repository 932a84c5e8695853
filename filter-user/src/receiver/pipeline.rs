//! One request, step by step: rate limit, in-flight caps, route, peer, method, content type,
//! `mpesa` token, length, signature header, body, verify, then validate or store. A step that
//! refuses returns a [`Rejection`] (outcome, reason, status, extra headers); [`handle`] records
//! whatever the request came to, once, in the metrics and the audit line.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{
        HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header, request::Parts,
    },
    response::{IntoResponse as _, Response},
};
use governor::clock::Clock as _;
use tokio::sync::OwnedSemaphorePermit;

use super::{
    App, Peer,
    audit::{Answered, Audit, Outcome},
    budget::{Budgets, ClientPermit, client_key},
    client::{Client, ProxiedClient, client_addr},
    routing::{Route, Routing, Sources},
};
use crate::{
    config::{Limits, VerifyKind},
    metrics::{RouteLabels, ValidationLabels},
    store::{HashedBody, Inserted, NewEvent, unix_ms},
    verify::{self, Refusal},
};

/// Headers kept with a stored event: ids and descriptions, never a signature or a secret.
const KEPT_HEADERS: [&str; 6] = [
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-github-event",
    "x-github-delivery",
];

/// A request refused by one of the steps: what it is recorded as and how it is answered.
#[derive(Debug)]
pub(crate) struct Rejection {
    outcome: Outcome,
    reason: &'static str,
    status: StatusCode,
    /// `Retry-After` for 429 and 503, `Allow` for 405.
    header: Option<(HeaderName, HeaderValue)>,
}

impl Rejection {
    fn new(outcome: Outcome, status: StatusCode) -> Self {
        Self {
            outcome,
            reason: "",
            status,
            header: None,
        }
    }

    fn because(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.header = Some((name, value));
        self
    }

    fn into_response(self) -> Response {
        let mut response = answer(self.status);
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A verifier's refusal. A wrong or missing `mpesa` token is answered and recorded like an
/// unknown path (404, `not_found`), so that probing does not reveal which paths are routes; its
/// reason still names the token.
impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        let (outcome, status) = match refusal {
            Refusal::MissingToken | Refusal::BadToken => (Outcome::NotFound, StatusCode::NOT_FOUND),
            Refusal::BadBody { .. } | Refusal::NoEventId { .. } => {
                (Outcome::Refused, StatusCode::BAD_REQUEST)
            }
            _ => (Outcome::Refused, StatusCode::UNAUTHORIZED),
        };
        Self::new(outcome, status).because(refusal.reason())
    }
}

/// A request that went through every step: stored (or found stored), or validated.
struct Accepted {
    outcome: Outcome,
    reason: &'static str,
    response: Response,
}

/// The router's only handler: runs the steps and records the result.
pub(super) async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    // Given back however this ends, a dropped (cancelled) future included.
    let _in_flight = app.metrics.request_in_flight();
    let started = Instant::now();
    let time = SystemTime::now();
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
    let routing = app.routing.load_full();
    let proxied = req.extensions().get::<ProxiedClient>().copied();
    let client = client_addr(&routing.client_address, peer.ip(), req.headers(), proxied);
    let mut audit = Audit::default();
    let (parts, body) = req.into_parts();
    let h2 = parts.version == Version::HTTP_2;
    let mut body = Some(body);
    let (outcome, reason, response) =
        match process(&app, &routing, client, time, parts, &mut body, &mut audit).await {
            Ok(done) => (done.outcome, done.reason, done.response),
            Err(rejection) => {
                if h2
                    && let Some(body) = body.take()
                    && !matches!(
                        rejection.outcome,
                        Outcome::RateLimited | Outcome::Overloaded
                    )
                {
                    tokio::spawn(drain(body));
                }
                (
                    rejection.outcome,
                    rejection.reason,
                    rejection.into_response(),
                )
            }
        };
    let elapsed = started.elapsed();
    app.metrics.observe_duration(
        &RouteLabels {
            route: audit.route_label().to_owned(),
        },
        elapsed.as_secs_f64(),
    );
    audit.record(
        &app.metrics,
        &Answered {
            time,
            peer,
            client: client.addr(),
            outcome,
            reason,
            status: response.status().as_u16(),
            latency: elapsed,
        },
    );
    response
}

/// The steps. `body` is taken when it is read; a refusal before that leaves it for [`handle`].
async fn process(
    app: &App,
    routing: &Routing,
    client: Client,
    time: SystemTime,
    parts: Parts,
    body: &mut Option<Body>,
    audit: &mut Audit,
) -> Result<Accepted, Rejection> {
    // The limits in force when the request arrived, for all of it.
    let budgets = app.budgets.load_full();
    let key = client_key(client.addr(), budgets.limits.ipv6_prefix);
    rate_limit(&budgets, key)?;
    let _in_flight = in_flight(&budgets, key)?;
    let (route, token) = routing
        .find(parts.uri.path())
        .ok_or_else(|| Rejection::new(Outcome::NotFound, StatusCode::NOT_FOUND))?;
    audit.route = Some(route.path.clone());
    if let Some(sources) = &route.sources {
        check_source(sources, client)?;
    }
    if parts.method != Method::POST {
        return Err(
            Rejection::new(Outcome::MethodNotAllowed, StatusCode::METHOD_NOT_ALLOWED)
                .with_header(header::ALLOW, HeaderValue::from_static("POST")),
        );
    }
    if wants_json(route.verify) && !is_json(&parts.headers) {
        return Err(Rejection::new(
            Outcome::UnsupportedMediaType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ));
    }
    // Before the body: a caller without the path token or a signature header costs no read.
    route.verifier.precheck_token(token)?;
    declared_length(&budgets.limits, &parts.headers)?;
    route.verifier.precheck_headers(&parts.headers)?;
    let body = read_body(&budgets.limits, body.take().unwrap_or_default()).await?;
    // Without a copy when the collected body owns its buffer (one chunk, not shared).
    let body = HashedBody::new(Vec::from(body));
    audit.body_sha256 = Some(body.sha256_hex().to_owned());
    let verified = route.verifier.verify(&verify::Request {
        path_token: token,
        headers: &parts.headers,
        body: body.bytes(),
        now: time,
    })?;
    audit.event_id = Some(verified.event_id.clone());
    if let Some(validator) = &route.validator {
        let decision = validator
            .ask(&verified.event_id, Bytes::copy_from_slice(body.bytes()))
            .await;
        app.metrics.count_validation(&ValidationLabels {
            route: route.path.clone(),
            result: decision.label(),
        });
        return Ok(Accepted {
            outcome: Outcome::Validated,
            reason: decision.label(),
            response: json_answer(StatusCode::OK, decision.answer()),
        });
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
    store(app, route, event).await
}

/// How long, and how many bytes, an HTTP/2 request body left unread by a refusal is read and
/// thrown away after the answer. Dropping it at once makes the HTTP/2 layer send RST_STREAM
/// (NO_ERROR) right behind the answer, as RFC 9113 section 8.1 allows; but curl 7.88 (Debian 12)
/// and other clients still sending the body then report a stream error and discard the answer
/// they were sent. Reading on for a moment lets the client see the status and stop sending on
/// its own; the bounds keep a client that never stops from costing more than this.
pub(crate) const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// See [`DRAIN_TIME`]; the stream's flow-control window is the same 1 MiB.
pub(crate) const DRAIN_BYTES: usize = 1 << 20;

/// Reads and discards `body` until it ends, fails, or [`DRAIN_TIME`] or [`DRAIN_BYTES`] is
/// reached; dropping it then resets the stream (NO_ERROR) if the client is still sending.
async fn drain(body: Body) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while read < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                Some(Err(_)) | None => break,
            }
        }
    })
    .await;
}

/// A route that checks the source (`allow`, or `mpesa` by default): the client must be known
/// and in the route's list. A trusted proxy that named no usable client is refused too, never
/// judged by its own address (which is on the allowlist when the kernel filter lets the proxy
/// through).
fn check_source(sources: &Sources, client: Client) -> Result<(), Rejection> {
    let refused =
        |reason| Rejection::new(Outcome::ForbiddenPeer, StatusCode::FORBIDDEN).because(reason);
    match client {
        Client::Unknown { why, .. } => Err(refused(why.reason())),
        Client::Known(ip) if !sources.list.contains(ip) => Err(refused(sources.reason)),
        Client::Known(_) => Ok(()),
    }
}

/// The client's rate (`client` is its [`client_key`]): 429 with the seconds until its next
/// request would pass.
fn rate_limit(budgets: &Budgets, client: IpAddr) -> Result<(), Rejection> {
    budgets.limiter.check_key(&client).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Rejection::new(Outcome::RateLimited, StatusCode::TOO_MANY_REQUESTS)
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs.max(1)))
    })
}

/// A place among `server.limits.max_in_flight_per_client` for the client keyed `client`, then
/// among `max_in_flight`, both held until the request is answered. The client's own cap comes
/// first, so that a client over it never takes a place from the others.
fn in_flight(
    budgets: &Budgets,
    client: IpAddr,
) -> Result<(ClientPermit, OwnedSemaphorePermit), Rejection> {
    // Deliberately not queued: a provider retries a 503, and a queue would only hold its
    // connection open longer.
    let overloaded = |reason| {
        Rejection::new(Outcome::Overloaded, StatusCode::SERVICE_UNAVAILABLE)
            .because(reason)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    };
    let own = budgets
        .in_flight_per_client
        .try_acquire(client)
        .ok_or_else(|| overloaded("max_in_flight_per_client"))?;
    let all = Arc::clone(&budgets.in_flight)
        .try_acquire_owned()
        .map_err(|_| overloaded("max_in_flight"))?;
    Ok((own, all))
}

/// A body declared longer than the limit is refused before any of it is read.
fn declared_length(limits: &Limits, headers: &HeaderMap) -> Result<(), Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.body_limit_bytes as u64) {
        return Err(
            Rejection::new(Outcome::TooLarge, StatusCode::PAYLOAD_TOO_LARGE)
                .because("content_length"),
        );
    }
    Ok(())
}

/// The body, read up to the limit within the body timeout.
async fn read_body(limits: &Limits, body: Body) -> Result<Bytes, Rejection> {
    let limit = limits.body_limit_bytes;
    match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(
            Rejection::new(Outcome::Timeout, StatusCode::REQUEST_TIMEOUT).because("body_timeout"),
        ),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                Rejection::new(Outcome::TooLarge, StatusCode::PAYLOAD_TOO_LARGE).because("body")
            } else {
                Rejection::new(Outcome::BadRequest, StatusCode::BAD_REQUEST).because("body_read")
            })
        }
        Ok(Ok(body)) => Ok(body),
    }
}

/// Stores the event; the provider's success answer leaves only once it is committed or found.
async fn store(app: &App, route: &Route, event: NewEvent) -> Result<Accepted, Rejection> {
    let inserted = app.store.insert(event).await.map_err(|e| {
        tracing::error!(route = %route.path, error = %e, "storing an event failed; answering 503");
        Rejection::new(Outcome::StoreError, StatusCode::SERVICE_UNAVAILABLE).because("store")
    })?;
    let outcome = match inserted {
        Inserted::New { .. } => Outcome::Accepted,
        Inserted::Duplicate { .. } | Inserted::Purged => Outcome::Duplicate,
    };
    let body = if route.verify == VerifyKind::Mpesa {
        verify::mpesa_accept_body()
    } else {
        r#"{"received":true}"#
    };
    Ok(Accepted {
        outcome,
        reason: "",
        response: json_answer(StatusCode::OK, body),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
