//! The event id of the generic kinds (`hmac-sha256`, `shared-secret`) and of Stripe, on bodies
//! generated with a known id: the expected id comes from the generator, not from a parser.

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::{at, config, nested, reference_mac};
use crate::{
    config::{Secret, VerifyKind},
    verify::{Request, Scheme, Verifier, generic_event_id},
};

/// What a generated body's top-level `id` is.
#[derive(Debug, Clone)]
enum Id {
    /// No `id` key.
    Absent,
    /// A JSON string; serialised by `serde_json`, so any text (escapes, unicode) round-trips.
    Text(String),
    Signed(i64),
    Unsigned(u64),
    /// A JSON text that is not an id: a fraction, an exponent, a bool, null, an array, an
    /// object.
    Wrong(&'static str),
    /// A number `serde_json` cannot read, so the whole body is not JSON.
    Unreadable(&'static str),
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        1 => Just(Id::Absent),
        4 => "\\PC{0,24}".prop_map(Id::Text),
        1 => any::<i64>().prop_map(Id::Signed),
        1 => any::<u64>().prop_map(Id::Unsigned),
        1 => prop::sample::select(&["1.5", "1e3", "1E2", "-0.0", "true", "null", "[]", "{}", "[\"a\"]", "{\"id\":\"inner\"}", "18446744073709551616"][..])
            .prop_map(Id::Wrong),
        1 => prop::sample::select(&["1e999", "-1e999", "01", "+1", "0x10", "NaN", "\"\\ud800\""][..])
            .prop_map(Id::Unreadable),
    ]
}

impl Id {
    fn json(&self) -> Option<String> {
        match self {
            Id::Absent => None,
            Id::Text(text) => Some(serde_json::to_string(text).unwrap()),
            Id::Signed(n) => Some(n.to_string()),
            Id::Unsigned(n) => Some(n.to_string()),
            Id::Wrong(json) | Id::Unreadable(json) => Some((*json).to_owned()),
        }
    }

    /// The id a generic route must report for a body whose (last) `id` is this.
    fn expected(&self, body: &[u8]) -> String {
        match self {
            Id::Text(text) if !text.is_empty() => text.clone(),
            Id::Signed(n) => n.to_string(),
            Id::Unsigned(n) => n.to_string(),
            _ => hex::encode(Sha256::digest(body)),
        }
    }
}

/// `{ ...fields..., "id": first, ...fields..., "id": last }`, the id keys optional: a body with
/// the id among other fields, maybe twice (the last one counts, as everywhere in JSON readers).
fn object(fields: &[(String, String)], first: &Id, last: &Id) -> Vec<u8> {
    let mut entries: Vec<String> = Vec::new();
    let half = fields.len() / 2;
    let field = |(key, value): &(String, String)| {
        format!("{}:{}", serde_json::to_string(key).unwrap(), value)
    };
    entries.extend(fields[..half].iter().map(field));
    entries.extend(first.json().map(|json| format!("\"id\":{json}")));
    entries.extend(fields[half..].iter().map(field));
    entries.extend(last.json().map(|json| format!("\"id\":{json}")));
    format!("{{{}}}", entries.join(",")).into_bytes()
}

fn fields() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            "[a-zA-Z]{1,8}".prop_filter("not the id", |key| key != "id"),
            prop_oneof![
                Just("1".to_owned()),
                Just("\"x\"".to_owned()),
                Just("[1,{\"id\":2}]".to_owned())
            ],
        ),
        0..4,
    )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn generic_ids_are_the_generated_id_or_the_body_hash(
        fields in fields(),
        first in id(),
        last in id(),
    ) {
        let body = object(&fields, &first, &last);
        // The last id counts, unless the earlier one makes the whole body unreadable.
        let expected = match (&first, &last) {
            (Id::Unreadable(_), _) => hex::encode(Sha256::digest(&body)),
            (_, Id::Absent) => first.expected(&body),
            _ => last.expected(&body),
        };
        prop_assert_eq!(generic_event_id(&body), expected);
    }

    #[test]
    fn generic_ids_of_any_bytes_are_the_reference_id(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let id = generic_event_id(&body);
        prop_assert_eq!(&id, &super::reference_generic_id(&body));
        prop_assert!(!id.is_empty());
    }

    /// Stripe takes the id of the verified body, and only a string: a body without one is
    /// refused, so that duplicates can always be recognised.
    #[test]
    fn stripe_ids_are_the_generated_id_or_a_refusal(fields in fields(), id in id()) {
        let body = object(&fields, &Id::Absent, &id);
        let secret = b"whsec_props".to_vec();
        let t = "1764979200";
        let signature = hex::encode(reference_mac(&secret, &[t.as_bytes(), b".", &body]));
        let headers = super::header_map(&[("stripe-signature", format!("t={t},v1={signature}").into_bytes())]);
        let verifier = Verifier {
            route: "/props/stripe".into(),
            verify: VerifyKind::Stripe,
            scheme: Scheme::Stripe { secrets: vec![Secret::from_bytes(secret)], tolerance_seconds: 300 },
        };
        let got = verifier
            .verify(&Request { path_token: None, headers: &headers, body: &body, now: at(1_764_979_200) })
            .map(|verified| verified.event_id)
            .map_err(|refusal| refusal.reason());
        let expected = match &id {
            Id::Text(text) if !text.is_empty() => Ok(text.clone()),
            Id::Unreadable(_) => Err("bad_body"),
            _ => Err("no_event_id"),
        };
        prop_assert_eq!(got, expected);
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// An id beside a value nested beyond `serde_json`'s depth limit is not read (the body is not
    /// JSON then), and the body's hash is the id; within the limit it is. Either way the stack
    /// does not grow with the depth.
    #[test]
    fn deep_nesting_beside_the_id_is_capped(
        depth in prop_oneof![0usize..100, 200usize..200_000],
        object in any::<bool>(),
    ) {
        let mut body = br#"{"id":"ev_1","deep":"#.to_vec();
        body.extend(nested(depth, object, b"0"));
        body.push(b'}');
        let expected = if depth < 100 {
            "ev_1".to_owned()
        } else {
            hex::encode(Sha256::digest(&body))
        };
        prop_assert_eq!(generic_event_id(&body), expected);
    }

    /// Thousands of fields before the id: still found, in one pass.
    #[test]
    fn ids_after_huge_bodies_are_found(count in 1usize..20_000, id in "[a-z0-9_]{1,16}") {
        let fields: String = (0..count).map(|n| format!("\"f{n}\":[{n},\"{n}\"],")).collect();
        let body = format!("{{{fields}\"id\":\"{id}\"}}");
        prop_assert_eq!(generic_event_id(body.as_bytes()), id);
    }
}

#[test]
fn a_duplicated_id_is_worth_its_last_value() {
    assert_eq!(generic_event_id(br#"{"id":"a","id":"b"}"#), "b");
    assert_eq!(
        generic_event_id(br#"{"id":"a","id":{}}"#),
        hex::encode(Sha256::digest(br#"{"id":"a","id":{}}"#))
    );
}
