//! End-to-end tests of the in-place upgrade (SIGUSR2, `hookwall upgrade`): the daemon starts
//! the binary at its path, hands it its listening sockets and exits once that one is ready, while
//! a client in the client namespace posts M-Pesa confirmations, each on a new TLS connection with
//! its own TransID. No connection may be refused, no request fail, every acknowledged event must
//! be stored exactly once and delivered, and the filter stays attached throughout. An upgrade to
//! a binary that cannot start, or with a config that no longer loads, leaves the old process
//! serving, says why in its log and counts the failure.
//!
//! Run as root: `cargo build -p hookwall --bins && cargo test -p hookwall-tests --test
//! e2e_upgrade -- --nocapture` (the figures are printed).

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hookwall_tests::{
    config::Route,
    daemon::{Daemon, Successor, alive, hookwall, hookwall_bin, output_text, poll_until},
    lab::Lab,
    load::{self, Tally},
};
use serde_json::Value;

const MPESA: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Up7tPq2Lm9Xw4Kd1Vb6Nz0Hf5Jc8";
const DELIVERY_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const APP_PORT: u16 = 8000;
/// How long the load runs before, between and after the upgrades.
const STEADY: Duration = Duration::from_millis(400);
/// Pause between two requests of the load.
const PACE: Duration = Duration::from_millis(3);
/// Longest a hand-over may take here: the successor's start, then the old process's stop.
const HANDOVER: Duration = Duration::from_secs(60);

/// Route, rate limits the load stays under, then the config written.
fn finish(mut lab: Lab) -> Lab {
    let token = lab.write_secret("token", TOKEN);
    lab.spec.routes = vec![Route::mpesa(MPESA, &token)];
    lab.spec.limits = vec![
        ("rate_per_second".to_owned(), 100_000),
        ("rate_burst".to_owned(), 100_000),
    ];
    lab.write_config();
    lab
}

fn load_path() -> String {
    format!("{MPESA}/{TOKEN}")
}

/// The daemon PID the pinned filter records, and the links, from `hookwall status --json`.
fn recorded(lab: &Lab) -> (Option<u32>, Value) {
    let status = lab.status();
    let pid = status["daemon_pid"]
        .as_u64()
        .map(|pid| u32::try_from(pid).expect("PID fits u32"));
    (pid, status["links"].clone())
}

/// Every link attached and alive.
fn assert_attached(links: &Value, when: &str) {
    let links = links.as_array().expect("links is an array");
    assert!(
        !links.is_empty(),
        "{when}: the filter is attached: {links:?}"
    );
    assert!(
        links.iter().all(|l| l["alive"] == Value::Bool(true)),
        "{when}: every link alive: {links:?}"
    );
}

/// Every acknowledged event is stored exactly once, and nothing else is stored.
fn assert_stored_once(lab: &Lab, tally: &Tally) {
    let mut stored: HashMap<String, usize> = HashMap::new();
    for event in lab
        .store()
        .list(None, 100_000, None)
        .expect("listing the store")
    {
        *stored.entry(event.event_id).or_default() += 1;
    }
    for id in &tally.acknowledged {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "acknowledged event {id} stored once"
        );
    }
    assert_eq!(
        stored.len(),
        tally.acknowledged.len(),
        "nothing stored unacknowledged"
    );
}

#[test]
fn upgrades_under_load_refuse_and_fail_nothing_and_store_every_event_once() {
    let lab = finish(Lab::delivery(
        "hw-upgrade-",
        APP_PORT,
        DELIVERY_SECRET,
        |_| {},
    ));
    lab.app().up();
    let mut first = lab.start();
    let (pid, links_before) = recorded(&lab);
    assert_eq!(pid, Some(first.pid()), "the first daemon records its PID");
    assert_attached(&links_before, "before the upgrades");

    let stop = Arc::new(AtomicBool::new(false));
    let load = load::start(&lab, load_path(), "UPG", PACE, &stop);
    std::thread::sleep(STEADY);

    // 1. SIGUSR2: the old process exits 0 once its successor is ready.
    let started = Instant::now();
    first.signal(libc::SIGUSR2);
    let status = first.wait_exit(HANDOVER).unwrap_or_else(|| {
        panic!(
            "the old daemon hands over and exits within {HANDOVER:?}; log:\n{}",
            first.log()
        )
    });
    let by_signal = started.elapsed();
    assert!(
        status.success(),
        "the old daemon exits 0: {status}; log:\n{}",
        first.log()
    );
    let (pid, links) = recorded(&lab);
    let second = Successor::new(pid.expect("the successor records its PID"));
    assert_ne!(second.pid, first.pid(), "a new process serves");
    assert!(second.alive(), "the successor runs; log:\n{}", first.log());
    assert_attached(&links, "after SIGUSR2");
    std::thread::sleep(STEADY);

    // 2. `hookwall upgrade`, which finds the daemon through the pins and waits for the hand-over.
    let started = Instant::now();
    let out = hookwall(&["upgrade", "--pin-path", lab.pins.as_str()]);
    let by_command = started.elapsed();
    assert!(
        out.status.success(),
        "hookwall upgrade: {}\nlog:\n{}",
        output_text(&out),
        first.log()
    );
    let (pid, links) = recorded(&lab);
    let third = Successor::new(pid.expect("the second successor records its PID"));
    assert!(
        output_text(&out).contains(&format!("PID {} serves now", third.pid)),
        "{}",
        output_text(&out)
    );
    assert!(!second.alive(), "the second daemon has exited");
    assert!(third.alive() && third.pid != second.pid);
    assert_attached(&links, "after hookwall upgrade");
    std::thread::sleep(STEADY);

    stop.store(true, Ordering::Relaxed);
    let tally = load.join().expect("load thread");
    println!("{}", tally.figures("in-place upgrades under load"));
    println!(
        "hand-over (SIGUSR2 until the old process exited): {:.0} ms; `hookwall upgrade` until it \
         returned: {:.0} ms",
        by_signal.as_secs_f64() * 1e3,
        by_command.as_secs_f64() * 1e3
    );
    tally.assert_all_answered("upgrades", &format!("log:\n{}", first.log()));
    assert_stored_once(&lab, &tally);

    // Delivered at least once, by the last process (the earlier ones delivered until they
    // stopped): nothing acknowledged stays pending.
    poll_until(
        Duration::from_secs(30),
        || lab.counts().pending == 0,
        || {
            format!(
                "every event delivered: {:?}; log:\n{}",
                lab.counts(),
                first.log()
            )
        },
    );
    let accepted = lab.app().accepted_counts();
    for id in &tally.acknowledged {
        assert!(accepted.contains_key(id), "event {id} delivered");
    }

    // One process delivers at a time: each successor starts its delivery worker only after its
    // predecessor has stopped (all three log into one file, in order).
    let log = first.log();
    for (started_before, pid) in [(1, second.pid), (2, third.pid)] {
        let stopped = log
            .find(&format!("stopped; PID {pid} serves now"))
            .unwrap_or_else(|| panic!("the predecessor of {pid} logs its stop; log:\n{log}"));
        assert_eq!(
            log[..stopped].matches("delivering stored events").count(),
            started_before,
            "no successor delivers before its predecessor has stopped; log:\n{log}"
        );
    }
    assert_eq!(
        log.matches("delivering stored events").count(),
        3,
        "log:\n{log}"
    );
    let (_, links_after) = recorded(&lab);
    assert_eq!(links_after, links_before, "the same links throughout");
    third.term();
}

#[test]
fn an_upgrade_that_cannot_start_leaves_the_old_process_serving() {
    let lab = finish(Lab::https("hw-upgrade-"));
    let (mut daemon, bin) = spawn_from_copy(&lab);
    let failures =
        |daemon: &Daemon| daemon.metric("hookwall_upgrades_total", &[("result", "failure")]);
    assert_eq!(failures(&daemon), 0.0);

    let stop = Arc::new(AtomicBool::new(false));
    let load = load::start(&lab, load_path(), "BAD", PACE, &stop);
    std::thread::sleep(STEADY);

    // 1. The binary at the path now is one that exits 1 at once.
    replace_with_script(
        &bin,
        "#!/bin/sh\necho 'upgrade-test: this binary cannot start' >&2\nexit 1\n",
    );
    daemon.signal(libc::SIGUSR2);
    daemon.wait_metric(
        "hookwall_upgrades_total",
        &[("result", "failure")],
        HANDOVER,
        |v| v >= 1.0,
    );
    let log = daemon.log();
    assert!(
        log.contains("upgrade-test: this binary cannot start"),
        "log:\n{log}"
    );
    assert!(
        log.contains("upgrade failed")
            && log.contains("ended before it was ready (exit status: 1)"),
        "the log says why; log:\n{log}"
    );
    assert!(
        daemon.try_wait().is_none(),
        "the old daemon keeps running; log:\n{log}"
    );
    std::thread::sleep(STEADY);

    // 2. The real binary again, but a config that no longer loads: the successor refuses to
    //    start, with the config's error in the shared log.
    fs::copy(hookwall_bin(), bin.with_extension("new")).expect("copying the binary");
    fs::rename(bin.with_extension("new"), &bin).expect("renaming the binary into place");
    let good = fs::read_to_string(&lab.config).expect("reading the config");
    fs::write(&lab.config, format!("{good}\n[unknown_section]\nkey = 1\n")).expect("config");
    daemon.signal(libc::SIGUSR2);
    daemon.wait_metric(
        "hookwall_upgrades_total",
        &[("result", "failure")],
        HANDOVER,
        |v| v >= 2.0,
    );
    let log = daemon.log();
    assert!(
        log.contains("unknown_section"),
        "the config error is logged; log:\n{log}"
    );
    assert!(
        daemon.try_wait().is_none(),
        "the old daemon keeps running; log:\n{log}"
    );
    let (pid, links) = recorded(&lab);
    assert_eq!(
        pid,
        Some(daemon.pid()),
        "the old daemon is the recorded one again"
    );
    assert_attached(&links, "after the failed upgrades");
    fs::write(&lab.config, good).expect("restoring the config");
    std::thread::sleep(STEADY);

    stop.store(true, Ordering::Relaxed);
    let tally = load.join().expect("load thread");
    println!("{}", tally.figures("failed upgrades under load"));
    tally.assert_all_answered("failed upgrades", "");
    assert_stored_once(&lab, &tally);
    assert_eq!(
        daemon.metric("hookwall_upgrades_total", &[("result", "success")]),
        0.0
    );
    let status = daemon.term();
    assert!(status.success(), "{status}");
}

#[test]
fn a_reload_asked_for_during_an_upgrade_waits_for_the_upgrade_to_end() {
    // Only the SIGHUPs below reload (the daemon watches a symlink's directory, not the file).
    let mut lab = finish(Lab::https("hw-upgrade-").with_symlinked_config());
    let (mut daemon, bin) = spawn_from_copy(&lab);
    let real = bin.with_extension("real");
    fs::copy(hookwall_bin(), &real).expect("copying the binary");
    let src = std::net::IpAddr::V4(hookwall_tests::netns::ALLOWED_V4);
    let post = |lab: &Lab, id: &str| {
        lab.post(
            src,
            &load_path(),
            &[("Content-Type", "application/json")],
            &load::confirmation(id),
        )
        .status
    };
    // The successors take 3 s to start: time enough to ask for a reload while one starts.
    let upgrade_then_hup = |daemon: &mut Daemon, nth: usize| {
        daemon.signal(libc::SIGUSR2);
        poll_until(
            Duration::from_secs(10),
            || daemon.log().matches("SIGUSR2: upgrading in place").count() == nth,
            || format!("upgrade {nth} under way; log:\n{}", daemon.log()),
        );
        daemon.hup();
        poll_until(
            Duration::from_secs(10),
            || daemon.log().matches("reload deferred").count() == nth,
            || format!("the reload waits for upgrade {nth}; log:\n{}", daemon.log()),
        );
    };

    // 1. The upgrade fails: the old process applies the reload once it knows.
    replace_with_script(&bin, "#!/bin/sh\nsleep 3\nexit 1\n");
    lab.spec.limits.push(("body_limit_bytes".to_owned(), 64));
    lab.write_config();
    let reloads = daemon.reloads("success");
    upgrade_then_hup(&mut daemon, 1);
    assert_eq!(
        daemon.reloads("success"),
        reloads,
        "nothing reloaded while the successor starts; log:\n{}",
        daemon.log()
    );
    assert_eq!(
        post(&lab, "DEFERRED00"),
        200,
        "the old limits are in force meanwhile"
    );
    daemon.wait_metric(
        "hookwall_upgrades_total",
        &[("result", "failure")],
        HANDOVER,
        |v| v >= 1.0,
    );
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "success")],
        Duration::from_secs(10),
        |v| v > reloads,
    );
    assert_eq!(
        post(&lab, "DEFERRED01"),
        413,
        "the reloaded body limit applies"
    );

    // 2. The upgrade succeeds: the old process passes the reload on to its successor.
    replace_with_script(
        &bin,
        &format!("#!/bin/sh\nsleep 3\nexec {} \"$@\"\n", real.display()),
    );
    lab.spec.limits.pop();
    lab.write_config();
    upgrade_then_hup(&mut daemon, 2);
    let status = daemon
        .wait_exit(HANDOVER)
        .unwrap_or_else(|| panic!("the old daemon hands over; log:\n{}", daemon.log()));
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("passed the reload asked for during the upgrade on to the successor"),
        "log:\n{log}"
    );
    let (pid, links) = recorded(&lab);
    let successor = Successor::new(pid.expect("the successor records its PID"));
    assert_ne!(successor.pid, daemon.pid());
    assert_attached(&links, "after the upgrade");
    poll_until(
        Duration::from_secs(10),
        || {
            hookwall_tests::daemon::find_metric(
                &hookwall_tests::daemon::metrics(&lab.net.srv, lab.spec.metrics_listen),
                "hookwall_config_reloads_total",
                &[("result", "success")],
            )
            .is_some_and(|v| v >= 1.0)
        },
        || format!("the successor reloads once; log:\n{}", daemon.log()),
    );
    assert_eq!(
        post(&lab, "DEFERRED02"),
        200,
        "the body limit is gone again"
    );
    successor.term();
}

#[test]
fn a_successor_not_ready_in_30_s_is_ended_and_the_old_process_keeps_serving() {
    let lab = finish(Lab::https("hw-upgrade-"));
    let (mut daemon, bin) = spawn_from_copy(&lab);
    // A successor that starts and never says it is ready.
    replace_with_script(&bin, "#!/bin/sh\nexec sleep 600\n");
    let started = Instant::now();
    daemon.signal(libc::SIGUSR2);
    daemon.wait_metric(
        "hookwall_upgrades_total",
        &[("result", "failure")],
        HANDOVER,
        |v| v >= 1.0,
    );
    let waited = started.elapsed();
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("was not ready within 30s; it was ended"))
        .unwrap_or_else(|| panic!("the log says why; log:\n{log}"));
    println!("not ready: failure counted {waited:?} after SIGUSR2: {line}");
    assert!(waited >= Duration::from_secs(30), "it had 30 s: {waited:?}");
    let pid: u32 = line
        .split("(PID ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("the successor's PID in: {line}"));
    assert!(!alive(pid), "the successor {pid} was ended");
    assert!(
        daemon.try_wait().is_none(),
        "the old daemon keeps running; log:\n{log}"
    );
    let (recorded_pid, links) = recorded(&lab);
    assert_eq!(recorded_pid, Some(daemon.pid()));
    assert_attached(&links, "after the failed upgrade");
    let src = std::net::IpAddr::V4(hookwall_tests::netns::ALLOWED_V4);
    let reply = lab.post(
        src,
        &load_path(),
        &[("Content-Type", "application/json")],
        &load::confirmation("NOTREADY00"),
    );
    assert_eq!(reply.status, 200, "the old daemon serves: {}", reply.text());
    let status = daemon.term();
    assert!(status.success(), "{status}");
}

/// Starts the daemon from a copy of the binary at `DIR/bin/hookwall`, which the test can replace
/// as a package upgrade replaces /usr/bin/hookwall; returns it ready, and the copy's path.
fn spawn_from_copy(lab: &Lab) -> (Daemon, std::path::PathBuf) {
    let bin_dir = lab.dir.path().join("bin");
    fs::create_dir(&bin_dir).expect("bin directory");
    let bin = bin_dir.join("hookwall");
    fs::copy(hookwall_bin(), &bin).expect("copying the binary");
    let mut daemon = Daemon::spawn_binary(
        &lab.net.srv,
        &bin,
        &lab.config,
        lab.spec.metrics_listen,
        lab.dir.path(),
    );
    daemon.wait_ready(Duration::from_secs(15));
    (daemon, bin)
}

/// Replaces `bin` by a script, by rename, as a package manager replaces a binary.
fn replace_with_script(bin: &Path, script: &str) {
    let next = bin.with_extension("new");
    fs::write(&next, script).expect("writing the script");
    fs::set_permissions(&next, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::rename(&next, bin).expect("renaming the script into place");
}

#[test]
fn a_reload_applies_new_limits_and_delivery_settings_without_a_restart() {
    // Only the SIGHUPs below reload (the daemon watches a symlink's directory, not the file).
    let mut lab = finish(
        Lab::delivery("hw-upgrade-", APP_PORT, DELIVERY_SECRET, |_| {}).with_symlinked_config(),
    );
    lab.app().up();
    // Every delivery of this event is answered 503: retried, up to delivery.max_attempts (25).
    lab.app().set_status_for("RELOADED01", 503);
    let mut daemon = lab.start();
    let pid = daemon.pid();
    let post = |id: &str| {
        let src = std::net::IpAddr::V4(hookwall_tests::netns::ALLOWED_V4);
        lab.post(
            src,
            &load_path(),
            &[("Content-Type", "application/json")],
            &load::confirmation(id),
        )
    };
    assert_eq!(post("RELOADED00").status, 200);
    assert_eq!(post("RELOADED01").status, 200);
    poll_until(
        Duration::from_secs(10),
        || lab.row("RELOADED01").attempts >= 2,
        || format!("the 503 event is retried: {:?}", lab.row("RELOADED01")),
    );
    let retried = lab.row("RELOADED01");
    assert_eq!(retried.state.as_str(), "pending", "{retried:?}");

    // A body limit below the confirmation's size, and a single attempt per event.
    lab.spec.limits.push(("body_limit_bytes".to_owned(), 64));
    lab.spec
        .delivery
        .as_mut()
        .expect("a delivery lab")
        .max_attempts = 1;
    lab.write_config();
    let reloads = daemon.reloads("success");
    daemon.hup();
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "success")],
        Duration::from_secs(10),
        |v| v > reloads,
    );

    let refused = {
        let src = std::net::IpAddr::V4(hookwall_tests::netns::ALLOWED_V4);
        lab.post(
            src,
            &load_path(),
            &[("Content-Type", "application/json")],
            &load::confirmation("RELOADED02"),
        )
    };
    assert_eq!(
        refused.status,
        413,
        "the new body limit applies: {}",
        refused.text()
    );
    // The next failed attempt is the last one now: dead well before the 25 attempts of before.
    poll_until(
        Duration::from_secs(10),
        || lab.row("RELOADED01").state.as_str() == "dead",
        || {
            format!(
                "the event goes dead under max_attempts = 1: {:?}",
                lab.row("RELOADED01")
            )
        },
    );
    assert!(
        lab.row("RELOADED01").attempts < 25,
        "{:?}",
        lab.row("RELOADED01")
    );
    assert_eq!(lab.row("RELOADED00").state.as_str(), "delivered");
    assert_eq!(daemon.pid(), pid);
    assert!(
        daemon.try_wait().is_none(),
        "no restart; log:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("server.limits reloaded") && log.contains("[delivery] reloaded"),
        "log:\n{log}"
    );
    assert!(
        !log.contains("takes effect when hookwall restarts"),
        "log:\n{log}"
    );
    let status = daemon.term();
    assert!(status.success(), "{status}");
}

#[test]
fn under_a_service_manager_the_successor_becomes_the_main_process() {
    let lab = finish(Lab::https("hw-upgrade-"));
    // The test plays systemd's notify socket.
    let path = lab.dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).expect("binding the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut old = lab.spawn_with(|cmd| {
        cmd.env("NOTIFY_SOCKET", &path);
    });
    old.wait_ready(Duration::from_secs(15));
    let mut messages: Vec<String> = Vec::new();
    receive_until(&notify, &mut messages, "the first daemon's READY=1", |m| {
        m.iter().any(|m| m.contains("READY=1"))
    });
    assert!(
        messages[0].contains(&format!("MAINPID={}", old.pid())),
        "{messages:?}"
    );
    messages.clear();

    old.signal(libc::SIGUSR2);
    let status = old
        .wait_exit(HANDOVER)
        .unwrap_or_else(|| panic!("the old daemon hands over; log:\n{}", old.log()));
    assert!(status.success(), "{status}; log:\n{}", old.log());
    let (pid, _) = recorded(&lab);
    let new = Successor::new(pid.expect("the successor records its PID"));
    let main_pid = format!("MAINPID={}\n", new.pid);
    receive_until(
        &notify,
        &mut messages,
        "the successor's READY=1 and the old process's MAINPID=",
        |m| {
            m.iter()
                .any(|m| m.contains("READY=1") && m.contains(&main_pid))
                && m.iter()
                    .any(|m| m.contains(&main_pid) && m.contains("upgraded: PID"))
        },
    );
    assert!(
        !messages.iter().any(|m| m.contains("STOPPING=1")),
        "the service is not stopping, it changed its main process: {messages:?}"
    );
    // The successor goes on notifying the manager: its stop is announced there.
    new.term();
    receive_until(&notify, &mut messages, "the successor's STOPPING=1", |m| {
        m.iter().any(|m| m.contains("STOPPING=1"))
    });
}

/// Receives notifications into `messages` until `done` holds of them (at most 10 s).
fn receive_until(
    notify: &std::os::unix::net::UnixDatagram,
    messages: &mut Vec<String>,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !done(messages) {
        assert!(Instant::now() < deadline, "{what}: {messages:?}");
        if let Ok(n) = notify.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}
