//! The master's CPU priority, and a starting child's: a reload takes effect when the new
//! children serve, and under load a child that starts at the same priority as the threads
//! serving the load gets a small share of the CPUs (on two cores with 16 clients, about 1.3 ms
//! of CPU took 6 to 18 ms; the SIGHUP's first new response came 14 to 16 ms after it, against
//! 5 to 6 ms with this; docs/BENCHMARKS.md, "Reload under load").
//!
//! So the master runs [`BOOST`] nice levels above the nice it was started with, where the
//! system allows it (`CAP_SYS_NICE`, or `RLIMIT_NICE`: systemd's `LimitNICE=`, the init
//! script's `prlimit --nice`), and a child, which inherits the master's priority through
//! `fork()`, goes back to the nice the master was started with before it starts its first
//! thread: everything that serves runs at the operator's priority, only the master's loop and a
//! child's start (configuration, database, stores) run above it. Lowering a priority needs no
//! privilege, so a child can always go back.

use std::sync::atomic::{AtomicI32, Ordering};

/// How many nice levels the master runs above the nice it was started with.
pub const BOOST: i32 = 10;

/// The nice the master was started with, which children serve at; `i32::MIN` until
/// [`raise_master`] records it.
static NORMAL: AtomicI32 = AtomicI32::new(i32::MIN);

/// What [`raise_master`] did.
#[derive(Debug)]
pub enum Raised {
    /// The master runs at `to`; children serve at `from`.
    Yes { from: i32, to: i32 },
    /// Already at the highest priority there is (nice -20).
    AtTop { at: i32 },
    /// The system refused (no `CAP_SYS_NICE`, `RLIMIT_NICE` too low): everything runs at `at`.
    Refused { at: i32, error: std::io::Error },
}

/// Raises the calling process's priority by [`BOOST`] levels, if allowed, and records the nice
/// it had for its children. Called once by the master, before its first fork.
pub fn raise_master() -> Raised {
    let from = current();
    NORMAL.store(from, Ordering::Relaxed);
    let to = (from - BOOST).max(-20);
    if to == from {
        return Raised::AtTop { at: from };
    }
    // SAFETY: setpriority(2) on the calling thread, which in the single-threaded master is the
    // whole process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, to) } == 0 {
        Raised::Yes { from, to }
    } else {
        Raised::Refused {
            at: from,
            error: std::io::Error::last_os_error(),
        }
    }
}

/// Puts a child's calling thread back at the nice the master was started with; call it
/// before the child starts any thread, so that every thread that serves runs there. A child
/// of a master that did not record one (tests that run a child's code alone) keeps its nice.
pub fn child_serves_at_normal_priority() {
    let normal = NORMAL.load(Ordering::Relaxed);
    if normal == i32::MIN || current() == normal {
        return;
    }
    // SAFETY: setpriority(2) on the calling thread. Raising one's nice needs no privilege; a
    // failure would leave the child above its siblings' priority, which only a broken kernel
    // gives, and is not worth failing the start for.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, normal);
    }
}

/// The calling thread's nice value.
fn current() -> i32 {
    // getpriority(2) may return -1 as a value: errno says whether it failed. It cannot fail
    // for the calling thread, so read it as the value it returns.
    // SAFETY: plain system call.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}
