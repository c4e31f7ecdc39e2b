//! The request/response loop a worker thread runs on one connection, and the [`Handler`] trait
//! the application implements.
//!
//! A worker gets a connection from the acceptor once a request head has arrived, with that head
//! as the acceptor parsed it (`parked::Ready`; it is not parsed again), serves that request and
//! any complete pipelined ones behind it, and hands the connection back with a [`Disposition`]:
//! park it until the next request, close it FIN-first, park it with the rest of a response the
//! socket could not take yet (see `sending`), or it is gone. A worker given a parked response
//! back ([`send`]) continues it where it stopped. Keep-alive is decided per response, from the request (its version and `Connection`
//! header), the `http_keepalive` option, whether the body was read to its end, and whether the
//! child is draining. A draining child answers every request it has taken with
//! `Connection: close` (RFC 9112 §9.6).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::body::{self, BodyReader};
use super::connection::Connection;
use super::error::HttpError;
use super::head::{self, Framing, Limits, Parsed, RequestHead, Version};
use super::parked::ArrivedHead;
use super::request_id::{self, RequestId};
use super::response::{self, Response, WriteOptions};
use super::sending::{AccessRecord, Outgoing, Progress, SendBudget, SendRule, Sending};
use crate::logging::RequestScope;

/// How long a worker waits, after a response on a keep-alive connection, for the client's next
/// request before handing the connection back to the acceptor. Back-to-back clients send within
/// this; an idle one costs its worker no longer than this.
pub const KEEPALIVE_LINGER: Duration = Duration::from_millis(1);

/// After a response, an unread request body is read and discarded up to this many bytes so the
/// connection can be reused; a larger remainder closes the connection instead.
pub const MAX_DISCARD_BYTES: u64 = 1024 * 1024;

/// What the application implements: one request in, one response out. Called on worker threads
/// concurrently; a panic is caught, answered with 500 and the connection closed.
pub trait Handler: Send + Sync {
    fn handle(&self, request: &mut Request<'_>) -> Response;
}

/// The per-connection limits and timeouts, from the config of the child's generation.
#[derive(Clone, Debug)]
pub struct Settings {
    pub limits: Limits,
    /// `http_keepalive`: when false every response closes its connection.
    pub keep_alive: bool,
    /// Longest wait for a whole request head (`client_header_timeout`).
    pub header_timeout: Duration,
    /// Longest wait between requests on a keep-alive connection (`client_socket_timeout`).
    pub idle_timeout: Option<Duration>,
    /// Longest stall while reading a request body (`client_body_timeout`).
    pub body_timeout: Duration,
    /// Longest stall while writing a response (`client_send_timeout`).
    pub send_timeout: Duration,
    /// Least average rate of a response, bytes a second (`client_send_min_rate`; 0: none).
    pub send_min_rate: u64,
    /// Where a parked response over the child's memory budget spills its bytes (see
    /// `sending`): the store's first data folder. `None`: nowhere, its worker finishes it.
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Settings {
    /// What a response's progress is held to (see `sending`).
    pub fn send_rule(&self) -> SendRule {
        SendRule {
            timeout: self.send_timeout,
            min_rate: self.send_min_rate,
        }
    }
}

/// What the worker hands back to the acceptor with the connection.
pub enum Disposition {
    /// Keep it open: wait in the poller for the next request.
    KeepAlive,
    /// Close it FIN-first: shut down our side, then discard what the client still sends until it
    /// closes, so that a response it has not read yet is not destroyed by a reset.
    Close,
    /// Nothing more can be done with it (the client left, or a write failed): drop it.
    Gone,
    /// Its response is not all sent and the socket is full: wait in the poller for room, then
    /// back to a worker with the rest (see `sending`).
    Sending(Box<Sending>),
}

/// One request as the handler sees it: the head, the peer, and the body as a `Read`.
pub struct Request<'a> {
    pub head: RequestHead,
    pub peer: SocketAddr,
    body: BodyReader<&'a mut Connection>,
    /// `Expect: 100-continue` was asked and the interim response is not sent yet; it is sent
    /// when the handler first reads the body, so a handler that refuses the request early never
    /// makes the client send the body.
    continue_pending: bool,
    /// A whole-body deadline the handler may set (see [`Request::limit_body_time`]); reads
    /// otherwise only bound each stall (`client_body_timeout`).
    body_deadline: Option<(Instant, Duration)>,
}

impl Request<'_> {
    /// Makes the rest of the body due within `limit`: each read then waits at most until that
    /// deadline (and at most the usual stall timeout), and a body still unfinished then fails
    /// with `TimedOut`. For small bodies read whole (JSON), so that a client trickling one
    /// byte per stall timeout cannot hold a worker thread for ever.
    pub fn limit_body_time(&mut self, limit: Duration, stall: Duration) {
        self.body_deadline = Some((Instant::now() + limit, stall));
    }

    /// The method, e.g. "GET".
    pub fn method(&self) -> &str {
        &self.head.method
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.head.path()
    }

    /// True once the whole body has been read.
    pub fn body_finished(&self) -> bool {
        self.body.is_finished()
    }
}

impl Read for Request<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.continue_pending {
            self.continue_pending = false;
            let connection: &mut Connection = self.body.get_mut();
            response::write_continue(&mut connection.stream())?;
        }
        if let Some((deadline, stall)) = self.body_deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                ));
            }
            self.body.get_mut().set_read_timeout(left.min(stall))?;
        }
        self.body.read(out)
    }
}

/// Where the child that runs a worker stands, as the worker sees it between two requests. The
/// acceptor sets it; workers read it for each response.
#[derive(Debug, Default)]
pub struct Drain(AtomicU8);

const SERVING: u8 = 0;
const HANDING_OVER: u8 = 1;
const CLOSING: u8 = 2;

impl Drain {
    /// Serving: keep-alive as the request and the options say.
    pub fn serve(&self) {
        self.0.store(SERVING, Ordering::SeqCst);
    }

    /// Draining with somewhere to hand connections over to: responses keep their connection,
    /// and the worker gives it back to the acceptor after each response instead of waiting for
    /// the client's next request, so that it moves to the new generation. A client that sends
    /// its next request as soon as it has read a response would otherwise be served here, one
    /// request after another, for as long as it keeps that pace, and hold the old child.
    pub fn hand_over(&self) {
        self.0.store(HANDING_OVER, Ordering::SeqCst);
    }

    /// Draining with nowhere to hand connections over to: every response says
    /// `Connection: close`, unless a next request has already arrived.
    pub fn close(&self) {
        self.0.store(CLOSING, Ordering::SeqCst);
    }

    fn closing(&self) -> bool {
        self.0.load(Ordering::SeqCst) == CLOSING
    }

    fn handing_over(&self) -> bool {
        self.0.load(Ordering::SeqCst) == HANDING_OVER
    }
}

/// Serves requests on `connection`, the first one with its `head` as the acceptor parsed it,
/// until the connection must be parked, closed or dropped.
///
/// The socket stays in the acceptor's non-blocking mode unless a request has a body to read
/// (or a response streams): a keep-alive request without a body costs no `ioctl(FIONBIO)` to
/// switch the socket back and forth (two system calls of each such request, issue 13). Its
/// mode is tracked by `Connection`, and the acceptor puts it back when the connection returns.
pub fn serve(
    connection: &mut Connection,
    head: ArrivedHead,
    handler: &dyn Handler,
    settings: &Settings,
    drain: &Drain,
    budget: &Arc<SendBudget>,
) -> Disposition {
    let disposition = serve_all(connection, head, handler, settings, drain, budget);
    if matches!(disposition, Disposition::KeepAlive) {
        // It may wait long in the acceptor: without a read buffer, not while this worker goes
        // on with it (the next request reuses the buffer).
        connection.shrink_if_empty();
    }
    disposition
}

fn serve_all(
    connection: &mut Connection,
    head: ArrivedHead,
    handler: &dyn Handler,
    settings: &Settings,
    drain: &Drain,
    budget: &Arc<SendBudget>,
) -> Disposition {
    // Blocking writes (a streamed response, `100 Continue`) are bounded by it.
    if connection.set_write_timeout(settings.send_timeout).is_err() {
        return Disposition::Gone;
    }
    let mut arrived = head;
    loop {
        let head = match arrived {
            Ok((head, used)) => {
                connection.consume_buffered(used);
                match head::check_host(&head) {
                    Ok(()) => head,
                    Err(error) => return reject(connection, &error, settings, budget),
                }
            }
            Err(error) => return reject(connection, &error, settings, budget),
        };
        match serve_one(connection, head, handler, settings, drain, budget) {
            Disposition::KeepAlive => {}
            other => return other,
        }
        // Pipelined requests: serve what is complete here. A client that sends its next
        // request right after reading a response is waited for briefly, which spares the
        // hand-off to the acceptor and back; anything else waits in the acceptor's epoll set.
        if connection.buffered().is_empty() && drain.handing_over() {
            // What the client sends next is for the new generation. (Closing, the worker still
            // waits briefly: a request that comes in that instant is answered here, with
            // `Connection: close`, rather than meeting our FIN.)
            return Disposition::KeepAlive;
        }
        if connection.buffered().is_empty()
            && connection.wait_readable(KEEPALIVE_LINGER)
            && connection
                .read_available(super::connection::HEAD_READ_CHUNK)
                .is_err()
        {
            return Disposition::Gone;
        }
        arrived = match head::parse(connection.buffered(), &settings.limits) {
            Ok(Parsed::Complete(head, used)) => Ok((head, used)),
            Err(error) => Err(error),
            Ok(Parsed::Partial) => return Disposition::KeepAlive,
        };
    }
}

/// Answers a request we could not parse, and closes.
fn reject(
    connection: &mut Connection,
    error: &HttpError,
    settings: &Settings,
    budget: &Arc<SendBudget>,
) -> Disposition {
    // Answered by this layer, it still carries an id, and the lines about it name it.
    let request_id = RequestId::generate();
    let _scope = RequestScope::enter(request_id.as_str());
    log::debug!(
        "{}: answering {} to a bad request: {error}",
        connection.peer(),
        error.status()
    );
    let response = Response::text(error.status(), &format!("{}\n", error.message()));
    let options = WriteOptions {
        version: Version::Http11,
        keep_alive: false,
        head_request: false,
    };
    // The access log has no method or target to show for a request that did not parse.
    let record = AccessRecord {
        request_id,
        peer: connection.peer(),
        method: "-".to_string(),
        target: "-".to_string(),
        status: error.status(),
        started: Instant::now(),
    };
    respond(connection, response, &options, record, settings, budget)
}

/// Runs the handler for one request and writes its response.
fn serve_one(
    connection: &mut Connection,
    head: RequestHead,
    handler: &dyn Handler,
    settings: &Settings,
    drain: &Drain,
    budget: &Arc<SendBudget>,
) -> Disposition {
    let started = Instant::now();
    let _in_flight = crate::metrics::in_flight();
    // Every line logged while this request is served names its id (the handler's errors too).
    let request_id = RequestId::generate();
    let _scope = RequestScope::enter(request_id.as_str());
    // Blocking, with timeouts, while the handler reads a body; `send` switches to non-blocking
    // for the response. Without a body the socket is not read here (`BodyReader` ends at once).
    if head.framing != Framing::None
        && (connection.set_blocking(true).is_err()
            || connection.set_read_timeout(settings.body_timeout).is_err())
    {
        return Disposition::Gone;
    }
    let version = head.version;
    let is_head = head.method == "HEAD";
    let wants_keep_alive = head.keep_alive;
    let framing = head.framing;
    let method = head.method.clone();
    let target = head.target.clone();
    let expect_continue = head.expect_continue;
    let peer = connection.peer();

    let (response, body_clean) = {
        let mut request = Request {
            head,
            peer,
            body: BodyReader::new(framing, &mut *connection),
            continue_pending: expect_continue && framing != Framing::None,
            body_deadline: None,
        };
        let response = match catch_unwind(AssertUnwindSafe(|| handler.handle(&mut request))) {
            Ok(response) => response,
            Err(_) => {
                log::error!("handler panicked on {method} {target}; answering 500");
                let options = WriteOptions {
                    version,
                    keep_alive: false,
                    head_request: is_head,
                };
                let record = AccessRecord {
                    request_id,
                    peer,
                    method,
                    target,
                    status: 500,
                    started,
                };
                let response = Response::text(500, "Internal Server Error\n");
                return respond(connection, response, &options, record, settings, budget);
            }
        };
        // A body the handler did not read is discarded if it has already arrived, so the
        // connection can carry the next request; a body still on its way is not waited for (a
        // client could stall it and pin this thread): the response closes the connection and
        // the acceptor discards the rest while it lingers. Not when the client still waits for
        // 100 Continue: it may never send the body.
        let leftover = if request.continue_pending {
            Leftover::Unfinished
        } else {
            discard_arrived(&mut request.body)
        };
        let response = match leftover {
            Leftover::Invalid(error) => {
                log::debug!("{peer}: request body invalid: {error}");
                Response::text(error.status(), &format!("{}\n", error.message()))
            }
            _ => response,
        };
        (response, matches!(leftover, Leftover::Clean))
    };

    let status = response.status;
    // What the answer says about the client's credentials (see `Connection::trusted`): a 401
    // withdraws the trust, accepted credentials give it, and any other answer (an open route
    // such as /healthcheck) leaves it as it was.
    if status == 401 {
        connection.trusted = false;
    } else if response.accepted_credentials {
        connection.trusted = true;
    }
    // A draining child keeps the connection only for a request that has already reached it
    // (pipelined behind this one): a request already sent is answered. Anything sent later
    // meets `Connection: close`, which tells the client not to send it here.
    let keep_alive = settings.keep_alive
        && wants_keep_alive
        && body_clean
        && (!drain.closing() || next_request_arrived(connection, settings));
    let options = WriteOptions {
        version,
        keep_alive,
        head_request: is_head,
    };
    connection.last_response = Instant::now();
    connection.requests_served += 1;
    let record = AccessRecord {
        request_id,
        peer,
        method,
        target,
        status,
        started,
    };
    respond(connection, response, &options, record, settings, budget)
}

/// Writes `response` to a request answered with `options`: through [`send`], or, for a
/// streamed body, with blocking writes. Every response goes through here, and gets its
/// request's id header here.
fn respond(
    connection: &mut Connection,
    response: Response,
    options: &WriteOptions,
    record: AccessRecord,
    settings: &Settings,
    budget: &Arc<SendBudget>,
) -> Disposition {
    let path = record
        .target
        .split_once('?')
        .map_or(record.target.as_str(), |(path, _)| path);
    crate::metrics::request_answered(
        &record.method,
        path,
        record.status,
        record.started.elapsed(),
    );
    let response = response.header(request_id::HEADER, record.request_id.as_str());
    let outgoing = match Outgoing::new(response::prepare(response, options)) {
        Ok(outgoing) => outgoing,
        Err(streamed) => return write_streamed(connection, streamed, &record),
    };
    send_rest(
        connection,
        Sending::new(outgoing, record, Instant::now()),
        settings,
        budget,
    )
}

/// Sends a response (or what is left of one) without blocking. Done, the connection is kept
/// or closed as the response said; when the socket is full, the response parks in the
/// acceptor (`Disposition::Sending`) if it may, else this worker waits for room, under the
/// same deadline either way (see `sending`).
pub fn send(
    connection: &mut Connection,
    sending: Sending,
    settings: &Settings,
    budget: &Arc<SendBudget>,
) -> Disposition {
    let disposition = send_rest(connection, sending, settings, budget);
    if matches!(disposition, Disposition::KeepAlive) {
        connection.shrink_if_empty();
    }
    disposition
}

/// [`send`], for the worker's loop: the read buffer is kept for the next request.
fn send_rest(
    connection: &mut Connection,
    mut sending: Sending,
    settings: &Settings,
    budget: &Arc<SendBudget>,
) -> Disposition {
    if connection.set_blocking(false).is_err() {
        return Disposition::Gone;
    }
    let rule = settings.send_rule();
    loop {
        match sending.advance(connection.stream(), Instant::now()) {
            Ok(Progress::Done) if sending.must_close() => return Disposition::Close,
            Ok(Progress::Done) => return Disposition::KeepAlive,
            Ok(Progress::Blocked) => {}
            Err(_) => return Disposition::Gone,
        }
        let deadline = sending.deadline(&rule);
        let now = Instant::now();
        if deadline <= now {
            sending.abandon(&rule);
            connection.abort();
            return Disposition::Gone;
        }
        if sending.may_park(budget, settings.spill_dir.as_deref()) {
            return Disposition::Sending(Box::new(sending));
        }
        connection.wait_writable(deadline - now);
    }
}

/// Writes a streamed (`Body::Reader`) response with blocking writes, each bounded by
/// `client_send_timeout`.
fn write_streamed(
    connection: &mut Connection,
    prepared: response::Prepared,
    record: &AccessRecord,
) -> Disposition {
    let must_close = prepared.must_close;
    let head_bytes = prepared.head.len() as u64;
    if connection.set_blocking(true).is_err() {
        record.not_completed(&"the socket could not be made blocking");
        return Disposition::Gone;
    }
    match response::write_prepared(&mut connection.stream(), prepared) {
        Ok(body_bytes) => {
            // The head and the body's payload (a chunked body's framing is not counted).
            crate::metrics::sent(head_bytes + body_bytes);
            record.completed(body_bytes);
            if must_close {
                Disposition::Close
            } else {
                Disposition::KeepAlive
            }
        }
        Err(error) => {
            record.not_completed(&error);
            Disposition::Gone
        }
    }
}

/// What was left of a request body after the handler.
enum Leftover {
    /// The body ended cleanly: the connection is positioned at the next request.
    Clean,
    /// More body is on its way (or more than [`MAX_DISCARD_BYTES`]): close after the response.
    Unfinished,
    /// The body is malformed or was cut short: the response becomes this error.
    Invalid(HttpError),
}

/// Reads and drops what has already arrived of the body, up to [`MAX_DISCARD_BYTES`], without
/// blocking.
fn discard_arrived(body: &mut BodyReader<&mut Connection>) -> Leftover {
    if body.is_finished() {
        return Leftover::Clean;
    }
    if body.get_mut().set_blocking(false).is_err() {
        return Leftover::Unfinished;
    }
    let mut limited = body.by_ref().take(MAX_DISCARD_BYTES);
    let result = io::copy(&mut limited, &mut io::sink());
    let _ = body.get_mut().set_blocking(true);
    match result {
        Ok(_) if body.is_finished() => Leftover::Clean,
        Ok(_) => Leftover::Unfinished,
        Err(error) => match body::http_error(&error) {
            Some(http) => Leftover::Invalid(*http),
            None => Leftover::Unfinished,
        },
    }
}

/// Whether a whole next request head is already here: in the buffer, or in the socket's receive
/// queue (read without blocking). An invalid head counts: it is answered with its error.
fn next_request_arrived(connection: &mut Connection, settings: &Settings) -> bool {
    loop {
        match head::parse(connection.buffered(), &settings.limits) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::Complete(..)) | Err(_) => return true,
        }
        match connection.read_available(super::connection::HEAD_READ_CHUNK) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}
