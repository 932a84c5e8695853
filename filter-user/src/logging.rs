//! How the log is written to standard error: `text` for people (coloured only on a terminal),
//! or `json`, one object per line, for journald and Loki, whose fields (the audit line's
//! `route`, `outcome`, `reason`, `client`...) are the object's own fields, so that no pipeline
//! needs a regex. Chosen by `--log-format`, else `HOOKWALL_LOG_FORMAT`, else `text`; filtered by
//! `HOOKWALL_LOG` (default `info`).

use std::{ffi::OsString, io::IsTerminal as _, sync::OnceLock};

/// The environment variable read when `--log-format` is not given.
pub const FORMAT_ENV: &str = "HOOKWALL_LOG_FORMAT";
/// The environment variable holding the log filter.
pub const FILTER_ENV: &str = "HOOKWALL_LOG";

/// How each log line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event: time, level, target, message, `key=value` fields.
    #[default]
    Text,
    /// One JSON object per event: `timestamp`, `level`, `target`, `message` and every field.
    Json,
}

/// The format the log was set up with: the audit line is written to suit it.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format in use ([`LogFormat::Text`] before [`init`], as in the library's tests).
#[must_use]
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// `HOOKWALL_LOG_FORMAT` holds something else than a format.
#[derive(Debug, thiserror::Error)]
#[error("{FORMAT_ENV}={value:?} is not a log format: use \"text\" or \"json\" (or unset it)")]
pub struct BadFormat {
    /// What it holds (not a secret: a log format).
    value: String,
}

/// The format: the flag's, else the variable's (`env`), else text.
///
/// # Errors
/// The variable holds something else than `text` or `json`.
pub fn resolve(flag: Option<LogFormat>, env: Option<OsString>) -> Result<LogFormat, BadFormat> {
    if let Some(format) = flag {
        return Ok(format);
    }
    let Some(value) = env else {
        return Ok(LogFormat::default());
    };
    let value = value.to_string_lossy();
    <LogFormat as clap::ValueEnum>::from_str(value.trim(), true).map_err(|_| BadFormat {
        value: value.into_owned(),
    })
}

/// Sets up the log on standard error in the format of `flag` or `HOOKWALL_LOG_FORMAT`.
///
/// # Errors
/// `HOOKWALL_LOG_FORMAT` is not a format (then nothing is set up).
pub fn init(flag: Option<LogFormat>) -> Result<(), BadFormat> {
    let format = resolve(flag, std::env::var_os(FORMAT_ENV))?;
    let _ = FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_env(FILTER_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

/// Colours only for a person at a terminal: a journal, a pipe or a file gets none (escape codes
/// there are noise to grep and to log shippers); `NO_COLOR` turns them off everywhere.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes the error a command ends with: a line of its own in text, one more JSON object (its
/// causes joined in the message) in json, so that every line of a json log parses.
pub fn report(error: &anyhow::Error) {
    match format() {
        LogFormat::Text => eprintln!("error: {error:#}"),
        LogFormat::Json => tracing::error!("{error:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_variable_then_text() {
        let env = |v: &str| Some(OsString::from(v));
        assert_eq!(
            resolve(Some(LogFormat::Text), env("json")).unwrap(),
            LogFormat::Text
        );
        assert_eq!(
            resolve(Some(LogFormat::Json), env("bogus")).unwrap(),
            LogFormat::Json,
            "a bad variable is not read when the flag is given"
        );
        assert_eq!(resolve(None, env("json")).unwrap(), LogFormat::Json);
        assert_eq!(resolve(None, env("JSON")).unwrap(), LogFormat::Json);
        assert_eq!(resolve(None, env("text")).unwrap(), LogFormat::Text);
        assert_eq!(resolve(None, None).unwrap(), LogFormat::Text);
        assert_eq!(
            resolve(None, env("journald")).unwrap_err().to_string(),
            "HOOKWALL_LOG_FORMAT=\"journald\" is not a log format: use \"text\" or \"json\" (or \
             unset it)"
        );
    }
}
