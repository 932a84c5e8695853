//! End-to-end tests of delivery: a real `hookwall run` in the server namespace receives Daraja
//! callbacks over TLS from the client namespace, stores them and delivers them to a real HTTP
//! application ([`TestApp`](hookwall_tests::app::TestApp)) on loopback in the server namespace,
//! which checks hookwall's Standard Webhooks signature with the reference library and records
//! every receipt. Ids are counted on both sides: what the provider had acknowledged against what
//! the application received.
//!
//! Run as root with bpffs mounted: `cargo build -p hookwall --bins &&
//! HOOKWALL_BIN=$PWD/target/debug/hookwall cargo test -p hookwall-tests --test e2e_delivery`.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use hookwall::store::EventState;
use hookwall_tests::{
    config::{DeliverySpec, Route},
    daemon::{Daemon, find_metric, output_text, poll_until},
    https::{Reply, request},
    lab::Lab,
    netns::{ALLOWED_V4, PROTECTED_PORT, srv_addr},
};

const CONFIRMATION: &str = "/mpesa/c2b/confirmation";
/// A validation route whose fallback rejects (C2B00016).
const VALIDATION: &str = "/mpesa/c2b/validation";
/// A validation route whose fallback accepts.
const VALIDATION_LENIENT: &str = "/mpesa/c2b/validation-lenient";
const TOKEN: &str = "tok3n-Zq8vX2pL9mW4rT7yK1sB6nD0fH5jG";
/// hookwall's delivery signing key (a different key from any provider's).
const DELIVERY_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const APP_PORT: u16 = 8000;
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(1);
const JSON: (&str, &str) = ("Content-Type", "application/json");
const ACCEPTED: &str = r#"{"ResultCode":0,"ResultDesc":"Accepted"}"#;
const REJECTED_12: &str = r#"{"ResultCode":"C2B00012","ResultDesc":"Rejected"}"#;
const REJECTED_16: &str = r#"{"ResultCode":"C2B00016","ResultDesc":"Rejected"}"#;

const C2B_CONFIRMATION: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));
const C2B_VALIDATION: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_validation.json"
));

/// The fixture's confirmation with its TransID replaced by `id`.
fn confirmation(id: &str) -> Vec<u8> {
    assert!(C2B_CONFIRMATION.contains("\"RKTQDM7W6S\""));
    C2B_CONFIRMATION
        .replace("\"RKTQDM7W6S\"", &format!("{id:?}"))
        .into_bytes()
}

/// The fixture's validation request with its TransID replaced by `id`.
fn validation(id: &str) -> Vec<u8> {
    assert!(C2B_VALIDATION.contains("\"RKTQDM7W6T\""));
    C2B_VALIDATION
        .replace("\"RKTQDM7W6T\"", &format!("{id:?}"))
        .into_bytes()
}

/// `n` distinct TransIDs starting with `prefix` (10 characters, like Daraja's).
fn trans_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i:0width$}", width = 10 - prefix.len()))
        .collect()
}

/// A delivery lab (adjusted by `tune`) with three M-Pesa routes: a confirmation route and two
/// validation routes asking the application, one rejecting and one accepting when it does not
/// answer. The application is made but not listening.
fn lab_with(tune: impl FnOnce(&mut DeliverySpec)) -> Lab {
    let mut lab = Lab::delivery("hw-delivery-", APP_PORT, DELIVERY_SECRET, tune);
    let token = lab.write_secret("token", TOKEN);
    let validation_url = lab.app().validation_url();
    let timeout = format!("{}ms", VALIDATION_TIMEOUT.as_millis());
    lab.spec.routes = vec![
        Route::mpesa(CONFIRMATION, &token),
        Route::mpesa(VALIDATION, &token).validation(&validation_url, &timeout, "reject"),
        Route::mpesa(VALIDATION_LENIENT, &token).validation(&validation_url, &timeout, "accept"),
    ];
    lab.write_config();
    lab
}

/// POSTs `bodies` to `path` (the token appended) from the client namespace, over four
/// connections at a time; the answers in order.
fn post_all(lab: &Lab, path: &str, bodies: Vec<Vec<u8>>) -> Vec<Reply> {
    let src = IpAddr::V4(ALLOWED_V4);
    let dst = srv_addr(src, PROTECTED_PORT);
    let client = Arc::clone(lab.client());
    let path = format!("{path}/{TOKEN}");
    lab.net.cli.run(move || {
        // Threads made here are in the client namespace too (they inherit it).
        let chunk = bodies.len().div_ceil(4).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> = bodies
                .chunks(chunk)
                .map(|part| {
                    let (client, path) = (&client, &path);
                    s.spawn(move || {
                        part.iter()
                            .map(|body| {
                                request(src, dst, client, "POST", path, &[JSON], body)
                                    .unwrap_or_else(|e| panic!("POST {path}: {e}"))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("sender thread"))
                .collect()
        })
    })
}

/// Sends a C2B confirmation for each id; asserts each is acknowledged as Daraja expects and
/// returns the acknowledged ids.
fn confirm(lab: &Lab, ids: &[String], daemon: &Daemon) -> BTreeSet<String> {
    let replies = post_all(
        lab,
        CONFIRMATION,
        ids.iter().map(|id| confirmation(id)).collect(),
    );
    for (id, reply) in ids.iter().zip(&replies) {
        assert!(
            reply.status == 200 && reply.text() == ACCEPTED,
            "confirmation {id}: {} {}; log:\n{}",
            reply.status,
            reply.text(),
            daemon.log()
        );
    }
    ids.iter().cloned().collect()
}

/// One C2B validation request to `route`; the answer and how long it took.
fn validate(lab: &Lab, route: &str, id: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = post_all(lab, route, vec![validation(id)])
        .pop()
        .expect("one reply");
    (reply, started.elapsed())
}

/// Waits until the store's counts are `want`.
fn wait_counts(lab: &Lab, daemon: &Daemon, want: (u64, u64, u64), timeout: Duration) {
    poll_until(
        timeout,
        || {
            let c = lab.counts();
            (c.pending, c.delivered, c.dead) == want
        },
        || {
            format!(
                "store counts {:?}, want (pending, delivered, dead) = {want:?}; log:\n{}",
                lab.counts(),
                daemon.log()
            )
        },
    );
}

fn gauge(daemon: &Daemon, state: &str, want: f64) {
    // The gauges are refreshed every 2 s.
    daemon.wait_metric(
        "hookwall_delivery_queue_events",
        &[("state", state)],
        Duration::from_secs(10),
        |v| (v - want).abs() < 0.5,
    );
}

fn deliveries_total(daemon: &Daemon, result: &str) -> f64 {
    daemon.metric(
        "hookwall_deliveries_total",
        &[("sink", "http"), ("result", result)],
    )
}

/// Every receipt carries a good signature and the event id as both webhook-id and
/// idempotency-key.
fn assert_receipts_well_formed(lab: &Lab) {
    for r in lab.app().deliveries() {
        assert!(r.signature_ok, "bad signature on {r:?}");
        assert_eq!(
            r.idempotency_key.as_deref(),
            Some(r.webhook_id.as_str()),
            "idempotency-key is the event id"
        );
        assert!(r.attempt.is_some_and(|n| n >= 1), "hookwall-attempt: {r:?}");
    }
}

#[test]
fn a_backlog_built_while_the_application_is_down_drains_once_it_is_up() {
    const N: usize = 200;
    let lab = lab_with(|_| {});
    let daemon = lab.start();
    let ids = trans_ids("DN", N);
    let acknowledged = confirm(&lab, &ids, &daemon);
    assert_eq!(acknowledged.len(), N);
    // Everything is stored before it is acknowledged; nothing can be delivered yet.
    let c = lab.counts();
    assert_eq!((c.pending, c.delivered, c.dead), (N as u64, 0, 0));
    gauge(&daemon, "pending", N as f64);
    daemon.wait_metric(
        "hookwall_delivery_oldest_pending_age_seconds",
        &[],
        Duration::from_secs(10),
        |v| v > 0.0,
    );
    assert!(
        lab.app().receipts().is_empty(),
        "the application is not listening"
    );

    let up = Instant::now();
    lab.app().up();
    poll_until(
        Duration::from_secs(60),
        || lab.app().accepted_counts().len() == N,
        || {
            format!(
                "{} of {N} ids delivered; log:\n{}",
                lab.app().accepted_counts().len(),
                daemon.log()
            )
        },
    );
    let drained = up.elapsed();
    wait_counts(&lab, &daemon, (0, N as u64, 0), Duration::from_secs(10));
    eprintln!("backlog of {N} drained {drained:?} after the application came up");

    // Both sides agree, and a healthy application got each id exactly once.
    let counts = lab.app().accepted_counts();
    let delivered: BTreeSet<String> = counts.keys().cloned().collect();
    assert_eq!(delivered, acknowledged, "provider-side ids == app-side ids");
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    assert_eq!(lab.app().deliveries().len(), N, "no other request arrived");
    assert_receipts_well_formed(&lab);
    for r in lab.app().deliveries() {
        assert_eq!(
            r.body,
            confirmation(&r.webhook_id),
            "body delivered unchanged"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("hookwall-route"), Some(CONFIRMATION));
        assert_eq!(r.header("hookwall-kind"), Some("mpesa_c2b_confirmation"));
        assert!(
            r.header("hookwall-received-at")
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|ms| ms > 1_700_000_000_000),
            "hookwall-received-at: {r:?}"
        );
        assert!(r.event.is_some(), "hookwall-event: {r:?}");
    }

    gauge(&daemon, "pending", 0.0);
    gauge(&daemon, "delivered", N as f64);
    assert_eq!(deliveries_total(&daemon, "delivered"), N as f64);
    assert_eq!(deliveries_total(&daemon, "dead"), 0.0);
    assert!(
        deliveries_total(&daemon, "retry") > 0.0,
        "attempts failed while the application was down"
    );
    assert_eq!(
        daemon.metric(
            "hookwall_delivery_latency_seconds_count",
            &[("sink", "http")]
        ),
        N as f64,
        "one latency sample per delivered event"
    );
    daemon.wait_metric(
        "hookwall_delivery_oldest_pending_age_seconds",
        &[],
        Duration::from_secs(10),
        |v| v == 0.0,
    );
    let listed: BTreeSet<String> = lab
        .queue_list(&["--state", "delivered"])
        .iter()
        .map(|e| {
            assert_eq!(e["state"], "delivered");
            e["event_id"].as_str().expect("event_id").to_owned()
        })
        .collect();
    assert_eq!(
        listed, acknowledged,
        "`queue list --state delivered` agrees"
    );
    assert!(
        lab.queue_list(&["--state", "pending"]).is_empty(),
        "nothing pending"
    );
    // Daraja retries a few callbacks it already had acknowledged: duplicates, not new events,
    // so nothing is queued (and nothing delivered) again.
    confirm(&lab, &ids[..5], &daemon);
    assert_eq!(
        daemon.metric(
            "hookwall_http_requests_total",
            &[("route", CONFIRMATION), ("outcome", "duplicate")]
        ),
        5.0
    );
    let c = lab.counts();
    assert_eq!((c.pending, c.delivered, c.dead), (0, N as u64, 0));
    let log = daemon.log();
    assert!(
        !log.contains(DELIVERY_SECRET.trim_start_matches("whsec_")),
        "the delivery secret never appears in the log"
    );
}

#[test]
fn sigkill_during_delivery_loses_nothing_and_duplicates_keep_their_key() {
    const N: usize = 60;
    let lab = lab_with(|d| d.concurrency = 4);
    let mut daemon = lab.start();
    let ids = trans_ids("KL", N);
    let acknowledged = confirm(&lab, &ids, &daemon);
    // A slow application: four at a time, 200 ms each, so the backlog takes about 3 s.
    lab.app().set_delay(Duration::from_millis(200));
    lab.app().up();
    poll_until(
        Duration::from_secs(30),
        || lab.app().accepted_counts().len() >= 10,
        || format!("deliveries did not start; log:\n{}", daemon.log()),
    );
    daemon.kill9();
    let at_kill = lab.counts();
    assert!(
        at_kill.pending > 0,
        "killed mid-backlog: {at_kill:?} (the backlog was already delivered)"
    );
    eprintln!(
        "SIGKILL with {} delivered, {} pending in the store, {} receipts at the application",
        at_kill.delivered,
        at_kill.pending,
        lab.app().deliveries().len()
    );

    let daemon = lab.start();
    wait_counts(&lab, &daemon, (0, N as u64, 0), Duration::from_secs(60));

    let counts = lab.app().accepted_counts();
    let delivered: BTreeSet<String> = counts.keys().cloned().collect();
    let lost: Vec<_> = acknowledged.difference(&delivered).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    assert_eq!(delivered, acknowledged, "nothing the provider did not send");
    assert_receipts_well_formed(&lab);
    // A duplicate is the same event again: same key, same store row, same body.
    let mut by_id: HashMap<String, Vec<_>> = HashMap::new();
    for r in lab.app().deliveries() {
        by_id.entry(r.webhook_id.clone()).or_default().push(r);
    }
    let mut duplicated = 0;
    for (id, receipts) in &by_id {
        if receipts.len() > 1 {
            duplicated += 1;
        }
        for r in receipts {
            assert_eq!(r.idempotency_key.as_deref(), Some(id.as_str()));
            assert_eq!(r.event, receipts[0].event, "same store row for {id}");
            assert_eq!(r.body, confirmation(id));
        }
    }
    eprintln!(
        "after the restart: {} ids delivered, {duplicated} of them more than once (in flight at \
         the kill)",
        delivered.len()
    );
    assert!(
        duplicated <= 4 + 1,
        "at most the attempts in flight (concurrency 4) are repeated: {duplicated}"
    );
}

#[test]
fn a_400_is_a_dead_letter_at_once_and_queue_retry_replays_it() {
    let lab = lab_with(|_| {});
    lab.app().up();
    let daemon = lab.start();
    let refused = "RF00000001";
    lab.app().set_status_for(refused, 400);
    let ids = vec![
        refused.to_owned(),
        "OK00000001".to_owned(),
        "OK00000002".to_owned(),
    ];
    confirm(&lab, &ids, &daemon);
    wait_counts(&lab, &daemon, (0, 2, 1), Duration::from_secs(20));

    let row = lab.row(refused);
    assert_eq!(row.state, EventState::Dead);
    assert_eq!(row.attempts, 1, "a 400 is not retried");
    let error = row.last_error.clone().unwrap_or_default();
    assert!(error.contains("400"), "last_error says 400: {error:?}");
    assert_eq!(
        lab.app()
            .deliveries()
            .iter()
            .filter(|r| r.webhook_id == refused)
            .count(),
        1
    );

    let dead = lab.queue_list(&["--state", "dead"]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event_id"], refused);
    let id = row.id.to_string();
    let shown = lab.queue_ok(&["show", &id]);
    assert!(
        shown.contains("dead") && shown.contains("400") && shown.contains(refused),
        "queue show: {shown}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&lab.queue_ok(&["show", &id, "--json"])).expect("show --json");
    assert_eq!(shown["state"], "dead");
    assert_eq!(shown["attempts"], 1);
    assert_eq!(
        shown["body"],
        String::from_utf8(confirmation(refused)).unwrap()
    );
    daemon.wait_metric(
        "hookwall_deliveries_total",
        &[("sink", "http"), ("result", "dead")],
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    gauge(&daemon, "dead", 1.0);

    // The application is fixed; the operator replays the dead letter.
    lab.app().clear_status_for(refused);
    let out = lab.queue_ok(&["retry", &id]);
    assert!(out.contains("requeued"), "{out}");
    wait_counts(&lab, &daemon, (0, 3, 0), Duration::from_secs(10));
    let replayed: Vec<_> = lab
        .app()
        .deliveries()
        .into_iter()
        .filter(|r| r.webhook_id == refused)
        .collect();
    assert_eq!(
        replayed.iter().map(|r| r.status).collect::<Vec<_>>(),
        [400, 200],
        "refused once, delivered exactly once more"
    );
    let row = lab.row(refused);
    assert_eq!(row.state, EventState::Delivered);
    assert_eq!(row.attempts, 1, "attempts count again from the replay");

    // Replaying a delivered event is refused and changes nothing.
    let before = lab.row(refused);
    let out = lab.queue(&["retry", &id]);
    assert!(
        !out.status.success(),
        "retry of a delivered id must fail: {}",
        output_text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("delivered"),
        "{}",
        output_text(&out)
    );
    assert_eq!(lab.row(refused), before, "the delivered row is unchanged");
    let out = lab.queue(&["retry", "999999"]);
    assert!(!out.status.success(), "retry of an unknown id must fail");
    assert_eq!(lab.counts().delivered, 3);
    assert_eq!(deliveries_total(&daemon, "delivered"), 3.0);
}

#[test]
fn failures_are_retried_with_backoff_and_max_attempts_makes_a_dead_letter() {
    const MAX_ATTEMPTS: u32 = 5;
    let lab = lab_with(|d| d.max_attempts = MAX_ATTEMPTS);
    lab.app().up();
    let daemon = lab.start();
    let (flaky, broken) = ("FL00000001", "BR00000001");
    lab.app().set_status_for(flaky, 503);
    lab.app().set_status_for(broken, 503);
    confirm(&lab, &[flaky.to_owned(), broken.to_owned()], &daemon);

    let receipts_of = |id: &str| -> Vec<_> {
        lab.app()
            .deliveries()
            .into_iter()
            .filter(|r| r.webhook_id == id)
            .collect()
    };
    poll_until(
        Duration::from_secs(10),
        || receipts_of(flaky).len() >= 2,
        || format!("{flaky} not retried; log:\n{}", daemon.log()),
    );
    lab.app().clear_status_for(flaky);
    // `broken` fails MAX_ATTEMPTS times and is then a dead letter; `flaky` gets through.
    wait_counts(&lab, &daemon, (0, 1, 1), Duration::from_secs(20));

    let flaky_row = lab.row(flaky);
    assert_eq!(flaky_row.state, EventState::Delivered);
    assert!(flaky_row.attempts > 1, "{flaky_row:?}");
    let flaky_receipts = receipts_of(flaky);
    assert_eq!(
        flaky_receipts.last().map(|r| r.status),
        Some(200),
        "{flaky_receipts:?}"
    );
    assert_eq!(
        flaky_receipts.iter().filter(|r| r.status == 200).count(),
        1,
        "delivered exactly once"
    );
    let attempts: Vec<u32> = flaky_receipts.iter().filter_map(|r| r.attempt).collect();
    let expected: Vec<u32> = (1..=u32::try_from(attempts.len()).unwrap()).collect();
    assert_eq!(attempts, expected, "hookwall-attempt counts up");
    assert_eq!(flaky_row.attempts, *attempts.last().unwrap());

    let broken_row = lab.row(broken);
    assert_eq!(broken_row.state, EventState::Dead, "dead, not deleted");
    assert_eq!(broken_row.attempts, MAX_ATTEMPTS);
    let error = broken_row.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("503") && error.contains("max_attempts"),
        "last_error: {error:?}"
    );
    let broken_receipts = receipts_of(broken);
    assert_eq!(broken_receipts.len(), MAX_ATTEMPTS as usize);
    // Backoff: with backoff_initial 50 ms and equal jitter, the n-th wait is at least
    // 25 ms * 2^(n-1).
    for (n, pair) in broken_receipts.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let floor = Duration::from_millis(25 << n).min(Duration::from_millis(250));
        assert!(
            gap >= floor,
            "retry {} came {gap:?} after the previous attempt, before the backoff {floor:?}",
            n + 1
        );
    }
    eprintln!(
        "retry gaps of the failing event: {:?}",
        broken_receipts
            .windows(2)
            .map(|p| p[1].at - p[0].at)
            .collect::<Vec<_>>()
    );
    assert_eq!(deliveries_total(&daemon, "dead"), 1.0);
    assert!(deliveries_total(&daemon, "retry") >= f64::from(MAX_ATTEMPTS));
    assert!(
        find_metric(
            &daemon.metrics(),
            "hookwall_delivery_dead_letters_total",
            &[]
        )
        .is_none(),
        "hookwall_delivery_dead_letters_total was removed: \
         hookwall_deliveries_total{{result=\"dead\"}} counts dead letters"
    );
}

#[test]
fn c2b_validation_passes_the_applications_answer_through_within_its_deadline() {
    let lab = lab_with(|_| {});
    lab.app().up();
    let daemon = lab.start();
    let margin = Duration::from_millis(700);
    let answer = |route: &str, id: &str| {
        let (reply, took) = validate(&lab, route, id);
        assert_eq!(
            reply.status,
            200,
            "validation {id} on {route}: {}; log:\n{}",
            reply.text(),
            daemon.log()
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        (reply.text(), took)
    };

    // The application rejects: Daraja gets exactly that answer.
    lab.app().set_validation(REJECTED_12, Duration::ZERO);
    let (text, _) = answer(VALIDATION, "VA00000001");
    assert_eq!(text, REJECTED_12);
    // It accepts.
    lab.app().set_validation(ACCEPTED, Duration::ZERO);
    let (text, _) = answer(VALIDATION, "VA00000002");
    assert_eq!(text, ACCEPTED);
    // An answer within the deadline counts even when slowish.
    lab.app()
        .set_validation(REJECTED_12, VALIDATION_TIMEOUT.mul_f64(0.3));
    let (text, _) = answer(VALIDATION_LENIENT, "VA00000003");
    assert_eq!(text, REJECTED_12);

    // Slower than the timeout: the route's on_failure answer, in time.
    lab.app().set_validation(ACCEPTED, Duration::from_secs(3));
    let (text, took) = answer(VALIDATION, "VA00000004");
    assert_eq!(text, REJECTED_16, "on_failure = reject");
    assert!(
        took >= VALIDATION_TIMEOUT && took < VALIDATION_TIMEOUT + margin,
        "the fallback came after {took:?} (timeout {VALIDATION_TIMEOUT:?})"
    );
    eprintln!("fallback answer on a slow application after {took:?}");
    lab.app()
        .set_validation(REJECTED_12, Duration::from_secs(3));
    let (text, took) = answer(VALIDATION_LENIENT, "VA00000005");
    assert_eq!(text, ACCEPTED, "on_failure = accept");
    assert!(took < VALIDATION_TIMEOUT + margin, "{took:?}");

    // Nonsense from the application: fallback.
    lab.app()
        .set_validation(r#"{"ResultCode":"C2B00099"}"#, Duration::ZERO);
    let (text, _) = answer(VALIDATION, "VA00000006");
    assert_eq!(text, REJECTED_16);

    // The application is down: fallback, at once.
    lab.app().down();
    let (text, took) = answer(VALIDATION, "VA00000007");
    assert_eq!(text, REJECTED_16);
    assert!(took < VALIDATION_TIMEOUT, "{took:?}");
    let (text, _) = answer(VALIDATION_LENIENT, "VA00000008");
    assert_eq!(text, ACCEPTED);

    // The application saw each question once, signed, with a validation id.
    let asked = lab.app().validations();
    assert_eq!(
        asked
            .iter()
            .map(|r| r.webhook_id.as_str())
            .collect::<Vec<_>>(),
        (1..=6)
            .map(|n| format!("validation-VA0000000{n}"))
            .collect::<Vec<_>>()
    );
    for r in &asked {
        assert!(r.signature_ok, "{r:?}");
        let id = r.webhook_id.trim_start_matches("validation-");
        assert_eq!(r.body, validation(id), "Daraja's body forwarded unchanged");
    }
    // Questions are not events: nothing stored, nothing delivered.
    assert_eq!(lab.store().count().expect("count"), 0);
    assert!(lab.app().deliveries().is_empty());

    let validations = |route: &str, result: &str| {
        daemon.metric(
            "hookwall_validation_requests_total",
            &[("route", route), ("result", result)],
        )
    };
    assert_eq!(validations(VALIDATION, "app_reject"), 1.0);
    assert_eq!(validations(VALIDATION, "app_accept"), 1.0);
    assert_eq!(validations(VALIDATION, "fallback"), 3.0);
    assert_eq!(validations(VALIDATION_LENIENT, "app_reject"), 1.0);
    assert_eq!(validations(VALIDATION_LENIENT, "fallback"), 2.0);
}

#[test]
fn queue_purge_removes_delivered_events_only() {
    let lab = lab_with(|d| d.max_attempts = 1000);
    lab.app().up();
    let daemon = lab.start();
    let (dead, pending) = ("PD00000001", "PP00000001");
    lab.app().set_status_for(dead, 400);
    lab.app().set_status_for(pending, 503);
    let mut ids = trans_ids("PG", 3);
    ids.push(dead.to_owned());
    ids.push(pending.to_owned());
    confirm(&lab, &ids, &daemon);
    wait_counts(&lab, &daemon, (1, 3, 1), Duration::from_secs(20));
    poll_until(
        Duration::from_secs(10),
        || lab.row(pending).attempts >= 1,
        || "the failing event was not attempted".into(),
    );

    let out = lab.queue_ok(&["purge", "--older-than", "1h"]);
    assert!(out.contains("purged 0"), "{out}");
    assert_eq!(lab.counts().delivered, 3);

    let out = lab.queue_ok(&["purge", "--older-than", "0s"]);
    assert!(out.contains("purged 3 "), "{out}");
    let c = lab.counts();
    assert_eq!((c.pending, c.delivered, c.dead), (1, 0, 1));
    assert_eq!(lab.row(dead).state, EventState::Dead);
    assert_eq!(lab.row(pending).state, EventState::Pending);
    let out = lab.queue_ok(&["purge", "--older-than", "0s"]);
    assert!(out.contains("purged 0"), "{out}");
    assert_eq!(lab.store().count().expect("count"), 2);
    drop(daemon);
}

#[test]
fn sigterm_lets_attempts_in_flight_finish_and_records_them() {
    const N: usize = 40;
    let lab = lab_with(|d| d.concurrency = 4);
    let mut daemon = lab.start();
    let ids = trans_ids("TM", N);
    let acknowledged = confirm(&lab, &ids, &daemon);
    lab.app().set_delay(Duration::from_millis(300));
    lab.app().up();
    poll_until(
        Duration::from_secs(30),
        || lab.app().deliveries().len() >= 6,
        || format!("deliveries did not start; log:\n{}", daemon.log()),
    );
    let status = daemon.term();
    assert!(
        status.success(),
        "graceful stop: {status}; log:\n{}",
        daemon.log()
    );
    let at_stop = lab.counts();
    let seen = lab.app().deliveries().len();
    // Every request the application got was answered and recorded before the daemon exited.
    assert_eq!(
        at_stop.delivered as usize, seen,
        "attempts in flight at SIGTERM were finished and recorded: {at_stop:?}, {seen} receipts"
    );
    assert!(at_stop.pending > 0, "stopped mid-backlog: {at_stop:?}");

    let daemon = lab.start();
    wait_counts(&lab, &daemon, (0, N as u64, 0), Duration::from_secs(60));
    let counts = lab.app().accepted_counts();
    assert_eq!(
        counts.keys().cloned().collect::<BTreeSet<_>>(),
        acknowledged
    );
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "a graceful stop repeats nothing: {duplicates:?}"
    );
}
