//! `policy migrate`: a v0 policy becomes v1 with everything else — comments, order, quoting,
//! layout — kept as written.
//!
//! v1 is a superset of v0 with the same meaning for every v0 key, so the migration is one edit:
//! the `policy_version` value. The result is loaded and compared with the original by meaning
//! (everything but the version must be equal), so a migration can never change a decision.

use std::path::Path;

use super::{LoadError, PolicyVersion, load_str};

/// Why a policy was not migrated.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The original does not load.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    /// It is v1 already.
    #[error("{0} is already policy_version \"1\"")]
    AlreadyV1(String),
    /// No top-level `policy_version:` line could be found to rewrite (e.g. flow style).
    #[error("cannot find a top-level `policy_version:` line to rewrite in {0}")]
    NoVersionLine(String),
    /// The rewritten text does not mean the same (a bug; nothing is written).
    #[error("the migrated policy would not mean the same as the original; nothing was written")]
    MeaningChanged,
}

/// The v1 text of the v0 policy `text` (read from `file`, which names it in errors and anchors
/// relative paths).
pub fn v0_to_v1(text: &str, file: &Path) -> Result<String, MigrateError> {
    let original = load_str(text, file)?;
    if original.policy.policy_version == PolicyVersion::V1 {
        return Err(MigrateError::AlreadyV1(file.display().to_string()));
    }
    let mut out = String::with_capacity(text.len());
    let mut rewritten = false;
    for line in text.split_inclusive('\n') {
        if !rewritten && let Some(new) = rewrite_version_line(line) {
            out.push_str(&new);
            rewritten = true;
        } else {
            out.push_str(line);
        }
    }
    if !rewritten {
        return Err(MigrateError::NoVersionLine(file.display().to_string()));
    }
    // The edit cannot break a file that loaded; if it did, it is a bug, not the user's error.
    let migrated = load_str(&out, file).map_err(|_| MigrateError::MeaningChanged)?;
    let mut as_v0 = migrated.policy.clone();
    as_v0.policy_version = PolicyVersion::V0;
    if as_v0 != original.policy || migrated.policy.policy_version != PolicyVersion::V1 {
        return Err(MigrateError::MeaningChanged);
    }
    Ok(out)
}

/// `policy_version: "0"` (any quoting, trailing comment kept) → `policy_version: "1"`, for a line
/// at column 0.
fn rewrite_version_line(line: &str) -> Option<String> {
    let rest = line.strip_prefix("policy_version")?;
    let colon = rest.find(':')?;
    if !rest[..colon].trim().is_empty() {
        return None;
    }
    let value_and_more = &rest[colon + 1..];
    let trimmed = value_and_more.trim_start();
    let indent = &value_and_more[..value_and_more.len() - trimmed.len()];
    let (old, tail) = ["\"0\"", "'0'", "0"]
        .iter()
        .find_map(|v| trimmed.strip_prefix(v).map(|tail| (*v, tail)))?;
    // `0` must be the whole value, not the start of `01` or `0.5`.
    if tail
        .chars()
        .next()
        .is_some_and(|c| !c.is_whitespace() && c != '#')
    {
        return None;
    }
    let new = match old {
        "'0'" => "'1'",
        _ => "\"1\"",
    };
    Some(format!("policy_version:{indent}{new}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: &str = "# team policy\npolicy_version: \"0\"   # old\nname: t\nrules:\n  - id: a # first\n    match: {prompt_type: [yes_no]}\n    action: {type: auto_reply, value: \"y\"}\n";

    #[test]
    fn only_the_version_changes_and_comments_stay() {
        let out = v0_to_v1(V0, Path::new("p.yaml")).unwrap();
        assert_eq!(out, V0.replace("\"0\"   # old", "\"1\"   # old"));
        let loaded = load_str(&out, Path::new("p.yaml")).unwrap();
        assert_eq!(loaded.policy.policy_version, PolicyVersion::V1);
    }

    #[test]
    fn every_v0_vector_migrates_to_the_same_meaning() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/policies");
        for name in ["v0-basic.yaml", "v0-guarded.yaml"] {
            let file = dir.join(name);
            let text = std::fs::read_to_string(&file).unwrap();
            let out = v0_to_v1(&text, &file).unwrap();
            assert_eq!(out.lines().count(), text.lines().count(), "{name}");
        }
    }

    #[test]
    fn single_quotes_are_kept_and_v1_is_refused() {
        let text = V0.replace("\"0\"", "'0'");
        assert!(
            v0_to_v1(&text, Path::new("p.yaml"))
                .unwrap()
                .contains("policy_version: '1'")
        );
        let v1 = V0.replace("\"0\"", "\"1\"");
        assert!(matches!(
            v0_to_v1(&v1, Path::new("p.yaml")),
            Err(MigrateError::AlreadyV1(_))
        ));
        assert!(matches!(
            v0_to_v1("policy_version: 0\n", Path::new("p.yaml")),
            Err(MigrateError::Invalid(_))
        ));
    }
}
