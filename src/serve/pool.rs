//! A child's fixed pool of worker threads, fed connections by the acceptor over a bounded
//! crossbeam channel.
//!
//! A worker takes a connection whose request head has arrived, serves it (see
//! `http::serve::serve`), or one whose parked response the socket has room for again and goes
//! on sending it (`http::serve::send`), and sends it back to the acceptor with its disposition, waking the
//! acceptor's poll. The pool never grows: connections beyond what the workers can take wait in
//! the acceptor, and unaccepted ones wait in the listen backlog where another child may take them.
//! The acceptor ends the pool by dropping the job sender: each worker's `recv()` fails once the
//! queue is empty, the worker returns, and `Pool::join` collects them.
//!
//! The child starts the first worker itself and the others on a short-lived `pool-start`
//! thread, so that its ready report (and so a reload's effect) does not wait for them: starting
//! sixteen threads took about 3 ms of a 8 ms start on a busy 2-core machine, against 0.5 ms for
//! two (issue 13, part 1). Requests that come in the meantime wait in the channel for the
//! workers already running. A worker that cannot be started there is logged, and the child
//! serves with those it has.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::http::connection::Connection;
use crate::http::parked::{Ready, Resume, Work};
use crate::http::sending::{SendBudget, BUDGET_PER_WORKER};
use crate::http::serve::{self, Disposition, Handler, Settings};
use crate::signals::Waker;

/// A connection coming back from a worker.
pub struct Returned {
    pub connection: Connection,
    pub disposition: Disposition,
}

/// The worker threads of one child.
pub struct Pool {
    first: JoinHandle<()>,
    /// The `pool-start` thread, which returns the other workers' handles.
    rest: JoinHandle<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Starts `n_threads` workers. Returns the pool and the sender the acceptor feeds; the
    /// channel holds at most one waiting connection per worker, so the acceptor sees "full" as
    /// "every worker is busy".
    pub fn start(
        n_threads: usize,
        handler: Arc<dyn Handler>,
        settings: Arc<Settings>,
        draining: Arc<AtomicBool>,
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
            draining,
            waker,
            budget,
        };
        let first = worker.clone().spawn(0)?;
        let rest = thread::Builder::new()
            .name("pool-start".to_string())
            .spawn(move || {
                let mut threads = Vec::with_capacity(n_threads.saturating_sub(1));
                for index in 1..n_threads {
                    match worker.clone().spawn(index) {
                        Ok(thread) => threads.push(thread),
                        Err(error) => {
                            log::error!(
                                "started only {index} of {n_threads} worker threads: {error}; \
                                 serving with {index}. Lower worker_threads, or raise the limit \
                                 on processes and threads (ulimit -u, systemd TasksMax)"
                            );
                            break;
                        }
                    }
                }
                threads
            })?;
        Ok((Pool { first, rest }, jobs_tx))
    }

    /// Waits for every worker to finish (after the job sender was dropped). Workers that
    /// `pool-start` starts after that find the channel closed and return at once.
    pub fn join(self) {
        let rest = self.rest.join().unwrap_or_else(|_| {
            log::error!("the thread starting the worker threads panicked");
            Vec::new()
        });
        for thread in std::iter::once(self.first).chain(rest) {
            if thread.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
    }
}

/// One worker thread's share of the pool.
#[derive(Clone)]
struct Worker {
    jobs: Receiver<Work>,
    returns: Sender<Returned>,
    handler: Arc<dyn Handler>,
    settings: Arc<Settings>,
    draining: Arc<AtomicBool>,
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
                        &self.draining,
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
