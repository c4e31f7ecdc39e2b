//! Slow readers (issue 10, hole 3): a download that waits for the client's socket holds no
//! worker thread, a fresh request is answered while slow downloads run, parked downloads end
//! whole when their clients read again (also across a reload), and a client reading slower than
//! `client_send_min_rate` is disconnected.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

use crate::util::{
    self, create_image, create_image_from, get, send_body, wait_until, Server, DEADLINE,
};

/// The image the slow clients download: far larger than what the kernel's socket buffers on
/// both sides can hold, so a client that stops reading leaves the server with bytes to send.
const IMAGE_BYTES: usize = 32 * 1024 * 1024;

/// An image of `IMAGE_BYTES` whose bytes depend on their position, so a download that skipped
/// or repeated a piece cannot compare equal.
fn image_data() -> Vec<u8> {
    (0..IMAGE_BYTES)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4])
        .collect()
}

/// Creates an image and uploads `data`; returns its id.
fn uploaded_image(addr: SocketAddr, data: &[u8]) -> String {
    let id = create_image(addr);
    let response = send_body(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        "application/octet-stream",
        data,
    );
    assert_eq!(response.status, 204, "upload: {}", response.text());
    id
}

/// A connection with a small receive buffer (set before connecting, so the window the server
/// sees is small from the start), as a client on a slow link has.
fn small_window_connection(addr: SocketAddr) -> TcpStream {
    connection_with(addr, None)
}

/// Like [`small_window_connection`], with small segments too (`TCP_MAXSEG`): Linux sizes the
/// sender's buffer from the segment size, so the server's kernel then holds little of a
/// response, as with a slow client that wants it so.
fn small_segments_connection(addr: SocketAddr) -> TcpStream {
    connection_with(addr, Some(536))
}

fn connection_with(addr: SocketAddr, max_segment: Option<u32>) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("the tests listen on 127.0.0.1");
    };
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &4096).expect("SO_RCVBUF");
    if let Some(bytes) = max_segment {
        setsockopt(&fd, sockopt::TcpMaxSeg, &bytes).expect("TCP_MAXSEG");
    }
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).expect("connect");
    TcpStream::from(fd)
}

/// Starts a download of image `id` on a small-window connection and reads its head and the
/// first `first` body bytes; returns the connection and the bytes read so far (head excluded).
fn start_download(addr: SocketAddr, id: &str, first: usize) -> (TcpStream, Vec<u8>) {
    let mut stream = small_window_connection(addr);
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET /v2/images/{id}/file HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let body_start = loop {
        let n = stream.read(&mut buf).expect("the download's head");
        assert!(n > 0, "closed before the head");
        received.extend_from_slice(&buf[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..body_start]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {IMAGE_BYTES}\r\n")),
        "{head}"
    );
    let mut body = received.split_off(body_start);
    while body.len() < first {
        let n = stream.read(&mut buf).expect("the download's first bytes");
        assert!(n > 0, "closed after {} body bytes", body.len());
        body.extend_from_slice(&buf[..n]);
    }
    (stream, body)
}

/// Reads the rest of a download: `IMAGE_BYTES` body bytes in all.
fn finish_download(stream: &mut TcpStream, mut body: Vec<u8>) -> Vec<u8> {
    let mut buf = vec![0u8; 256 * 1024];
    while body.len() < IMAGE_BYTES {
        let want = (IMAGE_BYTES - body.len()).min(buf.len());
        let n = stream
            .read(&mut buf[..want])
            .expect("the rest of the download");
        assert!(n > 0, "closed after {} of {IMAGE_BYTES} bytes", body.len());
        body.extend_from_slice(&buf[..n]);
    }
    body
}

/// The next response on a connection, with `already` the bytes of it read before; returns it
/// with what was read past its end.
fn next_response(stream: &TcpStream, already: Vec<u8>) -> (util::Response, Vec<u8>) {
    let mut reader = std::io::BufReader::new(std::io::Cursor::new(already).chain(stream));
    let response = util::read_response(&mut reader, "GET")
        .expect("the next response")
        .expect("a response, not the connection's end");
    let rest = reader.buffer().to_vec();
    (response, rest)
}

/// Appends to `body` at most `bytes` of what the client has received, without waiting for more.
fn read_available(stream: &mut TcpStream, body: &mut Vec<u8>, bytes: usize) {
    stream.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; bytes];
    let n = stream.read(&mut buf).unwrap_or(0);
    stream.set_nonblocking(false).unwrap();
    body.extend_from_slice(&buf[..n]);
}

/// The issue's attack, four times over: one child with 4 worker threads, 16 downloads of a
/// 32 MiB image by clients that stop reading after the first 64 KiB (8 never read again, 8
/// trickle 8 KiB a second). Before parking, they held all 4 workers and `/healthcheck` went
/// unanswered until `client_send_timeout`. Now: `/healthcheck`, an image show and a whole fresh
/// download are answered while all 16 are still open, and each of the 16 then ends with every
/// byte of the image once its client reads again.
#[test]
fn slow_downloads_hold_no_worker_and_fresh_requests_are_answered() {
    let server = Server::start("workers = 1\nworker_threads = 4\nclient_send_timeout = 60");
    let addr = server.addr();
    let data = image_data();
    let id = uploaded_image(addr, &data);

    let mut slow: Vec<(TcpStream, Vec<u8>)> = (0..16)
        .map(|_| start_download(addr, &id, 64 * 1024))
        .collect();

    // Trickle for 2 s at 8 KiB a second on half of them, answering fresh requests meanwhile.
    let until = Instant::now() + Duration::from_secs(2);
    let mut n_fresh = 0;
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        for (stream, body) in slow.iter_mut().step_by(2) {
            read_available(stream, body, 820);
        }
        let asked = Instant::now();
        let health = get(addr, "/healthcheck").expect("/healthcheck during 16 slow downloads");
        assert_eq!(health.status, 200, "/healthcheck: {}", health.text());
        slowest = slowest.max(asked.elapsed());
        let show = get(addr, &format!("/v2/images/{id}")).expect("image show");
        assert_eq!(show.status, 200, "show: {}", show.text());
        n_fresh += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        n_fresh >= 2,
        "only {n_fresh} rounds of fresh requests in 2 s"
    );
    eprintln!("{n_fresh} rounds of fresh requests; the slowest /healthcheck took {slowest:?}");

    // A whole fresh download, at full speed, while the 16 are still parked.
    let fresh = get(addr, &format!("/v2/images/{id}/file")).expect("a fresh download");
    assert_eq!(fresh.status, 200);
    assert!(
        fresh.body == data,
        "the fresh download differs from the image"
    );

    // None of the 16 was cut: each now reads to the end and gets the image exactly.
    for (index, (mut stream, body)) in slow.into_iter().enumerate() {
        let body = finish_download(&mut stream, body);
        assert!(
            body == data,
            "slow download {index} differs from the image after resuming"
        );
    }
    let log = server.log();
    assert!(
        !log.contains("response not completed"),
        "a download was abandoned:\n{log}"
    );
}

/// How a download read by [`read_at`] was cut: when, and the error (or EOF) the client saw.
type Cut = Option<(Duration, std::io::Result<usize>)>;

/// Reads the download on `stream` at about `rate` bytes a second (a burst each 100 ms) until it
/// ends or the connection is cut; returns the bytes read and the cut, if it came.
fn read_at(stream: &mut TcpStream, mut body: Vec<u8>, rate: usize) -> (Vec<u8>, Cut) {
    let began = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut tick = 0u32;
    while body.len() < IMAGE_BYTES {
        assert!(
            began.elapsed() < DEADLINE * 2,
            "neither finished nor cut after {} s, {} bytes read",
            (DEADLINE * 2).as_secs(),
            body.len()
        );
        tick += 1;
        let due = rate / 10 * tick as usize;
        while body.len() < due.min(IMAGE_BYTES) {
            let want = (due - body.len()).min(buf.len());
            match stream.read(&mut buf[..want]) {
                Ok(n) if n > 0 => body.extend_from_slice(&buf[..n]),
                end => return (body, Some((began.elapsed(), end))),
            }
        }
        let next = began + Duration::from_millis(100) * tick;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    (body, None)
}

/// A client reading steadily at 4 MiB/s (never a stall near `client_send_timeout = 3`) is
/// disconnected under `client_send_min_rate = 8 MiB/s`: once the 3 s grace has passed, the bytes
/// the socket took (including what the kernel buffers hold) no longer cover the time since the
/// response began. The cut is a reset, so the client does not go on reading the megabytes queued
/// in the kernel: it has read far less than the image. The access log says why. After a reload
/// to `client_send_min_rate = 0`, the same client at the same rate gets the whole image.
#[test]
fn a_client_slower_than_client_send_min_rate_is_disconnected_and_says_so() {
    let settings = "workers = 1\nworker_threads = 4\nclient_send_timeout = 3\n";
    let server = Server::start(&format!("{settings}client_send_min_rate = 8388608"));
    let addr = server.addr();
    let data = image_data();
    let id = uploaded_image(addr, &data);

    let (mut stream, body) = start_download(addr, &id, 1);
    let (body, cut) = read_at(&mut stream, body, 4 * 1024 * 1024);
    let (cut, end) = cut.unwrap_or_else(|| panic!("the slow client got the whole image"));
    eprintln!("cut after {cut:?}, {} bytes read, with {end:?}", body.len());
    // A reset, not a FIN: the kernel's queue of unsent bytes is thrown away.
    assert!(
        matches!(&end, Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset),
        "the cut was not a reset: {end:?} after {} bytes",
        body.len()
    );
    assert!(
        body.len() < IMAGE_BYTES / 2,
        "{} bytes read before the cut at {cut:?}",
        body.len()
    );
    assert!(
        body[..] == data[..body.len()],
        "the bytes before the cut differ"
    );
    server.wait_for_log("read slower than client_send_min_rate", DEADLINE);
    assert!(
        !server
            .log()
            .contains("took nothing for client_send_timeout"),
        "cut for a stall, not for its rate:\n{}",
        server.log()
    );

    server.write_config(&format!("{settings}client_send_min_rate = 0"));
    assert_eq!(server.reload()["outcome"], "succeeded", "{}", server.log());
    let (mut stream, body) = start_download(addr, &id, 1);
    let (body, cut) = read_at(&mut stream, body, 4 * 1024 * 1024);
    assert!(
        cut.is_none(),
        "cut without a rate rule after {} bytes: {cut:?}",
        body.len()
    );
    assert!(body == data, "the download without a rate rule differs");
}

/// A download parked for want of socket room when a reload begins is an accepted request: the
/// old child finishes it (every byte) before it exits, and the new generation serves meanwhile.
#[test]
fn a_parked_download_is_finished_by_its_draining_child() {
    let server = Server::start("workers = 1\nworker_threads = 2\nclient_send_timeout = 60");
    let addr = server.addr();
    let data = image_data();
    let id = uploaded_image(addr, &data);
    let old_children = server.children(None);

    let (mut stream, body) = start_download(addr, &id, 64 * 1024);
    let verdict = server.reload();
    wait_until("the new generation serves", DEADLINE, || {
        server
            .children(Some("serving"))
            .iter()
            .all(|pid| !old_children.contains(pid))
    });
    let health = get(addr, "/healthcheck").expect("/healthcheck after the reload");
    assert_eq!(health.status, 200);
    // The old child is still there: its download is not finished.
    assert!(
        old_children.iter().any(|&pid| util::process_alive(pid)),
        "the old child exited with a download in progress (reload: {verdict})"
    );
    let body = finish_download(&mut stream, body);
    assert!(body == data, "the parked download differs from the image");
    wait_until("the old child exits", DEADLINE, || {
        old_children.iter().all(|&pid| !util::process_alive(pid))
    });
    // The keep-alive connection outlived its old child: handed over once its response ended.
    write!(stream, "GET /healthcheck HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let (response, _) = next_response(&stream, Vec::new());
    assert!(
        response.status == 200 && !response.closes(),
        "the next request on the handed-over connection: {response:?}"
    );
}

/// Requests pipelined behind a download that parks are answered after it, in order, on the
/// same connection, and the download's bytes are the image's.
#[test]
fn requests_pipelined_behind_a_parked_download_are_answered_in_order() {
    let server = Server::start("workers = 1\nworker_threads = 2");
    let addr = server.addr();
    let data = image_data();
    let id = uploaded_image(addr, &data);

    let mut stream = small_window_connection(addr);
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET /v2/images/{id}/file HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /healthcheck HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /v2/images/{id} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    // 32 MiB cannot go through a 4 KiB window at once: the download parks, and the requests
    // behind it wait in the socket until it is done.
    let (download, rest) = next_response(&stream, Vec::new());
    assert_eq!(download.status, 200);
    assert!(download.body == data, "the download differs from the image");
    let (health, rest) = next_response(&stream, rest);
    assert_eq!((health.status, health.text().as_str()), (200, "OK"));
    let (show, _) = next_response(&stream, rest);
    assert_eq!(show.status, 200, "{}", show.text());
    assert!(show.text().contains(&id), "{}", show.text());
    assert!(
        !server.log().contains("response not completed"),
        "{}",
        server.log()
    );
}

/// The descriptors process `pid` holds on unlinked files in `dir` (spilled responses).
fn spilled_files(pid: i32, dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let prefix = dir.to_string_lossy().to_string();
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().to_string())
        .filter(|target| target.starts_with(&prefix) && target.ends_with("(deleted)"))
        .count()
}

/// Over the child's budget for parked bytes (`worker_threads` × 1 MiB: 1 MiB with one worker),
/// slow readers of large list pages still hold no worker: their unsent pages spill to unlinked
/// files in the data folder. One worker thread, 20 images of about 50 KB of properties (a page of
/// about 1 MB), 4 clients that ask for the whole list and read nothing: at least 3 pages spill
/// (asserted from the child's descriptors), `/healthcheck` is answered, then each client reads
/// a page byte-identical to a fast client's, and the spilled files are gone. Before spilling,
/// the second page held the only worker until `client_send_timeout`.
#[test]
fn slow_readers_of_large_lists_spill_to_disk_and_hold_no_worker() {
    let server = Server::start("workers = 1\nworker_threads = 1\nclient_send_timeout = 60");
    let addr = server.addr();
    let note = "x".repeat(50_000);
    for n in 0..20 {
        create_image_from(
            addr,
            &format!(
                r#"{{"name":"big-{n}","disk_format":"raw","container_format":"bare","note":"{note}"}}"#
            ),
        );
    }
    let list = "/v2/images?limit=1000";
    let fast = get(addr, list).expect("a fast list");
    assert_eq!(fast.status, 200);
    assert!(
        fast.body.len() > 900_000,
        "a page of {} bytes",
        fast.body.len()
    );

    let child = server.children(Some("serving"))[0];
    let data_dir = server.path("images");
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = small_segments_connection(addr);
            write!(stream, "GET {list} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
            stream
        })
        .collect();
    // Each page has begun: its first byte is here. With the worker held by the second page (no
    // spilling), the third never begins.
    let mut first_bytes = Vec::new();
    for (index, stream) in slow.iter_mut().enumerate() {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut first = vec![0u8; 1];
        stream
            .read_exact(&mut first)
            .unwrap_or_else(|error| panic!("slow reader {index}'s page never began: {error}"));
        first_bytes.push(first);
    }
    wait_until("3 pages spilled to the data folder", DEADLINE, || {
        spilled_files(child, &data_dir) >= 3
    });
    let health = get(addr, "/healthcheck").expect("/healthcheck with 4 slow list readers");
    assert_eq!(health.status, 200);

    for (stream, first) in slow.iter().zip(first_bytes) {
        let (page, _) = next_response(stream, first);
        assert_eq!(page.status, 200);
        assert!(page.body == fast.body, "a slow reader's page differs");
    }
    wait_until("the spilled files to be released", DEADLINE, || {
        spilled_files(child, &data_dir) == 0
    });
}
