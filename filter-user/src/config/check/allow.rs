//! `[allow]`: the inputs of the allowlist and the merged list they make.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use filter_common::MAX_ALLOWED_PREFIXES;
use serde::Deserialize;

use super::{Checker, DurationRule, HOUR, KeyPath, Table, closest, filter::Mode, serde_names};
use crate::{
    allowlist::{
        self, Allowlist, Entry, Source,
        presets::{self, Format},
    },
    config::ConfigError,
};

/// `allow.presets` default: Safaricom's published callback addresses.
const DEFAULT_PRESETS: &[&str] = &["mpesa"];

/// `allow.max_shrink` default: a fetched list may lose at most half of its prefixes.
pub const DEFAULT_MAX_SHRINK: f64 = 0.5;

/// The directory under the store's directory that keeps the fetched lists by default.
pub const DEFAULT_CACHE_SUBDIR: &str = "allow-sources";

/// `allow.sources[].refresh` and `allow.presets_refresh_interval`. The floor is low so that a
/// test can watch refreshes; publishers rate-limit (GitHub's meta API allows 60 unauthenticated
/// requests an hour per address), so production intervals are hours.
const REFRESH: DurationRule = DurationRule {
    default: Duration::from_secs(6 * HOUR),
    min: Duration::from_secs(1),
    max: Some(Duration::from_secs(7 * 24 * HOUR)),
    why: "; publishers change their lists rarely and rate-limit readers: 1h or more is \
          recommended",
    examples: "\"6h\" or \"1h 30m\"",
};

/// One `allow.sources` entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// The document's URL (`http` or `https`).
    pub url: String,
    /// How to read it.
    pub format: Format,
    /// How often it is fetched.
    pub refresh: Duration,
}

/// `[allow]` as written; the merged result is
/// [`Config::allowlist`](crate::config::Config::allowlist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowConfig {
    /// Built-in lists by name. Default: `["mpesa"]`.
    pub presets: Vec<String>,
    /// Addresses and prefixes, as written. Default: none.
    pub cidrs: Vec<String>,
    /// Allowlist files, resolved against the config file's directory. Default: none.
    pub files: Vec<PathBuf>,
    /// Published lists fetched and refreshed by the daemon. Default: none.
    pub sources: Vec<SourceConfig>,
    /// `allow.presets_refresh`: whether the presets with a publisher URL are fetched from it,
    /// and how often (`allow.presets_refresh_interval`). Default: off (`None`).
    pub presets_refresh: Option<Duration>,
    /// `allow.max_shrink` in thousandths: the share of its prefixes a fetched list may lose
    /// before it is refused. Default: 500.
    pub max_shrink_permille: u16,
    /// `allow.cache_dir`, resolved against the config file's directory; `None`: the default,
    /// see [`AllowConfig::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// `allow.warn_missing_provider`: whether `hookwall check` and the daemon warn about a
    /// provider's route whose preset is not allowed. Default: true.
    pub warn_missing_provider: bool,
}

impl AllowConfig {
    /// Where the last good copy of each fetched list is kept: `allow.cache_dir`, else
    /// `allow-sources` beside the event store (`store_path`).
    pub fn cache_dir(&self, store_path: &Path) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            store_path
                .parent()
                .unwrap_or(Path::new("."))
                .join(DEFAULT_CACHE_SUBDIR)
        })
    }

    /// `allow.max_shrink` as a share (0 to 1).
    pub fn max_shrink(&self) -> f64 {
        f64::from(self.max_shrink_permille) / 1000.0
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawAllow {
    presets: Option<Vec<String>>,
    cidrs: Vec<String>,
    files: Vec<PathBuf>,
    sources: Vec<RawSource>,
    presets_refresh: Option<bool>,
    presets_refresh_interval: Option<toml::Value>,
    max_shrink: Option<f64>,
    cache_dir: Option<PathBuf>,
    warn_missing_provider: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawSource {
    url: Option<String>,
    format: Option<String>,
    refresh: Option<toml::Value>,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[
    Table {
        path: "allow",
        array: false,
        keys: serde_names::<RawAllow>,
        secret_refs: &[],
        secret_ref_lists: &[],
    },
    Table {
        path: "allow.sources",
        array: true,
        keys: serde_names::<RawSource>,
        secret_refs: &[],
        secret_ref_lists: &[],
    },
];

impl Checker<'_> {
    pub(super) fn allow(&mut self, raw: RawAllow, mode: Option<Mode>) -> (AllowConfig, Allowlist) {
        let before = self.errors.len();
        let presets = raw
            .presets
            .unwrap_or_else(|| DEFAULT_PRESETS.iter().map(|&p| p.to_owned()).collect());
        let files: Vec<PathBuf> = raw.files.iter().map(|f| self.beside_config(f)).collect();

        let mut entries = self.preset_entries(&presets);
        entries.extend(self.cidr_entries(&raw.cidrs));
        entries.extend(self.file_entries(&files));
        let allowlist = Allowlist::from_entries(entries);
        self.allow_fits(&allowlist);
        let sources = self.sources(raw.sources);
        let presets_refresh = match raw.presets_refresh {
            Some(true) => self.duration(
                &KeyPath::of("allow.presets_refresh_interval"),
                raw.presets_refresh_interval,
                &REFRESH,
            ),
            _ => None,
        };
        let max_shrink_permille = self.max_shrink(raw.max_shrink);

        // After a bad entry an empty list is a consequence, not news: report the cause only. A
        // fetched source fills the list at start (see docs/operations.md).
        if mode == Some(Mode::Enforce)
            && allowlist.is_empty()
            && sources.is_empty()
            && self.errors.len() == before
        {
            self.error(
                &KeyPath::of("allow"),
                "an empty allowlist in enforce mode would drop every packet to the protected \
                 ports: add presets, cidrs, files or sources, or set filter.mode = \"monitor\"",
            );
        }
        let allow = AllowConfig {
            presets,
            cidrs: raw.cidrs,
            files,
            sources,
            presets_refresh,
            max_shrink_permille,
            cache_dir: raw.cache_dir.map(|dir| self.beside_config(&dir)),
            warn_missing_provider: raw.warn_missing_provider.unwrap_or(true),
        };
        (allow, allowlist)
    }

    /// `allow.max_shrink`: a share from 0 to 1, kept in thousandths.
    fn max_shrink(&mut self, raw: Option<f64>) -> u16 {
        let value = raw.unwrap_or(DEFAULT_MAX_SHRINK);
        if (0.0..=1.0).contains(&value) {
            // In 0..=1000 after the check above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return (value * 1000.0).round() as u16;
        }
        self.error(
            &KeyPath::of("allow.max_shrink"),
            format!(
                "{value} is out of range: write the share of its prefixes a fetched list may \
                 lose, from 0 (none) to 1 (any, but never all), e.g. 0.5 (the default)"
            ),
        );
        500
    }

    fn sources(&mut self, raw: Vec<RawSource>) -> Vec<SourceConfig> {
        let mut sources = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (index, source) in raw.into_iter().enumerate() {
            let at = KeyPath::of("allow.sources").index(index);
            let url = match source.url {
                None => {
                    self.error(
                        &at,
                        "a source needs a url: write e.g. { url = \
                         \"https://api.github.com/meta\", format = \"github-meta\" }",
                    );
                    None
                }
                Some(url) => self.http_url(&at.key("url"), url, "https://api.github.com/meta"),
            };
            if let Some(url) = &url {
                if seen.contains(url) {
                    self.error(
                        &at.key("url"),
                        format!("\"{url}\" is listed twice in allow.sources: remove one"),
                    );
                }
                seen.push(url.clone());
            }
            let format = match source.format {
                None => {
                    self.error(
                        &at,
                        "a source needs a format: \"github-meta\", \"stripe-json\" or \"lines\"",
                    );
                    None
                }
                Some(format) => self.choice(&at.key("format"), Some(format), Format::Lines),
            };
            let refresh = self.duration(&at.key("refresh"), source.refresh, &REFRESH);
            if let (Some(url), Some(format), Some(refresh)) = (url, format, refresh) {
                sources.push(SourceConfig {
                    url,
                    format,
                    refresh,
                });
            }
        }
        sources
    }

    /// Refuses an allowlist the kernel maps could not hold through a reload, here rather than
    /// halfway through loading it (each limit is half a map, since a reload holds the old and
    /// the new list together).
    fn allow_fits(&mut self, allowlist: &Allowlist) {
        let key = KeyPath::of("allow");
        let limit = MAX_ALLOWED_PREFIXES as usize;
        for (family, count) in [("IPv4", allowlist.v4.len()), ("IPv6", allowlist.v6.len())] {
            if count > limit {
                self.error(
                    &key,
                    format!(
                        "the allowlist holds {count} {family} prefixes after merging, more than \
                         the {limit} the filter can load: merge them into shorter prefixes or \
                         list fewer (see `hookwall check`)"
                    ),
                );
            }
        }
    }

    fn preset_entries(&mut self, names: &[String]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let key = KeyPath::of("allow.presets").index(index);
            let Some(preset) = presets::find(name) else {
                let hint = closest(name, presets::names())
                    .map(|n| format!(" (did you mean \"{n}\"?)"))
                    .unwrap_or_default();
                let known = presets::names().collect::<Vec<_>>().join(", ");
                self.error(
                    &key,
                    format!(
                        "unknown preset \"{name}\"{hint}: the presets are {known} (see `hookwall \
                         presets`)"
                    ),
                );
                continue;
            };
            for entry in preset.entries {
                match allowlist::parse_entry(entry.cidr) {
                    Ok(net) => entries.push(Entry {
                        net,
                        source: Source::Preset {
                            name: preset.name.to_owned(),
                            citation: entry.source.to_owned(),
                        },
                    }),
                    // The presets are tested to parse; this only guards against a bad edit.
                    Err(message) => {
                        self.error(&key, format!("built-in preset is broken: {message}"))
                    }
                }
            }
        }
        entries
    }

    fn cidr_entries(&mut self, cidrs: &[String]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (index, text) in cidrs.iter().enumerate() {
            let key = KeyPath::of("allow.cidrs").index(index);
            match allowlist::parse_entry(text) {
                Ok(net) => entries.push(Entry {
                    net,
                    // An entry of a default or unlocatable list still needs a line: 0 = unknown.
                    source: Source::Config {
                        line: self.line(&key).unwrap_or(0),
                    },
                }),
                Err(message) => self.error(&key, message),
            }
        }
        entries
    }

    fn file_entries(&mut self, files: &[PathBuf]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (index, path) in files.iter().enumerate() {
            let key = KeyPath::of("allow.files").index(index);
            match allowlist::read_file(path) {
                Ok(found) => entries.extend(found),
                Err(allowlist::ReadFileError::Io { path, source }) => self.error(
                    &key,
                    format!(
                        "cannot read {}: {source}: create it or fix the path (a relative path is \
                         relative to the config file's directory), or remove it from allow.files",
                        path.display()
                    ),
                ),
                Err(allowlist::ReadFileError::BadLines { path, lines }) => {
                    for (line, message) in lines {
                        self.errors.push(ConfigError {
                            file: path.clone(),
                            line: Some(line),
                            key: Some(key.to_string()),
                            message,
                        });
                    }
                }
            }
        }
        entries
    }
}
