//! The `glint-api` command: parses the command line, then either runs the server (loads the
//! config and hands over to the master) or runs an operator command (`reload`, `stop`, `status`,
//! in `control`) against the server that runs. One place formats fatal errors and chooses the
//! exit code, and this is the table (docs/OPERATIONS.md repeats it):
//!
//! - 0: the server stopped normally; `--check-config` found the config valid; `reload`
//!   succeeded; `stop` stopped the server, or it was not running; `status` found it running;
//! - 1: the config is invalid; the server could not start; `reload` was refused or failed (the
//!   old generation keeps serving); a command could not signal the master or read its files;
//! - 3: `reload` or `status` found no server running (LSB's "program is not running");
//! - 4: `reload` got no verdict, or `stop` saw no exit, within `--timeout`;
//! - 64: the command line is wrong.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use glint::config;
use glint::logging;
use glint::operator::control::{self, Command, Verdict};
use glint::process::master::Master;

/// `println!` and friends panic when the stream is gone (`glint-api status | head -1` closes
/// stdout early): these write what they can and drop the rest, as a command-line tool should.
macro_rules! out {
    ($($arg:tt)*) => {{ use std::io::Write as _; let _ = writeln!(std::io::stdout(), $($arg)*); }};
}
macro_rules! out_raw {
    ($($arg:tt)*) => {{ use std::io::Write as _; let _ = write!(std::io::stdout(), $($arg)*); }};
}
macro_rules! err {
    ($($arg:tt)*) => {{ use std::io::Write as _; let _ = writeln!(std::io::stderr(), $($arg)*); }};
}
macro_rules! err_raw {
    ($($arg:tt)*) => {{ use std::io::Write as _; let _ = write!(std::io::stderr(), $($arg)*); }};
}

/// `--help`'s text after its first line, which names the version (`usage`).
const USAGE: &str = "usage: glint-api [--config-file FILE] [--check-config]
       glint-api reload|stop|status [--config-file FILE] [--timeout SECONDS]
       glint-api --version

  --config-file FILE  the config file (default /etc/glint/glint-api.conf); for the commands,
                      the file the server runs with: it names the pid and status files
  --check-config      validate the config, print the effective settings, exit 0 or 1
  --timeout SECONDS   how long reload waits for the verdict, stop for the exit
                      (default 60; stop: at least graceful_shutdown_timeout + 10)
  --version           print `glint-api VERSION` and exit 0
  --help              this text

  reload   validate the config, send SIGHUP, wait for the verdict: exit 0 with the new
           generation, 1 with the problems (the old generation keeps serving),
           3 if not running, 4 at the timeout
  stop     send SIGTERM and wait until the server has drained and exited: exit 0
           (also when it was not running), 4 at the timeout
  status   describe the running server: exit 0 running, 3 not running";

/// `--help`'s text: the version, then the usage.
fn usage() -> String {
    format!("glint-api {}\n{USAGE}", glint::VERSION)
}

/// What the command line parses to.
enum Parsed {
    /// Run the server or a command.
    Run(Args),
    /// `--help`: print the usage and exit 0.
    Help,
    /// `--version`: print `glint-api VERSION` and exit 0.
    Version,
}

/// What the command line asks for.
struct Args {
    config_file: PathBuf,
    check_config: bool,
    /// An operator command instead of running the server.
    command: Option<Command>,
    timeout: Option<Duration>,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            out!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            out!("glint-api {}", glint::VERSION);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            err!("glint-api: {message}\n{}", usage());
            return ExitCode::from(64);
        }
    };
    if let Some(command) = args.command {
        let report = control::run(command, &args.config_file, args.timeout);
        // `status` answers the question asked, so "not running" is its output, not an error.
        if report.verdict == Verdict::Success || command == Command::Status {
            out!("{}", report.message);
        } else {
            err!("{}", report.message);
        }
        return ExitCode::from(match report.verdict {
            Verdict::Success => 0,
            Verdict::Failed => 1,
            Verdict::NotRunning => 3,
            Verdict::TimedOut => 4,
        });
    }
    let loaded = match config::load(&args.config_file) {
        Ok(loaded) => loaded,
        Err(error) => {
            err_raw!("{error}");
            if !error.to_string().ends_with('\n') {
                err!();
            }
            err!(
                "glint-api: the configuration in {} is invalid",
                args.config_file.display()
            );
            return ExitCode::from(1);
        }
    };
    if args.check_config {
        for warning in loaded.every_warning() {
            err!("warning: {warning}");
        }
        out_raw!("{}", loaded.config.effective_settings());
        // The file is valid; whether the server can use the directories it names is checked
        // for the user running this (see `directories`: the init script runs it as the
        // service's user).
        let unusable = glint::operator::directories::check(&loaded.config);
        if let Some(notice) = glint::operator::directories::root_notice() {
            err!("{notice}");
        }
        for problem in &unusable {
            err!("{problem}");
        }
        if !unusable.is_empty() {
            err!(
                "glint-api: the configuration in {} is valid, but {} of the directories it names cannot be used by user {}",
                loaded.config.path.display(),
                unusable.len(),
                glint::operator::directories::user_description()
            );
            return ExitCode::from(1);
        }
        err!(
            "glint-api: the configuration in {} is valid",
            loaded.config.path.display()
        );
        return ExitCode::SUCCESS;
    }
    glint::process::master::restrict_creation_mask();
    if let Err(error) = logging::init(&logging::Destination::of(&loaded.config), "master") {
        err!("glint-api: {error}");
        return ExitCode::from(1);
    }
    for warning in loaded.every_warning() {
        log::warn!("{warning}");
    }
    log::info!(
        "starting glint-api {} with {}",
        glint::VERSION,
        loaded.config.path.display()
    );
    let master = match Master::start(loaded.config) {
        Ok(master) => master,
        Err(message) => {
            log::error!("cannot start: {message}");
            if logging::logs_to_file() {
                err!("glint-api: cannot start: {message}");
            }
            return ExitCode::from(1);
        }
    };
    ExitCode::from(master.run() as u8)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut config_file = PathBuf::from(control::DEFAULT_CONFIG_FILE);
    let mut check_config = false;
    let mut command = None;
    let mut timeout = None;
    let mut first = true;
    while let Some(arg) = args.next() {
        let is_first = std::mem::replace(&mut first, false);
        match arg.as_str() {
            "reload" | "stop" | "status" if is_first => {
                command = Some(match arg.as_str() {
                    "reload" => Command::Reload,
                    "stop" => Command::Stop,
                    _ => Command::Status,
                });
            }
            "--timeout" => {
                timeout = Some(parse_timeout(
                    &args.next().ok_or("--timeout needs a number of seconds")?,
                )?);
            }
            _ if arg.starts_with("--timeout=") => {
                timeout = Some(parse_timeout(&arg["--timeout=".len()..])?);
            }
            "--config-file" => {
                config_file = args.next().ok_or("--config-file needs a file name")?.into();
            }
            _ if arg.starts_with("--config-file=") => {
                config_file = arg["--config-file=".len()..].into();
            }
            "--check-config" => check_config = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            // Like --help, it answers at once, whatever follows it.
            "-V" | "--version" => return Ok(Parsed::Version),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if command.is_some() && check_config {
        return Err("--check-config does not go with a command; use one or the other".into());
    }
    if timeout.is_some() && !matches!(command, Some(Command::Reload | Command::Stop)) {
        return Err("--timeout goes with reload or stop only".into());
    }
    Ok(Parsed::Run(Args {
        config_file,
        check_config,
        command,
        timeout,
    }))
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!(
            "--timeout {text:?}: give a whole number of seconds, 1 or more"
        )),
    }
}
