//! A child's pool of worker threads, at most `worker_threads`, fed connections by the acceptor
//! over a bounded crossbeam channel ([`Jobs`]).
//!
//! A worker takes a connection whose request head has arrived, serves it (see
//! `http::serve::serve`), or one whose parked response the socket has room for again and goes
//! on sending it (`http::serve::send`), and sends it back to the acceptor with its
//! disposition, waking the acceptor's poll. The pool never grows beyond `worker_threads`:
//! connections beyond what the workers can take wait in the acceptor, and unaccepted ones wait
//! in the listen backlog where another child may take them. Dropping the job sender ends the
//! pool: each worker's `recv()` fails once the queue is empty and the worker returns. A
//! draining child does not: it exits with its workers waiting (`Pool::release`).
//!
//! Workers are started as connections need them, never stopped: the child starts the first
//! itself, before its ready report, and a `pool-start` thread starts one more each time the
//! acceptor has more connections in flight than there are workers, until the pool is full
//! (then it ends). A child that serves one client at a time keeps one worker: less memory, a
//! ready report that does not wait for sixteen thread starts (about 3 ms of an 8 ms start on a
//! busy 2-core machine), a reload's first responses that do not share the CPUs with them, and
//! an exit with fewer threads to end (issue 13; docs/BENCHMARKS.md). Requests that come while a
//! worker starts wait in the channel for the workers already running. A worker that cannot be
//! started is logged, and the child serves with those it has while `pool-start` tries again.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::http::connection::Connection;
use crate::http::parked::{Ready, Resume, Work};
use crate::http::sending::{SendBudget, BUDGET_PER_WORKER};
use crate::http::serve::{self, Disposition, Drain, Handler, Settings};
use crate::signals::Waker;

/// How often `pool-start` tries again to start a worker that could not be started.
const SPAWN_RETRY: Duration = Duration::from_millis(100);

/// The acceptor's end of the pool: the job channel, and the call for more workers.
pub struct Jobs {
    sender: Sender<Work>,
    /// How many workers the connections in flight have asked for so far (it only grows).
    asked: usize,
    /// Tells `pool-start` each new `asked`; `None` in a pool that cannot grow (one worker, or
    /// all of them started by `Jobs::new`'s caller), or once `pool-start` has ended.
    more: Option<Sender<usize>>,
    /// `worker_threads`.
    capacity: usize,
}

impl Jobs {
    /// Jobs for workers that all run already.
    pub fn new(sender: Sender<Work>) -> Jobs {
        Jobs {
            sender,
            asked: 0,
            more: None,
            capacity: 0,
        }
    }

    /// Hands `work` to a worker, or gives it back when every worker is busy (`Full`). The
    /// channel's own result, passed through: boxing it would cost an allocation per request.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, work: Work) -> Result<(), TrySendError<Work>> {
        self.sender.try_send(work)
    }

    /// Told the number of connections with workers after each dispatch: each needs a worker,
    /// up to the pool's capacity, so `pool-start` is asked for any that do not run yet. At most
    /// `capacity` counts are ever sent, each larger than the last.
    pub fn in_flight(&mut self, n: usize) {
        let n = n.min(self.capacity);
        if n <= self.asked {
            return;
        }
        self.asked = n;
        if let Some(more) = &self.more {
            if more.send(n).is_err() {
                // `pool-start` has ended: the pool is full.
                self.more = None;
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
    /// Starts the first of `n_threads` workers, and `pool-start` for the others (see the
    /// module's comment). Returns the pool and the jobs the acceptor feeds; the channel holds at
    /// most one waiting connection per worker the pool may have, so the acceptor sees "full" as
    /// "every worker the pool may have is busy".
    pub fn start(
        n_threads: usize,
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
        let mut more = None;
        if n_threads > 1 {
            let (more_tx, more_rx) = crossbeam_channel::unbounded::<usize>();
            thread::Builder::new()
                .name("pool-start".to_string())
                .spawn(move || worker.grow(&more_rx, n_threads))?;
            more = Some(more_tx);
        }
        let jobs = Jobs {
            sender: jobs_tx,
            asked: 1,
            more,
            capacity: n_threads,
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
        // `pool-start`, if it still waits, is left waiting too.
        std::mem::forget(jobs);
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

    /// `pool-start`'s loop: starts workers 1, 2, ... as the acceptor asks for them (each count
    /// on `more` larger than the last), up to `n_threads`, then ends. A worker that cannot be
    /// started is logged once and tried again every [`SPAWN_RETRY`] until it starts.
    fn grow(self, more: &Receiver<usize>, n_threads: usize) {
        let (mut started, mut target, mut failing) = (1, 1, false);
        loop {
            // After a failed start, try again every SPAWN_RETRY: a limit on threads
            // (uploads', imports', two generations') may be reached for a moment.
            let next = if failing {
                more.recv_timeout(SPAWN_RETRY)
            } else {
                more.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            match next {
                Ok(asked) => target = target.max(asked.min(n_threads)),
                Err(RecvTimeoutError::Timeout) => {}
                // The child is exiting, or its jobs are gone.
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while started < target {
                match self.clone().spawn(started) {
                    Ok(_) => {
                        if failing {
                            log::info!("started worker thread {} of {n_threads}", started + 1);
                            failing = false;
                        }
                        started += 1;
                    }
                    Err(error) => {
                        if !failing {
                            log::error!(
                                "cannot start worker thread {} of {n_threads}: \
                                 {error}; serving with {started} and trying again \
                                 every {} ms. Lower worker_threads, or raise the \
                                 limit on processes and threads (ulimit -u, \
                                 systemd TasksMax)",
                                started + 1,
                                SPAWN_RETRY.as_millis()
                            );
                            failing = true;
                        }
                        break;
                    }
                }
            }
            if started == n_threads {
                return;
            }
        }
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

    fn start(n_threads: usize) -> (Pool, Jobs) {
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
            n_threads,
            Arc::new(Nothing),
            Arc::new(settings),
            Arc::new(Drain::default()),
            returns,
            signals.waker().expect("waker"),
        )
        .expect("start the pool")
    }

    /// One worker runs at once; another starts for each connection in flight beyond the
    /// workers that run, up to the pool's capacity, and none ends when fewer are in flight.
    #[test]
    fn workers_start_as_connections_in_flight_need_them_up_to_the_capacity() {
        let (pool, mut jobs) = start(4);
        wait_for_workers(1, "the first worker, at once");
        jobs.in_flight(1);
        assert_eq!(
            workers(),
            1,
            "one connection in flight needs no other worker"
        );
        jobs.in_flight(2);
        wait_for_workers(2, "two connections in flight");
        jobs.in_flight(1);
        jobs.in_flight(3);
        wait_for_workers(3, "three connections in flight");
        jobs.in_flight(9);
        wait_for_workers(4, "nine connections in flight, four at most");
        // Dropping the jobs ends the workers.
        drop((pool, jobs));
        wait_for_workers(0, "the jobs dropped");
    }
}
