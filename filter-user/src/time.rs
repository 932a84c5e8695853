//! Time as people read it: the one format the audit log, `hookwall queue` and the JSON outputs
//! share.

use std::time::SystemTime;

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-08-18T09:30:00.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_614_265_330_123);
        assert_eq!(rfc3339(t), "2021-02-25T15:02:10.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }
}
