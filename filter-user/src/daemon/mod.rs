//! `hookwall run`: load or re-adopt the filter, attach it, serve metrics, reload on SIGHUP and on
//! config (or allowlist file) change, and stop gracefully on SIGTERM/SIGINT, leaving the filter in
//! force.
//!
//! A reload is all or nothing: the new config is validated in full first; if applying it to the
//! kernel then fails, the previous state is applied again, so an invalid or failing config never
//! leaves the filter half-changed. What a reload applies and what waits for a restart is decided
//! in `reload`; the services and their stop order are in `services`; what the daemon keeps of
//! root's privileges once the filter is in force, and the user it becomes, in `privileges`; the
//! listening sockets a service manager hands over (socket activation) in `activation`; the
//! in-place upgrade (SIGUSR2) in `upgrade`.

mod activation;
mod notify;
mod privileges;
mod reload;
mod services;
mod sources;
mod upgrade;

use std::{os::fd::AsFd as _, path::Path, pin::Pin, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

pub use self::{
    activation::{ActivationError, Handed},
    reload::desired,
    upgrade::{Handover, READY_TIMEOUT, UpgradeError, Upgrader},
};
use self::{
    notify::Notifier,
    privileges::PrivilegeDrop,
    reload::{InForce, Reloaded},
    services::{Receiver, Services},
    sources::Refresher,
    upgrade::Successor,
};
use crate::{
    config,
    filter::{Filter, Origin, Pins},
    metrics::{self, Metrics},
    receiver,
    watch::FileWatcher,
};

/// An upgrade under way: the successor started, not yet ready.
type Upgrading<'a> = Pin<Box<dyn Future<Output = Result<Successor, UpgradeError>> + 'a>>;

/// Quiet time after a file event before reloading, so an editor's burst of writes is one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Runs the daemon until SIGTERM or SIGINT, or until a successor started on SIGUSR2 serves.
///
/// `handed` are the listening sockets a service manager (or a predecessor) passed
/// ([`Handed::take_from_env`]); the listeners they do not cover are bound here. `handover` is
/// the predecessor's hand-over socket when this start is an in-place upgrade; `upgrader` starts
/// this process's successor on SIGUSR2.
///
/// # Errors
/// If the config is invalid at start, a handed socket does not fit it, or the filter cannot be
/// loaded, attached or fed.
pub async fn run(
    config_path: &Path,
    handed: Handed,
    handover: Handover,
    mut upgrader: Upgrader,
) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP's (or SIGUSR2's) default action would end a daemon still starting
    // up.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Connected before anything else, while the daemon can still reach any socket path.
    let notifier = Notifier::from_env();
    let mut config = config::load(config_path)?;
    for loose in config.loose_permissions() {
        tracing::warn!("{loose}");
    }
    for gap in config.route_allow_gaps() {
        tracing::warn!("{gap}");
    }
    for warning in config.provider_warnings() {
        tracing::warn!("{warning}");
    }
    // Checked before anything is bound or touched: a socket unit that disagrees with the config
    // fails the start with nothing changed.
    let listeners = handed.listeners(&config)?;
    receiver::install_crypto_provider();
    // Whether the identity kept after bring-up can still read and write what it needs is known
    // before anything is touched.
    let privileges = PrivilegeDrop::prepare(&config)?;
    // Bind, open and connect everything that can fail for a reason outside the kernel before
    // touching it, so a busy port, an unreadable store or secret fails the start with nothing
    // attached. Serving starts only once the filter is in force.
    // A handed socket is already bound (by the manager, as root), so it needs no
    // CAP_NET_BIND_SERVICE, now or after the privilege drop.
    let metrics_listener = metrics::bind(config.metrics.listen, listeners.metrics).await?;
    let pins = Pins::new(&config.filter.pin_path);
    let metrics = Metrics::new(&pins);
    let (reload_tx, mut reload_rx) = mpsc::channel::<&'static str>(64);
    // The published lists (allow.sources, refreshed presets) from their cached copies or a
    // fetch, before anything reads the allowlist.
    let mut refresher = Refresher::load_at_start(&config, &metrics, reload_tx.clone()).await?;
    refresher.lists().merge_into(&mut config);
    if config.filter.mode == config::Mode::Enforce && config.allowlist.is_empty() {
        anyhow::bail!(
            "the allowlist is empty: no list of allow.sources could be fetched or read from \
             its cached copy, and nothing else is allowed; in enforce mode that would drop \
             every packet to the protected ports (see the errors above)"
        );
    }
    // Without routes there is nothing to serve: the listener would answer 404 to everything.
    let receiver = Receiver::open(&config, &metrics, listeners.https).await?;
    // The HTTP-01 listener is bound (port 80) and the cache handed to the daemon's user now,
    // while hookwall is still root.
    let acme = match &config.server.tls {
        config::Tls::Acme(acme) if receiver.is_some() => {
            let owner = config.daemon.run_as.as_ref().map(|u| (u.uid, u.gid));
            Some(crate::acme::Prepared::new(acme, owner, listeners.acme).await?)
        }
        _ => None,
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
    let mut in_force = InForce::from_config(&config, receiver.is_some());
    let started = reload::bring_up(&mut filter, &in_force.applied);
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
    metrics
        .health()
        .set_interfaces(&in_force.applied.interfaces, in_force.applied.attach);
    // Everything that needs more than a reload does is done: nothing runs with it from here on,
    // least of all the HTTPS server.
    privileges.apply(&pins)?;

    // What a successor is handed, by name; each is this process's own duplicate, so the
    // sockets stay open for it whatever the services do with theirs.
    if let Some(receiver) = &receiver
        && let Some(https) = receiver
            .server()
            .try_clone_listener()
            .context("duplicating the HTTPS listener for upgrades")?
    {
        upgrader.hand_over(activation::HTTPS, https);
    }
    upgrader.hand_over(
        activation::METRICS,
        metrics_listener
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the metrics listener for upgrades")?,
    );
    if let Some(acme) = &acme {
        upgrader.hand_over(
            activation::ACME,
            acme.try_clone_listener()
                .context("duplicating the ACME HTTP-01 listener for upgrades")?,
        );
    }

    let retention = (config.store.retention, config.store.dedupe_window);
    refresher.start(&config);
    drop(config);
    trim_heap();
    let may_deliver = handover
        .predecessor_gone()
        .context("watching the previous process's hand-over socket")?;
    let mut services = Services::start(
        receiver,
        retention,
        metrics_listener,
        &metrics,
        acme,
        may_deliver,
    );

    let mut watcher = FileWatcher::new(reload_tx)?;
    watcher.watch(&in_force.applied.watched);

    // The listeners were bound before the filter was attached and their tasks now accept: a
    // client the manager lets in after this is served.
    notifier.ready(&in_force.status(filter.prefix_counts()));
    if handover.is_upgrade() {
        handover.ready();
        tracing::info!(
            "took over from the previous process; the delivery worker starts once it has exited"
        );
    }
    let mut watchdog = notifier.watchdog_period().map(|period| {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });

    let mut upgrading: Option<Upgrading<'_>> = None;
    let mut successor = None;
    let mut deferred: Option<&'static str> = None;
    let outcome: anyhow::Result<()> = loop {
        let trigger = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = usr2.recv() => {
                if upgrading.is_some() {
                    tracing::warn!("SIGUSR2: an upgrade is already under way");
                } else {
                    tracing::info!(
                        ready_timeout = ?READY_TIMEOUT,
                        "SIGUSR2: upgrading in place: starting the successor"
                    );
                    upgrading = Some(Box::pin(upgrader.upgrade()));
                }
                continue;
            }
            Some(upgraded) = async { match upgrading.as_mut() {
                Some(upgrade) => Some(upgrade.await),
                None => std::future::pending().await,
            } } => {
                upgrading = None;
                match upgraded {
                    Ok(ready) => {
                        metrics.record_upgrade(true);
                        tracing::info!(
                            pid = ready.pid,
                            "upgrade: the successor is ready; stopping this process"
                        );
                        successor = Some(ready);
                        break Ok(());
                    }
                    Err(e) => {
                        metrics.record_upgrade(false);
                        tracing::error!("upgrade failed: {e}; this process keeps serving");
                        // The successor may have recorded itself as the daemon before it failed.
                        if let Err(e) = filter.set_daemon_pid(std::process::id()) {
                            tracing::warn!("recording this PID in the pinned META map again: {e}");
                        }
                        match deferred.take() {
                            Some(trigger) => trigger,
                            None => continue,
                        }
                    }
                }
            }
            Some(t) = reload_rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while reload_rx.try_recv().is_ok() {}
                t
            }
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            ended = services.ended() => break ended,
            // From this loop, not a timer of its own: if the loop stops turning, the pings stop
            // and the manager restarts the daemon.
            Some(_) = async { match watchdog.as_mut() {
                Some(ticks) => Some(ticks.tick().await),
                None => std::future::pending().await,
            } } => {
                match services.stalled() {
                    None => notifier.watchdog(),
                    Some(why) => tracing::error!(
                        "not pinging the service manager's watchdog: {why}; it will restart \
                         hookwall"
                    ),
                }
                continue;
            }
        };
        // While a successor starts, it re-adopts the filter and writes the same maps and META
        // record: a reload here would race its writes (and could put this PID back in META after
        // the successor recorded its own). The successor reads the config itself; a reload asked
        // for meanwhile is applied here if the upgrade fails, else passed on to the successor.
        if upgrading.is_some() {
            tracing::info!(
                trigger,
                "reload deferred until the upgrade under way succeeds or fails"
            );
            deferred = Some(trigger);
            continue;
        }
        notifier.reloading();
        let reloaded = reload::reload(
            &mut filter,
            &mut in_force,
            &metrics,
            services.server(),
            &mut refresher,
            trigger,
        );
        let reloaded = match reloaded {
            Reloaded::Yes {
                receiver_kept,
                delivery: Some(delivery),
            } => {
                let delivery_kept = match services
                    .replace_delivery(delivery.as_ref().as_ref(), &metrics)
                    .await
                {
                    Ok(()) => {
                        tracing::info!("[delivery] reloaded");
                        in_force.set_delivery(*delivery);
                        false
                    }
                    Err(e) => {
                        tracing::error!("{e:#}; the previous [delivery] stays in force");
                        true
                    }
                };
                (
                    Reloaded::Yes {
                        receiver_kept,
                        delivery: None,
                    },
                    delivery_kept,
                )
            }
            other => (other, false),
        };
        let in_force_now = in_force.status(filter.prefix_counts());
        let status = match reloaded {
            (Reloaded::Yes { receiver_kept, .. }, delivery_kept)
                if receiver_kept || delivery_kept =>
            {
                let kept = match (receiver_kept, delivery_kept) {
                    (true, true) => "the HTTPS certificate and routes, and [delivery]",
                    (true, false) => "the HTTPS certificate and routes",
                    _ => "[delivery]",
                };
                format!(
                    "reloaded, except {kept}, which were refused (the previous ones stay in \
                     force); {in_force_now}"
                )
            }
            (Reloaded::Yes { .. }, _) => format!("reloaded; {in_force_now}"),
            (Reloaded::Refused(why), _) => {
                format!("reload refused: {why}; the previous config stays in force; {in_force_now}")
            }
            (Reloaded::Detached, _) => break Ok(()),
        };
        notifier.reloaded(&status);
        watcher.watch(&in_force.applied.watched);
        services.acme_recheck();
    };
    // An upgrade abandoned by this stop ends its successor (see `upgrade`).
    drop(upgrading);
    if let Some(successor) = successor {
        notifier.handed_over(successor.pid);
        if let Some(trigger) = deferred {
            forward_reload(trigger, successor.pid);
        }
        services.stop().await;
        tracing::info!(
            pid = successor.pid,
            "stopped; PID {} serves now and delivers from here on",
            successor.pid
        );
        // Closing the hand-over socket, last, is what starts the successor's delivery worker.
        drop(successor);
        return outcome;
    }
    notifier.stopping("stopping; the filter stays in force");
    services.stop().await;
    tracing::info!("stopped; the filter stays in force (`hookwall detach` removes it)");
    outcome
}

/// Passes a reload asked for during an upgrade on to the successor: it may have read the config
/// before the change that asked for it.
fn forward_reload(trigger: &str, successor: u32) {
    let sent = libc::pid_t::try_from(successor).is_ok_and(|pid| {
        // SAFETY: kill(2) with a checked PID and a signal number.
        unsafe { libc::kill(pid, libc::SIGHUP) == 0 }
    });
    if sent {
        tracing::info!(
            trigger,
            pid = successor,
            "passed the reload asked for during the upgrade on to the successor (SIGHUP)"
        );
    } else {
        tracing::warn!(
            trigger,
            pid = successor,
            "could not pass the reload asked for during the upgrade on to the successor ({}); \
             send it SIGHUP",
            std::io::Error::last_os_error()
        );
    }
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
