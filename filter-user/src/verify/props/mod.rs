//! Property tests: every verifier against generated and mutated hostile input.
//!
//! Each property either checks the verdict against a small reference written here (the MAC from
//! the `hmac` crate, hand-written header parsers, hex and base64 decoders, a Daraja classifier
//! over `serde_json::Value`), or, where no reference exists, that the input is refused with a
//! listed reason. None may panic. "Bounded work" is asserted by size caps, never by a clock: the
//! number and size of the signature candidates a header yields are bounded by the header's
//! length, so the constant-time comparisons cost at most a fixed multiple of the input; JSON
//! nesting stops at `serde_json`'s depth limit instead of growing the stack.
//!
//! The verifiers are built from their resolved key material (as `Verifier::from_route` leaves
//! them), so a case costs no file I/O; reading secrets has its own unit tests.
//!
//! The case counts keep the whole set to a few seconds on a small machine; `PROPTEST_CASES=N`
//! runs every property N times instead. Failures are not persisted into the source tree: a case
//! found here is kept as a unit test beside the code it fixes.

mod event_ids;
mod mpesa;
mod signed;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit as _, Mac as _};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::{prelude::*, test_runner::Config};
use sha2::Sha256;

use super::{Refusal, Verified};

/// `cases` cases per property, unless `PROPTEST_CASES` says otherwise; no regression files in
/// the tree. The client-address properties use it too.
pub(crate) fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A verdict as the properties compare it: the event id and kind, or the refusal's reason.
pub(super) type Verdict = Result<(String, super::EventKind), &'static str>;

/// `result` as a [`Verdict`]; the refusal's reason must be one of the listed ones.
pub(super) fn verdict(result: Result<Verified, Refusal>) -> Verdict {
    match result {
        Ok(verified) => Ok((verified.event_id, verified.kind)),
        Err(refusal) => {
            assert!(Refusal::REASONS.contains(&refusal.reason()), "{refusal:?}");
            Err(refusal.reason())
        }
    }
}

pub(super) fn at(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

// ---------------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------------

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub(super) fn reference_mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether one of `candidates` is the MAC of `parts` under one of `keys`, checked with the
/// crate's own `verify_slice`, not the verifier's comparison.
pub(super) fn reference_matches(keys: &[Vec<u8>], parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
    keys.iter().any(|key| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        candidates
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
    })
}

/// Hex of either case, an even number of digits.
pub(super) fn reference_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Standard base64 with its padding optional (none, or as much as the length calls for, or
/// less), the unused bits of the last symbol zero.
pub(super) fn reference_base64(text: &str) -> Option<Vec<u8>> {
    let symbols = text.trim_end_matches('=');
    let padding = text.len() - symbols.len();
    let tail = symbols.len() % 4;
    if tail == 1 || padding > (4 - tail) % 4 {
        return None;
    }
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for &c in symbols.as_bytes() {
        bits = bits << 6 | u32::from(value(c)?);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    // Left-over bits must be zero, so that each byte string has one encoding.
    (bits == 0).then_some(out)
}

/// What `required` is specified to do with a header: absent is `missing_header`; not visible
/// ASCII, or only blanks, is `malformed_header`; else the value without surrounding blanks.
pub(super) fn reference_required<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<&'h str, &'static str> {
    let value = headers.get(name).ok_or("missing_header")?;
    let bytes = value.as_bytes();
    if !bytes
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err("malformed_header");
    }
    let text = std::str::from_utf8(bytes).expect("ASCII");
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() {
        Err("malformed_header")
    } else {
        Ok(text)
    }
}

/// A signed timestamp as specified: digits only, within `i64`; then within `tolerance` of `now`.
pub(super) fn reference_timestamp(text: &str) -> Result<i64, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("malformed_header");
    }
    let digits = text.trim_start_matches('0');
    // i64::MAX has 19 digits.
    if digits.len() > 19 {
        return Err("malformed_header");
    }
    let value: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().expect("at most 19 digits")
    };
    i64::try_from(value).map_err(|_| "malformed_header")
}

pub(super) fn reference_fresh(
    signed_at: i64,
    now: i64,
    tolerance: u64,
) -> Result<(), &'static str> {
    let skew = i128::from(now) - i128::from(signed_at);
    if skew > i128::from(tolerance) {
        Err("timestamp_too_old")
    } else if -skew > i128::from(tolerance) {
        Err("timestamp_in_future")
    } else {
        Ok(())
    }
}

/// The body's `id` (a non-empty string, or an integer), else the body's SHA-256 in hex.
pub(super) fn reference_generic_id(body: &[u8]) -> String {
    use sha2::Digest as _;
    let id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| match value.as_object()?.get("id")? {
            serde_json::Value::String(id) if !id.is_empty() => Some(id.clone()),
            serde_json::Value::Number(n) if n.as_i64().is_some() || n.as_u64().is_some() => {
                Some(n.to_string())
            }
            _ => None,
        });
    id.unwrap_or_else(|| hex::encode(sha2::Sha256::digest(body)))
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// A byte HTTP lets through in a header value: mostly visible ASCII, sometimes a tab or a byte of
/// "obs-text" (0x80 and up), which `HeaderValue::to_str` refuses.
pub(super) fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        16 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ]
}

/// `bytes` as a header value, with the bytes HTTP cannot carry in one (controls, DEL) replaced.
pub(super) fn header_value(bytes: &[u8]) -> HeaderValue {
    let clean: Vec<u8> = bytes
        .iter()
        .map(|&b| {
            if b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80 {
                b
            } else {
                b'?'
            }
        })
        .collect();
    HeaderValue::from_bytes(&clean).expect("only bytes a header value may hold")
}

/// A header map from `(name, value)` pairs, in order (a repeated name is a second line).
pub(super) fn header_map(pairs: &[(&'static str, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_static(name), header_value(value));
    }
    map
}

/// Text a hostile sender may inject: non-ASCII letters, bidi controls, a BOM, a NUL, an emoji,
/// JSON escapes that decode to other characters, HTTP separators.
pub(super) fn injected() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("é".to_owned()),
        Just("\u{202e}".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("\0".to_owned()),
        Just("\u{1f4b8}".to_owned()),
        Just("\\u0000".to_owned()),
        Just("\\ud800".to_owned()),
        Just("\\\"".to_owned()),
        Just(",".to_owned()),
        Just("=".to_owned()),
        Just(";".to_owned()),
        Just(" ".to_owned()),
        Just("\r\n".to_owned()),
        "\\PC{0,4}",
    ]
}

/// A change to a byte string.
#[derive(Debug, Clone)]
pub(super) enum Mutation {
    /// Flip one bit of the byte at `at` (modulo the length).
    FlipBit { at: usize, bit: u8 },
    /// Keep the first `at` bytes (modulo the length plus one).
    Truncate { at: usize },
    /// Insert `text` at `at` (modulo the length plus one).
    Insert { at: usize, text: String },
    /// Remove up to `len` bytes from `at`.
    Delete { at: usize, len: usize },
    /// Repeat the bytes from `at` to `at + len` once more, right after them.
    Repeat { at: usize, len: usize },
}

pub(super) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), injected()).prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Repeat { at, len }),
    ]
}

impl Mutation {
    pub(super) fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match self {
            Mutation::FlipBit { at, bit } => {
                if len > 0 {
                    bytes[at % len] ^= 1 << bit;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
            Mutation::Insert { at, text } => {
                let at = at % (len + 1);
                bytes.splice(at..at, text.bytes());
            }
            Mutation::Delete { at, len: n } => {
                let at = at % (len + 1);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Repeat { at, len: n } => {
                let at = at % (len + 1);
                let copy = bytes[at..(at + n).min(len)].to_vec();
                let end = at + copy.len();
                bytes.splice(end..end, copy);
            }
        }
    }
}

/// `bytes` after each of `mutations`, in order.
pub(super) fn mutated(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    for mutation in mutations {
        mutation.apply(&mut bytes);
    }
    bytes
}

/// `[`...`]` or `{"a":`...`}` nested `depth` times around `inner`.
pub(super) fn nested(depth: usize, object: bool, inner: &[u8]) -> Vec<u8> {
    let (open, close): (&[u8], &[u8]) = if object {
        (br#"{"a":"#, b"}")
    } else {
        (b"[", b"]")
    };
    let mut out = Vec::with_capacity(depth * (open.len() + close.len()) + inner.len());
    for _ in 0..depth {
        out.extend_from_slice(open);
    }
    out.extend_from_slice(inner);
    for _ in 0..depth {
        out.extend_from_slice(close);
    }
    out
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn the_reference_decoders_know_the_edges() {
        assert_eq!(reference_hex("00fFaB"), Some(vec![0, 255, 171]));
        assert_eq!(reference_hex("0"), None);
        assert_eq!(reference_hex("0g"), None);
        assert_eq!(reference_hex(""), Some(vec![]));
        let standard = base64::engine::general_purpose::STANDARD;
        for bytes in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            &[0xff, 0xfe, 0xfd, 0],
        ] {
            let padded = standard.encode(bytes);
            assert_eq!(
                reference_base64(&padded).as_deref(),
                Some(bytes),
                "{padded}"
            );
            let bare = padded.trim_end_matches('=');
            assert_eq!(reference_base64(bare).as_deref(), Some(bytes), "{bare}");
        }
        for bad in ["A", "A===", "AA===", "AAAA=", "AB==", "AAA*", "=", "AA=A"] {
            assert_eq!(reference_base64(bad), None, "{bad}");
        }
        assert_eq!(reference_base64("AA="), Some(vec![0]));
        assert_eq!(reference_timestamp("0001"), Ok(1));
        assert_eq!(reference_timestamp("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(
            reference_timestamp("9223372036854775808"),
            Err("malformed_header")
        );
        assert_eq!(reference_timestamp(""), Err("malformed_header"));
        assert_eq!(reference_timestamp("+1"), Err("malformed_header"));
    }

    #[test]
    fn mutations_stay_within_the_bytes() {
        let mut bytes = b"abc".to_vec();
        Mutation::Repeat { at: 1, len: 60 }.apply(&mut bytes);
        assert_eq!(bytes, b"abcbc");
        Mutation::Delete { at: 4, len: 9 }.apply(&mut bytes);
        assert_eq!(bytes, b"abcb");
        Mutation::Truncate { at: 3 }.apply(&mut bytes);
        assert_eq!(bytes, b"abc");
        let mut empty = Vec::new();
        Mutation::FlipBit { at: 3, bit: 1 }.apply(&mut empty);
        Mutation::Insert {
            at: 9,
            text: "é".into(),
        }
        .apply(&mut empty);
        assert_eq!(empty, "é".as_bytes());
        assert_eq!(nested(2, false, b"1"), b"[[1]]");
    }
}
