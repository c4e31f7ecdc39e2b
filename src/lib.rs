//! glint: an OpenStack Image API v2 (Glance) server that takes up every configuration change on
//! SIGHUP without failing a client request.
//!
//! # Layout
//!
//! - [`config`]: the options table, the INI loader and the validated, immutable [`config::Config`].
//! - [`master`]: the single-threaded parent: binds listeners, forks generations of children,
//!   reloads on SIGHUP, reaps and respawns, writes the pid and [`status`] files.
//! - [`child`]: a worker process: an [`acceptor`] thread and a [`pool`] of worker threads.
//! - [`http`]: our HTTP/1.1 layer on httparse: request heads, body decoders, response writer,
//!   and the per-connection serve loop.
//! - [`api`]: the Glance API as an `http::serve::Handler`.
//! - [`registry`]: image metadata in SQLite; [`store`]: image data on the filesystem;
//!   [`cache`]: copies of image data on a fast disk, for the `caching` flavors.
//! - [`control`]: the operator commands `glint-api reload|stop|status`, which signal the master
//!   and read its verdict from the status file; [`notify`]: systemd's notify protocol.
//! - [`signals`], [`listener`], [`logging`], [`timestamp`]: the small parts they share.
//!
//! docs/ARCHITECTURE.md has the bird's-eye view and the invariants.

pub mod acceptor;
pub mod api;
pub mod cache;
pub mod child;
pub mod config;
pub mod control;
pub mod handoff;
pub mod http;
pub mod listener;
pub mod logging;
pub mod master;
pub mod notify;
pub mod pool;
pub mod registry;
pub mod signals;
pub mod status;
pub mod store;
pub mod timestamp;
