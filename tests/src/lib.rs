//! Support for hookwall's end-to-end tests and benchmarks.
//!
//! - [`TestFilter`]: the real XDP program loaded under a unique pin path, driven with
//!   BPF_PROG_TEST_RUN, removed (unpinned) on drop.
//! - [`frames`]: builds Ethernet frames byte by byte, including broken ones.
//! - [`model`]: a plain-Rust reference classifier the kernel must agree with.
//! - [`netns`]: network namespaces and veth pairs that remove themselves on drop.
//! - [`daemon`]: runs the `hookwall` binary and stops it by PID.
//! - [`https`]: a rustls client bound to a source address, a test CA, signed requests.
//! - [`config`]: the `hookwall.toml` the tests run with, as typed parts.
//! - [`app`]: the application hookwall delivers to (checks signatures, records receipts).
//! - [`nats`]: a real `nats-server` with JetStream in a namespace, and a reader of its streams.
//! - [`lab`]: one end-to-end test's world (namespaces, pins, config, certificate, application).
//! - [`load`]: a continuous client posting distinct confirmations, for restarts and upgrades.
//! - [`users`]: a system user made for one test, for `daemon.run_as`.
//! - [`monitoring`]: the dashboard, rule files and rule tests in `contrib/`, as the tests read
//!   them.
//! - [`pebble`]: a real ACME CA (`pebble`, with `pebble-challtestsrv` for DNS) in a namespace.
//! - [`prometheus`]: a real Prometheus server in a namespace, queried over its HTTP API.
//! - [`publisher`]: a provider's address-list publisher (plain HTTP) in a namespace, serving
//!   documents the test changes, for `allow.sources`.
pub mod app;
pub mod config;
pub mod daemon;
pub mod frames;
pub mod https;
pub mod lab;
pub mod load;
pub mod model;
pub mod monitoring;
pub mod nats;
pub mod netns;
pub mod ns_server;
pub mod pebble;
pub mod prometheus;
pub mod publisher;
pub mod users;

use std::{
    process::Child,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunOptions};
use filter_common::{Counter, CounterValue, Settings};
use hookwall::filter::{Desired, Filter, Pins, detach};

/// `XDP_DROP` and `XDP_PASS` as BPF_PROG_TEST_RUN reports them.
pub const XDP_DROP: u32 = 1;
/// See [`XDP_DROP`].
pub const XDP_PASS: u32 = 2;

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A store event for route `route` with id `event_id`, as the store tests insert them.
#[must_use]
pub fn store_event(route: &str, event_id: &str) -> hookwall::store::NewEvent {
    hookwall::store::NewEvent {
        route: route.to_owned(),
        event_id: event_id.to_owned(),
        kind: "test".to_owned(),
        received_at_ms: 1_700_000_000_000,
        body: hookwall::store::HashedBody::new(format!("{{\"id\":\"{event_id}\"}}").into_bytes()),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
    }
}

/// A name no other test in this run (or any concurrent run) uses: `{prefix}{pid}x{n}`.
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Signals our own child, not yet reaped (so its PID is still ours).
pub fn signal_child(child: &mut Child, sig: libc::c_int) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(pid, sig) };
}

/// Stops a server the test started: SIGTERM by PID, a wait of up to `patience`, then SIGKILL
/// (saying so, naming it `what`) and a wait.
pub fn stop_child(mut child: Child, what: &str, patience: Duration) {
    signal_child(&mut child, libc::SIGTERM);
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("{what} still running {patience:?} after SIGTERM; killing it");
    signal_child(&mut child, libc::SIGKILL);
    let _ = child.wait();
}

/// The hookwall XDP program loaded under its own pin path and never attached anywhere.
pub struct TestFilter {
    filter: Option<Filter>,
    pins: Pins,
}

impl TestFilter {
    /// Loads the program under a fresh pin path and applies `desired`.
    ///
    /// # Panics
    /// If the program cannot be loaded (not root, verifier rejection) or the maps not written.
    #[must_use]
    pub fn new(desired: &Desired) -> Self {
        let pins = Pins::new(format!("/sys/fs/bpf/{}", unique_name("hw-test-")));
        // A first open that fails (a verifier rejection) takes back what it pinned itself.
        let filter = Filter::open(pins.clone()).unwrap_or_else(|e| {
            panic!(
                "loading the XDP program under {}: {e:?}",
                pins.root().display()
            )
        });
        // Built before `apply`, so a failed apply unwinds through `Drop` and removes the pins.
        let mut this = Self {
            filter: Some(filter),
            pins,
        };
        this.filter()
            .apply(desired)
            .unwrap_or_else(|e| panic!("applying {desired:?}: {e}"));
        this
    }

    /// The underlying filter.
    ///
    /// # Panics
    /// Never: the filter is only taken on drop.
    pub fn filter(&mut self) -> &mut Filter {
        self.filter.as_mut().expect("filter present until drop")
    }

    /// Runs `frame` through the program once; returns the XDP action.
    ///
    /// # Panics
    /// If BPF_PROG_TEST_RUN fails.
    #[must_use]
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        self.run_repeat(frame, 1).0
    }

    /// Runs `frame` `repeat` times; returns the action and the kernel's mean ns per run.
    ///
    /// # Panics
    /// If BPF_PROG_TEST_RUN fails.
    #[must_use]
    pub fn run_repeat(&mut self, frame: &[u8], repeat: u32) -> (u32, f64) {
        let prog = self.filter().program().expect("program loaded");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let result = prog
            .test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on a {}-byte frame: {e}", frame.len()));
        let nanos = result.duration.as_secs_f64() * 1e9;
        (result.return_value, nanos)
    }

    /// Summed counters now.
    ///
    /// # Panics
    /// If the counters map cannot be read.
    #[must_use]
    pub fn counters(&mut self) -> [CounterValue; Counter::COUNT as usize] {
        self.filter().counters().expect("reading counters")
    }

    /// Runs one frame and returns the action and the single counter that moved.
    ///
    /// # Panics
    /// If not exactly one counter moved, by one packet and by the frame's length in bytes.
    #[must_use]
    pub fn judge(&mut self, frame: &[u8]) -> (u32, Counter) {
        let before = self.counters();
        let action = self.run(frame);
        let after = self.counters();
        let moved: Vec<Counter> = Counter::ALL
            .into_iter()
            .filter(|&c| after[c as usize] != before[c as usize])
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "exactly one counter must move, moved: {moved:?}"
        );
        let c = moved[0];
        assert_eq!(after[c as usize].packets - before[c as usize].packets, 1);
        assert_eq!(
            after[c as usize].bytes - before[c as usize].bytes,
            frame.len() as u64,
            "bytes counted for {c:?}"
        );
        (action, c)
    }
}

impl Drop for TestFilter {
    fn drop(&mut self) {
        drop(self.filter.take());
        if let Err(e) = detach(&self.pins) {
            eprintln!("cleaning up {}: {e}", self.pins.root().display());
        }
    }
}

/// Settings for enforce mode, optionally with strict fragments.
#[must_use]
pub fn settings(enforce: bool, strict_fragments: bool) -> Settings {
    Settings::new(enforce, strict_fragments)
}
