//! Signing what hookwall itself sends (deliveries to the application, M-Pesa validation
//! forwards) the Standard Webhooks way, so the application checks the last hop with any Standard
//! Webhooks library: the mirror image of the `standard-webhooks` route kind.

use std::time::SystemTime;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit as _, Mac as _};
use reqwest::header::HeaderValue;
use sha2::Sha256;

use super::{Key, signed::BASE64};
use crate::{
    config::{DeliveryConfig, Secret},
    store::unix_ms,
};

/// Signs what hookwall itself sends (deliveries to the application, validation forwards) the
/// Standard Webhooks way, so the application verifies the last hop with any Standard Webhooks
/// library. The key is a `whsec_` secret, decoded exactly as a `standard-webhooks` route's.
#[derive(Debug)]
pub struct Signer(Key);

impl Signer {
    /// Decodes a `whsec_...` secret (the prefix is optional; the rest must be base64).
    ///
    /// # Errors
    /// What is wrong with the secret (never the secret itself).
    pub fn from_secret(secret: &Secret) -> Result<Signer, &'static str> {
        Key::from_whsec(secret).map(Signer)
    }

    /// The `webhook-signature` value for message `id` sent at `timestamp` (unix seconds):
    /// `v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`.
    #[must_use]
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.0.expose()).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// The signer of `delivery.secret`, if set.
///
/// # Errors
/// The secret cannot be read, or is not a `whsec_` secret.
pub fn delivery_signer(config: &DeliveryConfig) -> anyhow::Result<Option<Signer>> {
    let Some(secret) = &config.secret else {
        return Ok(None);
    };
    let bytes = secret
        .resolve()
        .with_context(|| format!("reading delivery.secret ({secret})"))?;
    let signer = Signer::from_secret(&bytes).map_err(|why| {
        anyhow::anyhow!(
            "delivery.secret ({secret}) is not a Standard Webhooks secret: {why}; generate one \
             with e.g. `echo whsec_$(head -c 32 /dev/urandom | base64)`"
        )
    })?;
    Ok(Some(signer))
}

/// A POST of `body` to `url` with the Standard Webhooks headers for message `id`, signed now.
pub fn signed_post(
    client: &reqwest::Client,
    url: reqwest::Url,
    signer: &Signer,
    id: &str,
    content_type: &str,
    body: Bytes,
) -> reqwest::RequestBuilder {
    let timestamp = unix_ms(SystemTime::now()) / 1000;
    let signature = signer.sign(id, timestamp, &body);
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, header_value(content_type))
        .header("webhook-id", header_value(id))
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", signature)
        .body(body)
}

/// A header value from stored text; ids and routes are visible ASCII in practice (the verifiers
/// read them from headers or JSON), and anything else is percent-free hex rather than an error.
pub(crate) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        HeaderValue::from_str(&hex::encode(text.as_bytes()))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::{
        super::{
            EventKind, Refusal, Verified,
            testing::{check, verifier_for},
        },
        *,
    };
    use crate::config::VerifyKind;

    /// The Standard Webhooks specification's test secret.
    const SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_signed_post_passes_a_standard_webhooks_route_with_the_same_secret_only() {
        let signer =
            Signer::from_secret(&Secret::from_bytes(SECRET.to_vec())).expect("a whsec secret");
        let client = crate::delivery::http_client().expect("a client");
        let url = reqwest::Url::parse("https://app.example/hooks?key=k").expect("a URL");
        let body = Bytes::from_static(br#"{"id":"evt_1"}"#);
        let request = signed_post(
            &client,
            url,
            &signer,
            "msg_1",
            "application/json",
            body.clone(),
        )
        .build()
        .expect("a request");
        assert_eq!(request.method(), reqwest::Method::POST);
        let headers = request.headers();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["webhook-id"], "msg_1");
        assert_eq!(
            request.body().and_then(reqwest::Body::as_bytes),
            Some(&body[..])
        );

        let now = SystemTime::now();
        let verifier = verifier_for(VerifyKind::StandardWebhooks, &[SECRET]);
        assert_eq!(
            check(&verifier, headers, &body, now),
            Ok(Verified {
                event_id: "msg_1".to_owned(),
                kind: EventKind::StandardWebhooks,
            })
        );
        let other = verifier_for(VerifyKind::StandardWebhooks, &[b"whsec_c2VjcmV0"]);
        assert_eq!(
            check(&other, headers, &body, now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn header_values_that_are_not_visible_ascii_are_sent_as_hex() {
        assert_eq!(header_value("evt_1"), "evt_1");
        assert_eq!(header_value("é\n"), "c3a90a");
    }
}
