//! End-to-end tests of `hookwall run` under a service manager, played by the test: the daemon's
//! notify messages (`sd_notify(3)`) read from a datagram socket the test binds and names in
//! `NOTIFY_SOCKET`, checked for content and order against what the daemon is doing (the filter
//! attached and the HTTPS port answering at `READY=1`, a reload's `MONOTONIC_USEC`, the watchdog
//! pings, `STOPPING=1`); its route token passed as a systemd credential
//! (`$CREDENTIALS_DIRECTORY`); and its log formats (`--log-format json`, text on a pipe).
//!
//! Run as root: `cargo build -p hookwall --bins && HOOKWALL_BIN=$PWD/target/debug/hookwall
//! cargo test -p hookwall-tests --test e2e_notify`.

use std::{
    net::IpAddr,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hookwall_tests::{
    config::Route,
    daemon::{Daemon, hookwall_command, output_text},
    lab::{Lab, assert_reply},
    netns::ALLOWED_V4,
    users::TestUser,
};
use serde_json::Value;

const MPESA: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Nf4qW8zR2xL7mT1yK9sB6nD0cH5jP";
const CREDENTIAL: &str = "mpesa-token";
const JSON: (&str, &str) = ("Content-Type", "application/json");
const C2B_CONFIRMATION: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/daraja/c2b_confirmation.json"
));
/// How long the daemon may take to start or to answer a signal (a debug build on a shared
/// machine).
const PATIENCE: Duration = Duration::from_secs(30);

/// One notify datagram: its `KEY=VALUE` lines, in order.
#[derive(Debug, Clone)]
struct Message(Vec<(String, String)>);

impl Message {
    fn parse(bytes: &[u8]) -> Self {
        let text = std::str::from_utf8(bytes).expect("a notify message is UTF-8");
        Self(
            text.lines()
                .map(|line| {
                    let (key, value) = line
                        .split_once('=')
                        .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?} in {text:?}"));
                    (key.to_owned(), value.to_owned())
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }

    fn is_watchdog(&self) -> bool {
        self.0.len() == 1 && self.has("WATCHDOG", "1")
    }

    /// As the daemon sent it, lines joined by `|`.
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("|")
    }
}

/// The service manager's end: a datagram socket at a path in the test's directory, open to
/// every user as systemd's is; every message received is kept for the report.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Everything received, in order.
    seen: Vec<Message>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .expect("chmod of the notify socket");
        Self {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// The next message within `timeout`, if one comes.
    fn recv(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("setting the read timeout");
            match self.socket.recv(&mut buf) {
                Ok(len) => {
                    let message = Message::parse(&buf[..len]);
                    self.seen.push(message.clone());
                    return Some(message);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                // A signal for another thread of the test harness (a child of a parallel test
                // exiting) may interrupt the wait.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("receiving on the notify socket: {e}"),
            }
        }
    }

    /// The next message that is not a watchdog ping; the pings skipped are counted.
    fn next_event(&mut self, daemon: &Daemon, watchdogs: &mut usize) -> Message {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(message) = self.recv(left) else {
                panic!(
                    "no notify message within {PATIENCE:?}; seen so far: {}\nlog:\n{}",
                    self.sequence(),
                    daemon.log()
                );
            };
            if message.is_watchdog() {
                *watchdogs += 1;
            } else {
                return message;
            }
        }
    }

    /// The messages seen, one per line, runs of watchdog pings shown as one line with a count.
    fn sequence(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        let mut pings = 0;
        for message in &self.seen {
            if message.is_watchdog() {
                pings += 1;
                continue;
            }
            if pings > 0 {
                lines.push(format!("WATCHDOG=1 (x{pings})"));
                pings = 0;
            }
            lines.push(message.text());
        }
        if pings > 0 {
            lines.push(format!("WATCHDOG=1 (x{pings})"));
        }
        lines.join("\n")
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock of `MONOTONIC_USEC`.
fn monotonic_usec() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    u128::try_from(ts.tv_sec).expect("a positive clock") * 1_000_000
        + u128::try_from(ts.tv_nsec).expect("positive nanoseconds") / 1_000
}

/// An HTTPS lab with one M-Pesa route whose token is the systemd credential [`CREDENTIAL`],
/// held in `DIR/credentials` (what systemd's `LoadCredential=` makes); returns the lab and that
/// directory.
fn credential_lab() -> (Lab, PathBuf) {
    let mut lab = Lab::https("hw-notify-");
    let credentials = lab.dir.path().join("credentials");
    std::fs::create_dir(&credentials).expect("the credentials directory");
    // A trailing newline, as `echo` and editors leave: not part of the token.
    std::fs::write(credentials.join(CREDENTIAL), format!("{TOKEN}\n")).expect("the credential");
    lab.spec.routes = vec![Route::mpesa_credential(MPESA, CREDENTIAL)];
    lab.write_config();
    (lab, credentials)
}

/// The prefix counts `hookwall status` reads from the pinned maps.
fn pinned_counts(lab: &Lab) -> (u64, u64) {
    let status = lab.status();
    let count = |key: &str| {
        status[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in {status}"))
    };
    (count("ipv4_prefixes"), count("ipv6_prefixes"))
}

fn confirmation(lab: &Lab, daemon: &Daemon, token: &str) -> u16 {
    let reply = lab.post(
        IpAddr::V4(ALLOWED_V4),
        &format!("{MPESA}/{token}"),
        &[JSON],
        C2B_CONFIRMATION,
    );
    if token == TOKEN {
        assert_reply(
            &reply,
            200,
            "a confirmation with the credential's token",
            daemon,
        );
    }
    reply.status
}

#[test]
fn the_service_manager_is_told_ready_reloads_watchdog_and_stop_in_order() {
    let (lab, credentials) = credential_lab();
    let mut notify = NotifySocket::bind(lab.dir.path());
    let mut daemon = lab.spawn_with(|cmd| {
        cmd.args(["--log-format", "json"])
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "200000")
            .env("CREDENTIALS_DIRECTORY", &credentials);
    });
    let iface = lab.net.srv_if().to_owned();
    let mut watchdogs = 0;

    // Start: the first message is READY=1, and when it arrives everything it promises holds.
    let ready = notify.next_event(&daemon, &mut watchdogs);
    let attached = lab.net.srv.xdp_on(&iface);
    let status = confirmation(&lab, &daemon, TOKEN);
    assert!(ready.has("READY", "1"), "first message: {}", ready.text());
    assert_eq!(
        watchdogs,
        0,
        "no watchdog ping before READY=1: {}",
        notify.sequence()
    );
    assert!(
        attached.is_some(),
        "READY=1 came before the filter was attached on {iface}; log:\n{}",
        daemon.log()
    );
    assert_eq!(status, 200, "the HTTPS port answered at READY=1");
    assert_eq!(
        ready.get("MAINPID"),
        Some(daemon.pid().to_string().as_str()),
        "{}",
        ready.text()
    );
    let (v4, v6) = pinned_counts(&lab);
    assert!(v4 > 0 && v6 > 0, "the lab allows both families");
    assert_eq!(
        ready.get("STATUS"),
        Some(format!("protecting {iface}: {v4} IPv4, {v6} IPv6 prefixes; serving HTTPS").as_str()),
        "{}",
        ready.text()
    );

    // The watchdog, asked for every 200 ms, is pinged about every 100 ms. Counted loosely over
    // a second: a loaded machine delays pings, none should come in bursts.
    let window = Instant::now() + Duration::from_secs(1);
    let mut pings = 0;
    while let Some(message) = notify.recv(window.saturating_duration_since(Instant::now())) {
        assert!(
            message.is_watchdog(),
            "only pings while nothing happens: {}",
            message.text()
        );
        pings += 1;
    }
    assert!(
        (3..=30).contains(&pings),
        "{pings} watchdog pings in a second at a 100 ms period"
    );

    // SIGHUP: RELOADING=1 stamped with the monotonic clock between the signal and its arrival,
    // then READY=1 with what is in force.
    let before = monotonic_usec();
    daemon.hup();
    let reloading = notify.next_event(&daemon, &mut watchdogs);
    let after = monotonic_usec();
    assert!(
        reloading.has("RELOADING", "1"),
        "after SIGHUP: {}",
        reloading.text()
    );
    let stamp: u128 = reloading
        .get("MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {}", reloading.text()))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC {stamp} is not between {before} and {after}"
    );
    let reloaded = notify.next_event(&daemon, &mut watchdogs);
    assert!(reloaded.has("READY", "1"), "{}", reloaded.text());
    assert_eq!(
        reloaded.get("STATUS"),
        Some(
            format!("reloaded; protecting {iface}: {v4} IPv4, {v6} IPv6 prefixes; serving HTTPS")
                .as_str()
        ),
        "{}",
        reloaded.text()
    );

    // An edit that breaks the config: the reload is announced, refused, and READY=1 says so.
    hookwall_tests::config::write_atomic(&lab.config, "[filter]\nmode = \"enforcing\"\n");
    let reloading = notify.next_event(&daemon, &mut watchdogs);
    assert!(reloading.has("RELOADING", "1"), "{}", reloading.text());
    let refused = notify.next_event(&daemon, &mut watchdogs);
    assert!(refused.has("READY", "1"), "{}", refused.text());
    assert_eq!(
        refused.get("STATUS"),
        Some(
            format!(
                "reload refused: the config has errors (see the log); the previous config stays \
                 in force; protecting {iface}: {v4} IPv4, {v6} IPv6 prefixes; serving HTTPS"
            )
            .as_str()
        ),
        "{}",
        refused.text()
    );
    // Still serving with the credential read at start; a wrong token is refused and audited.
    confirmation(&lab, &daemon, TOKEN);
    assert_eq!(confirmation(&lab, &daemon, "not-the-token"), 404);

    // SIGTERM: STOPPING=1 at once, then a clean exit; nothing after it but pings.
    daemon.signal(libc::SIGTERM);
    let stopping = notify.next_event(&daemon, &mut watchdogs);
    assert!(stopping.has("STOPPING", "1"), "{}", stopping.text());
    let exit = daemon
        .wait_exit(PATIENCE)
        .unwrap_or_else(|| panic!("still running after SIGTERM; log:\n{}", daemon.log()));
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    while let Some(late) = notify.recv(Duration::from_millis(100)) {
        assert!(late.is_watchdog(), "after STOPPING=1: {}", late.text());
    }
    assert!(watchdogs + pings >= 3, "pings went on through the reloads");
    println!("notify messages, in order:\n{}", notify.sequence());

    // The log: every line one JSON object; the audit lines' fields are fields, not text.
    assert_json_log(&daemon.log());
}

/// Every line of `log` is a JSON object; the audit lines carry the request's fields as fields
/// (an accepted confirmation and a wrong token), and the token appears nowhere.
fn assert_json_log(log: &str) {
    assert!(!log.contains(TOKEN), "the token is never logged:\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| panic!("not a JSON object: {line:?}\nlog:\n{log}"))
        })
        .collect();
    assert!(lines.len() > 5, "the daemon logged its start:\n{log}");
    let audit: Vec<&Value> = lines.iter().filter(|l| l["target"] == "audit").collect();
    let find = |outcome: &str| {
        audit
            .iter()
            .find(|l| l["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no audit line with outcome {outcome}:\n{log}"))
    };
    let accepted = find("accepted");
    assert_eq!(accepted["route"], MPESA, "{accepted}");
    assert_eq!(accepted["client"], ALLOWED_V4.to_string(), "{accepted}");
    assert_eq!(accepted["status"], 200, "{accepted}");
    assert_eq!(accepted["event_id"], "RKTQDM7W6S", "{accepted}");
    assert_eq!(accepted["level"], "INFO", "{accepted}");
    let refused = find("not_found");
    assert_eq!(refused["route"], MPESA, "{refused}");
    assert_eq!(refused["reason"], "bad_token", "{refused}");
    assert_eq!(refused["status"], 404, "{refused}");
    assert_eq!(refused["client"], ALLOWED_V4.to_string(), "{refused}");
    // A daemon line with fields of its own keeps them as fields too.
    let in_force = lines
        .iter()
        .find(|l| l["message"] == "filter in force")
        .unwrap_or_else(|| panic!("no \"filter in force\" line:\n{log}"));
    assert!(in_force["ipv4_prefixes"].is_u64(), "{in_force}");
}

/// The first message is READY=1, sent after the daemon dropped to `daemon.run_as`.
fn ready_after_the_drop(notify: &mut NotifySocket, daemon: &Daemon, watchdogs: &mut usize) {
    let ready = notify.next_event(daemon, watchdogs);
    assert!(ready.has("READY", "1"), "{}", ready.text());
    assert!(
        daemon
            .log()
            .contains("dropped the privileges only the start needed"),
        "log:\n{}",
        daemon.log()
    );
}

#[test]
fn after_dropping_to_run_as_the_daemon_still_reaches_the_service_manager() {
    let user = TestUser::create();
    let mut lab = Lab::https("hw-notify-");
    let token = lab.write_secret("token", TOKEN);
    lab.spec.routes = vec![Route::mpesa(MPESA, &token)];
    lab.spec.run_as = Some(user.name.clone());
    lab.write_config();
    // The store is made in the test's directory; the token is the user's, as an operator
    // gives it.
    user.own(lab.dir.path());
    user.own_secrets(lab.dir.path(), &["token"]);
    let mut notify = NotifySocket::bind(lab.dir.path());
    let mut daemon = lab.spawn_with(|cmd| {
        cmd.env("NOTIFY_SOCKET", &notify.path);
    });
    let mut watchdogs = 0;
    ready_after_the_drop(&mut notify, &daemon, &mut watchdogs);
    let uid_line = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
        .expect("the daemon's status")
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(str::to_owned)
        .expect("a Uid line");
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|id| id == user.uid.to_string()),
        "the daemon runs as {}: {uid_line}",
        user.name
    );

    // Sent as that user: the reload's messages and the stop's.
    daemon.hup();
    let reloading = notify.next_event(&daemon, &mut watchdogs);
    assert!(reloading.has("RELOADING", "1"), "{}", reloading.text());
    let reloaded = notify.next_event(&daemon, &mut watchdogs);
    assert!(reloaded.has("READY", "1"), "{}", reloaded.text());
    assert!(
        reloaded
            .get("STATUS")
            .is_some_and(|s| s.starts_with("reloaded; protecting ")),
        "{}",
        reloaded.text()
    );
    daemon.signal(libc::SIGTERM);
    let stopping = notify.next_event(&daemon, &mut watchdogs);
    assert!(stopping.has("STOPPING", "1"), "{}", stopping.text());
    let exit = daemon.wait_exit(PATIENCE).expect("exits after SIGTERM");
    assert!(exit.success(), "exit after SIGTERM: {exit}");
    assert_eq!(watchdogs, 0, "no WATCHDOG_USEC, no pings");
}

#[test]
fn credentials_only_root_can_read_serve_the_run_as_user_across_reloads() {
    let user = TestUser::create();
    let (mut lab, credentials) = credential_lab();
    lab.spec.run_as = Some(user.name.clone());
    lab.write_config();
    user.own(lab.dir.path());
    // As systemd leaves them for a unit that starts as root: root's, read-only, private.
    std::fs::set_permissions(
        credentials.join(CREDENTIAL),
        std::fs::Permissions::from_mode(0o400),
    )
    .expect("chmod of the credential");
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o500))
        .expect("chmod of the credentials directory");
    let mut notify = NotifySocket::bind(lab.dir.path());
    let mut daemon = lab.spawn_with(|cmd| {
        cmd.env("NOTIFY_SOCKET", &notify.path)
            .env("CREDENTIALS_DIRECTORY", &credentials);
    });
    let mut watchdogs = 0;
    ready_after_the_drop(&mut notify, &daemon, &mut watchdogs);
    confirmation(&lab, &daemon, TOKEN);

    // The reload reads the route's secrets again, as the user, who cannot open the credential:
    // the one read at start is used, and the reload is applied.
    daemon.hup();
    let reloading = notify.next_event(&daemon, &mut watchdogs);
    assert!(reloading.has("RELOADING", "1"), "{}", reloading.text());
    let reloaded = notify.next_event(&daemon, &mut watchdogs);
    assert!(
        reloaded
            .get("STATUS")
            .is_some_and(|s| s.starts_with("reloaded; protecting ")),
        "the reload with a credential only root can read: {}; log:\n{}",
        reloaded.text(),
        daemon.log()
    );
    confirmation(&lab, &daemon, TOKEN);
    assert_eq!(
        confirmation(&lab, &daemon, "wrong-token-that-is-long-enough-0123456789"),
        404,
        "the credential still decides after the reload"
    );
    assert!(
        !daemon.log().contains(TOKEN),
        "the token never reaches the log"
    );
    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_exit(PATIENCE).expect("exits after SIGTERM");
    assert!(exit.success(), "exit after SIGTERM: {exit}");
}

/// `hookwall ARGS run -c CONFIG` in the lab's server namespace, with output on pipes and
/// colours not refused by `NO_COLOR`, as under systemd (whose journal reads a pipe or socket).
fn run_piped(lab: &Lab, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let config = lab.config.to_str().expect("UTF-8 path");
    let mut cmd = hookwall_command(args);
    cmd.args(["run", "-c", config])
        .env_remove("NO_COLOR")
        .env_remove("CREDENTIALS_DIRECTORY");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let entry = hookwall_tests::daemon::NsEntry::new(&lab.net.srv);
    entry.apply(&mut cmd);
    let output = cmd.output().expect("running hookwall run");
    drop(entry);
    output
}

#[test]
fn log_formats_on_a_pipe_are_plain_text_or_json_lines_and_a_bad_one_is_named() {
    // A start that logs a warning (a token file others can read), then stops on a credential
    // with no $CREDENTIALS_DIRECTORY: nothing is attached before that.
    let (mut lab, _credentials) = credential_lab();
    let loose = lab.write_secret("loose-token", TOKEN);
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    lab.spec
        .routes
        .push(Route::mpesa("/mpesa/stk/result", &loose));
    lab.write_config();
    let credential_error = format!(
        "credential {CREDENTIAL}: $CREDENTIALS_DIRECTORY is not set; systemd sets it for units \
         with LoadCredential={CREDENTIAL}:PATH"
    );

    let text = run_piped(
        &lab,
        &[("HOOKWALL_LOG_FORMAT", "json")],
        &["--log-format", "text"],
    );
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(!text.status.success(), "{}", output_text(&text));
    assert!(
        stderr.contains("WARN") && stderr.contains(&loose.display().to_string()),
        "the flag wins over HOOKWALL_LOG_FORMAT: a text warning line; {}",
        output_text(&text)
    );
    assert!(stderr.contains(&credential_error), "{}", output_text(&text));
    assert!(
        !text.stderr.contains(&0x1b),
        "no colour codes on a pipe: {}",
        output_text(&text)
    );
    assert!(lab.net.srv.xdp_on(lab.net.srv_if()).is_none());

    let json = run_piped(&lab, &[("HOOKWALL_LOG_FORMAT", "json")], &[]);
    assert!(!json.status.success(), "{}", output_text(&json));
    let lines: Vec<Value> = String::from_utf8_lossy(&json.stderr)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{line:?} is not JSON ({e}); {}", output_text(&json)))
        })
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"),
        "{}",
        output_text(&json)
    );
    let last = lines.last().expect("lines");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains(&credential_error)),
        "the error that ends the start is a JSON line too: {last}"
    );

    let bogus = run_piped(&lab, &[("HOOKWALL_LOG_FORMAT", "bogus")], &[]);
    assert_eq!(bogus.status.code(), Some(2), "{}", output_text(&bogus));
    let stderr = String::from_utf8_lossy(&bogus.stderr);
    assert!(
        stderr.contains("HOOKWALL_LOG_FORMAT")
            && stderr.contains("\"bogus\"")
            && stderr.contains("text")
            && stderr.contains("json"),
        "{}",
        output_text(&bogus)
    );
}
