//! `hookwall presets`: the built-in provider address lists, every entry with its source.

use std::fmt::Write as _;

use crate::allowlist::presets::PRESETS;

/// `hookwall presets`: prints [`render`].
pub fn main() {
    print!("{}", render());
}

/// What `hookwall presets` prints: each preset with its description and every entry with its
/// source.
pub fn render() -> String {
    let mut out = String::new();
    for (i, preset) in PRESETS.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}: {}", preset.name, preset.description);
        match preset.published {
            Some(published) => {
                let _ = writeln!(
                    out,
                    "  published at {} ({}); built-in snapshot of {} (allow.presets_refresh \
                     fetches the current list)",
                    published.url,
                    published.format.as_str(),
                    preset.snapshot
                );
            }
            None => {
                let _ = writeln!(out, "  built-in list of {}", preset.snapshot);
            }
        }
        let width = preset
            .entries
            .iter()
            .map(|e| e.cidr.len())
            .max()
            .unwrap_or(0);
        for entry in preset.entries {
            let _ = writeln!(out, "  {:<width$}  {}", entry.cidr, entry.source);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_entry_with_its_source() {
        let text = render();
        assert!(text.starts_with("mpesa: Safaricom M-Pesa"), "{text}");
        assert!(text.contains("\nmpesa-extra: opt-in"), "{text}");
        assert!(
            text.contains("  published at https://api.github.com/meta (github-meta); built-in snapshot of 2026-10-29"),
            "{text}"
        );
        assert!(
            text.contains(
                "  published at https://stripe.com/files/ips/ips_webhooks.json (stripe-json)"
            ),
            "{text}"
        );
        for preset in PRESETS {
            for entry in preset.entries {
                let line = text
                    .lines()
                    .find(|line| line.trim_start().starts_with(&format!("{} ", entry.cidr)))
                    .unwrap_or_else(|| panic!("{} missing from:\n{text}", entry.cidr));
                assert!(line.ends_with(entry.source), "{line}");
            }
        }
    }
}
