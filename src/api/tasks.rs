//! Tasks, Glance's record of each image import: `GET /v2/images/{id}/tasks`, the deprecated
//! tasks API (`/v2/tasks`, `/v2/tasks/{id}`), and [`TaskRecord`], the handle an import moves
//! its task with.
//!
//! Read from glance/api/v2/tasks.py, glance/api/v2/images.py (`import_image`,
//! `get_task_info`), glance/domain/__init__.py and glance/policies/tasks.py (stable/2026.1):
//!
//! - Each `POST /v2/images/{id}/import` records a task of type `api_image_import`, `pending`,
//!   owned by the caller's project, with the caller's user, the request's id, and as input
//!   `{"image_id", "import_req" (the request body), "backend" (the target stores; `[null]`
//!   with one unnamed store)}`. While the import runs, the image's `os_glance_import_task`
//!   property names the task. The import sets it `processing` when it starts, then `success`
//!   with the result `{"image_id": ...}`, or `failure` with a message saying why, and drops
//!   the property. A task whose process died while it ran is failed by recovery (see
//!   `registry::task`).
//! - `GET /v2/images/{id}/tasks` needs `get_image` on the image (404 otherwise, as Glance
//!   answers it) and returns Glance's DB rows, datetimes in Python's `isoformat` with
//!   microseconds and no zone (`jsonutils.to_primitive`).
//! - `/v2/tasks` is admin-only by default: every call first passes `tasks_api_access` (403).
//!   Glance declares `get_task`, `get_tasks` and `add_task` too but has not checked them since
//!   Xena; glint declares them (a policy file may set them) and does not check them either.
//!   The list takes Glance's filters, sort and paging; `DELETE` is a 405 (tasks go when they
//!   expire).
//! - `POST /v2/tasks` creates a task Glance would run with its taskflow executor (type
//!   `import`: download a URL into a new image). glint has no such executor. It answers as
//!   Glance does when the executor is not set up (glance/async_/__init__.py, `TaskExecutor`):
//!   the task is recorded (201, with `Location`) and fails at once, its message saying that
//!   glint does not run it and what to use instead. The client, which polls the task, learns
//!   why; nothing is half done.
//! - A task expires `[task] task_time_to_live` hours after it ends; an expired task is no
//!   longer shown, and the maintenance pass removes it.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::access::Context;
use super::error::ApiError;
use super::Api;
use crate::config::Config;
use crate::http::response::Response;
use crate::http::serve::Request;
use crate::registry::{
    NewTask, Registry, SortDir, Task, TaskEnd, TaskQuery, TaskStatus, TASK_COLUMNS,
};

/// The image property naming the import task that holds the image (Glance's import lock).
pub const IMPORT_TASK: &str = "os_glance_import_task";

/// The type of the tasks imports record.
const API_IMAGE_IMPORT: &str = "api_image_import";

/// The task types Glance's task schema accepts.
const TASK_TYPES: &[&str] = &["import", API_IMAGE_IMPORT, "location_import"];

/// The message of a task whose process died while it ran.
pub const ABANDONED_MESSAGE: &str =
    "The process running this task stopped before the task ended (killed or crashed).";

/// How long a finished task is kept.
pub fn time_to_live(config: &Config) -> Duration {
    Duration::from_secs(config.task_time_to_live_hours.saturating_mul(3600))
}

/// The task of one import, moved by the import as it goes. Dropped before it started, it is
/// removed (the import never ran, as when the image could not be taken); dropped while it runs
/// (the import thread ended without saying how), it fails.
pub struct TaskRecord {
    registry: Arc<Registry>,
    id: String,
    image_id: String,
    time_to_live: Duration,
    started: Cell<bool>,
    ended: Cell<bool>,
}

impl TaskRecord {
    /// Records the `pending` task of an import of `image_id` asked for by `context` with
    /// `import_req`, into `store` (`None`: the one unnamed store), run by the process whose
    /// owner token is `runner`.
    pub fn create(
        registry: &Arc<Registry>,
        config: &Config,
        context: &Context,
        image_id: &str,
        import_req: &Value,
        store: Option<&str>,
        runner: &str,
    ) -> Result<TaskRecord, ApiError> {
        let id = uuid::Uuid::new_v4().to_string();
        registry.create_task(&NewTask {
            id: id.clone(),
            task_type: API_IMAGE_IMPORT.to_string(),
            owner: context.project.clone(),
            image_id: Some(image_id.to_string()),
            request_id: crate::logging::current_request_id(),
            user_id: context.user_id.clone(),
            input: json!({
                "image_id": image_id,
                "import_req": import_req,
                "backend": [store],
            }),
            runner: Some(runner.to_string()),
        })?;
        Ok(TaskRecord {
            registry: Arc::clone(registry),
            id,
            image_id: image_id.to_string(),
            time_to_live: time_to_live(config),
            started: Cell::new(false),
            ended: Cell::new(false),
        })
    }

    /// The task's id, for the image's `os_glance_import_task`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The import started: `processing`.
    pub fn processing(&self) {
        self.started.set(true);
        if let Err(error) = self.registry.begin_task(&self.id) {
            log::error!("cannot set task {} processing: {error}", self.id);
        }
    }

    /// The import ended well: `success`, with Glance's result.
    pub fn succeeded(&self) {
        self.end(TaskEnd::Success(json!({"image_id": self.image_id})));
    }

    /// The import failed because of `reason` (the import's own words, logged already). A
    /// refusal of the data is shown as is; a failure on the server's side (an I/O error, whose
    /// words name server paths) is shown as such, its details left to the log.
    pub fn failed(&self, reason: &str) {
        // Server-side errors name the server's paths: the log has them, the client does not.
        let message = if reason.starts_with("cannot ") || reason.contains(": cannot ") {
            format!(
                "The import of image {} failed on the server's side; the server's log has \
                 the cause.",
                self.image_id
            )
        } else {
            reason.to_string()
        };
        self.end(TaskEnd::Failure(message));
    }

    fn end(&self, end: TaskEnd) {
        self.started.set(true);
        self.ended.set(true);
        match self.registry.finish_task(&self.id, &end, self.time_to_live) {
            Ok(true) => {}
            Ok(false) => log::warn!("task {} had ended already; left as it was", self.id),
            Err(error) => log::error!(
                "cannot record the end of task {}: {error}; recovery fails it once this \
                 process exits",
                self.id
            ),
        }
    }
}

impl Drop for TaskRecord {
    fn drop(&mut self) {
        if !self.started.get() {
            if let Err(error) = self.registry.discard_pending_task(&self.id) {
                log::error!("cannot remove task {}, which never ran: {error}", self.id);
            }
        } else if !self.ended.get() {
            self.end(TaskEnd::Failure(
                "The import stopped before it finished.".to_string(),
            ));
        }
    }
}

impl Api {
    /// The tasks' part of recovery and of the periodic pass: fails the tasks whose process died
    /// while they ran, drops their image's `os_glance_import_task`, and removes expired tasks.
    /// Cheap when there is nothing to do: two indexed reads, no write lock.
    pub(super) fn recover_tasks(&self) {
        let alive = match self.liveness() {
            Ok(alive) => alive,
            Err(error) => {
                log::error!("recovery of abandoned tasks failed: {error}");
                return;
            }
        };
        match self.registry.any_task_abandoned(&alive) {
            Ok(false) => {}
            Ok(true) => match self.registry.fail_abandoned_tasks(
                &alive,
                ABANDONED_MESSAGE,
                time_to_live(&self.config),
            ) {
                Ok(failed) => {
                    for task in failed {
                        log::warn!(
                            "task {} was left running by a process that died; failed",
                            task.id
                        );
                        if let Some(image_id) = &task.image_id {
                            self.drop_import_task(image_id, &task.id);
                        }
                    }
                }
                Err(error) => log::error!("cannot fail the tasks of dead processes: {error}"),
            },
            Err(error) => log::error!("cannot look for the tasks of dead processes: {error}"),
        }
        match self.registry.remove_expired_tasks() {
            Ok(0) => {}
            Ok(removed) => log::info!("removed {removed} expired task(s)"),
            Err(error) => log::error!("cannot remove expired tasks: {error}"),
        }
    }

    /// Removes `os_glance_import_task` from image `image_id` if it still names `task_id`.
    fn drop_import_task(&self, image_id: &str, task_id: &str) {
        let dropped = self.registry.update(image_id, |image| {
            if image.properties.get(IMPORT_TASK).map(String::as_str) != Some(task_id) {
                // Nothing to change: refuse, so that nothing is written.
                return Err(ApiError::Conflict(String::new()));
            }
            image.properties.remove(IMPORT_TASK);
            Ok(())
        });
        if let Err(ApiError::Internal(error) | ApiError::Unavailable(error)) = dropped {
            log::error!("cannot drop {IMPORT_TASK} of image {image_id}: {error}");
        }
    }

    /// `GET /v2/images/{id}/tasks`.
    pub(super) fn image_tasks(&self, context: &Context, id: &str) -> Result<Response, ApiError> {
        // Glance answers every NotFound and Forbidden of this call with a bare 404.
        let image = self
            .find_for(context, id, "get_image")
            .map_err(|error| match error {
                ApiError::NotFound(_) | ApiError::Forbidden(_) => {
                    ApiError::NotFound("The resource could not be found.".to_string())
                }
                other => other,
            })?;
        let tasks: Vec<Value> = self
            .registry
            .tasks_of_image(&image.id)?
            .iter()
            .filter(|task| visible(context, task))
            .map(row_json)
            .collect();
        Ok(Response::json(200, &json!({ "tasks": tasks })))
    }

    /// Routes `/v2/tasks` and `/v2/tasks/{id}`.
    pub(super) fn route_tasks(
        &self,
        request: &mut Request<'_>,
        context: &Context,
        method: &str,
        segments: &[&str],
    ) -> Result<Response, ApiError> {
        let read_only = matches!(method, "GET" | "HEAD");
        match (method, segments) {
            (_, []) if read_only => {
                self.tasks_access(context)?;
                self.list_tasks(request, context)
            }
            ("POST", []) => {
                self.tasks_access(context)?;
                self.create_task(request, context)
            }
            (_, []) => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
            (_, [id]) if read_only => {
                self.tasks_access(context)?;
                self.show_task(context, id)
            }
            ("DELETE", [_]) => {
                self.tasks_access(context)?;
                Ok(super::error::render(
                    request,
                    405,
                    "This operation is currently not permitted on Glance Tasks. They are auto \
                     deleted after reaching the time based on their expires_at property.",
                )
                .header("Allow", "GET"))
            }
            (_, [_]) => Err(ApiError::MethodNotAllowed {
                allow: "GET, DELETE",
            }),
            _ => Err(ApiError::NotFound(
                "The resource could not be found.".to_string(),
            )),
        }
    }

    /// `tasks_api_access`, which every `/v2/tasks` call passes first.
    fn tasks_access(&self, context: &Context) -> Result<(), ApiError> {
        context.enforce("tasks_api_access", &crate::policy::Target::new())
    }

    /// `GET /v2/tasks/{id}`.
    fn show_task(&self, context: &Context, id: &str) -> Result<Response, ApiError> {
        let task = self.visible_task(context, id)?;
        Ok(Response::json(200, &task_json(&task)))
    }

    /// The task `id`: 404 if there is none (or it expired), 403 if it is another project's.
    fn visible_task(&self, context: &Context, id: &str) -> Result<Task, ApiError> {
        let Some(task) = self.registry.get_task(id)? else {
            return Err(task_not_found(id));
        };
        if !visible(context, &task) {
            return Err(ApiError::Forbidden(format!(
                "Forbidding request, task {id} is not visible"
            )));
        }
        Ok(task)
    }

    /// `GET /v2/tasks`.
    fn list_tasks(&self, request: &Request<'_>, context: &Context) -> Result<Response, ApiError> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(request.head.query().unwrap_or("").as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
        // webob's `params` as a dict: the last value of a repeated name wins.
        let mut params: Vec<(String, String)> = Vec::new();
        for (name, value) in pairs {
            params.retain(|(n, _)| *n != name);
            params.push((name, value));
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let limit = match get("limit") {
            None => self.config.limit_param_default,
            Some(text) => match text.trim().parse::<i64>() {
                Ok(limit) if limit >= 0 => usize::try_from(limit).unwrap_or(usize::MAX),
                Ok(_) => {
                    return Err(ApiError::BadRequest(
                        "limit param must be positive".to_string(),
                    ))
                }
                Err(_) => {
                    return Err(ApiError::BadRequest(
                        "limit param must be an integer".to_string(),
                    ))
                }
            },
        }
        .min(self.config.api_limit_max);
        let sort_dir = match get("sort_dir").unwrap_or("desc") {
            "asc" => SortDir::Asc,
            "desc" => SortDir::Desc,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid sort direction: {other}"
                )))
            }
        };
        let sort_key = match get("sort_key").unwrap_or("created_at") {
            // Glance's model has them; here they are the same for every live task.
            "deleted" | "deleted_at" => "created_at",
            key => *TASK_COLUMNS
                .iter()
                .find(|column| **column == key)
                .ok_or_else(|| ApiError::BadRequest("Sort key supplied was not valid.".into()))?,
        };
        let mut filters = Vec::new();
        for (name, value) in &params {
            match name.as_str() {
                "limit" | "marker" | "sort_key" | "sort_dir" | "deleted" | "deleted_at" => {}
                "status" if !value.is_empty() && TaskStatus::parse(value).is_none() => {
                    return Err(ApiError::BadRequest(format!(
                        "Invalid status value: {value}"
                    )))
                }
                // Glance's list accepts only the type of its own tasks API.
                "type" if !value.is_empty() && value != "import" => {
                    return Err(ApiError::BadRequest(format!("Invalid type value: {value}")))
                }
                other => {
                    // Other names of the model's columns filter; the rest are ignored.
                    if let Some(column) = TASK_COLUMNS.iter().find(|column| **column == other) {
                        filters.push((*column, value.clone()));
                    }
                }
            }
        }
        let marker = match get("marker") {
            None => None,
            Some(marker) => {
                if uuid::Uuid::try_parse(marker).is_err() {
                    return Err(ApiError::BadRequest("Invalid marker format".to_string()));
                }
                match self.visible_task(context, marker) {
                    Ok(task) => Some(task.id),
                    Err(ApiError::NotFound(message)) => return Err(ApiError::BadRequest(message)),
                    Err(other) => return Err(other),
                }
            }
        };
        let query = TaskQuery {
            filters,
            owner: if context.is_admin {
                None
            } else {
                Some(context.project.clone().unwrap_or_default())
            },
            sort_key,
            sort_dir,
            limit,
            marker,
        };
        let tasks = self.registry.list_tasks(&query)?;
        let others: Vec<&(String, String)> =
            params.iter().filter(|(name, _)| name != "marker").collect();
        let encode = |pairs: &[&(String, String)], marker: Option<&str>| {
            let mut serializer = form_urlencoded::Serializer::new(String::new());
            for (name, value) in pairs {
                serializer.append_pair(name, value);
            }
            if let Some(marker) = marker {
                serializer.append_pair("marker", marker);
            }
            serializer.finish()
        };
        let mut body = Map::new();
        body.insert(
            "tasks".to_string(),
            Value::Array(tasks.iter().map(stub_json).collect()),
        );
        let query = encode(&others, None);
        body.insert(
            "first".to_string(),
            json!(if query.is_empty() {
                "/v2/tasks".to_string()
            } else {
                format!("/v2/tasks?{query}")
            }),
        );
        body.insert("schema".to_string(), json!("/v2/schemas/tasks"));
        if let Some(last) = tasks.last().filter(|_| tasks.len() == limit) {
            body.insert(
                "next".to_string(),
                json!(format!("/v2/tasks?{}", encode(&others, Some(&last.id)))),
            );
        }
        Ok(Response::json(200, &Value::Object(body)))
    }

    /// `POST /v2/tasks`: recorded, and failed at once (see the module doc).
    fn create_task(
        &self,
        request: &mut Request<'_>,
        context: &Context,
    ) -> Result<Response, ApiError> {
        let body = super::images::read_json(request, &self.config)?;
        let Value::Object(body) = body else {
            return Err(ApiError::BadRequest(
                "Body expected in request.".to_string(),
            ));
        };
        for required in ["type", "input"] {
            if !body.contains_key(required) {
                return Err(ApiError::BadRequest(format!(
                    "Task '{required}' is required"
                )));
            }
        }
        check_task_body(&body)?;
        let task_type = body.get("type").and_then(Value::as_str).unwrap_or_default();
        let input = body.get("input").cloned().unwrap_or(Value::Null);
        let id = uuid::Uuid::new_v4().to_string();
        self.registry.create_task(&NewTask {
            id: id.clone(),
            task_type: task_type.to_string(),
            owner: context.project.clone(),
            image_id: input
                .get("image_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            request_id: crate::logging::current_request_id(),
            user_id: context.user_id.clone(),
            input,
            // This process, so that recovery elsewhere never takes it for abandoned while this
            // request ends it.
            runner: Some(self.owner_token.clone()),
        })?;
        self.registry.begin_task(&id)?;
        let message = format!(
            "glint does not run tasks of type '{task_type}' created with the tasks API, which \
             Glance deprecates; import image data with the interoperable image import \
             (PUT /v2/images/{{id}}/stage, then POST /v2/images/{{id}}/import) instead."
        );
        self.registry
            .finish_task(&id, &TaskEnd::Failure(message), time_to_live(&self.config))?;
        log::info!("task {id} created with the tasks API and failed: glint does not run it");
        let task = self
            .registry
            .get_task(&id)?
            .ok_or_else(|| task_not_found(&id))?;
        Ok(Response::json(201, &task_json(&task)).header("Location", &format!("/v2/tasks/{id}")))
    }
}

/// Glance's schema check of a task body (`additionalProperties: false`, the type's enum, the
/// input an object or null), with `InvalidObject`'s words.
fn check_task_body(body: &Map<String, Value>) -> Result<(), ApiError> {
    let invalid = |reason: String| {
        ApiError::BadRequest(format!(
            "Provided object does not match schema 'task': {reason}"
        ))
    };
    let known = super::schemas::task();
    let properties = known
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for name in body.keys() {
        if !properties.contains_key(name) {
            return Err(invalid(format!(
                "Additional properties are not allowed ('{}' was unexpected)",
                name
            )));
        }
    }
    match body.get("type") {
        Some(Value::String(text)) if TASK_TYPES.contains(&text.as_str()) => {}
        Some(other) => return Err(invalid(format!("{} is not one of {TASK_TYPES:?}", other))),
        None => {}
    }
    match body.get("input") {
        Some(Value::Object(_) | Value::Null) | None => Ok(()),
        Some(other) => Err(invalid(format!(
            "{} is not of type 'null', 'object'",
            other
        ))),
    }
}

/// Whether the caller sees `task` (glance/db/sqlalchemy/api.py `_is_task_visible`): an admin
/// sees every task, a project its own and those with no owner.
fn visible(context: &Context, task: &Task) -> bool {
    context.is_admin || task.owner.is_none() || task.owner == context.project
}

fn task_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Task with the given id {id} was not found"))
}

/// A stored "YYYY-MM-DDTHH:MM:SSZ" as Python's `datetime.isoformat` of a naive UTC datetime
/// read from the database: "YYYY-MM-DDTHH:MM:SS.000000" (what `to_primitive` prints).
fn db_time(time: &str) -> String {
    format!("{}.000000", time.trim_end_matches('Z'))
}

/// A task as the DB layer returns it (`_task_format` with its info), for
/// `GET /v2/images/{id}/tasks`.
fn row_json(task: &Task) -> Value {
    json!({
        "id": task.id,
        "type": task.task_type,
        "status": task.status.as_str(),
        "owner": task.owner,
        "expires_at": task.expires_at.as_deref().map(db_time),
        "created_at": db_time(&task.created_at),
        "updated_at": db_time(&task.updated_at),
        "deleted_at": null,
        "deleted": false,
        "image_id": task.image_id,
        "request_id": task.request_id,
        "user_id": task.user_id,
        "input": task.input,
        "result": task.result,
        "message": task.message,
    })
}

/// A task as `GET /v2/tasks/{id}` shows it (`ResponseSerializer._format_task`).
fn task_json(task: &Task) -> Value {
    let mut view = json!({
        "id": task.id,
        "input": task.input,
        "type": task.task_type,
        "status": task.status.as_str(),
        "owner": task.owner,
        "message": task.message,
        "result": task.result,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "self": format!("/v2/tasks/{}", task.id),
        "schema": "/v2/schemas/task",
    });
    let optional = [
        ("image_id", &task.image_id),
        ("request_id", &task.request_id),
        ("user_id", &task.user_id),
        ("expires_at", &task.expires_at),
    ];
    for (name, value) in optional {
        if let (Some(value), Some(view)) = (value, view.as_object_mut()) {
            view.insert(name.to_string(), json!(value));
        }
    }
    view
}

/// A task in a list (`_format_task_stub`).
fn stub_json(task: &Task) -> Value {
    let mut view = json!({
        "id": task.id,
        "type": task.task_type,
        "status": task.status.as_str(),
        "owner": task.owner,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "self": format!("/v2/tasks/{}", task.id),
        "schema": "/v2/schemas/task",
    });
    if let (Some(expires_at), Some(view)) = (&task.expires_at, view.as_object_mut()) {
        view.insert("expires_at".to_string(), json!(expires_at));
    }
    view
}
