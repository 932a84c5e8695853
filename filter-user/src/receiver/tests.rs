use std::{
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU32,
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::forget_idle_clients;

#[test]
fn the_rate_limiter_forgets_clients_whose_budget_refilled() {
    // 10 per second, burst 2: a client's state is back to "fresh" 200 ms after its last call.
    let quota =
        Quota::per_second(NonZeroU32::new(10).unwrap()).allow_burst(NonZeroU32::new(2).unwrap());
    let limiter: DefaultKeyedRateLimiter<IpAddr> = RateLimiter::keyed(quota);
    for i in 0..5000_u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0xC633_0000 | i));
        assert!(limiter.check_key(&ip).is_ok());
    }
    assert_eq!(limiter.len(), 5000);
    std::thread::sleep(Duration::from_millis(300));
    // A client that is using its budget now is kept (it has 200 ms before it is fresh).
    let busy = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    while limiter.check_key(&busy).is_ok() {}
    forget_idle_clients(&limiter);
    assert_eq!(
        limiter.len(),
        1,
        "only the client still within its window is kept"
    );
}

// ---------------------------------------------------------------------------------------------
// The router: the pipeline's steps and their order, without a socket
// ---------------------------------------------------------------------------------------------

mod router {
    use std::{net::SocketAddr, sync::Arc};

    use axum::{
        Router,
        body::Body,
        http::{Request, Response, StatusCode, header},
    };
    use tempfile::TempDir;

    use super::super::{App, Peer, client::ProxiedClient, router};
    use crate::{
        config,
        filter::Pins,
        metrics::{HttpLabels, Metrics, RefusalLabels},
        store::Store,
    };

    const MPESA: &str = "/mpesa/c2b";
    const TOKEN: &str = "t0k3n-for-tests-Zq8vX2pL9m";
    const GH: &str = "/hooks/github";
    const STRIPE: &str = "/hooks/stripe";
    const STRIPE_SECRET: &str = "whsec_receiver_tests";
    const SW: &str = "/hooks/sw";
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    /// GitHub's published example: this secret signs this body with this signature.
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const BODY_LIMIT: usize = 4096;
    const C2B_CONFIRMATION: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/daraja/c2b_confirmation.json"
    ));
    /// On the config's allowlist.
    const ALLOWED: &str = "192.0.2.10:40000";
    /// Not on it.
    const STRANGER: &str = "198.51.100.20:40000";
    /// On the config's allowlist too, but not in the `allow` of the route-allow tests.
    const NEIGHBOUR: &str = "192.0.2.99:40000";

    /// A router over a real store in a temporary directory, with an `mpesa` and a `github`
    /// route.
    struct Env {
        /// Holds the store and the secret files.
        _dir: TempDir,
        store: Option<Store>,
        metrics: Metrics,
        router: Router,
    }

    impl Env {
        fn new() -> Self {
            Self::with(&[], "")
        }

        /// With more allowlist entries and lines added to `[server]`.
        fn with(allow: &[&str], server: &str) -> Self {
            Self::with_limits(allow, server, "")
        }

        /// As [`Env::with`], with lines added to `[server.limits]`.
        fn with_limits(allow: &[&str], server: &str, limits: &str) -> Self {
            Self::build(allow, server, limits, &[])
        }

        /// As [`Env::with`], with `allow = VALUE` on the routes named in `route_allow`
        /// (path, value).
        fn with_route_allow(server: &str, route_allow: &[(&str, &str)]) -> Self {
            Self::build(&[], server, "", route_allow)
        }

        fn build(allow: &[&str], server: &str, limits: &str, route_allow: &[(&str, &str)]) -> Self {
            let route_allow = |path: &str| {
                route_allow
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, value)| format!("allow = {value}"))
                    .unwrap_or_default()
            };
            let cidrs: Vec<String> = ["192.0.2.0/24"]
                .iter()
                .chain(allow)
                .map(|c| format!("{c:?}"))
                .collect();
            let cidrs = cidrs.join(", ");
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("token"), TOKEN).unwrap();
            std::fs::write(dir.path().join("github"), GH_SECRET).unwrap();
            std::fs::write(dir.path().join("stripe"), STRIPE_SECRET).unwrap();
            std::fs::write(dir.path().join("sw"), SW_SECRET).unwrap();
            let store_path = dir.path().join("events.db");
            let text = format!(
                r#"
[filter]
interfaces = ["lo"]

[allow]
cidrs = [{cidrs}]

[server]
listen = "127.0.0.1:8443"
tls = "self-signed"
{server}

[server.limits]
body_limit_bytes = {BODY_LIMIT}
{limits}

[store]
path = "{store}"

[[route]]
path = "{MPESA}"
verify = "mpesa"
token = {{ file = "token" }}
{mpesa_allow}

[[route]]
path = "{GH}"
verify = "github"
secrets = [{{ file = "github" }}]
{gh_allow}

[[route]]
path = "{STRIPE}"
verify = "stripe"
secrets = [{{ file = "stripe" }}]
{stripe_allow}

[[route]]
path = "{SW}"
verify = "standard-webhooks"
secrets = [{{ file = "sw" }}]
{sw_allow}
"#,
                store = store_path.display(),
                mpesa_allow = route_allow(MPESA),
                gh_allow = route_allow(GH),
                stripe_allow = route_allow(STRIPE),
                sw_allow = route_allow(SW),
            );
            let config = config::parse(&dir.path().join("hookwall.toml"), &text)
                .unwrap_or_else(|e| panic!("{e}"));
            let store = Store::open(&store_path).unwrap();
            let metrics = Metrics::new(&Pins::new(dir.path().join("pins")));
            let app = App::new(&config, store.handle(), metrics.clone()).unwrap();
            Self {
                _dir: dir,
                store: Some(store),
                metrics,
                router: router(Arc::new(app)),
            }
        }

        /// A request from `from` whose body never ends: it holds its place in flight until
        /// dropped.
        fn endless(
            &self,
            from: &str,
            path: &str,
            headers: &[(&str, &str)],
            declared: u64,
        ) -> impl Future<Output = Response<Body>> + use<> {
            let mut request = Request::builder()
                .method("POST")
                .uri(path)
                .header(header::CONTENT_LENGTH, declared);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
            let mut request = request.body(Body::from_stream(never)).unwrap();
            request
                .extensions_mut()
                .insert(Peer(from.parse::<SocketAddr>().unwrap()));
            let mut router = self.router.clone();
            async move {
                tower_service::Service::call(&mut router, request)
                    .await
                    .unwrap()
            }
        }

        async fn send(
            &self,
            from: &str,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> Response<Body> {
            self.send_proxied(from, None, method, path, headers, body)
                .await
        }

        /// As [`Env::send`], on a connection whose PROXY header said `proxied`.
        async fn send_proxied(
            &self,
            from: &str,
            proxied: Option<ProxiedClient>,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> Response<Body> {
            let mut request = Request::builder().method(method).uri(path);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let mut request = request.body(Body::from(body.to_vec())).unwrap();
            request
                .extensions_mut()
                .insert(Peer(from.parse::<SocketAddr>().unwrap()));
            if let Some(proxied) = proxied {
                request.extensions_mut().insert(proxied);
            }
            let mut router = self.router.clone();
            tower_service::Service::call(&mut router, request)
                .await
                .unwrap()
        }

        /// `hookwall_http_requests_total{route, outcome}`.
        fn requests(&self, route: &str, outcome: &'static str) -> u64 {
            self.metrics
                .http_requests
                .get_or_create(&HttpLabels {
                    route: route.to_owned(),
                    outcome,
                })
                .get()
        }

        /// `hookwall_http_refusals_total{route, reason}`.
        fn refusals(&self, route: &str, reason: &'static str) -> u64 {
            self.metrics
                .http_refusals
                .get_or_create(&RefusalLabels {
                    route: route.to_owned(),
                    reason,
                })
                .get()
        }

        fn stored(&self) -> u64 {
            self.store.as_ref().unwrap().count().unwrap()
        }
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    fn gh_headers(signature: &'static str) -> [(&'static str, &'static str); 4] {
        [
            JSON,
            ("x-github-event", "push"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("x-hub-signature-256", signature),
        ]
    }

    #[tokio::test]
    async fn refusals_come_in_pipeline_order_and_store_nothing() {
        let env = Env::new();
        let mpesa = format!("{MPESA}/{TOKEN}");

        // Unknown path: 404, before anything else is looked at (a GET with no body here).
        let r = env.send(ALLOWED, "GET", "/nowhere", &[], b"").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(env.requests("none", "not_found"), 1);

        // An `mpesa` route from a client off the allowlist: 403, before the method is looked at.
        let r = env
            .send(STRANGER, "GET", &mpesa, &[JSON], C2B_CONFIRMATION)
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(env.requests(MPESA, "forbidden_peer"), 1);

        // The method before the content type: a GET without one is 405 with Allow.
        let r = env.send(ALLOWED, "GET", &mpesa, &[], b"").await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            r.headers().get(header::ALLOW).map(|v| v.to_str().unwrap()),
            Some("POST")
        );
        assert_eq!(env.requests(MPESA, "method_not_allowed"), 1);

        // The content type before the body: an oversized text/plain body is 415.
        let big = vec![b'x'; BODY_LIMIT + 1];
        let r = env
            .send(ALLOWED, "POST", GH, &[("content-type", "text/plain")], &big)
            .await;
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(env.requests(GH, "unsupported_media_type"), 1);

        // The body's size before its signature: an oversized body with a bad signature is 413.
        let r = env
            .send(ALLOWED, "POST", GH, &gh_headers("sha256=00"), &big)
            .await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(env.requests(GH, "too_large"), 1);

        // A bad signature: 401.
        let forged = "sha256=0000000000000000000000000000000000000000000000000000000000000000";
        let r = env
            .send(ALLOWED, "POST", GH, &gh_headers(forged), GH_BODY)
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(env.requests(GH, "refused"), 1);

        assert_eq!(env.stored(), 0, "nothing refused is stored");
        assert_eq!(
            env.requests(MPESA, "accepted") + env.requests(GH, "accepted"),
            0
        );
    }

    #[tokio::test]
    async fn a_wrong_or_missing_mpesa_token_is_counted_as_not_found() {
        let env = Env::new();
        for path in [format!("{MPESA}/wrong-token"), MPESA.to_owned()] {
            let r = env
                .send(ALLOWED, "POST", &path, &[JSON], C2B_CONFIRMATION)
                .await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }
        // Counted like an unknown path, under the route it probed (the audit reason names the
        // token).
        assert_eq!(env.requests(MPESA, "not_found"), 2);
        assert_eq!(env.requests(MPESA, "refused"), 0);
        assert_eq!(env.stored(), 0);
    }

    #[tokio::test]
    async fn a_valid_callback_is_stored_once_and_its_retry_is_a_duplicate() {
        let mut env = Env::new();
        let mpesa = format!("{MPESA}/{TOKEN}");
        let r = env
            .send(ALLOWED, "POST", &mpesa, &[JSON], C2B_CONFIRMATION)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(env.requests(MPESA, "accepted"), 1);
        assert_eq!(env.stored(), 1, "stored before answered");

        let r = env
            .send(ALLOWED, "POST", &mpesa, &[JSON], C2B_CONFIRMATION)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(env.requests(MPESA, "duplicate"), 1);

        let r = env
            .send(ALLOWED, "POST", GH, &gh_headers(GH_SIGNATURE), GH_BODY)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(env.requests(GH, "accepted"), 1);
        assert_eq!(env.stored(), 2);

        let store = env.store.take().unwrap();
        let event = store.find(MPESA, "RKTQDM7W6S").unwrap().expect("stored");
        assert_eq!(event.body, C2B_CONFIRMATION);
        store.close().await.unwrap();
    }

    /// A `Stripe-Signature` header signed with the route's secret at unix time `t`.
    fn stripe_signature(t: u64, body: &[u8]) -> String {
        use hmac::{Hmac, KeyInit as _, Mac as _};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(STRIPE_SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[tokio::test]
    async fn a_forgery_and_clock_skew_are_told_apart_in_the_refusal_metric() {
        let env = Env::new();
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Registered at zero before any request.
        assert_eq!(env.refusals(STRIPE, "bad_signature"), 0);
        assert_eq!(env.refusals(STRIPE, "timestamp_too_old"), 0);
        assert!(env.metrics.render().unwrap().contains(
            r#"hookwall_http_refusals_total{route="/hooks/stripe",reason="timestamp_too_old"} 0"#
        ));

        let forged = format!("t={now},v1={}", "00".repeat(32));
        let stale = stripe_signature(now - 3600, body);
        for (signature, status) in [
            (forged.as_str(), StatusCode::UNAUTHORIZED),
            (stale.as_str(), StatusCode::UNAUTHORIZED),
            (stale.as_str(), StatusCode::UNAUTHORIZED),
        ] {
            let r = env
                .send(
                    ALLOWED,
                    "POST",
                    STRIPE,
                    &[JSON, ("stripe-signature", signature)],
                    body,
                )
                .await;
            assert_eq!(r.status(), status);
        }
        assert_eq!(env.requests(STRIPE, "refused"), 3);
        assert_eq!(env.refusals(STRIPE, "bad_signature"), 1);
        assert_eq!(env.refusals(STRIPE, "timestamp_too_old"), 2);

        // A step without a finer reason counts under its outcome; success is not a refusal.
        let r = env.send(ALLOWED, "GET", STRIPE, &[], b"").await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(env.refusals(STRIPE, "method_not_allowed"), 1);
        let fresh = stripe_signature(now, body);
        let r = env
            .send(
                ALLOWED,
                "POST",
                STRIPE,
                &[JSON, ("stripe-signature", &fresh)],
                body,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let text = env.metrics.render().unwrap();
        let refused: u64 = text
            .lines()
            .filter(|l| l.starts_with("hookwall_http_refusals_total{route=\"/hooks/stripe\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(refused, 4, "{text}");
    }

    /// One request: route, headers, body.
    type Signed = (&'static str, Vec<(String, String)>, Vec<u8>);

    /// A correctly signed request to each signed route, each with its own event id (`n`).
    fn signed_requests(n: u32) -> Vec<Signed> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let json = ("content-type".to_owned(), "application/json".to_owned());
        let stripe_body = format!(r#"{{"id":"evt_{n}","type":"charge.succeeded"}}"#).into_bytes();
        let sw_body = br#"{"type":"invoice.paid"}"#.to_vec();
        let sw_id = format!("msg_{n}");
        let signer = crate::verify::Signer::from_secret(&crate::config::Secret::from_bytes(
            SW_SECRET.as_bytes().to_vec(),
        ))
        .unwrap();
        let sw_signature = signer.sign(&sw_id, i64::try_from(now).unwrap(), &sw_body);
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        // GitHub's event id is the body's digest: each request its own body.
        let gh_body = format!(r#"{{"zen":"request {n}"}}"#).into_bytes();
        let mut gh = owned(&gh_headers(GH_SIGNATURE));
        gh[3].1 = {
            use hmac::{Hmac, KeyInit as _, Mac as _};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(GH_SECRET.as_bytes()).unwrap();
            mac.update(&gh_body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        };
        vec![
            (GH, gh, gh_body),
            (
                STRIPE,
                vec![
                    json.clone(),
                    (
                        "stripe-signature".to_owned(),
                        stripe_signature(now, &stripe_body),
                    ),
                ],
                stripe_body,
            ),
            (
                SW,
                vec![
                    json,
                    ("webhook-id".to_owned(), sw_id),
                    ("webhook-timestamp".to_owned(), now.to_string()),
                    ("webhook-signature".to_owned(), sw_signature),
                ],
                sw_body,
            ),
        ]
    }

    /// Sends each of [`signed_requests`]`(n)` from `from` (and `proxied`) and asserts `status`.
    async fn send_signed(
        env: &Env,
        from: &str,
        extra: &[(&str, &str)],
        n: u32,
        status: StatusCode,
    ) {
        for (route, headers, body) in signed_requests(n) {
            let mut headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            headers.extend_from_slice(extra);
            let r = env.send(from, "POST", route, &headers, &body).await;
            assert_eq!(r.status(), status, "{route} from {from} {extra:?}");
        }
    }

    const SIGNED_ROUTE_ALLOW: [(&str, &str); 3] = [
        (GH, r#"["192.0.2.10"]"#),
        (STRIPE, r#"["mpesa", "192.0.2.0/28"]"#),
        (SW, r#"["2001:db8::/32", "192.0.2.10/32"]"#),
    ];

    #[tokio::test]
    async fn a_signed_route_with_allow_refuses_a_valid_callback_from_outside_it() {
        let env = Env::with_route_allow("", &SIGNED_ROUTE_ALLOW);
        for (route, _) in SIGNED_ROUTE_ALLOW {
            // Registered at zero, so an alert has a series before the first refusal.
            assert!(
                env.metrics.render().unwrap().contains(&format!(
                    "hookwall_http_refusals_total{{route=\"{route}\",reason=\"route_source\"}} 0"
                )),
                "{route}"
            );
        }
        // On [allow] (so the filter lets it through), but outside each route's own list: the
        // signature is right and still nothing is stored.
        send_signed(&env, NEIGHBOUR, &[], 1, StatusCode::FORBIDDEN).await;
        assert_eq!(env.stored(), 0);
        for (route, _) in SIGNED_ROUTE_ALLOW {
            assert_eq!(env.requests(route, "forbidden_peer"), 1, "{route}");
            assert_eq!(env.refusals(route, "route_source"), 1, "{route}");
            assert_eq!(env.refusals(route, "peer_not_allowed"), 0, "{route}");
        }
        // From inside: accepted and stored.
        send_signed(&env, ALLOWED, &[], 2, StatusCode::OK).await;
        // An IPv4-mapped peer (a dual-stack socket's view of an IPv4 client) is judged as IPv4.
        send_signed(&env, "[::ffff:192.0.2.10]:40000", &[], 3, StatusCode::OK).await;
        for (route, _) in SIGNED_ROUTE_ALLOW {
            assert_eq!(env.requests(route, "accepted"), 2, "{route}");
        }
        assert_eq!(env.stored(), 6);
        // An allowed source gets no further than before: a forgery is still a forgery.
        let forged = "sha256=0000000000000000000000000000000000000000000000000000000000000000";
        let r = env
            .send(ALLOWED, "POST", GH, &gh_headers(forged), GH_BODY)
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_route_without_allow_accepts_any_source_and_mpesa_keeps_the_allowlist() {
        let env = Env::new();
        assert!(
            !env.metrics
                .render()
                .unwrap()
                .contains("reason=\"route_source\""),
            "no route has allow, so no route_source series"
        );
        // No `allow`: even a source off [allow] (which only monitor mode lets through) passes.
        send_signed(&env, STRANGER, &[], 1, StatusCode::OK).await;
        for route in [GH, STRIPE, SW] {
            assert_eq!(env.requests(route, "accepted"), 1, "{route}");
            assert_eq!(env.refusals(route, "route_source"), 0, "{route}");
        }
        // M-Pesa's default is [allow]'s list, counted as before.
        let mpesa = format!("{MPESA}/{TOKEN}");
        let r = env
            .send(STRANGER, "POST", &mpesa, &[JSON], C2B_CONFIRMATION)
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(env.refusals(MPESA, "peer_not_allowed"), 1);
        assert_eq!(env.refusals(MPESA, "route_source"), 0);
        let r = env
            .send(NEIGHBOUR, "POST", &mpesa, &[JSON], C2B_CONFIRMATION)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_mpesa_route_with_allow_uses_its_own_list_instead_of_the_allowlist() {
        let env = Env::with_route_allow("", &[(MPESA, r#"["mpesa", "192.0.2.10"]"#)]);
        let mpesa = format!("{MPESA}/{TOKEN}");
        let r = env
            .send(NEIGHBOUR, "POST", &mpesa, &[JSON], C2B_CONFIRMATION)
            .await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "on [allow], not on the route's"
        );
        assert_eq!(env.refusals(MPESA, "route_source"), 1);
        assert_eq!(env.refusals(MPESA, "peer_not_allowed"), 0);
        let r = env
            .send(ALLOWED, "POST", &mpesa, &[JSON], C2B_CONFIRMATION)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn behind_a_trusted_proxy_a_route_allow_judges_the_forwarded_client() {
        // The proxy is on [allow] (the filter judges its packets) but not on any route's list.
        let env = Env::build(
            &["203.0.113.1"],
            r#"client_address = { header = "x-forwarded-for", trusted_proxies = ["203.0.113.0/24"] }"#,
            "",
            &SIGNED_ROUTE_ALLOW,
        );
        let xff = |client| [("x-forwarded-for", client)];
        send_signed(&env, PROXY, &xff("192.0.2.10"), 1, StatusCode::OK).await;
        send_signed(&env, PROXY, &xff("192.0.2.99"), 2, StatusCode::FORBIDDEN).await;
        // A caller's own entry left of the proxy's is not the client.
        send_signed(
            &env,
            PROXY,
            &xff("192.0.2.10, 198.51.100.7"),
            3,
            StatusCode::FORBIDDEN,
        )
        .await;
        // No header: the proxy's own address is never judged as the client.
        send_signed(&env, PROXY, &[], 4, StatusCode::FORBIDDEN).await;
        for (route, _) in SIGNED_ROUTE_ALLOW {
            assert_eq!(env.requests(route, "accepted"), 1, "{route}");
            assert_eq!(env.refusals(route, "route_source"), 2, "{route}");
            assert_eq!(env.refusals(route, "client_address_missing"), 1, "{route}");
        }
        // A peer that is not a trusted proxy is its own client: its header names no one.
        send_signed(
            &env,
            NEIGHBOUR,
            &xff("192.0.2.10"),
            5,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(env.stored(), 3);
    }

    /// The proxy of the client-address tests: trusted, and on the allowlist, as a remote proxy
    /// must be for its packets to pass the kernel filter in enforce mode.
    const PROXY: &str = "203.0.113.1:50000";

    /// Every case: (headers, expected status, what it shows), from [`PROXY`] on an `mpesa`
    /// route.
    /// (forwarding headers, expected status, what the case shows)
    type Case<'a> = (&'a [(&'a str, &'a str)], StatusCode, &'a str);

    async fn judge(env: &Env, cases: &[Case<'_>]) {
        let mpesa = format!("{MPESA}/{TOKEN}");
        for (forwarding, status, what) in cases {
            let mut headers = vec![JSON];
            headers.extend_from_slice(forwarding);
            let r = env
                .send(PROXY, "POST", &mpesa, &headers, C2B_CONFIRMATION)
                .await;
            assert_eq!(r.status(), *status, "{what}");
        }
    }

    #[tokio::test]
    async fn behind_a_header_proxy_only_its_header_names_the_client() {
        let env = Env::with(
            &["203.0.113.1"],
            r#"client_address = { header = "x-forwarded-for", trusted_proxies = ["203.0.113.0/24"] }"#,
        );
        judge(
            &env,
            &[
                (
                    &[("x-forwarded-for", "192.0.2.10")],
                    StatusCode::OK,
                    "the client the proxy saw is allowed",
                ),
                (
                    &[
                        ("x-forwarded-for", "198.51.100.7"),
                        ("forwarded", "for=192.0.2.10"),
                    ],
                    StatusCode::FORBIDDEN,
                    "a second header the caller added is not read",
                ),
                (
                    &[("x-forwarded-for", "192.0.2.10, 198.51.100.7")],
                    StatusCode::FORBIDDEN,
                    "an allowed address the caller put in front of the proxy's entry",
                ),
                (
                    &[],
                    StatusCode::FORBIDDEN,
                    "no header: the proxy's own (allowed) address is not the client",
                ),
                (
                    &[("x-forwarded-for", "192.0.2.10, nonsense")],
                    StatusCode::FORBIDDEN,
                    "a malformed entry: not the proxy's address either",
                ),
                (
                    &[("forwarded", "for=192.0.2.10")],
                    StatusCode::FORBIDDEN,
                    "only the other header: missing",
                ),
            ],
        )
        .await;
        assert_eq!(env.requests(MPESA, "forbidden_peer"), 5);
        // A peer that is not a trusted proxy is its own client; its header is not read.
        let mpesa = format!("{MPESA}/{TOKEN}");
        let spoof = [JSON, ("x-forwarded-for", "192.0.2.10")];
        let r = env
            .send(STRANGER, "POST", &mpesa, &spoof, C2B_CONFIRMATION)
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = env
            .send(
                ALLOWED,
                "POST",
                &mpesa,
                &[JSON, ("x-forwarded-for", "198.51.100.7")],
                C2B_CONFIRMATION,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "an allowed untrusted peer");
        assert_eq!(env.requests(MPESA, "forbidden_peer"), 6);
        assert_eq!(env.stored(), 1);
    }

    #[tokio::test]
    async fn behind_a_forwarded_proxy_the_x_forwarded_for_header_is_not_read() {
        let env = Env::with(
            &["203.0.113.1"],
            r#"client_address = { header = "forwarded", trusted_proxies = ["203.0.113.0/24"] }"#,
        );
        judge(
            &env,
            &[
                (
                    &[("forwarded", "for=192.0.2.10;proto=https")],
                    StatusCode::OK,
                    "the client the proxy saw is allowed",
                ),
                (
                    &[
                        ("forwarded", "for=198.51.100.7"),
                        ("x-forwarded-for", "192.0.2.10"),
                    ],
                    StatusCode::FORBIDDEN,
                    "X-Forwarded-For the caller added is not read",
                ),
                (
                    &[("forwarded", "for=192.0.2.10, for=unknown")],
                    StatusCode::FORBIDDEN,
                    "an unknown hop right of the client",
                ),
                (
                    &[("x-forwarded-for", "192.0.2.10")],
                    StatusCode::FORBIDDEN,
                    "only the other header: missing",
                ),
            ],
        )
        .await;
        assert_eq!(env.requests(MPESA, "forbidden_peer"), 3);
    }

    #[tokio::test]
    async fn behind_a_proxy_protocol_balancer_its_header_names_the_client() {
        let env = Env::with(
            &["203.0.113.1"],
            r#"client_address = { proxy_protocol = true, trusted_proxies = ["203.0.113.0/24"] }"#,
        );
        let mpesa = format!("{MPESA}/{TOKEN}");
        let source = |s: &str| Some(ProxiedClient::Source(s.parse().unwrap()));
        for (proxied, status, what) in [
            (
                source("192.0.2.10:40000"),
                StatusCode::OK,
                "an allowed client",
            ),
            (
                source("198.51.100.7:40000"),
                StatusCode::FORBIDDEN,
                "a client off the allowlist",
            ),
            (
                Some(ProxiedClient::Local),
                StatusCode::FORBIDDEN,
                "LOCAL / UNKNOWN: not the balancer's own (allowed) address",
            ),
        ] {
            // A forwarding header is not read in this mode.
            let headers = [JSON, ("x-forwarded-for", "192.0.2.10")];
            let r = env
                .send_proxied(PROXY, proxied, "POST", &mpesa, &headers, C2B_CONFIRMATION)
                .await;
            assert_eq!(r.status(), status, "{what}");
        }
        assert_eq!(env.requests(MPESA, "forbidden_peer"), 2);
    }

    #[tokio::test]
    async fn one_client_holding_its_in_flight_cap_does_not_starve_another() {
        let env = Env::with_limits(&[], "", "max_in_flight_per_client = 2");
        let hog = "[2001:db8:1:2::1]:40000";
        // Two requests whose bodies never end: the hog's whole share, held.
        let held: Vec<_> = (0..2)
            .map(|_| tokio::spawn(env.endless(hog, GH, &gh_headers(GH_SIGNATURE), 13)))
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            held.iter().all(|t| !t.is_finished()),
            "still reading bodies"
        );

        // A third from the hog, or from another address of its /64: 503, at once.
        for from in [hog, "[2001:db8:1:2:ffff::9]:40001"] {
            let r = env
                .send(from, "POST", GH, &gh_headers(GH_SIGNATURE), GH_BODY)
                .await;
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{from}");
            assert_eq!(
                r.headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap()),
                Some("1")
            );
        }
        assert_eq!(env.requests("none", "overloaded"), 2);

        // Another client (another /64, or IPv4) is served.
        for from in ["[2001:db8:1:3::1]:40000", ALLOWED] {
            let r = env
                .send(from, "POST", GH, &gh_headers(GH_SIGNATURE), GH_BODY)
                .await;
            assert_eq!(r.status(), StatusCode::OK, "{from}");
        }
        for task in held {
            task.abort();
        }
    }

    #[tokio::test]
    async fn a_wrong_token_or_a_missing_signature_is_refused_before_the_body() {
        let env = Env::new();
        let huge = 1 << 30;
        let within = std::time::Duration::from_secs(2);
        // A body declared far over the limit, that never arrives: refused without reading it
        // (a read would wait for the body timeout; the length check would answer 413).
        let r = tokio::time::timeout(
            within,
            env.endless(ALLOWED, &format!("{MPESA}/wrong-token"), &[JSON], huge),
        )
        .await
        .expect("answered without reading the body");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(env.requests(MPESA, "not_found"), 1);

        // Unsigned, within the limit: 401 without waiting for the body.
        let unsigned = [JSON, ("x-github-event", "push")];
        let r = tokio::time::timeout(within, env.endless(ALLOWED, GH, &unsigned, 100))
            .await
            .expect("answered without reading the body");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(env.refusals(GH, "missing_header"), 1);
        assert_eq!(env.stored(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// A reload: what `Server::apply` does to the per-route series and the certificate's expiry
// ---------------------------------------------------------------------------------------------

mod reload {
    use std::{net::SocketAddr, sync::Arc};

    use axum::{body::Body, http::Request};

    use super::super::{Peer, Server, router};
    use crate::{config, filter::Pins, metrics::Metrics, store::Store};

    /// A config with a GitHub route on each of `paths`, served with a self-signed certificate
    /// on a loopback port nothing connects to.
    fn config(dir: &std::path::Path, paths: &[&str]) -> config::Config {
        std::fs::write(dir.join("github"), "a secret for the reload test").unwrap();
        let mut text = format!(
            "[filter]\ninterfaces = [\"lo\"]\nprotected_ports = [443]\n\n\
             [allow]\ncidrs = [\"192.0.2.0/24\"]\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\ntls = \"self-signed\"\n\n\
             [store]\npath = \"{}\"\n",
            dir.join("events.db").display()
        );
        for path in paths {
            text.push_str(&format!(
                "\n[[route]]\npath = \"{path}\"\nverify = \"github\"\n\
                 secrets = [{{ file = \"github\" }}]\n"
            ));
        }
        config::parse(&dir.join("hookwall.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_reload_without_a_route_removes_its_series_and_keeps_the_others() {
        super::super::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("events.db")).unwrap();
        let metrics = Metrics::new(&Pins::new(dir.path().join("pins")));
        let both = config(dir.path(), &["/hooks/a", "/hooks/b"]);
        let server = Server::bind(&both, store.handle(), metrics.clone(), None)
            .await
            .unwrap();
        let app = router(Arc::clone(&server.app));
        for path in ["/hooks/a", "/hooks/b"] {
            // Unsigned: refused for its missing signature header, counted on its route.
            let mut request = Request::post(path).body(Body::empty()).unwrap();
            request
                .extensions_mut()
                .insert(Peer("192.0.2.10:40000".parse::<SocketAddr>().unwrap()));
            let answer = tower_service::Service::call(&mut app.clone(), request)
                .await
                .unwrap();
            assert!(answer.status().is_client_error(), "{path}: {answer:?}");
        }
        let before = metrics.render().unwrap();
        assert!(before.contains("route=\"/hooks/b\""), "{before}");
        assert!(
            before.contains("hookwall_tls_certificate_not_after_timestamp_seconds "),
            "{before}"
        );

        server
            .apply(&config(dir.path(), &["/hooks/a"]))
            .expect("reload");
        let after = metrics.render().unwrap();
        assert!(!after.contains("route=\"/hooks/b\""), "{after}");
        for line in [
            "hookwall_http_requests_total{route=\"/hooks/a\",outcome=\"unsupported_media_type\"} 1",
            "hookwall_http_refusals_total{route=\"/hooks/a\",reason=\"unsupported_media_type\"} 1",
            "hookwall_http_request_duration_seconds_count{route=\"/hooks/a\"} 1",
            "hookwall_http_requests_total{route=\"/hooks/a\",outcome=\"accepted\"} 0",
        ] {
            assert!(after.lines().any(|l| l == line), "no {line:?} in:\n{after}");
        }
    }
}
