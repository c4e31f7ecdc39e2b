//! How an image looks on the wire: its JSON document, and the rules for the attributes a client
//! may send (which are writable, read-only, reserved, and what type each has).
//!
//! The types here follow the schema `schemas.rs` serves (Glance's `get_base_properties`), so that
//! every image glint returns validates against the schema glanceclient downloads: base attributes
//! with their types (null where Glance allows it), custom properties as strings only.

use serde_json::{json, Map, Value};

use super::error::ApiError;
use crate::registry::Image;

/// The disk formats Glance accepts by default (`[image_format] disk_formats`).
pub const DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];

/// The container formats Glance accepts by default.
pub const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];

/// The visibilities of an image.
pub const VISIBILITIES: &[&str] = &["community", "public", "private", "shared"];

/// Attributes only the server sets (Glance's `_readonly_properties`): 403 when a client sends one.
pub const READ_ONLY: &[&str] = &[
    "created_at",
    "updated_at",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "direct_url",
    "self",
    "file",
    "schema",
    "id",
    "stores",
];

/// Attributes nobody may set (Glance's `_reserved_properties`, and its `os_glance_` prefix).
pub const RESERVED: &[&str] = &["location", "deleted", "deleted_at", "locations"];

/// The prefix Glance reserves for its own properties.
pub const RESERVED_PREFIX: &str = "os_glance";

/// The most tags one image may carry (Glance's image_tag_quota); more is 413.
pub const MAX_TAGS: usize = 128;

/// The most custom properties one image may carry (Glance's image_property_quota); more is 413.
pub const MAX_PROPERTIES: usize = 128;

/// The longest custom property value, in bytes (Glance's column size).
pub const MAX_PROPERTY_VALUE: usize = 65_535;

/// The longest name, owner, tag or property name (Glance's schema maxLength).
pub const MAX_NAME: usize = 255;

/// The image's JSON document, as `GET /v2/images/{id}` returns it.
pub fn image_json(image: &Image) -> Value {
    let mut document = Map::new();
    for (name, value) in &image.properties {
        document.insert(name.clone(), Value::String(value.clone()));
    }
    let base = json!({
        "id": image.id,
        "name": image.name,
        "status": image.status.as_str(),
        "visibility": image.visibility,
        "protected": image.protected,
        "os_hidden": image.os_hidden,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "owner": image.owner,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "container_format": image.container_format,
        "disk_format": image.disk_format,
        "min_ram": image.min_ram,
        "min_disk": image.min_disk,
        "tags": image.tags,
        "created_at": image.created_at,
        "updated_at": image.updated_at,
        "self": format!("/v2/images/{}", image.id),
        "file": format!("/v2/images/{}/file", image.id),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(base) = base {
        // Base attributes win over a custom property of the same name (none can be stored:
        // `set_attribute` routes base names to their fields).
        document.extend(base);
    }
    Value::Object(document)
}

/// Whether `name` is one of the image's base attributes (as opposed to a custom property).
pub fn is_base(name: &str) -> bool {
    matches!(
        name,
        "id" | "name"
            | "status"
            | "visibility"
            | "protected"
            | "os_hidden"
            | "checksum"
            | "os_hash_algo"
            | "os_hash_value"
            | "owner"
            | "size"
            | "virtual_size"
            | "container_format"
            | "disk_format"
            | "min_ram"
            | "min_disk"
            | "tags"
            | "created_at"
            | "updated_at"
            | "self"
            | "file"
            | "schema"
            | "direct_url"
            | "stores"
    ) || RESERVED.contains(&name)
}

/// Refuses read-only and reserved attribute names with Glance's 403 messages.
pub fn check_writable(name: &str) -> Result<(), ApiError> {
    if READ_ONLY.contains(&name) {
        return Err(ApiError::Forbidden(format!(
            "Attribute '{name}' is read-only."
        )));
    }
    if RESERVED.contains(&name) || name.starts_with(RESERVED_PREFIX) {
        return Err(ApiError::Forbidden(format!(
            "Attribute '{name}' is reserved."
        )));
    }
    Ok(())
}

/// Sets attribute `name` of `image` to `value`, checking its type as the schema does. `name`
/// must be writable (see [`check_writable`]); a name that is not a base attribute is a custom
/// property, whose value must be a string.
pub fn set_attribute(image: &mut Image, name: &str, value: &Value) -> Result<(), ApiError> {
    match name {
        "name" => image.name = nullable_string(name, value, MAX_NAME)?,
        "owner" => image.owner = nullable_string(name, value, MAX_NAME)?,
        "visibility" => image.visibility = one_of(name, value, VISIBILITIES)?,
        "protected" => image.protected = boolean(name, value)?,
        "os_hidden" => image.os_hidden = boolean(name, value)?,
        "container_format" => {
            image.container_format = nullable_one_of(name, value, CONTAINER_FORMATS)?
        }
        "disk_format" => image.disk_format = nullable_one_of(name, value, DISK_FORMATS)?,
        "min_ram" => image.min_ram = non_negative(name, value)?,
        "min_disk" => image.min_disk = non_negative(name, value)?,
        "tags" => image.tags = tags(value)?,
        _ => {
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(ApiError::BadRequest(format!(
                    "Property name must be 1 to {MAX_NAME} characters long."
                )));
            }
            let Value::String(text) = value else {
                return Err(ApiError::BadRequest(format!(
                    "Provided object does not match schema 'image': {value} is not of type \
                     'string' (failed validating 'type' in additionalProperties, property \
                     '{name}')"
                )));
            };
            if text.len() > MAX_PROPERTY_VALUE {
                return Err(ApiError::BadRequest(format!(
                    "Property '{name}' is longer than {MAX_PROPERTY_VALUE} bytes."
                )));
            }
            if !image.properties.contains_key(name) && image.properties.len() >= MAX_PROPERTIES {
                return Err(ApiError::TooLarge(format!(
                    "Maximum number of properties exceeded ({MAX_PROPERTIES})."
                )));
            }
            image.properties.insert(name.to_string(), text.clone());
        }
    }
    Ok(())
}

/// The tag list a client sent: strings of 1 to 255 characters, at most [`MAX_TAGS`], kept
/// sorted and without duplicates.
pub fn tags(value: &Value) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        return Err(schema_error("tags", value, "array"));
    };
    let mut tags = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(tag) = item else {
            return Err(schema_error("tags", item, "string"));
        };
        tags.push(valid_tag(tag)?);
    }
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(ApiError::TooLarge(format!(
            "Maximum number of tags exceeded ({MAX_TAGS})."
        )));
    }
    Ok(tags)
}

/// A tag of 1 to 255 characters.
pub fn valid_tag(tag: &str) -> Result<String, ApiError> {
    if tag.is_empty() || tag.chars().count() > MAX_NAME {
        return Err(ApiError::BadRequest(format!(
            "Tags must be 1 to {MAX_NAME} characters long."
        )));
    }
    Ok(tag.to_string())
}

fn schema_error(name: &str, value: &Value, expected: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "Provided object does not match schema 'image': {value} is not of type '{expected}' \
         (failed validating 'type' in schema['properties']['{name}'])"
    ))
}

fn nullable_string(name: &str, value: &Value, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.chars().count() <= max => Ok(Some(text.clone())),
        Value::String(_) => Err(ApiError::BadRequest(format!(
            "Provided object does not match schema 'image': '{name}' is longer than {max} \
             characters"
        ))),
        other => Err(schema_error(name, other, "string")),
    }
}

fn one_of(name: &str, value: &Value, allowed: &[&str]) -> Result<String, ApiError> {
    match value {
        Value::String(text) if allowed.contains(&text.as_str()) => Ok(text.clone()),
        other => Err(ApiError::BadRequest(format!(
            "Provided object does not match schema 'image': {other} is not one of {allowed:?} \
             (failed validating 'enum' in schema['properties']['{name}'])"
        ))),
    }
}

fn nullable_one_of(
    name: &str,
    value: &Value,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        other => one_of(name, other, allowed).map(Some),
    }
}

fn boolean(name: &str, value: &Value) -> Result<bool, ApiError> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        other => Err(schema_error(name, other, "boolean")),
    }
}

fn non_negative(name: &str, value: &Value) -> Result<i64, ApiError> {
    match value.as_i64() {
        Some(number) if (0..=i64::from(i32::MAX)).contains(&number) => Ok(number),
        Some(_) => Err(ApiError::BadRequest(format!(
            "Invalid value for '{name}': it must be a whole number from 0 to {}.",
            i32::MAX
        ))),
        None => Err(schema_error(name, value, "integer")),
    }
}
