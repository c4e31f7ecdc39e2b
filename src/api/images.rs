//! The image metadata routes: create, list, show, update (JSON patch), delete, and tags.
//!
//! Each handler validates what the client sent, then makes one registry call; read-modify-write
//! changes go through `Registry::update`, which holds the database's write lock for the whole
//! change, so two clients patching one image never lose an update. Glance's messages and status
//! codes are kept where clients or people read them (glance/api/v2/images.py).

use std::io::Read;

use serde_json::{json, Value};

use super::access::Context;
use super::error::ApiError;
use super::representation::{self, check_writable, image_json};
use super::shown::Shown;
use super::{list_query, patch, Api};
use crate::config::Config;
use crate::http::response::{Body, Response};
use crate::http::serve::Request;
use crate::policy::Target;
use crate::registry::{Image, RegistryError};

/// The largest JSON request body (create, patch); more is 413.
pub const MAX_JSON_BODY: u64 = 1024 * 1024;

/// The most values (objects, arrays, strings, numbers, literals) a JSON request body may hold;
/// more is 413 before it is parsed. A parsed value costs 32 bytes or more whatever its text,
/// so 1 MiB of `[0,0,...]` would take 16 MiB as a tree; at this many values the tree costs
/// little beyond the body's own strings. The largest body a client needs (a create with 128
/// properties and 128 tags, or a patch of as many operations) has under a thousand values.
pub const MAX_JSON_VALUES: usize = 4096;

/// The most bytes of image documents one list page holds. A page stops before the image that
/// would take it past this, and then links the next page although it has fewer than `limit`
/// images: Glance's `limit` is a maximum, and glanceclient and openstacksdk follow `next`
/// whatever the page's length. The first image is always taken, so every page makes progress;
/// `image_metadata_size_cap` is at most this, so only an image stored before that cap (or
/// grown by an upload's checksum and hash) can make a page larger. docs/RELIABILITY.md
/// ("Memory of a child") quotes this value.
pub const LIST_PAGE_BYTES: usize = 1024 * 1024;

/// A list page being written: `{"images":[` and each image's document as it comes, then the
/// links. It holds the JSON text of the page and nothing else; each image is dropped once
/// written.
struct ListPage {
    /// The JSON text so far; its capacity never grows past `budget` (or the first image), plus
    /// the links.
    text: Vec<u8>,
    budget: usize,
    n_images: usize,
    /// Images taken from the registry for this page, written or skipped (Glance's
    /// `db_image_count`): whether the page is full, and so links a next page, counts them.
    n_seen: usize,
    last_id: Option<String>,
    /// The page stopped before an image because of its size: there is more to list.
    cut: bool,
}

impl ListPage {
    const OPEN: &'static [u8] = b"{\"images\":[";

    fn new(budget: usize) -> ListPage {
        let mut text = Vec::with_capacity(4096.min(budget));
        text.extend_from_slice(ListPage::OPEN);
        ListPage {
            text,
            budget,
            n_images: 0,
            n_seen: 0,
            last_id: None,
            cut: false,
        }
    }

    /// Adds `image` if it fits the budget (or is the first); false when the page is done.
    fn push(&mut self, image: &Image) -> bool {
        let document = image_json(image);
        let needed = self.text.len() + 1 + representation::json_len(&document);
        if self.n_images > 0 && needed > self.budget {
            self.cut = true;
            return false;
        }
        if needed > self.text.capacity() {
            // Grow by doubling as `Vec` does, but never past what the budget (or the first
            // image) needs: the page's memory is its bound, not twice it.
            let capacity = (self.text.capacity() * 2).clamp(needed, self.budget.max(needed));
            self.text.reserve_exact(capacity - self.text.len());
        }
        if self.n_images > 0 {
            self.text.push(b',');
        }
        // Writing a `Value` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut self.text, &document);
        self.n_images += 1;
        self.n_seen += 1;
        self.last_id = Some(image.id.clone());
        true
    }

    /// Passes over `image`, which the caller may not `get_image`: it is not shown, but the
    /// next page starts after it.
    fn skip(&mut self, image: &Image) {
        self.n_seen += 1;
        self.last_id = Some(image.id.clone());
    }

    /// The page's JSON text: the images, then `first`, `schema` and `next` when there is one.
    fn finish(mut self, first: &str, next: Option<&str>) -> Vec<u8> {
        let mut tail = b"],\"first\":".to_vec();
        let _ = serde_json::to_writer(&mut tail, first);
        tail.extend_from_slice(b",\"schema\":\"/v2/schemas/images\"");
        if let Some(next) = next {
            tail.extend_from_slice(b",\"next\":");
            let _ = serde_json::to_writer(&mut tail, next);
        }
        tail.push(b'}');
        // Exactly: a full page would otherwise double its buffer for a few hundred bytes.
        self.text.reserve_exact(tail.len());
        self.text.extend_from_slice(&tail);
        self.text
    }
}

impl Api {
    /// `POST /v2/images`.
    pub(super) fn create_image(
        &self,
        request: &mut Request<'_>,
        context: &Context,
    ) -> Result<Response, ApiError> {
        require_json(request)?;
        let Value::Object(fields) = read_json(request, &self.config)? else {
            return Err(ApiError::BadRequest(
                "Request body must be a JSON object.".to_string(),
            ));
        };
        let mut image = Image::new(uuid::Uuid::new_v4().to_string());
        // Glance's owner_is_tenant: the creating project owns the image unless the body names
        // another owner, which only an admin may (`add_image` checks the owner).
        image.owner = context.project.clone();
        for (name, value) in &fields {
            if name == "id" {
                image.id = parse_image_id(value)?;
                continue;
            }
            check_writable(name)?;
            representation::set_attribute(&mut image, name, value)?;
        }
        check_formats(&image, None, &self.config.image_format)?;
        representation::check_metadata_size(&image, None, self.config.image_metadata_size_cap)?;
        context.enforce_add_image(&image)?;
        self.registry.create(&image).map_err(|error| match error {
            crate::registry::RegistryError::Duplicate => ApiError::Conflict(format!(
                "Image with identifier {} already exists!",
                image.id
            )),
            other => other.into(),
        })?;
        log::info!("created image {}", image.id);
        // glanceclient reads the import methods from here (and from GET /v2/info/import).
        Ok(Response::json(201, &image_json(&image))
            .header("Location", &format!("/v2/images/{}", image.id))
            .header(
                "OpenStack-image-import-methods",
                &self.config.import_methods.join(","),
            ))
    }

    /// `GET /v2/images`: the page is written image by image into one buffer of at most
    /// [`LIST_PAGE_BYTES`] (see [`ListPage`]), taking the images from the registry one at a
    /// time, so a page of a thousand large images costs no more than a small page.
    pub(super) fn list_images(
        &self,
        request: &Request<'_>,
        context: &Context,
    ) -> Result<Response, ApiError> {
        let mut parsed = list_query::parse(
            request.head.query(),
            self.config.limit_param_default,
            self.config.api_limit_max,
        )?;
        let mut target = Target::new();
        if let Some(project) = &context.project {
            target.insert("project_id".to_string(), project.clone());
        }
        context.enforce("get_images", &target)?;
        parsed.query.filters.viewer = context.viewer();
        // Glance lists an admin's own community images without `visibility` too.
        if context.is_admin {
            parsed.query.filters.admin_project = context.project.clone();
        }
        let mut page = ListPage::new(LIST_PAGE_BYTES);
        // Glance's `index` keeps only the images the caller may `get_image`: with the default
        // rules that is every image the registry lists, but a policy file may say otherwise.
        self.registry
            .list_each(&parsed.query, |image| {
                if context.may_get(&image) {
                    page.push(&image)
                } else {
                    page.skip(&image);
                    true
                }
            })
            .map_err(|error| match error {
                RegistryError::MarkerNotVisible => ApiError::Forbidden(format!(
                    "Forbidding request, image {} not visible",
                    parsed.query.marker.as_deref().unwrap_or_default()
                )),
                other => other.into(),
            })?;
        let first = if parsed.link_parameters.is_empty() {
            "/v2/images".to_string()
        } else {
            let mut serializer = form_urlencoded::Serializer::new(String::new());
            for (name, value) in &parsed.link_parameters {
                serializer.append_pair(name, value);
            }
            format!("/v2/images?{}", serializer.finish())
        };
        // A full page may have more behind it; Glance links the next page only then. A page
        // cut short by its size has more behind it for certain.
        let full = parsed.query.limit > 0 && page.n_seen == parsed.query.limit;
        let next = match &page.last_id {
            Some(last) if full || page.cut => {
                Some(list_query::next_link(&parsed.link_parameters, last))
            }
            _ => None,
        };
        let mut response = Response::new(200).header("Content-Type", "application/json");
        response.body = Body::Bytes(page.finish(&first, next.as_deref()));
        Ok(response)
    }

    /// `GET /v2/images/{id}`: from the child's memory when the registry has not changed since
    /// the image was last shown (the `shown` module), else read and then kept.
    pub(super) fn show_image(&self, context: &Context, id: &str) -> Result<Response, ApiError> {
        // Taken before the read: a write committed after it moves the version on.
        let version = self.registry.version();
        if let Some(version) = version {
            let canonical = check_id(id)?;
            if let Some(shown) = self.shown.get(&canonical, version) {
                // Visibility without a membership: an image that only a membership shows is
                // read again with it below.
                if context.sees(&shown.image, None) {
                    context.enforce_on_image("get_image", &shown.image)?;
                    return Ok(document_response(shown.document.clone()));
                }
            }
        }
        let image = self.find_visible(context, id)?;
        let document = match serde_json::to_vec(&image_json(&image)) {
            Ok(document) => document,
            Err(_) => return Ok(Response::json(200, &image_json(&image))),
        };
        if let Some(version) = version {
            self.shown.keep(
                version,
                Shown {
                    image,
                    document: document.clone(),
                },
            );
        }
        Ok(document_response(document))
    }

    /// `PATCH /v2/images/{id}`.
    pub(super) fn update_image(
        &self,
        request: &mut Request<'_>,
        context: &Context,
        id: &str,
    ) -> Result<Response, ApiError> {
        let dialect = patch::dialect(request.head.header_str("content-type"))?;
        let changes = patch::parse(&read_json(request, &self.config)?, dialect)?;
        let found = self.find_for(context, id, "modify_image")?;
        // Glance (`_do_replace`): even a replace by the same value.
        let replaces_owner = changes
            .iter()
            .any(|change| matches!(change, patch::Change::Replace { name, .. } if name == "owner"));
        if replaces_owner && !context.is_admin {
            return Err(ApiError::Forbidden(
                "Owner can't be updated by non admin.".to_string(),
            ));
        }
        let id = &found.id;
        let cap = self.config.image_metadata_size_cap;
        let image = self
            .registry
            .update(id, |image| {
                // Again under the write lock: the image may have changed hands since.
                context.enforce_on_image("modify_image", image)?;
                let before_target = context.image_target(image);
                let (visibility, owner) = (image.visibility.clone(), image.owner.clone());
                let formats = (image.disk_format.clone(), image.container_format.clone());
                let before = representation::document_len(image);
                patch::apply(image, &changes, dialect)?;
                check_formats(image, Some(&formats), &self.config.image_format)?;
                if image.visibility != visibility {
                    context.enforce_visibility(&image.visibility, &before_target)?;
                }
                if image.owner != owner && !context.is_admin {
                    return Err(ApiError::Forbidden(
                        "Owner can't be updated by non admin.".to_string(),
                    ));
                }
                representation::check_metadata_size(image, Some(before), cap)
            })?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::json(200, &image_json(&image)))
    }

    /// `DELETE /v2/images/{id}`: the record first, then the data, so that no reader is ever
    /// sent to a file that is gone.
    pub(super) fn delete_image(&self, context: &Context, id: &str) -> Result<Response, ApiError> {
        let found = self.find_for(context, id, "delete_image")?;
        let id = &found.id;
        let image = self
            .registry
            .delete(id, |image| {
                context.enforce_on_image("delete_image", image)?;
                if image.protected {
                    Err(ApiError::Forbidden(format!(
                        "Image {id} is protected and cannot be deleted."
                    )))
                } else {
                    Ok(())
                }
            })?
            .ok_or_else(|| not_found(id))?;
        // Every copy: `location` with one store, each store's with several (the first of
        // which is `location` too).
        let mut paths: Vec<&String> = image.location.iter().collect();
        for location in &image.locations {
            if !paths.contains(&&location.path) {
                paths.push(&location.path);
            }
        }
        for path in paths {
            if let Err(error) = self.stores.default_store().delete_data(path) {
                log::error!("image {id} deleted, but its data could not be removed: {error}");
            }
        }
        // A cached copy could never be served again (a hit needs an active image), but it
        // would take room until evicted.
        if let Some(pipeline) = &self.cache {
            pipeline.cache.dequeue(id);
            pipeline.cache.remove(id);
        }
        self.forget_staged(id);
        log::info!("deleted image {id}");
        Ok(Response::new(204))
    }

    /// `PUT /v2/images/{id}/tags/{tag}`.
    pub(super) fn add_tag(
        &self,
        context: &Context,
        id: &str,
        tag: &str,
    ) -> Result<Response, ApiError> {
        let found = self.find_for(context, id, "modify_image")?;
        let id = &found.id;
        let tag = representation::valid_tag(tag)?;
        let cap = self.config.image_metadata_size_cap;
        self.registry
            .update(id, |image| {
                context.enforce_on_image("modify_image", image)?;
                let before = representation::document_len(image);
                let mut tags = image.tags.clone();
                tags.push(tag.clone());
                image.tags = representation::tags(&json!(tags))?;
                representation::check_metadata_size(image, Some(before), cap)
            })?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(204))
    }

    /// `DELETE /v2/images/{id}/tags/{tag}`.
    pub(super) fn delete_tag(
        &self,
        context: &Context,
        id: &str,
        tag: &str,
    ) -> Result<Response, ApiError> {
        let found = self.find_for(context, id, "modify_image")?;
        let id = &found.id;
        self.registry
            .update(id, |image| {
                context.enforce_on_image("modify_image", image)?;
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

    /// The image with `id` as `context` may see it: 404 for an id that is not a UUID (no
    /// image can have it), an image that does not exist or that the caller may not see, or
    /// one it may not `get_image`.
    pub(super) fn find_visible(&self, context: &Context, id: &str) -> Result<Image, ApiError> {
        let id = &check_id(id)?;
        let project = if context.is_admin {
            None
        } else {
            context.project.as_deref()
        };
        let (image, membership) = self
            .registry
            .get_with_membership(id, project)?
            .ok_or_else(|| not_found(id))?;
        if !context.sees(&image, membership.as_ref()) {
            return Err(not_found(id));
        }
        context.enforce_on_image("get_image", &image)?;
        Ok(image)
    }

    /// The image with `id` as [`Api::find_visible`] finds it, if the caller also passes
    /// `rule` on it (403, or 404 where Glance hides the refusal).
    pub(super) fn find_for(
        &self,
        context: &Context,
        id: &str,
        rule: &str,
    ) -> Result<Image, ApiError> {
        let image = self.find_visible(context, id)?;
        context.enforce_on_image(rule, &image)?;
        Ok(image)
    }

    /// `POST /v2/images/{id}/actions/deactivate` and `.../reactivate`: 204; a repeat changes
    /// nothing; an image in any other status is 403 (glance/domain `Image.deactivate`).
    pub(super) fn image_action(
        &self,
        context: &Context,
        id: &str,
        action: &str,
    ) -> Result<Response, ApiError> {
        use crate::registry::ImageStatus::{Active, Deactivated};
        let found = self.find_for(context, id, action)?;
        let id = &found.id;
        let (from, to) = if action == "deactivate" {
            (Active, Deactivated)
        } else {
            (Deactivated, Active)
        };
        let mut changed = false;
        self.registry
            .update(id, |image| {
                context.enforce_on_image(action, image)?;
                if image.status == to {
                    return Ok(());
                }
                if image.status != from {
                    return Err(ApiError::Forbidden(format!(
                        "Not allowed to {action} image in status '{}'",
                        image.status
                    )));
                }
                image.status = to;
                changed = true;
                Ok(())
            })?
            .ok_or_else(|| not_found(id))?;
        if changed {
            log::info!("image {id} is {to}");
        }
        Ok(Response::new(204))
    }
}

/// A 200 with an image's JSON document.
fn document_response(document: Vec<u8>) -> Response {
    let mut response = Response::new(200).header("Content-Type", "application/json");
    response.body = Body::Bytes(document);
    response
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
pub(super) fn require_json(request: &Request<'_>) -> Result<(), ApiError> {
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
pub(super) fn read_json(request: &mut Request<'_>, config: &Config) -> Result<Value, ApiError> {
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
    match json_shape(&body) {
        JsonShape::Small => {}
        JsonShape::TooManyValues => {
            return Err(ApiError::TooLarge(format!(
                "The request body holds more than {MAX_JSON_VALUES} JSON values."
            )))
        }
        JsonShape::TooDeep => {
            return Err(ApiError::BadRequest(format!(
                "Malformed JSON in request body: recursion limit exceeded (more than \
                 {MAX_JSON_DEPTH} levels of nesting)."
            )))
        }
    }
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::BadRequest(format!("Malformed JSON in request body: {error}")))
}

/// How deep a JSON body may nest: what serde_json parses (its recursion limit refuses 128
/// levels), checked before parsing so that a body cannot have its values parsed before the
/// parser meets the depth. Only the message changes: such a body was already 400.
const MAX_JSON_DEPTH: usize = 127;

/// What [`json_shape`] found.
#[derive(Debug, PartialEq, Eq)]
enum JsonShape {
    /// At most [`MAX_JSON_VALUES`] values, nested at most [`MAX_JSON_DEPTH`] deep: parse it.
    Small,
    TooManyValues,
    TooDeep,
}

/// Counts, without parsing, an upper bound of the values `text` holds as JSON and its nesting
/// depth, stopping at the first limit passed. Outside strings, every value but the first
/// follows a `,` or opens an array or an object, and each string is a value (object keys too,
/// which only overcounts). Text that is not JSON gets some count and is refused here or left
/// to the parser, which reports it.
fn json_shape(text: &[u8]) -> JsonShape {
    json_shape_with(text, MAX_JSON_VALUES, MAX_JSON_DEPTH)
}

fn json_shape_with(text: &[u8], max_values: usize, max_depth: usize) -> JsonShape {
    let mut n_values = 1usize;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                n_values += 1;
            }
            b',' => n_values += 1,
            b'[' | b'{' => {
                n_values += 1;
                depth += 1;
                if depth > max_depth {
                    return JsonShape::TooDeep;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if n_values > max_values {
            return JsonShape::TooManyValues;
        }
    }
    JsonShape::Small
}

/// `[image_format] disk_formats` and `container_formats`: Glance builds the image schema's
/// `disk_format` and `container_format` enums from them, so a value outside one is a 400 with the
/// schema's message. With `before` (a patch: the image's formats before it), only a changed
/// value is checked: an image keeps a format the operator has since removed from the list.
fn check_formats(
    image: &Image,
    before: Option<&(Option<String>, Option<String>)>,
    options: &crate::config::ImageFormat,
) -> Result<(), ApiError> {
    let fields = [
        (
            "disk_format",
            &image.disk_format,
            &options.disk_formats,
            before.map(|b| &b.0),
        ),
        (
            "container_format",
            &image.container_format,
            &options.container_formats,
            before.map(|b| &b.1),
        ),
    ];
    for (field, value, allowed, before) in fields {
        let Some(value) = value else { continue };
        if before == Some(&Some(value.clone())) || allowed.iter().any(|a| a == value) {
            continue;
        }
        let allowed: Vec<String> = std::iter::once("None".to_string())
            .chain(allowed.iter().map(|format| format!("'{format}'")))
            .collect();
        return Err(ApiError::BadRequest(format!(
            "Provided object does not match schema 'image': '{value}' is not one of [{}] \
             (failed validating 'enum' in schema['properties']['{field}'])",
            allowed.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_counted_outside_strings_only_and_depth_at_serde_s_limit() {
        use JsonShape::*;
        let shape = |text: &[u8], max_values| json_shape_with(text, max_values, MAX_JSON_DEPTH);
        assert_eq!(shape(b"{}", 2), Small);
        assert_eq!(shape(b"{}", 1), TooManyValues);
        // `{`, the key, the value: 3, plus the starting 1.
        assert_eq!(shape(br#"{"a":"b"}"#, 4), Small);
        assert_eq!(shape(br#"{"a":"b"}"#, 3), TooManyValues);
        // Commas, brackets and escaped quotes inside a string are not values.
        let inside = br#"["a,[{\",b"]"#;
        assert_eq!(shape(inside, 3), Small);
        assert_eq!(shape(inside, 2), TooManyValues);
        // 1 MiB of zeros is 524,288 values: refused at the limit, whatever follows.
        let zeros = [b"[".as_slice(), &b"0,".repeat(524_287), b"0]"].concat();
        assert_eq!(json_shape(&zeros), TooManyValues);
        assert_eq!(shape(&zeros, 524_289), Small);
        // The depth serde_json parses passes, one more does not, even among few values.
        let nested = |depth: usize| [vec![b'['; depth], vec![b']'; depth]].concat();
        assert_eq!(json_shape_with(&nested(127), 1000, MAX_JSON_DEPTH), Small);
        assert_eq!(json_shape_with(&nested(128), 1000, MAX_JSON_DEPTH), TooDeep);
        assert!(serde_json::from_slice::<Value>(&nested(127)).is_ok());
        assert!(serde_json::from_slice::<Value>(&nested(128)).is_err());
        // Closing brackets give the depth back: many shallow arrays are not deep.
        assert_eq!(
            json_shape_with(&b"[],".repeat(200), 1000, MAX_JSON_DEPTH),
            Small
        );
        // The largest create a client needs: 128 properties and 128 tags.
        let mut fields = serde_json::Map::new();
        for i in 0..128 {
            fields.insert(format!("p{i}"), json!("v"));
        }
        fields.insert(
            "tags".to_string(),
            json!((0..128).map(|i| format!("t{i}")).collect::<Vec<_>>()),
        );
        assert_eq!(
            json_shape(Value::Object(fields).to_string().as_bytes()),
            Small
        );
    }
}
