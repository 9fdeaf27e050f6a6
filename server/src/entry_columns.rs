//! The fields of a received entry that people search by, taken out of its JSON at ingest into
//! columns of their own (see `migrations/0003_decision_columns.sql` for the indexes), and the
//! summary of a decision that the live stream carries.

use std::time::SystemTime;

use atlasbridge_protocol::cloud::messages::Stream;
use serde_json::{Value, json};

/// Longest value extracted; longer ones are left out (NULL), because an index entry has a size
/// limit and a runtime must not be able to make its own batches fail.
pub const MAX_EXTRACTED_BYTES: usize = 512;

/// What is searched by, of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchColumns {
    /// The entry's `timestamp`, or when the server received it if that does not parse.
    pub occurred_at: SystemTime,
    /// Decisions: `session_id`.
    pub session_id: Option<String>,
    /// Decisions: `agent_id`.
    pub agent_id: Option<String>,
    /// Decisions: `action_taken`, what the agent was told.
    pub action: Option<String>,
    /// Decisions: `risk_level`.
    pub risk: Option<String>,
    /// Audit events: `event_type`.
    pub event_type: Option<String>,
}

fn text(entry: &Value, name: &str) -> Option<String> {
    entry
        .get(name)
        .and_then(Value::as_str)
        .filter(|value| value.len() <= MAX_EXTRACTED_BYTES)
        .map(str::to_owned)
}

/// The time of an entry: RFC 3339 as written by runtimes.
pub fn parse_time(value: &str) -> Option<SystemTime> {
    value
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
}

/// Extracts the columns of an entry of `stream`.
pub fn search_columns(stream: Stream, entry: &Value, received: SystemTime) -> SearchColumns {
    let occurred_at = entry
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .unwrap_or(received);
    let decision = stream == Stream::Trace;
    let of_decision = |name| if decision { text(entry, name) } else { None };
    SearchColumns {
        occurred_at,
        session_id: of_decision("session_id"),
        agent_id: of_decision("agent_id"),
        action: of_decision("action_taken"),
        risk: of_decision("risk_level"),
        event_type: if decision {
            None
        } else {
            text(entry, "event_type")
        },
    }
}

/// RFC 3339 UTC with microseconds, as entries write times.
pub fn format_time(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

/// What the live stream says of a stored decision: who, when and what, never the whole entry.
pub fn decision_summary(
    runtime_id: &str,
    seq: u64,
    entry_id: &str,
    hash_ok: bool,
    columns: &SearchColumns,
) -> Value {
    json!({
        "runtime_id": runtime_id,
        "seq": seq,
        "entry_id": entry_id,
        "occurred_at": format_time(columns.occurred_at),
        "session_id": columns.session_id,
        "agent_id": columns.agent_id,
        "action": columns.action,
        "risk": columns.risk,
        "hash_ok": hash_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_audit_events_give_their_own_columns() {
        let received = SystemTime::UNIX_EPOCH;
        let decision = json!({
            "timestamp": "2026-11-27T03:00:00.123456Z",
            "session_id": "s1", "agent_id": "a1", "action_taken": "deny", "risk_level": "high",
            "event_type": "ignored",
        });
        let columns = search_columns(Stream::Trace, &decision, received);
        assert_eq!(
            format_time(columns.occurred_at),
            "2026-11-27T03:00:00.123456Z"
        );
        assert_eq!(columns.session_id.as_deref(), Some("s1"));
        assert_eq!(columns.action.as_deref(), Some("deny"));
        assert_eq!(columns.risk.as_deref(), Some("high"));
        assert_eq!(columns.event_type, None);

        let event =
            json!({"timestamp": "yesterday", "event_type": "daemon_started", "session_id": "x"});
        let columns = search_columns(Stream::Audit, &event, received);
        assert_eq!(
            columns.occurred_at, received,
            "an unreadable time falls back"
        );
        assert_eq!(columns.event_type.as_deref(), Some("daemon_started"));
        assert_eq!(columns.session_id, None);

        let long = json!({"session_id": "s".repeat(MAX_EXTRACTED_BYTES + 1)});
        assert_eq!(
            search_columns(Stream::Trace, &long, received).session_id,
            None
        );
    }
}
