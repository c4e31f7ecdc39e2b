//! `PATCH /v2/images/{id}`: Glance's JSON-patch dialects, parsed into a list of changes and
//! applied to an image.
//!
//! Two media types exist. `application/openstack-images-v2.1-json-patch` is RFC 6902 shaped
//! (`{"op": "add", "path": "/name", "value": ...}`), and `add` on a present attribute replaces
//! it. `application/openstack-images-v2.0-json-patch` is Glance's older draft-4 shape
//! (`{"add": "/name", "value": ...}`), where `add` on a present attribute is a conflict. Paths
//! are JSON pointers of one segment: an image has no nested attributes glint lets clients edit.

use serde_json::Value;

use super::error::ApiError;
use super::representation::{self, check_writable, is_base};
use crate::registry::{Image, ImageStatus};

/// The two dialects, by media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `application/openstack-images-v2.1-json-patch` (RFC 6902 semantics for `add`).
    V21,
    /// `application/openstack-images-v2.0-json-patch` (`add` refuses a present attribute).
    V20,
}

/// One change.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Add { name: String, value: Value },
    Replace { name: String, value: Value },
    Remove { name: String },
}

/// The dialect of a request's Content-Type, or 415 with `Accept-Patch`.
pub fn dialect(content_type: Option<&str>) -> Result<Dialect, ApiError> {
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/openstack-images-v2.1-json-patch") => Ok(Dialect::V21),
        Some("application/openstack-images-v2.0-json-patch") => Ok(Dialect::V20),
        other => Err(ApiError::UnsupportedMediaType {
            message: format!(
                "Unsupported Content-Type {:?} for PATCH; use application/openstack-images-v2.1-json-patch",
                other.unwrap_or("")
            ),
            accept_patch: true,
        }),
    }
}

/// Parses a patch document into changes, refusing read-only and reserved paths (403) and
/// malformed operations (400) before anything is applied.
pub fn parse(document: &Value, dialect: Dialect) -> Result<Vec<Change>, ApiError> {
    let Value::Array(operations) = document else {
        return Err(ApiError::BadRequest(
            "Request body must be a JSON array of operation objects.".to_string(),
        ));
    };
    let mut changes = Vec::with_capacity(operations.len());
    for operation in operations {
        let Value::Object(fields) = operation else {
            return Err(ApiError::BadRequest(
                "Operations must be JSON objects.".to_string(),
            ));
        };
        let (op, path) = match dialect {
            Dialect::V21 => {
                let op = fields.get("op").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::BadRequest("Unable to find 'op' in JSON Schema change".to_string())
                })?;
                let path = fields.get("path").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::BadRequest("Unable to find 'path' in JSON Schema change".to_string())
                })?;
                (op, path)
            }
            Dialect::V20 => {
                let found: Vec<&str> = ["add", "replace", "remove"]
                    .into_iter()
                    .filter(|op| fields.contains_key(*op))
                    .collect();
                let [op] = found.as_slice() else {
                    return Err(ApiError::BadRequest(
                        "Operation objects must contain exactly one of \"add\", \"remove\", or \
                         \"replace\"."
                            .to_string(),
                    ));
                };
                let path = fields.get(*op).and_then(Value::as_str).ok_or_else(|| {
                    ApiError::BadRequest(format!("The path of '{op}' must be a string."))
                })?;
                (*op, path)
            }
        };
        let name = pointer_segment(path)?;
        let value = || {
            fields.get("value").cloned().ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Operation \"{op}\" requires a member named \"value\"."
                ))
            })
        };
        let change = match op {
            "add" => Change::Add {
                name,
                value: value()?,
            },
            "replace" => Change::Replace {
                name,
                value: value()?,
            },
            "remove" => Change::Remove { name },
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid operation: `{other}`: must be one of add, replace, remove."
                )))
            }
        };
        let (Change::Add { name, .. } | Change::Replace { name, .. } | Change::Remove { name }) =
            &change;
        check_writable(name)?;
        changes.push(change);
    }
    Ok(changes)
}

/// Applies `changes` to `image` in order, with Glance's semantics for each operation.
pub fn apply(image: &mut Image, changes: &[Change], dialect: Dialect) -> Result<(), ApiError> {
    for change in changes {
        // Glance (glance/domain): the formats describe the stored data, so they can change
        // only while there is none.
        if let Change::Add { name, .. } | Change::Replace { name, .. } = change {
            if (name == "disk_format" || name == "container_format")
                && image.status != ImageStatus::Queued
            {
                return Err(ApiError::Forbidden(format!(
                    "Attribute {name} can be only replaced for a queued image."
                )));
            }
        }
        match change {
            Change::Replace { name, value } => {
                if !is_base(name) && !image.properties.contains_key(name) {
                    return Err(ApiError::Conflict(format!(
                        "Property {name} does not exist."
                    )));
                }
                representation::set_attribute(image, name, value)?;
            }
            Change::Add { name, value } => {
                let present = is_base(name) || image.properties.contains_key(name);
                if present && dialect == Dialect::V20 {
                    return Err(ApiError::Conflict(format!(
                        "Property {name} already present."
                    )));
                }
                representation::set_attribute(image, name, value)?;
            }
            Change::Remove { name } => {
                if is_base(name) {
                    return Err(ApiError::Forbidden(format!(
                        "Property {name} may not be removed."
                    )));
                }
                if image.properties.remove(name).is_none() {
                    return Err(ApiError::Conflict(format!(
                        "Property {name} does not exist."
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The one attribute name a path names: `/name`, with `~1` for `/` and `~0` for `~`
/// (RFC 6901 §4).
fn pointer_segment(path: &str) -> Result<String, ApiError> {
    let invalid =
        || ApiError::BadRequest(format!("Invalid JSON pointer for this resource: '{path}'"));
    let Some(segment) = path.strip_prefix('/') else {
        return Err(invalid());
    };
    if segment.is_empty() || segment.contains('/') {
        return Err(invalid());
    }
    let mut name = String::with_capacity(segment.len());
    let mut characters = segment.chars();
    while let Some(character) = characters.next() {
        if character == '~' {
            match characters.next() {
                Some('0') => name.push('~'),
                Some('1') => name.push('/'),
                _ => return Err(invalid()),
            }
        } else {
            name.push(character);
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> Image {
        let mut image = Image::new("3f4c2b9e-0000-4000-8000-000000000001");
        image.name = Some("a".into());
        image.properties.insert("k".to_string(), "v".to_string());
        image
    }

    fn run(patch: Value, dialect: Dialect) -> Result<Image, ApiError> {
        let mut image = image();
        let changes = parse(&patch, dialect)?;
        apply(&mut image, &changes, dialect)?;
        Ok(image)
    }

    #[test]
    fn v21_operations_follow_glance() {
        let image = run(
            json!([
                {"op": "replace", "path": "/name", "value": "b"},
                {"op": "add", "path": "/name", "value": "c"},
                {"op": "add", "path": "/new", "value": "x"},
                {"op": "replace", "path": "/k", "value": "w"},
                {"op": "replace", "path": "/tags", "value": ["t2", "t1", "t1"]},
                {"op": "add", "path": "/a~1b~0c", "value": "slash"},
                {"op": "remove", "path": "/new"}
            ]),
            Dialect::V21,
        )
        .unwrap();
        assert_eq!(image.name.as_deref(), Some("c"));
        assert_eq!(image.properties.get("k").map(String::as_str), Some("w"));
        assert_eq!(
            image.properties.get("a/b~c").map(String::as_str),
            Some("slash")
        );
        assert!(!image.properties.contains_key("new"));
        assert_eq!(image.tags, ["t1", "t2"]);
    }

    #[test]
    fn v20_add_of_a_present_attribute_conflicts() {
        let error = run(json!([{"add": "/k", "value": "x"}]), Dialect::V20).unwrap_err();
        assert_eq!(error.status(), 409);
        let image = run(json!([{"add": "/other", "value": "x"}]), Dialect::V20).unwrap();
        assert_eq!(image.properties["other"], "x");
    }

    #[test]
    fn refusals_have_glance_statuses() {
        let cases = [
            (
                json!([{"op": "replace", "path": "/status", "value": "active"}]),
                403,
            ),
            (
                json!([{"op": "add", "path": "/checksum", "value": "x"}]),
                403,
            ),
            (json!([{"op": "remove", "path": "/id"}]), 403),
            (
                json!([{"op": "add", "path": "/deleted", "value": "x"}]),
                403,
            ),
            (
                json!([{"op": "add", "path": "/os_glance_x", "value": "x"}]),
                403,
            ),
            (json!([{"op": "remove", "path": "/name"}]), 403),
            (json!([{"op": "remove", "path": "/absent"}]), 409),
            (
                json!([{"op": "replace", "path": "/absent", "value": "x"}]),
                409,
            ),
            (json!([{"op": "add", "path": "/k", "value": 5}]), 400),
            (
                json!([{"op": "replace", "path": "/min_ram", "value": -1}]),
                400,
            ),
            (
                json!([{"op": "replace", "path": "/visibility", "value": "everyone"}]),
                400,
            ),
            (
                json!([{"op": "replace", "path": "/disk_format", "value": "floppy"}]),
                400,
            ),
            (json!([{"op": "move", "path": "/name", "value": "x"}]), 400),
            (json!([{"op": "add", "path": "/a/b", "value": "x"}]), 400),
            (json!([{"op": "add", "path": "name", "value": "x"}]), 400),
            (json!([{"op": "add", "path": "/bad~2", "value": "x"}]), 400),
            (json!([{"op": "add", "path": "/name"}]), 400),
            (json!({"op": "add"}), 400),
            (json!(["add"]), 400),
        ];
        for (patch, status) in cases {
            let result = run(patch.clone(), Dialect::V21);
            assert_eq!(
                result.as_ref().err().map(ApiError::status),
                Some(status),
                "{patch}: {result:?}"
            );
        }
    }

    #[test]
    fn media_types_select_the_dialect() {
        assert_eq!(
            dialect(Some("application/openstack-images-v2.1-json-patch")).unwrap(),
            Dialect::V21
        );
        assert_eq!(
            dialect(Some(
                "application/openstack-images-v2.0-json-patch; charset=UTF-8"
            ))
            .unwrap(),
            Dialect::V20
        );
        assert_eq!(dialect(Some("application/json")).unwrap_err().status(), 415);
        assert_eq!(dialect(None).unwrap_err().status(), 415);
    }
}
