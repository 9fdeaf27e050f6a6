//! The payloads of the control channel's message types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The control channel's protocol version.
pub const PROTOCOL_VERSION: u64 = 1;

/// Message type names.
pub mod kind {
    /// cloud → runtime, first frame.
    pub const CHALLENGE: &str = "challenge";
    /// runtime → cloud, the answer to the challenge.
    pub const HELLO: &str = "hello";
    /// cloud → runtime, the handshake's end.
    pub const WELCOME: &str = "welcome";
    /// runtime → cloud, every `heartbeat_s`.
    pub const HEARTBEAT: &str = "heartbeat";
    /// runtime → cloud, trace or audit entries.
    pub const AUDIT_BATCH: &str = "audit_batch";
    /// runtime → cloud, a signed checkpoint.
    pub const CHECKPOINT: &str = "checkpoint";
    /// runtime → cloud, the active policy changed.
    pub const POLICY_LOADED: &str = "policy_loaded";
    /// runtime → cloud.
    pub const SESSION_STARTED: &str = "session_started";
    /// runtime → cloud.
    pub const SESSION_ENDED: &str = "session_ended";
    /// runtime → cloud.
    pub const ESCALATION_TRIGGERED: &str = "escalation_triggered";
    /// cloud → runtime.
    pub const ACK: &str = "ack";
    /// cloud → runtime, advisory.
    pub const POLICY_UPDATE_AVAILABLE: &str = "policy_update_available";
    /// cloud → runtime, honoured only when configured.
    pub const KILL_SWITCH: &str = "kill_switch";
    /// either direction.
    pub const ERROR: &str = "error";
}

/// The two streams the uplink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// The decision trace.
    Trace,
    /// The daemon's audit log.
    Audit,
}

impl Stream {
    /// Both, in the order the uplink serves them.
    pub const ALL: [Stream; 2] = [Stream::Trace, Stream::Audit];

    /// `trace` or `audit`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Audit => "audit",
        }
    }
}

/// A chain's head as the wire carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHead {
    /// The last entry's seq.
    pub seq: u64,
    /// Its hash.
    pub entry_hash: String,
}

/// `challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes, base64url.
    pub nonce: String,
}

/// `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The daemon's version.
    pub agent_version: String,
    /// [`PROTOCOL_VERSION`].
    pub protocol: u64,
    /// `community`, `pro` or `enterprise`.
    pub edition: String,
    /// The identity key's signature over the raw nonce bytes.
    pub nonce_signature: String,
    /// The trace's head, `null` while empty.
    pub trace_head: Option<WireHead>,
    /// The audit log's head.
    pub audit_head: Option<WireHead>,
}

/// The policy the cloud considers current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its `policy_hash`.
    pub content_hash: String,
}

/// Where the cloud's durable copy of each stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The next trace seq the cloud wants.
    pub trace: u64,
    /// The next audit seq the cloud wants.
    pub audit: u64,
}

impl Resume {
    /// The next seq of `stream`.
    pub fn next(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Trace => self.trace,
            Stream::Audit => self.audit,
        }
    }
}

/// `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The cloud's session id.
    pub session: String,
    /// RFC 3339.
    pub server_time: String,
    /// The cloud's current policy, if any.
    pub policy: Option<PolicyRef>,
    /// Where the cloud's copies end.
    pub resume: Resume,
}

/// `heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// The edition.
    pub edition: String,
    /// The daemon's version.
    pub version: String,
    /// Sessions registered and not ended.
    pub active_sessions: u64,
    /// The trace's head.
    pub trace_head: Option<WireHead>,
    /// The audit log's head.
    pub audit_head: Option<WireHead>,
    /// The active policy's hash, `""` when none.
    pub policy_hash: String,
    /// Trace entries not yet acknowledged.
    pub backlog: u64,
}

/// `audit_batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditBatch {
    /// Which chain.
    pub stream: Stream,
    /// The first entry's seq.
    pub from_seq: u64,
    /// The last entry's seq.
    pub to_seq: u64,
    /// The stored entries, as objects.
    pub entries: Vec<Value>,
}

/// `ack`: of a message (heartbeat, checkpoint) or through a seq of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The acknowledged message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// The stream of a batch ack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    /// Everything of `stream` up to this seq is committed in the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through_seq: Option<u64>,
}

/// `kill_switch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    /// `paused` or `running`.
    pub state: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// UPPER_SNAKE.
    pub code: String,
    /// For people.
    pub message: String,
}
