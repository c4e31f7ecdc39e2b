//! Reloads seen from the client's side: no request fails while generations are replaced, long
//! transfers span several reloads intact, idle connections do not hold a drain open, and a bad
//! config or a failed start changes nothing.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, read_response, Server, DEADLINE};

/// How long the reload storm lasts.
const STORM: Duration = Duration::from_secs(4);

/// Upper bound on requests per client thread, so the loops end even if the clock misbehaves.
const MAX_REQUESTS_PER_CLIENT: u64 = 200_000;

/// What the client threads of the storm saw.
#[derive(Default)]
pub struct Tally {
    pub succeeded: AtomicU64,
    /// Fresh connections used (one per request in fresh mode).
    pub fresh_connections: AtomicU64,
    /// A reused keep-alive connection found closed before the client sent on it: the tolerated
    /// event (the client reconnects, nothing was lost).
    pub closed_idle_before_send: AtomicU64,
    /// A reused keep-alive connection that gave EOF with no response byte after the client sent:
    /// tolerated only when the server logged that it had already closed the connection (the
    /// client's bytes arrived after our FIN).
    pub closed_idle_after_send: AtomicU64,
    /// A response on a keep-alive connection that said `Connection: close` (the client then
    /// reconnects): a reload with handoff never asks for it.
    pub closed_by_response: AtomicU64,
    pub failed: AtomicU64,
    pub failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 20 {
            failures.push(what);
        }
    }
}

const HEALTHCHECK: &[u8] = b"GET /healthcheck HTTP/1.1\r\nHost: glint\r\n\r\n";
const HEALTHCHECK_CLOSE: &[u8] =
    b"GET /healthcheck HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n\r\n";

/// One request per new connection; every failure counts.
pub fn fresh_client(addr: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    for _ in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tally.fresh_connections.fetch_add(1, Ordering::SeqCst);
        let result = util::raw_exchange(addr, HEALTHCHECK_CLOSE);
        match result {
            Ok(Some(response)) if response.status == 200 && response.body == b"OK" => {
                tally.succeeded.fetch_add(1, Ordering::SeqCst);
            }
            other => tally.fail(format!("fresh connection: {other:?}")),
        }
    }
}

/// Requests on one keep-alive connection, reconnecting when the server closes it.
pub fn keepalive_client(addr: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    let mut connection: Option<(TcpStream, BufReader<TcpStream>)> = None;
    for _ in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // Like urllib3's is_connection_dropped: look before reusing.
        if let Some((stream, _)) = &connection {
            if closed_by_peer(stream) {
                tally.closed_idle_before_send.fetch_add(1, Ordering::SeqCst);
                connection = None;
            }
        }
        let reused = connection.is_some();
        if connection.is_none() {
            tally.fresh_connections.fetch_add(1, Ordering::SeqCst);
            match TcpStream::connect(addr) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(DEADLINE)).unwrap();
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    connection = Some((stream, reader));
                }
                Err(error) => {
                    tally.fail(format!("connect: {error}"));
                    continue;
                }
            }
        }
        let (stream, reader) = connection.as_mut().expect("connected above");
        if let Err(error) = stream.write_all(HEALTHCHECK) {
            if reused {
                // Our write met the server's close of an idle connection.
                tally.closed_idle_after_send.fetch_add(1, Ordering::SeqCst);
            } else {
                tally.fail(format!("write on a fresh connection: {error}"));
            }
            connection = None;
            continue;
        }
        match read_response(reader, "GET") {
            Ok(Some(response)) if response.status == 200 && response.body == b"OK" => {
                tally.succeeded.fetch_add(1, Ordering::SeqCst);
                if response.closes() {
                    tally.closed_by_response.fetch_add(1, Ordering::SeqCst);
                    connection = None;
                }
            }
            Ok(None) if reused => {
                tally.closed_idle_after_send.fetch_add(1, Ordering::SeqCst);
                connection = None;
            }
            other => {
                tally.fail(format!("keep-alive (reused: {reused}): {other:?}"));
                connection = None;
            }
        }
    }
}

/// True if the peer has closed `stream` (a non-blocking peek sees EOF or an error).
fn closed_by_peer(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// A small deterministic generator for reload intervals (no crate needed).
fn next_interval(state: &mut u64) -> Duration {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    Duration::from_millis(100 + (*state >> 33) % 201)
}

/// What the status file says of the reloads after a storm of `sighups_sent` SIGHUPs (and the
/// one awaited reload after it), checked against the rules of docs/RELIABILITY.md "Reload
/// storms": every SIGHUP taken in is counted once and is followed by a reload that began after
/// it (the last reload's number is the count: none was lost), no more reloads run than were
/// asked for, and each successful one made one generation. How many SIGHUPs coalesce depends on
/// how fast reloads run; `sighups_taken_in_during_a_reload_coalesce_into_exactly_one_more`
/// proves the rule deterministically.
pub fn assert_reload_accounting(status: &Value, sighups_sent: u64) {
    let count = |field: &str| {
        status[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field}: {status}"))
    };
    let (requested, succeeded, failed) = (
        count("reloads_requested"),
        count("reloads_succeeded"),
        count("reloads_failed"),
    );
    assert!(
        requested <= sighups_sent + 1,
        "{requested} SIGHUPs counted, {sighups_sent} + 1 sent: {status}"
    );
    assert!(
        succeeded + failed <= requested,
        "more reloads ran than were asked for: {status}"
    );
    assert_eq!(
        status["last_reload"]["number"], requested,
        "the last reload began before the last SIGHUP taken in: {status}"
    );
    assert_eq!(
        status["generation"].as_u64(),
        Some(1 + succeeded),
        "generations made: {status}"
    );
}

/// The core promise: SIGHUP every 100-300 ms for several seconds under concurrent load on fresh
/// and keep-alive connections, and no connection is refused, no request fails, and no keep-alive
/// connection is closed (with `reload_handoff`, the default, idle ones are handed to the new
/// generation).
#[test]
fn no_request_fails_while_sighup_arrives_every_100_to_300_ms() {
    let server = Server::start("workers = 2\nworker_threads = 4");
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for index in 0..6 {
        let (stop, tally) = (stop.clone(), tally.clone());
        clients.push(thread::spawn(move || {
            if index % 2 == 0 {
                fresh_client(addr, &stop, &tally)
            } else {
                keepalive_client(addr, &stop, &tally)
            }
        }));
    }
    let started = Instant::now();
    let mut seed = 0x5eed_u64;
    let mut n_sighups = 0;
    while started.elapsed() < STORM {
        // The pacing of the storm, not a wait for a condition.
        thread::sleep(next_interval(&mut seed));
        server.signal(libc::SIGHUP);
        n_sighups += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    // The storm's last SIGHUP may not have been taken in yet: one more reload, whose verdict we
    // wait for, covers it (signals coalesce), so nothing is pending when we count processes.
    assert_eq!(server.reload()["outcome"], "succeeded");
    server.wait_for("the storm to settle", DEADLINE, |status| {
        status["reload_in_progress"].is_null()
            && status["draining"].as_array().is_some_and(|d| d.is_empty())
            && status["children"].as_array().is_some_and(|c| c.len() == 2)
    });
    let status = server.status();
    let server_side_closes = server
        .log()
        .matches("after we closed its idle keep-alive connection")
        .count() as u64;
    let succeeded = tally.succeeded.load(Ordering::SeqCst);
    let failed = tally.failed.load(Ordering::SeqCst);
    let before_send = tally.closed_idle_before_send.load(Ordering::SeqCst);
    let after_send = tally.closed_idle_after_send.load(Ordering::SeqCst);
    let by_response = tally.closed_by_response.load(Ordering::SeqCst);
    println!(
        "reload storm: {n_sighups} SIGHUPs -> {} requested, {} reloads succeeded, {succeeded} \
         requests succeeded, {failed} failed, {} connections opened; keep-alive connections \
         closed: {before_send} seen while idle, {after_send} after sending, {by_response} by \
         `Connection: close` (server logged {server_side_closes} late sends)",
        status["reloads_requested"],
        status["reloads_succeeded"],
        tally.fresh_connections.load(Ordering::SeqCst),
    );
    let failures = tally.failures.lock().unwrap();
    assert_eq!(
        failed,
        0,
        "failed requests: {failures:#?}\n{}",
        server.log()
    );
    assert!(
        succeeded > 500,
        "too little load to prove anything: {succeeded}"
    );
    assert!(
        status["reloads_succeeded"].as_u64().unwrap_or(0) >= 5,
        "too few reloads happened: {status}"
    );
    assert_eq!(status["reloads_failed"], 0, "{status}");
    assert_reload_accounting(&status, n_sighups);
    assert_eq!(
        (before_send, after_send, by_response, server_side_closes),
        (0, 0, 0, 0),
        "keep-alive connections closed by reloads (seen idle, after a send, by Connection: \
         close; late sends the server logged), with reload_handoff on"
    );
    let children = util::children_of(server.master_pid);
    assert_eq!(
        children.len(),
        2,
        "processes under the master: {children:?}"
    );
}

/// SIGHUPs taken in while a reload runs coalesce: however many arrive, exactly one more reload
/// follows the one under way (`Machine::on_request`, `reload_again`). The first reload's child
/// is held in its start (`GLINT_FAULT_CHILD_HOLD`); 20 more SIGHUPs follow, each sent once the
/// status file counts the one before, so the kernel merges none and the master takes in all 21;
/// then the test lets the child go on. The held reload succeeds,
/// exactly one more follows: 21 requested, 2 succeeded, generation 3, one "one more reload will
/// follow" line.
#[test]
fn sighups_taken_in_during_a_reload_coalesce_into_exactly_one_more() {
    const MORE: u64 = 20;
    let hold = util::Hold::new();
    let server = Server::start_held("workers = 1", &hold, "2/1");
    server.signal(libc::SIGHUP);
    server.wait_for(
        "reload #1, its child held in its start",
        DEADLINE,
        |status| {
            status["reload_in_progress"]["number"] == 1
                && status["children"].as_array().is_some_and(|children| {
                    children
                        .iter()
                        .any(|c| c["generation"] == 2 && c["state"] == "starting")
                })
        },
    );
    for n in 2..=1 + MORE {
        server.signal(libc::SIGHUP);
        server.wait_for(&format!("SIGHUP #{n} taken in"), DEADLINE, |status| {
            status["reloads_requested"] == n
        });
    }
    assert_eq!(
        server.status()["reload_in_progress"]["number"],
        1,
        "reload #1 ended while the SIGHUPs were sent: the hook did not hold it"
    );
    hold.release();
    server.wait_for("the reloads to end", DEADLINE, |status| {
        status["reload_in_progress"].is_null() && status["last_reload"]["number"] == 1 + MORE
    });
    let status = server.status();
    assert_eq!(status["reloads_requested"], 1 + MORE, "{status:#}");
    assert_eq!(status["reloads_succeeded"], 2, "{status:#}");
    assert_eq!(status["reloads_failed"], 0, "{status:#}");
    assert_eq!(status["generation"], 3, "{status:#}");
    assert_eq!(
        server
            .log()
            .matches("SIGHUP during a reload: one more reload will follow")
            .count(),
        1,
        "{}",
        server.log()
    );
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
}

/// An image upload sent slowly while the child that took it is told to drain three times: the
/// child waits for the whole body, stores it, and the data downloads intact afterwards.
#[test]
fn slow_request_body_spanning_reloads_is_stored_whole() {
    let server = Server::start("workers = 2");
    let addr = server.addr();
    let create = util::raw_exchange(
        addr,
        b"POST /v2/images HTTP/1.1\r\nHost: glint\r\nContent-Type: application/json\r\n\
          Content-Length: 50\r\nConnection: close\r\n\r\n\
          {\"disk_format\": \"raw\", \"container_format\": \"bare\"}",
    )
    .unwrap()
    .unwrap();
    assert_eq!(create.status, 201, "{create:?}");
    let id = serde_json::from_slice::<Value>(&create.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    // A first request makes sure a child of generation 1 has accepted the connection (until
    // then it could wait in the shared backlog and be taken by the next generation).
    stream.write_all(HEALTHCHECK).unwrap();
    let response = read_response(&mut reader, "GET").unwrap().unwrap();
    assert_eq!(response.status, 200);
    write!(
        stream,
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: glint\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let mut sent = Vec::new();
    for index in 0..12u8 {
        let chunk: Vec<u8> = (0..16 * 1024)
            .map(|i| (i as u8) ^ index.wrapping_mul(31))
            .collect();
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
        sent.extend_from_slice(&chunk);
        if index % 4 == 1 {
            let verdict = server.reload();
            assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
            // The child holding our half-sent upload must still be there, draining.
            assert!(
                server.status()["draining"]
                    .as_array()
                    .is_some_and(|d| !d.is_empty()),
                "no child is draining while our upload is unfinished: {}",
                server.status()
            );
        }
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let response = read_response(&mut reader, "PUT")
        .unwrap()
        .expect("a response");
    assert_eq!(response.status, 204, "{response:?}\n{}", server.log());
    // With reload_handoff (the default) the connection outlives its draining child: the next
    // request on it is served by the new generation.
    assert!(!response.closes(), "the connection is kept: {response:?}");
    stream.write_all(HEALTHCHECK).unwrap();
    let next = read_response(&mut reader, "GET")
        .unwrap()
        .expect("served after the handoff");
    assert_eq!((next.status, next.text().as_str()), (200, "OK"));
    let download = util::get(server.addr(), &format!("/v2/images/{id}/file")).unwrap();
    assert_eq!(download.status, 200);
    assert!(
        download.body == sent,
        "the stored image differs from what was sent"
    );
}

/// 1,000 pipelined requests whose responses the client reads slowly, with reloads between
/// reads: the child blocked writing to us finishes every response, intact, then closes.
#[test]
fn slow_response_read_spanning_reloads_completes_intact() {
    // Without handoff: the draining child finishes the pipeline, then closes.
    let server = Server::start("workers = 2\nreload_handoff = false");
    let addr = server.addr();
    let expected = util::get(addr, "/versions").unwrap();
    assert_eq!(expected.status, 200);
    let mut stream = server.connect();
    let request = format!("GET /versions HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let n_requests = 1_000;
    stream
        .write_all(request.repeat(n_requests).as_bytes())
        .unwrap();
    let mut reader = BufReader::with_capacity(1024, stream.try_clone().unwrap());
    let mut generations_seen = Vec::new();
    for index in 0..n_requests {
        if index % 250 == 10 {
            let verdict = server.reload();
            assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
            generations_seen.push(verdict["generation"].clone());
        }
        let response = read_response(&mut reader, "GET")
            .unwrap_or_else(|error| panic!("response {index}: {error}\n{}", server.log()))
            .unwrap_or_else(|| panic!("response {index}: connection closed\n{}", server.log()));
        assert_eq!(response.status, 200, "response {index}");
        assert_eq!(response.body, expected.body, "response {index} differs");
        if index + 1 < n_requests {
            assert!(!response.closes(), "response {index} closed early");
        } else {
            assert!(
                response.closes(),
                "the last response tells the client to close"
            );
        }
    }
    assert_eq!(generations_seen.len(), 4);
    assert!(util::peer_closed(&mut stream, DEADLINE));
}

/// An idle keep-alive connection does not hold its draining child open: it is closed between
/// requests, FIN first (the client reads EOF, not a reset), and the child exits.
#[test]
fn idle_keepalive_connection_is_closed_fin_first_and_does_not_hold_the_drain() {
    let server = Server::start("workers = 1\nclient_socket_timeout = 0\nreload_handoff = false");
    let old_child = server.children(None)[0];
    let mut stream = server.connect();
    stream.write_all(HEALTHCHECK).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let response = read_response(&mut reader, "GET").unwrap().unwrap();
    assert!(!response.closes());
    let reload_sent = Instant::now();
    assert_eq!(server.reload()["outcome"], "succeeded");
    let mut byte = [0u8; 1];
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let read = std::io::Read::read(&mut stream, &mut byte);
    assert!(matches!(read, Ok(0)), "expected EOF (FIN), got {read:?}");
    util::wait_until("the old child to exit", Duration::from_secs(5), || {
        !util::process_alive(old_child)
    });
    println!(
        "idle connection closed and old child gone {:?} after SIGHUP",
        reload_sent.elapsed()
    );
}

/// Bad configs at reload change nothing and say where they are wrong; fixing the file works.
#[test]
fn invalid_config_at_reload_keeps_the_old_generation_and_reports_the_line() {
    let server = Server::start("workers = 2");
    let children = server.children(None);
    let good = std::fs::read_to_string(&server.config_path).unwrap();
    let cases: [(&str, Option<String>, &str); 3] = [
        (
            "syntax error",
            Some("[DEFAULT\nworkers = 2\n".to_string()),
            "glint-api.conf:1: `[DEFAULT` is not a section header",
        ),
        (
            "bad value",
            Some(util::base_config("workers = many")),
            "[DEFAULT] workers: `many` is not a decimal integer",
        ),
        ("missing file", None, "cannot read the config file"),
    ];
    for (name, text, expected) in cases {
        match &text {
            Some(text) => server.write_config_text(text),
            None => std::fs::remove_file(&server.config_path).unwrap(),
        }
        let verdict = server.reload();
        assert_eq!(verdict["outcome"], "failed", "{name}: {verdict}");
        let error = verdict["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{name}: {error:?} lacks {expected:?}"
        );
        let status = server.status();
        assert_eq!(status["generation"], 1, "{name}: {status}");
        assert_eq!(server.children(Some("serving")), children, "{name}");
        assert!(server.log().contains(expected), "{name}: not logged");
        assert_eq!(
            util::get(server.addr(), "/healthcheck").unwrap().status,
            200
        );
    }
    if let Some(line) = server.log().lines().find(|l| l.contains("workers: `many`")) {
        assert!(
            line.contains("glint-api.conf:"),
            "the error names file and line: {line}"
        );
    }
    server.write_config_text(&good);
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    assert_eq!(server.status()["reloads_failed"], 3);
}

/// A new generation whose children cannot start is drained; the old one keeps serving and the
/// reload is reported failed. The next reload succeeds.
#[test]
fn failed_start_of_the_new_generation_keeps_the_old_one() {
    let server = Server::start_env("workers = 2", &[("GLINT_FAULT_CHILD_START", "2")]);
    let children = server.children(None);
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    assert!(
        verdict["error"]
            .as_str()
            .is_some_and(|e| e.contains("could not start")
                && e.contains("GLINT_FAULT_CHILD_START: failing the start of child")),
        "{verdict}"
    );
    assert_eq!(server.status()["generation"], 1);
    assert_eq!(server.children(Some("serving")), children);
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    assert_eq!(verdict["generation"], 3);
}

/// Sends one keep-alive GET on `stream` and returns the pid of the child that holds the server
/// end of it (among `candidates`), with the connection still open.
fn served_by(stream: &mut TcpStream, candidates: &[i32]) -> Option<i32> {
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: glint\r\n\r\n")
        .expect("send");
    let response = read_response(&mut BufReader::new(&mut *stream), "GET")
        .expect("a response")
        .expect("a response before EOF");
    assert_eq!(response.status, 200);
    let inode = util::peer_socket(stream)?.inode;
    candidates
        .iter()
        .copied()
        .find(|&pid| util::fd_of_socket(pid, inode).is_some())
}

/// Issue 13, part 1: once one child of the new generation serves, the old generation takes no
/// new client (each meets the new config at once, not when the slowest new child is ready), and
/// still serves the keep-alive clients it holds. If the reload then fails, the old generation
/// takes new clients again. Held by `GLINT_FAULT_CHILD_HOLD`, the second new child is not ready
/// until the test says so.
#[test]
fn old_children_stop_accepting_once_a_new_child_serves_and_accept_again_if_the_reload_fails() {
    let hold = util::Hold::new();
    let server = Server::start_held("workers = 2", &hold, "2/2");
    let old = server.children(None);
    assert_eq!(old.len(), 2);
    let mut kept = server.connect();
    let kept_by = served_by(&mut kept, &old);
    assert!(kept_by.is_some(), "an old child serves the kept client");
    server.signal(libc::SIGHUP);
    // Each old child says when it acts on the word; the status file names the new child.
    util::wait_until("each old child to take no new clients", DEADLINE, || {
        let log = server.log();
        old.iter().all(|pid| {
            log.lines().any(|line| {
                line.contains(&format!("glint-api[{pid}]"))
                    && line.contains("taking no new clients: the new generation serves them")
            })
        })
    });
    let mut new = Vec::new();
    server.wait_for("the new child to serve", DEADLINE, |status| {
        new = status["children"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["generation"] == 2 && c["state"] == "serving")
            .filter_map(|c| c["pid"].as_i64().map(|pid| pid as i32))
            .collect();
        !new.is_empty()
    });
    assert_eq!(new.len(), 1, "one new child serves: {}", server.log());
    let everyone: Vec<i32> = old.iter().chain(&new).copied().collect();
    for _ in 0..20 {
        let mut stream = server.connect();
        assert_eq!(
            served_by(&mut stream, &everyone),
            Some(new[0]),
            "a new client while a new child serves goes to it"
        );
    }
    // The kept client is still served where it was.
    assert_eq!(served_by(&mut kept, &everyone), kept_by);

    hold.fail();
    server.wait_for("the reload's verdict", DEADLINE, |status| {
        status["reloads_failed"] == 1
    });
    util::wait_until("the new child to exit", DEADLINE, || {
        !util::process_alive(new[0])
    });
    for _ in 0..20 {
        let mut stream = server.connect();
        let by = served_by(&mut stream, &old);
        assert!(
            by.is_some(),
            "after the failed reload an old child serves a new client\n{}",
            server.log()
        );
    }
    assert_eq!(server.children(Some("serving")), old);
    let log = server.log();
    assert!(
        log.contains("generation 1 takes new clients again"),
        "{log}"
    );
    assert_eq!(
        log.matches("taking new clients again: the reload failed")
            .count(),
        2,
        "{log}"
    );
}

/// kill -9 of a child: the master logs it and a replacement serves.
#[test]
fn killed_child_is_replaced() {
    let server = Server::start("workers = 2");
    let children = server.children(None);
    // SAFETY: kill(2) on a child of the server this test started.
    unsafe {
        libc::kill(children[0], libc::SIGKILL);
    }
    server.wait_for("a replacement child", DEADLINE, |status| {
        let pids: Vec<i64> = status["children"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter(|c| c["state"] == "serving")
                    .filter_map(|c| c["pid"].as_i64())
                    .collect()
            })
            .unwrap_or_default();
        pids.len() == 2 && !pids.contains(&(children[0] as i64))
    });
    assert!(
        server.log().contains("was killed by SIGKILL"),
        "{}",
        server.log()
    );
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
}

/// SIGTERM right behind a SIGHUP: the master exits 0 and leaves no process behind.
#[test]
fn sigterm_during_a_reload_exits_cleanly_without_orphans() {
    let mut server = Server::start("workers = 2");
    let config = server.config_path.to_string_lossy().into_owned();
    server.signal(libc::SIGHUP);
    server.signal(libc::SIGTERM);
    let exit = server.wait_exit(DEADLINE);
    assert_eq!(exit, "exit status: 0", "{}", server.log());
    util::wait_until("every glint process of this test to exit", DEADLINE, || {
        processes_with_arg(&config).is_empty()
    });
}

/// The pids of live processes whose command line contains `needle`.
fn processes_with_arg(needle: &str) -> Vec<i32> {
    util::proc_pids()
        .into_iter()
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle) && util::process_alive(pid)
        })
        .collect()
}

/// The status file is valid JSON after every change and names what the docs say it names.
#[test]
fn status_file_describes_generations_and_the_last_reload() {
    let server = Server::start("workers = 1");
    let verdict = server.reload();
    let status: Value = server.status();
    for field in [
        "master_pid",
        "phase",
        "generation",
        "workers",
        "listen",
        "children",
        "draining",
        "reload_in_progress",
        "last_reload",
        "reloads_requested",
        "reloads_succeeded",
        "reloads_failed",
        "updated_at",
    ] {
        assert!(status.get(field).is_some(), "missing {field}: {status}");
    }
    assert_eq!(verdict["generation"], 2);
    assert!(verdict["finished_at"].is_string());
    assert!(reader_lines_are_whole(&server.log()));
}

/// Every log line starts with a timestamp: lines from several processes never interleave.
fn reader_lines_are_whole(log: &str) -> bool {
    log.split("--- stderr ---")
        .next()
        .unwrap_or("")
        .lines()
        .all(|line| line.len() > 27 && line.as_bytes()[4] == b'-' && line.contains(" glint-api["))
}

/// A port nothing listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// bind_port changed by SIGHUP while keep-alive clients work on the old port: the new port
/// serves, every request already sent on the old port is answered, and then the old port stops
/// taking connections.
#[test]
fn changed_bind_port_moves_the_listener_and_requests_in_flight_complete() {
    let server = Server::start("workers = 2");
    let old_addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, tally) = (stop.clone(), tally.clone());
        // Requests on connections opened before the move; the client stops reconnecting once
        // the old port is gone (refusals after the move are the documented behaviour).
        clients.push(thread::spawn(move || {
            let Ok(stream) = TcpStream::connect(old_addr) else {
                tally.fail("connect to the old port before the move".into());
                return;
            };
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            for _ in 0..MAX_REQUESTS_PER_CLIENT {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if writer.write_all(HEALTHCHECK).is_err() {
                    tally.closed_idle_after_send.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                match read_response(&mut reader, "GET") {
                    Ok(Some(response)) if response.status == 200 => {
                        tally.succeeded.fetch_add(1, Ordering::SeqCst);
                        if response.closes() {
                            return;
                        }
                    }
                    Ok(None) => {
                        tally.closed_idle_after_send.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    other => {
                        tally.fail(format!("on the old port: {other:?}"));
                        return;
                    }
                }
            }
        }));
    }
    util::wait_until("some load on the old port", DEADLINE, || {
        tally.succeeded.load(Ordering::SeqCst) > 200
    });
    let new_port = free_port();
    server.write_config(&format!("workers = 2\nbind_port = {new_port}"));
    server.reload_succeeds();
    let new_addr: SocketAddr = format!("127.0.0.1:{new_port}").parse().unwrap();
    assert_eq!(
        server.addr(),
        new_addr,
        "the status file lists the new address"
    );
    assert_eq!(util::get(new_addr, "/healthcheck").unwrap().status, 200);
    // With reload_handoff (the default) the connections made to the old port live on in the
    // new generation: some more requests on them, then the clients stop (joined before the
    // stop, they went on until MAX_REQUESTS_PER_CLIENT each, over a minute on 2 cores).
    let after_move = tally.succeeded.load(Ordering::SeqCst);
    util::wait_until(
        "more requests on the old port's connections after the move",
        DEADLINE,
        || tally.succeeded.load(Ordering::SeqCst) > after_move + 200,
    );
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let failures = tally.failures.lock().unwrap();
    assert_eq!(tally.failed.load(Ordering::SeqCst), 0, "{failures:#?}");
    let late = tally.closed_idle_after_send.load(Ordering::SeqCst);
    let logged = server
        .log()
        .matches("after we closed its idle keep-alive connection")
        .count() as u64;
    assert!(
        late <= logged,
        "{late} requests unanswered, {logged} late sends logged"
    );
    util::wait_until("the old port to refuse connections", DEADLINE, || {
        TcpStream::connect(old_addr).is_err()
    });
    assert!(
        server.log().contains("closing listener"),
        "{}",
        server.log()
    );
}

/// A new port that is already taken fails the whole reload: nothing changes, the old port keeps
/// serving, and the error says what to do.
#[test]
fn reload_to_a_taken_port_fails_and_the_old_port_keeps_serving() {
    let server = Server::start("workers = 1");
    let old_addr = server.addr();
    let children = server.children(None);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    server.write_config(&format!("workers = 1\nbind_port = {port}"));
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    let error = verdict["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot listen on the new address") && error.contains("free the port"),
        "{error}"
    );
    assert_eq!(server.addr(), old_addr);
    assert_eq!(server.children(Some("serving")), children);
    assert_eq!(util::get(old_addr, "/healthcheck").unwrap().status, 200);
}

/// log_file changed by SIGHUP (Glance's own reload test did this): the master and the new
/// generation write to the new file.
#[test]
fn changed_log_file_takes_effect_at_reload() {
    let server = Server::start("workers = 1");
    server.write_config("workers = 1\nlog_file = other.log\naccess_log_healthcheck = true");
    // The base config names glint-api.log; the last value of a repeated key wins.
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    let other = server.path("other.log");
    util::wait_until(
        "the new generation to log to the new file",
        DEADLINE,
        || {
            let _ = util::get(server.addr(), "/healthcheck");
            std::fs::read_to_string(&other).is_ok_and(|text| {
                text.contains("child gen 2") && text.contains("\"GET /healthcheck\" 200")
            })
        },
    );
    let new_text = std::fs::read_to_string(&other).unwrap();
    assert!(
        new_text.contains("master"),
        "the master logs there too:\n{new_text}"
    );
}

/// Issue 9, fault 8: `bind_host` moves between overlapping addresses on one port (127.0.0.1 to
/// the wildcard 0.0.0.0, then to `localhost`, which resolves to 127.0.0.1 again, then to the
/// dual-stack wildcard `::`) while clients
/// open a fresh connection per request to 127.0.0.1: every reload succeeds, and no connection is
/// refused or fails. Before the fix, the first reload failed with EADDRINUSE ("free the port").
#[test]
fn bind_host_moves_between_overlapping_addresses_on_one_port() {
    let port = free_port();
    let server = Server::start(&format!("bind_port = {port}"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, succeeded, failures) = (stop.clone(), succeeded.clone(), failures.clone());
            thread::spawn(move || {
                for _ in 0..MAX_REQUESTS_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match util::raw_exchange(addr, HEALTHCHECK_CLOSE) {
                        Ok(Some(response)) if response.status == 200 => {
                            succeeded.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    util::wait_until("some load", DEADLINE, || {
        succeeded.load(Ordering::SeqCst) > 100
    });
    for host in ["0.0.0.0", "localhost", "127.0.0.1", "::"] {
        server.write_config(&format!("bind_port = {port}\nbind_host = {host}"));
        let verdict = server.reload();
        assert_eq!(
            verdict["outcome"],
            "succeeded",
            "to {host}: {verdict}\n{}",
            server.log()
        );
        let before = succeeded.load(Ordering::SeqCst);
        util::wait_until("requests served after the move", DEADLINE, || {
            succeeded.load(Ordering::SeqCst) > before + 100
        });
        if host == "127.0.0.1" {
            // `localhost` and `127.0.0.1` are one listener: that move bound nothing new.
            assert_eq!(server.status()["listen"][0], format!("127.0.0.1:{port}"));
        }
    }
    // `::` takes IPv4 too (dual stack), so it was bound beside 127.0.0.1 and took it over.
    assert_eq!(server.status()["listen"][0], format!("[::]:{port}"));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        succeeded.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)]
    );
}

/// Review of issue 9's fault 8 fix: narrowing `bind_host` from the wildcard to 127.0.0.1 binds
/// the specific socket, which takes 127.0.0.1's clients at once, before the new generation
/// serves. When that reload fails, the master passes what is queued on the new socket to the
/// serving generation before closing it, so those clients are answered, not reset.
///
/// Deterministic: generation 2's children are held in their start (`GLINT_FAULT_CHILD_HOLD`,
/// never released) while five requests queue on the new socket (nobody accepts there); then the
/// test kills them, which fails the reload, and every one of the five gets its answer from
/// generation 1.
#[test]
fn a_failed_narrowing_of_bind_host_resets_no_queued_connection() {
    let port = free_port();
    let hold = util::Hold::new();
    let server = Server::start_held(
        &format!("bind_port = {port}\nbind_host = 0.0.0.0"),
        &hold,
        "2",
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    server.write_config(&format!("bind_port = {port}\nbind_host = 127.0.0.1"));
    server.signal(libc::SIGHUP);
    server.wait_for(
        "generation 2's children, held in their start",
        DEADLINE,
        |status| {
            status["children"].as_array().is_some_and(|children| {
                children
                    .iter()
                    .filter(|c| c["generation"] == 2 && c["state"] == "starting")
                    .count()
                    == 2
            })
        },
    );
    let mut streams: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.write_all(HEALTHCHECK_CLOSE).unwrap();
            stream
        })
        .collect();
    for pid in server.children(Some("starting")) {
        // SAFETY: kill(2) on a child of the server this test started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    server.wait_for("the reload to fail", DEADLINE, |status| {
        status["last_reload"]["outcome"] == "failed"
    });
    for (index, stream) in streams.iter_mut().enumerate() {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut reader = BufReader::new(stream);
        let response = read_response(&mut reader, "GET");
        assert!(
            matches!(&response, Ok(Some(r)) if r.status == 200),
            "request {index} queued on the failed generation's socket: {response:?}\n{}",
            server.log()
        );
    }
    assert!(
        server
            .log()
            .contains("queued connection(s) passed to the current generation"),
        "{}",
        server.log()
    );
}
