//! `[allow]`: the inputs of the allowlist and the merged list they make.

use std::path::PathBuf;

use filter_common::MAX_ALLOWED_PREFIXES;
use serde::Deserialize;

use super::{Checker, KeyPath, Table, closest, filter::Mode, serde_names};
use crate::{
    allowlist::{self, Allowlist, Entry, Source, presets},
    config::ConfigError,
};

/// `allow.presets` default: Safaricom's published callback addresses.
const DEFAULT_PRESETS: &[&str] = &["mpesa"];

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawAllow {
    presets: Option<Vec<String>>,
    cidrs: Vec<String>,
    files: Vec<PathBuf>,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[Table {
    path: "allow",
    array: false,
    keys: serde_names::<RawAllow>,
    secret_refs: &[],
    secret_ref_lists: &[],
}];

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

        // After a bad entry an empty list is a consequence, not news: report the cause only.
        if mode == Some(Mode::Enforce) && allowlist.is_empty() && self.errors.len() == before {
            self.error(
                &KeyPath::of("allow"),
                "an empty allowlist in enforce mode would drop every packet to the protected \
                 ports: add presets, cidrs or files, or set filter.mode = \"monitor\"",
            );
        }
        let allow = AllowConfig {
            presets,
            cidrs: raw.cidrs,
            files,
        };
        (allow, allowlist)
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
