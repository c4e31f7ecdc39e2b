//! Interoperable image import with `glance-direct` and `web-download` (Image API 2.6): `GET
//! /v2/info/import`, `PUT /v2/images/{id}/stage` and `POST /v2/images/{id}/import`.
//!
//! Staging streams the body into the staging folder (`node_staging_uri`) as a store upload
//! does: under a temporary name carrying this process's owner token, renamed to
//! `<staging>/<image id>` when complete. The image is `uploading` while it stages (recorded
//! under this process, like an upload's `saving`) and stays `uploading`, with no owner, once
//! staged. The import answers 202 and runs on a thread of its own: it reads the staged file,
//! inspects its format and hashes it while it writes it to the store (the upload's path, with
//! the same rules), and only then turns the image `active` and removes the staged file. On any
//! failure the image goes back to `queued` with `os_glance_failed_import` set, and the staged
//! file goes, as in Glance (`api_image_import.py`'s revert).
//!
//! `web-download` takes a `queued` image whose URI passes `[import_filtering_opts]`
//! (`import_uri.rs`; a refusal is Glance's 400 and changes nothing), and its import thread
//! first downloads the URI into the staging folder (`web_download.rs`, through the staging
//! store, so the download is the stage), then goes on as above; a failed download is a failed
//! import.
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
//! Not served yet: `copy-image`, importing to several stores (`stores`,
//! `all_stores`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};

use super::access::Context;
use super::error::ApiError;
use super::image_data::{activate, declared_size, pump, store_error, UPLOAD_CHUNK};
use super::import_uri::{self, ImportUri};
use super::tasks::{TaskRecord, IMPORT_TASK};
use super::web_download;
use super::Api;
use crate::config::Config;
use crate::http::response::Response;
use crate::http::serve::Request;
use crate::registry::{Image, ImageStatus, Registry};
use crate::store::{Store, Stored};

/// The property Glance sets, to the stores an import failed for, when the image goes back to
/// `queued`.
pub const FAILED_IMPORT: &str = "os_glance_failed_import";

/// The method that imports staged data.
const GLANCE_DIRECT: &str = "glance-direct";

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

/// Why image `image` cannot be the target of an import by `method` (409, Glance's messages),
/// if it cannot.
fn import_conflict(image: &Image, method: &str) -> Result<(), ApiError> {
    if image.status == ImageStatus::Active {
        return Err(ApiError::Conflict(
            "Image with status active cannot be target for import".to_string(),
        ));
    }
    if method == WEB_DOWNLOAD {
        if image.status != ImageStatus::Queued {
            return Err(ApiError::Conflict(format!(
                "Image needs to be in 'queued' state to use '{method}' method"
            )));
        }
    // Staged means `uploading` with no stage in progress.
    } else if image.status != ImageStatus::Uploading || image.upload_owner.is_some() {
        return Err(ApiError::Conflict(
            "Image needs to be staged before 'glance-direct' method can be used".to_string(),
        ));
    }
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
    Ok(())
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
        let media_type = request
            .head
            .header_str("content-type")
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase());
        if media_type.as_deref() != Some("application/octet-stream") {
            return Err(ApiError::UnsupportedMediaType {
                message: "Image data must be sent as application/octet-stream.".to_string(),
                accept_patch: false,
            });
        }
        let staging = self.staging.open(&self.config).map_err(|error| {
            log::error!("cannot stage image data: {error}");
            ApiError::Unavailable("The staging area is not available.".to_string())
        })?;
        let found = self.find_for(context, id, "modify_image")?;
        let id = &found.id;
        let declared = declared_size(request)?;
        let cap = self.config.image_size_cap;
        if declared.is_some_and(|size| size > cap) {
            return Err(ApiError::TooLarge(format!(
                "Image exceeds the storage quota: the image is {} bytes and image_size_cap is {cap}.",
                declared.unwrap_or(0)
            )));
        }
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
    /// `importing` under this process, and starts the import thread; 202.
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
        // One store per import in this version: the one X-Image-Meta-Store names, or the
        // default. A list of stores is refused rather than half honoured.
        if body.get("stores").is_some_and(|v| !v.is_null())
            || body.get("all_stores") == Some(&Value::Bool(true))
        {
            return Err(ApiError::BadRequest(
                "glint imports into one store: name it with the X-Image-Meta-Store header \
                 instead of 'stores' or 'all_stores'."
                    .to_string(),
            ));
        }
        let (store_id, store) = self.upload_store(request)?;
        let store_id = store_id.map(str::to_string);
        let store = Arc::clone(store);
        let found = self.find_for(context, id, "modify_image")?;
        let id = found.id.clone();
        let owner = self.owner_token.clone();
        // web-download: Glance answers the image's conflicts (409) before the URI's refusal
        // (400), so they are checked on the image as found, then again under the write lock.
        let download = if name == WEB_DOWNLOAD {
            import_conflict(&found, name)?;
            Some(self.web_download_source(method, &id)?)
        } else {
            None
        };
        // Removed again if the image cannot be taken (dropped before it starts).
        let task = TaskRecord::create(
            &self.registry,
            &self.config,
            context,
            &id,
            &body,
            store_id.as_deref(),
            &owner,
        )?;
        let image = self
            .registry
            .update(&id, |image| {
                context.enforce_on_image("modify_image", image)?;
                import_conflict(image, name)?;
                image.status = ImageStatus::Importing;
                image.upload_owner = Some(owner.clone());
                image.properties.remove(FAILED_IMPORT);
                image
                    .properties
                    .insert(IMPORT_TASK.to_string(), task.id().to_string());
                Ok::<(), ApiError>(())
            })?
            .ok_or_else(|| super::images::not_found(&id))?;
        let job = ImportJob {
            registry: Arc::clone(&self.registry),
            config: Arc::clone(&self.config),
            store,
            store_id,
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
                let back = if name == WEB_DOWNLOAD {
                    ImageStatus::Queued
                } else {
                    ImageStatus::Uploading
                };
                let _ = self.registry.update(&id, |image| {
                    if image.status == ImageStatus::Importing {
                        image.status = back;
                        image.upload_owner = None;
                        image.properties.remove(IMPORT_TASK);
                    }
                    Ok::<(), ApiError>(())
                });
                return Err(ApiError::Unavailable(
                    "The import could not start; retry it.".to_string(),
                ));
            }
        }
        log::info!("import of image {id} started ({name})");
        Ok(Response::new(202))
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
        let recovered = match self.registry.recover_abandoned_imports(
            crate::store::owner_alive,
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
        for path in staging.remove_abandoned_temp_files(crate::store::owner_alive) {
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

/// One import, owned by its thread.
struct ImportJob {
    registry: Arc<Registry>,
    config: Arc<Config>,
    store: Arc<Store>,
    store_id: Option<String>,
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

impl ImportJob {
    fn run(self) {
        self.task.processing();
        let id = self.image.id.as_str();
        let mut guard = StatusGuard {
            registry: &self.registry,
            id,
            owner: &self.owner,
            from: ImageStatus::Importing,
            failed_store: Some(store_name(self.store_id.as_deref())),
            staged: Some(self.staged.clone()),
            committed: false,
        };
        if let Some(download) = &self.download {
            let settings = &self.config.web_download;
            let result =
                web_download::download(&download.uri, settings, &download.staging, id, &self.owner);
            match result {
                Ok(staged) => log::info!("image {id}: downloaded {} bytes", staged.size),
                Err(reason) => {
                    log::warn!("import of image {id} failed: web-download: {reason}");
                    drop(guard);
                    self.task.failed(&format!("web-download: {reason}"));
                    return;
                }
            }
        }
        let (stored, virtual_size) = match self.store_staged() {
            Ok(done) => done,
            Err(reason) => {
                log::warn!("import of image {id} failed: {reason}");
                drop(guard);
                self.task.failed(&reason);
                return;
            }
        };
        let committed = self.registry.update(id, |image| {
            if image.status != ImageStatus::Importing
                || image.upload_owner.as_deref() != Some(self.owner.as_str())
            {
                return Err(ApiError::Conflict(String::new()));
            }
            activate(image, &stored, virtual_size, self.store_id.as_deref());
            image.properties.remove(IMPORT_TASK);
            Ok(())
        });
        match committed {
            Ok(Some(_)) => {
                guard.committed = true;
                remove_staged(&self.staged);
                log::info!("image {id} is active: {} bytes imported", stored.size);
                self.task.succeeded();
            }
            other => {
                log::warn!("image {id} changed or went away during its import: {other:?}");
                if let Err(error) = self.store.delete_data(&stored.location) {
                    log::error!("cannot remove the data of image {id}: {error}");
                }
                self.task
                    .failed("The image changed or was deleted during its import.");
            }
        }
    }

    /// Copies the staged file into the store while inspecting its format; the stored data and
    /// its virtual size, or why not (nothing is left in the store then).
    fn store_staged(&self) -> Result<(Stored, Option<u64>), String> {
        let id = self.image.id.as_str();
        let mut file = File::open(&self.staged)
            .map_err(|error| format!("cannot open {}: {error}", self.staged.display()))?;
        let size = file
            .metadata()
            .map_err(|error| format!("cannot stat {}: {error}", self.staged.display()))?
            .len();
        let mut upload = self
            .store
            .begin_upload(id, Some(size), &self.owner)
            .map_err(|error| error.to_string())?;
        let mut inspector = crate::format::Inspector::new();
        let mut buffer = vec![0u8; UPLOAD_CHUNK];
        loop {
            let n = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(format!("cannot read {}: {error}", self.staged.display()))
                }
            };
            upload
                .write(&buffer[..n])
                .map_err(|error| error.to_string())?;
            inspector.feed(&buffer[..n]);
        }
        let missed = inspector.missed();
        let virtual_size = crate::format::judge(
            &inspector.seen(),
            missed,
            self.image.disk_format.as_deref().unwrap_or_default(),
            self.image.container_format.as_deref().unwrap_or_default(),
            &self.config.image_format.rules,
        )
        .map_err(|refusal| format!("refused by format inspection: {refusal}"))?;
        let stored = upload.finish().map_err(|error| error.to_string())?;
        Ok((stored, virtual_size))
    }
}
