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
//! # Access lines in batches
//!
//! A child writes its access lines in batches (`access_log_flush_ms`, 50 by default): each line
//! is appended to the sink's pending batch, which is written with one `write(2)` once the next
//! line would take it past [`BATCH`] bytes, and at most `access_log_flush_ms` after its first
//! line by the child's `log-flush` thread ([`start_flusher`]). In the main log, any other record
//! writes the batch first, so lines stay in the order they were logged; a reopen, a new
//! destination and the child's exit ([`flush`]) write it too. One line's `write(2)` was about
//! half of an access line's cost, more with the appenders of one file waiting on each other
//! (issue 13). A batch is at most `PIPE_BUF` bytes, so that on a pipe (stderr) another
//! process's line never splits it either. A child killed by SIGKILL loses its last
//! `access_log_flush_ms` of access lines; syslog is sent each line at once.
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

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
    /// How long an access line may wait in its batch (`access_log_flush_ms`); zero writes each
    /// line at once.
    pub access_flush: Duration,
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
            access_flush: Duration::from_millis(config.access_log_flush_ms),
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
    /// Shared with a batch being written after the sink's lock was released ([`Batch`]).
    file: Option<Arc<File>>,
    access_file: Option<Arc<File>>,
    syslog: Option<syslog::Syslog>,
}

impl Opened {
    fn open(destination: &Destination) -> io::Result<Opened> {
        let file = match &destination.file {
            Some(path) => Some(Arc::new(open_log_file(path)?)),
            None => None,
        };
        let access_file = match &destination.access {
            AccessLog::File(path) => Some(Arc::new(open_log_file(path)?)),
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
    /// Whole access lines not yet written, at most [`BATCH`] bytes (see the module doc).
    pending: String,
    /// What follows the timestamp in an access line's prefix: ` INFO  glint-api[PID] ROLE: `.
    access_prefix: String,
    /// The second of the last access line's timestamp, and its text up to the microseconds
    /// (`2026-12-01T06:37:19.`), which the next line in the same second reuses.
    second: (u64, String),
}

/// The largest batch of access lines written at once: `PIPE_BUF`, the most a pipe (stderr under
/// a supervisor) takes in one piece, so that a batch never interleaves with another process's
/// line there either.
pub const BATCH: usize = libc::PIPE_BUF;

/// Room for a line's prefix but its role: timestamp (27), level and name (17), pid (10), and
/// the separators.
const PREFIX_MAX: usize = 64;

impl Sink {
    fn new(destination: Destination, opened: Opened, role: &str) -> Sink {
        Sink {
            destination,
            opened,
            role: role.to_string(),
            pending: String::with_capacity(BATCH),
            access_prefix: format!(" INFO  glint-api[{}] {role}: ", PID.load(Ordering::Relaxed)),
            second: (0, String::new()),
        }
    }

    /// Appends an access line's `message` to the pending batch, and returns the batch before it
    /// when the line did not fit, for the caller to write once it has let the lock go
    /// ([`write_after`]). When this process batches nothing (no `log-flush` thread, or
    /// `access_log_flush_ms = 0`), or the line alone is too long for a batch, writes it at once,
    /// after any batch before it.
    fn access(&mut self, message: &str) -> Option<Batch> {
        let batching = FLUSHER.load(Ordering::Relaxed) == PID.load(Ordering::Relaxed)
            && !self.destination.access_flush.is_zero();
        let longest = PREFIX_MAX + self.role.len() + message.len();
        if !batching || longest > BATCH {
            let _writing = writing();
            if let Some(earlier) = self.take_batch() {
                earlier.write();
            }
            let line = with_prefix(&self.role, log::Level::Info, message);
            self.access_outputs().write(line.as_bytes());
            self.send_access_to_syslog(&line);
            return None;
        }
        let full = if self.pending.len() + longest > BATCH {
            self.take_batch()
        } else {
            None
        };
        let start = self.pending.len();
        self.push_access_line(message);
        if self.opened.syslog.is_some() {
            let line = self.pending[start..].to_string();
            self.send_access_to_syslog(&line);
        }
        // Only a flusher waiting for a batch needs waking (a notify is a futex(2) call, and
        // under load the flusher is asleep between two passes, not waiting).
        if start == 0 && FLUSHER_WAITING.load(Ordering::Relaxed) {
            FLUSH_DUE.notify_one();
        }
        full
    }

    /// Appends an access line (`message`, ending in its line break) to the pending batch: the
    /// line [`with_prefix`] makes, from a date and prefix kept rather than formatted anew.
    fn push_access_line(&mut self, message: &str) {
        self.push_timestamp();
        self.pending.push_str(&self.access_prefix);
        self.pending.push_str(message);
    }

    /// Appends the time to the pending batch as [`timestamp::write_rfc3339_micros`] does,
    /// formatting the date and time only once a second.
    fn push_timestamp(&mut self) {
        let now = SystemTime::now();
        let Ok(since) = now.duration_since(std::time::UNIX_EPOCH) else {
            timestamp::write_rfc3339_micros(&mut self.pending, now);
            return;
        };
        if since.as_secs() != self.second.0 || self.second.1.is_empty() {
            let mut text = timestamp::rfc3339_micros(now);
            // Only the four-digit years' form is 27 bytes long, with the micros at 20..26.
            if text.len() != 27 {
                self.pending.push_str(&text);
                return;
            }
            text.truncate(20);
            self.second = (since.as_secs(), text);
        }
        self.pending.push_str(&self.second.1);
        let micros = since.subsec_micros();
        let mut digits = *b"000000Z";
        let mut rest = micros;
        for digit in digits[..6].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        self.pending
            .push_str(std::str::from_utf8(&digits).unwrap_or("000000Z"));
    }

    /// Takes the pending batch, if any, with where it goes.
    fn take_batch(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        Some(Batch {
            bytes: std::mem::replace(&mut self.pending, String::with_capacity(BATCH)),
            to: self.access_outputs(),
        })
    }

    /// Where access lines go: their own file, or the main log's file and/or stderr.
    fn access_outputs(&self) -> Outputs {
        match (&self.destination.access, &self.opened.access_file) {
            (AccessLog::Off, _) => Outputs {
                file: None,
                stderr: false,
            },
            (AccessLog::File(_), Some(file)) => Outputs {
                file: Some(file.clone()),
                stderr: false,
            },
            _ => self.main_outputs(),
        }
    }

    /// Where the main log goes: its file and/or stderr.
    fn main_outputs(&self) -> Outputs {
        Outputs {
            file: self.opened.file.clone(),
            stderr: self.opened.file.is_none() || self.destination.also_stderr,
        }
    }

    /// Whether access lines go to the main log (its file, stderr, syslog).
    fn access_in_main_log(&self) -> bool {
        match self.destination.access {
            AccessLog::MainLog => true,
            AccessLog::File(_) => self.opened.access_file.is_none(),
            AccessLog::Off => false,
        }
    }

    /// Sends an access line to syslog when access lines go to the main log and it goes there.
    fn send_access_to_syslog(&mut self, line: &str) {
        if self.access_in_main_log() {
            self.send_to_syslog(log::Level::Info, line);
        }
    }

    /// Sends a whole line to syslog, if records go there.
    fn send_to_syslog(&mut self, level: log::Level, line: &str) {
        if let Some(syslog) = self.opened.syslog.as_mut() {
            // Syslog adds its own timestamp, host and tag with the pid: the rest of the line
            // follows them, without its line break.
            let after_pid = line.find("] ").map_or(0, |at| at + 2);
            syslog.send(
                level,
                PID.load(Ordering::Relaxed),
                &format!("{} {}", level, line[after_pid..].trim_end()),
            );
        }
    }
}

/// Guarded by a std `Mutex`: records are written from several threads of a child, and holding
/// the lock across the single `write(2)` is what keeps a line whole within a process. A batch
/// of access lines is written after it is released ([`write_after`]).
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Held by whoever writes a batch or a record of the access log's outputs, taken while the
/// sink's lock is held and kept after it is released: so batches, and the records after them,
/// reach the file in the order they were taken from the sink. Its holder never takes the
/// sink's lock.
static WRITING: Mutex<()> = Mutex::new(());

fn writing() -> MutexGuard<'static, ()> {
    WRITING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A batch of whole access lines taken from the sink, and where it goes.
struct Batch {
    bytes: String,
    to: Outputs,
}

impl Batch {
    fn write(&self) {
        self.to.write(self.bytes.as_bytes());
    }
}

/// Files and/or stderr that some bytes go to.
struct Outputs {
    file: Option<Arc<File>>,
    stderr: bool,
}

impl Outputs {
    /// Writes `bytes` (whole lines) to each output. Errors writing a log line have nowhere to
    /// be reported; dropping the line is better than failing the request that logged it.
    fn write(&self, bytes: &[u8]) {
        if let Some(file) = &self.file {
            let _ = (&**file).write_all(bytes);
        }
        if self.stderr {
            let _ = io::stderr().write_all(bytes);
        }
    }
}

/// Writes `batch`, if any, once `guard` (the sink's lock) is released, in its turn
/// ([`WRITING`]): the workers that log meanwhile wait for the copy of their line, not for the
/// `write(2)` (a fifth of the access lines' cost under load was threads waiting on the lock
/// while a batch was written, issue 13).
fn write_after(guard: MutexGuard<'_, Option<Sink>>, batch: Option<Batch>) {
    let Some(batch) = batch else {
        return;
    };
    let _writing = writing();
    drop(guard);
    batch.write();
}

/// The sink's `access = Off` and `access_healthcheck`, readable without its lock: set by
/// `configure` with the sink (and checked again under the lock).
static ACCESS_OFF: AtomicBool = AtomicBool::new(false);
static HEALTHCHECK_ACCESS_ON: AtomicBool = AtomicBool::new(true);

/// This process's pid, for every line; `configure` sets it (the master at start, a child right
/// after its fork), which spares a getpid(2) per line.
static PID: AtomicU32 = AtomicU32::new(0);

/// The pid of the process whose `log-flush` thread runs ([`start_flusher`]), 0 for none: a
/// forked child sees its master's value, which is never its own pid, until it starts its own.
static FLUSHER: AtomicU32 = AtomicU32::new(0);

/// Wakes the `log-flush` thread when a batch gets its first line.
static FLUSH_DUE: Condvar = Condvar::new();

/// Whether the `log-flush` thread waits on [`FLUSH_DUE`]; set and read under the sink's lock.
static FLUSHER_WAITING: AtomicBool = AtomicBool::new(false);

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
    // What the old destination was given goes there before it is closed, after any batch
    // another thread is still writing there.
    let writing_done = writing();
    if let Some(batch) = sink.as_mut().and_then(Sink::take_batch) {
        batch.write();
    }
    drop(writing_done);
    ACCESS_OFF.store(
        matches!(destination.access, AccessLog::Off),
        Ordering::Relaxed,
    );
    HEALTHCHECK_ACCESS_ON.store(destination.access_healthcheck, Ordering::Relaxed);
    *sink = Some(Sink::new(destination.clone(), opened, role));
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
    // The batch belongs to the files it was logged for (the rotated ones), and so does one
    // another thread is still writing: both are written before the reopen.
    let _writing = writing();
    if let Some(batch) = sink.take_batch() {
        batch.write();
    }
    sink.opened = Opened::open(&sink.destination)?;
    Ok(())
}

/// Writes the pending access lines now: a child calls it before it exits.
/// Returns once they are written, and so is any batch another thread took before: the
/// `log-flush` thread may have taken one and not yet written it when the child exits.
pub fn flush() {
    let mut guard = lock();
    let batch = guard.as_mut().and_then(Sink::take_batch);
    let _writing = writing();
    drop(guard);
    if let Some(batch) = batch {
        batch.write();
    }
}

/// Starts this process's `log-flush` thread, which writes each batch of access lines at most
/// `access_log_flush_ms` after its first line; until it runs, and where it cannot start, every
/// access line is written at once. The thread ends with the process (whose exit calls
/// [`flush`]).
pub fn start_flusher() -> io::Result<()> {
    std::thread::Builder::new()
        .name("log-flush".to_string())
        .spawn(|| loop {
            let mut guard = lock();
            while guard.as_ref().is_none_or(|sink| sink.pending.is_empty()) {
                FLUSHER_WAITING.store(true, Ordering::Relaxed);
                guard = FLUSH_DUE
                    .wait(guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                FLUSHER_WAITING.store(false, Ordering::Relaxed);
            }
            let delay = guard
                .as_ref()
                .map_or(Duration::ZERO, |sink| sink.destination.access_flush);
            drop(guard);
            std::thread::sleep(delay);
            flush();
        })?;
    FLUSHER.store(std::process::id(), Ordering::Relaxed);
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
        if is_access {
            write_access(target == HEALTHCHECK_ACCESS_TARGET, &message);
            return;
        }
        let mut guard = lock();
        let Some(sink) = guard.as_mut() else {
            let line = with_prefix("", record.level(), &message);
            let _ = io::stderr().write_all(line.as_bytes());
            return;
        };
        let line = with_prefix(&sink.role, record.level(), &message);
        // Access lines logged before this record come before it in the main log, batches
        // being written included.
        let _writing = sink.access_in_main_log().then(|| {
            let writing = writing();
            if let Some(batch) = sink.take_batch() {
                batch.write();
            }
            writing
        });
        sink.main_outputs().write(line.as_bytes());
        sink.send_to_syslog(record.level(), &line);
    }

    fn flush(&self) {}
}

/// Logs an access line (`healthcheck`: of a health check) that `message` writes into the
/// buffer it is given: what `log::info!(target: ACCESS_TARGET, ...)` logs, in the same form,
/// written into this thread's own buffer rather than three new strings, which with the write
/// made an access line cost about a quarter of a metadata request's CPU time (issue 13).
pub fn access(healthcheck: bool, message: impl FnOnce(&mut String)) {
    if (healthcheck && !HEALTHCHECK_ACCESS_ON.load(Ordering::Relaxed))
        || ACCESS_OFF.load(Ordering::Relaxed)
        || log::max_level() < log::Level::Info
    {
        return;
    }
    ACCESS_MESSAGE.with(|cell| {
        // Taken already only if writing the message logged an access line itself.
        let mut fresh = String::new();
        let mut borrowed = cell.try_borrow_mut();
        let line = borrowed.as_deref_mut().unwrap_or(&mut fresh);
        line.clear();
        message(line);
        // What a client sent is in the line: escaped, as every record is.
        if let std::borrow::Cow::Owned(escaped) = escape_message(line) {
            *line = escaped;
        }
        line.push('\n');
        write_access(healthcheck, line);
    });
}

thread_local! {
    /// The buffer [`access`] formats this thread's access lines in, kept between them.
    static ACCESS_MESSAGE: RefCell<String> = RefCell::new(String::with_capacity(256));
}

/// Hands an access line's `message` to the sink, under its lock.
fn write_access(healthcheck: bool, message: &str) {
    let mut guard = lock();
    let Some(sink) = guard.as_mut() else {
        let line = with_prefix("", log::Level::Info, message);
        let _ = io::stderr().write_all(line.as_bytes());
        return;
    };
    if (healthcheck && !sink.destination.access_healthcheck)
        || matches!(sink.destination.access, AccessLog::Off)
    {
        return;
    }
    let batch = sink.access(message);
    write_after(guard, batch);
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
    let mut line = String::with_capacity(PREFIX_MAX + role.len() + message.len());
    push_prefix(&mut line, role, level);
    line.push_str(message);
    line
}

/// Appends a line's prefix to `line`: timestamp, level, pid, role and `: `.
fn push_prefix(line: &mut String, role: &str, level: log::Level) {
    use std::fmt::Write as _;
    timestamp::write_rfc3339_micros(line, SystemTime::now());
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
}

/// Whether `bytes` has a byte below 0x20, 0x7f, or 0xc2 (the lead byte of the C1 controls):
/// compared 32 at a time without stopping inside a block, which the compiler turns into vector
/// instructions (stopping at the first was a seventh of an access line's cost, issue 13).
fn has_control_bytes(bytes: &[u8]) -> bool {
    bytes.chunks(32).any(|block| {
        block.iter().fold(false, |found, &byte| {
            found | (byte < 0x20) | (byte == 0x7f) | (byte == 0xc2)
        })
    })
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
    if !has_control_bytes(message.as_bytes()) || !message.chars().any(char::is_control) {
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
        // The scan in blocks of 32 finds a control byte wherever it is in a long line.
        for at in 0..100 {
            let mut text = "x".repeat(100);
            text.replace_range(at..=at, "\u{1}");
            assert!(has_control_bytes(text.as_bytes()), "at {at}");
            assert!(!has_control_bytes(&text.as_bytes()[..at]), "before {at}");
        }
    }

    /// An access line in a batch is the line [`with_prefix`] makes: the kept date and prefix
    /// change nothing but the work, and lines follow each other in time.
    #[test]
    fn a_batched_access_line_is_the_line_written_alone() {
        PID.store(std::process::id(), Ordering::Relaxed);
        let destination = Destination {
            file: None,
            also_stderr: false,
            debug: false,
            access: AccessLog::MainLog,
            access_healthcheck: false,
            syslog_facility: None,
            access_flush: Duration::from_millis(50),
        };
        let opened = Opened {
            file: None,
            access_file: None,
            syslog: None,
        };
        let mut sink = Sink::new(destination, opened, "child gen 3");
        let messages = ["[req-1] 127.0.0.1:1 \"GET /\" 200 0 0.1ms\n", "[req-2] x\n"];
        for message in messages {
            sink.push_access_line(message);
        }
        let batched: Vec<&str> = sink.pending.split_inclusive('\n').collect();
        assert_eq!(batched.len(), messages.len(), "{:?}", sink.pending);
        let mut previous = "";
        for (line, message) in batched.into_iter().zip(messages) {
            let alone = with_prefix("child gen 3", log::Level::Info, message);
            assert_eq!(line.len(), alone.len(), "{line:?} against {alone:?}");
            // The same after the timestamp, and a timestamp of the same form.
            assert_eq!(line[27..], alone[27..]);
            let shape = |text: &str| {
                text.bytes()
                    .map(|byte| if byte.is_ascii_digit() { b'0' } else { byte })
                    .collect::<Vec<u8>>()
            };
            assert_eq!(shape(&line[..27]), shape(&alone[..27]), "{line:?}");
            assert!(line[..27] >= *previous, "{line:?} before {previous:?}");
            previous = &line[..27];
        }
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
