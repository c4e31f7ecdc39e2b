//! [`ImageStatus`]: where an image is in its lifecycle, and the one table that spells each
//! status as text.
//!
//! The same word is used in three places: the `images.status` column, the `status` attribute
//! of the API's image JSON (and its schema), and the `status` list filter. All three go through
//! [`ImageStatus::as_str`] and [`ImageStatus::from_str`], so they cannot drift apart.
//!
//! # Compatibility
//!
//! The column keeps the words Glance uses, so databases written before this type existed read
//! unchanged. A word this binary does not know is an error, not a guess (see
//! [`UnknownImageStatus`]): during a reload two binaries share the database, so a release that
//! starts *writing* a new status must follow one that already *reads* it. The nine statuses of
//! Glance's schema are all here for that reason, although glint itself writes only four.
//!
//! This module does not decide which transitions are allowed; the API does, next to the Glance
//! behaviour it copies.

use std::fmt;
use std::str::FromStr;

use super::sql::{FromSql, ToSql, ValueRef};

/// An image's status. Glance's image schema lists exactly these nine.
///
/// glint writes `Queued`, `Saving`, `Active` and `Deleted`; it reads and filters by all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageStatus {
    /// Created, no data yet. The only status that accepts an upload or a change of the formats;
    /// a failed or abandoned upload returns the image here.
    Queued,
    /// Data is being uploaded by the process named in `Image::upload_owner`.
    Saving,
    /// The data is stored and can be downloaded.
    Active,
    /// Glance: an upload failed for good. glint returns failed uploads to `Queued` instead.
    Killed,
    /// The tombstone of a deleted image; never listed or shown, but its id stays taken.
    Deleted,
    /// Glance: an administrator hid the data; downloads answer 403.
    Deactivated,
    /// Glance with delayed delete: deleted, data not yet scrubbed.
    PendingDelete,
    /// Glance's interoperable import: data staged, not yet imported.
    Uploading,
    /// Glance's interoperable import: being imported.
    Importing,
}

/// A status word no [`ImageStatus`] spells: a bad list filter, or a database row written by
/// something other than this release of glint.
///
/// In the database this is deliberately an error rather than a variant such as `Unknown`:
/// clients validate every image against the schema's status enum, so serving the word would
/// break them anyway, and guessing a known status could let an upload or a download proceed on
/// an image in a state nothing here understands. The registry call fails, the API answers 500
/// and logs this message, which names the word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownImageStatus {
    /// The word as found.
    pub value: String,
}

impl ImageStatus {
    /// Every status once, in the order of Glance's image schema.
    pub const ALL: [ImageStatus; 9] = [
        ImageStatus::Queued,
        ImageStatus::Saving,
        ImageStatus::Active,
        ImageStatus::Killed,
        ImageStatus::Deleted,
        ImageStatus::Uploading,
        ImageStatus::Importing,
        ImageStatus::PendingDelete,
        ImageStatus::Deactivated,
    ];

    /// The word for this status in the database, the API's JSON and list filters.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Queued => "queued",
            ImageStatus::Saving => "saving",
            ImageStatus::Active => "active",
            ImageStatus::Killed => "killed",
            ImageStatus::Deleted => "deleted",
            ImageStatus::Deactivated => "deactivated",
            ImageStatus::PendingDelete => "pending_delete",
            ImageStatus::Uploading => "uploading",
            ImageStatus::Importing => "importing",
        }
    }
}

impl FromStr for ImageStatus {
    type Err = UnknownImageStatus;

    /// The status spelled exactly `text` (Glance compares case-sensitively too).
    fn from_str(text: &str) -> Result<ImageStatus, UnknownImageStatus> {
        ImageStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| UnknownImageStatus {
                value: text.to_string(),
            })
    }
}

impl fmt::Display for ImageStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl ToSql for ImageStatus {
    fn to_sql(&self) -> ValueRef<'_> {
        ValueRef::Text(self.as_str())
    }
}

impl FromSql for ImageStatus {
    /// A text value holding one of the words. Another word is [`UnknownImageStatus`], which
    /// the row reports as a conversion error at the column, as it does a value that is not
    /// text.
    fn from_sql(
        value: ValueRef<'_>,
    ) -> Result<ImageStatus, Box<dyn std::error::Error + Send + Sync>> {
        match value {
            ValueRef::Text(text) => text
                .parse()
                .map_err(|unknown: UnknownImageStatus| unknown.into()),
            other => Err(format!("expected an image status, found {other:?}").into()),
        }
    }
}

impl fmt::Display for UnknownImageStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "unknown image status {:?}; this glint knows {}",
            self.value,
            ImageStatus::ALL.map(ImageStatus::as_str).join(", ")
        )
    }
}

impl std::error::Error for UnknownImageStatus {}

#[cfg(test)]
mod tests {
    use super::super::sql::{params, Connection, SqlError};
    use super::*;

    fn in_memory() -> Connection {
        Connection::Sqlite(rusqlite::Connection::open_in_memory().expect("open"))
    }

    #[test]
    fn every_status_spells_glances_word_and_parses_back() {
        // Glance's image schema, in its order: the contract with clients and old databases.
        let glance = [
            "queued",
            "saving",
            "active",
            "killed",
            "deleted",
            "uploading",
            "importing",
            "pending_delete",
            "deactivated",
        ];
        assert_eq!(ImageStatus::ALL.map(ImageStatus::as_str), glance);
        for status in ImageStatus::ALL {
            assert_eq!(status.as_str().parse::<ImageStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
        }
    }

    #[test]
    fn words_that_are_not_statuses_are_refused_with_the_word() {
        for text in [
            "",
            "Active",
            "ACTIVE",
            " active",
            "active ",
            "happy",
            "pending-delete",
        ] {
            assert_eq!(
                text.parse::<ImageStatus>(),
                Err(UnknownImageStatus {
                    value: text.to_string()
                }),
                "{text:?}"
            );
        }
        let message = "happy".parse::<ImageStatus>().unwrap_err().to_string();
        assert!(message.contains("\"happy\""), "{message}");
        assert!(message.contains("pending_delete"), "{message}");
    }

    #[test]
    fn every_status_is_stored_as_its_word_and_read_back() {
        let connection = in_memory();
        connection
            .execute("CREATE TABLE t (status TEXT NOT NULL)", &[])
            .expect("create");
        for status in ImageStatus::ALL {
            connection
                .execute("DELETE FROM t", &[])
                .and_then(|_| connection.execute("INSERT INTO t VALUES (?1)", params![status]))
                .expect("write");
            let (text, read): (String, ImageStatus) = connection
                .query_opt("SELECT status, status FROM t", &[], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .expect("read")
                .expect("a row");
            assert_eq!((text.as_str(), read), (status.as_str(), status));
        }
    }

    #[test]
    fn an_unknown_stored_word_is_a_conversion_error_naming_it() {
        let connection = in_memory();
        for word in ["frozen", "Active", ""] {
            let error = connection
                .query_opt("SELECT ?1", params![word], |row| row.get::<ImageStatus>(0))
                .expect_err(word);
            let SqlError::Conversion { column: 0, source } = &error else {
                panic!("{word:?}: not a conversion failure: {error:?}");
            };
            assert_eq!(
                source.downcast_ref::<UnknownImageStatus>(),
                Some(&UnknownImageStatus {
                    value: word.to_string()
                }),
                "{error}"
            );
        }
        // The column is TEXT NOT NULL, but a hand-edited file may hold anything.
        for sql in ["SELECT 3", "SELECT NULL"] {
            let error = connection
                .query_opt(sql, &[], |row| row.get::<ImageStatus>(0))
                .expect_err(sql);
            assert!(
                matches!(error, SqlError::Conversion { column: 0, .. }),
                "{sql}: {error:?}"
            );
        }
    }
}
