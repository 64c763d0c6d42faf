//! Wall-clock times as text: RFC 3339 in UTC, to the second.
//!
//! `humantime`'s formatter panics for a time before 1970 and fails for one after 9999, and a
//! time that reaches a client may come from a clock set wrong or from an older daemon that
//! believed a server's `expires_in`. These functions never fail: a time outside what RFC 3339
//! can write is shown as the nearest time it can.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1970 to the last second RFC 3339 can write, 9999-12-31T23:59:59Z.
const LATEST_SECS: u64 = 253_402_300_799;

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(LATEST_SECS)
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`, clamped to 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
pub fn rfc3339(t: SystemTime) -> String {
    let t = t.clamp(UNIX_EPOCH, latest());
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_rfc3339_can_write_are_written_as_they_are() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(latest()), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn times_outside_its_range_are_clamped_not_a_panic() {
        assert_eq!(rfc3339(latest() + Duration::from_secs(1)), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(10)), "1970-01-01T00:00:00Z");
    }
}
