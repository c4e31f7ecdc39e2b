//! The status file: a small JSON document the master rewrites after every change of state, so that
//! the reload command, init scripts, tests and operators can see what the server is doing without
//! asking it over a socket.
//!
//! It is written to a temporary file beside the target and renamed over it, so a reader sees the
//! previous document or the new one, never half of one. Its path is the `status_file` option
//! (beside the pid file by default). The field names are a documented interface
//! (docs/OPERATIONS.md): add fields, never rename or remove one.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The whole document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub master_pid: u32,
    /// The master's version (`glint-api --version`); a document written before the field
    /// existed reads as empty.
    #[serde(default)]
    pub version: String,
    pub phase: Phase,
    /// The generation that serves new connections (0 before the first one is ready).
    pub generation: u64,
    /// The configured number of children of the current generation.
    pub workers: usize,
    /// How many children accept new connections now: ready and not draining, of the current
    /// generation or, during a reload, of the new one. Fewer than `workers` while a child is
    /// being replaced; 0 means no child serves and clients wait in the listen queue
    /// (`respawns` says when the next try is due and why the last one failed).
    #[serde(default)]
    pub serving: usize,
    /// The addresses the current generation listens on, with the actual port (bind_port 0).
    pub listen: Vec<String>,
    /// Every live child, of every generation.
    pub children: Vec<ChildStatus>,
    /// The pids of the children that are draining (a subset of `children`).
    pub draining: Vec<u32>,
    /// The children of the current generation waiting to be started again.
    #[serde(default)]
    pub respawns: Vec<RespawnStatus>,
    /// The reload in progress, if any.
    pub reload_in_progress: Option<ReloadStatus>,
    /// The last reload that finished, successfully or not.
    pub last_reload: Option<ReloadStatus>,
    /// How many SIGHUPs the master has taken in (coalesced ones count once).
    pub reloads_requested: u64,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    /// When this document was written (RFC 3339, UTC).
    pub updated_at: String,
}

/// The server's phase, as the status file spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The first generation is not ready yet.
    Starting,
    /// Serving; reloads and respawns happen.
    Running,
    /// SIGTERM or SIGQUIT: children are draining.
    Stopping,
    /// The master has exited (the last document it writes).
    Stopped,
}

/// One live child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub pid: u32,
    pub generation: u64,
    pub state: ChildState,
}

/// A child's state, as the status file spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Forked; not ready yet.
    Starting,
    /// Ready; accepting on its generation's listener.
    Serving,
    /// Told to drain; finishing what it accepted.
    Draining,
    /// Killed (an immediate stop); the master waits for its exit.
    Killed,
}

/// A child of the current generation that died and will be started again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RespawnStatus {
    pub generation: u64,
    /// How many starts in a row have failed or died young for this place (1 for the first
    /// respawn).
    pub attempt: u32,
    /// Milliseconds until the next start, when the document was written.
    pub due_in_ms: u64,
    /// How the last child in this place ended.
    pub reason: String,
}

/// One reload attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Sequence number of the attempt (1 for the first SIGHUP taken in).
    pub number: u64,
    /// The generation it starts (or started).
    pub generation: u64,
    /// CLOCK_MONOTONIC, in nanoseconds, when the master began this reload, just before it read
    /// the config file. `glint-api reload` accepts only a verdict that began after it sent its
    /// SIGHUP: such a reload read the file after the operator's edit.
    #[serde(default)]
    pub began_monotonic_ns: u64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Outcome,
    /// What went wrong, for a failed reload: the config errors (file:line: [section] option: ...)
    /// or the child that failed to start.
    pub error: Option<String>,
}

/// How a reload attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InProgress,
    Succeeded,
    Failed,
}

/// Reads and parses the status file at `path`.
pub fn read(path: &Path) -> io::Result<Status> {
    let text = fs::read(path)?;
    serde_json::from_slice(&text).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "status file {} is not a status document: {error}",
                path.display()
            ),
        )
    })
}

/// CLOCK_MONOTONIC now, in nanoseconds: one clock for every process of the machine, so the
/// master's and a command's readings compare.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// Writes `status` to `path` atomically and safely (`state_file`).
pub fn write(path: &Path, status: &Status) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    text.push(b'\n');
    // The pid in the temporary name keeps two masters (a misconfiguration) from mixing writes.
    let temporary = format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    );
    super::state_file::write_atomically(path, &temporary, &text).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot write status file {}: {error}", path.display()),
        )
    })
}
