//! Reading one section of the config, for the tools that run beside the daemon: `hookwall queue`
//! reads `[store]`, `hookwall status` and `hookwall detach` read `filter.pin_path`.
//!
//! They run wherever the store and the pins are reachable, which need not be where the daemon
//! runs (another network namespace, a host where the configured interface is missing or the
//! `daemon.run_as` user does not exist), and they must keep working while an edit elsewhere in
//! the file is still wrong. So they read their section only, with its own `Raw*` struct, defaults
//! and checks (those of [`super::load`], so both give the same values), and never ask the host
//! anything. The rest of the file must be valid TOML, and is otherwise not looked at; so are the
//! checks that join sections (`store.retention` against the routes' `tolerance_seconds`), which
//! are the daemon's and `hookwall check`'s.
//!
//! Errors in the section read are reported as [`super::load`] reports them, file and line
//! included, and so are its unknown keys, and keys at the top of the file that look meant for it
//! (`[stor]`, `pin_path` outside `[filter]`): a misspelt key must not quietly become the default,
//! which for `hookwall detach` would name another filter's pins.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    ConfigErrors, StoreConfig,
    check::{filter::RawFilter, store::RawStore},
    check_with,
    diagnostics::{KeyPath, Seg, closest, known_keys},
    host::NoHost,
    read,
};

/// The file as `hookwall queue` reads it: `[store]` alone.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoreSection {
    store: RawStore,
}

/// The file as `hookwall status` and `hookwall detach` read it: `[filter]` alone.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FilterSection {
    filter: RawFilter,
}

/// Reads `[store]` of the config file at `path`: what `hookwall queue` needs.
///
/// # Errors
/// The file cannot be read or is not TOML, or `[store]` has errors (an unknown key among them).
pub fn load_store(path: &Path) -> Result<StoreConfig, ConfigErrors> {
    parse_store(path, &read(path)?)
}

/// [`load_store`] of config `text`, as if read from `path`.
///
/// # Errors
/// As [`load_store`].
pub fn parse_store(path: &Path, text: &str) -> Result<StoreConfig, ConfigErrors> {
    check_with(
        path,
        text,
        &NoHost,
        |key| concerns(key, "store"),
        |checker, raw: StoreSection| checker.store(raw.store),
    )
}

/// Reads `filter.pin_path` of the config file at `path`: what `hookwall status` and `hookwall
/// detach` need. The rest of `[filter]` is checked for unknown keys and value types only.
///
/// # Errors
/// The file cannot be read or is not TOML, or `[filter]` has errors (an unknown key among them).
pub fn load_pin_path(path: &Path) -> Result<PathBuf, ConfigErrors> {
    parse_pin_path(path, &read(path)?)
}

/// [`load_pin_path`] of config `text`, as if read from `path`.
///
/// # Errors
/// As [`load_pin_path`].
pub fn parse_pin_path(path: &Path, text: &str) -> Result<PathBuf, ConfigErrors> {
    check_with(
        path,
        text,
        &NoHost,
        |key| concerns(key, "filter"),
        |checker, raw: FilterSection| checker.filter_pin_path(raw.filter),
    )
}

/// Whether the unknown `key` is a problem for a reader of `section`: a key inside it, or one at
/// the top of the file that is not a section of its own but a misspelling of `section` or one of
/// its keys written outside it. Every other section is read as unknown (the reader's struct has
/// only `section`) and is none of its business.
fn concerns(key: &KeyPath, section: &str) -> bool {
    match key.0.as_slice() {
        [Seg::Key(first), _, ..] => first == section,
        [Seg::Key(name)] => {
            !known_keys(&[]).contains(&name.as_str())
                && (closest(name, [section]).is_some()
                    || known_keys(&KeyPath::of(section).0).contains(&name.as_str()))
        }
        _ => false,
    }
}
