//! Who may see and do what: the request's [`Context`] as Glance's policy and visibility rules
//! see it, and the decisions every route asks of it.
//!
//! A request that passed the gate (`super::auth`) speaks for a [`Caller`]. Under `noauth` and
//! `token` that caller is Glance's unauthenticated context: an admin of no project, for whom
//! every rule holds and every image is visible. Under Keystone it is the validated token: its
//! roles and project decide, through the generation's [`Policy`] (Glance's defaults, or the
//! operator's `[oslo_policy] policy_file`), and an admin is whoever passes `context_is_admin`.
//!
//! The rules follow glance/api/v2/policy.py and glance/db/utils.py:
//! - an image the caller may not see is a 404 with the registry's message, before any rule;
//! - a refused rule is a 403 "You are not authorized to complete RULE action.", except that it
//!   is a 404 when the rule is `get_image` or when the caller could not pass `get_image` either
//!   (`ImageAPIPolicy._enforce`): a project learns nothing of an image it may not read;
//! - the target of an image rule is the image (`ImageTarget`): `project_id` and `owner` are its
//!   owner, `member_id` the caller's project when the image is shared and not the caller's,
//!   `visibility` and `id` its own, then its custom properties;
//! - with `[oslo_policy] enforce_new_defaults = false`, where Glance's legacy rules allow nearly
//!   everything, Glance adds its hard-coded owner-or-admin check to the rules that change an
//!   image (`check_is_image_mutable`) and to adding, answering and removing members: so does
//!   glint ([`Context::legacy_owner_checks`]).

use std::sync::Arc;

use super::auth::Caller;
use super::error::ApiError;
use crate::keystone::Context as Token;
use crate::policy::{Credentials, Policy, Target};
use crate::registry::{Image, Member};

/// Who a request speaks for and the policy it is judged by.
pub struct Context {
    /// `None` for the unauthenticated admin of `noauth` and `token`: no rule is asked.
    credentials: Option<Credentials>,
    policy: Arc<Policy>,
    /// The caller's project: the owner of the images it creates, the project it sees as.
    pub project: Option<String>,
    /// Glance's `context.is_admin`: sees every image and may change any.
    pub is_admin: bool,
    /// The caller's user (Keystone), recorded in the tasks it starts.
    pub user_id: Option<String>,
}

impl Context {
    /// The context of `caller` under `policy`.
    pub fn new(caller: &Caller, policy: Arc<Policy>) -> Context {
        let authenticated = match caller {
            Caller::Anonymous | Caller::ListedToken => {
                return Context {
                    credentials: None,
                    policy,
                    project: None,
                    is_admin: true,
                    user_id: None,
                }
            }
            Caller::Keystone(authenticated) => authenticated,
        };
        let credentials = credentials(&authenticated.user, authenticated.service.as_deref());
        let project = credentials.project_id.clone();
        let user_id = credentials.user_id.clone();
        let mut context = Context {
            credentials: Some(credentials),
            policy,
            project,
            is_admin: false,
            user_id,
        };
        let mut target = Target::new();
        if let Some(project) = &context.project {
            target.insert("project_id".to_string(), project.clone());
        }
        context.is_admin = context.allows("context_is_admin", &target);
        context
    }

    /// Whether rule `rule` holds for this caller on `target`. A token of the wrong scope for
    /// the rule is refused like a denial, as Glance answers oslo.policy's `InvalidScope`.
    pub fn allows(&self, rule: &str, target: &Target) -> bool {
        match &self.credentials {
            None => true,
            Some(credentials) => self.policy.enforce(rule, target, credentials).is_allowed(),
        }
    }

    /// Rule `rule` on `target`, else 403 in Glance's words.
    pub fn enforce(&self, rule: &str, target: &Target) -> Result<(), ApiError> {
        if self.allows(rule, target) {
            Ok(())
        } else {
            Err(forbidden(rule))
        }
    }

    /// The project whose view of the registry a list takes: `None` (everything) for an admin.
    pub fn viewer(&self) -> Option<String> {
        if self.is_admin {
            None
        } else {
            // A non-admin token with no project (domain or system scope) sees as a project
            // that owns nothing and is a member of nothing.
            Some(self.project.clone().unwrap_or_default())
        }
    }

    /// Whether the caller may see `image` at all (glance/db/utils.py `is_image_visible`):
    /// admins see everything; anyone sees an image with no owner, a public or a community
    /// one; a project sees its own images and the shared images it is a member of, whatever
    /// the membership's status.
    pub fn sees(&self, image: &Image, membership: Option<&Member>) -> bool {
        self.is_admin
            || crate::registry::image_visible_to(
                image,
                self.project.as_deref().unwrap_or_default(),
                membership,
            )
    }

    /// The target of a rule on `image` (Glance's `ImageTarget`). A custom property never stands
    /// in for the keys Glance maps to the image's own attributes (`key_transforms`): a property
    /// named `member_id` or `project_id` must not make a rule pass.
    pub fn image_target(&self, image: &Image) -> Target {
        let mut target = Target::new();
        for (name, value) in &image.properties {
            if !RESERVED_TARGET_KEYS.contains(&name.as_str()) {
                target.insert(name.clone(), value.clone());
            }
        }
        if let Some(owner) = &image.owner {
            target.insert("project_id".to_string(), owner.clone());
            target.insert("owner".to_string(), owner.clone());
        }
        if image.visibility == "shared" && image.owner != self.project {
            if let Some(project) = &self.project {
                target.insert("member_id".to_string(), project.clone());
            }
        }
        target.insert("visibility".to_string(), image.visibility.clone());
        target.insert("id".to_string(), image.id.clone());
        target.insert("status".to_string(), image.status.to_string());
        target
    }

    /// Rule `rule` on `image` as Glance's `ImageAPIPolicy` enforces it: refused, it is a 404
    /// when the rule is `get_image` or the caller may not `get_image` either, else a 403.
    pub fn enforce_on_image(&self, rule: &str, image: &Image) -> Result<(), ApiError> {
        if self.credentials.is_none() {
            return Ok(());
        }
        let target = self.image_target(image);
        if !self.allows(rule, &target) {
            if rule == "get_image" || !self.allows("get_image", &target) {
                return Err(hidden());
            }
            return Err(forbidden(rule));
        }
        let changes_image = matches!(
            rule,
            "modify_image" | "delete_image" | "upload_image" | "deactivate" | "reactivate"
        );
        if changes_image && self.legacy_owner_checks() && !self.owns(image) {
            return Err(ApiError::Forbidden("You do not own this image".to_string()));
        }
        Ok(())
    }

    /// Whether Glance's hard-coded owner checks apply: a Keystone caller who is no admin,
    /// under `enforce_new_defaults = false` (glance/api/v2/policy.py `check_is_image_mutable`,
    /// glance/api/v2/image_members.py `_check_visibility_and_ownership`).
    pub fn legacy_owner_checks(&self) -> bool {
        self.credentials.is_some() && !self.is_admin && !self.policy.enforce_new_defaults()
    }

    /// Whether `image` belongs to the caller's project (an image with no owner belongs to
    /// nobody).
    pub fn owns(&self, image: &Image) -> bool {
        image.owner.is_some() && image.owner == self.project
    }

    /// `add_image` for a new image as Glance's `ImageAPIPolicy.add_image` enforces it: refused
    /// for another owner, the message names that owner; then the visibility's own rule; under
    /// the legacy defaults, Glance's check that a non-admin creates only for its project.
    pub fn enforce_add_image(&self, image: &Image) -> Result<(), ApiError> {
        let target = self.image_target(image);
        if !self.allows("add_image", &target) {
            if image.owner != self.project {
                return Err(ApiError::Forbidden(format!(
                    "You are not permitted to create images owned by '{}'",
                    owner_text(image.owner.as_deref())
                )));
            }
            return Err(forbidden("add_image"));
        }
        self.enforce_visibility(&image.visibility, &target)?;
        if self.legacy_owner_checks() && image.owner != self.project {
            return Err(ApiError::Forbidden(format!(
                "You are not permitted to create images owned by '{}'.",
                owner_text(image.owner.as_deref())
            )));
        }
        Ok(())
    }

    /// Whether the caller passes `get_image` on `image`, an image the registry listed for it.
    pub fn may_get(&self, image: &Image) -> bool {
        self.credentials.is_none() || self.allows("get_image", &self.image_target(image))
    }

    /// The rule a change of visibility to `visibility` needs besides `modify_image`
    /// (glance/api/policy.py `_enforce_image_visibility`), enforced on `target`.
    pub fn enforce_visibility(&self, visibility: &str, target: &Target) -> Result<(), ApiError> {
        match visibility {
            "public" => self.enforce("publicize_image", target),
            "community" => self.enforce("communitize_image", target),
            _ => Ok(()),
        }
    }
}

/// The target keys that come from the image's attributes, never from its custom properties.
const RESERVED_TARGET_KEYS: &[&str] = &[
    "project_id",
    "owner",
    "member_id",
    "id",
    "image_id",
    "visibility",
    "status",
];

/// An owner as Python formats it in Glance's messages.
fn owner_text(owner: Option<&str>) -> &str {
    owner.unwrap_or("None")
}

/// 403 for a refused rule, in the words of Glance's `exception.Forbidden`.
pub fn forbidden(rule: &str) -> ApiError {
    ApiError::Forbidden(format!("You are not authorized to complete {rule} action."))
}

/// The 404 of a rule refused on an image the caller may not read (webob's bare
/// `HTTPNotFound`, as Glance raises it).
fn hidden() -> ApiError {
    ApiError::NotFound("The resource could not be found.".to_string())
}

/// The policy credentials of a validated token (oslo.context's `to_policy_values`), with the
/// service token's user and roles when one was sent.
fn credentials(user: &Token, service: Option<&Token>) -> Credentials {
    Credentials {
        user_id: Some(user.user_id.clone()),
        user_domain_id: user.user_domain_id.clone(),
        project_id: user.project_id.clone(),
        project_domain_id: user.project_domain_id.clone(),
        domain_id: user.domain_id.clone(),
        system_scope: user.system_scope.clone(),
        roles: user.roles.clone(),
        is_admin_project: user.is_admin_project,
        service_user_id: service.map(|service| service.user_id.clone()),
        service_roles: service.map_or_else(Vec::new, |service| service.roles.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::keystone::Authenticated;

    /// A Keystone caller of `project` (or system scope when `None`) with `roles`.
    fn caller(project: Option<&str>, roles: &[&str]) -> Caller {
        let token = Token {
            user_id: "u".to_string(),
            user_name: "user".to_string(),
            user_domain_id: Some("default".to_string()),
            user_domain_name: None,
            project_id: project.map(str::to_string),
            project_name: None,
            project_domain_id: project.map(|_| "default".to_string()),
            project_domain_name: None,
            domain_id: None,
            domain_name: None,
            system_scope: project.is_none().then(|| "all".to_string()),
            roles: roles.iter().map(|role| role.to_string()).collect(),
            is_admin_project: true,
            expires_at: SystemTime::now() + Duration::from_secs(3600),
            audit_id: None,
        };
        Caller::Keystone(Authenticated {
            user: Arc::new(token),
            service: None,
        })
    }

    fn image(owner: Option<&str>, visibility: &str) -> Image {
        let mut image = Image::new("5a8b3c2e-0f4d-4a44-9c55-7d0e1f2a3b4c");
        image.owner = owner.map(str::to_string);
        image.visibility = visibility.to_string();
        image
    }

    fn context(caller: &Caller, new_defaults: bool) -> Context {
        Context::new(caller, Arc::new(Policy::defaults(new_defaults, true)))
    }

    #[test]
    fn noauth_and_listed_tokens_are_an_admin_of_no_project() {
        for caller in [Caller::Anonymous, Caller::ListedToken] {
            let context = context(&caller, true);
            assert!(context.is_admin);
            assert_eq!(context.project, None);
            assert_eq!(context.viewer(), None);
            let image = image(Some("other"), "private");
            assert!(context.sees(&image, None));
            for rule in [
                "publicize_image",
                "deactivate",
                "delete_image",
                "no_such_rule",
            ] {
                assert!(context.enforce_on_image(rule, &image).is_ok(), "{rule}");
                assert!(context.allows(rule, &Target::new()), "{rule}");
            }
        }
    }

    #[test]
    fn a_refused_rule_is_404_where_the_caller_may_not_get_the_image_else_403() {
        let reader = context(&caller(Some("alpha"), &["reader"]), true);
        let own = image(Some("alpha"), "private");
        match reader.enforce_on_image("modify_image", &own) {
            Err(ApiError::Forbidden(message)) => assert_eq!(
                message,
                "You are not authorized to complete modify_image action."
            ),
            other => panic!("reader modify: {other:?}"),
        }
        // A caller with no role at all may not even get_image: every refusal is a 404.
        let nobody = context(&caller(Some("alpha"), &[]), true);
        assert!(matches!(
            nobody.enforce_on_image("modify_image", &own),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            nobody.enforce_on_image("get_image", &own),
            Err(ApiError::NotFound(_))
        ));
    }

    #[test]
    fn the_target_names_the_owner_and_the_caller_as_member_of_a_shared_image() {
        let beta = context(&caller(Some("beta"), &["member", "reader"]), true);
        let mut shared = image(Some("alpha"), "shared");
        shared
            .properties
            .insert("os_distro".to_string(), "debian".to_string());
        let target = beta.image_target(&shared);
        assert_eq!(target.get("project_id").map(String::as_str), Some("alpha"));
        assert_eq!(target.get("owner").map(String::as_str), Some("alpha"));
        assert_eq!(target.get("member_id").map(String::as_str), Some("beta"));
        assert_eq!(target.get("visibility").map(String::as_str), Some("shared"));
        assert_eq!(target.get("os_distro").map(String::as_str), Some("debian"));
        // Custom properties never stand in for the image's own keys.
        let mut planted = image(None, "private");
        for key in ["project_id", "owner", "member_id", "visibility", "id"] {
            planted
                .properties
                .insert(key.to_string(), "beta".to_string());
        }
        let target = beta.image_target(&planted);
        for key in ["project_id", "owner", "member_id"] {
            assert_eq!(target.get(key), None, "{key}");
        }
        assert_eq!(
            target.get("visibility").map(String::as_str),
            Some("private")
        );
        assert_eq!(
            target.get("id").map(String::as_str),
            Some(planted.id.as_str())
        );
        // Not shared, or the caller's own: no member_id.
        assert_eq!(
            beta.image_target(&image(Some("alpha"), "private"))
                .get("member_id"),
            None
        );
        assert_eq!(
            beta.image_target(&image(Some("beta"), "shared"))
                .get("member_id"),
            None
        );
        // A member may download a shared image; a member of no project may not.
        assert!(beta.enforce_on_image("download_image", &shared).is_ok());
        assert!(beta.viewer() == Some("beta".to_string()) && !beta.is_admin);
    }

    #[test]
    fn an_admin_role_makes_an_admin_and_a_system_token_fails_project_rules() {
        let admin = context(&caller(Some("admin"), &["admin", "member", "reader"]), true);
        assert!(admin.is_admin);
        assert_eq!(admin.viewer(), None);
        assert!(admin
            .enforce_on_image("publicize_image", &image(Some("alpha"), "private"))
            .is_ok());
        // System scope: no project, and enforce_scope refuses the project-scoped image rules.
        let system = context(&caller(None, &["admin", "member", "reader"]), true);
        assert_eq!(system.project, None);
        assert!(!system.allows("get_images", &Target::new()));
        // `context_is_admin` has no scope: a system admin is an admin, but no image rule
        // lets it through under enforce_scope.
        assert!(system.is_admin);
        assert!(!system.allows("get_image", &system.image_target(&image(None, "public"))));
    }

    #[test]
    fn legacy_defaults_add_glances_owner_check_to_changes() {
        let beta = context(&caller(Some("beta"), &["member", "reader"]), false);
        assert!(beta.legacy_owner_checks());
        let public = image(Some("alpha"), "public");
        // The legacy rule allows it; the owner check refuses it.
        assert!(beta.allows("modify_image", &beta.image_target(&public)));
        for rule in ["modify_image", "delete_image", "upload_image"] {
            match beta.enforce_on_image(rule, &public) {
                Err(ApiError::Forbidden(message)) => {
                    assert_eq!(message, "You do not own this image", "{rule}")
                }
                other => panic!("{rule}: {other:?}"),
            }
        }
        assert!(beta
            .enforce_on_image("modify_image", &image(Some("beta"), "private"))
            .is_ok());
        // Reading is not a change: no owner check.
        assert!(beta.enforce_on_image("get_image", &public).is_ok());
        // Under the new defaults the check is off: the rules decide.
        let strict = context(&caller(Some("beta"), &["member", "reader"]), true);
        assert!(!strict.legacy_owner_checks());
    }

    /// The stores API's rules (`api/stores.rs`) under the default policy: only an admin sees
    /// `/v2/info/stores/detail` and removes a copy of image data; a project member who owns the
    /// image is refused with 403 (it may get the image, so the refusal is not hidden). Under the
    /// legacy rules (`enforce_new_defaults = false`) `delete_image_location` is Glance's
    /// `rule:default`, open to anyone, and only the detail stays admin's.
    #[test]
    fn only_admins_see_store_details_and_delete_a_copy() {
        for new_defaults in [true, false] {
            let member = context(&caller(Some("alpha"), &["member", "reader"]), new_defaults);
            let admin = context(
                &caller(Some("alpha"), &["admin", "member", "reader"]),
                new_defaults,
            );
            let mut target = Target::new();
            target.insert("project_id".to_string(), "alpha".to_string());
            match member.enforce("stores_info_detail", &target) {
                Err(ApiError::Forbidden(message)) => assert_eq!(
                    message,
                    "You are not authorized to complete stores_info_detail action."
                ),
                other => panic!("new defaults {new_defaults}: {other:?}"),
            }
            assert!(admin.enforce("stores_info_detail", &target).is_ok());
            let own = image(Some("alpha"), "private");
            assert!(member.enforce_on_image("get_image_location", &own).is_ok());
            match member.enforce_on_image("delete_image_location", &own) {
                Err(ApiError::Forbidden(_)) if new_defaults => {}
                Ok(()) if !new_defaults => {}
                other => panic!("new defaults {new_defaults}: {other:?}"),
            }
            assert!(admin
                .enforce_on_image("delete_image_location", &own)
                .is_ok());
        }
    }
}
