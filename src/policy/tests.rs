//! Tests of the policy as a whole: every default rule for each kind of caller, the
//! `[oslo_policy]` switches, and policy files (overrides, warnings, refusals).

use super::*;

// ---------------------------------------------------------------------------------------------
// Callers and targets

/// The callers every default rule is tried with. Roles are what Keystone's implied roles give
/// (admin implies member implies reader).
#[derive(Clone, Copy, Debug)]
enum Caller {
    /// `admin` on the image's project.
    Admin,
    /// `member` on the image's project (the owner).
    Member,
    /// `reader` on the image's project.
    Reader,
    /// `member` on another project.
    OtherMember,
    /// A system-scoped `admin`.
    SystemAdmin,
}

const CALLERS: [Caller; 5] = [
    Caller::Admin,
    Caller::Member,
    Caller::Reader,
    Caller::OtherMember,
    Caller::SystemAdmin,
];

fn credentials(caller: Caller) -> Credentials {
    let roles = |names: &[&str]| names.iter().map(|name| name.to_string()).collect();
    let project = |id: &str| Some(id.to_string());
    match caller {
        Caller::Admin => Credentials {
            project_id: project("owner-project"),
            roles: roles(&["admin", "member", "reader"]),
            ..Credentials::default()
        },
        Caller::Member => Credentials {
            project_id: project("owner-project"),
            roles: roles(&["member", "reader"]),
            ..Credentials::default()
        },
        Caller::Reader => Credentials {
            project_id: project("owner-project"),
            roles: roles(&["reader"]),
            ..Credentials::default()
        },
        Caller::OtherMember => Credentials {
            project_id: project("other-project"),
            roles: roles(&["member", "reader"]),
            ..Credentials::default()
        },
        Caller::SystemAdmin => Credentials {
            system_scope: Some("all".to_string()),
            roles: roles(&["admin", "member", "reader"]),
            ..Credentials::default()
        },
    }
}

/// A private image of `owner-project`, as Glance's ImageTarget gives it.
fn private_image() -> Target {
    [
        ("id", "7c1f2a4e-0000-4000-8000-000000000001"),
        ("project_id", "owner-project"),
        ("owner", "owner-project"),
        ("visibility", "private"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

fn with(mut target: Target, key: &str, value: &str) -> Target {
    target.insert(key.to_string(), value.to_string());
    target
}

/// `A` allow, `D` deny, `S` wrong scope, one letter per caller in [`CALLERS`] order.
fn verdicts(policy: &Policy, rule: &str, target: &Target) -> String {
    CALLERS
        .iter()
        .map(
            |caller| match policy.enforce(rule, target, &credentials(*caller)) {
                Decision::Allow => 'A',
                Decision::Deny => 'D',
                Decision::WrongScope => 'S',
            },
        )
        .collect()
}

/// Every rule of [`DEFAULT_RULES`] with its verdicts on a private image of the owner's project,
/// one letter per caller (admin, member, reader, other project's member, system-scoped admin):
/// under the new defaults with scope enforced; with `enforce_scope = false` (the system admin
/// is judged by the check, which its admin role passes everywhere); with
/// `enforce_new_defaults = false` (`rule:default`, ORed in, allows everyone).
const VERDICTS: &[(&str, &str, &str, &str)] = &[
    ("default", "AAAAA", "AAAAA", "AAAAA"),
    ("context_is_admin", "ADDDA", "ADDDA", "ADDDA"),
    ("service_api", "ADDDA", "ADDDA", "ADDDA"),
    ("add_image", "AADDS", "AADDA", "AAAAS"),
    ("delete_image", "AADDS", "AADDA", "AAAAS"),
    ("get_image", "AAADS", "AAADA", "AAAAS"),
    ("get_images", "AAADS", "AAADA", "AAAAS"),
    ("modify_image", "AADDS", "AADDA", "AAAAS"),
    ("publicize_image", "ADDDS", "ADDDA", "ADDDS"),
    ("communitize_image", "AADDS", "AADDA", "AAAAS"),
    ("download_image", "AADDS", "AADDA", "AAAAS"),
    ("upload_image", "AADDS", "AADDA", "AAAAS"),
    ("delete_image_location", "ADDDS", "ADDDA", "AAAAS"),
    ("get_image_location", "AAADS", "AAADA", "AAAAS"),
    ("set_image_location", "AADDS", "AADDA", "AAAAS"),
    ("add_image_location", "AADDS", "AADDA", "AADDS"),
    ("fetch_image_location", "ADDDS", "ADDDA", "ADDDS"),
    ("add_member", "AADDS", "AADDA", "AAAAS"),
    ("delete_member", "AADDS", "AADDA", "AAAAS"),
    ("get_member", "AAADS", "AAADA", "AAAAS"),
    ("get_members", "AAADS", "AAADA", "AAAAS"),
    ("modify_member", "ADDDS", "ADDDA", "AAAAS"),
    ("manage_image_cache", "ADDDS", "ADDDA", "ADDDS"),
    ("deactivate", "ADDDS", "ADDDA", "ADDDS"),
    ("reactivate", "ADDDS", "ADDDA", "ADDDS"),
    ("copy_image", "ADDDS", "ADDDA", "ADDDS"),
    ("get_task", "AAAAS", "AAAAA", "AAAAS"),
    ("get_tasks", "AAAAS", "AAAAA", "AAAAS"),
    ("add_task", "AAAAS", "AAAAA", "AAAAS"),
    ("modify_task", "AAAAS", "AAAAA", "AAAAS"),
    ("tasks_api_access", "ADDDS", "ADDDA", "ADDDS"),
    ("cache_image", "ADDDS", "ADDDA", "ADDDS"),
    ("cache_list", "ADDDS", "ADDDA", "ADDDS"),
    ("cache_delete", "ADDDS", "ADDDA", "ADDDS"),
    ("stores_info_detail", "ADDDS", "ADDDA", "ADDDS"),
];

// ---------------------------------------------------------------------------------------------
// The default rules

#[test]
fn every_default_rule_parses_once_and_the_names_are_unique() {
    for (index, rule) in DEFAULT_RULES.iter().enumerate() {
        for text in std::iter::once(rule.check).chain(rule.legacy) {
            if let Err(error) = Check::parse(text) {
                panic!("{}: `{text}` does not parse: {error}", rule.name);
            }
        }
        assert!(
            DEFAULT_RULES[..index]
                .iter()
                .all(|earlier| earlier.name != rule.name),
            "{} is listed twice",
            rule.name
        );
        assert!(
            !GLANCE_RULES_NOT_ENFORCED.contains(&rule.name),
            "{} is both enforced and not",
            rule.name
        );
    }
    // The defaults pass the loader's own review: no cycle, no undefined rule, no unknown
    // credential, in either mode.
    for enforce_new_defaults in [true, false] {
        let loaded = Policy::from_file_text("", enforce_new_defaults, true)
            .unwrap_or_else(|problems| panic!("{problems:#?}"));
        assert_eq!(loaded.warnings, Vec::new());
        assert_eq!(loaded.policy, Policy::defaults(enforce_new_defaults, true));
    }
}

#[test]
fn every_default_rule_is_in_the_verdict_table() {
    let tested: Vec<&str> = VERDICTS.iter().map(|(name, ..)| *name).collect();
    let listed: Vec<&str> = DEFAULT_RULES.iter().map(|rule| rule.name).collect();
    assert_eq!(tested, listed);
}

#[test]
fn every_default_rule_for_each_caller_in_each_mode() {
    let modes = [
        ("new defaults", Policy::defaults(true, true)),
        ("enforce_scope = false", Policy::defaults(true, false)),
        (
            "enforce_new_defaults = false",
            Policy::defaults(false, true),
        ),
    ];
    for (rule, new, scope_off, legacy) in VERDICTS {
        for ((mode, policy), expected) in modes.iter().zip([new, scope_off, legacy]) {
            assert_eq!(
                verdicts(policy, rule, &private_image()),
                *expected,
                "{rule} under {mode}: {}",
                policy.check(rule).map(Check::to_string).unwrap_or_default()
            );
        }
    }
}

#[test]
fn image_visibility_and_membership_open_get_and_download() {
    let policy = Policy::defaults(true, true);
    for visibility in ["public", "community", "shared"] {
        let image = with(private_image(), "visibility", visibility);
        assert_eq!(
            verdicts(&policy, "get_image", &image),
            "AAAAS",
            "{visibility}"
        );
        assert_eq!(
            verdicts(&policy, "download_image", &image),
            "AADAS",
            "{visibility}"
        );
    }
    // A private image shared with the other project through a membership.
    let shared = with(private_image(), "member_id", "other-project");
    assert_eq!(verdicts(&policy, "get_image", &shared), "AAAAS");
    assert_eq!(verdicts(&policy, "download_image", &shared), "AADAS");
    assert_eq!(verdicts(&policy, "get_members", &shared), "AAAAS");
    // Only the member project (or an admin) sets the membership's status.
    assert_eq!(verdicts(&policy, "modify_member", &shared), "ADDAS");
    // A reader of the other project may see but not download it.
    let other_reader = Credentials {
        project_id: Some("other-project".to_string()),
        roles: vec!["reader".to_string()],
        ..Credentials::default()
    };
    assert!(policy
        .enforce("get_image", &shared, &other_reader)
        .is_allowed());
    assert!(!policy
        .enforce("download_image", &shared, &other_reader)
        .is_allowed());
}

#[test]
fn add_image_needs_the_owner_to_be_the_callers_project() {
    let policy = Policy::defaults(true, true);
    let member = credentials(Caller::Member);
    let for_other = with(
        with(private_image(), "owner", "other-project"),
        "project_id",
        "other-project",
    );
    assert_eq!(
        policy.enforce("add_image", &for_other, &member),
        Decision::Deny
    );
    // Glance's target keeps project_id and owner equal; the rule needs both to be the caller's.
    let mismatched = with(private_image(), "owner", "other-project");
    assert_eq!(
        policy.enforce("add_image", &mismatched, &member),
        Decision::Deny
    );
    assert_eq!(
        policy.enforce("add_image", &private_image(), &member),
        Decision::Allow
    );
}

#[test]
fn service_role_reaches_the_service_rules_only() {
    let policy = Policy::defaults(true, true);
    let service = Credentials {
        project_id: Some("service-project".to_string()),
        roles: vec!["service".to_string()],
        ..Credentials::default()
    };
    let image = private_image();
    for (rule, allowed) in [
        ("fetch_image_location", true),
        ("add_image_location", true),
        ("stores_info_detail", true),
        ("get_image", false),
        ("context_is_admin", false),
    ] {
        assert_eq!(
            policy.enforce(rule, &image, &service).is_allowed(),
            allowed,
            "{rule}"
        );
    }
}

#[test]
fn deviations_from_glance_are_the_ones_documented() {
    // publicize_image and communitize_image are Glance's own defaults; deactivate and
    // reactivate are admin only where Glance lets the owner's members in, and keep no legacy
    // string, so that enforce_new_defaults = false does not open them.
    let deviating: Vec<&str> = DEFAULT_RULES
        .iter()
        .filter(|rule| rule.deviation.is_some())
        .map(|rule| rule.name)
        .collect();
    assert_eq!(deviating, vec!["deactivate", "reactivate"]);
    for enforce_new_defaults in [true, false] {
        let policy = Policy::defaults(enforce_new_defaults, true);
        for rule in ["deactivate", "reactivate", "publicize_image"] {
            assert_eq!(
                verdicts(&policy, rule, &private_image()),
                "ADDDS",
                "{rule} {enforce_new_defaults}"
            );
        }
        assert_eq!(
            policy.check("communitize_image").map(Check::to_string),
            Some(if enforce_new_defaults {
                "(rule:context_is_admin or (role:member and project_id:%(project_id)s))"
            } else {
                "((rule:context_is_admin or (role:member and project_id:%(project_id)s)) or rule:default)"
            }
            .to_string())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// [oslo_policy] switches

#[test]
fn scope_off_judges_system_tokens_by_the_check() {
    let policy = Policy::defaults(true, false);
    let system_reader = Credentials {
        system_scope: Some("all".to_string()),
        roles: vec!["reader".to_string()],
        ..Credentials::default()
    };
    // The system admin passes on its admin role.
    assert_eq!(verdicts(&policy, "get_image", &private_image()), "AAADA");
    assert_eq!(verdicts(&policy, "deactivate", &private_image()), "ADDDA");
    // A system reader has no project: a private image is closed, a public one open.
    assert_eq!(
        policy.enforce("get_image", &private_image(), &system_reader),
        Decision::Deny
    );
    let public = with(private_image(), "visibility", "public");
    assert_eq!(
        policy.enforce("get_image", &public, &system_reader),
        Decision::Allow
    );
    // With scope enforced the same token never reaches the check.
    let scoped = Policy::defaults(true, true);
    assert_eq!(
        scoped.enforce("get_image", &public, &system_reader),
        Decision::WrongScope
    );
}

#[test]
fn domain_scoped_tokens_fail_project_rules_under_enforce_scope() {
    let policy = Policy::defaults(true, true);
    let domain_admin = Credentials {
        domain_id: Some("default".to_string()),
        roles: vec!["admin".to_string()],
        ..Credentials::default()
    };
    assert_eq!(
        policy.enforce("get_image", &private_image(), &domain_admin),
        Decision::WrongScope
    );
    // The helper rules have no scope.
    assert_eq!(
        policy.enforce("context_is_admin", &private_image(), &domain_admin),
        Decision::Allow
    );
}

#[test]
fn legacy_defaults_are_ored_in_when_new_defaults_are_off() {
    let policy = Policy::defaults(false, true);
    // `rule:default` is `"" or rule:context_is_admin`: everyone, as in Glance before Wallaby.
    assert_eq!(
        policy.check("default").map(Check::to_string),
        Some("(@ or rule:context_is_admin)".to_string())
    );
    let expected: &[(&str, &str)] = &[
        ("get_image", "AAAAS"),
        ("download_image", "AAAAS"),
        ("delete_image", "AAAAS"),
        ("modify_member", "AAAAS"),
        // No legacy string: unchanged.
        ("publicize_image", "ADDDS"),
        ("copy_image", "ADDDS"),
        ("fetch_image_location", "ADDDS"),
        ("tasks_api_access", "ADDDS"),
        // Legacy rule:manage_image_cache is admin too.
        ("cache_image", "ADDDS"),
        ("stores_info_detail", "ADDDS"),
        // Same legacy as new: nothing to OR.
        ("get_task", "AAAAS"),
    ];
    for (rule, verdict) in expected {
        assert_eq!(
            verdicts(&policy, rule, &private_image()),
            *verdict,
            "{rule}"
        );
    }
    assert_eq!(
        policy.check("get_task"),
        Policy::defaults(true, true).check("get_task")
    );
}

#[test]
fn a_file_default_rule_closes_the_legacy_strings() {
    let loaded = Policy::from_file_text("default: role:admin\n", false, true)
        .unwrap_or_else(|problems| panic!("{problems:#?}"));
    let policy = loaded.policy;
    assert_eq!(verdicts(&policy, "get_image", &private_image()), "AAADS");
    assert_eq!(verdicts(&policy, "delete_image", &private_image()), "AADDS");
}

#[test]
fn unknown_rules_are_denied() {
    let policy = Policy::defaults(true, true);
    assert_eq!(
        policy.enforce(
            "no_such_rule",
            &private_image(),
            &credentials(Caller::Admin)
        ),
        Decision::Deny
    );
}

// ---------------------------------------------------------------------------------------------
// Policy files

fn loaded(text: &str) -> Loaded {
    Policy::from_file_text(text, true, true)
        .unwrap_or_else(|problems| panic!("expected the file to load, got {problems:#?}"))
}

fn refused(text: &str) -> Vec<Problem> {
    match Policy::from_file_text(text, true, true) {
        Ok(loaded) => panic!("expected the file to be refused, got {:#?}", loaded.policy),
        Err(problems) => problems,
    }
}

fn has(problems: &[Problem], line: Option<usize>, rule: &str, text: &str) -> bool {
    problems.iter().any(|problem| {
        problem.line == line
            && problem.rule.as_deref() == Some(rule)
            && problem.message.contains(text)
    })
}

#[test]
fn file_rules_override_defaults_and_keep_their_scope() {
    let loaded = loaded(
        "# let readers download\n\
         download_image: \"role:reader and project_id:%(project_id)s\"\n\
         publicize_image: '!'\n",
    );
    assert_eq!(loaded.warnings, Vec::new());
    let policy = loaded.policy;
    assert_eq!(
        verdicts(&policy, "download_image", &private_image()),
        "AAADS"
    );
    assert_eq!(
        verdicts(&policy, "publicize_image", &private_image()),
        "DDDDS"
    );
    // Everything else keeps its default.
    assert_eq!(
        policy.check("get_image"),
        Policy::defaults(true, true).check("get_image")
    );
    assert_ne!(policy, Policy::defaults(true, true));
}

#[test]
fn a_file_rule_is_taken_as_it_is_without_legacy() {
    let loaded = Policy::from_file_text("{\"get_image\": \"role:admin\"}", false, true)
        .unwrap_or_else(|problems| panic!("{problems:#?}"));
    assert_eq!(
        loaded.policy.check("get_image").map(Check::to_string),
        Some("role:admin".to_string())
    );
}

#[test]
fn json_and_yaml_files_give_equal_policies() {
    let yaml = loaded("get_image: role:admin\nmy_rule: \"\"\n").policy;
    let json = loaded("{\"get_image\": \"role:admin\", \"my_rule\": \"@\"}").policy;
    // The lines differ (1 and 2 against 1 and 1), so compare the checks.
    for rule in ["get_image", "my_rule"] {
        assert_eq!(yaml.check(rule), json.check(rule), "{rule}");
    }
}

#[test]
fn unknown_names_references_and_credentials_are_warnings() {
    let loaded = loaded(
        "get_imagee: role:admin\n\
         get_metadef_namespace: role:admin\n\
         my_admins: role:admin or rule:my_typo\n\
         get_image: rule:my_admins or tenant:%(owner)s\n\
         default: role:admin\n",
    );
    let warnings = &loaded.warnings;
    assert!(
        has(warnings, Some(1), "get_imagee", "did you mean get_image?"),
        "{warnings:#?}"
    );
    assert!(
        has(
            warnings,
            Some(2),
            "get_metadef_namespace",
            "API glint does not have"
        ),
        "{warnings:#?}"
    );
    assert!(
        has(warnings, Some(3), "my_admins", "not a rule glint enforces"),
        "{warnings:#?}"
    );
    assert!(
        has(warnings, Some(3), "my_admins", "rule:my_typo names no rule"),
        "{warnings:#?}"
    );
    assert!(
        has(warnings, Some(4), "get_image", "`tenant` is no credential"),
        "{warnings:#?}"
    );
    assert!(
        has(
            warnings,
            Some(5),
            "default",
            "does not fall back on `default`"
        ),
        "{warnings:#?}"
    );
    // A rule the file adds can be referred to.
    let policy = &loaded.policy;
    assert_eq!(
        policy.enforce("get_image", &private_image(), &credentials(Caller::Admin)),
        Decision::Allow
    );
    assert_eq!(
        policy.enforce("get_image", &private_image(), &credentials(Caller::Member)),
        Decision::Deny
    );
}

#[test]
fn bad_check_strings_are_refused_with_line_and_rule() {
    let problems = refused(
        "add_image: role:admin\n\
         get_image: \"role:admin or\"\n\
         delete_image: foobar\n\
         upload_image: \"   \"\n",
    );
    assert!(
        has(&problems, Some(2), "get_image", "does not parse"),
        "{problems:#?}"
    );
    assert!(
        has(&problems, Some(3), "delete_image", "is not a check"),
        "{problems:#?}"
    );
    assert!(
        has(&problems, Some(4), "upload_image", "only whitespace"),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 3);
}

#[test]
fn syntax_problems_are_refused_with_line_and_rule() {
    let problems = refused("a: b\nnested:\n  x: y\n");
    assert!(
        has(&problems, Some(2), "nested", "no value"),
        "{problems:#?}"
    );
}

#[test]
fn cycles_are_refused_naming_their_rules() {
    let problems = refused("a: rule:b\nb: \"not rule:a\"\n");
    assert!(has(&problems, Some(1), "a", "a -> b -> a"), "{problems:#?}");
    // A cycle through a default rule blames the file's rule.
    let problems = refused("context_is_admin: rule:get_image\n");
    assert!(
        has(
            &problems,
            Some(1),
            "context_is_admin",
            "context_is_admin -> get_image -> context_is_admin"
        ),
        "{problems:#?}"
    );
}

#[test]
fn long_chains_are_refused_where_they_cross_the_depth_limit() {
    let mut text = String::new();
    for index in 0..300 {
        text.push_str(&format!("r{index:03}: rule:r{:03}\n", index + 1));
    }
    text.push_str("r300: \"@\"\n");
    let problems = refused(&text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        has(&problems, Some(45), "r044", "nests 257 levels"),
        "{problems:#?}"
    );
}

#[test]
fn debug_shows_checks_as_oslo_prints_them() {
    let shown = format!("{:?}", loaded("get_image: role:admin\n").policy);
    assert!(shown.contains("\"get_image\": \"role:admin\""), "{shown}");
    assert!(shown.contains("enforce_scope: true"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Docs

#[test]
fn operations_doc_defaults_table_matches_the_default_rules() {
    crate::generated_docs::check_block(
        crate::generated_docs::OPERATIONS,
        "<!-- policy-defaults:begin -->\n",
        "<!-- policy-defaults:end -->",
        &defaults_markdown(),
        "the policy defaults table",
        "policy::tests::operations_doc",
    );
}
