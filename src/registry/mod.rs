//! The image registry: every image's metadata in one SQLite file, shared by all children.
//!
//! [`Registry`] is the only type in glint that opens SQLite. The API asks it to create, get,
//! list, update and delete [`Image`]s; the store asks it to move an image through its upload
//! states and to recover uploads whose process died. The registry knows nothing of HTTP or of
//! data files: it records where a file is (`location`) but never touches it.
//!
//! - `migrations`: the schema, as an append-only list applied on open.
//! - `image`: the [`Image`] record and its mapping onto the tables.
//! - `member`: image [`Member`]s, the `Registry` methods that keep them, and Glance's rule of
//!   which images a non-admin project sees ([`image_visible_to`]), with the Glance functions it
//!   was read from.
//! - `query`: [`ListQuery`], filters (including what a non-admin project may list), sort order
//!   and marker pagination.
//! - `status`: [`ImageStatus`] and the words it is stored and shown as.
//! - `task`: [`Task`]s, Glance's record of each image import, and the methods that keep them.
//! - `node`: the leases of the nodes sharing a registry on PostgreSQL, which say which are alive.
//! - `changes`: the counter beside a SQLite file that every write moves, which says whether
//!   anything was committed since a read ([`Registry::version`]).
//! - `sql`: the narrow interface to the engine, SQLite or PostgreSQL ([`Database`]).
//!
//! # Locking
//!
//! Several child processes, each with several worker threads, use the same file at once. Each
//! child calls [`Registry::open`] after the fork: a SQLite connection must never cross a
//! `fork()` (the child would share the parent's file locks and WAL index), so the master never
//! opens the registry, and a `Registry` must not be used in a process other than the one that
//! opened it. Within a process, a `Registry` is shared by the worker threads and lends each
//! call one of a few connections (see [`DEFAULT_MAX_CONNECTIONS`]).
//!
//! Every connection uses the WAL journal, so readers never wait for writers and a writer waits
//! only for another writer. SQLite admits one writer at a time across all processes; a writer
//! that finds the lock taken waits up to [`BUSY_TIMEOUT`] for it (`wait_while_busy`: SQLite's own
//! delays, each wait counted for `glint_registry_busy_waits_total`). Only then does the call
//! fail, with [`RegistryError::Sql`] (see [`RegistryError::is_busy`]).
//!
//! Every write starts with `BEGIN IMMEDIATE`, which takes the write lock before reading. A
//! deferred transaction that reads and then writes may find that another process wrote in
//! between; SQLite then fails it at once with SQLITE_BUSY, whatever the busy timeout, because
//! waiting could not help. Taking the lock first makes the busy timeout apply and makes every
//! read-modify-write ([`Registry::update`], [`Registry::delete`]) atomic, so two clients
//! updating the same image never lose an update. The closures those methods take run while the
//! write lock is held, so they must be quick and must not call the registry.
//!
//! Reads run in a deferred transaction so that an image and its tags and properties, or a marker
//! and the page after it, come from one snapshot.
//!
//! # Compatibility
//!
//! The schema changes only by appending to `migrations::MIGRATIONS`, and only compatibly (see
//! that module): during a reload two generations, built from different binaries, may share the
//! file. `synchronous=FULL` makes every committed transaction durable before the call returns:
//! a delete is on disk before the image's file is unlinked, and an upload's `active` before the
//! 204, so a power loss cannot bring back an image whose data is gone. Metadata writes are few
//! next to image data, so the fsync per commit costs little.

mod changes;
#[cfg(test)]
mod changes_tests;
mod image;
mod member;
#[cfg(test)]
mod member_tests;
mod migrations;
mod node;
#[cfg(test)]
mod plan_tests;
mod query;
pub mod sql;
mod status;
mod task;
#[cfg(test)]
mod test_database;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use changes::Changes;
use sql::{Connection, SqlError, Transaction};

pub use image::{Image, Location};
pub use member::{image_visible_to, Member, MemberStatus};
pub use migrations::{MIGRATIONS, POSTGRES_MIGRATIONS};
pub use query::{Filters, ListQuery, SortDir, SortKey};
pub use sql::{busy_delay, Database, BUSY_TIMEOUT};
pub use status::{ImageStatus, UnknownImageStatus};
pub use task::{NewTask, Task, TaskEnd, TaskQuery, TaskStatus, TASK_COLUMNS};

use crate::timestamp;

/// What [`Registry::record_legacy_stores`] did: the images given a store, as (id, store), and
/// the ids of those whose data no store's folder holds.
pub type LegacyStores = (Vec<(String, String)>, Vec<String>);

/// How many connections one [`Registry`] opens at most unless told otherwise (a child is told
/// `[database] max_pool_size`, whose default this is). A call beyond that waits for a
/// connection to come back. Writers are serialized anyway, so more connections only help
/// concurrent readers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4;

/// The registry of one process: a small pool of connections to the database file.
///
/// `Send + Sync`; share it between threads by reference or `Arc`.
pub struct Registry {
    /// The database, for opening more connections.
    database: Database,
    /// Idle connections and how many are open in all, idle or lent out.
    pool: Mutex<Pool>,
    /// Signalled when a connection comes back or an open fails, for callers waiting in
    /// `lease` because `max_connections` are lent out.
    returned: Condvar,
    /// The most connections `pool` may hold open.
    max_connections: usize,
    /// The change counter of a SQLite file (a SQLite registry that cannot map it does not open);
    /// None on PostgreSQL.
    changes: Option<Changes>,
}

/// Why a registry call failed.
#[derive(Debug)]
pub enum RegistryError {
    /// `create` with the id of an existing or deleted image, or `add_member` of a project that
    /// is a member already (Glance: 409).
    Duplicate,
    /// `add_member` to an image that has `limit` members already (Glance's
    /// `image_member_quota`: 413).
    MemberQuota { limit: usize },
    /// The list marker is not the id of an image that exists and is not deleted (Glance: 400).
    BadMarker,
    /// The list marker is an image the listing project may not see (Glance's `_image_get`
    /// raises Forbidden for it, and the list answers 403; see the `member` module).
    MarkerNotVisible,
    /// The folder of the database file could not be created.
    CreateFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The change counter beside a SQLite file (see the `changes` module) could not be created
    /// or mapped.
    ChangeCounter {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database failed; `context` says what the registry was doing. A SQLite database
    /// still locked after [`BUSY_TIMEOUT`] is one of these (see [`RegistryError::is_busy`]), as
    /// is a PostgreSQL server that cannot be reached ([`RegistryError::is_unreachable`]), and a
    /// SQLite file on a file system without WAL (a network file system).
    Sql { context: String, source: SqlError },
}

struct Pool {
    idle: Vec<Connection>,
    n_open: usize,
    /// Threads waiting in `lease` for a connection: a lease given back wakes one only if there
    /// is one (`Condvar::notify_one` makes a futex system call even when nobody waits: one of
    /// every request's, issue 13).
    n_waiting: usize,
}

/// A connection lent out of the pool; going out of scope gives it back.
struct Lease<'registry> {
    registry: &'registry Registry,
    /// Always Some until `drop`.
    connection: Option<Connection>,
}

/// One instant in the two forms the tables keep.
struct Now {
    /// "YYYY-MM-DDTHH:MM:SSZ", what the API shows.
    seconds: String,
    /// Microseconds since the epoch, the hidden key ordering ties within a second.
    micros: i64,
}

impl Registry {
    /// Opens the database at `path`, creating the file and its folder, and migrates it. Each
    /// child calls this after the fork (see "Locking" in the module doc).
    pub fn open(database: &Database) -> Result<Registry, RegistryError> {
        Registry::open_with(database, DEFAULT_MAX_CONNECTIONS)
    }

    /// [`Registry::open`] with at most `max_connections` (at least 1) open at once.
    pub fn open_with(
        database: &Database,
        max_connections: usize,
    ) -> Result<Registry, RegistryError> {
        if let Database::Sqlite(path) = database {
            if let Some(folder) = path
                .parent()
                .filter(|folder| !folder.as_os_str().is_empty())
            {
                std::fs::create_dir_all(folder).map_err(|source| RegistryError::CreateFolder {
                    path: folder.to_path_buf(),
                    source,
                })?;
            }
        }
        let mut registry = Registry {
            database: database.clone(),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                n_open: 0,
                n_waiting: 0,
            }),
            returned: Condvar::new(),
            max_connections: max_connections.max(1),
            changes: None,
        };
        // The first connection creates a new file, which the counter's path is resolved from.
        drop(registry.lease()?);
        if let Database::Sqlite(path) = database {
            registry.changes = Some(open_changes(path)?);
        }
        let mut lease = registry.lease()?;
        migrations::migrate(&mut lease, registry.changes.as_ref())?;
        drop(lease);
        Ok(registry)
    }

    /// A version of everything the registry holds, to take before a read whose result is
    /// kept: while [`Registry::version`] still returns the same, nothing was committed since, by
    /// any process. None when no version can be given: a PostgreSQL registry (other nodes write
    /// there), or a SQLite write committing or cut short by its process's death (until the next
    /// write ends). See the `changes` module.
    pub fn version(&self) -> Option<u64> {
        self.changes.as_ref()?.version()
    }

    /// Makes a version available again after a process died between the two moves of the
    /// change counter around its COMMIT (the counter stays odd, and nothing is kept from reads):
    /// a write transaction that changes nothing ends it. Only an atomic load when the counter is
    /// even; odd, it is also for the moment of another process's commit, when this waits for
    /// the write lock and moves the counter on, which does no harm. Each child's maintenance
    /// pass calls it.
    pub fn settle_version(&self) -> Result<(), RegistryError> {
        match &self.changes {
            Some(changes) if changes.version().is_none() => {
                let mut lease = self.lease()?;
                let transaction = begin_immediate(&mut lease)?;
                // `commit` moves an odd counter on whether or not a row changed.
                commit(transaction)
            }
            _ => Ok(()),
        }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Closes the connections nobody holds, for a process about to end whose threads still
    /// hold the registry (a child's workers end with the process): a PostgreSQL server is then
    /// told goodbye (libpq's `PQfinish`) rather than left to find the connection gone.
    pub fn close_idle(&self) {
        let idle = {
            let mut pool = self.lock_pool();
            pool.n_open = pool.n_open.saturating_sub(pool.idle.len());
            std::mem::take(&mut pool.idle)
        };
        // Closed outside the lock: a close may wait on the network.
        drop(idle);
    }

    /// Whether the database is a server that other nodes share (PostgreSQL), which can be
    /// down while this node runs.
    pub fn is_shared(&self) -> bool {
        matches!(self.database, Database::Postgres(_))
    }

    /// Whether the database answers a trivial query, on a pooled connection (a new one if the
    /// last was lost); for `/healthcheck`.
    pub fn ping(&self) -> Result<(), RegistryError> {
        let ping = || {
            let lease = self.lease()?;
            lease
                .execute_batch("SELECT 1")
                .map_err(RegistryError::sql("ask the database for SELECT 1"))
        };
        // A pooled connection the server closed fails once and is dropped; the second try
        // opens a new one, so a database that is back is reported up at once.
        match ping() {
            Err(error) if error.is_unreachable() => ping(),
            other => other,
        }
    }

    /// Records a new image. Its tags are stored sorted and unique; its timestamps as given.
    /// [`RegistryError::Duplicate`] if the id is taken, also by a deleted image: Glance never
    /// reuses an id.
    pub fn create(&self, image: &Image) -> Result<(), RegistryError> {
        let mut image = image.clone();
        image.normalize_tags();
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        if image::id_taken(&transaction, &image.id)? {
            return Err(RegistryError::Duplicate);
        }
        image::insert(&transaction, &image, Now::take().micros)?;
        commit(transaction)
    }

    /// The image with this id; None if there is none or it is deleted.
    pub fn get(&self, id: &str) -> Result<Option<Image>, RegistryError> {
        // One statement: no transaction needed (see `image::select_live`).
        let lease = self.lease()?;
        image::select_live(&lease, id)
    }

    /// Records a store for the data of every live image that has a location but no store: data
    /// stored before `enabled_backends` was set (Glance's `update_store_in_locations`).
    /// `store_of` names the store of a location, or `None`. Returns the images given a store
    /// (id, store) and the ids of those left without one.
    ///
    /// A read finds the candidates first, so the usual start, with none that a store holds,
    /// takes no write lock;
    /// the write transaction looks again, so children starting together record each once.
    pub fn record_legacy_stores(
        &self,
        store_of: impl Fn(&str) -> Option<String>,
    ) -> Result<LegacyStores, RegistryError> {
        let mut lease = self.lease()?;
        let found = {
            let transaction = begin_read(&mut lease)?;
            image::select_without_store(&transaction)?
        };
        if found
            .iter()
            .all(|(_, location)| store_of(location).is_none())
        {
            return Ok((Vec::new(), found.into_iter().map(|(id, _)| id).collect()));
        }
        let transaction = begin_immediate(&mut lease)?;
        let mut recorded = Vec::new();
        let mut left = Vec::new();
        for (id, location) in image::select_without_store(&transaction)? {
            match store_of(&location) {
                Some(store) => {
                    image::insert_first_location(&transaction, &id, &store, &location)?;
                    recorded.push((id, store));
                }
                None => left.push(id),
            }
        }
        commit(transaction)?;
        Ok((recorded, left))
    }

    /// How many live images have data in each store (several stores only), for the stores
    /// that hold any, by store id.
    pub fn images_per_store(&self) -> Result<Vec<(String, u64)>, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_read(&mut lease)?;
        image::count_by_store(&transaction)
    }

    /// One page of images; see the `query` module for the order and the marker.
    pub fn list(&self, query: &ListQuery) -> Result<Vec<Image>, RegistryError> {
        let mut images = Vec::new();
        self.list_each(query, |image| {
            images.push(image);
            true
        })?;
        Ok(images)
    }

    /// One page of images, handed to `visit` one at a time in order, until the page ends or
    /// `visit` returns false; only the image being visited is held in memory, so a caller that
    /// writes each one out as it comes bounds what a page costs (the API's list does). All
    /// come from one snapshot, as with [`Registry::list`].
    ///
    /// `visit` runs while a connection is lent out and a read transaction is open: it must not
    /// call the registry.
    pub fn list_each(
        &self,
        query: &ListQuery,
        visit: impl FnMut(Image) -> bool,
    ) -> Result<(), RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_read(&mut lease)?;
        query::for_each(&transaction, query, visit)
    }

    /// Read-modify-write in one `BEGIN IMMEDIATE` transaction: `change` gets the current image
    /// and edits it, or refuses with its own error, which is returned and changes nothing.
    /// The edited image is written with its tags sorted and unique and `updated_at` now, and
    /// returned. The id cannot change: an edit to it is discarded. None if there is no such
    /// image (or it is deleted); `change` is then not called.
    ///
    /// `change` runs while this process holds the database's write lock: it must be quick and
    /// must not call the registry.
    pub fn update<E: From<RegistryError>>(
        &self,
        id: &str,
        change: impl FnOnce(&mut Image) -> Result<(), E>,
    ) -> Result<Option<Image>, E> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let Some(mut image) = image::select_live(&transaction, id)? else {
            return Ok(None);
        };
        let stored_id = image.id.clone();
        change(&mut image)?;
        let now = Now::take();
        image.id = stored_id;
        image.updated_at = now.seconds;
        image.normalize_tags();
        image::write(&transaction, &image, now.micros)?;
        commit(transaction)?;
        Ok(Some(image))
    }

    /// Deletes the image: it is no longer listed or found, its id stays taken, and its members
    /// are removed in the same transaction (as Glance's `image_destroy` does). Returns the
    /// image as it was, so the caller can remove its data. `refuse` is called inside the
    /// transaction with the current image and may veto with its own error (a protected image:
    /// 403). None if there is no such image.
    ///
    /// `refuse` runs while the write lock is held; see [`Registry::update`].
    pub fn delete<E: From<RegistryError>>(
        &self,
        id: &str,
        refuse: impl FnOnce(&Image) -> Result<(), E>,
    ) -> Result<Option<Image>, E> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let Some(image) = image::select_live(&transaction, id)? else {
            return Ok(None);
        };
        refuse(&image)?;
        let now = Now::take();
        image::mark_deleted(&transaction, id, &now.seconds, now.micros)?;
        commit(transaction)?;
        Ok(Some(image))
    }

    /// Finds images in status `Saving` whose uploading process is gone (`is_alive` says no to
    /// their `upload_owner`, or they have none), sets them back to `Queued` with no upload
    /// owner, and returns them as they were before, so the caller can remove their temporary
    /// files. A failed upload returns the image to queued in Glance too.
    ///
    /// `is_alive` runs while the write lock is held: it must be quick (a `kill(pid, 0)`).
    pub fn recover_abandoned_uploads(
        &self,
        is_alive: impl Fn(&str) -> bool,
    ) -> Result<Vec<Image>, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let context = "find images in status saving";
        let sql = format!(
            "SELECT {} FROM images WHERE images.status = ?1 AND images.deleted = 0 \
             ORDER BY images.id",
            image::COLUMNS
        );
        let saving: Vec<Image> = transaction
            .query_map(&sql, sql::params![ImageStatus::Saving], image::from_row)
            .map_err(RegistryError::sql(context))?;
        let now = Now::take();
        let mut abandoned = Vec::new();
        for mut stored in saving {
            if stored.upload_owner.as_deref().is_some_and(&is_alive) {
                continue;
            }
            image::load_details(&transaction, &mut stored).map_err(RegistryError::sql(context))?;
            let mut reset = stored.clone();
            reset.status = ImageStatus::Queued;
            reset.upload_owner = None;
            reset.updated_at = now.seconds.clone();
            image::write(&transaction, &reset, now.micros)?;
            abandoned.push(stored);
        }
        commit(transaction)?;
        Ok(abandoned)
    }

    /// The import counterpart of [`Registry::recover_abandoned_uploads`]: finds images whose
    /// stage or import was running in a process that is gone, and puts each where a client can
    /// go on from. An image `uploading` with an owner was being staged: it goes back to
    /// `queued` (the half-written staging file is a temporary the sweep removes). An image
    /// `importing` goes back to `uploading`, ready for a new import, when `is_staged` says its
    /// staged data is still there, else to `queued` with `os_glance_failed_import` set to
    /// the stores it was still writing to (`failed_store` if it names none), as Glance does
    /// after a failed import. Copies an import into several stores recorded before it died are
    /// dropped. Returns the images as they were.
    pub fn recover_abandoned_imports(
        &self,
        is_alive: impl Fn(&str) -> bool,
        is_staged: impl Fn(&str) -> bool,
        failed_store: &str,
    ) -> Result<Vec<Image>, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let context = "find images in status uploading or importing";
        let sql = format!(
            "SELECT {} FROM images WHERE images.status IN (?1, ?2) AND images.deleted = 0 \
             ORDER BY images.id",
            image::COLUMNS
        );
        let candidates: Vec<Image> = transaction
            .query_map(
                &sql,
                sql::params![ImageStatus::Uploading, ImageStatus::Importing],
                image::from_row,
            )
            .map_err(RegistryError::sql(context))?;
        let now = Now::take();
        let mut abandoned = Vec::new();
        for mut stored in candidates {
            let Some(owner) = stored.upload_owner.as_deref() else {
                // Staged and waiting for its import: nobody is working on it.
                continue;
            };
            if is_alive(owner) {
                continue;
            }
            image::load_details(&transaction, &mut stored).map_err(RegistryError::sql(context))?;
            let mut reset = stored.clone();
            reset.upload_owner = None;
            reset.updated_at = now.seconds.clone();
            // The stores the dead import still wrote to: no longer importing; failed when
            // the image goes back to queued (an older import listed none: `failed_store`).
            let importing = reset
                .properties
                .insert("os_glance_importing_to_stores".to_string(), String::new())
                .filter(|list| !list.is_empty());
            if stored.status == ImageStatus::Importing {
                // Copies the dead import recorded before its last store: the caller removes
                // their files (the image as it was lists them).
                reset.locations.clear();
                reset.location = None;
                reset.size = None;
                reset.virtual_size = None;
                reset.checksum = None;
                reset.os_hash_algo = None;
                reset.os_hash_value = None;
            }
            // Staged data waits for a glance-direct import again; a web-download's downloaded
            // file does not (its image goes back to `queued`, where that method starts, and
            // the staging sweep removes the file).
            if stored.status == ImageStatus::Importing
                && is_staged(&stored.id)
                && !task::last_import_was_web_download(&transaction, &stored.id)
            {
                reset.status = ImageStatus::Uploading;
            } else {
                reset.status = ImageStatus::Queued;
                if stored.status == ImageStatus::Importing {
                    reset.properties.insert(
                        "os_glance_failed_import".to_string(),
                        importing.unwrap_or_else(|| failed_store.to_string()),
                    );
                }
            }
            image::write(&transaction, &reset, now.micros)?;
            abandoned.push(stored);
        }
        commit(transaction)?;
        Ok(abandoned)
    }

    /// Lends out an idle connection, opens a new one if fewer than `max_connections` are open,
    /// or else waits for one to come back.
    fn lease(&self) -> Result<Lease<'_>, RegistryError> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(connection) = pool.idle.pop() {
                if !connection.is_connected() {
                    // The server went away (a restart) since it was last used: open another.
                    pool.n_open -= 1;
                    drop(connection);
                    continue;
                }
                return Ok(Lease {
                    registry: self,
                    connection: Some(connection),
                });
            }
            if pool.n_open < self.max_connections {
                pool.n_open += 1;
                drop(pool);
                // Opening may wait on the journal mode change or the network; do it without
                // the pool lock.
                let opened =
                    Connection::open(&self.database).map_err(|source| RegistryError::Sql {
                        context: format!("open the registry {}", self.database.display()),
                        source,
                    });
                return match opened {
                    Ok(connection) => Ok(Lease {
                        registry: self,
                        connection: Some(connection),
                    }),
                    Err(error) => {
                        self.lock_pool().n_open -= 1;
                        self.returned.notify_one();
                        Err(error)
                    }
                };
            }
            pool.n_waiting += 1;
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pool.n_waiting -= 1;
        }
    }

    /// The pool's state is a list and a count that no panic can leave half-updated, so a
    /// poisoned lock is still good to use.
    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let mut pool = self.registry.lock_pool();
        let anyone_waiting = pool.n_waiting > 0;
        if connection.is_reusable() {
            pool.idle.push(connection);
        } else {
            // A transaction whose rollback failed is still open on it, or the database went
            // away under it: never lend it again; the next lease opens a new one.
            pool.n_open -= 1;
            drop(pool);
            drop(connection);
        }
        if anyone_waiting {
            self.registry.returned.notify_one();
        }
    }
}

impl Deref for Lease<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Now {
    fn take() -> Now {
        let time = SystemTime::now();
        let micros = time
            .duration_since(UNIX_EPOCH)
            .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Now {
            seconds: timestamp::rfc3339_seconds(time),
            micros,
        }
    }
}

impl RegistryError {
    /// Wraps a database error with what the registry was doing, for `map_err`.
    fn sql<E: Into<SqlError>>(context: impl Into<String>) -> impl FnOnce(E) -> RegistryError {
        let context = context.into();
        move |source| RegistryError::Sql {
            context,
            source: source.into(),
        }
    }

    /// Whether SQLite gave up waiting for a lock (after [`BUSY_TIMEOUT`]).
    pub fn is_busy(&self) -> bool {
        matches!(self, RegistryError::Sql { source, .. } if source.is_busy())
    }

    /// Whether the database refused a value the client sent (see [`SqlError::is_unstorable`]).
    pub fn is_unstorable(&self) -> bool {
        matches!(self, RegistryError::Sql { source, .. } if source.is_unstorable())
    }

    /// Whether the database could not be reached (PostgreSQL down or restarting): the same
    /// call may succeed once it is back.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RegistryError::Sql { source, .. } if source.is_unreachable())
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Duplicate => {
                formatter.write_str("an image with this id exists or existed, or the member exists")
            }
            RegistryError::MemberQuota { limit } => {
                write!(
                    formatter,
                    "the image has the most members allowed ({limit})"
                )
            }
            RegistryError::BadMarker => formatter.write_str("the marker is not the id of an image"),
            RegistryError::MarkerNotVisible => {
                formatter.write_str("the marker is an image this project may not see")
            }
            RegistryError::CreateFolder { path, .. } => {
                write!(
                    formatter,
                    "cannot create the registry folder {}",
                    path.display()
                )
            }
            RegistryError::ChangeCounter { path, source } => {
                write!(
                    formatter,
                    "cannot map the registry's change counter {}: {source} (glint's user must be \
                     able to create and write it beside the database)",
                    path.display()
                )
            }
            RegistryError::Sql { context, .. } => {
                write!(formatter, "registry: failed to {context}")
            }
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::CreateFolder { source, .. } => Some(source),
            RegistryError::ChangeCounter { source, .. } => Some(source),
            RegistryError::Sql { source, .. } => Some(source),
            RegistryError::Duplicate
            | RegistryError::MemberQuota { .. }
            | RegistryError::BadMarker
            | RegistryError::MarkerNotVisible => None,
        }
    }
}

/// The change counter of the SQLite file at `path`, beside the file's real path (a link or
/// another spelling of the path names the same counter). A process that cannot map it does not
/// open the registry: its writes would not move the counter, and other children would go on
/// answering from memory what it changed.
fn open_changes(path: &std::path::Path) -> Result<Changes, RegistryError> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Changes::open(&real).map_err(|source| RegistryError::ChangeCounter {
        path: Changes::path(&real),
        source,
    })
}

/// A transaction holding the database's write lock (see "Locking" in the module doc), which
/// [`commit`] ends.
fn begin_immediate<'a>(lease: &'a mut Lease<'_>) -> Result<Write<'a>, RegistryError> {
    let changes = lease.registry.changes.as_ref();
    let transaction = lease
        .begin_write()
        .map_err(RegistryError::sql("begin a write transaction"))?;
    let rows_before = transaction.total_changes();
    Ok(Write {
        transaction,
        changes,
        rows_before,
    })
}

/// A write transaction and the change counter its commit moves.
struct Write<'a> {
    transaction: Transaction<'a>,
    changes: Option<&'a Changes>,
    /// [`Connection::total_changes`] as the transaction began: a write that changed no row
    /// (a recovery pass that found nothing to recover) commits without moving the counter, so
    /// the children's memory of shown images survives it.
    rows_before: Option<u64>,
}

impl Deref for Write<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.transaction
    }
}

/// Commits a write transaction, moving the change counter around the COMMIT while the write
/// lock is still held (see the `changes` module).
fn commit_write(transaction: Transaction<'_>, changes: Option<&Changes>) -> Result<(), SqlError> {
    let Some(changes) = changes else {
        return transaction.commit();
    };
    let odd = changes.writing();
    let committed = transaction.commit();
    changes.written(odd);
    committed
}

/// A transaction whose reads come from one snapshot.
fn begin_read(connection: &mut Connection) -> Result<Transaction<'_>, RegistryError> {
    connection
        .begin_read()
        .map_err(RegistryError::sql("begin a read transaction"))
}

fn commit(write: Write<'_>) -> Result<(), RegistryError> {
    let changed_rows =
        write.rows_before.is_none() || write.transaction.total_changes() != write.rows_before;
    // A counter left odd by a process that died mid-commit is made even by the next write,
    // holding the lock, whether or not it changed a row.
    let changes = write
        .changes
        .filter(|changes| changed_rows || changes.version().is_none());
    commit_write(write.transaction, changes)
        .map_err(RegistryError::sql("commit a write transaction"))
}
