//! The output of `hookwall status`: the human-readable report, or with `--json` the
//! [`Status`] as pretty JSON (its field names and order are the JSON's).

use std::fmt::Write as _;

use crate::status::Status;

/// Prints `status` on standard output: as pretty JSON with `json`, as the report otherwise.
///
/// # Errors
/// If the JSON cannot be encoded.
pub fn print(status: &Status, json: bool) -> serde_json::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
    } else {
        print!("{}", render(status));
    }
    Ok(())
}

/// The human-readable report.
#[must_use]
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pin path:    {}", status.pin_path.display());
    if !status.loaded {
        let _ = writeln!(out, "filter:      not loaded (nothing pinned here)");
        if !status.links.is_empty() {
            let _ = writeln!(
                out,
                "warning:     link pins without a program pin; run `hookwall detach`"
            );
        }
        return out;
    }
    let _ = writeln!(
        out,
        "filter:      loaded, mode {}{}",
        status.mode.unwrap_or("?"),
        if status.strict_fragments {
            ", strict fragments"
        } else {
            ""
        }
    );
    let enforcing = if status.links.iter().any(|l| l.alive) {
        "the pinned filter stays in force"
    } else {
        "and the filter is attached nowhere"
    };
    let daemon = match (status.daemon_pid, status.daemon_running) {
        (Some(pid), true) => format!("running (pid {pid})"),
        (Some(pid), false) => format!("not running (last pid {pid}); {enforcing}"),
        (None, _) => format!("not running; {enforcing}"),
    };
    let _ = writeln!(out, "daemon:      {daemon}");
    if !status.program_matches_binary {
        let _ = writeln!(
            out,
            "program:     differs from this binary's; `hookwall run` replaces it in place"
        );
    }
    if status.links.is_empty() {
        let _ = writeln!(out, "interfaces:  none (not attached)");
    }
    for link in &status.links {
        let _ = writeln!(
            out,
            "interface:   {} ({}){}",
            link.interface,
            link.mode,
            if link.alive { "" } else { " LINK GONE" }
        );
    }
    let _ = writeln!(
        out,
        "allowlist:   {} IPv4 and {} IPv6 prefixes, applied at unix time {}",
        status.ipv4_prefixes, status.ipv6_prefixes, status.applied_at
    );
    let _ = writeln!(
        out,
        "counters:    {:<8} {:<12} {:>14} {:>16}",
        "verdict", "reason", "packets", "bytes"
    );
    for c in &status.counters {
        let _ = writeln!(
            out,
            "             {:<8} {:<12} {:>14} {:>16}",
            c.verdict, c.reason, c.packets, c.bytes
        );
    }
    out
}
