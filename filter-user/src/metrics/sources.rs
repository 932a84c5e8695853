//! The metrics of the fetched address lists (`allow.sources`, refreshed presets): fetches by
//! source and result, and the age of each list in force, computed at scrape time.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, counter::Counter as PromCounter, family::Family, gauge::ConstGauge},
    registry::{Registry, Unit},
};

/// Labels of `hookwall_allow_source_fetches_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// The preset's name, or the source's URL without its query (which may hold a key).
    pub source: String,
    /// `ok`, `fetch_failed`, `invalid` or `shrink_refused`.
    pub result: &'static str,
}

/// Every `result` of `hookwall_allow_source_fetches_total`.
pub const FETCH_RESULTS: [&str; 4] = ["ok", "fetch_failed", "invalid", "shrink_refused"];

/// Labels of `hookwall_allow_source_age_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgeLabels {
    source: String,
}

/// When each list in force was fetched, by source.
type FetchedAt = Arc<Mutex<BTreeMap<String, SystemTime>>>;

/// The fetched lists' metrics; part of [`Metrics`](super::Metrics).
#[derive(Clone)]
pub struct SourceMetrics {
    fetches: Family<FetchLabels, PromCounter>,
    fetched_at: FetchedAt,
}

impl SourceMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            fetches: Family::default(),
            fetched_at: FetchedAt::default(),
        };
        registry.register(
            "allow_source_fetches",
            "Fetches of the published address lists, by source and result",
            this.fetches.clone(),
        );
        registry.register_collector(Box::new(AgeCollector {
            fetched_at: Arc::clone(&this.fetched_at),
        }));
        this
    }

    /// Makes every result's series of `source` exist, at 0, so that a rate of failures can be
    /// computed from the first one.
    pub fn register_source(&self, source: &str) {
        for result in FETCH_RESULTS {
            let _ = self.fetches.get_or_create(&FetchLabels {
                source: source.to_owned(),
                result,
            });
        }
    }

    /// Counts one fetch of `source` with `result` (one of [`FETCH_RESULTS`]).
    pub fn count_fetch(&self, source: &str, result: &'static str) {
        self.fetches
            .get_or_create(&FetchLabels {
                source: source.to_owned(),
                result,
            })
            .inc();
    }

    /// The list of `source` in force was fetched at `at`.
    pub fn set_fetched_at(&self, source: &str, at: SystemTime) {
        self.lock().insert(source.to_owned(), at);
    }

    /// Forgets the series of every source not in `sources` (removed from the config). A source
    /// is known here by its age entry, which every list in force has.
    pub fn retain(&self, sources: &[String]) {
        let gone: Vec<String> = {
            let mut map = self.lock();
            let gone = map
                .keys()
                .filter(|s| !sources.contains(s))
                .cloned()
                .collect();
            map.retain(|source, _| sources.contains(source));
            gone
        };
        for source in gone {
            for result in FETCH_RESULTS {
                self.fetches.remove(&FetchLabels {
                    source: source.clone(),
                    result,
                });
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SystemTime>> {
        self.fetched_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Encodes `hookwall_allow_source_age_seconds` at scrape time.
#[derive(Debug)]
struct AgeCollector {
    fetched_at: FetchedAt,
}

impl Collector for AgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ages: Vec<(String, f64)> = {
            let fetched = self
                .fetched_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = SystemTime::now();
            fetched
                .iter()
                .map(|(source, at)| {
                    let age = now.duration_since(*at).unwrap_or_default().as_secs_f64();
                    (source.clone(), age)
                })
                .collect()
        };
        if ages.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "allow_source_age",
            "Age of each published address list in force: time since it was fetched (for a \
             preset's built-in snapshot, since the snapshot was taken)",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (source, age) in ages {
            ConstGauge::new(age).encode(family.encode_family(&AgeLabels { source })?)?;
        }
        Ok(())
    }
}
