//! The change counter of a SQLite registry: one number in a small file beside the database
//! (`<database>-changes`), mapped shared by every process that opens the registry, which every
//! write transaction moves while it holds the write lock. A reader that took the counter before
//! it read a record, and finds the same counter later, knows that nothing was committed since:
//! what lets a child answer `GET /v2/images/{id}` from memory (`api::shown`) and never show
//! what the database no longer holds, whichever child or generation wrote (issue 13 part 3).
//!
//! The protocol (the counter only grows):
//! - A write, still holding SQLite's write lock, makes the counter odd and larger just before
//!   its COMMIT ([`Changes::writing`]), and even once the COMMIT returned
//!   ([`Changes::written`]). Writers are one at a time (the lock), so no commit can land while
//!   the counter is even and unmoved.
//! - A reader takes the counter ([`Changes::version`]) before it reads. An odd counter is no
//!   version: a write is committing, or its process died between the two steps; then nothing is
//!   kept in memory until the next write transaction ends, which each child's maintenance pass
//!   makes within its period (`Registry::settle_version`).
//! - A write transaction that changed no row leaves an even counter alone (`registry::commit`):
//!   nothing a reader kept went stale.
//! - What was read at version `v` is current while the counter is still `v`.
//!
//! Only glint's writes move it: an edit of the database by another program (the `sqlite3`
//! shell) is seen by a cached `GET /v2/images/{id}` after glint's next write or a reload. A
//! process that cannot map the counter does not open the registry, so every glint write moves
//! it. PostgreSQL registries have none: other nodes write there.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The counter's bytes, mapped.
const SIZE: usize = std::mem::size_of::<u64>();

/// The shared counter of one database file, mapped in this process.
pub struct Changes {
    /// The start of a shared mapping of [`SIZE`] bytes (page-aligned, so aligned for a u64),
    /// unmapped on drop.
    counter: *mut u64,
}

// The mapping is only ever touched through `AtomicU64`.
unsafe impl Send for Changes {}
unsafe impl Sync for Changes {}

impl Changes {
    /// The counter file of the database at `database`.
    pub fn path(database: &Path) -> PathBuf {
        let mut path = database.as_os_str().to_owned();
        path.push("-changes");
        PathBuf::from(path)
    }

    /// Maps the counter file of `database`, creating it (mode 0600, as the database's owner
    /// alone writes it) if it is missing.
    pub fn open(database: &Path) -> io::Result<Changes> {
        let path = Changes::path(database);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        // Several children may do this together: growing to SIZE never cuts a counter that
        // another already wrote.
        if file.metadata()?.len() < SIZE as u64 {
            file.set_len(SIZE as u64)?;
        }
        // SAFETY: a fresh shared mapping of an open file at least SIZE bytes long; the file may
        // be closed once it is mapped.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Changes {
            counter: address.cast(),
        })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: `counter` is aligned and mapped for as long as `self` lives, and every
        // process touches it only atomically.
        unsafe { AtomicU64::from_ptr(self.counter) }
    }

    /// The counter when no write is committing, to take before a read whose result is kept.
    pub fn version(&self) -> Option<u64> {
        let value = self.counter().load(Ordering::SeqCst);
        value.is_multiple_of(2).then_some(value)
    }

    /// Moves the counter to a larger odd value, which it returns: call it holding the write
    /// lock, just before COMMIT.
    pub fn writing(&self) -> u64 {
        let previous = self
            .counter()
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |value| {
                Some((value | 1).wrapping_add(2))
            })
            .unwrap_or_else(|value| value);
        (previous | 1).wrapping_add(2)
    }

    /// Ends the write that [`Changes::writing`] began (`odd` is what it returned), once its
    /// COMMIT returned, whether or not it succeeded. When a later write already moved the
    /// counter on, that write ends it.
    pub fn written(&self, odd: u64) {
        let _ = self.counter().compare_exchange(
            odd,
            odd.wrapping_add(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe {
            libc::munmap(self.counter.cast(), SIZE);
        }
    }
}
