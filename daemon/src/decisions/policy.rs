//! The active policy: loaded whole or not at all, swapped atomically, never half-loaded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use atlasbridge_protocol::policy::evaluate::Evaluator;
use atlasbridge_protocol::policy::{LoadError, PolicyError, builtin_default, load_file};

/// A policy ready to decide.
#[derive(Debug)]
pub struct ActivePolicy {
    /// The prepared policy.
    pub evaluator: Evaluator,
    /// Its hash.
    pub hash: String,
    /// The file it came from; `None` for the built-in default.
    pub source: Option<PathBuf>,
    /// When it became active.
    pub loaded_at: String,
}

impl ActivePolicy {
    /// The first 16 hex of the hash.
    pub fn short_hash(&self) -> &str {
        self.hash.get(..16).unwrap_or(&self.hash)
    }
}

/// Why a policy did not become active.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file does not load; every error is listed.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    /// A pattern that passed validation does not compile (a bug, never the file's fault).
    #[error("the policy validated but cannot be prepared: {0}")]
    Prepare(String),
}

impl PolicyLoadError {
    /// The errors, as `policy validate --json` shows them.
    pub fn errors(&self) -> Vec<PolicyError> {
        match self {
            Self::Invalid(e) => e.errors.clone(),
            Self::Prepare(message) => vec![PolicyError {
                file: PathBuf::new(),
                line: 0,
                column: 0,
                path: String::new(),
                message: message.clone(),
            }],
        }
    }
}

/// The active policy and what the last failed load said.
#[derive(Debug, Default)]
pub struct PolicyState {
    active: RwLock<Option<Arc<ActivePolicy>>>,
    last_error: RwLock<Option<Vec<PolicyError>>>,
}

impl PolicyState {
    /// The active policy, if one loaded.
    pub fn active(&self) -> Option<Arc<ActivePolicy>> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The errors of the last load that failed since the active policy loaded.
    pub fn last_error(&self) -> Option<Vec<PolicyError>> {
        self.last_error
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads `file` (or the built-in default) and makes it active; on failure the active policy
    /// stays as it was and the errors are kept for `policy.status`. Blocking (reads files).
    pub fn load(&self, file: Option<&Path>) -> Result<Arc<ActivePolicy>, PolicyLoadError> {
        match prepare(file) {
            Ok(policy) => {
                let policy = Arc::new(policy);
                *self.active.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&policy));
                *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(policy)
            }
            Err(error) => {
                *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = Some(error.errors());
                Err(error)
            }
        }
    }
}

fn prepare(file: Option<&Path>) -> Result<ActivePolicy, PolicyLoadError> {
    let (policy, source) = match file {
        Some(path) => (load_file(path)?.policy, Some(path.to_path_buf())),
        None => (builtin_default(), None),
    };
    let hash = policy.hash();
    let evaluator = Evaluator::new(policy).map_err(|e| PolicyLoadError::Prepare(e.to_string()))?;
    Ok(ActivePolicy {
        evaluator,
        hash,
        source,
        loaded_at: crate::clock::now_rfc3339(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_keeps_the_active_policy_and_reports_why() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "policy_version: \"1\"\nname: good\nrules: []\n").unwrap();
        let state = PolicyState::default();
        let first = state.load(Some(&good)).unwrap();
        std::fs::write(&good, "policy_version: 1\nname: [\n").unwrap();
        assert!(state.load(Some(&good)).is_err());
        assert_eq!(state.active().unwrap().hash, first.hash);
        assert!(!state.last_error().unwrap().is_empty());
        assert_eq!(
            state.load(None).unwrap().source,
            None,
            "the built-in default loads"
        );
        assert!(state.last_error().is_none());
    }
}
