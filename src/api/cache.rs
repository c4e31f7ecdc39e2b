//! Glance's cache API (`cachemanagement` flavor only; every other flavor answers 404 here, as
//! Glance does when the pipeline lacks its cache manage middleware).
//!
//! Routes and answers follow Glance 2.14's `glance/api/v2/cached_images.py`:
//!
//! - `GET /v2/cache`: `{"cached_images": [{"image_id", "hits", "last_accessed",
//!   "last_modified", "size"}], "queued_images": [ids]}`, times as seconds since the epoch
//!   (floats, as Glance's SQLite cache driver stores them);
//! - `PUT /v2/cache/{image_id}`: 202, the image is queued for a prefetch by any child; 404 for an
//!   unknown image, 400 for one that is not active (Glance: "Only images with status active can be
//!   targeted for queueing");
//! - `DELETE /v2/cache/{image_id}`: 204, the cached copy is removed and the image leaves the
//!   queue; 404 for an unknown image;
//! - `DELETE /v2/cache`: 204, everything is removed; the `x-image-cache-clear-target` header
//!   limits it to `cache` or `queue`, as in Glance.
//!
//! Each route asks Glance's rule first (`cache_list`, `cache_image`, `cache_delete`: admins by
//! default): a refusal is 403, before the 404 of a pipeline without a cache, as in Glance.
//! Under `noauth` and `token` every caller passes, as every caller is an admin there.

use serde_json::json;

use super::access::Context;
use super::error::ApiError;
use super::images::not_found;
use super::Api;
use crate::http::response::Response;
use crate::http::serve::Request;
use crate::registry::ImageStatus;

impl Api {
    /// Routes `/v2/cache` and below; `segments` follow `cache`.
    pub(super) fn route_cache(
        &self,
        request: &Request<'_>,
        context: &Context,
        method: &str,
        segments: &[&str],
    ) -> Result<Response, ApiError> {
        let rule = match method {
            "PUT" => "cache_image",
            "DELETE" => "cache_delete",
            _ => "cache_list",
        };
        // Glance: a route on one image finds it first (404) and judges the rule on it.
        let target = match segments {
            [id] if matches!(method, "PUT" | "DELETE") => {
                context.image_target(&self.find_visible(context, id)?)
            }
            _ => crate::policy::Target::new(),
        };
        context.enforce(rule, &target)?;
        let Some(pipeline) = &self.cache else {
            return Err(ApiError::NotFound(
                "The resource could not be found.".to_string(),
            ));
        };
        let cache = &pipeline.cache;
        match (method, segments) {
            ("GET" | "HEAD", []) => {
                let cached: Vec<serde_json::Value> = cache
                    .entries()
                    .into_iter()
                    .map(|(image_id, record)| {
                        json!({
                            "image_id": image_id,
                            "hits": record.hits,
                            "last_accessed": record.last_accessed,
                            "last_modified": record.last_modified,
                            "size": record.size,
                        })
                    })
                    .collect();
                Ok(Response::json(
                    200,
                    &json!({"cached_images": cached, "queued_images": cache.queued()}),
                ))
            }
            ("DELETE", []) => {
                let target = request
                    .head
                    .header_str("x-image-cache-clear-target")
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                let (clear_cache, clear_queue) = match target.as_str() {
                    "" => (true, true),
                    "cache" => (true, false),
                    "queue" => (false, true),
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' \
                             or empty string. Received: {target}"
                        )))
                    }
                };
                let n_queued = if clear_queue { cache.clear_queue() } else { 0 };
                let n_cached = if clear_cache { cache.clear() } else { 0 };
                log::info!(
                    "image cache cleared: {n_cached} cached image(s), {n_queued} queued image(s)"
                );
                Ok(Response::new(204))
            }
            (_, []) => Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD, DELETE",
            }),
            ("PUT", [id]) => {
                let image = self.find_visible(context, id)?;
                // The canonical (lowercase) id, as the cache names its files.
                let id = &image.id.clone();
                if image.status != ImageStatus::Active {
                    return Err(ApiError::BadRequest(
                        "Only images with status active can be targeted for queueing".to_string(),
                    ));
                }
                if !cache.contains(id) {
                    cache
                        .queue(id)
                        .map_err(|error| ApiError::Internal(error.to_string()))?;
                    pipeline.waker.wake();
                }
                Ok(Response::new(202))
            }
            ("DELETE", [id]) => {
                let image = self.find_visible(context, id)?;
                let id = &image.id;
                cache.dequeue(id);
                cache.remove(id);
                Ok(Response::new(204))
            }
            (_, [_]) => Err(ApiError::MethodNotAllowed {
                allow: "PUT, DELETE",
            }),
            _ => Err(not_found("")),
        }
    }
}
