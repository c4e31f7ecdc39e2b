//! The child's metrics endpoint: one thread that answers `GET /metrics` on the metrics listener
//! with the text exposition of the shared block (`metrics::exposition`). Every serving child
//! runs one on the same listening socket (the master binds it and never serves it), so a scrape
//! is answered by whichever child accepts it; the numbers are the same in all of them.
//!
//! One connection at a time, one request per connection, `Connection: close`: a scrape is rare
//! and small. A client that does not send its head within [`SCRAPE_TIMEOUT`] (or read the answer
//! within it) is dropped, so a stuck scraper delays this child's next scrape by at most that
//! while the other children accept. The thread stops when the child's drain begins
//! ([`Scrape::finish`]), as its API listeners do.

use std::io::{self, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::http::head::{self, Limits, Parsed, Version};
use crate::http::response::{self, Body, Response, WriteOptions};
use crate::metrics;

/// The longest a scrape connection may take to send its head, or to take the answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest scrape request head read (a Prometheus scrape sends a few hundred bytes).
const MAX_HEAD_BYTES: usize = 8192;

/// The path that answers.
pub const PATH: &str = "/metrics";

/// The running endpoint thread and the pipe that stops it.
pub struct Scrape {
    /// Closing it (dropping it) wakes the thread's poll with POLLHUP on the read end: stop.
    stop: OwnedFd,
    thread: JoinHandle<()>,
}

impl Scrape {
    /// Starts the thread on `listener` (a dup of the master's non-blocking metrics socket).
    pub fn start(listener: TcpListener) -> io::Result<Scrape> {
        let (stop_read, stop_write) = nix::unistd::pipe()?;
        let thread = std::thread::Builder::new()
            .name("metrics".to_string())
            .spawn(move || run(&listener, &stop_read))?;
        Ok(Scrape {
            stop: stop_write,
            thread,
        })
    }

    /// Stops accepting scrapes and joins the thread (a scrape being answered finishes first,
    /// within [`SCRAPE_TIMEOUT`]). The listener's dup closes with the thread.
    pub fn finish(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Waits for a scrape or the stop, answers each scrape, returns on the stop.
fn run(listener: &TcpListener, stop: &OwnedFd) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => {
                log::error!("metrics endpoint: poll() failed: {errno}; scrapes of this child stop");
                return;
            }
        }
        if fds[1].revents().is_some_and(|events| !events.is_empty()) {
            return;
        }
        // Another child may have taken it: the socket is non-blocking, WouldBlock is normal.
        match listener.accept() {
            Ok((stream, _)) => answer(stream),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                log::warn!("metrics endpoint: accept() failed: {error}");
                // EMFILE and the like: do not spin; the next scrape tries again.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request head and answers it: `GET`/`HEAD /metrics` 200, any other path 404, any
/// other method 405, a head that does not parse 400.
fn answer(stream: TcpStream) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(SCRAPE_TIMEOUT)).is_err()
    {
        return;
    }
    let limits = Limits {
        max_header_line: MAX_HEAD_BYTES,
        max_headers: 100,
        max_head_bytes: MAX_HEAD_BYTES,
    };
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let parsed = loop {
        match head::parse(&buffer, &limits) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::Complete(head, _)) => break Ok(head),
            Err(error) => break Err(error),
        }
        match (&stream).read(&mut chunk) {
            // The client left or was too slow: nothing to answer.
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let (response, version, head_request) = match parsed {
        Err(error) => (
            Response::text(error.status(), &format!("{}\n", error.message())),
            Version::Http11,
            false,
        ),
        Ok(head) => {
            let response = if head.path() != PATH {
                Response::text(404, "Not found: metrics are at /metrics.\n")
            } else if head.method != "GET" && head.method != "HEAD" {
                Response::text(405, "Method not allowed: use GET.\n").header("Allow", "GET, HEAD")
            } else {
                exposition()
            };
            (response, head.version, head.method == "HEAD")
        }
    };
    let options = WriteOptions {
        version,
        keep_alive: false,
        head_request,
    };
    if response::write_response(&mut &stream, response, &options).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// The 200 answer: the exposition of the shared block.
fn exposition() -> Response {
    let Some(block) = metrics::block() else {
        return Response::text(503, "The metrics block is not mapped in this process.\n");
    };
    let mut response = Response::new(200).header("Content-Type", metrics::exposition::CONTENT_TYPE);
    response.body = Body::Bytes(metrics::exposition::render(block).into_bytes());
    response
}
