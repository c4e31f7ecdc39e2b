//! Who a validated token speaks for: the [`Context`] built from Keystone's token document.
//!
//! It carries what keystonemiddleware passes downstream as headers (`X-User-Id`,
//! `X-Project-Id`, `X-Roles`, `X-Is-Admin-Project`, `OpenStack-System-Scope`, ...) and what
//! Glance's `RequestContext` makes of them, as typed fields: the API reads a `Context`, never a
//! header, so an identity header a client sends (`X-Roles: admin`) has no effect by
//! construction and nothing needs stripping.
//!
//! It never holds the token itself: the cache keys contexts by the token's SHA-256.
//!
//! # Compatibility
//!
//! - Roles are lowercased, as Glance's context does before any policy check.
//! - `is_admin_project` defaults to true when Keystone leaves it out, as keystoneauth's
//!   `AccessInfoV3.is_admin_project` does: Keystone names it only when `[resource]
//!   admin_project_name` is configured.
//! - `expires_at` is read in both forms Keystone 22 writes: `2026-11-30T06:56:40.000000Z`,
//!   and `2026-11-30T06:56:40` (no fraction, no zone) for a token capped by an application
//!   credential; a time without a zone is UTC. An offset (`+01:00`) is applied.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// The identity of a request, from a token Keystone validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// `user.id`, `user.name` and the user's domain.
    pub user_id: String,
    pub user_name: String,
    pub user_domain_id: Option<String>,
    pub user_domain_name: Option<String>,
    /// The project of a project-scoped token (Glance's `owner` of what it creates).
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    /// The domain of a domain-scoped token.
    pub domain_id: Option<String>,
    pub domain_name: Option<String>,
    /// `Some("all")` for a system-scoped token (keystonemiddleware's `OpenStack-System-Scope`).
    pub system_scope: Option<String>,
    /// Role names, lowercased, implied roles included (Keystone lists them).
    pub roles: Vec<String>,
    /// Whether the token's project is Keystone's admin project (true when Keystone does not
    /// say, see the module doc).
    pub is_admin_project: bool,
    /// When the token stops being valid.
    pub expires_at: SystemTime,
    /// The token's first audit id: names the token in logs without revealing it.
    pub audit_id: Option<String>,
}

/// Why a token document was not understood.
#[derive(Debug, PartialEq, Eq)]
pub struct BadTokenDocument(pub String);

impl fmt::Display for BadTokenDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keystone's token document is not understood: {}", self.0)
    }
}

impl std::error::Error for BadTokenDocument {}

impl Context {
    /// The context of Keystone's answer to `GET /v3/auth/tokens` (or `POST`): `{"token":
    /// {...}}`.
    pub fn from_token_document(body: &[u8]) -> Result<Context, BadTokenDocument> {
        let document: TokenDocument = serde_json::from_slice(body)
            .map_err(|error| BadTokenDocument(format!("not the expected JSON ({error})")))?;
        let token = document.token;
        let expires_at = parse_expires_at(&token.expires_at).ok_or_else(|| {
            BadTokenDocument(format!(
                "expires_at `{}` is not a time",
                token.expires_at.escape_debug()
            ))
        })?;
        let (project_id, project_name, project_domain_id, project_domain_name) = match token.project
        {
            Some(project) => {
                let domain = project.domain.unwrap_or_default();
                (Some(project.id), project.name, domain.id, domain.name)
            }
            None => (None, None, None, None),
        };
        let (domain_id, domain_name) = match token.domain {
            Some(domain) => (domain.id, domain.name),
            None => (None, None),
        };
        let system_scope = token
            .system
            .filter(|system| system.all)
            .map(|_| "all".to_string());
        let user_domain = token.user.domain.unwrap_or_default();
        Ok(Context {
            user_id: token.user.id,
            user_name: token.user.name.unwrap_or_default(),
            user_domain_id: user_domain.id,
            user_domain_name: user_domain.name,
            project_id,
            project_name,
            project_domain_id,
            project_domain_name,
            domain_id,
            domain_name,
            system_scope,
            roles: token
                .roles
                .into_iter()
                .map(|role| role.name.to_lowercase())
                .collect(),
            is_admin_project: token.is_admin_project.unwrap_or(true),
            expires_at,
            audit_id: token.audit_ids.into_iter().next(),
        })
    }

    /// Whether the token has expired at `now` (keystonemiddleware: valid for 0 more seconds
    /// means invalid).
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires_at <= now
    }

    /// Whether the token carries any of `roles` (lowercase).
    pub fn has_any_role(&self, roles: &[String]) -> bool {
        self.roles.iter().any(|role| roles.contains(role))
    }
}

impl fmt::Display for Context {
    /// `user NAME (ID) project NAME (ID) roles a,b`, for debug lines; never the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {} ({})", self.user_name, self.user_id)?;
        match (&self.project_name, &self.project_id) {
            (Some(name), Some(id)) => write!(f, " project {name} ({id})")?,
            (None, Some(id)) => write!(f, " project {id}")?,
            _ => {}
        }
        if let Some(domain) = self.domain_name.as_ref().or(self.domain_id.as_ref()) {
            write!(f, " domain {domain}")?;
        }
        if let Some(system) = &self.system_scope {
            write!(f, " system {system}")?;
        }
        write!(f, " roles {}", self.roles.join(","))?;
        if let Some(audit_id) = &self.audit_id {
            write!(f, " token {audit_id}")?;
        }
        Ok(())
    }
}

/// Keystone's `expires_at` as a time: `YYYY-MM-DDTHH:MM:SS`, then an optional fraction of any
/// length, then `Z`, an offset `±HH:MM`, or nothing (UTC). `None` for anything else.
pub fn parse_expires_at(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = bytes.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n_digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits == 0 {
            return None;
        }
        // Nanoseconds from the first nine digits; further digits are below a nanosecond.
        for (index, digit) in fraction.bytes().take(n_digits.min(9)).enumerate() {
            nanos += u32::from(digit - b'0') * 10u32.pow(8 - index as u32);
        }
        rest = &fraction[n_digits..];
    }
    let offset_seconds: i64 = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = &rest.as_bytes()[1..];
            if zone.len() != 5 || zone[2] != b':' {
                return None;
            }
            let hours = number_of(&zone[0..2])?;
            let minutes = number_of(&zone[3..5])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60) as i64
        }
    };
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

fn number_of(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`,
/// the inverse of the conversion in `crate::timestamp`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `{"token": {...}}`: what glint reads of Keystone's token document; everything else
/// (catalog, methods, issued_at, ...) is ignored.
#[derive(Deserialize)]
struct TokenDocument {
    token: Token,
}

#[derive(Deserialize)]
struct Token {
    expires_at: String,
    user: User,
    project: Option<Project>,
    domain: Option<Named>,
    system: Option<System>,
    #[serde(default)]
    roles: Vec<Role>,
    is_admin_project: Option<bool>,
    #[serde(default)]
    audit_ids: Vec<String>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    name: Option<String>,
    domain: Option<Named>,
}

#[derive(Deserialize)]
struct Project {
    id: String,
    name: Option<String>,
    domain: Option<Named>,
}

#[derive(Deserialize, Default)]
struct Named {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct System {
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
struct Role {
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, nanos: u32) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::new(seconds, nanos))
    }

    #[test]
    fn expires_at_in_both_of_keystones_forms_is_utc() {
        // 2026-11-30T06:56:40Z is 1796021800 s after the epoch.
        let cases = [
            ("2026-11-30T06:56:40.000000Z", at(1_796_021_800, 0)),
            ("2026-11-30T06:56:40", at(1_796_021_800, 0)),
            ("2026-11-30T06:56:40Z", at(1_796_021_800, 0)),
            ("2026-11-30T06:56:40.5", at(1_796_021_800, 500_000_000)),
            (
                "2026-11-30T06:56:40.123456789123Z",
                at(1_796_021_800, 123_456_789),
            ),
            ("2026-11-30T07:56:40+01:00", at(1_796_021_800, 0)),
            ("2026-11-30T05:26:40.000-01:30", at(1_796_021_800, 0)),
            ("1970-01-01T00:00:00Z", at(0, 0)),
            ("2000-02-29T00:00:00", at(951_782_400, 0)),
            ("2100-03-01T00:00:00", at(4_107_542_400, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_expires_at(text), expected, "{text}");
        }
    }

    #[test]
    fn anything_else_is_not_an_expiry() {
        for text in [
            "",
            "2026-11-30",
            "2026-11-30T06:56",
            "2026-11-30 06:56:4",
            "2026-13-30T06:56:40Z",
            "2026-02-29T06:56:40Z",
            "2100-02-29T00:00:00",
            "2026-11-31T06:56:40Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T06:60:00Z",
            "2026-11-30T06:56:60Z",
            "2026-11-30T06:56:40.Z",
            "2026-11-30T06:56:40.000000ZZ",
            "2026-11-30T06:56:40+0100",
            "2026-11-30T06:56:40+24:00",
            "2026-11-30T06:56:40 UTC",
            "+026-11-30T06:56:40Z",
            "2026-1a-30T06:56:40Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "２０26-11-30T06:56:40Z",
            "2026-11-30T06:56:40.٣",
        ] {
            assert_eq!(parse_expires_at(text), None, "{text:?}");
        }
        // No input panics: every prefix and every single-byte change of a valid time.
        let valid = "2026-11-30T06:56:40.000000+01:00";
        for end in 0..=valid.len() {
            let _ = parse_expires_at(&valid[..end]);
        }
        for index in 0..valid.len() {
            for byte in [b'0', b'9', b':', b'-', b'.', b'Z', b'+', b'x', 0x7f] {
                let mut bytes = valid.as_bytes().to_vec();
                bytes[index] = byte;
                let _ = parse_expires_at(&String::from_utf8(bytes).expect("ascii"));
            }
        }
    }

    const PROJECT_TOKEN: &str = r#"{"token": {"methods": ["password"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "u1", "name": "alpha-member",
                 "password_expires_at": null},
        "audit_ids": ["aud1t"], "expires_at": "2026-11-30T07:39:23.000000Z",
        "issued_at": "2026-11-30T06:39:23.000000Z",
        "project": {"domain": {"id": "default", "name": "Default"}, "id": "p1", "name": "alpha"},
        "is_domain": false,
        "roles": [{"id": "r1", "name": "Member"}, {"id": "r2", "name": "reader"}]}}"#;

    #[test]
    fn a_project_token_gives_user_project_and_lowercased_roles() {
        let context = Context::from_token_document(PROJECT_TOKEN.as_bytes()).expect("parses");
        assert_eq!(
            context,
            Context {
                user_id: "u1".to_string(),
                user_name: "alpha-member".to_string(),
                user_domain_id: Some("default".to_string()),
                user_domain_name: Some("Default".to_string()),
                project_id: Some("p1".to_string()),
                project_name: Some("alpha".to_string()),
                project_domain_id: Some("default".to_string()),
                project_domain_name: Some("Default".to_string()),
                domain_id: None,
                domain_name: None,
                system_scope: None,
                roles: vec!["member".to_string(), "reader".to_string()],
                is_admin_project: true,
                expires_at: parse_expires_at("2026-11-30T07:39:23Z").expect("time"),
                audit_id: Some("aud1t".to_string()),
            }
        );
        assert!(context.has_any_role(&["service".to_string(), "member".to_string()]));
        assert!(!context.has_any_role(&["admin".to_string()]));
        assert_eq!(
            context.to_string(),
            "user alpha-member (u1) project alpha (p1) roles member,reader token aud1t"
        );
        assert!(!context.expired_at(UNIX_EPOCH));
        assert!(context.expired_at(context.expires_at));
    }

    #[test]
    fn system_and_domain_scopes_and_is_admin_project_are_read() {
        let system = r#"{"token": {"expires_at": "2026-11-30T06:56:40", "user": {"id": "a"},
            "system": {"all": true}, "roles": [{"name": "admin"}], "is_admin_project": false}}"#;
        let context = Context::from_token_document(system.as_bytes()).expect("parses");
        assert_eq!(context.system_scope.as_deref(), Some("all"));
        assert_eq!(context.project_id, None);
        assert!(!context.is_admin_project);
        assert_eq!(context.user_name, "");
        let domain = r#"{"token": {"expires_at": "2026-11-30T06:56:40Z", "user": {"id": "a"},
            "domain": {"id": "d1", "name": "Dom"}, "roles": []}}"#;
        let context = Context::from_token_document(domain.as_bytes()).expect("parses");
        assert_eq!(context.domain_id.as_deref(), Some("d1"));
        assert_eq!(context.domain_name.as_deref(), Some("Dom"));
        assert_eq!(context.system_scope, None);
    }

    #[test]
    fn a_document_without_user_or_expiry_is_refused() {
        for body in [
            "",
            "null",
            "{}",
            r#"{"token": {}}"#,
            r#"{"token": {"user": {"id": "a"}}}"#,
            r#"{"token": {"expires_at": "soon", "user": {"id": "a"}}}"#,
            r#"{"token": {"expires_at": "2026-11-30T06:56:40Z", "user": {}}}"#,
            r#"{"token": {"expires_at": "2026-11-30T06:56:40Z", "user": {"id": 5}}}"#,
            r#"{"token": {"expires_at": "2026-11-30T06:56:40Z", "user": {"id": "a"}, "roles": [{}]}}"#,
        ] {
            assert!(
                Context::from_token_document(body.as_bytes()).is_err(),
                "{body}"
            );
        }
    }
}
