//! Store tests against real directories (tempfile). The directory choice by free space is tested
//! as a pure function in `placement`; here only what real directories can show.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

const ID: &str = "6f0e8a9c-7d3b-4f1e-9a2c-1b2c3d4e5f60";
const OTHER_ID: &str = "0b7a6c1e-2f3d-4c5b-8a9e-7d6c5b4a3f21";
const GIB: u64 = 1 << 30;

const MD5_EMPTY: &str = "d41d8cd98f00b204e9800998ecf8427e";
const SHA512_EMPTY: &str = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                            47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
/// Digests of [`pattern`] (computed with Python's hashlib).
const MD5_PATTERN: &str = "8f293a2f6c19b345152f7a49bb4c643c";
const SHA256_PATTERN: &str = "631b84027d6b9e52b539c4e8373622d23032dfadc64d60af87339c9037e4f769";
const SHA384_PATTERN: &str = "c0b5633796816dc370458921d148550ed3e490ca635324e19b86a26c500577c6\
                              23a37ecc5de698c222fba72e08e0ee5b";
const SHA512_PATTERN: &str = "67dad569eefc986a3b2424f5516d5a0284bb53d7b52d75f5ed881a6830a95765\
                              ccc82bc48752fb693422579f11dc9a400561ec1885af9eeef703dbbd312d4fd0";

/// 1 MiB of `i % 251`: a period that does not divide any chunk size used below.
fn pattern() -> Vec<u8> {
    (0..1usize << 20).map(|index| (index % 251) as u8).collect()
}

fn settings(datadirs: &[(&Path, i64)]) -> Settings {
    Settings {
        datadirs: datadirs
            .iter()
            .map(|&(path, priority)| (path.to_path_buf(), priority))
            .collect(),
        file_perm: 0,
        size_cap: 4 * GIB,
        hash: HashKind::Sha512,
    }
}

fn open_one(dir: &Path) -> Store {
    Store::open(settings(&[(dir, 0)])).unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A token whose process has exited and been reaped.
fn dead_token() -> String {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    format!("{pid}-1")
}

fn upload_all(store: &Store, data: &[u8], chunk: usize, declared: Option<u64>) -> Stored {
    let mut upload = store.begin_upload(ID, declared, &owner_token()).unwrap();
    for piece in data.chunks(chunk) {
        upload.write(piece).unwrap();
    }
    assert_eq!(upload.bytes_written(), data.len() as u64);
    upload.finish().unwrap()
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<Upload>();
}

#[test]
fn hash_names_are_glances() {
    assert_eq!(HashKind::Sha256.name(), "sha256");
    assert_eq!(HashKind::Sha384.name(), "sha384");
    assert_eq!(HashKind::Sha512.name(), "sha512");
    for kind in [HashKind::Sha256, HashKind::Sha384, HashKind::Sha512] {
        assert_eq!(HashKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(HashKind::from_name("md5"), None);
    assert_eq!(HashKind::from_name("SHA512"), None);
}

// Opening.

#[test]
fn open_creates_missing_datadirs() {
    let root = tempfile::tempdir().unwrap();
    let nested = root.path().join("a/b/images");
    let store = Store::open(settings(&[(&nested, 0)])).unwrap();
    assert!(nested.is_dir());
    // The write probe is gone.
    assert!(names_in(&nested).is_empty());
    assert_eq!(store.settings().file_perm, 0o640);
}

#[test]
fn open_makes_relative_datadirs_absolute() {
    // A relative path to a fresh temporary directory: up to / from the current directory, then
    // down again.
    let root = tempfile::tempdir().unwrap();
    let current = std::env::current_dir().unwrap();
    let mut relative = PathBuf::new();
    for _ in current.components().skip(1) {
        relative.push("..");
    }
    relative.push(root.path().strip_prefix("/").unwrap());
    relative.push("images");
    assert!(relative.is_relative());
    let store = Store::open(settings(&[(&relative, 0)])).unwrap();
    let (datadir, _) = &store.settings().datadirs[0];
    assert!(datadir.is_absolute(), "{}", datadir.display());
    assert!(root.path().join("images").is_dir());
    let stored = upload_all(&store, b"x", 1, None);
    assert!(
        Path::new(&stored.location).is_absolute(),
        "{}",
        stored.location
    );
}

#[test]
fn datadir_that_is_a_file_is_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("images");
    fs::write(&file, b"").unwrap();
    let error = Store::open(settings(&[(&file, 0)])).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("not a directory"), "{text}");
    assert!(text.contains("filesystem_store_datadir"), "{text}");
}

#[test]
fn datadir_under_a_file_is_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("file"), b"").unwrap();
    let datadir = root.path().join("file/images");
    let error = Store::open(settings(&[(&datadir, 0)])).unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot use data directory {}: ",
            datadir.display()
        )),
        "{text}"
    );
    assert!(text.contains("Not a directory"), "{text}");
}

#[test]
fn unwritable_datadir_is_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let read_only = root.path().join("read-only");
    fs::create_dir(&read_only).unwrap();
    fs::set_permissions(&read_only, fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory modes; sysfs refuses new files even to root.
    let is_root = nix::unistd::geteuid().is_root();
    let datadir = if is_root {
        PathBuf::from("/sys")
    } else {
        read_only.clone()
    };
    let error = Store::open(settings(&[(&datadir, 0)])).unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot create a file in data directory {}: ",
            datadir.display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("or change filesystem_store_datadir(s)"),
        "{text}"
    );
    fs::set_permissions(&read_only, fs::Permissions::from_mode(0o755)).unwrap();
}

// Choosing a directory (real directories share one filesystem, so only priority can differ).

#[test]
fn upload_goes_to_the_highest_priority_datadir() {
    let root = tempfile::tempdir().unwrap();
    let low = root.path().join("low");
    let high = root.path().join("high");
    let store = Store::open(settings(&[(&low, 0), (&high, 10)])).unwrap();
    for declared in [None, Some(0), Some(10)] {
        let upload = store.begin_upload(ID, declared, &owner_token()).unwrap();
        assert_eq!(upload.temporary_path().parent(), Some(high.as_path()));
    }
}

#[test]
fn upload_larger_than_any_free_space_is_full() {
    let root = tempfile::tempdir().unwrap();
    let mut settings = settings(&[(root.path(), 0)]);
    settings.size_cap = u64::MAX;
    let store = Store::open(settings).unwrap();
    let error = store
        .begin_upload(ID, Some(u64::MAX), &owner_token())
        .unwrap_err();
    assert!(matches!(error, StoreError::Full), "{error:?}");
    assert!(names_in(root.path()).is_empty());
}

#[test]
fn declared_size_over_the_cap_is_too_large() {
    let root = tempfile::tempdir().unwrap();
    let mut settings = settings(&[(root.path(), 0)]);
    settings.size_cap = 100;
    let store = Store::open(settings).unwrap();
    store.begin_upload(ID, Some(100), &owner_token()).unwrap();
    let error = store
        .begin_upload(ID, Some(101), &owner_token())
        .unwrap_err();
    assert!(
        matches!(error, StoreError::TooLarge { cap: 100 }),
        "{error:?}"
    );
    assert!(names_in(root.path()).is_empty());
}

#[test]
fn ids_and_owners_that_could_escape_the_directory_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    for (image_id, owner) in [
        ("../x", "1-2"),
        ("", "1-2"),
        ("a.b", "1-2"),
        (ID, "1/2"),
        (ID, ""),
    ] {
        let error = store.begin_upload(image_id, None, owner).unwrap_err();
        assert!(
            matches!(&error, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput),
            "{image_id:?} {owner:?}: {error:?}"
        );
    }
    assert!(names_in(root.path()).is_empty());
}

// Writing and hashing.

#[test]
fn empty_image_hashes() {
    let root = tempfile::tempdir().unwrap();
    let stored = upload_all(&open_one(root.path()), b"", 1, Some(0));
    assert_eq!(stored.size, 0);
    assert_eq!(stored.checksum, MD5_EMPTY);
    assert_eq!(stored.hash_algo, "sha512");
    assert_eq!(stored.hash_value, SHA512_EMPTY);
    assert_eq!(fs::metadata(&stored.location).unwrap().len(), 0);
}

#[test]
fn one_mebibyte_hashes_in_one_pass_whatever_the_chunking() {
    let data = pattern();
    for chunk in [1 << 20, 65536, 4093, 1000] {
        let root = tempfile::tempdir().unwrap();
        let stored = upload_all(&open_one(root.path()), &data, chunk, Some(1 << 20));
        assert_eq!(stored.size, 1 << 20, "chunk {chunk}");
        assert_eq!(stored.checksum, MD5_PATTERN, "chunk {chunk}");
        assert_eq!(stored.hash_value, SHA512_PATTERN, "chunk {chunk}");
        assert_eq!(fs::read(&stored.location).unwrap(), data, "chunk {chunk}");
    }
}

/// The socket's path: reads of any size straight into lent buffers, each partly filled. The
/// hashes and the file cover exactly the bytes read, and the buffers come back: however many
/// chunks, the upload never has more than `HASH_QUEUE_CHUNKS + 2` in flight: the list grows
/// only when its oldest is still held, and then every buffer in it is held (the threads hash
/// in order), which is at most the slower thread's queue and the one it hashes; plus the one
/// just written.
#[test]
fn lent_buffers_partly_filled_hash_what_was_read_and_are_reused() {
    let data = pattern();
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    let mut upload = store
        .begin_upload(ID, Some(1 << 20), &owner_token())
        .unwrap();
    let bound = HASH_QUEUE_CHUNKS + 2;
    let mut most = 0;
    // 4093 and 1000 bytes at a time: far fewer than a buffer holds, so 1,000-odd chunks.
    for (index, piece) in data
        .chunks(4093)
        .flat_map(|piece| piece.chunks(1000))
        .enumerate()
    {
        let mut buffer = upload.buffer();
        assert_eq!(buffer.space().len(), UPLOAD_BUFFER, "chunk {index}");
        buffer.space()[..piece.len()].copy_from_slice(piece);
        // Stale bytes after the data: they must not be hashed or written.
        buffer.space()[piece.len()..].fill(0xa5);
        upload.write_buffer(buffer, piece.len()).unwrap();
        most = most.max(upload.buffers_in_flight());
    }
    assert!(
        most <= bound,
        "{most} buffers were in flight at once; at most {bound} expected"
    );
    let stored = upload.finish().unwrap();
    assert_eq!(stored.size, 1 << 20);
    assert_eq!(stored.checksum, MD5_PATTERN);
    assert_eq!(stored.hash_value, SHA512_PATTERN);
    assert_eq!(fs::read(&stored.location).unwrap(), data);
}

#[test]
fn configured_hash_algorithm_is_used() {
    let data = pattern();
    for (kind, expected) in [
        (HashKind::Sha256, SHA256_PATTERN),
        (HashKind::Sha384, SHA384_PATTERN),
        (HashKind::Sha512, SHA512_PATTERN),
    ] {
        let root = tempfile::tempdir().unwrap();
        let mut settings = settings(&[(root.path(), 0)]);
        settings.hash = kind;
        let stored = upload_all(&Store::open(settings).unwrap(), &data, 65536, None);
        assert_eq!(stored.hash_algo, kind.name());
        assert_eq!(stored.hash_value, expected, "{kind:?}");
        assert_eq!(stored.checksum, MD5_PATTERN);
    }
}

// Finishing.

#[test]
fn finish_renames_to_the_image_id_and_the_temporary_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    let mut upload = store.begin_upload(ID, None, &owner_token()).unwrap();
    let temporary = upload.temporary_path().to_path_buf();
    assert_eq!(
        temporary.file_name().unwrap().to_string_lossy(),
        format!(".{ID}.{}.tmp", owner_token())
    );
    upload.write(b"hello").unwrap();
    // Nothing under the final name until finish.
    assert_eq!(
        names_in(root.path()),
        [format!(".{ID}.{}.tmp", owner_token())]
    );
    let stored = upload.finish().unwrap();
    assert_eq!(Path::new(&stored.location), root.path().join(ID));
    assert!(Path::new(&stored.location).is_absolute());
    assert!(!temporary.exists());
    assert_eq!(names_in(root.path()), [ID]);
    assert_eq!(fs::read(&stored.location).unwrap(), b"hello");
}

#[test]
fn finished_file_is_0640_by_default() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    let mut upload = store.begin_upload(ID, None, &owner_token()).unwrap();
    let temporary_mode = fs::metadata(upload.temporary_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        temporary_mode & 0o077,
        0,
        "partial data readable: {temporary_mode:o}"
    );
    upload.write(b"x").unwrap();
    let stored = upload.finish().unwrap();
    let mode = fs::metadata(&stored.location).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o640, "{mode:o}");
}

#[test]
fn finished_file_takes_the_configured_permissions() {
    for file_perm in [0o600, 0o644, 0o660] {
        let root = tempfile::tempdir().unwrap();
        let mut settings = settings(&[(root.path(), 0)]);
        settings.file_perm = file_perm;
        let stored = upload_all(&Store::open(settings).unwrap(), b"x", 1, None);
        let mode = fs::metadata(&stored.location).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, file_perm, "{mode:o}");
    }
}

#[test]
fn finish_replaces_data_left_under_the_final_name() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join(ID), b"orphan from a crash").unwrap();
    let stored = upload_all(&open_one(root.path()), b"new", 3, Some(3));
    assert_eq!(fs::read(&stored.location).unwrap(), b"new");
    assert_eq!(names_in(root.path()), [ID]);
}

#[test]
fn drop_without_finish_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    let mut upload = store.begin_upload(ID, Some(10), &owner_token()).unwrap();
    upload.write(b"hello").unwrap();
    drop(upload);
    assert!(names_in(root.path()).is_empty());
}

#[test]
fn size_mismatch_leaves_nothing() {
    for (declared, data) in [(4u64, &b"hello"[..]), (6, b"hello"), (1, b"")] {
        let root = tempfile::tempdir().unwrap();
        let store = open_one(root.path());
        let mut upload = store
            .begin_upload(ID, Some(declared), &owner_token())
            .unwrap();
        upload.write(data).unwrap();
        let error = upload.finish().unwrap_err();
        let actual = data.len() as u64;
        assert!(
            matches!(error, StoreError::SizeMismatch { declared: d, actual: a } if d == declared && a == actual),
            "{error:?}"
        );
        assert!(names_in(root.path()).is_empty(), "declared {declared}");
    }
}

#[test]
fn size_cap_is_enforced_at_the_limit_and_just_over_it() {
    let root = tempfile::tempdir().unwrap();
    let mut settings = settings(&[(root.path(), 0)]);
    settings.size_cap = 10;
    let store = Store::open(settings).unwrap();

    // Exactly the cap, across a chunk boundary.
    let mut upload = store.begin_upload(ID, None, &owner_token()).unwrap();
    upload.write(b"12345").unwrap();
    upload.write(b"67890").unwrap();
    let stored = upload.finish().unwrap();
    assert_eq!(stored.size, 10);
    store.delete_data(&stored.location).unwrap();

    // One byte over, in the second chunk: refused, nothing of the chunk written.
    let mut upload = store.begin_upload(ID, None, &owner_token()).unwrap();
    upload.write(b"12345").unwrap();
    let error = upload.write(b"678901").unwrap_err();
    assert!(
        matches!(error, StoreError::SizeCapExceeded { cap: 10 }),
        "{error:?}"
    );
    assert_eq!(upload.bytes_written(), 5);
    // The upload is spoiled: no more writes, no finish.
    assert!(matches!(upload.write(b"x"), Err(StoreError::Io { .. })));
    assert!(matches!(upload.finish(), Err(StoreError::Io { .. })));
    assert!(names_in(root.path()).is_empty());
}

#[test]
fn second_upload_of_one_image_by_one_owner_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    let mut first = store.begin_upload(ID, None, &owner_token()).unwrap();
    let error = store.begin_upload(ID, None, &owner_token()).unwrap_err();
    assert!(
        matches!(&error, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{error:?}"
    );
    first.write(b"data").unwrap();
    assert_eq!(fs::read(first.finish().unwrap().location).unwrap(), b"data");
}

// Reading and deleting.

#[test]
fn open_data_returns_the_file_and_its_size() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    let stored = upload_all(&store, b"image bytes", 4, Some(11));
    let (mut file, size) = store.open_data(&stored.location).unwrap();
    assert_eq!(size, 11);
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "image bytes");
}

#[test]
fn delete_data_removes_and_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    let stored = upload_all(&store, b"x", 1, None);
    store.delete_data(&stored.location).unwrap();
    assert!(names_in(root.path()).is_empty());
    assert!(matches!(
        store.open_data(&stored.location),
        Err(StoreError::NotFound)
    ));
    store.delete_data(&stored.location).unwrap();
}

#[test]
fn data_outside_the_configured_datadirs_is_still_reachable() {
    // Locations recorded under an earlier configuration keep working.
    let old = tempfile::tempdir().unwrap();
    let stored = upload_all(&open_one(old.path()), b"old", 3, None);
    let new = tempfile::tempdir().unwrap();
    let store = open_one(new.path());
    assert_eq!(store.open_data(&stored.location).unwrap().1, 3);
    store.delete_data(&stored.location).unwrap();
    assert!(names_in(old.path()).is_empty());
}

#[test]
fn locations_must_be_absolute_regular_files() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    for location in [ID, "", "images/x"] {
        assert!(
            matches!(store.open_data(location), Err(StoreError::Io { .. })),
            "{location:?}"
        );
        assert!(
            matches!(store.delete_data(location), Err(StoreError::Io { .. })),
            "{location:?}"
        );
    }
    let directory = root.path().to_string_lossy().into_owned();
    let error = store.open_data(&directory).unwrap_err();
    assert!(error.to_string().contains(&directory), "{error}");
}

// Abandoned uploads.

#[test]
fn sweep_removes_only_dead_owners_temporary_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("images");
    let old_dir = root.path().join("old-images");
    let store = open_one(&dir);
    fs::create_dir(&old_dir).unwrap();

    let dead = dead_token();
    let dead_in_dir = dir.join(format!(".{ID}.{dead}.tmp"));
    let dead_in_old_dir = old_dir.join(format!(".{OTHER_ID}.{dead}.tmp"));
    let malformed_owner = dir.join(format!(".{OTHER_ID}.not_a_token.tmp"));
    fs::write(&dead_in_dir, b"partial").unwrap();
    fs::write(&dead_in_old_dir, b"partial").unwrap();
    fs::write(&malformed_owner, b"partial").unwrap();
    // Kept: a live upload, finished data, a file that only looks similar, and a directory.
    let mut live = store.begin_upload(OTHER_ID, None, &owner_token()).unwrap();
    live.write(b"in progress").unwrap();
    fs::write(dir.join(ID), b"finished").unwrap();
    fs::write(dir.join(format!("{ID}.{dead}.tmp")), b"not ours").unwrap();
    fs::create_dir(dir.join(format!(".{ID}.9-9.tmp"))).unwrap();

    let mut removed = store.remove_abandoned_temp_files(owner_alive);
    removed.sort();
    let mut expected = vec![dead_in_dir.clone(), malformed_owner.clone()];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(
        dead_in_old_dir.exists(),
        "old dirs are swept only when named"
    );

    let removed = store.remove_abandoned_temp_files_in(
        &[old_dir.clone(), dir.clone(), root.path().join("gone")],
        owner_alive,
    );
    assert_eq!(removed, [dead_in_old_dir]);

    live.finish().unwrap();
    assert_eq!(
        names_in(&dir),
        [
            format!(".{ID}.9-9.tmp"),
            OTHER_ID.to_string(),
            ID.to_string(),
            format!("{ID}.{dead}.tmp"),
        ]
    );
}

#[test]
fn sweep_asks_is_alive_about_each_owner() {
    let root = tempfile::tempdir().unwrap();
    let store = open_one(root.path());
    fs::write(root.path().join(format!(".{ID}.1-1.tmp")), b"").unwrap();
    fs::write(root.path().join(format!(".{OTHER_ID}.2-2.tmp")), b"").unwrap();
    let removed = store.remove_abandoned_temp_files(|owner| owner == "1-1");
    assert_eq!(removed, [root.path().join(format!(".{OTHER_ID}.2-2.tmp"))]);
}
