//! The exposition: names, types and units on the wire, and the per-route series a reload
//! removes.

use std::collections::BTreeSet;

use super::*;

fn metrics() -> Metrics {
    Metrics::new(&Pins::new("/sys/fs/bpf/hookwall-unit-test-absent"))
}

/// Metrics with a value in every family (a family with no series is not listed at all).
fn populated() -> Metrics {
    let m = metrics();
    m.health().set_certificate_not_after(1_893_456_000);
    record_on(&m, "/x");
    let sink = SinkLabels { sink: "http" };
    m.delivery
        .attempt_duration
        .get_or_create(&sink)
        .observe(0.1);
    m.delivery.latency.get_or_create(&sink).observe(1.0);
    m.delivery
        .deliveries
        .get_or_create(&DeliveryLabels {
            sink: "http",
            result: "dead",
        })
        .inc();
    m.set_prefixes(1, 1);
    m.acme_orders
        .get_or_create(&OrderLabels { result: "issued" })
        .inc();
    m.sources.register_source("github-hooks");
    m.sources.count_fetch("github-hooks", "ok");
    m.sources
        .set_fetched_at("github-hooks", std::time::SystemTime::now());
    m
}

#[test]
fn fetched_lists_are_counted_by_result_and_their_age_read_at_scrape_time() {
    let m = metrics();
    let source = "http://192.0.2.7/list.txt";
    m.sources.register_source(source);
    m.sources.register_source("stripe-webhooks");
    m.sources.count_fetch(source, "shrink_refused");
    m.sources.count_fetch(source, "shrink_refused");
    let ten_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    m.sources.set_fetched_at(source, ten_minutes_ago);
    m.sources.set_fetched_at("stripe-webhooks", ten_minutes_ago);
    let text = m.render().unwrap();
    let fetches = |result: &str| {
        lines_with(
            &text,
            &format!(
                "hookwall_allow_source_fetches_total{{source=\"{source}\",result=\"{result}\"}} "
            ),
        )
    };
    assert_eq!(fetches("shrink_refused").len(), 1, "{text}");
    assert!(fetches("shrink_refused")[0].ends_with(" 2"), "{text}");
    for result in ["ok", "fetch_failed", "invalid"] {
        assert!(fetches(result)[0].ends_with(" 0"), "{result}: {text}");
    }
    let age = lines_with(
        &text,
        &format!("hookwall_allow_source_age_seconds{{source=\"{source}\"}} "),
    );
    let seconds: f64 = age[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!((600.0..700.0).contains(&seconds), "{age:?}");

    // A source removed from the config loses its series.
    m.sources.retain(&["stripe-webhooks".to_owned()]);
    let text = m.render().unwrap();
    assert!(!text.contains(source), "{text}");
    assert!(
        text.contains("hookwall_allow_source_age_seconds{source=\"stripe-webhooks\"}"),
        "{text}"
    );
}

/// The lines of `text` that start with `prefix`.
fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn the_exposition_carries_the_new_metrics_under_their_exact_names() {
    let text = populated().render().unwrap();
    let build = format!(
        "hookwall_build_info{{version=\"{}\",revision=\"{}\",program_sha256=\"{}\"}} 1",
        crate::build_info::VERSION,
        crate::build_info::GIT_REVISION,
        crate::build_info::program_sha256()
    );
    for line in [
        "# TYPE hookwall_build_info gauge",
        build.as_str(),
        "# TYPE hookwall_http_connections_open gauge",
        "hookwall_http_connections_open 0",
        "# TYPE hookwall_http_requests_in_flight gauge",
        "hookwall_http_requests_in_flight 0",
        "# TYPE hookwall_store_size_bytes gauge",
        "# UNIT hookwall_store_size_bytes bytes",
        "hookwall_store_size_bytes 0",
        "# TYPE hookwall_tls_certificate_not_after_timestamp_seconds gauge",
        "# UNIT hookwall_tls_certificate_not_after_timestamp_seconds seconds",
        "hookwall_tls_certificate_not_after_timestamp_seconds 1893456000",
        "# TYPE hookwall_http_request_duration_seconds histogram",
        "# UNIT hookwall_http_request_duration_seconds seconds",
        "# TYPE hookwall_config_last_reload_success_timestamp_seconds gauge",
        "# UNIT hookwall_config_last_reload_success_timestamp_seconds seconds",
        "# TYPE hookwall_delivery_oldest_pending_age_seconds gauge",
        "# UNIT hookwall_delivery_oldest_pending_age_seconds seconds",
        "# TYPE hookwall_delivery_attempt_duration_seconds histogram",
        "# UNIT hookwall_delivery_attempt_duration_seconds seconds",
        "# TYPE hookwall_delivery_latency_seconds histogram",
        "# UNIT hookwall_delivery_latency_seconds seconds",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(!text.contains("dead_letters"), "{text}");
    // No certificate, no filter applied: neither series is made up.
    let bare = metrics().render().unwrap();
    assert!(!bare.contains("tls_certificate"), "{bare}");
    assert!(!bare.contains("filter_attached"), "{bare}");
}

#[test]
fn every_seconds_and_bytes_family_has_its_unit_and_keeps_its_name() {
    let text = populated().render().unwrap();
    let types = lines_with(&text, "# TYPE ");
    assert!(types.len() >= 18, "{text}");
    for line in types {
        let name = line.split(' ').nth(2).unwrap();
        for unit in ["seconds", "bytes"] {
            if name.ends_with(&format!("_{unit}")) {
                let want = format!("# UNIT {name} {unit}");
                assert!(text.lines().any(|l| l == want), "no {want:?} in:\n{text}");
            }
        }
        assert!(
            !name.ends_with("_seconds_seconds") && !name.ends_with("_bytes_bytes"),
            "{name}"
        );
    }
}

#[test]
fn gauge_units_are_given_back_on_every_way_out() {
    let m = metrics();
    let first = m.connection_open();
    let second = m.connection_open();
    let request = m.request_in_flight();
    assert_eq!(m.http_connections_open.get(), 2);
    assert_eq!(m.http_requests_in_flight.get(), 1);
    drop(first);
    assert_eq!(m.http_connections_open.get(), 1);
    // A panic while holding one unwinds through its drop.
    let held = std::panic::AssertUnwindSafe(m.clone());
    let panicked = std::panic::catch_unwind(move || {
        let _request = held.request_in_flight();
        panic!("handler failed");
    });
    assert!(panicked.is_err());
    assert_eq!(m.http_requests_in_flight.get(), 1);
    drop((second, request));
    assert_eq!(m.http_connections_open.get(), 0);
    assert_eq!(m.http_requests_in_flight.get(), 0);
}

/// One series of each per-route family on `route`.
fn record_on(m: &Metrics, route: &str) {
    m.count_request(&HttpLabels {
        route: route.to_owned(),
        outcome: "refused",
    });
    m.count_refusal(&RefusalLabels {
        route: route.to_owned(),
        reason: "bad_signature",
    });
    m.observe_duration(
        &RouteLabels {
            route: route.to_owned(),
        },
        0.01,
    );
    m.count_validation(&ValidationLabels {
        route: route.to_owned(),
        result: "fallback",
    });
}

#[test]
fn a_route_removed_by_a_reload_loses_every_series_and_the_others_keep_theirs() {
    let m = metrics();
    m.retain_routes(["/a", "/b", "none"]);
    record_on(&m, "/a");
    record_on(&m, "/b");
    m.register_zero(Series::Request(HttpLabels {
        route: "/b".to_owned(),
        outcome: "accepted",
    }));
    let before = m.render().unwrap();
    for route in ["/a", "/b"] {
        let label = format!("route=\"{route}\"");
        // requests, refusals, validations, and the histogram's buckets, sum and count.
        assert!(before.matches(&label).count() > 5, "{before}");
    }

    m.retain_routes(["/a", "none"]);
    let after = m.render().unwrap();
    assert!(!after.contains("route=\"/b\""), "{after}");
    for line in [
        "hookwall_http_requests_total{route=\"/a\",outcome=\"refused\"} 1",
        "hookwall_http_refusals_total{route=\"/a\",reason=\"bad_signature\"} 1",
        "hookwall_validation_requests_total{route=\"/a\",result=\"fallback\"} 1",
        "hookwall_http_request_duration_seconds_count{route=\"/a\"} 1",
    ] {
        assert!(after.lines().any(|l| l == line), "no {line:?} in:\n{after}");
    }

    // A request still in flight on the removed route is not counted back into existence.
    record_on(&m, "/b");
    assert!(!m.render().unwrap().contains("route=\"/b\""));
    // Configured again, it starts from zero.
    m.retain_routes(["/a", "/b", "none"]);
    record_on(&m, "/b");
    let again = m.render().unwrap();
    assert!(
        again
            .lines()
            .any(|l| l == "hookwall_http_requests_total{route=\"/b\",outcome=\"refused\"} 1"),
        "{again}"
    );
}

const OPERATIONS: &str = include_str!("../../../docs/operations.md");

/// (name as scraped, type, unit) of every family in `text`: a counter's samples end in `_total`.
fn families(text: &str) -> BTreeSet<(String, String, String)> {
    lines_with(text, "# TYPE ")
        .into_iter()
        .map(|line| {
            let mut words = line.split(' ').skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            let unit = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# UNIT {name} ")))
                .unwrap_or_default();
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            (sample, kind.to_owned(), unit.to_owned())
        })
        .collect()
}

/// (name, type, unit) of every row of the metrics table in docs/operations.md.
fn documented() -> Vec<(String, String, String)> {
    let section = OPERATIONS
        .split_once("\n## Metrics\n")
        .and_then(|(_, rest)| rest.split_once("\n### "))
        .expect("docs/operations.md has a ## Metrics section")
        .0;
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `hookwall_"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            (
                format!("hookwall_{}", cells[0].trim_end_matches('`')),
                cells[1].trim().to_owned(),
                cells[2].trim().to_owned(),
            )
        })
        .collect()
}

/// Every family the daemon can expose: all recorded ones with a value, the scrape-time ones
/// fed, and the kernel counters (which need a pinned filter) encoded with zeros.
fn every_family() -> String {
    let m = populated();
    m.health()
        .set_interfaces(&["lo".to_owned()], crate::config::AttachMode::Auto);
    let mut text = m.render().unwrap();

    #[derive(Debug)]
    struct ZeroXdp;
    impl prometheus_client::collector::Collector for ZeroXdp {
        fn encode(
            &self,
            mut encoder: prometheus_client::encoding::DescriptorEncoder,
        ) -> Result<(), std::fmt::Error> {
            let zeros =
                [filter_common::CounterValue::default(); filter_common::Counter::COUNT as usize];
            collect::encode_xdp(&mut encoder, &zeros)
        }
    }
    let mut kernel = Registry::with_prefix("hookwall");
    kernel.register_collector(Box::new(ZeroXdp));
    encode(&mut text, &kernel).unwrap();
    text
}

#[test]
fn operations_md_lists_exactly_the_exposed_metrics() {
    let rows = documented();
    let unique: BTreeSet<_> = rows.iter().cloned().collect();
    assert_eq!(unique.len(), rows.len(), "a metric has two rows: {rows:?}");
    let exposed = families(&every_family());
    let undocumented: Vec<_> = exposed.difference(&unique).collect();
    let stale: Vec<_> = unique.difference(&exposed).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/operations.md's metrics table and the registry differ (name, type, unit);\n\
         exposed but not documented so: {undocumented:?}\n\
         documented but not exposed so: {stale:?}"
    );
    // The families only a live daemon shows are in the comparison too.
    for name in [
        "hookwall_xdp_bytes_total",
        "hookwall_filter_attached",
        "hookwall_tls_certificate_not_after_timestamp_seconds",
    ] {
        assert!(exposed.iter().any(|(n, _, _)| n == name), "{name}");
    }
}
