//! Image members: sharing an image with other projects (`/v2/images/{id}/members`).
//!
//! The owner of a `shared` image adds projects as members; each member accepts or rejects
//! (or leaves pending) the share, and an accepted shared image shows in the member's default
//! image list. Routes, answers and messages follow glance/api/v2/image_members.py:
//!
//! - every route first finds the image as the caller may see it (404 "Image ID not found.");
//! - an image that is not `shared` has no members: 403 (404 on show, which turns every refusal
//!   into 404 so that nothing leaks);
//! - a non-admin sees the rows of images it owns and its own row of images shared with it
//!   (glance/db/sqlalchemy/api.py `_image_member_find`): any other row is 404;
//! - the rules are `add_member`, `delete_member` (the owner), `get_member(s)` (owner or
//!   member) and `modify_member` (the member itself, not the owner), through the generation's
//!   policy; a refused rule is 403 with Glance's policy message.

use serde_json::{json, Value};

use super::access::Context;
use super::error::ApiError;
use super::images::{check_id, read_json, require_json};
use super::Api;
use crate::http::response::Response;
use crate::http::serve::Request;
use crate::registry::{Image, Member, MemberStatus, RegistryError};

/// The longest member id (Glance's `image_members.member` column is 255 characters).
const MAX_MEMBER_ID: usize = 255;

/// What a route does, for the messages of its refusals.
#[derive(Clone, Copy)]
enum Verb {
    Create,
    Update,
    List,
    Delete,
}

impl Verb {
    /// Glance's 403 when the image is not shared, or (legacy policy) not the caller's to
    /// change.
    fn refused(self, image_id: &str) -> ApiError {
        ApiError::Forbidden(match self {
            Verb::Create => format!("Not allowed to create members for image {image_id}."),
            Verb::Update => format!("Not allowed to update members for image {image_id}."),
            Verb::Delete => format!("Not allowed to delete members for image {image_id}."),
            Verb::List => format!(
                "Not allowed to list members for image {image_id}: Only shared images have \
                 members."
            ),
        })
    }
}

impl Api {
    /// `GET /v2/images/{id}/members`.
    pub(super) fn list_members(&self, context: &Context, id: &str) -> Result<Response, ApiError> {
        let image = self.shared_image(context, id, Verb::List)?;
        let target = context.image_target(&image);
        context.enforce("get_members", &target)?;
        let documents: Vec<Value> = if context.allows("get_member", &target) {
            self.registry
                .members(&image.id)?
                .iter()
                .filter(|member| may_see(context, &image, member))
                .map(member_json)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::json(
            200,
            &json!({"members": documents, "schema": "/v2/schemas/members"}),
        ))
    }

    /// `GET /v2/images/{id}/members/{member_id}`: every refusal is a 404.
    pub(super) fn show_member(
        &self,
        context: &Context,
        id: &str,
        member_id: &str,
    ) -> Result<Response, ApiError> {
        let image = self
            .shared_image(context, id, Verb::List)
            .map_err(|error| match error {
                ApiError::Forbidden(_) => {
                    ApiError::NotFound("Only shared images have members.".to_string())
                }
                other => other,
            })?;
        let member =
            self.lookup_member(context, &image, member_id)
                .map_err(|error| match error {
                    ApiError::Forbidden(message) => ApiError::NotFound(message),
                    other => other,
                })?;
        Ok(Response::json(200, &member_json(&member)))
    }

    /// `POST /v2/images/{id}/members` with `{"member": "<project>"}`: 200 and the new
    /// member, pending.
    pub(super) fn add_member(
        &self,
        request: &mut Request<'_>,
        context: &Context,
        id: &str,
    ) -> Result<Response, ApiError> {
        require_json(request)?;
        let body = read_json(request, &self.config)?;
        let member_id = match &body {
            Value::Object(fields) => match fields.get("member") {
                None => {
                    return Err(ApiError::BadRequest(
                        "Member to be added not specified".to_string(),
                    ))
                }
                Some(Value::String(member)) if !member.is_empty() => member.clone(),
                Some(Value::String(_) | Value::Null | Value::Bool(false)) => {
                    return Err(ApiError::BadRequest("Member can't be empty".to_string()))
                }
                Some(_) => return Err(member_form()),
            },
            _ => return Err(member_form()),
        };
        if member_id.len() > MAX_MEMBER_ID {
            return Err(ApiError::BadRequest(format!(
                "Member ids are at most {MAX_MEMBER_ID} characters long."
            )));
        }
        let image = self.shared_image(context, id, Verb::Create)?;
        if context.legacy_owner_checks() && !context.owns(&image) {
            return Err(Verb::Create.refused(&image.id));
        }
        context.enforce("add_member", &context.image_target(&image))?;
        let quota = self.config.image_member_quota;
        let member = match self.registry.add_member(&image.id, &member_id, quota) {
            Ok(Some(member)) => member,
            Ok(None) => return Err(image_not_found(&image.id)),
            Err(RegistryError::Duplicate) => {
                return Err(ApiError::Conflict(format!(
                    "Member {member_id} is duplicated for image {}",
                    image.id
                )))
            }
            Err(RegistryError::MemberQuota { limit }) => {
                return Err(ApiError::TooLarge(format!(
                    "Image member limit exceeded for image {}: The limit has been exceeded on \
                     the number of allowed image members for this image. Attempted: {}, \
                     Maximum: {limit}:",
                    image.id,
                    limit + 1
                )))
            }
            Err(other) => return Err(other.into()),
        };
        log::info!(
            "image {}: project {} added as a member",
            image.id,
            member.member_id.escape_debug()
        );
        Ok(Response::json(200, &member_json(&member)))
    }

    /// `PUT /v2/images/{id}/members/{member_id}` with `{"status": "accepted"}`.
    pub(super) fn update_member(
        &self,
        request: &mut Request<'_>,
        context: &Context,
        id: &str,
        member_id: &str,
    ) -> Result<Response, ApiError> {
        require_json(request)?;
        let body = read_json(request, &self.config)?;
        // Only its presence is checked here (Glance's deserializer); its value once the image,
        // the row and `modify_member` have let the caller through.
        let status = match &body {
            Value::Object(fields) => match fields.get("status") {
                None => return Err(ApiError::BadRequest("Status not specified".to_string())),
                Some(status) => status,
            },
            _ => {
                return Err(ApiError::BadRequest(
                    "Expected a status in the form: {\"status\": \"status\"}".to_string(),
                ))
            }
        };
        let image = self.shared_image(context, id, Verb::Update)?;
        if context.legacy_owner_checks() && context.owns(&image) {
            return Err(Verb::Update.refused(&image.id));
        }
        self.lookup_member(context, &image, member_id)?;
        context.enforce("modify_member", &context.image_target(&image))?;
        let status = status
            .as_str()
            .and_then(MemberStatus::parse)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Incorrect request: Status must be \"pending\", \"accepted\" or \"rejected\"."
                        .to_string(),
                )
            })?;
        let member = self
            .registry
            .set_member_status(&image.id, member_id, status)?
            .ok_or_else(|| member_not_found(member_id, &image.id))?;
        log::info!(
            "image {}: member {} is now {}",
            image.id,
            member.member_id.escape_debug(),
            member.status.as_str()
        );
        Ok(Response::json(200, &member_json(&member)))
    }

    /// `DELETE /v2/images/{id}/members/{member_id}`: 204.
    pub(super) fn delete_member(
        &self,
        context: &Context,
        id: &str,
        member_id: &str,
    ) -> Result<Response, ApiError> {
        let image = self.shared_image(context, id, Verb::Delete)?;
        if context.legacy_owner_checks() && !context.owns(&image) {
            return Err(Verb::Delete.refused(&image.id));
        }
        self.lookup_member(context, &image, member_id)?;
        context.enforce("delete_member", &context.image_target(&image))?;
        if !self.registry.delete_member(&image.id, member_id)? {
            return Err(member_not_found(member_id, &image.id));
        }
        log::info!(
            "image {}: member {} removed",
            image.id,
            member_id.escape_debug()
        );
        Ok(Response::new(204))
    }

    /// The image `id` as the caller sees it, if it is shared: 404 when the caller may not see
    /// it, 403 (in the words of `verb`) when it is not shared.
    fn shared_image(&self, context: &Context, id: &str, verb: Verb) -> Result<Image, ApiError> {
        let id = &check_id(id).map_err(|_| image_not_found(id))?;
        let image = self
            .find_visible(context, id)
            .map_err(|error| match error {
                ApiError::NotFound(_) => image_not_found(id),
                other => other,
            })?;
        if image.visibility != "shared" {
            return Err(verb.refused(id));
        }
        Ok(image)
    }

    /// Member `member_id` of `image` as the caller may see it (`get_member`, then the row
    /// itself): 403 when the rule refuses, 404 when there is no such row for this caller.
    fn lookup_member(
        &self,
        context: &Context,
        image: &Image,
        member_id: &str,
    ) -> Result<Member, ApiError> {
        // Glance's `MemberAPIPolicy` raises webob's HTTPForbidden, which passes the
        // controller's `except exception.Forbidden` untouched: the policy's own message.
        context.enforce("get_member", &context.image_target(image))?;
        self.registry
            .member(&image.id, member_id)?
            .filter(|member| may_see(context, image, member))
            .ok_or_else(|| member_not_found(member_id, &image.id))
    }
}

/// Whether a non-admin may see `member`'s row: the image is its own, or the row is.
fn may_see(context: &Context, image: &Image, member: &Member) -> bool {
    context.is_admin
        || context.project.is_some()
            && (image.owner == context.project
                || Some(member.member_id.as_str()) == context.project.as_deref())
}

/// A member as Glance shows it.
fn member_json(member: &Member) -> Value {
    json!({
        "member_id": member.member_id,
        "image_id": member.image_id,
        "status": member.status.as_str(),
        "created_at": member.created_at,
        "updated_at": member.updated_at,
        "schema": "/v2/schemas/member",
    })
}

fn image_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Image {id} not found."))
}

fn member_not_found(member_id: &str, image_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "{member_id} not found in the member list of the image {image_id}."
    ))
}

fn member_form() -> ApiError {
    ApiError::BadRequest("Expected a member in the form: {\"member\": \"image_id\"}".to_string())
}
