//! The JSON schemas glint serves under `/v2/schemas/`: the image and image-list schemas that
//! glanceclient downloads and validates every image against, the member and member-list
//! schemas of `glance member-*`, the task and task-list schemas of the tasks API, and the two
//! metadefs schemas it
//! fetches (and caches) at first use even though glint serves no metadefs.
//!
//! The image schema is Glance's `get_base_properties` with its default format lists, minus the
//! location attributes glint does not serve. Custom properties are strings
//! (`additionalProperties`), which is what makes the schema "permissive".

use serde_json::{json, Value};

use super::representation::{CONTAINER_FORMATS, DISK_FORMATS, MAX_NAME, VISIBILITIES};
use crate::registry::ImageStatus;

/// `GET /v2/schemas/image`.
pub fn image() -> Value {
    let nullable_enum = |values: &[&str]| {
        let mut values: Vec<Value> = values.iter().map(|v| json!(v)).collect();
        values.insert(0, Value::Null);
        Value::Array(values)
    };
    json!({
        "name": "image",
        "properties": {
            "id": {
                "type": "string",
                "description": "An identifier for the image",
                "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
            },
            "name": {"type": ["null", "string"], "description": "Descriptive name for the image", "maxLength": MAX_NAME},
            "status": {
                "type": "string", "readOnly": true, "description": "Status of the image",
                "enum": ImageStatus::ALL.map(ImageStatus::as_str)
            },
            "visibility": {"type": "string", "description": "Scope of image accessibility", "enum": VISIBILITIES},
            "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
            "os_hidden": {"type": "boolean", "description": "If true, image will not appear in default image list response."},
            "checksum": {"type": ["null", "string"], "readOnly": true, "description": "md5 hash of image contents.", "maxLength": 32},
            "os_hash_algo": {"type": ["null", "string"], "readOnly": true, "description": "Algorithm to calculate the os_hash_value", "maxLength": 64},
            "os_hash_value": {"type": ["null", "string"], "readOnly": true, "description": "Hexdigest of the image contents using the algorithm specified by the os_hash_algo", "maxLength": 128},
            "owner": {"type": ["null", "string"], "description": "Owner of the image", "maxLength": MAX_NAME},
            "size": {"type": ["null", "integer"], "readOnly": true, "description": "Size of image file in bytes"},
            "virtual_size": {"type": ["null", "integer"], "readOnly": true, "description": "Virtual size of image in bytes"},
            "container_format": {"type": ["null", "string"], "description": "Format of the container", "enum": nullable_enum(CONTAINER_FORMATS)},
            "disk_format": {"type": ["null", "string"], "description": "Format of the disk", "enum": nullable_enum(DISK_FORMATS)},
            "created_at": {"type": "string", "readOnly": true, "description": "Date and time of image registration"},
            "updated_at": {"type": "string", "readOnly": true, "description": "Date and time of the last image modification"},
            "tags": {"type": "array", "description": "List of strings related to the image", "items": {"type": "string", "maxLength": MAX_NAME}},
            "direct_url": {"type": "string", "readOnly": true, "description": "URL to access the image file kept in external store"},
            "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
            "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
            "self": {"type": "string", "readOnly": true, "description": "An image self url"},
            "file": {"type": "string", "readOnly": true, "description": "An image file url"},
            "schema": {"type": "string", "readOnly": true, "description": "An image schema url"},
            "stores": {"type": "string", "readOnly": true, "description": "Store in which image data resides.  Only present when the operator has enabled multiple stores.  May be a comma-separated list of store identifiers."}
        },
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    })
}

/// `GET /v2/schemas/images`.
pub fn images() -> Value {
    json!({
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image()},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"}
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    })
}

/// `GET /v2/schemas/member` (glance/api/v2/image_members.py `_MEMBER_SCHEMA`).
pub fn member() -> Value {
    json!({
        "name": "member",
        "properties": {
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "image_id": {
                "type": "string",
                "description": "An identifier for the image",
                "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
            },
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
            "status": {
                "type": "string",
                "description": "The status of this image member",
                "enum": ["pending", "accepted", "rejected"]
            },
            "schema": {"type": "string", "readOnly": true}
        }
    })
}

/// `GET /v2/schemas/members` (Glance's `CollectionSchema` of the member schema).
pub fn members() -> Value {
    json!({
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member()},
            "schema": {"type": "string"}
        },
        "links": [{"rel": "describedby", "href": "{schema}"}]
    })
}

/// The properties of Glance's task schema (glance/api/v2/tasks.py `_TASK_SCHEMA`).
fn task_properties() -> serde_json::Map<String, Value> {
    let properties = json!({
        "id": {
            "description": "An identifier for the task",
            "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$",
            "type": "string"
        },
        "type": {
            "description": "The type of task represented by this content",
            "enum": ["import", "api_image_import", "location_import"],
            "type": "string"
        },
        "status": {
            "description": "The current status of this task",
            "enum": ["pending", "processing", "success", "failure"],
            "type": "string"
        },
        "input": {"description": "The parameters required by task, JSON blob", "type": ["null", "object"]},
        "result": {"description": "The result of current task, JSON blob", "type": ["null", "object"]},
        "owner": {"description": "An identifier for the owner of this task", "type": "string"},
        "message": {
            "description": "Human-readable informative message only included when appropriate (usually on failure)",
            "type": "string"
        },
        "image_id": {"description": "Image associated with the task", "type": "string"},
        "request_id": {"description": "Human-readable informative request-id", "type": "string"},
        "user_id": {"description": "User associated with the task", "type": "string"},
        "expires_at": {"description": "Datetime when this resource would be subject to removal", "type": ["null", "string"]},
        "created_at": {"description": "Datetime when this resource was created", "type": "string"},
        "updated_at": {"description": "Datetime when this resource was updated", "type": "string"},
        "self": {"readOnly": true, "type": "string"},
        "schema": {"readOnly": true, "type": "string"}
    });
    match properties {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// `GET /v2/schemas/task` (`get_task_schema().minimal()`).
pub fn task() -> Value {
    json!({"name": "task", "properties": task_properties()})
}

/// `GET /v2/schemas/tasks`: the collection of the partial task schema, which hides `input`,
/// `result` and `message` (`get_collection_schema().minimal()`).
pub fn tasks() -> Value {
    let mut partial = task_properties();
    for hidden in ["input", "result", "message"] {
        partial.remove(hidden);
    }
    json!({
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": {"name": "task", "properties": partial}},
            "schema": {"type": "string"}
        },
        "links": [{"rel": "describedby", "href": "{schema}"}]
    })
}

/// `GET /v2/schemas/metadefs/namespace`: glanceclient caches it at first use.
pub fn metadefs_namespace() -> Value {
    json!({
        "name": "namespace",
        "properties": {
            "namespace": {"type": "string", "maxLength": 80, "description": "The unique namespace text."},
            "display_name": {"type": "string", "maxLength": 80},
            "description": {"type": "string", "maxLength": 500},
            "visibility": {"type": "string", "enum": ["public", "private"]},
            "protected": {"type": "boolean"},
            "owner": {"type": "string", "maxLength": 255},
            "created_at": {"type": "string", "readOnly": true, "format": "date-time"},
            "updated_at": {"type": "string", "readOnly": true, "format": "date-time"},
            "schema": {"type": "string", "readOnly": true},
            "self": {"type": "string", "readOnly": true},
            "resource_type_associations": {"type": "array", "items": {"type": "object"}},
            "properties": {"type": "object"},
            "objects": {"type": "array", "items": {"type": "object"}},
            "tags": {"type": "array", "items": {"type": "object"}}
        },
        "additionalProperties": false,
        "required": ["namespace"]
    })
}

/// `GET /v2/schemas/metadefs/resource_type`.
pub fn metadefs_resource_type() -> Value {
    json!({
        "name": "resource_type_association",
        "properties": {
            "name": {"type": "string", "maxLength": 80, "description": "Resource type names should be aligned with Heat resource types whenever possible."},
            "prefix": {"type": "string", "maxLength": 80},
            "properties_target": {"type": "string", "maxLength": 80},
            "created_at": {"type": "string", "readOnly": true, "format": "date-time"},
            "updated_at": {"type": "string", "readOnly": true, "format": "date-time"}
        },
        "additionalProperties": false,
        "required": ["name"]
    })
}
