//! Listing images: filters, sort keys and marker pagination, turned into one SQL query.
//!
//! # Order
//!
//! The images are sorted by the requested keys, then by `created_at` descending and `id`
//! descending unless those keys were requested already (Glance's `paginate_query` appends the
//! same two). `id` is unique, so the order is total and the same on every call.
//! `created_at` and `updated_at` have one-second resolution; ties within a second are ordered by
//! a hidden microsecond column written with them, in the same direction.
//!
//! NULL is smaller than every value, as in SQLite and MySQL (the database Glance is usually
//! run on): an ascending sort lists images without a name (or size, owner, formats) first, a
//! descending sort lists them last. Text compares bytewise (SQLite's BINARY collation); `status`
//! sorts by its stored word (`active` before `queued`), as in Glance, not by lifecycle order.
//!
//! # Visibility
//!
//! [`Filters::viewer`] restricts a list to what a non-admin project may list, with Glance's
//! rules (see the `member` module for them and where they come from): the condition is
//! "owned by the project, or public or community, or shared with the project in the requested
//! member status", ANDed with every other filter and then with the visibility filter. It is one
//! `WHERE` on `images` rather than Glance's UNION of three queries; the two select the same
//! rows, since each of Glance's branches carries the same filters.
//!
//! # Performance
//!
//! The membership test is a correlated `EXISTS` that probes an index once per candidate image
//! (`image_members_by_member`, or `image_members_live` when any status will do), never a scan
//! of `image_members`; the candidates come in sort order, so a page stops reading once it is
//! full. A project that can list few of many images still reads every `images` row, as any
//! list with a filter no index serves does.
//!
//! The lists glanceclient and Horizon send (the default order; a name sort, alone or with a
//! status filter; a visibility or owner filter, with or without tags) each have an index that
//! holds their whole order after the equality column (migrations 1 and 3), so SQLite walks it
//! in list order and stops at the page's end instead of sorting every match; the ORDER BY this
//! module writes is that order, column for column, and the marker starts the walk at the
//! marker (see [`after_marker`]). A tag filter in the creation order walks the first tag's
//! entries instead, which carry their image's creation keys (migration 5, [`Walk::FirstTag`]),
//! and probes `images` once per tagged image; with another order a tag is tested by one probe
//! of `image_tags`' primary key (image_id, tag) per image walked. `plan_tests` asserts each of
//! those plans.
//!
//! # Pagination
//!
//! A marker is the id of an image that is not deleted (it need not match the filters), and for
//! a viewer one it may see (Glance: a marker it may not see is a 403, not a 400). The page
//! starts strictly after the marker's position in the order above: the query compares the sort
//! columns with the marker's values, column by column, with the NULL rule above. Because the
//! order is total, walking pages with the last id of each page as the next marker returns every
//! image exactly once, as long as no image is changed meanwhile.

use super::sql::{params, Connection, Dialect, ToSql, Value};

use super::image::{self, Image};
use super::member::{self, MemberStatus};
use super::{ImageStatus, RegistryError};

/// What to list and in which order.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    pub filters: Filters,
    /// The requested sort, most significant first; the tie-breakers of the module doc follow.
    pub sort: Vec<(SortKey, SortDir)>,
    /// At most this many images; the API applies its own default and maximum.
    pub limit: usize,
    /// Start after the image with this id.
    pub marker: Option<String>,
}

impl Default for ListQuery {
    /// No filters, the default order, no limit, from the start.
    fn default() -> ListQuery {
        ListQuery {
            filters: Filters::default(),
            sort: Vec::new(),
            limit: usize::MAX,
            marker: None,
        }
    }
}

/// Conditions an image must meet to be listed; every field that is set must hold. Deleted
/// images are never listed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub name: Option<String>,
    pub status: Option<ImageStatus>,
    /// None lists every visibility but "community", except the community images of the
    /// listing project ([`Filters::viewer`], or else [`Filters::admin_project`]): Glance lists
    /// other projects' community images only when asked. `Some("all")` lists every
    /// visibility, any other value exactly that one. Applied after the viewer's restriction.
    pub visibility: Option<String>,
    pub owner: Option<String>,
    /// Equality filters on base attributes Glance also filters by.
    pub id: Option<String>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub checksum: Option<String>,
    pub os_hash_value: Option<String>,
    /// The image must carry every one of these tags.
    pub tags: Vec<String>,
    pub protected: Option<bool>,
    /// None is the same as `Some(false)`: hidden images are listed only with `os_hidden=true`,
    /// and then only they are.
    pub os_hidden: Option<bool>,
    /// Inclusive; an image without a size does not match a size filter.
    pub size_min: Option<u64>,
    /// Inclusive.
    pub size_max: Option<u64>,
    /// Custom property equality filters; all must hold.
    pub properties: Vec<(String, String)>,
    /// Some(project): list what a non-admin of that project may list (Glance's
    /// `regular_user`): its own images, public and community ones, and shared ones it is a
    /// member of in [`Filters::member_status`]. None: no restriction (an admin, or no
    /// authentication).
    pub viewer: Option<String>,
    /// With a viewer, the membership status a shared image of another project must be in;
    /// None is any status (Glance's `member_status=all`). The API passes `Some(Accepted)`,
    /// Glance's default. Without a viewer it is ignored, as in Glance.
    pub member_status: Option<MemberStatus>,
    /// Without a viewer (an admin list), the admin's own project, if any: with no visibility
    /// filter Glance lists the caller's own community images, admin or not. Ignored with a
    /// viewer, which is the listing project then.
    pub admin_project: Option<String>,
}

/// An attribute images can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Status,
    ContainerFormat,
    DiskFormat,
    Size,
    Id,
    CreatedAt,
    UpdatedAt,
    Visibility,
    Owner,
    MinRam,
    MinDisk,
}

/// The direction of one sort key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortDir {
    Asc,
    Desc,
}

/// Every sort key once: its Glance name (`sort_key`, `sort=`) and the columns it sorts by.
const SORT_KEYS: &[(SortKey, &str, &[&str])] = &[
    (SortKey::Name, "name", &["name"]),
    (SortKey::Status, "status", &["status"]),
    (
        SortKey::ContainerFormat,
        "container_format",
        &["container_format"],
    ),
    (SortKey::DiskFormat, "disk_format", &["disk_format"]),
    (SortKey::Size, "size", &["size"]),
    (SortKey::Id, "id", &["id"]),
    (
        SortKey::CreatedAt,
        "created_at",
        &["created_at", "created_order"],
    ),
    (
        SortKey::UpdatedAt,
        "updated_at",
        &["updated_at", "updated_order"],
    ),
    (SortKey::Visibility, "visibility", &["visibility"]),
    (SortKey::Owner, "owner", &["owner"]),
    (SortKey::MinRam, "min_ram", &["min_ram"]),
    (SortKey::MinDisk, "min_disk", &["min_disk"]),
];

impl SortKey {
    /// Every sort key, in the order of the table above.
    pub fn all() -> impl Iterator<Item = SortKey> {
        SORT_KEYS.iter().map(|(key, _, _)| *key)
    }

    /// The key Glance calls `name` ("created_at", "disk_format", ...); None if unknown.
    pub fn parse(name: &str) -> Option<SortKey> {
        SORT_KEYS
            .iter()
            .find(|(_, glance_name, _)| *glance_name == name)
            .map(|(key, _, _)| *key)
    }

    /// The Glance name of this key.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    fn columns(self) -> &'static [&'static str] {
        self.entry().2
    }

    fn entry(self) -> &'static (SortKey, &'static str, &'static [&'static str]) {
        SORT_KEYS
            .iter()
            .find(|(key, _, _)| *key == self)
            .expect("SORT_KEYS lists every SortKey")
    }
}

impl SortDir {
    /// "asc" or "desc", as Glance spells them; None otherwise.
    pub fn parse(name: &str) -> Option<SortDir> {
        match name {
            "asc" => Some(SortDir::Asc),
            "desc" => Some(SortDir::Desc),
            _ => None,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            SortDir::Asc => "ASC",
            SortDir::Desc => "DESC",
        }
    }
}

/// The full order: the requested keys without repeats, then the tie-breakers.
pub(super) fn effective_sort(requested: &[(SortKey, SortDir)]) -> Vec<(SortKey, SortDir)> {
    let mut sort: Vec<(SortKey, SortDir)> = Vec::new();
    let tie_breakers = [
        (SortKey::CreatedAt, SortDir::Desc),
        (SortKey::Id, SortDir::Desc),
    ];
    for (key, dir) in requested.iter().chain(tie_breakers.iter()) {
        if !sort.iter().any(|(seen, _)| seen == key) {
            sort.push((*key, *dir));
        }
    }
    sort
}

/// Runs `query` on `connection`, which should be inside a transaction so that the marker and
/// the page come from the same snapshot, and hands each image, whole, to `visit` in order; stops
/// early when `visit` returns false. Only one image is in memory at a time: the rows are read
/// as `visit` takes them, not collected first.
pub(super) fn for_each(
    connection: &Connection,
    query: &ListQuery,
    mut visit: impl FnMut(Image) -> bool,
) -> Result<(), RegistryError> {
    let (sql, values) = statement(connection, query)?;
    let values: Vec<&dyn ToSql> = values.iter().map(|value| value as &dyn ToSql).collect();
    connection
        .query_each(&sql, &values, |row| {
            Ok(visit(image::from_row_with_details(row)?))
        })
        .map_err(RegistryError::sql("list images"))
}

/// The SQL selecting one page for `query`, and the values of its `?` placeholders in order;
/// reads the marker's sort values (the tests also `EXPLAIN` what this returns).
pub(super) fn statement(
    connection: &Connection,
    query: &ListQuery,
) -> Result<(String, Vec<Value>), RegistryError> {
    let columns: Vec<(&str, SortDir)> = effective_sort(&query.sort)
        .into_iter()
        .flat_map(|(key, dir)| key.columns().iter().map(move |column| (*column, dir)))
        .collect();
    let walk = Walk::choose(query, &columns);
    let dialect = connection.dialect();

    let mut conditions = vec!["images.deleted = 0".to_string()];
    let mut values: Vec<Value> = Vec::new();
    let mut from = "images".to_string();
    let mut filters = query.filters.clone();
    if walk == Walk::FirstTag {
        // CROSS JOIN keeps SQLite from reordering the join: the tag's entries drive it.
        // PostgreSQL has no CROSS JOIN with ON, and plans the join with statistics instead.
        let join = match dialect {
            Dialect::Sqlite => "CROSS JOIN",
            Dialect::Postgres => "JOIN",
        };
        from = format!("image_tags AS first_tag {join} images ON images.id = first_tag.image_id");
        conditions.push("first_tag.tag = ?".to_string());
        values.push(Value::Text(filters.tags.remove(0)));
    }
    filter_conditions(&filters, &mut conditions, &mut values);
    if let Some(marker) = &query.marker {
        let viewer = query.filters.viewer.as_deref();
        let marker_values = marker_values(connection, marker, &columns, viewer)?;
        conditions.push(after_marker(
            &columns,
            walk,
            dialect,
            marker_values,
            &mut values,
        ));
    }

    let order = columns
        .iter()
        .map(|(column, dir)| {
            // SQLite sorts NULL below every value; PostgreSQL above, unless told.
            let nulls = match (dialect, dir) {
                (Dialect::Postgres, SortDir::Asc) if !NOT_NULL_COLUMNS.contains(column) => {
                    " NULLS FIRST"
                }
                (Dialect::Postgres, SortDir::Desc) if !NOT_NULL_COLUMNS.contains(column) => {
                    " NULLS LAST"
                }
                _ => "",
            };
            format!("{} {}{nulls}", walk.column(column), dir.sql())
        })
        .collect::<Vec<_>>()
        .join(", ");
    values.push(Value::Integer(
        i64::try_from(query.limit).unwrap_or(i64::MAX),
    ));
    // The images whole: their tags, properties and locations in the same statement.
    let sql = format!(
        "SELECT {}, {} FROM {from} WHERE {} ORDER BY {order} LIMIT ?",
        image::COLUMNS,
        image::details_columns(dialect),
        conditions.join(" AND "),
    );
    Ok((sql, values))
}

/// Which rows a list walks in list order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Walk {
    /// `images`, through whichever of its indexes holds the order after the filters' equality
    /// columns.
    Images,
    /// The entries of the first requested tag in `image_tags_by_tag_created` (migration 5),
    /// each joined to its image: for a tag filter in the creation order (the default).
    ///
    /// A page then reads the tagged images until it is full, however many images the other
    /// filters select. The trade: a tag carried by most images together with a rare
    /// visibility reads most of the tag's entries, where the visibility index would have been
    /// shorter; without statistics SQLite cannot tell the two apart, and a tag filter is
    /// usually the narrow one (Horizon's and glanceclient's `--tag`).
    FirstTag,
}

impl Walk {
    fn choose(query: &ListQuery, columns: &[(&str, SortDir)]) -> Walk {
        let creation_order = columns.len() == 3
            && columns.windows(2).all(|pair| pair[0].1 == pair[1].1)
            && columns
                .iter()
                .map(|(column, _)| *column)
                .eq(["created_at", "created_order", "id"]);
        if creation_order && !query.filters.tags.is_empty() {
            Walk::FirstTag
        } else {
            Walk::Images
        }
    }

    /// The SQL for sort column `column` of `images` in this walk: the tag entry's copy of the
    /// creation keys, so that the order and the marker's range are the index's own.
    fn column(self, column: &str) -> String {
        match (self, column) {
            (Walk::FirstTag, "created_at" | "created_order") => format!("first_tag.{column}"),
            (Walk::FirstTag, "id") => "first_tag.image_id".to_string(),
            _ => format!("images.{column}"),
        }
    }
}

/// Appends one SQL condition per set filter, with `?` placeholders bound from `values`.
fn filter_conditions(filters: &Filters, conditions: &mut Vec<String>, values: &mut Vec<Value>) {
    let mut add = |condition: &str, bound: &[Value]| {
        conditions.push(condition.to_string());
        values.extend_from_slice(bound);
    };
    for (column, value) in [
        ("name", &filters.name),
        ("owner", &filters.owner),
        ("id", &filters.id),
        ("disk_format", &filters.disk_format),
        ("container_format", &filters.container_format),
        ("checksum", &filters.checksum),
        ("os_hash_value", &filters.os_hash_value),
    ] {
        if let Some(value) = value {
            add(
                &format!("images.{column} = ?"),
                &[Value::Text(value.clone())],
            );
        }
    }
    if let Some(status) = filters.status {
        add(
            "images.status = ?",
            &[Value::Text(status.as_str().to_string())],
        );
    }
    if let Some(viewer) = &filters.viewer {
        // Glance's three branches (`_select_images_query`): owned, public or community, shared
        // with the viewer in the requested status. `owner = ?` is NULL, so false, for an image
        // without an owner, as in Glance's SQL.
        let mut membership = "EXISTS (SELECT 1 FROM image_members \
             WHERE image_members.member_id = ? AND image_members.image_id = images.id \
             AND image_members.deleted = 0"
            .to_string();
        let mut bound = vec![Value::Text(viewer.clone()), Value::Text(viewer.clone())];
        if let Some(status) = filters.member_status {
            membership.push_str(" AND image_members.status = ?");
            bound.push(Value::Text(status.as_str().to_string()));
        }
        add(
            &format!(
                "(images.owner = ? OR images.visibility IN ('public', 'community') \
                 OR (images.visibility = 'shared' AND {membership})))"
            ),
            &bound,
        );
    }
    let project = filters.viewer.as_ref().or(filters.admin_project.as_ref());
    match (filters.visibility.as_deref(), project) {
        (None, None) => add("images.visibility <> 'community'", &[]),
        // `_image_get_all`: without a visibility, community images only of the caller's own.
        (None, Some(project)) => add(
            "(images.owner = ? OR images.visibility <> 'community')",
            &[Value::Text(project.clone())],
        ),
        (Some("all"), _) => {}
        (Some(visibility), _) => add(
            "images.visibility = ?",
            &[Value::Text(visibility.to_string())],
        ),
    }
    if let Some(protected) = filters.protected {
        add("images.protected = ?", &[Value::Integer(protected.into())]);
    }
    let os_hidden = filters.os_hidden.unwrap_or(false);
    add("images.os_hidden = ?", &[Value::Integer(os_hidden.into())]);
    for (bound, operator) in [(filters.size_min, ">="), (filters.size_max, "<=")] {
        if let Some(bound) = bound {
            // Sizes beyond i64 cannot be stored, so the largest storable one stands in.
            let bound = i64::try_from(bound).unwrap_or(i64::MAX);
            add(
                &format!("images.size {operator} ?"),
                &[Value::Integer(bound)],
            );
        }
    }
    for tag in &filters.tags {
        add(
            "EXISTS (SELECT 1 FROM image_tags WHERE image_tags.image_id = images.id \
             AND image_tags.tag = ?)",
            &[Value::Text(tag.clone())],
        );
    }
    for (name, value) in &filters.properties {
        add(
            "EXISTS (SELECT 1 FROM image_properties WHERE image_properties.image_id = images.id \
             AND image_properties.name = ? AND image_properties.value = ?)",
            &[Value::Text(name.clone()), Value::Text(value.clone())],
        );
    }
}

/// The marker image's values of the sort columns; [`RegistryError::BadMarker`] if there is no
/// such image or it is deleted, [`RegistryError::MarkerNotVisible`] if `viewer` may not see it
/// (Glance's `is_image_visible`, which admits any membership status, not the list's rule).
fn marker_values(
    connection: &Connection,
    marker: &str,
    columns: &[(&str, SortDir)],
    viewer: Option<&str>,
) -> Result<Vec<Value>, RegistryError> {
    let selected = columns
        .iter()
        .map(|(column, _)| *column)
        .collect::<Vec<_>>()
        .join(", ");
    // The owner and visibility follow the sort columns, for the visibility check.
    let sql =
        format!("SELECT {selected}, owner, visibility FROM images WHERE id = ?1 AND deleted = 0");
    let context = || format!("read marker image {marker}");
    let (sort_values, owner, visibility) = connection
        .query_opt(&sql, params![marker], |row| {
            let sort_values = (0..columns.len())
                .map(|index| row.get::<Value>(index))
                .collect::<Result<Vec<Value>, _>>()?;
            let owner: Option<String> = row.get(columns.len())?;
            let visibility: String = row.get(columns.len() + 1)?;
            Ok((sort_values, owner, visibility))
        })
        .map_err(RegistryError::sql(context()))?
        .ok_or(RegistryError::BadMarker)?;
    if let Some(viewer) = viewer {
        let is_member = member::select_live(connection, marker, viewer)?.is_some();
        if !member::visible(owner.as_deref(), &visibility, viewer, is_member) {
            return Err(RegistryError::MarkerNotVisible);
        }
    }
    Ok(sort_values)
}

/// The `images` columns that are never NULL (`NOT NULL` in the schema), among the sort columns.
const NOT_NULL_COLUMNS: &[&str] = &[
    "id",
    "status",
    "visibility",
    "created_at",
    "created_order",
    "updated_at",
    "updated_order",
    "min_ram",
    "min_disk",
];

/// The condition "comes strictly after the marker": for some column i, the row equals the
/// marker on every column before i and comes after it on column i, in that column's direction,
/// with NULL below every value.
///
/// Written so that SQLite can start the page at the marker in the index that gives the order,
/// rather than walk the index from its start and test every entry before the marker (a deep
/// page would then cost as much as all the pages before it): when every sort column is
/// `NOT NULL` and all go the same way (the default order, `created_at`, `created_order`, `id`
/// descending), as one row-value comparison, which SQLite turns into a range of the index;
/// otherwise as the alternatives above, with a bound on the first column alone ANDed to them
/// where that bound is a plain range (it selects nothing the alternatives do not: every row
/// after the marker is at or beyond it on the first column).
fn after_marker(
    columns: &[(&str, SortDir)],
    walk: Walk,
    dialect: Dialect,
    marker_values: Vec<Value>,
    values: &mut Vec<Value>,
) -> String {
    let q = |column: &str| walk.column(column);
    let not_null = |column: &str| NOT_NULL_COLUMNS.contains(&column);
    let one_direction = columns.windows(2).all(|pair| pair[0].1 == pair[1].1);
    if one_direction && columns.iter().all(|(column, _)| not_null(column)) {
        let operator = match columns.first().map(|(_, dir)| *dir) {
            Some(SortDir::Asc) => ">",
            _ => "<",
        };
        let row = columns
            .iter()
            .map(|(column, _)| q(column))
            .collect::<Vec<_>>()
            .join(", ");
        let placeholders = vec!["?"; columns.len()].join(", ");
        values.extend(marker_values);
        return format!("(({row}) {operator} ({placeholders}))");
    }
    let mut bound = None;
    if let (Some((column, dir)), Some(first_value)) = (columns.first(), marker_values.first()) {
        if !matches!(first_value, Value::Null) {
            bound = match dir {
                // NULL sorts first, so no row after the marker has a NULL here.
                SortDir::Asc => Some(format!("{} >= ?", q(column))),
                // Descending, NULLs come last, after the marker: a range only if there are none.
                SortDir::Desc if not_null(column) => Some(format!("{} <= ?", q(column))),
                SortDir::Desc => None,
            };
            if bound.is_some() {
                values.push(first_value.clone());
            }
        }
    }
    let mut alternatives = Vec::with_capacity(columns.len());
    for (index, ((column, dir), marker_value)) in columns.iter().zip(&marker_values).enumerate() {
        let mut terms = Vec::with_capacity(index + 1);
        for ((earlier, _), earlier_value) in columns[..index].iter().zip(&marker_values) {
            // IS compares NULLs as equal to each other, unlike =; PostgreSQL spells it
            // IS NOT DISTINCT FROM.
            let is = match dialect {
                Dialect::Sqlite => "IS",
                Dialect::Postgres => "IS NOT DISTINCT FROM",
            };
            terms.push(format!("{} {is} ?", q(earlier)));
            values.push(earlier_value.clone());
        }
        let is_null = matches!(marker_value, Value::Null);
        let beyond = match (dir, is_null) {
            // Ascending past NULL: any value.
            (SortDir::Asc, true) => format!("{} IS NOT NULL", q(column)),
            // Ascending past a value: a greater one (a NULL row compares as NULL: false).
            (SortDir::Asc, false) => format!("{} > ?", q(column)),
            // Descending past NULL: nothing is smaller.
            (SortDir::Desc, true) => match dialect {
                Dialect::Sqlite => "0".to_string(),
                Dialect::Postgres => "FALSE".to_string(),
            },
            // Descending past a value: a smaller one or NULL.
            (SortDir::Desc, false) => {
                format!("({0} IS NULL OR {0} < ?)", q(column))
            }
        };
        if !is_null {
            values.push(marker_value.clone());
        }
        terms.push(beyond);
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    let after = format!("({})", alternatives.join(" OR "));
    match bound {
        Some(bound) => format!("({bound} AND {after})"),
        None => after,
    }
}
