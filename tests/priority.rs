//! The master's CPU priority (`process::priority`): ten nice levels above the nice it was
//! started with where the system allows it, every thread of every child back at that nice, and
//! a line that says which, with how to allow it when it was refused. (The RLIMIT_NICE path that
//! systemd's `LimitNICE=` and the init script's `prlimit` give an unprivileged master is not
//! tested: raising the limit needs CAP_SYS_RESOURCE, which this machine's root lacks.)

use std::fs;
use std::path::PathBuf;

use crate::util::{self, Server, DEADLINE};

/// The nice of each thread of `pid` (field 19 of /proc/PID/task/TID/stat).
fn thread_nices(pid: i32) -> Vec<i32> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|error| panic!("/proc/{pid}/task: {error}"));
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("stat")).ok())
        .map(|stat| nice_of(&stat))
        .collect()
}

/// The nice field of a `stat` line: the 17th field after the command's closing parenthesis.
fn nice_of(stat: &str) -> i32 {
    let after = &stat[stat.rfind(')').expect("a stat line") + 1..];
    after
        .split_whitespace()
        .nth(16)
        .and_then(|nice| nice.parse().ok())
        .unwrap_or_else(|| panic!("no nice in {stat:?}"))
}

/// The nice of this test's thread, which a master it starts inherits.
fn own_nice() -> i32 {
    nice_of(&fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat"))
}

/// Raising a priority needs CAP_SYS_NICE, which root has: the precondition of the test that
/// expects the master to rise.
fn assert_root() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test runs the server as root, which may raise its priority (CI runs as root)"
    );
}

/// Every thread of every child of `server` at `nice`.
fn assert_children_at(server: &Server, nice: i32, when: &str) {
    let children = server.children(Some("serving"));
    assert!(!children.is_empty(), "{when}: no child serves");
    for child in children {
        let nices = thread_nices(child);
        assert!(
            !nices.is_empty() && nices.iter().all(|n| *n == nice),
            "{when}: child {child}'s threads run at {nices:?}, not all at {nice}"
        );
    }
}

/// A server started through `wrapper`, once its first generation serves.
fn start_under(wrapper: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config_path: PathBuf = dir.path().join("glint-api.conf");
    fs::write(&config_path, util::base_config("workers = 2")).expect("write config");
    let server = Server::launch_under(dir, config_path, wrapper);
    server.wait_for("the first generation to serve", DEADLINE, |status| {
        status["phase"] == "running" && status["generation"] == 1
    });
    server
}

#[test]
fn the_master_runs_ten_nice_levels_above_its_children_whose_threads_all_serve_at_its_start_nice() {
    assert_root();
    let start = own_nice();
    let raised = (start - 10).max(-20);
    assert!(
        raised < start,
        "the test must start below nice -20's ceiling: {start}"
    );
    // The line that says so is at debug level.
    let server = Server::start("workers = 2\ndebug = true");
    assert_eq!(thread_nices(server.master_pid), vec![raised]);
    assert_children_at(&server, start, "generation 1");
    server.reload_succeeds();
    server.wait_for("generation 2 alone", DEADLINE, |status| {
        status["generation"] == 2
            && status["children"]
                .as_array()
                .is_some_and(|children| children.iter().all(|c| c["generation"] == 2))
    });
    assert_children_at(&server, start, "generation 2");
    assert_eq!(thread_nices(server.master_pid), vec![raised]);
    let line = format!(
        "the master and starting children run at nice {raised}, children serve at nice {start}"
    );
    assert_eq!(server.log().matches(&line).count(), 1, "{}", server.log());
}

/// Root without CAP_SYS_NICE and with RLIMIT_NICE at 0: nothing can rise, all serve at the
/// start nice, and the log says how to allow it.
#[test]
fn without_the_right_to_rise_everything_runs_at_the_start_nice_and_the_log_says_how_to_allow_it() {
    let start = own_nice();
    let server = start_under(&[
        "prlimit",
        "--nice=0",
        "setpriv",
        "--bounding-set=-sys_nice",
        "--inh-caps=-sys_nice",
        "--ambient-caps=-sys_nice",
        "--",
    ]);
    assert_eq!(thread_nices(server.master_pid), vec![start]);
    assert_children_at(&server, start, "generation 1");
    let log = server.log();
    let allowed = (start - 10).max(-20);
    assert!(
        log.contains(&format!(
            "the master runs at nice {start} like its children"
        )) && log.contains(&format!("allow nice {allowed} "))
            && log.contains(&format!("LimitNICE={allowed:+}")),
        "{log}"
    );
}
