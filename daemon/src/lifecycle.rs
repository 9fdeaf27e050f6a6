//! Start-up and shutdown of the storage side: opening and recovering the chains, auditing what
//! recovery found, the checkpoint schedule, and the final checkpoint and state file at exit.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::trace::verify::ChainKind;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::audit::{Actor, AuditLog};
use crate::checkpoints::{Checkpointer, Reanchor};
use crate::config::TraceConfig;
use crate::state::{Daemon, Stores};
use crate::trace::state::{self as head_state, Heads};
use crate::trace::{self, Chain, Findings, V1Trace};

/// What opening the stores found, to be reported and audited once the daemon runs.
#[derive(Debug, Default)]
pub struct StartupFindings {
    /// The decision trace.
    pub trace: Findings,
    /// The audit log.
    pub audit: Findings,
    /// The checkpoint sequence had to start over.
    pub reanchor: Option<Reanchor>,
    /// The state file could not be read.
    pub state_file: Option<String>,
}

/// Opens and recovers the trace, the audit log, the v1 writer and the checkpoint signer.
/// Blocking (file I/O): call it before serving.
pub fn open_stores(
    data_dir: &Path,
    config: &TraceConfig,
) -> anyhow::Result<(Stores, Vec<JoinHandle<()>>, StartupFindings)> {
    let mut findings = StartupFindings::default();
    let recorded = match head_state::load(data_dir) {
        Ok(heads) => heads.unwrap_or_default(),
        Err(e) => {
            findings.state_file = Some(e);
            Heads::default()
        }
    };
    let (audit, audit_thread) = Chain::open(
        &trace::audit_dir(data_dir),
        ChainKind::Audit,
        config,
        recorded.audit.as_ref(),
    )?;
    let (trace_chain, trace_thread) = Chain::open(
        &trace::trace_dir(data_dir),
        ChainKind::Trace,
        config,
        recorded.trace.as_ref(),
    )?;
    let (v1, v1_thread) = V1Trace::open(data_dir, config)?;
    let (checkpointer, reanchor) = Checkpointer::open(
        data_dir,
        &trace::trace_dir(data_dir),
        recorded.checkpoint.as_ref(),
    )?;
    findings.trace = trace_chain.findings();
    findings.audit = audit.findings();
    findings.reanchor = reanchor;
    trace::log_findings(ChainKind::Trace, &findings.trace);
    trace::log_findings(ChainKind::Audit, &findings.audit);
    // The decision service remembers idempotency answers and auto-reply counts from the trace.
    let decisions = crate::decisions::DecisionService::open(data_dir, &trace::trace_dir(data_dir))?;
    let stores = Stores {
        decisions,
        trace: Arc::new(trace_chain),
        v1,
        audit: AuditLog::new(Arc::new(audit)),
        checkpointer: tokio::sync::Mutex::new(checkpointer),
    };
    Ok((
        stores,
        vec![trace_thread, audit_thread, v1_thread],
        findings,
    ))
}

/// Audits the start and everything recovery found.
pub async fn audit_startup(
    daemon: &Daemon,
    findings: &StartupFindings,
    replaced_stale_socket: bool,
) {
    let audit = daemon.audit();
    let settings = daemon.settings();
    let _ = audit
        .record(
            "daemon_started",
            &Actor::Daemon,
            json!({
                "version": crate::VERSION,
                "pid": std::process::id(),
                "edition": settings.features.edition(),
                "socket": daemon.socket().display().to_string(),
                "config_file": settings.config_file.as_ref().map(|p| p.display().to_string()),
                "replaced_stale_socket": replaced_stale_socket,
            }),
        )
        .await;
    for (name, chain_findings) in [("trace", &findings.trace), ("audit", &findings.audit)] {
        if let Some(torn) = &chain_findings.torn {
            let _ = audit
                .record(
                    "trace_recovered",
                    &Actor::Daemon,
                    json!({ "chain": name, "file": torn.file.display().to_string(), "bytes_dropped": torn.bytes }),
                )
                .await;
        }
        if let Some(report) = &chain_findings.broken {
            let _ = audit
                .record(
                    "chain_broken",
                    &Actor::Daemon,
                    json!({ "chain": name, "report": report }),
                )
                .await;
        }
        if let Some((expected, found)) = &chain_findings.lost {
            let _ = audit
                .record(
                    "entries_missing",
                    &Actor::Daemon,
                    json!({ "chain": name, "expected_head": expected, "found_head": found }),
                )
                .await;
        }
    }
    if let Some(reanchor) = &findings.reanchor {
        warn!(reason = %reanchor.reason, "checkpoints start over from a new anchor");
        let _ = audit
            .record(
                "checkpoints_reanchored",
                &Actor::Daemon,
                json!({
                    "reason": reanchor.reason,
                    "previous_file_moved_to": reanchor.moved_to.as_ref().map(|p| p.display().to_string()),
                }),
            )
            .await;
    }
    if let Some(problem) = &findings.state_file {
        warn!(problem = %problem, "state file unusable; loss detection starts from now");
        let _ = audit
            .record(
                "state_file_unreadable",
                &Actor::Daemon,
                json!({ "problem": problem }),
            )
            .await;
    }
}

/// Whether checkpoints are due: they witness the v2 chain, so only while it is written.
fn checkpoints_wanted(daemon: &Daemon) -> bool {
    daemon
        .settings()
        .features
        .is_enabled(Feature::DecisionTraceV2)
}

/// Writes a checkpoint of the durable trace head now, and records the heads in the state file.
pub async fn checkpoint_now(daemon: &Daemon) -> Result<(), String> {
    let stores = daemon.stores();
    let (_, refusal) = stores.trace.head().await.map_err(|e| e.to_string())?;
    if let Some(why) = refusal {
        // Signing the head of a chain that does not verify would vouch for it.
        return Err(format!("not checkpointing: {why}"));
    }
    let head = stores
        .trace
        .synced_head()
        .await
        .map_err(|e| e.to_string())?;
    let mut signer = stores.checkpointer.lock().await;
    let timestamp = crate::clock::now_rfc3339();
    tokio::task::block_in_place(|| signer.write(head.as_ref(), timestamp))
        .map_err(|e| e.to_string())?;
    let mark = signer.mark();
    drop(signer);
    store_heads(daemon, mark).await;
    Ok(())
}

/// Records the current heads (and the last checkpoint) in the state file, unless a chain is
/// refusing appends: then the recorded heads are the evidence and stay as they are.
pub async fn store_heads(daemon: &Daemon, checkpoint: Option<head_state::CheckpointMark>) {
    let stores = daemon.stores();
    let (Ok((trace_head, trace_refusal)), Ok((audit_head, audit_refusal))) =
        (stores.trace.head().await, stores.audit.chain().head().await)
    else {
        return;
    };
    if trace_refusal.is_some() || audit_refusal.is_some() {
        return;
    }
    let checkpoint = match checkpoint {
        Some(mark) => Some(mark),
        None => stores.checkpointer.lock().await.mark(),
    };
    let heads = Heads {
        trace: trace_head,
        audit: audit_head,
        checkpoint,
    };
    let data_dir = daemon.data_dir().to_path_buf();
    tokio::task::block_in_place(|| trace::store_heads(&data_dir, &heads));
}

/// Checkpoints every `checkpoint_every_entries` entries and every `checkpoint_interval`, until
/// `stop`; then one last checkpoint.
pub async fn run_checkpoints(daemon: Arc<Daemon>, stop: CancellationToken) {
    let mut head = daemon.stores().trace.watch_head();
    let mut last_seq = daemon
        .stores()
        .checkpointer
        .lock()
        .await
        .last()
        .and_then(|c| c.seq);
    let fresh = daemon.stores().checkpointer.lock().await.last().is_none();
    if fresh && checkpoints_wanted(&daemon) {
        // Checkpoint 0 opens epoch 0 as early as possible: it is what an exported copy anchors.
        checkpoint_logged(&daemon, &mut last_seq).await;
    }
    loop {
        let config = daemon.settings().config.trace.clone();
        let due = tokio::time::sleep(config.checkpoint_interval);
        tokio::pin!(due);
        let reached = loop {
            tokio::select! {
                () = stop.cancelled() => break false,
                () = &mut due => break true,
                changed = head.changed() => {
                    if changed.is_err() {
                        break false;
                    }
                    let head_seq = *head.borrow_and_update();
                    if let Some(seq) = head_seq {
                        let since = last_seq.map_or(seq + 1, |s| seq.saturating_sub(s));
                        if since >= config.checkpoint_every_entries {
                            break true;
                        }
                    }
                }
            }
        };
        if !reached {
            break;
        }
        if checkpoints_wanted(&daemon) {
            checkpoint_logged(&daemon, &mut last_seq).await;
        }
    }
    if checkpoints_wanted(&daemon) {
        checkpoint_logged(&daemon, &mut last_seq).await;
    }
}

async fn checkpoint_logged(daemon: &Daemon, last_seq: &mut Option<u64>) {
    match checkpoint_now(daemon).await {
        Ok(()) => {
            *last_seq = daemon
                .stores()
                .checkpointer
                .lock()
                .await
                .last()
                .and_then(|c| c.seq);
        }
        Err(e) => warn!(error = %e, "checkpoint skipped"),
    }
}

/// Stops the writers after the final checkpoint and records the heads. Appends after this fail.
pub async fn shutdown_stores(daemon: &Daemon, threads: Vec<JoinHandle<()>>, reason: &str) {
    let _ = daemon
        .audit()
        .record(
            "daemon_stopped",
            &Actor::Daemon,
            json!({ "reason": reason }),
        )
        .await;
    store_heads(daemon, None).await;
    let stores = daemon.stores();
    stores.trace.stop().await;
    stores.v1.stop().await;
    stores.audit.chain().stop().await;
    let joined = tokio::task::spawn_blocking(move || {
        for thread in threads {
            if thread.join().is_err() {
                error!("a writer thread panicked");
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(5), joined)
        .await
        .is_err()
    {
        warn!("writer threads did not finish in time");
    }
    info!("storage closed");
}

/// Loads `file` (or the configured policy file, or the built-in default) and makes it active.
/// A policy that fails to load never replaces the active one; either way the outcome is logged
/// and audited. Returns every error of a failed load.
pub async fn load_policy(
    daemon: &Daemon,
    file: Option<std::path::PathBuf>,
    actor: crate::audit::Actor,
) -> Result<
    Arc<crate::decisions::policy::ActivePolicy>,
    Vec<atlasbridge_protocol::policy::PolicyError>,
> {
    // Local precedence: an explicit file, the configured file, then a policy accepted from the
    // cloud, then the built-in default.
    let file = file
        .or_else(|| daemon.settings().config.policy.file.clone())
        .or_else(|| crate::cloud::policy_sync::accepted_policy_file(daemon.data_dir()));
    let shown = file.as_ref().map_or_else(
        || "(built-in safe-default)".to_owned(),
        |f| f.display().to_string(),
    );
    // The service lives as long as the daemon; the load reads files, so it runs off the workers.
    let outcome = {
        let state = &daemon.stores().decisions.policy;
        let file = file.clone();
        tokio::task::block_in_place(|| state.load(file.as_deref()))
    };
    match outcome {
        Ok(active) => {
            info!(policy = %shown, hash = %active.hash, "policy active");
            // Every version that was ever active can be pinned later.
            if let Err(e) = daemon.stores().decisions.pins.keep(&active) {
                warn!(error = %e, "cannot store the policy version");
            }
            let _ = daemon
                .audit()
                .record(
                    "policy_loaded",
                    &actor,
                    serde_json::json!({ "file": file, "policy_hash": active.hash }),
                )
                .await;
            daemon.cloud_events().emit(
                atlasbridge_protocol::cloud::messages::kind::POLICY_LOADED,
                crate::cloud::events::policy_loaded(daemon, &active),
            );
            Ok(active)
        }
        Err(error) => {
            let errors = error.errors();
            warn!(policy = %shown, errors = errors.len(), first = %errors.first().map(ToString::to_string).unwrap_or_default(), "policy did not load; the active policy stays");
            let _ = daemon
                .audit()
                .record(
                    "policy_load_failed",
                    &actor,
                    serde_json::json!({ "file": file, "errors": errors }),
                )
                .await;
            Err(errors)
        }
    }
}
