//! What serves inside a child: the acceptor thread, which owns every connection that waits
//! (for a first request, between requests, for room on a worker) and the listeners, the
//! pool of worker threads (at most `worker_threads`, started as connections need them) that run
//! one request at a time, and the maintenance thread,
//! which runs the periodic recovery of abandoned uploads, and the metrics endpoint thread
//! (`scrape`) when `[metrics]` is on.
//!
//! A child (`process::child`) starts them and, at the end of a drain, joins them but the
//! workers and `pool-start`, which end with the process; the master never runs any of this.

pub mod acceptor;
pub mod maintenance;
pub mod pool;
pub mod scrape;
pub mod waiting;
