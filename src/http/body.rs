//! Request body decoding: a `Read` over exactly the body bytes of one request.
//!
//! The connection loop parses a head with [`head::parse`](crate::http::head::parse), then wraps
//! its buffered stream in a [`BodyReader`] with the head's [`Framing`]. The reader only
//! `consume`s bytes that belong to the body (data, chunk framing, trailers), so whatever follows
//! (a pipelined request) stays in the `BufRead` for [`BodyReader::into_inner`]. The decoder is
//! an explicit state machine so that a read can stop at any byte (a timeout, a short read) and
//! the next read resumes where it left off.
//!
//! It does not limit the total body size (wrap it in `Take` or count), does not decode any
//! coding but chunked, and does not expose chunk extensions or trailers: they are read,
//! bounded, and discarded.

use std::io::{self, BufRead, Read};

use crate::http::error::HttpError;
use crate::http::head::{is_token, Framing};

/// Hex digits allowed in a chunk size (16 fit a u64; httparse enforces the same); more ->
/// [`HttpError::BadChunk`].
pub const MAX_CHUNK_SIZE_DIGITS: usize = 16;

/// Bytes allowed on a chunk-size line after the digits (whitespace and chunk extensions, which
/// we ignore); more -> [`HttpError::BadChunk`].
pub const MAX_CHUNK_EXTENSION_BYTES: usize = 4096;

/// Bytes allowed for the whole trailer section, line endings and final empty line included;
/// more -> [`HttpError::BadChunk`].
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// A `Read` over one request body, decoding the framing of [`Framing`].
///
/// `read` returns `Ok(0)` once the whole body, last chunk and trailers included, has been
/// consumed. Errors: a body cut short by EOF is `UnexpectedEof` wrapping
/// [`HttpError::BodyTruncated`]; bad chunk framing is `InvalidData` wrapping
/// [`HttpError::BadChunk`] (use [`http_error`]). After either, every read fails the same way.
/// Other I/O errors (timeouts) pass through unchanged and the read may be retried.
#[derive(Debug)]
pub struct BodyReader<R: BufRead> {
    decoder: Decoder,
    inner: R,
}

/// The [`HttpError`] inside an `io::Error` returned by a [`BodyReader`], if it is one.
pub fn http_error(e: &io::Error) -> Option<&HttpError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<HttpError>())
}

/// The decoding state, after hyper's `decode.rs`.
#[derive(Debug)]
enum Decoder {
    /// Content-Length (or no body: zero); `remaining` bytes still to read.
    Length { remaining: u64 },
    /// Transfer-Encoding: chunked (RFC 9112 §7.1).
    Chunked {
        state: ChunkedState,
        /// The chunk-size or trailer line received so far, bounded by our limits.
        line: Vec<u8>,
        /// Trailer section bytes consumed so far.
        trailer_bytes: usize,
    },
    /// A framing error: the stream cannot be resynchronised, so it is repeated on every read.
    Failed(HttpError),
}

/// Where in the chunked grammar (RFC 9112 §7.1) the next byte belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkedState {
    /// `chunk-size [ chunk-ext ] CRLF`, accumulated into `line`.
    SizeLine,
    /// `chunk-data`, `remaining` bytes of it.
    Data { remaining: u64 },
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// `trailer-section CRLF` after the last chunk, one line at a time into `line`.
    Trailer,
    /// Everything consumed.
    Done,
}

/// Why a step of the decoder stopped: an I/O error to pass through, or a framing error that
/// ends the body.
enum Stop {
    Io(io::Error),
    Http(HttpError),
}

impl<R: BufRead> BodyReader<R> {
    /// A reader over the body framed by `framing`, read from `inner`.
    pub fn new(framing: Framing, inner: R) -> Self {
        let decoder = match framing {
            // RFC 9112 §6.3 rule 7: a request with neither header has no body.
            Framing::None => Decoder::Length { remaining: 0 },
            Framing::Length(remaining) => Decoder::Length { remaining },
            Framing::Chunked => Decoder::Chunked {
                state: ChunkedState::SizeLine,
                line: Vec::new(),
                trailer_bytes: 0,
            },
        };
        BodyReader { decoder, inner }
    }

    /// Whether the whole body, last chunk and trailers included, has been consumed: only then
    /// is the next byte of `inner` the start of the next request.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.decoder,
            Decoder::Length { remaining: 0 }
                | Decoder::Chunked {
                    state: ChunkedState::Done,
                    ..
                }
        )
    }

    /// The underlying reader, positioned just after what has been consumed.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The underlying reader (reading from it directly desynchronises the decoder).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: BufRead> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let BodyReader { decoder, inner } = self;
        let result = match decoder {
            Decoder::Failed(error) => Err(Stop::Http(*error)),
            Decoder::Length { remaining } => read_data(inner, remaining, buf),
            Decoder::Chunked {
                state,
                line,
                trailer_bytes,
            } => read_chunked(inner, state, line, trailer_bytes, buf),
        };
        match result {
            Ok(n) => Ok(n),
            Err(Stop::Io(e)) => Err(e),
            Err(Stop::Http(error)) => {
                *decoder = Decoder::Failed(error);
                Err(into_io(error))
            }
        }
    }
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        Stop::Io(e)
    }
}

/// The `io::Error` a framing error becomes: EOF for a truncated body, invalid data otherwise.
fn into_io(error: HttpError) -> io::Error {
    let kind = match error {
        HttpError::BodyTruncated => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, error)
}

/// The bytes `inner` has buffered; none means the peer closed before the body ended.
fn available<R: BufRead>(inner: &mut R) -> Result<&[u8], Stop> {
    let available = inner.fill_buf()?;
    if available.is_empty() {
        return Err(Stop::Http(HttpError::BodyTruncated));
    }
    Ok(available)
}

/// Reads up to `remaining` body bytes into `buf`, consuming exactly what it returns. It goes
/// through `Read::read` rather than `fill_buf`: a reader that can hand large reads straight from
/// the socket (`http::connection::Connection` does when its buffer is empty) then spares the
/// upload path a copy through the buffer.
fn read_data<R: BufRead>(
    inner: &mut R,
    remaining: &mut u64,
    buf: &mut [u8],
) -> Result<usize, Stop> {
    if *remaining == 0 || buf.is_empty() {
        return Ok(0);
    }
    let wanted = usize::try_from(*remaining)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let target = buf.get_mut(..wanted).unwrap_or_default();
    let n = loop {
        match inner.read(target) {
            Ok(n) => break n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Stop::Io(error)),
        }
    };
    if n == 0 {
        return Err(Stop::Http(HttpError::BodyTruncated));
    }
    *remaining -= n as u64;
    Ok(n)
}

/// The next byte of the body's framing, consumed.
fn next_byte<R: BufRead>(inner: &mut R) -> Result<u8, Stop> {
    let byte = available(inner)?.first().copied().unwrap_or_default();
    inner.consume(1);
    Ok(byte)
}

/// Appends the rest of the current line (through its LF) to `line`, consuming it. Returns
/// whether the line is complete; a line that would exceed `max` bytes is a [`HttpError::BadChunk`].
fn read_line<R: BufRead>(inner: &mut R, line: &mut Vec<u8>, max: usize) -> Result<bool, Stop> {
    let available = available(inner)?;
    let (take, complete) = match available.iter().position(|&b| b == b'\n') {
        Some(i) => (i + 1, true),
        None => (available.len(), false),
    };
    if line.len().saturating_add(take) > max {
        return Err(Stop::Http(HttpError::BadChunk));
    }
    line.extend_from_slice(available.get(..take).unwrap_or_default());
    inner.consume(take);
    Ok(complete)
}

/// Runs the chunked state machine until it has body bytes for `buf` or the body ends.
fn read_chunked<R: BufRead>(
    inner: &mut R,
    state: &mut ChunkedState,
    line: &mut Vec<u8>,
    trailer_bytes: &mut usize,
    buf: &mut [u8],
) -> Result<usize, Stop> {
    loop {
        match state {
            ChunkedState::SizeLine => {
                let max = MAX_CHUNK_SIZE_DIGITS + MAX_CHUNK_EXTENSION_BYTES + 2;
                if read_line(inner, line, max)? {
                    let size = parse_size_line(line).map_err(Stop::Http)?;
                    line.clear();
                    // RFC 9112 §7.1: the chunk of size zero is the last one.
                    *state = match size {
                        0 => ChunkedState::Trailer,
                        remaining => ChunkedState::Data { remaining },
                    };
                }
            }
            ChunkedState::Data { remaining } => {
                let n = read_data(inner, remaining, buf)?;
                if *remaining == 0 {
                    *state = ChunkedState::DataCr;
                }
                return Ok(n);
            }
            // RFC 9112 §7.1: chunk-data is followed by exactly CRLF; anything else means the
            // size was a lie, and we must not guess where the next chunk starts.
            ChunkedState::DataCr => match next_byte(inner)? {
                b'\r' => *state = ChunkedState::DataLf,
                _ => return Err(Stop::Http(HttpError::BadChunk)),
            },
            ChunkedState::DataLf => match next_byte(inner)? {
                b'\n' => *state = ChunkedState::SizeLine,
                _ => return Err(Stop::Http(HttpError::BadChunk)),
            },
            ChunkedState::Trailer => {
                let max = MAX_TRAILER_BYTES.saturating_sub(*trailer_bytes);
                if read_line(inner, line, max)? {
                    *trailer_bytes += line.len();
                    let end = check_trailer_line(line).map_err(Stop::Http)?;
                    line.clear();
                    if end {
                        *state = ChunkedState::Done;
                    }
                }
            }
            ChunkedState::Done => return Ok(0),
        }
    }
}

/// Parses a complete chunk-size line (CRLF included) into the chunk size.
fn parse_size_line(line: &[u8]) -> Result<u64, HttpError> {
    // httparse takes an empty size (a bare CRLF, or `;ext`) as zero; RFC 9112 §7.1 requires
    // at least one hex digit, and a silent zero would end the body early.
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(HttpError::BadChunk);
    }
    if line.len().saturating_sub(digits + 2) > MAX_CHUNK_EXTENSION_BYTES {
        return Err(HttpError::BadChunk);
    }
    // httparse requires the CRLF (a bare LF fails) and checks what follows the digits.
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((len, size))) if len == line.len() => Ok(size),
        _ => Err(HttpError::BadChunk),
    }
}

/// Checks one complete trailer line (CRLF included); `Ok(true)` for the empty line that ends
/// the trailer section. Trailer fields are discarded, but a malformed one still means the
/// framing is broken (RFC 9112 §7.1.2, field lines as in §5).
fn check_trailer_line(line: &[u8]) -> Result<bool, HttpError> {
    let Some(content) = line.strip_suffix(b"\r\n") else {
        return Err(HttpError::BadChunk);
    };
    if content.is_empty() {
        return Ok(true);
    }
    let Some(colon) = content.iter().position(|&b| b == b':') else {
        return Err(HttpError::BadChunk);
    };
    let (name, value) = content.split_at(colon);
    if !is_token(name) || value.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(HttpError::BadChunk);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// What follows the body on the connection; it must be left unread.
    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

    /// Decodes `wire` + NEXT split in two at `split`, reading `step` bytes at a time.
    fn decode(
        framing: Framing,
        wire: &[u8],
        split: usize,
        step: usize,
    ) -> (io::Result<Vec<u8>>, bool, Vec<u8>) {
        let mut all = wire.to_vec();
        all.extend_from_slice(NEXT);
        let (a, b) = all.split_at(split.min(all.len()));
        let mut reader = BodyReader::new(
            framing,
            Cursor::new(a.to_vec()).chain(Cursor::new(b.to_vec())),
        );
        let mut body = Vec::new();
        let mut chunk = vec![0u8; step];
        let result = loop {
            match reader.read(&mut chunk) {
                Ok(0) => break Ok(body),
                Ok(n) => body.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) => break Err(e),
            }
        };
        let finished = reader.is_finished();
        let mut rest = Vec::new();
        let _ = reader.into_inner().read_to_end(&mut rest);
        (result, finished, rest)
    }

    /// Valid bodies: (framing, wire bytes, decoded body).
    #[rustfmt::skip]
    const VALID: &[(Framing, &[u8], &[u8])] = &[
        (Framing::None, b"", b""),
        (Framing::Length(0), b"", b""),
        (Framing::Length(5), b"hello", b"hello"),
        (Framing::Chunked, b"0\r\n\r\n", b""),
        (Framing::Chunked, b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (Framing::Chunked, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
        (Framing::Chunked, b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", b"0123456789abcdefghij"),
        (Framing::Chunked, b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
        (Framing::Chunked, b"5;name=value;x\r\nhello\r\n0;last\r\n\r\n", b"hello"),
        (Framing::Chunked, b"5 ;x=\"q\"\r\nhello\r\n0\r\n\r\n", b"hello"),
        (Framing::Chunked, b"3\r\n\r\n\r\r\n0\r\nExpires: never\r\nX-Checksum: abc\r\n\r\n", b"\r\n\r"),
        (Framing::Chunked, b"1\r\n\0\r\n0\r\nX:\r\n\r\n", b"\0"),
    ];

    #[test]
    fn valid_bodies_split_at_every_offset() {
        for &(framing, wire, expected) in VALID {
            for split in 0..=wire.len() + NEXT.len() {
                for step in [1, 3, 64] {
                    let (body, finished, rest) = decode(framing, wire, split, step);
                    let context = format!(
                        "{:?} split {split} step {step}",
                        String::from_utf8_lossy(wire)
                    );
                    assert_eq!(body.ok().as_deref(), Some(expected), "{context}");
                    assert!(finished, "{context}");
                    assert_eq!(rest, NEXT, "{context}");
                }
            }
        }
    }

    /// Invalid chunked bodies: framing errors whatever the split.
    #[rustfmt::skip]
    const BAD_CHUNKS: &[&[u8]] = &[
        b"\r\nhello\r\n0\r\n\r\n",
        b";ext\r\n0\r\n\r\n",
        b"x\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\rhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello\rX0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhell\r\n0\r\n\r\n",
        b"5 6\r\nhello\r\n0\r\n\r\n",
        b"10000000000000000\r\n",
        b"0\r\nno colon\r\n\r\n",
        b"0\r\nbad name: x\r\n\r\n",
        b"0\r\n: x\r\n\r\n",
        b"0\r\nX: a\rb\r\n\r\n",
        b"0\r\n\n",
        b"0\r\nX: y\n\r\n",
    ];

    #[test]
    fn bad_chunks_split_at_every_offset() {
        for &wire in BAD_CHUNKS {
            for split in 0..=wire.len() {
                for step in [1, 64] {
                    let (body, finished, _) = decode(Framing::Chunked, wire, split, step);
                    let context = format!("{:?} split {split}", String::from_utf8_lossy(wire));
                    let error = body.expect_err(&context);
                    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{context}");
                    assert_eq!(http_error(&error), Some(&HttpError::BadChunk), "{context}");
                    assert!(!finished, "{context}");
                }
            }
        }
    }

    #[test]
    fn truncated_bodies_are_unexpected_eof() {
        let cases: &[(Framing, &[u8])] = &[
            (Framing::Length(5), b"hello"),
            (Framing::Chunked, b"5\r\nhello\r\n0\r\nX: y\r\n\r\n"),
        ];
        for &(framing, wire) in cases {
            for end in 0..wire.len() {
                let mut reader = BodyReader::new(framing, wire.get(..end).unwrap_or_default());
                let mut body = Vec::new();
                let error = reader.read_to_end(&mut body).expect_err("truncated");
                assert_eq!(
                    error.kind(),
                    io::ErrorKind::UnexpectedEof,
                    "{framing:?} {end}"
                );
                assert_eq!(http_error(&error), Some(&HttpError::BodyTruncated));
                assert!(!reader.is_finished());
                // The failure sticks.
                let again = reader.read(&mut [0u8; 8]).expect_err("sticky");
                assert_eq!(http_error(&again), Some(&HttpError::BodyTruncated));
            }
        }
    }

    #[test]
    fn chunk_extension_limit() {
        let at = format!(
            "5;{}\r\nhello\r\n0\r\n\r\n",
            "e".repeat(MAX_CHUNK_EXTENSION_BYTES - 1)
        );
        let (body, finished, _) = decode(Framing::Chunked, at.as_bytes(), 0, 64);
        assert_eq!(body.ok().as_deref(), Some(&b"hello"[..]));
        assert!(finished);
        let over = format!(
            "5;{}\r\nhello\r\n0\r\n\r\n",
            "e".repeat(MAX_CHUNK_EXTENSION_BYTES)
        );
        let (body, ..) = decode(Framing::Chunked, over.as_bytes(), 0, 64);
        assert_eq!(
            http_error(&body.expect_err("over")),
            Some(&HttpError::BadChunk)
        );
        // Refused without waiting for the end of an endless extension.
        let endless = format!("5;{}", "e".repeat(2 * MAX_CHUNK_EXTENSION_BYTES));
        let mut reader = BodyReader::new(Framing::Chunked, endless.as_bytes());
        let error = reader.read(&mut [0u8; 8]).expect_err("endless");
        assert_eq!(http_error(&error), Some(&HttpError::BadChunk));
    }

    #[test]
    fn chunk_size_digits_limit() {
        let at = format!(
            "{}1\r\nx\r\n0\r\n\r\n",
            "0".repeat(MAX_CHUNK_SIZE_DIGITS - 1)
        );
        let (body, ..) = decode(Framing::Chunked, at.as_bytes(), 0, 64);
        assert_eq!(body.ok().as_deref(), Some(&b"x"[..]));
        let over = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(MAX_CHUNK_SIZE_DIGITS));
        let (body, ..) = decode(Framing::Chunked, over.as_bytes(), 0, 64);
        assert_eq!(
            http_error(&body.expect_err("over")),
            Some(&HttpError::BadChunk)
        );
    }

    #[test]
    fn trailer_limit() {
        // One field line `X: vvv…\r\n` plus the final CRLF make exactly `total` bytes.
        let trailer = |total: usize| format!("0\r\nX: {}\r\n\r\n", "v".repeat(total - 7));
        let (body, finished, rest) = decode(
            Framing::Chunked,
            trailer(MAX_TRAILER_BYTES).as_bytes(),
            0,
            64,
        );
        assert_eq!(body.ok().as_deref(), Some(&b""[..]));
        assert!(finished);
        assert_eq!(rest, NEXT);
        let (body, ..) = decode(
            Framing::Chunked,
            trailer(MAX_TRAILER_BYTES + 1).as_bytes(),
            0,
            64,
        );
        assert_eq!(
            http_error(&body.expect_err("over")),
            Some(&HttpError::BadChunk)
        );
    }

    #[test]
    fn huge_length_reads_what_is_there() {
        let mut reader = BodyReader::new(Framing::Length(u64::MAX), &b"abc"[..]);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).ok(), Some(3));
        assert!(!reader.is_finished());
    }

    /// A reader that times out once in the middle of the body, then carries on.
    struct Hiccup {
        data: Cursor<Vec<u8>>,
        at: u64,
        fired: bool,
    }

    impl Read for Hiccup {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.fill_buf()?.len().min(buf.len());
            let n = self.data.read(&mut buf[..n])?;
            Ok(n)
        }
    }

    impl BufRead for Hiccup {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            if !self.fired && self.data.position() == self.at {
                self.fired = true;
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "timed out"));
            }
            let (at, position, fired) = (self.at, self.data.position(), self.fired);
            let buf = self.data.fill_buf()?;
            let limit = if fired {
                buf.len()
            } else {
                buf.len().min((at - position) as usize)
            };
            Ok(&buf[..limit])
        }
        fn consume(&mut self, n: usize) {
            self.data.consume(n)
        }
    }

    #[test]
    fn other_io_errors_pass_through_and_reading_resumes() {
        let wire = b"5;x\r\nhello\r\n0\r\nX: y\r\n\r\n";
        for at in 0..wire.len() as u64 {
            let inner = Hiccup {
                data: Cursor::new(wire.to_vec()),
                at,
                fired: false,
            };
            let mut reader = BodyReader::new(Framing::Chunked, inner);
            let mut body = Vec::new();
            let mut buf = [0u8; 4];
            let mut timeouts = 0;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => body.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(http_error(&e).is_none());
                        timeouts += 1;
                    }
                    Err(e) => panic!("at {at}: {e}"),
                }
            }
            assert_eq!((body.as_slice(), timeouts), (&b"hello"[..], 1), "at {at}");
            assert!(reader.is_finished());
        }
    }

    #[test]
    fn accessors() {
        let mut reader = BodyReader::new(Framing::Length(2), &b"abc"[..]);
        assert!(!reader.is_finished());
        assert_eq!(reader.get_mut().len(), 3);
        let mut body = Vec::new();
        assert_eq!(reader.read_to_end(&mut body).ok(), Some(2));
        assert!(reader.is_finished());
        assert_eq!(reader.into_inner(), b"c");
        assert_eq!(
            BodyReader::new(Framing::Length(1), &b"x"[..])
                .read(&mut [])
                .ok(),
            Some(0)
        );
        assert!(http_error(&io::Error::other("plain")).is_none());
    }
}
