//! Wall-clock helpers: Unix seconds and RFC 3339 (UTC, whole seconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// RFC 3339 in UTC, e.g. `2026-11-23T17:42:28Z`; a later time (a file's planted mtime) as
/// the last second it can write.
pub fn rfc3339(unix: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(unix.min(LAST_RFC3339_SECOND));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Parse what [`rfc3339`] writes, and only that (no fractions, no offsets).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    if s.len() != "2026-11-23T17:42:28Z".len() {
        return None;
    }
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for (unix, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_455_748, "2026-11-23T17:42:28Z"),
        ] {
            assert_eq!(rfc3339(unix), text);
            assert_eq!(parse_rfc3339(text), Some(unix));
        }
        for bad in
            ["", "2026-13-01T00:00:00Z", "2026-11-23 17:42:28Z", "2026-11-23T17:42:28+01:00", "2026-11-23T17:42:28.5Z"]
        {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_second_we_write_reads_back() {
        for i in 0..20_000u64 {
            let unix = i.wrapping_mul(2_654_435_761) % (LAST_RFC3339_SECOND + 1);
            let text = rfc3339(unix);
            assert_eq!(text.len(), 20, "{text}");
            assert_eq!(parse_rfc3339(&text), Some(unix), "{text}");
        }
    }

    #[test]
    fn times_past_year_9999_are_written_as_its_last_second() {
        assert_eq!(rfc3339(LAST_RFC3339_SECOND), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(300_000_000_000), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }
}
