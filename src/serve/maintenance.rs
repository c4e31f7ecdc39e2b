//! The child's maintenance thread: one periodic task (the recovery of abandoned uploads, see
//! `Api::recover_abandoned`), run once soon after the child starts and then every `period`
//! while it serves.
//!
//! Why a thread of its own: recovery must not wait for a child to start (an upload killed in a
//! draining child would otherwise block its image until the next reload), and it must not run on
//! the acceptor (which never blocks on SQLite or the disk) or take a worker from requests.
//!
//! The thread sleeps in `recv_timeout` on a channel whose only sender the child holds; the child
//! drops it at its drain ([`Maintenance::stop`]), which wakes the thread at once with
//! `Disconnected`, and joins it at the end ([`Maintenance::finish`]). So the thread stops within
//! one pass, never a whole period, after the drain starts. It knows nothing of the API: it runs a
//! closure, which keeps `serve` free of `api`.

use std::io;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

/// The maintenance thread of one child. Dropping it stops and joins it, like
/// [`Maintenance::finish`].
pub struct Maintenance {
    /// Dropped to stop the thread: the thread's `recv_timeout` then returns `Disconnected`.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Maintenance {
    /// Starts the thread. It calls `pass` with 0 after `first` (the child's full recovery at
    /// its start), then with the pass's number (1, 2, ...) every `period`. A stop during the
    /// first wait ends the thread without a pass.
    pub fn start(
        first: Duration,
        period: Duration,
        mut pass: impl FnMut(u64) + Send + 'static,
    ) -> io::Result<Self> {
        // Nothing is ever sent: the channel only carries its own closing.
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = thread::Builder::new()
            .name("maintenance".to_string())
            .spawn(move || {
                let mut number = 0u64;
                if first > Duration::ZERO {
                    if let Err(RecvTimeoutError::Disconnected) = stopped.recv_timeout(first) {
                        return;
                    }
                }
                pass(number);
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    number = number.wrapping_add(1);
                    pass(number);
                }
            })?;
        Ok(Maintenance {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop, without waiting: a pass in progress ends, no other starts.
    pub fn stop(&mut self) {
        self.stop.take();
    }

    /// Stops the thread and waits for it.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the maintenance thread panicked");
            }
        }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn passes_run_every_period_and_stop_ends_the_thread_without_waiting_a_period() {
        let passes = Arc::new(AtomicU64::new(0));
        let counted = passes.clone();
        let mut maintenance = Maintenance::start(
            Duration::from_millis(5),
            Duration::from_millis(5),
            move |number| {
                // Pass 0 at once, then numbered from 1, one after the other.
                assert_eq!(counted.fetch_add(1, Ordering::SeqCst), number);
            },
        )
        .expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        while passes.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "fewer than 3 passes in 10 s");
            thread::yield_now();
        }
        maintenance.stop();
        maintenance.finish();

        // A thread waiting out a long period stops as soon as it is told to.
        let idle =
            Maintenance::start(Duration::ZERO, Duration::from_secs(3600), |_| {}).expect("start");
        let started = Instant::now();
        idle.finish();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "finish took {:?}",
            started.elapsed()
        );

        // And one still waiting for its first pass, without running it.
        let ran = Arc::new(AtomicU64::new(0));
        let counted = ran.clone();
        let waiting = Maintenance::start(
            Duration::from_secs(3600),
            Duration::from_secs(1),
            move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        )
        .expect("start");
        let started = Instant::now();
        waiting.finish();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "finish took {:?}",
            started.elapsed()
        );
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "a pass ran before its first wait ended"
        );
    }
}
