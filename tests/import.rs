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
pub(crate) fn start(staging: &Path, extra: &str) -> Server {
    Server::start(&format!(
        "node_staging_uri = file://{}\n{extra}",
        staging.display()
    ))
}

pub(crate) fn qemu_img(dir: &Path, args: &[&str]) {
    let output = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run qemu-img ({error}); install it: apt-get install qemu-utils")
        });
    assert!(output.status.success(), "qemu-img {args:?}: {output:?}");
}

pub(crate) fn create(server: &Server, disk_format: &str) -> String {
    create_image_from(
        server.addr(),
        &format!(
            r#"{{"name":"imported","disk_format":"{disk_format}","container_format":"bare"}}"#
        ),
    )
}

pub(crate) fn stage(server: &Server, id: &str, data: &[u8]) -> crate::util::Response {
    request(
        server.addr(),
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .expect("stage")
}

pub(crate) fn import(server: &Server, id: &str, body: &str) -> crate::util::Response {
    send_body(
        server.addr(),
        "POST",
        &format!("/v2/images/{id}/import"),
        "application/json",
        body.as_bytes(),
    )
}

pub(crate) const GLANCE_DIRECT: &str = r#"{"method":{"name":"glance-direct"}}"#;

pub(crate) fn show(server: &Server, id: &str) -> Value {
    let response = get(server.addr(), &format!("/v2/images/{id}")).expect("GET image");
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).expect("image JSON")
}

/// Polls the image until its status is `wanted`; panics with the log after the deadline.
pub(crate) fn wait_status(server: &Server, id: &str, wanted: &str) -> Value {
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
            "type": "array", "value": ["glance-direct", "web-download", "copy-image"]}})
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
        Some("glance-direct,web-download,copy-image")
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

/// A qcow2 made by qemu-img whose header names a backing file: the attack format inspection
/// refuses.
pub(crate) fn hostile_qcow2() -> Vec<u8> {
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
    fs::read(fixtures.path().join("evil.qcow2")).unwrap()
}

#[test]
fn a_hostile_qcow2_goes_back_to_queued_with_os_glance_failed_import_and_leaves_nothing() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let data = hostile_qcow2();
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
    let unknown = import(&server, &queued, r#"{"method":{"name":"glance-download"}}"#);
    assert_eq!(unknown.status, 400);
    assert!(
        unknown
            .text()
            .contains("Unknown import method name 'glance-download'."),
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
        "enabled_import_methods = [web-download,copy-image,glance-download]",
    );
    let info: Value =
        serde_json::from_slice(&get(server.addr(), "/v2/info/import").unwrap().body).unwrap();
    assert_eq!(
        info["import-methods"]["value"],
        serde_json::json!(["web-download", "copy-image"])
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
    server.wait_for_log(
        "glint serves only glance-direct, web-download, copy-image; not offering glance-download",
        DEADLINE,
    );
}

/// Stages `size` bytes of non-zero data as a raw image and starts its import; returns the id
/// and the data.
pub(crate) fn stage_large_and_import(server: &Server, size: usize) -> (String, Vec<u8>) {
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
    let pid = server.pid_that_logged(&format!("import of image {id} started"));
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

/// SIGKILLs the master first (so that nothing respawns), then every child it had.
fn kill_everything(server: &Server) {
    let children = server.children(None);
    // SAFETY: kill(2) of processes this test started.
    unsafe {
        libc::kill(server.master_pid, libc::SIGKILL);
        for pid in children {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Starts a new server on the folder, config and database of `server`, which is gone.
fn restart_on_same_files(mut server: Server) -> Server {
    // The killed master's status file names its dead listener; the harness would read it.
    let _ = fs::remove_file(server.path("glint-api.status.json"));
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let config = server.config_path.clone();
    drop(server);
    Server::start_with(dir, config, &[])
}

#[test]
fn a_stage_cut_short_by_a_killed_child_goes_back_to_queued_and_leaves_no_temporary_file() {
    use std::io::Write;
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "workers = 1");
    let id = create(&server, "raw");
    // A stage that sends 1 MiB of the 16 MiB it announces, then waits.
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    write!(
        stream,
        "PUT /v2/images/{id}/stage HTTP/1.1\r\nHost: glint\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        16 << 20
    )
    .unwrap();
    stream.write_all(&vec![7u8; 1 << 20]).unwrap();
    wait_status(&server, &id, "uploading");
    crate::util::wait_until("the stage's temporary file", DEADLINE, || {
        !files_in(staging.path()).is_empty()
    });
    let child = server.children(None);
    assert_eq!(child.len(), 1, "workers = 1");
    // SAFETY: kill(2) of the child this test's server started.
    unsafe {
        libc::kill(child[0], libc::SIGKILL);
    }
    let image = wait_status(&server, &id, "queued");
    assert!(image.get("os_glance_failed_import").is_none(), "{image:#}");
    // The dead stage's temporary file is swept, and the image can be staged again.
    crate::util::wait_until("the staging folder to be empty", DEADLINE, || {
        files_in(staging.path()).is_empty()
    });
    drop(stream);
    let data = vec![9u8; 4096];
    assert_eq!(stage(&server, &id, &data).status, 204);
    assert_eq!(import(&server, &id, GLANCE_DIRECT).status, 202);
    let image = wait_status(&server, &id, "active");
    assert_eq!(image["checksum"], hex(&Md5::digest(&data)));
}

#[test]
fn an_import_killed_with_its_staged_data_gone_goes_back_to_queued_with_os_glance_failed_import() {
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let (id, _) = stage_large_and_import(&server, 64 << 20);
    // Killed while importing (hashing 64 MiB takes far longer than this step), and
    // the staged file lost meanwhile (a wiped /tmp, say).
    kill_everything(&server);
    let server = {
        fs::remove_file(staging.path().join(&id)).expect("the staged file");
        restart_on_same_files(server)
    };
    // Recovery runs as the new children start.
    let image = wait_status(&server, &id, "queued");
    assert_eq!(image["os_glance_failed_import"], "file", "{image:#}");
    assert!(image["checksum"].is_null(), "{image:#}");
    // Logged just after the repair, by the new child's maintenance thread.
    server.wait_for_log(
        &format!("image {id} was left in importing by a process that died"),
        DEADLINE,
    );
    // Nothing of the killed import is left in the store (its temporary file is swept).
    crate::util::wait_until("the store to be empty", DEADLINE, || {
        files_in(&server.path("images")).is_empty()
    });
}

// ---------------------------------------------------------------------------------------------
// web-download (issue 12), against a small HTTP server on 127.0.0.1 run by the test itself.

/// What the test's HTTP server answers for a path.
#[derive(Clone)]
enum Reply {
    /// 200 with the data, with a Content-Length, or chunked when `chunked`.
    Data { data: Vec<u8>, chunked: bool },
    /// 302 to this Location.
    Redirect(String),
    /// This status, with a short body.
    Status(u16),
    /// 200 announcing 1 MiB, 10 bytes of it, then nothing until the server is dropped.
    Stall,
}

/// A reply with `data` whole, framed by Content-Length.
fn whole(data: Vec<u8>) -> Reply {
    Reply::Data {
        data,
        chunked: false,
    }
}

/// The `[import_filtering_opts]` section that lets web-download reach `web`'s port.
fn allowing(web: &WebServer) -> String {
    format!("[import_filtering_opts]\nallowed_ports = [{}]\n", web.port)
}

/// An HTTP/1.1 server on a real socket of 127.0.0.1, one thread per connection, answering each
/// path as its table says (404 for the others). It counts the requests it got.
struct WebServer {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl WebServer {
    fn start(routes: Vec<(&str, Reply)>) -> WebServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Vec<(String, Reply)>> = Arc::new(
            routes
                .into_iter()
                .map(|(path, reply)| (path.to_string(), reply))
                .collect(),
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let (routes, counter, stopped) = (
                    Arc::clone(&routes),
                    Arc::clone(&counter),
                    Arc::clone(&stopped),
                );
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let reply = routes
                        .iter()
                        .find(|(known, _)| *known == path)
                        .map(|(_, reply)| reply.clone())
                        .unwrap_or(Reply::Status(404));
                    let _ = match reply {
                        Reply::Data { data, chunked: false } => stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    data.len()
                                )
                                .as_bytes(),
                            )
                            .and_then(|()| stream.write_all(&data)),
                        Reply::Data { data, chunked: true } => {
                            let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
                            for chunk in data.chunks(1000) {
                                bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                                bytes.extend_from_slice(chunk);
                                bytes.extend_from_slice(b"\r\n");
                            }
                            bytes.extend_from_slice(b"0\r\n\r\n");
                            stream.write_all(&bytes)
                        }
                        Reply::Redirect(location) => stream.write_all(
                            format!(
                                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        ),
                        Reply::Status(status) => stream.write_all(
                            format!(
                                "HTTP/1.1 {status} Whatever\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope\n"
                            )
                            .as_bytes(),
                        ),
                        Reply::Stall => {
                            let _ = stream.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n0123456789",
                            );
                            // Holds the connection open without sending, until the test ends.
                            while !stopped.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            Ok(())
                        }
                    };
                });
            }
        });
        WebServer {
            port,
            requests,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn web_download(uri: &str) -> String {
    serde_json::json!({"method": {"name": "web-download", "uri": uri}}).to_string()
}

/// A qcow2 of 3 GiB virtual size made by qemu-img, and its bytes.
fn qcow2_bytes() -> Vec<u8> {
    let fixtures = tempfile::tempdir().unwrap();
    qemu_img(
        fixtures.path(),
        &["create", "-f", "qcow2", "disk.qcow2", "3G"],
    );
    fs::read(fixtures.path().join("disk.qcow2")).unwrap()
}

/// Asserts the image went back to `queued` with `os_glance_failed_import` and that nothing of
/// it is left in staging or in the store.
fn assert_failed_and_clean(server: &Server, staging: &Path, id: &str) {
    let image = wait_status(server, id, "queued");
    assert_eq!(image["os_glance_failed_import"], "file", "{image:#}");
    assert!(
        image["checksum"].is_null() && image["size"].is_null(),
        "{image:#}"
    );
    assert_eq!(files_in(&server.path("images")), Vec::<String>::new());
    assert_eq!(files_in(staging), Vec::<String>::new());
}

#[test]
fn web_download_of_a_served_qcow2_turns_the_image_active() {
    let data = qcow2_bytes();
    // The URI redirects (relative Location) to the data, on the same allowed port.
    let web = WebServer::start(vec![
        ("/old", Reply::Redirect("/images/disk.qcow2".to_string())),
        ("/images/disk.qcow2", whole(data.clone())),
    ]);
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), &allowing(&web));
    let info: Value =
        serde_json::from_slice(&get(server.addr(), "/v2/info/import").unwrap().body).unwrap();
    assert_eq!(
        info["import-methods"]["value"],
        serde_json::json!(["glance-direct", "web-download", "copy-image"])
    );
    let id = create(&server, "qcow2");
    let started = import(&server, &id, &web_download(&web.url("/old")));
    assert_eq!(started.status, 202, "{}", started.text());
    let image = wait_status(&server, &id, "active");
    assert_eq!(image["size"], data.len() as u64);
    assert_eq!(image["virtual_size"], 3u64 << 30);
    assert_eq!(image["checksum"], hex(&Md5::digest(&data)));
    assert_eq!(image["os_hash_value"], hex(&Sha512::digest(&data)));
    // Glance's lists, left empty by a successful import.
    assert_eq!(image["os_glance_failed_import"], "", "{image:#}");
    assert_eq!(image["os_glance_importing_to_stores"], "", "{image:#}");
    let download = get(server.addr(), &format!("/v2/images/{id}/file")).unwrap();
    assert!(
        download.body == data,
        "the image's data differs from the served file"
    );
    assert_eq!(web.requests(), 2, "one redirect, one download");
    assert_eq!(files_in(staging.path()), Vec::<String>::new());
}

#[test]
fn web_download_refused_by_the_default_ports_is_a_400_and_the_image_stays_queued() {
    let web = WebServer::start(vec![("/disk.raw", whole(vec![1; 4096]))]);
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), "");
    let id = create(&server, "raw");
    let uri = web.url("/disk.raw");
    let refused = import(&server, &id, &web_download(&uri));
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains(&format!(
            "URI for web-download does not pass filtering: {uri}"
        )),
        "{}",
        refused.text()
    );
    let missing = import(&server, &id, r#"{"method":{"name":"web-download"}}"#);
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert!(
        missing
            .text()
            .contains("URI for web-download does not pass filtering: None"),
        "{}",
        missing.text()
    );
    let image = show(&server, &id);
    assert_eq!(image["status"], "queued");
    assert!(image.get("os_glance_failed_import").is_none(), "{image:#}");
    assert_eq!(web.requests(), 0, "a refused URI is never fetched");

    // Glance's conflicts come before the URI: a staged image, an active one.
    let staged = create(&server, "raw");
    assert_eq!(stage(&server, &staged, b"data").status, 204);
    let conflict = import(&server, &staged, &web_download(&uri));
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert!(
        conflict
            .text()
            .contains("Image needs to be in 'queued' state to use 'web-download' method"),
        "{}",
        conflict.text()
    );
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
    let conflict = import(&server, &active, &web_download("http://127.0.0.1/x"));
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert!(
        conflict
            .text()
            .contains("Image with status active cannot be target for import"),
        "{}",
        conflict.text()
    );
}

#[test]
fn a_redirect_to_a_disallowed_port_fails_the_import_and_is_never_followed() {
    let target = WebServer::start(vec![("/disk.raw", whole(vec![1; 4096]))]);
    let web = WebServer::start(vec![(
        "/disk.raw",
        Reply::Redirect(target.url("/disk.raw")),
    )]);
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), &allowing(&web));
    let id = create(&server, "raw");
    let started = import(&server, &id, &web_download(&web.url("/disk.raw")));
    assert_eq!(started.status, 202, "{}", started.text());
    assert_failed_and_clean(&server, staging.path(), &id);
    server.wait_for_log(
        &format!("Redirect to disallowed URL: {}", target.url("/disk.raw")),
        DEADLINE,
    );
    assert_eq!(web.requests(), 1);
    assert_eq!(target.requests(), 0, "the refused redirect was followed");
}

#[test]
fn a_web_download_answered_404_fails_the_import() {
    let web = WebServer::start(vec![]);
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), &allowing(&web));
    let id = create(&server, "raw");
    let started = import(&server, &id, &web_download(&web.url("/missing.raw")));
    assert_eq!(started.status, 202, "{}", started.text());
    assert_failed_and_clean(&server, staging.path(), &id);
    server.wait_for_log("HTTP 404", DEADLINE);
    assert_eq!(web.requests(), 1);
}

#[test]
fn a_web_download_over_image_size_cap_fails_the_import() {
    let data = vec![7u8; 5000];
    let web = WebServer::start(vec![
        ("/announced.raw", whole(data.clone())),
        (
            "/chunked.raw",
            Reply::Data {
                data,
                chunked: true,
            },
        ),
    ]);
    let staging = tempfile::tempdir().unwrap();
    let server = start(
        staging.path(),
        &format!(
            "image_size_cap = 4096\n[import_filtering_opts]\nallowed_ports = [{}]\n",
            web.port
        ),
    );
    // Refused on its Content-Length, and, without one, once the data passes the cap.
    for path in ["/announced.raw", "/chunked.raw"] {
        let id = create(&server, "raw");
        let started = import(&server, &id, &web_download(&web.url(path)));
        assert_eq!(started.status, 202, "{}", started.text());
        assert_failed_and_clean(&server, staging.path(), &id);
    }
    // The download itself stops at the cap (not the copy into the store after it).
    server.wait_for_log(
        "web-download: the declared image size exceeds image_size_cap (4096 bytes)",
        DEADLINE,
    );
    server.wait_for_log(
        "web-download: the image data exceeds image_size_cap (4096 bytes)",
        DEADLINE,
    );
}

#[test]
fn a_web_download_that_stalls_fails_after_the_read_timeout() {
    // graceful_shutdown_timeout = 0: the drain waits for ever, so only the download's read
    // timeout can end the draining child.
    let web = WebServer::start(vec![("/stall.raw", Reply::Stall)]);
    let staging = tempfile::tempdir().unwrap();
    let server = start(
        staging.path(),
        &format!(
            "graceful_shutdown_timeout = 0\nweb_download_read_timeout = 2\n\
             [import_filtering_opts]\nallowed_ports = [{}]\n",
            web.port
        ),
    );
    let id = create(&server, "raw");
    let started = import(&server, &id, &web_download(&web.url("/stall.raw")));
    assert_eq!(started.status, 202, "{}", started.text());
    crate::util::wait_until("the download reached the server", DEADLINE, || {
        web.requests() == 1
    });
    server.reload_succeeds();
    assert_failed_and_clean(&server, staging.path(), &id);
    server.wait_for_log("web-download: reading", DEADLINE);
    // The old child, whose drain waited for the import, exits.
    crate::util::wait_until("the old child finished draining", DEADLINE, || {
        server.status()["draining"]
            .as_array()
            .is_some_and(|draining| draining.is_empty())
    });
}

/// An HTTPS server on 127.0.0.1 with a self-signed certificate (made by the openssl CLI, served
/// by python3's ssl), which no system CA bundle trusts. Killed on drop.
struct UntrustedHttps {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl UntrustedHttps {
    fn start() -> UntrustedHttps {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run openssl ({error}); install it: apt-get install openssl")
            });
        assert!(made.status.success(), "openssl req: {made:?}");
        fs::write(dir.path().join("disk.raw"), vec![1u8; 4096]).unwrap();
        let server = "import http.server, ssl, sys\n\
            httpd = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            context.load_cert_chain('cert.pem', 'key.pem')\n\
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)\n\
            print(httpd.server_address[1], flush=True)\n\
            httpd.serve_forever()\n";
        let mut child = Command::new("python3")
            .args(["-c", server])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run python3 ({error}); install it: apt-get install python3")
            });
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the https server did not print its port: {line:?}"));
        UntrustedHttps {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for UntrustedHttps {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_https_download_from_an_untrusted_certificate_fails_the_import() {
    let https = UntrustedHttps::start();
    let staging = tempfile::tempdir().unwrap();
    let server = start(
        staging.path(),
        &format!(
            "[import_filtering_opts]\nallowed_ports = [{}]\n",
            https.port
        ),
    );
    let id = create(&server, "raw");
    let uri = format!("https://127.0.0.1:{}/disk.raw", https.port);
    let started = import(&server, &id, &web_download(&uri));
    assert_eq!(started.status, 202, "{}", started.text());
    assert_failed_and_clean(&server, staging.path(), &id);
    // rustls verified the certificate and refused it: TLS was spoken, not plain HTTP.
    server.wait_for_log("invalid peer certificate", DEADLINE);
}

#[test]
fn a_web_download_whose_child_dies_after_the_download_goes_back_to_queued() {
    // Large enough that storing it after the download takes a while (two digests, the write).
    let data: Vec<u8> = (0..(96usize << 20)).map(|i| (i % 251) as u8 + 1).collect();
    let web = WebServer::start(vec![("/disk.raw", whole(data.clone()))]);
    let staging = tempfile::tempdir().unwrap();
    let server = start(staging.path(), &allowing(&web));
    let id = create(&server, "raw");
    let started = import(&server, &id, &web_download(&web.url("/disk.raw")));
    assert_eq!(started.status, 202, "{}", started.text());
    // Killed once the download is complete, while its data is being stored.
    let needle = format!("image {id}: downloaded {} bytes", data.len());
    server.wait_for_log(&needle, DEADLINE);
    let pid = server.pid_that_logged(&needle);
    // SAFETY: kill(2) of a child of the server this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    // Back where web-download starts, not `uploading` as a staged glance-direct image would
    // be; the downloaded file is swept.
    let image = wait_status(&server, &id, "queued");
    assert_eq!(image["os_glance_failed_import"], "file", "{image:#}");
    crate::util::wait_until("the staging folder to be empty", DEADLINE, || {
        files_in(staging.path()).is_empty()
    });
    // And the same import can run again.
    let again = import(&server, &id, &web_download(&web.url("/disk.raw")));
    assert_eq!(again.status, 202, "{}", again.text());
    let image = wait_status(&server, &id, "active");
    assert_eq!(image["checksum"], hex(&Md5::digest(&data)));
}
