//! Interoperable image import (Image API 2.6) with `glance-direct`, `web-download` and
//! `copy-image`: `GET /v2/info/import`, `PUT /v2/images/{id}/stage` and
//! `POST /v2/images/{id}/import`.
//!
//! Staging streams the body into the staging folder (`node_staging_uri`) as a store upload
//! does: under a temporary name carrying this process's owner token, renamed to
//! `<staging>/<image id>` when complete. The image is `uploading` while it stages (recorded
//! under this process, like an upload's `saving`) and stays `uploading`, with no owner, once
//! staged. The import answers 202 and runs on a thread of its own ([`ImportJob`]): it reads
//! the staged file, inspects its format and hashes it while it writes it to a store (the
//! upload's path, with the same rules), and records that copy; with several stores it does so
//! for each target store in turn (`stores`, `all_stores`, or the one `X-Image-Meta-Store` or
//! the default names), as Glance's `_ImportToStore` tasks do. The image turns `active` with
//! the last store (with `all_stores_must_succeed: false`, with the first that succeeds), and
//! the staged file goes. `os_glance_importing_to_stores` and `os_glance_failed_import` are
//! Glance's comma lists. On a failure that fails the import, every copy it recorded is removed,
//! the image goes back to `queued` with the failed store in `os_glance_failed_import`, and the
//! staged file goes, as in Glance (`api_image_import.py`'s revert).
//!
//! `copy-image` is the same job with another source and no status change: it reads a copy
//! the image has, writes it to each target store, and records a copy only if its size and
//! hashes equal the image's (Glance's `_verify_uploaded_data`). The image stays `active`; while
//! the job runs, the image's `upload_owner` names this process, which is Glance's import lock
//! (`os_glance_import_task`) with a liveness check.
//!
//! `web-download` takes a `queued` image whose URI passes `[import_filtering_opts]`
//! (`import_uri.rs`; a refusal is Glance's 400 and changes nothing), and its import thread
//! first downloads the URI into the staging folder (`web_download.rs`, through the staging
//! store, so the download is the stage), then goes on as glance-direct; a failed download is a
//! failed import.
//!
//! # Reloads and stops
//!
//! A child joins its import threads after its workers at a drain ([`Imports::finish`]), so an
//! import running when a reload or a stop comes completes before the child exits. If the child
//! dies anyway (killed at the drain deadline, say), the image stays `importing` under a dead
//! owner; recovery (`Api::recover`, and the periodic `Api::recover_abandoned`) puts it back
//! to `uploading` when its staged file is intact, so the client imports it again, or to
//! `queued` with `os_glance_failed_import` otherwise. A stage cut short the same way goes back
//! to `queued`. Staged files of images that no longer wait for an import are removed.
//!
//! Each import is recorded as a task (`super::tasks`): `pending` at the 202, `processing`
//! when the thread starts, then `success` or `failure` with the reason; the image's
//! `os_glance_import_task` names it while the import runs.
//!
//! A web-download that stalls ends within `web_download_read_timeout` (each connection within
//! `web_download_connect_timeout`), so it cannot hold a drain longer than that; one that keeps
//! sending slowly holds it until `graceful_shutdown_timeout`.
//!
//! Not served yet: `glance-download`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};

use super::access::Context;
use super::error::ApiError;
use super::image_data::{declared_size_within_cap, pump, require_octet_stream, store_error};
use super::import_uri::{self, ImportUri};
use super::tasks::{TaskRecord, IMPORT_TASK};
use super::web_download;
use super::Api;
use crate::config::Config;
use crate::http::response::Response;
use crate::http::serve::Request;
use crate::registry::{Image, ImageStatus, Location, Registry};
use crate::store::{Store, Stored};

/// The property Glance sets, to the stores an import failed for, when the image goes back to
/// `queued`.
pub const FAILED_IMPORT: &str = "os_glance_failed_import";

/// The property Glance sets, during an import, to the stores it still writes to.
pub const IMPORTING_TO_STORES: &str = "os_glance_importing_to_stores";

/// The methods glint serves.
const GLANCE_DIRECT: &str = "glance-direct";
const COPY_IMAGE: &str = "copy-image";
/// The method that downloads the data from a URI first (`web_download.rs`).
const WEB_DOWNLOAD: &str = "web-download";

/// The import threads of one child, joined at its drain.
#[derive(Default)]
pub struct Imports {
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Imports {
    fn add(&self, thread: JoinHandle<()>) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        // Finished ones need no join to free their resources, only to be forgotten.
        threads.retain(|thread| !thread.is_finished());
        threads.push(thread);
    }

    /// Waits for every import this child started.
    pub fn finish(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if !threads.is_empty() {
            log::info!("waiting for {} image import(s) to finish", threads.len());
        }
        for thread in threads {
            if thread.join().is_err() {
                log::error!("an image import thread panicked");
            }
        }
    }
}

/// The name `os_glance_failed_import` gives a store: its id, or `file` with one unnamed store
/// (Glance's single store is the `file` scheme).
fn store_name(id: Option<&str>) -> String {
    id.unwrap_or("file").to_string()
}

impl Api {
    /// The URI of a web-download import, if it passes `[import_filtering_opts]` (400 with
    /// Glance's message otherwise), and the staging store it downloads into.
    fn web_download_source(&self, method: &Value, id: &str) -> Result<Download, ApiError> {
        let uri = method.get("uri");
        let text = uri.and_then(Value::as_str).unwrap_or_default();
        let checked = import_uri::check(text, &self.config.web_download).map_err(|reason| {
            // Python shows a missing uri as None, a non-string as its repr.
            let shown = match uri {
                None | Some(Value::Null) => "None".to_string(),
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
            };
            log::debug!("URI for web-download of image {id} does not pass filtering: {reason}");
            ApiError::BadRequest(format!(
                "URI for web-download does not pass filtering: {shown}"
            ))
        })?;
        let staging = self.staging.open(&self.config).map_err(|error| {
            log::error!("cannot download into the staging area: {error}");
            ApiError::Unavailable("The staging area is not available.".to_string())
        })?;
        Ok(Download {
            uri: checked,
            staging,
        })
    }

    fn glance_direct_enabled(&self) -> bool {
        self.config
            .import_methods
            .iter()
            .any(|m| m == GLANCE_DIRECT)
    }

    /// The path of the staged data of image `id`.
    fn staged_path(&self, id: &str) -> PathBuf {
        self.config.staging_dir.join(id)
    }

    /// `GET /v2/info/import`: the methods served (Glance's document).
    pub(super) fn import_info(&self) -> Response {
        Response::json(
            200,
            &json!({
                "import-methods": {
                    "description": "Import methods available.",
                    "type": "array",
                    "value": self.config.import_methods,
                }
            }),
        )
    }

    /// `PUT /v2/images/{id}/stage`.
    pub(super) fn stage(
        &self,
        request: &mut Request<'_>,
        context: &Context,
        id: &str,
    ) -> Result<Response, ApiError> {
        if !self.glance_direct_enabled() {
            return Err(ApiError::NotFound(
                "'glance-direct' method is not available at this site.".to_string(),
            ));
        }
        require_octet_stream(request)?;
        let staging = self.staging.open(&self.config).map_err(|error| {
            log::error!("cannot stage image data: {error}");
            ApiError::Unavailable("The staging area is not available.".to_string())
        })?;
        let found = self.find_for(context, id, "modify_image")?;
        let id = &found.id;
        let declared = declared_size_within_cap(request, self.config.image_size_cap)?;
        let owner = self.owner_token.clone();
        self.registry
            .update(id, |image| {
                context.enforce_on_image("modify_image", image)?;
                if image.status != ImageStatus::Queued {
                    return Err(ApiError::Conflict(format!(
                        "Image status transition from {} to uploading is not allowed",
                        image.status
                    )));
                }
                image.status = ImageStatus::Uploading;
                image.upload_owner = Some(owner.clone());
                Ok(())
            })?
            .ok_or_else(|| super::images::not_found(id))?;
        let mut guard = StatusGuard {
            registry: &self.registry,
            id,
            owner: &owner,
            from: ImageStatus::Uploading,
            failed_store: None,
            staged: None,
            committed: false,
        };
        let mut upload = staging
            .begin_upload(id, declared, &owner)
            .map_err(store_error)?;
        pump(request, id, &mut upload, |_| {})?;
        let staged = upload.finish().map_err(store_error)?;
        guard.staged = Some(PathBuf::from(&staged.location));
        let done = self.registry.update(id, |image| {
            if image.status != ImageStatus::Uploading
                || image.upload_owner.as_deref() != Some(owner.as_str())
            {
                return Err(ApiError::Conflict(
                    "The image changed state while it was staged.".to_string(),
                ));
            }
            image.upload_owner = None;
            Ok(())
        });
        match done {
            Ok(Some(_)) => {
                guard.committed = true;
                log::info!("image {id} staged: {} bytes", staged.size);
                Ok(Response::new(204))
            }
            Ok(None) => Err(ApiError::Gone(format!(
                "Image {id} could not be found after upload. The image may have been deleted \
                 during the upload."
            ))),
            Err(error) => Err(error),
        }
    }

    /// `POST /v2/images/{id}/import`: checks the request as Glance does, marks the image
    /// `importing` under this process (copy-image: keeps it `active`, held by this process),
    /// and starts the import thread; 202.
    pub(super) fn import(
        &self,
        request: &mut Request<'_>,
        context: &Context,
        id: &str,
    ) -> Result<Response, ApiError> {
        let body = super::images::read_json(request, &self.config)?;
        let Some(method) = body.get("method") else {
            return Err(ApiError::BadRequest(
                "Import request requires a 'method' field.".to_string(),
            ));
        };
        let Some(name) = method.get("name") else {
            return Err(ApiError::BadRequest(
                "Import request requires a 'name' field.".to_string(),
            ));
        };
        let name = name.as_str().unwrap_or_default();
        if !self.config.import_methods.iter().any(|m| m == name) {
            let shown = match method.get("name") {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            return Err(ApiError::BadRequest(format!(
                "Unknown import method name '{shown}'."
            )));
        }
        for flag in ["all_stores_must_succeed", "all_stores"] {
            if body.get(flag).is_some_and(|value| !value.is_boolean()) {
                return Err(ApiError::BadRequest(format!(
                    "'{flag}' must be boolean value only"
                )));
            }
        }
        let method = match name {
            COPY_IMAGE => Method::CopyImage,
            WEB_DOWNLOAD => Method::WebDownload,
            _ => Method::GlanceDirect,
        };
        let all_stores_must_succeed = body
            .get("all_stores_must_succeed")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let all_stores = body.get("all_stores") == Some(&Value::Bool(true));
        if method == Method::CopyImage && !self.stores.is_multi() {
            // Glance fails such a request with a 500 (no store in the locations' metadata).
            return Err(ApiError::BadRequest(
                "The copy-image method needs several stores ([DEFAULT] enabled_backends) at \
                 this site."
                    .to_string(),
            ));
        }
        let found = self.find_visible(context, id)?;
        let id = found.id.clone();
        let owner = self.owner_token.clone();
        // web-download: Glance answers the image's conflicts (409) before the URI's refusal
        // (400), so they are checked on the image as found, then again under the write lock.
        let download = if method == Method::WebDownload {
            status_conflict(&found, method)?;
            Some(self.web_download_source(method_body(&body), &id)?)
        } else {
            None
        };
        // Removed again if the import does not start (dropped while pending).
        let task = TaskRecord::create(
            &self.registry,
            &self.config,
            context,
            &id,
            &body,
            request
                .head
                .header_str("x-image-meta-store")
                .filter(|_| self.stores.is_multi()),
            &owner,
        )?;
        let mut targets = Vec::new();
        // Read before the write lock: the check below runs under it and must not call the
        // registry.
        let alive = self.liveness()?;
        let image = self
            .registry
            .update(&id, |image| {
                status_conflict(image, method)?;
                if image.container_format.is_none() {
                    return Err(ApiError::Conflict(
                        "'container_format' needs to be set before import".to_string(),
                    ));
                }
                if image.disk_format.is_none() {
                    return Err(ApiError::Conflict(
                        "'disk_format' needs to be set before import".to_string(),
                    ));
                }
                match method {
                    Method::GlanceDirect | Method::WebDownload => {
                        context.enforce_on_image("modify_image", image)?
                    }
                    Method::CopyImage => context.enforce_on_image("copy_image", image)?,
                }
                // Glance's import lock (`os_glance_import_task`): an active image is held by
                // the copy writing it, named by its process; one whose process died is taken.
                if method == Method::CopyImage {
                    if let Some(holder) = image.upload_owner.take() {
                        if alive(&holder) {
                            return Err(ApiError::Conflict(format!(
                                "New operation on image '{}' is not permitted as prior \
                                 operation is still in progress",
                                image.id
                            )));
                        }
                        // The dead copy's stores are not being written any more.
                        image
                            .properties
                            .insert(IMPORTING_TO_STORES.to_string(), String::new());
                    }
                }
                targets = self.import_targets(request, &body, all_stores)?;
                if method == Method::CopyImage {
                    let held: Vec<&str> =
                        image.locations.iter().map(|l| l.store.as_str()).collect();
                    if all_stores {
                        targets.retain(|target| !held.contains(&target.as_str()));
                    } else if let Some(there) = targets.iter().find(|t| held.contains(&t.as_str()))
                    {
                        return Err(ApiError::BadRequest(format!(
                            "Image is already present at store '{there}'"
                        )));
                    }
                    if targets.is_empty() {
                        // Glance answers 202 and starts nothing.
                        return Ok(());
                    }
                }
                if !all_stores_must_succeed && !self.stores.is_multi() {
                    let uri = match body.get("method").and_then(|m| m.get("uri")) {
                        Some(Value::String(uri)) => uri.clone(),
                        _ => "None".to_string(),
                    };
                    return Err(ApiError::BadRequest(format!(
                        "All_stores_must_succeed can only be set with enabled_backends {uri}"
                    )));
                }
                if method != Method::CopyImage {
                    image.status = ImageStatus::Importing;
                }
                image.upload_owner = Some(owner.clone());
                image
                    .properties
                    .insert(IMPORT_TASK.to_string(), task.id().to_string());
                let names: Vec<String> = targets.iter().map(|t| self.store_label(t)).collect();
                merge_store_list(image, IMPORTING_TO_STORES, &names, false);
                merge_store_list(image, FAILED_IMPORT, &names, true);
                Ok(())
            })?
            .ok_or_else(|| super::images::not_found(&id))?;
        if image.upload_owner.as_deref() != Some(owner.as_str()) {
            log::info!("copy of image {id} not started: every store named holds it already");
            return Ok(Response::new(202));
        }
        let job = ImportJob {
            registry: Arc::clone(&self.registry),
            config: Arc::clone(&self.config),
            method,
            targets: targets
                .iter()
                .map(|target| Target {
                    label: self.store_label(target),
                    id: (!target.is_empty()).then(|| target.clone()),
                    store: Arc::clone(
                        self.stores
                            .get(target)
                            .unwrap_or_else(|| self.stores.default_store()),
                    ),
                })
                .collect(),
            all_stores_must_succeed,
            copy_from: self.copy_sources(&image),
            staged: self.staged_path(&id),
            owner,
            image,
            task,
            download,
        };
        let thread = std::thread::Builder::new()
            .name("import".to_string())
            .spawn(move || job.run());
        match thread {
            Ok(thread) => self.imports.add(thread),
            Err(error) => {
                log::error!("cannot start an import thread: {error}");
                let owner = self.owner_token.as_str();
                let _ = self.registry.update(&id, |image| {
                    if image.upload_owner.as_deref() == Some(owner) {
                        if image.status == ImageStatus::Importing {
                            // Back to where the import found it.
                            image.status = if method == Method::WebDownload {
                                ImageStatus::Queued
                            } else {
                                ImageStatus::Uploading
                            };
                        }
                        image.upload_owner = None;
                        image.properties.remove(IMPORT_TASK);
                        let names: Vec<String> =
                            targets.iter().map(|t| self.store_label(t)).collect();
                        merge_store_list(image, IMPORTING_TO_STORES, &names, true);
                    }
                    Ok::<(), ApiError>(())
                });
                return Err(ApiError::Unavailable(
                    "The import could not start; retry it.".to_string(),
                ));
            }
        }
        log::info!(
            "import of image {id} started ({}, to {})",
            method.name(),
            targets
                .iter()
                .map(|t| self.store_label(t))
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(Response::new(202))
    }

    /// The stores an import writes to, as Glance's `get_stores_from_request` picks them: every
    /// backend with `all_stores` (400 if `stores` or `X-Image-Meta-Store` is also given), else
    /// the `stores` list (400 with the header too), else the header's store or the default;
    /// each must be configured (409). Without several stores, the one store, named `""`.
    fn import_targets(
        &self,
        request: &Request<'_>,
        body: &Value,
        all_stores: bool,
    ) -> Result<Vec<String>, ApiError> {
        if !self.stores.is_multi() {
            // Glance reads neither `stores` nor `all_stores` then.
            return Ok(vec![String::new()]);
        }
        let header = request
            .head
            .header_str("x-image-meta-store")
            .map(|value| value.trim().to_string());
        let mut wanted: Vec<String> = if all_stores {
            if body.get("stores").is_some() || header.is_some() {
                return Err(ApiError::BadRequest(
                    "All_stores parameter can't be used with x-image-meta-store header or \
                     stores parameter"
                        .to_string(),
                ));
            }
            self.stores
                .iter()
                .filter_map(|(id, _)| id.map(str::to_string))
                .collect()
        } else if let Some(stores) = body.get("stores") {
            if header.is_some() {
                return Err(ApiError::BadRequest(
                    "Stores parameter and x-image-meta-store header can't be both specified"
                        .to_string(),
                ));
            }
            // Glance iterates whatever it is given (a 500 for a number); glint wants a list
            // of ids.
            let Some(list) = stores.as_array() else {
                return Err(ApiError::BadRequest(
                    "'stores' must be a list of store identifiers".to_string(),
                ));
            };
            let mut ids = Vec::with_capacity(list.len());
            for item in list {
                let Some(text) = item.as_str() else {
                    return Err(ApiError::BadRequest(
                        "'stores' must be a list of store identifiers".to_string(),
                    ));
                };
                ids.push(text.to_string());
            }
            ids
        } else {
            vec![header.unwrap_or_else(|| self.stores.default_id().unwrap_or_default().to_string())]
        };
        // A store named twice is written once.
        let mut seen = Vec::new();
        wanted.retain(|id| {
            let first = !seen.contains(id);
            seen.push(id.clone());
            first
        });
        for id in &wanted {
            if self.stores.get(id).is_none() {
                return Err(ApiError::Conflict(format!(
                    "Store for identifier {id} not found"
                )));
            }
        }
        Ok(wanted)
    }

    /// The name the import properties give a target: its id, or `file` for the one unnamed
    /// store.
    fn store_label(&self, target: &str) -> String {
        store_name((!target.is_empty()).then_some(target))
    }

    /// Where copy-image may read the image's data, best first: its copy in the default store,
    /// then its copies in the other configured stores (Glance's `_CopyImage` order).
    fn copy_sources(&self, image: &Image) -> Vec<PathBuf> {
        let default = self.stores.default_id();
        let configured = |store: &str| self.stores.get(store).is_some();
        let mut sources: Vec<PathBuf> = image
            .locations
            .iter()
            .filter(|location| Some(location.store.as_str()) == default)
            .map(|location| PathBuf::from(&location.path))
            .collect();
        sources.extend(
            image
                .locations
                .iter()
                .filter(|l| Some(l.store.as_str()) != default && configured(&l.store))
                .map(|location| PathBuf::from(&location.path)),
        );
        sources
    }

    /// Recovery of stages and imports whose process died, and of staged files no image waits
    /// for; part of [`Api::recover`] and of the periodic pass. Returns how many images moved.
    pub(super) fn recover_imports(&self, sweep_files: bool) -> usize {
        self.recover_tasks();
        // Cheap first (two reads, no write lock), as for uploads: the usual pass finds nothing.
        let abandoned = [ImageStatus::Uploading, ImageStatus::Importing]
            .into_iter()
            .any(|status| self.any_abandoned(status).unwrap_or(true));
        if !abandoned {
            if sweep_files {
                self.sweep_staging();
            }
            return 0;
        }
        let staging_dir = self.config.staging_dir.clone();
        let failed = store_name(self.stores.default_id());
        let alive = match self.liveness() {
            Ok(alive) => alive,
            Err(error) => {
                log::error!("recovery of abandoned imports failed: {error}");
                return 0;
            }
        };
        let recovered = match self.registry.recover_abandoned_imports(
            alive,
            |id| staging_dir.join(id).is_file(),
            &failed,
        ) {
            Ok(recovered) => recovered,
            Err(error) => {
                log::error!("recovery of abandoned imports failed: {error}");
                return 0;
            }
        };
        for image in &recovered {
            log::warn!(
                "image {} was left in {} by a process that died; recovered",
                image.id,
                image.status
            );
            if image.status == ImageStatus::Importing {
                for location in &image.locations {
                    remove_unrecorded(self.stores.default_store(), &location.path);
                }
            }
        }
        if sweep_files || !recovered.is_empty() {
            self.sweep_staging();
        }
        recovered.len()
    }

    /// Removes staging temporaries of dead processes and staged files whose image no longer
    /// waits for an import (deleted, or back to `queued`).
    fn sweep_staging(&self) {
        // A folder nobody staged in yet is not created just to be swept.
        if !self.config.staging_dir.is_dir() {
            return;
        }
        let Ok(staging) = self.staging.open(&self.config) else {
            return;
        };
        let Ok(alive) = self.liveness() else {
            return;
        };
        for path in staging.remove_abandoned_temp_files(alive) {
            log::warn!(
                "removed {}, left by a stage whose process died",
                path.display()
            );
        }
        let Ok(entries) = std::fs::read_dir(&self.config.staging_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if uuid::Uuid::try_parse(name).is_err() {
                continue;
            }
            let waiting = match self.registry.get(name) {
                Ok(Some(image)) => {
                    matches!(
                        image.status,
                        ImageStatus::Uploading | ImageStatus::Importing
                    )
                }
                Ok(None) => false,
                // Unknown: keep the file.
                Err(_) => true,
            };
            if !waiting {
                remove_staged(&entry.path());
            }
        }
    }

    /// Removes the staged data of a deleted image, if any.
    pub(super) fn forget_staged(&self, id: &str) {
        remove_staged(&self.staged_path(id));
    }
}

fn remove_staged(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => log::info!("removed staged data {}", path.display()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => log::error!(
            "cannot remove staged data {}: {error}; remove it by hand",
            path.display()
        ),
    }
}

/// The staging folder as a store of its own (one folder, private files), so that staged data
/// gets the store's temporary-name-then-rename and its sweep of dead owners' files.
///
/// It is opened, which creates the folder, at the first stage rather than when a child starts:
/// the default, Glance's `/tmp/staging/`, is shared by every user of the host, and a folder
/// created by whichever glint ran first (a test run as root, say) would be unusable by the
/// others. A failed open is tried again at the next stage.
pub struct Staging {
    hash: crate::store::HashKind,
    store: Mutex<Option<Arc<Store>>>,
}

impl Staging {
    pub fn new(hash: crate::store::HashKind) -> Staging {
        Staging {
            hash,
            store: Mutex::new(None),
        }
    }

    fn open(&self, config: &Config) -> Result<Arc<Store>, String> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = &*store {
            return Ok(Arc::clone(open));
        }
        let open = Arc::new(
            Store::open(crate::store::Settings {
                datadirs: vec![(config.staging_dir.clone(), 0)],
                file_perm: 0o600,
                size_cap: config.image_size_cap,
                hash: self.hash,
            })
            .map_err(|error| format!("{error}; fix node_staging_uri"))?,
        );
        *store = Some(Arc::clone(&open));
        Ok(open)
    }
}

/// Puts an image back if the stage or import holding it fails, unless `committed`: a stage goes
/// back to `queued`, an import to `queued` with `os_glance_failed_import`; the staged file goes.
struct StatusGuard<'a> {
    registry: &'a Registry,
    id: &'a str,
    owner: &'a str,
    from: ImageStatus,
    /// For an import: the store it failed for.
    failed_store: Option<String>,
    /// The staged file to remove on failure.
    staged: Option<PathBuf>,
    committed: bool,
}

impl Drop for StatusGuard<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let result = self.registry.update(self.id, |image| {
            if image.status == self.from && image.upload_owner.as_deref() == Some(self.owner) {
                image.status = ImageStatus::Queued;
                image.upload_owner = None;
                image.properties.remove(IMPORT_TASK);
                if let Some(store) = &self.failed_store {
                    image
                        .properties
                        .insert(FAILED_IMPORT.to_string(), store.clone());
                }
            }
            Ok::<(), ApiError>(())
        });
        if let Err(error) = result {
            log::error!(
                "image {} stays in {} after a failure ({error}); it is recovered when this \
                 child exits (reload to make that happen now)",
                self.id,
                self.from
            );
        }
        if let Some(staged) = &self.staged {
            remove_staged(staged);
        }
    }
}

/// The import methods the job knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// Writes the staged file; the image goes `importing`, then `active` or back to `queued`.
    GlanceDirect,
    /// Writes the data of an active image into more stores; the image stays `active`.
    CopyImage,
    /// Downloads a URI into the staging folder, then goes on as `GlanceDirect` (from `queued`).
    WebDownload,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::GlanceDirect => GLANCE_DIRECT,
            Method::CopyImage => COPY_IMAGE,
            Method::WebDownload => WEB_DOWNLOAD,
        }
    }
}

/// The `method` object of an import request (`Value::Null` when absent: checked before).
fn method_body(body: &Value) -> &Value {
    body.get("method").unwrap_or(&Value::Null)
}

/// Why `image` cannot be the target of an import by `method` for its status (409, Glance's
/// messages), if it cannot. The formats are checked after, for every method.
fn status_conflict(image: &Image, method: Method) -> Result<(), ApiError> {
    match method {
        Method::GlanceDirect | Method::WebDownload if image.status == ImageStatus::Active => Err(
            ApiError::Conflict("Image with status active cannot be target for import".to_string()),
        ),
        Method::WebDownload if image.status != ImageStatus::Queued => Err(ApiError::Conflict(
            format!("Image needs to be in 'queued' state to use '{WEB_DOWNLOAD}' method"),
        )),
        // Staged means `uploading` with no stage in progress.
        Method::GlanceDirect
            if image.status != ImageStatus::Uploading || image.upload_owner.is_some() =>
        {
            Err(ApiError::Conflict(
                "Image needs to be staged before 'glance-direct' method can be used".to_string(),
            ))
        }
        Method::CopyImage if image.status != ImageStatus::Active => Err(ApiError::Conflict(
            "Only images with status active can be targeted for copying".to_string(),
        )),
        _ => Ok(()),
    }
}

/// Glance's `merge_store_list`: the property `key` as a sorted comma list of store names,
/// with `stores` added (or taken away, `subtract`); an empty list is `""`, as Glance leaves it.
fn merge_store_list(image: &mut Image, key: &str, stores: &[String], subtract: bool) {
    let mut merged: Vec<String> = image
        .properties
        .get(key)
        .map(|list| list.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    if subtract {
        merged.retain(|store| !stores.contains(store));
    } else {
        merged.extend(stores.iter().cloned());
    }
    merged.retain(|store| !store.is_empty());
    merged.sort();
    merged.dedup();
    image.properties.insert(key.to_string(), merged.join(","));
}

/// One store an import writes to.
struct Target {
    /// The backend id; `None` for the one unnamed store.
    id: Option<String>,
    /// The name the import properties give it ([`store_name`]).
    label: String,
    store: Arc<Store>,
}

/// One import, owned by its thread: the data of one source (the staged file, or for
/// copy-image a copy the image has) written to each target store in turn, each copy recorded
/// as soon as it is complete (Glance's `_ImportToStore`, one per store).
struct ImportJob {
    registry: Arc<Registry>,
    config: Arc<Config>,
    method: Method,
    targets: Vec<Target>,
    /// `all_stores_must_succeed`: whether one failed store fails the whole import.
    all_stores_must_succeed: bool,
    /// copy-image: the image's data files, best first.
    copy_from: Vec<PathBuf>,
    staged: PathBuf,
    owner: String,
    image: Image,
    /// The import's task (`api::tasks`).
    task: TaskRecord,
    /// web-download: what to download into `staged` first.
    download: Option<Download>,
}

/// The source of a web-download import.
struct Download {
    uri: ImportUri,
    /// The staging folder's store, so the download is swept like a stage if its process dies.
    staging: Arc<Store>,
}

/// What recording one stored copy came to.
enum Recorded {
    Yes,
    /// The copy does not match the image (Glance's `_verify_uploaded_data`); not recorded.
    Refused(String),
    /// The image was deleted or is no longer held by this job.
    Gone,
}

/// An import under way: what it wrote and which stores failed. Dropped before
/// [`Progress::finish`] (a failure, or a panic), it reverts as Glance's flow does.
struct Progress<'a> {
    job: &'a ImportJob,
    /// (store label, data path) of every copy recorded so far.
    written: Vec<(String, String)>,
    /// Stores that failed and are not recorded as such yet.
    failed: Vec<String>,
    /// Whether the image is `active` (copy-image: from the start).
    active: bool,
    finished: bool,
}

impl ImportJob {
    fn run(self) {
        self.task.processing();
        match self.execute() {
            Ok(()) => self.task.succeeded(),
            Err(reason) => self.task.failed(&reason),
        }
    }

    /// The import itself; why it failed, for its task (the image is reverted by then).
    fn execute(&self) -> Result<(), String> {
        let id = self.image.id.as_str();
        let mut progress = Progress {
            job: self,
            written: Vec::new(),
            failed: Vec::new(),
            active: self.method == Method::CopyImage,
            finished: false,
        };
        if let Some(download) = &self.download {
            let settings = &self.config.web_download;
            let result =
                web_download::download(&download.uri, settings, &download.staging, id, &self.owner);
            match result {
                Ok(staged) => log::info!("image {id}: downloaded {} bytes", staged.size),
                Err(reason) => {
                    log::warn!("import of image {id} failed: web-download: {reason}");
                    progress.failed = self.targets.iter().map(|t| t.label.clone()).collect();
                    return Err(format!("web-download: {reason}"));
                }
            }
        }
        let source = match self.source() {
            Ok(source) => source,
            Err(reason) => {
                log::warn!("import of image {id} failed: {reason}");
                progress.failed = self.targets.iter().map(|t| t.label.clone()).collect();
                return Err(reason);
            }
        };
        let count = self.targets.len();
        for (index, target) in self.targets.iter().enumerate() {
            // Glance's `set_active`: at the first success unless every store must succeed,
            // else at the last store; never for copy-image.
            let set_active = self.method != Method::CopyImage
                && (!self.all_stores_must_succeed || index + 1 == count);
            let outcome = self
                .store_staged(target, &source)
                .map(|(stored, virtual_size)| {
                    let recorded = self.record(target, &stored, virtual_size, set_active);
                    (stored, recorded)
                });
            let reason = match outcome {
                Ok((stored, Recorded::Yes)) => {
                    progress
                        .written
                        .push((target.label.clone(), stored.location));
                    progress.active |= set_active;
                    continue;
                }
                Ok((stored, Recorded::Refused(reason))) => {
                    remove_unrecorded(&target.store, &stored.location);
                    reason
                }
                Ok((stored, Recorded::Gone)) => {
                    log::warn!("image {id} changed or went away during its import");
                    remove_unrecorded(&target.store, &stored.location);
                    return Err("The image changed or was deleted during its import.".to_string());
                }
                Err(reason) => reason,
            };
            log::warn!(
                "import of image {id} into store {} failed: {reason}",
                target.label
            );
            if self.all_stores_must_succeed {
                progress.failed.push(target.label.clone());
                return Err(reason);
            }
            if !self.record_failure(&target.label) {
                log::warn!("image {id} changed or went away during its import");
                return Err("The image changed or was deleted during its import.".to_string());
            }
        }
        // Glance's `_VerifyImageState`: an import that reached no store fails.
        if !progress.active {
            log::warn!("import of image {id} failed: None of the uploads finished!");
            return Err("None of the uploads finished!".to_string());
        }
        progress.finish();
        Ok(())
    }

    /// Where the data comes from: the staged file, or for copy-image the first of the image's
    /// copies that can be opened.
    fn source(&self) -> Result<PathBuf, String> {
        match self.method {
            Method::GlanceDirect | Method::WebDownload => Ok(self.staged.clone()),
            Method::CopyImage => self
                .copy_from
                .iter()
                .find(|path| path.is_file())
                .cloned()
                .ok_or_else(|| "Image not found in any configured store".to_string()),
        }
    }

    /// Whether this job still holds the image (under the write lock) and may record a copy
    /// on it: locked by it, and importing or active (not deactivated meanwhile).
    fn holds(&self, image: &Image) -> bool {
        self.locks(image) && matches!(image.status, ImageStatus::Importing | ImageStatus::Active)
    }

    /// Whether the image's lock is this job's, whatever its status: the lock, the task
    /// property and the importing list are this job's to let go at the end, even when the
    /// image was deactivated meanwhile.
    fn locks(&self, image: &Image) -> bool {
        image.upload_owner.as_deref() == Some(self.owner.as_str())
    }

    /// Records a complete copy in `target` on the image, after checking it against the size
    /// and hashes the image already has; turns the image `active` with `set_active`.
    fn record(
        &self,
        target: &Target,
        stored: &Stored,
        virtual_size: Option<u64>,
        set_active: bool,
    ) -> Recorded {
        let mut refused = None;
        let result = self.registry.update(&self.image.id, |image| {
            if !self.holds(image) {
                return Err(ApiError::Conflict(String::new()));
            }
            for (attribute, have, got) in [
                (
                    "size",
                    image.size.map(|s| s.to_string()),
                    stored.size.to_string(),
                ),
                (
                    "os_hash_value",
                    image.os_hash_value.clone(),
                    stored.hash_value.clone(),
                ),
                ("checksum", image.checksum.clone(), stored.checksum.clone()),
            ] {
                if have.is_some_and(|have| have != got) {
                    refused = Some(format!(
                        "{attribute} of uploaded data is different from current value set on \
                         the image."
                    ));
                    return Err(ApiError::Conflict(String::new()));
                }
            }
            image.size = Some(stored.size);
            image.checksum = Some(stored.checksum.clone());
            image.os_hash_algo = Some(stored.hash_algo.to_string());
            image.os_hash_value = Some(stored.hash_value.clone());
            if virtual_size.is_some() {
                image.virtual_size = virtual_size;
            }
            if let Some(store) = &target.id {
                image.locations.push(Location {
                    store: store.clone(),
                    path: stored.location.clone(),
                });
            }
            if image.location.is_none() {
                image.location = Some(stored.location.clone());
            }
            if set_active {
                image.status = ImageStatus::Active;
            }
            merge_store_list(
                image,
                IMPORTING_TO_STORES,
                std::slice::from_ref(&target.label),
                true,
            );
            Ok(())
        });
        match (result, refused) {
            (_, Some(reason)) => Recorded::Refused(reason),
            (Ok(Some(_)), None) => Recorded::Yes,
            _ => Recorded::Gone,
        }
    }

    /// Records a failed store when the others may still succeed; false if the image is gone.
    fn record_failure(&self, label: &str) -> bool {
        let result = self.registry.update(&self.image.id, |image| {
            if !self.holds(image) {
                return Err(ApiError::Conflict(String::new()));
            }
            merge_store_list(image, FAILED_IMPORT, &[label.to_string()], false);
            merge_store_list(image, IMPORTING_TO_STORES, &[label.to_string()], true);
            Ok(())
        });
        matches!(result, Ok(Some(_)))
    }

    /// Copies the source into `target` while inspecting its format (glance-direct) or
    /// hashing it as the image was hashed (copy-image); the stored data and its virtual size,
    /// or why not (nothing is left in the store then).
    fn store_staged(
        &self,
        target: &Target,
        source: &Path,
    ) -> Result<(Stored, Option<u64>), String> {
        let id = self.image.id.as_str();
        let mut file = File::open(source)
            .map_err(|error| format!("cannot open {}: {error}", source.display()))?;
        let size = file
            .metadata()
            .map_err(|error| format!("cannot stat {}: {error}", source.display()))?
            .len();
        let hash = match self.method {
            Method::CopyImage => self
                .image
                .os_hash_algo
                .as_deref()
                .and_then(crate::store::HashKind::from_name)
                .unwrap_or(target.store.settings().hash),
            Method::GlanceDirect | Method::WebDownload => target.store.settings().hash,
        };
        let mut upload = target
            .store
            .begin_upload_hashed(id, Some(size), &self.owner, hash)
            .map_err(|error| error.to_string())?;
        let mut inspector = crate::format::Inspector::new();
        loop {
            // Read straight into the upload's buffer: hashed and written with no copy.
            let mut buffer = upload.buffer();
            let n = match file.read(buffer.space()) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(format!("cannot read {}: {error}", source.display())),
            };
            inspector.feed(buffer.space().get(..n).unwrap_or_default());
            upload
                .write_buffer(buffer, n)
                .map_err(|error| error.to_string())?;
        }
        // copy-image skips the import plugins and inspection, as Glance does: the data was
        // judged when it was first stored.
        let virtual_size = match self.method {
            Method::CopyImage => None,
            Method::GlanceDirect | Method::WebDownload => {
                let missed = inspector.missed();
                crate::format::judge(
                    &inspector.seen(),
                    missed,
                    self.image.disk_format.as_deref().unwrap_or_default(),
                    self.image.container_format.as_deref().unwrap_or_default(),
                    &self.config.image_format.rules,
                )
                .map_err(|refusal| format!("refused by format inspection: {refusal}"))?
            }
        };
        let stored = upload.finish().map_err(|error| error.to_string())?;
        Ok((stored, virtual_size))
    }
}

impl Progress<'_> {
    /// The import succeeded: the job lets the image go and the staged file goes.
    fn finish(mut self) {
        self.finished = true;
        let job = self.job;
        let id = job.image.id.as_str();
        let labels: Vec<String> = job.targets.iter().map(|t| t.label.clone()).collect();
        let result = job.registry.update(id, |image| {
            if job.locks(image) {
                image.upload_owner = None;
                image.properties.remove(IMPORT_TASK);
                merge_store_list(image, IMPORTING_TO_STORES, &labels, true);
            }
            Ok::<(), ApiError>(())
        });
        if let Err(error) = result {
            log::error!(
                "image {id} stays held by this process after its import ({error}); it is let \
                 go when this child exits"
            );
        }
        if job.method != Method::CopyImage {
            remove_staged(&job.staged);
        }
        let stores: Vec<&str> = self.written.iter().map(|(s, _)| s.as_str()).collect();
        log::info!(
            "image {id} is active: {} ({}) into store(s) {}",
            job.image
                .size
                .map_or_else(|| "imported".to_string(), |s| format!("{s} bytes")),
            job.method.name(),
            stores.join(",")
        );
    }
}

impl Drop for Progress<'_> {
    /// Glance's revert: the copies this import recorded go (record first, then files), no
    /// target stays listed as importing, the failed stores are listed, and a glance-direct
    /// image goes back to `queued` without its staged file.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let job = self.job;
        let id = job.image.id.as_str();
        let labels: Vec<String> = job.targets.iter().map(|t| t.label.clone()).collect();
        let mut held = false;
        let result = job.registry.update(id, |image| {
            if !job.holds(image) {
                // Deactivated meanwhile: its data stays as recorded, but the lock and the
                // import's marks are this job's to let go.
                if job.locks(image) {
                    image.upload_owner = None;
                    image.properties.remove(IMPORT_TASK);
                    merge_store_list(image, IMPORTING_TO_STORES, &labels, true);
                    merge_store_list(image, FAILED_IMPORT, &self.failed, false);
                    return Ok(());
                }
                return Ok::<(), ApiError>(());
            }
            held = true;
            image
                .locations
                .retain(|location| !self.written.iter().any(|(_, path)| *path == location.path));
            let ours = |path: &String| self.written.iter().any(|(_, p)| p == path);
            if image.location.as_ref().is_some_and(ours) {
                image.location = image.locations.first().map(|l| l.path.clone());
            }
            if job.method != Method::CopyImage {
                // A glance-direct or web-download image had no data before; nothing of it is
                // left.
                image.status = ImageStatus::Queued;
                image.location = None;
                image.locations.clear();
                image.size = None;
                image.virtual_size = None;
                image.checksum = None;
                image.os_hash_algo = None;
                image.os_hash_value = None;
            }
            image.upload_owner = None;
            image.properties.remove(IMPORT_TASK);
            merge_store_list(image, IMPORTING_TO_STORES, &labels, true);
            merge_store_list(image, FAILED_IMPORT, &self.failed, false);
            Ok(())
        });
        match result {
            Err(error) => log::error!(
                "image {id} stays in {} after a failed import ({error}); it is recovered when \
                 this child exits (reload to make that happen now)",
                if job.method != Method::CopyImage {
                    "importing"
                } else {
                    "active, held by this process,"
                }
            ),
            // Deleted meanwhile: its delete removed the files it listed.
            Ok(None) => {}
            Ok(Some(_)) if held => {
                for (label, path) in &self.written {
                    if let Some(target) = job.targets.iter().find(|t| &t.label == label) {
                        remove_unrecorded(&target.store, path);
                    }
                }
            }
            Ok(Some(_)) => {}
        }
        if job.method != Method::CopyImage {
            remove_staged(&job.staged);
        }
    }
}

/// Removes a stored copy no image lists.
fn remove_unrecorded(store: &Store, location: &str) {
    if let Err(error) = store.delete_data(location) {
        log::error!("cannot remove {location}, which no image lists: {error}; remove it by hand");
    }
}
