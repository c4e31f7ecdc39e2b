//! Handing client connections from a draining child to the new generation, so that a reload
//! closes no keep-alive connection (`reload_handoff`).
//!
//! # Who talks to whom
//!
//! The generations talk directly; the master only introduces them. For every generation the
//! master creates one *handoff channel*: a `SOCK_SEQPACKET` socket pair whose receive end every
//! child of that generation polls (the kernel gives each message to exactly one reader, which
//! spreads adopted connections over the children) and whose send end the master keeps. When a
//! reload commits, the master passes the new generation's send end to each older child over that
//! child's *control socket* (a pair made at fork), then sends it SIGHUP. A draining child then
//! sends each idle keep-alive connection, with the bytes it has already read from it, as one
//! message: the socket's fd as `SCM_RIGHTS` and the bytes as payload.
//!
//! A relay through the master was the alternative. It would make the single-threaded master copy
//! every connection's bytes and handle every fd at the busiest moment (a reload), and a relayed
//! fd would be in flight twice. Directly, the master's part is one message per old child and
//! reload; a child's part is a non-blocking `sendmsg`.
//!
//! # Failure
//!
//! A full channel (it holds a few hundred messages) is waited out: the draining child keeps the
//! connection and retries for a while (`child_side::HANDOFF_RETRY`). A message that still cannot
//! be sent (the channel stays full, the bytes are too many, the socket is gone) leaves the
//! connection with its child, which closes it FIN-first as without handoff.
//!
//! A receiving child takes a message only while it has room: a free `max_client_connections`
//! slot and a reserve of free descriptors (checked before `recvmsg`, because a descriptor the
//! kernel cannot install is closed with `MSG_CTRUNC` and its connection is lost). Without room
//! it stops polling the channel, so the message stays queued for a sibling, or for itself once
//! a connection closes, and it says so in the log. A message that arrives truncated anyway is
//! reported as a lost connection, never skipped in silence. The sending child can only know
//! that a connection is queued, and its log says "queued", not "adopted".
//!
//! The master keeps each generation's receive end while that generation has children, so messages
//! sent to a generation whose children have all just died wait for their respawned
//! replacements; when a generation ends for good, the master forwards whatever is still queued
//! to the current generation.

//!
//! # Targets
//!
//! A child takes a new target at any time, serving or draining; the latest one wins. A draining
//! child that gets a new target hands it what it still holds that waits for a request (fault 6
//! of issue 9: a reload that fails part-way sends the old generation's channel back). A
//! draining child relays what arrives on its own generation's channel to its target; a relay
//! that comes back to it (a target that leads to its own channel) stops it adopting until the
//! target changes, so a connection never circles between a child and its own channel.
//!
//! # Accept switches
//!
//! The control socket also carries the master's word to stop taking new clients, and to take
//! them again: a parallel reload stops the old children accepting once half the new children
//! serve, and a failed one lets them accept again. They are messages, not signals, so that a
//! stop and the start that undoes it arrive in order and never merge.
//!
//! # Layout
//!
//! - `wire.rs`: the socket pairs and the messages (tags, `SCM_RIGHTS`, truncation).
//! - `child_side.rs`: a child's ends ([`Handoff`]): reading targets from its control socket,
//!   sending connections while it drains, adopting them while it has room.
//! - `master_side.rs`: the master's ends ([`Channels`]): one channel per generation, targets
//!   sent before SIGHUP, what is left on a finished generation's channel passed on.

mod child_side;
mod master_side;
mod wire;

pub(crate) use child_side::HANDOFF_RETRY_POLL;
pub use child_side::{Adoption, Handoff, Sent, ADOPTION_DESCRIPTOR_RESERVE, HANDOFF_RETRY};
pub use master_side::Channels;
pub use wire::{
    descriptors_free, pair, receive_connection, receive_control, send_accepting, send_connection,
    send_parked, send_target, take_connection, Carried, Control, ReceiveError, Received,
    MAX_CARRIED_BYTES,
};
