//! The syntax of a policy file (`[oslo_policy] policy_file`): its text in, each rule's name,
//! check string and line out. Whether a check string parses and what the rules mean is for the
//! caller; this module does not open files (`config/policy.rs` does) and has no YAML crate.
//!
//! # Formats
//!
//! oslo.policy reads a policy file as JSON, and failing that as YAML. glint reads:
//!
//! - JSON, when the first character that is not whitespace is `{`: one object whose values are
//!   all strings. Strings are decoded by serde_json, so every JSON escape works.
//! - Otherwise the YAML that policy files use in practice: one rule per line, `name: check`,
//!   where the name is bare or in single or double quotes and the check is bare, `'...'` (with
//!   `''` for a quote) or `"..."` (with the escapes `\"`, `\\`, `\/`, `\t`, `\n`); `#` comments
//!   (a bare check ends at ` #`); blank lines; one leading `---`.
//!
//! Anything else a YAML or JSON reader could make something of (nested maps, lists, block or
//! multi-line scalars, anchors, tags, a bare value YAML would read as a boolean, a number or
//! null) is refused with its line, as is a rule set twice (YAML and JSON readers keep the last
//! value silently; an operator editing the first copy would see nothing change).
//! The YAML form reports every bad line in one pass; the JSON form stops at its first syntax
//! error, as the rest of the file cannot be read reliably after it.

use std::collections::BTreeMap;

/// One rule as the file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// The check string, unparsed.
    pub check: String,
    /// 1-based line of the rule's name.
    pub line: usize,
}

/// What is wrong with the file at one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxProblem {
    pub line: usize,
    /// The rule the problem is about, when the line got that far.
    pub rule: Option<String>,
    /// What is wrong, then what to do.
    pub message: String,
}

/// The rules of a policy file, in file order, or every problem found.
pub fn parse(text: &str) -> Result<Vec<Entry>, Vec<SyntaxProblem>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut problems = Vec::new();
    let entries = if text.trim_start().starts_with('{') {
        parse_json(text, &mut problems)
    } else {
        parse_yaml(text, &mut problems)
    };
    let mut first_lines: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &entries {
        if let Some(first) = first_lines.get(entry.name.as_str()) {
            problems.push(SyntaxProblem {
                line: entry.line,
                rule: Some(entry.name.clone()),
                message: format!(
                    "the rule is set twice (first on line {first}); keep one of the two lines"
                ),
            });
        } else {
            first_lines.insert(&entry.name, entry.line);
        }
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        problems.sort_by_key(|problem| problem.line);
        Err(problems)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// A cursor over JSON text that knows its line.
struct Json<'a> {
    text: &'a str,
    position: usize,
    line: usize,
}

fn parse_json(text: &str, problems: &mut Vec<SyntaxProblem>) -> Vec<Entry> {
    let mut json = Json {
        text,
        position: 0,
        line: 1,
    };
    let mut entries = Vec::new();
    if let Err(problem) = json.object(&mut entries) {
        problems.push(problem);
    }
    entries
}

impl Json<'_> {
    fn object(&mut self, entries: &mut Vec<Entry>) -> Result<(), SyntaxProblem> {
        self.skip_whitespace();
        self.expect(
            b'{',
            None,
            "the file must be one JSON object, `{ \"rule\": \"check\" }`",
        )?;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.position += 1;
            return self.end();
        }
        loop {
            self.skip_whitespace();
            let line = self.line;
            if self.peek() != Some(b'"') {
                return Err(self.problem(
                    None,
                    "expected a rule name in double quotes (JSON allows no trailing comma and \
                     no comments)",
                ));
            }
            let name = self.string(None)?;
            self.skip_whitespace();
            self.expect(b':', Some(&name), "expected `:` after the rule name")?;
            self.skip_whitespace();
            let check =
                match self.peek() {
                    Some(b'"') => self.string(Some(&name))?,
                    Some(b'{') => return Err(self.problem(
                        Some(&name),
                        "the value is an object (a nested map); a rule's value must be a check \
                         string",
                    )),
                    Some(b'[') => {
                        return Err(self.problem(
                            Some(&name),
                            "the value is a list (oslo.policy's old list-of-lists syntax, which \
                         glint does not read); write the check as a string, such as \
                         \"role:admin or role:member\"",
                        ))
                    }
                    _ => {
                        return Err(self.problem(
                            Some(&name),
                            "the value is not a string; put the check string in double quotes",
                        ))
                    }
                };
            entries.push(Entry { name, check, line });
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.position += 1,
                Some(b'}') => {
                    self.position += 1;
                    return self.end();
                }
                _ => {
                    let rule = entries.last().map(|entry| entry.name.clone());
                    return Err(self.problem(
                        rule.as_deref(),
                        "expected `,` or `}` after the check string",
                    ));
                }
            }
        }
    }

    /// Only whitespace may follow the object.
    fn end(&mut self) -> Result<(), SyntaxProblem> {
        self.skip_whitespace();
        if self.position < self.text.len() {
            return Err(self.problem(None, "text after the closing `}`; remove it"));
        }
        Ok(())
    }

    /// A JSON string starting at the cursor, decoded by serde_json.
    fn string(&mut self, rule: Option<&str>) -> Result<String, SyntaxProblem> {
        let bytes = self.text.as_bytes();
        let start = self.position;
        let mut end = start + 1;
        loop {
            match bytes.get(end) {
                Some(b'"') => break,
                Some(b'\\') => end += 2,
                Some(b'\n') | None => {
                    return Err(self.problem(
                        rule,
                        "a string is not closed on its line; add its closing `\"`",
                    ))
                }
                Some(_) => end += 1,
            }
        }
        let literal = self.text.get(start..=end).unwrap_or_default();
        self.position = end + 1;
        serde_json::from_str::<String>(literal).map_err(|error| {
            self.problem(
                rule,
                &format!("the string {literal} is not valid JSON: {error}"),
            )
        })
    }

    fn expect(&mut self, byte: u8, rule: Option<&str>, message: &str) -> Result<(), SyntaxProblem> {
        if self.peek() == Some(byte) {
            self.position += 1;
            Ok(())
        } else {
            Err(self.problem(rule, message))
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(byte @ (b' ' | b'\t' | b'\n' | b'\r')) = self.peek() {
            if byte == b'\n' {
                self.line += 1;
            }
            self.position += 1;
        }
    }

    fn problem(&self, rule: Option<&str>, message: &str) -> SyntaxProblem {
        SyntaxProblem {
            line: self.line,
            rule: rule.map(str::to_string),
            message: message.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// YAML

/// Words YAML 1.1 (PyYAML, which oslo.policy uses) reads as booleans or null when bare.
const YAML_NON_STRINGS: &[&str] = &["yes", "no", "true", "false", "on", "off", "null", "~"];

fn parse_yaml(text: &str, problems: &mut Vec<SyntaxProblem>) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut seen_content = false;
    for (index, line) in text.split('\n').enumerate() {
        let line_number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let content = line.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let first_content = !seen_content;
        seen_content = true;
        let mut problem = |rule: Option<&str>, message: String| {
            problems.push(SyntaxProblem {
                line: line_number,
                rule: rule.map(str::to_string),
                message,
            })
        };
        if line.starts_with([' ', '\t']) {
            problem(
                None,
                "the line is indented: nested maps and values continued on a second line are \
                 not supported; write each rule on one line starting at column 1"
                    .to_string(),
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            if rest.is_empty() || rest.starts_with('#') {
                if !first_content {
                    problem(
                        None,
                        "`---` starts a second YAML document; a policy file holds one, remove \
                         this line"
                            .to_string(),
                    );
                }
                continue;
            }
        }
        match yaml_rule(line) {
            Ok((name, check)) => entries.push(Entry {
                name,
                check,
                line: line_number,
            }),
            Err((rule, message)) => problem(rule.as_deref(), message),
        }
    }
    entries
}

type LineError = (Option<String>, String);

/// One `name: check` line (not indented, not a comment).
fn yaml_rule(line: &str) -> Result<(String, String), LineError> {
    let (name, rest) = yaml_key(line)?;
    let value = rest.trim_start_matches([' ', '\t']);
    let fail = |message: &str| Err((Some(name.clone()), message.to_string()));
    let Some(first) = value.chars().next() else {
        return fail(
            "the rule has no value (YAML reads it as null, or as the start of a nested map); \
             write \"\" to allow everyone, \"!\" to allow no one",
        );
    };
    match first {
        '#' => fail(
            "the rule has no value (YAML reads it as null, or as the start of a nested map); \
             write \"\" to allow everyone, \"!\" to allow no one",
        ),
        '"' | '\'' => {
            let (check, tail) =
                yaml_quoted(value).map_err(|message| (Some(name.clone()), message))?;
            let tail = tail.trim_start_matches([' ', '\t']);
            if !tail.is_empty() && !tail.starts_with('#') {
                let other = if first == '"' { '\'' } else { '"' };
                return fail(&format!(
                    "text follows the closing quote; quote the whole check string, using \
                     {other} around it when it holds {first}"
                ));
            }
            Ok((name, check))
        }
        '|' | '>' => fail(
            "a block scalar (`|` or `>`) spans several lines, which is not supported; write \
             the check on this line",
        ),
        '{' | '[' => fail(
            "the value is a map or a list; a rule's value must be a check string on the same line",
        ),
        '!' | '@' | '&' | '*' | '%' | '`' | '-' | '?' | ',' => fail(&format!(
            "YAML reads a bare value starting with `{first}` as something other than text; \
             quote the check string, as in \"{}\"",
            value.split(" #").next().unwrap_or(value).trim_end()
        )),
        _ if !(first.is_alphabetic() || first == '_' || first == '(') => {
            fail("YAML may read this bare value as a number or date; quote the check string")
        }
        _ => {
            let check = cut_comment(value).trim_end();
            if check.contains(": ") || check.contains(":\t") || check.ends_with(':') {
                return fail(
                    "the check holds `: `, which YAML reads as a nested map; quote the check \
                     string",
                );
            }
            if YAML_NON_STRINGS.contains(&check.to_ascii_lowercase().as_str()) {
                return fail(&format!(
                    "YAML reads a bare `{check}` as a boolean or null, not a check; quote it if \
                     you mean the text"
                ));
            }
            Ok((name, check.to_string()))
        }
    }
}

/// The rule name at the start of `line` and what follows its `:`.
fn yaml_key(line: &str) -> Result<(String, &str), LineError> {
    let first = line.chars().next().unwrap_or(' ');
    let (name, rest) = match first {
        '"' | '\'' => {
            let (name, rest) = yaml_quoted(line).map_err(|message| (None, message))?;
            let rest = rest.trim_start_matches([' ', '\t']);
            match rest.strip_prefix(':') {
                Some(rest) => (name, rest),
                None => {
                    return Err((
                        Some(name),
                        "expected `:` after the quoted rule name".to_string(),
                    ))
                }
            }
        }
        '-' => {
            return Err((
                None,
                "a list item; a policy file maps each rule name to its check, one \
                 `name: check` per line"
                    .to_string(),
            ))
        }
        '{' | '[' => {
            return Err((
                None,
                "a flow map or list; write one `name: check` per line, or make the whole file \
                 one JSON object"
                    .to_string(),
            ))
        }
        _ => {
            let separator = line
                .char_indices()
                .find(|&(index, c)| {
                    c == ':' && matches!(line[index + 1..].chars().next(), None | Some(' ' | '\t'))
                })
                .map(|(index, _)| index);
            let Some(separator) = separator else {
                return Err((
                    None,
                    format!(
                        "`{}` is not `name: check` (a `:` followed by a space); write the rule \
                         name, `: `, then the check",
                        cut_comment(line).trim_end()
                    ),
                ));
            };
            let name = line[..separator].trim_end();
            let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
                && !YAML_NON_STRINGS.contains(&name.to_ascii_lowercase().as_str());
            if !plain {
                return Err((
                    None,
                    format!(
                        "`{name}` is not a bare rule name (letters, digits, `_`, `-`, `.`, `:`, \
                         `/`, starting with a letter); put it in double quotes"
                    ),
                ));
            }
            (name.to_string(), &line[separator + 1..])
        }
    };
    if name.is_empty() {
        return Err((None, "the rule name is empty; name the rule".to_string()));
    }
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return Err((
            Some(name),
            "expected a space after the `:` that follows the rule name".to_string(),
        ));
    }
    Ok((name, rest))
}

/// A YAML quoted scalar at the start of `text` (which starts with its quote), and what follows
/// it on the line.
fn yaml_quoted(text: &str) -> Result<(String, &str), String> {
    let mut chars = text.char_indices();
    let quote = match chars.next() {
        Some((_, quote @ ('"' | '\''))) => quote,
        _ => return Err("expected a quote".to_string()),
    };
    let mut value = String::new();
    while let Some((index, c)) = chars.next() {
        match (quote, c) {
            ('\'', '\'') => {
                if text[index + 1..].starts_with('\'') {
                    chars.next();
                    value.push('\'');
                } else {
                    return Ok((value, &text[index + 1..]));
                }
            }
            ('"', '"') => return Ok((value, &text[index + 1..])),
            ('"', '\\') => match chars.next() {
                Some((_, escaped @ ('"' | '\\' | '/'))) => value.push(escaped),
                Some((_, 't')) => value.push('\t'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => {
                    return Err(format!(
                        "the escape `\\{other}` is not supported in a double-quoted value; use \
                         single quotes, in which a backslash is a backslash"
                    ))
                }
                None => break,
            },
            _ => value.push(c),
        }
    }
    Err(format!(
        "the {} quote is not closed on its line (values spanning lines are not supported); \
         close it on the same line",
        if quote == '"' { "double" } else { "single" }
    ))
}

/// `text` up to a ` #` or `\t#` comment.
fn cut_comment(text: &str) -> &str {
    let bytes = text.as_bytes();
    for index in 1..bytes.len() {
        if bytes[index] == b'#' && matches!(bytes[index - 1], b' ' | b'\t') {
            return &text[..index];
        }
    }
    text
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
