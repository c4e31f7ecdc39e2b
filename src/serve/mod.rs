//! What serves inside a child: the acceptor thread, which owns every connection that waits
//! (for a first request, between requests, for room on a worker) and the listeners, and the
//! fixed pool of worker threads that run one request at a time.
//!
//! A child (`process::child`) starts both and joins them at the end of a drain; the master
//! never runs any of this.

pub mod acceptor;
pub mod pool;
