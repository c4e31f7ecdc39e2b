//! `--check-config` checks the directories the config names (issue 14, part 7): each exists and
//! is writable by the user running the check, or can be created by it; each failure is one line
//! naming the option, the path and what to do, and the exit code is 1.
//!
//! Root can write almost anywhere, so the checks run as `nobody` (setpriv --reuid), as the init
//! script runs them as its `GLINT_USER`. These tests need root; without it they fail, saying so.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util;

const NOBODY: u32 = 65534;

/// A test directory that nobody can traverse, holding `ok/` (owned by nobody: pid, status, log
/// and database go there) and a config whose data directory is `datadir`.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(datadir: &str) -> Setup {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "these tests must run as root (they switch to nobody with setpriv)"
        );
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let ok = dir.path().join("ok");
        fs::create_dir(&ok).unwrap();
        std::os::unix::fs::chown(&ok, Some(NOBODY), Some(NOBODY)).unwrap();
        let config = dir.path().join("glint-api.conf");
        fs::write(
            &config,
            format!(
                "[DEFAULT]\nbind_host = 127.0.0.1\npid_file = ok/glint-api.pid\nlog_file = ok/glint-api.log\n\
                 node_staging_uri = file://{staging}\n\n\
                 [glance_store]\nfilesystem_store_datadir = {datadir}\n\n\
                 [database]\nconnection = sqlite:///ok/glint.sqlite\n",
                staging = ok.join("staging").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        Setup { dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `glint-api --check-config` run as nobody:nogroup.
    fn check_as_nobody(&self) -> Output {
        Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--",
                env!("CARGO_BIN_EXE_glint-api"),
                "--check-config",
                "--config-file",
            ])
            .arg(&self.config)
            .output()
            .expect("run setpriv (util-linux)")
    }

    /// The lines `--check-config` wrote to stderr.
    fn stderr_lines(output: &Output) -> Vec<String> {
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn verdict_with_problems(&self, n: usize) -> String {
        format!(
            "glint-api: the configuration in {} is valid, but {n} of the directories it names \
             cannot be used by user nobody (uid 65534)",
            self.config.display()
        )
    }
}

fn show(output: &Output) -> String {
    util::show_output("--check-config as nobody", output)
}

/// An existing data directory that nobody cannot write in (root's, 0755): one line naming the
/// option, the path and the `chown` to run; exit 1. As root, the same file passes, with a note
/// that a check as root proves nothing for the service's user.
#[test]
fn check_config_refuses_an_existing_directory_the_user_cannot_write() {
    let setup = Setup::new("images");
    let images = setup.path("images");
    fs::create_dir(&images).unwrap();
    fs::set_permissions(&images, fs::Permissions::from_mode(0o755)).unwrap();
    let output = setup.check_as_nobody();
    util::assert_exit(&output, 1, "--check-config as nobody", "");
    let images = images.display();
    assert_eq!(
        Setup::stderr_lines(&output),
        [
            format!(
                "[glance_store] filesystem_store_datadir: user nobody cannot write in {images}; \
                 run `chown nobody {images}` (or name a directory nobody can write in)"
            ),
            setup.verdict_with_problems(1),
        ],
        "{}",
        show(&output)
    );
    let as_root = Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .args(["--check-config", "--config-file"])
        .arg(&setup.config)
        .output()
        .unwrap();
    util::assert_exit(&as_root, 0, "--check-config as root", "");
    // And says that, as root, it proved nothing for the service's user.
    assert_eq!(
        Setup::stderr_lines(&as_root),
        [
            "note: the directories were checked as root, who can write in almost any \
             directory, so this proves nothing for the user the server runs as; run the check \
             as that user (`sudo -u glint glint-api --check-config`, or the init script's \
             configtest)"
                .to_string(),
            format!(
                "glint-api: the configuration in {} is valid",
                setup.config.display()
            ),
        ],
        "{}",
        util::show_output("--check-config as root", &as_root)
    );
}

/// With several stores (`enabled_backends`) the backends' folders are checked, named by their
/// section; `[glance_store]`'s folder holds nothing then and is not checked.
#[test]
fn check_config_checks_each_backends_folder_by_its_section() {
    let setup = Setup::new("images");
    let fast = setup.path("fast");
    fs::create_dir(&fast).unwrap();
    fs::set_permissions(&fast, fs::Permissions::from_mode(0o755)).unwrap();
    let mut text = fs::read_to_string(&setup.config).unwrap();
    text.push_str(
        "\n[DEFAULT]\nenabled_backends = fast:file, cheap:file\n[glance_store]\n\
         default_backend = cheap\n[fast]\nfilesystem_store_datadir = fast\n\
         [cheap]\nfilesystem_store_datadir = ok/cheap\n",
    );
    fs::write(&setup.config, text).unwrap();
    let output = setup.check_as_nobody();
    util::assert_exit(&output, 1, "--check-config as nobody", "");
    let fast = fast.display();
    assert_eq!(
        Setup::stderr_lines(&output),
        [
            format!(
                "[fast] filesystem_store_datadir(s): user nobody cannot write in {fast}; \
                 run `chown nobody {fast}` (or name a directory nobody can write in)"
            ),
            setup.verdict_with_problems(1),
        ],
        "{}",
        show(&output)
    );
}

/// A data directory that does not exist under a folder nobody can write in (`ok/new/images`):
/// valid, exit 0, and the check creates nothing.
#[test]
fn check_config_accepts_a_directory_the_user_can_create_and_creates_nothing() {
    let setup = Setup::new("ok/new/images");
    let output = setup.check_as_nobody();
    util::assert_exit(&output, 0, "--check-config as nobody", "");
    assert_eq!(
        Setup::stderr_lines(&output),
        [format!(
            "glint-api: the configuration in {} is valid",
            setup.config.display()
        )],
        "{}",
        show(&output)
    );
    assert!(
        !setup.path("ok/new").exists(),
        "the check created a directory"
    );
}

/// A data directory under a regular file, and a missing one under root's folder: one line each,
/// with what to do; exit 1.
#[test]
fn check_config_refuses_a_directory_under_a_file_or_that_cannot_be_created() {
    let setup = Setup::new("ok/file/images");
    fs::write(setup.path("ok/file"), "not a folder").unwrap();
    let output = setup.check_as_nobody();
    util::assert_exit(&output, 1, "--check-config as nobody", "");
    let file = setup.path("ok/file");
    assert_eq!(
        Setup::stderr_lines(&output),
        [
            format!(
                "[glance_store] filesystem_store_datadir: {}/images cannot be created: {} is not \
                 a directory; name a path under a directory",
                file.display(),
                file.display()
            ),
            setup.verdict_with_problems(1),
        ],
        "{}",
        show(&output)
    );

    // Missing, under the test's own folder (root's, 0755): nobody cannot create it. The log
    // folder too, to show one line per option.
    let setup = Setup::new("srv/images");
    let text = fs::read_to_string(&setup.config).unwrap().replace(
        "log_file = ok/glint-api.log",
        "log_file = logs/glint-api.log",
    );
    fs::write(&setup.config, text).unwrap();
    let output = setup.check_as_nobody();
    util::assert_exit(&output, 1, "--check-config as nobody", "");
    let top = setup.dir.path().display();
    assert_eq!(
        Setup::stderr_lines(&output),
        [
            format!(
                "[DEFAULT] log_file: {top}/logs does not exist and user nobody cannot create it \
                 (cannot write in {top}); run `install -d -o nobody {top}/logs`"
            ),
            format!(
                "[glance_store] filesystem_store_datadir: {top}/srv/images does not exist and \
                 user nobody cannot create it (cannot write in {top}); run `install -d -o nobody \
                 {top}/srv/images`"
            ),
            setup.verdict_with_problems(2),
        ],
        "{}",
        show(&output)
    );
}

/// The init script checks as its `GLINT_USER`: `configtest` and `start` refuse a data directory
/// that user cannot write in (exit 1 and LSB's 6), naming it, and start no server.
#[test]
fn init_script_checks_directories_as_the_service_user() {
    let setup = Setup::new("images");
    fs::create_dir(setup.path("images")).unwrap();
    let run = |action: &str| -> Output {
        Command::new("sh")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/init.d/glint-api"))
            .arg(action)
            .env("DAEMON", env!("CARGO_BIN_EXE_glint-api"))
            .env("CONFIG", &setup.config)
            .env("OUTPUT_LOG", setup.path("ok/output.log"))
            .env("GLINT_DEFAULTS", setup.path("no-defaults"))
            .env("GLINT_USER", "nobody")
            .env("GLINT_GROUP", "nogroup")
            .env("GLINT_DIRS", "")
            .env("START_TIMEOUT", "20")
            .output()
            .expect("run the init script")
    };
    let expected = format!(
        "[glance_store] filesystem_store_datadir: user nobody cannot write in {}",
        setup.path("images").display()
    );
    let configtest = run("configtest");
    util::assert_exit(&configtest, 1, "configtest", "");
    assert!(
        String::from_utf8_lossy(&configtest.stderr).contains(&expected),
        "{}",
        util::show_output("configtest", &configtest)
    );
    let start = run("start");
    util::assert_exit(&start, 6, "start", "");
    assert!(
        String::from_utf8_lossy(&start.stderr).contains(&expected),
        "{}",
        util::show_output("start", &start)
    );
    assert!(!setup.path("ok/glint-api.pid").exists(), "a server started");

    // Once nobody owns it, both pass (configtest only: a started server would outlive the test).
    std::os::unix::fs::chown(setup.path("images"), Some(NOBODY), Some(NOBODY)).unwrap();
    let configtest = run("configtest");
    util::assert_exit(&configtest, 0, "configtest", "");
}

/// `glint-api reload` checks the new file's directories for the user running it (under systemd,
/// `ExecReload=` runs as the service's user): run as nobody with a data directory nobody cannot
/// write in, it exits 1 naming it, and the master gets no SIGHUP.
#[test]
fn reload_command_refuses_directories_its_user_cannot_write_and_signals_nothing() {
    let server = util::Server::start("");
    // The server's folder is nobody's, so only the data directory (root's, made by the master
    // at start, 0750) is refused.
    std::os::unix::fs::chown(server.dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(server.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&server.config_path, fs::Permissions::from_mode(0o644)).unwrap();
    let before = server.status()["reloads_requested"]
        .as_u64()
        .expect("reloads_requested in the status file");
    let output = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            env!("CARGO_BIN_EXE_glint-api"),
            "reload",
            "--config-file",
        ])
        .arg(&server.config_path)
        .output()
        .expect("run setpriv (util-linux)");
    util::assert_exit(&output, 1, "reload as nobody", &server.log());
    let images = server.path("images");
    let images = images.display();
    assert_eq!(
        Setup::stderr_lines(&output),
        [
            format!(
                "[glance_store] filesystem_store_datadir: user nobody cannot write in {images}; \
                 run `chown nobody {images}` (or name a directory nobody can write in)"
            ),
            format!(
                "glint-api: not reloading: 1 of the directories {} names cannot be used by user \
                 nobody (uid 65534); the server keeps its configuration. Fix them and run reload \
                 again",
                server.config_path.display()
            ),
        ],
        "{}",
        util::show_output("reload as nobody", &output)
    );
    assert_eq!(server.status()["reloads_requested"].as_u64(), Some(before));
}
