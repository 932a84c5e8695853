//! What the receiver records about every request: the `outcome` label of
//! `hookwall_http_requests_total` and one audit line (tracing target `audit`), written once, when
//! the request is answered.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use crate::{
    metrics::{HttpLabels, Metrics, RefusalLabels},
    time::rfc3339,
};

/// The route label, and the audit line's `route`, of a request no route was matched for
/// (unknown path, or refused before routing: rate limit, in-flight cap, header timeout).
pub(crate) const NO_ROUTE: &str = "none";

/// What became of a request: the `outcome` label of `hookwall_http_requests_total` and the
/// audit line's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and newly stored: 200.
    Accepted,
    /// Verified, already stored (a retry or replay): 200, not stored again.
    Duplicate,
    /// No route has this path: 404, route `none`. Also a wrong or missing `mpesa` path token:
    /// the same 404 and outcome as an unknown path, so that a probe looks the same in the answer,
    /// the metrics and the audit; the route label is then the `mpesa` route and the reason
    /// (`missing_token`, `bad_token`) shows the probing to the operator.
    NotFound,
    /// Not POST: 405.
    MethodNotAllowed,
    /// Not the content type the provider sends: 415.
    UnsupportedMediaType,
    /// A route called from a source it does not accept (its `allow`, or the allowlist for an
    /// `mpesa` route without one), or through a trusted proxy that named no client: 403.
    ForbiddenPeer,
    /// Body larger than `server.limits.body_limit_bytes`: 413.
    TooLarge,
    /// Body not received within `server.limits.body_timeout_ms`, or part of a request's
    /// headers not completed within `server.limits.header_timeout_ms` (route `none`): 408.
    Timeout,
    /// The verifier refused the callback: 401 or 400 (the reason says why). A wrong `mpesa`
    /// token is [`Outcome::NotFound`] instead.
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

    /// Whether the request was answered with success (stored, found stored, or validated).
    #[must_use]
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Accepted | Outcome::Duplicate | Outcome::Validated
        )
    }
}

/// One audit line: who asked what, and what hookwall answered; never a secret or a body.
/// Serialized in one pass from borrowed fields, with no map of its own: it is written for every
/// request.
#[derive(serde::Serialize)]
pub(crate) struct AuditLine<'a> {
    pub(crate) time: String,
    pub(crate) peer: SocketAddr,
    pub(crate) client: IpAddr,
    /// The matched route's path, or [`NO_ROUTE`] (the metrics' spelling).
    pub(crate) route: &'a str,
    pub(crate) outcome: &'static str,
    pub(crate) status: u16,
    pub(crate) reason: &'a str,
    pub(crate) event_id: Option<&'a str>,
    pub(crate) body_sha256: Option<&'a str>,
    pub(crate) latency_ms: f64,
}

impl AuditLine<'_> {
    /// Writes the line: in a text log, its JSON object as the message (one grep-able line); in a
    /// JSON log, its fields as the log object's own fields (a `None` is left out).
    fn log(&self) {
        if crate::logging::format() == crate::logging::LogFormat::Json {
            tracing::info!(
                target: "audit",
                time = %self.time,
                peer = %self.peer,
                client = %self.client,
                route = self.route,
                outcome = self.outcome,
                status = self.status,
                reason = self.reason,
                event_id = self.event_id,
                body_sha256 = self.body_sha256,
                latency_ms = self.latency_ms,
                "request answered"
            );
            return;
        }
        match serde_json::to_string(self) {
            Ok(line) => tracing::info!(target: "audit", "{line}"),
            // Only a serializer bug could get here; the line's fields are plain values.
            Err(e) => tracing::error!(error = %e, "formatting an audit line failed"),
        }
    }
}

/// What the audit line and metrics record about one request, filled in as it is handled.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    /// The matched route's path; `None` until a route matched.
    pub(crate) route: Option<String>,
    pub(crate) event_id: Option<String>,
    pub(crate) body_sha256: Option<String>,
}

/// How a request ended, for [`Audit::record`].
pub(crate) struct Answered {
    /// When the request arrived.
    pub(crate) time: SystemTime,
    pub(crate) peer: SocketAddr,
    pub(crate) client: IpAddr,
    pub(crate) outcome: Outcome,
    pub(crate) reason: &'static str,
    pub(crate) status: u16,
    pub(crate) latency: Duration,
}

impl Audit {
    /// The route label: the matched route, or [`NO_ROUTE`].
    pub(crate) fn route_label(&self) -> &str {
        self.route.as_deref().unwrap_or(NO_ROUTE)
    }

    /// The audit line for `answered`.
    pub(crate) fn line(&self, answered: &Answered) -> AuditLine<'_> {
        AuditLine {
            time: rfc3339(answered.time),
            peer: answered.peer,
            client: answered.client,
            route: self.route_label(),
            outcome: answered.outcome.as_str(),
            status: answered.status,
            reason: answered.reason,
            event_id: self.event_id.as_deref(),
            body_sha256: self.body_sha256.as_deref(),
            latency_ms: answered.latency.as_secs_f64() * 1e3,
        }
    }

    /// Counts the request in `hookwall_http_requests_total` (and, refused,
    /// `hookwall_http_refusals_total`) and writes its audit line: the one place any is written.
    pub(crate) fn record(&self, metrics: &Metrics, answered: &Answered) {
        metrics.count_request(&HttpLabels {
            route: self.route_label().to_owned(),
            outcome: answered.outcome.as_str(),
        });
        if !answered.outcome.is_success() {
            let reason = if answered.reason.is_empty() {
                answered.outcome.as_str()
            } else {
                answered.reason
            };
            metrics.count_refusal(&RefusalLabels {
                route: self.route_label().to_owned(),
                reason,
            });
        }
        self.line(answered).log();
    }
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
            route: "/hooks/sw",
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

    #[test]
    fn without_a_route_the_audit_line_says_none_like_the_metrics() {
        let audit = Audit::default();
        let answered = Answered {
            time: UNIX_EPOCH,
            peer: "192.0.2.10:40000".parse().unwrap(),
            client: "192.0.2.10".parse().unwrap(),
            outcome: Outcome::NotFound,
            reason: "",
            status: 404,
            latency: Duration::from_millis(2),
        };
        let value = serde_json::to_value(audit.line(&answered)).unwrap();
        assert_eq!(value["route"], serde_json::json!("none"), "{value}");
        assert_eq!(audit.route_label(), "none");
    }
}
