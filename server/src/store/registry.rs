//! The runtime registry as people read it: runtimes with their status, the status of each of
//! their chains, and their flags.

use std::time::SystemTime;

use tokio_postgres::Transaction;

use crate::db::DbError;

/// A runtime of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRow {
    /// `ed25519:` + its public key.
    pub runtime_id: String,
    /// `active`, or `inactive` after three missed heartbeats.
    pub status: String,
    /// `ok`, `rewound`, `forked` or `bad_checkpoint`.
    pub witness_status: String,
    /// Why, when not `ok`.
    pub witness_detail: String,
    /// The daemon's version.
    pub agent_version: String,
    /// Its edition.
    pub edition: String,
    /// First hello.
    pub first_seen: SystemTime,
    /// Last message.
    pub last_seen: SystemTime,
    /// Last heartbeat.
    pub last_heartbeat: Option<SystemTime>,
    /// How many flags it has.
    pub flag_count: i64,
}

/// A chain of a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    /// The runtime.
    pub runtime_id: String,
    /// `trace` or `audit`.
    pub stream: String,
    /// `continuous`, `gap` or `broken`.
    pub status: String,
    /// Entries 0..next_seq are held.
    pub next_seq: i64,
    /// The highest seq held.
    pub max_seq: Option<i64>,
    /// The missing range, while there is a gap.
    pub gap_from: Option<i64>,
    /// Its end.
    pub gap_to: Option<i64>,
    /// The first bad seq.
    pub broken_at: Option<i64>,
    /// Why.
    pub broken_kind: Option<String>,
    /// Detail.
    pub broken_detail: Option<String>,
    /// Last change.
    pub updated_at: SystemTime,
}

/// A finding about a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagRow {
    /// What.
    pub kind: String,
    /// Why.
    pub detail: String,
    /// When.
    pub flagged_at: SystemTime,
}

/// A signed checkpoint a runtime sent, with the server's verdict on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    /// Its number in the runtime's checkpoint chain.
    pub checkpoint_seq: i64,
    /// Its hash.
    pub checkpoint_hash: String,
    /// The key epoch it belongs to.
    pub epoch: i64,
    /// The trace seq it vouches for (through this entry).
    pub seq: Option<i64>,
    /// `verified`, `unverifiable` or `bad`.
    pub verdict: String,
    /// When it arrived.
    pub received_at: SystemTime,
}

const RUNTIME_SELECT: &str = "SELECT r.runtime_id,
         CASE WHEN now() - r.last_seen
                   > 3 * make_interval(secs => COALESCE(r.heartbeat_interval_ms, $1)::double precision / 1000.0)
              THEN 'inactive' ELSE 'active' END,
         r.witness_status, r.witness_detail, r.agent_version, r.edition, r.first_seen, r.last_seen,
         r.last_heartbeat,
         (SELECT count(*) FROM runtime_flags f WHERE f.runtime_id = r.runtime_id)
     FROM runtimes r";

fn runtime_of(row: &tokio_postgres::Row) -> RuntimeRow {
    RuntimeRow {
        runtime_id: row.get(0),
        status: row.get(1),
        witness_status: row.get(2),
        witness_detail: row.get(3),
        agent_version: row.get(4),
        edition: row.get(5),
        first_seen: row.get(6),
        last_seen: row.get(7),
        last_heartbeat: row.get(8),
        flag_count: row.get(9),
    }
}

fn default_ms(default_heartbeat_s: u64) -> i64 {
    i64::try_from(default_heartbeat_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Runtimes in `runtime_id` order after `after`, at most `limit`.
pub async fn list_runtimes(
    tx: &Transaction<'_>,
    default_heartbeat_s: u64,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<RuntimeRow>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(tx
        .query(
            &format!(
                "{RUNTIME_SELECT} WHERE ($2::text IS NULL OR r.runtime_id > $2)
                 ORDER BY r.runtime_id LIMIT $3"
            ),
            &[&default_ms(default_heartbeat_s), &after, &limit],
        )
        .await?
        .iter()
        .map(runtime_of)
        .collect())
}

/// One runtime.
pub async fn runtime(
    tx: &Transaction<'_>,
    runtime_id: &str,
    default_heartbeat_s: u64,
) -> Result<Option<RuntimeRow>, DbError> {
    Ok(tx
        .query_opt(
            &format!("{RUNTIME_SELECT} WHERE r.runtime_id = $2"),
            &[&default_ms(default_heartbeat_s), &runtime_id],
        )
        .await?
        .as_ref()
        .map(runtime_of))
}

/// The chains of the given runtimes.
pub async fn chains(
    tx: &Transaction<'_>,
    runtime_ids: &[String],
) -> Result<Vec<ChainRow>, DbError> {
    Ok(tx
        .query(
            "SELECT runtime_id, stream, status, next_seq, max_seq, gap_from, gap_to, broken_at,
                 broken_kind, broken_detail, updated_at
             FROM chains WHERE runtime_id = ANY($1) ORDER BY runtime_id, stream DESC",
            &[&runtime_ids],
        )
        .await?
        .iter()
        .map(|row| ChainRow {
            runtime_id: row.get(0),
            stream: row.get(1),
            status: row.get(2),
            next_seq: row.get(3),
            max_seq: row.get(4),
            gap_from: row.get(5),
            gap_to: row.get(6),
            broken_at: row.get(7),
            broken_kind: row.get(8),
            broken_detail: row.get(9),
            updated_at: row.get(10),
        })
        .collect())
}

/// The latest `limit` flags of a runtime, newest first.
pub async fn recent_flags(
    tx: &Transaction<'_>,
    runtime_id: &str,
    limit: i64,
) -> Result<Vec<FlagRow>, DbError> {
    Ok(tx
        .query(
            "SELECT kind, detail, flagged_at FROM runtime_flags WHERE runtime_id = $1
             ORDER BY flag_id DESC LIMIT $2",
            &[&runtime_id, &limit],
        )
        .await?
        .iter()
        .map(|row| FlagRow {
            kind: row.get(0),
            detail: row.get(1),
            flagged_at: row.get(2),
        })
        .collect())
}

/// The latest `limit` checkpoints of a runtime, newest first.
pub async fn recent_checkpoints(
    tx: &Transaction<'_>,
    runtime_id: &str,
    limit: i64,
) -> Result<Vec<CheckpointRow>, DbError> {
    Ok(tx
        .query(
            "SELECT checkpoint_seq, checkpoint_hash, epoch, seq, verdict, received_at
             FROM checkpoints WHERE runtime_id = $1 ORDER BY checkpoint_seq DESC LIMIT $2",
            &[&runtime_id, &limit],
        )
        .await?
        .iter()
        .map(|row| CheckpointRow {
            checkpoint_seq: row.get(0),
            checkpoint_hash: row.get(1),
            epoch: row.get(2),
            seq: row.get(3),
            verdict: row.get(4),
            received_at: row.get(5),
        })
        .collect())
}
