//! Authenticates one webhook callback: pure functions, no I/O, no HTTP framework.
//!
//! The server builds one [`Verifier`] per `[[route]]` when the config is loaded (the route's
//! secrets are read then, once) and calls [`Verifier::verify`] with the parts of each request that
//! matter ([`Request`]). The answer is either [`Verified`], with the event id that replay detection
//! keys on, or a [`Refusal`] whose [`Refusal::reason`] is a stable label for the audit log and the
//! metrics.
//!
//! Rules that hold for every kind of route:
//! - every MAC, token and shared secret is compared in constant time; tokens and shared secrets
//!   are compared by their SHA-256, so that not even their length leaks;
//! - any of a route's secrets passes, so that a secret can be rotated without a gap;
//! - a signature is checked before its timestamp, so that a stale but genuine callback is
//!   reported as `timestamp_too_old` and a forgery as `bad_signature`, whatever its timestamp;
//! - nothing this module prints (`Debug`, `Display`, refusal messages) contains a secret, a
//!   token, a signature or a body.
//!
//! The kinds live in two submodules: `mpesa` (Daraja's path token, callback bodies and answers)
//! and `signed` (the HMAC schemes and shared secrets). `props`, in tests only, holds the property
//! tests that check every kind against references on generated and mutated hostile input.
//!
//! `sign` is the other direction: [`Signer`] signs what hookwall itself sends (deliveries,
//! validation forwards) the Standard Webhooks way, with the same key decoding as a
//! `standard-webhooks` route. It reads `delivery.secret` and builds the HTTP request, the one
//! part of this module that does.

mod mpesa;
#[cfg(test)]
pub(crate) mod props;
mod sign;
mod signed;

use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};
use zeroize::Zeroizing;

pub(crate) use self::sign::header_value;
pub use self::{
    mpesa::{C2bRejection, mpesa_accept_body, mpesa_reject_body},
    sign::{Signer, delivery_signer, signed_post},
};
use crate::config::{Encoding, RouteConfig, Secret, SecretError, SecretRef, VerifyKind};

// ---------------------------------------------------------------------------------------------
// The request, the verdicts
// ---------------------------------------------------------------------------------------------

/// The parts of one callback a verifier reads. Its `Debug` shows header names and the body's
/// length only: header values carry signatures and shared secrets, and the path token is a secret.
pub struct Request<'a> {
    /// `mpesa` routes: the path segment after the route's path (the URL given to Daraja is
    /// `{path}/{token}`); `None` when the request came to the bare route path.
    pub path_token: Option<&'a str>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The whole request body, as received.
    pub body: &'a [u8],
    /// The time to judge signed timestamps against (a parameter so that tests control it).
    pub now: SystemTime,
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("Request")
            .field("path_token", &self.path_token.map(|_| "<redacted>"))
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .field("now", &self.now)
            .finish()
    }
}

/// A callback that passed its route's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id for this event, the key for duplicate detection: `webhook-id`, Stripe's
    /// `evt_...`, M-Pesa's `TransID`, `CheckoutRequestID` or `ConversationID`; for GitHub the
    /// body's SHA-256 in hex (what its signature covers; `X-GitHub-Delivery` is not signed); for
    /// the generic kinds the body's `id`, else the body's SHA-256 in hex.
    /// Note that Daraja gives a payment's C2B validation and confirmation the same `TransID`, so
    /// duplicates must be detected per route, not across routes.
    pub event_id: String,
    /// What kind of event it is.
    pub kind: EventKind,
}

/// What kind of event a verified callback carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// M-Pesa C2B validation: Daraja asks whether to accept a payment (it waits about 8 s).
    MpesaC2bValidation,
    /// M-Pesa C2B confirmation: a payment was completed.
    MpesaC2bConfirmation,
    /// M-Pesa STK Push (Lipa na M-Pesa Online) result.
    MpesaStkResult,
    /// M-Pesa result or queue-timeout callback (B2C, reversal, balance, status, ...).
    MpesaResult,
    /// A Stripe event.
    Stripe,
    /// A GitHub webhook delivery.
    Github,
    /// A Standard Webhooks message.
    StandardWebhooks,
    /// A callback on an `hmac-sha256` or `shared-secret` route.
    Generic,
}

impl EventKind {
    /// Every kind: the tests check their labels are distinct.
    #[cfg(test)]
    pub const ALL: [EventKind; 8] = [
        EventKind::MpesaC2bValidation,
        EventKind::MpesaC2bConfirmation,
        EventKind::MpesaStkResult,
        EventKind::MpesaResult,
        EventKind::Stripe,
        EventKind::Github,
        EventKind::StandardWebhooks,
        EventKind::Generic,
    ];

    /// A stable snake_case name, for the store and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MpesaC2bValidation => "mpesa_c2b_validation",
            EventKind::MpesaC2bConfirmation => "mpesa_c2b_confirmation",
            EventKind::MpesaStkResult => "mpesa_stk_result",
            EventKind::MpesaResult => "mpesa_result",
            EventKind::Stripe => "stripe",
            EventKind::Github => "github",
            EventKind::StandardWebhooks => "standard_webhooks",
            EventKind::Generic => "generic",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a callback was refused. Messages name headers and fields, never their values: a value may
/// be a token, a signature or a shared secret, and the audit log must not become a key store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A header the route's kind needs is absent.
    #[error("missing header {header}")]
    MissingHeader {
        /// The header.
        header: HeaderName,
    },
    /// A header is present but cannot be read as its kind prescribes.
    #[error("malformed header {header}: {why}")]
    MalformedHeader {
        /// The header.
        header: HeaderName,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No signature in the request is the MAC of the request under any of the route's secrets.
    #[error("no signature matches the request under any of the route's secrets")]
    BadSignature,
    /// The signed timestamp is older than the route's tolerance: a replay or a stale retry.
    #[error(
        "signed timestamp is {age_seconds} s old, more than the route's tolerance of \
         {tolerance_seconds} s"
    )]
    TimestampTooOld {
        /// How old.
        age_seconds: u64,
        /// `route.tolerance_seconds`.
        tolerance_seconds: u64,
    },
    /// The signed timestamp is further in the future than the route's tolerance: a sender's
    /// clock is off, or someone pre-signed a callback to replay later.
    #[error(
        "signed timestamp is {ahead_seconds} s in the future, more than the route's tolerance of \
         {tolerance_seconds} s"
    )]
    TimestampInFuture {
        /// How far ahead.
        ahead_seconds: u64,
        /// `route.tolerance_seconds`.
        tolerance_seconds: u64,
    },
    /// An `mpesa` request came to the bare route path: the URL registered with Daraja lacks the
    /// token.
    #[error("no token in the callback path: the URL given to Daraja must be {{path}}/{{token}}")]
    MissingToken,
    /// An `mpesa` request's path token is not the route's token.
    #[error("the path token is not the route's token")]
    BadToken,
    /// A `shared-secret` request's header does not hold any of the route's secrets.
    #[error("header {header} does not hold any of the route's secrets")]
    BadSecret {
        /// The configured header.
        header: HeaderName,
    },
    /// The body is not what the route's kind sends.
    #[error("body refused: {why}")]
    BadBody {
        /// What is wrong with it.
        why: &'static str,
    },
    /// The callback carries no event id, so duplicates could not be recognised.
    #[error("no event id: {why}")]
    NoEventId {
        /// Where the id was looked for.
        why: &'static str,
    },
}

impl Refusal {
    /// Every value [`Refusal::reason`] can return: the tests check each refusal's reason is one,
    /// and the receiver registers a refusal series for each on every route.
    pub const REASONS: [&'static str; 10] = [
        "missing_header",
        "malformed_header",
        "bad_signature",
        "timestamp_too_old",
        "timestamp_in_future",
        "missing_token",
        "bad_token",
        "bad_secret",
        "bad_body",
        "no_event_id",
    ];

    /// A stable snake_case label for the audit log and metrics; never changes meaning.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingHeader { .. } => "missing_header",
            Refusal::MalformedHeader { .. } => "malformed_header",
            Refusal::BadSignature => "bad_signature",
            Refusal::TimestampTooOld { .. } => "timestamp_too_old",
            Refusal::TimestampInFuture { .. } => "timestamp_in_future",
            Refusal::MissingToken => "missing_token",
            Refusal::BadToken => "bad_token",
            Refusal::BadSecret { .. } => "bad_secret",
            Refusal::BadBody { .. } => "bad_body",
            Refusal::NoEventId { .. } => "no_event_id",
        }
    }
}

/// Why a route's verifier could not be built. Messages name the route and where a secret comes
/// from, never its value.
#[derive(Debug, thiserror::Error)]
pub enum VerifyConfigError {
    /// A secret could not be read.
    #[error("route {route}: cannot read {what}: {source}")]
    Secret {
        /// The route's path.
        route: String,
        /// Which one: `token` or `secrets[N]`.
        what: String,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// An `mpesa` token too short to be unguessable (see `mpesa::token_weakness`).
    #[error(
        "route {route}: {what} ({origin}) is too short to be unguessable: {why}; the callback \
         URL's token is all that authenticates a Daraja callback, so it needs at least 128 bits: \
         make one with `openssl rand -hex 16` (or -hex 32), put it where {origin} points, and \
         register the new callback URL with Daraja"
    )]
    WeakToken {
        /// The route's path.
        route: String,
        /// Which one: `token` or `tokens[N]`.
        what: String,
        /// Where it came from (`env NAME` or `file PATH`).
        origin: String,
        /// How short it is (never the token).
        why: String,
    },
    /// A `standard-webhooks` secret is not `whsec_` followed by base64.
    #[error(
        "route {route}: secrets[{index}] ({origin}) is not a Standard Webhooks secret: {why}; use \
         the whsec_... value the sender shows"
    )]
    StandardWebhooksSecret {
        /// The route's path.
        route: String,
        /// Index in `secrets`.
        index: usize,
        /// Where it came from (`env NAME` or `file PATH`).
        origin: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The route lacks a setting its kind needs (config validation prevents this; a
    /// `RouteConfig` built by hand may not).
    #[error("route {route}: verify = \"{verify}\" needs {what}")]
    Incomplete {
        /// The route's path.
        route: String,
        /// The route's kind.
        verify: VerifyKind,
        /// What is missing.
        what: &'static str,
    },
    /// `header` is not a valid HTTP header name.
    #[error("route {route}: header {header:?} is not a valid HTTP header name")]
    InvalidHeader {
        /// The route's path.
        route: String,
        /// The name as configured.
        header: String,
    },
}

// ---------------------------------------------------------------------------------------------
// The verifier
// ---------------------------------------------------------------------------------------------

/// One route's verifier, with its secrets resolved. Build it once per config load with
/// [`Verifier::from_route`]; [`Verifier::verify`] is cheap and reads nothing from outside.
/// `Debug` and `Display` never show a secret.
#[derive(Debug)]
pub struct Verifier {
    /// The route's path, for messages.
    route: String,
    /// The route's kind, as configured.
    verify: VerifyKind,
    /// What is checked, with the key material it needs.
    scheme: Scheme,
}

/// A kind of route with its resolved key material. Every field that holds a secret is of a type
/// whose `Debug` is redacted, so deriving `Debug` here is safe (and tested).
#[derive(Debug)]
enum Scheme {
    Mpesa {
        /// Every token that passes (`token`, or each of `tokens`).
        tokens: Vec<SecretDigest>,
        /// What the route's path says about which C2B URL it is, if anything.
        stage: Option<mpesa::C2bStage>,
    },
    StandardWebhooks {
        /// The secrets with `whsec_` removed and base64-decoded: the HMAC keys.
        keys: Vec<Key>,
        tolerance_seconds: u64,
    },
    Stripe {
        /// Used as HMAC keys exactly as written, `whsec_` included (Stripe's convention).
        secrets: Vec<Secret>,
        tolerance_seconds: u64,
    },
    Github {
        secrets: Vec<Secret>,
    },
    HmacSha256 {
        secrets: Vec<Secret>,
        header: HeaderName,
        encoding: Encoding,
        prefix: Option<String>,
    },
    SharedSecret {
        secrets: Vec<SecretDigest>,
        header: HeaderName,
        prefix: Option<String>,
    },
}

impl Verifier {
    /// Builds the verifier for `route`, reading its token or secrets now.
    pub fn from_route(route: &RouteConfig) -> Result<Verifier, VerifyConfigError> {
        let scheme = match route.verify {
            VerifyKind::Mpesa => Scheme::Mpesa {
                tokens: resolve_tokens(route)?
                    .iter()
                    .map(|token| SecretDigest::of(token))
                    .collect(),
                stage: mpesa::stage_from_path(&route.path),
            },
            VerifyKind::StandardWebhooks => Scheme::StandardWebhooks {
                keys: standard_webhooks_keys(route)?,
                tolerance_seconds: route.tolerance_seconds,
            },
            VerifyKind::Stripe => Scheme::Stripe {
                secrets: resolve_secrets(route)?,
                tolerance_seconds: route.tolerance_seconds,
            },
            VerifyKind::Github => Scheme::Github {
                secrets: resolve_secrets(route)?,
            },
            VerifyKind::HmacSha256 => Scheme::HmacSha256 {
                secrets: resolve_secrets(route)?,
                header: configured_header(route)?,
                // Config validation resolves the default; a hand-built route gets the same one.
                encoding: route.encoding.unwrap_or(Encoding::Hex),
                prefix: route.prefix.clone(),
            },
            VerifyKind::SharedSecret => Scheme::SharedSecret {
                secrets: resolve_secrets(route)?
                    .iter()
                    .map(|secret| SecretDigest::of(secret))
                    .collect(),
                header: configured_header(route)?,
                prefix: route.prefix.clone(),
            },
        };
        Ok(Verifier {
            route: route.path.clone(),
            verify: route.verify,
            scheme,
        })
    }

    /// Checks one callback: its authenticity first, then its freshness, then its event id.
    pub fn verify(&self, req: &Request<'_>) -> Result<Verified, Refusal> {
        match &self.scheme {
            Scheme::Mpesa { tokens, stage } => mpesa::verify(tokens, *stage, req),
            Scheme::StandardWebhooks {
                keys,
                tolerance_seconds,
            } => signed::standard_webhooks(keys, *tolerance_seconds, req),
            Scheme::Stripe {
                secrets,
                tolerance_seconds,
            } => signed::stripe(secrets, *tolerance_seconds, req),
            Scheme::Github { secrets } => signed::github(secrets, req),
            Scheme::HmacSha256 {
                secrets,
                header,
                encoding,
                prefix,
            } => signed::hmac_sha256(secrets, header, *encoding, prefix.as_deref(), req),
            Scheme::SharedSecret {
                secrets,
                header,
                prefix,
            } => signed::shared_secret(secrets, header, prefix.as_deref(), req),
        }
    }

    /// An `mpesa` route's path token, checked before anything of the body (its length
    /// included), so that a caller without it cannot make the receiver read a body: compared
    /// with every token in constant time, as [`Verifier::verify`] does (which checks it again).
    /// Other kinds have no path token: `Ok`.
    ///
    /// # Errors
    /// [`Refusal::MissingToken`] or [`Refusal::BadToken`], as [`Verifier::verify`] would give.
    pub fn precheck_token(&self, path_token: Option<&str>) -> Result<(), Refusal> {
        match &self.scheme {
            Scheme::Mpesa { tokens, .. } => mpesa::check_token(tokens, path_token),
            _ => Ok(()),
        }
    }

    /// The presence of the header(s) a signed route's signature travels in, checked before the
    /// body is read, so that an unsigned request costs no body read. `mpesa` routes carry no
    /// signature header: `Ok`.
    ///
    /// # Errors
    /// [`Refusal::MissingHeader`] for the first missing header, in the order
    /// [`Verifier::verify`] reads them, so that it names the same one.
    pub fn precheck_headers(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let present = |header: HeaderName| {
            if headers.contains_key(&header) {
                Ok(())
            } else {
                Err(Refusal::MissingHeader { header })
            }
        };
        match &self.scheme {
            Scheme::Mpesa { .. } => Ok(()),
            Scheme::StandardWebhooks { .. } => {
                ["webhook-id", "webhook-timestamp", "webhook-signature"]
                    .into_iter()
                    .try_for_each(|name| present(HeaderName::from_static(name)))
            }
            Scheme::Stripe { .. } => present(HeaderName::from_static("stripe-signature")),
            Scheme::Github { .. } => present(HeaderName::from_static("x-hub-signature-256")),
            Scheme::HmacSha256 { header, .. } | Scheme::SharedSecret { header, .. } => {
                present(header.clone())
            }
        }
    }

    /// The route's kind.
    #[cfg(test)]
    pub fn kind(&self) -> VerifyKind {
        self.verify
    }

    /// The route's path.
    #[cfg(test)]
    pub fn route_path(&self) -> &str {
        &self.route
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} verifier for route {}", self.verify, self.route)
    }
}

/// The `mpesa` route's tokens (`token`, or each of `tokens`), each strong enough to be
/// unguessable. Checked here, where they are read: `hookwall check` never reads a secret, so a
/// weak token stops the daemon's start (or a reload) with this error.
fn resolve_tokens(route: &RouteConfig) -> Result<Vec<Secret>, VerifyConfigError> {
    let named: Vec<(String, &SecretRef)> = match &route.token {
        Some(token) => vec![("token".to_owned(), token)],
        None => (route.tokens.iter().enumerate())
            .map(|(index, token)| (format!("tokens[{index}]"), token))
            .collect(),
    };
    if named.is_empty() {
        return Err(incomplete(route, "a token"));
    }
    named
        .into_iter()
        .map(|(what, token)| {
            let secret = resolve(route, token, what.clone())?;
            match mpesa::token_weakness(&secret) {
                None => Ok(secret),
                Some(why) => Err(VerifyConfigError::WeakToken {
                    route: route.path.clone(),
                    what,
                    origin: token.to_string(),
                    why,
                }),
            }
        })
        .collect()
}

/// Every secret of `route`, in order; at least one.
fn resolve_secrets(route: &RouteConfig) -> Result<Vec<Secret>, VerifyConfigError> {
    if route.secrets.is_empty() {
        return Err(incomplete(route, "at least one secret"));
    }
    route
        .secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| resolve(route, secret, format!("secrets[{index}]")))
        .collect()
}

fn resolve(
    route: &RouteConfig,
    secret: &SecretRef,
    what: String,
) -> Result<Secret, VerifyConfigError> {
    secret
        .resolve()
        .map_err(|source| VerifyConfigError::Secret {
            route: route.path.clone(),
            what,
            source,
        })
}

/// Standard Webhooks keys: each secret is `whsec_` (optional, as in the reference libraries)
/// followed by the base64 of the key.
fn standard_webhooks_keys(route: &RouteConfig) -> Result<Vec<Key>, VerifyConfigError> {
    let secrets = resolve_secrets(route)?;
    secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| {
            Key::from_whsec(secret).map_err(|why| VerifyConfigError::StandardWebhooksSecret {
                route: route.path.clone(),
                index,
                origin: route.secrets[index].to_string(),
                why,
            })
        })
        .collect()
}

/// The header an `hmac-sha256` or `shared-secret` route reads.
fn configured_header(route: &RouteConfig) -> Result<HeaderName, VerifyConfigError> {
    let header = route
        .header
        .as_deref()
        .ok_or_else(|| incomplete(route, "a header"))?;
    // from_bytes lowercases, as HeaderMap stores names.
    HeaderName::from_bytes(header.as_bytes()).map_err(|_| VerifyConfigError::InvalidHeader {
        route: route.path.clone(),
        header: header.to_owned(),
    })
}

fn incomplete(route: &RouteConfig, what: &'static str) -> VerifyConfigError {
    VerifyConfigError::Incomplete {
        route: route.path.clone(),
        verify: route.verify,
        what,
    }
}

// ---------------------------------------------------------------------------------------------
// Key material
// ---------------------------------------------------------------------------------------------

/// Derived HMAC key bytes (a decoded `whsec_` secret): wiped on drop, never printed.
struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// Decodes a Standard Webhooks secret.
    fn from_whsec(secret: &Secret) -> Result<Key, &'static str> {
        let text = secret.expose();
        let encoded = text.strip_prefix(b"whsec_").unwrap_or(text);
        let bytes = Zeroizing::new(
            signed::BASE64
                .decode(encoded)
                .map_err(|_| "it is not base64 after the whsec_ prefix")?,
        );
        if bytes.is_empty() {
            return Err("it decodes to an empty key");
        }
        Ok(Key(bytes))
    }

    fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The SHA-256 of a token or shared secret. Comparing digests instead of the values takes the same
/// time whatever the length of the value received, so a prober learns nothing about the secret's
/// length either. Wiped on drop (it is not the secret, but there is no reason to leave it about).
struct SecretDigest(Zeroizing<[u8; 32]>);

impl SecretDigest {
    fn of(secret: &[u8]) -> SecretDigest {
        SecretDigest(Zeroizing::new(Sha256::digest(secret).into()))
    }

    /// Whether `given` is the secret, in constant time.
    fn matches(&self, given: &[u8]) -> Choice {
        let given: [u8; 32] = Sha256::digest(given).into();
        self.0.ct_eq(&given)
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the kinds
// ---------------------------------------------------------------------------------------------

/// A header's value, trimmed; absent, unreadable (not visible ASCII) or empty is a refusal.
fn required<'r>(headers: &'r HeaderMap, name: &HeaderName) -> Result<&'r str, Refusal> {
    let value = headers.get(name).ok_or_else(|| Refusal::MissingHeader {
        header: name.clone(),
    })?;
    let text = value
        .to_str()
        .map_err(|_| malformed(name, "not visible ASCII"))?
        .trim();
    if text.is_empty() {
        return Err(malformed(name, "empty"));
    }
    Ok(text)
}

fn malformed(header: &HeaderName, why: &'static str) -> Refusal {
    Refusal::MalformedHeader {
        header: header.clone(),
        why,
    }
}

/// Reads a signed timestamp: whole seconds since 1970, digits only (a sign would let one
/// timestamp be written two ways, and senders never send one), at least one of them.
fn parse_timestamp(text: &str, header: &HeaderName) -> Result<i64, Refusal> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            header,
            "the timestamp is not whole seconds since 1970",
        ));
    }
    text.parse()
        .map_err(|_| malformed(header, "the timestamp is out of range"))
}

/// Whether `signed_at` is within `tolerance_seconds` of `now`, in either direction (the
/// boundary itself passes, as in the Stripe and Standard Webhooks reference libraries).
fn check_timestamp(signed_at: i64, now: SystemTime, tolerance_seconds: u64) -> Result<(), Refusal> {
    let skew = unix_seconds(now) - i128::from(signed_at);
    let tolerance = i128::from(tolerance_seconds);
    let saturate = |seconds: i128| u64::try_from(seconds).unwrap_or(u64::MAX);
    if skew > tolerance {
        Err(Refusal::TimestampTooOld {
            age_seconds: saturate(skew),
            tolerance_seconds,
        })
    } else if -skew > tolerance {
        Err(Refusal::TimestampInFuture {
            ahead_seconds: saturate(-skew),
            tolerance_seconds,
        })
    } else {
        Ok(())
    }
}

/// Seconds since 1970, negative before it (i128: no conversion can overflow).
fn unix_seconds(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::from(after.as_secs()),
        Err(before) => -i128::from(before.duration().as_secs()),
    }
}

/// The body's top-level `id` (a non-empty string, or an integer written as such), if the body is
/// a JSON object that has one.
fn json_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("id")? {
        serde_json::Value::String(id) if !id.is_empty() => Some(id.clone()),
        serde_json::Value::Number(id) if id.is_i64() || id.is_u64() => Some(id.to_string()),
        _ => None,
    }
}

/// The event id of an `hmac-sha256` or `shared-secret` callback: the body's `id`, else the body's
/// SHA-256 in hex, so that a sender's retry of the same body is still recognised.
fn generic_event_id(body: &[u8]) -> String {
    json_id(body).unwrap_or_else(|| hex::encode(Sha256::digest(body)))
}

// ---------------------------------------------------------------------------------------------
// Test support, shared with the submodules' tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod testing {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::{Request, Verified, Verifier};
    use crate::config::{RouteConfig, SecretRef, VerifyKind};

    /// A route whose token (`mpesa`) or secrets (the other kinds) are `secrets`, read from files
    /// in a temporary directory (environment variables would race between tests). Keep the
    /// directory alive until the verifier is built.
    pub(super) fn route(
        verify: VerifyKind,
        path: &str,
        secrets: &[&[u8]],
    ) -> (tempfile::TempDir, RouteConfig) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let refs: Vec<SecretRef> = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                let file = dir.path().join(format!("secret{index}"));
                std::fs::write(&file, secret).expect("write secret file");
                SecretRef::File(file)
            })
            .collect();
        let (token, secrets) = if verify == VerifyKind::Mpesa {
            (refs.into_iter().next(), Vec::new())
        } else {
            (None, refs)
        };
        let route = RouteConfig {
            path: path.to_owned(),
            verify,
            token,
            tokens: Vec::new(),
            secrets,
            tolerance_seconds: 300,
            header: None,
            encoding: None,
            prefix: None,
            validation: None,
            allow: None,
        };
        (dir, route)
    }

    /// The verifier of `route`; panics with the error if it cannot be built.
    pub(super) fn build(route: &RouteConfig) -> Verifier {
        Verifier::from_route(route).unwrap_or_else(|e| panic!("verifier for {}: {e}", route.path))
    }

    /// A route's verifier, built from `secrets`.
    pub(super) fn verifier_for(verify: VerifyKind, secrets: &[&[u8]]) -> Verifier {
        let (_dir, route) = route(verify, "/hooks/test", secrets);
        build(&route)
    }

    /// A header map from name-value pairs.
    pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
            let value = HeaderValue::from_str(value).expect("header value");
            map.append(name, value);
        }
        map
    }

    /// `seconds` after 1970.
    pub(super) fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// Runs `verifier` on a request without a path token.
    pub(super) fn check(
        verifier: &Verifier,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Verified, super::Refusal> {
        verifier.verify(&Request {
            path_token: None,
            headers,
            body,
            now,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{testing::*, *};

    #[test]
    fn every_refusal_has_a_distinct_listed_snake_case_reason() {
        let header = HeaderName::from_static("x-sig");
        let all = [
            Refusal::MissingHeader {
                header: header.clone(),
            },
            Refusal::MalformedHeader {
                header: header.clone(),
                why: "w",
            },
            Refusal::BadSignature,
            Refusal::TimestampTooOld {
                age_seconds: 1,
                tolerance_seconds: 0,
            },
            Refusal::TimestampInFuture {
                ahead_seconds: 1,
                tolerance_seconds: 0,
            },
            Refusal::MissingToken,
            Refusal::BadToken,
            Refusal::BadSecret { header },
            Refusal::BadBody { why: "w" },
            Refusal::NoEventId { why: "w" },
        ];
        let reasons: Vec<&str> = all.iter().map(Refusal::reason).collect();
        assert_eq!(reasons, Refusal::REASONS);
        assert_eq!(reasons.iter().collect::<HashSet<_>>().len(), reasons.len());
        for reason in reasons {
            assert!(
                reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{reason}"
            );
        }
    }

    #[test]
    fn event_kinds_have_distinct_snake_case_names() {
        let names: HashSet<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert_eq!(EventKind::MpesaStkResult.to_string(), "mpesa_stk_result");
        assert_eq!(EventKind::StandardWebhooks.as_str(), "standard_webhooks");
    }

    #[test]
    fn timestamps_pass_within_the_tolerance_both_ways_and_at_its_edge() {
        let now = at(1_000_000);
        assert_eq!(check_timestamp(1_000_000, now, 300), Ok(()));
        assert_eq!(check_timestamp(1_000_000 - 300, now, 300), Ok(()));
        assert_eq!(check_timestamp(1_000_000 + 300, now, 300), Ok(()));
        assert_eq!(
            check_timestamp(1_000_000 - 301, now, 300),
            Err(Refusal::TimestampTooOld {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            check_timestamp(1_000_000 + 301, now, 300),
            Err(Refusal::TimestampInFuture {
                ahead_seconds: 301,
                tolerance_seconds: 300
            })
        );
    }

    #[test]
    fn timestamps_at_the_extremes_neither_overflow_nor_pass() {
        let now = at(1_000_000);
        assert!(matches!(
            check_timestamp(i64::MIN, now, 300),
            Err(Refusal::TimestampTooOld { .. })
        ));
        assert!(matches!(
            check_timestamp(i64::MAX, now, 300),
            Err(Refusal::TimestampInFuture { .. })
        ));
        // A clock before 1970 (a broken RTC) makes every real timestamp "in the future".
        let before_epoch = UNIX_EPOCH - std::time::Duration::from_secs(10);
        assert!(matches!(
            check_timestamp(1_000_000, before_epoch, 300),
            Err(Refusal::TimestampInFuture { .. })
        ));
    }

    #[test]
    fn timestamps_are_digits_only() {
        let name = HeaderName::from_static("t");
        assert_eq!(parse_timestamp("1614265330", &name), Ok(1_614_265_330));
        for bad in ["+1614265330", "-5", "16142653.30", "1e9", " 1", "abc"] {
            let refusal = parse_timestamp(bad, &name).unwrap_err();
            assert_eq!(refusal.reason(), "malformed_header", "{bad}");
        }
        let refusal = parse_timestamp("99999999999999999999", &name).unwrap_err();
        assert_eq!(refusal.reason(), "malformed_header");
    }

    #[test]
    fn an_empty_timestamp_is_not_whole_seconds_rather_than_out_of_range() {
        // `Stripe-Signature: t=,v1=...` is the one way to send an empty timestamp (an empty
        // header is refused earlier); the message must say what is wrong with it.
        let verifier = verifier_for(VerifyKind::Stripe, &[b"whsec_k"]);
        let map = headers(&[("stripe-signature", "t=,v1=00")]);
        assert_eq!(
            check(&verifier, &map, b"{}", at(0)),
            Err(Refusal::MalformedHeader {
                header: HeaderName::from_static("stripe-signature"),
                why: "the timestamp is not whole seconds since 1970",
            })
        );
    }

    #[test]
    fn required_headers_must_be_present_readable_and_non_empty() {
        let name = HeaderName::from_static("x-sig");
        let map = headers(&[("x-sig", "  abc  ")]);
        assert_eq!(required(&map, &name), Ok("abc"));
        assert_eq!(
            required(&HeaderMap::new(), &name),
            Err(Refusal::MissingHeader {
                header: name.clone()
            })
        );
        assert_eq!(
            required(&headers(&[("x-sig", " ")]), &name)
                .unwrap_err()
                .reason(),
            "malformed_header"
        );
        let mut map = HeaderMap::new();
        map.insert(
            name.clone(),
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(
            required(&map, &name).unwrap_err().reason(),
            "malformed_header"
        );
    }

    #[test]
    fn generic_event_ids_come_from_the_body_id_or_its_hash() {
        assert_eq!(generic_event_id(br#"{"id":"ev_1","x":2}"#), "ev_1");
        assert_eq!(generic_event_id(br#"{"id":42}"#), "42");
        // SHA-256("Hello, World!") from any reference implementation.
        let hashed = "dffd6021bb2bd5b0af676290809ec3a53191dd81c7f70a4b28688a362182986f";
        assert_eq!(generic_event_id(b"Hello, World!"), hashed);
        for no_id in [
            &br#"{"id":""}"#[..],
            br#"{"id":{"a":1}}"#,
            br#"{"id":1.5}"#,
            br#"[{"id":"x"}]"#,
            br#"{"ID":"x"}"#,
        ] {
            assert_eq!(
                generic_event_id(no_id),
                hex::encode(Sha256::digest(no_id)),
                "{}",
                String::from_utf8_lossy(no_id)
            );
        }
    }

    #[test]
    fn secret_digests_match_only_the_secret() {
        let digest = SecretDigest::of(b"tok3n");
        assert!(bool::from(digest.matches(b"tok3n")));
        assert!(!bool::from(digest.matches(b"tok3N")));
        assert!(!bool::from(digest.matches(b"tok3")));
        assert!(!bool::from(digest.matches(b"tok3nn")));
        assert!(!bool::from(digest.matches(b"")));
    }

    #[test]
    fn from_route_names_the_secret_it_cannot_read_but_not_its_value() {
        let (dir, mut route) = route(VerifyKind::Github, "/hooks/gh", &[b"first-secret"]);
        let absent = dir.path().join("absent");
        route.secrets.push(SecretRef::File(absent.clone()));
        let err = Verifier::from_route(&route).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("/hooks/gh"), "{shown}");
        assert!(shown.contains("secrets[1]"), "{shown}");
        assert!(shown.contains(&*absent.to_string_lossy()), "{shown}");
        assert!(!shown.contains("first-secret"), "{shown}");

        let name = "HOOKWALL_VERIFY_TEST_VARIABLE_THAT_IS_NEVER_SET";
        route.secrets = vec![SecretRef::Env(name.into())];
        let shown = Verifier::from_route(&route).unwrap_err().to_string();
        assert!(shown.contains(name), "{shown}");

        let (_dir, mut route) = route_for_mpesa();
        route.token = Some(SecretRef::Env(name.into()));
        let shown = Verifier::from_route(&route).unwrap_err().to_string();
        assert!(shown.contains("cannot read token"), "{shown}");
    }

    fn route_for_mpesa() -> (tempfile::TempDir, RouteConfig) {
        route(VerifyKind::Mpesa, "/mpesa/c2b/confirmation", &[b"tok"])
    }

    #[test]
    fn from_route_refuses_routes_missing_what_their_kind_needs() {
        let (_dir, mut mpesa) = route_for_mpesa();
        mpesa.token = None;
        let err = Verifier::from_route(&mpesa).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyConfigError::Incomplete {
                    what: "a token",
                    ..
                }
            ),
            "{err}"
        );

        let (_dir, mut stripe) = route(VerifyKind::Stripe, "/s", &[b"whsec_x"]);
        stripe.secrets.clear();
        let err = Verifier::from_route(&stripe).unwrap_err();
        assert_eq!(
            err.to_string(),
            "route /s: verify = \"stripe\" needs at least one secret"
        );

        let (_dir, hmac) = route(VerifyKind::HmacSha256, "/h", &[b"k"]);
        let err = Verifier::from_route(&hmac).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyConfigError::Incomplete {
                    what: "a header",
                    ..
                }
            ),
            "{err}"
        );

        let (_dir, mut shared) = route(VerifyKind::SharedSecret, "/x", &[b"k"]);
        shared.header = Some("X Bad".into());
        let err = Verifier::from_route(&shared).unwrap_err();
        assert!(
            matches!(err, VerifyConfigError::InvalidHeader { .. }),
            "{err}"
        );
    }

    #[test]
    fn from_route_refuses_standard_webhooks_secrets_that_are_not_base64() {
        let (_dir, route) = route(
            VerifyKind::StandardWebhooks,
            "/sw",
            &[
                b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                b"whsec_not*base64!",
            ],
        );
        let err = Verifier::from_route(&route).unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(
                err,
                VerifyConfigError::StandardWebhooksSecret { index: 1, .. }
            ),
            "{shown}"
        );
        assert!(!shown.contains("not*base64"), "{shown}");
        assert!(shown.contains("file "), "names where it came from: {shown}");

        let (_dir, empty) = route_with(VerifyKind::StandardWebhooks, &[b"whsec_"]);
        assert!(Verifier::from_route(&empty).is_err());
    }

    fn route_with(verify: VerifyKind, secrets: &[&[u8]]) -> (tempfile::TempDir, RouteConfig) {
        route(verify, "/hooks/test", secrets)
    }

    #[test]
    fn verifiers_report_their_route() {
        let (_dir, route) = route_with(VerifyKind::Github, &[b"k"]);
        let verifier = build(&route);
        assert_eq!(verifier.kind(), VerifyKind::Github);
        assert_eq!(verifier.route_path(), "/hooks/test");
        assert_eq!(
            verifier.to_string(),
            "github verifier for route /hooks/test"
        );
    }

    /// Secrets that look like nothing else in the output, so a leak cannot hide; long enough to
    /// pass as an `mpesa` token.
    const LEAKY: &[u8] = b"SECRETzzLEAKzz-and-more-of-it";
    /// The start of `LEAKY` as a Standard Webhooks secret; its base64 decodes to other bytes,
    /// checked too.
    const LEAKY_WHSEC: &[u8] = b"whsec_U0VDUkVUenpMRUFLeno=";

    #[test]
    fn verifiers_never_print_their_secrets() {
        for verify in [
            VerifyKind::Mpesa,
            VerifyKind::StandardWebhooks,
            VerifyKind::Stripe,
            VerifyKind::Github,
            VerifyKind::HmacSha256,
            VerifyKind::SharedSecret,
        ] {
            let secret = if verify == VerifyKind::StandardWebhooks {
                LEAKY_WHSEC
            } else {
                LEAKY
            };
            let (_dir, mut route) = route_with(verify, &[secret, secret]);
            if matches!(verify, VerifyKind::HmacSha256 | VerifyKind::SharedSecret) {
                route.header = Some("X-Secret".into());
            }
            let verifier = build(&route);
            let shown = format!("{verifier:?} {verifier} {verifier:#?}");
            assert_no_secret(&shown);
            assert!(shown.contains("redacted"), "{shown}");
        }
    }

    /// Panics if `shown` contains `LEAKY`, its whsec form or part of either, in any common
    /// encoding.
    fn assert_no_secret(shown: &str) {
        let lower = shown.to_ascii_lowercase();
        for needle in [
            "secretzz",
            "zzleak",
            "u0vdukvu",
            &hex::encode(LEAKY),
            &hex::encode(&LEAKY[..6]),
        ] {
            assert!(!lower.contains(needle), "{needle} leaked into: {shown}");
        }
        // The decimal bytes a derived Debug of a Vec<u8> would print.
        let bytes = format!("{:?}", &LEAKY[..4]);
        let bytes = bytes.trim_matches(['[', ']']);
        assert!(!shown.contains(bytes), "bytes leaked into: {shown}");
    }

    #[test]
    fn refusals_never_print_tokens_secrets_signatures_or_bodies() {
        let leaky = std::str::from_utf8(LEAKY).unwrap();
        let mut refusals = Vec::new();

        // mpesa: a wrong token, a missing one, and bodies that carry the marker.
        let (_dir, route) = route(VerifyKind::Mpesa, "/m", &[b"the-real-token-of-this-route"]);
        let mpesa = build(&route);
        let none = HeaderMap::new();
        for (token, body) in [
            (Some(leaky), &br#"{"TransID":"x"}"#[..]),
            (None, b"{}"),
            (Some("the-real-token-of-this-route"), LEAKY),
            (
                Some("the-real-token-of-this-route"),
                br#"{"SECRETzzLEAKzz":1}"#,
            ),
            (
                Some("the-real-token-of-this-route"),
                br#"{"TransactionType":"SECRETzzLEAKzz"}"#,
            ),
        ] {
            refusals.push(
                mpesa
                    .verify(&Request {
                        path_token: token,
                        headers: &none,
                        body,
                        now: at(0),
                    })
                    .unwrap_err(),
            );
        }

        // The signed kinds, with the marker as signature, shared secret and body.
        let (_dir, mut shared) = route_with(VerifyKind::SharedSecret, &[b"real"]);
        shared.header = Some("X-Secret".into());
        let (_dir, mut hmac) = route_with(VerifyKind::HmacSha256, &[LEAKY]);
        hmac.header = Some("X-Sig".into());
        hmac.prefix = Some("sha256=".into());
        let github = verifier_for(VerifyKind::Github, &[LEAKY]);
        let stripe = verifier_for(VerifyKind::Stripe, &[LEAKY]);
        let standard = verifier_for(VerifyKind::StandardWebhooks, &[LEAKY_WHSEC]);
        let attempts: [(&Verifier, Vec<(&str, String)>); 9] = [
            (&build(&shared), vec![("x-secret", leaky.into())]),
            (&build(&hmac), vec![("x-sig", format!("sha256={leaky}"))]),
            (&build(&hmac), vec![("x-sig", leaky.into())]),
            (&github, vec![("x-hub-signature-256", leaky.into())]),
            (
                &github,
                vec![("x-hub-signature-256", format!("sha256={leaky}"))],
            ),
            (
                &stripe,
                vec![("stripe-signature", format!("t={leaky},v1=00"))],
            ),
            (
                &stripe,
                vec![("stripe-signature", format!("t=1,v1={leaky}"))],
            ),
            (
                &standard,
                vec![
                    ("webhook-id", "msg_1".into()),
                    ("webhook-timestamp", leaky.into()),
                    ("webhook-signature", "v1,AAAA".into()),
                ],
            ),
            (
                &standard,
                vec![
                    ("webhook-id", "msg_1".into()),
                    ("webhook-timestamp", "1".into()),
                    ("webhook-signature", format!("v1,{leaky}")),
                ],
            ),
        ];
        for (verifier, pairs) in &attempts {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            refusals.push(check(verifier, &headers(&pairs), LEAKY, at(1)).unwrap_err());
        }

        let reasons: HashSet<&str> = refusals.iter().map(Refusal::reason).collect();
        for expected in [
            "bad_token",
            "missing_token",
            "bad_body",
            "bad_secret",
            "bad_signature",
            "malformed_header",
        ] {
            assert!(reasons.contains(expected), "{expected} not exercised");
        }
        for refusal in &refusals {
            assert_no_secret(&format!("{refusal} {refusal:?}"));
            assert!(
                !refusal.to_string().contains("the-real-token-of-this-route"),
                "{refusal}"
            );
        }
    }

    #[test]
    fn requests_do_not_print_tokens_or_header_values() {
        let map = headers(&[("x-secret", "SECRETzzLEAKzz")]);
        let request = Request {
            path_token: Some("SECRETzzLEAKzz"),
            headers: &map,
            body: LEAKY,
            now: at(0),
        };
        let shown = format!("{request:?}");
        assert_no_secret(&shown);
        assert!(shown.contains("x-secret"), "{shown}");
    }
}
