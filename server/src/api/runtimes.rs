//! The runtime registry (`viewer` and up): runtimes with their status, chain status per stream
//! and flags.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::Person;
use super::error::{ApiError, ErrorEnvelope};
use super::paging;
use crate::db::{DbError, org_transaction};
use crate::entry_columns::format_time;
use crate::server::AppState;
use crate::store::registry::{self, ChainRow, CheckpointRow, FlagRow, RuntimeRow};

/// Flags shown with one runtime (the newest).
const FLAGS_SHOWN: i64 = 100;
/// Checkpoints shown with one runtime.
const CHECKPOINTS_SHOWN: i64 = 20;

/// A chain's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainView {
    /// `trace` (decisions) or `audit`.
    pub stream: String,
    /// `continuous`, `gap` or `broken`.
    pub status: String,
    /// Entries 0..next_seq are all held.
    pub next_seq: i64,
    /// The highest seq held.
    pub max_seq: Option<i64>,
    /// The first missing seq, while there is a gap.
    pub gap_from: Option<i64>,
    /// The last missing seq.
    pub gap_to: Option<i64>,
    /// The first bad seq, once broken (it stays).
    pub broken_at: Option<i64>,
    /// `hash_mismatch`, `prev_mismatch`, `fork`, `rewound` or `malformed`.
    pub broken_kind: Option<String>,
    /// Why.
    pub broken_detail: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<&ChainRow> for ChainView {
    fn from(row: &ChainRow) -> Self {
        Self {
            stream: row.stream.clone(),
            status: row.status.clone(),
            next_seq: row.next_seq,
            max_seq: row.max_seq,
            gap_from: row.gap_from,
            gap_to: row.gap_to,
            broken_at: row.broken_at,
            broken_kind: row.broken_kind.clone(),
            broken_detail: row.broken_detail.clone(),
            updated_at: format_time(row.updated_at),
        }
    }
}

/// A finding about a runtime.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlagView {
    /// `forked`, `rewound`, `bad_checkpoint`, `hash_mismatch`, …
    pub kind: String,
    /// Why.
    pub detail: String,
    /// RFC 3339.
    pub flagged_at: String,
}

impl From<&FlagRow> for FlagView {
    fn from(row: &FlagRow) -> Self {
        Self {
            kind: row.kind.clone(),
            detail: row.detail.clone(),
            flagged_at: format_time(row.flagged_at),
        }
    }
}

/// A signed checkpoint of a runtime's trace, as the server judged it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// Its number in the runtime's checkpoint chain.
    pub checkpoint_seq: i64,
    /// Its hash.
    pub checkpoint_hash: String,
    /// The signing key's epoch.
    pub epoch: i64,
    /// The trace seq it vouches for.
    pub seq: Option<i64>,
    /// `verified` (signed by a known key of the chain), `unverifiable` (its predecessor never
    /// reached the server) or `bad` (refused; the runtime is flagged).
    pub verdict: String,
    /// RFC 3339, when it arrived.
    pub received_at: String,
}

impl From<&CheckpointRow> for CheckpointView {
    fn from(row: &CheckpointRow) -> Self {
        Self {
            checkpoint_seq: row.checkpoint_seq,
            checkpoint_hash: row.checkpoint_hash.clone(),
            epoch: row.epoch,
            seq: row.seq,
            verdict: row.verdict.clone(),
            received_at: format_time(row.received_at),
        }
    }
}

/// A runtime.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeView {
    /// `ed25519:` + its public key.
    pub runtime_id: String,
    /// `active`, or `inactive` once three heartbeat intervals passed without one.
    pub status: String,
    /// What the witness found: `ok`, `rewound`, `forked` or `bad_checkpoint`.
    pub witness_status: String,
    /// Why, when not `ok`.
    pub witness_detail: String,
    /// The daemon's version.
    pub agent_version: String,
    /// Its edition.
    pub edition: String,
    /// RFC 3339.
    pub first_seen: String,
    /// RFC 3339.
    pub last_seen: String,
    /// RFC 3339.
    pub last_heartbeat: Option<String>,
    /// How many findings it has (see `flags` of one runtime).
    pub flag_count: i64,
    /// Its chains.
    pub chains: Vec<ChainView>,
}

/// One runtime with its newest flags.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeDetail {
    /// The runtime.
    #[serde(flatten)]
    pub runtime: RuntimeView,
    /// The newest 100 flags, newest first.
    pub flags: Vec<FlagView>,
    /// The newest 20 checkpoints, newest first.
    pub checkpoints: Vec<CheckpointView>,
}

/// `GET /v1/runtimes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeList {
    /// In `runtime_id` order.
    pub runtimes: Vec<RuntimeView>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/runtimes/{runtime_id}/chains`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainList {
    /// The runtime.
    pub runtime_id: String,
    /// Its chains: `trace`, then `audit`.
    pub chains: Vec<ChainView>,
}

/// Paging of `GET /v1/runtimes`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RuntimeQuery {
    /// Rows per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RuntimeCursor {
    k: String,
    r: String,
}

fn view(runtime: &RuntimeRow, chains: &[ChainRow]) -> RuntimeView {
    RuntimeView {
        runtime_id: runtime.runtime_id.clone(),
        status: runtime.status.clone(),
        witness_status: runtime.witness_status.clone(),
        witness_detail: runtime.witness_detail.clone(),
        agent_version: runtime.agent_version.clone(),
        edition: runtime.edition.clone(),
        first_seen: format_time(runtime.first_seen),
        last_seen: format_time(runtime.last_seen),
        last_heartbeat: runtime.last_heartbeat.map(format_time),
        flag_count: runtime.flag_count,
        chains: chains
            .iter()
            .filter(|chain| chain.runtime_id == runtime.runtime_id)
            .map(ChainView::from)
            .collect(),
    }
}

/// Lists the runtimes.
#[utoipa::path(
    get, path = "/v1/runtimes", tag = "runtimes",
    params(RuntimeQuery),
    responses((status = 200, body = RuntimeList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Query(query): Query<RuntimeQuery>,
) -> Result<Json<RuntimeList>, ApiError> {
    let limit = paging::page_size(query.limit);
    let after = match query.cursor.as_deref() {
        Some(text) => {
            let cursor: RuntimeCursor = paging::decode(text)?;
            if cursor.k != "runtimes" {
                return Err(ApiError::bad_request("cursor", "not a cursor of this list"));
            }
            Some(cursor.r)
        }
        None => None,
    };
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let mut runtimes = registry::list_runtimes(
        &transaction,
        state.config.runtime.heartbeat_s,
        after.as_deref(),
        limit + 1,
    )
    .await?;
    let next_cursor = if runtimes.len() > limit {
        runtimes.truncate(limit);
        runtimes.last().map(|last| {
            paging::encode(&RuntimeCursor {
                k: "runtimes".into(),
                r: last.runtime_id.clone(),
            })
        })
    } else {
        None
    };
    let ids: Vec<String> = runtimes.iter().map(|r| r.runtime_id.clone()).collect();
    let chains = registry::chains(&transaction, &ids).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(RuntimeList {
        runtimes: runtimes.iter().map(|r| view(r, &chains)).collect(),
        next_cursor,
    }))
}

/// One runtime: registry status, chains and newest flags.
#[utoipa::path(
    get, path = "/v1/runtimes/{runtime_id}", tag = "runtimes",
    params(("runtime_id" = String, Path, description = "`ed25519:` + the runtime's public key")),
    responses((status = 200, body = RuntimeDetail), (status = 404, body = ErrorEnvelope))
)]
pub async fn one(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(runtime_id): Path<String>,
) -> Result<Json<RuntimeDetail>, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let runtime = registry::runtime(&transaction, &runtime_id, state.config.runtime.heartbeat_s)
        .await?
        .ok_or_else(|| ApiError::not_found("runtime"))?;
    let chains = registry::chains(&transaction, std::slice::from_ref(&runtime_id)).await?;
    let flags = registry::recent_flags(&transaction, &runtime_id, FLAGS_SHOWN).await?;
    let checkpoints =
        registry::recent_checkpoints(&transaction, &runtime_id, CHECKPOINTS_SHOWN).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(RuntimeDetail {
        runtime: view(&runtime, &chains),
        flags: flags.iter().map(FlagView::from).collect(),
        checkpoints: checkpoints.iter().map(CheckpointView::from).collect(),
    }))
}

/// The chain status of each stream of a runtime.
#[utoipa::path(
    get, path = "/v1/runtimes/{runtime_id}/chains", tag = "runtimes",
    params(("runtime_id" = String, Path, description = "`ed25519:` + the runtime's public key")),
    responses((status = 200, body = ChainList), (status = 404, body = ErrorEnvelope))
)]
pub async fn chains(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(runtime_id): Path<String>,
) -> Result<Json<ChainList>, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let chains = registry::chains(&transaction, std::slice::from_ref(&runtime_id)).await?;
    transaction.commit().await.map_err(DbError::from)?;
    if chains.is_empty() {
        return Err(ApiError::not_found("runtime"));
    }
    Ok(Json(ChainList {
        runtime_id,
        chains: chains.iter().map(ChainView::from).collect(),
    }))
}
