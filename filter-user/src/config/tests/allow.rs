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

#[test]
fn sources_and_refresh_settings_resolve_with_their_defaults() {
    let config = parse_ok("");
    assert!(config.allow.sources.is_empty());
    assert_eq!(config.allow.presets_refresh, None);
    assert_eq!(config.allow.max_shrink_permille, 500);
    assert!(config.allow.warn_missing_provider);
    assert_eq!(
        config
            .allow
            .cache_dir(Path::new("/var/lib/hookwall/events.db")),
        Path::new("/var/lib/hookwall/allow-sources")
    );

    let config = parse_ok(&lines(&[
        "[allow]",
        "presets = [\"github-hooks\"]",
        "presets_refresh = true",
        "presets_refresh_interval = \"2h\"",
        "max_shrink = 0.2",
        "cache_dir = \"cache\"",
        "warn_missing_provider = false",
        "sources = [",
        "  { url = \"https://api.github.com/meta\", format = \"github-meta\" },",
        "  { url = \"http://192.0.2.7/list.txt\", format = \"lines\", refresh = \"1s\" },",
        "]",
    ]));
    let allow = &config.allow;
    assert_eq!(allow.presets_refresh, Some(Duration::from_secs(7200)));
    assert_eq!(allow.max_shrink_permille, 200);
    assert!((allow.max_shrink() - 0.2).abs() < 1e-9);
    assert!(!allow.warn_missing_provider);
    assert_eq!(
        allow.cache_dir(Path::new("/x/events.db")),
        Path::new(FILE).parent().unwrap().join("cache")
    );
    let sources: Vec<(&str, &str, u64)> = allow
        .sources
        .iter()
        .map(|s| (s.url.as_str(), s.format.as_str(), s.refresh.as_secs()))
        .collect();
    assert_eq!(
        sources,
        [
            ("https://api.github.com/meta", "github-meta", 6 * 3600),
            ("http://192.0.2.7/list.txt", "lines", 1),
        ]
    );
    // The snapshot is what check shows: sources are fetched by the daemon only.
    assert_eq!(config.allowlist.entries.len(), 9);
}

#[test]
fn a_source_alone_is_an_allowlist_in_enforce_mode() {
    let config = parse_ok(&lines(&[
        "[allow]",
        "presets = []",
        "sources = [{ url = \"https://stripe.com/files/ips/ips_webhooks.json\", format = \"stripe-json\" }]",
    ]));
    assert!(config.allowlist.is_empty());
    assert_eq!(config.allow.sources.len(), 1);
}

#[test]
fn bad_sources_and_settings_are_errors_with_their_line() {
    let errors = parse_err_with(
        &lines(&[
            "[allow]",
            "max_shrink = 1.5",
            "presets_refresh = true",
            "presets_refresh_interval = \"500ms\"",
            "sources = [",
            "  { format = \"lines\" },",
            "  { url = \"ftp://192.0.2.7/list\", format = \"lines\" },",
            "  { url = \"https://192.0.2.7/a\", format = \"csv\" },",
            "  { url = \"https://192.0.2.7/b\" },",
            "  { url = \"https://192.0.2.7/b\", format = \"lines\", refresh = \"8d\" },",
            "  { url = \"https://user:pw@192.0.2.7/c\", format = \"lines\" },",
            "  { url = \"https://192.0.2.7/d\", format = \"lines\", every = \"1h\" },",
            "]",
        ]),
        &host(),
    );
    let find = |key: &str| {
        errors
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no error for {key}: {errors:#?}"))
    };
    let e = find("allow.max_shrink");
    assert_eq!(e.line, Some(2));
    assert_contains(e, "from 0 (none) to 1");
    assert_contains(find("allow.presets_refresh_interval"), "use 1s to 7days");
    assert_contains(find("allow.sources[0]"), "a source needs a url");
    assert_contains(find("allow.sources[1].url"), "only http and https");
    let e = find("allow.sources[2].format");
    assert_eq!(e.line, Some(8));
    assert_contains(e, "github-meta");
    assert_contains(find("allow.sources[3]"), "a source needs a format");
    let e = find("allow.sources[4].url");
    assert_contains(e, "listed twice");
    assert_contains(find("allow.sources[4].refresh"), "use 1s to 7days");
    let e = find("allow.sources[5].url");
    assert_contains(e, "credentials");
    assert!(!e.message.contains("pw@"), "{}", e.message);
    assert_contains(find("allow.sources[6].every"), "unknown key");
}
