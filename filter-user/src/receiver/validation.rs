//! M-Pesa C2B validation pass-through: Daraja asks whether to accept a payment and waits about
//! 8 seconds; hookwall asks the application (a signed POST, like a delivery) within the route's
//! `validation.timeout` and answers Daraja with the application's decision, or with the route's
//! `validation.on_failure` answer when the application is slow, down or answers nonsense.
//!
//! A validation is a question, not an event: it is answered synchronously, audited and counted,
//! but not queued for delivery (the confirmation that follows an accepted payment is).

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;

use crate::{
    config::{OnFailure, ValidationConfig},
    verify::{C2bRejection, Signer, mpesa_accept_body, mpesa_reject_body, signed_post},
};

/// Largest answer read from the application: a Daraja answer is about 50 bytes.
const ANSWER_LIMIT: usize = 16 * 1024;

/// Who decided a validation's answer: the `result` label of `hookwall_validation_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The application accepted the payment.
    AppAccept,
    /// The application rejected it, with this code.
    AppReject(C2bRejection),
    /// The application did not answer usefully in time: the route's `on_failure` answer.
    Fallback(OnFailure),
}

impl Decision {
    /// The metrics label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Decision::AppAccept => "app_accept",
            Decision::AppReject(_) => "app_reject",
            Decision::Fallback(_) => "fallback",
        }
    }

    /// The JSON body Daraja gets.
    #[must_use]
    pub fn answer(self) -> &'static str {
        match self {
            Decision::AppAccept | Decision::Fallback(OnFailure::Accept) => mpesa_accept_body(),
            Decision::AppReject(code) => mpesa_reject_body(code),
            // Daraja's "other error": the payment is refused without blaming the payer's input.
            Decision::Fallback(OnFailure::Reject) => mpesa_reject_body(C2bRejection::OtherError),
        }
    }
}

/// Asks the application about C2B validations on one route.
pub struct Validator {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    on_failure: OnFailure,
    signer: Arc<Signer>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            // Without the query, which may carry a key.
            .field("url", &crate::config::without_query(self.url.as_str()))
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// A validator for a route's `validation` table, signing with `signer` (`delivery.secret`).
    ///
    /// # Errors
    /// The URL does not parse or the HTTP client cannot be built.
    pub fn new(
        config: &ValidationConfig,
        signer: Arc<Signer>,
        client: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&config.url).context("parsing validation.url")?;
        Ok(Self {
            client,
            url,
            timeout: config.timeout,
            on_failure: config.on_failure,
            signer,
        })
    }

    /// Forwards the validation request `body` (Daraja's JSON, id `trans_id`) and decides the
    /// answer. Returns within the route's timeout (plus a few milliseconds); the reason for a
    /// fallback is logged.
    pub async fn ask(&self, trans_id: &str, body: Bytes) -> Decision {
        let request = signed_post(
            &self.client,
            self.url.clone(),
            &self.signer,
            &format!("validation-{trans_id}"),
            "application/json",
            body,
        )
        .header("hookwall-kind", "mpesa_c2b_validation");
        // One deadline for the whole exchange (connect, answer, body): dropping the request at
        // it cancels it.
        let answered = tokio::time::timeout(self.timeout, async {
            let response = request
                .send()
                .await
                .map_err(|_| "could not reach the application".to_owned())?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("the application answered HTTP {status}"));
            }
            let mut response = response;
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|_| "the application's answer was cut off".to_owned())?
            {
                if bytes.len() + chunk.len() > ANSWER_LIMIT {
                    return Err(format!(
                        "the application's answer exceeds {ANSWER_LIMIT} bytes"
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            parse_answer(&bytes)
        })
        .await;
        let why = match answered {
            Ok(Ok(decision)) => return decision,
            Ok(Err(why)) => why,
            Err(_) => "no answer in time".to_owned(),
        };
        tracing::warn!(
            trans_id,
            timeout_ms = self.timeout.as_millis(),
            on_failure = ?self.on_failure,
            "C2B validation: {why}; answering Daraja with validation.on_failure"
        );
        Decision::Fallback(self.on_failure)
    }
}

/// Reads the application's answer: Daraja's own format, `{"ResultCode": 0 | "0"}` to accept or
/// `{"ResultCode": "C2B00011".."C2B00016"}` to reject.
///
/// # Errors
/// Why the answer is not one of those.
pub fn parse_answer(body: &[u8]) -> Result<Decision, String> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "the application's answer is not JSON".to_owned())?;
    let code = json
        .get("ResultCode")
        .ok_or_else(|| "the application's answer has no ResultCode".to_owned())?;
    let accept = match code {
        serde_json::Value::Number(n) => n.as_u64() == Some(0),
        serde_json::Value::String(s) if s == "0" => true,
        serde_json::Value::String(s) => {
            return C2bRejection::from_code(s)
                .map(Decision::AppReject)
                .ok_or_else(|| format!("the application's ResultCode {s:?} is not C2B00011..16"));
        }
        _ => false,
    };
    if accept {
        Ok(Decision::AppAccept)
    } else {
        Err(format!(
            "the application's ResultCode {code} is not 0 or C2B00011..16"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_daraja_answers() {
        assert_eq!(
            parse_answer(br#"{"ResultCode":0,"ResultDesc":"Accepted"}"#),
            Ok(Decision::AppAccept)
        );
        assert_eq!(
            parse_answer(br#"{"ResultCode":"0"}"#),
            Ok(Decision::AppAccept)
        );
        for rejection in C2bRejection::ALL {
            let body = format!(
                r#"{{"ResultCode":"{}","ResultDesc":"Rejected"}}"#,
                rejection.code()
            );
            assert_eq!(
                parse_answer(body.as_bytes()),
                Ok(Decision::AppReject(rejection))
            );
        }
        for bad in [
            &br#"{"ResultCode":1}"#[..],
            br#"{"ResultCode":"C2B00010"}"#,
            br#"{"ResultDesc":"Accepted"}"#,
            b"accepted",
            br#"{"ResultCode":null}"#,
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn debug_output_leaves_out_the_urls_query() {
        let config = ValidationConfig {
            url: "https://app.example:8443/validate?key=s3cret".to_owned(),
            timeout: Duration::from_secs(1),
            on_failure: OnFailure::Accept,
        };
        let secret =
            crate::config::Secret::from_bytes(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec());
        let signer = Arc::new(Signer::from_secret(&secret).expect("a whsec secret"));
        let validator = Validator::new(
            &config,
            signer,
            crate::delivery::http_client().expect("a client"),
        )
        .expect("a validator");
        let debug = format!("{validator:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(
            debug.contains("https://app.example:8443/validate?…"),
            "{debug}"
        );
    }

    #[test]
    fn fallback_answers_follow_on_failure() {
        assert_eq!(
            Decision::Fallback(OnFailure::Accept).answer(),
            mpesa_accept_body()
        );
        assert_eq!(
            Decision::Fallback(OnFailure::Reject).answer(),
            r#"{"ResultCode":"C2B00016","ResultDesc":"Rejected"}"#
        );
        assert_eq!(
            Decision::AppReject(C2bRejection::InvalidAmount).answer(),
            r#"{"ResultCode":"C2B00013","ResultDesc":"Rejected"}"#
        );
    }
}
