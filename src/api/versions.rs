//! Version discovery: `GET /` (300 Multiple Choices) and `GET /versions` (200), as Glance serves
//! them. glanceclient calls `/versions` first and needs an id starting with "v2"; openstacksdk
//! picks the highest version and follows its `self` link.

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::config::Config;
use crate::http::response::Response;
use crate::http::serve::Request;

/// The minor versions listed, newest first; the first is CURRENT, the rest SUPPORTED. Glance's
/// own list (glance/api/versions.py) without the multi-store entries.
pub const MINOR_VERSIONS: &[u32] = &[17, 16, 15, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];

/// The versions document with `status`. Links use `public_endpoint` when set, else the Host the
/// client addressed (as Glance does with the request's host URL).
pub fn document(
    request: &Request<'_>,
    config: &Config,
    local_address: SocketAddr,
    status: u16,
) -> Response {
    let base = match &config.public_endpoint {
        Some(endpoint) => endpoint.clone(),
        None => match request.head.header_str("host") {
            Some(host) if is_plausible_host(host) => format!("http://{host}"),
            _ => format!("http://{local_address}"),
        },
    };
    let versions: Vec<Value> = MINOR_VERSIONS
        .iter()
        .enumerate()
        .map(|(index, minor)| {
            json!({
                "id": format!("v2.{minor}"),
                "status": if index == 0 { "CURRENT" } else { "SUPPORTED" },
                "links": [{"rel": "self", "href": format!("{base}/v2/")}],
            })
        })
        .collect();
    Response::json(status, &json!({ "versions": versions }))
}

/// A Host header we are willing to echo into a link: host[:port] characters only, so that a
/// hostile header cannot inject anything into the document.
fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}
