//! Backing off after a failed fill, for every process at once.
//!
//! When a fill of an image fails (no room within the free-space reserve, a write error such as
//! ENOSPC or EIO, store data that does not match the image), the prefetcher writes the marker
//! `failed/<image id>` in the cache folder: a small JSON object with the number of consecutive
//! failures, the time before which no download queues the image again, and the error. Downloads
//! arrive at any child of any generation, and every one of them reads the same folder, so one
//! failure stops every child from queueing the image until the time has passed.
//!
//! The wait doubles with each consecutive failure: [`FIRST_BACKOFF`] (1 minute), 2, 4, ... up to
//! [`MAX_BACKOFF`] (1 hour), reached at the 7th failure. A fill that succeeds removes the marker;
//! a marker whose wait ended more than [`MAX_BACKOFF`] ago counts as no failure (the next one
//! starts again at 1 minute), and the sweep of a starting child removes it.
//!
//! An explicit `PUT /v2/cache/{id}` is not held back: an operator who freed space retries at once
//! (a new failure doubles the wait as any other).

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::layout::{self, FAILED};
use super::{record, remove_if_present, Cache};

/// The wait after a first failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// The longest wait, however many failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The content of `failed/<image id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// Consecutive failed fills.
    pub(crate) failures: u32,
    /// Seconds since the epoch before which downloads do not queue the image.
    pub(crate) retry_after: f64,
    /// What the last failure was, for an operator reading the folder.
    pub(crate) error: String,
}

/// The wait after `failures` consecutive failures (at least 1).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

/// The marker after one more failure at `now`, given the previous one.
pub(crate) fn next(previous: Option<&Marker>, now: f64, error: &str) -> Marker {
    let failures = match previous {
        Some(marker) if now - marker.retry_after <= MAX_BACKOFF.as_secs_f64() => {
            marker.failures.saturating_add(1)
        }
        _ => 1,
    };
    Marker {
        failures,
        retry_after: now + delay(failures).as_secs_f64(),
        error: error.to_string(),
    }
}

impl Cache {
    /// How long downloads still leave `image_id` out of the queue after a failed fill; None when
    /// they may queue it.
    pub fn backoff_remaining(&self, image_id: &str) -> Option<Duration> {
        let marker = self.read_marker(image_id)?;
        let remaining = marker.retry_after - record::now_seconds();
        (remaining > 0.0).then(|| Duration::from_secs_f64(remaining.min(1e9)))
    }

    /// Records a failed fill of `image_id`; returns the new marker (its failure count and wait).
    pub(crate) fn note_failure(&self, image_id: &str, error: &str) -> Marker {
        let marker = next(
            self.read_marker(image_id).as_ref(),
            record::now_seconds(),
            error,
        );
        if let Err(error) = self.write_marker(image_id, &marker) {
            log::warn!(
                "image cache: cannot record the failed fill of image {image_id} in {}: {error}; \
                 downloads may queue it again at once; check that the cache folder is writable",
                self.layout.failed(image_id).display()
            );
        }
        marker
    }

    /// Forgets the failures of `image_id` (after a fill that succeeded).
    pub(crate) fn note_success(&self, image_id: &str) {
        if layout::is_name_part(image_id) {
            remove_if_present(&self.layout.failed(image_id));
        }
    }

    /// Removes the markers that no longer hold anything back (their wait ended more than
    /// [`MAX_BACKOFF`] ago, so they would count as no failure), and the temporary markers of
    /// processes that died. Returns what it removed.
    pub(crate) fn sweep_markers(&self, is_alive: &impl Fn(&str) -> bool) -> Vec<PathBuf> {
        let now = record::now_seconds();
        let mut swept = Vec::new();
        for name in self.names_in(FAILED) {
            let path = self.layout.folder(FAILED).join(&name);
            let remove = match name.strip_prefix('.') {
                Some(inner) => {
                    layout::parse_owned_name(inner).is_some_and(|(_, owner)| !is_alive(owner))
                }
                None => {
                    layout::is_name_part(&name)
                        && self.read_marker(&name).is_some_and(|marker| {
                            now - marker.retry_after > MAX_BACKOFF.as_secs_f64()
                        })
                }
            };
            if remove && remove_if_present(&path) {
                swept.push(path);
            }
        }
        swept
    }

    fn read_marker(&self, image_id: &str) -> Option<Marker> {
        if !layout::is_name_part(image_id) {
            return None;
        }
        let path = self.layout.failed(image_id);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(marker) => Some(marker),
                Err(error) => {
                    log::warn!(
                        "image cache: the failed-fill marker {} is unreadable ({error}); it is \
                         removed",
                        path.display()
                    );
                    remove_if_present(&path);
                    None
                }
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                log::warn!("image cache: cannot read {}: {error}", path.display());
                None
            }
        }
    }

    fn write_marker(&self, image_id: &str, marker: &Marker) -> io::Result<()> {
        let bytes = serde_json::to_vec(marker).map_err(io::Error::other)?;
        let temporary = self
            .layout
            .failed_temporary(image_id, &crate::store::owner_token());
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)?;
            file.write_all(&bytes)?;
            drop(file);
            fs::rename(&temporary, self.layout.failed(image_id))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        result
    }
}
