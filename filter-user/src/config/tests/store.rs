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
