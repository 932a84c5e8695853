//! End-to-end tests of delivery to NATS JetStream: a real `hookwall run` with `[delivery.nats]`
//! in the server namespace, a real `nats-server -js` (Debian package) started and stopped by the
//! test, M-Pesa C2B confirmations sent over TLS from the client namespace, and the stream read
//! back message by message so that ids are counted on both sides.
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_nats`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hookwall_tests::{
    config::{DeliverySpec, Route, Sink},
    daemon::{Daemon, poll_until},
    https::request,
    lab::Lab,
    nats::{NatsServer, StreamMsg, publish_with_id, read_stream},
    netns::{ALLOWED, NetNs, PROTECTED_PORT, VethPair, srv_addr},
};

const MPESA: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Zq8vX2pL9mW4rT7yK1sB6nD0fH5jG";
const JSON: (&str, &str) = ("Content-Type", "application/json");
const SUBJECT: &str = "hookwall.test.events";
const STREAM: &str = "HOOKWALL_TEST";
/// The TransID of the fixture, replaced by each callback's own.
const FIXTURE_ID: &str = "RKTQDM7W6S";
const C2B_CONFIRMATION: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));
const ACCEPTED: &str = r#"{"ResultCode":0,"ResultDesc":"Accepted"}"#;
/// Long enough for a debug daemon on a loaded machine to drain a few hundred events.
const DRAIN: Duration = Duration::from_secs(90);

/// A distinct TransID (10 characters, as Daraja's) for callback `i` of series `series`.
fn trans_id(series: char, i: usize) -> String {
    format!("{series}K{i:08}")
}

/// The fixture with its TransID replaced by `id`.
fn c2b_body(id: &str) -> Vec<u8> {
    String::from_utf8_lossy(C2B_CONFIRMATION)
        .replace(FIXTURE_ID, id)
        .into_bytes()
}

/// What a background sender saw: the ids whose callback hookwall acknowledged (200 with
/// Daraja's "Accepted"), and everything else.
#[derive(Debug, Default)]
struct Sent {
    acked: Vec<String>,
    failed: Vec<String>,
}

/// Callbacks being sent from the client namespace, from an IPv4 and an IPv6 source at once.
struct Sending {
    progress: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Sent>>,
}

impl Sending {
    /// Callbacks answered so far (acknowledged or not).
    fn progress(&self) -> usize {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits until `n` callbacks were answered.
    fn wait_progress(&self, n: usize, daemon: &Daemon) {
        poll_until(
            Duration::from_secs(60),
            || self.progress() >= n,
            || {
                format!(
                    "only {} callbacks answered; log:\n{}",
                    self.progress(),
                    daemon.log()
                )
            },
        );
    }

    fn join(self) -> Sent {
        let mut all = Sent::default();
        for t in self.threads {
            let sent = t.join().expect("sender thread");
            all.acked.extend(sent.acked);
            all.failed.extend(sent.failed);
        }
        all
    }
}

/// One hookwall host: an HTTPS lab (its own namespaces, filter and store) with the M-Pesa route;
/// [`deliver_to`] gives it the broker. A daemon is a local declared after it, so it is killed
/// first.
fn new_host() -> Lab {
    let mut lab = Lab::https("hw-nats-host-");
    let token = lab.write_secret("token", TOKEN);
    lab.spec.routes = vec![Route::mpesa(MPESA, &token)];
    lab
}

/// Writes `host`'s config with delivery to `nats_url`: quick retries (so a broker outage of
/// seconds is crossed in seconds) and attempts enough never to give up.
fn deliver_to(host: &mut Lab, nats_url: &str) {
    let mut delivery = DeliverySpec::with_sink(Sink::Nats {
        url: nats_url.to_owned(),
        subject: SUBJECT.to_owned(),
        stream: STREAM.to_owned(),
        duplicate_window: Some("2m".to_owned()),
    });
    delivery.timeout = "2s".to_owned();
    delivery.max_attempts = 1000;
    delivery.max_age = Some("1h".to_owned());
    host.spec.delivery = Some(delivery);
    host.write_config();
}

/// Whether [`host_with_local_broker`] starts the broker.
enum Broker {
    Running,
    /// Its port and store chosen, not started ([`NatsServer::prepare`]).
    Down,
}

/// A host and a broker on its server namespace's loopback, the host's config delivering to it.
fn host_with_local_broker(broker: Broker) -> (Lab, NatsServer) {
    let mut host = new_host();
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let nats = match broker {
        Broker::Running => NatsServer::start_in(&host.net.srv, localhost),
        Broker::Down => NatsServer::prepare(&host.net.srv, localhost),
    };
    deliver_to(&mut host, &nats.url());
    (host, nats)
}

/// Sends one C2B confirmation per id over TLS from the client namespace, half from the allowed
/// IPv4 source and half from the IPv6 one, in the background.
fn send(host: &Lab, ids: &[String]) -> Sending {
    let progress = Arc::new(AtomicUsize::new(0));
    let path = format!("{MPESA}/{TOKEN}");
    let threads = ALLOWED
        .into_iter()
        .enumerate()
        .map(|(k, src)| {
            let mine: Vec<String> = ids.iter().skip(k).step_by(2).cloned().collect();
            let (client, progress, path) = (
                Arc::clone(host.client()),
                Arc::clone(&progress),
                path.clone(),
            );
            host.net.cli.spawn(move || {
                let dst = srv_addr(src, PROTECTED_PORT);
                let mut sent = Sent::default();
                for id in mine {
                    let reply = request(src, dst, &client, "POST", &path, &[JSON], &c2b_body(&id));
                    match reply {
                        Ok(r) if r.status == 200 && r.text() == ACCEPTED => sent.acked.push(id),
                        Ok(r) => sent.failed.push(format!("{id}: {} {}", r.status, r.text())),
                        Err(e) => sent.failed.push(format!("{id}: {e}")),
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                sent
            })
        })
        .collect();
    Sending { progress, threads }
}

/// Sends and waits: every callback must be acknowledged.
fn send_all(host: &Lab, ids: &[String], daemon: &Daemon) -> Vec<String> {
    let sent = send(host, ids).join();
    assert!(
        sent.failed.is_empty(),
        "callbacks not acknowledged: {:?}; log:\n{}",
        sent.failed,
        daemon.log()
    );
    sent.acked
}

/// Waits until `n` events are delivered (JetStream acknowledged them).
fn wait_delivered(host: &Lab, n: u64, daemon: &Daemon) {
    poll_until(
        DRAIN,
        || host.counts().delivered >= n,
        || {
            format!(
                "{:?} after {DRAIN:?}; log:\n{}",
                host.counts(),
                daemon.log()
            )
        },
    );
}

/// How many messages of the stream carry each `Nats-Msg-Id`.
fn count_ids(msgs: &[StreamMsg]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in msgs {
        let id = m
            .msg_id
            .clone()
            .unwrap_or_else(|| panic!("message {} has no Nats-Msg-Id", m.sequence));
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// Asserts the stream holds exactly `ids`, each once.
fn assert_each_once(msgs: &[StreamMsg], ids: &[String]) {
    let counts = count_ids(msgs);
    let twice: Vec<_> = counts.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "ids in the stream more than once: {twice:?}"
    );
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let got: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stream ids differ: missing {missing:?}, unexpected {extra:?}"
    );
    assert_eq!(msgs.len(), ids.len(), "one message per id");
}

fn deliveries(daemon: &Daemon, result: &str) -> f64 {
    daemon.metric(
        "hookwall_deliveries_total",
        &[("sink", "nats"), ("result", result)],
    )
}

fn stream_of(ns: &NetNs, nats: &NatsServer) -> Vec<StreamMsg> {
    read_stream(&ns.path(), &nats.url(), STREAM)
        .unwrap_or_else(|e| panic!("reading stream {STREAM}: {e:#}; nats log:\n{}", nats.log()))
}

#[test]
fn every_callback_reaches_the_stream_once_with_its_event_id_as_nats_msg_id() {
    let (host, nats) = host_with_local_broker(Broker::Running);
    let daemon = host.start();
    let ids: Vec<String> = (0..300).map(|i| trans_id('A', i)).collect();
    let acked = send_all(&host, &ids, &daemon);
    assert_eq!(acked.len(), ids.len());
    wait_delivered(&host, 300, &daemon);

    let msgs = stream_of(&host.net.srv, &nats);
    assert_each_once(&msgs, &ids);
    for m in &msgs {
        let id = m.msg_id.as_deref().expect("checked above");
        assert_eq!(m.payload, c2b_body(id), "the stored body, unchanged");
        assert_eq!(m.header("hookwall-route"), Some(MPESA));
        assert_eq!(m.header("hookwall-kind"), Some("mpesa_c2b_confirmation"));
        assert_eq!(m.header("content-type"), Some("application/json"));
        assert!(
            m.header("hookwall-event")
                .is_some_and(|v| v.parse::<i64>().is_ok_and(|n| n > 0)),
            "hookwall-event is the store row id: {:?}",
            m.headers
        );
        assert!(
            m.header("hookwall-received-at")
                .is_some_and(|v| v.parse::<i64>().is_ok_and(|ms| ms > 1_700_000_000_000)),
            "hookwall-received-at is unix ms: {:?}",
            m.headers
        );
    }
    let counts = host.counts();
    assert_eq!((counts.pending, counts.delivered, counts.dead), (0, 300, 0));
    assert_eq!(deliveries(&daemon, "delivered"), 300.0);
    assert_eq!(deliveries(&daemon, "dead"), 0.0);
    assert!(
        !daemon.log().contains(TOKEN),
        "the route token never in the log"
    );
}

#[test]
fn nats_restarted_mid_stream_loses_nothing_and_duplicates_are_dropped_by_msg_id() {
    let (host, mut nats) = host_with_local_broker(Broker::Running);
    let daemon = host.start();
    let ids: Vec<String> = (0..300).map(|i| trans_id('B', i)).collect();
    let sending = send(&host, &ids);
    sending.wait_progress(80, &daemon);
    nats.stop();
    // Callbacks keep arriving and are acknowledged while the broker is down; deliveries fail.
    let down_at = sending.progress();
    sending.wait_progress(down_at + 100, &daemon);
    daemon.wait_metric(
        "hookwall_deliveries_total",
        &[("sink", "nats"), ("result", "retry")],
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    let pending_while_down = host.counts().pending;
    nats.start();
    let sent = sending.join();
    assert!(
        sent.failed.is_empty(),
        "the provider never sees the broker's outage: {:?}",
        sent.failed
    );
    assert_eq!(sent.acked.len(), ids.len());
    wait_delivered(&host, 300, &daemon);

    let msgs = stream_of(&host.net.srv, &nats);
    let counts = count_ids(&msgs);
    let lost: Vec<&String> = sent
        .acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in the stream: {lost:?}"
    );
    eprintln!(
        "NATS restart: {} acknowledged, {} pending while the broker was down, stream holds {} \
         messages with {} distinct ids, {} retries recorded",
        sent.acked.len(),
        pending_while_down,
        msgs.len(),
        counts.len(),
        deliveries(&daemon, "retry")
    );
    assert_each_once(&msgs, &ids);
    // The duplicate window outlived the restart: a host sending an event again (its ack was
    // lost in the outage) adds nothing. The first ids were stored before the broker stopped.
    for id in &ids[..5] {
        let duplicate = publish_with_id(
            &host.net.srv.path(),
            &nats.url(),
            SUBJECT,
            id,
            &c2b_body(id),
        )
        .expect("publishing again");
        assert!(
            duplicate,
            "{id} sent again after the restart is a duplicate"
        );
    }
    assert_eq!(stream_of(&host.net.srv, &nats).len(), 300);
    assert!(
        pending_while_down > 0,
        "the outage held events back (else it tested nothing)"
    );
    let q = host.counts();
    assert_eq!((q.pending, q.delivered, q.dead), (0, 300, 0));
}

#[test]
fn two_hosts_feed_one_stream_and_a_retry_on_the_other_host_is_stored_once() {
    // The broker on a third host, routed to both hookwall hosts over their own links.
    let broker = NetNs::new("hw-nats-");
    let mut a = new_host();
    let mut b = new_host();
    let _link_a = VethPair::new(
        &broker,
        &["203.0.113.1/28"],
        &a.net.srv,
        &["203.0.113.2/28"],
    );
    let _link_b = VethPair::new(
        &broker,
        &["203.0.113.17/28"],
        &b.net.srv,
        &["203.0.113.18/28"],
    );
    let nats = NatsServer::start_in(&broker, IpAddr::from([0, 0, 0, 0]));
    deliver_to(&mut a, &nats.url_at(IpAddr::from([203, 0, 113, 1])));
    deliver_to(&mut b, &nats.url_at(IpAddr::from([203, 0, 113, 17])));
    let daemon_a = a.start();
    let daemon_b = b.start();

    // Every event reaches both hosts: the provider's retry went to the other one. Some ids only
    // reach one host, as most events do.
    let both: Vec<String> = (0..150).map(|i| trans_id('C', i)).collect();
    let only_a: Vec<String> = (0..20).map(|i| trans_id('E', i)).collect();
    let only_b: Vec<String> = (0..20).map(|i| trans_id('F', i)).collect();
    let to_a: Vec<String> = both.iter().chain(&only_a).cloned().collect();
    let to_b: Vec<String> = only_b.iter().chain(&both).cloned().collect();
    let (sa, sb) = (send(&a, &to_a), send(&b, &to_b));
    let (sa, sb) = (sa.join(), sb.join());
    assert!(
        sa.failed.is_empty() && sb.failed.is_empty(),
        "{sa:?} {sb:?}"
    );
    wait_delivered(&a, 170, &daemon_a);
    wait_delivered(&b, 170, &daemon_b);

    let msgs = stream_of(&broker, &nats);
    let all: Vec<String> = both.iter().chain(&only_a).chain(&only_b).cloned().collect();
    assert_each_once(&msgs, &all);
    // Both hosts were acknowledged for every one of their events: 340 acks, 190 messages.
    assert_eq!(deliveries(&daemon_a, "delivered"), 170.0);
    assert_eq!(deliveries(&daemon_b, "delivered"), 170.0);
    // The copy kept is the body either host received, byte for byte.
    for m in &msgs {
        let id = m.msg_id.as_deref().expect("checked above");
        assert_eq!(m.payload, c2b_body(id));
    }
}

#[test]
fn nats_down_at_daemon_start_delays_delivery_and_loses_nothing() {
    let (host, mut nats) = host_with_local_broker(Broker::Down);
    let daemon = host.start();
    let ids: Vec<String> = (0..50).map(|i| trans_id('D', i)).collect();
    let acked = send_all(&host, &ids, &daemon);
    assert_eq!(
        acked.len(),
        ids.len(),
        "stored and acknowledged without a broker"
    );
    daemon.wait_metric(
        "hookwall_deliveries_total",
        &[("sink", "nats"), ("result", "retry")],
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    let q = host.counts();
    assert_eq!((q.pending, q.delivered), (50, 0), "held in the store");

    nats.start();
    wait_delivered(&host, 50, &daemon);
    let msgs = stream_of(&host.net.srv, &nats);
    assert_each_once(&msgs, &ids);
    assert_eq!(deliveries(&daemon, "dead"), 0.0);
}

#[test]
fn a_broker_back_without_its_store_gets_the_stream_made_again() {
    let (host, mut nats) = host_with_local_broker(Broker::Running);
    let daemon = host.start();
    let before: Vec<String> = (0..20).map(|i| trans_id('G', i)).collect();
    send_all(&host, &before, &daemon);
    wait_delivered(&host, 20, &daemon);
    // The broker loses its data (a new machine, a wiped volume): the stream hookwall found at
    // its first publish is gone, and publishes find no stream until hookwall makes it again.
    nats.stop();
    nats.wipe_store();
    nats.start();
    let after: Vec<String> = (0..20).map(|i| trans_id('H', i)).collect();
    send_all(&host, &after, &daemon);
    wait_delivered(&host, 40, &daemon);
    let msgs = stream_of(&host.net.srv, &nats);
    assert_each_once(&msgs, &after);
    assert_eq!(deliveries(&daemon, "dead"), 0.0);
}
