//! An outage of a service glint depends on (Keystone, a PostgreSQL registry), logged so that the
//! operator learns of it at once without a line per failed request: at error once, then at most
//! once per [`OUTAGE_LOG_PERIOD`] with the number of requests answered 503 meanwhile, and at info
//! once it answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a continuing outage is logged again.
pub const OUTAGE_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Whether a service is failing, shared by the threads of one process.
pub struct Outage {
    /// What starts each line (`keystone`, `registry`).
    prefix: &'static str,
    /// The service, as the recovery line names it (`Keystone`, `the database`).
    service: &'static str,
    /// Set while the service fails, so that a success takes the lock only after a failure.
    failing: AtomicBool,
    state: Mutex<Option<State>>,
}

struct State {
    since: Instant,
    last_logged: Instant,
    /// 503s answered since the last line.
    n_unlogged: u64,
}

impl Outage {
    pub const fn new(prefix: &'static str, service: &'static str) -> Outage {
        Outage {
            prefix,
            service,
            failing: AtomicBool::new(false),
            state: Mutex::new(None),
        }
    }

    /// A request failed because of the service: `first` is the line that opens an outage
    /// (after the prefix); `detail` says what failed, for the later lines.
    pub fn failed(&self, first: impl FnOnce() -> String, detail: &str) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.failing.store(true, Ordering::Relaxed);
        match state.as_mut() {
            None => {
                log::error!("{}: {}", self.prefix, first());
                *state = Some(State {
                    since: now,
                    last_logged: now,
                    n_unlogged: 0,
                });
            }
            Some(outage) if now.duration_since(outage.last_logged) >= OUTAGE_LOG_PERIOD => {
                log::error!(
                    "{}: still unavailable after {} s ({detail}); {} more request(s) got 503",
                    self.prefix,
                    now.duration_since(outage.since).as_secs(),
                    outage.n_unlogged + 1
                );
                outage.last_logged = now;
                outage.n_unlogged = 0;
            }
            Some(outage) => outage.n_unlogged += 1,
        }
    }

    /// A request the service answered: ends an outage, with its line.
    pub fn recovered(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.failing.store(false, Ordering::Relaxed);
        if let Some(outage) = state.take() {
            log::info!(
                "{}: {} answers again, after {} s of failures",
                self.prefix,
                self.service,
                outage.since.elapsed().as_secs()
            );
        }
    }
}
