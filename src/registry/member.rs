//! Image members: the projects an image with visibility "shared" is shared with, each with a
//! status its project sets ([`MemberStatus`]), stored in the `image_members` table; and the rule
//! deciding which images a non-admin project may see.
//!
//! The registry records members; it does not decide who may add them or set their status, nor
//! that only shared images have members (the API checks all of that, next to the Glance
//! behaviour it copies). It does enforce what must hold in one transaction: no project is a
//! member twice, the member quota, and that a deleted image has no members.
//!
//! # Glance's visibility rules
//!
//! Read from `glance/db/sqlalchemy/api.py` and `glance/db/utils.py` (master, commit c76abb0):
//!
//! - **Show** (`db/utils.py`, `is_image_visible`): an admin sees every image. Anyone else sees an
//!   image that has no owner, is public or community, is owned by their project, or is shared
//!   and has their project as a member in *any* status (pending and rejected too). A membership
//!   of an image that is not "shared" (say it was made private after it was shared) grants
//!   nothing. [`image_visible_to`] is that rule for a non-admin.
//! - **List** (`_select_images_query`, `_image_get_all`): for a non-admin ("regular_user") the
//!   union of (a) public and community images, (b) the project's own images, and (c) shared
//!   images the project is a live member of, with the membership status equal to
//!   `member_status` unless that is "all". Every filter applies within each branch. Then
//!   `_image_get_all` applies the visibility filter to the union: `visibility=all` adds nothing,
//!   another value keeps exactly that visibility, and no visibility parameter keeps only
//!   images that are not community *or* are owned by the caller's project. That last rule
//!   applies to admins too (their own community images are listed, other projects' are not),
//!   which is why [`super::Filters`] has `admin_project`.
//! - So an image with no owner is shown to everyone but listed for a non-admin only when it is
//!   public, community (with `visibility=community` or `all`), or shared with their project in
//!   the requested status: `owner = project` is false for it in SQL. A non-admin's own shared
//!   images are listed whatever their members' statuses; `member_status` only narrows branch (c).
//! - **Marker** (`_image_get_all` fetches it with `_image_get`): a marker that does not exist or
//!   is deleted raises ImageNotFound, which the API (`api/v2/images.py`, `index`) answers with
//!   400; one that exists but `is_image_visible` refuses raises Forbidden, answered with 403.
//!   The marker need not be in the list (a pending membership's image, an unowned private
//!   image): it only marks a position. [`super::RegistryError::BadMarker`] and
//!   [`super::RegistryError::MarkerNotVisible`] are those two.
//! - **Members** (`glance/db/__init__.py`, `ImageMemberRepo.add`; `glance/quota/__init__.py`,
//!   `ImageMemberFactoryProxy`): the quota is checked first, counting live members (attempted =
//!   count + 1 > `image_member_quota`, a negative quota meaning unlimited), then a live
//!   membership is a duplicate (409). Removing a member soft-deletes its row; adding it again
//!   makes it pending with new timestamps. Deleting an image soft-deletes its members in the
//!   same transaction (`image_destroy`, `_image_member_delete_all`).
//!
//! # Compatibility
//!
//! Every read joins `images` and keeps only live images, although deleting an image marks its
//! members deleted too: a generation built before members existed may run beside this one
//! during a reload and delete an image without touching `image_members`.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::image::{self, Image};
use super::{begin_immediate, commit, Now, Registry, RegistryError};

/// One project's membership of one image, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub image_id: String,
    /// The project the image is shared with.
    pub member_id: String,
    /// Pending when added; only the member project (or an admin) changes it.
    pub status: MemberStatus,
    /// "YYYY-MM-DDTHH:MM:SSZ", when this membership was (last) added.
    pub created_at: String,
    /// "YYYY-MM-DDTHH:MM:SSZ", when it was added or its status last set.
    pub updated_at: String,
}

/// Whether the member project has taken the image into its lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// Just added: the image can be shown and used by the member, but is not in its default
    /// list.
    Pending,
    /// Listed for the member by default.
    Accepted,
    /// Listed only with `member_status=rejected` or `all`; still shown and usable.
    Rejected,
}

impl MemberStatus {
    /// Every status, in Glance's schema order.
    pub const ALL: [MemberStatus; 3] = [
        MemberStatus::Pending,
        MemberStatus::Accepted,
        MemberStatus::Rejected,
    ];

    /// The word Glance uses, in the API and in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Pending => "pending",
            MemberStatus::Accepted => "accepted",
            MemberStatus::Rejected => "rejected",
        }
    }

    /// The status spelled exactly `text`; None for anything else (including "all", which is a
    /// list parameter, not a status).
    pub fn parse(text: &str) -> Option<MemberStatus> {
        MemberStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// Whether a non-admin of `project` may see `image`: Glance's `is_image_visible` (see the
/// module doc). `membership` is the project's live membership of the image, as
/// [`Registry::get_with_membership`] returns it; one of another project or image is ignored.
/// An admin sees every image and needs no call.
pub fn image_visible_to(image: &Image, project: &str, membership: Option<&Member>) -> bool {
    let is_member =
        membership.is_some_and(|member| member.image_id == image.id && member.member_id == project);
    visible(
        image.owner.as_deref(),
        &image.visibility,
        project,
        is_member,
    )
}

/// [`image_visible_to`] on the columns it needs, for the list marker.
pub(super) fn visible(
    owner: Option<&str>,
    visibility: &str,
    project: &str,
    is_member: bool,
) -> bool {
    match owner {
        None => true,
        Some(_) if matches!(visibility, "public" | "community") => true,
        Some(owner) if owner == project => true,
        Some(_) => visibility == "shared" && is_member,
    }
}

impl Registry {
    /// Adds `member_id` as a pending member of image `image_id`. [`RegistryError::MemberQuota`]
    /// when the image already has `quota` live members (Glance's `image_member_quota`; None is
    /// unlimited, as a negative quota is in Glance), checked before
    /// [`RegistryError::Duplicate`] for a project that is a member already, as Glance does.
    /// None when the image does not exist or is deleted.
    pub fn add_member(
        &self,
        image_id: &str,
        member_id: &str,
        quota: Option<usize>,
    ) -> Result<Option<Member>, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        if !image::is_live(&transaction, image_id)? {
            return Ok(None);
        }
        if let Some(limit) = quota {
            if count_live(&transaction, image_id)? >= limit {
                return Err(RegistryError::MemberQuota { limit });
            }
        }
        if select_live(&transaction, image_id, member_id)?.is_some() {
            return Err(RegistryError::Duplicate);
        }
        let now = Now::take();
        transaction
            .prepare_cached(
                "INSERT INTO image_members (image_id, member_id, status, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    image_id,
                    member_id,
                    MemberStatus::Pending,
                    now.seconds
                ])
            })
            .map_err(RegistryError::sql(format!(
                "add member {member_id} to image {image_id}"
            )))?;
        commit(transaction)?;
        Ok(Some(Member {
            image_id: image_id.to_string(),
            member_id: member_id.to_string(),
            status: MemberStatus::Pending,
            created_at: now.seconds.clone(),
            updated_at: now.seconds,
        }))
    }

    /// The live members of the image, in the order they were added (a member removed and added
    /// again counts from its last addition). Empty when the image does not exist or is
    /// deleted.
    pub fn members(&self, image_id: &str) -> Result<Vec<Member>, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = lease
            .transaction()
            .map_err(RegistryError::sql("begin a read transaction"))?;
        let sql = format!(
            "SELECT {COLUMNS} FROM image_members JOIN images ON images.id = image_members.image_id \
             WHERE image_members.image_id = ?1 AND image_members.deleted = 0 \
             AND images.deleted = 0 ORDER BY image_members.id"
        );
        transaction
            .prepare_cached(&sql)
            .and_then(|mut statement| {
                statement
                    .query_map([image_id], from_row)?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(RegistryError::sql(format!(
                "read the members of image {image_id}"
            )))
    }

    /// The live membership of `member_id` in the image; None if there is none or the image
    /// does not exist or is deleted.
    pub fn member(&self, image_id: &str, member_id: &str) -> Result<Option<Member>, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = lease
            .transaction()
            .map_err(RegistryError::sql("begin a read transaction"))?;
        select_live(&transaction, image_id, member_id)
    }

    /// Sets the status of a live membership and its `updated_at` to now, and returns it; None
    /// if there is no such membership (or the image is deleted). Setting the status it has
    /// already still updates `updated_at`, as Glance's save does.
    pub fn set_member_status(
        &self,
        image_id: &str,
        member_id: &str,
        status: MemberStatus,
    ) -> Result<Option<Member>, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        let Some(mut member) = select_live(&transaction, image_id, member_id)? else {
            return Ok(None);
        };
        let now = Now::take();
        transaction
            .prepare_cached(
                "UPDATE image_members SET status = ?3, updated_at = ?4 \
                 WHERE image_id = ?1 AND member_id = ?2 AND deleted = 0",
            )
            .and_then(|mut statement| {
                statement.execute(params![image_id, member_id, status, now.seconds])
            })
            .map_err(RegistryError::sql(format!(
                "set the status of member {member_id} of image {image_id}"
            )))?;
        commit(transaction)?;
        member.status = status;
        member.updated_at = now.seconds;
        Ok(Some(member))
    }

    /// Removes a live membership (marks its row deleted); false if there was none or the image
    /// does not exist or is deleted.
    pub fn delete_member(&self, image_id: &str, member_id: &str) -> Result<bool, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_immediate(&mut lease)?;
        if select_live(&transaction, image_id, member_id)?.is_none() {
            return Ok(false);
        }
        let now = Now::take();
        transaction
            .prepare_cached(
                "UPDATE image_members SET deleted = 1, deleted_at = ?3 \
                 WHERE image_id = ?1 AND member_id = ?2 AND deleted = 0",
            )
            .and_then(|mut statement| statement.execute(params![image_id, member_id, now.seconds]))
            .map_err(RegistryError::sql(format!(
                "remove member {member_id} of image {image_id}"
            )))?;
        commit(transaction)?;
        Ok(true)
    }

    /// The image and, when `project` is Some and the image is a shared image of another
    /// project, that project's live membership of it (the only case where a membership decides
    /// anything), from one snapshot, so that the API's visibility decision
    /// ([`image_visible_to`]) sees both as they were at one instant. None if there is no such
    /// image or it is deleted.
    pub fn get_with_membership(
        &self,
        id: &str,
        project: Option<&str>,
    ) -> Result<Option<(Image, Option<Member>)>, RegistryError> {
        let mut lease = self.lease()?;
        // Only a shared image of another project is seen through a membership: for any other
        // the lookup would decide nothing, so it is spared (a show of one's own image is the
        // common case), and so is a transaction: the image is read by one statement.
        let through_membership = |image: &Image| {
            project.filter(|project| {
                image.visibility == "shared" && image.owner.as_deref() != Some(*project)
            })
        };
        let Some(image) = image::select_live(&lease, id)? else {
            return Ok(None);
        };
        if through_membership(&image).is_none() {
            return Ok(Some((image, None)));
        }
        // The image and the membership as of one moment: read again, with it, in a transaction.
        let transaction = lease
            .transaction()
            .map_err(RegistryError::sql("begin a read transaction"))?;
        let Some(image) = image::select_live(&transaction, id)? else {
            return Ok(None);
        };
        let membership = match through_membership(&image) {
            Some(project) => select_live(&transaction, id, project)?,
            None => None,
        };
        Ok(Some((image, membership)))
    }
}

/// The `image_members` columns [`from_row`] reads, in its order.
const COLUMNS: &str = "image_members.image_id, image_members.member_id, image_members.status, \
    image_members.created_at, image_members.updated_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member {
        image_id: row.get(0)?,
        member_id: row.get(1)?,
        status: row.get(2)?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
    })
}

/// The live membership of `member_id` in a live image.
pub(super) fn select_live(
    connection: &Connection,
    image_id: &str,
    member_id: &str,
) -> Result<Option<Member>, RegistryError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM image_members JOIN images ON images.id = image_members.image_id \
         WHERE image_members.image_id = ?1 AND image_members.member_id = ?2 \
         AND image_members.deleted = 0 AND images.deleted = 0"
    );
    connection
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row([image_id, member_id], from_row)
                .optional()
        })
        .map_err(RegistryError::sql(format!(
            "read member {member_id} of image {image_id}"
        )))
}

/// How many live members the image has.
fn count_live(connection: &Connection, image_id: &str) -> Result<usize, RegistryError> {
    connection
        .prepare_cached("SELECT count(*) FROM image_members WHERE image_id = ?1 AND deleted = 0")
        .and_then(|mut statement| statement.query_row([image_id], |row| row.get::<_, i64>(0)))
        .map(|count| usize::try_from(count).unwrap_or(usize::MAX))
        .map_err(RegistryError::sql(format!(
            "count the members of image {image_id}"
        )))
}

/// Marks every live member of the image deleted; part of deleting the image.
pub(super) fn delete_all(
    connection: &Connection,
    image_id: &str,
    now: &str,
) -> Result<(), RegistryError> {
    connection
        .prepare_cached(
            "UPDATE image_members SET deleted = 1, deleted_at = ?2 \
             WHERE image_id = ?1 AND deleted = 0",
        )
        .and_then(|mut statement| statement.execute([image_id, now]))
        .map_err(RegistryError::sql(format!(
            "remove the members of image {image_id}"
        )))?;
    Ok(())
}

impl ToSql for MemberStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_str().as_bytes(),
        )))
    }
}

impl FromSql for MemberStatus {
    /// One of the three words. Another fails the read, as an unknown image status does (see
    /// [`super::UnknownImageStatus`] for why a guess would be worse): a member status is what
    /// grants a listing, so it is never guessed.
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<MemberStatus> {
        let text = value.as_str()?;
        MemberStatus::parse(text).ok_or_else(|| {
            FromSqlError::Other(format!("unknown image member status {text:?}").into())
        })
    }
}
