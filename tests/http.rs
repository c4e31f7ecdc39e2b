//! The HTTP/1.1 layer seen from a client on a real socket: bad requests and their statuses,
//! keep-alive, pipelining, bodies, timeouts, starvation and garbage input.
//!
//! Servers here use `max_header_line = 256` where limits matter, and short timeouts where
//! timeouts are tested; everything else is the harness's base config.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{self, read_response, show, Response, Server};

/// How long a test waits for the server to answer or close before calling it stuck.
const ANSWER: Duration = Duration::from_secs(5);

/// The `max_header_line` of the servers that test limits.
const LINE_LIMIT: usize = 256;

/// Asserts that a fresh client still gets 200 from GET /healthcheck.
fn assert_healthy(server: &Server, after: &str) {
    match util::get(server.addr(), "/healthcheck") {
        Ok(response) if response.status == 200 && response.text() == "OK" => {}
        other => panic!(
            "after {after}, GET /healthcheck did not get 200 OK: {other:?}\n--- log ---\n{}",
            server.log()
        ),
    }
}

/// A connection with a buffered reader, for several exchanges on one connection.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(ANSWER)).expect("timeout");
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// Reads one response to a `method` request; panics with `context` if there is none.
    fn response(&mut self, method: &str, context: &str) -> Response {
        match read_response(&mut self.reader, method) {
            Ok(Some(response)) => response,
            other => panic!("{context}: expected a response, got {other:?}"),
        }
    }

    /// Sends `request` and reads its response.
    fn exchange(&mut self, request: &[u8], method: &str) -> Response {
        self.send(request);
        self.response(method, &format!("request {}", show(request)))
    }

    /// Whether the server closed with a FIN and sent nothing more: `Ok(bytes)` otherwise says
    /// what came instead, `Err` a reset or a timeout.
    fn closed_cleanly(&mut self) -> Result<(), String> {
        match util::read_to_eof(&mut self.reader) {
            Ok(rest) if rest.is_empty() => Ok(()),
            Ok(rest) => Err(format!("unexpected bytes before EOF: {}", show(&rest))),
            Err(error) => Err(format!("no clean EOF: {error}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Bad requests: the right status, `Connection: close`, a FIN, and a server still healthy.
// ---------------------------------------------------------------------------------------------

/// One bad request and what the server must answer.
struct Bad {
    name: &'static str,
    request: Vec<u8>,
    /// Half-close our side after sending (a body cut short by the client).
    shut_write: bool,
    /// The correct status.
    status: u16,
    /// `Some(actual)` while a server bug answers `actual` instead: see the FIXME at the case.
    fixme_actual: Option<u16>,
}

fn bad(name: &'static str, request: impl Into<Vec<u8>>, status: u16) -> Bad {
    Bad {
        name,
        request: request.into(),
        shut_write: false,
        status,
        fixme_actual: None,
    }
}

/// A request whose request line is exactly `len` bytes (without CRLF): GET /healthcheck?aaa...
fn request_line_of(len: usize) -> Vec<u8> {
    let fixed = "GET /healthcheck? HTTP/1.1".len();
    format!(
        "GET /healthcheck?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(len - fixed)
    )
    .into_bytes()
}

/// A request to /healthcheck with one header line of exactly `len` bytes (without CRLF).
fn header_line_of(len: usize) -> Vec<u8> {
    format!(
        "GET /healthcheck HTTP/1.1\r\nHost: x\r\nX: {}\r\nConnection: close\r\n\r\n",
        "v".repeat(len - "X: ".len())
    )
    .into_bytes()
}

/// A request to /healthcheck with exactly `count` header fields, `Host` and `Connection: close`
/// included.
fn with_headers(count: usize) -> Vec<u8> {
    let mut request = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for i in 2..count {
        request.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request
}

fn bad_requests() -> Vec<Bad> {
    let mut cases = vec![
        // Request line.
        bad("request line without a version", "GET /healthcheck\r\n\r\n", 400),
        bad("request line with two spaces", "GET  /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        bad("request line of garbage", "\x01\x02\x03 / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        bad("absolute-form target", "GET http://x/healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        bad("lowercase version", "GET /healthcheck http/1.1\r\n\r\n", 400),
        bad("HTTP/2.0 is not supported", "GET /healthcheck HTTP/2.0\r\n\r\n", 505),
        bad("HTTP/0.9 is not supported", "GET /healthcheck HTTP/0.9\r\n\r\n", 505),
        // Limits, one over (the same limits at the limit: `limits_are_inclusive`).
        bad("request line over max_header_line", request_line_of(LINE_LIMIT + 1), 414),
        bad("header line over max_header_line", header_line_of(LINE_LIMIT + 1), 431),
        bad("101 header fields", with_headers(101), 431),
        // Malformed header lines.
        bad("header without a colon", "GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A b\r\n\r\n", 400),
        bad("space before the colon", "GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400),
        bad("obs-fold", "GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400),
        bad("NUL in a header value", "GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400),
        // Content-Length.
        bad("Content-Length negative", "POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        bad("Content-Length with a plus sign", "POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
        bad("Content-Length not a number", "POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: five\r\n\r\n", 400),
        bad("Content-Length overflowing u64", "POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
        bad("two differing Content-Lengths", "POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
        bad("a Content-Length list that differs", "POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
        // Transfer-Encoding.
        bad("Transfer-Encoding and Content-Length", "POST /versions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
        bad("Transfer-Encoding gzip, not ending in chunked", "POST /versions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        bad("Transfer-Encoding chunked twice", "POST /versions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        bad("Transfer-Encoding gzip then chunked", "POST /versions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        bad("Transfer-Encoding on HTTP/1.0", "POST /versions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        // Expect.
        bad("Expect other than 100-continue", "GET /healthcheck HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
    ];
    // Chunked and truncated bodies, sent to a route that reads its body (image create), so the
    // error is found whenever the bytes arrive. (A route that does not read the body discards
    // only what has already arrived: see `unread_body_is_discarded_when_it_has_arrived`.)
    let body_cases = vec![
        bad("chunk size zz", "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk size of 17 hex digits", "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\nh\r\n0\r\n\r\n", 400),
        bad("malformed trailer field", "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nNo colon\r\n\r\nGET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        bad("chunk data longer than its size", "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n", 400),
        Bad {
            shut_write: true,
            ..bad("chunked body truncated by a close", "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 400)
        },
        Bad {
            shut_write: true,
            ..bad("Content-Length body truncated by a close", "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhel", 400)
        },
    ];
    cases.extend(body_cases);
    // Host: RFC 9112 §3.2 requires 400 for an HTTP/1.1 request without a Host header or with
    // more than one.
    let host_cases = vec![
        bad(
            "HTTP/1.1 without Host",
            "GET /healthcheck HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        bad(
            "two Host headers",
            "GET /healthcheck HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            400,
        ),
    ];
    cases.extend(host_cases);
    cases
}

#[test]
fn bad_requests_get_their_status_then_a_close() {
    let server = Server::start(&format!("workers = 1\nmax_header_line = {LINE_LIMIT}"));
    let mut failures = Vec::new();
    for case in bad_requests() {
        let (response, rest) =
            util::exchange_then_eof(server.addr(), &case.request, case.shut_write, ANSWER);
        let status = case.fixme_actual.unwrap_or(case.status);
        let verdict = match (&response, &rest) {
            (Ok(Some(r)), Ok(rest)) if r.status == status && r.closes() && rest.is_empty() => None,
            (Ok(Some(r)), _) if r.status != status => Some(format!("status {}", r.status)),
            (Ok(Some(r)), _) if !r.closes() => Some("no `Connection: close`".to_string()),
            (Ok(Some(_)), Ok(rest)) => Some(format!("bytes after the response: {}", show(rest))),
            (Ok(Some(_)), Err(e)) => Some(format!("no clean close after the response: {e}")),
            (Ok(None), _) => Some("closed without a response".to_string()),
            (Err(e), _) => Some(format!("no readable response: {e}")),
        };
        if let Some(problem) = verdict {
            let note = match case.fixme_actual {
                Some(_) => format!(" (today's answer, see its FIXME; correct: {})", case.status),
                None => String::new(),
            };
            failures.push(format!(
                "{}: {problem}\n  request:  {}\n  expected: {status}{note} with Connection: close, then EOF\n  response: {response:?}\n  after it: {rest:?}",
                case.name,
                show(&case.request),
            ));
        }
        assert_healthy(&server, case.name);
    }
    assert!(
        failures.is_empty(),
        "{} bad request(s) mishandled:\n{}\n--- log ---\n{}",
        failures.len(),
        failures.join("\n"),
        server.log()
    );
}

/// A request with both Transfer-Encoding and Content-Length whose body hides a second request:
/// it is refused, and the hidden request is never served (hyper's `post_with_chunked_overflow`).
#[test]
fn smuggled_request_behind_te_and_cl_is_never_served() {
    let server = Server::start("workers = 1");
    let smuggled: &[&[u8]] = &[
        // TE wins for a front end, CL for us: the body would end after "0\r\n\r\n".
        b"POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n",
        // CL covers the hidden request for a front end; chunked would stop before it.
        b"POST /versions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n",
        // An obfuscated Transfer-Encoding.
        b"POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /sneaky HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for request in smuggled {
        let (response, rest) = util::exchange_then_eof(server.addr(), request, false, ANSWER);
        let context = format!(
            "request: {}\nresponse: {response:?}\nafter it: {rest:?}\n--- log ---\n{}",
            show(request),
            server.log()
        );
        let response = response.as_ref().ok().and_then(Option::as_ref);
        assert_eq!(response.map(|r| r.status), Some(400), "{context}");
        assert!(response.is_some_and(Response::closes), "{context}");
        assert!(
            rest.as_ref().is_ok_and(Vec::is_empty),
            "a second response came back:\n{context}"
        );
        assert!(!server.log().contains("/sneaky"), "{context}");
    }
    assert_healthy(&server, "smuggling attempts");
}

/// The limits are inclusive: a request line, a header line of exactly `max_header_line` bytes
/// and exactly 100 header fields are served (one more of each: `bad_requests_...`).
#[test]
fn limits_are_inclusive() {
    let server = Server::start(&format!("max_header_line = {LINE_LIMIT}"));
    for (name, request) in [
        (
            "request line at max_header_line",
            request_line_of(LINE_LIMIT),
        ),
        ("header line at max_header_line", header_line_of(LINE_LIMIT)),
        ("100 header fields", with_headers(100)),
    ] {
        let response = util::raw_exchange(server.addr(), &request);
        assert!(
            matches!(&response, Ok(Some(r)) if r.status == 200),
            "{name}: expected 200\nrequest: {}\nresponse: {response:?}\n--- log ---\n{}",
            show(&request),
            server.log()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Protocol behaviour on good requests.
// ---------------------------------------------------------------------------------------------

#[test]
fn http11_keeps_the_connection_alive_by_default() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    for i in 0..3 {
        let response = client.exchange(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", "GET");
        assert_eq!(response.status, 200, "request {i}: {response:?}");
        assert!(!response.closes(), "request {i}: {response:?}");
    }
}

#[test]
fn connection_close_is_honoured() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    let response = client.exchange(
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET",
    );
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.closes(), "{response:?}");
    client.closed_cleanly().unwrap();
}

#[test]
fn http10_closes_by_default_and_keeps_alive_when_asked() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    let response = client.exchange(b"GET /healthcheck HTTP/1.0\r\n\r\n", "GET");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.closes(), "{response:?}");
    client.closed_cleanly().unwrap();

    let mut client = Client::connect(server.addr());
    for i in 0..2 {
        let response = client.exchange(
            b"GET /healthcheck HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "GET",
        );
        assert_eq!(response.status, 200, "request {i}: {response:?}");
        assert_eq!(
            response.header("connection"),
            Some("keep-alive"),
            "request {i}: {response:?}"
        );
    }
}

#[test]
fn http_keepalive_false_closes_every_connection() {
    let server = Server::start("http_keepalive = false");
    let mut client = Client::connect(server.addr());
    let response = client.exchange(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", "GET");
    assert!(response.status == 200 && response.closes(), "{response:?}");
    client.closed_cleanly().unwrap();
}

/// HEAD gets the headers GET would, Content-Length included, and no body: the next response
/// on the connection starts right after the head.
#[test]
fn head_has_content_length_but_no_body() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    // Not /healthcheck: oslo.middleware answers its HEAD 204, without a body or length
    // (`healthcheck::a_disable_file_takes_the_node_out_and_its_removal_puts_it_back`).
    for path in ["/versions", "/", "/v2/images"] {
        let get = client.exchange(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            "GET",
        );
        let head = client.exchange(
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            "HEAD",
        );
        assert_eq!(head.status, get.status, "{path}: {head:?}");
        assert_eq!(
            head.header("content-length"),
            Some(get.body.len().to_string().as_str()),
            "{path}: {head:?}"
        );
        assert!(head.body.is_empty());
    }
    // Had a body followed a HEAD response, this would read it as a status line.
    let response = client.exchange(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", "GET");
    assert_eq!(response.text(), "OK");
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    client.send(
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /versions HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /healthcheck HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n\
          GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let expected = [
        ("GET", 200),
        ("GET", 200),
        ("HEAD", 204),
        ("POST", 405),
        ("GET", 404),
        ("GET", 300),
    ];
    let mut statuses = Vec::new();
    for (method, _) in expected {
        statuses.push(
            client
                .response(method, &format!("after {statuses:?}"))
                .status,
        );
    }
    assert_eq!(
        statuses,
        expected.map(|(_, status)| status),
        "\n--- log ---\n{}",
        server.log()
    );
    client.closed_cleanly().unwrap();
}

/// A worker goes on with the requests pipelined behind a response without switching the socket
/// to blocking mode unless a request has a body (issue 13): a body pipelined behind a bodyless
/// request, of which only a part has come when its worker starts reading it (the rest follows a
/// stall), is waited for and read whole, on the same connection, and the request behind it is
/// served too.
#[test]
fn a_body_still_arriving_behind_a_bodyless_request_is_waited_for() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    let body = br#"{"name": "split", "disk_format": "raw", "container_format": "bare"}"#;
    let (first, rest) = body.split_at(10);
    let mut pipelined = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    pipelined.extend_from_slice(
        format!(
            "POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    pipelined.extend_from_slice(first);
    client.send(&pipelined);
    let health = client.response("GET", "the health check before the POST");
    assert_eq!(health.status, 200, "{health:?}");
    // A stall, not a wait for a condition: the worker reads the body meanwhile and finds
    // nothing more in the socket (on a socket left non-blocking, that read would fail).
    thread::sleep(Duration::from_millis(200));
    let mut rest = rest.to_vec();
    rest.extend_from_slice(b"GET /versions HTTP/1.1\r\nHost: x\r\n\r\n");
    client.send(&rest);
    let created = client.response("POST", "the POST whose body came in two parts");
    assert_eq!(
        created.status,
        201,
        "{created:?}\n--- log ---\n{}",
        server.log()
    );
    let image: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    assert_eq!(image["name"], "split");
    assert!(!created.closes(), "{created:?}");
    let versions = client.response("GET", "the GET behind the POST");
    assert_eq!(versions.status, 200, "{versions:?}");
}

/// No route reads a request body yet, so `100 Continue` is never sent: the 405 is the final
/// answer, with `Connection: close` since the client may or may not send the body now
/// (RFC 9110 §10.1.1). The close is graceful: a body sent anyway does not reset the connection.
#[test]
fn expect_100_continue_to_a_refusing_route_gets_the_final_status_and_a_close() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    client.send(
        b"POST /versions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let mut status_line = String::new();
    client.reader.read_line(&mut status_line).unwrap();
    assert!(
        status_line.starts_with("HTTP/1.1 405 "),
        "expected the final 405 without a 100 Continue first, got {status_line:?}"
    );
    client.send(b"hello");
    let mut rest = String::new();
    client.reader.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("Connection: close\r\n"),
        "{status_line}{rest}"
    );
    assert!(!rest.contains("HTTP/1.1"), "a second response: {rest}");
}

/// Expect: 100-continue on a request without a body expects nothing: no interim response,
/// and the connection stays open.
#[test]
fn expect_100_continue_without_a_body_is_served_normally() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    client.send(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
    let mut status_line = String::new();
    client.reader.read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200 "), "{status_line:?}");
    // Rest of that response, then a second request on the same connection.
    loop {
        let mut line = String::new();
        client.reader.read_line(&mut line).unwrap();
        assert!(!line.eq_ignore_ascii_case("connection: close\r\n"));
        if line == "\r\n" {
            break;
        }
    }
    let mut ok = [0u8; 2];
    client.reader.read_exact(&mut ok).unwrap();
    let response = client.exchange(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", "GET");
    assert_eq!(response.status, 200);
}

/// A body the route does not read is discarded when it has already arrived (up to 1 MiB,
/// serve.rs `MAX_DISCARD_BYTES`), so the connection carries the next request; a body larger
/// than that closes the connection instead (the server does not wait for a body it does not
/// need: that would let a stalled client pin a worker).
#[test]
fn unread_body_is_discarded_when_it_has_arrived() {
    let server = Server::start("");
    const MIB: usize = 1024 * 1024;
    for (length, keeps_alive) in [(1000, true), (MIB + 1, false)] {
        let mut client = Client::connect(server.addr());
        let mut request =
            format!("POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n")
                .into_bytes();
        request.extend(std::iter::repeat_n(b'x', length));
        client.send(&request);
        let response = client.response("POST", &format!("body of {length} bytes"));
        assert_eq!(response.status, 405, "{length}: {response:?}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{response:?}");
        assert_eq!(response.closes(), !keeps_alive, "{length}: {response:?}");
        if keeps_alive {
            let next = client.exchange(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", "GET");
            assert_eq!(next.status, 200, "after a body of {length} bytes: {next:?}");
        } else {
            client
                .closed_cleanly()
                .unwrap_or_else(|e| panic!("{length}: {e}"));
        }
    }
}

/// A chunked body with chunk extensions and trailer fields is consumed exactly: a request
/// pipelined behind it is served.
#[test]
fn chunked_body_with_extensions_and_trailers_is_consumed_exactly() {
    let server = Server::start("");
    let mut client = Client::connect(server.addr());
    let request: &[u8] =
        b"POST /versions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=value\r\nhello\r\n\
        6 ;x=\"q\"\r\n world\r\n\
        A\r\n0123456789\r\n\
        0;last\r\nExpires: never\r\nX-Checksum: abc\r\n\r\n\
        GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n";
    client.send(request);
    let first = client.response("POST", "the chunked POST");
    assert_eq!(first.status, 405, "{first:?}");
    assert!(!first.closes(), "{first:?}\n--- log ---\n{}", server.log());
    let second = client.response("GET", "the GET behind the chunked body");
    assert_eq!((second.status, second.text().as_str()), (200, "OK"));
}

/// Nothing a client sends reaches a response header, and a Host header that is not a plain
/// host[:port] is not echoed into the version links.
#[test]
fn request_bytes_never_reach_response_headers() {
    let server = Server::start("");
    // Without a plausible Host (and no public_endpoint) the links use the address actually
    // listened on, with the real port even though the config says bind_port = 0.
    let listen = format!("http://{}/v2/", server.addr());
    let hosts: &[(&[u8], Option<&str>)] = &[
        (
            b"glance.example:9292",
            Some("http://glance.example:9292/v2/"),
        ),
        (b"[::1]:9292", Some("http://[::1]:9292/v2/")),
        (b"evil%0d%0aSet-Cookie:%20a=b", None),
        (b"evil\"><script>", None),
        (b"a b", None),
        (b"evil\tX-Injected: 1", None),
        (b"evil\x80\xff", None),
        (b"evil/v2?x=", None),
    ];
    for &(host, echoed) in hosts {
        for path in ["/versions", "/"] {
            let mut request = format!("GET {path} HTTP/1.1\r\nHost: ").into_bytes();
            request.extend_from_slice(host);
            request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
            let response = util::raw_exchange(server.addr(), &request);
            let context = format!("request: {}\nresponse: {response:?}", show(&request));
            let response = response
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("{context}"));
            let names: Vec<String> = response
                .headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .collect();
            assert_eq!(
                names,
                // The request id is ours (issue 14), never a request's bytes.
                [
                    "content-type",
                    "x-openstack-request-id",
                    "content-length",
                    "connection"
                ],
                "{context}"
            );
            let document: serde_json::Value =
                serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("{e}: {context}"));
            let expected = echoed.unwrap_or(&listen);
            for version in document["versions"].as_array().unwrap() {
                assert_eq!(version["links"][0]["href"], expected, "{context}");
            }
        }
    }
    // Percent-encoded CR LF in the path stays in the path.
    let request = b"GET /%0d%0aSet-Cookie:%20a=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let response = util::raw_exchange(server.addr(), request).unwrap().unwrap();
    assert_eq!(response.status, 404);
    assert!(response.header("set-cookie").is_none(), "{response:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Timeouts.
// ---------------------------------------------------------------------------------------------

/// The bound on "about 1 s" timeouts: generous for a loaded 2-core machine.
const ABOUT_ONE_SECOND: Duration = Duration::from_secs(6);

#[test]
fn half_a_head_gets_408_after_client_header_timeout_then_a_close() {
    let server = Server::start("client_header_timeout = 1");
    let mut client = Client::connect(server.addr());
    let started = Instant::now();
    client.send(b"GET /healthcheck HTTP/1.1\r\nHost: x");
    let response = client.response("GET", "half a head");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 408, "{response:?}");
    assert!(response.closes(), "{response:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < ABOUT_ONE_SECOND,
        "408 after {elapsed:?}"
    );
    client.closed_cleanly().unwrap();
}

#[test]
fn silent_connection_is_closed_without_a_response_after_client_header_timeout() {
    let server = Server::start("client_header_timeout = 1");
    let mut client = Client::connect(server.addr());
    let started = Instant::now();
    client.closed_cleanly().unwrap_or_else(|e| {
        panic!(
            "after {:?}: {e}\n--- log ---\n{}",
            started.elapsed(),
            server.log()
        )
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < ABOUT_ONE_SECOND,
        "closed after {elapsed:?}"
    );
}

/// An idle keep-alive connection whose credentials were accepted (any API request under
/// `noauth`) is closed after `client_socket_timeout` with a FIN (read returns 0), never a reset.
#[test]
fn idle_keep_alive_connection_is_closed_fin_first_after_client_socket_timeout() {
    let server = Server::start("client_socket_timeout = 1");
    let mut client = Client::connect(server.addr());
    let response = client.exchange(b"GET /v2/images HTTP/1.1\r\nHost: x\r\n\r\n", "GET");
    assert!(response.status == 200 && !response.closes(), "{response:?}");
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = client.reader.read(&mut byte);
    let elapsed = started.elapsed();
    assert!(
        matches!(read, Ok(0)),
        "expected EOF (FIN), got {read:?} after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < ABOUT_ONE_SECOND,
        "closed after {elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Starvation: one child, two worker threads.
// ---------------------------------------------------------------------------------------------

const STARVED: &str = "workers = 1\nworker_threads = 2";

/// GET /healthcheck on a fresh connection must succeed within 2 s.
fn assert_fresh_client_served(server: &Server, while_: &str) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_response(&mut BufReader::new(stream), "GET");
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 200),
        "while {while_}: no 200 within 2 s ({:?}): {response:?}\n--- log ---\n{}",
        started.elapsed(),
        server.log()
    );
}

#[test]
fn idle_and_slow_connections_do_not_starve_a_new_client() {
    let server = Server::start(STARVED);
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(server.addr()).expect("idle connection"));
    }
    for i in 0..50 {
        let mut slow = TcpStream::connect(server.addr()).expect("slow connection");
        slow.write_all(format!("GET /healthcheck?{i} HTTP/1.1\r\nHost: sl").as_bytes())
            .unwrap();
        held.push(slow);
    }
    assert_fresh_client_served(&server, "50 idle and 50 slow connections are open");
}

#[test]
fn idle_keep_alive_connections_do_not_starve_a_new_client() {
    let server = Server::start(STARVED);
    let mut held = Vec::new();
    for i in 0..10 {
        let mut client = Client::connect(server.addr());
        let response = client.exchange(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", "GET");
        assert!(
            response.status == 200 && !response.closes(),
            "{i}: {response:?}"
        );
        held.push(client);
    }
    assert_fresh_client_served(&server, "10 keep-alive connections sit idle");
}

/// A client that sends a head announcing a body and then stalls does not pin a worker on a
/// route that never reads the body: the answer goes out at once with `Connection: close`, and
/// the acceptor, not a worker, waits out the rest.
#[test]
fn stalled_unread_bodies_do_not_pin_worker_threads() {
    let server = Server::start(STARVED);
    let mut stalled = Vec::new();
    for i in 0..4 {
        let mut client = Client::connect(server.addr());
        client.send(b"POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab");
        let response = client.response("POST", "the stalled POST");
        assert_eq!(response.status, 405, "{i}: {response:?}");
        assert!(
            response.closes(),
            "{i}: an unfinished body closes the connection"
        );
        stalled.push(client);
    }
    assert_fresh_client_served(&server, "4 clients stalled in their request bodies");
}

/// A JSON body trickled to a route that reads it (image create) is due whole within
/// client_header_timeout: the trickling clients get 408 at that deadline and their workers are
/// free again, however slowly they keep sending.
#[test]
fn trickled_json_bodies_get_408_at_the_header_deadline() {
    let server = Server::start(&format!("{STARVED}\nclient_header_timeout = 1"));
    let started = Instant::now();
    let mut clients: Vec<Client> = (0..2)
        .map(|_| {
            let mut client = Client::connect(server.addr());
            client.send(
                b"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{",
            );
            client
        })
        .collect();
    // Each keeps sending a byte now and then, well within the 60 s stall timeout.
    for _ in 0..3 {
        for client in &mut clients {
            client.send(b" ");
        }
        thread::sleep(Duration::from_millis(300));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let response = client.response("POST", "a trickled JSON body");
        assert_eq!(response.status, 408, "{i}: {response:?}");
        assert!(response.closes(), "{i}: {response:?}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "the deadline is the header timeout (1 s), not the stall timeout: {elapsed:?}"
    );
    assert_fresh_client_served(&server, "after the trickled bodies timed out");
}

// ---------------------------------------------------------------------------------------------
// 5. Garbage never panics a thread.
// ---------------------------------------------------------------------------------------------

/// xorshift64*: a fixed-seed generator, so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Bytes biased towards the ones HTTP parsers care about.
    fn nasty(&mut self, len: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = b"\0\r\n :;,\t/?%\x7f\x80\xc3\xff0fF";
        (0..len)
            .map(|_| match self.below(3) {
                0 => SPECIAL[self.below(SPECIAL.len())],
                _ => self.next() as u8,
            })
            .collect()
    }
}

/// A few hundred garbage requests, from pure noise to valid requests with one field corrupted.
fn garbage(rng: &mut Rng) -> Vec<Vec<u8>> {
    let valid: &[&[u8]] = &[
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /versions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /v2/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n",
        b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];
    let mut cases = Vec::new();
    for i in 0..300 {
        let case = match i % 5 {
            // Pure noise.
            0 => {
                let len = 1 + rng.below(300);
                rng.bytes(len)
            }
            // A valid request with bytes overwritten or inserted.
            1 => {
                let mut request = valid[rng.below(valid.len())].to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(request.len());
                    let byte = rng.nasty(1)[0];
                    if rng.below(2) == 0 {
                        request[at] = byte;
                    } else {
                        request.insert(at, byte);
                    }
                }
                request
            }
            // Invalid bytes in the path.
            2 => {
                let len = rng.below(40);
                let mut request = b"GET /".to_vec();
                request.extend(rng.nasty(len));
                request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
                request
            }
            // A valid request cut short, perhaps with NULs after it.
            3 => {
                let request = valid[rng.below(valid.len())];
                let mut cut = request[..rng.below(request.len())].to_vec();
                let nuls = rng.below(3);
                cut.extend(std::iter::repeat_n(0u8, nuls));
                cut
            }
            // Invalid bytes in a header name or value.
            _ => {
                let (name_len, value_len) = (rng.below(10), rng.below(60));
                let mut request = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n".to_vec();
                request.extend(rng.nasty(name_len));
                request.extend_from_slice(b": ");
                request.extend(rng.nasty(value_len));
                request.extend_from_slice(b"\r\n\r\n");
                request
            }
        };
        cases.push(case);
    }
    cases
}

#[test]
fn garbage_input_never_panics_and_the_server_stays_healthy() {
    let server = Server::start("client_header_timeout = 2\nclient_body_timeout = 2");
    let children = server.children(None);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (i, request) in garbage(&mut rng).into_iter().enumerate() {
        // Half-close after sending, so a request cut short ends at once instead of timing out.
        let (response, rest) = util::exchange_then_eof(server.addr(), &request, true, ANSWER);
        let context = || {
            format!(
                "case {i}: request {}\nresponse: {response:?}\nafter it: {rest:?}\n--- log ---\n{}",
                show(&request),
                server.log()
            )
        };
        match &response {
            // Closed without a word: acceptable for input that is not a request.
            Ok(None) => {}
            // Corrupting a valid request may leave it valid, so any status a route gives is
            // fine; a 500 means a handler panicked.
            Ok(Some(r)) => assert!(
                matches!(r.status, 200 | 300 | 400..=499 | 501 | 505),
                "{}",
                context()
            ),
            // A reset before any response: fine too, as long as the server survives.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(_) => panic!("unreadable response\n{}", context()),
        }
    }
    assert_healthy(&server, "300 garbage requests");
    let log = server.log();
    assert!(!log.to_lowercase().contains("panic"), "--- log ---\n{log}");
    assert_eq!(
        server.children(None),
        children,
        "a child was replaced\n{log}"
    );
}
