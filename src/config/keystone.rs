//! `[keystone_authtoken]`: the section keystonemiddleware's auth_token reads, as glint reads it,
//! and the validated settings a keystone flavor runs on.
//!
//! The options table (`options.rs`) stores each value of the section in a [`KeystoneAuthtoken`],
//! whatever the flavor, so that `--check-config` shows them. Only with a keystone flavor
//! (`[paste_deploy] flavor = keystone`, `keystone+caching`, `keystone+cachemanagement`) does
//! [`finish`] check them against each other, read `cafile`, and build the
//! [`KeystoneSettings`] that `AuthStrategy::Keystone` carries: a missing `auth_url`, user,
//! password or project is then a config error like a bad value, so a SIGHUP with a broken
//! section fails the reload and changes nothing. Without a keystone flavor the section is not
//! used and draws no warning (Glance files carry it whatever their pipeline).
//!
//! Nothing here talks to Keystone: the master loads configs, and loading has no side effects.
//! The children do the talking (`crate::keystone`).
//!
//! # Compatibility
//!
//! Names and defaults are keystonemiddleware's (`auth_token/_opts.py`) and keystoneauth's
//! password plugin's. Differences, each because glint is smaller:
//! - only `auth_type = password` (or `v3password`): glint authenticates itself with a password;
//! - Identity v3 only: an `auth_url` ending in `/v2.0` is refused; one without a version gets
//!   `/v3` appended instead of a discovery request;
//! - a user or project given by name needs its domain (`user_domain_name` or `_id`, and
//!   `project_domain_name` or `_id`): keystoneauth would send the request and Keystone refuse it;
//! - `token_cache_time = 0` disables the cache like `-1` (caching for no time is no cache);
//! - `http_connect_timeout` has a default (keystonemiddleware's is none, so the kernel's), and
//!   `http_request_timeout` (glint's own) bounds everything one client request waits for.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{read_regular_file, RawConfig, Report};

/// The section's name in the file.
pub const SECTION: &str = "keystone_authtoken";

/// `[keystone_authtoken]` as the file gives it (defaults applied), read under every flavor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeystoneAuthtoken {
    /// `www_authenticate_uri`: the URL a 401's `WWW-Authenticate` sends clients to.
    pub www_authenticate_uri: Option<String>,
    /// `auth_uri`: the deprecated name of `www_authenticate_uri`, used when that is unset.
    pub auth_uri: Option<String>,
    /// `auth_url`: Keystone's URL for glint's own password authentication.
    pub auth_url: Option<String>,
    /// `auth_type`: `password` or `v3password`, the same plugin.
    pub auth_type: &'static str,
    /// `username` / `user_id`: glint's service user.
    pub username: Option<String>,
    pub user_id: Option<String>,
    /// `password`: the service user's password.
    pub password: Option<Secret>,
    /// `user_domain_name` / `user_domain_id`: the domain of a user given by name.
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    /// `project_name` / `project_id`: the project glint's token is scoped to.
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    /// `project_domain_name` / `project_domain_id`: the domain of a project given by name.
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    /// `region_name`: the region of the identity endpoint taken from the service catalog.
    pub region_name: Option<String>,
    /// `interface`: the catalog interface of the identity endpoint (`internal` by default).
    pub interface: &'static str,
    /// `service_token_roles`: an `X-Service-Token` with any of these roles is a service token.
    pub service_token_roles: Vec<String>,
    /// `service_token_roles_required`: an `X-Service-Token` without such a role is refused.
    pub service_token_roles_required: bool,
    /// `token_cache_time`: seconds a validation is kept; -1 or 0 keeps none.
    pub token_cache_time: i64,
    /// `cafile`: absolute path of the PEM file of CA certificates to trust for https.
    pub cafile: Option<PathBuf>,
    /// `insecure`: skip the verification of Keystone's certificate.
    pub insecure: bool,
    /// `http_connect_timeout`: the bound on one TCP (and TLS) connect to Keystone.
    pub http_connect_timeout: Duration,
    /// `http_request_timeout` (glint's own): the bound on all Keystone calls of one request.
    pub http_request_timeout: Duration,
    /// `http_request_max_retries`: extra attempts after a connection failure.
    pub http_request_max_retries: u32,
}

/// What a keystone flavor runs on: `[keystone_authtoken]` checked, with its derived values.
/// Only [`finish`] builds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeystoneSettings {
    /// `auth_url` as configured (without a trailing `/`), for messages.
    pub auth_url: String,
    /// The Identity v3 root derived from `auth_url` (ends in `/v3`): glint authenticates
    /// there, and validates there when the service catalog names no identity endpoint.
    pub identity_url: String,
    /// `www_authenticate_uri`, else `auth_uri`, else `auth_url`.
    pub www_authenticate_uri: String,
    /// Who glint authenticates as.
    pub user: Principal,
    pub password: Secret,
    /// The project glint's own token is scoped to.
    pub project: Principal,
    pub region_name: Option<String>,
    pub interface: &'static str,
    /// Lowercased, as the roles of a token are compared.
    pub service_token_roles: Vec<String>,
    pub service_token_roles_required: bool,
    /// `None`: validations are not cached.
    pub token_cache_time: Option<Duration>,
    /// The certificates of `cafile` (DER), read while the config loaded; `None`: the
    /// built-in Mozilla roots.
    pub ca_certificates: Option<Vec<Vec<u8>>>,
    pub insecure: bool,
    pub http_connect_timeout: Duration,
    pub http_request_timeout: Duration,
    pub http_request_max_retries: u32,
}

/// A user or project, as Identity v3 names it in an authentication request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Id(String),
    Name { name: String, domain: Domain },
}

/// The domain of a [`Principal`] given by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    Id(String),
    Name(String),
}

/// A secret from the config file: shown by no `Debug`, no log line and no `--check-config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    /// The secret itself, for the one place that sends it (the authentication request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// Checks the section for a keystone flavor whose `flavor` line is `flavor_line`, and builds
/// the settings; every problem goes to `report` (`None` then, and the load fails).
pub(super) fn finish(
    section: &KeystoneAuthtoken,
    flavor_line: Option<usize>,
    raw: &RawConfig,
    report: &mut Report,
) -> Option<KeystoneSettings> {
    let n_errors = report.errors.len();
    // A missing option has no line of its own: point at the section, else at the flavor.
    let missing_line = raw
        .section(SECTION)
        .and_then(|section| section.line)
        .or(flavor_line);
    let needed_by = match flavor_line {
        Some(line) => format!("[paste_deploy] flavor (line {line})"),
        None => "[paste_deploy] flavor".to_string(),
    };
    let missing = |report: &mut Report, option: &str, what: &str| {
        report.error(
            missing_line,
            Some(SECTION),
            Some(option),
            format!("is required by the keystone flavor of {needed_by}; set it to {what}"),
        );
    };

    let auth_url = section.auth_url.clone();
    if auth_url.is_none() {
        missing(
            report,
            "auth_url",
            "the Keystone URL glint authenticates with, such as https://keystone.example.com:5000",
        );
    }
    let password = section.password.clone();
    if password.is_none() {
        missing(report, "password", "the service user's password");
    }
    let user = principal(
        section.user_id.as_deref(),
        section.username.as_deref(),
        section.user_domain_id.as_deref(),
        section.user_domain_name.as_deref(),
    );
    let project = principal(
        section.project_id.as_deref(),
        section.project_name.as_deref(),
        section.project_domain_id.as_deref(),
        section.project_domain_name.as_deref(),
    );
    let user = match user {
        Ok(Some(user)) => Some(user),
        Ok(None) => {
            missing(report, "username", "glint's service user (or set user_id)");
            None
        }
        Err(()) => {
            report.error(
                raw.line_of(SECTION, "username"),
                Some(SECTION),
                Some("username"),
                "a user given by name needs its domain; set user_domain_name (such as \
                 Default) or user_domain_id"
                    .to_string(),
            );
            None
        }
    };
    let project = match project {
        Ok(Some(project)) => Some(project),
        Ok(None) => {
            missing(
                report,
                "project_name",
                "the project of glint's service user, such as service (or set project_id)",
            );
            None
        }
        Err(()) => {
            report.error(
                raw.line_of(SECTION, "project_name"),
                Some(SECTION),
                Some("project_name"),
                "a project given by name needs its domain; set project_domain_name (such as \
                 Default) or project_domain_id"
                    .to_string(),
            );
            None
        }
    };

    let identity_url = auth_url
        .as_deref()
        .and_then(|url| match identity_v3_root(url) {
            Ok(root) => Some(root),
            Err(message) => {
                report.error(
                    raw.line_of(SECTION, "auth_url"),
                    Some(SECTION),
                    Some("auth_url"),
                    message,
                );
                None
            }
        });

    let ca_certificates = match &section.cafile {
        Some(path) => read_ca_file(path).map(Some).unwrap_or_else(|message| {
            report.error(
                raw.line_of(SECTION, "cafile"),
                Some(SECTION),
                Some("cafile"),
                message,
            );
            None
        }),
        None => None,
    };

    if section.www_authenticate_uri.is_none() && section.auth_uri.is_some() {
        report.warning(
            raw.line_of(SECTION, "auth_uri"),
            Some(SECTION),
            Some("auth_uri"),
            "is the deprecated name of www_authenticate_uri; rename the option".to_string(),
        );
    }

    if report.errors.len() > n_errors {
        return None;
    }
    let (auth_url, identity_url, user, password, project) =
        (auth_url?, identity_url?, user?, password?, project?);
    let www_authenticate_uri = section
        .www_authenticate_uri
        .clone()
        .or_else(|| section.auth_uri.clone())
        .unwrap_or_else(|| auth_url.clone());
    Some(KeystoneSettings {
        auth_url,
        identity_url,
        www_authenticate_uri,
        user,
        password,
        project,
        region_name: section.region_name.clone(),
        interface: section.interface,
        service_token_roles: section
            .service_token_roles
            .iter()
            .map(|role| role.to_lowercase())
            .collect(),
        service_token_roles_required: section.service_token_roles_required,
        token_cache_time: u64::try_from(section.token_cache_time)
            .ok()
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs),
        ca_certificates,
        insecure: section.insecure,
        http_connect_timeout: section.http_connect_timeout,
        http_request_timeout: section.http_request_timeout,
        http_request_max_retries: section.http_request_max_retries,
    })
}

/// A user or project from its `_id`, or its name and its domain's `_id` or name; `Ok(None)`
/// when neither is set, `Err` for a name without a domain. An id wins over a name, as
/// keystoneauth's password plugin sends both and Keystone looks up by id.
fn principal(
    id: Option<&str>,
    name: Option<&str>,
    domain_id: Option<&str>,
    domain_name: Option<&str>,
) -> Result<Option<Principal>, ()> {
    if let Some(id) = id {
        return Ok(Some(Principal::Id(id.to_string())));
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let domain = match (domain_id, domain_name) {
        (Some(id), _) => Domain::Id(id.to_string()),
        (None, Some(name)) => Domain::Name(name.to_string()),
        (None, None) => return Err(()),
    };
    Ok(Some(Principal::Name {
        name: name.to_string(),
        domain,
    }))
}

/// The Identity v3 root of a Keystone URL: `URL/v3`, or the URL itself when it already ends in
/// `/v3`. Used for `auth_url` and for the identity endpoints of the service catalog, which
/// name either form. An `/v2.0` URL is refused: glint speaks Identity v3 only.
pub fn identity_v3_root(url: &str) -> Result<String, String> {
    let url = url.trim_end_matches('/');
    let last = url.rsplit('/').next().unwrap_or_default();
    if last.eq_ignore_ascii_case("v3") {
        Ok(url.to_string())
    } else if last.eq_ignore_ascii_case("v2.0") {
        Err(format!(
            "`{url}` names Identity v2.0, which glint does not speak; give the URL without \
             /v2.0 (glint appends /v3)"
        ))
    } else {
        Ok(format!("{url}/v3"))
    }
}

/// The certificates of a PEM file, as DER. Read like the config file (never blocking, a
/// regular file only), so that a missing or broken `cafile` fails the load, not the first
/// request.
fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = read_regular_file(path).map_err(|error| {
        format!(
            "cannot read `{}`: {error}; give the PEM file of the CA that signed Keystone's \
             certificate",
            path.display()
        )
    })?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(certificate)) => {
                certificates.push(certificate.der().to_vec())
            }
            Ok(_) => {}
            Err(error) => {
                return Err(format!(
                    "`{}` is not a valid PEM file ({error}); give the PEM file of the CA that \
                     signed Keystone's certificate",
                    path.display()
                ))
            }
        }
    }
    if certificates.is_empty() {
        return Err(format!(
            "`{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the PEM file \
             of the CA that signed Keystone's certificate",
            path.display()
        ));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_v3_root_appends_v3_unless_present() {
        let cases = [
            ("http://k:5000", Ok("http://k:5000/v3")),
            ("http://k:5000/", Ok("http://k:5000/v3")),
            ("http://k:5000/v3", Ok("http://k:5000/v3")),
            ("http://k:5000/v3/", Ok("http://k:5000/v3")),
            ("https://k/identity", Ok("https://k/identity/v3")),
            ("https://k/identity/V3", Ok("https://k/identity/V3")),
        ];
        for (url, expected) in cases {
            assert_eq!(
                identity_v3_root(url).as_deref(),
                expected.map_err(|_: ()| String::new()).as_deref(),
                "{url}"
            );
        }
        assert!(identity_v3_root("http://k:5000/v2.0").is_err());
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let secret = Secret::new("hunter2".to_string());
        assert_eq!(format!("{secret:?}"), "Secret(hidden)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
