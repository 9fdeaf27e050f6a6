//! The policy language (v0 and v1): loading and checking a policy file, its normal form, its
//! hash, and the structural diff of two policies. Evaluating events against a policy builds on
//! [`Policy`] and [`pattern::compile`].
//!
//! - [`model`]: the normalised [`Policy`], [`Policy::hash`] and [`builtin_default`].
//! - [`load_file`] / [`load_str`]: YAML → [`LoadedPolicy`], or every problem as a [`LoadError`].
//! - [`diff()`]: what changed between two policies, in terms of meaning.
//! - [`pattern`]: which `contains` regexes are accepted and how they are compiled.

pub mod diff;
pub mod error;
pub mod evaluate;
mod extends;
pub mod migrate;
pub mod model;
pub mod pattern;
mod validate;
mod yaml;

use std::path::{Path, PathBuf};

pub use diff::{FieldChange, PolicyDiff, RuleChange, RuleEntry, RuleMove, diff};
pub use error::{LoadError, PolicyError};
pub use extends::MAX_CHAIN;
pub use model::{
    Action, AutonomyMode, Contains, Criteria, DefaultAction, Defaults, Policy, PolicyVersion,
    PromptTypeFilter, ReplyConstraints, Rule, SHORT_HASH_LEN, builtin_default,
};
pub use pattern::{MAX_PATTERN_CHARS, PatternError};
pub use validate::{MAX_REPLY_CHARS, MAX_RULE_ID_CHARS, V1_ONLY_KEYS, is_valid_rule_id};

/// A policy that loaded: its normal form, the form's hash, and the files it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedPolicy {
    /// With `extends` merged and every default filled in.
    pub policy: Policy,
    /// [`Policy::hash`] of `policy`.
    pub hash: String,
    /// The file asked for, then each base it extends, in chain order; a reload should watch
    /// all of them.
    pub sources: Vec<PathBuf>,
}

impl LoadedPolicy {
    /// The first 16 hex of [`LoadedPolicy::hash`].
    pub fn short_hash(&self) -> &str {
        self.hash.get(..SHORT_HASH_LEN).unwrap_or(&self.hash)
    }
}

/// Loads the policy file at `path` (`~` expanded) and every base it extends.
pub fn load_file(path: &Path) -> Result<LoadedPolicy, LoadError> {
    let path = match path.to_str() {
        Some(text) => extends::expand_home(text),
        None => path.to_path_buf(),
    };
    let text = extends::read_policy_text(&path).map_err(|e| LoadError::new(vec![e]))?;
    load_str(&text, &path)
}

/// Loads a policy from `text`, reporting problems against `file` and resolving `extends`
/// relative to `file`'s directory (`file` itself need not exist).
pub fn load_str(text: &str, file: &Path) -> Result<LoadedPolicy, LoadError> {
    let resolved = extends::resolve(text, file).map_err(LoadError::new)?;
    Ok(LoadedPolicy {
        hash: resolved.policy.hash(),
        policy: resolved.policy,
        sources: resolved.sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_str_fills_defaults_and_hashes() {
        let loaded = load_str("policy_version: \"0\"\n", Path::new("mem.yaml")).unwrap();
        assert_eq!(loaded.policy.name, "default");
        assert_eq!(loaded.policy.autonomy_mode, AutonomyMode::Assist);
        assert_eq!(loaded.hash, loaded.policy.hash());
        assert_eq!(loaded.short_hash(), &loaded.hash[..16]);
        assert_eq!(loaded.sources, vec![PathBuf::from("mem.yaml")]);
    }

    #[test]
    fn extends_merges_and_detects_cycles() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.yaml");
        std::fs::write(
            &base,
            "policy_version: \"1\"\nrules:\n  - {id: a, match: {}, action: {type: deny}}\n  \
             - {id: b, match: {}, action: {type: deny}}\ndefaults: {no_match: deny}\n",
        )
        .unwrap();
        let child = "policy_version: \"1\"\nextends: base.yaml\nrules:\n  - {id: b, match: {}, \
                     action: {type: require_human}}\n";
        let loaded = load_str(child, &dir.path().join("child.yaml")).unwrap();
        let ids: Vec<&str> = loaded.policy.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(loaded.policy.defaults.no_match, DefaultAction::Deny);
        assert_eq!(loaded.sources.len(), 2);

        // The child's own non-default defaults win.
        let child2 = format!("{child}defaults: {{low_confidence: deny}}\n");
        let loaded = load_str(&child2, &dir.path().join("child.yaml")).unwrap();
        assert_eq!(loaded.policy.defaults.no_match, DefaultAction::RequireHuman);

        // A file extending itself.
        let me = dir.path().join("me.yaml");
        std::fs::write(&me, "policy_version: \"1\"\nextends: ./me.yaml\n").unwrap();
        let err = load_file(&me).unwrap_err();
        assert!(err.to_string().contains("circular extends"), "{err}");

        // A v0 base.
        std::fs::write(&base, "policy_version: \"0\"\n").unwrap();
        let err = load_str(child, &dir.path().join("child.yaml")).unwrap_err();
        assert!(err.to_string().contains("version \"1\" base"), "{err}");

        // A missing base, and a v0 child may not extend at all.
        let err = load_str(
            "policy_version: \"1\"\nextends: nope.yaml\n",
            &dir.path().join("c.yaml"),
        )
        .unwrap_err();
        assert_eq!(err.errors[0].line, 2);
        assert!(err.to_string().contains("cannot load base policy"), "{err}");
        let err = load_str(
            "policy_version: \"0\"\nextends: base.yaml\n",
            Path::new("c.yaml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("extends needs policy_version"),
            "{err}"
        );
    }
}
