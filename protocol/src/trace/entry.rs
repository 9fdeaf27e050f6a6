//! Entries of a hash chain (the decision trace and the audit log) and their stored layout.
//!
//! `entry_hash = hex(SHA-256(JCS(entry without "entry_hash")))`, and each entry is stored as
//! exactly those canonical bytes with `,"entry_hash":"<hex>"` inserted before the final `}`:
//! the hash is the last member, so a verifier can hash the stored bytes as they are.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::write_object;
use crate::hash::sha256_hex;

/// The trace schema version written by this crate.
pub const TRACE_VERSION: u64 = 2;

/// `prev_hash` of the entry at `seq` 0.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The member that carries the hash; always last in the stored layout.
pub const ENTRY_HASH_KEY: &str = "entry_hash";

/// An entry ready to be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    /// The stored line, ending in `\n`.
    pub line: Vec<u8>,
    /// Its `entry_hash`.
    pub entry_hash: String,
}

/// Hashes `body` (every member but `entry_hash`, which must be absent) and lays it out for
/// storage.
pub fn seal(body: &Map<String, Value>) -> SealedEntry {
    debug_assert!(!body.contains_key(ENTRY_HASH_KEY));
    let mut line = Vec::with_capacity(1024);
    write_object(body, &mut line);
    let entry_hash = sha256_hex(&line);
    // Replace the closing brace by the hash member and close again.
    line.pop();
    if body.is_empty() {
        line.extend_from_slice(b"\"entry_hash\":\"");
    } else {
        line.extend_from_slice(b",\"entry_hash\":\"");
    }
    line.extend_from_slice(entry_hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    SealedEntry { line, entry_hash }
}

/// One decision trace v2 entry, with the fields of `trace-format.md`.
///
/// Unknown members are kept in `extra` (a later version may add fields; the hash covers
/// whatever is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Always 2.
    pub trace_version: u64,
    /// Position in the chain, from 0.
    pub seq: u64,
    /// UUID v7.
    pub entry_id: String,
    /// RFC 3339 UTC with microseconds.
    pub timestamp: String,
    /// Who asked.
    pub session_id: String,
    /// The agent.
    pub agent_id: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// `yes_no`, `confirm_enter`, `multiple_choice`, `free_text`.
    pub prompt_type: String,
    /// The deciding policy's name.
    pub policy_name: String,
    /// Its version string.
    pub policy_version: String,
    /// Its hash.
    pub policy_hash: String,
    /// Rule id, or `""` when a default applied.
    pub matched_rule: String,
    /// `off`/`assist`/`full`.
    #[serde(default)]
    pub autonomy_mode: String,
    /// What the policy decided.
    #[serde(default)]
    pub policy_action: String,
    /// What the agent was told.
    pub action_taken: String,
    /// The value injected, `""` if none.
    pub reply_value: String,
    /// `high`/`medium`/`low`.
    pub confidence: String,
    /// `none`..`critical`, or `""` with the classifier off.
    pub risk_level: String,
    /// The classifier's reasons.
    pub risk_reasons: Vec<String>,
    /// Context, `""` when unknown.
    pub escalation_status: String,
    /// Context, `""` when unknown.
    pub human_actor: String,
    /// Context, `""` when unknown.
    pub ci_status_snapshot: String,
    /// Context, `""` when unknown.
    pub branch: String,
    /// Context, `""` when unknown.
    pub idempotency_key: String,
    /// Whether replaying is safe.
    pub replay_safe: bool,
    /// `entry_hash` of `seq - 1`.
    pub prev_hash: String,
    /// This entry's hash.
    pub entry_hash: String,
    /// Members this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_is_the_last_member_of_canonical_bytes() {
        let body = json!({"seq": 0, "b": "x", "a": [1]});
        let sealed = seal(body.as_object().unwrap());
        let text = std::str::from_utf8(&sealed.line).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"a\":[1],\"b\":\"x\",\"seq\":0,\"entry_hash\":\"{}\"}}\n",
                sealed.entry_hash
            )
        );
        assert_eq!(
            sealed.entry_hash,
            sha256_hex(br#"{"a":[1],"b":"x","seq":0}"#)
        );
    }

    #[test]
    fn an_empty_body_still_seals() {
        let sealed = seal(&Map::new());
        assert_eq!(sealed.entry_hash, sha256_hex(b"{}"));
        assert!(sealed.line.starts_with(b"{\"entry_hash\":\""));
    }
}
