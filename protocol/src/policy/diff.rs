//! A structural diff of two normalised policies: what `atlasbridge policy diff` shows.
//!
//! It compares the same JSON that [`Policy::hash`] hashes, so the diff is empty exactly when the
//! hashes are equal. Rules are paired by id; since the first match wins, a change of order is a
//! change of meaning and is reported as a move.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::model::Policy;

/// Everything that differs between two policies (empty when they mean the same).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyDiff {
    /// Root fields (`name`, `policy_version`, `autonomy_mode`, `defaults.*`).
    pub fields: Vec<FieldChange>,
    /// Rules only in the second policy.
    pub added: Vec<RuleEntry>,
    /// Rules only in the first policy.
    pub removed: Vec<RuleEntry>,
    /// Rules in both whose content differs.
    pub changed: Vec<RuleChange>,
    /// Rules in both whose order relative to the other common rules changed.
    pub moved: Vec<RuleMove>,
}

/// One field that differs, with dotted path inside its object (e.g. `action.value`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Dotted path, e.g. `defaults.no_match` or `match.prompt_type`.
    pub field: String,
    /// In the first policy.
    pub before: Value,
    /// In the second policy.
    pub after: Value,
}

/// A rule that was added or removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleEntry {
    /// Rule id.
    pub id: String,
    /// Index in the policy that has it.
    pub index: usize,
    /// The rule's normal form.
    pub rule: Value,
}

/// A rule present in both policies whose content differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleChange {
    /// Rule id.
    pub id: String,
    /// Index in the first policy.
    pub index_before: usize,
    /// Index in the second policy.
    pub index_after: usize,
    /// Field by field.
    pub changes: Vec<FieldChange>,
}

/// A rule whose place among the common rules changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMove {
    /// Rule id.
    pub id: String,
    /// Index in the first policy.
    pub before: usize,
    /// Index in the second policy.
    pub after: usize,
}

impl PolicyDiff {
    /// Whether the two policies mean the same (and so have the same hash).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.moved.is_empty()
    }
}

/// What changes from `a` to `b`.
pub fn diff(a: &Policy, b: &Policy) -> PolicyDiff {
    let (ja, jb) = (a.to_json(), b.to_json());
    let mut out = PolicyDiff::default();

    let without_rules = |v: &Value| match v {
        Value::Object(m) => {
            let mut m = m.clone();
            m.remove("rules");
            Value::Object(m)
        }
        other => other.clone(),
    };
    compare(
        "",
        &without_rules(&ja),
        &without_rules(&jb),
        &mut out.fields,
    );

    let rules_a = rule_list(&ja);
    let rules_b = rule_list(&jb);
    let keyed_a = keyed(&rules_a);
    let keyed_b = keyed(&rules_b);
    let index_b: HashMap<&(String, usize), usize> =
        keyed_b.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let index_a: HashMap<&(String, usize), usize> =
        keyed_a.iter().enumerate().map(|(i, k)| (k, i)).collect();

    // Pairs of (index in a, index in b) for rules in both, in a's order.
    let mut common = Vec::new();
    for (ia, key) in keyed_a.iter().enumerate() {
        match index_b.get(key) {
            Some(&ib) => {
                common.push((ia, ib));
                let mut changes = Vec::new();
                compare("", &rules_a[ia], &rules_b[ib], &mut changes);
                if !changes.is_empty() {
                    out.changed.push(RuleChange {
                        id: key.0.clone(),
                        index_before: ia,
                        index_after: ib,
                        changes,
                    });
                }
            }
            None => out.removed.push(RuleEntry {
                id: key.0.clone(),
                index: ia,
                rule: rules_a[ia].clone(),
            }),
        }
    }
    for (ib, key) in keyed_b.iter().enumerate() {
        if !index_a.contains_key(key) {
            out.added.push(RuleEntry {
                id: key.0.clone(),
                index: ib,
                rule: rules_b[ib].clone(),
            });
        }
    }

    // The rules that kept their relative order are the longest increasing run of b-indexes;
    // every other common rule moved. Insertions and removals alone move nothing.
    let kept = longest_increasing(&common.iter().map(|&(_, ib)| ib).collect::<Vec<_>>());
    for (n, &(ia, ib)) in common.iter().enumerate() {
        if !kept.contains(&n) {
            out.moved.push(RuleMove {
                id: keyed_a[ia].0.clone(),
                before: ia,
                after: ib,
            });
        }
    }
    out
}

fn rule_list(policy: &Value) -> Vec<Value> {
    match policy.get("rules") {
        Some(Value::Array(rules)) => rules.clone(),
        _ => Vec::new(),
    }
}

/// Keys rules by id and occurrence, so that a hand-built policy with a repeated id still
/// diffs completely.
fn keyed(rules: &[Value]) -> Vec<(String, usize)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    rules
        .iter()
        .map(|r| {
            let id = r
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let n = seen.entry(id.clone()).or_insert(0);
            *n += 1;
            (id, *n)
        })
        .collect()
}

/// Objects with the same keys are compared member by member; anything else as a whole.
fn compare(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) if same_keys(ma, mb) => {
            for (key, va) in ma {
                if let Some(vb) = mb.get(key) {
                    let sub = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    compare(&sub, va, vb, out);
                }
            }
        }
        _ => out.push(FieldChange {
            field: path.to_owned(),
            before: a.clone(),
            after: b.clone(),
        }),
    }
}

fn same_keys(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len() && a.keys().all(|k| b.contains_key(k))
}

/// Positions (in `seq`) of one longest strictly increasing subsequence, O(n log n).
fn longest_increasing(seq: &[usize]) -> Vec<usize> {
    // tails[k]: position of the smallest last element of an increasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = vec![None; seq.len()];
    for (i, &x) in seq.iter().enumerate() {
        let k = tails.partition_point(|&t| seq[t] < x);
        if k > 0 {
            prev[i] = Some(tails[k - 1]);
        }
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut run = Vec::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(i) = at {
        run.push(i);
        at = prev[i];
    }
    run.reverse();
    run
}

impl fmt::Display for PolicyDiff {
    /// One line per difference, for people; `--json` serialises the struct instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.fields {
            writeln!(f, "~ {}: {} → {}", c.field, c.before, c.after)?;
        }
        for r in &self.removed {
            writeln!(f, "- rule '{}' (was #{})", r.id, r.index)?;
        }
        for r in &self.added {
            writeln!(f, "+ rule '{}' (at #{})", r.id, r.index)?;
        }
        for r in &self.changed {
            for c in &r.changes {
                writeln!(
                    f,
                    "~ rule '{}': {}: {} → {}",
                    r.id, c.field, c.before, c.after
                )?;
            }
        }
        for m in &self.moved {
            writeln!(f, "↕ rule '{}': #{} → #{}", m.id, m.before, m.after)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Action, AutonomyMode, Rule, builtin_default};

    fn rule(id: &str) -> Rule {
        Rule {
            id: id.to_owned(),
            description: None,
            matcher: Default::default(),
            action: Action::Deny { reason: None },
            max_auto_replies: None,
        }
    }

    fn with_rules(ids: &[&str]) -> Policy {
        let mut p = builtin_default();
        p.rules = ids.iter().map(|id| rule(id)).collect();
        p
    }

    #[test]
    fn identical_is_empty() {
        let p = builtin_default();
        assert!(diff(&p, &p).is_empty());
        assert_eq!(diff(&p, &p).to_string(), "");
    }

    #[test]
    fn root_fields_and_rule_fields() {
        let a = with_rules(&["x"]);
        let mut b = a.clone();
        b.autonomy_mode = AutonomyMode::Full;
        b.defaults.no_match = crate::policy::model::DefaultAction::Deny;
        b.rules[0].action = Action::Deny {
            reason: Some("no".to_owned()),
        };
        b.rules[0].matcher.tool_id = "claude_code".to_owned();
        let d = diff(&a, &b);
        let fields: Vec<&str> = d.fields.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["autonomy_mode", "defaults.no_match"]);
        let changes: Vec<&str> = d.changed[0]
            .changes
            .iter()
            .map(|c| c.field.as_str())
            .collect();
        assert_eq!(changes, ["action.reason", "match.tool_id"]);
        b.rules[0].action = Action::RequireHuman { message: None };
        let d = diff(&a, &b);
        assert!(d.changed[0].changes.iter().any(|c| c.field == "action"));
    }

    #[test]
    fn insertions_move_nothing_but_swaps_do() {
        let d = diff(
            &with_rules(&["a", "b", "c"]),
            &with_rules(&["n", "a", "b", "c"]),
        );
        assert_eq!(d.added.len(), 1);
        assert!(d.moved.is_empty() && d.changed.is_empty() && d.removed.is_empty());

        let d = diff(&with_rules(&["a", "b", "c"]), &with_rules(&["c", "a", "b"]));
        assert_eq!(
            d.moved,
            vec![RuleMove {
                id: "c".to_owned(),
                before: 2,
                after: 0
            }]
        );
        let d = diff(&with_rules(&["a", "b"]), &with_rules(&["b"]));
        assert_eq!(d.removed[0].id, "a");
        assert!(d.moved.is_empty());
        assert!(d.to_string().contains("- rule 'a'"));
    }

    #[test]
    fn lis() {
        assert_eq!(longest_increasing(&[]), Vec::<usize>::new());
        assert_eq!(longest_increasing(&[0, 1, 2]), vec![0, 1, 2]);
        assert_eq!(longest_increasing(&[2, 0, 1]).len(), 2);
        assert_eq!(longest_increasing(&[3, 1, 2, 0, 4]), vec![1, 2, 4]);
    }
}
