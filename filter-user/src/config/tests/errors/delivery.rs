//! Refused `[delivery]` and validation configs, each with the errors it must give.

use super::*;

pub(super) fn delivery_cases() -> Vec<Case> {
    let password = "hunter2-Sup3rS3cret";
    let signing = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let token = "nats-T0ken-Sup3rS3cret";
    let mut cases = vec![
        case(
            "delivery values out of range are each reported at their line",
            http_delivery(&[
                "timeout = \"50ms\"",
                "max_attempts = 0",
                "max_age = \"999ms\"",
                "backoff_initial = \"0s\"",
                "backoff_max = \"2days\"",
                "concurrency = 257",
            ]),
            vec![
                at(
                    "delivery.timeout",
                    4,
                    &["\"50ms\" is out of range: use 100ms to 5m (default 10s)"],
                ),
                at(
                    "delivery.max_attempts",
                    5,
                    &["0 is out of range: use 1 to 1000 (default 25)"],
                ),
                at("delivery.max_age", 6, &["use at least 1s (default 3days)"]),
                at(
                    "delivery.backoff_initial",
                    7,
                    &["use 1ms to 1day (default 1s)"],
                ),
                at("delivery.backoff_max", 8, &[]),
                at(
                    "delivery.concurrency",
                    9,
                    &["257 is out of range: use 1 to 256 (default 32)"],
                ),
            ],
        ),
        case(
            "delivery.max_attempts above its maximum",
            http_delivery(&["max_attempts = 1001"]),
            vec![at("delivery.max_attempts", 4, &["use 1 to 1000"])],
        ),
        case(
            "delivery.timeout above its maximum",
            http_delivery(&["timeout = \"6m\""]),
            vec![at("delivery.timeout", 4, &["use 100ms to 5m"])],
        ),
        case(
            "backoff_max below backoff_initial",
            http_delivery(&["backoff_initial = \"30s\"", "backoff_max = \"10s\""]),
            vec![at(
                "delivery.backoff_max",
                5,
                &["backoff_max (10s) is below backoff_initial (30s)"],
            )],
        ),
        // Against the default backoff_max, the error points at [delivery].
        case(
            "the default backoff_max below backoff_initial",
            http_delivery(&["backoff_initial = \"1h\""]),
            vec![at(
                "delivery.backoff_max",
                1,
                &["backoff_max (10m) is below backoff_initial (1h)"],
            )],
        ),
        case(
            "a delivery integer of the wrong type",
            http_delivery(&["max_attempts = \"25\""]),
            vec![at("delivery.max_attempts", 4, &["fix the value's type"])],
        ),
        case(
            "delivery without a sink",
            lines(&["[delivery]", "secret = { env = \"S\" }"]),
            vec![at(
                "delivery",
                1,
                &[
                    "[delivery] needs where to deliver: url = ",
                    "remove [delivery] to only store events",
                ],
            )],
        ),
        case(
            "delivery with two sinks",
            http_delivery(NATS),
            vec![at(
                "delivery.url",
                2,
                &["`url` and [delivery.nats] both say where events go"],
            )],
        ),
        case(
            "an http delivery needs its signing secret",
            lines(&["", "[delivery]", "url = \"http://127.0.0.1:8000/hookwall\""]),
            vec![at(
                "delivery",
                2,
                &[
                    "delivery.url needs `secret`",
                    "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }",
                ],
            )],
        ),
        case(
            "a delivery url with credentials",
            lines(&[
                "[delivery]",
                "secret = { env = \"S\" }",
                &format!("url = \"https://app:{password}@127.0.0.1:8000/hookwall\""),
            ]),
            vec![at(
                "delivery.url",
                3,
                &["carries credentials (user:password@)"],
            )],
        )
        .hiding(&[password]),
        case(
            "a nats url with credentials",
            lines(&[
                "[delivery.nats]",
                &format!("url = \"nats://user:{password}@127.0.0.1:4222\""),
            ]),
            vec![at(
                "delivery.nats.url",
                2,
                &["use token = { env = \"NATS_TOKEN\" }"],
            )],
        )
        .hiding(&[password]),
        // Even a URL that does not parse is not echoed when it has credentials.
        case(
            "an unparsable url with credentials",
            lines(&[
                "[delivery]",
                "secret = { env = \"S\" }",
                &format!("url = \"http://u:{password} x@app\""),
            ]),
            vec![at("delivery.url", 3, &[])],
        )
        .hiding(&[password]),
        case(
            "[delivery.nats] without url",
            lines(&["[delivery.nats]", "subject = \"a.b\""]),
            vec![at(
                "delivery.nats",
                1,
                &["needs the server to publish to: url = \"nats://127.0.0.1:4222\""],
            )],
        ),
        case(
            "a nats duplicate window below its minimum",
            with(NATS, &["duplicate_window = \"500ms\""]),
            vec![at(
                "delivery.nats.duplicate_window",
                3,
                &["use at least 1s (default 2m)"],
            )],
        ),
        case(
            "inline delivery secrets are refused without repeating them",
            lines(&[
                "[delivery]",
                &format!("secret = \"{signing}\""),
                "[delivery.nats]",
                "url = \"nats://127.0.0.1:4222\"",
                &format!("token = \"{token}\""),
            ]),
            vec![
                at("delivery.secret", 2, &["write secret = { env = \"NAME\" }"]),
                at(
                    "delivery.nats.token",
                    5,
                    &["write token = { env = \"NAME\" }"],
                ),
            ],
        )
        .hiding(&[signing, token]),
        case(
            "a malformed delivery secret reference",
            lines(&[
                "[delivery]",
                "url = \"http://a\"",
                "secret = { env = \"A\", file = \"/b\" }",
            ]),
            vec![at("delivery.secret", 3, &["a secret reference is exactly"])],
        ),
        case(
            "an invalid delivery credential name",
            lines(&[
                "[delivery]",
                "url = \"http://a\"",
                "secret = { credential = \"../signing\" }",
            ]),
            vec![at(
                "delivery.secret",
                3,
                &[
                    "\"../signing\" is not a credential name",
                    "e.g. secret = { credential = \"stripe\" }",
                ],
            )],
        ),
        case(
            "an unknown delivery key suggests the known one",
            http_delivery(&["max_atempts = 3"]),
            vec![at(
                "delivery.max_atempts",
                4,
                &["did you mean `max_attempts`?"],
            )],
        ),
        case(
            "an unknown delivery.nats key suggests the known one",
            lines(&["[delivery.nats]", "url = \"nats://a:1\"", "sbject = \"x\""]),
            vec![at("delivery.nats.sbject", 3, &["did you mean `subject`?"])],
        ),
        case(
            "an unknown delivery key far from any lists the known ones",
            http_delivery(&["nats_url = \"x\""]),
            vec![at(
                "delivery.nats_url",
                4,
                &["remove it; the keys here are: url, secret, timeout"],
            )],
        ),
    ];
    for (url, needle) in [
        ("ftp://app/x", "has scheme \"ftp\": only http and https"),
        ("127.0.0.1:8000/hookwall", "is not an absolute URL"),
        ("/hookwall", "is not an absolute URL"),
        ("http://", "is not a URL"),
        ("http://app/a b", "is not a URL"),
    ] {
        cases.push(case(
            format!("delivery url {url:?}"),
            lines(&[
                "[delivery]",
                "secret = { env = \"S\" }",
                &format!("url = \"{url}\""),
            ]),
            vec![at(
                "delivery.url",
                3,
                &[needle, "write e.g. \"http://127.0.0.1:8000/hookwall\""],
            )],
        ));
    }
    for (url, needle) in [
        (
            "http://127.0.0.1:4222",
            "a scheme other than nats:// or tls://",
        ),
        ("nats://127.0.0.1", "needs a host and a port"),
        ("nats.internal", "needs a host and a port"),
        ("nats://127.0.0.1:4222/x", "has a path"),
    ] {
        cases.push(case(
            format!("nats url {url:?}"),
            lines(&["[delivery.nats]", &format!("url = \"{url}\"")]),
            vec![at("delivery.nats.url", 2, &[needle])],
        ));
    }
    for subject in ["", "a..b", "hookwall.*", "hookwall.>", "a b", ".a"] {
        cases.push(case(
            format!("nats subject {subject:?}"),
            with(NATS, &[&format!("subject = \"{subject}\"")]),
            vec![at(
                "delivery.nats.subject",
                3,
                &["is not a subject to publish to"],
            )],
        ));
    }
    for stream in ["", "A.B", "A B", "A/B", "A*"] {
        cases.push(case(
            format!("nats stream {stream:?}"),
            with(NATS, &[&format!("stream = \"{stream}\"")]),
            vec![at(
                "delivery.nats.stream",
                3,
                &["is not a JetStream stream name"],
            )],
        ));
    }
    cases
}

pub(super) fn validation_cases() -> Vec<Case> {
    let mut cases = vec![
        case(
            "validation is for mpesa routes only",
            http_delivery(&[
                "[[route]]",
                "path = \"/s\"",
                "verify = \"stripe\"",
                "secrets = [{ env = \"S\" }]",
                "validation = { url = \"http://a/v\", on_failure = \"accept\" }",
            ]),
            vec![at(
                "route[0].validation",
                8,
                &[
                    "`validation` applies only to verify = mpesa (M-Pesa C2B validation), not \
                     \"stripe\"",
                ],
            )],
        ),
        // Missing on_failure and url are reported at the table, together.
        case(
            "validation without url and on_failure",
            validation_route("validation = { timeout = \"2s\" }"),
            vec![
                at(
                    "route[0].validation",
                    8,
                    &["needs the application's endpoint that decides"],
                ),
                at(
                    "route[0].validation",
                    8,
                    &["needs on_failure = \"accept\" or \"reject\""],
                ),
            ],
        ),
        case(
            "a misspelled on_failure",
            validation_route("validation = { url = \"http://a/v\", on_failure = \"accpet\" }"),
            vec![at(
                "route[0].validation.on_failure",
                8,
                &[
                    "\"accpet\" is not one of \"accept\", \"reject\"",
                    "did you mean \"accept\"?",
                ],
            )],
        ),
        case(
            "a validation url that is not http",
            validation_route("validation = { url = \"tcp://a/v\", on_failure = \"accept\" }"),
            vec![at(
                "route[0].validation.url",
                8,
                &[
                    "only http and https",
                    "\"http://127.0.0.1:8000/mpesa/validate\"",
                ],
            )],
        ),
        case(
            "an unknown validation key",
            validation_route(
                "validation = { url = \"http://a/v\", on_failure = \"accept\", urll = \"x\" }",
            ),
            vec![at("route[0].validation.urll", 8, &["did you mean `url`?"])],
        ),
        case(
            "validation written as a string",
            validation_route("validation = \"http://a/v\""),
            vec![at(
                "route[0].validation",
                8,
                &["expected a table: validation = {"],
            )],
        ),
        case(
            "validation without [delivery]",
            with(
                MPESA_ROUTE,
                &["validation = { url = \"http://a/v\", on_failure = \"reject\" }"],
            ),
            vec![at(
                "route[0].validation",
                5,
                &["there is no [delivery] section"],
            )],
        ),
        // [delivery] with NATS needs no secret of its own, but validation does.
        case(
            "validation with a [delivery] without secret",
            with(
                &[NATS, MPESA_ROUTE].concat(),
                &["validation = { url = \"http://a/v\", on_failure = \"reject\" }"],
            ),
            vec![at(
                "route[0].validation",
                7,
                &[
                    "signed with delivery.secret, which is not set: add secret = { env = \
                     \"HOOKWALL_DELIVERY_SECRET\" } to [delivery]",
                ],
            )],
        ),
    ];
    for (timeout, needle) in [
        (
            "\"8s\"",
            "\"8s\" is out of range: use 100ms to 7s (default 5s)",
        ),
        ("\"50ms\"", "Safaricom waits about 8 s"),
        ("5", "5 has no unit"),
    ] {
        cases.push(case(
            format!("validation timeout {timeout}"),
            validation_route(&format!(
                "validation = {{ url = \"http://a/v\", timeout = {timeout}, on_failure = \"accept\" }}"
            )),
            vec![at("route[0].validation.timeout", 8, &[needle])],
        ));
    }
    cases
}
