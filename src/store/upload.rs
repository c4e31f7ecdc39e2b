//! [`Upload`]: one image's data on its way to disk, from the temporary file to the final name.
//!
//! Each chunk is read from the socket into a [`ChunkBuffer`] the upload lends out, then
//! written straight to the file and hashed (md5 for `checksum`, the configured algorithm for
//! `os_hash_value`) by the upload's two hashing threads, which share the buffer (no copy) over
//! bounded channels; buffers the threads are done with are lent out again, so memory stays at a
//! few chunks, whatever the image size.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{HashKind, StoreError, Stored};
use crate::digest::{Algorithm, Digest};

/// Mode of the temporary file while it is being written: private until `finish` applies the
/// configured permissions, so nobody reads a partial image.
const TEMPORARY_MODE: u32 = 0o600;

/// An upload in progress. Dropping it without [`Upload::finish`] removes the temporary file, so
/// a failed or abandoned upload leaves nothing behind (a crash can, and
/// [`super::Store::remove_abandoned_temp_files`] cleans up after it).
pub struct Upload {
    /// The temporary file, open for writing. Writes go straight to it, unbuffered.
    file: File,
    /// `<datadir>/.<image id>.<owner>.tmp`: where the data lives until `finish`.
    temporary: PathBuf,
    /// `<datadir>/<image id>`: where `finish` renames it.
    final_path: PathBuf,
    /// The chosen data directory, fsynced after the rename so that the new name is durable.
    datadir: PathBuf,
    /// The size the client announced, checked by `finish`.
    declared_size: Option<u64>,
    /// `image_size_cap`: `write` refuses to go beyond it.
    size_cap: u64,
    /// The mode `finish` gives the file.
    file_perm: u32,
    bytes_written: u64,
    /// Where the kernel has been asked to start writing the data back to disk (see
    /// [`WRITEBACK_WINDOW`]).
    written_back: u64,
    /// md5 and the os_hash, computed while the data is written.
    hashing: Hashing,
    /// The buffers handed to the hashing threads, oldest first: the threads hash in order, so
    /// once the oldest is ours alone again it is lent out for the next chunk (see
    /// [`Upload::buffer`]). At most a few: a thread is at most [`HASH_QUEUE_CHUNKS`] behind.
    in_flight: VecDeque<Arc<Vec<u8>>>,
    /// Set when a write failed: the file may then hold bytes that neither `bytes_written` nor the
    /// hashes account for, so the upload can only be dropped.
    failed: bool,
    /// True until the rename; while it holds, `Drop` removes the temporary file.
    temporary_exists: bool,
}

impl Upload {
    /// A buffer of [`UPLOAD_BUFFER`] bytes to read the next chunk into, for
    /// [`Upload::write_buffer`]: one the hashing threads are done with if there is one, else a
    /// new one.
    pub fn buffer(&mut self) -> ChunkBuffer {
        let oldest_is_free = self
            .in_flight
            .front()
            .is_some_and(|oldest| Arc::strong_count(oldest) == 1);
        if oldest_is_free {
            if let Some(Ok(data)) = self.in_flight.pop_front().map(Arc::try_unwrap) {
                return ChunkBuffer { data };
            }
        }
        ChunkBuffer {
            data: vec![0; UPLOAD_BUFFER],
        }
    }

    /// Writes the first `len` bytes of `buffer` (all of it if it holds fewer), hashing them on
    /// the hashing threads while the file write goes on: the bytes read from the socket are
    /// the bytes hashed and written, with no copy in between.
    ///
    /// Errors: [`StoreError::SizeCapExceeded`] when the chunk would take the data past the cap
    /// (nothing of it is written), [`StoreError::Full`] on ENOSPC or EDQUOT, [`StoreError::Io`].
    /// After an error the upload cannot be finished.
    pub fn write_buffer(&mut self, buffer: ChunkBuffer, len: usize) -> Result<(), StoreError> {
        if self.failed {
            return Err(self.failed_error());
        }
        let len = len.min(buffer.data.len());
        let total = self.bytes_written.saturating_add(len as u64);
        if total > self.size_cap {
            self.failed = true;
            return Err(StoreError::SizeCapExceeded { cap: self.size_cap });
        }
        let chunk = Arc::new(buffer.data);
        let data = chunk.get(..len).unwrap_or_default();
        // Handed to the hashing threads first, so hashing this chunk overlaps with writing it.
        self.hashing.update(&chunk, len);
        let written = self.file.write_all(data);
        self.in_flight.push_back(chunk);
        if let Err(error) = written {
            self.failed = true;
            return Err(StoreError::from_io(
                &self.temporary,
                "write image data to",
                error,
            ));
        }
        self.bytes_written = total;
        if total - self.written_back >= WRITEBACK_WINDOW {
            self.start_writeback();
        }
        Ok(())
    }

    /// Writes `data`, hashing it in the same pass: [`Upload::write_buffer`] for data that is
    /// already in memory elsewhere (one copy into the upload's buffers).
    ///
    /// Errors: as [`Upload::write_buffer`]; past the cap, nothing of `data` is written.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.failed {
            return Err(self.failed_error());
        }
        if self.bytes_written.saturating_add(data.len() as u64) > self.size_cap {
            self.failed = true;
            return Err(StoreError::SizeCapExceeded { cap: self.size_cap });
        }
        for piece in data.chunks(UPLOAD_BUFFER) {
            let mut buffer = self.buffer();
            // Every buffer is UPLOAD_BUFFER bytes, so `len` is the whole piece.
            let len = piece.len().min(buffer.data.len());
            if let (Some(to), Some(from)) = (buffer.data.get_mut(..len), piece.get(..len)) {
                to.copy_from_slice(from);
            }
            self.write_buffer(buffer, len)?;
        }
        Ok(())
    }

    /// Asks the kernel to start writing back what was written since the last call, without
    /// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Without it the dirty pages
    /// of a whole image wait for `finish`'s fsync, which then took about a third of a 1 GiB
    /// upload's time; with it the disk writes while the upload goes on, and the fsync finds
    /// little left. Advisory: a failure here is seen by the fsync, which reports it.
    fn start_writeback(&mut self) {
        let length = self.bytes_written - self.written_back;
        // SAFETY: sync_file_range(2) on the open file's descriptor; it reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                self.written_back as libc::off64_t,
                length as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.written_back = self.bytes_written;
    }

    /// How many buffers the hashing threads may still hold (for the tests of the bound).
    #[cfg(test)]
    pub(super) fn buffers_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Completes the upload: checks the size against the declared size, applies the
    /// permissions, fsyncs the file, renames it to `<datadir>/<image id>` and fsyncs the
    /// directory. Only then does the data exist under its final name; on any error it does not,
    /// and the temporary file is gone too.
    ///
    /// A file already under the final name is replaced: the registry, not the filesystem, says
    /// whether an image has data, and such a file can only be left from a crash between this
    /// rename and the registry update.
    pub fn finish(mut self) -> Result<Stored, StoreError> {
        if self.failed {
            return Err(self.failed_error());
        }
        if let Some(declared) = self.declared_size {
            if declared != self.bytes_written {
                return Err(StoreError::SizeMismatch {
                    declared,
                    actual: self.bytes_written,
                });
            }
        }
        // The digests before the name: an upload whose hashes could not be computed must never
        // appear under its final name.
        let hashing = std::mem::replace(&mut self.hashing, Hashing::Done);
        let Some((checksum, hash_algo, hash_value)) = hashing.finish() else {
            return Err(StoreError::Io {
                path: self.temporary.clone(),
                action: "hash",
                source: io::Error::other(
                    "the digests of the upload could not be computed (a hashing thread or \
                     libcrypto failed)",
                ),
            });
        };
        // fchmod rather than relying on the mode given at creation: that one is filtered by the
        // umask, and the configured permissions are meant exactly.
        self.file
            .set_permissions(Permissions::from_mode(self.file_perm))
            .map_err(|error| {
                StoreError::from_io(&self.temporary, "set the permissions of", error)
            })?;
        // The data must be on disk before the name points at it; otherwise a crash after the
        // rename could leave a complete-looking file with missing blocks.
        self.file
            .sync_all()
            .map_err(|error| StoreError::from_io(&self.temporary, "fsync", error))?;
        fs::rename(&self.temporary, &self.final_path).map_err(|error| {
            StoreError::from_io(&self.final_path, "rename the temporary file to", error)
        })?;
        self.temporary_exists = false;
        if let Err(error) = sync_directory(&self.datadir) {
            // The caller will treat the upload as failed, so the file must not stay: it would be
            // data no image points at.
            let _ = fs::remove_file(&self.final_path);
            return Err(StoreError::from_io(
                &self.datadir,
                "fsync data directory",
                error,
            ));
        }
        Ok(Stored {
            location: self.final_path.to_string_lossy().into_owned(),
            size: self.bytes_written,
            checksum,
            hash_algo,
            hash_value,
        })
    }

    /// Creates the temporary file for `image_id` in `datadir`.
    ///
    /// The temporary lives in the data directory itself, not in /tmp: rename(2) is atomic only
    /// within one filesystem, and the free space that chose the directory is the space the data
    /// will use. It is created with O_EXCL so that two uploads can never write into one file.
    pub(crate) fn create(
        datadir: &Path,
        image_id: &str,
        owner: &str,
        declared_size: Option<u64>,
        size_cap: u64,
        file_perm: u32,
        hash_kind: HashKind,
    ) -> Result<Upload, StoreError> {
        let temporary = datadir.join(super::abandoned::temporary_name(image_id, owner));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(TEMPORARY_MODE)
            .open(&temporary)
            .map_err(|error| StoreError::from_io(&temporary, "create temporary file", error))?;
        Ok(Upload {
            file,
            temporary,
            final_path: datadir.join(image_id),
            datadir: datadir.to_path_buf(),
            declared_size,
            size_cap,
            file_perm,
            bytes_written: 0,
            written_back: 0,
            hashing: Hashing::start(hash_kind),
            in_flight: VecDeque::new(),
            failed: false,
            temporary_exists: true,
        })
    }

    /// The path of the temporary file (for tests and log lines).
    pub fn temporary_path(&self) -> &Path {
        &self.temporary
    }

    fn failed_error(&self) -> StoreError {
        StoreError::Io {
            path: self.temporary.clone(),
            action: "continue writing",
            source: io::Error::other("an earlier write to this upload failed"),
        }
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Upload")
            .field("temporary", &self.temporary)
            .field("declared_size", &self.declared_size)
            .field("bytes_written", &self.bytes_written)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.temporary_exists {
            if let Err(error) = fs::remove_file(&self.temporary) {
                log::warn!(
                    "cannot remove temporary image file {}: {error}",
                    self.temporary.display()
                );
            }
        }
    }
}

/// fsyncs a directory, making the names created or removed in it durable.
pub(crate) fn sync_directory(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// The size of the buffers an upload lends out ([`Upload::buffer`]), so the most one socket
/// read, one file write and one hashing step take at a time. Large enough that a 1 GiB upload
/// costs a few thousand of each (fewer system calls and thread wake-ups than 64 KiB chunks),
/// small enough that the few in flight stay around a megabyte.
pub const UPLOAD_BUFFER: usize = 256 * 1024;

/// A buffer lent out by [`Upload::buffer`] to read the next chunk into; back to the upload
/// through [`Upload::write_buffer`].
#[derive(Debug)]
pub struct ChunkBuffer {
    data: Vec<u8>,
}

impl ChunkBuffer {
    /// Where to read into: [`UPLOAD_BUFFER`] bytes.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

/// How much written data may wait in the page cache before the upload asks the kernel to
/// write it back (see [`Upload::start_writeback`]).
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// How many chunks may wait for a hashing thread; the writer blocks when it is this far
/// ahead of the slower one, so memory stays at a few chunks whatever the image size.
pub(super) const HASH_QUEUE_CHUNKS: usize = 4;

/// md5 (`checksum`) and the configured os_hash of an upload. Each digest costs more CPU per
/// byte than receiving and writing the data, so each runs on a thread of its own, fed the same
/// chunks (one copy, shared) over a bounded channel: an upload then goes at about the rate of
/// the slower digest (sha512) instead of both in series, as issue 13 part 2 asks (the writer,
/// md5 and sha512 share two cores: `scripts/bench-data` measures it). The digests run in
/// OpenSSL's libcrypto where the system has it (`crate::digest`). If a thread cannot be
/// started the hashes are computed inline, slower but the same.
enum Hashing {
    Threaded {
        /// To the md5 thread and to the os_hash thread; `None` once `finish` closed them.
        chunks: Option<[ChunkSender; 2]>,
        md5: Option<std::thread::JoinHandle<Digest>>,
        hash: Option<std::thread::JoinHandle<Digest>>,
    },
    /// md5 and the os_hash, on the writer's thread; `None` once `finish` took them.
    Inline(Option<(Digest, Digest)>),
    /// A hashing thread is gone (it panicked): the digests cannot be trusted.
    Broken,
    /// `finish` has taken the digests.
    Done,
}

/// Where an upload sends its chunks to one hashing thread: a shared buffer and how many of its
/// bytes are data.
type ChunkSender = crossbeam_channel::Sender<(Arc<Vec<u8>>, usize)>;

/// Starts a thread that feeds every chunk it receives to `digest` and returns it at the end.
fn hashing_thread(
    name: &str,
    mut digest: Digest,
) -> std::io::Result<(ChunkSender, std::thread::JoinHandle<Digest>)> {
    let (sender, receiver) = crossbeam_channel::bounded(HASH_QUEUE_CHUNKS);
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            for (chunk, len) in receiver {
                let chunk: Arc<Vec<u8>> = chunk;
                digest.update(chunk.get(..len).unwrap_or_default());
            }
            digest
        })?;
    Ok((sender, thread))
}

impl Hashing {
    fn start(kind: HashKind) -> Hashing {
        let digests = || (Digest::new(Algorithm::Md5), Digest::new(kind.algorithm()));
        let (md5, hash) = digests();
        let md5 = hashing_thread("upload-md5", md5);
        let hash = hashing_thread("upload-hash", hash);
        match (md5, hash) {
            (Ok((to_md5, md5)), Ok((to_hash, hash))) => Hashing::Threaded {
                chunks: Some([to_md5, to_hash]),
                md5: Some(md5),
                hash: Some(hash),
            },
            // A thread that did start ends when its sender, dropped here, closes its channel.
            (Err(error), _) | (_, Err(error)) => {
                log::warn!("cannot start a hashing thread ({error}); hashing inline");
                Hashing::Inline(Some(digests()))
            }
        }
    }

    /// Hashes the first `len` bytes of `chunk` (`len` at most its length).
    fn update(&mut self, chunk: &Arc<Vec<u8>>, len: usize) {
        let sent = match self {
            Hashing::Threaded {
                chunks: Some(chunks),
                ..
            } => chunks
                .iter()
                .all(|sender| sender.send((Arc::clone(chunk), len)).is_ok()),
            Hashing::Inline(Some((md5, hash))) => {
                let data = chunk.get(..len).unwrap_or_default();
                md5.update(data);
                hash.update(data);
                true
            }
            _ => true,
        };
        // A thread stops early only if it panicked; then nothing it computes counts.
        if !sent {
            *self = Hashing::Broken;
        }
    }

    /// `(checksum, os_hash_algo, os_hash_value)`, or `None` when the digests cannot be trusted
    /// (a hashing thread failed, or libcrypto did).
    fn finish(mut self) -> Option<(String, &'static str, String)> {
        let (md5, hash) = match &mut self {
            Hashing::Threaded { chunks, md5, hash } => {
                chunks.take();
                let md5 = md5.take().map(|thread| thread.join());
                let hash = hash.take().map(|thread| thread.join());
                match (md5, hash) {
                    (Some(Ok(md5)), Some(Ok(hash))) => (md5, hash),
                    _ => return None,
                }
            }
            Hashing::Inline(digests) => digests.take()?,
            Hashing::Broken | Hashing::Done => return None,
        };
        let algorithm = hash.algorithm().name();
        Some((md5.finish()?, algorithm, hash.finish()?))
    }
}

impl Drop for Hashing {
    /// An abandoned upload stops its threads (dropping the senders ends their loops) and waits
    /// for them, so no thread outlives its upload.
    fn drop(&mut self) {
        if let Hashing::Threaded { chunks, md5, hash } = self {
            chunks.take();
            if let Some(thread) = md5.take() {
                let _ = thread.join();
            }
            if let Some(thread) = hash.take() {
                let _ = thread.join();
            }
        }
    }
}
