//! The status file: a small JSON document the master rewrites after every change of state, so that
//! the reload command, init scripts, tests and operators can see what the server is doing without
//! asking it over a socket.
//!
//! It is written to a temporary file beside the target and renamed over it, so a reader sees the
//! previous document or the new one, never half of one. Its path is the `status_file` option
//! (beside the pid file by default). The field names are a documented interface
//! (docs/OPERATIONS.md): add fields, never rename or remove one.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

/// The whole document.
#[derive(Debug, Serialize)]
pub struct Status {
    pub master_pid: u32,
    /// "starting", "running", "stopping" or "stopped".
    pub phase: &'static str,
    /// The generation that serves new connections (0 before the first one is ready).
    pub generation: u64,
    /// The configured number of children of the current generation.
    pub workers: usize,
    /// The addresses the current generation listens on, with the actual port (bind_port 0).
    pub listen: Vec<String>,
    /// Every live child, of every generation.
    pub children: Vec<ChildStatus>,
    /// The pids of the children that are draining (a subset of `children`).
    pub draining: Vec<u32>,
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

/// One live child.
#[derive(Debug, Serialize)]
pub struct ChildStatus {
    pub pid: u32,
    pub generation: u64,
    /// "starting", "serving" or "draining".
    pub state: &'static str,
}

/// One reload attempt.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadStatus {
    /// Sequence number of the attempt (1 for the first SIGHUP taken in).
    pub number: u64,
    /// The generation it starts (or started).
    pub generation: u64,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// "in_progress", "succeeded" or "failed".
    pub outcome: &'static str,
    /// What went wrong, for a failed reload: the config errors (file:line: [section] option: ...)
    /// or the child that failed to start.
    pub error: Option<String>,
}

/// Writes `status` to `path` atomically (temporary file in the same directory, then rename).
pub fn write(path: &Path, status: &Status) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    text.push(b'\n');
    // The temporary file lives in the target's directory: rename(2) is atomic only within one
    // filesystem. The pid in its name keeps two masters (a misconfiguration) from mixing writes.
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&text)?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot write status file {}: {error}", path.display()),
        )
    })
}
