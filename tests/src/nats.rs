//! A real `nats-server` (the Debian package) with JetStream, for the delivery tests and the
//! bench, and a reader of everything a stream holds.
//!
//! - [`NatsServer`]: `nats-server -js` inside a test namespace, listening on one address and a
//!   free port there, its store and log in a temp dir of its own; stopped with SIGTERM by PID,
//!   started again on the same port and store; killed (by PID) on drop.
//! - [`read_stream`] / [`stream_len`]: an async-nats client on a thread that entered the
//!   namespace, reading every message of a stream by sequence.

use std::{
    fs::{self, OpenOptions},
    io::{self, Read as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    daemon::NsEntry,
    netns::{NetNs, run_in},
    signal_child, stop_child,
};

/// How long a starting server may take to accept connections with JetStream on.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopping server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` with JetStream, in a network namespace. Not running until [`NatsServer::start`].
pub struct NatsServer {
    child: Option<Child>,
    netns: PathBuf,
    /// Where it listens (inside the namespace).
    listen: SocketAddr,
    store: PathBuf,
    log: PathBuf,
    /// Held for its drop: the store and the log.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Chooses a free port on `ip` inside `ns` and a temp dir for the store; starts nothing
    /// (a test can give the URL to hookwall while the broker is still down).
    ///
    /// # Panics
    /// If no port can be bound or the temp dir cannot be made.
    #[must_use]
    pub fn prepare(ns: &NetNs, ip: IpAddr) -> Self {
        let port = ns.run(move || {
            // The kernel's choice, released at once: nothing else in a test namespace takes it.
            let listener = TcpListener::bind(SocketAddr::new(ip, 0))
                .unwrap_or_else(|e| panic!("binding {ip}:0 to find a free port: {e}"));
            listener.local_addr().expect("local address").port()
        });
        let dir = tempfile::Builder::new()
            .prefix("hw-nats-")
            .tempdir()
            .expect("temporary directory for nats-server");
        Self {
            child: None,
            netns: ns.path(),
            listen: SocketAddr::new(ip, port),
            store: dir.path().join("jetstream"),
            log: dir.path().join("nats-server.log"),
            dir,
        }
    }

    /// [`NatsServer::prepare`], then [`NatsServer::start`].
    #[must_use]
    pub fn start_in(ns: &NetNs, ip: IpAddr) -> Self {
        let mut server = Self::prepare(ns, ip);
        server.start();
        server
    }

    /// Where it listens, inside its namespace.
    #[must_use]
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// `nats://ADDR:PORT` for a client inside the namespace (the listen address; for a listen
    /// address of 0.0.0.0, loopback).
    #[must_use]
    pub fn url(&self) -> String {
        let ip = if self.listen.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            self.listen.ip()
        };
        self.url_at(ip)
    }

    /// `nats://IP:PORT`: the server reached at `ip` (another host's route to it).
    #[must_use]
    pub fn url_at(&self, ip: IpAddr) -> String {
        format!("nats://{}", SocketAddr::new(ip, self.listen.port()))
    }

    /// The JetStream store directory (kept across restarts).
    #[must_use]
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// The server's PID while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server logged so far (all runs).
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// Starts the server (again: same port, same store) and waits until it accepts clients
    /// with JetStream enabled.
    ///
    /// # Panics
    /// If it is running already, cannot be spawned, exits, or is not ready within 15 s.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "nats-server is running already");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let err = out.try_clone().expect("dup of the nats-server log");
        let mut cmd = Command::new("nats-server");
        cmd.arg("--addr")
            .arg(self.listen.ip().to_string())
            .arg("--port")
            .arg(self.listen.port().to_string())
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(&self.store)
            .args(["--server_name", "hookwall-test"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // nats-server needs no bpffs; NsEntry is used for the parent-death signal and because it
        // enters the namespace without `ip netns exec`'s extra process.
        let entry = NsEntry::new_at(&self.netns);
        entry.apply(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawning nats-server (install it: `apt-get install nats-server`): {e}")
        });
        drop(entry);
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = self.url_addr();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "nats-server exited ({status}) while starting; log:\n{}",
                    self.log()
                );
            }
            match run_in(&self.netns, move || info_line(addr)) {
                Ok(info) if info.contains("\"jetstream\":true") => return,
                Ok(info) => assert!(
                    Instant::now() < deadline,
                    "nats-server answers without JetStream: {info}"
                ),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "nats-server not accepting on {addr} within {READY_TIMEOUT:?} ({e}); log:\n{}",
                    self.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address a client in the namespace connects to.
    fn url_addr(&self) -> SocketAddr {
        let ip = if self.listen.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            self.listen.ip()
        };
        SocketAddr::new(ip, self.listen.port())
    }

    /// Removes the JetStream store (a broker that comes back without its data).
    ///
    /// # Panics
    /// If the server is running or the directory cannot be removed.
    pub fn wipe_store(&mut self) {
        assert!(
            self.child.is_none(),
            "stop nats-server before wiping its store"
        );
        if self.store.exists() {
            fs::remove_dir_all(&self.store)
                .unwrap_or_else(|e| panic!("removing {}: {e}", self.store.display()));
        }
    }

    /// SIGTERM by PID (nats-server flushes its store and exits), then waits; SIGKILL after 10 s.
    /// Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, "nats-server", STOP_TIMEOUT);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal_child(&mut child, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- nats-server log ({}) ----\n{}---- end of log ----",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// Connects to `addr` and reads the server's first line (`INFO {...}`).
fn info_line(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 64 * 1024 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// One message of a stream, as the tests look at it.
#[derive(Debug, Clone)]
pub struct StreamMsg {
    /// The stream sequence.
    pub sequence: u64,
    /// The `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
    /// Every header (names as sent; the first value of each).
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub payload: Vec<u8>,
    /// When the server stored it, unix ns.
    pub stored_unix_ns: i128,
}

impl StreamMsg {
    /// The first value of header `name` (compared case-insensitively).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `f` with a JetStream context connected to `url`, on a thread inside the namespace at
/// `netns` (a current-thread runtime there, so the client's socket is the namespace's).
///
/// # Errors
/// If the runtime cannot be built, the connection fails, or `f` fails.
pub fn with_jetstream<T: Send>(
    netns: &Path,
    url: &str,
    f: impl AsyncFnOnce(async_nats::jetstream::Context) -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let url = url.to_owned();
    run_in(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a runtime for the NATS client")?;
        rt.block_on(async move {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(url.as_str())
                .await
                .with_context(|| format!("connecting to {url}"))?;
            let result = f(async_nats::jetstream::new(client.clone())).await;
            let _ = client.drain().await;
            result
        })
    })
}

/// Messages in `stream` (0 if it does not exist yet).
///
/// # Errors
/// If the server cannot be reached or answers with an error other than "no such stream".
pub fn stream_len(netns: &Path, url: &str, stream: &str) -> anyhow::Result<u64> {
    let name = stream.to_owned();
    with_jetstream(netns, url, async move |js| {
        match js.get_stream(&name).await {
            Ok(mut s) => Ok(s.info().await.context("stream info")?.state.messages),
            Err(e) => match e.kind() {
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(0)
                }
                _ => Err(anyhow::anyhow!("getting stream {name}: {e}")),
            },
        }
    })
}

/// Every message of `stream`, in sequence order.
///
/// # Errors
/// If the server cannot be reached, the stream does not exist, or a message cannot be read.
pub fn read_stream(netns: &Path, url: &str, stream: &str) -> anyhow::Result<Vec<StreamMsg>> {
    let name = stream.to_owned();
    with_jetstream(netns, url, async move |js| {
        let mut s = js
            .get_stream(&name)
            .await
            .with_context(|| format!("getting stream {name}"))?;
        let state = s.info().await.context("stream info")?.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            let m = s
                .get_raw_message(seq)
                .await
                .with_context(|| format!("reading message {seq} of {name}"))?;
            let headers: Vec<(String, String)> = m
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.first()?.to_string())))
                .collect();
            let msg_id = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("Nats-Msg-Id"))
                .map(|(_, v)| v.clone());
            out.push(StreamMsg {
                sequence: m.sequence,
                msg_id,
                headers,
                payload: m.payload.to_vec(),
                stored_unix_ns: m.time.unix_timestamp_nanos(),
            });
        }
        Ok(out)
    })
}

/// Publishes `payload` to `subject` with `Nats-Msg-Id: msg_id`, as hookwall does; returns
/// whether JetStream found it a duplicate.
///
/// # Errors
/// If the publish or its ack fails.
pub fn publish_with_id(
    netns: &Path,
    url: &str,
    subject: &str,
    msg_id: &str,
    payload: &[u8],
) -> anyhow::Result<bool> {
    let (subject, msg_id, payload) = (subject.to_owned(), msg_id.to_owned(), payload.to_vec());
    with_jetstream(netns, url, async move |js| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        let ack = js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .context("publishing")?
            .await
            .context("waiting for the ack")?;
        Ok(ack.duplicate)
    })
}

/// Polls [`stream_len`] until it is at least `n`; returns the last count.
///
/// # Errors
/// If `timeout` passes first (the message has the last count or error).
pub fn wait_stream_len(
    netns: &Path,
    url: &str,
    stream: &str,
    n: u64,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = stream_len(netns, url, stream);
        if let Ok(count) = last
            && count >= n
        {
            return Ok(count);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("stream {stream} did not reach {n} messages in {timeout:?}: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `nats-server` can be run (the Debian package is installed).
#[must_use]
pub fn nats_server_installed() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
