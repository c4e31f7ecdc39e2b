//! Parsing of an HTTP/1.1 request head (request line and header section) from a byte buffer.
//!
//! The connection loop appends what it reads from the socket to a buffer and calls [`parse`]
//! until it gets [`Parsed::Complete`]; the `usize` it returns is where the body (or the next
//! pipelined request) starts. httparse does the tokenising; this module adds what httparse does
//! not: the size limits (checked on partial buffers too, so a slow or hostile client can never
//! make us buffer without bound), the request-target form, and the meaning of the header fields
//! that decide message framing (RFC 9112 §6.3), persistence (RFC 9112 §9.3) and `Expect`.
//!
//! It does not read from sockets, decode bodies (see [`body`](crate::http::body)) or enforce
//! timeouts (the caller maps its timeout to [`HttpError::HeaderTimeout`]).

use crate::http::error::HttpError;

/// Default maximum number of header fields; one more -> [`HttpError::TooManyHeaders`] (431).
pub const MAX_HEADERS: usize = 100;

/// Smallest head size limit [`Limits::new`] picks; a larger head -> [`HttpError::HeadTooLarge`] (431).
pub const MIN_HEAD_BYTES: usize = 64 * 1024;

/// Empty lines (CRLF or LF) skipped before the request line (RFC 9112 §2.2 asks us to skip at
/// least one); one more -> [`HttpError::TooManyEmptyLines`] (400).
pub const MAX_LEADING_EMPTY_LINES: usize = 8;

/// Size limits for one request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line or header line, without its CRLF. A longer request line ->
    /// [`HttpError::UriTooLong`] (414), a longer header line -> [`HttpError::HeaderLineTooLong`] (431).
    pub max_header_line: usize,
    /// Most header fields; more -> [`HttpError::TooManyHeaders`] (431).
    pub max_headers: usize,
    /// Largest head, leading empty lines and final empty line included; larger ->
    /// [`HttpError::HeadTooLarge`] (431).
    pub max_head_bytes: usize,
}

/// The HTTP versions we speak (RFC 9112 §2.3); anything else is refused with 505.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No Content-Length and no Transfer-Encoding: the body is empty (§6.3 rule 7).
    None,
    /// Content-Length (§6.3 rule 6).
    Length(u64),
    /// Transfer-Encoding: chunked (§6.3 rule 4).
    Chunked,
}

/// One header field line, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name with the case the client used (a token, checked by httparse).
    pub name: String,
    /// The field value without surrounding whitespace; bytes, since obs-text is allowed.
    pub value: Vec<u8>,
}

/// A parsed and validated request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Origin-form (`/path?query`) or `*` (OPTIONS only).
    pub target: String,
    pub version: Version,
    pub headers: Vec<Header>,
    /// Decided by one function while walking the headers (RFC 9112 §6.3).
    pub framing: Framing,
    /// Whether the client wants the connection kept open after this exchange (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1).
    pub expect_continue: bool,
}

/// The result of [`parse`] on a buffer without errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete head and the number of bytes it took, final empty line included.
    Complete(RequestHead, usize),
    /// The buffer holds a valid beginning of a head: read more and call again.
    Partial,
}

impl Limits {
    /// Limits for the given line limit: [`MAX_HEADERS`] fields and a head of
    /// `max(MIN_HEAD_BYTES, 2 * max_header_line)` bytes.
    pub fn new(max_header_line: usize) -> Limits {
        Limits {
            max_header_line,
            max_headers: MAX_HEADERS,
            max_head_bytes: MIN_HEAD_BYTES.max(max_header_line.saturating_mul(2)),
        }
    }
}

/// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request that lacks a Host header or
/// has more than one. Kept apart from [`parse`] so that the parser's tests can use short heads.
pub fn check_host(head: &RequestHead) -> Result<(), HttpError> {
    let n_hosts = head
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("host"))
        .count();
    if head.version == Version::Http11 && n_hosts != 1 || n_hosts > 1 {
        return Err(HttpError::BadHost);
    }
    Ok(())
}

impl RequestHead {
    /// The value of the first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// [`RequestHead::header`] as text; `None` if absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The query (after the first `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Partial` only while `buf` can still become a valid head within `limits`: a line
/// already longer than the limit, or a buffer of `max_head_bytes` without a complete head, is
/// an error right away.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Parsed, HttpError> {
    check_lines(buf, limits)?;
    let n_slots = header_slots(limits);
    if n_slots > STACK_SLOTS {
        // Most heads have few fields: tried first with slots on the stack, and again with them
        // all only if there are more (httparse stops at the first field past its slots, so
        // the first try ends in the same result or in `TooManyHeaders`).
        let mut slots = [httparse::EMPTY_HEADER; STACK_SLOTS];
        match parse_with(buf, limits, &mut slots) {
            Err(HttpError::TooManyHeaders) => {}
            decided => return decided,
        }
    }
    let mut slots = vec![httparse::EMPTY_HEADER; n_slots];
    parse_with(buf, limits, &mut slots)
}

/// Header slots [`parse`] tries first, on the stack: a vector of `MAX_HEADERS` empty slots,
/// allocated and filled for every head, was a fifth of a keep-alive GET's parse (issue 13).
const STACK_SLOTS: usize = 24;

/// [`parse`] with `slots` for the header fields.
fn parse_with<'b>(
    buf: &'b [u8],
    limits: &Limits,
    slots: &mut [httparse::Header<'b>],
) -> Result<Parsed, HttpError> {
    let mut request = httparse::Request::new(slots);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if len > limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge);
            }
            build(&request).map(|head| Parsed::Complete(head, len))
        }
        Ok(httparse::Status::Partial) => partial(buf, limits),
        Err(httparse::Error::Version) => match version_error(buf) {
            Some(error) => Err(error),
            None => partial(buf, limits),
        },
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(httparse::Error::NewLine) => Err(if request_line_complete(buf) {
            HttpError::BadHeader
        } else {
            HttpError::BadRequestLine
        }),
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue) => {
            Err(HttpError::BadHeader)
        }
        Err(httparse::Error::Token | httparse::Error::Status) => Err(HttpError::BadRequestLine),
    }
}

/// Whether `s` is a non-empty token (RFC 9110 §5.6.2), as field names and methods must be.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// `tchar` of RFC 9110 §5.6.2.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
pub fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// The elements of a comma-separated list field value (RFC 9110 §5.6.1), trimmed, empty
/// elements skipped as the RFC requires of recipients.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// How many header slots to hand httparse: the configured maximum, but never more than could
/// fit in `max_head_bytes` (a field line takes at least 3 bytes, `a:\n`), so a careless
/// `max_headers` cannot make us allocate without bound.
fn header_slots(limits: &Limits) -> usize {
    limits.max_headers.min(limits.max_head_bytes / 3 + 1)
}

/// A buffer without a complete head: refuse it once it has reached the head limit, since a
/// head that fits would already be complete.
fn partial(buf: &[u8], limits: &Limits) -> Result<Parsed, HttpError> {
    if buf.len() >= limits.max_head_bytes {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(Parsed::Partial)
    }
}

/// Skips the empty lines allowed before the request line (RFC 9112 §2.2), bounded.
fn skip_empty_lines(mut buf: &[u8]) -> Result<&[u8], HttpError> {
    let mut skipped = 0;
    loop {
        let Some(rest) = buf
            .strip_prefix(b"\r\n")
            .or_else(|| buf.strip_prefix(b"\n"))
        else {
            return Ok(buf);
        };
        skipped += 1;
        if skipped > MAX_LEADING_EMPTY_LINES {
            return Err(HttpError::TooManyEmptyLines);
        }
        buf = rest;
    }
}

/// Enforces the line limits on every line of the head received so far, the unfinished last
/// line included, so an over-long line is refused before its end arrives.
fn check_lines(buf: &[u8], limits: &Limits) -> Result<(), HttpError> {
    let mut rest = skip_empty_lines(buf)?;
    let mut request_line = true;
    loop {
        let (line, next, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let (line, next) = rest.split_at(i);
                (line, next.get(1..).unwrap_or_default(), true)
            }
            None => (rest, &[][..], false),
        };
        // The CR of a CRLF is not part of the line (RFC 9112 §2.2); on an unfinished line it
        // may be the last byte received, and must not push a line at the limit over it.
        let len = line.strip_suffix(b"\r").unwrap_or(line).len();
        if len > limits.max_header_line {
            return Err(if request_line {
                HttpError::UriTooLong
            } else {
                HttpError::HeaderLineTooLong
            });
        }
        if !complete || (!request_line && len == 0) {
            return Ok(());
        }
        request_line = false;
        rest = next;
    }
}

/// The request line after leading empty lines, without its line ending, and whether it is
/// complete. `None` if the empty lines themselves are bad.
fn request_line(buf: &[u8]) -> Option<(&[u8], bool)> {
    let rest = skip_empty_lines(buf).ok()?;
    Some(match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = rest.get(..i).unwrap_or_default();
            (line.strip_suffix(b"\r").unwrap_or(line), true)
        }
        None => (rest.strip_suffix(b"\r").unwrap_or(rest), false),
    })
}

/// After httparse's `NewLine` error: whether the request line itself is complete, starts with
/// a method and ends with a version, in which case the bad line ending is in the header section.
fn request_line_complete(buf: &[u8]) -> bool {
    match request_line(buf) {
        Some((line, true)) => {
            line.first().is_some_and(|&b| is_tchar(b))
                && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
        }
        _ => false,
    }
}

/// After httparse's `Version` error: 505 for a well-formed `HTTP/d.d` we do not speak, 400 for
/// anything else, `None` (wait for more) while the version may still become well-formed.
fn version_error(buf: &[u8]) -> Option<HttpError> {
    let Some((line, complete)) = request_line(buf) else {
        return Some(HttpError::BadRequestLine);
    };
    // The version follows the second space: httparse has accepted a method and a target.
    let version = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or_default();
    const PATTERN: &[u8] = b"HTTP/d.d";
    let fits = version.len() <= PATTERN.len()
        && version.iter().zip(PATTERN).all(|(&b, &p)| match p {
            b'd' => b.is_ascii_digit(),
            _ => b == p,
        });
    match (fits, complete) {
        (false, _) => Some(HttpError::BadRequestLine),
        (true, false) => None,
        (true, true) if version.len() == PATTERN.len() => Some(HttpError::UnsupportedVersion),
        (true, true) => Some(HttpError::BadRequestLine),
    }
}

/// Turns httparse's complete request into a [`RequestHead`], checking what httparse does not.
fn build(request: &httparse::Request<'_, '_>) -> Result<RequestHead, HttpError> {
    let method = request.method.ok_or(HttpError::BadRequestLine)?;
    let target = request.path.ok_or(HttpError::BadRequestLine)?;
    let version = match request.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HttpError::UnsupportedVersion),
    };
    // RFC 9112 §3.2: a server is only asked for origin-form, or asterisk-form for a
    // server-wide OPTIONS. We do not act as a proxy, so absolute-form and authority-form
    // are refused rather than half-supported.
    let target_ok = if target == "*" {
        method == "OPTIONS"
    } else {
        target.starts_with('/')
    };
    if !target_ok {
        return Err(HttpError::BadTarget);
    }
    let headers: Vec<Header> = request
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: trim_ows(h.value).to_vec(),
        })
        .collect();
    let framing = framing(version, &headers)?;
    let expect_continue = expect_continue(version, &headers)?;
    Ok(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        keep_alive: keep_alive(version, &headers),
        expect_continue,
        framing,
        headers,
    })
}

/// Decides the body framing from Content-Length and Transfer-Encoding, in one walk over the
/// headers, following RFC 9112 §6.3 but strictly: every ambiguity is an error, since two
/// parties reading one message differently is how requests are smuggled.
fn framing(version: Version, headers: &[Header]) -> Result<Framing, HttpError> {
    let mut length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut transfer_encoding = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 §8.6: a list of identical values, or identical repeated fields, may
            // be taken as one value; anything else is unrecoverable (RFC 9112 §6.3 rule 5).
            // Empty list elements are not skipped here: `5,` is not a length.
            for element in header.value.split(|&b| b == b',') {
                let value = parse_length(trim_ows(element))?;
                if length.is_some_and(|previous| previous != value) {
                    return Err(HttpError::BadContentLength);
                }
                length = Some(value);
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            codings.extend(list_elements(&header.value));
        }
    }
    if !transfer_encoding {
        return Ok(length.map_or(Framing::None, Framing::Length));
    }
    // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
    if version == Version::Http10 {
        return Err(HttpError::TransferEncodingOnHttp10);
    }
    // RFC 9112 §6.1/§6.3 rule 3: both present is a smuggling attempt or a broken client.
    if length.is_some() {
        return Err(HttpError::ConflictingFraming);
    }
    // RFC 9112 §6.3 rule 4: the final coding of a request must be chunked, or the length
    // cannot be determined: 400.
    let Some((last, before)) = codings.split_last() else {
        return Err(HttpError::BadTransferEncoding);
    };
    if !last.eq_ignore_ascii_case(b"chunked") {
        return Err(HttpError::BadTransferEncoding);
    }
    // RFC 9112 §6.1: chunked must not be applied more than once.
    if before.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) {
        return Err(HttpError::BadTransferEncoding);
    }
    // RFC 9112 §6.1: a coding we do not understand gets 501.
    if !before.is_empty() {
        return Err(HttpError::UnsupportedTransferEncoding);
    }
    Ok(Framing::Chunked)
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6): no sign, no whitespace inside, no overflow.
fn parse_length(digits: &[u8]) -> Result<u64, HttpError> {
    if digits.is_empty() {
        return Err(HttpError::BadContentLength);
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(HttpError::BadContentLength);
        }
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(b - b'0')))
            .ok_or(HttpError::BadContentLength)
    })
}

/// Persistence (RFC 9112 §9.3): HTTP/1.1 persists unless `close` is listed in Connection;
/// HTTP/1.0 only with `keep-alive` (RFC 9112 §C.2.2). `close` wins over `keep-alive`.
fn keep_alive(version: Version, headers: &[Header]) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("connection") {
            for token in list_elements(&header.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    }
}

/// `Expect` (RFC 9110 §10.1.1): only `100-continue` is defined; anything else gets 417. A
/// 100-continue in an HTTP/1.0 request must be ignored.
fn expect_continue(version: Version, headers: &[Header]) -> Result<bool, HttpError> {
    let mut found = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("expect") {
            if !header.value.eq_ignore_ascii_case(b"100-continue") {
                return Err(HttpError::ExpectationFailed);
            }
            found = true;
        }
    }
    Ok(found && version == Version::Http11)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(8192)
    }

    fn complete(raw: &[u8]) -> (RequestHead, usize) {
        match parse(raw, &limits()) {
            Ok(Parsed::Complete(head, len)) => (head, len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn error(raw: &[u8], limits: &Limits) -> HttpError {
        match parse(raw, limits) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    /// Valid requests: (raw, method, target, version, framing, keep_alive, expect_continue).
    #[rustfmt::skip]
    const VALID: &[(&str, &str, &str, Version, Framing, bool, bool)] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/", Version::Http11, Framing::None, true, false),
        ("GET /v2/images?limit=5 HTTP/1.0\r\n\r\n", "GET", "/v2/images?limit=5", Version::Http10, Framing::None, false, false),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "GET", "/", Version::Http10, Framing::None, true, false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", "GET", "/", Version::Http10, Framing::None, false, false),
        ("GET / HTTP/1.1\r\nConnection: foo, CLOSE\r\n\r\n", "GET", "/", Version::Http11, Framing::None, false, false),
        ("GET / HTTP/1.1\r\nConnection: foo\r\nConnection: ,close,\r\n\r\n", "GET", "/", Version::Http11, Framing::None, false, false),
        ("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", "GET", "/", Version::Http11, Framing::None, true, false),
        ("PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n", "PUT", "/x", Version::Http11, Framing::Length(5), true, false),
        ("PUT /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "PUT", "/x", Version::Http11, Framing::Length(0), true, false),
        ("PUT /x HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", "PUT", "/x", Version::Http11, Framing::Length(5), true, false),
        ("PUT /x HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", "PUT", "/x", Version::Http11, Framing::Length(5), true, false),
        ("PUT /x HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n", "PUT", "/x", Version::Http11, Framing::Length(u64::MAX), true, false),
        ("PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "PUT", "/x", Version::Http11, Framing::Chunked, true, false),
        ("PUT /x HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n", "PUT", "/x", Version::Http11, Framing::Chunked, true, false),
        ("PUT /x HTTP/1.1\r\nTransfer-Encoding: , chunked,\r\n\r\n", "PUT", "/x", Version::Http11, Framing::Chunked, true, false),
        ("POST /x HTTP/1.1\r\n\r\n", "POST", "/x", Version::Http11, Framing::None, true, false),
        ("PUT /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", "PUT", "/x", Version::Http11, Framing::Length(1), true, true),
        ("PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", "PUT", "/x", Version::Http10, Framing::Length(1), false, false),
        ("OPTIONS * HTTP/1.1\r\n\r\n", "OPTIONS", "*", Version::Http11, Framing::None, true, false),
        ("\r\n\nGET / HTTP/1.1\n\n", "GET", "/", Version::Http11, Framing::None, true, false),
        ("DELETE /v2/images/1 HTTP/1.1\r\nX: caf\u{e9} obs-text\r\n\r\n", "DELETE", "/v2/images/1", Version::Http11, Framing::None, true, false),
        ("PATCH /a?b?c HTTP/1.1\r\nX-Empty:\r\n\r\n", "PATCH", "/a?b?c", Version::Http11, Framing::None, true, false),
    ];

    #[test]
    fn valid_requests() {
        for &(raw, method, target, version, framing, keep_alive, expect) in VALID {
            let mut bytes = raw.as_bytes().to_vec();
            let (head, len) = complete(&bytes);
            assert_eq!(len, bytes.len(), "{raw:?}");
            assert_eq!(head.method, method, "{raw:?}");
            assert_eq!(head.target, target, "{raw:?}");
            assert_eq!(head.version, version, "{raw:?}");
            assert_eq!(head.framing, framing, "{raw:?}");
            assert_eq!(head.keep_alive, keep_alive, "{raw:?}");
            assert_eq!(head.expect_continue, expect, "{raw:?}");
            // A pipelined next request or a body does not change what is consumed.
            bytes.extend_from_slice(b"GET /next HTTP/1.1\r\n");
            assert_eq!(complete(&bytes).1, len, "{raw:?}");
        }
    }

    #[test]
    fn every_prefix_of_a_valid_request_is_partial() {
        for &(raw, ..) in VALID {
            let raw = raw.as_bytes();
            for end in 0..raw.len() {
                let prefix = raw.get(..end).unwrap_or_default();
                assert_eq!(parse(prefix, &limits()), Ok(Parsed::Partial), "{prefix:?}");
            }
        }
    }

    /// Invalid requests and the error each must produce.
    #[rustfmt::skip]
    const INVALID: &[(&str, HttpError)] = &[
        ("GET / HTTP/2.0\r\n\r\n", HttpError::UnsupportedVersion),
        ("GET / HTTP/1.2\r\n\r\n", HttpError::UnsupportedVersion),
        ("GET / HTTP/0.9\r\n\r\n", HttpError::UnsupportedVersion),
        ("GET / HTTP/2\r\n\r\n", HttpError::BadRequestLine),
        ("GET / HTTX/1.1\r\n\r\n", HttpError::BadRequestLine),
        ("GET / XT", HttpError::BadRequestLine),
        ("GET / HTTP/1.1x\r\n\r\n", HttpError::BadRequestLine),
        ("GET / HTTP/1.1 \r\n\r\n", HttpError::BadRequestLine),
        ("GET /\r\n\r\n", HttpError::BadRequestLine),
        ("GET  / HTTP/1.1\r\n\r\n", HttpError::BadRequestLine),
        ("G(T / HTTP/1.1\r\n\r\n", HttpError::BadRequestLine),
        (" GET / HTTP/1.1\r\n\r\n", HttpError::BadRequestLine),
        ("\rGET / HTTP/1.1\r\n\r\n", HttpError::BadRequestLine),
        ("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", HttpError::TooManyEmptyLines),
        ("GET http://a/ HTTP/1.1\r\n\r\n", HttpError::BadTarget),
        ("CONNECT a:443 HTTP/1.1\r\n\r\n", HttpError::BadTarget),
        ("GET * HTTP/1.1\r\n\r\n", HttpError::BadTarget),
        ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", HttpError::BadHeader),
        ("GET / HTTP/1.1\r\nName : x\r\n\r\n", HttpError::BadHeader),
        ("GET / HTTP/1.1\r\nNo-colon\r\n\r\n", HttpError::BadHeader),
        ("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", HttpError::BadHeader),
        ("GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", HttpError::BadHeader),
        ("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", HttpError::BadHeader),
        ("PUT / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length:\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n", HttpError::BadContentLength),
        ("PUT / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::ConflictingFraming),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", HttpError::ConflictingFraming),
        ("PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::TransferEncodingOnHttp10),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", HttpError::BadTransferEncoding),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", HttpError::BadTransferEncoding),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", HttpError::BadTransferEncoding),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", HttpError::BadTransferEncoding),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::BadTransferEncoding),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", HttpError::BadTransferEncoding),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HttpError::UnsupportedTransferEncoding),
        ("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::UnsupportedTransferEncoding),
        ("PUT / HTTP/1.1\r\nExpect: 100-continue, x\r\n\r\n", HttpError::ExpectationFailed),
        ("PUT / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", HttpError::ExpectationFailed),
        ("PUT / HTTP/1.1\r\nExpect:\r\n\r\n", HttpError::ExpectationFailed),
    ];

    #[test]
    fn invalid_requests() {
        for &(raw, expected) in INVALID {
            assert_eq!(error(raw.as_bytes(), &limits()), expected, "{raw:?}");
        }
    }

    #[test]
    fn unsupported_version_waits_for_the_line_then_is_505() {
        let raw = b"GET / HTTP/2.0\r\n\r\n";
        let line_end = raw.len() - 3;
        for end in 0..raw.len() {
            let expected = if end <= line_end {
                Ok(Parsed::Partial)
            } else {
                Err(HttpError::UnsupportedVersion)
            };
            assert_eq!(
                parse(raw.get(..end).unwrap_or_default(), &limits()),
                expected,
                "{end}"
            );
        }
    }

    #[test]
    fn accessors() {
        let (head, _) = complete(b"GET /v2/images?a=1&b=%20 HTTP/1.1\r\nX-Auth-Token: t\r\nX-Bin: \xff\r\nx-auth-token: second\r\n\r\n");
        assert_eq!(head.path(), "/v2/images");
        assert_eq!(head.query(), Some("a=1&b=%20"));
        assert_eq!(head.header("x-auth-TOKEN"), Some(&b"t"[..]));
        assert_eq!(head.header_str("X-Auth-Token"), Some("t"));
        assert_eq!(head.header("X-Bin"), Some(&b"\xff"[..]));
        assert_eq!(head.header_str("X-Bin"), None);
        assert_eq!(head.header("Missing"), None);
        assert_eq!(head.headers.len(), 3);
        assert_eq!(
            head.headers.first().map(|h| h.name.as_str()),
            Some("X-Auth-Token")
        );
        let (head, _) = complete(b"GET /x HTTP/1.1\r\n\r\n");
        assert_eq!((head.path(), head.query()), ("/x", None));
    }

    #[test]
    fn limits_new() {
        assert_eq!(
            Limits::new(100),
            Limits {
                max_header_line: 100,
                max_headers: MAX_HEADERS,
                max_head_bytes: MIN_HEAD_BYTES
            }
        );
        assert_eq!(Limits::new(40_000).max_head_bytes, 80_000);
        assert_eq!(Limits::new(usize::MAX).max_head_bytes, usize::MAX);
    }

    /// A request whose request line is exactly `len` bytes long.
    fn request_line_of(len: usize) -> Vec<u8> {
        let fixed = "GET / HTTP/1.1".len();
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(len - fixed)).into_bytes()
    }

    #[test]
    fn request_line_limit() {
        let limits = Limits::new(100);
        let at = request_line_of(100);
        assert!(matches!(parse(&at, &limits), Ok(Parsed::Complete(_, n)) if n == at.len()));
        let over = request_line_of(101);
        assert_eq!(error(&over, &limits), HttpError::UriTooLong);
        // Refused as soon as the 101st byte arrives, not when the line ends.
        assert_eq!(
            error(over.get(..101).unwrap_or_default(), &limits),
            HttpError::UriTooLong
        );
        assert_eq!(
            parse(over.get(..100).unwrap_or_default(), &limits),
            Ok(Parsed::Partial)
        );
        // The CR of the line ending does not count.
        assert_eq!(
            parse(at.get(..101).unwrap_or_default(), &limits),
            Ok(Parsed::Partial)
        );
    }

    /// A request with one header line of exactly `len` bytes.
    fn header_line_of(len: usize) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(len - 3)).into_bytes()
    }

    #[test]
    fn header_line_limit() {
        let limits = Limits::new(100);
        let at = header_line_of(100);
        assert!(matches!(parse(&at, &limits), Ok(Parsed::Complete(..))));
        let over = header_line_of(101);
        assert_eq!(error(&over, &limits), HttpError::HeaderLineTooLong);
        let start = b"GET / HTTP/1.1\r\n".len();
        assert_eq!(
            error(over.get(..start + 101).unwrap_or_default(), &limits),
            HttpError::HeaderLineTooLong
        );
        assert_eq!(
            parse(over.get(..start + 100).unwrap_or_default(), &limits),
            Ok(Parsed::Partial)
        );
    }

    fn with_headers(count: usize) -> Vec<u8> {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..count {
            raw.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw
    }

    #[test]
    fn header_count_limit() {
        let limits = limits();
        assert!(
            matches!(parse(&with_headers(MAX_HEADERS), &limits), Ok(Parsed::Complete(h, _)) if h.headers.len() == MAX_HEADERS)
        );
        assert_eq!(
            error(&with_headers(MAX_HEADERS + 1), &limits),
            HttpError::TooManyHeaders
        );
        let small = Limits {
            max_headers: 2,
            ..limits
        };
        assert!(matches!(
            parse(&with_headers(2), &small),
            Ok(Parsed::Complete(..))
        ));
        assert_eq!(error(&with_headers(3), &small), HttpError::TooManyHeaders);
        // Refused before the head is complete.
        let partial = with_headers(3);
        assert_eq!(
            error(partial.get(..partial.len() - 2).unwrap_or_default(), &small),
            HttpError::TooManyHeaders
        );
    }

    /// Around the slots tried first on the stack, a head parses as with all the slots: whole
    /// with every field, partial while it arrives, and a bad field past them still refused.
    #[test]
    fn heads_just_past_the_stack_slots_parse_whole() {
        let limits = limits();
        for count in [
            STACK_SLOTS - 1,
            STACK_SLOTS,
            STACK_SLOTS + 1,
            2 * STACK_SLOTS,
        ] {
            let raw = with_headers(count);
            match parse(&raw, &limits) {
                Ok(Parsed::Complete(head, len)) => {
                    assert_eq!((head.headers.len(), len), (count, raw.len()), "{count}");
                    assert_eq!(head.headers[count - 1].name, format!("H{}", count - 1));
                }
                other => panic!("{count} fields: {other:?}"),
            }
            let partial = &raw[..raw.len() - 2];
            assert!(
                matches!(parse(partial, &limits), Ok(Parsed::Partial)),
                "{count} fields, not ended yet"
            );
            let mut bad = raw[..raw.len() - 2].to_vec();
            bad.extend_from_slice(b"Bad Name: v\r\n\r\n");
            assert_eq!(error(&bad, &limits), HttpError::BadHeader, "{count}");
        }
    }

    #[test]
    fn head_size_limit() {
        let raw = with_headers(10);
        let at = Limits {
            max_head_bytes: raw.len(),
            ..limits()
        };
        assert!(matches!(parse(&raw, &at), Ok(Parsed::Complete(_, n)) if n == raw.len()));
        for end in 0..raw.len() {
            assert_eq!(
                parse(raw.get(..end).unwrap_or_default(), &at),
                Ok(Parsed::Partial)
            );
        }
        let over = Limits {
            max_head_bytes: raw.len() - 1,
            ..limits()
        };
        assert_eq!(error(&raw, &over), HttpError::HeadTooLarge);
        // A buffer of max_head_bytes without a complete head is refused without waiting.
        assert_eq!(
            error(raw.get(..raw.len() - 1).unwrap_or_default(), &over),
            HttpError::HeadTooLarge
        );
        // Leading empty lines count towards the head.
        let mut padded = b"\r\n".to_vec();
        padded.extend_from_slice(&raw);
        assert_eq!(error(&padded, &at), HttpError::HeadTooLarge);
    }

    #[test]
    fn leading_empty_lines_limit() {
        let at = format!(
            "{}GET / HTTP/1.1\r\n\r\n",
            "\r\n".repeat(MAX_LEADING_EMPTY_LINES)
        );
        assert!(
            matches!(parse(at.as_bytes(), &limits()), Ok(Parsed::Complete(_, n)) if n == at.len())
        );
        let over = format!("\n{at}");
        assert_eq!(
            error(over.as_bytes(), &limits()),
            HttpError::TooManyEmptyLines
        );
        assert_eq!(
            error(
                "\n".repeat(MAX_LEADING_EMPTY_LINES + 1).as_bytes(),
                &limits()
            ),
            HttpError::TooManyEmptyLines
        );
    }

    #[test]
    fn huge_max_headers_does_not_allocate_without_bound() {
        let limits = Limits {
            max_headers: usize::MAX,
            ..limits()
        };
        assert!(matches!(
            parse(&with_headers(3), &limits),
            Ok(Parsed::Complete(..))
        ));
    }

    #[test]
    fn no_panic_on_arbitrary_bytes() {
        // Every byte value at every position of a short request: errors are fine, panics not.
        let base = b"GET /a HTTP/1.1\r\nA: b\r\n\r\n";
        let small = Limits::new(20);
        for i in 0..base.len() {
            for b in 0..=255u8 {
                let mut raw = base.to_vec();
                if let Some(slot) = raw.get_mut(i) {
                    *slot = b;
                }
                let _ = parse(&raw, &limits());
                let _ = parse(&raw, &small);
            }
        }
    }

    #[test]
    fn list_helpers() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"  "), b"");
        let elements: Vec<&[u8]> = list_elements(b" a ,, b,").collect();
        assert_eq!(elements, vec![&b"a"[..], &b"b"[..]]);
        assert!(is_token(b"X-Auth-Token"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b"a:"));
    }
}
