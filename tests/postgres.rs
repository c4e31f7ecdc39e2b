//! A registry on PostgreSQL (issue 15): nodes sharing one database and one data folder, an
//! upload of a node killed whole recovered by another once the node's lease ran out (and a
//! live one never), and a database restarted under a running node.
//!
//! The shared tests use the cluster `scripts/test` starts for Keystone (`POSTGRES_PORT` in
//! `GLINT_KEYSTONE_ENV`), a database of their own in it; the restart test runs a throwaway
//! cluster of its own (initdb and pg_ctl as the `postgres` user, so it needs root, as CI has),
//! since stopping the shared one would fail the other tests.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::util::{self, Server, DEADLINE};

/// The port of the PostgreSQL cluster `scripts/test` started with Keystone.
pub(crate) fn shared_cluster_port() -> u16 {
    let path = std::env::var_os("GLINT_KEYSTONE_ENV").unwrap_or_else(|| {
        panic!(
            "GLINT_KEYSTONE_ENV is not set: these tests use the PostgreSQL cluster of the test \
             Keystone. Run scripts/test, or: dir=$(mktemp -d); scripts/keystone start \"$dir\"; \
             export GLINT_KEYSTONE_ENV=$dir/keystone.env"
        )
    });
    let env = fs::read_to_string(&path).expect("read GLINT_KEYSTONE_ENV");
    env.lines()
        .find_map(|line| line.strip_prefix("POSTGRES_PORT="))
        .and_then(|port| port.trim().parse().ok())
        .expect("POSTGRES_PORT in GLINT_KEYSTONE_ENV")
}

/// Runs `sql` as the superuser on the cluster at `port`, with psql.
fn psql(port: u16, sql: &str) {
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("run psql (Debian postgresql-client)");
    assert!(
        output.status.success(),
        "{}",
        util::show_output(sql, &output)
    );
}

/// A new, empty database on the cluster at `port`, and the URL glint connects with.
pub(crate) fn new_database(port: u16) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // The time as well as the pid: a later run may reuse the pid, and the cluster keeps what an
    // earlier run left (it is thrown away with the suite's Keystone).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    let name = format!(
        "glint_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    psql(port, &format!("CREATE DATABASE {name}"));
    format!("postgresql+psycopg2://postgres@127.0.0.1:{port}/{name}")
}

/// Starts a node whose registry is `database` and whose images go to `data`.
fn node(database: &str, data: &Path) -> Server {
    named_node(database, data, "")
}

/// [`node`] with `extra` lines in `[DEFAULT]`.
fn named_node(database: &str, data: &Path, extra: &str) -> Server {
    node_with(database, data, extra, "")
}

/// [`named_node`] with `sections` (whole sections) at the end of the config.
pub(crate) fn node_with(database: &str, data: &Path, extra: &str, sections: &str) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        format!(
            "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = 0\nworkers = 2\nworker_threads = 4\n\
             pid_file = glint-api.pid\nlog_file = glint-api.log\n{extra}\n\n\
             [glance_store]\nfilesystem_store_datadir = {}\n\n\
             [database]\nconnection = {database}\n\n{sections}\n",
            data.display()
        ),
    )
    .expect("write config");
    let server = Server::launch(dir, config_path, &[], false);
    server.wait_for("the first generation to serve", DEADLINE, |status| {
        status["phase"] == "running" && status["generation"] == 1
    });
    server
}

/// The lease time the cross-node tests give their nodes: the least glint allows.
const LEASE_S: u64 = 15;

fn lease_config(name: &str) -> String {
    format!("node_name = {name}\nnode_lease_time = {LEASE_S}")
}

/// Sends the head of a PUT of `total` bytes and `sent` of them, and leaves the upload open.
fn start_upload(addr: SocketAddr, id: &str, total: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&vec![b'x'; sent]).expect("first part");
    stream
}

fn status_of(addr: SocketAddr, id: &str) -> String {
    json(&get(addr, &format!("/v2/images/{id}")))["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The temporary files in `data` (an upload's `.ID.OWNER.tmp`).
fn temporary_files(data: &Path) -> Vec<String> {
    fs::read_dir(data)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| name.starts_with('.') && name.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether node `node`'s lease has expired, on the database's clock.
fn lease_expired(port: u16, database: &str, node: &str) -> bool {
    let name = database.rsplit('/').next().expect("database name");
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", name, "-qAtc"])
        .arg(format!(
            "SELECT expires_order <= CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS \
             BIGINT) FROM node_leases WHERE node = '{node}'"
        ))
        .output()
        .expect("psql");
    String::from_utf8_lossy(&output.stdout).trim() == "t"
}

/// Node `node`'s lease in the registry, in microseconds since the epoch.
fn lease_of(port: u16, database: &str, node: &str) -> Option<i64> {
    let name = database.rsplit('/').next().expect("database name");
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", name, "-qAtc"])
        .arg(format!(
            "SELECT expires_order FROM node_leases WHERE node = '{node}'"
        ))
        .output()
        .expect("psql");
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

#[test]
fn a_node_killed_mid_upload_has_the_upload_recovered_by_another_after_its_lease() {
    let database = new_database(shared_cluster_port());
    let data = tempfile::tempdir().expect("shared data folder");
    let a = named_node(&database, data.path(), &lease_config("node-a"));
    let b = named_node(&database, data.path(), &lease_config("node-b"));
    let id = util::create_image(a.addr());
    let upload = start_upload(a.addr(), &id, 1 << 20, 1 << 16);
    util::wait_until("the upload through A seen by B", DEADLINE, || {
        status_of(b.addr(), &id) == "saving"
    });
    let temporary = temporary_files(data.path());
    assert_eq!(temporary.len(), 1, "{temporary:?}");
    assert!(temporary[0].ends_with("_node-a.tmp"), "{temporary:?}");

    // The whole node dies at once, master first so that nothing respawns: no child of it is
    // left to recover its own upload or to renew its lease.
    let processes: Vec<i32> = std::iter::once(a.master_pid)
        .chain(util::children_of(a.master_pid))
        .collect();
    for pid in &processes {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill a process of node A");
    }
    util::wait_until("node A's processes gone", DEADLINE, || {
        processes.iter().all(|pid| !util::process_alive(*pid))
    });
    // The client's end stays open: only B may put the image back. B takes it once A's lease
    // has run out, at a maintenance pass (every 5 s), and not before: A's processes are on
    // this machine's /proc too, so a B that looked there would take it at once.
    let port = shared_cluster_port();
    util::wait_until(
        "B to requeue the upload of dead node A",
        Duration::from_secs(LEASE_S + 20),
        || {
            // The lease's state first: if it is live now, it was live at any earlier status.
            let expired = lease_expired(port, &database, "node-a");
            let queued = status_of(b.addr(), &id) == "queued";
            assert!(
                !queued || expired,
                "B requeued A's upload before A's lease expired"
            );
            queued
        },
    );
    b.wait_for_log("was left in saving by a process that died", DEADLINE);
    drop(upload);
    util::wait_until("the temporary file of A's upload removed", DEADLINE, || {
        temporary_files(data.path()).is_empty()
    });
    let put = put_data(b.addr(), &id, b"uploaded again through B");
    assert_eq!(put.status, 204, "{}", put.text());
    assert_eq!(status_of(b.addr(), &id), "active");
}

#[test]
fn a_live_upload_of_another_node_is_never_taken_for_abandoned() {
    let port = shared_cluster_port();
    let database = new_database(port);
    let data = tempfile::tempdir().expect("shared data folder");
    let a = named_node(&database, data.path(), &lease_config("node-a"));
    let b = named_node(&database, data.path(), &lease_config("node-b"));
    let id = util::create_image(a.addr());
    let total = 1 << 20;
    let mut upload = start_upload(a.addr(), &id, total, 1 << 16);
    util::wait_until("the upload through A seen by B", DEADLINE, || {
        status_of(b.addr(), &id) == "saving"
    });
    // Wait until A has renewed its lease past the end of the lease it held when the upload
    // began: a whole lease time passed, with B's maintenance passes (every 5 s) looking at the
    // upload all along.
    let first = lease_of(port, &database, "node-a").expect("node-a's lease");
    util::wait_until(
        "a whole lease time of B's passes",
        Duration::from_secs(LEASE_S * 3),
        || {
            lease_of(port, &database, "node-a")
                .is_some_and(|now| now > first + LEASE_S as i64 * 1_000_000)
        },
    );
    assert_eq!(status_of(b.addr(), &id), "saving");
    upload
        .write_all(&vec![b'x'; total - (1 << 16)])
        .expect("the rest of the upload");
    let mut reader = std::io::BufReader::new(upload);
    let response = util::read_response(&mut reader, "PUT")
        .expect("read")
        .expect("a response");
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(status_of(b.addr(), &id), "active");
}

pub(crate) fn json(response: &util::Response) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|_| panic!("{}", response.text()))
}

fn get(addr: SocketAddr, path: &str) -> util::Response {
    util::get(addr, path).unwrap_or_else(|error| panic!("GET {path}: {error}"))
}

/// Uploads `data` as image `id`'s data; its answer.
fn put_data(addr: SocketAddr, id: &str, data: &[u8]) -> util::Response {
    util::send_body(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        "application/octet-stream",
        data,
    )
}

/// Sends a JSON patch of image `id`; its answer.
fn patch(addr: SocketAddr, id: &str, body: &str) -> util::Response {
    util::request(
        addr,
        "PATCH",
        &format!("/v2/images/{id}"),
        &[(
            "Content-Type",
            "application/openstack-images-v2.1-json-patch",
        )],
        body.as_bytes(),
    )
    .expect("PATCH")
}

/// Two nodes on a new database and a new shared data folder (kept while the folder lives).
fn two_nodes() -> (tempfile::TempDir, Server, Server) {
    let database = new_database(shared_cluster_port());
    let data = tempfile::tempdir().expect("shared data folder");
    let a = node(&database, data.path());
    let b = node(&database, data.path());
    (data, a, b)
}

#[test]
fn two_nodes_on_one_database_serve_and_change_each_others_images() {
    let (_data, a, b) = two_nodes();

    // Written through A...
    let id = util::create_image(a.addr());
    let payload = b"the same bytes from either node".repeat(1000);
    let put = put_data(a.addr(), &id, &payload);
    assert_eq!(put.status, 204, "{}", put.text());

    // ...read through B: the record and the data.
    let shown = get(b.addr(), &format!("/v2/images/{id}"));
    assert_eq!(shown.status, 200, "{}", shown.text());
    let image = json(&shown);
    assert_eq!(image["status"], "active");
    assert_eq!(image["size"], payload.len());
    let file = get(b.addr(), &format!("/v2/images/{id}/file"));
    assert_eq!(file.status, 200);
    assert!(file.body == payload, "B served other bytes than A stored");

    // A change through B is seen through A, and a delete through A is gone for B.
    let renamed = patch(
        b.addr(),
        &id,
        r#"[{"op": "replace", "path": "/name", "value": "renamed on B"}]"#,
    );
    assert_eq!(renamed.status, 200, "{}", renamed.text());
    assert_eq!(
        json(&get(a.addr(), &format!("/v2/images/{id}")))["name"],
        "renamed on B"
    );
    let listed = json(&get(a.addr(), "/v2/images"));
    assert_eq!(
        listed["images"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let deleted = util::request(a.addr(), "DELETE", &format!("/v2/images/{id}"), &[], b"")
        .expect("DELETE through A");
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(get(b.addr(), &format!("/v2/images/{id}")).status, 404);

    // Each node's health check asks the database: a second reason after the disable file's.
    for server in [&a, &b] {
        let health = get(server.addr(), "/healthcheck");
        assert_eq!((health.status, health.text()), (200, "OK\nOK".to_string()));
    }
}

/// A PostgreSQL cluster of one test's own, stopped and removed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    fn start() -> Cluster {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .expect("/usr/lib/postgresql: install Debian's postgresql")
            .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .max()
            .expect("a PostgreSQL server in /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("cluster folder");
        let chown = Command::new("chown")
            .arg("postgres")
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(chown.success(), "chown postgres {}", dir.path().display());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let cluster = Cluster { dir, bin, port };
        cluster.as_postgres(&[
            "initdb",
            "-D",
            &cluster.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--locale=C.UTF-8",
        ]);
        cluster.pg_ctl("start");
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_postgres(&self, command: &[&str]) {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(command[0]))
            .args(&command[1..])
            .output()
            .expect("runuser (as root)");
        assert!(
            output.status.success(),
            "{}",
            util::show_output(&command.join(" "), &output)
        );
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        let data = self.data();
        let mut command = vec!["pg_ctl", "-D", &data, "-l", &log, "-o", &options, "-w"];
        if action == "stop" {
            command.extend(["-m", "fast"]);
        }
        command.push(action);
        self.as_postgres(&command);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

#[test]
fn a_database_restarted_under_load_gives_503s_then_service_without_restarting_glint_and_loses_nothing(
) {
    let cluster = Cluster::start();
    let database = new_database(cluster.port);
    let data = tempfile::tempdir().expect("data folder");
    let server = node(&database, data.path());
    let children = server.children(Some("serving"));
    let id = util::create_image(server.addr());

    // Under load: two clients create images all along, before, during and after the outage.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (created, refused, other) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..2)
            .map(|_| {
                let (stop, addr) = (&stop, server.addr());
                scope.spawn(move || {
                    let (mut created, mut refused, mut other) = (Vec::new(), 0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match util::request(
                            addr,
                            "POST",
                            "/v2/images",
                            &[("Content-Type", "application/json")],
                            br#"{"name": "during", "disk_format": "raw", "container_format": "bare"}"#,
                        ) {
                            Ok(response) if response.status == 201 => {
                                created.push(json(&response)["id"].as_str().unwrap_or_default().to_string())
                            }
                            Ok(response) if response.status == 503 => refused += 1,
                            Ok(response) => other.push(format!("{} {}", response.status, response.text())),
                            Err(error) => other.push(error.to_string()),
                        }
                    }
                    (created, refused, other)
                })
            })
            .collect();
        restart_under(&cluster, &server, &id);
        stop.store(true, Ordering::Relaxed);
        let mut all = (Vec::new(), 0, Vec::new());
        for client in clients {
            let (created, refused, other) = client.join().expect("client");
            all.0.extend(created);
            all.1 += refused;
            all.2.extend(other);
        }
        all
    });
    assert_eq!(
        other,
        Vec::<String>::new(),
        "answers other than 201 and 503"
    );
    assert!(refused > 0, "no 503 while the database was down");
    assert!(!created.is_empty());
    // Nothing lost: every image a client was told was created is there.
    for created in &created {
        assert_eq!(
            get(server.addr(), &format!("/v2/images/{created}")).status,
            200,
            "{created}"
        );
    }
    // Nothing restarted: the same children serve.
    assert_eq!(server.children(Some("serving")), children);
    // Told once per child, not once per 503 (the outage was shorter than the 10 s between
    // reminders), and told when it ended.
    let opened = server
        .log()
        .matches("answering 503 until it answers")
        .count();
    assert!(
        (1..=children.len()).contains(&opened),
        "{opened} lines for {refused} 503s"
    );
    server.wait_for_log("registry: the database answers again", DEADLINE);
}

/// Stops the database under `server`, checks the 503s and the health check, starts it again
/// and waits until image `id` is served again.
fn restart_under(cluster: &Cluster, server: &Server, id: &str) {
    cluster.pg_ctl("stop");
    let down = get(server.addr(), &format!("/v2/images/{id}"));
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(
        down.text().contains("The image database cannot be reached"),
        "{}",
        down.text()
    );
    let health = get(server.addr(), "/healthcheck");
    assert_eq!(
        (health.status, health.text()),
        (503, "OK\nDATABASE UNREACHABLE".to_string())
    );
    server.wait_for_log("check that the database server runs", DEADLINE);

    cluster.pg_ctl("start");
    // Each pooled connection was lost; the next request on it opens a new one.
    let mut last = None;
    util::wait_until("the image served again", DEADLINE, || {
        let response = get(server.addr(), &format!("/v2/images/{id}"));
        let served = response.status == 200;
        last = Some(response);
        served
    });
    let image = json(last.as_ref().expect("a response"));
    assert_eq!(image["id"], id);
    assert_eq!(get(server.addr(), "/healthcheck").status, 200);
}

#[test]
fn a_delete_through_one_node_ends_a_download_from_another_whole() {
    let (data, a, b) = two_nodes();
    let id = util::create_image(a.addr());
    // Far more than the socket buffers hold, so most of it is still to be read at the delete.
    let payload: Vec<u8> = (0..32u32 << 20).map(|index| (index % 251) as u8).collect();
    let put = put_data(a.addr(), &id, &payload);
    assert_eq!(put.status, 204, "{}", put.text());

    let mut download = TcpStream::connect(b.addr()).expect("connect to B");
    download
        .write_all(
            format!(
                "GET /v2/images/{id}/file HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                b.addr()
            )
            .as_bytes(),
        )
        .expect("request");
    let mut first = vec![0; 1 << 16];
    std::io::Read::read_exact(&mut download, &mut first).expect("the first bytes");

    let deleted = util::request(a.addr(), "DELETE", &format!("/v2/images/{id}"), &[], b"")
        .expect("DELETE through A");
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert!(
        !data.path().join(&id).exists(),
        "the data file is still there after the delete"
    );
    assert_eq!(get(b.addr(), &format!("/v2/images/{id}")).status, 404);

    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut download, &mut rest).expect("the rest");
    first.extend_from_slice(&rest);
    let body_start = first
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        util::show(&first[..64])
    );
    assert!(
        first[body_start..] == payload[..],
        "the download ended with {} of {} bytes",
        first.len() - body_start,
        payload.len()
    );
}

#[test]
fn concurrent_uploads_to_one_image_through_three_nodes_leave_one_winner_and_its_data() {
    let database = new_database(shared_cluster_port());
    let data = tempfile::tempdir().expect("shared data folder");
    let nodes: Vec<Server> = (0..3).map(|_| node(&database, data.path())).collect();
    let id = util::create_image(nodes[0].addr());
    let payloads: Vec<Vec<u8>> = (0..3u8).map(|seed| vec![b'a' + seed; 4 << 20]).collect();
    let barrier = std::sync::Barrier::new(3);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let uploads: Vec<_> = nodes
            .iter()
            .zip(&payloads)
            .map(|(node, payload)| {
                let (barrier, id) = (&barrier, &id);
                scope.spawn(move || {
                    barrier.wait();
                    util::send_body(
                        node.addr(),
                        "PUT",
                        &format!("/v2/images/{id}/file"),
                        "application/octet-stream",
                        payload,
                    )
                    .status
                })
            })
            .collect();
        uploads
            .into_iter()
            .map(|upload| upload.join().expect("upload thread"))
            .collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, vec![204, 409, 409], "{statuses:?}");
    let winner = statuses
        .iter()
        .position(|status| *status == 204)
        .expect("a winner");
    // Every node serves the winner's data, and no loser left a file behind.
    for node in &nodes {
        let file = get(node.addr(), &format!("/v2/images/{id}/file"));
        assert_eq!(file.status, 200);
        assert!(
            file.body == payloads[winner],
            "another upload's data was kept"
        );
    }
    assert_eq!(temporary_files(data.path()), Vec::<String>::new());
}

#[test]
fn values_postgresql_cannot_store_are_refused_with_a_400_and_long_ones_are_kept() {
    let database = new_database(shared_cluster_port());
    let data = tempfile::tempdir().expect("data folder");
    let server = node(&database, data.path());
    let id = util::create_image(server.addr());
    let patch = |body: &str| patch(server.addr(), &id, body);
    // A NUL character: SQLite would keep it, PostgreSQL's text cannot.
    let tag = util::request(
        server.addr(),
        "PUT",
        &format!("/v2/images/{id}/tags/a%00b"),
        &[],
        b"",
    )
    .expect("PUT tag");
    assert_eq!(tag.status, 400, "{}", tag.text());
    let nul = patch(r#"[{"op": "add", "path": "/name", "value": "x\u0000y"}]"#);
    assert_eq!(nul.status, 400, "{}", nul.text());
    assert!(nul.text().contains("NUL character"), "{}", nul.text());
    // A property value far beyond a btree entry's limit: stored, and found by a filter.
    let long = "v".repeat(9_600);
    let kept = patch(&format!(
        r#"[{{"op": "add", "path": "/long", "value": "{long}"}}]"#
    ));
    assert_eq!(kept.status, 200, "{}", kept.text());
    assert_eq!(
        json(&get(server.addr(), &format!("/v2/images/{id}")))["long"],
        long
    );
    let listed = json(&get(server.addr(), &format!("/v2/images?long={long}")));
    assert_eq!(
        listed["images"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

#[test]
fn staged_through_one_node_and_imported_through_another_with_a_shared_staging_folder() {
    let database = new_database(shared_cluster_port());
    let data = tempfile::tempdir().expect("shared data folder");
    let staging = tempfile::tempdir().expect("shared staging folder");
    let extra = format!("node_staging_uri = file://{}", staging.path().display());
    let a = named_node(&database, data.path(), &extra);
    let b = named_node(&database, data.path(), &extra);
    let id = util::create_image(a.addr());
    let payload = b"raw bytes staged on A, imported on B".repeat(100);
    let staged = crate::import::stage(&a, &id, &payload);
    assert_eq!(staged.status, 204, "{}", staged.text());
    let started = crate::import::import(&b, &id, crate::import::GLANCE_DIRECT);
    assert_eq!(started.status, 202, "{}", started.text());
    util::wait_until("the import through B to end", DEADLINE, || {
        status_of(a.addr(), &id) == "active"
    });
    let file = get(a.addr(), &format!("/v2/images/{id}/file"));
    assert!(
        file.body == payload,
        "the imported data differs from the staged"
    );
}

/// Whether process `pid` has libpq mapped.
fn maps_libpq(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|error| panic!("read /proc/{pid}/maps: {error}"))
        .contains("/libpq.so")
}

/// libpq is loaded when a registry on PostgreSQL is opened, never linked: a node on SQLite
/// maps none of it (nor its GnuTLS, Kerberos and LDAP) in its master or children, and every
/// fork of a reload copies fewer mappings; a node on PostgreSQL has it in each process.
#[test]
fn libpq_is_mapped_only_by_a_node_on_postgresql() {
    let sqlite = Server::start("workers = 2");
    let children = sqlite.children(None);
    assert_eq!(children.len(), 2);
    for pid in children.iter().chain([&sqlite.master_pid]) {
        assert!(
            !maps_libpq(*pid),
            "process {pid} of a node on SQLite maps libpq"
        );
    }
    let data = tempfile::tempdir().unwrap();
    let database = new_database(shared_cluster_port());
    let postgres = node(&database, data.path());
    let children = postgres.children(None);
    assert_eq!(children.len(), 2);
    for pid in children.iter().chain([&postgres.master_pid]) {
        assert!(
            maps_libpq(*pid),
            "process {pid} of a node on PostgreSQL lacks libpq"
        );
    }
}

/// A node on PostgreSQL whose libpq cannot be loaded does not start, and says which package
/// to install. `GLINT_FAULT_LIBPQ` names a file that does not exist in its place.
#[test]
fn a_node_on_postgresql_without_libpq_refuses_to_start_naming_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(
        dir.path(),
        &format!(
            "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = 0\nlog_file = glint-api.log\n\
             pid_file = glint-api.pid\n\n[glance_store]\nfilesystem_store_datadir = {}\n\n\
             [database]\nconnection = postgresql://glint@127.0.0.1:1/glint\n",
            dir.path().join("images").display()
        ),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .arg("--config-file")
        .arg(&config)
        .env("GLINT_FAULT_LIBPQ", "libpq-missing.so.5")
        .output()
        .expect("run glint-api");
    util::assert_exit(&output, 1, "glint-api", "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needed in [
        "cannot load libpq (libpq-missing.so.5:",
        "apt-get install libpq5",
        "[database] connection",
    ] {
        assert!(stderr.contains(needed), "{needed:?} in: {stderr}");
    }
}
