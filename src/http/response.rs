//! Responses: a small builder and the writer that puts one on the wire as HTTP/1.1.
//!
//! Handlers build a [`Response`]; the connection loop calls [`write_response`] with the
//! request's version and persistence, and closes the connection when [`Written::must_close`]
//! says so or when writing fails. The writer owns the framing headers (Content-Length,
//! Transfer-Encoding, Connection): it derives them from the body and the options (RFC 9112 §6,
//! §9.3) and drops any copies the handler set, so a handler can never frame a message wrongly.
//! Header names and values are checked when added, so CR and LF never reach the wire.
//!
//! It does not add Date or Server, does not compress, and does not decide persistence: the
//! caller passes it in [`WriteOptions`].

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::sendfile::sendfile;

use crate::http::head::{is_token, Version};

/// Size of the buffer a body of unknown length is copied through, and of the largest
/// in-memory body sent in the same write as the head. Memory per response stays at this
/// whatever the body size; a larger body is simply written in several pieces.
pub const BODY_BUFFER_BYTES: usize = 64 * 1024;

/// A response body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// A streamed body; with `len: Some(n)` exactly `n` bytes are sent (Content-Length), with
    /// `None` it is sent chunked (HTTP/1.1) or delimited by closing the connection (HTTP/1.0).
    Reader {
        reader: Box<dyn Read + Send>,
        len: Option<u64>,
    },
    /// `len` bytes of a file from its current position, sent with sendfile(2) when the writer
    /// is a socket ([`Sink::socket_fd`]): image downloads reach the socket without a copy
    /// through user space. (`std::io::copy` deliberately does not use sendfile from a file to a
    /// socket, since later changes to the file could show in bytes already "sent"; image files
    /// never change once renamed into place, so here it is safe.)
    File {
        file: std::fs::File,
        len: u64,
    },
}

/// A response under construction: status, headers set by the handler, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Body,
    /// The application accepted the request's credentials (see [`Response::credentials_accepted`]).
    pub accepted_credentials: bool,
}

/// What the writer needs to know about the request being answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// The request's version: HTTP/1.0 clients get no chunked encoding (RFC 9112 §7).
    pub version: Version,
    /// Whether the connection stays open after this response (the request's wish and ours).
    pub keep_alive: bool,
    /// A HEAD request: headers as for GET, no body bytes (RFC 9110 §9.3.2).
    pub head_request: bool,
}

/// The outcome of [`write_response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Body bytes written (chunk framing not counted).
    pub body_bytes: u64,
    /// The connection must be closed now: `keep_alive` was false, or the body was delimited
    /// by closing the connection.
    pub must_close: bool,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            accepted_credentials: false,
        }
    }

    /// Says whether the application accepted the request's credentials. The connection loop
    /// uses it to bound how long the connection may then sit idle: only a client whose
    /// credentials were accepted gets `client_socket_timeout`; others wait for their next
    /// request only `client_header_timeout`.
    pub fn credentials_accepted(mut self, accepted: bool) -> Response {
        self.accepted_credentials = accepted;
        self
    }

    /// Adds a header. A name that is not a token, or a value containing CR, LF or NUL, is not
    /// added but logged: it would let whoever controls the value write arbitrary headers or a
    /// second response (response splitting). Content-Length, Transfer-Encoding and Connection
    /// are accepted here but dropped by [`write_response`], which sets its own.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        if !is_token(name.as_bytes()) {
            log::error!("refusing response header with invalid name {name:?}");
        } else if value.contains(['\r', '\n', '\0']) {
            log::error!("refusing response header {name} with CR, LF or NUL in its value");
        } else {
            self.headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// A `text/plain; charset=UTF-8` response.
    pub fn text(status: u16, body: &str) -> Response {
        let mut response =
            Response::new(status).header("Content-Type", "text/plain; charset=UTF-8");
        response.body = Body::Bytes(body.as_bytes().to_vec());
        response
    }

    /// An `application/json` response.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                let mut response = Response::new(status).header("Content-Type", "application/json");
                response.body = Body::Bytes(bytes);
                response
            }
            // What the API sends (values, documents with string keys) always serialises; should
            // that ever change, fail loudly but safely.
            Err(e) => {
                log::error!("cannot serialise JSON response: {e}");
                Response::new(500)
            }
        }
    }

    /// The headers set so far, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Whether a header with this name (ASCII case-insensitive) has been set.
    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            Body::Reader { len, .. } => write!(f, "Reader {{ len: {len:?} }}"),
            Body::File { len, .. } => write!(f, "File {{ len: {len} }}"),
        }
    }
}

/// The reason phrase for a status (RFC 9110 §15); empty for codes we do not name, which the
/// status-line grammar allows (RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes `response`: the status line and headers in one buffer, the framing headers the
/// writer owns, then the body.
///
/// 1xx, 204 and 304 responses carry no body and no Content-Length; a HEAD response carries no
/// body bytes but the framing headers it would have had. A `Reader` with a known length is
/// copied with `std::io::copy` over `Take`, so that file-to-socket copies can use the
/// kernel's zero-copy path; one that ends early is an `UnexpectedEof` error (never padded).
/// A status outside 100..=999 is a programming error: it is logged and sent as 500.
///
/// On any error some bytes may already be on the wire: the connection must be closed.
pub fn write_response<W: Sink>(
    out: &mut W,
    response: Response,
    options: &WriteOptions,
) -> io::Result<Written> {
    let prepared = prepare(response, options);
    let must_close = prepared.must_close;
    let body_bytes = write_prepared(out, prepared)?;
    Ok(Written {
        body_bytes,
        must_close,
    })
}

/// Writes a [`Prepared`] response with blocking writes; returns the body bytes written.
pub fn write_prepared<W: Sink>(out: &mut W, prepared: Prepared) -> io::Result<u64> {
    let Prepared {
        mut head,
        body,
        chunked,
        must_close: _,
    } = prepared;
    let body_bytes = match body {
        Body::Empty => {
            out.write_all(&head)?;
            0
        }
        Body::Bytes(bytes) => {
            // One write for head and small body: two small writes can meet Nagle's algorithm
            // and the peer's delayed ACK and stall for tens of milliseconds.
            if bytes.len() <= BODY_BUFFER_BYTES {
                head.extend_from_slice(&bytes);
                out.write_all(&head)?;
            } else {
                out.write_all(&head)?;
                out.write_all(&bytes)?;
            }
            bytes.len() as u64
        }
        Body::Reader {
            reader,
            len: Some(len),
        } => {
            out.write_all(&head)?;
            let copied = io::copy(&mut reader.take(len), out)?;
            if copied < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("response body ended after {copied} of {len} bytes"),
                ));
            }
            copied
        }
        Body::File { file, len } => {
            out.write_all(&head)?;
            let copied = match out.socket_fd() {
                Some(socket) => send_file(&file, socket, len)?,
                None => io::copy(&mut file.take(len), out)?,
            };
            if copied < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file body ended after {copied} of {len} bytes"),
                ));
            }
            copied
        }
        Body::Reader { reader, len: None } if chunked => write_chunked(out, head, reader)?,
        Body::Reader { reader, len: None } => {
            out.write_all(&head)?;
            copy_buffered(reader, out)?
        }
    };
    out.flush()?;
    Ok(body_bytes)
}

/// A response made ready for the wire: its head (status line and headers, framing included)
/// and the body still to follow it. What [`write_response`] writes, and what
/// `sending::Outgoing` sends without blocking.
pub struct Prepared {
    pub head: Vec<u8>,
    /// The body to send after the head: `Empty` when none is sent (1xx, 204, 304, HEAD).
    pub body: Body,
    /// A `Reader` of unknown length goes out chunked (HTTP/1.1).
    pub chunked: bool,
    /// The connection must be closed once this response is sent (see [`Written::must_close`]).
    pub must_close: bool,
}

/// Builds the head of `response` for a request with these `options`, and says what body follows.
/// A status outside 100..=999 is a programming error: it is logged and sent as 500.
pub fn prepare(response: Response, options: &WriteOptions) -> Prepared {
    let Response {
        status,
        headers,
        body,
        accepted_credentials: _,
    } = response;
    let (status, headers, body) = if (100..=999).contains(&status) {
        (status, headers, body)
    } else {
        log::error!("refusing to send invalid status {status}; sending 500 instead");
        (500, Vec::new(), Body::Empty)
    };
    let interim = status < 200;
    let framing = framing(status, &body, options.version);
    // Only a body that is actually sent can need the close to delimit it.
    let must_close =
        !interim && (!options.keep_alive || (framing == Framing::Close && !options.head_request));
    let mut head = Vec::with_capacity(256);
    write_head(
        &mut head, status, &headers, framing, must_close, options, interim,
    );
    let skip_body = options.head_request || framing == Framing::NoBody;
    Prepared {
        head,
        body: if skip_body { Body::Empty } else { body },
        chunked: framing == Framing::Chunked,
        must_close,
    }
}

/// Where a response is written: anything `Write`, and for a socket its fd, so that a file body
/// can go out with sendfile(2).
pub trait Sink: Write {
    /// The socket's fd, or `None` for a writer that is not a socket.
    fn socket_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl Sink for Vec<u8> {}

impl Sink for &TcpStream {
    fn socket_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl Sink for TcpStream {
    fn socket_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// The most one sendfile(2) call is asked to send, to stay within its per-call limit.
const SENDFILE_CHUNK: u64 = 1 << 30;

/// Sends `len` bytes of `file`, from its current position, to `socket` with sendfile(2). On a
/// blocking socket with a send timeout, a stalled client ends it with `WouldBlock`.
fn send_file(file: &std::fs::File, socket: BorrowedFd<'_>, len: u64) -> io::Result<u64> {
    let mut offset: libc::off_t = {
        let mut file_ref = file;
        io::Seek::stream_position(&mut file_ref)? as libc::off_t
    };
    let mut sent = 0u64;
    while sent < len {
        let count = (len - sent).min(SENDFILE_CHUNK) as usize;
        let n = match sendfile(socket, file, Some(&mut offset), count) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(io::Error::from(errno)),
        };
        if n == 0 {
            // The file is shorter than its recorded size.
            break;
        }
        sent += n as u64;
    }
    Ok(sent)
}

/// Writes the interim response `100 Continue` (RFC 9110 §15.2.1) and flushes it, so the
/// client waiting on `Expect: 100-continue` sends its body.
pub fn write_continue<W: Write>(out: &mut W) -> io::Result<()> {
    out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    out.flush()
}

/// How the response body is delimited on the wire (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// 1xx, 204, 304: no body, no Content-Length (RFC 9110 §6.4.1, §8.6).
    NoBody,
    Length(u64),
    Chunked,
    /// Unknown length on HTTP/1.0: the body ends when the connection closes.
    Close,
}

/// Headers that only the writer may set: letting a handler's copy through would frame the
/// message twice, possibly contradictorily.
const WRITER_HEADERS: &[&str] = &["content-length", "transfer-encoding", "connection"];

/// Picks the response framing (RFC 9112 §6.3) from the status, the body and the version.
fn framing(status: u16, body: &Body, version: Version) -> Framing {
    if status < 200 || status == 204 || status == 304 {
        return Framing::NoBody;
    }
    match body {
        Body::Empty => Framing::Length(0),
        Body::Bytes(bytes) => Framing::Length(bytes.len() as u64),
        Body::Reader { len: Some(len), .. } => Framing::Length(*len),
        Body::File { len, .. } => Framing::Length(*len),
        Body::Reader { len: None, .. } => match version {
            Version::Http11 => Framing::Chunked,
            Version::Http10 => Framing::Close,
        },
    }
}

fn write_head(
    head: &mut Vec<u8>,
    status: u16,
    headers: &[(String, String)],
    framing: Framing,
    must_close: bool,
    options: &WriteOptions,
    interim: bool,
) {
    // RFC 9110 §6.2: we answer with our own version, HTTP/1.1, whatever the request's minor.
    head.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    for (name, value) in headers {
        if WRITER_HEADERS.iter().any(|w| name.eq_ignore_ascii_case(w)) {
            log::debug!("dropping handler-set {name} header: the writer frames the response");
            continue;
        }
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(len) => {
            head.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes())
        }
        Framing::Chunked => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::NoBody | Framing::Close => {}
    }
    // RFC 9112 §9.6: announce the close; §C.2.2: an HTTP/1.0 client needs keep-alive spelled out.
    if !interim {
        if must_close {
            head.extend_from_slice(b"Connection: close\r\n");
        } else if options.version == Version::Http10 {
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
}

/// Reads into `buf`, retrying on `Interrupted`.
fn read_some(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sends `reader` as chunks of at most [`BODY_BUFFER_BYTES`] (RFC 9112 §7.1), the head
/// going out with the first chunk and the last chunk with the final data.
fn write_chunked<W: Write>(
    out: &mut W,
    mut pending: Vec<u8>,
    mut reader: Box<dyn Read + Send>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; BODY_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = read_some(&mut reader, &mut buf)?;
        if n == 0 {
            // Last chunk and an empty trailer section.
            pending.extend_from_slice(b"0\r\n\r\n");
            out.write_all(&pending)?;
            return Ok(total);
        }
        pending.extend_from_slice(format!("{n:X}\r\n").as_bytes());
        pending.extend_from_slice(buf.get(..n).unwrap_or_default());
        pending.extend_from_slice(b"\r\n");
        out.write_all(&pending)?;
        pending.clear();
        total += n as u64;
    }
}

/// Copies `reader` to `out` through one [`BODY_BUFFER_BYTES`] buffer until EOF.
fn copy_buffered<W: Write>(mut reader: Box<dyn Read + Send>, out: &mut W) -> io::Result<u64> {
    let mut buf = vec![0u8; BODY_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let n = read_some(&mut reader, &mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        out.write_all(buf.get(..n).unwrap_or_default())?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::BodyReader;
    use crate::http::head::Framing as RequestFraming;
    use std::io::Cursor;

    const H11: WriteOptions = WriteOptions {
        version: Version::Http11,
        keep_alive: true,
        head_request: false,
    };

    /// A connected pair of TCP sockets on the loopback: (ours, the peer's).
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (ours, peer)
    }

    #[test]
    fn send_file_sends_from_the_files_position_and_stops_at_its_end() {
        use std::io::{Seek, SeekFrom};
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        file.seek(SeekFrom::Start(3)).unwrap();
        let (ours, mut peer) = socket_pair();
        assert_eq!(send_file(&file, ours.as_fd(), 4).unwrap(), 4);
        // Shorter than asked: what there is, and the caller reports the shortfall.
        assert_eq!(send_file(&file, ours.as_fd(), 100).unwrap(), 7);
        drop(ours);
        let mut received = Vec::new();
        peer.read_to_end(&mut received).unwrap();
        // The file's own position is not moved: both calls start at 3.
        assert_eq!(received, b"34563456789");
    }

    #[test]
    fn send_file_to_a_closed_peer_fails_with_its_errno() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[b'x'; 1 << 20]).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let (ours, peer) = socket_pair();
        drop(peer);
        // The first bytes may still be taken by the kernel; a later call meets the reset.
        let error = (0..100)
            .find_map(|_| send_file(&file, ours.as_fd(), 1 << 20).err())
            .expect("sending to a closed peer fails");
        assert!(error.raw_os_error().is_some(), "{error}");
    }

    fn reader(data: &[u8], len: Option<u64>) -> Body {
        Body::Reader {
            reader: Box::new(Cursor::new(data.to_vec())),
            len,
        }
    }

    fn with_body(status: u16, body: Body) -> Response {
        let mut response = Response::new(status);
        response.body = body;
        response
    }

    fn write(response: Response, options: WriteOptions) -> (String, Written) {
        let mut out = Vec::new();
        let written = write_response(&mut out, response, &options).expect("write");
        (String::from_utf8(out).expect("utf-8"), written)
    }

    /// (status, body, options, expected wire, body_bytes, must_close)
    fn cases() -> Vec<(u16, Body, WriteOptions, &'static str, u64, bool)> {
        let h10 = WriteOptions {
            version: Version::Http10,
            ..H11
        };
        let close = WriteOptions {
            keep_alive: false,
            ..H11
        };
        let head = WriteOptions {
            head_request: true,
            ..H11
        };
        let head10 = WriteOptions {
            head_request: true,
            ..h10
        };
        #[rustfmt::skip]
        let cases = vec![
            (200, Body::Empty, H11, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, false),
            (200, Body::Bytes(b"hi".to_vec()), H11, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 2, false),
            (200, Body::Bytes(b"hi".to_vec()), close, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi", 2, true),
            (200, Body::Bytes(b"hi".to_vec()), h10, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi", 2, false),
            (200, Body::Bytes(b"hi".to_vec()), head, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", 0, false),
            (200, reader(b"abc", Some(3)), H11, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 3, false),
            (200, reader(b"abcdef", Some(3)), H11, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 3, false),
            (200, reader(b"abc", Some(3)), head, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 0, false),
            (200, reader(b"abc", None), H11, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 3, false),
            (200, reader(b"", None), H11, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, false),
            (200, reader(b"abc", None), head, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, false),
            (200, reader(b"abc", None), h10, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", 3, true),
            (200, reader(b"abc", None), head10, "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", 0, false),
            (204, Body::Bytes(b"ignored".to_vec()), H11, "HTTP/1.1 204 No Content\r\n\r\n", 0, false),
            (304, reader(b"ignored", None), H11, "HTTP/1.1 304 Not Modified\r\n\r\n", 0, false),
            (304, Body::Empty, close, "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n", 0, true),
            (103, Body::Empty, close, "HTTP/1.1 103 \r\n\r\n", 0, false),
            (599, Body::Empty, H11, "HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n", 0, false),
            (42, Body::Bytes(b"x".to_vec()), H11, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", 0, false),
            (1000, Body::Empty, H11, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", 0, false),
        ];
        cases
    }

    #[test]
    fn wire_format_table() {
        for (i, (status, body, options, wire, body_bytes, must_close)) in
            cases().into_iter().enumerate()
        {
            let (out, written) = write(with_body(status, body), options);
            assert_eq!(out, wire, "case {i}");
            assert_eq!(
                written,
                Written {
                    body_bytes,
                    must_close
                },
                "case {i}"
            );
        }
    }

    #[test]
    fn builder_refuses_header_injection() {
        #[rustfmt::skip]
        let refused: &[(&str, &str)] = &[
            ("X-A", "a\r\nSet-Cookie: x"),
            ("X-A", "a\nb"),
            ("X-A", "a\rb"),
            ("X-A", "a\0b"),
            ("X A", "v"),
            ("X-A:", "v"),
            ("", "v"),
            ("X\r\nY", "v"),
        ];
        for &(name, value) in refused {
            let response = Response::new(200).header(name, value);
            assert!(response.headers().is_empty(), "{name:?}: {value:?}");
        }
        let response = Response::new(200)
            .header("X-A", "tab\there, obs é")
            .header("ETag", "\"1\"");
        assert_eq!(response.headers().len(), 2);
        assert!(
            response.has_header("x-a")
                && response.has_header("ETAG")
                && !response.has_header("X-B")
        );
    }

    #[test]
    fn caller_framing_headers_are_dropped() {
        let response = Response::text(200, "ok")
            .header("Content-Length", "99")
            .header("transfer-encoding", "chunked")
            .header("Connection", "keep-alive")
            .header("Location", "/v2/images/1");
        let (out, _) = write(
            response,
            WriteOptions {
                keep_alive: false,
                ..H11
            },
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nLocation: /v2/images/1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        );
    }

    #[test]
    fn json_and_text() {
        let (out, written) = write(Response::json(201, &serde_json::json!({"id": "a"})), H11);
        assert_eq!(out, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"id\":\"a\"}");
        assert_eq!(written.body_bytes, 10);
        let text = Response::text(404, "Not found\n");
        assert!(text.has_header("content-type"));
        assert_eq!(text.status, 404);
    }

    #[test]
    fn short_reader_is_an_error_and_never_padded() {
        let mut out = Vec::new();
        let error = write_response(&mut out, with_body(200, reader(b"ab", Some(5))), &H11)
            .expect_err("short");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab");
    }

    /// Records the size of every write, to show memory does not grow with the body.
    #[derive(Default)]
    struct Recorder {
        data: Vec<u8>,
        largest_write: usize,
    }

    impl Sink for Recorder {}

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.largest_write = self.largest_write.max(buf.len());
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn large_chunked_body_round_trips_in_bounded_writes() {
        let body: Vec<u8> = (0..3 * BODY_BUFFER_BYTES + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut out = Recorder::default();
        let written =
            write_response(&mut out, with_body(200, reader(&body, None)), &H11).expect("write");
        assert_eq!(written.body_bytes, body.len() as u64);
        assert!(
            out.largest_write <= BODY_BUFFER_BYTES + 128,
            "{}",
            out.largest_write
        );
        let head_end = out
            .data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head")
            + 4;
        let mut decoder = BodyReader::new(
            RequestFraming::Chunked,
            out.data.get(head_end..).unwrap_or_default(),
        );
        let mut decoded = Vec::new();
        decoder.read_to_end(&mut decoded).expect("decode");
        assert_eq!(decoded, body);
        assert!(decoder.is_finished());
    }

    #[test]
    fn large_bodies_of_every_kind() {
        let body: Vec<u8> = (0..2 * BODY_BUFFER_BYTES + 1)
            .map(|i| (i % 7) as u8)
            .collect();
        let len = body.len() as u64;
        let h10 = WriteOptions {
            version: Version::Http10,
            ..H11
        };
        for (response, options) in [
            (with_body(200, Body::Bytes(body.clone())), H11),
            (with_body(200, reader(&body, Some(len))), H11),
            (with_body(200, reader(&body, None)), h10),
        ] {
            let mut out = Recorder::default();
            let written = write_response(&mut out, response, &options).expect("write");
            assert_eq!(written.body_bytes, len);
            assert!(out.data.ends_with(&body));
        }
    }

    /// A reader that fails after some bytes, like a disk error mid-file.
    struct Failing(usize);

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.0.min(buf.len());
            buf.iter_mut().take(n).for_each(|b| *b = b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn reader_errors_pass_through() {
        for len in [Some(10), None] {
            let response = with_body(
                200,
                Body::Reader {
                    reader: Box::new(Failing(3)),
                    len,
                },
            );
            let error = write_response(&mut Vec::new(), response, &H11).expect_err("fails");
            assert_eq!(error.to_string(), "disk on fire");
        }
    }

    #[test]
    fn continue_line() {
        let mut out = Vec::new();
        write_continue(&mut out).expect("write");
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn reason_phrases() {
        #[rustfmt::skip]
        let table: &[(u16, &str)] = &[
            (100, "Continue"), (200, "OK"), (201, "Created"), (204, "No Content"),
            (304, "Not Modified"), (400, "Bad Request"), (401, "Unauthorized"),
            (403, "Forbidden"), (404, "Not Found"), (408, "Request Timeout"), (409, "Conflict"),
            (413, "Content Too Large"), (414, "URI Too Long"), (417, "Expectation Failed"),
            (431, "Request Header Fields Too Large"), (500, "Internal Server Error"),
            (501, "Not Implemented"), (503, "Service Unavailable"),
            (505, "HTTP Version Not Supported"), (299, ""), (0, ""),
        ];
        for &(status, phrase) in table {
            assert_eq!(reason_phrase(status), phrase, "{status}");
        }
    }
}
