//! Tests of the policy-file syntax: both formats, and every refusal with its line and rule.

use super::*;

fn rules(text: &str) -> Vec<(String, String, usize)> {
    match parse(text) {
        Ok(entries) => entries
            .into_iter()
            .map(|entry| (entry.name, entry.check, entry.line))
            .collect(),
        Err(problems) => panic!("expected the file to parse, got {problems:#?}\n---\n{text}"),
    }
}

fn problems(text: &str) -> Vec<SyntaxProblem> {
    match parse(text) {
        Ok(entries) => panic!("expected the file to be refused, got {entries:#?}\n---\n{text}"),
        Err(problems) => problems,
    }
}

fn rule(name: &str, check: &str, line: usize) -> (String, String, usize) {
    (name.to_string(), check.to_string(), line)
}

#[test]
fn yaml_subset_reads_every_quoting_style() {
    let text = "\u{feff}---\n\
                # Glance's sample file style\n\
                \"add_image\": \"role:admin\"\n\
                \n\
                get_image: 'role:reader or ''public'':%(visibility)s'\n\
                modify_image: rule:default   # a comment\r\n\
                'delete_image': \"role:admin and not role:\\\"x\\\"\"\n\
                default: \"\"\n\
                deactivate: '!'\n\
                os_compute_api:servers:create: role:member#not-a-comment\n\
                \x20 # an indented comment line is a comment\n\
                publicize_image: (role:admin)\n";
    assert_eq!(
        rules(text),
        vec![
            rule("add_image", "role:admin", 3),
            rule("get_image", "role:reader or 'public':%(visibility)s", 5),
            rule("modify_image", "rule:default", 6),
            rule("delete_image", "role:admin and not role:\"x\"", 7),
            rule("default", "", 8),
            rule("deactivate", "!", 9),
            rule(
                "os_compute_api:servers:create",
                "role:member#not-a-comment",
                10
            ),
            rule("publicize_image", "(role:admin)", 12),
        ]
    );
}

#[test]
fn empty_files_have_no_rules() {
    for text in [
        "",
        "\n\n",
        "# nothing\n",
        "---\n",
        "--- # doc\n# c\n",
        "{}",
        " {\n}\n",
    ] {
        assert_eq!(rules(text), Vec::new(), "{text:?}");
    }
}

#[test]
fn json_reads_every_escape_and_keeps_lines() {
    let text = "{\n  \"add_image\": \"role:admin\",\n  \"get_image\":\n    \"role:\\u0061dmin or 'public':%(visibility)s\",\n\"x\\\"y\": \"\"}\n";
    assert_eq!(
        rules(text),
        vec![
            rule("add_image", "role:admin", 2),
            rule("get_image", "role:admin or 'public':%(visibility)s", 3),
            rule("x\"y", "", 5),
        ]
    );
}

#[test]
fn every_yaml_refusal_names_its_line_and_rule() {
    // (file, line, rule, part of the message)
    let cases: &[(&str, usize, Option<&str>, &str)] = &[
        ("a: b\nnested:\n  inner: x\n", 2, Some("nested"), "no value"),
        ("a: b\nnested:\n  inner: x\n", 3, None, "indented"),
        ("a:\n", 1, Some("a"), "no value"),
        ("a: # nothing\n", 1, Some("a"), "no value"),
        ("- role:admin\n", 1, None, "list item"),
        ("{a: b}\n# then\n", 1, None, "rule name in double quotes"),
        ("# c\n{a: b}\n", 2, None, "flow map"),
        ("[a]\n", 1, None, "flow map or list"),
        ("a: [role:admin]\n", 1, Some("a"), "map or a list"),
        ("a: {x: y}\n", 1, Some("a"), "map or a list"),
        ("a: |\n  role:admin\n", 1, Some("a"), "block scalar"),
        ("a: >\n", 1, Some("a"), "block scalar"),
        (
            "a: \"role:admin\n  or role:b\"\n",
            1,
            Some("a"),
            "not closed on its line",
        ),
        ("a: 'role:admin\n", 1, Some("a"), "not closed on its line"),
        ("a: \"role:\\x41\"\n", 1, Some("a"), "escape `\\x`"),
        (
            "a: 'public':%(visibility)s\n",
            1,
            Some("a"),
            "text follows the closing quote",
        ),
        (
            "a: \"x\" y\n",
            1,
            Some("a"),
            "text follows the closing quote",
        ),
        ("a: !\n", 1, Some("a"), "starting with `!`"),
        ("a: @\n", 1, Some("a"), "starting with `@`"),
        ("a: &anchor role:admin\n", 1, Some("a"), "starting with `&`"),
        ("a: *alias\n", 1, Some("a"), "starting with `*`"),
        ("a: 42\n", 1, Some("a"), "number or date"),
        ("a: yes\n", 1, Some("a"), "boolean or null"),
        ("a: NULL\n", 1, Some("a"), "boolean or null"),
        ("a: role:admin or role: member\n", 1, Some("a"), "`: `"),
        ("a: role:\n", 1, Some("a"), "`: `"),
        ("a:role:admin\n", 1, None, "is not `name: check`"),
        ("just text\n", 1, None, "is not `name: check`"),
        ("\"a\" role:admin\n", 1, Some("a"), "expected `:`"),
        ("\"a\":role\n", 1, Some("a"), "a space after the `:`"),
        ("'': x\n", 1, None, "empty"),
        ("1a: x\n", 1, None, "not a bare rule name"),
        ("true: x\n", 1, None, "not a bare rule name"),
        ("a b: x\n", 1, None, "not a bare rule name"),
        ("a: x\n---\nb: y\n", 2, None, "second YAML document"),
        ("a: x\na: y\n", 2, Some("a"), "set twice (first on line 1)"),
    ];
    for (text, line, rule, expected) in cases {
        let found = problems(text);
        let matching = found.iter().find(|problem| {
            problem.line == *line
                && problem.rule.as_deref() == *rule
                && problem.message.contains(expected)
        });
        assert!(
            matching.is_some(),
            "{text:?}: expected line {line}, rule {rule:?}, `{expected}`; got {found:#?}"
        );
    }
}

#[test]
fn every_json_refusal_names_its_line_and_rule() {
    let cases: &[(&str, usize, Option<&str>, &str)] = &[
        ("{\n\"a\": {\"b\": \"c\"}}", 2, Some("a"), "nested map"),
        (
            "{\n\"a\": [[\"role:admin\"]]}",
            2,
            Some("a"),
            "list-of-lists",
        ),
        ("{\"a\": true}", 1, Some("a"), "not a string"),
        ("{\"a\": 1}", 1, Some("a"), "not a string"),
        ("{\"a\": \"x\",\n}", 2, None, "trailing comma"),
        (
            "{\"a\": \"x\"\n\"b\": \"y\"}",
            2,
            Some("a"),
            "expected `,` or `}`",
        ),
        ("{\"a\" \"x\"}", 1, Some("a"), "expected `:`"),
        ("{a: \"x\"}", 1, None, "rule name in double quotes"),
        ("{\"a\": \"x\"}\n{}", 2, None, "after the closing `}`"),
        ("{\"a\": \"x", 1, Some("a"), "not closed"),
        ("{\"a\": \"\\q\"}", 1, Some("a"), "not valid JSON"),
        ("{\"a\": \"tab\there\"}", 1, Some("a"), "not valid JSON"),
        (
            "{\"a\": \"x\",\n\"a\": \"y\"}",
            2,
            Some("a"),
            "set twice (first on line 1)",
        ),
        ("{", 1, None, "rule name in double quotes"),
    ];
    for (text, line, rule, expected) in cases {
        let found = problems(text);
        let matching = found.iter().find(|problem| {
            problem.line == *line
                && problem.rule.as_deref() == *rule
                && problem.message.contains(expected)
        });
        assert!(
            matching.is_some(),
            "{text:?}: expected line {line}, rule {rule:?}, `{expected}`; got {found:#?}"
        );
    }
}

#[test]
fn yaml_reports_every_bad_line_in_one_pass() {
    let found = problems("a: !\nok: role:admin\nb: 42\n  c: x\n");
    let lines: Vec<usize> = found.iter().map(|problem| problem.line).collect();
    assert_eq!(lines, vec![1, 3, 4]);
}

#[test]
fn no_input_panics() {
    let pieces = [
        "a", ":", " ", "\"", "'", "\\", "#", "\n", "{", "}", "[", ",", "-", "é", "\r", "\t", "!",
    ];
    for a in pieces {
        for b in pieces {
            for c in pieces {
                for d in pieces {
                    let _ = parse(&format!("{a}{b}{c}{d}"));
                    let _ = parse(&format!("{{\"{a}{b}\": \"{c}{d}"));
                }
            }
        }
    }
}
