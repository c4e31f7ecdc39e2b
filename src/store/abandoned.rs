//! Temporary file names, and the sweep that removes the temporary files of uploads whose process
//! is gone.
//!
//! An upload writes `.<image id>.<owner>.tmp` in its data directory (see [`super::Upload`]). The
//! leading dot keeps it out of a casual `ls`; the image id says which image it was; the owner
//! token ([`super::owner_token`]) says which process wrote it, so that a sweep can tell a crashed
//! upload from one that is still running in another child.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".tmp";

/// The temporary file name of an upload. Both parts must be free of `.` and `/`
/// ([`is_name_part`]), which keeps the name parseable and inside the directory.
pub(crate) fn temporary_name(image_id: &str, owner: &str) -> String {
    debug_assert!(is_name_part(image_id) && is_name_part(owner));
    format!(".{image_id}.{owner}{SUFFIX}")
}

/// Splits a temporary file name into (image id, owner), or None if `name` is not one.
pub(crate) fn parse_temporary_name(name: &str) -> Option<(&str, &str)> {
    let inner = name.strip_prefix('.')?.strip_suffix(SUFFIX)?;
    let (image_id, owner) = inner.split_once('.')?;
    (is_name_part(image_id) && is_name_part(owner)).then_some((image_id, owner))
}

/// True for a non-empty string of ASCII letters, digits, `-` and `_`: what a UUID and an owner
/// token are made of, and nothing that could escape a directory or confuse the parser.
pub(crate) fn is_name_part(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Removes, in each of `dirs`, the temporary files whose owner `is_alive` says is gone, and
/// returns their paths. Failures are logged and skipped: a sweep is housekeeping and must not stop
/// the caller. A directory that does not exist (an old data directory since removed) is skipped
/// quietly.
pub(crate) fn sweep<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
    is_alive: impl Fn(&str) -> bool,
) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for dir in dirs {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => {
                log::warn!(
                    "cannot list data directory {} to remove abandoned uploads: {error}",
                    dir.display()
                );
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((_, owner)) = name.to_str().and_then(parse_temporary_name) else {
                continue;
            };
            if is_alive(owner) {
                continue;
            }
            // Only regular files: a directory or symlink with this name is not ours.
            if !entry.file_type().is_ok_and(|file_type| file_type.is_file()) {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => log::warn!(
                    "cannot remove abandoned temporary file {}: {error}",
                    path.display()
                ),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f0e8a9c-7d3b-4f1e-9a2c-1b2c3d4e5f60";

    #[test]
    fn temporary_name_round_trips() {
        let name = temporary_name(ID, "4242-1234567");
        assert_eq!(name, format!(".{ID}.4242-1234567.tmp"));
        assert_eq!(parse_temporary_name(&name), Some((ID, "4242-1234567")));
    }

    #[test]
    fn other_names_are_not_temporary_files() {
        for name in [
            ID,
            ".tmp",
            "..tmp",
            &format!(".{ID}.tmp"),
            &format!(".{ID}..tmp"),
            &format!("{ID}.1-2.tmp"),
            &format!(".{ID}.1-2.tmp.x"),
            &format!(".{ID}.1.2.tmp"),
            ".status.json.4242.tmp.x",
        ] {
            assert_eq!(parse_temporary_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn name_parts_exclude_separators() {
        assert!(is_name_part(ID));
        assert!(is_name_part("4242-1234567"));
        for text in ["", "a.b", "a/b", "..", "a b", "é"] {
            assert!(!is_name_part(text), "{text:?}");
        }
    }
}
