//! `[[route]]`: configs it accepts.

use super::*;

#[test]
fn every_route_kind_with_its_options() {
    let config = parse_ok(&lines(&[
        "[[route]]",
        "path = \"/hooks/github\"",
        "verify = \"github\"",
        "secrets = [{ file = \"secrets/github\" }, { env = \"GITHUB_OLD\" }, { credential = \"github.new\" }]",
        "[[route]]",
        "path = \"/hooks/generic\"",
        "verify = \"hmac-sha256\"",
        "secrets = [{ env = \"GENERIC\" }]",
        "header = \"X-Signature\"",
        "encoding = \"base64\"",
        "prefix = \"sha256=\"",
        "[[route]]",
        "path = \"/hooks/plain\"",
        "verify = \"shared-secret\"",
        "secrets = [{ env = \"PLAIN\" }]",
        "header = \"Authorization\"",
        "prefix = \"Bearer \"",
        "[[route]]",
        "path = \"/hooks/sw\"",
        "verify = \"standard-webhooks\"",
        "secrets = [{ env = \"SW\" }]",
        "tolerance_seconds = 60",
        "[[route]]",
        "path = \"/hooks/hex\"",
        "verify = \"hmac-sha256\"",
        "secrets = [{ env = \"HEX\" }]",
        "header = \"X-Hub\"",
    ]));
    let routes = &config.routes;
    assert_eq!(
        routes[0].secrets,
        [
            SecretRef::File("/etc/hookwall/secrets/github".into()),
            SecretRef::Env("GITHUB_OLD".into()),
            SecretRef::Credential("github.new".into()),
        ],
        "a relative secret file resolves against the config file's directory"
    );
    assert_eq!(routes[0].encoding, None);
    assert_eq!(routes[1].verify, VerifyKind::HmacSha256);
    assert_eq!(routes[1].header.as_deref(), Some("X-Signature"));
    assert_eq!(routes[1].encoding, Some(Encoding::Base64));
    assert_eq!(routes[1].prefix.as_deref(), Some("sha256="));
    assert_eq!(routes[2].verify, VerifyKind::SharedSecret);
    assert_eq!(routes[2].prefix.as_deref(), Some("Bearer "));
    assert_eq!(routes[2].encoding, None);
    assert_eq!(routes[3].tolerance_seconds, 60);
    assert_eq!(
        routes[4].encoding,
        Some(Encoding::Hex),
        "hex is the default encoding"
    );
}

#[test]
fn a_validation_route_is_read_with_its_default_timeout() {
    let mut text = HTTP_DELIVERY.to_vec();
    text.extend(MPESA_ROUTE);
    text.push(
        "validation = { url = \"http://127.0.0.1:8000/mpesa/validate\", on_failure = \"accept\" }",
    );
    text.extend(&MPESA_ROUTE[..3]);
    text[9] = "path = \"/mpesa/c2b/validation-strict\"";
    text.extend([
        "token = { env = \"T2\" }",
        "validation = { url = \"https://app/v\", timeout = \"7s\", on_failure = \"reject\" }",
    ]);
    let config = parse_ok(&lines(&text));
    assert_eq!(
        config.routes[0].validation,
        Some(ValidationConfig {
            url: "http://127.0.0.1:8000/mpesa/validate".into(),
            timeout: Duration::from_secs(5),
            on_failure: OnFailure::Accept,
        })
    );
    assert_eq!(
        config.routes[1].validation,
        Some(ValidationConfig {
            url: "https://app/v".into(),
            timeout: Duration::from_secs(7),
            on_failure: OnFailure::Reject,
        })
    );
    // A route without the key has none.
    assert_eq!(parse_ok(&lines(MPESA_ROUTE)).routes[0].validation, None);
}
