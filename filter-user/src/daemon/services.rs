//! The services `hookwall run` runs beside the filter, and the order they stop in.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    acme,
    config::{Config, DeliveryConfig},
    delivery::{self, Worker},
    metrics::{self, Metrics},
    receiver::Server,
    store::{Reader, Store},
};

/// What serves callbacks, opened before the filter is touched so that a busy port or an
/// unreadable store or secret fails the start with nothing attached.
pub(super) struct Receiver {
    store: Store,
    server: Arc<Server>,
    worker: Option<Worker>,
    queue_reader: Reader,
}

impl Receiver {
    /// The HTTPS server, bound and not yet serving.
    pub(super) fn server(&self) -> &Server {
        &self.server
    }

    /// The store, the bound HTTPS server, the delivery worker (if `[delivery]`) and the store
    /// reader for the queue gauges; `None` when the config has no routes (nothing to serve).
    /// `handed` is the HTTPS socket the service manager holds, if it handed one.
    pub(super) async fn open(
        config: &Config,
        metrics: &Metrics,
        handed: Option<std::net::TcpListener>,
    ) -> anyhow::Result<Option<Self>> {
        if config.routes.is_empty() {
            tracing::warn!(
                "no [[route]] in the config: not serving HTTPS (the filter is in force)"
            );
            return Ok(None);
        }
        let store = Store::open(&config.store.path)
            .with_context(|| "opening the event store (store.path)".to_owned())?;
        let server = Server::bind(config, store.handle(), metrics.clone(), handed).await?;
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
        Ok(Some(Self {
            store,
            server: Arc::new(server),
            worker,
            queue_reader,
        }))
    }
}

/// The running services. They stop in the order [`Services::stop`] gives, the one place it is
/// written.
pub(super) struct Services {
    stop: watch::Sender<bool>,
    metrics_task: JoinHandle<anyhow::Result<()>>,
    /// The HTTPS server's task; `None` without routes, or once it has ended.
    server_task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The server itself, which a reload tells what to apply.
    server: Option<Arc<Server>>,
    /// The queue gauges and the retention purge.
    upkeep: Vec<JoinHandle<()>>,
    /// The ACME HTTP-01 listener and renewal (`server.tls = "acme"`).
    acme: Option<acme::Running>,
    /// The delivery worker, if `[delivery]` is configured; a reload replaces it.
    delivery: Option<Delivery>,
    /// Turns true once this process may deliver (see [`Services::start`]).
    may_deliver: watch::Receiver<bool>,
    store: Option<Store>,
}

/// A running delivery worker and what stops it.
struct Delivery {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Services {
    /// Starts the upkeep tasks beside the store (`retention` is `store.retention` and
    /// `store.dedupe_window`), the HTTPS server, the metrics listener and, with `acme`, the
    /// HTTP-01 listener and the certificate's renewal (a valid cached certificate is served
    /// before this returns). The delivery worker starts once `may_deliver` completes: after an
    /// in-place upgrade, when the previous process has exited, so that one process at a time
    /// delivers.
    pub(super) fn start(
        receiver: Option<Receiver>,
        retention: (Duration, Duration),
        metrics_listener: TcpListener,
        metrics: &Metrics,
        acme: Option<acme::Prepared>,
        may_deliver: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let until_stopped = || {
            let mut stop = stop_rx.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        };
        let (allowed, may_deliver_rx) = watch::channel(false);
        tokio::spawn(async move {
            may_deliver.await;
            let _ = allowed.send(true);
        });
        let (mut upkeep, mut server_task, mut server, mut store) = (Vec::new(), None, None, None);
        let mut acme_running = None;
        let mut delivery = None;
        if let Some(receiver) = receiver {
            acme_running = acme.map(|prepared| {
                acme::start(prepared, Arc::clone(&receiver.server), metrics, &stop_rx)
            });
            upkeep = start_upkeep(
                &receiver.store,
                receiver.queue_reader,
                retention,
                metrics,
                &stop_rx,
            );
            match receiver.worker {
                Some(worker) => delivery = Some(start_delivery(worker, may_deliver_rx.clone())),
                None => tracing::warn!(
                    "no [delivery] in the config: events are stored only (`hookwall queue list` \
                     shows them)"
                ),
            }
            let serving = Arc::clone(&receiver.server);
            let shutdown = until_stopped();
            server_task = Some(tokio::spawn(async move { serving.serve(shutdown).await }));
            server = Some(receiver.server);
            store = Some(receiver.store);
        }
        let metrics_task = tokio::spawn(metrics::serve(
            metrics_listener,
            metrics.clone(),
            until_stopped(),
        ));
        Self {
            stop,
            metrics_task,
            server_task,
            server,
            upkeep,
            acme: acme_running,
            delivery,
            may_deliver: may_deliver_rx,
            store,
        }
    }

    /// Has the ACME renewal read its cache again (after a reload): a removed certificate is
    /// ordered anew.
    pub(super) fn acme_recheck(&self) {
        if let Some(acme) = &self.acme {
            acme.recheck();
        }
    }

    /// Replaces the delivery worker by one for `config` (none for `None`): the new one is built
    /// first, so a sink or secret that cannot be set up leaves the running worker in place;
    /// then the running one stops as at a stop (attempts in flight get their grace, the rest
    /// stay pending) and the new one starts. Events are neither lost nor committed twice: each
    /// result is recorded after its attempt, whichever worker made it.
    ///
    /// # Errors
    /// If the new worker cannot be built; the running one carries on.
    pub(super) async fn replace_delivery(
        &mut self,
        config: Option<&DeliveryConfig>,
        metrics: &Metrics,
    ) -> anyhow::Result<()> {
        let Some(store) = &self.store else {
            // Nothing is served, so nothing is stored or delivered.
            return Ok(());
        };
        let worker = match config {
            Some(config) => Some(
                Worker::new(config, store.handle(), metrics.delivery.clone())
                    .await
                    .context("starting the delivery worker for the new [delivery]")?,
            ),
            None => None,
        };
        if let Some(running) = self.delivery.take() {
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
        match worker {
            Some(worker) => {
                self.delivery = Some(start_delivery(worker, self.may_deliver.clone()));
            }
            None => tracing::warn!(
                "[delivery] removed: events are stored only (`hookwall queue list` shows them)"
            ),
        }
        Ok(())
    }

    /// The HTTPS server, if serving.
    pub(super) fn server(&self) -> Option<&Server> {
        self.server.as_deref()
    }

    /// Why the daemon cannot do its work although its main loop turns, if it cannot: the
    /// event store's writer has ended, so no callback can be stored and answered.
    pub(super) fn stalled(&self) -> Option<&'static str> {
        match &self.store {
            Some(store) if !store.handle().writer_running() => {
                Some("the event store's writer thread has ended")
            }
            _ => None,
        }
    }

    /// Completes when the metrics listener or the HTTPS server ends on its own (an error, or a
    /// panic), with what it ended with.
    pub(super) async fn ended(&mut self) -> anyhow::Result<()> {
        let Self {
            metrics_task,
            server_task,
            ..
        } = self;
        tokio::select! {
            result = metrics_task => match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("metrics task failed: {e}")),
            },
            Some(result) = async { match server_task.as_mut() {
                Some(task) => Some(task.await),
                None => std::future::pending().await,
            } } => {
                *server_task = None;
                match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("HTTPS server task failed: {e}")),
                }
            }
        }
    }

    /// Stops everything, in this order:
    /// 1. the HTTPS server: it stops accepting at once and gives requests in flight their grace
    ///    period, so every answer it still sends has its event stored;
    /// 2. the delivery worker, which lets attempts in flight finish (bounded), and the upkeep;
    /// 3. the store, closed after both, so the last inserts and delivery results are recorded;
    /// 4. the metrics listener last (at most 5 s), so the shutdown can be watched to the end.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.server_task {
            let _ = task.await;
        }
        if let Some(acme) = self.acme {
            acme.join().await;
        }
        if let Some(delivery) = self.delivery {
            let _ = delivery.stop.send(true);
            let _ = delivery.task.await;
        }
        for task in self.upkeep {
            let _ = task.await;
        }
        drop(self.server);
        if let Some(store) = self.store
            && let Err(e) = store.close().await
        {
            tracing::error!("closing the event store: {e}");
        }
        if !self.metrics_task.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.metrics_task).await;
        }
    }
}

/// Starts what runs beside the receiver on the store: the queue and store size gauges and the
/// retention purge. They stop when `stop` turns true.
fn start_upkeep(
    store: &Store,
    queue_reader: Reader,
    (retention, dedupe_window): (Duration, Duration),
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(delivery::watch_queue(
            Arc::new(queue_reader),
            metrics.delivery.clone(),
            metrics.store_size.clone(),
            stop.clone(),
        )),
        tokio::spawn(delivery::purge_loop(
            store.handle(),
            retention,
            dedupe_window,
            stop.clone(),
        )),
    ]
}

/// Runs `worker` once `may_deliver` turns true, until its own stop.
fn start_delivery(worker: Worker, mut may_deliver: watch::Receiver<bool>) -> Delivery {
    let (stop, stop_rx) = watch::channel(false);
    let mut stopped = stop_rx.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = may_deliver.wait_for(|may| *may) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        tracing::info!(sink = worker.sink_label(), "delivering stored events");
        worker.run(stop_rx).await;
    });
    Delivery { stop, task }
}
