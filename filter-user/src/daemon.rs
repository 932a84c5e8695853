//! `hookwall run`: load or re-adopt the filter, attach it, serve metrics, reload on SIGHUP and on
//! config (or allowlist file) change, and stop gracefully on SIGTERM/SIGINT, leaving the filter in
//! force.
//!
//! A reload is all or nothing: the new config is validated in full first; if applying it to the
//! kernel then fails, the previous state is applied again, so an invalid or failing config never
//! leaves the filter half-changed.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use filter_common::Settings;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    config::{self, AttachMode, Config, DeliveryConfig, Mode, Tls},
    delivery::{self, Worker},
    filter::{Desired, Filter, Origin, Pins},
    metrics::{self, Metrics},
    server::Server,
    store::{Reader, Store},
    watch::FileWatcher,
};

/// Quiet time after a file event before reloading, so an editor's burst of writes is one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The parts of the config in force that a reload compares against or falls back to.
struct InForce {
    config_path: PathBuf,
    desired: Desired,
    interfaces: Vec<String>,
    attach: AttachMode,
    pin_path: PathBuf,
    metrics_listen: SocketAddr,
    watched: BTreeSet<PathBuf>,
    /// `[delivery]` as started (a change takes effect at the next restart).
    delivery: Option<DeliveryConfig>,
}

impl InForce {
    fn from_config(config: &Config) -> Self {
        Self {
            config_path: absolute(&config.path),
            desired: desired(config),
            interfaces: config.filter.interfaces.clone(),
            attach: config.filter.attach,
            pin_path: config.filter.pin_path.clone(),
            metrics_listen: config.metrics.listen,
            watched: watched_files(config),
            delivery: config.delivery.clone(),
        }
    }
}

/// What the kernel maps must hold for `config`.
#[must_use]
pub fn desired(config: &Config) -> Desired {
    Desired {
        v4: config.allowlist.v4.clone(),
        v6: config.allowlist.v6.clone(),
        ports: config.filter.protected_ports.clone(),
        settings: Settings::new(
            config.filter.mode == Mode::Enforce,
            config.filter.strict_fragments,
        ),
    }
}

fn watched_files(config: &Config) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    files.insert(absolute(&config.path));
    let base = config.path.parent().unwrap_or(Path::new("."));
    for f in &config.allow.files {
        files.insert(absolute(&base.join(f)));
    }
    // A renewed certificate (certbot and the like replace the files) is picked up like a
    // config change.
    if !config.routes.is_empty()
        && let Tls::Files { cert, key } = &config.server.tls
    {
        files.insert(absolute(cert));
        files.insert(absolute(key));
    }
    files
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// If the config is invalid at start, or the filter cannot be loaded, attached or fed.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP's default action would end a daemon still starting up.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let config = config::load(config_path)?;
    delivery::install_crypto_provider();
    // Bind, open and connect everything that can fail for a reason outside the kernel before
    // touching it, so a busy port, an unreadable store or secret fails the start with nothing
    // attached. Serving starts only once the filter is in force.
    let metrics_listener = metrics::bind(config.metrics.listen).await?;
    let pins = Pins::new(&config.filter.pin_path);
    let metrics = Metrics::new(&pins);
    // Without routes there is nothing to serve: the listener would answer 404 to everything.
    let receiver = if config.routes.is_empty() {
        tracing::warn!("no [[route]] in the config: not serving HTTPS (the filter is in force)");
        None
    } else {
        let store = Store::open(&config.store.path)
            .with_context(|| "opening the event store (store.path)".to_owned())?;
        let server = Server::bind(&config, store.handle(), metrics.clone()).await?;
        let worker = match &config.delivery {
            Some(delivery_config) => Some(
                Worker::new(delivery_config, store.handle(), metrics.delivery.clone())
                    .await
                    .context("starting the delivery worker ([delivery])")?,
            ),
            None => None,
        };
        let queue_reader =
            Reader::open(&config.store.path).context("opening the event store for reading")?;
        Some((store, std::sync::Arc::new(server), worker, queue_reader))
    };
    let mut filter = Filter::open(pins.clone())?;
    match filter.origin() {
        Origin::Fresh => tracing::info!(pin_path = %pins.root().display(), "loaded a new filter"),
        Origin::Adopted => tracing::info!(
            pin_path = %pins.root().display(),
            "re-adopted the pinned filter; it never stopped enforcing"
        ),
        Origin::Replaced => tracing::info!(
            pin_path = %pins.root().display(),
            "replaced the pinned program with this version's, atomically on every interface"
        ),
    }
    let mut in_force = InForce::from_config(&config);
    let started = bring_up(&mut filter, &in_force);
    let (report, attached) = match started {
        Ok(done) => done,
        Err(e) if filter.origin() == Origin::Fresh => {
            // Nothing was in force before this start: leave nothing behind either.
            drop(filter);
            if let Err(cleanup) = crate::filter::detach(&pins) {
                tracing::error!("removing the half-started filter failed: {cleanup}");
            }
            return Err(e);
        }
        // An adopted filter was protecting before this start; it stays as it was.
        Err(e) => return Err(e),
    };
    let (v4, v6) = filter.prefix_counts();
    tracing::info!(
        ipv4_prefixes = v4,
        ipv6_prefixes = v6,
        interfaces = ?attached,
        elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
        "filter in force"
    );

    metrics.set_prefixes(v4, v6);
    metrics.mark_loaded();

    let (stop_tx, stop_rx) = watch::channel(false);
    let (receiver, upkeep) = match receiver {
        Some((store, server, worker, queue_reader)) => {
            let upkeep = start_upkeep(&config, &store, worker, queue_reader, &metrics, &stop_rx);
            (Some((store, server)), Some(upkeep))
        }
        None => (None, None),
    };
    drop(config);
    trim_heap();

    let mut server_task = receiver.as_ref().map(|(_, server)| {
        let mut stop = stop_rx.clone();
        let server = std::sync::Arc::clone(server);
        tokio::spawn(async move {
            server
                .serve(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    });
    let server = receiver
        .as_ref()
        .map(|(_, server)| std::sync::Arc::clone(server));
    let mut metrics_task = {
        let mut stop = stop_rx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics::serve(metrics_listener, metrics, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };

    let (reload_tx, mut reload_rx) = mpsc::channel::<&'static str>(64);
    let mut watcher = FileWatcher::new(reload_tx)?;
    watcher.watch(&in_force.watched);

    let outcome: anyhow::Result<()> = loop {
        let trigger = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            Some(t) = reload_rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while reload_rx.try_recv().is_ok() {}
                t
            }
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            result = &mut metrics_task => {
                break match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("metrics task failed: {e}")),
                };
            }
            Some(result) = async { match server_task.as_mut() {
                Some(task) => Some(task.await),
                None => std::future::pending().await,
            } } => {
                server_task = None;
                break match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("HTTPS server task failed: {e}")),
                };
            }
        };
        match reload(
            &mut filter,
            &mut in_force,
            &metrics,
            server.as_deref(),
            trigger,
        ) {
            Reloaded::Yes | Reloaded::Refused => watcher.watch(&in_force.watched),
            Reloaded::Detached => break Ok(()),
        }
    };
    let _ = stop_tx.send(true);
    if let Some(task) = server_task {
        // The server stops accepting at once and gives requests in flight their grace period.
        let _ = task.await;
    }
    if let Some(upkeep) = upkeep {
        // The worker lets attempts in flight finish (bounded); the store closes after it, so
        // their results are recorded.
        for task in upkeep {
            let _ = task.await;
        }
    }
    drop(server);
    if let Some((store, server)) = receiver {
        drop(server);
        if let Err(e) = store.close().await {
            tracing::error!("closing the event store: {e}");
        }
    }
    if !metrics_task.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), metrics_task).await;
    }
    tracing::info!("stopped; the filter stays in force (`hookwall detach` removes it)");
    outcome
}

/// Starts what runs beside the receiver on the store: the delivery worker (if `[delivery]` is
/// configured), the queue gauges and the retention purge. They stop when `stop` turns true.
fn start_upkeep(
    config: &Config,
    store: &Store,
    worker: Option<Worker>,
    queue_reader: Reader,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(delivery::watch_queue(
        std::sync::Arc::new(queue_reader),
        metrics.delivery.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(delivery::purge_loop(
        store.handle(),
        config.store.retention,
        stop.clone(),
    )));
    match worker {
        Some(worker) => {
            tracing::info!(sink = worker.sink_label(), "delivering stored events");
            tasks.push(tokio::spawn(worker.run(stop.clone())));
        }
        None => tracing::warn!(
            "no [delivery] in the config: events are stored only (`hookwall queue list` shows them)"
        ),
    }
    tasks
}

/// Hands the heap freed after parsing a config back to the kernel. A 100,000-line allowlist
/// needs tens of MiB while it is parsed and checked but a few MiB once applied; without this,
/// the allocator keeps the difference resident for the daemon's whole life. Both allocators:
/// the binary's Rust code allocates with mimalloc, SQLite (C) with glibc's malloc.
fn trim_heap() {
    // SAFETY: both only release free memory; they are safe to call at any time, also when
    // mimalloc is not the process's allocator (as in this library's tests).
    unsafe {
        libmimalloc_sys::mi_collect(true);
        #[cfg(target_env = "gnu")]
        libc::malloc_trim(0);
    }
}

/// Writes the maps, then attaches: a newly attached interface starts with the full allowlist.
fn bring_up(
    filter: &mut Filter,
    in_force: &InForce,
) -> anyhow::Result<(
    crate::filter::ApplyReport,
    Vec<(String, crate::filter::LinkMode)>,
)> {
    let report = filter
        .apply(&in_force.desired)
        .context("writing the allowlist to the kernel maps")?;
    let attached = filter
        .attach(&in_force.interfaces, in_force.attach)
        .context("attaching the filter")?;
    filter
        .set_daemon_pid(std::process::id())
        .context("recording the daemon PID in the pinned META map")?;
    Ok((report, attached))
}

enum Reloaded {
    Yes,
    Refused,
    Detached,
}

fn reload(
    filter: &mut Filter,
    in_force: &mut InForce,
    metrics: &Metrics,
    server: Option<&Server>,
    trigger: &str,
) -> Reloaded {
    tracing::info!(trigger, "reloading");
    if !filter.pins().has_program() {
        tracing::warn!("the pinned filter was removed (`hookwall detach`); stopping");
        return Reloaded::Detached;
    }
    let config = match config::load(&in_force.config_path) {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!("config refused; the previous config stays in force");
            metrics.record_reload(false);
            return Reloaded::Refused;
        }
    };
    if config.filter.pin_path != in_force.pin_path {
        tracing::error!(
            "filter.pin_path changed; a running daemon cannot move its pins: restart hookwall \
             (the previous config stays in force)"
        );
        metrics.record_reload(false);
        return Reloaded::Refused;
    }
    if config.metrics.listen != in_force.metrics_listen {
        tracing::warn!("metrics.listen changed; it takes effect when hookwall restarts");
    }
    if config.delivery != in_force.delivery {
        tracing::warn!("[delivery] changed; it takes effect when hookwall restarts");
    }
    let next = InForce::from_config(&config);
    // The certificate and routes are read now, while the config is at hand; they are swapped in
    // only if the filter part succeeds below.
    let server_reload = server.map(|server| (server, config.clone()));
    drop(config);
    let applied = filter
        .apply(&next.desired)
        .map_err(anyhow::Error::from)
        .and_then(|report| {
            filter
                .attach(&next.interfaces, next.attach)
                .map(|_| report)
                .map_err(anyhow::Error::from)
        });
    match applied {
        Ok(report) => {
            let (v4, v6) = filter.prefix_counts();
            metrics.set_prefixes(v4, v6);
            metrics.record_reload(true);
            tracing::info!(
                ipv4_prefixes = v4,
                ipv6_prefixes = v6,
                inserted = report.inserted,
                removed = report.removed,
                elapsed_ms = report.elapsed.as_secs_f64() * 1e3,
                "reloaded"
            );
            *in_force = InForce {
                metrics_listen: in_force.metrics_listen,
                delivery: in_force.delivery.take(),
                ..next
            };
            if let Some((server, config)) = server_reload
                && let Err(e) = server.reload(&config)
            {
                tracing::error!(
                    "reloading the HTTPS certificate or routes failed: {e:#}; the previous ones \
                     stay in force"
                );
            }
            trim_heap();
            Reloaded::Yes
        }
        Err(e) => {
            tracing::error!("applying the new config failed: {e:#}; restoring the previous one");
            let restored = filter
                .attach(&in_force.interfaces, in_force.attach)
                .map_err(anyhow::Error::from)
                .and_then(|_| filter.apply(&in_force.desired).map_err(anyhow::Error::from));
            if let Err(e) = restored {
                tracing::error!("restoring the previous config failed too: {e:#}");
            }
            let (v4, v6) = filter.prefix_counts();
            metrics.set_prefixes(v4, v6);
            metrics.record_reload(false);
            Reloaded::Refused
        }
    }
}
