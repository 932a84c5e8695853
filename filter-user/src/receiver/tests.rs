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

    use super::super::{App, Peer, router};
    use crate::{
        config,
        filter::Pins,
        metrics::{HttpLabels, Metrics},
        store::Store,
    };

    const MPESA: &str = "/mpesa/c2b";
    const TOKEN: &str = "t0k3n-for-tests-Zq8vX2pL9m";
    const GH: &str = "/hooks/github";
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
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("token"), TOKEN).unwrap();
            std::fs::write(dir.path().join("github"), GH_SECRET).unwrap();
            let store_path = dir.path().join("events.db");
            let text = format!(
                r#"
[filter]
interfaces = ["lo"]

[allow]
cidrs = ["192.0.2.0/24"]

[server]
listen = "127.0.0.1:8443"
tls = "self-signed"

[server.limits]
body_limit_bytes = {BODY_LIMIT}

[store]
path = "{store}"

[[route]]
path = "{MPESA}"
verify = "mpesa"
token = {{ file = "token" }}

[[route]]
path = "{GH}"
verify = "github"
secrets = [{{ file = "github" }}]
"#,
                store = store_path.display(),
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

        async fn send(
            &self,
            from: &str,
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
}
