//! glint's integration tests: each one drives the real `glint-api` binary through real processes,
//! signals, sockets on 127.0.0.1 and files in a temporary directory.
//!
//! Modules:
//! - `util`: the harness (start a server, status file, signals, waits, a small HTTP client).
//! - `lifecycle`: start, stop, reload, respawn, bad configs: the master's behaviour.
//! - `http`: the HTTP/1.1 layer from a client's socket: bad requests, keep-alive, timeouts, garbage.

mod util;

mod lifecycle;
// Bad requests, keep-alive, pipelining, bodies, timeouts, starvation and garbage input.
mod http;
