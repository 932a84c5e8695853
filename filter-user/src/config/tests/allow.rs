//! `[allow]`: the allowlist the config builds, and its files.

use super::*;

#[test]
fn cidr_entries_record_their_line() {
    let config = parse_ok(&lines(&[
        "[allow]",
        "presets = []",
        "cidrs = [",
        "  \"198.51.100.7\",",
        "  \"::1\",",
        "]",
    ]));
    let sources: Vec<_> = config
        .allowlist
        .entries
        .iter()
        .map(|e| e.source.clone())
        .collect();
    assert_eq!(
        sources,
        [Source::Config { line: 4 }, Source::Config { line: 5 }]
    );
}

#[test]
fn presets_combine() {
    let config = parse_ok(&lines(&[
        "[allow]",
        "presets = [\"mpesa\", \"mpesa-extra\"]",
    ]));
    assert_eq!(config.allowlist.entries.len(), 14);
    assert!(config.allowlist.contains(ip("196.201.212.132")));
}

#[test]
fn an_empty_allowlist_is_fine_in_monitor_mode() {
    // Monitor mode drops nothing; the table's enforce-mode row is refused.
    let config = parse_ok(&lines(&[
        "[filter]",
        "mode = \"monitor\"",
        "[allow]",
        "presets = []",
    ]));
    assert!(config.allowlist.is_empty());
}

#[test]
fn allow_files_resolve_beside_the_config_and_report_their_own_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.txt"), "# partners\n198.51.100.0/24\n").unwrap();
    std::fs::write(
        dir.path().join("bad.txt"),
        "198.51.100.9\n\nnonsense # typo\n",
    )
    .unwrap();
    let config_path = dir.path().join("hookwall.toml");

    let text = lines(&["[allow]", "files = [\"good.txt\"]"]);
    let config = parse_with(&config_path, &text, &host()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.allow.files, [dir.path().join("good.txt")]);
    let last = config.allowlist.entries.last().unwrap();
    assert_eq!(
        last.source,
        Source::File {
            path: std::sync::Arc::from(dir.path().join("good.txt").as_path()),
            line: 2
        }
    );

    let text = lines(&[
        "[allow]",
        "files = [\"good.txt\", \"bad.txt\", \"missing.txt\"]",
    ]);
    let errors = parse_with(&config_path, &text, &host()).unwrap_err().0;
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    // The config file's own errors come first.
    assert_eq!(errors[0].file, config_path);
    assert_eq!(errors[0].key.as_deref(), Some("allow.files[2]"));
    assert_eq!(errors[0].line, Some(2));
    assert!(
        errors[0]
            .message
            .contains(&*dir.path().join("missing.txt").to_string_lossy())
    );
    assert_eq!(errors[1].file, dir.path().join("bad.txt"));
    assert_eq!(errors[1].line, Some(3));
    assert_eq!(errors[1].key.as_deref(), Some("allow.files[1]"));
    assert!(errors[1].message.contains("`nonsense`"), "{}", errors[1]);
}

/// `n` IPv6 /25s, none adjacent to another (so none merge), one per line.
fn slash_25s(n: u32) -> String {
    (0..n)
        .map(|i| {
            let top = 0x2000_0000u32 + (i << 8);
            format!("{}/25\n", std::net::Ipv6Addr::from(u128::from(top) << 96))
        })
        .collect()
}

#[test]
fn many_long_ipv6_prefixes_load_whatever_the_slash_32s_they_touch() {
    // 4096 /25s touch 524,288 /32s: the narrow bitmap has no limit on them (the hash it
    // replaced refused more than 262,144).
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("hookwall.toml");
    let text = lines(&["[allow]", "files = [\"long.txt\"]"]);
    std::fs::write(dir.path().join("long.txt"), slash_25s(4096)).unwrap();
    let config = parse_with(&config_path, &text, &host()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.allowlist.v6.len(), 4096);
}
