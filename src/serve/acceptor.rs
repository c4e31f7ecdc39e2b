//! A child's acceptor thread: the one poll loop that owns every connection not being served.
//!
//! It polls the wake fd (signals and returning workers), the shared listening socket (only while
//! this child has room for more connections, or holds an idle keep-alive connection that can
//! give way to a new client; otherwise unaccepted ones stay in the backlog for another child),
//! and every connection that waits: for its first request, between requests (keep-alive),
//! or for the client to close after our FIN. It reads request heads without blocking and hands a
//! connection to the worker pool only once a whole head has arrived, so a slow or idle client
//! never pins a worker thread.
//!
//! # Drain
//!
//! On SIGHUP, SIGTERM or SIGQUIT the acceptor stops polling the listener and closes its copy of
//! the fd (never `shutdown()`, which would stop the socket for every process), and runs the
//! child's drain hooks ([`Acceptor::on_drain`]: the metrics endpoint stops with it). It then serves
//! what it has: connections whose first request has not fully arrived still get it served,
//! bounded by the header timeout; requests in flight finish with `Connection: close`; idle
//! keep-alive connections are closed FIN-first. When nothing is left it returns, and the child
//! joins its workers and exits 0.
//!
//! With a handoff target (`reload_handoff`), connections waiting for a request are handed to
//! the new generation instead of closed, and requests in flight keep their connection so that
//! it goes along once answered. A newer target may arrive at any time; the drain then hands
//! what it still holds to that one. What can be sent or adopted, and when, is decided by
//! `handoff::Handoff`; this loop polls its fds and decides what happens to the connections it
//! keeps.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;

// The child's side of the handoff lives in `handoff`; `child.rs` builds it through this path.
pub use crate::handoff::Handoff;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::handoff::{Adoption, Sent, HANDOFF_RETRY_POLL};
use crate::http::connection::prepare_accepted;
use crate::http::connection::Connection;
use crate::http::parked::{ArrivedHead, Next, Parked, Ready, Step, Wait, Work};
use crate::http::serve::{Disposition, Settings};
use crate::logging;
use crate::serve::pool::Returned;
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

/// The longest poll(2) sleep with nothing scheduled; bounds how late a deadline is noticed.
const MAX_POLL: Duration = Duration::from_secs(1);

/// A connection in the poll set: its parked state, and what the acceptor decided for it.
struct Waiting {
    parked: Parked,
    /// The handoff channel was full when this connection was to be handed over: retry until
    /// then, and close it only if the channel stays full.
    handoff_retry: Option<Instant>,
    /// What happens to it at the end of this loop iteration. Events are handled by index into
    /// the poll set, so nothing is removed from `waiting` until they all are.
    fate: Fate,
    /// It was an idle keep-alive connection closed (FIN-first) to make room for a new client;
    /// while it lingers it does not count against `max_client_connections`.
    reclaimed: bool,
}

impl Waiting {
    fn new(parked: Parked) -> Waiting {
        Waiting {
            parked,
            handoff_retry: None,
            fate: Fate::Stay,
            reclaimed: false,
        }
    }

    /// Records what an event did to the parked connection.
    fn apply(&mut self, step: Step) {
        match step {
            Step::Stay => {}
            Step::Serve(head) => self.fate = Fate::Dispatch(head),
            Step::Resume => self.fate = Fate::Resume,
            Step::Drop => self.fate = Fate::Drop,
        }
    }

    fn stays(&self) -> bool {
        matches!(self.fate, Fate::Stay)
    }
}

/// Where the fds that may be absent from one poll set sit in it (and so in its revents).
struct PollSlots {
    /// The handoff channel: polled only while this child has room and the channel exists.
    receive: Option<usize>,
    /// The control socket: polled while the master is there.
    control: Option<usize>,
    /// The listeners: all polled while accepting, none otherwise (then empty).
    listeners: Range<usize>,
    /// The first waiting connection; the others follow in `waiting`'s order.
    first_connection: usize,
}

/// The end-of-iteration decision for a waiting connection.
enum Fate {
    Stay,
    /// A whole head (or an invalid one) has arrived, parsed: to a worker with it.
    Dispatch(ArrivedHead),
    /// The socket has room for the response it is sending: to a worker to go on.
    Resume,
    /// Closed by the client, failed, expired or handed over: drop (closes our socket).
    Drop,
}

/// The acceptor's state. Built by `child::run`, consumed by [`Acceptor::run`].
pub struct Acceptor {
    /// The generation's listeners (its own first, then any overlapping socket it took over;
    /// see `process::listener`); empty once draining.
    pub listeners: Vec<TcpListener>,
    pub signals: SignalWatch<ChildRequest>,
    /// Feeds the worker pool; dropped at the end to stop the workers.
    pub jobs: Sender<Work>,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listeners: Vec<TcpListener>,
        signals: SignalWatch<ChildRequest>,
        jobs: Sender<Work>,
        returns: Receiver<Returned>,
        draining: Arc<AtomicBool>,
        settings: Arc<Settings>,
        accept: AcceptSettings,
        handoff: Handoff,
    ) -> Acceptor {
        Acceptor {
            listeners,
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
            n_reclaimed: 0,
            drain_hooks: Vec::new(),
        }
    }

    /// Runs `hook` as the drain begins, when the listeners close; never if no drain begins.
    pub fn on_drain(&mut self, hook: impl FnOnce() + 'static) {
        self.drain_hooks.push(Box::new(hook));
    }

    /// Runs until the drain is complete. Dropping `self` then drops the job sender, which stops
    /// the pool's workers.
    pub fn run(mut self) {
        // What poll reported for each slot of the poll set; kept across iterations so that
        // its memory is reused (the poll set itself borrows the fds, so it cannot be).
        let mut revents: Vec<PollFlags> = Vec::new();
        loop {
            crate::metrics::set_parked(self.waiting.len());
            let now = Instant::now();
            // A full child still polls the listener while it holds an idle keep-alive connection
            // that can give way to a new client (see `make_room`).
            let accepting = !self.listeners.is_empty()
                && (self.open_connections() < self.accept.max_connections
                    || self.oldest_idle().is_some())
                && self.accept_paused_until.is_none_or(|until| now >= until);
            // The handoff channel, like the listeners, only while this child has room: what it
            // cannot hold stays queued for a sibling or for later.
            let adopting = self.open_connections() < self.accept.max_connections
                && self
                    .handoff
                    .may_adopt(self.open_connections(), self.drain_started, now);
            let slots = match self.wait(accepting, adopting, now, &mut revents) {
                Ok(slots) => slots,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    log::error!("poll() failed in the acceptor: {}", io::Error::from(errno));
                    std::thread::sleep(ACCEPT_BACKOFF);
                    continue;
                }
            };
            let fired = |slot: Option<usize>| slot.is_some_and(|index| !revents[index].is_empty());
            // Connection events first: bytes that arrived before a drain request are seen
            // before the drain decides which connections are idle.
            for (index, events) in revents[slots.first_connection..].iter().enumerate() {
                if !events.is_empty() {
                    self.on_event(index);
                }
            }
            self.expire(Instant::now());
            if fired(slots.control) && self.handoff.read_control() && self.drain_started {
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
            if accepting
                && revents[slots.listeners]
                    .iter()
                    .any(|events| !events.is_empty())
            {
                self.accept_all();
            }
            if let Some(index) = slots.receive.filter(|&index| !revents[index].is_empty()) {
                self.adopt_all(revents[index]);
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
                return;
            }
        }
    }

    /// Waits in poll(2) on the wake fd, the handoff channel (when `adopting`), the control
    /// socket, the listeners (when `accepting`) and every waiting connection, until one is
    /// ready or the nearest deadline. Fills `revents` with what each slot reported and says
    /// where each slot is in it; a slot not polled is not in the set at all.
    fn wait(
        &self,
        accepting: bool,
        adopting: bool,
        now: Instant,
        revents: &mut Vec<PollFlags>,
    ) -> nix::Result<PollSlots> {
        let mut fds = Vec::with_capacity(3 + self.listeners.len() + self.waiting.len());
        // The wake fd is always polled and its revents never read: signals and returning
        // workers are collected every iteration anyway.
        add_slot(&mut fds, self.signals.fd());
        let receive = self
            .handoff
            .receive_fd()
            .filter(|_| adopting)
            .map(|fd| add_slot(&mut fds, fd));
        let control = self.handoff.control_fd().map(|fd| add_slot(&mut fds, fd));
        let first_listener = fds.len();
        if accepting {
            for listener in &self.listeners {
                add_slot(&mut fds, listener.as_fd());
            }
        }
        let listeners = first_listener..fds.len();
        // Last, so that a connection's index in `waiting` is its offset from here.
        let first_connection = fds.len();
        for waiting in &self.waiting {
            fds.push(PollFd::new(
                waiting.parked.connection().fd(),
                waiting.parked.interest(),
            ));
        }
        // poll(2) takes whole milliseconds up to i32::MAX; the timeout is at most MAX_POLL.
        let timeout = PollTimeout::try_from(self.poll_timeout(now)).unwrap_or(PollTimeout::MAX);
        revents.clear();
        poll(&mut fds, timeout)?;
        // nix answers `None` for a bit it has no name for. Linux reports only what was asked
        // (POLLIN, or POLLOUT for a response waiting for room) and POLLERR, POLLHUP, POLLNVAL,
        // all named; were another to appear, it
        // counts as an event, as any nonzero revents did before.
        revents.extend(
            fds.iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::POLLIN)),
        );
        Ok(PollSlots {
            receive,
            control,
            listeners,
            first_connection,
        })
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
        self.in_flight
            + self.ready.len()
            + self
                .waiting
                .iter()
                .filter(|w| w.parked.wait() == Wait::Sending)
                .count()
    }

    /// The keep-alive connection idle the longest (whose last response is the oldest), if one may give way to a new client:
    /// not while draining (idle connections are handed over or closed then), and at most
    /// `max_client_connections` lingering at once, so that this child never holds more than
    /// twice that many descriptors for clients.
    fn oldest_idle(&self) -> Option<usize> {
        if self.drain_started || self.n_reclaimed >= self.accept.max_connections {
            return None;
        }
        self.waiting
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                w.stays() && w.handoff_retry.is_none() && w.parked.wait() == Wait::Idle
            })
            .min_by_key(|(_, w)| w.parked.idle_since())
            .map(|(index, _)| index)
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
            let waiting = &mut self.waiting[index];
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
        }
    }

    /// The nearest deadline, at most [`MAX_POLL`] away.
    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut next = now + MAX_POLL;
        for waiting in &self.waiting {
            if let Some(deadline) = waiting.parked.deadline() {
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

    /// poll(2) reported the connection at `index` in `waiting`.
    fn on_event(&mut self, index: usize) {
        let Some(waiting) = self.waiting.get_mut(index) else {
            return;
        };
        let step = waiting.parked.on_event(Instant::now(), &self.settings);
        waiting.apply(step);
    }

    /// Applies each waiting connection's fate: dispatch to the ready queue, drop, or stay.
    fn settle(&mut self) {
        let mut index = 0;
        while index < self.waiting.len() {
            if self.waiting[index].stays() {
                index += 1;
                continue;
            }
            let waiting = self.waiting.swap_remove(index);
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

    /// Acts on every connection whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        for waiting in &mut self.waiting {
            if waiting.stays() && waiting.parked.deadline().is_some_and(|at| at <= now) {
                let step = waiting.parked.on_deadline(now, &self.settings);
                waiting.apply(step);
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
        // Dropping our fds leaves the sockets open in the master and the other children.
        self.listeners.clear();
        for hook in self.drain_hooks.drain(..) {
            hook();
        }
        let n_handed = self.hand_over_waiting();
        let now = Instant::now();
        let mut n_idle = 0;
        for waiting in &mut self.waiting {
            // Handed over, or waiting for room on the target's channel, or busy.
            if !waiting.stays() || waiting.handoff_retry.is_some() {
                continue;
            }
            if waiting.parked.wait() == Wait::Idle {
                let step = waiting.parked.close_idle(now, &self.settings);
                waiting.apply(step);
                if waiting.parked.wait() == Wait::Closing {
                    n_idle += 1;
                }
            }
        }
        log::info!(
            "draining: stopped accepting; {} request(s) in progress, {} waiting for a first \
             request, {n_handed} connection(s) queued for the new generation, {n_idle} idle \
             keep-alive connection(s) closed",
            self.in_progress(),
            self.waiting
                .iter()
                .filter(|w| w.stays())
                .filter(|w| matches!(w.parked.wait(), Wait::FirstRequest | Wait::Head))
                .count(),
        );
    }

    /// Hands every connection that waits for a request to the target (none without one).
    /// Returns how many were queued.
    fn hand_over_waiting(&mut self) -> usize {
        if !self.handoff.has_target() {
            return 0;
        }
        let mut n_queued = 0;
        for waiting in &mut self.waiting {
            if waiting.stays()
                && waiting.parked.waits_for_a_request()
                && hand_off(&mut self.handoff, waiting) == Sent::Queued
            {
                n_queued += 1;
            }
        }
        n_queued
    }

    /// A draining child got a (newer) target: what it still holds that waits for a request
    /// goes there, and responses keep their connections again, to be handed over in turn. A
    /// reload that fails part-way sends a draining child such a target (back to its own
    /// generation's serving children).
    fn on_new_target(&mut self) {
        self.draining.store(false, Ordering::SeqCst);
        for waiting in &mut self.waiting {
            // The retry bound was for the previous target's channel.
            waiting.handoff_retry = None;
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
        for waiting in &mut self.waiting {
            if waiting.handoff_retry.is_none() || !waiting.stays() {
                continue;
            }
            if waiting.parked.wait() == Wait::Closing {
                waiting.handoff_retry = None;
                continue;
            }
            if hand_off(&mut self.handoff, waiting) == Sent::Kept
                && waiting.parked.wait() == Wait::Idle
            {
                let step = waiting.parked.close_idle(now, &self.settings);
                waiting.apply(step);
            }
        }
    }

    /// Takes in every connection queued on this generation's handoff channel. A draining child
    /// passes them on at once if it has a target of its own.
    fn adopt_all(&mut self, revents: PollFlags) {
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
        if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
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
            Disposition::Close => self
                .waiting
                .push(Waiting::new(Parked::closing(connection, now))),
            // The socket is full: wait here for room, then a worker goes on.
            Disposition::Sending(sending) => self.waiting.push(Waiting::new(Parked::sending(
                connection,
                sending,
                &self.settings,
            ))),
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
                if self.drain_started
                    && hand_off(&mut self.handoff, &mut waiting) == Sent::Kept
                    && waiting.parked.wait() == Wait::Idle
                {
                    let step = waiting.parked.close_idle(now, &self.settings);
                    waiting.apply(step);
                }
                self.waiting.push(waiting);
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
                    self.waiting.push(Waiting::new(Parked::accepted(
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
                Ok(()) => self.in_flight += 1,
                Err(TrySendError::Full(ready)) => {
                    self.ready.push_front(ready);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// Adds `fd` to a poll set, for reading; returns its index there.
fn add_slot<'fd>(fds: &mut Vec<PollFd<'fd>>, fd: BorrowedFd<'fd>) -> usize {
    fds.push(PollFd::new(fd, PollFlags::POLLIN));
    fds.len() - 1
}

/// Offers `waiting`'s connection to the handoff target, and records the outcome on it: queued
/// (dropped here at the end of the iteration), retrying (kept, retried by
/// `retry_handoffs`), or kept (to be treated as without handoff).
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
