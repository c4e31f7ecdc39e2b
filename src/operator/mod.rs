//! What an operator and a service manager see of a running server, and how they act on it.
//!
//! - [`control`]: the commands `glint-api reload|stop|status`, which find the master, signal it
//!   and read its verdict from the status file.
//! - [`directories`]: `--check-config`'s check that every directory the config names exists or
//!   can be created, and is writable by the user running the check.
//! - [`status`]: the status file, the master's only report: typed on both sides, written
//!   atomically by the master, read by the commands.
//! - [`notify`]: systemd's notify protocol (READY, RELOADING, STOPPING).
//! - [`state_file`]: how the pid and status files are written (atomically, never through a
//!   planted link) and which directories may hold them.
//!
//! Nothing here forks, reaps or serves; that is [`crate::process`].

pub mod control;
pub mod directories;
pub mod notify;
pub mod state_file;
pub mod status;
