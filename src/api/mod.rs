//! The Glance Image API v2 as a [`Handler`]: routing, and the answers Glance clients understand.
//!
//! Routing is one `match` on the method and the path's segments; every route returns
//! `Result<Response, ApiError>` and [`error::ApiError::into_response`] is the one place an error
//! becomes a response. `api` knows nothing of processes or sockets: it gets a parsed request and
//! the child's [`Registry`] and [`Store`], and returns a response.
//!
//! - `images`: metadata routes (create, list, show, patch, delete, tags);
//! - `image_data`: upload and download of image data (through the image cache with the
//!   `caching` and `cachemanagement` flavors);
//! - `cache`: Glance's cache API, `/v2/cache`, with the `cachemanagement` flavor only;
//! - `representation`: an image's JSON and the rules for attributes clients send;
//! - `shown`: the images `GET /v2/images/{id}` showed, kept while the registry is unchanged;
//! - `patch`, `list_query`: the JSON-patch dialects and the list query parameters;
//! - `schemas`, `versions`: the documents clients discover the API with;
//! - `auth`: the access control every request passes before routing (`noauth`, the token file,
//!   or Keystone); `access`: who the request speaks for, and what Glance's policy and
//!   visibility rules let it see and do;
//! - `members`: image members (sharing), `/v2/images/{id}/members`;
//! - `import`: interoperable import (`stage`, `import`); `tasks`: the record of each import,
//!   `/v2/images/{id}/tasks` and the tasks API `/v2/tasks`;
//! - `error`: the API's error type and its rendering; `webob`: the rules of Glance's error
//!   bodies (webob's `Accept` negotiation and its HTML, JSON and text templates).

mod access;
/// Public for the parts of the API that will decide by who calls (`auth::Caller`).
pub mod auth;
mod cache;
pub mod error;
mod healthcheck;
mod image_data;
mod images;
mod import;
mod import_uri;
mod list_query;
mod members;
/// Public so that the fuzz targets in `fuzz/` can drive the JSON-patch parser and applier.
pub mod patch;
pub mod representation;
mod schemas;
mod shown;
mod stores;
mod tasks;
mod versions;
mod web_download;
mod webob;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Config, Flavor};
use crate::http::response::Response;
use crate::http::serve::{Handler, Request};
use crate::logging::outage::Outage;
use crate::registry::{Filters, ImageStatus, ListQuery, Registry, RegistryError};
use crate::store::Stores;
use access::Context;
use error::ApiError;

/// A PostgreSQL registry that cannot be reached, logged once and then every
/// [`crate::logging::outage::OUTAGE_LOG_PERIOD`] while it lasts (one per child).
static DATABASE_OUTAGE: Outage = Outage::new("registry", "the database");

/// Whether the process an owner token names is alive ([`Api::liveness`]).
pub(crate) type Liveness = Box<dyn Fn(&str) -> bool + Send>;

/// The application one child serves, built from its generation's config.
pub struct Api {
    config: Arc<Config>,
    generation: u64,
    /// The address the child's listener is bound to (the real port when bind_port is 0), for
    /// links when neither public_endpoint nor a usable Host header gives one.
    local_address: SocketAddr,
    registry: Arc<Registry>,
    /// The stores: uploads go to one of them; reads and deletes go by the recorded location.
    stores: Arc<Stores>,
    /// Identifies this process as the uploader of an image in `saving` (see `store::owner_token`).
    owner_token: String,
    /// Whether the last renewal of this node's lease failed (logged once until one works).
    lease_failing: std::sync::atomic::AtomicBool,
    /// This machine, as this node's lease records it.
    instance: String,
    /// The image cache, when the flavor uses one (`[paste_deploy] flavor`).
    cache: Option<CachePipeline>,
    /// The access control of `auth_strategy` or of a keystone flavor.
    gate: auth::Gate,
    /// The staging folder (`node_staging_uri`) as a store, opened (and so created) at the
    /// first stage, not at start: see `import::Staging`.
    staging: import::Staging,
    /// The import threads this child started, joined at its drain.
    imports: import::Imports,
    /// The images `GET /v2/images/{id}` showed, while the registry has not changed since.
    shown: shown::ShownImages,
}

/// The image cache as the API uses it: the cache folder, and the waker of this child's
/// prefetcher, which fills what the API queues.
pub struct CachePipeline {
    pub cache: Arc<crate::cache::Cache>,
    pub waker: crate::cache::Waker,
}

impl Api {
    pub fn new(
        config: Arc<Config>,
        generation: u64,
        local_address: SocketAddr,
        registry: Arc<Registry>,
        stores: Arc<Stores>,
        cache: Option<CachePipeline>,
    ) -> Api {
        let hash = stores.default_store().settings().hash;
        Api {
            staging: import::Staging::new(hash),
            imports: import::Imports::default(),
            shown: shown::ShownImages::default(),
            gate: auth::Gate::new(&config.auth_strategy),
            config,
            generation,
            local_address,
            registry,
            stores,
            owner_token: crate::store::owner_token(),
            lease_failing: std::sync::atomic::AtomicBool::new(false),
            instance: crate::store::machine_instance(),
            cache,
        }
    }

    /// The generation whose config this handler serves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Repairs what a dead process left behind: images stuck in `saving` under an uploader that
    /// no longer runs go back to `queued`, and the temporary files of dead uploaders are
    /// removed. Each child's maintenance thread runs it once soon after the child starts
    /// (`process::child::RECOVERY_FIRST_DELAY`, past its first requests, not before them), so a
    /// crash is repaired by its replacement; then
    /// [`Api::recover_abandoned`] every few seconds.
    pub fn recover(&self) -> Result<(), RegistryError> {
        self.requeue_abandoned_images()?;
        self.remove_abandoned_temp_files();
        self.recover_imports(true);
        Ok(())
    }

    /// Waits for the imports this child started (at its drain, after the workers), so that
    /// a reload or a stop leaves none half done (see `import`).
    pub fn finish_imports(&self) {
        self.imports.finish();
    }

    /// One pass of the periodic recovery (the child's maintenance thread): the same repair as
    /// [`Api::recover`], so that an upload whose process died (killed while draining, say) is
    /// repaired within a period without waiting for a child to start. Returns how many images
    /// went back to `queued`.
    ///
    /// It must stay cheap when nothing is abandoned, the usual case: it first only reads the
    /// images in `saving` (the `images_by_status` index; a read never waits for SQLite's write
    /// lock in WAL mode, so a held lock cannot stall a child's drain behind this thread) and
    /// checks their uploaders in /proc. Only when one is gone does it take the write lock, in
    /// [`Registry::recover_abandoned_uploads`], which decides again under the lock: several
    /// children may run this at once, and an image is requeued by exactly one of them, only if
    /// its uploader (pid and start time, so a live upload in another child or generation is
    /// never taken for dead) is still gone. The data directories are listed only when an
    /// image was requeued, or when `sweep_files` asks for it (a temporary file can outlive its
    /// image's `saving`: an image deleted during its upload, then the uploader killed).
    /// It also ends a change of the registry's counter that a dead process left half done
    /// ([`Registry::settle_version`]), so that shown images are kept again within a period.
    pub fn recover_abandoned(&self, sweep_files: bool) -> Result<usize, RegistryError> {
        self.registry.settle_version()?;
        let requeued = if self.any_upload_abandoned()? {
            self.requeue_abandoned_images()?
        } else {
            0
        };
        let imports = self.recover_imports(sweep_files);
        if requeued > 0 || imports > 0 || sweep_files {
            self.remove_abandoned_temp_files();
        }
        Ok(requeued + imports)
    }

    /// Whether the registry is shared with other nodes (PostgreSQL).
    pub fn registry_is_shared(&self) -> bool {
        self.registry.is_shared()
    }

    /// Closes the registry's idle connections: for a child about to exit, whose workers (which
    /// hold this `Api`) end with the process.
    pub fn close_registry(&self) {
        self.registry.close_idle();
    }

    /// Renews this node's lease when the registry is shared with other nodes (at the child's
    /// start, then every [`crate::process::child::LEASE_RENEWAL_PERIOD`] on a thread of its own,
    /// until the child's last import has ended). A failure is logged once until a renewal works
    /// again: the node's uploads are taken for abandoned by the others once the lease runs out,
    /// as if it had stopped. Err when the renewal cannot be made or another machine holds this
    /// node's name, with the line that says so.
    pub fn renew_node_lease(&self) -> Result<(), String> {
        if !self.registry.is_shared() {
            return Ok(());
        }
        let node = &self.config.node_name;
        let renewed =
            match self
                .registry
                .renew_node_lease(node, &self.instance, self.config.node_lease_time)
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                "another machine serves as node {node} (its lease in the registry is live): give \
                 each node its own [DEFAULT] node_name; until then this node's uploads may be \
                 taken for abandoned by the other"
            )),
                Err(error) => Err(format!(
                "cannot renew the lease of node {node} in the registry: {}; once it expires ({} s \
                 after the last renewal) the other nodes recover this node's uploads",
                error::with_causes(&error),
                self.config.node_lease_time.as_secs()
            )),
            };
        if renewed.is_ok() {
            DATABASE_OUTAGE.recovered();
        }
        let was_failing = self
            .lease_failing
            .swap(renewed.is_err(), std::sync::atomic::Ordering::Relaxed);
        match &renewed {
            Err(line) if !was_failing => log::error!("{line}"),
            Ok(()) if was_failing => log::info!("the lease of node {node} is renewed again"),
            _ => {}
        }
        renewed
    }

    /// Whether the process an owner token names is alive: with a shared registry, a process
    /// of another node is alive while that node's lease is (read once, here); else, and for
    /// this node's processes, /proc tells.
    pub(crate) fn liveness(&self) -> Result<Liveness, RegistryError> {
        if !self.registry.is_shared() {
            return Ok(Box::new(crate::store::owner_alive));
        }
        let live = self.registry.live_nodes()?;
        Ok(Box::new(move |token| {
            crate::store::owner_alive_among(token, &live)
        }))
    }

    /// Whether an image in `saving` has no live uploader, read without the write lock. Two
    /// indexed queries, as the list filters take hidden and other images apart; each finds
    /// nothing when no upload runs.
    fn any_upload_abandoned(&self) -> Result<bool, RegistryError> {
        self.any_abandoned(ImageStatus::Saving)
    }

    /// Whether an image in `status` is held by an owner that is gone (an image in `saving`
    /// with no owner counts: it has none only when something went wrong; in `uploading` or
    /// `importing`, no owner means staged and waiting, which is normal).
    fn any_abandoned(&self, status: ImageStatus) -> Result<bool, RegistryError> {
        for os_hidden in [false, true] {
            let query = ListQuery {
                filters: Filters {
                    status: Some(status),
                    visibility: Some("all".to_string()),
                    os_hidden: Some(os_hidden),
                    ..Filters::default()
                },
                ..ListQuery::default()
            };
            let held = self.registry.list(&query)?;
            if held.is_empty() {
                continue;
            }
            let alive = self.liveness()?;
            if held
                .iter()
                .any(|image| match image.upload_owner.as_deref() {
                    Some(owner) => !alive(owner),
                    None => status == ImageStatus::Saving,
                })
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Puts images `saving` under a dead uploader back to `queued`, logs each, returns how many.
    fn requeue_abandoned_images(&self) -> Result<usize, RegistryError> {
        let recovered = self.registry.recover_abandoned_uploads(self.liveness()?)?;
        for image in &recovered {
            log::warn!(
                "image {} was left in saving by a process that died; it is queued again",
                image.id
            );
        }
        Ok(recovered.len())
    }

    /// Removes the temporary files of dead uploaders and logs each.
    fn remove_abandoned_temp_files(&self) {
        let Ok(alive) = self.liveness() else {
            return;
        };
        for path in self.stores.remove_abandoned_temp_files(alive) {
            log::warn!(
                "removed {}, left by an upload whose process died",
                path.display()
            );
        }
    }

    fn route(&self, request: &mut Request<'_>, context: &Context) -> Result<Response, ApiError> {
        let method = request.method().to_string();
        let path = request.path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let read_only = matches!(method.as_str(), "GET" | "HEAD");
        const READ: &str = "GET, HEAD";
        match segments.as_slice() {
            ["healthcheck"] if read_only => Ok(healthcheck::answer(
                request,
                &self.config.healthcheck,
                &self.registry,
                self.local_address.port(),
            )),
            [] if read_only => Ok(versions::document(
                request,
                &self.config,
                self.local_address,
                300,
            )),
            ["versions"] if read_only => Ok(versions::document(
                request,
                &self.config,
                self.local_address,
                200,
            )),
            ["healthcheck"] | [] | ["versions"] => Err(ApiError::MethodNotAllowed { allow: READ }),
            [version, rest @ ..] if is_v2(version, &self.config) => {
                self.route_v2(request, context, &method, rest)
            }
            _ => Err(ApiError::NotFound(
                "The resource could not be found.".to_string(),
            )),
        }
    }

    /// Routes under `/v2/` (and `/v2.N/`, for the minor versions the version document lists).
    fn route_v2(
        &self,
        request: &mut Request<'_>,
        context: &Context,
        method: &str,
        segments: &[&str],
    ) -> Result<Response, ApiError> {
        let read_only = matches!(method, "GET" | "HEAD");
        const READ: &str = "GET, HEAD";
        match (method, segments) {
            (_, ["schemas", name @ ..]) if read_only => {
                let schema = match name {
                    ["image"] => schemas::image(),
                    ["images"] => schemas::images(),
                    ["member"] => schemas::member(),
                    ["members"] => schemas::members(),
                    ["task"] => schemas::task(),
                    ["tasks"] => schemas::tasks(),
                    ["metadefs", "namespace"] => schemas::metadefs_namespace(),
                    ["metadefs", "resource_type"] => schemas::metadefs_resource_type(),
                    _ => {
                        return Err(ApiError::NotFound(
                            "The resource could not be found.".to_string(),
                        ))
                    }
                };
                Ok(Response::json(200, &schema))
            }
            (_, ["images"]) if read_only => self.list_images(request, context),
            ("POST", ["images"]) => self.create_image(request, context),
            (_, ["images"]) => Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD, POST",
            }),
            (_, ["images", id]) if read_only => self.show_image(context, id),
            ("PATCH", ["images", id]) => self.update_image(request, context, id),
            ("DELETE", ["images", id]) => self.delete_image(context, id),
            (_, ["images", _]) => Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD, PATCH, DELETE",
            }),
            (_, ["images", id, "file"]) if read_only => self.download(request, context, id),
            ("PUT", ["images", id, "file"]) => self.upload(request, context, id),
            (_, ["images", _, "file"]) => Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD, PUT",
            }),
            (_, ["cache", ..]) if self.config.flavor == Flavor::CacheManagement => {
                self.route_cache(request, context, method, &segments[1..])
            }
            ("PUT", ["images", id, "tags", tag]) => {
                self.add_tag(context, id, &decode_segment(tag)?)
            }
            ("DELETE", ["images", id, "tags", tag]) => {
                self.delete_tag(context, id, &decode_segment(tag)?)
            }
            (_, ["images", _, "tags", _]) => Err(ApiError::MethodNotAllowed {
                allow: "PUT, DELETE",
            }),
            (_, ["images", id, "members"]) if read_only => self.list_members(context, id),
            ("POST", ["images", id, "members"]) => self.add_member(request, context, id),
            (_, ["images", _, "members"]) => Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD, POST",
            }),
            (_, ["images", id, "members", member]) if read_only => {
                self.show_member(context, id, &decode_segment(member)?)
            }
            ("PUT", ["images", id, "members", member]) => {
                self.update_member(request, context, id, &decode_segment(member)?)
            }
            ("DELETE", ["images", id, "members", member]) => {
                self.delete_member(context, id, &decode_segment(member)?)
            }
            (_, ["images", _, "members", _]) => Err(ApiError::MethodNotAllowed {
                allow: "GET, HEAD, PUT, DELETE",
            }),
            (_, ["images", id, "tasks"]) if read_only => self.image_tasks(context, id),
            (_, ["images", _, "tasks"]) => Err(ApiError::MethodNotAllowed { allow: READ }),
            (_, ["tasks", rest @ ..]) if rest.len() <= 1 => {
                self.route_tasks(request, context, method, rest)
            }
            (_, ["info", "import"]) if read_only => Ok(self.import_info()),
            (_, ["info", "import"]) => Err(ApiError::MethodNotAllowed { allow: READ }),
            ("PUT", ["images", id, "stage"]) => self.stage(request, context, id),
            (_, ["images", _, "stage"]) => Err(ApiError::MethodNotAllowed { allow: "PUT" }),
            ("POST", ["images", id, "import"]) => self.import(request, context, id),
            (_, ["images", _, "import"]) => Err(ApiError::MethodNotAllowed { allow: "POST" }),
            (_, ["info", "stores"]) if read_only => self.stores_info(context, false),
            (_, ["info", "stores", "detail"]) if read_only => self.stores_info(context, true),
            (_, ["info", "stores"] | ["info", "stores", "detail"]) => {
                Err(ApiError::MethodNotAllowed { allow: READ })
            }
            ("DELETE", ["stores", store, id]) => {
                self.delete_from_store(context, &decode_segment(store)?, id)
            }
            (_, ["stores", _, _]) => Err(ApiError::MethodNotAllowed { allow: "DELETE" }),
            ("POST", ["images", id, "actions", action @ ("deactivate" | "reactivate")]) => {
                self.image_action(context, id, action)
            }
            (_, ["images", _, "actions", "deactivate" | "reactivate"]) => {
                Err(ApiError::MethodNotAllowed { allow: "POST" })
            }
            _ => Err(ApiError::NotFound(
                "The resource could not be found.".to_string(),
            )),
        }
    }
}

impl Handler for Api {
    fn handle(&self, request: &mut Request<'_>) -> Response {
        let access = self.gate.check(request);
        let accepted = matches!(access, Ok(auth::Access::Accepted(_)));
        let routed = access.and_then(|access| {
            // An open path (health check, versions) asks no rule: it is served as the
            // unauthenticated context.
            let caller = match &access {
                auth::Access::Accepted(caller) => caller,
                auth::Access::Open => &auth::Caller::Anonymous,
            };
            let context = Context::new(caller, self.config.policy.clone());
            self.route(request, &context)
        });
        let response = match routed {
            Ok(response) => response,
            Err(error) => error.into_response(request),
        };
        // Whatever the route made of it, the credentials were good: the connection may idle
        // as long as `client_socket_timeout` (see `http::serve`).
        response.credentials_accepted(accepted)
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> ApiError {
        match error {
            RegistryError::Duplicate => ApiError::Conflict("The image already exists.".to_string()),
            RegistryError::BadMarker => {
                ApiError::BadRequest("The marker is not the id of a listed image.".to_string())
            }
            // Glance: `_image_get` raises Forbidden for an image the caller may not see.
            RegistryError::MarkerNotVisible => ApiError::Forbidden(
                "Forbidding request: the marker is an image this project may not see.".to_string(),
            ),
            RegistryError::MemberQuota { limit } => ApiError::TooLarge(format!(
                "Image member limit exceeded: the image has {limit} members already, the most \
                 image_member_quota allows."
            )),
            // PostgreSQL: a NUL character, or a value too long for its index.
            other if other.is_unstorable() => ApiError::BadRequest(format!(
                "The image database cannot store this request's values. ({})",
                error::with_causes(&other)
            )),
            other if other.is_busy() => ApiError::Unavailable(format!(
                "The image database is busy; retry the request. ({other})"
            )),
            // PostgreSQL down or restarting: the next request opens a new connection.
            other if other.is_unreachable() => {
                // The outage's lines begin with `registry:` already.
                let chain = error::with_causes(&other);
                let detail = chain.strip_prefix("registry: ").unwrap_or(&chain);
                DATABASE_OUTAGE.failed(
                    || {
                        format!(
                            "{detail}; check that the database server runs and that [database] \
                             connection reaches it; answering 503 until it answers"
                        )
                    },
                    detail,
                );
                ApiError::Unavailable(
                    "The image database cannot be reached; retry the request later.".to_string(),
                )
            }
            // The whole chain: `RegistryError` shows one level ("failed to read image X"), and
            // the operator needs the cause (SQLite's message, an unknown status word).
            other => ApiError::Internal(error::with_causes(&other)),
        }
    }
}

/// `v2` or `v2.N` for a minor version this configuration lists.
fn is_v2(segment: &str, config: &Config) -> bool {
    match segment.strip_prefix("v2") {
        Some("") => true,
        Some(minor) => minor
            .strip_prefix('.')
            .and_then(|minor| minor.parse::<u32>().ok())
            .is_some_and(|minor| versions::minor_versions(config).contains(&minor)),
        None => false,
    }
}

/// A path segment with its percent-encoding decoded (tags may contain any character).
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| ApiError::BadRequest("Path segments must be UTF-8.".to_string()))
}
