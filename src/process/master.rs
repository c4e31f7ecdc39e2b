//! The master process: binds the listeners, forks generations of children, and replaces a
//! generation on SIGHUP without ever closing the listening socket.
//!
//! The master is single-threaded for its whole life, because `fork()` in a threaded process keeps
//! only the forking thread and leaves other threads' locks held in the child. It runs one loop
//! ([`Master::run`]): wait in poll(2) on the signal self-pipe and on the ready pipes of starting
//! children, then act, in this fixed order:
//!
//! 1. reap every exited child (`waitpid(-1, WNOHANG)` until none is left), because whether
//!    anything is still alive decides whether a stop can finish;
//! 2. a stop request (SIGINT now, SIGTERM/SIGQUIT gracefully) switches the sticky [`Phase`];
//! 3. a reload request (SIGHUP) starts a reload, or marks one more if a reload is under way;
//! 4. a log reopen request (SIGUSR1);
//! 5. timers: reload progress, respawns that are due, drains that overran their bound;
//! 6. the status file, if anything changed.
//!
//! # Reload
//!
//! A reload re-reads and validates the config before touching any child. A bad config changes
//! nothing: it is logged with file, line and option and recorded in the status file. A good one
//! binds its listener if the address changed, then forks generation N+1 and waits until each new
//! child has written its ready byte; only then does it send SIGHUP to the older generations, which
//! drain. If a new child dies or does not report ready in time, the new generation is drained
//! instead and the old one keeps serving. SIGHUPs that arrive during a reload coalesce into one
//! more reload once it ends.

use std::collections::VecDeque;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, sigprocmask, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::config::{self, Config, ReloadStrategy};
use crate::handoff;
use crate::logging;
use crate::operator::notify::Notifier;
use crate::operator::status::{self, ChildStatus, Outcome, ReloadStatus, Status};
use crate::process::child;
use crate::process::listener::Listener;
use crate::process::signals::{self, MasterRequest, SignalSpec, SignalWatch};
use crate::timestamp;

/// How long a new child may take to report ready before its generation is abandoned.
pub const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A child that exits sooner than this after its start "died young"; repeated young deaths back
/// off the respawn.
pub const YOUNG_DEATH: Duration = Duration::from_secs(2);

/// The first respawn delay after a young death; it doubles with each further one.
pub const RESPAWN_BACKOFF_START: Duration = Duration::from_millis(100);

/// The longest respawn delay.
pub const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The longest the master sleeps in poll(2) with nothing scheduled.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How the master exits: the process exit code.
pub type ExitCode = i32;

/// The server's phase. Stop phases are sticky: once entered, the loop acts on them at every
/// wake-up until no child is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Serving; reloads and respawns happen.
    Running,
    /// SIGTERM or SIGQUIT: every child was told to drain; exit once none is left, killing the
    /// stragglers at the deadline (`graceful_shutdown_timeout`, `None` = no bound).
    StoppingGracefully { deadline: Option<Instant> },
}

/// The life of one child, as the master sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildState {
    /// Forked; its ready byte has not arrived yet.
    Starting,
    /// Reported ready; serving its generation's listener.
    Serving,
    /// Told to drain (SIGHUP or SIGTERM); it exits by itself, or is killed at `deadline`.
    Draining { deadline: Option<Instant> },
}

/// One live child.
struct ChildHandle {
    pid: Pid,
    generation: u64,
    state: ChildState,
    started: Instant,
    /// Read end of the pipe the child writes its ready byte to; closed once read.
    ready: Option<OwnedFd>,
    /// The configured address of the listener it serves.
    listen: String,
    /// The master's end of the child's control socket, on which a reload sends the new
    /// generation's handoff channel (see `handoff`).
    control: Option<OwnedFd>,
}

/// A generation's handoff channel (see `handoff`): its children poll `receive`; older children
/// get a copy of `send` when this generation takes over.
struct Channel {
    generation: u64,
    receive: OwnedFd,
    send: OwnedFd,
}

/// A reload between its fork of the new generation and its verdict.
struct PendingReload {
    generation: u64,
    config: Arc<Config>,
    /// When the child being waited for must be ready (renewed at each rolling step).
    deadline: Instant,
    record: ReloadStatus,
    /// For `reload_strategy = rolling`: the replacement's progress; `None` for parallel.
    rolling: Option<Rolling>,
}

/// A rolling reload's progress: one new child is started, and once it is ready one old child
/// drains and must have exited before the next new child starts, so that at most `workers + 1`
/// children run at any time.
struct Rolling {
    /// New children forked so far.
    n_started: usize,
    /// The old children still to replace, in the order they will drain.
    old: VecDeque<Pid>,
    /// The old child draining in this step; the next step waits until it has exited.
    draining: Option<Pid>,
    /// How many old children this reload has drained: if it fails, as many are started again
    /// with the old config, so the server does not end up with fewer children.
    n_replaced: usize,
}

/// A child of the current generation that died and will be replaced at `due`.
struct Respawn {
    due: Instant,
    generation: u64,
}

/// The master's whole state.
pub struct Master {
    /// The config of the current generation.
    config: Arc<Config>,
    /// The path given on the command line; every reload re-reads it.
    config_path: PathBuf,
    /// The generation that serves new connections.
    generation: u64,
    /// The highest generation number handed out (failed reloads consume one too).
    last_generation: u64,
    phase: Phase,
    listeners: Vec<Listener>,
    children: Vec<ChildHandle>,
    /// One handoff channel per generation that has children or is about to.
    channels: Vec<Channel>,
    reload: Option<PendingReload>,
    /// A SIGHUP arrived while a reload was in progress: reload once more when it ends.
    reload_again: bool,
    respawns: VecDeque<Respawn>,
    /// Young deaths in a row, for the respawn backoff.
    young_deaths: u32,
    signals: SignalWatch<MasterRequest>,
    /// The pid file and status file this master wrote (they move when a reload changes them).
    pid_file: PathBuf,
    status_file: PathBuf,
    reloads_requested: u64,
    reloads_succeeded: u64,
    reloads_failed: u64,
    last_reload: Option<ReloadStatus>,
    /// Something changed since the status file was last written.
    status_dirty: bool,
    /// Tells systemd (`$NOTIFY_SOCKET`) when the server serves, reloads and stops.
    notifier: Notifier,
}

impl Master {
    /// Takes over from `main` with a validated config: registers the signals, binds the listener,
    /// writes the pid file and forks the first generation. Returns an error message for the
    /// operator when any of that fails; nothing is left running then.
    pub fn start(config: Config) -> Result<Master, String> {
        let config = Arc::new(config);
        // First, while nothing is forked yet: children must not inherit NOTIFY_SOCKET.
        let notifier = Notifier::from_env();
        let signals = SignalWatch::register(|spec: &SignalSpec| spec.master)
            .map_err(|error| format!("cannot register signal handlers: {error}"))?;
        raise_fd_limit();
        prepare_state_files(&config)?;
        check_storage(&config)?;
        write_pid_file(&config.pid_file)?;
        let listener =
            Listener::bind(&config.listen_address(), config.backlog).map_err(|error| {
                let _ = fs::remove_file(&config.pid_file);
                format!("{error}; is another server on that address?")
            })?;
        log::info!(
            "listening on {} (configured {})",
            listener.local,
            listener.configured
        );
        let mut master = Master {
            pid_file: config.pid_file.clone(),
            status_file: config.status_file.clone(),
            config_path: config.path.clone(),
            config,
            generation: 0,
            last_generation: 0,
            phase: Phase::Running,
            listeners: vec![listener],
            children: Vec::new(),
            channels: Vec::new(),
            reload: None,
            reload_again: false,
            respawns: VecDeque::new(),
            young_deaths: 0,
            signals,
            reloads_requested: 0,
            reloads_succeeded: 0,
            reloads_failed: 0,
            last_reload: None,
            status_dirty: true,
            notifier,
        };
        master.start_first_generation()?;
        Ok(master)
    }

    /// Forks generation 1 and waits for it like a reload does, so that `start` returns only once
    /// the server serves (or has failed to).
    fn start_first_generation(&mut self) -> Result<(), String> {
        let config = self.config.clone();
        self.last_generation = 1;
        for _ in 0..config.workers {
            if let Err(error) = self.spawn(1, &config) {
                self.kill_all(Signal::SIGKILL);
                self.reap_blocking();
                self.remove_state_files();
                return Err(error);
            }
        }
        let deadline = Instant::now() + CHILD_READY_TIMEOUT;
        loop {
            self.wait(deadline.saturating_duration_since(Instant::now()));
            self.read_ready_bytes();
            self.reap();
            let starting = self.children.iter().filter(|c| c.generation == 1);
            let (mut n_ready, mut n_alive) = (0, 0);
            for child in starting {
                n_alive += 1;
                if child.state == ChildState::Serving {
                    n_ready += 1;
                }
            }
            if n_ready == config.workers {
                break;
            }
            let requests = self.signals.take();
            if requests.contains(&MasterRequest::Reload) {
                // The config may have changed after it was read: reload once serving.
                self.reload_again = true;
            }
            let stop = requests
                .iter()
                .any(|r| matches!(r, MasterRequest::StopNow | MasterRequest::StopGracefully));
            if n_alive < config.workers || Instant::now() >= deadline || stop {
                self.kill_all(Signal::SIGKILL);
                self.reap_blocking();
                self.remove_state_files();
                return Err(if stop {
                    "stopped by a signal while starting".to_string()
                } else {
                    "the first generation of children did not start; see the lines above"
                        .to_string()
                });
            }
        }
        self.generation = 1;
        let serving = format!(
            "generation 1 serving with {} worker(s) on {}",
            config.workers,
            self.listen_addresses().join(", ")
        );
        log::info!("{serving}");
        self.write_status();
        self.notifier.ready(&serving);
        if self.reload_again {
            self.notifier.reloading("reloading: SIGHUP while starting");
        }
        Ok(())
    }

    /// The master loop. Returns the exit code once the server has stopped.
    pub fn run(mut self) -> ExitCode {
        loop {
            self.wait(self.next_timeout());
            self.read_ready_bytes();
            let requests = self.signals.take();
            self.reap();
            if requests.contains(&MasterRequest::StopNow) {
                log::info!("SIGINT: stopping now");
                self.notifier.stopping("stopping now (SIGINT)");
                self.kill_all(Signal::SIGKILL);
                self.reap_blocking();
                self.remove_state_files();
                log::info!("exiting");
                return 0;
            }
            if requests.contains(&MasterRequest::StopGracefully) && self.phase == Phase::Running {
                self.begin_graceful_stop();
            }
            if requests.contains(&MasterRequest::Reload) {
                self.reloads_requested += 1;
                if self.phase == Phase::Running {
                    // systemd waits for this after its SIGHUP, even one merged into the reload
                    // under way (see `notify`).
                    self.notifier.reloading(&format!(
                        "reloading {} (SIGHUP #{})",
                        self.config_path.display(),
                        self.reloads_requested
                    ));
                }
                match self.phase {
                    Phase::Running if self.reload.is_some() => {
                        if !self.reload_again {
                            log::info!("SIGHUP during a reload: one more reload will follow");
                        }
                        self.reload_again = true;
                    }
                    Phase::Running => self.begin_reload(),
                    Phase::StoppingGracefully { .. } => {
                        log::info!("SIGHUP ignored: the server is stopping")
                    }
                }
            }
            if requests.contains(&MasterRequest::ReopenLogs) {
                self.reopen_logs();
            }
            self.advance_reload();
            if self.phase == Phase::Running && self.reload.is_none() && self.reload_again {
                self.reload_again = false;
                self.begin_reload();
            }
            self.respawn_due();
            self.kill_overdue();
            self.close_unused_listeners();
            self.close_finished_channels();
            if let Phase::StoppingGracefully { .. } = self.phase {
                if self.children.is_empty() {
                    self.remove_state_files();
                    log::info!("all children have exited; exiting");
                    return 0;
                }
            }
            if self.status_dirty {
                self.write_status();
            }
        }
    }

    /// Sleeps in poll(2) until a signal, a ready byte or `timeout`.
    fn wait(&self, timeout: Duration) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(1 + self.children.len());
        fds.push(pollfd(self.signals.fd().as_raw_fd()));
        for child in &self.children {
            if let Some(ready) = &child.ready {
                fds.push(pollfd(ready.as_raw_fd()));
            }
        }
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call. EINTR (a signal)
        // is the common way out, and every outcome is handled by the caller re-checking state.
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis);
        }
    }

    /// The poll timeout: the nearest deadline among reload, respawns and drains, at most
    /// [`IDLE_POLL`].
    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut next = now + IDLE_POLL;
        if let Some(reload) = &self.reload {
            next = next.min(reload.deadline);
        }
        if let Some(respawn) = self.respawns.front() {
            next = next.min(respawn.due);
        }
        for child in &self.children {
            if let ChildState::Draining {
                deadline: Some(deadline),
            } = child.state
            {
                next = next.min(deadline);
            }
        }
        if let Phase::StoppingGracefully {
            deadline: Some(deadline),
        } = self.phase
        {
            // Past it, every child has been killed (`kill_overdue`); only SIGCHLD matters now.
            if deadline > now {
                next = next.min(deadline);
            }
        }
        next.saturating_duration_since(now)
    }

    /// Reads the ready byte of every starting child whose pipe is readable. EOF without a byte
    /// means the child died before it was ready; `reap` deals with that.
    fn read_ready_bytes(&mut self) {
        for child in &mut self.children {
            let Some(ready) = &child.ready else { continue };
            let mut fd = [pollfd(ready.as_raw_fd())];
            // SAFETY: a one-element pollfd array, zero timeout.
            let n = unsafe { libc::poll(fd.as_mut_ptr(), 1, 0) };
            if n <= 0 || fd[0].revents == 0 {
                continue;
            }
            let mut byte = [0u8; 1];
            let got = nix::unistd::read(ready.as_raw_fd(), &mut byte).unwrap_or(0);
            child.ready = None;
            if got == 1 && child.state == ChildState::Starting {
                child.state = ChildState::Serving;
                log::info!(
                    "child {} (generation {}) is ready",
                    child.pid,
                    child.generation
                );
                self.status_dirty = true;
            }
        }
    }

    /// Reaps every exited child, logs how it ended, and schedules a respawn where the rule says so.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(status) => status,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(error) => {
                    log::error!("waitpid(-1, WNOHANG) failed: {error}");
                    return;
                }
            };
            let (pid, code, signal) = match status {
                WaitStatus::Exited(pid, code) => (pid, Some(code), None),
                WaitStatus::Signaled(pid, signal, _) => (pid, None, Some(signal)),
                _ => continue,
            };
            let Some(index) = self.children.iter().position(|c| c.pid == pid) else {
                continue;
            };
            let child = self.children.remove(index);
            self.status_dirty = true;
            self.on_child_exit(child, code, signal);
        }
    }

    /// Waits for every child to exit (after they were killed).
    fn reap_blocking(&mut self) {
        while !self.children.is_empty() {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.children.retain(|c| c.pid != pid);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => {
                    self.children.clear();
                }
            }
        }
    }

    /// The respawn rule, written once: only a child of the current generation that was serving,
    /// that died unexpectedly, while the master is running, and that did not exit with
    /// [`child::EXIT_CANNOT_START`].
    fn on_child_exit(&mut self, child: ChildHandle, code: Option<i32>, signal: Option<Signal>) {
        let how = match (code, signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (_, Some(signal)) => format!("was killed by {}", signal.as_str()),
            _ => "ended".to_string(),
        };
        let lived = child.started.elapsed();
        match child.state {
            ChildState::Draining { .. } if code == Some(0) => {
                log::info!(
                    "child {} (generation {}) drained and exited",
                    child.pid,
                    child.generation
                );
                return;
            }
            ChildState::Draining { .. } => {
                log::warn!(
                    "child {} (generation {}) {how} while draining",
                    child.pid,
                    child.generation
                );
                return;
            }
            ChildState::Starting => {
                log::error!(
                    "child {} (generation {}) {how} before it was ready",
                    child.pid,
                    child.generation
                );
                // A starting child belongs to a pending reload (whose verdict `advance_reload`
                // gives) or to the current generation as a respawn, handled below.
            }
            ChildState::Serving => {
                log::error!(
                    "child {} (generation {}) {how} after {:.1} s",
                    child.pid,
                    child.generation,
                    lived.as_secs_f64()
                );
            }
        }
        let respawnable = self.phase == Phase::Running
            && child.generation == self.generation
            && code != Some(child::EXIT_CANNOT_START);
        if code == Some(child::EXIT_CANNOT_START) {
            log::error!(
                "child {} cannot start with this configuration; not respawning it. Fix the \
                 cause in the log above and reload",
                child.pid
            );
        }
        if !respawnable {
            return;
        }
        let delay = if lived < YOUNG_DEATH {
            self.young_deaths += 1;
            let exponent = self.young_deaths.saturating_sub(1).min(16);
            (RESPAWN_BACKOFF_START * 2u32.pow(exponent)).min(RESPAWN_BACKOFF_MAX)
        } else {
            self.young_deaths = 0;
            Duration::ZERO
        };
        if delay > Duration::ZERO {
            log::warn!(
                "children keep dying young; respawning in {} ms",
                delay.as_millis()
            );
        }
        self.respawns.push_back(Respawn {
            due: Instant::now() + delay,
            generation: child.generation,
        });
    }

    /// Forks the respawns that are due, if their generation is still the current one.
    fn respawn_due(&mut self) {
        let now = Instant::now();
        while let Some(respawn) = self.respawns.front() {
            if respawn.due > now {
                break;
            }
            let respawn = self.respawns.pop_front().expect("front exists");
            if self.phase != Phase::Running || respawn.generation != self.generation {
                continue;
            }
            let config = self.config.clone();
            match self.spawn(respawn.generation, &config) {
                Ok(pid) => log::info!(
                    "respawned child {pid} for generation {}",
                    respawn.generation
                ),
                Err(error) => {
                    log::error!("{error}; retrying");
                    self.respawns.push_back(Respawn {
                        due: now + RESPAWN_BACKOFF_MAX.min(Duration::from_secs(1)),
                        generation: respawn.generation,
                    });
                    break;
                }
            }
        }
    }

    /// Re-reads the config and, if it is valid, forks the new generation.
    fn begin_reload(&mut self) {
        let generation = self.last_generation + 1;
        let record = ReloadStatus {
            number: self.reloads_requested,
            generation,
            began_monotonic_ns: status::monotonic_ns(),
            started_at: timestamp::rfc3339_seconds(SystemTime::now()),
            finished_at: None,
            outcome: Outcome::InProgress,
            error: None,
        };
        log::info!(
            "SIGHUP: reloading {} for generation {generation}",
            self.config_path.display()
        );

        let loaded = match config::load(&self.config_path) {
            Ok(loaded) => loaded,
            Err(error) => {
                let message = error.to_string();
                log::error!(
                    "reload rejected, generation {} keeps serving: the config is invalid:\n{}",
                    self.generation,
                    message.trim_end()
                );
                self.finish_reload(record, Some(message));
                return;
            }
        };
        for warning in &loaded.warnings {
            log::warn!("{warning}");
        }
        let config = Arc::new(loaded.config);
        if let Err(error) = self.prepare_for(&config) {
            log::error!(
                "reload rejected, generation {} keeps serving: {error}",
                self.generation
            );
            self.finish_reload(record, Some(error));
            return;
        }
        self.last_generation = generation;
        let rolling = config.reload_strategy == ReloadStrategy::Rolling;
        // Parallel: the whole generation now. Rolling: one child; `advance_reload` does the rest.
        let n_first = if rolling { 1 } else { config.workers };
        for _ in 0..n_first {
            if let Err(error) = self.spawn(generation, &config) {
                log::error!(
                    "reload failed, generation {} keeps serving: {error}",
                    self.generation
                );
                self.drain_generation(generation, config.graceful_shutdown_timeout);
                self.finish_reload(record, Some(error));
                return;
            }
        }
        let rolling = rolling.then(|| Rolling {
            n_started: 1,
            old: self
                .children
                .iter()
                .filter(|c| c.generation < generation && c.state == ChildState::Serving)
                .map(|c| c.pid)
                .collect(),
            draining: None,
            n_replaced: 0,
        });
        self.reload = Some(PendingReload {
            generation,
            config,
            deadline: Instant::now() + CHILD_READY_TIMEOUT,
            record,
            rolling,
        });
        self.status_dirty = true;
    }

    /// One step of a rolling reload, called from `advance_reload` while no new child is
    /// starting: drain one old child once the newest new child is ready, start the next new
    /// child once that old child has exited. Returns true when every new child is started and
    /// ready (the reload can commit).
    fn advance_rolling(&mut self) -> bool {
        let Some(reload) = &mut self.reload else {
            return false;
        };
        let generation = reload.generation;
        let workers = reload.config.workers;
        let handoff = reload.config.reload_handoff;
        let bound = reload.config.graceful_shutdown_timeout;
        let Some(rolling) = &mut reload.rolling else {
            return false;
        };
        if let Some(pid) = rolling.draining {
            if self.children.iter().any(|c| c.pid == pid) {
                return false;
            }
            rolling.draining = None;
        }
        // The newest new child is ready: drain one old child for it (one per new child started,
        // so the count stays at workers + 1), if one is left to replace.
        let mut drained = None;
        while rolling.n_replaced < rolling.n_started {
            let Some(pid) = rolling.old.pop_front() else {
                break;
            };
            if self.children.iter().any(|c| c.pid == pid) {
                drained = Some(pid);
                break;
            }
        }
        if let Some(pid) = drained {
            rolling.draining = Some(pid);
            rolling.n_replaced += 1;
            if handoff {
                self.send_handoff_target_to(pid, generation);
            }
            self.drain_child(pid, bound);
            log::info!("rolling reload: child {pid} drains for generation {generation}");
            return false;
        }
        if rolling.n_started < workers {
            rolling.n_started += 1;
            reload.deadline = Instant::now() + CHILD_READY_TIMEOUT;
            let config = reload.config.clone();
            if let Err(error) = self.spawn(generation, &config) {
                // The next `advance_reload` sees fewer live children than started and fails
                // the reload.
                log::error!("rolling reload: {error}");
            }
            return false;
        }
        true
    }

    /// Does everything a new config needs that can fail, before any child is forked: the
    /// listener for a changed address, the backlog, the state file directories, the log file.
    fn prepare_for(&mut self, config: &Config) -> Result<(), String> {
        let address = config.listen_address();
        match self.listeners.iter().find(|l| l.configured == address) {
            Some(listener) => listener
                .set_backlog(config.backlog)
                .map_err(|error| error.to_string())?,
            None => {
                let listener = Listener::bind(&address, config.backlog).map_err(|error| {
                    format!("cannot listen on the new address: {error}; free the port or fix bind_host/bind_port")
                })?;
                log::info!(
                    "listening on {} (configured {}) for the new generation",
                    listener.local,
                    listener.configured
                );
                self.listeners.push(listener);
            }
        }
        prepare_state_files(config)?;
        check_storage(config)?;
        let destination = log_destination(config);
        // Opening the file checks that the new destination is usable; children open their own.
        if let Some(path) = &destination.file {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|error| {
                    format!(
                        "cannot open log file {}: {error}; fix log_file/log_dir",
                        path.display()
                    )
                })?;
        }
        Ok(())
    }

    /// Checks the pending reload: all new children ready (commit), one dead or the deadline
    /// passed (abort).
    fn advance_reload(&mut self) {
        let Some(reload) = &self.reload else { return };
        let generation = reload.generation;
        // A rolling reload expects only the children it has started so far.
        let workers = match &reload.rolling {
            Some(rolling) => rolling.n_started,
            None => reload.config.workers,
        };
        let (mut n_alive, mut n_ready) = (0, 0);
        for child in self.children.iter().filter(|c| c.generation == generation) {
            n_alive += 1;
            if child.state == ChildState::Serving {
                n_ready += 1;
            }
        }
        let complete = n_ready == workers;
        if complete && reload.rolling.is_some() {
            // Every child started so far is ready: the rolling reload takes its next step.
            if self.advance_rolling() {
                let reload = self.reload.take().expect("checked above");
                self.commit_reload(reload);
            }
            return;
        }
        let Some(reload) = &self.reload else { return };
        if complete {
            let reload = self.reload.take().expect("checked above");
            self.commit_reload(reload);
        } else if n_alive < workers || Instant::now() >= reload.deadline {
            let reload = self.reload.take().expect("checked above");
            let error = if n_alive < workers {
                format!(
                    "a child of generation {generation} exited before it was ready; see the log"
                )
            } else {
                format!(
                    "generation {generation} did not report ready within {} s",
                    CHILD_READY_TIMEOUT.as_secs()
                )
            };
            log::error!(
                "reload failed, generation {} keeps serving: {error}",
                self.generation
            );
            self.drain_generation(generation, reload.config.graceful_shutdown_timeout);
            if let Some(rolling) = &reload.rolling {
                // Put back what this reload took away: the old children it drained.
                let config = self.config.clone();
                for _ in 0..rolling.n_replaced {
                    if let Err(error) = self.spawn(self.generation, &config) {
                        log::error!(
                            "cannot start a replacement of generation {}: {error}",
                            self.generation
                        );
                    }
                }
            }
            self.finish_reload(reload.record, Some(error));
        }
    }

    /// The new generation is ready: it becomes current and every older generation drains.
    fn commit_reload(&mut self, reload: PendingReload) {
        let old = self.generation;
        let config = reload.config;
        if let Err(error) = logging::configure(&log_destination(&config), "master") {
            log::error!("{error}; logging stays where it was");
        }
        self.move_state_files(&config);
        self.generation = reload.generation;
        self.config = config.clone();
        self.respawns.clear();
        self.young_deaths = 0;
        if config.reload_handoff {
            self.send_handoff_targets(reload.generation);
        }
        let older: Vec<u64> = self
            .children
            .iter()
            .filter(|c| c.generation < reload.generation)
            .map(|c| c.generation)
            .collect();
        for generation in older {
            self.drain_generation(generation, config.graceful_shutdown_timeout);
        }
        log::info!(
            "reload succeeded: generation {} serving with {} worker(s) on {}; generation {old} draining",
            reload.generation,
            config.workers,
            self.listen_addresses().join(", ")
        );
        self.finish_reload(reload.record, None);
    }

    /// Records the end of a reload attempt in the counters and the status file, and tells systemd
    /// the server serves again, unless another reload follows at once (SIGHUPs that arrived
    /// during this one): systemd then sees one reload that ends with the last.
    fn finish_reload(&mut self, mut record: ReloadStatus, error: Option<String>) {
        if !(self.reload_again && self.phase == Phase::Running) {
            let verdict = match &error {
                None => format!(
                    "reload #{} succeeded: generation {} serving with {} worker(s)",
                    record.number, self.generation, self.config.workers
                ),
                Some(error) => format!(
                    "reload #{} failed, generation {} keeps serving: {}",
                    record.number,
                    self.generation,
                    error.lines().next().unwrap_or_default()
                ),
            };
            self.notifier.ready(&verdict);
        }
        record.finished_at = Some(timestamp::rfc3339_seconds(SystemTime::now()));
        match &error {
            None => {
                record.outcome = Outcome::Succeeded;
                self.reloads_succeeded += 1;
            }
            Some(_) => {
                record.outcome = Outcome::Failed;
                self.reloads_failed += 1;
            }
        }
        record.error = error;
        self.last_reload = Some(record);
        self.status_dirty = true;
    }

    /// Tells every child older than `generation` (serving or already draining) to hand its
    /// keep-alive connections to `generation`'s channel. Sent before the SIGHUP, so a child
    /// finds it queued when its drain begins. A child that cannot be told closes instead.
    fn send_handoff_targets(&mut self, generation: u64) {
        let Some(channel) = self.channels.iter().find(|c| c.generation == generation) else {
            return;
        };
        for child in self.children.iter().filter(|c| c.generation < generation) {
            let Some(control) = &child.control else {
                continue;
            };
            if let Err(error) = handoff::send_target(control.as_fd(), channel.send.as_fd()) {
                log::warn!(
                    "cannot send the handoff channel to child {} ({error}); it will close its \
                     idle connections instead",
                    child.pid
                );
            }
        }
    }

    /// Tells one child to hand its connections to `generation`'s channel.
    fn send_handoff_target_to(&self, pid: Pid, generation: u64) {
        let Some(channel) = self.channels.iter().find(|c| c.generation == generation) else {
            return;
        };
        let Some(control) = self
            .children
            .iter()
            .find(|c| c.pid == pid)
            .and_then(|c| c.control.as_ref())
        else {
            return;
        };
        if let Err(error) = handoff::send_target(control.as_fd(), channel.send.as_fd()) {
            log::warn!("cannot send the handoff channel to child {pid} ({error}); it will close its idle connections instead");
        }
    }

    /// Sends SIGHUP to one child and marks it draining.
    fn drain_child(&mut self, pid: Pid, bound: Option<Duration>) {
        let deadline = bound.map(|bound| Instant::now() + bound);
        if let Some(child) = self.children.iter_mut().find(|c| c.pid == pid) {
            if let Err(error) = kill(child.pid, Signal::SIGHUP) {
                log::error!("kill({}, SIGHUP) failed: {error}", child.pid);
            }
            child.state = ChildState::Draining { deadline };
            child.ready = None;
            self.status_dirty = true;
        }
    }

    /// Closes the handoff channels of generations that are over (no child left, neither current
    /// nor pending). Connections still queued on one are forwarded to the current generation,
    /// so none is lost to a race between the last child's exit and a late handoff.
    fn close_finished_channels(&mut self) {
        let current = self.generation;
        let pending = self.reload.as_ref().map(|r| r.generation);
        let children = &self.children;
        let (finished, kept): (Vec<Channel>, Vec<Channel>) =
            self.channels.drain(..).partition(|channel| {
                channel.generation != current
                    && Some(channel.generation) != pending
                    && !children.iter().any(|c| c.generation == channel.generation)
            });
        self.channels = kept;
        let target = self.channels.iter().find(|c| c.generation == current);
        for channel in finished {
            while let Ok(Some((fd, carried, first))) =
                handoff::receive_connection(channel.receive.as_fd())
            {
                let forwarded = target.is_some_and(|target| {
                    handoff::send_connection(target.send.as_fd(), fd.as_fd(), &carried, first)
                        .is_ok()
                });
                if !forwarded {
                    log::warn!(
                        "closed a connection left on generation {}'s handoff channel",
                        channel.generation
                    );
                }
            }
        }
    }

    /// Sends SIGHUP to every child of `generation` that is not draining yet.
    fn drain_generation(&mut self, generation: u64, bound: Option<Duration>) {
        let deadline = bound.map(|bound| Instant::now() + bound);
        for child in self
            .children
            .iter_mut()
            .filter(|c| c.generation == generation)
        {
            if matches!(child.state, ChildState::Draining { .. }) {
                continue;
            }
            if let Err(error) = kill(child.pid, Signal::SIGHUP) {
                log::error!("kill({}, SIGHUP) failed: {error}", child.pid);
            }
            child.state = ChildState::Draining { deadline };
            child.ready = None;
            self.status_dirty = true;
        }
    }

    /// SIGTERM or SIGQUIT: every child drains, bounded by `graceful_shutdown_timeout`.
    fn begin_graceful_stop(&mut self) {
        let bound = self.config.graceful_shutdown_timeout;
        log::info!(
            "stopping gracefully: draining {} child(ren){}",
            self.children.len(),
            match bound {
                Some(bound) => format!(", at most {} s", bound.as_secs()),
                None => String::new(),
            }
        );
        self.notifier
            .stopping("stopping gracefully: children are draining");
        let deadline = bound.map(|bound| Instant::now() + bound);
        self.phase = Phase::StoppingGracefully { deadline };
        self.reload = None;
        self.reload_again = false;
        self.respawns.clear();
        for child in &mut self.children {
            if let Err(error) = kill(child.pid, Signal::SIGTERM) {
                log::error!("kill({}, SIGTERM) failed: {error}", child.pid);
            }
            child.state = ChildState::Draining { deadline };
            child.ready = None;
        }
        self.status_dirty = true;
    }

    /// Kills the children whose drain overran its bound, naming them.
    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for child in &mut self.children {
            if let ChildState::Draining {
                deadline: Some(deadline),
            } = child.state
            {
                if now >= deadline {
                    log::warn!(
                        "child {} (generation {}) still draining at graceful_shutdown_timeout; killing it",
                        child.pid,
                        child.generation
                    );
                    let _ = kill(child.pid, Signal::SIGKILL);
                    // Killed once: the deadline has done its work. A child in uninterruptible
                    // sleep may take a while to die; the master waits for SIGCHLD rather than
                    // spinning on a deadline in the past.
                    child.state = ChildState::Draining { deadline: None };
                }
            }
        }
    }

    /// SIGUSR1: reopen our log file and tell every child to reopen its own.
    fn reopen_logs(&mut self) {
        match logging::reopen() {
            Ok(()) => log::info!("SIGUSR1: log file reopened"),
            Err(error) => log::error!("SIGUSR1: {error}"),
        }
        for child in &self.children {
            let _ = kill(child.pid, Signal::SIGUSR1);
        }
    }

    /// Sends `signal` to every child.
    fn kill_all(&self, signal: Signal) {
        for child in &self.children {
            let _ = kill(child.pid, signal);
        }
    }

    /// Closes the master's copy of every listener that neither the current config, a pending
    /// reload nor a child that still accepts (starting or serving) uses. Draining children hold
    /// their own copy until they stop accepting, which they do at once: closing ours as soon as
    /// a reload moves the address means the old address refuses new connections quickly instead
    /// of queueing them where nobody will accept them.
    fn close_unused_listeners(&mut self) {
        let current = self.config.listen_address();
        let pending = self.reload.as_ref().map(|r| r.config.listen_address());
        let children = &self.children;
        let before = self.listeners.len();
        self.listeners.retain(|listener| {
            let used = listener.configured == current
                || pending.as_deref() == Some(listener.configured.as_str())
                || children.iter().any(|c| {
                    c.listen == listener.configured
                        && matches!(c.state, ChildState::Starting | ChildState::Serving)
                });
            if !used {
                log::info!(
                    "closing listener {} (configured {}): no generation accepts on it any more",
                    listener.local,
                    listener.configured
                );
            }
            used
        });
        if self.listeners.len() != before {
            self.status_dirty = true;
        }
    }

    /// Forks one child of `generation` running `config`. Returns its pid.
    ///
    /// # Fork hazards
    ///
    /// The master has no other thread, so the child's copy of memory is consistent and no lock is
    /// held. The handled signals are blocked across `fork()` so that no handler runs in the child
    /// before it has removed the master's handlers (they write into the master's self-pipe); the
    /// child unblocks them once its own are registered (see `child::run`).
    fn spawn(&mut self, generation: u64, config: &Arc<Config>) -> Result<Pid, String> {
        if !self.channels.iter().any(|c| c.generation == generation) {
            let (receive, send) = handoff::pair().map_err(|error| error.to_string())?;
            self.channels.push(Channel {
                generation,
                receive,
                send,
            });
        }
        let address = config.listen_address();
        let listener = self
            .listeners
            .iter()
            .find(|l| l.configured == address)
            .ok_or_else(|| format!("no listener for {address}"))?;
        let (ready_read, ready_write) =
            nix::unistd::pipe().map_err(|error| format!("pipe() failed: {error}"))?;
        let (control_master, control_child) = handoff::pair().map_err(|error| error.to_string())?;
        let mask = signals::master_sigset();
        let mut old_mask = nix::sys::signal::SigSet::empty();
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask));
        // SAFETY: the master is single-threaded (module doc), so the child may run arbitrary code.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(ready_read);
                drop(control_master);
                self.signals.unregister();
                let handoff_receive = self
                    .channels
                    .iter()
                    .find(|c| c.generation == generation)
                    .and_then(|c| c.receive.try_clone().ok());
                let start = child::Start {
                    config: config.clone(),
                    generation,
                    listener: listener.socket.try_clone(),
                    ready: ready_write,
                    signal_mask: old_mask,
                    handoff_receive,
                    control: Some(control_child),
                };
                let code = child::run(start);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
                drop(ready_write);
                drop(control_child);
                log::info!("started child {child} for generation {generation}");
                self.children.push(ChildHandle {
                    pid: child,
                    generation,
                    state: ChildState::Starting,
                    started: Instant::now(),
                    ready: Some(ready_read),
                    listen: address,
                    control: Some(control_master),
                });
                self.status_dirty = true;
                Ok(child)
            }
            Err(error) => {
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
                Err(format!(
                    "fork() failed while spawning a child for generation {generation}: {error}"
                ))
            }
        }
    }

    /// A reload changed pid_file or status_file: write the new ones, remove the old ones.
    fn move_state_files(&mut self, config: &Config) {
        if config.pid_file != self.pid_file {
            match write_pid_file(&config.pid_file) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.pid_file);
                    log::info!(
                        "pid file moved from {} to {}",
                        self.pid_file.display(),
                        config.pid_file.display()
                    );
                    self.pid_file = config.pid_file.clone();
                }
                Err(error) => log::error!("{error}; keeping {}", self.pid_file.display()),
            }
        }
        if config.status_file != self.status_file {
            let _ = fs::remove_file(&self.status_file);
            self.status_file = config.status_file.clone();
        }
    }

    fn remove_state_files(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
        self.phase_stopped_status();
    }

    /// The final status document, so a reader that polls it sees "stopped" rather than a stale
    /// "running".
    fn phase_stopped_status(&mut self) {
        let mut status = self.status();
        status.phase = status::Phase::Stopped;
        status.children.clear();
        status.draining.clear();
        if let Err(error) = status::write(&self.status_file, &status) {
            log::error!("{error}");
        }
    }

    fn listen_addresses(&self) -> Vec<String> {
        let current = self.config.listen_address();
        self.listeners
            .iter()
            .filter(|l| l.configured == current)
            .map(|l| l.local.to_string())
            .collect()
    }

    fn status(&self) -> Status {
        Status {
            master_pid: std::process::id(),
            phase: match self.phase {
                Phase::Running if self.generation == 0 => status::Phase::Starting,
                Phase::Running => status::Phase::Running,
                Phase::StoppingGracefully { .. } => status::Phase::Stopping,
            },
            generation: self.generation,
            workers: self.config.workers,
            serving: self
                .children
                .iter()
                .filter(|c| c.generation == self.generation && c.state == ChildState::Serving)
                .count(),
            listen: self.listen_addresses(),
            children: self
                .children
                .iter()
                .map(|c| ChildStatus {
                    pid: c.pid.as_raw() as u32,
                    generation: c.generation,
                    state: match c.state {
                        ChildState::Starting => status::ChildState::Starting,
                        ChildState::Serving => status::ChildState::Serving,
                        ChildState::Draining { .. } => status::ChildState::Draining,
                    },
                })
                .collect(),
            draining: self
                .children
                .iter()
                .filter(|c| matches!(c.state, ChildState::Draining { .. }))
                .map(|c| c.pid.as_raw() as u32)
                .collect(),
            respawns: Vec::new(),
            reload_in_progress: self.reload.as_ref().map(|r| r.record.clone()),
            last_reload: self.last_reload.clone(),
            reloads_requested: self.reloads_requested,
            reloads_succeeded: self.reloads_succeeded,
            reloads_failed: self.reloads_failed,
            updated_at: timestamp::rfc3339_seconds(SystemTime::now()),
        }
    }

    fn write_status(&mut self) {
        self.status_dirty = false;
        if let Err(error) = status::write(&self.status_file, &self.status()) {
            log::error!("{error}");
        }
    }
}

/// Where the logs of a process running `config` go.
pub fn log_destination(config: &Config) -> logging::Destination {
    logging::Destination {
        file: config.log_file.clone(),
        also_stderr: config.use_stderr,
        debug: config.debug,
    }
}

/// Creates the directories of the pid and status files ("created on start", so a fresh checkout
/// runs with its state under var/).
fn prepare_state_files(config: &Config) -> Result<(), String> {
    for path in [&config.pid_file, &config.status_file] {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|error| {
                format!(
                    "cannot create directory {} for {}: {error}",
                    parent.display(),
                    path.display()
                )
            })?;
        }
    }
    if let Some(parent) = config.log_file.as_deref().and_then(Path::parent) {
        fs::create_dir_all(parent).map_err(|error| {
            format!("cannot create log directory {}: {error}", parent.display())
        })?;
    }
    Ok(())
}

/// Opens the store (creating missing data directories, checking they are writable), the image
/// cache folder when the flavor uses one (creating it, checking it is writable; no thread is
/// started) and the image database (creating and migrating it) once in the master, so that a bad
/// data directory, cache folder or database path fails the start or the reload before any child
/// is forked. All are closed again before any fork: a SQLite connection must not cross one.
fn check_storage(config: &Config) -> Result<(), String> {
    crate::store::Store::open(child::store_settings(config))
        .map_err(|error| format!("{error}; fix filesystem_store_datadir(s)"))?;
    if config.flavor.uses_cache() {
        crate::cache::Cache::open(child::cache_settings(config)).map_err(|error| {
            format!("{error}; fix [image_cache] image_cache_dir, or set [paste_deploy] flavor to no cache")
        })?;
    }
    crate::registry::Registry::open(&config.database_path).map_err(|error| {
        format!(
            "cannot open the image database {}: {error}; fix [database] connection",
            config.database_path.display()
        )
    })?;
    Ok(())
}

/// Writes our pid to `path` atomically, refusing if it names another live glint master.
fn write_pid_file(path: &Path) -> Result<(), String> {
    if let Ok(text) = fs::read_to_string(path) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            let ours = pid == std::process::id() as i32;
            if !ours && pid > 0 && kill(Pid::from_raw(pid), None).is_ok() {
                return Err(format!(
                    "pid file {} names process {pid}, which is running; stop it first, or remove \
                     the file if that process is not glint",
                    path.display()
                ));
            }
        }
    }
    let temporary = path.with_extension("pid.tmp");
    fs::write(&temporary, format!("{}\n", std::process::id()))
        .and_then(|()| fs::rename(&temporary, path))
        .map_err(|error| format!("cannot write pid file {}: {error}", path.display()))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: each connection costs a descriptor, and the
/// default soft limit (often 1024) is an accident of history, not a decision.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("setrlimit(RLIMIT_NOFILE, {hard}) failed: {error}");
            }
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
