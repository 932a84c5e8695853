//! M-Pesa Daraja callbacks: the path token, the shapes of the bodies, and the answers Daraja
//! expects.
//!
//! Daraja signs nothing. What authenticates a callback is its source address (checked by the
//! server against the allowlist, not here) and the unguessable token in the URL registered with
//! Daraja (`{path}/{token}`), checked here. The body must then be one of the callbacks Daraja
//! sends, and its id is what duplicates are recognised by.

use serde_json::{Map, Value};
use subtle::Choice;

use super::{EventKind, Refusal, Request, SecretDigest, Verified};

/// Which of Daraja's two C2B URLs a C2B callback came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum C2bStage {
    /// The ValidationURL: Daraja asks whether to accept the payment.
    Validation,
    /// The ConfirmationURL: the payment went through.
    Confirmation,
}

/// What the route's path says about which C2B URL it serves, if it says so unambiguously.
///
/// Validation and confirmation bodies have the same fields, and Daraja registers the two URLs
/// separately, so the route's name is the surest hint; paths like `/mpesa/c2b/validation` and
/// `/mpesa/c2b/confirmation` are what Daraja's documentation and most integrations use.
pub(super) fn stage_from_path(path: &str) -> Option<C2bStage> {
    let path = path.to_ascii_lowercase();
    match (path.contains("validat"), path.contains("confirm")) {
        (true, false) => Some(C2bStage::Validation),
        (false, true) => Some(C2bStage::Confirmation),
        _ => None,
    }
}

/// Checks the path token, then reads the body as a Daraja callback.
pub(super) fn verify(
    tokens: &[SecretDigest],
    stage: Option<C2bStage>,
    req: &Request<'_>,
) -> Result<Verified, Refusal> {
    check_token(tokens, req.path_token)?;
    classify(req.body, stage)
}

/// Compares the path token with every one of the route's tokens (any passes, for rotation), in
/// constant time and by digest (see [`SecretDigest`]): every candidate is compared, with no
/// early exit, so the time taken says neither which token matched nor whether one did.
pub(super) fn check_token(expected: &[SecretDigest], given: Option<&str>) -> Result<(), Refusal> {
    let given = given
        .filter(|token| !token.is_empty())
        .ok_or(Refusal::MissingToken)?;
    let matched = expected.iter().fold(Choice::from(0), |acc, token| {
        acc | token.matches(given.as_bytes())
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(Refusal::BadToken)
    }
}

/// Why `token` is too short to be unguessable, if it is: a path token is the only secret a
/// Daraja callback carries, so it must hold at least 128 bits. Measured by length for the
/// alphabet the token is written in, which is all a string can tell: at least 39 digits
/// (decimal), else 32 hex digits (`openssl rand -hex 16`), else 22 characters (base64url: 22 x 6
/// bits). A long token is not thereby random; generate it, never type it.
pub(super) fn token_weakness(token: &[u8]) -> Option<String> {
    let (alphabet, needed) = if token.iter().all(u8::is_ascii_digit) {
        ("decimal digits", 39)
    } else if token.iter().all(u8::is_ascii_hexdigit) {
        ("hex digits", 32)
    } else {
        ("characters", 22)
    };
    (token.len() < needed).then(|| {
        format!(
            "it is {} {alphabet}, fewer than the {needed} that hold 128 bits",
            token.len()
        )
    })
}

/// Recognises the callback by its top-level key: `Body` (STK Push result), `Result` (result and
/// timeout callbacks) or the C2B fields.
fn classify(body: &[u8], stage: Option<C2bStage>) -> Result<Verified, Refusal> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| Refusal::BadBody { why: "not JSON" })?;
    let callback = value.as_object().ok_or(Refusal::BadBody {
        why: "not a JSON object",
    })?;
    if let Some(body) = callback.get("Body") {
        stk_result(body)
    } else if let Some(result) = callback.get("Result") {
        result_callback(result)
    } else if callback.contains_key("TransID") || callback.contains_key("TransactionType") {
        c2b(callback, stage)
    } else {
        Err(Refusal::BadBody {
            why: "neither a C2B, an STK Push result nor a result callback",
        })
    }
}

/// `{"Body":{"stkCallback":{"CheckoutRequestID":..,"ResultCode":..,...}}}`.
fn stk_result(body: &Value) -> Result<Verified, Refusal> {
    let callback = body
        .get("stkCallback")
        .and_then(Value::as_object)
        .ok_or(Refusal::BadBody {
            why: "an STK Push result without Body.stkCallback",
        })?;
    present(
        callback,
        "ResultCode",
        "an STK Push result without ResultCode",
    )?;
    Ok(Verified {
        event_id: id(
            callback,
            "CheckoutRequestID",
            "an STK Push result without CheckoutRequestID",
        )?,
        kind: EventKind::MpesaStkResult,
    })
}

/// `{"Result":{"ConversationID":..,"ResultCode":..,...}}` (B2C, reversal, account balance,
/// transaction status and their timeouts).
fn result_callback(result: &Value) -> Result<Verified, Refusal> {
    let result = result.as_object().ok_or(Refusal::BadBody {
        why: "a result callback whose Result is not an object",
    })?;
    present(result, "ResultCode", "a result callback without ResultCode")?;
    Ok(Verified {
        event_id: id(
            result,
            "ConversationID",
            "a result callback without ConversationID",
        )?,
        kind: EventKind::MpesaResult,
    })
}

/// A C2B validation or confirmation. `BillRefNumber` and the payer's details are not required:
/// Buy Goods (till) payments and newer API versions leave them out or empty, and refusing a real
/// payment's confirmation would lose it.
fn c2b(callback: &Map<String, Value>, stage: Option<C2bStage>) -> Result<Verified, Refusal> {
    present(
        callback,
        "TransactionType",
        "a C2B callback without TransactionType",
    )?;
    present(
        callback,
        "TransAmount",
        "a C2B callback without TransAmount",
    )?;
    present(
        callback,
        "BusinessShortCode",
        "a C2B callback without BusinessShortCode",
    )?;
    let event_id = id(callback, "TransID", "a C2B callback without TransID")?;
    let kind = match stage.unwrap_or_else(|| stage_from_body(callback)) {
        C2bStage::Validation => EventKind::MpesaC2bValidation,
        C2bStage::Confirmation => EventKind::MpesaC2bConfirmation,
    };
    Ok(Verified { event_id, kind })
}

/// For a route whose path does not say: Daraja fills `OrgAccountBalance` only once the payment
/// went through, so an empty or absent one means a validation request.
fn stage_from_body(callback: &Map<String, Value>) -> C2bStage {
    match callback.get("OrgAccountBalance") {
        Some(Value::String(balance)) if !balance.is_empty() => C2bStage::Confirmation,
        Some(Value::Number(_)) => C2bStage::Confirmation,
        _ => C2bStage::Validation,
    }
}

/// Refuses the body unless `key` is present and not null.
fn present(object: &Map<String, Value>, key: &str, why: &'static str) -> Result<(), Refusal> {
    match object.get(key) {
        Some(value) if !value.is_null() => Ok(()),
        _ => Err(Refusal::BadBody { why }),
    }
}

/// The event id at `key`: a non-empty string.
fn id(object: &Map<String, Value>, key: &str, why: &'static str) -> Result<String, Refusal> {
    match object.get(key) {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err(Refusal::NoEventId { why }),
    }
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// The answer Daraja expects to every callback it should consider delivered, and to a C2B
/// validation that accepts the payment.
pub fn mpesa_accept_body() -> &'static str {
    r#"{"ResultCode":0,"ResultDesc":"Accepted"}"#
}

/// Why a C2B validation refuses a payment: Daraja's result codes C2B00011 to C2B00016.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum C2bRejection {
    /// C2B00011: invalid MSISDN (payer's phone number).
    InvalidMsisdn,
    /// C2B00012: invalid account number (`BillRefNumber`).
    InvalidAccountNumber,
    /// C2B00013: invalid amount.
    InvalidAmount,
    /// C2B00014: invalid KYC details.
    InvalidKycDetails,
    /// C2B00015: invalid short code.
    InvalidShortcode,
    /// C2B00016: any other reason.
    OtherError,
}

impl C2bRejection {
    /// Every rejection, in code order.
    pub const ALL: [C2bRejection; 6] = [
        C2bRejection::InvalidMsisdn,
        C2bRejection::InvalidAccountNumber,
        C2bRejection::InvalidAmount,
        C2bRejection::InvalidKycDetails,
        C2bRejection::InvalidShortcode,
        C2bRejection::OtherError,
    ];

    /// Daraja's result code, `C2B00011` to `C2B00016`.
    pub fn code(self) -> &'static str {
        match self {
            C2bRejection::InvalidMsisdn => "C2B00011",
            C2bRejection::InvalidAccountNumber => "C2B00012",
            C2bRejection::InvalidAmount => "C2B00013",
            C2bRejection::InvalidKycDetails => "C2B00014",
            C2bRejection::InvalidShortcode => "C2B00015",
            C2bRejection::OtherError => "C2B00016",
        }
    }

    /// The rejection with Daraja's result `code`, if it is one.
    pub fn from_code(code: &str) -> Option<C2bRejection> {
        C2bRejection::ALL
            .into_iter()
            .find(|rejection| rejection.code() == code)
    }
}

/// The answer to a C2B validation that refuses the payment, e.g.
/// `{"ResultCode":"C2B00011","ResultDesc":"Rejected"}`.
pub fn mpesa_reject_body(rejection: C2bRejection) -> &'static str {
    // Literal strings rather than formatting: the answer to a validation is on Daraja's 8 s clock.
    match rejection {
        C2bRejection::InvalidMsisdn => r#"{"ResultCode":"C2B00011","ResultDesc":"Rejected"}"#,
        C2bRejection::InvalidAccountNumber => {
            r#"{"ResultCode":"C2B00012","ResultDesc":"Rejected"}"#
        }
        C2bRejection::InvalidAmount => r#"{"ResultCode":"C2B00013","ResultDesc":"Rejected"}"#,
        C2bRejection::InvalidKycDetails => r#"{"ResultCode":"C2B00014","ResultDesc":"Rejected"}"#,
        C2bRejection::InvalidShortcode => r#"{"ResultCode":"C2B00015","ResultDesc":"Rejected"}"#,
        C2bRejection::OtherError => r#"{"ResultCode":"C2B00016","ResultDesc":"Rejected"}"#,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::{super::testing::*, *};
    use crate::{config::VerifyKind, verify::Verifier};

    /// Daraja's sample bodies, shared with the end-to-end tests (`tests/fixtures/daraja`).
    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/daraja/",
                $name
            ))
        };
    }

    const C2B_VALIDATION: &[u8] = fixture!("c2b_validation.json");
    const C2B_CONFIRMATION: &[u8] = fixture!("c2b_confirmation.json");
    const STK_SUCCESS: &[u8] = fixture!("stk_success.json");
    const STK_CANCELLED: &[u8] = fixture!("stk_cancelled.json");
    const B2C_RESULT: &[u8] = fixture!("b2c_result.json");

    const TOKEN: &str = "k9Qz-2vX7pL4mN8rT1wY6bH3";

    /// A route's verifier whose tokens are `tokens`, written as `tokens = [...]`.
    fn mpesa_with_tokens(tokens: &[&str]) -> Verifier {
        let (_dir, mut route) = route(VerifyKind::Mpesa, "/mpesa/c2b/confirmation", &[]);
        let dir = tempfile::tempdir().expect("temporary directory");
        for (index, token) in tokens.iter().enumerate() {
            let file = dir.path().join(format!("token{index}"));
            std::fs::write(&file, token).expect("write token file");
            route.tokens.push(crate::config::SecretRef::File(file));
        }
        build(&route)
    }

    #[test]
    fn every_listed_token_passes_so_that_a_token_can_be_rotated() {
        const NEW: &str = "3f9c1a7e5b2d4c6f8a0b1c2d3e4f5a6b";
        let verifier = mpesa_with_tokens(&[NEW, TOKEN]);
        for token in [NEW, TOKEN] {
            assert_eq!(
                call(&verifier, Some(token), C2B_CONFIRMATION).map(|v| v.event_id),
                Ok("RKTQDM7W6S".to_owned()),
                "{token}"
            );
        }
        for wrong in [
            "3f9c1a7e5b2d4c6f8a0b1c2d3e4f5a6c",
            "k9Qz-2vX7pL4mN8rT1wY6bH4",
            "x",
        ] {
            assert_eq!(
                call(&verifier, Some(wrong), C2B_CONFIRMATION),
                Err(Refusal::BadToken),
                "{wrong}"
            );
        }
        assert_eq!(
            call(&verifier, None, C2B_CONFIRMATION),
            Err(Refusal::MissingToken)
        );
    }

    #[test]
    fn check_token_compares_every_candidate() {
        // The match is found whatever its place in the list: the fold has no early exit.
        let digests: Vec<SecretDigest> = ["a", "b", "c"]
            .iter()
            .map(|t| SecretDigest::of(t.as_bytes()))
            .collect();
        for given in ["a", "b", "c"] {
            assert_eq!(check_token(&digests, Some(given)), Ok(()), "{given}");
        }
        assert_eq!(check_token(&digests, Some("d")), Err(Refusal::BadToken));
        assert_eq!(check_token(&[], Some("a")), Err(Refusal::BadToken));
    }

    #[test]
    fn a_weak_token_stops_the_verifier_with_how_to_make_one() {
        let weak = "t0k3n-for-tests";
        let (_dir, single) = route(VerifyKind::Mpesa, "/mpesa/c2b", &[weak.as_bytes()]);
        let err = crate::verify::Verifier::from_route(&single).unwrap_err();
        let shown = err.to_string();
        for needle in [
            "route /mpesa/c2b: token (file ",
            "is too short to be unguessable: it is 15 characters, fewer than the 22",
            "`openssl rand -hex 16`",
        ] {
            assert!(shown.contains(needle), "{needle} in {shown}");
        }
        assert!(!shown.contains(weak), "{shown}");
        // In a list, the weak one is named by its place.
        let (_dir, mut route) = route(VerifyKind::Mpesa, "/mpesa/c2b", &[]);
        let dir = tempfile::tempdir().expect("temporary directory");
        for (index, token) in [TOKEN, "abc"].iter().enumerate() {
            let file = dir.path().join(format!("token{index}"));
            std::fs::write(&file, token).expect("write token file");
            route.tokens.push(crate::config::SecretRef::File(file));
        }
        let shown = crate::verify::Verifier::from_route(&route)
            .unwrap_err()
            .to_string();
        assert!(shown.contains("tokens[1] (file "), "{shown}");
    }

    #[test]
    fn tokens_under_128_bits_are_weak() {
        for (token, weak) in [
            ("3f9c1a7e5b2d4c6f8a0b1c2d3e4f5a6b", false),
            ("3f9c1a7e5b2d4c6f8a0b1c2d3e4f5a6", true),
            ("k9Qz-2vX7pL4mN8rT1wY6b", false),
            ("k9Qz-2vX7pL4mN8rT1wY6", true),
            ("123456789012345678901234567890123456789", false),
            ("12345678901234567890123456789012345678", true),
            ("t0k3n-for-tests", true),
            ("", true),
        ] {
            assert_eq!(
                token_weakness(token.as_bytes()).is_some(),
                weak,
                "{token:?}"
            );
        }
        assert_eq!(
            token_weakness(b"3f9c").as_deref(),
            Some("it is 4 hex digits, fewer than the 32 that hold 128 bits")
        );
    }

    fn mpesa_at(path: &str) -> Verifier {
        let (_dir, route) = route(VerifyKind::Mpesa, path, &[TOKEN.as_bytes()]);
        build(&route)
    }

    fn call(verifier: &Verifier, token: Option<&str>, body: &[u8]) -> Result<Verified, Refusal> {
        verifier.verify(&Request {
            path_token: token,
            headers: &HeaderMap::new(),
            body,
            now: at(0),
        })
    }

    fn verified(event_id: &str, kind: EventKind) -> Result<Verified, Refusal> {
        Ok(Verified {
            event_id: event_id.into(),
            kind,
        })
    }

    #[test]
    fn daraja_samples_are_recognised_with_their_ids() {
        let verifier = mpesa_at("/mpesa/callback");
        let token = Some(TOKEN);
        assert_eq!(
            call(&verifier, token, STK_SUCCESS),
            verified("ws_CO_191220191020363925", EventKind::MpesaStkResult)
        );
        assert_eq!(
            call(&verifier, token, STK_CANCELLED),
            verified("ws_CO_191220191020363926", EventKind::MpesaStkResult)
        );
        assert_eq!(
            call(&verifier, token, B2C_RESULT),
            verified("AG_20191219_00004e48cf7e3533f581", EventKind::MpesaResult)
        );
        // The path says nothing here, so the body decides: no balance yet means validation.
        assert_eq!(
            call(&verifier, token, C2B_VALIDATION),
            verified("RKTQDM7W6T", EventKind::MpesaC2bValidation)
        );
        assert_eq!(
            call(&verifier, token, C2B_CONFIRMATION),
            verified("RKTQDM7W6S", EventKind::MpesaC2bConfirmation)
        );
    }

    #[test]
    fn the_route_path_names_the_c2b_stage_when_it_can() {
        let validation = mpesa_at("/mpesa/c2b/validation");
        let confirmation = mpesa_at("/mpesa/c2b/confirmation");
        for body in [C2B_VALIDATION, C2B_CONFIRMATION] {
            let kind = |verifier| call(verifier, Some(TOKEN), body).map(|v| v.kind);
            assert_eq!(kind(&validation), Ok(EventKind::MpesaC2bValidation));
            assert_eq!(kind(&confirmation), Ok(EventKind::MpesaC2bConfirmation));
        }
        assert_eq!(
            stage_from_path("/Daraja/C2B/Validate"),
            Some(C2bStage::Validation)
        );
        assert_eq!(
            stage_from_path("/c2b/confirm"),
            Some(C2bStage::Confirmation)
        );
        assert_eq!(stage_from_path("/c2b"), None);
        assert_eq!(stage_from_path("/validation-or-confirmation"), None);
    }

    #[test]
    fn the_path_token_must_be_present_and_exact() {
        let verifier = mpesa_at("/mpesa/c2b/confirmation");
        assert_eq!(
            call(&verifier, None, C2B_CONFIRMATION),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            call(&verifier, Some(""), C2B_CONFIRMATION),
            Err(Refusal::MissingToken)
        );
        let longer = format!("{TOKEN}x");
        let upper = TOKEN.to_uppercase();
        for wrong in [
            &TOKEN[..TOKEN.len() - 1],
            &longer,
            &upper,
            "k9Qz-2vX7pL4mN8rT1wY6bH4",
            "x",
        ] {
            assert_eq!(
                call(&verifier, Some(wrong), C2B_CONFIRMATION),
                Err(Refusal::BadToken),
                "{wrong}"
            );
        }
    }

    #[test]
    fn a_wrong_token_is_refused_before_the_body_is_read() {
        let verifier = mpesa_at("/mpesa/c2b/confirmation");
        assert_eq!(
            call(&verifier, Some("wrong"), b"not json"),
            Err(Refusal::BadToken)
        );
    }

    #[test]
    fn bodies_that_are_not_daraja_callbacks_are_refused() {
        let verifier = mpesa_at("/mpesa/c2b/confirmation");
        for (body, expected) in [
            (&b"not json"[..], Refusal::BadBody { why: "not JSON" }),
            (b"", Refusal::BadBody { why: "not JSON" }),
            (
                b"[1,2,3]",
                Refusal::BadBody {
                    why: "not a JSON object",
                },
            ),
            (
                br#"{"hello":"world"}"#,
                Refusal::BadBody {
                    why: "neither a C2B, an STK Push result nor a result callback",
                },
            ),
            (
                br#"{"Body":{"other":{}}}"#,
                Refusal::BadBody {
                    why: "an STK Push result without Body.stkCallback",
                },
            ),
            (
                br#"{"Body":{"stkCallback":{"CheckoutRequestID":"ws_CO_1"}}}"#,
                Refusal::BadBody {
                    why: "an STK Push result without ResultCode",
                },
            ),
            (
                br#"{"Result":"done"}"#,
                Refusal::BadBody {
                    why: "a result callback whose Result is not an object",
                },
            ),
            (
                br#"{"Result":{"ConversationID":"AG_1","ResultCode":null}}"#,
                Refusal::BadBody {
                    why: "a result callback without ResultCode",
                },
            ),
            (
                br#"{"TransactionType":"Pay Bill","TransID":"X1","BusinessShortCode":"600638"}"#,
                Refusal::BadBody {
                    why: "a C2B callback without TransAmount",
                },
            ),
        ] {
            assert_eq!(
                call(&verifier, Some(TOKEN), body),
                Err(expected),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn callbacks_without_their_id_are_refused() {
        let verifier = mpesa_at("/mpesa/callback");
        let no_trans_id = String::from_utf8_lossy(C2B_CONFIRMATION).replace("TransID", "TransIX");
        let empty_trans_id = String::from_utf8_lossy(C2B_CONFIRMATION).replace("RKTQDM7W6S", "");
        let no_checkout = String::from_utf8_lossy(STK_SUCCESS).replace("CheckoutRequestID", "X");
        let no_conversation =
            String::from_utf8_lossy(B2C_RESULT).replace("\"ConversationID\"", "\"X\"");
        let numeric_id = r#"{"Result":{"ConversationID":7,"ResultCode":0}}"#.to_owned();
        for body in [
            no_trans_id,
            empty_trans_id,
            no_checkout,
            no_conversation,
            numeric_id,
        ] {
            let result = call(&verifier, Some(TOKEN), body.as_bytes());
            assert_eq!(result.unwrap_err().reason(), "no_event_id", "{body}");
        }
    }

    #[test]
    fn c2b_stage_from_the_body_follows_the_balance() {
        let balance = |json: &str| {
            let value: Value = serde_json::from_str(json).unwrap();
            stage_from_body(value.as_object().unwrap())
        };
        assert_eq!(
            balance(r#"{"OrgAccountBalance":"10.00"}"#),
            C2bStage::Confirmation
        );
        assert_eq!(
            balance(r#"{"OrgAccountBalance":10.5}"#),
            C2bStage::Confirmation
        );
        assert_eq!(balance(r#"{"OrgAccountBalance":""}"#), C2bStage::Validation);
        assert_eq!(balance("{}"), C2bStage::Validation);
    }

    #[test]
    fn answers_are_what_daraja_expects() {
        assert_eq!(
            mpesa_accept_body(),
            r#"{"ResultCode":0,"ResultDesc":"Accepted"}"#
        );
        assert_eq!(
            mpesa_reject_body(C2bRejection::InvalidMsisdn),
            r#"{"ResultCode":"C2B00011","ResultDesc":"Rejected"}"#
        );
        let codes: Vec<&str> = C2bRejection::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(
            codes,
            [
                "C2B00011", "C2B00012", "C2B00013", "C2B00014", "C2B00015", "C2B00016"
            ]
        );
        for rejection in C2bRejection::ALL {
            let answer: Value = serde_json::from_str(mpesa_reject_body(rejection)).unwrap();
            assert_eq!(answer["ResultCode"], rejection.code());
            assert_eq!(answer["ResultDesc"], "Rejected");
            assert_eq!(C2bRejection::from_code(rejection.code()), Some(rejection));
        }
        assert_eq!(C2bRejection::from_code("C2B00017"), None);
        let accept: Value = serde_json::from_str(mpesa_accept_body()).unwrap();
        assert_eq!(accept["ResultCode"], 0);
    }
}
