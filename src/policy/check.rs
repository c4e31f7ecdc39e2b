//! oslo.policy's check language: the tree a check string parses into ([`Check`]), its parser,
//! and its evaluation against a target and credentials.
//!
//! A check string is parsed once, when the policy loads; a request only walks the tree. This
//! module knows nothing of rule names or files: a `rule:NAME` check asks a [`RuleSet`] for the
//! named rule, and whoever loads the policy makes sure the rules form no cycle and nest no
//! deeper than [`MAX_EVALUATION_DEPTH`] (`graph.rs`).
//!
//! # The language (oslo.policy `_parser.py`, `_checks.py`)
//!
//! - `@` and the empty string allow, `!` denies.
//! - `rule:NAME` is the rule called NAME; an undefined one is false.
//! - `role:NAME` holds when the caller has the role, in any case (oslo.policy lowercases both).
//! - `KEY:VALUE` (a generic check) compares a credential with a value: KEY is a credential name
//!   (`project_id`, `user_id`, `roles`...) or a literal (`'public'`, `"shared"`, `True`,
//!   `False`, `None`, an integer); VALUE is text in which `%(name)s` is replaced by the
//!   target's `name` (a target without it makes the check false) and `%%` is a `%`.
//! - `not` binds tighter than `and`, which binds tighter than `or`; parentheses group.
//!   Words are split on whitespace; `(` at the start of a word and `)` at its end are
//!   parentheses, and `and`, `or`, `not` are operators in any case.
//!
//! # Stricter than oslo.policy
//!
//! oslo.policy turns a check string it cannot parse into `!` and logs it; glint refuses it, so a
//! typo fails the load instead of silently denying (or, under `not`, allowing). The same holds for
//! what Python would only fail on while enforcing (a `%` that is not `%(name)s` or `%%`, a
//! literal Python cannot read), a check that is only whitespace, and `http:` checks, which call
//! a remote server and which glint does not offer. The parser nests at most [`MAX_NESTING`]
//! parentheses and `not`s, so that no input can exhaust the stack.

use std::collections::BTreeMap;
use std::fmt;

use super::credentials::{Credential, Credentials, Target, CREDENTIAL_NAMES};

/// The deepest nesting of parentheses and `not`s in one check string.
pub const MAX_NESTING: usize = 32;

/// The deepest evaluation of a rule, counting each level of the tree and each `rule:` followed;
/// the loader refuses a policy whose rules could go deeper, and evaluation stops (denying)
/// there should a policy that was not checked ever reach it.
pub const MAX_EVALUATION_DEPTH: usize = 256;

/// A parsed check string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `@` or the empty string.
    Always,
    /// `!`.
    Never,
    Not(Box<Check>),
    /// Every check holds; two or more, in order (evaluation stops at the first false).
    And(Vec<Check>),
    /// Some check holds; two or more, in order (evaluation stops at the first true).
    Or(Vec<Check>),
    /// `rule:NAME`.
    Rule(String),
    /// `role:NAME`, NAME possibly holding `%(key)s`.
    Role(Template),
    /// `KEY:VALUE`.
    Generic {
        /// KEY as written, for display.
        kind: String,
        left: Operand,
        right: Template,
    },
}

/// The left side of a generic check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A Python literal, as `str()` of its value renders it (`'public'` is `public`).
    Literal(String),
    /// A credential name, possibly dotted; see [`Credentials::lookup`].
    Credential(String),
}

/// A text with `%(key)s` substitutions from the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// As written, for display.
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Key(String),
}

/// Why a check string does not parse: a sentence that quotes the offending word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
}

/// The rules a `rule:NAME` check can refer to.
pub trait RuleSet {
    /// The check of the rule called `name`, if there is one.
    fn rule(&self, name: &str) -> Option<&Check>;
}

/// One evaluation: what the checks look at, and what was found so far.
pub struct Evaluation<'a, R: RuleSet + ?Sized> {
    rules: &'a R,
    target: &'a Target,
    credentials: &'a Credentials,
    /// Each rule's verdict once computed: it depends only on the target and credentials, and
    /// remembering it keeps evaluation linear even when rules refer to each other many times
    /// over (`a: rule:b or rule:b`, `b: rule:c or rule:c`...).
    verdicts: BTreeMap<&'a str, bool>,
    depth: usize,
    /// Set when a branch went deeper than [`MAX_EVALUATION_DEPTH`]: the whole evaluation then
    /// denies, whatever `not`s above that branch made of it.
    exhausted: bool,
}

impl Check {
    /// Parses a check string (see the module doc).
    pub fn parse(text: &str) -> Result<Check, ParseError> {
        if text.is_empty() {
            return Ok(Check::Always);
        }
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return Err(error(
                "the check is only whitespace, which oslo.policy reads as `!` (deny); write \
                 \"\" or `@` to allow everyone, `!` to deny everyone",
            ));
        }
        let mut parser = Parser {
            tokens,
            position: 0,
        };
        let check = parser.or_expression(0)?;
        match parser.tokens.get(parser.position) {
            None => Ok(check),
            Some(Token::Close) => Err(error("a `)` closes no `(`; remove it or add its `(`")),
            Some(token) => Err(error(&format!(
                "{} follows a complete check; join checks with `and` or `or`",
                token.describe()
            ))),
        }
    }

    /// Every rule name this check refers to with `rule:`, in order, repeats included.
    pub fn references(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.walk(&mut |check| {
            if let Check::Rule(name) = check {
                names.push(name.as_str());
            }
        });
        names
    }

    /// The credential names this check reads that no [`Credentials`] has, so that they never
    /// match; the loader warns about them.
    pub fn unknown_credentials(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.walk(&mut |check| {
            if let Check::Generic {
                left: Operand::Credential(name),
                ..
            } = check
            {
                if !CREDENTIAL_NAMES.contains(&name.as_str()) {
                    names.push(name.as_str());
                }
            }
        });
        names
    }

    /// The depth of this check's tree, where a `rule:NAME` counts one plus `rule_depth(NAME)`.
    pub fn depth(&self, rule_depth: &dyn Fn(&str) -> usize) -> usize {
        match self {
            Check::Always | Check::Never | Check::Role(_) | Check::Generic { .. } => 1,
            Check::Rule(name) => 1 + rule_depth(name),
            Check::Not(inner) => 1 + inner.depth(rule_depth),
            Check::And(checks) | Check::Or(checks) => {
                1 + checks
                    .iter()
                    .map(|check| check.depth(rule_depth))
                    .max()
                    .unwrap_or(0)
            }
        }
    }

    /// Whether this check holds (use [`Evaluation::run`], which also denies when the depth
    /// limit was reached). Follows oslo.policy's semantics, with one difference: a `rule:`
    /// naming no rule is false, where oslo.policy would evaluate its `default` rule.
    fn evaluate<'a, R: RuleSet + ?Sized>(&'a self, evaluation: &mut Evaluation<'a, R>) -> bool {
        if evaluation.depth >= MAX_EVALUATION_DEPTH {
            // The loader refuses policies this deep; deny rather than exhaust the stack.
            evaluation.exhausted = true;
            return false;
        }
        evaluation.depth += 1;
        let verdict = match self {
            Check::Always => true,
            Check::Never => false,
            Check::Not(inner) => !inner.evaluate(evaluation),
            Check::And(checks) => checks.iter().all(|check| check.evaluate(evaluation)),
            Check::Or(checks) => checks.iter().any(|check| check.evaluate(evaluation)),
            Check::Rule(name) => evaluation.rule(name),
            Check::Role(role) => match role.render(evaluation.target) {
                Some(role) => evaluation.credentials.has_role(&role),
                None => false,
            },
            Check::Generic { left, right, .. } => match right.render(evaluation.target) {
                None => false,
                Some(value) => match left {
                    Operand::Literal(literal) => *literal == value,
                    Operand::Credential(name) => match evaluation.credentials.lookup(name) {
                        Credential::Absent => false,
                        Credential::One(held) => held == value,
                        Credential::Many(held) => held.contains(&value),
                    },
                },
            },
        };
        evaluation.depth -= 1;
        verdict
    }

    /// Calls `visit` on this check and every check inside it.
    fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Check)) {
        visit(self);
        match self {
            Check::Not(inner) => inner.walk(visit),
            Check::And(checks) | Check::Or(checks) => {
                for check in checks {
                    check.walk(visit);
                }
            }
            _ => {}
        }
    }
}

/// Renders as oslo.policy's `str()` of the same check: `@`, `!`, `not X`, `(A and B)`,
/// `(A or B)`, `KIND:MATCH`.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Always => f.write_str("@"),
            Check::Never => f.write_str("!"),
            Check::Not(inner) => write!(f, "not {inner}"),
            Check::And(checks) | Check::Or(checks) => {
                let operator = if matches!(self, Check::And(_)) {
                    " and "
                } else {
                    " or "
                };
                f.write_str("(")?;
                for (index, check) in checks.iter().enumerate() {
                    if index > 0 {
                        f.write_str(operator)?;
                    }
                    write!(f, "{check}")?;
                }
                f.write_str(")")
            }
            Check::Rule(name) => write!(f, "rule:{name}"),
            Check::Role(role) => write!(f, "role:{}", role.text),
            Check::Generic { kind, right, .. } => write!(f, "{kind}:{}", right.text),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<'a, R: RuleSet + ?Sized> Evaluation<'a, R> {
    pub fn new(rules: &'a R, target: &'a Target, credentials: &'a Credentials) -> Self {
        Evaluation {
            rules,
            target,
            credentials,
            verdicts: BTreeMap::new(),
            depth: 0,
            exhausted: false,
        }
    }

    /// Whether `check` holds; false if its evaluation reached [`MAX_EVALUATION_DEPTH`].
    pub fn run(&mut self, check: &'a Check) -> bool {
        let verdict = check.evaluate(self);
        verdict && !self.exhausted
    }

    /// The verdict of the rule called `name`, computed once per evaluation.
    fn rule(&mut self, name: &'a str) -> bool {
        if let Some(verdict) = self.verdicts.get(name) {
            return *verdict;
        }
        let rules = self.rules;
        let verdict = match rules.rule(name) {
            Some(check) => check.evaluate(self),
            None => false,
        };
        self.verdicts.insert(name, verdict);
        verdict
    }
}

impl Template {
    /// Parses the right side of a check: text with `%(name)s` and `%%`.
    fn parse(text: &str) -> Result<Template, ParseError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(percent) = rest.find('%') {
            literal.push_str(&rest[..percent]);
            let after = &rest[percent + 1..];
            if let Some(after_escape) = after.strip_prefix('%') {
                literal.push('%');
                rest = after_escape;
                continue;
            }
            let key = after
                .strip_prefix('(')
                .and_then(|inner| inner.split_once(')'))
                .filter(|(key, _)| !key.contains('('))
                .and_then(|(key, tail)| tail.strip_prefix('s').map(|tail| (key, tail)));
            let Some((key, tail)) = key else {
                return Err(error(&format!(
                    "`{text}` holds a `%` that is neither `%(name)s` nor `%%`, which Python's \
                     formatting fails on; write `%(name)s` to read the target's `name`, or `%%` \
                     for a percent sign"
                )));
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Key(key.to_string()));
            rest = tail;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The text with the target's values in place, or `None` if the target lacks a key.
    fn render(&self, target: &Target) -> Option<String> {
        let mut rendered = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => rendered.push_str(text),
                Part::Key(key) => rendered.push_str(target.get(key)?),
            }
        }
        Some(rendered)
    }
}

impl Operand {
    /// The left side of a generic check: a literal as Python's `ast.literal_eval` reads it (the
    /// forms policy files use), else a credential name.
    fn parse(kind: &str) -> Result<Operand, ParseError> {
        for quote in ['\'', '"'] {
            if let Some(inner) = kind.strip_prefix(quote) {
                return match inner.strip_suffix(quote) {
                    Some(inner) if !inner.contains(quote) && !inner.contains('\\') => {
                        Ok(Operand::Literal(inner.to_string()))
                    }
                    _ => Err(error(&format!(
                        "`{kind}` is not a quoted literal glint reads: write the text between \
                         one pair of matching quotes, without backslashes"
                    ))),
                };
            }
        }
        if matches!(kind, "True" | "False" | "None") {
            return Ok(Operand::Literal(kind.to_string()));
        }
        let digits = kind.strip_prefix('-').unwrap_or(kind);
        if digits.starts_with(|c: char| c.is_ascii_digit()) {
            let canonical = digits == "0" || !digits.starts_with('0');
            if canonical && digits.bytes().all(|b| b.is_ascii_digit()) {
                // Python's str(int): `-0` is `0`.
                let value = if digits == "0" { digits } else { kind };
                return Ok(Operand::Literal(value.to_string()));
            }
            return Err(error(&format!(
                "`{kind}` is not a literal glint reads: a number must be a plain decimal \
                 integer; quote it ('{kind}') to compare text"
            )));
        }
        let is_name = |segment: &str| {
            segment.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if kind.split('.').all(is_name) {
            return Ok(Operand::Credential(kind.to_string()));
        }
        Err(error(&format!(
            "`{kind}` before the `:` is neither a credential name (such as project_id) nor a \
             literal ('text', True, False, None, an integer)"
        )))
    }
}

/// One word of a check string, as oslo.policy's `_parse_tokenize` splits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    And,
    Or,
    Not,
    /// A word in matching quotes: oslo.policy's `string` token, which no rule accepts.
    Quoted(&'a str),
    Check(&'a str),
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self {
            Token::Open => "`(`".to_string(),
            Token::Close => "`)`".to_string(),
            Token::And => "`and`".to_string(),
            Token::Or => "`or`".to_string(),
            Token::Not => "`not`".to_string(),
            Token::Quoted(text) => format!("the quoted `{text}`"),
            Token::Check(text) => format!("`{text}`"),
        }
    }
}

fn tokenize(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    for word in text.split_whitespace() {
        let clean = word.trim_start_matches('(');
        tokens.extend(std::iter::repeat_n(Token::Open, word.len() - clean.len()));
        if clean.is_empty() {
            continue;
        }
        let core = clean.trim_end_matches(')');
        let n_closing = clean.len() - core.len();
        match core.to_lowercase().as_str() {
            "and" => tokens.push(Token::And),
            "or" => tokens.push(Token::Or),
            "not" => tokens.push(Token::Not),
            "" => {}
            _ => {
                // oslo.policy looks at the word with its closing parentheses for the quotes.
                let quoted = clean.len() >= 2
                    && ['\'', '"']
                        .iter()
                        .any(|&quote| clean.starts_with(quote) && clean.ends_with(quote));
                if quoted {
                    tokens.push(Token::Quoted(&clean[1..clean.len() - 1]));
                } else {
                    tokens.push(Token::Check(core));
                }
            }
        }
        tokens.extend(std::iter::repeat_n(Token::Close, n_closing));
    }
    tokens
}

/// Recursive descent over the tokens; `depth` counts open parentheses and `not`s.
struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    position: usize,
}

impl Parser<'_> {
    fn or_expression(&mut self, depth: usize) -> Result<Check, ParseError> {
        let mut checks = vec![self.and_expression(depth)?];
        while self.tokens.get(self.position) == Some(&Token::Or) {
            self.position += 1;
            checks.push(self.and_expression(depth)?);
        }
        Ok(combine(checks, Check::Or))
    }

    fn and_expression(&mut self, depth: usize) -> Result<Check, ParseError> {
        let mut checks = vec![self.unary(depth)?];
        while self.tokens.get(self.position) == Some(&Token::And) {
            self.position += 1;
            checks.push(self.unary(depth)?);
        }
        Ok(combine(checks, Check::And))
    }

    fn unary(&mut self, depth: usize) -> Result<Check, ParseError> {
        if depth >= MAX_NESTING {
            return Err(error(&format!(
                "parentheses and `not`s nest more than {MAX_NESTING} deep; simplify the check \
                 or split it into rules joined with `rule:`"
            )));
        }
        let token = self.tokens.get(self.position).copied();
        self.position += 1;
        match token {
            Some(Token::Not) => Ok(Check::Not(Box::new(self.unary(depth + 1)?))),
            Some(Token::Open) => {
                let inner = self.or_expression(depth + 1)?;
                match self.tokens.get(self.position) {
                    Some(Token::Close) => {
                        self.position += 1;
                        Ok(inner)
                    }
                    None => Err(error("a `(` is never closed; add its `)`")),
                    Some(token) => Err(error(&format!(
                        "{} follows a complete check inside parentheses; join checks with \
                         `and` or `or`",
                        token.describe()
                    ))),
                }
            }
            Some(Token::Check(text)) => parse_check(text),
            Some(Token::Quoted(text)) => Err(error(&format!(
                "the quoted `{text}` is not a check; quotes belong around a literal before \
                 the `:` of a check, as in '{text}':%(visibility)s"
            ))),
            Some(token @ (Token::And | Token::Or)) => Err(error(&format!(
                "{} needs a check on each side",
                token.describe()
            ))),
            Some(Token::Close) => Err(error(
                "a `)` comes where a check is expected (empty parentheses, or a `)` too many)",
            )),
            None => Err(error(
                "the check ends where a check is expected (after `and`, `or`, `not` or `(`)",
            )),
        }
    }
}

fn combine(mut checks: Vec<Check>, join: fn(Vec<Check>) -> Check) -> Check {
    match checks.pop() {
        Some(only) if checks.is_empty() => only,
        Some(last) => {
            checks.push(last);
            join(checks)
        }
        // Unreachable: every caller passes at least one check.
        None => Check::Never,
    }
}

/// One word that is a check, as oslo.policy's `_parse_check` reads it.
fn parse_check(text: &str) -> Result<Check, ParseError> {
    match text {
        "@" => return Ok(Check::Always),
        "!" => return Ok(Check::Never),
        _ => {}
    }
    let Some((kind, matched)) = text.split_once(':') else {
        return Err(error(&format!(
            "`{text}` is not a check: write `@`, `!`, `rule:NAME`, `role:NAME` or `KEY:VALUE` \
             (oslo.policy would deny every request with it)"
        )));
    };
    match kind {
        "rule" if matched.is_empty() => Err(error("`rule:` names no rule")),
        "rule" => Ok(Check::Rule(matched.to_string())),
        "role" if matched.is_empty() => Err(error("`role:` names no role")),
        "role" => Ok(Check::Role(Template::parse(matched)?)),
        "http" | "https" => Err(error(&format!(
            "`{text}` asks a remote server, which glint does not do; express the check with \
             roles and credentials"
        ))),
        "" => Err(error(&format!(
            "`{text}` has nothing before its `:`; write a credential name or a literal there"
        ))),
        _ => Ok(Check::Generic {
            kind: kind.to_string(),
            left: Operand::parse(kind)?,
            right: Template::parse(matched)?,
        }),
    }
}

fn error(message: &str) -> ParseError {
    ParseError {
        message: message.to_string(),
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
