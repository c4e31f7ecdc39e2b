//! `--check-config`'s check that the server will be able to use every directory its config
//! names: the data directories, the database's folder, the image cache (when the flavor uses
//! one), the folders of `log_file`, `access_log_file`, `pid_file` and `status_file`.
//!
//! Each must exist as a directory the checking user can write in and search (`faccessat` with
//! `AT_EACCESS`, so the effective ids count, and a read-only mount fails as it would for the
//! server), or else be creatable: its nearest existing ancestor is a directory that user can
//! write in and search. The server creates missing ones at start (`mkdir -p`), so that is enough.
//!
//! # Which user
//!
//! The user running `--check-config`: the check cannot know who the server will run as, and
//! asking root's view would pass everything. So the init script runs its check (at `start`,
//! `reload` and `configtest`) as `$GLINT_USER` through setpriv, as it runs the server, and an
//! operator checks by hand with `sudo -u glint glint-api --check-config`. Run as root, the check
//! says so ([`root_notice`]): root can write almost anywhere, so it proves little.
//!
//! This module reads the filesystem and changes nothing; it does not check the files in the
//! directories (a database file owned by another user, say): the server's start does.

use crate::registry::Database;
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::unistd::{AccessFlags, Uid, User};

use crate::config::Config;

/// Every directory `config` names, with the option that names it, in the order the options
/// table lists them.
pub fn named_directories(config: &Config) -> Vec<(String, PathBuf)> {
    let mut named: Vec<(String, PathBuf)> = Vec::new();
    let folder_of = |path: &Path| path.parent().map(Path::to_path_buf);
    named.extend(folder_of(&config.pid_file).map(|dir| ("[DEFAULT] pid_file".to_string(), dir)));
    named.extend(
        folder_of(&config.status_file).map(|dir| ("[DEFAULT] status_file".to_string(), dir)),
    );
    if let Some(log_file) = &config.log_file {
        named.extend(folder_of(log_file).map(|dir| ("[DEFAULT] log_file".to_string(), dir)));
    }
    if let Some(access_log_file) = &config.access_log_file {
        named.extend(
            folder_of(access_log_file).map(|dir| ("[DEFAULT] access_log_file".to_string(), dir)),
        );
    }
    // One entry is `filesystem_store_datadir` or a single `filesystem_store_datadirs` line;
    // the loader keeps no trace of which, and the first is by far the common one.
    let datadir_option = if config.datadirs.len() > 1 {
        "[glance_store] filesystem_store_datadirs"
    } else {
        "[glance_store] filesystem_store_datadir"
    };
    match &config.backends {
        // With several stores `[glance_store]`'s folders hold nothing: each backend's do.
        Some(backends) => {
            for backend in &backends.list {
                for datadir in &backend.datadirs {
                    named.push((
                        format!("[{}] filesystem_store_datadir(s)", backend.id),
                        datadir.path.clone(),
                    ));
                }
            }
        }
        None => {
            for datadir in &config.datadirs {
                named.push((datadir_option.to_string(), datadir.path.clone()));
            }
        }
    }
    if let Database::Sqlite(path) = &config.database {
        named.extend(folder_of(path).map(|dir| ("[database] connection".to_string(), dir)));
    }
    if !config.import_methods.is_empty() {
        named.push((
            "[DEFAULT] node_staging_uri".to_string(),
            config.staging_dir.clone(),
        ));
    }
    if config.flavor.uses_cache() {
        named.push((
            "[image_cache] image_cache_dir".to_string(),
            config.image_cache_dir.clone(),
        ));
    }
    named
}

/// Checks every directory `config` names for this process's effective user. Returns one line
/// per directory that will not do: the option, the path, what is wrong and what to do.
pub fn check(config: &Config) -> Vec<String> {
    let user = user_name();
    named_directories(config)
        .into_iter()
        .filter_map(|(option, dir)| {
            check_directory(&dir)
                .err()
                .map(|failure| format!("{option}: {}", failure.describe(&dir, &user)))
        })
        .collect()
}

/// Who the checks were made for: `name (uid N)`, or `uid N` without a passwd entry.
pub fn user_description() -> String {
    let uid = Uid::effective();
    match User::from_uid(uid) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// What `--check-config` says when run as root, whose view of the directories proves nothing
/// for the service's user; `None` for any other user.
pub fn root_notice() -> Option<String> {
    Uid::effective().is_root().then(|| {
        "note: the directories were checked as root, who can write in almost any directory, so \
         this proves nothing for the user the server runs as; run the check as that user \
         (`sudo -u glint glint-api --check-config`, or the init script's configtest)"
            .to_string()
    })
}

/// The effective user's name for `chown`, or its uid without a passwd entry.
fn user_name() -> String {
    let uid = Uid::effective();
    match User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// Why a directory will not do.
#[derive(Debug)]
enum Failure {
    /// It exists and is not a directory.
    NotADirectory,
    /// It exists; the user cannot write in it or search it.
    NotWritable,
    /// It is missing, and its nearest existing ancestor is not a directory.
    UnderAFile(PathBuf),
    /// It is missing, and the user cannot write in or search its nearest existing ancestor.
    CannotCreate(PathBuf),
    /// It or an ancestor cannot be looked at (EACCES on the way, say).
    Unreachable(PathBuf, io::Error),
}

impl Failure {
    fn describe(&self, dir: &Path, user: &str) -> String {
        let dir = dir.display();
        match self {
            Failure::NotADirectory => {
                format!("{dir} is not a directory; remove it or name a directory")
            }
            Failure::NotWritable => format!(
                "user {user} cannot write in {dir}; run `chown {user} {dir}` (or name a directory {user} can write in)"
            ),
            Failure::UnderAFile(file) => format!(
                "{dir} cannot be created: {} is not a directory; name a path under a directory",
                file.display()
            ),
            Failure::CannotCreate(ancestor) => format!(
                "{dir} does not exist and user {user} cannot create it (cannot write in {}); run `install -d -o {user} {dir}`",
                ancestor.display()
            ),
            Failure::Unreachable(path, error) => format!(
                "cannot look at {}: {error}; user {user} needs search (x) permission on every folder above {dir}",
                path.display()
            ),
        }
    }
}

fn check_directory(dir: &Path) -> Result<(), Failure> {
    let mut candidate = dir;
    loop {
        match std::fs::metadata(candidate) {
            Ok(metadata) if candidate == dir => {
                if !metadata.is_dir() {
                    return Err(Failure::NotADirectory);
                }
                return writable(dir).then_some(()).ok_or(Failure::NotWritable);
            }
            Ok(metadata) => {
                if !metadata.is_dir() {
                    return Err(Failure::UnderAFile(candidate.to_path_buf()));
                }
                return writable(candidate)
                    .then_some(())
                    .ok_or_else(|| Failure::CannotCreate(candidate.to_path_buf()));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                candidate = match candidate.parent() {
                    Some(parent) => parent,
                    // Paths are absolute, and `/` exists.
                    None => return Err(Failure::Unreachable(dir.to_path_buf(), error)),
                };
            }
            Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => {
                // A file on the way: find which ancestor it is.
                candidate = candidate.parent().unwrap_or(candidate);
                if candidate.is_file() {
                    return Err(Failure::UnderAFile(candidate.to_path_buf()));
                }
            }
            Err(error) => return Err(Failure::Unreachable(candidate.to_path_buf(), error)),
        }
    }
}

/// Whether the effective user may create entries in `dir`: write and search permission.
fn writable(dir: &Path) -> bool {
    nix::unistd::faccessat(
        None,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        AtFlags::AT_EACCESS,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_judged_by_its_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_directory(dir.path()).is_ok());
        assert!(check_directory(&dir.path().join("a/b/c")).is_ok());
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            check_directory(&file),
            Err(Failure::NotADirectory)
        ));
        match check_directory(&file.join("a/b")) {
            Err(Failure::UnderAFile(found)) => assert_eq!(found, file),
            other => panic!("{other:?}"),
        }
    }
}
