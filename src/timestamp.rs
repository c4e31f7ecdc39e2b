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
    let (secs, micros) = split(time);
    let [year, month, day, hour, minute, second] = fields(secs);
    if !(0..=9999).contains(&year) {
        // Not four digits: the general formatter (a clock that far off is not worth speed).
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
        );
        return;
    }
    // Digit by digit into a fixed buffer: through `write!` this was a fifth of an access
    // line's instructions (issue 13).
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, hour as u64);
    put(14, 2, minute as u64);
    put(17, 2, second as u64);
    put(20, 6, u64::from(micros));
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
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

    /// The digit-by-digit form of the log lines' timestamps agrees with the seconds' form for
    /// the known instants, with every field's padding, and past year 9999 too.
    #[test]
    fn micros_agree_with_seconds_at_known_instants() {
        for secs in [
            0,
            951_782_400,
            1_795_693_355,
            4_102_444_799,
            253_402_300_800,
        ] {
            for micros in [0, 7, 123_456, 999_999] {
                let time = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
                let seconds = rfc3339_seconds(time);
                let expected = format!("{}.{micros:06}Z", seconds.trim_end_matches('Z'));
                assert_eq!(rfc3339_micros(time), expected, "for {secs}.{micros}");
            }
        }
        assert_eq!(
            rfc3339_micros(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            "10000-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn micros_are_zero_padded() {
        let time = UNIX_EPOCH + Duration::from_micros(1_500_042);
        assert_eq!(rfc3339_micros(time), "1970-01-01T00:00:01.500042Z");
    }
}
