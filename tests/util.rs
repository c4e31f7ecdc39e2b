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

    /// Starts the master through `wrapper` (a program and its arguments, which must end by
    /// exec'ing the arguments that follow it: the binary, `--config-file`, the config), so that
    /// the master's pid is the wrapper's. Returns at once, like `launch`.
    pub fn launch_under(dir: tempfile::TempDir, config_path: PathBuf, wrapper: &[&str]) -> Server {
        let master = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_glint-api"))
            .arg("--config-file")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(dir.path().join("stderr.log")).expect("stderr file"),
            ))
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run {}: {error} (install util-linux)", wrapper[0])
            });
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

    /// Sends SIGHUP and asserts that the reload succeeded (its verdict and the log otherwise).
    pub fn reload_succeeds(&self) {
        let verdict = self.reload();
        assert_eq!(verdict["outcome"], "succeeded", "{verdict}\n{}", self.log());
    }

    /// The pid of the process that wrote the first log line containing `needle` (log lines
    /// carry `glint-api[PID]`); panics with the log if there is none.
    pub fn pid_that_logged(&self, needle: &str) -> i32 {
        let log = self.log();
        log.lines()
            .find(|line| line.contains(needle))
            .and_then(|line| line.split("glint-api[").nth(1))
            .and_then(|rest| rest.split(']').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no line with {needle:?} and a pid in the log:\n{log}"))
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

/// A child start held by the debug hook `GLINT_FAULT_CHILD_HOLD`: the children it names wait
/// before their ready report until the test lets them go on ([`Hold::release`]) or fail
/// ([`Hold::fail`]); one never released holds them until they are killed.
pub struct Hold {
    dir: tempfile::TempDir,
}

impl Hold {
    pub fn new() -> Hold {
        Hold {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Lets the held children report ready.
    pub fn release(&self) {
        self.say("go");
    }

    /// Makes the held children fail their start.
    pub fn fail(&self) {
        self.say("fail");
    }

    /// Writes the word whole, by rename: a child must never read the file between its
    /// creation and its content (it would take an empty word for "go").
    fn say(&self, word: &str) {
        let draft = self.dir.path().join("word.draft");
        fs::write(&draft, word).expect("write the hold's word");
        fs::rename(&draft, self.word()).expect("rename the hold's word into place");
    }

    fn word(&self) -> PathBuf {
        self.dir.path().join("word")
    }
}

impl Server {
    /// Starts a server whose children `which` (`GEN/NTH`, or `GEN` for all of generation GEN)
    /// `hold` holds in their start.
    pub fn start_held(extra: &str, hold: &Hold, which: &str) -> Server {
        let value = format!("{which}:{}", hold.word().display());
        Server::start_env(extra, &[("GLINT_FAULT_CHILD_HOLD", &value)])
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
    create_image_from(
        addr,
        r#"{"name":"test","disk_format":"raw","container_format":"bare"}"#,
    )
}

/// Creates an image from the JSON document `body` (a 201 is asserted) and returns its id.
pub fn create_image_from(addr: SocketAddr, body: &str) -> String {
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

// ---------------------------------------------------------------------------------------------
// What the kernel knows about a connection: unread and unacknowledged bytes, arrival times.
// ---------------------------------------------------------------------------------------------

/// What the kernel says of the other end of a connection (the server's socket of a client's
/// stream): the bytes it has received in order (`tcpi_bytes_received`), how many of them its
/// process has not read yet (`idiag_rqueue`, rcv_nxt - copied_seq), and its inode (what
/// /proc/PID/fd links name, `socket:[INODE]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSocket {
    pub received: u64,
    pub unread: u64,
    pub inode: u64,
}

/// `struct inet_diag_sockid` (linux/inet_diag.h): ports and addresses in network byte order.
#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

/// `struct inet_diag_msg`, the head of the answer.
#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// The other end of `stream` as the kernel sees it, by an exact sock_diag lookup of the socket
/// whose local address is `stream`'s peer and whose remote address is `stream` (netlink
/// NETLINK_SOCK_DIAG, the interface of `ss`; it sees every socket of this network namespace,
/// the server's included). `None` once that socket is closed. IPv4 only.
pub fn peer_socket(stream: &TcpStream) -> Option<PeerSocket> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const INET_DIAG_INFO: u16 = 2;
    let (SocketAddr::V4(server), SocketAddr::V4(client)) =
        (stream.peer_addr().ok()?, stream.local_addr().ok()?)
    else {
        panic!("peer_socket looks up IPv4 connections only");
    };
    let address = |ip: std::net::Ipv4Addr| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&ip.octets());
        bytes
    };
    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        body: InetDiagReqV2,
    }
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        body: InetDiagReqV2 {
            family: libc::AF_INET as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 1 << (INET_DIAG_INFO - 1),
            pad: 0,
            states: !0,
            id: InetDiagSockId {
                sport: server.port().to_be(),
                dport: client.port().to_be(),
                src: address(*server.ip()),
                dst: address(*client.ip()),
                interface: 0,
                // INET_DIAG_NOCOOKIE: look the socket up by its addresses.
                cookie: [!0, !0],
            },
        },
    };
    // SAFETY: socket(2); the descriptor is owned (and closed) by `socket` below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    assert!(fd >= 0, "netlink socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just opened and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: send(2) of the request, which lives until the call returns.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            (&request as *const Request).cast(),
            std::mem::size_of::<Request>(),
            0,
        )
    };
    assert!(
        sent > 0,
        "sock_diag request: {}",
        io::Error::last_os_error()
    );
    let mut answer = [0u64; 1024];
    // SAFETY: recv(2) into a buffer we own, of its size.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            std::mem::size_of_val(&answer),
            0,
        )
    };
    assert!(n > 0, "sock_diag answer: {}", io::Error::last_os_error());
    // SAFETY: the buffer is u64-aligned and at least as long as the structs read from it;
    // lengths are checked against `n` before each read.
    unsafe {
        let bytes = answer.as_ptr().cast::<u8>();
        let header: libc::nlmsghdr = std::ptr::read_unaligned(bytes.cast());
        if header.nlmsg_type == libc::NLMSG_ERROR as u16 {
            let error: libc::c_int =
                std::ptr::read_unaligned(bytes.add(std::mem::size_of::<libc::nlmsghdr>()).cast());
            assert_eq!(
                error,
                -libc::ENOENT,
                "sock_diag: {}",
                io::Error::from_raw_os_error(-error)
            );
            return None;
        }
        assert_eq!(
            header.nlmsg_type, SOCK_DIAG_BY_FAMILY,
            "sock_diag answer type"
        );
        let end = (header.nlmsg_len as usize).min(n as usize);
        let message_at = std::mem::size_of::<libc::nlmsghdr>();
        let mut at = message_at + std::mem::size_of::<InetDiagMsg>();
        assert!(at <= end, "short sock_diag answer");
        let message: InetDiagMsg = std::ptr::read_unaligned(bytes.add(message_at).cast());
        // The attributes: struct rtattr { u16 len; u16 type; } and its data, 4-byte aligned.
        while at + 4 <= end {
            let length = std::ptr::read_unaligned(bytes.add(at).cast::<u16>()) as usize;
            let kind = std::ptr::read_unaligned(bytes.add(at + 2).cast::<u16>());
            if length < 4 || at + length > end {
                break;
            }
            if kind == INET_DIAG_INFO {
                let mut info: libc::tcp_info = std::mem::zeroed();
                let copy = (length - 4).min(std::mem::size_of::<libc::tcp_info>());
                std::ptr::copy_nonoverlapping(
                    bytes.add(at + 4),
                    (&mut info as *mut libc::tcp_info).cast::<u8>(),
                    copy,
                );
                return Some(PeerSocket {
                    received: info.tcpi_bytes_received,
                    unread: u64::from(message.rqueue),
                    inode: u64::from(message.inode),
                });
            }
            at += length.div_ceil(4) * 4;
        }
    }
    // A socket without TCP information: closing (TIME_WAIT and the like).
    None
}

/// Whether reading `stream` would return at once (data, the peer's close, or an error),
/// without waiting and without reading.
pub fn readable_now(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd we own, without waiting.
    let n = unsafe { libc::poll(&mut fds, 1, 0) };
    n > 0 && fds.revents != 0
}

/// Asks the kernel to stamp every segment `stream` receives with the time it arrived
/// (SO_TIMESTAMPNS), so that [`first_arrival`] can tell when an answer came, however late the
/// test reads it. Set it before the answer can arrive.
pub fn stamp_arrivals(stream: &TcpStream) {
    receive_timestamps_on();
    set_timestamping(stream);
}

fn set_timestamping(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) with an int option on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_TIMESTAMPNS: {}", io::Error::last_os_error());
}

/// Makes sure the kernel stamps received packets from now on. The first socket that asks for
/// stamps turns them on system-wide only later, from a work queue (`net_enable_timestamp`), and
/// the last one to close turns them off the same way; a packet that arrives in between carries
/// no stamp, and TCP then gives none. So the first call keeps a socket asking for stamps open for
/// the life of the test process and waits until a byte sent to it arrives stamped.
fn receive_timestamps_on() {
    static PROBE: std::sync::OnceLock<(TcpStream, TcpStream)> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the probe");
        let probe = TcpStream::connect(listener.local_addr().unwrap()).expect("connect the probe");
        set_timestamping(&probe);
        probe.set_read_timeout(Some(DEADLINE)).unwrap();
        let (mut sender, _) = listener.accept().expect("accept the probe");
        let end = Instant::now() + DEADLINE;
        loop {
            sender.write_all(b"x").unwrap();
            let stamped = first_arrival(&probe).is_ok();
            let mut byte = [0u8; 1];
            (&probe).read_exact(&mut byte).unwrap();
            if stamped {
                break;
            }
            assert!(
                Instant::now() < end,
                "the kernel gave no receive timestamps within {DEADLINE:?}"
            );
            // Polling for the kernel's work queue, a condition with the deadline above.
            std::thread::sleep(Duration::from_millis(1));
        }
        (probe, sender)
    });
}

/// When the first unread byte on `stream` arrived, by the kernel's stamp (CLOCK_REALTIME, as
/// `SystemTime`); waits for one as long as the stream's read timeout allows. Reads nothing
/// (MSG_PEEK). Errors when nothing arrived, the peer closed without sending, or the kernel
/// gave no stamp (see [`stamp_arrivals`]).
pub fn first_arrival(stream: &TcpStream) -> io::Result<std::time::SystemTime> {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one cmsghdr with a timespec, aligned.
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg(2) into the buffers described by `message`, which we own.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut message, libc::MSG_PEEK) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed without a byte",
        ));
    }
    // SAFETY: walking the control messages recvmsg(2) filled in, within msg_controllen.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let stamp: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                return Ok(std::time::UNIX_EPOCH
                    + Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32));
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    Err(io::Error::other(
        "no SCM_TIMESTAMPNS: call stamp_arrivals first",
    ))
}

/// The descriptor number process `pid` holds the socket `inode` under, from /proc/PID/fd.
pub fn fd_of_socket(pid: i32, inode: u64) -> Option<i32> {
    let target = format!("socket:[{inode}]");
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|entry| {
            fs::read_link(entry.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
        })
        .and_then(|entry| entry.file_name().to_str()?.parse().ok())
}

/// Whether a thread of process `pid` is blocked in recvfrom(2) on descriptor `fd` (the system
/// call a blocked thread is in, /proc/PID/task/TID/syscall, needs ptrace access: root): the
/// process waits for more from that socket.
pub fn blocked_receiving(pid: i32, fd: i32) -> bool {
    let call = libc::SYS_recvfrom.to_string();
    let descriptor = format!("0x{fd:x}");
    fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            fs::read_to_string(task.path().join("syscall")).is_ok_and(|line| {
                let mut fields = line.split_whitespace();
                fields.next() == Some(call.as_str()) && fields.next() == Some(descriptor.as_str())
            })
        })
}

/// A command's exit status and both output streams, for failure messages.
pub fn show_output(what: &str, output: &std::process::Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that a command exited with `code`; the failure shows the command's streams and
/// `context` (a server log, say).
pub fn assert_exit(output: &std::process::Output, code: i32, what: &str, context: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}\n{context}",
        show_output(what, output)
    );
}
