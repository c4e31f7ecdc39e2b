//! UTC timestamps in RFC 3339 form, for log lines, the status file and the API.
//!
//! glint carries no date crate: formatting a `SystemTime` as UTC needs only the civil-from-days
//! conversion below (Howard Hinnant's algorithm), and nothing here parses dates.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats `time` as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (microseconds), for logs.
pub fn rfc3339_micros(time: SystemTime) -> String {
    let mut text = String::with_capacity(27);
    write_rfc3339_micros(&mut text, time);
    text
}

/// Appends [`rfc3339_micros`]'s form of `time` to `out`, without allocating (each log line
/// starts with one).
pub fn write_rfc3339_micros(out: &mut String, time: SystemTime) {
    use std::fmt::Write as _;
    let (secs, micros) = split(time);
    let [year, month, day, hour, minute, second] = fields(secs);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
    );
}

/// Formats `time` as `YYYY-MM-DDTHH:MM:SSZ`, the form Glance uses in its API and we use in the
/// status file.
pub fn rfc3339_seconds(time: SystemTime) -> String {
    let (secs, _) = split(time);
    let (date, clock) = civil(secs);
    format!("{date}T{clock}Z")
}

/// Seconds since the epoch and the microseconds within that second; times before the epoch
/// (a badly set clock) are shown as the epoch rather than failing.
fn split(time: SystemTime) -> (i64, u32) {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => (since.as_secs() as i64, since.subsec_micros()),
        Err(_) => (0, 0),
    }
}

/// Returns ("YYYY-MM-DD", "HH:MM:SS") for seconds since the epoch.
fn civil(secs: i64) -> (String, String) {
    let [year, month, day, hour, minute, second] = fields(secs);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{hour:02}:{minute:02}:{second:02}"),
    )
}

/// Year, month, day, hour, minute and second (UTC) of `secs` since the epoch.
fn fields(secs: i64) -> [i64; 6] {
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    // civil_from_days: http://howardhinnant.github.io/date_algorithms.html
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    [
        year,
        month,
        day,
        in_day / 3_600,
        in_day % 3_600 / 60,
        in_day % 60,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_693_355, "2026-11-26T11:42:35Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ];
        for (secs, expected) in cases {
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(rfc3339_seconds(time), expected, "for {secs}");
        }
    }

    #[test]
    fn micros_are_zero_padded() {
        let time = UNIX_EPOCH + Duration::from_micros(1_500_042);
        assert_eq!(rfc3339_micros(time), "1970-01-01T00:00:01.500042Z");
    }
}
