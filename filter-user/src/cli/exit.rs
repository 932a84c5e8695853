//! What each command's exit status means: one table, shown at the end of `--help` and in the
//! EXIT STATUS section of the man pages (docs/operations.md repeats it).
//!
//! Every command returns 0, 1 or 2 and nothing else: `main` maps an error to 1
//! (`ExitCode::FAILURE`) and an unusable `HOOKWALL_LOG_FORMAT` to 2, as clap does a command line
//! it cannot parse (and 0 for `--help` and `--version`). A panic would end the process with Rust's 101; that is a bug,
//! not an outcome, so it is not listed.

use std::fmt::Write as _;

/// One exit status and what it means for a command.
pub type Code = (u8, &'static str);

/// The status clap gives a command line it cannot parse, the same for every command.
const USAGE: Code = (
    2,
    "the command line is wrong (unknown command or option, missing or malformed value), or \
     HOOKWALL_LOG_FORMAT holds a value other than text or json; nothing was done",
);

/// `hookwall` itself, whatever the command.
pub const HOOKWALL: &[Code] = &[
    (0, "the command did what was asked"),
    (
        1,
        "it could not, or only in part: the message on standard error says what and why",
    ),
    USAGE,
];

/// `hookwall run`.
pub const RUN: &[Code] = &[
    (
        0,
        "stopped on SIGTERM or SIGINT, or because the pinned filter was removed (`hookwall \
         detach`) while it ran; the filter stays in force in the first case",
    ),
    (
        1,
        "the start was refused (invalid config, unreadable secret or certificate, busy port, \
         filter not loadable or attachable; nothing new is left attached), or a service failed \
         while running",
    ),
    USAGE,
];

/// `hookwall check`.
pub const CHECK: &[Code] = &[
    (
        0,
        "the config is valid (warnings about loose file permissions or a missing provider preset do not change this)",
    ),
    (
        1,
        "the config is invalid: every error is listed, with its line",
    ),
    USAGE,
];

/// `hookwall status`.
pub const STATUS: &[Code] = &[
    (
        0,
        "the status was printed, also when no filter is loaded (it says so)",
    ),
    (
        1,
        "the config named with -c does not load, or the pinned maps cannot be read",
    ),
    USAGE,
];

/// `hookwall detach`.
pub const DETACH: &[Code] = &[
    (
        0,
        "the filter was detached and unpinned, or nothing was pinned",
    ),
    (
        1,
        "a link or pin could not be removed, or the config named with -c does not load",
    ),
    USAGE,
];

/// `hookwall upgrade`.
pub const UPGRADE: &[Code] = &[
    (
        0,
        "the daemon handed over to its successor: the old process has exited and the new one \
         serves",
    ),
    (
        1,
        "no running daemon was found, it could not be signalled, or the hand-over did not \
         complete in time (the old daemon keeps serving; its log says why)",
    ),
    USAGE,
];

/// `hookwall presets`, `completions` and `manpages`: they print or write only.
pub const PRINTS: &[Code] = &[
    (0, "printed or written"),
    (1, "the output could not be written"),
    USAGE,
];

/// `hookwall queue` and its subcommands.
pub const QUEUE: &[Code] = &[
    (0, "done in full"),
    (
        1,
        "not done in full: an id that is not there (show, retry) or not a dead letter (retry; \
         the others are still requeued), or the config or the store cannot be read",
    ),
    USAGE,
];

/// `hookwall allow accept`.
pub const ALLOW: &[Code] = &[
    (
        0,
        "a refused shrink was accepted; the running daemon was told, or it was not running",
    ),
    (
        1,
        "no fetched list was refused for shrinking (nothing to accept), or the config or the \
         cache directory cannot be read or written",
    ),
    USAGE,
];

/// The codes of the command named by its path below `hookwall` (`[]`, `["queue", "list"]`).
#[must_use]
pub fn of(path: &[&str]) -> &'static [Code] {
    match path.first().copied() {
        None => HOOKWALL,
        Some("run") => RUN,
        Some("check") => CHECK,
        Some("status") => STATUS,
        Some("detach") => DETACH,
        Some("queue") => QUEUE,
        Some("upgrade") => UPGRADE,
        Some("allow") => ALLOW,
        Some(_) => PRINTS,
    }
}

/// The table as plain text, for `after_help`.
#[must_use]
pub fn help(codes: &[Code]) -> String {
    let mut text = String::from("Exit status:");
    for (code, meaning) in codes {
        let _ = write!(text, "\n  {code}  {meaning}");
    }
    text
}

/// The table as a man page section (roff).
#[must_use]
pub fn roff(codes: &[Code]) -> String {
    let mut text = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in codes {
        let _ = write!(text, ".TP\n\\fB{code}\\fR\n{}\n", escape(meaning));
    }
    text
}

/// `text` safe as one roff text line: backslashes doubled, and a leading `.` or `'` (which
/// would start a request) guarded.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_lists_0_1_and_2_in_order() {
        for codes in [HOOKWALL, RUN, CHECK, STATUS, DETACH, PRINTS, QUEUE] {
            let listed: Vec<u8> = codes.iter().map(|(code, _)| *code).collect();
            assert_eq!(listed, [0, 1, 2]);
        }
    }

    #[test]
    fn help_and_roff_carry_every_line() {
        let help = help(RUN);
        assert!(help.starts_with("Exit status:\n  0  stopped on SIGTERM"));
        assert!(help.contains("\n  2  the command line is wrong"));
        let page = roff(RUN);
        assert!(page.starts_with(".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\n"));
        // Dashes are escaped, so man renders them as minus signs, not hyphens.
        assert!(roff(STATUS).contains("named with \\-c does not load"));
        assert_eq!(escape(".x"), "\\&.x");
        assert_eq!(escape("a\\b"), "a\\eb");
    }

    #[test]
    fn commands_map_to_their_tables() {
        assert_eq!(of(&[]), HOOKWALL);
        assert_eq!(of(&["queue", "retry"]), QUEUE);
        assert_eq!(of(&["check"]), CHECK);
        assert_eq!(of(&["presets"]), PRINTS);
    }
}
