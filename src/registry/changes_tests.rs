//! Tests of the change counter ([`Registry::version`]) on SQLite files: two registries on one
//! file stand for two processes (each maps the counter file itself, as a child does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use super::tests::{counter_image, increment_counter};
use super::*;

/// Two registries on one new SQLite file, as two children would open it.
fn two_registries() -> (tempfile::TempDir, Registry, Registry) {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = Database::Sqlite(dir.path().join("registry.sqlite"));
    let one = Registry::open(&database).expect("open");
    let two = Registry::open(&database).expect("open again");
    (dir, one, two)
}

#[test]
fn every_write_of_either_process_moves_the_version_and_no_read_does() {
    let (dir, one, two) = two_registries();
    assert!(Changes::path(&dir.path().join("registry.sqlite")).exists());
    let last = std::cell::Cell::new(one.version().expect("a version after open"));
    assert_eq!(two.version(), Some(last.get()));
    let moved = |what: &str| {
        let now = one
            .version()
            .unwrap_or_else(|| panic!("{what}: no version"));
        assert!(
            now > last.get(),
            "{what}: the version stayed at {}",
            last.get()
        );
        assert_eq!(
            two.version(),
            Some(now),
            "{what}: the other registry sees another"
        );
        last.set(now);
    };

    let id = "0c6b1b7c-7c34-4e6a-9d2e-2c7c1d1f0a01";
    two.create(&Image::new(id)).expect("create");
    moved("create");
    one.get(id).expect("get").expect("found");
    two.get_with_membership(id, Some("p"))
        .expect("get")
        .expect("found");
    two.list(&ListQuery::default()).expect("list");
    assert_eq!(one.version(), Some(last.get()), "reads moved the version");

    two.update(id, |image| {
        image.name = Some("renamed".to_string());
        Ok::<_, RegistryError>(())
    })
    .expect("update");
    moved("update");
    one.add_member(id, "p", None).expect("add member");
    moved("add a member");
    two.set_member_status(id, "p", MemberStatus::Accepted)
        .expect("member status");
    moved("a member's status");
    let task = one
        .create_task(&NewTask {
            id: "8f0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d".to_string(),
            task_type: "api_image_import".to_string(),
            owner: None,
            image_id: Some(id.to_string()),
            request_id: None,
            user_id: None,
            input: serde_json::json!({}),
            runner: None,
        })
        .expect("create a task");
    moved("create a task");
    two.begin_task(&task.id).expect("begin the task");
    moved("begin a task");
    two.delete(id, |_| Ok::<_, RegistryError>(()))
        .expect("delete");
    moved("delete");

    // A write transaction that changed no row commits without moving it: a recovery pass
    // that found nothing, as each child's first one.
    let recovered = one.recover_abandoned_uploads(|_| false).expect("recover");
    assert!(recovered.is_empty());
    assert_eq!(
        one.version(),
        Some(last.get()),
        "a recovery that changed nothing"
    );

    // A write that changes nothing (the image is gone) commits nothing.
    let missing = one
        .update(id, |_| Ok::<_, RegistryError>(()))
        .expect("update");
    assert!(missing.is_none());
    assert_eq!(
        one.version(),
        Some(last.get()),
        "a write that committed nothing"
    );
}

/// A process that died between the two moves of the counter around its COMMIT (here before
/// the COMMIT, which leaves the counter as a death after it would) leaves it odd:
/// no version, so nothing read is kept, until the next write ends, even one that changed no
/// row (a recovery pass that found nothing).
#[test]
fn a_write_cut_short_after_its_commit_leaves_no_version_until_the_next_write() {
    let (_dir, one, two) = two_registries();
    let before = one.version().expect("a version");
    // What `commit_write` does before COMMIT; the process "dies" before the end.
    let odd = one
        .changes
        .as_ref()
        .expect("SQLite has a counter")
        .writing();
    assert!(odd > before && !odd.is_multiple_of(2), "{odd}");
    assert_eq!(one.version(), None);
    assert_eq!(two.version(), None);
    let recovered = two.recover_abandoned_uploads(|_| false).expect("recover");
    assert!(recovered.is_empty());
    let after = one.version().expect("a version after the next write");
    assert!(after > odd, "{after} <= {odd}");
    assert_eq!(two.version(), Some(after));

    // The maintenance pass's settle does the same with no write to ride on, and nothing when
    // the counter is even.
    let odd = one.changes.as_ref().expect("counter").writing();
    assert_eq!(two.version(), None);
    two.settle_version().expect("settle");
    let settled = one.version().expect("a version after the settle");
    assert!(settled > odd, "{settled} <= {odd}");
    one.settle_version().expect("settle again");
    assert_eq!(
        two.version(),
        Some(settled),
        "a settle with an even counter moved it"
    );
}

/// A process that cannot map the counter does not open the registry: its writes would not
/// move it, and the other children would go on answering from memory what it changed.
#[test]
fn a_counter_that_cannot_be_mapped_fails_the_open_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("registry.sqlite");
    std::fs::create_dir(Changes::path(&path)).expect("a folder in the counter's place");
    let error = match Registry::open(&Database::Sqlite(path.clone())) {
        Ok(_) => panic!("the registry opened without its counter"),
        Err(error) => error,
    };
    assert!(
        matches!(error, RegistryError::ChangeCounter { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&Changes::path(&path).display().to_string())
            && message.contains("beside the database"),
        "{message}"
    );
}

/// A database reached through a link shares the counter of the file it names.
#[test]
fn a_link_to_the_database_names_the_same_counter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("registry.sqlite");
    let link = dir.path().join("link.sqlite");
    let one = Registry::open(&Database::Sqlite(path.clone())).expect("open");
    std::os::unix::fs::symlink(&path, &link).expect("link");
    let two = Registry::open(&Database::Sqlite(link.clone())).expect("open the link");
    assert!(!Changes::path(&link).exists());
    two.create(&Image::new("0c6b1b7c-7c34-4e6a-9d2e-2c7c1d1f0a04"))
        .expect("create");
    assert_eq!(one.version(), two.version());
    assert!(one.version().is_some());
}

/// The promise the API's memory of shown images rests on: two reads with the same version
/// before the first and after the second saw the same image, while another registry on the
/// file writes as fast as it can.
#[test]
fn reads_between_two_equal_versions_see_the_same_image_while_another_process_writes() {
    const WRITES: u64 = 300;
    let (_dir, reader, writer) = two_registries();
    let id = "0c6b1b7c-7c34-4e6a-9d2e-2c7c1d1f0a03";
    writer.create(&counter_image(id)).expect("create");
    let done = Arc::new(AtomicBool::new(false));
    let writing = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            for _ in 0..WRITES {
                writer.update(id, increment_counter).expect("update");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let (mut same, mut moved) = (0, 0);
    while !done.load(Ordering::SeqCst) {
        let Some(before) = reader.version() else {
            continue;
        };
        let first = reader.get(id).expect("get").expect("found");
        let second = reader.get(id).expect("get").expect("found");
        if reader.version() == Some(before) {
            assert_eq!(
                first.properties["counter"], second.properties["counter"],
                "the version stayed at {before} across a commit"
            );
            same += 1;
        } else {
            moved += 1;
        }
    }
    writing.join().expect("the writer");
    let last = reader.get(id).expect("get").expect("found");
    assert_eq!(last.properties["counter"], WRITES.to_string());
    // Both cases came up, so the check above ran while writes went on.
    assert!(same > 0 && moved > 0, "same {same}, moved {moved}");
}
