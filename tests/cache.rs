//! The image cache and the reloadable pipeline flavors, from a client's side: hits served from
//! the cache (proved by removing the store's copy), eviction at the size bound, a damaged cache
//! file never served, the cache API, and flavors switched by SIGHUP under load. The cache's
//! resource bounds (issue 10, hole 4): a partial read queues nothing, and on a real small
//! filesystem holding both the data and the cache, a failed fill backs off and the cache never
//! takes the room an upload needs.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, Server, DEADLINE};

/// `[DEFAULT]` debug (for the "cache hit" lines) and the cache sections, for `Server::start`.
fn cache_config(flavor: &str, max_size: u64) -> String {
    format!(
        "debug = true\n\n[paste_deploy]\nflavor = {flavor}\n\n[image_cache]\n\
         image_cache_dir = cache\nimage_cache_max_size = {max_size}\n"
    )
}

/// Sends one request on a new connection and reads the response.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> util::Response {
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: glint\r\nConnection: close\r\n{headers}\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    util::raw_exchange(addr, &bytes)
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
        .unwrap_or_else(|| panic!("{method} {path}: no response"))
}

/// Creates an image and uploads `data`; returns its id.
fn create_image(addr: SocketAddr, data: &[u8]) -> String {
    let body = br#"{"disk_format": "raw", "container_format": "bare"}"#;
    let created = request(
        addr,
        "POST",
        "/v2/images",
        "Content-Type: application/json\r\n",
        body,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let id = serde_json::from_slice::<Value>(&created.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let uploaded = request(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        "Content-Type: application/octet-stream\r\n",
        data,
    );
    assert_eq!(uploaded.status, 204, "{uploaded:?}");
    id
}

fn image_data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3))
        .collect()
}

fn download(addr: SocketAddr, id: &str) -> util::Response {
    util::get(addr, &format!("/v2/images/{id}/file")).unwrap()
}

fn cache_file(server: &Server, id: &str) -> PathBuf {
    server.path("cache").join(id)
}

/// Waits until the cache holds `id` with all of its bytes.
fn wait_cached(server: &Server, id: &str, len: usize) {
    let path = cache_file(server, id);
    let end = Instant::now() + DEADLINE;
    while fs::metadata(&path).map_or(true, |m| m.len() != len as u64) {
        if Instant::now() >= end {
            panic!("image {id} was not cached\n{}", server.log());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn second_download_is_served_from_the_cache() {
    let server = Server::start(&cache_config("caching", 10 << 20));
    let addr = server.addr();
    let data = image_data(7, 300_000);
    let id = create_image(addr, &data);
    let first = download(addr, &id);
    assert_eq!(first.status, 200);
    assert!(first.body == data, "first download differs");
    wait_cached(&server, &id, data.len());
    // Without the store's copy, only the cache can answer.
    fs::remove_file(server.path("images").join(&id)).unwrap();
    let second = download(addr, &id);
    assert_eq!(second.status, 200, "{}", server.log());
    assert!(second.body == data, "cached download differs");
    assert!(
        server.log().contains(&format!("cache hit: image {id}")),
        "{}",
        server.log()
    );
    // A range is served from the cache too.
    let range = util::raw_exchange(
        addr,
        format!(
            "GET /v2/images/{id}/file HTTP/1.1\r\nHost: glint\r\nRange: bytes=10-19\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(range.status, 206);
    assert_eq!(range.body, &data[10..20]);
}

#[test]
fn least_recently_used_image_is_evicted_at_the_size_bound() {
    let server = Server::start(&cache_config("caching", 250_000));
    let addr = server.addr();
    let images: Vec<(String, Vec<u8>)> = (1..=3u8)
        .map(|seed| {
            let data = image_data(seed, 100_000);
            (create_image(addr, &data), data)
        })
        .collect();
    for (id, data) in &images {
        assert!(download(addr, id).body == *data);
        wait_cached(&server, id, data.len());
    }
    let first = &images[0].0;
    util::wait_until("the oldest entry to be evicted", DEADLINE, || {
        !cache_file(&server, first).exists()
    });
    assert!(cache_file(&server, &images[1].0).exists());
    assert!(cache_file(&server, &images[2].0).exists());
    // The file goes first, then the line is written.
    server.wait_for_log(&format!("evicted image {first}"), DEADLINE);
    let total: u64 = fs::read_dir(server.path("cache"))
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.metadata().unwrap().len())
        .sum();
    assert!(total <= 250_000, "the cache holds {total} bytes");
}

#[test]
fn truncated_cache_file_is_detected_and_not_served() {
    let server = Server::start(&cache_config("caching", 10 << 20));
    let addr = server.addr();
    let data = image_data(3, 200_000);
    let id = create_image(addr, &data);
    assert!(download(addr, &id).body == data);
    wait_cached(&server, &id, data.len());
    fs::File::options()
        .write(true)
        .open(cache_file(&server, &id))
        .unwrap()
        .set_len(1000)
        .unwrap();
    let response = download(addr, &id);
    assert_eq!(response.status, 200);
    assert!(response.body == data, "a damaged cache entry was served");
    assert!(
        server.log().contains("is not served and is removed"),
        "{}",
        server.log()
    );
    assert!(!server.log().contains(&format!("cache hit: image {id}")));
    // The miss queued a new fill: the entry comes back whole.
    wait_cached(&server, &id, data.len());
    assert!(download(addr, &id).body == data);
}

#[test]
fn cache_api_round_trip_and_prefetch_served_later_as_a_hit() {
    let server = Server::start(&cache_config("cachemanagement", 10 << 20));
    let addr = server.addr();
    let list = |server: &Server| -> Value {
        let response = util::get(server.addr(), "/v2/cache").unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_slice(&response.body).unwrap()
    };
    assert_eq!(
        list(&server),
        serde_json::json!({"cached_images": [], "queued_images": []})
    );
    let unknown = "8a5b7f5c-1111-4c4c-9c9c-000000000000";
    assert_eq!(
        request(addr, "PUT", &format!("/v2/cache/{unknown}"), "", b"").status,
        404
    );

    let data = image_data(5, 150_000);
    let id = create_image(addr, &data);
    let queued = request(addr, "PUT", &format!("/v2/cache/{id}"), "", b"");
    assert_eq!(queued.status, 202, "{queued:?}");
    wait_cached(&server, &id, data.len());
    util::wait_until("the prefetch to leave the queue", DEADLINE, || {
        list(&server)["queued_images"] == serde_json::json!([])
    });
    // The prefetched copy serves the download on its own.
    fs::remove_file(server.path("images").join(&id)).unwrap();
    let hit = download(addr, &id);
    assert_eq!(hit.status, 200, "{}", server.log());
    assert!(hit.body == data);
    let listed = list(&server);
    let entry = &listed["cached_images"][0];
    assert_eq!(entry["image_id"], id.as_str(), "{listed}");
    assert_eq!(entry["size"], 150_000);
    assert_eq!(entry["hits"], 1);
    assert!(entry["last_accessed"].is_f64() && entry["last_modified"].is_f64());

    assert_eq!(
        request(addr, "DELETE", &format!("/v2/cache/{id}"), "", b"").status,
        204
    );
    assert_eq!(list(&server)["cached_images"], serde_json::json!([]));
    assert!(!cache_file(&server, &id).exists());

    let id2 = create_image(addr, &data);
    assert_eq!(
        request(addr, "PUT", &format!("/v2/cache/{id2}"), "", b"").status,
        202
    );
    wait_cached(&server, &id2, data.len());
    let bad_target = request(
        addr,
        "DELETE",
        "/v2/cache",
        "x-image-cache-clear-target: all\r\n",
        b"",
    );
    assert_eq!(bad_target.status, 400);
    assert_eq!(request(addr, "DELETE", "/v2/cache", "", b"").status, 204);
    assert_eq!(
        list(&server),
        serde_json::json!({"cached_images": [], "queued_images": []})
    );
}

/// Flavor off -> caching -> off by SIGHUP while clients download without pause: every
/// download succeeds and is intact, only the caching generation serves cache hits, and the cache
/// API exists in none of them (it needs cachemanagement). A keystone flavor without its
/// [keystone_authtoken] options is refused.
#[test]
fn flavor_switched_by_sighup_under_load_changes_behaviour_and_fails_no_request() {
    let server = Server::start(&cache_config("", 10 << 20));
    let addr = server.addr();
    let data = Arc::new(image_data(9, 100_000));
    let id = Arc::new(create_image(addr, &data));
    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (data, id, stop, succeeded, failures) = (
            data.clone(),
            id.clone(),
            stop.clone(),
            succeeded.clone(),
            failures.clone(),
        );
        clients.push(thread::spawn(move || {
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match util::get(addr, &format!("/v2/images/{id}/file")) {
                    Ok(response) if response.status == 200 && response.body == *data => {
                        succeeded.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(response) => failures.lock().unwrap().push(format!(
                        "status {} with {} bytes",
                        response.status,
                        response.body.len()
                    )),
                    Err(error) => failures.lock().unwrap().push(error.to_string()),
                }
            }
        }));
    }
    let cache_api = |server: &Server| util::get(server.addr(), "/v2/cache").unwrap().status;
    let load_for = |duration: Duration| {
        let before = succeeded.load(Ordering::SeqCst);
        thread::sleep(duration);
        assert!(
            succeeded.load(Ordering::SeqCst) > before,
            "no load is running"
        );
    };
    load_for(Duration::from_millis(500));
    assert_eq!(cache_api(&server), 404);
    assert!(
        !cache_file(&server, &id).exists(),
        "flavor off cached the image"
    );

    server.write_config(&cache_config("caching", 10 << 20));
    assert_eq!(server.reload()["outcome"], "succeeded");
    wait_cached(&server, &id, data.len());
    // Logged while a request is served, so the line names its id first.
    util::wait_until("a cache hit in generation 2", DEADLINE, || {
        server.log().lines().any(|line| {
            line.split_once("child gen 2: [req-")
                .is_some_and(|(_, rest)| rest.contains("] cache hit: image "))
        })
    });
    load_for(Duration::from_millis(500));
    assert_eq!(cache_api(&server), 404);

    server.write_config(&cache_config("", 10 << 20));
    assert_eq!(server.reload()["outcome"], "succeeded");
    server.wait_for("generation 2 to drain", DEADLINE, |status| {
        status["draining"].as_array().is_some_and(|d| d.is_empty())
    });
    let hits_before = server.log().matches("cache hit").count();
    load_for(Duration::from_millis(500));
    assert_eq!(server.log().matches("cache hit").count(), hits_before);

    // keystone+caching without its [keystone_authtoken] options is refused: nothing changes.
    server.write_config(&cache_config("keystone+caching", 10 << 20));
    let refused = server.reload();
    assert_eq!(refused["outcome"], "failed");
    assert!(
        refused["error"].as_str().is_some_and(|e| e.contains(
            "[keystone_authtoken] auth_url: is required by the keystone flavor of \
             [paste_deploy] flavor"
        )),
        "{refused}"
    );
    load_for(Duration::from_millis(200));

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "failed downloads: {failures:#?}\n{}",
        server.log()
    );
    let log = server.log();
    for line in log.lines().filter(|line| line.contains("cache hit")) {
        assert!(
            line.contains("child gen 2:"),
            "a hit outside the caching generation: {line}"
        );
    }
    println!(
        "flavor switch: {} downloads, {} cache hits",
        succeeded.load(Ordering::SeqCst),
        log.matches("cache hit").count()
    );
}

/// The prefetches queued or claimed in a cache folder.
fn pending(cache_dir: &Path) -> Vec<String> {
    ["queued", "prefetching"]
        .iter()
        .flat_map(|folder| fs::read_dir(cache_dir.join(folder)).unwrap())
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A GET of `id` with a `Range` header.
fn ranged(addr: SocketAddr, id: &str, range: &str) -> util::Response {
    util::raw_exchange(
        addr,
        format!(
            "GET /v2/images/{id}/file HTTP/1.1\r\nHost: glint\r\nRange: {range}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap()
    .unwrap()
}

/// A 1-byte (or any partial) range read queues no prefetch: the queue stays empty, no cache
/// file appears and no fill is logged. The handler queues before it answers, so each check right
/// after a response is exact: a queued prefetch is in `queued/`, then `prefetching/`, until its
/// data is published. A range that covers every byte, and a plain GET, queue one.
#[test]
fn partial_range_read_queues_nothing_and_a_whole_read_does() {
    let server = Server::start(&cache_config("caching", 10 << 20));
    let addr = server.addr();
    let cache_dir = server.path("cache");
    let data = image_data(11, 300_000);
    let id = create_image(addr, &data);
    for (range, body) in [
        ("bytes=0-0", &data[..1]),
        ("bytes=150000-150000", &data[150_000..150_001]),
        ("bytes=-1", &data[299_999..]),
        ("bytes=1-", &data[1..]),
        ("bytes=0-299998", &data[..299_999]),
    ] {
        let response = ranged(addr, &id, range);
        assert_eq!(response.status, 206, "{range}: {response:?}");
        assert!(response.body == body, "{range}: wrong bytes");
        assert_eq!(
            pending(&cache_dir),
            Vec::<String>::new(),
            "{range} queued a prefetch"
        );
        assert!(
            !cache_file(&server, &id).exists(),
            "{range} cached the image"
        );
    }
    assert!(
        !server.log().contains(&format!("cached image {id}")),
        "{}",
        server.log()
    );
    // A range covering every byte is a whole read.
    let whole = ranged(addr, &id, "bytes=0-");
    assert_eq!(whole.status, 206);
    assert!(whole.body == data);
    wait_cached(&server, &id, data.len());
    server.wait_for_log(&format!("cached image {id}"), DEADLINE);
    // A plain GET of another image.
    let other_data = image_data(12, 200_000);
    let other = create_image(addr, &other_data);
    assert!(download(addr, &other).body == other_data);
    wait_cached(&server, &other, other_data.len());
}

/// A small tmpfs for one test, unmounted on drop (also when the test fails). The test FAILS when
/// it cannot be mounted: these tests run as root.
struct SmallDisk {
    /// The filesystem itself (unmounted when dropped).
    _tmpfs: util::Tmpfs,
    mount_point: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let tmpfs = util::Tmpfs::mount(size);
        SmallDisk {
            mount_point: tmpfs.mount_point.clone(),
            _tmpfs: tmpfs,
        }
    }

    /// A server with the caching flavor whose data directory and cache folder are both on this
    /// filesystem, as in the default layout (`/var/lib/glance/images` and
    /// `/var/lib/glance/image-cache` on one disk).
    fn server(&self) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("glint-api.conf");
        let base = util::base_config(&format!(
            "debug = true\n\n[paste_deploy]\nflavor = caching\n\n[image_cache]\n\
             image_cache_dir = {}\nimage_cache_max_size = {}\n",
            self.cache_dir().display(),
            1u64 << 30
        ));
        assert!(base.contains("filesystem_store_datadir = images\n"));
        let text = base.replace(
            "filesystem_store_datadir = images\n",
            &format!(
                "filesystem_store_datadir = {}\n",
                self.mount_point.join("images").display()
            ),
        );
        fs::write(&config_path, text).unwrap();
        Server::start_with(dir, config_path, &[])
    }

    fn cache_dir(&self) -> PathBuf {
        self.mount_point.join("cache")
    }
}

/// On an 8 MiB filesystem holding a 5 MiB image, the cache cannot hold a copy. Ten whole GETs,
/// each followed by waiting until the prefetch queue is empty again (so any fill a GET caused has
/// ended), make exactly one fill attempt: the first failure backs off for 60 s in a marker every
/// child reads, and the window ends before that. Before the fix each GET made one (10 ENOSPC).
#[test]
fn failed_fill_is_not_retried_by_any_download_until_its_backoff_ends() {
    const GETS: usize = 10;
    let disk = SmallDisk::mount("8m");
    let server = disk.server();
    let addr = server.addr();
    let data = image_data(13, 5 << 20);
    let id = create_image(addr, &data);
    let attempt = format!("cannot cache image {id}");
    for get in 0..GETS {
        let response = download(addr, &id);
        assert_eq!(response.status, 200, "GET {get}: {response:?}");
        assert!(response.body == data, "GET {get}: wrong bytes");
        util::wait_until("the prefetch queue to be empty", DEADLINE, || {
            pending(&disk.cache_dir()).is_empty()
        });
        if get == 0 {
            server.wait_for_log(&attempt, DEADLINE);
        }
    }
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|line| line.contains(&attempt)).collect();
    assert_eq!(lines.len(), 1, "fill attempts of {GETS} GETs:\n{log}");
    assert!(
        lines[0].contains("not retried for 60 s (failure 1 in a row)")
            && lines[0].contains("make room on the cache's filesystem"),
        "{}",
        lines[0]
    );
    let marker: Value =
        serde_json::from_slice(&fs::read(disk.cache_dir().join("failed").join(&id)).unwrap())
            .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The window must end inside the backoff for the bound to be the claim's: if this machine
    // was so slow that it did not, the test cannot judge and fails.
    assert!(
        marker["retry_after"].as_f64().unwrap() > now,
        "the {GETS} GETs outlasted the 60 s backoff: {marker}"
    );
    assert_eq!(marker["failures"], 1, "{marker}");
    assert_eq!(
        fs::read_dir(disk.cache_dir().join("incomplete"))
            .unwrap()
            .count(),
        0,
        "an unfinished cache file was left on the disk"
    );
}

/// On an 8 MiB filesystem holding the data and the cache, a 3 MiB image is downloaded (before the
/// fix the cache then copied it, leaving 2 MiB) and a second 3 MiB upload, which fits the disk,
/// must succeed: the cache keeps its reserve free for uploads (before the fix: 413).
#[test]
fn upload_that_fits_succeeds_while_the_cache_would_have_taken_its_space() {
    let disk = SmallDisk::mount("8m");
    let server = disk.server();
    let addr = server.addr();
    let first = image_data(14, 3 << 20);
    let first_id = create_image(addr, &first);
    assert!(download(addr, &first_id).body == first);
    // Whatever the cache decides, it has decided once the prefetch queue is empty again.
    util::wait_until("the prefetch queue to be empty", DEADLINE, || {
        pending(&disk.cache_dir()).is_empty()
    });
    let second = image_data(15, 3 << 20);
    let body = br#"{"disk_format": "raw", "container_format": "bare"}"#;
    let created = request(
        addr,
        "POST",
        "/v2/images",
        "Content-Type: application/json\r\n",
        body,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let second_id = serde_json::from_slice::<Value>(&created.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let uploaded = request(
        addr,
        "PUT",
        &format!("/v2/images/{second_id}/file"),
        "Content-Type: application/octet-stream\r\n",
        &second,
    );
    assert_eq!(
        uploaded.status,
        204,
        "an upload that fits the disk failed: {}\n{}",
        uploaded.text(),
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains(&format!("cannot cache image {first_id}"))
            && log.contains("keeps that space for uploads")
            && log.contains(&disk.mount_point.join("images").display().to_string()),
        "the refusal names the data directory that shares the disk:\n{log}"
    );
    assert!(!cache_file_on(&disk, &first_id).exists());

    assert!(download(addr, &first_id).body == first);
    assert!(download(addr, &second_id).body == second);
}

fn cache_file_on(disk: &SmallDisk, id: &str) -> PathBuf {
    disk.cache_dir().join(id)
}
