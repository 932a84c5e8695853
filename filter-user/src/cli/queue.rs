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
/// config at `config_path` (`[store]` alone, so it runs wherever the store is reachable, whatever
/// the rest of the file says), runs `command` and prints what it came to; the exit status says
/// whether all of it was done.
///
/// # Errors
/// `[store]` is invalid (its errors are printed first), or [`run`] failed.
pub fn main(config_path: &Path, command: &Command) -> anyhow::Result<ExitCode> {
    let store = match config::load_store(config_path) {
        Ok(store) => store,
        Err(errors) => {
            eprintln!("{errors}");
            anyhow::bail!(
                "{}: {} error(s); `hookwall queue` reads [store] from it",
                config_path.display(),
                errors.0.len()
            );
        }
    };
    let output = run(&store.path, (store.retention, store.dedupe_window), command)?;
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
                    text.push_str(&json_escape_c1(serde_json::to_string(event)?));
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
                format!(
                    "{}\n",
                    json_escape_c1(serde_json::to_string_pretty(&show_json(&event))?)
                )
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
        let note = one_line(&note);
        let _ = writeln!(
            text,
            "{:>8}  {:<9}  {:>8}  {:<24}  {:<28}  {:<24}  {note}",
            e.id,
            e.state.as_str(),
            e.attempts,
            at(e.received_at_ms),
            one_line(&e.route),
            one_line(&e.event_id),
        );
    }
    text
}

fn render_event(e: &StoredEvent) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "id:           {}", e.id);
    let _ = writeln!(text, "route:        {}", one_line(&e.route));
    let _ = writeln!(text, "event id:     {}", one_line(&e.event_id));
    let _ = writeln!(text, "kind:         {}", one_line(&e.kind));
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
        let _ = writeln!(text, "last error:   {}", one_line(error));
    }
    let _ = writeln!(text, "body sha256:  {}", e.body_sha256);
    for (name, value) in &e.headers {
        let _ = writeln!(
            text,
            "header:       {}: {}",
            one_line(name),
            one_line(value)
        );
    }
    match std::str::from_utf8(&e.body) {
        Ok(body) => {
            let _ = writeln!(
                text,
                "body ({} bytes):\n{}",
                e.body.len(),
                escape_controls(body, &['\n', '\t'])
            );
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

/// `text` for one line of the terminal: every control character escaped, newlines and tabs too.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(text, &[])
}

/// `text` with every control character but those in `keep` written as an escape (`\x1b`,
/// `\r`, `\u{9b}`): stored values come from the network, and an escape sequence in one must
/// not reach the operator's terminal, where it could retitle the window, move the cursor or
/// overwrite what was printed before it. C0, DEL and C1 are escaped; a backslash already in the
/// text is left as it is, so `--json` is the exact form.
fn escape_controls<'a>(text: &'a str, keep: &[char]) -> std::borrow::Cow<'a, str> {
    let escaped = |c: char| c.is_control() && !keep.contains(&c);
    if !text.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !escaped(c) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\n' => write!(out, "\\n"),
            '\r' => write!(out, "\\r"),
            '\t' => write!(out, "\\t"),
            c if u32::from(c) < 0x80 => write!(out, "\\x{:02x}", u32::from(c)),
            c => write!(out, "\\u{{{:x}}}", u32::from(c)),
        };
    }
    std::borrow::Cow::Owned(out)
}

/// JSON with DEL and the C1 controls escaped too: JSON escapes only C0 itself, and a C1 CSI
/// (U+009B) starts an escape sequence on some terminals. They can only occur inside strings,
/// where `\u00XX` means the same character.
fn json_escape_c1(json: String) -> String {
    let c1 = |c: char| ('\u{7f}'..='\u{9f}').contains(&c);
    if !json.contains(c1) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c1(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "ok\x1b]0;pwned\x07\rfake line\u{9b}2J\x7f";

    fn event() -> StoredEvent {
        StoredEvent {
            id: 7,
            route: "/hooks/gh".into(),
            event_id: format!("evt{HOSTILE}"),
            kind: "push".into(),
            received_at_ms: 1_700_000_000_000,
            body: format!("{{\"a\":1}}\n\tindented {HOSTILE}").into_bytes(),
            body_sha256: "00".into(),
            headers: vec![("user-agent".into(), format!("ua{HOSTILE}"))],
            state: EventState::Dead,
            attempts: 3,
            next_attempt_at_ms: None,
            last_error: Some(format!("HTTP 500{HOSTILE}\nsecond line")),
            delivered_at_ms: None,
        }
    }

    fn assert_no_controls(text: &str, allowed: &[char]) {
        let bad: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && !allowed.contains(c))
            .collect();
        assert!(bad.is_empty(), "control characters {bad:?} in:\n{text}");
    }

    #[test]
    fn show_escapes_control_characters_from_the_store() {
        let text = render_event(&event());
        // Newlines end the printed lines; the body keeps its own newlines and tabs.
        assert_no_controls(&text, &['\n', '\t']);
        assert!(
            text.contains("last error:   HTTP 500ok\\x1b]0;pwned\\x07\\rfake line\\u{9b}2J\\x7f\\nsecond line\n"),
            "{text}"
        );
        assert!(text.contains("event id:     evtok\\x1b]0;pwned"), "{text}");
        assert!(
            text.contains("header:       user-agent: uaok\\x1b"),
            "{text}"
        );
        assert!(
            text.contains("{\"a\":1}\n\tindented ok\\x1b]0;pwned\\x07\\rfake"),
            "{text}"
        );
        // A line with nothing to escape is printed as it is.
        assert!(text.contains("route:        /hooks/gh\n"), "{text}");
    }

    #[test]
    fn list_escapes_control_characters_and_json_stays_exact() {
        let e = event();
        let summary = EventSummary {
            id: e.id,
            route: e.route.clone(),
            event_id: e.event_id.clone(),
            kind: e.kind.clone(),
            received_at_ms: e.received_at_ms,
            state: e.state,
            attempts: e.attempts,
            next_attempt_at_ms: None,
            last_error: e.last_error.clone(),
            delivered_at_ms: None,
        };
        let text = render_list(std::slice::from_ref(&summary), UNIX_EPOCH);
        assert_no_controls(&text, &['\n']);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("HTTP 500ok\\x1b]0;pwned\\x07\\r"), "{text}");

        // JSON escapes control characters itself, and round-trips to the stored value.
        let line = json_escape_c1(serde_json::to_string(&summary).expect("json"));
        assert_no_controls(&line, &[]);
        let back: serde_json::Value = serde_json::from_str(&line).expect("parse");
        assert_eq!(back["last_error"], serde_json::json!(e.last_error));
        let shown = json_escape_c1(serde_json::to_string_pretty(&show_json(&e)).expect("json"));
        assert_no_controls(&shown, &['\n']);
        let back: serde_json::Value = serde_json::from_str(&shown).expect("parse");
        assert_eq!(back["body"].as_str().map(str::as_bytes), Some(&e.body[..]));
    }
}
