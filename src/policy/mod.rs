//! Glance's policy engine: who may do what, decided as oslo.policy decides it for Glance.
//!
//! A [`Policy`] is Glance's default rules (`defaults.rs`), overridden by the rules of the
//! operator's policy file, each parsed once into a [`Check`] tree (`check.rs`). The API asks
//! [`Policy::enforce`] with a rule name, the [`Target`] (the image) and the caller's
//! [`Credentials`], and gets a [`Decision`].
//!
//! This module is pure: it reads no file and logs nothing. `config/policy.rs` reads
//! `[oslo_policy]` and the policy file while the config loads, builds the `Policy` with
//! [`Policy::from_file_text`] and reports its problems and warnings like the config file's, so a
//! policy file with a mistake fails the start or the reload and changes nothing. The `Policy`
//! is part of the immutable `Config`: glint reads the policy file at start and on every reload
//! (SIGHUP) only, where oslo.policy re-reads it whenever it changes.
//!
//! # Layout
//!
//! - `check.rs`: the check language (tree, parser, evaluation); `credentials.rs`: what checks
//!   look at; `defaults.rs`: Glance's rules; `file.rs`: the policy file's syntax; `graph.rs`:
//!   cycles and depth of `rule:` references.
//!
//! # Compatibility
//!
//! As oslo.policy with Glance's registered defaults, except:
//! - a policy file with anything glint cannot read exactly, a check string that does not parse,
//!   or rules that refer to each other in a cycle, is refused (oslo.policy logs and denies, or
//!   recurses until Python gives up); unknown rule names, references to undefined rules and
//!   credential names no token has are warnings;
//! - a `rule:` naming an undefined rule is false, and so is enforcing an unknown rule name:
//!   oslo.policy evaluates its `default` rule (`[oslo_policy] policy_default_rule`) instead,
//!   which in Glance is `""` (allow), so a typo there opens the API;
//! - `deactivate` and `reactivate` are admin only (see [`defaults::DEFAULT_RULES`]);
//! - `http:` checks and `policy_dirs` are not supported.

mod check;
mod credentials;
mod defaults;
mod file;
mod graph;

use std::collections::BTreeMap;
use std::fmt;

pub use check::{Check, ParseError, MAX_EVALUATION_DEPTH, MAX_NESTING};
pub use credentials::{Credential, Credentials, Target, TokenScope, CREDENTIAL_NAMES};
pub use defaults::{defaults_markdown, DefaultRule, DEFAULT_RULES, GLANCE_RULES_NOT_ENFORCED};

use check::{Evaluation, RuleSet};
use graph::GraphProblem;

/// The rules in force, and how `[oslo_policy]` asked them to be enforced. Two policies are
/// equal when they hold the same rules (compared as parsed trees, so `""` equals `@`), from the
/// same places, with the same settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Policy {
    rules: BTreeMap<String, Rule>,
    enforce_new_defaults: bool,
    enforce_scope: bool,
}

/// What [`Policy::enforce`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The rule's check holds.
    Allow,
    /// The rule's check does not hold, or no such rule exists.
    Deny,
    /// Not evaluated: the rule is for project-scoped tokens, the caller's token is scoped to
    /// the system or a domain, and `enforce_scope` is on (oslo.policy's `InvalidScope`, which
    /// Glance answers like a denial).
    WrongScope,
}

/// Something wrong or worth a warning in the policy, at a line of the policy file when it comes
/// from there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The line in the policy file; `None` for a default rule or the file as a whole.
    pub line: Option<usize>,
    /// The rule it is about.
    pub rule: Option<String>,
    /// What is wrong, then what to do.
    pub message: String,
}

/// A policy built from a file, with the warnings to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Problem>,
}

/// One rule in force.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    check: Check,
    /// Glance's `scope_types=['project']`; kept when the policy file overrides the rule, as
    /// oslo.policy keeps the registered scope.
    project_scoped: bool,
    /// The policy file's line that set the rule; `None` for a default.
    line: Option<usize>,
}

impl Policy {
    /// Glance's default rules (see [`DEFAULT_RULES`]) and nothing else. With
    /// `enforce_new_defaults` false, each rule that has a legacy string becomes `new or legacy`.
    pub fn defaults(enforce_new_defaults: bool, enforce_scope: bool) -> Policy {
        let mut rules = BTreeMap::new();
        for default in DEFAULT_RULES {
            rules.insert(
                default.name.to_string(),
                Rule {
                    check: default_check(default, enforce_new_defaults),
                    project_scoped: default.project_scoped,
                    line: None,
                },
            );
        }
        Policy {
            rules,
            enforce_new_defaults,
            enforce_scope,
        }
    }

    /// The defaults overridden by the rules of a policy file's text (JSON or the YAML subset of
    /// `file.rs`). Refuses the file, with every problem found, when its syntax is not read
    /// exactly, a check string does not parse, or rules form a cycle or nest deeper than
    /// [`MAX_EVALUATION_DEPTH`]. A rule the file sets is taken as it is: its legacy string is
    /// not ORed in (as oslo.policy does for overridden rules).
    pub fn from_file_text(
        text: &str,
        enforce_new_defaults: bool,
        enforce_scope: bool,
    ) -> Result<Loaded, Vec<Problem>> {
        let entries = file::parse(text).map_err(|problems| {
            problems
                .into_iter()
                .map(|problem| Problem {
                    line: Some(problem.line),
                    rule: problem.rule,
                    message: problem.message,
                })
                .collect::<Vec<_>>()
        })?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut policy = Policy::defaults(enforce_new_defaults, enforce_scope);
        for entry in entries {
            let check = match Check::parse(&entry.check) {
                Ok(check) => check,
                Err(error) => {
                    errors.push(Problem {
                        line: Some(entry.line),
                        rule: Some(entry.name),
                        message: format!("the check `{}` does not parse: {error}", entry.check),
                    });
                    continue;
                }
            };
            let project_scoped = match defaults::find(&entry.name) {
                Some(default) => default.project_scoped,
                None => {
                    warnings.push(Problem {
                        line: Some(entry.line),
                        rule: Some(entry.name.clone()),
                        message: unknown_rule_message(&entry.name),
                    });
                    false
                }
            };
            if entry.name == "default" {
                warnings.push(Problem {
                    line: Some(entry.line),
                    rule: Some(entry.name.clone()),
                    message: "glint does not fall back on `default` for rules it does not know \
                              (oslo.policy's policy_default_rule): it only applies where a check \
                              says rule:default"
                        .to_string(),
                });
            }
            policy.rules.insert(
                entry.name,
                Rule {
                    check,
                    project_scoped,
                    line: Some(entry.line),
                },
            );
        }
        policy.review(&mut errors, &mut warnings);
        if errors.is_empty() {
            warnings.sort_by_key(|problem| problem.line);
            Ok(Loaded { policy, warnings })
        } else {
            errors.sort_by_key(|problem| problem.line);
            Err(errors)
        }
    }

    /// Whether the caller may do what `rule` guards, on `target`. A rule this policy does not
    /// have is denied. With `enforce_scope`, a project-scoped rule is [`Decision::WrongScope`]
    /// for a token scoped to the system or a domain, before its check is looked at; without
    /// it, such a token is judged by the check like any other (oslo.policy then only warns).
    pub fn enforce(&self, rule: &str, target: &Target, credentials: &Credentials) -> Decision {
        let Some(rule) = self.rules.get(rule) else {
            return Decision::Deny;
        };
        if self.enforce_scope && rule.project_scoped && credentials.scope() != TokenScope::Project {
            return Decision::WrongScope;
        }
        let mut evaluation = Evaluation::new(self, target, credentials);
        if evaluation.run(&rule.check) {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }

    /// The check in force for `rule`, if the policy has the rule.
    pub fn check(&self, rule: &str) -> Option<&Check> {
        self.rules.get(rule).map(|rule| &rule.check)
    }

    /// `[oslo_policy] enforce_new_defaults`.
    pub fn enforce_new_defaults(&self) -> bool {
        self.enforce_new_defaults
    }

    /// `[oslo_policy] enforce_scope`.
    pub fn enforce_scope(&self) -> bool {
        self.enforce_scope
    }

    /// Checks how the rules refer to each other: cycles and too deep nesting are errors,
    /// references to undefined rules and unknown credential names warnings.
    fn review(&self, errors: &mut Vec<Problem>, warnings: &mut Vec<Problem>) {
        let checks: BTreeMap<String, Check> = self
            .rules
            .iter()
            .map(|(name, rule)| (name.clone(), rule.check.clone()))
            .collect();
        for problem in graph::problems(&checks) {
            match problem {
                GraphProblem::Cycle(names) => {
                    // Blame a rule the file set: the defaults alone have no cycle.
                    let blamed = names
                        .iter()
                        .find(|name| self.line_of(name).is_some())
                        .or(names.first())
                        .cloned();
                    errors.push(Problem {
                        line: blamed.as_deref().and_then(|name| self.line_of(name)),
                        rule: blamed,
                        message: format!(
                            "the rules refer to each other in a cycle, {}, which would never \
                             finish evaluating; break the cycle",
                            names.join(" -> ")
                        ),
                    });
                }
                GraphProblem::TooDeep { rule, depth } => errors.push(Problem {
                    line: self.line_of(&rule),
                    message: format!(
                        "evaluating the rule nests {depth} levels deep through its rule: \
                         references, more than {MAX_EVALUATION_DEPTH}; shorten the chain of rules"
                    ),
                    rule: Some(rule),
                }),
            }
        }
        for (name, rule) in &self.rules {
            let mut undefined: Vec<&str> = rule
                .check
                .references()
                .into_iter()
                .filter(|reference| !self.rules.contains_key(*reference))
                .collect();
            undefined.sort_unstable();
            undefined.dedup();
            for reference in undefined {
                warnings.push(Problem {
                    line: rule.line,
                    rule: Some(name.clone()),
                    message: format!(
                        "rule:{reference} names no rule, so it is false (oslo.policy would use \
                         the `default` rule instead); define {reference} or fix the name"
                    ),
                });
            }
            let mut unknown = rule.check.unknown_credentials();
            unknown.sort_unstable();
            unknown.dedup();
            for credential in unknown {
                warnings.push(Problem {
                    line: rule.line,
                    rule: Some(name.clone()),
                    message: format!(
                        "`{credential}` is no credential a token gives (those are {}), so the \
                         check on it is always false",
                        CREDENTIAL_NAMES.join(", ")
                    ),
                });
            }
        }
    }

    fn line_of(&self, rule: &str) -> Option<usize> {
        self.rules.get(rule).and_then(|rule| rule.line)
    }
}

impl RuleSet for Policy {
    fn rule(&self, name: &str) -> Option<&Check> {
        self.check(name)
    }
}

impl Decision {
    /// Whether the caller may go ahead.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Shows the settings and each rule as oslo.policy would print its check, one line each.
impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Rules<'a>(&'a BTreeMap<String, Rule>);
        impl fmt::Debug for Rules<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .iter()
                            .map(|(name, rule)| (name, rule.check.to_string())),
                    )
                    .finish()
            }
        }
        f.debug_struct("Policy")
            .field("enforce_new_defaults", &self.enforce_new_defaults)
            .field("enforce_scope", &self.enforce_scope)
            .field("rules", &Rules(&self.rules))
            .finish()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "{rule}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The check of a default rule: `new or legacy` when legacy strings are enforced too
/// (oslo.policy's `OrCheck([default.check, deprecated_rule.check])`), else the new one.
fn default_check(default: &DefaultRule, enforce_new_defaults: bool) -> Check {
    // The table's strings are tested to parse; should one not, deny rather than panic.
    let parse = |text: &str| Check::parse(text).unwrap_or(Check::Never);
    let check = parse(default.check);
    match default.legacy {
        Some(legacy) if !enforce_new_defaults && legacy != default.check => {
            Check::Or(vec![check, parse(legacy)])
        }
        _ => check,
    }
}

fn unknown_rule_message(name: &str) -> String {
    if GLANCE_RULES_NOT_ENFORCED.contains(&name) {
        return "a Glance rule for an API glint does not have; it is kept (rule: may refer to \
                it) but guards nothing"
            .to_string();
    }
    let nearest = DEFAULT_RULES
        .iter()
        .map(|rule| (edit_distance(rule.name, name), rule.name))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance);
    match nearest {
        Some((_, known)) => format!(
            "not a rule glint enforces; it is kept (rule: may refer to it) but guards nothing; \
             did you mean {known}?"
        ),
        None => "not a rule glint enforces; it is kept (rule: may refer to it) but guards nothing"
            .to_string(),
    }
}

/// Levenshtein distance, for suggesting the rule an unknown name was meant to be.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (i, left_char) in left.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, right_char) in right.iter().enumerate() {
            let substitution = previous[j] + usize::from(left_char != *right_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[right.len()]
}

#[cfg(test)]
mod tests;
