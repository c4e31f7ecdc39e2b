//! The prefetch queue, shared by every process through the cache folder, and the sweep of what
//! dead processes left.
//!
//! Queueing an image creates `queued/<id>` (O_EXCL: queueing twice is one entry). A prefetcher
//! claims one by renaming it to `prefetching/<id>.<owner>`; rename(2) lets exactly one process
//! win, and the owner token says whose claim it is, so a claim whose process died goes back to
//! the queue at the next sweep.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use super::layout::{self, file_name, INCOMPLETE, PREFETCHING, QUEUED};
use super::{remove_if_present, Cache, CacheError};

impl Cache {
    /// Queues a prefetch of `image_id`; false if it was already queued.
    pub fn queue(&self, image_id: &str) -> Result<bool, CacheError> {
        if !layout::is_name_part(image_id) {
            return Ok(false);
        }
        let path = self.layout.queued(image_id);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(CacheError::io(&path, "queue a prefetch in", error)),
        }
    }

    /// The images queued or being prefetched, in no particular order, each once.
    pub fn queued(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .names_in(QUEUED)
            .into_iter()
            .filter(|name| layout::is_name_part(name))
            .collect();
        for name in self.names_in(PREFETCHING) {
            if let Some((image_id, _)) = layout::parse_owned_name(&name) {
                ids.push(image_id.to_string());
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// Takes `image_id` out of the queue; true if it was queued. A prefetch already claimed
    /// runs on.
    pub fn dequeue(&self, image_id: &str) -> bool {
        layout::is_name_part(image_id) && remove_if_present(&self.layout.queued(image_id))
    }

    /// Empties the queue; returns how many were removed.
    pub fn clear_queue(&self) -> usize {
        self.names_in(QUEUED)
            .into_iter()
            .filter(|name| self.dequeue(name))
            .count()
    }

    /// Claims the oldest queued prefetch for `owner`, or None when the queue is empty.
    pub(crate) fn claim_next(&self, owner: &str) -> Option<String> {
        let mut queued: Vec<(SystemTime, String)> = self
            .names_in(QUEUED)
            .into_iter()
            .filter(|name| layout::is_name_part(name))
            .map(|name| {
                let modified = fs::metadata(self.layout.queued(&name))
                    .and_then(|metadata| metadata.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (modified, name)
            })
            .collect();
        queued.sort();
        for (_, image_id) in queued {
            match fs::rename(
                self.layout.queued(&image_id),
                self.layout.claimed(&image_id, owner),
            ) {
                Ok(()) => return Some(image_id),
                // Another process claimed it first.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    log::warn!("cannot claim the prefetch of image {image_id}: {error}");
                    return None;
                }
            }
        }
        None
    }

    /// Ends `owner`'s claim on `image_id`: back into the queue when `requeue`, else removed.
    pub(crate) fn release(&self, image_id: &str, owner: &str, requeue: bool) {
        let claimed = self.layout.claimed(image_id, owner);
        if requeue {
            if let Err(error) = fs::rename(&claimed, self.layout.queued(image_id)) {
                log::warn!(
                    "cannot put the prefetch of image {image_id} back in the queue: {error}"
                );
            }
        } else {
            remove_if_present(&claimed);
        }
    }

    /// Cleans up after processes that died: removes their unfinished entries and record
    /// temporaries, and puts their claimed prefetches back in the queue. Unfinished entries
    /// older than `image_cache_stall_time` are removed whoever wrote them. Returns what it
    /// removed or requeued. Failures are logged, not returned: this is housekeeping.
    pub fn sweep(&self, is_alive: impl Fn(&str) -> bool) -> Vec<PathBuf> {
        let mut swept = Vec::new();
        let now = SystemTime::now();
        for name in self.names_in(INCOMPLETE) {
            let path = self.layout.folder(INCOMPLETE).join(&name);
            let stalled = fs::metadata(&path)
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .is_some_and(|age| age > self.stall_time);
            let abandoned = match layout::parse_owned_name(&name) {
                Some((_, owner)) => !is_alive(owner),
                None => false,
            };
            if (abandoned || stalled) && remove_if_present(&path) {
                swept.push(path);
            }
        }
        for name in self.names_in(layout::META) {
            let Some(inner) = name.strip_prefix('.') else {
                continue;
            };
            if let Some((_, owner)) = layout::parse_owned_name(inner) {
                let path = self.layout.folder(layout::META).join(&name);
                if !is_alive(owner) && remove_if_present(&path) {
                    swept.push(path);
                }
            }
        }
        for name in self.names_in(PREFETCHING) {
            let Some((image_id, owner)) = layout::parse_owned_name(&name) else {
                continue;
            };
            if !is_alive(owner) {
                let path = self.layout.claimed(image_id, owner);
                self.release(image_id, owner, true);
                swept.push(path);
            }
        }
        swept.extend(self.sweep_markers(&is_alive));
        swept
    }

    /// The file names in one subfolder.
    pub(crate) fn names_in(&self, folder: &str) -> Vec<String> {
        match fs::read_dir(self.layout.folder(folder)) {
            Ok(listing) => listing
                .flatten()
                .filter_map(|entry| file_name(&entry.path()).map(str::to_string))
                .collect(),
            Err(error) => {
                if error.kind() != io::ErrorKind::NotFound {
                    log::warn!(
                        "cannot list {}: {error}",
                        self.layout.folder(folder).display()
                    );
                }
                Vec::new()
            }
        }
    }
}
