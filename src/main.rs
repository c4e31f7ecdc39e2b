//! The `glint-api` command: parses the command line, loads the config, and hands over to the
//! master. One place formats fatal errors and chooses the exit code:
//!
//! - 0: the server stopped normally, or `--check-config` found the config valid;
//! - 1: the config is invalid, or the server could not start (the message says why);
//! - 64: the command line is wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use glint::config;
use glint::logging;
use glint::master::{self, Master};

const USAGE: &str = "usage: glint-api [--config-file FILE] [--check-config]

  --config-file FILE  the config file (default /etc/glint/glint-api.conf)
  --check-config      validate the config, print the effective settings, exit 0 or 1
  --help              this text";

/// The default config path, as packages install it.
const DEFAULT_CONFIG: &str = "/etc/glint/glint-api.conf";

/// What the command line asks for.
struct Args {
    config_file: PathBuf,
    check_config: bool,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("glint-api: {message}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let loaded = match config::load(&args.config_file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprint!("{error}");
            if !error.to_string().ends_with('\n') {
                eprintln!();
            }
            eprintln!(
                "glint-api: the configuration in {} is invalid",
                args.config_file.display()
            );
            return ExitCode::from(1);
        }
    };
    if args.check_config {
        for warning in &loaded.warnings {
            eprintln!("warning: {warning}");
        }
        print!("{}", loaded.config.effective_settings());
        eprintln!(
            "glint-api: the configuration in {} is valid",
            loaded.config.path.display()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(error) = logging::init(&master::log_destination(&loaded.config), "master") {
        eprintln!("glint-api: {error}");
        return ExitCode::from(1);
    }
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    log::info!(
        "starting glint-api {} with {}",
        env!("CARGO_PKG_VERSION"),
        loaded.config.path.display()
    );
    let master = match Master::start(loaded.config) {
        Ok(master) => master,
        Err(message) => {
            log::error!("cannot start: {message}");
            if loaded_logs_to_file() {
                eprintln!("glint-api: cannot start: {message}");
            }
            return ExitCode::from(1);
        }
    };
    ExitCode::from(master.run() as u8)
}

/// Whether logs go to a file, so a fatal start error must also reach the terminal.
fn loaded_logs_to_file() -> bool {
    logging::file_fd().is_some()
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut config_file = PathBuf::from(DEFAULT_CONFIG);
    let mut check_config = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config-file" => {
                config_file = args.next().ok_or("--config-file needs a file name")?.into();
            }
            _ if arg.starts_with("--config-file=") => {
                config_file = arg["--config-file=".len()..].into();
            }
            "--check-config" => check_config = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(Args {
        config_file,
        check_config,
    }))
}
