//! The process layer: everything about the tree of processes that serves, and nothing about
//! what they serve.
//!
//! - [`master`]: the single-threaded parent's loop, which binds listeners, forks generations of
//!   children, reloads on SIGHUP, reaps and respawns.
//! - [`child`]: what a forked child does between `fork()` and `exit`.
//! - [`signals`]: the one table of handled signals and the flag-and-pipe watch.
//! - [`listener`]: the listening sockets the master keeps across reloads.
//!
//! The operator's side of the same processes (the commands, the status file, systemd's notify
//! protocol) is in [`crate::operator`].

pub mod child;
pub mod listener;
pub mod master;
pub mod signals;
