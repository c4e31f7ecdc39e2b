//! A child's acceptor thread: the one epoll loop that owns every connection not being served.
//!
//! It watches the wake fd (signals and returning workers), the shared listening socket (only while
//! this child has room for more connections, or holds an idle keep-alive connection that can
//! give way to a new client; otherwise unaccepted ones stay in the backlog for another child),
//! and every connection that waits: for its first request, between requests (keep-alive),
//! for room to send the rest of a response, or for the client to close after our FIN. It reads
//! request heads without blocking and hands a connection to the worker pool only once a whole
//! head has arrived, so a slow or idle client never pins a worker thread.
//!
//! # Cost of a wake
//!
//! Idle connections cost nothing while they stay idle: each is registered with epoll once, when
//! parked, and its deadline and place among the idle connections are kept in ordered indexes
//! (`waiting::WaitingSet`). A wake handles the events epoll reports and the deadlines that have
//! passed, and brings in step only the connections those touched; counts (open connections,
//! responses in progress) are kept, not counted. The only walks over every waiting connection
//! are the drain's start and a new handoff target, once each. The listeners and the handoff
//! channel are added to and removed from the epoll set as this child gains and loses room.
//!
//! # Drain
//!
//! On SIGHUP, SIGTERM or SIGQUIT the acceptor stops polling the listener and closes its copy of
//! the fd (never `shutdown()`, which would stop the socket for every process), and runs the
//! child's drain hooks ([`Acceptor::on_drain`]: the metrics endpoint stops with it). It then serves
//! what it has: connections whose first request has not fully arrived still get it served,
//! bounded by the header timeout; requests in flight finish with `Connection: close`; idle
//! keep-alive connections are closed FIN-first. When nothing is left it returns, and the child
//! joins its other threads (not the idle workers: `Pool::release`) and exits 0.
//!
//! With a handoff target (`reload_handoff`), connections waiting for a request are handed to
//! the new generation instead of closed, and requests in flight keep their connection so that
//! it goes along once answered. A newer target may arrive at any time; the drain then hands
//! what it still holds to that one. What can be sent or adopted, and when, is decided by
//! `handoff::Handoff`; this loop watches its fds and decides what happens to the connections it
//! keeps.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;

// The child's side of the handoff lives in `handoff`; `child.rs` builds it through this path.
pub use crate::handoff::Handoff;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};

use crate::handoff::{Adoption, Sent, HANDOFF_RETRY_POLL};
use crate::http::connection::prepare_accepted;
use crate::http::connection::Connection;
use crate::http::parked::{Next, Parked, Ready, Wait, Work};
use crate::http::serve::{Disposition, Drain, Settings};
use crate::logging;
use crate::serve::pool::{Jobs, Returned};
use crate::serve::waiting::{is_connection, Fate, Waiting, WaitingSet};
use crate::signals::{ChildRequest, SignalWatch};

/// What the acceptor applies to the connections it accepts, from the generation's config.
#[derive(Clone, Copy, Debug)]
pub struct AcceptSettings {
    /// `tcp_keepidle`, applied to each accepted socket.
    pub tcp_keepidle: Duration,
    /// `max_client_connections`: the most connections this child holds at once (waiting,
    /// queued and being served). At the limit a new client takes the place of the idle
    /// keep-alive connection parked the longest (closed FIN-first, lingering outside the count);
    /// with none idle the child stops polling the listener and leaves new connections in the
    /// shared backlog for the other children. Each one costs a descriptor and a read buffer,
    /// so this bounds both: lingering closes add at most as many descriptors again, and a
    /// parked response one more each (its image file, or its spill file).
    pub max_connections: usize,
}

pub use crate::http::parked::CLOSE_LINGER;

/// How long accepting pauses after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The longest epoll_wait(2) sleep with nothing scheduled; bounds how late a deadline is noticed.
const MAX_POLL: Duration = Duration::from_secs(1);

/// The most events one wake takes from epoll; level-triggered, the rest are reported on the next.
const EVENTS_PER_WAKE: usize = 256;

/// The epoll event data of the acceptor's own descriptors, from the top of the range (connection
/// slots count from 0; see `waiting::is_connection`). Listener `i` is `LISTENER - i`.
const WAKE: u64 = u64::MAX;
const RECEIVE: u64 = u64::MAX - 1;
const CONTROL: u64 = u64::MAX - 2;
const LISTENER: u64 = u64::MAX - 3;

/// The acceptor's state. Built by `child::run`, consumed by [`Acceptor::run`].
pub struct Acceptor {
    /// The generation's listeners (its own first, then any overlapping socket it took over;
    /// see `process::listener`); empty once draining.
    pub listeners: Vec<TcpListener>,
    pub signals: SignalWatch<ChildRequest>,
    /// Feeds the worker pool; given back by [`Acceptor::run`].
    pub jobs: Jobs,
    /// Connections coming back from workers.
    pub returns: Receiver<Returned>,
    /// Set as the drain begins: closing without a handoff target (workers answer with
    /// `Connection: close`); handing over with one (responses keep the connection, which the
    /// worker gives back at once and which then moves to the new generation).
    pub drain: Arc<Drain>,
    pub settings: Arc<Settings>,
    pub accept: AcceptSettings,
    /// This child's ends of the handoff machinery (see `handoff`).
    handoff: Handoff,
    /// The drain has begun (SIGHUP, SIGTERM or SIGQUIT).
    drain_started: bool,
    /// Every connection that waits, with the epoll instance that watches them and the
    /// acceptor's own descriptors.
    waiting: WaitingSet,
    /// The listeners are registered with epoll (while accepting).
    listening: bool,
    /// The handoff channel is registered with epoll (while adopting).
    receiving: bool,
    /// The control socket is registered with epoll.
    controlled: bool,
    /// Connections whose head is complete, or whose response can go on, waiting for a free
    /// worker.
    ready: VecDeque<Work>,
    /// Connections handed to workers and not yet returned.
    in_flight: usize,
    /// Accepting is paused until then after a resource error.
    accept_paused_until: Option<Instant>,
    /// Connections in `waiting` that are `reclaimed`: at most `max_connections`.
    n_reclaimed: usize,
    /// Called once as the drain begins, with the listeners' close: what else stops serving new
    /// clients then (the metrics endpoint; see [`Acceptor::on_drain`]).
    drain_hooks: Vec<Box<dyn FnOnce()>>,
}

impl Acceptor {
    /// Fails only if the epoll instance cannot be created or the wake fd registered with it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listeners: Vec<TcpListener>,
        signals: SignalWatch<ChildRequest>,
        jobs: Jobs,
        returns: Receiver<Returned>,
        drain: Arc<Drain>,
        settings: Arc<Settings>,
        accept: AcceptSettings,
        handoff: Handoff,
    ) -> io::Result<Acceptor> {
        let waiting = WaitingSet::new()?;
        // Always watched, its events never read: signals and returning workers are collected
        // on every wake anyway.
        waiting.watch(signals.fd(), WAKE)?;
        let mut acceptor = Acceptor {
            listeners,
            signals,
            jobs,
            returns,
            drain,
            settings,
            accept,
            handoff,
            drain_started: false,
            waiting,
            listening: false,
            receiving: false,
            controlled: false,
            ready: VecDeque::new(),
            in_flight: 0,
            accept_paused_until: None,
            n_reclaimed: 0,
            drain_hooks: Vec::new(),
        };
        acceptor.watch_control();
        Ok(acceptor)
    }

    /// Runs `hook` as the drain begins, when the listeners close; never if no drain begins.
    pub fn on_drain(&mut self, hook: impl FnOnce() + 'static) {
        self.drain_hooks.push(Box::new(hook));
    }

    /// Runs until the drain is complete; returns the jobs, every worker idle, for
    /// `Pool::release`.
    pub fn run(mut self) -> Jobs {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAKE];
        while !self.turn(&mut events) {}
        self.jobs
    }

    /// One wake: waits for events or the nearest deadline, then acts on what happened. What it
    /// costs is the events and expired deadlines it handles, never a walk over the connections
    /// that wait (see `waiting`). Returns whether the drain is complete.
    fn turn(&mut self, events: &mut [EpollEvent]) -> bool {
        crate::metrics::set_parked(self.waiting.len());
        let now = Instant::now();
        // A full child still polls the listener while it holds an idle keep-alive connection
        // that can give way to a new client (see `make_room`).
        // Not while the master says a child of the generation being started takes them.
        let accepting = !self.listeners.is_empty()
            && self.handoff.may_accept()
            && (self.open_connections() < self.accept.max_connections
                || self.oldest_idle().is_some())
            && self.accept_paused_until.is_none_or(|until| now >= until);
        // The handoff channel, like the listeners, only while this child has room: what it
        // cannot hold stays queued for a sibling or for later.
        let adopting = self.open_connections() < self.accept.max_connections
            && self
                .handoff
                .may_adopt(self.open_connections(), self.drain_started, now);
        self.set_listening(accepting);
        self.set_receiving(adopting);
        let n_events = match self.waiting.wait(events, self.poll_timeout(now)) {
            Ok(n) => n,
            Err(Errno::EINTR) => return false,
            Err(errno) => {
                log::error!(
                    "epoll_wait() failed in the acceptor: {}",
                    io::Error::from(errno)
                );
                std::thread::sleep(ACCEPT_BACKOFF);
                return false;
            }
        };
        let mut control_fired = false;
        let mut listener_fired = false;
        let mut receive_fired = None;
        // Connection events first: bytes that arrived before a drain request are seen before
        // the drain decides which connections are idle.
        for event in &events[..n_events] {
            match event.data() {
                token if is_connection(token) => self.on_event(token as usize),
                WAKE => {}
                RECEIVE => receive_fired = Some(event.events()),
                CONTROL => control_fired = true,
                _ => listener_fired = true,
            }
        }
        self.expire(Instant::now());
        if control_fired && self.read_control() && self.drain_started {
            self.on_new_target();
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
        // The drain may have closed the listeners since the wait, or the master have said to
        // take no new clients.
        if listener_fired && self.listening && self.handoff.may_accept() {
            self.accept_all();
        }
        if let Some(flags) = receive_fired.filter(|_| self.receiving) {
            self.adopt_all(flags);
        }
        self.retry_handoffs();
        // Fates are applied only now: the drain and returning connections can also decide
        // that a connection goes to a worker, and it must not wait for the next wake-up.
        self.settle();
        self.dispatch();
        if self.listeners.is_empty()
            && self.waiting.is_empty()
            && self.ready.is_empty()
            && self.in_flight == 0
        {
            // The gauge was set at the top of this iteration, before its connections were
            // dropped or handed over; the child still lives a moment (joining its threads)
            // and its slot is counted until the master reaps it. Before the line, which
            // says the drain is done.
            crate::metrics::set_parked(0);
            log::info!("drained; exiting");
            return true;
        }
        false
    }

    /// Registers the listeners with epoll while accepting, and removes them otherwise (a
    /// listener left registered would wake this child for clients it leaves to its siblings).
    fn set_listening(&mut self, on: bool) {
        if on == self.listening {
            return;
        }
        for (index, listener) in self.listeners.iter().enumerate() {
            if on {
                if let Err(errno) = self
                    .waiting
                    .watch(listener.as_fd(), LISTENER - index as u64)
                {
                    log::error!(
                        "cannot watch a listener with epoll: {}; pausing accepts for {} ms",
                        io::Error::from(errno),
                        ACCEPT_BACKOFF.as_millis()
                    );
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                }
            } else {
                self.waiting.unwatch(listener.as_fd());
            }
        }
        self.listening = on;
    }

    /// Registers the handoff channel with epoll while adopting, and removes it otherwise: the
    /// registration is dropped rather than emptied, since epoll reports a hang-up whatever the
    /// interest, and a gone master would then wake this loop without end.
    fn set_receiving(&mut self, on: bool) {
        let on = on && self.handoff.receive_fd().is_some();
        if on == self.receiving {
            return;
        }
        if let Some(fd) = self.handoff.receive_fd() {
            if on {
                if let Err(errno) = self.waiting.watch(fd, RECEIVE) {
                    log::error!(
                        "cannot watch the handoff channel with epoll: {}",
                        io::Error::from(errno)
                    );
                    return;
                }
            } else {
                self.waiting.unwatch(fd);
            }
        }
        self.receiving = on;
    }

    /// Registers the control socket with epoll, if there is one and it is not yet.
    fn watch_control(&mut self) {
        if self.controlled {
            return;
        }
        if let Some(fd) = self.handoff.control_fd() {
            match self.waiting.watch(fd, CONTROL) {
                Ok(()) => self.controlled = true,
                Err(errno) => log::error!(
                    "cannot watch the handoff control socket with epoll: {}",
                    io::Error::from(errno)
                ),
            }
        }
    }

    /// Reads the control socket (see `Handoff::read_control`). It is deregistered around the
    /// read: the read closes it when the master is gone, and an epoll registration outlives
    /// a descriptor closed while its file is still open elsewhere.
    fn read_control(&mut self) -> bool {
        if self.controlled {
            if let Some(fd) = self.handoff.control_fd() {
                self.waiting.unwatch(fd);
            }
            self.controlled = false;
        }
        let replaced = self.handoff.read_control();
        self.watch_control();
        replaced
    }

    /// The connections that count against `max_client_connections`: all but the idle ones
    /// closed to make room, which only linger (at most [`CLOSE_LINGER`]) to let our FIN go out
    /// before the socket closes.
    fn open_connections(&self) -> usize {
        self.waiting.len().saturating_sub(self.n_reclaimed) + self.ready.len() + self.in_flight
    }

    /// Requests taken and not answered in full: with a worker, waiting for one, or parked with
    /// part of their response unsent.
    fn in_progress(&self) -> usize {
        self.in_flight + self.ready.len() + self.waiting.n_sending()
    }

    /// The keep-alive connection idle the longest (whose last response is the oldest), if one
    /// may give way to a new client: not while draining (idle connections are handed over or
    /// closed then), and at most `max_client_connections` lingering at once, so that this child
    /// never holds more than twice that many descriptors for clients.
    fn oldest_idle(&self) -> Option<usize> {
        if self.drain_started || self.n_reclaimed >= self.accept.max_connections {
            return None;
        }
        self.waiting.oldest_idle()
    }

    /// Past the limit (a new client was just accepted by a full child): closes idle keep-alive
    /// connections, the one idle the longest first, FIN-first as every idle close, until the
    /// child is back at its limit or none is left (nginx reuses connections the same way at
    /// `worker_connections`). One whose next request has just arrived is served instead.
    fn make_room(&mut self, now: Instant) {
        while self.open_connections() > self.accept.max_connections {
            let Some(index) = self.oldest_idle() else {
                return;
            };
            let Some(waiting) = self.waiting.get_mut(index) else {
                return;
            };
            let step = waiting.parked.close_idle(now, &self.settings);
            waiting.apply(step);
            if waiting.stays() && waiting.parked.wait() == Wait::Closing {
                waiting.reclaimed = true;
                self.n_reclaimed += 1;
                log::debug!(
                    "{}: closed an idle keep-alive connection to make room for a new client \
                     (max_client_connections = {})",
                    waiting.parked.connection().peer(),
                    self.accept.max_connections
                );
            }
            // No longer idle: out of the index `oldest_idle` reads.
            self.waiting.changed(index);
        }
    }

    /// The nearest deadline, at most [`MAX_POLL`] away.
    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut next = now + MAX_POLL;
        if let Some(deadline) = self.waiting.next_deadline() {
            next = next.min(deadline);
        }
        if let Some(until) = self.accept_paused_until {
            next = next.min(until.max(now));
        }
        if self.waiting.any_retrying() {
            next = next.min(now + HANDOFF_RETRY_POLL);
        }
        next.saturating_duration_since(now)
    }

    /// epoll reported the connection in slot `index`.
    fn on_event(&mut self, index: usize) {
        let Some(waiting) = self.waiting.get_mut(index) else {
            return;
        };
        if !waiting.stays() {
            return;
        }
        let step = waiting.parked.on_event(Instant::now(), &self.settings);
        waiting.apply(step);
        self.waiting.changed(index);
    }

    /// Takes out every connection whose fate was decided this iteration: to the ready queue,
    /// or dropped.
    fn settle(&mut self) {
        for waiting in self.waiting.take_settled() {
            if waiting.reclaimed {
                self.n_reclaimed = self.n_reclaimed.saturating_sub(1);
            }
            match waiting.fate {
                Fate::Dispatch(head) => self.ready.push_back(Work::Request(Ready {
                    connection: waiting.parked.into_connection(),
                    head,
                })),
                // Ahead of new requests: a response under way is already a worker's promise,
                // and its client is waiting for it.
                Fate::Resume => {
                    if let Some(resume) = waiting.parked.into_resume() {
                        self.ready.push_front(Work::Response(resume));
                    }
                }
                Fate::Stay | Fate::Drop => {}
            }
        }
    }

    /// Acts on every connection whose deadline has passed (and on no other).
    fn expire(&mut self, now: Instant) {
        for index in self.waiting.take_expired(now) {
            let Some(waiting) = self.waiting.get_mut(index) else {
                continue;
            };
            if waiting.stays() {
                let step = waiting.parked.on_deadline(now, &self.settings);
                waiting.apply(step);
            }
            self.waiting.changed(index);
        }
    }

    /// SIGHUP, SIGTERM or SIGQUIT: stop accepting, close idle connections FIN-first. The one
    /// place (with a new handoff target) that walks every waiting connection: once per drain.
    fn begin_drain(&mut self) {
        if self.drain_started {
            return;
        }
        self.drain_started = true;
        // The master sends the new generation's channel before its SIGHUP, so it is queued.
        self.read_control();
        if self.handoff.has_target() {
            self.drain.hand_over();
        } else {
            self.drain.close();
        }
        // A last sweep of the backlog: connections the kernel completed before now are ours
        // to serve (with Connection: close). When a reload moved the listen address, nobody
        // else would ever accept them.
        self.accept_all();
        // Dropping our fds leaves the sockets open in the master and the other children; they
        // leave this child's epoll set first, or it would go on reporting them.
        self.set_listening(false);
        self.listeners.clear();
        for hook in self.drain_hooks.drain(..) {
            hook();
        }
        let n_handed = self.hand_over_waiting();
        let now = Instant::now();
        let mut n_idle = 0;
        let mut n_first = 0;
        for index in self.waiting.indices() {
            let Some(waiting) = self.waiting.get_mut(index) else {
                continue;
            };
            // Handed over, or waiting for room on the target's channel, or busy.
            if waiting.stays()
                && waiting.handoff_retry.is_none()
                && waiting.parked.wait() == Wait::Idle
            {
                let step = waiting.parked.close_idle(now, &self.settings);
                waiting.apply(step);
                if waiting.stays() && waiting.parked.wait() == Wait::Closing {
                    n_idle += 1;
                }
            }
            if waiting.stays() && matches!(waiting.parked.wait(), Wait::FirstRequest | Wait::Head) {
                n_first += 1;
            }
            self.waiting.changed(index);
        }
        log::info!(
            "draining: stopped accepting; {} request(s) in progress, {n_first} waiting for a \
             first request, {n_handed} connection(s) queued for the new generation, {n_idle} \
             idle keep-alive connection(s) closed",
            self.in_progress(),
        );
    }

    /// Hands every connection that waits for a request to the target (none without one).
    /// Returns how many were queued.
    fn hand_over_waiting(&mut self) -> usize {
        if !self.handoff.has_target() {
            return 0;
        }
        let mut n_queued = 0;
        for index in self.waiting.indices() {
            let Some(waiting) = self.waiting.get_mut(index) else {
                continue;
            };
            if waiting.stays()
                && waiting.parked.waits_for_a_request()
                && hand_off(&mut self.handoff, waiting) == Sent::Queued
            {
                n_queued += 1;
            }
            self.waiting.changed(index);
        }
        n_queued
    }

    /// A draining child got a (newer) target: what it still holds that waits for a request
    /// goes there, and responses keep their connections again, to be handed over in turn. A
    /// reload that fails part-way sends a draining child such a target (back to its own
    /// generation's serving children).
    fn on_new_target(&mut self) {
        self.drain.hand_over();
        for index in self.waiting.retrying() {
            if let Some(waiting) = self.waiting.get_mut(index) {
                // The retry bound was for the previous target's channel.
                waiting.handoff_retry = None;
            }
            self.waiting.changed(index);
        }
        let n_queued = self.hand_over_waiting();
        log::info!(
            "draining: a new handoff target; {n_queued} connection(s) queued for it, {} request(s) \
             in progress",
            self.in_progress()
        );
    }

    /// Retries the handoffs that met a full channel; one that keeps failing is closed as
    /// without handoff (an idle one FIN-first; one with part of a request waits to be served).
    fn retry_handoffs(&mut self) {
        let now = Instant::now();
        for index in self.waiting.retrying() {
            let Some(waiting) = self.waiting.get_mut(index) else {
                continue;
            };
            if waiting.handoff_retry.is_some() && waiting.stays() {
                if waiting.parked.wait() == Wait::Closing {
                    waiting.handoff_retry = None;
                } else if hand_off(&mut self.handoff, waiting) == Sent::Kept
                    && waiting.parked.wait() == Wait::Idle
                {
                    let step = waiting.parked.close_idle(now, &self.settings);
                    waiting.apply(step);
                }
            }
            self.waiting.changed(index);
        }
    }

    /// Takes in every connection queued on this generation's handoff channel. A draining child
    /// passes them on at once if it has a target of its own.
    fn adopt_all(&mut self, flags: EpollFlags) {
        let now = Instant::now();
        loop {
            let open_connections = self.open_connections();
            if !self
                .handoff
                .may_adopt(open_connections, self.drain_started, now)
            {
                // Paused for want of descriptors, or relaying to a target that leads back here.
                break;
            }
            if open_connections >= self.accept.max_connections {
                // Like the listener's backlog, the channel keeps what this child has no room
                // for: a sibling takes it, or this child once a connection closes.
                if self.handoff.has_queued() {
                    self.handoff
                        .warn_connection_limit(self.accept.max_connections, now);
                }
                break;
            }
            let (connection, with) = match self.handoff.adopt(open_connections) {
                Adoption::Adopted(connection, with) => {
                    crate::metrics::handoff(crate::metrics::HandoffSide::Adopted);
                    (connection, with)
                }
                Adoption::Empty | Adoption::NoRoom => break,
            };
            // A connection whose wait is bounded by the header timeout (no request served yet,
            // part of a head, idle and not trusted) keeps the deadline it had in the old child; an
            // idle keep-alive one gets this generation's idle timeout.
            let next = Parked::between_requests(
                connection,
                with.first_request,
                with.header_deadline,
                now,
                &self.settings,
            );
            self.park(next, now);
        }
        if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            // The other end is gone (the master died): stop watching a socket that stays
            // ready, before closing it (its file lives on in the siblings).
            self.set_receiving(false);
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
                self.waiting
                    .insert(Waiting::new(Parked::closing(connection, now)));
            }
            // The socket is full: wait here for room, then a worker goes on.
            Disposition::Sending(sending) => {
                self.waiting.insert(Waiting::new(Parked::sending(
                    connection,
                    sending,
                    &self.settings,
                )));
            }
            // A pipelined request may follow: a complete head goes to a worker, a partial one
            // waits for the rest.
            Disposition::KeepAlive => {
                let next = Parked::between_requests(connection, false, None, now, &self.settings);
                self.park(next, now);
            }
        }
    }

    /// Queues a connection whose head is complete for a worker, or parks it. A draining child
    /// hands a parked one over, or closes it if it is idle and cannot.
    fn park(&mut self, next: Next, now: Instant) {
        match next {
            Next::Serve(ready) => self.ready.push_back(Work::Request(ready)),
            Next::Park(parked) => {
                let mut waiting = Waiting::new(parked);
                // Before it is registered: one handed over is never watched here.
                if self.drain_started
                    && hand_off(&mut self.handoff, &mut waiting) == Sent::Kept
                    && waiting.parked.wait() == Wait::Idle
                {
                    let step = waiting.parked.close_idle(now, &self.settings);
                    waiting.apply(step);
                }
                self.waiting.insert(waiting);
            }
        }
    }

    /// Accepts from each listener until its backlog is empty or this child is full.
    fn accept_all(&mut self) {
        for index in 0..self.listeners.len() {
            self.accept_from(index);
        }
    }

    /// Accepts from one listener until its backlog is empty or this child is full.
    fn accept_from(&mut self, index: usize) {
        while self.open_connections() < self.accept.max_connections || self.oldest_idle().is_some()
        {
            let accepted = self.listeners[index].accept();
            // Read after each accept: a connection's header deadline counts from its own
            // accept, not from the start of a batch that may have begun before it connected.
            let now = Instant::now();
            match accepted {
                Ok((stream, peer)) => {
                    if let Err(error) = prepare_accepted(&stream, self.accept.tcp_keepidle) {
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
                    self.waiting.insert(Waiting::new(Parked::accepted(
                        connection,
                        now,
                        &self.settings,
                    )));
                    // Accepted first, so that an idle connection gives way only to a client
                    // this child actually took (not one a sibling with room got first).
                    self.make_room(now);
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
        while let Some(ready) = self.ready.pop_front() {
            match self.jobs.try_send(ready) {
                Ok(()) => {
                    self.in_flight += 1;
                    self.jobs.in_flight(self.in_flight);
                }
                Err(TrySendError::Full(ready)) => {
                    self.ready.push_front(ready);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// Offers `waiting`'s connection to the handoff target, and records the outcome on it: queued
/// (dropped here at the end of the iteration), retrying (kept, retried by
/// `retry_handoffs`), or kept (to be treated as without handoff). The caller then calls
/// `WaitingSet::changed` if the connection is in the table.
fn hand_off(handoff: &mut Handoff, waiting: &mut Waiting) -> Sent {
    let first_request = waiting.parked.wait() == Wait::FirstRequest;
    let sent = handoff.send(
        waiting.parked.connection(),
        first_request,
        waiting.parked.header_deadline(),
        &mut waiting.handoff_retry,
    );
    if sent == Sent::Queued {
        waiting.fate = Fate::Drop;
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Limits;
    use std::io::Write;
    use std::net::TcpStream;

    fn settings(header_timeout: Duration) -> Settings {
        Settings {
            limits: Limits::new(8192),
            keep_alive: true,
            header_timeout,
            idle_timeout: Some(Duration::from_secs(60)),
            body_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            send_min_rate: 1024,
            spill_dir: None,
        }
    }

    /// Raises this process's soft open-files limit to its hard one; fails if that is below
    /// `needed`.
    fn raise_fd_limit(needed: u64) {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        assert!(
            limit.rlim_max >= needed,
            "this test needs {needed} descriptors; raise the hard open-files limit (ulimit -Hn)"
        );
    }

    /// Turns `acceptor` until `done` says so, failing after 10 s.
    fn turn_until(
        acceptor: &mut Acceptor,
        events: &mut [EpollEvent],
        what: &str,
        mut done: impl FnMut(&Acceptor) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(acceptor) {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within 10 s"
            );
            acceptor.turn(events);
        }
    }

    /// The property the table of waiting connections exists for: with a thousand connections
    /// parked, a wake with one readable connection and one expired deadline looks at those two
    /// and no other: 3 visits each (taken from the event or the deadline index, brought in
    /// step, taken out of the table), 6 in all, whatever the number parked. Both left the
    /// epoll set as they left the table: the kernel holds the 999 others, the wake fd and the
    /// listener, and not the one now with a worker (whose descriptor is still open).
    #[test]
    fn a_wake_touches_only_the_connections_with_an_event_or_a_deadline() {
        const PARKED: usize = 1000;
        raise_fd_limit(4 * PARKED as u64);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (jobs, jobs_rx) = crossbeam_channel::bounded(4);
        let jobs = Jobs::new(jobs);
        let (_returns_tx, returns) = crossbeam_channel::unbounded();
        let mut acceptor = Acceptor::new(
            vec![listener],
            SignalWatch::register(|_| None).unwrap(),
            jobs,
            returns,
            Arc::new(Drain::default()),
            Arc::new(settings(Duration::from_secs(60))),
            AcceptSettings {
                tcp_keepidle: Duration::from_secs(60),
                max_connections: 2 * PARKED,
            },
            Handoff::new(None, None),
        )
        .unwrap();
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAKE];
        let mut clients = Vec::new();
        // In batches that fit the listen backlog, each accepted before the next connects.
        while clients.len() < PARKED {
            for _ in 0..64.min(PARKED - clients.len()) {
                clients.push(TcpStream::connect(addr).unwrap());
            }
            let n = clients.len();
            turn_until(&mut acceptor, &mut events, "accepting", |a| {
                a.waiting.len() == n
            });
        }
        // One more, whose header deadline is a moment away.
        acceptor.settings = Arc::new(settings(Duration::from_millis(50)));
        let _expiring = TcpStream::connect(addr).unwrap();
        turn_until(&mut acceptor, &mut events, "accepting the last", |a| {
            a.waiting.len() == PARKED + 1
        });
        acceptor.waiting.take_visits();

        clients[PARKED / 2]
            .write_all(b"GET /versions HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut served = None;
        turn_until(
            &mut acceptor,
            &mut events,
            "the request and the expiry",
            |a| {
                if served.is_none() {
                    served = jobs_rx.try_recv().ok();
                }
                served.is_some() && a.waiting.len() == PARKED - 1
            },
        );
        match &served {
            Some(Work::Request(Ready {
                head: Ok((head, _)),
                ..
            })) => assert_eq!(head.target, "/versions"),
            _ => panic!("the request was to go to a worker with its head"),
        }
        assert_eq!(acceptor.waiting.take_visits(), 6);
        assert_eq!(acceptor.waiting.registrations(), PARKED - 1 + 2);
    }
}
