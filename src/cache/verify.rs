//! Checking an entry's data against the image's hash before it is served.
//!
//! # Performance
//!
//! A whole-file hash costs one read of the entry (from a fast local disk, often from the page
//! cache) before the first byte goes out, so verifying on every hit would double the I/O of
//! every cached download and delay its start by the time to hash it. Instead each process
//! remembers, per image, the [`Fingerprint`] of the file it last verified: device, inode, size,
//! modification and change times. A hit whose open file has the same fingerprint is served without
//! hashing again; any other hit (the first in this process, or after the file was rewritten,
//! truncated, replaced or touched in any way that moves its ctime, which no user can set back) is
//! hashed whole first. A new generation is new processes, so it verifies again.
//!
//! What this does not catch: corruption below the filesystem (bit rot, a bad disk) after a process
//! has verified the file. That process keeps serving it until the file changes or the process
//! ends; the client's own check of `Content-MD5`/`os_hash_value` is the last line of defence.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;

use crate::digest::{Algorithm, Digest};
use crate::store::HashKind;

/// How much of a file is read at a time while hashing it.
pub(crate) const HASH_CHUNK: usize = 256 * 1024;

/// What identifies one version of a file's content, short of reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl Fingerprint {
    pub(crate) fn of(file: &File) -> io::Result<Fingerprint> {
        let metadata = file.metadata()?;
        Ok(Fingerprint {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            changed_ns: i128::from(metadata.ctime()) * 1_000_000_000
                + i128::from(metadata.ctime_nsec()),
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

/// The hash an entry must have: the image's `os_hash_value` when it has one, else its md5
/// `checksum`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ExpectedHash {
    OsHash { kind: HashKind, value: String },
    Md5(String),
}

impl ExpectedHash {
    pub(crate) fn digester(&self) -> Digest {
        match self {
            ExpectedHash::OsHash { kind, .. } => Digest::new(kind.algorithm()),
            ExpectedHash::Md5(_) => Digest::new(Algorithm::Md5),
        }
    }

    /// None when `digest` matches, else a sentence naming both values.
    pub(crate) fn describe_mismatch(&self, digest: Digest) -> Option<String> {
        let (name, expected) = match self {
            ExpectedHash::OsHash { kind, value } => (kind.name(), value),
            ExpectedHash::Md5(value) => ("md5", value),
        };
        if digest.algorithm().name() != name {
            return Some("internal error: digest of another algorithm".to_string());
        }
        let Some(actual) = digest.finish() else {
            return Some(format!("{name} could not be computed (libcrypto failed)"));
        };
        (!expected.eq_ignore_ascii_case(&actual))
            .then(|| format!("{name} is {actual}, the image records {expected}"))
    }
}

/// Hashes `file` whole from its start and leaves it positioned at its start again, ready to be
/// sent. Returns the digester and the number of bytes read.
pub(crate) fn hash_file(file: &mut File, expected: &ExpectedHash) -> io::Result<(Digest, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut digester = expected.digester();
    let mut buffer = vec![0u8; HASH_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        digester.update(&buffer[..n]);
        total += n as u64;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok((digester, total))
}
