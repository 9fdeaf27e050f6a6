//! What a runtime reports about its policy (`policy_loaded`): the policy it loaded and its local
//! pins, an agent or a session locked to a policy hash. A local pin always beats the cloud, so
//! the server only records them, to show which runtimes run what.
//!
//! The payload comes from a runtime: every field is bounded before anything is stored.

use serde::Deserialize;
use serde_json::Value;

/// The longest text field kept from a report, in bytes.
pub const MAX_FIELD_BYTES: usize = 512;
/// The most pins one report may carry (a 64 KiB message holds a few hundred).
pub const MAX_PINS: usize = 1000;

/// A runtime's `policy_loaded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    /// The policy's `name`.
    pub name: String,
    /// `"0"` or `"1"`.
    pub policy_version: String,
    /// Its `policy_hash`.
    pub policy_hash: String,
    /// `file` or `builtin`.
    pub source: String,
    /// When the runtime loaded it, as it says.
    pub loaded_at: String,
    /// Its local pins.
    pub pins: Vec<ReportedPin>,
}

/// A local pin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedPin {
    /// `agent` or `session`.
    pub scope: String,
    /// The agent or session id.
    pub id: String,
    /// The pinned policy's hash.
    pub policy_hash: String,
}

#[derive(Deserialize)]
struct Wire {
    name: String,
    #[serde(default)]
    policy_version: String,
    policy_hash: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    loaded_at: String,
    #[serde(default)]
    pins: Vec<ReportedPin>,
}

fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn bounded(field: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_FIELD_BYTES {
        return Err(format!("{field} is longer than {MAX_FIELD_BYTES} bytes"));
    }
    Ok(())
}

impl PolicyReport {
    /// Reads a `policy_loaded` payload; why it is refused otherwise.
    pub fn parse(payload: &Value) -> Result<Self, String> {
        let wire = Wire::deserialize(payload).map_err(|e| e.to_string())?;
        for (field, text) in [
            ("name", &wire.name),
            ("policy_version", &wire.policy_version),
            ("source", &wire.source),
            ("loaded_at", &wire.loaded_at),
        ] {
            bounded(field, text)?;
        }
        if !is_hash(&wire.policy_hash) {
            return Err("policy_hash is not a lowercase SHA-256 hex digest".to_owned());
        }
        if wire.pins.len() > MAX_PINS {
            return Err(format!("more than {MAX_PINS} pins"));
        }
        for pin in &wire.pins {
            if pin.scope != "agent" && pin.scope != "session" {
                return Err(format!("pin scope {:?} is not agent or session", pin.scope));
            }
            bounded("pins → id", &pin.id)?;
            if !is_hash(&pin.policy_hash) {
                return Err("a pin's policy_hash is not a lowercase SHA-256 hex digest".to_owned());
            }
        }
        let mut pins = wire.pins;
        // One pin per scope and id: a repeated one keeps its last value, as a map would.
        pins.reverse();
        let mut seen = std::collections::HashSet::new();
        pins.retain(|pin| seen.insert((pin.scope.clone(), pin.id.clone())));
        pins.reverse();
        Ok(Self {
            name: wire.name,
            policy_version: wire.policy_version,
            policy_hash: wire.policy_hash,
            source: wire.source,
            loaded_at: wire.loaded_at,
            pins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hash(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn a_daemons_report_is_read_and_bounded() {
        let report = PolicyReport::parse(&json!({
            "name": "p", "policy_version": "1", "policy_hash": hash('a'), "source": "file",
            "loaded_at": "2026-11-27T00:00:00Z",
            "pins": [
                {"scope": "agent", "id": "claude", "policy_hash": hash('b')},
                {"scope": "agent", "id": "claude", "policy_hash": hash('c')},
                {"scope": "session", "id": "s1", "policy_hash": hash('b')},
            ],
        }))
        .unwrap();
        assert_eq!(report.pins.len(), 2);
        assert_eq!(report.pins[0].policy_hash, hash('c'));
        for bad in [
            json!({"name": "p", "policy_hash": "nope"}),
            json!({"name": "x".repeat(600), "policy_hash": hash('a')}),
            json!({"name": "p", "policy_hash": hash('a'), "pins": [{"scope": "runtime", "id": "r", "policy_hash": hash('a')}]}),
            json!({"name": "p", "policy_hash": hash('a'), "pins": [{"scope": "agent", "id": "r", "policy_hash": "x"}]}),
            json!("not an object"),
        ] {
            assert!(PolicyReport::parse(&bad).is_err(), "{bad}");
        }
    }
}
