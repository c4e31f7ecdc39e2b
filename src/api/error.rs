//! The API's one error type and the one place it becomes a response.
//!
//! Every handler returns `Result<Response, ApiError>`; `ApiError::into_response` picks the status
//! and renders the body as Glance does, through webob (`super::webob`): HTML, JSON
//! `{"message", "code", "title"}` or plain text, negotiated from the request's `Accept` exactly
//! as webob negotiates it. So each client reads what it reads from Glance: glanceclient, which
//! sends `Accept: */*` and falls over on a JSON body, gets HTML and shows its text; openstacksdk,
//! which sends `Accept: application/json`, gets JSON and shows its `message`. A client's mistake
//! is logged at debug; only `Internal` is an operator's problem and is logged at error.

use std::fmt;

use super::webob::{self, Fragment};
use crate::http::response::{reason_phrase, Body, Response};
use crate::http::serve::Request;

/// A failed API request.
#[derive(Debug)]
pub enum ApiError {
    /// 400: malformed JSON, a value of the wrong type, a bad filter or marker.
    BadRequest(String),
    /// 401: no acceptable `X-Auth-Token` (`auth_strategy = token`, or Keystone); `challenge` is
    /// the `WWW-Authenticate` value: [`WWW_AUTHENTICATE`], or `Keystone uri="..."`.
    Unauthorized { message: String, challenge: String },
    /// 403: read-only or reserved attributes, protected images, removing a base attribute.
    Forbidden(String),
    /// 404: no such image, tag or route.
    NotFound(String),
    /// 405, with the methods the resource allows.
    MethodNotAllowed { allow: &'static str },
    /// 408: a small (JSON) body that did not arrive within its deadline.
    RequestTimeout(String),
    /// 409: an image in the wrong state, a duplicate id, a property already present or absent.
    Conflict(String),
    /// 410: the image was deleted while its data was being uploaded.
    Gone(String),
    /// 413: an image larger than image_size_cap, or no room in any data directory.
    TooLarge(String),
    /// 415, with the patch media types when the route is PATCH.
    UnsupportedMediaType { message: String, accept_patch: bool },
    /// 416: an unsatisfiable Range; carries the size for `Content-Range: bytes */SIZE`.
    RangeNotSatisfiable { size: u64 },
    /// 500: something broke on our side (the registry or the store); logged at error.
    Internal(String),
    /// 503: the metadata database stayed locked for longer than its busy timeout, or Keystone
    /// cannot validate tokens.
    Unavailable(String),
}

/// The challenge of a 401 under `auth_strategy = token` (RFC 9110 §11.6.1 requires one): the
/// scheme names the header the client must send, the realm names the server.
/// keystonemiddleware's `Keystone uri=...` is sent only with a keystone flavor: here it would
/// send a client to a keystone that does not exist. Glance clients do not read the header.
pub const WWW_AUTHENTICATE: &str = "X-Auth-Token realm=\"glint\"";

/// The media types PATCH accepts, newest first (sent as `Accept-Patch` with a 415).
pub const PATCH_MEDIA_TYPES: &str =
    "application/openstack-images-v2.1-json-patch, application/openstack-images-v2.0-json-patch";

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized { .. } => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::RequestTimeout(_) => 408,
            ApiError::Conflict(_) => 409,
            ApiError::Gone(_) => 410,
            ApiError::TooLarge(_) => 413,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::RangeNotSatisfiable { .. } => 416,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_) => 503,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(message)
            | ApiError::Unauthorized { message, .. }
            | ApiError::Forbidden(message)
            | ApiError::NotFound(message)
            | ApiError::RequestTimeout(message)
            | ApiError::Conflict(message)
            | ApiError::Gone(message)
            | ApiError::TooLarge(message)
            | ApiError::Unavailable(message) => message.clone(),
            ApiError::UnsupportedMediaType { message, .. } => message.clone(),
            // The body names the method (see `into_response`).
            ApiError::MethodNotAllowed { .. } => {
                "The method is not allowed for this resource.".to_string()
            }
            ApiError::RangeNotSatisfiable { .. } => {
                "The requested range is not satisfiable.".to_string()
            }
            // The details are in the log; the client gets no internals.
            ApiError::Internal(_) => "The server has either erred or is incapable of \
                                      performing the requested operation."
                .to_string(),
        }
    }

    /// The response for this error, in the form the client asked for.
    pub fn into_response(self, request: &Request<'_>) -> Response {
        match &self {
            ApiError::Internal(detail) => log::error!(
                "{} {}: internal error: {detail}",
                request.method(),
                request.path()
            ),
            other => log::debug!("{} {}: {other}", request.method(), request.path()),
        }
        let message = self.message();
        let fragment = match self {
            // webob's 405 has its own template, which names the request's method.
            ApiError::MethodNotAllowed { .. } => Fragment::MethodNotAllowed {
                method: request.method(),
            },
            _ => Fragment::Explanation(&message),
        };
        let response = render_fragment(request, self.status(), fragment);
        match self {
            ApiError::Unauthorized { challenge, .. } => {
                response.header("WWW-Authenticate", &challenge)
            }
            ApiError::MethodNotAllowed { allow } => response.header("Allow", allow),
            ApiError::UnsupportedMediaType {
                accept_patch: true, ..
            } => response.header("Accept-Patch", PATCH_MEDIA_TYPES),
            ApiError::RangeNotSatisfiable { size } => {
                response.header("Content-Range", &format!("bytes */{size}"))
            }
            _ => response,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Internal(detail) => write!(f, "{} (500): {detail}", self.message()),
            _ => write!(f, "{} ({})", self.message(), self.status()),
        }
    }
}

impl std::error::Error for ApiError {}

/// `error` and each of its causes, joined by ": ", for the detail of an `Internal` error: the
/// one log line an operator gets should say what broke, not only what was being done.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let message = error.to_string();
        // Some errors (rusqlite's) already end their message with their cause's.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = error.source();
    }
    text
}

/// An error response whose body says `message`, in the format webob negotiates with the
/// request's `Accept` (HTML, JSON or plain text; see `super::webob`).
pub fn render(request: &Request<'_>, status: u16, message: &str) -> Response {
    render_fragment(request, status, Fragment::Explanation(message))
}

fn render_fragment(request: &Request<'_>, status: u16, fragment: Fragment<'_>) -> Response {
    let accept = request
        .head
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("accept"))
        .map(|header| header.value.as_slice());
    let format = webob::choose(accept);
    let title = glance_title(status);
    let body = webob::render(format, &format!("{status} {title}"), title, fragment);
    let mut response = Response::new(status).header("Content-Type", format.content_type());
    response.body = Body::Bytes(body.into_bytes());
    response
}

/// The title of a status in an error body, webob's: it keeps RFC 2616's "Request Entity Too
/// Large" for 413 (Glance's answer to its quotas and to image_size_cap) and "Request Range Not
/// Satisfiable" for 416 where RFC 9110 says "Content Too Large" and "Range Not Satisfiable";
/// clients that show the title show Glance's. The others are RFC 9110's phrases, as the status
/// line always is.
fn glance_title(status: u16) -> &'static str {
    match status {
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        416 => "Request Range Not Satisfiable",
        422 => "Unprocessable Entity",
        _ => reason_phrase(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{RegistryError, UnknownImageStatus};

    #[test]
    fn with_causes_shows_each_message_of_the_chain_once() {
        let unknown = UnknownImageStatus {
            value: "frozen".to_string(),
        };
        // rusqlite's message already ends with its cause's, which is also its source.
        let error = RegistryError::Sql {
            context: "read image x".to_string(),
            source: crate::registry::sql::SqlError::Conversion {
                column: 2,
                source: Box::new(unknown),
            },
        };
        let text = with_causes(&error);
        assert!(
            text.starts_with("registry: failed to read image x: conversion error in column 2"),
            "{text}"
        );
        assert_eq!(text.matches("\"frozen\"").count(), 1, "{text}");

        let without_cause = RegistryError::BadMarker;
        assert_eq!(with_causes(&without_cause), without_cause.to_string());
    }
}
