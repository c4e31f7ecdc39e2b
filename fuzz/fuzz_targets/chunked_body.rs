//! The chunked decoder (`BodyReader` with `Framing::Chunked`) on arbitrary bytes.
//!
//! Input: two bytes that pick how the bytes arrive and how big the caller's reads are, then the
//! bytes on the wire. The wire is followed by a sentinel with no LF in it, standing for the next
//! request on the connection: a body always ends with an LF, so a decoder that finishes must have
//! left the whole sentinel unread. Each input is decoded twice, once with everything buffered
//! and once in pieces of data-derived sizes with a timeout before some of them; both must give
//! the same bytes, the same verdict and the same count of consumed bytes. Never a panic.
#![no_main]

use std::io::{self, BufRead, ErrorKind, Read};

use glint::http::body::{http_error, BodyReader};
use glint::http::head::Framing;
use libfuzzer_sys::fuzz_target;

/// What follows the body on the connection; no LF, so no body can end inside it.
const SENTINEL: &[u8] = b"GET /sentinel HTTP/1.1";

fuzz_target!(|data: &[u8]| {
    let [pieces, reads, wire @ ..] = data else {
        return;
    };
    let input = [wire, SENTINEL].concat();
    let whole = decode(Pieces::whole(&input), 64 * 1024);
    let split = decode(Pieces::split(&input, *pieces), usize::from(*reads % 32) + 1);
    assert_eq!(whole, split, "the way the bytes arrive changed the result");
    if whole.finished {
        assert!(
            whole.consumed <= wire.len(),
            "consumed {} bytes, past the body's end at most at {}",
            whole.consumed,
            wire.len()
        );
        // Where the body ends does not depend on what follows it.
        let alone = decode(Pieces::whole(&wire[..whole.consumed]), 64 * 1024);
        assert_eq!(whole, alone, "the body alone decodes differently");
    }
});

#[derive(Debug, PartialEq)]
struct Outcome {
    body: Vec<u8>,
    /// Ok(0) was returned: the body ended.
    finished: bool,
    /// The error kind and HttpError that stopped it otherwise.
    error: Option<(ErrorKind, String)>,
    consumed: usize,
}

fn decode(inner: Pieces<'_>, read_size: usize) -> Outcome {
    let total = inner.data.len();
    let mut reader = BodyReader::new(Framing::Chunked, inner);
    let mut body = Vec::new();
    let mut buf = vec![0; read_size];
    // Each read makes progress or is a timeout, of which there is at most one per piece.
    let max_reads = 4 * total + 16;
    for _ in 0..max_reads {
        match reader.read(&mut buf) {
            Ok(0) => {
                assert!(reader.is_finished());
                assert_eq!(reader.read(&mut buf).unwrap(), 0, "read after the end");
                let consumed = reader.get_mut().pos;
                return Outcome {
                    body,
                    finished: true,
                    error: None,
                    consumed,
                };
            }
            Ok(n) => {
                assert!(n <= buf.len());
                body.extend_from_slice(&buf[..n]);
            }
            Err(error) if error.kind() == ErrorKind::TimedOut => continue,
            Err(error) => {
                assert!(!reader.is_finished());
                let http = http_error(&error).expect("a framing error, not a bare I/O error");
                let again = reader.read(&mut buf).expect_err("a read after an error");
                assert_eq!(http_error(&again), Some(http), "the error is repeated");
                let consumed = reader.get_mut().pos;
                return Outcome {
                    body,
                    finished: false,
                    error: Some((error.kind(), format!("{http:?}"))),
                    consumed,
                };
            }
        }
    }
    panic!("no end after {max_reads} reads of {total} bytes");
}

/// A `BufRead` like a `BufReader` on a socket: it refills only when its buffer is empty, with
/// the next piece, and sometimes times out once before a piece arrives.
struct Pieces<'a> {
    data: &'a [u8],
    /// Bytes consumed.
    pos: usize,
    /// End of the buffered bytes.
    end: usize,
    /// Seed of the piece sizes and timeouts; `None` buffers everything at once.
    seed: Option<u8>,
    refills: usize,
    timed_out: bool,
}

impl<'a> Pieces<'a> {
    fn whole(data: &'a [u8]) -> Self {
        Pieces {
            data,
            pos: 0,
            end: data.len(),
            seed: None,
            refills: 0,
            timed_out: false,
        }
    }

    fn split(data: &'a [u8], seed: u8) -> Self {
        Pieces {
            end: 0,
            seed: Some(seed),
            ..Pieces::whole(data)
        }
    }
}

impl BufRead for Pieces<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end && self.end < self.data.len() {
            if let Some(seed) = self.seed {
                // A small deterministic sequence: sizes 1 to 8, a timeout now and then.
                let x = seed
                    .wrapping_mul(31)
                    .wrapping_add((self.refills as u8).wrapping_mul(17))
                    .rotate_left(3);
                if x & 0x80 != 0 && !self.timed_out {
                    self.timed_out = true;
                    return Err(io::Error::new(ErrorKind::TimedOut, "fuzz timeout"));
                }
                self.timed_out = false;
                self.refills += 1;
                let size = usize::from(x % 8) + 1;
                self.end = (self.end + size).min(self.data.len());
            }
        }
        Ok(&self.data[self.pos..self.end])
    }

    fn consume(&mut self, amount: usize) {
        assert!(
            self.pos + amount <= self.end,
            "consumed more than was buffered"
        );
        self.pos += amount;
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}
