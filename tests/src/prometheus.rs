//! A real Prometheus server (Debian's `prometheus` package) for the monitoring test: it scrapes
//! the daemon every second, evaluates the project's rule files every second, and answers
//! PromQL over its HTTP API.
//!
//! [`Prometheus`] runs `ip netns exec NS prometheus ...` (`ip` execs the server, so the PID is
//! the server's) with its web listener on an address inside the test's namespace, a config and
//! a storage directory of its own in a temp dir; it is stopped by its PID and the directory
//! removed on drop.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs::{self, File},
    io,
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    daemon::{http_get_any, poll_until},
    netns::{NetNs, run_in},
    stop_child,
};

/// The scrape job's name, as contrib/prometheus/alerts.yml expects it.
pub const JOB: &str = "hookwall";
/// How long a starting server may take to answer `/-/ready` (it replays an empty WAL: fast).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping server may take after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A Prometheus server in a test namespace; stopped (by PID) and its files removed on drop.
pub struct Prometheus {
    child: Option<Child>,
    netns: PathBuf,
    web: SocketAddr,
    log: PathBuf,
    /// The config, the storage and the log; removed when dropped, after the server stopped.
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` in `ns`, listening on `web` (an address in `ns`), scraping
    /// `http://TARGET/metrics` as job [`JOB`] every second and evaluating `rule_files` every
    /// second; returns once it is ready to answer queries.
    ///
    /// # Panics
    /// If it cannot be spawned (not installed: `cargo xtask setup`), exits, or is not ready
    /// within 30 s; the message has its log.
    #[must_use]
    pub fn start(ns: &NetNs, web: SocketAddr, target: SocketAddr, rule_files: &[PathBuf]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hw-prometheus-")
            .tempdir()
            .expect("temporary directory for prometheus");
        let config = dir.path().join("prometheus.yml");
        fs::write(&config, config_text(target, rule_files))
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = dir.path().join("prometheus.log");
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("dup of the prometheus log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl only, between fork and exec; the signal survives both execs (`ip`'s and
        // the server's), so a test process that dies takes its server with it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `ip netns exec {} prometheus`: {e}", ns.name()));
        let mut server = Self {
            child: Some(child),
            netns: ns.path(),
            web,
            log,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "prometheus exited ({status}) while starting (is it installed? `cargo xtask \
                     setup`); log:\n{}",
                    self.log()
                );
            }
            match self.get("/-/ready") {
                Ok((200, _)) => return,
                Ok((status, body)) => assert!(
                    Instant::now() < deadline,
                    "prometheus not ready within {READY_TIMEOUT:?}: {status} {body}"
                ),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "prometheus not answering on {} within {READY_TIMEOUT:?} ({e}); log:\n{}",
                    self.web,
                    self.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's PID while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its directory (config, storage, log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything it logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// `GET path` on its web listener, from inside the namespace: status and body.
    ///
    /// # Errors
    /// If the connection fails.
    pub fn get(&self, path: &str) -> io::Result<(u16, String)> {
        let (web, path) = (self.web, path.to_owned());
        run_in(&self.netns, move || http_get_any(web, &path))
    }

    /// An API call's `data`, or the server's reason for refusing it (`errorType: error`, as
    /// `/api/v1/query` answers a PromQL parse error).
    ///
    /// # Panics
    /// If the server does not answer, or answers something that is not its API's JSON.
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self
            .get(path)
            .unwrap_or_else(|e| panic!("GET {path} on prometheus: {e}; log:\n{}", self.log()));
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: {status}, not JSON ({e}): {body}"));
        if json["status"] == "success" {
            Ok(json["data"].clone())
        } else {
            Err(format!(
                "{status} {}: {}",
                json["errorType"].as_str().unwrap_or("?"),
                json["error"].as_str().unwrap_or("?")
            ))
        }
    }

    /// An instant query's result (`/api/v1/query`), or why it was refused.
    ///
    /// # Panics
    /// As [`Prometheus::api`].
    pub fn query(&self, promql: &str) -> Result<Value, String> {
        self.api(&format!("/api/v1/query?query={}", url_encode(promql)))
    }

    /// Every metric name Prometheus holds a series of (scraped or recorded).
    ///
    /// # Panics
    /// If the API refuses the call.
    #[must_use]
    pub fn names(&self) -> BTreeSet<String> {
        let data = self
            .api("/api/v1/label/__name__/values")
            .unwrap_or_else(|e| panic!("listing metric names: {e}"));
        data.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until the target of job [`JOB`] has been scraped successfully (`up` is 1).
    ///
    /// # Panics
    /// After `timeout`, with the targets' state and the server's log.
    pub fn wait_scraped(&self, timeout: Duration) {
        let up = format!("up{{job=\"{JOB}\"}} == 1");
        poll_until(
            timeout,
            || {
                self.query(&up)
                    .is_ok_and(|data| data["result"].as_array().is_some_and(|r| !r.is_empty()))
            },
            || {
                format!(
                    "no successful scrape of job {JOB}; targets: {:?}; log:\n{}",
                    self.api("/api/v1/targets"),
                    self.log()
                )
            },
        );
    }

    /// SIGTERM by PID, then waits; SIGKILL after 10 s. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, "prometheus", STOP_TIMEOUT);
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- prometheus log ({}) ----\n{}---- end of log ----",
                self.dir.path().display(),
                self.log()
            );
        }
        self.stop();
    }
}

/// The server's config: one job scraping `target` every second, `rule_files` evaluated every
/// second. YAML's double-quoted strings are JSON strings, so paths are written with `{:?}`.
fn config_text(target: SocketAddr, rule_files: &[PathBuf]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "global:");
    let _ = writeln!(s, "  scrape_interval: 1s");
    let _ = writeln!(s, "  scrape_timeout: 1s");
    let _ = writeln!(s, "  evaluation_interval: 1s");
    let _ = writeln!(s, "rule_files:");
    for file in rule_files {
        let _ = writeln!(s, "  - {:?}", file.to_str().expect("UTF-8 rule file path"));
    }
    let _ = writeln!(s, "scrape_configs:");
    let _ = writeln!(s, "  - job_name: {JOB}");
    let _ = writeln!(s, "    static_configs:");
    let _ = writeln!(s, "      - targets: [{:?}]", target.to_string());
    s
}

/// Percent-encodes `s` for a URL's query (everything but RFC 3986's unreserved characters).
#[must_use]
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            url_encode(r#"up{job="hookwall"} == 1"#),
            "up%7Bjob%3D%22hookwall%22%7D%20%3D%3D%201"
        );
        assert_eq!(url_encode("a:b_c-1.5~"), "a%3Ab_c-1.5~");
    }

    #[test]
    fn the_config_scrapes_one_job_and_loads_the_rules() {
        let text = config_text(
            "127.0.0.1:9184".parse().unwrap(),
            &[
                PathBuf::from("/x/recording.yml"),
                PathBuf::from("/x/alerts.yml"),
            ],
        );
        assert!(text.contains("scrape_interval: 1s"), "{text}");
        assert!(text.contains("- job_name: hookwall"), "{text}");
        assert!(text.contains(r#"- targets: ["127.0.0.1:9184"]"#), "{text}");
        assert!(
            text.contains("  - \"/x/recording.yml\"\n  - \"/x/alerts.yml\"\n"),
            "{text}"
        );
    }
}
