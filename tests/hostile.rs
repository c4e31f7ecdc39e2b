//! Hostile clients against one child: slowloris, connection floods, endless and oversized
//! bodies, header bombs, pipelining, smuggling, hostile paths and JSON.
//!
//! Every test watches the child that serves it (`workers = 1`): after each attack a fresh client
//! must get `GET /healthcheck` answered within [`FRESH_CLIENT`], the child's thread count must be
//! at most what it was at start with every worker it may start (`Threads` in /proc/PID/status:
//! no thread per connection), and its peak
//! resident memory (`VmHWM`) must stay within the child bound docs/RELIABILITY.md states
//! ("Memory of a child", computed by [`crate::bounds::child_memory_bound_kib`]): its idle
//! `VmRSS` + 10,048 KiB + `worker_threads` x 5 MiB, 30,528 KiB over idle with the harness's 4
//! worker threads. A buffered endless body or header section, or a buffer kept per slow
//! connection, would pass it.

use std::fs;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, read_response, show, Response, Server};

/// How fast a fresh client must be served while an attack is under way.
pub const FRESH_CLIENT: Duration = Duration::from_secs(1);

/// How long a test waits for an answer before calling the server stuck.
const ANSWER: Duration = Duration::from_secs(10);

/// A field of /proc/PID/status as a number (the first word after the colon).
pub fn proc_status(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("/proc/{pid}/status: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// How many descriptors a process holds.
pub fn open_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count())
}

/// Raises this test process's soft RLIMIT_NOFILE to its hard limit (the server does the same
/// for itself at start).
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `GET /healthcheck` on a fresh connection answered 200 within [`FRESH_CLIENT`].
pub fn assert_fresh_client_served(server: &Server, during: &str) {
    let started = Instant::now();
    let result = (|| {
        let mut stream = TcpStream::connect(server.addr())?;
        stream.set_read_timeout(Some(FRESH_CLIENT))?;
        stream.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        read_response(&mut BufReader::new(stream), "GET")
    })();
    let elapsed = started.elapsed();
    assert!(
        matches!(&result, Ok(Some(r)) if r.status == 200) && elapsed < FRESH_CLIENT,
        "during {during}: a fresh client got {result:?} after {elapsed:?} (bound {FRESH_CLIENT:?})\n\
         --- log ---\n{}",
        server.log()
    );
}

/// The names of child `pid`'s threads.
fn thread_names(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Child `pid`'s threads: how many, and how many of them are workers, which it starts as
/// connections need them, up to `worker_threads` (src/serve/pool.rs). From one listing.
///
/// A new thread names itself once it runs; until then it has its creator's name. `pool-start`
/// creates nothing but workers, so a second thread named `pool-start` is a worker not yet
/// named (seen in CI on a busy machine, in two listings one after the other).
fn threads_and_workers(pid: i32) -> (u64, u64) {
    let names = thread_names(pid);
    let named = names
        .iter()
        .filter(|name| name.starts_with("worker-"))
        .count();
    let unnamed = names
        .iter()
        .filter(|name| *name == "pool-start")
        .count()
        .saturating_sub(1);
    (names.len() as u64, (named + unnamed) as u64)
}

/// `worker_threads` as the server's config file sets it (the harness's base config says 4; a
/// test's own line comes after it, and the last value of a key wins).
fn configured_worker_threads(server: &Server) -> u64 {
    let config = fs::read_to_string(&server.config_path).expect("read the config");
    config
        .lines()
        .rev()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "worker_threads").then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no worker_threads in the config:\n{config}"))
}

/// The one child of a `workers = 1` server, with its thread count and memory at start.
pub struct Watch {
    pub pid: i32,
    /// The child's threads at start but its workers, which it starts as connections need them
    /// (`pool-start` among them, which ends once they all run).
    other_threads: u64,
    idle_kib: u64,
    worker_threads: u64,
}

impl Watch {
    pub fn new(server: &Server) -> Watch {
        let children = server.children(Some("serving"));
        assert_eq!(
            children.len(),
            1,
            "expected one serving child: {children:?}"
        );
        let pid = children[0];
        let worker_threads = configured_worker_threads(server);
        Watch {
            pid,
            other_threads: {
                let (threads, workers) = threads_and_workers(pid);
                threads - workers
            },
            idle_kib: proc_status(pid, "VmRSS"),
            worker_threads,
        }
    }

    /// The child's memory bound (docs/RELIABILITY.md, "Memory of a child").
    pub fn bound_kib(&self) -> u64 {
        crate::bounds::child_memory_bound_kib(self.idle_kib, self.worker_threads)
    }

    /// A fresh client is served in time; threads unchanged; the child's peak resident memory
    /// since it started (`VmHWM`, so a peak between two checks counts) within its bound.
    pub fn check(&self, server: &Server, during: &str) {
        assert_fresh_client_served(server, during);
        // No thread per connection: no more threads but workers than at start (`pool-start`
        // ends once every worker runs), and at most `worker_threads` workers.
        let (threads, workers) = threads_and_workers(self.pid);
        assert!(
            workers <= self.worker_threads && threads - workers <= self.other_threads,
            "during {during}: the child runs {threads} threads, {workers} of them workers, \
             against {} others at start and {} workers at most: {:?}",
            self.other_threads,
            self.worker_threads,
            thread_names(self.pid)
        );
        let peak = proc_status(self.pid, "VmHWM");
        let bound = self.bound_kib();
        assert!(
            peak <= bound,
            "during {during}: the child's peak VmHWM {peak} KiB is over its bound {bound} KiB \
             (idle VmRSS {} + SQLite {} + {} worker threads x {} KiB)",
            self.idle_kib,
            crate::bounds::SQLITE_KIB,
            self.worker_threads,
            crate::bounds::PER_WORKER_KIB
        );
        eprintln!(
            "{during}: child peak {peak} KiB, {} over idle {}, bound {bound}",
            peak - self.idle_kib.min(peak),
            self.idle_kib
        );
    }
}

/// How much a paced sender writes at a time after a head: 16 KiB of body (64 pieces per MiB).
const BODY_PIECE: u64 = 16 * 1024;

/// How much a paced sender writes at a time of a head: the acceptor's read size for heads
/// (`HEAD_READ_CHUNK` in src/http/connection.rs).
const HEAD_PIECE: u64 = 4 * 1024;

/// The server's head limits with the default `max_header_line` (16,384; src/http/head.rs
/// `Limits::new`): a line of more than 16,384 bytes, a head of 65,536 bytes without its end
/// (`MIN_HEAD_BYTES`, since 2 x 16,384 is less), a 101st field (`MAX_HEADERS`).
const MAX_HEADER_LINE: u64 = 16_384;
const MAX_HEAD_BYTES: u64 = 65_536;
const MAX_HEADERS: usize = 100;

/// The largest JSON body (`MAX_JSON_BODY` in src/api/images.rs).
const MAX_JSON_BODY: u64 = 1024 * 1024;

/// What a paced send saw: the answer, and the length of each piece written, in order.
struct Paced {
    response: Option<Response>,
    written: Vec<u64>,
}

impl Paced {
    fn sent(&self) -> u64 {
        self.written.iter().sum()
    }

    /// The body bytes written, when the first piece is the head and every later one carries
    /// `BODY_PIECE` bytes of body (see [`endless_body`]).
    fn body_sent(&self) -> u64 {
        self.written.len().saturating_sub(1) as u64 * BODY_PIECE
    }
}

/// Sends the pieces `next` gives (it gets the number of pieces written so far; `None` ends the
/// request) on a new connection, in lock step with the server, then reads the answer.
///
/// A piece is written only once the server's process has read every byte before it (the
/// server's socket has received all we wrote and holds none of it unread: `tcpi_bytes_received`
/// and `idiag_rqueue` by a sock_diag lookup, [`util::peer_socket`]) and no answer has reached
/// us. With `reader`, the pid of the serving child, it also waits until a thread of that child
/// is blocked receiving from this connection ([`util::blocked_receiving`]): the server wants
/// more. That is how bodies are paced: a worker that refuses a body reads and drops what has
/// already arrived of it before answering (`discard_arrived` in src/http/serve.rs), so a piece
/// sent while it decides would be counted as read. Heads go without it (the acceptor reads
/// them, waiting in poll(2) on every connection at once).
///
/// So when the answer comes, the bytes sent are what the server read before it refused, plus
/// at most the rest of the piece in which it decided, and (without `reader`, or if a sample
/// catches a thread inside a non-blocking read) one more piece sent while the answer was on
/// its way. That is how these tests measure how much was read before a refusal, without
/// counting what the kernel's socket buffers hold (megabytes on loopback) or what a closing
/// connection discards after the answer. (The child's /proc/PID/io `rchar` would not do: it
/// counts read(2), and sockets are read with recv(2).)
fn send_in_lock_step(
    addr: SocketAddr,
    reader: Option<i32>,
    mut next: impl FnMut(usize) -> Option<Vec<u8>>,
) -> Paced {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    let mut written = Vec::new();
    let mut server_fd = None;
    'sending: while !util::readable_now(&stream) {
        let Some(piece) = next(written.len()) else {
            break;
        };
        if stream.write_all(&piece).is_err() {
            break;
        }
        written.push(piece.len() as u64);
        let total: u64 = written.iter().sum();
        let deadline = Instant::now() + ANSWER;
        loop {
            if util::readable_now(&stream) {
                break 'sending;
            }
            match util::peer_socket(&stream) {
                // The server closed its socket: its answer (or the close) is readable next.
                None => break,
                Some(peer) if peer.received >= total && peer.unread == 0 => {
                    let Some(pid) = reader else { break };
                    if server_fd.is_none() {
                        server_fd = util::fd_of_socket(pid, peer.inode);
                    }
                    if server_fd.is_some_and(|fd| util::blocked_receiving(pid, fd)) {
                        break;
                    }
                }
                Some(_) => {}
            }
            if Instant::now() >= deadline {
                // The server neither reads nor answers: the read below says what it did.
                break 'sending;
            }
            // Polling the server's socket and threads, a condition with the deadline above.
            thread::sleep(Duration::from_millis(1));
        }
    }
    let response = read_response(&mut BufReader::new(&mut stream), "POST");
    Paced {
        response: response.ok().flatten(),
        written,
    }
}

/// `n` rounded up to a whole number of `piece`s.
fn round_up(n: u64, piece: u64) -> u64 {
    n.div_ceil(piece) * piece
}

/// Asserts that what a paced send put on the wire (`sent`) shows the server refused once it had
/// `refused_at` bytes and not before: at least `refused_at`, at most the end of the piece that
/// held byte `refused_at` plus one piece (see [`send_in_lock_step`]).
fn assert_refused_at(what: &str, sent: u64, refused_at: u64, piece: u64) {
    let most = round_up(refused_at, piece) + piece;
    assert!(
        (refused_at..=most).contains(&sent),
        "{what}: {sent} bytes sent when the answer came; the server can refuse once it has \
         {refused_at} and should have by {most} ({piece}-byte pieces)"
    );
    eprintln!(
        "{what}: refused after {sent} bytes sent (limit crossed at {refused_at}, bound {most})"
    );
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------------
// Slow and idle connections.
// ---------------------------------------------------------------------------------------------

/// 1,000 connections each sending its head one byte per round (every 100 ms): the child holds
/// them all in its poll set without a thread each, a fresh client is served within a second, and
/// every one of them is answered 408 and closed at `client_header_timeout`: not before (the
/// kernel's arrival stamp of each 408 is at least 4 s after the test began to connect it, so
/// after the server accepted it) and not much after (within 3 s more, the poll slack).
#[test]
fn slowloris_1000_trickling_connections_cost_no_threads_and_are_cut_at_the_header_deadline() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(4);
    raise_fd_limit();
    let server = Server::start("workers = 1\nworker_threads = 4\nclient_header_timeout = 4");
    let watch = Watch::new(&server);
    let fds_before = open_fds(watch.pid);
    let started = Instant::now();
    let mut streams = Vec::new();
    for i in 0..1000 {
        // Before connect(2): the server can only accept, and start the deadline, after this.
        let connecting = std::time::SystemTime::now();
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        util::stamp_arrivals(&stream);
        stream
            .write_all(format!("GET /healthcheck?{i} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes())
            .unwrap();
        streams.push((connecting, stream));
    }
    let connected = started.elapsed();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        for (_, stream) in &mut streams {
            // Pacing the trickle, not waiting for a condition.
            let _ = stream.write_all(b"a");
        }
        rounds += 1;
        if rounds % 8 == 0 {
            watch.check(&server, "1,000 trickling connections");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let held = open_fds(watch.pid) - fds_before;
    assert!(
        held >= 1000,
        "the child holds only {held} more descriptors: the slow connections were not accepted"
    );
    let (mut answered_408, mut other) = (0, Vec::new());
    let (mut earliest, mut latest) = (Duration::MAX, Duration::ZERO);
    for (i, (connecting, stream)) in streams.iter_mut().enumerate() {
        stream.set_read_timeout(Some(ANSWER)).unwrap();
        // When the answer arrived, by the kernel's stamp: however late this loop reads it.
        let arrived = util::first_arrival(stream)
            .map(|at| at.duration_since(*connecting).unwrap_or(Duration::ZERO));
        match (
            arrived,
            read_response(&mut BufReader::new(&mut *stream), "GET"),
        ) {
            (Ok(after), Ok(Some(response))) if response.status == 408 && response.closes() => {
                answered_408 += 1;
                earliest = earliest.min(after);
                latest = latest.max(after);
                assert!(
                    after >= HEADER_TIMEOUT,
                    "connection {i} was cut {after:?} after it connected, before the {HEADER_TIMEOUT:?} header deadline"
                );
                assert!(
                    after < HEADER_TIMEOUT + Duration::from_secs(3),
                    "connection {i} was cut only {after:?} after it connected"
                );
            }
            result => other.push(format!("{result:?}")),
        }
    }
    assert_eq!(
        answered_408,
        1000,
        "not 408: {:?}",
        &other[..other.len().min(5)]
    );
    drop(streams);
    watch.check(&server, "after the slowloris connections were cut");
    println!(
        "slowloris: 1000 connections in {connected:?}, {rounds} trickle rounds, all cut with 408 \
         {earliest:?} to {latest:?} after each connected; child VmRSS {} KiB, {} threads",
        proc_status(watch.pid, "VmRSS"),
        proc_status(watch.pid, "Threads")
    );
}

/// 2,000 keep-alive connections, each with one API request answered (`GET /v2/images`, so kept
/// for `client_socket_timeout` under `noauth`) and then silent, park in one child's acceptor
/// (its epoll set and deadline index, src/serve/waiting.rs). While they are held, a request on
/// each of the last 20 of them is answered on the same connection, and a fresh client is
/// served; then every one of the 2,000 is closed FIN-first (read returns 0, no reset) by the
/// idle timeout: the 20 too, after the second request restarted their wait. None is lost or
/// kept past its deadline.
#[test]
fn two_thousand_idle_keepalive_connections_are_served_and_each_closed_at_its_idle_timeout() {
    const IDLE: usize = 2000;
    raise_fd_limit();
    let server = Server::start(
        "workers = 1\nworker_threads = 4\nclient_socket_timeout = 15\n\
         max_client_connections = 4000",
    );
    let watch = Watch::new(&server);
    const REQUEST: &[u8] = b"GET /v2/images HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        stream.set_read_timeout(Some(ANSWER)).unwrap();
        stream.write_all(REQUEST).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        idle.push((stream, reader));
    }
    for (i, (_, reader)) in idle.iter_mut().enumerate() {
        let response = read_response(reader, "GET");
        assert!(
            matches!(&response, Ok(Some(r)) if r.status == 200 && !r.closes()),
            "connection {i}: {response:?}"
        );
    }
    for (i, (stream, reader)) in idle[IDLE - 20..].iter_mut().enumerate() {
        stream.write_all(REQUEST).unwrap();
        let response = read_response(reader, "GET");
        assert!(
            matches!(&response, Ok(Some(r)) if r.status == 200 && !r.closes()),
            "parked connection {} asked again: {response:?}",
            IDLE - 20 + i
        );
    }
    watch.check(&server, "2,000 idle keep-alive connections parked");
    let (mut n_fin, mut other) = (0, Vec::new());
    // Past the 15 s timeout with room to spare: the wait for the FINs, not a measure of them.
    let until = Instant::now() + Duration::from_secs(60);
    for (i, (_, reader)) in idle.iter_mut().enumerate() {
        let left = until.saturating_duration_since(Instant::now());
        reader
            .get_ref()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut byte = [0u8; 1];
        match reader.read(&mut byte) {
            Ok(0) => n_fin += 1,
            result => other.push(format!("connection {i}: {result:?}")),
        }
    }
    assert_eq!(
        n_fin,
        IDLE,
        "not closed FIN-first at the idle timeout: {:?}",
        &other[..other.len().min(5)]
    );
}

/// `client_header_timeout` is a total deadline for the head, not a per-byte one: a client that
/// keeps sending one header byte every 100 ms is answered 408 at the deadline: not before 2 s
/// after it began to connect (the kernel's arrival stamp of the 408), by 3.5 s, and while it was
/// still trickling (a deadline reset by each byte would never fire during the 10 s trickle).
#[test]
fn header_trickle_of_one_byte_per_100_ms_is_cut_at_the_total_header_deadline() {
    let server = Server::start("workers = 1\nclient_header_timeout = 2");
    let connecting = std::time::SystemTime::now();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    util::stamp_arrivals(&stream);
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Trickle: ")
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let trickler = thread::spawn(move || {
        let mut sent = 0;
        while sent < 100 && writer.write_all(b"a").is_ok() {
            sent += 1;
            // Pacing the trickle, not waiting for a condition.
            thread::sleep(Duration::from_millis(100));
        }
        sent
    });
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    let arrived = util::first_arrival(&stream)
        .map(|at| at.duration_since(connecting).unwrap_or(Duration::ZERO));
    let response = read_response(&mut BufReader::new(stream.try_clone().unwrap()), "GET");
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = trickler.join().unwrap();
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 408 && r.closes()),
        "{response:?}"
    );
    let arrived = arrived.expect("the 408's arrival stamp");
    assert!(
        arrived >= Duration::from_secs(2) && arrived < Duration::from_millis(3500),
        "cut {arrived:?} after connecting, having trickled {sent} bytes"
    );
    assert!(
        sent < 100,
        "the trickle of {sent} bytes ran to its end before the cut"
    );
    eprintln!("trickle cut {arrived:?} after connecting, after {sent} bytes");
}

/// On a keep-alive connection, a later request's head is due `client_header_timeout` after its
/// first byte, not after the previous answer: the connection idles 2.5 s (longer than the 2 s
/// header timeout; `client_socket_timeout` is 60 s), then sends part of a head and stalls. The
/// 408 arrives (by its kernel stamp) no earlier than 2 s after that first byte was sent, and
/// before 3.5 s. (Its first request lists images, not `/healthcheck`: only a connection whose
/// credentials the API accepted, under `noauth` any request to a route that is not open, waits
/// `client_socket_timeout` between requests; one that called only open routes waits
/// `client_header_timeout` and would be closed while it idles.)
#[test]
fn a_later_request_s_head_is_due_client_header_timeout_after_its_first_byte() {
    let server =
        Server::start("workers = 1\nclient_header_timeout = 2\nclient_socket_timeout = 60");
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    util::stamp_arrivals(&stream);
    stream
        .write_all(b"GET /v2/images HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_response(&mut BufReader::new(&mut stream), "GET")
        .unwrap()
        .unwrap();
    assert!(first.status == 200 && !first.closes(), "{first:?}");
    // The scenario: an idle keep-alive connection, longer than the header timeout.
    thread::sleep(Duration::from_millis(2500));
    let sending = std::time::SystemTime::now();
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHo")
        .unwrap();
    let arrived =
        util::first_arrival(&stream).map(|at| at.duration_since(sending).unwrap_or(Duration::ZERO));
    let response = read_response(&mut BufReader::new(&mut stream), "GET");
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 408 && r.closes()),
        "{response:?}"
    );
    let arrived = arrived.expect("the 408's arrival stamp");
    eprintln!("408 {arrived:?} after the first byte of the second head");
    assert!(
        arrived >= Duration::from_secs(2) && arrived < Duration::from_millis(3500),
        "408 {arrived:?} after the first byte of the second head (client_header_timeout = 2)"
    );
}

/// `client_body_timeout` bounds each stall in a body, not the whole body: an upload that sends
/// a byte every 500 ms for 3 s (longer than the 2 s timeout, each stall shorter) is not cut,
/// and when it then stalls, its answer (an error and a close) comes no earlier than 2 s after
/// its last byte was sent (by the answer's kernel stamp) and before 3.5 s; the image goes back
/// to `queued` and no data file is left.
#[test]
fn an_upload_is_cut_after_a_stall_of_client_body_timeout_and_not_for_its_length() {
    let server = Server::start("workers = 1\nclient_body_timeout = 2");
    let watch = Watch::new(&server);
    let id = util::create_image(server.addr());
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    util::stamp_arrivals(&stream);
    stream
        .write_all(
            format!(
                "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let started = Instant::now();
    let mut last_sent = std::time::SystemTime::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(
            !util::readable_now(&stream),
            "answered after {:?} while the body kept coming every 500 ms",
            started.elapsed()
        );
        last_sent = std::time::SystemTime::now();
        stream.write_all(b"x").unwrap();
        // Pacing the trickle, not waiting for a condition.
        thread::sleep(Duration::from_millis(500));
    }
    let arrived = util::first_arrival(&stream)
        .map(|at| at.duration_since(last_sent).unwrap_or(Duration::ZERO));
    let response = read_response(&mut BufReader::new(&mut stream), "PUT");
    eprintln!(
        "stalled upload: {:?} {arrived:?} after its last byte",
        response
            .as_ref()
            .map(|r| r.as_ref().map(|r| (r.status, r.text())))
    );
    // 408, as a JSON body past its deadline gets, naming the option.
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 408
            && r.text().contains("client_body_timeout") && r.closes()),
        "{response:?}"
    );
    let arrived = arrived.expect("the answer's arrival stamp");
    assert!(
        arrived >= Duration::from_secs(2) && arrived < Duration::from_millis(3500),
        "answered {arrived:?} after the last byte (client_body_timeout = 2)"
    );
    let image = util::get(server.addr(), &format!("/v2/images/{id}")).unwrap();
    let image: Value = serde_json::from_slice(&image.body).unwrap();
    assert_eq!(image["status"], "queued", "{image}");
    assert_eq!(
        files_under(&server.path("images")),
        Vec::<String>::new(),
        "the stalled upload left a file"
    );
    watch.check(&server, "a stalled upload");
}

/// Silent connections beyond `max_client_connections` wait in the listen backlog instead of
/// costing the child a descriptor each; when they go, the waiting client is served. 2,000 silent
/// connections under the default limit cost memory within the bound and starve nobody.
#[test]
fn idle_connection_floods_are_bounded_by_max_client_connections() {
    raise_fd_limit();
    let server = Server::start("workers = 1\nmax_client_connections = 100");
    let watch = Watch::new(&server);
    let fds_idle = open_fds(watch.pid);
    let flood: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    util::wait_until("the child to accept 100 connections", ANSWER, || {
        open_fds(watch.pid) >= fds_idle + 100
    });
    let fds_full = open_fds(watch.pid);
    let mut waiting = TcpStream::connect(server.addr()).unwrap();
    waiting
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = waiting.read(&mut byte);
    assert!(
        early.is_err(),
        "a client past max_client_connections was answered at once: {early:?}"
    );
    assert!(
        open_fds(watch.pid) <= fds_full,
        "the child accepted past its limit"
    );
    drop(flood);
    waiting.set_read_timeout(Some(FRESH_CLIENT)).unwrap();
    let started = Instant::now();
    let response = read_response(&mut BufReader::new(waiting), "GET");
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 200),
        "after the flood closed: {response:?} after {:?}",
        started.elapsed()
    );
    watch.check(&server, "after the flood over the limit closed");

    let server = Server::start("workers = 1");
    let watch = Watch::new(&server);
    let flood: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    util::wait_until("the child to accept 2,000 connections", ANSWER, || {
        open_fds(watch.pid) >= 2000
    });
    watch.check(&server, "2,000 idle connections");
    drop(flood);
}

// ---------------------------------------------------------------------------------------------
// Bodies.
// ---------------------------------------------------------------------------------------------

/// The pieces of a request whose body is endless: piece 0 is `head`, each later one
/// `BODY_PIECE` bytes of body (as one chunk when `chunked`, raw otherwise), until `most` body
/// bytes were written (far past any limit here: a server still reading then fails the test).
fn endless_body(head: Vec<u8>, chunked: bool, most: u64) -> impl FnMut(usize) -> Option<Vec<u8>> {
    let mut piece = Vec::new();
    if chunked {
        piece.extend_from_slice(format!("{BODY_PIECE:x}\r\n").as_bytes());
    }
    piece.extend(std::iter::repeat_n(b' ', BODY_PIECE as usize));
    if chunked {
        piece.extend_from_slice(b"\r\n");
    }
    move |index| match index {
        0 => Some(head.clone()),
        _ => (index as u64 - 1 < most / BODY_PIECE).then(|| piece.clone()),
    }
}

/// An endless chunked JSON body to image create is cut with 413 once it passes 1 MiB; an
/// endless chunked upload and one chunk that claims 2^60 bytes once they pass `image_size_cap`;
/// a declared length over the cap before any of its body is read. Each body is sent in lock
/// step with the server's reads ([`send_in_lock_step`]), so the body bytes sent when the 413
/// comes are what the server read, within one piece: asserted between the limit and the limit's
/// piece plus one (1 MiB + 1 to 1 MiB + 32 KiB here). The image stays `queued` with no data file,
/// and memory stays within the bound.
#[test]
fn endless_and_oversized_bodies_get_413_with_bounded_memory() {
    let cap = 1024 * 1024;
    let server = Server::start(&format!("workers = 1\nimage_size_cap = {cap}"));
    let watch = Watch::new(&server);
    let addr = server.addr();

    let head = b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    let paced = send_in_lock_step(
        addr,
        Some(watch.pid),
        endless_body(head, true, 8 * MAX_JSON_BODY),
    );
    assert_eq!(
        paced.response.as_ref().map(|r| r.status),
        Some(413),
        "{:?}",
        paced.response
    );
    // The body is decoded bytes: one byte past 1 MiB is the first the server can refuse.
    assert_refused_at(
        "an endless chunked JSON body",
        paced.body_sent(),
        MAX_JSON_BODY + 1,
        BODY_PIECE,
    );
    watch.check(&server, "an endless chunked JSON body");

    let id = util::create_image(addr);
    let upload = |framing: &str| {
        format!(
            "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n"
        )
        .into_bytes()
    };
    // Each case: its head, whether its body pieces are chunks, and after how many body bytes
    // the server can know to refuse it.
    let cases: Vec<(&str, Vec<u8>, bool, u64)> = vec![
        (
            "endless chunked upload",
            upload("Transfer-Encoding: chunked"),
            true,
            cap + 1,
        ),
        (
            "one chunk claiming 2^60 bytes",
            {
                let mut head = upload("Transfer-Encoding: chunked");
                head.extend_from_slice(b"1000000000000000\r\n");
                head
            },
            false,
            cap + 1,
        ),
        (
            "Content-Length one over image_size_cap",
            upload(&format!("Content-Length: {}", cap + 1)),
            false,
            0,
        ),
        (
            "Content-Length of 2^63-1",
            upload(&format!("Content-Length: {}", i64::MAX)),
            false,
            0,
        ),
    ];
    for (name, head, chunked, refused_at) in cases {
        let paced = send_in_lock_step(addr, Some(watch.pid), endless_body(head, chunked, 8 * cap));
        assert_eq!(
            paced.response.as_ref().map(|r| r.status),
            Some(413),
            "{name}: {:?}\n{}",
            paced.response,
            server.log()
        );
        assert_refused_at(name, paced.body_sent(), refused_at, BODY_PIECE);
        let image = util::get(addr, &format!("/v2/images/{id}")).unwrap();
        let image: Value = serde_json::from_slice(&image.body).unwrap();
        assert_eq!(image["status"], "queued", "{name}: {image}");
        assert_eq!(
            files_under(&server.path("images")),
            Vec::<String>::new(),
            "{name}: a data file was left"
        );
        watch.check(&server, name);
    }
}

// ---------------------------------------------------------------------------------------------
// Heads.
// ---------------------------------------------------------------------------------------------

/// Heads built to exhaust memory: each is refused with 431 (or 414 for the request line) once
/// it crosses its limit (a 64 KiB head, a 16,384-byte line, 100 fields), not after buffering
/// the whole. Sent 4 KiB at a time in lock step with the server's reads
/// ([`send_in_lock_step`]): the bytes sent when the answer comes lie between the byte that
/// crossed the limit and the end of its piece plus one more (8 KiB past it at most).
#[test]
fn header_bombs_get_431_with_bounded_memory() {
    let server = Server::start("workers = 1");
    let watch = Watch::new(&server);
    let start = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n".to_vec();
    let line = "v".repeat(16_000);
    let mut many_long = start.clone();
    for i in 0..99 {
        many_long.extend_from_slice(format!("X-{i}: {line}\r\n").as_bytes());
    }
    many_long.extend_from_slice(b"\r\n");
    let mut endless_line = start.clone();
    endless_line.extend_from_slice(b"X-Endless: ");
    endless_line.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    // `Host` is the first field; the 101st, the first one too many, is `X99`.
    let mut endless_headers = start.clone();
    let mut field_101_at = 0;
    for i in 0..100_000 {
        if i == MAX_HEADERS - 1 {
            field_101_at = endless_headers.len() as u64;
        }
        endless_headers.extend_from_slice(format!("X{i}: v\r\n").as_bytes());
    }
    let mut long_name = start.clone();
    long_name.extend(std::iter::repeat_n(b'N', 20_000));
    long_name.extend_from_slice(b": v\r\n\r\n");
    let mut long_target = b"GET /".to_vec();
    long_target.extend(std::iter::repeat_n(b'p', 1024 * 1024));
    let after_start = start.len() as u64;
    // Each case: the request, its status, and how many bytes the server needs to see that it
    // is over a limit: a head of MAX_HEAD_BYTES without its end, a line one byte longer than
    // MAX_HEADER_LINE (counted from its start), the first byte of the 101st field.
    let cases: Vec<(&str, Vec<u8>, u16, u64)> = vec![
        (
            "99 header lines of 16,000 bytes (1.6 MB head)",
            many_long,
            431,
            MAX_HEAD_BYTES,
        ),
        (
            "a header line of 1 MiB",
            endless_line,
            431,
            after_start + MAX_HEADER_LINE + 1,
        ),
        (
            "100,000 short header lines",
            endless_headers,
            431,
            field_101_at + 1,
        ),
        (
            "a header name of 20,000 bytes",
            long_name,
            431,
            after_start + MAX_HEADER_LINE + 1,
        ),
        (
            "a request target of 1 MiB",
            long_target,
            414,
            MAX_HEADER_LINE + 1,
        ),
    ];
    for (name, request, status, refused_at) in cases {
        let pieces: Vec<Vec<u8>> = request
            .chunks(HEAD_PIECE as usize)
            .map(<[u8]>::to_vec)
            .collect();
        let paced = send_in_lock_step(server.addr(), None, |index| pieces.get(index).cloned());
        assert!(
            paced
                .response
                .as_ref()
                .is_some_and(|r| r.status == status && r.closes()),
            "{name}: expected {status} with a close, got {:?}",
            paced.response
        );
        assert_refused_at(name, paced.sent(), refused_at, HEAD_PIECE);
        watch.check(&server, name);
    }
}

/// 500 requests pipelined in one write are answered in order on the one connection; a bad
/// request in the middle of a pipeline is answered with 400 and nothing after it is served.
#[test]
fn pipelined_requests_are_answered_in_order_and_stop_at_a_bad_one() {
    let server = Server::start("workers = 1\nworker_threads = 2");
    let watch = Watch::new(&server);
    // Each request names an image that does not exist, and its 404 names that id back, so the
    // order of the answers is seen, not only their number.
    let id_of = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let mut pipeline = Vec::new();
    for i in 0..500 {
        pipeline.extend_from_slice(
            format!("GET /v2/images/{} HTTP/1.1\r\nHost: x\r\n\r\n", id_of(i)).as_bytes(),
        );
    }
    pipeline
        .extend_from_slice(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&pipeline));
    let mut reader = BufReader::new(stream);
    for i in 0..500 {
        match read_response(&mut reader, "GET") {
            Ok(Some(response)) if response.status == 404 && response.text().contains(&id_of(i)) => {
            }
            other => panic!("pipelined response {i}: {other:?}\n{}", server.log()),
        }
    }
    match read_response(&mut reader, "GET") {
        Ok(Some(response)) if response.status == 200 => {}
        other => panic!("pipelined response 500 (healthcheck): {other:?}"),
    }
    assert_eq!(util::read_to_eof(&mut reader).unwrap(), b"");
    sender.join().unwrap().unwrap();
    watch.check(&server, "500 pipelined requests");

    let (response, rest) = util::exchange_then_eof(
        server.addr(),
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\nGET /bad HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n\
          GET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
        ANSWER,
    );
    assert_eq!(response.unwrap().unwrap().status, 200);
    let rest = rest.unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 400 "), "{}", show(&rest));
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{}", show(&rest));
    assert!(!server.log().contains("/sneaky"), "{}", server.log());
}

/// Request smuggling variants (PortSwigger's CL.TE, TE.CL, TE.TE obfuscations, and framing
/// quirks of other parsers): each is refused with 400 (501 for a coding we do not implement), the
/// connection is closed, and the request hidden behind it is never served. The plain CL.TE and
/// TE.CL cases are in tests/http.rs (`smuggled_request_behind_te_and_cl_is_never_served`).
#[test]
fn request_smuggling_variants_are_refused_and_the_hidden_request_never_served() {
    let server = Server::start("workers = 1");
    let watch = Watch::new(&server);
    let sneaky = "GET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String, u16)> = vec![
        ("TE with a space before the colon", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{sneaky}"), 400),
        ("TE value with a tab prefix", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n{sneaky}"), 400),
        ("TE chunked then TE identity", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{sneaky}"), 400),
        ("TE x-chunked list", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: x, chunked\r\n\r\n0\r\n\r\n{sneaky}"), 501),
        ("TE folded onto a second line", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{sneaky}"), 400),
        ("TE in upper case, with CL", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n0\r\n\r\n{sneaky}"), 400),
        ("CL with a trailing letter", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 4x\r\n\r\nabcd{sneaky}"), 400),
        ("CL in hex", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 0x4\r\n\r\nabcd{sneaky}"), 400),
        ("CL with an inner space", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\nabcd{sneaky}"), 400),
        ("chunk size with a 0x prefix", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{{}}\r\n0\r\n\r\n{sneaky}"), 400),
        ("chunk size negative", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n{{}}\r\n0\r\n\r\n{sneaky}"), 400),
        ("chunk data without its CRLF", format!("POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}0\r\n\r\n{sneaky}"), 400),
        ("bare CR in a header value", format!("GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 40\r\n\r\n{sneaky}"), 400),
        ("NUL in a header name", format!("GET /healthcheck HTTP/1.1\r\nHost: x\r\nX\0A: b\r\n\r\n{sneaky}"), 400),
    ];
    for (name, request, status) in cases {
        let (response, rest) =
            util::exchange_then_eof(server.addr(), request.as_bytes(), false, ANSWER);
        let context = format!(
            "{name}: request {}\nresponse {response:?}\nafter it {rest:?}",
            show(request.as_bytes())
        );
        let response = response.ok().flatten();
        assert_eq!(
            response.as_ref().map(|r| r.status),
            Some(status),
            "{context}"
        );
        assert!(response.as_ref().is_some_and(Response::closes), "{context}");
        assert!(rest.as_ref().is_ok_and(Vec::is_empty), "{context}");
        assert!(
            !server.log().contains("/sneaky"),
            "{context}\n{}",
            server.log()
        );
    }
    watch.check(&server, "smuggling attempts");
}

// ---------------------------------------------------------------------------------------------
// Paths and JSON.
// ---------------------------------------------------------------------------------------------

/// Every regular file under `root` (recursively) with its length, modification time and
/// content, by path relative to `root`, but those `skip` names (files glint rewrites as it
/// serves: the database and its WAL and SHM, the log, the status file).
fn file_states(
    root: &std::path::Path,
    skip: &[&str],
) -> std::collections::BTreeMap<String, (u64, std::time::SystemTime, Vec<u8>)> {
    let mut states = std::collections::BTreeMap::new();
    for name in files_under(root) {
        if skip.iter().any(|skipped| name.ends_with(skipped)) {
            continue;
        }
        let path = root.join(&name);
        let metadata = fs::metadata(&path).unwrap_or_else(|error| panic!("{name}: {error}"));
        let content = fs::read(&path).unwrap_or_default();
        states.insert(
            name,
            (metadata.len(), metadata.modified().unwrap(), content),
        );
    }
    states
}

/// Invalid UTF-8, NUL bytes and path traversal in request targets, image ids and tags: raw
/// control bytes are refused by the HTTP layer with 400, percent-encoded ones reach the API and
/// get 400 or 404, and no file is created, changed or removed anywhere a traversal could reach.
///
/// The server's files sit deep, `P/a/b/c/{images,cache,glint.sqlite}` under its temporary
/// directory P, with a file `sentinel` in c, b, a and P and another, uniquely named, in P's
/// parent (the system's temporary directory): what one to five `..` from the data or cache
/// directory name. Each traversal depth from 1 to 6 (6 reaches `/` with /tmp) is tried, as `%2F`
/// and as `%2E%2E%2F`, as an image id to show, download, upload to (with a body) and delete, and
/// to queue and delete in the cache (flavor `cachemanagement`), aimed at the sentinels and at a
/// new, unique name. Afterwards every file under P but the database, log and status file is
/// byte for byte and time for time what it was, the sentinel in P's parent too, and the new
/// name exists at no depth (c up to P's grandparent); `/etc/passwd` is unchanged.
#[test]
fn hostile_paths_get_400_or_404_and_touch_no_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().to_path_buf();
    let c = root.join("a/b/c");
    fs::create_dir_all(&c).unwrap();
    let config = util::base_config(
        "workers = 1\n\n[paste_deploy]\nflavor = cachemanagement\n\n\
         [image_cache]\nimage_cache_dir = a/b/c/cache\n",
    )
    .replace(
        "filesystem_store_datadir = images",
        "filesystem_store_datadir = a/b/c/images",
    )
    .replace("sqlite:///glint.sqlite", "sqlite:///a/b/c/glint.sqlite");
    assert!(
        config.contains("= a/b/c/images") && config.contains("sqlite:///a/b/c/"),
        "{config}"
    );
    let config_path = root.join("glint-api.conf");
    fs::write(&config_path, config).unwrap();
    // Unique names, so that what this test finds in shared directories is its own doing.
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let escape = format!("glint-escape-{unique}");
    let outside = root.parent().expect("the temporary directory's parent");
    let outer_sentinel = outside.join(format!("glint-sentinel-{unique}"));
    // The levels one to six `..` reach from the data directory (and the cache directory).
    let levels: Vec<std::path::PathBuf> = vec![
        c.clone(),
        root.join("a/b"),
        root.join("a"),
        root.clone(),
        outside.to_path_buf(),
        outside
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .to_path_buf(),
    ];
    for level in &levels[..4] {
        fs::write(
            level.join("sentinel"),
            format!("sentinel in {}", level.display()),
        )
        .unwrap();
    }
    fs::write(&outer_sentinel, "sentinel outside").unwrap();
    // Removed however the test ends.
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }
    let _outer_sentinel_guard = RemoveOnDrop(outer_sentinel.clone());
    // What a traversal bug would leave outside the temporary directory is removed too.
    let _escape_guards: Vec<RemoveOnDrop> = levels[4..]
        .iter()
        .map(|level| RemoveOnDrop(level.join(&escape)))
        .collect();
    let outer_sentinel_name = outer_sentinel
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let server = Server::start_with(dir, config_path, &[]);
    let watch = Watch::new(&server);
    let addr = server.addr();
    let id = util::create_image(addr);
    let skip = [
        "glint.sqlite",
        "glint.sqlite-wal",
        "glint.sqlite-shm",
        "glint.sqlite-changes",
        "glint-api.log",
        "glint-api.status.json",
    ];
    let before = file_states(&root, &skip);
    let outer_before = fs::read(&outer_sentinel).unwrap();
    let passwd_before = fs::metadata("/etc/passwd")
        .ok()
        .map(|m| (m.len(), m.modified().ok()));

    let request = |method: &str, target: &[u8], body: &[u8]| {
        let mut request = format!("{method} ").into_bytes();
        request.extend_from_slice(target);
        request.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body);
        request
    };
    let tag = |suffix: &str| format!("/v2/images/{id}/tags/{suffix}").into_bytes();
    let mut cases: Vec<(String, Vec<u8>, &[u16])> = vec![
        (
            "raw invalid UTF-8 in the path".into(),
            request("GET", b"/v2/images/\xff\xfe", b""),
            &[400],
        ),
        (
            "raw NUL in the path".into(),
            request("GET", b"/v2/images/a\0b", b""),
            &[400],
        ),
        (
            "percent-encoded invalid UTF-8 id".into(),
            request("GET", b"/v2/images/%ff%fe", b""),
            &[404],
        ),
        (
            "percent-encoded NUL id".into(),
            request("GET", b"/v2/images/%00", b""),
            &[404],
        ),
        (
            "dot-dot segments".into(),
            request("GET", b"/v2/images/../../../etc/passwd", b""),
            &[404],
        ),
        (
            "raw dot-dot segments in an upload".into(),
            request(
                "PUT",
                b"/v2/images/../../../../sentinel/file",
                b"overwritten",
            ),
            &[404],
        ),
        (
            "encoded traversal as an id".into(),
            request("GET", b"/v2/images/..%2F..%2F..%2Fetc%2Fpasswd", b""),
            &[404],
        ),
        (
            "encoded traversal to the database in a download".into(),
            request("GET", b"/v2/images/..%2Fglint.sqlite/file", b""),
            &[404],
        ),
        (
            "traversal to the database in a delete".into(),
            request("DELETE", b"/v2/images/..%2Fglint.sqlite", b""),
            &[404],
        ),
        (
            "percent-encoded invalid UTF-8 tag".into(),
            request("PUT", &tag("%ff%fe"), b""),
            &[400],
        ),
        (
            "percent-encoded NUL tag".into(),
            request("PUT", &tag("a%00b"), b""),
            &[400, 204],
        ),
        (
            "a tag of 256 characters".into(),
            request("PUT", &tag(&"t".repeat(256)), b""),
            &[400],
        ),
        (
            "a tag that looks like a path".into(),
            request("PUT", &tag("..%2F..%2Fescape"), b""),
            &[204],
        ),
    ];
    for depth in 1..=levels.len() {
        // Depth 5 reaches the system's temporary directory, where the sentinel has its own name.
        let sentinel = if depth == 5 {
            outer_sentinel_name.as_str()
        } else {
            "sentinel"
        };
        for (encoding, up) in [("%2F", "..%2F"), ("%2E%2E%2F", "%2E%2E%2F")] {
            let to = |name: &str| format!("{}{name}", up.repeat(depth));
            let routes: Vec<(&str, String, &[u8])> = vec![
                ("show", format!("/v2/images/{}", to(sentinel)), b""),
                ("download", format!("/v2/images/{}/file", to(sentinel)), b""),
                (
                    "upload over a sentinel",
                    format!("/v2/images/{}/file", to(sentinel)),
                    b"overwritten",
                ),
                (
                    "upload to a new name",
                    format!("/v2/images/{}/file", to(&escape)),
                    b"escaped",
                ),
                ("delete", format!("/v2/images/{}", to(sentinel)), b""),
                ("cache queue", format!("/v2/cache/{}", to(&escape)), b""),
                ("cache delete", format!("/v2/cache/{}", to(sentinel)), b""),
            ];
            for (route, target, body) in routes {
                let method = match route {
                    "show" | "download" => "GET",
                    "delete" | "cache delete" => "DELETE",
                    _ => "PUT",
                };
                cases.push((
                    format!("{route}, {depth} levels up as {encoding}"),
                    request(method, target.as_bytes(), body),
                    &[404],
                ));
            }
        }
    }
    let mut failures = Vec::new();
    for (name, bytes, statuses) in &cases {
        let (response, _) = util::exchange_then_eof(addr, bytes, false, ANSWER);
        match response {
            Ok(Some(r)) if statuses.contains(&r.status) => {}
            other => failures.push(format!("{name}: expected {statuses:?}, got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        server.log()
    );
    let after = file_states(&root, &skip);
    let created: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let changed: Vec<&String> = after
        .iter()
        .filter(|(k, state)| before.get(*k).is_some_and(|was| was != *state))
        .map(|(k, _)| k)
        .collect();
    assert!(
        created.is_empty() && removed.is_empty() && changed.is_empty(),
        "under the server's directory: created {created:?}, removed {removed:?}, changed \
         {changed:?}"
    );
    assert_eq!(
        fs::read(&outer_sentinel).ok(),
        Some(outer_before),
        "{} changed",
        outer_sentinel.display()
    );
    for level in &levels {
        let path = level.join(&escape);
        assert!(!path.exists(), "{} was created", path.display());
    }
    assert_eq!(
        fs::metadata("/etc/passwd")
            .ok()
            .map(|m| (m.len(), m.modified().ok())),
        passwd_before,
        "/etc/passwd changed"
    );
    eprintln!("{} hostile paths, no file touched", cases.len());
    watch.check(&server, "hostile paths");
}

/// JSON built to hurt: a 1 MiB + 1 body is 413, 100,000 levels of nesting are 400 without a
/// stack overflow (serde_json stops at 128), and invalid JSON patches are 400 and change nothing.
#[test]
fn oversized_nested_and_invalid_json_is_refused_and_changes_nothing() {
    let server = Server::start("workers = 1");
    let watch = Watch::new(&server);
    let addr = server.addr();
    let mut long = br#"{"name":""#.to_vec();
    long.extend(std::iter::repeat_n(b'n', 1024 * 1024));
    long.extend_from_slice(br#""}"#);
    let nested = |depth: usize| {
        let mut json = br#"{"name":"#.to_vec();
        json.extend(std::iter::repeat_n(b'[', depth));
        json.extend(std::iter::repeat_n(b']', depth));
        json.push(b'}');
        json
    };
    for (name, body, status) in [
        ("a 1 MiB + 10 byte JSON body", long, 413),
        ("100,000 levels of nesting", nested(100_000), 400),
        ("129 levels of nesting", nested(129), 400),
        (
            "invalid UTF-8 in a JSON string",
            b"{\"name\":\"\xff\xfe\"}".to_vec(),
            400,
        ),
        (
            "a NUL byte outside a string",
            b"{\"name\":\0\"x\"}".to_vec(),
            400,
        ),
    ] {
        let response = util::send_body(addr, "POST", "/v2/images", "application/json", &body);
        assert_eq!(response.status, status, "{name}: {}", response.text());
        watch.check(&server, name);
    }

    let id = util::create_image(addr);
    let path = format!("/v2/images/{id}");
    let before = util::get(addr, &path).unwrap().body;
    let patch = "application/openstack-images-v2.1-json-patch";
    let mut deep_patch = br#"[{"op":"add","path":"/nested","value":"#.to_vec();
    deep_patch.extend(std::iter::repeat_n(b'[', 100_000));
    deep_patch.extend(std::iter::repeat_n(b']', 100_000));
    deep_patch.extend_from_slice(b"}]");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "not a list",
            br#"{"op":"add","path":"/a","value":"b"}"#.to_vec(),
            400,
        ),
        (
            "unknown op",
            br#"[{"op":"move","from":"/name","path":"/a"}]"#.to_vec(),
            400,
        ),
        (
            "missing path",
            br#"[{"op":"add","value":"b"}]"#.to_vec(),
            400,
        ),
        (
            "path without a slash",
            br#"[{"op":"add","path":"name","value":"b"}]"#.to_vec(),
            400,
        ),
        (
            "path with two levels",
            br#"[{"op":"add","path":"/a/b","value":"b"}]"#.to_vec(),
            400,
        ),
        (
            "path with a traversal",
            br#"[{"op":"add","path":"/../../etc","value":"b"}]"#.to_vec(),
            400,
        ),
        (
            "a read-only attribute",
            br#"[{"op":"replace","path":"/status","value":"active"}]"#.to_vec(),
            403,
        ),
        (
            "remove of a missing property",
            br#"[{"op":"remove","path":"/nothing"}]"#.to_vec(),
            409,
        ),
        (
            "a good op then a bad one",
            br#"[{"op":"replace","path":"/name","value":"changed"},{"op":"bogus"}]"#.to_vec(),
            400,
        ),
        ("deeply nested value", deep_patch, 400),
        (
            "a nested value as a property",
            br#"[{"op":"add","path":"/p","value":{"a":1}}]"#.to_vec(),
            400,
        ),
        (
            "truncated JSON",
            br#"[{"op":"add","path":"/a","#.to_vec(),
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (name, body, status) in &cases {
        let response = util::send_body(addr, "PATCH", &path, patch, body);
        if response.status != *status {
            failures.push(format!(
                "{name}: expected {status}, got {} {}",
                response.status,
                response.text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let after = util::get(addr, &path).unwrap().body;
    assert_eq!(
        String::from_utf8_lossy(&after),
        String::from_utf8_lossy(&before),
        "a refused patch changed the image"
    );
    watch.check(&server, "invalid JSON patches");
}

/// Issue 10, hole 9: with `debug = true`, what a client sends reaches debug lines. A `%0A` in
/// the path (and in a query and a JSON value) must not start a forged record, and `%00` must not
/// write a NUL: every line of the log is a record (issue 14, part 6: no continuation lines), the
/// client's line break is written as `\n` within it, and the log holds no control character but
/// the line breaks between records.
#[test]
fn client_input_cannot_forge_log_records_or_write_control_characters() {
    let server = Server::start("workers = 1\ndebug = true");
    let forged =
        "%0A2026-01-01T00:00:00.000000Z%20ERROR%20glint-api[1]%20master:%20forged%00%1B[31m";
    for target in [
        format!("/v2/images/{forged}"),
        format!("/v2/images?name={forged}"),
        format!("/{forged}"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n\r\n");
        util::raw_exchange(server.addr(), request.as_bytes())
            .unwrap()
            .expect("an answer");
    }
    // A `"` in the target (httparse takes it, and `\`) would end the access line's quoted
    // field early and let the client write the status and sizes of its choice after it.
    util::raw_exchange(
        server.addr(),
        b"GET /v2/a\\\"b\"c\"-200-0-0.1ms HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n\r\n",
    )
    .unwrap()
    .expect("an answer");
    let body = "{\"name\": \"x\\n2026-01-01T00:00:00.000000Z ERROR glint-api[1] master: forged\\u0000\", \"bogus\\n\": 1}";
    let request = format!(
        "POST /v2/images HTTP/1.1\r\nHost: glint\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    util::raw_exchange(server.addr(), request.as_bytes())
        .unwrap()
        .expect("an answer");
    // Each request above ends with an access line; the last one's marks that all were logged.
    server.wait_for_log("\"POST /v2/images\"", util::DEADLINE);
    let log = fs::read(server.path("glint-api.log")).unwrap();
    assert!(
        !log.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
        "the log holds a control character:\n{}",
        show(&log)
    );
    let text = String::from_utf8_lossy(&log);
    let quoted: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("\"GET /v2/a"))
        .collect();
    assert_eq!(quoted.len(), 1, "{text}");
    assert!(
        quoted[0].contains(r#""GET /v2/a\\\"b\"c\"-200-0-0.1ms" 404 "#),
        "the quotes and backslash of the target are not escaped: {}",
        quoted[0]
    );
    for line in text.lines() {
        let is_record = line.len() > 27
            && line.as_bytes()[4] == b'-'
            && line.as_bytes()[10] == b'T'
            && line.contains(" glint-api[");
        assert!(is_record, "a line that is not a record: {line:?}");
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000000Z"),
            "a forged record: {line:?}"
        );
    }
    assert!(
        text.contains("forged"),
        "the client's text was not logged at all, so this test proves nothing:\n{text}"
    );
    // The refusal of the JSON property `bogus<LF>` carries the decoded line break in its
    // message (a multi-line error detail): it is one record, with the break written `\n`.
    let refusal: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("property 'bogus"))
        .collect();
    assert_eq!(refusal.len(), 1, "{text}");
    assert!(
        refusal[0].contains("property 'bogus\\n') (400)"),
        "{}",
        refusal[0]
    );
}

// ---------------------------------------------------------------------------------------------
// Connection slots held by idle and unauthenticated clients (issue 10, hole 2).
// ---------------------------------------------------------------------------------------------

const KEEPALIVE_HEALTHCHECK: &[u8] = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n";

/// A keep-alive connection that has had one `GET /healthcheck` answered and stays open.
fn served_keepalive(server: &Server) -> (TcpStream, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(ANSWER)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(KEEPALIVE_HEALTHCHECK).unwrap();
    let response = read_response(&mut reader, "GET").unwrap().unwrap();
    assert!(response.status == 200 && !response.closes(), "{response:?}");
    (stream, reader)
}

/// With `max_client_connections = 20` and 20 keep-alive connections idle after one request
/// each, a 21st client is served (before: it waited in the backlog until an idle connection
/// timed out, 900 s), and exactly one idle connection gave way to it: the one idle the longest
/// (the first). The 19 others still serve requests.
#[test]
fn idle_keepalive_connections_give_way_to_a_new_client_oldest_first() {
    let server = Server::start("workers = 1\nmax_client_connections = 20");
    let mut idle: Vec<_> = (0..20).map(|_| served_keepalive(&server)).collect();
    let mut fresh = TcpStream::connect(server.addr()).unwrap();
    fresh.set_read_timeout(Some(ANSWER)).unwrap();
    fresh
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let response = read_response(&mut BufReader::new(fresh), "GET");
    eprintln!(
        "the 21st client: {:?} after {:?}",
        response.as_ref().map(|r| r.as_ref().map(|r| r.status)),
        started.elapsed()
    );
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 200),
        "the 21st client with 20 idle connections held: {response:?}"
    );
    let (oldest, _) = &mut idle[0];
    assert!(
        util::peer_closed(oldest, ANSWER),
        "the connection idle the longest was not closed"
    );
    let mut n_closed = 1;
    for (stream, reader) in &mut idle[1..] {
        let answered = stream
            .write_all(KEEPALIVE_HEALTHCHECK)
            .ok()
            .and_then(|()| read_response(reader, "GET").ok().flatten());
        if !matches!(answered, Some(r) if r.status == 200) {
            n_closed += 1;
        }
    }
    assert_eq!(
        n_closed, 1,
        "idle connections closed to make room for one client"
    );
}

/// Idle connections closed to make room linger outside the count (to let our FIN go out) for at
/// most `CLOSE_LINGER` (1 s), and at most `max_client_connections` of them at once: however
/// fast new clients come, a child holds at most twice `max_client_connections` client
/// descriptors. With the limit at 20, 60 clients each get one request answered and stay open,
/// idle, one after another as fast as they are answered: every one is served (the last ones
/// once a linger ends), and the child's descriptors, sampled after each answer, exceed their
/// idle count by more than 20 (connections lingered) and never by more than 40.
#[test]
fn connections_closed_for_room_keep_a_child_within_twice_max_client_connections_descriptors() {
    let server = Server::start("workers = 1\nmax_client_connections = 20");
    let watch = Watch::new(&server);
    let idle_fds = open_fds(watch.pid);
    let mut held = Vec::new();
    let (mut most, mut longest) = (0, Duration::ZERO);
    for _ in 0..60 {
        // Each within ANSWER (10 s): a client that waits for a lingering slot is served once
        // the linger ends.
        let started = Instant::now();
        held.push(served_keepalive(&server));
        longest = longest.max(started.elapsed());
        most = most.max(open_fds(watch.pid).saturating_sub(idle_fds));
    }
    eprintln!(
        "at most {most} client descriptors held with max_client_connections = 20; the longest \
         wait for an answer {longest:?}"
    );
    assert!(
        most > 20,
        "never more than {most} client descriptors: no closed connection lingered, so this \
         test did not try the bound"
    );
    assert!(
        most <= 40,
        "{most} client descriptors held, over twice max_client_connections (20)"
    );
    // Checked once the clients have gone: while all 40 descriptors are held, a new client
    // rightly waits up to a linger for its slot.
    drop(held);
    watch.check(&server, "60 clients through 20 connection slots");
}

/// With `auth_strategy = token`, a keep-alive connection whose request got 401 waits for its
/// next request `client_header_timeout` (2 s here), not `client_socket_timeout` (60 s): it is
/// closed no earlier than 2 s after the 401 arrived (its kernel stamp) and before 10 s. A
/// connection whose token was accepted, idle since before it, stays open and serves a request
/// after that close.
#[test]
fn a_connection_refused_with_401_waits_only_the_header_timeout() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    let tokens = dir.path().join("tokens");
    fs::write(&tokens, "good-token\n").unwrap();
    fs::set_permissions(&tokens, fs::Permissions::from_mode(0o600)).unwrap();
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        util::base_config(
            "workers = 1\nauth_strategy = token\nauth_token_file = tokens\n\
             client_header_timeout = 2\nclient_socket_timeout = 60",
        ),
    )
    .unwrap();
    let server = Server::start_with(dir, config_path, &[]);
    let images = |token: Option<&str>| {
        let token = token.map_or(String::new(), |t| format!("X-Auth-Token: {t}\r\n"));
        format!("GET /v2/images HTTP/1.1\r\nHost: x\r\n{token}\r\n").into_bytes()
    };
    let open = |request: &[u8], status: u16| {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream.set_read_timeout(Some(ANSWER)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        stream.write_all(request).unwrap();
        let response = read_response(&mut reader, "GET").unwrap().unwrap();
        assert!(
            response.status == status && !response.closes(),
            "{response:?}"
        );
        (stream, reader)
    };
    let (mut authenticated, mut authenticated_reader) = open(&images(Some("good-token")), 200);
    let mut refused = TcpStream::connect(server.addr()).unwrap();
    refused.set_read_timeout(Some(ANSWER)).unwrap();
    util::stamp_arrivals(&refused);
    refused.write_all(&images(None)).unwrap();
    let answered = util::first_arrival(&refused).expect("the 401's arrival stamp");
    let response = read_response(&mut BufReader::new(&mut refused), "GET")
        .unwrap()
        .unwrap();
    assert!(response.status == 401 && !response.closes(), "{response:?}");
    assert!(
        util::peer_closed(&mut refused, Duration::from_secs(10)),
        "the connection refused with 401 was still open 10 s after its answer \
         (client_socket_timeout = 60 applied)"
    );
    // Read after the close was seen, so at or after it.
    let closed_after = std::time::SystemTime::now()
        .duration_since(answered)
        .unwrap_or(Duration::ZERO);
    eprintln!("the connection refused with 401 was closed {closed_after:?} after its answer");
    assert!(
        closed_after >= Duration::from_secs(2),
        "the connection refused with 401 was closed {closed_after:?} after its answer, before \
         client_header_timeout (2 s)"
    );
    authenticated
        .write_all(&images(Some("good-token")))
        .unwrap();
    let response = read_response(&mut authenticated_reader, "GET");
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 200),
        "the authenticated connection, idle longer than the refused one ({closed_after:?}): \
         {response:?}"
    );
}
