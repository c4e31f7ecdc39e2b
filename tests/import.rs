//! Interoperable import with `glance-direct` (issue 12, part 2, first slice): `GET
//! /v2/info/import`, `PUT /v2/images/{id}/stage`, `POST /v2/images/{id}/import`, with images made
//! by the real `qemu-img` (which `scripts/test` installs; a test that cannot run it fails), and
//! imports across SIGHUP and SIGTERM.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use md5::{Digest, Md5};
use serde_json::Value;
use sha2::Sha512;

use crate::util::{create_image_from, get, request, send_body, Server};

const DEADLINE: Duration = Duration::from_secs(60);

/// A server whose staging folder is `staging` (its own, not the shared /tmp/staging).
fn start(staging: &Path, extra: &str) -> Server {
    Server::start(&format!(
        "node_staging_uri = file://{}\n{extra}",
        staging.display()
    ))
}

fn qemu_img(dir: &Path, args: &[&str]) {
    let output = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run qemu-img ({error}); install it: apt-get install qemu-utils")
        });
    assert!(output.status.success(), "qemu-img {args:?}: {output:?}");
}

fn create(server: &Server, disk_format: &str) -> String {
    create_image_from(
        server.addr(),
        &format!(
            r#"{{"name":"imported","disk_format":"{disk_format}","container_format":"bare"}}"#
        ),
    )
}

fn stage(server: &Server, id: &str, data: &[u8]) -> crate::util::Response {
    request(
        server.addr(),
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .expect("stage")
}

fn import(server: &Server, id: &str, body: &str) -> crate::util::Response {
    send_body(
        server.addr(),
        "POST",
        &format!("/v2/images/{id}/import"),
        "application/json",
        body.as_bytes(),
    )
}

const GLANCE_DIRECT: &str = r#"{"method":{"name":"glance-direct"}}"#;

fn show(server: &Server, id: &str) -> Value {
    let response = get(server.addr(), &format!("/v2/images/{id}")).expect("GET image");
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).expect("image JSON")
}

/// Polls the image until its status is `wanted`; panics with the log after the deadline.
fn wait_status(server: &Server, id: &str, wanted: &str) -> Value {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let image = show(server, id);
        if image["status"] == wanted {
            return image;
        }
        assert!(
            std::time::Instant::now() < end,
            "image {id} not {wanted} within {DEADLINE:?}: {image:#}\n--- log ---\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_staged_qcow2_imports_to_active_with_its_hashes_and_virtual_size() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let info = get(server.addr(), "/v2/info/import").unwrap();
    assert_eq!(info.status, 200);
    let info: Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(
        info,
        serde_json::json!({"import-methods": {"description": "Import methods available.",
            "type": "array", "value": ["glance-direct", "copy-image"]}})
    );

    let fixtures = tempfile::tempdir().unwrap();
    qemu_img(
        fixtures.path(),
        &["create", "-f", "qcow2", "disk.qcow2", "3G"],
    );
    let data = fs::read(fixtures.path().join("disk.qcow2")).unwrap();

    let created = send_body(
        server.addr(),
        "POST",
        "/v2/images",
        "application/json",
        br#"{"name":"q","disk_format":"qcow2","container_format":"bare"}"#,
    );
    assert_eq!(created.status, 201);
    assert_eq!(
        created.header("OpenStack-image-import-methods"),
        Some("glance-direct,copy-image")
    );
    let id: String = serde_json::from_slice::<Value>(&created.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let staged = stage(&server, &id, &data);
    assert_eq!(staged.status, 204, "{}", staged.text());
    assert_eq!(show(&server, &id)["status"], "uploading");
    assert_eq!(files_in(staging.path()), vec![id.clone()]);

    let started = import(&server, &id, GLANCE_DIRECT);
    assert_eq!(started.status, 202, "{}", started.text());
    let image = wait_status(&server, &id, "active");
    assert_eq!(image["size"], data.len() as u64);
    assert_eq!(image["virtual_size"], 3u64 << 30);
    assert_eq!(image["checksum"], hex(&Md5::digest(&data)));
    assert_eq!(image["os_hash_algo"], "sha512");
    assert_eq!(image["os_hash_value"], hex(&Sha512::digest(&data)));
    let download = get(server.addr(), &format!("/v2/images/{id}/file")).unwrap();
    assert_eq!(download.status, 200);
    assert!(
        download.body == data,
        "the download differs from the staged data"
    );
    assert_eq!(files_in(staging.path()), Vec::<String>::new());
}

#[test]
fn a_hostile_qcow2_goes_back_to_queued_with_os_glance_failed_import_and_leaves_nothing() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let fixtures = tempfile::tempdir().unwrap();
    qemu_img(
        fixtures.path(),
        &["create", "-f", "qcow2", "base.qcow2", "1G"],
    );
    qemu_img(
        fixtures.path(),
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "evil.qcow2",
        ],
    );
    let data = fs::read(fixtures.path().join("evil.qcow2")).unwrap();
    let id = create(&server, "qcow2");
    assert_eq!(stage(&server, &id, &data).status, 204);
    assert_eq!(import(&server, &id, GLANCE_DIRECT).status, 202);
    let image = wait_status(&server, &id, "queued");
    assert_eq!(image["os_glance_failed_import"], "file", "{image:#}");
    assert!(
        image["checksum"].is_null() && image["size"].is_null(),
        "{image:#}"
    );
    assert_eq!(files_in(&server.path("images")), Vec::<String>::new());
    assert_eq!(files_in(staging.path()), Vec::<String>::new());
    let download = get(server.addr(), &format!("/v2/images/{id}/file")).unwrap();
    assert_eq!(download.status, 204);
    server.wait_for_log("refused by format inspection", DEADLINE);
}

#[test]
fn glance_preconditions_and_a_disabled_glance_direct() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    // Import of a queued image that was never staged.
    let queued = create(&server, "raw");
    let refused = import(&server, &queued, GLANCE_DIRECT);
    assert_eq!(refused.status, 409);
    assert!(
        refused
            .text()
            .contains("Image needs to be staged before 'glance-direct' method can be used"),
        "{}",
        refused.text()
    );
    let unknown = import(&server, &queued, r#"{"method":{"name":"web-download"}}"#);
    assert_eq!(unknown.status, 400);
    assert!(
        unknown
            .text()
            .contains("Unknown import method name 'web-download'."),
        "{}",
        unknown.text()
    );
    let no_method = import(&server, &queued, "{}");
    assert_eq!(no_method.status, 400);
    // Stage on an active image.
    let active = create(&server, "raw");
    let uploaded = request(
        server.addr(),
        "PUT",
        &format!("/v2/images/{active}/file"),
        &[("Content-Type", "application/octet-stream")],
        b"data",
    )
    .unwrap();
    assert_eq!(uploaded.status, 204);
    // One store: copy-image has nowhere to copy to, and all_stores_must_succeed needs stores.
    let copy = import(&server, &active, r#"{"method":{"name":"copy-image"}}"#);
    assert_eq!(copy.status, 400, "{}", copy.text());
    assert!(
        copy.text()
            .contains("The copy-image method needs several stores"),
        "{}",
        copy.text()
    );
    let staged = stage(&server, &active, b"more");
    assert_eq!(staged.status, 409, "{}", staged.text());
    assert_eq!(
        import(&server, &active, GLANCE_DIRECT).status,
        409,
        "import into an active image"
    );
    // Staging twice: the second finds it uploading.
    assert_eq!(stage(&server, &queued, b"once").status, 204);
    let lenient = import(
        &server,
        &queued,
        r#"{"method":{"name":"glance-direct"},"all_stores_must_succeed":false}"#,
    );
    assert_eq!(lenient.status, 400, "{}", lenient.text());
    assert!(
        lenient
            .text()
            .contains("All_stores_must_succeed can only be set with enabled_backends None"),
        "{}",
        lenient.text()
    );
    assert_eq!(stage(&server, &queued, b"twice").status, 409);
    // Deleting a staged image removes its staged data.
    let deleted = request(
        server.addr(),
        "DELETE",
        &format!("/v2/images/{queued}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(deleted.status, 204);
    assert_eq!(files_in(staging.path()), Vec::<String>::new());

    // glance-direct off: stage is 404 and the info lists nothing; the unserved methods warn.
    let off = tempfile::tempdir().unwrap();
    let server = start(
        off.path(),
        "enabled_import_methods = [web-download,copy-image]",
    );
    let info: Value =
        serde_json::from_slice(&get(server.addr(), "/v2/info/import").unwrap().body).unwrap();
    assert_eq!(
        info["import-methods"]["value"],
        serde_json::json!(["copy-image"])
    );
    let id = create(&server, "raw");
    let staged = stage(&server, &id, b"data");
    assert_eq!(staged.status, 404);
    assert!(
        staged
            .text()
            .contains("'glance-direct' method is not available at this site."),
        "{}",
        staged.text()
    );
    server.wait_for_log("glint serves only glance-direct", DEADLINE);
}

/// Stages `size` bytes of non-zero data as a raw image and starts its import; returns the id
/// and the data.
fn stage_large_and_import(server: &Server, size: usize) -> (String, Vec<u8>) {
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
    let id = create(server, "raw");
    let staged = stage(server, &id, &data);
    assert_eq!(staged.status, 204, "{}", staged.text());
    assert_eq!(import(server, &id, GLANCE_DIRECT).status, 202);
    (id, data)
}

#[test]
fn an_import_in_progress_at_a_reload_completes_and_leaves_nothing_staged() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let (id, data) = stage_large_and_import(&server, 64 << 20);
    server.reload_succeeds();
    // The old child drained while the import ran, and waited for it.
    server.wait_for_log("waiting for 1 image import(s) to finish", DEADLINE);
    let image = wait_status(&server, &id, "active");
    assert_eq!(image["size"], data.len() as u64);
    assert_eq!(image["checksum"], hex(&Md5::digest(&data)));
    assert_eq!(files_in(staging.path()), Vec::<String>::new());
    let stored = fs::metadata(server.path("images").join(&id)).unwrap();
    assert_eq!(stored.len(), data.len() as u64);
}

#[test]
fn an_import_in_progress_at_sigterm_completes_before_the_stop() {
    let staging = tempfile::tempdir().unwrap();
    let mut server = start(staging.path(), "");
    let (id, data) = stage_large_and_import(&server, 64 << 20);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(DEADLINE);
    assert!(
        status.contains("exit status: 0"),
        "{status}\n{}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("waiting for 1 image import(s) to finish"),
        "{}",
        server.log()
    );
    assert_eq!(files_in(staging.path()), Vec::<String>::new());
    // A new server on the same folder and database finds the image active.
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let config = server.config_path.clone();
    drop(server);
    let server = Server::start_with(dir, config, &[]);
    let image = show(&server, &id);
    assert_eq!(image["status"], "active", "{image:#}");
    assert_eq!(image["os_hash_value"], hex(&Sha512::digest(&data)));
}

#[test]
fn an_import_whose_child_is_killed_goes_back_to_uploading_and_imports_again() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let (id, data) = stage_large_and_import(&server, 64 << 20);
    // The child that took the import says so before it answers 202.
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
    // SAFETY: kill(2) of a child of the server this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let image = wait_status(&server, &id, "uploading");
    assert!(image["checksum"].is_null(), "{image:#}");
    server.wait_for_log("was left in importing by a process that died", DEADLINE);
    // The staged data is intact: importing again completes, and the killed import's temporary
    // file in the store is gone.
    assert_eq!(files_in(staging.path()), vec![id.clone()]);
    assert_eq!(import(&server, &id, GLANCE_DIRECT).status, 202);
    let image = wait_status(&server, &id, "active");
    assert_eq!(image["checksum"], hex(&Md5::digest(&data)));
    assert_eq!(files_in(&server.path("images")), vec![id.clone()]);
    assert_eq!(files_in(staging.path()), Vec::<String>::new());
}
