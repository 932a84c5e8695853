//! `[[route]]`: the webhook routes, how each authenticates its callbacks, and M-Pesa validation.

use std::{collections::HashMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    Checker, DurationRule, KeyPath, Table, inline_secret_message, parse_choice,
    route_allow::RouteAllow, serde_names,
};
use crate::config::SecretRef;

/// `route.tolerance_seconds` default: the five minutes Stripe and Standard Webhooks recommend.
const DEFAULT_TOLERANCE_SECONDS: u64 = 300;
/// Upper bound for `route.tolerance_seconds`: a wider window is a replay window, not a tolerance.
const MAX_TOLERANCE_SECONDS: i64 = 3600;
/// `route.validation.timeout` default.
pub const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(5);
/// `route.validation.timeout`: Safaricom waits about 8 s for the answer, and hookwall needs a
/// moment after the deadline to answer for the application.
const VALIDATION_TIMEOUT: DurationRule = DurationRule {
    default: DEFAULT_VALIDATION_TIMEOUT,
    min: Duration::from_millis(100),
    max: Some(Duration::from_secs(7)),
    why: "; Safaricom waits about 8 s for the answer, so hookwall must answer before that",
    examples: "\"5s\" or \"2500ms\"",
};
/// An example for the validation URL in messages.
const VALIDATION_URL_EXAMPLE: &str = "http://127.0.0.1:8000/mpesa/validate";

/// How a route authenticates a callback (`route.verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyKind {
    /// M-Pesa Daraja: source address plus an unguessable token in the path (`token`).
    Mpesa,
    /// Standard Webhooks (`webhook-signature`, `webhook-timestamp`).
    StandardWebhooks,
    /// Stripe (`Stripe-Signature`).
    Stripe,
    /// GitHub (`X-Hub-Signature-256`).
    Github,
    /// Generic HMAC-SHA256 of the body in a configured `header`.
    HmacSha256,
    /// A shared secret sent verbatim in a configured `header`.
    SharedSecret,
}

impl VerifyKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyKind::Mpesa => "mpesa",
            VerifyKind::StandardWebhooks => "standard-webhooks",
            VerifyKind::Stripe => "stripe",
            VerifyKind::Github => "github",
            VerifyKind::HmacSha256 => "hmac-sha256",
            VerifyKind::SharedSecret => "shared-secret",
        }
    }

    /// Whether the provider signs a timestamp, so that `tolerance_seconds` means something.
    pub(crate) fn has_timestamp(self) -> bool {
        matches!(self, VerifyKind::StandardWebhooks | VerifyKind::Stripe)
    }

    /// Whether the user must name the header (no provider convention to fall back on).
    fn needs_header(self) -> bool {
        matches!(self, VerifyKind::HmacSha256 | VerifyKind::SharedSecret)
    }
}

impl fmt::Display for VerifyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an `hmac-sha256` signature is encoded in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lowercase or uppercase hex.
    Hex,
    /// Standard base64.
    Base64,
}

impl Encoding {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }
}

/// One `[[route]]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// URL path, starting with '/'; unique among routes. For `mpesa` the URL given to Daraja is
    /// `{path}/{token}`.
    pub path: String,
    /// How callbacks on this route are authenticated.
    pub verify: VerifyKind,
    /// `mpesa` only: the path token, when written as `token`.
    pub token: Option<SecretRef>,
    /// `mpesa` only: the path tokens, when written as `tokens = [...]`; any of them passes, so a
    /// token can be rotated without losing a callback. A route has `token` or `tokens`, never
    /// both (the config check refuses that).
    pub tokens: Vec<SecretRef>,
    /// Every kind but `mpesa` (required, at least one): signing secrets; several for rotation.
    pub secrets: Vec<SecretRef>,
    /// Accepted clock skew for signed timestamps (`standard-webhooks`, `stripe`). Default: 300.
    pub tolerance_seconds: u64,
    /// `hmac-sha256` and `shared-secret` (required there): the header carrying the signature or
    /// secret.
    pub header: Option<String>,
    /// `hmac-sha256` only: the signature's encoding; `Some(Hex)` by default there, `None` for the
    /// other kinds.
    pub encoding: Option<Encoding>,
    /// `hmac-sha256` and `shared-secret`: text before the value in the header (e.g. `sha256=`).
    pub prefix: Option<String>,
    /// `mpesa` only: forward C2B validation requests to the application and answer Daraja with
    /// its decision. Default: none (hookwall answers with acceptance itself).
    pub validation: Option<ValidationConfig>,
    /// The sources this route accepts (`allow`). Default: none, which means the allowlist
    /// (`[allow]`) for `mpesa` routes and any source the filter lets through for the others.
    pub allow: Option<RouteAllow>,
}

/// A route's `validation = { url, timeout, on_failure }`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    /// The application's endpoint (`http` or `https`) that decides.
    pub url: String,
    /// Time the application has to answer. Default: [`DEFAULT_VALIDATION_TIMEOUT`]; 100ms to 7s.
    pub timeout: Duration,
    /// The answer Daraja gets on timeout, error or an invalid answer. Required.
    pub on_failure: OnFailure,
}

/// What a validation route answers when the application does not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Accept the payment (`ResultCode` 0).
    Accept,
    /// Reject the payment.
    Reject,
}

impl OnFailure {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Accept => "accept",
            OnFailure::Reject => "reject",
        }
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    default,
    expecting = "a table: validation = { url = \"...\", on_failure = \"accept\" }"
)]
struct RawValidation {
    url: Option<String>,
    timeout: Option<toml::Value>,
    on_failure: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawRoute {
    path: Option<String>,
    verify: Option<String>,
    // Secrets are read untyped: a typed read would let serde quote an inline secret back in its
    // error message.
    token: Option<toml::Value>,
    tokens: Option<toml::Value>,
    secrets: Option<toml::Value>,
    tolerance_seconds: Option<i64>,
    header: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
    validation: Option<RawValidation>,
    allow: Option<Vec<String>>,
}

/// Whether the validation routes have their signing key (`delivery.secret`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SigningKey {
    /// `delivery.secret` is in the file (if it is malformed, that is reported on its own).
    Set,
    /// `[delivery]` is there without `secret`.
    NotSet,
    /// There is no `[delivery]` section.
    NoDelivery,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[
    Table {
        path: "route",
        array: true,
        keys: serde_names::<RawRoute>,
        secret_refs: &["token"],
        secret_ref_lists: &["secrets", "tokens"],
    },
    Table {
        path: "route.validation",
        array: false,
        keys: serde_names::<RawValidation>,
        secret_refs: &[],
        secret_ref_lists: &[],
    },
];

impl Checker<'_> {
    pub(super) fn routes(&mut self, raw: Vec<RawRoute>, signing: SigningKey) -> Vec<RouteConfig> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut routes = Vec::new();
        for (index, raw) in raw.into_iter().enumerate() {
            let at = KeyPath::of("route").index(index);
            if let Some(path) = &raw.path {
                if let Some(&first) = seen.get(path) {
                    let line = self
                        .line(&KeyPath::of("route").index(first).key("path"))
                        .map(|line| format!(" (line {line})"))
                        .unwrap_or_default();
                    self.error(
                        &at.key("path"),
                        format!(
                            "path \"{path}\" is already used by route[{first}]{line}: each path \
                             has one route; remove or rename one"
                        ),
                    );
                } else {
                    seen.insert(path.clone(), index);
                }
            }
            if let Some(route) = self.route(&at, raw, signing) {
                routes.push(route);
            }
        }
        routes
    }

    fn route(&mut self, at: &KeyPath, raw: RawRoute, signing: SigningKey) -> Option<RouteConfig> {
        let path = self.route_path(at, raw.path);
        // Without a kind, nothing else in the route can be judged.
        let verify = self.route_verify(at, raw.verify)?;
        let (token, tokens) = self.route_tokens(at, verify, raw.token, raw.tokens);
        let secrets = self.route_secrets(at, verify, raw.secrets);
        let tolerance_seconds = self.route_tolerance(at, verify, raw.tolerance_seconds);
        let header = self.route_header(at, verify, raw.header);
        let encoding = self.route_encoding(at, verify, raw.encoding);
        let prefix = self.route_prefix(at, verify, raw.prefix);
        let validation = self.route_validation(at, verify, raw.validation, signing);
        let allow = self.route_allow(at, raw.allow);
        Some(RouteConfig {
            path: path?,
            verify,
            token: token?,
            tokens: tokens?,
            secrets: secrets?,
            tolerance_seconds: tolerance_seconds?,
            header: header?,
            encoding: encoding?,
            prefix: prefix?,
            validation: validation?,
            allow: allow?,
        })
    }

    fn route_validation(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<RawValidation>,
        signing: SigningKey,
    ) -> Option<Option<ValidationConfig>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        if verify != VerifyKind::Mpesa {
            self.not_for(
                at,
                "validation",
                verify,
                true,
                "mpesa (M-Pesa C2B validation)",
            );
            return None;
        }
        let key = at.key("validation");
        let before = self.errors.len();
        let example = format!(
            "validation = {{ url = \"{VALIDATION_URL_EXAMPLE}\", on_failure = \"accept\" }}"
        );
        let url = match raw.url {
            Some(url) => self.http_url(&key.key("url"), url, VALIDATION_URL_EXAMPLE),
            None => {
                self.error(
                    &key,
                    format!("needs the application's endpoint that decides: {example}"),
                );
                None
            }
        };
        let timeout = self.duration(&key.key("timeout"), raw.timeout, &VALIDATION_TIMEOUT);
        let on_failure = match raw.on_failure {
            Some(text) => parse_choice::<OnFailure>(&text)
                .map_err(|message| self.error(&key.key("on_failure"), message))
                .ok(),
            None => {
                self.error(
                    &key,
                    format!(
                        "needs on_failure = \"accept\" or \"reject\": the answer Daraja gets \
                         when the application does not answer in time or answers nonsense; \
                         e.g. {example}"
                    ),
                );
                None
            }
        };
        let fix = "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }";
        match signing {
            SigningKey::Set => {}
            SigningKey::NotSet => self.error(
                &key,
                format!(
                    "validation requests are signed with delivery.secret, which is not set: add \
                     {fix} to [delivery]"
                ),
            ),
            SigningKey::NoDelivery => self.error(
                &key,
                format!(
                    "validation requests are signed with delivery.secret, and there is no \
                     [delivery] section: add one with url (or [delivery.nats]) and {fix}"
                ),
            ),
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Some(ValidationConfig {
            url: url?,
            timeout: timeout?,
            on_failure: on_failure?,
        }))
    }

    fn route_verify(&mut self, at: &KeyPath, raw: Option<String>) -> Option<VerifyKind> {
        let Some(raw) = raw else {
            let kinds = serde_names::<VerifyKind>().join(", ");
            self.error(at, format!("every route needs `verify`, one of: {kinds}"));
            return None;
        };
        parse_choice(&raw)
            .map_err(|message| self.error(&at.key("verify"), message))
            .ok()
    }

    fn route_prefix(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<String>,
    ) -> Option<Option<String>> {
        if verify.needs_header() {
            return Some(raw);
        }
        let kinds = "hmac-sha256 and shared-secret";
        self.not_for(at, "prefix", verify, raw.is_some(), kinds);
        if raw.is_some() { None } else { Some(None) }
    }

    fn route_encoding(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<String>,
    ) -> Option<Option<Encoding>> {
        if verify != VerifyKind::HmacSha256 {
            self.not_for(at, "encoding", verify, raw.is_some(), "hmac-sha256");
            return if raw.is_some() { None } else { Some(None) };
        }
        // Resolved here, so the verifier has no default of its own to keep in step.
        self.choice(&at.key("encoding"), raw, Encoding::Hex)
            .map(Some)
    }

    /// Reports `key` set on a route kind it means nothing for.
    fn not_for(&mut self, at: &KeyPath, key: &str, verify: VerifyKind, present: bool, kinds: &str) {
        if present {
            self.error(
                &at.key(key),
                format!("`{key}` applies only to verify = {kinds}, not \"{verify}\": remove it"),
            );
        }
    }

    fn route_path(&mut self, at: &KeyPath, raw: Option<String>) -> Option<String> {
        let Some(path) = raw else {
            self.error(
                at,
                "every route needs a `path`, e.g. path = \"/hooks/stripe\"",
            );
            return None;
        };
        let problem = if !path.starts_with('/') {
            Some(format!("must start with '/', e.g. \"/{path}\""))
        } else if path.contains(['?', '#']) || path.contains(char::is_whitespace) {
            Some("must be a plain URL path, without spaces, '?' or '#'".to_owned())
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.error(&at.key("path"), format!("route path \"{path}\" {problem}"));
                None
            }
            None => Some(path),
        }
    }

    fn route_token(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<toml::Value>,
    ) -> Option<Option<SecretRef>> {
        let key = at.key("token");
        match (verify, raw) {
            (VerifyKind::Mpesa, Some(value)) => self.secret_ref(&key, &value, "token = ").map(Some),
            (VerifyKind::Mpesa, None) => {
                self.error(
                    at,
                    "verify = \"mpesa\" needs token = { env = \"NAME\" }: Daraja signs nothing, so \
                     an unguessable token in the callback URL ({path}/{token}) is what \
                     authenticates it",
                );
                None
            }
            (_, Some(_)) => {
                self.error(
                    &key,
                    format!(
                        "`token` is for verify = \"mpesa\" only; \"{verify}\" routes use secrets = \
                         [{{ env = \"NAME\" }}]"
                    ),
                );
                None
            }
            (_, None) => Some(None),
        }
    }

    /// `token` or `tokens` (never both): the first is `route_token`'s; the list is read like
    /// `secrets`.
    fn route_tokens(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        token: Option<toml::Value>,
        tokens: Option<toml::Value>,
    ) -> (Option<Option<SecretRef>>, Option<Vec<SecretRef>>) {
        let Some(list) = tokens else {
            return (self.route_token(at, verify, token), Some(Vec::new()));
        };
        let key = at.key("tokens");
        if verify != VerifyKind::Mpesa {
            self.error(
                &key,
                format!(
                    "`tokens` is for verify = \"mpesa\" only; \"{verify}\" routes use secrets = \
                     [{{ env = \"NAME\" }}]"
                ),
            );
            return (None, None);
        }
        if token.is_some() {
            // One list says which tokens pass: a `token` left beside it after a rotation would
            // keep the old token working unnoticed.
            self.error(
                &key,
                "write either `token` or `tokens`, not both: list every token that should pass \
                 in tokens = [{ env = \"NEW\" }, { env = \"OLD\" }] and remove `token`",
            );
            return (None, None);
        }
        let example = "tokens = [{ env = \"NAME\" }]";
        let items = match list {
            toml::Value::Array(items) if !items.is_empty() => items,
            toml::Value::Array(_) => {
                self.error(&key, format!("needs at least one token: {example}"));
                return (Some(None), None);
            }
            toml::Value::Table(_) => {
                self.error(
                    &key,
                    format!(
                        "tokens is a list, so a token can be rotated: {example}, or token = {{ \
                         env = \"NAME\" }} for one"
                    ),
                );
                return (Some(None), None);
            }
            other => {
                self.error(&key, inline_secret_message(&other, example));
                return (Some(None), None);
            }
        };
        let before = self.errors.len();
        let refs: Vec<SecretRef> = items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| self.secret_ref(&key.index(index), item, "tokens = [..., "))
            .collect();
        (Some(None), (self.errors.len() == before).then_some(refs))
    }

    fn route_secrets(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<toml::Value>,
    ) -> Option<Vec<SecretRef>> {
        let key = at.key("secrets");
        if verify == VerifyKind::Mpesa {
            if raw.is_some() {
                self.error(
                    &key,
                    "verify = \"mpesa\" routes are authenticated by `token` (Daraja signs nothing, \
                     so there is nothing to check a secret against): remove secrets",
                );
                return None;
            }
            return Some(Vec::new());
        }
        let example = "secrets = [{ env = \"NAME\" }]";
        let items = match raw {
            None => {
                self.error(
                    at,
                    format!("verify = \"{verify}\" needs the signing secret: {example}"),
                );
                return None;
            }
            Some(toml::Value::Array(items)) if !items.is_empty() => items,
            Some(toml::Value::Array(_)) => {
                self.error(&key, format!("needs at least one secret: {example}"));
                return None;
            }
            Some(toml::Value::Table(_)) => {
                self.error(
                    &key,
                    format!("secrets is a list, so secrets can be rotated: {example}"),
                );
                return None;
            }
            Some(other) => {
                self.error(&key, inline_secret_message(&other, example));
                return None;
            }
        };
        let before = self.errors.len();
        let secrets: Vec<SecretRef> = items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                self.secret_ref(&key.index(index), item, "secrets = [..., ")
            })
            .collect();
        (self.errors.len() == before).then_some(secrets)
    }

    fn route_tolerance(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<i64>,
    ) -> Option<u64> {
        let Some(seconds) = raw else {
            return Some(DEFAULT_TOLERANCE_SECONDS);
        };
        let key = at.key("tolerance_seconds");
        if !verify.has_timestamp() {
            self.error(
                &key,
                format!(
                    "\"{verify}\" callbacks carry no signed timestamp, so tolerance_seconds would \
                     protect nothing: remove it (it applies to standard-webhooks and stripe)"
                ),
            );
            return None;
        }
        match u64::try_from(seconds) {
            Ok(s) if (1..=MAX_TOLERANCE_SECONDS.unsigned_abs()).contains(&s) => Some(s),
            _ => {
                self.error(
                    &key,
                    format!(
                        "{seconds} is out of range: use 1 to {MAX_TOLERANCE_SECONDS} seconds (the \
                         default {DEFAULT_TOLERANCE_SECONDS} suits most senders); a longer window \
                         lets a captured callback be replayed for longer"
                    ),
                );
                None
            }
        }
    }

    fn route_header(
        &mut self,
        at: &KeyPath,
        verify: VerifyKind,
        raw: Option<String>,
    ) -> Option<Option<String>> {
        let key = at.key("header");
        if !verify.needs_header() {
            self.not_for(
                at,
                "header",
                verify,
                raw.is_some(),
                "hmac-sha256 and shared-secret",
            );
            return if raw.is_some() { None } else { Some(None) };
        }
        let Some(header) = raw else {
            self.error(
                at,
                format!(
                    "verify = \"{verify}\" needs the name of the header that carries the \
                     {}: e.g. header = \"X-Signature\"",
                    if verify == VerifyKind::HmacSha256 {
                        "signature"
                    } else {
                        "secret"
                    }
                ),
            );
            return None;
        };
        // RFC 9110 token characters: anything else can never match a received header.
        let valid = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            self.error(
                &key,
                format!("\"{header}\" is not a valid HTTP header name"),
            );
            return None;
        }
        Some(Some(header))
    }
}
