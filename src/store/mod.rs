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

mod owner;
pub mod placement;

pub use owner::{owner_alive, owner_token};
