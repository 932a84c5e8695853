//! Runs the `hookwall` binary (the daemon and its subcommands) for the end-to-end tests, and
//! reads its metrics.
//!
//! - [`Daemon`]: `hookwall run -c FILE` inside a network namespace, its output in a log file,
//!   ready once `/metrics` answers; killed by its own PID on drop (never by name).
//! - [`hookwall`] / [`hookwall_in`]: one-shot subcommands (`status`, `detach`, `check`).
//! - [`PinsGuard`]: a unique pin path under /sys/fs/bpf, detached and removed on drop.
//! - [`metrics`], [`metric_value`]: a raw HTTP/1.1 scrape and a Prometheus text parser.
//!
//! Processes are put into a test namespace like `ip netns exec` does (network namespace, and a
//! /sys that shows its interfaces), but with the host's bpffs kept at /sys/fs/bpf: see
//! [`NsEntry`]. Under plain `ip netns exec` the daemon would pin into a private bpffs that
//! disappears with the process, and nobody else could see its pins.

use std::{
    fs::{self, File},
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    netns::{NetNs, run_in},
    unique_name,
};

/// The `hookwall` binary: `$HOOKWALL_BIN`, else `target/<profile>/hookwall` next to the test
/// executable's `deps/` directory.
///
/// # Panics
/// If it does not exist (build it first: `cargo build -p hookwall --bins`).
#[must_use]
pub fn hookwall_bin() -> PathBuf {
    let path = std::env::var_os("HOOKWALL_BIN").map_or_else(
        || {
            let exe = std::env::current_exe().expect("path of the test executable");
            // target/debug/deps/e2e_filter-HASH -> target/debug/hookwall
            exe.parent()
                .and_then(Path::parent)
                .map(|dir| dir.join("hookwall"))
                .expect("test executable lives in target/<profile>/deps")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "hookwall binary not found at {} (set HOOKWALL_BIN or run `cargo build -p hookwall --bins`)",
        path.display()
    );
    path
}

/// A `hookwall ARGS` command in the test's own namespaces.
#[must_use]
pub fn hookwall_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(hookwall_bin());
    cmd.args(args);
    clean_env(&mut cmd);
    cmd
}

/// Keeps the test runner's environment out of `cmd`.
fn clean_env(cmd: &mut Command) {
    // Whatever runs the tests (a systemd unit, a shell with a log format set) does not leak
    // into the daemon: a test sets these itself.
    cmd.env("NO_COLOR", "1")
        .env_remove("HOOKWALL_LOG")
        .env_remove("HOOKWALL_LOG_FORMAT")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES");
}

/// Runs `hookwall ARGS` to completion in the test's own namespaces (for `status`, `detach`,
/// which only read and remove pins).
///
/// # Panics
/// If the binary cannot be run.
#[must_use]
pub fn hookwall(args: &[&str]) -> Output {
    hookwall_command(args)
        .output()
        .unwrap_or_else(|e| panic!("running hookwall {}: {e}", args.join(" ")))
}

/// Runs `hookwall ARGS` to completion inside `ns` (see [`NsEntry`]); for `check` and `run`,
/// which look at interfaces.
///
/// # Panics
/// If the binary cannot be run.
#[must_use]
pub fn hookwall_in(ns: &NetNs, args: &[&str]) -> Output {
    let mut cmd = hookwall_command(args);
    let entry = NsEntry::new(ns);
    entry.apply(&mut cmd);
    cmd.output()
        .unwrap_or_else(|e| panic!("running hookwall {} in {}: {e}", args.join(" "), ns.name()))
}

/// How a child process is put "inside" a test namespace: it enters the network namespace, and
/// in a private mount namespace gets a /sys that describes that network namespace (as
/// `ip netns exec` does, so /sys/class/net lists the namespace's interfaces) with the host's
/// bpffs bind-mounted back at /sys/fs/bpf (which `ip netns exec` loses: pins made there would
/// live in a private bpffs that vanishes with the process). Keep it alive until the command is
/// spawned.
pub struct NsEntry {
    netns: File,
}

impl NsEntry {
    /// Prepares entering `ns`.
    ///
    /// # Panics
    /// If the namespace cannot be opened.
    #[must_use]
    pub fn new(ns: &NetNs) -> Self {
        Self::new_at(&ns.path())
    }

    /// Prepares entering the namespace at `path` (`/run/netns/NAME`).
    ///
    /// # Panics
    /// If the namespace cannot be opened.
    #[must_use]
    pub fn new_at(path: &Path) -> Self {
        Self {
            netns: open_path(path),
        }
    }

    /// Makes `cmd`'s process enter the namespace before exec.
    pub fn apply(&self, cmd: &mut Command) {
        let netns = self.netns.as_raw_fd();
        // SAFETY: between fork and exec the closure only makes system calls (setns, unshare,
        // mount, open, close) on an fd that `self` keeps open until the command is spawned and on
        // C strings it owns or builds on the stack; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || enter_in_child(netns));
        }
    }
}

/// The child's side of [`NsEntry`]: async-signal-safe (system calls and stack buffers only).
///
/// # Safety
/// Only to be called between fork and exec.
unsafe fn enter_in_child(netns: libc::c_int) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls with valid NUL-terminated strings and a stack buffer.
    unsafe {
        // If the test process dies without running its guards, the daemon goes too. (The
        // signal comes when the spawning *thread* exits: spawn from the test's own thread.)
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        check(libc::setns(netns, libc::CLONE_NEWNET))?;
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // Nothing mounted from here on propagates back to the host.
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ))?;
        // The host's bpffs, as seen in this (new) mount namespace, before /sys is covered.
        let bpffs = libc::open(
            c"/sys/fs/bpf".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if bpffs < 0 {
            return Err(io::Error::last_os_error());
        }
        check(libc::mount(
            c"sysfs".as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            0,
            std::ptr::null(),
        ))?;
        let mut path = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        path[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 10];
        let (mut n, mut len) = (bpffs.unsigned_abs(), 0);
        loop {
            digits[len] = b'0' + u8::try_from(n % 10).unwrap_or(0);
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            path[prefix.len() + i] = digits[len - 1 - i];
        }
        check(libc::mount(
            path.as_ptr().cast(),
            c"/sys/fs/bpf".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))?;
        libc::close(bpffs);
    }
    Ok(())
}

fn open_path(path: &Path) -> File {
    File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Both output streams of a finished command, for messages.
#[must_use]
pub fn output_text(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Removes ANSI escape sequences (colours) from a log.
#[must_use]
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `cond` every 10 ms until it holds.
///
/// # Panics
/// After `timeout`, with `what()` in the message.
pub fn poll_until(
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    what: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

static LOGS: AtomicU32 = AtomicU32::new(0);

/// A `hookwall run` process in a network namespace. Killed (SIGKILL, by PID) on drop if still
/// running; its log is printed when the test is failing.
pub struct Daemon {
    child: Child,
    exited: Option<ExitStatus>,
    log: PathBuf,
    netns: PathBuf,
    metrics: SocketAddr,
}

impl Daemon {
    /// Spawns `hookwall run -c config` in `ns`, output to a log file in `dir`, and returns at
    /// once. `metrics` is the config's `metrics.listen` (an address inside `ns`).
    ///
    /// # Panics
    /// If it cannot be spawned.
    #[must_use]
    pub fn spawn(ns: &NetNs, config: &Path, metrics: SocketAddr, dir: &Path) -> Self {
        Self::spawn_with(ns, config, metrics, dir, |_| {})
    }

    /// [`Daemon::spawn`], with `tune` adjusting the command first (its environment, or
    /// arguments before `run`'s).
    ///
    /// # Panics
    /// If it cannot be spawned.
    #[must_use]
    pub fn spawn_with(
        ns: &NetNs,
        config: &Path,
        metrics: SocketAddr,
        dir: &Path,
        tune: impl FnOnce(&mut Command),
    ) -> Self {
        let entry = NsEntry::new(ns);
        let config = config.to_str().expect("UTF-8 config path");
        let mut cmd = hookwall_command(&[]);
        tune(&mut cmd);
        cmd.args(["run", "-c", config]);
        entry.apply(&mut cmd);
        Self::spawn_command(ns, (cmd, entry), metrics, dir)
    }

    /// [`Daemon::spawn`] running the binary at `bin` instead of [`hookwall_bin`] (a copy the
    /// test may replace, as a package upgrade does).
    ///
    /// # Panics
    /// If it cannot be spawned.
    #[must_use]
    pub fn spawn_binary(
        ns: &NetNs,
        bin: &Path,
        config: &Path,
        metrics: SocketAddr,
        dir: &Path,
    ) -> Self {
        let entry = NsEntry::new(ns);
        let mut cmd = Command::new(bin);
        clean_env(&mut cmd);
        cmd.args(["run", "-c", config.to_str().expect("UTF-8 config path")]);
        entry.apply(&mut cmd);
        Self::spawn_command(ns, (cmd, entry), metrics, dir)
    }

    /// [`Daemon::spawn`] as a service manager starts a socket-activated service: `socket` (a
    /// listening socket the test holds) becomes the daemon's fd 3, with `LISTEN_FDS=1`,
    /// `LISTEN_FDNAMES=name` and `LISTEN_PID` its PID. The PID is known only in the child and
    /// the environment of a forked child cannot be changed safely, so a shell sets it
    /// (`LISTEN_PID=$$`) and `exec`s hookwall, which keeps the PID.
    ///
    /// # Panics
    /// If it cannot be spawned.
    #[must_use]
    pub fn spawn_activated(
        ns: &NetNs,
        config: &Path,
        metrics: SocketAddr,
        dir: &Path,
        (socket, name): (std::os::fd::BorrowedFd<'_>, &str),
    ) -> Self {
        let mut cmd = Command::new("/bin/sh");
        clean_env(&mut cmd);
        let config = config.to_str().expect("UTF-8 config path");
        let bin = hookwall_bin();
        cmd.args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#])
            .arg(&bin)
            .args(["run", "-c", config])
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", name);
        // The namespace first (its pre_exec hook runs first), then the fd moves to 3, so that
        // nothing the entry uses can be the fd 3 the move replaces.
        let entry = NsEntry::new(ns);
        entry.apply(&mut cmd);
        let fd = socket.as_raw_fd();
        // SAFETY: dup2 and fcntl only, on an fd the caller keeps open until the spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // Already in place: only the close-on-exec flag must go.
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self::spawn_command(ns, (cmd, entry), metrics, dir)
    }

    /// Spawns `cmd`, which `entry` puts in `ns`, with its output to a new log file in `dir`.
    fn spawn_command(
        ns: &NetNs,
        (mut cmd, entry): (Command, NsEntry),
        metrics: SocketAddr,
        dir: &Path,
    ) -> Self {
        let log = dir.join(format!(
            "daemon-{}.log",
            LOGS.fetch_add(1, Ordering::Relaxed)
        ));
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("dup of the log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        drop(entry);
        Self {
            child,
            exited: None,
            log,
            netns: ns.path(),
            metrics,
        }
    }

    /// [`Daemon::spawn`], then waits until it serves `/metrics` (the filter is attached and fed
    /// by then).
    ///
    /// # Panics
    /// If it exits or does not answer within 15 s; the message has its log.
    #[must_use]
    pub fn start(ns: &NetNs, config: &Path, metrics: SocketAddr, dir: &Path) -> Self {
        let mut daemon = Self::spawn(ns, config, metrics, dir);
        daemon.wait_ready(Duration::from_secs(15));
        daemon
    }

    /// Waits until `/metrics` answers.
    ///
    /// # Panics
    /// If the daemon exits first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "hookwall run exited ({status}) before serving metrics; log:\n{}",
                    self.log()
                );
            }
            match scrape(&self.netns, self.metrics) {
                Ok(_) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "hookwall run did not serve metrics on {} within {timeout:?} ({e}); log:\n{}",
                    self.metrics,
                    self.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's PID.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon wrote so far (stdout and stderr), without colours.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).map_or_else(
            |e| format!("(cannot read {}: {e})", self.log.display()),
            |text| strip_ansi(&text),
        )
    }

    /// The exit status if the daemon has exited (reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("waitpid on the daemon");
        }
        self.exited
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the daemon, unless it has exited (and been reaped).
    ///
    /// # Panics
    /// If `kill` fails.
    pub fn signal(&self, sig: libc::c_int) {
        if self.exited.is_some() {
            return;
        }
        let pid = libc::pid_t::try_from(self.pid()).expect("PID fits pid_t");
        // SAFETY: signals only the child we spawned and have not reaped (its PID is still ours).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
    }

    /// Sends SIGHUP (reload).
    ///
    /// # Panics
    /// If the daemon has exited.
    pub fn hup(&mut self) {
        assert!(
            self.try_wait().is_none(),
            "daemon exited before SIGHUP; log:\n{}",
            self.log()
        );
        self.signal(libc::SIGHUP);
    }

    /// SIGKILL, then reaps it.
    ///
    /// # Panics
    /// If it does not die within 5 s.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(5))
            .expect("the daemon dies within 5 s of SIGKILL")
    }

    /// SIGTERM, then waits for a graceful exit.
    ///
    /// # Panics
    /// If it has not exited within 10 s.
    pub fn term(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(Duration::from_secs(10)) {
            Some(status) => status,
            None => panic!(
                "daemon still running 10 s after SIGTERM; log:\n{}",
                self.log()
            ),
        }
    }

    /// A scrape of `/metrics`.
    ///
    /// # Panics
    /// If it fails; the message has the daemon's log.
    #[must_use]
    pub fn metrics(&self) -> String {
        scrape(&self.netns, self.metrics).unwrap_or_else(|e| {
            panic!(
                "scraping http://{}/metrics: {e}; daemon log:\n{}",
                self.metrics,
                self.log()
            )
        })
    }

    /// `GET path` on the metrics listener (`/healthz`, `/readyz`): status and body.
    ///
    /// # Panics
    /// If the request fails; the message has the daemon's log.
    #[must_use]
    pub fn get(&self, path: &str) -> (u16, String) {
        let addr = self.metrics;
        run_in(&self.netns, move || http_get_any(addr, path))
            .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}; daemon log:\n{}", self.log()))
    }

    /// One series' value in a fresh scrape (see [`metric_value`]).
    ///
    /// # Panics
    /// If the scrape fails or the series is missing or ambiguous.
    #[must_use]
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    /// `hookwall_config_reloads_total{result}`.
    #[must_use]
    pub fn reloads(&self, result: &str) -> f64 {
        self.metric("hookwall_config_reloads_total", &[("result", result)])
    }

    /// Polls until `name{labels}` satisfies `cond`; returns the value.
    ///
    /// # Panics
    /// After `timeout`, with the last value and the daemon's log.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        cond: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(name, labels);
            if cond(v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {v} after {timeout:?}, still not as expected; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- hookwall run log ({}) ----\n{}---- end of log ----",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// `GET /metrics` over plain HTTP/1.1 from inside the network namespace at `netns`; the body
/// of a 200 answer.
///
/// # Errors
/// If the connection fails or the answer is not a 200.
pub fn scrape(netns: &Path, addr: SocketAddr) -> io::Result<String> {
    run_in(netns, move || http_get(addr, "/metrics"))
}

/// [`scrape`] from a [`NetNs`].
///
/// # Panics
/// If the scrape fails.
#[must_use]
pub fn metrics(ns: &NetNs, addr: SocketAddr) -> String {
    scrape(&ns.path(), addr)
        .unwrap_or_else(|e| panic!("scraping http://{addr}/metrics in {}: {e}", ns.name()))
}

/// A plain HTTP/1.1 GET (in the calling thread's namespace); the body of a 200 answer.
///
/// # Errors
/// If the connection fails or the answer is not a 200.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let (status, body) = http_get_any(addr, path)?;
    if status != 200 {
        return Err(io::Error::other(format!("GET {path}: {status} {body}")));
    }
    Ok(body)
}

/// A plain HTTP/1.1 GET (in the calling thread's namespace); the status and body of whatever
/// answer came.
///
/// # Errors
/// If the connection fails or the answer is not HTTP.
pub fn http_get_any(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no header end in {text:?}"),
        )
    })?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("GET {path}: no status in {status_line:?}"),
            )
        })?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> io::Result<String> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("chunked body: {what}"));
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or_else(|| bad("no size line"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad size"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| bad("short chunk"))?;
        out.push_str(chunk);
        body = rest.get(size + 2..).ok_or_else(|| bad("missing CRLF"))?;
    }
}

/// One sample line of the Prometheus/OpenMetrics text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with any `_total` suffix as exposed).
    pub name: String,
    /// Labels in order of appearance.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// Every sample in an exposition (comments skipped).
///
/// # Panics
/// On a line that is not a valid sample.
#[must_use]
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a metric sample: {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The value of the one series named `name` whose labels include all of `labels`, if any.
///
/// # Panics
/// If several series match (the labels are ambiguous).
#[must_use]
pub fn find_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches: Vec<Sample> = parse_samples(text)
        .into_iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .collect();
    assert!(
        matches.len() <= 1,
        "{name}{labels:?} matches several series: {matches:?}"
    );
    matches.first().map(|s| s.value)
}

/// The value of the one series named `name` whose labels include all of `labels`.
///
/// # Panics
/// If there is no such series (the message lists the metric names present) or several.
#[must_use]
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find_metric(text, name, labels).unwrap_or_else(|| {
        let mut names: Vec<String> = parse_samples(text).into_iter().map(|s| s.name).collect();
        names.dedup();
        panic!("no series {name}{labels:?} in the scrape; names present: {names:?}\n{text}")
    })
}

/// A unique pin path `/sys/fs/bpf/hw-e2e-{pid}x{n}` that is detached (`hookwall detach`) and
/// removed on drop, whatever the test did.
#[derive(Debug)]
pub struct PinsGuard {
    path: PathBuf,
}

impl PinsGuard {
    /// A fresh pin path; nothing is created.
    #[must_use]
    pub fn new() -> Self {
        Self {
            path: PathBuf::from("/sys/fs/bpf").join(unique_name("hw-e2e-")),
        }
    }

    /// The pin path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pin path as a string.
    ///
    /// # Panics
    /// Never: it is ASCII.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("ASCII pin path")
    }
}

impl Default for PinsGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinsGuard {
    fn drop(&mut self) {
        if !self.path.exists() {
            return;
        }
        let out = hookwall_command(&["detach", "--pin-path", self.as_str()]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "hookwall detach --pin-path {}: {}",
                self.path.display(),
                output_text(&o)
            ),
            Err(e) => eprintln!("hookwall detach --pin-path {}: {e}", self.path.display()),
        }
        if self.path.exists()
            && let Err(e) = fs::remove_dir_all(&self.path)
        {
            eprintln!("removing {}: {e}", self.path.display());
        }
    }
}

/// A process the test did not spawn (a successor, reparented when its predecessor exited),
/// held by a pidfd so that it is signalled, and killed on drop, without a PID reuse race.
pub struct Successor {
    /// Its PID.
    pub pid: u32,
    pidfd: OwnedFd,
}

impl Successor {
    /// Holds `pid`.
    ///
    /// # Panics
    /// If `pid` does not run.
    #[must_use]
    pub fn new(pid: u32) -> Self {
        let raw = libc::pid_t::try_from(pid).expect("PID fits pid_t");
        // SAFETY: pidfd_open with a PID and no flags; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        assert!(
            fd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        let fd = i32::try_from(fd).expect("fd fits i32");
        // SAFETY: the kernel just returned this fd to us.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Self { pid, pidfd }
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: pidfd_send_signal on our pidfd, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }

    /// Whether it runs.
    #[must_use]
    pub fn alive(&self) -> bool {
        alive(self.pid)
    }

    /// SIGTERM, then waits until it has exited.
    ///
    /// # Panics
    /// If it has not exited within 20 s.
    pub fn term(&self) {
        self.signal(libc::SIGTERM);
        poll_until(
            Duration::from_secs(20),
            || !self.alive(),
            || format!("the successor {} exits on SIGTERM", self.pid),
        );
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if self.alive() {
            self.signal(libc::SIGKILL);
            let _ = poll_until_quiet(Duration::from_secs(5), || !self.alive());
        }
    }
}

fn poll_until_quiet(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether `pid` runs (a zombie does not).
#[must_use]
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_samples() {
        let text = "# HELP hookwall_xdp_packets Packets.\n# TYPE hookwall_xdp_packets counter\n\
                    hookwall_xdp_packets_total{verdict=\"pass\",reason=\"allowed\"} 12\n\
                    hookwall_xdp_packets_total{verdict=\"drop\",reason=\"not_allowed\"} 3\n\
                    hookwall_config_reloads_total{result=\"success\"} 0\n\
                    hookwall_config_last_reload_success_timestamp_seconds 1.7e9\n\
                    weird{a=\"x\\\"y,z\"} +Inf\n# EOF\n";
        assert_eq!(
            metric_value(
                text,
                "hookwall_xdp_packets_total",
                &[("verdict", "drop"), ("reason", "not_allowed")]
            ),
            3.0
        );
        assert_eq!(
            metric_value(
                text,
                "hookwall_config_reloads_total",
                &[("result", "success")]
            ),
            0.0
        );
        assert!(
            (metric_value(
                text,
                "hookwall_config_last_reload_success_timestamp_seconds",
                &[]
            ) - 1.7e9)
                .abs()
                < 1.0
        );
        assert_eq!(
            metric_value(text, "weird", &[("a", "x\"y,z")]),
            f64::INFINITY
        );
        assert_eq!(
            find_metric(
                text,
                "hookwall_xdp_packets_total",
                &[("verdict", "monitor")]
            ),
            None
        );
    }

    #[test]
    #[should_panic(expected = "matches several series")]
    fn ambiguous_labels_panic() {
        let text = "m{a=\"1\",b=\"x\"} 1\nm{a=\"1\",b=\"y\"} 2\n";
        let _ = find_metric(text, "m", &[("a", "1")]);
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap(),
            "hello world"
        );
    }

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[32m INFO\u{1b}[0m re-adopted"),
            " INFO re-adopted"
        );
    }
}
