//! Everything the server reads and writes, each function inside a caller's org-scoped
//! transaction (see [`crate::db::org_transaction`]): row-level security, not these queries,
//! keeps organisations apart, so a missing `WHERE org_id` cannot leak a row.

pub mod api_keys;
mod body_text;
pub mod people;
pub mod policies;
pub mod registry;
pub mod runtime_events;
pub mod search;

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use atlasbridge_protocol::cloud::messages::{AuditBatch, Resume, Stream, WireHead};
use atlasbridge_protocol::trace::checkpoint::Checkpoint;
use serde_json::{Value, json};
use tokio_postgres::Transaction;
use tracing::warn;

use crate::auth::ApiKey;
use crate::chain::{
    CheckpointVerdict, EntryFacts, Examined, PreviousCheckpoint, examine_for_storage,
    judge_checkpoint, judge_link,
};
use crate::db::DbError;
use crate::entry_columns::{SearchColumns, decision_summary, search_columns};
use crate::live::{self, LiveEvent, PublishError};
use body_text::BodyText;

/// Findings recorded per batch at most (a garbage batch must not write thousands of flags).
const MAX_FLAGS_PER_BATCH: usize = 10;

/// Creates an organisation.
pub async fn create_org(tx: &Transaction<'_>, org_id: &str, name: &str) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO orgs (org_id, name) VALUES ($1, $2)",
        &[&org_id, &name],
    )
    .await?;
    Ok(())
}

/// Stores the hash of a new API key of `org_id`.
pub async fn create_api_key(
    tx: &Transaction<'_>,
    org_id: &str,
    key: &ApiKey,
    label: &str,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO api_keys (org_id, key_id, secret_sha256, label) VALUES ($1, $2, $3, $4)",
        &[&org_id, &key.key_id, &key.secret_hash(), &label],
    )
    .await?;
    Ok(())
}

/// Whether `key` is a live (not revoked) key of the transaction's organisation.
pub async fn api_key_is_valid(tx: &Transaction<'_>, key: &ApiKey) -> Result<bool, DbError> {
    let row = tx
        .query_opt(
            "SELECT secret_sha256 FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
            &[&key.key_id],
        )
        .await?;
    Ok(row.is_some_and(|row| key.matches(row.get(0))))
}

/// Whether the key a token was issued for is still live.
pub async fn api_key_is_live(tx: &Transaction<'_>, key_id: &str) -> Result<bool, DbError> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
            &[&key_id],
        )
        .await?;
    Ok(row.is_some())
}

/// Revokes a key: its tokens stop working at their next use.
pub async fn revoke_api_key(tx: &Transaction<'_>, key_id: &str) -> Result<bool, DbError> {
    let changed = tx
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
            &[&key_id],
        )
        .await?;
    Ok(changed > 0)
}

/// Registers (or refreshes) a runtime after a good hello; returns where the server's copies of
/// its chains end.
pub async fn register_runtime(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    agent_version: &str,
    edition: &str,
) -> Result<Registered, DbError> {
    let epoch: i64 = tx
        .query_one(
            "INSERT INTO runtimes (org_id, runtime_id, agent_version, edition) VALUES ($1, $2, $3, $4)
             ON CONFLICT (org_id, runtime_id) DO UPDATE
                 SET last_seen = now(), agent_version = excluded.agent_version,
                     edition = excluded.edition,
                     connection_epoch = runtimes.connection_epoch + 1
             RETURNING connection_epoch",
            &[&org_id, &runtime_id, &agent_version, &edition],
        )
        .await?
        .get(0);
    tx.execute(
        "INSERT INTO chains (org_id, runtime_id, stream) VALUES ($1, $2, 'trace'), ($1, $2, 'audit')
         ON CONFLICT DO NOTHING",
        &[&org_id, &runtime_id],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT stream, next_seq FROM chains WHERE runtime_id = $1",
            &[&runtime_id],
        )
        .await?;
    let mut resume = Resume { trace: 0, audit: 0 };
    for row in rows {
        let next = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        match row.get::<_, &str>(0) {
            "trace" => resume.trace = next,
            _ => resume.audit = next,
        }
    }
    Ok(Registered { resume, epoch })
}

/// A runtime registered by its hello.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    /// Where the server's copies of its chains end.
    pub resume: Resume,
    /// The connection epoch this hello started (see [`HeadSource::Heartbeat`]).
    pub epoch: i64,
}

/// Records a heartbeat: the runtime is seen, and `interval_ms` (measured on the connection
/// since its previous heartbeat) is how often it beats.
pub async fn record_heartbeat(
    tx: &Transaction<'_>,
    runtime_id: &str,
    interval_ms: Option<i64>,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE runtimes SET last_seen = now(), last_heartbeat = now(),
             heartbeat_interval_ms = COALESCE($2, heartbeat_interval_ms)
         WHERE runtime_id = $1",
        &[&runtime_id, &interval_ms],
    )
    .await?;
    Ok(())
}

/// What an ingested batch left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Every entry up to this seq is committed (once the transaction is): what the ack says.
    pub through_seq: Option<u64>,
    /// Entries stored now (not held before).
    pub stored: usize,
    /// Problems found in this batch (also recorded as flags): their kind and what was found.
    pub problems: Vec<(&'static str, String)>,
}

/// One finding that breaks a chain.
#[derive(Debug, Clone)]
struct Break {
    seq: u64,
    kind: &'static str,
    detail: String,
}

fn to_db(seq: u64) -> i64 {
    // Every seq was checked to fit when it was read (`examine`, heads).
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn from_db(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// The statement that stores the rows of a batch, one array per column (one statement for a
/// whole group); a macro so that both forms below share its text.
macro_rules! insert_entries {
    () => {
        "INSERT INTO entries (org_id, runtime_id, stream, seq, entry_id, entry_hash, prev_hash,
             hash_ok, body, occurred_at, session_id, agent_id, action, risk, event_type)
         SELECT $1, $2, $3, * FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::text[],
             $8::bool[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::text[],
             $14::text[], $15::text[])"
    };
}

/// For a batch that only extends the chain.
const INSERT_ENTRIES: &str = insert_entries!();

/// For a batch that resends entries: what is held already stays.
const INSERT_ENTRIES_IDEMPOTENT: &str = concat!(insert_entries!(), " ON CONFLICT DO NOTHING");

/// An entry of a batch that could be examined.
struct Received<'a> {
    facts: EntryFacts,
    /// As received.
    entry: &'a Value,
    /// What the `body` column stores (see [`Examined::text`]).
    text: Vec<u8>,
}

/// Ingests a batch idempotently by (runtime, stream, seq), re-verifying every entry's hash and
/// its link to the previous one, and moves the chain's verdict on. Call it inside the
/// transaction whose COMMIT precedes the ack.
pub async fn ingest(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    batch: &AuditBatch,
) -> Result<IngestOutcome, DbError> {
    let stream = batch.stream.name();
    // The row lock serialises two connections of one runtime (a reconnect overlapping).
    let chain = tx
        .query_one(
            "SELECT next_seq, head_hash, max_seq, broken_at, status, gap_from, gap_to FROM chains
             WHERE runtime_id = $1 AND stream = $2 FOR UPDATE",
            &[&runtime_id, &stream],
        )
        .await?;
    let mut next_seq: u64 = from_db(chain.get(0));
    let mut head_hash: String = chain.get(1);
    let old_max: Option<u64> = chain.get::<_, Option<i64>>(2).map(from_db);
    let already_broken = chain.get::<_, Option<i64>>(3).is_some();
    let old_status: (String, Option<i64>, Option<i64>) = (chain.get(4), chain.get(5), chain.get(6));

    let mut breaks = Vec::new();
    let mut facts: Vec<Received<'_>> = Vec::with_capacity(batch.entries.len());
    for (index, entry) in batch.entries.iter().enumerate() {
        match examine_for_storage(entry) {
            Ok(Examined { facts: found, text }) => facts.push(Received {
                facts: found,
                entry,
                text,
            }),
            Err(e) => breaks.push(Break {
                seq: batch.from_seq.saturating_add(index as u64),
                kind: "malformed",
                detail: e.to_string(),
            }),
        }
    }
    let seqs: Vec<i64> = facts.iter().map(|r| to_db(r.facts.seq)).collect();
    let held = held_hashes(tx, runtime_id, stream, &seqs, old_max).await?;
    let witnessed: HashMap<i64, String> = tx
        .query(
            "SELECT seq, entry_hash FROM witnessed_heads
             WHERE runtime_id = $1 AND stream = $2 AND seq = ANY($3)",
            &[&runtime_id, &stream, &seqs],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

    let mut fresh: Vec<Received<'_>> = Vec::with_capacity(facts.len());
    let mut fresh_seqs = HashSet::new();
    let mut forked = false;
    for received in facts {
        let found = &received.facts;
        let seq = to_db(found.seq);
        if let Some(stored) = held.get(&seq) {
            // A resent entry must be the same entry; another one at the same seq is a fork.
            if *stored != found.entry_hash {
                forked = true;
                breaks.push(Break {
                    seq: found.seq,
                    kind: "fork",
                    detail: format!(
                        "{stream} seq {} resent with hash {}, but {stored} is held",
                        found.seq, found.entry_hash
                    ),
                });
            }
            continue;
        }
        if let Some(head) = witnessed.get(&seq)
            && *head != found.entry_hash
        {
            forked = true;
            breaks.push(Break {
                seq: found.seq,
                kind: "fork",
                detail: format!(
                    "{stream} seq {} arrived with hash {}, but the runtime showed head {head} for it",
                    found.seq, found.entry_hash
                ),
            });
        }
        // A batch naming one seq twice keeps the first.
        if !fresh_seqs.insert(found.seq) {
            continue;
        }
        fresh.push(received);
    }

    if !fresh.is_empty() {
        let seqs: Vec<i64> = fresh.iter().map(|r| to_db(r.facts.seq)).collect();
        let ids: Vec<&str> = fresh.iter().map(|r| r.facts.entry_id.as_str()).collect();
        let hashes: Vec<&str> = fresh.iter().map(|r| r.facts.entry_hash.as_str()).collect();
        let prevs: Vec<&str> = fresh.iter().map(|r| r.facts.prev_hash.as_str()).collect();
        let oks: Vec<bool> = fresh.iter().map(|r| r.facts.hash_ok).collect();
        let bodies: Vec<BodyText<'_>> = fresh.iter().map(|r| BodyText(&r.text)).collect();
        // The searchable fields, in columns of their own (migration 0003).
        let received = SystemTime::now();
        let columns: Vec<SearchColumns> = fresh
            .iter()
            .map(|r| search_columns(batch.stream, r.entry, received))
            .collect();
        let times: Vec<SystemTime> = columns.iter().map(|c| c.occurred_at).collect();
        let sessions: Vec<Option<&str>> = columns.iter().map(|c| c.session_id.as_deref()).collect();
        let agents: Vec<Option<&str>> = columns.iter().map(|c| c.agent_id.as_deref()).collect();
        let actions: Vec<Option<&str>> = columns.iter().map(|c| c.action.as_deref()).collect();
        let risks: Vec<Option<&str>> = columns.iter().map(|c| c.risk.as_deref()).collect();
        let event_types: Vec<Option<&str>> =
            columns.iter().map(|c| c.event_type.as_deref()).collect();
        // Under the chain's row lock nothing beyond `max_seq` is held, and what was held below
        // it was looked up and left out of `fresh`: a batch that only extends the chain cannot
        // conflict, and skips the arbiter check on every row (3 µs each, docs/performance.md).
        // A resend that overlaps keeps it, as a second guard for idempotency.
        let overlaps = old_max.is_some_and(|max| seqs.iter().any(|seq| *seq <= to_db(max)));
        let statement = if overlaps {
            INSERT_ENTRIES_IDEMPOTENT
        } else {
            INSERT_ENTRIES
        };
        tx.execute(
            statement,
            &[
                &org_id,
                &runtime_id,
                &stream,
                &seqs,
                &ids,
                &hashes,
                &prevs,
                &oks,
                &bodies,
                &times,
                &sessions,
                &agents,
                &actions,
                &risks,
                &event_types,
            ],
        )
        .await?;
        if batch.stream == Stream::Trace {
            // Fires on COMMIT only: subscribers never hear of a batch that rolled back.
            let events = fresh
                .iter()
                .zip(&columns)
                .map(|(Received { facts: found, .. }, columns)| LiveEvent {
                    kind: live::kind::DECISION.to_owned(),
                    payload: decision_summary(
                        runtime_id,
                        found.seq,
                        &found.entry_id,
                        found.hash_ok,
                        columns,
                    ),
                })
                .collect();
            publish_or_log(tx, org_id, events).await?;
        }
    }

    // Move the contiguous prefix on, judging each link as it joins.
    let batch_max = fresh.iter().map(|r| r.facts.seq).max();
    let new_max = old_max.max(batch_max);
    let mut gap = None;
    if new_max.is_some_and(|max| max >= next_seq) {
        let mut fresh_sorted: Vec<&EntryFacts> = fresh.iter().map(|r| &r.facts).collect();
        fresh_sorted.sort_by_key(|f| f.seq);
        let contiguous_in_batch = fresh_sorted
            .iter()
            .enumerate()
            .all(|(i, f)| f.seq == next_seq + i as u64);
        let nothing_held_beyond = old_max.is_none_or(|max| max < next_seq);
        let rows: Vec<(u64, String, String, bool)> = if contiguous_in_batch && nothing_held_beyond {
            fresh_sorted
                .iter()
                .map(|f| (f.seq, f.entry_hash.clone(), f.prev_hash.clone(), f.hash_ok))
                .collect()
        } else {
            tx.query(
                "SELECT seq, entry_hash, prev_hash, hash_ok FROM entries
                 WHERE runtime_id = $1 AND stream = $2 AND seq >= $3 ORDER BY seq",
                &[&runtime_id, &stream, &to_db(next_seq)],
            )
            .await?
            .iter()
            .map(|row| (from_db(row.get(0)), row.get(1), row.get(2), row.get(3)))
            .collect()
        };
        for (seq, entry_hash, prev_hash, hash_ok) in rows {
            if seq != next_seq {
                gap = Some((next_seq, seq - 1));
                break;
            }
            let facts = EntryFacts {
                seq,
                entry_id: String::new(),
                entry_hash,
                prev_hash,
                hash_ok,
            };
            if let Some(problem) = judge_link(&head_hash, &facts) {
                breaks.push(Break {
                    seq,
                    kind: problem.name(),
                    detail: format!("{stream} seq {seq}: {}", problem.name()),
                });
            }
            head_hash = facts.entry_hash;
            next_seq += 1;
        }
    }

    breaks.sort_by_key(|b| b.seq);
    let first_break = breaks.first().cloned();
    let status = if already_broken || first_break.is_some() {
        "broken"
    } else if gap.is_some() {
        "gap"
    } else {
        "continuous"
    };
    tx.execute(
        "UPDATE chains SET next_seq = $3, head_hash = $4, max_seq = $5, status = $6,
             gap_from = $7, gap_to = $8,
             broken_kind = CASE WHEN broken_at IS NULL THEN $10 ELSE broken_kind END,
             broken_detail = CASE WHEN broken_at IS NULL THEN $11 ELSE broken_detail END,
             broken_at = COALESCE(broken_at, $9),
             updated_at = now()
         WHERE runtime_id = $1 AND stream = $2",
        &[
            &runtime_id,
            &stream,
            &to_db(next_seq),
            &head_hash,
            &new_max.map(to_db),
            &status,
            &gap.map(|(from, _)| to_db(from)),
            &gap.map(|(_, to)| to_db(to)),
            &first_break.as_ref().map(|b| to_db(b.seq)),
            &first_break.as_ref().map(|b| b.kind),
            &first_break.as_ref().map(|b| b.detail.as_str()),
        ],
    )
    .await?;
    let new_status = (
        status.to_owned(),
        gap.map(|(from, _)| to_db(from)),
        gap.map(|(_, to)| to_db(to)),
    );
    if new_status != old_status {
        let payload = json!({
            "runtime_id": runtime_id,
            "stream": stream,
            "status": status,
            "gap_from": gap.map(|(from, _)| from),
            "gap_to": gap.map(|(_, to)| to),
            "broken_at": first_break.as_ref().map(|b| b.seq),
            "broken_kind": first_break.as_ref().map(|b| b.kind),
        });
        publish_or_log(tx, org_id, vec![chain_event(payload)]).await?;
    }
    for found in breaks.iter().take(MAX_FLAGS_PER_BATCH) {
        add_flag(tx, org_id, runtime_id, found.kind, &found.detail).await?;
    }
    if forked {
        set_witness_status(tx, org_id, runtime_id, "forked", &breaks_detail(&breaks)).await?;
    }
    Ok(IngestOutcome {
        through_seq: next_seq.checked_sub(1),
        stored: fresh.len(),
        problems: breaks.into_iter().map(|b| (b.kind, b.detail)).collect(),
    })
}

/// The hashes held for those of `seqs` that are held already. Under the chain's row lock
/// nothing beyond `max_seq` can be held, so a batch that only extends the chain (what a runtime
/// streaming in order always sends) costs no lookup at all.
async fn held_hashes(
    tx: &Transaction<'_>,
    runtime_id: &str,
    stream: &str,
    seqs: &[i64],
    max_seq: Option<u64>,
) -> Result<HashMap<i64, String>, DbError> {
    let Some(max_seq) = max_seq.map(to_db) else {
        return Ok(HashMap::new());
    };
    let candidates: Vec<i64> = seqs.iter().copied().filter(|seq| *seq <= max_seq).collect();
    if candidates.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(tx
        .query(
            "SELECT seq, entry_hash FROM entries WHERE runtime_id = $1 AND stream = $2 AND seq = ANY($3)",
            &[&runtime_id, &stream, &candidates],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

fn breaks_detail(breaks: &[Break]) -> String {
    breaks
        .iter()
        .find(|b| b.kind == "fork")
        .map(|b| b.detail.clone())
        .unwrap_or_default()
}

async fn add_flag(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    kind: &str,
    detail: &str,
) -> Result<(), DbError> {
    warn!(runtime_id, kind, detail, "runtime flagged");
    tx.execute(
        "INSERT INTO runtime_flags (org_id, runtime_id, kind, detail) VALUES ($1, $2, $3, $4)",
        &[&org_id, &runtime_id, &kind, &detail],
    )
    .await?;
    Ok(())
}

/// The first witness finding stays: later ones are in `runtime_flags`.
async fn set_witness_status(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    status: &str,
    detail: &str,
) -> Result<(), DbError> {
    let changed = tx
        .execute(
            "UPDATE runtimes SET witness_status = $2, witness_detail = $3
             WHERE runtime_id = $1 AND witness_status = 'ok'",
            &[&runtime_id, &status, &detail],
        )
        .await?;
    if changed > 0 {
        let event = runtime_status_event(runtime_id, "flagged", status);
        publish_or_log(tx, org_id, vec![event]).await?;
    }
    Ok(())
}

/// A `runtime_status` event: `change` is `connected`, `disconnected` or `flagged`.
pub fn runtime_status_event(runtime_id: &str, change: &str, witness_status: &str) -> LiveEvent {
    LiveEvent {
        kind: live::kind::RUNTIME_STATUS.to_owned(),
        payload: json!({
            "runtime_id": runtime_id,
            "change": change,
            "witness_status": witness_status,
        }),
    }
}

/// Tells the live stream that a runtime connected or disconnected (inside `tx`).
pub async fn publish_runtime_change(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    change: &str,
) -> Result<(), DbError> {
    let witness_status: String = tx
        .query_opt(
            "SELECT witness_status FROM runtimes WHERE runtime_id = $1",
            &[&runtime_id],
        )
        .await?
        .map_or_else(|| "ok".to_owned(), |row| row.get(0));
    let event = runtime_status_event(runtime_id, change, &witness_status);
    publish_or_log(tx, org_id, vec![event]).await
}

/// Marks a chain broken at `seq` unless it already was (the first bad seq stays).
async fn break_chain(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    stream: &str,
    seq: u64,
    kind: &str,
    detail: &str,
) -> Result<(), DbError> {
    let changed = tx
        .execute(
            "UPDATE chains SET status = 'broken', broken_at = $3, broken_kind = $4, broken_detail = $5,
                 updated_at = now()
             WHERE runtime_id = $1 AND stream = $2 AND broken_at IS NULL",
            &[&runtime_id, &stream, &to_db(seq), &kind, &detail],
        )
        .await?;
    if changed > 0 {
        let payload = json!({
            "runtime_id": runtime_id,
            "stream": stream,
            "status": "broken",
            "gap_from": null,
            "gap_to": null,
            "broken_at": seq,
            "broken_kind": kind,
        });
        publish_or_log(tx, org_id, vec![chain_event(payload)]).await?;
    }
    Ok(())
}

fn chain_event(payload: Value) -> LiveEvent {
    LiveEvent {
        kind: live::kind::CHAIN_STATUS.to_owned(),
        payload,
    }
}

/// Publishes to the live stream inside `tx`. Only a database failure fails the transaction;
/// an event that cannot be published (too large) is logged and left out, because the live
/// stream must never cost a runtime its ingest.
pub(crate) async fn publish_or_log(
    tx: &Transaction<'_>,
    org_id: &str,
    events: Vec<LiveEvent>,
) -> Result<(), DbError> {
    match live::publish_all(tx, org_id, events).await {
        Ok(()) => Ok(()),
        Err(PublishError::Database(e)) => Err(DbError::Query(e)),
        Err(e) => {
            warn!(error = %e, "an event was left out of the live stream");
            Ok(())
        }
    }
}

/// The witness's answer to a head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// Recorded.
    Accepted,
    /// Refused, and the runtime flagged: `kind` is `forked` or `rewound`.
    Refused {
        /// `forked` or `rewound`.
        kind: &'static str,
        /// Why.
        detail: String,
    },
}

/// Where a head came from. Heads of hellos and heartbeats are the chain's current end and may
/// never go backwards; a checkpoint's head is an older point, checked for forks only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadSource {
    /// The hello's heads.
    Hello,
    /// A heartbeat's heads, on the connection whose hello started `epoch`. When a newer hello
    /// has started another epoch since, the head is stale (the runtime has moved on to another
    /// connection) and is checked for forks only.
    Heartbeat {
        /// The epoch of the connection the heartbeat came on.
        epoch: i64,
    },
    /// A checkpoint's (seq, entry_hash).
    Checkpoint,
}

impl HeadSource {
    fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Checkpoint => "checkpoint",
        }
    }
}

/// Witnesses a head of `stream`: refuses (and flags) one that forks — another hash at a seq the
/// server already holds or witnessed — or, for current heads, one that goes backwards.
pub async fn witness_head(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    stream: Stream,
    head: &WireHead,
    source: HeadSource,
) -> Result<HeadVerdict, DbError> {
    let name = stream.name();
    let Ok(seq) = i64::try_from(head.seq) else {
        return refuse(
            tx,
            org_id,
            runtime_id,
            name,
            head.seq,
            "forked",
            format!("{name} head seq {} is out of range", head.seq),
        )
        .await;
    };
    let known = tx
        .query(
            "SELECT entry_hash, 'witnessed' FROM witnessed_heads WHERE runtime_id = $1 AND stream = $2 AND seq = $3
             UNION ALL
             SELECT entry_hash, 'received' FROM entries WHERE runtime_id = $1 AND stream = $2 AND seq = $3",
            &[&runtime_id, &name, &seq],
        )
        .await?;
    for row in &known {
        let hash: &str = row.get(0);
        if hash != head.entry_hash {
            let how: &str = row.get(1);
            let detail = format!(
                "{name} head at seq {} has hash {} ({}), but {hash} was {how} for that seq",
                head.seq,
                head.entry_hash,
                source.name()
            );
            return refuse(tx, org_id, runtime_id, name, head.seq, "forked", detail).await;
        }
    }
    if source != HeadSource::Checkpoint {
        // One statement, so the epoch read is never older than the heads it is compared with:
        // a newer hello commits its heads and its epoch together.
        let row = tx
            .query_one(
                "SELECT GREATEST(
                     (SELECT max(seq) FROM witnessed_heads
                      WHERE runtime_id = $1 AND stream = $2 AND source <> 'checkpoint'),
                     (SELECT max_seq FROM chains WHERE runtime_id = $1 AND stream = $2)),
                     (SELECT connection_epoch FROM runtimes WHERE runtime_id = $1)",
                &[&runtime_id, &name],
            )
            .await?;
        let highest: Option<i64> = row.get(0);
        let current_epoch: Option<i64> = row.get(1);
        let stale =
            matches!(source, HeadSource::Heartbeat { epoch } if Some(epoch) != current_epoch);
        if let Some(highest) = highest
            && seq < highest
            && !stale
        {
            let detail = format!(
                "{name} head went back to seq {} ({}) after seq {highest} was seen",
                head.seq,
                source.name()
            );
            return refuse(
                tx,
                org_id,
                runtime_id,
                name,
                head.seq + 1,
                "rewound",
                detail,
            )
            .await;
        }
    }
    tx.execute(
        "INSERT INTO witnessed_heads (org_id, runtime_id, stream, seq, entry_hash, source)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[
            &org_id,
            &runtime_id,
            &name,
            &seq,
            &head.entry_hash,
            &source.name(),
        ],
    )
    .await?;
    Ok(HeadVerdict::Accepted)
}

async fn refuse(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    stream: &str,
    break_seq: u64,
    kind: &'static str,
    detail: String,
) -> Result<HeadVerdict, DbError> {
    add_flag(tx, org_id, runtime_id, kind, &detail).await?;
    set_witness_status(tx, org_id, runtime_id, kind, &detail).await?;
    let chain_kind = if kind == "forked" { "fork" } else { "rewound" };
    break_chain(
        tx, org_id, runtime_id, stream, break_seq, chain_kind, &detail,
    )
    .await?;
    Ok(HeadVerdict::Refused { kind, detail })
}

/// The witness's answer to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointOutcome {
    /// Stored with this verdict (`verified` or `unverifiable`).
    Stored(&'static str),
    /// The same checkpoint was stored before.
    Duplicate,
    /// Refused and flagged (stored as `bad` when it was new).
    Refused(String),
}

/// Verifies and stores a checkpoint; its head is witnessed too.
pub async fn store_checkpoint(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    checkpoint: &Checkpoint,
    body: &Value,
) -> Result<CheckpointOutcome, DbError> {
    let Ok(n) = i64::try_from(checkpoint.checkpoint_seq) else {
        return Ok(CheckpointOutcome::Refused(
            "checkpoint_seq out of range".to_owned(),
        ));
    };
    let hash = checkpoint.checkpoint_hash();
    let existing = tx
        .query_opt(
            "SELECT checkpoint_hash FROM checkpoints WHERE runtime_id = $1 AND checkpoint_seq = $2",
            &[&runtime_id, &n],
        )
        .await?;
    if let Some(row) = existing {
        let stored: &str = row.get(0);
        if stored == hash {
            return Ok(CheckpointOutcome::Duplicate);
        }
        let detail = format!("checkpoint {n} resent with hash {hash}, but {stored} is held");
        add_flag(tx, org_id, runtime_id, "forked", &detail).await?;
        set_witness_status(tx, org_id, runtime_id, "forked", &detail).await?;
        let at = checkpoint.seq.unwrap_or(0);
        break_chain(tx, org_id, runtime_id, "trace", at, "fork", &detail).await?;
        return Ok(CheckpointOutcome::Refused(detail));
    }
    let previous = if n == 0 {
        None
    } else {
        tx.query_opt(
            "SELECT checkpoint_hash, epoch, epoch_key, seq FROM checkpoints
             WHERE runtime_id = $1 AND checkpoint_seq = $2 AND verdict = 'verified'",
            &[&runtime_id, &(n - 1)],
        )
        .await?
        .map(|row| PreviousCheckpoint {
            checkpoint_hash: row.get(0),
            epoch: from_db(row.get(1)),
            epoch_key: row.get::<_, Option<String>>(2).unwrap_or_default(),
            seq: row.get::<_, Option<i64>>(3).map(from_db),
        })
    };
    let verdict = judge_checkpoint(checkpoint, runtime_id, previous.as_ref());
    let (verdict_name, epoch_key, refusal) = match verdict {
        CheckpointVerdict::Verified { epoch_key } => ("verified", Some(epoch_key), None),
        CheckpointVerdict::Unverifiable => ("unverifiable", None, None),
        CheckpointVerdict::Bad(why) => ("bad", None, Some(why)),
    };
    let seq = checkpoint.seq.and_then(|s| i64::try_from(s).ok());
    let epoch = i64::try_from(checkpoint.epoch).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO checkpoints (org_id, runtime_id, checkpoint_seq, checkpoint_hash,
             prev_checkpoint_hash, epoch, epoch_key, seq, entry_hash, verdict, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &org_id,
            &runtime_id,
            &n,
            &hash,
            &checkpoint.prev_checkpoint_hash,
            &epoch,
            &epoch_key,
            &seq,
            &checkpoint.entry_hash,
            &verdict_name,
            body,
        ],
    )
    .await?;
    if let Some(why) = refusal {
        add_flag(tx, org_id, runtime_id, "bad_checkpoint", &why).await?;
        set_witness_status(tx, org_id, runtime_id, "bad_checkpoint", &why).await?;
        return Ok(CheckpointOutcome::Refused(why));
    }
    if let Some(seq) = checkpoint.seq {
        let head = WireHead {
            seq,
            entry_hash: checkpoint.entry_hash.clone(),
        };
        if let HeadVerdict::Refused { detail, .. } = witness_head(
            tx,
            org_id,
            runtime_id,
            Stream::Trace,
            &head,
            HeadSource::Checkpoint,
        )
        .await?
        {
            return Ok(CheckpointOutcome::Refused(detail));
        }
    }
    Ok(CheckpointOutcome::Stored(verdict_name))
}

/// A chain's state as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStatus {
    /// `continuous`, `gap` or `broken`.
    pub status: String,
    /// Entries 0..next_seq are all held.
    pub next_seq: u64,
    /// The highest seq held.
    pub max_seq: Option<u64>,
    /// The missing range, while there is one.
    pub gap: Option<(u64, u64)>,
    /// The first bad seq, its kind and why.
    pub broken: Option<(u64, String, String)>,
}

/// The chain status of a runtime's stream, `None` if the runtime is unknown (in this org).
pub async fn chain_status(
    tx: &Transaction<'_>,
    runtime_id: &str,
    stream: Stream,
) -> Result<Option<ChainStatus>, DbError> {
    let row = tx
        .query_opt(
            "SELECT status, next_seq, max_seq, gap_from, gap_to, broken_at, broken_kind, broken_detail
             FROM chains WHERE runtime_id = $1 AND stream = $2",
            &[&runtime_id, &stream.name()],
        )
        .await?;
    Ok(row.map(|row| {
        let status: String = row.get(0);
        let gap = match (row.get::<_, Option<i64>>(3), row.get::<_, Option<i64>>(4)) {
            (Some(from), Some(to)) => Some((from_db(from), from_db(to))),
            _ => None,
        };
        ChainStatus {
            gap: gap.filter(|_| status == "gap"),
            status,
            next_seq: from_db(row.get(1)),
            max_seq: row.get::<_, Option<i64>>(2).map(from_db),
            broken: row.get::<_, Option<i64>>(5).map(|at| {
                (
                    from_db(at),
                    row.get::<_, Option<String>>(6).unwrap_or_default(),
                    row.get::<_, Option<String>>(7).unwrap_or_default(),
                )
            }),
        }
    }))
}

/// A runtime in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRecord {
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
    /// RFC 3339.
    pub first_seen: String,
    /// RFC 3339.
    pub last_seen: String,
}

/// One runtime of the transaction's org; a runtime is inactive once three heartbeat intervals
/// (measured, else `default_heartbeat_s`) have passed without one.
pub async fn runtime(
    tx: &Transaction<'_>,
    runtime_id: &str,
    default_heartbeat_s: u64,
) -> Result<Option<RuntimeRecord>, DbError> {
    let default_ms = i64::try_from(default_heartbeat_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let row = tx
        .query_opt(
            "SELECT runtime_id,
                 CASE WHEN now() - last_seen
                           > 3 * make_interval(secs => COALESCE(heartbeat_interval_ms, $2)::double precision / 1000.0)
                      THEN 'inactive' ELSE 'active' END,
                 witness_status, witness_detail, agent_version,
                 to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                 to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
             FROM runtimes WHERE runtime_id = $1",
            &[&runtime_id, &default_ms],
        )
        .await?;
    Ok(row.map(|row| RuntimeRecord {
        runtime_id: row.get(0),
        status: row.get(1),
        witness_status: row.get(2),
        witness_detail: row.get(3),
        agent_version: row.get(4),
        first_seen: row.get(5),
        last_seen: row.get(6),
    }))
}

/// The flags of a runtime, oldest first: (kind, detail).
pub async fn flags(
    tx: &Transaction<'_>,
    runtime_id: &str,
) -> Result<Vec<(String, String)>, DbError> {
    Ok(tx
        .query(
            "SELECT kind, detail FROM runtime_flags WHERE runtime_id = $1 ORDER BY flag_id",
            &[&runtime_id],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
