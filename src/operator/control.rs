//! The operator commands `glint-api reload`, `stop` and `status`: they find the running master
//! through the pid file, signal it, and read its verdict from the status file.
//!
//! The config file given with `--config-file` says where the pid and status files are, so it
//! must be the file the server runs with. Each command returns a [`Report`]; `main` prints it and
//! turns its [`Verdict`] into the exit code (the table is in main.rs and docs/OPERATIONS.md).
//!
//! # Which master
//!
//! The pid file names the master. A pid file whose process is gone (a master killed by SIGKILL
//! leaves it behind) or whose process is not a `glint-api` (its pid was reused) is stale: the
//! server is not running, and nothing is signalled. A zombie counts as gone.
//!
//! # Correlating a reload with its verdict
//!
//! `reload` validates the file first: a file that does not load is reported at once, with every
//! problem, and nothing is signalled (the master would refuse it the same way). Otherwise it
//! reads `reloads_requested` (n) from the status file, sends SIGHUP, and waits for a
//! `last_reload` numbered n+1 or more. The master numbers each reload with the count of SIGHUPs
//! taken in when it began, so that reload began after our SIGHUP was counted, and read the file
//! after our edit. SIGHUPs that arrive during a reload are merged into the next one, whose
//! number is then at least n+1 too. The one race left is two operators at once: a SIGHUP the
//! master has counted but not yet written to the status file when we read it makes us accept
//! the verdict of that other reload.
//!
//! # What it does not do
//!
//! It never talks to the master over a socket and never changes its files; the status file is
//! the master's only report. It does not start the server: that is the init script's or the
//! service manager's job (scripts/).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::config::{self, ServerFiles};

/// How long `reload` waits for the master's verdict, and `stop` for the master to exit, unless
/// `--timeout` says otherwise (`stop` waits longer when `graceful_shutdown_timeout` is longer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What `stop` allows beyond `graceful_shutdown_timeout` by default: the master kills the
/// children still draining at that bound, then needs a moment to reap them and exit.
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// How often the commands re-read the status file and check the master while they wait.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The operator commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// SIGHUP, then wait for the verdict.
    Reload,
    /// SIGTERM, then wait for the master to exit.
    Stop,
    /// Describe the running server.
    Status,
}

/// How a command ended. `main` maps each to an exit code, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Done as asked: the reload succeeded, the server stopped (or was not running, for `stop`),
    /// the server is running (for `status`).
    Success,
    /// The reload was refused (invalid config) or failed (a new child did not start), and the
    /// old generation keeps serving; or the command could not do its part (signal refused,
    /// config unreadable, the server stopped before its verdict).
    Failed,
    /// No server is running: no pid file, or a stale one.
    NotRunning,
    /// The master gave no verdict, or did not exit, within the timeout.
    TimedOut,
}

/// What to tell the operator, and how it ended.
#[derive(Debug)]
pub struct Report {
    pub verdict: Verdict,
    /// One or more lines, without a final newline.
    pub message: String,
}

/// The running master, as found through the pid file.
struct Master {
    pid: Pid,
    pid_file: PathBuf,
    status_file: PathBuf,
}

/// Why no master was found.
enum NotFound {
    /// No server: the message says why (no pid file, stale pid file).
    NotRunning(String),
    /// The pid file could not be read.
    Unreadable(String),
}

impl Report {
    fn new(verdict: Verdict, message: impl Into<String>) -> Report {
        Report {
            verdict,
            message: message.into(),
        }
    }
}

/// Runs `command` against the server configured in `config_path`, waiting at most `timeout`
/// (`None`: the command's default).
///
/// `reload` needs a valid file (see the module doc); `stop` and `status` only need to know where
/// the pid and status files are, so an operator's half-finished edit elsewhere in the file does
/// not keep them from finding the server (`config::load_server_files`).
pub fn run(command: Command, config_path: &Path, timeout: Option<Duration>) -> Report {
    let files = match command {
        Command::Reload => config::load(config_path).map(|loaded| {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            ServerFiles::of(&loaded.config)
        }),
        Command::Stop | Command::Status => config::load_server_files(config_path),
    };
    let files = match files {
        Ok(files) => files,
        Err(error) => {
            let consequence = match command {
                Command::Reload => {
                    "not reloading: the running server would refuse this file and keeps its \
                     configuration. Fix the lines above and run reload again"
                }
                Command::Stop | Command::Status => {
                    "cannot tell where the pid file is. Fix the lines above, or signal the \
                     master directly (kill -TERM PID, with the pid from its pid file)"
                }
            };
            return Report::new(
                Verdict::Failed,
                format!(
                    "{}\nglint-api: {} is invalid; {consequence}",
                    error.to_string().trim_end(),
                    config_path.display()
                ),
            );
        }
    };
    match command {
        Command::Reload => reload(&files, timeout.unwrap_or(DEFAULT_TIMEOUT)),
        Command::Stop => stop(&files, timeout.unwrap_or_else(|| stop_timeout(&files))),
        Command::Status => status(&files),
    }
}

/// `stop`'s default bound: long enough for the master's own drain bound to run out.
fn stop_timeout(files: &ServerFiles) -> Duration {
    match files.graceful_shutdown_timeout {
        Some(bound) => DEFAULT_TIMEOUT.max(bound + STOP_MARGIN),
        None => DEFAULT_TIMEOUT,
    }
}

fn reload(config: &ServerFiles, timeout: Duration) -> Report {
    let master = match find_master(config) {
        Ok(master) => master,
        Err(not_found) => return not_found.report("nothing to reload"),
    };
    let deadline = Instant::now() + timeout;
    // A SIGHUP before the first generation serves is not counted in `reloads_requested` (the
    // master reloads once serving instead), so wait for that first.
    let before = loop {
        match master.status() {
            Some(status) if status["phase"] == "running" => break status,
            Some(status) if status["phase"] == "stopping" || status["phase"] == "stopped" => {
                return Report::new(
                    Verdict::Failed,
                    format!(
                        "glint-api: the server (pid {}) is stopping; nothing was reloaded. \
                         Start it again with the new configuration",
                        master.pid
                    ),
                );
            }
            _ => {}
        }
        if let Some(report) = master.gone_or_timed_out(deadline, timeout, "to finish starting") {
            return report;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let requested = before["reloads_requested"].as_u64().unwrap_or(0);
    if let Err(error) = kill(master.pid, Signal::SIGHUP) {
        return Report::new(
            Verdict::Failed,
            format!(
                "glint-api: kill({}, SIGHUP) failed: {error}; run reload as the user that runs \
                 the server, or as root",
                master.pid
            ),
        );
    }
    loop {
        if let Some(status) = master.status() {
            let last = &status["last_reload"];
            if last["number"].as_u64().unwrap_or(0) > requested {
                return reload_verdict(&status);
            }
            if status["phase"] == "stopping" || status["phase"] == "stopped" {
                return Report::new(
                    Verdict::Failed,
                    format!(
                        "glint-api: the server (pid {}) began to stop before it reloaded; \
                         start it again with the new configuration",
                        master.pid
                    ),
                );
            }
        }
        if let Some(report) = master.gone_or_timed_out(deadline, timeout, "to reload") {
            return report;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The report for a finished reload (`status["last_reload"]`).
fn reload_verdict(status: &Value) -> Report {
    let last = &status["last_reload"];
    let number = last["number"].as_u64().unwrap_or(0);
    let generation = last["generation"].as_u64().unwrap_or(0);
    if last["outcome"] == "succeeded" {
        let mut message = format!("glint-api: reload #{number} succeeded: generation {generation}");
        // The status may already show a later reload; its workers are not this one's.
        if status["generation"].as_u64() == Some(generation) {
            message.push_str(&format!(
                " serving with {} worker(s) on {}",
                status["workers"],
                list(&status["listen"])
            ));
        } else {
            message.push_str(" served; a later reload has since replaced it");
        }
        return Report::new(Verdict::Success, message);
    }
    let error = last["error"].as_str().unwrap_or("(no reason recorded)");
    Report::new(
        Verdict::Failed,
        format!(
            "{}\nglint-api: reload #{number} failed; generation {} keeps serving with the old \
             configuration. Fix the problem above and run reload again",
            error.trim_end(),
            status["generation"]
        ),
    )
}

fn stop(config: &ServerFiles, timeout: Duration) -> Report {
    let master = match find_master(config) {
        Ok(master) => master,
        Err(NotFound::NotRunning(why)) => {
            return Report::new(
                Verdict::Success,
                format!("glint-api: {why}; nothing to stop"),
            )
        }
        Err(not_found) => return not_found.report("nothing stopped"),
    };
    if let Err(error) = kill(master.pid, Signal::SIGTERM) {
        return Report::new(
            Verdict::Failed,
            format!(
                "glint-api: kill({}, SIGTERM) failed: {error}; run stop as the user that runs \
                 the server, or as root",
                master.pid
            ),
        );
    }
    let deadline = Instant::now() + timeout;
    while process_alive(master.pid) {
        if Instant::now() >= deadline {
            return Report::new(
                Verdict::TimedOut,
                format!(
                    "glint-api: the server (pid {}) is still stopping after {} s: children are \
                     draining. Wait, or stop it now with kill -INT {}",
                    master.pid,
                    timeout.as_secs(),
                    master.pid
                ),
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Report::new(
        Verdict::Success,
        format!("glint-api: stopped (pid {})", master.pid),
    )
}

fn status(config: &ServerFiles) -> Report {
    let master = match find_master(config) {
        Ok(master) => master,
        Err(NotFound::NotRunning(why)) => {
            return Report::new(
                Verdict::NotRunning,
                format!("glint-api is not running: {why}"),
            )
        }
        Err(not_found) => return not_found.report("status unknown"),
    };
    let Some(status) = master.status() else {
        return Report::new(
            Verdict::Success,
            format!(
                "glint-api is starting (pid {}): no status yet in {}",
                master.pid,
                master.status_file.display()
            ),
        );
    };
    Report::new(Verdict::Success, describe(master.pid, &status))
}

/// The `status` text: one line per fact, `name: value`, so scripts can pick lines.
fn describe(pid: Pid, status: &Value) -> String {
    let phase = status["phase"].as_str().unwrap_or("unknown");
    let mut lines = vec![
        format!("glint-api is {phase} (pid {pid})"),
        format!("phase: {phase}"),
        format!(
            "generation: {} with {} worker(s)",
            status["generation"], status["workers"]
        ),
        format!("listen: {}", list(&status["listen"])),
    ];
    let children = status["children"].as_array().cloned().unwrap_or_default();
    let count = |state: &str| children.iter().filter(|c| c["state"] == state).count();
    lines.push(format!(
        "children: {} serving, {} starting, {} draining",
        count("serving"),
        count("starting"),
        count("draining")
    ));
    if let Some(reload) = status["reload_in_progress"].as_object() {
        lines.push(format!(
            "reload in progress: #{} for generation {} since {}",
            reload["number"], reload["generation"], reload["started_at"]
        ));
    }
    let last = &status["last_reload"];
    if last.is_object() {
        let mut line = format!(
            "last reload: #{} {} at {} (generation {})",
            last["number"],
            last["outcome"].as_str().unwrap_or("?"),
            last["finished_at"].as_str().unwrap_or("?"),
            last["generation"]
        );
        if let Some(error) = last["error"].as_str() {
            line.push(':');
            for error_line in error.trim_end().lines() {
                line.push_str("\n  ");
                line.push_str(error_line);
            }
        }
        lines.push(line);
    } else {
        lines.push("last reload: none".to_string());
    }
    lines.push(format!(
        "reloads: {} requested, {} succeeded, {} failed",
        status["reloads_requested"], status["reloads_succeeded"], status["reloads_failed"]
    ));
    lines.join("\n")
}

/// A JSON list of strings as `a, b`.
fn list(value: &Value) -> String {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_string)
                        .unwrap_or(item.to_string())
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

impl NotFound {
    fn report(self, consequence: &str) -> Report {
        match self {
            NotFound::NotRunning(why) => Report::new(
                Verdict::NotRunning,
                format!("glint-api: {why}; {consequence}. Start the server first"),
            ),
            NotFound::Unreadable(why) => {
                Report::new(Verdict::Failed, format!("glint-api: {why}; {consequence}"))
            }
        }
    }
}

/// Finds the master through `config`'s pid file (see "Which master" in the module doc).
fn find_master(config: &ServerFiles) -> Result<Master, NotFound> {
    let pid_file = &config.pid_file;
    let text = match fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(NotFound::NotRunning(format!(
                "no pid file at {}",
                pid_file.display()
            )))
        }
        Err(error) => {
            return Err(NotFound::Unreadable(format!(
                "cannot read pid file {}: {error}; run as the user that runs the server, or as \
                 root",
                pid_file.display()
            )))
        }
    };
    let pid = match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Pid::from_raw(pid),
        _ => {
            return Err(NotFound::NotRunning(format!(
                "the pid file {} holds no pid ({:?}); remove it",
                pid_file.display(),
                text.trim()
            )))
        }
    };
    if !process_alive(pid) {
        return Err(NotFound::NotRunning(format!(
            "the pid file {} is stale: process {pid} is gone (the master did not stop cleanly); \
             the next start replaces it",
            pid_file.display()
        )));
    }
    if let Some(name) = foreign_process_name(pid) {
        return Err(NotFound::NotRunning(format!(
            "the pid file {} is stale: process {pid} is {name:?}, not glint-api; remove the file",
            pid_file.display()
        )));
    }
    Ok(Master {
        pid,
        pid_file: pid_file.clone(),
        status_file: config.status_file.clone(),
    })
}

impl Master {
    /// The status document if it is this master's (an older master's file may still be there
    /// while this one starts).
    fn status(&self) -> Option<Value> {
        let text = fs::read_to_string(&self.status_file).ok()?;
        let status: Value = serde_json::from_str(&text).ok()?;
        (status["master_pid"].as_i64() == Some(self.pid.as_raw() as i64)).then_some(status)
    }

    /// While waiting: a report if the master has gone or the deadline has passed.
    fn gone_or_timed_out(
        &self,
        deadline: Instant,
        timeout: Duration,
        what: &str,
    ) -> Option<Report> {
        if !process_alive(self.pid) {
            return Some(Report::new(
                Verdict::Failed,
                format!(
                    "glint-api: the server (pid {}) exited while waiting for it {what}; see its \
                     log, and its pid file {}",
                    self.pid,
                    self.pid_file.display()
                ),
            ));
        }
        if Instant::now() >= deadline {
            return Some(Report::new(
                Verdict::TimedOut,
                format!(
                    "glint-api: the server (pid {}) gave no verdict within {} s while waiting for \
                     it {what}; it may still finish: see glint-api status and its log, or wait \
                     longer with --timeout",
                    self.pid,
                    timeout.as_secs()
                ),
            ));
        }
        None
    }
}

/// Whether `pid` is a live process: it exists and is not a zombie (a master that exited but
/// whose parent has not reaped it yet has stopped).
fn process_alive(pid: Pid) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name in parentheses.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => {
            // Without /proc, kill(pid, 0) tells existence (EPERM: exists, not ours).
            matches!(kill(pid, None), Ok(()) | Err(nix::errno::Errno::EPERM))
        }
    }
}

/// The command name of `pid` if it differs from ours: the pid file's pid was reused by another
/// program. `None` when it is a glint-api, or when /proc cannot tell.
fn foreign_process_name(pid: Pid) -> Option<String> {
    let ours = fs::read_to_string("/proc/self/comm").ok()?;
    let theirs = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (ours.trim() != theirs.trim()).then(|| theirs.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_names_phase_generation_children_and_last_reload() {
        let status: Value = serde_json::from_str(
            r#"{"master_pid": 42, "phase": "running", "generation": 3, "workers": 2,
                "listen": ["127.0.0.1:9292"],
                "children": [{"pid": 1, "generation": 3, "state": "serving"},
                             {"pid": 2, "generation": 3, "state": "serving"},
                             {"pid": 3, "generation": 2, "state": "draining"}],
                "draining": [3], "reload_in_progress": null,
                "last_reload": {"number": 2, "generation": 4, "started_at": "a",
                                "finished_at": "2025-01-01T00:00:00Z", "outcome": "failed",
                                "error": "/etc/g.conf:3: [DEFAULT] workers: bad\n/etc/g.conf:4: x"},
                "reloads_requested": 2, "reloads_succeeded": 1, "reloads_failed": 1,
                "updated_at": "b"}"#,
        )
        .unwrap();
        let text = describe(Pid::from_raw(42), &status);
        for expected in [
            "glint-api is running (pid 42)",
            "phase: running",
            "generation: 3 with 2 worker(s)",
            "listen: 127.0.0.1:9292",
            "children: 2 serving, 0 starting, 1 draining",
            "last reload: #2 failed at 2025-01-01T00:00:00Z (generation 4):\n  /etc/g.conf:3: [DEFAULT] workers: bad\n  /etc/g.conf:4: x",
            "reloads: 2 requested, 1 succeeded, 1 failed",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
        }
    }

    #[test]
    fn stop_waits_past_the_drain_bound_by_default() {
        let dir = std::env::temp_dir();
        let config = |extra: &str| {
            ServerFiles::of(
                &config::load_str(&format!("[DEFAULT]\n{extra}\n"), &dir.join("g.conf"))
                    .unwrap()
                    .config,
            )
        };
        assert_eq!(stop_timeout(&config("")), DEFAULT_TIMEOUT + STOP_MARGIN);
        assert_eq!(
            stop_timeout(&config("graceful_shutdown_timeout = 5")),
            DEFAULT_TIMEOUT
        );
        assert_eq!(
            stop_timeout(&config("graceful_shutdown_timeout = 0")),
            DEFAULT_TIMEOUT
        );
        assert_eq!(
            stop_timeout(&config("graceful_shutdown_timeout = 120")),
            Duration::from_secs(130)
        );
    }
}
