//! [`CacheError`]: what can go wrong in the image cache. Every variant but the mismatch carries the
//! path and the step that failed, so a log line can be acted on. The cache's failures never reach
//! a client: a download falls back to the store, and the cache API answers 500 with the message.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a cache operation failed.
#[derive(Debug)]
pub enum CacheError {
    /// A filesystem call failed. `action` is the step, phrased to follow "cannot".
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The data copied from the store is not what the image records (size or hash): the store
    /// copy itself is damaged, or changed while it was read. Nothing was published.
    Mismatch { image_id: String, what: String },
    /// The fill was stopped because the process is draining; nothing was published.
    Stopped,
    /// Copying the image would leave less than the free-space reserve on the cache's filesystem
    /// (see `space`); nothing was published. `shared_with` lists the data directories on that
    /// filesystem, whose uploads the reserve protects.
    NoRoom {
        path: PathBuf,
        needed: u64,
        free: u64,
        reserve: u64,
        shared_with: Vec<PathBuf>,
    },
}

impl CacheError {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            CacheError::Mismatch { image_id, what } => write!(
                f,
                "the store's data of image {image_id} does not match the image: {what}"
            ),
            CacheError::Stopped => f.write_str("stopped because the process is draining"),
            CacheError::NoRoom {
                path,
                needed,
                free,
                reserve,
                shared_with,
            } => {
                write!(
                    f,
                    "not enough free space in {}: {needed} more bytes would leave less than the \
                     reserve of {reserve} bytes free ({free} bytes are free)",
                    path.display()
                )?;
                if !shared_with.is_empty() {
                    let dirs: Vec<String> = shared_with
                        .iter()
                        .map(|dir| dir.display().to_string())
                        .collect();
                    write!(
                        f,
                        "; the data directory {} is on the same filesystem and keeps that space \
                         for uploads",
                        dirs.join(", ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl Error for CacheError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CacheError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
