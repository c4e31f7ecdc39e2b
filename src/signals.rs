//! The signals glint handles, what each asks of a master and of a child, and the self-pipe that
//! turns them into wake-ups of one poll loop.
//!
//! Handlers only set a flag and write a byte to a socket pair (signal-hook does both, async-signal
//! safely); the master loop and the child's acceptor poll the read end and act on the flags. No
//! logging, allocation or `waitpid` ever happens inside a handler.
//!
//! [`SIGNALS`] is the one table of signals: registration, the logs and docs/OPERATIONS.md follow it.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use libc::c_int;
use signal_hook::SigId;

/// One handled signal: its number, its name, what it asks of the master and of a child.
pub struct SignalSpec {
    pub signal: c_int,
    pub name: &'static str,
    pub master: Option<MasterRequest>,
    pub child: Option<ChildRequest>,
}

/// What a signal asks the master to do. Stop requests are sticky modes in the master; the others
/// are one-shot and cleared as the loop reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterRequest {
    /// SIGHUP: re-read the config and start a new generation.
    Reload,
    /// SIGTERM, SIGQUIT: let every child drain, then exit 0.
    StopGracefully,
    /// SIGINT: kill the children and exit at once.
    StopNow,
    /// SIGUSR1: reopen log files (ours and the children's).
    ReopenLogs,
    /// SIGCHLD: reap exited children.
    Reap,
}

/// What a signal asks a child to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildRequest {
    /// SIGHUP, SIGTERM, SIGQUIT: stop accepting, finish what was accepted, exit 0.
    Drain,
    /// SIGUSR1: reopen the log file.
    ReopenLogs,
}

/// The table. A child does not handle SIGINT: the master answers SIGINT by killing its children,
/// and a terminal's Ctrl-C, sent to the whole process group, must not make children exit before
/// the master has seen it.
pub static SIGNALS: &[SignalSpec] = &[
    SignalSpec {
        signal: libc::SIGHUP,
        name: "SIGHUP",
        master: Some(MasterRequest::Reload),
        child: Some(ChildRequest::Drain),
    },
    SignalSpec {
        signal: libc::SIGTERM,
        name: "SIGTERM",
        master: Some(MasterRequest::StopGracefully),
        child: Some(ChildRequest::Drain),
    },
    SignalSpec {
        signal: libc::SIGQUIT,
        name: "SIGQUIT",
        master: Some(MasterRequest::StopGracefully),
        child: Some(ChildRequest::Drain),
    },
    SignalSpec {
        signal: libc::SIGINT,
        name: "SIGINT",
        master: Some(MasterRequest::StopNow),
        child: None,
    },
    SignalSpec {
        signal: libc::SIGUSR1,
        name: "SIGUSR1",
        master: Some(MasterRequest::ReopenLogs),
        child: Some(ChildRequest::ReopenLogs),
    },
    SignalSpec {
        signal: libc::SIGCHLD,
        name: "SIGCHLD",
        master: Some(MasterRequest::Reap),
        child: None,
    },
];

/// The signals the master handles, as a set, for blocking them around `fork()`.
pub fn master_sigset() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    for spec in SIGNALS {
        if spec.master.is_some() {
            if let Ok(signal) = nix::sys::signal::Signal::try_from(spec.signal) {
                set.add(signal);
            }
        }
    }
    set
}

/// The name of a signal number, for logs ("signal 9" when it is not in the table).
pub fn name(signal: c_int) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(signal) => signal.as_str().to_string(),
        Err(_) => format!("signal {signal}"),
    }
}

/// Registered handlers for one role: a flag per request and the read end of the wake-up pipe.
///
/// Owning the registrations, it removes them when dropped or explicitly with [`Self::unregister`]
/// (a freshly forked child must do that first, or the master's handlers would go on writing into
/// the master's pipe).
pub struct SignalWatch<R: Copy + PartialEq + 'static> {
    /// One flag per distinct request, set by the handlers.
    flags: Vec<(R, Arc<AtomicBool>)>,
    /// Read end of the socket pair the handlers write to; non-blocking.
    wake_read: UnixStream,
    /// A write end kept to let other threads wake the same poll loop (see [`Waker`]).
    wake_write: UnixStream,
    ids: Vec<SigId>,
}

/// Wakes the loop that polls a [`SignalWatch`], from any thread.
#[derive(Clone)]
pub struct Waker {
    write: Arc<UnixStream>,
}

impl<R: Copy + PartialEq + 'static> SignalWatch<R> {
    /// Registers every signal of [`SIGNALS`] for which `request_of` gives a request.
    pub fn register(request_of: fn(&SignalSpec) -> Option<R>) -> io::Result<Self> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        let mut watch = SignalWatch {
            flags: Vec::new(),
            wake_read,
            wake_write,
            ids: Vec::new(),
        };
        for spec in SIGNALS {
            let Some(request) = request_of(spec) else {
                continue;
            };
            let flag = match watch.flags.iter().find(|(r, _)| *r == request) {
                Some((_, flag)) => flag.clone(),
                None => {
                    let flag = Arc::new(AtomicBool::new(false));
                    watch.flags.push((request, flag.clone()));
                    flag
                }
            };
            // The flag is set before the byte is written, so a loop woken by the byte sees it.
            watch
                .ids
                .push(signal_hook::flag::register(spec.signal, flag)?);
            watch.ids.push(signal_hook::low_level::pipe::register(
                spec.signal,
                watch.wake_write.try_clone()?,
            )?);
        }
        Ok(watch)
    }

    /// The fd to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake_read.as_fd()
    }

    /// A handle other threads use to wake the poll loop.
    pub fn waker(&self) -> io::Result<Waker> {
        Ok(Waker {
            write: Arc::new(self.wake_write.try_clone()?),
        })
    }

    /// Empties the wake-up pipe and returns the requests raised since the last call, each once,
    /// in table order. Clearing happens here, so a signal arriving during the caller's work is
    /// seen on the next call.
    pub fn take(&mut self) -> Vec<R> {
        let mut scratch = [0u8; 64];
        while let Ok(n) = (&self.wake_read).read(&mut scratch) {
            if n == 0 {
                break;
            }
        }
        self.flags
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|(request, _)| *request)
            .collect()
    }

    /// Removes the handlers' actions (closing their copies of the pipe). A freshly forked child
    /// calls this on the master's watch before anything else.
    pub fn unregister(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl<R: Copy + PartialEq + 'static> Drop for SignalWatch<R> {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl Waker {
    /// Writes one byte; a full pipe already holds a pending wake-up, so that error is ignored.
    pub fn wake(&self) {
        use std::io::Write;
        let _ = (&*self.write).write(&[1]);
    }
}
