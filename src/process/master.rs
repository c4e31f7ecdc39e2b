//! The master process: the loop that gathers events and carries out the actions of the
//! [`Machine`], and owns every descriptor and file the master holds.
//!
//! The master is single-threaded for its whole life, because `fork()` in a threaded process keeps
//! only the forking thread and leaves other threads' locks held in the child. Its loop
//! ([`Master::run`]) waits in poll(2) on the signal self-pipe and on the ready pipes of starting
//! children, then turns what happened into events, in this fixed order:
//!
//! 1. ready pipes: a child that reported ready (or why it cannot start) before it died is seen
//!    to have done so;
//! 2. exits: every reaped child (`waitpid(-1, WNOHANG)` until none is left);
//! 3. signals: the requests raised since the last turn, in the signal table's order;
//! 4. a tick, for whatever deadline is due.
//!
//! Each event goes to the machine; each action that comes back is carried out here. Loading a
//! config and forking answer with an event of their own, handled before the next action.
//!
//! # Never blocking
//!
//! Nothing in the loop waits on a database, a disk, a file that can block, or a child: the
//! loop reaps with WNOHANG; a reload's config is read with `O_NONBLOCK` (a FIFO in its place is
//! refused, not waited on; see `config`); the storage a config names (data directories, the
//! database, the cache folder) is opened by the new children, which report a failure on their
//! ready pipe, never by the master once it runs. The master opens the storage once, at start,
//! before its loop, so that a bad data directory fails the start with a plain message.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::{self, Config, ReloadStrategy};
use crate::handoff;
use crate::logging;
use crate::operator::notify::Notifier;
use crate::operator::state_file;
use crate::operator::status::{self, ChildStatus, Outcome, ReloadStatus, RespawnStatus, Status};
use crate::process::child;
use crate::process::listener::{self, Listener};
use crate::process::machine::{
    self, Action, ChildSignal, ChildState, Event, Exit, Machine, Notice, Phase, Plan, Record,
};
use crate::process::spawn::{self, Forked};
use crate::signals::{MasterRequest, SignalSpec, SignalWatch};
use crate::timestamp;

/// The longest the master sleeps in poll(2) with nothing scheduled.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The most bytes a child's ready pipe carries (`R`, or `E` and a reason of at most
/// `PIPE_BUF`).
const READY_MESSAGE_MAX: usize = 4096;

/// The most connections the master takes from a listener it closes (`forward_queued`): a
/// backlog's worth, so the loop's work stays bounded.
const FORWARD_MAX: usize = 4096;

/// The file creation mask of the master and its children: no write for the group, nothing for
/// others (files 0640, directories 0750 at most).
pub const CREATION_MASK: libc::mode_t = 0o027;

/// How the master exits: the process exit code.
pub type ExitCode = i32;

/// What the master keeps of one live child besides what the machine knows.
struct ChildIo {
    /// Read end of the ready pipe; closed once read or at EOF.
    ready: Option<OwnedFd>,
    /// The master's end of the child's control socket (handoff targets go there).
    control: OwnedFd,
    /// Its gauge slot in the metrics block, zeroed when it is reaped (`metrics::block`).
    metrics_slot: Option<usize>,
}

/// The master's whole state: the machine, and the descriptors and files its decisions act on.
pub struct Master {
    machine: Machine,
    /// The path given on the command line; every reload re-reads it.
    config_path: PathBuf,
    /// The config of each generation that has children, is current, or is being started.
    configs: BTreeMap<u64, Arc<Config>>,
    /// The current generation (0 while the first one starts: then generation 1's config rules).
    current: u64,
    listeners: Vec<Listener>,
    /// The metrics listeners (`[metrics]`): the current one, and one a reload bound for a new
    /// address until no generation uses the old one.
    metrics_listeners: Vec<Listener>,
    /// The metrics listener (by its `requested` address) of each generation in `configs`.
    metrics_of: BTreeMap<u64, Option<SocketAddr>>,
    /// The listeners (by their `requested` address) of each generation in `configs`: its own
    /// first, then the overlapping sockets it takes over (`listener` module doc).
    listeners_of: BTreeMap<u64, Vec<SocketAddr>>,
    /// One handoff channel per generation that has children or is about to.
    channels: handoff::Channels,
    children: HashMap<Pid, ChildIo>,
    signals: SignalWatch<MasterRequest>,
    /// The pid file and status file this master writes (they move when a reload changes them).
    pid_file: PathBuf,
    status_file: PathBuf,
    /// The status file named by the config the last reload read, when it differs from
    /// `status_file`: the verdict of a reload that moves the status file must be found where
    /// the operator's new config says (`glint-api reload` looks there).
    requested_status_file: Option<PathBuf>,
    /// Tells systemd (`$NOTIFY_SOCKET`) when the server serves, reloads and stops.
    notifier: Notifier,
    /// The last generation whose children found every metrics gauge slot taken (it was warned).
    slots_warned_for: Option<u64>,
}

impl Master {
    /// Takes over from `main` with a validated config: registers the signals, checks the
    /// storage, binds the listener, writes the pid file and forks the first generation. Returns
    /// an error message for the operator when any of that fails; nothing is left running then.
    pub fn start(config: Config) -> Result<Master, String> {
        let config = Arc::new(config);
        // First, while nothing is forked yet: children must not inherit NOTIFY_SOCKET.
        let notifier = Notifier::from_env();
        restrict_creation_mask();
        let signals = SignalWatch::register(|spec: &SignalSpec| spec.master)
            .map_err(|error| format!("cannot register signal handlers: {error}"))?;
        raise_fd_limit();
        log_priority(super::priority::raise_master());
        // Before the first fork, so that every child shares it (`metrics::block` module doc).
        crate::metrics::install().map_err(|error| error.to_string())?;
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
        let metrics_listener = match config.metrics.listen_address() {
            None => None,
            Some(configured) => {
                let bound = Listener::bind(&configured, config.backlog).map_err(|error| {
                    let _ = fs::remove_file(&config.pid_file);
                    format!(
                        "cannot listen for metrics: {error}; fix [metrics] bind_host/bind_port or \
                         free the port"
                    )
                })?;
                log::info!(
                    "metrics: listening on {} (configured {})",
                    bound.local,
                    bound.configured
                );
                Some(bound)
            }
        };
        let now = Instant::now();
        let (machine, actions) = Machine::start(now, plan_of(&config, None));
        let mut master = Master {
            machine,
            config_path: config.path.clone(),
            pid_file: config.pid_file.clone(),
            status_file: config.status_file.clone(),
            requested_status_file: None,
            configs: BTreeMap::from([(1, config)]),
            current: 0,
            listeners_of: BTreeMap::from([(1, vec![listener.requested])]),
            listeners: vec![listener],
            metrics_of: BTreeMap::from([(1, metrics_listener.as_ref().map(|l| l.requested))]),
            metrics_listeners: metrics_listener.into_iter().collect(),
            channels: handoff::Channels::new(),
            children: HashMap::new(),
            signals,
            notifier,
            slots_warned_for: None,
        };
        if let Some(code) = master.carry_out(actions) {
            return Err(format!(
                "the first generation could not be forked (exit {code}); see the lines above"
            ));
        }
        Ok(master)
    }

    /// The master loop. Returns the exit code once the server has stopped.
    pub fn run(mut self) -> ExitCode {
        loop {
            self.wait();
            let mut events = self.read_ready_pipes();
            events.extend(self.reap());
            // Stop requests first: a SIGHUP and a SIGTERM taken in one wake-up must not fork a
            // generation only to drain it at once.
            let mut requests = self.signals.take();
            requests.retain(|request| *request != MasterRequest::Reap);
            requests.sort_by_key(|request| {
                !matches!(
                    request,
                    MasterRequest::StopNow | MasterRequest::StopGracefully
                )
            });
            events.extend(requests.into_iter().map(Event::Request));
            events.push(Event::Tick);
            for event in events {
                let actions = self.machine.handle(Instant::now(), event);
                if let Some(code) = self.carry_out(actions) {
                    return code;
                }
            }
            self.store_metrics();
            self.close_unused_listeners();
            self.close_finished_channels();
            self.forget_unused_configs();
        }
    }

    /// Carries out `actions` in order, feeding the events that loading and forking produce back
    /// to the machine. Returns the exit code once the machine says exit.
    fn carry_out(&mut self, actions: Vec<Action>) -> Option<ExitCode> {
        let mut queue = std::collections::VecDeque::from(actions);
        // The status file is rewritten once, after the batch, however many actions asked for
        // it: each fork's answer asks, and a write between two forks would delay the second
        // child of a reload by a whole file write (issue 13, part 1).
        let mut status_due = false;
        while let Some(action) = queue.pop_front() {
            let event = match action {
                Action::LoadConfig { generation } => Some(self.load_config(generation)),
                // A fork queued in this batch whose reason went away since (an earlier fork
                // failed the reload, a stop began) is not made.
                Action::Spawn { generation, .. } if !self.machine.wants_child_of(generation) => {
                    None
                }
                Action::Spawn {
                    generation,
                    nth,
                    attempt,
                } => Some(Event::Spawned {
                    generation,
                    attempt,
                    result: self.spawn(generation, nth).map(|pid| pid.as_raw()),
                }),
                Action::Signal { pid, signal } => {
                    self.signal(Pid::from_raw(pid), signal);
                    None
                }
                Action::SendHandoffTarget { pid, generation } => {
                    self.send_handoff_target(Pid::from_raw(pid), generation);
                    None
                }
                Action::SetAccepting { pid, accepting } => {
                    self.set_accepting(Pid::from_raw(pid), accepting);
                    None
                }
                Action::Commit { generation } => {
                    self.commit(generation);
                    None
                }
                Action::ReopenLog => {
                    match logging::reopen() {
                        Ok(()) => log::info!("SIGUSR1: log file reopened"),
                        Err(error) => log::error!("SIGUSR1: {error}"),
                    }
                    None
                }
                Action::Notify(notice) => {
                    match notice {
                        Notice::Ready(text) => self.notifier.ready(&text),
                        Notice::Reloading(text) => self.notifier.reloading(&text),
                        Notice::Stopping(text) => self.notifier.stopping(&text),
                    }
                    None
                }
                Action::WriteStatus => {
                    status_due = true;
                    None
                }
                Action::Exit(code) => {
                    if status_due {
                        self.write_status();
                    }
                    let _ = fs::remove_file(&self.pid_file);
                    log::info!("exiting");
                    return Some(code);
                }
            };
            if let Some(event) = event {
                let more = self.machine.handle(Instant::now(), event);
                // The answer's actions come before the rest of the batch.
                for action in more.into_iter().rev() {
                    queue.push_front(action);
                }
            }
        }
        if status_due {
            self.write_status();
        }
        None
    }

    /// Sleeps in poll(2) until a signal, a ready pipe, or the machine's next deadline.
    fn wait(&self) {
        let now = Instant::now();
        let timeout = self
            .machine
            .next_deadline()
            .map_or(IDLE_POLL, |deadline| {
                deadline.saturating_duration_since(now)
            })
            .min(IDLE_POLL);
        let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
        for io in self.children.values() {
            if let Some(ready) = &io.ready {
                fds.push(PollFd::new(ready.as_fd(), PollFlags::POLLIN));
            }
        }
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        // EINTR (a signal) is the common way out; every outcome is handled by gathering events.
        let _ = poll(&mut fds, PollTimeout::from(millis));
    }

    /// Reads the ready pipes that have something: `R` is ready, `E` and text is why the child
    /// cannot start, EOF means it died first (its exit comes from `reap`).
    fn read_ready_pipes(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        for (pid, io) in &mut self.children {
            events.extend(read_ready_pipe(*pid, io));
        }
        events
    }

    /// Reaps every exited child.
    fn reap(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return events,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    log::error!("waitpid(-1, WNOHANG) failed: {errno}");
                    return events;
                }
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, Exit::Code(code)),
                WaitStatus::Signaled(pid, signal, _) => {
                    (pid, Exit::Signal(signal.as_str().to_string()))
                }
                _ => continue,
            };
            // What it wrote on its ready pipe just before it died comes before its exit.
            if let Some(mut io) = self.children.remove(&pid) {
                events.extend(read_ready_pipe(pid, &mut io));
                // Dead: what it counted as in flight or parked is no more (block module doc).
                if let (Some(slot), Some(block)) = (io.metrics_slot, crate::metrics::block()) {
                    block.clear_slot(slot);
                }
            }
            events.push(Event::ChildExited {
                pid: pid.as_raw(),
                exit,
            });
        }
    }

    /// Re-reads the config for `generation` and does everything it needs that can fail before a
    /// child is forked: its listener, backlog, state file directories, log file.
    fn load_config(&mut self, generation: u64) -> Event {
        let result = match config::load(&self.config_path) {
            Err(error) => Err(error.to_string()),
            Ok(loaded) => {
                for warning in loaded.every_warning() {
                    log::warn!("{warning}");
                }
                let config = Arc::new(loaded.config);
                // The verdict goes where the new config says, too (see the field's doc).
                self.requested_status_file =
                    (config.status_file != self.status_file).then(|| config.status_file.clone());
                self.prepare_for(&config)
                    .map(|(listeners, metrics_listener)| {
                        let mut plan = plan_of(&config, Some(self.config()));
                        plan.listeners_kept =
                            self.listeners_of.get(&self.current).is_some_and(|current| {
                                current.iter().all(|key| listeners.contains(key))
                            });
                        self.configs.insert(generation, config);
                        self.listeners_of.insert(generation, listeners);
                        self.metrics_of.insert(generation, metrics_listener);
                        plan
                    })
            }
        };
        Event::ConfigLoaded { generation, result }
    }

    /// The listener for a changed address, the backlog, the state file directories, the log
    /// file: what a config needs that can fail, done before any child is forked. Returns the
    /// keys of the config's listeners: its own, then the overlapping ones its address covers,
    /// which its children take over so that nothing queued on them is ever reset.
    fn prepare_for(
        &mut self,
        config: &Config,
    ) -> Result<(Vec<SocketAddr>, Option<SocketAddr>), String> {
        let configured = config.listen_address();
        let addresses = listener::resolve(&configured).map_err(|error| {
            format!("cannot listen on the new address: {error}; fix bind_host/bind_port")
        })?;
        let key = match self.listeners.iter().find(|l| l.serves(&addresses)) {
            Some(listener) => {
                listener
                    .set_backlog(config.backlog)
                    .map_err(|error| error.to_string())?;
                listener.requested
            }
            None => {
                let address = addresses[0];
                // Moving to an overlapping address on the same port (listener module doc).
                let overlapping: Vec<&Listener> = self
                    .listeners
                    .iter()
                    .filter(|l| l.overlaps(address))
                    .collect();
                for listener in &overlapping {
                    listener
                        .allow_port_reuse()
                        .map_err(|error| error.to_string())?;
                }
                let listener = Listener::bind_address(
                    &configured,
                    address,
                    config.backlog,
                    !overlapping.is_empty(),
                )
                .map_err(|error| {
                    format!(
                        "cannot listen on the new address: {error}; free the port or fix \
                         bind_host/bind_port"
                    )
                })?;
                log::info!(
                    "listening on {} (configured {}) for the new generation",
                    listener.local,
                    listener.configured
                );
                let key = listener.requested;
                self.listeners.push(listener);
                key
            }
        };
        let mut keys = vec![key];
        keys.extend(
            self.listeners
                .iter()
                .filter(|l| l.requested != key && listener::covers(key, l.local))
                .map(|l| l.requested),
        );
        prepare_state_files(config)?;
        // Opening the files (O_NONBLOCK: a FIFO without a reader is refused, not waited on) and
        // connecting to syslog (a non-blocking datagram socket) checks that the new destination
        // is usable; children open their own.
        logging::Destination::of(config).check().map_err(|error| {
            format!(
                "{error}; fix log_file/log_dir, access_log_file, or use_syslog (is a syslog \
                     daemon listening on /dev/log?)"
            )
        })?;
        // Last: a metrics socket bound here stays open for the new generation.
        let metrics_key = self.prepare_metrics_listener(config)?;
        Ok((keys, metrics_key))
    }

    /// The metrics listener of a config: none when `[metrics] bind_port` is unset, the open one
    /// when it was bound for the same address, else a new one (a bind failure fails the reload,
    /// as any bad config does). Returns its key.
    fn prepare_metrics_listener(&mut self, config: &Config) -> Result<Option<SocketAddr>, String> {
        let Some(configured) = config.metrics.listen_address() else {
            return Ok(None);
        };
        let addresses = listener::resolve(&configured).map_err(|error| {
            format!("cannot listen for metrics: {error}; fix [metrics] bind_host/bind_port")
        })?;
        if let Some(open) = self.metrics_listeners.iter().find(|l| l.serves(&addresses)) {
            return Ok(Some(open.requested));
        }
        let bound = Listener::bind_address(&configured, addresses[0], config.backlog, false)
            .map_err(|error| {
                format!(
                    "cannot listen for metrics: {error}; free the port or fix [metrics] \
                     bind_host/bind_port"
                )
            })?;
        log::info!(
            "metrics: listening on {} (configured {}) for the new generation",
            bound.local,
            bound.configured
        );
        let key = bound.requested;
        self.metrics_listeners.push(bound);
        Ok(Some(key))
    }

    /// Forks the `nth` child of `generation`.
    fn spawn(&mut self, generation: u64, nth: usize) -> Result<Pid, String> {
        let config = self
            .configs
            .get(&generation)
            .cloned()
            .ok_or_else(|| format!("no config loaded for generation {generation}"))?;
        let handoff_receive = self
            .channels
            .receive_end(generation)
            .map_err(|error| error.to_string())?;
        let keys = self
            .listeners_of
            .get(&generation)
            .cloned()
            .unwrap_or_default();
        let listeners: Vec<&std::net::TcpListener> = keys
            .iter()
            .filter_map(|key| self.listeners.iter().find(|l| l.requested == *key))
            .map(|l| &l.socket)
            .collect();
        if listeners.is_empty() {
            return Err(format!("no listener for generation {generation}"));
        }
        let metrics_listener = self
            .metrics_of
            .get(&generation)
            .copied()
            .flatten()
            .and_then(|key| self.metrics_listeners.iter().find(|l| l.requested == key))
            .map(|l| &l.socket);
        // The lowest gauge slot no live child holds (a slot is zeroed as its child is reaped).
        let taken: std::collections::HashSet<usize> = self
            .children
            .values()
            .filter_map(|io| io.metrics_slot)
            .collect();
        let metrics_slot = crate::metrics::block().and_then(|block| block.hand_out_slot(&taken));
        // Once per generation, not once per child: a generation of 256 children would log 256.
        if metrics_slot.is_none() && self.slots_warned_for != Some(generation) {
            self.slots_warned_for = Some(generation);
            log::warn!(
                "metrics: all {} gauge slots are taken; the in-flight requests and parked \
                 connections of generation {generation}'s children that find none are not \
                 counted (too many draining generations: lower graceful_shutdown_timeout)",
                crate::metrics::block::MAX_SLOTS
            );
        }
        let request = spawn::Spawn {
            config: &config,
            generation,
            nth,
            listeners,
            handoff_receive,
            metrics_listener,
            metrics_slot,
        };
        let Forked {
            pid,
            ready,
            control,
        } = spawn::spawn(request, &mut self.signals).map_err(|error| error.to_string())?;
        log::info!("started child {pid} for generation {generation}");
        self.children.insert(
            pid,
            ChildIo {
                ready: Some(ready),
                control,
                metrics_slot,
            },
        );
        Ok(pid)
    }

    /// Stores the master's numbers in the metrics block: plain atomic stores, never a wait.
    fn store_metrics(&self) {
        let (_, succeeded, failed) = self.machine.reload_counts();
        let mut children = [0u64; 4];
        for child in self.machine.children() {
            let state = match child.state {
                ChildState::Starting { .. } => 0,
                ChildState::Serving => 1,
                ChildState::Draining { .. } => 2,
                ChildState::Killed => 3,
            };
            children[state] += 1;
        }
        crate::metrics::store_master_numbers(
            succeeded,
            failed,
            self.machine.generation(),
            children,
        );
    }

    fn signal(&self, pid: Pid, signal: ChildSignal) {
        // A child reaped earlier in this batch: its pid may already belong to another process.
        if !self.children.contains_key(&pid) {
            return;
        }
        let signal = match signal {
            ChildSignal::Drain => Signal::SIGHUP,
            ChildSignal::Stop => Signal::SIGTERM,
            ChildSignal::Kill => Signal::SIGKILL,
            ChildSignal::ReopenLog => Signal::SIGUSR1,
        };
        // ESRCH: it died and is about to be reaped; nothing to tell then.
        if let Err(errno) = kill(pid, signal) {
            if errno != Errno::ESRCH {
                log::error!("kill({pid}, {}) failed: {errno}", signal.as_str());
            }
        }
    }

    /// Tells one child to hand its keep-alive connections to `generation`'s channel. Sent before
    /// its SIGHUP, so the child finds it queued when its drain begins; a later one replaces it.
    fn send_handoff_target(&self, pid: Pid, generation: u64) {
        let Some(io) = self.children.get(&pid) else {
            return;
        };
        if let Err(error) = self.channels.send_target(io.control.as_fd(), generation) {
            log::warn!(
                "cannot send the handoff channel of generation {generation} to child {pid} \
                 ({error}); it will close its idle connections instead"
            );
        }
    }

    /// Tells a child to stop taking new clients, or to take them again. A message lost here
    /// costs time, never a request: a child that was to stop takes clients beside the new
    /// generation's, and one that was to take them again serves what it holds and drains at
    /// the next reload (both are logged).
    fn set_accepting(&self, pid: Pid, accepting: bool) {
        let Some(io) = self.children.get(&pid) else {
            return;
        };
        if let Err(error) = handoff::send_accepting(io.control.as_fd(), accepting) {
            let told = if accepting {
                "to take new clients again; it takes none until the next reload"
            } else {
                "to stop taking new clients; it takes them beside the new generation"
            };
            log::warn!("cannot tell child {pid} {told} ({error})");
        }
    }

    /// `generation` is now current: its logging, its pid and status files.
    fn commit(&mut self, generation: u64) {
        self.current = generation;
        let config = self.configs[&generation].clone();
        if generation > 1 {
            if let Err(error) = logging::configure(&logging::Destination::of(&config), "master") {
                log::error!("{error}; logging stays where it was");
            }
        }
        self.requested_status_file = None;
        self.move_state_files(&config);
        log::info!(
            "generation {generation} serves on {}",
            self.listen_addresses().join(", ")
        );
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

    /// The config whose options rule the master now: the current generation's, or generation
    /// 1's while it starts.
    fn config(&self) -> &Arc<Config> {
        &self.configs[&self.current.max(1)]
    }

    /// Closes the master's copy of every listener that no generation in use accepts on: not the
    /// current config's, not a pending reload's, not one a starting or serving child uses.
    /// Draining children hold their own copy until they stop accepting, which they do at once,
    /// so the old address refuses new connections quickly instead of queueing them where nobody
    /// will accept them.
    ///
    /// Whatever is queued on a listener when the master closes it would be reset by the last
    /// close (a failed reload's new socket, whose children all died; the old port after a
    /// move). So the master first accepts what is queued, without blocking, and passes it to the
    /// current generation's handoff channel as a connection yet to send its first request: the
    /// one moment the master accepts.
    fn close_unused_listeners(&mut self) {
        let current = self.current.max(1);
        let used: Vec<SocketAddr> = self
            .listeners_of
            .iter()
            .filter(|(generation, _)| {
                **generation == current || self.machine.generation_in_use(**generation, true)
            })
            .flat_map(|(_, keys)| keys.iter().copied())
            .collect();
        let (kept, closing): (Vec<Listener>, Vec<Listener>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|listener| used.contains(&listener.requested));
        self.listeners = kept;
        // A metrics listener no generation uses closes (a scrape queued on it is reset: the
        // scraper tries again at its next interval, on the new address).
        let used_metrics: Vec<SocketAddr> = self
            .metrics_of
            .iter()
            .filter(|(generation, _)| {
                **generation == current || self.machine.generation_in_use(**generation, true)
            })
            .filter_map(|(_, key)| *key)
            .collect();
        self.metrics_listeners.retain(|listener| {
            let used = used_metrics.contains(&listener.requested);
            if !used {
                log::info!(
                    "metrics: closing listener {} (configured {}): no generation uses it any more",
                    listener.local,
                    listener.configured
                );
            }
            used
        });
        for listener in closing {
            let n_forwarded = self.forward_queued(&listener);
            log::info!(
                "closing listener {} (configured {}): no generation accepts on it any more{}",
                listener.local,
                listener.configured,
                if n_forwarded > 0 {
                    format!("; {n_forwarded} queued connection(s) passed to the current generation")
                } else {
                    String::new()
                }
            );
        }
    }

    /// Accepts what is queued on `listener` (at most [`FORWARD_MAX`]) and passes it to the
    /// current generation; returns how many went. What cannot go is closed, as the listener's
    /// close would have done.
    fn forward_queued(&self, listener: &Listener) -> usize {
        let current = self.current.max(1);
        let keepidle = self.config().tcp_keepidle;
        let mut n_forwarded = 0;
        for _ in 0..FORWARD_MAX {
            let Ok((stream, _)) = listener.socket.accept() else {
                break;
            };
            let prepared = crate::http::connection::prepare_accepted(&stream, keepidle)
                .and_then(|()| stream.set_nonblocking(true));
            let sent =
                prepared.is_ok() && self.channels.pass_new_connection(current, stream.as_fd());
            if sent {
                n_forwarded += 1;
            } else {
                log::warn!(
                    "closed a connection queued on listener {} as it closed: the current \
                     generation's handoff channel did not take it",
                    listener.local
                );
            }
        }
        n_forwarded
    }

    /// Closes the handoff channels of generations that are over (no child left, neither current
    /// nor pending), passing what is still queued on them to the current generation.
    fn close_finished_channels(&mut self) {
        let machine = &self.machine;
        self.channels.close_finished(
            |generation| machine.generation_in_use(generation, false),
            machine.generation(),
        );
    }

    /// Drops the configs of generations nothing uses any more.
    fn forget_unused_configs(&mut self) {
        let machine = &self.machine;
        let current = self.current.max(1);
        let in_use = |generation: &u64| {
            *generation == current || machine.generation_in_use(*generation, false)
        };
        self.configs.retain(|generation, _| in_use(generation));
        self.listeners_of.retain(|generation, _| in_use(generation));
        self.metrics_of.retain(|generation, _| in_use(generation));
    }

    fn listen_addresses(&self) -> Vec<String> {
        let key = self
            .listeners_of
            .get(&self.current.max(1))
            .and_then(|keys| keys.first())
            .copied();
        self.listeners
            .iter()
            .filter(|l| Some(l.requested) == key)
            .map(|l| l.local.to_string())
            .collect()
    }

    /// The status document, built from the machine's state.
    fn status(&self) -> Status {
        let now = Instant::now();
        let clock = Clock::now(now);
        let machine = &self.machine;
        let generation = machine.generation();
        let (requested, succeeded, failed) = machine.reload_counts();
        let children = machine.children();
        Status {
            master_pid: std::process::id(),
            version: crate::VERSION.to_string(),
            phase: match machine.phase() {
                Phase::Starting => status::Phase::Starting,
                Phase::Running => status::Phase::Running,
                Phase::Stopping | Phase::Exiting { .. } => status::Phase::Stopping,
                Phase::Exited => status::Phase::Stopped,
            },
            generation,
            workers: self.config().workers,
            // Every ready child that is not draining accepts: during a reload that includes
            // the new generation's ready children.
            serving: children
                .iter()
                .filter(|c| c.state == ChildState::Serving)
                .count(),
            listen: self.listen_addresses(),
            children: if machine.phase() == Phase::Exited {
                Vec::new()
            } else {
                children
                    .iter()
                    .map(|c| ChildStatus {
                        pid: c.pid as u32,
                        generation: c.generation,
                        state: match c.state {
                            ChildState::Starting { .. } => status::ChildState::Starting,
                            ChildState::Serving => status::ChildState::Serving,
                            ChildState::Draining { .. } => status::ChildState::Draining,
                            ChildState::Killed => status::ChildState::Killed,
                        },
                    })
                    .collect()
            },
            draining: children
                .iter()
                .filter(|c| matches!(c.state, ChildState::Draining { .. }))
                .map(|c| c.pid as u32)
                .collect(),
            respawns: machine
                .respawns()
                .iter()
                .map(|r| RespawnStatus {
                    generation: r.generation,
                    attempt: r.attempt + 1,
                    due_in_ms: r.due.saturating_duration_since(now).as_millis() as u64,
                    reason: r.reason.clone(),
                })
                .collect(),
            reload_in_progress: machine
                .reload_in_progress()
                .map(|record| clock.record(record)),
            last_reload: machine.last_reload().map(|record| clock.record(record)),
            reloads_requested: requested,
            reloads_succeeded: succeeded,
            reloads_failed: failed,
            updated_at: timestamp::rfc3339_seconds(clock.wall),
        }
    }

    /// Writes the status file, and the one a reload's config names if it differs, up to and
    /// including that reload's verdict (then that file is left as the record of it).
    fn write_status(&mut self) {
        // First, so that whoever reads a verdict in the status file finds it in a scrape too.
        self.store_metrics();
        let status = self.status();
        for path in std::iter::once(&self.status_file).chain(&self.requested_status_file) {
            if let Err(error) = status::write(path, &status) {
                log::error!("{error}");
            }
        }
        if self.machine.reload_in_progress().is_none() {
            self.requested_status_file = None;
        }
    }
}

/// Reads one child's ready pipe if it has something (see `Master::read_ready_pipes`).
fn read_ready_pipe(pid: Pid, io: &mut ChildIo) -> Option<Event> {
    let ready = io.ready.as_ref()?;
    let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
    if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
        return None;
    }
    let mut message = vec![0u8; READY_MESSAGE_MAX];
    let n = nix::unistd::read(ready.as_raw_fd(), &mut message).unwrap_or(0);
    io.ready = None;
    let pid = pid.as_raw();
    match message[..n].split_first() {
        Some((b'R', _)) => Some(Event::ChildReady { pid }),
        Some((b'E', reason)) => Some(Event::ChildFailedToStart {
            pid,
            reason: String::from_utf8_lossy(reason).into_owned(),
        }),
        _ => None,
    }
}

/// One reading of the clocks, to turn the machine's `Instant`s into the status file's wall-clock
/// times and CLOCK_MONOTONIC nanoseconds.
struct Clock {
    now: Instant,
    wall: SystemTime,
    monotonic_ns: u64,
}

impl Clock {
    fn now(now: Instant) -> Clock {
        Clock {
            now,
            wall: SystemTime::now(),
            monotonic_ns: status::monotonic_ns(),
        }
    }

    fn wall_of(&self, at: Instant) -> String {
        timestamp::rfc3339_seconds(self.wall - self.now.saturating_duration_since(at))
    }

    fn record(&self, record: &Record) -> ReloadStatus {
        let ago = self.now.saturating_duration_since(record.began);
        ReloadStatus {
            number: record.number,
            generation: record.generation,
            began_monotonic_ns: self.monotonic_ns.saturating_sub(ago.as_nanos() as u64),
            started_at: self.wall_of(record.began),
            finished_at: record.finished.map(|at| self.wall_of(at)),
            outcome: match &record.result {
                None => Outcome::InProgress,
                Some(None) => Outcome::Succeeded,
                Some(Some(_)) => Outcome::Failed,
            },
            error: record.result.clone().flatten(),
        }
    }
}

/// What the machine needs of a config, `current` being the config it would replace.
fn plan_of(config: &Config, current: Option<&Config>) -> Plan {
    Plan {
        workers: config.workers,
        rolling: config.reload_strategy == ReloadStrategy::Rolling,
        handoff: config.reload_handoff,
        drain_bound: config.graceful_shutdown_timeout,
        access_changed: current
            .is_some_and(|current| current.auth_strategy != config.auth_strategy),
        // Set by the caller, which knows the listeners.
        listeners_kept: true,
    }
}

/// Creates the directories of the pid and status files and of the log file ("created on
/// start", so a fresh checkout runs with its state under var/).
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
            state_file::check_directory(parent)?;
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
/// cache folder when the flavor uses one, and the image database (creating and migrating it)
/// once, at start, before the loop and before any fork, so that a bad data directory, cache
/// folder or database path fails the start with a plain message. All are closed again before
/// any fork: a SQLite connection must not cross one. Reloads leave this to the new children
/// (module doc, "Never blocking").
fn check_storage(config: &Config) -> Result<(), String> {
    child::open_stores(config)?;
    if config.flavor.uses_cache() {
        crate::cache::Cache::open(child::cache_settings(config)).map_err(|error| {
            format!(
                "{error}; fix image_cache_dir ([DEFAULT] or [image_cache]), or set [paste_deploy] flavor to no \
                 cache"
            )
        })?;
    }
    crate::registry::Registry::open(&config.database).map_err(|error| {
        format!(
            "cannot open the image database {}: {}; fix [database] connection",
            config.database.display(),
            crate::api::error::with_causes(&error)
        )
    })?;
    Ok(())
}

/// Sets [`CREATION_MASK`]: everything glint creates from then on (the database and its WAL, the
/// cache records, the log, the state files, the directories) is closed to other users, so
/// metadata is readable only by glint's user and group (issue 10, hole 10). Image files get
/// `filesystem_store_file_perm` explicitly. Children inherit the mask. `main` calls it before it
/// opens the log; `Master::start` again, for callers that start a master directly.
pub fn restrict_creation_mask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(CREATION_MASK));
}

/// Writes our pid to `path` atomically, refusing if it names another live glint master.
fn write_pid_file(path: &Path) -> Result<(), String> {
    // Read without blocking (a FIFO in its place must not stop the master); a path that is not
    // a regular file fails the write below, with the path named.
    if let Ok(bytes) = config::read_regular_file(path) {
        let text = String::from_utf8_lossy(&bytes);
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
    let temporary = format!(
        "{}.tmp",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    state_file::write_atomically(
        path,
        &temporary,
        format!("{}\n", std::process::id()).as_bytes(),
    )
    .map_err(|error| format!("cannot write pid file {}: {error}", path.display()))
}

/// Says once, at start, at what priority the master and the children run: at debug when it
/// is as it should be, at info when the system refused and the operator can allow it.
fn log_priority(raised: super::priority::Raised) {
    use super::priority::Raised;
    match raised {
        // At debug: the start's info lines are the ones an operator acts on (and a syslog
        // daemon's queue takes about ten of them at once).
        Raised::Yes { from, to } => log::debug!(
            "the master and starting children run at nice {to}, children serve at nice {from}"
        ),
        Raised::AtTop { at } => log::debug!("the master and its children run at nice {at}"),
        Raised::Refused { at, error } => log::info!(
            "the master runs at nice {at} like its children (raising it was refused: {error}); \
             a reload under load takes effect later; allow nice {} with CAP_SYS_NICE or \
             RLIMIT_NICE (systemd: LimitNICE={}; the init script sets it)",
            (at - super::priority::BOOST).max(-20),
            super::priority::limit_nice_for(at)
        ),
    }
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

/// The machine's constants, re-exported for the docs and tests that quote them.
pub use machine::{CHILD_READY_TIMEOUT, ROLLING_STEP_TIMEOUT};
