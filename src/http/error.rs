//! The one error type of the HTTP layer, and the only place where a failure becomes a status.
//!
//! [`head::parse`](crate::http::head::parse) returns these directly; the body decoder wraps them
//! in an `io::Error` (see [`body::http_error`](crate::http::body::http_error) to get them back).
//! The connection loop answers with [`HttpError::status`] and [`HttpError::message`] and then
//! closes the connection: after a framing error the rest of the byte stream cannot be trusted.
//!
//! This module does not write responses and does not log; it only names failures.

use std::fmt;

/// Everything that can be wrong with a request at the HTTP/1.1 level.
///
/// One variant per failure so tests and logs can tell them apart; several share a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The request line is not `method SP request-target SP HTTP-version` (RFC 9112 §3).
    BadRequestLine,
    /// More empty lines before the request line than we skip (RFC 9112 §2.2).
    TooManyEmptyLines,
    /// The request target is neither origin-form nor `*` for OPTIONS (RFC 9112 §3.2).
    BadTarget,
    /// The request line is longer than the line limit (RFC 9112 §3: 414 URI Too Long).
    UriTooLong,
    /// A header field line is longer than the line limit (RFC 6585 §5: 431).
    HeaderLineTooLong,
    /// More header fields than the limit allows (431).
    TooManyHeaders,
    /// The whole request head is larger than the limit (431).
    HeadTooLarge,
    /// A header field line is malformed: bad name token, bad byte in value, obs-fold,
    /// whitespace before the colon (RFC 9112 §5).
    BadHeader,
    /// Content-Length is not a single run of digits, overflows u64, or its copies differ
    /// (RFC 9110 §8.6, RFC 9112 §6.3 rule 5).
    BadContentLength,
    /// Both Transfer-Encoding and Content-Length are present: we refuse rather than pick one,
    /// as a request-smuggling defence (RFC 9112 §6.1, §6.3 rule 3).
    ConflictingFraming,
    /// Transfer-Encoding whose final coding is not `chunked`, or `chunked` applied twice
    /// (RFC 9112 §6.3 rule 4, §6.1).
    BadTransferEncoding,
    /// Transfer-Encoding lists a coding we do not implement before `chunked`
    /// (RFC 9112 §6.1: 501 Not Implemented).
    UnsupportedTransferEncoding,
    /// Transfer-Encoding on an HTTP/1.0 request: the framing is faulty (RFC 9112 §6.1).
    TransferEncodingOnHttp10,
    /// An HTTP version other than 1.0 and 1.1 (RFC 9110 §15.6.6: 505).
    UnsupportedVersion,
    /// An Expect header other than `100-continue` (RFC 9110 §10.1.1: 417).
    ExpectationFailed,
    /// A malformed chunk-size line, chunk framing or trailer section, or one beyond our bounds
    /// (RFC 9112 §7.1).
    BadChunk,
    /// The connection ended before the body did (RFC 9112 §8).
    BodyTruncated,
    /// The client did not send a complete head in time (RFC 9110 §15.5.9: 408).
    HeaderTimeout,
    /// An HTTP/1.1 request without a Host header, or with more than one (RFC 9112 §3.2: 400).
    BadHost,
}

impl HttpError {
    /// The response status for this failure. This is the only mapping from error to status.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequestLine
            | HttpError::TooManyEmptyLines
            | HttpError::BadTarget
            | HttpError::BadHeader
            | HttpError::BadContentLength
            | HttpError::ConflictingFraming
            | HttpError::BadTransferEncoding
            | HttpError::TransferEncodingOnHttp10
            | HttpError::BadChunk
            | HttpError::BodyTruncated
            | HttpError::BadHost => 400,
            HttpError::HeaderTimeout => 408,
            HttpError::UriTooLong => 414,
            HttpError::ExpectationFailed => 417,
            HttpError::HeaderLineTooLong | HttpError::TooManyHeaders | HttpError::HeadTooLarge => {
                431
            }
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::UnsupportedVersion => 505,
        }
    }

    /// A short sentence for the client, safe to put in a response body.
    pub fn message(&self) -> &'static str {
        match self {
            HttpError::BadRequestLine => "Malformed request line",
            HttpError::TooManyEmptyLines => "Too many empty lines before the request line",
            HttpError::BadTarget => "Request target must be an absolute path",
            HttpError::UriTooLong => "Request line too long",
            HttpError::HeaderLineTooLong => "Request header line too long",
            HttpError::TooManyHeaders => "Too many request headers",
            HttpError::HeadTooLarge => "Request headers too large",
            HttpError::BadHeader => "Malformed request header",
            HttpError::BadContentLength => "Invalid Content-Length",
            HttpError::ConflictingFraming => "Both Transfer-Encoding and Content-Length present",
            HttpError::BadTransferEncoding => "Invalid Transfer-Encoding",
            HttpError::UnsupportedTransferEncoding => "Unsupported Transfer-Encoding",
            HttpError::TransferEncodingOnHttp10 => "Transfer-Encoding is not allowed in HTTP/1.0",
            HttpError::UnsupportedVersion => "HTTP version not supported",
            HttpError::ExpectationFailed => "Only the 100-continue expectation is supported",
            HttpError::BadChunk => "Malformed chunked body",
            HttpError::BodyTruncated => "Request body ended early",
            HttpError::HeaderTimeout => "Timed out waiting for the request headers",
            HttpError::BadHost => "An HTTP/1.1 request needs exactly one Host header",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.status())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[(HttpError, u16)] = &[
        (HttpError::BadRequestLine, 400),
        (HttpError::BadHost, 400),
        (HttpError::TooManyEmptyLines, 400),
        (HttpError::BadTarget, 400),
        (HttpError::UriTooLong, 414),
        (HttpError::HeaderLineTooLong, 431),
        (HttpError::TooManyHeaders, 431),
        (HttpError::HeadTooLarge, 431),
        (HttpError::BadHeader, 400),
        (HttpError::BadContentLength, 400),
        (HttpError::ConflictingFraming, 400),
        (HttpError::BadTransferEncoding, 400),
        (HttpError::UnsupportedTransferEncoding, 501),
        (HttpError::TransferEncodingOnHttp10, 400),
        (HttpError::UnsupportedVersion, 505),
        (HttpError::ExpectationFailed, 417),
        (HttpError::BadChunk, 400),
        (HttpError::BodyTruncated, 400),
        (HttpError::HeaderTimeout, 408),
    ];

    #[test]
    fn status_table() {
        for (error, status) in ALL {
            assert_eq!(error.status(), *status, "{error:?}");
        }
    }

    #[test]
    fn messages_are_short_single_lines() {
        for (error, _) in ALL {
            let m = error.message();
            assert!(!m.is_empty() && m.len() < 80, "{error:?}");
            assert!(!m.contains(['\r', '\n']), "{error:?}");
            assert!(error.to_string().contains(m));
        }
    }
}
