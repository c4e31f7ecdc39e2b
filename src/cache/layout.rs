//! Where things live in the cache folder, and the names glint gives them.
//!
//! ```text
//! <image_cache_dir>/<image id>                    complete, published entries (the data)
//! <image_cache_dir>/meta/<image id>               each entry's record (see `record`)
//! <image_cache_dir>/incomplete/<image id>.<owner> data being written; never served
//! <image_cache_dir>/queued/<image id>             a prefetch waiting for any child
//! <image_cache_dir>/prefetching/<image id>.<owner> a prefetch claimed by one process
//! <image_cache_dir>/failed/<image id>             the backoff after a failed fill (`backoff`)
//! <image_cache_dir>/failed/.<image id>.<owner>    a marker being written
//! ```
//!
//! Every subfolder lives inside the cache folder so that the renames between them stay on one
//! filesystem, where rename(2) is atomic. Image ids and owner tokens are made of ASCII letters,
//! digits, `-` and `_` only ([`is_name_part`]), so a name can neither escape the folder nor be
//! mistaken for another.

use std::path::{Path, PathBuf};

/// The subfolders the cache creates, in the order `Cache::open` makes them.
pub(crate) const SUBFOLDERS: [&str; 5] = [META, INCOMPLETE, QUEUED, PREFETCHING, FAILED];

pub(crate) const META: &str = "meta";
pub(crate) const INCOMPLETE: &str = "incomplete";
pub(crate) const QUEUED: &str = "queued";
pub(crate) const PREFETCHING: &str = "prefetching";
pub(crate) const FAILED: &str = "failed";

/// The paths of one cache folder.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
}

impl Layout {
    pub(crate) fn data(&self, image_id: &str) -> PathBuf {
        self.root.join(image_id)
    }

    pub(crate) fn record(&self, image_id: &str) -> PathBuf {
        self.root.join(META).join(image_id)
    }

    /// A temporary name for a record being rewritten by `owner`. Each call gets its own (a
    /// per-process sequence number goes with the image id): several worker threads of one
    /// process rewrite the same record when they serve the same image at once, and sharing one
    /// temporary file would interleave their writes.
    pub(crate) fn record_temporary(&self, image_id: &str, owner: &str) -> PathBuf {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root
            .join(META)
            .join(format!(".{image_id}-{n}.{owner}"))
    }

    pub(crate) fn incomplete(&self, image_id: &str, owner: &str) -> PathBuf {
        self.root
            .join(INCOMPLETE)
            .join(format!("{image_id}.{owner}"))
    }

    pub(crate) fn queued(&self, image_id: &str) -> PathBuf {
        self.root.join(QUEUED).join(image_id)
    }

    pub(crate) fn claimed(&self, image_id: &str, owner: &str) -> PathBuf {
        self.root
            .join(PREFETCHING)
            .join(format!("{image_id}.{owner}"))
    }

    pub(crate) fn failed(&self, image_id: &str) -> PathBuf {
        self.root.join(FAILED).join(image_id)
    }

    pub(crate) fn failed_temporary(&self, image_id: &str, owner: &str) -> PathBuf {
        self.root.join(FAILED).join(format!(".{image_id}.{owner}"))
    }

    pub(crate) fn folder(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// True for a non-empty string of ASCII letters, digits, `-` and `_`: what image ids (UUIDs)
/// and owner tokens are made of.
pub(crate) fn is_name_part(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Splits `<image id>.<owner>` (an incomplete entry or a claim), or None if `name` is not one.
pub(crate) fn parse_owned_name(name: &str) -> Option<(&str, &str)> {
    let (image_id, owner) = name.split_once('.')?;
    (is_name_part(image_id) && is_name_part(owner)).then_some((image_id, owner))
}

/// The file name of `path` as UTF-8, if it has one.
pub(crate) fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|name| name.to_str())
}
