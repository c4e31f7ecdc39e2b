//! glint: an OpenStack Image API v2 (Glance) server that takes up every configuration change on
//! SIGHUP without failing a client request.
//!
//! # Layout
//!
//! - [`config`]: the options table, the INI loader and the validated, immutable [`config::Config`].
//! - [`process`]: the single-threaded master (binds listeners, forks generations of children,
//!   reloads on SIGHUP, reaps and respawns) and what a forked child does first.
//! - [`serve`]: inside a child, the acceptor thread and the worker threads; [`handoff`]: the
//!   passing of connections from one generation to the next, both sides.
//! - [`signals`]: the one table of handled signals, for the master and the children.
//! - [`http`]: our HTTP/1.1 layer on httparse: request heads, body decoders, response writer,
//!   and the per-connection serve loop.
//! - [`api`]: the Glance API as an `http::serve::Handler`; [`keystone`]: Keystone token
//!   validation for the keystone flavors, as keystonemiddleware's auth_token does it.
//! - [`policy`]: Glance's policy engine (oslo.policy's check language, Glance's default rules,
//!   the policy file), pure: what a caller may do to an image.
//! - [`format`]: format inspection of uploads while they stream (qcow2, vmdk, vhd, vhdx, iso,
//!   partitioned raw disks): `virtual_size`, and the refusal of mismatched or unsafe images.
//! - [`registry`]: image metadata in SQLite; [`store`]: image data on the filesystem;
//!   [`digest`]: md5 and sha2 of image data, in OpenSSL's libcrypto when the system has it;
//!   [`cache`]: copies of image data on a fast disk, for the `caching` flavors.
//! - [`operator`]: the commands `glint-api reload|stop|status`, the status file they read, and
//!   systemd's notify protocol.
//! - [`metrics`]: Prometheus counters in memory shared by every process of the tree, and their
//!   text exposition (a child's `serve::scrape` thread answers `GET /metrics`).
//! - [`logging`], [`timestamp`]: the small parts everyone shares; [`dynlib`]: libraries loaded
//!   with dlopen (libpq, libcrypto).
//!
//! docs/ARCHITECTURE.md has the bird's-eye view and the invariants.

/// glint's version, as `glint-api --version`, `--help`, the status file and the log's start line
/// give it (Cargo.toml's `version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod api;
pub mod cache;
pub mod config;
pub mod digest;
pub mod dynlib;
pub mod format;
#[cfg(test)]
mod generated_docs;
pub mod handoff;
pub mod http;
pub mod keystone;
pub mod logging;
pub mod metrics;
pub mod operator;
pub mod policy;
pub mod process;
pub mod registry;
pub mod serve;
pub mod signals;
pub mod store;
pub mod timestamp;
