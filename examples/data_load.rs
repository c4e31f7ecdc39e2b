//! data_load: the client, the references and the RSS sampler of the data-path benchmark
//! (`scripts/bench-data`, docs/BENCHMARKS.md).
//!
//! Modes (each measurement prints one JSON line, and a human line on stderr):
//!
//! - `gen --out FILE --bytes N`: writes N bytes of pseudo-random data (xorshift64*, which does not
//!   compress and is far faster than /dev/urandom).
//! - `hash --file FILE`: the upload reference. Reads FILE in 64 KiB chunks on one thread and
//!   updates md5 and sha512 with each chunk, in one pass, as glint's store does
//!   (`src/store/upload.rs`, same crates and versions); prints the rate and both digests.
//! - `inspect --file FILE --inspector on|off`: the cost of format inspection. The upload's
//!   per-byte work on one core, as `hash` does it, with (`on`) and without (`off`) glint's
//!   format inspector fed each chunk and judging the image (`disk_format = raw`) at the end, as
//!   `api::image_data` does. Run side by side in each round; the socket, the disk and the fsync
//!   are left out, so the share measured is an upper bound of the share in a real upload.
//! - `write --file FILE --out FILE2`: a disk reference. Copies FILE to FILE2 in 64 KiB writes and
//!   fsyncs FILE2, as glint's store writes an image (without hashing).
//! - `put --addr HOST:PORT --file FILE [--rss-pid PID]`: creates an image (`POST /v2/images`),
//!   uploads FILE to it (`PUT /v2/images/{id}/file`, Content-Length, body sent with
//!   sendfile(2) so the client costs almost nothing), then reads the image record back.
//!   Reports the time to the last body byte handed to the kernel and the time to the response.
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
//!
//! MB are 10^6 bytes throughout.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::{json, Value};
use sha2::Sha512;

/// The chunk size glint's upload path uses (`UPLOAD_CHUNK`), and so the hash reference's.
const CHUNK: usize = 64 * 1024;
/// The download client's read buffer.
const GET_BUFFER: usize = 1024 * 1024;
/// How often the RSS sampler reads `/proc/PID/status`.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Bound on every socket read and write: a stuck server fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        eprintln!("usage: data_load gen|hash|write|put|get|status [options]");
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
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
    let mut md5 = Md5::new();
    let mut sha512 = Sha512::new();
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
    let (md5, sha512) = (hex(&md5.finalize()), hex(&sha512.finalize()));
    eprintln!(
        "hash md5+sha512: {bytes} bytes in {seconds:.3} s, {:.1} MB/s",
        mb_per_s(bytes, seconds)
    );
    emit(&json!({
        "kind": "hash", "label": label(options, "md5+sha512"), "bytes": bytes,
        "seconds": seconds, "mbps": mb_per_s(bytes, seconds), "md5": md5, "sha512": sha512,
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
    let mut md5 = Md5::new();
    let mut sha512 = Sha512::new();
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
    let (_, _) = (md5.finalize(), sha512.finalize());
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
    let path = required(options, "file")?;
    let out = required(options, "out")?;
    let mut input = File::open(path).map_err(io_error(path))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(io_error(out))?;
    let mut buffer = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    let started = Instant::now();
    loop {
        let n = input.read(&mut buffer).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        output.write_all(&buffer[..n]).map_err(io_error(out))?;
        bytes += n as u64;
    }
    let written = started.elapsed().as_secs_f64();
    output.sync_all().map_err(io_error(out))?;
    let seconds = started.elapsed().as_secs_f64();
    drop(output);
    let _ = fs::remove_file(out);
    eprintln!(
        "write+fsync: {bytes} bytes in {seconds:.3} s ({:.1} MB/s; {:.1} MB/s before the fsync)",
        mb_per_s(bytes, seconds),
        mb_per_s(bytes, written)
    );
    emit(&json!({
        "kind": "write", "label": label(options, "write+fsync"), "bytes": bytes,
        "seconds": seconds, "mbps": mb_per_s(bytes, seconds),
        "mbps_before_fsync": mb_per_s(bytes, written),
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
    thread: thread::JoinHandle<(u64, u64)>,
    before_kib: u64,
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
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut max, mut samples) = (0u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS") {
                    max = max.max(rss);
                    samples += 1;
                }
                thread::sleep(SAMPLE_EVERY);
            }
            (max, samples)
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
        let (max, samples) = self.thread.join().unwrap_or((0, 0));
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
    let (_, body) = small_request(addr, "GET", &format!("/v2/images/{id}"), None)?;
    let record: Value = serde_json::from_slice(&body).map_err(|error| error.to_string())?;
    line["checksum"] = record["checksum"].clone();
    line["os_hash_algo"] = record["os_hash_algo"].clone();
    line["os_hash_value"] = record["os_hash_value"].clone();
    eprintln!(
        "upload {}: {sent} bytes in {seconds:.3} s, {:.1} MB/s (body sent after {body_sent:.3} s){}",
        line["label"],
        mb_per_s(sent, seconds),
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
