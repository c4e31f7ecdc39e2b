//! A parked connection: the waiting half of a connection's life, with its deadlines, as a state
//! machine the acceptor drives without blocking.
//!
//! A parked connection waits for its first request, sits idle between requests, holds part of
//! a head, waits for room to send the rest of a response, or lingers after our FIN. Each event
//! (bytes arrived, room to write, a deadline passed, a drain that closes idle connections)
//! moves it and returns a [`Step`]: stay parked, go to a worker with its head or its unsent
//! response, or be dropped. The head is parsed here, once: a worker gets the parse result with
//! the connection ([`Ready`]) and never parses that head again.
//!
//! This type knows nothing of epoll, workers or processes; the acceptor owns those. It
//! reads without blocking and writes at most one best-effort 408.

use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::connection::{Connection, HEAD_READ_CHUNK};
use super::error::HttpError;
use super::head::{self, Parsed, RequestHead, Version};
use super::request_id::{self, RequestId};
use super::response::{self, Response, WriteOptions};
use super::sending::Sending;
use super::serve::Settings;
use crate::logging::RequestScope;

/// How long a connection we closed FIN-first is kept to discard what the client still sends,
/// so that our last response is not destroyed by a reset before the client reads it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// A request head that has fully arrived, parsed: the head and the bytes it takes at the front
/// of the connection's buffer, or why it is invalid (answered with its status by the worker).
pub type ArrivedHead = Result<(RequestHead, usize), HttpError>;

/// A connection whose next request head has arrived, for a worker.
pub struct Ready {
    pub connection: Connection,
    pub head: ArrivedHead,
}

/// A connection with a response the socket now has room for, for a worker to go on sending.
pub struct Resume {
    pub connection: Connection,
    pub sending: Box<Sending>,
}

/// What a worker is given.
pub enum Work {
    Request(Ready),
    Response(Resume),
}

/// What a parked connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Accepted; its first request head has not fully arrived. Bounded by the header timeout,
    /// and served even when a drain starts meanwhile.
    FirstRequest,
    /// Keep-alive, between requests, nothing received. Bounded by `client_socket_timeout` once
    /// its credentials were accepted (`Connection::trusted`), else by `client_header_timeout`. When a child is full, the idle connection parked the
    /// longest gives way to a new client (see the acceptor).
    Idle,
    /// Part of a later request's head has arrived. Bounded by the header timeout.
    Head,
    /// The socket could not take all of a response: waiting for room (POLLOUT). Bounded by
    /// `client_send_timeout` and `client_send_min_rate` (see `sending`).
    Sending,
    /// We sent FIN; discarding the client's bytes until it closes or [`CLOSE_LINGER`] passes.
    Closing,
}

/// What a parked connection is to be woken for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Bytes, or the client's close.
    Read,
    /// Room in the socket for the rest of a response.
    Write,
}

/// What an event did to a parked connection.
pub enum Step {
    /// It stays parked.
    Stay,
    /// A whole head (or an invalid one) has arrived: to a worker with it.
    Serve(ArrivedHead),
    /// The socket has room (or failed) for the response being sent: to a worker to go on.
    Resume,
    /// Closed by the client, failed, or expired: drop it (which closes the socket).
    Drop,
}

/// A parked connection, or one whose head is already complete.
pub enum Next {
    Park(Parked),
    Serve(Ready),
}

/// A connection waiting in the acceptor (its table of waiting connections, `serve::waiting`).
pub struct Parked {
    connection: Connection,
    wait: Wait,
    /// When its wait ends: the header timeout, the idle timeout (none if unset) or the linger.
    deadline: Option<Instant>,
    /// It was closed while idle between requests (not after a response that said close), so
    /// bytes arriving now are a request the client sent just as our FIN left.
    after_idle: bool,
    /// The rest of a response, while `wait` is `Sending`.
    sending: Option<Box<Sending>>,
}

impl Parked {
    /// A connection just accepted, before its first request.
    pub fn accepted(connection: Connection, now: Instant, settings: &Settings) -> Parked {
        Parked {
            connection,
            wait: Wait::FirstRequest,
            deadline: Some(now + settings.header_timeout),
            after_idle: false,
            sending: None,
        }
    }

    /// A connection after a response that kept it open, or handed over from another process
    /// (`first_request`: it has not served one yet, so it keeps the header deadline rather than
    /// the longer idle timeout). Bytes it already holds are parsed at once.
    ///
    /// `header_deadline` is the deadline a handed-over connection brought along (see
    /// [`Parked::header_deadline`]): a wait bounded by the header timeout keeps it rather than
    /// starting anew, so a reload never extends it. Without one, the wait starts now.
    pub fn between_requests(
        connection: Connection,
        first_request: bool,
        header_deadline: Option<Instant>,
        now: Instant,
        settings: &Settings,
    ) -> Next {
        let wait = if first_request {
            Wait::FirstRequest
        } else if connection.buffered().is_empty() {
            Wait::Idle
        } else {
            Wait::Head
        };
        let header_deadline = header_deadline.unwrap_or(now + settings.header_timeout);
        let deadline = match wait {
            Wait::Idle if connection.trusted => settings.idle_timeout.map(|idle| now + idle),
            _ => Some(header_deadline),
        };
        let parked = Parked {
            connection,
            wait,
            deadline,
            after_idle: false,
            sending: None,
        };
        match parse(&parked.connection, settings) {
            Some(head) => Next::Serve(Ready {
                connection: parked.connection,
                head,
            }),
            None => Next::Park(parked),
        }
    }

    /// A connection whose response said close: FIN now, then linger.
    pub fn closing(connection: Connection, now: Instant) -> Parked {
        let mut parked = Parked {
            connection,
            wait: Wait::Closing,
            deadline: None,
            after_idle: false,
            sending: None,
        };
        parked.close(now);
        parked
    }

    /// A connection whose response the socket could not take whole: wait for room.
    pub fn sending(connection: Connection, sending: Box<Sending>, settings: &Settings) -> Parked {
        Parked {
            connection,
            wait: Wait::Sending,
            deadline: Some(sending.deadline(&settings.send_rule())),
            after_idle: false,
            sending: Some(sending),
        }
    }

    /// What the acceptor watches it for: room to write while sending, bytes (or a close)
    /// otherwise. It changes only with `wait`.
    pub fn interest(&self) -> Interest {
        match self.wait {
            Wait::Sending => Interest::Write,
            _ => Interest::Read,
        }
    }

    /// For a worker, after [`Step::Resume`]: the connection and its unsent response.
    pub fn into_resume(self) -> Option<Resume> {
        let sending = self.sending?;
        Some(Resume {
            connection: self.connection,
            sending,
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub fn into_connection(self) -> Connection {
        self.connection
    }

    pub fn wait(&self) -> Wait {
        self.wait
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Its deadline, if its wait is bounded by `client_header_timeout`: waiting for a first
    /// request, for the rest of a head, or idle without trust. What a handoff carries along.
    pub fn header_deadline(&self) -> Option<Instant> {
        match self.wait {
            Wait::FirstRequest | Wait::Head => self.deadline,
            Wait::Idle if !self.connection.trusted => self.deadline,
            Wait::Idle | Wait::Sending | Wait::Closing => None,
        }
    }

    /// Since when an idle connection has been idle: when its last response began (see
    /// `Connection::last_response`).
    pub fn idle_since(&self) -> Instant {
        self.connection.last_response
    }

    /// Waiting for a request (first, next, or the rest of one): what a drain hands over.
    pub fn waits_for_a_request(&self) -> bool {
        matches!(self.wait, Wait::Idle | Wait::FirstRequest | Wait::Head)
    }

    /// epoll reported the socket: writable while sending (the response goes on, or its
    /// worker meets the error), readable or hung up otherwise.
    pub fn on_event(&mut self, now: Instant, settings: &Settings) -> Step {
        if self.wait == Wait::Sending {
            if let Some(sending) = self.sending.as_mut() {
                sending.resumable(now);
            }
            return Step::Resume;
        }
        self.on_readable(now, settings)
    }

    /// The socket is readable (or hung up): read what is there and see what it makes.
    fn on_readable(&mut self, now: Instant, settings: &Settings) -> Step {
        match self.connection.read_more(HEAD_READ_CHUNK) {
            // The client closed. Between requests or after our FIN that is the normal end; in
            // the middle of a head the client gave up and there is no one to answer.
            Ok(0) => Step::Drop,
            Ok(_) if self.wait == Wait::Closing => {
                let n = self.connection.buffered().len();
                if self.connection.requests_served > 0 && self.after_idle {
                    // The client sent on a keep-alive connection after our FIN had left: the
                    // request is lost to it and must be retried (HTTP/1.1 allows that for
                    // idempotent requests). Logged so reload storms can be correlated.
                    log::info!(
                        "{}: discarded {n} byte(s) a client sent after we closed its idle \
                         keep-alive connection",
                        self.connection.peer()
                    );
                    self.after_idle = false;
                }
                self.connection.consume_buffered(n);
                Step::Stay
            }
            Ok(_) => {
                if self.wait == Wait::Idle {
                    self.wait = Wait::Head;
                    self.deadline = Some(now + settings.header_timeout);
                }
                self.head_step(settings)
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Step::Stay
            }
            Err(_) => Step::Drop,
        }
    }

    /// The deadline has passed (the caller checks `deadline() <= now`): a head that is late
    /// gets a 408 and a FIN, a silent connection is dropped, an idle one is closed.
    pub fn on_deadline(&mut self, now: Instant, settings: &Settings) -> Step {
        match self.wait {
            Wait::FirstRequest | Wait::Head if !self.connection.buffered().is_empty() => {
                answer_timeout(&self.connection);
                self.close(now);
                Step::Stay
            }
            Wait::FirstRequest | Wait::Head => Step::Drop,
            Wait::Idle => self.close_idle(now, settings),
            Wait::Sending => {
                // Logged as an access line that says why; the close is a reset.
                if let Some(sending) = &self.sending {
                    sending.abandon(&settings.send_rule());
                }
                self.connection.abort();
                Step::Drop
            }
            Wait::Closing => Step::Drop,
        }
    }

    /// Closes a connection that waits idle between requests, unless a request has just arrived
    /// on it: bytes already in the socket are read first, and if they are there the connection
    /// is kept to serve them. This narrows the one unavoidable race of closing keep-alive
    /// connections (a client sending just as our FIN leaves) to the time between two system
    /// calls.
    pub fn close_idle(&mut self, now: Instant, settings: &Settings) -> Step {
        match self.connection.read_available(HEAD_READ_CHUNK) {
            Ok(0) if self.connection.buffered().is_empty() => {
                self.close(now);
                self.after_idle = true;
                Step::Stay
            }
            Ok(_) => {
                self.wait = Wait::Head;
                self.deadline = Some(now + settings.header_timeout);
                self.head_step(settings)
            }
            Err(_) => Step::Drop,
        }
    }

    /// Sends FIN and keeps the connection to discard what the client still sends.
    fn close(&mut self, now: Instant) {
        let _ = self.connection.stream().shutdown(Shutdown::Write);
        self.wait = Wait::Closing;
        self.deadline = Some(now + CLOSE_LINGER);
    }

    /// Stay while the head is partial; serve it once it is complete (or invalid).
    fn head_step(&self, settings: &Settings) -> Step {
        match parse(&self.connection, settings) {
            Some(head) => Step::Serve(head),
            None => Step::Stay,
        }
    }
}

/// The head at the front of the connection's buffer: `None` while it is partial.
fn parse(connection: &Connection, settings: &Settings) -> Option<ArrivedHead> {
    match head::parse(connection.buffered(), &settings.limits) {
        Ok(Parsed::Partial) => None,
        Ok(Parsed::Complete(head, used)) => Some(Ok((head, used))),
        Err(error) => Some(Err(error)),
    }
}

/// Best-effort 408 on a connection whose head did not arrive in time (non-blocking: a client
/// too slow to send is not waited for to receive either).
fn answer_timeout(connection: &Connection) {
    let error = HttpError::HeaderTimeout;
    // No access line (there is no request to name), but the answer has an id like any other.
    let request_id = RequestId::generate();
    let _scope = RequestScope::enter(request_id.as_str());
    log::debug!(
        "{}: request head not received within client_header_timeout; answering 408",
        connection.peer()
    );
    let response = Response::text(error.status(), &format!("{}\n", error.message()))
        .header(request_id::HEADER, request_id.as_str());
    let options = WriteOptions {
        version: Version::Http11,
        keep_alive: false,
        head_request: false,
    };
    let _ = response::write_response(&mut connection.stream(), response, &options);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn settings() -> Settings {
        Settings {
            limits: head::Limits::new(8192),
            keep_alive: true,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(60)),
            body_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            send_min_rate: 1024,
            spill_dir: None,
        }
    }

    /// A client socket and the server's non-blocking `Connection` for it.
    fn pair() -> (TcpStream, Connection) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        let mut connection = Connection::new(server_side, peer);
        connection.set_blocking(false).unwrap();
        (client, connection)
    }

    /// Polls `parked` until the client's bytes have been read and made a step other than Stay,
    /// or every byte is in the buffer.
    fn read_all(parked: &mut Parked, n_sent: usize, settings: &Settings) -> Step {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let step = parked.on_readable(Instant::now(), settings);
            if !matches!(step, Step::Stay) || parked.connection().buffered().len() >= n_sent {
                return step;
            }
            assert!(Instant::now() < deadline, "the bytes never arrived");
            parked.connection().wait_readable(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_head_in_two_pieces_is_served_once_whole_with_its_parse() {
        let settings = settings();
        let (mut client, connection) = pair();
        let now = Instant::now();
        let mut parked = Parked::accepted(connection, now, &settings);
        assert_eq!(parked.wait(), Wait::FirstRequest);
        client.write_all(b"GET /versions HTTP/1.1\r\nHo").unwrap();
        assert!(matches!(read_all(&mut parked, 26, &settings), Step::Stay));
        let request = b"st: x\r\n\r\nGET /next";
        client.write_all(request).unwrap();
        match read_all(&mut parked, 26 + request.len(), &settings) {
            Step::Serve(Ok((head, used))) => {
                assert_eq!(head.target, "/versions");
                assert_eq!(used, 35, "the head's length, not what follows it");
            }
            _ => panic!("a whole head is to be served"),
        }
    }

    #[test]
    fn an_invalid_head_goes_to_a_worker_with_its_error() {
        let settings = settings();
        let (_client, mut connection) = pair();
        connection = Connection::with_buffered(
            connection.stream().try_clone().unwrap(),
            connection.peer(),
            b"GET / HTTP/1.1\r\nContent-Length: +5\r\nHost: x\r\n\r\n",
        );
        match Parked::between_requests(connection, false, None, Instant::now(), &settings) {
            Next::Serve(Ready {
                head: Err(error), ..
            }) => {
                assert_eq!(error, HttpError::BadContentLength)
            }
            _ => panic!("an invalid head is answered by a worker"),
        }
    }

    #[test]
    fn a_late_head_gets_408_and_a_fin_and_a_silent_connection_is_dropped() {
        let settings = settings();
        let (mut client, connection) = pair();
        let now = Instant::now();
        let mut parked = Parked::accepted(connection, now, &settings);
        client.write_all(b"GET / HT").unwrap();
        read_all(&mut parked, 8, &settings);
        let late = parked.deadline().unwrap();
        assert!(matches!(parked.on_deadline(late, &settings), Step::Stay));
        assert_eq!(parked.wait(), Wait::Closing);
        let mut answer = Vec::new();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.read_to_end(&mut answer).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");

        let (_silent_client, connection) = pair();
        let mut silent = Parked::accepted(connection, now, &settings);
        let late = silent.deadline().unwrap();
        assert!(matches!(silent.on_deadline(late, &settings), Step::Drop));
    }
}
