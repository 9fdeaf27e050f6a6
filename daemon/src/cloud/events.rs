//! What happens locally that the cloud is told about as it happens: sessions starting and
//! ending, policies loading (with the local pins), decisions escalated to a person.
//!
//! Advisory: the durable record of all of these is the trace and the audit log, which stream
//! with a cursor and lose nothing. These messages go out only while the link is up; a burst the
//! uplink cannot keep up with is dropped from here, never from the chains. Nothing in them is
//! prompt text.

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::decisions::pins::scope_name;
use crate::decisions::policy::ActivePolicy;
use crate::state::Daemon;

/// Events waiting for the uplink at most (an idle or absent uplink costs nothing more).
const BUFFER: usize = 1024;

/// One event: the message type and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// `session_started`, `session_ended`, `policy_loaded` or `escalation_triggered`.
    pub kind: &'static str,
    /// The metadata.
    pub payload: Value,
}

/// Where the daemon announces events; the uplink subscribes while connected.
#[derive(Debug)]
pub struct CloudEvents {
    sender: broadcast::Sender<CloudEvent>,
}

impl Default for CloudEvents {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BUFFER).0,
        }
    }
}

impl CloudEvents {
    /// Announces an event; with no uplink listening it is simply dropped.
    pub fn emit(&self, kind: &'static str, payload: Value) {
        let _ = self.sender.send(CloudEvent { kind, payload });
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CloudEvent> {
        self.sender.subscribe()
    }
}

/// The `policy_loaded` payload: the active policy, and the local pins (which a cloud pin never
/// overrides, so the cloud is told what they are).
pub fn policy_loaded(daemon: &Daemon, active: &ActivePolicy) -> Value {
    let policy = active.evaluator.policy();
    let pins: Vec<Value> = daemon
        .stores()
        .decisions
        .pins
        .list()
        .into_iter()
        .map(|(scope, id, hash)| json!({ "scope": scope_name(scope), "id": id, "policy_hash": hash }))
        .collect();
    json!({
        "name": policy.name,
        "policy_version": policy.policy_version.as_str(),
        "policy_hash": active.hash,
        "source": if active.source.is_some() { "file" } else { "builtin" },
        "loaded_at": active.loaded_at,
        "pins": pins,
    })
}
