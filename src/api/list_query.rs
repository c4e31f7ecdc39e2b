//! `GET /v2/images` query parameters: filters, sorting and paging, parsed and checked the way
//! Glance does (every bad value is a 400 naming it), and the `next` link built from them.

use super::error::ApiError;
use crate::registry::{Filters, ListQuery, MemberStatus, SortDir, SortKey};

/// The most tag and custom-property filters one list request may carry: each becomes a
/// condition of the query, and SQLite refuses an expression deeper than 1000.
pub const MAX_FILTERS: usize = 100;

/// Parameters that are not filters on custom properties.
const RESERVED_PARAMETERS: &[&str] = &[
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "sort",
    "name",
    "status",
    "visibility",
    "owner",
    "tag",
    "protected",
    "os_hidden",
    "size_min",
    "size_max",
    "member_status",
    "id",
    "container_format",
    "disk_format",
    "checksum",
    "os_hash_value",
];

/// A parsed list request and what is needed to link the next page.
pub struct ListRequest {
    pub query: ListQuery,
    /// The query parameters other than `marker`, to repeat in the `next` link.
    pub link_parameters: Vec<(String, String)>,
}

/// Parses the query string of a list request.
pub fn parse(
    query_string: Option<&str>,
    limit_param_default: usize,
    api_limit_max: usize,
) -> Result<ListRequest, ApiError> {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query_string.unwrap_or("").as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
    let single = |name: &str| -> Option<&str> {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    };
    let all = |name: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
            .collect()
    };

    let limit = match single("limit") {
        None => limit_param_default,
        Some(text) => match text.parse::<i64>() {
            Ok(limit) if limit >= 0 => (limit as u64).min(api_limit_max as u64) as usize,
            Ok(_) => {
                return Err(ApiError::BadRequest(
                    "limit param must be positive".to_string(),
                ))
            }
            Err(_) => {
                return Err(ApiError::BadRequest(
                    "limit param must be an integer".to_string(),
                ))
            }
        },
    };
    let sort = sort_order(&all("sort"), &all("sort_key"), &all("sort_dir"))?;

    let text = |name: &str| single(name).map(str::to_string);
    let mut filters = Filters {
        name: text("name"),
        owner: text("owner"),
        id: text("id").map(|id| id.to_ascii_lowercase()),
        disk_format: text("disk_format"),
        container_format: text("container_format"),
        checksum: text("checksum"),
        os_hash_value: text("os_hash_value"),
        ..Filters::default()
    };
    if let Some(status) = single("status") {
        // Glance: any of the schema's statuses, spelled exactly; else 400 with this message.
        let status = status
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("Invalid status value: {status}")))?;
        filters.status = Some(status);
    }
    if let Some(visibility) = single("visibility") {
        if visibility != "all" && !super::representation::VISIBILITIES.contains(&visibility) {
            return Err(ApiError::BadRequest(format!(
                "Invalid visibility value: {visibility}"
            )));
        }
        filters.visibility = Some(visibility.to_string());
    }
    // Glance: the shared images a project lists are those whose membership is accepted,
    // unless `member_status` asks for another status or `all`.
    filters.member_status = match single("member_status").unwrap_or("accepted") {
        "all" => None,
        status => Some(
            MemberStatus::parse(status)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid status: {status}")))?,
        ),
    };
    filters.tags = all("tag").into_iter().map(str::to_string).collect();
    filters.protected = boolean_filter("protected", single("protected"))?;
    filters.os_hidden = boolean_filter("os_hidden", single("os_hidden"))?;
    filters.size_min = size_filter("size_min", single("size_min"))?;
    filters.size_max = size_filter("size_max", single("size_max"))?;
    for (name, value) in &pairs {
        if !RESERVED_PARAMETERS.contains(&name.as_str()) {
            filters.properties.push((name.clone(), value.clone()));
        }
    }
    if filters.properties.len() + filters.tags.len() > MAX_FILTERS {
        return Err(ApiError::BadRequest(format!(
            "Too many filters: at most {MAX_FILTERS} tag and property filters in one request."
        )));
    }

    let link_parameters = pairs
        .iter()
        .filter(|(name, _)| name != "marker")
        .cloned()
        .collect();
    Ok(ListRequest {
        query: ListQuery {
            filters,
            sort,
            limit,
            // Ids are stored in lowercase; a marker copied in another case still names its image.
            marker: single("marker").map(str::to_ascii_lowercase),
        },
        link_parameters,
    })
}

/// The `next` link: this request's parameters with `marker` set to the last image listed.
pub fn next_link(link_parameters: &[(String, String)], marker: &str) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in link_parameters {
        serializer.append_pair(name, value);
    }
    serializer.append_pair("marker", marker);
    format!("/v2/images?{}", serializer.finish())
}

/// The sort order from `sort=k1:dir,k2` or from repeated `sort_key`/`sort_dir` (not both).
fn sort_order(
    sort: &[&str],
    keys: &[&str],
    dirs: &[&str],
) -> Result<Vec<(SortKey, SortDir)>, ApiError> {
    if !sort.is_empty() && (!keys.is_empty() || !dirs.is_empty()) {
        return Err(ApiError::BadRequest(
            "The 'sort' parameter cannot be combined with 'sort_key' or 'sort_dir'.".to_string(),
        ));
    }
    let mut order = Vec::new();
    if !sort.is_empty() {
        for item in sort.iter().flat_map(|s| s.split(',')) {
            let mut parts = item.trim().splitn(2, ':');
            let key = sort_key(parts.next().unwrap_or("").trim())?;
            let dir = match parts.next() {
                Some(dir) => sort_dir(dir.trim())?,
                None => SortDir::Desc,
            };
            order.push((key, dir));
        }
        return Ok(order);
    }
    if dirs.len() > 1 && dirs.len() != keys.len() {
        return Err(ApiError::BadRequest(
            "Number of sort dirs does not match the number of sort keys".to_string(),
        ));
    }
    if keys.is_empty() && !dirs.is_empty() {
        // A direction alone applies to the default key, as in Glance.
        return Ok(vec![(SortKey::CreatedAt, sort_dir(dirs[0])?)]);
    }
    for (index, key) in keys.iter().enumerate() {
        let dir = match dirs.get(index).or(dirs.first()) {
            Some(dir) => sort_dir(dir)?,
            None => SortDir::Desc,
        };
        order.push((sort_key(key)?, dir));
    }
    Ok(order)
}

fn sort_key(name: &str) -> Result<SortKey, ApiError> {
    Ok(match name {
        "name" => SortKey::Name,
        "status" => SortKey::Status,
        "container_format" => SortKey::ContainerFormat,
        "disk_format" => SortKey::DiskFormat,
        "size" => SortKey::Size,
        "id" => SortKey::Id,
        "created_at" => SortKey::CreatedAt,
        "updated_at" => SortKey::UpdatedAt,
        "visibility" => SortKey::Visibility,
        "owner" => SortKey::Owner,
        "min_ram" => SortKey::MinRam,
        "min_disk" => SortKey::MinDisk,
        other => {
            return Err(ApiError::BadRequest(format!(
                "Invalid sort key: {other}. It should be one of the following: name, status, \
                 container_format, disk_format, size, id, created_at, updated_at, visibility, \
                 owner, min_ram, min_disk."
            )))
        }
    })
}

fn sort_dir(name: &str) -> Result<SortDir, ApiError> {
    match name {
        "asc" => Ok(SortDir::Asc),
        "desc" => Ok(SortDir::Desc),
        other => Err(ApiError::BadRequest(format!(
            "Invalid sort direction: {other}. It should be asc or desc."
        ))),
    }
}

/// `true` or `false` in any case, as Glance lower-cases them (openstacksdk sends `True`).
fn boolean_filter(name: &str, value: Option<&str>) -> Result<Option<bool>, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Invalid value '{other}' for '{name}' filter. Valid values are 'true' or 'false'."
        ))),
    }
}

fn size_filter(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    match value {
        None => Ok(None),
        Some(text) => text.parse::<u64>().map(Some).map_err(|_| {
            ApiError::BadRequest(format!("Invalid value for {name}: '{text}' is not a size"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_limits() {
        let parsed = parse(None, 25, 1000).unwrap();
        assert_eq!(parsed.query.limit, 25);
        assert!(parsed.query.sort.is_empty());
        assert_eq!(
            parse(Some("limit=5000"), 25, 1000).unwrap().query.limit,
            1000
        );
        for bad in [
            "limit=-1",
            "limit=x",
            "sort_key=bogus",
            "sort_dir=up",
            "protected=yes",
            "size_min=-3",
            "status=happy",
            "visibility=everyone",
            "sort=name&sort_key=name",
            "sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc",
        ] {
            assert_eq!(
                parse(Some(bad), 25, 1000).err().map(|e| e.status()),
                Some(400),
                "{bad}"
            );
        }
    }

    #[test]
    fn sort_forms() {
        let parsed = parse(Some("sort=name:asc,size"), 25, 1000).unwrap();
        assert_eq!(
            parsed.query.sort,
            vec![
                (SortKey::Name, SortDir::Asc),
                (SortKey::Size, SortDir::Desc)
            ]
        );
        let parsed = parse(Some("sort_key=name&sort_key=id&sort_dir=asc"), 25, 1000).unwrap();
        assert_eq!(
            parsed.query.sort,
            vec![(SortKey::Name, SortDir::Asc), (SortKey::Id, SortDir::Asc)]
        );
    }

    #[test]
    fn filters_and_next_link() {
        let parsed = parse(
            Some("name=a%20b&tag=x&tag=y&os_hidden=true&hw_arch=x86_64&marker=m&limit=2"),
            25,
            1000,
        )
        .unwrap();
        let filters = &parsed.query.filters;
        assert_eq!(filters.name.as_deref(), Some("a b"));
        assert_eq!(filters.tags, ["x", "y"]);
        assert_eq!(filters.os_hidden, Some(true));
        assert_eq!(
            filters.properties,
            [("hw_arch".to_string(), "x86_64".to_string())]
        );
        assert_eq!(parsed.query.marker.as_deref(), Some("m"));
        assert_eq!(
            next_link(&parsed.link_parameters, "last"),
            "/v2/images?name=a+b&tag=x&tag=y&os_hidden=true&hw_arch=x86_64&limit=2&marker=last"
        );
    }
}
