//! Where `hookwall status` and `hookwall detach` find the pinned filter: `--pin-path`, else the
//! config's `filter.pin_path`, read alone (see [`config::load_pin_path`]): the pins are on the
//! bpf filesystem, reachable from any network namespace, so the configured interfaces need not
//! be there, and the rest of the file need not be valid.
//!
//! `detach` removes what it finds, so a config that cannot be read is never replaced by a guess:
//! an explicit `-c FILE` that fails to load is an error, and so is a default config that exists
//! but is invalid (it may name another pin path). Only a default config that does not exist at
//! all falls back to the default pin path, which is what that config would have said.

use std::path::{Path, PathBuf};

use crate::{
    config::{self, ConfigErrors},
    filter::Pins,
};

/// Why the pin path could not be decided; nothing was touched.
#[derive(Debug, thiserror::Error)]
pub enum PinPathError {
    /// The config named with `-c` (or the default one, present but invalid) did not give a pin
    /// path.
    #[error(
        "{}: {} error(s); the pin path is its filter.pin_path, so nothing was touched (fix the \
         config, or pass --pin-path PATH)",
        path.display(),
        errors.0.len()
    )]
    Config {
        /// The config file.
        path: PathBuf,
        /// Its errors, to print before this one.
        errors: ConfigErrors,
    },
}

/// The pins to act on. `pin_path` (`--pin-path`) wins; else `config` (`-c FILE`) must load;
/// else `default_config` is read if it exists, and a missing one means
/// [`config::DEFAULT_PIN_PATH`] (with a note on standard error).
///
/// # Errors
/// If the config that decides the pin path exists (or was named) but does not load.
pub fn resolve(
    pin_path: Option<&Path>,
    config: Option<&Path>,
    default_config: &Path,
) -> Result<Pins, PinPathError> {
    if let Some(path) = pin_path {
        return Ok(Pins::new(path));
    }
    let path = match config {
        Some(path) => path,
        None if !default_config.exists() => {
            eprintln!(
                "note: no config at {}; using the default pin path {} (pass -c FILE or \
                 --pin-path to choose)",
                default_config.display(),
                config::DEFAULT_PIN_PATH
            );
            return Ok(Pins::new(config::DEFAULT_PIN_PATH));
        }
        None => default_config,
    };
    config::load_pin_path(path)
        .map(Pins::new)
        .map_err(|errors| PinPathError::Config {
            path: path.to_path_buf(),
            errors,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_config_that_does_not_load_is_an_error_not_the_default_pins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("typo.toml");
        let err = resolve(None, Some(&missing), &missing).expect_err("missing -c");
        let PinPathError::Config { path, errors } = &err;
        assert_eq!(path, &missing);
        assert!(!errors.0.is_empty());
        assert!(err.to_string().contains("nothing was touched"), "{err}");

        let invalid = dir.path().join("bad.toml");
        std::fs::write(&invalid, "[filter]\nno_such_key = 1\n").expect("write");
        assert!(resolve(None, Some(&invalid), &missing).is_err());
        // The default config, present but invalid, is no better a guide.
        assert!(resolve(None, None, &invalid).is_err());
    }

    #[test]
    fn pin_path_wins_and_a_missing_default_config_means_the_default_pins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("absent.toml");
        let pins = resolve(
            Some(Path::new("/sys/fs/bpf/hw-x")),
            Some(&missing),
            &missing,
        )
        .expect("--pin-path needs no config");
        assert_eq!(pins.root(), Path::new("/sys/fs/bpf/hw-x"));
        let pins = resolve(None, None, &missing).expect("no default config");
        assert_eq!(pins.root(), Path::new(config::DEFAULT_PIN_PATH));
    }
}
