//! The child's metrics endpoint: one thread that answers `GET /metrics` on the metrics listener
//! with the text exposition of the shared block (`metrics::exposition`). Every serving child
//! runs one on the same listening socket (the master binds it and never serves it), so a scrape
//! is answered by whichever child accepts it; the numbers are the same in all of them.
//!
//! One connection at a time, one request per connection, `Connection: close`: a scrape is rare
//! and small. A connection gets [`SCRAPE_TIMEOUT`] in all, from its accept, to send its head and
//! take the answer: one deadline for the whole exchange, not per read (a client trickling a
//! byte every few seconds would otherwise hold the thread for hours). Past it the client is
//! dropped, so a stuck scraper delays this child's next scrape by at most that while the other
//! children accept. The socket is non-blocking and every wait polls it together with the stop
//! pipe, so the stop also ends an answer in progress.
//!
//! The thread stops, and closes its copy of the listener, when the child's drain begins (the
//! acceptor calls the [`Stop`] taken with [`Scrape::take_stop`]), as its API listeners do: a
//! draining child must not keep answering on an address a reload may have dropped or re-bound.
//! [`Scrape::finish`] then only joins it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::http::head::{self, Limits, Parsed, Version};
use crate::http::response::{self, Body, Response, WriteOptions};
use crate::metrics;

/// The longest a scrape connection may take, from its accept, to send its head and take the
/// answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest scrape request head read (a Prometheus scrape sends a few hundred bytes).
const MAX_HEAD_BYTES: usize = 8192;

/// The path that answers.
pub const PATH: &str = "/metrics";

/// The running endpoint thread and the pipe that stops it.
pub struct Scrape {
    /// `None` once taken by [`Scrape::take_stop`].
    stop: Option<Stop>,
    thread: JoinHandle<()>,
}

/// The write end of the thread's stop pipe. Closing it (dropping it) wakes the thread's poll
/// with POLLHUP on the read end, whether it waits for a scrape or in the middle of one: stop.
pub struct Stop(OwnedFd);

impl Stop {
    /// Stops the thread (it returns at once, closing its listener) without waiting for it.
    pub fn stop(self) {
        drop(self.0);
    }
}

impl Scrape {
    /// Starts the thread on `listener` (a dup of the master's non-blocking metrics socket).
    pub fn start(listener: TcpListener) -> io::Result<Scrape> {
        let (stop_read, stop_write) = nix::unistd::pipe()?;
        let thread = std::thread::Builder::new()
            .name("metrics".to_string())
            .spawn(move || run(&listener, &stop_read))?;
        Ok(Scrape {
            stop: Some(Stop(stop_write)),
            thread,
        })
    }

    /// The stop, for whoever decides when the thread stops (the acceptor, as the drain begins).
    pub fn take_stop(&mut self) -> Option<Stop> {
        self.stop.take()
    }

    /// Stops the thread if its [`Stop`] has not been used yet, and joins it: prompt either way,
    /// since the stop cuts a scrape in progress short. The listener's dup closes with the thread.
    pub fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.stop();
        }
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
            Ok((stream, _)) => answer(stream, stop),
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

/// What waiting on a scrape connection came to.
enum Waited {
    /// The socket is ready (or has an error or hang-up, which the next call reports).
    Ready,
    /// The stop pipe closed, or the deadline passed, or poll failed: drop the connection.
    GiveUp,
}

/// Waits until `stream` is ready for `events`, the stop pipe closes or `deadline` passes.
fn wait(stream: &TcpStream, events: PollFlags, stop: &OwnedFd, deadline: Instant) -> Waited {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Waited::GiveUp;
        }
        let mut fds = [
            PollFd::new(stream.as_fd(), events),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        // Rounded up to the next millisecond, so that a wait never ends just short of the
        // deadline and spins.
        let timeout = PollTimeout::try_from(remaining + Duration::from_micros(999))
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Waited::GiveUp,
        }
        if fds[1].revents().is_some_and(|events| !events.is_empty()) {
            return Waited::GiveUp;
        }
        if fds[0].revents().is_some_and(|events| !events.is_empty()) {
            return Waited::Ready;
        }
    }
}

/// Reads one request head and answers it: `GET`/`HEAD /metrics` 200, any other path 404, any
/// other method 405, a head that does not parse 400. The whole exchange has [`SCRAPE_TIMEOUT`]
/// from now, and ends at once when the stop pipe closes.
fn answer(stream: TcpStream, stop: &OwnedFd) {
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    // accept(2) does not pass the listener's O_NONBLOCK on; every wait is a poll.
    if stream.set_nonblocking(true).is_err() {
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
        if let Waited::GiveUp = wait(&stream, PollFlags::POLLIN, stop, deadline) {
            return;
        }
        match (&stream).read(&mut chunk) {
            Ok(n) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            // The client left, or the connection failed: nothing to answer.
            _ => return,
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
    // Rendered whole first (a few kilobytes), then sent as the socket takes it, within the
    // same deadline.
    let mut bytes = Vec::new();
    if response::write_response(&mut bytes, response, &options).is_err() {
        return;
    }
    let mut sent = 0;
    while sent < bytes.len() {
        if let Waited::GiveUp = wait(&stream, PollFlags::POLLOUT, stop, deadline) {
            return;
        }
        match (&stream).write(&bytes[sent..]) {
            Ok(n) if n > 0 => sent += n,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            _ => return,
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
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
