//! Access control: the check every request passes before it is routed.
//!
//! A child builds its [`Gate`] from its generation's `auth_strategy`:
//! - `noauth`: every request passes, as in Glance without keystone;
//! - `token`: a request must carry an `X-Auth-Token` whose value is one of the tokens the config
//!   loaded from `auth_token_file`; the check is all-or-nothing (a listed token may do
//!   anything), the token is never logged, and the comparison (`config::Tokens::accepts`) takes
//!   the same time whichever token or byte differs;
//! - keystone (a keystone `[paste_deploy] flavor`): Keystone validates the `X-Auth-Token` (and
//!   an `X-Service-Token`), as keystonemiddleware's auth_token does (`crate::keystone`); the
//!   request then carries who it speaks for ([`Caller::Keystone`]), and Keystone failing is a
//!   503 ("The Keystone service is temporarily unavailable.").
//!
//! A refused request gets 401 with a `WWW-Authenticate` challenge (`Keystone uri="..."` under
//! keystone, [`super::error::WWW_AUTHENTICATE`] under `token`) before routing, so an unknown
//! path or a wrong method also answers 401 (as behind keystonemiddleware, which authenticates
//! before Glance routes). The exceptions are the paths a client or a load balancer needs before
//! it has a token: `/healthcheck` and version discovery (`/`, `/versions`), for any method.
//!
//! Identity travels as the typed [`Caller`], never as request headers: a client's `X-Roles`,
//! `X-Identity-Status` or `X-User-Id` is read by nothing, which is what keystonemiddleware
//! achieves by stripping them.

use crate::config::{AuthStrategy, Tokens};
use crate::http::serve::Request;
use crate::keystone::{Authenticated, Keystone, Refusal, UNAVAILABLE_MESSAGE};

use super::error::{ApiError, WWW_AUTHENTICATE};

/// The header clients send their token in (glanceclient with `OS_AUTH_TOKEN`, keystoneauth's
/// token plugins).
pub const TOKEN_HEADER: &str = "x-auth-token";

/// The header a service sends its own token in beside the user's (keystonemiddleware's
/// service tokens).
pub const SERVICE_TOKEN_HEADER: &str = "x-service-token";

/// The access control of one child, from its generation's config.
pub enum Gate {
    NoAuth,
    Tokens(Tokens),
    /// Boxed: a validator with its cache and client is much larger than the other variants.
    Keystone(Box<Keystone>),
}

/// How a request that may proceed got through.
#[derive(Clone, Debug)]
pub enum Access {
    /// An open path: no credentials were asked for.
    Open,
    /// Its credentials were accepted (under `noauth`, every request to a path that is not open:
    /// the API serves it as the one anonymous context).
    Accepted(Caller),
}

/// Who a request whose credentials were accepted speaks for: what policy, ownership and
/// visibility (issue 11, parts 2 to 5) decide on.
#[derive(Clone, Debug)]
pub enum Caller {
    /// `noauth`: nobody in particular; Glance's default pipeline gives such a request an
    /// admin context.
    Anonymous,
    /// `token`: a token of `auth_token_file`, which may do anything.
    ListedToken,
    /// Keystone: the validated user (and service) identity.
    Keystone(Authenticated),
}

impl Gate {
    /// The gate for `strategy`. Under keystone it connects to nothing yet.
    pub fn new(strategy: &AuthStrategy) -> Gate {
        match strategy {
            AuthStrategy::NoAuth => Gate::NoAuth,
            AuthStrategy::Token(tokens) => Gate::Tokens(tokens.clone()),
            AuthStrategy::Keystone(settings) => {
                Gate::Keystone(Box::new(Keystone::new(settings.clone())))
            }
        }
    }

    /// How `request` may proceed, else the 401 or 503 to answer.
    pub fn check(&self, request: &Request<'_>) -> Result<Access, ApiError> {
        if is_open(request.path()) {
            return Ok(Access::Open);
        }
        match self {
            Gate::NoAuth => Ok(Access::Accepted(Caller::Anonymous)),
            Gate::Tokens(tokens) => match request.head.header(TOKEN_HEADER) {
                Some(token) if tokens.accepts(token) => Ok(Access::Accepted(Caller::ListedToken)),
                Some(_) => Err(ApiError::Unauthorized {
                    message: "The X-Auth-Token is not valid: it is not listed in glint's token \
                              file."
                        .to_string(),
                    challenge: WWW_AUTHENTICATE.to_string(),
                }),
                None => Err(ApiError::Unauthorized {
                    message: "The request you have made requires authentication: send an \
                              X-Auth-Token header."
                        .to_string(),
                    challenge: WWW_AUTHENTICATE.to_string(),
                }),
            },
            Gate::Keystone(keystone) => match keystone.authenticate(
                request.head.header(TOKEN_HEADER),
                request.head.header(SERVICE_TOKEN_HEADER),
            ) {
                Ok(authenticated) => {
                    log::debug!(
                        "{} {}: {}{}",
                        request.method(),
                        request.path(),
                        authenticated.user,
                        authenticated
                            .service
                            .as_ref()
                            .map_or(String::new(), |service| format!(", service {service}"))
                    );
                    Ok(Access::Accepted(Caller::Keystone(authenticated)))
                }
                Err(Refusal::Unauthenticated(why)) => Err(ApiError::Unauthorized {
                    message: why.message().to_string(),
                    challenge: keystone.challenge().to_string(),
                }),
                Err(Refusal::Unavailable) => {
                    Err(ApiError::Unavailable(UNAVAILABLE_MESSAGE.to_string()))
                }
            },
        }
    }
}

/// Whether `path` is served without a token: `/healthcheck`, `/` and `/versions`, matched by
/// segments as the router matches them (so `/versions/` and `//` are open too).
fn is_open(path: &str) -> bool {
    let mut segments = path.split('/').filter(|segment| !segment.is_empty());
    matches!(
        (segments.next(), segments.next()),
        (None, _) | (Some("healthcheck" | "versions"), None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_check_and_version_discovery_are_open() {
        for open in [
            "/",
            "",
            "//",
            "/versions",
            "/versions/",
            "/healthcheck",
            "//healthcheck",
        ] {
            assert!(is_open(open), "{open:?}");
        }
        for closed in [
            "/v2",
            "/v2/",
            "/v2/images",
            "/v2/schemas/image",
            "/versions/v2",
            "/healthcheck/x",
            "/Versions",
            "/v2/versions",
            "/images",
        ] {
            assert!(!is_open(closed), "{closed:?}");
        }
    }
}
