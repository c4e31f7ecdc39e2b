//! A child's side of the handoff: its ends of the sockets, the target it hands connections to,
//! sending them while it drains, and adopting them while it has room.
//!
//! The acceptor drives it: it polls the fds this type exposes, calls [`Handoff::read_control`]
//! when the control socket is readable, [`Handoff::send`] for each connection it gives away and
//! [`Handoff::adopt`] while the channel is readable and it has a free connection slot. This type
//! decides what can be taken or sent and logs why not; the acceptor decides what happens to a
//! connection it keeps (served, closed FIN-first). It knows nothing of poll loops or deadlines
//! other than its own retry bound.

use std::collections::HashSet;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::wire::{self, ReceiveError};
use crate::http::connection::Connection;

/// How long a draining child keeps retrying to hand over a connection while the new
/// generation's channel is full, before it closes the connection instead. docs/OPERATIONS.md
/// quotes this value.
pub const HANDOFF_RETRY: Duration = Duration::from_secs(5);

/// How often those retries happen (the acceptor's poll timeout while one is pending).
pub(crate) const HANDOFF_RETRY_POLL: Duration = Duration::from_millis(5);

/// How many descriptors a child keeps free when it adopts a connection: room for what its
/// workers open while serving (an image file, a temporary upload file, a database connection)
/// and for the adopted socket itself. A child with fewer free leaves handed-over connections
/// queued on its generation's channel, where a sibling or, later, it takes them.
pub const ADOPTION_DESCRIPTOR_RESERVE: usize = 16;

/// How soon a child that stopped adopting for want of descriptors looks again even though
/// none of its connections closed (its workers may have closed files meanwhile). The
/// acceptor's longest poll sleep is no longer than this, so no timer is needed.
const ADOPTION_RECHECK: Duration = Duration::from_secs(1);

/// The shortest time between two warnings that a child cannot adopt for the same reason, so
/// that a child that stays full does not write one line per connection that closes.
const ADOPTION_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// A child's ends of the handoff machinery: its generation's channel (connections handed to
/// it), its control socket (where the master sends a generation's channel), and that target
/// once received. Every end is optional: a child without them drains by closing.
#[derive(Default)]
pub struct Handoff {
    /// The receive end of this generation's channel; `None` once its other end is gone.
    receive: Option<OwnedFd>,
    /// This child's end of its control socket; `None` once the master is gone.
    control: Option<OwnedFd>,
    /// The send end of the channel this child hands its connections to; the latest received.
    target: Option<OwnedFd>,
    /// A descriptor held only to be given up right before the control socket is read, so that
    /// a child at its open-files limit still has a number for the target's descriptor to land
    /// on (a target lost to `MSG_CTRUNC` would make the child close its connections).
    spare: Option<OwnedFd>,
    /// Adoption stopped for want of descriptors: resume when fewer than this many connections
    /// are open, or at this instant.
    descriptor_pause: Option<(usize, Instant)>,
    /// The sockets (by inode) sent to the current target, to notice one coming back.
    sent_to_target: HashSet<u64>,
    /// A connection sent to the current target came back on this child's own channel: the
    /// target leads back here, so this child relays nothing more until the target changes.
    target_loops_back: bool,
    /// The master said to stop taking new clients: a child of the generation being started
    /// serves them (see `wire::Control::Accepting`); cleared when it says to take them again.
    told_to_stop_accepting: bool,
    /// When the child last warned that it could not adopt, per reason.
    warned_connection_limit: Option<Instant>,
    warned_descriptor_limit: Option<Instant>,
}

/// What one attempt to adopt a connection gave.
pub enum Adoption {
    /// A connection, with the bytes the old child had read from it in its buffer, and what
    /// travelled with it: whether it has yet to serve its first request, and its header
    /// deadline.
    Adopted(Connection, wire::Carried),
    /// Nothing is queued (or the channel is gone).
    Empty,
    /// This child has no descriptors to spare; what is queued stays queued.
    NoRoom,
}

/// What became of a connection given to [`Handoff::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Queued on the target's channel: the caller drops its copy (the client's connection
    /// lives on there).
    Queued,
    /// The target's channel is full: the caller keeps the connection and calls again soon
    /// (within `HANDOFF_RETRY_POLL`); the retry bound is kept in the caller's `retry_until`.
    Retrying,
    /// It cannot be handed over (no target, the channel stayed full, a failure, logged): the
    /// caller keeps it and treats it as without handoff.
    Kept,
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

    /// The channel's fd for the acceptor's epoll set, `None` when there is none.
    pub fn receive_fd(&self) -> Option<BorrowedFd<'_>> {
        self.receive.as_ref().map(|fd| fd.as_fd())
    }

    /// The control socket's fd for the acceptor's epoll set, `None` when there is none.
    pub fn control_fd(&self) -> Option<BorrowedFd<'_>> {
        self.control.as_ref().map(|fd| fd.as_fd())
    }

    pub fn has_target(&self) -> bool {
        self.target.is_some()
    }

    /// Whether the master lets this child take new clients from its listeners. It says no
    /// while a reload's new generation has a child serving and has not yet taken over, so new
    /// clients meet the new config at once; connections already held are served either way.
    pub fn may_accept(&self) -> bool {
        !self.told_to_stop_accepting
    }

    /// The channel hung up or failed (the master died): stop polling a socket that stays ready.
    pub fn lose_receive(&mut self) {
        self.receive = None;
    }

    /// Whether the channel may be polled with `open_connections` held: not while adoption is
    /// paused for want of descriptors, unless a connection has closed since or the pause is over;
    /// not while `draining` with a target that leads back to this child's own channel.
    pub fn may_adopt(&mut self, open_connections: usize, draining: bool, now: Instant) -> bool {
        if draining && self.target_loops_back {
            return false;
        }
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
    pub fn has_queued(&self) -> bool {
        let Some(receive) = &self.receive else {
            return false;
        };
        let mut fds = [PollFd::new(receive.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
            && fds[0]
                .revents()
                .is_some_and(|revents| revents.contains(PollFlags::POLLIN))
    }

    /// Says (at most once per `ADOPTION_WARNING_INTERVAL`) that this child holds
    /// `max_connections` and leaves handed-over connections queued.
    pub fn warn_connection_limit(&mut self, max_connections: usize, now: Instant) {
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

    /// Reads the control socket: each target received replaces the one held, so the latest
    /// wins, whether this child serves or drains; an accept switch sets [`Handoff::may_accept`].
    /// Returns whether a new target arrived. A control socket at end of stream (the master is
    /// gone) is dropped, and with it any word to stop accepting: a child whose master is gone
    /// drains on its parent-death signal anyway.
    pub fn read_control(&mut self) -> bool {
        let Some(control) = &self.control else {
            return false;
        };
        let mut replaced = false;
        let keep_control = loop {
            // Give the spare up so that the target's descriptor has a number to land on.
            self.spare = None;
            match wire::receive_control(control.as_fd()) {
                Ok(Some(wire::Control::Accepting(accepting))) => {
                    if self.told_to_stop_accepting == accepting {
                        if accepting {
                            log::info!("taking new clients again: the reload failed");
                        } else {
                            log::info!("taking no new clients: the new generation serves them");
                        }
                    }
                    self.told_to_stop_accepting = !accepting;
                }
                Ok(Some(wire::Control::Target(target))) => {
                    // The target it replaces is closed here, which frees the spare's number.
                    self.target = Some(target);
                    self.sent_to_target.clear();
                    self.target_loops_back = false;
                    replaced = true;
                    self.spare = control.try_clone().ok();
                }
                Ok(None) => break !peer_closed(control.as_fd()),
                Err(error @ ReceiveError::DescriptorDiscarded) => {
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
            self.told_to_stop_accepting = false;
        }
        replaced
    }

    /// Sends `connection` (its socket and the bytes it has buffered) to the target.
    /// `first_request`, its `header_deadline` (when its wait is bounded by the header timeout)
    /// and `Connection::trusted` travel with it; `retry_until` is the caller's record of
    /// how long a full channel is waited out for this connection (set on the first `Retrying`,
    /// cleared when the attempt ends).
    pub fn send(
        &mut self,
        connection: &Connection,
        first_request: bool,
        header_deadline: Option<Instant>,
        retry_until: &mut Option<Instant>,
    ) -> Sent {
        let Some(target) = &self.target else {
            return Sent::Kept;
        };
        let with = wire::Carried {
            first_request,
            header_deadline,
            trusted: connection.trusted,
        };
        match wire::send_parked(
            target.as_fd(),
            connection.stream().as_fd(),
            connection.buffered(),
            &with,
        ) {
            Ok(()) => {
                log::debug!("{}: queued for the new generation", connection.peer());
                crate::metrics::handoff(crate::metrics::HandoffSide::Sent);
                if let Some(inode) = socket_inode(connection.stream().as_fd()) {
                    self.sent_to_target.insert(inode);
                }
                *retry_until = None;
                Sent::Queued
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // The channel is full: the new generation is still taking in what came before.
                let now = Instant::now();
                let until = *retry_until.get_or_insert(now + HANDOFF_RETRY);
                if now < until {
                    return Sent::Retrying;
                }
                log::warn!(
                    "{}: the handoff channel stayed full for {} s; closing the connection",
                    connection.peer(),
                    HANDOFF_RETRY.as_secs()
                );
                *retry_until = None;
                Sent::Kept
            }
            Err(error) => {
                log::warn!(
                    "{}: cannot hand the connection to the new generation ({error}); closing it",
                    connection.peer()
                );
                *retry_until = None;
                Sent::Kept
            }
        }
    }

    /// One connection from this generation's channel, as a non-blocking `Connection` with the
    /// bytes the old child had read from it; taken only if this child has
    /// [`ADOPTION_DESCRIPTOR_RESERVE`] descriptors free (`open_connections` is what it holds,
    /// remembered to know when one has closed).
    pub fn adopt(&mut self, open_connections: usize) -> Adoption {
        // Taken out for the call, so that the loop can update the rest of `self` while it
        // borrows the channel.
        let Some(receive) = self.receive.take() else {
            return Adoption::Empty;
        };
        let adoption = self.adopt_from(receive.as_fd(), open_connections);
        self.receive = Some(receive);
        adoption
    }

    fn adopt_from(&mut self, receive: BorrowedFd<'_>, open_connections: usize) -> Adoption {
        loop {
            match wire::descriptors_free(receive, ADOPTION_DESCRIPTOR_RESERVE + 1) {
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
            match wire::take_connection(receive) {
                Ok(Some(received)) => {
                    if socket_inode(received.fd.as_fd())
                        .is_some_and(|inode| self.sent_to_target.contains(&inode))
                        && !self.target_loops_back
                    {
                        // Sent to the target and back on our own channel: the target leads
                        // here. It is still adopted (it is ours now), but nothing more is
                        // taken while draining with this target.
                        self.target_loops_back = true;
                        log::info!(
                            "the handoff target leads back to this child's own channel; while \
                             draining, it leaves what arrives there to the other children"
                        );
                    }
                    let stream = TcpStream::from(received.fd);
                    let Ok(peer) = stream.peer_addr() else {
                        // The client left while the connection was in transit.
                        continue;
                    };
                    let mut connection = Connection::with_buffered(stream, peer, &received.carried);
                    if received.first_request {
                        connection.requests_served = 0;
                    }
                    connection.trusted = received.with.trusted;
                    if connection.set_blocking(false).is_err() {
                        continue;
                    }
                    log::debug!("{peer}: adopted from a draining generation");
                    return Adoption::Adopted(connection, received.with);
                }
                Ok(None) => return Adoption::Empty,
                Err(error @ ReceiveError::DescriptorDiscarded) => {
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
                Err(error @ ReceiveError::PayloadTruncated) => {
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

/// The inode of a socket: the same on every descriptor of it, in every process, so it names a
/// connection across a handoff.
fn socket_inode(fd: BorrowedFd<'_>) -> Option<u64> {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .ok()
        .map(|stat| stat.st_ino)
}

/// Whether the peer of a (non-blocking) socket has closed: a zero-byte peek.
fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        nix::sys::socket::recv(
            fd.as_raw_fd(),
            &mut byte,
            nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ),
        Ok(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A served connection pair: the client's end and the server's `Connection`.
    fn connection() -> (TcpStream, Connection) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        (client, Connection::new(server_side, peer))
    }

    #[test]
    fn a_new_target_replaces_the_old_one_and_receives_what_is_sent_next() {
        let (control_child, control_master) = wire::pair().unwrap();
        let (first_receive, first_send) = wire::pair().unwrap();
        let (second_receive, second_send) = wire::pair().unwrap();
        let mut handoff = Handoff::new(None, Some(control_child));
        let (_client_a, a) = connection();
        let mut retry = None;
        assert_eq!(
            handoff.send(&a, false, None, &mut retry),
            Sent::Kept,
            "no target yet"
        );

        wire::send_target(control_master.as_fd(), first_send.as_fd()).unwrap();
        assert!(handoff.read_control());
        assert_eq!(handoff.send(&a, false, None, &mut retry), Sent::Queued);
        assert!(wire::take_connection(first_receive.as_fd())
            .unwrap()
            .is_some());

        // A draining child told again: the latest target wins.
        wire::send_target(control_master.as_fd(), second_send.as_fd()).unwrap();
        assert!(handoff.read_control());
        assert!(!handoff.read_control(), "nothing more queued");
        let (_client_b, b) = connection();
        assert_eq!(handoff.send(&b, true, None, &mut retry), Sent::Queued);
        let received = wire::take_connection(second_receive.as_fd())
            .unwrap()
            .expect("the second target got it");
        assert!(received.first_request);
        assert!(wire::take_connection(first_receive.as_fd())
            .unwrap()
            .is_none());
        assert!(handoff.control.is_some(), "the control socket is kept");
    }

    #[test]
    fn several_targets_queued_at_once_leave_the_last_one() {
        let (control_child, control_master) = wire::pair().unwrap();
        let (first_receive, first_send) = wire::pair().unwrap();
        let (second_receive, second_send) = wire::pair().unwrap();
        let mut handoff = Handoff::new(None, Some(control_child));
        wire::send_target(control_master.as_fd(), first_send.as_fd()).unwrap();
        wire::send_target(control_master.as_fd(), second_send.as_fd()).unwrap();
        assert!(handoff.read_control());
        let (_client, a) = connection();
        assert_eq!(handoff.send(&a, false, None, &mut None), Sent::Queued);
        assert!(wire::take_connection(second_receive.as_fd())
            .unwrap()
            .is_some());
        assert!(wire::take_connection(first_receive.as_fd())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_target_that_leads_back_to_the_own_channel_stops_relaying_while_draining() {
        let (control_child, control_master) = wire::pair().unwrap();
        let (own_receive, own_send) = wire::pair().unwrap();
        let mut handoff = Handoff::new(Some(own_receive), Some(control_child));
        wire::send_target(control_master.as_fd(), own_send.as_fd()).unwrap();
        assert!(handoff.read_control());
        let now = Instant::now();
        assert!(handoff.may_adopt(0, true, now));
        let (_client, a) = connection();
        assert_eq!(handoff.send(&a, false, None, &mut None), Sent::Queued);
        drop(a);
        assert!(matches!(
            handoff.adopt(0),
            Adoption::Adopted(
                _,
                wire::Carried {
                    first_request: false,
                    ..
                }
            )
        ));
        assert!(
            !handoff.may_adopt(0, true, now),
            "it came back: stop relaying"
        );
        assert!(
            handoff.may_adopt(0, false, now),
            "a serving child still adopts"
        );
        // A new target clears it.
        let (_other_receive, other_send) = wire::pair().unwrap();
        wire::send_target(control_master.as_fd(), other_send.as_fd()).unwrap();
        assert!(handoff.read_control());
        assert!(handoff.may_adopt(0, true, now));
    }

    #[test]
    fn a_control_socket_whose_master_is_gone_is_dropped() {
        let (control_child, control_master) = wire::pair().unwrap();
        let mut handoff = Handoff::new(None, Some(control_child));
        drop(control_master);
        assert!(!handoff.read_control());
        assert!(handoff.control_fd().is_none());
    }
}
