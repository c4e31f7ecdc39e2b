//! The [`Image`] record and how it maps onto the `images`, `image_properties` and `image_tags`
//! tables.
//!
//! Everything here runs on a connection or transaction the caller already holds: the functions
//! neither begin nor commit, so [`super::Registry`] decides what is atomic.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::SystemTime;

use super::sql::{params, Connection, Dialect, Row, SqlError, ToSql};
use super::{ImageStatus, RegistryError};
use crate::timestamp;

/// One image's metadata, as the API shows it (minus the derived `self`, `file` and `schema`),
/// plus the fields the store needs (`location`, `upload_owner`, `locations`).
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// The image's UUID; never reused, not even after the image is deleted.
    pub id: String,
    pub name: Option<String>,
    /// Queued until data is uploaded; see [`ImageStatus`] for the others.
    pub status: ImageStatus,
    /// public, private, shared or community.
    pub visibility: String,
    pub protected: bool,
    pub os_hidden: bool,
    /// Hex md5 of the data.
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub owner: Option<String>,
    pub size: Option<u64>,
    pub virtual_size: Option<u64>,
    pub container_format: Option<String>,
    pub disk_format: Option<String>,
    pub min_ram: i64,
    pub min_disk: i64,
    /// Sorted and without duplicates whenever the registry hands an image out.
    pub tags: Vec<String>,
    /// Custom properties; Glance's schema allows only string values.
    pub properties: BTreeMap<String, String>,
    /// "YYYY-MM-DDTHH:MM:SSZ".
    pub created_at: String,
    /// "YYYY-MM-DDTHH:MM:SSZ"; every write through the registry sets it to now.
    pub updated_at: String,
    /// Absolute path of the data file, once the image is active.
    pub location: Option<String>,
    /// Opaque token of the process uploading the data while the status is `Saving` (staging:
    /// `Uploading`; importing: `Importing`); see [`super::Registry::recover_abandoned_uploads`].
    /// On an `Active` image, the process copying it into more stores (copy-image, or an import
    /// that went on after its first store), which holds the image until it is done.
    pub upload_owner: Option<String>,
    /// With several stores (`enabled_backends`): every copy of the data, each with its store,
    /// in the order they were added; `location` is the first one's path. Empty with one store.
    pub locations: Vec<Location>,
}

/// One copy of an image's data in a named store (table `image_locations`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The backend id (`enabled_backends`).
    pub store: String,
    /// Absolute path of the data file.
    pub path: String,
}

impl Image {
    /// A new image with Glance's defaults: queued, visibility "shared", not protected, not
    /// hidden, min_ram and min_disk 0, no tags, created and updated now.
    pub fn new(id: impl Into<String>) -> Image {
        let now = timestamp::rfc3339_seconds(SystemTime::now());
        Image {
            id: id.into(),
            name: None,
            status: ImageStatus::Queued,
            visibility: "shared".to_string(),
            protected: false,
            os_hidden: false,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            owner: None,
            size: None,
            virtual_size: None,
            container_format: None,
            disk_format: None,
            min_ram: 0,
            min_disk: 0,
            tags: Vec::new(),
            properties: BTreeMap::new(),
            created_at: now.clone(),
            updated_at: now,
            location: None,
            upload_owner: None,
            locations: Vec::new(),
        }
    }

    /// Sorts the tags and drops duplicates, the form the registry stores and returns.
    pub fn normalize_tags(&mut self) {
        self.tags.sort();
        self.tags.dedup();
    }
}

/// The `images` columns [`from_row`] reads, in its order, qualified for use in joins.
pub(super) const COLUMNS: &str = "images.id, images.name, images.status, images.visibility, \
    images.protected, images.os_hidden, images.checksum, images.os_hash_algo, \
    images.os_hash_value, images.owner, images.size, images.virtual_size, \
    images.container_format, images.disk_format, images.min_ram, images.min_disk, \
    images.created_at, images.updated_at, images.location, images.upload_owner";

/// Reads the scalar fields selected by [`COLUMNS`]; tags and properties come from
/// [`load_details`].
///
/// A status word this binary does not know fails the read with a conversion error carrying
/// [`super::UnknownImageStatus`] (see that type for why it is not mapped to a variant).
pub(super) fn from_row(row: &Row<'_>) -> Result<Image, SqlError> {
    Ok(Image {
        id: row.get(0)?,
        name: row.get(1)?,
        status: row.get(2)?,
        visibility: row.get(3)?,
        protected: row.get(4)?,
        os_hidden: row.get(5)?,
        checksum: row.get(6)?,
        os_hash_algo: row.get(7)?,
        os_hash_value: row.get(8)?,
        owner: row.get(9)?,
        size: row.get(10)?,
        virtual_size: row.get(11)?,
        container_format: row.get(12)?,
        disk_format: row.get(13)?,
        min_ram: row.get(14)?,
        min_disk: row.get(15)?,
        tags: Vec::new(),
        properties: BTreeMap::new(),
        created_at: row.get(16)?,
        updated_at: row.get(17)?,
        location: row.get(18)?,
        upload_owner: row.get(19)?,
        locations: Vec::new(),
    })
}

/// Fills in the tags and custom properties of `image`.
///
/// One indexed lookup per table and image: SQLite runs in-process, so a page of a thousand
/// images costs a few milliseconds, and the statements are cached per connection.
pub(super) fn load_details(connection: &Connection, image: &mut Image) -> Result<(), SqlError> {
    let id = params![image.id];
    image.tags = connection.query_map(
        "SELECT tag FROM image_tags WHERE image_id = ?1 ORDER BY tag",
        id,
        |row| row.get(0),
    )?;
    image.properties = connection
        .query_map(
            "SELECT name, value FROM image_properties WHERE image_id = ?1",
            id,
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .into_iter()
        .collect();
    image.locations = connection.query_map(
        "SELECT store, path FROM image_locations WHERE image_id = ?1 ORDER BY position",
        id,
        |row| {
            Ok(Location {
                store: row.get(0)?,
                path: row.get(1)?,
            })
        },
    )?;
    Ok(())
}

/// The image with this id unless it is deleted, with its tags and properties.
///
/// One statement: consistent on its own (each engine runs a statement on one snapshot), so a
/// caller that reads nothing else needs no transaction, and on PostgreSQL it is one round trip
/// instead of four (issue 13: this was a quarter of `GET /v2/images/{id}`). The tags,
/// properties and locations come as JSON arrays, put in order here: an `ORDER BY` inside the
/// aggregates made SQLite sort through a temporary b-tree for each.
pub(super) fn select_live(
    connection: &Connection,
    id: &str,
) -> Result<Option<Image>, RegistryError> {
    static SQLITE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {COLUMNS}, {} FROM images WHERE images.id = ?1 AND images.deleted = 0",
            details_columns(Dialect::Sqlite)
        )
    });
    static POSTGRES: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {COLUMNS}, {} FROM images WHERE images.id = ?1 AND images.deleted = 0",
            details_columns(Dialect::Postgres)
        )
    });
    let sql = match connection.dialect() {
        Dialect::Sqlite => SQLITE.as_str(),
        Dialect::Postgres => POSTGRES.as_str(),
    };
    connection
        .query_opt(sql, params![id], from_row_with_details)
        .map_err(RegistryError::sql(format!("read image {id}")))
}

/// The three columns, after [`COLUMNS`], that carry an image's tags, properties and locations
/// as JSON arrays, for [`from_row_with_details`]: one statement reads images whole, however
/// many (a list's page too), instead of three more per image. Put in order when read: an
/// `ORDER BY` inside the aggregates made SQLite sort through a temporary b-tree for each.
pub(super) fn details_columns(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "(SELECT json_group_array(tag) FROM image_tags WHERE image_id = images.id), \
             (SELECT json_group_array(json_array(name, value)) FROM image_properties \
              WHERE image_id = images.id), \
             (SELECT json_group_array(json_array(position, store, path)) \
              FROM image_locations WHERE image_id = images.id)"
        }
        Dialect::Postgres => {
            "(SELECT coalesce(json_agg(tag), '[]') FROM image_tags \
              WHERE image_id = images.id), \
             (SELECT coalesce(json_agg(json_build_array(name, value)), '[]') \
              FROM image_properties WHERE image_id = images.id), \
             (SELECT coalesce(json_agg(json_build_array(position, store, path)), '[]') \
              FROM image_locations WHERE image_id = images.id)"
        }
    }
}

/// An image read by [`COLUMNS`] followed by [`details_columns`].
pub(super) fn from_row_with_details(row: &Row<'_>) -> Result<Image, SqlError> {
    let mut image = from_row(row)?;
    image.tags = json_column(row, 20)?;
    image.tags.sort_unstable();
    image.properties = json_column::<Vec<(String, String)>>(row, 21)?
        .into_iter()
        .collect();
    let mut locations = json_column::<Vec<(i64, String, String)>>(row, 22)?;
    locations.sort_unstable_by_key(|(position, ..)| *position);
    image.locations = locations
        .into_iter()
        .map(|(_, store, path)| Location { store, path })
        .collect();
    Ok(image)
}

/// Column `index` of `row`, a JSON array built by the statement, read into `T`.
fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, index: usize) -> Result<T, SqlError> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|error| SqlError::Conversion {
        column: index,
        source: Box::new(error),
    })
}

/// Whether a row with this id exists, deleted or not.
pub(super) fn id_taken(connection: &Connection, id: &str) -> Result<bool, RegistryError> {
    connection
        .exists("SELECT 1 FROM images WHERE id = ?1", params![id])
        .map_err(RegistryError::sql(format!("look up image id {id}")))
}

/// Whether a row with this id exists and is not deleted.
pub(super) fn is_live(connection: &Connection, id: &str) -> Result<bool, RegistryError> {
    connection
        .exists(
            "SELECT 1 FROM images WHERE id = ?1 AND deleted = 0",
            params![id],
        )
        .map_err(RegistryError::sql(format!("look up image {id}")))
}

/// Inserts a new image row with its tags and properties; `order` is the hidden microsecond key
/// for both `created_order` and `updated_order`.
pub(super) fn insert(
    connection: &Connection,
    image: &Image,
    order: i64,
) -> Result<(), RegistryError> {
    connection
        .execute(
            "INSERT INTO images (id, name, status, visibility, protected, os_hidden, checksum, \
             os_hash_algo, os_hash_value, owner, size, virtual_size, container_format, \
             disk_format, min_ram, min_disk, created_at, updated_at, location, upload_owner, \
             created_order, updated_order) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
             ?17, ?18, ?19, ?20, ?21, ?21)",
            &row_parameters(image, &order),
        )
        .map_err(RegistryError::sql(format!("insert image {}", image.id)))?;
    write_details(connection, image)
}

/// The row's columns as ?1..?21 for both `insert` and `write`: every field in column order,
/// then the hidden order key (`created_order` and `updated_order` for an insert, `updated_order`
/// for an update).
fn row_parameters<'a>(image: &'a Image, order: &'a i64) -> [&'a dyn ToSql; 21] {
    [
        &image.id,
        &image.name,
        &image.status,
        &image.visibility,
        &image.protected,
        &image.os_hidden,
        &image.checksum,
        &image.os_hash_algo,
        &image.os_hash_value,
        &image.owner,
        &image.size,
        &image.virtual_size,
        &image.container_format,
        &image.disk_format,
        &image.min_ram,
        &image.min_disk,
        &image.created_at,
        &image.updated_at,
        &image.location,
        &image.upload_owner,
        order,
    ]
}

/// Overwrites every field of an existing image row and replaces its tags and properties;
/// `updated_order` is the hidden microsecond key matching `image.updated_at`.
pub(super) fn write(
    connection: &Connection,
    image: &Image,
    updated_order: i64,
) -> Result<(), RegistryError> {
    connection
        .execute(
            "UPDATE images SET name = ?2, status = ?3, visibility = ?4, protected = ?5, \
             os_hidden = ?6, checksum = ?7, os_hash_algo = ?8, os_hash_value = ?9, owner = ?10, \
             size = ?11, virtual_size = ?12, container_format = ?13, disk_format = ?14, \
             min_ram = ?15, min_disk = ?16, created_at = ?17, updated_at = ?18, \
             location = ?19, upload_owner = ?20, updated_order = ?21 \
             WHERE id = ?1",
            &row_parameters(image, &updated_order),
        )
        .map_err(RegistryError::sql(format!("update image {}", image.id)))?;
    delete_details(connection, &image.id)?;
    write_details(connection, image)
}

/// Turns the row into a tombstone: status `Deleted`, flagged, its tags and properties gone,
/// its members marked deleted. The row stays so that the id is never reused.
pub(super) fn mark_deleted(
    connection: &Connection,
    id: &str,
    now: &str,
    now_order: i64,
) -> Result<(), RegistryError> {
    connection
        .execute(
            "UPDATE images SET deleted = 1, status = ?4, deleted_at = ?2, \
             updated_at = ?2, updated_order = ?3 WHERE id = ?1",
            params![id, now, now_order, ImageStatus::Deleted],
        )
        .map_err(RegistryError::sql(format!("mark image {id} deleted")))?;
    delete_details(connection, id)?;
    super::member::delete_all(connection, id, now)
}

fn delete_details(connection: &Connection, id: &str) -> Result<(), RegistryError> {
    let context = || format!("remove the tags, properties and locations of image {id}");
    for sql in [
        "DELETE FROM image_tags WHERE image_id = ?1",
        "DELETE FROM image_properties WHERE image_id = ?1",
        "DELETE FROM image_locations WHERE image_id = ?1",
    ] {
        connection
            .execute(sql, params![id])
            .map_err(RegistryError::sql(context()))?;
    }
    Ok(())
}

fn write_details(connection: &Connection, image: &Image) -> Result<(), RegistryError> {
    let context = || format!("write the tags and properties of image {}", image.id);
    for tag in &image.tags {
        connection
            // The tag row carries the image's creation keys for the tag walk of a list
            // (migration 5); the image row is written first, so they are read from it.
            .execute(
                "INSERT INTO image_tags (image_id, tag, created_at, created_order) \
                 SELECT id, ?2, created_at, created_order FROM images WHERE id = ?1 \
                 ON CONFLICT DO NOTHING",
                params![image.id, tag],
            )
            .map_err(RegistryError::sql(context()))?;
    }
    for (name, value) in &image.properties {
        connection
            .execute(
                "INSERT INTO image_properties (image_id, name, value) VALUES (?1, ?2, ?3)",
                params![image.id, name, value],
            )
            .map_err(RegistryError::sql(context()))?;
    }
    for (position, location) in image.locations.iter().enumerate() {
        connection
            .execute(
                "INSERT INTO image_locations (image_id, position, store, path) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![image.id, position, location.store, location.path],
            )
            .map_err(RegistryError::sql(context()))?;
    }
    Ok(())
}

/// The live images with a data location and no row in `image_locations` (stored with one
/// store), as (id, location), by id.
///
/// A scan of the live images: it runs when a child starts, not per request.
pub(super) fn select_without_store(
    connection: &Connection,
) -> Result<Vec<(String, String)>, RegistryError> {
    connection
        .query_map(
            "SELECT id, location FROM images WHERE deleted = 0 AND location IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM image_locations WHERE image_id = images.id) \
             ORDER BY id",
            &[],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(RegistryError::sql("find image data stored without a store"))
}

/// Records `path` as the first location of image `id`, in `store`.
pub(super) fn insert_first_location(
    connection: &Connection,
    id: &str,
    store: &str,
    path: &str,
) -> Result<(), RegistryError> {
    connection
        .execute(
            "INSERT INTO image_locations (image_id, position, store, path) VALUES (?1, 0, ?2, ?3)",
            params![id, store, path],
        )
        .map(|_| ())
        .map_err(RegistryError::sql(format!(
            "record store {store} for the data of image {id}"
        )))
}

/// How many live images have a location in each store, for the stores that have any.
pub(super) fn count_by_store(connection: &Connection) -> Result<Vec<(String, u64)>, RegistryError> {
    connection
        .query_map(
            "SELECT image_locations.store, count(DISTINCT image_locations.image_id) \
             FROM image_locations JOIN images ON images.id = image_locations.image_id \
             WHERE images.deleted = 0 GROUP BY image_locations.store ORDER BY 1",
            &[],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(RegistryError::sql("count the images of each store"))
}
