//! A child's acceptor thread: the one poll loop that owns every connection not being served.
//!
//! It polls the wake fd (signals and returning workers), the shared listening socket (only while
//! this child has room for more connections, so unaccepted ones stay in the backlog for another
//! child), and every connection that waits: for its first request, between requests (keep-alive),
//! or for the client to close after our FIN. It reads request heads without blocking and hands a
//! connection to the worker pool only once a whole head has arrived, so a slow or idle client
//! never pins a worker thread.
//!
//! # Drain
//!
//! On SIGHUP, SIGTERM or SIGQUIT the acceptor stops polling the listener and closes its copy of
//! the fd (never `shutdown()`, which would stop the socket for every process). It then serves
//! what it has: connections whose first request has not fully arrived still get it served,
//! bounded by the header timeout; requests in flight finish with `Connection: close`; idle
//! keep-alive connections are closed FIN-first. When nothing is left it returns, and the child
//! joins its workers and exits 0.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::handoff;
use crate::http::connection::{Connection, HEAD_READ_CHUNK};
use crate::http::head::{self, Parsed};
use crate::http::response::{self, Response, WriteOptions};
use crate::http::serve::{Disposition, Settings};
use crate::http::HttpError;
use crate::logging;
use crate::pool::Returned;
use crate::process::signals::{ChildRequest, SignalWatch};

/// What the acceptor applies to the connections it accepts, from the generation's config.
#[derive(Clone, Copy, Debug)]
pub struct AcceptSettings {
    /// `tcp_keepidle`, applied to each accepted socket.
    pub tcp_keepidle: Duration,
    /// `max_client_connections`: the most connections this child holds at once (waiting,
    /// queued and being served). At the limit the child stops polling the listener and leaves
    /// new connections in the shared backlog for the other children; each one costs a
    /// descriptor and a read buffer, so this bounds both.
    pub max_connections: usize,
}

/// How long a connection we closed FIN-first is kept to discard what the client still sends,
/// so that our last response is not destroyed by a reset before the client reads it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a draining child keeps retrying to hand over a connection while the new
/// generation's channel is full, before it closes the connection instead.
pub const HANDOFF_RETRY: Duration = Duration::from_secs(5);

/// How often those retries happen.
const HANDOFF_RETRY_POLL: Duration = Duration::from_millis(5);

/// How long accepting pauses after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The longest poll(2) sleep with nothing scheduled; bounds how late a deadline is noticed.
const MAX_POLL: Duration = Duration::from_secs(1);

/// What a waiting connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Accepted; its first request head has not fully arrived. Bounded by the header timeout,
    /// and served even when a drain starts meanwhile.
    FirstRequest,
    /// Keep-alive, between requests, nothing received. Bounded by `client_socket_timeout`.
    Idle,
    /// Part of a later request's head has arrived. Bounded by the header timeout.
    Head,
    /// We sent FIN; discarding the client's bytes until it closes or [`CLOSE_LINGER`] passes.
    Closing,
}

/// A connection in the poll set.
struct Waiting {
    connection: Connection,
    wait: Wait,
    deadline: Option<Instant>,
    /// It was closed while idle between requests (not after a response that said close).
    after_idle: bool,
    /// The handoff channel was full when this connection was to be handed over: retry until
    /// then, and close it only if the channel stays full.
    handoff_retry: Option<Instant>,
    /// What happens to it at the end of this loop iteration. Events are handled by index into
    /// the poll set, so nothing is removed from `waiting` until they all are.
    fate: Fate,
}

/// The end-of-iteration decision for a waiting connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Stay,
    /// A whole head (or an invalid one) has arrived: to a worker.
    Dispatch,
    /// Closed by the client, failed, or expired: drop (closes the socket).
    Drop,
}

/// The acceptor's state. Built by `child::run`, consumed by [`Acceptor::run`].
pub struct Acceptor {
    /// The shared listener; `None` once draining.
    pub listener: Option<TcpListener>,
    pub signals: SignalWatch<ChildRequest>,
    /// Feeds the worker pool; dropped at the end to stop the workers.
    pub jobs: Sender<Connection>,
    /// Connections coming back from workers.
    pub returns: Receiver<Returned>,
    /// Set once draining without a handoff target; workers read it to answer with
    /// `Connection: close`. With a target, responses keep the connection, which then moves to
    /// the new generation.
    pub draining: Arc<AtomicBool>,
    pub settings: Arc<Settings>,
    pub accept: AcceptSettings,
    /// This child's ends of the handoff machinery (see `handoff`).
    handoff: Handoff,
    /// The drain has begun (SIGHUP, SIGTERM or SIGQUIT).
    drain_started: bool,
    waiting: Vec<Waiting>,
    /// Connections whose head is complete, waiting for a free worker.
    ready: VecDeque<Connection>,
    /// Connections handed to workers and not yet returned.
    in_flight: usize,
    /// Accepting is paused until then after a resource error.
    accept_paused_until: Option<Instant>,
}

impl Acceptor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listener: TcpListener,
        signals: SignalWatch<ChildRequest>,
        jobs: Sender<Connection>,
        returns: Receiver<Returned>,
        draining: Arc<AtomicBool>,
        settings: Arc<Settings>,
        accept: AcceptSettings,
        handoff: Handoff,
    ) -> Acceptor {
        Acceptor {
            listener: Some(listener),
            signals,
            jobs,
            returns,
            draining,
            settings,
            accept,
            handoff,
            drain_started: false,
            waiting: Vec::new(),
            ready: VecDeque::new(),
            in_flight: 0,
            accept_paused_until: None,
        }
    }

    /// Runs until the drain is complete. Dropping `self` then drops the job sender, which stops
    /// the pool's workers.
    pub fn run(mut self) {
        loop {
            let now = Instant::now();
            let accepting = self.listener.is_some()
                && self.open_connections() < self.accept.max_connections
                && self.accept_paused_until.is_none_or(|until| now >= until);
            let mut fds = Vec::with_capacity(4 + self.waiting.len());
            fds.push(pollfd(self.signals.fd().as_raw_fd()));
            // Fixed slots: the listener, the handoff channel and the control socket, each with
            // fd -1 (ignored by poll) when absent, so their indices never move.
            let listener_fd = match (&self.listener, accepting) {
                (Some(listener), true) => listener.as_raw_fd(),
                _ => -1,
            };
            fds.push(pollfd(listener_fd));
            // The handoff channel, like the listener, only while this child has room: what it
            // cannot hold stays queued for a sibling or for later.
            let adopting = self.open_connections() < self.accept.max_connections
                && self.handoff.may_adopt(self.open_connections(), now);
            fds.push(pollfd(if adopting {
                self.handoff.receive_fd()
            } else {
                -1
            }));
            fds.push(pollfd(self.handoff.control_fd()));
            let first_connection = fds.len();
            for waiting in &self.waiting {
                fds.push(pollfd(waiting.connection.fd()));
            }
            let timeout = self.poll_timeout(now);
            // SAFETY: `fds` is a valid pollfd array for the call's duration.
            let n = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    timeout.as_millis().min(i32::MAX as u128) as i32,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    log::error!("poll() failed in the acceptor: {error}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
            // Connection events first: bytes that arrived before a drain request are seen
            // before the drain decides which connections are idle.
            for (index, fd) in fds[first_connection..].iter().enumerate() {
                if fd.revents != 0 {
                    self.on_readable(index);
                }
            }
            self.expire(Instant::now());
            if fds[3].revents != 0 {
                self.handoff.read_control();
            }
            for request in self.signals.take() {
                match request {
                    ChildRequest::Drain => self.begin_drain(),
                    ChildRequest::ReopenLogs => {
                        if let Err(error) = logging::reopen() {
                            log::error!("SIGUSR1: {error}");
                        }
                    }
                }
            }
            while let Ok(returned) = self.returns.try_recv() {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.on_returned(returned);
            }
            if accepting && fds[1].revents != 0 {
                self.accept_all();
            }
            if fds[2].revents != 0 {
                self.adopt_all(fds[2].revents);
            }
            self.retry_handoffs();
            // Fates are applied only now: the drain and returning connections can also decide
            // that a connection goes to a worker, and it must not wait for the next wake-up.
            self.settle();
            self.dispatch();
            if self.listener.is_none()
                && self.waiting.is_empty()
                && self.ready.is_empty()
                && self.in_flight == 0
            {
                log::info!("drained; exiting");
                return;
            }
        }
    }

    fn open_connections(&self) -> usize {
        self.waiting.len() + self.ready.len() + self.in_flight
    }

    /// The nearest deadline, at most [`MAX_POLL`] away.
    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut next = now + MAX_POLL;
        for waiting in &self.waiting {
            if let Some(deadline) = waiting.deadline {
                next = next.min(deadline);
            }
        }
        if let Some(until) = self.accept_paused_until {
            next = next.min(until.max(now));
        }
        if self.waiting.iter().any(|w| w.handoff_retry.is_some()) {
            next = next.min(now + HANDOFF_RETRY_POLL);
        }
        next.saturating_duration_since(now)
    }

    /// The connection at `index` in `waiting` is readable (or hung up).
    fn on_readable(&mut self, index: usize) {
        let Some(waiting) = self.waiting.get_mut(index) else {
            return;
        };
        let result = waiting.connection.read_more(HEAD_READ_CHUNK);
        match result {
            Ok(0) => {
                // The client closed. Between requests or after our FIN that is the normal end;
                // in the middle of a head the client gave up and there is no one to answer.
                waiting.fate = Fate::Drop;
            }
            Ok(_) if waiting.wait == Wait::Closing => {
                let n = waiting.connection.buffered().len();
                if waiting.connection.requests_served > 0 && waiting.after_idle {
                    // The client sent on a keep-alive connection after our FIN had left: the
                    // request is lost to it and must be retried (HTTP/1.1 allows that for
                    // idempotent requests). Logged so reload storms can be correlated.
                    log::info!(
                        "{}: discarded {n} byte(s) a client sent after we closed its idle \
                         keep-alive connection",
                        waiting.connection.peer()
                    );
                    waiting.after_idle = false;
                }
                waiting.connection.consume_buffered(n);
            }
            Ok(_) => {
                if waiting.wait == Wait::Idle {
                    waiting.wait = Wait::Head;
                    waiting.deadline = Some(Instant::now() + self.settings.header_timeout);
                }
                match head::parse(waiting.connection.buffered(), &self.settings.limits) {
                    Ok(Parsed::Partial) => {}
                    // Complete, or invalid: either way a worker answers it.
                    Ok(Parsed::Complete(..)) | Err(_) => waiting.fate = Fate::Dispatch,
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => waiting.fate = Fate::Drop,
        }
    }

    /// Applies each waiting connection's fate: dispatch to the ready queue, drop, or stay.
    fn settle(&mut self) {
        let mut index = 0;
        while index < self.waiting.len() {
            match self.waiting[index].fate {
                Fate::Stay => index += 1,
                Fate::Drop => {
                    self.waiting.swap_remove(index);
                }
                Fate::Dispatch => {
                    let waiting = self.waiting.swap_remove(index);
                    self.ready.push_back(waiting.connection);
                }
            }
        }
    }

    /// Acts on every connection whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        for waiting in &mut self.waiting {
            let Some(deadline) = waiting.deadline else {
                continue;
            };
            if waiting.fate != Fate::Stay || deadline > now {
                continue;
            }
            match waiting.wait {
                Wait::FirstRequest | Wait::Head if !waiting.connection.buffered().is_empty() => {
                    log::debug!(
                        "{}: request head not received within client_header_timeout; answering 408",
                        waiting.connection.peer()
                    );
                    answer_timeout(&waiting.connection);
                    close_gracefully(waiting, now);
                }
                Wait::FirstRequest | Wait::Head => waiting.fate = Fate::Drop,
                Wait::Idle => close_idle(waiting, now, &self.settings),
                Wait::Closing => waiting.fate = Fate::Drop,
            }
        }
    }

    /// SIGHUP, SIGTERM or SIGQUIT: stop accepting, close idle connections FIN-first.
    fn begin_drain(&mut self) {
        if self.drain_started {
            return;
        }
        self.drain_started = true;
        // The master sends the new generation's channel before its SIGHUP, so it is queued.
        self.handoff.read_control();
        if !self.handoff.has_target() {
            self.draining.store(true, Ordering::SeqCst);
        }
        // A last sweep of the backlog: connections the kernel completed before now are ours
        // to serve (with Connection: close). When a reload moved the listen address, nobody
        // else would ever accept them.
        self.accept_all();
        // Dropping our fd leaves the socket open in the master and the other children.
        self.listener = None;
        let now = Instant::now();
        let (mut n_idle, mut n_handed) = (0, 0);
        for waiting in &mut self.waiting {
            if waiting.fate != Fate::Stay {
                continue;
            }
            let waits_for_a_request =
                matches!(waiting.wait, Wait::Idle | Wait::FirstRequest | Wait::Head);
            if waits_for_a_request && self.handoff.has_target() && self.handoff.hand_off(waiting) {
                n_handed += 1;
                continue;
            }
            if waiting.wait == Wait::Idle {
                close_idle(waiting, now, &self.settings);
                if waiting.wait == Wait::Closing {
                    n_idle += 1;
                }
            }
        }
        log::info!(
            "draining: stopped accepting; {} request(s) in progress, {} waiting for a first \
             request, {n_handed} connection(s) queued for the new generation, {n_idle} idle \
             keep-alive connection(s) closed",
            self.in_flight + self.ready.len(),
            self.waiting
                .iter()
                .filter(|w| w.fate == Fate::Stay)
                .filter(|w| matches!(w.wait, Wait::FirstRequest | Wait::Head))
                .count(),
        );
    }

    /// Retries the handoffs that met a full channel; one that keeps failing is closed as
    /// without handoff (an idle one FIN-first; one with part of a request waits to be served).
    fn retry_handoffs(&mut self) {
        let now = Instant::now();
        for waiting in &mut self.waiting {
            if waiting.handoff_retry.is_none() || waiting.fate != Fate::Stay {
                continue;
            }
            if waiting.wait == Wait::Closing {
                waiting.handoff_retry = None;
                continue;
            }
            if !self.handoff.hand_off(waiting) {
                waiting.handoff_retry = None;
                if waiting.wait == Wait::Idle {
                    close_idle(waiting, now, &self.settings);
                }
            }
        }
    }

    /// Takes in every connection queued on this generation's handoff channel. A draining child
    /// passes them on at once if it has a target of its own.
    fn adopt_all(&mut self, revents: i16) {
        let now = Instant::now();
        loop {
            let open_connections = self.open_connections();
            if open_connections >= self.accept.max_connections {
                // Like the listener's backlog, the channel keeps what this child has no room
                // for: a sibling takes it, or this child once a connection closes.
                if self.handoff.has_queued() {
                    self.handoff
                        .warn_connection_limit(self.accept.max_connections, now);
                }
                break;
            }
            let (connection, first_request) = match self.handoff.adopt(open_connections) {
                Adoption::Adopted(connection, first_request) => (connection, first_request),
                Adoption::Empty | Adoption::NoRoom => break,
            };
            // A connection that has not served a request yet keeps the header deadline, as it
            // had in the old child; an idle keep-alive one gets the idle timeout.
            let wait = if first_request {
                Wait::FirstRequest
            } else if connection.buffered().is_empty() {
                Wait::Idle
            } else {
                Wait::Head
            };
            let mut waiting = Waiting {
                connection,
                wait,
                deadline: match wait {
                    Wait::Idle => self.settings.idle_timeout.map(|idle| now + idle),
                    _ => Some(now + self.settings.header_timeout),
                },
                after_idle: false,
                handoff_retry: None,
                fate: Fate::Stay,
            };
            if !matches!(
                head::parse(waiting.connection.buffered(), &self.settings.limits),
                Ok(Parsed::Partial)
            ) {
                waiting.fate = Fate::Dispatch;
            } else if self.drain_started
                && !(self.handoff.has_target() && self.handoff.hand_off(&mut waiting))
                && waiting.wait == Wait::Idle
            {
                // A draining child without a target of its own closes what it is handed.
                close_idle(&mut waiting, now, &self.settings);
            }
            self.waiting.push(waiting);
        }
        if revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            // The other end is gone (the master died): stop polling a socket that stays ready.
            self.handoff.lose_receive();
        }
    }

    /// A worker is done with a connection.
    fn on_returned(&mut self, returned: Returned) {
        let Returned {
            connection,
            disposition,
        } = returned;
        let mut connection = connection;
        if connection.set_blocking(false).is_err() {
            return;
        }
        let now = Instant::now();
        match disposition {
            Disposition::Gone => {}
            Disposition::Close => {
                let mut waiting = Waiting {
                    connection,
                    wait: Wait::Closing,
                    deadline: None,
                    fate: Fate::Stay,
                    after_idle: false,
                    handoff_retry: None,
                };
                close_gracefully(&mut waiting, now);
                self.waiting.push(waiting);
            }
            Disposition::KeepAlive => {
                if !connection.buffered().is_empty() {
                    // A pipelined request follows: complete heads go to a worker, partial ones
                    // wait for the rest.
                    match head::parse(connection.buffered(), &self.settings.limits) {
                        Ok(Parsed::Partial) => {
                            let mut waiting = Waiting {
                                connection,
                                wait: Wait::Head,
                                deadline: Some(now + self.settings.header_timeout),
                                fate: Fate::Stay,
                                after_idle: false,
                                handoff_retry: None,
                            };
                            if self.drain_started && self.handoff.has_target() {
                                self.handoff.hand_off(&mut waiting);
                            }
                            self.waiting.push(waiting);
                        }
                        _ => self.ready.push_back(connection),
                    }
                    return;
                }
                let mut waiting = Waiting {
                    connection,
                    wait: Wait::Idle,
                    deadline: self.settings.idle_timeout.map(|idle| now + idle),
                    fate: Fate::Stay,
                    after_idle: false,
                    handoff_retry: None,
                };
                if self.drain_started
                    && !(self.handoff.has_target() && self.handoff.hand_off(&mut waiting))
                {
                    close_idle(&mut waiting, now, &self.settings);
                }
                self.waiting.push(waiting);
            }
        }
    }

    /// Accepts until the backlog is empty or this child is full.
    fn accept_all(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        let now = Instant::now();
        while self.open_connections() < self.accept.max_connections {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if let Err(error) = prepare_socket(&stream, self.accept.tcp_keepidle) {
                        log::debug!("{peer}: cannot set up the accepted socket: {error}");
                        continue;
                    }
                    let mut connection = Connection::new(stream, peer);
                    if let Err(error) = connection.set_blocking(false) {
                        log::debug!(
                            "{peer}: cannot make the accepted socket non-blocking: {error}"
                        );
                        continue;
                    }
                    self.waiting.push(Waiting {
                        connection,
                        wait: Wait::FirstRequest,
                        deadline: Some(now + self.settings.header_timeout),
                        fate: Fate::Stay,
                        after_idle: false,
                        handoff_retry: None,
                    });
                }
                Err(error) => match error.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                    Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS)
                    | Some(libc::ENOMEM) => {
                        log::warn!(
                            "accept() failed: {error}; pausing accepts for {} ms (raise the \
                             open-files limit if this repeats)",
                            ACCEPT_BACKOFF.as_millis()
                        );
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        break;
                    }
                    _ => {
                        log::error!("accept() failed: {error}; pausing accepts");
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                        break;
                    }
                },
            }
        }
    }

    /// Hands ready connections to free workers; a full channel means every worker is busy.
    fn dispatch(&mut self) {
        while let Some(connection) = self.ready.pop_front() {
            match self.jobs.try_send(connection) {
                Ok(()) => self.in_flight += 1,
                Err(TrySendError::Full(connection)) => {
                    self.ready.push_front(connection);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// No Nagle delay (responses are written whole), TCP keepalive after `tcp_keepidle`. (The
/// connection is made non-blocking through `Connection`, which tracks the socket's mode.)
fn prepare_socket(stream: &TcpStream, tcp_keepidle: Duration) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    stream.set_nodelay(true)?;
    setsockopt(stream, sockopt::KeepAlive, &true).map_err(io::Error::from)?;
    let seconds = tcp_keepidle.as_secs().clamp(1, u32::MAX as u64) as u32;
    setsockopt(stream, sockopt::TcpKeepIdle, &seconds).map_err(io::Error::from)?;
    Ok(())
}

/// Best-effort 408 on a connection whose head did not arrive in time (non-blocking: a client
/// too slow to send is not waited for to receive either).
fn answer_timeout(connection: &Connection) {
    let error = HttpError::HeaderTimeout;
    let response = Response::text(error.status(), &format!("{}\n", error.message()));
    let options = WriteOptions {
        version: crate::http::head::Version::Http11,
        keep_alive: false,
        head_request: false,
    };
    let _ = response::write_response(&mut connection.stream(), response, &options);
}

/// Closes a connection that waits idle between requests, unless a request has just arrived on it:
/// bytes already in the socket are read first, and if they are there the connection is kept to
/// serve them. This narrows the one unavoidable race of closing keep-alive connections (a client
/// sending just as our FIN leaves) to the time between two system calls.
fn close_idle(waiting: &mut Waiting, now: Instant, settings: &Settings) {
    match waiting.connection.read_available(HEAD_READ_CHUNK) {
        Ok(0) if waiting.connection.buffered().is_empty() => {
            close_gracefully(waiting, now);
            waiting.after_idle = true;
        }
        Ok(_) => {
            waiting.wait = Wait::Head;
            waiting.deadline = Some(now + settings.header_timeout);
            if !matches!(
                head::parse(waiting.connection.buffered(), &settings.limits),
                Ok(Parsed::Partial)
            ) {
                waiting.fate = Fate::Dispatch;
            }
        }
        Err(_) => waiting.fate = Fate::Drop,
    }
}

/// Sends FIN and keeps the connection to discard what the client still sends.
fn close_gracefully(waiting: &mut Waiting, now: Instant) {
    let _ = waiting.connection.stream().shutdown(Shutdown::Write);
    waiting.wait = Wait::Closing;
    waiting.deadline = Some(now + CLOSE_LINGER);
}

/// How many descriptors a child keeps free when it adopts a connection: room for what its
/// workers open while serving (an image file, a temporary upload file, a database connection)
/// and for the adopted socket itself. A child with fewer free leaves handed-over connections
/// queued on its generation's channel, where a sibling or, later, it takes them.
pub const ADOPTION_DESCRIPTOR_RESERVE: usize = 16;

/// How soon a child that stopped adopting for want of descriptors looks again even though
/// none of its connections closed (its workers may have closed files meanwhile).
const ADOPTION_RECHECK: Duration = Duration::from_secs(1);

/// The shortest time between two warnings that a child cannot adopt for the same reason, so
/// that a child that stays full does not write one line per connection that closes.
const ADOPTION_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// A child's ends of the handoff machinery: its generation's channel (connections handed to
/// it), its control socket (where the master sends the new generation's channel), and that
/// target once received. Every end is optional: a child without them drains by closing.
#[derive(Default)]
pub struct Handoff {
    receive: Option<OwnedFd>,
    control: Option<OwnedFd>,
    target: Option<OwnedFd>,
    /// A descriptor held only to be given up right before the control socket is read, so that
    /// a child at its open-files limit still has a number for the target's descriptor to land
    /// on (a target lost to `MSG_CTRUNC` would make the child close its connections).
    spare: Option<OwnedFd>,
    /// Adoption stopped for want of descriptors: resume when fewer than this many connections
    /// are open, or at this instant.
    descriptor_pause: Option<(usize, Instant)>,
    /// When the child last warned that it could not adopt, per reason.
    warned_connection_limit: Option<Instant>,
    warned_descriptor_limit: Option<Instant>,
}

/// What one attempt to adopt a connection gave.
enum Adoption {
    /// A connection, with the bytes the old child had read from it, and whether it has yet to
    /// serve its first request.
    Adopted(Connection, bool),
    /// Nothing is queued (or the channel is gone).
    Empty,
    /// This child has no descriptors to spare; what is queued stays queued.
    NoRoom,
}

impl Handoff {
    pub fn new(receive: Option<OwnedFd>, control: Option<OwnedFd>) -> Handoff {
        // The spare is a duplicate of the control socket because that needs no path and cannot
        // fail for any reason but the limit it guards against.
        let spare = control
            .as_ref()
            .and_then(|control| control.try_clone().ok());
        Handoff {
            receive,
            control,
            spare,
            ..Handoff::default()
        }
    }

    fn receive_fd(&self) -> i32 {
        self.receive.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    fn control_fd(&self) -> i32 {
        self.control.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    fn has_target(&self) -> bool {
        self.target.is_some()
    }

    fn lose_receive(&mut self) {
        self.receive = None;
    }

    /// Whether the channel may be polled with `open_connections` held: not while adoption is
    /// paused for want of descriptors, unless a connection has closed since or the pause is over.
    fn may_adopt(&mut self, open_connections: usize, now: Instant) -> bool {
        match self.descriptor_pause {
            Some((paused_at, until)) if open_connections >= paused_at && now < until => false,
            Some(_) => {
                self.descriptor_pause = None;
                true
            }
            None => true,
        }
    }

    /// Whether a message waits on this generation's channel (without taking it).
    fn has_queued(&self) -> bool {
        let Some(receive) = &self.receive else {
            return false;
        };
        let mut fds = [pollfd(receive.as_raw_fd())];
        // SAFETY: a one-element pollfd array for the call's duration; no wait.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        n > 0 && fds[0].revents & libc::POLLIN != 0
    }

    /// Says (at most once per [`ADOPTION_WARNING_INTERVAL`]) that this child holds
    /// `max_connections` and leaves handed-over connections queued.
    fn warn_connection_limit(&mut self, max_connections: usize, now: Instant) {
        if self
            .warned_connection_limit
            .is_some_and(|at| now < at + ADOPTION_WARNING_INTERVAL)
        {
            return;
        }
        self.warned_connection_limit = Some(now);
        log::warn!(
            "cannot adopt more handed-over connections: at max_client_connections \
             ({max_connections}); they stay queued on this generation's handoff channel for \
             another child, or for this one as its connections close"
        );
    }

    /// Reads the control socket: the newest target replaces the one held. A control socket at
    /// end of stream (the master is gone) is dropped.
    fn read_control(&mut self) {
        let Some(control) = &self.control else {
            return;
        };
        let keep_control = loop {
            // Give the spare up so that the target's descriptor has a number to land on.
            self.spare = None;
            match handoff::receive_target(control.as_fd()) {
                Ok(Some(target)) => {
                    // The target it replaces is closed here, which frees the spare's number.
                    self.target = Some(target);
                    self.spare = control.try_clone().ok();
                }
                Ok(None) => break !peer_closed(control.as_raw_fd()),
                Err(error @ handoff::ReceiveError::DescriptorDiscarded) => {
                    log::error!(
                        "lost a handoff target sent by the master: {error}; at its drain this \
                         child will close its idle connections instead of handing them over \
                         unless a later target arrives; raise the open-files limit \
                         (RLIMIT_NOFILE {})",
                        open_files_limit()
                    );
                }
                Err(error) => {
                    log::warn!("handoff control socket: {error}; this child will close instead");
                    break false;
                }
            }
        };
        if self.spare.is_none() {
            self.spare = control.try_clone().ok();
        }
        if !keep_control {
            self.control = None;
            self.spare = None;
        }
    }

    /// Sends `waiting`'s connection to the target. On success it is marked to be dropped here
    /// (our copy of the fd closes; the client's connection lives on, queued on the new
    /// generation's channel until one of its children takes it).
    fn hand_off(&mut self, waiting: &mut Waiting) -> bool {
        let Some(target) = &self.target else {
            return false;
        };
        let connection = &waiting.connection;
        match handoff::send_connection(
            target.as_fd(),
            connection.stream().as_fd(),
            connection.buffered(),
            waiting.wait == Wait::FirstRequest,
        ) {
            Ok(()) => {
                log::debug!("{}: queued for the new generation", connection.peer());
                waiting.fate = Fate::Drop;
                true
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // The channel is full: the new generation is still taking in what came before.
                // Keep the connection and retry (the acceptor polls again within
                // HANDOFF_RETRY_POLL) until HANDOFF_RETRY has passed.
                let now = Instant::now();
                let until = *waiting.handoff_retry.get_or_insert(now + HANDOFF_RETRY);
                if now < until {
                    return true;
                }
                log::warn!(
                    "{}: the handoff channel stayed full for {} s; closing the connection",
                    connection.peer(),
                    HANDOFF_RETRY.as_secs()
                );
                waiting.handoff_retry = None;
                false
            }
            Err(error) => {
                log::warn!(
                    "{}: cannot hand the connection to the new generation ({error}); closing it",
                    connection.peer()
                );
                waiting.handoff_retry = None;
                false
            }
        }
    }

    /// One connection from this generation's channel, as a `Connection` with the bytes the
    /// old child had read from it; taken only if this child has [`ADOPTION_DESCRIPTOR_RESERVE`]
    /// descriptors free (`open_connections` is what it holds, remembered to know when one has
    /// closed).
    fn adopt(&mut self, open_connections: usize) -> Adoption {
        let Some(receive) = &self.receive else {
            return Adoption::Empty;
        };
        loop {
            match handoff::descriptors_free(receive.as_fd(), ADOPTION_DESCRIPTOR_RESERVE + 1) {
                Ok(true) => {}
                Ok(false) => {
                    self.pause_for_descriptors(open_connections);
                    return Adoption::NoRoom;
                }
                Err(error) => {
                    log::warn!("{error}; not adopting handed-over connections for now");
                    self.pause_for_descriptors(open_connections);
                    return Adoption::NoRoom;
                }
            }
            match handoff::take_connection(receive.as_fd()) {
                Ok(Some(received)) => {
                    let stream = TcpStream::from(received.fd);
                    let Ok(peer) = stream.peer_addr() else {
                        // The client left while the connection was in transit.
                        continue;
                    };
                    let mut connection = Connection::with_buffered(stream, peer, &received.carried);
                    if received.first_request {
                        connection.requests_served = 0;
                    }
                    if connection.set_blocking(false).is_err() {
                        continue;
                    }
                    log::debug!("{peer}: adopted from a draining generation");
                    return Adoption::Adopted(connection, received.first_request);
                }
                Ok(None) => return Adoption::Empty,
                Err(error @ handoff::ReceiveError::DescriptorDiscarded) => {
                    // The reserve was taken by the workers between the check and the receive.
                    log::error!(
                        "lost a connection handed over from a draining generation: {error}; \
                         raise the open-files limit (RLIMIT_NOFILE {}) so that children keep \
                         {ADOPTION_DESCRIPTOR_RESERVE} descriptors free",
                        open_files_limit()
                    );
                    self.pause_for_descriptors(open_connections);
                    return Adoption::NoRoom;
                }
                Err(error @ handoff::ReceiveError::PayloadTruncated) => {
                    log::error!(
                        "lost a connection handed over from a draining generation: {error}"
                    );
                }
                Err(error) => {
                    log::warn!("handoff channel: {error}");
                    return Adoption::Empty;
                }
            }
        }
    }

    /// Stops polling the channel until a connection closes or [`ADOPTION_RECHECK`] passes, and
    /// says so (at most once per [`ADOPTION_WARNING_INTERVAL`]).
    fn pause_for_descriptors(&mut self, open_connections: usize) {
        let now = Instant::now();
        self.descriptor_pause = Some((open_connections, now + ADOPTION_RECHECK));
        if self
            .warned_descriptor_limit
            .is_some_and(|at| now < at + ADOPTION_WARNING_INTERVAL)
        {
            return;
        }
        self.warned_descriptor_limit = Some(now);
        log::warn!(
            "cannot adopt more handed-over connections: at the open-files limit (RLIMIT_NOFILE \
             {}, of which {ADOPTION_DESCRIPTOR_RESERVE} are kept free for the workers) with \
             {open_connections} connection(s) open; they stay queued on this generation's \
             handoff channel for another child, or for this one as its connections close; raise \
             the open-files limit (LimitNOFILE=, ulimit -n) if this repeats",
            open_files_limit()
        );
    }
}

/// This process's soft RLIMIT_NOFILE, for messages (0 if getrlimit fails).
fn open_files_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft)
}

/// Whether the peer of a (non-blocking) socket has closed: a zero-byte peek.
fn peer_closed(fd: i32) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv(2) of at most one byte into a local.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}
