//! `[store]`: configs it accepts.

use super::*;

#[test]
fn store_retention_is_read_as_a_duration() {
    let config = parse_ok(&lines(&["[store]", "retention = \"7d\""]));
    assert_eq!(config.store.retention, Duration::from_secs(7 * 24 * 3600));
    let config = parse_ok(&lines(&["[store]", "retention = \"36h 30m\""]));
    assert_eq!(
        config.store.retention,
        Duration::from_secs(36 * 3600 + 1800)
    );
}

const DAY: u64 = 24 * 3600;

#[test]
fn store_dedupe_window_defaults_to_90_days_or_twice_a_longer_retention() {
    let config = parse_ok(&lines(&["[store]", "retention = \"7d\""]));
    assert_eq!(config.store.dedupe_window, Duration::from_secs(90 * DAY));
    let config = parse_ok(&lines(&["[store]", "retention = \"60d\""]));
    assert_eq!(config.store.dedupe_window, Duration::from_secs(120 * DAY));
    let config = parse_ok(&lines(&[
        "[store]",
        "retention = \"60d\"",
        "dedupe_window = \"61d\"",
    ]));
    assert_eq!(config.store.dedupe_window, Duration::from_secs(61 * DAY));
}

#[test]
fn store_retention_just_over_twice_the_longest_tolerance_is_accepted() {
    // 2 x 1800 s is 1h: one second more passes.
    let config = parse_ok(&lines(&[
        "[store]",
        "retention = \"1h 1s\"",
        "[[route]]",
        "path = \"/s\"",
        "verify = \"stripe\"",
        "secrets = [{ env = \"S\" }]",
        "tolerance_seconds = 1800",
        // Kinds without a signed timestamp have no tolerance to outlast.
        "[[route]]",
        "path = \"/g\"",
        "verify = \"github\"",
        "secrets = [{ env = \"G\" }]",
    ]));
    assert_eq!(config.store.retention, Duration::from_secs(3601));
}
