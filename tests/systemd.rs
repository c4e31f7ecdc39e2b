//! The systemd unit, `scripts/systemd/glint-api.service` (issue 14, part 2), checked offline with
//! this machine's `systemd-analyze`: what can be checked without systemd running as PID 1.
//!
//! Not checked here: the unit run by a real systemd (its sandbox, its notify handshake, a real
//! `systemctl reload`). The notify messages are checked from a socket the test binds
//! (`control::notify_socket_gets_ready_reloading_and_stopping`), and the reload command's exit
//! codes by `control::reload_command_*`; this module checks that the unit wires them together.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{self, Server};

/// The unit file, as shipped.
fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd/glint-api.service")
}

fn unit_text() -> String {
    fs::read_to_string(unit_path()).expect("read the unit file")
}

/// The values of `key` in the unit's `[Service]` section, in order.
fn service_values(text: &str, key: &str) -> Vec<String> {
    let mut section = "";
    let mut values = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" {
            if let Some((name, value)) = line.split_once('=') {
                if name.trim() == key {
                    values.push(value.trim().to_string());
                }
            }
        }
    }
    values
}

/// Runs `systemd-analyze ARGS`, or panics saying what to install.
fn systemd_analyze(args: &[&std::ffi::OsStr]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run systemd-analyze ({error}): install systemd (Debian: apt-get install systemd)")
        })
}

fn show(what: &str, output: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `systemd-analyze verify` passes the unit with nothing to say. It exits 0 even for a key it
/// does not know (the old unit's `Type=notify-reload` and `ReloadSignal=` on systemd 252 drew
/// two warnings and exit 0), so any output at all fails the test. verify insists that the
/// commands exist, so the copy it reads has `/usr/bin/glint-api` replaced by the built binary;
/// nothing else changes.
#[test]
fn systemd_unit_verifies_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("glint-api.service");
    let text = unit_text();
    assert!(text.contains("/usr/bin/glint-api "));
    fs::write(
        &copy,
        text.replace(
            "/usr/bin/glint-api ",
            &format!("{} ", env!("CARGO_BIN_EXE_glint-api")),
        ),
    )
    .unwrap();
    let output = systemd_analyze(&["verify".as_ref(), copy.as_os_str()]);
    let what = show("systemd-analyze verify", &output);
    assert_eq!(output.status.code(), Some(0), "{what}");
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "{what}"
    );
}

/// `systemd-analyze security --offline=true` rates the unit's exposure 3.0 or less ("OK").
#[test]
fn systemd_unit_exposure_is_at_most_3() {
    let path = unit_path();
    let output = systemd_analyze(&[
        "security".as_ref(),
        "--offline=true".as_ref(),
        "--no-pager".as_ref(),
        path.as_os_str(),
    ]);
    let what = show("systemd-analyze security", &output);
    assert_eq!(output.status.code(), Some(0), "{what}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let exposure: f64 = stdout
        .lines()
        .find_map(|line| {
            line.split_once("Overall exposure level for glint-api.service: ")
                .map(|(_, rest)| rest)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level\n{what}"));
    assert!(exposure <= 3.0, "exposure {exposure} is above 3.0\n{what}");
}

/// The unit is `Type=notify` (systemd 252 knows no `notify-reload`), runs as the system user
/// glint with its state, log and runtime directories, and its `ExecReload=` is `glint-api
/// reload` on the same binary and config file as `ExecStart=`: so `systemctl reload` waits for
/// the master's verdict and fails when the reload does. That command line, run against a real
/// server whose config has just gone bad, exits 1 with the problem and the old generation keeps
/// serving; on a good config it exits 0.
#[test]
fn systemd_unit_reloads_through_glint_api_reload() {
    let text = unit_text();
    assert_eq!(service_values(&text, "Type"), ["notify"]);
    assert_eq!(service_values(&text, "NotifyAccess"), ["main"]);
    assert_eq!(service_values(&text, "User"), ["glint"]);
    assert_eq!(service_values(&text, "Group"), ["glint"]);
    for key in ["StateDirectory", "LogsDirectory", "RuntimeDirectory"] {
        assert_eq!(service_values(&text, key), ["glint"], "{key}");
    }
    let exec_start = service_values(&text, "ExecStart");
    assert_eq!(
        exec_start,
        ["/usr/bin/glint-api --config-file /etc/glint/glint-api.conf"]
    );
    let exec_reload = service_values(&text, "ExecReload");
    assert_eq!(
        exec_reload,
        ["/usr/bin/glint-api reload --config-file /etc/glint/glint-api.conf"]
    );
    // A reload waits at most 60 s for the verdict; systemd, which bounds ExecReload= by
    // TimeoutStartSec=, must not give up first.
    let timeout: u64 = service_values(&text, "TimeoutStartSec")[0].parse().unwrap();
    assert!(timeout > 60, "TimeoutStartSec={timeout}");

    // The ExecReload= line, with the built binary and the test server's config.
    let server = Server::start("");
    let words: Vec<String> = exec_reload[0]
        .split_whitespace()
        .map(|word| match word {
            "/usr/bin/glint-api" => env!("CARGO_BIN_EXE_glint-api").to_string(),
            "/etc/glint/glint-api.conf" => server.config_path.to_str().unwrap().to_string(),
            other => other.to_string(),
        })
        .collect();
    let run = || {
        Command::new(&words[0])
            .args(&words[1..])
            .output()
            .expect("run the ExecReload= command")
    };
    server.write_config("workers = many");
    let bad = run();
    let what = show("ExecReload on a bad config", &bad);
    assert_eq!(bad.status.code(), Some(1), "{what}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("glint-api.conf:9: [DEFAULT] workers:"),
        "{what}"
    );
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
    server.write_config("workers = 1");
    let good = run();
    let what = show("ExecReload on a good config", &good);
    assert_eq!(good.status.code(), Some(0), "{what}\n{}", server.log());
    assert!(
        String::from_utf8_lossy(&good.stdout).contains("generation 2 serving with 1 worker(s)"),
        "{what}"
    );
}
