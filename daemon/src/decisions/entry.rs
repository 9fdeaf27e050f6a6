//! One decision as the trace stores it: the v2 entry while `decision_trace_v2` is on, the v1
//! record while it is off. `decision.evaluate` and `decision.record` both write through here, so
//! the two formats and the choice between them live in one place.

use atlasbridge_protocol::ErrorObject;
use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::trace::{EntryBody, EntryBodyBuilder, TRACE_VERSION};
use serde_json::{Map, Value, json};

use crate::ipc::handlers::append_error;
use crate::state::Daemon;

/// The fields of one decision (`""` where unknown).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub session_id: &'a str,
    pub agent_id: &'a str,
    pub prompt_id: &'a str,
    pub prompt_type: &'a str,
    pub policy_name: &'a str,
    pub policy_version: &'a str,
    pub policy_hash: &'a str,
    pub matched_rule: &'a str,
    pub autonomy_mode: &'a str,
    pub policy_action: &'a str,
    pub action_taken: &'a str,
    pub reply_value: &'a str,
    pub confidence: Confidence,
    pub risk_level: &'a str,
    pub risk_reasons: &'a [String],
    pub escalation_status: &'a str,
    pub human_actor: &'a str,
    pub ci_status: &'a str,
    pub branch: &'a str,
    pub idempotency_key: &'a str,
    pub replay_safe: bool,
    /// Kept by the v1 format only (v2 entries carry the policy fields instead).
    pub explanation: &'a str,
}

/// Where the decision was stored: the v2 entry's id, seq and hash; all `None` for v1.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub entry_id: Option<String>,
    pub seq: Option<u64>,
    pub entry_hash: Option<String>,
}

/// Appends the decision and returns once it is durable (as the configured durability defines).
pub async fn append(daemon: &Daemon, entry: &Entry<'_>) -> Result<Stored, ErrorObject> {
    let stores = daemon.stores();
    if daemon
        .settings()
        .features
        .is_enabled(Feature::DecisionTraceV2)
    {
        let receipt = stores
            .trace
            .append(v2_body(entry))
            .await
            .map_err(append_error)?;
        Ok(Stored {
            entry_id: Some(receipt.entry_id),
            seq: Some(receipt.seq),
            entry_hash: Some(receipt.entry_hash),
        })
    } else {
        stores
            .v1
            .append(v1_record(entry))
            .await
            .map_err(append_error)?;
        Ok(Stored::default())
    }
}

fn v2_body(e: &Entry<'_>) -> EntryBody {
    let mut body = EntryBodyBuilder::with_capacity(22);
    body.u64("trace_version", TRACE_VERSION)
        .str("session_id", e.session_id)
        .str("agent_id", e.agent_id)
        .str("prompt_id", e.prompt_id)
        .str("prompt_type", e.prompt_type)
        .str("policy_name", e.policy_name)
        .str("policy_version", e.policy_version)
        .str("policy_hash", e.policy_hash)
        .str("matched_rule", e.matched_rule)
        .str("autonomy_mode", e.autonomy_mode)
        .str("policy_action", e.policy_action)
        .str("action_taken", e.action_taken)
        .str("reply_value", e.reply_value)
        .str("confidence", e.confidence.name())
        .str("risk_level", e.risk_level)
        .strs("risk_reasons", e.risk_reasons)
        .str("escalation_status", e.escalation_status)
        .str("human_actor", e.human_actor)
        .str("ci_status_snapshot", e.ci_status)
        .str("branch", e.branch)
        .str("idempotency_key", e.idempotency_key)
        .bool("replay_safe", e.replay_safe);
    body.finish()
}

/// The v1 record of `policy-language.md` § Trace v1.
fn v1_record(e: &Entry<'_>) -> Map<String, Value> {
    let matched_rule_id = if e.matched_rule.is_empty() {
        Value::Null
    } else {
        Value::String(e.matched_rule.to_owned())
    };
    object(json!({
        // ISO 8601 with an offset, as v1 readers expect.
        "timestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
        "idempotency_key": e.idempotency_key,
        "prompt_id": e.prompt_id,
        "session_id": e.session_id,
        "policy_hash": e.policy_hash,
        "matched_rule_id": matched_rule_id,
        "action_type": e.action_taken,
        "action_value": e.reply_value,
        "confidence": e.confidence.name(),
        "prompt_type": e.prompt_type,
        "autonomy_mode": e.autonomy_mode,
        "explanation": e.explanation,
    }))
}

/// An optional field as the entry stores it: `""` when absent.
pub fn or_empty(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
