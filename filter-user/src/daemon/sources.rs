//! The published address lists the daemon keeps up to date (`allow.sources`, and the presets
//! with a publisher URL under `allow.presets_refresh`): one task per list fetches it at its
//! interval, checks it (`allowlist::sources`), keeps the last good copy on disk, and asks for a
//! reload when the list changed. The reload merges the lists in force into the config's
//! allowlist ([`Lists::merge_into`]) and applies the whole through the same path a config edit
//! takes, so a list is applied whole or not at all, without a gap.
//!
//! A fetch that fails or is refused never touches the list in force. At start, each list comes
//! from its cache if there is one (the publisher may be down), else from one fetch; a preset
//! with neither keeps its built-in snapshot, a source with neither is left out (logged as an
//! error) and fetched again every minute until it arrives.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use ipnet::IpNet;
use tokio::{
    sync::{Notify, mpsc},
    task::JoinHandle,
};

use crate::{
    allowlist::{
        Allowlist, Entry, Source,
        presets::{self, Format},
        sources::{self as lists, MAX_DOCUMENT_BYTES, Refusal},
    },
    config::{Config, without_query},
    metrics::Metrics,
    receiver::install_crypto_provider,
};

/// How long one fetch may take, connection and body together.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fetch at start may take: the start waits for it.
const START_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a list with nothing in force is fetched again, when its interval is longer.
const RETRY_WHEN_MISSING: Duration = Duration::from_secs(60);
/// What a refresh sends on the reload channel.
pub(super) const TRIGGER: &str = "allow list refreshed";

/// One list to keep up to date, as the config describes it.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    /// The file stem in the cache directory.
    key: String,
    /// The preset's name or the URL without its query: logs and metrics.
    label: String,
    /// The preset this list replaces, if it is one.
    preset: Option<&'static str>,
    url: String,
    format: Format,
    refresh: Duration,
    max_shrink: f64,
    cache_dir: PathBuf,
}

/// The lists of `config`.
fn specs(config: &Config) -> Vec<Spec> {
    let cache_dir = config.allow.cache_dir(&config.store.path);
    let max_shrink = config.allow.max_shrink();
    let mut specs = Vec::new();
    if let Some(refresh) = config.allow.presets_refresh {
        for name in &config.allow.presets {
            let Some(preset) = presets::find(name) else {
                continue;
            };
            let Some(published) = preset.published else {
                continue;
            };
            specs.push(Spec {
                key: lists::cache_key(Some(preset.name), published.url),
                label: preset.name.to_owned(),
                preset: Some(preset.name),
                url: published.url.to_owned(),
                format: published.format,
                refresh,
                max_shrink,
                cache_dir: cache_dir.clone(),
            });
        }
    }
    for source in &config.allow.sources {
        specs.push(Spec {
            key: lists::cache_key(None, &source.url),
            label: without_query(&source.url).into_owned(),
            preset: None,
            url: source.url.clone(),
            format: source.format,
            refresh: source.refresh,
            max_shrink,
            cache_dir: cache_dir.clone(),
        });
    }
    specs
}

/// A list in force.
#[derive(Debug, Clone)]
struct InForce {
    nets: Vec<IpNet>,
    fetched_at: SystemTime,
}

/// The lists in force, by cache key; shared by the refresh tasks and the reloads.
#[derive(Clone, Default)]
pub(super) struct Lists(Arc<Mutex<BTreeMap<String, InForce>>>);

impl Lists {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, InForce>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Option<InForce> {
        self.lock().get(key).cloned()
    }

    /// Puts the lists in force for `config` into its allowlist: a refreshed preset's fetched
    /// list replaces its snapshot, a source's list is added. The receiver (for `mpesa` routes)
    /// and the kernel maps both read the result. A route whose `allow` names a refreshed preset
    /// gets the fetched list in place of the snapshot too: the receiver would otherwise refuse a
    /// provider's new address that the kernel already lets through.
    pub(super) fn merge_into(&self, config: &mut Config) {
        let specs = specs(config);
        if specs.is_empty() {
            return;
        }
        let lists = self.lock();
        // Each refreshed preset's fetched entries, by name, for the routes that name it.
        let mut replaced: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
        let mut fetched = Vec::new();
        for spec in &specs {
            let Some(list) = lists.get(&spec.key) else {
                continue;
            };
            let from: Arc<str> = Arc::from(spec.label.as_str());
            let entries: Vec<Entry> = list
                .nets
                .iter()
                .map(|&net| Entry {
                    net,
                    source: Source::Fetched { from: from.clone() },
                })
                .collect();
            if let Some(name) = spec.preset {
                replaced.insert(name, entries.clone());
            }
            fetched.extend(entries);
        }
        drop(lists);
        let replace = |list: &mut Allowlist, added: Vec<Entry>| {
            let mut entries = std::mem::take(&mut list.entries);
            entries.retain(|entry| {
                !matches!(&entry.source, Source::Preset { name, .. } if replaced.contains_key(name.as_str()))
            });
            entries.extend(added);
            *list = Allowlist::from_entries(entries);
        };
        for route in &mut config.routes {
            let Some(allow) = route.allow.as_mut() else {
                continue;
            };
            let named: Vec<Entry> = replaced
                .iter()
                .filter(|(name, _)| allow.written.iter().any(|w| w == *name))
                .flat_map(|(_, entries)| entries.iter().cloned())
                .collect();
            if !named.is_empty() {
                replace(&mut allow.list, named);
            }
        }
        replace(&mut config.allowlist, fetched);
    }
}

/// The refresh tasks and the lists they keep.
pub(super) struct Refresher {
    lists: Lists,
    metrics: Metrics,
    client: reqwest::Client,
    reload: mpsc::Sender<&'static str>,
    tasks: Vec<Task>,
}

struct Task {
    spec: Spec,
    now: Arc<Notify>,
    handle: JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Refresher {
    /// Loads every list of `config` for the start: from its cache, else from one fetch. Nothing
    /// runs in the background yet ([`Refresher::start`]).
    pub(super) async fn load_at_start(
        config: &Config,
        metrics: &Metrics,
        reload: mpsc::Sender<&'static str>,
    ) -> anyhow::Result<Self> {
        let this = Self {
            lists: Lists::default(),
            metrics: metrics.clone(),
            client: client()?,
            reload,
            tasks: Vec::new(),
        };
        for spec in specs(config) {
            this.metrics.sources.register_source(&spec.label);
            if this.load_cache(&spec) {
                continue;
            }
            let fetched =
                tokio::time::timeout(START_FETCH_TIMEOUT, fetch_once(&this.ctx(), &spec)).await;
            if matches!(fetched, Ok(true)) {
                continue;
            }
            match spec.preset {
                Some(name) => {
                    tracing::warn!(
                        source = %spec.label,
                        "no cached copy and no fetch of preset {name}: starting with its \
                         built-in snapshot; it is fetched again within a minute"
                    );
                    snapshot_age(&this.metrics, &spec, name);
                }
                None => tracing::error!(
                    source = %spec.label,
                    "no cached copy and no fetch of this allow.sources list: starting WITHOUT \
                     it (its addresses are not allowed); it is fetched again every minute \
                     until it arrives"
                ),
            }
        }
        Ok(this)
    }

    /// The lists in force, for reloads.
    pub(super) fn lists(&self) -> &Lists {
        &self.lists
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            lists: self.lists.clone(),
            metrics: self.metrics.clone(),
            client: self.client.clone(),
        }
    }

    /// Puts the list's cached copy in force if there is one; whether it did.
    fn load_cache(&self, spec: &Spec) -> bool {
        match lists::read_cache(&spec.cache_dir, &spec.key) {
            Ok(Some(cached)) => {
                tracing::info!(
                    source = %spec.label,
                    prefixes = cached.nets.len(),
                    age_s = age(cached.fetched_at).as_secs(),
                    "using the cached copy of the list"
                );
                self.metrics
                    .sources
                    .set_fetched_at(&spec.label, cached.fetched_at);
                self.lists.lock().insert(
                    spec.key.clone(),
                    InForce {
                        nets: cached.nets,
                        fetched_at: cached.fetched_at,
                    },
                );
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(source = %spec.label, "ignoring the cached copy: {e}");
                false
            }
        }
    }

    /// Starts or updates the refresh tasks for `config` (at start, and after each reload): a
    /// list whose settings are unchanged keeps its task, and is fetched at once if the operator
    /// has accepted its refused shrink (`hookwall allow accept` signals a reload).
    pub(super) fn start(&mut self, config: &Config) {
        let specs = specs(config);
        let labels: Vec<String> = specs.iter().map(|s| s.label.clone()).collect();
        self.metrics.sources.retain(&labels);
        self.lists
            .lock()
            .retain(|key, _| specs.iter().any(|s| &s.key == key));
        let mut old = std::mem::take(&mut self.tasks);
        for spec in specs {
            if let Some(i) = old.iter().position(|t| t.spec == spec) {
                let task = old.swap_remove(i);
                if lists::acceptance_waits(&spec.cache_dir, &spec.key) {
                    task.now.notify_one();
                }
                self.tasks.push(task);
                continue;
            }
            self.metrics.sources.register_source(&spec.label);
            let mut first = Duration::ZERO;
            if self.lists.get(&spec.key).is_none() && self.load_cache(&spec) {
                // A list added by a reload: its cached copy applies at once.
                let _ = self.reload.try_send(TRIGGER);
            }
            if let Some(list) = self.lists.get(&spec.key) {
                first = spec.refresh.saturating_sub(age(list.fetched_at));
            }
            let now = Arc::new(Notify::new());
            let handle = tokio::spawn(run(
                self.ctx(),
                spec.clone(),
                first,
                Arc::clone(&now),
                self.reload.clone(),
            ));
            self.tasks.push(Task { spec, now, handle });
        }
    }
}

/// What a refresh task shares with the others.
#[derive(Clone)]
struct Ctx {
    lists: Lists,
    metrics: Metrics,
    client: reqwest::Client,
}

/// One list's task: fetch at its interval (or when told), ask for a reload when it changed.
async fn run(
    ctx: Ctx,
    spec: Spec,
    first: Duration,
    now: Arc<Notify>,
    reload: mpsc::Sender<&'static str>,
) {
    let mut wait = first;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = now.notified() => {}
        }
        let changed = tokio::time::timeout(FETCH_TIMEOUT, fetch_once(&ctx, &spec))
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(source = %spec.label, "fetching the list timed out");
                ctx.metrics.sources.count_fetch(&spec.label, "fetch_failed");
                false
            });
        if changed && reload.send(TRIGGER).await.is_err() {
            return;
        }
        wait = if ctx.lists.get(&spec.key).is_some() {
            spec.refresh
        } else {
            spec.refresh.min(RETRY_WHEN_MISSING)
        };
    }
}

/// Fetches, checks and keeps one list; whether the list in force changed.
async fn fetch_once(ctx: &Ctx, spec: &Spec) -> bool {
    let count = |result| ctx.metrics.sources.count_fetch(&spec.label, result);
    let text = match fetch(&ctx.client, &spec.url).await {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(
                source = %spec.label,
                "fetching the list failed: {e:#}; the list in force stays"
            );
            count("fetch_failed");
            return false;
        }
    };
    let nets = match lists::parse(spec.format, &text) {
        Ok(nets) => nets,
        Err(refusal) => {
            tracing::error!(
                source = %spec.label,
                "fetched list refused: {refusal}; the list in force stays"
            );
            count(refusal.result_label());
            return false;
        }
    };
    let old = ctx.lists.get(&spec.key);
    let old_count = match (&old, spec.preset) {
        (Some(list), _) => Some(list.nets.len()),
        (None, Some(name)) => presets::find(name).map(|p| p.entries.len()),
        (None, None) => None,
    };
    let accepted = lists::take_acceptance(&spec.cache_dir, &spec.key);
    if let Some(old_count) = old_count
        && let Err(refusal @ Refusal::Shrunk { old, new }) =
            lists::check_shrink(old_count, nets.len(), spec.max_shrink)
    {
        if accepted {
            tracing::warn!(
                source = %spec.label,
                "the list shrank from {old} to {new} prefixes; applying it, as accepted with \
                 `hookwall allow accept`"
            );
        } else {
            tracing::error!(
                source = %spec.label,
                "fetched list refused: {refusal}; the list in force stays"
            );
            if let Err(e) = lists::mark_refused(&spec.cache_dir, &spec.key, &spec.label, old, new) {
                tracing::warn!(source = %spec.label, "noting the refused shrink: {e}");
            }
            count(refusal.result_label());
            return false;
        }
    }
    lists::clear_refused(&spec.cache_dir, &spec.key);
    let fetched_at = SystemTime::now();
    if let Err(e) = lists::write_cache(&spec.cache_dir, &spec.key, &spec.label, &nets, fetched_at) {
        tracing::warn!(
            source = %spec.label,
            dir = %spec.cache_dir.display(),
            "keeping the copy of the list failed: {e}; it is in force, but a start with the \
             publisher unreachable will not have it"
        );
    }
    let changed = old.is_none_or(|old| old.nets != nets);
    if changed {
        tracing::info!(source = %spec.label, prefixes = nets.len(), "fetched a changed list");
    }
    ctx.lists
        .lock()
        .insert(spec.key.clone(), InForce { nets, fetched_at });
    ctx.metrics.sources.set_fetched_at(&spec.label, fetched_at);
    count("ok");
    changed
}

/// GETs `url`; a status other than 200, a body over [`MAX_DOCUMENT_BYTES`] or not UTF-8 is an
/// error. Errors never show the URL's query.
async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        anyhow::bail!("the publisher answered {status}");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            anyhow::bail!("the document is larger than {MAX_DOCUMENT_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).context("the document is not UTF-8 text")
}

fn client() -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("hookwall/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(FETCH_TIMEOUT)
        .build()
        .context("building the HTTP client for allow.sources")
}

fn age(at: SystemTime) -> Duration {
    SystemTime::now().duration_since(at).unwrap_or_default()
}

/// Reports the age of preset `name`'s built-in snapshot as the list's age.
fn snapshot_age(metrics: &Metrics, spec: &Spec, name: &str) {
    let Some(preset) = presets::find(name) else {
        return;
    };
    if let Some(at) = date(preset.snapshot) {
        metrics.sources.set_fetched_at(&spec.label, at);
    }
}

/// Midnight UTC of a `YYYY-MM-DD` date.
fn date(text: &str) -> Option<SystemTime> {
    let mut parts = text.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{lines, parse_ok};

    /// A route naming a refreshed preset checks the fetched list, as the kernel does; one naming
    /// a preset that is not refreshed keeps its snapshot.
    #[test]
    fn a_route_allow_naming_a_refreshed_preset_takes_the_fetched_list() {
        let mut config = parse_ok(&lines(&[
            "[allow]",
            "presets = [\"github-hooks\", \"mpesa\"]",
            "presets_refresh = true",
            "[[route]]",
            "path = \"/hooks/github\"",
            "verify = \"github\"",
            "secrets = [{ env = \"GITHUB\" }]",
            "allow = [\"github-hooks\", \"203.0.113.0/24\"]",
            "[[route]]",
            "path = \"/mpesa\"",
            "verify = \"mpesa\"",
            "token = { env = \"TOKEN\" }",
            "allow = [\"mpesa\"]",
        ]));
        let spec = specs(&config)
            .into_iter()
            .find(|spec| spec.preset == Some("github-hooks"))
            .expect("github-hooks is refreshed");
        let published: IpNet = "198.51.100.0/24".parse().unwrap();
        let lists = Lists::default();
        lists.lock().insert(
            spec.key,
            InForce {
                nets: vec![published],
                fetched_at: SystemTime::now(),
            },
        );
        let snapshot: std::net::IpAddr = "192.30.252.1".parse().unwrap();
        let new: std::net::IpAddr = "198.51.100.9".parse().unwrap();
        let list = |config: &Config, index: usize| config.routes[index].allow.clone().unwrap().list;
        assert!(list(&config, 0).contains(snapshot));
        assert!(!list(&config, 0).contains(new));

        lists.merge_into(&mut config);
        let github = list(&config, 0);
        assert!(github.contains(new), "the fetched list is checked");
        assert!(!github.contains(snapshot), "the snapshot is replaced");
        assert!(
            github.contains("203.0.113.7".parse().unwrap()),
            "CIDRs stay"
        );
        assert!(config.allowlist.contains(new));
        let mpesa = list(&config, 1);
        assert!(mpesa.contains("196.201.214.200".parse().unwrap()));
        assert!(!mpesa.contains(new));
    }

    #[test]
    fn snapshot_dates_are_midnight_utc() {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(date("1970-01-01").map(secs), Some(0));
        assert_eq!(date("2026-10-29").map(secs), Some(1_793_232_000));
        assert_eq!(date("2000-03-01").map(secs), Some(951_868_800));
        assert_eq!(date("2026-13"), None);
    }
}
