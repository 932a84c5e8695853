//! Daraja callbacks: the sample bodies, mutated byte by byte and key by key (duplicated keys,
//! huge numbers, injected unicode, deep nesting), against a reference classifier; the path token
//! against plain equality.
//!
//! The reference reads JSON with `serde_json`, as the verifier does: a duplicated key is
//! therefore worth its last value in both, which is also what the parsers of the languages
//! applications are written in (JavaScript, Python, Go, Java's Jackson) make of it, so hookwall's
//! event id and the application's reading of the same body agree.

use http::HeaderMap;
use proptest::{prelude::*, sample::Index};
use serde_json::{Map, Value};

use super::{Mutation, Verdict, at, config, mutated, mutation, nested, verdict};
use crate::{
    config::VerifyKind,
    verify::{EventKind, Request, Scheme, SecretDigest, Verifier, mpesa::C2bStage},
};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/daraja/",
            $name
        ))
    };
}

const FIXTURES: [&[u8]; 5] = [
    fixture!("c2b_validation.json"),
    fixture!("c2b_confirmation.json"),
    fixture!("stk_success.json"),
    fixture!("stk_cancelled.json"),
    fixture!("b2c_result.json"),
];

const TOKEN: &str = "k9Qz-2vX7pL4mN8rT1wY6bH3";

/// The keys the classifier reads, and one it does not.
const KEYS: [&str; 12] = [
    "Body",
    "stkCallback",
    "ResultCode",
    "CheckoutRequestID",
    "Result",
    "ConversationID",
    "TransID",
    "TransactionType",
    "TransAmount",
    "BusinessShortCode",
    "OrgAccountBalance",
    "MSISDN",
];

fn mpesa_verifier(stage: Option<C2bStage>) -> Verifier {
    Verifier {
        route: "/props/mpesa".into(),
        verify: VerifyKind::Mpesa,
        scheme: Scheme::Mpesa {
            tokens: vec![SecretDigest::of(TOKEN.as_bytes())],
            stage,
        },
    }
}

fn run(stage: Option<C2bStage>, token: Option<&str>, body: &[u8]) -> Verdict {
    verdict(mpesa_verifier(stage).verify(&Request {
        path_token: token,
        headers: &HeaderMap::new(),
        body,
        now: at(0),
    }))
}

/// Daraja's callbacks as the README and Daraja's documentation describe them.
fn reference_classify(body: &[u8], stage: Option<C2bStage>) -> Verdict {
    let value: Value = serde_json::from_slice(body).map_err(|_| "bad_body")?;
    let callback = value.as_object().ok_or("bad_body")?;
    let set = |object: &Map<String, Value>, key| object.get(key).is_some_and(|v| !v.is_null());
    let id = |object: &Map<String, Value>, key| match object.get(key) {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err("no_event_id"),
    };
    if let Some(body) = callback.get("Body") {
        let stk = body
            .as_object()
            .and_then(|body| body.get("stkCallback"))
            .and_then(Value::as_object)
            .ok_or("bad_body")?;
        if !set(stk, "ResultCode") {
            return Err("bad_body");
        }
        return Ok((id(stk, "CheckoutRequestID")?, EventKind::MpesaStkResult));
    }
    if let Some(result) = callback.get("Result") {
        let result = result.as_object().ok_or("bad_body")?;
        if !set(result, "ResultCode") {
            return Err("bad_body");
        }
        return Ok((id(result, "ConversationID")?, EventKind::MpesaResult));
    }
    if !callback.contains_key("TransID") && !callback.contains_key("TransactionType") {
        return Err("bad_body");
    }
    for key in ["TransactionType", "TransAmount", "BusinessShortCode"] {
        if !set(callback, key) {
            return Err("bad_body");
        }
    }
    let event_id = id(callback, "TransID")?;
    let confirmed = match stage {
        Some(stage) => stage == C2bStage::Confirmation,
        None => match callback.get("OrgAccountBalance") {
            Some(Value::String(balance)) => !balance.is_empty(),
            Some(Value::Number(_)) => true,
            _ => false,
        },
    };
    let kind = if confirmed {
        EventKind::MpesaC2bConfirmation
    } else {
        EventKind::MpesaC2bValidation
    };
    Ok((event_id, kind))
}

fn reference(stage: Option<C2bStage>, token: Option<&str>, body: &[u8]) -> Verdict {
    match token {
        None | Some("") => Err("missing_token"),
        Some(token) if token != TOKEN => Err("bad_token"),
        Some(_) => reference_classify(body, stage),
    }
}

/// A JSON value a hostile (or broken) sender may put where Daraja puts something else.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_owned()),
        "\"[A-Z0-9]{1,12}\"",
        Just("null".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("-0".to_owned()),
        Just("1.5".to_owned()),
        Just("1e999".to_owned()),
        Just("-1e999".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("123456789012345678901234567890123456789".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just(r#"{"stkCallback":{"ResultCode":0,"CheckoutRequestID":"ws_X"}}"#.to_owned()),
        Just(r#"{"ResultCode":0,"ConversationID":"AG_X"}"#.to_owned()),
        Just(r#""\u0000""#.to_owned()),
        Just(r#""\ud800""#.to_owned()),
        Just("\"\u{202e}é\u{1f4b8}\"".to_owned()),
        (120usize..140).prop_map(|depth| String::from_utf8(nested(depth, false, b"1")).unwrap()),
        "\\PC{0,12}".prop_map(|text| serde_json::to_string(&text).unwrap()),
    ]
}

/// A change to a body's JSON text at a key the classifier reads.
#[derive(Debug, Clone)]
enum KeyEdit {
    /// `"key":value,` before the key's first occurrence (the original, later, wins), or after the
    /// first `{` if the body lacks the key.
    Before { key: usize, value: String },
    /// `,"key":value` after the key's first value: a duplicate that wins.
    After { key: usize, value: String },
    /// The key's first occurrence renamed, so the body lacks it.
    Rename { key: usize },
}

fn key_edit() -> impl Strategy<Value = KeyEdit> {
    prop_oneof![
        2 => (0..KEYS.len(), json_value()).prop_map(|(key, value)| KeyEdit::Before { key, value }),
        3 => (0..KEYS.len(), json_value()).prop_map(|(key, value)| KeyEdit::After { key, value }),
        1 => (0..KEYS.len()).prop_map(|key| KeyEdit::Rename { key }),
    ]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

impl KeyEdit {
    fn apply(&self, body: &mut Vec<u8>) {
        match self {
            KeyEdit::Before { key, value } => {
                let quoted = format!("\"{}\":", KEYS[*key]);
                let at = find(body, quoted.as_bytes())
                    .or_else(|| find(body, b"{").map(|at| at + 1))
                    .unwrap_or(0);
                let entry = format!("{quoted}{value},");
                body.splice(at..at, entry.bytes());
            }
            KeyEdit::After { key, value } => {
                let quoted = format!("\"{}\":", KEYS[*key]);
                let Some(start) = find(body, quoted.as_bytes()).map(|at| at + quoted.len()) else {
                    return;
                };
                // Where the key's value ends: after one JSON value, read from there.
                let mut values =
                    serde_json::Deserializer::from_slice(&body[start..]).into_iter::<Value>();
                if !matches!(values.next(), Some(Ok(_))) {
                    return;
                }
                let end = start + values.byte_offset();
                let entry = format!(",{quoted}{value}");
                body.splice(end..end, entry.bytes());
            }
            KeyEdit::Rename { key } => {
                let quoted = format!("\"{}\"", KEYS[*key]);
                if let Some(at) = find(body, quoted.as_bytes()) {
                    body.insert(at + 1, b'x');
                }
            }
        }
    }
}

fn stage() -> impl Strategy<Value = Option<C2bStage>> {
    prop_oneof![
        Just(None),
        Just(Some(C2bStage::Validation)),
        Just(Some(C2bStage::Confirmation)),
    ]
}

/// A sample body with key edits, then byte mutations.
fn daraja_body() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<Index>(),
        prop::collection::vec(key_edit(), 0..4),
        prop_oneof![
            2 => Just(Vec::<Mutation>::new()),
            1 => prop::collection::vec(mutation(), 1..3),
        ],
    )
        .prop_map(|(pick, edits, mutations)| {
            let mut body = pick.get(&FIXTURES).to_vec();
            for edit in &edits {
                edit.apply(&mut body);
            }
            mutated(&body, &mutations)
        })
}

fn token() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        8 => Just(Some(TOKEN.to_owned())),
        1 => Just(None),
        1 => Just(Some(String::new())),
        1 => prop::collection::vec(mutation(), 1..3).prop_map(|ms| {
            Some(String::from_utf8_lossy(&mutated(TOKEN.as_bytes(), &ms)).into_owned())
        }),
        1 => "\\PC{0,30}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn daraja_verdicts_agree_with_the_reference(
        body in daraja_body(),
        stage in stage(),
        token in token(),
    ) {
        let token = token.as_deref();
        prop_assert_eq!(run(stage, token, &body), reference(stage, token, &body));
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// Nesting deeper than `serde_json`'s limit is refused as "not JSON", however deep: the
    /// depth, not the stack, runs out. A sample wrapped in an array is not a callback at all.
    #[test]
    fn deeply_nested_bodies_are_refused_without_exhausting_the_stack(
        depth in prop_oneof![1usize..200, 200usize..200_000],
        object in any::<bool>(),
        pick in any::<Index>(),
    ) {
        let body = nested(depth, object, pick.get(&FIXTURES));
        let got = run(None, Some(TOKEN), &body);
        prop_assert_eq!(&got, &reference(None, Some(TOKEN), &body));
        prop_assert_eq!(got, Err("bad_body"));
    }

    /// A sample with a huge field, or thousands of extra keys, is read in one pass and keeps its
    /// verdict.
    #[test]
    fn huge_bodies_keep_their_verdict(
        pick in any::<Index>(),
        filler in 1usize..200_000,
        many_keys in any::<bool>(),
    ) {
        let sample = pick.get(&FIXTURES);
        let extra = if many_keys {
            (0..filler / 16).map(|n| format!("\"k{n}\":{n},")).collect::<String>()
        } else {
            format!("\"Padding\":\"{}\",", "x".repeat(filler))
        };
        let mut body = sample.to_vec();
        body.splice(1..1, extra.bytes());
        let got = run(None, Some(TOKEN), &body);
        prop_assert_eq!(&got, &reference(None, Some(TOKEN), sample));
        prop_assert!(got.is_ok());
    }
}

#[test]
fn key_edits_do_what_they_say() {
    let mut body = br#"{"TransID":"A","x":1}"#.to_vec();
    KeyEdit::After {
        key: 6,
        value: "\"B\"".into(),
    }
    .apply(&mut body);
    assert_eq!(body, br#"{"TransID":"A","TransID":"B","x":1}"#);
    KeyEdit::Before {
        key: 6,
        value: "null".into(),
    }
    .apply(&mut body);
    assert_eq!(
        body,
        br#"{"TransID":null,"TransID":"A","TransID":"B","x":1}"#
    );
    KeyEdit::Rename { key: 6 }.apply(&mut body);
    assert_eq!(
        body,
        br#"{"xTransID":null,"TransID":"A","TransID":"B","x":1}"#
    );
    KeyEdit::Before {
        key: 0,
        value: "{}".into(),
    }
    .apply(&mut body);
    assert!(body.starts_with(br#"{"Body":{},"xTransID""#));
}
