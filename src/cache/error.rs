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
