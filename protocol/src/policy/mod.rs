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

/// Loads a policy that must stand on its own, such as one uploaded to a registry: an `extends`
/// is reported as an error at its place and **never followed**, so no file is read. Following it
/// would let whoever wrote the text make the loading machine read its own files (and show parts
/// of them in the errors). Otherwise the same checks, normal form and hash as [`load_str`].
pub fn load_self_contained(text: &str, file: &Path) -> Result<LoadedPolicy, LoadError> {
    let checked = validate::check(text, file);
    let mut errors = checked.errors;
    if let Some(extends) = checked.extends
        && !errors.iter().any(|e| e.path == "extends")
    {
        errors.push(PolicyError::new(
            file,
            extends.pos.line,
            extends.pos.column,
            "extends",
            "extends is not allowed here: the policy must be self-contained",
        ));
        errors.sort_by_key(|e| (e.line, e.column));
    }
    match checked.policy {
        Some(policy) if errors.is_empty() => Ok(LoadedPolicy {
            hash: policy.hash(),
            policy,
            sources: vec![file.to_path_buf()],
        }),
        _ => Err(LoadError::new(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_contained_load_never_follows_extends() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.yaml");
        std::fs::write(&base, "policy_version: \"1\"\nname: secret-base\n").unwrap();
        let text = format!(
            "policy_version: \"1\"\nname: child\nextends: {}\n",
            base.display()
        );
        let error = load_self_contained(&text, &dir.path().join("upload.yaml")).unwrap_err();
        assert_eq!(error.errors.len(), 1, "{error}");
        let only = &error.errors[0];
        assert_eq!(
            (only.line, only.column, only.path.as_str()),
            (3, 10, "extends")
        );
        assert!(!error.to_string().contains("secret-base"), "{error}");
        // Without extends: exactly what load_str gives.
        let plain = "policy_version: \"1\"\nname: child\n";
        let loaded = load_self_contained(plain, Path::new("upload.yaml")).unwrap();
        assert_eq!(loaded, load_str(plain, Path::new("upload.yaml")).unwrap());
        // A v0 policy's extends is reported once, by the validator's own rule.
        let v0 = "policy_version: \"0\"\nextends: base.yaml\n";
        let error = load_self_contained(v0, Path::new("upload.yaml")).unwrap_err();
        assert_eq!(error.errors.len(), 1, "{error}");
    }

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
