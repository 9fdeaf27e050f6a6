//! `trace.head|read|verify|subscribe|repair` and `audit.head|read|verify`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::jsonrpc::OutgoingNotification;
use atlasbridge_protocol::methods::{
    self as m, ChainName, HeadResult, MAX_READ_LIMIT, ReadParams, RepairParams, RepairResult,
    SubscribeParams, SubscribeResult, SubscriptionEnded,
};
use atlasbridge_protocol::trace::IntegrityReport;
use atlasbridge_protocol::{ErrorCode, ErrorObject};
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info};

use super::{ConnectionHandle, RequestContext, append_error};
use crate::storage::chain::StoredEntry;
use crate::trace::Chain;

/// The most bytes of entries one read returns, so that the reply stays under the line limit.
const READ_MAX_BYTES: usize = 768 * 1024;

/// Which chain a method is about.
pub(super) fn chain_of(method: &str) -> ChainName {
    if method.starts_with("audit.") {
        ChainName::Audit
    } else {
        ChainName::Trace
    }
}

fn chain<'a>(ctx: &'a RequestContext<'_>, name: ChainName) -> &'a Arc<Chain> {
    match name {
        ChainName::Trace => &ctx.daemon.stores().trace,
        ChainName::Audit => ctx.daemon.stores().audit.chain(),
    }
}

fn internal(e: impl std::fmt::Display) -> ErrorObject {
    ErrorObject::new(ErrorCode::InternalError, format!("internal error: {e}"))
}

pub(super) async fn head(
    ctx: &RequestContext<'_>,
    name: ChainName,
) -> Result<HeadResult, ErrorObject> {
    let (head, _) = chain(ctx, name).head().await.map_err(append_error)?;
    Ok(HeadResult {
        seq: head.as_ref().map(|h| h.seq),
        entries: head.as_ref().map_or(0, |h| h.seq + 1),
        entry_hash: head.map(|h| h.entry_hash),
    })
}

#[derive(Serialize)]
pub(super) struct ReadReply {
    entries: Vec<Box<RawValue>>,
    next_seq: Option<u64>,
}

pub(super) async fn read(
    ctx: &RequestContext<'_>,
    name: ChainName,
    params: ReadParams,
) -> Result<ReadReply, ErrorObject> {
    if !(1..=MAX_READ_LIMIT).contains(&params.limit) {
        return Err(ErrorObject::invalid_params(
            "limit",
            format!("limit must be between 1 and {MAX_READ_LIMIT}"),
        ));
    }
    let chain = Arc::clone(chain(ctx, name));
    let (head, _) = chain.head().await.map_err(append_error)?;
    let dir = chain.dir().to_path_buf();
    let kind = chain.kind();
    let entries = tokio::task::spawn_blocking(move || {
        crate::trace::read_entries(
            &dir,
            kind,
            params.from_seq,
            params.limit as usize,
            READ_MAX_BYTES,
        )
    })
    .await
    .map_err(internal)?
    .map_err(|e| {
        ErrorObject::new(
            ErrorCode::StorageFailure,
            format!("cannot read the chain: {e}"),
        )
    })?;
    let last = entries.last().map(|e| e.seq);
    let next_seq = match (last, head) {
        (Some(last), Some(head)) if last < head.seq => Some(last + 1),
        _ => None,
    };
    let entries = entries
        .into_iter()
        .map(|e| RawValue::from_string(e.line.to_string()).map_err(internal))
        .collect::<Result<_, _>>()?;
    Ok(ReadReply { entries, next_seq })
}

pub(super) async fn verify(
    ctx: &RequestContext<'_>,
    name: ChainName,
) -> Result<IntegrityReport, ErrorObject> {
    ctx.require(Feature::AuditIntegrityCheck)?;
    let chain = Arc::clone(chain(ctx, name));
    let findings = chain.findings();
    let dir = chain.dir().to_path_buf();
    let kind = chain.kind();
    let mut report =
        tokio::task::spawn_blocking(move || crate::trace::verify_chain_dir(&dir, kind))
            .await
            .map_err(internal)?
            .map_err(|e| {
                ErrorObject::new(
                    ErrorCode::StorageFailure,
                    format!("cannot read the chain: {e}"),
                )
            })?;
    crate::trace::apply_findings(&mut report, &findings, ctx.daemon.data_dir());
    Ok(report)
}

pub(super) async fn subscribe(
    ctx: &RequestContext<'_>,
    params: SubscribeParams,
) -> Result<SubscribeResult, ErrorObject> {
    let chain = Arc::clone(&ctx.daemon.stores().trace);
    // Subscribe before reading the head: no entry can fall between the replay and the live feed.
    let live = chain.subscribe();
    let (head, _) = chain.head().await.map_err(append_error)?;
    let next = head.as_ref().map_or(0, |h| h.seq + 1);
    let from_seq = params.from_seq.unwrap_or(next).min(next);
    let connection = ctx.connection.clone();
    connection.subscriptions.fetch_add(1, Ordering::Relaxed);
    let shutdown = ctx.daemon.shutdown_token().clone();
    ctx.connection.tracker.spawn(async move {
        let ended = feed(&chain, &connection, live, from_seq, next, &shutdown).await;
        let notice = SubscriptionEnded {
            reason: ended.0.to_owned(),
            last_seq: ended.1,
        };
        // Best effort: a subscriber too slow to take entries may not take this either.
        let _ = connection
            .outbound
            .try_send(notification(m::TRACE_SUBSCRIPTION_ENDED, &notice));
        connection.subscriptions.fetch_sub(1, Ordering::Relaxed);
    });
    Ok(SubscribeResult { from_seq, head })
}

fn notification<T: Serialize>(method: &str, params: &T) -> Bytes {
    let message = OutgoingNotification::new(method, params);
    Bytes::from(atlasbridge_protocol::framing::encode_line(&message).unwrap_or_default())
}

fn entry_notification(entry: &StoredEntry) -> Bytes {
    let mut line = Vec::with_capacity(entry.line.len() + 64);
    line.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"trace.entry\",\"params\":");
    line.extend_from_slice(entry.line.as_bytes());
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// Replays `from_seq..live_from` from disk, then forwards live entries, until the client goes,
/// the daemon stops, or the client falls too far behind. Returns why it ended and the last seq
/// sent.
async fn feed(
    chain: &Chain,
    connection: &ConnectionHandle,
    mut live: tokio::sync::broadcast::Receiver<Arc<StoredEntry>>,
    from_seq: u64,
    live_from: u64,
    shutdown: &tokio_util::sync::CancellationToken,
) -> (&'static str, Option<u64>) {
    let mut last_sent: Option<u64> = None;
    let mut next = from_seq;
    while next < live_from {
        let dir = chain.dir().to_path_buf();
        let kind = chain.kind();
        let batch = tokio::task::spawn_blocking(move || {
            crate::trace::read_entries(&dir, kind, next, 256, READ_MAX_BYTES)
        })
        .await;
        let Ok(Ok(batch)) = batch else {
            return ("read_failed", last_sent);
        };
        if batch.is_empty() {
            break;
        }
        for entry in batch.iter().filter(|e| e.seq < live_from) {
            if !send(connection, entry_notification(entry), shutdown).await {
                return ("closed", last_sent);
            }
            last_sent = Some(entry.seq);
        }
        next = batch.last().map_or(live_from, |e| e.seq + 1);
    }
    loop {
        // Biased, shutdown first: a stopping daemon also finishes every connection, and the
        // subscriber should hear why (`shutdown`), not just that it ended.
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => return ("shutdown", last_sent),
            () = connection.closed.cancelled() => return ("closed", last_sent),
            () = connection.finished.cancelled() => return ("closed", last_sent),
            received = live.recv() => received,
        };
        match received {
            Ok(entry) => {
                if entry.seq < live_from {
                    continue;
                }
                if !send(connection, entry_notification(&entry), shutdown).await {
                    return ("closed", last_sent);
                }
                last_sent = Some(entry.seq);
            }
            Err(RecvError::Lagged(missed)) => {
                debug!(missed, "dropping a subscriber that fell behind");
                return ("too_slow", last_sent);
            }
            Err(RecvError::Closed) => return ("shutdown", last_sent),
        }
    }
}

async fn send(
    connection: &ConnectionHandle,
    line: Bytes,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        () = connection.closed.cancelled() => false,
        () = connection.finished.cancelled() => false,
        () = shutdown.cancelled() => false,
        sent = connection.outbound.send(line) => sent.is_ok(),
    }
}

pub(super) async fn repair(
    ctx: &RequestContext<'_>,
    params: RepairParams,
) -> Result<RepairResult, ErrorObject> {
    let chain = Arc::clone(chain(ctx, params.chain));
    let before = chain.findings();
    let (_, refusal) = chain.head().await.map_err(append_error)?;
    let Some(problem) = refusal else {
        return Err(ErrorObject::new(
            ErrorCode::InvalidRequest,
            "nothing to repair: the chain verifies and accepts appends",
        ));
    };
    let (segment, from) = chain.repair().await.map_err(append_error)?;
    info!(segment = %segment.display(), "chain repaired with a new segment");
    let details = serde_json::json!({
        "chain": params.chain,
        "problem": problem,
        "broken_report": before.broken,
        "lost": before.lost.map(|(expected, found)| serde_json::json!({ "expected_head": expected, "found_head": found })),
        "new_segment": segment.display().to_string(),
        "continues_from": from,
    });
    let audit_seq = ctx
        .daemon
        .audit()
        .record("chain_repaired", &ctx.actor(), details)
        .await
        .ok();
    crate::lifecycle::store_heads(ctx.daemon, None).await;
    Ok(RepairResult {
        chain: params.chain,
        new_segment: segment.display().to_string(),
        continues_from: from,
        audit_seq,
    })
}
