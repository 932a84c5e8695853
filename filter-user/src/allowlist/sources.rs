//! Address lists fetched from their publishers (`allow.sources`, and the presets with a
//! publisher URL under `allow.presets_refresh`): reading each format, the checks a fetched list
//! must pass before it may replace the one in force, and the last good copy kept on disk.
//!
//! A fetched list replaces the one in force only whole: a document with one bad entry, an empty
//! list, a list that would admit a huge block, or one that lost more than `allow.max_shrink` of
//! its prefixes is refused, and the list in force stays. A refused shrink can be let through
//! once by the operator (`hookwall allow accept`), through marker files in the cache directory.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use sha2::{Digest as _, Sha256};

use super::{parse_entry, presets::Format};

/// The shortest IPv4 prefix a fetched list may hold: a /8 is already 16 million addresses, and
/// no payment provider publishes anything near it.
pub const MIN_V4_PREFIX: u8 = 8;
/// The shortest IPv6 prefix a fetched list may hold. Providers publish /29 to /64 blocks
/// (GitHub's widest is a /29); a /16 is wider than any single network's allocation.
pub const MIN_V6_PREFIX: u8 = 16;
/// The largest document hookwall reads; published lists are a few KiB.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// Why a fetched document does not replace the list in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It is not a document of the configured format, or an entry is not an address.
    #[error("the document is not a valid {format} list: {why}")]
    Malformed {
        /// The configured format's name.
        format: &'static str,
        /// What is wrong, with the first bad entry.
        why: String,
    },
    /// It holds no address at all.
    #[error("the list is empty")]
    Empty,
    /// It holds a prefix wider than the bound for its family.
    #[error(
        "{net} is wider than /{min}, the widest prefix a fetched list may hold (it would admit a \
         large part of the internet)"
    )]
    TooBroad {
        /// The offending prefix.
        net: IpNet,
        /// The bound for its family.
        min: u8,
    },
    /// It lost more of its prefixes than `allow.max_shrink` allows.
    #[error(
        "the list shrank from {old} to {new} prefixes, more than allow.max_shrink allows: if the \
         publisher really removed them, run `hookwall allow accept`"
    )]
    Shrunk {
        /// Prefixes in the list in force.
        old: usize,
        /// Prefixes in the fetched list.
        new: usize,
    },
}

impl Refusal {
    /// The `result` label of `hookwall_allow_source_fetches_total` for this refusal.
    pub fn result_label(&self) -> &'static str {
        match self {
            Refusal::Shrunk { .. } => "shrink_refused",
            _ => "invalid",
        }
    }
}

/// Reads a fetched document of `format` into its prefixes, sorted and without duplicates, and
/// checks it ([`check_breadth`], not empty). The shrink is judged apart, against the list in
/// force ([`check_shrink`]).
pub fn parse(format: Format, text: &str) -> Result<Vec<IpNet>, Refusal> {
    let malformed = |why: String| Refusal::Malformed {
        format: format.as_str(),
        why,
    };
    let texts: Vec<String> = match format {
        Format::GithubMeta => {
            let doc: serde_json::Value =
                serde_json::from_str(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
            let hooks = doc
                .get("hooks")
                .ok_or_else(|| malformed("no `hooks` member".into()))?;
            string_list(hooks).map_err(|why| malformed(format!("`hooks`: {why}")))?
        }
        Format::StripeJson => {
            let doc: serde_json::Value =
                serde_json::from_str(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
            let members = doc
                .as_object()
                .ok_or_else(|| malformed("not a JSON object".into()))?;
            if members.is_empty() {
                return Err(malformed("an object without members".into()));
            }
            let mut all = Vec::new();
            for (name, value) in members {
                all.extend(
                    string_list(value).map_err(|why| malformed(format!("`{name}`: {why}")))?,
                );
            }
            all
        }
        Format::Lines => text
            .lines()
            .map(|raw| raw.split_once('#').map_or(raw, |(before, _)| before).trim())
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    let mut nets = Vec::with_capacity(texts.len());
    for entry in &texts {
        nets.push(parse_entry(entry).map_err(malformed)?);
    }
    nets.sort_unstable();
    nets.dedup();
    if nets.is_empty() {
        return Err(Refusal::Empty);
    }
    check_breadth(&nets)?;
    Ok(nets)
}

/// A JSON array of strings.
fn string_list(value: &serde_json::Value) -> Result<Vec<String>, String> {
    let items = value.as_array().ok_or("not a list")?;
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{item} is not a string"))
        })
        .collect()
}

/// Refuses a prefix shorter than [`MIN_V4_PREFIX`] or [`MIN_V6_PREFIX`]: a whole family
/// (`0.0.0.0/0`, `::/0`) and every other block no provider sends from.
pub fn check_breadth(nets: &[IpNet]) -> Result<(), Refusal> {
    for &net in nets {
        let min = match net {
            IpNet::V4(_) => MIN_V4_PREFIX,
            IpNet::V6(_) => MIN_V6_PREFIX,
        };
        if net.prefix_len() < min {
            return Err(Refusal::TooBroad { net, min });
        }
    }
    Ok(())
}

/// Refuses a list that lost more than `max_shrink` (a share, 0 to 1) of the `old` list's
/// prefixes. A list that grows or keeps its size always passes.
pub fn check_shrink(old: usize, new: usize, max_shrink: f64) -> Result<(), Refusal> {
    if new >= old {
        return Ok(());
    }
    // Counts are far below 2^52: exact as f64.
    #[allow(clippy::cast_precision_loss)]
    let lost = (old - new) as f64 / old as f64;
    if lost > max_shrink {
        Err(Refusal::Shrunk { old, new })
    } else {
        Ok(())
    }
}

/// The file name stem a list is kept under in the cache directory: `preset-NAME` for a preset,
/// `source-` and the start of the URL's SHA-256 for a source (a URL may be long, hold a key, or
/// characters a file name cannot).
pub fn cache_key(preset: Option<&str>, url: &str) -> String {
    match preset {
        Some(name) => format!("preset-{name}"),
        None => format!(
            "source-{}",
            &hex::encode(Sha256::digest(url.as_bytes()))[..16]
        ),
    }
}

/// A list read back from the cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The prefixes, as they were accepted.
    pub nets: Vec<IpNet>,
    /// When they were fetched.
    pub fetched_at: SystemTime,
}

const FETCHED_AT: &str = "# fetched-at: ";

fn cache_path(dir: &Path, key: &str, ext: &str) -> PathBuf {
    dir.join(format!("{key}.{ext}"))
}

/// Writes `text` to `path` readable by its owner only, through a temporary file and a rename,
/// so a reader (or a crash) never sees half of it.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Keeps `nets`, fetched from `label` at `fetched_at`, as the last good copy under `key`.
pub fn write_cache(
    dir: &Path,
    key: &str,
    label: &str,
    nets: &[IpNet],
    fetched_at: SystemTime,
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let secs = fetched_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut text = format!("# hookwall: the last good copy of {label}\n{FETCHED_AT}{secs}\n");
    for net in nets {
        text.push_str(&net.to_string());
        text.push('\n');
    }
    write_private(&cache_path(dir, key, "list"), &text)
}

/// The last good copy kept under `key`, if there is one. A copy that does not read back (edited
/// by hand, cut short) is an error, never half a list.
pub fn read_cache(dir: &Path, key: &str) -> Result<Option<Cached>, String> {
    let path = cache_path(dir, key, "list");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let secs = text
        .lines()
        .find_map(|line| line.strip_prefix(FETCHED_AT))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{} has no `{}` line", path.display(), FETCHED_AT.trim()))?;
    let nets = parse(Format::Lines, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(Cached {
        nets,
        fetched_at: UNIX_EPOCH + Duration::from_secs(secs),
    }))
}

/// Notes that a shrink of the list under `key` was refused, for `hookwall allow accept` to find.
pub fn mark_refused(dir: &Path, key: &str, label: &str, old: usize, new: usize) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    write_private(
        &cache_path(dir, key, "refused"),
        &format!("{label}\n{old} {new}\n"),
    )
}

/// Removes the note of a refused shrink (the list was accepted, or no longer shrinks).
pub fn clear_refused(dir: &Path, key: &str) {
    let _ = fs::remove_file(cache_path(dir, key, "refused"));
}

/// Whether the operator accepted the refused shrink of the list under `key`; the acceptance is
/// used up: the next refused shrink needs a new one.
pub fn take_acceptance(dir: &Path, key: &str) -> bool {
    fs::remove_file(cache_path(dir, key, "accept")).is_ok()
}

/// Whether an acceptance waits for the list under `key`.
pub fn acceptance_waits(dir: &Path, key: &str) -> bool {
    cache_path(dir, key, "accept").exists()
}

/// A refused shrink that `hookwall allow accept` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedShrink {
    /// The source: a preset's name or the URL without its query.
    pub label: String,
    /// Prefixes in force.
    pub old: usize,
    /// Prefixes in the refused list.
    pub new: usize,
}

/// Accepts every refused shrink noted in `dir` (only that of source `only`, if given): the next
/// fetch of each lets the shrunken list through. Returns what it accepted.
pub fn accept_refused(dir: &Path, only: Option<&str>) -> io::Result<Vec<RefusedShrink>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut accepted = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "refused") {
            continue;
        }
        let text = fs::read_to_string(&path)?;
        let mut lines = text.lines();
        let label = lines.next().unwrap_or_default().to_owned();
        let mut counts = lines.next().unwrap_or_default().split(' ');
        let mut count = || counts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let (old, new) = (count(), count());
        if only.is_some_and(|only| only != label) {
            continue;
        }
        write_private(&path.with_extension("accept"), "accepted\n")?;
        accepted.push(RefusedShrink { label, old, new });
    }
    accepted.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(nets: &[IpNet]) -> Vec<String> {
        nets.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn github_meta_reads_the_hooks_member_of_both_families() {
        let doc = r#"{"verifiable_password_authentication": false,
            "hooks": ["192.30.252.0/22", "2a0a:a440::/29", "140.82.112.0/20"],
            "web": ["20.201.28.151/32"]}"#;
        let nets = parse(Format::GithubMeta, doc).unwrap();
        assert_eq!(
            texts(&nets),
            ["140.82.112.0/20", "192.30.252.0/22", "2a0a:a440::/29"]
        );
    }

    #[test]
    fn stripe_json_reads_every_member_list() {
        let doc = r#"{"WEBHOOKS": ["3.18.12.63", "3.130.192.231", "3.18.12.63"]}"#;
        let nets = parse(Format::StripeJson, doc).unwrap();
        assert_eq!(texts(&nets), ["3.18.12.63/32", "3.130.192.231/32"]);
    }

    #[test]
    fn lines_reads_addresses_and_comments() {
        let doc = "# partner\n203.0.113.0/24  # office\n\n2001:db8::/48\n198.51.100.7\n";
        let nets = parse(Format::Lines, doc).unwrap();
        assert_eq!(
            texts(&nets),
            ["198.51.100.7/32", "203.0.113.0/24", "2001:db8::/48"]
        );
    }

    #[test]
    fn empty_lists_are_refused_in_every_format() {
        assert_eq!(
            parse(Format::GithubMeta, r#"{"hooks": []}"#),
            Err(Refusal::Empty)
        );
        assert_eq!(
            parse(Format::StripeJson, r#"{"WEBHOOKS": []}"#),
            Err(Refusal::Empty)
        );
        assert_eq!(parse(Format::Lines, "# nothing\n\n"), Err(Refusal::Empty));
        assert_eq!(parse(Format::Lines, ""), Err(Refusal::Empty));
    }

    #[test]
    fn a_whole_family_is_refused() {
        for (format, doc) in [
            (
                Format::GithubMeta,
                r#"{"hooks": ["192.30.252.0/22", "0.0.0.0/0"]}"#,
            ),
            (Format::StripeJson, r#"{"WEBHOOKS": ["::/0"]}"#),
            (Format::Lines, "203.0.113.0/24\n0.0.0.0/0\n"),
        ] {
            let err = parse(format, doc).unwrap_err();
            assert!(matches!(err, Refusal::TooBroad { .. }), "{format:?}: {err}");
            assert_eq!(err.result_label(), "invalid");
        }
    }

    #[test]
    fn prefixes_wider_than_the_bounds_are_refused_and_the_bounds_pass() {
        for wide in [
            "10.0.0.0/7",
            "0.0.0.0/1",
            "128.0.0.0/4",
            "2000::/3",
            "2000::/15",
        ] {
            let err = parse(Format::Lines, wide).unwrap_err();
            assert!(matches!(err, Refusal::TooBroad { .. }), "{wide}: {err:?}");
            assert!(err.to_string().starts_with(wide), "{err}");
        }
        for bound in ["10.0.0.0/8", "2001::/16"] {
            assert!(parse(Format::Lines, bound).is_ok(), "{bound}");
        }
    }

    #[test]
    fn malformed_documents_are_refused_whole() {
        let cases = [
            (Format::GithubMeta, "not json"),
            (Format::GithubMeta, r#"{"web": ["192.30.252.0/22"]}"#),
            (Format::GithubMeta, r#"{"hooks": "192.30.252.0/22"}"#),
            (Format::GithubMeta, r#"{"hooks": ["192.30.252.0/22", 7]}"#),
            (
                Format::GithubMeta,
                r#"{"hooks": ["192.30.252.0/22", "example.com"]}"#,
            ),
            (Format::StripeJson, r#"["3.18.12.63"]"#),
            (Format::StripeJson, "{}"),
            (
                Format::StripeJson,
                r#"{"WEBHOOKS": ["3.18.12.63"], "X": "y"}"#,
            ),
            (Format::StripeJson, r#"{"WEBHOOKS": ["3.18.12.999"]}"#),
            (Format::Lines, "203.0.113.0/24\n<html>\n"),
            (Format::Lines, "203.0.113.5/24\n"),
        ];
        for (format, doc) in cases {
            match parse(format, doc) {
                Err(err @ Refusal::Malformed { .. }) => {
                    assert!(err.to_string().contains(format.as_str()), "{err}");
                }
                other => panic!("{format:?} {doc:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_shrink_beyond_the_share_is_refused() {
        assert_eq!(check_shrink(10, 5, 0.5), Ok(()));
        assert_eq!(
            check_shrink(10, 4, 0.5),
            Err(Refusal::Shrunk { old: 10, new: 4 })
        );
        assert_eq!(check_shrink(10, 12, 0.0), Ok(()));
        assert_eq!(
            check_shrink(10, 9, 0.0),
            Err(Refusal::Shrunk { old: 10, new: 9 })
        );
        assert_eq!(check_shrink(10, 1, 1.0), Ok(()));
        assert_eq!(check_shrink(0, 1, 0.5), Ok(()));
        assert_eq!(
            Refusal::Shrunk { old: 2, new: 1 }.result_label(),
            "shrink_refused"
        );
    }

    #[test]
    fn the_cache_keeps_a_list_privately_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("allow-sources");
        let key = cache_key(None, "https://example.com/list?key=secret");
        assert!(key.starts_with("source-") && key.len() == 23, "{key}");
        assert_eq!(cache_key(Some("github-hooks"), "x"), "preset-github-hooks");
        assert_eq!(read_cache(&cache, &key), Ok(None));

        let nets = parse(Format::Lines, "203.0.113.0/24\n2001:db8::/48\n").unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        write_cache(&cache, &key, "https://example.com/list?…", &nets, at).unwrap();
        let back = read_cache(&cache, &key).unwrap().unwrap();
        assert_eq!(
            back,
            Cached {
                nets,
                fetched_at: at
            }
        );
        let mode = fs::metadata(cache.join(format!("{key}.list")))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        fs::write(cache.join(format!("{key}.list")), "203.0.113.0/24\n").unwrap();
        assert!(read_cache(&cache, &key).unwrap_err().contains("fetched-at"));
    }

    #[test]
    fn accept_turns_refused_notes_into_acceptances_used_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(accept_refused(&d.join("missing"), None).unwrap(), []);
        mark_refused(d, "preset-github-hooks", "github-hooks", 9, 2).unwrap();
        mark_refused(d, "source-abc", "http://192.0.2.1/list", 4, 1).unwrap();
        let only = accept_refused(d, Some("github-hooks")).unwrap();
        assert_eq!(
            only,
            [RefusedShrink {
                label: "github-hooks".into(),
                old: 9,
                new: 2
            }]
        );
        assert!(acceptance_waits(d, "preset-github-hooks"));
        assert!(!acceptance_waits(d, "source-abc"));
        assert!(take_acceptance(d, "preset-github-hooks"));
        assert!(!take_acceptance(d, "preset-github-hooks"), "used once");
        clear_refused(d, "preset-github-hooks");
        let all = accept_refused(d, None).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].label, "http://192.0.2.1/list");
    }
}
