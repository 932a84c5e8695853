//! The HTTPS certificate from an ACME CA (RFC 8555, `server.tls = "acme"`), proved with
//! HTTP-01 on a plain-HTTP listener the filter does not protect (`challenge`), kept in a cache
//! across restarts (`cache`) and renewed while the old certificate keeps serving.
//!
//! When it orders: at start and after every reload (SIGHUP, or an edit of a watched file) the
//! cache is read. A cached certificate for exactly `server.acme.domains` that is not yet in its
//! last third of validity is served as it is (a restart orders nothing); otherwise, or once the
//! last third begins, a new one is ordered. Removing the cached certificate and sending SIGHUP
//! therefore forces a renewal. A failed order is retried after 10 s, doubling up to an hour,
//! while the certificate in force keeps serving. Until the first certificate exists, every TLS
//! handshake is refused and `/readyz` says so.
//!
//! TLS-ALPN-01 is not offered: its validation connection arrives on the protected HTTPS port
//! from an address on no allowlist, and the filter drops it in the kernel.

mod cache;
mod challenge;

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use instant_acme::{
    Account, AccountBuilder, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use self::{
    cache::{Cache, Cached},
    challenge::Challenges,
};
use crate::{
    config::AcmeConfig,
    metrics::{Metrics, OrderLabels},
    receiver::Server,
};

/// Delay before the first retry of a failed order; it doubles with each failure.
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest delay between retries: a CA that is down for a day is asked 24 times.
const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// How long the CA may take to validate the challenges, and then to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// The cache is read again at least this often, even with nothing due.
const RECHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What ACME needs before the filter is touched and root is dropped: the cache made and handed
/// to the daemon's user, the HTTP-01 listener bound (port 80 needs root or the service
/// manager's socket).
pub(crate) struct Prepared {
    config: AcmeConfig,
    cache: Cache,
    listener: tokio::net::TcpListener,
}

impl Prepared {
    /// Makes the cache (owned by `owner`, the uid and gid of `daemon.run_as`) and binds the
    /// HTTP-01 listener, or takes `handed`, the `acme` socket the service manager holds.
    ///
    /// # Errors
    /// If the cache cannot be made or the listener bound.
    pub(crate) async fn new(
        config: &AcmeConfig,
        owner: Option<(u32, u32)>,
        handed: Option<std::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        let cache = Cache::prepare(&config.cache, owner)?;
        let listener = challenge::bind(config.http_listen, handed).await?;
        Ok(Self {
            config: config.clone(),
            cache,
            listener,
        })
    }
}

impl Prepared {
    /// A duplicate of the HTTP-01 listening socket, for a successor process to serve on.
    ///
    /// # Errors
    /// If the fd cannot be duplicated.
    pub(crate) fn try_clone_listener(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd as _;
        self.listener.as_fd().try_clone_to_owned()
    }
}

/// The running ACME tasks: the HTTP-01 listener and the renewal loop.
pub(crate) struct Running {
    recheck: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Asks the renewal loop to read the cache again now (after a reload).
    pub(crate) fn recheck(&self) {
        self.recheck.notify_one();
    }

    /// Waits for both tasks to end (they end when the stop signal turns true).
    pub(crate) async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What the renewal loop works with.
struct Renewer {
    config: AcmeConfig,
    domains: BTreeSet<String>,
    cache: Cache,
    challenges: Arc<Challenges>,
    server: Arc<Server>,
    orders: Family<OrderLabels, Counter>,
    /// The serial of the certificate served now, if any.
    served: Option<String>,
}

/// What the cache says is to be done.
enum Plan {
    /// Order a certificate, for this reason.
    Order(&'static str),
    /// Nothing until then.
    Wait(Duration),
}

/// Serves a valid cached certificate at once (before the daemon reports ready), then starts
/// the HTTP-01 listener and the renewal loop; both stop when `stop` turns true.
pub(crate) fn start(
    prepared: Prepared,
    server: Arc<Server>,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
) -> Running {
    for result in ["issued", "failed"] {
        let _ = metrics.acme_orders.get_or_create(&OrderLabels { result });
    }
    let challenges = Arc::new(Challenges::default());
    let mut renewer = Renewer {
        domains: prepared.config.domains.iter().cloned().collect(),
        config: prepared.config,
        cache: prepared.cache,
        challenges: Arc::clone(&challenges),
        server,
        orders: metrics.acme_orders.clone(),
        served: None,
    };
    // A cached certificate in its last third is served while the new one is ordered.
    if let Plan::Order(why) = renewer.plan()
        && renewer.served.is_none()
    {
        tracing::warn!(
            why,
            domains = ?renewer.config.domains,
            "no usable ACME certificate yet: TLS handshakes are refused until one is issued"
        );
    }
    let until_stopped = |stop: &watch::Receiver<bool>| {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let recheck = Arc::new(Notify::new());
    let listener = tokio::spawn(challenge::serve(
        prepared.listener,
        challenges,
        until_stopped(stop),
    ));
    let renewing = tokio::spawn(renewer.run(Arc::clone(&recheck), until_stopped(stop)));
    Running {
        recheck,
        tasks: vec![listener, renewing],
    }
}

impl Renewer {
    /// Orders when the cache says so, retries with backoff, and otherwise sleeps until the
    /// renewal is due, a reload asks for a recheck, or the daemon stops.
    async fn run(mut self, recheck: Arc<Notify>, stopped: impl Future<Output = ()>) {
        tokio::pin!(stopped);
        let mut failures = 0_u32;
        loop {
            let wait = match self.plan() {
                Plan::Wait(wait) => {
                    failures = 0;
                    wait
                }
                Plan::Order(why) => {
                    tracing::info!(
                        why,
                        domains = ?self.config.domains,
                        directory = %self.config.directory,
                        "ordering a certificate"
                    );
                    let started = std::time::Instant::now();
                    let ordered = tokio::select! {
                        ordered = self.order() => ordered,
                        () = &mut stopped => return,
                    };
                    self.challenges.clear();
                    match ordered {
                        Ok(()) => {
                            self.count("issued");
                            tracing::info!(
                                elapsed_ms = started.elapsed().as_millis(),
                                "certificate issued and stored in {}",
                                self.cache.certificate_path().display()
                            );
                            failures = 0;
                            // The next plan reads it from the cache and serves it.
                            continue;
                        }
                        Err(e) => {
                            self.count("failed");
                            failures = failures.saturating_add(1);
                            let retry = backoff(failures);
                            tracing::error!(
                                error = %format!("{e:#}"),
                                retry_in_s = retry.as_secs(),
                                "ordering the ACME certificate failed; the certificate in force \
                                 (if any) keeps serving"
                            );
                            retry
                        }
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait.min(RECHECK_EVERY)) => {}
                () = recheck.notified() => {}
                () = &mut stopped => return,
            }
        }
    }

    fn count(&self, result: &'static str) {
        self.orders.get_or_create(&OrderLabels { result }).inc();
    }

    /// Reads the cache: serves a usable certificate that is not served yet, and says whether to
    /// order now or how long to wait.
    fn plan(&mut self) -> Plan {
        let Some(cached) = self.cache.certificate() else {
            return Plan::Order("no certificate in the cache");
        };
        let now = unix_now();
        if let Err(why) = usable(&cached, &self.domains, now) {
            return Plan::Order(why);
        }
        let renew_at = renew_at(&cached);
        if self.served.as_deref() != Some(cached.serial.as_str()) {
            match self.server.set_certificate(cached.chain, cached.key) {
                Ok(not_after) => {
                    tracing::info!(
                        serial = %cached.serial,
                        not_after,
                        "serving the ACME certificate from the cache"
                    );
                    self.served = Some(cached.serial);
                }
                Err(e) => {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "the cached certificate cannot be served"
                    );
                    return Plan::Order("the cached certificate cannot be served");
                }
            }
        }
        if now >= renew_at {
            return Plan::Order("a third of the certificate's lifetime is left");
        }
        Plan::Wait(Duration::from_secs((renew_at - now).unsigned_abs()))
    }

    /// One order: the account, the HTTP-01 challenges, the CSR, the certificate into the
    /// cache.
    async fn order(&self) -> anyhow::Result<()> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .context("placing the order")?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.context("reading an authorization")?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => anyhow::bail!(
                    "the CA reports the authorization for {} as {other:?}",
                    authorization.identifier()
                ),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .context("the CA offers no HTTP-01 challenge for a name")?;
            self.challenges.insert(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_owned(),
            );
            challenge
                .set_ready()
                .await
                .context("telling the CA the challenge is ready")?;
        }
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order
            .poll_ready(&retries)
            .await
            .context("waiting for the CA to validate the challenges")?;
        anyhow::ensure!(
            status == OrderStatus::Ready,
            "the CA did not validate the challenges (order {status:?}): it must reach \
             http://NAME/.well-known/acme-challenge/ on port 80 for every name in \
             server.acme.domains, arriving at server.acme.http_listen ({}), which the filter \
             must not protect",
            self.config.http_listen
        );
        let key = order.finalize().await.context("finalising the order")?;
        let chain = order
            .poll_certificate(&retries)
            .await
            .context("downloading the certificate")?;
        self.cache.save_certificate(&chain, &key)
    }

    /// The account in the cache for this directory, or a new one (then stored).
    async fn account(&self) -> anyhow::Result<Account> {
        let directory = &self.config.directory;
        if let Some(credentials) = self.cache.account(directory)? {
            return self
                .builder()?
                .from_credentials(credentials)
                .await
                .with_context(|| format!("restoring the ACME account at {directory}"));
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .with_context(|| format!("registering an ACME account at {directory}"))?;
        self.cache.save_account(directory, credentials)?;
        tracing::info!(%directory, "registered an ACME account");
        Ok(account)
    }

    /// An account builder whose HTTPS client trusts `directory_ca`, or the system's roots.
    fn builder(&self) -> anyhow::Result<AccountBuilder> {
        match &self.config.directory_ca {
            Some(ca) => Account::builder_with_root(ca).with_context(|| {
                format!(
                    "reading the directory's CA {} (server.acme.directory_ca): it must be a PEM \
                     certificate",
                    ca.display()
                )
            }),
            None => Account::builder().context("loading the system's root certificates"),
        }
    }
}

/// Whether `cached` may be served at `now` for `domains`; else why a new one is ordered.
fn usable(cached: &Cached, domains: &BTreeSet<String>, now: i64) -> Result<(), &'static str> {
    if cached.names != *domains {
        return Err("the cached certificate is for other domains");
    }
    if cached.not_after <= now {
        return Err("the cached certificate has expired");
    }
    Ok(())
}

/// When `cached` is renewed (Unix seconds): once a third of its lifetime is left, as
/// Let's Encrypt advises (30 days before the end of its 90).
fn renew_at(cached: &Cached) -> i64 {
    cached.not_after - (cached.not_after - cached.not_before) / 3
}

/// The delay before retry number `failures` (1 for the first): [`BACKOFF_INITIAL`] doubled
/// per earlier failure, at most [`BACKOFF_MAX`].
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_INITIAL
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    /// A certificate for `names`, valid from 2026-01-01 for 90 days, as the cache reads it.
    fn cached(names: &[&str]) -> Cached {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("certificate");
        cache::parse(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes()).expect("parse")
    }

    #[test]
    fn a_certificate_is_renewed_once_a_third_of_its_lifetime_is_left() {
        let cert = cached(&["hooks.example.com", "pay.example.com"]);
        let start = cert.not_before;
        assert_eq!(cert.not_after - start, 90 * DAY);
        assert_eq!(renew_at(&cert), start + 60 * DAY);
        let domains: BTreeSet<String> = ["pay.example.com", "hooks.example.com"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(usable(&cert, &domains, start + 10 * DAY), Ok(()));
        // In its last third it is still served while the new one is ordered.
        assert_eq!(usable(&cert, &domains, start + 61 * DAY), Ok(()));
        assert_eq!(
            usable(&cert, &domains, start + 90 * DAY),
            Err("the cached certificate has expired")
        );
        let fewer: BTreeSet<String> = std::iter::once("hooks.example.com".to_owned()).collect();
        assert_eq!(
            usable(&cert, &fewer, start + 10 * DAY),
            Err("the cached certificate is for other domains")
        );
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_and_stops_at_an_hour() {
        let delays: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(
            delays,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
