//! Process-wide logging: one line per record, tagged with the process's role, written whole.
//!
//! The master and every child write to the same destination (a file opened with `O_APPEND`, and/or
//! stderr, and/or the local syslog socket). Each record is formatted into one buffer and written
//! with a single `write(2)` (one datagram for syslog), so lines from different processes never
//! interleave. The destination lives in a global [`Sink`] that can be replaced at run time: the
//! master swaps it when a reload changes a logging option, a child sets its own right after
//! `fork()`, and SIGUSR1 reopens the files by path (logrotate's `postrotate`).
//!
//! # One line per record
//!
//! A record never spans two lines, whatever its message holds: an error chain, a Keystone error
//! body, a config file's list of problems, or bytes a client sent. [`escape_message`] writes a
//! line break as `\n`, a carriage return as `\r`, a tab as `\t` and every other control character
//! as `\u{XX}`, so every line of the log starts with a timestamp and no client can forge one.
//!
//! # Access lines
//!
//! The HTTP layer logs each response's access line under the target [`ACCESS_TARGET`] (health
//! checks under [`HEALTHCHECK_ACCESS_TARGET`]). They go into the main log, into their own file
//! (`access_log_file`), or nowhere (`access_log = false`); health checks only when
//! `access_log_healthcheck` asks, since a load balancer probing every second would drown the rest.
//!
//! The logger is installed once per master; children inherit it through `fork()` and only change
//! the sink and the role shown in each line. The level is controlled with `log::set_max_level`
//! (the `debug` option), so it can change without reinstalling the logger. `RUST_LOG` is not
//! consulted: the config file is the one place that sets logging.

pub mod outage;
pub mod syslog;

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::timestamp;

/// The target of access lines (`log::info!(target: ACCESS_TARGET, ...)`).
pub const ACCESS_TARGET: &str = "access";

/// The target of the access lines of health checks (`GET`/`HEAD /healthcheck`).
pub const HEALTHCHECK_ACCESS_TARGET: &str = "access::healthcheck";

/// Where log lines go, as the config describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The log file, opened for appending; `None` means stderr only.
    pub file: Option<PathBuf>,
    /// Also write to stderr when a file is set (`use_stderr`).
    pub also_stderr: bool,
    /// Log at debug level (`debug`).
    pub debug: bool,
    /// Where access lines go (`access_log`, `access_log_file`).
    pub access: AccessLog,
    /// Whether health checks get access lines (`access_log_healthcheck`).
    pub access_healthcheck: bool,
    /// The syslog facility code when records also go to syslog (`use_syslog`,
    /// `syslog_log_facility`).
    pub syslog_facility: Option<u8>,
}

/// Where access lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    /// With every other record (the default).
    MainLog,
    /// Into their own file, opened for appending like the main log.
    File(PathBuf),
    /// Nowhere.
    Off,
}

impl Destination {
    /// Where the logs of a process running `config` go.
    pub fn of(config: &crate::config::Config) -> Destination {
        let access = match (&config.access_log, &config.access_log_file) {
            (false, _) => AccessLog::Off,
            (true, Some(path)) => AccessLog::File(path.clone()),
            (true, None) => AccessLog::MainLog,
        };
        Destination {
            file: config.log_file.clone(),
            also_stderr: config.use_stderr,
            debug: config.debug,
            access,
            access_healthcheck: config.access_log_healthcheck,
            syslog_facility: config
                .use_syslog
                .then(|| crate::config::syslog_facility::facility_code(config.syslog_log_facility)),
        }
    }

    /// Opens (and closes again) every file and socket of this destination: the check a reload
    /// makes before it commits to a new one. Creates missing log folders, as starting would.
    pub fn check(&self) -> io::Result<()> {
        Opened::open(self).map(drop)
    }
}

/// The open files and socket of a [`Destination`].
struct Opened {
    file: Option<File>,
    access_file: Option<File>,
    syslog: Option<syslog::Syslog>,
}

impl Opened {
    fn open(destination: &Destination) -> io::Result<Opened> {
        let file = match &destination.file {
            Some(path) => Some(open_log_file(path)?),
            None => None,
        };
        let access_file = match &destination.access {
            AccessLog::File(path) => Some(open_log_file(path)?),
            AccessLog::MainLog | AccessLog::Off => None,
        };
        let syslog = match destination.syslog_facility {
            Some(facility) => Some(syslog::Syslog::connect(facility)?),
            None => None,
        };
        Ok(Opened {
            file,
            access_file,
            syslog,
        })
    }
}

/// The global sink: the open log files and socket, how they were opened, and the role tag.
struct Sink {
    destination: Destination,
    opened: Opened,
    /// "master" or "child gen N", shown in every line after the pid.
    role: String,
}

/// Guarded by a std `Mutex`: records are written from several threads of a child, and holding
/// the lock across the single `write(2)` is what keeps a line whole within a process.
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// The sink's `access = Off` and `access_healthcheck`, readable without its lock: set by
/// `configure` with the sink (and checked again under the lock).
static ACCESS_OFF: AtomicBool = AtomicBool::new(false);
static HEALTHCHECK_ACCESS_ON: AtomicBool = AtomicBool::new(true);

/// This process's pid, for every line; `configure` sets it (the master at start, a child right
/// after its fork), which spares a getpid(2) per line.
static PID: AtomicU32 = AtomicU32::new(0);

/// Modules whose records pass only from `Warn` up: the HTTP client to Keystone and its TLS log
/// every request at debug, and glint's own `keystone:` lines say what an operator needs.
const QUIET_MODULES: &[&str] = &["ureq", "ureq_proto", "rustls"];

/// Installs the logger for this process (the master calls it once, before any fork) and writes
/// to `destination`. Fails if a log file cannot be opened or syslog reached, naming which.
pub fn init(destination: &Destination, role: &str) -> io::Result<()> {
    configure(destination, role)?;
    // A second init in the same process (unit tests) keeps the first logger; the sink is global.
    let _ = log::set_logger(&Logger);
    set_level(destination.debug);
    Ok(())
}

/// Switches this process to `destination` and `role`. The new files are opened before the old
/// ones are closed, so a destination that cannot be opened leaves logging as it was and returns
/// the error.
pub fn configure(destination: &Destination, role: &str) -> io::Result<()> {
    let opened = Opened::open(destination)?;
    PID.store(std::process::id(), Ordering::Relaxed);
    let mut sink = lock();
    ACCESS_OFF.store(
        matches!(destination.access, AccessLog::Off),
        Ordering::Relaxed,
    );
    HEALTHCHECK_ACCESS_ON.store(destination.access_healthcheck, Ordering::Relaxed);
    *sink = Some(Sink {
        destination: destination.clone(),
        opened,
        role: role.to_string(),
    });
    drop(sink);
    set_level(destination.debug);
    Ok(())
}

/// Reopens the log files by their paths, and reconnects to syslog, for SIGUSR1 after a
/// rotation. On failure what was open stays in use and the error (with its path) is returned
/// for the caller to log.
pub fn reopen() -> io::Result<()> {
    let mut guard = lock();
    let Some(sink) = guard.as_mut() else {
        return Ok(());
    };
    sink.opened = Opened::open(&sink.destination)?;
    Ok(())
}

/// The raw fds this process logs through (files, syslog socket), which a freshly forked child
/// must keep open while it closes the master's other descriptors.
pub fn open_fds() -> Vec<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    let guard = lock();
    let Some(sink) = guard.as_ref() else {
        return Vec::new();
    };
    let opened = &sink.opened;
    let files = [&opened.file, &opened.access_file];
    files
        .into_iter()
        .flatten()
        .map(|file| file.as_raw_fd())
        .chain(opened.syslog.as_ref().map(|syslog| syslog.as_raw_fd()))
        .collect()
}

/// Whether the main log goes to a file, so a fatal start error must also reach the terminal.
pub fn logs_to_file() -> bool {
    lock()
        .as_ref()
        .is_some_and(|sink| sink.opened.file.is_some())
}

fn set_level(debug: bool) {
    log::set_max_level(if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
}

fn lock() -> std::sync::MutexGuard<'static, Option<Sink>> {
    // A panic while logging must not silence every later line: take the data even if poisoned.
    SINK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens `path` for appending, creating its folder first (a fresh checkout keeps its logs under
/// var/, which does not exist until the first start).
fn open_log_file(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot create log directory {}: {error}", parent.display()),
            )
        })?;
    }
    // O_NONBLOCK for the open only: a FIFO without a reader fails (ENXIO) instead of
    // blocking the master; the flag is cleared at once, so writes stay whole.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .and_then(|file| {
            use nix::fcntl::{fcntl, FcntlArg, OFlag};
            use std::os::fd::AsRawFd;
            // Every other bit is kept as the kernel reported it, named by nix or not.
            let flags = OFlag::from_bits_retain(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?);
            fcntl(
                file.as_raw_fd(),
                FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)),
            )?;
            Ok(file)
        });
    file.map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot open log file {}: {error}", path.display()),
        )
    })
}

thread_local! {
    /// The id of the request this thread is working on, if any (see [`RequestScope`]).
    static REQUEST_ID: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The id of the request this thread is working on (see [`RequestScope`]), for what records
/// it besides the log (a task's `request_id`).
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.with(|cell| cell.borrow().clone())
}

/// While it lives, every line logged on this thread names a request: `[req-...]` before the
/// message, as oslo.log puts the request context there. Scopes nest (the inner one wins until
/// it ends); dropping one, also by unwinding, restores what was there before.
pub struct RequestScope {
    previous: Option<String>,
}

impl RequestScope {
    /// Starts naming `request_id` in this thread's lines.
    pub fn enter(request_id: &str) -> RequestScope {
        let previous = REQUEST_ID.with(|cell| cell.replace(Some(request_id.to_string())));
        RequestScope { previous }
    }
}

impl Drop for RequestScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        REQUEST_ID.with(|cell| *cell.borrow_mut() = previous);
    }
}

/// The `log` crate's logger: filters, formats, and routes each record to the [`Sink`].
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let quiet = QUIET_MODULES.iter().any(|module| {
            metadata
                .target()
                .strip_prefix(module)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        });
        metadata.level() <= log::max_level() && (!quiet || metadata.level() <= log::Level::Warn)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target();
        let is_access = target == ACCESS_TARGET || target == HEALTHCHECK_ACCESS_TARGET;
        // Before formatting: an access line nobody writes costs nothing (it was a seventh of
        // a metadata request's instructions). From flags `configure` keeps with the sink, so
        // that the message is formatted before the lock is taken.
        if (target == HEALTHCHECK_ACCESS_TARGET && !HEALTHCHECK_ACCESS_ON.load(Ordering::Relaxed))
            || (is_access && ACCESS_OFF.load(Ordering::Relaxed))
        {
            return;
        }
        // Outside the lock, which is held only for the prefix and the write: the workers that
        // end their responses at the same moment wait on each other for less (issue 13).
        let message = format_message(record);
        let mut guard = lock();
        let Some(sink) = guard.as_mut() else {
            let line = with_prefix("", record.level(), &message);
            let _ = io::stderr().write_all(line.as_bytes());
            return;
        };
        if target == HEALTHCHECK_ACCESS_TARGET && !sink.destination.access_healthcheck {
            return;
        }
        if is_access && matches!(sink.destination.access, AccessLog::Off) {
            return;
        }
        let line = with_prefix(&sink.role, record.level(), &message);
        // Errors writing a log line have nowhere to be reported; dropping the line is better
        // than failing the request that logged it.
        if is_access {
            match (&sink.destination.access, sink.opened.access_file.as_mut()) {
                (AccessLog::Off, _) => return,
                (AccessLog::File(_), Some(file)) => {
                    let _ = file.write_all(line.as_bytes());
                    return;
                }
                _ => {}
            }
        }
        if let Some(file) = sink.opened.file.as_mut() {
            let _ = file.write_all(line.as_bytes());
        }
        if sink.opened.file.is_none() || sink.destination.also_stderr {
            let _ = io::stderr().write_all(line.as_bytes());
        }
        if let Some(syslog) = sink.opened.syslog.as_mut() {
            // Syslog adds its own timestamp, host and tag with the pid: the rest of the line
            // follows them, without its line break.
            let after_pid = line.find("] ").map_or(0, |at| at + 2);
            syslog.send(
                record.level(),
                PID.load(Ordering::Relaxed),
                &format!("{} {}", record.level(), line[after_pid..].trim_end()),
            );
        }
    }

    fn flush(&self) {}
}

/// The part of a record's line after its prefix: the request's id within a [`RequestScope`],
/// the message, escaped, and the line break. Formatted before the sink's lock is taken.
fn format_message(record: &log::Record) -> String {
    use std::fmt::Write as _;
    let mut message = String::with_capacity(128);
    REQUEST_ID.with(|cell| {
        if let Some(id) = cell.borrow().as_ref() {
            let _ = write!(message, "[{id}] ");
        }
    });
    let _ = message.write_fmt(*record.args());
    // What a client sent may be in the id or the message: escaped, only when needed.
    if let std::borrow::Cow::Owned(escaped) = escape_message(&message) {
        message = escaped;
    }
    message.push('\n');
    message
}

/// The whole line, `2026-11-26T11:42:35.123456Z INFO  glint-api[1234] master: message\n`, or
/// within a [`RequestScope`], `... child gen 1: [req-UUID] message`: timestamp, level, pid and
/// role, then `message` (from [`format_message`]); always exactly one line.
fn with_prefix(role: &str, level: log::Level, message: &str) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(64 + role.len() + message.len());
    timestamp::write_rfc3339_micros(&mut line, SystemTime::now());
    // Pieces pushed, not formatted: padding through `write!` cost more than the rest of the
    // prefix (issue 13).
    line.push_str(match level {
        log::Level::Error => " ERROR glint-api[",
        log::Level::Warn => " WARN  glint-api[",
        log::Level::Info => " INFO  glint-api[",
        log::Level::Debug => " DEBUG glint-api[",
        log::Level::Trace => " TRACE glint-api[",
    });
    let _ = write!(line, "{}", PID.load(Ordering::Relaxed));
    line.push_str("] ");
    line.push_str(role);
    line.push_str(": ");
    line.push_str(message);
    line
}

/// Makes a message safe to write as one line, whatever a client put into it (a path, a query, a
/// header, a JSON value may reach a debug line) and whatever an error carries (a chain, a
/// Keystone body, a config file's problems): `\n`, `\r` and `\t` are written as those two
/// characters, every other control character (NUL, ESC, DEL, C1, ...) as `\u{XX}`. So a record
/// is one line and no client can forge a record of its own.
pub fn escape_message(message: &str) -> std::borrow::Cow<'_, str> {
    // Bytes first: every control character is a byte below 0x20, 0x7f, or (C1, U+0080 to
    // U+009F) a two-byte sequence that starts with 0xc2; a line without those has none, and
    // a byte test is cheaper than decoding each character (issue 13).
    if !message
        .bytes()
        .any(|byte| byte < 0x20 || byte == 0x7f || byte == 0xc2)
        || !message.chars().any(char::is_control)
    {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut escaped = String::with_capacity(message.len() + 16);
    for c in message.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.push_str(&format!("\\u{{{:02x}}}", c as u32)),
            c => escaped.push(c),
        }
    }
    std::borrow::Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::stat::Mode;
    use std::os::fd::AsRawFd;

    #[test]
    fn client_bytes_cannot_forge_a_record_or_write_control_characters() {
        assert_eq!(escape_message("GET /v2/images 200"), "GET /v2/images 200");
        assert_eq!(
            escape_message("/x\n2026-01-01T00:00:00Z ERROR glint-api[1] master: forged"),
            "/x\\n2026-01-01T00:00:00Z ERROR glint-api[1] master: forged"
        );
        assert_eq!(
            escape_message("a\0b\rc\u{1b}[31md\u{7f}\u{85}"),
            "a\\u{00}b\\rc\\u{1b}[31md\\u{7f}\\u{85}"
        );
        assert_eq!(escape_message("tab\there"), "tab\\there");
        assert_eq!(escape_message("one\ntwo\r\n\nthree").lines().count(), 1);
        // The byte test before the character test misses no control character, and lets
        // other characters whose UTF-8 starts with 0xc2 through unchanged.
        for control in (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|c| c.is_control())
        {
            let text = format!("a{control}b");
            assert!(
                matches!(escape_message(&text), std::borrow::Cow::Owned(_)),
                "{:x} was not escaped",
                control as u32
            );
        }
        assert_eq!(escape_message("\u{a2}\u{bf}\u{e9}"), "\u{a2}\u{bf}\u{e9}");
    }

    #[test]
    fn a_log_file_is_opened_for_appending_and_left_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = open_log_file(&dir.path().join("var/log/glint.log")).unwrap();
        let flags = OFlag::from_bits_retain(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(flags.contains(OFlag::O_APPEND), "{flags:?}");
        assert!(!flags.contains(OFlag::O_NONBLOCK), "{flags:?}");
    }

    #[test]
    fn a_fifo_without_a_reader_is_refused_instead_of_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("glint.log");
        nix::unistd::mkfifo(&fifo, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let error = open_log_file(&fifo).unwrap_err();
        // ENXIO, wrapped with the path.
        assert_eq!(
            error.kind(),
            io::Error::from_raw_os_error(libc::ENXIO).kind(),
            "{error}"
        );
        assert!(error.to_string().contains("glint.log"), "{error}");
    }
}
