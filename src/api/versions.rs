//! Version discovery: `GET /` (300 Multiple Choices) and `GET /versions` (200), as Glance serves
//! them. glanceclient calls `/versions` first and needs an id starting with "v2"; openstacksdk
//! picks the highest version and follows its `self` link.

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::config::{Config, Flavor};
use crate::http::response::Response;
use crate::http::serve::Request;

/// The minor version glint calls CURRENT: 2.17 (locations), as Glance 2026.1 does. Glance's
/// master moves CURRENT to 2.18 with the cache's clean and prune calls, which glint lacks.
const CURRENT: u32 = 17;

/// The minor versions of the Image API this configuration serves, in the order Glance's
/// `versions.py` lists them (2026.1), with [`CURRENT`] among them. Glance builds the list from
/// its config and so do we:
/// - the cache API (`/v2/cache`, the `cachemanagement` flavor here; `image_cache_dir` in
///   Glance) adds 2.16, 2.15 and 2.14, which `glance cache-list` and its kin require exactly;
///   without it only 2.15 is listed;
/// - several stores (`enabled_backends`) add 2.13 to 2.8, as Glance lists them (2.12 stands for
///   `glance image-tasks`, which glint does not serve yet); with one store only 2.9 is listed,
///   as Glance lists it without several;
/// - then 2.17 and 2.7 to 2.0, always.
///
/// Only a listed version is accepted as a path prefix (`/v2.14/...`), as in Glance. Static
/// lists, because every `/v2.N/` request looks its N up here.
pub fn minor_versions(config: &Config) -> &'static [u32] {
    const CACHE_API_STORES: &[u32] = &[
        16, 15, 14, 13, 12, 11, 10, 9, 8, CURRENT, 7, 6, 5, 4, 3, 2, 1, 0,
    ];
    const CACHE_API: &[u32] = &[16, 15, 14, 9, CURRENT, 7, 6, 5, 4, 3, 2, 1, 0];
    const STORES: &[u32] = &[15, 13, 12, 11, 10, 9, 8, CURRENT, 7, 6, 5, 4, 3, 2, 1, 0];
    const PLAIN: &[u32] = &[15, 9, CURRENT, 7, 6, 5, 4, 3, 2, 1, 0];
    match (serves_cache_api(config), config.backends.is_some()) {
        (true, true) => CACHE_API_STORES,
        (true, false) => CACHE_API,
        (false, true) => STORES,
        (false, false) => PLAIN,
    }
}

/// Whether this configuration serves Glance's cache API under `/v2/cache`.
fn serves_cache_api(config: &Config) -> bool {
    config.flavor == Flavor::CacheManagement
}

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
    let versions: Vec<Value> = minor_versions(config)
        .iter()
        .map(|&minor| {
            json!({
                "id": format!("v2.{minor}"),
                "status": if minor == CURRENT { "CURRENT" } else { "SUPPORTED" },
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
