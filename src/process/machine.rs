//! The master's rules as a pure state machine: events in, actions out.
//!
//! Everything the master decides (when to fork, whom to signal, when a reload commits or fails,
//! when a dead child comes back, when the master exits) is decided here, and nothing here does
//! I/O: no fork, no signal, no file, no clock. The master loop ([`super::master`]) turns what
//! happened into [`Event`]s, feeds them to [`Machine::handle`] with the current time, and carries
//! out the [`Action`]s it gets back; two actions (loading a config, forking) report their result
//! as a further event. The unit tests (`machine_tests.rs`) drive the machine through every
//! lifecycle fault found so far without a single process.
//!
//! # The rules, each written once
//!
//! - **A generation is current only once all its children reported ready.** The first
//!   generation's start and every reload wait for that; a reload that loses a child before, or
//!   whose child does not report ready within [`CHILD_READY_TIMEOUT`], fails and changes
//!   nothing: the old generation keeps serving.
//! - **A child becomes draining in exactly one function** ([`Machine::drain`]), which first
//!   tells it where to hand its idle connections (when handoff is on), then signals it, and
//!   records the deadline at which it is killed.
//! - **Respawn only what the current generation lost, each place on its own clock.** A child of
//!   the current generation that dies (or fails to start again) is replaced; each replacement
//!   backs off by its own run of young deaths, so a crashing place never delays a healthy one.
//!   The current generation's config has started once, so a failure to start again is
//!   something that can pass (a lock, a full disk, a missing mount) and is retried with backoff,
//!   never given up.
//! - **Stop modes are sticky.** Once stopping, the machine only waits for children to exit,
//!   kills those past their deadline, and exits when none is left.
//! - **Access control never lags a reload:** a reload that changes it is never rolling, so old
//!   children stop taking connections as soon as the new generation serves.
//! - **Every wait has a deadline:** a start ([`CHILD_READY_TIMEOUT`]), a drain (the plan's
//!   `drain_bound`), a rolling step ([`ROLLING_STEP_TIMEOUT`]), a respawn's backoff.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::signals::MasterRequest;

/// How long a new child may take to report ready; past it, it is killed and counts as failed.
pub const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A child that exits sooner than this after its start "died young"; repeated young deaths in
/// one place back off that place's respawn.
pub const YOUNG_DEATH: Duration = Duration::from_secs(2);

/// The first respawn delay after a young death; it doubles with each further one.
pub const RESPAWN_BACKOFF_START: Duration = Duration::from_millis(100);

/// The longest respawn delay.
pub const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long one step of a rolling reload waits for the old child it drained to exit before it
/// starts the next new child anyway. The old child keeps draining (it is not killed for this;
/// `graceful_shutdown_timeout` decides that), so for a while one more child than usual runs.
pub const ROLLING_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code of the master when the first generation did not start.
pub const EXIT_START_FAILED: i32 = 1;

/// A process id, as the master's loop reports it.
pub type Pid = i32;

/// What the machine needs to know of a generation's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `workers`: how many children serve.
    pub workers: usize,
    /// `reload_strategy = rolling`: replace one child at a time.
    pub rolling: bool,
    /// `reload_handoff`: draining children pass idle connections to the newer generation.
    pub handoff: bool,
    /// `graceful_shutdown_timeout`: how long a drain may take before the child is killed
    /// (`None`: no bound).
    pub drain_bound: Option<Duration>,
    /// The access control (`auth_strategy`, the tokens) differs from the current generation's.
    /// A rolling reload would leave old children taking new connections under the old rules
    /// until each is replaced, so such a reload replaces the whole generation at once.
    pub access_changed: bool,
    /// The new generation's children take clients from every listener the current
    /// generation's take from (the address did not move): only then may the old children
    /// leave new clients to them before the reload commits.
    pub listeners_kept: bool,
}

/// Something that happened, as the master's loop saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A signal asked for something (SIGCHLD is not one: exits come as [`Event::ChildExited`]).
    Request(MasterRequest),
    /// The result of [`Action::LoadConfig`]: the plan of a valid config whose preparation
    /// (listener, directories, log file) succeeded, or every problem found.
    ConfigLoaded {
        generation: u64,
        result: Result<Plan, String>,
    },
    /// The result of [`Action::Spawn`]: the new child's pid, or why fork failed.
    Spawned {
        generation: u64,
        attempt: u32,
        result: Result<Pid, String>,
    },
    /// A child wrote its ready byte.
    ChildReady { pid: Pid },
    /// A child wrote why it cannot start (its exit follows).
    ChildFailedToStart { pid: Pid, reason: String },
    /// A child was reaped.
    ChildExited { pid: Pid, exit: Exit },
    /// Time passed (a deadline may be due).
    Tick,
}

/// How a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by this signal (its name).
    Signal(String),
}

/// What the master's loop must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Re-read and validate the config file, prepare what can fail, answer with
    /// [`Event::ConfigLoaded`].
    LoadConfig { generation: u64 },
    /// Fork one child of `generation` (its config was loaded for that generation), the
    /// `nth` started for it; answer with [`Event::Spawned`].
    Spawn {
        generation: u64,
        nth: usize,
        attempt: u32,
    },
    /// Send a signal to a child.
    Signal { pid: Pid, signal: ChildSignal },
    /// Pass `generation`'s handoff channel to a child (before draining it).
    SendHandoffTarget { pid: Pid, generation: u64 },
    /// Tell a serving child to stop taking new clients (`accepting: false`: a child of the
    /// generation being started serves them) or to take them again (the reload failed).
    SetAccepting { pid: Pid, accepting: bool },
    /// `generation` is now current: take up its config (logging, pid and status files).
    Commit { generation: u64 },
    /// Reopen the master's log file (the children are signalled separately).
    ReopenLog,
    /// Tell the service manager.
    Notify(Notice),
    /// Rewrite the status file.
    WriteStatus,
    /// Exit with this code.
    Exit(i32),
}

/// The signals the master sends its children, by intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildSignal {
    /// SIGHUP: drain, handing idle connections over when told where.
    Drain,
    /// SIGTERM: drain because the server stops.
    Stop,
    /// SIGKILL.
    Kill,
    /// SIGUSR1: reopen the log file.
    ReopenLog,
}

/// A message for the service manager (`operator::notify`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Ready(String),
    Reloading(String),
    Stopping(String),
}

/// The server's phase. Stopping and exiting are sticky.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The first generation is starting.
    Starting,
    /// Serving; reloads and respawns happen.
    Running,
    /// SIGTERM or SIGQUIT: every child drains; exit 0 once none is left.
    Stopping,
    /// SIGINT, or the first generation failed: every child was killed; exit with `code` once
    /// none is left.
    Exiting { code: i32 },
    /// [`Action::Exit`] was given.
    Exited,
}

/// The life of one child, as the master sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildState {
    /// Forked, not ready yet; killed at `deadline` (`None` once killed).
    Starting { deadline: Option<Instant> },
    /// Reported ready; accepting on its generation's listener.
    Serving,
    /// Told to drain; killed at `deadline` (`None`: no bound, or already killed).
    Draining { deadline: Option<Instant> },
    /// Killed outright (SIGINT, a failed start of the server, an unwanted fork while exiting);
    /// only its exit is awaited.
    Killed,
}

/// One live child.
#[derive(Clone, Debug)]
pub struct Child {
    pub pid: Pid,
    pub generation: u64,
    pub state: ChildState,
    pub started: Instant,
    /// Young deaths in a row in this child's place before it was started.
    pub attempt: u32,
    /// Why it could not start, as it said on its ready pipe.
    pub failure: Option<String>,
    /// It reported ready once (its acceptor ran, and sweeps its backlog when it drains).
    pub was_ready: bool,
}

/// A place of the current generation waiting for its next child.
#[derive(Clone, Debug)]
pub struct Respawn {
    pub generation: u64,
    /// Young deaths in a row in this place.
    pub attempt: u32,
    pub due: Instant,
    /// How the last child in this place ended.
    pub reason: String,
}

/// One reload attempt, as the status file reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The count of SIGHUPs taken in when it began.
    pub number: u64,
    pub generation: u64,
    /// When it began, just before the config file was read.
    pub began: Instant,
    pub finished: Option<Instant>,
    /// `None` while in progress; `Some(None)` succeeded; `Some(Some(error))` failed.
    pub result: Option<Option<String>>,
}

/// A reload between its SIGHUP and its verdict.
#[derive(Debug)]
struct Reload {
    record: Record,
    generation: u64,
    /// `None` until the config is loaded.
    plan: Option<Plan>,
    /// New children forked so far.
    n_started: usize,
    rolling: Option<Rolling>,
    /// The children of older generations told to take no new clients since a new child
    /// serves (a parallel reload only); `None` until then. They take them again if the reload
    /// fails, and drain if it succeeds.
    stopped_accepting: Option<Vec<Pid>>,
}

/// A rolling reload's progress: once the newest new child is ready, one old child drains, and
/// the next new child starts once that one has exited (or [`ROLLING_STEP_TIMEOUT`] passed).
#[derive(Debug, Default)]
struct Rolling {
    /// Old children still to replace, in the order they will drain.
    old: VecDeque<Pid>,
    /// The old child draining in this step, and when the step stops waiting for it.
    draining: Option<(Pid, Instant)>,
    /// Old children this reload drained: if it fails, they get the current generation as their
    /// handoff target again, and as many children of the current generation start again.
    replaced: Vec<Pid>,
}

/// The master's whole decision state.
pub struct Machine {
    phase: Phase,
    /// The current generation's plan.
    plan: Plan,
    /// The generation that serves new connections (0 while the first one starts).
    generation: u64,
    /// The highest generation number handed out (every reload that loads a config takes one).
    last_generation: u64,
    children: Vec<Child>,
    reload: Option<Reload>,
    /// A SIGHUP arrived during start or during a reload: reload once more when it ends.
    reload_again: bool,
    respawns: Vec<Respawn>,
    reloads_requested: u64,
    reloads_succeeded: u64,
    reloads_failed: u64,
    last_reload: Option<Record>,
    /// Something the status file shows changed.
    dirty: bool,
}

impl Machine {
    /// A master about to start generation 1 with `plan`; the actions fork it.
    pub fn start(now: Instant, plan: Plan) -> (Machine, Vec<Action>) {
        let mut machine = Machine {
            phase: Phase::Starting,
            plan,
            generation: 0,
            last_generation: 1,
            children: Vec::new(),
            reload: None,
            reload_again: false,
            respawns: Vec::new(),
            reloads_requested: 0,
            reloads_succeeded: 0,
            reloads_failed: 0,
            last_reload: None,
            dirty: true,
        };
        let mut actions = Vec::new();
        for nth in 1..=plan.workers {
            actions.push(Action::Spawn {
                generation: 1,
                nth,
                attempt: 0,
            });
        }
        machine.finish_batch(now, &mut actions);
        (machine, actions)
    }

    /// Takes in one event at `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.phase == Phase::Exited {
            return actions;
        }
        match event {
            Event::Request(request) => self.on_request(now, request, &mut actions),
            Event::ConfigLoaded { generation, result } => {
                self.on_config_loaded(now, generation, result, &mut actions)
            }
            Event::Spawned {
                generation,
                attempt,
                result,
            } => self.on_spawned(now, generation, attempt, result, &mut actions),
            Event::ChildReady { pid } => self.on_ready(pid),
            Event::ChildFailedToStart { pid, reason } => {
                if let Some(child) = self.children.iter_mut().find(|c| c.pid == pid) {
                    child.failure = Some(reason);
                }
            }
            Event::ChildExited { pid, exit } => self.on_exit(now, pid, exit, &mut actions),
            Event::Tick => {}
        }
        self.finish_batch(now, &mut actions);
        actions
    }

    /// The nearest moment something is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| next = Some(next.map_or(at, |next| next.min(at)));
        for child in &self.children {
            match child.state {
                ChildState::Starting {
                    deadline: Some(deadline),
                }
                | ChildState::Draining {
                    deadline: Some(deadline),
                } => consider(deadline),
                _ => {}
            }
        }
        if self.phase == Phase::Running {
            for respawn in &self.respawns {
                consider(respawn.due);
            }
        }
        if let Some((_, until)) = self
            .reload
            .as_ref()
            .and_then(|reload| reload.rolling.as_ref())
            .and_then(|rolling| rolling.draining)
        {
            consider(until);
        }
        next
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The generation that serves new connections (0 while the first one starts).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The current generation's plan.
    pub fn plan(&self) -> Plan {
        self.plan
    }

    pub fn children(&self) -> &[Child] {
        &self.children
    }

    pub fn respawns(&self) -> &[Respawn] {
        &self.respawns
    }

    /// The reload in progress (its generation and record).
    pub fn reload_in_progress(&self) -> Option<&Record> {
        self.reload.as_ref().map(|reload| &reload.record)
    }

    pub fn last_reload(&self) -> Option<&Record> {
        self.last_reload.as_ref()
    }

    /// `(requested, succeeded, failed)` reload counts.
    pub fn reload_counts(&self) -> (u64, u64, u64) {
        (
            self.reloads_requested,
            self.reloads_succeeded,
            self.reloads_failed,
        )
    }

    /// The generation of a reload in progress, whose listener and channel must stay open.
    pub fn pending_generation(&self) -> Option<u64> {
        self.reload.as_ref().map(|reload| reload.generation)
    }

    /// Whether anything of `generation` still needs its handoff channel or its listener: it is
    /// current or pending, or has a child; `accepting` asks only for children that may still
    /// take connections off its listener: starting or serving, or told to drain before they
    /// were ever ready. Such a child holds the listener without having swept it, so the master
    /// must keep (and finally sweep) its own copy until that child is gone; a child that was
    /// ready sweeps the backlog itself when its drain begins.
    pub fn generation_in_use(&self, generation: u64, accepting: bool) -> bool {
        generation == self.generation
            || Some(generation) == self.pending_generation()
            || self.children.iter().any(|child| {
                child.generation == generation
                    && (!accepting
                        || !child.was_ready
                        || !matches!(
                            child.state,
                            ChildState::Draining { .. } | ChildState::Killed
                        ))
            })
    }

    fn on_request(&mut self, now: Instant, request: MasterRequest, actions: &mut Vec<Action>) {
        match request {
            MasterRequest::Reload => {
                self.reloads_requested += 1;
                self.dirty = true;
                match self.phase {
                    Phase::Starting => {
                        log::info!(
                            "SIGHUP #{} while starting: reloading once generation 1 serves",
                            self.reloads_requested
                        );
                        self.reload_again = true;
                    }
                    Phase::Running => {
                        // systemd waits for this after its SIGHUP, even one merged into the
                        // reload under way (see `operator::notify`).
                        actions.push(Action::Notify(Notice::Reloading(format!(
                            "reloading (SIGHUP #{})",
                            self.reloads_requested
                        ))));
                        if self.reload.is_some() {
                            if !self.reload_again {
                                log::info!("SIGHUP during a reload: one more reload will follow");
                            }
                            self.reload_again = true;
                        } else {
                            self.begin_reload(now, actions);
                        }
                    }
                    Phase::Stopping | Phase::Exiting { .. } | Phase::Exited => {
                        log::info!("SIGHUP ignored: the server is stopping");
                    }
                }
            }
            MasterRequest::StopGracefully => match self.phase {
                Phase::Running => self.begin_graceful_stop(now, actions),
                // Ready children drain like any; starters drain too, within their start deadline.
                Phase::Starting => self.begin_graceful_stop(now, actions),
                _ => {}
            },
            MasterRequest::StopNow => match self.phase {
                Phase::Exiting { .. } | Phase::Exited => {}
                _ => {
                    log::info!("SIGINT: stopping now");
                    self.begin_exit(now, 0, "stopping now (SIGINT)", actions);
                }
            },
            MasterRequest::ReopenLogs => {
                actions.push(Action::ReopenLog);
                for child in &self.children {
                    actions.push(Action::Signal {
                        pid: child.pid,
                        signal: ChildSignal::ReopenLog,
                    });
                }
            }
            MasterRequest::Reap => {}
        }
    }

    /// Starts a reload: the loop loads the config for the next generation.
    fn begin_reload(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.last_generation += 1;
        let generation = self.last_generation;
        log::info!("SIGHUP: reloading the config for generation {generation}");
        self.reload = Some(Reload {
            record: Record {
                number: self.reloads_requested,
                generation,
                began: now,
                finished: None,
                result: None,
            },
            generation,
            plan: None,
            n_started: 0,
            rolling: None,
            stopped_accepting: None,
        });
        self.dirty = true;
        actions.push(Action::LoadConfig { generation });
    }

    fn on_config_loaded(
        &mut self,
        now: Instant,
        generation: u64,
        result: Result<Plan, String>,
        actions: &mut Vec<Action>,
    ) {
        let Some(reload) = self.reload.as_mut().filter(|r| r.generation == generation) else {
            return;
        };
        let plan = match result {
            Ok(plan) => plan,
            Err(error) => {
                log::error!(
                    "reload rejected, generation {} keeps serving: the config is invalid:\n{}",
                    self.generation,
                    error.trim_end()
                );
                self.fail_reload(now, error, actions);
                return;
            }
        };
        reload.plan = Some(plan);
        let rolling = plan.rolling && !plan.access_changed;
        if plan.rolling && !rolling {
            log::info!(
                "reload for generation {generation}: the access control changed, so all \
                 children are replaced at once (not rolling): no old child may take a new \
                 connection under the old rules once the new generation serves"
            );
        }
        if rolling {
            reload.rolling = Some(Rolling {
                old: self
                    .children
                    .iter()
                    .filter(|c| {
                        c.generation < generation
                            && !matches!(c.state, ChildState::Draining { .. } | ChildState::Killed)
                    })
                    .map(|c| c.pid)
                    .collect(),
                ..Rolling::default()
            });
        }
        // Parallel: the whole generation now. Rolling: one child; `advance_reload` does the rest.
        let n_first = if rolling { 1 } else { plan.workers };
        for nth in 1..=n_first {
            reload.n_started = nth;
            actions.push(Action::Spawn {
                generation,
                nth,
                attempt: 0,
            });
        }
    }

    fn on_spawned(
        &mut self,
        now: Instant,
        generation: u64,
        attempt: u32,
        result: Result<Pid, String>,
        actions: &mut Vec<Action>,
    ) {
        match result {
            Ok(pid) => {
                self.children.push(Child {
                    pid,
                    generation,
                    state: ChildState::Starting {
                        deadline: Some(now + CHILD_READY_TIMEOUT),
                    },
                    started: now,
                    attempt,
                    failure: None,
                    was_ready: false,
                });
                self.dirty = true;
                self.release_if_unwanted(now, pid, generation, actions);
            }
            Err(error) => {
                log::error!("{error}");
                self.on_start_failure(now, generation, attempt, error, actions);
            }
        }
    }

    /// A fork answered after its reason went away (the reload failed, the server began to
    /// stop): the new child drains at once, or is killed when the master exits.
    fn release_if_unwanted(
        &mut self,
        now: Instant,
        pid: Pid,
        generation: u64,
        actions: &mut Vec<Action>,
    ) {
        if self.wants_child_of(generation) {
            return;
        }
        match self.phase {
            Phase::Exiting { .. } | Phase::Exited => {
                actions.push(Action::Signal {
                    pid,
                    signal: ChildSignal::Kill,
                });
                if let Some(child) = self.children.iter_mut().find(|c| c.pid == pid) {
                    child.state = ChildState::Killed;
                }
            }
            _ => {
                let bound = self.plan.drain_bound;
                self.drain(now, pid, None, bound, ChildSignal::Drain, actions);
            }
        }
    }

    fn on_ready(&mut self, pid: Pid) {
        let Some(child) = self.children.iter_mut().find(|c| c.pid == pid) else {
            return;
        };
        if let ChildState::Starting { .. } = child.state {
            child.state = ChildState::Serving;
            child.was_ready = true;
            log::info!("child {pid} (generation {}) is ready", child.generation);
            self.dirty = true;
        }
    }

    /// A child was reaped: log how it ended, then the rule for what it leaves behind.
    fn on_exit(&mut self, now: Instant, pid: Pid, exit: Exit, actions: &mut Vec<Action>) {
        let Some(index) = self.children.iter().position(|c| c.pid == pid) else {
            return;
        };
        let child = self.children.remove(index);
        self.dirty = true;
        let how = match &exit {
            Exit::Code(code) => format!("exited with code {code}"),
            Exit::Signal(signal) => format!("was killed by {signal}"),
        };
        let generation = child.generation;
        if let Phase::Exiting { .. } = self.phase {
            log::info!("child {pid} (generation {generation}) {how}");
            return;
        }
        match child.state {
            ChildState::Killed => log::info!("child {pid} (generation {generation}) {how}"),
            ChildState::Draining { .. } => {
                if exit == Exit::Code(0) {
                    log::info!("child {pid} (generation {generation}) drained and exited");
                } else {
                    log::warn!("child {pid} (generation {generation}) {how} while draining");
                }
            }
            _ if self.phase == Phase::Stopping => {
                log::info!("child {pid} (generation {generation}) {how}");
            }
            ChildState::Starting { .. } => {
                let reason = match &child.failure {
                    Some(failure) => format!("could not start ({how}): {failure}"),
                    None => format!("{how} before it was ready"),
                };
                log::error!("child {pid} (generation {generation}) {reason}");
                let error = format!("child {pid} of generation {generation} {reason}");
                self.on_start_failure(now, generation, child.attempt, error, actions);
            }
            ChildState::Serving => {
                let lived = now.saturating_duration_since(child.started);
                log::error!(
                    "child {pid} (generation {generation}) {how} after {:.1} s",
                    lived.as_secs_f64()
                );
                if self.pending_generation() == Some(generation) {
                    let error = format!(
                        "child {pid} of generation {generation} {how} before the reload finished"
                    );
                    self.fail_reload(now, error, actions);
                } else if self.phase == Phase::Starting {
                    self.begin_exit(
                        now,
                        EXIT_START_FAILED,
                        "the first generation failed",
                        actions,
                    );
                } else {
                    let young = lived < YOUNG_DEATH;
                    let attempt = if young { child.attempt + 1 } else { 0 };
                    self.schedule_respawn(now, attempt, format!("child {pid} {how}"));
                }
            }
        }
    }

    /// A child of `generation` did not start (fork failed, it exited or was killed before it was
    /// ready). What that means depends on whose child it was.
    fn on_start_failure(
        &mut self,
        now: Instant,
        generation: u64,
        attempt: u32,
        error: String,
        actions: &mut Vec<Action>,
    ) {
        if self.pending_generation() == Some(generation) {
            self.fail_reload(now, error, actions);
        } else if self.phase == Phase::Starting {
            log::error!("the first generation of children did not start; see the lines above");
            self.begin_exit(
                now,
                EXIT_START_FAILED,
                "the first generation did not start",
                actions,
            );
        } else if self.phase == Phase::Running && generation == self.generation {
            // The current config started once, so what keeps this child from starting can
            // pass: retry, backing off.
            self.schedule_respawn(now, attempt + 1, error);
        }
    }

    /// Queues a start of a child of the current generation after `attempt` young deaths in
    /// that place.
    fn schedule_respawn(&mut self, now: Instant, attempt: u32, reason: String) {
        if self.phase != Phase::Running {
            return;
        }
        let delay = backoff(attempt);
        if delay > Duration::ZERO {
            log::warn!(
                "generation {}: starting a replacement in {} ms (attempt {} in a row that died \
                 young or could not start)",
                self.generation,
                delay.as_millis(),
                attempt
            );
        }
        self.respawns.push(Respawn {
            generation: self.generation,
            attempt,
            due: now + delay,
            reason,
        });
        self.dirty = true;
    }

    /// A new generation failed (or its config was refused): its children drain, handing back to
    /// the current generation whatever they adopted; what a rolling reload took away comes back.
    fn fail_reload(&mut self, now: Instant, error: String, actions: &mut Vec<Action>) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        if reload.plan.is_some() {
            log::error!(
                "reload failed, generation {} keeps serving: {error}",
                self.generation
            );
        }
        let current = self.generation;
        // Connections went to the new generation only if its plan hands over; they come back
        // the same way, whatever the current plan says.
        let handoff = self.plan.handoff || reload.plan.is_some_and(|plan| plan.handoff);
        let target = handoff.then_some(current);
        let pids: Vec<Pid> = self
            .children
            .iter()
            .filter(|c| c.generation == reload.generation)
            .map(|c| c.pid)
            .collect();
        // Those told to take no new clients take them again, before the new children's
        // listeners close, so that nothing waits long in the backlog.
        let stopped: Vec<Pid> = reload
            .stopped_accepting
            .iter()
            .flatten()
            .copied()
            .filter(|&pid| {
                self.children
                    .iter()
                    .any(|c| c.pid == pid && c.state == ChildState::Serving)
            })
            .collect();
        if !stopped.is_empty() {
            log::info!("generation {current} takes new clients again");
        }
        for pid in stopped {
            actions.push(Action::SetAccepting {
                pid,
                accepting: true,
            });
        }
        let bound = self.plan.drain_bound;
        for pid in pids {
            self.drain(now, pid, target, bound, ChildSignal::Drain, actions);
        }
        if let Some(rolling) = &reload.rolling {
            // The old children this reload drained were told to hand over to the failed
            // generation; point them back at the current one. Then put back as many children.
            for &pid in &rolling.replaced {
                if handoff && self.children.iter().any(|c| c.pid == pid) {
                    actions.push(Action::SendHandoffTarget {
                        pid,
                        generation: current,
                    });
                }
            }
            for _ in &rolling.replaced {
                self.respawns.push(Respawn {
                    generation: current,
                    attempt: 0,
                    due: now,
                    reason: format!(
                        "replacing a child drained by failed reload #{}",
                        reload.record.number
                    ),
                });
            }
        }
        self.finish_reload(now, reload.record, Some(error), actions);
    }

    /// The new generation is ready: it becomes current and every older child drains into it.
    fn commit_reload(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        let plan = reload
            .plan
            .expect("a reload commits only after its config loaded");
        let old = self.generation;
        self.generation = reload.generation;
        self.plan = plan;
        // Respawns of the old generation are moot: its children drain.
        self.respawns.clear();
        actions.push(Action::Commit {
            generation: reload.generation,
        });
        let older: Vec<Pid> = self
            .children
            .iter()
            .filter(|c| c.generation < reload.generation)
            .map(|c| c.pid)
            .collect();
        for pid in older {
            self.drain(
                now,
                pid,
                plan.handoff.then_some(reload.generation),
                plan.drain_bound,
                ChildSignal::Drain,
                actions,
            );
        }
        log::info!(
            "reload succeeded: generation {} serving with {} worker(s); generation {old} draining",
            reload.generation,
            plan.workers
        );
        self.finish_reload(now, reload.record, None, actions);
    }

    /// Records a reload's verdict, and tells systemd the server serves again unless another
    /// reload follows at once (SIGHUPs that arrived during this one): systemd then sees one
    /// reload that ends with the last.
    fn finish_reload(
        &mut self,
        now: Instant,
        mut record: Record,
        error: Option<String>,
        actions: &mut Vec<Action>,
    ) {
        let verdict = match &error {
            None => {
                self.reloads_succeeded += 1;
                format!(
                    "reload #{} succeeded: generation {} serving with {} worker(s)",
                    record.number, self.generation, self.plan.workers
                )
            }
            Some(error) => {
                self.reloads_failed += 1;
                format!(
                    "reload #{} failed, generation {} keeps serving: {}",
                    record.number,
                    self.generation,
                    error.lines().next().unwrap_or_default()
                )
            }
        };
        if !(self.reload_again && self.phase == Phase::Running) {
            actions.push(Action::Notify(Notice::Ready(verdict)));
        }
        record.finished = Some(now);
        record.result = Some(error);
        self.last_reload = Some(record);
        self.dirty = true;
    }

    /// The one place a child becomes draining: tell it where to hand its idle connections
    /// (`target`: the generation whose channel it gets, `None` for no handoff), signal it, and
    /// set the deadline at which it is killed. A child already draining only gets the new
    /// target.
    fn drain(
        &mut self,
        now: Instant,
        pid: Pid,
        target: Option<u64>,
        bound: Option<Duration>,
        signal: ChildSignal,
        actions: &mut Vec<Action>,
    ) {
        let Some(child) = self.children.iter_mut().find(|c| c.pid == pid) else {
            return;
        };
        if let Some(generation) = target.filter(|&g| g != child.generation) {
            actions.push(Action::SendHandoffTarget { pid, generation });
        }
        let start_deadline = match child.state {
            ChildState::Draining { .. } | ChildState::Killed => return,
            ChildState::Starting { deadline } => deadline,
            ChildState::Serving => None,
        };
        actions.push(Action::Signal { pid, signal });
        // A child still starting keeps its start deadline: a start that hangs (a mount, a lock)
        // must end even when drains have no bound.
        let drain_deadline = bound.map(|bound| now + bound);
        let deadline = match (start_deadline, drain_deadline) {
            (Some(start), Some(drain)) => Some(start.min(drain)),
            (start, drain) => start.or(drain),
        };
        child.state = ChildState::Draining { deadline };
        self.dirty = true;
    }

    /// SIGTERM or SIGQUIT: every child drains, bounded by the current `drain_bound`.
    fn begin_graceful_stop(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let bound = self.plan.drain_bound;
        log::info!(
            "stopping gracefully: draining {} child(ren){}",
            self.children.len(),
            match bound {
                Some(bound) => format!(", at most {} s", bound.as_secs()),
                None => String::new(),
            }
        );
        actions.push(Action::Notify(Notice::Stopping(
            "stopping gracefully: children are draining".into(),
        )));
        self.phase = Phase::Stopping;
        if let Some(reload) = self.reload.take() {
            self.finish_reload(
                now,
                reload.record,
                Some("the server began to stop before the reload finished".into()),
                actions,
            );
        }
        self.reload_again = false;
        self.respawns.clear();
        let pids: Vec<Pid> = self.children.iter().map(|c| c.pid).collect();
        for pid in pids {
            self.drain(now, pid, None, bound, ChildSignal::Stop, actions);
        }
        self.dirty = true;
    }

    /// Whether a fork for `generation` is still wanted: the loop skips a queued `Spawn` whose
    /// reason went away in the same batch (a fork failure failed the reload, a stop began).
    pub fn wants_child_of(&self, generation: u64) -> bool {
        match self.phase {
            Phase::Starting => generation == 1,
            Phase::Running => {
                generation == self.generation || Some(generation) == self.pending_generation()
            }
            Phase::Stopping | Phase::Exiting { .. } | Phase::Exited => false,
        }
    }

    /// Kills every child; exit with `code` once none is left.
    fn begin_exit(&mut self, now: Instant, code: i32, why: &str, actions: &mut Vec<Action>) {
        actions.push(Action::Notify(Notice::Stopping(why.to_string())));
        self.phase = Phase::Exiting { code };
        if let Some(reload) = self.reload.take() {
            self.finish_reload(
                now,
                reload.record,
                Some(format!(
                    "the server stopped before the reload finished ({why})"
                )),
                actions,
            );
        }
        self.reload_again = false;
        self.respawns.clear();
        for child in &mut self.children {
            actions.push(Action::Signal {
                pid: child.pid,
                signal: ChildSignal::Kill,
            });
            child.state = ChildState::Killed;
        }
        self.dirty = true;
    }

    /// After every event: deadlines, the start and reload progress, due respawns, the exit, and
    /// the status file. The order matters: kills before progress (a killed starter fails its
    /// reload when reaped), progress before respawns (a commit clears the old respawns).
    fn finish_batch(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.kill_overdue(now, actions);
        if self.phase == Phase::Starting {
            self.advance_start(actions);
        }
        if self.phase == Phase::Running {
            self.advance_reload(now, actions);
            if self.reload.is_none() && self.reload_again {
                self.reload_again = false;
                self.begin_reload(now, actions);
            }
            self.respawn_due(now, actions);
        }
        if let Phase::Stopping | Phase::Exiting { .. } = self.phase {
            if self.children.is_empty() {
                let code = match self.phase {
                    Phase::Exiting { code } => code,
                    _ => 0,
                };
                log::info!("all children have exited; exiting");
                self.phase = Phase::Exited;
                actions.push(Action::WriteStatus);
                actions.push(Action::Exit(code));
                return;
            }
        }
        if std::mem::take(&mut self.dirty) {
            actions.push(Action::WriteStatus);
        }
    }

    /// Kills children past their start or drain deadline, naming them; each is killed once.
    fn kill_overdue(&mut self, now: Instant, actions: &mut Vec<Action>) {
        for child in &mut self.children {
            match child.state {
                ChildState::Starting {
                    deadline: Some(deadline),
                } if now >= deadline => {
                    log::error!(
                        "child {} (generation {}) did not report ready within {} s; killing it",
                        child.pid,
                        child.generation,
                        CHILD_READY_TIMEOUT.as_secs()
                    );
                    child.failure.get_or_insert_with(|| {
                        format!(
                            "did not report ready within {} s",
                            CHILD_READY_TIMEOUT.as_secs()
                        )
                    });
                    child.state = ChildState::Starting { deadline: None };
                }
                ChildState::Draining {
                    deadline: Some(deadline),
                } if now >= deadline => {
                    log::warn!(
                        "child {} (generation {}) still draining at graceful_shutdown_timeout; \
                         killing it",
                        child.pid,
                        child.generation
                    );
                    child.state = ChildState::Draining { deadline: None };
                }
                _ => continue,
            }
            actions.push(Action::Signal {
                pid: child.pid,
                signal: ChildSignal::Kill,
            });
        }
    }

    /// The first generation: serving once all its children are ready.
    fn advance_start(&mut self, actions: &mut Vec<Action>) {
        let n_ready = self
            .children
            .iter()
            .filter(|c| c.generation == 1 && c.state == ChildState::Serving)
            .count();
        if n_ready < self.plan.workers {
            return;
        }
        self.phase = Phase::Running;
        self.generation = 1;
        self.dirty = true;
        log::info!("generation 1 serving with {} worker(s)", self.plan.workers);
        actions.push(Action::Commit { generation: 1 });
        actions.push(Action::Notify(Notice::Ready(format!(
            "generation 1 serving with {} worker(s)",
            self.plan.workers
        ))));
        if self.reload_again {
            actions.push(Action::Notify(Notice::Reloading(
                "reloading: SIGHUP while starting".into(),
            )));
        }
    }

    /// The reload in progress: commit once every new child is ready (rolling: one step at a
    /// time).
    fn advance_reload(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some(reload) = &self.reload else { return };
        if reload.plan.is_none() {
            return;
        }
        let generation = reload.generation;
        let new: Vec<&Child> = self
            .children
            .iter()
            .filter(|c| c.generation == generation)
            .collect();
        let all_ready =
            new.len() == reload.n_started && new.iter().all(|c| c.state == ChildState::Serving);
        if !all_ready {
            self.stop_older_accepting(actions);
            // A dead or overdue starter fails the reload when it is reaped (`on_exit`).
            return;
        }
        if reload.rolling.is_none() || self.advance_rolling(now, actions) {
            self.commit_reload(now, actions);
        }
    }

    /// A parallel reload's new generation has half its children serving (rounded up): every
    /// serving child of an older generation stops taking new clients, so that they meet the new
    /// config from now on instead of when the slowest new child is ready. Called at every step
    /// of the reload, so that an old child that starts serving meanwhile (a replacement) is told
    /// too. Not when the address moved (no new child takes clients from the old listener), nor
    /// for a rolling reload, which replaces its children one at a time.
    fn stop_older_accepting(&mut self, actions: &mut Vec<Action>) {
        let children = &self.children;
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        let Some(plan) = reload.plan else {
            return;
        };
        if reload.rolling.is_some() || !plan.listeners_kept {
            return;
        }
        let generation = reload.generation;
        let n_serving = children
            .iter()
            .filter(|c| c.generation == generation && c.state == ChildState::Serving)
            .count();
        if reload.stopped_accepting.is_none() && n_serving * 2 < plan.workers {
            return;
        }
        let first = reload.stopped_accepting.is_none();
        let stopped = reload.stopped_accepting.get_or_insert_with(Vec::new);
        let newly: Vec<Pid> = children
            .iter()
            .filter(|c| {
                c.generation < generation
                    && c.state == ChildState::Serving
                    && !stopped.contains(&c.pid)
            })
            .map(|c| c.pid)
            .collect();
        if first && !newly.is_empty() {
            log::info!(
                "{n_serving} of {} children of generation {generation} serve: generation {} takes \
                 no new clients until the reload ends",
                plan.workers,
                self.generation
            );
        }
        for pid in newly {
            actions.push(Action::SetAccepting {
                pid,
                accepting: false,
            });
            stopped.push(pid);
        }
    }

    /// One step of a rolling reload, while every new child started so far is ready. Returns true
    /// once all new children are started and ready and the reload can commit.
    fn advance_rolling(&mut self, now: Instant, actions: &mut Vec<Action>) -> bool {
        let children = &self.children;
        let Some(reload) = self.reload.as_mut() else {
            return false;
        };
        let plan = reload.plan.expect("checked by advance_reload");
        let generation = reload.generation;
        let Some(rolling) = reload.rolling.as_mut() else {
            return false;
        };
        if let Some((pid, until)) = rolling.draining {
            if children.iter().any(|c| c.pid == pid) {
                if now < until {
                    return false;
                }
                log::warn!(
                    "rolling reload: child {pid} is still draining after {} s; starting the \
                     next child of generation {generation} beside it",
                    ROLLING_STEP_TIMEOUT.as_secs()
                );
            }
            rolling.draining = None;
        }
        // One old child drains per new child started, so that at most workers + 1 run.
        if rolling.replaced.len() < reload.n_started {
            while let Some(pid) = rolling.old.pop_front() {
                if !children.iter().any(|c| c.pid == pid) {
                    continue;
                }
                rolling.replaced.push(pid);
                rolling.draining = Some((pid, now + ROLLING_STEP_TIMEOUT));
                log::info!("rolling reload: child {pid} drains for generation {generation}");
                self.drain(
                    now,
                    pid,
                    plan.handoff.then_some(generation),
                    plan.drain_bound,
                    ChildSignal::Drain,
                    actions,
                );
                return false;
            }
        }
        if reload.n_started < plan.workers {
            reload.n_started += 1;
            actions.push(Action::Spawn {
                generation,
                nth: reload.n_started,
                attempt: 0,
            });
            return false;
        }
        true
    }

    /// Forks the respawns that are due, each on its own clock.
    fn respawn_due(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let generation = self.generation;
        let (due, waiting): (Vec<Respawn>, Vec<Respawn>) = std::mem::take(&mut self.respawns)
            .into_iter()
            .partition(|respawn| respawn.due <= now);
        self.respawns = waiting;
        for respawn in due {
            if respawn.generation != generation {
                continue;
            }
            log::info!(
                "starting a replacement child for generation {generation} ({})",
                respawn.reason
            );
            actions.push(Action::Spawn {
                generation,
                nth: 0,
                attempt: respawn.attempt,
            });
            self.dirty = true;
        }
    }
}

/// The delay before the next start in a place after `attempt` young deaths in a row.
pub fn backoff(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let exponent = (attempt - 1).min(16);
    (RESPAWN_BACKOFF_START * 2u32.pow(exponent)).min(RESPAWN_BACKOFF_MAX)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
