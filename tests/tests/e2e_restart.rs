//! End-to-end tests of restarts under socket activation: the test plays the service manager,
//! holding the HTTPS listening socket in the server namespace and handing it to each
//! `hookwall run` as fd 3 (`LISTEN_FDS=1`, `LISTEN_FDNAMES=https`, `LISTEN_PID`), while a client
//! in the client namespace posts M-Pesa confirmations, each on a new TLS connection with its own
//! TransID. The daemon is stopped with SIGTERM and started again, twice; with the held socket
//! no connection is refused and no request fails, and every acknowledged event is stored once.
//! The same loop with the daemon binding its own socket is the control: its figures are
//! printed, and a connection made while no daemon runs is refused.
//!
//! Run as root: `cargo build -p hookwall --bins && cargo test -p hookwall-tests --test
//! e2e_restart -- --nocapture` (the figures are printed).

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hookwall_tests::{
    config::Route,
    daemon::Daemon,
    https::request,
    lab::Lab,
    load::{self, Tally, confirmation},
    netns::{ALLOWED_V4, PROTECTED_PORT, srv_addr},
};
use socket2::{Domain, Protocol, Socket, Type};

const MPESA: &str = "/mpesa/c2b/confirmation";
const TOKEN: &str = "tok3n-Rs7tPq2Lm9Xw4Kd1Vb6Nz0Hf5Jc8";
const JSON: (&str, &str) = ("Content-Type", "application/json");
/// How long the load runs before, between and after the restarts.
const STEADY: Duration = Duration::from_millis(300);
/// Pause between two requests of the load.
const PACE: Duration = Duration::from_millis(3);

/// An HTTPS lab with one M-Pesa confirmation route and a rate limit the load stays under.
fn lab() -> Lab {
    let mut lab = Lab::https("hw-restart-");
    let token = lab.write_secret("token", TOKEN);
    lab.spec.routes = vec![Route::mpesa(MPESA, &token)];
    lab.spec.limits = vec![
        ("rate_per_second".to_owned(), 100_000),
        ("rate_burst".to_owned(), 100_000),
    ];
    lab.write_config();
    lab
}

/// What a service manager holds for a `ListenStream=` socket unit: a listening TCP socket on
/// `address`, made in the server namespace, with a backlog of 1024.
fn held_socket(lab: &Lab, address: SocketAddr, listen: bool) -> OwnedFd {
    lab.net.srv.run(move || {
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .expect("socket");
        if address.is_ipv6() {
            // As systemd's default BindIPv6Only=default does with the kernel's default.
            socket.set_only_v6(false).expect("IPV6_V6ONLY off");
        }
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.bind(&address.into()).expect("bind");
        if listen {
            socket.listen(1024).expect("listen");
        }
        socket.into()
    })
}

fn configured(lab: &Lab) -> SocketAddr {
    lab.spec.server_listen.parse().expect("server.listen")
}

/// Starts `hookwall run` with `socket` handed over as `https`, and waits until it is ready.
fn start_activated(lab: &Lab, socket: &OwnedFd) -> Daemon {
    let mut daemon = spawn_activated(lab, socket, "https");
    daemon.wait_ready(Duration::from_secs(15));
    daemon
}

fn spawn_activated(lab: &Lab, socket: &OwnedFd, name: &str) -> Daemon {
    Daemon::spawn_activated(
        &lab.net.srv,
        &lab.config,
        lab.spec.metrics_listen,
        lab.dir.path(),
        (socket.as_fd(), name),
    )
}

/// Runs the load while `daemon` is stopped with SIGTERM and `start` starts the next one, twice.
/// Between the exit and the next start a probe connects; returns the load's tally and whether
/// each probe got its 200 (`Ok`) or why not.
fn restart_twice_under_load(
    lab: &Lab,
    tag: &'static str,
    mut daemon: Daemon,
    start: impl Fn() -> Daemon,
) -> (Tally, Vec<io::Result<u16>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = load::start(lab, format!("{MPESA}/{TOKEN}"), tag, PACE, &stop);
    std::thread::sleep(STEADY);
    let mut probes = Vec::new();
    for round in 0..2 {
        let status = daemon.term();
        assert!(
            status.success(),
            "hookwall run exits 0 on SIGTERM, got {status}; log:\n{}",
            daemon.log()
        );
        // Made while no process serves: it waits in the held socket's backlog, or is refused.
        let probe = {
            let src = IpAddr::V4(ALLOWED_V4);
            let (dst, client) = (srv_addr(src, PROTECTED_PORT), Arc::clone(lab.client()));
            let body = confirmation(&format!("{tag}probe{round}"));
            let path = format!("{MPESA}/{TOKEN}");
            lab.net.cli.spawn(move || {
                request(src, dst, &client, "POST", &path, &[JSON], &body).map(|r| r.status)
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        daemon = start();
        probes.push(probe.join().expect("probe thread"));
        std::thread::sleep(STEADY);
    }
    stop.store(true, Ordering::Relaxed);
    let tally = load.join().expect("load thread");
    drop(daemon);
    (tally, probes)
}

#[test]
fn restarts_on_a_held_socket_refuse_and_fail_nothing_and_store_every_event_once() {
    let lab = lab();
    let socket = held_socket(&lab, configured(&lab), true);
    let first = start_activated(&lab, &socket);
    let (tally, probes) =
        restart_twice_under_load(&lab, "HELD", first, || start_activated(&lab, &socket));
    println!("{}", tally.figures("held socket (socket activation)"));

    tally.assert_all_answered("held", "");
    for (round, probe) in probes.iter().enumerate() {
        assert!(
            matches!(probe, Ok(200)),
            "a request made while no daemon ran (restart {round}) waits in the held socket's \
             backlog and is answered by the next daemon: {probe:?}"
        );
    }

    // Every acknowledged event (and each probe's) is stored, exactly once, and nothing else.
    let mut stored: HashMap<String, usize> = HashMap::new();
    for event in lab
        .store()
        .list(None, 100_000, None)
        .expect("listing the store")
    {
        *stored.entry(event.event_id).or_default() += 1;
    }
    let mut expected: Vec<String> = tally.acknowledged.clone();
    expected.extend((0..2).map(|round| format!("HELDprobe{round}")));
    for id in &expected {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "acknowledged event {id} stored once"
        );
    }
    assert_eq!(
        stored.len(),
        expected.len(),
        "nothing stored unacknowledged"
    );
}

#[test]
fn restarts_that_bind_their_own_socket_refuse_connections_in_between() {
    let lab = lab();
    let first = lab.start();
    let (tally, probes) = restart_twice_under_load(&lab, "BIND", first, || lab.start());
    println!("{}", tally.figures("daemon binds its own socket (control)"));
    // The load's figures depend on timing, so only the probes are asserted: made while no
    // daemon runs, they find the port closed.
    for (round, probe) in probes.iter().enumerate() {
        assert!(
            matches!(probe, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused),
            "without a held socket, a connection made while no daemon runs (restart {round}) is \
             refused: {probe:?}"
        );
    }
}

#[test]
fn a_handed_socket_that_does_not_fit_the_config_refuses_the_start() {
    let lab = lab();
    let listen = configured(&lab);
    let other = SocketAddr::new(listen.ip(), PROTECTED_PORT + 1);
    let cases = [
        (
            (other, true),
            "https",
            vec![
                other.to_string(),
                format!("server.listen is {listen}"),
                format!("ListenStream={listen}"),
            ],
        ),
        (
            (listen, false),
            "https",
            vec![
                "not a listening TCP socket".to_owned(),
                "not listening".to_owned(),
            ],
        ),
        (
            (listen, true),
            "web",
            vec!["unknown name \"web\"".to_owned()],
        ),
        (
            (listen, true),
            "acme",
            vec!["no ACME listener is configured".to_owned()],
        ),
    ];
    for ((address, listening), name, expected) in cases {
        // One at a time: they share the address.
        let socket = held_socket(&lab, address, listening);
        let mut daemon = spawn_activated(&lab, &socket, name);
        let status = daemon
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| {
                panic!(
                    "hookwall run refuses a {name} socket; log:\n{}",
                    daemon.log()
                )
            });
        assert!(!status.success(), "{name}: exit {status}");
        let log = daemon.log();
        for part in &expected {
            assert!(
                log.contains(part),
                "{name}: the error says {part:?}; log:\n{log}"
            );
        }
    }
}
