//! The Debian package (issue 14, part 3), built by `scripts/package` (cargo-deb), for real:
//! `dpkg -i` on this machine, the server started through the installed init script as the
//! system user glint, an upload and a download, the installed logrotate snippet run with
//! `logrotate -f`, a reload, a stop and `dpkg --purge`, after which nothing of glint is left.
//!
//! That test needs the package and root (CI runs as root). `scripts/test` runs
//! `scripts/package` first and exports the package's path as `GLINT_DEB`; without it, or
//! without root, the test fails saying what to do: it never passes by skipping. It installs
//! into the machine's real /etc, /usr, /var and user database, so it refuses to run where glint
//! is installed already or a user glint exists, holds a lock so that two test runs on one
//! machine take turns, and its guard stops the server and purges the package even when the
//! test fails.
//!
//! The other tests here check offline what goes into the package: the production sample
//! config passes `--check-config`, and the man page renders without a warning.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::{self, DEADLINE};

/// The production sample in the repository, installed as [`CONF`].
fn production_sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/glint-api.conf.production")
}

const CONF: &str = "/etc/glint/glint-api.conf";
const INIT_SCRIPT: &str = "/etc/init.d/glint-api";
const PID_FILE: &str = "/run/glint/glint-api.pid";
const LOG_FILE: &str = "/var/log/glint/glint-api.log";

/// Runs `program ARGS`, or panics saying which package provides it.
fn run(program: &str, args: &[&str], package: &str) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {program} ({error}): install it (Debian: apt-get install {package})")
        })
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The production sample (`conf/glint-api.conf.production`, generated from the options table
/// by `src/config/sample.rs`) passes `glint-api --check-config` without a warning, and its
/// effective settings are the packaged layout: loopback, the pid file in /run/glint, the log
/// in /var/log/glint, the images and database in /var/lib/glint.
#[test]
fn production_sample_passes_check_config() {
    let output = Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .arg("--check-config")
        .arg("--config-file")
        .arg(production_sample())
        .output()
        .expect("run glint-api --check-config");
    let what = util::show_output("glint-api --check-config", &output);
    util::assert_exit(&output, 0, "--check-config", "");
    // Its one line on stderr says the file is valid: no warning (an unknown option, a value
    // glint corrects) comes before it. Run as root (CI), a note first says that the directory
    // checks prove nothing for the service user; it is the only other line allowed.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let root_note = "note: the directories were checked as root";
    let stderr: String = stderr
        .lines()
        .filter(|line| !(unsafe { libc::geteuid() } == 0 && line.starts_with(root_note)))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        stderr,
        format!(
            "glint-api: the configuration in {} is valid\n",
            production_sample().display()
        ),
        "{what}"
    );
    let effective = stdout(&output);
    // The lines of one `[section]` of the effective settings.
    let section = |name: &str| -> Vec<&str> {
        effective
            .lines()
            .skip_while(|line| *line != format!("[{name}]"))
            .skip(1)
            .take_while(|line| !line.starts_with('['))
            .collect()
    };
    for (name, line) in [
        ("DEFAULT", "bind_host = 127.0.0.1"),
        ("DEFAULT", "bind_port = 9292"),
        ("DEFAULT", "pid_file = /run/glint/glint-api.pid"),
        ("DEFAULT", "log_file = /var/log/glint/glint-api.log"),
        ("DEFAULT", "auth_strategy = noauth"),
        (
            "glance_store",
            "filesystem_store_datadir = /var/lib/glint/images",
        ),
        (
            "database",
            "connection = sqlite:////var/lib/glint/glint.sqlite",
        ),
        (
            "image_cache",
            "image_cache_dir = /var/lib/glint/image-cache",
        ),
    ] {
        let lines = section(name);
        assert_eq!(
            lines.iter().filter(|l| **l == line).count(),
            1,
            "[{name}] {line:?}\n{what}"
        );
    }
}

/// glint-api(8) renders with groff's man macros without a single warning (`-ww`: all of them).
#[test]
fn man_page_renders_without_warnings() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/glint-api.8");
    let output = run(
        "groff",
        &["-man", "-Tutf8", "-ww", page.to_str().unwrap()],
        "groff-base",
    );
    let what = util::show_output("groff -man -ww", &output);
    util::assert_exit(&output, 0, "groff", "");
    assert!(output.stderr.is_empty(), "{what}");
    assert!(stdout(&output).contains("GLINT-API(8)"), "{what}");
}

/// Install, run as glint, upload, rotate the log, reload, stop, purge. See the module doc.
#[test]
fn package_installs_runs_as_glint_rotates_reloads_and_purges() {
    let deb = std::env::var_os("GLINT_DEB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
            "GLINT_DEB is not set: this test installs the Debian package. Run scripts/test, which \
             builds it, or build it yourself:\n    export GLINT_DEB=$(scripts/package | tail -n 1)"
        )
        });
    assert!(
        deb.is_file(),
        "GLINT_DEB={}: no such file; build it with scripts/package",
        deb.display()
    );
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test installs a package with dpkg: run it as root (CI does)"
    );
    // What it needs installed: the C library (dpkg-shlibdeps, `$auto`) and adduser; libpq only
    // for a registry on PostgreSQL, which loads it when it opens the registry: recommended.
    let field = |name: &str| {
        stdout(&run(
            "dpkg-deb",
            &["--field", deb.to_str().unwrap(), name],
            "dpkg",
        ))
    };
    let depends = field("Depends");
    for needed in ["libc6", "adduser"] {
        assert!(depends.contains(needed), "Depends: {depends}");
    }
    assert!(!depends.contains("libpq"), "Depends: {depends}");
    assert!(!depends.contains("libssl"), "Depends: {depends}");
    let recommends = field("Recommends");
    for wanted in ["libpq5", "libssl3", "logrotate"] {
        assert!(recommends.contains(wanted), "Recommends: {recommends}");
    }

    let _lock = MachineLock::take();
    assert_not_installed();
    let mut guard = Installed { armed: true };

    let install = run("dpkg", &["-i", deb.to_str().unwrap()], "dpkg");
    util::assert_exit(&install, 0, "dpkg -i", "");

    // The user: a system user with its own group, home the state directory, no login.
    let passwd = stdout(&run("getent", &["passwd", "glint"], "libc-bin"));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{passwd:?}");
    let uid: u32 = fields[2].parse().unwrap();
    let gid: u32 = fields[3].parse().unwrap();
    assert!(uid < 1000, "a system uid: {passwd:?}");
    assert_eq!(
        (fields[5], fields[6]),
        ("/var/lib/glint", "/usr/sbin/nologin")
    );
    let group = stdout(&run("getent", &["group", "glint"], "libc-bin"));
    assert!(group.starts_with(&format!("glint:x:{gid}:")), "{group:?}");

    // Directories, the config file and what dpkg knows of it.
    let owner_mode = |path: &str| {
        let metadata = fs::metadata(path).unwrap_or_else(|error| panic!("{path}: {error}"));
        (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777)
    };
    assert_eq!(owner_mode("/var/lib/glint"), (uid, gid, 0o750));
    assert_eq!(owner_mode("/var/log/glint"), (uid, gid, 0o750));
    assert_eq!(owner_mode(CONF), (0, gid, 0o640));
    assert_eq!(
        fs::read_to_string(CONF).unwrap(),
        fs::read_to_string(production_sample()).unwrap()
    );
    let conffiles = stdout(&run(
        "dpkg-query",
        &["-W", "-f=${Conffiles}", "glint"],
        "dpkg",
    ));
    for path in [CONF, INIT_SCRIPT, "/etc/logrotate.d/glint-api"] {
        assert!(
            conffiles.contains(&format!(" {path} ")),
            "{path} is not a conffile: {conffiles}"
        );
    }
    let sections = stdout(&run(
        "readelf",
        &["--section-headers", "/usr/bin/glint-api"],
        "binutils",
    ));
    assert!(
        sections.contains(".text") && !sections.contains(".symtab") && !sections.contains(".debug"),
        "/usr/bin/glint-api is not stripped:\n{sections}"
    );

    // Installed neither enabled nor started: no start link in any runlevel, no server. (Not
    // asked through `glint-api status`, whose search of /proc for a master without a pid file
    // takes any `glint-api --version` running on the machine for a server of the default
    // config, which this one is.)
    assert!(!Path::new(PID_FILE).exists());
    assert_eq!(
        processes_of(uid),
        Vec::<i32>::new(),
        "processes of glint before the start"
    );
    let links = rc_links();
    assert!(
        links.iter().any(|link| link.starts_with("/etc/rc0.d/K")),
        "{links:?}"
    );
    assert!(!links.iter().any(|link| link.contains("/S")), "{links:?}");

    // The unit's Documentation= (man:glint-api(8), file:OPERATIONS.md) points at installed
    // files: systemd-analyze verify looks each man page up with man(1) and says so when one is
    // missing; the file it does not check, so the test does.
    let verify = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/glint-api.service"],
        "systemd",
    );
    let what = util::show_output("systemd-analyze verify", &verify);
    util::assert_exit(&verify, 0, "systemd-analyze verify", "");
    assert!(
        verify.stdout.is_empty() && verify.stderr.is_empty(),
        "{what}"
    );
    let unit = fs::read_to_string("/lib/systemd/system/glint-api.service").unwrap();
    let documentation: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(
        documentation,
        [
            "man:glint-api(8)",
            "file:/usr/share/doc/glint/OPERATIONS.md"
        ]
    );
    assert!(Path::new("/usr/share/doc/glint/OPERATIONS.md").is_file());
    let man = run("man", &["-w", "8", "glint-api"], "man-db");
    assert_eq!(
        stdout(&man).trim(),
        "/usr/share/man/man8/glint-api.8.gz",
        "{}",
        util::show_output("man -w", &man)
    );

    // A free loopback port (never 9292: other tests and servers run beside this one), and one
    // worker, which the reload below makes two.
    let port = free_port();
    let conf = fs::read_to_string(CONF).unwrap();
    assert_eq!(conf.matches("\n#bind_port = 9292\n").count(), 1);
    assert_eq!(conf.matches("\n#workers =\n").count(), 1);
    let conf = conf
        .replace("\n#bind_port = 9292\n", &format!("\nbind_port = {port}\n"))
        .replace("\n#workers =\n", "\nworkers = 1\n");
    // Written in place: the file keeps its owner and mode.
    fs::write(CONF, &conf).unwrap();
    assert_eq!(owner_mode(CONF), (0, gid, 0o640));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Start through the init script: the master and its child run as glint.
    let start = init_script("start");
    util::assert_exit(&start, 0, "start", &logs());
    let master = master_pid();
    assert_eq!(owner_mode("/run/glint"), (uid, gid, 0o750));
    let mut processes = vec![master];
    processes.extend(util::children_of(master));
    assert_eq!(processes.len(), 2, "the master and its one child");
    for pid in &processes {
        assert_eq!(uids(*pid), [uid; 4], "the uids of process {pid}");
    }

    // Upload and download an image; its data lands in /var/lib/glint/images, glint's.
    let id = util::create_image(addr);
    let data: Vec<u8> = (0..100_000u32).map(|n| (n % 251) as u8).collect();
    let upload = util::send_body(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        "application/octet-stream",
        &data,
    );
    assert_eq!(upload.status, 204, "{}", upload.text());
    let download =
        util::request(addr, "GET", &format!("/v2/images/{id}/file"), &[], b"").expect("download");
    assert_eq!(download.status, 200);
    assert!(download.body == data, "the downloaded data differs");
    let stored = format!("/var/lib/glint/images/{id}");
    assert_eq!(fs::metadata(&stored).unwrap().uid(), uid, "{stored}");

    // The installed logrotate snippet, forced: the log is renamed and SIGUSR1 makes glint
    // reopen it, so a request after the rotation is logged in a new glint-api.log.
    util::wait_until("the upload's access line in the log", DEADLINE, || {
        fs::read_to_string(LOG_FILE)
            .is_ok_and(|log| log.contains(&format!("\"PUT /v2/images/{id}/file\"")))
    });
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("logrotate.state");
    let rotate = run(
        "logrotate",
        &[
            "-f",
            "-s",
            state_file.to_str().unwrap(),
            "/etc/logrotate.d/glint-api",
        ],
        "logrotate",
    );
    let what = util::show_output("logrotate -f", &rotate);
    util::assert_exit(&rotate, 0, "logrotate -f", "");
    assert!(rotate.stderr.is_empty(), "{what}");
    let rotated = fs::read_to_string(format!("{LOG_FILE}.1")).expect("glint-api.log.1");
    assert!(
        rotated.contains(&format!("\"PUT /v2/images/{id}/file\"")),
        "{rotated}"
    );
    let after = util::request(addr, "GET", &format!("/v2/images/{id}"), &[], b"").unwrap();
    assert_eq!(after.status, 200);
    util::wait_until(
        "the request after the rotation in the new log",
        DEADLINE,
        || {
            fs::read_to_string(LOG_FILE)
                .is_ok_and(|log| log.contains(&format!("\"GET /v2/images/{id}\"")))
        },
    );
    assert_eq!(owner_mode(LOG_FILE).0, uid);
    assert!(
        !fs::read_to_string(format!("{LOG_FILE}.1"))
            .unwrap()
            .contains(&format!("\"GET /v2/images/{id}\"")),
        "the request after the rotation went to the rotated file"
    );

    // Reload through the init script: two workers now, a new generation, still as glint.
    let conf = conf.replace("\nworkers = 1\n", "\nworkers = 2\n");
    fs::write(CONF, &conf).unwrap();
    let reload = init_script("reload");
    util::assert_exit(&reload, 0, "reload", &logs());
    assert!(
        stdout(&reload).contains("generation 2 serving with 2 worker(s)"),
        "{}",
        util::show_output("reload", &reload)
    );
    util::wait_until("two children of generation 2 alone", DEADLINE, || {
        util::children_of(master).len() == 2
    });
    for pid in util::children_of(master) {
        assert_eq!(uids(pid), [uid; 4], "the uids of child {pid}");
    }
    let again = util::request(addr, "GET", &format!("/v2/images/{id}/file"), &[], b"").unwrap();
    assert!(again.status == 200 && again.body == data);

    // Stop, then purge: nothing of glint is left.
    let stop = init_script("stop");
    util::assert_exit(&stop, 0, "stop", &logs());
    assert!(!util::process_alive(master));
    assert!(!Path::new(PID_FILE).exists());
    // The master was the init script's background job, so PID 1 reaps it; until then it is a
    // zombie of glint's, which userdel counts as a process of the user.
    util::wait_until(
        "no process of glint left, zombies included (PID 1 reaps the master)",
        DEADLINE,
        || processes_of(uid).is_empty(),
    );
    let purge = run("dpkg", &["--purge", "glint"], "dpkg");
    util::assert_exit(&purge, 0, "dpkg --purge", "");
    guard.armed = false;
    assert_eq!(
        run("getent", &["passwd", "glint"], "libc-bin")
            .status
            .code(),
        Some(2),
        "the user glint is left"
    );
    assert_eq!(
        run("getent", &["group", "glint"], "libc-bin").status.code(),
        Some(2),
        "the group glint is left"
    );
    let left: Vec<&str> = [
        "/etc/glint",
        "/var/lib/glint",
        "/var/log/glint",
        "/run/glint",
        "/usr/bin/glint-api",
        INIT_SCRIPT,
        "/etc/logrotate.d/glint-api",
        "/lib/systemd/system/glint-api.service",
        "/usr/share/man/man8/glint-api.8.gz",
        "/usr/share/doc/glint",
    ]
    .into_iter()
    .filter(|path| Path::new(path).symlink_metadata().is_ok())
    .collect();
    assert_eq!(left, Vec::<&str>::new(), "left after the purge");
    assert_eq!(rc_links(), Vec::<String>::new(), "init script links left");
    assert!(!package_known(), "dpkg still knows glint");
}

/// Runs the installed init script with `action`, as root, with a minimal environment.
fn init_script(action: &str) -> Output {
    Command::new(INIT_SCRIPT)
        .arg(action)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap_or_else(|error| panic!("run {INIT_SCRIPT} {action}: {error}"))
}

/// The master's pid, from the pid file.
fn master_pid() -> i32 {
    fs::read_to_string(PID_FILE)
        .unwrap_or_else(|error| panic!("{PID_FILE}: {error}\n{}", logs()))
        .trim()
        .parse()
        .unwrap()
}

/// The real, effective, saved and filesystem uids of process `pid`.
fn uids(pid: i32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .map(|ids| {
            ids.split_whitespace()
                .map(|id| id.parse().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// The processes whose real uid is `uid`, zombies included.
fn processes_of(uid: u32) -> Vec<i32> {
    util::proc_pids()
        .into_iter()
        .filter(|pid| uids(*pid).first() == Some(&uid))
        .collect()
}

/// The server's log and output, for failure messages.
fn logs() -> String {
    format!(
        "--- {LOG_FILE} ---\n{}--- /var/log/glint/glint-api.out ---\n{}",
        fs::read_to_string(LOG_FILE).unwrap_or_default(),
        fs::read_to_string("/var/log/glint/glint-api.out").unwrap_or_default()
    )
}

/// The init script's runlevel links, `/etc/rcN.d/[SK]NNglint-api`.
fn rc_links() -> Vec<String> {
    let mut links = Vec::new();
    for level in ["0", "1", "2", "3", "4", "5", "6", "S"] {
        let dir = format!("/etc/rc{level}.d");
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with("glint-api") {
                links.push(format!("{dir}/{name}"));
            }
        }
    }
    links
}

/// Whether dpkg has any record of the package glint (installed, removed with its conffiles
/// kept, or half-installed).
fn package_known() -> bool {
    let query = run(
        "dpkg-query",
        &["-W", "-f=${db:Status-Abbrev}", "glint"],
        "dpkg",
    );
    query.status.success() && !stdout(&query).starts_with("un")
}

/// Fails unless this machine has no trace of glint: the test would otherwise overwrite or
/// purge an installation that is not its own.
fn assert_not_installed() {
    assert!(
        !package_known(),
        "the package glint is installed on this machine (dpkg -l glint); this test installs and \
         purges it, so it runs only where it is not. Remove it with: dpkg --purge glint"
    );
    for (database, what) in [("passwd", "user"), ("group", "group")] {
        assert_ne!(
            run("getent", &[database, "glint"], "libc-bin")
                .status
                .code(),
            Some(0),
            "a {what} glint exists on this machine; this test creates and deletes it, so it runs \
             only where there is none"
        );
    }
    for path in ["/etc/glint", "/var/lib/glint", "/var/log/glint"] {
        assert!(
            !Path::new(path).exists(),
            "{path} exists; this test installs glint there and purges it, so it runs only where \
             there is none"
        );
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_ne!(port, 9292);
    port
}

/// Stops the server and purges the package when the test ends before it did: a failed test
/// leaves no package, user, directory or process on the machine.
struct Installed {
    armed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if Path::new(INIT_SCRIPT).exists() {
            let _ = init_script("stop");
        }
        // A server that did not stop (a hung drain) is killed, so the purge can delete its
        // user.
        if let Some(master) = fs::read_to_string(PID_FILE)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            for child in util::children_of(master) {
                // SAFETY: kill(2) on processes this test started.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
            // SAFETY: as above.
            unsafe { libc::kill(master, libc::SIGKILL) };
        }
        match Command::new("dpkg").args(["--purge", "glint"]).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "the test's cleanup could not purge glint; run dpkg --purge glint\n{}",
                util::show_output("dpkg --purge glint", &output)
            ),
            Err(error) => eprintln!("the test's cleanup could not run dpkg --purge glint: {error}"),
        }
    }
}

/// An exclusive lock on a file in /run/lock, held while the package is installed: two test runs
/// on one machine (two worktrees, say) would otherwise install and purge the same package under
/// each other. Released when dropped (the file descriptor closes).
struct MachineLock {
    _file: fs::File,
}

impl MachineLock {
    fn take() -> MachineLock {
        use std::os::fd::AsRawFd;
        let path = "/run/lock/glint-package-test.lock";
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        // Another run holds it for a few tens of seconds at most; wait for it, with a bound.
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        loop {
            // SAFETY: flock(2) on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return MachineLock { _file: file };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} is still locked after 600 s: another run of this test holds it"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
