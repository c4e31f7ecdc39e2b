//! Tests of the registry on temporary database files: records, filters, the sort order and
//! pagination against a reference implementation, and concurrent writers in separate handles
//! and separate processes.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::test_database::temp_database;
use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A registry in a folder that does not exist yet, so that `open` has to create it.
fn temp_registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(&temp_database(&dir)).expect("open registry");
    (dir, registry)
}

/// The SQLite database at `path`, for the tests of what only SQLite has (its files, pragmas,
/// plans and processes).
fn sqlite(path: &Path) -> Database {
    Database::Sqlite(path.to_path_buf())
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("registry.sqlite")
}

fn ids(images: &[Image]) -> Vec<String> {
    images.iter().map(|image| image.id.clone()).collect()
}

fn by_id() -> Vec<(SortKey, SortDir)> {
    vec![(SortKey::Id, SortDir::Asc)]
}

/// A caller's own error type, as the API will have, to check that `update` and `delete` pass it
/// through.
#[derive(Debug, PartialEq)]
enum CallerError {
    Refused,
    Registry(String),
}

impl From<RegistryError> for CallerError {
    fn from(error: RegistryError) -> CallerError {
        CallerError::Registry(error.to_string())
    }
}

pub(super) fn increment_counter(image: &mut Image) -> Result<(), RegistryError> {
    let counter: u64 = image.properties["counter"].parse().expect("counter");
    image
        .properties
        .insert("counter".to_string(), (counter + 1).to_string());
    Ok(())
}

pub(super) fn counter_image(id: &str) -> Image {
    let mut image = Image::new(id);
    image
        .properties
        .insert("counter".to_string(), "0".to_string());
    image
}

// ---------------------------------------------------------------------------------------------
// Records

#[test]
fn create_then_get_round_trips_every_field() {
    let (_dir, registry) = temp_registry();
    let mut image = Image::new("6f1c7f4e-0000-4000-8000-000000000001");
    image.name = Some("cirros".to_string());
    image.status = ImageStatus::Active;
    image.visibility = "public".to_string();
    image.protected = true;
    image.os_hidden = true;
    image.checksum = Some("d41d8cd98f00b204e9800998ecf8427e".to_string());
    image.os_hash_algo = Some("sha512".to_string());
    image.os_hash_value = Some("cf83e1357eefb8bd".to_string());
    image.owner = Some("tenant".to_string());
    image.size = Some(1 << 40);
    image.virtual_size = Some(1 << 41);
    image.container_format = Some("bare".to_string());
    image.disk_format = Some("qcow2".to_string());
    image.min_ram = 512;
    image.min_disk = 1;
    image.tags = vec!["b".to_string(), "a".to_string(), "b".to_string()];
    image.properties = BTreeMap::from([
        ("os_distro".to_string(), "cirros".to_string()),
        ("hw_disk_bus".to_string(), "virtio".to_string()),
    ]);
    image.created_at = "2026-01-02T03:04:05Z".to_string();
    image.updated_at = "2026-01-02T03:04:06Z".to_string();
    image.location = Some("/var/lib/glint/images/6f1c7f4e".to_string());
    image.upload_owner = Some("pid:42".to_string());
    registry.create(&image).expect("create");

    let mut expected = image.clone();
    expected.tags = vec!["a".to_string(), "b".to_string()];
    assert_eq!(registry.get(&image.id).expect("get"), Some(expected));
}

/// Tags, properties and locations come back whole from the one statement that reads an image
/// (its JSON arrays): escapes, control characters (NUL too, on SQLite: PostgreSQL's text holds
/// none), quotes, backslashes, multi-byte text, many of each, tags sorted and locations in
/// their order; through `get` and through `get_with_membership` (a shared image seen through
/// a membership, and its owner's).
#[test]
fn an_image_read_in_one_statement_keeps_every_detail() {
    let (_dir, registry) = temp_registry();
    let on_sqlite = matches!(registry.database(), Database::Sqlite(_));
    let mut image = Image::new("6f1c7f4e-0000-4000-8000-000000000002");
    image.owner = Some("owner".to_string());
    let odd: Vec<&str> = [
        "\0",
        "\u{1}\u{1f}\u{7f}",
        "\"quoted\"",
        "back\\slash",
        "caf\u{e9} \u{1F600}",
        "a\nb\tc",
    ]
    .into_iter()
    .filter(|text| on_sqlite || !text.contains('\0'))
    .collect();
    image.tags = odd.iter().map(|text| format!("t{text}")).collect();
    image.tags.extend((0..40).map(|n| format!("tag{n:02}")));
    image.properties = odd
        .iter()
        .enumerate()
        .map(|(n, text)| (format!("p{n}{text}"), format!("v{text}")))
        .chain((0..40).map(|n| (format!("prop{n}"), "x".repeat(n))))
        .collect();
    image.locations = (0..12)
        .map(|n| Location {
            store: format!("store{}{}", n % 3, odd[n % odd.len()]),
            path: format!("/data/{}/{n}", 11 - n),
        })
        .collect();
    registry.create(&image).expect("create");
    let mut expected = image.clone();
    expected.normalize_tags();
    assert_eq!(
        registry.get(&image.id).expect("get"),
        Some(expected.clone())
    );
    for project in [Some("owner"), Some("member"), None] {
        let (read, _) = registry
            .get_with_membership(&image.id, project)
            .expect("get_with_membership")
            .expect("found");
        assert_eq!(read, expected, "as seen by {project:?}");
    }
}

#[test]
fn a_new_image_has_glance_defaults() {
    let (_dir, registry) = temp_registry();
    let image = Image::new("defaults");
    registry.create(&image).expect("create");
    let stored = registry.get("defaults").expect("get").expect("found");
    assert_eq!(stored.status, ImageStatus::Queued);
    assert_eq!(stored.visibility, "shared");
    assert!(!stored.protected && !stored.os_hidden);
    assert_eq!((stored.min_ram, stored.min_disk), (0, 0));
    assert!(stored.tags.is_empty() && stored.properties.is_empty());
    assert_eq!(stored.created_at.len(), "YYYY-MM-DDTHH:MM:SSZ".len());
}

#[test]
fn every_status_is_stored_as_glances_word_in_the_status_column() {
    let (_dir, registry) = temp_registry();
    let connection = sql::Connection::open(registry.database()).expect("open");
    let stored_word = |id: &str| -> String {
        connection
            .query_opt(
                "SELECT status FROM images WHERE id = ?1",
                sql::params![id],
                |row| row.get(0),
            )
            .expect("read the column")
            .expect("a row")
    };
    for status in ImageStatus::ALL {
        // Written through the registry: the column holds the word older binaries wrote.
        let id = format!("written-{status}");
        let mut image = Image::new(&id);
        image.status = status;
        registry.create(&image).expect("create");
        assert_eq!(stored_word(&id), status.as_str());
        assert_eq!(
            registry.get(&id).expect("get").expect("found").status,
            status
        );

        // Written as text, as a database from before the enum holds it: read as the variant.
        let id = format!("legacy-{status}");
        registry.create(&Image::new(&id)).expect("create");
        connection
            .execute(
                "UPDATE images SET status = ?2 WHERE id = ?1",
                sql::params![id, status.as_str()],
            )
            .expect("write the word");
        assert_eq!(
            registry.get(&id).expect("get").expect("found").status,
            status
        );
    }
    registry
        .delete("written-active", |_| Ok::<(), RegistryError>(()))
        .expect("delete");
    assert_eq!(stored_word("written-active"), "deleted");
}

#[test]
fn an_unknown_status_in_the_database_fails_the_read_naming_the_word() {
    let (_dir, registry) = temp_registry();
    registry.create(&Image::new("fine")).expect("create");
    registry.create(&Image::new("odd")).expect("create");
    sql::Connection::open(registry.database())
        .expect("open")
        .execute("UPDATE images SET status = 'frozen' WHERE id = 'odd'", &[])
        .expect("write an unknown word");

    let unknown_word = |error: RegistryError| {
        let RegistryError::Sql {
            source: SqlError::Conversion { source: cause, .. },
            ..
        } = &error
        else {
            panic!("not a conversion failure: {error:?}");
        };
        cause
            .downcast_ref::<UnknownImageStatus>()
            .map(|unknown| unknown.value.clone())
    };
    let error = registry.get("odd").expect_err("get");
    assert!(!error.is_busy());
    assert_eq!(unknown_word(error), Some("frozen".to_string()));
    // A page that holds the row fails as a whole: serving it would break clients that
    // validate the status against the schema, and leaving it out would be a silent lie.
    let error = registry.list(&ListQuery::default()).expect_err("list");
    assert_eq!(unknown_word(error), Some("frozen".to_string()));
    // Changing the row through the registry fails too, and changes nothing.
    let error = registry
        .update("odd", |image| {
            image.status = ImageStatus::Active;
            Ok::<(), RegistryError>(())
        })
        .expect_err("update");
    assert_eq!(unknown_word(error), Some("frozen".to_string()));
    let stored: String = sql::Connection::open(registry.database())
        .expect("open")
        .query_opt("SELECT status FROM images WHERE id = 'odd'", &[], |row| {
            row.get(0)
        })
        .expect("read the column")
        .expect("a row");
    assert_eq!(stored, "frozen");

    // Other images are unaffected, and a filter that excludes the row lists the rest.
    assert_eq!(
        registry.get("fine").expect("get").map(|image| image.status),
        Some(ImageStatus::Queued)
    );
    let queued = ListQuery {
        filters: Filters {
            status: Some(ImageStatus::Queued),
            ..Filters::default()
        },
        ..ListQuery::default()
    };
    assert_eq!(ids(&registry.list(&queued).expect("list queued")), ["fine"]);
}

#[test]
fn get_of_an_unknown_id_is_none() {
    let (_dir, registry) = temp_registry();
    assert_eq!(registry.get("nope").expect("get"), None);
}

#[test]
fn create_with_an_existing_id_is_duplicate() {
    let (_dir, registry) = temp_registry();
    registry.create(&Image::new("same")).expect("create");
    let error = registry
        .create(&Image::new("same"))
        .expect_err("second create");
    assert!(matches!(error, RegistryError::Duplicate), "{error:?}");
}

#[test]
fn create_with_a_deleted_id_is_duplicate() {
    let (_dir, registry) = temp_registry();
    registry.create(&Image::new("gone")).expect("create");
    registry
        .delete("gone", |_| Ok::<(), RegistryError>(()))
        .expect("delete")
        .expect("found");
    let error = registry.create(&Image::new("gone")).expect_err("reuse");
    assert!(matches!(error, RegistryError::Duplicate), "{error:?}");
    assert_eq!(registry.get("gone").expect("get"), None);
}

#[test]
fn update_edits_fields_properties_and_tags_and_sets_updated_at() {
    let (_dir, registry) = temp_registry();
    let mut image = Image::new("edit");
    image.created_at = "2020-01-01T00:00:00Z".to_string();
    image.updated_at = "2020-01-01T00:00:00Z".to_string();
    image.tags = vec!["old".to_string()];
    image.properties = BTreeMap::from([
        ("keep".to_string(), "1".to_string()),
        ("drop".to_string(), "2".to_string()),
    ]);
    registry.create(&image).expect("create");

    let updated = registry
        .update("edit", |image: &mut Image| {
            image.name = Some("renamed".to_string());
            image.size = Some(7);
            image.tags = vec!["z".to_string(), "new".to_string(), "z".to_string()];
            image.properties.remove("drop");
            image
                .properties
                .insert("added".to_string(), "3".to_string());
            Ok::<(), RegistryError>(())
        })
        .expect("update")
        .expect("found");

    assert_eq!(updated.name.as_deref(), Some("renamed"));
    assert_eq!(updated.tags, vec!["new".to_string(), "z".to_string()]);
    assert_eq!(
        updated.properties,
        BTreeMap::from([
            ("added".to_string(), "3".to_string()),
            ("keep".to_string(), "1".to_string()),
        ])
    );
    assert_eq!(updated.created_at, "2020-01-01T00:00:00Z");
    assert!(updated.updated_at.as_str() > "2020-01-01T00:00:00Z");
    assert_eq!(registry.get("edit").expect("get"), Some(updated));
}

#[test]
fn update_of_an_unknown_or_deleted_image_is_none_without_calling_change() {
    let (_dir, registry) = temp_registry();
    registry.create(&Image::new("deleted")).expect("create");
    registry
        .delete("deleted", |_| Ok::<(), RegistryError>(()))
        .expect("delete");
    for id in ["unknown", "deleted"] {
        let result = registry.update(id, |_: &mut Image| -> Result<(), RegistryError> {
            panic!("change called for {id}")
        });
        assert_eq!(result.expect("update").map(|image| image.id), None);
    }
}

#[test]
fn update_refused_by_change_returns_its_error_and_changes_nothing() {
    let (_dir, registry) = temp_registry();
    registry.create(&Image::new("refuse")).expect("create");
    let before = registry.get("refuse").expect("get");
    let result = registry.update("refuse", |image: &mut Image| {
        image.name = Some("half-done".to_string());
        Err(CallerError::Refused)
    });
    assert_eq!(result, Err(CallerError::Refused));
    assert_eq!(registry.get("refuse").expect("get"), before);
}

#[test]
fn update_cannot_change_the_id() {
    let (_dir, registry) = temp_registry();
    registry.create(&Image::new("fixed")).expect("create");
    let updated = registry
        .update("fixed", |image: &mut Image| {
            image.id = "other".to_string();
            Ok::<(), RegistryError>(())
        })
        .expect("update")
        .expect("found");
    assert_eq!(updated.id, "fixed");
    assert_eq!(registry.get("other").expect("get"), None);
    assert!(registry.get("fixed").expect("get").is_some());
}

#[test]
fn delete_returns_the_image_as_it_was_and_hides_it() {
    let (_dir, registry) = temp_registry();
    let mut image = Image::new("doomed");
    image.tags = vec!["t".to_string()];
    image.properties.insert("p".to_string(), "v".to_string());
    registry.create(&image).expect("create");
    let stored = registry.get("doomed").expect("get");

    let deleted = registry
        .delete("doomed", |_| Ok::<(), RegistryError>(()))
        .expect("delete");
    assert_eq!(deleted, stored);
    assert_eq!(registry.get("doomed").expect("get"), None);
    let all = ListQuery {
        filters: Filters {
            visibility: Some("all".to_string()),
            ..Filters::default()
        },
        ..ListQuery::default()
    };
    assert!(registry.list(&all).expect("list").is_empty());
    let again = registry.delete("doomed", |_| Ok::<(), RegistryError>(()));
    assert_eq!(again.expect("delete").map(|image| image.id), None);
}

#[test]
fn delete_vetoed_by_refuse_keeps_the_image() {
    let (_dir, registry) = temp_registry();
    let mut image = Image::new("protected");
    image.protected = true;
    registry.create(&image).expect("create");
    let result = registry.delete("protected", |image: &Image| {
        if image.protected {
            Err(CallerError::Refused)
        } else {
            Ok(())
        }
    });
    assert_eq!(result, Err(CallerError::Refused));
    assert!(registry.get("protected").expect("get").is_some());
}

// ---------------------------------------------------------------------------------------------
// Filters

/// a..e as described in `every_filter_selects_exactly_the_matching_images`, plus f, deleted.
fn filter_fixture(registry: &Registry) {
    let image = |id: &str,
                 name: Option<&str>,
                 status: &str,
                 visibility: &str,
                 owner: Option<&str>,
                 tags: &[&str],
                 size: Option<u64>,
                 properties: &[(&str, &str)]| {
        let mut image = Image::new(id);
        image.name = name.map(str::to_string);
        image.status = status.parse().expect("a status");
        image.visibility = visibility.to_string();
        image.owner = owner.map(str::to_string);
        image.tags = tags.iter().map(|tag| tag.to_string()).collect();
        image.size = size;
        image.properties = properties
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        image
    };
    let mut a = image(
        "a",
        Some("alpha"),
        "active",
        "public",
        Some("o1"),
        &["x", "y"],
        Some(100),
        &[("os_distro", "ubuntu"), ("hw", "on")],
    );
    a.protected = true;
    let b = image(
        "b",
        Some("alpha"),
        "queued",
        "private",
        Some("o2"),
        &["x"],
        None,
        &[("os_distro", "fedora")],
    );
    let c = image(
        "c",
        Some("beta"),
        "active",
        "shared",
        None,
        &[],
        Some(200),
        &[("os_distro", "ubuntu")],
    );
    let d = image(
        "d",
        None,
        "active",
        "community",
        Some("o1"),
        &["y"],
        Some(300),
        &[],
    );
    let mut e = image(
        "e",
        Some("gamma"),
        "active",
        "public",
        Some("o1"),
        &["x"],
        Some(150),
        &[],
    );
    e.os_hidden = true;
    let f = image(
        "f",
        Some("alpha"),
        "active",
        "public",
        Some("o1"),
        &["x"],
        Some(100),
        &[("os_distro", "ubuntu")],
    );
    for image in [&a, &b, &c, &d, &e, &f] {
        registry.create(image).expect("create");
    }
    registry
        .delete("f", |_| Ok::<(), RegistryError>(()))
        .expect("delete");
}

#[test]
fn every_filter_selects_exactly_the_matching_images() {
    let (_dir, registry) = temp_registry();
    filter_fixture(&registry);
    let text = |value: &str| Some(value.to_string());
    let strings = |values: &[&str]| values.iter().map(|value| value.to_string()).collect();
    let pairs = |values: &[(&str, &str)]| {
        values
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    };
    let cases: Vec<(&str, Filters, &[&str])> = vec![
        // Defaults: no community, no hidden, never deleted.
        ("none", Filters::default(), &["a", "b", "c"]),
        // Scalar equality.
        (
            "name",
            Filters {
                name: text("alpha"),
                ..Filters::default()
            },
            &["a", "b"],
        ),
        (
            "name none",
            Filters {
                name: text("delta"),
                ..Filters::default()
            },
            &[],
        ),
        (
            "status",
            Filters {
                status: Some(ImageStatus::Active),
                ..Filters::default()
            },
            &["a", "c"],
        ),
        (
            "owner",
            Filters {
                owner: text("o1"),
                ..Filters::default()
            },
            &["a"],
        ),
        // Visibility.
        (
            "community",
            Filters {
                visibility: text("community"),
                ..Filters::default()
            },
            &["d"],
        ),
        (
            "private",
            Filters {
                visibility: text("private"),
                ..Filters::default()
            },
            &["b"],
        ),
        (
            "all",
            Filters {
                visibility: text("all"),
                ..Filters::default()
            },
            &["a", "b", "c", "d"],
        ),
        // Tags: all of them.
        (
            "tag x",
            Filters {
                tags: strings(&["x"]),
                ..Filters::default()
            },
            &["a", "b"],
        ),
        (
            "tags x y",
            Filters {
                tags: strings(&["x", "y"]),
                ..Filters::default()
            },
            &["a"],
        ),
        (
            "tag z",
            Filters {
                tags: strings(&["z"]),
                ..Filters::default()
            },
            &[],
        ),
        // Booleans.
        (
            "protected",
            Filters {
                protected: Some(true),
                ..Filters::default()
            },
            &["a"],
        ),
        (
            "unprotected",
            Filters {
                protected: Some(false),
                ..Filters::default()
            },
            &["b", "c"],
        ),
        (
            "hidden",
            Filters {
                os_hidden: Some(true),
                ..Filters::default()
            },
            &["e"],
        ),
        (
            "not hidden",
            Filters {
                os_hidden: Some(false),
                ..Filters::default()
            },
            &["a", "b", "c"],
        ),
        // Sizes: inclusive, an image without a size never matches.
        (
            "size_min",
            Filters {
                size_min: Some(150),
                ..Filters::default()
            },
            &["c"],
        ),
        (
            "size_max",
            Filters {
                size_max: Some(199),
                ..Filters::default()
            },
            &["a"],
        ),
        (
            "size range",
            Filters {
                size_min: Some(100),
                size_max: Some(200),
                ..Filters::default()
            },
            &["a", "c"],
        ),
        (
            "size exact",
            Filters {
                size_min: Some(100),
                size_max: Some(100),
                ..Filters::default()
            },
            &["a"],
        ),
        (
            "size below",
            Filters {
                size_max: Some(99),
                ..Filters::default()
            },
            &[],
        ),
        (
            "size huge",
            Filters {
                size_min: Some(u64::MAX),
                ..Filters::default()
            },
            &[],
        ),
        // Custom properties: all of them.
        (
            "property",
            Filters {
                properties: pairs(&[("os_distro", "ubuntu")]),
                ..Filters::default()
            },
            &["a", "c"],
        ),
        (
            "properties",
            Filters {
                properties: pairs(&[("os_distro", "ubuntu"), ("hw", "on")]),
                ..Filters::default()
            },
            &["a"],
        ),
        (
            "property none",
            Filters {
                properties: pairs(&[("os_distro", "debian")]),
                ..Filters::default()
            },
            &[],
        ),
        // Combinations.
        (
            "hidden public o1",
            Filters {
                os_hidden: Some(true),
                visibility: text("all"),
                owner: text("o1"),
                ..Filters::default()
            },
            &["e"],
        ),
        (
            "name tag property",
            Filters {
                name: text("alpha"),
                tags: strings(&["x"]),
                properties: pairs(&[("os_distro", "fedora")]),
                ..Filters::default()
            },
            &["b"],
        ),
    ];
    for (label, filters, expected) in cases {
        let query = ListQuery {
            filters,
            sort: by_id(),
            ..ListQuery::default()
        };
        let listed = registry.list(&query).expect("list");
        assert_eq!(ids(&listed), expected, "filter case {label}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sort order and pagination

/// Thirty images with ties and NULLs on every sort key, created in an order unrelated to their
/// ids, a few of them updated so that updated_at differs from created_at.
fn sort_fixture(registry: &Registry) {
    let names = [
        Some("alpha"),
        Some("beta"),
        None,
        Some("Alpha"),
        Some("gamma"),
    ];
    let statuses = [
        ImageStatus::Queued,
        ImageStatus::Active,
        ImageStatus::Saving,
    ];
    let containers = [Some("bare"), None, Some("ovf")];
    let disks = [Some("qcow2"), Some("raw"), None, Some("iso")];
    let sizes = [Some(10), None, Some(1 << 33), Some(10), Some(0)];
    let visibilities = ["public", "private", "shared", "community"];
    let owners = [None, Some("o1"), Some("o2")];
    let mut state: u64 = 12_345;
    let mut next = move |n: usize| {
        // A fixed LCG: the same data on every run.
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) as usize % n
    };
    for index in 0..30 {
        let id = format!("{:02}-{}", (index * 7) % 30, ["x", "y"][index % 2]);
        let mut image = Image::new(id);
        image.name = names[next(names.len())].map(str::to_string);
        image.status = statuses[next(statuses.len())];
        image.container_format = containers[next(containers.len())].map(str::to_string);
        image.disk_format = disks[next(disks.len())].map(str::to_string);
        image.size = sizes[next(sizes.len())];
        image.visibility = visibilities[next(visibilities.len())].to_string();
        image.owner = owners[next(owners.len())].map(str::to_string);
        image.min_ram = [0, 512, 1024][next(3)];
        image.min_disk = [0, 1][next(2)];
        // Three distinct seconds, so most created_at values tie.
        let created = format!("2026-01-01T00:00:0{}Z", next(3));
        image.created_at = created.clone();
        image.updated_at = created;
        registry.create(&image).expect("create");
    }
    for id in ["03-y", "10-x", "24-x"] {
        registry
            .update(id, |image: &mut Image| {
                image.min_ram += 1;
                Ok::<(), RegistryError>(())
            })
            .expect("update")
            .expect("found");
    }
}

fn everything(sort: Vec<(SortKey, SortDir)>) -> ListQuery {
    ListQuery {
        filters: Filters {
            visibility: Some("all".to_string()),
            ..Filters::default()
        },
        sort,
        ..ListQuery::default()
    }
}

/// The order the module doc promises, computed in Rust: the requested keys, then created_at
/// desc and id desc; None below every value; created_at and updated_at refined by the hidden
/// microsecond columns.
fn reference_order(path: &Path, images: &[Image], sort: &[(SortKey, SortDir)]) -> Vec<String> {
    let connection = Connection::open(path).expect("open");
    let mut statement = connection
        .prepare("SELECT id, created_order, updated_order FROM images")
        .expect("prepare");
    let hidden: HashMap<String, (i64, i64)> = statement
        .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    let compare = |key: SortKey, a: &Image, b: &Image| -> Ordering {
        match key {
            SortKey::Name => a.name.cmp(&b.name),
            // SQL sorts the stored word, not the lifecycle order.
            SortKey::Status => a.status.as_str().cmp(b.status.as_str()),
            SortKey::ContainerFormat => a.container_format.cmp(&b.container_format),
            SortKey::DiskFormat => a.disk_format.cmp(&b.disk_format),
            SortKey::Size => a.size.cmp(&b.size),
            SortKey::Id => a.id.cmp(&b.id),
            SortKey::CreatedAt => {
                (&a.created_at, hidden[&a.id].0).cmp(&(&b.created_at, hidden[&b.id].0))
            }
            SortKey::UpdatedAt => {
                (&a.updated_at, hidden[&a.id].1).cmp(&(&b.updated_at, hidden[&b.id].1))
            }
            SortKey::Visibility => a.visibility.cmp(&b.visibility),
            SortKey::Owner => a.owner.cmp(&b.owner),
            SortKey::MinRam => a.min_ram.cmp(&b.min_ram),
            SortKey::MinDisk => a.min_disk.cmp(&b.min_disk),
        }
    };
    let tie_breakers = [
        (SortKey::CreatedAt, SortDir::Desc),
        (SortKey::Id, SortDir::Desc),
    ];
    let mut sorted = images.to_vec();
    sorted.sort_by(|a, b| {
        sort.iter()
            .chain(tie_breakers.iter())
            .map(|(key, dir)| match dir {
                SortDir::Asc => compare(*key, a, b),
                SortDir::Desc => compare(*key, b, a),
            })
            .find(|ordering| ordering.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    ids(&sorted)
}

/// The sorts the ordering and pagination tests run: every key in both directions, the default,
/// and a few combinations, some repeating a tie-breaker.
fn sorts() -> Vec<Vec<(SortKey, SortDir)>> {
    let mut sorts = vec![Vec::new()];
    for key in SortKey::all() {
        for dir in [SortDir::Asc, SortDir::Desc] {
            sorts.push(vec![(key, dir)]);
        }
    }
    sorts.push(vec![
        (SortKey::Name, SortDir::Asc),
        (SortKey::Size, SortDir::Desc),
    ]);
    sorts.push(vec![
        (SortKey::Status, SortDir::Desc),
        (SortKey::Owner, SortDir::Asc),
        (SortKey::MinRam, SortDir::Desc),
    ]);
    sorts.push(vec![
        (SortKey::CreatedAt, SortDir::Asc),
        (SortKey::Name, SortDir::Desc),
    ]);
    sorts.push(vec![
        (SortKey::DiskFormat, SortDir::Desc),
        (SortKey::Id, SortDir::Asc),
    ]);
    sorts.push(vec![
        (SortKey::Size, SortDir::Asc),
        (SortKey::Size, SortDir::Desc),
    ]);
    sorts
}

#[test]
fn every_sort_key_in_both_directions_orders_like_the_reference_with_ties_and_nulls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(&sqlite(&db_path(&dir))).expect("open");
    sort_fixture(&registry);
    let all = registry.list(&everything(by_id())).expect("list");
    assert_eq!(all.len(), 30);
    for sort in sorts() {
        let listed = registry.list(&everything(sort.clone())).expect("list");
        assert_eq!(
            ids(&listed),
            reference_order(&db_path(&dir), &all, &sort),
            "sort {sort:?}"
        );
    }
}

#[test]
fn the_default_order_is_newest_first_then_id_descending() {
    let (_dir, registry) = temp_registry();
    for id in ["b", "a", "c"] {
        let mut image = Image::new(id);
        image.created_at = "2026-01-01T00:00:00Z".to_string();
        registry.create(&image).expect("create");
    }
    let mut older = Image::new("z-old");
    older.created_at = "2025-01-01T00:00:00Z".to_string();
    registry.create(&older).expect("create");
    let listed = registry.list(&ListQuery::default()).expect("list");
    // Same second: the hidden microsecond key puts the last created first.
    assert_eq!(ids(&listed), ["c", "a", "b", "z-old"]);
}

#[test]
fn sort_keys_parse_from_their_glance_names() {
    for key in SortKey::all() {
        assert_eq!(SortKey::parse(key.name()), Some(key));
    }
    assert_eq!(SortKey::parse("created_at"), Some(SortKey::CreatedAt));
    assert_eq!(
        SortKey::parse("container_format"),
        Some(SortKey::ContainerFormat)
    );
    assert_eq!(SortKey::parse("checksum"), None);
    assert_eq!(SortKey::parse("Name"), None);
    assert_eq!(SortDir::parse("asc"), Some(SortDir::Asc));
    assert_eq!(SortDir::parse("desc"), Some(SortDir::Desc));
    assert_eq!(SortDir::parse("up"), None);
    assert_eq!(SortKey::all().count(), 12);
}

#[test]
fn marker_pages_walk_every_image_exactly_once() {
    let (_dir, registry) = temp_registry();
    sort_fixture(&registry);
    for sort in sorts() {
        let whole = ids(&registry.list(&everything(sort.clone())).expect("list"));
        for page_size in [1, 2, 3, 7, 29, 30, 31] {
            let mut walked = Vec::new();
            let mut marker = None;
            loop {
                let query = ListQuery {
                    limit: page_size,
                    marker: marker.clone(),
                    ..everything(sort.clone())
                };
                let page = registry.list(&query).expect("page");
                assert!(page.len() <= page_size);
                walked.extend(ids(&page));
                // Like Glance's "next" link: only after a full page.
                if page.len() < page_size {
                    break;
                }
                marker = page.last().map(|image| image.id.clone());
            }
            assert_eq!(walked, whole, "sort {sort:?}, pages of {page_size}");
        }
    }
}

#[test]
fn tag_pages_in_creation_order_walk_every_tagged_image_once_in_list_order() {
    // A tag filter in the creation order walks the tag's own index (migration 5): its pages
    // must hold exactly the images the images walk holds, in the same order, ties included.
    let (_dir, registry) = temp_registry();
    sort_fixture(&registry);
    let all = registry.list(&everything(Vec::new())).expect("list");
    // Tags written on update (the `write` path), on two of every three images.
    for (_, image) in all.iter().enumerate().filter(|(index, _)| index % 3 != 0) {
        registry
            .update(&image.id, |image: &mut Image| {
                image.tags = vec!["keep".to_string(), "t".to_string()];
                Ok::<(), RegistryError>(())
            })
            .expect("update")
            .expect("found");
    }
    for sort in [
        Vec::new(),
        vec![(SortKey::CreatedAt, SortDir::Asc)],
        vec![
            (SortKey::CreatedAt, SortDir::Desc),
            (SortKey::Id, SortDir::Desc),
        ],
    ] {
        let whole: Vec<String> = registry
            .list(&everything(sort.clone()))
            .expect("list")
            .into_iter()
            .filter(|image| image.tags.iter().any(|tag| tag == "t"))
            .map(|image| image.id)
            .collect();
        assert_eq!(
            whole.len(),
            20,
            "two of every three of the 30 images are tagged"
        );
        for page_size in [1, 3, 7, 20, 21] {
            let mut walked = Vec::new();
            let mut marker = None;
            loop {
                let mut query = everything(sort.clone());
                query.filters.tags = vec!["t".to_string(), "keep".to_string()];
                query.limit = page_size;
                query.marker = marker.clone();
                let page = registry.list(&query).expect("page");
                walked.extend(ids(&page));
                if page.len() < page_size {
                    break;
                }
                marker = page.last().map(|image| image.id.clone());
            }
            assert_eq!(walked, whole, "sort {sort:?}, pages of {page_size}");
        }
    }
}

#[test]
fn migration_5_gives_existing_tags_their_images_creation_keys() {
    let connection = Connection::open_in_memory().expect("open");
    for sql in &MIGRATIONS[..4] {
        connection.execute_batch(sql).expect("step");
    }
    connection
        .pragma_update(None, "user_version", 4)
        .expect("version");
    connection
        .execute_batch(
            "INSERT INTO images (id, status, visibility, created_at, updated_at, \
             created_order, updated_order) VALUES ('a', 'active', 'public', \
             '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 17, 17); \
             INSERT INTO image_tags (image_id, tag) VALUES ('a', 'web');",
        )
        .expect("fill");
    let mut connection = sql::Connection::Sqlite(connection);
    migrations::migrate(&mut connection, None).expect("migrate");
    let keys: (String, i64) = connection
        .query_opt(
            "SELECT created_at, created_order FROM image_tags WHERE image_id = 'a'",
            &[],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("tag row")
        .expect("a row");
    assert_eq!(keys, ("2026-01-01T00:00:00Z".to_string(), 17));
}

#[test]
fn marker_pagination_applies_the_filters_and_may_start_from_an_unlisted_image() {
    let (_dir, registry) = temp_registry();
    filter_fixture(&registry);
    let query = ListQuery {
        sort: by_id(),
        limit: 1,
        marker: Some("a".to_string()),
        ..ListQuery::default()
    };
    assert_eq!(ids(&registry.list(&query).expect("list")), ["b"]);
    // "d" is community, not listed by default, but still a valid marker.
    let query = ListQuery {
        marker: Some("d".to_string()),
        limit: 10,
        sort: vec![(SortKey::Id, SortDir::Desc)],
        ..ListQuery::default()
    };
    assert_eq!(ids(&registry.list(&query).expect("list")), ["c", "b", "a"]);
}

#[test]
fn an_unknown_or_deleted_marker_is_a_bad_marker() {
    let (_dir, registry) = temp_registry();
    filter_fixture(&registry);
    for marker in ["unknown", "f"] {
        let query = ListQuery {
            marker: Some(marker.to_string()),
            ..ListQuery::default()
        };
        let error = registry.list(&query).expect_err(marker);
        assert!(
            matches!(error, RegistryError::BadMarker),
            "{marker}: {error:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency

#[test]
fn registry_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
}

#[test]
fn concurrent_updates_from_two_handles_lose_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Either engine: two handles stand for two children, or two nodes.
    let database = temp_database(&dir);
    Registry::open(&database)
        .expect("open")
        .create(&counter_image("counted"))
        .expect("create");
    let n_updates = 200;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let database = database.clone();
            thread::spawn(move || {
                // A handle of its own, as each child process has.
                let registry = Registry::open(&database).expect("open");
                for _ in 0..n_updates {
                    registry
                        .update("counted", increment_counter)
                        .expect("update")
                        .expect("found");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let registry = Registry::open(&database).expect("open");
    let image = registry.get("counted").expect("get").expect("found");
    assert_eq!(image.properties["counter"], (2 * n_updates).to_string());
}

/// Environment variables that turn `helper_child_process_increments_the_counter` from a no-op
/// into the child half of `updates_from_separate_processes_lose_nothing`.
const CHILD_DB: &str = "GLINT_REGISTRY_TEST_CHILD_DB";
const CHILD_UPDATES: &str = "GLINT_REGISTRY_TEST_CHILD_UPDATES";

#[test]
fn helper_child_process_increments_the_counter() {
    let (Ok(path), Ok(n_updates)) = (std::env::var(CHILD_DB), std::env::var(CHILD_UPDATES)) else {
        return;
    };
    let registry = Registry::open(&sqlite(Path::new(&path))).expect("open in child");
    let n_updates: usize = n_updates.parse().expect("count");
    for _ in 0..n_updates {
        registry
            .update("counted", increment_counter)
            .expect("update in child")
            .expect("found in child");
    }
}

#[test]
fn updates_from_separate_processes_lose_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    let registry = Registry::open(&sqlite(&path)).expect("open");
    registry.create(&counter_image("counted")).expect("create");
    let n_updates = 100;
    let test_binary = std::env::current_exe().expect("current exe");
    // Both children run while the parent does its own share.
    let mut running: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new(&test_binary)
                .args([
                    "--exact",
                    "registry::tests::helper_child_process_increments_the_counter",
                    "--test-threads=1",
                ])
                .env(CHILD_DB, &path)
                .env(CHILD_UPDATES, n_updates.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    for _ in 0..n_updates {
        registry
            .update("counted", increment_counter)
            .expect("update")
            .expect("found");
    }
    for child in running.drain(..) {
        let output = child.wait_with_output().expect("wait");
        assert!(
            output.status.success(),
            "child failed: {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let image = registry.get("counted").expect("get").expect("found");
    assert_eq!(image.properties["counter"], (3 * n_updates).to_string());
}

#[test]
fn a_writer_holding_begin_immediate_for_a_second_only_delays_another_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    let registry = Registry::open(&sqlite(&path)).expect("open");
    registry.create(&counter_image("counted")).expect("create");
    let (locked_tx, locked_rx) = mpsc::channel();
    let holder = {
        let path = path.clone();
        thread::spawn(move || {
            // A plain connection, as another process's registry would hold it.
            let connection = Connection::open(&path).expect("open");
            connection.execute_batch("BEGIN IMMEDIATE").expect("begin");
            locked_tx.send(()).expect("send");
            thread::sleep(Duration::from_secs(1));
            connection.execute_batch("COMMIT").expect("commit");
        })
    };
    locked_rx.recv().expect("lock taken");
    let started = Instant::now();
    // Readers do not wait for the writer under WAL.
    assert!(registry.get("counted").expect("get while locked").is_some());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a read waited"
    );
    registry
        .update("counted", increment_counter)
        .expect("update while locked")
        .expect("found");
    registry
        .create(&Image::new("created-while-locked"))
        .expect("create while locked");
    let waited = started.elapsed();
    holder.join().expect("holder");
    assert!(
        waited >= Duration::from_millis(800),
        "did not wait: {waited:?}"
    );
    let image = registry.get("counted").expect("get").expect("found");
    assert_eq!(image.properties["counter"], "1");
}

/// How many of this process's descriptors are open on `path` (a SQLite file, not its -wal or
/// -shm).
fn descriptors_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
        .count()
}

/// `close_idle` (a child about to exit) closes the connections nobody holds, leaves a lent one
/// alone until it comes back, and a later call opens a new one.
#[test]
fn close_idle_closes_the_idle_connections_and_spares_a_lent_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = temp_database(&dir);
    let registry = Registry::open(&database).expect("open");
    registry.create(&Image::new("kept")).expect("create");
    let sqlite_file = match &database {
        Database::Sqlite(path) => Some(std::fs::canonicalize(path).expect("the file")),
        Database::Postgres(_) => None,
    };
    let open_on_file = || sqlite_file.as_deref().map(descriptors_on);
    {
        let lent = registry.lease().expect("lease");
        let _second = registry.lease().expect("a second lease");
        drop(_second);
        assert_eq!(registry.lock_pool().n_open, 2);
        registry.close_idle();
        let pool = registry.lock_pool();
        assert_eq!(
            (pool.n_open, pool.idle.len()),
            (1, 0),
            "the lent one stays open"
        );
        drop(pool);
        // (SQLite keeps the closed connection's descriptor while another in this process
        // holds the file's locks, so descriptors are counted once none is open.)
        drop(lent);
    }
    assert_eq!(registry.lock_pool().idle.len(), 1, "the lent one came back");
    registry.close_idle();
    let pool = registry.lock_pool();
    assert_eq!((pool.n_open, pool.idle.len()), (0, 0));
    drop(pool);
    if let Some(open) = open_on_file() {
        assert_eq!(open, 0, "no SQLite connection left on the file");
    }
    assert!(registry.get("kept").expect("get").is_some());
    assert_eq!(
        registry.lock_pool().n_open,
        1,
        "a new connection for the next call"
    );
}

#[test]
fn the_pool_never_opens_more_than_its_maximum() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open_with(&temp_database(&dir), 2).expect("open");
    registry.create(&Image::new("shared")).expect("create");
    thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..20 {
                    registry.get("shared").expect("get").expect("found");
                    registry
                        .update("shared", |_: &mut Image| Ok::<(), RegistryError>(()))
                        .expect("update");
                }
            });
        }
    });
    let pool = registry.lock_pool();
    assert!(pool.n_open <= 2, "{} connections open", pool.n_open);
    assert_eq!(pool.idle.len(), pool.n_open);
}

// ---------------------------------------------------------------------------------------------
// Opening and migrations

#[test]
fn open_creates_the_folder_and_sets_the_pragmas() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(&sqlite(&db_path(&dir))).expect("open");
    assert!(db_path(&dir).is_file());
    let lease = registry.lease().expect("lease");
    let pragma = |name: &str| -> String {
        lease
            .as_sqlite()
            .expect("a SQLite registry")
            .query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|value| format!("{value:?}"))
            .expect(name)
    };
    assert_eq!(pragma("journal_mode"), r#"Text("wal")"#);
    assert_eq!(pragma("foreign_keys"), "Integer(1)");
    assert_eq!(pragma("synchronous"), "Integer(2)"); // FULL
                                                     // The wait for a lock is our busy handler (`wait_while_busy`), which replaces SQLite's
                                                     // busy_timeout; its bound is the next test's.
    assert_eq!(pragma("busy_timeout"), "Integer(0)");
}

#[test]
fn the_busy_handler_waits_as_sqlite_does_for_busy_timeout() {
    let delays: Vec<Duration> = (0..).map_while(crate::registry::busy_delay).collect();
    assert_eq!(
        delays.iter().sum::<Duration>(),
        crate::registry::BUSY_TIMEOUT
    );
    assert_eq!(delays[0], Duration::from_millis(1));
    assert_eq!(delays[11], Duration::from_millis(100));
    assert_eq!(delays[12], Duration::from_millis(100));
}

#[test]
fn children_opening_a_new_database_at_once_all_succeed() {
    // Each thread stands for a child opening the registry right after the fork: they race to
    // switch the new file to WAL and to migrate it.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    let barrier = std::sync::Barrier::new(6);
    thread::scope(|scope| {
        for index in 0..6 {
            let (path, barrier) = (&path, &barrier);
            scope.spawn(move || {
                barrier.wait();
                let registry = Registry::open(&sqlite(path)).expect("open");
                registry
                    .create(&Image::new(format!("from-{index}")))
                    .expect("create");
            });
        }
    });
    let registry = Registry::open(&sqlite(&path)).expect("open");
    assert_eq!(registry.list(&ListQuery::default()).expect("list").len(), 6);
}

#[test]
fn migrating_twice_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    Registry::open(&sqlite(&path))
        .expect("open")
        .create(&counter_image("kept"))
        .expect("create");
    let mut connection = sql::Connection::Sqlite(Connection::open(&path).expect("open"));
    migrations::migrate(&mut connection, None).expect("migrate again");
    migrations::migrate(&mut connection, None).expect("and again");
    let version: i64 = connection
        .as_sqlite()
        .expect("SQLite")
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("user_version");
    assert_eq!(version, MIGRATIONS.len() as i64);
    drop(connection);
    let registry = Registry::open(&sqlite(&path)).expect("reopen");
    let image = registry.get("kept").expect("get").expect("found");
    assert_eq!(image.properties["counter"], "0");
}

/// The two engines' lists describe the same schema version by version: the same number of
/// entries, and each creates or alters the same tables and indexes (by name).
#[test]
fn both_engines_migrate_through_the_same_versions() {
    assert_eq!(MIGRATIONS.len(), POSTGRES_MIGRATIONS.len());
    let names = |sql: &str| -> Vec<String> {
        let words: Vec<&str> = sql.split_whitespace().collect();
        let mut names: Vec<String> = words
            .windows(3)
            .filter(|w| {
                matches!(
                    (w[0], w[1]),
                    ("CREATE", "TABLE" | "INDEX") | ("ALTER", "TABLE")
                )
            })
            .map(|w| w[2].to_string())
            .chain(
                words
                    .windows(4)
                    .filter(|w| w[0] == "CREATE" && w[1] == "UNIQUE" && w[2] == "INDEX")
                    .map(|w| w[3].to_string()),
            )
            .collect();
        names.sort();
        names
    };
    for (version, (sqlite, postgres)) in MIGRATIONS.iter().zip(POSTGRES_MIGRATIONS).enumerate() {
        assert_eq!(names(sqlite), names(postgres), "migration {}", version + 1);
    }
}

#[test]
fn migrations_run_from_every_older_version() {
    // Applying the list one entry at a time, as successive releases would, ends where applying
    // it at once does.
    let schema = |connection: &Connection| -> Vec<String> {
        let mut statement = connection
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .expect("prepare");
        let rows = statement.query_map([], |row| row.get(0)).expect("query");
        rows.collect::<rusqlite::Result<_>>().expect("rows")
    };
    let mut at_once = sql::Connection::Sqlite(Connection::open_in_memory().expect("open"));
    migrations::migrate(&mut at_once, None).expect("migrate");
    let stepwise = Connection::open_in_memory().expect("open");
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        stepwise.execute_batch(sql).expect("step");
        stepwise
            .pragma_update(None, "user_version", index as i64 + 1)
            .expect("version");
    }
    let mut stepwise = sql::Connection::Sqlite(stepwise);
    migrations::migrate(&mut stepwise, None).expect("migrate");
    let schema = |connection: &sql::Connection| schema(connection.as_sqlite().expect("SQLite"));
    assert_eq!(schema(&stepwise), schema(&at_once));
}

#[test]
fn a_schema_newer_than_the_binary_is_used_as_it_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    Registry::open(&sqlite(&path)).expect("open");
    let connection = Connection::open(&path).expect("open");
    let newer = MIGRATIONS.len() as i64 + 1;
    connection
        .pragma_update(None, "user_version", newer)
        .expect("set version");
    drop(connection);
    let registry = Registry::open(&sqlite(&path)).expect("open a newer schema");
    registry.create(&Image::new("works")).expect("create");
    let connection = Connection::open(&path).expect("open");
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("user_version");
    assert_eq!(version, newer);
}

#[test]
fn errors_display_one_level_with_the_cause_as_source() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"not a folder").expect("write");
    let error = Registry::open(&sqlite(&blocker.join("registry.sqlite")))
        .err()
        .expect("open fails");
    assert!(
        matches!(error, RegistryError::CreateFolder { .. }),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .contains("cannot create the registry folder"));
    assert!(error.source().is_some());
    assert!(!error.is_busy());
}

// ---------------------------------------------------------------------------------------------
// Abandoned uploads

#[test]
fn recover_abandoned_uploads_requeues_only_images_whose_uploader_is_gone() {
    let (_dir, registry) = temp_registry();
    let image = |id: &str, status: &str, owner: Option<&str>| {
        let mut image = Image::new(id);
        image.status = status.parse().expect("a status");
        image.upload_owner = owner.map(str::to_string);
        image.tags = vec!["t".to_string()];
        image
    };
    for image in [
        image("alive", "saving", Some("pid:1")),
        image("dead", "saving", Some("pid:2")),
        image("ownerless", "saving", None),
        image("queued", "queued", Some("pid:2")),
        image("active", "active", None),
        image("deleted", "saving", Some("pid:2")),
    ] {
        registry.create(&image).expect("create");
    }
    registry
        .delete("deleted", |_| Ok::<(), RegistryError>(()))
        .expect("delete");

    let recovered = registry
        .recover_abandoned_uploads(|owner| owner == "pid:1")
        .expect("recover");
    // Returned as they were, so the caller can find their temporary files.
    assert_eq!(ids(&recovered), ["dead", "ownerless"]);
    assert_eq!(recovered[0].upload_owner.as_deref(), Some("pid:2"));
    assert_eq!(recovered[0].status, ImageStatus::Saving);
    assert_eq!(recovered[0].tags, ["t"]);

    for (id, status, owner) in [
        ("alive", "saving", Some("pid:1")),
        ("dead", "queued", None),
        ("ownerless", "queued", None),
        ("queued", "queued", Some("pid:2")),
        ("active", "active", None),
    ] {
        let stored = registry.get(id).expect("get").expect("found");
        assert_eq!(
            (stored.status.as_str(), stored.upload_owner.as_deref()),
            (status, owner),
            "{id}"
        );
        assert_eq!(stored.tags, ["t"], "{id} keeps its tags");
    }
    assert!(registry
        .recover_abandoned_uploads(|_| false)
        .expect("recover again")
        .iter()
        .all(|image| image.id == "alive"));
}

// ---------------------------------------------------------------------------------------------
// Node leases

#[test]
fn a_node_is_live_until_its_lease_expires_and_a_renewal_never_shortens_it() {
    let (_dir, registry) = temp_registry();
    assert!(registry.live_nodes().expect("live").is_empty());
    let hour = Duration::from_secs(3600);
    assert!(registry
        .renew_node_lease("node-a", "m1", hour)
        .expect("renew a"));
    assert!(registry
        .renew_node_lease("node-b", "m2", Duration::ZERO)
        .expect("renew b"));
    let live = registry.live_nodes().expect("live");
    assert_eq!(live, ["node-a".to_string()].into());
    // A shorter renewal (a child whose pass came late) leaves the longer lease.
    assert!(registry
        .renew_node_lease("node-a", "m1", Duration::ZERO)
        .expect("renew a again"));
    assert!(registry.live_nodes().expect("live").contains("node-a"));
    // Another machine under a live node's name is refused; under an expired one, it takes it.
    assert!(!registry
        .renew_node_lease("node-a", "m3", hour)
        .expect("a clash"));
    assert!(registry
        .renew_node_lease("node-b", "m3", hour)
        .expect("b taken over"));
    assert_eq!(registry.live_nodes().expect("live").len(), 2);
}

#[test]
fn a_transaction_with_a_failed_statement_never_commits() {
    let (_dir, registry) = temp_registry();
    let mut lease = registry.lease().expect("lease");
    let transaction = lease.begin_write().expect("begin");
    transaction
        .execute(
            "INSERT INTO node_leases (node, instance, expires_order) VALUES ('x', 'm', 1)",
            &[],
        )
        .expect("insert");
    // A statement that fails, its error ignored by the caller.
    let _ = transaction.execute("INSERT INTO no_such_table VALUES (1)", &[]);
    match transaction.commit() {
        // SQLite goes on after a failed statement: the insert before it is committed.
        Ok(()) => assert_eq!(lease.dialect(), sql::Dialect::Sqlite),
        // PostgreSQL rolled it back: the commit says so instead of succeeding.
        Err(error) => assert_eq!(lease.dialect(), sql::Dialect::Postgres, "{error}"),
    }
    let kept = lease
        .query_opt("SELECT count(*) FROM node_leases", &[], |row| {
            row.get::<i64>(0)
        })
        .expect("count")
        .expect("a row");
    assert_eq!(kept, i64::from(lease.dialect() == sql::Dialect::Sqlite));
}
