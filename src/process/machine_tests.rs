//! The machine driven without processes: a [`Harness`] plays the master's loop, answering
//! `LoadConfig` and `Spawn` the way the real loop does (a plan, a fresh pid) and keeping every
//! other action for the test to check. Each fault of issue 9 that lives in the rules has a test
//! here; the integration tests (tests/process_faults.rs) prove the same with real processes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;

fn plan(workers: usize) -> Plan {
    Plan {
        workers,
        rolling: false,
        handoff: true,
        drain_bound: Some(Duration::from_secs(60)),
        access_changed: false,
        listeners_kept: true,
    }
}

/// The master's loop, played: answers loads and forks, records the rest.
struct Harness {
    machine: Machine,
    now: Instant,
    next_pid: Pid,
    /// What the next `LoadConfig` answers.
    next_config: Result<Plan, String>,
    /// Every action that was not answered here, in order.
    actions: Vec<Action>,
}

impl Harness {
    /// A master whose first generation of `plan.workers` children is ready.
    fn running(plan: Plan) -> Harness {
        let now = Instant::now();
        let (machine, actions) = Machine::start(now, plan);
        let mut harness = Harness {
            machine,
            now,
            next_pid: 100,
            next_config: Ok(plan),
            actions: Vec::new(),
        };
        harness.carry_out(actions);
        for pid in harness.pids_in(1) {
            harness.event(Event::ChildReady { pid });
        }
        assert_eq!(harness.machine.phase(), Phase::Running);
        harness.actions.clear();
        harness
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let answer = match action {
                Action::LoadConfig { generation } => Event::ConfigLoaded {
                    generation,
                    result: self.next_config.clone(),
                },
                Action::Spawn {
                    generation,
                    attempt,
                    ..
                } => {
                    self.next_pid += 1;
                    self.actions.push(action);
                    Event::Spawned {
                        generation,
                        attempt,
                        result: Ok(self.next_pid),
                    }
                }
                other => {
                    self.actions.push(other);
                    continue;
                }
            };
            let more = self.machine.handle(self.now, answer);
            for action in more.into_iter().rev() {
                queue.push_front(action);
            }
        }
    }

    fn event(&mut self, event: Event) {
        let actions = self.machine.handle(self.now, event);
        self.carry_out(actions);
    }

    /// Lets time pass and ticks.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.event(Event::Tick);
    }

    fn sighup(&mut self) {
        self.event(Event::Request(MasterRequest::Reload));
    }

    fn exit(&mut self, pid: Pid, code: i32) {
        self.event(Event::ChildExited {
            pid,
            exit: Exit::Code(code),
        });
    }

    fn kill9(&mut self, pid: Pid) {
        self.event(Event::ChildExited {
            pid,
            exit: Exit::Signal("SIGKILL".into()),
        });
    }

    fn pids_in(&self, generation: u64) -> Vec<Pid> {
        self.machine
            .children()
            .iter()
            .filter(|c| c.generation == generation)
            .map(|c| c.pid)
            .collect()
    }

    fn state_of(&self, pid: Pid) -> Option<ChildState> {
        self.machine
            .children()
            .iter()
            .find(|c| c.pid == pid)
            .map(|c| c.state)
    }

    fn ready_all(&mut self, generation: u64) {
        for pid in self.pids_in(generation) {
            if matches!(self.state_of(pid), Some(ChildState::Starting { .. })) {
                self.event(Event::ChildReady { pid });
            }
        }
    }

    fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn spawns(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Spawn { .. }))
            .count()
    }
}

#[test]
fn a_reload_commits_once_every_new_child_is_ready_and_drains_the_old_with_handoff() {
    let mut h = Harness::running(plan(2));
    let old = h.pids_in(1);
    h.sighup();
    let actions = h.take_actions();
    assert_eq!(Harness::spawns(&actions), 2);
    assert!(actions.contains(&Action::Notify(Notice::Reloading(
        "reloading (SIGHUP #1)".into()
    ))));
    // Nothing is drained before the new generation is ready.
    assert!(old
        .iter()
        .all(|pid| h.state_of(*pid) == Some(ChildState::Serving)));
    h.ready_all(2);
    let actions = h.take_actions();
    assert!(actions.contains(&Action::Commit { generation: 2 }));
    for pid in &old {
        let target = actions.iter().position(|a| {
            *a == Action::SendHandoffTarget {
                pid: *pid,
                generation: 2,
            }
        });
        let signal = actions.iter().position(|a| {
            *a == Action::Signal {
                pid: *pid,
                signal: ChildSignal::Drain,
            }
        });
        assert!(
            target.is_some() && target < signal,
            "the target goes before the SIGHUP: {actions:?}"
        );
    }
    assert_eq!(h.machine.generation(), 2);
    let last = h.machine.last_reload().unwrap();
    assert_eq!((last.number, last.result.clone()), (1, Some(None)));
}

/// Issue 13, part 1: once half the new children serve, the old children take no new clients,
/// so that clients meet the new config without waiting for the slowest new child; once each,
/// and only the old children that serve.
#[test]
fn the_old_children_stop_accepting_once_half_the_new_generation_serves() {
    let mut h = Harness::running(plan(3));
    let old = h.pids_in(1);
    h.sighup();
    h.take_actions();
    let new = h.pids_in(2);
    // One of three: not enough to carry the clients of three.
    h.event(Event::ChildReady { pid: new[0] });
    assert_eq!(told(&h.take_actions(), false), Vec::<Pid>::new());
    h.event(Event::ChildReady { pid: new[1] });
    let actions = h.take_actions();
    assert_eq!(told(&actions, false), old, "{actions:?}");
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::Signal { .. } | Action::Commit { .. })));
    // The last one commits, and the old ones drain; nobody is told twice.
    h.event(Event::ChildReady { pid: new[2] });
    let actions = h.take_actions();
    assert!(actions.contains(&Action::Commit { generation: 2 }));
    assert_no_accept_switch(&actions);
}

/// Asserts that `actions` tell no child to stop or resume taking new clients.
fn assert_no_accept_switch(actions: &[Action]) {
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SetAccepting { .. })),
        "{actions:?}"
    );
}

/// The pids `actions` tell to take new clients (`accepting`) or to stop.
fn told(actions: &[Action], accepting: bool) -> Vec<Pid> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetAccepting { pid, accepting: on } if *on == accepting => Some(*pid),
            _ => None,
        })
        .collect()
}

/// An old child that starts serving after the others were told (a replacement of one that
/// died) is told too, so no old child takes new clients once the new generation does.
#[test]
fn an_old_child_replaced_while_the_old_ones_take_no_new_clients_is_told_too() {
    let mut h = Harness::running(plan(2));
    let old = h.pids_in(1);
    h.sighup();
    let new = h.pids_in(2);
    h.event(Event::ChildReady { pid: new[0] });
    assert_eq!(told(&h.take_actions(), false), old);
    h.kill9(old[0]);
    h.advance(Duration::from_secs(5));
    let replacement = *h
        .pids_in(1)
        .iter()
        .find(|pid| !old.contains(pid))
        .expect("a replacement of generation 1");
    h.take_actions();
    h.event(Event::ChildReady { pid: replacement });
    assert_eq!(told(&h.take_actions(), false), vec![replacement]);
}

/// A reload that moves the address: the new children do not take clients from the old
/// listener, so the old children keep taking them until the reload commits.
#[test]
fn no_accept_switch_when_the_address_moves() {
    let mut h = Harness::running(plan(2));
    h.next_config = Ok(Plan {
        listeners_kept: false,
        ..plan(2)
    });
    h.sighup();
    let new = h.pids_in(2);
    h.event(Event::ChildReady { pid: new[0] });
    assert_no_accept_switch(&h.take_actions());
}

/// The reload fails after the old children were told to stop accepting: the ones still
/// serving take new clients again, before the new children drain.
#[test]
fn a_reload_that_fails_after_a_new_child_served_lets_the_old_children_accept_again() {
    let mut h = Harness::running(plan(2));
    let old = h.pids_in(1);
    h.sighup();
    let new = h.pids_in(2);
    h.event(Event::ChildReady { pid: new[0] });
    h.take_actions();
    // One old child dies meanwhile: only the other is told.
    h.kill9(old[0]);
    h.take_actions();
    h.exit(new[1], 1);
    let actions = h.take_actions();
    let resume = actions.iter().position(|a| {
        *a == Action::SetAccepting {
            pid: old[1],
            accepting: true,
        }
    });
    let drain = actions.iter().position(|a| {
        *a == Action::Signal {
            pid: new[0],
            signal: ChildSignal::Drain,
        }
    });
    assert!(resume.is_some() && resume < drain, "{actions:?}");
    assert!(!actions.contains(&Action::SetAccepting {
        pid: old[0],
        accepting: true,
    }));
    assert_eq!(h.machine.generation(), 1);
}

/// A one-child generation commits at its first ready report: nothing to stop first. A rolling
/// reload replaces one child at a time and stops none.
#[test]
fn no_accept_switch_when_the_first_ready_child_commits_or_the_reload_rolls() {
    let mut h = Harness::running(plan(1));
    h.sighup();
    h.ready_all(2);
    assert_no_accept_switch(&h.take_actions());
    let rolling = Plan {
        rolling: true,
        ..plan(2)
    };
    let mut h = Harness::running(rolling);
    let old = h.pids_in(1);
    h.sighup();
    h.ready_all(2);
    // The first old child drained and is gone: the second new child starts while the first
    // serves, half the generation.
    h.exit(old[0], 0);
    assert_eq!(h.pids_in(2).len(), 2);
    assert_no_accept_switch(&h.take_actions());
}

#[test]
fn a_refused_config_changes_nothing() {
    let mut h = Harness::running(plan(2));
    h.next_config = Err("g.conf:3: [DEFAULT] workers: not a number".into());
    h.sighup();
    let actions = h.take_actions();
    assert_eq!(Harness::spawns(&actions), 0);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::Signal { .. } | Action::Commit { .. })));
    assert_eq!(h.machine.generation(), 1);
    assert_eq!(
        h.machine.last_reload().unwrap().result,
        Some(Some("g.conf:3: [DEFAULT] workers: not a number".into()))
    );
    assert_eq!(h.machine.reload_counts(), (1, 0, 1));
}

/// Issue 9, fault 1: a due respawn never waits behind another place's backoff.
#[test]
fn a_due_respawn_does_not_wait_behind_a_backed_off_one() {
    let mut h = Harness::running(plan(2));
    let [mut young, healthy] = h.pids_in(1)[..] else {
        panic!("two children")
    };
    // Seven young deaths in one place: its backoff grows to 6.4 s.
    for _ in 0..7 {
        h.kill9(young);
        let due = h.machine.respawns()[0].due;
        h.now = due;
        h.event(Event::Tick);
        young = *h.pids_in(1).iter().find(|p| **p != healthy).unwrap();
        h.event(Event::ChildReady { pid: young });
        h.advance(Duration::from_millis(10));
    }
    h.kill9(young);
    assert_eq!(h.machine.respawns()[0].attempt, 8);
    let backed_off_until = h.machine.respawns()[0].due;
    assert!(backed_off_until > h.now + Duration::from_secs(6));
    // The long-lived child dies: its replacement starts at once, while the other waits.
    h.advance(YOUNG_DEATH * 5);
    h.take_actions();
    h.kill9(healthy);
    let actions = h.take_actions();
    assert_eq!(
        Harness::spawns(&actions),
        1,
        "the healthy place is refilled now: {actions:?}"
    );
    assert!(h.now < backed_off_until);
    assert_eq!(
        h.machine.respawns().len(),
        1,
        "the backed-off place still waits"
    );
}

/// Issue 9, fault 2: a respawn that cannot start (a lock, a full disk) is retried with
/// backoff, never given up; meanwhile the respawn list says what is pending.
#[test]
fn a_failed_respawn_is_retried_with_backoff_forever() {
    let mut h = Harness::running(plan(1));
    let first = h.pids_in(1)[0];
    h.advance(Duration::from_secs(60));
    h.kill9(first);
    // A long-lived child's place is refilled at once.
    assert!(h.machine.respawns().is_empty());
    let mut delays = Vec::new();
    for _ in 0..12 {
        // The replacement says why it cannot start and exits 2; its place backs off.
        let pid = h.pids_in(1)[0];
        h.event(Event::ChildFailedToStart {
            pid,
            reason: "cannot open the image database: database is locked".into(),
        });
        h.exit(pid, child_exit_cannot_start());
        assert_eq!(h.machine.respawns().len(), 1, "always one start pending");
        let respawn = &h.machine.respawns()[0];
        assert!(respawn.reason.contains("database is locked"));
        let due = respawn.due;
        delays.push(due.saturating_duration_since(h.now));
        h.now = due;
        h.event(Event::Tick);
    }
    assert_eq!(delays[0], RESPAWN_BACKOFF_START);
    assert_eq!(delays[1], RESPAWN_BACKOFF_START * 2);
    assert!(delays.windows(2).all(|pair| pair[0] <= pair[1]));
    assert_eq!(*delays.last().unwrap(), RESPAWN_BACKOFF_MAX);
    // Once the lock is gone, the next one serves and the place is quiet again.
    h.ready_all(1);
    assert!(h.machine.respawns().is_empty());
    assert_eq!(h.machine.phase(), Phase::Running);
}

/// A machine whose first generation of `workers` children was forked as `pids`, none ready.
fn starting(now: Instant, workers: usize, pids: &[Pid]) -> Machine {
    let (mut machine, _) = Machine::start(now, plan(workers));
    for &pid in pids {
        machine.handle(
            now,
            Event::Spawned {
                generation: 1,
                attempt: 0,
                result: Ok(pid),
            },
        );
    }
    machine
}

fn child_exit_cannot_start() -> i32 {
    crate::process::child::EXIT_CANNOT_START
}

/// Issue 9, fault 6: a rolling reload that fails part-way gives every handed-over connection
/// back to the current generation and restores the children it drained.
#[test]
fn a_rolling_reload_that_fails_part_way_hands_connections_back() {
    let mut h = Harness::running(Plan {
        rolling: true,
        ..plan(2)
    });
    let old = h.pids_in(1);
    h.sighup();
    h.ready_all(2);
    // Step 1: the first new child is ready, one old child drains into generation 2.
    let actions = h.take_actions();
    assert!(actions.contains(&Action::SendHandoffTarget {
        pid: old[0],
        generation: 2
    }));
    h.exit(old[0], 0);
    h.take_actions();
    // Step 2: the second new child fails its start.
    let new = h.pids_in(2);
    assert_eq!(new.len(), 2);
    let first_new = new[0];
    h.event(Event::ChildFailedToStart {
        pid: new[1],
        reason: "on purpose".into(),
    });
    h.exit(new[1], 2);
    let actions = h.take_actions();
    // The ready new child (which adopted connections) hands them back before it drains.
    let target = actions.iter().position(|a| {
        *a == Action::SendHandoffTarget {
            pid: first_new,
            generation: 1,
        }
    });
    let drain = actions.iter().position(|a| {
        *a == Action::Signal {
            pid: first_new,
            signal: ChildSignal::Drain,
        }
    });
    assert!(target.is_some() && target < drain, "{actions:?}");
    // The drained old child is put back.
    assert_eq!(Harness::spawns(&actions), 1, "{actions:?}");
    assert_eq!(h.machine.generation(), 1);
    let error = h
        .machine
        .last_reload()
        .unwrap()
        .result
        .clone()
        .unwrap()
        .unwrap();
    assert!(error.contains("on purpose"), "{error}");
}

/// Issue 9, fault 6, the other half: an old child still draining when the rolling reload fails
/// is pointed back at the current generation.
#[test]
fn a_failed_rolling_reload_retargets_the_old_children_it_drained() {
    let mut h = Harness::running(Plan {
        rolling: true,
        drain_bound: None,
        ..plan(2)
    });
    let old = h.pids_in(1);
    h.sighup();
    h.ready_all(2);
    h.take_actions();
    // old[0] is still draining when the step's wait runs out and the next new child fails.
    h.advance(ROLLING_STEP_TIMEOUT);
    let second = *h.pids_in(2).last().unwrap();
    h.exit(second, 2);
    let actions = h.take_actions();
    assert!(
        actions.contains(&Action::SendHandoffTarget {
            pid: old[0],
            generation: 1
        }),
        "{actions:?}"
    );
}

/// Issue 9, fault 10: a rolling step waits for its old child at most ROLLING_STEP_TIMEOUT,
/// even with no drain bound; the old child is not killed for it.
#[test]
fn a_rolling_step_does_not_wait_forever_for_a_draining_child() {
    let mut h = Harness::running(Plan {
        rolling: true,
        drain_bound: None,
        ..plan(2)
    });
    let old = h.pids_in(1);
    h.sighup();
    h.ready_all(2);
    assert_eq!(h.pids_in(2).len(), 1);
    h.advance(ROLLING_STEP_TIMEOUT - Duration::from_millis(1));
    assert_eq!(h.pids_in(2).len(), 1, "still within the step's wait");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.pids_in(2).len(), 2, "the next new child starts");
    h.ready_all(2);
    h.advance(ROLLING_STEP_TIMEOUT);
    h.ready_all(2);
    assert_eq!(h.machine.generation(), 2, "the reload committed");
    assert!(!h.take_actions().iter().any(|a| matches!(
        a,
        Action::Signal {
            signal: ChildSignal::Kill,
            ..
        }
    )));
    assert!(matches!(
        h.state_of(old[0]),
        Some(ChildState::Draining { deadline: None })
    ));
}

/// Issue 9, fault 9: a SIGHUP merged into a running reload is counted in the status at once.
#[test]
fn a_merged_sighup_rewrites_the_status() {
    let mut h = Harness::running(plan(1));
    h.sighup();
    h.take_actions();
    h.sighup();
    let actions = h.take_actions();
    assert!(actions.contains(&Action::WriteStatus), "{actions:?}");
    assert_eq!(h.machine.reload_counts().0, 2);
    // The merged SIGHUP is served by one more reload, numbered 2, after the first ends.
    h.ready_all(2);
    assert_eq!(h.machine.last_reload().unwrap().number, 1);
    assert_eq!(h.machine.reload_in_progress().unwrap().number, 2);
}

/// Issue 9, fault 11: SIGHUP and SIGUSR1 taken while the first generation starts.
#[test]
fn signals_during_start_are_not_lost() {
    let now = Instant::now();
    let (mut machine, _) = Machine::start(now, plan(1));
    let actions = machine.handle(now, Event::Request(MasterRequest::ReopenLogs));
    assert!(actions.contains(&Action::ReopenLog));
    machine.handle(now, Event::Request(MasterRequest::Reload));
    assert_eq!(machine.reload_counts().0, 1);
    machine.handle(
        now,
        Event::Spawned {
            generation: 1,
            attempt: 0,
            result: Ok(7),
        },
    );
    let actions = machine.handle(now, Event::ChildReady { pid: 7 });
    assert!(actions.contains(&Action::LoadConfig { generation: 2 }));
    assert_eq!(machine.reload_in_progress().unwrap().number, 1);
}

#[test]
fn a_child_that_dies_before_the_first_generation_serves_fails_the_start() {
    let now = Instant::now();
    let mut machine = starting(now, 2, &[7, 8]);
    let actions = machine.handle(
        now,
        Event::ChildExited {
            pid: 7,
            exit: Exit::Code(2),
        },
    );
    assert!(actions.contains(&Action::Signal {
        pid: 8,
        signal: ChildSignal::Kill
    }));
    let actions = machine.handle(
        now,
        Event::ChildExited {
            pid: 8,
            exit: Exit::Signal("SIGKILL".into()),
        },
    );
    assert_eq!(actions.last(), Some(&Action::Exit(EXIT_START_FAILED)));
}

#[test]
fn a_graceful_stop_drains_everyone_kills_at_the_bound_and_exits_once_all_are_gone() {
    let mut h = Harness::running(plan(2));
    let pids = h.pids_in(1);
    h.event(Event::Request(MasterRequest::StopGracefully));
    let actions = h.take_actions();
    for pid in &pids {
        assert!(actions.contains(&Action::Signal {
            pid: *pid,
            signal: ChildSignal::Stop
        }));
    }
    h.exit(pids[0], 0);
    h.advance(Duration::from_secs(60));
    let actions = h.take_actions();
    let kills = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Signal {
                    signal: ChildSignal::Kill,
                    ..
                }
            )
        })
        .count();
    assert_eq!(kills, 1);
    h.advance(Duration::from_secs(1));
    assert!(
        !h.take_actions()
            .iter()
            .any(|a| matches!(a, Action::Signal { .. })),
        "killed once, not at every tick"
    );
    h.kill9(pids[1]);
    assert_eq!(h.take_actions().last(), Some(&Action::Exit(0)));
}

#[test]
fn a_reload_whose_child_is_not_ready_in_time_fails_and_the_child_is_killed() {
    let mut h = Harness::running(plan(1));
    h.sighup();
    let new = h.pids_in(2)[0];
    h.advance(CHILD_READY_TIMEOUT);
    assert!(h.take_actions().contains(&Action::Signal {
        pid: new,
        signal: ChildSignal::Kill
    }));
    h.kill9(new);
    let error = h
        .machine
        .last_reload()
        .unwrap()
        .result
        .clone()
        .unwrap()
        .unwrap();
    assert!(
        error.contains("did not report ready within 30 s"),
        "{error}"
    );
    assert_eq!(h.machine.generation(), 1);
}

#[test]
fn a_sighup_while_stopping_is_ignored() {
    let mut h = Harness::running(plan(1));
    h.event(Event::Request(MasterRequest::StopGracefully));
    h.take_actions();
    h.sighup();
    assert!(!h
        .take_actions()
        .iter()
        .any(|a| matches!(a, Action::LoadConfig { .. })));
}

#[test]
fn backoff_doubles_from_the_start_value_up_to_the_cap() {
    assert_eq!(backoff(0), Duration::ZERO);
    assert_eq!(backoff(1), RESPAWN_BACKOFF_START);
    assert_eq!(backoff(2), RESPAWN_BACKOFF_START * 2);
    assert_eq!(backoff(40), RESPAWN_BACKOFF_MAX);
}

/// Review: a child still starting when it is told to drain keeps its start deadline, so a
/// start that hangs ends even with no drain bound, and a stop then finishes.
#[test]
fn a_starter_told_to_drain_keeps_its_start_deadline() {
    let mut h = Harness::running(Plan {
        drain_bound: None,
        ..plan(2)
    });
    h.sighup();
    let new = h.pids_in(2);
    h.exit(new[0], 2);
    assert!(matches!(
        h.state_of(new[1]),
        Some(ChildState::Draining { deadline: Some(_) })
    ));
    h.take_actions();
    h.advance(CHILD_READY_TIMEOUT);
    assert!(h.take_actions().contains(&Action::Signal {
        pid: new[1],
        signal: ChildSignal::Kill
    }));
    h.event(Event::Request(MasterRequest::StopGracefully));
    for pid in h.pids_in(1) {
        h.exit(pid, 0);
    }
    h.kill9(new[1]);
    assert_eq!(h.take_actions().last(), Some(&Action::Exit(0)));
}

/// Review: a fork answered for a generation whose reload already failed is not wanted (the
/// loop skips such a queued `Spawn`).
#[test]
fn a_generation_whose_reload_failed_is_no_longer_wanted() {
    let mut h = Harness::running(plan(3));
    h.machine
        .handle(h.now, Event::Request(MasterRequest::Reload));
    h.machine.handle(
        h.now,
        Event::ConfigLoaded {
            generation: 2,
            result: Ok(plan(3)),
        },
    );
    assert!(h.machine.wants_child_of(2));
    h.machine.handle(
        h.now,
        Event::Spawned {
            generation: 2,
            attempt: 0,
            result: Err("fork() failed while spawning a child for generation 2: EAGAIN".into()),
        },
    );
    assert!(!h.machine.wants_child_of(2));
    assert!(h.machine.wants_child_of(1));
}

/// Review: SIGINT during a reload still gives that reload a verdict.
#[test]
fn sigint_during_a_reload_records_its_verdict() {
    let mut h = Harness::running(plan(1));
    h.sighup();
    h.event(Event::Request(MasterRequest::StopNow));
    assert_eq!(h.machine.reload_counts(), (1, 0, 1));
    assert!(h.machine.reload_in_progress().is_none());
    let error = h
        .machine
        .last_reload()
        .unwrap()
        .result
        .clone()
        .unwrap()
        .unwrap();
    assert!(
        error.contains("stopped before the reload finished"),
        "{error}"
    );
}

/// Review: SIGTERM while the first generation starts drains the ready children (their
/// requests finish) instead of killing them.
#[test]
fn sigterm_while_starting_drains_the_ready_children() {
    let now = Instant::now();
    let mut machine = starting(now, 2, &[7, 8]);
    machine.handle(now, Event::ChildReady { pid: 7 });
    let actions = machine.handle(now, Event::Request(MasterRequest::StopGracefully));
    assert!(actions.contains(&Action::Signal {
        pid: 7,
        signal: ChildSignal::Stop
    }));
    assert!(!actions.contains(&Action::Signal {
        pid: 7,
        signal: ChildSignal::Kill
    }));
    assert_eq!(machine.phase(), Phase::Stopping);
}

/// Issue 10, hole 5: a rolling reload that changes the access control (a revoked token) is
/// carried out in parallel: the whole new generation starts at once, and every old child
/// drains as soon as it is ready, instead of old children serving the old rules step by step.
#[test]
fn a_reload_that_changes_access_control_is_never_rolling() {
    let mut h = Harness::running(Plan {
        rolling: true,
        ..plan(3)
    });
    let old = h.pids_in(1);
    h.next_config = Ok(Plan {
        rolling: true,
        access_changed: true,
        ..plan(3)
    });
    h.sighup();
    assert_eq!(Harness::spawns(&h.take_actions()), 3, "all at once");
    h.ready_all(2);
    let actions = h.take_actions();
    for pid in old {
        assert!(actions.contains(&Action::Signal {
            pid,
            signal: ChildSignal::Drain
        }));
    }
    assert_eq!(h.machine.generation(), 2);
}
