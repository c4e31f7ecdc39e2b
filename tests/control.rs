//! The operator's tools: `glint-api reload|stop|status`, the LSB init script run for real, and
//! the notify messages a service manager reads from `$NOTIFY_SOCKET`.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::{self, Server, DEADLINE};

/// Runs `glint-api ARGS --config-file CONFIG`.
fn glint(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .args(args)
        .arg("--config-file")
        .arg(config)
        .output()
        .expect("run glint-api")
}

/// The command, its exit code and both streams, for failure messages.
fn show(what: &str, output: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn reload_command_prints_the_new_generation_and_worker_count() {
    let server = Server::start("workers = 1");
    server.write_config("workers = 3");
    let output = glint(&["reload"], &server.config_path);
    let what = show("reload", &output);
    assert_eq!(output.status.code(), Some(0), "{what}\n{}", server.log());
    assert!(
        stdout(&output)
            .contains("reload #1 succeeded: generation 2 serving with 3 worker(s) on 127.0.0.1:"),
        "{what}"
    );
    let status = server.status();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_reload"]["outcome"], "succeeded");
}

/// An invalid file is refused before any signal: every problem with file:line and option, exit 1,
/// and the server keeps serving its old generation, not even asked to reload.
#[test]
fn reload_command_with_a_bad_config_exits_1_with_file_line_and_option() {
    let server = Server::start("");
    server.write_config("workers = many\nbind_port = 70000");
    let output = glint(&["reload"], &server.config_path);
    let what = show("reload", &output);
    assert_eq!(output.status.code(), Some(1), "{what}");
    let stderr = stderr(&output);
    for expected in [
        "glint-api.conf:9: [DEFAULT] workers:",
        "glint-api.conf:10: [DEFAULT] bind_port:",
        "not reloading",
        "Fix the lines above and run reload again",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing\n{what}");
    }
    let status = server.status();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["reloads_requested"], 0, "nothing was signalled");
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
}

/// A file that loads but that the master cannot apply (its port is taken): the verdict comes
/// from the master through the status file, exit 1, and the old generation keeps serving.
#[test]
fn reload_command_reports_the_masters_rejection() {
    let server = Server::start("");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    server.write_config(&format!("bind_port = {port}"));
    let output = glint(&["reload"], &server.config_path);
    let what = show("reload", &output);
    assert_eq!(output.status.code(), Some(1), "{what}\n{}", server.log());
    let stderr = stderr(&output);
    assert!(
        stderr.contains("cannot listen on the new address")
            && stderr.contains("reload #1 failed; generation 1 keeps serving"),
        "{what}"
    );
    assert_eq!(server.status()["generation"], 1);
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
}

#[test]
fn status_command_describes_the_running_server() {
    let server = Server::start("");
    let output = glint(&["status"], &server.config_path);
    let what = show("status", &output);
    assert_eq!(output.status.code(), Some(0), "{what}");
    let text = stdout(&output);
    for expected in [
        format!("glint-api is running (pid {})", server.master_pid),
        "phase: running".to_string(),
        "generation: 1 with 2 worker(s)".to_string(),
        format!("listen: {}", server.addr()),
        "children: 2 serving, 0 starting, 0 draining".to_string(),
        "last reload: none".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected:?} missing\n{what}");
    }
}

/// `stop` returns once the master has drained its children and exited.
#[test]
fn stop_command_waits_until_the_server_is_gone() {
    let mut server = Server::start("");
    let children = server.children(None);
    let output = glint(&["stop", "--timeout", "20"], &server.config_path);
    let what = show("stop", &output);
    assert_eq!(output.status.code(), Some(0), "{what}\n{}", server.log());
    assert!(
        stdout(&output).contains(&format!("stopped (pid {})", server.master_pid)),
        "{what}"
    );
    assert_eq!(server.wait_exit(DEADLINE), "exit status: 0");
    assert_eq!(server.status()["phase"], "stopped");
    assert!(!server.path("glint-api.pid").exists());
    for pid in children {
        assert!(!util::process_alive(pid), "child {pid} outlived stop");
    }
}

/// With no server: reload and status exit 3 (LSB "not running"), stop succeeds; a stale pid file
/// (its process is gone) counts as not running and is named.
#[test]
fn commands_without_a_server_report_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(dir.path(), &util::base_config(""));
    let status = glint(&["status"], &config);
    assert_eq!(status.status.code(), Some(3), "{}", show("status", &status));
    assert!(stdout(&status).contains("glint-api is not running: no pid file at"));
    let reload = glint(&["reload"], &config);
    assert_eq!(reload.status.code(), Some(3), "{}", show("reload", &reload));
    assert!(stderr(&reload).contains("nothing to reload. Start the server first"));
    let stop = glint(&["stop"], &config);
    assert_eq!(stop.status.code(), Some(0), "{}", show("stop", &stop));
    assert!(stdout(&stop).contains("nothing to stop"));

    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    fs::write(dir.path().join("glint-api.pid"), format!("{gone_pid}\n")).unwrap();
    let status = glint(&["status"], &config);
    assert_eq!(status.status.code(), Some(3), "{}", show("status", &status));
    assert!(
        stdout(&status).contains(&format!("is stale: process {gone_pid} is gone")),
        "{}",
        show("status", &status)
    );
    let reload = glint(&["reload"], &config);
    assert_eq!(reload.status.code(), Some(3), "{}", show("reload", &reload));

    // A live process that is not glint-api (its pid was reused) is never signalled.
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    fs::write(
        dir.path().join("glint-api.pid"),
        format!("{}\n", other.id()),
    )
    .unwrap();
    let reload = glint(&["reload"], &config);
    let stop = glint(&["stop"], &config);
    let alive = other.try_wait().unwrap().is_none();
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(reload.status.code(), Some(3), "{}", show("reload", &reload));
    assert!(
        stderr(&reload).contains("not glint-api"),
        "{}",
        show("reload", &reload)
    );
    assert_eq!(stop.status.code(), Some(0), "{}", show("stop", &stop));
    assert!(alive, "the unrelated process was signalled");
}

#[test]
fn command_line_errors_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(dir.path(), &util::base_config(""));
    for args in [
        &["status", "--timeout", "5"][..],
        &["reload", "--timeout", "soon"],
        &["reload", "--check-config"],
        &["--config-file", "x", "reload"],
    ] {
        let output = glint(args, &config);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{}",
            show(&format!("{args:?}"), &output)
        );
    }
}

/// Kills the server an init script started if a test fails before stopping it.
struct InitScriptServer {
    pid_file: PathBuf,
}

impl Drop for InitScriptServer {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            for child in util::children_of(pid) {
                // SAFETY: kill(2) on processes this test started.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Runs the init script with `action`, on the config at `config`, with nothing from /etc.
fn init_script(action: &str, config: &Path) -> Output {
    let dir = config.parent().unwrap();
    Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/init.d/glint-api"))
        .arg(action)
        .env("DAEMON", env!("CARGO_BIN_EXE_glint-api"))
        .env("CONFIG", config)
        .env("OUTPUT_LOG", dir.join("output.log"))
        .env("GLINT_DEFAULTS", dir.join("no-defaults"))
        .env("START_TIMEOUT", "20")
        .env("STOP_TIMEOUT", "20")
        .env("RELOAD_TIMEOUT", "20")
        .output()
        .expect("run the init script")
}

/// The LSB init script, for real: start backgrounds the server and returns once it serves;
/// reload is `glint-api reload` (a bad config fails loudly and changes nothing); stop and status.
#[test]
fn init_script_starts_reloads_reports_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(dir.path(), &util::base_config(""));
    let _guard = InitScriptServer {
        pid_file: dir.path().join("glint-api.pid"),
    };
    let log = || {
        format!(
            "--- output.log ---\n{}--- glint-api.log ---\n{}",
            fs::read_to_string(dir.path().join("output.log")).unwrap_or_default(),
            fs::read_to_string(dir.path().join("glint-api.log")).unwrap_or_default()
        )
    };

    let start = init_script("start", &config);
    assert_eq!(
        start.status.code(),
        Some(0),
        "{}\n{}",
        show("start", &start),
        log()
    );
    assert!(stdout(&start).contains("glint-api started (pid "));
    let status = init_script("status", &config);
    assert_eq!(status.status.code(), Some(0), "{}", show("status", &status));
    assert!(stdout(&status).contains("phase: running"));
    let again = init_script("start", &config);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        show("start again", &again)
    );
    assert!(stdout(&again).contains("already running"));

    fs::write(&config, util::base_config("workers = none")).unwrap();
    let bad = init_script("reload", &config);
    assert_eq!(bad.status.code(), Some(1), "{}", show("bad reload", &bad));
    assert!(
        stderr(&bad).contains("glint-api.conf:9: [DEFAULT] workers:"),
        "{}",
        show("bad reload", &bad)
    );
    assert!(init_script("status", &config).status.success());

    fs::write(&config, util::base_config("workers = 1")).unwrap();
    let good = init_script("force-reload", &config);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}\n{}",
        show("reload", &good),
        log()
    );
    assert!(
        stdout(&good).contains("generation 2 serving with 1 worker(s)"),
        "{}",
        show("reload", &good)
    );

    let stop = init_script("stop", &config);
    assert_eq!(
        stop.status.code(),
        Some(0),
        "{}\n{}",
        show("stop", &stop),
        log()
    );
    assert!(!dir.path().join("glint-api.pid").exists());
    let status = init_script("status", &config);
    assert_eq!(status.status.code(), Some(3), "{}", show("status", &status));
    let stop = init_script("stop", &config);
    assert_eq!(
        stop.status.code(),
        Some(0),
        "stopping a stopped service succeeds"
    );
    let reload = init_script("reload", &config);
    assert_eq!(reload.status.code(), Some(7), "{}", show("reload", &reload));

    // An invalid config: start refuses at once, loudly, with LSB's "not configured".
    fs::write(&config, util::base_config("workers = none")).unwrap();
    let start = init_script("start", &config);
    assert_eq!(start.status.code(), Some(6), "{}", show("start", &start));
    assert!(stderr(&start).contains("glint-api.conf:9: [DEFAULT] workers:"));
}

/// Reads one notification, or panics after the deadline.
fn notification(socket: &UnixDatagram, server: &Server) -> String {
    let mut buffer = [0u8; 4096];
    match socket.recv(&mut buffer) {
        Ok(n) => String::from_utf8_lossy(&buffer[..n]).into_owned(),
        Err(error) => panic!("no notification: {error}\n{}", server.log()),
    }
}

fn monotonic_usec(message: &str) -> u64 {
    message
        .lines()
        .find_map(|line| line.strip_prefix("MONOTONIC_USEC="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {message:?}"))
}

fn now_monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// The notify protocol as systemd's Type=notify-reload reads it, from a datagram socket the test
/// binds as NOTIFY_SOCKET: READY once serving, RELOADING (timestamped after the SIGHUP) and READY
/// for a good and for a bad reload, STOPPING at SIGTERM, and nothing from the children.
#[test]
fn notify_socket_gets_ready_reloading_and_stopping() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket_path = socket_dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut server = Server::start_env("", &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);

    let ready = notification(&socket, &server);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}\n", server.master_pid)),
        "{ready}"
    );
    assert!(
        ready.contains("STATUS=generation 1 serving with 2 worker(s)"),
        "{ready}"
    );

    server.write_config("workers = 1");
    let sighup = now_monotonic_usec();
    assert_eq!(server.reload()["outcome"], "succeeded");
    let reloading = notification(&socket, &server);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
    let usec = monotonic_usec(&reloading);
    assert!(
        usec >= sighup && usec <= now_monotonic_usec(),
        "MONOTONIC_USEC={usec} is not between the SIGHUP ({sighup}) and now"
    );
    let ready = notification(&socket, &server);
    assert!(
        ready.starts_with("READY=1\n")
            && ready.contains("STATUS=reload #1 succeeded: generation 2 serving with 1 worker(s)"),
        "{ready}"
    );

    server.write_config("workers = many");
    assert_eq!(server.reload()["outcome"], "failed");
    let reloading = notification(&socket, &server);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
    monotonic_usec(&reloading);
    let ready = notification(&socket, &server);
    assert!(
        ready.starts_with("READY=1\n")
            && ready.contains("STATUS=reload #2 failed, generation 2 keeps serving: ")
            && ready.contains("glint-api.conf:9: [DEFAULT] workers"),
        "{ready}"
    );

    server.signal(libc::SIGTERM);
    let stopping = notification(&socket, &server);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
    assert_eq!(server.wait_exit(DEADLINE), "exit status: 0");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buffer = [0u8; 4096];
    if let Ok(n) = socket.recv(&mut buffer) {
        panic!(
            "unexpected notification after STOPPING: {:?}",
            String::from_utf8_lossy(&buffer[..n])
        );
    }
}
