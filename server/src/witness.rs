//! `POST /v1/witness`: a runtime asks what the server witnessed of its own chain — the chain's
//! status and the hashes held at the seqs it names — to compare its local trace with it
//! (`atlasbridge trace integrity-check --against-cloud`, through the daemon's uplink).
//!
//! Authentication is the runtime's access token, as for the control channel: the answer is about
//! the token's runtime in the token's organisation, read under that organisation's row-level
//! security, and there is no parameter that could name another. A revoked key's tokens stop
//! working here too.
//!
//! "Witnessed" means both what the runtime sent and what it vouched for: the entries as first
//! received, and the heads it showed in hellos, heartbeats and checkpoints (which may reach
//! beyond the entries received so far). Both are returned at each asked seq, each with its
//! source, so a caller sees every hash the server holds against its chain.

use std::sync::Arc;

use atlasbridge_protocol::cloud::messages::{Stream, WireHead};
use atlasbridge_protocol::cloud::witness::{
    BrokenAt, SeqRange, WitnessAnswer, WitnessQuery, WitnessedChain, WitnessedHash,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_postgres::Transaction;

use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorEnvelope};
use crate::db::{DbError, org_transaction};
use crate::http::bearer;
use crate::server::AppState;
use crate::store;

/// `POST /v1/witness`'s body, for the OpenAPI document (the wire type is the protocol crate's
/// [`WitnessQuery`]).
#[derive(Debug, ToSchema)]
#[schema(as = WitnessQuery)]
#[allow(dead_code)] // Read by the OpenAPI derive only.
pub struct WitnessQuerySchema {
    /// `trace` or `audit`.
    stream: String,
    /// Single seqs, at most 256.
    seqs: Option<Vec<u64>>,
    /// Ranges `{from_seq, to_seq}` (inclusive), spanning at most 1000 seqs together.
    #[schema(value_type = Option<Vec<Object>>)]
    ranges: Option<Vec<serde_json::Value>>,
}

/// `POST /v1/witness`'s answer, for the OpenAPI document (the wire type is the protocol crate's
/// [`WitnessAnswer`]).
#[derive(Debug, ToSchema)]
#[schema(as = WitnessAnswer)]
#[allow(dead_code)] // Read by the OpenAPI derive only.
pub struct WitnessAnswerSchema {
    /// The token's runtime.
    runtime_id: String,
    /// The stream asked about.
    stream: String,
    /// `{status, next_seq, max_seq, gap, broken}`; null when the server holds nothing of the
    /// runtime.
    #[schema(value_type = Option<Object>)]
    chain: Option<serde_json::Value>,
    /// `ok`, `rewound`, `forked` or `bad_checkpoint`; null for an unknown runtime.
    witness_status: Option<String>,
    /// `{seq, entry_hash}` of the highest head the runtime showed.
    #[schema(value_type = Option<Object>)]
    highest_head: Option<serde_json::Value>,
    /// `{seq, entry_hash, source}` at each asked seq: `entry`, `hello`, `heartbeat`, `checkpoint`.
    #[schema(value_type = Vec<Object>)]
    hashes: Vec<serde_json::Value>,
}

/// `POST /v1/witness` with a [`WitnessQuery`]: 200 with a [`WitnessAnswer`] (whose `chain` is
/// `null` when the server holds nothing of the runtime); 400 for a query beyond the limits; 401
/// without a live token.
#[utoipa::path(
    post, path = "/v1/witness", tag = "runtime",
    request_body = WitnessQuerySchema,
    responses(
        (status = 200, description = "What the server witnessed of the token's runtime's chain (docs/cloud.md)", body = WitnessAnswerSchema),
        (status = 400, description = "Not a query, or beyond the limits (QUERY_TOO_LARGE)", body = ErrorEnvelope),
        (status = 401, description = "The runtime token is missing, expired or its key revoked", body = ErrorEnvelope),
        (status = 503, description = "Shedding load; see Retry-After", body = ErrorEnvelope),
    )
)]
pub async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let refused = || ApiError::unauthorized("INVALID_TOKEN", "token unknown, expired or revoked");
    let token = bearer(&headers)
        .ok_or_else(|| ApiError::unauthorized("UNAUTHORIZED", "missing bearer token"))?;
    let claims = state.tokens.verify(token).map_err(|_| refused())?;
    let query: WitnessQuery =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("body", e.to_string()))?;
    let seqs = query.seqs_wanted().map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "QUERY_TOO_LARGE", e.to_string())
            .detail("field", e.field())
    })?;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &claims.org).await?;
    if !store::api_key_is_live(&transaction, &claims.kid).await? {
        return Err(refused());
    }
    let answer = witnessed(
        &transaction,
        &claims.sub,
        query.stream,
        &seqs,
        state.config.runtime.heartbeat_s,
    )
    .await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(answer).into_response())
}

fn to_db(seqs: &[u64]) -> Vec<i64> {
    // `seqs_wanted` refused any seq beyond i64::MAX.
    seqs.iter()
        .filter_map(|seq| i64::try_from(*seq).ok())
        .collect()
}

fn from_db(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// What the transaction's organisation holds of `runtime_id`'s `stream` at `seqs`.
pub async fn witnessed(
    tx: &Transaction<'_>,
    runtime_id: &str,
    stream: Stream,
    seqs: &[u64],
    heartbeat_s: u64,
) -> Result<WitnessAnswer, DbError> {
    let name = stream.name();
    let chain = store::chain_status(tx, runtime_id, stream)
        .await?
        .map(|chain| WitnessedChain {
            status: chain.status,
            next_seq: chain.next_seq,
            max_seq: chain.max_seq,
            gap: chain
                .gap
                .map(|(from_seq, to_seq)| SeqRange { from_seq, to_seq }),
            broken: chain.broken.map(|(seq, kind, _)| BrokenAt { seq, kind }),
        });
    let witness_status = store::runtime(tx, runtime_id, heartbeat_s)
        .await?
        .map(|record| record.witness_status);
    let highest_head = tx
        .query_opt(
            "SELECT seq, entry_hash FROM witnessed_heads WHERE runtime_id = $1 AND stream = $2
             ORDER BY seq DESC LIMIT 1",
            &[&runtime_id, &name],
        )
        .await?
        .map(|row| WireHead {
            seq: from_db(row.get(0)),
            entry_hash: row.get(1),
        });
    let hashes = if seqs.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "SELECT seq, entry_hash, 'entry' FROM entries
                 WHERE runtime_id = $1 AND stream = $2 AND seq = ANY($3)
             UNION ALL
             SELECT seq, entry_hash, source FROM witnessed_heads
                 WHERE runtime_id = $1 AND stream = $2 AND seq = ANY($3)
             ORDER BY 1, 3",
            &[&runtime_id, &name, &to_db(seqs)],
        )
        .await?
        .iter()
        .map(|row| WitnessedHash {
            seq: from_db(row.get(0)),
            entry_hash: row.get(1),
            source: row.get(2),
        })
        .collect()
    };
    Ok(WitnessAnswer {
        runtime_id: runtime_id.to_owned(),
        stream,
        chain,
        witness_status,
        highest_head,
        hashes,
    })
}
