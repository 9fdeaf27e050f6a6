//! `hello`, `daemon.status`, `daemon.shutdown`.

use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::methods::{
    ChainStatus, CheckpointStatus, CloudSummary, DaemonStatus, HelloParams, HelloResult, Role,
    ShutdownResult, TraceStatus, UnsupportedProtocolData,
};
use atlasbridge_protocol::{ErrorCode, ErrorObject, PROTOCOL_VERSION};
use tracing::info;

use super::RequestContext;
use crate::config::Durability;
use crate::ipc::peer::Caller;
use crate::state::Daemon;
use crate::trace::Chain;

pub(super) fn hello(
    daemon: &Daemon,
    caller: &Caller,
    params: HelloParams,
) -> Result<HelloResult, ErrorObject> {
    if params.protocol != PROTOCOL_VERSION {
        let data = UnsupportedProtocolData {
            supported: vec![PROTOCOL_VERSION],
        };
        return Err(ErrorObject::new(
            ErrorCode::UnsupportedProtocol,
            format!(
                "protocol {} is not supported; this daemon speaks protocol {PROTOCOL_VERSION}",
                params.protocol
            ),
        )
        .with_data(serde_json::to_value(data).unwrap_or_default()));
    }
    let settings = daemon.settings();
    Ok(HelloResult {
        protocol: PROTOCOL_VERSION,
        daemon: format!("atlasbridged {}", crate::VERSION),
        edition: settings.features.edition(),
        features: settings.features.enabled_map(),
        role: caller.role,
    })
}

/// A chain's head and problems. A chain is `broken` when it refuses appends (a break or lost
/// entries found at start), `degraded` when its last write failed.
async fn chain_status(chain: &Chain) -> (ChainStatus, &'static str) {
    let (head, refusal) = chain
        .head()
        .await
        .unwrap_or((None, Some("the writer has stopped".to_owned())));
    let degraded = chain.degraded();
    let health = match (&refusal, &degraded) {
        (Some(_), _) => "broken",
        (None, Some(_)) => "degraded",
        (None, None) => "ok",
    };
    let problem = refusal.or(degraded.map(|e| format!("storage failure: {e}")));
    let status = ChainStatus {
        seq: head.as_ref().map(|h| h.seq),
        entry_hash: head.as_ref().map(|h| h.entry_hash.clone()),
        entries: head.as_ref().map_or(0, |h| h.seq + 1),
        problem,
    };
    (status, health)
}

fn worst(a: &'static str, b: &'static str) -> &'static str {
    let rank = |h: &str| match h {
        "broken" => 2,
        "degraded" => 1,
        _ => 0,
    };
    if rank(a) >= rank(b) { a } else { b }
}

pub(super) async fn status(daemon: &Daemon, role: Role) -> DaemonStatus {
    let settings = daemon.settings();
    let stores = daemon.stores();
    let (trace, trace_health) = chain_status(&stores.trace).await;
    let (audit, audit_health) = chain_status(stores.audit.chain()).await;
    let v2 = settings.features.is_enabled(Feature::DecisionTraceV2);
    let v1_degraded = stores.v1.degraded().filter(|_| !v2);
    // Decisions go to the v2 chain or to the v1 file; only the one in use counts.
    let decisions_health = match (v2, &v1_degraded) {
        (true, _) => trace_health,
        (false, Some(_)) => "degraded",
        (false, None) => "ok",
    };
    let health = worst(decisions_health, audit_health);
    let checkpoint = stores
        .checkpointer
        .lock()
        .await
        .last()
        .map(|c| CheckpointStatus {
            checkpoint_seq: c.checkpoint_seq,
            seq: c.seq,
            timestamp: c.timestamp.clone(),
            runtime_id: c.runtime_id.clone(),
        });
    DaemonStatus {
        pid: std::process::id(),
        version: crate::VERSION.to_owned(),
        protocol: PROTOCOL_VERSION,
        uptime_s: daemon.uptime_s(),
        socket: daemon.socket().display().to_string(),
        data_dir: daemon.data_dir().display().to_string(),
        config_file: settings
            .config_file
            .as_ref()
            .map(|p| p.display().to_string()),
        edition: settings.features.edition(),
        connections: daemon.connections(),
        health: health.to_owned(),
        trace: TraceStatus {
            format: if v2 { "v2" } else { "v1" }.to_owned(),
            durability: match settings.config.trace.durability {
                Durability::Fsync => "fsync",
                Durability::Batch => "batch",
                Durability::None => "none",
            }
            .to_owned(),
            chain: ChainStatus {
                problem: trace
                    .problem
                    .or(v1_degraded.map(|e| format!("v1 storage failure: {e}"))),
                ..trace
            },
        },
        audit,
        checkpoint,
        // The cloud link is off unless configured; with it off the daemon opens no network socket.
        cloud: CloudSummary {
            state: "disabled".to_owned(),
        },
        sessions: u64::try_from(stores.decisions.sessions.len()).unwrap_or(u64::MAX),
        role: Some(role),
    }
}

pub(super) async fn shutdown(ctx: &RequestContext<'_>) -> ShutdownResult {
    info!(uid = ?ctx.caller.uid, pid = ?ctx.caller.pid, "shutdown requested over the socket");
    let _ = ctx
        .daemon
        .audit()
        .record(
            "shutdown_requested",
            &ctx.actor(),
            serde_json::json!({ "via": "daemon.shutdown" }),
        )
        .await;
    ShutdownResult {
        shutting_down: true,
    }
}
