//! Several stores as the API shows them (`enabled_backends`): `GET /v2/info/stores`, its admin
//! `/detail`, and `DELETE /v2/stores/{store}/{image}`, which removes one copy of an image's
//! data. Each answers 404 without several stores, as Glance does (glance/api/v2/discovery.py,
//! `ImagesController.delete_from_store`). Which store an upload goes to is `image_data.rs`'s
//! business (`X-Image-Meta-Store`).

use serde_json::{json, Map, Value};

use super::access::Context;
use super::error::ApiError;
use super::Api;
use crate::http::response::Response;
use crate::policy::Target;
use crate::registry::ImageStatus;

/// The `chunk_size` a file store's detail shows: glance_store's `filesystem_store_chunk_size`
/// default, which Glance reports there. Only shown: glint reads an upload in
/// [`crate::store::UPLOAD_BUFFER`]s.
const CHUNK_SIZE: usize = 64 * 1024;

/// The 404 without several stores (Glance's message).
fn not_multi() -> ApiError {
    ApiError::NotFound("Multi backend is not supported at this site.".to_string())
}

impl Api {
    /// `GET /v2/info/stores` (no policy), and with `detail` `GET /v2/info/stores/detail`
    /// (rule `stores_info_detail`, admins by default), which adds each store's type, weight
    /// and file driver properties.
    pub(super) fn stores_info(
        &self,
        context: &Context,
        detail: bool,
    ) -> Result<Response, ApiError> {
        let Some(backends) = &self.config.backends else {
            return Err(not_multi());
        };
        if detail {
            let mut target = Target::new();
            if let Some(project) = &context.project {
                target.insert("project_id".to_string(), project.clone());
            }
            context.enforce("stores_info_detail", &target)?;
        }
        let stores: Vec<Value> = backends
            .list
            .iter()
            .map(|backend| {
                let mut store = Map::new();
                store.insert("id".to_string(), json!(backend.id));
                if let Some(description) = &backend.description {
                    store.insert("description".to_string(), json!(description));
                }
                // Glance sends the string "true", not a JSON boolean.
                if backend.id == backends.default {
                    store.insert("default".to_string(), json!("true"));
                }
                if detail {
                    // glance_store's file driver has `datadir` only with one folder.
                    let data_dir = match backend.datadirs.as_slice() {
                        [only] => json!(only.path.to_string_lossy()),
                        _ => Value::Null,
                    };
                    store.insert("type".to_string(), json!("file"));
                    store.insert(
                        "properties".to_string(),
                        json!({
                            "data_dir": data_dir,
                            "chunk_size": CHUNK_SIZE,
                            "thin_provisioning": false,
                        }),
                    );
                    store.insert("weight".to_string(), json!(backend.weight));
                }
                Value::Object(store)
            })
            .collect();
        Ok(Response::json(200, &json!({ "stores": stores })))
    }

    /// `DELETE /v2/stores/{store}/{image}`: removes the image's copy in that store, in
    /// Glance's order of checks: 404 without several stores, 409 for a store not configured,
    /// 404 for an image the caller cannot see, the location rules (`get_image_location`,
    /// `delete_image_location`: admins by default), 409 unless active, 403 for the last copy,
    /// 404 when the image has no copy there. The record changes first, then the file goes, so
    /// no reader is sent to a file that is gone.
    pub(super) fn delete_from_store(
        &self,
        context: &Context,
        store: &str,
        id: &str,
    ) -> Result<Response, ApiError> {
        if !self.stores.is_multi() {
            return Err(not_multi());
        }
        if self.stores.get(store).is_none() {
            return Err(ApiError::Conflict(format!(
                "The selected store {store} is not available on this node."
            )));
        }
        let found = self.find_visible(context, id)?;
        let id = &found.id;
        let mut removed = None;
        self.registry
            .update(id, |image| {
                context.enforce_on_image("get_image_location", image)?;
                context.enforce_on_image("delete_image_location", image)?;
                if image.status != ImageStatus::Active {
                    return Err(ApiError::Conflict(
                        "It's not allowed to remove image data from store if image status is \
                         not 'active'"
                            .to_string(),
                    ));
                }
                if image.locations.len() <= 1 {
                    return Err(ApiError::Forbidden(
                        "Cannot delete image data from the only store containing it. Consider \
                         deleting the image instead."
                            .to_string(),
                    ));
                }
                let Some(position) = image
                    .locations
                    .iter()
                    .position(|location| location.store == store)
                else {
                    return Err(ApiError::NotFound(format!(
                        "Image {id} is not stored in store {store}."
                    )));
                };
                let location = image.locations.remove(position);
                image.location = image.locations.first().map(|first| first.path.clone());
                removed = Some(location);
                Ok(())
            })?
            .ok_or_else(|| super::images::not_found(id))?;
        if let Some(location) = removed {
            if let Err(error) = self.stores.default_store().delete_data(&location.path) {
                log::error!(
                    "image {id} no longer lists store {store}, but its data there could not be \
                     removed: {error}"
                );
            }
            log::info!("removed the copy of image {id} in store {store}");
        }
        Ok(Response::new(204))
    }
}
