//! The accept loop: admits connections up to the limit, checks each peer and gives it its role
//! (see [`peer`]), and hands it to [`connection::serve`]. Refusals are answered with one error
//! line and a close, written from a task of their own so that a peer that does not read cannot
//! stall accepting. Every refusal is an audit event.

use std::sync::Arc;
use std::time::Duration;

use atlasbridge_protocol::jsonrpc::Response;
use atlasbridge_protocol::{ErrorCode, ErrorObject, Id};
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::connection::{self, Limits};
use super::peer;
use crate::state::Daemon;

/// How long a refused peer gets to receive its one error line.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepts connections until shutdown, then drops the listener (which removes the socket file)
/// so that new clients are refused at once while in-flight work drains.
pub async fn accept_loop(listener: Listener, daemon: Arc<Daemon>, tracker: TaskTracker) {
    let max_connections = daemon.settings().config.daemon.max_connections;
    let slots = Arc::new(Semaphore::new(max_connections));
    let shutdown = daemon.shutdown_token().clone();
    // Looked up only for other uids while roles are in force. A lookup holds up accepting for
    // its duration (NSS may ask a network directory), at most once per uid per GROUPS_TTL.
    let groups = crate::roles::GroupCache::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Roles as of this connection: a reload applies to the connections opened after it.
        let settings = daemon.settings();
        let roles = crate::roles::in_force(&settings);
        let caller = match peer::authorize(&stream, daemon.uid(), roles, &groups).await {
            Ok(caller) => caller,
            Err(refusal) => {
                warn!(uid = ?refusal.uid(), pid = ?refusal.pid(), reason = %refusal, "connection refused");
                daemon.audit().record_in_background(
                    "connection_refused",
                    crate::audit::Actor::Peer {
                        uid: refusal.uid(),
                        pid: refusal.pid(),
                    },
                    serde_json::json!({
                        "reason": refusal.to_string(),
                        "uid": refusal.uid(),
                        "gid": refusal.gid(),
                        "pid": refusal.pid(),
                        "roles_in_force": roles.is_some(),
                    }),
                );
                let error = ErrorObject::new(
                    ErrorCode::PermissionDenied,
                    format!("permission denied: {refusal}"),
                );
                tracker.spawn(refuse(stream, error));
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(
                max_connections,
                "connection limit reached; refusing a client"
            );
            let error = ErrorObject::new(
                ErrorCode::Overloaded,
                format!("overloaded: {max_connections} connections are open; retry later"),
            );
            tracker.spawn(refuse(stream, error));
            continue;
        };
        debug!(uid = ?caller.uid, pid = ?caller.pid, role = %caller.role, "client connected");
        let config = settings.config.daemon.clone();
        let limits = Limits {
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            max_in_flight: config.max_requests_in_flight,
        };
        let daemon = Arc::clone(&daemon);
        let connection_tracker = tracker.clone();
        tracker.spawn(async move {
            let _count = daemon.connection_opened();
            connection::serve(stream, daemon.clone(), caller, limits, connection_tracker).await;
            drop(slot);
        });
    }
    drop(listener);
    info!("stopped accepting connections");
}

async fn refuse(stream: Stream, error: ErrorObject) {
    let mut writer = &stream;
    if let Ok(line) = atlasbridge_protocol::framing::encode_line(&Response::error(Id::Null, error))
    {
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            writer.write_all(&line).await?;
            writer.shutdown().await
        })
        .await;
    }
}
