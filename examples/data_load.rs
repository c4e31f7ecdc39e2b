//! data_load: the client, the references and the RSS sampler of the data-path benchmark
//! (`scripts/bench-data`, docs/BENCHMARKS.md).
//!
//! Modes (each measurement prints one JSON line, and a human line on stderr):
//!
//! - `gen --out FILE --bytes N`: writes N bytes of pseudo-random data (xorshift64*, which does not
//!   compress and is far faster than /dev/urandom).
//! - `hash --file FILE`: md5 and sha512 in one pass on one core, with the code glint's store
//!   uses (`glint::digest`: OpenSSL's libcrypto where the system has it): reads FILE in 64 KiB chunks and
//!   updates both digests with each; prints the rate and both digests (which every upload's
//!   `checksum` and `os_hash_value` must equal). The reference of issue 3's upload target.
//! - `openssl --digest sha512|md5 [--seconds N]`: a reference of issue 13's upload target. Runs
//!   `openssl speed -seconds N -bytes 1048576 DIGEST` (one core: no `-multi`) and reports its
//!   rate. `openssl speed` divides by the user CPU time it used, not the elapsed time, so the
//!   figure is what one core does when it gets to run, load or not.
//! - `inspect --file FILE --inspector on|off`: the cost of format inspection. The upload's
//!   per-byte work on one core, as `hash` does it, with (`on`) and without (`off`) glint's
//!   format inspector fed each chunk and judging the image (`disk_format = raw`) at the end, as
//!   `api::image_data` does. Run side by side in each round; the socket, the disk and the fsync
//!   are left out, so the share measured is an upper bound of the share in a real upload.
//! - `write --bytes N --out FILE`: the disk reference of issue 13's upload target: the disk's own
//!   write+fsync rate. Writes N bytes of pseudo-random data to FILE (created; put it on the
//!   filesystem of glint's data directory) in 1 MiB writes from memory, then fsyncs it, and
//!   reports the rate to the end of the fsync (and the rate before it). Like `dd if=/dev/zero
//!   bs=1M conv=fsync`, but with data a compressing filesystem cannot shrink (zeros would make
//!   the disk look faster than any image makes it) and nothing read from another file.
//! - `put --addr HOST:PORT --file FILE [--rss-pid PID]`: creates an image (`POST /v2/images`),
//!   uploads FILE to it (`PUT /v2/images/{id}/file`, Content-Length, body sent with
//!   sendfile(2) so the client costs almost nothing), then reads the image record back.
//!   Reports the time to the last body byte handed to the kernel and the time to the response.
//!   With `--client curl`, the body is sent by `curl -T FILE` instead (issue 13's goal is stated
//!   for it), and the record has curl's own CPU time (`curl_cpu_user_s`, `curl_cpu_system_s`).
//! - `get --addr HOST:PORT --path PATH [--rss-pid PID] [--expect-bytes N]`: downloads PATH into a
//!   1 MiB buffer that is discarded, and reports the rate.
//! - `status --file STATUS_JSON`: prints glint's first listen port and its first child's pid.
//!
//! The JSON lines of a run go into the benchmark's record, and `examples/bench_report.rs` renders
//! them side by side, best of each, with the targets met or missed.
//!
//! With `--rss-pid PID`, a thread samples `VmRSS` in `/proc/PID/status` every 10 ms while the
//! transfer runs and reports the maximum. Before the transfer it writes `5` to
//! `/proc/PID/clear_refs`, which resets the peak (`VmHWM`) to the current RSS, so the `VmHWM`
//! read after the transfer is that transfer's peak as the kernel saw it (root, or the owner).
//! It also reads each thread's CPU time (`/proc/PID/task/*/stat`) at every sample, and reports
//! the CPU seconds each thread name used during the transfer (`thread_cpu_s`: the upload's
//! `upload-md5` and `upload-hash` threads, the worker that reads the socket and writes the
//! file), so the record says where an upload's CPU goes.
//!
//! MB are 10^6 bytes throughout.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use glint::digest::{Algorithm, Digest};
use serde_json::{json, Value};

/// The chunk size of the one-core md5+sha512 pass (`hash`, `inspect`), as it has been since
/// issue 3 so that its figures stay comparable from record to record.
const CHUNK: usize = 64 * 1024;
/// The write size of the disk reference (`write`), as `dd bs=1M`.
const WRITE_BLOCK: usize = 1024 * 1024;
/// The download client's read buffer.
const GET_BUFFER: usize = 1024 * 1024;
/// How often the RSS sampler reads `/proc/PID/status`.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Bound on every socket read and write: a stuck server fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        eprintln!("usage: data_load gen|hash|inspect|openssl|write|put|get|status [options]");
        return ExitCode::from(2);
    };
    let options = match parse_options(&args[1..]) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("data_load: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match mode.as_str() {
        "gen" => generate(&options),
        "hash" => hash(&options),
        "inspect" => inspect(&options),
        "write" => write_reference(&options),
        "openssl" => openssl_reference(&options),
        "put" => put(&options),
        "get" => get(&options),
        "status" => status(&options),
        other => Err(format!("unknown mode {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("data_load {mode}: {error}");
            ExitCode::FAILURE
        }
    }
}

type Options = BTreeMap<String, String>;

/// `--name value` pairs.
fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options::new();
    let mut iter = args.iter();
    while let Some(name) = iter.next() {
        let key = name
            .strip_prefix("--")
            .ok_or_else(|| format!("expected an option, got {name:?}"))?;
        let value = iter
            .next()
            .ok_or_else(|| format!("option {name} needs a value"))?;
        options.insert(key.to_string(), value.clone());
    }
    Ok(options)
}

fn required<'a>(options: &'a Options, name: &str) -> Result<&'a str, String> {
    options
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("--{name} is required"))
}

fn number<T: std::str::FromStr>(options: &Options, name: &str) -> Result<Option<T>, String> {
    options
        .get(name)
        .map(|value| {
            value
                .parse()
                .map_err(|_| format!("--{name}: not a number: {value:?}"))
        })
        .transpose()
}

fn label(options: &Options, default: &str) -> String {
    options
        .get("label")
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

fn io_error(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |error| format!("{what}: {error}")
}

/// A digest's hex value; an error if libcrypto failed (never seen).
fn finish(digest: Digest) -> Result<String, String> {
    let name = digest.algorithm().name();
    digest
        .finish()
        .ok_or_else(|| format!("the {name} digest failed in libcrypto"))
}

fn emit(line: &Value) {
    println!("{line}");
}

// ---- gen, hash, write -------------------------------------------------------------------------

fn generate(options: &Options) -> Result<(), String> {
    let out = required(options, "out")?;
    let bytes: u64 = number(options, "bytes")?.ok_or("--bytes is required")?;
    let mut file = File::create(out).map_err(io_error(out))?;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes;
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut left = bytes;
    while left > 0 {
        for word in buffer.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(buffer.len() as u64) as usize;
        file.write_all(&buffer[..n]).map_err(io_error(out))?;
        left -= n as u64;
    }
    file.sync_all().map_err(io_error(out))?;
    Ok(())
}

fn hash(options: &Options) -> Result<(), String> {
    let path = required(options, "file")?;
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut buffer = vec![0u8; CHUNK];
    let mut md5 = Digest::new(Algorithm::Md5);
    let mut sha512 = Digest::new(Algorithm::Sha512);
    let mut bytes = 0u64;
    let started = Instant::now();
    loop {
        let n = file.read(&mut buffer).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha512.update(&buffer[..n]);
        bytes += n as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let implementation = format!(
        "md5 {:?}, sha512 {:?}",
        md5.implementation(),
        sha512.implementation()
    )
    .to_lowercase();
    let (md5, sha512) = (finish(md5)?, finish(sha512)?);
    eprintln!(
        "hash md5+sha512 ({implementation}): {bytes} bytes in {seconds:.3} s, {:.1} MB/s",
        mb_per_s(bytes, seconds)
    );
    emit(&json!({
        "kind": "hash", "label": label(options, "md5+sha512"), "bytes": bytes,
        "seconds": seconds, "mbps": mb_per_s(bytes, seconds), "md5": md5, "sha512": sha512,
        "implementation": implementation,
    }));
    Ok(())
}

fn inspect(options: &Options) -> Result<(), String> {
    let path = required(options, "file")?;
    let with_inspector = match required(options, "inspector")? {
        "on" => true,
        "off" => false,
        other => return Err(format!("--inspector takes on or off, not {other:?}")),
    };
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut buffer = vec![0u8; CHUNK];
    let mut md5 = Digest::new(Algorithm::Md5);
    let mut sha512 = Digest::new(Algorithm::Sha512);
    let mut inspector = glint::format::Inspector::new();
    let mut bytes = 0u64;
    let started = Instant::now();
    loop {
        let n = file.read(&mut buffer).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha512.update(&buffer[..n]);
        if with_inspector {
            inspector.feed(&buffer[..n]);
        }
        bytes += n as u64;
    }
    let verdict = with_inspector.then(|| {
        let missed = inspector.missed();
        glint::format::judge(
            &inspector.seen(),
            missed,
            "raw",
            "bare",
            &glint::format::Rules {
                require_format_match: true,
                ..Default::default()
            },
        )
    });
    let (_, _) = (finish(md5)?, finish(sha512)?);
    let seconds = started.elapsed().as_secs_f64();
    if let Some(Err(refusal)) = &verdict {
        return Err(format!("the inspector refused the data as raw: {refusal}"));
    }
    let label = if with_inspector { "on" } else { "off" };
    eprintln!(
        "md5+sha512, inspector {label}: {bytes} bytes in {seconds:.3} s, {:.1} MB/s",
        mb_per_s(bytes, seconds)
    );
    emit(&json!({
        "kind": "inspect", "label": label, "bytes": bytes,
        "seconds": seconds, "mbps": mb_per_s(bytes, seconds),
    }));
    Ok(())
}

fn write_reference(options: &Options) -> Result<(), String> {
    let out = required(options, "out")?;
    let bytes: u64 = number(options, "bytes")?.ok_or("--bytes is required")?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(io_error(out))?;
    // Pseudo-random, as `gen` makes it: incompressible, and different in every block.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d ^ bytes;
    let mut buffer = vec![0u8; WRITE_BLOCK];
    let mut refill = |buffer: &mut [u8]| {
        for word in buffer.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
    };
    // Each block is made before the clock runs for it: the rate is the disk's, not the
    // generator's.
    let mut written = 0u64;
    let mut busy = Duration::ZERO;
    while written < bytes {
        refill(&mut buffer);
        let n = (bytes - written).min(WRITE_BLOCK as u64) as usize;
        let started = Instant::now();
        output.write_all(&buffer[..n]).map_err(io_error(out))?;
        busy += started.elapsed();
        written += n as u64;
    }
    let before_fsync = busy.as_secs_f64();
    let started = Instant::now();
    output.sync_all().map_err(io_error(out))?;
    let seconds = before_fsync + started.elapsed().as_secs_f64();
    drop(output);
    let _ = fs::remove_file(out);
    eprintln!(
        "write+fsync: {bytes} bytes in {seconds:.3} s ({:.1} MB/s; {:.1} MB/s before the fsync)",
        mb_per_s(bytes, seconds),
        mb_per_s(bytes, before_fsync)
    );
    emit(&json!({
        "kind": "write", "label": label(options, "write+fsync"), "bytes": bytes,
        "block_bytes": WRITE_BLOCK, "seconds": seconds, "mbps": mb_per_s(bytes, seconds),
        "mbps_before_fsync": mb_per_s(bytes, before_fsync),
    }));
    Ok(())
}

fn openssl_reference(options: &Options) -> Result<(), String> {
    let digest = required(options, "digest")?;
    if !matches!(digest, "sha512" | "md5") {
        return Err(format!("--digest takes sha512 or md5, not {digest:?}"));
    }
    let seconds: u32 = number(options, "seconds")?.unwrap_or(3);
    let version = Command::new("openssl")
        .arg("version")
        .output()
        .map_err(io_error(
            "run openssl (install it: apt-get install openssl)",
        ))?;
    // "OpenSSL 3.0.19 27 Jan 2026 (Library: ...)": the name and the version number.
    let version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            &seconds.to_string(),
            "-bytes",
            "1048576",
            digest,
        ])
        .output()
        .map_err(io_error("run openssl speed"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "openssl speed {digest} failed: {}{text}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // The result line: the digest's name, then thousands of bytes per second ("502091.87k").
    let kbps: f64 = text
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(digest)).then(|| fields.next())?
        })
        .and_then(|rate| rate.strip_suffix('k')?.parse().ok())
        .ok_or_else(|| format!("no rate for {digest} in openssl speed's output: {text:?}"))?;
    let mbps = kbps * 1000.0 / 1e6;
    eprintln!("openssl speed {digest} (1 MiB blocks, 1 core): {mbps:.1} MB/s ({version})");
    emit(&json!({
        "kind": "openssl", "label": digest, "mbps": mbps, "seconds": seconds,
        "block_bytes": 1_048_576, "openssl": version,
    }));
    Ok(())
}

// ---- RSS sampler ------------------------------------------------------------------------------

/// Samples VmRSS of a process every [`SAMPLE_EVERY`] until stopped, and takes its CPU time
/// (all threads, user and system) at both ends.
struct Sampler {
    pid: u32,
    cpu_before: Option<(f64, f64)>,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(u64, u64, Threads)>,
    before_kib: u64,
}

/// Per thread id: its name, and its CPU ticks (user + system) when first and last seen.
type Threads = BTreeMap<u64, (String, u64, u64)>;

/// Each thread of `pid` with its name and CPU ticks (`/proc/PID/task/TID/stat`, fields 2, 14, 15).
fn thread_ticks(pid: u32) -> Vec<(u64, String, u64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid: u64 = task.file_name().to_str()?.parse().ok()?;
            let text = fs::read_to_string(task.path().join("stat")).ok()?;
            let (head, rest) = text.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let mut fields = rest.split_whitespace().skip(11);
            let user: u64 = fields.next()?.parse().ok()?;
            let system: u64 = fields.next()?.parse().ok()?;
            Some((tid, name, user + system))
        })
        .collect()
}

/// Adds a sample of `pid`'s threads to `threads`: a thread seen for the first time counts from
/// its ticks now if `baseline` (it was there before the transfer), else from zero (it started
/// during the transfer).
fn sample_threads(pid: u32, threads: &mut Threads, baseline: bool) {
    for (tid, name, ticks) in thread_ticks(pid) {
        let entry = threads
            .entry(tid)
            .or_insert((name, if baseline { ticks } else { 0 }, ticks));
        entry.2 = ticks;
    }
}

/// A `kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// User and system CPU seconds of a process, all its threads (`/proc/PID/stat` fields 14, 15).
fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((user / ticks, system / ticks))
}

impl Sampler {
    fn start(pid: u32) -> Result<Sampler, String> {
        // Reset the peak so that VmHWM afterwards is this transfer's (Linux >= 4.0, "5").
        fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .map_err(io_error("reset VmHWM with /proc/PID/clear_refs"))?;
        let before_kib = status_kib(pid, "VmRSS").ok_or(format!("no VmRSS for pid {pid}"))?;
        let cpu_before = cpu_seconds(pid);
        let mut threads = Threads::new();
        sample_threads(pid, &mut threads, true);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut max, mut samples) = (0u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS") {
                    max = max.max(rss);
                    samples += 1;
                }
                sample_threads(pid, &mut threads, false);
                thread::sleep(SAMPLE_EVERY);
            }
            sample_threads(pid, &mut threads, false);
            (max, samples, threads)
        });
        Ok(Sampler {
            pid,
            cpu_before,
            stop,
            thread,
            before_kib,
        })
    }

    /// Stops sampling; adds the before, max, samples and VmHWM fields to `line`.
    fn finish(self, line: &mut Value) {
        self.stop.store(true, Ordering::Relaxed);
        let (max, samples, threads) = self.thread.join().unwrap_or_default();
        // CPU seconds per thread name, threads that used none left out.
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (name, first, last) in threads.into_values() {
            *by_name.entry(name).or_default() += last.saturating_sub(first) as f64 / ticks;
        }
        by_name.retain(|_, seconds| *seconds > 0.0);
        line["thread_cpu_s"] = json!(by_name);
        line["rss_pid"] = json!(self.pid);
        line["rss_before_kib"] = json!(self.before_kib);
        line["rss_max_kib"] = json!(max);
        line["rss_samples"] = json!(samples);
        line["hwm_kib"] = json!(status_kib(self.pid, "VmHWM"));
        if let (Some((user0, system0)), Some((user1, system1))) =
            (self.cpu_before, cpu_seconds(self.pid))
        {
            line["cpu_user_s"] = json!(user1 - user0);
            line["cpu_system_s"] = json!(system1 - system0);
        }
    }
}

fn sampler(options: &Options) -> Result<Option<Sampler>, String> {
    number::<u32>(options, "rss-pid")?
        .map(Sampler::start)
        .transpose()
}

/// "; child RSS max ..." for a line with sampler fields, else nothing.
fn child_summary(line: &Value) -> String {
    if line["rss_max_kib"].is_null() {
        return String::new();
    }
    let seconds = |field: &str| line[field].as_f64().unwrap_or(f64::NAN);
    format!(
        "; child RSS max {} KiB, VmHWM {} KiB, CPU user {:.2} s system {:.2} s",
        line["rss_max_kib"],
        line["hwm_kib"],
        seconds("cpu_user_s"),
        seconds("cpu_system_s")
    )
}

// ---- HTTP -------------------------------------------------------------------------------------

fn connect(addr: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr).map_err(io_error(addr))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(io_error(addr))?;
    Ok(stream)
}

/// A response head: status and headers (names lowercased).
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }
}

fn read_head(reader: &mut impl BufRead) -> Result<Head, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(io_error("read status line"))?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(io_error("read header"))?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    Ok(Head { status, headers })
}

/// One small request on a fresh connection; returns the status and the body.
fn small_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let mut stream = connect(addr)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream
        .write_all(request.as_bytes())
        .map_err(io_error("send request"))?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let mut body = Vec::new();
    match head.content_length() {
        Some(length) => {
            reader
                .take(length)
                .read_to_end(&mut body)
                .map_err(io_error("read body"))?;
        }
        None => {
            reader
                .read_to_end(&mut body)
                .map_err(io_error("read body"))?;
        }
    }
    Ok((head.status, body))
}

fn put(options: &Options) -> Result<(), String> {
    let addr = required(options, "addr")?;
    let path = required(options, "file")?;
    let (status, body) = small_request(
        addr,
        "POST",
        "/v2/images",
        Some(r#"{"name":"bench-data","disk_format":"raw","container_format":"bare"}"#),
    )?;
    let image: Value = serde_json::from_slice(&body).map_err(|error| error.to_string())?;
    let id = match (status, image["id"].as_str()) {
        (201, Some(id)) => id.to_string(),
        _ => return Err(format!("POST /v2/images answered {status}: {image}")),
    };

    if options.get("client").map(String::as_str) == Some("curl") {
        return put_with_curl(options, addr, path, &id);
    }
    let mut file = File::open(path).map_err(io_error(path))?;
    let length = file.metadata().map_err(io_error(path))?.len();
    let mut stream = connect(addr)?;
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\
         Connection: close\r\n\r\n"
    );
    let sampler = sampler(options)?;
    let started = Instant::now();
    stream
        .write_all(head.as_bytes())
        .map_err(io_error("send head"))?;
    // File to TcpStream: std uses sendfile(2) here, so the client never copies the data.
    let sent = io::copy(&mut file, &mut stream).map_err(io_error("send body"))?;
    let body_sent = started.elapsed().as_secs_f64();
    let mut reader = BufReader::new(stream);
    let response = read_head(&mut reader);
    let seconds = started.elapsed().as_secs_f64();
    let mut line = json!({
        "kind": "upload", "label": label(options, "glint"), "bytes": sent,
        "seconds": seconds, "mbps": mb_per_s(sent, seconds),
        "body_sent_seconds": body_sent, "mbps_body_sent": mb_per_s(sent, body_sent),
        "image": id,
    });
    if let Some(sampler) = sampler {
        sampler.finish(&mut line);
    }
    let response = response?;
    if response.status != 204 || sent != length {
        return Err(format!(
            "PUT answered {} after {sent} of {length} bytes",
            response.status
        ));
    }
    add_hashes(addr, &id, &mut line)?;
    eprintln!(
        "upload {}: {sent} bytes in {seconds:.3} s, {:.1} MB/s (body sent after {body_sent:.3} s){}",
        line["label"],
        mb_per_s(sent, seconds),
        child_summary(&line)
    );
    emit(&line);
    Ok(())
}

/// Adds the image's `checksum`, `os_hash_algo` and `os_hash_value` to `line`.
fn add_hashes(addr: &str, id: &str, line: &mut Value) -> Result<(), String> {
    let (_, body) = small_request(addr, "GET", &format!("/v2/images/{id}"), None)?;
    let record: Value = serde_json::from_slice(&body).map_err(|error| error.to_string())?;
    line["checksum"] = record["checksum"].clone();
    line["os_hash_algo"] = record["os_hash_algo"].clone();
    line["os_hash_value"] = record["os_hash_value"].clone();
    Ok(())
}

/// The upload of `put --client curl`: `curl -T FILE` sends the body, as curl does by default
/// (with `Expect: 100-continue`, which glint answers); the time is from curl's start to its exit
/// (the response read).
fn put_with_curl(options: &Options, addr: &str, path: &str, id: &str) -> Result<(), String> {
    let length = fs::metadata(path).map_err(io_error(path))?.len();
    let sampler = sampler(options)?;
    let started = Instant::now();
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_upload}",
        ])
        .args(["-H", "Content-Type: application/octet-stream"])
        .args(["--max-time", &IO_TIMEOUT.as_secs().to_string(), "-T", path])
        .arg(format!("http://{addr}/v2/images/{id}/file"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io_error("run curl (install it: apt-get install curl)"))?;
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .ok_or("curl has no stdout")?
        .read_to_string(&mut stdout)
        .map_err(io_error("read curl's output"))?;
    // wait4 rather than Child::wait: it also gives curl's CPU time.
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: wait4 on our own child, with valid pointers to a status and a rusage.
    let reaped = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    let cpu = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    let mut line = json!({
        "kind": "upload", "label": label(options, "glint (curl -T)"), "bytes": length,
        "seconds": seconds, "mbps": mb_per_s(length, seconds), "image": id, "client": "curl",
        "curl_cpu_user_s": cpu(usage.ru_utime), "curl_cpu_system_s": cpu(usage.ru_stime),
    });
    if let Some(sampler) = sampler {
        sampler.finish(&mut line);
    }
    let exited_ok = reaped > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let answer: Vec<&str> = stdout.split_whitespace().collect();
    if !exited_ok || answer.first() != Some(&"204") || answer.get(1) != Some(&&*length.to_string())
    {
        return Err(format!(
            "curl -T answered {stdout:?} (exit status {status:#x})"
        ));
    }
    add_hashes(addr, id, &mut line)?;
    eprintln!(
        "upload {} (curl -T): {length} bytes in {seconds:.3} s, {:.1} MB/s; curl CPU user {:.2} s system {:.2} s{}",
        line["label"],
        mb_per_s(length, seconds),
        cpu(usage.ru_utime),
        cpu(usage.ru_stime),
        child_summary(&line)
    );
    emit(&line);
    Ok(())
}

fn get(options: &Options) -> Result<(), String> {
    let addr = required(options, "addr")?;
    let path = required(options, "path")?;
    let expect: Option<u64> = number(options, "expect-bytes")?;
    let mut stream = connect(addr)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let sampler = sampler(options)?;
    let started = Instant::now();
    stream
        .write_all(request.as_bytes())
        .map_err(io_error("send request"))?;
    let mut reader = BufReader::with_capacity(GET_BUFFER, stream);
    let head = read_head(&mut reader)?;
    // Whatever the BufReader already holds, then large reads straight from the socket.
    let mut bytes = 0u64;
    loop {
        let buffered = reader.fill_buf().map_err(io_error("read body"))?.len();
        if buffered == 0 {
            break;
        }
        reader.consume(buffered);
        bytes += buffered as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut line = json!({
        "kind": "download", "label": label(options, "glint"), "bytes": bytes,
        "seconds": seconds, "mbps": mb_per_s(bytes, seconds), "status": head.status,
    });
    if let Some(sampler) = sampler {
        sampler.finish(&mut line);
    }
    let wanted = expect.or(head.content_length());
    if head.status != 200 || wanted.is_some_and(|wanted| wanted != bytes) {
        return Err(format!(
            "GET {path} answered {} with {bytes} bytes, expected {wanted:?}",
            head.status
        ));
    }
    eprintln!(
        "download {}: {bytes} bytes in {seconds:.3} s, {:.1} MB/s{}",
        line["label"],
        mb_per_s(bytes, seconds),
        child_summary(&line)
    );
    emit(&line);
    Ok(())
}

// ---- status ----------------------------------------------------------------------------------

fn status(options: &Options) -> Result<(), String> {
    let path = required(options, "file")?;
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    let document: Value = serde_json::from_str(&text).map_err(|error| error.to_string())?;
    let port = document["listen"][0]
        .as_str()
        .and_then(|addr| addr.rsplit_once(':'))
        .map(|(_, port)| port.to_string())
        .ok_or("no listen[0] in the status file")?;
    let child = document["children"][0]["pid"]
        .as_u64()
        .ok_or("no children[0].pid in the status file")?;
    println!("{port} {child}");
    Ok(())
}
