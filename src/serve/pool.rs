//! A child's fixed pool of worker threads, fed connections by the acceptor over a bounded
//! crossbeam channel ([`Jobs`]).
//!
//! A worker takes a connection whose request head has arrived, serves it (see
//! `http::serve::serve`), or one whose parked response the socket has room for again and goes
//! on sending it (`http::serve::send`), and sends it back to the acceptor with its disposition, waking the
//! acceptor's poll. The pool never grows: connections beyond what the workers can take wait in
//! the acceptor, and unaccepted ones wait in the listen backlog where another child may take them.
//! Dropping the job sender ends the pool: each worker's `recv()` fails once the queue is empty
//! and the worker returns. A draining child does not: it exits with its workers waiting
//! (`Pool::release`).
//!
//! The child starts the first worker itself and the others on a short-lived `pool-start`
//! thread, so that its ready report (and so a reload's effect) does not wait for them: starting
//! sixteen threads took about 3 ms of a 8 ms start on a busy 2-core machine, against 0.5 ms for
//! two (issue 13, part 1). `pool-start` waits until the acceptor has a second connection in
//! flight, or [`POOL_START_DELAY`] has passed, whichever comes first: a reload's first requests,
//! when one worker suffices, are then not slowed by sixteen thread starts on the same CPUs (an
//! idle reload's first response came about 2 ms sooner; docs/BENCHMARKS.md), and under load
//! nothing waits. Requests that come in the meantime wait in the channel for the workers
//! already running. A worker that cannot be started there is logged, and the child serves with
//! those it has.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::http::connection::Connection;
use crate::http::parked::{Ready, Resume, Work};
use crate::http::sending::{SendBudget, BUDGET_PER_WORKER};
use crate::http::serve::{self, Disposition, Drain, Handler, Settings};
use crate::signals::Waker;

/// The longest `pool-start` waits before it starts the other workers when no second
/// connection asks for one: past a reload's first responses, well before the next reload.
pub const POOL_START_DELAY: Duration = Duration::from_millis(50);

/// The acceptor's end of the pool: the job channel, and the call for the other workers.
pub struct Jobs {
    sender: Sender<Work>,
    /// Tells `pool-start` that a second connection is in flight; `None` once told (or in a
    /// pool without one).
    more: Option<Sender<()>>,
}

impl Jobs {
    /// Jobs for workers that all run already.
    pub fn new(sender: Sender<Work>) -> Jobs {
        Jobs { sender, more: None }
    }

    /// Hands `work` to a worker, or gives it back when every worker is busy (`Full`). The
    /// channel's own result, passed through: boxing it would cost an allocation per request.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, work: Work) -> Result<(), TrySendError<Work>> {
        self.sender.try_send(work)
    }

    /// Told the number of connections with workers after each dispatch: from two on, the
    /// first worker alone no longer serves them, so the others are started now.
    pub fn in_flight(&mut self, n: usize) {
        if n > 1 {
            if let Some(more) = self.more.take() {
                let _ = more.try_send(());
            }
        }
    }
}

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
    /// Starts `n_threads` workers: the first now, the others on `pool-start` once a second
    /// connection is in flight or after `start_delay` (the child gives [`POOL_START_DELAY`];
    /// see the module's comment). Returns the pool and the jobs the acceptor feeds; the channel holds at most one
    /// waiting connection per worker, so the acceptor sees "full" as "every worker is busy".
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        n_threads: usize,
        start_delay: Duration,
        handler: Arc<dyn Handler>,
        settings: Arc<Settings>,
        drain: Arc<Drain>,
        returns: Sender<Returned>,
        waker: Waker,
    ) -> std::io::Result<(Pool, Jobs)> {
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
        let (more_tx, more_rx) = crossbeam_channel::bounded::<()>(1);
        thread::Builder::new()
            .name("pool-start".to_string())
            .spawn(move || {
                // Told, or time is up: start them. Disconnected: the acceptor has ended (the
                // child is exiting), and the workers would only see a closed channel.
                if let Err(RecvTimeoutError::Disconnected) = more_rx.recv_timeout(start_delay) {
                    return;
                }
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
        let jobs = Jobs {
            sender: jobs_tx,
            more: (n_threads > 1).then_some(more_tx),
        };
        Ok((Pool { n_threads }, jobs))
    }

    /// Leaves the workers to end with the process, for a child about to exit once its acceptor
    /// has returned, which it does only when every connection it gave a worker has come back
    /// (so each worker waits for a job that will not come). The job channel is not closed:
    /// closed, it woke every worker at once to see it and return, sixteen threads ending beside
    /// the child's own exit on the same CPUs, about 1.7 ms of an idle child's exit on a 2-core
    /// machine (issue 13: the old generation is gone only once its children have exited); joining
    /// them one after the other took about 4 ms. `_exit` ends them where they wait. A worker
    /// that panicked was logged by the panic hook when it did.
    pub fn release(self, jobs: Jobs) {
        log::debug!(
            "leaving {} worker thread(s) to end with the process",
            self.n_threads
        );
        // `pool-start`, if it still waits, sees the call for workers gone and starts none.
        let Jobs { sender, more } = jobs;
        drop(more);
        std::mem::forget(sender);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Limits;
    use crate::http::response::Response;
    use crate::http::serve::Request;
    use crate::signals::SignalWatch;
    use std::time::Instant;

    struct Nothing;

    impl Handler for Nothing {
        fn handle(&self, _request: &mut Request<'_>) -> Response {
            Response::new(204)
        }
    }

    /// The threads of this process named `worker-N` (only `Pool` names threads so).
    fn workers() -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .filter(|name| name.starts_with("worker-"))
            .count()
    }

    fn wait_for_workers(n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while workers() != n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} workers, not {n}",
                workers()
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn start(delay: Duration) -> (Pool, Jobs) {
        let signals = SignalWatch::register(|_| None::<()>).expect("signal watch");
        let settings = Settings {
            limits: Limits::new(8192),
            keep_alive: true,
            header_timeout: Duration::from_secs(5),
            idle_timeout: None,
            body_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            send_min_rate: 0,
            spill_dir: None,
        };
        let (returns, _) = crossbeam_channel::unbounded();
        Pool::start(
            3,
            delay,
            Arc::new(Nothing),
            Arc::new(settings),
            Arc::new(Drain::default()),
            returns,
            signals.waker().expect("waker"),
        )
        .expect("start the pool")
    }

    /// One worker runs at once; the others start when a second connection is in flight,
    /// however long the delay, or after the delay when none is.
    #[test]
    fn the_other_workers_start_with_a_second_connection_in_flight_or_after_the_delay() {
        let (pool, mut jobs) = start(Duration::from_secs(3600));
        wait_for_workers(1, "the first worker, at once");
        jobs.in_flight(1);
        assert_eq!(
            workers(),
            1,
            "one connection in flight needs no other worker"
        );
        jobs.in_flight(2);
        wait_for_workers(3, "a second connection in flight");
        // Dropping the jobs ends the workers.
        drop((pool, jobs));
        wait_for_workers(0, "the jobs dropped");

        let (pool, jobs) = start(Duration::from_millis(20));
        wait_for_workers(3, "no second connection, the delay past");
        drop((pool, jobs));
        wait_for_workers(0, "the jobs dropped");
    }
}
