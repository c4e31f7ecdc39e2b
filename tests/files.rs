//! What glint writes on disk, from a local user's side: no file of metadata readable by other
//! users, and no state file written through a link someone else planted (issue 10, holes 7 and
//! 10).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::util::{self, Server, DEADLINE};

/// Every file glint created under `dir` (recursively), but the image data files, with its mode.
fn created_files(dir: &Path, out: &mut Vec<(String, u32)>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let metadata = fs::symlink_metadata(&path).unwrap();
        if metadata.is_dir() {
            out.push((path.display().to_string(), metadata.mode() & 0o7777));
            created_files(&path, out);
        } else {
            out.push((path.display().to_string(), metadata.mode() & 0o7777));
        }
    }
}

/// Issue 10, hole 10: under the usual umask 022, the database, its WAL and SHM, the cache's
/// records, the log, the status and pid files and every directory glint made are closed to other
/// users (mode & 0o007 == 0) and not group-writable; image files keep
/// `filesystem_store_file_perm` (0640).
#[test]
fn metadata_files_are_not_readable_by_other_users() {
    // SAFETY: umask(2) only sets this process's mask; the server inherits it at spawn.
    let previous = unsafe { libc::umask(0o022) };
    let server = Server::start(
        "\n[paste_deploy]\nflavor = caching\n\n[image_cache]\nimage_cache_dir = cache\n",
    );
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    make_every_kind_of_file(&server, "secret-name");
    let mut files = Vec::new();
    created_files(server.dir.path(), &mut files);
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "glint.sqlite",
        "glint.sqlite-wal",
        "glint-api.log",
        "glint-api.status.json",
    ] {
        assert!(
            names.iter().any(|name| name.ends_with(expected)),
            "{expected} not found among {names:?}"
        );
    }
    let open: Vec<String> = files
        .iter()
        .filter(|(name, _)| !name.ends_with("glint-api.conf") && !name.ends_with("stderr.log"))
        .filter(|(_, mode)| mode & 0o027 != 0)
        .map(|(name, mode)| format!("{name} {mode:04o}"))
        .collect();
    assert!(
        open.is_empty(),
        "readable by others or group-writable: {open:#?}"
    );
}

/// Issue 10, hole 10, the group: glint's files belong to the group it runs as (systemd `Group=`,
/// `start-stop-daemon --chuid USER:GROUP`), or, in a setgid directory, to that directory's group:
/// the kernel gives a new file its directory's group, and a new directory the setgid bit too.
/// This proves the second route. As root (CI), the server's directory is given gid 4242 (no such
/// group need exist) and mode 2750, with every path inside it (database, log, pid and status
/// files, data and cache directories); under umask 022, after an upload, a download and a cache
/// fill, every file and directory glint created has gid 4242, files are 0640 or tighter and
/// directories 2750 or tighter with the setgid bit kept (so what is created in them later
/// inherits the group too). Running as root, glint would otherwise create them with gid 0.
#[test]
fn files_take_the_group_of_a_setgid_directory() {
    const GROUP: u32 = 4242;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), None, Some(GROUP))
        .expect("chown the test directory to gid 4242 (these tests run as root)");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o2750)).unwrap();
    let metadata = fs::metadata(dir.path()).unwrap();
    assert_eq!(
        (metadata.gid(), metadata.mode() & 0o7777),
        (GROUP, 0o2750),
        "the setgid directory could not be set up"
    );
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        util::base_config(
            "\n[paste_deploy]\nflavor = caching\n\n[image_cache]\nimage_cache_dir = cache\n",
        ),
    )
    .unwrap();
    // SAFETY: umask(2) only sets this process's mask; the server inherits it at spawn.
    let previous = unsafe { libc::umask(0o022) };
    let server = Server::start_with(dir, config_path, &[]);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let id = make_every_kind_of_file(&server, "grouped");
    let mut found = Vec::new();
    collect_owned(server.dir.path(), &mut found);
    let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    for expected in [
        "glint.sqlite",
        "glint.sqlite-wal",
        "glint.sqlite-shm",
        "glint-api.log",
        "glint-api.pid",
        "glint-api.status.json",
        &format!("images/{id}"),
        &format!("cache/{id}"),
        "cache/meta",
    ] {
        assert!(
            names.iter().any(|name| name.ends_with(expected)),
            "{expected} not found among {names:?}"
        );
    }
    let wrong: Vec<String> = found
        .iter()
        .filter(|(name, _, _, _)| {
            !name.ends_with("glint-api.conf") && !name.ends_with("stderr.log")
        })
        .filter(|(_, is_dir, mode, gid)| {
            let allowed = if *is_dir { 0o2750 } else { 0o640 };
            *gid != GROUP || mode & !allowed != 0 || (*is_dir && mode & 0o2000 == 0)
        })
        .map(|(name, is_dir, mode, gid)| {
            format!(
                "{name}{} mode {mode:04o} gid {gid}",
                if *is_dir { "/" } else { "" }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "not gid {GROUP}, or looser than 0640 (files) and 2750 (directories): {wrong:#?}"
    );
    let listed: Vec<String> = found
        .iter()
        .map(|(name, _, mode, gid)| format!("{name} {mode:04o} {gid}"))
        .collect();
    eprintln!("all gid {GROUP}:\n{}", listed.join("\n"));
}

/// Every file and directory under `dir` (recursively): its path, whether it is a directory,
/// its mode bits and its group.
fn collect_owned(dir: &Path, out: &mut Vec<(String, bool, u32, u32)>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let metadata = fs::symlink_metadata(&path).unwrap();
        out.push((
            path.display().to_string(),
            metadata.is_dir(),
            metadata.mode() & 0o7777,
            metadata.gid(),
        ));
        if metadata.is_dir() {
            collect_owned(&path, out);
        }
    }
}

/// Issue 10, hole 7: a symlink planted at the pid file's temporary name, and at the status
/// file's, must not make the master write through it.
#[test]
fn state_files_are_never_written_through_a_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("glint-api.pid.tmp")).unwrap();
    let config_path = dir.path().join("glint-api.conf");
    fs::write(&config_path, util::base_config("")).unwrap();
    let server = Server::start_with(dir, config_path, &[]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(
        fs::read_to_string(server.path("glint-api.pid"))
            .unwrap()
            .trim(),
        server.master_pid.to_string()
    );
    let status_temporary =
        server.path(&format!(".glint-api.status.json.{}.tmp", server.master_pid));
    std::os::unix::fs::symlink(&victim, &status_temporary).unwrap();
    assert_eq!(server.reload()["outcome"], "succeeded");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(server.status()["generation"], 2);
}

/// Issue 10, hole 7: a pid directory every user may write, without the sticky bit, is refused
/// at start with what to do; nothing is started.
#[test]
fn a_pid_directory_writable_by_everyone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        util::base_config("pid_file = open/glint-api.pid\nstatus_file = glint-api.status.json"),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_glint-api"))
        .arg("--config-file")
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let log = fs::read_to_string(dir.path().join("glint-api.log")).unwrap_or_default();
    let said = format!("{}{log}", String::from_utf8_lossy(&output.stderr));
    assert!(
        said.contains("is writable by every user (mode 0777) and not sticky"),
        "{said}"
    );
    assert!(!open.join("glint-api.pid").exists());
}

/// Makes glint write every kind of file it has: an image (`name`) with data, downloaded whole so
/// that the cache stores it and its record. Returns the image's id.
fn make_every_kind_of_file(server: &Server, name: &str) -> String {
    let id = util::create_image_from(
        server.addr(),
        &format!(r#"{{"disk_format": "raw", "container_format": "bare", "name": "{name}"}}"#),
    );
    let path = format!("/v2/images/{id}/file");
    let put = util::request(
        server.addr(),
        "PUT",
        &path,
        &[("Content-Type", "application/octet-stream")],
        b"image bytes",
    )
    .unwrap();
    assert_eq!(put.status, 204);
    // A whole download queues a prefetch; wait until the cache has published the entry and its
    // record (a name starting with a dot is a record still being written).
    assert_eq!(util::get(server.addr(), &path).unwrap().status, 200);
    util::wait_until("the cache entry and its record", DEADLINE, || {
        server.path(&format!("cache/{id}")).exists()
            && fs::read_dir(server.path("cache/meta")).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
            })
    });
    id
}
