//! A child's fixed pool of worker threads, fed connections by the acceptor over a bounded
//! crossbeam channel.
//!
//! A worker takes a connection whose request head has arrived, serves it (see
//! `http::serve::serve`), or one whose parked response the socket has room for again and goes
//! on sending it (`http::serve::send`), and sends it back to the acceptor with its disposition, waking the
//! acceptor's poll. The pool never grows: connections beyond what the workers can take wait in
//! the acceptor, and unaccepted ones wait in the listen backlog where another child may take them.
//! The acceptor ends the pool by dropping the job sender: each worker's `recv()` fails once the
//! queue is empty and the worker returns; a draining child exits without waiting for each
//! (`Pool::release`).
//!
//! The child starts the first worker itself and the others on a short-lived `pool-start`
//! thread, so that its ready report (and so a reload's effect) does not wait for them: starting
//! sixteen threads took about 3 ms of a 8 ms start on a busy 2-core machine, against 0.5 ms for
//! two (issue 13, part 1). Requests that come in the meantime wait in the channel for the
//! workers already running. A worker that cannot be started there is logged, and the child
//! serves with those it has.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::http::connection::Connection;
use crate::http::parked::{Ready, Resume, Work};
use crate::http::sending::{SendBudget, BUDGET_PER_WORKER};
use crate::http::serve::{self, Disposition, Drain, Handler, Settings};
use crate::signals::Waker;

/// A connection coming back from a worker.
pub struct Returned {
    pub connection: Connection,
    pub disposition: Disposition,
}

/// The worker threads of one child. They are never joined (see [`Pool::release`]), so their
/// handles are not kept: a dropped handle detaches its thread.
pub struct Pool {
    n_threads: usize,
}

impl Pool {
    /// Starts `n_threads` workers. Returns the pool and the sender the acceptor feeds; the
    /// channel holds at most one waiting connection per worker, so the acceptor sees "full" as
    /// "every worker is busy".
    pub fn start(
        n_threads: usize,
        handler: Arc<dyn Handler>,
        settings: Arc<Settings>,
        drain: Arc<Drain>,
        returns: Sender<Returned>,
        waker: Waker,
    ) -> std::io::Result<(Pool, Sender<Work>)> {
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Work>(n_threads);
        // What responses parked for want of socket room may hold in memory, together.
        let budget = SendBudget::new(n_threads.saturating_mul(BUDGET_PER_WORKER));
        let worker = Worker {
            jobs: jobs_rx,
            returns,
            handler,
            settings,
            drain,
            waker,
            budget,
        };
        worker.clone().spawn(0)?;
        thread::Builder::new()
            .name("pool-start".to_string())
            .spawn(move || {
                for index in 1..n_threads {
                    if let Err(error) = worker.clone().spawn(index) {
                        log::error!(
                            "started only {index} of {n_threads} worker threads: {error}; \
                                 serving with {index}. Lower worker_threads, or raise the limit \
                                 on processes and threads (ulimit -u, systemd TasksMax)"
                        );
                        break;
                    }
                }
            })?;
        Ok((Pool { n_threads }, jobs_tx))
    }

    /// Lets the workers go without waiting for each thread to end: for a child that is about
    /// to exit once its acceptor has returned, which it does only when every connection it gave
    /// a worker has come back (so each worker is past its last job, with nothing left but to
    /// see the closed channel and return). The threads end with the process. Joining sixteen
    /// of them one after the other took about 4 ms of an idle child's exit on a busy 2-core
    /// machine, and the old generation is gone only once its children have exited (issue 13,
    /// part 1). A worker that panicked was logged by the panic hook when it did.
    pub fn release(self) {
        log::debug!(
            "leaving {} worker thread(s) to end with the process",
            self.n_threads
        );
    }
}

/// One worker thread's share of the pool.
#[derive(Clone)]
struct Worker {
    jobs: Receiver<Work>,
    returns: Sender<Returned>,
    handler: Arc<dyn Handler>,
    settings: Arc<Settings>,
    drain: Arc<Drain>,
    waker: Waker,
    budget: Arc<SendBudget>,
}

impl Worker {
    fn spawn(self, index: usize) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || self.run())
    }

    fn run(self) {
        while let Ok(work) = self.jobs.recv() {
            let (connection, disposition) = match work {
                Work::Request(Ready {
                    mut connection,
                    head,
                }) => {
                    let disposition = serve::serve(
                        &mut connection,
                        head,
                        &*self.handler,
                        &self.settings,
                        &self.drain,
                        &self.budget,
                    );
                    (connection, disposition)
                }
                Work::Response(Resume {
                    mut connection,
                    sending,
                }) => {
                    let disposition =
                        serve::send(&mut connection, *sending, &self.settings, &self.budget);
                    (connection, disposition)
                }
            };
            // The acceptor owns the connection's next step; if it is gone (the child is ending),
            // dropping the connection here closes it.
            let _ = self.returns.send(Returned {
                connection,
                disposition,
            });
            self.waker.wake();
        }
    }
}
