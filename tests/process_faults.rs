//! The lifecycle faults of the process layer listed in issue 9, each proved from outside with
//! real processes: a respawn stuck behind another child's backoff, a temporary start failure
//! taken for a permanent one, a master blocked on SQLite or on a FIFO, a failed rolling reload
//! that closes connections it had handed over, a stale `reloads_requested`, a rolling reload
//! without a deadline, children in the master's process group, an unbounded drain after the
//! master died, and signals taken during start.
//!
//! Each test names the fault it proves ("issue 9, fault N") and fails on the code in which the
//! issue found it. Slow starts and slow reloads are made real: another process holds the SQLite
//! write lock (`BEGIN EXCLUSIVE`) while a first generation migrates a new database, a new child
//! is held in its start (`GLINT_FAULT_CHILD_HOLD`), or a client keeps a request in progress on an
//! old child (an upload trickled one byte at a time, or a download it stops reading).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, read_response, Response, Server, DEADLINE};

const HEALTHCHECK: &[u8] = b"GET /healthcheck HTTP/1.1\r\nHost: glint\r\n\r\n";

/// Sends `signal` to `pid` (a process of the server this test started).
fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; the pid is one of this test's server processes.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// An image's `status` as the API shows it, if it can be read.
fn image_status(addr: SocketAddr, id: &str) -> Option<String> {
    let response = util::get(addr, &format!("/v2/images/{id}")).ok()?;
    let image: Value = serde_json::from_slice(&response.body).ok()?;
    image["status"].as_str().map(str::to_string)
}

/// The pids of the children of `generation` in `state`, from a status document.
fn children_in(status: &Value, generation: u64, state: &str) -> Vec<i32> {
    status["children"]
        .as_array()
        .map(|children| {
            children
                .iter()
                .filter(|c| c["generation"] == generation && c["state"] == state)
                .filter_map(|c| c["pid"].as_i64().map(|pid| pid as i32))
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of every child listed in a status document.
fn listed_children(status: &Value) -> Vec<i32> {
    status["children"]
        .as_array()
        .map(|children| {
            children
                .iter()
                .filter_map(|c| c["pid"].as_i64().map(|pid| pid as i32))
                .collect()
        })
        .unwrap_or_default()
}

/// Another process's write lock on the server's database: `BEGIN EXCLUSIVE` on its own
/// connection. Released by `release` (COMMIT) or, if the test fails first, when dropped.
struct DbLock {
    connection: Option<rusqlite::Connection>,
}

impl DbLock {
    fn take(path: &Path) -> DbLock {
        let connection = rusqlite::Connection::open(path)
            .unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
        connection
            .execute_batch("BEGIN EXCLUSIVE")
            .unwrap_or_else(|error| panic!("BEGIN EXCLUSIVE on {}: {error}", path.display()));
        DbLock {
            connection: Some(connection),
        }
    }

    fn release(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.execute_batch("COMMIT").expect("COMMIT");
        }
    }
}

/// The length of a trickled upload's body; far more than the trickle sends before `finish`.
const TRICKLE_BODY: usize = 64 * 1024;

/// The pace of a trickled upload: well inside `client_body_timeout` (60 s by default).
const TRICKLE_PACE: Duration = Duration::from_millis(200);

/// A trickled upload gives up after this, so that its thread ends even if the test forgets it.
const TRICKLE_BOUND: Duration = Duration::from_secs(120);

/// An upload kept in progress: `PUT /v2/images/{id}/file` with a Content-Length of
/// `TRICKLE_BODY`, one byte sent every `TRICKLE_PACE` from a thread until `finish` sends the
/// rest and reads the response (or the test drops it, or `TRICKLE_BOUND` passes).
struct Trickle {
    finish: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// The error of the first write that failed: the server cut the upload.
    cut: Arc<Mutex<Option<String>>>,
    thread: Option<thread::JoinHandle<Option<io::Result<Option<Response>>>>>,
}

impl Trickle {
    fn start(addr: SocketAddr, id: &str) -> Trickle {
        let finish = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(Mutex::new(None));
        let head = format!(
            "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: glint\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {TRICKLE_BODY}\r\n\r\n"
        );
        let thread = {
            let (finish, stop, cut) = (finish.clone(), stop.clone(), cut.clone());
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect for the upload");
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                let began = Instant::now();
                let mut sent = 0;
                let mut result = stream.write_all(head.as_bytes());
                loop {
                    if let Err(error) = result {
                        *cut.lock().unwrap() = Some(format!("after {sent} body bytes: {error}"));
                        return None;
                    }
                    if finish.load(Ordering::SeqCst) {
                        if let Err(error) = stream.write_all(&vec![b'x'; TRICKLE_BODY - sent]) {
                            return Some(Err(error));
                        }
                        return Some(read_response(&mut BufReader::new(stream), "PUT"));
                    }
                    if stop.load(Ordering::SeqCst) || began.elapsed() > TRICKLE_BOUND {
                        return None;
                    }
                    result = stream.write_all(b"x");
                    sent += 1;
                    // The trickle's pacing, not a wait for a condition.
                    thread::sleep(TRICKLE_PACE);
                }
            })
        };
        Trickle {
            finish,
            stop,
            cut,
            thread: Some(thread),
        }
    }

    /// Whether a write of the upload failed, and how.
    fn cut(&self) -> Option<String> {
        self.cut.lock().unwrap().clone()
    }

    /// Sends the rest of the body and returns the response.
    fn finish(mut self) -> io::Result<Option<Response>> {
        self.finish.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("not finished yet");
        match thread.join().expect("the upload thread panicked") {
            Some(result) => result,
            None => Err(io::Error::other(format!(
                "the upload was cut before it could finish: {:?}",
                self.cut()
            ))),
        }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts a trickled upload to a new image and waits until a child has taken it (the image is
/// `saving`), so that it is in progress on a child of the generation serving now.
fn upload_in_progress(server: &Server) -> Trickle {
    let addr = server.addr();
    let id = util::create_image(addr);
    let upload = Trickle::start(addr, &id);
    server.wait_for("a child to take the trickled upload", DEADLINE, |_| {
        image_status(addr, &id).as_deref() == Some("saving")
    });
    upload
}

/// A keep-alive connection that has been served once (so a child holds it) and is now idle.
struct Idle {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Idle {
    fn open(server: &Server) -> Idle {
        let mut stream = server.connect();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        stream.write_all(HEALTHCHECK).unwrap();
        let response = read_response(&mut reader, "GET");
        assert!(
            matches!(&response, Ok(Some(r)) if r.status == 200 && !r.closes()),
            "a first request on a keep-alive connection: {response:?}"
        );
        Idle { stream, reader }
    }

    /// One more request on the connection; `Err` describes how it failed.
    fn ask(&mut self) -> Result<(), String> {
        self.stream
            .write_all(HEALTHCHECK)
            .map_err(|error| format!("write: {error}"))?;
        match read_response(&mut self.reader, "GET") {
            Ok(Some(response)) if response.status == 200 => Ok(()),
            Ok(None) => Err("EOF: the server closed the connection".to_string()),
            other => Err(format!("{other:?}")),
        }
    }
}

/// Whether the signal `signal` is set in the hexadecimal mask `field` of /proc/PID/status.
fn in_signal_mask(pid: i32, field: &str, signal: i32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

// ---------------------------------------------------------------------------------------------
// Respawns.
// ---------------------------------------------------------------------------------------------

/// Young deaths of child A before B is killed: the backoff doubles from 100 ms, so A's next
/// respawn is due seconds after the last one.
const YOUNG_KILLS: usize = 7;

/// Issue 9, fault 1: "A healthy child's respawn waits behind a backed-off one" (respawns sit in
/// a FIFO and `respawn_due` stops at the first entry not yet due).
///
/// workers = 2. Child A is killed right after it reports ready, seven times, so its next respawn
/// is backed off by seconds; then the long-lived child B is killed. B's replacement must serve
/// while A's respawn is still pending: the first time a replacement serves, it is the only
/// child. With the FIFO, B's respawn fires together with A's, so two children are listed then.
#[test]
fn due_respawn_does_not_wait_behind_a_backed_off_one() {
    let server = Server::start("workers = 2");
    let started = Instant::now();
    let first = server.children(Some("serving"));
    assert_eq!(first.len(), 2, "{}", server.status());
    let (mut a, b) = (first[0], first[1]);
    let mut killed = Vec::new();
    for round in 0..YOUNG_KILLS {
        if round > 0 {
            let mut replacement = None;
            server.wait_for("child A's replacement to serve", DEADLINE, |status| {
                replacement = children_in(status, 1, "serving")
                    .into_iter()
                    .find(|pid| *pid != b && !killed.contains(pid));
                replacement.is_some()
            });
            a = replacement.expect("found above");
        }
        kill(a, libc::SIGKILL);
        killed.push(a);
    }
    // The precondition of the fault: B is no young death (YOUNG_DEATH is 2 s). The backoffs
    // waited for above add up to more than 3 s.
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "B has not lived long enough to count as healthy: {:?}",
        started.elapsed()
    );
    kill(b, libc::SIGKILL);
    killed.push(b);
    let mut first_serving = Value::Null;
    server.wait_for(
        "a replacement to serve after B was killed",
        DEADLINE,
        |status| {
            let serving = children_in(status, 1, "serving")
                .into_iter()
                .any(|pid| !killed.contains(&pid));
            if serving {
                first_serving = status.clone();
            }
            serving
        },
    );
    let live: Vec<i32> = listed_children(&first_serving)
        .into_iter()
        .filter(|pid| !killed.contains(pid))
        .collect();
    assert_eq!(
        live.len(),
        1,
        "when B's replacement first served, A's backed-off respawn had been started with it: \
         B's due respawn waited behind A's backoff\nstatus then: {first_serving:#}\n--- log ---\n{}",
        server.log()
    );
    server.wait_for("A's respawn to serve too", DEADLINE, |status| {
        children_in(status, 1, "serving")
            .into_iter()
            .filter(|pid| !killed.contains(pid))
            .count()
            == 2
    });
}

/// Issue 9, fault 2: "A temporary start failure is treated as permanent."
///
/// workers = 1. The database file is moved aside and a directory takes its place, so that
/// SQLite cannot open it; the child is killed, and its replacement fails its start. Meanwhile
/// the status file must say that no child serves; once the file is back, a child of generation
/// 1 must serve again. On 1c007bb the replacement exits with the cannot-start code and is never
/// retried. (This test held SQLite's write lock until a child's start stopped waiting for it.)
#[test]
fn child_start_failing_on_an_unusable_database_is_retried_once_it_is_back() {
    let server = Server::start("workers = 1");
    let child = server.children(Some("serving"))[0];
    let aside = server.path("aside");
    fs::create_dir(&aside).unwrap();
    let files = ["glint.sqlite", "glint.sqlite-wal", "glint.sqlite-shm"];
    for name in files {
        if server.path(name).exists() {
            fs::rename(server.path(name), aside.join(name)).unwrap();
        }
    }
    fs::create_dir(server.path("glint.sqlite")).unwrap();
    kill(child, libc::SIGKILL);
    // A replacement may start and fail between two reads of the status file, so its failure is
    // awaited where it stays: the respawn the machine schedules after it, with its reason.
    server.wait_for(
        "a replacement of the killed child to fail its start on the unusable database",
        DEADLINE,
        |status| {
            status["respawns"].as_array().is_some_and(|respawns| {
                respawns.iter().any(|respawn| {
                    respawn["reason"]
                        .as_str()
                        .is_some_and(|reason| reason.contains("cannot open the image database"))
                })
            })
        },
    );
    server.wait_for(
        "the status file to say that no child serves",
        DEADLINE,
        |status| status["serving"] == 0 && children_in(status, 1, "serving").is_empty(),
    );
    fs::remove_dir(server.path("glint.sqlite")).unwrap();
    for name in files {
        if aside.join(name).exists() {
            fs::rename(aside.join(name), server.path(name)).unwrap();
        }
    }
    server.wait_for(
        "a child of generation 1 to serve again once the database was back",
        Duration::from_secs(45),
        |status| {
            status["generation"] == 1
                && status["serving"] == 1
                && !children_in(status, 1, "serving").is_empty()
        },
    );
    let list = util::get(server.addr(), "/v2/images").unwrap();
    assert_eq!(list.status, 200, "{}", list.text());
}

// ---------------------------------------------------------------------------------------------
// A master that must never block.
// ---------------------------------------------------------------------------------------------

/// Issue 9, fault 3 (SQLite): "The master blocks on SQLite during a reload" (`check_storage`
/// opens an exclusive transaction with a 30 s busy timeout inside the single-threaded loop).
///
/// With the write lock held by another process: SIGHUP, then SIGKILL of a child, which the
/// master must reap, then SIGINT, on which the master must exit; all while the lock is still
/// held. On 1c007bb the killed child stays a zombie until the lock is released. (The new
/// children no longer wait for the lock either: they read the schema version without it.)
#[test]
fn master_reaps_and_stops_while_a_reload_meets_a_locked_database() {
    let mut server = Server::start("workers = 2");
    let child = server.children(Some("serving"))[0];
    let mut lock = DbLock::take(&server.path("glint.sqlite"));
    let sighups_logged = server.log().matches("SIGHUP").count();
    server.signal(libc::SIGHUP);
    server.wait_for("the master to take the SIGHUP in", DEADLINE, |status| {
        status["reloads_requested"].as_u64().unwrap_or(0) >= 1
            || server.log().matches("SIGHUP").count() > sighups_logged
    });
    kill(child, libc::SIGKILL);
    let end = Instant::now() + Duration::from_secs(10);
    while util::state_and_parent(child).is_some_and(|(_, parent)| parent == server.master_pid) {
        if Instant::now() >= end {
            panic!(
                "child {child}, killed by SIGKILL during a reload, is still unreaped ({:?}) \
                 10 s later while another process holds the database lock: the master's loop \
                 is blocked\n--- log ---\n{}",
                util::state_and_parent(child),
                server.log()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    server.signal(libc::SIGINT);
    let exit = server.wait_exit(Duration::from_secs(10));
    assert_eq!(exit, "exit status: 0", "{}", server.log());
    lock.release();
}

/// Issue 13, part 1: a new child sees a current schema without SQLite's write lock, so a reload
/// succeeds while another process holds that lock. Before, each new child waited for it in
/// `BEGIN IMMEDIATE` until the busy timeout and the reload failed.
#[test]
fn a_reload_succeeds_while_another_process_holds_the_registry_write_lock() {
    let server = Server::start("workers = 2");
    let mut lock = DbLock::take(&server.path("glint.sqlite"));
    server.reload_succeeds();
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
    lock.release();
}

/// Issue 9, fault 3 (FIFO): "A token file that is a FIFO freezes the master the same way when
/// a reload reads it."
///
/// auth_strategy = token; the token file is replaced by a FIFO nobody writes to, then SIGHUP.
/// The reload must fail with a message naming the file, and the master must go on: a reload
/// after the file is restored succeeds, and SIGINT stops it. On 1c007bb the master blocks in
/// open(2) of the FIFO and no verdict ever comes.
#[test]
fn token_file_that_is_a_fifo_fails_the_reload_without_freezing_the_master() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tokens = dir.path().join("tokens");
    let write_tokens = |path: &PathBuf| {
        fs::write(path, "token-of-process-faults\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    };
    write_tokens(&tokens);
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        util::base_config("workers = 1\nauth_strategy = token\nauth_token_file = tokens"),
    )
    .unwrap();
    let mut server = Server::start_with(dir, config_path, &[]);
    fs::remove_file(&tokens).unwrap();
    let fifo = std::ffi::CString::new(tokens.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());

    let before = server.status()["reloads_requested"].as_u64().unwrap_or(0);
    server.signal(libc::SIGHUP);
    let mut verdict = Value::Null;
    server.wait_for(
        "the verdict of a reload whose token file is a FIFO",
        Duration::from_secs(10),
        |status| {
            verdict = status["last_reload"].clone();
            status["reload_in_progress"].is_null()
                && verdict["number"].as_u64().unwrap_or(0) > before
        },
    );
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    let error = verdict["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&*tokens.to_string_lossy()),
        "the error does not name the token file {}: {error}",
        tokens.display()
    );

    fs::remove_file(&tokens).unwrap();
    write_tokens(&tokens);
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    server.signal(libc::SIGINT);
    let exit = server.wait_exit(Duration::from_secs(10));
    assert_eq!(exit, "exit status: 0", "{}", server.log());
}

// ---------------------------------------------------------------------------------------------
// Rolling reloads.
// ---------------------------------------------------------------------------------------------

/// The size of the image the old child is kept busy sending: with the client's receive buffer
/// capped (`set_small_receive_buffer`), more than the sender's socket buffer holds (at most
/// `tcp_wmem` max, 4 MiB by default), so the child cannot finish while the client does not read.
const LARGE_IMAGE: usize = 12 * 1024 * 1024;

/// Caps the kernel's receive buffer of `stream`, so that a sender the client does not read from
/// blocks after far less than `LARGE_IMAGE`, whatever the system's autotuning limits are.
fn set_small_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt(2) on an open socket with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_RCVBUF): {}",
        io::Error::last_os_error()
    );
}

/// Issue 9, fault 6: "A rolling reload that fails part-way closes connections already handed
/// over."
///
/// reload_strategy = rolling, reload_handoff = true, workers 1 -> 2, four idle keep-alive
/// connections on the old child. The old child is kept draining by a download the client
/// stops reading; the second new child is held in its start (`GLINT_FAULT_CHILD_HOLD`, never
/// released) and killed, which fails the reload after the old child's four connections went to
/// the first new child. Every one of them must still answer. On 1c007bb the first new child is
/// drained with no handoff target and closes them (EOF).
///
/// The second child's start fails for real (killed before ready); the hook only keeps it
/// starting (it used to wait for SQLite's write lock, which a child's start no longer takes).
#[test]
fn failed_rolling_reload_keeps_the_connections_it_had_handed_over() {
    let config = "reload_strategy = rolling\nreload_handoff = true";
    let hold = util::Hold::new();
    let server = Server::start_held(&format!("workers = 1\n{config}"), &hold, "2/2");
    let addr = server.addr();
    let old = server.children(Some("serving"));
    assert_eq!(old.len(), 1, "{}", server.status());
    let old = old[0];
    let id = util::create_image(addr);
    let path = format!("/v2/images/{id}/file");
    let image = vec![0x5a; LARGE_IMAGE];
    let uploaded = util::send_body(addr, "PUT", &path, "application/octet-stream", &image);
    assert_eq!(uploaded.status, 204, "{}", uploaded.text());

    let mut idle: Vec<Idle> = (0..4).map(|_| Idle::open(&server)).collect();
    // The download the old child is busy with: its head and a first part are read, then the
    // client stops reading.
    let mut download = server.connect();
    set_small_receive_buffer(&download);
    download
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: glint\r\n\r\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(download.try_clone().unwrap());
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "EOF in the head");
    }
    let mut received = vec![0; 64 * 1024];
    reader.read_exact(&mut received).unwrap();

    server.write_config(&format!("workers = 2\n{config}"));
    server.signal(libc::SIGHUP);
    server.wait_for(
        "the first new child to serve and the old child to drain",
        DEADLINE,
        |status| {
            !children_in(status, 2, "serving").is_empty()
                && children_in(status, 1, "draining").contains(&old)
        },
    );
    // The precondition: the old child has not finished the download (it logs the request once
    // the whole response is written), so the next new child starts only after the test let go.
    assert!(
        !server.log().contains(&format!("\"GET {path}\" 200")),
        "the old child finished the download before the lock was taken: the socket buffers \
         hold more than LARGE_IMAGE here\n{}",
        server.log()
    );
    // Let the old child finish the download and exit; the next new child then starts and is
    // held.
    let mut rest = vec![0; LARGE_IMAGE - received.len()];
    reader.read_exact(&mut rest).unwrap();
    drop((download, reader));
    util::wait_until("the old child to exit", DEADLINE, || {
        !util::process_alive(old)
    });
    let mut second = None;
    server.wait_for(
        "the second new child to start (and be held)",
        DEADLINE,
        |status| {
            second = children_in(status, 2, "starting").first().copied();
            second.is_some()
        },
    );
    kill(second.expect("found above"), libc::SIGKILL);
    let mut verdict = Value::Null;
    server.wait_for("the rolling reload's verdict", DEADLINE, |status| {
        verdict = status["last_reload"].clone();
        status["reload_in_progress"].is_null() && verdict["number"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(verdict["outcome"], "failed", "{verdict}\n{}", server.log());

    let failures: Vec<String> = idle
        .iter_mut()
        .enumerate()
        .filter_map(|(index, connection)| {
            connection
                .ask()
                .err()
                .map(|error| format!("connection {index}: {error}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "idle keep-alive connections handed over during the failed rolling reload were lost: \
         {failures:#?}\n--- log ---\n{}",
        server.log()
    );
}

/// Issue 9, fault 9: "`reloads_requested` goes stale in the status file when a SIGHUP is merged
/// into a running reload."
///
/// A rolling reload (workers = 1) waits for the old child, which is busy with an upload the
/// test keeps in progress; a second SIGHUP arrives meanwhile. The status file must count it
/// while the first reload still runs, and in the end show exactly two requested, two done. On
/// 1c007bb the count stays at 1 until something else rewrites the file.
#[test]
fn sighup_merged_into_a_running_reload_is_counted_in_the_status_file() {
    let server =
        Server::start("workers = 1\nreload_strategy = rolling\ngraceful_shutdown_timeout = 0");
    let old = server.children(Some("serving"))[0];
    let upload = upload_in_progress(&server);
    server.signal(libc::SIGHUP);
    server.wait_for(
        "reload #1 to wait for the old child, busy with the upload",
        DEADLINE,
        |status| {
            status["reload_in_progress"]["number"] == 1
                && children_in(status, 1, "draining").contains(&old)
        },
    );
    server.signal(libc::SIGHUP);
    // Counted while reload #1 is still the one in progress: once #1 ends (its rolling step
    // gives up waiting after 10 s), the merged reload #2 begins and the file is rewritten
    // anyway, so only a count seen during #1 proves the SIGHUP was written when taken in.
    server.wait_for(
        "the status file to count the SIGHUP merged into reload #1, while #1 runs",
        DEADLINE,
        |status| {
            status["reloads_requested"].as_u64().unwrap_or(0) >= 2
                && status["reload_in_progress"]["number"] == 1
        },
    );
    let response = upload.finish();
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 204),
        "the upload: {response:?}"
    );
    server.wait_for("both reloads to finish", DEADLINE, |status| {
        status["reload_in_progress"].is_null() && status["last_reload"]["number"] == 2
    });
    let status = server.status();
    assert_eq!(status["reloads_requested"], 2, "{status:#}");
    assert_eq!(status["reloads_succeeded"], 2, "{status:#}");
}

/// Issue 9, fault 10: "A rolling reload has no deadline while it waits for an old child to
/// drain; with `graceful_shutdown_timeout = 0` it waits forever."
///
/// reload_strategy = rolling, graceful_shutdown_timeout = 0, workers = 2; an old child keeps an
/// upload in progress for as long as the test runs. The reload must still finish, succeeded
/// (the planned rule: a rolling step waits for the old child at most a fixed bound, then goes
/// on while that child keeps draining), and the upload must not be cut. On 1c007bb the reload
/// never ends.
#[test]
fn rolling_reload_finishes_while_an_old_child_never_finishes_its_request() {
    let server =
        Server::start("workers = 2\nreload_strategy = rolling\ngraceful_shutdown_timeout = 0");
    let old = server.children(Some("serving"));
    let upload = upload_in_progress(&server);
    server.signal(libc::SIGHUP);
    let mut verdict = Value::Null;
    server.wait_for(
        "the rolling reload to finish although an old child stays busy",
        Duration::from_secs(60),
        |status| {
            verdict = status["last_reload"].clone();
            status["reload_in_progress"].is_null() && verdict["number"].as_u64().unwrap_or(0) >= 1
        },
    );
    assert_eq!(
        verdict["outcome"],
        "succeeded",
        "{verdict}\n{}",
        server.log()
    );
    assert_eq!(upload.cut(), None, "the busy upload was cut");
    assert!(
        old.iter().any(|pid| util::process_alive(*pid)),
        "no old child is left to finish the upload\n{}",
        server.log()
    );
    let response = upload.finish();
    assert!(
        matches!(&response, Ok(Some(r)) if r.status == 204),
        "the upload in progress during the reload: {response:?}\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// Process groups, the master's death, signals during start.
// ---------------------------------------------------------------------------------------------

/// Issue 9, fault 11: "children share the master's process group, so a terminal hangup or
/// `kill -HUP -PGID` makes them drain with no handoff target, and the master logs them as
/// crashes."
///
/// The master leads its own process group; SIGHUP goes to the whole group. The reload must
/// succeed like a plain SIGHUP: idle keep-alive connections stay open (handed over), and no
/// child is logged as having ended badly. On 1c007bb the children drain at once with nowhere to
/// hand their connections and close them, and exit while the master counts them serving.
#[test]
fn sighup_to_the_whole_process_group_reloads_like_a_plain_sighup() {
    let server = Server::start_in_own_process_group("workers = 2");
    let mut idle: Vec<Idle> = (0..4).map(|_| Idle::open(&server)).collect();
    let log_before = server.log().len();
    let before = server.status()["reloads_requested"].as_u64().unwrap_or(0);
    kill(-server.master_pid, libc::SIGHUP);
    let mut verdict = Value::Null;
    server.wait_for("the reload's verdict", DEADLINE, |status| {
        verdict = status["last_reload"].clone();
        status["reload_in_progress"].is_null() && verdict["number"].as_u64().unwrap_or(0) > before
    });
    let mut problems = Vec::new();
    if verdict["outcome"] != "succeeded" {
        problems.push(format!("the reload did not succeed: {verdict}"));
    }
    for (index, connection) in idle.iter_mut().enumerate() {
        if let Err(error) = connection.ask() {
            problems.push(format!("idle keep-alive connection {index}: {error}"));
        }
    }
    server.wait_for("the old generation to be gone", DEADLINE, |status| {
        status["children"]
            .as_array()
            .is_some_and(|children| children.iter().all(|c| c["generation"] != 1))
    });
    let log = server.log();
    for line in log.get(log_before..).unwrap_or_default().lines() {
        let bad = [
            "exited with code",
            "was killed by",
            "while draining",
            "before it was ready",
        ];
        if bad.iter().any(|needle| line.contains(needle)) {
            problems.push(format!("logged as a crash: {line}"));
        }
    }
    assert!(
        problems.is_empty(),
        "SIGHUP to the process group: {problems:#?}\n--- log ---\n{log}"
    );
}

/// Issue 9, fault 11: "after the master dies, a child's drain has no bound."
///
/// graceful_shutdown_timeout = 3; a child keeps an upload in progress that never completes;
/// the master is killed with SIGKILL. The child must exit within a generous 30 s anyway. On
/// 1c007bb it drains for as long as the client keeps trickling.
#[test]
fn child_drain_after_the_master_died_is_bounded() {
    let mut server = Server::start("workers = 1\ngraceful_shutdown_timeout = 3");
    let child = server.children(Some("serving"))[0];
    let upload = upload_in_progress(&server);
    server.signal(libc::SIGKILL);
    server.wait_exit(DEADLINE);
    let end = Instant::now() + Duration::from_secs(30);
    while util::process_alive(child) {
        if Instant::now() >= end {
            panic!(
                "child {child} still runs 30 s after its master died (graceful_shutdown_timeout \
                 = 3), held by an upload that never completes (cut: {:?})\n--- log ---\n{}",
                upload.cut(),
                server.log()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a server (base config plus `extra`) whose start is held by the test's lock on the
/// database (the master's own storage check waits for it) until, after the master registered
/// its handlers, `prepare` has run and each of `signals` has been sent and delivered (no longer
/// pending); then releases the lock and returns once the first generation serves. Fails if the
/// server was no longer starting when the signals arrived.
fn start_taking_signals_while_starting(
    extra: &str,
    prepare: impl FnOnce(&Server),
    signals: &[i32],
) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config_path = dir.path().join("glint-api.conf");
    fs::write(&config_path, util::base_config(extra)).unwrap();
    let mut lock = DbLock::take(&dir.path().join("glint.sqlite"));
    let server = Server::launch(dir, config_path, &[], false);
    let pid = server.master_pid;
    let handled = [libc::SIGHUP, libc::SIGUSR1, libc::SIGCHLD];
    util::wait_until(
        "the master to register its signal handlers",
        DEADLINE,
        || {
            handled
                .iter()
                .all(|signal| in_signal_mask(pid, "SigCgt", *signal))
        },
    );
    prepare(&server);
    for signal in signals {
        server.signal(*signal);
    }
    util::wait_until("the master to take the signals", DEADLINE, || {
        signals.iter().all(|signal| {
            !in_signal_mask(pid, "SigPnd", *signal) && !in_signal_mask(pid, "ShdPnd", *signal)
        })
    });
    let status = server.status();
    assert!(
        status.is_null() || status["phase"] == "starting",
        "the server was no longer starting when the signals arrived: {status}"
    );
    lock.release();
    server.wait_for("the first generation to serve", DEADLINE, |status| {
        status["phase"] == "running" && status["generation"].as_u64().unwrap_or(0) >= 1
    });
    server
}

/// Issue 9, fault 11: "a SIGHUP taken during start is numbered #0."
///
/// A SIGHUP delivered while the start is held (see `start_taking_signals_while_starting`): the
/// reload it asks for must be reload number 1, and `reloads_requested` must count it. On
/// 1c007bb it is recorded as #0 and `reloads_requested` stays 0.
#[test]
fn sighup_taken_during_start_is_reload_number_one() {
    let server = start_taking_signals_while_starting("workers = 1", |_| {}, &[libc::SIGHUP]);
    server.wait_for(
        "the reload asked for during start to finish",
        DEADLINE,
        |status| status["reload_in_progress"].is_null() && status["last_reload"].is_object(),
    );
    let status = server.status();
    assert_eq!(
        (
            &status["last_reload"]["number"],
            &status["reloads_requested"]
        ),
        (&Value::from(1), &Value::from(1)),
        "(number of the reload asked for during start, reloads_requested)\n{status:#}"
    );
}

/// Issue 9, fault 11: "a SIGUSR1 taken during start is dropped."
///
/// The log file is renamed and SIGUSR1 delivered while the start is held (see
/// `start_taking_signals_while_starting`). Once serving, a child is killed so that the master
/// has something to log: its lines must go to a new file at the configured path. On 1c007bb the
/// master keeps writing to the renamed file (only the children, which open the path at their
/// start, write to the new one).
#[test]
fn sigusr1_taken_during_start_reopens_the_master_log() {
    let server = start_taking_signals_while_starting(
        "workers = 1",
        |server| {
            fs::rename(server.path("glint-api.log"), server.path("glint-api.log.1"))
                .expect("the master's log file exists once it started")
        },
        &[libc::SIGUSR1],
    );
    let (log, rotated) = (server.path("glint-api.log"), server.path("glint-api.log.1"));
    kill(server.children(Some("serving"))[0], libc::SIGKILL);
    let end = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&log).is_ok_and(|text| text.contains("] master: ")) {
        if Instant::now() >= end {
            panic!(
                "the master writes no line to the new log file after a SIGUSR1 taken during \
                 start, 10 s after one of its children was killed\n--- renamed log ---\n{}\n\
                 --- new log ---\n{}",
                fs::read_to_string(&rotated).unwrap_or_default(),
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 9, fault 11: "a panic on a child's main thread unwinds through the master's code".
///
/// With the debug-build hook `GLINT_FAULT_CHILD_PANIC=2`, generation 2's children panic on
/// their main thread during their start. The panic is logged as one line, the child ends with
/// `_exit(70)` (never by unwinding out of `main`, which would exit 101 after dropping the
/// master's state in the child), the reload fails with that reason, and generation 1 serves on.
#[test]
fn a_child_that_panics_exits_70_without_unwinding_into_the_master() {
    let server = Server::start_env("workers = 1", &[("GLINT_FAULT_CHILD_PANIC", "2")]);
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    let error = verdict["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exited with code 70"),
        "{verdict}\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("panic: ") && log.contains("GLINT_FAULT_CHILD_PANIC"),
        "{log}"
    );
    assert!(!log.contains("exited with code 101"), "{log}");
    assert_eq!(server.status()["generation"], 1);
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
}
