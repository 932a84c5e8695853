//! `hookwall queue`: look into the event store, replay dead letters, purge delivered events.
//!
//! Runs beside the daemon, as another process: it opens the store read-write with
//! [`Admin`], each change one short transaction (or a few, for a large purge) that waits for the
//! daemon's writer rather than failing. The daemon's delivery worker sees a replayed event within
//! a second (`crate::delivery::IDLE_POLL`).

use std::{
    fmt::Write as _,
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::{
    config,
    store::{Admin, EventState, EventSummary, RetryOutcome, StoredEvent, unix_ms},
    time::rfc3339,
};

/// What `hookwall queue` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `list`: newest first.
    List {
        /// Only events in this state.
        state: Option<EventState>,
        /// At most this many.
        limit: usize,
        /// Only events with a smaller id (the next page).
        before: Option<i64>,
        /// JSON lines instead of a table.
        json: bool,
    },
    /// `show ID`: one event, with its headers and body.
    Show {
        /// Row id.
        id: i64,
        /// JSON instead of text.
        json: bool,
    },
    /// `retry`: dead letters back to pending.
    Retry {
        /// These ids.
        ids: Vec<i64>,
        /// Every dead letter.
        all_dead: bool,
    },
    /// `purge`: delete delivered events older than this (default `store.retention`), and the
    /// tombstones older than `store.dedupe_window`.
    Purge {
        /// The age; `None` means `store.retention`.
        older_than: Option<Duration>,
    },
}

/// What a command printed, and whether it fully succeeded (exit status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// What to print on standard output.
    pub text: String,
    /// False when part of the request could not be done (e.g. an id that is not a dead letter).
    pub ok: bool,
}

/// `hookwall queue`: reads `store.path`, `store.retention` and `store.dedupe_window` from the
/// config at `config_path`, runs `command` and prints what it came to; the exit status says
/// whether all of it was done.
///
/// # Errors
/// The config is invalid (its errors are printed first), or [`run`] failed.
pub fn main(config_path: &Path, command: &Command) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(config_path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            anyhow::bail!(
                "{}: {} error(s); `hookwall queue` reads store.path from it",
                config_path.display(),
                errors.0.len()
            );
        }
    };
    let retention = (loaded.store.retention, loaded.store.dedupe_window);
    let output = run(&loaded.store.path, retention, command)?;
    print!("{}", output.text);
    Ok(if output.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `command` against the store at `store_path`; `retention` is `store.retention` and
/// `store.dedupe_window`.
///
/// # Errors
/// The store cannot be opened or read, or a change failed (then nothing of it was applied).
pub fn run(
    store_path: &Path,
    (retention, dedupe_window): (Duration, Duration),
    command: &Command,
) -> anyhow::Result<Output> {
    let admin = Admin::open(store_path)
        .with_context(|| format!("opening the event store {}", store_path.display()))?;
    let now = SystemTime::now();
    match command {
        Command::List {
            state,
            limit,
            before,
            json,
        } => {
            let events = admin.reader().list(*state, *limit, *before)?;
            let counts = admin.reader().counts()?;
            let mut text = String::new();
            if *json {
                for event in &events {
                    text.push_str(&serde_json::to_string(event)?);
                    text.push('\n');
                }
            } else {
                text = render_list(&events, now);
                let _ = writeln!(
                    text,
                    "{} pending, {} delivered, {} dead in {}",
                    counts.pending,
                    counts.delivered,
                    counts.dead,
                    store_path.display()
                );
            }
            Ok(Output { text, ok: true })
        }
        Command::Show { id, json } => {
            let Some(event) = admin.reader().get(*id)? else {
                return Ok(Output {
                    text: format!("no event with id {id} in {}\n", store_path.display()),
                    ok: false,
                });
            };
            let text = if *json {
                format!("{}\n", serde_json::to_string_pretty(&show_json(&event))?)
            } else {
                render_event(&event)
            };
            Ok(Output { text, ok: true })
        }
        Command::Retry { ids, all_dead } => {
            let now_ms = unix_ms(now);
            let mut text = String::new();
            let mut ok = true;
            if *all_dead {
                let n = admin.retry_all_dead(now_ms)?;
                let _ = writeln!(
                    text,
                    "requeued {n} dead letter(s); they are delivered again now"
                );
            }
            for (id, outcome) in admin.retry(ids, now_ms)? {
                match outcome {
                    RetryOutcome::Requeued => {
                        let _ = writeln!(text, "{id}: requeued; it is delivered again now");
                    }
                    RetryOutcome::NotDead(state) => {
                        ok = false;
                        let _ = writeln!(
                            text,
                            "{id}: left alone: it is {} (only dead letters are replayed)",
                            state.as_str()
                        );
                    }
                    RetryOutcome::NotFound => {
                        ok = false;
                        let _ = writeln!(text, "{id}: no event with this id");
                    }
                }
            }
            Ok(Output { text, ok })
        }
        Command::Purge { older_than } => {
            let age = older_than.unwrap_or(retention);
            let cutoff =
                unix_ms(now).saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            let n = admin.purge_delivered(cutoff)?;
            let window_cutoff = unix_ms(now)
                .saturating_sub(i64::try_from(dedupe_window.as_millis()).unwrap_or(i64::MAX));
            let expired = admin.purge_tombstones(window_cutoff)?;
            let text = format!(
                "purged {n} delivered event(s) older than {} (pending and dead events are kept; \
                 each leaves a tombstone that recognises a replay for store.dedupe_window, {}), \
                 and {expired} expired tombstone(s)\n",
                humantime::format_duration(age),
                humantime::format_duration(dedupe_window)
            );
            Ok(Output { text, ok: true })
        }
    }
}

fn at(ms: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn render_list(events: &[EventSummary], now: SystemTime) -> String {
    let mut text = String::new();
    if events.is_empty() {
        text.push_str("no events\n");
        return text;
    }
    let _ = writeln!(
        text,
        "{:>8}  {:<9}  {:>8}  {:<24}  {:<28}  {:<24}  NOTE",
        "ID", "STATE", "ATTEMPTS", "RECEIVED", "ROUTE", "EVENT ID"
    );
    let now_ms = unix_ms(now);
    for e in events {
        let note = match e.state {
            EventState::Pending => e.next_attempt_at_ms.map_or_else(String::new, |next| {
                if next <= now_ms {
                    "due now".to_owned()
                } else {
                    format!("next attempt {}", at(next))
                }
            }),
            EventState::Delivered => e
                .delivered_at_ms
                .map_or_else(String::new, |t| format!("delivered {}", at(t))),
            EventState::Dead => e.last_error.clone().unwrap_or_default(),
        };
        let _ = writeln!(
            text,
            "{:>8}  {:<9}  {:>8}  {:<24}  {:<28}  {:<24}  {note}",
            e.id,
            e.state.as_str(),
            e.attempts,
            at(e.received_at_ms),
            e.route,
            e.event_id,
        );
    }
    text
}

fn render_event(e: &StoredEvent) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "id:           {}", e.id);
    let _ = writeln!(text, "route:        {}", e.route);
    let _ = writeln!(text, "event id:     {}", e.event_id);
    let _ = writeln!(text, "kind:         {}", e.kind);
    let _ = writeln!(text, "received:     {}", at(e.received_at_ms));
    let _ = writeln!(text, "state:        {}", e.state.as_str());
    let _ = writeln!(text, "attempts:     {}", e.attempts);
    if let Some(next) = e.next_attempt_at_ms {
        let _ = writeln!(text, "next attempt: {}", at(next));
    }
    if let Some(t) = e.delivered_at_ms {
        let _ = writeln!(text, "delivered:    {}", at(t));
    }
    if let Some(error) = &e.last_error {
        let _ = writeln!(text, "last error:   {error}");
    }
    let _ = writeln!(text, "body sha256:  {}", e.body_sha256);
    for (name, value) in &e.headers {
        let _ = writeln!(text, "header:       {name}: {value}");
    }
    match std::str::from_utf8(&e.body) {
        Ok(body) => {
            let _ = writeln!(text, "body ({} bytes):\n{body}", e.body.len());
        }
        Err(_) => {
            let _ = writeln!(
                text,
                "body ({} bytes, not UTF-8; `--json` shows it in hex)",
                e.body.len()
            );
        }
    }
    text
}

fn show_json(e: &StoredEvent) -> serde_json::Value {
    let (body, encoding) = match std::str::from_utf8(&e.body) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (hex::encode(&e.body), "hex"),
    };
    serde_json::json!({
        "id": e.id,
        "route": e.route,
        "event_id": e.event_id,
        "kind": e.kind,
        "received_at_ms": e.received_at_ms,
        "state": e.state,
        "attempts": e.attempts,
        "next_attempt_at_ms": e.next_attempt_at_ms,
        "last_error": e.last_error,
        "delivered_at_ms": e.delivered_at_ms,
        "body_sha256": e.body_sha256,
        "headers": e.headers,
        "body": body,
        "body_encoding": encoding,
    })
}
