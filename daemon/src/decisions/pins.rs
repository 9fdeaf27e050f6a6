//! Policy pinning: every policy the daemon loads is kept by hash under `<data_dir>/policies/`,
//! and a pin locks an agent or a session to one of those versions whatever the active policy
//! becomes. Pins persist in `<data_dir>/policies/pins.json`; a session pin beats an agent pin.
//!
//! A stored version is the policy's normal form as JSON, named by its hash, and re-checked
//! against the name when read, so a version file edited on disk is refused, not obeyed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use atlasbridge_protocol::policy::Policy;
use atlasbridge_protocol::policy::evaluate::Evaluator;
use serde::{Deserialize, Serialize};

use super::policy::ActivePolicy;

/// What a pin applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every session of one agent.
    Agent,
    /// One session.
    Session,
}

/// Why a pin or a stored version could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// No stored version has this hash.
    #[error(
        "no stored policy version has hash {0}; pin a policy file, or one the daemon has loaded"
    )]
    UnknownVersion(String),
    /// The stored file does not hold the policy its name says.
    #[error("the stored policy version {0} is damaged (its content does not hash to its name)")]
    Damaged(String),
    /// Reading or writing the store failed.
    #[error("policy store: {0}")]
    Io(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PinFile {
    #[serde(default)]
    agents: BTreeMap<String, String>,
    #[serde(default)]
    sessions: BTreeMap<String, String>,
}

/// A stored version, as `policy.versions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// Its hash.
    pub policy_hash: String,
    /// Its name.
    pub name: String,
    /// Pins that hold it.
    pub pinned_by: Vec<String>,
}

/// The store and the pins.
#[derive(Debug)]
pub struct PinStore {
    dir: PathBuf,
    pins: Mutex<PinFile>,
    prepared: Mutex<HashMap<String, Arc<ActivePolicy>>>,
}

impl PinStore {
    /// Opens the store in `<data_dir>/policies/`, reading the pins. A damaged pins file is an
    /// error: starting without the pins would silently unpin every agent.
    pub fn open(data_dir: &Path) -> Result<Self, PinError> {
        let dir = data_dir.join("policies");
        let pins = match std::fs::read(dir.join("pins.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| PinError::Io(format!("{}: {e}", dir.join("pins.json").display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PinFile::default(),
            Err(e) => return Err(PinError::Io(e.to_string())),
        };
        Ok(Self {
            dir,
            pins: Mutex::new(pins),
            prepared: Mutex::new(HashMap::new()),
        })
    }

    fn version_path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.json"))
    }

    /// Keeps `active`'s policy as a version (once per hash).
    pub fn keep(&self, active: &Arc<ActivePolicy>) -> Result<(), PinError> {
        let path = self.version_path(&active.hash);
        if !path.exists() {
            let json = serde_json::to_vec_pretty(active.evaluator.policy())
                .map_err(|e| PinError::Io(e.to_string()))?;
            crate::files::write_atomic(&path, &json).map_err(|e| PinError::Io(e.to_string()))?;
        }
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(active.hash.clone(), Arc::clone(active));
        Ok(())
    }

    /// The stored version with `hash`, ready to evaluate.
    pub fn version(&self, hash: &str) -> Result<Arc<ActivePolicy>, PinError> {
        if let Some(ready) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
        {
            return Ok(Arc::clone(ready));
        }
        let valid_name = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_name {
            return Err(PinError::UnknownVersion(hash.to_owned()));
        }
        let bytes = match std::fs::read(self.version_path(hash)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PinError::UnknownVersion(hash.to_owned()));
            }
            Err(e) => return Err(PinError::Io(e.to_string())),
        };
        let policy: Policy =
            serde_json::from_slice(&bytes).map_err(|_| PinError::Damaged(hash.to_owned()))?;
        if policy.hash() != hash {
            return Err(PinError::Damaged(hash.to_owned()));
        }
        let evaluator = Evaluator::new(policy).map_err(|_| PinError::Damaged(hash.to_owned()))?;
        let ready = Arc::new(ActivePolicy {
            evaluator,
            hash: hash.to_owned(),
            source: Some(self.version_path(hash)),
            loaded_at: crate::clock::now_rfc3339(),
        });
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash.to_owned(), Arc::clone(&ready));
        Ok(ready)
    }

    /// Pins `id` to `hash` (which must be stored); returns the previous pin.
    pub fn pin(&self, scope: Scope, id: &str, hash: &str) -> Result<Option<String>, PinError> {
        self.version(hash)?;
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let previous = map_of(&mut pins, scope).insert(id.to_owned(), hash.to_owned());
        self.persist(&pins)?;
        Ok(previous)
    }

    /// Removes the pin of `id`; returns what it was.
    pub fn unpin(&self, scope: Scope, id: &str) -> Result<Option<String>, PinError> {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let previous = map_of(&mut pins, scope).remove(id);
        if previous.is_some() {
            self.persist(&pins)?;
        }
        Ok(previous)
    }

    /// The pin that decides for this session and agent: the session's, else the agent's.
    pub fn pinned(&self, session: &str, agent: Option<&str>) -> Option<(Scope, String)> {
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hash) = pins.sessions.get(session) {
            return Some((Scope::Session, hash.clone()));
        }
        agent
            .and_then(|a| pins.agents.get(a))
            .map(|hash| (Scope::Agent, hash.clone()))
    }

    /// Every pin: `(scope, id, hash)`.
    pub fn list(&self) -> Vec<(Scope, String, String)> {
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let agents = pins
            .agents
            .iter()
            .map(|(id, h)| (Scope::Agent, id.clone(), h.clone()));
        let sessions = pins
            .sessions
            .iter()
            .map(|(id, h)| (Scope::Session, id.clone(), h.clone()));
        agents.chain(sessions).collect()
    }

    /// Every stored version, with the pins that hold it.
    pub fn versions(&self) -> Result<Vec<Version>, PinError> {
        let pins = self.list();
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(PinError::Io(e.to_string())),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hash) = name.strip_suffix(".json").filter(|h| h.len() == 64) else {
                continue;
            };
            let name = self
                .version(hash)
                .map_or_else(|e| format!("({e})"), |v| v.evaluator.policy().name.clone());
            let pinned_by = pins
                .iter()
                .filter(|(_, _, h)| h == hash)
                .map(|(scope, id, _)| format!("{}:{id}", scope_name(*scope)))
                .collect();
            out.push(Version {
                policy_hash: hash.to_owned(),
                name,
                pinned_by,
            });
        }
        out.sort_by(|a, b| a.policy_hash.cmp(&b.policy_hash));
        Ok(out)
    }

    fn persist(&self, pins: &PinFile) -> Result<(), PinError> {
        let json = serde_json::to_vec_pretty(pins).map_err(|e| PinError::Io(e.to_string()))?;
        crate::files::write_atomic(&self.dir.join("pins.json"), &json)
            .map_err(|e| PinError::Io(e.to_string()))
    }
}

fn map_of(pins: &mut PinFile, scope: Scope) -> &mut BTreeMap<String, String> {
    match scope {
        Scope::Agent => &mut pins.agents,
        Scope::Session => &mut pins.sessions,
    }
}

/// `agent` or `session`.
pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Agent => "agent",
        Scope::Session => "session",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::policy::PolicyState;

    fn loaded(dir: &Path, name: &str) -> Arc<ActivePolicy> {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!("policy_version: \"1\"\nname: {name}\nrules: []\n"),
        )
        .unwrap();
        PolicyState::default().load(Some(&file)).unwrap()
    }

    #[test]
    fn pins_persist_and_a_session_pin_beats_an_agent_pin() {
        let tmp = tempfile::tempdir().unwrap();
        let a = loaded(tmp.path(), "a");
        let b = loaded(tmp.path(), "b");
        let store = PinStore::open(tmp.path()).unwrap();
        store.keep(&a).unwrap();
        store.keep(&b).unwrap();
        store.pin(Scope::Agent, "claude", &a.hash).unwrap();
        store.pin(Scope::Session, "s1", &b.hash).unwrap();
        assert_eq!(
            store.pinned("s1", Some("claude")),
            Some((Scope::Session, b.hash.clone()))
        );
        assert_eq!(
            store.pinned("s2", Some("claude")),
            Some((Scope::Agent, a.hash.clone()))
        );
        assert_eq!(store.pinned("s2", None), None);

        let reopened = PinStore::open(tmp.path()).unwrap();
        assert_eq!(
            reopened.pinned("s1", None),
            Some((Scope::Session, b.hash.clone()))
        );
        assert_eq!(
            reopened.version(&a.hash).unwrap().evaluator.policy().name,
            "a"
        );
        assert_eq!(reopened.versions().unwrap().len(), 2);
        assert_eq!(
            reopened.unpin(Scope::Session, "s1").unwrap(),
            Some(b.hash.clone())
        );
        assert_eq!(
            reopened.pinned("s1", Some("claude")),
            Some((Scope::Agent, a.hash.clone()))
        );
    }

    #[test]
    fn unknown_and_damaged_versions_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = loaded(tmp.path(), "a");
        let store = PinStore::open(tmp.path()).unwrap();
        assert!(matches!(
            store.pin(Scope::Agent, "x", &"0".repeat(64)),
            Err(PinError::UnknownVersion(_))
        ));
        assert!(matches!(
            store.pin(Scope::Agent, "x", "../../etc/passwd"),
            Err(PinError::UnknownVersion(_))
        ));
        store.keep(&a).unwrap();
        let path = tmp.path().join("policies").join(format!("{}.json", a.hash));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"a\"", "\"evil\"");
        std::fs::write(&path, text).unwrap();
        let fresh = PinStore::open(tmp.path()).unwrap();
        assert!(matches!(fresh.version(&a.hash), Err(PinError::Damaged(_))));
    }
}
