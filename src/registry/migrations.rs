//! The registry's schema as an append-only list of migrations for each engine, versioned by
//! `PRAGMA user_version` in SQLite and the table `glint_schema_version` in PostgreSQL.
//!
//! Entry `i` of [`MIGRATIONS`] (SQLite) and of [`POSTGRES_MIGRATIONS`] takes the schema from
//! version `i` to version `i + 1`; the two lists grow together and describe the same tables,
//! written in each engine's types. Every child runs [`migrate`] when it opens the registry; the
//! first one to take the write lock applies whatever is missing, and the others then find the
//! version already current and do nothing.
//!
//! # Compatibility
//!
//! Never edit, reorder or remove an entry: a database in the field has already run it, and an
//! older binary may still be serving from the same file during a reload (two generations overlap).
//! Only compatible changes may be appended: new tables, new indexes, new columns that are nullable
//! or have a default. An older binary that finds a `user_version` beyond its own list keeps
//! working, because everything it reads and writes is still there.

use super::changes::Changes;
use super::sql::{Connection, Dialect};
use super::RegistryError;

/// The migrations, oldest first. Append only (see the module doc).
pub const MIGRATIONS: &[&str] = &[
    // 1: images, their custom properties and tags.
    //
    // `deleted` keeps the row of a deleted image as a tombstone, so its id is never reused
    // (Glance answers 409 to a create with a deleted image's id). `created_order` and
    // `updated_order` are microseconds since the epoch, hidden from the API: they order images
    // created or updated within the same second.
    "
    CREATE TABLE images (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT,
        status TEXT NOT NULL,
        visibility TEXT NOT NULL,
        protected INTEGER NOT NULL DEFAULT 0,
        os_hidden INTEGER NOT NULL DEFAULT 0,
        checksum TEXT,
        os_hash_algo TEXT,
        os_hash_value TEXT,
        owner TEXT,
        size INTEGER,
        virtual_size INTEGER,
        container_format TEXT,
        disk_format TEXT,
        min_ram INTEGER NOT NULL DEFAULT 0,
        min_disk INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        created_order INTEGER NOT NULL,
        updated_order INTEGER NOT NULL,
        location TEXT,
        upload_owner TEXT,
        deleted INTEGER NOT NULL DEFAULT 0,
        deleted_at TEXT
    );
    CREATE TABLE image_properties (
        image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (image_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE image_tags (
        image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (image_id, tag)
    ) WITHOUT ROWID;
    CREATE INDEX images_by_created ON images (created_at, created_order, id) WHERE deleted = 0;
    CREATE INDEX images_by_updated ON images (updated_at, updated_order, id) WHERE deleted = 0;
    CREATE INDEX images_by_name ON images (name) WHERE deleted = 0;
    CREATE INDEX images_by_status ON images (status) WHERE deleted = 0;
    CREATE INDEX images_by_owner ON images (owner) WHERE deleted = 0;
    CREATE INDEX image_properties_by_value ON image_properties (name, value);
    CREATE INDEX image_tags_by_tag ON image_tags (tag);
    ",
    // 2: image members, the projects an image with visibility "shared" is shared with.
    //
    // A removed member, and every member of a deleted image, is kept as a row with `deleted = 1`
    // rather than removed, as Glance does. That is for compatibility more than for history: had
    // this first version removed rows, a later release that soft-deletes would leave rows an
    // older generation still running beside it reads as live, granting access that was revoked.
    // The unique index covers live rows only, so a project can be added again after it was
    // removed: each addition is a new row, and `id` (the rowid, never reused while rows are only
    // marked deleted) orders members as they were added. `image_members_by_member` serves the
    // "shared with this project in this status" test of a non-admin's list, one index probe per
    // image, and the lookups by project a later release may need; it holds `status` so that the
    // probe never reads the table.
    "
    CREATE TABLE image_members (
        id INTEGER PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        member_id TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        deleted_at TEXT
    );
    CREATE UNIQUE INDEX image_members_live ON image_members (image_id, member_id)
        WHERE deleted = 0;
    CREATE INDEX image_members_by_member ON image_members (member_id, image_id, status)
        WHERE deleted = 0;
    ",
    // 3: indexes that give the lists glanceclient and Horizon ask for in their order, so that a
    // page reads about as many rows at 100,000 images as at 1,000 (issue 13, part 5).
    //
    // Each holds the whole list order after its equality column: the requested key, then the
    // tie-breakers `created_at DESC, created_order DESC, id DESC` that `query::effective_sort`
    // appends, with the same directions, so SQLite walks the index in list order and stops when
    // the page is full instead of sorting every match. `images_by_name` and `images_by_status`
    // of migration 1 hold one column each: a name sort with a status filter read every active
    // image and sorted them (about 100 ms at 100,000 images). They stay, since an older
    // generation may share the file and its plans may count on them.
    //
    // - `images_by_status_name`: `status=...` with `sort_key=name` (glanceclient, Horizon).
    // - `images_by_name_created`: `sort_key=name` alone, and the `name=...` filter in the
    //   default order.
    // - `images_by_visibility_created`: `visibility=...` in the default order (Horizon's public,
    //   shared and community tabs), which a tag filter then narrows with one index probe per
    //   image (`image_tags`' primary key is (image_id, tag)).
    // - `images_by_owner_created`: `owner=...` in the default order (Horizon's project tab).
    //
    // The visibility and owner indexes hold `os_hidden` as a second equality column: every list
    // tests it (`os_hidden = 0` unless asked otherwise), so the walk skips hidden images in the
    // index and reads no table row for an image a tag probe then rejects (a tag with a
    // visibility at 100,000 images: about 1.9 ms a page without it, 1.0 ms with it).
    //
    // All are partial on `deleted = 0` like the others: every list has that condition, and
    // tombstones never take room in them.
    "
    CREATE INDEX images_by_status_name ON images
        (status, name, created_at DESC, created_order DESC, id DESC) WHERE deleted = 0;
    CREATE INDEX images_by_name_created ON images
        (name, created_at DESC, created_order DESC, id DESC) WHERE deleted = 0;
    CREATE INDEX images_by_visibility_created ON images
        (visibility, os_hidden, created_at DESC, created_order DESC, id DESC) WHERE deleted = 0;
    CREATE INDEX images_by_owner_created ON images
        (owner, os_hidden, created_at DESC, created_order DESC, id DESC) WHERE deleted = 0;
    ",
    // 4: the locations of an image's data with several stores (`enabled_backends`), each with
    // its store id, so that an image can have a copy in more than one store (copy-image adds
    // one) and a reload can tell whether a store it removes still holds images.
    //
    // `images.location` stays the first location's path: an older generation serving beside
    // this one during a reload reads and deletes data by it. `position` orders the copies as
    // they were added. The store index serves the per-store count of a starting child.
    "
    CREATE TABLE image_locations (
        image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        store TEXT NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY (image_id, position)
    ) WITHOUT ROWID;
    CREATE INDEX image_locations_by_store ON image_locations (store, image_id);
    ",
    // 5: a tag filter walks the tag's own entries in the default list order (issue 13, part
    // 5). Before this, a list with a tag and a visibility walked every image of that
    // visibility in creation order and probed `image_tags` for each, so a rare tag cost a
    // walk over most of the registry (5.6 ms p99 a page at 100,000 images). The tag rows now
    // carry their image's creation keys, which never change, so an index on (tag, creation
    // order) yields the tagged images already in list order and a page stops after its
    // matches.
    "
    ALTER TABLE image_tags ADD COLUMN created_at TEXT;
    ALTER TABLE image_tags ADD COLUMN created_order INTEGER;
    UPDATE image_tags SET
        created_at = (SELECT created_at FROM images WHERE images.id = image_tags.image_id),
        created_order = (SELECT created_order FROM images WHERE images.id = image_tags.image_id);
    CREATE INDEX image_tags_by_tag_created ON image_tags
        (tag, created_at DESC, created_order DESC, image_id DESC);
    ",
    // 6: tasks, Glance's record of each image import (`GET /v2/images/{id}/tasks`,
    // `/v2/tasks`; see `task`).
    //
    // Glance keeps a task in two tables (`tasks`, and `task_info` for `input`, `result` and
    // `message`); one row holds all of it here. `input` and `result` are JSON text. There is
    // no `deleted` column: an expired task is removed, not marked (the API still shows
    // Glance's `deleted: false`, `deleted_at: null`). `runner` is the owner token of the
    // process running the task, hidden from the API: a task whose runner is gone while it is
    // pending or processing is failed by recovery, as an upload's `upload_owner` is requeued.
    // `created_order` (microseconds) orders tasks created within the same second.
    "
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        owner TEXT,
        expires_at TEXT,
        image_id TEXT,
        request_id TEXT,
        user_id TEXT,
        input TEXT,
        result TEXT,
        message TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        created_order INTEGER NOT NULL,
        runner TEXT
    );
    CREATE INDEX tasks_by_image ON tasks (image_id, created_order);
    CREATE INDEX tasks_by_created ON tasks (created_order, id);
    CREATE INDEX tasks_running ON tasks (status) WHERE status IN ('pending', 'processing');
    CREATE INDEX tasks_by_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
    ",
    // 7: node leases (issue 15): each node sharing the registry renews its row; a node whose
    // lease expired is gone, and the uploads its processes held are recovered by the others.
    // `expires_order` is microseconds since the epoch, on the database's clock.
    "
    CREATE TABLE node_leases (
        node TEXT PRIMARY KEY NOT NULL,
        instance TEXT NOT NULL,
        expires_order INTEGER NOT NULL
    );
    ",
];

/// Brings the schema up to date in one exclusive transaction: either every missing migration is
/// applied and `user_version` records it, or nothing changes.
///
/// The exclusive lock waits for the busy timeout like any writer, so children that open the
/// database at the same moment apply the migrations once, one after the other.
/// [`MIGRATIONS`] in PostgreSQL's types, entry for entry. Integers are `BIGINT` (SQLite's are
/// 64-bit), booleans stay the integers 0 and 1 so that the SQL the registry runs is the same on
/// both, and text sorts byte by byte (`COLLATE "C"`), as SQLite's does, so that a list's order
/// and its markers do not depend on the database's locale.
pub const POSTGRES_MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE images (
        id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,
        name TEXT COLLATE \"C\",
        status TEXT COLLATE \"C\" NOT NULL,
        visibility TEXT COLLATE \"C\" NOT NULL,
        protected BIGINT NOT NULL DEFAULT 0,
        os_hidden BIGINT NOT NULL DEFAULT 0,
        checksum TEXT COLLATE \"C\",
        os_hash_algo TEXT COLLATE \"C\",
        os_hash_value TEXT COLLATE \"C\",
        owner TEXT COLLATE \"C\",
        size BIGINT,
        virtual_size BIGINT,
        container_format TEXT COLLATE \"C\",
        disk_format TEXT COLLATE \"C\",
        min_ram BIGINT NOT NULL DEFAULT 0,
        min_disk BIGINT NOT NULL DEFAULT 0,
        created_at TEXT COLLATE \"C\" NOT NULL,
        updated_at TEXT COLLATE \"C\" NOT NULL,
        created_order BIGINT NOT NULL,
        updated_order BIGINT NOT NULL,
        location TEXT COLLATE \"C\",
        upload_owner TEXT COLLATE \"C\",
        deleted BIGINT NOT NULL DEFAULT 0,
        deleted_at TEXT COLLATE \"C\"
    );
    CREATE TABLE image_properties (
        image_id TEXT COLLATE \"C\" NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        name TEXT COLLATE \"C\" NOT NULL,
        value TEXT COLLATE \"C\" NOT NULL,
        PRIMARY KEY (image_id, name)
    );
    CREATE TABLE image_tags (
        image_id TEXT COLLATE \"C\" NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        tag TEXT COLLATE \"C\" NOT NULL,
        PRIMARY KEY (image_id, tag)
    );
    CREATE INDEX images_by_created ON images (created_at, created_order, id) WHERE deleted = 0;
    CREATE INDEX images_by_updated ON images (updated_at, updated_order, id) WHERE deleted = 0;
    CREATE INDEX images_by_name ON images (name NULLS FIRST) WHERE deleted = 0;
    CREATE INDEX images_by_status ON images (status) WHERE deleted = 0;
    CREATE INDEX images_by_owner ON images (owner NULLS FIRST) WHERE deleted = 0;
    CREATE INDEX image_properties_by_value ON image_properties USING hash (value);
    CREATE INDEX image_tags_by_tag ON image_tags (tag);
    ",
    "
    CREATE TABLE image_members (
        id BIGSERIAL PRIMARY KEY,
        image_id TEXT COLLATE \"C\" NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        member_id TEXT COLLATE \"C\" NOT NULL,
        status TEXT COLLATE \"C\" NOT NULL DEFAULT 'pending',
        created_at TEXT COLLATE \"C\" NOT NULL,
        updated_at TEXT COLLATE \"C\" NOT NULL,
        deleted BIGINT NOT NULL DEFAULT 0,
        deleted_at TEXT COLLATE \"C\"
    );
    CREATE UNIQUE INDEX image_members_live ON image_members (image_id, member_id)
        WHERE deleted = 0;
    CREATE INDEX image_members_by_member ON image_members (member_id, image_id, status)
        WHERE deleted = 0;
    ",
    "
    CREATE INDEX images_by_status_name ON images
        (status, name NULLS FIRST, created_at DESC, created_order DESC, id DESC) WHERE deleted = 0;
    CREATE INDEX images_by_name_created ON images
        (name NULLS FIRST, created_at DESC, created_order DESC, id DESC) WHERE deleted = 0;
    CREATE INDEX images_by_visibility_created ON images
        (visibility, os_hidden, created_at DESC, created_order DESC, id DESC) WHERE deleted = 0;
    CREATE INDEX images_by_owner_created ON images
        (owner NULLS FIRST, os_hidden, created_at DESC, created_order DESC, id DESC)
        WHERE deleted = 0;
    ",
    "
    CREATE TABLE image_locations (
        image_id TEXT COLLATE \"C\" NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        store TEXT COLLATE \"C\" NOT NULL,
        path TEXT COLLATE \"C\" NOT NULL,
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_locations_by_store ON image_locations (store, image_id);
    ",
    "
    ALTER TABLE image_tags ADD COLUMN created_at TEXT COLLATE \"C\";
    ALTER TABLE image_tags ADD COLUMN created_order BIGINT;
    UPDATE image_tags SET
        created_at = (SELECT created_at FROM images WHERE images.id = image_tags.image_id),
        created_order = (SELECT created_order FROM images WHERE images.id = image_tags.image_id);
    CREATE INDEX image_tags_by_tag_created ON image_tags
        (tag, created_at DESC, created_order DESC, image_id DESC);
    ",
    "
    CREATE TABLE tasks (
        id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,
        type TEXT COLLATE \"C\" NOT NULL,
        status TEXT COLLATE \"C\" NOT NULL,
        owner TEXT COLLATE \"C\",
        expires_at TEXT COLLATE \"C\",
        image_id TEXT COLLATE \"C\",
        request_id TEXT COLLATE \"C\",
        user_id TEXT COLLATE \"C\",
        input TEXT,
        result TEXT,
        message TEXT NOT NULL DEFAULT '',
        created_at TEXT COLLATE \"C\" NOT NULL,
        updated_at TEXT COLLATE \"C\" NOT NULL,
        created_order BIGINT NOT NULL,
        runner TEXT COLLATE \"C\"
    );
    CREATE INDEX tasks_by_image ON tasks (image_id, created_order);
    CREATE INDEX tasks_by_created ON tasks (created_order, id);
    CREATE INDEX tasks_running ON tasks (status) WHERE status IN ('pending', 'processing');
    CREATE INDEX tasks_by_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
    ",
    "
    CREATE TABLE node_leases (
        node TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,
        instance TEXT NOT NULL,
        expires_order BIGINT NOT NULL
    );
    ",
];

/// Brings the schema up to this binary's version, in one transaction that holds the write
/// lock: several children (or nodes) opening a new database at once apply each migration once.
/// A schema newer than this binary's is used as it is (see the module doc).
pub fn migrate(
    connection: &mut Connection,
    changes: Option<&Changes>,
) -> Result<(), RegistryError> {
    let dialect = connection.dialect();
    let (migrations, read_version) = match dialect {
        Dialect::Sqlite => (MIGRATIONS, "PRAGMA user_version"),
        Dialect::Postgres => (
            POSTGRES_MIGRATIONS,
            "SELECT coalesce(max(version), 0) FROM glint_schema_version",
        ),
    };
    if dialect == Dialect::Sqlite {
        // Every child of every reload comes here before it serves: a schema already current
        // is seen without SQLite's write lock, which a busy registry would make it wait for.
        let version: i64 = connection
            .query_opt(read_version, &[], |row| row.get(0))
            .map_err(RegistryError::sql("read the schema version"))?
            .unwrap_or(0);
        // A newer schema (a newer binary's) is used as it is, and said so below.
        if usize::try_from(version).is_ok_and(|version| version == migrations.len()) {
            return Ok(());
        }
    }
    let transaction = connection
        .begin_write()
        .map_err(RegistryError::sql("begin the migration transaction"))?;
    if dialect == Dialect::Postgres {
        // Under the write lock, so that nodes starting together do not race to create it.
        transaction
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS glint_schema_version (version BIGINT NOT NULL)",
            )
            .map_err(RegistryError::sql("create the table glint_schema_version"))?;
    }
    let version: i64 = transaction
        .query_opt(read_version, &[], |row| row.get(0))
        .map_err(RegistryError::sql("read the schema version"))?
        .unwrap_or(0);
    let version = usize::try_from(version).unwrap_or(0);
    if version > migrations.len() {
        log::info!(
            "registry schema is at version {version}, newer than this binary's {}; using it as is",
            migrations.len()
        );
        return Ok(());
    }
    for (index, sql) in migrations.iter().enumerate().skip(version) {
        transaction
            .execute_batch(sql)
            .map_err(RegistryError::sql(format!(
                "apply registry migration {}",
                index + 1
            )))?;
    }
    if version < migrations.len() {
        let set_version = match dialect {
            Dialect::Sqlite => format!("PRAGMA user_version = {}", migrations.len()),
            Dialect::Postgres => format!(
                "DELETE FROM glint_schema_version; INSERT INTO glint_schema_version VALUES ({})",
                migrations.len()
            ),
        };
        transaction
            .execute_batch(&set_version)
            .map_err(RegistryError::sql("record the schema version"))?;
        log::info!(
            "registry schema migrated from version {version} to {}",
            migrations.len()
        );
    }
    super::commit_write(transaction, changes)
        .map_err(RegistryError::sql("commit the migration transaction"))
}
