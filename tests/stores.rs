//! Several stores as Glance configures them (issue 12, part 3): `enabled_backends` with a
//! section per backend, uploads placed by `X-Image-Meta-Store`, the image's `stores`,
//! `/v2/info/stores` and its detail, `DELETE /v2/stores/{store}/{image}`, and backends added
//! and removed by SIGHUP; glance-direct import into several stores and copy-image, and the
//! backend given to data stored before `enabled_backends`. Every backend is a folder in the
//! test's temporary directory; the one test of the admin-only rules runs under the Keystone of
//! `tests/keystone.rs`.

use std::path::Path;

use serde_json::{json, Value};

use crate::util::{self, Response, Server};

/// `[DEFAULT]` lines for `backends` (ids, each stored in the folder of its name under the
/// test's directory), `default` the default backend; `extra` goes into `[DEFAULT]` first.
fn backends_config(backends: &[&str], default: &str) -> String {
    let list: Vec<String> = backends.iter().map(|id| format!("{id}:file")).collect();
    let mut text = format!(
        "enabled_backends = {}\n[glance_store]\ndefault_backend = {default}\n",
        list.join(", ")
    );
    for id in backends {
        text.push_str(&format!(
            "[{id}]\nfilesystem_store_datadir = {id}-data\nstore_description = The {id} disks\n"
        ));
    }
    // base_config appends its own sections; the next header must start a line.
    text.push_str("[DEFAULT]\n");
    text
}

fn start(backends: &[&str], default: &str) -> Server {
    Server::start(&backends_config(backends, default))
}

fn upload(server: &Server, id: &str, store: Option<&str>, data: &[u8]) -> Response {
    let mut headers = vec![("Content-Type", "application/octet-stream")];
    if let Some(store) = store {
        headers.push(("X-Image-Meta-Store", store));
    }
    util::request(
        server.addr(),
        "PUT",
        &format!("/v2/images/{id}/file"),
        &headers,
        data,
    )
    .expect("upload")
}

fn image(server: &Server, id: &str) -> Value {
    let response = util::get(server.addr(), &format!("/v2/images/{id}")).expect("show");
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).expect("image JSON")
}

fn json_of(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| panic!("not JSON: {}", response.text()))
}

fn data_file(server: &Server, store: &str, id: &str) -> std::path::PathBuf {
    server.path(&format!("{store}-data")).join(id)
}

fn delete_from(server: &Server, store: &str, id: &str) -> Response {
    util::request(
        server.addr(),
        "DELETE",
        &format!("/v2/stores/{store}/{id}"),
        &[],
        b"",
    )
    .expect("delete from store")
}

/// Adds a copy of active image `id` in `store` the way copy-image will: the data file in that
/// store's folder and a second location in the registry.
fn add_copy(server: &Server, id: &str, from: &str, store: &str) {
    let target = data_file(server, store, id);
    std::fs::copy(data_file(server, from, id), &target).expect("copy the data file");
    let database = rusqlite::Connection::open(server.path("glint.sqlite")).expect("database");
    database
        .execute(
            "INSERT INTO image_locations (image_id, position, store, path) \
             SELECT ?1, max(position) + 1, ?2, ?3 FROM image_locations WHERE image_id = ?1",
            rusqlite::params![id, store, target.to_string_lossy()],
        )
        .expect("insert a location");
}

fn assert_missing(path: &Path, what: &str) {
    assert!(!path.exists(), "{what}: {} exists", path.display());
}

#[test]
fn stores_uploads_go_to_the_named_or_the_default_backend() {
    let server = start(&["fast", "cheap"], "cheap");
    let addr = server.addr();

    let default = util::create_image(addr);
    assert_eq!(upload(&server, &default, None, b"default data").status, 204);
    assert_eq!(
        std::fs::read(data_file(&server, "cheap", &default)).expect("in cheap"),
        b"default data"
    );
    assert_missing(&data_file(&server, "fast", &default), "default upload");
    assert_eq!(image(&server, &default)["stores"], "cheap");

    let named = util::create_image(addr);
    assert_eq!(
        upload(&server, &named, Some("fast"), b"fast data").status,
        204
    );
    assert_eq!(
        std::fs::read(data_file(&server, "fast", &named)).expect("in fast"),
        b"fast data"
    );
    assert_missing(&data_file(&server, "cheap", &named), "upload to fast");
    assert_eq!(image(&server, &named)["stores"], "fast");
    // Lists show it too.
    let listed = json_of(&util::get(addr, "/v2/images").expect("list"));
    let stores: Vec<(&str, &str)> = listed["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter_map(|image| Some((image["id"].as_str()?, image["stores"].as_str()?)))
        .collect();
    assert_eq!(stores.len(), 2, "{listed}");
    assert!(stores.contains(&(default.as_str(), "cheap")), "{listed}");
    assert!(stores.contains(&(named.as_str(), "fast")), "{listed}");
    let download = util::get(addr, &format!("/v2/images/{named}/file")).expect("download");
    assert_eq!(
        (download.status, download.body.as_slice()),
        (200, &b"fast data"[..])
    );

    // An unknown store: 400 before anything is stored; the image stays queued.
    let unknown = util::create_image(addr);
    let refused = upload(&server, &unknown, Some("nowhere"), b"lost");
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("Unknown scheme 'nowhere' found in URI"),
        "{}",
        refused.text()
    );
    let queued = image(&server, &unknown);
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued.get("stores"), None, "no data, no stores: {queued}");

    // `stores` is read-only: 403 on create and on a patch.
    let create = util::send_body(
        addr,
        "POST",
        "/v2/images",
        "application/json",
        br#"{"name":"x","stores":"fast"}"#,
    );
    assert_eq!(create.status, 403, "{}", create.text());
    let patch = util::send_body(
        addr,
        "PATCH",
        &format!("/v2/images/{named}"),
        "application/openstack-images-v2.1-json-patch",
        br#"[{"op":"replace","path":"/stores","value":"cheap"}]"#,
    );
    assert_eq!(patch.status, 403, "{}", patch.text());

    // Version discovery lists 2.13 to 2.8, as Glance does with enabled_backends.
    let versions = json_of(&util::get(addr, "/versions").expect("versions"));
    let ids: Vec<&str> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|version| version["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "v2.15", "v2.13", "v2.12", "v2.11", "v2.10", "v2.9", "v2.8", "v2.17", "v2.7", "v2.6",
            "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0"
        ]
    );
    let listed = util::get(addr, "/v2.12/info/stores").expect("v2.12");
    assert_eq!(listed.status, 200, "{}", listed.text());
}

#[test]
fn stores_info_lists_the_backends_and_detail_adds_type_weight_and_properties() {
    let mut config = backends_config(&["fast", "cheap"], "cheap");
    config = config.replace(
        "[fast]\nfilesystem_store_datadir = fast-data\nstore_description = The fast disks\n",
        "[fast]\nfilesystem_store_datadir = fast-data\nweight = 100\n",
    );
    // cheap has two folders: glance_store's file driver then has no single `datadir`.
    config = config.replace(
        "[cheap]\nfilesystem_store_datadir = cheap-data\n",
        "[cheap]\nfilesystem_store_datadirs = cheap-data:10\nfilesystem_store_datadirs = cheap-more\n",
    );
    let server = Server::start(&config);
    let addr = server.addr();
    let info = util::get(addr, "/v2/info/stores").expect("info");
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(
        json_of(&info),
        json!({"stores": [
            {"id": "fast"},
            {"id": "cheap", "description": "The cheap disks", "default": "true"},
        ]})
    );
    let detail = util::get(addr, "/v2/info/stores/detail").expect("detail");
    assert_eq!(detail.status, 200, "{}", detail.text());
    let folder = |id: &str| {
        server
            .path(&format!("{id}-data"))
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(
        json_of(&detail),
        json!({"stores": [
            {"id": "fast", "type": "file", "weight": 100, "properties": {
                "data_dir": folder("fast"), "chunk_size": 65536, "thin_provisioning": false}},
            {"id": "cheap", "description": "The cheap disks", "default": "true", "type": "file",
             "weight": 0, "properties": {
                "data_dir": null, "chunk_size": 65536, "thin_provisioning": false}},
        ]})
    );
}

#[test]
fn stores_routes_are_404_and_images_have_no_stores_with_one_store() {
    let server = Server::start("");
    let addr = server.addr();
    let id = util::create_image(addr);
    assert_eq!(upload(&server, &id, Some("fast"), b"data").status, 204);
    assert_eq!(
        std::fs::read(server.path("images").join(&id)).expect("in images"),
        b"data",
        "X-Image-Meta-Store is ignored with one store"
    );
    assert_eq!(image(&server, &id).get("stores"), None);
    for (method, path) in [
        ("GET", "/v2/info/stores".to_string()),
        ("GET", "/v2/info/stores/detail".to_string()),
        ("DELETE", format!("/v2/stores/fast/{id}")),
    ] {
        let response = util::request(addr, method, &path, &[], b"").expect(&path);
        assert_eq!(response.status, 404, "{method} {path}: {}", response.text());
    }
    let versions = util::get(addr, "/versions").expect("versions").text();
    assert!(!versions.contains("v2.13"), "{versions}");
}

#[test]
fn stores_delete_from_store_follows_glances_checks() {
    let server = start(&["fast", "cheap", "spare"], "cheap");
    let addr = server.addr();
    let id = util::create_image(addr);

    let unknown_store = delete_from(&server, "nowhere", &id);
    assert_eq!(unknown_store.status, 409, "{}", unknown_store.text());
    let missing_image = delete_from(&server, "fast", "8c3a5a5e-1b1e-4f4e-9a43-000000000000");
    assert_eq!(missing_image.status, 404, "{}", missing_image.text());
    let queued = delete_from(&server, "cheap", &id);
    assert_eq!(queued.status, 409, "{}", queued.text());

    assert_eq!(upload(&server, &id, None, b"two copies").status, 204);
    let last = delete_from(&server, "cheap", &id);
    assert_eq!(last.status, 403, "{}", last.text());
    assert!(
        last.text().contains("only store containing it"),
        "{}",
        last.text()
    );
    assert!(data_file(&server, "cheap", &id).exists());

    add_copy(&server, &id, "cheap", "fast");
    assert_eq!(image(&server, &id)["stores"], "cheap,fast");
    let not_there = delete_from(&server, "spare", &id);
    assert_eq!(not_there.status, 404, "{}", not_there.text());

    // Removing the first copy: the record first, then the file; the other copy serves.
    let removed = delete_from(&server, "cheap", &id);
    assert_eq!(removed.status, 204, "{}", removed.text());
    assert_missing(&data_file(&server, "cheap", &id), "removed copy");
    assert_eq!(image(&server, &id)["stores"], "fast");
    let download = util::get(addr, &format!("/v2/images/{id}/file")).expect("download");
    assert_eq!(
        (download.status, download.body.as_slice()),
        (200, &b"two copies"[..])
    );

    // Deleting the image removes every copy that is left.
    add_copy(&server, &id, "fast", "spare");
    let deleted =
        util::request(addr, "DELETE", &format!("/v2/images/{id}"), &[], b"").expect("delete image");
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_missing(&data_file(&server, "fast", &id), "deleted image, fast");
    assert_missing(&data_file(&server, "spare", &id), "deleted image, spare");
}

#[test]
fn stores_a_backend_added_by_sighup_becomes_usable() {
    let server = start(&["fast"], "fast");
    let early = util::create_image(server.addr());
    assert_eq!(upload(&server, &early, None, b"early").status, 204);
    let id = util::create_image(server.addr());
    assert_eq!(upload(&server, &id, Some("cheap"), b"later").status, 400);

    // The same reload moves fast to another folder: its image stays readable where it is.
    let config = backends_config(&["fast", "cheap"], "fast").replace(
        "filesystem_store_datadir = fast-data\n",
        "filesystem_store_datadir = fast-moved\n",
    );
    server.write_config(&config);
    server.reload_succeeds();
    let download = util::get(server.addr(), &format!("/v2/images/{early}/file")).expect("get");
    assert_eq!(
        (download.status, download.body.as_slice()),
        (200, &b"early"[..])
    );
    assert_eq!(image(&server, &early)["stores"], "fast");
    assert_eq!(upload(&server, &id, Some("cheap"), b"later").status, 204);
    assert_eq!(
        std::fs::read(data_file(&server, "cheap", &id)).expect("in cheap"),
        b"later"
    );
    assert_eq!(image(&server, &id)["stores"], "cheap");
}

#[test]
fn stores_removing_a_backend_that_holds_images_fails_the_reload_naming_it() {
    let server = start(&["fast", "cheap", "spare"], "cheap");
    let id = util::create_image(server.addr());
    assert_eq!(upload(&server, &id, Some("fast"), b"kept").status, 204);

    server.write_config(&backends_config(&["cheap", "spare"], "cheap"));
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    let error = verdict["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "[DEFAULT] enabled_backends no longer lists the store `fast` (1 image), which \
             still holds image data"
        ),
        "{error}"
    );
    // The old generation still serves, with fast.
    let download = util::get(server.addr(), &format!("/v2/images/{id}/file")).expect("get");
    assert_eq!(
        (download.status, download.body.as_slice()),
        (200, &b"kept"[..])
    );
    assert_eq!(
        util::get(server.addr(), "/v2/info/stores")
            .expect("info")
            .text()
            .matches("\"id\"")
            .count(),
        3
    );

    // Removing the empty backend succeeds.
    server.write_config(&backends_config(&["fast", "cheap"], "cheap"));
    server.reload_succeeds();
    let info = json_of(&util::get(server.addr(), "/v2/info/stores").expect("info"));
    assert_eq!(info["stores"].as_array().map(Vec::len), Some(2), "{info}");

    // Once its image is deleted, fast can go too.
    let deleted = util::request(
        server.addr(),
        "DELETE",
        &format!("/v2/images/{id}"),
        &[],
        b"",
    )
    .expect("delete");
    assert_eq!(deleted.status, 204);
    server.write_config(&backends_config(&["cheap"], "cheap"));
    server.reload_succeeds();
}

/// Under Keystone (the fixture of `tests/keystone.rs`): `/v2/info/stores` is for anyone,
/// its detail and `DELETE /v2/stores/...` for admins (rules `stores_info_detail` and
/// `delete_image_location`), and a member is refused with Glance's 403.
#[test]
fn stores_detail_and_delete_from_store_are_for_admins_under_keystone() {
    use crate::keystone::{keystone_config, shared_keystone, start_glint, Keystone};
    let _keystone = shared_keystone();
    let keystone = Keystone::from_env();
    let server = start_glint(&keystone_config(
        &keystone,
        &backends_config(&["fast", "cheap"], "cheap"),
        "",
    ));
    let addr = server.addr();
    let (member, _) = keystone.token("KEYSTONE_ALPHA_MEMBER");
    let (admin, _) = keystone.token("KEYSTONE_ADMIN");
    let call = |token: &str, method: &str, path: &str, content_type: &str, body: &[u8]| {
        let mut headers = vec![("X-Auth-Token", token), ("Accept", "application/json")];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        util::request(addr, method, path, &headers, body)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    };

    assert_eq!(call(&member, "GET", "/v2/info/stores", "", b"").status, 200);
    let refused = call(&member, "GET", "/v2/info/stores/detail", "", b"");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("You are not authorized to complete stores_info_detail action."),
        "{}",
        refused.text()
    );
    assert_eq!(
        call(&admin, "GET", "/v2/info/stores/detail", "", b"").status,
        200
    );

    let created = call(
        &member,
        "POST",
        "/v2/images",
        "application/json",
        br#"{"name":"mine","disk_format":"raw","container_format":"bare"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = json_of(&created)["id"].as_str().expect("id").to_string();
    let uploaded = call(
        &member,
        "PUT",
        &format!("/v2/images/{id}/file"),
        "application/octet-stream",
        b"member data",
    );
    assert_eq!(uploaded.status, 204, "{}", uploaded.text());
    let path = format!("/v2/stores/cheap/{id}");
    let by_member = call(&member, "DELETE", &path, "", b"");
    assert_eq!(by_member.status, 403, "{}", by_member.text());
    assert!(
        by_member
            .text()
            .contains("You are not authorized to complete delete_image_location action."),
        "{}",
        by_member.text()
    );
    // The admin passes the rule and meets the next check: the only copy.
    let by_admin = call(&admin, "DELETE", &path, "", b"");
    assert_eq!(by_admin.status, 403, "{}", by_admin.text());
    assert!(
        by_admin.text().contains("only store containing it"),
        "{}",
        by_admin.text()
    );
}

// ---------------------------------------------------------------------------------------------
// Import into several stores and copy-image (issue 12: `stores`, `all_stores`,
// `all_stores_must_succeed`, the `copy-image` method, locations stored before
// `enabled_backends`).

const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// A server with `backends` whose staging folder is `staging`.
fn start_staging(backends: &[&str], default: &str, staging: &Path) -> Server {
    Server::start(&format!(
        "node_staging_uri = file://{}\n{}",
        staging.display(),
        backends_config(backends, default)
    ))
}

fn stage(server: &Server, id: &str, data: &[u8]) {
    let staged = util::request(
        server.addr(),
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .expect("stage");
    assert_eq!(staged.status, 204, "{}", staged.text());
}

fn import(server: &Server, id: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    util::request(
        server.addr(),
        "POST",
        &format!("/v2/images/{id}/import"),
        &all,
        body.as_bytes(),
    )
    .expect("import")
}

/// Polls the image until `done` holds; panics with the image and the log at the deadline.
fn wait_image(server: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let shown = image(server, id);
        if done(&shown) {
            return shown;
        }
        assert!(
            std::time::Instant::now() < end,
            "image {id}: {what} not within {DEADLINE:?}: {shown:#}\n--- log ---\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits for `path` to be removed: an import records its outcome first and removes files
/// after, so the image's new state can be seen a moment before they go.
fn wait_gone(path: &Path, what: &str) {
    util::wait_until(
        &format!("{what}: {} removed", path.display()),
        DEADLINE,
        || !path.exists(),
    );
}

/// Data that is not all zeros, `size` bytes.
fn payload(size: usize, seed: u8) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn assert_holds(server: &Server, store: &str, id: &str, data: &[u8]) {
    let path = data_file(server, store, id);
    let held = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(held == data, "{} differs from the data", path.display());
}

/// Makes a backend fail every write, as root too: its folder becomes a regular file, so
/// creating the temporary data file in it fails with ENOTDIR (chmod would not stop root).
fn break_backend(server: &Server, store: &str) {
    let folder = server.path(&format!("{store}-data"));
    std::fs::remove_dir_all(&folder).expect("remove the backend folder");
    std::fs::write(&folder, b"not a folder").expect("a file in place of the folder");
}

#[test]
fn stores_import_writes_each_named_store_or_every_store() {
    let staging = tempfile::tempdir().unwrap();
    let server = start_staging(&["fast", "cheap", "spare"], "cheap", staging.path());
    let addr = server.addr();

    let data = payload(300_000, 7);
    let two = util::create_image(addr);
    stage(&server, &two, &data);
    // Glance's refusals, each before anything changes: the image stays staged.
    let mixed = import(
        &server,
        &two,
        &[],
        r#"{"method":{"name":"glance-direct"},"all_stores":true,"stores":["fast"]}"#,
    );
    assert_eq!(mixed.status, 400, "{}", mixed.text());
    assert!(
        mixed.text().contains(
            "All_stores parameter can't be used with x-image-meta-store header or stores \
             parameter"
        ),
        "{}",
        mixed.text()
    );
    let header = import(
        &server,
        &two,
        &[("X-Image-Meta-Store", "fast")],
        r#"{"method":{"name":"glance-direct"},"all_stores":true}"#,
    );
    assert_eq!(header.status, 400, "{}", header.text());
    let both = import(
        &server,
        &two,
        &[("X-Image-Meta-Store", "fast")],
        r#"{"method":{"name":"glance-direct"},"stores":["fast"]}"#,
    );
    assert_eq!(both.status, 400, "{}", both.text());
    assert!(
        both.text()
            .contains("Stores parameter and x-image-meta-store header can't be both specified"),
        "{}",
        both.text()
    );
    let unknown = import(
        &server,
        &two,
        &[],
        r#"{"method":{"name":"glance-direct"},"stores":["fast","nowhere"]}"#,
    );
    assert_eq!(unknown.status, 409, "{}", unknown.text());
    assert!(
        unknown
            .text()
            .contains("Store for identifier nowhere not found"),
        "{}",
        unknown.text()
    );
    let not_a_list = import(
        &server,
        &two,
        &[],
        r#"{"method":{"name":"glance-direct"},"stores":"fast"}"#,
    );
    assert_eq!(not_a_list.status, 400, "{}", not_a_list.text());
    assert_eq!(image(&server, &two)["status"], "uploading");

    let started = import(
        &server,
        &two,
        &[],
        r#"{"method":{"name":"glance-direct"},"stores":["fast","spare"]}"#,
    );
    assert_eq!(started.status, 202, "{}", started.text());
    let done = wait_image(&server, &two, "import finished", |i| {
        i["status"] == "active" && i["os_glance_importing_to_stores"] == ""
    });
    assert_eq!(done["status"], "active", "{done:#}");
    assert_eq!(done["stores"], "fast,spare", "{done:#}");
    assert_eq!(done["os_glance_failed_import"], "", "{done:#}");
    assert_eq!(done["size"], data.len() as u64);
    assert_holds(&server, "fast", &two, &data);
    assert_holds(&server, "spare", &two, &data);
    assert_missing(&data_file(&server, "cheap", &two), "not a target");
    wait_gone(&staging.path().join(&two), "staged data after the import");

    let every = util::create_image(addr);
    let other = payload(200_000, 3);
    stage(&server, &every, &other);
    let started = import(
        &server,
        &every,
        &[],
        r#"{"method":{"name":"glance-direct"},"all_stores":true}"#,
    );
    assert_eq!(started.status, 202, "{}", started.text());
    let done = wait_image(&server, &every, "import finished", |i| {
        i["status"] == "active" && i["os_glance_importing_to_stores"] == ""
    });
    assert_eq!(done["stores"], "fast,cheap,spare", "{done:#}");
    for store in ["fast", "cheap", "spare"] {
        assert_holds(&server, store, &every, &other);
    }
    // The header alone still picks one store.
    let one = util::create_image(addr);
    stage(&server, &one, b"one store");
    let started = import(
        &server,
        &one,
        &[("X-Image-Meta-Store", "spare")],
        r#"{"method":{"name":"glance-direct"}}"#,
    );
    assert_eq!(started.status, 202, "{}", started.text());
    let done = wait_image(&server, &one, "active", |i| {
        i["status"] == "active" && i["os_glance_importing_to_stores"] == ""
    });
    assert_eq!(done["stores"], "spare", "{done:#}");
}

#[test]
fn stores_import_with_a_failing_store_goes_on_or_fails_as_all_stores_must_succeed_says() {
    let staging = tempfile::tempdir().unwrap();
    let server = start_staging(&["fast", "cheap", "broken"], "cheap", staging.path());
    let addr = server.addr();
    break_backend(&server, "broken");

    // all_stores_must_succeed false: active in the stores that worked, the failed one listed.
    let data = payload(100_000, 9);
    let lenient = util::create_image(addr);
    stage(&server, &lenient, &data);
    let started = import(
        &server,
        &lenient,
        &[],
        r#"{"method":{"name":"glance-direct"},"stores":["fast","broken","cheap"],
            "all_stores_must_succeed":false}"#,
    );
    assert_eq!(started.status, 202, "{}", started.text());
    let done = wait_image(&server, &lenient, "import finished", |i| {
        i["status"] == "active" && i["os_glance_importing_to_stores"] == ""
    });
    assert_eq!(done["stores"], "fast,cheap", "{done:#}");
    assert_eq!(done["os_glance_failed_import"], "broken", "{done:#}");
    assert_holds(&server, "fast", &lenient, &data);
    assert_holds(&server, "cheap", &lenient, &data);
    let download = util::get(addr, &format!("/v2/images/{lenient}/file")).expect("download");
    assert!(
        download.status == 200 && download.body == data,
        "{}",
        download.status
    );

    // The default (true): the failure fails the import; what was written goes.
    let strict = util::create_image(addr);
    stage(&server, &strict, &data);
    let started = import(
        &server,
        &strict,
        &[],
        r#"{"method":{"name":"glance-direct"},"all_stores":true}"#,
    );
    assert_eq!(started.status, 202, "{}", started.text());
    let failed = wait_image(&server, &strict, "queued", |i| i["status"] == "queued");
    assert_eq!(failed["os_glance_failed_import"], "broken", "{failed:#}");
    assert_eq!(failed["os_glance_importing_to_stores"], "", "{failed:#}");
    assert_eq!(failed.get("stores"), None, "{failed:#}");
    assert!(
        failed["size"].is_null() && failed["checksum"].is_null(),
        "{failed:#}"
    );
    wait_gone(
        &data_file(&server, "fast", &strict),
        "fast after the failure",
    );
    wait_gone(
        &data_file(&server, "cheap", &strict),
        "cheap after the failure",
    );
    wait_gone(
        &staging.path().join(&strict),
        "staged data after the failure",
    );
    // Only the images of the lenient import are left in the working stores.
    for store in ["fast", "cheap"] {
        let names: Vec<String> = std::fs::read_dir(server.path(&format!("{store}-data")))
            .expect("folder")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, std::slice::from_ref(&lenient), "{store}");
    }
}

/// Uploads `data` to `store` (a 204 is asserted).
fn upload_ok(server: &Server, id: &str, store: &str, data: &[u8]) {
    let uploaded = upload(server, id, Some(store), data);
    assert_eq!(uploaded.status, 204, "{}", uploaded.text());
}

const COPY: &str = r#"{"method":{"name":"copy-image"},"stores":["cheap"]}"#;

#[test]
fn stores_copy_image_to_a_backend_added_by_sighup_then_delete_the_old_copy() {
    let staging = tempfile::tempdir().unwrap();
    let server = start_staging(&["fast"], "fast", staging.path());
    let data = payload(2 << 20, 5);
    let id = util::create_image(server.addr());
    upload_ok(&server, &id, "fast", &data);
    let queued = util::create_image(server.addr());

    server.write_config(&format!(
        "node_staging_uri = file://{}\n{}",
        staging.path().display(),
        backends_config(&["fast", "cheap"], "fast")
    ));
    server.reload_succeeds();
    let info = json_of(&util::get(server.addr(), "/v2/info/import").expect("info"));
    assert_eq!(
        info["import-methods"]["value"],
        json!(["glance-direct", "web-download", "copy-image"])
    );

    let refused = import(&server, &queued, &[], COPY);
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("Only images with status active can be targeted for copying"),
        "{}",
        refused.text()
    );

    let started = import(&server, &id, &[], COPY);
    assert_eq!(started.status, 202, "{}", started.text());
    // The image stays active throughout the copy.
    let done = wait_image(&server, &id, "copied", |i| {
        assert_eq!(i["status"], "active", "during the copy: {i:#}");
        i["stores"] == "fast,cheap"
    });
    let done = if done["os_glance_importing_to_stores"] == "" {
        done
    } else {
        wait_image(&server, &id, "copy finished", |i| {
            i["os_glance_importing_to_stores"] == ""
        })
    };
    assert_eq!(done["os_glance_failed_import"], "", "{done:#}");
    assert_holds(&server, "fast", &id, &data);
    assert_holds(&server, "cheap", &id, &data);

    let again = import(&server, &id, &[], COPY);
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(
        again
            .text()
            .contains("Image is already present at store 'cheap'"),
        "{}",
        again.text()
    );
    // all_stores with every store holding it: 202 and nothing to do.
    let nothing = import(
        &server,
        &id,
        &[],
        r#"{"method":{"name":"copy-image"},"all_stores":true}"#,
    );
    assert_eq!(nothing.status, 202, "{}", nothing.text());

    let removed = delete_from(&server, "fast", &id);
    assert_eq!(removed.status, 204, "{}", removed.text());
    assert_missing(&data_file(&server, "fast", &id), "the removed copy");
    assert_eq!(image(&server, &id)["stores"], "cheap");
    let download = util::get(server.addr(), &format!("/v2/images/{id}/file")).expect("get");
    assert!(
        download.status == 200 && download.body == data,
        "download after removing the first copy: {}",
        download.status
    );
}

#[test]
fn stores_copy_image_of_data_that_no_longer_matches_is_not_recorded() {
    let staging = tempfile::tempdir().unwrap();
    let server = start_staging(&["fast", "cheap"], "fast", staging.path());
    let id = util::create_image(server.addr());
    upload_ok(&server, &id, "fast", b"the original bytes");
    // Same length, other bytes: only the hash can tell.
    std::fs::write(data_file(&server, "fast", &id), b"the tampered bytes").expect("tamper");
    let started = import(&server, &id, &[], COPY);
    assert_eq!(started.status, 202, "{}", started.text());
    let done = wait_image(&server, &id, "copy finished", |i| {
        i["os_glance_importing_to_stores"] == ""
    });
    assert_eq!(done["status"], "active", "{done:#}");
    assert_eq!(done["stores"], "fast", "{done:#}");
    assert_eq!(done["os_glance_failed_import"], "cheap", "{done:#}");
    assert_missing(&data_file(&server, "cheap", &id), "the refused copy");
    server.wait_for_log(
        "os_hash_value of uploaded data is different from current value set on the image",
        DEADLINE,
    );
}

#[test]
fn stores_legacy_images_get_the_backend_whose_folder_holds_them() {
    // One store in `images`, then one in `elsewhere`: two images stored without a backend.
    let server = Server::start("");
    let kept = util::create_image(server.addr());
    assert_eq!(upload(&server, &kept, None, b"legacy").status, 204);
    server.write_config_text(&util::base_config("").replace(
        "filesystem_store_datadir = images",
        "filesystem_store_datadir = elsewhere",
    ));
    server.reload_succeeds();
    let stray = util::create_image(server.addr());
    assert_eq!(upload(&server, &stray, None, b"stray").status, 204);

    // Backends, `fast` on the first folder: its image is recorded in fast.
    let backends = backends_config(&["fast", "cheap"], "cheap").replace(
        "filesystem_store_datadir = fast-data",
        "filesystem_store_datadir = images",
    );
    server.write_config(&backends);
    server.reload_succeeds();
    let shown = image(&server, &kept);
    assert_eq!(shown["stores"], "fast", "{shown:#}");
    assert_eq!(image(&server, &stray).get("stores"), None);
    server.wait_for_log("have data in no enabled backend's folder", DEADLINE);
    let download = util::get(server.addr(), &format!("/v2/images/{stray}/file")).expect("get");
    assert_eq!(download.body, b"stray");

    // So removing fast is refused while the image is there.
    server.write_config(&backends_config(&["cheap"], "cheap"));
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    let error = verdict["error"].as_str().unwrap_or_default();
    assert!(error.contains("`fast` (1 image)"), "{error}");
}

/// SIGKILLs `pid`, a child of the server the test started.
fn kill(pid: i32) {
    // SAFETY: kill(2) of a process this test's server started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[test]
fn stores_a_second_copy_while_one_runs_is_409_and_a_dead_copys_lock_is_taken_over() {
    let staging = tempfile::tempdir().unwrap();
    let server = start_staging(&["fast", "cheap", "spare"], "fast", staging.path());
    // Large enough that a copy (read, two digests, write, fsync) outlasts the next request.
    let data = payload(96 << 20, 3);
    let id = util::create_image(server.addr());
    upload_ok(&server, &id, "fast", &data);

    assert_eq!(import(&server, &id, &[], COPY).status, 202);
    let second = import(
        &server,
        &id,
        &[],
        r#"{"method":{"name":"copy-image"},"stores":["spare"]}"#,
    );
    assert_eq!(second.status, 409, "{}", second.text());
    assert!(
        second.text().contains(&format!(
            "New operation on image '{id}' is not permitted as prior operation is still in \
             progress"
        )),
        "{}",
        second.text()
    );

    // The copy's child dies mid-copy: its lock names a dead process and the next copy takes
    // it over, while the image stays active and its data downloadable.
    kill(server.pid_that_logged(&format!("import of image {id} started")));
    let image = image(&server, &id);
    assert_eq!(image["status"], "active", "{image:#}");
    assert_eq!(image["stores"], "fast", "{image:#}");
    // 409 only until the kernel has ended the killed child.
    util::wait_until("the copy retried after its child died", DEADLINE, || {
        let retried = import(&server, &id, &[], COPY);
        assert!(
            matches!(retried.status, 202 | 409),
            "{}: {}",
            retried.status,
            retried.text()
        );
        retried.status == 202
    });
    let done = wait_image(&server, &id, "copied after the takeover", |i| {
        i["stores"] == "fast,cheap" && i["os_glance_importing_to_stores"] == ""
    });
    assert_eq!(done["os_glance_failed_import"], "", "{done:#}");
    assert_holds(&server, "cheap", &id, &data);
}

#[test]
fn stores_an_import_into_two_stores_whose_child_dies_leaves_no_copy_and_imports_again() {
    let staging = tempfile::tempdir().unwrap();
    let server = start_staging(&["fast", "cheap"], "fast", staging.path());
    // Large enough that the second store's copy takes a while after the first is recorded.
    let data = payload(128 << 20, 9);
    let id = util::create_image(server.addr());
    stage(&server, &id, &data);
    let body = r#"{"method":{"name":"glance-direct"},"stores":["fast","cheap"]}"#;
    assert_eq!(import(&server, &id, &[], body).status, 202);
    // Killed once the first copy is recorded and while the second is written.
    let midway = wait_image(&server, &id, "the first copy recorded", |i| {
        i["stores"] == "fast"
    });
    assert_eq!(midway["status"], "importing", "{midway:#}");
    kill(server.pid_that_logged(&format!("import of image {id} started")));
    // Recovery: the staged data is intact, so the image waits for an import again, with no
    // copy recorded and none left in either store.
    let image = wait_image(&server, &id, "recovered", |i| i["status"] == "uploading");
    assert!(
        image["stores"].is_null() && image["checksum"].is_null(),
        "{image:#}"
    );
    for store in ["fast", "cheap"] {
        wait_gone(&data_file(&server, store, &id), store);
        let folder = server.path(&format!("{store}-data"));
        util::wait_until(&format!("{store}'s folder to be empty"), DEADLINE, || {
            std::fs::read_dir(&folder).map_or(true, |mut entries| entries.next().is_none())
        });
    }
    assert_eq!(import(&server, &id, &[], body).status, 202);
    let done = wait_image(&server, &id, "imported again", |i| {
        i["status"] == "active" && i["os_glance_importing_to_stores"] == ""
    });
    // In the order the copies were written: the `stores` list's.
    assert_eq!(done["stores"], "fast,cheap", "{done:#}");
    assert_holds(&server, "fast", &id, &data);
    assert_holds(&server, "cheap", &id, &data);
}

#[test]
fn stores_a_copy_whose_image_is_deactivated_meanwhile_lets_its_lock_go() {
    let staging = tempfile::tempdir().unwrap();
    let server = start_staging(&["fast", "cheap"], "fast", staging.path());
    let data = payload(96 << 20, 4);
    let id = util::create_image(server.addr());
    upload_ok(&server, &id, "fast", &data);
    assert_eq!(import(&server, &id, &[], COPY).status, 202);
    let action = |name: &str| {
        util::request(
            server.addr(),
            "POST",
            &format!("/v2/images/{id}/actions/{name}"),
            &[],
            b"",
        )
        .expect(name)
    };
    // Deactivated while the copy is written: the copy cannot be recorded and ends.
    assert_eq!(action("deactivate").status, 204);
    server.wait_for_log(&format!("image {id} changed or went away"), DEADLINE);
    let image = wait_image(&server, &id, "the copy's lock let go", |i| {
        i.get("os_glance_import_task").is_none()
    });
    assert_eq!(image["status"], "deactivated", "{image:#}");
    assert_eq!(image["stores"], "fast", "{image:#}");
    // Reactivated, the image takes a new copy: no lock of the ended one is left (it was 409
    // until the child exited).
    assert_eq!(action("reactivate").status, 204);
    let again = import(&server, &id, &[], COPY);
    assert_eq!(again.status, 202, "{}", again.text());
    wait_image(&server, &id, "copied", |i| {
        i["stores"] == "fast,cheap" && i["os_glance_importing_to_stores"] == ""
    });
    assert_holds(&server, "cheap", &id, &data);
}
