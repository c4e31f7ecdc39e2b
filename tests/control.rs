//! The operator's tools: `glint-api reload|stop|status`, the LSB init script run for real, and
//! the notify messages a service manager reads from `$NOTIFY_SOCKET`.

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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
    let what = util::show_output("reload", &output);
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
    let what = util::show_output("reload", &output);
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
    let what = util::show_output("reload", &output);
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
    let what = util::show_output("status", &output);
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
    let what = util::show_output("stop", &output);
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
    util::assert_exit(&status, 3, "status", "");
    assert!(stdout(&status).contains("glint-api is not running: no pid file at"));
    let reload = glint(&["reload"], &config);
    util::assert_exit(&reload, 3, "reload", "");
    assert!(stderr(&reload).contains("nothing to reload. Start the server first"));
    let stop = glint(&["stop"], &config);
    util::assert_exit(&stop, 0, "stop", "");
    assert!(stdout(&stop).contains("nothing to stop"));

    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    fs::write(dir.path().join("glint-api.pid"), format!("{gone_pid}\n")).unwrap();
    let status = glint(&["status"], &config);
    util::assert_exit(&status, 3, "status", "");
    assert!(
        stdout(&status).contains(&format!("is stale: process {gone_pid} is gone")),
        "{}",
        util::show_output("status", &status)
    );
    let reload = glint(&["reload"], &config);
    util::assert_exit(&reload, 3, "reload", "");

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
    util::assert_exit(&reload, 3, "reload", "");
    assert!(
        stderr(&reload).contains("not glint-api"),
        "{}",
        util::show_output("reload", &reload)
    );
    util::assert_exit(&stop, 0, "stop", "");
    assert!(alive, "the unrelated process was signalled");
}

/// Without a pid file, the commands look for the master in /proc. A script named glint-api (as
/// the init script is, run as /etc/init.d/glint-api) that names the config is not a server: its
/// argv[0] is its interpreter. `status` must not take it for the master, nor `stop` signal it.
#[test]
fn a_script_named_glint_api_is_not_taken_for_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(dir.path(), &util::base_config(""));
    let script = dir.path().join("glint-api");
    fs::write(&script, "#!/bin/sh\nsleep 30\necho done\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut impostor = Command::new(&script)
        .arg("--config-file")
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = impostor.id();
    util::wait_until("the script to run as glint-api", DEADLINE, || {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "glint-api")
    });
    let status = glint(&["status"], &config);
    let stop = glint(&["stop"], &config);
    let alive = impostor.try_wait().unwrap().is_none();
    let _ = impostor.kill();
    let _ = impostor.wait();
    util::assert_exit(&status, 3, "status", "");
    assert!(
        stdout(&status).contains("glint-api is not running: no pid file at"),
        "{}",
        util::show_output("status", &status)
    );
    util::assert_exit(&stop, 0, "stop", "");
    assert!(alive, "the script was signalled by stop");
}

/// `glint-api status | head -1` and the like: a closed stdout is not a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(dir.path(), &util::base_config(""));
    for args in [&["--check-config"][..], &["status"], &["--version"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_glint-api"))
            .args(args)
            .arg("--config-file")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reading end goes before the command writes: its write gets EPIPE.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let expected = if args[0] == "status" { 3 } else { 0 };
        util::assert_exit(&output, expected, &args.join(" "), "");
        assert!(
            !stderr(&output).contains("panicked"),
            "{}",
            util::show_output(&args.join(" "), &output)
        );
    }
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
            util::show_output(&format!("{args:?}"), &output)
        );
    }
}

/// Issue 14, part 1: `--version` prints `glint-api VERSION` alone and exits 0, whatever follows
/// it; `--help` names the version too, and so do the running server's status file, `status`
/// and the log's start line.
#[test]
fn version_is_printed_by_version_and_help_and_recorded_by_the_server() {
    let version = env!("CARGO_PKG_VERSION");
    for args in [
        &["--version"][..],
        &["--version", "--no-such-option"],
        &["-V"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_glint-api"))
            .args(args)
            .output()
            .expect("run glint-api");
        let what = util::show_output(&format!("{args:?}"), &output);
        assert_eq!(output.status.code(), Some(0), "{what}");
        assert_eq!(stdout(&output), format!("glint-api {version}\n"), "{what}");
        assert_eq!(stderr(&output), "", "{what}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .arg("--help")
        .output()
        .expect("run glint-api --help");
    let what = util::show_output("--help", &help);
    assert_eq!(help.status.code(), Some(0), "{what}");
    assert!(
        stdout(&help).starts_with(&format!("glint-api {version}\nusage: glint-api ")),
        "{what}"
    );
    assert!(stdout(&help).contains("--version"), "{what}");

    let server = Server::start("");
    assert_eq!(server.status()["version"], version);
    let status = glint(&["status"], &server.config_path);
    assert!(
        stdout(&status).contains(&format!("\nversion: {version}\n")),
        "{}",
        util::show_output("status", &status)
    );
    assert!(
        server
            .log()
            .contains(&format!("master: starting glint-api {version} with ")),
        "{}",
        server.log()
    );
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

/// Runs the init script with `action`, on the config at `config`, with nothing from /etc, and
/// the server run as the invoking user (`GLINT_USER` empty).
fn init_script(action: &str, config: &Path) -> Output {
    init_script_env(action, config, &[("GLINT_USER", "")])
}

/// `init_script` with more settings in the environment.
fn init_script_env(action: &str, config: &Path, env: &[(&str, &str)]) -> Output {
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
        .env("GLINT_DIRS", "")
        .envs(env.iter().copied())
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
    util::assert_exit(&start, 0, "start", &log());
    assert!(stdout(&start).contains("glint-api started (pid "));
    let status = init_script("status", &config);
    util::assert_exit(&status, 0, "status", "");
    assert!(stdout(&status).contains("phase: running"));
    let again = init_script("start", &config);
    util::assert_exit(&again, 0, "start again", "");
    assert!(stdout(&again).contains("already running"));

    fs::write(&config, util::base_config("workers = none")).unwrap();
    let bad = init_script("reload", &config);
    util::assert_exit(&bad, 1, "bad reload", "");
    assert!(
        stderr(&bad).contains("glint-api.conf:9: [DEFAULT] workers:"),
        "{}",
        util::show_output("bad reload", &bad)
    );
    assert!(init_script("status", &config).status.success());

    fs::write(&config, util::base_config("workers = 1")).unwrap();
    let good = init_script("force-reload", &config);
    util::assert_exit(&good, 0, "reload", &log());
    assert!(
        stdout(&good).contains("generation 2 serving with 1 worker(s)"),
        "{}",
        util::show_output("reload", &good)
    );

    let stop = init_script("stop", &config);
    util::assert_exit(&stop, 0, "stop", &log());
    assert!(!dir.path().join("glint-api.pid").exists());
    let status = init_script("status", &config);
    util::assert_exit(&status, 3, "status", "");
    let stop = init_script("stop", &config);
    assert_eq!(
        stop.status.code(),
        Some(0),
        "stopping a stopped service succeeds"
    );
    let reload = init_script("reload", &config);
    util::assert_exit(&reload, 7, "reload", "");

    // An invalid config: start refuses at once, loudly, with LSB's "not configured".
    fs::write(&config, util::base_config("workers = none")).unwrap();
    let start = init_script("start", &config);
    util::assert_exit(&start, 6, "start", "");
    assert!(stderr(&start).contains("glint-api.conf:9: [DEFAULT] workers:"));
}

/// The `Uid:` (real, effective) and `NoNewPrivs:` of process `pid`, from /proc.
fn uid_and_no_new_privs(pid: i32) -> (String, String) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| {
                value
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    (field("Uid:"), field("NoNewPrivs:"))
}

/// Issue 14, part 2: run as root, the init script runs the server as its system user
/// (`GLINT_USER`, `GLINT_GROUP`; here nobody, since the test cannot create users), with no new
/// privileges, after creating the directories of `GLINT_DIRS` for it; reload, status and stop
/// (run as root) still reach it. A user that does not exist refuses the start with LSB's 6.
/// Run by another user, the script cannot switch and runs the server as that user.
#[test]
fn init_script_runs_the_server_as_its_system_user() {
    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(dir.path(), &util::base_config("workers = 1"));
    let _guard = InitScriptServer {
        pid_file: dir.path().join("glint-api.pid"),
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let (user, uid) = if root {
        ("nobody", "65534 65534".to_string())
    } else {
        // SAFETY: as above.
        let me = unsafe { libc::geteuid() };
        ("", format!("{me} {me}"))
    };
    if root {
        // The server writes its pid, status, log, database and images into the test's dir.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    }
    let runtime = dir.path().join("run-glint");
    let env = [
        ("GLINT_USER", user),
        ("GLINT_GROUP", if root { "nogroup" } else { "" }),
        ("GLINT_DIRS", runtime.to_str().unwrap()),
    ];
    let log = || {
        format!(
            "--- output.log ---\n{}--- glint-api.log ---\n{}",
            fs::read_to_string(dir.path().join("output.log")).unwrap_or_default(),
            fs::read_to_string(dir.path().join("glint-api.log")).unwrap_or_default()
        )
    };

    if root {
        let missing = init_script_env(
            "start",
            &config,
            &[("GLINT_USER", "glint-no-such-user"), ("GLINT_GROUP", "")],
        );
        util::assert_exit(&missing, 6, "start", "");
        assert!(
            stderr(&missing).contains("user glint-no-such-user does not exist"),
            "{}",
            util::show_output("start", &missing)
        );
    }

    let start = init_script_env("start", &config, &env);
    util::assert_exit(&start, 0, "start", &log());
    let master: i32 = fs::read_to_string(dir.path().join("glint-api.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut processes = vec![master];
    processes.extend(util::children_of(master));
    assert_eq!(processes.len(), 2, "the master and its one child");
    for pid in processes {
        let (process_uid, no_new_privs) = uid_and_no_new_privs(pid);
        assert_eq!(process_uid, uid, "the uids of process {pid}");
        if root {
            assert_eq!(no_new_privs, "1", "NoNewPrivs of process {pid}");
        }
    }
    if root {
        use std::os::unix::fs::MetadataExt;
        let metadata = fs::metadata(&runtime).expect("GLINT_DIRS created");
        assert_eq!(
            (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777),
            (65534, 65534, 0o750)
        );
    }

    fs::write(&config, util::base_config("workers = 2")).unwrap();
    let reload = init_script_env("reload", &config, &env);
    util::assert_exit(&reload, 0, "reload", &log());
    for pid in util::children_of(master) {
        assert_eq!(uid_and_no_new_privs(pid).0, uid, "the uids of child {pid}");
    }
    let stop = init_script_env("stop", &config, &env);
    util::assert_exit(&stop, 0, "stop", &log());
    assert!(!util::process_alive(master));
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

/// The notify protocol as systemd's Type=notify (and notify-reload) reads it, from a datagram socket the test
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

/// Issue 9, fault 5: a reload can move `pid_file`. The new file does not exist until the master
/// has read the new config, so the commands find the master by its command line in /proc, say
/// so, and the master then writes the new pid file and removes the old one.
#[test]
fn reload_command_applies_a_new_pid_file() {
    let server = Server::start("status_file = glint-api.status.json");
    server.write_config("status_file = glint-api.status.json\npid_file = run/moved.pid");
    let found = format!(
        "found the master (pid {}) by its command line in /proc",
        server.master_pid
    );
    let status = glint(&["status"], &server.config_path);
    let what = util::show_output("status before the reload", &status);
    assert_eq!(status.status.code(), Some(0), "{what}");
    assert!(
        stdout(&status).contains("no pid file at") && stdout(&status).contains(&found),
        "{what}"
    );

    let output = glint(&["reload"], &server.config_path);
    let what = util::show_output("reload", &output);
    assert_eq!(output.status.code(), Some(0), "{what}\n{}", server.log());
    assert!(
        stdout(&output).contains(&found) && stdout(&output).contains("reload #1 succeeded"),
        "{what}"
    );
    assert_eq!(
        fs::read_to_string(server.path("run/moved.pid"))
            .unwrap_or_default()
            .trim(),
        server.master_pid.to_string(),
        "{}",
        server.log()
    );
    assert!(
        !server.path("glint-api.pid").exists(),
        "the old pid file is left"
    );
    let status = glint(&["status"], &server.config_path);
    let what = util::show_output("status after the reload", &status);
    assert_eq!(status.status.code(), Some(0), "{what}");
    assert!(!stdout(&status).contains("by its command line"), "{what}");
}

/// Issue 9, fault 5: a reload can move `status_file`. The command waits for the verdict in the
/// new file, which the master writes only once it has read the new config; `stop` then follows
/// the server through it.
#[test]
fn reload_command_applies_a_new_status_file() {
    let mut server = Server::start("");
    server.write_config("status_file = state/moved.json");
    let output = glint(&["reload"], &server.config_path);
    let what = util::show_output("reload", &output);
    assert_eq!(output.status.code(), Some(0), "{what}\n{}", server.log());
    assert!(
        stdout(&output).contains("reload #1 succeeded: generation 2 serving"),
        "{what}"
    );
    let moved_path = server.path("state/moved.json");
    let moved = |key: &str| -> serde_json::Value {
        fs::read_to_string(&moved_path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .map(|status| status[key].clone())
            .unwrap_or_default()
    };
    assert_eq!(moved("master_pid"), server.master_pid, "{}", server.log());
    assert_eq!(moved("generation"), 2);

    let stop = glint(&["stop", "--timeout", "20"], &server.config_path);
    util::assert_exit(&stop, 0, "stop", "");
    assert_eq!(server.wait_exit(DEADLINE), "exit status: 0");
    assert_eq!(moved("phase"), "stopped");
}

/// Issue 9, fault 5, a failed reload: its config names another `status_file`, and its new
/// generation cannot start. The master writes the verdict to the new file too, so the command
/// reports the failure (exit 1) instead of waiting for a file that never comes (exit 4 before).
#[test]
fn reload_command_reports_a_failed_reload_that_moves_the_status_file() {
    let server = Server::start_env("", &[("GLINT_FAULT_CHILD_START", "2")]);
    server.write_config("status_file = state/moved.json");
    let output = glint(&["reload", "--timeout", "20"], &server.config_path);
    let what = util::show_output("reload", &output);
    assert_eq!(output.status.code(), Some(1), "{what}\n{}", server.log());
    assert!(
        stderr(&output).contains("reload #1 failed")
            && stderr(&output).contains("GLINT_FAULT_CHILD_START"),
        "{what}"
    );
    // The old status file still serves the running generation.
    assert_eq!(server.status()["generation"], 1);
}

/// Issue 9, fault 4: `reload` gives the verdict of the reload its own SIGHUP caused, not of one
/// already under way when it ran. A plain SIGHUP starts reload #1, held up in its child's start,
/// whose generation cannot start; the operator edits the file and runs `glint-api reload`, whose
/// reload (#2) succeeds. The command must say #2 succeeded (exit 0), not #1 failed (exit 1).
///
/// The order is forced, not timed: reload #1's child is held in its start
/// (`GLINT_FAULT_CHILD_HOLD`) until the command has signalled, then fails it; reload #2
/// (rolling) waits for the old child to drain an upload the test finishes only after the
/// command has read the status file showing #1's failure.
#[test]
fn reload_command_reports_its_own_reload_not_one_already_under_way() {
    let hold = util::Hold::new();
    let server = Server::start_held("workers = 1", &hold, "2/1");
    let mut upload = Upload::start(&server);
    server.signal(libc::SIGHUP);
    // The log says as well that reload #1 began, should the status file lag.
    util::wait_until("reload #1 to begin", DEADLINE, || {
        server.log().contains("SIGHUP: reloading")
            || !server.status()["reload_in_progress"].is_null()
    });
    server.write_config("workers = 1\nreload_strategy = rolling");
    let opens = FileOpens::watch(server.dir.path(), "glint-api.status.json");
    let mut command = Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .args(["reload", "--timeout", "20", "--config-file"])
        .arg(&server.config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run glint-api reload");
    // The command reads the status file before its SIGHUP and again after it, so its second
    // open means its SIGHUP is sent. Nothing else opens that name: the master writes a
    // temporary file and renames it.
    let mut exited = || command.try_wait().unwrap().is_some();
    opens.wait_for(2, DEADLINE, &mut exited);
    hold.fail();
    // Reload #1 fails; reload #2 waits for the old child, which waits for the upload.
    util::wait_until("reload #1 to fail and reload #2 to begin", DEADLINE, || {
        let status = server.status();
        status["last_reload"]["number"] == 1 && status["reload_in_progress"]["number"] == 2
    });
    // The test's own reads above are in the queue; the next open after them is the command's,
    // of a file that shows #1's failure until the upload ends.
    opens.discard_queued();
    opens.wait_for(1, DEADLINE, &mut exited);
    upload.finish(&server);
    let output = command
        .wait_with_output()
        .expect("wait for glint-api reload");
    let what = util::show_output("reload", &output);
    assert_eq!(output.status.code(), Some(0), "{what}\n{}", server.log());
    assert!(
        stdout(&output).contains("reload #2 succeeded: generation 3 serving with 1 worker(s)"),
        "{what}"
    );
}

/// An upload whose body is half sent: the child serving it cannot finish draining until the
/// test sends the rest.
struct Upload {
    stream: std::net::TcpStream,
}

impl Upload {
    fn start(server: &Server) -> Upload {
        let create = util::send_body(
            server.addr(),
            "POST",
            "/v2/images",
            "application/json",
            br#"{"disk_format": "raw", "container_format": "bare"}"#,
        );
        assert_eq!(create.status, 201, "{create:?}");
        let id = serde_json::from_slice::<serde_json::Value>(&create.body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut stream = server.connect();
        write!(
            stream,
            "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 8\r\n\r\nhalf"
        )
        .unwrap();
        // Once the image is `saving`, a worker is inside the request: a drain waits for it.
        util::wait_until("the upload to begin", DEADLINE, || {
            util::get(server.addr(), &format!("/v2/images/{id}")).is_ok_and(|image| {
                serde_json::from_slice::<serde_json::Value>(&image.body)
                    .is_ok_and(|image| image["status"] == "saving")
            })
        });
        Upload { stream }
    }

    fn finish(&mut self, server: &Server) {
        self.stream.write_all(b"done").unwrap();
        let mut reader = std::io::BufReader::new(&self.stream);
        let response = util::read_response(&mut reader, "PUT")
            .unwrap()
            .expect("a response to the upload");
        assert_eq!(response.status, 204, "{response:?}\n{}", server.log());
    }
}

/// Counts the opens of one file name in a directory with inotify, so a test can tell that
/// another process has read a file a given number of times.
struct FileOpens {
    inotify: std::os::fd::OwnedFd,
    name: Vec<u8>,
}

impl FileOpens {
    fn watch(dir: &Path, name: &str) -> FileOpens {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: inotify_init1 returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let inotify = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid inotify descriptor and a NUL-terminated path.
        let watch = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_OPEN) };
        assert!(
            watch >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        FileOpens {
            inotify,
            name: name.as_bytes().to_vec(),
        }
    }

    /// Forgets the opens queued so far (a test's own reads).
    fn discard_queued(&self) {
        use std::os::fd::AsRawFd;
        let mut buffer = vec![0u8; 64 * 1024];
        // SAFETY: reads into a buffer of the given length; the descriptor is non-blocking.
        while unsafe {
            libc::read(
                self.inotify.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        } > 0
        {}
    }

    /// Waits until the file has been opened `n` more times, or until `done` says there is no
    /// point (the process that would open it has exited), or panics at `deadline`.
    fn wait_for(&self, n: usize, deadline: Duration, done: &mut dyn FnMut() -> bool) {
        use std::os::fd::AsRawFd;
        let end = std::time::Instant::now() + deadline;
        let mut seen = 0;
        let mut buffer = vec![0u8; 64 * 1024];
        while seen < n && !done() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the file was opened {seen} time(s), not {n}, within {deadline:?}"
            );
            let mut poll = libc::pollfd {
                fd: self.inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // At most 20 ms, to look at `done` again.
            let millis = left.min(Duration::from_millis(20)).as_millis() as i32;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut poll, 1, millis) };
            // SAFETY: reads into a buffer of the given length.
            let got = unsafe {
                libc::read(
                    self.inotify.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            let mut at = 0;
            // Each event: wd (4), mask (4), cookie (4), len (4), then `len` bytes of name padded
            // with NULs.
            while got > 0 && at + 16 <= got as usize {
                let len = u32::from_ne_bytes(buffer[at + 12..at + 16].try_into().unwrap()) as usize;
                let name = &buffer[at + 16..at + 16 + len];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(len)];
                if name == self.name.as_slice() {
                    seen += 1;
                }
                at += 16 + len;
            }
        }
    }
}
