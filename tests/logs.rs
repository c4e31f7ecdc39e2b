//! Where log lines go (issue 14, part 6), seen in the files and sockets a real server writes:
//! `access_log_file` (its own file, reopened on SIGUSR1, moved by SIGHUP), `access_log = false`,
//! health checks left out of the access log unless `access_log_healthcheck` asks, one line per
//! record whatever a message holds, and `use_syslog` datagrams on /dev/log.
//!
//! The syslog tests run glint in a private mount namespace (`unshare --mount`, root) whose /dev
//! is a tmpfs holding links to the real devices and, bind-mounted on /dev/log, a datagram socket
//! this test owns: glint connects to /dev/log as it would anywhere, and the test reads exactly
//! what it sent. No syslog daemon is needed, and none on the machine is touched.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{self, Server, DEADLINE};

/// Sends `requests` on one connection (the last must close it) and reads until the server closes.
/// Requests on one connection are served in order by one thread, so once the last one's access
/// line is in the log, every earlier one's has been written (or left out).
fn pipelined(server: &Server, requests: &str) {
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(requests.as_bytes()).unwrap();
    let mut answers = Vec::new();
    stream
        .read_to_end(&mut answers)
        .expect("the server closes the connection after the last request");
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Polls `path` until it contains `needle`.
fn wait_for_in(path: &Path, needle: &str) {
    util::wait_until(
        &format!("{needle:?} in {}", path.display()),
        DEADLINE,
        || read(path).contains(needle),
    );
}

const VERSIONS_CLOSE: &str = "GET /versions HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n\r\n";

/// `access_log_file`: access lines go there and only there; SIGUSR1 reopens it after a rotation
/// (the master and the children); SIGHUP moves them back into the main log.
#[test]
fn access_lines_go_to_their_own_file_which_sigusr1_reopens_and_sighup_moves() {
    let server = Server::start("access_log_file = access.log");
    let access = server.path("access.log");
    pipelined(&server, VERSIONS_CLOSE);
    wait_for_in(&access, "\"GET /versions\" 200");
    assert_eq!(count(&read(&access), "\"GET /versions\""), 1);
    let main = read(&server.path("glint-api.log"));
    assert_eq!(count(&main, "\"GET /versions\""), 0, "{main}");
    assert!(main.contains("generation 1 serves"), "{main}");

    // logrotate: rename, then SIGUSR1. Both children of generation 1 get the signal too.
    fs::rename(&access, server.path("access.log.1")).unwrap();
    server.signal(libc::SIGUSR1);
    server.wait_for_log("SIGUSR1: log file reopened", DEADLINE);
    // Each child reopens when it handles the signal: poll with new connections until the
    // new file has a line from each of the two children. A request a child serves before it
    // reopens still goes to the renamed file (logrotate's window): none may be lost.
    let end = Instant::now() + DEADLINE;
    let children = server.children(Some("serving"));
    assert_eq!(children.len(), 2, "{}", server.log());
    let mut n_requests = 1;
    loop {
        pipelined(&server, VERSIONS_CLOSE);
        n_requests += 1;
        let text = read(&access);
        if children
            .iter()
            .all(|pid| text.contains(&format!("glint-api[{pid}]")))
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "not every child reopened access.log:\n{text}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each child writes its access lines in batches (`access_log_flush_ms`): poll until the
    // last ones are written.
    let lines_in_both = || {
        count(&read(&server.path("access.log.1")), "\"GET /versions\"")
            + count(&read(&access), "\"GET /versions\"")
    };
    util::wait_until(
        &format!("every request's access line ({n_requests}) in one of the two files"),
        DEADLINE,
        || lines_in_both() >= n_requests,
    );
    let rotated = read(&server.path("access.log.1"));
    let new = read(&access);
    assert!(
        count(&rotated, "\"GET /versions\"") >= 1,
        "the first line stays in the renamed file: {rotated}"
    );
    assert_eq!(
        count(&rotated, "\"GET /versions\"") + count(&new, "\"GET /versions\""),
        n_requests,
        "every request has its access line in one of the two files, once\n{rotated}\n---\n{new}"
    );
    for line in rotated.lines().chain(new.lines()) {
        assert!(line.contains("\"GET /versions\" 200"), "{line}");
    }
    let main = read(&server.path("glint-api.log"));
    assert_eq!(count(&main, "\"GET /versions\""), 0, "{main}");

    // SIGHUP without the option: access lines are back in the main log.
    server.write_config("");
    server.reload_succeeds();
    let before = read(&access);
    pipelined(&server, VERSIONS_CLOSE);
    server.wait_for_log("\"GET /versions\" 200", DEADLINE);
    assert_eq!(read(&access), before, "a line still went to access.log");
}

/// The descriptor number child `pid` holds `path` open under, from /proc/PID/fd.
fn fd_of_file(pid: i32, path: &Path) -> i32 {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the child's descriptors")
        .flatten()
        .find(|entry| fs::read_link(entry.path()).is_ok_and(|link| link == path))
        .and_then(|entry| entry.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("child {pid} does not hold {} open", path.display()))
}

/// The sizes of the write(2) calls child `pid` makes to descriptor `fd` while `requests`
/// `GET /versions` are answered one after the other on one keep-alive connection (strace, the
/// calls' return values).
fn writes_while_serving(server: &Server, pid: i32, fd: i32, requests: usize) -> Vec<usize> {
    let trace = server.path("strace.out");
    let mut strace = std::process::Command::new("strace")
        .args(["-qq", "-f", "-e", "trace=write", "-e", "signal=none", "-o"])
        .arg(&trace)
        .args(["-p", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("run strace (apt-get install strace)");
    util::wait_until("strace to attach to the child's threads", DEADLINE, || {
        fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .all(|task| {
                read(&task.path().join("status"))
                    .lines()
                    .find_map(|line| line.strip_prefix("TracerPid:"))
                    .is_some_and(|tracer| tracer.trim() != "0")
            })
    });
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    for n in 0..requests {
        stream
            .write_all(b"GET /versions HTTP/1.1\r\nHost: glint\r\n\r\n")
            .unwrap();
        let response = util::read_response(&mut reader, "GET")
            .expect("a response")
            .unwrap_or_else(|| panic!("request {n}: the connection closed"));
        assert_eq!(response.status, 200, "request {n}: {response:?}");
    }
    // A health check has no access line; its answer means the worker has logged the last
    // request's line (one thread serves a connection's requests in order), and written any
    // batch it completed, before strace stops.
    stream
        .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: glint\r\n\r\n")
        .unwrap();
    let response = util::read_response(&mut reader, "GET")
        .expect("a response")
        .expect("the health check's answer");
    assert_eq!(response.status, 200, "{response:?}");
    drop(stream);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("stop strace");
    strace.wait().expect("strace ends");
    let calls = read(&trace);
    // `1234  write(5, "2026-..."..., 4012) = 4012`
    let prefix = format!("write({fd}, ");
    calls
        .lines()
        .filter(|line| line.contains(&prefix))
        .map(|line| {
            line.rsplit("= ")
                .next()
                .and_then(|size| size.trim().parse().ok())
                .unwrap_or_else(|| panic!("a write without its size: {line}\n{calls}"))
        })
        .collect()
}

/// The access lines of `GET /versions` in `path`.
fn versions_lines(path: &Path) -> usize {
    count(&read(path), "\"GET /versions\" 200 ")
}

/// Asserts that every line of `path` is a whole record (read once no batch is being written).
fn assert_whole_records(path: &Path) {
    for line in read(path).lines() {
        assert!(
            is_record(line),
            "not a whole record in {}: {line:?}",
            path.display()
        );
    }
}

/// `access_log_flush_ms`: a child writes its access lines in batches. With a delay this test
/// does not reach (60 s, the largest; it takes a few seconds), a line waits in its batch; 200
/// lines (about 40 KB) are written only as full batches, each write(2) of at most `PIPE_BUF`
/// (4096) bytes and of more than 4096 less the longest line less 16 (a batch is cut when the
/// next line might not fit, its prefix counted at its longest, 64 bytes, where this one's is
/// 48 and the pid's digits); SIGUSR1 writes the batch into the rotated file before the child
/// reopens; a draining child writes what it holds before it exits. Access lines in their own
/// file, so that no other record writes a batch early.
#[test]
fn access_lines_are_written_in_full_batches_and_by_a_draining_child_before_it_exits() {
    let config = "workers = 1\nworker_threads = 1\naccess_log_file = access.log\n\
                  access_log_flush_ms = 60000";
    let server = Server::start(config);
    let access = server.path("access.log");
    let child = server.children(Some("serving"))[0];
    pipelined(&server, VERSIONS_CLOSE);
    assert_eq!(
        versions_lines(&access),
        0,
        "a line was written before its batch was full"
    );

    let writes = writes_while_serving(&server, child, fd_of_file(child, &access), 200);
    let longest = read(&access)
        .lines()
        .map(|line| line.len() + 1)
        .max()
        .expect("a batch was written");
    assert!(
        !writes.is_empty() && longest < 512,
        "{writes:?}, longest {longest}"
    );
    for size in &writes {
        assert!(
            (4096 - longest - 16..=4096).contains(size),
            "a write of {size} bytes: not a full batch ({writes:?}, longest line {longest})"
        );
    }
    let written: usize = writes.iter().sum();
    assert_eq!(
        read(&access).len(),
        written,
        "the file holds what the writes wrote"
    );
    let before_rotation = versions_lines(&access);
    assert!(
        before_rotation < 201,
        "{before_rotation} lines of 201: none was left"
    );

    // SIGUSR1: what the batch holds goes into the rotated file, none into the new one.
    let rotated = server.path("access.log.1");
    fs::rename(&access, &rotated).unwrap();
    server.signal(libc::SIGUSR1);
    util::wait_until("the child's batch in the rotated file", DEADLINE, || {
        versions_lines(&rotated) == 201
    });
    assert_eq!(versions_lines(&access), 0);

    // A reload: the draining child writes its batch before it exits.
    for _ in 0..3 {
        pipelined(&server, VERSIONS_CLOSE);
    }
    assert_eq!(
        versions_lines(&access),
        0,
        "a line was written before its batch was full"
    );
    server.reload_succeeds();
    util::wait_until("the old child to exit", DEADLINE, || {
        !server.children(None).contains(&child)
    });
    assert_eq!(versions_lines(&access), 3, "the draining child's batch");
    assert_whole_records(&access);
    assert_whole_records(&rotated);
}

/// `access_log_flush_ms = 0`: each access line is written at once, in a write(2) of its own.
#[test]
fn access_log_flush_ms_0_writes_each_access_line_at_once() {
    let server = Server::start(
        "workers = 1\nworker_threads = 1\naccess_log_file = access.log\naccess_log_flush_ms = 0",
    );
    let access = server.path("access.log");
    let child = server.children(Some("serving"))[0];
    let writes = writes_while_serving(&server, child, fd_of_file(child, &access), 20);
    assert_eq!(writes.len(), 20, "{writes:?}");
    let lines: Vec<String> = read(&access).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 20);
    assert_whole_records(&access);
    for (size, line) in writes.iter().zip(&lines) {
        assert_eq!(*size, line.len() + 1, "{line}");
    }
}

/// `access_log = false` writes no access line; the main log still has the other records.
#[test]
fn access_log_false_writes_no_access_lines() {
    let server = Server::start("access_log = false\ndebug = true");
    // A request, then a head that does not parse on the same connection: the 400's debug line
    // ("answering 400 to a bad request") is written after the first one's access line would be.
    pipelined(
        &server,
        "GET /versions HTTP/1.1\r\nHost: glint\r\n\r\nNOT HTTP\r\n\r\n",
    );
    server.wait_for_log("answering 400 to a bad request", DEADLINE);
    let log = server.log();
    assert_eq!(count(&log, "\"GET /versions\""), 0, "{log}");
    assert_eq!(count(&log, "\"- -\" 400"), 0, "{log}");
}

/// Health checks (`GET` and `HEAD /healthcheck`, with a query too) get no access line unless
/// `access_log_healthcheck = true`, which a SIGHUP can set.
#[test]
fn health_checks_stay_out_of_the_access_log_unless_asked() {
    let server = Server::start("");
    let probes = "GET /healthcheck HTTP/1.1\r\nHost: glint\r\n\r\n\
                  HEAD /healthcheck HTTP/1.1\r\nHost: glint\r\n\r\n\
                  GET /healthcheck?probe=1 HTTP/1.1\r\nHost: glint\r\n\r\n";
    pipelined(&server, &format!("{probes}{VERSIONS_CLOSE}"));
    server.wait_for_log("\"GET /versions\" 200", DEADLINE);
    let log = server.log();
    assert_eq!(count(&log, "/healthcheck"), 0, "{log}");

    server.write_config("access_log_healthcheck = true");
    server.reload_succeeds();
    let log_before = read(&server.path("glint-api.log"));
    pipelined(&server, &format!("{probes}{VERSIONS_CLOSE}"));
    util::wait_until("the second /versions line", DEADLINE, || {
        count(
            &read(&server.path("glint-api.log")),
            "\"GET /versions\" 200",
        ) == 2
    });
    let log = read(&server.path("glint-api.log"));
    let new = &log[log_before.len()..];
    assert_eq!(count(new, "\"GET /healthcheck\" 200"), 1, "{new}");
    assert_eq!(count(new, "\"HEAD /healthcheck\" 204"), 1, "{new}");
    assert_eq!(count(new, "\"GET /healthcheck?probe=1\" 200"), 1, "{new}");
}

/// Every line of the log is a record, however many lines its message had: a reload refused for
/// two problems logs one line that names both, with `\n` between them.
#[test]
fn a_message_of_several_lines_is_written_as_one_line() {
    let server = Server::start("");
    server.write_config("workers = none\nbind_port = port");
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    server.wait_for_log("reload rejected", DEADLINE);
    let log = read(&server.path("glint-api.log"));
    let failed: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("reload rejected"))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("[DEFAULT] workers: ")
            && failed[0].contains("\\n")
            && failed[0].contains("[DEFAULT] bind_port: "),
        "{}",
        failed[0]
    );
    for line in log.lines() {
        assert!(
            is_record(line),
            "a line that is not a record: {line:?}\n{log}"
        );
    }
}

/// `2026-11-30T11:23:45.123456Z LEVEL glint-api[PID] ...`
pub fn is_record(line: &str) -> bool {
    let bytes = line.as_bytes();
    line.len() > 28
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[26] == b'Z'
        && line[27..].trim_start().contains(" glint-api[")
}

// ---------------------------------------------------------------------------------------------
// Syslog, through a socket this test owns on /dev/log in a private mount namespace.
// ---------------------------------------------------------------------------------------------

/// The namespace's setup, run by `sh` inside `unshare --mount`: a tmpfs on /dev with a link to
/// every real device (through a bind mount of the real /dev made first), then, if `$1` names a
/// socket, an empty file on /dev/log with that socket bind-mounted on it; then exec the rest.
const NAMESPACE_SETUP: &str = r#"set -e
real="$2/real-dev"
mkdir -p "$real"
mount --rbind /dev "$real"
mount -t tmpfs -o mode=755 glint-test-dev /dev
for entry in "$real"/* "$real"/.[!.]*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    ln -s "$entry" "/dev/${entry##*/}"
done
if [ -n "$1" ]; then
    : > /dev/log
    mount --bind "$1" /dev/log
fi
shift 2
exec "$@"
"#;

/// A server started in a private mount namespace whose /dev/log is `socket` (or absent).
fn launch_in_namespace(extra: &str, socket: Option<&Path>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("glint-api.conf");
    fs::write(&config_path, util::base_config(extra)).unwrap();
    let socket = socket
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let work = dir.path().display().to_string();
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        NAMESPACE_SETUP,
        "sh",
        &socket,
        &work,
    ];
    Server::launch_under(dir, config_path, &wrapper)
}

/// The test's end of /dev/log: a bound datagram socket, read with a deadline.
struct SyslogReceiver {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    received: Vec<String>,
}

impl SyslogReceiver {
    fn bind() -> SyslogReceiver {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the test's syslog socket");
        SyslogReceiver {
            socket,
            _dir: dir,
            path,
            received: Vec::new(),
        }
    }

    /// Reads datagrams until one satisfies `wanted`; returns it. Fails with what arrived.
    fn wait_for(&mut self, what: &str, server: &Server, wanted: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        let mut buffer = vec![0u8; 65536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no syslog datagram {what}; received:\n{}\n--- log ---\n{}",
                self.received.join("\n"),
                server.log()
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.socket.recv(&mut buffer) {
                let datagram = String::from_utf8_lossy(&buffer[..n]).into_owned();
                self.received.push(datagram.clone());
                if wanted(&datagram) {
                    return datagram;
                }
            }
        }
    }

    /// Fills this socket's receive queue, whatever `net.unix.max_dgram_qlen` says: datagrams
    /// from fresh sockets until one's first datagram finds no room (EAGAIN). A fresh socket has
    /// nothing of its own in flight, so its EAGAIN is the receiver's queue being full, not its
    /// own send buffer. Returns how many datagrams were queued and the sockets that sent them
    /// (kept open while the queue must stay full).
    fn fill(&self) -> (usize, Vec<UnixDatagram>) {
        let mut queued = 0;
        let mut fillers = Vec::new();
        loop {
            let filler = UnixDatagram::unbound().expect("a filler socket");
            filler.set_nonblocking(true).unwrap();
            let mut first = true;
            loop {
                match filler.send_to(b"<14>filler", &self.path) {
                    Ok(_) => queued += 1,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        if first {
                            fillers.push(filler);
                            return (queued, fillers);
                        }
                        break;
                    }
                    Err(error) => panic!("filling the syslog socket's queue: {error}"),
                }
                first = false;
            }
            fillers.push(filler);
            assert!(
                fillers.len() < 1000,
                "the syslog socket's queue took {queued} datagrams and was still not full"
            );
        }
    }

    /// Every datagram already queued, without waiting.
    fn drain(&mut self) -> Vec<String> {
        self.socket.set_nonblocking(true).unwrap();
        let mut buffer = vec![0u8; 65536];
        let mut drained = Vec::new();
        while let Ok(n) = self.socket.recv(&mut buffer) {
            drained.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        self.socket.set_nonblocking(false).unwrap();
        self.received.extend(drained.iter().cloned());
        drained
    }
}

fn wait_serving(server: &Server) {
    server.wait_for("the first generation to serve", DEADLINE, |status| {
        status["phase"] == "running" && status["generation"] == 1
    });
}

/// `use_syslog = true`, `syslog_log_facility = local0`: the master's and the children's records
/// arrive on /dev/log as RFC 3164 datagrams, `<134>` (local0 × 8 + info) and
/// `glint-api[PID]:` of the process that logged; a SIGHUP turns syslog off (the master's next
/// records are only in the file) and on again with another facility.
#[test]
fn use_syslog_sends_rfc3164_datagrams_from_master_and_children() {
    let mut receiver = SyslogReceiver::bind();
    let server = launch_in_namespace(
        "use_syslog = true\nsyslog_log_facility = local0",
        Some(&receiver.path),
    );
    wait_serving(&server);
    let master = format!("glint-api[{}]: ", server.master_pid);
    let serving = receiver.wait_for("from the master saying it serves", &server, |datagram| {
        datagram.contains("generation 1 serves")
    });
    assert!(
        serving.starts_with("<134>") && serving.contains(&format!("{master}INFO master: ")),
        "{serving}"
    );
    // RFC 3164 timestamp: `<134>Mmm dd hh:mm:ss `.
    let stamp = &serving[5..21];
    assert!(
        stamp.as_bytes()[3] == b' ' && stamp.as_bytes()[9] == b':' && stamp.ends_with(' '),
        "{serving}"
    );
    assert!(!serving.contains('\n'), "{serving:?}");

    // A child's access line, tagged with that child's pid.
    let children = server.children(Some("serving"));
    assert_eq!(children.len(), 2, "{}", server.log());
    pipelined(&server, VERSIONS_CLOSE);
    let access = receiver.wait_for("with an access line", &server, |datagram| {
        datagram.contains("\"GET /versions\" 200")
    });
    assert!(access.starts_with("<134>"), "{access}");
    assert!(
        children
            .iter()
            .any(|pid| access.contains(&format!("glint-api[{pid}]: INFO child gen 1: [req-"))),
        "{access} (children {children:?})"
    );
    // And a warning carries its severity: local0 × 8 + warning (4) = 132.
    server.write_config("use_syslog = true\nsyslog_log_facility = local0\nno_such_option = 1");
    server.reload_succeeds();
    let warning = receiver.wait_for("with the unknown-option warning", &server, |datagram| {
        datagram.contains("no_such_option")
    });
    assert!(warning.starts_with("<132>"), "{warning}");

    // Off by SIGHUP: the master's records after the commit go to the file only. SIGUSR1's line
    // is written by the master after "generation 3 serves", so once it is in the file, any
    // datagram for either would have been sent.
    server.write_config("use_syslog = false");
    server.reload_succeeds();
    server.signal(libc::SIGUSR1);
    server.wait_for_log("SIGUSR1: log file reopened", DEADLINE);
    server.wait_for_log("generation 3 serves", DEADLINE);
    let late: Vec<String> = receiver
        .drain()
        .into_iter()
        .filter(|datagram| datagram.contains(&master))
        .filter(|datagram| datagram.contains("generation 3 serves") || datagram.contains("SIGUSR1"))
        .collect();
    assert_eq!(late, Vec::<String>::new());

    // On again, as LOG_DAEMON in oslo.log's other spelling.
    server.write_config("use_syslog = true\nsyslog_log_facility = LOG_DAEMON");
    server.reload_succeeds();
    let daemon = receiver.wait_for("as daemon", &server, |datagram| {
        datagram.contains("generation 4 serves")
    });
    // daemon (3) × 8 + info (6) = 30.
    assert!(daemon.starts_with("<30>"), "{daemon}");
}

/// A syslog daemon that does not read (its queue filled by the test before the server starts,
/// whatever `net.unix.max_dgram_qlen` is) stalls nothing: 50 requests are all answered, their
/// 50 access lines are in the file, and a reload succeeds; the lines syslog had no room for
/// are dropped.
#[test]
fn a_syslog_daemon_that_does_not_read_stalls_nothing() {
    let receiver = SyslogReceiver::bind();
    let (queued, _fillers) = receiver.fill();
    assert!(queued > 0, "the filler queued nothing");
    let server = launch_in_namespace("use_syslog = true", Some(&receiver.path));
    wait_serving(&server);
    for _ in 0..50 {
        let response = util::get(server.addr(), "/versions").expect("an answer");
        assert_eq!(response.status, 200);
    }
    util::wait_until("50 access lines in the file", DEADLINE, || {
        count(
            &read(&server.path("glint-api.log")),
            "\"GET /versions\" 200",
        ) == 50
    });
    server.reload_succeeds();
    drop(receiver);
}

/// `use_syslog = true` with nothing listening on /dev/log: the start fails and says what to do.
#[test]
fn use_syslog_without_a_syslog_socket_fails_the_start() {
    let mut server = launch_in_namespace("use_syslog = true", None);
    let status = server.wait_exit(DEADLINE);
    let stderr = read(&server.path("stderr.log"));
    assert_eq!(status, "exit status: 1", "{stderr}");
    assert!(
        stderr.contains("cannot connect to the syslog socket /dev/log"),
        "{stderr}"
    );
}

/// An unknown facility is a config error naming the file, line and option.
#[test]
fn an_unknown_syslog_facility_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = util::temp_config(
        dir.path(),
        "[DEFAULT]\nuse_syslog = true\nsyslog_log_facility = local9\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .arg("--config-file")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    util::assert_exit(&output, 1, "--check-config", "an unknown facility");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:3: [DEFAULT] syslog_log_facility: `local9` is not a syslog facility; use one of \
         LOG_KERN, LOG_USER",
        config.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// Each child says what its start cost, step by step, as it starts serving (issue 13, part 1):
/// "ready T ms after fork, C ms of CPU (STEP MS, ...)", the steps in the order a start takes
/// them, T their sum. Checked for both children of the first generation and of a reload's.
#[test]
fn each_child_logs_what_its_start_cost_step_by_step() {
    let server = Server::start("");
    server.reload_succeeds();
    // A child writes the line just after its ready report, so the reload may be done first.
    const LINE: &str = ": serving with up to 4 worker thread(s); ready ";
    util::wait_until("the four children's start lines", DEADLINE, || {
        count(&server.log(), LINE) >= 4
    });
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|line| line.contains(LINE)).collect();
    assert_eq!(
        lines.len(),
        4,
        "two children per generation, two generations:\n{log}"
    );
    for line in lines {
        let summary = line.split_once("; ready ").unwrap().1;
        let (total, rest) = summary
            .split_once(" ms after fork, ")
            .unwrap_or_else(|| panic!("no total in {line:?}"));
        let total: f64 = total
            .parse()
            .unwrap_or_else(|_| panic!("total in {line:?}"));
        let (cpu, steps) = rest
            .split_once(" ms of CPU (")
            .unwrap_or_else(|| panic!("no CPU time or step list in {line:?}"));
        let cpu: f64 = cpu
            .parse()
            .unwrap_or_else(|_| panic!("CPU time in {line:?}"));
        assert!(cpu > 0.0, "a start takes some CPU: {line}");
        let steps: Vec<(&str, f64)> = steps
            .strip_suffix(')')
            .unwrap_or_else(|| panic!("unclosed step list in {line:?}"))
            .split(", ")
            .map(|step| {
                let (name, ms) = step.split_once(' ').unwrap();
                (
                    name,
                    ms.parse()
                        .unwrap_or_else(|_| panic!("{step:?} in {line:?}")),
                )
            })
            .collect();
        let names: Vec<&str> = steps.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, START_STEPS, "{line}");
        let sum: f64 = steps.iter().map(|(_, ms)| ms).sum();
        // Each figure is rounded to 0.01 ms.
        assert!(
            (total - sum).abs() <= 0.01 * (steps.len() + 1) as f64,
            "{line}"
        );
    }
}

/// The steps of a child's start, in order (`process::child::run`).
const START_STEPS: [&str; 5] = ["setup", "database", "stores", "cache", "threads"];
