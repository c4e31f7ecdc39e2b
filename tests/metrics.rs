//! Prometheus metrics (issue 14, part 4) from outside: the real binary with `[metrics]` on, its
//! scrapes read over a socket, checked by the real `promtool check metrics` (Debian's
//! `prometheus` package, which scripts/test installs), and counted against requests whose bytes
//! the test writes and reads itself; reloads, a failed reload and a child killed with SIGKILL
//! in between; connections handed over at a reload, cache hits and misses, and a write that waits
//! for a database lock another process holds; slow and silent scrapers, and what a draining
//! child's metrics endpoint and gauges do.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, base_config, wait_until, Server, DEADLINE};

/// `SCRAPE_TIMEOUT` (src/serve/scrape.rs): what a scrape connection gets, from its accept, to
/// send its head and take the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a loaded machine may add to a bound the server keeps.
const MARGIN: Duration = Duration::from_secs(3);

/// `[metrics]` on, on a port the kernel picks (the log names it).
fn metrics_section(port: u16) -> String {
    format!("\n[metrics]\nbind_host = 127.0.0.1\nbind_port = {port}\n")
}

/// Starts a server with metrics on; returns it with the metrics address.
fn start_with_metrics(extra: &str) -> (Server, SocketAddr) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config_path = dir.path().join("glint-api.conf");
    std::fs::write(&config_path, base_config(extra) + &metrics_section(0)).expect("config");
    let server = Server::start_with(dir, config_path, &[]);
    let address = metrics_address(&server);
    (server, address)
}

/// The last address the master's log says it listens on for metrics.
fn metrics_address(server: &Server) -> SocketAddr {
    let log = server.log();
    log.rsplit("metrics: listening on ")
        .next()
        .filter(|_| log.contains("metrics: listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no metrics listener in the log:\n{log}"))
}

/// One scrape: 200, the 0.0.4 content type, the text.
fn scrape(address: SocketAddr) -> String {
    let response = util::get(address, "/metrics").expect("scrape");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    response.text()
}

/// The value of `series` (name and labels exactly as rendered), 0 when absent (a request
/// series is born at its first request).
fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| {
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{series}: {value:?} is not a number"))
                as u64
        })
}

fn requests(method: &str, route: &str, code: &str) -> String {
    format!("glint_http_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{code}\"}}")
}

/// Sends `request` on a new connection, reads until the server closes; returns the bytes read.
fn exchange(address: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream.write_all(request).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read to EOF");
    answer
}

fn get_close(address: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Polls scrapes until `series` reaches at least `at_least` (a worker adds to a counter just
/// after the client could read its response), then returns the scrape.
fn scrape_once_at_least(address: SocketAddr, series: &str, at_least: u64) -> String {
    let mut text = String::new();
    wait_until(&format!("{series} >= {at_least}"), DEADLINE, || {
        text = scrape(address);
        value(&text, series) >= at_least
    });
    text
}

#[test]
fn a_scrape_passes_promtool_check_metrics() {
    let (server, metrics) = start_with_metrics("");
    let api = server.addr();
    exchange(api, &get_close(api, "/versions"));
    exchange(api, &get_close(api, "/v2/images/nope"));
    exchange(
        api,
        b"BREW /coffee HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = scrape_once_at_least(metrics, &requests("GET", "/versions", "200"), 1);
    for family in [
        "glint_http_requests_total counter",
        "glint_http_request_duration_seconds histogram",
        "glint_http_requests_in_flight gauge",
        "glint_reloads_total counter",
        "glint_children gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}:\n{text}"
        );
    }
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        panic!(
            "promtool is missing: install Debian's prometheus package (apt-get install \
             prometheus; scripts/test does it), which provides promtool"
        );
    };
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = promtool.wait_with_output().expect("promtool");
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "{}\n--- scrape ---\n{text}",
        util::show_output("promtool check metrics", &output)
    );
}

#[test]
fn the_metrics_listener_answers_get_metrics_only() {
    let (_server, metrics) = start_with_metrics("");
    let other = util::get(metrics, "/v2/images").expect("GET /v2/images");
    assert_eq!(other.status, 404, "{}", other.text());
    let post = util::raw_exchange(
        metrics,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .expect("POST")
    .expect("an answer");
    assert_eq!(post.status, 405, "{}", post.text());
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[test]
fn requests_are_counted_by_method_route_and_status_and_bytes_as_on_the_wire() {
    let (server, metrics) = start_with_metrics("");
    let api = server.addr();
    let before = scrape(metrics);
    let mut n_sent = 0u64;
    let mut n_received = 0u64;
    let exchanges: [(&str, Vec<u8>, usize); 4] = [
        ("healthcheck", get_close(api, "/healthcheck"), 5),
        (
            "delete versions",
            format!("DELETE /versions HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            3,
        ),
        (
            "missing image",
            get_close(api, "/v2.9/images/no-such-image"),
            2,
        ),
        (
            "image list with a query",
            get_close(api, "/v2/images?limit=1&sort=name:asc"),
            4,
        ),
    ];
    for (_, request, times) in &exchanges {
        for _ in 0..*times {
            n_sent += request.len() as u64;
            n_received += exchange(api, request).len() as u64;
        }
    }
    let expected = [
        (requests("GET", "/healthcheck", "200"), 5),
        (requests("DELETE", "/versions", "405"), 3),
        (requests("GET", "/v2/images/{image_id}", "404"), 2),
        (requests("GET", "/v2/images", "200"), 4),
        (
            "glint_http_request_duration_seconds_count{route=\"/healthcheck\"}".to_string(),
            5,
        ),
        (
            "glint_http_request_duration_seconds_bucket{route=\"/healthcheck\",le=\"+Inf\"}"
                .to_string(),
            5,
        ),
        ("glint_http_received_bytes_total".to_string(), n_sent),
        ("glint_http_sent_bytes_total".to_string(), n_received),
    ];
    let sent_before = value(&before, "glint_http_sent_bytes_total");
    let after = scrape_once_at_least(
        metrics,
        "glint_http_sent_bytes_total",
        sent_before + n_received,
    );
    for (series, delta) in &expected {
        assert_eq!(
            value(&after, series) - value(&before, series),
            *delta,
            "{series}\n--- before ---\n{before}\n--- after ---\n{after}"
        );
    }
    assert_eq!(value(&after, "glint_http_requests_in_flight"), 0, "{after}");
}

#[test]
fn reloads_are_counted_by_outcome_and_the_generation_follows() {
    let (server, metrics) = start_with_metrics("");
    let start = scrape(metrics);
    assert_eq!(value(&start, "glint_generation"), 1, "{start}");
    assert_eq!(
        value(&start, "glint_reloads_total{outcome=\"succeeded\"}"),
        0
    );
    assert_eq!(value(&start, "glint_reloads_total{outcome=\"failed\"}"), 0);
    assert_eq!(
        value(&start, "glint_children{state=\"serving\"}"),
        2,
        "{start}"
    );

    server.reload_succeeds();
    let reloaded = scrape_once_at_least(metrics, "glint_generation", 2);
    assert_eq!(value(&reloaded, "glint_generation"), 2, "{reloaded}");
    assert_eq!(
        value(&reloaded, "glint_reloads_total{outcome=\"succeeded\"}"),
        1
    );
    assert_eq!(
        value(&reloaded, "glint_reloads_total{outcome=\"failed\"}"),
        0
    );

    server.write_config_text(&(base_config("workers = many") + &metrics_section(0)));
    assert_eq!(server.reload()["outcome"], "failed");
    let failed = scrape_once_at_least(metrics, "glint_reloads_total{outcome=\"failed\"}", 1);
    assert_eq!(
        value(&failed, "glint_reloads_total{outcome=\"failed\"}"),
        1,
        "{failed}"
    );
    assert_eq!(
        value(&failed, "glint_reloads_total{outcome=\"succeeded\"}"),
        1
    );
    assert_eq!(
        value(&failed, "glint_generation"),
        2,
        "a failed reload keeps the generation"
    );

    // A metrics port that cannot be bound fails the reload like any bad config, and says so.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    server.write_config_text(&(base_config("") + &metrics_section(port)));
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    assert!(
        verdict["error"]
            .as_str()
            .is_some_and(|error| error.contains("[metrics]")),
        "{verdict}"
    );
    let failed_twice = scrape_once_at_least(metrics, "glint_reloads_total{outcome=\"failed\"}", 2);
    assert_eq!(
        value(&failed_twice, "glint_reloads_total{outcome=\"failed\"}"),
        2
    );
    assert_eq!(value(&failed_twice, "glint_generation"), 2);
}

/// `n` more `GET /healthcheck`; asserts the counter is exactly `expected` after them.
fn burst(server: &Server, metrics: SocketAddr, series: &str, expected: &mut u64, n: u64) -> String {
    let api = server.addr();
    for _ in 0..n {
        exchange(api, &get_close(api, "/healthcheck"));
    }
    *expected += n;
    let text = scrape_once_at_least(metrics, series, *expected);
    assert_eq!(value(&text, series), *expected, "{text}");
    text
}

#[test]
fn counters_stay_monotonic_across_reloads_and_a_killed_child() {
    let (server, metrics) = start_with_metrics("");
    let series = requests("GET", "/healthcheck", "200");
    let mut expected = 0;
    let first = burst(&server, metrics, &series, &mut expected, 10);

    server.reload_succeeds();
    let after_reload = scrape(metrics);
    for counter in [
        series.as_str(),
        "glint_http_sent_bytes_total",
        "glint_http_received_bytes_total",
    ] {
        assert!(
            value(&after_reload, counter) >= value(&first, counter),
            "{counter} went down across a reload\n{first}\n---\n{after_reload}"
        );
    }
    let second = burst(&server, metrics, &series, &mut expected, 10);

    // Idle keep-alive connections park in the children's acceptors; then one child is killed.
    let api = server.addr();
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(api).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream
            .write_all(format!("GET /healthcheck HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes())
            .expect("write");
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        util::read_response(&mut reader, "GET")
            .expect("response")
            .expect("an answer");
        idle.push(stream);
    }
    expected += 4;
    let parked = scrape_once_at_least(metrics, "glint_parked_connections", 4);
    assert_eq!(value(&parked, "glint_parked_connections"), 4, "{parked}");
    let before_kill: HashSet<i32> = server.children(Some("serving")).into_iter().collect();
    for pid in &before_kill {
        // SAFETY: kill(2) on a child of the server this test started.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    server.wait_for("both children respawned", DEADLINE, |_| {
        let now: HashSet<i32> = server.children(Some("serving")).into_iter().collect();
        now.len() == 2 && now.is_disjoint(&before_kill)
    });
    drop(idle);
    let after_kill = scrape(metrics);
    assert_eq!(
        value(&after_kill, "glint_parked_connections"),
        0,
        "the killed children's parked connections are gone\n{after_kill}"
    );
    assert_eq!(
        value(&after_kill, "glint_http_requests_in_flight"),
        0,
        "{after_kill}"
    );
    for counter in [
        series.as_str(),
        "glint_http_sent_bytes_total",
        "glint_http_received_bytes_total",
    ] {
        assert!(
            value(&after_kill, counter) >= value(&second, counter),
            "{counter} went down when the children were killed\n{second}\n---\n{after_kill}"
        );
    }
    assert_eq!(value(&after_kill, &series), expected, "{after_kill}");
    burst(&server, metrics, &series, &mut expected, 10);
}

/// The inodes of the TCP sockets listening on this host (/proc/net/tcp and tcp6, state 0A).
fn listening_inodes() -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A") {
                inodes.extend(fields.get(9).and_then(|inode| inode.parse::<u64>().ok()));
            }
        }
    }
    inodes
}

/// How many listening TCP sockets process `pid` holds.
fn listening_sockets_of(pid: i32) -> usize {
    let listening = listening_inodes();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .filter(|inode| listening.contains(inode))
        .count()
}

#[test]
fn metrics_are_off_by_default() {
    // No [metrics] section; then one that names a host but no port.
    for extra in ["", "\n[metrics]\nbind_host = 127.0.0.1\n"] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("glint-api.conf");
        std::fs::write(&config_path, base_config("") + extra).expect("config");
        let server = Server::start_with(dir, config_path, &[]);
        assert_eq!(
            listening_sockets_of(server.master_pid),
            1,
            "the master listens on the API port only ({extra:?})\n{}",
            server.log()
        );
        assert!(
            !server.log().contains("metrics: listening"),
            "{}",
            server.log()
        );
    }
    // Turned on, the same master holds a second listening socket.
    let (server, _) = start_with_metrics("");
    assert_eq!(
        listening_sockets_of(server.master_pid),
        2,
        "{}",
        server.log()
    );
}

#[test]
fn a_reload_moves_the_metrics_listener_and_another_turns_it_off() {
    let (server, first) = start_with_metrics("");
    // Another address, the port again the kernel's pick (a port found free and then configured
    // could be taken by anyone in between): the log names the new listener.
    server.write_config_text(
        &(base_config("") + "\n[metrics]\nbind_host = 127.0.0.2\nbind_port = 0\n"),
    );
    server.reload_succeeds();
    let second = metrics_address(&server);
    assert_eq!(second.ip().to_string(), "127.0.0.2", "{}", server.log());
    let text = scrape(second);
    assert_eq!(value(&text, "glint_generation"), 2, "{text}");
    assert_eq!(
        value(&text, "glint_reloads_total{outcome=\"succeeded\"}"),
        1,
        "{text}"
    );
    wait_until("the old metrics listener to close", DEADLINE, || {
        TcpStream::connect_timeout(&first, Duration::from_secs(1)).is_err()
    });
    assert_eq!(
        listening_sockets_of(server.master_pid),
        2,
        "{}",
        server.log()
    );

    // A reload without [metrics] turns them off: the socket closes once the old generation is gone.
    server.write_config("");
    server.reload_succeeds();
    wait_until("the metrics listener to close", DEADLINE, || {
        TcpStream::connect_timeout(&second, Duration::from_secs(1)).is_err()
    });
    assert_eq!(
        listening_sockets_of(server.master_pid),
        1,
        "{}",
        server.log()
    );
}

/// A keep-alive connection that has been answered once and now idles in a child's acceptor.
fn idle_connection(api: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(api).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(format!("GET /healthcheck HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes())
        .expect("write");
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
    let response = util::read_response(&mut reader, "GET")
        .expect("response")
        .expect("an answer");
    assert_eq!(response.status, 200);
    stream
}

#[test]
fn connections_handed_to_the_new_generation_are_counted_on_both_sides() {
    let (server, metrics) = start_with_metrics("");
    let api = server.addr();
    let mut idle: Vec<TcpStream> = (0..3).map(|_| idle_connection(api)).collect();
    scrape_once_at_least(metrics, "glint_parked_connections", 3);
    server.reload_succeeds();
    let sent = "glint_handoff_connections_total{side=\"sent\"}";
    let adopted = "glint_handoff_connections_total{side=\"adopted\"}";
    let text = scrape_once_at_least(metrics, adopted, 3);
    assert_eq!(value(&text, sent), 3, "{text}");
    assert_eq!(value(&text, adopted), 3, "{text}");
    // And they serve on: the new generation has them.
    for stream in &mut idle {
        stream
            .write_all(format!("GET /healthcheck HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes())
            .expect("write");
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        let response = util::read_response(&mut reader, "GET")
            .expect("read")
            .expect("answer");
        assert_eq!(response.status, 200);
    }
}

#[test]
fn image_cache_hits_and_misses_are_counted() {
    let (server, metrics) = start_with_metrics(
        "\n[paste_deploy]\nflavor = caching\n\n[image_cache]\nimage_cache_dir = cache\n",
    );
    let api = server.addr();
    let created = util::send_body(
        api,
        "POST",
        "/v2/images",
        "application/json",
        br#"{"disk_format": "raw", "container_format": "bare"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = serde_json::from_slice::<serde_json::Value>(&created.body).expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let data = vec![7u8; 100_000];
    let uploaded = util::send_body(
        api,
        "PUT",
        &format!("/v2/images/{id}/file"),
        "application/octet-stream",
        &data,
    );
    assert_eq!(uploaded.status, 204, "{}", uploaded.text());
    let path = format!("/v2/images/{id}/file");
    let first = util::get(api, &path).expect("first download");
    assert_eq!(first.status, 200);
    let cached = server.path("cache").join(&id);
    wait_until("the image to be cached", DEADLINE, || {
        std::fs::metadata(&cached).is_ok_and(|meta| meta.len() == data.len() as u64)
    });
    for _ in 0..2 {
        let again = util::get(api, &path).expect("a download once cached");
        assert_eq!(again.status, 200);
    }
    let hit = "glint_image_cache_lookups_total{result=\"hit\"}";
    let text = scrape_once_at_least(metrics, hit, 2);
    assert_eq!(value(&text, hit), 2, "{text}");
    assert_eq!(
        value(&text, "glint_image_cache_lookups_total{result=\"miss\"}"),
        1,
        "{text}"
    );
}

#[test]
fn a_write_that_waits_for_the_database_lock_is_counted_as_a_busy_wait() {
    let (server, metrics) = start_with_metrics("workers = 1");
    let api = server.addr();
    let busy = "glint_registry_busy_waits_total";
    assert_eq!(value(&scrape(metrics), busy), 0);
    let database = rusqlite::Connection::open(server.path("glint.sqlite")).expect("open");
    database.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let creator = std::thread::spawn(move || {
        util::send_body(
            api,
            "POST",
            "/v2/images",
            "application/json",
            br#"{"disk_format": "raw", "container_format": "bare"}"#,
        )
    });
    // Counted as the wait begins, while the lock is still held.
    let waiting = scrape_once_at_least(metrics, busy, 1);
    assert_eq!(value(&waiting, busy), 1, "{waiting}");
    database.execute_batch("COMMIT").expect("unlock");
    let created = creator.join().expect("creator");
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(value(&scrape(metrics), busy), 1);
}

#[test]
fn a_scraper_that_sends_nothing_is_dropped_and_the_next_scrape_is_answered() {
    // One child, so its one metrics thread is the one the silent client holds.
    let (_server, metrics) = start_with_metrics("workers = 1");
    let mut silent = TcpStream::connect(metrics).expect("connect");
    assert!(
        util::peer_closed(&mut silent, DEADLINE),
        "a scraper that sent nothing was still connected after {DEADLINE:?}"
    );
    assert!(scrape(metrics).contains("# TYPE glint_generation gauge\n"));
}

/// Connects to `metrics` and sends a scrape's head one byte a second from another thread, never
/// finishing it (it ends in a header value that goes on forever), until a write fails: the
/// server closed, or the test shut the returned stream down. Each byte comes well within the
/// 5 s a read once waited for, which such a client used to reset.
fn trickle(metrics: SocketAddr) -> (TcpStream, std::thread::JoinHandle<usize>) {
    let stream = TcpStream::connect(metrics).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let thread = std::thread::spawn(move || {
        let head = b"GET /metrics HTTP/1.1\r\nHost: glint\r\nX-Slow: ";
        let mut sent = 0;
        loop {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if writer.write_all(&[byte]).is_err() {
                return sent;
            }
            sent += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    (stream, thread)
}

/// Whether `pid` holds `stream`'s peer socket: the connection has been accepted by it.
fn accepted_by(pid: i32, stream: &TcpStream) -> bool {
    util::peer_socket(stream)
        .is_some_and(|peer| peer.inode != 0 && util::fd_of_socket(pid, peer.inode).is_some())
}

#[test]
fn a_scraper_trickling_its_head_is_dropped_once_the_whole_head_is_late() {
    // One child, so its one metrics thread is the one the slow client holds.
    let (_server, metrics) = start_with_metrics("workers = 1");
    let (mut stream, trickler) = trickle(metrics);
    // A deadline for the whole head: closed within SCRAPE_TIMEOUT of the accept, whatever the
    // pace of the bytes.
    assert!(
        util::peer_closed(&mut stream, SCRAPE_TIMEOUT + MARGIN),
        "a scraper sending one byte a second was still connected after {:?}",
        SCRAPE_TIMEOUT + MARGIN
    );
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = trickler.join().expect("trickler");
    assert!(
        sent >= 2,
        "the client sent {sent} byte(s) before it was dropped"
    );
    assert!(scrape(metrics).contains("# TYPE glint_generation gauge\n"));
}

#[test]
fn a_reload_ends_a_scrape_in_progress_and_the_old_child_exits_at_once() {
    // No drain bound: nothing but the child itself ends its drain.
    let (server, metrics) = start_with_metrics("workers = 1\ngraceful_shutdown_timeout = 0");
    let old = server.children(None);
    assert_eq!(old.len(), 1, "{}", server.log());
    let connected = Instant::now();
    let (mut stream, trickler) = trickle(metrics);
    wait_until("the old child to accept the slow scrape", DEADLINE, || {
        accepted_by(old[0], &stream)
    });
    server.reload_succeeds();
    // The drain stops the metrics thread in the middle of that scrape: the child exits well
    // before the scrape's own deadline (SCRAPE_TIMEOUT from `connected`) would have ended it.
    let bound = connected + SCRAPE_TIMEOUT - Duration::from_secs(1);
    while util::process_alive(old[0]) && Instant::now() < bound {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !util::process_alive(old[0]),
        "the old child {} was still alive {:?} after a slow scraper connected\n{}",
        old[0],
        bound - connected,
        server.log()
    );
    assert!(util::peer_closed(&mut stream, DEADLINE));
    let _ = stream.shutdown(std::net::Shutdown::Both);
    trickler.join().expect("trickler");
}

#[test]
fn a_draining_child_stops_answering_scrapes_as_its_drain_begins() {
    let (server, metrics) = start_with_metrics("workers = 1");
    let api = server.addr();
    let old = server.children(None);
    assert_eq!(old.len(), 1, "{}", server.log());
    // An upload that keeps the old child draining until the test ends it.
    let id = util::create_image(api);
    let total = 1000;
    let mut upload = TcpStream::connect(api).expect("connect");
    upload
        .write_all(
            format!(
                "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("head");
    upload.write_all(&[1u8; 10]).expect("first bytes");
    scrape_once_at_least(metrics, "glint_http_requests_in_flight", 1);

    // A reload that turns metrics off: the old address refuses connections while the old child
    // still drains.
    server.write_config("workers = 1");
    server.reload_succeeds();
    wait_until(
        "the old metrics address to refuse connections",
        DEADLINE,
        || TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).is_err(),
    );
    assert!(
        util::process_alive(old[0]),
        "the old child was gone before the upload ended\n{}",
        server.log()
    );
    // So a reload may bind that port again, the upload still in flight.
    server.write_config_text(&(base_config("workers = 1") + &metrics_section(metrics.port())));
    server.reload_succeeds();
    assert_eq!(value(&scrape(metrics), "glint_generation"), 3);
    assert!(
        util::process_alive(old[0]),
        "the old child was gone before the upload ended\n{}",
        server.log()
    );

    upload.write_all(&vec![1u8; total - 10]).expect("the rest");
    upload.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut reader = std::io::BufReader::new(upload);
    let response = util::read_response(&mut reader, "PUT")
        .expect("response")
        .expect("an answer");
    assert_eq!(response.status, 204, "{}", response.text());
}

/// The pid's TracerPid from /proc/PID/status: nonzero once a tracer is attached.
fn traced(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("TracerPid:"))
        .is_some_and(|tracer| tracer.trim() != "0")
}

#[test]
fn a_drained_child_counts_no_parked_connection_while_it_exits() {
    let (server, metrics) = start_with_metrics("workers = 1");
    let old = server.children(None);
    assert_eq!(old.len(), 1, "{}", server.log());
    let _idle = idle_connection(server.addr());
    scrape_once_at_least(metrics, "glint_parked_connections", 1);
    // Hold the old child in exit_group(2) after its drain (strace delays the call), so that
    // its gauge slot is still counted when the new generation answers a scrape.
    let mut strace = Command::new("strace")
        .args([
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=exit_group",
            "-e",
            "inject=exit_group:delay_enter=20000000",
            "-p",
            &old[0].to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("run strace (apt-get install strace)");
    wait_until("strace to attach to the old child", DEADLINE, || {
        traced(old[0])
    });
    server.reload_succeeds();
    // The idle connection went to the new child, which parks it: 1. The old child has drained
    // (its acceptor returned) and is still alive.
    server.wait_for_log(
        &format!("glint-api[{}] child gen 1: drained; exiting", old[0]),
        DEADLINE,
    );
    let adopted = "glint_handoff_connections_total{side=\"adopted\"}";
    let text = scrape_once_at_least(metrics, adopted, 1);
    let alive = util::process_alive(old[0]);
    let _ = strace.kill();
    let _ = strace.wait();
    assert!(
        alive,
        "the old child exited before the scrape\n{}",
        server.log()
    );
    assert_eq!(value(&text, "glint_parked_connections"), 1, "{text}");
}
