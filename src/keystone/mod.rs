//! Keystone token validation, as keystonemiddleware's auth_token does it, for the keystone
//! flavors (`[paste_deploy] flavor = keystone...`, settings in `[keystone_authtoken]`).
//!
//! A child builds one [`Keystone`] from its generation's config (`config::KeystoneSettings`)
//! and its worker threads share it: `api::auth` calls [`Keystone::authenticate`] with a
//! request's `X-Auth-Token` and `X-Service-Token`, and gets the request's [`Context`] or the
//! [`Refusal`] to answer (401, or 503 when Keystone cannot say).
//!
//! - `client`: HTTP to Keystone (ureq, blocking), every call bounded by the request's deadline;
//! - `service_token`: glint's own token, got lazily with the service user's password;
//! - `token_cache`: successful validations, keyed by the token's SHA-256;
//! - `context`: who a token speaks for, read from Keystone's token document.
//!
//! The master never builds a `Keystone` and never talks to Keystone (loading a config has no
//! side effects); a reload gives the new generation a new one, with an empty cache and no token.
//!
//! # Validation
//!
//! As keystonemiddleware's `BaseAuthProtocol.process_request` and `AuthProtocol.fetch_token`:
//! 1. No `X-Auth-Token`: 401 at once.
//! 2. An `X-Service-Token` is validated first. Invalid: 401. Valid with one of
//!    `service_token_roles`: the user token may be expired (`allow_expired=1`). Valid without
//!    such a role: 401 if `service_token_roles_required`, else accepted (keystonemiddleware's
//!    deprecated default), without `allow_expired`.
//! 3. The user token: from the cache, else `GET /v3/auth/tokens?nocatalog` with `X-Auth-Token`
//!    (glint's token) and `X-Subject-Token` (the user's). 200: valid, unless expired (checked
//!    again on every cache hit). 404: invalid (unknown, forged, revoked or expired: Keystone
//!    says 404 for each). 401: glint's own token is stale; a new one is got and the validation
//!    sent once more. Anything else, or no answer by the deadline: 503.
//!
//! glint answers 401 and 503 itself, as auth_token with `delay_auth_decision = false` does;
//! Glance's pipeline sets it true and then answers 401 for a Keystone that is down, which tells
//! a client nothing true. `OpenStack-Identity-Access-Rules` is not sent, so Keystone refuses
//! (404) tokens of application credentials restricted by access rules, which glint does not
//! enforce.
//!
//! # Time bounds
//!
//! Everything one client request asks of Keystone (glint's token, the service token's and the
//! user token's validations, retries) ends by `http_request_timeout` after the check began;
//! each connection attempt within it waits at most `http_connect_timeout`. A cache hit asks
//! Keystone nothing.
//!
//! # Logging
//!
//! No token is logged, glint's own included: a context names its token by audit id. A Keystone
//! that fails is logged at error once, then at most once per [`OUTAGE_LOG_PERIOD`] while it
//! keeps failing (with how many requests got 503 meanwhile), and its recovery at info.

mod client;
mod context;
mod service_token;
mod token_cache;

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::KeystoneSettings;
use crate::logging::outage::Outage;
use client::{Client, Deadline};
use service_token::{body_snippet, is_token, ServiceToken};
use token_cache::{TokenCache, TokenKey};

pub use context::{parse_expires_at, BadTokenDocument, Context};
pub use service_token::REFRESH_MARGIN;
pub use token_cache::CAPACITY as TOKEN_CACHE_CAPACITY;

/// While Keystone keeps failing, at most one error line per this period.
pub use crate::logging::outage::OUTAGE_LOG_PERIOD;

/// The message of a 503 when Keystone cannot validate, keystonemiddleware's words.
pub const UNAVAILABLE_MESSAGE: &str = "The Keystone service is temporarily unavailable.";

/// Token validation for one child, shared by its threads.
pub struct Keystone {
    settings: Arc<KeystoneSettings>,
    client: Client,
    service_token: ServiceToken,
    cache: TokenCache,
    /// `Keystone uri="..."`, the `WWW-Authenticate` of every 401.
    challenge: String,
    health: Outage,
}

/// A request whose tokens Keystone accepted.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// Who `X-Auth-Token` speaks for.
    pub user: Arc<Context>,
    /// Who `X-Service-Token` speaks for, when one was sent (keystonemiddleware's
    /// `X-Service-*` headers).
    pub service: Option<Arc<Context>>,
}

/// Why a request is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401, with [`Keystone::challenge`].
    Unauthenticated(Unauthenticated),
    /// 503: Keystone did not answer, or not in time, or not as expected.
    Unavailable,
}

/// What was wrong with the request's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No `X-Auth-Token`, or an empty one.
    MissingToken,
    /// Keystone does not accept the `X-Auth-Token` (unknown, forged, revoked or expired), or
    /// it is no token at all (characters a token cannot have).
    InvalidToken,
    /// Keystone does not accept the `X-Service-Token`.
    InvalidServiceToken,
    /// The `X-Service-Token` has none of `service_token_roles`, which
    /// `service_token_roles_required` asks for.
    ServiceTokenWithoutRole,
}

impl Unauthenticated {
    /// The message of the 401.
    pub fn message(&self) -> &'static str {
        match self {
            Unauthenticated::MissingToken => {
                "The request you have made requires authentication: send a Keystone token in \
                 X-Auth-Token."
            }
            Unauthenticated::InvalidToken => {
                "The request you have made requires authentication: Keystone does not accept \
                 the X-Auth-Token (unknown, expired or revoked)."
            }
            Unauthenticated::InvalidServiceToken => {
                "The request you have made requires authentication: Keystone does not accept \
                 the X-Service-Token."
            }
            Unauthenticated::ServiceTokenWithoutRole => {
                "The request you have made requires authentication: the X-Service-Token has no \
                 service role."
            }
        }
    }
}

/// How one validation failed, inside this module.
#[derive(Debug)]
enum Failure {
    /// Keystone says no (or the token is expired); the reason is for a debug line.
    Invalid(String),
    /// Keystone could not say; the detail is for the error line.
    Unavailable(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invalid(reason) => write!(f, "invalid: {reason}"),
            Failure::Unavailable(detail) => f.write_str(detail),
        }
    }
}

impl Keystone {
    /// The validator of a child. Connects to nothing: glint's own token is got at the first
    /// request that needs it.
    pub fn new(settings: Arc<KeystoneSettings>) -> Keystone {
        Keystone {
            client: Client::new(&settings),
            service_token: ServiceToken::new(),
            cache: TokenCache::new(settings.token_cache_time),
            challenge: format!("Keystone uri=\"{}\"", settings.www_authenticate_uri),
            health: Outage::new("keystone", "Keystone"),
            settings,
        }
    }

    /// The `WWW-Authenticate` value of a 401: `Keystone uri="<www_authenticate_uri>"`.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// Checks a request's `X-Auth-Token` and `X-Service-Token` (raw header values) as the
    /// module doc says.
    pub fn authenticate(
        &self,
        user_token: Option<&[u8]>,
        service_token: Option<&[u8]>,
    ) -> Result<Authenticated, Refusal> {
        let Some(user_token) = user_token.map(trim).filter(|token| !token.is_empty()) else {
            return Err(Refusal::Unauthenticated(Unauthenticated::MissingToken));
        };
        let user_token =
            as_token(user_token).ok_or(Refusal::Unauthenticated(Unauthenticated::InvalidToken))?;
        let deadline = Deadline::after(self.settings.http_request_timeout);

        let mut allow_expired = false;
        let service = match service_token.map(trim).filter(|token| !token.is_empty()) {
            None => None,
            Some(service_token) => {
                let service_token = as_token(service_token).ok_or(Refusal::Unauthenticated(
                    Unauthenticated::InvalidServiceToken,
                ))?;
                let context =
                    self.validate(service_token, false, &deadline)
                        .map_err(|failure| {
                            self.refusal(failure, Unauthenticated::InvalidServiceToken)
                        })?;
                let has_role = context.has_any_role(&self.settings.service_token_roles);
                if self.settings.service_token_roles_required && !has_role {
                    log::debug!(
                        "keystone: X-Service-Token of {context} refused: none of the roles {}",
                        self.settings.service_token_roles.join(",")
                    );
                    return Err(Refusal::Unauthenticated(
                        Unauthenticated::ServiceTokenWithoutRole,
                    ));
                }
                allow_expired = has_role;
                Some(context)
            }
        };
        let user = self
            .validate(user_token, allow_expired, &deadline)
            .map_err(|failure| self.refusal(failure, Unauthenticated::InvalidToken))?;
        self.health.recovered();
        Ok(Authenticated { user, service })
    }

    /// The refusal for `failure`, logged: a bad token at debug, Keystone's failure at error
    /// (throttled).
    fn refusal(&self, failure: Failure, invalid: Unauthenticated) -> Refusal {
        match failure {
            Failure::Invalid(reason) => {
                // Keystone answered, or a cached answer did: either way it is not failing.
                self.health.recovered();
                log::debug!("keystone: {invalid:?}: {reason}");
                Refusal::Unauthenticated(invalid)
            }
            Failure::Unavailable(detail) => {
                self.health.failed(
                    || format!("{UNAVAILABLE_MESSAGE} ({detail}); answering 503 until it answers"),
                    &detail,
                );
                Refusal::Unavailable
            }
        }
    }

    /// One token's context: from the cache, else from Keystone (and then cached).
    fn validate(
        &self,
        token: &str,
        allow_expired: bool,
        deadline: &Deadline,
    ) -> Result<Arc<Context>, Failure> {
        let key = TokenKey::of(token.as_bytes());
        if let Some(context) = self.cache.get(&key, Instant::now()) {
            if !allow_expired && context.expired_at(SystemTime::now()) {
                return Err(Failure::Invalid(format!("{context}: expired (cached)")));
            }
            return Ok(context);
        }
        let body = self.fetch(token, allow_expired, deadline)?;
        let context = match Context::from_token_document(&body) {
            Ok(context) => Arc::new(context),
            Err(error) => {
                // keystonemiddleware: "Invalid token contents." The token is refused.
                log::warn!("keystone: {error}; the token is refused");
                return Err(Failure::Invalid(error.to_string()));
            }
        };
        let now = SystemTime::now();
        if !allow_expired && context.expired_at(now) {
            return Err(Failure::Invalid(format!("{context}: expired")));
        }
        self.cache
            .insert(key, context.clone(), Instant::now(), SystemTime::now());
        Ok(context)
    }

    /// Keystone's token document for `token`: `GET /v3/auth/tokens`, once more with a new
    /// token of glint's own if Keystone refuses the one it carried.
    fn fetch(
        &self,
        token: &str,
        allow_expired: bool,
        deadline: &Deadline,
    ) -> Result<Vec<u8>, Failure> {
        let query = if allow_expired {
            "?nocatalog&allow_expired=1"
        } else {
            "?nocatalog"
        };
        for attempt in 1..=2 {
            let issued = self
                .service_token
                .get(&self.settings, &self.client, deadline)?;
            let url = format!("{}{query}", issued.validate_url);
            let reply = self
                .client
                .get(
                    &url,
                    &[("X-Auth-Token", &issued.token), ("X-Subject-Token", token)],
                    deadline,
                )
                .map_err(|unreachable| Failure::Unavailable(unreachable.to_string()))?;
            match reply.status {
                200 => return Ok(reply.body),
                404 => {
                    return Err(Failure::Invalid(
                        "Keystone does not know it (404)".to_string(),
                    ))
                }
                401 if attempt == 1 => {
                    log::info!(
                        "keystone: Keystone refused glint's own token (401); getting a new one"
                    );
                    self.service_token.invalidate(&issued);
                }
                status => {
                    return Err(Failure::Unavailable(format!(
                        "GET {url} answered HTTP {status}: {}{}",
                        body_snippet(&reply.body),
                        match status {
                            401 =>
                                "; glint's own token was refused twice: check the service \
                                    user in [keystone_authtoken]",
                            403 =>
                                "; give glint's service user the service or admin role, \
                                    which Keystone's policy asks of whoever validates tokens",
                            _ => "",
                        }
                    )))
                }
            }
        }
        Err(Failure::Unavailable(
            "no validation was answered".to_string(),
        ))
    }
}

/// A header value without surrounding spaces (keystonemiddleware strips tokens, bug 1689468).
fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// The token in a header value, if it can be one (visible ASCII): anything else would not even
/// reach Keystone intact, and Keystone's tokens never hold it.
fn as_token(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value)
        .ok()
        .filter(|token| is_token(token))
}
