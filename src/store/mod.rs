//! The filesystem image store: where image data lives, following glance_store's `file` driver.
//!
//! Image data is one file per image, `<datadir>/<image id>`, in one of the configured data
//! directories (`filesystem_store_datadir`, or `filesystem_store_datadirs = PATH:PRIORITY`). The
//! store chooses the directory for each upload ([`placement`]), writes the data under a temporary
//! name while hashing it ([`Upload`]), and renames it into place when it is complete. The
//! registry records the resulting [`Stored::location`]; reads and deletes go by that location, so
//! data written under an older configuration stays readable after its directory leaves the list.
//!
//! The store does not know about images, statuses or HTTP: the API decides when an upload may
//! start and what each [`StoreError`] means to the client, and the registry decides whether an
//! image has data. It does not cache, and it does not read data back to verify it.
//!
//! # Filesystems
//!
//! - A file appears complete or not at all. Data is written to `.<image id>.<owner>.tmp` in the
//!   chosen data directory, fsynced, and renamed to its final name; the directory is fsynced
//!   after the rename. The temporary lives in the target directory because rename(2) is atomic
//!   only within one filesystem.
//! - A crash leaves the temporary file behind. Its name carries the owner token
//!   ([`owner_token`]: pid and process start time), and
//!   [`Store::remove_abandoned_temp_files`] removes those whose process is gone.
//! - Owner tokens are only meaningful on the host that made them. A data directory shared between
//!   hosts (NFS) makes another host's upload in progress look abandoned: on such a setup the
//!   `is_alive` given to the sweep must know the other hosts' processes, or the sweep must not run.
//! - Free space is `statvfs` `f_bavail * f_frsize`, read when the upload starts. It is a hint:
//!   concurrent uploads share it, so a write can still fail with ENOSPC or EDQUOT, and that
//!   is reported as [`StoreError::Full`] like "no directory fits".
//! - Unknown-size uploads (chunked, no `x-openstack-image-size`) go where the most space is at
//!   the highest priority; only `image_size_cap` bounds them.
//! - Files are created private (0600) and get `filesystem_store_file_perm` (0640 when 0) only when
//!   complete, so no partial image is ever readable by others, and no image is world-readable by
//!   default.
//!
//! # Concurrency
//!
//! [`Store`] is immutable after [`Store::open`] and shared between threads without locks. Several
//! worker processes use the same directories: uploads of different images never share a file,
//! and the temporary file is created with O_EXCL, so two uploads of the same image by one process
//! fail instead of interleaving. Preventing two uploads of one image is the registry's job (only a
//! `queued` image accepts data); if two processes race anyway, the last rename wins, and both files
//! were complete.
//!
//! # Compatibility
//!
//! The layout is glance_store's: a Glance deployment's data directory can be served as it is, and
//! locations are absolute paths (the API shows them as `file://` URLs). The temporary file name is
//! ours, and the sweep recognises nothing else, so it never touches files it did not write.

mod abandoned;
mod error;
mod owner;
pub mod placement;
mod set;
mod upload;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use error::StoreError;
pub use owner::{
    is_node_name, machine_instance, owner_alive, owner_alive_among, owner_token, set_node,
};
pub use set::Stores;
#[cfg(test)]
use upload::HASH_QUEUE_CHUNKS;
pub use upload::{ChunkBuffer, Upload, UPLOAD_BUFFER};

use placement::Candidate;

/// The file mode of complete image data when `file_perm` is 0.
pub const DEFAULT_FILE_PERM: u32 = 0o640;

/// What the store needs from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Data directories with their priority (higher preferred), in configuration order.
    /// At least one; the configuration guarantees it.
    pub datadirs: Vec<(PathBuf, i64)>,
    /// `filesystem_store_file_perm`: the mode of complete image data; 0 means 0o640.
    pub file_perm: u32,
    /// `image_size_cap` in bytes.
    pub size_cap: u64,
    /// `hashing_algorithm`, for `os_hash_value`.
    pub hash: HashKind,
}

/// The `os_hash_algo` choices glint supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    Sha256,
    Sha384,
    Sha512,
}

impl HashKind {
    /// The name Glance uses in `hashing_algorithm` and `os_hash_algo`.
    pub fn name(self) -> &'static str {
        self.algorithm().name()
    }

    /// The digest algorithm it names.
    pub fn algorithm(self) -> crate::digest::Algorithm {
        match self {
            HashKind::Sha256 => crate::digest::Algorithm::Sha256,
            HashKind::Sha384 => crate::digest::Algorithm::Sha384,
            HashKind::Sha512 => crate::digest::Algorithm::Sha512,
        }
    }

    /// The kind a `hashing_algorithm` value names, if glint supports it.
    pub fn from_name(name: &str) -> Option<HashKind> {
        [HashKind::Sha256, HashKind::Sha384, HashKind::Sha512]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// The outcome of a finished upload: what the registry records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The absolute path of the data file.
    pub location: String,
    pub size: u64,
    /// md5 of the data, lowercase hex (Glance's `checksum`).
    pub checksum: String,
    /// `os_hash_algo`.
    pub hash_algo: &'static str,
    /// `os_hash_value`, lowercase hex.
    pub hash_value: String,
}

/// The filesystem image store. Immutable once open; cheap to share (`Send + Sync`).
#[derive(Debug)]
pub struct Store {
    /// The settings, with every data directory made absolute, existing and writable.
    settings: Settings,
}

impl Store {
    /// Opens the store: creates missing data directories and checks that each is a directory
    /// this process can create files in. The error names the path and what to do.
    ///
    /// Relative data directories are made absolute against the current directory (symlinks are
    /// kept, not resolved), because locations recorded in the registry must not depend on it.
    pub fn open(settings: Settings) -> Result<Store, StoreError> {
        let mut settings = settings;
        for (datadir, _) in &mut settings.datadirs {
            *datadir = std::path::absolute(&*datadir).map_err(|error| {
                StoreError::from_io(&*datadir, "make the data directory path absolute", error)
            })?;
            check_datadir(datadir)?;
        }
        if settings.file_perm == 0 {
            settings.file_perm = DEFAULT_FILE_PERM;
        }
        Ok(Store { settings })
    }

    /// The settings in effect (data directories absolute, `file_perm` never 0).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Starts an upload of `image_id`'s data, `owner` being the caller's [`owner_token`].
    ///
    /// Refuses a declared size over `image_size_cap` ([`StoreError::TooLarge`]) before touching
    /// the disk, and answers [`StoreError::Full`] when no data directory has room (see
    /// [`placement::choose_datadir`]). The temporary file lives in the chosen directory as
    /// `.<image_id>.<owner>.tmp`.
    pub fn begin_upload(
        &self,
        image_id: &str,
        declared_size: Option<u64>,
        owner: &str,
    ) -> Result<Upload, StoreError> {
        self.begin_upload_hashed(image_id, declared_size, owner, self.settings.hash)
    }

    /// [`Store::begin_upload`] hashing with `hash` instead of `hashing_algorithm`: a copy of
    /// an image's data is checked against the `os_hash_value` the image has, which an older
    /// `hashing_algorithm` may have computed.
    pub fn begin_upload_hashed(
        &self,
        image_id: &str,
        declared_size: Option<u64>,
        owner: &str,
        hash: HashKind,
    ) -> Result<Upload, StoreError> {
        if let Some(size) = declared_size {
            if size > self.settings.size_cap {
                return Err(StoreError::TooLarge {
                    cap: self.settings.size_cap,
                });
            }
        }
        for (part, what) in [(image_id, "image id"), (owner, "owner token")] {
            if !abandoned::is_name_part(part) {
                return Err(StoreError::Io {
                    path: PathBuf::from(part),
                    action: "name a temporary file after",
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("the {what} may hold only letters, digits, '-' and '_'"),
                    ),
                });
            }
        }
        let datadir = self.choose_datadir(declared_size)?;
        Upload::create(
            datadir,
            image_id,
            owner,
            declared_size,
            self.settings.size_cap,
            self.settings.file_perm,
            hash,
        )
    }

    /// Opens image data for reading by its location, returning the file and its size.
    /// A missing file is [`StoreError::NotFound`].
    pub fn open_data(&self, location: &str) -> Result<(File, u64), StoreError> {
        let path = absolute_location(location)?;
        let file = File::open(path).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound,
            _ => StoreError::from_io(path, "open image data", error),
        })?;
        let metadata = file
            .metadata()
            .map_err(|error| StoreError::from_io(path, "stat image data", error))?;
        if !metadata.is_file() {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                action: "read image data from",
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        Ok((file, metadata.len()))
    }

    /// Removes image data. A file that is already gone is success, so a retried delete works.
    pub fn delete_data(&self, location: &str) -> Result<(), StoreError> {
        let path = absolute_location(location)?;
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(StoreError::from_io(path, "remove image data", error)),
        }
        // Without this a crash could bring the file back as data no image points at.
        if let Some(parent) = path.parent() {
            upload::sync_directory(parent)
                .map_err(|error| StoreError::from_io(parent, "fsync data directory", error))?;
        }
        Ok(())
    }

    /// Removes the temporary files of uploads whose owner `is_alive` says is gone, in every
    /// configured data directory, and returns their paths. Failures are logged, not returned.
    pub fn remove_abandoned_temp_files(&self, is_alive: impl Fn(&str) -> bool) -> Vec<PathBuf> {
        self.remove_abandoned_temp_files_in(&[], is_alive)
    }

    /// [`Store::remove_abandoned_temp_files`], also sweeping `extra_dirs`: the data directories
    /// of earlier configurations, where uploads that were in progress at a reload may have died.
    pub fn remove_abandoned_temp_files_in(
        &self,
        extra_dirs: &[PathBuf],
        is_alive: impl Fn(&str) -> bool,
    ) -> Vec<PathBuf> {
        let mut dirs: Vec<&Path> = Vec::new();
        let configured = self
            .settings
            .datadirs
            .iter()
            .map(|(path, _)| path.as_path());
        for dir in configured.chain(extra_dirs.iter().map(PathBuf::as_path)) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        abandoned::sweep(dirs, is_alive)
    }

    /// The data directory for an upload of `declared_size` bytes.
    ///
    /// A directory whose free space cannot be read is left out with a warning; if that leaves
    /// none, the first such error is returned rather than a misleading Full.
    fn choose_datadir(&self, declared_size: Option<u64>) -> Result<&Path, StoreError> {
        let mut candidates = Vec::new();
        let mut measured = Vec::new();
        let mut first_error = None;
        for (datadir, priority) in &self.settings.datadirs {
            match placement::free_space(datadir) {
                Ok(free) => {
                    candidates.push(Candidate {
                        priority: *priority,
                        free,
                    });
                    measured.push(datadir.as_path());
                }
                Err(error) => {
                    log::warn!(
                        "statvfs({}) failed, not storing images there: {error}",
                        datadir.display()
                    );
                    first_error.get_or_insert(StoreError::from_io(
                        datadir,
                        "read the free space of data directory",
                        error,
                    ));
                }
            }
        }
        match placement::choose_datadir(&candidates, declared_size) {
            Some(index) => Ok(measured[index]),
            None => Err(match (candidates.is_empty(), first_error) {
                (true, Some(error)) => error,
                _ => StoreError::Full,
            }),
        }
    }
}

/// Checks one data directory at open: creates it if missing, and makes sure it is a directory
/// this process can create files in, by creating and removing one. A mode check would not do:
/// it misses read-only mounts, ACLs and root's exemptions.
fn check_datadir(datadir: &Path) -> Result<(), StoreError> {
    const FIX: &str = "make it a directory the user glint runs as can write to, or change \
                       filesystem_store_datadir(s)";
    let with_fix = |error: io::Error| io::Error::new(error.kind(), format!("{error}; {FIX}"));
    let not_a_directory = || StoreError::Io {
        path: datadir.to_path_buf(),
        action: "use data directory",
        source: with_fix(io::Error::new(
            io::ErrorKind::NotADirectory,
            "it exists but is not a directory",
        )),
    };
    match fs::metadata(datadir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(not_a_directory()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(datadir).map_err(|error| StoreError::Io {
                path: datadir.to_path_buf(),
                action: "create data directory",
                source: with_fix(error),
            })?;
        }
        Err(error) => {
            return Err(StoreError::Io {
                path: datadir.to_path_buf(),
                action: "use data directory",
                source: with_fix(error),
            })
        }
    }
    // Named like an upload's temporary file so that, should we crash right here, the sweep
    // removes it.
    let probe = datadir.join(abandoned::temporary_name("write-probe", &owner_token()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|error| StoreError::Io {
            path: datadir.to_path_buf(),
            action: "create a file in data directory",
            source: with_fix(error),
        })?;
    fs::remove_file(&probe).map_err(|error| StoreError::Io {
        path: probe.clone(),
        action: "remove the write probe",
        source: with_fix(error),
    })
}

/// The path of a location, which must be absolute (it is what `finish` recorded).
fn absolute_location(location: &str) -> Result<&Path, StoreError> {
    let path = Path::new(location);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(StoreError::Io {
            path: path.to_path_buf(),
            action: "use image location",
            source: io::Error::new(io::ErrorKind::InvalidInput, "not an absolute path"),
        })
    }
}
