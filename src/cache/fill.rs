//! Filling an entry from the store's copy, publishing it, and evicting what no longer fits.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::record::{self, Record};
use super::space::{self, Space, RECHECK_EVERY};
use super::verify::HASH_CHUNK;
use super::{layout, Cache, CacheError, Expected};

/// What a fill did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillOutcome {
    /// The entry was published with this many bytes (and older entries evicted as needed).
    Filled { size: u64 },
    /// The cache already holds an entry for the image.
    AlreadyCached,
    /// The image is larger than `image_cache_max_size`: it is never cached.
    TooLarge,
    /// This process is already filling the image.
    InProgress,
}

/// An unfinished entry: removed on drop unless published.
struct Incomplete {
    path: PathBuf,
    published: bool,
}

impl Drop for Incomplete {
    fn drop(&mut self) {
        if !self.published {
            if let Err(error) = fs::remove_file(&self.path) {
                if error.kind() != io::ErrorKind::NotFound {
                    log::warn!(
                        "cannot remove unfinished image cache file {}: {error}",
                        self.path.display()
                    );
                }
            }
        }
    }
}

impl Cache {
    /// Copies `source` (the store's data of `image_id`, from its start) into the cache, checks
    /// it against `expected`, publishes it and evicts least recently used entries until the
    /// cache fits `image_cache_max_size`. `stop` is checked between chunks: when it is set the
    /// fill ends with [`CacheError::Stopped`] and leaves nothing behind.
    ///
    /// A fill that would leave less than the free-space reserve on the cache's filesystem (see
    /// `space`) does not start, and one that finds the reserve reached while it copies (an upload
    /// took the space meanwhile) stops; both end with [`CacheError::NoRoom`] and leave nothing
    /// behind. `data_dirs` are the store's data directories: those on the cache's filesystem are
    /// named in the error, since the reserve is then the room their uploads have.
    pub fn fill(
        &self,
        image_id: &str,
        source: &mut File,
        expected: &Expected,
        data_dirs: &[PathBuf],
        stop: &AtomicBool,
    ) -> Result<FillOutcome, CacheError> {
        if !layout::is_name_part(image_id) {
            return Err(CacheError::io(
                image_id,
                "cache an image whose id is",
                io::Error::new(io::ErrorKind::InvalidInput, "not a plain image id"),
            ));
        }
        if expected.size > self.max_size {
            return Ok(FillOutcome::TooLarge);
        }
        if self.contains(image_id) {
            return Ok(FillOutcome::AlreadyCached);
        }
        self.check_room(expected.size, data_dirs)?;
        let owner = crate::store::owner_token();
        let path = self.layout.incomplete(image_id, &owner);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Ok(FillOutcome::InProgress)
            }
            Err(error) => {
                return Err(CacheError::io(
                    &path,
                    "create unfinished cache entry",
                    error,
                ))
            }
        };
        let mut incomplete = Incomplete {
            path: path.clone(),
            published: false,
        };
        source
            .seek(SeekFrom::Start(0))
            .map_err(|error| CacheError::io(&path, "seek in the store data for", error))?;
        let mut digester = expected.hash.digester();
        let mut buffer = vec![0u8; HASH_CHUNK];
        let mut copied = 0u64;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Err(CacheError::Stopped);
            }
            let n = match source.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(CacheError::io(&path, "read the store data for", error)),
            };
            if (copied / RECHECK_EVERY) != ((copied + n as u64) / RECHECK_EVERY) {
                self.check_room(expected.size.saturating_sub(copied), data_dirs)?;
            }
            copied += n as u64;
            if copied > expected.size {
                break;
            }
            digester.update(&buffer[..n]);
            file.write_all(&buffer[..n])
                .map_err(|error| CacheError::io(&path, "write", error))?;
        }
        drop(file);
        if copied != expected.size {
            return Err(CacheError::Mismatch {
                image_id: image_id.to_string(),
                what: format!(
                    "the store has {}{copied} bytes, the image {}",
                    if copied > expected.size {
                        "more than "
                    } else {
                        ""
                    },
                    expected.size
                ),
            });
        }
        if let Some(what) = expected.hash.describe_mismatch(digester) {
            return Err(CacheError::Mismatch {
                image_id: image_id.to_string(),
                what,
            });
        }
        let now = record::now_seconds();
        let record = Record {
            size: copied,
            checksum: expected.checksum.clone(),
            os_hash_algo: expected.os_hash_algo.clone(),
            os_hash_value: expected.os_hash_value.clone(),
            hits: 0,
            last_accessed: now,
            last_modified: now,
        };
        // The record first: data under its final name always has one (see the module doc).
        let record_path = self.layout.record(image_id);
        record::write(
            &record_path,
            &self.layout.record_temporary(image_id, &owner),
            &record,
        )
        .map_err(|error| CacheError::io(&record_path, "write cache record", error))?;
        let data_path = self.layout.data(image_id);
        fs::rename(&path, &data_path).map_err(|error| {
            CacheError::io(&data_path, "rename the finished cache entry to", error)
        })?;
        incomplete.published = true;
        self.evict();
        Ok(FillOutcome::Filled { size: copied })
    }

    /// Fails with [`CacheError::NoRoom`] unless `more` bytes can be written to the cache's
    /// filesystem while leaving the reserve free.
    fn check_room(&self, more: u64, data_dirs: &[PathBuf]) -> Result<(), CacheError> {
        let root = &self.layout.root;
        let space = Space::of(root)
            .map_err(|error| CacheError::io(root, "read the free space (statvfs) of", error))?;
        if space.has_room_for(more) {
            return Ok(());
        }
        Err(CacheError::NoRoom {
            path: root.clone(),
            needed: more,
            free: space.free,
            reserve: space::reserve(space.total),
            shared_with: space::sharing_filesystem(root, data_dirs),
        })
    }

    /// Removes least recently used entries until the published entries total at most
    /// `image_cache_max_size` bytes. Returns the ids removed.
    pub fn evict(&self) -> Vec<String> {
        let mut sized: Vec<(String, u64)> = self
            .entries()
            .into_iter()
            .map(|(image_id, record)| {
                let size = fs::metadata(self.layout.data(&image_id))
                    .map_or(record.size, |metadata| metadata.len());
                (image_id, size)
            })
            .collect();
        let mut total: u64 = sized.iter().map(|(_, size)| size).sum();
        let mut evicted = Vec::new();
        // `entries` lists the least recently used first.
        sized.reverse();
        while total > self.max_size {
            let Some((image_id, size)) = sized.pop() else {
                break;
            };
            if self.remove(&image_id) {
                log::info!(
                    "image cache: evicted image {image_id} ({size} bytes) to stay within \
                     image_cache_max_size ({} bytes)",
                    self.max_size
                );
                evicted.push(image_id);
            }
            total = total.saturating_sub(size);
        }
        evicted
    }
}
