//! The master's state files (the pid file and the status file): written so that a reader sees
//! the old content or the new, never half, and so that nobody else can redirect the write.
//!
//! # Hazards
//!
//! A state file is written to a temporary file in its own directory, then renamed over the
//! target (rename(2) is atomic only within one filesystem). If another user can write that
//! directory, a symlink planted at the temporary name would make a plain `open` write through it
//! into any file the master may write (issue 10, hole 7). So the temporary file is created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` (a planted link or file makes the create fail; the stale name
//! is unlinked first, which removes a link, never its target), with mode 0640; and a directory
//! that others may write without the sticky bit is refused outright ([`check_directory`]):
//! there, anyone could also replace the target itself between two writes.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The mode of a state file: the master's user reads and writes, its group reads.
pub const MODE: u32 = 0o640;

/// Writes `bytes` to `path` atomically, through a temporary file `temporary_name` in the same
/// directory (see the module doc).
pub fn write_atomically(path: &Path, temporary_name: &str, bytes: &[u8]) -> io::Result<()> {
    let temporary = path.with_file_name(temporary_name);
    // A name left by an earlier crash, or planted: unlink(2) removes the name itself.
    let _ = fs::remove_file(&temporary);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temporary)?;
        file.write_all(bytes)?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Refuses a directory for state files that users other than the owner may write, unless it
/// has the sticky bit (like /tmp): a message that says what to do.
pub fn check_directory(directory: &Path) -> Result<(), String> {
    let metadata = fs::metadata(directory)
        .map_err(|error| format!("cannot inspect {}: {error}", directory.display()))?;
    let mode = metadata.mode();
    let others_write = mode & 0o002 != 0;
    let sticky = mode & 0o1000 != 0;
    if others_write && !sticky {
        return Err(format!(
            "{} is writable by every user (mode {:04o}) and not sticky, so anyone could replace \
             the pid or status file there; use a directory only glint's user can write (e.g. \
             /run/glint, mode 0755), or chmod o-w or +t it",
            directory.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_symlink_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".state.tmp")).unwrap();
        let target = dir.path().join("state");
        write_atomically(&target, ".state.tmp", b"new").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777 & !MODE, 0);
    }

    #[test]
    fn a_world_writable_directory_is_refused_unless_sticky() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let error = check_directory(dir.path()).unwrap_err();
        assert!(
            error.contains("writable by every user (mode 0777)"),
            "{error}"
        );
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(check_directory(dir.path()), Ok(()));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_directory(dir.path()), Ok(()));
    }
}
