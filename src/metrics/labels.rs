//! The label values of every metric family, fixed at compile time: each table is the complete
//! set of values a label can take, so the shared block (`block`) has one counter per
//! combination and a scrape can never grow without bound, whatever clients send.

/// The methods counted by name; any other is counted as [`OTHER`].
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The label value of a method, or a status code, outside its table.
pub const OTHER: &str = "other";

/// The route templates, as the Glance API reference writes them, plus [`UNMATCHED`] last. A
/// minor version (`/v2.9/...`) counts under `/v2/`.
pub const ROUTES: &[&str] = &[
    "/",
    "/versions",
    "/healthcheck",
    "/v2/schemas/{schema}",
    "/v2/images",
    "/v2/images/{image_id}",
    "/v2/images/{image_id}/file",
    "/v2/images/{image_id}/tags/{tag_value}",
    "/v2/images/{image_id}/members",
    "/v2/images/{image_id}/members/{member_id}",
    "/v2/images/{image_id}/actions/deactivate",
    "/v2/images/{image_id}/actions/reactivate",
    "/v2/cache",
    "/v2/cache/{image_id}",
    UNMATCHED,
];

/// The route of a request no template matched (a 404, or a request head that did not parse).
pub const UNMATCHED: &str = "unmatched";

/// The status codes counted by number: every code glint's HTTP layer and API send. Any other
/// is counted as [`OTHER`].
pub const STATUSES: &[u16] = &[
    200, 201, 202, 204, 206, 300, 304, 400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413,
    414, 415, 416, 417, 422, 429, 431, 500, 501, 503, 505,
];

/// The upper bounds of the request-duration histogram's buckets, in microseconds (the block
/// keeps integers); rendered in seconds as `le`. The last bucket, `+Inf`, is implicit.
pub const DURATION_BUCKETS_US: &[u64] = &[
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// The outcomes of a reload (`glint_reloads_total{outcome}`).
pub const RELOAD_OUTCOMES: &[&str] = &["succeeded", "failed"];

/// The states of a child (`glint_children{state}`), as the status file names them.
pub const CHILD_STATES: &[&str] = &["starting", "serving", "draining", "killed"];

/// The two sides of a reload's connection handoff (`glint_handoff_connections_total{side}`).
pub const HANDOFF_SIDES: &[&str] = &["sent", "adopted"];

/// The answers of the image cache (`glint_image_cache_lookups_total{result}`).
pub const CACHE_RESULTS: &[&str] = &["hit", "miss"];

pub const N_METHODS: usize = 8;
pub const N_ROUTES: usize = 15;
pub const N_STATUSES: usize = 31;
pub const N_BUCKETS: usize = 16;

// The block's array sizes must match the tables (the "other" and "+Inf" slots included).
const _: () = assert!(N_METHODS == METHODS.len() + 1);
const _: () = assert!(N_ROUTES == ROUTES.len());
const _: () = assert!(N_STATUSES == STATUSES.len() + 1);
const _: () = assert!(N_BUCKETS == DURATION_BUCKETS_US.len() + 1);

/// The index of `method` in [`METHODS`], or of [`OTHER`] after them.
pub fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|known| *known == method)
        .unwrap_or(METHODS.len())
}

/// The label of the method at `index`.
pub fn method_label(index: usize) -> &'static str {
    METHODS.get(index).copied().unwrap_or(OTHER)
}

/// The index of the route template `route`, or of [`UNMATCHED`].
pub fn route_index(route: &str) -> usize {
    ROUTES
        .iter()
        .position(|known| *known == route)
        .unwrap_or(ROUTES.len() - 1)
}

/// The index of `status` in [`STATUSES`], or of [`OTHER`] after them.
pub fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|known| *known == status)
        .unwrap_or(STATUSES.len())
}

/// The label of the status at `index`.
pub fn status_label(index: usize) -> String {
    STATUSES
        .get(index)
        .map_or_else(|| OTHER.to_string(), |status| status.to_string())
}

/// The bucket of a duration in microseconds (the last one is `+Inf`).
pub fn bucket_index(micros: u64) -> usize {
    DURATION_BUCKETS_US
        .iter()
        .position(|bound| micros <= *bound)
        .unwrap_or(DURATION_BUCKETS_US.len())
}

/// The route template of a request path, by the shape of its segments alone (the API's router
/// decides what the request gets; this only names it): `/v2.N/` counts as `/v2/`, an image id or
/// member id in its place is the template's placeholder, and anything else is [`UNMATCHED`].
pub fn route_of_path(path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => "/",
        ["versions"] => "/versions",
        ["healthcheck"] => "/healthcheck",
        [version, rest @ ..] if is_v2(version) => match rest {
            ["schemas", _] | ["schemas", "metadefs", _] => "/v2/schemas/{schema}",
            ["images"] => "/v2/images",
            ["images", _] => "/v2/images/{image_id}",
            ["images", _, "file"] => "/v2/images/{image_id}/file",
            ["images", _, "tags", _] => "/v2/images/{image_id}/tags/{tag_value}",
            ["images", _, "members"] => "/v2/images/{image_id}/members",
            ["images", _, "members", _] => "/v2/images/{image_id}/members/{member_id}",
            ["images", _, "actions", "deactivate"] => "/v2/images/{image_id}/actions/deactivate",
            ["images", _, "actions", "reactivate"] => "/v2/images/{image_id}/actions/reactivate",
            ["cache"] => "/v2/cache",
            ["cache", _] => "/v2/cache/{image_id}",
            _ => UNMATCHED,
        },
        _ => UNMATCHED,
    }
}

/// `v2`, or `v2.N` with N a number.
fn is_v2(segment: &str) -> bool {
    match segment.strip_prefix("v2") {
        Some("") => true,
        Some(minor) => minor
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_shape_names_one_template_and_anything_else_is_unmatched() {
        assert_eq!(route_of_path("/"), "/");
        assert_eq!(route_of_path("/v2/images"), "/v2/images");
        assert_eq!(
            route_of_path("/v2.9/images/abc/file"),
            "/v2/images/{image_id}/file"
        );
        assert_eq!(
            route_of_path("/v2/images/abc/members/p1"),
            "/v2/images/{image_id}/members/{member_id}"
        );
        assert_eq!(
            route_of_path("/v2/schemas/metadefs/namespace"),
            "/v2/schemas/{schema}"
        );
        assert_eq!(route_of_path("/v3/images"), UNMATCHED);
        assert_eq!(route_of_path("/v2/images/a/b/c/d/e"), UNMATCHED);
        for route in &ROUTES[..ROUTES.len() - 1] {
            assert_ne!(route_index(route), ROUTES.len() - 1, "{route}");
        }
    }

    #[test]
    fn unknown_methods_and_statuses_fall_in_the_other_bucket() {
        assert_eq!(method_label(method_index("GET")), "GET");
        assert_eq!(method_label(method_index("BREW")), OTHER);
        assert_eq!(status_label(status_index(404)), "404");
        assert_eq!(status_label(status_index(418)), OTHER);
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1_000), 0);
        assert_eq!(bucket_index(1_001), 1);
        assert_eq!(bucket_index(u64::MAX), N_BUCKETS - 1);
    }
}
