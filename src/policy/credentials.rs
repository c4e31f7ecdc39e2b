//! What a check looks at: the caller's [`Credentials`] (the values oslo.context's
//! `to_policy_values()` gives oslo.policy) and the [`Target`] of the operation (Glance's
//! `ImageTarget`), and how a generic check `KEY:VALUE` reads a credential by name.
//!
//! This module only holds values and answers lookups; it knows nothing of the check language
//! (`check.rs`) or of Glance's rules (`defaults.rs`).
//!
//! # Compatibility
//!
//! oslo.policy compares a credential with `match == str(value)`, so a credential that is
//! `None` compares as the text `None` and a boolean as `True` or `False`; a list-valued
//! credential (`roles`, `service_roles`) matches when any of its items does
//! (`GenericCheck._find_in_dict`). [`Credentials::lookup`] gives exactly those texts. The key
//! `system` exists only when the token is system-scoped, as oslo.policy's
//! `_map_context_attributes_into_creds` adds it only then.

use std::collections::BTreeMap;

/// The caller, as oslo.context's `RequestContext.to_policy_values()` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub user_id: Option<String>,
    pub user_domain_id: Option<String>,
    /// The project the token is scoped to; `None` for a domain- or system-scoped token.
    pub project_id: Option<String>,
    pub project_domain_id: Option<String>,
    /// The domain a domain-scoped token is scoped to.
    pub domain_id: Option<String>,
    /// `all` for a system-scoped token (Keystone's `OpenStack-System-Scope`).
    pub system_scope: Option<String>,
    /// Role names, lowercase (Glance lowercases `X-Roles`); `role:` checks lowercase again.
    pub roles: Vec<String>,
    /// Keystone's `is_admin_project` (`X-Is-Admin-Project`).
    pub is_admin_project: bool,
    /// The user of the `X-Service-Token`, if one was sent and valid.
    pub service_user_id: Option<String>,
    /// The roles of the `X-Service-Token`, lowercase.
    pub service_roles: Vec<String>,
}

/// What an operation acts on, as Glance's `ImageTarget` gives it to oslo.policy: `project_id`
/// and `owner` (both the image's owner), `member_id` (the caller's project when it reads an
/// image shared with it), `visibility`, `id` and the image's properties. `%(key)s` in a check
/// reads a key of this map; a key that is absent makes the check false, as oslo.policy does on
/// a `KeyError`. Put a value Glance would pass as `None` as an absent key (Python would format
/// it as the text `None`), and a boolean as `True` or `False`.
pub type Target = BTreeMap<String, String>;

/// The scope of the caller's token, decided as oslo.policy's `Enforcer._enforce_scope` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// Scoped to a project, or unscoped (oslo.policy counts those as project-scoped).
    Project,
    /// Scoped to a domain: `domain_id` set and no `project_id`.
    Domain,
    /// System-scoped: `system_scope` set.
    System,
}

/// The credential names a generic check can read; any other name never matches.
pub const CREDENTIAL_NAMES: &[&str] = &[
    "user_id",
    "user_domain_id",
    "project_id",
    "project_domain_id",
    "domain_id",
    "system_scope",
    "system",
    "roles",
    "is_admin_project",
    "service_user_id",
    "service_roles",
];

/// An optional credential as oslo.policy compares it: Python's `str(None)` when unset.
fn optional(value: &Option<String>) -> Credential<'_> {
    Credential::One(value.as_deref().unwrap_or("None"))
}

/// A credential as a generic check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No such key: the check is false (oslo.policy's `KeyError`).
    Absent,
    /// One value, as Python's `str()` renders it.
    One(&'a str),
    /// A list: the check matches when any item does.
    Many(&'a [String]),
}

impl Credentials {
    /// The scope of the token these credentials came from. Empty strings count as unset, as
    /// oslo.policy tests the values for truth.
    pub fn scope(&self) -> TokenScope {
        let set = |value: &Option<String>| value.as_deref().is_some_and(|text| !text.is_empty());
        if set(&self.system_scope) {
            TokenScope::System
        } else if set(&self.domain_id) && !set(&self.project_id) {
            TokenScope::Domain
        } else {
            TokenScope::Project
        }
    }

    /// The credential called `name`, as oslo.policy's generic check would compare it.
    pub fn lookup(&self, name: &str) -> Credential<'_> {
        match name {
            "user_id" => optional(&self.user_id),
            "user_domain_id" => optional(&self.user_domain_id),
            "project_id" => optional(&self.project_id),
            "project_domain_id" => optional(&self.project_domain_id),
            "domain_id" => optional(&self.domain_id),
            "system_scope" => optional(&self.system_scope),
            "system" => match self.scope() {
                TokenScope::System => optional(&self.system_scope),
                TokenScope::Project | TokenScope::Domain => Credential::Absent,
            },
            "roles" => Credential::Many(&self.roles),
            "is_admin_project" => Credential::One(if self.is_admin_project {
                "True"
            } else {
                "False"
            }),
            "service_user_id" => optional(&self.service_user_id),
            "service_roles" => Credential::Many(&self.service_roles),
            _ => Credential::Absent,
        }
    }

    /// Whether `role` (any case) is one of the roles, as a `role:` check decides.
    pub fn has_role(&self, role: &str) -> bool {
        let role = role.to_lowercase();
        self.roles.iter().any(|held| held.to_lowercase() == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_follows_oslo_policy() {
        let mut credentials = Credentials {
            project_id: Some("p".to_string()),
            ..Credentials::default()
        };
        assert_eq!(credentials.scope(), TokenScope::Project);
        credentials.project_id = None;
        // Unscoped counts as project, as in oslo.policy.
        assert_eq!(credentials.scope(), TokenScope::Project);
        credentials.domain_id = Some("d".to_string());
        assert_eq!(credentials.scope(), TokenScope::Domain);
        credentials.system_scope = Some("all".to_string());
        assert_eq!(credentials.scope(), TokenScope::System);
        credentials.system_scope = Some(String::new());
        assert_eq!(credentials.scope(), TokenScope::Domain);
    }

    #[test]
    fn lookup_renders_values_as_python_str_does() {
        let credentials = Credentials {
            user_id: Some("u".to_string()),
            roles: vec!["reader".to_string()],
            is_admin_project: true,
            ..Credentials::default()
        };
        assert_eq!(credentials.lookup("user_id"), Credential::One("u"));
        assert_eq!(credentials.lookup("project_id"), Credential::One("None"));
        assert_eq!(
            credentials.lookup("is_admin_project"),
            Credential::One("True")
        );
        assert_eq!(
            credentials.lookup("roles"),
            Credential::Many(&["reader".to_string()])
        );
        assert_eq!(credentials.lookup("system"), Credential::Absent);
        assert_eq!(credentials.lookup("tenant"), Credential::Absent);
        for name in CREDENTIAL_NAMES {
            if *name != "system" {
                assert_ne!(credentials.lookup(name), Credential::Absent, "{name}");
            }
        }
    }

    #[test]
    fn system_exists_only_for_system_scope() {
        let credentials = Credentials {
            system_scope: Some("all".to_string()),
            ..Credentials::default()
        };
        assert_eq!(credentials.lookup("system"), Credential::One("all"));
    }

    #[test]
    fn roles_compare_without_case() {
        let credentials = Credentials {
            roles: vec!["admin".to_string()],
            ..Credentials::default()
        };
        assert!(credentials.has_role("ADMIN"));
        assert!(!credentials.has_role("member"));
    }
}
