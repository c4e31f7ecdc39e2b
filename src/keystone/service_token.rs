//! glint's own token: the service user's, which every validation request carries.
//!
//! Each child gets one lazily, at the first request that needs it (never the master: it does
//! not talk to Keystone), with password authentication (`POST /v3/auth/tokens`, scoped to
//! `project_name`), and gets a new one when the one it has nears its expiry (the last
//! [`REFRESH_MARGIN`] of its life, or the last half of a shorter life) or when Keystone answers a
//! validation with 401 (the token was revoked, or Keystone's keys rotated).
//!
//! The issued token's service catalog names the identity endpoint validations go to
//! (`interface`, `region_name`), as keystonemiddleware's adapter finds it; when the catalog has
//! none, validations go to `auth_url` (logged once per token).
//!
//! # Locking
//!
//! One `Mutex` serializes the getting: the first thread that needs a token asks Keystone while
//! holding it, and the others wait for its answer instead of each sending the service user's
//! password. That wait is bounded by the holder's deadline, which is no later than a waiter's
//! (the holder came first). A waiter that finds the holder failed after it began waiting fails
//! too, at once, instead of asking again: when Keystone is down, requests queued behind one
//! attempt do not each wait a whole attempt in turn. A token that nears its expiry is still used
//! while Keystone cannot give a new one.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::json;

use super::client::{Client, Deadline};
use super::context::parse_expires_at;
use super::Failure;
use crate::config::{identity_v3_root, Domain, KeystoneSettings, Principal};

/// How long before its expiry glint replaces its own token (keystoneauth's
/// `MIN_TOKEN_LIFE_SECONDS`), so that a validation never carries a token that expires on the
/// way.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// glint's own token and where validations go.
#[derive(Clone)]
pub struct Issued {
    /// The token (glint's own secret: never logged).
    pub token: String,
    /// `.../v3/auth/tokens` at the identity endpoint of the catalog, or of `auth_url`.
    pub validate_url: String,
    /// When to get a new one.
    refresh_at: Instant,
    /// When it stops working.
    expires_at: Instant,
}

/// The child's own token, got and replaced as the module doc says.
pub struct ServiceToken {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    issued: Option<Issued>,
    /// When the last attempt to get a token failed.
    failed_at: Option<Instant>,
}

/// How often a request waiting for another's renewal of glint's own token looks again.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(2);

/// Takes the state's lock, waiting at most until `deadline`: the thread that holds it may be
/// talking to Keystone (up to its own deadline, which can be later than this request's), and
/// a request must never wait past `http_request_timeout`. `std`'s `Mutex` has no timed lock,
/// hence the short polls.
fn lock_until<'a>(
    state: &'a Mutex<State>,
    deadline: &Deadline,
) -> Result<std::sync::MutexGuard<'a, State>, Failure> {
    loop {
        match state.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        match deadline.remaining() {
            Some(left) => std::thread::sleep(left.min(LOCK_RETRY)),
            None => {
                return Err(Failure::Unavailable(
                    "another request was still getting glint's own token when this one's \
                     http_request_timeout ran out"
                        .to_string(),
                ))
            }
        }
    }
}

impl ServiceToken {
    pub fn new() -> ServiceToken {
        ServiceToken {
            state: Mutex::new(State::default()),
        }
    }

    /// A token to validate with: the one held, or a new one from Keystone.
    pub fn get(
        &self,
        settings: &KeystoneSettings,
        client: &Client,
        deadline: &Deadline,
    ) -> Result<Issued, Failure> {
        let mut state = lock_until(&self.state, deadline)?;
        let now = Instant::now();
        if let Some(issued) = &state.issued {
            if now < issued.refresh_at {
                return Ok(issued.clone());
            }
        }
        // Due for renewal but not expired: still good while Keystone cannot give a new one.
        let usable = state
            .issued
            .as_ref()
            .filter(|issued| now < issued.expires_at)
            .cloned();
        if state
            .failed_at
            .is_some_and(|failed_at| failed_at >= deadline.started)
        {
            return usable.ok_or_else(|| {
                Failure::Unavailable(
                    "getting glint's own token failed while this request waited for it".to_string(),
                )
            });
        }
        match authenticate(settings, client, deadline) {
            Ok(issued) => {
                state.failed_at = None;
                state.issued = Some(issued.clone());
                Ok(issued)
            }
            Err(failure) => {
                state.failed_at = Some(Instant::now());
                match usable {
                    Some(issued) => {
                        log::warn!(
                            "keystone: cannot renew glint's own token before it expires \
                             ({failure}); using the current one meanwhile"
                        );
                        Ok(issued)
                    }
                    None => Err(failure),
                }
            }
        }
    }

    /// Forgets `rejected` (Keystone answered 401 to a validation carrying it), so that the next
    /// [`ServiceToken::get`] asks for a new token; a newer token another thread got meanwhile
    /// is kept.
    pub fn invalidate(&self, rejected: &Issued) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .issued
            .as_ref()
            .is_some_and(|issued| issued.token == rejected.token)
        {
            state.issued = None;
        }
    }
}

impl Default for ServiceToken {
    fn default() -> Self {
        ServiceToken::new()
    }
}

/// `POST /v3/auth/tokens` with the service user's password, scoped to its project.
fn authenticate(
    settings: &KeystoneSettings,
    client: &Client,
    deadline: &Deadline,
) -> Result<Issued, Failure> {
    let url = format!("{}/auth/tokens", settings.identity_url);
    let body = json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": user_json(&settings.user, settings.password.expose())},
            },
            "scope": {"project": principal_json(&settings.project)},
        }
    });
    let reply = client
        .post_json(&url, &body, deadline)
        .map_err(|unreachable| Failure::Unavailable(unreachable.to_string()))?;
    if reply.status != 201 && reply.status != 200 {
        let problem = format!(
            "Keystone refused glint's own authentication (POST {url}: HTTP {}: {}); check \
             [keystone_authtoken] username, password, project_name and their domains",
            reply.status,
            body_snippet(&reply.body)
        );
        // A wrong password is the operator's to fix: `Keystone` logs it at error (throttled).
        return Err(Failure::Unavailable(problem));
    }
    let Some(token) = reply.subject_token.filter(|token| is_token(token)) else {
        return Err(Failure::Unavailable(format!(
            "POST {url} answered {} without a usable X-Subject-Token",
            reply.status
        )));
    };
    let document: IssuedDocument = serde_json::from_slice(&reply.body).map_err(|error| {
        Failure::Unavailable(format!(
            "POST {url}: the token document is not understood ({error})"
        ))
    })?;
    let now = Instant::now();
    let life = parse_expires_at(&document.token.expires_at)
        .and_then(|expires_at| expires_at.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    if life.is_zero() {
        return Err(Failure::Unavailable(format!(
            "POST {url}: glint's own token expires at once (expires_at `{}`)",
            document.token.expires_at.escape_debug()
        )));
    }
    let validate_url = match identity_endpoint(&document.token.catalog, settings) {
        Some(url) => format!("{url}/auth/tokens"),
        None => {
            log::warn!(
                "keystone: the service catalog has no identity endpoint for interface {}{}; \
                 validating tokens at auth_url {}",
                settings.interface,
                settings
                    .region_name
                    .as_deref()
                    .map_or(String::new(), |region| format!(" in region {region}")),
                settings.auth_url
            );
            url
        }
    };
    log::info!(
        "keystone: glint's own token issued, valid for {} s; validating tokens at {validate_url}",
        life.as_secs()
    );
    Ok(Issued {
        token,
        validate_url,
        refresh_at: now + life.saturating_sub(REFRESH_MARGIN.min(life / 2)),
        expires_at: now + life,
    })
}

/// The v3 root of the identity endpoint in `catalog` for the configured interface and region.
fn identity_endpoint(catalog: &[CatalogEntry], settings: &KeystoneSettings) -> Option<String> {
    catalog
        .iter()
        .filter(|entry| entry.kind == "identity")
        .flat_map(|entry| entry.endpoints.iter())
        .filter(|endpoint| endpoint.interface == settings.interface)
        .filter(|endpoint| match &settings.region_name {
            Some(region) => {
                endpoint.region_id.as_ref() == Some(region)
                    || endpoint.region.as_ref() == Some(region)
            }
            None => true,
        })
        .find_map(|endpoint| identity_v3_root(&endpoint.url).ok())
}

fn principal_json(principal: &Principal) -> serde_json::Value {
    match principal {
        Principal::Id(id) => json!({"id": id}),
        Principal::Name { name, domain } => json!({"name": name, "domain": domain_json(domain)}),
    }
}

fn user_json(user: &Principal, password: &str) -> serde_json::Value {
    let mut user = principal_json(user);
    user["password"] = json!(password);
    user
}

fn domain_json(domain: &Domain) -> serde_json::Value {
    match domain {
        Domain::Id(id) => json!({"id": id}),
        Domain::Name(name) => json!({"name": name}),
    }
}

/// Whether `token` can go in a header as it is: visible ASCII, no spaces.
pub fn is_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|byte| byte.is_ascii_graphic())
}

/// The start of a body, for a log line (Keystone's error bodies hold no token).
pub fn body_snippet(body: &[u8]) -> String {
    const MAX_CHARS: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > MAX_CHARS {
        format!("{}…", text.chars().take(MAX_CHARS).collect::<String>())
    } else {
        text.to_string()
    }
}

#[derive(Deserialize)]
struct IssuedDocument {
    token: IssuedToken,
}

#[derive(Deserialize)]
struct IssuedToken {
    expires_at: String,
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
}

#[derive(Deserialize)]
struct CatalogEntry {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Deserialize)]
struct CatalogEndpoint {
    #[serde(default)]
    interface: String,
    region_id: Option<String>,
    region: Option<String>,
    #[serde(default)]
    url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(region: Option<&str>, interface: &'static str) -> KeystoneSettings {
        KeystoneSettings {
            auth_url: "http://auth:5000".to_string(),
            identity_url: "http://auth:5000/v3".to_string(),
            www_authenticate_uri: "http://auth:5000".to_string(),
            user: Principal::Name {
                name: "glint".to_string(),
                domain: Domain::Name("Default".to_string()),
            },
            password: Secret::new("pw".to_string()),
            project: Principal::Id("p1".to_string()),
            region_name: region.map(str::to_string),
            interface,
            service_token_roles: vec!["service".to_string()],
            service_token_roles_required: false,
            token_cache_time: None,
            ca_certificates: None,
            insecure: false,
            http_connect_timeout: Duration::from_secs(1),
            http_request_timeout: Duration::from_secs(1),
            http_request_max_retries: 0,
        }
    }

    const CATALOG: &str = r#"[
        {"type": "image", "endpoints": [{"interface": "internal", "region_id": "RegionOne", "url": "http://glint:9292"}]},
        {"type": "identity", "endpoints": [
            {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "https://public:5000"},
            {"interface": "internal", "region_id": "RegionTwo", "url": "http://internal-two:5000/v3/"},
            {"interface": "internal", "region_id": "RegionOne", "url": "http://internal-one:5000"},
            {"interface": "admin", "region": "RegionOne", "url": "http://admin:35357/v2.0"}
        ]}]"#;

    #[test]
    fn validations_go_to_the_catalogs_identity_endpoint_for_interface_and_region() {
        let catalog: Vec<CatalogEntry> = serde_json::from_str(CATALOG).expect("catalog");
        let cases = [
            (
                Some("RegionOne"),
                "internal",
                Some("http://internal-one:5000/v3"),
            ),
            (
                Some("RegionTwo"),
                "internal",
                Some("http://internal-two:5000/v3"),
            ),
            (None, "internal", Some("http://internal-two:5000/v3")),
            (Some("RegionOne"), "public", Some("https://public:5000/v3")),
            (Some("RegionThree"), "internal", None),
            // A v2.0 endpoint is no identity v3 endpoint.
            (Some("RegionOne"), "admin", None),
        ];
        for (region, interface, expected) in cases {
            assert_eq!(
                identity_endpoint(&catalog, &settings(region, interface)).as_deref(),
                expected,
                "{region:?} {interface}"
            );
        }
        assert_eq!(identity_endpoint(&[], &settings(None, "internal")), None);
    }

    #[test]
    fn the_password_request_names_user_and_project_as_configured() {
        let user = user_json(
            &Principal::Name {
                name: "glint".to_string(),
                domain: Domain::Id("default".to_string()),
            },
            "pw",
        );
        assert_eq!(
            user,
            json!({"name": "glint", "domain": {"id": "default"}, "password": "pw"})
        );
        assert_eq!(
            principal_json(&Principal::Id("p1".to_string())),
            json!({"id": "p1"})
        );
        assert_eq!(
            principal_json(&Principal::Name {
                name: "service".to_string(),
                domain: Domain::Name("Default".to_string())
            }),
            json!({"name": "service", "domain": {"name": "Default"}})
        );
    }

    #[test]
    fn tokens_are_visible_ascii() {
        assert!(is_token("gAAAAABn-x_y=z"));
        for bad in ["", "a b", "a\tb", "tök", "a\r\nX-Roles: admin"] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert_eq!(body_snippet(b"  {\"error\": 1}\n"), "{\"error\": 1}");
        assert_eq!(body_snippet(&[b'x'; 400]).chars().count(), 301);
    }
}
