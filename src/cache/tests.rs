//! Tests of the cache on a temporary folder: fills, verified hits, damaged entries, eviction
//! order, the queue and the sweep.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use md5::{Digest, Md5};
use sha2::Sha512;

use super::*;

const ID_A: &str = "11111111-1111-1111-1111-111111111111";
const ID_B: &str = "22222222-2222-2222-2222-222222222222";
const ID_C: &str = "33333333-3333-3333-3333-333333333333";

fn open(dir: &Path, max_size: u64) -> Cache {
    Cache::open(Settings {
        dir: dir.join("cache"),
        max_size,
        stall_time: Duration::from_secs(3600),
    })
    .unwrap()
}

/// Writes `data` as a store file and returns it with the image that describes it.
fn stored(dir: &Path, id: &str, data: &[u8]) -> (File, Expected) {
    let path = dir.join(format!("store-{id}"));
    fs::write(&path, data).unwrap();
    let mut image = Image::new(id);
    image.status = crate::registry::ImageStatus::Active;
    image.size = Some(data.len() as u64);
    image.checksum = Some(crate::digest::hex(&Md5::digest(data)));
    image.os_hash_algo = Some("sha512".to_string());
    image.os_hash_value = Some(crate::digest::hex(&Sha512::digest(data)));
    (
        File::open(path).unwrap(),
        Expected::of_image(&image).unwrap(),
    )
}

fn fill(cache: &Cache, dir: &Path, id: &str, data: &[u8]) -> (FillOutcome, Expected) {
    let (mut source, expected) = stored(dir, id, data);
    let outcome = cache
        .fill(id, &mut source, &expected, &[], &AtomicBool::new(false))
        .unwrap();
    (outcome, expected)
}

fn read_hit(hit: Hit) -> Vec<u8> {
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut &hit.file, &mut data).unwrap();
    data
}

#[test]
fn filled_entry_is_a_verified_hit_and_counts_hits() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    let data = b"image data".repeat(1000);
    let (outcome, expected) = fill(&cache, dir.path(), ID_A, &data);
    assert_eq!(outcome, FillOutcome::Filled { size: 10_000 });
    assert_eq!(read_hit(cache.lookup(ID_A, &expected).unwrap()), data);
    assert_eq!(read_hit(cache.lookup(ID_A, &expected).unwrap()), data);
    let entries = cache.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1.hits, 2);
    assert_eq!(entries[0].1.size, 10_000);
    // Nothing unfinished is left behind.
    assert_eq!(
        fs::read_dir(cache.dir().join("incomplete"))
            .unwrap()
            .count(),
        0
    );
    let (_, again) = fill(&cache, dir.path(), ID_A, &data);
    assert_eq!(again, expected);
}

#[test]
fn truncated_entry_is_removed_and_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    let (_, expected) = fill(&cache, dir.path(), ID_A, &[7u8; 5000]);
    File::options()
        .write(true)
        .open(cache.dir().join(ID_A))
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(cache.lookup(ID_A, &expected).is_none());
    assert!(!cache.dir().join(ID_A).exists());
    assert!(!cache.contains(ID_A));
}

#[test]
fn entry_rewritten_in_place_is_rehashed_and_removed_even_after_a_good_hit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    let (_, expected) = fill(&cache, dir.path(), ID_A, &[7u8; 5000]);
    assert!(cache.lookup(ID_A, &expected).is_some());
    // Same size, other bytes: only the hash can tell. The change moves the file's ctime, so
    // the memo of the good hit does not apply.
    std::thread::sleep(Duration::from_millis(20));
    File::options()
        .write(true)
        .open(cache.dir().join(ID_A))
        .unwrap()
        .write_all_at(b"corrupt", 10)
        .unwrap();
    assert!(cache.lookup(ID_A, &expected).is_none());
    assert!(!cache.contains(ID_A));
}

#[test]
fn store_data_that_does_not_match_the_image_is_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    let (_, expected) = stored(dir.path(), ID_A, b"the real data");
    let (mut other, _) = stored(dir.path(), ID_B, b"other data!!!");
    let error = cache
        .fill(ID_A, &mut other, &expected, &[], &AtomicBool::new(false))
        .unwrap_err();
    assert!(matches!(error, CacheError::Mismatch { .. }), "{error}");
    assert!(!cache.contains(ID_A));
    assert_eq!(
        fs::read_dir(cache.dir().join("incomplete"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn stopped_fill_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    let (mut source, expected) = stored(dir.path(), ID_A, &[1u8; 1000]);
    let error = cache
        .fill(ID_A, &mut source, &expected, &[], &AtomicBool::new(true))
        .unwrap_err();
    assert!(matches!(error, CacheError::Stopped));
    assert!(!cache.contains(ID_A));
    assert_eq!(
        fs::read_dir(cache.dir().join("incomplete"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn least_recently_used_entries_are_evicted_at_the_size_bound() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 2500);
    let (_, expected_a) = fill(&cache, dir.path(), ID_A, &[1u8; 1000]);
    std::thread::sleep(Duration::from_millis(5));
    fill(&cache, dir.path(), ID_B, &[2u8; 1000]);
    std::thread::sleep(Duration::from_millis(5));
    // A hit makes A the most recently used: B is evicted first.
    assert!(cache.lookup(ID_A, &expected_a).is_some());
    std::thread::sleep(Duration::from_millis(5));
    fill(&cache, dir.path(), ID_C, &[3u8; 1000]);
    let ids: Vec<String> = cache.entries().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![ID_A.to_string(), ID_C.to_string()]);
    // Larger than the whole cache: never cached.
    let (outcome, _) = fill(&cache, dir.path(), ID_B, &[2u8; 2501]);
    assert_eq!(outcome, FillOutcome::TooLarge);
}

#[test]
fn queue_is_claimed_once_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    assert!(cache.queue(ID_A).unwrap());
    assert!(!cache.queue(ID_A).unwrap());
    assert!(cache.queue(ID_B).unwrap());
    assert_eq!(cache.queued(), vec![ID_A.to_string(), ID_B.to_string()]);
    let first = cache.claim_next("1-1").unwrap();
    let second = cache.claim_next("2-2").unwrap();
    assert_ne!(first, second);
    assert_eq!(cache.claim_next("3-3"), None);
    // Claimed prefetches are still listed as queued.
    assert_eq!(cache.queued().len(), 2);
    cache.release(&first, "1-1", true);
    cache.release(&second, "2-2", false);
    assert_eq!(cache.queued(), vec![first.clone()]);
    assert!(cache.dequeue(&first));
    assert!(cache.queued().is_empty());
}

#[test]
fn sweep_removes_dead_writers_files_and_requeues_their_claims() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    fs::write(
        cache.dir().join("incomplete").join(format!("{ID_A}.99-1")),
        b"x",
    )
    .unwrap();
    fs::write(
        cache.dir().join("incomplete").join(format!("{ID_B}.42-1")),
        b"x",
    )
    .unwrap();
    cache.queue(ID_C).unwrap();
    assert_eq!(cache.claim_next("99-1").as_deref(), Some(ID_C));
    let swept = cache.sweep(|owner| owner == "42-1");
    assert_eq!(swept.len(), 2, "{swept:?}");
    assert!(cache
        .dir()
        .join("incomplete")
        .join(format!("{ID_B}.42-1"))
        .exists());
    assert!(cache.dir().join("queued").join(ID_C).exists());
}

#[test]
fn remove_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    fill(&cache, dir.path(), ID_A, b"a");
    fill(&cache, dir.path(), ID_B, b"b");
    assert!(cache.remove(ID_A));
    assert!(!cache.remove(ID_A));
    assert_eq!(cache.clear(), 1);
    assert!(cache.entries().is_empty());
}

#[test]
fn reserve_is_the_larger_of_one_gib_and_five_percent() {
    const GIB: u64 = 1 << 30;
    assert_eq!(space::reserve(8 << 20), GIB);
    assert_eq!(space::reserve(20 * GIB), GIB);
    assert_eq!(space::reserve(100 * GIB), 5 * GIB);
    assert_eq!(space::reserve(2000 * GIB), 100 * GIB);
    let disk = space::Space {
        free: 3 * GIB,
        total: 10 * GIB,
    };
    assert!(disk.has_room_for(2 * GIB));
    assert!(!disk.has_room_for(2 * GIB + 1));
    assert!(!disk.has_room_for(4 * GIB));
}

#[test]
fn fill_that_would_break_the_reserve_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), u64::MAX);
    let (mut source, mut expected) = stored(dir.path(), ID_A, b"small data");
    // More than any filesystem here has free: refused before a byte is written.
    expected.size = 1 << 62;
    let error = cache
        .fill(
            ID_A,
            &mut source,
            &expected,
            &[dir.path().to_path_buf()],
            &AtomicBool::new(false),
        )
        .unwrap_err();
    let CacheError::NoRoom {
        needed,
        reserve,
        ref shared_with,
        ..
    } = error
    else {
        panic!("{error}");
    };
    assert_eq!(needed, 1 << 62);
    assert!(reserve >= space::RESERVE_BYTES);
    // The data directory (the temporary dir) is on the cache's filesystem and is named.
    assert_eq!(shared_with, &vec![dir.path().to_path_buf()]);
    assert!(
        error.to_string().contains("keeps that space for uploads"),
        "{error}"
    );
    assert_eq!(
        fs::read_dir(cache.dir().join("incomplete"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn backoff_doubles_from_one_minute_up_to_one_hour() {
    let waits: Vec<u64> = (1..=9).map(|n| backoff::delay(n).as_secs()).collect();
    assert_eq!(waits, vec![60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    assert_eq!(backoff::delay(u32::MAX).as_secs(), 3600);
    let first = backoff::next(None, 1000.0, "e");
    assert_eq!((first.failures, first.retry_after), (1, 1060.0));
    // A failure after the wait ended (but within the hour after it) doubles the wait.
    let second = backoff::next(Some(&first), 1100.0, "e");
    assert_eq!((second.failures, second.retry_after), (2, 1220.0));
    // More than an hour after the wait ended: counts as a first failure again.
    let fresh = backoff::next(Some(&second), 1220.0 + 3601.0, "e");
    assert_eq!(fresh.failures, 1);
}

#[test]
fn failed_fill_marker_holds_downloads_back_for_every_process_until_success() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    assert!(cache.wants(ID_A, 100));
    assert!(!cache.wants(ID_A, 2 << 20), "larger than the cache");
    let marker = cache.note_failure(ID_A, "disk full");
    assert_eq!(marker.failures, 1);
    // Another process (another handle on the folder) sees the same backoff.
    let other = open(dir.path(), 1 << 20);
    let remaining = other.backoff_remaining(ID_A).unwrap();
    assert!(
        remaining <= backoff::FIRST_BACKOFF && remaining.as_secs() >= 58,
        "{remaining:?}"
    );
    assert!(!other.wants(ID_A, 100));
    assert!(other.wants(ID_B, 100));
    assert_eq!(other.note_failure(ID_A, "disk full").failures, 2);
    // Still waiting: the sweep keeps it.
    assert!(cache.sweep(|_| true).is_empty());
    cache.note_success(ID_A);
    assert!(cache.wants(ID_A, 100));
    assert!(!cache.dir().join("failed").join(ID_A).exists());
}

#[test]
fn sweep_removes_expired_markers_and_dead_writers_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    let failed = cache.dir().join("failed");
    let expired = backoff::Marker {
        failures: 3,
        retry_after: record::now_seconds() - 3601.0,
        error: "old".to_string(),
    };
    fs::write(failed.join(ID_A), serde_json::to_vec(&expired).unwrap()).unwrap();
    cache.note_failure(ID_B, "recent");
    fs::write(failed.join(format!(".{ID_C}.99-1")), b"{").unwrap();
    let mut swept = cache.sweep(|owner| owner != "99-1");
    swept.sort();
    assert_eq!(
        swept,
        vec![failed.join(format!(".{ID_C}.99-1")), failed.join(ID_A)]
    );
    assert!(failed.join(ID_B).exists());
}
