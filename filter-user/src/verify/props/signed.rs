//! The signed kinds and shared secrets against their references, on generated headers built
//! from good and bad parts and then mutated, with generated secrets and bodies.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use http::HeaderMap;
use proptest::{prelude::*, sample::Index};
use sha2::{Digest as _, Sha256};

use super::{
    Mutation, Verdict, at, config, header_byte, header_map, mutated, mutation, reference_base64,
    reference_fresh, reference_generic_id, reference_hex, reference_mac, reference_matches,
    reference_required, reference_timestamp, verdict,
};
use crate::{
    config::{Encoding, Secret, VerifyKind},
    verify::{
        EventKind, Key, Request, Scheme, SecretDigest, Verifier,
        signed::{parse_stripe, standard_webhooks_signatures},
    },
};

/// Routes allow 300 s by default; the generated clocks straddle the edge.
const TOLERANCE: u64 = 300;
/// A present-day clock.
const NOW: i64 = 1_764_979_200;

fn verifier(verify: VerifyKind, scheme: Scheme) -> Verifier {
    Verifier {
        route: "/props".into(),
        verify,
        scheme,
    }
}

fn secrets(keys: &[Vec<u8>]) -> Vec<Secret> {
    keys.iter()
        .map(|key| Secret::from_bytes(key.clone()))
        .collect()
}

fn run(verifier: &Verifier, headers: &HeaderMap, body: &[u8], now: i64) -> Verdict {
    verdict(verifier.verify(&Request {
        path_token: None,
        headers,
        body,
        now: at(now),
    }))
}

/// The route's keys, and the key the sender signs with: one of them, or a stranger's.
#[derive(Debug, Clone)]
struct Keys {
    route: Vec<Vec<u8>>,
    signer: Vec<u8>,
}

fn keys() -> impl Strategy<Value = Keys> {
    let key = || prop::collection::vec(any::<u8>(), 1..40);
    (
        prop::collection::vec(key(), 1..4),
        any::<Index>(),
        prop::bool::weighted(0.2),
        key(),
    )
        .prop_map(|(route, pick, stranger, other)| {
            let signer = if stranger {
                other
            } else {
                pick.get(&route).clone()
            };
            Keys { route, signer }
        })
}

/// A timestamp as a sender might write it: near the clock (either side of the tolerance), with
/// leading zeros, empty, huge, negative, or junk.
fn timestamp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (-2 * TOLERANCE as i64..=2 * TOLERANCE as i64).prop_map(|skew| (NOW + skew).to_string()),
        1 => (0usize..4, -400i64..400).prop_map(|(zeros, skew)| format!("{}{}", "0".repeat(zeros), NOW + skew)),
        1 => prop_oneof![
            Just(String::new()),
            Just(i64::MAX.to_string()),
            Just("9223372036854775808".to_owned()),
            Just("99999999999999999999999".to_owned()),
            Just(format!("-{NOW}")),
            Just(format!("+{NOW}")),
            Just(format!("{NOW}.5")),
            Just("1e9".to_owned()),
            "[0-9]{0,25}",
            "\\PC{0,8}",
        ],
    ]
}

/// A body: an event with an id (or a bad one), a JSON value of another shape, or any bytes; then
/// perhaps mutated.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        "\"evt_[A-Za-z0-9]{1,24}\"",
        Just("\"\"".to_owned()),
        Just("42".to_owned()),
        Just("1e999".to_owned()),
        Just("null".to_owned()),
        Just("{\"id\":\"x\"}".to_owned()),
    ];
    let base = prop_oneof![
        4 => (id.clone(), id).prop_map(|(id, other)| {
            format!(r#"{{"id":{id},"object":"event","data":{{"id":{other}}}}}"#).into_bytes()
        }),
        1 => Just(b"[1,2,3]".to_vec()),
        1 => Just(Vec::new()),
        2 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    (base, prop::collection::vec(mutation(), 0..2)).prop_map(|(body, ms)| mutated(&body, &ms))
}

fn hex_case(bytes: &[u8], upper: bool) -> String {
    if upper {
        hex::encode_upper(bytes)
    } else {
        hex::encode(bytes)
    }
}

/// The event id a Stripe body yields once its signature is good.
fn reference_stripe_id(body: &[u8]) -> Verdict {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "bad_body")?;
    let object = value.as_object().ok_or("bad_body")?;
    match object.get("id") {
        Some(serde_json::Value::String(id)) if !id.is_empty() => {
            Ok((id.clone(), EventKind::Stripe))
        }
        _ => Err("no_event_id"),
    }
}

// ---------------------------------------------------------------------------------------------
// Stripe
// ---------------------------------------------------------------------------------------------

/// One comma-separated part of a generated `Stripe-Signature`.
#[derive(Debug, Clone)]
enum StripeItem {
    /// `t=` and this text.
    T(String),
    /// `v1=` and the signer's MAC over the first `t`'s text and the body, in hex.
    Good { upper: bool },
    /// `v1=` and this text.
    V1(String),
    /// `key=value`, for another key (`v0`, `T`, ...).
    Other(String, String),
    /// A part without `=`.
    Junk(String),
}

fn stripe_item() -> impl Strategy<Value = StripeItem> {
    prop_oneof![
        3 => timestamp_text().prop_map(StripeItem::T),
        3 => any::<bool>().prop_map(|upper| StripeItem::Good { upper }),
        2 => prop_oneof!["[0-9a-fA-F]{0,66}", "[ -~]{0,20}"].prop_map(StripeItem::V1),
        1 => (prop_oneof![Just("v0"), Just("T"), Just("v2"), Just(" t"), Just("")], "[ -~]{0,12}")
            .prop_map(|(key, value)| StripeItem::Other(key.to_owned(), value)),
        1 => "[ -<>-~]{0,8}".prop_map(StripeItem::Junk),
    ]
}

/// Renders `items` as a `Stripe-Signature` value for `body`.
fn stripe_header(items: &[StripeItem], separators: &[&str], signer: &[u8], body: &[u8]) -> String {
    let signed_t = items
        .iter()
        .find_map(|item| match item {
            StripeItem::T(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_else(|| NOW.to_string());
    let good = reference_mac(signer, &[signed_t.as_bytes(), b".", body]);
    let mut out = String::new();
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(separators[index % separators.len()]);
        }
        match item {
            StripeItem::T(t) => out.push_str(&format!("t={t}")),
            StripeItem::Good { upper } => out.push_str(&format!("v1={}", hex_case(&good, *upper))),
            StripeItem::V1(value) => out.push_str(&format!("v1={value}")),
            StripeItem::Other(key, value) => out.push_str(&format!("{key}={value}")),
            StripeItem::Junk(junk) => out.push_str(junk),
        }
    }
    out
}

/// The `Stripe-Signature` header as its contract describes it: comma-separated `key=value`
/// parts, blanks around a part ignored, exactly one `t`, at least one `v1`, undecodable `v1`
/// values skipped.
fn reference_parse_stripe(value: &str) -> Result<(&str, Vec<Vec<u8>>), &'static str> {
    let mut timestamps = Vec::new();
    let mut saw_v1 = false;
    let mut signatures = Vec::new();
    for part in value.split(',') {
        let part = part.trim_matches([' ', '\t']);
        let Some(eq) = part.find('=') else {
            continue;
        };
        let (key, value) = (&part[..eq], &part[eq + 1..]);
        if key == "t" {
            timestamps.push(value);
        } else if key == "v1" {
            saw_v1 = true;
            signatures.extend(reference_hex(value));
        }
    }
    match (timestamps.as_slice(), saw_v1) {
        ([_, _, ..], _) => Err("more than one t="),
        ([], _) => Err("no t= timestamp"),
        ([_], false) => Err("no v1 signature"),
        ([t], true) => Ok((t, signatures)),
    }
}

fn reference_stripe(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8], now: i64) -> Verdict {
    let value = reference_required(headers, "stripe-signature")?;
    let (t, signatures) = reference_parse_stripe(value).map_err(|_| "malformed_header")?;
    let signed_at = reference_timestamp(t)?;
    if !reference_matches(keys, &[t.as_bytes(), b".", body], &signatures) {
        return Err("bad_signature");
    }
    reference_fresh(signed_at, now, TOLERANCE)?;
    reference_stripe_id(body)
}

fn stripe_verifier(keys: &[Vec<u8>]) -> Verifier {
    verifier(
        VerifyKind::Stripe,
        Scheme::Stripe {
            secrets: secrets(keys),
            tolerance_seconds: TOLERANCE,
        },
    )
}

const STRIPE_SEPARATORS: [&str; 4] = [",", ", ", " ,", ",\t"];

/// A Stripe request: keys, body, header (or none), clock.
fn stripe_case() -> impl Strategy<Value = (Keys, Vec<u8>, Option<Vec<u8>>, i64)> {
    (
        keys(),
        body(),
        prop::collection::vec(stripe_item(), 0..6),
        prop::collection::vec(prop::sample::select(&STRIPE_SEPARATORS[..]), 1..3),
        prop::collection::vec(mutation(), 0..2),
        prop::bool::weighted(0.95),
        -2 * TOLERANCE as i64..=2 * TOLERANCE as i64,
    )
        .prop_map(|(keys, body, items, separators, ms, present, skew)| {
            let header = stripe_header(&items, &separators, &keys.signer, &body);
            let header = present.then(|| mutated(header.as_bytes(), &ms));
            (keys, body, header, NOW + skew)
        })
}

/// Every visible-ASCII string, built mostly from the pieces of the header's syntax.
fn stripe_syntax() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(
                &["t=", "v1=", "v0=", ",", ", ", "=", " ", "\t", "t", "00", "fF", "1764979200", "a"][..]
            )
            .prop_map(str::to_owned),
            1 => proptest::char::range(' ', '~').prop_map(String::from),
        ],
        0..24,
    )
    .prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn stripe_verdicts_agree_with_the_reference((keys, body, header, now) in stripe_case()) {
        let mut pairs = Vec::new();
        if let Some(header) = header {
            pairs.push(("stripe-signature", header));
        }
        let headers = header_map(&pairs);
        let verifier = stripe_verifier(&keys.route);
        prop_assert_eq!(
            run(&verifier, &headers, &body, now),
            reference_stripe(&keys.route, &headers, &body, now)
        );
    }

    #[test]
    fn stripe_headers_parse_as_the_reference_says(text in stripe_syntax()) {
        let parsed = parse_stripe(&text).map(|h| (h.timestamp, h.signatures));
        prop_assert_eq!(parsed, reference_parse_stripe(&text));
    }

    /// The comparison work a header causes is bounded by its length: each `v1` candidate takes at
    /// least four bytes of it (`v1=` and a comma) and decodes to at most half its hex.
    #[test]
    fn stripe_candidates_are_bounded_by_the_header_length(text in stripe_syntax()) {
        if let Ok(parsed) = parse_stripe(&text) {
            let decoded: usize = parsed.signatures.iter().map(Vec::len).sum();
            prop_assert!(parsed.signatures.len() <= (text.len() + 1) / 4);
            prop_assert!(decoded <= text.len() / 2);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks
// ---------------------------------------------------------------------------------------------

/// One space-separated entry of a generated `webhook-signature`.
#[derive(Debug, Clone)]
enum SwEntry {
    /// `v1,` and the signer's MAC in base64, padded or not.
    Good { padded: bool },
    /// `version,` and this text.
    Versioned(String, String),
    /// An entry without a comma.
    Junk(String),
}

fn sw_entry() -> impl Strategy<Value = SwEntry> {
    prop_oneof![
        3 => any::<bool>().prop_map(|padded| SwEntry::Good { padded }),
        3 => (
            prop_oneof![Just("v1"), Just("v1a"), Just("v2"), Just("V1"), Just("")],
            prop_oneof!["[A-Za-z0-9+/]{0,44}={0,3}", "[!-~]{0,12}"],
        )
            .prop_map(|(version, text)| SwEntry::Versioned(version.to_owned(), text)),
        1 => "[!-+--~]{0,12}".prop_map(SwEntry::Junk),
    ]
}

/// The Standard Webhooks message id: what senders use, or any header bytes.
fn sw_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "msg_[A-Za-z0-9]{1,27}".prop_map(String::into_bytes),
        1 => prop::collection::vec(header_byte(), 0..24),
    ]
}

fn trimmed(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| !b" \t".contains(b));
    let end = bytes.iter().rposition(|b| !b" \t".contains(b));
    match (start, end) {
        (Some(start), Some(end)) => bytes[start..=end].to_vec(),
        _ => Vec::new(),
    }
}

fn sw_header(entries: &[SwEntry], separators: &[&str], good_mac: &[u8]) -> String {
    let mut out = String::new();
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            out.push_str(separators[index % separators.len()]);
        }
        match entry {
            SwEntry::Good { padded } => {
                let encoded = STANDARD.encode(good_mac);
                let encoded = if *padded {
                    encoded.as_str()
                } else {
                    encoded.trim_end_matches('=')
                };
                out.push_str(&format!("v1,{encoded}"));
            }
            SwEntry::Versioned(version, text) => out.push_str(&format!("{version},{text}")),
            SwEntry::Junk(junk) => out.push_str(junk),
        }
    }
    out
}

/// The `webhook-signature` contract: blank-separated `version,signature` entries; `None` without
/// a `v1` entry; undecodable `v1` signatures skipped.
fn reference_sw_signatures(value: &str) -> Option<Vec<Vec<u8>>> {
    let mut saw_v1 = false;
    let mut signatures = Vec::new();
    for entry in value.split([' ', '\t']).filter(|entry| !entry.is_empty()) {
        if let Some(signature) = entry.strip_prefix("v1,") {
            saw_v1 = true;
            signatures.extend(reference_base64(signature));
        }
    }
    saw_v1.then_some(signatures)
}

fn reference_sw(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8], now: i64) -> Verdict {
    let id = reference_required(headers, "webhook-id")?;
    let timestamp = reference_required(headers, "webhook-timestamp")?;
    let signatures = reference_required(headers, "webhook-signature")?;
    let signed_at = reference_timestamp(timestamp)?;
    let signatures = reference_sw_signatures(signatures).ok_or("malformed_header")?;
    let content = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    if !reference_matches(keys, &content, &signatures) {
        return Err("bad_signature");
    }
    reference_fresh(signed_at, now, TOLERANCE)?;
    Ok((id.to_owned(), EventKind::StandardWebhooks))
}

/// The route's secret for `key`: `whsec_` or not, base64 padded or not.
fn whsec(key: &[u8], prefixed: bool, padded: bool) -> Vec<u8> {
    let encoded = STANDARD.encode(key);
    let encoded = if padded {
        encoded.as_str()
    } else {
        encoded.trim_end_matches('=')
    };
    let prefix = if prefixed { "whsec_" } else { "" };
    format!("{prefix}{encoded}").into_bytes()
}

#[derive(Debug, Clone)]
struct SwCase {
    keys: Keys,
    forms: Vec<(bool, bool)>,
    body: Vec<u8>,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`: each may be absent.
    id: Option<Vec<u8>>,
    timestamp: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
    now: i64,
}

fn sw_case() -> impl Strategy<Value = SwCase> {
    let header = |inner: BoxedStrategy<Vec<u8>>| {
        (inner, prop::bool::weighted(0.97)).prop_map(|(value, present)| present.then_some(value))
    };
    (
        keys(),
        prop::collection::vec((any::<bool>(), any::<bool>()), 4),
        body(),
        header(sw_id().boxed()),
        header(timestamp_text().prop_map(String::into_bytes).boxed()),
        (
            prop::collection::vec(sw_entry(), 0..5),
            prop::collection::vec(prop::sample::select(&[" ", "  ", "\t"][..]), 1..3),
            prop::collection::vec(mutation(), 0..2),
            prop::bool::weighted(0.97),
        ),
        -2 * TOLERANCE as i64..=2 * TOLERANCE as i64,
    )
        .prop_map(
            |(keys, forms, body, id, timestamp, (entries, separators, ms, present), skew)| {
                // A genuine sender signs the id and timestamp it sends.
                let signed_id = trimmed(id.as_deref().unwrap_or_default());
                let signed_timestamp = trimmed(timestamp.as_deref().unwrap_or_default());
                let good = reference_mac(
                    &keys.signer,
                    &[&signed_id, b".", &signed_timestamp, b".", &body],
                );
                let signature = present
                    .then(|| mutated(sw_header(&entries, &separators, &good).as_bytes(), &ms));
                SwCase {
                    keys,
                    forms,
                    body,
                    id,
                    timestamp,
                    signature,
                    now: NOW + skew,
                }
            },
        )
}

fn sw_verifier(case: &SwCase) -> Verifier {
    let keys = case
        .keys
        .route
        .iter()
        .zip(case.forms.iter().cycle())
        .map(|(key, &(prefixed, padded))| {
            let secret = Secret::from_bytes(whsec(key, prefixed, padded));
            Key::from_whsec(&secret).expect("a generated whsec secret decodes")
        })
        .collect();
    verifier(
        VerifyKind::StandardWebhooks,
        Scheme::StandardWebhooks {
            keys,
            tolerance_seconds: TOLERANCE,
        },
    )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn standard_webhooks_verdicts_agree_with_the_reference(case in sw_case()) {
        let mut pairs = Vec::new();
        for (name, value) in [
            ("webhook-id", &case.id),
            ("webhook-timestamp", &case.timestamp),
            ("webhook-signature", &case.signature),
        ] {
            if let Some(value) = value {
                pairs.push((name, value.clone()));
            }
        }
        let headers = header_map(&pairs);
        prop_assert_eq!(
            run(&sw_verifier(&case), &headers, &case.body, case.now),
            reference_sw(&case.keys.route, &headers, &case.body, case.now)
        );
    }

    /// Each `v1` candidate takes at least four bytes of the header (`v1,` and a blank) and
    /// decodes to at most three quarters of its text.
    #[test]
    fn standard_webhooks_signatures_parse_as_the_reference_says_within_the_header_length(
        text in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(&['v', '1', 'a', ',', ' ', '\t', 'A', '=', '/'][..]),
                1 => proptest::char::range('!', '~'),
            ],
            0..48,
        ).prop_map(|chars| chars.into_iter().collect::<String>())
    ) {
        let parsed = standard_webhooks_signatures(&text);
        prop_assert_eq!(&parsed, &reference_sw_signatures(&text));
        if let Some(signatures) = parsed {
            let decoded: usize = signatures.iter().map(Vec::len).sum();
            prop_assert!(signatures.len() <= (text.len() + 1) / 4);
            prop_assert!(decoded <= text.len() * 3 / 4);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GitHub
// ---------------------------------------------------------------------------------------------

fn reference_github(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8]) -> Verdict {
    let value = reference_required(headers, "x-hub-signature-256")?;
    let hex = value.strip_prefix("sha256=").ok_or("malformed_header")?;
    let signature = reference_hex(hex).ok_or("malformed_header")?;
    if !reference_matches(keys, &[body], &[signature]) {
        return Err("bad_signature");
    }
    // The delivery id must be there, but the event is known by what the signature covers.
    reference_required(headers, "x-github-delivery")?;
    Ok((hex::encode(Sha256::digest(body)), EventKind::Github))
}

/// A generated `X-Hub-Signature-256` value, given the good MAC.
#[derive(Debug, Clone)]
enum GithubSignature {
    Good { upper: bool },
    Prefixed(String),
    Raw(Vec<u8>),
}

fn github_signature() -> impl Strategy<Value = GithubSignature> {
    prop_oneof![
        4 => any::<bool>().prop_map(|upper| GithubSignature::Good { upper }),
        2 => prop_oneof!["[0-9a-fA-F]{0,66}", "[ -~]{0,12}"].prop_map(GithubSignature::Prefixed),
        1 => prop::collection::vec(header_byte(), 0..24).prop_map(GithubSignature::Raw),
    ]
}

fn github_value(signature: &GithubSignature, good: &[u8]) -> Vec<u8> {
    match signature {
        GithubSignature::Good { upper } => {
            format!("sha256={}", hex_case(good, *upper)).into_bytes()
        }
        GithubSignature::Prefixed(text) => format!("sha256={text}").into_bytes(),
        GithubSignature::Raw(bytes) => bytes.clone(),
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn github_verdicts_agree_with_the_reference(
        keys in keys(),
        body in body(),
        signature in proptest::option::weighted(0.95, (github_signature(), prop::collection::vec(mutation(), 0..2))),
        delivery in proptest::option::weighted(0.95, prop_oneof![
            4 => "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(String::into_bytes),
            1 => prop::collection::vec(header_byte(), 0..24),
        ]),
    ) {
        let good = reference_mac(&keys.signer, &[&body]);
        let mut pairs = Vec::new();
        if let Some((signature, ms)) = &signature {
            pairs.push(("x-hub-signature-256", mutated(&github_value(signature, &good), ms)));
        }
        if let Some(delivery) = delivery {
            pairs.push(("x-github-delivery", delivery));
        }
        let headers = header_map(&pairs);
        let verifier = verifier(VerifyKind::Github, Scheme::Github { secrets: secrets(&keys.route) });
        prop_assert_eq!(
            run(&verifier, &headers, &body, NOW),
            reference_github(&keys.route, &headers, &body)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Generic HMAC-SHA256 and shared secrets
// ---------------------------------------------------------------------------------------------

/// The prefixes routes configure (`hookwall.example.toml` and the providers that use them).
const PREFIXES: [&str; 4] = ["sha256=", "v1=", "Bearer ", "HMAC "];

fn reference_hmac(
    keys: &[Vec<u8>],
    encoding: Encoding,
    prefix: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Verdict {
    let value = reference_required(headers, "x-signature")?;
    let value = match prefix {
        Some(prefix) => value.strip_prefix(prefix).ok_or("malformed_header")?,
        None => value,
    };
    let signature = match encoding {
        Encoding::Hex => reference_hex(value),
        Encoding::Base64 => reference_base64(value),
    }
    .ok_or("malformed_header")?;
    if !reference_matches(keys, &[body], &[signature]) {
        return Err("bad_signature");
    }
    Ok((reference_generic_id(body), EventKind::Generic))
}

fn encode(bytes: &[u8], encoding: Encoding, variant: bool) -> String {
    match encoding {
        Encoding::Hex => hex_case(bytes, variant),
        Encoding::Base64 if variant => STANDARD.encode(bytes).trim_end_matches('=').to_owned(),
        Encoding::Base64 => STANDARD.encode(bytes),
    }
}

fn reference_shared(
    secrets: &[Vec<u8>],
    prefix: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Verdict {
    let value = reference_required(headers, "x-signature")?;
    let value = match prefix {
        Some(prefix) => value.strip_prefix(prefix).ok_or("malformed_header")?,
        None => value,
    };
    if !secrets.iter().any(|secret| secret == value.as_bytes()) {
        return Err("bad_secret");
    }
    Ok((reference_generic_id(body), EventKind::Generic))
}

/// The value of the configured header: the prefix (or another, or none), then the signature or
/// secret (or other bytes), perhaps with blanks around, then perhaps mutated.
fn prefixed_value() -> impl Strategy<Value = (Option<usize>, bool, bool, Vec<Mutation>)> {
    (
        proptest::option::weighted(0.8, 0..PREFIXES.len()),
        prop::bool::weighted(0.85),
        any::<bool>(),
        prop::collection::vec(mutation(), 0..2),
    )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn hmac_sha256_verdicts_agree_with_the_reference(
        keys in keys(),
        body in body(),
        base64 in any::<bool>(),
        route_prefix in proptest::option::of(0..PREFIXES.len()),
        (sent_prefix, genuine, variant, ms) in prefixed_value(),
        blanks in prop::sample::select(&["", " ", "\t "][..]),
        other in prop::collection::vec(any::<u8>(), 0..40),
        present in prop::bool::weighted(0.95),
    ) {
        let encoding = if base64 { Encoding::Base64 } else { Encoding::Hex };
        let route_prefix = route_prefix.map(|i| PREFIXES[i]);
        let mac = if genuine { reference_mac(&keys.signer, &[&body]) } else { other };
        let sent = format!(
            "{blanks}{}{}{blanks}",
            sent_prefix.map_or("", |i| PREFIXES[i]),
            encode(&mac, encoding, variant)
        );
        let mut pairs = Vec::new();
        if present {
            pairs.push(("x-signature", mutated(sent.as_bytes(), &ms)));
        }
        let headers = header_map(&pairs);
        let verifier = verifier(VerifyKind::HmacSha256, Scheme::HmacSha256 {
            secrets: secrets(&keys.route),
            header: http::HeaderName::from_static("x-signature"),
            encoding,
            prefix: route_prefix.map(str::to_owned),
        });
        prop_assert_eq!(
            run(&verifier, &headers, &body, NOW),
            reference_hmac(&keys.route, encoding, route_prefix, &headers, &body)
        );
    }

    #[test]
    fn shared_secret_verdicts_agree_with_the_reference(
        route in prop::collection::vec(
            prop_oneof![
                4 => "[!-~]{1,24}".prop_map(String::into_bytes),
                1 => prop::collection::vec(any::<u8>(), 1..24),
            ],
            1..4,
        ),
        pick in any::<Index>(),
        body in body(),
        route_prefix in proptest::option::of(0..PREFIXES.len()),
        (sent_prefix, genuine, _, ms) in prefixed_value(),
        blanks in prop::sample::select(&["", " ", "\t "][..]),
        other in prop::collection::vec(header_byte(), 0..24),
        present in prop::bool::weighted(0.95),
    ) {
        let route_prefix = route_prefix.map(|i| PREFIXES[i]);
        let secret = if genuine { pick.get(&route).clone() } else { other };
        let mut sent = format!("{blanks}{}", sent_prefix.map_or("", |i| PREFIXES[i])).into_bytes();
        sent.extend_from_slice(&secret);
        sent.extend_from_slice(blanks.as_bytes());
        let mut pairs = Vec::new();
        if present {
            pairs.push(("x-signature", mutated(&sent, &ms)));
        }
        let headers = header_map(&pairs);
        let verifier = verifier(VerifyKind::SharedSecret, Scheme::SharedSecret {
            secrets: route.iter().map(|secret| SecretDigest::of(secret)).collect(),
            header: http::HeaderName::from_static("x-signature"),
            prefix: route_prefix.map(str::to_owned),
        });
        prop_assert_eq!(
            run(&verifier, &headers, &body, NOW),
            reference_shared(&route, route_prefix, &headers, &body)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Large inputs
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(8))]

    /// Thousands of signatures in one header (far more than an HTTP server lets through) still
    /// get the reference's verdict, the good one found wherever it stands.
    #[test]
    fn huge_signature_headers_get_the_reference_verdict(
        keys in keys(),
        count in 1usize..4_000,
        good_at in proptest::option::of(any::<Index>()),
        body in prop::collection::vec(any::<u8>(), 0..4_096),
    ) {
        let t = NOW.to_string();
        let good = hex::encode(reference_mac(&keys.signer, &[t.as_bytes(), b".", &body]));
        let good_at = good_at.map(|index| index.index(count));
        let mut header = format!("t={t}");
        for n in 0..count {
            let signature = if Some(n) == good_at { good.clone() } else { format!("{n:064x}") };
            header.push_str(&format!(",v1={signature}"));
        }
        let headers = header_map(&[("stripe-signature", header.clone().into_bytes())]);
        let verifier = stripe_verifier(&keys.route);
        prop_assert_eq!(
            run(&verifier, &headers, &body, NOW),
            reference_stripe(&keys.route, &headers, &body, NOW)
        );
        let parsed = parse_stripe(&header).expect("a well-formed header");
        prop_assert_eq!(parsed.signatures.len(), count);
        prop_assert!(parsed.signatures.len() <= (header.len() + 1) / 4);
    }
}
