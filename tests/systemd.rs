//! The systemd unit, `scripts/systemd/glint-api.service` (issue 14, part 2), checked offline with
//! this machine's `systemd-analyze`: what can be checked without systemd running as PID 1.
//!
//! The unit's system-call filter and address families are checked against what glint does:
//! a server run under strace(1) through a start, an upload, downloads, a reload with a
//! keep-alive connection handed over, and a stop.
//!
//! Not checked here: the unit run by a real systemd (its sandbox applied, its notify handshake,
//! a real `systemctl reload`). The notify messages are checked from a socket the test binds
//! (`control::notify_socket_gets_ready_reloading_and_stopping`), and the reload command's exit
//! codes by `control::reload_command_*`; this module checks that the unit wires them together.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::{self, Server, DEADLINE};

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

/// `systemd-analyze verify` passes the unit with nothing to say. It exits 0 even for a key it
/// does not know (the old unit's `Type=notify-reload` and `ReloadSignal=` on systemd 252 drew
/// two warnings and exit 0), so any output at all fails the test. verify insists that the
/// commands exist, so the copy it reads has `/usr/bin/glint-api` replaced by the built binary;
/// nothing else changes. `--man=no`: the unit's `Documentation=` names glint-api(8), which only
/// the Debian package installs; `package::package_installs_runs_as_glint_rotates_reloads_and_purges`
/// runs verify with the man page check on the installed unit.
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
    let output = systemd_analyze(&["verify".as_ref(), "--man=no".as_ref(), copy.as_os_str()]);
    let what = util::show_output("systemd-analyze verify", &output);
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
    let what = util::show_output("systemd-analyze security", &output);
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
    let what = util::show_output("ExecReload on a bad config", &bad);
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
    let what = util::show_output("ExecReload on a good config", &good);
    assert_eq!(good.status.code(), Some(0), "{what}\n{}", server.log());
    assert!(
        String::from_utf8_lossy(&good.stdout).contains("generation 2 serving with 1 worker(s)"),
        "{what}"
    );
}

/// The system calls a filter entry allows: a call's name, or a `@group` expanded (recursively)
/// with `systemd-analyze syscall-filter`.
fn expand_syscall_group(entry: &str, into: &mut BTreeSet<String>) {
    if !entry.starts_with('@') {
        into.insert(entry.to_string());
        return;
    }
    let output = systemd_analyze(&["syscall-filter".as_ref(), entry.as_ref()]);
    assert!(
        output.status.success(),
        "{}",
        util::show_output(entry, &output)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // The first line names the group; its members follow, indented; `#` lines are comments.
    for line in text.lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        expand_syscall_group(line, into);
    }
}

/// Runs `glint-api ARGS --config-file CONFIG` under `strace -f`, its trace to `trace`.
fn traced(trace: &Path, args: &[&str], config: &Path) -> Command {
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-o"])
        .arg(trace)
        .arg(env!("CARGO_BIN_EXE_glint-api"))
        .args(args)
        .arg("--config-file")
        .arg(config);
    command
}

/// Every system call glint makes in a start, an upload, downloads whole and by range, a reload
/// through `glint-api reload` that hands a keep-alive connection to the new generation, a
/// status and a stop (the commands traced too, as `ExecReload=` runs one under the same
/// filter) is allowed by the unit's `SystemCallFilter=`, and every socket it opens is of a
/// family in its `RestrictAddressFamilies=`. Under the unit, a call outside the filter would
/// fail with EPERM.
#[test]
fn systemd_unit_allows_every_system_call_and_socket_glint_uses() {
    let text = unit_text();
    let mut allowed = BTreeSet::new();
    for filter in service_values(&text, "SystemCallFilter") {
        assert!(!filter.starts_with('~'), "a deny list: update this test");
        for entry in filter.split_whitespace() {
            expand_syscall_group(entry, &mut allowed);
        }
    }
    assert!(allowed.contains("sendmsg") && allowed.contains("clone3"));
    let families: Vec<String> = service_values(&text, "RestrictAddressFamilies")
        .iter()
        .flat_map(|value| value.split_whitespace().map(str::to_string))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(dir.path(), &util::base_config("workers = 1"));
    let trace = |name: &str| dir.path().join(name);
    let mut master = traced(&trace("master.trace"), &[], &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run strace ({error}): install strace (Debian: apt-get install strace)")
        });
    let status = || -> serde_json::Value {
        fs::read_to_string(dir.path().join("glint-api.status.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    };
    let log = || fs::read_to_string(dir.path().join("glint-api.log")).unwrap_or_default();
    util::wait_until("the traced server to serve", DEADLINE, || {
        status()["phase"] == "running"
    });
    let addr: std::net::SocketAddr = status()["listen"][0].as_str().unwrap().parse().unwrap();

    let id = util::create_image(addr);
    let data = vec![7u8; 300_000];
    let upload = util::request(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[("Content-Type", "application/octet-stream")],
        &data,
    )
    .unwrap();
    assert_eq!(upload.status, 204, "{upload:?}\n{}", log());
    let download = util::get(addr, &format!("/v2/images/{id}/file")).unwrap();
    assert_eq!(download.body.len(), data.len());
    let range = util::request(
        addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[("Range", "bytes=0-9")],
        b"",
    )
    .unwrap();
    assert_eq!(range.status, 206, "{range:?}");

    // A keep-alive connection, idle at the reload: the old child hands it over (SCM_RIGHTS).
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let healthcheck = b"GET /healthcheck HTTP/1.1\r\nHost: glint\r\n\r\n";
    let mut healthcheck_on_the_connection = || {
        stream.write_all(healthcheck).unwrap();
        let response = util::read_response(&mut reader, "GET").unwrap().unwrap();
        assert_eq!(response.status, 200);
    };
    healthcheck_on_the_connection();
    let reload = traced(&trace("reload.trace"), &["reload"], &config)
        .output()
        .unwrap();
    assert!(
        reload.status.success(),
        "{}\n{}",
        util::show_output("reload", &reload),
        log()
    );
    util::wait_until("the handoff", DEADLINE, || {
        log().contains("connection(s) queued for the new generation")
    });
    healthcheck_on_the_connection();
    let status_command = traced(&trace("status.trace"), &["status"], &config)
        .output()
        .unwrap();
    assert!(
        status_command.status.success(),
        "{}",
        util::show_output("status", &status_command)
    );
    let stop = traced(&trace("stop.trace"), &["stop"], &config)
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        util::show_output("stop", &stop)
    );
    assert!(master.wait().unwrap().success(), "{}", log());

    let mut used = BTreeSet::new();
    let mut socket_families = BTreeSet::new();
    for name in ["master.trace", "reload.trace", "status.trace", "stop.trace"] {
        let text = fs::read_to_string(trace(name)).unwrap();
        for line in text.lines() {
            // `PID name(args...` (or `<unfinished ...>`); resumptions and signals start otherwise.
            let Some((_, call)) = line.split_once(' ') else {
                continue;
            };
            let call = call.trim_start();
            let Some((name, args)) = call.split_once('(') else {
                continue;
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            used.insert(name.to_string());
            if name == "socket" {
                socket_families.insert(args.split([',', ')']).next().unwrap().to_string());
            }
        }
    }
    assert!(
        used.contains("sendmsg") && used.contains("clone3") && used.contains("sendfile"),
        "the trace misses calls glint must have made: {used:?}"
    );
    let outside: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "system calls outside the unit's SystemCallFilter=: {outside:?}"
    );
    for family in &socket_families {
        assert!(
            families.contains(family),
            "a socket of family {family}, not in RestrictAddressFamilies= {families:?}"
        );
    }
}
