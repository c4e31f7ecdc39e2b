//! The acceptor's table of waiting connections: a slab of parked connections keyed by a token,
//! their epoll(7) registrations, and the indexes that let one wake of the acceptor cost
//! O(events + expired deadlines) rather than O(parked connections).
//!
//! Each connection is registered once with the acceptor's epoll instance when it is parked, its
//! slot index as the event's data; level-triggered, for reading or, while a response waits for
//! room, for writing. After anything that may have changed a connection (an event, a deadline, a
//! drain, a handoff attempt), the acceptor calls [`WaitingSet::changed`], which brings everything
//! the table keeps about it in step with its state: the registration, its entry in the deadline
//! index, in the index of idle keep-alive connections (oldest first, for `max_client_connections`),
//! in the set of handoffs being retried, the count of parked responses, and the list of
//! connections whose fate is decided (to be taken out at the end of the iteration). A connection
//! leaving the table (to a worker, to another generation, or closed) is deregistered first: an
//! epoll registration belongs to the open file description, which a handoff or a worker keeps
//! alive, so a descriptor closed while still registered would go on being reported.
//!
//! Nothing here walks every connection except [`WaitingSet::indices`], which the acceptor uses
//! only once per drain event (the drain's start, a new handoff target).

use std::collections::BTreeSet;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::http::parked::{ArrivedHead, Interest, Parked, Step, Wait};

/// The end-of-iteration decision for a waiting connection.
pub enum Fate {
    Stay,
    /// A whole head (or an invalid one) has arrived, parsed: to a worker with it.
    Dispatch(ArrivedHead),
    /// The socket has room for the response it is sending: to a worker to go on.
    Resume,
    /// Closed by the client, failed, expired or handed over: drop (closes our socket).
    Drop,
}

/// A connection in the table: its parked state, and what the acceptor decided for it.
pub struct Waiting {
    pub parked: Parked,
    /// The handoff channel was full when this connection was to be handed over: retry until
    /// then, and close it only if the channel stays full.
    pub handoff_retry: Option<Instant>,
    /// What happens to it at the end of this loop iteration: events and deadlines are handled
    /// by token, so nothing leaves the table until they all are.
    pub fate: Fate,
    /// It was an idle keep-alive connection closed (FIN-first) to make room for a new client;
    /// while it lingers it does not count against `max_client_connections`.
    pub reclaimed: bool,
    /// What the table holds about it, as of the last [`WaitingSet::changed`].
    booked: Booked,
}

impl Waiting {
    pub fn new(parked: Parked) -> Waiting {
        Waiting {
            parked,
            handoff_retry: None,
            fate: Fate::Stay,
            reclaimed: false,
            booked: Booked::default(),
        }
    }

    /// Records what an event did to the parked connection.
    pub fn apply(&mut self, step: Step) {
        match step {
            Step::Stay => {}
            Step::Serve(head) => self.fate = Fate::Dispatch(head),
            Step::Resume => self.fate = Fate::Resume,
            Step::Drop => self.fate = Fate::Drop,
        }
    }

    pub fn stays(&self) -> bool {
        matches!(self.fate, Fate::Stay)
    }

    /// What the table should hold about it: everything while it stays, nothing once its fate
    /// is decided (it leaves at the end of the iteration).
    fn wanted(&self) -> Booked {
        if !self.stays() {
            return Booked {
                settling: true,
                ..Booked::default()
            };
        }
        let wait = self.parked.wait();
        Booked {
            registered: Some(self.parked.interest()),
            deadline: self.parked.deadline(),
            // Only an idle connection with no handoff under way may give way to a new client.
            idle_since: (wait == Wait::Idle && self.handoff_retry.is_none())
                .then(|| self.parked.idle_since()),
            retrying: self.handoff_retry.is_some(),
            sending: wait == Wait::Sending,
            settling: false,
        }
    }
}

/// What the table holds about one connection.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Booked {
    /// Its epoll registration.
    registered: Option<Interest>,
    /// Its entry in `deadlines`.
    deadline: Option<Instant>,
    /// Its entry in `idle`.
    idle_since: Option<Instant>,
    /// Its entry in `retrying`.
    retrying: bool,
    /// Counted in `n_sending`.
    sending: bool,
    /// Listed in `settling`.
    settling: bool,
}

/// The waiting connections, their epoll instance and their indexes.
pub struct WaitingSet {
    epoll: Epoll,
    slots: Vec<Option<Waiting>>,
    /// Slots free for reuse.
    free: Vec<usize>,
    len: usize,
    /// Every deadline of a connection that stays, with its slot: the nearest first.
    deadlines: BTreeSet<(Instant, usize)>,
    /// The idle keep-alive connections that may give way to a new client, by when their last
    /// response began: the one idle the longest first.
    idle: BTreeSet<(Instant, usize)>,
    /// The connections whose handoff is being retried while the target's channel is full.
    retrying: BTreeSet<usize>,
    /// Connections waiting for room to send the rest of a response.
    n_sending: usize,
    /// Connections whose fate was decided this iteration.
    settling: Vec<usize>,
    /// How many times a connection was looked at or brought in step since the last
    /// [`WaitingSet::take_visits`]: what the tests read to show that a wake costs what its
    /// events and deadlines cost, whatever the number of connections parked.
    visits: usize,
}

/// Whether the event data `token` names a connection slot rather than one of the acceptor's own
/// descriptors (which use tokens from the top of the range, see [`WaitingSet::watch`]).
pub fn is_connection(token: u64) -> bool {
    token < u64::from(u32::MAX)
}

impl WaitingSet {
    pub fn new() -> io::Result<WaitingSet> {
        Ok(WaitingSet {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            deadlines: BTreeSet::new(),
            idle: BTreeSet::new(),
            retrying: BTreeSet::new(),
            n_sending: 0,
            settling: Vec::new(),
            visits: 0,
        })
    }

    /// Registers one of the acceptor's own descriptors for reading, with `token` (at least
    /// `u32::MAX`, so that it cannot name a slot). Deregister it with [`WaitingSet::unwatch`]
    /// before closing it.
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> nix::Result<()> {
        debug_assert!(!is_connection(token));
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
    }

    pub fn unwatch(&self, fd: BorrowedFd<'_>) {
        if let Err(errno) = self.epoll.delete(fd) {
            log::debug!("epoll_ctl(DEL) on one of the acceptor's descriptors: {errno}");
        }
    }

    /// Waits for events, at most `timeout` (rounded up to the millisecond, so that a deadline
    /// less than one away is not polled for in a busy loop). Returns how many of `events` were
    /// filled.
    pub fn wait(&self, events: &mut [EpollEvent], timeout: Duration) -> nix::Result<usize> {
        let millis = timeout.as_nanos().div_ceil(1_000_000);
        let timeout = EpollTimeout::try_from(millis).unwrap_or(EpollTimeout::MAX);
        self.epoll.wait(events, timeout)
    }

    /// Connections in the table (including those leaving at the end of this iteration).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Connections waiting for room to send the rest of a response.
    pub fn n_sending(&self) -> usize {
        self.n_sending
    }

    /// Puts a connection in the table and registers it; returns its slot. A connection that
    /// cannot be registered is dropped at the end of the iteration (logged).
    pub fn insert(&mut self, waiting: Waiting) -> usize {
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(waiting);
                index
            }
            None => {
                self.slots.push(Some(waiting));
                self.slots.len() - 1
            }
        };
        self.len += 1;
        self.changed(index);
        index
    }

    pub fn get(&self, index: usize) -> Option<&Waiting> {
        self.slots.get(index).and_then(Option::as_ref)
    }

    /// The connection at `index`, to act on it; call [`WaitingSet::changed`] after.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Waiting> {
        self.visits += 1;
        self.slots.get_mut(index).and_then(Option::as_mut)
    }

    /// Brings what the table holds about the connection at `index` in step with its state.
    pub fn changed(&mut self, index: usize) {
        self.visits += 1;
        let Some(waiting) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let mut wanted = waiting.wanted();
        let booked = waiting.booked;
        if wanted == booked {
            return;
        }
        if wanted.registered != booked.registered {
            let fd = waiting.parked.connection().fd();
            let result = match (booked.registered, wanted.registered) {
                (None, Some(interest)) => self.epoll.add(fd, event(interest, index)),
                (Some(_), Some(interest)) => self.epoll.modify(fd, &mut event(interest, index)),
                (Some(_), None) => self.epoll.delete(fd),
                (None, None) => Ok(()),
            };
            if let Err(errno) = result {
                if wanted.registered.is_some() {
                    // Without a registration it would never be heard from again.
                    log::warn!(
                        "{}: cannot watch the connection with epoll ({}); closing it",
                        waiting.parked.connection().peer(),
                        io::Error::from(errno)
                    );
                    if booked.registered.is_some() {
                        let _ = self.epoll.delete(fd);
                    }
                    waiting.fate = Fate::Drop;
                    wanted = waiting.wanted();
                } else {
                    log::debug!(
                        "{}: epoll_ctl(DEL): {errno}",
                        waiting.parked.connection().peer()
                    );
                }
            }
        }
        if wanted.deadline != booked.deadline {
            if let Some(at) = booked.deadline {
                self.deadlines.remove(&(at, index));
            }
            if let Some(at) = wanted.deadline {
                self.deadlines.insert((at, index));
            }
        }
        if wanted.idle_since != booked.idle_since {
            if let Some(since) = booked.idle_since {
                self.idle.remove(&(since, index));
            }
            if let Some(since) = wanted.idle_since {
                self.idle.insert((since, index));
            }
        }
        if wanted.retrying != booked.retrying {
            if wanted.retrying {
                self.retrying.insert(index);
            } else {
                self.retrying.remove(&index);
            }
        }
        if wanted.sending != booked.sending {
            if wanted.sending {
                self.n_sending += 1;
            } else {
                self.n_sending = self.n_sending.saturating_sub(1);
            }
        }
        if wanted.settling && !booked.settling {
            self.settling.push(index);
        }
        waiting.booked = wanted;
    }

    /// The nearest deadline of a connection that stays.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// The connections whose deadline is `now` or earlier, taken out of the deadline index
    /// (acting on one and calling [`WaitingSet::changed`] puts its next deadline back).
    pub fn take_expired(&mut self, now: Instant) -> Vec<usize> {
        let mut expired = Vec::new();
        while let Some(&(at, index)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(waiting) = self.slots.get_mut(index).and_then(Option::as_mut) {
                waiting.booked.deadline = None;
            }
            expired.push(index);
        }
        expired
    }

    /// The idle keep-alive connection whose last response is the oldest, with no handoff
    /// under way.
    pub fn oldest_idle(&self) -> Option<usize> {
        self.idle.first().map(|&(_, index)| index)
    }

    /// The connections whose handoff is being retried.
    pub fn retrying(&self) -> Vec<usize> {
        self.retrying.iter().copied().collect()
    }

    pub fn any_retrying(&self) -> bool {
        !self.retrying.is_empty()
    }

    /// Every connection's slot. O(connections): for what happens once per drain event only.
    pub fn indices(&mut self) -> Vec<usize> {
        self.visits += self.len;
        (0..self.slots.len())
            .filter(|&index| self.slots[index].is_some())
            .collect()
    }

    /// Takes out of the table every connection whose fate was decided this iteration (each
    /// already deregistered and out of every index).
    pub fn take_settled(&mut self) -> Vec<Waiting> {
        let mut settled = Vec::with_capacity(self.settling.len());
        for index in std::mem::take(&mut self.settling) {
            self.visits += 1;
            let Some(waiting) = self.slots.get_mut(index).and_then(Option::take) else {
                continue;
            };
            debug_assert!(waiting.booked.registered.is_none());
            self.free.push(index);
            self.len -= 1;
            settled.push(waiting);
        }
        settled
    }

    /// How many times a connection was looked at since the last call; resets the count.
    pub fn take_visits(&mut self) -> usize {
        std::mem::take(&mut self.visits)
    }

    /// How many descriptors the kernel holds registered in the epoll instance (one `tfd:` line
    /// each in its /proc fdinfo): what the tests compare with what should be there.
    #[cfg(test)]
    pub fn registrations(&self) -> usize {
        use std::os::fd::AsRawFd;
        let fdinfo = format!("/proc/self/fdinfo/{}", self.epoll.0.as_raw_fd());
        std::fs::read_to_string(&fdinfo)
            .unwrap_or_else(|error| panic!("{fdinfo}: {error}"))
            .lines()
            .filter(|line| line.starts_with("tfd:"))
            .count()
    }
}

/// The epoll event a connection slot is registered with. Level-triggered: a connection with
/// bytes left unread (or room left unused) is reported again on the next wake.
fn event(interest: Interest, index: usize) -> EpollEvent {
    let flags = match interest {
        Interest::Read => EpollFlags::EPOLLIN,
        Interest::Write => EpollFlags::EPOLLOUT,
    };
    EpollEvent::new(flags, index as u64)
}
