//! UTC timestamps as text, for the two formats the workspace writes: the extended ISO 8601 with
//! milliseconds that Infisical sends (JavaScript's `toISOString`) and the basic form SigV4 signs.
//! The calendar arithmetic is the `jiff` crate's.

use jiff::civil::{DateTime, date};
use jiff::tz::Offset;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds, e.g. `2026-11-22T09:57:41.073Z`.
pub fn iso8601_millis(unix_ms: i64) -> String {
    let t = utc(unix_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `YYYYMMDDTHHMMSSZ` (ISO 8601 basic format, SigV4's `x-amz-date`) for Unix seconds.
pub fn iso8601_basic(unix_secs: i64) -> String {
    let t = utc(unix_secs.saturating_mul(1000));
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The instant in UTC, clamped to the years 0000 to 9999 (what four digits can show).
fn utc(unix_ms: i64) -> DateTime {
    let min = date(0, 1, 1).at(0, 0, 0, 0);
    let max = date(9999, 12, 31).at(23, 59, 59, 999_000_000);
    match jiff::Timestamp::from_millisecond(unix_ms) {
        Ok(t) => Offset::UTC.to_datetime(t).clamp(min, max),
        Err(_) if unix_ms < 0 => min,
        Err(_) => max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(iso8601_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_millis(1_767_225_600_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(iso8601_millis(1_795_341_461_073), "2026-11-22T09:57:41.073Z");
        assert_eq!(iso8601_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_millis(-1), "1969-12-31T23:59:59.999Z");
        // The SigV4 test suite's date, and the AWS documentation example.
        assert_eq!(iso8601_basic(1_440_938_160), "20150830T123600Z");
        assert_eq!(iso8601_basic(1_369_353_600), "20130524T000000Z");
    }

    #[test]
    fn out_of_range_instants_are_clamped_not_a_panic() {
        assert_eq!(iso8601_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso8601_millis(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(iso8601_basic(i64::MAX), "99991231T235959Z");
        assert_eq!(iso8601_basic(i64::MIN), "00000101T000000Z");
    }
}
