//! The process layer: everything about the tree of processes that serves, and nothing about
//! what they serve.
//!
//! - [`machine`]: the master's rules as a pure state machine (events in, actions out): reload
//!   and its verdict, respawn and backoff, drain deadlines, stop. No I/O; unit-tested alone.
//! - [`master`]: the single-threaded parent's loop, which gathers events (signals, ready pipes,
//!   exits, time), carries out the machine's actions, and owns the listeners, handoff channels,
//!   children's pipes, pid and status files.
//! - [`spawn`]: the one `fork()`, after which the child never returns into master code.
//! - [`priority`]: the master runs above the nice it was started with, and so does a child
//!   until it starts its threads, so that a reload under load takes effect at once.
//! - [`start_steps`]: what a child's start cost, step by step, for its ready log line.
//! - [`child`]: what a forked child does between `fork()` and `_exit`.
//! - [`listener`]: the listening sockets the master keeps across reloads.
//! - [`error`]: a failed system call, named with its errno.
//!
//! The operator's side of the same processes (the commands, the status file, systemd's notify
//! protocol) is in [`crate::operator`].

pub mod child;
pub mod error;
pub mod listener;
pub mod machine;
pub mod master;
pub mod priority;
pub mod spawn;
pub mod start_steps;
