//! The operator commands `glint-api reload`, `stop` and `status`: they find the running master,
//! signal it, and read its verdict from the status file.
//!
//! The config file given with `--config-file` says where the pid and status files are, so it
//! must be the file the server runs with. Each command returns a [`Report`]; `main` prints it and
//! turns its [`Verdict`] into the exit code (the table is in main.rs and docs/OPERATIONS.md).
//!
//! # Which master
//!
//! The pid file named by the config names the master. A pid file whose process is gone (a
//! master killed by SIGKILL leaves it behind) or whose process is not a `glint-api` (its pid was
//! reused) is stale. A zombie counts as gone.
//!
//! When the pid file is missing or stale, the commands look in /proc for the master that runs
//! with the same config file: a `glint-api` process that runs the server (no command word in its
//! arguments) with a `--config-file` that resolves to our file, and whose parent is not such a
//! process (its children are forked without exec and share its command line). That is how an
//! operator who changed `pid_file` reaches the master that still uses the old one; the output
//! says that the master was found that way. None found: the server is not running, and nothing
//! is signalled.
//!
//! # Correlating a reload with its verdict
//!
//! `reload` validates the file first: a file that does not load is reported at once, with every
//! problem, and nothing is signalled (the master would refuse it the same way). Otherwise it
//! reads CLOCK_MONOTONIC (t0) just before it sends SIGHUP, and accepts only a `last_reload`
//! whose `began_monotonic_ns` is at t0 or later. The master stamps that field just before it
//! reads the config file for the reload, so such a reload began after our SIGHUP and read the
//! file after the operator's edit. A SIGHUP that arrives during a reload is merged into one more
//! reload after it, which begins after t0 too; the reload under way, which may have read the
//! file before the edit, is never taken for ours. (Counting SIGHUPs could not tell them apart:
//! the count in the status file may be older than a reload the master has already begun.) The
//! one case left is two operators at once: a later reload, also begun after t0, may overwrite
//! ours in the status file before we read it, and we report that one, which read the file after
//! our edit too.
//!
//! The verdict is read from the status file named by the config just validated: the master
//! writes its status there for the reload that read that config, so a reload that moves
//! `status_file` reports at the new path, and that file may not exist until the reload has begun.
//!
//! # What it does not do
//!
//! It never talks to the master over a socket and never changes its files; the status file is
//! the master's only report. It does not start the server: that is the init script's or the
//! service manager's job (scripts/).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::{self, ServerFiles};
use crate::operator::directories;
use crate::operator::status::{self, ChildState, Outcome, Phase, ReloadStatus, Status};

/// The config file the server and the commands use when `--config-file` is not given, as
/// packages install it. The /proc search assumes it for a master started without the option.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/glint/glint-api.conf";

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
    /// config unreadable, the server stopped before its verdict, several masters).
    Failed,
    /// No server is running: no pid file, or a stale one, and no master in /proc.
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

/// The running master, as found.
struct Master {
    pid: Pid,
    /// How it was found, for the operator.
    found: Found,
    /// Where the command reads the master's status: the path in the config it was given.
    status_file: PathBuf,
}

/// How the master was found (see "Which master" in the module doc).
enum Found {
    /// Through the pid file named by the config.
    PidFile,
    /// In /proc by its command line, because the pid file could not say (the reason).
    CommandLine(String),
}

/// Why no master was found.
enum NotFound {
    /// No server: the message says why (no pid file, stale pid file, none in /proc).
    NotRunning(String),
    /// The pid file could not be read, or several masters run with this config file.
    Unusable(String),
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
    // `reload` checks the new file's directories as `--check-config` does, for the user running
    // it: under systemd that is the service's user (ExecReload= runs as User=).
    let mut unusable = Vec::new();
    let files = match command {
        Command::Reload => config::load(config_path).map(|loaded| {
            for warning in loaded.every_warning() {
                eprintln!("warning: {warning}");
            }
            unusable = directories::check(&loaded.config);
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
    if !unusable.is_empty() {
        return Report::new(
            Verdict::Failed,
            format!(
                "{}\nglint-api: not reloading: {} of the directories {} names cannot be used by \
                 user {}; the server keeps its configuration. Fix them and run reload again",
                unusable.join("\n"),
                unusable.len(),
                config_path.display(),
                directories::user_description()
            ),
        );
    }
    let master = match find_master(config_path, &files) {
        Ok(master) => master,
        Err(not_found) => return not_found.report(command),
    };
    match command {
        Command::Reload => reload(&master, timeout.unwrap_or(DEFAULT_TIMEOUT)),
        Command::Stop => stop(&master, timeout.unwrap_or_else(|| stop_timeout(&files))),
        Command::Status => status(&master),
    }
}

/// `stop`'s default bound: long enough for the master's own drain bound to run out.
fn stop_timeout(files: &ServerFiles) -> Duration {
    match files.graceful_shutdown_timeout {
        Some(bound) => DEFAULT_TIMEOUT.max(bound + STOP_MARGIN),
        None => DEFAULT_TIMEOUT,
    }
}

fn reload(master: &Master, timeout: Duration) -> Report {
    let deadline = Instant::now() + timeout;
    // Only a refusal is decided here; a status file that is not there yet (the first
    // generation is starting, or this reload moves `status_file`) is no reason to wait: the
    // master takes a SIGHUP in while it starts and reloads once serving, after t0.
    if let Some(status) = master.status() {
        if matches!(status.phase, Phase::Stopping | Phase::Stopped) {
            return Report::new(
                Verdict::Failed,
                format!(
                    "glint-api: the server (pid {}) is stopping; nothing was reloaded. Start it \
                     again with the new configuration",
                    master.pid
                ),
            );
        }
    }
    if let Some(report) = master.wait_until_handled(Signal::SIGHUP, deadline, timeout) {
        return report;
    }
    let t0 = status::monotonic_ns();
    if let Err(report) = master.send(Signal::SIGHUP, "reload") {
        return report;
    }
    loop {
        if let Some(status) = master.status() {
            if let Some(last) = ours(&status, t0) {
                let mut report = reload_verdict(&status, last);
                report.message = master.with_how_found(report.message);
                return report;
            }
            if matches!(status.phase, Phase::Stopping | Phase::Stopped) {
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

/// The finished reload that answers a SIGHUP sent at `t0` (CLOCK_MONOTONIC, ns), if the status
/// shows one (see "Correlating a reload with its verdict" in the module doc).
fn ours(status: &Status, t0: u64) -> Option<&ReloadStatus> {
    status
        .last_reload
        .as_ref()
        .filter(|last| last.began_monotonic_ns >= t0 && last.outcome != Outcome::InProgress)
}

/// The report for a finished reload `last` of `status`.
fn reload_verdict(status: &Status, last: &ReloadStatus) -> Report {
    let number = last.number;
    let generation = last.generation;
    if last.outcome == Outcome::Succeeded {
        let mut message = format!("glint-api: reload #{number} succeeded: generation {generation}");
        // The status may already show a later reload; its workers are not this one's.
        if status.generation == generation {
            message.push_str(&format!(
                " serving with {} worker(s) on {}",
                status.workers,
                status.listen.join(", ")
            ));
        } else {
            message.push_str(" served; a later reload has since replaced it");
        }
        return Report::new(Verdict::Success, message);
    }
    let error = last.error.as_deref().unwrap_or("(no reason recorded)");
    Report::new(
        Verdict::Failed,
        format!(
            "{}\nglint-api: reload #{number} failed; generation {} keeps serving with the old \
             configuration. Fix the problem above and run reload again",
            error.trim_end(),
            status.generation
        ),
    )
}

fn stop(master: &Master, timeout: Duration) -> Report {
    let deadline = Instant::now() + timeout;
    if let Some(report) = master.wait_until_handled(Signal::SIGTERM, deadline, timeout) {
        return report;
    }
    if let Err(report) = master.send(Signal::SIGTERM, "stop") {
        return report;
    }
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
        master.with_how_found(format!("glint-api: stopped (pid {})", master.pid)),
    )
}

fn status(master: &Master) -> Report {
    let message = match master.read_status() {
        Ok(Some((status, age))) => describe(master.pid, &status, age),
        Ok(None) => format!(
            "glint-api is starting (pid {}): no status yet in {}",
            master.pid,
            master.status_file.display()
        ),
        Err(error) => format!(
            "glint-api is running (pid {}), but its status is unknown: {error}; see its log",
            master.pid
        ),
    };
    Report::new(Verdict::Success, master.with_how_found(message))
}

/// The `status` text: one line per fact, `name: value`, so scripts can pick lines. `age` is how
/// long ago the master wrote `status`, to turn its `due_in_ms` into time left now.
fn describe(pid: Pid, status: &Status, age: Duration) -> String {
    let phase = phase_name(status.phase);
    let no_child_serves = status.phase == Phase::Running && status.serving == 0;
    let mut lines = vec![
        if no_child_serves {
            format!("glint-api is running (pid {pid}), but no child serves")
        } else {
            format!("glint-api is {phase} (pid {pid})")
        },
        format!("phase: {phase}"),
        format!("version: {}", status.version),
        format!(
            "generation: {} with {} worker(s)",
            status.generation, status.workers
        ),
        serving_line(status, age),
        format!("listen: {}", status.listen.join(", ")),
    ];
    let count = |state: ChildState| status.children.iter().filter(|c| c.state == state).count();
    lines.push(format!(
        "children: {} serving, {} starting, {} draining",
        count(ChildState::Serving),
        count(ChildState::Starting),
        count(ChildState::Draining)
    ));
    for respawn in &status.respawns {
        lines.push(format!(
            "respawn: generation {}, attempt {}, next start in {} ms; the last one: {}",
            respawn.generation,
            respawn.attempt,
            due_in_ms_now(respawn.due_in_ms, age),
            one_line(&respawn.reason)
        ));
    }
    if let Some(reload) = &status.reload_in_progress {
        lines.push(format!(
            "reload in progress: #{} for generation {} since {}",
            reload.number, reload.generation, reload.started_at
        ));
    }
    match &status.last_reload {
        Some(last) => {
            let mut line = format!(
                "last reload: #{} {} at {} (generation {})",
                last.number,
                outcome_name(last.outcome),
                last.finished_at.as_deref().unwrap_or("?"),
                last.generation
            );
            if let Some(error) = &last.error {
                line.push(':');
                for error_line in error.trim_end().lines() {
                    line.push_str("\n  ");
                    line.push_str(error_line);
                }
            }
            lines.push(line);
        }
        None => lines.push("last reload: none".to_string()),
    }
    lines.push(format!(
        "reloads: {} requested, {} succeeded, {} failed",
        status.reloads_requested, status.reloads_succeeded, status.reloads_failed
    ));
    lines.join("\n")
}

/// `serving: S of W children`, and while the server runs with fewer, what comes next: the
/// soonest respawn and why the last child in its place ended (issue 9, fault 2: an operator
/// must see at once that no child serves, not infer it from the child list).
fn serving_line(status: &Status, age: Duration) -> String {
    let mut line = format!("serving: {} of {} children", status.serving, status.workers);
    if status.phase != Phase::Running || status.serving >= status.workers {
        return line;
    }
    if status.serving == 0 {
        line.push_str("; no child serves: connections wait in the listen queue");
    }
    match status
        .respawns
        .iter()
        .min_by_key(|respawn| respawn.due_in_ms)
    {
        Some(next) => line.push_str(&format!(
            "; next start in {} ms (attempt {}), last: {}",
            due_in_ms_now(next.due_in_ms, age),
            next.attempt,
            one_line(&next.reason)
        )),
        None if status.reload_in_progress.is_some() => {
            line.push_str("; a reload is under way");
        }
        None => line.push_str("; no start is due: see the log, then reload or restart"),
    }
    line
}

/// `due_in_ms` as written `age` ago, as time left now (0 once due).
fn due_in_ms_now(due_in_ms: u64, age: Duration) -> u64 {
    due_in_ms.saturating_sub(age.as_millis().min(u64::MAX as u128) as u64)
}

/// A reason on one line: its lines joined, so the `name: value` lines stay one per fact.
fn one_line(text: &str) -> String {
    text.trim_end().lines().collect::<Vec<_>>().join(" / ")
}

/// The phase as the status file spells it.
fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Stopping => "stopping",
        Phase::Stopped => "stopped",
    }
}

/// The outcome as the status file spells it.
fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::InProgress => "in_progress",
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
    }
}

impl NotFound {
    fn report(self, command: Command) -> Report {
        match (self, command) {
            (NotFound::NotRunning(why), Command::Status) => Report::new(
                Verdict::NotRunning,
                format!("glint-api is not running: {why}"),
            ),
            // Nothing to stop is what `stop` was asked to reach.
            (NotFound::NotRunning(why), Command::Stop) => Report::new(
                Verdict::Success,
                format!("glint-api: {why}; nothing to stop"),
            ),
            (NotFound::NotRunning(why), Command::Reload) => Report::new(
                Verdict::NotRunning,
                format!("glint-api: {why}; nothing to reload. Start the server first"),
            ),
            (NotFound::Unusable(why), command) => {
                let consequence = match command {
                    Command::Reload => "nothing to reload",
                    Command::Stop => "nothing stopped",
                    Command::Status => "status unknown",
                };
                Report::new(Verdict::Failed, format!("glint-api: {why}; {consequence}"))
            }
        }
    }
}

/// Finds the master: through the pid file named by `files`, or, when that is missing or stale,
/// in /proc by its command line (see "Which master" in the module doc).
fn find_master(config_path: &Path, files: &ServerFiles) -> Result<Master, NotFound> {
    let why_not_pid_file = match pid_from_file(&files.pid_file)? {
        Ok(pid) => {
            return Ok(Master {
                pid,
                found: Found::PidFile,
                status_file: files.status_file.clone(),
            })
        }
        Err(why) => why,
    };
    let masters = masters_running_with(config_path);
    match masters.as_slice() {
        [] => Err(NotFound::NotRunning(format!(
            "{why_not_pid_file}, and no glint-api master runs with {}",
            config_path.display()
        ))),
        [pid] => Ok(Master {
            pid: *pid,
            found: Found::CommandLine(why_not_pid_file),
            status_file: files.status_file.clone(),
        }),
        several => Err(NotFound::Unusable(format!(
            "{why_not_pid_file}, and several glint-api masters run with {} (pids {}); stop all \
             but one (kill -TERM PID)",
            config_path.display(),
            several
                .iter()
                .map(|pid| pid.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The pid in `pid_file`: `Ok(Ok(pid))` for a live glint-api, `Ok(Err(why))` when the file is
/// missing or stale (the caller looks further), `Err` when it cannot be read.
fn pid_from_file(pid_file: &Path) -> Result<Result<Pid, String>, NotFound> {
    let text = match fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(format!("no pid file at {}", pid_file.display())))
        }
        Err(error) => {
            return Err(NotFound::Unusable(format!(
                "cannot read pid file {}: {error}; run as the user that runs the server, or as \
                 root",
                pid_file.display()
            )))
        }
    };
    let pid = match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Pid::from_raw(pid),
        _ => {
            return Ok(Err(format!(
                "the pid file {} holds no pid ({:?}); remove it",
                pid_file.display(),
                text.trim()
            )))
        }
    };
    if !process_alive(pid) {
        return Ok(Err(format!(
            "the pid file {} is stale: process {pid} is gone (the master did not stop cleanly); \
             the next start replaces it",
            pid_file.display()
        )));
    }
    if let Some(name) = foreign_process_name(pid) {
        return Ok(Err(format!(
            "the pid file {} is stale: process {pid} is {name:?}, not glint-api; remove the file",
            pid_file.display()
        )));
    }
    Ok(Ok(pid))
}

/// The glint-api masters whose config file is `config_path` (the same file, however named),
/// from /proc. Processes this user may not inspect are skipped.
fn masters_running_with(config_path: &Path) -> Vec<Pid> {
    let Ok(ours) = fs::canonicalize(config_path) else {
        return Vec::new();
    };
    let Ok(our_name) = fs::read_to_string("/proc/self/comm") else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let myself = std::process::id() as i32;
    // (pid, parent) of every server process with our config: the master and its children.
    let servers: Vec<(i32, i32)> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != myself)
        .filter_map(|pid| {
            let name = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if name.trim() != our_name.trim() {
                return None;
            }
            let (state, parent) = state_and_parent(pid)?;
            if state == "Z" {
                return None;
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&byte| byte == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            // A script named glint-api (the init script run as /etc/init.d/glint-api has that
            // comm) runs its interpreter: argv[0] is then the interpreter, not glint-api.
            let program = Path::new(args.first()?).file_name()?.to_str()?;
            if program != our_name.trim() {
                return None;
            }
            let config = server_config_file(args.get(1..).unwrap_or_default())?;
            // A relative name is relative to that process's working directory.
            let config = fs::read_link(format!("/proc/{pid}/cwd")).ok()?.join(config);
            (fs::canonicalize(config).ok()? == ours).then_some((pid, parent))
        })
        .collect();
    servers
        .iter()
        .filter(|(_, parent)| !servers.iter().any(|(pid, _)| pid == parent))
        .map(|(pid, _)| Pid::from_raw(*pid))
        .collect()
}

/// The config file of a `glint-api` run with `args` (without the program name) if it runs the
/// server; `None` for an operator command, `--check-config`, `--help` or `--version`, which serve
/// nothing.
/// Follows the command line rules of main.rs.
fn server_config_file(args: &[String]) -> Option<PathBuf> {
    let mut config_file = PathBuf::from(DEFAULT_CONFIG_FILE);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "reload" | "stop" | "status" | "--check-config" | "-h" | "--help" | "-V"
            | "--version" => return None,
            "--config-file" => config_file = PathBuf::from(args.next()?),
            _ => {
                if let Some(value) = arg.strip_prefix("--config-file=") {
                    config_file = PathBuf::from(value);
                }
            }
        }
    }
    Some(config_file)
}

impl Master {
    /// Sends `signal` for `command`; the report says what to do when it is refused.
    fn send(&self, signal: Signal, command: &str) -> Result<(), Report> {
        kill(self.pid, signal).map_err(|error| {
            Report::new(
                Verdict::Failed,
                format!(
                    "glint-api: kill({}, {}) failed: {error}; run {command} as the user that \
                     runs the server, or as root",
                    self.pid,
                    signal.as_str()
                ),
            )
        })
    }

    /// The status document if it is this master's (an older master's file may still be there
    /// while this one starts). `None` also while it cannot be read: the callers poll.
    fn status(&self) -> Option<Status> {
        self.read_status().ok().flatten().map(|(status, _)| status)
    }

    /// The status document and how long ago it was written, `Ok(None)` if there is none or it
    /// is another master's, `Err` if the file is there but unusable.
    fn read_status(&self) -> Result<Option<(Status, Duration)>, String> {
        let status = match status::read(&self.status_file) {
            Ok(status) => status,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        if status.master_pid != self.pid.as_raw() as u32 {
            return Ok(None);
        }
        // The master writes a temporary file and renames it, so the modification time is when
        // this document was written.
        let age = fs::metadata(&self.status_file)
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|written| SystemTime::now().duration_since(written).ok())
            .unwrap_or_default();
        Ok(Some((status, age)))
    }

    /// `message`, preceded by how the master was found when it was not through the pid file,
    /// so an operator sees that the pid file is not where the config says (yet).
    fn with_how_found(&self, message: String) -> String {
        match &self.found {
            Found::PidFile => message,
            Found::CommandLine(why) => format!(
                "glint-api: {why}; found the master (pid {}) by its command line in /proc\n{message}",
                self.pid
            ),
        }
    }

    /// Waits until the master handles `signal`, or returns a report. A master found in /proc may
    /// not have installed its handlers yet, and the default action of SIGHUP and SIGTERM is to
    /// kill it on the spot, without a drain.
    fn wait_until_handled(
        &self,
        signal: Signal,
        deadline: Instant,
        timeout: Duration,
    ) -> Option<Report> {
        while !handles(self.pid, signal) {
            if let Some(report) = self.gone_or_timed_out(deadline, timeout, "to start") {
                return Some(report);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        None
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
                     log for why, then start it again",
                    self.pid
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

/// Whether `pid` has a handler for `signal` (SigCgt in /proc/PID/status). True when /proc
/// cannot tell, as before this check existed.
fn handles(pid: Pid, signal: Signal) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    text.lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_none_or(|mask| mask & (1 << (signal as i32 - 1)) != 0)
}

/// Whether `pid` is a live process: it exists and is not a zombie (a master that exited but
/// whose parent has not reaped it yet has stopped).
fn process_alive(pid: Pid) -> bool {
    match state_and_parent(pid.as_raw()) {
        Some((state, _)) => state != "Z",
        None => {
            // Without /proc, kill(pid, 0) tells existence (EPERM: exists, not ours).
            matches!(kill(pid, None), Ok(()) | Err(nix::errno::Errno::EPERM))
        }
    }
}

/// A process's state letter and parent pid, from /proc/PID/stat.
fn state_and_parent(pid: i32) -> Option<(String, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name in parentheses (which may itself hold one): state,
    // parent, ...
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
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

    use crate::operator::status::{ChildStatus, RespawnStatus};

    /// A running server's status: generation 3 with `workers` children, of which `serving`
    /// serve, and the given respawns.
    fn running(workers: usize, serving: usize, respawns: Vec<RespawnStatus>) -> Status {
        Status {
            master_pid: 42,
            version: "0.1.0".to_string(),
            phase: Phase::Running,
            generation: 3,
            workers,
            serving,
            listen: vec!["127.0.0.1:9292".to_string()],
            children: (0..serving as u32)
                .map(|pid| ChildStatus {
                    pid: 100 + pid,
                    generation: 3,
                    state: ChildState::Serving,
                })
                .collect(),
            draining: Vec::new(),
            respawns,
            reload_in_progress: None,
            last_reload: None,
            reloads_requested: 0,
            reloads_succeeded: 0,
            reloads_failed: 0,
            updated_at: "2025-01-01T00:00:00Z".to_string(),
        }
    }

    fn respawn(attempt: u32, due_in_ms: u64, reason: &str) -> RespawnStatus {
        RespawnStatus {
            generation: 3,
            attempt,
            due_in_ms,
            reason: reason.to_string(),
        }
    }

    fn reload_record(number: u64, began_monotonic_ns: u64, outcome: Outcome) -> ReloadStatus {
        ReloadStatus {
            number,
            generation: 3 + number,
            began_monotonic_ns,
            started_at: "a".to_string(),
            finished_at: Some("2025-01-01T00:00:00Z".to_string()),
            outcome,
            error: None,
        }
    }

    fn assert_lines(text: &str, expected: &[&str]) {
        for line in expected {
            assert!(
                text.lines().any(|actual| actual == *line),
                "line {line:?} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn status_text_names_phase_generation_children_and_last_reload() {
        let mut status = running(2, 2, Vec::new());
        status.children.push(ChildStatus {
            pid: 3,
            generation: 2,
            state: ChildState::Draining,
        });
        status.draining = vec![3];
        status.last_reload = Some(ReloadStatus {
            error: Some("/etc/g.conf:3: [DEFAULT] workers: bad\n/etc/g.conf:4: x".to_string()),
            ..reload_record(2, 7, Outcome::Failed)
        });
        (status.reloads_requested, status.reloads_succeeded) = (2, 1);
        status.reloads_failed = 1;
        let text = describe(Pid::from_raw(42), &status, Duration::ZERO);
        assert_lines(
            &text,
            &[
                "glint-api is running (pid 42)",
                "phase: running",
                "generation: 3 with 2 worker(s)",
                "serving: 2 of 2 children",
                "listen: 127.0.0.1:9292",
                "children: 2 serving, 0 starting, 1 draining",
                "reloads: 2 requested, 1 succeeded, 1 failed",
            ],
        );
        assert!(
            text.contains(
                "last reload: #2 failed at 2025-01-01T00:00:00Z (generation 5):\n  \
                 /etc/g.conf:3: [DEFAULT] workers: bad\n  /etc/g.conf:4: x"
            ),
            "{text}"
        );
    }

    /// Issue 9, fault 2: with no child serving, `status` says so on its first line and on the
    /// `serving:` line, with when the next start is due (as of now) and why the last one ended.
    #[test]
    fn status_text_says_plainly_that_no_child_serves_and_when_the_next_start_is() {
        let status = running(
            2,
            0,
            vec![
                respawn(
                    4,
                    1600,
                    "exited with code 2: database is locked\nsee the log",
                ),
                respawn(2, 2500, "killed by signal 9"),
            ],
        );
        let text = describe(Pid::from_raw(42), &status, Duration::from_millis(100));
        assert_lines(
            &text,
            &[
                "glint-api is running (pid 42), but no child serves",
                "phase: running",
                "serving: 0 of 2 children; no child serves: connections wait in the listen \
                 queue; next start in 1500 ms (attempt 4), last: exited with code 2: database \
                 is locked / see the log",
                "respawn: generation 3, attempt 4, next start in 1500 ms; the last one: exited \
                 with code 2: database is locked / see the log",
                "respawn: generation 3, attempt 2, next start in 2400 ms; the last one: killed \
                 by signal 9",
                "children: 0 serving, 0 starting, 0 draining",
            ],
        );
    }

    #[test]
    fn status_text_for_a_child_being_replaced_and_for_no_start_due() {
        let text = describe(
            Pid::from_raw(42),
            &running(2, 1, vec![respawn(1, 50, "killed by signal 9")]),
            Duration::from_millis(80),
        );
        assert_lines(
            &text,
            &[
                "glint-api is running (pid 42)",
                "serving: 1 of 2 children; next start in 0 ms (attempt 1), last: killed by signal 9",
            ],
        );
        let text = describe(
            Pid::from_raw(42),
            &running(1, 0, Vec::new()),
            Duration::ZERO,
        );
        assert_lines(
            &text,
            &[
                "serving: 0 of 1 children; no child serves: connections wait in the listen queue; \
               no start is due: see the log, then reload or restart",
            ],
        );
        // Starting and stopping serve nothing by design: no alarm then.
        for phase in [Phase::Starting, Phase::Stopping] {
            let status = Status {
                phase,
                ..running(2, 0, Vec::new())
            };
            let text = describe(Pid::from_raw(42), &status, Duration::ZERO);
            assert_lines(&text, &["serving: 0 of 2 children"]);
            assert!(!text.contains("no child serves"), "{text}");
        }
    }

    /// Issue 9, fault 4: only a reload that began at or after the SIGHUP's t0 is ours.
    #[test]
    fn only_a_reload_begun_after_the_signal_is_ours() {
        let mut status = running(2, 2, Vec::new());
        assert_eq!(ours(&status, 1000), None);
        status.last_reload = Some(reload_record(1, 999, Outcome::Succeeded));
        assert_eq!(ours(&status, 1000), None, "began before the SIGHUP");
        status.last_reload = Some(reload_record(2, 1000, Outcome::Failed));
        assert_eq!(ours(&status, 1000).map(|r| r.number), Some(2));
        let report = reload_verdict(&status, ours(&status, 1000).unwrap());
        assert_eq!(report.verdict, Verdict::Failed);
        assert!(
            report
                .message
                .contains("reload #2 failed; generation 3 keeps serving"),
            "{}",
            report.message
        );
    }

    #[test]
    fn server_config_file_follows_the_command_line_rules() {
        let args =
            |line: &str| -> Vec<String> { line.split_whitespace().map(String::from).collect() };
        for (line, expected) in [
            ("", Some(DEFAULT_CONFIG_FILE)),
            ("--config-file /etc/g.conf", Some("/etc/g.conf")),
            ("--config-file=g.conf", Some("g.conf")),
            ("--config-file a --config-file=b", Some("b")),
            ("reload --config-file /etc/g.conf", None),
            ("status", None),
            ("--check-config --config-file /etc/g.conf", None),
            ("--help", None),
            ("--version", None),
            ("-V --config-file /etc/g.conf", None),
            ("--config-file", None),
        ] {
            assert_eq!(
                server_config_file(&args(line)),
                expected.map(PathBuf::from),
                "{line:?}"
            );
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
