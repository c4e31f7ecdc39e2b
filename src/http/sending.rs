//! A response on its way out, written without blocking: the part of a connection's life from
//! a response's first byte to its last.
//!
//! A worker writes every response (except a streamed `Body::Reader`) through [`Outgoing`], with
//! non-blocking writes. Most responses fit in the socket's send buffer and are done at once.
//! What the socket cannot take yet (a download to a client slower than the disk, or one that
//! stopped reading) becomes a [`Sending`]: the connection goes back to the acceptor, which
//! polls it for room (POLLOUT) and hands it to a worker again when there is some. A slow reader
//! so holds a socket and a file descriptor, never a worker thread, and a fresh request is
//! answered while any number of slow downloads run.
//!
//! # The minimum-rate rule
//!
//! A response must keep moving. It is abandoned, and its connection closed, when
//! - the socket took no byte of it for `client_send_timeout` (a stall), or
//! - more than `client_send_timeout` after it began, it has moved fewer than
//!   `client_send_min_rate` bytes a second on average since it began.
//!
//! Both are one deadline ([`Sending::deadline`]), recomputed after each write, that the
//! acceptor polls against.
//!
//! The rate is measured from the response's first byte, and the time a parked response waits
//! for a free worker after its socket had room again is not counted against the client: that
//! wait is ours.
//!
//! # Memory
//!
//! A parked file body holds its file descriptor and an offset; an in-memory body (a list page,
//! at most 1 MiB) holds its unsent bytes, copied out of the response's buffers when it parks so
//! that what is held is what is counted. Parked in-memory bytes count against the child's
//! [`SendBudget`] (`worker_threads` × [`BUDGET_PER_WORKER`]); a response over
//! [`ALWAYS_PARKED_BYTES`] that finds the budget full spills its unsent bytes to an unlinked
//! file in the spill folder (the store's first data folder) and parks as a file body. Only if
//! that fails too (a full disk) does its worker finish it, waiting for room under the same
//! deadline.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::sendfile::sendfile;

use super::request_id::RequestId;
use super::response::{Body, Prepared};
use crate::logging;

/// What the socket took of a response in one [`Outgoing::advance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every byte of the response has been written.
    Done,
    /// The socket's send buffer is full: wait for room (POLLOUT).
    Blocked,
}

/// The most one sendfile(2) call is asked to send, to stay within its per-call limit.
const SENDFILE_CHUNK: u64 = 1 << 30;

/// A parked response holding at most this many bytes in memory (a head and a small body) is
/// always parked: it costs about what the connection's read buffer does.
pub const ALWAYS_PARKED_BYTES: usize = 4 * 1024;

/// The in-memory bytes of parked responses a child holds, per worker thread: one list page.
pub const BUDGET_PER_WORKER: usize = 1024 * 1024;

/// The bytes of a response not yet taken by the socket: the head and an in-memory body,
/// then the rest of a file body.
pub struct Outgoing {
    head: Vec<u8>,
    body: Vec<u8>,
    /// Bytes of `head` then `body` already written.
    written: usize,
    file: Option<FileRest>,
    /// Body bytes the response carries (the access log's figure).
    body_len: u64,
    /// Bytes the socket has taken so far, head included.
    sent: u64,
    /// The connection must close once the response is sent.
    must_close: bool,
}

/// What is left of a file body: sendfile(2) from `offset`, `remaining` bytes.
struct FileRest {
    file: File,
    offset: libc::off_t,
    remaining: u64,
}

impl Outgoing {
    /// The response `prepared` as bytes to send. A `Body::Reader` cannot be sent this way (its
    /// reads may block, and it has no offset to resume from): it is handed back.
    pub fn new(prepared: Prepared) -> Result<Outgoing, Prepared> {
        let Prepared {
            head,
            body,
            chunked,
            must_close,
        } = prepared;
        let (body, file, body_len) = match body {
            Body::Empty => (Vec::new(), None, 0),
            Body::Bytes(bytes) => {
                let len = bytes.len() as u64;
                (bytes, None, len)
            }
            Body::File { file, len } => {
                let offset = {
                    let mut file_ref = &file;
                    io::Seek::stream_position(&mut file_ref).unwrap_or(0) as libc::off_t
                };
                let rest = FileRest {
                    file,
                    offset,
                    remaining: len,
                };
                (Vec::new(), Some(rest), len)
            }
            body @ Body::Reader { .. } => {
                return Err(Prepared {
                    head,
                    body,
                    chunked,
                    must_close,
                })
            }
        };
        Ok(Outgoing {
            head,
            body,
            written: 0,
            file,
            body_len,
            sent: 0,
            must_close,
        })
    }

    /// Writes to `socket` (non-blocking) until the response is done or the socket is full.
    /// An error means the response cannot be completed: the connection must be dropped.
    pub fn advance(&mut self, socket: &TcpStream) -> io::Result<Progress> {
        loop {
            let in_memory = self.head.len() + self.body.len();
            if self.written < in_memory {
                let from_head = self.head.get(self.written..).unwrap_or_default();
                let from_body = self
                    .body
                    .get(self.written.saturating_sub(self.head.len())..)
                    .unwrap_or_default();
                let slices = [IoSlice::new(from_head), IoSlice::new(from_body)];
                match (&*socket).write_vectored(&slices) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        crate::metrics::sent(n as u64);
                        self.written += n;
                        self.sent += n as u64;
                        if self.written >= in_memory {
                            // Sent: give the memory back now, not when the file part ends.
                            self.head = Vec::new();
                            self.body = Vec::new();
                            self.written = 0;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Progress::Blocked)
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
                continue;
            }
            let Some(rest) = self.file.as_mut() else {
                return Ok(Progress::Done);
            };
            if rest.remaining == 0 {
                self.file = None;
                continue;
            }
            let count = rest.remaining.min(SENDFILE_CHUNK) as usize;
            match sendfile(socket.as_fd(), &rest.file, Some(&mut rest.offset), count) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "file body ended {} bytes short of its {} bytes",
                            rest.remaining, self.body_len
                        ),
                    ))
                }
                Ok(n) => {
                    crate::metrics::sent(n as u64);
                    rest.remaining -= n as u64;
                    self.sent += n as u64;
                }
                Err(Errno::EAGAIN) => return Ok(Progress::Blocked),
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(io::Error::from(errno)),
            }
        }
    }

    /// The in-memory bytes still to send.
    pub fn held_bytes(&self) -> usize {
        (self.head.len() + self.body.len()).saturating_sub(self.written)
    }

    /// The in-memory bytes still to send, in one buffer of their size; the response's own
    /// buffers (the whole head and body) are dropped.
    fn take_unsent(&mut self) -> Vec<u8> {
        let mut unsent = Vec::with_capacity(self.held_bytes());
        unsent.extend_from_slice(self.head.get(self.written..).unwrap_or_default());
        unsent.extend_from_slice(
            self.body
                .get(self.written.saturating_sub(self.head.len())..)
                .unwrap_or_default(),
        );
        self.head = Vec::new();
        self.body = Vec::new();
        self.written = 0;
        unsent
    }

    /// Keeps only the unsent bytes in memory, so that what it holds is what it is charged.
    fn compact(&mut self) {
        if self.written > 0 || self.body.capacity() > self.body.len() {
            self.head = self.take_unsent();
        }
    }

    /// Moves the unsent in-memory bytes to an unlinked file in `dir` (O_TMPFILE: it has no
    /// name, and the space is freed when the response ends), to be sent from there. Only for a
    /// response without a file part.
    fn spill(&mut self, dir: &Path) -> io::Result<()> {
        if self.file.is_some() {
            return Err(io::Error::other("a file body is not spilled"));
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)?;
        let unsent = self.take_unsent();
        if let Err(error) = file.write_all(&unsent) {
            // Put the bytes back: the worker finishes the response from memory.
            self.head = unsent;
            return Err(error);
        }
        self.file = Some(FileRest {
            file,
            offset: 0,
            remaining: unsent.len() as u64,
        });
        Ok(())
    }

    pub fn must_close(&self) -> bool {
        self.must_close
    }
}

/// What the access log says of a request, kept until its response ends.
pub struct AccessRecord {
    /// The id its response carries (`x-openstack-request-id`); the access line names it.
    pub request_id: RequestId,
    pub peer: SocketAddr,
    pub method: String,
    pub target: String,
    pub status: u16,
    /// When the request was taken by a worker.
    pub started: Instant,
}

/// A duration in milliseconds with one decimal (`12.3`), rounded to the nearest tenth, written
/// with integers: `{:.1}` of an `f64` was a tenth of an access line's instructions (issue 13).
fn push_millis(line: &mut String, duration: Duration) {
    let tenths = (duration.as_micros() + 50) / 100;
    push_decimal(line, u64::try_from(tenths / 10).unwrap_or(u64::MAX));
    line.push('.');
    line.push(char::from(b'0' + (tenths % 10) as u8));
}

/// `number` in decimal, digit by digit: the access line's numbers through `write!` were a fifth
/// of its cost (issue 13).
fn push_decimal(line: &mut String, mut number: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        line.push(char::from(digit));
    }
}

/// The client's address and port, an IPv4 one digit by digit (`SocketAddr`'s `Display` goes
/// through the formatter once per octet).
fn push_peer(line: &mut String, peer: SocketAddr) {
    match peer {
        SocketAddr::V4(address) => {
            for (index, octet) in address.ip().octets().into_iter().enumerate() {
                if index > 0 {
                    line.push('.');
                }
                push_decimal(line, octet.into());
            }
            line.push(':');
            push_decimal(line, address.port().into());
        }
        SocketAddr::V6(address) => {
            use std::fmt::Write as _;
            let _ = write!(line, "{address}");
        }
    }
}

/// A client's method or target as written between the access line's quotes: `"` and `\` as
/// `\"` and `\\` (httparse takes both in a target), so the quoted field ends where the server
/// ended it and a client cannot write fields of its own after it. Control characters are left
/// to `logging::escape_message`, which every record goes through.
fn push_quoted(line: &mut String, field: &str) {
    if !field.contains(['"', '\\']) {
        line.push_str(field);
        return;
    }
    for c in field.chars() {
        if c == '"' || c == '\\' {
            line.push('\\');
        }
        line.push(c);
    }
}

impl AccessRecord {
    /// Logs the access line of a response sent whole. On whichever thread the response ends (a
    /// worker, or another one that finished it after it waited in the acceptor), the line names
    /// the request's id:
    /// `[req-ID] 127.0.0.1:45678 "GET /v2/images/ID" 200 1234 0.3ms`.
    pub fn completed(&self, body_bytes: u64) {
        logging::access(self.is_healthcheck(), |line| {
            self.push_start(line);
            push_decimal(line, body_bytes);
            line.push(' ');
            push_millis(line, self.started.elapsed());
            line.push_str("ms");
        });
    }

    /// The response ended early: `why` is what stopped it.
    pub fn not_completed(&self, why: &dyn std::fmt::Display) {
        logging::access(self.is_healthcheck(), |line| {
            use std::fmt::Write as _;
            self.push_start(line);
            line.push_str("- ");
            push_millis(line, self.started.elapsed());
            let _ = write!(line, "ms (response not completed: {why})");
        });
    }

    /// What both lines start with: the request's id, the client, the quoted request line and
    /// the status, each followed by a space.
    fn push_start(&self, line: &mut String) {
        line.push('[');
        line.push_str(self.request_id.as_str());
        line.push_str("] ");
        push_peer(line, self.peer);
        line.push_str(" \"");
        push_quoted(line, &self.method);
        line.push(' ');
        push_quoted(line, &self.target);
        line.push_str("\" ");
        push_decimal(line, self.status.into());
        line.push(' ');
    }

    /// Whether this is the health check, which `logging` keeps out of the access log unless
    /// `access_log_healthcheck` asks: `GET` or `HEAD` of `/healthcheck`, with or without a query.
    fn is_healthcheck(&self) -> bool {
        let path = self.target.split('?').next().unwrap_or_default();
        path == "/healthcheck" && (self.method == "GET" || self.method == "HEAD")
    }
}

/// The rule a response's progress is held to: `client_send_timeout` and `client_send_min_rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendRule {
    /// Longest stall, and the grace before the rate counts.
    pub timeout: Duration,
    /// Least average bytes a second since the response began; 0 turns the rate rule off.
    pub min_rate: u64,
}

/// A response the socket could not take whole, with what it needs to be finished later by any
/// worker, or abandoned by the acceptor at its deadline.
pub struct Sending {
    outgoing: Outgoing,
    record: AccessRecord,
    /// When its first byte was to be written: the rate rule's clock starts here.
    began: Instant,
    /// The socket last took a byte, or the client made room in it (or the response began).
    last_progress: Instant,
    /// Time spent waiting for a worker after the socket had room: not the client's doing, so
    /// not counted by the rate rule.
    waited: Duration,
    /// Since when it waits for a worker, once the acceptor saw room ([`Sending::resumable`]).
    queued_at: Option<Instant>,
    /// Its share of the child's budget, held while it is parked with bytes in memory.
    reservation: Option<Reservation>,
}

/// Why a response was abandoned at its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandoned {
    Stalled,
    TooSlow,
}

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abandoned::Stalled => f.write_str("the client took nothing for client_send_timeout"),
            Abandoned::TooSlow => f.write_str("the client read slower than client_send_min_rate"),
        }
    }
}

impl Sending {
    pub fn new(outgoing: Outgoing, record: AccessRecord, now: Instant) -> Sending {
        Sending {
            outgoing,
            record,
            began: now,
            last_progress: now,
            waited: Duration::ZERO,
            queued_at: None,
            reservation: None,
        }
    }

    /// The acceptor saw room in the socket (POLLOUT): the client read, which counts as
    /// progress, and from now until a worker takes it the wait is ours.
    pub fn resumable(&mut self, now: Instant) {
        self.last_progress = now;
        self.queued_at = Some(now);
    }

    /// Writes what the socket takes; see [`Outgoing::advance`]. Logs the access line when the
    /// response ends, either way.
    pub fn advance(&mut self, socket: &TcpStream, now: Instant) -> io::Result<Progress> {
        if let Some(queued_at) = self.queued_at.take() {
            let waited = now.saturating_duration_since(queued_at);
            self.waited += waited;
            self.last_progress = self.last_progress.max(now);
        }
        let before = self.outgoing.sent;
        let result = self.outgoing.advance(socket);
        if self.outgoing.sent > before {
            self.last_progress = now;
        }
        match &result {
            Ok(Progress::Done) => {
                self.reservation = None;
                self.record.completed(self.outgoing.body_len);
            }
            Ok(Progress::Blocked) => {}
            Err(error) => self.record.not_completed(error),
        }
        result
    }

    /// When the response is abandoned unless the socket takes more (see the module's rule).
    pub fn deadline(&self, rule: &SendRule) -> Instant {
        let stalled = self.last_progress + rule.timeout;
        if rule.min_rate == 0 {
            return stalled;
        }
        // Fewer than min_rate × elapsed bytes is too slow; `sent` bytes buy sent / min_rate.
        let earned = Duration::from_secs_f64(self.outgoing.sent as f64 / rule.min_rate as f64);
        let too_slow = self.began + self.waited + rule.timeout.max(earned);
        stalled.min(too_slow)
    }

    /// Which part of the rule the deadline at `now` broke; logs the access line.
    pub fn abandon(&self, rule: &SendRule) -> Abandoned {
        let why = if self.last_progress + rule.timeout <= self.deadline(rule) {
            Abandoned::Stalled
        } else {
            Abandoned::TooSlow
        };
        self.record.not_completed(&why);
        why
    }

    /// Makes it ready to wait in the acceptor, and says whether it may: its in-memory bytes are
    /// few, or fit in `budget` (reserved until it ends), or were spilled to a file in
    /// `spill_dir`. Otherwise (no budget, no spill) its worker finishes it.
    pub fn may_park(&mut self, budget: &Arc<SendBudget>, spill_dir: Option<&Path>) -> bool {
        if self.reservation.is_some() {
            // Compacted when it first parked: it holds no more than it reserved.
            return true;
        }
        let held = self.outgoing.held_bytes();
        if held <= ALWAYS_PARKED_BYTES {
            self.outgoing.compact();
            return true;
        }
        self.reservation = budget.reserve(held);
        if self.reservation.is_some() {
            self.outgoing.compact();
            return true;
        }
        match spill_dir.map(|dir| self.outgoing.spill(dir)) {
            Some(Ok(())) => true,
            Some(Err(error)) => {
                log::warn!(
                    "cannot spill a {held}-byte response for a slow client to {}: {error}; its \
                     worker waits for the client instead (free space there, or fewer slow \
                     clients, end this)",
                    spill_dir.map_or(String::new(), |dir| dir.display().to_string())
                );
                false
            }
            None => false,
        }
    }

    /// The connection closes once this response is sent.
    pub fn must_close(&self) -> bool {
        self.outgoing.must_close()
    }
}

/// The in-memory bytes that parked responses of one child may hold together.
pub struct SendBudget {
    limit: usize,
    used: AtomicUsize,
}

impl SendBudget {
    pub fn new(limit: usize) -> Arc<SendBudget> {
        Arc::new(SendBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` of the budget if they fit; given back when the reservation drops.
    pub fn reserve(self: &Arc<SendBudget>, bytes: usize) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// A share of a [`SendBudget`], returned when dropped.
pub struct Reservation {
    budget: Arc<SendBudget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Version;
    use crate::http::response::{self, Response, WriteOptions};
    use std::io::{Read, Seek};
    use std::net::TcpListener;

    const OPTIONS: WriteOptions = WriteOptions {
        version: Version::Http11,
        keep_alive: true,
        head_request: false,
    };

    /// The access line's duration: milliseconds, one decimal, rounded to the nearest tenth.
    #[test]
    fn access_line_durations_have_one_decimal() {
        for (micros, text) in [
            (0, "0.0"),
            (49, "0.0"),
            (50, "0.1"),
            (1_234, "1.2"),
            (1_250, "1.3"),
            (99_960, "100.0"),
            (12_345_678, "12345.7"),
        ] {
            let mut line = String::new();
            push_millis(&mut line, Duration::from_micros(micros));
            assert_eq!(line, text);
        }
    }

    /// The access line's numbers, addresses and quoted fields, written without the formatter,
    /// read as `Display` writes them (and `"`, `\` escaped inside the quotes).
    #[test]
    fn access_line_fields_read_as_display_writes_them() {
        for number in [0, 7, 10, 99, 200, 65_535, 1_234_567_890, u64::MAX] {
            let mut line = String::new();
            push_decimal(&mut line, number);
            assert_eq!(line, number.to_string());
        }
        for peer in [
            "127.0.0.1:45678",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.30.40:9292",
            "[::1]:9292",
            "[fe80::1%2]:80",
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut line = String::new();
            push_peer(&mut line, peer);
            assert_eq!(line, peer.to_string());
        }
        for (field, quoted) in [
            ("/v2/images", "/v2/images"),
            ("/a\"b", "/a\\\"b"),
            ("/a\\b\"", "/a\\\\b\\\""),
            ("/é\"", "/é\\\""),
        ] {
            let mut line = String::new();
            push_quoted(&mut line, field);
            assert_eq!(line, quoted, "{field:?}");
        }
    }

    /// An outgoing 200 response with `bytes` as its body.
    fn bytes_outgoing(bytes: Vec<u8>) -> Outgoing {
        let mut response = Response::new(200);
        response.body = Body::Bytes(bytes);
        Outgoing::new(response::prepare(response, &OPTIONS))
            .ok()
            .unwrap()
    }

    fn record(started: Instant) -> AccessRecord {
        AccessRecord {
            request_id: RequestId::generate(),
            peer: "127.0.0.1:1".parse().unwrap(),
            method: "GET".into(),
            target: "/".into(),
            status: 200,
            started,
        }
    }

    /// A connected pair on the loopback, ours non-blocking with a small send buffer.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, peer)
    }

    fn file_of(bytes: &[u8], position: u64) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.seek(io::SeekFrom::Start(position)).unwrap();
        file
    }

    /// Reads everything the peer gets until `outgoing` is done, advancing it when blocked.
    fn drive(outgoing: &mut Outgoing, ours: &TcpStream, peer: &mut TcpStream) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        peer.set_nonblocking(true).unwrap();
        loop {
            let progress = outgoing.advance(ours).unwrap();
            loop {
                match peer.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            if progress == Progress::Done {
                peer.set_nonblocking(false).unwrap();
                peer.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                while let Ok(n) = peer.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    received.extend_from_slice(&buf[..n]);
                }
                return received;
            }
        }
    }

    #[test]
    fn a_file_body_blocks_on_a_full_socket_and_resumes_where_it_stopped() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut response = Response::new(200);
        // Sent from the file's position: the first 7 bytes are not part of the body.
        response.body = Body::File {
            file: file_of(&data, 7),
            len: data.len() as u64 - 7,
        };
        let mut outgoing = Outgoing::new(response::prepare(response, &OPTIONS))
            .ok()
            .unwrap();
        let (ours, mut peer) = pair();
        // Nobody reads: the socket fills and the response waits.
        assert_eq!(outgoing.advance(&ours).unwrap(), Progress::Blocked);
        assert!(outgoing.sent < data.len() as u64);
        let received = drive(&mut outgoing, &ours, &mut peer);
        let body_at = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(received[..body_at].starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(received[body_at..] == data[7..], "the body differs");
        assert_eq!(outgoing.sent, received.len() as u64);
    }

    #[test]
    fn an_in_memory_body_goes_out_whole_with_its_head_and_frees_its_memory() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
        let mut outgoing = bytes_outgoing(data.clone());
        let (ours, mut peer) = pair();
        assert_eq!(outgoing.advance(&ours).unwrap(), Progress::Blocked);
        assert!(outgoing.held_bytes() > 0 && outgoing.held_bytes() < data.len() + 100);
        let received = drive(&mut outgoing, &ours, &mut peer);
        let body_at = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(received[body_at..] == data[..]);
        assert_eq!(outgoing.held_bytes(), 0);
        assert_eq!(outgoing.head.capacity() + outgoing.body.capacity(), 0);
    }

    #[test]
    fn a_streamed_body_is_handed_back() {
        let mut response = Response::new(200);
        response.body = Body::Reader {
            reader: Box::new(io::empty()),
            len: None,
        };
        assert!(Outgoing::new(response::prepare(response, &OPTIONS)).is_err());
    }

    #[test]
    fn over_the_budget_a_response_spills_to_an_unlinked_file_and_goes_out_whole() {
        let budget = SendBudget::new(0);
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 239) as u8).collect();
        let outgoing = bytes_outgoing(data.clone());
        let mut sending = Sending::new(outgoing, record(Instant::now()), Instant::now());
        let (ours, mut peer) = pair();
        assert_eq!(
            sending.advance(&ours, Instant::now()).unwrap(),
            Progress::Blocked
        );
        assert!(sending.may_park(&budget, Some(dir.path())));
        assert_eq!(
            budget.used(),
            0,
            "a spilled response takes none of the budget"
        );
        assert_eq!(sending.outgoing.held_bytes(), 0, "nothing left in memory");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the spill file has no name"
        );
        let received = drive(&mut sending.outgoing, &ours, &mut peer);
        let body_at = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(received[body_at..] == data[..], "the body differs");
        // Nowhere to spill (not a folder): the worker keeps it.
        let outgoing = bytes_outgoing(data);
        let mut kept = Sending::new(outgoing, record(Instant::now()), Instant::now());
        let (ours, _peer) = pair();
        assert_eq!(
            kept.advance(&ours, Instant::now()).unwrap(),
            Progress::Blocked
        );
        assert!(!kept.may_park(&budget, Some(&dir.path().join("missing"))));
    }

    #[test]
    fn a_parked_response_holds_only_its_unsent_bytes() {
        let budget = SendBudget::new(4 * 1024 * 1024);
        let outgoing = bytes_outgoing(vec![7u8; 1_000_000]);
        let mut sending = Sending::new(outgoing, record(Instant::now()), Instant::now());
        let (ours, _peer) = pair();
        assert_eq!(
            sending.advance(&ours, Instant::now()).unwrap(),
            Progress::Blocked
        );
        let held = sending.outgoing.held_bytes();
        assert!(held < 1_000_000, "something was sent");
        assert!(sending.may_park(&budget, None));
        assert_eq!(budget.used(), held);
        let allocated = sending.outgoing.head.capacity() + sending.outgoing.body.capacity();
        assert_eq!(allocated, held, "the sent part's memory is given back");
    }

    #[test]
    fn time_waiting_for_a_worker_is_not_counted_against_the_client() {
        let start = Instant::now();
        let rule = SendRule {
            timeout: Duration::from_secs(10),
            min_rate: 1000,
        };
        let outgoing = bytes_outgoing(vec![0; 10]);
        let mut sending = Sending::new(outgoing, record(start), start);
        // Room at 15 s, a worker only at 25 s: those 10 s are ours.
        sending.resumable(start + Duration::from_secs(15));
        let (ours, _peer) = pair();
        let _ = sending.advance(&ours, start + Duration::from_secs(25));
        assert_eq!(sending.waited, Duration::from_secs(10));
        sending.outgoing.sent = 20_000;
        // 20,000 bytes buy 20 s, plus the 10 s waited.
        assert_eq!(sending.deadline(&rule), start + Duration::from_secs(30));
    }

    #[test]
    fn the_deadline_is_the_stall_or_the_rate_whichever_comes_first() {
        let start = Instant::now();
        let rule = SendRule {
            timeout: Duration::from_secs(10),
            min_rate: 1000,
        };
        let outgoing = bytes_outgoing(vec![0; 10]);
        let mut sending = Sending::new(outgoing, record(start), start);
        // Nothing sent: the stall and the grace end together, at 10 s.
        assert_eq!(sending.deadline(&rule), start + Duration::from_secs(10));
        // 50,000 bytes at 1,000 a second cover 50 s, but a stall ends it 10 s after the last.
        sending.outgoing.sent = 50_000;
        sending.last_progress = start + Duration::from_secs(3);
        assert_eq!(sending.deadline(&rule), start + Duration::from_secs(13));
        assert_eq!(sending.abandon(&rule), Abandoned::Stalled);
        // Progress at 45 s: now the rate binds, at 50 s.
        sending.last_progress = start + Duration::from_secs(45);
        assert_eq!(sending.deadline(&rule), start + Duration::from_secs(50));
        assert_eq!(sending.abandon(&rule), Abandoned::TooSlow);
        // No rate rule: only the stall.
        let no_rate = SendRule {
            min_rate: 0,
            ..rule
        };
        assert_eq!(sending.deadline(&no_rate), start + Duration::from_secs(55));
    }

    #[test]
    fn the_budget_parks_what_fits_and_gives_back_what_ends() {
        // Room for two 1 MiB bodies with their heads, not three.
        let budget = SendBudget::new(3 * 1024 * 1024);
        let big = |n: usize| {
            Sending::new(
                bytes_outgoing(vec![0; n]),
                record(Instant::now()),
                Instant::now(),
            )
        };
        let mut first = big(1024 * 1024);
        let mut second = big(1024 * 1024);
        let mut third = big(1024 * 1024);
        let mut small = big(1000);
        assert!(first.may_park(&budget, None));
        assert!(second.may_park(&budget, None));
        assert!(
            !third.may_park(&budget, None),
            "over the budget: its worker finishes it"
        );
        assert!(
            small.may_park(&budget, None),
            "a small response always parks"
        );
        assert!(budget.used() > 2 * 1024 * 1024, "{}", budget.used());
        drop(first);
        assert!(third.may_park(&budget, None), "room again once one ended");
        drop(second);
        drop(third);
        assert_eq!(budget.used(), 0);
    }
}
