//! The audit log: the daemon's own events (start and stop, configuration, refusals, trace
//! recovery and repair, pins, cloud state), in a hash chain with the same rules as the trace.

use std::sync::Arc;

use atlasbridge_protocol::trace::EntryBodyBuilder;

use serde_json::{Value, json};
use tracing::error;

use crate::trace::Chain;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The daemon itself.
    Daemon,
    /// A local client, by uid and pid.
    Peer {
        /// Its uid.
        uid: Option<u32>,
        /// Its pid.
        pid: Option<i64>,
    },
    /// A signal from the service manager or a person.
    Signal(&'static str),
    /// The cloud, over the uplink (advisory messages the daemon chose to act on).
    Cloud,
}

impl Actor {
    fn to_value(&self) -> Value {
        match self {
            Self::Daemon => json!("daemon"),
            Self::Peer { uid, pid } => json!({ "uid": uid, "pid": pid }),
            Self::Signal(name) => json!(format!("signal:{name}")),
            Self::Cloud => json!("cloud"),
        }
    }
}

/// Writes audit events.
#[derive(Debug, Clone)]
pub struct AuditLog {
    chain: Arc<Chain>,
}

impl AuditLog {
    /// An audit log over an opened chain.
    pub fn new(chain: Arc<Chain>) -> Self {
        Self { chain }
    }

    /// The chain underneath.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Records one event and waits until it is stored. A failure is logged and returned.
    pub async fn record(
        &self,
        event_type: &str,
        actor: &Actor,
        details: Value,
    ) -> Result<u64, String> {
        let mut body = EntryBodyBuilder::with_capacity(3);
        body.str("event_type", event_type)
            .value("actor", &actor.to_value())
            .value("details", &details);
        match self.chain.append(body.finish()).await {
            Ok(receipt) => Ok(receipt.seq),
            Err(e) => {
                error!(event_type, error = %e, "cannot write an audit event");
                Err(e.to_string())
            }
        }
    }

    /// Records one event without waiting (for code that cannot await, such as the accept loop).
    pub fn record_in_background(&self, event_type: &'static str, actor: Actor, details: Value) {
        let log = self.clone();
        tokio::spawn(async move {
            let _ = log.record(event_type, &actor, details).await;
        });
    }
}
