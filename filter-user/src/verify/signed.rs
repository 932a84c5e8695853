//! The signed kinds (Standard Webhooks, Stripe, GitHub, generic HMAC-SHA256) and shared secrets.
//!
//! Signatures that cannot be decoded are skipped rather than refused when a header may carry
//! several (Standard Webhooks, Stripe): a sender may add schemes or encodings we do not know next
//! to the one we do, and a skipped entry simply matches nothing.

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use hmac::{Hmac, KeyInit as _, Mac as _};
use http::HeaderName;
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

use super::{
    EventKind, Key, Refusal, Request, SecretDigest, Verified, check_timestamp, generic_event_id,
    malformed, parse_timestamp, required,
};
use crate::config::{Encoding, Secret};

/// Standard base64, with or without padding: senders differ, and padding carries no information.
pub(super) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard Webhooks: `webhook-signature` holds space-separated `v1,<base64>` entries, each an
/// HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`.
pub(super) fn standard_webhooks(
    keys: &[Key],
    tolerance_seconds: u64,
    req: &Request<'_>,
) -> Result<Verified, Refusal> {
    let id = required(req.headers, &HeaderName::from_static("webhook-id"))?;
    let timestamp_header = HeaderName::from_static("webhook-timestamp");
    let timestamp = required(req.headers, &timestamp_header)?;
    let signature_header = HeaderName::from_static("webhook-signature");
    let signatures = required(req.headers, &signature_header)?;

    let signed_at = parse_timestamp(timestamp, &timestamp_header)?;
    let candidates = standard_webhooks_signatures(signatures)
        .ok_or_else(|| malformed(&signature_header, "no v1 signature"))?;
    let content = [id.as_bytes(), b".", timestamp.as_bytes(), b".", req.body];
    let keys = keys.iter().map(Key::expose);
    if !bool::from(any_mac_matches(keys, &content, &candidates)) {
        return Err(Refusal::BadSignature);
    }
    check_timestamp(signed_at, req.now, tolerance_seconds)?;
    Ok(Verified {
        event_id: id.to_owned(),
        kind: EventKind::StandardWebhooks,
    })
}

/// The decodable `v1` signatures of a `webhook-signature` header; `None` if it has no `v1` entry
/// at all (other versions, such as the asymmetric `v1a`, are not ours to check).
pub(super) fn standard_webhooks_signatures(header: &str) -> Option<Vec<Vec<u8>>> {
    let mut saw_v1 = false;
    let mut signatures = Vec::new();
    for entry in header.split_ascii_whitespace() {
        let Some(("v1", signature)) = entry.split_once(',') else {
            continue;
        };
        saw_v1 = true;
        if let Ok(bytes) = BASE64.decode(signature) {
            signatures.push(bytes);
        }
    }
    saw_v1.then_some(signatures)
}

/// Stripe: `Stripe-Signature: t=<seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`, each `v1` an
/// HMAC-SHA256 of `{t}.{body}` keyed with the secret's bytes as written (`whsec_` included). The
/// event id is the verified body's `id`.
pub(super) fn stripe(
    secrets: &[Secret],
    tolerance_seconds: u64,
    req: &Request<'_>,
) -> Result<Verified, Refusal> {
    let header = HeaderName::from_static("stripe-signature");
    let value = required(req.headers, &header)?;
    let parsed = parse_stripe(value).map_err(|why| malformed(&header, why))?;
    let signed_at = parse_timestamp(parsed.timestamp, &header)?;

    let payload = [parsed.timestamp.as_bytes(), b".", req.body];
    let keys = secrets.iter().map(Secret::expose);
    if !bool::from(any_mac_matches(keys, &payload, &parsed.signatures)) {
        return Err(Refusal::BadSignature);
    }
    check_timestamp(signed_at, req.now, tolerance_seconds)?;
    Ok(Verified {
        event_id: stripe_event_id(req.body)?,
        kind: EventKind::Stripe,
    })
}

/// The parts of a `Stripe-Signature` header we use.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StripeHeader<'h> {
    /// `t`, as written: the signed payload starts with exactly these bytes.
    pub(super) timestamp: &'h str,
    /// The decodable `v1` signatures.
    pub(super) signatures: Vec<Vec<u8>>,
}

/// Splits a `Stripe-Signature` header. `v0` (a legacy test-mode scheme) and unknown keys are
/// ignored, as Stripe's libraries do; a second `t` is refused, since it would make the signed
/// payload ambiguous.
pub(super) fn parse_stripe(header: &str) -> Result<StripeHeader<'_>, &'static str> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    let mut saw_v1 = false;
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" if timestamp.is_some() => return Err("more than one t="),
            "t" => timestamp = Some(value),
            "v1" => {
                saw_v1 = true;
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("no t= timestamp")?;
    if !saw_v1 {
        return Err("no v1 signature");
    }
    Ok(StripeHeader {
        timestamp,
        signatures,
    })
}

/// A Stripe event's `evt_...` id, from the (verified) body.
fn stripe_event_id(body: &[u8]) -> Result<String, Refusal> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| Refusal::BadBody { why: "not JSON" })?;
    let event = value.as_object().ok_or(Refusal::BadBody {
        why: "not a JSON object",
    })?;
    match event.get("id") {
        Some(serde_json::Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err(Refusal::NoEventId {
            why: "the Stripe event has no \"id\" string",
        }),
    }
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the body; no timestamp.
///
/// The event id is the body's SHA-256, not `X-GitHub-Delivery`: the signature covers the body
/// only, so keying on the delivery header would let anyone holding one captured delivery store
/// it again under a fresh GUID. The header is still required (GitHub always sends it) and is
/// kept with the stored event, for display.
pub(super) fn github(secrets: &[Secret], req: &Request<'_>) -> Result<Verified, Refusal> {
    let header = HeaderName::from_static("x-hub-signature-256");
    let value = required(req.headers, &header)?;
    let hex_signature = value
        .strip_prefix("sha256=")
        .ok_or_else(|| malformed(&header, "does not start with sha256="))?;
    let signature = hex::decode(hex_signature).map_err(|_| malformed(&header, "not hex"))?;
    let keys = secrets.iter().map(Secret::expose);
    if !bool::from(any_mac_matches(keys, &[req.body], &[signature])) {
        return Err(Refusal::BadSignature);
    }
    required(req.headers, &HeaderName::from_static("x-github-delivery"))?;
    Ok(Verified {
        event_id: hex::encode(Sha256::digest(req.body)),
        kind: EventKind::Github,
    })
}

/// Generic HMAC-SHA256 of the body, in the configured header after the optional prefix.
pub(super) fn hmac_sha256(
    secrets: &[Secret],
    header: &HeaderName,
    encoding: Encoding,
    prefix: Option<&str>,
    req: &Request<'_>,
) -> Result<Verified, Refusal> {
    let value = after_prefix(required(req.headers, header)?, prefix, header)?;
    let signature = match encoding {
        Encoding::Hex => hex::decode(value).map_err(|_| malformed(header, "not hex")),
        Encoding::Base64 => BASE64
            .decode(value)
            .map_err(|_| malformed(header, "not base64")),
    }?;
    let keys = secrets.iter().map(Secret::expose);
    if !bool::from(any_mac_matches(keys, &[req.body], &[signature])) {
        return Err(Refusal::BadSignature);
    }
    Ok(Verified {
        event_id: generic_event_id(req.body),
        kind: EventKind::Generic,
    })
}

/// A shared secret sent as it is in the configured header, after the optional prefix.
pub(super) fn shared_secret(
    secrets: &[SecretDigest],
    header: &HeaderName,
    prefix: Option<&str>,
    req: &Request<'_>,
) -> Result<Verified, Refusal> {
    let value = after_prefix(required(req.headers, header)?, prefix, header)?;
    // Fold without stopping early: which secret matched is nobody's business.
    let matched = secrets.iter().fold(Choice::from(0), |acc, secret| {
        acc | secret.matches(value.as_bytes())
    });
    if !bool::from(matched) {
        return Err(Refusal::BadSecret {
            header: header.clone(),
        });
    }
    Ok(Verified {
        event_id: generic_event_id(req.body),
        kind: EventKind::Generic,
    })
}

/// `value` without the configured prefix (matched exactly, case included).
fn after_prefix<'v>(
    value: &'v str,
    prefix: Option<&str>,
    header: &HeaderName,
) -> Result<&'v str, Refusal> {
    match prefix {
        None => Ok(value),
        Some(prefix) => value
            .strip_prefix(prefix)
            .ok_or_else(|| malformed(header, "does not start with the configured prefix")),
    }
}

/// Whether any candidate is the HMAC-SHA256 of the concatenated `parts` under any key. Each
/// comparison takes constant time (a wrong length simply fails); every pair is compared, so the
/// time taken says nothing about which key or candidate came closest.
fn any_mac_matches<'k>(
    keys: impl Iterator<Item = &'k [u8]>,
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Choice {
    let mut matched = Choice::from(0);
    for key in keys {
        // HMAC accepts keys of any length, so this never fails; if it did, the key matches nothing.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            continue;
        };
        for part in parts {
            mac.update(part);
        }
        let tag = mac.finalize().into_bytes();
        for candidate in candidates {
            matched |= tag.as_slice().ct_eq(candidate);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::{super::testing::*, *};
    use crate::{config::VerifyKind, verify::Verifier};

    // --- Standard Webhooks ---

    /// The published test vector (standard-webhooks/standard-webhooks, libraries' tests).
    const SW_SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: u64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw_headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ])
    }

    fn sw_vector_headers() -> HeaderMap {
        sw_headers(SW_ID, &SW_TIMESTAMP.to_string(), SW_SIGNATURE)
    }

    #[test]
    fn standard_webhooks_accepts_the_published_vector() {
        let verifier = verifier_for(VerifyKind::StandardWebhooks, &[SW_SECRET]);
        let verified = check(&verifier, &sw_vector_headers(), SW_BODY, at(SW_TIMESTAMP));
        assert_eq!(
            verified,
            Ok(Verified {
                event_id: SW_ID.into(),
                kind: EventKind::StandardWebhooks
            })
        );
        // The reference libraries accept the secret without its prefix too.
        let unprefixed = verifier_without_prefix();
        assert!(check(&unprefixed, &sw_vector_headers(), SW_BODY, at(SW_TIMESTAMP)).is_ok());
    }

    #[test]
    fn signer_reproduces_the_published_vector() {
        let secret = crate::config::Secret::from_bytes(SW_SECRET.to_vec());
        let signer = crate::verify::Signer::from_secret(&secret).expect("a valid whsec secret");
        let timestamp = i64::try_from(SW_TIMESTAMP).expect("fits");
        assert_eq!(signer.sign(SW_ID, timestamp, SW_BODY), SW_SIGNATURE);
        // And what it signs, a standard-webhooks route accepts.
        let body = br#"{"other":1}"#;
        let signature = signer.sign("msg_2", timestamp, body);
        let verifier = verifier_for(VerifyKind::StandardWebhooks, &[SW_SECRET]);
        let headers = sw_headers("msg_2", &SW_TIMESTAMP.to_string(), &signature);
        assert!(check(&verifier, &headers, body, at(SW_TIMESTAMP)).is_ok());
        assert!(
            !format!("{signer:?}").contains("MfKQ9r8"),
            "Debug must not show the key"
        );
    }

    fn verifier_without_prefix() -> Verifier {
        verifier_for(
            VerifyKind::StandardWebhooks,
            &[&SW_SECRET["whsec_".len()..]],
        )
    }

    #[test]
    fn standard_webhooks_refuses_a_tampered_body_or_a_wrong_secret() {
        let verifier = verifier_for(VerifyKind::StandardWebhooks, &[SW_SECRET]);
        let tampered = br#"{"test": 2432232315}"#;
        let result = check(&verifier, &sw_vector_headers(), tampered, at(SW_TIMESTAMP));
        assert_eq!(result, Err(Refusal::BadSignature));
        // The signed content binds the id and the timestamp too.
        let other_id = sw_headers("msg_other", &SW_TIMESTAMP.to_string(), SW_SIGNATURE);
        let result = check(&verifier, &other_id, SW_BODY, at(SW_TIMESTAMP));
        assert_eq!(result, Err(Refusal::BadSignature));
        let other_time = sw_headers(SW_ID, &(SW_TIMESTAMP + 1).to_string(), SW_SIGNATURE);
        let result = check(&verifier, &other_time, SW_BODY, at(SW_TIMESTAMP));
        assert_eq!(result, Err(Refusal::BadSignature));

        let wrong = verifier_for(
            VerifyKind::StandardWebhooks,
            &[b"whsec_dGhlIHdyb25nIHNlY3JldA=="],
        );
        let result = check(&wrong, &sw_vector_headers(), SW_BODY, at(SW_TIMESTAMP));
        assert_eq!(result, Err(Refusal::BadSignature));
    }

    #[test]
    fn standard_webhooks_accepts_any_configured_secret_and_any_listed_signature() {
        let wrong = b"whsec_dGhlIHdyb25nIHNlY3JldA==".as_slice();
        for secrets in [[wrong, SW_SECRET], [SW_SECRET, wrong]] {
            let verifier = verifier_for(VerifyKind::StandardWebhooks, &secrets);
            let result = check(&verifier, &sw_vector_headers(), SW_BODY, at(SW_TIMESTAMP));
            assert!(result.is_ok(), "{result:?}");
        }
        let verifier = verifier_for(VerifyKind::StandardWebhooks, &[SW_SECRET]);
        // Other versions, junk and a wrong v1 around the right one.
        let listed = format!("v1a,AAAA v1,not-base64! v2,xyz v1,AAAAAAAA {SW_SIGNATURE}");
        let map = sw_headers(SW_ID, &SW_TIMESTAMP.to_string(), &listed);
        assert!(check(&verifier, &map, SW_BODY, at(SW_TIMESTAMP)).is_ok());
        // Unpadded base64 is the same signature.
        let unpadded = SW_SIGNATURE.trim_end_matches('=');
        let map = sw_headers(SW_ID, &SW_TIMESTAMP.to_string(), unpadded);
        assert!(check(&verifier, &map, SW_BODY, at(SW_TIMESTAMP)).is_ok());
    }

    #[test]
    fn standard_webhooks_refuses_old_and_future_timestamps_of_genuine_messages() {
        let verifier = verifier_for(VerifyKind::StandardWebhooks, &[SW_SECRET]);
        let map = sw_vector_headers();
        assert!(check(&verifier, &map, SW_BODY, at(SW_TIMESTAMP + 300)).is_ok());
        assert!(check(&verifier, &map, SW_BODY, at(SW_TIMESTAMP - 300)).is_ok());
        assert_eq!(
            check(&verifier, &map, SW_BODY, at(SW_TIMESTAMP + 301)),
            Err(Refusal::TimestampTooOld {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            check(&verifier, &map, SW_BODY, at(SW_TIMESTAMP - 301)),
            Err(Refusal::TimestampInFuture {
                ahead_seconds: 301,
                tolerance_seconds: 300
            })
        );
        // A forgery is a forgery whatever its timestamp says.
        let result = check(&verifier, &map, b"{}", at(SW_TIMESTAMP + 10_000));
        assert_eq!(result, Err(Refusal::BadSignature));
    }

    #[test]
    fn standard_webhooks_honours_the_route_tolerance() {
        let (_dir, mut route) = route(VerifyKind::StandardWebhooks, "/sw", &[SW_SECRET]);
        route.tolerance_seconds = 10;
        let verifier = build(&route);
        let map = sw_vector_headers();
        assert!(check(&verifier, &map, SW_BODY, at(SW_TIMESTAMP + 10)).is_ok());
        let result = check(&verifier, &map, SW_BODY, at(SW_TIMESTAMP + 11));
        assert_eq!(result.unwrap_err().reason(), "timestamp_too_old");
    }

    #[test]
    fn standard_webhooks_refuses_missing_and_malformed_headers() {
        let verifier = verifier_for(VerifyKind::StandardWebhooks, &[SW_SECRET]);
        let now = at(SW_TIMESTAMP);
        let timestamp = SW_TIMESTAMP.to_string();
        for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let mut map = sw_vector_headers();
            map.remove(missing);
            assert_eq!(
                check(&verifier, &map, SW_BODY, now),
                Err(Refusal::MissingHeader {
                    header: HeaderName::from_static(missing)
                })
            );
        }
        for (map, header) in [
            (
                sw_headers(SW_ID, "yesterday", SW_SIGNATURE),
                "webhook-timestamp",
            ),
            (
                sw_headers(SW_ID, "1614265330.5", SW_SIGNATURE),
                "webhook-timestamp",
            ),
            (
                sw_headers(SW_ID, &timestamp, "g0hM9SsE"),
                "webhook-signature",
            ),
            (
                sw_headers(SW_ID, &timestamp, "v2,g0hM9SsE"),
                "webhook-signature",
            ),
            (sw_headers("", &timestamp, SW_SIGNATURE), "webhook-id"),
        ] {
            match check(&verifier, &map, SW_BODY, now) {
                Err(Refusal::MalformedHeader { header: got, .. }) => assert_eq!(got, header),
                other => panic!("{header}: {other:?}"),
            }
        }
    }

    // --- Stripe ---

    const STRIPE_SECRET: &[u8] = b"whsec_test_secret";
    const STRIPE_BODY: &[u8] =
        br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"payment_intent.succeeded"}"#;
    const STRIPE_T: u64 = 1_700_000_000;

    /// A `v1` signature computed here, to build headers for any secret, time or body.
    fn stripe_v1(secret: &[u8], t: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn stripe_headers(value: &str) -> HeaderMap {
        headers(&[("stripe-signature", value)])
    }

    #[test]
    fn stripe_accepts_a_signature_computed_elsewhere() {
        // Computed with Python's hmac module, independently of this crate's HMAC code.
        let reference = "1ee8dd662a91c944c5fc90522bd8a6c2fa5ad2f05377bafef52d694497464c9a";
        assert_eq!(stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY), reference);
        let verifier = verifier_for(VerifyKind::Stripe, &[STRIPE_SECRET]);
        let map = stripe_headers(&format!("t={STRIPE_T},v1={reference}"));
        assert_eq!(
            check(&verifier, &map, STRIPE_BODY, at(STRIPE_T)),
            Ok(Verified {
                event_id: "evt_1NG8Du2eZvKYlo2CUI79vXWy".into(),
                kind: EventKind::Stripe
            })
        );
    }

    #[test]
    fn stripe_accepts_any_v1_among_several_and_ignores_v0() {
        let verifier = verifier_for(VerifyKind::Stripe, &[STRIPE_SECRET]);
        let good = stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY);
        let other = stripe_v1(b"whsec_other", STRIPE_T, STRIPE_BODY);
        for value in [
            format!("t={STRIPE_T},v1={other},v1={good},v0={other}"),
            format!("v0={other}, v1={good}, t={STRIPE_T}"),
            format!("t={STRIPE_T},v1=zz-not-hex,v1={}", good.to_uppercase()),
            format!("t={STRIPE_T},scheme=x,junk,v1={good}"),
        ] {
            let result = check(
                &verifier,
                &stripe_headers(&value),
                STRIPE_BODY,
                at(STRIPE_T),
            );
            assert!(result.is_ok(), "{value}: {result:?}");
        }
        // v0 alone is not a signature we check.
        let value = format!("t={STRIPE_T},v0={good}");
        let result = check(
            &verifier,
            &stripe_headers(&value),
            STRIPE_BODY,
            at(STRIPE_T),
        );
        assert_eq!(result.unwrap_err().reason(), "malformed_header");
    }

    #[test]
    fn stripe_refuses_tampering_wrong_secrets_and_accepts_rotation() {
        let good = stripe_headers(&format!(
            "t={STRIPE_T},v1={}",
            stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY)
        ));
        let verifier = verifier_for(VerifyKind::Stripe, &[STRIPE_SECRET]);
        let tampered = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWz","object":"event","type":"payment_intent.succeeded"}"#;
        let result = check(&verifier, &good, tampered, at(STRIPE_T));
        assert_eq!(result, Err(Refusal::BadSignature));
        // Signed at another time than the one claimed.
        let moved = stripe_headers(&format!(
            "t={},v1={}",
            STRIPE_T + 1,
            stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY)
        ));
        let result = check(&verifier, &moved, STRIPE_BODY, at(STRIPE_T));
        assert_eq!(result, Err(Refusal::BadSignature));

        let wrong = verifier_for(VerifyKind::Stripe, &[b"whsec_other"]);
        let result = check(&wrong, &good, STRIPE_BODY, at(STRIPE_T));
        assert_eq!(result, Err(Refusal::BadSignature));
        // The key is the secret as written: its base64 part alone is a different key.
        let stripped = verifier_for(VerifyKind::Stripe, &[b"test_secret"]);
        let result = check(&stripped, &good, STRIPE_BODY, at(STRIPE_T));
        assert_eq!(result, Err(Refusal::BadSignature));

        let rotated = verifier_for(VerifyKind::Stripe, &[b"whsec_new", STRIPE_SECRET]);
        assert!(check(&rotated, &good, STRIPE_BODY, at(STRIPE_T)).is_ok());
    }

    #[test]
    fn stripe_refuses_old_and_future_timestamps() {
        let verifier = verifier_for(VerifyKind::Stripe, &[STRIPE_SECRET]);
        let map = stripe_headers(&format!(
            "t={STRIPE_T},v1={}",
            stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY)
        ));
        assert!(check(&verifier, &map, STRIPE_BODY, at(STRIPE_T + 300)).is_ok());
        let old = check(&verifier, &map, STRIPE_BODY, at(STRIPE_T + 301));
        assert_eq!(old.unwrap_err().reason(), "timestamp_too_old");
        let future = check(&verifier, &map, STRIPE_BODY, at(STRIPE_T - 301));
        assert_eq!(future.unwrap_err().reason(), "timestamp_in_future");
    }

    #[test]
    fn stripe_refuses_missing_and_malformed_headers() {
        let verifier = verifier_for(VerifyKind::Stripe, &[STRIPE_SECRET]);
        let now = at(STRIPE_T);
        assert_eq!(
            check(&verifier, &HeaderMap::new(), STRIPE_BODY, now),
            Err(Refusal::MissingHeader {
                header: HeaderName::from_static("stripe-signature")
            })
        );
        let good = stripe_v1(STRIPE_SECRET, STRIPE_T, STRIPE_BODY);
        for (value, why) in [
            (format!("v1={good}"), "no t= timestamp"),
            (format!("t={STRIPE_T}"), "no v1 signature"),
            (
                format!("t={STRIPE_T},t={STRIPE_T},v1={good}"),
                "more than one t=",
            ),
            (
                format!("t=soon,v1={good}"),
                "the timestamp is not whole seconds since 1970",
            ),
            ("garbage".to_owned(), "no t= timestamp"),
        ] {
            assert_eq!(
                check(&verifier, &stripe_headers(&value), STRIPE_BODY, now),
                Err(Refusal::MalformedHeader {
                    header: HeaderName::from_static("stripe-signature"),
                    why
                }),
                "{value}"
            );
        }
    }

    #[test]
    fn stripe_takes_the_event_id_from_the_verified_body() {
        let verifier = verifier_for(VerifyKind::Stripe, &[STRIPE_SECRET]);
        for (body, reason) in [
            (&b"not json"[..], "bad_body"),
            (b"[1,2]", "bad_body"),
            (br#"{"object":"event"}"#, "no_event_id"),
            (br#"{"id":""}"#, "no_event_id"),
            (br#"{"id":7}"#, "no_event_id"),
        ] {
            let map = stripe_headers(&format!(
                "t={STRIPE_T},v1={}",
                stripe_v1(STRIPE_SECRET, STRIPE_T, body)
            ));
            let result = check(&verifier, &map, body, at(STRIPE_T));
            assert_eq!(
                result.unwrap_err().reason(),
                reason,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    // --- GitHub ---

    /// GitHub's published example ("Validating webhook deliveries").
    const GH_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const GH_DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

    fn gh_headers(signature: &str) -> HeaderMap {
        headers(&[
            ("x-hub-signature-256", signature),
            ("x-github-delivery", GH_DELIVERY),
        ])
    }

    #[test]
    fn github_accepts_the_published_example() {
        let verifier = verifier_for(VerifyKind::Github, &[GH_SECRET]);
        assert_eq!(
            check(&verifier, &gh_headers(GH_SIGNATURE), GH_BODY, at(0)),
            Ok(Verified {
                event_id: GH_BODY_SHA256.into(),
                kind: EventKind::Github
            })
        );
        let upper = format!("sha256={}", GH_SIGNATURE["sha256=".len()..].to_uppercase());
        assert!(check(&verifier, &gh_headers(&upper), GH_BODY, at(0)).is_ok());
    }

    /// SHA-256 of `GH_BODY`, from `printf 'Hello, World!' | sha256sum`.
    const GH_BODY_SHA256: &str = "dffd6021bb2bd5b0af676290809ec3a53191dd81c7f70a4b28688a362182986f";

    #[test]
    fn github_event_id_is_what_the_signature_covers_not_the_delivery_header() {
        let verifier = verifier_for(VerifyKind::Github, &[GH_SECRET]);
        let id_with = |delivery: &str| {
            let map = headers(&[
                ("x-hub-signature-256", GH_SIGNATURE),
                ("x-github-delivery", delivery),
            ]);
            check(&verifier, &map, GH_BODY, at(0)).map(|verified| verified.event_id)
        };
        // A captured delivery sent again under a fresh GUID is the same event.
        let original = id_with(GH_DELIVERY);
        assert_eq!(original, Ok(GH_BODY_SHA256.to_owned()));
        assert_eq!(id_with("11111111-2222-3333-4444-555555555555"), original);
        // A different (signed) body is a different event.
        let other = b"Hello, World?";
        let map = gh_headers(&github_signature(GH_SECRET, other));
        assert_eq!(
            check(&verifier, &map, other, at(0)).map(|verified| verified.event_id),
            Ok(hex::encode(Sha256::digest(other)))
        );
    }

    /// `sha256=HEX` of the HMAC-SHA256 of `body` under `secret`.
    fn github_signature(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn github_refuses_tampering_and_wrong_secrets_and_accepts_rotation() {
        let verifier = verifier_for(VerifyKind::Github, &[GH_SECRET]);
        let map = gh_headers(GH_SIGNATURE);
        let result = check(&verifier, &map, b"Hello, World?", at(0));
        assert_eq!(result, Err(Refusal::BadSignature));
        let wrong = verifier_for(VerifyKind::Github, &[b"It's a Secret to Nobody"]);
        assert_eq!(
            check(&wrong, &map, GH_BODY, at(0)),
            Err(Refusal::BadSignature)
        );
        let rotated = verifier_for(VerifyKind::Github, &[b"new secret", GH_SECRET]);
        assert!(check(&rotated, &map, GH_BODY, at(0)).is_ok());
        // A truncated signature is not a shorter MAC that matches.
        let short = &GH_SIGNATURE[..GH_SIGNATURE.len() - 2];
        let result = check(&verifier, &gh_headers(short), GH_BODY, at(0));
        assert_eq!(result, Err(Refusal::BadSignature));
    }

    #[test]
    fn github_refuses_missing_and_malformed_headers() {
        let verifier = verifier_for(VerifyKind::Github, &[GH_SECRET]);
        let signature = HeaderName::from_static("x-hub-signature-256");
        let only_delivery = headers(&[("x-github-delivery", GH_DELIVERY)]);
        assert_eq!(
            check(&verifier, &only_delivery, GH_BODY, at(0)),
            Err(Refusal::MissingHeader {
                header: signature.clone()
            })
        );
        let hex_only = &GH_SIGNATURE["sha256=".len()..];
        for (value, why) in [
            (hex_only.to_owned(), "does not start with sha256="),
            (format!("sha1={hex_only}"), "does not start with sha256="),
            ("sha256=xyz".to_owned(), "not hex"),
        ] {
            assert_eq!(
                check(&verifier, &gh_headers(&value), GH_BODY, at(0)),
                Err(Refusal::MalformedHeader {
                    header: signature.clone(),
                    why
                })
            );
        }
        // The delivery id is the event id: without it duplicates could not be recognised.
        let no_delivery = headers(&[("x-hub-signature-256", GH_SIGNATURE)]);
        assert_eq!(
            check(&verifier, &no_delivery, GH_BODY, at(0)),
            Err(Refusal::MissingHeader {
                header: HeaderName::from_static("x-github-delivery")
            })
        );
    }

    // --- generic HMAC-SHA256 ---

    const HMAC_KEY: &[u8] = b"generic-key";
    const HMAC_BODY: &[u8] = br#"{"id":"ord_77","amount":100}"#;
    /// HMAC-SHA256(HMAC_KEY, HMAC_BODY), computed with Python's hmac module.
    const HMAC_HEX: &str = "de6a19e255fd900afb94779dd94159c1f7c8cc20f8bb4eef51116c46d1500109";
    const HMAC_BASE64: &str = "3moZ4lX9kAr7lHed2UFZwffIzCD4u07vURFsRtFQAQk=";

    fn hmac_verifier(
        secrets: &[&[u8]],
        encoding: Option<Encoding>,
        prefix: Option<&str>,
    ) -> Verifier {
        let (_dir, mut route) = route(VerifyKind::HmacSha256, "/hooks/hmac", secrets);
        route.header = Some("X-Signature".into());
        route.encoding = encoding;
        route.prefix = prefix.map(str::to_owned);
        build(&route)
    }

    fn sig_headers(value: &str) -> HeaderMap {
        headers(&[("x-signature", value)])
    }

    #[test]
    fn hmac_accepts_hex_and_base64_with_and_without_prefix() {
        let expected = Ok(Verified {
            event_id: "ord_77".into(),
            kind: EventKind::Generic,
        });
        for (encoding, prefix, value) in [
            (None, None, HMAC_HEX.to_owned()),
            (Some(Encoding::Hex), None, HMAC_HEX.to_uppercase()),
            (
                Some(Encoding::Hex),
                Some("sha256="),
                format!("sha256={HMAC_HEX}"),
            ),
            (Some(Encoding::Base64), None, HMAC_BASE64.to_owned()),
            (
                Some(Encoding::Base64),
                Some("v1="),
                format!("v1={HMAC_BASE64}"),
            ),
        ] {
            let verifier = hmac_verifier(&[HMAC_KEY], encoding, prefix);
            let result = check(&verifier, &sig_headers(&value), HMAC_BODY, at(0));
            assert_eq!(result, expected, "{encoding:?} {prefix:?}");
        }
    }

    #[test]
    fn hmac_event_id_falls_back_to_the_body_hash() {
        let body = b"amount=100&ref=77";
        let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_KEY).unwrap();
        mac.update(body);
        let signature = hex::encode(mac.finalize().into_bytes());
        let verifier = hmac_verifier(&[HMAC_KEY], None, None);
        let verified = check(&verifier, &sig_headers(&signature), body, at(0)).unwrap();
        assert_eq!(verified.event_id, hex::encode(Sha256::digest(body)));
    }

    #[test]
    fn hmac_refuses_tampering_wrong_secrets_and_accepts_rotation() {
        let verifier = hmac_verifier(&[HMAC_KEY], None, None);
        let map = sig_headers(HMAC_HEX);
        let result = check(&verifier, &map, br#"{"id":"ord_77","amount":900}"#, at(0));
        assert_eq!(result, Err(Refusal::BadSignature));
        let wrong = hmac_verifier(&[b"other-key"], None, None);
        assert_eq!(
            check(&wrong, &map, HMAC_BODY, at(0)),
            Err(Refusal::BadSignature)
        );
        let rotated = hmac_verifier(&[b"other-key", HMAC_KEY], None, None);
        assert!(check(&rotated, &map, HMAC_BODY, at(0)).is_ok());
        // The right MAC in the wrong encoding is not accepted.
        let base64 = hmac_verifier(&[HMAC_KEY], Some(Encoding::Base64), None);
        assert!(check(&base64, &map, HMAC_BODY, at(0)).is_err());
    }

    #[test]
    fn hmac_refuses_missing_and_malformed_headers() {
        let header = HeaderName::from_static("x-signature");
        let verifier = hmac_verifier(&[HMAC_KEY], None, Some("sha256="));
        assert_eq!(
            check(&verifier, &HeaderMap::new(), HMAC_BODY, at(0)),
            Err(Refusal::MissingHeader {
                header: header.clone()
            })
        );
        for (value, why) in [
            (
                HMAC_HEX.to_owned(),
                "does not start with the configured prefix",
            ),
            (
                format!("SHA256={HMAC_HEX}"),
                "does not start with the configured prefix",
            ),
            ("sha256=not-hex".to_owned(), "not hex"),
        ] {
            assert_eq!(
                check(&verifier, &sig_headers(&value), HMAC_BODY, at(0)),
                Err(Refusal::MalformedHeader {
                    header: header.clone(),
                    why
                })
            );
        }
        let base64 = hmac_verifier(&[HMAC_KEY], Some(Encoding::Base64), None);
        assert_eq!(
            check(&base64, &sig_headers("***"), HMAC_BODY, at(0)),
            Err(Refusal::MalformedHeader {
                header,
                why: "not base64"
            })
        );
    }

    // --- shared secret ---

    fn shared_verifier(secrets: &[&[u8]], prefix: Option<&str>) -> Verifier {
        let (_dir, mut route) = route(VerifyKind::SharedSecret, "/hooks/shared", secrets);
        route.header = Some("Authorization".into());
        route.prefix = prefix.map(str::to_owned);
        build(&route)
    }

    fn auth(value: &str) -> HeaderMap {
        headers(&[("authorization", value)])
    }

    #[test]
    fn shared_secret_accepts_the_secret_with_its_prefix_and_any_rotated_secret() {
        let verifier = shared_verifier(&[b"s3cret-value"], Some("Bearer "));
        let verified = check(&verifier, &auth("Bearer s3cret-value"), HMAC_BODY, at(0));
        assert_eq!(
            verified,
            Ok(Verified {
                event_id: "ord_77".into(),
                kind: EventKind::Generic
            })
        );
        let plain = shared_verifier(&[b"old", b"s3cret-value"], None);
        assert!(check(&plain, &auth("s3cret-value"), b"x", at(0)).is_ok());
        assert!(check(&plain, &auth("old"), b"x", at(0)).is_ok());
    }

    #[test]
    fn shared_secret_refuses_wrong_secrets_of_any_length() {
        let header = HeaderName::from_static("authorization");
        let verifier = shared_verifier(&[b"s3cret-value"], None);
        for wrong in ["s3cret-valuE", "s3cret", "s3cret-value-and-more", "x"] {
            assert_eq!(
                check(&verifier, &auth(wrong), b"x", at(0)),
                Err(Refusal::BadSecret {
                    header: header.clone()
                }),
                "{wrong}"
            );
        }
        assert_eq!(
            check(&verifier, &HeaderMap::new(), b"x", at(0)),
            Err(Refusal::MissingHeader {
                header: header.clone()
            })
        );
        let prefixed = shared_verifier(&[b"s3cret-value"], Some("Bearer "));
        assert_eq!(
            check(&prefixed, &auth("s3cret-value"), b"x", at(0))
                .unwrap_err()
                .reason(),
            "malformed_header"
        );
    }

    #[test]
    fn headers_are_found_whatever_their_case_in_the_config() {
        let (_dir, mut route) = route(VerifyKind::SharedSecret, "/h", &[b"tok"]);
        route.header = Some("X-Api-KEY".into());
        let verifier = build(&route);
        let map = headers(&[("x-api-key", "tok")]);
        assert!(check(&verifier, &map, b"x", at(0)).is_ok());
    }

    // --- the parsers ---

    #[test]
    fn stripe_headers_split_into_timestamp_and_decodable_v1_signatures() {
        assert_eq!(
            parse_stripe("t=12,v1=00ff,v0=11,v1=zz,v1=AB"),
            Ok(StripeHeader {
                timestamp: "12",
                signatures: vec![vec![0, 255], vec![171]],
            })
        );
    }

    #[test]
    fn standard_webhooks_headers_yield_decodable_v1_signatures() {
        assert_eq!(
            standard_webhooks_signatures("v1,AAE= v1a,AAE= v1,!! v2,AAE= v1,/w"),
            Some(vec![vec![0, 1], vec![255]])
        );
        assert_eq!(standard_webhooks_signatures("v1a,AAE= v2,AAE="), None);
    }
}
