//! The one `fork()`: turning an [`Action::Spawn`](super::machine::Action) into a child process,
//! and making sure the child never comes back into the master's code.
//!
//! # Fork hazards
//!
//! The master has no other thread, so the child's copy of memory is consistent and no lock is
//! held. The handled signals are blocked across `fork()`, so that no handler runs in the child
//! before it has removed the master's handlers (they write into the master's self-pipe); the child
//! unblocks them once its own are registered (see `child::run`).
//!
//! # The child never returns
//!
//! In the child, the stack above `spawn` is the master's loop, which owns descriptors (the
//! listeners, other children's pipes) by number. Returning or unwinding into it would run the
//! master's code in the child and close descriptor numbers the child may have reused. So the
//! child's whole life runs inside `catch_unwind` and ends in `_exit(2)`, whatever happens.
//!
//! Each child also gets a process group of its own: a terminal's hangup or a `kill -HUP -PGID`
//! aimed at the master's group reaches the master only, which then reloads as asked, instead of
//! every child draining at once with nowhere to hand its connections.

use std::net::TcpListener;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::{fork, setpgid, ForkResult, Pid};

use crate::config::Config;
use crate::handoff;
use crate::process::child;
use crate::process::error::SysError;
use crate::signals::{self, MasterRequest, SignalWatch};

/// Exit code of a child whose main thread panicked (sysexits' EX_SOFTWARE).
pub const EXIT_PANIC: i32 = 70;

/// What the master keeps of a forked child.
pub struct Forked {
    pub pid: Pid,
    /// Read end of the pipe on which the child reports ready (`R`) or why it cannot start
    /// (`E` and the reason).
    pub ready: OwnedFd,
    /// The master's end of the child's control socket, on which a reload sends a handoff
    /// target (see `handoff`).
    pub control: OwnedFd,
}

/// Everything one child is started with.
pub struct Spawn<'a> {
    pub config: &'a Arc<Config>,
    pub generation: u64,
    /// The how-many-th child started for this generation (1-based; 0 for a respawn), for the
    /// test hook `GLINT_FAULT_CHILD_START`.
    pub nth: usize,
    /// The generation's listeners, its own first (see `listener`, "Moving between overlapping
    /// addresses").
    pub listeners: Vec<&'a TcpListener>,
    /// The receive end of the generation's handoff channel.
    pub handoff_receive: BorrowedFd<'a>,
    /// The generation's metrics listener, when `[metrics]` is on.
    pub metrics_listener: Option<&'a TcpListener>,
    /// The child's gauge slot in the metrics block.
    pub metrics_slot: Option<usize>,
}

/// Forks one child. In the child this function never returns (see the module doc).
pub fn spawn(
    request: Spawn<'_>,
    master_signals: &mut SignalWatch<MasterRequest>,
) -> Result<Forked, SysError> {
    let purpose = format!("spawning a child for generation {}", request.generation);
    let (ready_read, ready_write) =
        nix::unistd::pipe().map_err(|errno| SysError::new("pipe()", &purpose, errno))?;
    let (control_master, control_child) = handoff::pair().map_err(|error| {
        SysError::from_io("socketpair(AF_UNIX, SOCK_SEQPACKET)", &purpose, &error)
    })?;
    let mask = signals::master_sigset();
    let mut old_mask = SigSet::empty();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask));
    // SAFETY: the master is single-threaded (module doc), so the child may run arbitrary code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ready_read);
            drop(control_master);
            master_signals.unregister();
            let start = child::Start {
                config: request.config.clone(),
                generation: request.generation,
                nth: request.nth,
                listeners: request
                    .listeners
                    .iter()
                    .map(|listener| listener.try_clone())
                    .collect(),
                ready: child::ReadyPipe::new(ready_write),
                signal_mask: old_mask,
                handoff_receive: request.handoff_receive.try_clone_to_owned().ok(),
                control: Some(control_child),
                metrics_listener: request
                    .metrics_listener
                    .map(|listener| listener.try_clone()),
                metrics_slot: request.metrics_slot,
            };
            let code = std::panic::catch_unwind(AssertUnwindSafe(|| {
                // Our own process group; failing that only loses the isolation described above.
                let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
                child::run(start)
            }))
            .unwrap_or(EXIT_PANIC);
            // The access lines still in their batch, which `_exit` would lose.
            crate::logging::flush();
            // SAFETY: _exit(2) ends the process without running the master's destructors or
            // atexit handlers, which is the point (module doc).
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            // The child does the same; doing it here too closes the window in which a signal to
            // the master's group would still reach it. Either may lose the race harmlessly.
            let _ = setpgid(child, child);
            Ok(Forked {
                pid: child,
                ready: ready_read,
                control: control_master,
            })
        }
        Err(errno) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            Err(SysError::new("fork()", purpose, errno))
        }
    }
}
