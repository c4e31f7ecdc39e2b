//! Three nodes behind the real HAProxy (issue 15, parts 3 and 4), on one PostgreSQL database
//! (the cluster of the test Keystone, as in `postgres`) and one data folder, with HAProxy
//! running `conf/haproxy-glint.cfg` as docs/SCALE-OUT.md gives it, only its addresses changed:
//! every node reloaded in turn under load fails no request, and a node taken out with its
//! disable file gets no new request and stops without a failed one.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crate::postgres::{json, new_database, node_with, shared_cluster_port};
use crate::util::{self, Server, DEADLINE};

/// HAProxy on the repository's config, in front of `nodes`.
struct Haproxy {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Haproxy {
    fn start(nodes: &[SocketAddr]) -> Haproxy {
        let dir = tempfile::tempdir().expect("haproxy folder");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let documented = fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/conf/haproxy-glint.cfg"
        ))
        .expect("conf/haproxy-glint.cfg");
        let mut config = documented
            .replace("bind *:9292", &format!("bind 127.0.0.1:{port}"))
            .replace(
                "/run/haproxy/glint.sock",
                &dir.path().join("stats.sock").display().to_string(),
            );
        for (index, node) in nodes.iter().enumerate() {
            let documented = format!("192.0.2.{}:9292", 11 + index);
            assert!(config.contains(&documented), "no server {documented}");
            config = config.replace(&documented, &node.to_string());
        }
        let path = dir.path().join("haproxy.cfg");
        fs::write(&path, config).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                fs::File::create(dir.path().join("haproxy.log")).expect("log"),
            ))
            .stderr(Stdio::from(
                fs::File::create(dir.path().join("haproxy.err")).expect("err"),
            ))
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run haproxy: {error}; install it (apt-get install haproxy)")
            });
        let haproxy = Haproxy {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        util::wait_until("every node UP in HAProxy", DEADLINE, || {
            let states = haproxy.states();
            states.len() == nodes.len() && states.iter().all(|(_, state)| state == "UP")
        });
        haproxy
    }

    /// Each server's name and state (`UP`, `DOWN`, ...), from the stats socket.
    fn states(&self) -> Vec<(String, String)> {
        let Ok(mut socket) = UnixStream::connect(self.dir.path().join("stats.sock")) else {
            return Vec::new();
        };
        let mut csv = String::new();
        if socket.write_all(b"show stat\n").is_err() || socket.read_to_string(&mut csv).is_err() {
            return Vec::new();
        }
        csv.lines()
            .filter(|line| line.starts_with("glint_nodes,") && !line.contains(",BACKEND,"))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                // pxname, svname, ..., the 18th field is status.
                Some((fields.get(1)?.to_string(), fields.get(17)?.to_string()))
            })
            .collect()
    }

    fn state_of(&self, server: &str) -> String {
        self.states()
            .into_iter()
            .find(|(name, _)| name == server)
            .map(|(_, state)| state)
            .unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nodes on one new database and one data folder, each with a disable file in its own
/// folder (`[healthcheck] disable_by_file_path`).
fn three_nodes(data: &std::path::Path) -> (Vec<Server>, Vec<PathBuf>) {
    let database = new_database(shared_cluster_port());
    // Beside the shared data folder, removed with it.
    let disable_dir = data.join("disable");
    fs::create_dir(&disable_dir).expect("disable files folder");
    let mut nodes = Vec::new();
    let mut disable_files = Vec::new();
    for index in 1..=3 {
        let disable = disable_dir.join(format!("glint-{index}.disable"));
        nodes.push(node_with(
            &database,
            data,
            &format!("node_name = glint-{index}"),
            &format!(
                "[healthcheck]\ndisable_by_file_path = {}\n",
                disable.display()
            ),
        ));
        disable_files.push(disable);
    }
    (nodes, disable_files)
}

/// Clients through HAProxy until told to stop: each loop reads the image, lists, and creates
/// an image; every answer but the expected one is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(addr: SocketAddr, id: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (stop, id) = (stop.clone(), id.to_string());
                thread::spawn(move || {
                    let mut done = 0;
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let checks = [
                            (util::get(addr, &format!("/v2/images/{id}")), 200),
                            (util::get(addr, "/v2/images?limit=5"), 200),
                            (
                                util::request(
                                    addr,
                                    "POST",
                                    "/v2/images",
                                    &[("Content-Type", "application/json")],
                                    br#"{"name": "load", "disk_format": "raw", "container_format": "bare"}"#,
                                ),
                                201,
                            ),
                        ];
                        for (response, expected) in checks {
                            done += 1;
                            match response {
                                Ok(response) if response.status == expected => {}
                                Ok(response) => failures
                                    .push(format!("{} {}", response.status, response.text())),
                                Err(error) => failures.push(error.to_string()),
                            }
                        }
                    }
                    (done, failures)
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients; how many requests they made, and every failure.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        let mut failures = Vec::new();
        for thread in self.threads {
            let (done, failed) = thread.join().expect("client thread");
            total += done;
            failures.extend(failed);
        }
        (total, failures)
    }
}

fn image_with_data(addr: SocketAddr) -> String {
    let id = util::create_image(addr);
    let put = util::send_body(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        "application/octet-stream",
        b"served by whichever node",
    );
    assert_eq!(put.status, 204, "{}", put.text());
    id
}

#[test]
fn every_node_reloaded_in_turn_through_haproxy_fails_no_request() {
    let data = tempfile::tempdir().expect("shared data folder");
    let (nodes, _) = three_nodes(data.path());
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let haproxy = Haproxy::start(&addrs);
    let id = image_with_data(haproxy.addr);

    let load = Load::start(haproxy.addr, &id, 4);
    for _round in 0..2 {
        for node in &nodes {
            node.reload_succeeds();
        }
    }
    let (total, failures) = load.finish();
    assert_eq!(failures, Vec::<String>::new(), "of {total} requests");
    assert!(total >= 60, "only {total} requests during six reloads");
    for node in &nodes {
        assert_eq!(node.status()["generation"], 3, "{}", node.log());
    }
}

#[test]
fn a_node_taken_out_by_its_disable_file_gets_nothing_new_and_stops_without_a_failed_request() {
    let data = tempfile::tempdir().expect("shared data folder");
    let (mut nodes, disable_files) = three_nodes(data.path());
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let haproxy = Haproxy::start(&addrs);
    let id = image_with_data(haproxy.addr);

    fs::write(&disable_files[1], b"").expect("touch the disable file");
    util::wait_until("glint-2 DOWN in HAProxy", DEADLINE, || {
        haproxy.state_of("glint-2").starts_with("DOWN")
    });
    let access_lines = |node: &Server| node.log().matches("\"GET /v2/images").count();
    let before = access_lines(&nodes[1]);
    for _ in 0..30 {
        let response = util::get(haproxy.addr, &format!("/v2/images/{id}")).expect("GET");
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(
        access_lines(&nodes[1]),
        before,
        "glint-2 got requests while out"
    );

    // Out of the balancer, the node stops (SIGTERM finishes what it accepted) under load.
    let load = Load::start(haproxy.addr, &id, 4);
    util::wait_until("some requests through HAProxy", DEADLINE, || {
        access_lines(&nodes[0]) + access_lines(&nodes[2]) > 20
    });
    nodes[1].signal(libc::SIGTERM);
    let stopped = nodes[1].wait_exit(DEADLINE);
    let (total, failures) = load.finish();
    assert_eq!(failures, Vec::<String>::new(), "of {total} requests");
    assert_eq!(stopped, "exit status: 0");
    let listed = json(&util::get(haproxy.addr, "/v2/images?limit=1").expect("list"));
    assert!(listed["images"].is_array(), "{listed}");
}
