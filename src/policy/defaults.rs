//! Glance's default policy: every rule glint knows, with its secure-RBAC check string, the
//! deprecated (legacy) string that `enforce_new_defaults = false` ORs in, and its scope.
//!
//! [`DEFAULT_RULES`] is the one table of rules: the loader parses it into the default
//! `Policy`, the unknown-rule warnings search it, and docs/OPERATIONS.md's defaults table lists
//! it (a unit test keeps the two equal). The strings are Glance's (stable/2026.1,
//! `glance/policies/{base,image,tasks,cache,discovery}.py`), built from the same pieces as in
//! `base.py` so that they read the same, except where [`DefaultRule::deviation`] says why glint
//! differs. This module holds data only.

/// One rule of the default policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultRule {
    /// The name Glance's API enforces and policy files override.
    pub name: &'static str,
    /// The check string of the new (secure-RBAC) default.
    pub check: &'static str,
    /// Glance's deprecated check string, ORed with `check` when `[oslo_policy]
    /// enforce_new_defaults` is false and the policy file does not set the rule (oslo.policy's
    /// `_handle_deprecated_rule`); `None` when Glance deprecated nothing, or when glint drops
    /// the legacy string on purpose (see `deviation`).
    pub legacy: Option<&'static str>,
    /// Glance's `scope_types=['project']`: with `[oslo_policy] enforce_scope`, a system- or
    /// domain-scoped token fails the rule before its check is evaluated. The helper rules of
    /// `base.py` (`default`, `context_is_admin`, `service_api`) have no scope.
    pub project_scoped: bool,
    /// Why glint's default differs from Glance's, if it does.
    pub deviation: Option<&'static str>,
}

/// `base.ADMIN`.
const ADMIN: &str = "rule:context_is_admin";
/// `base.DEFAULT`: the legacy string of most image rules, which allows everyone unless the
/// operator's file changes `default`.
const DEFAULT: &str = "rule:default";
/// `base.ADMIN_OR_PROJECT_MEMBER`.
const ADMIN_OR_PROJECT_MEMBER: &str =
    "rule:context_is_admin or (role:member and project_id:%(project_id)s)";
/// `base.ADMIN_OR_PROJECT_READER`.
const ADMIN_OR_PROJECT_READER: &str =
    "rule:context_is_admin or (role:reader and project_id:%(project_id)s)";
/// `base.ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE`: the owner given in the request must be the
/// caller's project.
const ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE: &str = "rule:context_is_admin or (role:member and \
     project_id:%(project_id)s and project_id:%(owner)s)";
/// `base.ADMIN_OR_PROJECT_READER_GET_IMAGE`.
const ADMIN_OR_PROJECT_READER_GET_IMAGE: &str = "rule:context_is_admin or (role:reader and \
     (project_id:%(project_id)s or project_id:%(member_id)s or 'community':%(visibility)s or \
     'public':%(visibility)s or 'shared':%(visibility)s))";
/// `base.ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE`.
const ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE: &str = "rule:context_is_admin or (role:member and \
     (project_id:%(project_id)s or project_id:%(member_id)s or 'community':%(visibility)s or \
     'public':%(visibility)s or 'shared':%(visibility)s))";
/// `base.ADMIN_OR_SHARED_MEMBER`.
const ADMIN_OR_SHARED_MEMBER: &str =
    "rule:context_is_admin or (role:member and project_id:%(member_id)s)";
/// `base.ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER`, without parentheses around the second
/// half, as in Glance (`and` binds first, so it reads the same).
const ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER: &str = "rule:context_is_admin or role:reader and \
     (project_id:%(project_id)s or project_id:%(member_id)s)";
/// `base.SERVICE_OR_PROJECT_MEMBER`.
const SERVICE_OR_PROJECT_MEMBER: &str = "rule:service_api or (role:member and \
     project_id:%(project_id)s and project_id:%(owner)s)";
/// `base.SERVICE`.
const SERVICE: &str = "rule:service_api";
/// `base.ADMIN_OR_SERVICE_ROLE`.
const ADMIN_OR_SERVICE_ROLE: &str = "rule:context_is_admin or rule:service_api";

const ACTIVATION_DEVIATION: &str = "admin only, as the issue asks: Glance lets a project member \
     deactivate and reactivate its own images, but a deactivated image is one an operator \
     took out of service (its data cannot be downloaded), so only an operator brings it back; \
     the legacy string is dropped too, so that enforce_new_defaults = false does not open it";

/// A rule that exists in Glance and in glint alike.
const fn rule(
    name: &'static str,
    check: &'static str,
    legacy: Option<&'static str>,
) -> DefaultRule {
    DefaultRule {
        name,
        check,
        legacy,
        project_scoped: true,
        deviation: None,
    }
}

/// Every rule of glint's default policy, in Glance's order (base, image, tasks, cache,
/// discovery).
pub static DEFAULT_RULES: &[DefaultRule] = &[
    // glance/policies/base.py
    DefaultRule {
        name: "default",
        check: "",
        legacy: Some(ADMIN),
        project_scoped: false,
        deviation: None,
    },
    DefaultRule {
        name: "context_is_admin",
        check: "role:admin",
        legacy: None,
        project_scoped: false,
        deviation: None,
    },
    DefaultRule {
        name: "service_api",
        check: "role:service or role:admin",
        legacy: None,
        project_scoped: false,
        deviation: None,
    },
    // glance/policies/image.py
    rule(
        "add_image",
        ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE,
        Some(DEFAULT),
    ),
    rule("delete_image", ADMIN_OR_PROJECT_MEMBER, Some(DEFAULT)),
    rule(
        "get_image",
        ADMIN_OR_PROJECT_READER_GET_IMAGE,
        Some(DEFAULT),
    ),
    rule("get_images", ADMIN_OR_PROJECT_READER, Some(DEFAULT)),
    rule("modify_image", ADMIN_OR_PROJECT_MEMBER, Some(DEFAULT)),
    rule("publicize_image", ADMIN, None),
    rule("communitize_image", ADMIN_OR_PROJECT_MEMBER, Some(DEFAULT)),
    rule(
        "download_image",
        ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE,
        Some(DEFAULT),
    ),
    rule("upload_image", ADMIN_OR_PROJECT_MEMBER, Some(DEFAULT)),
    rule("delete_image_location", ADMIN, Some(DEFAULT)),
    rule("get_image_location", ADMIN_OR_PROJECT_READER, Some(DEFAULT)),
    rule("set_image_location", ADMIN_OR_PROJECT_MEMBER, Some(DEFAULT)),
    rule("add_image_location", SERVICE_OR_PROJECT_MEMBER, None),
    rule("fetch_image_location", SERVICE, None),
    rule("add_member", ADMIN_OR_PROJECT_MEMBER, Some(DEFAULT)),
    rule("delete_member", ADMIN_OR_PROJECT_MEMBER, Some(DEFAULT)),
    rule(
        "get_member",
        ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER,
        Some(DEFAULT),
    ),
    rule(
        "get_members",
        ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER,
        Some(DEFAULT),
    ),
    rule("modify_member", ADMIN_OR_SHARED_MEMBER, Some(DEFAULT)),
    rule("manage_image_cache", ADMIN, None),
    DefaultRule {
        name: "deactivate",
        check: ADMIN,
        legacy: None,
        project_scoped: true,
        deviation: Some(ACTIVATION_DEVIATION),
    },
    DefaultRule {
        name: "reactivate",
        check: ADMIN,
        legacy: None,
        project_scoped: true,
        deviation: Some(ACTIVATION_DEVIATION),
    },
    rule("copy_image", ADMIN, None),
    // glance/policies/tasks.py: the legacy strings equal the new ones, so nothing is ORed.
    rule("get_task", DEFAULT, Some(DEFAULT)),
    rule("get_tasks", DEFAULT, Some(DEFAULT)),
    rule("add_task", DEFAULT, Some(DEFAULT)),
    rule("modify_task", DEFAULT, None),
    rule("tasks_api_access", ADMIN, None),
    // glance/policies/cache.py
    rule("cache_image", ADMIN, Some("rule:manage_image_cache")),
    rule("cache_list", ADMIN, Some("rule:manage_image_cache")),
    rule("cache_delete", ADMIN, Some("rule:manage_image_cache")),
    // glance/policies/discovery.py
    rule("stores_info_detail", ADMIN_OR_SERVICE_ROLE, Some(ADMIN)),
];

/// Rules Glance defines for APIs glint does not have (metadata definitions; the cache calls
/// and store selection of Glance's master branch). A policy file may set them: they draw a
/// milder warning than an unknown name, and are kept so that `rule:` can refer to them.
pub static GLANCE_RULES_NOT_ENFORCED: &[&str] = &[
    "add_metadef_namespace",
    "add_metadef_object",
    "add_metadef_property",
    "add_metadef_resource_type_association",
    "add_metadef_tag",
    "add_metadef_tags",
    "cache_clean",
    "cache_prune",
    "delete_metadef_namespace",
    "delete_metadef_object",
    "delete_metadef_tag",
    "delete_metadef_tags",
    "download_from_store",
    "get_metadef_namespace",
    "get_metadef_namespaces",
    "get_metadef_object",
    "get_metadef_objects",
    "get_metadef_properties",
    "get_metadef_property",
    "get_metadef_resource_type",
    "get_metadef_tag",
    "get_metadef_tags",
    "list_cached_nodes",
    "list_metadef_resource_types",
    "metadef_admin",
    "metadef_default",
    "modify_metadef_namespace",
    "modify_metadef_object",
    "modify_metadef_property",
    "modify_metadef_tag",
    "remove_metadef_property",
    "remove_metadef_resource_type_association",
];

/// The default rule called `name`, if glint has one.
pub fn find(name: &str) -> Option<&'static DefaultRule> {
    DEFAULT_RULES.iter().find(|rule| rule.name == name)
}

/// The defaults table in Markdown, as docs/OPERATIONS.md carries it between its markers.
pub fn defaults_markdown() -> String {
    let mut table = String::from(
        "| rule | default | legacy (`enforce_new_defaults = false` ORs it in) | project scope | glint differs from Glance |\n\
         |---|---|---|---|---|\n",
    );
    for rule in DEFAULT_RULES {
        let code = |text: &str| {
            if text.is_empty() {
                "`\"\"` (always)".to_string()
            } else {
                format!("`{text}`")
            }
        };
        let cells = [
            format!("`{}`", rule.name),
            code(rule.check),
            rule.legacy.map_or("–".to_string(), code),
            if rule.project_scoped { "yes" } else { "no" }.to_string(),
            rule.deviation.unwrap_or("").to_string(),
        ];
        let cells: Vec<String> = cells.iter().map(|cell| cell.replace('|', "\\|")).collect();
        table.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    table
}
