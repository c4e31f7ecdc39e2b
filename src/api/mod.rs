//! The Glance Image API v2 as a [`Handler`]: routing, and the error responses Glance clients
//! understand.
//!
//! Routing is one `match` on the method and the path's segments. This issue serves the
//! healthcheck and version discovery; the images API slots in as more arms under `/v2`.
//! `api` knows nothing of processes or sockets: it gets a parsed request and returns a response.

mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;

use crate::config::Config;
use crate::http::response::Response;
use crate::http::serve::{Handler, Request};

/// The application one child serves, built from its generation's config.
pub struct Api {
    config: Arc<Config>,
    generation: u64,
    /// The address the child's listener is bound to (the real port when bind_port is 0), for
    /// links when neither public_endpoint nor a usable Host header gives one.
    local_address: SocketAddr,
}

impl Api {
    pub fn new(config: Arc<Config>, generation: u64, local_address: SocketAddr) -> Api {
        Api {
            config,
            generation,
            local_address,
        }
    }

    /// The generation whose config this handler serves.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Handler for Api {
    fn handle(&self, request: &mut Request<'_>) -> Response {
        let method = request.method().to_string();
        let path = request.path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let read_only = matches!(method.as_str(), "GET" | "HEAD");
        match segments.as_slice() {
            ["healthcheck"] if read_only => Response::text(200, "OK"),
            ["healthcheck"] => method_not_allowed(request, "GET, HEAD"),
            [] if read_only => versions::document(request, &self.config, self.local_address, 300),
            ["versions"] if read_only => {
                versions::document(request, &self.config, self.local_address, 200)
            }
            [] | ["versions"] => method_not_allowed(request, "GET, HEAD"),
            _ => error(request, 404, "The resource could not be found."),
        }
    }
}

/// An error in the form the client asked for: Glance's JSON body when the client accepts JSON
/// (openstacksdk), plain text otherwise (glanceclient reads the Content-Type and crashes on a
/// JSON body it did not ask for). Always with a Content-Type.
pub fn error(request: &Request<'_>, status: u16, message: &str) -> Response {
    let title = crate::http::response::reason_phrase(status);
    let wants_json = request
        .head
        .header_str("accept")
        .is_some_and(|accept| accept.contains("application/json"));
    if wants_json {
        Response::json(
            status,
            &json!({"message": message, "code": format!("{status} {title}"), "title": title}),
        )
    } else {
        Response::text(status, &format!("{status} {title}\n\n{message}\n"))
    }
}

fn method_not_allowed(request: &Request<'_>, allow: &str) -> Response {
    error(
        request,
        405,
        &format!(
            "The method {} is not allowed for this resource.",
            request.method()
        ),
    )
    .header("Allow", allow)
}
