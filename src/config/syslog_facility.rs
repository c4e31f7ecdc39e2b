//! `syslog_log_facility`'s values, as oslo.log reads them (`oslo_log.log._find_facility`): the
//! facility names of `<syslog.h>`, in any case, with or without `LOG_`. Here rather than in
//! `logging`, so the config can check a value without depending on the logger (which depends on
//! the config).

/// The facilities oslo.log accepts (`_find_facility`), with their codes from `<syslog.h>`.
pub const FACILITIES: &[(&str, u8)] = &[
    ("LOG_KERN", 0),
    ("LOG_USER", 1),
    ("LOG_MAIL", 2),
    ("LOG_DAEMON", 3),
    ("LOG_AUTH", 4),
    ("LOG_SYSLOG", 5),
    ("LOG_LPR", 6),
    ("LOG_NEWS", 7),
    ("LOG_UUCP", 8),
    ("LOG_CRON", 9),
    ("LOG_AUTHPRIV", 10),
    ("LOG_FTP", 11),
    ("LOG_LOCAL0", 16),
    ("LOG_LOCAL1", 17),
    ("LOG_LOCAL2", 18),
    ("LOG_LOCAL3", 19),
    ("LOG_LOCAL4", 20),
    ("LOG_LOCAL5", 21),
    ("LOG_LOCAL6", 22),
    ("LOG_LOCAL7", 23),
];

/// The canonical name (`LOG_LOCAL0`) of a facility as oslo.log reads `syslog_log_facility`: in
/// any case, with or without the `LOG_` prefix. `None` for anything else.
pub fn facility_name(text: &str) -> Option<&'static str> {
    let upper = text.trim().to_ascii_uppercase();
    let wanted = if upper.starts_with("LOG_") {
        upper
    } else {
        format!("LOG_{upper}")
    };
    FACILITIES
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(name, _)| *name)
}

/// The code of a canonical facility name; `LOG_USER` for a name not in [`FACILITIES`] (the
/// config loader lets none through).
pub fn facility_code(name: &str) -> u8 {
    FACILITIES
        .iter()
        .find(|(known, _)| *known == name)
        .map_or(1, |(_, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities_are_read_as_oslo_log_reads_them() {
        assert_eq!(facility_name("LOG_LOCAL0"), Some("LOG_LOCAL0"));
        assert_eq!(facility_name("local0"), Some("LOG_LOCAL0"));
        assert_eq!(facility_name("Log_Daemon"), Some("LOG_DAEMON"));
        assert_eq!(facility_name("user"), Some("LOG_USER"));
        assert_eq!(facility_name("local8"), None);
        assert_eq!(facility_name("LOG_"), None);
        assert_eq!(facility_code("LOG_LOCAL7"), 23);
        assert_eq!(facility_code("LOG_USER"), 1);
    }
}
