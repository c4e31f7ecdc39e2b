//! Tasks: Glance's record of each image import, in the `tasks` table (migration 6), and the
//! `Registry` methods that create, move, find, list and expire them.
//!
//! The registry keeps the record; the API decides who may see it and when it moves (see
//! `api::tasks`). Read from glance/domain/__init__.py (`Task`, `TaskFactory`) and
//! glance/db/sqlalchemy/api.py (`task_create`, `task_update`, `_task_get_all`,
//! `_tasks_get_by_image`, `_task_soft_delete`), stable/2026.1:
//!
//! - A task is created `pending` with no `expires_at`. It moves `pending -> processing ->
//!   success`, or to `failure` from `pending` or `processing`; any other move is refused
//!   (`_validate_task_status_transition`), which here means the call changes nothing and says
//!   so. `result` is set on success, `message` on failure (empty otherwise, as Glance's
//!   `message` setter makes a None). Both ends set `expires_at` to now plus the time to live.
//! - An expired task (`expires_at` now or earlier) is neither shown nor listed. Glance marks
//!   such rows deleted whenever a project lists tasks; glint removes them in the child's
//!   periodic maintenance pass ([`Registry::remove_expired_tasks`]), so the table does not grow.
//! - A task records the owner token of the process running it (`runner`, never shown). One
//!   left `pending` or `processing` by a process that died is failed by
//!   [`Registry::fail_abandoned_tasks`], so no task stays running for ever.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::sql::{params, Connection, Row, SqlError, ToSql};
use super::{begin_immediate, begin_read, commit, Now, Registry, RegistryError, SortDir};
use crate::timestamp;

/// One task, as Glance's DB layer returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: String,
    /// `api_image_import` for the imports glint runs; what a client sent for `POST /v2/tasks`.
    pub task_type: String,
    pub status: TaskStatus,
    /// The project that asked for it (`None` without Keystone).
    pub owner: Option<String>,
    /// "YYYY-MM-DDTHH:MM:SSZ": set when the task ends.
    pub expires_at: Option<String>,
    pub image_id: Option<String>,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    pub input: Option<Value>,
    pub result: Option<Value>,
    /// Why it failed; empty otherwise.
    pub message: String,
    /// "YYYY-MM-DDTHH:MM:SSZ".
    pub created_at: String,
    pub updated_at: String,
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Pending,
    Processing,
    Success,
    Failure,
}

impl TaskStatus {
    /// Every status, in Glance's schema order.
    pub const ALL: [TaskStatus; 4] = [
        TaskStatus::Pending,
        TaskStatus::Processing,
        TaskStatus::Success,
        TaskStatus::Failure,
    ];

    /// The word Glance uses, in the API and in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Processing => "processing",
            TaskStatus::Success => "success",
            TaskStatus::Failure => "failure",
        }
    }

    /// The status spelled exactly `text`.
    pub fn parse(text: &str) -> Option<TaskStatus> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// What [`Registry::create_task`] records.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub id: String,
    pub task_type: String,
    pub owner: Option<String>,
    pub image_id: Option<String>,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    pub input: Value,
    /// The owner token of the process that will run it (see the module doc).
    pub runner: Option<String>,
}

/// How a task ended.
#[derive(Clone, Debug)]
pub enum TaskEnd {
    Success(Value),
    Failure(String),
}

/// The columns a task list may be filtered and sorted by: those of Glance's `Task` model that
/// glint keeps (`deleted` and `deleted_at` are constant here).
pub const TASK_COLUMNS: &[&str] = &[
    "id",
    "type",
    "status",
    "owner",
    "expires_at",
    "image_id",
    "request_id",
    "user_id",
    "created_at",
    "updated_at",
];

/// One page of `GET /v2/tasks`.
#[derive(Clone, Debug)]
pub struct TaskQuery {
    /// (column of [`TASK_COLUMNS`], value): equality filters, all of them must hold.
    pub filters: Vec<(&'static str, String)>,
    /// Only the tasks of this owner (a non-admin's view); `None` for all.
    pub owner: Option<String>,
    /// A column of [`TASK_COLUMNS`]; `created_at` and `id` follow it as tie-breakers.
    pub sort_key: &'static str,
    pub sort_dir: SortDir,
    pub limit: usize,
    /// The page starts after this task (which must exist: the API checks it).
    pub marker: Option<String>,
}

const SELECT: &str = "SELECT id, type, status, owner, expires_at, image_id, request_id, user_id, \
                      input, result, message, created_at, updated_at FROM tasks";

/// The condition that hides expired tasks; `?1` is now.
const LIVE: &str = "(expires_at IS NULL OR expires_at > ?1)";

impl Registry {
    /// Records a new `pending` task.
    pub fn create_task(&self, task: &NewTask) -> Result<Task, RegistryError> {
        let now = Now::take();
        let input = task.input.to_string();
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        transaction
            .execute(
                "INSERT INTO tasks (id, type, status, owner, image_id, request_id, user_id, \
                 input, message, created_at, updated_at, created_order, runner) \
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, '', ?8, ?8, ?9, ?10)",
                params![
                    task.id,
                    task.task_type,
                    task.owner,
                    task.image_id,
                    task.request_id,
                    task.user_id,
                    input,
                    now.seconds,
                    now.micros,
                    task.runner,
                ],
            )
            .map_err(RegistryError::sql(format!("record task {}", task.id)))?;
        let created = select(&transaction, &task.id, &now.seconds)?;
        commit(transaction)?;
        created.ok_or_else(|| RegistryError::Sql {
            context: format!("read back task {}", task.id),
            source: SqlError::NoRows,
        })
    }

    /// Removes a task that never started (`pending`): an import refused after its task was
    /// recorded leaves none, as in Glance, which records the task only once the import holds
    /// the image. Whether one was removed.
    pub fn discard_pending_task(&self, id: &str) -> Result<bool, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let removed = transaction
            .execute(
                "DELETE FROM tasks WHERE id = ?1 AND status = 'pending'",
                params![id],
            )
            .map_err(RegistryError::sql(format!("discard task {id}")))?;
        commit(transaction)?;
        Ok(removed > 0)
    }

    /// `pending -> processing`; false (and nothing changes) from any other status.
    pub fn begin_task(&self, id: &str) -> Result<bool, RegistryError> {
        let now = Now::take();
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let changed = transaction
            .execute(
                "UPDATE tasks SET status = 'processing', updated_at = ?2 \
                 WHERE id = ?1 AND status = 'pending'",
                params![id, now.seconds],
            )
            .map_err(RegistryError::sql(format!("set task {id} processing")))?;
        commit(transaction)?;
        Ok(changed > 0)
    }

    /// Ends a task: `processing -> success` with its result, or `pending | processing ->
    /// failure` with its message; `expires_at` becomes now plus `time_to_live`. False (and
    /// nothing changes) when the move is not allowed.
    pub fn finish_task(
        &self,
        id: &str,
        end: &TaskEnd,
        time_to_live: Duration,
    ) -> Result<bool, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let changed = finish(&transaction, id, end, time_to_live)?;
        commit(transaction)?;
        Ok(changed)
    }

    /// The task with this id, unless it expired.
    pub fn get_task(&self, id: &str) -> Result<Option<Task>, RegistryError> {
        let now = Now::take();
        let mut lease = self.lease()?;
        let transaction = begin_read(&mut lease)?;
        select(&transaction, id, &now.seconds)
    }

    /// The live tasks of image `image_id`, oldest first.
    pub fn tasks_of_image(&self, image_id: &str) -> Result<Vec<Task>, RegistryError> {
        let now = Now::take();
        let mut lease = self.lease()?;
        let transaction = begin_read(&mut lease)?;
        let sql = format!("{SELECT} WHERE image_id = ?2 AND {LIVE} ORDER BY created_order, id");
        let context = format!("list the tasks of image {image_id}");
        transaction
            .query_map(&sql, params![now.seconds, image_id], from_row)
            .map_err(RegistryError::sql(context))
    }

    /// One page of live tasks in the query's order: after the marker when there is one, at
    /// most `limit`. The tie-breakers are creation order then id, in the same direction, as in
    /// Glance's `_paginate_query` with `['created_at', 'id']`.
    ///
    /// The rows are walked in order and those up to the marker skipped: tasks live for
    /// `task_time_to_live` hours only, so there are few of them.
    pub fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>, RegistryError> {
        let now = Now::take();
        let mut lease = self.lease()?;
        let transaction = begin_read(&mut lease)?;
        let mut sql = format!("{SELECT} WHERE {LIVE}");
        let mut values: Vec<String> = vec![now.seconds];
        for (column, value) in &query.filters {
            // The column is one of TASK_COLUMNS, never client text.
            values.push(value.clone());
            sql.push_str(&format!(" AND {column} = ?{}", values.len()));
        }
        if let Some(owner) = &query.owner {
            values.push(owner.clone());
            sql.push_str(&format!(" AND owner = ?{}", values.len()));
        }
        let dir = match query.sort_dir {
            SortDir::Asc => "ASC",
            SortDir::Desc => "DESC",
        };
        let sort_key = if TASK_COLUMNS.contains(&query.sort_key) {
            query.sort_key
        } else {
            "created_at"
        };
        let key = if sort_key == "created_at" {
            String::new()
        } else {
            format!("{sort_key} {dir}, ")
        };
        sql.push_str(&format!(
            " ORDER BY {key}created_at {dir}, created_order {dir}, id {dir}"
        ));
        let context = "list tasks";
        let values: Vec<&dyn ToSql> = values.iter().map(|value| value as &dyn ToSql).collect();
        let mut page = Vec::new();
        let mut after_marker = query.marker.is_none();
        if query.limit > 0 {
            transaction
                .query_each(&sql, &values, |row| {
                    let task = from_row(row)?;
                    if after_marker {
                        page.push(task);
                    } else if query.marker.as_deref() == Some(task.id.as_str()) {
                        after_marker = true;
                    }
                    Ok(page.len() < query.limit)
                })
                .map_err(RegistryError::sql(context))?;
        }
        Ok(page)
    }

    /// Whether a task is `pending` or `processing` under a runner `is_alive` says is gone,
    /// read without the write lock (the periodic pass asks this first; usually no).
    pub fn any_task_abandoned(
        &self,
        is_alive: impl Fn(&str) -> bool,
    ) -> Result<bool, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_read(&mut lease)?;
        Ok(running(&transaction)?
            .iter()
            .any(|(_, runner)| !runner.as_deref().is_some_and(&is_alive)))
    }

    /// Fails every task left `pending` or `processing` by a runner that is gone, with
    /// `message`, and returns them as they are now. `is_alive` runs under the write lock.
    pub fn fail_abandoned_tasks(
        &self,
        is_alive: impl Fn(&str) -> bool,
        message: &str,
        time_to_live: Duration,
    ) -> Result<Vec<Task>, RegistryError> {
        let now = Now::take();
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let mut failed = Vec::new();
        for (id, runner) in running(&transaction)? {
            if runner.as_deref().is_some_and(&is_alive) {
                continue;
            }
            finish(
                &transaction,
                &id,
                &TaskEnd::Failure(message.to_string()),
                time_to_live,
            )?;
            if let Some(task) = select(&transaction, &id, &now.seconds)? {
                failed.push(task);
            }
        }
        commit(transaction)?;
        Ok(failed)
    }

    /// Removes the tasks that expired; how many. Reads first, so that the usual pass, which
    /// finds none, takes no write lock.
    pub fn remove_expired_tasks(&self) -> Result<usize, RegistryError> {
        let now = Now::take();
        let mut lease = self.lease()?;
        let any: Option<i64> = lease
            .query_opt(
                "SELECT 1 FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT 1",
                params![now.seconds],
                |row| row.get(0),
            )
            .map_err(RegistryError::sql("look for expired tasks"))?;
        if any.is_none() {
            return Ok(0);
        }
        let transaction = begin_immediate(&mut lease)?;
        let removed = transaction
            .execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                params![now.seconds],
            )
            .map_err(RegistryError::sql("remove expired tasks"))?;
        commit(transaction)?;
        Ok(removed)
    }
}

/// The ids and runners of the tasks `pending` or `processing`.
fn running(connection: &Connection) -> Result<Vec<(String, Option<String>)>, RegistryError> {
    let context = "find running tasks";
    connection
        .query_map(
            "SELECT id, runner FROM tasks WHERE status IN ('pending', 'processing')",
            &[],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(RegistryError::sql(context))
}

/// [`Registry::finish_task`] on a transaction the caller holds.
fn finish(
    connection: &Connection,
    id: &str,
    end: &TaskEnd,
    time_to_live: Duration,
) -> Result<bool, RegistryError> {
    let now = Now::take();
    let expires_at = timestamp::rfc3339_seconds(
        SystemTime::now()
            .checked_add(time_to_live)
            .unwrap_or(SystemTime::now()),
    );
    let changed = match end {
        TaskEnd::Success(result) => connection.execute(
            "UPDATE tasks SET status = 'success', result = ?2, expires_at = ?3, updated_at = ?4 \
             WHERE id = ?1 AND status = 'processing'",
            params![id, result.to_string(), expires_at, now.seconds],
        ),
        TaskEnd::Failure(message) => connection.execute(
            "UPDATE tasks SET status = 'failure', message = ?2, expires_at = ?3, updated_at = ?4 \
             WHERE id = ?1 AND status IN ('pending', 'processing')",
            params![id, message, expires_at, now.seconds],
        ),
    }
    .map_err(RegistryError::sql(format!("end task {id}")))?;
    Ok(changed > 0)
}

/// The live task `id`; `now` hides an expired one.
fn select(connection: &Connection, id: &str, now: &str) -> Result<Option<Task>, RegistryError> {
    connection
        .query_opt(
            &format!("{SELECT} WHERE id = ?2 AND {LIVE}"),
            params![now, id],
            from_row,
        )
        .map_err(RegistryError::sql(format!("read task {id}")))
}

fn from_row(row: &Row<'_>) -> Result<Task, SqlError> {
    let status: String = row.get(2)?;
    let json = |index: usize| -> Result<Option<Value>, SqlError> {
        let text: Option<String> = row.get(index)?;
        text.map(|text| {
            serde_json::from_str(&text).map_err(|error| SqlError::Conversion {
                column: index,
                source: Box::new(error),
            })
        })
        .transpose()
    };
    Ok(Task {
        id: row.get(0)?,
        task_type: row.get(1)?,
        status: TaskStatus::parse(&status).ok_or_else(|| SqlError::Conversion {
            column: 2,
            source: format!("unknown task status {status:?}").into(),
        })?,
        owner: row.get(3)?,
        expires_at: row.get(4)?,
        image_id: row.get(5)?,
        request_id: row.get(6)?,
        user_id: row.get(7)?,
        input: json(8)?,
        result: json(9)?,
        message: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

/// Whether the newest task of image `image_id` is a `web-download` import (its input's
/// `import_req.method.name`), read in the caller's transaction; false when there is none or it
/// cannot be read. Recovery asks it of an image left `importing`.
pub(super) fn last_import_was_web_download(connection: &Connection, image_id: &str) -> bool {
    let input: Option<String> = connection
        .query_opt(
            "SELECT input FROM tasks WHERE image_id = ?1 ORDER BY created_order DESC, id DESC \
             LIMIT 1",
            params![image_id],
            |row| row.get(0),
        )
        .ok()
        .flatten()
        .flatten();
    input
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|input| input["import_req"]["method"]["name"] == "web-download")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry =
            Registry::open(&super::super::test_database::temp_database(&dir)).expect("open");
        (dir, registry)
    }

    fn new_task(id: &str, runner: Option<&str>) -> NewTask {
        NewTask {
            id: id.to_string(),
            task_type: "api_image_import".to_string(),
            owner: Some("p1".to_string()),
            image_id: Some("image".to_string()),
            request_id: Some("req-1".to_string()),
            user_id: Some("u1".to_string()),
            input: serde_json::json!({"image_id": "image"}),
            runner: runner.map(str::to_string),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_task_moves_only_as_glance_allows() {
        let (_dir, registry) = temp_registry();
        let created = registry.create_task(&new_task("t1", None)).unwrap();
        assert_eq!(created.status, TaskStatus::Pending);
        assert_eq!(created.message, "");
        assert_eq!(created.expires_at, None);
        // pending -> success is not a move Glance allows.
        let success = TaskEnd::Success(serde_json::json!({"image_id": "image"}));
        assert!(!registry.finish_task("t1", &success, HOUR).unwrap());
        assert!(registry.begin_task("t1").unwrap());
        assert!(!registry.begin_task("t1").unwrap());
        assert!(registry.finish_task("t1", &success, HOUR).unwrap());
        let done = registry.get_task("t1").unwrap().unwrap();
        assert_eq!(done.status, TaskStatus::Success);
        assert_eq!(done.result, Some(serde_json::json!({"image_id": "image"})));
        assert!(done.expires_at.is_some());
        // An ended task stays as it ended, and a started one is not discarded.
        let failure = TaskEnd::Failure("late".to_string());
        assert!(!registry.finish_task("t1", &failure, HOUR).unwrap());
        assert!(!registry.discard_pending_task("t1").unwrap());
        // pending -> failure is allowed; a pending task can be discarded.
        registry.create_task(&new_task("t2", None)).unwrap();
        assert!(registry.finish_task("t2", &failure, HOUR).unwrap());
        assert_eq!(registry.get_task("t2").unwrap().unwrap().message, "late");
        registry.create_task(&new_task("t3", None)).unwrap();
        assert!(registry.discard_pending_task("t3").unwrap());
        assert_eq!(registry.get_task("t3").unwrap(), None);
    }

    #[test]
    fn expired_tasks_are_hidden_then_removed() {
        let (_dir, registry) = temp_registry();
        registry.create_task(&new_task("t1", None)).unwrap();
        registry.create_task(&new_task("t2", None)).unwrap();
        let failure = TaskEnd::Failure("no".to_string());
        assert!(registry
            .finish_task("t1", &failure, Duration::ZERO)
            .unwrap());
        assert!(registry.finish_task("t2", &failure, HOUR).unwrap());
        assert_eq!(registry.get_task("t1").unwrap(), None);
        let ids: Vec<String> = registry
            .tasks_of_image("image")
            .unwrap()
            .into_iter()
            .map(|task| task.id)
            .collect();
        assert_eq!(ids, ["t2"]);
        assert_eq!(registry.remove_expired_tasks().unwrap(), 1);
        assert_eq!(registry.remove_expired_tasks().unwrap(), 0);
        assert!(registry.get_task("t2").unwrap().is_some());
    }

    #[test]
    fn tasks_of_dead_runners_fail_and_live_ones_stay() {
        let (_dir, registry) = temp_registry();
        registry
            .create_task(&new_task("dead", Some("gone")))
            .unwrap();
        registry
            .create_task(&new_task("live", Some("here")))
            .unwrap();
        registry.begin_task("live").unwrap();
        let alive = |runner: &str| runner == "here";
        assert!(registry.any_task_abandoned(alive).unwrap());
        let failed = registry.fail_abandoned_tasks(alive, "died", HOUR).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].id, "dead");
        assert_eq!(failed[0].status, TaskStatus::Failure);
        assert_eq!(failed[0].message, "died");
        assert!(!registry.any_task_abandoned(alive).unwrap());
        let live = registry.get_task("live").unwrap().unwrap();
        assert_eq!(live.status, TaskStatus::Processing);
    }

    #[test]
    fn lists_filter_sort_and_page_after_the_marker() {
        let (_dir, registry) = temp_registry();
        for id in ["a", "b", "c"] {
            registry.create_task(&new_task(id, None)).unwrap();
        }
        registry.begin_task("b").unwrap();
        let query = |filters: Vec<(&'static str, String)>, dir, limit, marker: Option<&str>| {
            let tasks = registry
                .list_tasks(&TaskQuery {
                    filters,
                    owner: None,
                    sort_key: "created_at",
                    sort_dir: dir,
                    limit,
                    marker: marker.map(str::to_string),
                })
                .unwrap();
            tasks.into_iter().map(|task| task.id).collect::<Vec<_>>()
        };
        assert_eq!(query(vec![], SortDir::Desc, 10, None), ["c", "b", "a"]);
        assert_eq!(query(vec![], SortDir::Asc, 2, None), ["a", "b"]);
        assert_eq!(query(vec![], SortDir::Asc, 2, Some("b")), ["c"]);
        assert_eq!(
            query(
                vec![("status", "pending".to_string())],
                SortDir::Asc,
                10,
                None
            ),
            ["a", "c"]
        );
        let other_owner = registry
            .list_tasks(&TaskQuery {
                filters: vec![],
                owner: Some("p2".to_string()),
                sort_key: "created_at",
                sort_dir: SortDir::Asc,
                limit: 10,
                marker: None,
            })
            .unwrap();
        assert_eq!(other_owner, Vec::<Task>::new());
    }
}
