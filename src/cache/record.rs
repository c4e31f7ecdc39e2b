//! An entry's record: what the cache knows about one published entry besides its data, in a
//! small JSON file `meta/<image id>`.
//!
//! A record is written whole under a temporary name and renamed over the old one, so readers in
//! other processes see the old record or the new one, never half of one. Hit counts and access
//! times are read-modify-write without a lock: two processes counting a hit at the same moment
//! may count it once. They order eviction and are shown by `GET /v2/cache`; nothing depends on
//! their being exact.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The record of one cache entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Bytes in the data file.
    pub size: u64,
    /// The image's md5 `checksum` when the entry was filled.
    pub checksum: Option<String>,
    /// The image's `os_hash_algo` and `os_hash_value` when the entry was filled; the data was
    /// checked against them before it was published.
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// Downloads served from this entry.
    pub hits: u64,
    /// Seconds since the epoch of the last hit (the fill counts as one access).
    pub last_accessed: f64,
    /// Seconds since the epoch of the fill.
    pub last_modified: f64,
}

/// Now, as seconds since the epoch with a fraction, as Glance's cache records time.
pub(crate) fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Reads a record; `Ok(None)` when there is none. A record that does not parse is treated as
/// missing (its entry is then not served), and logged.
pub(crate) fn read(path: &Path) -> io::Result<Option<Record>> {
    match fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(record) => Ok(Some(record)),
            Err(error) => {
                log::warn!(
                    "image cache record {} is unreadable ({error}); its entry is ignored",
                    path.display()
                );
                Ok(None)
            }
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Writes `record` to `path` through `temporary` (same folder) and a rename.
pub(crate) fn write(path: &Path, temporary: &Path, record: &Record) -> io::Result<()> {
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temporary)?;
        file.write_all(&bytes)?;
        drop(file);
        fs::rename(temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(temporary);
    }
    result
}
