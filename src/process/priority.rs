//! The master's CPU priority, and a starting child's: a reload takes effect when the new
//! children serve, and under load a child that starts at the same priority as the threads
//! serving the load gets a small share of the CPUs (on two cores with 16 clients, about 1.3 ms
//! of CPU took a median 7.4 ms; the SIGHUP's first new response came 12.5 to 14.1 ms after it,
//! against 5.6 to 6.8 ms with this; docs/BENCHMARKS.md, "Reload under load").
//!
//! So the master runs [`BOOST`] nice levels above the nice it was started with (at most at
//! -20), where the system allows it (`CAP_SYS_NICE`, or `RLIMIT_NICE`: systemd's `LimitNICE=`, the init
//! script's `prlimit --nice`), and a child, which inherits the master's priority through
//! `fork()`, goes back to the nice the master was started with before it starts its first
//! thread: everything that serves runs at the operator's priority, only the master's loop and a
//! child's start (configuration, database and its migration, stores) run above it. Lowering a priority needs no
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
    /// The master runs at `to`; children serve at `from`. `to` is `from - BOOST` (at most
    /// -20), or less of a boost where `RLIMIT_NICE` allows only that much.
    Yes { from: i32, to: i32 },
    /// Already at the highest priority there is (nice -20).
    AtTop { at: i32 },
    /// The system refused (no `CAP_SYS_NICE`, `RLIMIT_NICE` too low): everything runs at `at`.
    Refused { at: i32, error: std::io::Error },
}

/// Raises the calling process's priority by [`BOOST`] levels, or as many as `RLIMIT_NICE`
/// allows without `CAP_SYS_NICE`, and records the nice it had for its children. Called once by
/// the master, before its first fork.
pub fn raise_master() -> Raised {
    let from = current();
    NORMAL.store(from, Ordering::Relaxed);
    let to = (from - BOOST).max(-20);
    if to == from {
        return Raised::AtTop { at: from };
    }
    if set(to).is_ok() {
        return Raised::Yes { from, to };
    }
    let error = std::io::Error::last_os_error();
    // Without CAP_SYS_NICE, RLIMIT_NICE's ceiling (20 - limit) is as high as one may go.
    let ceiling = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NICE)
        .map(|(soft, _)| 20 - i64::try_from(soft).unwrap_or(i64::MAX).min(40))
        .unwrap_or(i64::MAX);
    match i32::try_from(ceiling) {
        Ok(ceiling) if ceiling > to && ceiling < from && set(ceiling).is_ok() => {
            Raised::Yes { from, to: ceiling }
        }
        _ => Raised::Refused { at: from, error },
    }
}

/// The `LimitNICE=` that lets an unprivileged master started at `at` rise [`BOOST`] levels:
/// a signed nice value, which systemd reads as one (an unsigned number would be the raw limit).
pub fn limit_nice_for(at: i32) -> String {
    format!("{:+}", (at - BOOST).max(-20))
}

/// Puts a child's calling thread back at the nice the master was started with, and lowers the
/// child's `RLIMIT_NICE` to that nice, so that nothing it runs can rise above it again; call it
/// before the child starts any thread, so that every thread that serves runs there. A child of
/// a master that did not record one (tests that run a child's code alone) keeps its nice.
pub fn child_serves_at_normal_priority() {
    let normal = NORMAL.load(Ordering::Relaxed);
    if normal == i32::MIN {
        return;
    }
    if current() != normal && set(normal).is_err() {
        // Raising one's own nice needs no privilege: only a broken kernel refuses it.
        log::warn!(
            "cannot put this child back at nice {normal}: {}",
            std::io::Error::last_os_error()
        );
    }
    let limit = u64::try_from(20 - normal).unwrap_or(0);
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NICE, limit, limit);
}

/// Sets the calling thread's nice.
fn set(nice: i32) -> Result<(), ()> {
    // SAFETY: setpriority(2) on the calling thread (in the single-threaded master, the whole
    // process).
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } {
        0 => Ok(()),
        _ => Err(()),
    }
}

/// The calling thread's nice value.
fn current() -> i32 {
    // getpriority(2) may return -1 as a value: errno, cleared first, says whether it failed.
    // SAFETY: plain system calls on this thread's errno and priority.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            // It cannot fail for the calling thread; if it ever did, take the default nice.
            return 0;
        }
        nice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_nice_to_allow_is_a_signed_nice_ten_below_at_most_minus_20() {
        assert_eq!(limit_nice_for(0), "-10");
        assert_eq!(limit_nice_for(15), "+5");
        assert_eq!(limit_nice_for(10), "+0");
        assert_eq!(limit_nice_for(-15), "-20");
    }
}
