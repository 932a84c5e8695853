//! Network namespaces and veth pairs that remove themselves on drop, and real TCP traffic
//! inside them.
//!
//! - [`NetNs`]: `ip netns add` / `ip netns del`; [`NetNs::run`] and [`NetNs::spawn`] run code on a
//!   thread that has entered the namespace (`setns`), so tests open real sockets there.
//! - [`VethPair`]: a veth between two namespaces, addressed (IPv6 without DAD), up.
//! - [`Topology`]: the two hosts of the end-to-end tests: a server namespace with the XDP
//!   filter's interface and a client namespace with allowed and refused source addresses.
//! - [`EchoServer`] and [`tcp_echo`]: a listener that echoes, and a client that binds its source
//!   address, connects with a timeout and checks the echo.
//!
//! Only documentation addresses (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)
//! are used, and only inside namespaces made here.

use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::unique_name;

/// Runs `ip ARGS`; panics with its output unless it succeeds.
///
/// # Panics
/// If `ip` cannot be run or exits non-zero.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace made by this test (`/run/netns/NAME`), deleted on drop.
///
/// Deleting the namespace deletes every interface in it, so veths need no guard of their own.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Makes a namespace named `{prefix}{pid}x{n}` (prefix should start with `hw-`), with `lo`
    /// up and IPv6 duplicate address detection off for every interface made in it later.
    ///
    /// # Panics
    /// If the namespace cannot be made (not root).
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        assert!(prefix.starts_with("hw-"), "test namespaces are named hw-*");
        let name = unique_name(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.run(|| {
            // /proc/sys/net is the namespace of the thread that opens the file.
            for key in [
                "net/ipv6/conf/all/accept_dad",
                "net/ipv6/conf/default/accept_dad",
                "net/ipv6/conf/all/dad_transmits",
                "net/ipv6/conf/default/dad_transmits",
            ] {
                std::fs::write(format!("/proc/sys/{key}"), "0")
                    .unwrap_or_else(|e| panic!("setting {key}=0: {e}"));
            }
        });
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (as `ip netns list` shows it).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    /// Sockets made in `f` belong to the namespace (also after they are handed to another
    /// thread). A panic in `f` is propagated.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.path(), f)
    }

    /// Like [`NetNs::run`], in the background.
    #[must_use]
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// `ip netns exec NAME CMD...`. Note that `ip netns exec` gives the command a private
    /// mount namespace with a fresh /sys, in which /sys/fs/bpf is NOT the host's bpffs; to run
    /// something that must see the host's pins, use [`crate::daemon::Daemon`] or
    /// [`crate::daemon::hookwall_in`] (see [`crate::daemon::NsEntry`]).
    ///
    /// # Panics
    /// If `ip` cannot be run.
    #[must_use]
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running `ip netns exec {} {}`: {e}",
                    self.name,
                    cmd.join(" ")
                )
            })
    }

    /// `ip -n NAME ARGS...`; panics unless it succeeds; returns stdout.
    ///
    /// # Panics
    /// If the command fails.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The XDP program attached to `dev`, as `ip -d link show` reports it (the `prog/xdp` or
    /// `xdp` part), or `None`.
    #[must_use]
    pub fn xdp_on(&self, dev: &str) -> Option<String> {
        let text = self.ip(&["-d", "link", "show", "dev", dev]);
        text.lines()
            .find(|l| l.contains("prog/xdp"))
            .or_else(|| text.lines().next().filter(|l| l.contains(" xdp")))
            .map(|l| l.trim().to_owned())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "removing netns {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("removing netns {}: {e}", self.name),
        }
    }
}

/// Runs `f` on a new thread that has entered the network namespace at `path`
/// (`/run/netns/NAME`); see [`NetNs::run`].
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(move || {
            enter(path);
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Moves the calling thread into the network namespace pinned at `path`.
fn enter(path: &Path) {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

static VETH: AtomicU32 = AtomicU32::new(0);

/// A veth pair: `a` in one namespace, `b` in another, both up with their addresses.
///
/// Each end lives in a namespace made by the test, so the names cannot clash with the host's;
/// they are still unique per process (`hw{pid%10000}x{n}a` / `...b`, at most 15 bytes) to make
/// logs readable. Deleting either namespace deletes the pair.
#[derive(Debug, Clone)]
pub struct VethPair {
    /// The end in the first namespace.
    pub a: String,
    /// The end in the second namespace.
    pub b: String,
}

impl VethPair {
    /// Makes the pair and gives each end its addresses (`"192.0.2.1/24"`, `"2001:db8:1::1/64"`;
    /// IPv6 ones with `nodad`), sets both up and waits until both are up with their addresses
    /// usable (not tentative).
    ///
    /// # Panics
    /// If any step fails or the links do not come up within 5 s.
    #[must_use]
    pub fn new(ns_a: &NetNs, a_addrs: &[&str], ns_b: &NetNs, b_addrs: &[&str]) -> Self {
        let n = VETH.fetch_add(1, Ordering::Relaxed);
        let stem = format!("hw{}x{n}", std::process::id() % 10_000);
        let (a, b) = (format!("{stem}a"), format!("{stem}b"));
        assert!(a.len() <= 15, "interface name {a} too long");
        ns_a.ip(&[
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            ns_b.name(),
        ]);
        for (ns, dev, addrs) in [(ns_a, &a, a_addrs), (ns_b, &b, b_addrs)] {
            for addr in addrs {
                if addr.contains(':') {
                    ns.ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"]);
                } else {
                    ns.ip(&["addr", "add", addr, "dev", dev]);
                }
            }
            ns.ip(&["link", "set", dev, "up"]);
        }
        let pair = Self { a, b };
        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, dev) in [(ns_a, &pair.a), (ns_b, &pair.b)] {
            loop {
                let link = ns.ip(&["-o", "link", "show", "dev", dev]);
                let tentative = ns.ip(&["-o", "-6", "addr", "show", "dev", dev, "tentative"]);
                if link.contains("LOWER_UP")
                    && link.contains("state UP")
                    && tentative.trim().is_empty()
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{dev} in {} not usable after 5 s: {link} / tentative: {tentative}",
                    ns.name()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        pair
    }
}

/// Port the filter protects in the end-to-end tests.
pub const PROTECTED_PORT: u16 = 8443;
/// A port the filter does not judge.
pub const UNPROTECTED_PORT: u16 = 8080;

/// The server's IPv4 address (on the filtered interface).
pub const SRV_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server's IPv6 address.
pub const SRV_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// A client IPv4 source inside [`ALLOWED_V4_NET`].
pub const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// A client IPv4 source outside every allowed prefix.
pub const REFUSED_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// A client IPv6 source inside [`ALLOWED_V6_NET`].
pub const ALLOWED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
/// A client IPv6 source outside every allowed prefix.
pub const REFUSED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x20);
/// The allowed IPv4 prefix.
pub const ALLOWED_V4_NET: &str = "192.0.2.0/24";
/// The allowed IPv6 prefix.
pub const ALLOWED_V6_NET: &str = "2001:db8:1::/64";
/// The prefix of [`REFUSED_V4`].
pub const REFUSED_V4_NET: &str = "198.51.100.0/24";
/// The prefix of [`REFUSED_V6`].
pub const REFUSED_V6_NET: &str = "2001:db8:2::/64";
/// The client's allowed sources, one of each family.
pub const ALLOWED: [IpAddr; 2] = [IpAddr::V4(ALLOWED_V4), IpAddr::V6(ALLOWED_V6)];
/// The client's refused sources, one of each family.
pub const REFUSED: [IpAddr; 2] = [IpAddr::V4(REFUSED_V4), IpAddr::V6(REFUSED_V6)];

/// Two hosts on one veth: `srv` (where the filter attaches, on [`Topology::srv_if`]) and `cli`,
/// which has an allowed and a refused source address of each family. `srv` reaches the
/// client-only prefixes through on-link routes on the same veth.
#[derive(Debug)]
pub struct Topology {
    /// The veth (`a` in `srv`, `b` in `cli`).
    pub veth: VethPair,
    /// The client namespace.
    pub cli: NetNs,
    /// The server namespace.
    pub srv: NetNs,
}

impl Topology {
    /// Builds the topology.
    ///
    /// # Panics
    /// If any step fails.
    #[must_use]
    pub fn new() -> Self {
        let srv = NetNs::new("hw-srv");
        let cli = NetNs::new("hw-cli");
        let veth = VethPair::new(
            &srv,
            &["192.0.2.1/24", "2001:db8:1::1/64"],
            &cli,
            &[
                "192.0.2.10/24",
                "198.51.100.20/24",
                "2001:db8:1::10/64",
                "2001:db8:2::20/64",
            ],
        );
        srv.ip(&["route", "add", REFUSED_V4_NET, "dev", &veth.a]);
        srv.ip(&["-6", "route", "add", REFUSED_V6_NET, "dev", &veth.a]);
        Self { veth, cli, srv }
    }

    /// The filtered interface (the `srv` end of the veth).
    #[must_use]
    pub fn srv_if(&self) -> &str {
        &self.veth.a
    }

    /// A TCP echo exchange from `src` to the server's address of the same family on `port`,
    /// from the client namespace.
    ///
    /// # Errors
    /// As [`tcp_echo`].
    pub fn echo(&self, src: IpAddr, port: u16, timeout: Duration) -> io::Result<()> {
        let dst = srv_addr(src, port);
        self.cli.run(move || tcp_echo(src, dst, timeout))
    }

    /// Asserts that `src` completes an echo exchange on `port`.
    ///
    /// # Panics
    /// If it does not.
    pub fn assert_connects(&self, src: IpAddr, port: u16) {
        if let Err(e) = self.echo(src, port, Duration::from_secs(2)) {
            panic!("{src} -> port {port} must connect and echo, got: {e}");
        }
    }

    /// [`Topology::assert_connects`] for each of `srcs`, one after the other.
    ///
    /// # Panics
    /// If any of them does not connect.
    pub fn assert_all_connect(&self, srcs: &[IpAddr], port: u16) {
        for &src in srcs {
            self.assert_connects(src, port);
        }
    }

    /// Asserts that a connection from `src` to `port` times out (its SYNs are dropped) within
    /// `timeout`, and is neither refused nor answered.
    ///
    /// # Panics
    /// If it connects or fails in another way.
    pub fn assert_times_out(&self, src: IpAddr, port: u16, timeout: Duration) {
        match self.echo(src, port, timeout) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Ok(()) => panic!("{src} -> port {port} must be dropped, but it connected"),
            Err(e) => panic!("{src} -> port {port} must time out, but failed otherwise: {e}"),
        }
    }
}

impl Topology {
    /// [`Topology::assert_times_out`] for several sources at once (in parallel, so the whole check
    /// takes one timeout).
    ///
    /// # Panics
    /// If any of them connects or fails in another way.
    pub fn assert_all_time_out(&self, srcs: &[IpAddr], port: u16, timeout: Duration) {
        std::thread::scope(|s| {
            let handles: Vec<_> = srcs
                .iter()
                .map(|&src| (src, s.spawn(move || self.echo(src, port, timeout))))
                .collect();
            let mut wrong = Vec::new();
            for (src, handle) in handles {
                match handle.join().expect("probe thread") {
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                    Ok(()) => wrong.push(format!("{src} connected")),
                    Err(e) => wrong.push(format!("{src} failed otherwise: {e}")),
                }
            }
            assert!(
                wrong.is_empty(),
                "connections to port {port} must be dropped (time out), but: {}",
                wrong.join("; ")
            );
        });
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// The server's address of `src`'s family, on `port`.
#[must_use]
pub fn srv_addr(src: IpAddr, port: u16) -> SocketAddr {
    match src {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(SRV_V4), port),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(SRV_V6), port),
    }
}

/// A TCP connection from `src` (bound before connecting, so the packets leave with that source
/// address) to `dst`, established within `connect_timeout`; reads and writes then time out after
/// `io_timeout`.
///
/// # Errors
/// `TimedOut` when the connection is not established in time (dropped SYNs); any other failure
/// as it happened.
pub fn connect_from(
    src: IpAddr,
    dst: SocketAddr,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> io::Result<TcpStream> {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(src, 0).into())?;
    socket.connect_timeout(&dst.into(), connect_timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    Ok(stream)
}

/// Connects from `src` (bound before connecting) to `dst` within `timeout`, sends a line and
/// expects it echoed back before the server closes the connection.
///
/// # Errors
/// `TimedOut` when the connection is not established in time (dropped SYNs); any other
/// failure as it happened; `InvalidData` when the echo differs.
pub fn tcp_echo(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<()> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mut stream = connect_from(src, dst, timeout, Duration::from_secs(3))?;
    let line = format!("hello {src} #{}\n", SEQ.fetch_add(1, Ordering::Relaxed));
    stream.write_all(line.as_bytes())?;
    let mut back = String::new();
    stream.read_to_string(&mut back)?;
    if back == line {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sent {line:?}, got back {back:?}"),
        ))
    }
}

/// A TCP echo server on `port` (IPv4 and IPv6, all addresses) inside a namespace: each
/// connection gets its first line back, then the server closes it. Stops on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    port: u16,
}

impl EchoServer {
    /// Binds `0.0.0.0:port` and `[::]:port` (v6-only) in `ns` and starts serving.
    ///
    /// # Panics
    /// If either cannot be bound.
    #[must_use]
    pub fn start(ns: &NetNs, port: u16) -> Self {
        let listeners = ns.run(move || {
            [
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            ]
            .map(|addr| {
                let domain = if addr.is_ipv4() {
                    Domain::IPV4
                } else {
                    Domain::IPV6
                };
                let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
                    .expect("making a listening socket");
                if addr.is_ipv6() {
                    s.set_only_v6(true).expect("IPV6_V6ONLY");
                }
                s.set_reuse_address(true).expect("SO_REUSEADDR");
                s.bind(&addr.into())
                    .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
                s.listen(1024).expect("listen");
                s.set_nonblocking(true).expect("O_NONBLOCK");
                TcpListener::from(s)
            })
        });
        let stop = Arc::new(AtomicBool::new(false));
        let threads = listeners
            .into_iter()
            .map(|listener| {
                let stop = stop.clone();
                std::thread::spawn(move || accept_loop(&listener, &stop))
            })
            .collect();
        Self {
            stop,
            threads,
            port,
        }
    }

    /// The port served.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool) {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: one valid pollfd for the listener, which outlives the call.
        let ready = unsafe { libc::poll(&raw mut pfd, 1, 50) };
        if ready <= 0 {
            continue;
        }
        while let Ok((stream, _)) = listener.accept() {
            std::thread::spawn(move || echo(stream));
        }
    }
}

/// Reads one line, sends it back and closes first, so that TIME_WAIT stays on the server's
/// side: the client's ports are free again at once, however many connections a loop makes.
fn echo(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    while !line.contains(&b'\n') && line.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream.write_all(&line);
}

/// A client in the background that connects again and again from `src` until stopped, and
/// counts successes and failures (with the first few errors kept for the report).
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    handle: Option<JoinHandle<LoopReport>>,
}

/// What a [`ClientLoop`] saw.
#[derive(Debug, Default)]
pub struct LoopReport {
    /// Completed echo exchanges.
    pub ok: u64,
    /// Failed attempts.
    pub failed: u64,
    /// The first failures, with the time since the loop started.
    pub errors: Vec<String>,
}

impl ClientLoop {
    /// Starts connecting from each of `srcs` in turn to the server's `port`, in `ns`, each
    /// attempt with `timeout` to connect.
    #[must_use]
    pub fn start(ns: &NetNs, srcs: &[IpAddr], port: u16, timeout: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (flag, ok_count) = (stop.clone(), ok.clone());
        let srcs = srcs.to_vec();
        let handle = ns.spawn(move || {
            let started = Instant::now();
            let mut report = LoopReport::default();
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let src = srcs[i % srcs.len()];
                i += 1;
                match tcp_echo(src, srv_addr(src, port), timeout) {
                    Ok(()) => {
                        report.ok += 1;
                        ok_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        report.failed += 1;
                        if report.errors.len() < 10 {
                            report.errors.push(format!(
                                "{src} at {:.3} s: {e}",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                    }
                }
            }
            report
        });
        Self {
            stop,
            ok,
            handle: Some(handle),
        }
    }

    /// Echo exchanges completed so far.
    #[must_use]
    pub fn ok_so_far(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until the loop has completed `n` more exchanges than now.
    ///
    /// # Panics
    /// If that takes longer than `timeout`.
    pub fn wait_for_more(&self, n: u64, timeout: Duration) {
        let target = self.ok_so_far() + n;
        let deadline = Instant::now() + timeout;
        while self.ok_so_far() < target {
            assert!(
                Instant::now() < deadline,
                "client loop made {} of {target} exchanges in {timeout:?}",
                self.ok_so_far()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the loop and returns what it saw.
    ///
    /// # Panics
    /// If the loop's thread panicked.
    pub fn stop(mut self) -> LoopReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("client loop thread panicked")
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
