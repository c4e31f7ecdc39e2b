//! `GET` and `HEAD /healthcheck`, answered as oslo.middleware's healthcheck answers in Glance:
//! 200 `OK` (HEAD: 204), or 503 `DISABLED BY FILE` while the operator's disable file exists,
//! so that a load balancer takes the node out before it is stopped or upgraded
//! (`[healthcheck]`, see `config::healthcheck`).
//!
//! Each backend gives one result; the node is healthy when every result is. The body lists
//! the results' reasons as plain text, JSON or HTML, whichever the `Accept` header ranks first
//! among those three (oslo's order), plain text when it accepts none. The files are looked up
//! at every check, not cached: creating or removing one must take effect at the next probe,
//! and a `stat` costs far less than the probe's own round trip.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::webob::{self, Format};
use crate::config::healthcheck::Healthcheck;
use crate::http::response::{Body, Response};
use crate::http::serve::Request;
use crate::registry::Registry;

/// The reason of a healthy backend.
const OK: &str = "OK";
/// The reason of a backend whose disable file exists.
const DISABLED: &str = "DISABLED BY FILE";
/// glint's own reason, for a registry on PostgreSQL that does not answer: a load balancer then
/// sends requests to the nodes that can serve them.
const DATABASE_UNREACHABLE: &str = "DATABASE UNREACHABLE";

/// The answer to a health check that arrived on listening port `port`.
pub(super) fn answer(
    request: &Request<'_>,
    settings: &Healthcheck,
    registry: &Registry,
    port: u16,
) -> Response {
    let mut reasons = reasons(settings, port);
    if registry.is_shared() {
        reasons.push(match registry.ping() {
            Ok(()) => OK,
            Err(_) => DATABASE_UNREACHABLE,
        });
    }
    let healthy = reasons.iter().all(|reason| *reason == OK);
    if request.method() == "HEAD" {
        let status = if healthy { 204 } else { 503 };
        return Response::new(status).header("Content-Type", Format::Plain.content_type());
    }
    let status = if healthy { 200 } else { 503 };
    let accept = request
        .head
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("accept"))
        .map(|header| header.value.as_slice());
    let format = webob::choose_among(accept, &[Format::Plain, Format::Html, Format::Json]);
    let body = match format {
        // oslo.middleware's indent of 4 and sorted keys.
        Format::Json => {
            let document = json!({ "detailed": false, "reasons": reasons });
            let mut bytes = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
            match document.serialize(&mut serializer) {
                Ok(()) => String::from_utf8(bytes).unwrap_or_default(),
                Err(_) => String::new(),
            }
        }
        Format::Html => html(&reasons),
        Format::Plain => reasons.join("\n"),
    };
    let mut response = Response::new(status).header("Content-Type", format.content_type());
    response.body = Body::Bytes(body.into_bytes());
    response
}

/// One reason per configured backend, in oslo's order of backends.
fn reasons(settings: &Healthcheck, port: u16) -> Vec<&'static str> {
    let by_file = |path: Option<&Path>| match path {
        Some(path) if path.exists() => DISABLED,
        _ => OK,
    };
    let mut reasons = Vec::new();
    if settings.by_file {
        reasons.push(by_file(settings.disable_by_file.as_deref()));
    }
    if let Some(ports) = &settings.by_port {
        let path = ports
            .iter()
            .find(|(listening, _)| *listening == port)
            .map(|(_, path)| path.as_path());
        reasons.push(by_file(path));
    }
    reasons
}

/// oslo.middleware's HTML page without details: a table of the reasons.
fn html(reasons: &[&str]) -> String {
    let rows: String = reasons
        .iter()
        .map(|reason| format!("<TR>\n    <TD>{reason}</TD>\n</TR>\n"))
        .collect();
    format!(
        "<HTML>\n<HEAD><TITLE>Healthcheck Status</TITLE></HEAD>\n<BODY>\n\n\
         <H2>Result of {} checks:</H2>\n<TABLE bgcolor=\"#ffffff\" border=\"1\">\n<TBODY>\n\
         <TR>\n\n<TH>\nReason\n</TH>\n</TR>\n{rows}</TBODY>\n</TABLE>\n<HR></HR>\n\n</BODY>\n</HTML>",
        reasons.len()
    )
}
