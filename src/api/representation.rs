//! How an image looks on the wire: its JSON document, and the rules for the attributes a client
//! may send (which are writable, read-only, reserved, and what type each has).
//!
//! The types here follow the schema `schemas.rs` serves (Glance's `get_base_properties`), so that
//! every image glint returns validates against the schema glanceclient downloads: base attributes
//! with their types (null where Glance allows it), custom properties as strings only.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

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

/// A writer that only counts what it is given.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length in bytes of `value` as the API sends it (compact JSON, as `Response::json` and
/// the list write it), counted without building the text.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    let mut counter = Counter(0);
    // Serialising JSON values (string keys only) into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// The length in bytes of `image_json(image)` as the API sends it, counted without writing it.
pub fn document_len(image: &Image) -> usize {
    json_len(&image_json(image))
}

/// Refuses an image whose JSON document (what `GET /v2/images/{id}` returns) would be longer
/// than `cap` bytes (`image_metadata_size_cap`) with a 413 in the words of Glance's quota
/// errors (glance/common/exception.py, `ImagePropertyLimitExceeded`, which Glance's images
/// controller turns into 413). `before` is the document's length before the edit, for an
/// existing image: an edit that does not grow the document is let through, so an image stored
/// before the cap was lowered can still be trimmed.
///
/// The cap is on the whole document rather than on the properties alone because the document
/// is what the API holds in memory and sends: it bounds what one image costs in a list page, a
/// show or a patch, whatever the mix of properties, tags and escaping (a control character
/// takes 6 bytes as JSON).
pub fn check_metadata_size(
    image: &Image,
    before: Option<usize>,
    cap: usize,
) -> Result<(), ApiError> {
    let attempted = document_len(image);
    if attempted > cap && before.is_none_or(|before| attempted > before) {
        return Err(ApiError::TooLarge(format!(
            "The limit has been exceeded on the size of the image's metadata. Attempted: \
             {attempted} bytes, Maximum: {cap} bytes"
        )));
    }
    Ok(())
}

/// The image's JSON document, as `GET /v2/images/{id}` returns it: serialise it (the response,
/// a list page) or count it ([`json_len`]).
pub fn image_json(image: &Image) -> Document<'_> {
    Document(image)
}

/// An image's JSON document, written straight from the image: the base attributes and the custom
/// properties in one object, keys in byte order (the order serde_json's map, a `BTreeMap`, gave
/// the document when it was built as a `Value`: the unit test
/// `the_document_is_the_one_a_json_map_gives` holds the bytes equal). Building the `Value` and
/// then writing it was a third of the instructions of `GET /v2/images/{id}` (issue 13).
pub struct Document<'a>(&'a Image);

/// The value of one base attribute.
enum Field<'a> {
    Text(&'a str),
    /// `/v2/images/{id}` and what follows, written without building the string.
    Link(&'a str, &'static str),
    Nullable(Option<&'a str>),
    Flag(bool),
    Size(Option<u64>),
    Number(i64),
    Tags(&'a [String]),
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Text(text) => serializer.serialize_str(text),
            Field::Link(id, tail) => serializer.collect_str(&format_args!("/v2/images/{id}{tail}")),
            Field::Nullable(text) => text.serialize(serializer),
            Field::Flag(flag) => serializer.serialize_bool(*flag),
            Field::Size(size) => size.serialize(serializer),
            Field::Number(number) => serializer.serialize_i64(*number),
            Field::Tags(tags) => tags.serialize(serializer),
        }
    }
}

impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let image = self.0;
        let stores = stores(image);
        // In byte order of the names (a unit test checks it).
        let base: [(&str, Option<Field>); 23] = [
            ("checksum", Some(Field::Nullable(image.checksum.as_deref()))),
            (
                "container_format",
                Some(Field::Nullable(image.container_format.as_deref())),
            ),
            ("created_at", Some(Field::Text(&image.created_at))),
            (
                "disk_format",
                Some(Field::Nullable(image.disk_format.as_deref())),
            ),
            ("file", Some(Field::Link(&image.id, "/file"))),
            ("id", Some(Field::Text(&image.id))),
            ("min_disk", Some(Field::Number(image.min_disk))),
            ("min_ram", Some(Field::Number(image.min_ram))),
            ("name", Some(Field::Nullable(image.name.as_deref()))),
            (
                "os_hash_algo",
                Some(Field::Nullable(image.os_hash_algo.as_deref())),
            ),
            (
                "os_hash_value",
                Some(Field::Nullable(image.os_hash_value.as_deref())),
            ),
            ("os_hidden", Some(Field::Flag(image.os_hidden))),
            ("owner", Some(Field::Nullable(image.owner.as_deref()))),
            ("protected", Some(Field::Flag(image.protected))),
            ("schema", Some(Field::Text("/v2/schemas/image"))),
            ("self", Some(Field::Link(&image.id, ""))),
            ("size", Some(Field::Size(image.size))),
            ("status", Some(Field::Text(image.status.as_str()))),
            ("stores", stores.as_deref().map(Field::Text)),
            ("tags", Some(Field::Tags(&image.tags))),
            ("updated_at", Some(Field::Text(&image.updated_at))),
            ("virtual_size", Some(Field::Size(image.virtual_size))),
            ("visibility", Some(Field::Text(&image.visibility))),
        ];
        let mut map = serializer.serialize_map(None)?;
        // Both sorted: merged as they go, properties between the base attributes.
        let mut properties = image.properties.iter().peekable();
        for (name, field) in &base {
            let Some(field) = field else { continue };
            while let Some((property, value)) =
                properties.next_if(|(property, _)| property.as_str() < *name)
            {
                map.serialize_entry(property, value)?;
            }
            // A base attribute wins over a custom property of the same name (none can be
            // stored: `set_attribute` routes base names to their fields).
            properties.next_if(|(property, _)| property.as_str() == *name);
            map.serialize_entry(name, field)?;
        }
        for (property, value) in properties {
            map.serialize_entry(property, value)?;
        }
        map.end()
    }
}

/// Glance's `stores`: the ids of the stores holding the data, present only with several stores
/// (only then are locations recorded with a store) and only once there is data.
fn stores(image: &Image) -> Option<String> {
    if image.locations.is_empty() {
        return None;
    }
    let mut stores: Vec<&str> = Vec::new();
    for location in &image.locations {
        if !stores.contains(&location.store.as_str()) {
            stores.push(&location.store);
        }
    }
    Some(stores.join(","))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `document_len` is the length of the document `Response::json` sends, escapes and
    /// multi-byte characters included, with and without properties and tags.
    #[test]
    fn document_len_is_the_length_of_the_serialized_document() {
        let mut image = Image::new("5b2f0e37-5ab3-4cbd-9b1c-6d2c4c0f7c11");
        assert_eq!(
            document_len(&image),
            serde_json::to_vec(&image_json(&image)).unwrap().len()
        );
        image.name = Some("caf\u{e9} \"quoted\" \u{1}".to_string());
        image.tags = vec!["a\nb".to_string(), "\u{1F600}".to_string()];
        image.checksum = Some("0".repeat(32));
        image.size = Some(1 << 40);
        image
            .properties
            .insert("ctl".to_string(), "\u{0}\u{1f}\\/".repeat(100));
        image
            .properties
            .insert("\u{e9}t\u{e9}".to_string(), "plain".to_string());
        let sent = serde_json::to_vec(&image_json(&image)).unwrap();
        assert_eq!(document_len(&image), sent.len());
        assert_eq!(json_len(&image_json(&image)), sent.len());
    }

    /// The document as it was built before it was written straight from the image: a
    /// serde_json map (keys in byte order), properties merged in, base attributes winning.
    fn map_document(image: &Image) -> Value {
        let mut document = match serde_json::json!({
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
        }) {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object"),
        };
        if let Some(stores) = stores(image) {
            document.insert("stores".to_string(), Value::String(stores));
        }
        for (name, value) in &image.properties {
            if !document.contains_key(name) {
                document.insert(name.clone(), Value::String(value.clone()));
            }
        }
        Value::Object(document)
    }

    /// The document written straight from the image has the very bytes of the map-built one:
    /// a bare image, and one with every field set, properties sorting before, between and after
    /// the base attributes (and one named like a base attribute, which loses to it), escapes,
    /// multi-byte names, with and without several stores.
    #[test]
    fn the_document_is_the_one_a_json_map_gives() {
        use crate::registry::{ImageStatus, Location};
        let mut image = Image::new("5b2f0e37-5ab3-4cbd-9b1c-6d2c4c0f7c11");
        let bare = serde_json::to_vec(&image_json(&image)).unwrap();
        assert_eq!(bare, serde_json::to_vec(&map_document(&image)).unwrap());
        image.name = Some("caf\u{e9} \"quoted\" \u{1}".to_string());
        image.status = ImageStatus::Active;
        image.visibility = "shared".to_string();
        image.protected = true;
        image.os_hidden = true;
        image.checksum = Some("0".repeat(32));
        image.os_hash_algo = Some("sha512".to_string());
        image.os_hash_value = Some("f".repeat(128));
        image.owner = Some("project".to_string());
        image.size = Some(u64::MAX);
        image.virtual_size = Some(1 << 40);
        image.container_format = Some("bare".to_string());
        image.disk_format = Some("qcow2".to_string());
        image.min_ram = 512;
        image.min_disk = i64::from(i32::MAX);
        image.tags = vec!["a\nb".to_string(), "\u{1F600}".to_string()];
        for name in [
            "",
            "A",
            "a",
            "checksum",
            "d",
            "filez",
            "id0",
            "os_",
            "stores",
            "tags",
            "u",
            "zz",
            "\u{e9}t\u{e9}",
            "\u{7f}",
            "\n",
        ] {
            image
                .properties
                .insert(name.to_string(), format!("{name}\u{0}\\/"));
        }
        for locations in [0, 1, 3] {
            image.locations = (0..locations)
                .map(|n| Location {
                    store: ["fast", "slow", "fast"][n].to_string(),
                    path: format!("/data/{n}"),
                })
                .collect();
            let written = serde_json::to_vec(&image_json(&image)).unwrap();
            let mapped = serde_json::to_vec(&map_document(&image)).unwrap();
            assert_eq!(
                String::from_utf8(written.clone()).unwrap(),
                String::from_utf8(mapped).unwrap()
            );
            assert_eq!(document_len(&image), written.len());
        }
    }

    /// At the cap is allowed, one byte over is 413; an edit that does not grow an image
    /// already over the cap is allowed, one that grows it is not.
    #[test]
    fn metadata_size_cap_allows_the_cap_and_edits_that_do_not_grow() {
        let mut image = Image::new("5b2f0e37-5ab3-4cbd-9b1c-6d2c4c0f7c11");
        image.properties.insert("pad".to_string(), String::new());
        let cap = document_len(&image) + 100;
        image.properties.insert("pad".to_string(), "x".repeat(100));
        assert!(check_metadata_size(&image, None, cap).is_ok());
        image.properties.insert("pad".to_string(), "x".repeat(101));
        let error = check_metadata_size(&image, None, cap).unwrap_err();
        assert_eq!(error.status(), 413);
        assert!(
            error.to_string().contains(&format!(
                "Attempted: {} bytes, Maximum: {cap} bytes",
                cap + 1
            )),
            "{error}"
        );
        assert!(check_metadata_size(&image, Some(cap + 1), cap).is_ok());
        assert!(check_metadata_size(&image, Some(cap + 5), cap).is_ok());
        assert!(check_metadata_size(&image, Some(cap), cap).is_err());
    }
}
