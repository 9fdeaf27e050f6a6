//! What runtimes report as it happens: `session_started`, `session_ended` and
//! `escalation_triggered` (docs/cloud.md, "Events as they happen"), kept per organisation and
//! runtime (migration 0006), and the escalations people list.
//!
//! Only named fields are picked out of each message, each bounded, so nothing else a runtime
//! might put in one (prompt text above all) is ever stored. Every write is idempotent: an
//! escalation is keyed by its trace entry (runtime, seq), and a session's times only move with
//! `LEAST`/`GREATEST`, so a message sent again changes nothing.

use std::time::SystemTime;

use serde_json::{Map, Value, json};
use tokio_postgres::Transaction;

use crate::db::DbError;
use crate::entry_columns::format_time;
use crate::live::{LiveEvent, kind};
use crate::store::publish_or_log;
use crate::store::search::EntryCursor;

/// The longest value kept of any field (as for the searchable columns).
pub const MAX_FIELD_BYTES: usize = 512;
/// The most session tags kept.
pub const MAX_TAGS: usize = 64;

/// A `session_started` or `session_ended` message's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// The session (unique per runtime while it is live).
    pub session_id: String,
    /// Its agent.
    pub agent_id: Option<String>,
    /// Its tool.
    pub tool_id: Option<String>,
    /// Its repository.
    pub repo: Option<String>,
    /// Its branch.
    pub branch: Option<String>,
    /// Its CI status.
    pub ci_status: Option<String>,
    /// Its tags.
    pub session_tags: Vec<String>,
    /// `session_ended`: the decisions the runtime counted in it.
    pub decisions: Option<i64>,
}

/// An `escalation_triggered` message's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationReport {
    /// The decision's position in the runtime's trace.
    pub seq: i64,
    /// The decision entry's hash.
    pub entry_hash: String,
    /// Its session.
    pub session_id: String,
    /// Its agent.
    pub agent_id: Option<String>,
    /// The prompt's id (never its text).
    pub prompt_id: Option<String>,
    /// The prompt's type.
    pub prompt_type: Option<String>,
    /// The rule that decided (`""`: a default).
    pub matched_rule: Option<String>,
    /// What the policy said.
    pub policy_action: Option<String>,
    /// The risk level.
    pub risk_level: Option<String>,
    /// The policy's hash.
    pub policy_hash: Option<String>,
}

fn object(payload: &Value) -> Result<&Map<String, Value>, String> {
    payload
        .as_object()
        .ok_or_else(|| "the payload is not an object".to_owned())
}

fn bounded(field: &str, value: &str) -> Result<String, String> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(format!("{field} is over {MAX_FIELD_BYTES} bytes"));
    }
    Ok(value.to_owned())
}

fn optional(payload: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match payload.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => bounded(field, value).map(Some),
        Some(_) => Err(format!("{field} is not a string")),
    }
}

fn required(payload: &Map<String, Value>, field: &str) -> Result<String, String> {
    match optional(payload, field)? {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(format!("{field} is required")),
    }
}

fn count(payload: &Map<String, Value>, field: &str) -> Result<Option<i64>, String> {
    match payload.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{field} is not a count")),
    }
}

impl SessionReport {
    /// The fields of a session message, or why it is refused.
    pub fn parse(payload: &Value) -> Result<Self, String> {
        let payload = object(payload)?;
        let session_tags = match payload.get("session_tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(tags)) if tags.len() <= MAX_TAGS => tags
                .iter()
                .map(|tag| match tag {
                    Value::String(tag) => bounded("session_tags", tag),
                    _ => Err("session_tags holds a non-string".to_owned()),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(format!(
                    "session_tags is not a list of at most {MAX_TAGS} tags"
                ));
            }
        };
        Ok(Self {
            session_id: required(payload, "session_id")?,
            agent_id: optional(payload, "agent_id")?,
            tool_id: optional(payload, "tool_id")?,
            repo: optional(payload, "repo")?,
            branch: optional(payload, "branch")?,
            ci_status: optional(payload, "ci_status")?,
            session_tags,
            decisions: count(payload, "decisions")?,
        })
    }
}

impl EscalationReport {
    /// The fields of an escalation message, or why it is refused.
    pub fn parse(payload: &Value) -> Result<Self, String> {
        let payload = object(payload)?;
        Ok(Self {
            seq: count(payload, "seq")?.ok_or("seq is required")?,
            entry_hash: required(payload, "entry_hash")?,
            session_id: required(payload, "session_id")?,
            agent_id: optional(payload, "agent_id")?,
            prompt_id: optional(payload, "prompt_id")?,
            prompt_type: optional(payload, "prompt_type")?,
            matched_rule: optional(payload, "matched_rule")?,
            policy_action: optional(payload, "policy_action")?,
            risk_level: optional(payload, "risk_level")?,
            policy_hash: optional(payload, "policy_hash")?,
        })
    }
}

fn session_event(
    runtime_id: &str,
    report: &SessionReport,
    change: &str,
    at: SystemTime,
) -> LiveEvent {
    LiveEvent {
        kind: kind::SESSION.to_owned(),
        payload: json!({
            "runtime_id": runtime_id,
            "session_id": report.session_id,
            "change": change,
            "agent_id": report.agent_id,
            "at": format_time(at),
            "decisions": report.decisions,
        }),
    }
}

/// Records that a session started at `at` (the runtime's clock). The first start stays
/// `started_at`; a start after the session's end opens it again (the daemon forgets ended
/// sessions, so an id can come back).
pub async fn record_session_started(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    report: &SessionReport,
    at: SystemTime,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO runtime_sessions AS s (org_id, runtime_id, session_id, agent_id, tool_id,
             repo, branch, ci_status, session_tags, started_at, last_started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
         ON CONFLICT (org_id, runtime_id, session_id) DO UPDATE SET
             agent_id = COALESCE(EXCLUDED.agent_id, s.agent_id),
             tool_id = COALESCE(EXCLUDED.tool_id, s.tool_id),
             repo = COALESCE(EXCLUDED.repo, s.repo),
             branch = COALESCE(EXCLUDED.branch, s.branch),
             ci_status = COALESCE(EXCLUDED.ci_status, s.ci_status),
             session_tags = EXCLUDED.session_tags,
             started_at = LEAST(s.started_at, EXCLUDED.started_at),
             last_started_at = GREATEST(s.last_started_at, EXCLUDED.last_started_at),
             ended_at = CASE WHEN s.ended_at < EXCLUDED.started_at THEN NULL ELSE s.ended_at END,
             decisions_at_end = CASE WHEN s.ended_at < EXCLUDED.started_at THEN NULL
                                     ELSE s.decisions_at_end END,
             updated_at = now()",
        &[
            &org_id,
            &runtime_id,
            &report.session_id,
            &report.agent_id,
            &report.tool_id,
            &report.repo,
            &report.branch,
            &report.ci_status,
            &report.session_tags,
            &at,
        ],
    )
    .await?;
    publish_or_log(
        tx,
        org_id,
        vec![session_event(runtime_id, report, "started", at)],
    )
    .await
}

/// Records that a session ended at `at`, with the decision count the runtime reported. An end
/// older than the session's latest start (a message from before it was opened again) leaves
/// the times as they are.
pub async fn record_session_ended(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    report: &SessionReport,
    at: SystemTime,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO runtime_sessions AS s (org_id, runtime_id, session_id, agent_id, tool_id,
             repo, branch, ci_status, session_tags, ended_at, decisions_at_end)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (org_id, runtime_id, session_id) DO UPDATE SET
             agent_id = COALESCE(s.agent_id, EXCLUDED.agent_id),
             tool_id = COALESCE(s.tool_id, EXCLUDED.tool_id),
             repo = COALESCE(s.repo, EXCLUDED.repo),
             branch = COALESCE(s.branch, EXCLUDED.branch),
             ci_status = COALESCE(s.ci_status, EXCLUDED.ci_status),
             ended_at = CASE WHEN s.last_started_at > EXCLUDED.ended_at
                                  OR s.ended_at >= EXCLUDED.ended_at THEN s.ended_at
                             ELSE EXCLUDED.ended_at END,
             decisions_at_end = CASE WHEN s.last_started_at > EXCLUDED.ended_at
                                          OR s.ended_at >= EXCLUDED.ended_at THEN s.decisions_at_end
                                     ELSE EXCLUDED.decisions_at_end END,
             updated_at = now()",
        &[
            &org_id,
            &runtime_id,
            &report.session_id,
            &report.agent_id,
            &report.tool_id,
            &report.repo,
            &report.branch,
            &report.ci_status,
            &report.session_tags,
            &at,
            &report.decisions,
        ],
    )
    .await?;
    publish_or_log(
        tx,
        org_id,
        vec![session_event(runtime_id, report, "ended", at)],
    )
    .await
}

/// Records an escalation that happened at `at`; false when it was held already (the same
/// runtime and seq: a message sent again), in which case nothing is published either.
pub async fn record_escalation(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    report: &EscalationReport,
    at: SystemTime,
) -> Result<bool, DbError> {
    let inserted = tx
        .query_opt(
            "INSERT INTO escalations (org_id, runtime_id, seq, entry_hash, session_id, agent_id,
                 prompt_id, prompt_type, matched_rule, policy_action, risk_level, policy_hash,
                 occurred_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (org_id, runtime_id, seq) DO NOTHING RETURNING 1",
            &[
                &org_id,
                &runtime_id,
                &report.seq,
                &report.entry_hash,
                &report.session_id,
                &report.agent_id,
                &report.prompt_id,
                &report.prompt_type,
                &report.matched_rule,
                &report.policy_action,
                &report.risk_level,
                &report.policy_hash,
                &at,
            ],
        )
        .await?
        .is_some();
    if inserted {
        let event = LiveEvent {
            kind: kind::ESCALATION.to_owned(),
            payload: json!({
                "runtime_id": runtime_id,
                "seq": report.seq,
                "session_id": report.session_id,
                "agent_id": report.agent_id,
                "matched_rule": report.matched_rule,
                "policy_action": report.policy_action,
                "risk_level": report.risk_level,
                "occurred_at": format_time(at),
            }),
        };
        publish_or_log(tx, org_id, vec![event]).await?;
    }
    Ok(inserted)
}

/// What escalations to find: the same runtime, session, agent and time range as sessions are
/// found by (`None` does not filter; the range reads when each escalation occurred).
pub use super::search::SessionFilter as EscalationFilter;

/// A stored escalation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationRow {
    /// The runtime.
    pub runtime_id: String,
    /// The fields it reported.
    pub report: EscalationReport,
    /// When (the runtime's clock).
    pub occurred_at: SystemTime,
    /// When it reached the server.
    pub received_at: SystemTime,
}

/// A page of escalations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPage {
    /// Newest first.
    pub escalations: Vec<EscalationRow>,
    /// `None` on the last page.
    pub next: Option<EntryCursor>,
}

/// Escalations matching `filter`, newest first (`occurred_at`, runtime, seq descending), after
/// `cursor`: the order of the indexes of migration 0006.
pub async fn search_escalations(
    tx: &Transaction<'_>,
    filter: &EscalationFilter,
    cursor: Option<&EntryCursor>,
    limit: usize,
) -> Result<EscalationPage, DbError> {
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let (cursor_at, cursor_runtime, cursor_seq) = match cursor {
        Some(c) => (Some(c.occurred_at), Some(c.runtime_id.clone()), Some(c.seq)),
        None => (None, None, None),
    };
    let rows = tx
        .query(
            "SELECT runtime_id, seq, entry_hash, session_id, agent_id, prompt_id, prompt_type,
                 matched_rule, policy_action, risk_level, policy_hash, occurred_at, received_at
             FROM escalations
             WHERE ($1::text IS NULL OR runtime_id = $1)
                 AND ($2::text IS NULL OR session_id = $2)
                 AND ($3::text IS NULL OR agent_id = $3)
                 AND ($4::timestamptz IS NULL OR occurred_at >= $4)
                 AND ($5::timestamptz IS NULL OR occurred_at < $5)
                 AND ($6::timestamptz IS NULL OR (occurred_at, runtime_id, seq) < ($6, $7, $8))
             ORDER BY occurred_at DESC, runtime_id DESC, seq DESC
             LIMIT $9",
            &[
                &filter.runtime_id,
                &filter.session_id,
                &filter.agent_id,
                &filter.from,
                &filter.to,
                &cursor_at,
                &cursor_runtime,
                &cursor_seq,
                &fetch,
            ],
        )
        .await?;
    let mut escalations: Vec<EscalationRow> = rows
        .iter()
        .map(|row| EscalationRow {
            runtime_id: row.get(0),
            report: EscalationReport {
                seq: row.get(1),
                entry_hash: row.get(2),
                session_id: row.get(3),
                agent_id: row.get(4),
                prompt_id: row.get(5),
                prompt_type: row.get(6),
                matched_rule: row.get(7),
                policy_action: row.get(8),
                risk_level: row.get(9),
                policy_hash: row.get(10),
            },
            occurred_at: row.get(11),
            received_at: row.get(12),
        })
        .collect();
    let next = if escalations.len() > limit {
        escalations.truncate(limit);
        escalations.last().map(|last| EntryCursor {
            occurred_at: last.occurred_at,
            runtime_id: last.runtime_id.clone(),
            seq: last.report.seq,
        })
    } else {
        None
    };
    Ok(EscalationPage { escalations, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_fields_are_kept_and_each_is_bounded() {
        let report = SessionReport::parse(&json!({
            "session_id": "s1", "agent_id": "a", "tool_id": null, "session_tags": ["x"],
            "decisions": 3, "prompt_text": "never kept", "renewed": false,
        }))
        .unwrap();
        assert_eq!(report.session_id, "s1");
        assert_eq!(report.tool_id, None);
        assert_eq!(report.session_tags, ["x"]);
        assert_eq!(report.decisions, Some(3));
        assert!(!format!("{report:?}").contains("never kept"));
        for bad in [
            json!({}),
            json!({"session_id": ""}),
            json!({"session_id": 7}),
            json!({"session_id": "s", "repo": "r".repeat(MAX_FIELD_BYTES + 1)}),
            json!({"session_id": "s", "session_tags": vec!["t"; MAX_TAGS + 1]}),
            json!({"session_id": "s", "decisions": -1}),
            json!([]),
        ] {
            assert!(SessionReport::parse(&bad).is_err(), "{bad}");
        }
        let escalation = EscalationReport::parse(&json!({
            "session_id": "s1", "seq": 4, "entry_hash": "h", "prompt_text": "never kept",
            "risk_level": "high",
        }))
        .unwrap();
        assert_eq!(
            (escalation.seq, escalation.risk_level.as_deref()),
            (4, Some("high"))
        );
        for bad in [
            json!({"session_id": "s1", "entry_hash": "h"}),
            json!({"session_id": "s1", "seq": 1}),
            json!({"seq": 1, "entry_hash": "h"}),
            json!({"session_id": "s1", "seq": "1", "entry_hash": "h"}),
        ] {
            assert!(EscalationReport::parse(&bad).is_err(), "{bad}");
        }
    }
}
