//! [`StoreError`]: everything the store can refuse or fail at, in the terms the API maps to HTTP
//! statuses (Full and the size caps to 413, a size mismatch to 400, NotFound to 404 or 204, Io to
//! 500). Every filesystem failure carries the path it concerns and the step that failed, so a log
//! line can be acted on without reading the code.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// No data directory has room: none had enough free space for the declared size, or the
    /// filesystem reported ENOSPC or EDQUOT while writing.
    Full,
    /// The declared size is over `image_size_cap`; nothing was written.
    TooLarge { cap: u64 },
    /// The data grew past `image_size_cap` while being written.
    SizeCapExceeded { cap: u64 },
    /// The data that arrived is not the size the client declared.
    SizeMismatch { declared: u64, actual: u64 },
    /// There is no data at the location.
    NotFound,
    /// A filesystem call failed. `action` is the step, phrased to follow "cannot".
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl StoreError {
    /// Wraps a filesystem error, turning "out of space" and "over quota" into [`StoreError::Full`]
    /// because the client can act on that (retry later, or elsewhere) and the API answers 413.
    pub(crate) fn from_io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: io::Error,
    ) -> Self {
        if is_out_of_space(&source) {
            return StoreError::Full;
        }
        StoreError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// True for ENOSPC and EDQUOT. NFS may report either only at fsync or close, so every step that
/// can flush data checks for them, not just write.
pub(crate) fn is_out_of_space(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

impl fmt::Display for StoreError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full => write!(
                formatter,
                "no image data directory has enough free space; free some space or add a \
                 filesystem_store_datadirs entry"
            ),
            StoreError::TooLarge { cap } => write!(
                formatter,
                "the declared image size exceeds image_size_cap ({cap} bytes)"
            ),
            StoreError::SizeCapExceeded { cap } => write!(
                formatter,
                "the image data exceeds image_size_cap ({cap} bytes)"
            ),
            StoreError::SizeMismatch { declared, actual } => write!(
                formatter,
                "the image was declared to be {declared} bytes but {actual} bytes arrived"
            ),
            StoreError::NotFound => write!(formatter, "the image data file does not exist"),
            StoreError::Io {
                path,
                action,
                source,
            } => write!(formatter, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_and_over_quota_become_full() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let error = StoreError::from_io("/x", "write", io::Error::from_raw_os_error(errno));
            assert!(
                matches!(error, StoreError::Full),
                "errno {errno}: {error:?}"
            );
        }
    }

    #[test]
    fn io_error_names_the_step_and_the_path() {
        let error = StoreError::from_io(
            "/srv/images/abc",
            "write image data to",
            io::Error::from_raw_os_error(libc::EIO),
        );
        let text = error.to_string();
        assert!(
            text.starts_with("cannot write image data to /srv/images/abc: "),
            "{text}"
        );
        assert!(error.source().is_some());
    }
}
