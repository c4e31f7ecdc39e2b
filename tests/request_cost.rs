//! What a keep-alive request costs a child in system calls (issue 13, part 3), counted by strace
//! on the real binary: the calls the per-request path used to make and no longer does.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::util::{self, Server, DEADLINE};

/// Requests counted; a multiple of the 64 request ids one getrandom(2) pays for.
const REQUESTS: usize = 256;

/// Whether every thread of `pid` has a tracer attached (strace attaches them one by one).
fn all_threads_traced(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("TracerPid:"))
            .is_some_and(|tracer| tracer.trim() != "0")
    })
}

/// 256 `GET /v2/images/{id}` on one keep-alive connection to a child with one worker thread
/// cost no ioctl(2) (the socket is never switched between blocking and non-blocking mode for a
/// request without a body: that was two per request), at most 5 getrandom(2) (request ids
/// take 64 ids' worth of random bytes at a time, plus one fetch for the ids left from before
/// the count: that was one per request), and no fcntl(2) in the thread that answers them (the
/// image is answered from the child's memory while the registry is unchanged: SQLite's read
/// lock was two per request).
#[test]
fn keep_alive_gets_switch_no_socket_mode_fetch_random_bytes_once_per_64_and_read_no_database() {
    let server = Server::start("workers = 1\nworker_threads = 1");
    let id = util::create_image(server.addr());
    let children = server.children(None);
    assert_eq!(children.len(), 1, "{}", server.log());
    let request = format!("GET /v2/images/{id} HTTP/1.1\r\nHost: x\r\n\r\n");
    let stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut reader = BufReader::new(stream);
    let mut get = |what: &str| {
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("send");
        let response = util::read_response(&mut reader, "GET")
            .expect("a response")
            .unwrap_or_else(|| panic!("{what}: the connection closed"));
        assert_eq!(response.status, 200, "{what}: {response:?}");
    };
    // Accepted and served once before the count.
    get("the first request");

    let trace = server.path("strace.out");
    let mut strace = Command::new("strace")
        .args([
            "-qq",
            "-f",
            "-e",
            "trace=ioctl,getrandom,fcntl,writev",
            "-o",
        ])
        .arg(&trace)
        .args(["-p", &children[0].to_string()])
        .stdin(Stdio::null())
        .spawn()
        .expect("run strace (apt-get install strace)");
    util::wait_until("strace to attach to the child's threads", DEADLINE, || {
        all_threads_traced(children[0])
    });
    for n in 0..REQUESTS {
        get(&format!("request {n}"));
    }
    // SIGINT: strace detaches and writes out what it has.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("stop strace");
    strace.wait().expect("strace ends");
    let calls = std::fs::read_to_string(&trace).expect("strace's output");
    let count = |name: &str| {
        calls
            .lines()
            .filter(|line| line.contains(&format!("{name}(")))
            .count()
    };
    assert_eq!(count("ioctl"), 0, "{calls}");
    assert!(count("getrandom") <= REQUESTS / 64 + 1, "{calls}");
    // The threads that sent the responses (one writev each); the maintenance thread may read
    // the registry meanwhile, so its calls do not count.
    let tid = |line: &str| {
        line.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let answering: std::collections::HashSet<String> = calls
        .lines()
        .filter(|line| line.contains("writev("))
        .map(tid)
        .collect();
    assert_eq!(count("writev"), REQUESTS, "{calls}");
    let database_locks = calls
        .lines()
        .filter(|line| line.contains("fcntl(") && answering.contains(&tid(line)))
        .count();
    assert_eq!(database_locks, 0, "{calls}");
}
