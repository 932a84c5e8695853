//! End-to-end tests of what `hookwall run` keeps of root's privileges once the filter is in
//! force: a real daemon in a test namespace, its credentials read from `/proc/PID/task/*/status`
//! (every thread: Linux keeps credentials per thread), then every reload path and the serving
//! path exercised with what it kept: an allowlist edit, an interface added and removed (a link
//! made and pinned, then unpinned), a certificate replaced, a callback stored and delivered, and
//! the kernel counters read from their pins at a scrape.
//!
//! With `daemon.run_as` the daemon runs as a system user the test creates (`hw-test-PIDxN`,
//! removed afterwards, also when the test fails); a start whose user cannot write the store is
//! refused with the file and the fix, before anything is attached.
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_privileges`.

use std::{
    collections::BTreeMap, net::IpAddr, os::unix::fs::PermissionsExt as _, sync::Arc,
    time::Duration,
};

use hookwall_tests::{
    config::Route,
    daemon::{Daemon, poll_until},
    https::{TestCa, handshake},
    lab::{Lab, SERVER_NAMES, assert_reply},
    netns::{
        ALLOWED_V4, PROTECTED_PORT, REFUSED_V4, REFUSED_V4_NET, VethPair, connect_from, srv_addr,
    },
    users::TestUser,
};

const CONFIRMATION: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Pv7cR2mX9qL4wT8yK1sB6nD0fH5jZ";
const DELIVERY_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const APP_PORT: u16 = 8000;
const JSON: (&str, &str) = ("Content-Type", "application/json");
const ACCEPTED: &str = r#"{"ResultCode":0,"ResultDesc":"Accepted"}"#;
const C2B_CONFIRMATION: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));

/// CAP_BPF (39): what the daemon keeps, and nothing else.
const KEPT: u64 = 1 << 39;
/// How long a refused source's connection attempt is given (the first SYN only).
const REFUSED_TIMEOUT: Duration = Duration::from_millis(900);

/// The credentials of one thread, from `/proc/PID/task/TID/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadCreds {
    cap_inh: u64,
    cap_prm: u64,
    cap_eff: u64,
    cap_bnd: u64,
    cap_amb: u64,
    no_new_privs: bool,
    /// Real, effective, saved and filesystem ids.
    uid: [u32; 4],
    gid: [u32; 4],
}

impl ThreadCreds {
    /// What every thread of the daemon must hold when it runs as `uid`:`gid`.
    fn kept(uid: u32, gid: u32) -> Self {
        Self {
            cap_inh: 0,
            cap_prm: KEPT,
            cap_eff: KEPT,
            cap_bnd: KEPT,
            cap_amb: 0,
            no_new_privs: true,
            uid: [uid; 4],
            gid: [gid; 4],
        }
    }

    fn parse(status: &str) -> Self {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
                .trim()
                .to_owned()
        };
        let mask =
            |name| u64::from_str_radix(&field(name), 16).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ids = |name| -> [u32; 4] {
            let ids: Vec<u32> = field(name)
                .split_whitespace()
                .map(|id| id.parse().expect("a numeric id"))
                .collect();
            ids.try_into().expect("four ids")
        };
        Self {
            cap_inh: mask("CapInh"),
            cap_prm: mask("CapPrm"),
            cap_eff: mask("CapEff"),
            cap_bnd: mask("CapBnd"),
            cap_amb: mask("CapAmb"),
            no_new_privs: field("NoNewPrivs") == "1",
            uid: ids("Uid"),
            gid: ids("Gid"),
        }
    }
}

/// Every thread of process `pid`, with its credentials.
fn threads_of(pid: u32) -> BTreeMap<u32, ThreadCreds> {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
        .flatten()
        .filter_map(|entry| {
            let tid = entry.file_name().to_str()?.parse().ok()?;
            // A thread may end between the listing and the read.
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            Some((tid, ThreadCreds::parse(&status)))
        })
        .collect()
}

/// Asserts that every thread of the daemon holds exactly `want`; returns how many threads it has.
fn assert_every_thread(daemon: &Daemon, want: &ThreadCreds, when: &str) -> usize {
    let threads = threads_of(daemon.pid());
    let wrong: Vec<_> = threads.iter().filter(|(_, c)| *c != want).collect();
    assert!(
        wrong.is_empty(),
        "{when}: threads holding other credentials than {want:?}:\n{wrong:#?}\nlog:\n{}",
        daemon.log()
    );
    threads.len()
}

/// A delivery lab with one M-Pesa confirmation route, run as `run_as` if given.
fn lab(run_as: Option<&str>) -> Lab {
    let mut lab = Lab::delivery("hw-priv-", APP_PORT, DELIVERY_SECRET, |_| {});
    let token = lab.write_secret("token", TOKEN);
    lab.spec.routes = vec![Route::mpesa(CONFIRMATION, &token)];
    lab.spec.run_as = run_as.map(str::to_owned);
    lab.write_config();
    lab
}

/// The fixture's confirmation with its TransID replaced by `id`.
fn confirmation(id: &str) -> Vec<u8> {
    assert!(C2B_CONFIRMATION.contains("\"RKTQDM7W6S\""));
    C2B_CONFIRMATION
        .replace("\"RKTQDM7W6S\"", &format!("{id:?}"))
        .into_bytes()
}

/// Waits until `hookwall_config_reloads_total{result="success"}` reaches `n`; asserts none
/// failed.
fn wait_reloads(daemon: &Daemon, n: f64) {
    daemon.wait_metric(
        "hookwall_config_reloads_total",
        &[("result", "success")],
        Duration::from_secs(10),
        |v| v >= n,
    );
    assert_eq!(daemon.reloads("failure"), 0.0, "log:\n{}", daemon.log());
}

/// Whether a TCP connection from `src` to the receiver is established in time.
fn connects(lab: &Lab, src: IpAddr) -> bool {
    let dst = srv_addr(src, PROTECTED_PORT);
    lab.net
        .cli
        .run(move || connect_from(src, dst, REFUSED_TIMEOUT, Duration::from_secs(1)).is_ok())
}

/// Exercises, on a daemon that has dropped to `want`, everything it still does: a callback
/// stored and delivered, the kernel counters scraped from their pins, an allowlist edit, an
/// interface attached then detached by reloads, a certificate replaced. Then checks that every
/// thread, those started meanwhile too, still holds `want`, and stops the daemon.
fn exercise(lab: &mut Lab, mut daemon: Daemon, want: &ThreadCreds) {
    let threads = assert_every_thread(&daemon, want, "after start");
    assert!(
        threads > 2,
        "the daemon runs several threads (tokio workers, the store's), so a drop on one \
         thread alone would show here; it has {threads}"
    );
    let log = daemon.log();
    assert!(
        log.contains("dropped the privileges only the start needed"),
        "log:\n{log}"
    );

    // Serving: stored (the store written), answered, delivered.
    lab.app().up();
    let reply = lab.post(
        IpAddr::V4(ALLOWED_V4),
        &format!("{CONFIRMATION}/{TOKEN}"),
        &[JSON],
        &confirmation("RKPRIV0001"),
    );
    assert_reply(&reply, 200, "a confirmation", &daemon);
    assert_eq!(reply.text(), ACCEPTED);
    poll_until(
        Duration::from_secs(10),
        || {
            lab.app()
                .deliveries()
                .iter()
                .any(|r| r.webhook_id == "RKPRIV0001")
        },
        || format!("RKPRIV0001 not delivered; log:\n{}", daemon.log()),
    );

    // The kernel counters, read from their pins by the metrics collector.
    let passed = daemon.metric(
        "hookwall_xdp_packets_total",
        &[("verdict", "pass"), ("reason", "allowed")],
    );
    assert!(passed > 0.0, "no allowed packets counted");

    // An allowlist edit: map updates through the daemon's own fds and mmaps.
    assert!(
        !connects(lab, IpAddr::V4(REFUSED_V4)),
        "{REFUSED_V4} is not on the allowlist yet"
    );
    let mut cidrs: Vec<&str> = lab.spec.cidrs.iter().map(String::as_str).collect();
    cidrs.push(REFUSED_V4_NET);
    lab.write_cidrs(&cidrs);
    daemon.hup();
    wait_reloads(&daemon, 1.0);
    poll_until(
        Duration::from_secs(5),
        || connects(lab, IpAddr::V4(REFUSED_V4)),
        || {
            format!(
                "{REFUSED_V4} still dropped after the reload; log:\n{}",
                daemon.log()
            )
        },
    );

    // An interface named later: a link made and pinned by a reload, then unpinned by another.
    let extra = VethPair::new(
        &lab.net.srv,
        &["203.0.113.1/24"],
        &lab.net.cli,
        &["203.0.113.2/24"],
    );
    lab.spec.interfaces.push(extra.a.clone());
    lab.write_config();
    daemon.hup();
    wait_reloads(&daemon, 2.0);
    poll_until(
        Duration::from_secs(5),
        || lab.net.srv.xdp_on(&extra.a).is_some(),
        || {
            format!(
                "no XDP on {} after the reload; log:\n{}",
                extra.a,
                daemon.log()
            )
        },
    );
    let status = lab.status();
    let links = status["links"].as_array().expect("links").clone();
    assert!(
        links
            .iter()
            .any(|l| l["interface"] == extra.a.as_str() && l["alive"] == true),
        "{} is not pinned: {status:#}",
        extra.a
    );
    lab.spec.interfaces.retain(|i| *i != extra.a);
    lab.write_config();
    daemon.hup();
    wait_reloads(&daemon, 3.0);
    poll_until(
        Duration::from_secs(5),
        || lab.net.srv.xdp_on(&extra.a).is_none(),
        || {
            format!(
                "XDP still on {} after the reload; log:\n{}",
                extra.a,
                daemon.log()
            )
        },
    );

    // A certificate replaced: read again, as the daemon's user.
    let second = TestCa::new();
    second.issue(lab.dir.path(), &SERVER_NAMES);
    let second_client = second.http1_client();
    let src = IpAddr::V4(ALLOWED_V4);
    let dst = srv_addr(src, PROTECTED_PORT);
    poll_until(
        Duration::from_secs(10),
        || {
            let client = Arc::clone(&second_client);
            lab.net
                .cli
                .run(move || handshake(src, dst, &client))
                .is_ok()
        },
        || {
            format!(
                "the replaced certificate is not served; log:\n{}",
                daemon.log()
            )
        },
    );

    assert_every_thread(&daemon, want, "after the reloads and a delivery");
    let log = daemon.log();
    for failure in ["ERROR", "cannot watch"] {
        assert!(!log.contains(failure), "{failure} in the log:\n{log}");
    }
    let status = daemon.term();
    assert!(
        status.success(),
        "graceful stop: {status}; log:\n{}",
        daemon.log()
    );
}

#[test]
fn as_root_the_daemon_keeps_only_what_reloads_need_on_every_thread() {
    let mut lab = lab(None);
    let daemon = lab.start();
    exercise(&mut lab, daemon, &ThreadCreds::kept(0, 0));
}

#[test]
fn with_run_as_the_daemon_becomes_that_user_and_still_reloads_and_delivers() {
    let user = TestUser::create();
    let mut lab = lab(Some(&user.name));
    // The store lives in the test's directory: the user must be able to create files there.
    user.own(lab.dir.path());
    user.own_secrets(lab.dir.path(), &["token"]);
    let daemon = lab.start();
    exercise(&mut lab, daemon, &ThreadCreds::kept(user.uid, user.gid));
    // What the daemon made as root before the drop was handed to the user.
    let store = std::fs::metadata(&lab.spec.store_path).expect("the store");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&store),
        user.uid,
        "the store the daemon created belongs to its user"
    );
}

#[test]
fn a_run_as_user_who_cannot_write_the_store_is_refused_before_anything_is_attached() {
    let user = TestUser::create();
    let lab = lab(Some(&user.name));
    // The test's directory stays root's: the user may read the config, certificate and its
    // secret in it, but not create the store's files there.
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod of the test directory");
    user.own_secrets(lab.dir.path(), &["token"]);
    let mut daemon = lab.spawn(&lab.config);
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the daemon did not refuse to start; log:\n{}", daemon.log()));
    assert!(!status.success(), "refused start exits non-zero");
    let log = daemon.log();
    let dir = lab.dir.path().display().to_string();
    for part in [
        format!("runs as user {} (uid {})", user.name, user.uid),
        "nothing was changed".to_owned(),
        format!("{dir}: cannot create files in it"),
        format!("chown -R {}: {dir}", user.name),
    ] {
        assert!(
            log.contains(&part),
            "the refusal lacks {part:?}; log:\n{log}"
        );
    }
    assert!(
        lab.net.srv.xdp_on(lab.net.srv_if()).is_none(),
        "nothing is attached after a refused start"
    );
    assert!(
        !lab.pins.path().exists(),
        "nothing is pinned after a refused start"
    );
}
