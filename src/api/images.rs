//! The image metadata routes: create, list, show, update (JSON patch), delete, and tags.
//!
//! Each handler validates what the client sent, then makes one registry call; read-modify-write
//! changes go through `Registry::update`, which holds the database's write lock for the whole
//! change, so two clients patching one image never lose an update. Glance's messages and status
//! codes are kept where clients or people read them (glance/api/v2/images.py).

use std::io::Read;

use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::representation::{self, check_writable, image_json};
use super::{list_query, patch, Api};
use crate::config::Config;
use crate::http::response::Response;
use crate::http::serve::Request;
use crate::registry::Image;

/// The largest JSON request body (create, patch); more is 413.
pub const MAX_JSON_BODY: u64 = 1024 * 1024;

impl Api {
    /// `POST /v2/images`.
    pub(super) fn create_image(&self, request: &mut Request<'_>) -> Result<Response, ApiError> {
        require_json(request)?;
        let Value::Object(fields) = read_json(request, &self.config)? else {
            return Err(ApiError::BadRequest(
                "Request body must be a JSON object.".to_string(),
            ));
        };
        let mut image = Image::new(uuid::Uuid::new_v4().to_string());
        for (name, value) in &fields {
            if name == "id" {
                image.id = parse_image_id(value)?;
                continue;
            }
            check_writable(name)?;
            representation::set_attribute(&mut image, name, value)?;
        }
        self.registry.create(&image).map_err(|error| match error {
            crate::registry::RegistryError::Duplicate => ApiError::Conflict(format!(
                "Image with identifier {} already exists!",
                image.id
            )),
            other => other.into(),
        })?;
        log::info!("created image {}", image.id);
        Ok(Response::json(201, &image_json(&image))
            .header("Location", &format!("/v2/images/{}", image.id)))
    }

    /// `GET /v2/images`.
    pub(super) fn list_images(&self, request: &Request<'_>) -> Result<Response, ApiError> {
        let parsed = list_query::parse(
            request.head.query(),
            self.config.limit_param_default,
            self.config.api_limit_max,
        )?;
        let images = self.registry.list(&parsed.query)?;
        let mut body = Map::new();
        let first = if parsed.link_parameters.is_empty() {
            "/v2/images".to_string()
        } else {
            let mut serializer = form_urlencoded::Serializer::new(String::new());
            for (name, value) in &parsed.link_parameters {
                serializer.append_pair(name, value);
            }
            format!("/v2/images?{}", serializer.finish())
        };
        // A full page may have more behind it; Glance links the next page only then.
        if parsed.query.limit > 0 && images.len() == parsed.query.limit {
            if let Some(last) = images.last() {
                body.insert(
                    "next".to_string(),
                    json!(list_query::next_link(&parsed.link_parameters, &last.id)),
                );
            }
        }
        body.insert(
            "images".to_string(),
            Value::Array(images.iter().map(image_json).collect()),
        );
        body.insert("first".to_string(), json!(first));
        body.insert("schema".to_string(), json!("/v2/schemas/images"));
        Ok(Response::json(200, &Value::Object(body)))
    }

    /// `GET /v2/images/{id}`.
    pub(super) fn show_image(&self, id: &str) -> Result<Response, ApiError> {
        let image = self.find(id)?;
        Ok(Response::json(200, &image_json(&image)))
    }

    /// `PATCH /v2/images/{id}`.
    pub(super) fn update_image(
        &self,
        request: &mut Request<'_>,
        id: &str,
    ) -> Result<Response, ApiError> {
        let dialect = patch::dialect(request.head.header_str("content-type"))?;
        let changes = patch::parse(&read_json(request, &self.config)?, dialect)?;
        let id = &check_id(id)?;
        let image = self
            .registry
            .update(id, |image| patch::apply(image, &changes, dialect))?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::json(200, &image_json(&image)))
    }

    /// `DELETE /v2/images/{id}`: the record first, then the data, so that no reader is ever
    /// sent to a file that is gone.
    pub(super) fn delete_image(&self, id: &str) -> Result<Response, ApiError> {
        let id = &check_id(id)?;
        let image = self
            .registry
            .delete(id, |image| {
                if image.protected {
                    Err(ApiError::Forbidden(format!(
                        "Image {id} is protected and cannot be deleted."
                    )))
                } else {
                    Ok(())
                }
            })?
            .ok_or_else(|| not_found(id))?;
        if let Some(location) = &image.location {
            if let Err(error) = self.store.delete_data(location) {
                log::error!("image {id} deleted, but its data could not be removed: {error}");
            }
        }
        // A cached copy could never be served again (a hit needs an active image), but it
        // would take room until evicted.
        if let Some(pipeline) = &self.cache {
            pipeline.cache.dequeue(id);
            pipeline.cache.remove(id);
        }
        log::info!("deleted image {id}");
        Ok(Response::new(204))
    }

    /// `PUT /v2/images/{id}/tags/{tag}`.
    pub(super) fn add_tag(&self, id: &str, tag: &str) -> Result<Response, ApiError> {
        let id = &check_id(id)?;
        let tag = representation::valid_tag(tag)?;
        self.registry
            .update(id, |image| {
                let mut tags = image.tags.clone();
                tags.push(tag.clone());
                image.tags = representation::tags(&json!(tags))?;
                Ok::<(), ApiError>(())
            })?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(204))
    }

    /// `DELETE /v2/images/{id}/tags/{tag}`.
    pub(super) fn delete_tag(&self, id: &str, tag: &str) -> Result<Response, ApiError> {
        let id = &check_id(id)?;
        self.registry
            .update(id, |image| {
                let before = image.tags.len();
                image.tags.retain(|t| t != tag);
                if image.tags.len() == before {
                    return Err(ApiError::NotFound(format!("Tag {tag} not found.")));
                }
                Ok(())
            })?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(204))
    }

    /// The image with `id`, or 404 (also for an id that is not a UUID: no image can have it).
    pub(super) fn find(&self, id: &str) -> Result<Image, ApiError> {
        let id = &check_id(id)?;
        self.registry.get(id)?.ok_or_else(|| not_found(id))
    }
}

/// 404 in Glance's words.
pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("No image found with ID {id}"))
}

/// Image ids are UUIDs; anything else cannot name an image. Returns the id in the canonical
/// lowercase form the registry stores, so an id a client chose in upper case still names it.
pub(super) fn check_id(id: &str) -> Result<String, ApiError> {
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) => Ok(uuid.hyphenated().to_string()),
        Err(_) => Err(not_found(id)),
    }
}

/// An `id` a client chose at create: a UUID, kept in the canonical lowercase form.
fn parse_image_id(value: &Value) -> Result<String, ApiError> {
    value
        .as_str()
        .and_then(|text| uuid::Uuid::try_parse(text).ok())
        .map(|uuid| uuid.hyphenated().to_string())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Provided object does not match schema 'image': {value} does not match the \
                 UUID pattern (failed validating 'pattern' in schema['properties']['id'])"
            ))
        })
}

/// Refuses a create body that is not JSON (415), as Glance's JSON deserializer does.
fn require_json(request: &Request<'_>) -> Result<(), ApiError> {
    let media_type = request
        .head
        .header_str("content-type")
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json") => Ok(()),
        other => Err(ApiError::UnsupportedMediaType {
            message: format!(
                "Unsupported Content-Type {:?}; send application/json",
                other.unwrap_or("")
            ),
            accept_patch: false,
        }),
    }
}

/// Reads and parses a JSON body of at most [`MAX_JSON_BODY`] bytes.
fn read_json(request: &mut Request<'_>, config: &Config) -> Result<Value, ApiError> {
    // A JSON body is small: it is due whole within client_header_timeout, like a head, so a
    // trickling client cannot pin a worker thread for longer than that.
    request.limit_body_time(config.client_header_timeout, config.client_body_timeout);
    let mut body = Vec::new();
    let read = request.take(MAX_JSON_BODY + 1).read_to_end(&mut body);
    if let Err(error) = read {
        if matches!(
            error.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            return Err(ApiError::RequestTimeout(
                "The request body did not arrive in time.".to_string(),
            ));
        }
        return Err(ApiError::BadRequest(
            match crate::http::body::http_error(&error) {
                Some(http) => http.message().to_string(),
                None => format!("The request body could not be read: {error}"),
            },
        ));
    }
    if body.len() as u64 > MAX_JSON_BODY {
        return Err(ApiError::TooLarge(format!(
            "The request body is larger than {MAX_JSON_BODY} bytes."
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::BadRequest(format!("Malformed JSON in request body: {error}")))
}
