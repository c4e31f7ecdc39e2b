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

/// SIGINT stops at once: children are killed, the master exits 0 and removes its pid file.
#[test]
fn sigint_stops_immediately() {
    let mut server = Server::start("");
    let children = server.children(None);
    server.signal(libc::SIGINT);
    let exit = server.wait_exit(DEADLINE);
    assert_eq!(exit, "exit status: 0", "{}", server.log());
    assert!(!server.path("glint-api.pid").exists());
    for pid in children {
        util::wait_until("children to be gone", Duration::from_secs(5), || {
            !util::process_alive(pid)
        });
    }
}

/// SIGUSR1 after the log file was renamed (logrotate): the master and the children write to a
/// fresh file at the configured path.
#[test]
fn sigusr1_reopens_the_log_file_after_a_rename() {
    // Every request counts below, health checks included (their access lines are off by default).
    let server = Server::start("access_log_healthcheck = true");
    let log = server.path("glint-api.log");
    let rotated = server.path("glint-api.log.1");
    let mut n_requests = 0;
    let mut request = |path: &str| {
        assert_eq!(util::get(server.addr(), path).unwrap().status, 200);
        n_requests += 1;
    };
    for _ in 0..20 {
        request("/healthcheck");
    }
    std::fs::rename(&log, &rotated).unwrap();
    // Between the rename and the reopen, lines still go to the renamed file (logrotate's
    // window): none may be lost.
    for _ in 0..20 {
        request("/healthcheck");
    }
    server.signal(libc::SIGUSR1);
    util::wait_until("the master to reopen its log", DEADLINE, || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("log file reopened"))
    });
    // Each child reopens on its own SIGUSR1; poll with requests until one lands in the new file.
    util::wait_until("a child's access line in the new file", DEADLINE, || {
        request("/versions");
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("\"GET /versions\" 200"))
    });
    let access_lines = |text: &str| {
        text.lines()
            .filter(|line| {
                line.contains("\"GET /healthcheck\" 200") || line.contains("\"GET /versions\" 200")
            })
            .count()
    };
    // Each child writes its access lines in batches (`access_log_flush_ms`): poll until the
    // last ones are written.
    util::wait_until("every request's access line written", DEADLINE, || {
        let in_both = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_or(0, |text| access_lines(&text))
        };
        in_both(&rotated) + in_both(&log) >= n_requests
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(
        old.contains("generation 1 serving"),
        "the old file keeps its lines"
    );
    assert_eq!(
        access_lines(&old) + access_lines(&new),
        n_requests,
        "every request has its access line in one of the two files"
    );
    for line in old.lines().chain(new.lines()) {
        assert!(line.contains(" glint-api["), "a broken line: {line:?}");
    }
}

/// `--check-config` validates without starting anything: exit 0 and the effective settings for a
/// good file, exit 1 and every problem with its line for a bad one.
#[test]
fn check_config_reports_effective_settings_or_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = util::temp_config(dir.path(), "[DEFAULT]\nbind_port = 9393\nworkers = 3\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .args(["--check-config", "--config-file"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("bind_port = 9393") && stdout.contains("workers = 3"),
        "{stdout}"
    );
    assert!(!dir.path().join("glint-api.pid").exists());

    let bad = util::temp_config(
        dir.path(),
        "[DEFAULT]\nworkers = many\nbind_prot = 1\nbackLog\nbind_port = 70000\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .args(["--check-config", "--config-file"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for expected in [
        "glint-api.conf:2: [DEFAULT] workers",
        "glint-api.conf:4:",
        "glint-api.conf:5: [DEFAULT] bind_port",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
}

/// A second master on the same pid file refuses to start while the first runs.
#[test]
fn second_master_with_the_same_pid_file_refuses_to_start() {
    let server = Server::start("");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .arg("--config-file")
        .arg(&server.config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("which is running; stop it first"),
        "{stderr}"
    );
    assert!(
        server.path("glint-api.pid").exists(),
        "the first master's pid file stays"
    );
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
}

/// `--check-config` on `file_text` (in a fresh folder): (exit code, stdout, stderr).
fn check_config(file_text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = util::temp_config(dir.path(), file_text);
    std::fs::write(dir.path().join("tokens"), "alpha\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .args(["--check-config", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The start of the exposure warning (issue 11, part 6).
const NO_AUTHENTICATION: &str =
    "[DEFAULT] auth_strategy: NO AUTHENTICATION on a non-loopback address";

/// `--check-config` warns about `noauth` on a non-loopback address, says what to do, and still
/// finds the file valid; loopback addresses and token auth draw no such warning. Nothing binds.
#[test]
fn check_config_warns_about_noauth_on_a_non_loopback_address() {
    for host in ["0.0.0.0", "::", "192.0.2.7"] {
        let (code, _, stderr) = check_config(&format!("[DEFAULT]\nbind_host = {host}\n"));
        assert_eq!(code, Some(0), "{stderr}");
        let warning = stderr
            .lines()
            .find(|line| line.contains(NO_AUTHENTICATION))
            .unwrap_or_else(|| panic!("no warning for {host}:\n{stderr}"));
        assert!(warning.starts_with("warning: "), "{warning}");
        for advice in [
            &format!("bind_host is {host},"),
            "may read, upload, change and delete every image",
            "set auth_strategy = token with an auth_token_file",
            "or bind_host = 127.0.0.1 to serve this host only",
        ] {
            assert!(
                warning.contains(advice),
                "{advice:?} missing from {warning}"
            );
        }
    }
    // The default bind_host is the wildcard.
    let (_, _, stderr) = check_config("[DEFAULT]\nbind_port = 9393\n");
    assert!(stderr.contains(NO_AUTHENTICATION), "{stderr}");
    for text in [
        "[DEFAULT]\nbind_host = 127.0.0.1\n",
        "[DEFAULT]\nbind_host = ::1\n",
        "[DEFAULT]\nbind_host = localhost\n",
        "[DEFAULT]\nbind_host = 0.0.0.0\nauth_strategy = token\nauth_token_file = tokens\n",
    ] {
        let (code, _, stderr) = check_config(text);
        assert_eq!(code, Some(0), "{text}: {stderr}");
        assert!(!stderr.contains("NO AUTHENTICATION"), "{text}: {stderr}");
    }
}

/// The lines of `log` that are the exposure warning at level WARN.
fn exposure_warnings(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains(" WARN ") && line.contains(NO_AUTHENTICATION))
        .count()
}

/// A server with `noauth` bound to 0.0.0.0 logs the warning at start and at every reload that
/// applies such a config, and stops once a reload binds it to 127.0.0.1. No request is sent at
/// all: the server is watched through its status file and log only.
#[test]
fn noauth_on_the_wildcard_address_warns_at_start_and_at_each_reload() {
    let server = Server::start("bind_host = 0.0.0.0");
    let log = server.log();
    assert_eq!(exposure_warnings(&log), 1, "{log}");
    assert!(
        log.lines()
            .any(|line| line.contains(" master: ") && line.contains("bind_host is 0.0.0.0,")),
        "{log}"
    );

    server.write_config("bind_host = 0.0.0.0\nworkers = 1");
    server.reload_succeeds();
    assert_eq!(exposure_warnings(&server.log()), 2, "{}", server.log());

    server.write_config("workers = 1");
    server.reload_succeeds();
    assert_eq!(exposure_warnings(&server.log()), 2, "{}", server.log());
}
