//! Checking a policy for the registry: the protocol crate's loader and validator (the runtimes'
//! own), every problem with its line, column and field, so an editor can mark each line.
//!
//! Two rules go beyond a local load:
//! - a registry policy must be self-contained: `extends` is an error and is never followed
//!   (following it would read files of the server);
//! - its YAML `name` must be the registry name it is stored under, because runtimes report the
//!   YAML's name when they load it, and "which runtimes run what" must match them up.

use std::path::Path;

use atlasbridge_protocol::policy::{
    LoadedPolicy, PolicyError, error::ROOT_PATH, load_self_contained,
};
use serde::Serialize;
use utoipa::ToSchema;

/// The largest policy accepted, in bytes: far above any real policy (1,000 rules take about
/// 200 KB), and a bound on what one request can make the validator do.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// The longest registry name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// What errors are reported against (there is no file on the server).
const LABEL: &str = "policy.yaml";

/// One problem of a policy: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PolicyProblem {
    /// 1-based line (0 when the problem has no place in the text).
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
    /// The path to the value, e.g. `rules → 2 → match → prompt_type → 0`; `(root)` for the
    /// document as a whole.
    pub field: String,
    /// What is wrong and, where it helps, what is expected.
    pub message: String,
}

impl From<&PolicyError> for PolicyProblem {
    fn from(error: &PolicyError) -> Self {
        Self {
            line: error.line,
            column: error.column,
            field: error.path.clone(),
            message: error.message.clone(),
        }
    }
}

/// Whether `name` can name a policy in the registry: 1 to [`MAX_NAME_CHARS`] characters, no
/// control characters, no white space at either end.
pub fn valid_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.chars().any(char::is_control)
        && name.trim() == name
}

/// Loads `yaml` as the runtimes would, refusing `extends`; with `registry_name`, its `name` must
/// be that. Every problem, in text order, when it does not pass.
pub fn check(yaml: &str, registry_name: Option<&str>) -> Result<LoadedPolicy, Vec<PolicyProblem>> {
    if yaml.len() > MAX_POLICY_BYTES {
        return Err(vec![PolicyProblem {
            line: 1,
            column: 1,
            field: ROOT_PATH.to_owned(),
            message: format!("the policy is larger than {} KiB", MAX_POLICY_BYTES / 1024),
        }]);
    }
    let loaded = load_self_contained(yaml, Path::new(LABEL)).map_err(|error| {
        error
            .errors
            .iter()
            .map(PolicyProblem::from)
            .collect::<Vec<_>>()
    })?;
    if let Some(expected) = registry_name
        && loaded.policy.name != expected
    {
        let (line, column) = name_position(yaml);
        return Err(vec![PolicyProblem {
            line,
            column,
            field: "name".to_owned(),
            message: format!(
                "the policy is named '{}' but is a version of '{expected}': a version's name must be its policy's",
                loaded.policy.name
            ),
        }]);
    }
    Ok(loaded)
}

/// Where the top-level `name` value is written, for marking it: the first line that starts with
/// a `name` key in block style; `1:1` when there is none (the name defaulted, or flow style).
fn name_position(yaml: &str) -> (u64, u64) {
    for (index, line) in yaml.lines().enumerate() {
        let rest = ["name:", "\"name\":", "'name':"]
            .iter()
            .find_map(|key| line.strip_prefix(key));
        if let Some(rest) = rest {
            let value_offset = line.len() - rest.len() + (rest.len() - rest.trim_start().len());
            let column = line[..value_offset].chars().count() + 1;
            return (index as u64 + 1, column as u64);
        }
    }
    (1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_comes_with_its_place_and_field() {
        let yaml = "policy_version: \"1\"\nname: p\nrules:\n  - id: a\n    match: {prompt_type: [maybe]}\n    action: {type: auto_reply}\n  - id: a\n    match: {}\n    action: {type: deny}\nbogus: 1\n";
        let problems = check(yaml, None).unwrap_err();
        assert!(problems.len() >= 3, "{problems:?}");
        assert!(
            problems
                .windows(2)
                .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column))
        );
        assert!(problems.iter().all(|p| p.line > 0 && p.column > 0));
        assert!(problems.iter().any(|p| p.field == "bogus"), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.field.contains("prompt_type")),
            "{problems:?}"
        );
    }

    #[test]
    fn extends_is_refused_without_reading_anything() {
        let problems = check(
            "policy_version: \"1\"\nname: p\nextends: /etc/passwd\n",
            Some("p"),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].line, problems[0].field.as_str()),
            (3, "extends")
        );
        assert!(!problems[0].message.contains("root:"), "{problems:?}");
    }

    #[test]
    fn the_name_must_be_the_registry_name_and_is_marked_where_written() {
        let yaml = "policy_version: \"1\"\n# who\nname:   other\n";
        let problems = check(yaml, Some("mine")).unwrap_err();
        assert_eq!(
            (
                problems[0].line,
                problems[0].column,
                problems[0].field.as_str()
            ),
            (3, 9, "name")
        );
        assert_eq!(check(yaml, Some("other")).unwrap().policy.name, "other");
        // No name: the default, `default`, placed at the start.
        let problems = check("policy_version: \"1\"\n", Some("mine")).unwrap_err();
        assert_eq!((problems[0].line, problems[0].column), (1, 1));
    }

    #[test]
    fn oversized_policies_and_odd_names_are_refused() {
        let big = format!("policy_version: \"1\"\n#{}\n", "x".repeat(MAX_POLICY_BYTES));
        assert_eq!(check(&big, None).unwrap_err().len(), 1);
        assert!(valid_name("team-a policy.v2"));
        for bad in ["", " lead", "trail ", "tab\there", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
