//! The image cache: copies of image data on a fast local disk in front of the data directories,
//! used by the `caching` and `cachemanagement` flavors (`[paste_deploy] flavor`).
//!
//! A download of an image the cache holds is served from the cache (a *hit*) after its data was
//! checked against the image's hash ([`Cache::lookup`]). A download it does not hold (a *miss*)
//! is served from the store as without a cache, and, if it read the whole image, queues the
//! image (unless a failed fill of it backs off, see `backoff`); the child's background
//! [`Prefetcher`] then copies the store's file into the cache ([`Cache::fill`]), hashing it on
//! the way, and publishes it only if size and hash match the image. `PUT /v2/cache/{id}` queues
//! an image the same way. After each new entry, least recently used entries are removed until the
//! cache holds at most `image_cache_max_size` bytes. A fill never leaves less than the free-space
//! reserve on the cache's filesystem (see `space`), which it may share with the data directories.
//!
//! - `layout`: the folders and file names;
//! - `record`: the small JSON record beside each entry (size, hashes, hits, access times);
//! - `verify`: hashing an entry and the per-process memo of verified files;
//! - `fill`: the copy from the store, publication and eviction;
//! - `queue`: the prefetch queue shared by every process, and the sweep of abandoned work;
//! - `space`: the free-space reserve a fill leaves on the cache's filesystem;
//! - `backoff`: the shared record of failed fills, which keeps downloads from queueing them again;
//! - `prefetcher`: the background thread of each child;
//! - `error`: [`CacheError`].
//!
//! The cache knows nothing of HTTP: the API decides when to look up, queue or remove, and turns
//! nothing the cache does into a client error (a broken cache only means downloads come from the
//! store). It never writes to the data directories.
//!
//! # Filesystems
//!
//! - An entry appears complete or not at all: data is written to `incomplete/<id>.<owner>`,
//!   checked, and renamed to `<id>` only after its record was renamed to `meta/<id>`. Removal
//!   unlinks the data first, then the record. So a data file without a record is at most a crash
//!   leftover, which is never served (it counts as a miss and a fill replaces it), and a partial
//!   file is never under a served name. Everything lives under the one cache folder, so every
//!   rename stays within one filesystem.
//! - Cache data is not fsynced: after a crash an entry may be damaged, and the first hit in any
//!   process hashes the whole file before serving it (see `verify`), so it is removed rather than
//!   served.
//! - An entry that fails verification (truncated, rewritten, a hash that differs from the image's)
//!   is removed and the download is served from the store; the next miss fills it again.
//! - Crash leftovers (`incomplete/` files and `prefetching/` claims of dead processes) are
//!   removed, or put back in the queue, by every child as it starts ([`Cache::sweep`]);
//!   unfinished files older than `image_cache_stall_time` are removed even if their writer runs.
//!
//! # Concurrency
//!
//! Every child of every generation shares the folder; there is no lock. Publication is a rename
//! and eviction an unlink, both atomic, and a process serving a hit holds the file open, so an
//! entry evicted or replaced meanwhile is still sent whole (the inode lives until it is closed).
//! A prefetch is claimed by renaming `queued/<id>` into `prefetching/`, which exactly one process
//! wins. Two processes may fill the same image at once after two misses; both copies are checked
//! and the last rename wins. Eviction by two processes at once may remove a little more than
//! needed. Hit counts may lose an update (see `record`).
//!
//! # Performance
//!
//! A hit is served with sendfile(2) like a store download, after a whole-file hash the first time
//! a process serves that file (see `verify` for exactly when it is hashed again and what that does
//! not catch). A fill reads the store's file once more in the background, 256 KiB at a time, so
//! the miss that caused it is not slowed beyond that extra read and memory stays bounded.
//! Eviction lists the cache folder after each fill, which is cheap for the hundreds to thousands
//! of entries a cache of images holds.

mod backoff;
mod error;
mod fill;
mod layout;
mod prefetcher;
mod queue;
mod record;
pub mod space;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use backoff::{FIRST_BACKOFF, MAX_BACKOFF};
pub use error::CacheError;
pub use fill::FillOutcome;
pub use prefetcher::{Prefetcher, Waker};
pub use record::Record;

use layout::Layout;
use verify::{ExpectedHash, Fingerprint};

use crate::registry::Image;
use crate::store::HashKind;

/// What the cache needs from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `image_cache_dir`, absolute.
    pub dir: PathBuf,
    /// `image_cache_max_size` in bytes.
    pub max_size: u64,
    /// `image_cache_stall_time`.
    pub stall_time: Duration,
}

/// What an image says its data is: the cache serves and publishes only data that matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    /// The md5 `checksum`, kept in the record.
    pub checksum: Option<String>,
    /// The hash the data is checked against: `os_hash_value` if the image has one, else md5.
    hash: ExpectedHash,
    os_hash_algo: Option<String>,
    os_hash_value: Option<String>,
}

impl Expected {
    /// What an active image's data must be; None when the image lacks a size or any hash
    /// glint can check (such an image is never cached).
    pub fn of_image(image: &Image) -> Option<Expected> {
        let size = image.size?;
        let os_hash = image
            .os_hash_algo
            .as_deref()
            .and_then(HashKind::from_name)
            .zip(image.os_hash_value.clone());
        let hash = match (os_hash, &image.checksum) {
            (Some((kind, value)), _) => ExpectedHash::OsHash { kind, value },
            (None, Some(checksum)) => ExpectedHash::Md5(checksum.clone()),
            (None, None) => return None,
        };
        Some(Expected {
            size,
            checksum: image.checksum.clone(),
            hash,
            os_hash_algo: image.os_hash_algo.clone(),
            os_hash_value: image.os_hash_value.clone(),
        })
    }

    /// Whether a record was made for data with these hashes.
    fn agrees_with(&self, record: &Record) -> bool {
        record.size == self.size
            && record.checksum == self.checksum
            && record.os_hash_algo == self.os_hash_algo
            && record.os_hash_value == self.os_hash_value
    }
}

/// A verified cache entry, open and positioned at its start, ready to be sent.
#[derive(Debug)]
pub struct Hit {
    pub file: File,
    pub size: u64,
    /// Where it was found, for log lines.
    pub path: PathBuf,
}

/// One process's handle on the cache folder. Shared between the threads of a child.
#[derive(Debug)]
pub struct Cache {
    layout: Layout,
    max_size: u64,
    stall_time: Duration,
    /// The fingerprint of the file each image's entry had when this process last hashed it
    /// whole and found it right (see `verify`). A std `Mutex` is enough: it is held for a map
    /// lookup or insert, never across I/O.
    verified: Mutex<HashMap<String, Fingerprint>>,
}

impl Cache {
    /// Opens the cache folder: creates it and its subfolders if missing and checks that this
    /// process can create files there. The master calls it before forking (so a bad folder fails
    /// the start or the reload) and each child again after its fork.
    pub fn open(settings: Settings) -> Result<Cache, CacheError> {
        let root = std::path::absolute(&settings.dir).map_err(|error| {
            CacheError::io(&settings.dir, "make the image cache path absolute", error)
        })?;
        let layout = Layout { root };
        for folder in std::iter::once(layout.root.clone())
            .chain(layout::SUBFOLDERS.iter().map(|name| layout.folder(name)))
        {
            fs::create_dir_all(&folder)
                .map_err(|error| CacheError::io(&folder, "create image cache folder", error))?;
        }
        // Named like an unfinished entry so that, should we crash right here, the sweep
        // removes it.
        let probe = layout.incomplete("write-probe", &crate::store::owner_token());
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .map_err(|error| {
                CacheError::io(&probe, "create a file in image cache folder", error)
            })?;
        fs::remove_file(&probe)
            .map_err(|error| CacheError::io(&probe, "remove the write probe", error))?;
        Ok(Cache {
            layout,
            max_size: settings.max_size,
            stall_time: settings.stall_time,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The cache folder (absolute).
    pub fn dir(&self) -> &Path {
        &self.layout.root
    }

    /// Whether a download that missed should queue `image_id` (`size` bytes) for a prefetch:
    /// not when it is larger than `image_cache_max_size` (it would never be cached), nor while
    /// a failed fill of it backs off (see `backoff`). Why not is logged at debug.
    pub fn wants(&self, image_id: &str, size: u64) -> bool {
        if size > self.max_size {
            log::debug!(
                "image cache: not queueing image {image_id}: its {size} bytes exceed \
                 image_cache_max_size"
            );
            return false;
        }
        if let Some(remaining) = self.backoff_remaining(image_id) {
            log::debug!(
                "image cache: not queueing image {image_id}: its last fill failed; retried in \
                 {} s at the earliest",
                remaining.as_secs() + 1
            );
            return false;
        }
        true
    }

    /// The entry of `image_id` if the cache holds one whose data is `expected`, verified (see
    /// `verify`); its record counts the hit. An entry found damaged or stale is removed, with a
    /// warning, and the answer is None: the caller serves the store's copy.
    pub fn lookup(&self, image_id: &str, expected: &Expected) -> Option<Hit> {
        if !layout::is_name_part(image_id) {
            return None;
        }
        let path = self.layout.data(image_id);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                log::warn!("cannot open image cache entry {}: {error}", path.display());
                return None;
            }
        };
        let record = match record::read(&self.layout.record(image_id)) {
            Ok(Some(record)) => record,
            // Data without a record: a crash leftover or a publication in progress; a miss.
            Ok(None) => return None,
            Err(error) => {
                log::warn!("cannot read the record of image cache entry {image_id}: {error}");
                return None;
            }
        };
        let fingerprint = match Fingerprint::of(&file) {
            Ok(fingerprint) => fingerprint,
            Err(error) => {
                log::warn!("cannot stat image cache entry {}: {error}", path.display());
                return None;
            }
        };
        if !expected.agrees_with(&record) {
            self.discard(
                image_id,
                "it was made for other image data (size or hash differ)",
            );
            return None;
        }
        if fingerprint.size() != expected.size {
            self.discard(
                image_id,
                &format!(
                    "it holds {} bytes, the image has {}",
                    fingerprint.size(),
                    expected.size
                ),
            );
            return None;
        }
        let known_good = self
            .verified
            .lock()
            .map(|verified| verified.get(image_id) == Some(&fingerprint))
            .unwrap_or(false);
        if !known_good {
            match verify::hash_file(&mut file, &expected.hash) {
                Ok((digester, n_bytes)) => {
                    let mismatch = if n_bytes != expected.size {
                        Some(format!(
                            "read {n_bytes} bytes, the image has {}",
                            expected.size
                        ))
                    } else {
                        expected.hash.describe_mismatch(digester)
                    };
                    if let Some(mismatch) = mismatch {
                        self.discard(image_id, &mismatch);
                        return None;
                    }
                }
                Err(error) => {
                    log::warn!("cannot read image cache entry {}: {error}", path.display());
                    return None;
                }
            }
            if let Ok(mut verified) = self.verified.lock() {
                verified.insert(image_id.to_string(), fingerprint);
            }
        }
        self.count_hit(image_id, record);
        Some(Hit {
            file,
            size: expected.size,
            path,
        })
    }

    /// Whether the cache holds a published entry for `image_id` (not verified).
    pub fn contains(&self, image_id: &str) -> bool {
        layout::is_name_part(image_id)
            && self.layout.data(image_id).is_file()
            && self.layout.record(image_id).is_file()
    }

    /// Every published entry with its record, oldest access first.
    pub fn entries(&self) -> Vec<(String, Record)> {
        let mut entries = Vec::new();
        let Ok(listing) = fs::read_dir(&self.layout.root) else {
            return entries;
        };
        for entry in listing.flatten() {
            let name = entry.file_name();
            let Some(image_id) = name.to_str().filter(|name| layout::is_name_part(name)) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|kind| kind.is_file()) {
                continue;
            }
            if let Ok(Some(record)) = record::read(&self.layout.record(image_id)) {
                entries.push((image_id.to_string(), record));
            }
        }
        entries.sort_by(|(a_id, a), (b_id, b)| {
            a.last_accessed
                .total_cmp(&b.last_accessed)
                .then_with(|| a_id.cmp(b_id))
        });
        entries
    }

    /// Removes the entry of `image_id`; true if there was data to remove. A download being
    /// served from it finishes (it holds the file open).
    pub fn remove(&self, image_id: &str) -> bool {
        if !layout::is_name_part(image_id) {
            return false;
        }
        let removed = remove_if_present(&self.layout.data(image_id));
        remove_if_present(&self.layout.record(image_id));
        if let Ok(mut verified) = self.verified.lock() {
            verified.remove(image_id);
        }
        removed
    }

    /// Removes every published entry; returns how many.
    pub fn clear(&self) -> usize {
        self.entries()
            .into_iter()
            .filter(|(image_id, _)| self.remove(image_id))
            .count()
    }

    /// Removes a damaged or stale entry, saying why.
    fn discard(&self, image_id: &str, why: &str) {
        log::warn!(
            "image cache entry {} is not served and is removed: {why}; the download is served \
             from the store",
            self.layout.data(image_id).display()
        );
        self.remove(image_id);
    }

    /// Counts a hit in the entry's record. Failing to is logged at debug: it only affects the
    /// eviction order and `GET /v2/cache`.
    fn count_hit(&self, image_id: &str, mut record: Record) {
        record.hits += 1;
        record.last_accessed = record::now_seconds();
        let owner = crate::store::owner_token();
        if let Err(error) = record::write(
            &self.layout.record(image_id),
            &self.layout.record_temporary(image_id, &owner),
            &record,
        ) {
            log::debug!("cannot count a hit of image cache entry {image_id}: {error}");
        }
    }
}

/// Unlinks `path`; true if it existed. Other failures are logged.
fn remove_if_present(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        Err(error) => {
            log::warn!("cannot remove {}: {error}", path.display());
            false
        }
    }
}
