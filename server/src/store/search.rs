//! People's searches over what runtimes sent: decisions (the trace stream), audit events, the
//! sessions decisions belong to, and hourly risk counts. Every query reads the columns that
//! ingest extracted (migration 0003), in the order of the keyset cursor
//! (`occurred_at DESC, runtime_id DESC, seq DESC`), so a page costs one index range scan
//! whatever the table's size; the decision search is [`search_decisions`].

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::db::DbError;

/// The position after the last row of a page, for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryCursor {
    /// Its `occurred_at`.
    pub occurred_at: SystemTime,
    /// Its runtime.
    pub runtime_id: String,
    /// Its seq.
    pub seq: i64,
}

/// What decisions to find; empty lists and `None` do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    /// One runtime.
    pub runtime_id: Option<String>,
    /// One session.
    pub session_id: Option<String>,
    /// One agent.
    pub agent_id: Option<String>,
    /// Any of these `action_taken` values.
    pub actions: Vec<String>,
    /// Any of these `risk_level` values.
    pub risks: Vec<String>,
    /// At or after.
    pub from: Option<SystemTime>,
    /// Before.
    pub to: Option<SystemTime>,
}

/// What audit events to find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// One runtime.
    pub runtime_id: Option<String>,
    /// Any of these event types.
    pub event_types: Vec<String>,
    /// At or after.
    pub from: Option<SystemTime>,
    /// Before.
    pub to: Option<SystemTime>,
}

/// One stored entry, with its searchable columns.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRow {
    /// The runtime.
    pub runtime_id: String,
    /// Its position in the runtime's stream.
    pub seq: i64,
    /// Its id.
    pub entry_id: String,
    /// When it happened (see migration 0003).
    pub occurred_at: SystemTime,
    /// Decisions.
    pub session_id: Option<String>,
    /// Decisions.
    pub agent_id: Option<String>,
    /// Decisions: `action_taken`.
    pub action: Option<String>,
    /// Decisions: `risk_level`.
    pub risk: Option<String>,
    /// Audit events.
    pub event_type: Option<String>,
    /// Whether its hash verified.
    pub hash_ok: bool,
    /// The entry as received (metadata only), from the stored text.
    pub body: Value,
}

/// A page of entries and the cursor of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryPage {
    /// Newest first.
    pub entries: Vec<EntryRow>,
    /// `None` on the last page.
    pub next: Option<EntryCursor>,
}

/// A query under construction: SQL and its numbered parameters.
struct Query {
    conditions: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Query {
    fn new() -> Self {
        Self {
            conditions: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter; its placeholder.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn equals(&mut self, column: &str, value: &Option<String>) {
        if let Some(value) = value {
            let p = self.param(value.clone());
            self.conditions.push(format!("{column} = {p}"));
        }
    }

    fn any_of(&mut self, column: &str, values: &[String]) {
        match values {
            [] => {}
            [one] => {
                let p = self.param(one.clone());
                self.conditions.push(format!("{column} = {p}"));
            }
            many => {
                let p = self.param(many.to_vec());
                self.conditions.push(format!("{column} = ANY({p})"));
            }
        }
    }

    fn range(&mut self, from: Option<SystemTime>, to: Option<SystemTime>) {
        if let Some(from) = from {
            let p = self.param(from);
            self.conditions.push(format!("occurred_at >= {p}"));
        }
        if let Some(to) = to {
            let p = self.param(to);
            self.conditions.push(format!("occurred_at < {p}"));
        }
    }

    /// Rows after `cursor` in the order (occurred_at, runtime_id, seq) descending. With one
    /// runtime fixed, its column drops out of the comparison so that the per-runtime index
    /// (runtime_id, occurred_at, seq) serves it.
    fn after(&mut self, cursor: Option<&EntryCursor>, runtime_fixed: bool) {
        let Some(cursor) = cursor else { return };
        let t = self.param(cursor.occurred_at);
        let s = self.param(cursor.seq);
        if runtime_fixed {
            self.conditions
                .push(format!("(occurred_at, seq) < ({t}, {s})"));
        } else {
            let r = self.param(cursor.runtime_id.clone());
            self.conditions
                .push(format!("(occurred_at, runtime_id, seq) < ({t}, {r}, {s})"));
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

const ENTRY_COLUMNS: &str =
    "runtime_id, seq, entry_id, occurred_at, session_id, agent_id, action, risk,
     event_type, hash_ok, body";

fn entry_of(row: &tokio_postgres::Row) -> Result<EntryRow, DbError> {
    // Stored as text (migration 0005): parsed here, for the page's rows only.
    let body: &str = row.get(10);
    let body = serde_json::from_str(body).map_err(|e| {
        DbError::Stored(format!(
            "the body of entry {} of {} is not JSON: {e}",
            row.get::<_, i64>(1),
            row.get::<_, &str>(0)
        ))
    })?;
    Ok(EntryRow {
        runtime_id: row.get(0),
        seq: row.get(1),
        entry_id: row.get(2),
        occurred_at: row.get(3),
        session_id: row.get(4),
        agent_id: row.get(5),
        action: row.get(6),
        risk: row.get(7),
        event_type: row.get(8),
        hash_ok: row.get(9),
        body,
    })
}

async fn page(
    tx: &Transaction<'_>,
    stream: &str,
    mut query: Query,
    limit: usize,
    runtime_fixed: bool,
) -> Result<EntryPage, DbError> {
    let stream = query.param(stream.to_owned());
    query.conditions.insert(0, format!("stream = {stream}"));
    let fetch = query.param(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1));
    let order = if runtime_fixed {
        "occurred_at DESC, seq DESC"
    } else {
        "occurred_at DESC, runtime_id DESC, seq DESC"
    };
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE {} ORDER BY {order} LIMIT {fetch}",
        query.conditions.join(" AND ")
    );
    let rows = tx.query(&sql, &query.params()).await?;
    let mut entries: Vec<EntryRow> = rows.iter().map(entry_of).collect::<Result<_, _>>()?;
    let next = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|last| EntryCursor {
            occurred_at: last.occurred_at,
            runtime_id: last.runtime_id.clone(),
            seq: last.seq,
        })
    } else {
        None
    };
    Ok(EntryPage { entries, next })
}

/// The decision search: decisions of the transaction's organisation matching `filter`, newest
/// first, `limit` per page, after `cursor`. One statement, served by the composite indexes of
/// migration 0003 (the filter's column, then the cursor order).
pub async fn search_decisions(
    tx: &Transaction<'_>,
    filter: &DecisionFilter,
    cursor: Option<&EntryCursor>,
    limit: usize,
) -> Result<EntryPage, DbError> {
    let mut query = Query::new();
    query.equals("runtime_id", &filter.runtime_id);
    query.equals("session_id", &filter.session_id);
    query.equals("agent_id", &filter.agent_id);
    query.any_of("action", &filter.actions);
    query.any_of("risk", &filter.risks);
    query.range(filter.from, filter.to);
    let runtime_fixed = filter.runtime_id.is_some();
    query.after(cursor, runtime_fixed);
    page(tx, "trace", query, limit, runtime_fixed).await
}

/// Audit events of the organisation matching `filter`, newest first.
pub async fn search_audit_events(
    tx: &Transaction<'_>,
    filter: &AuditFilter,
    cursor: Option<&EntryCursor>,
    limit: usize,
) -> Result<EntryPage, DbError> {
    let mut query = Query::new();
    query.equals("runtime_id", &filter.runtime_id);
    query.any_of("event_type", &filter.event_types);
    query.range(filter.from, filter.to);
    let runtime_fixed = filter.runtime_id.is_some();
    query.after(cursor, runtime_fixed);
    page(tx, "audit", query, limit, runtime_fixed).await
}

/// What sessions to find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// One runtime.
    pub runtime_id: Option<String>,
    /// One session id.
    pub session_id: Option<String>,
    /// One agent.
    pub agent_id: Option<String>,
    /// Sessions with decisions at or after.
    pub from: Option<SystemTime>,
    /// Sessions with decisions before.
    pub to: Option<SystemTime>,
}

/// The position after a page of sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    /// Its last decision.
    pub last_at: SystemTime,
    /// Its runtime.
    pub runtime_id: String,
    /// Its id.
    pub session_id: String,
}

/// A session: its decisions (within the filter's time range) aggregated.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// The runtime.
    pub runtime_id: String,
    /// The session id (unique per runtime).
    pub session_id: String,
    /// Its agent (the greatest, should a session have had several).
    pub agent_id: Option<String>,
    /// The first decision.
    pub first_at: SystemTime,
    /// The last decision.
    pub last_at: SystemTime,
    /// How many decisions.
    pub decisions: i64,
    /// Decisions per `action_taken` (`""` for none).
    pub actions: Value,
    /// Decisions per `risk_level` (`""` for none).
    pub risks: Value,
    /// When the runtime said it started (its first start), if it told the server.
    pub started_at: Option<SystemTime>,
    /// When the runtime said it ended; `None` while it is open or when never told.
    pub ended_at: Option<SystemTime>,
    /// The decision count the runtime reported at the end.
    pub decisions_at_end: Option<i64>,
    /// Escalations the runtime reported in it (within the filter's time range).
    pub escalations: i64,
}

/// A page of sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPage {
    /// Most recently active first.
    pub sessions: Vec<SessionRow>,
    /// `None` on the last page.
    pub next: Option<SessionCursor>,
}

/// Sessions aggregated from their decisions, and those the runtimes reported that have none
/// yet, most recently active first.
pub async fn search_sessions(
    tx: &Transaction<'_>,
    filter: &SessionFilter,
    cursor: Option<&SessionCursor>,
    limit: usize,
) -> Result<SessionPage, DbError> {
    let mut query = Query::new();
    query
        .conditions
        .push("stream = 'trace' AND session_id IS NOT NULL".to_owned());
    query.equals("runtime_id", &filter.runtime_id);
    query.equals("session_id", &filter.session_id);
    query.equals("agent_id", &filter.agent_id);
    query.range(filter.from, filter.to);
    let range = query.conditions[1..]
        .iter()
        .filter(|c| c.starts_with("occurred_at"))
        .map(|c| format!(" AND e.{c}"))
        .collect::<String>();
    let escalation_range = range.replace(" AND e.", " AND x.");
    // A session the runtime reported but that has no decision (yet) is listed too, from its
    // reported times, under the same filters (its reported start stands for the decisions' times).
    let undecided_filter = query.conditions[1..]
        .iter()
        .map(|c| format!(" AND rs.{}", c.replace("occurred_at", "started_at")))
        .collect::<String>();
    let after_cursor = match cursor {
        Some(cursor) => {
            let t = query.param(cursor.last_at);
            let r = query.param(cursor.runtime_id.clone());
            let s = query.param(cursor.session_id.clone());
            format!("WHERE (last_at, runtime_id, session_id) < ({t}, {r}, {s})")
        }
        None => String::new(),
    };
    let fetch = query.param(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1));
    // The per-session counts read the session index, for the page's sessions only.
    let sql = format!(
        "WITH decided AS (
             SELECT runtime_id, session_id, max(agent_id) AS agent_id, min(occurred_at) AS first_at,
                 max(occurred_at) AS last_at, count(*) AS decisions
             FROM entries WHERE {}
             GROUP BY runtime_id, session_id),
         undecided AS (
             SELECT rs.runtime_id, rs.session_id, rs.agent_id,
                 COALESCE(rs.started_at, rs.ended_at, rs.updated_at) AS first_at,
                 COALESCE(rs.ended_at, rs.started_at, rs.updated_at) AS last_at,
                 0::bigint AS decisions
             FROM runtime_sessions rs
             WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.stream = 'trace'
                 AND e.runtime_id = rs.runtime_id AND e.session_id = rs.session_id){undecided_filter}),
         page AS (
             SELECT * FROM (SELECT * FROM decided UNION ALL SELECT * FROM undecided) sessions
             {after_cursor}
             ORDER BY last_at DESC, runtime_id DESC, session_id DESC LIMIT {fetch})
         SELECT p.runtime_id, p.session_id, p.agent_id, p.first_at, p.last_at, p.decisions,
             (SELECT jsonb_object_agg(k, n) FROM (
                 SELECT COALESCE(e.action, '') AS k, count(*) AS n FROM entries e
                 WHERE e.stream = 'trace' AND e.session_id = p.session_id AND e.runtime_id = p.runtime_id{range}
                 GROUP BY 1) a),
             (SELECT jsonb_object_agg(k, n) FROM (
                 SELECT COALESCE(e.risk, '') AS k, count(*) AS n FROM entries e
                 WHERE e.stream = 'trace' AND e.session_id = p.session_id AND e.runtime_id = p.runtime_id{range}
                 GROUP BY 1) r),
             rs.started_at, rs.ended_at, rs.decisions_at_end,
             (SELECT count(*) FROM escalations x
              WHERE x.runtime_id = p.runtime_id AND x.session_id = p.session_id{escalation_range})
         FROM page p LEFT JOIN runtime_sessions rs
             ON rs.runtime_id = p.runtime_id AND rs.session_id = p.session_id
         ORDER BY p.last_at DESC, p.runtime_id DESC, p.session_id DESC",
        query.conditions.join(" AND ")
    );
    let rows = tx.query(&sql, &query.params()).await?;
    let mut sessions: Vec<SessionRow> = rows
        .iter()
        .map(|row| SessionRow {
            runtime_id: row.get(0),
            session_id: row.get(1),
            agent_id: row.get(2),
            first_at: row.get(3),
            last_at: row.get(4),
            decisions: row.get(5),
            actions: row.get::<_, Option<Value>>(6).unwrap_or(Value::Null),
            risks: row.get::<_, Option<Value>>(7).unwrap_or(Value::Null),
            started_at: row.get(8),
            ended_at: row.get(9),
            decisions_at_end: row.get(10),
            escalations: row.get(11),
        })
        .collect();
    let next = if sessions.len() > limit {
        sessions.truncate(limit);
        sessions.last().map(|last| SessionCursor {
            last_at: last.last_at,
            runtime_id: last.runtime_id.clone(),
            session_id: last.session_id.clone(),
        })
    } else {
        None
    };
    Ok(SessionPage { sessions, next })
}

/// One runtime's decisions of one hour, counted per risk level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskHour {
    /// The runtime.
    pub runtime_id: String,
    /// The hour's start (UTC).
    pub hour: SystemTime,
    /// `none`.
    pub none: i64,
    /// `low`.
    pub low: i64,
    /// `medium`.
    pub medium: i64,
    /// `high`.
    pub high: i64,
    /// `critical`.
    pub critical: i64,
    /// Anything else (no level: the classifier was off).
    pub unclassified: i64,
}

/// Decisions per risk level, runtime and hour in `[from, to)`: the dashboard's heat map.
pub async fn risk_per_hour(
    tx: &Transaction<'_>,
    runtime_id: Option<&str>,
    from: SystemTime,
    to: SystemTime,
) -> Result<Vec<RiskHour>, DbError> {
    let rows = tx
        .query(
            "SELECT runtime_id, date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
                 count(*) FILTER (WHERE risk = 'none'),
                 count(*) FILTER (WHERE risk = 'low'),
                 count(*) FILTER (WHERE risk = 'medium'),
                 count(*) FILTER (WHERE risk = 'high'),
                 count(*) FILTER (WHERE risk = 'critical'),
                 count(*) FILTER (WHERE risk IS NULL OR risk NOT IN ('none', 'low', 'medium', 'high', 'critical'))
             FROM entries
             WHERE stream = 'trace' AND occurred_at >= $1 AND occurred_at < $2
                 AND ($3::text IS NULL OR runtime_id = $3)
             GROUP BY 1, 2 ORDER BY 2, 1",
            &[&from, &to, &runtime_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| RiskHour {
            runtime_id: row.get(0),
            hour: row.get(1),
            none: row.get(2),
            low: row.get(3),
            medium: row.get(4),
            high: row.get(5),
            critical: row.get(6),
            unclassified: row.get(7),
        })
        .collect())
}

/// Microseconds since the epoch (cursors carry times so).
pub fn to_micros(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The time `micros` after the epoch.
pub fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}
