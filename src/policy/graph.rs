//! The rules as a graph of `rule:` references: finds the cycles and the rules whose evaluation
//! would nest deeper than [`MAX_EVALUATION_DEPTH`], so that the loader can refuse both.
//!
//! oslo.policy only logs cyclic rules and then recurses until Python's recursion limit; glint
//! refuses them, so evaluation (`check.rs`) can recurse knowing its depth is bounded. The walk
//! here is iterative (an explicit stack), so a long chain of rules in a policy file cannot
//! exhaust the stack either.

use std::collections::BTreeMap;

use super::check::{Check, MAX_EVALUATION_DEPTH};

/// What is wrong with how the rules refer to each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphProblem {
    /// The rules of a cycle, in reference order, the first repeated at the end (`a`, `b`, `a`).
    Cycle(Vec<String>),
    /// Evaluating `rule` would nest `depth` levels deep, more than [`MAX_EVALUATION_DEPTH`];
    /// reported for the rule where the limit is crossed (none of the rules it refers to is
    /// too deep itself).
    TooDeep { rule: String, depth: usize },
}

/// Where the walk is with one rule.
#[derive(Clone, Copy)]
enum Visit {
    /// On the walk's stack: meeting it again closes a cycle.
    InProgress,
    /// Finished, with the depth of its evaluation.
    Done(usize),
}

/// One rule on the walk's stack, and how many of its references were followed.
struct Frame<'a> {
    name: &'a str,
    references: Vec<&'a str>,
    next: usize,
}

/// Every cycle and every rule nested too deep, in the order the walk meets them.
pub fn problems(rules: &BTreeMap<String, Check>) -> Vec<GraphProblem> {
    let mut problems = Vec::new();
    let mut visits: BTreeMap<&str, Visit> = BTreeMap::new();
    for (root, check) in rules {
        if visits.contains_key(root.as_str()) {
            continue;
        }
        visits.insert(root, Visit::InProgress);
        let mut stack = vec![Frame {
            name: root,
            references: check.references(),
            next: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            if let Some(&reference) = frame.references.get(frame.next) {
                frame.next += 1;
                // An undefined rule is false and ends the path; the loader warns about it.
                let Some((name, check)) = rules.get_key_value(reference) else {
                    continue;
                };
                match visits.get(reference) {
                    Some(Visit::InProgress) => {
                        let start = stack
                            .iter()
                            .position(|frame| frame.name == reference)
                            .unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|frame| frame.name.to_string())
                            .collect();
                        cycle.push(reference.to_string());
                        problems.push(GraphProblem::Cycle(cycle));
                    }
                    Some(Visit::Done(_)) => {}
                    None => {
                        visits.insert(name, Visit::InProgress);
                        stack.push(Frame {
                            name,
                            references: check.references(),
                            next: 0,
                        });
                    }
                }
                continue;
            }
            let name = frame.name;
            stack.pop();
            let Some(check) = rules.get(name) else {
                continue;
            };
            // A rule still in progress belongs to a cycle, which is reported already.
            let depth_of = |reference: &str| match visits.get(reference) {
                Some(Visit::Done(depth)) => *depth,
                Some(Visit::InProgress) | None => 0,
            };
            let depth = check.depth(&depth_of);
            let crosses = depth > MAX_EVALUATION_DEPTH
                && check
                    .references()
                    .iter()
                    .all(|reference| depth_of(reference) <= MAX_EVALUATION_DEPTH);
            if crosses {
                problems.push(GraphProblem::TooDeep {
                    rule: name.to_string(),
                    depth,
                });
            }
            visits.insert(name, Visit::Done(depth));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)]) -> BTreeMap<String, Check> {
        pairs
            .iter()
            .map(|(name, text)| {
                let check = Check::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
                (name.to_string(), check)
            })
            .collect()
    }

    fn cycle(names: &[&str]) -> GraphProblem {
        GraphProblem::Cycle(names.iter().map(|name| name.to_string()).collect())
    }

    #[test]
    fn acyclic_rules_have_no_problem() {
        let rules = rules(&[
            ("a", "rule:b and rule:c"),
            ("b", "rule:c or rule:undefined"),
            ("c", "role:admin"),
        ]);
        assert_eq!(problems(&rules), Vec::new());
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        assert_eq!(
            problems(&rules(&[("a", "rule:a")])),
            vec![cycle(&["a", "a"])]
        );
        assert_eq!(
            problems(&rules(&[
                ("a", "@ or rule:b"),
                ("b", "not rule:c"),
                ("c", "rule:a")
            ])),
            vec![cycle(&["a", "b", "c", "a"])]
        );
        // A cycle reached from outside it is reported once, without the way in.
        assert_eq!(
            problems(&rules(&[("a", "rule:b"), ("b", "rule:c"), ("c", "rule:b")])),
            vec![cycle(&["b", "c", "b"])]
        );
    }

    #[test]
    fn a_long_chain_is_walked_without_recursion_and_refused_where_it_crosses() {
        let n_rules = 100_000;
        let mut pairs: Vec<(String, String)> = (0..n_rules)
            .map(|index| (format!("r{index:06}"), format!("rule:r{:06}", index + 1)))
            .collect();
        pairs.push((format!("r{n_rules:06}"), "@".to_string()));
        let rules: BTreeMap<String, Check> = pairs
            .iter()
            .map(|(name, text)| (name.clone(), Check::parse(text).unwrap_or(Check::Never)))
            .collect();
        let found = problems(&rules);
        assert_eq!(found.len(), 1, "{:?}", found.first());
        // r(n) has depth 1; each rule above it adds its `rule:` node.
        let crossing = n_rules - MAX_EVALUATION_DEPTH;
        assert_eq!(
            found[0],
            GraphProblem::TooDeep {
                rule: format!("r{crossing:06}"),
                depth: MAX_EVALUATION_DEPTH + 1
            }
        );
    }
}
