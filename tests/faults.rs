//! Faults a storage node meets when left alone: crashed processes, a database locked by another
//! process, a config file gone bad at reload, descriptor exhaustion, and reload storms.
//!
//! Each test states the documented behaviour (docs/RELIABILITY.md) and checks it from outside:
//! the client's view, the status file, /proc, and the data on disk. Upload-side faults (a child
//! killed mid-upload, a full disk, a data directory removed) are in tests/images.rs.

use std::fs;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::hostile::{assert_fresh_client_served, raise_fd_limit};
use crate::reload::{fresh_client, keepalive_client, Tally};
use crate::util::{self, read_response, Server, DEADLINE};

/// How long a test waits for an answer before calling the server stuck.
const ANSWER: Duration = Duration::from_secs(10);

const CREATE: &str = r#"{"name":"fault","disk_format":"raw","container_format":"bare"}"#;

/// Pseudo-random bytes, so a truncated or shifted download cannot pass for the original.
fn data(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The pids of the master's children that are zombies (exited, not reaped).
fn zombies_of(parent: i32) -> Vec<i32> {
    util::proc_pids()
        .into_iter()
        .filter(|&pid| {
            util::state_and_parent(pid).is_some_and(|(state, ppid)| ppid == parent && state == "Z")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Crashes.
// ---------------------------------------------------------------------------------------------

/// kill -9 of the master: each child gets SIGTERM from the kernel (PR_SET_PDEATHSIG), finishes
/// the request it is serving (here a create whose body was half sent on a keep-alive connection)
/// with `Connection: close`, and exits; none runs on as an orphan. The child that answered keeps
/// the closed connection for its close linger (`CLOSE_LINGER`, 1 s: the test does not close its
/// end), so the last child is gone 1 s after the answer arrived (by its kernel stamp), not
/// before; asserted within 10 s.
#[test]
fn killed_master_takes_its_children_down_after_they_finish_in_flight_requests() {
    let server = Server::start("workers = 2");
    let children = server.children(Some("serving"));
    assert_eq!(children.len(), 2);
    let mut stream = server.connect();
    util::stamp_arrivals(&stream);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_response(&mut reader, "GET").unwrap().unwrap();
    assert!(first.status == 200 && !first.closes(), "{first:?}");
    let (half, rest) = CREATE.as_bytes().split_at(CREATE.len() / 2);
    stream
        .write_all(
            format!(
                "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                CREATE.len()
            )
            .as_bytes(),
        )
        .unwrap();
    stream.write_all(half).unwrap();
    server.signal(libc::SIGKILL);
    util::wait_until("the master to die", DEADLINE, || {
        !util::process_alive(server.master_pid)
    });
    // Half a body is in the child already (even a head the acceptor has not parsed yet is served
    // by a drain); the rest is sent once both children are draining.
    util::wait_until("both children to start draining", DEADLINE, || {
        server.log().matches("draining: stopped accepting").count() >= 2
    });
    stream.write_all(rest).unwrap();
    // When the answer arrived, by the kernel's stamp; the child's linger starts after it.
    let answered = util::first_arrival(&stream);
    let response = read_response(&mut reader, "POST");
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 201 && r.closes()),
        "the in-flight create after the master died: {response:?}\n{}",
        server.log()
    );
    let answered = answered.expect("the answer's arrival stamp");
    util::wait_until(
        "every child to exit after the master died",
        Duration::from_secs(10),
        || children.iter().all(|pid| !util::process_alive(*pid)),
    );
    // Read after the children were seen gone, so at or after their exit.
    let gone = std::time::SystemTime::now()
        .duration_since(answered)
        .unwrap_or(Duration::ZERO);
    println!("children gone {gone:?} after the in-flight request was answered");
    assert!(
        gone >= Duration::from_secs(1),
        "the children were gone {gone:?} after the answer, before the 1 s close linger of the \
         connection the test kept open"
    );
    let log = server.log();
    assert!(log.matches("drained; exiting").count() >= 2, "{log}");
}

/// kill -9 of a child mid-download: the client sees the connection end before Content-Length
/// (and must retry), the master respawns the child, and the image downloads whole afterwards.
#[test]
fn killed_child_mid_download_is_respawned_and_the_image_downloads_whole() {
    let server = Server::start("workers = 1");
    let addr = server.addr();
    let id = util::create_image(addr);
    let image = data(16 * 1024 * 1024);
    let path = format!("/v2/images/{id}/file");
    let uploaded = util::send_body(addr, "PUT", &path, "application/octet-stream", &image);
    assert_eq!(uploaded.status, 204, "{}", uploaded.text());
    let child = server.children(Some("serving"))[0];

    let mut stream = server.connect();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut start = [0u8; 64 * 1024];
    stream.read_exact(&mut start).unwrap();
    // SAFETY: kill(2) on the child this test's server started.
    unsafe {
        libc::kill(child, libc::SIGKILL);
    }
    let mut rest = Vec::new();
    let end = stream.read_to_end(&mut rest);
    assert!(
        (start.len() + rest.len()) < image.len(),
        "the download completed although its child was killed ({end:?})"
    );
    server.wait_for("the child to be respawned", DEADLINE, |status| {
        let children = status["children"].as_array().cloned().unwrap_or_default();
        children.len() == 1 && children[0]["pid"] != child && children[0]["state"] == "serving"
    });
    let download = util::get(addr, &path).unwrap();
    assert_eq!(download.status, 200);
    assert!(
        download.body == image,
        "the image changed after its child was killed"
    );
    let shown: Value =
        serde_json::from_slice(&util::get(addr, &format!("/v2/images/{id}")).unwrap().body)
            .unwrap();
    assert_eq!(shown["status"], "active", "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Storage.
// ---------------------------------------------------------------------------------------------

/// Another process holds `BEGIN EXCLUSIVE` on the database for 3 s: a create waits (the busy
/// timeout is 30 s) and succeeds once the lock is gone, and reads of other clients are served
/// meanwhile.
#[test]
fn database_locked_by_another_process_for_3_s_delays_a_create_which_then_succeeds() {
    let server = Server::start("workers = 1");
    let addr = server.addr();
    let database = rusqlite::Connection::open(server.path("glint.sqlite")).unwrap();
    database.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked_at = Instant::now();
    let creator = thread::spawn(move || {
        let started = Instant::now();
        let response = util::send_body(
            addr,
            "POST",
            "/v2/images",
            "application/json",
            CREATE.as_bytes(),
        );
        (response, started.elapsed())
    });
    let mut n_reads = 0;
    while locked_at.elapsed() < Duration::from_secs(3) {
        assert_fresh_client_served(&server, "the database is locked");
        // A read of the registry itself (WAL: readers never wait for a writer's lock), not only
        // /healthcheck, which never touches SQLite.
        let list = util::get(addr, "/v2/images").unwrap();
        assert_eq!(
            list.status, 200,
            "a registry read while the database is locked"
        );
        n_reads += 1;
        thread::sleep(Duration::from_millis(250));
    }
    assert!(
        n_reads >= 2,
        "only {n_reads} registry read(s) during the lock"
    );
    database.execute_batch("COMMIT").unwrap();
    let (response, took) = creator.join().unwrap();
    assert_eq!(
        response.status,
        201,
        "{}\n{}",
        response.text(),
        server.log()
    );
    assert!(
        took >= Duration::from_millis(2500),
        "the create did not wait: {took:?}"
    );
    let list = util::get(addr, "/v2/images").unwrap();
    let list: Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(list["images"].as_array().map(Vec::len), Some(1), "{list}");
}

// ---------------------------------------------------------------------------------------------
// Config at reload.
// ---------------------------------------------------------------------------------------------

/// At a reload the config file is gone, a directory, or not UTF-8: the reload fails with the
/// reason in the status file, the old generation keeps serving with the same children, and once
/// the file is good again the next reload succeeds without a restart.
#[test]
fn config_file_deleted_replaced_by_a_directory_or_not_utf8_at_reload_keeps_the_old_generation() {
    let server = Server::start("workers = 2");
    let good = fs::read(&server.config_path).unwrap();
    type Breakage<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let breakages: Vec<Breakage> = vec![
        (
            "deleted",
            Box::new(|| fs::remove_file(&server.config_path).unwrap()),
        ),
        (
            "a directory",
            Box::new(|| {
                fs::remove_file(&server.config_path).unwrap();
                fs::create_dir(&server.config_path).unwrap();
            }),
        ),
        (
            "invalid UTF-8",
            Box::new(|| {
                let mut text = good.clone();
                text.extend_from_slice(b"\n# \xff\xfe\n");
                fs::write(&server.config_path, text).unwrap();
            }),
        ),
    ];
    for (name, break_it) in breakages {
        let children = server.children(Some("serving"));
        break_it();
        let verdict = server.reload();
        assert_eq!(verdict["outcome"], "failed", "{name}: {verdict}");
        let error = verdict["error"].as_str().unwrap_or("");
        assert!(
            error.contains(&*server.config_path.to_string_lossy()),
            "{name}: the error does not name the file: {error}"
        );
        assert_fresh_client_served(&server, &format!("config {name}"));
        assert_eq!(server.children(Some("serving")), children, "{name}");
        if server.config_path.is_dir() {
            fs::remove_dir(&server.config_path).unwrap();
        }
        fs::write(&server.config_path, &good).unwrap();
        let verdict = server.reload();
        assert_eq!(
            verdict["outcome"], "succeeded",
            "after {name} was repaired: {verdict}"
        );
    }
    println!("{}", server.status()["last_reload"]);
}

// ---------------------------------------------------------------------------------------------
// Descriptors.
// ---------------------------------------------------------------------------------------------

/// A child whose RLIMIT_NOFILE is 48 (set on the running child with prlimit(2)) meets EMFILE
/// when 80 clients connect: it logs the accept backoff, keeps serving the connections it holds,
/// does not crash, and serves new clients once the others close.
#[test]
fn child_out_of_descriptors_backs_off_accepting_and_recovers_when_connections_close() {
    raise_fd_limit();
    let server = Server::start("workers = 1");
    let child = server.children(Some("serving"))[0];
    let limit = libc::rlimit {
        rlim_cur: 48,
        rlim_max: 48,
    };
    // SAFETY: prlimit(2) on our server's child with a valid struct.
    let rc = unsafe { libc::prlimit(child, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let held: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    server.wait_for_log("accept() failed: Too many open files", DEADLINE);
    // A client whose connection the child did accept is still served.
    let mut accepted = held.into_iter();
    let mut first = accepted.next().unwrap();
    first.set_read_timeout(Some(ANSWER)).unwrap();
    first
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_response(&mut BufReader::new(first), "GET");
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 200),
        "{response:?}"
    );
    drop(accepted);
    util::wait_until(
        "a fresh client to be served after the flood closed",
        DEADLINE,
        || util::get(server.addr(), "/healthcheck").is_ok_and(|r| r.status == 200),
    );
    assert_fresh_client_served(&server, "recovery from EMFILE");
    let id = util::create_image(server.addr());
    assert!(!id.is_empty());
    assert_eq!(
        server.children(Some("serving")),
        vec![child],
        "the child was replaced"
    );
    assert!(util::process_alive(child));
}

// ---------------------------------------------------------------------------------------------
// Reload storms.
// ---------------------------------------------------------------------------------------------

/// Runs `clients` load threads (half fresh, half keep-alive) while `storm` runs, then checks
/// that no request failed. Returns the tally.
fn under_load(server: &Server, clients: usize, storm: impl FnOnce()) -> Arc<Tally> {
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..clients)
        .map(|index| {
            let (stop, tally) = (stop.clone(), tally.clone());
            thread::spawn(move || {
                if index % 2 == 0 {
                    fresh_client(addr, &stop, &tally)
                } else {
                    keepalive_client(addr, &stop, &tally)
                }
            })
        })
        .collect();
    storm();
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    let failed = tally.failed.load(Ordering::SeqCst);
    let logged = server
        .log()
        .matches("after we closed its idle keep-alive connection")
        .count() as u64;
    assert_eq!(
        failed,
        0,
        "failed requests: {:#?}\n{}",
        tally.failures.lock().unwrap(),
        server.log()
    );
    // With reload_handoff (the default) a reload closes no keep-alive connection: idle ones
    // go to the new generation, busy ones after their response.
    assert_eq!(
        (
            tally.closed_idle_before_send.load(Ordering::SeqCst),
            tally.closed_idle_after_send.load(Ordering::SeqCst),
            tally.closed_by_response.load(Ordering::SeqCst),
            logged
        ),
        (0, 0, 0, 0),
        "keep-alive connections closed (seen idle, after a send, by Connection: close; late \
         sends the server logged)"
    );
    tally
}

/// The process count is back to `workers`, nothing drains, and no child is a zombie.
fn assert_settled(server: &Server, workers: usize) {
    server.wait_for("the storm to settle", DEADLINE, |status| {
        status["reload_in_progress"].is_null()
            && status["draining"].as_array().is_some_and(|d| d.is_empty())
            && status["children"]
                .as_array()
                .is_some_and(|c| c.len() == workers)
    });
    util::wait_until(
        "the master's children to be exactly `workers`",
        DEADLINE,
        || util::children_of(server.master_pid).len() == workers,
    );
    assert_eq!(zombies_of(server.master_pid), Vec::<i32>::new(), "zombies");
}

/// 200 SIGHUPs in 2 s under load: no request fails, no keep-alive connection is closed, every
/// SIGHUP taken in is followed by a reload (`reload::assert_reload_accounting`), and afterwards
/// exactly `workers` children run, none draining, no zombie.
#[test]
fn two_hundred_sighups_in_two_seconds_under_load_fail_no_request_and_leave_no_orphan() {
    let server = Server::start("workers = 2\nworker_threads = 4");
    let tally = under_load(&server, 4, || {
        let started = Instant::now();
        for i in 0..200u32 {
            // The storm's pacing: one SIGHUP every 10 ms.
            let due = started + Duration::from_millis(10) * i;
            thread::sleep(due.saturating_duration_since(Instant::now()));
            server.signal(libc::SIGHUP);
        }
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
    });
    // The last SIGHUP may not have been taken in: one awaited reload covers it.
    assert_eq!(server.reload()["outcome"], "succeeded");
    assert_settled(&server, 2);
    let status = server.status();
    println!(
        "200 SIGHUPs: {} requests succeeded, {} reloads requested, {} succeeded, {} failed",
        tally.succeeded.load(Ordering::SeqCst),
        status["reloads_requested"],
        status["reloads_succeeded"],
        status["reloads_failed"]
    );
    assert!(
        tally.succeeded.load(Ordering::SeqCst) > 100,
        "too little load"
    );
    assert_eq!(status["reloads_failed"], 0, "{status}");
    crate::reload::assert_reload_accounting(&status, 200);
}

/// Reloads alternating between a good and a bad config under load: every bad one fails and
/// changes nothing, every good one succeeds, no request fails, and the status counts both.
#[test]
fn reloads_alternating_good_and_bad_configs_under_load_fail_no_request() {
    let server = Server::start("workers = 2\nworker_threads = 4");
    let good = fs::read_to_string(&server.config_path).unwrap();
    let bad = good.replace("workers = 2", "workers = many");
    assert_ne!(good, bad);
    let rounds = 8;
    under_load(&server, 4, || {
        for _ in 0..rounds {
            server.write_config_text(&bad);
            assert_eq!(server.reload()["outcome"], "failed");
            server.write_config_text(&good);
            assert_eq!(server.reload()["outcome"], "succeeded");
        }
    });
    assert_settled(&server, 2);
    let status = server.status();
    assert_eq!(status["reloads_failed"], rounds, "{status}");
    assert_eq!(status["reloads_succeeded"], rounds, "{status}");
}
