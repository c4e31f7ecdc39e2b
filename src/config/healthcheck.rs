//! `[healthcheck]`, read as oslo.middleware's healthcheck reads it in Glance: the `backends`
//! that decide the answer of `/healthcheck`, and the files whose presence takes a node out of
//! its load balancer (`disable_by_file_path`, `disable_by_file_paths`).
//!
//! Glance's shipped `glance-api-paste.ini` loads the `disable_by_file` backend with the path
//! `/etc/glance/healthcheck_disable`; glint reads no paste file, so `backends` defaults to
//! `disable_by_file` here and the path is this section's option (unset by default: nothing
//! disables the node). Setting a backend's file turns that backend on, whatever `backends`
//! says. A backend glint does not have (`enable_by_files`, a custom plugin) is
//! warned about and left out, never fatal, like any unknown option.

use std::path::PathBuf;

use super::{RawConfig, Report};

/// The backends glint has, by their oslo.middleware names.
pub const DISABLE_BY_FILE: &str = "disable_by_file";
pub const DISABLE_BY_FILES_PORTS: &str = "disable_by_files_ports";

/// `[healthcheck]` as written, before `finish`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Draft {
    /// `backends` items as written (or the default's).
    pub backends: Option<Vec<String>>,
    /// `disable_by_file_path`, resolved against the config file's folder.
    pub disable_by_file_path: Option<PathBuf>,
    /// `disable_by_file_paths` items as written (`PORT:PATH`).
    pub disable_by_file_paths: Vec<String>,
    /// `detailed`.
    pub detailed: bool,
}

/// What decides the answer of `/healthcheck`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Healthcheck {
    /// The `disable_by_file` backend's file, when that backend is on and the path set: while
    /// it exists, `/healthcheck` answers 503 `DISABLED BY FILE`.
    pub disable_by_file: Option<PathBuf>,
    /// Whether the `disable_by_files_ports` backend is on, and its files by listening port.
    pub by_port: Option<Vec<(u16, PathBuf)>>,
    /// Whether `disable_by_file` is among the backends (it answers `OK` without a path).
    pub by_file: bool,
}

impl Draft {
    pub(super) fn finish(
        self,
        raw: &RawConfig,
        folder: &std::path::Path,
        report: &mut Report,
    ) -> Healthcheck {
        let line = |option: &str| raw.line_of("healthcheck", option);
        let names = self.backends.unwrap_or_default();
        let mut by_file = false;
        let mut by_ports = false;
        for name in names
            .iter()
            .map(|name| name.trim())
            .filter(|name| !name.is_empty())
        {
            match name {
                DISABLE_BY_FILE => by_file = true,
                DISABLE_BY_FILES_PORTS => by_ports = true,
                other => report.warning(
                    line("backends"),
                    Some("healthcheck"),
                    Some("backends"),
                    format!(
                        "glint has no healthcheck backend `{}`; it is left out (glint has \
                         {DISABLE_BY_FILE} and {DISABLE_BY_FILES_PORTS})",
                        other.escape_debug()
                    ),
                ),
            }
        }
        // Setting a backend's file turns the backend on: a path nobody checks would leave the
        // operator believing the node can be taken out (oslo.middleware needs both lines).
        by_file |= self.disable_by_file_path.is_some();
        let mut ports = Vec::new();
        for item in self
            .disable_by_file_paths
            .iter()
            .map(|item| item.trim())
            .filter(|item| !item.is_empty())
        {
            let parsed = item
                .split_once(':')
                .and_then(|(port, path)| Some((port.trim().parse::<u16>().ok()?, path.trim())))
                .filter(|(_, path)| !path.is_empty());
            match parsed {
                Some((port, path)) => ports.push((port, folder.join(path))),
                None => report.error(
                    line("disable_by_file_paths"),
                    Some("healthcheck"),
                    Some("disable_by_file_paths"),
                    format!(
                        "`{}` is not PORT:PATH (a port from 0 to 65535, a colon, a file path)",
                        item.escape_debug()
                    ),
                ),
            }
        }
        by_ports |= !ports.is_empty();
        if self.detailed {
            report.warning(
                line("detailed"),
                Some("healthcheck"),
                Some("detailed"),
                "glint never shows detailed healthcheck output (threads, platform); the \
                 answer stays the short one"
                    .to_string(),
            );
        }
        Healthcheck {
            disable_by_file: self.disable_by_file_path.filter(|_| by_file),
            by_port: by_ports.then_some(ports),
            by_file,
        }
    }
}
