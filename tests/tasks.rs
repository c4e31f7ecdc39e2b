//! Tasks (issue 12): every glance-direct import is recorded as a Glance task, shown by
//! `GET /v2/images/{id}/tasks` and the admin-only tasks API (`/v2/tasks`), failed when the
//! import is refused or its process dies, and removed once it expires.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::import::{
    create, hostile_qcow2, import, show, stage, stage_large_and_import, start, wait_status,
    GLANCE_DIRECT,
};
use crate::util::{get, request, send_body, Server};

const DEADLINE: Duration = Duration::from_secs(60);

/// `GET path` answered 200, as JSON.
fn get_json(server: &Server, path: &str) -> Value {
    let response = get(server.addr(), path).expect("GET");
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    serde_json::from_slice(&response.body).expect("JSON")
}

/// The tasks of image `id`.
fn image_tasks(server: &Server, id: &str) -> Vec<Value> {
    get_json(server, &format!("/v2/images/{id}/tasks"))["tasks"]
        .as_array()
        .expect("tasks")
        .clone()
}

/// Polls the image's tasks until its only one is in `status`.
fn wait_task(server: &Server, id: &str, status: &str) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let tasks = image_tasks(server, id);
        if tasks.len() == 1 && tasks[0]["status"] == status {
            return tasks[0].clone();
        }
        assert!(
            Instant::now() < end,
            "image {id}: no single {status} task within {DEADLINE:?}: {tasks:#?}\n--- log ---\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_successful_import_leaves_a_success_task_shown_by_the_image_and_the_tasks_api() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let id = create(&server, "raw");
    assert_eq!(stage(&server, &id, b"raw image data").status, 204);
    let imported = import(&server, &id, GLANCE_DIRECT);
    assert_eq!(imported.status, 202, "{}", imported.text());
    let request_id = imported
        .header("x-openstack-request-id")
        .expect("request id")
        .to_string();
    wait_status(&server, &id, "active");
    let task = wait_task(&server, &id, "success");

    // Glance's DB row, every key of it.
    let mut keys: Vec<&str> = task
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "deleted",
            "deleted_at",
            "expires_at",
            "id",
            "image_id",
            "input",
            "message",
            "owner",
            "request_id",
            "result",
            "status",
            "type",
            "updated_at",
            "user_id"
        ]
    );
    assert_eq!(task["type"], "api_image_import");
    assert_eq!(task["image_id"], json!(id));
    assert_eq!(task["request_id"], json!(request_id));
    assert_eq!(task["result"], json!({"image_id": id}));
    assert_eq!(task["message"], "");
    assert_eq!(task["deleted"], false);
    assert_eq!(
        task["input"],
        json!({"image_id": id, "import_req": {"method": {"name": "glance-direct"}},
               "backend": [null]})
    );
    let expires_at = task["expires_at"]
        .as_str()
        .expect("expires_at set at the end");
    assert!(expires_at.ends_with(".000000"), "{expires_at}");
    // The lock property is gone once the import ended.
    let image = show(&server, &id);
    assert!(image.get("os_glance_import_task").is_none(), "{image:#}");

    // The tasks API (noauth: admin) shows the same task.
    let task_id = task["id"].as_str().unwrap();
    let shown = get_json(&server, &format!("/v2/tasks/{task_id}"));
    assert_eq!(shown["status"], "success");
    assert_eq!(shown["result"], json!({"image_id": id}));
    assert_eq!(shown["self"], json!(format!("/v2/tasks/{task_id}")));
    assert_eq!(shown["schema"], "/v2/schemas/task");
    assert!(
        shown["expires_at"].as_str().unwrap().ends_with('Z'),
        "{shown:#}"
    );
    let listed = get_json(&server, "/v2/tasks");
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed["tasks"][0]["id"], json!(task_id));
    assert!(
        listed["tasks"][0].get("input").is_none(),
        "a stub: {listed:#}"
    );
    assert_eq!(listed["first"], "/v2/tasks");
    assert_eq!(listed["schema"], "/v2/schemas/tasks");

    // Tasks are not deleted by hand.
    let delete = request(
        server.addr(),
        "DELETE",
        &format!("/v2/tasks/{task_id}"),
        &[],
        b"",
    )
    .expect("DELETE");
    assert_eq!(delete.status, 405, "{}", delete.text());
    assert_eq!(delete.header("allow"), Some("GET"));
    for (name, items) in [("task", None), ("tasks", Some("tasks"))] {
        let schema = get_json(&server, &format!("/v2/schemas/{name}"));
        assert_eq!(schema["name"], name);
        let properties = match items {
            None => &schema["properties"],
            Some(items) => &schema["properties"][items]["items"]["properties"],
        };
        assert_eq!(
            properties["status"]["enum"],
            json!(["pending", "processing", "success", "failure"])
        );
    }
}

#[test]
fn a_refused_import_leaves_a_failure_task_with_its_reason() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let data = hostile_qcow2();
    let id = create(&server, "qcow2");
    assert_eq!(stage(&server, &id, &data).status, 204);
    assert_eq!(import(&server, &id, GLANCE_DIRECT).status, 202);
    wait_status(&server, &id, "queued");
    let task = wait_task(&server, &id, "failure");
    let message = task["message"].as_str().unwrap();
    assert!(
        message.starts_with("refused by format inspection") && message.contains("backing"),
        "{task:#}"
    );
    assert!(task["result"].is_null(), "{task:#}");
    assert!(task["expires_at"].is_string(), "{task:#}");
    let image = show(&server, &id);
    assert!(image.get("os_glance_import_task").is_none(), "{image:#}");
    let failed = get_json(&server, "/v2/tasks?status=failure");
    assert_eq!(failed["tasks"].as_array().unwrap().len(), 1, "{failed:#}");
    let succeeded = get_json(&server, "/v2/tasks?status=success");
    assert_eq!(
        succeeded["tasks"].as_array().unwrap().len(),
        0,
        "{succeeded:#}"
    );
}

#[test]
fn a_task_whose_child_is_killed_ends_failure_after_recovery() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let (id, _) = stage_large_and_import(&server, 64 << 20);
    let needle = format!("import of image {id} started");
    let log = server.log();
    let line = log
        .lines()
        .find(|line| line.contains(&needle))
        .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{log}"));
    let pid: i32 = line
        .split("glint-api[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    // While it runs, the image names its task.
    let image = show(&server, &id);
    let running = image_tasks(&server, &id);
    assert_eq!(running.len(), 1, "{running:#?}");
    assert_eq!(
        image["os_glance_import_task"], running[0]["id"],
        "{image:#}"
    );
    // SAFETY: kill(2) of a child of the server this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    wait_status(&server, &id, "uploading");
    let task = wait_task(&server, &id, "failure");
    assert_eq!(
        task["message"],
        "The process running this task stopped before the task ended (killed or crashed)."
    );
    assert_eq!(task["id"], running[0]["id"]);
    let end = Instant::now() + DEADLINE;
    while show(&server, &id).get("os_glance_import_task").is_some() {
        assert!(
            Instant::now() < end,
            "the lock property stays: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn expired_tasks_are_hidden_and_removed_by_the_maintenance_pass() {
    let staging = tempfile::tempdir().unwrap();
    // 0 hours: a task expires as it ends.
    let server = start(staging.path(), "\n[task]\ntask_time_to_live = 0\n");
    let id = create(&server, "raw");
    assert_eq!(stage(&server, &id, b"raw image data").status, 204);
    assert_eq!(import(&server, &id, GLANCE_DIRECT).status, 202);
    wait_status(&server, &id, "active");
    server.wait_for_log("removed 1 expired task(s)", DEADLINE);
    assert_eq!(image_tasks(&server, &id), Vec::<Value>::new());
    let database = rusqlite::Connection::open(server.path("glint.sqlite")).unwrap();
    let rows: i64 = database
        .query_row("SELECT count(*) FROM tasks", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn the_tasks_api_records_a_posted_task_as_failed_and_checks_lists_as_glance() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let post = |body: &str| {
        send_body(
            server.addr(),
            "POST",
            "/v2/tasks",
            "application/json",
            body.as_bytes(),
        )
    };
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = post(&format!(
            r#"{{"type":"import","input":{{"import_from":"http://127.0.0.1:9/{n}"}}}}"#
        ));
        assert_eq!(created.status, 201, "{}", created.text());
        let task: Value = serde_json::from_slice(&created.body).unwrap();
        let id = task["id"].as_str().unwrap().to_string();
        assert_eq!(
            created.header("location"),
            Some(format!("/v2/tasks/{id}").as_str())
        );
        assert_eq!(task["status"], "failure");
        assert!(
            task["message"]
                .as_str()
                .unwrap()
                .starts_with("glint does not run tasks of type 'import'"),
            "{task:#}"
        );
        ids.push(id);
    }
    for (body, message) in [
        (r#"{"type":"import"}"#, "Task 'input' is required"),
        (r#"{"input":{}}"#, "Task 'type' is required"),
        (r#"{"type":"export","input":{}}"#, "is not one of"),
        (
            r#"{"type":"import","input":{},"extra":1}"#,
            "'extra' was unexpected",
        ),
        (r#"{"type":"import","input":[]}"#, "is not of type"),
    ] {
        let refused = post(body);
        assert_eq!(refused.status, 400, "{body}: {}", refused.text());
        assert!(
            refused.text().contains(message),
            "{body}: {}",
            refused.text()
        );
    }
    for (query, message) in [
        ("status=done", "Invalid status value: done"),
        (
            "type=api_image_import",
            "Invalid type value: api_image_import",
        ),
        ("sort_dir=up", "Invalid sort direction: up"),
        ("sort_key=size", "Sort key supplied was not valid."),
        ("marker=x", "Invalid marker format"),
        ("limit=-1", "limit param must be positive"),
    ] {
        let refused = get(server.addr(), &format!("/v2/tasks?{query}")).unwrap();
        assert_eq!(refused.status, 400, "{query}: {}", refused.text());
        assert!(
            refused.text().contains(message),
            "{query}: {}",
            refused.text()
        );
    }
    // Paging, newest first by default.
    let first = get_json(&server, "/v2/tasks?limit=2");
    let page: Vec<&str> = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(first["first"], "/v2/tasks?limit=2");
    let next = first["next"].as_str().expect("next").to_string();
    assert_eq!(next, format!("/v2/tasks?limit=2&marker={}", ids[1]));
    let second = get_json(&server, &next);
    assert_eq!(second["tasks"].as_array().unwrap().len(), 1, "{second:#}");
    assert_eq!(second["tasks"][0]["id"], json!(ids[0]));
    assert!(second.get("next").is_none(), "{second:#}");
    let ascending = get_json(&server, "/v2/tasks?sort_dir=asc&type=import");
    assert_eq!(ascending["tasks"][0]["id"], json!(ids[0]));
    assert_eq!(ascending["tasks"].as_array().unwrap().len(), 3);
}

#[test]
fn under_keystone_a_member_sees_its_image_tasks_but_gets_403_from_the_tasks_api() {
    use crate::keystone::{keystone_config, shared_keystone, start_glint, Keystone};
    let _keystone = shared_keystone();
    let keystone = Keystone::from_env();
    let staging = tempfile::tempdir().unwrap();
    let server = start_glint(&keystone_config(
        &keystone,
        &format!("node_staging_uri = file://{}", staging.path().display()),
        "",
    ));
    let addr = server.addr();
    let (alpha, _) = keystone.token("KEYSTONE_ALPHA_MEMBER");
    let (beta, _) = keystone.token("KEYSTONE_BETA_MEMBER");
    let (admin, _) = keystone.token("KEYSTONE_ADMIN");
    let call = |token: &str, method: &str, path: &str, content_type: &str, body: &[u8]| {
        let mut headers = vec![("X-Auth-Token", token), ("Accept", "application/json")];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        request(addr, method, path, &headers, body)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    };

    let created = call(
        &alpha,
        "POST",
        "/v2/images",
        "application/json",
        br#"{"name":"alpha","disk_format":"raw","container_format":"bare"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let image: Value = serde_json::from_slice(&created.body).unwrap();
    let id = image["id"].as_str().unwrap();
    let staged = call(
        &alpha,
        "PUT",
        &format!("/v2/images/{id}/stage"),
        "application/octet-stream",
        b"alpha's data",
    );
    assert_eq!(staged.status, 204, "{}", staged.text());
    let imported = call(
        &alpha,
        "POST",
        &format!("/v2/images/{id}/import"),
        "application/json",
        GLANCE_DIRECT.as_bytes(),
    );
    assert_eq!(imported.status, 202, "{}", imported.text());

    // The owner of the image reads its tasks (get_image); the task names alpha's project and
    // user.
    let path = format!("/v2/images/{id}/tasks");
    let end = Instant::now() + DEADLINE;
    let task = loop {
        let response = call(&alpha, "GET", &path, "", b"");
        assert_eq!(response.status, 200, "{}", response.text());
        let tasks: Value = serde_json::from_slice(&response.body).unwrap();
        if tasks["tasks"][0]["status"] == "success" {
            break tasks["tasks"][0].clone();
        }
        assert!(
            Instant::now() < end,
            "no success task: {tasks:#}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        task["owner"],
        json!(keystone.get("KEYSTONE_ALPHA_MEMBER_PROJECT_ID"))
    );
    assert_eq!(
        task["user_id"],
        json!(keystone.get("KEYSTONE_ALPHA_MEMBER_USER_ID"))
    );
    // Another project cannot see the image: 404, as for showing it.
    let hidden = call(&beta, "GET", &path, "", b"");
    assert_eq!(hidden.status, 404, "{}", hidden.text());

    // The tasks API is admin-only (tasks_api_access).
    let task_id = task["id"].as_str().unwrap();
    let denied = "You are not authorized to complete tasks_api_access action.";
    for (method, path, body) in [
        ("GET", "/v2/tasks".to_string(), ""),
        ("GET", format!("/v2/tasks/{task_id}"), ""),
        (
            "POST",
            "/v2/tasks".to_string(),
            r#"{"type":"import","input":{}}"#,
        ),
        ("DELETE", format!("/v2/tasks/{task_id}"), ""),
    ] {
        let content_type = if body.is_empty() {
            ""
        } else {
            "application/json"
        };
        let refused = call(&alpha, method, &path, content_type, body.as_bytes());
        assert_eq!(refused.status, 403, "{method} {path}: {}", refused.text());
        assert!(
            refused.text().contains(denied),
            "{method} {path}: {}",
            refused.text()
        );
    }
    let listed = call(&admin, "GET", "/v2/tasks", "", b"");
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed: Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed["tasks"][0]["id"], json!(task_id), "{listed:#}");
    let shown = call(&admin, "GET", &format!("/v2/tasks/{task_id}"), "", b"");
    assert_eq!(shown.status, 200, "{}", shown.text());
}
