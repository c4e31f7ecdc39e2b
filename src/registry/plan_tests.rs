//! Query plans of the list shapes glanceclient and Horizon send (issue 13, part 5): each must
//! walk an index in list order (no full scan of `images`, no sort of every match in a temporary
//! b-tree), so that a page costs about the same at 100,000 images as at 1,000. A plan that
//! regresses fails here, without a timed assertion; `scripts/bench-registry` measures the
//! times.

use super::sql::params;

use super::*;

/// Images in the test registry: enough that a plan which reads them all would show in a
/// benchmark, while the planner (without `ANALYZE` statistics, as in the field) decides from
/// the schema and the query alone.
const IMAGES: usize = 2000;

/// A registry holding `IMAGES` images spread as `examples/registry_list.rs` spreads them:
/// 100 owners, every visibility, mostly active, a `web` tag on 2 %, and project-7 an accepted
/// member of some shared images.
fn filled_registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry =
        Registry::open(&Database::Sqlite(dir.path().join("registry.sqlite"))).expect("open");
    {
        let mut lease = registry.lease().expect("lease");
        let transaction = lease.begin_write().expect("begin");
        for index in 0..IMAGES {
            let id = format!("image-{index:05}");
            let visibility = ["public", "private", "shared", "community"][index % 4];
            let status = if index % 10 == 9 { "queued" } else { "active" };
            transaction
                .execute(
                    "INSERT INTO images (id, name, status, visibility, owner, created_at, \
                     updated_at, created_order, updated_order) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?7)",
                    params![
                        id,
                        format!("name-{}", index % 500),
                        status,
                        visibility,
                        format!("project-{}", index % 100),
                        format!("2026-01-01T00:{:02}:{:02}Z", index / 60 % 60, index % 60),
                        index as i64,
                    ],
                )
                .expect("insert image");
            if index % 50 == 0 {
                transaction
                    .execute(
                        "INSERT INTO image_tags (image_id, tag, created_at, created_order) \
                         SELECT id, 'web', created_at, created_order FROM images WHERE id = ?1",
                        params![id],
                    )
                    .expect("insert tag");
            }
            if visibility == "shared" && index % 3 == 0 {
                transaction
                    .execute(
                        "INSERT INTO image_members (image_id, member_id, status, created_at, \
                         updated_at) VALUES (?1, 'project-7', 'accepted', 'x', 'x')",
                        params![id],
                    )
                    .expect("insert member");
            }
        }
        transaction.commit().expect("commit");
    }
    (dir, registry)
}

/// The lines of `EXPLAIN QUERY PLAN` for the page `query` selects.
fn plan(registry: &Registry, query: &ListQuery) -> String {
    let lease = registry.lease().expect("lease");
    let (sql, values) = query::statement(&lease, query).expect("statement");
    let values: Vec<&dyn sql::ToSql> = values.iter().map(|v| v as &dyn sql::ToSql).collect();
    let lines: Vec<String> = lease
        .query_map(&format!("EXPLAIN QUERY PLAN {sql}"), &values, |row| {
            row.get(3)
        })
        .expect("plan");
    lines.join("\n")
}

/// Asserts that the plan of `query`, from the start and after a marker, reads `images` through
/// `index` in list order: no line scans `images` without an index, none sorts in a temporary
/// b-tree, the named index is the one used, and after a marker it is entered at the marker.
fn assert_walks(registry: &Registry, what: &str, query: ListQuery, index: &str) {
    assert_walks_table(registry, what, query, "images", index);
}

/// [`assert_walks`] for a walk that reads `table` (an alias in the query) through `index`.
fn assert_walks_table(registry: &Registry, what: &str, query: ListQuery, table: &str, index: &str) {
    let first = registry.list(&query).expect("list");
    assert!(!first.is_empty(), "{what}: the fixture lists something");
    let after_marker = ListQuery {
        marker: Some(first[first.len() / 2].id.clone()),
        ..query.clone()
    };
    for (page, query) in [("first page", query), ("after a marker", after_marker)] {
        let plan = plan(registry, &query);
        let context = format!("{what}, {page}:\n{plan}");
        for line in plan.lines() {
            let reads_images = line.starts_with("SCAN images") || line.starts_with("SEARCH images");
            assert!(
                !reads_images || line.contains("USING"),
                "{context}\n(a full scan of images)"
            );
        }
        // The index's name as a whole word: a plan using `images_by_created_x` must not pass
        // for one using `images_by_created`.
        let uses_index = |line: &str| {
            let words: Vec<&str> = line.split_whitespace().collect();
            line.contains(&format!("{table} USING"))
                && words
                    .windows(2)
                    .any(|pair| pair[0] == "INDEX" && pair[1] == index)
        };
        assert!(
            plan.lines().any(uses_index),
            "{context}\n(expected {index})"
        );
        // After a marker the walk starts at the marker, a range of the index (`name>?`,
        // `(created_at,created_order,id)<(?,?,?)`), not at the index's first entry.
        let starts_at_marker = |line: &str| uses_index(line) && line.contains(['<', '>']);
        assert!(
            page == "first page" || plan.lines().any(starts_at_marker),
            "{context}\n(the walk does not start at the marker)"
        );
        assert!(
            !plan.contains("TEMP B-TREE"),
            "{context}\n(a sort of every match)"
        );
    }
}

fn page(filters: Filters, sort: Vec<(SortKey, SortDir)>) -> ListQuery {
    ListQuery {
        filters,
        sort,
        limit: 25,
        marker: None,
    }
}

#[test]
fn the_default_list_walks_the_creation_index() {
    let (_dir, registry) = filled_registry();
    assert_walks(
        &registry,
        "default",
        page(Filters::default(), Vec::new()),
        "images_by_created",
    );
}

#[test]
fn a_name_sort_with_a_status_filter_walks_the_status_name_index() {
    let (_dir, registry) = filled_registry();
    let filters = Filters {
        status: Some(ImageStatus::Active),
        ..Filters::default()
    };
    assert_walks(
        &registry,
        "sort_key=name&status=active",
        page(filters, vec![(SortKey::Name, SortDir::Asc)]),
        "images_by_status_name",
    );
}

#[test]
fn a_name_sort_alone_walks_the_name_index() {
    let (_dir, registry) = filled_registry();
    assert_walks(
        &registry,
        "sort_key=name",
        page(Filters::default(), vec![(SortKey::Name, SortDir::Asc)]),
        "images_by_name_created",
    );
}

#[test]
fn a_tag_with_a_visibility_walks_the_tags_entries_and_probes_each_image() {
    let (_dir, registry) = filled_registry();
    let filters = Filters {
        tags: vec!["web".to_string()],
        visibility: Some("public".to_string()),
        ..Filters::default()
    };
    let query = page(filters, Vec::new());
    assert_walks_table(
        &registry,
        "tag=web&visibility=public",
        query.clone(),
        "first_tag",
        "image_tags_by_tag_created",
    );
    let plan = plan(&registry, &query);
    assert!(
        plan.lines()
            .any(|line| line.starts_with("SEARCH images USING INDEX") && line.contains("(id=?)")),
        "one probe of images' key per tagged image:\n{plan}"
    );
    // The same page as the images walk gives: the walk changes the cost, not the answer.
    let listed: Vec<String> = registry
        .list(&query)
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    let expected: Vec<String> = (0..IMAGES)
        .rev()
        .filter(|index| index % 50 == 0 && index % 4 == 0)
        .map(|index| format!("image-{index:05}"))
        .take(25)
        .collect();
    assert_eq!(
        listed.len(),
        20,
        "every 100th of 2,000 images is public and tagged: {listed:?}"
    );
    assert_eq!(listed, expected);
}

#[test]
fn a_tag_with_a_name_sort_walks_images_and_probes_tags() {
    let (_dir, registry) = filled_registry();
    let filters = Filters {
        tags: vec!["web".to_string()],
        visibility: Some("public".to_string()),
        ..Filters::default()
    };
    let plan = plan(
        &registry,
        &page(filters, vec![(SortKey::Name, SortDir::Asc)]),
    );
    assert!(
        !plan.contains("first_tag"),
        "only the creation order walks a tag:\n{plan}"
    );
    assert!(
        plan.lines()
            .any(|line| line.contains("SEARCH image_tags USING PRIMARY KEY")),
        "one probe of image_tags' key per image:\n{plan}"
    );
}

#[test]
fn an_owner_filter_walks_the_owner_index() {
    let (_dir, registry) = filled_registry();
    let filters = Filters {
        owner: Some("project-8".to_string()),
        ..Filters::default()
    };
    assert_walks(
        &registry,
        "owner=project-8",
        page(filters, Vec::new()),
        "images_by_owner_created",
    );
}

#[test]
fn a_non_admin_projects_list_walks_the_creation_index_and_probes_members() {
    let (_dir, registry) = filled_registry();
    for member_status in [Some(MemberStatus::Accepted), None] {
        let filters = Filters {
            viewer: Some("project-7".to_string()),
            member_status,
            ..Filters::default()
        };
        let query = page(filters, Vec::new());
        assert_walks(
            &registry,
            &format!("viewer project-7, member_status {member_status:?}"),
            query.clone(),
            "images_by_created",
        );
        let plan = plan(&registry, &query);
        assert!(!plan.contains("SCAN image_members"), "{plan}");
    }
}
