//! Process-wide logging: one line per record, tagged with the process's role, written whole.
//!
//! The master and every child write to the same destination (a file opened with `O_APPEND`, and/or
//! stderr). Each record is formatted into one buffer and written with a single `write(2)`, so lines
//! from different processes never interleave. The destination lives in a global [`Sink`] that can
//! be replaced at run time: the master swaps it when a reload changes `log_file`, `log_dir`,
//! `use_stderr` or `debug`, a child sets its own right after `fork()`, and SIGUSR1 reopens the file
//! by path (logrotate's `postrotate`).
//!
//! The logger itself is env_logger, installed once per master; children inherit it through
//! `fork()` and only change the sink and the role shown in each line. The level is controlled with
//! `log::set_max_level` (the `debug` option), so it can change without rebuilding the logger.
//! `RUST_LOG` is not consulted: the config file is the one place that sets logging.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::timestamp;

/// Where log lines go, as the config describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The log file, opened for appending; `None` means stderr only.
    pub file: Option<PathBuf>,
    /// Also write to stderr when a file is set (`use_stderr`).
    pub also_stderr: bool,
    /// Log at debug level (`debug`).
    pub debug: bool,
}

impl Destination {
    /// Where the logs of a process running `config` go.
    pub fn of(config: &crate::config::Config) -> Destination {
        Destination {
            file: config.log_file.clone(),
            also_stderr: config.use_stderr,
            debug: config.debug,
        }
    }
}

/// The global sink: the open log file (if any), how it was opened, and the role tag.
struct Sink {
    destination: Destination,
    file: Option<File>,
    /// "master" or "child gen N", shown in every line after the pid.
    role: String,
}

/// Guarded by a std `Mutex`: records are written from several threads of a child, and holding
/// the lock across the single `write(2)` is what keeps a line whole within a process.
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// This process's pid, for every line; `configure` sets it (the master at start, a child right
/// after its fork), which spares a getpid(2) per line.
static PID: AtomicU32 = AtomicU32::new(0);

/// Installs the logger for this process (the master calls it once, before any fork) and writes
/// to `destination`. Fails if the log file cannot be opened, naming the path.
pub fn init(destination: &Destination, role: &str) -> io::Result<()> {
    configure(destination, role)?;
    let logger = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Trace)
        // The HTTP client to Keystone and its TLS log every request at debug; glint's own
        // `keystone:` lines say what an operator needs, so only their warnings pass.
        .filter_module("ureq", log::LevelFilter::Warn)
        .filter_module("ureq_proto", log::LevelFilter::Warn)
        .filter_module("rustls", log::LevelFilter::Warn)
        .format(format_record)
        .target(env_logger::Target::Pipe(Box::new(SinkWriter)))
        .build();
    // A second init in the same process (unit tests) keeps the first logger; the sink is global.
    let _ = log::set_boxed_logger(Box::new(logger));
    set_level(destination.debug);
    Ok(())
}

/// Switches this process to `destination` and `role`. The new file is opened before the old one is
/// closed, so a destination that cannot be opened leaves logging as it was and returns the error.
pub fn configure(destination: &Destination, role: &str) -> io::Result<()> {
    let file = match &destination.file {
        Some(path) => Some(open_log_file(path)?),
        None => None,
    };
    PID.store(std::process::id(), Ordering::Relaxed);
    let mut sink = lock();
    *sink = Some(Sink {
        destination: destination.clone(),
        file,
        role: role.to_string(),
    });
    drop(sink);
    set_level(destination.debug);
    Ok(())
}

/// Reopens the log file by its path, for SIGUSR1 after a rotation. On failure the old file stays
/// in use and the error (with its path) is returned for the caller to log.
pub fn reopen() -> io::Result<()> {
    let mut guard = lock();
    let Some(sink) = guard.as_mut() else {
        return Ok(());
    };
    if let Some(path) = &sink.destination.file {
        sink.file = Some(open_log_file(path)?);
    }
    Ok(())
}

/// The raw fd of the open log file, which a freshly forked child must keep open while it closes
/// the master's other descriptors.
pub fn file_fd() -> Option<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    lock()
        .as_ref()
        .and_then(|sink| sink.file.as_ref().map(|file| file.as_raw_fd()))
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

/// `2026-11-26T11:42:35.123456Z INFO glint-api[1234] master: message`, or within a
/// [`RequestScope`], `... child gen 1: [req-UUID] message`.
fn format_record(buf: &mut env_logger::fmt::Formatter, record: &log::Record) -> io::Result<()> {
    let role = lock()
        .as_ref()
        .map(|sink| sink.role.clone())
        .unwrap_or_default();
    let request = REQUEST_ID.with(|cell| {
        cell.borrow()
            .as_ref()
            .map(|id| format!("[{id}] "))
            .unwrap_or_default()
    });
    writeln!(
        buf,
        "{} {:<5} glint-api[{}] {}: {}{}",
        timestamp::rfc3339_micros(SystemTime::now()),
        record.level(),
        PID.load(Ordering::Relaxed),
        role,
        request,
        escape_message(&record.args().to_string())
    )
}

/// What continues a record on a further line: a line of the log that starts with it is never
/// the start of a record (those start with a timestamp).
pub const CONTINUATION: &str = "    ";

/// Makes a message safe to write as one record, whatever a client put into it (a path, a query,
/// a header, a JSON value may reach a debug line): a line break starts a continuation line
/// ([`CONTINUATION`]), so no client can forge a record of its own, and every other control
/// character (NUL, CR, ESC, DEL, ...) is written as `\u{XX}`. Tabs stay. Operators' multi-line
/// messages (every problem of a config file) read as before, indented.
pub fn escape_message(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut escaped = String::with_capacity(message.len() + 16);
    for c in message.chars() {
        match c {
            '\n' => {
                escaped.push('\n');
                escaped.push_str(CONTINUATION);
            }
            '\t' => escaped.push(c),
            c if c.is_control() => escaped.push_str(&format!("\\u{{{:02x}}}", c as u32)),
            c => escaped.push(c),
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// The writer env_logger writes each formatted record into, in one `write_all` call.
struct SinkWriter;

impl Write for SinkWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut guard = lock();
        match guard.as_mut() {
            Some(sink) => {
                if let Some(file) = sink.file.as_mut() {
                    // Errors writing a log line have nowhere to be reported; dropping the line is
                    // better than failing the request that logged it.
                    let _ = file.write_all(line);
                }
                if sink.file.is_none() || sink.destination.also_stderr {
                    let _ = io::stderr().write_all(line);
                }
            }
            None => {
                let _ = io::stderr().write_all(line);
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
            "/x\n    2026-01-01T00:00:00Z ERROR glint-api[1] master: forged"
        );
        assert_eq!(
            escape_message("a\0b\rc\u{1b}[31md\u{7f}"),
            "a\\u{00}b\\u{0d}c\\u{1b}[31md\\u{7f}"
        );
        assert_eq!(escape_message("tab\tkept"), "tab\tkept");
        // Every line after the first starts with the continuation indent.
        let escaped = escape_message("one\ntwo\n\nthree");
        assert!(escaped.lines().skip(1).all(|line| line.starts_with("    ")));
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
