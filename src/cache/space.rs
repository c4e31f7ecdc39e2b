//! The free-space reserve: a fill never leaves less than [`reserve`] bytes free on the cache's
//! filesystem, so the cache cannot take the space an upload (or anything else on that disk)
//! needs.
//!
//! The reserve is the larger of [`RESERVE_BYTES`] (1 GiB) and [`RESERVE_PERCENT`] (5 %) of the
//! filesystem's size:
//!
//! - 1 GiB because, in the default layout (`/var/lib/glance/image-cache` beside
//!   `/var/lib/glance/images`), the cache and the data directories share one disk, and an upload
//!   needs room for a whole image of typical size (cloud images are hundreds of MB to a few GB);
//!   a small disk keeps room for at least one such upload.
//! - 5 % because on a large disk a fixed gigabyte is lost in the noise: 5 % of a 2 TB disk
//!   (100 GB) leaves room for several concurrent uploads, and is the same share ext4 reserves for
//!   root by default, which operators already budget for.
//!
//! The check reads `statvfs` of the cache folder (`f_bavail * f_frsize`, what an unprivileged
//! writer may use) before a fill starts, and again every [`RECHECK_EVERY`] bytes while it runs, so
//! an upload that takes space meanwhile stops the fill rather than failing itself. When a data
//! directory is on the same filesystem as the cache (same `st_dev`) the message says so: the
//! reserve is then what keeps uploads working.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::statvfs::statvfs;

/// The fixed part of the reserve: 1 GiB.
pub const RESERVE_BYTES: u64 = 1 << 30;
/// The proportional part of the reserve: 5 % of the filesystem's size.
pub const RESERVE_PERCENT: u64 = 5;
/// How many bytes a fill copies between two checks of the free space.
pub(crate) const RECHECK_EVERY: u64 = 16 << 20;

/// The bytes a fill leaves free on a filesystem of `total` bytes.
pub fn reserve(total: u64) -> u64 {
    RESERVE_BYTES.max(total / 100 * RESERVE_PERCENT)
}

/// One filesystem's numbers, as `statvfs` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    /// Bytes an unprivileged writer may still use.
    pub(crate) free: u64,
    /// The filesystem's size in bytes.
    pub(crate) total: u64,
}

impl Space {
    pub(crate) fn of(path: &Path) -> std::io::Result<Space> {
        let stats = statvfs(path).map_err(std::io::Error::from)?;
        #[allow(clippy::useless_conversion)] // The field types differ between platforms.
        let (available, blocks, fragment) = (
            u64::from(stats.blocks_available()),
            u64::from(stats.blocks()),
            u64::from(stats.fragment_size()),
        );
        Ok(Space {
            free: available.saturating_mul(fragment),
            total: blocks.saturating_mul(fragment),
        })
    }

    /// Whether `more` bytes can still be written while leaving the reserve free.
    pub(crate) fn has_room_for(&self, more: u64) -> bool {
        self.free.saturating_sub(more) >= reserve(self.total) && self.free >= more
    }
}

/// The data directories on the same filesystem as `cache_dir` (same `st_dev`). A directory that
/// cannot be stat'ed is left out: the upload path reports it.
pub(crate) fn sharing_filesystem(cache_dir: &Path, data_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(cache) = std::fs::metadata(cache_dir) else {
        return Vec::new();
    };
    data_dirs
        .iter()
        .filter(|dir| std::fs::metadata(dir).is_ok_and(|data| data.dev() == cache.dev()))
        .cloned()
        .collect()
}
