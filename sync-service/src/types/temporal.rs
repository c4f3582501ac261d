//! Dates, times and timestamps.

use bson::DateTime;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Debezium's PostgreSQL date `infinity` / `-infinity`: PostgreSQL's `DATEVAL_NOEND` /
/// `DATEVAL_NOBEGIN` (`i32::MAX` / `i32::MIN` days since 2000-01-01) shifted to 1970 in 32-bit
/// arithmetic, which wraps: both land near -2^31 (a year around -5.88 million if read as days).
const DATE_POSITIVE_INFINITY_DAYS: i64 = -2_147_472_692;
const DATE_NEGATIVE_INFINITY_DAYS: i64 = -2_147_472_691;
/// PostgreSQL's date range in days since 1970: 4714-11-24 BC to 5874897-12-31.
const DATE_MIN_DAYS: i64 = -2_440_588;
const DATE_MAX_DAYS: i64 = 2_145_042_905;

/// Days since 1970-01-01 to a BSON date at midnight UTC; Debezium's ±infinity become the
/// BSON date's max/min (like timestamps); `None` for a day count PostgreSQL cannot hold.
pub(crate) fn date_from_days(days: i64) -> Option<DateTime> {
    match days {
        DATE_POSITIVE_INFINITY_DAYS => Some(DateTime::MAX),
        DATE_NEGATIVE_INFINITY_DAYS => Some(DateTime::MIN),
        DATE_MIN_DAYS..=DATE_MAX_DAYS => Some(DateTime::from_millis(days * 86_400_000)),
        _ => None,
    }
}

/// Debezium's PostgreSQL `infinity` / `-infinity` timestamps, in microseconds
/// (`PostgresValueConverter`): values at or beyond these saturate to the BSON date's max/min.
const POSITIVE_INFINITY_MICROS: i64 = 9_223_372_036_825_200_000;
const NEGATIVE_INFINITY_MICROS: i64 = -9_223_372_036_832_400_000;

/// Milliseconds since the epoch to a BSON date (±infinity saturate).
pub(crate) fn timestamp_from_millis(ms: i64) -> DateTime {
    if ms >= POSITIVE_INFINITY_MICROS / 1000 {
        DateTime::MAX
    } else if ms <= NEGATIVE_INFINITY_MICROS / 1000 {
        DateTime::MIN
    } else {
        DateTime::from_millis(ms)
    }
}

/// Microseconds since the epoch to a BSON date, truncated (floored) to milliseconds;
/// Debezium's ±infinity become the BSON date's max/min.
pub(crate) fn timestamp_from_micros(us: i64) -> DateTime {
    if us >= POSITIVE_INFINITY_MICROS {
        DateTime::MAX
    } else if us <= NEGATIVE_INFINITY_MICROS {
        DateTime::MIN
    } else {
        DateTime::from_millis(us.div_euclid(1000))
    }
}

/// Nanoseconds since the epoch to a BSON date, floored to milliseconds.
pub(crate) fn timestamp_from_nanos(ns: i64) -> DateTime {
    match ns {
        i64::MAX => DateTime::MAX,
        i64::MIN => DateTime::MIN,
        ns => DateTime::from_millis(ns.div_euclid(1_000_000)),
    }
}

/// An ISO-8601 timestamp with offset (`io.debezium.time.ZonedTimestamp`) to microseconds
/// since the epoch; `infinity` / `-infinity` to `i64::MAX` / `i64::MIN`.
pub(crate) fn parse_zoned_timestamp_micros(text: &str) -> Option<i64> {
    match text {
        "infinity" | "+infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Microseconds since midnight as `HH:MM:SS.ffffff` (always six fraction digits, so the
/// strings sort like the times; `24:00:00.000000` is PostgreSQL's end of day).
pub(crate) fn time_of_day(us: i64) -> Option<String> {
    if !(0..=MICROS_PER_DAY).contains(&us) {
        return None;
    }
    let secs = us / 1_000_000;
    Some(format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        us % 1_000_000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates() {
        assert_eq!(time_of_day(0).unwrap(), "00:00:00.000000");
        assert_eq!(time_of_day(52_215_123_456).unwrap(), "14:30:15.123456");
        assert_eq!(time_of_day(MICROS_PER_DAY).unwrap(), "24:00:00.000000");
        assert!(time_of_day(-1).is_none());
        assert_eq!(date_from_days(-1).unwrap().timestamp_millis(), -86_400_000);
        assert_eq!(timestamp_from_micros(-1).timestamp_millis(), -1);
        assert_eq!(timestamp_from_micros(1_999).timestamp_millis(), 1);
        assert_eq!(timestamp_from_nanos(-1).timestamp_millis(), -1);
        assert_eq!(
            timestamp_from_micros(9_223_372_036_825_200_000),
            DateTime::MAX
        );
        assert_eq!(timestamp_from_millis(-9_223_372_036_832_400), DateTime::MIN);
        assert_eq!(
            parse_zoned_timestamp_micros("1970-01-01T00:00:01.000002Z"),
            Some(1_000_002)
        );
        assert_eq!(
            parse_zoned_timestamp_micros("1970-01-01T01:00:00+01:00"),
            Some(0)
        );
        assert_eq!(parse_zoned_timestamp_micros("-infinity"), Some(i64::MIN));
        assert!(parse_zoned_timestamp_micros("yesterday").is_none());
    }
}
