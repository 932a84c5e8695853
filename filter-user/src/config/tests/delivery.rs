//! `[delivery]` and `[delivery.nats]`: configs they accept.

use super::*;

#[test]
fn an_http_delivery_gets_the_documented_defaults() {
    let config = parse_ok(&lines(HTTP_DELIVERY));
    assert_eq!(
        config.delivery,
        Some(DeliveryConfig {
            sink: Sink::Http {
                url: "http://127.0.0.1:8000/hookwall".into()
            },
            secret: Some(SecretRef::Env("HOOKWALL_DELIVERY_SECRET".into())),
            timeout: Duration::from_secs(10),
            max_attempts: 25,
            max_age: Duration::from_secs(3 * 24 * 3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            concurrency: 32,
        })
    );
}

#[test]
fn every_delivery_key_is_read() {
    let config = parse_ok(&http_delivery(&[
        "timeout = \"2500ms\"",
        "max_attempts = 1000",
        "max_age = \"72h\"",
        "backoff_initial = \"5ms\"",
        "backoff_max = \"5ms\"",
        "concurrency = 256",
    ]));
    let delivery = config.delivery.unwrap();
    assert_eq!(delivery.timeout, Duration::from_millis(2500));
    assert_eq!(delivery.max_attempts, 1000);
    assert_eq!(delivery.max_age, Duration::from_secs(72 * 3600));
    assert_eq!(delivery.backoff_initial, Duration::from_millis(5));
    assert_eq!(
        delivery.backoff_max,
        Duration::from_millis(5),
        "equal to backoff_initial is fine"
    );
    assert_eq!(delivery.concurrency, 256);
    // https, a file secret beside the config, and the lowest bounds.
    let config = parse_ok(&lines(&[
        "[delivery]",
        "url = \"https://app.internal/hooks?from=hookwall\"",
        "secret = { file = \"secrets/delivery\" }",
        "timeout = \"100ms\"",
        "max_attempts = 1",
        "max_age = \"1s\"",
        "concurrency = 1",
    ]));
    let delivery = config.delivery.unwrap();
    assert_eq!(
        delivery.sink,
        Sink::Http {
            url: "https://app.internal/hooks?from=hookwall".into()
        }
    );
    assert_eq!(
        delivery.secret,
        Some(SecretRef::File("/etc/hookwall/secrets/delivery".into()))
    );
    assert_eq!(delivery.timeout, Duration::from_millis(100));
    assert_eq!(
        (
            delivery.max_attempts,
            delivery.max_age,
            delivery.concurrency
        ),
        (1, Duration::from_secs(1), 1)
    );
}

#[test]
fn a_nats_delivery_gets_its_defaults_and_needs_no_secret() {
    let config = parse_ok(&lines(&[
        "[delivery.nats]",
        "url = \"nats://127.0.0.1:4222\"",
    ]));
    let delivery = config.delivery.unwrap();
    assert_eq!(
        delivery.sink,
        Sink::Nats(NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject: "hookwall.events".into(),
            stream: "HOOKWALL".into(),
            duplicate_window: Duration::from_secs(120),
            token: None,
        })
    );
    assert_eq!(delivery.secret, None);
    assert_eq!(delivery.max_attempts, 25);

    let config = parse_ok(&lines(&[
        "[delivery]",
        "secret = { env = \"SIGN\" }",
        "[delivery.nats]",
        "url = \"tls://nats.internal:4443\"",
        "subject = \"payments.mpesa.confirmed\"",
        "stream = \"PAYMENTS-v2_A\"",
        "duplicate_window = \"10m\"",
        "token = { env = \"NATS_TOKEN\" }",
    ]));
    let delivery = config.delivery.unwrap();
    assert_eq!(delivery.secret, Some(SecretRef::Env("SIGN".into())));
    assert_eq!(
        delivery.sink,
        Sink::Nats(NatsConfig {
            url: "tls://nats.internal:4443".into(),
            subject: "payments.mpesa.confirmed".into(),
            stream: "PAYMENTS-v2_A".into(),
            duplicate_window: Duration::from_secs(600),
            token: Some(SecretRef::Env("NATS_TOKEN".into())),
        })
    );
    // Without a scheme, and IPv6.
    for url in ["127.0.0.1:4222", "nats://[::1]:4222"] {
        let config = parse_ok(&lines(&["[delivery.nats]", &format!("url = \"{url}\"")]));
        assert!(
            matches!(config.delivery.unwrap().sink, Sink::Nats(n) if n.url == url),
            "{url}"
        );
    }
}
