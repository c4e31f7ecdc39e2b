//! Access control: the check every request passes before it is routed.
//!
//! Under `auth_strategy = token` a request must carry an `X-Auth-Token` header whose value is
//! one of the tokens the config loaded from `auth_token_file`, else it gets 401 with a
//! `WWW-Authenticate` challenge ([`super::error::WWW_AUTHENTICATE`]), before routing, so an
//! unknown path or a wrong method also answers 401 (as behind keystonemiddleware, which
//! authenticates before Glance routes). The exceptions are the paths a client or a load balancer
//! needs before it has a token: `/healthcheck` and version discovery (`/`, `/versions`), for
//! any method. Under `noauth` every request passes, as in Glance without keystone.
//!
//! The check is all-or-nothing: a listed token may do anything. It knows no users, projects or
//! roles; the token is never logged, and the comparison (`config::Tokens::accepts`) takes the
//! same time whichever token or byte differs.

use crate::config::AuthStrategy;
use crate::http::serve::Request;

use super::error::ApiError;

/// The header clients send their token in (glanceclient with `OS_AUTH_TOKEN`, keystoneauth's
/// token plugins).
pub const TOKEN_HEADER: &str = "x-auth-token";

/// How a request that may proceed got through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// An open path: no credentials were asked for.
    Open,
    /// Its credentials were accepted (under `noauth`, every request to a path that is not open:
    /// the API serves it as the one anonymous context).
    Accepted,
}

/// How `request` may proceed under `strategy`, else the 401 to answer.
pub fn check(strategy: &AuthStrategy, request: &Request<'_>) -> Result<Access, ApiError> {
    if is_open(request.path()) {
        return Ok(Access::Open);
    }
    let AuthStrategy::Token(tokens) = strategy else {
        return Ok(Access::Accepted);
    };
    match request.head.header(TOKEN_HEADER) {
        Some(token) if tokens.accepts(token) => Ok(Access::Accepted),
        Some(_) => Err(ApiError::Unauthorized(
            "The X-Auth-Token is not valid: it is not listed in glint's token file.".to_string(),
        )),
        None => Err(ApiError::Unauthorized(
            "The request you have made requires authentication: send an X-Auth-Token header."
                .to_string(),
        )),
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
