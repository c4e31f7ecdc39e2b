//! reload_load: a load generator and reload driver for measuring what a graceful reload costs the
//! clients of a pre-fork HTTP server (glint, or nginx for comparison).
//!
//! `--clients` threads send `GET` requests to one URL for `--duration` seconds, each on keep-alive
//! connections, on a fresh connection per request, or half and half (`--mode`). After a reload-free
//! stretch (`--steady-s`) that serves as the baseline, a driver thread sends the reload signal to
//! the master every `--reload-every-ms` (a random interval in the range) and, after each signal,
//! measures how long it takes until a fresh connection is answered by the new generation.
//!
//! # What counts as the new generation
//!
//! The method is server-agnostic and needs no cooperation from the server (root, or the server's
//! user, is needed to read its `/proc/PID/fd`). Right before each signal the driver lists the
//! master's children (the `ppid` field of every `/proc/PID/stat`). After the signal a probe opens
//! a fresh connection at most every [`PROBE_PERIOD`], sends one keep-alive request, and once the
//! response is complete hands the connection, still open, to a lookup thread, which asks the
//! kernel (`sock_diag` netlink, an exact lookup by the 4-tuple) for the inode of the server's end
//! of that connection, then finds the child of the master holding a descriptor for that inode.
//! The first response served by a child that was not in the list is "the first response from the
//! new generation"; its time is taken when the response was read. The lookups run beside the
//! probe, not between two probes: under load one took 10 to 25 ms (it reads /proc), and in line
//! it hid every answer for that long after a probe the old generation answered (until
//! 2026-12-01; the records before then were measured that way, for both servers alike).
//!
//! # Failures
//!
//! A request fails on connect refused, any other connect error, a reset, EOF before a complete
//! response, a status other than 200, or no answer within [`IO_TIMEOUT`]. Before reusing a
//! keep-alive connection a client peeks at it without blocking: a connection the server closed
//! while it was idle is counted and replaced, and is not a failure (every HTTP client does the
//! same). A reused connection closed after the request was sent is a failure, also counted apart.
//!
//! # Plain load
//!
//! With `--reload-every-ms 0` (the default) it sends no signal and is a plain load generator
//! (scripts/bench-load): `--warmup-s` leaves the first seconds out of the request rate and the
//! percentiles, and `--rss` samples the resident memory (`VmRSS`) of the master and of each of
//! its children every [`RSS_PERIOD`] and reports the maxima, with the CPU time the server's
//! processes and the generator itself used during the run.
//!
//! `--header-file FILE` adds the header lines of FILE (`Name: value`, one a line) to every request,
//! for a token (scripts/bench-keystone sends `X-Auth-Token`): a file rather than the command line,
//! so that the value shows neither in `ps` nor in the JSON, which names the headers only.
//!
//! With `--json` it prints one JSON line of the run after its summary; the benchmark scripts keep
//! those lines in their record (`examples/bench_report.rs`), which renders them side by side.
//!
//! It deliberately does not do HTTPS, chunked responses, pipelining or IPv6.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Default number of client threads.
const DEFAULT_CLIENTS: usize = 16;
/// Default length of the reload-free baseline at the start of the run, in seconds.
const DEFAULT_STEADY_S: f64 = 2.0;
/// Requests that start within this time after a reload signal count as "during reloads"; requests
/// with no signal in this time before them count as steady state.
const RELOAD_WINDOW: Duration = Duration::from_millis(500);
/// The first requests of a run see cold connections and caches; they count in the totals but not
/// in the latency percentiles nor in the request rate. `--warmup-s` changes it.
const DEFAULT_WARMUP_S: f64 = 0.25;
/// How often `--rss` samples the server's processes.
const RSS_PERIOD: Duration = Duration::from_millis(200);
/// Bound on connect, on each write and on each read; hitting it is a "timeout" failure.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest time between two probe connections after a reload signal.
const PROBE_PERIOD: Duration = Duration::from_millis(1);
/// How long the probe looks for the new generation before recording "not observed".
const PROBE_BOUND: Duration = Duration::from_secs(5);
/// Pause after a failed connect, so that a server that is down does not make clients spin.
const CONNECT_BACKOFF: Duration = Duration::from_millis(1);
/// Bounds on the loops, far above what a run of minutes reaches, so that no loop is unbounded.
const MAX_REQUESTS_PER_CLIENT: u64 = 50_000_000;
const MAX_RELOADS: usize = 100_000;
/// Successful requests slower than this are counted apart: they show stalls that p99 hides.
const SLOW: Duration = Duration::from_millis(100);
/// Longest response head accepted, in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Longest response body read, in bytes (a health check answers a few bytes).
const MAX_BODY: usize = 1024 * 1024;

const USAGE: &str = "usage: reload_load --url http://IPV4:PORT/PATH --master-pid PID \
[--reload-signal HUP] [--clients N] [--mode keepalive|fresh|mixed] [--duration S] \
[--steady-s S] [--reload-every-ms MIN-MAX|0] [--warmup-s S] [--rss] [--header-file FILE] \
[--label NAME] [--json]";

/// Signals a master may take as "reload", by the names `kill -s` uses.
const SIGNALS: &[(&str, libc::c_int)] = &[
    ("HUP", libc::SIGHUP),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
];

/// How a client uses its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// One connection reused for as long as the server keeps it open.
    KeepAlive,
    /// A new connection per request, sent with `Connection: close`.
    Fresh,
    /// Even-numbered clients keep alive, odd-numbered ones connect fresh.
    Mixed,
}

/// The command line, validated.
#[derive(Debug)]
struct Args {
    server: SocketAddrV4,
    /// Value of the Host header.
    authority: String,
    path: String,
    /// Header lines added to every request (`--header-file`), each `Name: value` without CRLF.
    headers: Vec<String>,
    master_pid: libc::pid_t,
    signal: (&'static str, libc::c_int),
    n_clients: usize,
    mode: Mode,
    duration: Duration,
    steady: Duration,
    /// Range of the random interval between reload signals, in ms; `None`: no reloads.
    reload_every_ms: Option<(u64, u64)>,
    /// Requests started before this are left out of the rate and the percentiles.
    warmup: Duration,
    /// Sample the memory and CPU time of the master and its children.
    rss: bool,
    label: String,
    json: bool,
}

/// Why one request failed.
#[derive(Clone, Copy, Debug)]
enum Failure {
    ConnectRefused,
    ConnectOther,
    Reset,
    EofWithoutResponse,
    BadStatus,
    Timeout,
    Other,
}

/// Failed requests by cause.
#[derive(Clone, Copy, Debug, Default)]
struct Failures {
    connect_refused: u64,
    connect_other: u64,
    reset: u64,
    eof_without_response: u64,
    bad_status: u64,
    timeout: u64,
    other: u64,
}

/// One successful request: when it started (since the run started) and how long it took, in µs.
#[derive(Clone, Copy, Debug)]
struct Sample {
    start_us: u64,
    latency_us: u32,
}

/// What one client thread saw.
#[derive(Debug, Default)]
struct ClientStats {
    sent: u64,
    succeeded: u64,
    failures: Failures,
    /// Keep-alive connections found closed by the server between requests (tolerated).
    idle_closed_before_send: u64,
    /// Requests on a reused connection that was closed after the send, without a response
    /// (also counted in `failures`).
    closed_after_send: u64,
    /// Responses that closed their connection (`Connection: close`) in keep-alive mode.
    server_closed_after_response: u64,
    samples: Vec<Sample>,
}

/// What the reload driver saw.
#[derive(Debug, Default)]
struct ReloadStats {
    /// When each signal was sent, since the run started.
    signals_at: Vec<Duration>,
    /// Signal to first response from a process that was not a child before it, per signal.
    new_generation_ms: Vec<f64>,
    /// Signals after which no such response came within [`PROBE_BOUND`].
    not_observed: u64,
    /// Signal to the exit of the last child that was there before it, per signal: no response
    /// from the old config can come later, so this bounds the last one from above.
    old_generation_gone_ms: Vec<f64>,
    /// Signals after which a child from before it was still there at [`PROBE_BOUND`].
    old_generation_stayed: u64,
    /// Probe requests that failed (they are not client requests and not in the totals).
    probe_failures: u64,
}

/// A complete response head and body.
struct Response {
    status: u16,
    /// The server said `Connection: close` (or it is HTTP/1.0 without keep-alive).
    close: bool,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("reload_load: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let report = run(&args);
    print_summary(&args, &report);
    if args.json {
        println!("{}", report_json(&args, &report));
    }
    ExitCode::SUCCESS
}

/// Parses the command line by hand (no argument crate is a dependency of glint).
fn parse_args(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut url = None;
    let mut master_pid = None;
    let mut signal = SIGNALS[0];
    let mut n_clients = DEFAULT_CLIENTS;
    let mut mode = Mode::KeepAlive;
    let mut duration = None;
    let mut steady = Duration::from_secs_f64(DEFAULT_STEADY_S);
    let mut reload_every_ms = None;
    let mut warmup = Duration::from_secs_f64(DEFAULT_WARMUP_S);
    let mut rss = false;
    let mut label = String::new();
    let mut headers = Vec::new();
    let mut json = false;
    while let Some(word) = words.next() {
        if word == "--json" {
            json = true;
            continue;
        }
        if word == "--rss" {
            rss = true;
            continue;
        }
        let mut value = || words.next().ok_or_else(|| format!("{word} needs a value"));
        match word.as_str() {
            "--url" => url = Some(value()?),
            "--master-pid" => master_pid = Some(parse_number::<libc::pid_t>(&word, &value()?)?),
            "--reload-signal" => {
                let name = value()?;
                let bare = name.trim_start_matches("SIG");
                signal = *SIGNALS
                    .iter()
                    .find(|(known, _)| known.eq_ignore_ascii_case(bare))
                    .ok_or_else(|| format!("--reload-signal: unknown signal {name}"))?;
            }
            "--clients" => n_clients = parse_number(&word, &value()?)?,
            "--mode" => {
                mode = match value()?.as_str() {
                    "keepalive" => Mode::KeepAlive,
                    "fresh" => Mode::Fresh,
                    "mixed" => Mode::Mixed,
                    other => {
                        return Err(format!("--mode: {other} is not keepalive, fresh or mixed"))
                    }
                }
            }
            "--duration" => duration = Some(parse_seconds(&word, &value()?)?),
            "--steady-s" => steady = parse_seconds(&word, &value()?)?,
            "--reload-every-ms" => reload_every_ms = parse_range(&value()?)?,
            "--warmup-s" => warmup = parse_seconds(&word, &value()?)?,
            "--label" => label = value()?,
            "--header-file" => headers = read_headers(&value()?)?,
            _ => return Err(format!("unknown argument {word}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let (server, authority, path) = parse_url(&url)?;
    let duration = duration.ok_or("--duration is required")?;
    if n_clients == 0 && reload_every_ms.is_none() {
        return Err("--clients must be at least 1, or 0 with reloads (only the probe runs)".into());
    }
    if reload_every_ms.is_some() && steady >= duration {
        return Err("--steady-s must be shorter than --duration, or no reload is sent".into());
    }
    if warmup >= duration {
        return Err("--warmup-s must be shorter than --duration".into());
    }
    let master_pid = match (master_pid, reload_every_ms, rss) {
        (Some(pid), _, _) => pid,
        (None, None, false) => 0,
        (None, _, _) => return Err("--master-pid is required with reloads or --rss".into()),
    };
    Ok(Args {
        server,
        authority,
        path,
        headers,
        master_pid,
        signal,
        n_clients,
        mode,
        duration,
        steady,
        reload_every_ms,
        warmup,
        rss,
        label,
        json,
    })
}

fn parse_number<T: std::str::FromStr>(option: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{option}: {text} is not a valid number"))
}

fn parse_seconds(option: &str, text: &str) -> Result<Duration, String> {
    let seconds: f64 = parse_number(option, text)?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{option}: {text} is not a duration"))
}

/// The header lines of `path`: `Name: value`, one a line; blank lines are skipped.
fn read_headers(path: &str) -> Result<Vec<String>, String> {
    let text =
        fs::read_to_string(path).map_err(|error| format!("--header-file: {path}: {error}"))?;
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once(':') {
            Some((name, _)) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(line.to_string())
            }
            _ => Err(format!(
                "--header-file: {path}: a line is not `Name: value` (value not shown)"
            )),
        })
        .collect()
}

/// The names of the `--header-file` headers, for the report (never their values).
fn header_names(args: &Args) -> Vec<&str> {
    args.headers
        .iter()
        .filter_map(|line| line.split_once(':').map(|(name, _)| name))
        .collect()
}

/// `MIN-MAX` in ms, or `0` for no reloads.
fn parse_range(text: &str) -> Result<Option<(u64, u64)>, String> {
    if text == "0" {
        return Ok(None);
    }
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: u64 = parse_number("--reload-every-ms", low)?;
    let high: u64 = parse_number("--reload-every-ms", high)?;
    if low == 0 || low > high {
        return Err(format!(
            "--reload-every-ms: {text} is not MIN-MAX with 0 < MIN <= MAX"
        ));
    }
    Ok(Some((low, high)))
}

/// `http://HOST:PORT/PATH` with an IPv4 host (or `localhost`): the address, Host header and path.
fn parse_url(url: &str) -> Result<(SocketAddrV4, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url: {url} does not start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let server = with_port
        .to_socket_addrs()
        .map_err(|error| format!("--url: cannot resolve {authority}: {error}"))?
        .find_map(|address| match address {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("--url: {authority} has no IPv4 address"))?;
    Ok((server, authority.to_string(), path.to_string()))
}

/// Everything measured in one run.
struct Report {
    clients: Vec<ClientStats>,
    reloads: ReloadStats,
    elapsed: Duration,
    /// With `--rss`: what the sampler saw.
    resources: Option<Resources>,
    /// CPU time (user + system) the generator itself used, in seconds.
    client_cpu_s: f64,
}

/// Memory and CPU time of the server's processes during a run.
#[derive(Debug, Default)]
struct Resources {
    /// Largest VmRSS of the master seen, in KiB.
    master_max_kib: u64,
    /// Largest VmRSS seen of each child, in KiB, by pid, in the order they were first seen.
    children_max_kib: Vec<(libc::pid_t, u64)>,
    /// CPU time (user + system, in clock ticks) of the master and of each child when first seen.
    cpu_first_ticks: Vec<(libc::pid_t, u64)>,
    /// The same, at the last sample.
    cpu_last_ticks: Vec<(libc::pid_t, u64)>,
    n_samples: u64,
}

/// Runs the clients and the reload driver and collects what they saw.
fn run(args: &Args) -> Report {
    let started = Instant::now();
    let deadline = started + args.duration;
    let reloads = Arc::new(Mutex::new(ReloadStats::default()));
    let client_cpu_before = own_cpu_s();
    thread::scope(|scope| {
        let sampler = args
            .rss
            .then(|| scope.spawn(move || sample_resources(args.master_pid, deadline)));
        let driver = args.reload_every_ms.map(|range| {
            let reloads = Arc::clone(&reloads);
            scope.spawn(move || drive_reloads(args, range, started, deadline, &reloads))
        });
        let clients: Vec<_> = (0..args.n_clients)
            .map(|index| {
                let mode = match args.mode {
                    Mode::Mixed if index % 2 == 0 => Mode::KeepAlive,
                    Mode::Mixed => Mode::Fresh,
                    mode => mode,
                };
                scope.spawn(move || run_client(args, mode, started, deadline))
            })
            .collect();
        let clients = clients
            .into_iter()
            .map(|client| client.join().expect("a client thread panicked"))
            .collect();
        if let Some(driver) = driver {
            driver.join().expect("the reload driver panicked");
        }
        let elapsed = started.elapsed();
        let resources = sampler.map(|sampler| sampler.join().expect("the sampler panicked"));
        let reloads = std::mem::take(&mut *reloads.lock().expect("reload stats poisoned"));
        Report {
            clients,
            reloads,
            elapsed,
            resources,
            client_cpu_s: own_cpu_s() - client_cpu_before,
        }
    })
}

/// The request bytes; `close` asks the server to close the connection after the response.
fn request_bytes(args: &Args, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let extra: String = args
        .headers
        .iter()
        .map(|line| format!("{line}\r\n"))
        .collect();
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: reload_load\r\n{extra}{connection}\r\n",
        args.path, args.authority
    )
    .into_bytes()
}

/// One client thread: requests back to back until the deadline.
fn run_client(args: &Args, mode: Mode, started: Instant, deadline: Instant) -> ClientStats {
    let fresh = mode == Mode::Fresh;
    let request = request_bytes(args, fresh);
    let mut stats = ClientStats::default();
    let mut connection: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(MAX_HEAD);
    while Instant::now() < deadline && stats.sent < MAX_REQUESTS_PER_CLIENT {
        let reused = connection.is_some();
        if let Some(stream) = &connection {
            if !is_open_and_idle(stream) {
                stats.idle_closed_before_send += 1;
                connection = None;
                continue;
            }
        }
        // The latency of a request on a new connection includes its connect.
        let start = Instant::now();
        stats.sent += 1;
        let stream = match connection.take() {
            Some(stream) => stream,
            None => match connect(args.server) {
                Ok(stream) => stream,
                Err(failure) => {
                    stats.failures.add(failure);
                    thread::sleep(CONNECT_BACKOFF);
                    continue;
                }
            },
        };
        let mut stream = stream;
        match exchange(&mut stream, &request, &mut buffer) {
            Ok(response) if response.status == 200 => {
                let end = Instant::now();
                stats.succeeded += 1;
                if start >= started + args.warmup {
                    stats.samples.push(Sample {
                        start_us: (start - started).as_micros() as u64,
                        latency_us: u32::try_from((end - start).as_micros()).unwrap_or(u32::MAX),
                    });
                }
                if response.close && !fresh {
                    stats.server_closed_after_response += 1;
                }
                if !response.close && !fresh {
                    connection = Some(stream);
                }
            }
            Ok(_) => stats.failures.add(Failure::BadStatus),
            Err(failure) => {
                if reused && matches!(failure, Failure::Reset | Failure::EofWithoutResponse) {
                    stats.closed_after_send += 1;
                }
                stats.failures.add(failure);
            }
        }
    }
    stats
}

impl Failures {
    fn add(&mut self, failure: Failure) {
        let counter = match failure {
            Failure::ConnectRefused => &mut self.connect_refused,
            Failure::ConnectOther => &mut self.connect_other,
            Failure::Reset => &mut self.reset,
            Failure::EofWithoutResponse => &mut self.eof_without_response,
            Failure::BadStatus => &mut self.bad_status,
            Failure::Timeout => &mut self.timeout,
            Failure::Other => &mut self.other,
        };
        *counter += 1;
    }

    fn merge(&mut self, other: &Failures) {
        self.connect_refused += other.connect_refused;
        self.connect_other += other.connect_other;
        self.reset += other.reset;
        self.eof_without_response += other.eof_without_response;
        self.bad_status += other.bad_status;
        self.timeout += other.timeout;
        self.other += other.other;
    }

    fn total(&self) -> u64 {
        self.connect_refused
            + self.connect_other
            + self.reset
            + self.eof_without_response
            + self.bad_status
            + self.timeout
            + self.other
    }
}

fn connect(server: SocketAddrV4) -> Result<TcpStream, Failure> {
    let stream =
        TcpStream::connect_timeout(&server.into(), IO_TIMEOUT).map_err(|error| {
            match error.kind() {
                io::ErrorKind::ConnectionRefused => Failure::ConnectRefused,
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Timeout,
                _ => Failure::ConnectOther,
            }
        })?;
    // Small requests and responses: Nagle would only add delay.
    let configured = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    configured.map_err(|_| Failure::ConnectOther)?;
    Ok(stream)
}

/// Whether an idle keep-alive connection may be reused: a non-blocking peek sees neither EOF, an
/// error, nor unexpected bytes (a server may send a 408 or similar before closing).
fn is_open_and_idle(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv writes at most one byte into `byte`, which outlives the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

fn classify(error: &io::Error) -> Failure {
    match error.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Failure::Reset,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        io::ErrorKind::UnexpectedEof => Failure::EofWithoutResponse,
        _ => Failure::Other,
    }
}

/// Sends `request` and reads one complete response (head, then a Content-Length body, or a body
/// up to EOF when there is no Content-Length).
fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buffer: &mut Vec<u8>,
) -> Result<Response, Failure> {
    stream
        .write_all(request)
        .map_err(|error| classify(&error))?;
    buffer.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find_head_end(buffer) {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            return Err(Failure::Other);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(Failure::EofWithoutResponse),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(classify(&error)),
        }
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| Failure::Other)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or(Failure::Other)?;
    let mut content_length = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| Failure::Other)?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close")
                || (close && !value.eq_ignore_ascii_case("keep-alive"));
        }
    }
    let mut body = buffer.len() - head_end;
    match content_length {
        Some(length) if length <= MAX_BODY => {
            while body < length {
                match stream.read(&mut chunk) {
                    Ok(0) => return Err(Failure::EofWithoutResponse),
                    Ok(n) => body += n,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(classify(&error)),
                }
            }
        }
        Some(_) => return Err(Failure::Other),
        None => {
            // No length: the body ends at EOF (RFC 9112 §6.3, item 8).
            close = true;
            while body <= MAX_BODY {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => body += n,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(classify(&error)),
                }
            }
        }
    }
    Ok(Response { status, close })
}

/// Offset just past the blank line ending the head, if it has arrived.
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|position| position + 4)
}

/// The reload driver: after the steady stretch, signals the master at random intervals in
/// `range` and probes for the new generation after each signal. A probe that runs past the next
/// due time delays the next signal, so each measurement starts from a quiet master.
fn drive_reloads(
    args: &Args,
    (low_ms, high_ms): (u64, u64),
    started: Instant,
    deadline: Instant,
    reloads: &Mutex<ReloadStats>,
) {
    let mut random = XorShift::seeded();
    let mut next = started + args.steady;
    let probe_request = request_bytes(args, false);
    let mut n_signals = 0;
    while n_signals < MAX_RELOADS {
        sleep_until(next);
        if Instant::now() >= deadline {
            break;
        }
        let before: HashSet<libc::pid_t> = children_of(args.master_pid).into_iter().collect();
        let signalled = Instant::now();
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(args.master_pid, args.signal.1) } != 0 {
            eprintln!(
                "reload_load: kill({}, SIG{}) failed: {}",
                args.master_pid,
                args.signal.0,
                io::Error::last_os_error()
            );
            break;
        }
        n_signals += 1;
        reloads
            .lock()
            .expect("reload stats poisoned")
            .signals_at
            .push(signalled - started);
        let (observed, probe_failures) =
            probe_new_generation(args, &probe_request, &before, signalled);
        let mut stats = reloads.lock().expect("reload stats poisoned");
        stats.probe_failures += probe_failures;
        match observed {
            Some(after) => stats.new_generation_ms.push(after.as_secs_f64() * 1000.0),
            None => stats.not_observed += 1,
        }
        drop(stats);
        let gone = wait_until_gone(&before, signalled);
        let mut stats = reloads.lock().expect("reload stats poisoned");
        match gone {
            Some(after) => stats
                .old_generation_gone_ms
                .push(after.as_secs_f64() * 1000.0),
            None => stats.old_generation_stayed += 1,
        }
        drop(stats);
        let interval = Duration::from_millis(random.between(low_ms, high_ms));
        next = (signalled + interval).max(Instant::now());
    }
}

/// Opens fresh connections until one is answered by a child of the master that is not in
/// `before`; returns the time from `signalled` to that response, and the number of failed probes.
///
/// Which process answered is looked up on a thread of its own, while this one goes on probing
/// every [`PROBE_PERIOD`]: a lookup reads the file descriptors of the master's children in
/// /proc, which under load took 10 to 25 ms of the probe's time, so that with the lookup in line
/// a probe answered by the old generation hid every answer for that long. Each answered
/// connection stays open until it has been looked up (a draining server may close it first;
/// then its owner is not found and it does not count). The result is the earliest answer, in
/// the order the probes were sent, that the lookups attribute to a new child.
fn probe_new_generation(
    args: &Args,
    request: &[u8],
    before: &HashSet<libc::pid_t>,
    signalled: Instant,
) -> (Option<Duration>, u64) {
    let found = std::sync::atomic::AtomicBool::new(false);
    let (answers, to_look_up) = std::sync::mpsc::channel::<(TcpStream, Instant)>();
    thread::scope(|scope| {
        let lookups = scope.spawn(|| {
            let mut children: Vec<libc::pid_t> = Vec::new();
            for (stream, at) in to_look_up {
                // The connection is still open here unless the server closed it, which a
                // draining (old) process does; then the lookup finds no owner.
                let owner = serving_pid(&stream, args.master_pid, &mut children);
                let _ = stream.shutdown(Shutdown::Both);
                if owner.is_some_and(|pid| !before.contains(&pid)) {
                    found.store(true, std::sync::atomic::Ordering::SeqCst);
                    return Some(at - signalled);
                }
            }
            None
        });
        let mut buffer = Vec::with_capacity(MAX_HEAD);
        let mut n_failures = 0;
        loop {
            let attempt = Instant::now();
            if attempt >= signalled + PROBE_BOUND || found.load(std::sync::atomic::Ordering::SeqCst)
            {
                break;
            }
            let answered = connect(args.server).and_then(|mut stream| {
                let response = exchange(&mut stream, request, &mut buffer)?;
                Ok((stream, response, Instant::now()))
            });
            match answered {
                Ok((stream, response, at)) if response.status == 200 => {
                    if answers.send((stream, at)).is_err() {
                        break;
                    }
                }
                _ => n_failures += 1,
            }
            sleep_until(attempt + PROBE_PERIOD);
        }
        // The lookups left finish what was sent; they stop at the first new child.
        drop(answers);
        let observed = lookups.join().expect("the lookup thread panicked");
        (observed, n_failures)
    })
}

/// Waits until none of `before` runs (gone from /proc, or a zombie: it has exited and waits for
/// its parent to reap it); returns the time from `signalled`, or None at [`PROBE_BOUND`].
fn wait_until_gone(before: &HashSet<libc::pid_t>, signalled: Instant) -> Option<Duration> {
    loop {
        let now = Instant::now();
        let running = before.iter().any(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, fields)| fields.split_whitespace().next())
                    .is_some_and(|state| state != "Z" && state != "X")
            })
        });
        if !running {
            return Some(now - signalled);
        }
        if now >= signalled + PROBE_BOUND {
            return None;
        }
        sleep_until(now + PROBE_PERIOD);
    }
}

/// The child of `master` holding the server end of `stream`. `children` caches the master's
/// children between calls and is refreshed when the owner is not among them.
fn serving_pid(
    stream: &TcpStream,
    master: libc::pid_t,
    children: &mut Vec<libc::pid_t>,
) -> Option<libc::pid_t> {
    let (SocketAddr::V4(client), SocketAddr::V4(server)) =
        (stream.local_addr().ok()?, stream.peer_addr().ok()?)
    else {
        return None;
    };
    let inode = server_socket_inode(server, client)?;
    if let Some(pid) = holder_of(inode, children) {
        return Some(pid);
    }
    *children = children_of(master);
    holder_of(inode, children)
}

/// The process among `pids` with a descriptor for socket `inode`.
fn holder_of(inode: u64, pids: &[libc::pid_t]) -> Option<libc::pid_t> {
    let wanted = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        entries.flatten().any(|entry| {
            fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        })
    })
}

/// The processes whose parent is `parent`, from the `ppid` field of every `/proc/PID/stat`.
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            // The command name may hold spaces and parentheses: fields start after the last ')'.
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, fields)| fields.split_whitespace().nth(1)?.parse().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// Netlink family, message type and flags of the socket-diagnostics interface (linux/sock_diag.h,
/// linux/inet_diag.h); declared here because not every libc release exports them.
const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HEADER_LEN: usize = 16;
/// `INET_DIAG_NOCOOKIE`: look the socket up by its addresses only.
const INET_DIAG_NOCOOKIE: u32 = u32::MAX;
/// Offset of `idiag_inode` in `struct inet_diag_msg`.
const INET_DIAG_MSG_INODE: usize = 68;

/// Asks the kernel for the inode of the TCP socket whose local end is `local` and remote end is
/// `remote` (an exact lookup, not a dump: cheap however many sockets are in TIME_WAIT). None when
/// there is no such socket or no process holds it any more (an orphan has inode 0).
fn server_socket_inode(local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
    // SAFETY: socket has no memory-safety preconditions; the fd is closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return None;
    }
    let result = sock_diag_lookup(fd, local, remote);
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    result
}

fn sock_diag_lookup(fd: libc::c_int, local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then struct inet_diag_sockid
    // (ports and addresses in network order, interface, cookie).
    let mut request = Vec::with_capacity(72);
    request.extend_from_slice(&72u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    request.extend_from_slice(&[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
    request.extend_from_slice(&local.port().to_be_bytes());
    request.extend_from_slice(&remote.port().to_be_bytes());
    for address in [local.ip(), remote.ip()] {
        request.extend_from_slice(&address.octets());
        request.extend_from_slice(&[0u8; 12]);
    }
    request.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    request.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    request.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: the buffers and the address are valid for the lengths passed.
    let sent = unsafe {
        libc::sendto(
            fd,
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return None;
    }
    let mut reply = [0u8; 8192];
    // SAFETY: reply is valid for its length.
    let n = unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) };
    let n = usize::try_from(n).ok()?;
    if n < NLMSG_HEADER_LEN + INET_DIAG_MSG_INODE + 4 {
        return None;
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let at = NLMSG_HEADER_LEN + INET_DIAG_MSG_INODE;
    let inode = u32::from_ne_bytes(reply[at..at + 4].try_into().ok()?);
    (inode != 0).then_some(u64::from(inode))
}

/// The `--rss` sampler: every [`RSS_PERIOD`] until `deadline`, the VmRSS and the CPU time of
/// `master` and of each of its children (a child that appears later is added when first seen).
fn sample_resources(master: libc::pid_t, deadline: Instant) -> Resources {
    let mut resources = Resources::default();
    loop {
        let sampled = Instant::now();
        if let Some(kib) = rss_kib(master) {
            resources.master_max_kib = resources.master_max_kib.max(kib);
        }
        let mut pids = vec![master];
        pids.extend(children_of(master));
        for &pid in &pids[1..] {
            let Some(kib) = rss_kib(pid) else { continue };
            match resources
                .children_max_kib
                .iter_mut()
                .find(|(seen, _)| *seen == pid)
            {
                Some((_, max)) => *max = (*max).max(kib),
                None => resources.children_max_kib.push((pid, kib)),
            }
        }
        for pid in pids {
            let Some(ticks) = cpu_ticks(pid) else {
                continue;
            };
            if !resources
                .cpu_first_ticks
                .iter()
                .any(|(seen, _)| *seen == pid)
            {
                resources.cpu_first_ticks.push((pid, ticks));
            }
            match resources
                .cpu_last_ticks
                .iter_mut()
                .find(|(seen, _)| *seen == pid)
            {
                Some((_, last)) => *last = ticks,
                None => resources.cpu_last_ticks.push((pid, ticks)),
            }
        }
        resources.n_samples += 1;
        if sampled >= deadline {
            return resources;
        }
        sleep_until((sampled + RSS_PERIOD).min(deadline));
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: libc::pid_t) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of a process, in clock ticks (`utime` and `stime` of
/// `/proc/PID/stat`, fields 14 and 15).
fn cpu_ticks(pid: libc::pid_t) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which ends at the last ')', start with field 3 (state).
    let (_, fields) = stat.rsplit_once(')')?;
    let mut fields = fields.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time (user + system) this process has used, in seconds.
fn own_cpu_s() -> f64 {
    // SAFETY: rusage is plain data; all zeroes is a valid value, and getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is valid for writing.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

impl Resources {
    /// CPU seconds the master and the children used between their first and last samples.
    fn cpu_s(&self) -> (f64, f64) {
        // SAFETY: sysconf has no memory-safety preconditions.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let mut master = 0.0;
        let mut children = 0.0;
        for &(pid, first) in &self.cpu_first_ticks {
            let Some(&(_, last)) = self.cpu_last_ticks.iter().find(|(seen, _)| *seen == pid) else {
                continue;
            };
            let used = last.saturating_sub(first) as f64 / ticks_per_s;
            if self.children_max_kib.iter().any(|(child, _)| *child == pid) {
                children += used;
            } else {
                master += used;
            }
        }
        (master, children)
    }
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        thread::sleep(when - now);
    }
}

/// A small PRNG for reload intervals; the benchmark needs spread, not quality.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        XorShift(nanos | 1)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low + 1)
    }
}

/// Totals and percentiles derived from a [`Report`].
struct Summary {
    sent: u64,
    succeeded: u64,
    failures: Failures,
    idle_closed_before_send: u64,
    closed_after_send: u64,
    server_closed_after_response: u64,
    /// Latencies in µs of successful requests with no signal in the [`RELOAD_WINDOW`] before them.
    steady_us: Vec<u32>,
    /// Latencies in µs of successful requests started within [`RELOAD_WINDOW`] after a signal.
    reload_us: Vec<u32>,
    /// Signal to new generation, in ms, sorted.
    new_generation_ms: Vec<f64>,
    old_generation_gone_ms: Vec<f64>,
}

fn summarize(report: &Report) -> Summary {
    let mut summary = Summary {
        sent: 0,
        succeeded: 0,
        failures: Failures::default(),
        idle_closed_before_send: 0,
        closed_after_send: 0,
        server_closed_after_response: 0,
        steady_us: Vec::new(),
        reload_us: Vec::new(),
        new_generation_ms: report.reloads.new_generation_ms.clone(),
        old_generation_gone_ms: report.reloads.old_generation_gone_ms.clone(),
    };
    let signals_us: Vec<u64> = report
        .reloads
        .signals_at
        .iter()
        .map(|at| at.as_micros() as u64)
        .collect();
    let window_us = RELOAD_WINDOW.as_micros() as u64;
    for client in &report.clients {
        summary.sent += client.sent;
        summary.succeeded += client.succeeded;
        summary.failures.merge(&client.failures);
        summary.idle_closed_before_send += client.idle_closed_before_send;
        summary.closed_after_send += client.closed_after_send;
        summary.server_closed_after_response += client.server_closed_after_response;
        for sample in &client.samples {
            // The last signal at or before the request started (signals_us is in send order).
            let last = signals_us.partition_point(|&at| at <= sample.start_us);
            let in_window = last > 0 && sample.start_us - signals_us[last - 1] < window_us;
            if in_window {
                summary.reload_us.push(sample.latency_us);
            } else {
                summary.steady_us.push(sample.latency_us);
            }
        }
    }
    summary.steady_us.sort_unstable();
    summary.reload_us.sort_unstable();
    summary.new_generation_ms.sort_by(f64::total_cmp);
    summary.old_generation_gone_ms.sort_by(f64::total_cmp);
    summary
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy>(sorted: &[T], fraction: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// How many of the sorted latencies (µs) exceed [`SLOW`].
fn n_slow(sorted_us: &[u32]) -> usize {
    let slow_us = SLOW.as_micros() as u32;
    sorted_us.len() - sorted_us.partition_point(|&us| us <= slow_us)
}

fn ms(us: Option<u32>) -> Option<f64> {
    us.map(|us| f64::from(us) / 1000.0)
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| format!("{value:.2}"))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::KeepAlive => "keepalive",
        Mode::Fresh => "fresh",
        Mode::Mixed => "mixed",
    }
}

fn print_summary(args: &Args, report: &Report) {
    let summary = summarize(report);
    let failures = &summary.failures;
    let seconds = report.elapsed.as_secs_f64();
    let title = if args.label.is_empty() {
        String::new()
    } else {
        format!("{} ", args.label)
    };
    println!(
        "== {title}{} clients, mode {}, {:.1} s against {}{}",
        args.n_clients,
        mode_name(args.mode),
        seconds,
        args.server,
        args.path
    );
    println!(
        "requests   sent {}  succeeded {}  failed {}  ({:.0} req/s)",
        summary.sent,
        summary.succeeded,
        failures.total(),
        summary.succeeded as f64 / seconds
    );
    println!(
        "rate       {:.0} req/s after a warm-up of {:.2} s",
        measured_rate(args, report, &summary),
        args.warmup.as_secs_f64()
    );
    if let Some(resources) = &report.resources {
        let (master_cpu, children_cpu) = resources.cpu_s();
        let children: Vec<String> = resources
            .children_max_kib
            .iter()
            .map(|(pid, kib)| format!("{pid}: {:.1}", *kib as f64 / 1024.0))
            .collect();
        println!(
            "rss MiB    master max {:.1}  children max {}  ({} samples)",
            resources.master_max_kib as f64 / 1024.0,
            children.join(", "),
            resources.n_samples
        );
        println!(
            "cpu s      master {master_cpu:.2}  children {children_cpu:.2}  load generator {:.2}",
            report.client_cpu_s
        );
    }
    println!(
        "failures   refused {}  connect-other {}  reset {}  eof-no-response {}  bad-status {}  timeout {}  other {}",
        failures.connect_refused,
        failures.connect_other,
        failures.reset,
        failures.eof_without_response,
        failures.bad_status,
        failures.timeout,
        failures.other
    );
    println!(
        "keepalive  closed-idle-before-send {} (tolerated)  closed-after-send {} (failed)  server-close-after-response {}",
        summary.idle_closed_before_send, summary.closed_after_send, summary.server_closed_after_response
    );
    for (label, sorted_us) in [
        ("steady   ", &summary.steady_us),
        ("reloading", &summary.reload_us),
    ] {
        println!(
            "latency ms {label} p50 {}  p99 {}  max {}  over {} ms {}  (n={})",
            show(ms(percentile(sorted_us, 0.50))),
            show(ms(percentile(sorted_us, 0.99))),
            show(ms(sorted_us.last().copied())),
            SLOW.as_millis(),
            n_slow(sorted_us),
            sorted_us.len()
        );
    }
    println!(
        "reloads    SIG{} sent {}  new generation seen {}  not seen within {} s {}  probe failures {}",
        args.signal.0,
        report.reloads.signals_at.len(),
        summary.new_generation_ms.len(),
        PROBE_BOUND.as_secs(),
        report.reloads.not_observed,
        report.reloads.probe_failures
    );
    println!(
        "signal -> first response from new generation, ms: median {}  p90 {}  max {}",
        show(percentile(&summary.new_generation_ms, 0.50)),
        show(percentile(&summary.new_generation_ms, 0.90)),
        show(summary.new_generation_ms.last().copied())
    );
    println!(
        "signal -> last child from before it gone, ms: median {}  p90 {}  max {}  (still there after {} s: {})",
        show(percentile(&summary.old_generation_gone_ms, 0.50)),
        show(percentile(&summary.old_generation_gone_ms, 0.90)),
        show(summary.old_generation_gone_ms.last().copied()),
        PROBE_BOUND.as_secs(),
        report.reloads.old_generation_stayed
    );
}

/// Successful requests per second, counting only those that started after the warm-up.
fn measured_rate(args: &Args, report: &Report, summary: &Summary) -> f64 {
    let measured = (summary.steady_us.len() + summary.reload_us.len()) as f64;
    let seconds = report.elapsed.saturating_sub(args.warmup).as_secs_f64();
    if seconds > 0.0 {
        measured / seconds
    } else {
        0.0
    }
}

fn report_json(args: &Args, report: &Report) -> serde_json::Value {
    let summary = summarize(report);
    let failures = &summary.failures;
    let resources = report.resources.as_ref().map(|resources| {
        let (master_cpu, children_cpu) = resources.cpu_s();
        let per_request_us = |seconds: f64| {
            (summary.succeeded > 0).then(|| seconds * 1e6 / summary.succeeded as f64)
        };
        serde_json::json!({
            "samples": resources.n_samples,
            "rss_mib": {
                "master_max": resources.master_max_kib as f64 / 1024.0,
                "children_max": resources
                    .children_max_kib
                    .iter()
                    .map(|(_, kib)| *kib as f64 / 1024.0)
                    .collect::<Vec<_>>(),
            },
            "cpu_s": {
                "master": master_cpu,
                "children": children_cpu,
                "load_generator": report.client_cpu_s,
            },
            "cpu_us_per_request": {
                "server": per_request_us(master_cpu + children_cpu),
                "load_generator": per_request_us(report.client_cpu_s),
            },
        })
    });
    serde_json::json!({
        "url_path": args.path,
        "headers": header_names(args),
        "warmup_s": args.warmup.as_secs_f64(),
        "requests_per_s": measured_rate(args, report, &summary),
        "resources": resources,
        "label": args.label,
        "mode": mode_name(args.mode),
        "clients": args.n_clients,
        "seconds": report.elapsed.as_secs_f64(),
        "sent": summary.sent,
        "succeeded": summary.succeeded,
        "failed": failures.total(),
        "failures": {
            "connect_refused": failures.connect_refused,
            "connect_other": failures.connect_other,
            "reset": failures.reset,
            "eof_without_response": failures.eof_without_response,
            "bad_status": failures.bad_status,
            "timeout": failures.timeout,
            "other": failures.other,
        },
        "keepalive_closed_idle_before_send": summary.idle_closed_before_send,
        "keepalive_closed_after_send": summary.closed_after_send,
        "server_closed_after_response": summary.server_closed_after_response,
        "steady": {
            "n": summary.steady_us.len(),
            "p50_ms": ms(percentile(&summary.steady_us, 0.50)),
            "p99_ms": ms(percentile(&summary.steady_us, 0.99)),
            "max_ms": ms(summary.steady_us.last().copied()),
            "n_slow": n_slow(&summary.steady_us),
        },
        "reloading": {
            "n": summary.reload_us.len(),
            "p50_ms": ms(percentile(&summary.reload_us, 0.50)),
            "p99_ms": ms(percentile(&summary.reload_us, 0.99)),
            "max_ms": ms(summary.reload_us.last().copied()),
            "n_slow": n_slow(&summary.reload_us),
        },
        "reloads_sent": report.reloads.signals_at.len(),
        "new_generation_seen": summary.new_generation_ms.len(),
        "new_generation_not_seen": report.reloads.not_observed,
        "probe_failures": report.reloads.probe_failures,
        "new_generation_ms": {
            "median": percentile(&summary.new_generation_ms, 0.50),
            "p90": percentile(&summary.new_generation_ms, 0.90),
            "max": summary.new_generation_ms.last().copied(),
        },
        "old_generation_gone_ms": {
            "median": percentile(&summary.old_generation_gone_ms, 0.50),
            "p90": percentile(&summary.old_generation_gone_ms, 0.90),
            "max": summary.old_generation_gone_ms.last().copied(),
        },
        "old_generation_stayed": report.reloads.old_generation_stayed,
    })
}
