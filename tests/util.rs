//! The test harness: start the real `glint-api` binary with a config in a temporary directory,
//! read its status file, send it signals, wait for conditions with deadlines, and talk HTTP to it
//! over real sockets.
//!
//! `Server`'s `Drop` kills the master and every child it knows of, so a failing test leaves no
//! process behind. Waits poll a condition until a deadline and fail with a message that includes
//! the server log; no test sleeps in place of a condition.

// Not every helper is used by every build of the test binary while tests are added.
#![allow(dead_code)]

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The default deadline for a server to reach a state.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running glint-api master and its temporary directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    master: Option<Child>,
    pub master_pid: i32,
}

impl Server {
    /// Starts a server whose config is the harness's base config (loopback, an ephemeral port,
    /// pid/status/log in the temporary dir) followed by `extra` lines for `[DEFAULT]`.
    pub fn start(extra: &str) -> Server {
        Server::start_env(extra, &[])
    }

    /// Like `start`, with extra environment variables for the master (and so its children).
    pub fn start_env(extra: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("glint-api.conf");
        fs::write(&config_path, base_config(extra)).expect("write config");
        Server::start_with(dir, config_path, env)
    }

    /// Starts a server on a config file already written.
    pub fn start_with(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        env: &[(&str, &str)],
    ) -> Server {
        let master = Command::new(env!("CARGO_BIN_EXE_glint-api"))
            .envs(env.iter().copied())
            .arg("--config-file")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(dir.path().join("stderr.log")).expect("stderr file"),
            ))
            .spawn()
            .expect("spawn glint-api");
        let master_pid = master.id() as i32;
        let server = Server {
            dir,
            config_path,
            master: Some(master),
            master_pid,
        };
        server.wait_for("the first generation to serve", DEADLINE, |status| {
            status["phase"] == "running" && status["generation"] == 1
        });
        server
    }

    /// Like `start`, with the master in a process group of its own (`setpgid(0, 0)` before exec),
    /// so that a test can signal the whole group (`kill(-pgid, ...)`) as a terminal would.
    pub fn start_in_own_process_group(extra: &str) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("glint-api.conf");
        fs::write(&config_path, base_config(extra)).expect("write config");
        let server = Server::launch(dir, config_path, &[], true);
        server.wait_for("the first generation to serve", DEADLINE, |status| {
            status["phase"] == "running" && status["generation"] == 1
        });
        server
    }

    /// Starts the master on a config file already written and returns at once, without waiting
    /// for the first generation (for tests that act while the server is starting). With
    /// `own_process_group`, the master leads a process group of its own.
    pub fn launch(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        env: &[(&str, &str)],
        own_process_group: bool,
    ) -> Server {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(env!("CARGO_BIN_EXE_glint-api"));
        command
            .envs(env.iter().copied())
            .arg("--config-file")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(dir.path().join("stderr.log")).expect("stderr file"),
            ));
        if own_process_group {
            command.process_group(0);
        }
        let master = command.spawn().expect("spawn glint-api");
        let master_pid = master.id() as i32;
        Server {
            dir,
            config_path,
            master: Some(master),
            master_pid,
        }
    }

    /// Replaces the config with the base config plus `extra`.
    pub fn write_config(&self, extra: &str) {
        self.write_config_text(&base_config(extra));
    }

    /// Replaces the config file with exactly `text`.
    pub fn write_config_text(&self, text: &str) {
        let temporary = self.config_path.with_extension("tmp");
        fs::write(&temporary, text).expect("write config");
        fs::rename(&temporary, &self.config_path).expect("rename config");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The status document, or Null while it does not exist or is unreadable.
    pub fn status(&self) -> Value {
        fs::read_to_string(self.path("glint-api.status.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    }

    /// The address the current generation listens on.
    pub fn addr(&self) -> SocketAddr {
        let status = self.status();
        status["listen"][0]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listen address in status: {status}\n{}", self.log()))
    }

    /// The pids of live children, optionally only those in `state`.
    pub fn children(&self, state: Option<&str>) -> Vec<i32> {
        let status = self.status();
        status["children"]
            .as_array()
            .map(|children| {
                children
                    .iter()
                    .filter(|c| state.is_none_or(|s| c["state"] == s))
                    .filter_map(|c| c["pid"].as_i64().map(|pid| pid as i32))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `signal` to the master.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we started.
        unsafe {
            libc::kill(self.master_pid, signal);
        }
    }

    /// Sends SIGHUP and waits for the verdict of that reload; returns the `last_reload` record.
    pub fn reload(&self) -> Value {
        let before = self.status()["reloads_requested"].as_u64().unwrap_or(0);
        self.signal(libc::SIGHUP);
        let mut last = Value::Null;
        self.wait_for("the reload's verdict", DEADLINE, |status| {
            last = status["last_reload"].clone();
            status["reload_in_progress"].is_null()
                && status["last_reload"]["number"].as_u64().unwrap_or(0) > before
        });
        last
    }

    /// Polls the status file until `condition` holds, or panics after `deadline` with the log.
    pub fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        mut condition: impl FnMut(&Value) -> bool,
    ) {
        let end = Instant::now() + deadline;
        loop {
            let status = self.status();
            if condition(&status) {
                return;
            }
            if Instant::now() >= end {
                panic!(
                    "timed out after {deadline:?} waiting for {what}\nstatus: {status:#}\n--- log ---\n{}",
                    self.log()
                );
            }
            if let Some(master) = self.master_exited() {
                panic!(
                    "the master exited ({master}) while waiting for {what}\n--- log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The master's exit status if it has exited.
    pub fn master_exited(&self) -> Option<String> {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on our own child; reaping here is fine because `Child`
        // is only used to kill it afterwards.
        let rc = unsafe { libc::waitpid(self.master_pid, &mut status, libc::WNOHANG) };
        if rc == self.master_pid {
            Some(describe_wait_status(status))
        } else {
            None
        }
    }

    /// Waits for the master to exit; returns its wait status description.
    pub fn wait_exit(&mut self, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            if let Some(master) = self.master.as_mut() {
                if let Ok(Some(status)) = master.try_wait() {
                    self.master = None;
                    return format!("{status}");
                }
            } else {
                return "already reaped".into();
            }
            if Instant::now() >= end {
                panic!(
                    "the master did not exit within {deadline:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's log file and its stderr.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.path("glint-api.log")).unwrap_or_default();
        let stderr = fs::read_to_string(self.path("stderr.log")).unwrap_or_default();
        format!("{log}--- stderr ---\n{stderr}")
    }

    /// Polls the log until it contains `needle`.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) {
        let end = Instant::now() + deadline;
        while !self.log().contains(needle) {
            if Instant::now() >= end {
                panic!(
                    "timed out waiting for {needle:?} in the log\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Connects to the current listener.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr()).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let children = self.children(None);
        // SAFETY: kill(2) on processes this test started.
        unsafe {
            libc::kill(self.master_pid, libc::SIGKILL);
            for pid in children {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Some(mut master) = self.master.take() {
            let _ = master.wait();
        }
    }
}

/// The base config: loopback, ephemeral port, two workers, state files, image data and the
/// database in the test's dir (relative paths resolve against the config's folder). `extra`
/// lines go into `[DEFAULT]`.
pub fn base_config(extra: &str) -> String {
    format!(
        "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = 0\nworkers = 2\nworker_threads = 4\n\
         pid_file = glint-api.pid\nlog_file = glint-api.log\ngraceful_shutdown_timeout = 30\n\
         {extra}\n\n[glance_store]\nfilesystem_store_datadir = images\n\n\
         [database]\nconnection = sqlite:///glint.sqlite\n"
    )
}

pub fn describe_wait_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// Whether a process exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state is the field after the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// The pids of every process, from /proc.
pub fn proc_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// A process's state letter and parent pid, from /proc/PID/stat.
pub fn state_and_parent(pid: i32) -> Option<(String, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name: state, ppid, ...
    let mut fields = stat.rsplit(')').next()?.split_whitespace();
    let state = fields.next()?.to_string();
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// The live (not zombie) pids whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    proc_pids()
        .into_iter()
        .filter(|&pid| {
            state_and_parent(pid).is_some_and(|(state, ppid)| ppid == parent && state != "Z")
        })
        .collect()
}

/// Waits until `condition` holds or panics with `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !condition() {
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the server said it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one response from `reader` (after a request with method `method`). Errors on EOF or a
/// malformed response; `Ok(None)` when the connection was closed before any byte arrived.
pub fn read_response<R: BufRead>(reader: &mut R, method: &str) -> io::Result<Option<Response>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF in response head",
            ));
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            // Skip interim 1xx responses.
            if head.starts_with(b"HTTP/1.1 1") {
                head.clear();
                continue;
            }
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    parsed.parse(&head).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{e}: {:?}", String::from_utf8_lossy(&head)),
        )
    })?;
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let no_body =
        method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
        return Ok(Some(response));
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        response.body.resize(length, 0);
        reader.read_exact(&mut response.body)?;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(Some(response))
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> io::Result<Option<Response>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(request)?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, "GET")
}

/// `GET path` on a new connection, `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes())?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response"))
}

/// After the server should have closed: true if the peer has closed (read returns 0 or reset).
pub fn peer_closed(stream: &mut TcpStream, deadline: Duration) -> bool {
    stream.set_read_timeout(Some(deadline)).ok();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_)) && {
        // Distinguish a timeout (still open) from EOF/reset.
        match stream.read(&mut byte) {
            Ok(0) => true,
            Err(error) => !matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        }
    }
}

/// The path of a file in the temporary directory of a test that has no server.
pub fn temp_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("glint-api.conf");
    fs::write(&path, text).expect("write config");
    path
}

/// `bytes` with everything but printable ASCII escaped, for failure messages.
pub fn show(bytes: &[u8]) -> String {
    let mut text = bytes.escape_ascii().to_string();
    if text.len() > 600 {
        let tail = text.split_off(text.len() - 100);
        text.truncate(500);
        text = format!("{text}...({} bytes)...{tail}", bytes.len());
    }
    text
}

/// Reads until the peer closes. `Ok` with what arrived (no more responses should have) after a
/// FIN; `Err` on a reset or when nothing closes the connection before the read timeout.
pub fn read_to_eof<R: Read>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).map(|_| rest)
}

/// Sends `request` on a new connection (then half-closes it when `shut_write`), reads one
/// response (to a HEAD if `request` starts with one) and then whatever follows until the server closes or `deadline` passes.
pub fn exchange_then_eof(
    addr: SocketAddr,
    request: &[u8],
    shut_write: bool,
    deadline: Duration,
) -> (io::Result<Option<Response>>, io::Result<Vec<u8>>) {
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(error) => return (Err(error), Ok(Vec::new())),
    };
    let _ = stream.set_read_timeout(Some(deadline));
    // A server that refuses early may close before the whole request is written; what it
    // answered is still readable.
    let _ = stream.write_all(request);
    if shut_write {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut reader = BufReader::new(stream);
    let start = request.iter().position(|b| !b"\r\n".contains(b));
    let is_head = start.is_some_and(|i| request[i..].starts_with(b"HEAD "));
    let response = read_response(&mut reader, if is_head { "HEAD" } else { "GET" });
    let rest = read_to_eof(&mut reader);
    (response, rest)
}

/// One request with a body of `content_type` on a new connection; panics (naming the request)
/// if no response comes back.
pub fn send_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Response {
    request(addr, method, path, &[("Content-Type", content_type)], body)
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
}

/// Sends `method path` with `headers` and `body` on a new connection (`Connection: close`, a
/// Content-Length whenever there is a body or the method usually has one) and reads the response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    // A server that answers before reading the body (a 401) may close before all is written.
    let _ = stream.write_all(&bytes);
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, method)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response"))
}

/// Creates a raw, bare image with no data (`queued`) through the API and returns its id.
pub fn create_image(addr: SocketAddr) -> String {
    let body = r#"{"name":"test","disk_format":"raw","container_format":"bare"}"#;
    let response = send_body(
        addr,
        "POST",
        "/v2/images",
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    let image: Value = serde_json::from_slice(&response.body).unwrap();
    image["id"].as_str().unwrap().to_string()
}

/// A small tmpfs mounted for one test (a full disk, a read-only remount), unmounted when
/// dropped. Mounting needs root, which CI has: a test that cannot mount fails, it never skips.
pub struct Tmpfs {
    /// Holds the mount point; removed after the unmount.
    _parent: tempfile::TempDir,
    pub mount_point: PathBuf,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().expect("temporary directory");
        let mount_point = parent.path().join("small");
        fs::create_dir(&mount_point).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "cannot mount a {size} tmpfs (these tests must run as root): {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs {
            _parent: parent,
            mount_point,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // A child not reaped yet may hold it: detach it lazily so nothing stays mounted.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}
