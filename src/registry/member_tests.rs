//! Tests of image members and of what a non-admin project sees: every member call, the quota
//! and duplicates, members of deleted images, and Glance's `is_image_visible`.

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn temp_registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(&dir.path().join("registry.sqlite")).expect("open registry");
    (dir, registry)
}

fn member_ids(members: &[Member]) -> Vec<String> {
    members
        .iter()
        .map(|member| member.member_id.clone())
        .collect()
}

fn shared_image(registry: &Registry, id: &str, owner: Option<&str>) {
    let mut image = Image::new(id);
    image.owner = owner.map(str::to_string);
    registry.create(&image).expect("create");
}

fn delete_image(registry: &Registry, id: &str) {
    registry
        .delete(id, |_| Ok::<(), RegistryError>(()))
        .expect("delete")
        .expect("found");
}

/// Runs SQL on the registry's file directly, as another binary sharing it would.
fn raw_execute(registry: &Registry, sql: &str) {
    let connection = rusqlite::Connection::open(registry.path()).expect("open");
    connection.execute_batch(sql).expect("raw sql");
}

// ---------------------------------------------------------------------------------------------
// Member calls

#[test]
fn member_status_words_round_trip() {
    for status in MemberStatus::ALL {
        assert_eq!(MemberStatus::parse(status.as_str()), Some(status));
    }
    assert_eq!(
        MemberStatus::ALL.map(MemberStatus::as_str),
        ["pending", "accepted", "rejected"]
    );
    for word in ["all", "Accepted", "", "accepted "] {
        assert_eq!(MemberStatus::parse(word), None, "{word:?}");
    }
}

#[test]
fn add_member_makes_a_pending_member_listed_in_the_order_added() {
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    for project in ["p2", "p1", "p3"] {
        let member = registry
            .add_member("img", project, None)
            .expect("add")
            .expect("image exists");
        assert_eq!(
            (member.image_id.as_str(), member.member_id.as_str()),
            ("img", project)
        );
        assert_eq!(member.status, MemberStatus::Pending);
        assert_eq!(member.created_at.len(), "YYYY-MM-DDTHH:MM:SSZ".len());
        assert_eq!(member.created_at, member.updated_at);
        assert_eq!(
            registry.member("img", project).expect("member"),
            Some(member)
        );
    }
    let members = registry.members("img").expect("members");
    assert_eq!(member_ids(&members), ["p2", "p1", "p3"]);
    assert_eq!(registry.member("img", "p4").expect("member"), None);
    assert_eq!(registry.member("other", "p1").expect("member"), None);
    assert!(registry.members("other").expect("members").is_empty());
}

#[test]
fn adding_a_member_twice_is_duplicate() {
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    registry.add_member("img", "p1", None).expect("add");
    let error = registry.add_member("img", "p1", None).expect_err("twice");
    assert!(matches!(error, RegistryError::Duplicate), "{error:?}");
    // The same project may be a member of another image.
    shared_image(&registry, "img2", Some("owner"));
    assert!(registry
        .add_member("img2", "p1", None)
        .expect("add")
        .is_some());
    assert_eq!(
        member_ids(&registry.members("img").expect("members")),
        ["p1"]
    );
}

#[test]
fn the_member_quota_counts_live_members_before_duplicates() {
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    let error = registry
        .add_member("img", "p0", Some(0))
        .expect_err("quota 0");
    assert!(
        matches!(error, RegistryError::MemberQuota { limit: 0 }),
        "{error:?}"
    );
    for project in ["p1", "p2"] {
        registry.add_member("img", project, Some(2)).expect("add");
    }
    let error = registry.add_member("img", "p3", Some(2)).expect_err("full");
    assert!(
        matches!(error, RegistryError::MemberQuota { limit: 2 }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the image has the most members allowed (2)"
    );
    // Glance checks the quota (ImageMemberFactoryProxy) before the duplicate (ImageMemberRepo).
    let error = registry.add_member("img", "p1", Some(2)).expect_err("full");
    assert!(
        matches!(error, RegistryError::MemberQuota { .. }),
        "{error:?}"
    );
    // A removed member no longer counts; None is unlimited.
    assert!(registry.delete_member("img", "p1").expect("delete"));
    registry
        .add_member("img", "p3", Some(2))
        .expect("room again");
    registry.add_member("img", "p4", None).expect("unlimited");
    assert_eq!(
        member_ids(&registry.members("img").expect("members")),
        ["p2", "p3", "p4"]
    );
}

#[test]
fn set_member_status_changes_the_status_and_updated_at() {
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    registry.add_member("img", "p1", None).expect("add");
    registry.add_member("img", "p2", None).expect("add");
    // Timestamps have one-second resolution: age the stored ones instead of sleeping.
    raw_execute(
        &registry,
        "UPDATE image_members SET created_at = '2020-01-01T00:00:00Z', \
         updated_at = '2020-01-01T00:00:00Z'",
    );
    for status in [
        MemberStatus::Accepted,
        MemberStatus::Rejected,
        MemberStatus::Pending,
        MemberStatus::Accepted,
    ] {
        let member = registry
            .set_member_status("img", "p1", status)
            .expect("set")
            .expect("a member");
        assert_eq!(member.status, status);
        assert_eq!(member.created_at, "2020-01-01T00:00:00Z");
        assert_ne!(member.updated_at, "2020-01-01T00:00:00Z");
        assert_eq!(registry.member("img", "p1").expect("member"), Some(member));
    }
    let other = registry.member("img", "p2").expect("member").expect("p2");
    assert_eq!(other.status, MemberStatus::Pending);
    assert_eq!(other.updated_at, "2020-01-01T00:00:00Z");
    for (image, project) in [("img", "p3"), ("none", "p1")] {
        assert_eq!(
            registry
                .set_member_status(image, project, MemberStatus::Accepted)
                .expect("set"),
            None
        );
    }
}

#[test]
fn delete_member_removes_it_and_it_can_be_added_again_as_pending() {
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    for project in ["p1", "p2"] {
        registry.add_member("img", project, None).expect("add");
    }
    registry
        .set_member_status("img", "p1", MemberStatus::Accepted)
        .expect("accept");
    assert!(registry.delete_member("img", "p1").expect("delete"));
    assert_eq!(registry.member("img", "p1").expect("member"), None);
    assert!(!registry.delete_member("img", "p1").expect("again"));
    assert!(!registry.delete_member("img", "p9").expect("never a member"));
    assert!(!registry.delete_member("none", "p1").expect("no image"));
    assert_eq!(
        registry
            .set_member_status("img", "p1", MemberStatus::Rejected)
            .expect("set"),
        None
    );

    // Added again: pending, after the members added since, and removable again.
    let again = registry
        .add_member("img", "p1", Some(2))
        .expect("re-add")
        .expect("image exists");
    assert_eq!(again.status, MemberStatus::Pending);
    assert_eq!(
        member_ids(&registry.members("img").expect("members")),
        ["p2", "p1"]
    );
    assert!(registry.delete_member("img", "p1").expect("delete"));
    registry.add_member("img", "p1", None).expect("third time");
    let connection = rusqlite::Connection::open(registry.path()).expect("open");
    let rows: i64 = connection
        .query_row(
            "SELECT count(*) FROM image_members WHERE member_id = 'p1'",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(rows, 3, "removed memberships stay as deleted rows");
}

#[test]
fn adding_to_an_unknown_or_deleted_image_is_none() {
    let (_dir, registry) = temp_registry();
    assert_eq!(registry.add_member("none", "p1", None).expect("add"), None);
    shared_image(&registry, "gone", Some("owner"));
    delete_image(&registry, "gone");
    assert_eq!(registry.add_member("gone", "p1", None).expect("add"), None);
    assert_eq!(
        registry.add_member("gone", "p1", Some(0)).expect("add"),
        None
    );
}

#[test]
fn deleting_an_image_removes_its_members_in_the_same_transaction() {
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    for project in ["p1", "p2"] {
        registry.add_member("img", project, None).expect("add");
    }
    delete_image(&registry, "img");
    assert!(registry.members("img").expect("members").is_empty());
    assert_eq!(registry.member("img", "p1").expect("member"), None);
    assert!(!registry.delete_member("img", "p1").expect("delete"));
    assert_eq!(
        registry
            .get_with_membership("img", Some("p1"))
            .expect("get"),
        None
    );
    let connection = rusqlite::Connection::open(registry.path()).expect("open");
    let live: i64 = connection
        .query_row(
            "SELECT count(*) FROM image_members WHERE image_id = 'img' AND deleted = 0",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(live, 0);
}

#[test]
fn members_of_an_image_deleted_by_an_older_binary_never_show() {
    // A generation built before members existed deletes the image row only.
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    registry.add_member("img", "p1", None).expect("add");
    registry
        .set_member_status("img", "p1", MemberStatus::Accepted)
        .expect("accept");
    raw_execute(
        &registry,
        "UPDATE images SET deleted = 1, status = 'deleted' WHERE id = 'img'",
    );
    assert!(registry.members("img").expect("members").is_empty());
    assert_eq!(registry.member("img", "p1").expect("member"), None);
    assert_eq!(
        registry
            .set_member_status("img", "p1", MemberStatus::Rejected)
            .expect("set"),
        None
    );
    assert!(!registry.delete_member("img", "p1").expect("delete"));
    assert_eq!(registry.add_member("img", "p2", None).expect("add"), None);
}

#[test]
fn an_unknown_member_status_in_the_database_fails_the_read() {
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    registry.add_member("img", "p1", None).expect("add");
    raw_execute(&registry, "UPDATE image_members SET status = 'maybe'");
    let error = registry.member("img", "p1").expect_err("unknown status");
    assert!(matches!(error, RegistryError::Sql { .. }), "{error:?}");
    assert!(registry.members("img").is_err());
}

#[test]
fn get_with_membership_returns_the_image_and_the_projects_membership() {
    let (_dir, registry) = temp_registry();
    shared_image(&registry, "img", Some("owner"));
    registry.add_member("img", "p1", None).expect("add");
    registry
        .set_member_status("img", "p1", MemberStatus::Rejected)
        .expect("reject");
    let image = registry.get("img").expect("get").expect("found");

    let (found, membership) = registry
        .get_with_membership("img", Some("p1"))
        .expect("get")
        .expect("found");
    assert_eq!(found, image);
    let membership = membership.expect("p1 is a member");
    assert_eq!(membership.status, MemberStatus::Rejected);
    assert_eq!(
        registry.member("img", "p1").expect("member"),
        Some(membership)
    );

    for project in [Some("p2"), Some("owner"), None] {
        let (found, membership) = registry
            .get_with_membership("img", project)
            .expect("get")
            .expect("found");
        assert_eq!(found, image);
        assert_eq!(membership, None, "{project:?}");
    }
    assert_eq!(
        registry
            .get_with_membership("none", Some("p1"))
            .expect("get"),
        None
    );
    registry.delete_member("img", "p1").expect("delete");
    assert_eq!(
        registry
            .get_with_membership("img", Some("p1"))
            .expect("get")
            .expect("found")
            .1,
        None
    );
}

#[test]
fn image_visible_to_is_glances_is_image_visible() {
    let image = |owner: Option<&str>, visibility: &str| {
        let mut image = Image::new("img");
        image.owner = owner.map(str::to_string);
        image.visibility = visibility.to_string();
        image
    };
    let membership = |image_id: &str, member_id: &str, status| Member {
        image_id: image_id.to_string(),
        member_id: member_id.to_string(),
        status,
        created_at: String::new(),
        updated_at: String::new(),
    };
    let pending = membership("img", "p", MemberStatus::Pending);
    let rejected = membership("img", "p", MemberStatus::Rejected);
    let of_another_project = membership("img", "q", MemberStatus::Accepted);
    let of_another_image = membership("other", "p", MemberStatus::Accepted);
    for (owner, visibility, member, visible) in [
        // No owner: visible to everyone, whatever the visibility.
        (None, "private", None, true),
        (None, "shared", None, true),
        (Some("q"), "public", None, true),
        (Some("q"), "community", None, true),
        (Some("p"), "private", None, true),
        (Some("p"), "shared", None, true),
        (Some("q"), "private", None, false),
        (Some("q"), "shared", None, false),
        // A membership in any status shows a shared image, and only a shared one.
        (Some("q"), "shared", Some(&pending), true),
        (Some("q"), "shared", Some(&rejected), true),
        (Some("q"), "private", Some(&pending), false),
        (Some("q"), "shared", Some(&of_another_project), false),
        (Some("q"), "shared", Some(&of_another_image), false),
    ] {
        assert_eq!(
            image_visible_to(&image(owner, visibility), "p", member),
            visible,
            "{owner:?} {visibility} {member:?}"
        );
    }
}
