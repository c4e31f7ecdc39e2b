//! Tests of the check language: parsing against oslo.policy's own `test_parser.py` cases
//! (compared through oslo.policy's `str()` rendering), every refusal, and evaluation against
//! oslo.policy's `test_checks.py` cases where glint's flat credentials allow them.

use std::collections::BTreeMap;

use super::*;

/// Parses `text`, failing the test with the parser's message if it is refused.
fn parsed(text: &str) -> Check {
    Check::parse(text).unwrap_or_else(|error| panic!("`{text}` was refused: {error}"))
}

/// The refusal of `text`, failing the test if it parses.
fn refusal(text: &str) -> String {
    match Check::parse(text) {
        Ok(check) => panic!("`{text}` parsed as {check}"),
        Err(error) => error.message,
    }
}

/// A rule set for tests.
struct Rules(BTreeMap<String, Check>);

impl RuleSet for Rules {
    fn rule(&self, name: &str) -> Option<&Check> {
        self.0.get(name)
    }
}

fn rules(pairs: &[(&str, &str)]) -> Rules {
    Rules(
        pairs
            .iter()
            .map(|(name, text)| (name.to_string(), parsed(text)))
            .collect(),
    )
}

fn target(pairs: &[(&str, &str)]) -> Target {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn holds(text: &str, rule_set: &Rules, target: &Target, credentials: &Credentials) -> bool {
    let check = parsed(text);
    let mut evaluation = Evaluation::new(rule_set, target, credentials);
    evaluation.run(&check)
}

fn member_of(project: &str, roles: &[&str]) -> Credentials {
    Credentials {
        project_id: Some(project.to_string()),
        roles: roles.iter().map(|role| role.to_string()).collect(),
        ..Credentials::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[test]
fn precedence_matches_oslo_policy_test_parser() {
    // Every case of oslo.policy's ParseTextRuleTestCase, with its expected str().
    let cases: &[(&[&str], &str)] = &[
        (&["@ or ! or @"], "(@ or ! or @)"),
        (&["@ or ! and @"], "(@ or (! and @))"),
        (&["@ and ! or @"], "((@ and !) or @)"),
        (&["@ and ! and @"], "(@ and ! and @)"),
        (&["@ or ! or @ or !"], "(@ or ! or @ or !)"),
        (&["@ or ! or @ and !"], "(@ or ! or (@ and !))"),
        (&["@ or ! and @ or !"], "(@ or (! and @) or !)"),
        (&["@ or ! and @ and !"], "(@ or (! and @ and !))"),
        (&["@ and ! or @ or !"], "((@ and !) or @ or !)"),
        (&["@ and ! or @ and !"], "((@ and !) or (@ and !))"),
        (&["@ and ! and @ or !"], "((@ and ! and @) or !)"),
        (&["@ and ! and @ and !"], "(@ and ! and @ and !)"),
        (&["not @ and ! or @"], "((not @ and !) or @)"),
        (&["@ and not ! or @"], "((@ and not !) or @)"),
        (&["@ and ! or not @"], "((@ and !) or not @)"),
        (
            &[
                "( @ ) and ! or @",
                "@ and ( ! ) or @",
                "@ and ! or ( @ )",
                "( @ ) and ! or ( @ )",
                "@ and ( ! ) or ( @ )",
                "( @ ) and ( ! ) or ( @ )",
                "( @ and ! ) or @",
                "( ( @ ) and ! ) or @",
                "( @ and ( ! ) ) or @",
                "( ( @ and ! ) ) or @",
                "( @ and ! or @ )",
            ],
            "((@ and !) or @)",
        ),
        (&["@ and ( ! or @ )"], "(@ and (! or @))"),
        (
            &[
                "not ( @ ) and ! or @",
                "not @ and ( ! ) or @",
                "not @ and ! or ( @ )",
                "( not @ ) and ! or @",
                "( not @ and ! ) or @",
                "( not @ and ! or @ )",
            ],
            "((not @ and !) or @)",
        ),
        (&["not @ and ( ! or @ )"], "(not @ and (! or @))"),
        (&["not ( @ and ! or @ )"], "not ((@ and !) or @)"),
        (
            &[
                "( @ ) and not ! or @",
                "@ and ( not ! ) or @",
                "@ and not ( ! ) or @",
                "@ and not ! or ( @ )",
                "( @ and not ! ) or @",
                "( @ and not ! or @ )",
            ],
            "((@ and not !) or @)",
        ),
        (&["@ and ( not ! or @ )"], "(@ and (not ! or @))"),
        (&["@ and not ( ! or @ )"], "(@ and not (! or @))"),
        (
            &[
                "( @ ) and ! or not @",
                "@ and ( ! ) or not @",
                "@ and ! or not ( @ )",
                "@ and ! or ( not @ )",
                "( @ and ! ) or not @",
                "( @ and ! or not @ )",
            ],
            "((@ and !) or not @)",
        ),
        (&["@ and ( ! or not @ )"], "(@ and (! or not @))"),
    ];
    for (texts, expected) in cases {
        for text in *texts {
            assert_eq!(parsed(text).to_string(), *expected, "{text}");
        }
    }
}

#[test]
fn parentheses_stick_to_words_and_operators_ignore_case() {
    assert_eq!(parsed("((@))").to_string(), "@");
    assert_eq!(
        parsed("(role:a OR role:b) AnD NOT role:c").to_string(),
        "((role:a or role:b) and not role:c)"
    );
    // Whitespace of any kind separates words.
    assert_eq!(
        parsed("\trole:a\nor\r\n role:b ").to_string(),
        "(role:a or role:b)"
    );
    // A `%(key)s` keeps its parentheses: only a word's leading `(` and trailing `)` are
    // parentheses.
    assert_eq!(
        parsed("(project_id:%(project_id)s)").to_string(),
        "project_id:%(project_id)s"
    );
}

#[test]
fn empty_is_always_and_the_special_checks_parse() {
    assert_eq!(parsed(""), Check::Always);
    assert_eq!(parsed("@"), Check::Always);
    assert_eq!(parsed("!"), Check::Never);
    assert_eq!(parsed("rule:a:b"), Check::Rule("a:b".to_string()));
    assert_eq!(parsed("role:Admin").to_string(), "role:Admin");
}

#[test]
fn generic_checks_read_literals_as_python_literal_eval_does() {
    let literal = |text: &str| match parsed(text) {
        Check::Generic { left, .. } => left,
        other => panic!("{text} parsed as {other:?}"),
    };
    assert_eq!(
        literal("'public':%(visibility)s"),
        Operand::Literal("public".to_string())
    );
    assert_eq!(
        literal("\"shared\":%(visibility)s"),
        Operand::Literal("shared".to_string())
    );
    assert_eq!(literal("True:%(x)s"), Operand::Literal("True".to_string()));
    assert_eq!(literal("None:%(x)s"), Operand::Literal("None".to_string()));
    assert_eq!(literal("20:%(x)s"), Operand::Literal("20".to_string()));
    assert_eq!(literal("-0:%(x)s"), Operand::Literal("0".to_string()));
    assert_eq!(
        literal("project_id:%(x)s"),
        Operand::Credential("project_id".to_string())
    );
    assert_eq!(
        literal("token.roles.name:x"),
        Operand::Credential("token.roles.name".to_string())
    );
}

#[test]
fn every_refusal_says_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        (" ", "only whitespace"),
        ("\t\n", "only whitespace"),
        ("foobar", "is not a check"),
        ("@ and", "ends where a check is expected"),
        ("not", "ends where a check is expected"),
        ("(", "ends where a check is expected"),
        ("and @", "`and` needs a check on each side"),
        ("@ or or @", "`or` needs a check on each side"),
        ("()", "a `)` comes where a check is expected"),
        ("(@", "never closed"),
        ("@)", "closes no `(`"),
        ("@ @", "`@` follows a complete check"),
        ("@ not !", "`not` follows a complete check"),
        ("(@ @)", "inside parentheses"),
        ("'a-string'", "the quoted `a-string` is not a check"),
        ("\"public\"", "the quoted `public` is not a check"),
        ("rule:", "names no rule"),
        ("role:", "names no role"),
        ("http://example.com/%(name)s", "remote server"),
        ("https://example.com", "remote server"),
        (":x", "nothing before its `:`"),
        ("project_id:%(project_id)d", "neither `%(name)s` nor `%%`"),
        ("project_id:50%", "neither `%(name)s` nor `%%`"),
        ("project_id:%(unclosed", "neither `%(name)s` nor `%%`"),
        ("project_id:%(a(b)s", "neither `%(name)s` nor `%%`"),
        ("role:%(x)r", "neither `%(name)s` nor `%%`"),
        ("'open:%(x)s", "not a quoted literal"),
        ("'a\\'b':%(x)s", "not a quoted literal"),
        ("007:%(x)s", "plain decimal integer"),
        ("1.5:%(x)s", "plain decimal integer"),
        ("[1]:%(x)s", "neither a credential name"),
        ("a-b:%(x)s", "neither a credential name"),
        ("a..b:%(x)s", "neither a credential name"),
    ];
    for (text, expected) in cases {
        let message = refusal(text);
        assert!(
            message.contains(expected),
            "`{text}`: expected a message with `{expected}`, got: {message}"
        );
    }
}

#[test]
fn nesting_is_bounded() {
    let deep = |n: usize| format!("{}@{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(parsed(&deep(MAX_NESTING - 1)), Check::Always);
    assert!(refusal(&deep(MAX_NESTING)).contains("nest more than"));
    assert!(refusal(&deep(100_000)).contains("nest more than"));
    let nots = |n: usize| format!("{}@", "not ".repeat(n));
    assert!(Check::parse(&nots(MAX_NESTING - 1)).is_ok());
    assert!(refusal(&nots(MAX_NESTING)).contains("nest more than"));
    // A long flat expression is not nesting.
    let flat = vec!["@"; 10_000].join(" and ");
    assert!(Check::parse(&flat).is_ok());
}

#[test]
fn no_input_panics() {
    let pieces = [
        "(", ")", "@", "!", "and", "or", "not", "'", "\"", ":", "%", "%(", ")s", "rule", "role",
        "x", " ", "é", "\u{0}",
    ];
    // Every string of up to three pieces.
    for a in pieces {
        for b in pieces {
            for c in pieces {
                let text = format!("{a}{b}{c}");
                let _ = Check::parse(&text);
                let spaced = format!("{a} {b} {c}");
                let _ = Check::parse(&spaced);
            }
        }
    }
}

#[test]
fn references_and_unknown_credentials_are_listed() {
    let check = parsed("rule:a or (rule:b and not rule:a) or tenant:%(x)s or user_id:u");
    assert_eq!(check.references(), vec!["a", "b", "a"]);
    assert_eq!(check.unknown_credentials(), vec!["tenant"]);
    assert!(parsed("'public':%(visibility)s")
        .unknown_credentials()
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Evaluation

#[test]
fn generic_checks_match_oslo_policy_test_checks() {
    let no_rules = rules(&[]);
    let nobody = Credentials::default();
    let alice = Credentials {
        user_id: Some("spam".to_string()),
        ..Credentials::default()
    };
    // test_no_cred, test_cred_mismatch, test_accept, test_no_key_match_in_target (with
    // `user_id` for oslo.policy's free-form `name`).
    assert!(!holds(
        "tenant:%(name)s",
        &no_rules,
        &target(&[("name", "spam")]),
        &alice
    ));
    assert!(!holds(
        "user_id:%(name)s",
        &no_rules,
        &target(&[("name", "ham")]),
        &alice
    ));
    assert!(holds(
        "user_id:%(name)s",
        &no_rules,
        &target(&[("name", "spam")]),
        &alice
    ));
    assert!(!holds(
        "user_id:%(name)s",
        &no_rules,
        &target(&[("name1", "spam")]),
        &alice
    ));
    // test_constant_string_mismatch / _accept.
    assert!(!holds(
        "'spam':%(name)s",
        &no_rules,
        &target(&[("name", "ham")]),
        &nobody
    ));
    assert!(holds(
        "'spam':%(name)s",
        &no_rules,
        &target(&[("name", "spam")]),
        &nobody
    ));
    // test_constant_literal_mismatch / _accept: Python formats booleans as True/False.
    assert!(!holds(
        "True:%(enabled)s",
        &no_rules,
        &target(&[("enabled", "False")]),
        &nobody
    ));
    assert!(holds(
        "True:%(enabled)s",
        &no_rules,
        &target(&[("enabled", "True")]),
        &nobody
    ));
    // A value without substitution is compared as it is.
    assert!(holds("user_id:spam", &no_rules, &target(&[]), &alice));
    assert!(holds("'50%':50%%", &no_rules, &target(&[]), &nobody));
    // Dotted names find nothing in flat credentials.
    assert!(!holds("user_id.x:spam", &no_rules, &target(&[]), &alice));
}

#[test]
fn list_credentials_match_any_item_and_unset_ones_read_none() {
    let no_rules = rules(&[]);
    let service = Credentials {
        service_roles: vec!["reader".to_string(), "service".to_string()],
        roles: vec!["Member".to_string()],
        ..Credentials::default()
    };
    assert!(holds(
        "service_roles:service",
        &no_rules,
        &target(&[]),
        &service
    ));
    assert!(!holds(
        "service_roles:admin",
        &no_rules,
        &target(&[]),
        &service
    ));
    // Generic checks compare case-sensitively; role: checks do not.
    assert!(!holds("roles:member", &no_rules, &target(&[]), &service));
    assert!(holds("roles:Member", &no_rules, &target(&[]), &service));
    assert!(holds("role:MEMBER", &no_rules, &target(&[]), &service));
    // Python's str(None), str(False).
    assert!(holds("project_id:None", &no_rules, &target(&[]), &service));
    assert!(holds(
        "is_admin_project:False",
        &no_rules,
        &target(&[]),
        &service
    ));
}

#[test]
fn role_checks_substitute_and_ignore_case() {
    let no_rules = rules(&[]);
    let credentials = member_of("p", &["admin"]);
    assert!(holds("role:Admin", &no_rules, &target(&[]), &credentials));
    assert!(holds(
        "role:%(r)s",
        &no_rules,
        &target(&[("r", "ADMIN")]),
        &credentials
    ));
    assert!(!holds("role:%(r)s", &no_rules, &target(&[]), &credentials));
    assert!(!holds("role:reader", &no_rules, &target(&[]), &credentials));
}

#[test]
fn a_missing_target_key_is_false_even_where_it_could_match() {
    let no_rules = rules(&[]);
    let credentials = member_of("p", &["member"]);
    assert!(!holds(
        "project_id:%(owner)s",
        &no_rules,
        &target(&[]),
        &credentials
    ));
    // `not` inverts that false, as in oslo.policy.
    assert!(holds(
        "not project_id:%(owner)s",
        &no_rules,
        &target(&[]),
        &credentials
    ));
}

#[test]
fn rules_are_followed_and_undefined_ones_are_false() {
    let rule_set = rules(&[("admin", "role:admin"), ("owner", "project_id:%(owner)s")]);
    let owner = member_of("p", &["member"]);
    let image = target(&[("owner", "p")]);
    assert!(holds("rule:admin or rule:owner", &rule_set, &image, &owner));
    assert!(!holds("rule:admin", &rule_set, &image, &owner));
    assert!(!holds("rule:nowhere", &rule_set, &image, &owner));
    assert!(holds("not rule:nowhere", &rule_set, &image, &owner));
}

#[test]
fn shared_rules_are_evaluated_once_per_evaluation() {
    // 60 levels of `rule:next or rule:next` would take 2^60 steps without the verdicts kept.
    let mut pairs: Vec<(String, String)> = (0..60)
        .map(|level| {
            (
                format!("r{level}"),
                format!("rule:r{} or rule:r{}", level + 1, level + 1),
            )
        })
        .collect();
    pairs.push(("r60".to_string(), "!".to_string()));
    let rule_set = Rules(
        pairs
            .iter()
            .map(|(name, text)| (name.clone(), parsed(text)))
            .collect(),
    );
    assert!(!holds(
        "rule:r0",
        &rule_set,
        &target(&[]),
        &Credentials::default()
    ));
}

#[test]
fn evaluation_stops_at_the_depth_limit_instead_of_recursing() {
    // A cycle the loader would refuse: evaluation denies instead of overflowing the stack.
    let rule_set = rules(&[("a", "not rule:b"), ("b", "not rule:a")]);
    assert!(!holds(
        "rule:a",
        &rule_set,
        &target(&[]),
        &Credentials::default()
    ));
    let rule_set = rules(&[("loop", "rule:loop")]);
    assert!(!holds(
        "rule:loop",
        &rule_set,
        &target(&[]),
        &Credentials::default()
    ));
}

#[test]
fn depth_counts_levels_and_followed_rules() {
    let no_rules = |_: &str| 0;
    assert_eq!(parsed("@").depth(&no_rules), 1);
    assert_eq!(parsed("@ and not !").depth(&no_rules), 3);
    assert_eq!(parsed("rule:x").depth(&|_: &str| 5), 6);
}
