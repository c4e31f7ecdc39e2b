//! The master's behaviour seen from outside: reloads, stops, respawns and bad configs.

use std::time::Duration;

use crate::util::{self, Server, DEADLINE};

/// Glance's own reload check (glance/tests/functional/test_reload.py): workers 1 -> 2 by SIGHUP;
/// the parent pid stays, exactly 2 children remain, none of them an old pid.
#[test]
fn sighup_changes_worker_count_and_replaces_every_child() {
    let server = Server::start("workers = 1");
    let old_children = server.children(None);
    assert_eq!(old_children.len(), 1, "status: {}", server.status());
    let master_before = server.status()["master_pid"].clone();

    server.write_config("workers = 2");
    let verdict = server.reload();
    assert_eq!(
        verdict["outcome"],
        "succeeded",
        "reload: {verdict}\n{}",
        server.log()
    );
    server.wait_for("the old child to exit", DEADLINE, |status| {
        status["children"].as_array().is_some_and(|c| c.len() == 2)
    });
    util::wait_until("the old child process to be gone", DEADLINE, || {
        !util::process_alive(old_children[0])
    });
    let status = server.status();
    assert_eq!(status["master_pid"], master_before);
    assert_eq!(status["generation"], 2);
    let children = util::children_of(server.master_pid);
    assert_eq!(children.len(), 2, "children of the master: {children:?}");
    for pid in &children {
        assert!(!old_children.contains(pid), "old child {pid} still there");
    }
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
}

/// SIGTERM drains every child and the master exits 0, removing its pid file.
#[test]
fn sigterm_stops_gracefully_and_removes_the_pid_file() {
    let mut server = Server::start("");
    let children = server.children(None);
    assert!(server.path("glint-api.pid").exists());
    server.signal(libc::SIGTERM);
    let exit = server.wait_exit(DEADLINE);
    assert_eq!(exit, "exit status: 0", "{}", server.log());
    assert!(!server.path("glint-api.pid").exists());
    assert_eq!(server.status()["phase"], "stopped");
    for pid in children {
        util::wait_until("children to exit", Duration::from_secs(5), || {
            !util::process_alive(pid)
        });
    }
}
