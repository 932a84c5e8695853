//! What is in force, and the one place that decides what a reload applies: the allowlist,
//! settings, interfaces and watched files at once (all or nothing); the certificate and routes
//! right after (the receiver is told to apply them); `filter.pin_path` never (the reload is
//! refused); `server.limits` and `[delivery]` right after too (the receiver swaps its budgets,
//! the daemon replaces its delivery worker); `metrics.listen`, `server.listen`, a switch to or
//! from `server.tls = "acme"`, `[server.acme]` and `daemon.run_as` at the next restart (a
//! warning says so): they are a bound socket, a certificate source set up at start and an
//! identity given up at start. With ACME, a reload makes the renewal read its cache again.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use filter_common::Settings;

use super::{sources::Refresher, trim_heap};
use crate::{
    config::{self, AcmeConfig, AttachMode, Config, DeliveryConfig, Limits, Mode, RunAs, Tls},
    filter::{ApplyReport, Desired, Filter, LinkMode},
    metrics::Metrics,
    receiver::Server,
};

/// What the running daemon has in force: what a reload compares against or falls back to.
pub(super) struct InForce {
    pub(super) config_path: PathBuf,
    /// Fixed for the daemon's life: a change refuses the reload.
    pin_path: PathBuf,
    /// Read at start; a change waits for a restart.
    started: Started,
    /// What a reload replaces.
    pub(super) applied: Applied,
}

/// The parts of the config read once, at start.
struct Started {
    metrics_listen: SocketAddr,
    /// `[delivery]` in force: as started, or as the last reload that changed it applied it.
    delivery: Option<DeliveryConfig>,
    /// `server.listen` and the `server.limits` in force when the receiver serves (the config
    /// has routes).
    receiver: Option<(SocketAddr, Limits)>,
    /// `[server.acme]` when the receiver serves with `server.tls = "acme"`.
    acme: Option<AcmeConfig>,
    /// `daemon.run_as`: the identity was taken once, after bring-up.
    run_as: Option<RunAs>,
}

/// The parts of the config a reload applies to the filter, and the files it watches.
pub(super) struct Applied {
    pub(super) desired: Desired,
    pub(super) interfaces: Vec<String>,
    pub(super) attach: AttachMode,
    pub(super) watched: BTreeSet<PathBuf>,
}

impl Applied {
    fn from_config(config: &Config) -> Self {
        Self {
            desired: desired(config),
            interfaces: config.filter.interfaces.clone(),
            attach: config.filter.attach,
            watched: watched_files(config),
        }
    }
}

/// Changes that wait for a restart, as the warnings that say so: those of the daemon's own
/// parts, logged before the filter is changed, and the receiver's, logged when its certificate
/// and routes are applied.
struct WaitingForRestart {
    daemon: Vec<&'static str>,
    receiver: Vec<&'static str>,
}

impl InForce {
    /// What `config` puts in force at start; `serving` is whether the receiver runs.
    pub(super) fn from_config(config: &Config, serving: bool) -> Self {
        Self {
            config_path: absolute(&config.path),
            pin_path: config.filter.pin_path.clone(),
            started: Started {
                metrics_listen: config.metrics.listen,
                delivery: config.delivery.clone(),
                receiver: serving.then_some((config.server.listen, config.server.limits)),
                acme: acme_of(config).filter(|_| serving).cloned(),
                run_as: config.daemon.run_as.clone(),
            },
            applied: Applied::from_config(config),
        }
    }

    /// Records that the delivery worker now runs with `delivery`.
    pub(super) fn set_delivery(&mut self, delivery: Option<DeliveryConfig>) {
        self.started.delivery = delivery;
    }

    /// What is in force, in a line: the service manager's `STATUS=`. `(v4, v6)` are the prefix
    /// counts in the maps.
    pub(super) fn status(&self, (v4, v6): (usize, usize)) -> String {
        let interfaces = self.applied.interfaces.join(", ");
        let doing = if self.applied.desired.settings.enforce() {
            format!("protecting {interfaces}")
        } else {
            format!("monitoring {interfaces} (mode monitor: nothing is dropped)")
        };
        let serving = if self.started.receiver.is_some() {
            "; serving HTTPS"
        } else {
            ""
        };
        format!("{doing}: {v4} IPv4, {v6} IPv6 prefixes{serving}")
    }

    /// What of `config` differs from what was read at start.
    fn waiting_for_restart(&self, config: &Config) -> WaitingForRestart {
        let mut daemon = Vec::new();
        if config.metrics.listen != self.started.metrics_listen {
            daemon.push("metrics.listen changed; it takes effect when hookwall restarts");
        }
        if config.daemon.run_as != self.started.run_as {
            daemon.push("daemon.run_as changed; it takes effect when hookwall restarts");
        }
        let mut receiver = Vec::new();
        if let Some((listen, _)) = self.started.receiver {
            if config.server.listen != listen {
                receiver.push("server.listen changed; it takes effect when hookwall restarts");
            }
            if acme_of(config) != self.started.acme.as_ref() {
                receiver.push(
                    "server.tls = \"acme\" or [server.acme] changed; the certificate's source \
                     changes when hookwall restarts",
                );
            }
        }
        WaitingForRestart { daemon, receiver }
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

pub(super) fn watched_files(config: &Config) -> BTreeSet<PathBuf> {
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

fn acme_of(config: &Config) -> Option<&AcmeConfig> {
    match &config.server.tls {
        Tls::Acme(acme) => Some(acme),
        _ => None,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Writes the maps, then attaches: a newly attached interface starts with the full allowlist.
pub(super) fn bring_up(
    filter: &mut Filter,
    applied: &Applied,
) -> anyhow::Result<(ApplyReport, Vec<(String, LinkMode)>)> {
    let report = filter
        .apply(&applied.desired)
        .context("writing the allowlist to the kernel maps")?;
    let attached = filter
        .attach(&applied.interfaces, applied.attach)
        .context("attaching the filter")?;
    filter
        .set_daemon_pid(std::process::id())
        .context("recording the daemon PID in the pinned META map")?;
    Ok((report, attached))
}

/// What a reload came to.
pub(super) enum Reloaded {
    /// The filter part is applied; `receiver_kept` when the certificate or routes were not, and
    /// the previous ones stay in force; `delivery` is the new `[delivery]` when it changed (the
    /// caller replaces the worker, then [`InForce::set_delivery`]).
    Yes {
        receiver_kept: bool,
        delivery: Option<Box<Option<DeliveryConfig>>>,
    },
    /// Nothing changed, for this reason.
    Refused(&'static str),
    /// The pinned program is gone: the daemon stops.
    Detached,
}

/// Reloads the config at `in_force.config_path`: all of the filter part or none of it, then the
/// receiver's certificate and routes.
pub(super) fn reload(
    filter: &mut Filter,
    in_force: &mut InForce,
    metrics: &Metrics,
    server: Option<&Server>,
    refresher: &mut Refresher,
    trigger: &str,
) -> Reloaded {
    tracing::info!(trigger, "reloading");
    if !filter.pins().has_program() {
        tracing::warn!("the pinned filter was removed (`hookwall detach`); stopping");
        return Reloaded::Detached;
    }
    let mut config = match config::load(&in_force.config_path) {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!("config refused; the previous config stays in force");
            metrics.record_reload(false);
            return Reloaded::Refused("the config has errors (see the log)");
        }
    };
    if config.filter.pin_path != in_force.pin_path {
        tracing::error!(
            "filter.pin_path changed; a running daemon cannot move its pins: restart hookwall \
             (the previous config stays in force)"
        );
        metrics.record_reload(false);
        return Reloaded::Refused("filter.pin_path changed, which takes a restart");
    }
    refresher.lists().merge_into(&mut config);
    if config.filter.mode == Mode::Enforce && config.allowlist.is_empty() {
        // Only a config whose allowlist is nothing but sources not fetched yet comes here.
        tracing::error!(
            "the allowlist would be empty: no list of allow.sources is in force yet, and \
             nothing else is allowed; in enforce mode that would drop every packet to the \
             protected ports (the previous config stays in force)"
        );
        refresher.start(&config);
        metrics.record_reload(false);
        return Reloaded::Refused("the allowlist would be empty (no source fetched yet)");
    }
    // The refresh tasks follow the config now: one list added by this reload is fetched (and
    // applied by the next reload); one removed stops being fetched.
    refresher.start(&config);
    let waiting = in_force.waiting_for_restart(&config);
    for change in &waiting.daemon {
        tracing::warn!("{change}");
    }
    let next = Applied::from_config(&config);
    let delivery =
        (config.delivery != in_force.started.delivery).then(|| Box::new(config.delivery.clone()));
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
            metrics
                .health()
                .set_interfaces(&next.interfaces, next.attach);
            in_force.applied = next;
            let mut receiver_kept = false;
            if let Some((server, config)) = server_reload {
                for change in &waiting.receiver {
                    tracing::warn!("{change}");
                }
                if let Some((listen, limits)) = in_force.started.receiver
                    && config.server.limits != limits
                {
                    server.apply_limits(config.server.limits);
                    in_force.started.receiver = Some((listen, config.server.limits));
                }
                if let Err(e) = server.apply(&config) {
                    tracing::error!(
                        "reloading the HTTPS certificate or routes failed: {e:#}; the previous \
                         ones stay in force"
                    );
                    receiver_kept = true;
                }
            }
            trim_heap();
            Reloaded::Yes {
                receiver_kept,
                delivery,
            }
        }
        Err(e) => {
            tracing::error!("applying the new config failed: {e:#}; restoring the previous one");
            let previous = &in_force.applied;
            let restored = filter
                .attach(&previous.interfaces, previous.attach)
                .map_err(anyhow::Error::from)
                .and_then(|_| filter.apply(&previous.desired).map_err(anyhow::Error::from));
            if let Err(e) = restored {
                tracing::error!("restoring the previous config failed too: {e:#}");
            }
            let (v4, v6) = filter.prefix_counts();
            metrics.set_prefixes(v4, v6);
            metrics.record_reload(false);
            Reloaded::Refused("applying it to the kernel failed (see the log)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InForce;
    use crate::config::tests::parse_ok;

    #[test]
    fn limits_and_delivery_are_reloaded_and_the_listeners_wait_for_a_restart() {
        let config = parse_ok("");
        let in_force = InForce::from_config(&config, true);
        assert!(in_force.waiting_for_restart(&config).receiver.is_empty());
        let mut changed = config.clone();
        changed.server.limits.max_in_flight_per_client = 1;
        changed.server.limits.ipv6_prefix = 56;
        let waiting = in_force.waiting_for_restart(&changed);
        assert!(waiting.receiver.is_empty() && waiting.daemon.is_empty());
        changed.server.listen = "127.0.0.1:9443".parse().expect("address");
        changed.metrics.listen = "127.0.0.1:9185".parse().expect("address");
        let waiting = in_force.waiting_for_restart(&changed);
        assert_eq!(
            waiting.receiver,
            ["server.listen changed; it takes effect when hookwall restarts"]
        );
        assert_eq!(
            waiting.daemon,
            ["metrics.listen changed; it takes effect when hookwall restarts"]
        );
    }
}
