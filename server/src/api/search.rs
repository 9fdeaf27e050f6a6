//! Searching what runtimes sent (`viewer` and up): decisions, audit events, sessions and the
//! hourly risk counts of the dashboard's heat map. Lists are newest first with an opaque keyset
//! cursor (`next_cursor`), at most 500 rows a page.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::access::Person;
use super::error::{ApiError, ErrorEnvelope};
use super::paging;
use crate::db::{DbError, org_transaction};
use crate::entry_columns::format_time;
use crate::server::AppState;
use crate::store::runtime_events::{self, EscalationFilter, EscalationRow};
use crate::store::search::{
    self, AuditFilter, DecisionFilter, EntryCursor, EntryPage, EntryRow, SessionCursor,
    SessionFilter, SessionRow, from_micros, to_micros,
};

/// The longest range the heat map covers.
const MAX_HEATMAP_RANGE: Duration = Duration::from_secs(31 * 24 * 3600);
/// The heat map's range when none is asked.
const DEFAULT_HEATMAP_RANGE: Duration = Duration::from_secs(24 * 3600);

/// A decision (an entry of the trace stream).
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    /// The runtime that decided.
    pub runtime_id: String,
    /// Its position in that runtime's trace.
    pub seq: i64,
    /// The entry's id.
    pub entry_id: String,
    /// When it was decided (RFC 3339).
    pub occurred_at: String,
    /// The session.
    pub session_id: Option<String>,
    /// The agent.
    pub agent_id: Option<String>,
    /// `action_taken`: what the agent was told.
    pub action: Option<String>,
    /// `risk_level`.
    pub risk: Option<String>,
    /// Whether the server re-derived the same hash.
    pub hash_ok: bool,
    /// The trace entry as received (metadata only; prompt text never leaves a runtime).
    #[schema(value_type = Object)]
    pub entry: Value,
}

/// An event of a runtime's own audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    /// The runtime.
    pub runtime_id: String,
    /// Its position in that runtime's audit log.
    pub seq: i64,
    /// The entry's id.
    pub entry_id: String,
    /// When (RFC 3339).
    pub occurred_at: String,
    /// Its `event_type`.
    pub event_type: Option<String>,
    /// Whether the server re-derived the same hash.
    pub hash_ok: bool,
    /// The audit entry as received.
    #[schema(value_type = Object)]
    pub entry: Value,
}

/// `GET /v1/decisions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionList {
    /// Newest first.
    pub decisions: Vec<DecisionView>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/audit-events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventList {
    /// Newest first.
    pub events: Vec<AuditEventView>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/decisions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionQuery {
    /// Only this runtime.
    pub runtime_id: Option<String>,
    /// Only this session.
    pub session_id: Option<String>,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only these `action_taken` values, comma-separated.
    pub action: Option<String>,
    /// Only these risk levels, comma-separated (e.g. `high,critical`).
    pub risk: Option<String>,
    /// At or after this time (RFC 3339).
    pub from: Option<String>,
    /// Before this time (RFC 3339).
    pub to: Option<String>,
    /// Rows per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Filters of `GET /v1/audit-events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this runtime.
    pub runtime_id: Option<String>,
    /// Only these event types, comma-separated.
    pub event_type: Option<String>,
    /// At or after this time (RFC 3339).
    pub from: Option<String>,
    /// Before this time (RFC 3339).
    pub to: Option<String>,
    /// Rows per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryPosition {
    k: String,
    t: i64,
    r: String,
    s: i64,
}

fn entry_cursor(list: &str, text: Option<&str>) -> Result<Option<EntryCursor>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let position: EntryPosition = paging::decode(text)?;
    if position.k != list {
        return Err(ApiError::bad_request("cursor", "not a cursor of this list"));
    }
    Ok(Some(EntryCursor {
        occurred_at: from_micros(position.t),
        runtime_id: position.r,
        seq: position.s,
    }))
}

fn next_entry_cursor(list: &str, page: &EntryPage) -> Option<String> {
    page.next.as_ref().map(|next| {
        paging::encode(&EntryPosition {
            k: list.to_owned(),
            t: to_micros(next.occurred_at),
            r: next.runtime_id.clone(),
            s: next.seq,
        })
    })
}

fn decision_view(row: EntryRow) -> DecisionView {
    DecisionView {
        occurred_at: format_time(row.occurred_at),
        runtime_id: row.runtime_id,
        seq: row.seq,
        entry_id: row.entry_id,
        session_id: row.session_id,
        agent_id: row.agent_id,
        action: row.action,
        risk: row.risk,
        hash_ok: row.hash_ok,
        entry: row.body,
    }
}

/// Searches decisions.
#[utoipa::path(
    get, path = "/v1/decisions", tag = "decisions",
    params(DecisionQuery),
    responses((status = 200, body = DecisionList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope))
)]
pub async fn decisions(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Query(query): Query<DecisionQuery>,
) -> Result<Json<DecisionList>, ApiError> {
    let filter = DecisionFilter {
        runtime_id: query.runtime_id,
        session_id: query.session_id,
        agent_id: query.agent_id,
        actions: paging::list("action", query.action.as_deref())?,
        risks: paging::list("risk", query.risk.as_deref())?,
        from: paging::time("from", query.from.as_deref())?,
        to: paging::time("to", query.to.as_deref())?,
    };
    let cursor = entry_cursor("decisions", query.cursor.as_deref())?;
    let limit = paging::page_size(query.limit);
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let page = search::search_decisions(&transaction, &filter, cursor.as_ref(), limit).await?;
    transaction.commit().await.map_err(DbError::from)?;
    let next_cursor = next_entry_cursor("decisions", &page);
    Ok(Json(DecisionList {
        decisions: page.entries.into_iter().map(decision_view).collect(),
        next_cursor,
    }))
}

/// Searches the runtimes' audit events.
#[utoipa::path(
    get, path = "/v1/audit-events", tag = "decisions",
    params(AuditQuery),
    responses((status = 200, body = AuditEventList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope))
)]
pub async fn audit_events(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditEventList>, ApiError> {
    let filter = AuditFilter {
        runtime_id: query.runtime_id,
        event_types: paging::list("event_type", query.event_type.as_deref())?,
        from: paging::time("from", query.from.as_deref())?,
        to: paging::time("to", query.to.as_deref())?,
    };
    let cursor = entry_cursor("audit-events", query.cursor.as_deref())?;
    let limit = paging::page_size(query.limit);
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let page = search::search_audit_events(&transaction, &filter, cursor.as_ref(), limit).await?;
    transaction.commit().await.map_err(DbError::from)?;
    let next_cursor = next_entry_cursor("audit-events", &page);
    Ok(Json(AuditEventList {
        events: page
            .entries
            .into_iter()
            .map(|row| AuditEventView {
                occurred_at: format_time(row.occurred_at),
                runtime_id: row.runtime_id,
                seq: row.seq,
                entry_id: row.entry_id,
                event_type: row.event_type,
                hash_ok: row.hash_ok,
                entry: row.body,
            })
            .collect(),
        next_cursor,
    }))
}

/// A session, aggregated from its decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The runtime.
    pub runtime_id: String,
    /// The session (unique per runtime).
    pub session_id: String,
    /// Its agent.
    pub agent_id: Option<String>,
    /// Its first decision (RFC 3339).
    pub first_at: String,
    /// Its last decision (RFC 3339).
    pub last_at: String,
    /// How many decisions.
    pub decisions: i64,
    /// Decisions per `action_taken`.
    #[schema(value_type = Object)]
    pub actions: Value,
    /// Decisions per risk level (`""`: none recorded).
    #[schema(value_type = Object)]
    pub risks: Value,
    /// When the runtime reported it started (`session_started`, its first; RFC 3339); absent
    /// when the runtime never said (it started while the link was down, or before it was on).
    pub started_at: Option<String>,
    /// When the runtime reported it ended (`session_ended`); absent while open or unknown.
    pub ended_at: Option<String>,
    /// The decision count the runtime reported when it ended.
    pub decisions_at_end: Option<i64>,
    /// Escalations (`require_human` decisions) the runtime reported in it, within `from`/`to`.
    pub escalations: i64,
}

/// `GET /v1/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// Most recently active first.
    pub sessions: Vec<SessionView>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// Only this runtime.
    pub runtime_id: Option<String>,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Counting decisions at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Counting decisions before this time (RFC 3339).
    pub to: Option<String>,
    /// Rows per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionPosition {
    k: String,
    t: i64,
    r: String,
    s: String,
}

fn session_view(row: SessionRow) -> SessionView {
    SessionView {
        first_at: format_time(row.first_at),
        last_at: format_time(row.last_at),
        runtime_id: row.runtime_id,
        session_id: row.session_id,
        agent_id: row.agent_id,
        decisions: row.decisions,
        actions: row.actions,
        risks: row.risks,
        started_at: row.started_at.map(format_time),
        ended_at: row.ended_at.map(format_time),
        decisions_at_end: row.decisions_at_end,
        escalations: row.escalations,
    }
}

/// Lists sessions, aggregated from their decisions.
#[utoipa::path(
    get, path = "/v1/sessions", tag = "decisions",
    params(SessionQuery),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope))
)]
pub async fn sessions(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Query(query): Query<SessionQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let filter = SessionFilter {
        runtime_id: query.runtime_id,
        session_id: None,
        agent_id: query.agent_id,
        from: paging::time("from", query.from.as_deref())?,
        to: paging::time("to", query.to.as_deref())?,
    };
    let cursor = match query.cursor.as_deref() {
        Some(text) => {
            let position: SessionPosition = paging::decode(text)?;
            if position.k != "sessions" {
                return Err(ApiError::bad_request("cursor", "not a cursor of this list"));
            }
            Some(SessionCursor {
                last_at: from_micros(position.t),
                runtime_id: position.r,
                session_id: position.s,
            })
        }
        None => None,
    };
    let limit = paging::page_size(query.limit);
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let page = search::search_sessions(&transaction, &filter, cursor.as_ref(), limit).await?;
    transaction.commit().await.map_err(DbError::from)?;
    let next_cursor = page.next.as_ref().map(|next| {
        paging::encode(&SessionPosition {
            k: "sessions".into(),
            t: to_micros(next.last_at),
            r: next.runtime_id.clone(),
            s: next.session_id.clone(),
        })
    });
    Ok(Json(SessionList {
        sessions: page.sessions.into_iter().map(session_view).collect(),
        next_cursor,
    }))
}

/// One session of a runtime.
#[utoipa::path(
    get, path = "/v1/runtimes/{runtime_id}/sessions/{session_id}", tag = "decisions",
    params(
        ("runtime_id" = String, Path, description = "The runtime"),
        ("session_id" = String, Path, description = "The session"),
    ),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorEnvelope))
)]
pub async fn session(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path((runtime_id, session_id)): Path<(String, String)>,
) -> Result<Json<SessionView>, ApiError> {
    let filter = SessionFilter {
        runtime_id: Some(runtime_id),
        session_id: Some(session_id),
        ..SessionFilter::default()
    };
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let page = search::search_sessions(&transaction, &filter, None, 1).await?;
    transaction.commit().await.map_err(DbError::from)?;
    page.sessions
        .into_iter()
        .next()
        .map(|row| Json(session_view(row)))
        .ok_or_else(|| ApiError::not_found("session"))
}

/// One runtime's decisions of one hour, per risk level.
#[derive(Debug, Serialize, ToSchema)]
pub struct RiskHourView {
    /// The runtime.
    pub runtime_id: String,
    /// The hour's start (RFC 3339, UTC).
    pub hour: String,
    /// Decisions at `none`.
    pub none: i64,
    /// At `low`.
    pub low: i64,
    /// At `medium`.
    pub medium: i64,
    /// At `high`.
    pub high: i64,
    /// At `critical`.
    pub critical: i64,
    /// Without a level (the classifier was off).
    pub unclassified: i64,
}

/// `GET /v1/risk/hourly`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RiskHeatmap {
    /// The range's start (RFC 3339).
    pub from: String,
    /// Its end (RFC 3339).
    pub to: String,
    /// One row per runtime and hour that had decisions, by hour then runtime.
    pub hours: Vec<RiskHourView>,
}

/// The heat map's range.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RiskQuery {
    /// Only this runtime.
    pub runtime_id: Option<String>,
    /// From (RFC 3339; default: `to` minus 24 hours).
    pub from: Option<String>,
    /// To (RFC 3339; default: now). At most 31 days after `from`.
    pub to: Option<String>,
}

/// Decisions per risk level, runtime and hour: the dashboard's heat map.
#[utoipa::path(
    get, path = "/v1/risk/hourly", tag = "decisions",
    params(RiskQuery),
    responses((status = 200, body = RiskHeatmap), (status = 400, body = ErrorEnvelope))
)]
pub async fn risk_hourly(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Query(query): Query<RiskQuery>,
) -> Result<Json<RiskHeatmap>, ApiError> {
    let to = paging::time("to", query.to.as_deref())?.unwrap_or_else(SystemTime::now);
    let from = paging::time("from", query.from.as_deref())?
        .unwrap_or_else(|| to.checked_sub(DEFAULT_HEATMAP_RANGE).unwrap_or(to));
    match to.duration_since(from) {
        Ok(range) if range <= MAX_HEATMAP_RANGE => {}
        _ => {
            return Err(ApiError::bad_request(
                "from",
                "from must be before to, at most 31 days apart",
            ));
        }
    }
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let hours = search::risk_per_hour(&transaction, query.runtime_id.as_deref(), from, to).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(RiskHeatmap {
        from: format_time(from),
        to: format_time(to),
        hours: hours
            .into_iter()
            .map(|h| RiskHourView {
                hour: format_time(h.hour),
                runtime_id: h.runtime_id,
                none: h.none,
                low: h.low,
                medium: h.medium,
                high: h.high,
                critical: h.critical,
                unclassified: h.unclassified,
            })
            .collect(),
    }))
}

/// A decision a runtime answered `require_human`, as it reported it (`escalation_triggered`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationView {
    /// The runtime.
    pub runtime_id: String,
    /// The decision's position in that runtime's trace (`GET /v1/decisions` has the entry).
    pub seq: i64,
    /// The decision entry's hash.
    pub entry_hash: String,
    /// When (RFC 3339, the runtime's clock).
    pub occurred_at: String,
    /// When the server received it (RFC 3339).
    pub received_at: String,
    /// The session.
    pub session_id: String,
    /// The agent.
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

/// `GET /v1/escalations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationList {
    /// Newest first.
    pub escalations: Vec<EscalationView>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/escalations`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EscalationQuery {
    /// Only this runtime.
    pub runtime_id: Option<String>,
    /// Only this session.
    pub session_id: Option<String>,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// At or after this time (RFC 3339).
    pub from: Option<String>,
    /// Before this time (RFC 3339).
    pub to: Option<String>,
    /// Rows per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

fn escalation_view(row: EscalationRow) -> EscalationView {
    let report = row.report;
    EscalationView {
        runtime_id: row.runtime_id,
        seq: report.seq,
        entry_hash: report.entry_hash,
        occurred_at: format_time(row.occurred_at),
        received_at: format_time(row.received_at),
        session_id: report.session_id,
        agent_id: report.agent_id,
        prompt_id: report.prompt_id,
        prompt_type: report.prompt_type,
        matched_rule: report.matched_rule,
        policy_action: report.policy_action,
        risk_level: report.risk_level,
        policy_hash: report.policy_hash,
    }
}

/// Lists the escalations runtimes reported.
#[utoipa::path(
    get, path = "/v1/escalations", tag = "decisions",
    params(EscalationQuery),
    responses((status = 200, body = EscalationList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope))
)]
pub async fn escalations(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Query(query): Query<EscalationQuery>,
) -> Result<Json<EscalationList>, ApiError> {
    let filter = EscalationFilter {
        runtime_id: query.runtime_id,
        session_id: query.session_id,
        agent_id: query.agent_id,
        from: paging::time("from", query.from.as_deref())?,
        to: paging::time("to", query.to.as_deref())?,
    };
    let cursor = entry_cursor("escalations", query.cursor.as_deref())?;
    let limit = paging::page_size(query.limit);
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let page =
        runtime_events::search_escalations(&transaction, &filter, cursor.as_ref(), limit).await?;
    transaction.commit().await.map_err(DbError::from)?;
    let next_cursor = page.next.as_ref().map(|next| {
        paging::encode(&EntryPosition {
            k: "escalations".to_owned(),
            t: to_micros(next.occurred_at),
            r: next.runtime_id.clone(),
            s: next.seq,
        })
    });
    Ok(Json(EscalationList {
        escalations: page.escalations.into_iter().map(escalation_view).collect(),
        next_cursor,
    }))
}
