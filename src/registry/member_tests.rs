//! Tests of image members and of what a non-admin project lists and sees: every member call,
//! the quota and duplicates, members of deleted images, and the list's visibility rules checked
//! against a transcription of Glance's `_select_images_query` and `_image_get_all` over every
//! viewer, visibility filter and member status.

use super::test_database::temp_database;
use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn temp_registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(&temp_database(&dir)).expect("open registry");
    (dir, registry)
}

fn ids(images: &[Image]) -> Vec<String> {
    images.iter().map(|image| image.id.clone()).collect()
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

/// Runs SQL on the registry's database directly, as another binary sharing it would.
fn raw_execute(registry: &Registry, sql: &str) {
    let connection = Connection::open(registry.database()).expect("open");
    connection.execute_batch(sql).expect("raw sql");
}

/// The count a `SELECT count(*)` finds, on a connection of its own.
fn raw_count(registry: &Registry, sql: &str) -> i64 {
    let connection = Connection::open(registry.database()).expect("open");
    connection
        .query_opt(sql, &[], |row| row.get(0))
        .expect("count")
        .expect("a row")
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
    let rows = raw_count(
        &registry,
        "SELECT count(*) FROM image_members WHERE member_id = 'p1'",
    );
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
    let live: i64 = raw_count(
        &registry,
        "SELECT count(*) FROM image_members WHERE image_id = 'img' AND deleted = 0",
    );
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
    let query = ListQuery {
        filters: Filters {
            viewer: Some("p1".to_string()),
            visibility: Some("all".to_string()),
            ..Filters::default()
        },
        ..ListQuery::default()
    };
    assert!(registry.list(&query).expect("list").is_empty());
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

// ---------------------------------------------------------------------------------------------
// What a project lists

/// One image of the visibility fixture and the memberships it ends with.
struct Fixture {
    id: &'static str,
    owner: Option<&'static str>,
    visibility: &'static str,
    /// (project, status); a status of None is a membership added and then removed.
    members: &'static [(&'static str, Option<MemberStatus>)],
    deleted: bool,
}

const ACCEPTED: Option<MemberStatus> = Some(MemberStatus::Accepted);
const PENDING: Option<MemberStatus> = Some(MemberStatus::Pending);
const REJECTED: Option<MemberStatus> = Some(MemberStatus::Rejected);
const REMOVED: Option<MemberStatus> = None;

/// Every kind of image a non-admin "p" might or might not list; "q" is another project, "r" a
/// third.
const FIXTURE: &[Fixture] = &[
    fixture("own-private", Some("p"), "private", &[]),
    fixture("own-shared", Some("p"), "shared", &[("q", REJECTED)]),
    fixture("own-shared-bare", Some("p"), "shared", &[]),
    fixture("own-community", Some("p"), "community", &[]),
    fixture("own-public", Some("p"), "public", &[]),
    fixture("q-private", Some("q"), "private", &[]),
    // Shared with p, accepted, then made private: the membership no longer counts.
    fixture("q-private-member", Some("q"), "private", &[("p", ACCEPTED)]),
    fixture("q-shared-pending", Some("q"), "shared", &[("p", PENDING)]),
    fixture(
        "q-shared-accepted",
        Some("q"),
        "shared",
        &[("r", PENDING), ("p", ACCEPTED)],
    ),
    fixture("q-shared-rejected", Some("q"), "shared", &[("p", REJECTED)]),
    fixture("q-shared-other", Some("q"), "shared", &[("r", ACCEPTED)]),
    fixture("q-shared-removed", Some("q"), "shared", &[("p", REMOVED)]),
    fixture("q-community", Some("q"), "community", &[]),
    fixture("q-public", Some("q"), "public", &[]),
    fixture("none-shared", None, "shared", &[("p", ACCEPTED)]),
    fixture("none-shared-pending", None, "shared", &[("p", PENDING)]),
    fixture("none-shared-bare", None, "shared", &[]),
    fixture("none-private", None, "private", &[]),
    fixture("none-community", None, "community", &[]),
    fixture("none-public", None, "public", &[]),
    Fixture {
        deleted: true,
        ..fixture("q-shared-deleted", Some("q"), "shared", &[("p", ACCEPTED)])
    },
    Fixture {
        deleted: true,
        ..fixture("own-deleted", Some("p"), "public", &[])
    },
];

const fn fixture(
    id: &'static str,
    owner: Option<&'static str>,
    visibility: &'static str,
    members: &'static [(&'static str, Option<MemberStatus>)],
) -> Fixture {
    Fixture {
        id,
        owner,
        visibility,
        members,
        deleted: false,
    }
}

/// Creates the fixture through the registry's own calls. Every other image is tagged "t" and
/// the names run backwards from the ids, so filters and sorts have something to bite on.
fn create_fixture(registry: &Registry) {
    for (index, fixture) in FIXTURE.iter().enumerate() {
        let mut image = Image::new(fixture.id);
        image.owner = fixture.owner.map(str::to_string);
        image.name = Some(format!("name-{:02}", FIXTURE.len() - index));
        if index % 2 == 0 {
            image.tags = vec!["t".to_string()];
        }
        // Members are added while the image is shared, as the API allows only then.
        image.visibility = "shared".to_string();
        registry.create(&image).expect("create");
        for (project, status) in fixture.members {
            registry
                .add_member(fixture.id, project, None)
                .expect("add")
                .expect("image exists");
            match status {
                Some(status) => {
                    registry
                        .set_member_status(fixture.id, project, *status)
                        .expect("set")
                        .expect("member");
                }
                None => assert!(registry.delete_member(fixture.id, project).expect("delete")),
            }
        }
        registry
            .update(fixture.id, |image| {
                image.visibility = fixture.visibility.to_string();
                Ok::<(), RegistryError>(())
            })
            .expect("update")
            .expect("found");
        if fixture.deleted {
            delete_image(registry, fixture.id);
        }
    }
}

/// Glance's answer, transcribed from `_select_images_query` and `_image_get_all`: `viewer` is
/// a non-admin's project (context.owner of a regular user), `admin_project` an admin's.
fn glance_lists(
    fixture: &Fixture,
    viewer: Option<&str>,
    admin_project: Option<&str>,
    visibility: Option<&str>,
    member_status: Option<MemberStatus>,
) -> bool {
    if fixture.deleted {
        return false;
    }
    let in_union = match viewer {
        // Admin: query_image alone.
        None => true,
        Some(project) => {
            let query_image = matches!(fixture.visibility, "public" | "community");
            let query_image_owner = fixture.owner == Some(project);
            let query_member = fixture.visibility == "shared"
                && fixture.members.iter().any(|(member, status)| {
                    *member == project
                        && status.is_some()
                        && member_status.is_none_or(|wanted| *status == Some(wanted))
                });
            query_image || query_image_owner || query_member
        }
    };
    let context_owner = viewer.or(admin_project);
    let visibility_holds = match (visibility, context_owner) {
        (Some("all"), _) => true,
        (Some(wanted), _) => fixture.visibility == wanted,
        (None, None) => fixture.visibility != "community",
        (None, Some(owner)) => fixture.owner == Some(owner) || fixture.visibility != "community",
    };
    in_union && visibility_holds
}

fn viewer_query(
    viewer: Option<&str>,
    admin_project: Option<&str>,
    visibility: Option<&str>,
    member_status: Option<MemberStatus>,
) -> ListQuery {
    ListQuery {
        filters: Filters {
            viewer: viewer.map(str::to_string),
            admin_project: admin_project.map(str::to_string),
            visibility: visibility.map(str::to_string),
            member_status,
            ..Filters::default()
        },
        sort: vec![(SortKey::Id, SortDir::Asc)],
        ..ListQuery::default()
    }
}

const VISIBILITIES: [Option<&str>; 6] = [
    None,
    Some("public"),
    Some("private"),
    Some("shared"),
    Some("community"),
    Some("all"),
];

const MEMBER_STATUSES: [Option<MemberStatus>; 4] = [
    None,
    Some(MemberStatus::Pending),
    Some(MemberStatus::Accepted),
    Some(MemberStatus::Rejected),
];

/// (viewer, admin_project): non-admins p, q and r, a non-admin of a project nothing is shared
/// with, an admin of p and an admin without a project.
const CALLERS: [(Option<&str>, Option<&str>); 6] = [
    (Some("p"), None),
    (Some("q"), None),
    (Some("r"), None),
    (Some("lonely"), None),
    (None, Some("p")),
    (None, None),
];

#[test]
fn a_list_holds_exactly_what_glance_lists_for_every_caller_visibility_and_member_status() {
    let (_dir, registry) = temp_registry();
    create_fixture(&registry);
    for (viewer, admin_project) in CALLERS {
        for visibility in VISIBILITIES {
            for member_status in MEMBER_STATUSES {
                let query = viewer_query(viewer, admin_project, visibility, member_status);
                let listed = ids(&registry.list(&query).expect("list"));
                let mut expected: Vec<String> = FIXTURE
                    .iter()
                    .filter(|fixture| {
                        glance_lists(fixture, viewer, admin_project, visibility, member_status)
                    })
                    .map(|fixture| fixture.id.to_string())
                    .collect();
                expected.sort();
                assert_eq!(
                    listed, expected,
                    "viewer {viewer:?}, admin of {admin_project:?}, visibility {visibility:?}, \
                     member_status {member_status:?}"
                );
            }
        }
    }
}

#[test]
fn a_non_admin_lists_these_images_by_default_and_with_visibility_all() {
    // The reference above, spelled out for the cases the API sends most.
    let (_dir, registry) = temp_registry();
    create_fixture(&registry);
    let list = |visibility, member_status| {
        let query = viewer_query(Some("p"), None, visibility, member_status);
        ids(&registry.list(&query).expect("list"))
    };
    // GET /v2/images: member_status=accepted, no visibility.
    assert_eq!(
        list(None, Some(MemberStatus::Accepted)),
        [
            "none-public",
            "none-shared",
            "own-community",
            "own-private",
            "own-public",
            "own-shared",
            "own-shared-bare",
            "q-public",
            "q-shared-accepted",
        ]
    );
    // visibility=all&member_status=all.
    assert_eq!(
        list(Some("all"), None),
        [
            "none-community",
            "none-public",
            "none-shared",
            "none-shared-pending",
            "own-community",
            "own-private",
            "own-public",
            "own-shared",
            "own-shared-bare",
            "q-community",
            "q-public",
            "q-shared-accepted",
            "q-shared-pending",
            "q-shared-rejected",
        ]
    );
    // visibility=shared&member_status=pending: own shared images whatever their members.
    assert_eq!(
        list(Some("shared"), Some(MemberStatus::Pending)),
        [
            "none-shared-pending",
            "own-shared",
            "own-shared-bare",
            "q-shared-pending",
        ]
    );
    // visibility=community: everyone's.
    assert_eq!(
        list(Some("community"), Some(MemberStatus::Accepted)),
        ["none-community", "own-community", "q-community"]
    );
}

#[test]
fn the_viewer_restriction_combines_with_the_other_filters() {
    let (_dir, registry) = temp_registry();
    create_fixture(&registry);
    let tagged: Vec<&str> = FIXTURE
        .iter()
        .enumerate()
        .filter(|(index, _)| index % 2 == 0)
        .map(|(_, fixture)| fixture.id)
        .collect();
    for (viewer, admin_project) in CALLERS {
        for member_status in MEMBER_STATUSES {
            let mut query = viewer_query(viewer, admin_project, Some("all"), member_status);
            query.filters.tags = vec!["t".to_string()];
            query.filters.owner = Some("q".to_string());
            let listed = ids(&registry.list(&query).expect("list"));
            let mut expected: Vec<String> = FIXTURE
                .iter()
                .filter(|fixture| {
                    glance_lists(fixture, viewer, admin_project, Some("all"), member_status)
                        && tagged.contains(&fixture.id)
                        && fixture.owner == Some("q")
                })
                .map(|fixture| fixture.id.to_string())
                .collect();
            expected.sort();
            assert_eq!(
                listed, expected,
                "{viewer:?} {admin_project:?} {member_status:?}"
            );
        }
    }
}

#[test]
fn marker_pages_walk_a_viewers_list_exactly_once() {
    let (_dir, registry) = temp_registry();
    create_fixture(&registry);
    let sorts = [
        Vec::new(),
        vec![(SortKey::Name, SortDir::Asc)],
        vec![
            (SortKey::Owner, SortDir::Desc),
            (SortKey::Name, SortDir::Asc),
        ],
        vec![(SortKey::Visibility, SortDir::Asc)],
    ];
    for (viewer, admin_project) in CALLERS {
        for member_status in [None, Some(MemberStatus::Accepted)] {
            for sort in &sorts {
                let mut everything =
                    viewer_query(viewer, admin_project, Some("all"), member_status);
                everything.sort = sort.clone();
                let whole = ids(&registry.list(&everything).expect("list"));
                for page_size in [1, 2, 5] {
                    let mut walked = Vec::new();
                    let mut marker = None;
                    loop {
                        let query = ListQuery {
                            limit: page_size,
                            marker: marker.clone(),
                            ..everything.clone()
                        };
                        let page = registry.list(&query).expect("page");
                        walked.extend(ids(&page));
                        if page.len() < page_size {
                            break;
                        }
                        marker = page.last().map(|image| image.id.clone());
                    }
                    assert_eq!(
                        walked, whole,
                        "{viewer:?} {admin_project:?} {member_status:?} {sort:?} {page_size}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_marker_the_viewer_may_not_see_is_refused_and_one_it_may_see_need_not_be_listed() {
    let (_dir, registry) = temp_registry();
    create_fixture(&registry);
    let with_marker = |marker: &str| ListQuery {
        marker: Some(marker.to_string()),
        ..viewer_query(Some("p"), None, None, Some(MemberStatus::Accepted))
    };
    for marker in [
        "q-private",
        "q-private-member",
        "q-shared-other",
        "q-shared-removed",
    ] {
        let error = registry.list(&with_marker(marker)).expect_err(marker);
        assert!(
            matches!(error, RegistryError::MarkerNotVisible),
            "{marker}: {error:?}"
        );
    }
    for marker in ["q-shared-deleted", "own-deleted", "unknown"] {
        let error = registry.list(&with_marker(marker)).expect_err(marker);
        assert!(
            matches!(error, RegistryError::BadMarker),
            "{marker}: {error:?}"
        );
    }
    // Shown but not listed by default: pending and rejected memberships, unowned images,
    // other projects' community images. The page starts after them in id order.
    let listed = ids(&registry
        .list(&viewer_query(
            Some("p"),
            None,
            None,
            Some(MemberStatus::Accepted),
        ))
        .expect("list"));
    for marker in [
        "q-shared-pending",
        "q-shared-rejected",
        "none-private",
        "none-shared-bare",
        "q-community",
    ] {
        assert!(
            !listed.iter().any(|id| id == marker),
            "{marker} is not listed"
        );
        let query = ListQuery {
            limit: 1,
            ..with_marker(marker)
        };
        let page = registry.list(&query).expect(marker);
        let next = listed.iter().find(|id| id.as_str() > marker);
        assert_eq!(ids(&page).first(), next, "{marker}");
    }
    // An admin may start from any live image.
    let query = ListQuery {
        marker: Some("q-private".to_string()),
        ..viewer_query(None, None, None, None)
    };
    registry.list(&query).expect("admin marker");
}

#[test]
fn a_viewers_list_probes_the_member_index_instead_of_scanning_members() {
    let (_dir, registry) = temp_registry();
    create_fixture(&registry);
    for member_status in [None, Some(MemberStatus::Accepted)] {
        let query = ListQuery {
            marker: Some("q-public".to_string()),
            limit: 10,
            ..viewer_query(Some("p"), None, None, member_status)
        };
        let lease = registry.lease().expect("lease");
        let (sql, values) = query::statement(&lease, &query).expect("statement");
        let values: Vec<&dyn sql::ToSql> = values.iter().map(|v| v as &dyn sql::ToSql).collect();
        let plan: Vec<String> = lease
            .query_map(&format!("EXPLAIN QUERY PLAN {sql}"), &values, |row| {
                row.get(3)
            })
            .expect("plan");
        let plan = plan.join("\n");
        assert!(
            plan.lines()
                .any(|line| line.contains("image_members USING") && line.contains("INDEX")),
            "{plan}"
        );
        assert!(!plan.contains("SCAN image_members"), "{plan}");
    }
}
