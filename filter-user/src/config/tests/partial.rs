//! Reading one section (`config::partial`): `[store]` for `hookwall queue`, `filter.pin_path` for
//! `hookwall status` and `hookwall detach`.

use super::*;

/// Valid `[store]` and `[filter]`, and around them everything the full load refuses: an
/// interface this host does not have, a route with an unknown verifier and no token, an address
/// that is none, a user that does not exist and an unknown key in another section.
const ELSEWHERE_BROKEN: &[&str] = &[
    "[filter]",                                // 1
    "interfaces = [\"hw-nowhere0\"]",          // 2
    "mode = \"enforce\"",                      // 3
    "pin_path = \"/sys/fs/bpf/hw-elsewhere\"", // 4
    "",                                        // 5
    "[store]",                                 // 6
    "path = \"/srv/hookwall/events.db\"",      // 7
    "retention = \"7d\"",                      // 8
    "",                                        // 9
    "[server]",                                // 10
    "listen = \"not an address\"",             // 11
    "no_such_key = true",                      // 12
    "",                                        // 13
    "[[route]]",                               // 14
    "path = \"/mpesa/c2b/confirmation\"",      // 15
    "verify = \"no-such-verifier\"",           // 16
    "",                                        // 17
    "[daemon]",                                // 18
    "run_as = \"no-such-user\"",               // 19
];

fn elsewhere_broken_with(replace: &[(usize, &str)]) -> String {
    let mut text = ELSEWHERE_BROKEN.to_vec();
    for &(line, with) in replace {
        text[line - 1] = with;
    }
    lines(&text)
}

fn store_errors(text: &str) -> Vec<ConfigError> {
    match parse_store(Path::new(FILE), text) {
        Ok(store) => panic!("expected errors, got {store:#?}"),
        Err(errors) => errors.0,
    }
}

fn pin_path_errors(text: &str) -> Vec<ConfigError> {
    match parse_pin_path(Path::new(FILE), text) {
        Ok(path) => panic!("expected errors, got {}", path.display()),
        Err(errors) => errors.0,
    }
}

/// The one error in `errors`, which must be at `key` on `line`.
fn only_error(errors: Vec<ConfigError>, key: &str, line: usize) -> ConfigError {
    assert_eq!(errors.len(), 1, "one error expected: {errors:#?}");
    let error = errors.into_iter().next().expect("one error");
    assert_eq!(error.file, Path::new(FILE), "{error}");
    assert_eq!(error.key.as_deref(), Some(key), "{error}");
    assert_eq!(error.line, Some(line), "{error}");
    error
}

#[test]
fn store_and_pin_path_are_read_whatever_the_other_sections_and_the_host_say() {
    let text = lines(ELSEWHERE_BROKEN);
    // The full load refuses it, the missing interface among its reasons.
    let full = parse_err_with(&text, &host());
    let keys: Vec<_> = full.iter().filter_map(|e| e.key.as_deref()).collect();
    for key in [
        "filter.interfaces[0]",
        "server.listen",
        "server.no_such_key",
        "route[0].verify",
        "daemon.run_as",
    ] {
        assert!(keys.contains(&key), "full load misses {key}: {keys:?}");
    }

    // `NoHost` panics if asked anything: these loads read nothing of the machine.
    let store = parse_store(Path::new(FILE), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store,
        StoreConfig {
            path: "/srv/hookwall/events.db".into(),
            retention: Duration::from_secs(7 * 24 * 3600),
            dedupe_window: Duration::from_secs(90 * 24 * 3600),
        }
    );
    let pins = parse_pin_path(Path::new(FILE), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pins, Path::new("/sys/fs/bpf/hw-elsewhere"));
}

#[test]
fn errors_in_the_section_read_are_reported_with_their_line() {
    let text = elsewhere_broken_with(&[(7, "path = \"\"")]);
    let error = only_error(store_errors(&text), "store.path", 7);
    assert_contains(&error, "the store needs a file path");

    let text = elsewhere_broken_with(&[(8, "retention = \"5m\"")]);
    let error = only_error(store_errors(&text), "store.retention", 8);
    assert_contains(&error, "out of range: use at least 1h");

    let text = elsewhere_broken_with(&[(8, "retention = 30")]);
    let error = only_error(store_errors(&text), "store.retention", 8);
    assert_contains(&error, "has no unit");

    // serde's own type error, in the section read, stops the load there as in the full one.
    let text = elsewhere_broken_with(&[(7, "path = 5")]);
    let error = only_error(store_errors(&text), "store.path", 7);
    assert_contains(&error, "fix the value's type");

    let text = elsewhere_broken_with(&[(4, "pin_path = \"hw-pins\"")]);
    let error = only_error(pin_path_errors(&text), "filter.pin_path", 4);
    assert_contains(&error, "is relative");

    // Each reader reports its own section's errors only.
    let text = elsewhere_broken_with(&[(4, "pin_path = \"hw-pins\""), (7, "path = \"\"")]);
    only_error(store_errors(&text), "store.path", 7);
    only_error(pin_path_errors(&text), "filter.pin_path", 4);
}

#[test]
fn a_misspelt_key_of_the_section_read_is_reported_not_defaulted() {
    // Read as absent, it would send `hookwall queue` to the default store.
    let text = elsewhere_broken_with(&[(8, "retension = \"7d\"")]);
    let error = only_error(store_errors(&text), "store.retension", 8);
    assert_contains(&error, "did you mean `retention`?");

    // Read as absent, it would send `hookwall detach` to the default pins: another filter's.
    let text = elsewhere_broken_with(&[(4, "pin_pat = \"/sys/fs/bpf/hw-elsewhere\"")]);
    let error = only_error(pin_path_errors(&text), "filter.pin_pat", 4);
    assert_contains(&error, "did you mean `pin_path`?");

    // A misspelt section, and a key of the section written outside it, are meant for it too.
    let text = elsewhere_broken_with(&[(6, "[stor]")]);
    let error = only_error(store_errors(&text), "stor", 6);
    assert_contains(&error, "did you mean `store`?");
    let mut moved = vec!["pin_path = \"/sys/fs/bpf/hw-elsewhere\""];
    moved.extend(
        ELSEWHERE_BROKEN
            .iter()
            .filter(|l| !l.starts_with("pin_path"))
            .copied(),
    );
    let text = lines(&moved);
    let error = only_error(pin_path_errors(&text), "pin_path", 1);
    assert_contains(&error, "did you mean `filter.pin_path`?");
    // ... but not for the reader of another section.
    assert!(parse_store(Path::new(FILE), &text).is_ok());

    // Unknown keys in the other sections are not the reader's business.
    let text = elsewhere_broken_with(&[(12, "retension = \"7d\""), (19, "pin_path = 1")]);
    assert!(parse_store(Path::new(FILE), &text).is_ok());
    assert!(parse_pin_path(Path::new(FILE), &text).is_ok());
}

#[test]
fn a_toml_syntax_error_anywhere_is_still_reported() {
    let text = elsewhere_broken_with(&[(16, "verify = ")]);
    let errors = store_errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!((errors[0].key.as_deref(), errors[0].line), (None, Some(16)));
    assert_contains(&errors[0], "fix the TOML syntax");
}

#[test]
fn the_partial_loads_give_what_the_full_load_gives() {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("hookwall.dev.toml");
    let set = lines(&[
        "[filter]",
        "pin_path = \"/sys/fs/bpf/hw-set\"",
        "[store]",
        "path = \"relative/events.db\"",
        "retention = \"60d\"",
    ]);
    let windowed = lines(&["[store]", "retention = \"2d\"", "dedupe_window = \"3d\""]);
    let configs: [(&Path, &str); 5] = [
        (Path::new(FILE), ""),
        (Path::new(FILE), BASE_EXAMPLE),
        (&dev, include_str!("../../../hookwall.dev.toml")),
        (Path::new("etc/relative.toml"), &set),
        (Path::new(FILE), &windowed),
    ];
    for (path, text) in configs {
        let full = parse_with(path, text, &host()).unwrap_or_else(|e| panic!("{e}"));
        let store = parse_store(path, text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store, full.store, "{}: {text}", path.display());
        let pins = parse_pin_path(path, text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pins, full.filter.pin_path, "{}: {text}", path.display());
    }
    // The defaults, spelt out once more: the empty file's store and pins.
    let store = parse_store(Path::new(FILE), "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.path, Path::new("/var/lib/hookwall/events.db"));
    assert_eq!(store.retention, DEFAULT_RETENTION);
    assert_eq!(store.dedupe_window, Duration::from_secs(90 * 24 * 3600));
    assert_eq!(
        parse_pin_path(Path::new(FILE), "").unwrap_or_else(|e| panic!("{e}")),
        Path::new(DEFAULT_PIN_PATH)
    );
}

#[test]
fn load_store_and_load_pin_path_read_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hookwall.toml");
    std::fs::write(&path, lines(ELSEWHERE_BROKEN)).expect("write");
    let store = load_store(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.path, Path::new("/srv/hookwall/events.db"));
    let pins = load_pin_path(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pins, Path::new("/sys/fs/bpf/hw-elsewhere"));

    let missing = dir.path().join("absent.toml");
    let errors = load_store(&missing).expect_err("no file").0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, missing);
    assert_contains(&errors[0], "cannot read the config file");
    assert!(load_pin_path(&missing).is_err());
}
