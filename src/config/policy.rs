//! `[oslo_policy]`: where the policy file is and how its rules are enforced, read as oslo.policy
//! reads them, and the policy file itself, read while the config loads.
//!
//! The options are in the table (`options.rs`); [`finish`] reads the policy file they name and
//! builds the [`Policy`] the `Config` carries, so the policy is part of the configuration: it is
//! read at start, on every SIGHUP and by `--check-config`, and a policy file with a mistake fails
//! the load like a bad value (each problem names the policy file, its line and the rule). Unlike
//! oslo.policy, glint does not re-read the file when it changes: send SIGHUP.
//!
//! The file is read like the token file: opened non-blocking and refused unless it is a regular
//! file, so a FIFO in its place cannot stop the master (`read_regular_file`).
//!
//! # Compatibility
//!
//! - `policy_file` defaults to `policy.yaml`; a relative path is relative to the config file's
//!   folder. oslo.config's `find_file` also searches `~/.glance`, `~/`, `/etc/glance` and
//!   `/etc`; glint does not, so which file applies never depends on the user running it.
//! - The default file may be missing (the default rules apply, as in Glance); a `policy_file`
//!   set in the file must exist, where oslo.policy would only log at debug level.
//! - `policy_dirs` and `policy_default_rule` are not read (unknown-option warnings).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::policy::Policy;

use super::{read_regular_file, Problem, RawConfig, Report};

/// The section's name in the file.
pub const SECTION: &str = "oslo_policy";

/// The policy: the defaults overridden by the file at `path` (absolute), if it exists or was
/// asked for. Returns the file that was read, if any.
pub(super) fn finish(
    path: &Path,
    enforce_new_defaults: bool,
    enforce_scope: bool,
    raw: &RawConfig,
    report: &mut Report,
) -> (Option<PathBuf>, Arc<Policy>) {
    let defaults = || Arc::new(Policy::defaults(enforce_new_defaults, enforce_scope));
    let option_line = raw.line_of(SECTION, "policy_file");
    let value_refused = report.errors.iter().any(|problem| {
        problem.section.as_deref() == Some(SECTION)
            && problem.option.as_deref() == Some("policy_file")
    });
    if value_refused {
        // The value did not parse and is reported; reading the default instead would add a
        // second, misleading problem.
        return (None, defaults());
    }
    let bytes = match read_regular_file(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && option_line.is_none() => {
            return (None, defaults());
        }
        Err(error) => {
            let fix = if option_line.is_some() {
                "create it, fix the path, or remove the line to use Glance's default rules"
            } else {
                "this is the default policy file beside the config file: make it readable, or \
                 remove it to use Glance's default rules"
            };
            report.error(
                option_line,
                Some(SECTION),
                Some("policy_file"),
                format!("cannot read `{}`: {error}; {fix}", path.display()),
            );
            return (None, defaults());
        }
    };
    let about_file = |line: Option<usize>, rule: Option<String>, message: String| Problem {
        file: path.to_path_buf(),
        line,
        section: None,
        option: rule,
        message,
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let valid_up_to = error.utf8_error().valid_up_to();
            let line = 1 + error.as_bytes()[..valid_up_to]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count();
            report.errors.push(about_file(
                Some(line),
                None,
                format!(
                    "the policy file is not UTF-8 text (bad byte at offset {valid_up_to}); \
                     save it as UTF-8"
                ),
            ));
            return (Some(path.to_path_buf()), defaults());
        }
    };
    match Policy::from_file_text(&text, enforce_new_defaults, enforce_scope) {
        Ok(loaded) => {
            for warning in loaded.warnings {
                report
                    .warnings
                    .push(about_file(warning.line, warning.rule, warning.message));
            }
            (Some(path.to_path_buf()), Arc::new(loaded.policy))
        }
        Err(problems) => {
            for problem in problems {
                report
                    .errors
                    .push(about_file(problem.line, problem.rule, problem.message));
            }
            (Some(path.to_path_buf()), defaults())
        }
    }
}
