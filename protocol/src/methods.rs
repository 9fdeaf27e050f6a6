//! Method names, and the typed parameters and results of the methods the daemon serves.
//!
//! Results only ever gain members; clients must ignore members they do not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::features::{Edition, Feature};
use crate::trace::ChainHead;

/// `hello`: optional version handshake.
pub const HELLO: &str = "hello";
/// `daemon.status`: process facts and health.
pub const DAEMON_STATUS: &str = "daemon.status";
/// `daemon.shutdown`: graceful stop (owner only).
pub const DAEMON_SHUTDOWN: &str = "daemon.shutdown";
/// `edition.get`: the edition and where it came from.
pub const EDITION_GET: &str = "edition.get";
/// `features.list`: every flag with its value and source.
pub const FEATURES_LIST: &str = "features.list";
/// `decision.record`: record a decision made elsewhere.
pub const DECISION_RECORD: &str = "decision.record";
/// `decision.evaluate`: decide a prompt event by the policy, durably.
pub const DECISION_EVALUATE: &str = "decision.evaluate";
/// `policy.status`: the active policy.
pub const POLICY_STATUS: &str = "policy.status";
/// `policy.reload`: load the policy file again (or another one).
pub const POLICY_RELOAD: &str = "policy.reload";
/// `policy.pin`: lock an agent or a session to one policy version.
pub const POLICY_PIN: &str = "policy.pin";
/// `policy.unpin`: remove a pin.
pub const POLICY_UNPIN: &str = "policy.unpin";
/// `policy.pins`: every pin.
pub const POLICY_PINS: &str = "policy.pins";
/// `policy.versions`: the stored policy versions.
pub const POLICY_VERSIONS: &str = "policy.versions";
/// `trace.head`: the decision trace's head.
pub const TRACE_HEAD: &str = "trace.head";
/// `trace.read`: stored entries from a seq.
pub const TRACE_READ: &str = "trace.read";
/// `trace.verify`: the integrity report of the daemon's trace.
pub const TRACE_VERIFY: &str = "trace.verify";
/// `trace.subscribe`: `trace.entry` notifications for every new entry.
pub const TRACE_SUBSCRIBE: &str = "trace.subscribe";
/// `trace.repair`: continue a broken chain in a new segment.
pub const TRACE_REPAIR: &str = "trace.repair";
/// `audit.head`: the audit log's head.
pub const AUDIT_HEAD: &str = "audit.head";
/// `audit.read`: stored audit events from a seq.
pub const AUDIT_READ: &str = "audit.read";
/// `audit.verify`: the integrity report of the audit log.
pub const AUDIT_VERIFY: &str = "audit.verify";
/// Notification: one new trace entry, as stored.
pub const TRACE_ENTRY: &str = "trace.entry";
/// Notification: the subscription ended (the subscriber was too slow, or the daemon stops).
pub const TRACE_SUBSCRIPTION_ENDED: &str = "trace.subscription_ended";

/// A local role. Ordered: each role may do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read methods.
    Viewer,
    /// Read, plus decisions.
    Operator,
    /// Operator, plus policy reload and pins, and shutdown.
    Admin,
    /// The daemon's own user.
    Owner,
}

impl Role {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Params of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloParams {
    /// The protocol major the client speaks.
    pub protocol: u32,
    /// `name/version` of the client, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Result of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResult {
    /// The protocol major agreed on.
    pub protocol: u32,
    /// `atlasbridged X.Y.Z`.
    pub daemon: String,
    /// The active edition.
    pub edition: Edition,
    /// Every flag and whether it is on.
    pub features: BTreeMap<Feature, bool>,
    /// The caller's role on this connection.
    pub role: Role,
}

/// `data` of the -32010 error: what the daemon does speak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedProtocolData {
    /// The protocol majors spoken.
    pub supported: Vec<u32>,
}

/// The cloud link as `daemon.status` summarises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudSummary {
    /// `disabled`, `disconnected`, `connecting`, `connected` or `reconnecting`.
    pub state: String,
}

/// Result of `daemon.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's version (`X.Y.Z`).
    pub version: String,
    /// The protocol major it speaks.
    pub protocol: u32,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// The socket it listens on.
    pub socket: String,
    /// Its data directory.
    pub data_dir: String,
    /// The config file it loaded, if any.
    pub config_file: Option<String>,
    /// The active edition.
    pub edition: Edition,
    /// Open client connections, this one included.
    pub connections: u64,
    /// `ok`, `degraded` (storage is failing: decisions are refused with -32004) or `broken` (a
    /// chain does not verify or lost entries: decisions are refused until repair).
    pub health: String,
    /// The decision trace.
    pub trace: TraceStatus,
    /// The audit log.
    pub audit: ChainStatus,
    /// The last signed checkpoint of the trace.
    pub checkpoint: Option<CheckpointStatus>,
    /// The cloud link.
    pub cloud: CloudSummary,
    /// Live sessions (`session.start` without its `session.end`). Defaults to 0 so that a client
    /// still reads the status of a daemon that predates sessions.
    #[serde(default)]
    pub sessions: u64,
    /// The role the daemon gave this connection (absent from daemons that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// One chain's state in `daemon.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    /// The head's seq (`None` while empty).
    pub seq: Option<u64>,
    /// The head's hash.
    pub entry_hash: Option<String>,
    /// Entries in the chain.
    pub entries: u64,
    /// What is wrong, when something is.
    pub problem: Option<String>,
}

/// The decision trace in `daemon.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStatus {
    /// Where decisions are written now: `v2` (hash chain) or `v1` (flag `decision_trace_v2` off).
    pub format: String,
    /// `fsync`, `batch` or `none`.
    pub durability: String,
    /// The v2 chain.
    #[serde(flatten)]
    pub chain: ChainStatus,
}

/// The last checkpoint in `daemon.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// Its `checkpoint_seq`.
    pub checkpoint_seq: u64,
    /// The trace seq it covers.
    pub seq: Option<u64>,
    /// When it was written.
    pub timestamp: String,
    /// The runtime identity that anchors the checkpoints.
    pub runtime_id: String,
}

/// Result of `trace.head` and `audit.head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadResult {
    /// The head's seq (`None` while empty).
    pub seq: Option<u64>,
    /// The head's hash.
    pub entry_hash: Option<String>,
    /// Entries in the chain.
    pub entries: u64,
}

/// Params of `trace.read` and `audit.read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// The first seq wanted.
    #[serde(default)]
    pub from_seq: u64,
    /// At most this many entries (1–1000; default 100).
    #[serde(default = "default_read_limit")]
    pub limit: u32,
}

fn default_read_limit() -> u32 {
    100
}

/// The most entries one read returns.
pub const MAX_READ_LIMIT: u32 = 1000;

/// Result of `trace.read` and `audit.read`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadResult {
    /// Entries as stored (the hash is the last member).
    pub entries: Vec<serde_json::Value>,
    /// Where to continue; `None` when the head was reached.
    pub next_seq: Option<u64>,
}

/// Params of `trace.subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    /// Replay stored entries from this seq first; without it, only new entries are sent.
    #[serde(default)]
    pub from_seq: Option<u64>,
}

/// Result of `trace.subscribe`; `trace.entry` notifications follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// The first seq that will be sent.
    pub from_seq: u64,
    /// The head when the subscription started.
    pub head: Option<ChainHead>,
}

/// Params of `trace.subscription_ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionEnded {
    /// Why: `too_slow` or `shutdown`.
    pub reason: String,
    /// The last seq sent.
    pub last_seq: Option<u64>,
}

/// Which chain a maintenance method acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChainName {
    /// The decision trace.
    #[default]
    Trace,
    /// The audit log.
    Audit,
}

/// Params of `trace.repair`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RepairParams {
    /// The chain to repair.
    #[serde(default)]
    pub chain: ChainName,
}

/// Result of `trace.repair`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairResult {
    /// The chain repaired.
    pub chain: ChainName,
    /// The new segment.
    pub new_segment: String,
    /// The entry it links to.
    pub continues_from: Option<ChainHead>,
    /// The audit event that records the repair.
    pub audit_seq: Option<u64>,
}

/// Params of `decision.record`: a decision made elsewhere (a human's answer, another tool).
///
/// `Default` gives empty strings and no options, for `..Default::default()`; the daemon rejects
/// an empty `session_id`, `prompt_id`, `prompt_type` or `action_taken` (-32602).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RecordParams {
    /// The agent session.
    pub session_id: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// `yes_no`, `confirm_enter`, `multiple_choice` or `free_text`.
    pub prompt_type: String,
    /// `high`, `medium` or `low` (anything else counts as `low`).
    #[serde(default)]
    pub confidence: String,
    /// The prompt text: read, never stored.
    #[serde(default)]
    pub prompt_text: Option<String>,
    /// The agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The tool.
    #[serde(default)]
    pub tool_id: Option<String>,
    /// The repository or working directory.
    #[serde(default)]
    pub repo: Option<String>,
    /// The branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// `passing`, `failing` or `unknown`.
    #[serde(default)]
    pub ci_status: Option<String>,
    /// Session tags.
    #[serde(default)]
    pub session_tags: Option<Vec<String>>,
    /// A repeat with the same key in the same session gets the first result and appends
    /// nothing (the key space is shared with `decision.evaluate`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// What was done: `auto_reply`, `require_human`, `deny`, `notify_only`, or a human's action.
    pub action_taken: String,
    /// The value given, if any.
    #[serde(default)]
    pub reply_value: Option<String>,
    /// Who answered.
    #[serde(default)]
    pub human_actor: String,
    /// `escalated`, `resolved`, …
    #[serde(default)]
    pub escalation_status: String,
}

/// Result of `decision.record`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordResult {
    /// The entry's id (`None` when the v1 trace was written).
    pub entry_id: Option<String>,
    /// Its seq (`None` for v1).
    pub seq: Option<u64>,
    /// Its hash (`None` for v1).
    pub entry_hash: Option<String>,
    /// The risk level (`""` while the classifier is off).
    pub risk_level: String,
}

/// Result of `daemon.shutdown`: sent before the daemon starts draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownResult {
    /// Always true: the daemon is stopping.
    pub shutting_down: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert!(Role::Admin < Role::Owner);
    }

    #[test]
    fn hello_features_serialise_as_a_map_of_names() {
        let result = HelloResult {
            protocol: 1,
            daemon: "atlasbridged 0.1.0".into(),
            edition: Edition::Pro,
            features: Feature::ALL
                .into_iter()
                .map(|f| (f, f.default_in(Edition::Pro)))
                .collect(),
            role: Role::Owner,
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["features"]["rbac"], true);
        assert_eq!(json["features"]["cloud_audit_stream"], false);
        assert_eq!(json["role"], "owner");
        let back: HelloResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, result);
    }
}

/// Params of `decision.evaluate`: one prompt event.
///
/// `Default` gives empty strings and no options, so that a caller names only what it knows and
/// fills the rest with `..Default::default()`; the daemon rejects an empty `session_id`,
/// `prompt_id` or `prompt_type` (-32602).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// The agent session.
    pub session_id: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// `yes_no`, `confirm_enter`, `multiple_choice` or `free_text`.
    pub prompt_type: String,
    /// The prompt text: read for matching and risk, never stored.
    #[serde(default)]
    pub prompt_text: String,
    /// `high`, `medium` or `low` (anything else counts as `low`).
    #[serde(default)]
    pub confidence: String,
    /// The agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The tool (`tool_id` criteria).
    #[serde(default)]
    pub tool_id: Option<String>,
    /// The repository or working directory (`repo` criteria).
    #[serde(default)]
    pub repo: Option<String>,
    /// The branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// `passing`, `failing` or `unknown`.
    #[serde(default)]
    pub ci_status: Option<String>,
    /// Session tags; the first is the one `session_tag` criteria see.
    #[serde(default)]
    pub session_tags: Option<Vec<String>>,
    /// A repeat with the same key in the same session gets the first result and appends
    /// nothing; without one, a key derived from the policy, the prompt and the session is used.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The policy the agent expects; a session pinned to another one gets -32002.
    #[serde(default)]
    pub policy_hash: Option<String>,
}

/// Result of `decision.evaluate`, sent only once the trace entry is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluateResult {
    /// What the agent is told: `auto_reply`, `require_human`, `deny` or `notify_only`.
    pub action: String,
    /// The value to inject, `""` unless `auto_reply`.
    pub reply_value: String,
    /// In `assist` mode (or when a cap or the risk threshold held an answer back): what the
    /// policy would have done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_action: Option<String>,
    /// The rule that decided, `""` when a default applied.
    pub matched_rule: String,
    /// The policy's own action.
    pub policy_action: String,
    /// `off`, `assist` or `full`.
    pub autonomy_mode: String,
    /// The risk level (`""` while the classifier is off).
    pub risk_level: String,
    /// The classifier's reasons.
    pub risk_reasons: Vec<String>,
    /// The deciding policy.
    pub policy_hash: String,
    /// The trace entry (`None` in the v1 trace).
    pub entry_id: Option<String>,
    /// Its seq.
    pub seq: Option<u64>,
    /// Its hash.
    pub entry_hash: Option<String>,
    /// Why the answer is what it is, in one sentence.
    pub explanation: String,
    /// True when this is the stored answer to an earlier request with the same key.
    #[serde(default)]
    pub repeated: bool,
}

/// Result of `policy.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The active policy's name.
    pub name: String,
    /// `"0"` or `"1"`.
    pub policy_version: String,
    /// Its hash.
    pub policy_hash: String,
    /// `off`, `assist` or `full`.
    pub autonomy_mode: String,
    /// Its rules.
    pub rules: usize,
    /// The file it was loaded from; `None` for the built-in default.
    pub source: Option<String>,
    /// When it became active (RFC 3339).
    pub loaded_at: String,
    /// The errors of the last load that failed, if it failed after this one loaded.
    pub last_error: Option<Vec<serde_json::Value>>,
}

/// Params of `policy.reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyReloadParams {
    /// Load this file instead of the configured one (it stays active until the next reload).
    #[serde(default)]
    pub path: Option<String>,
}

/// `autopilot.status`: the kill switch's state.
pub const AUTOPILOT_STATUS: &str = "autopilot.status";
/// `autopilot.pause`: every answer is `require_human` until `autopilot.resume`.
pub const AUTOPILOT_PAUSE: &str = "autopilot.pause";
/// `autopilot.resume`: the policy answers again.
pub const AUTOPILOT_RESUME: &str = "autopilot.resume";
/// `autopilot.stop`: every answer is `require_human` until the daemon restarts.
pub const AUTOPILOT_STOP: &str = "autopilot.stop";
/// `session.start`: register an agent session; its events inherit the fields given.
pub const SESSION_START: &str = "session.start";
/// `session.end`: forget a session.
pub const SESSION_END: &str = "session.end";
/// `session.list`: the live sessions.
pub const SESSION_LIST: &str = "session.list";
/// `session.show`: one live session.
pub const SESSION_SHOW: &str = "session.show";

/// Result of `autopilot.status`, `autopilot.pause`, `autopilot.resume` and `autopilot.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopilotStatus {
    /// `running`, `paused` or `stopped`. A string, not an enum, so that a client still reads a
    /// state added later.
    pub state: String,
    /// When this state began (RFC 3339); the daemon's start for the first `running`.
    pub since: String,
    /// Who caused the last transition; absent while the autopilot has never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

/// Params of `session.start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionStartParams {
    /// The agent session.
    pub session_id: String,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The tool (`tool_id` criteria).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_id: Option<String>,
    /// The repository or working directory (`repo` criteria).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `passing`, `failing` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_status: Option<String>,
    /// Session tags; the first is the one `session_tag` criteria see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_tags: Option<Vec<String>>,
}

/// A live session, as `session.start`, `session.end`, `session.list` and `session.show` return
/// it. A field the session was not given is `null` (`[]` for the tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The agent session.
    pub session_id: String,
    /// The agent.
    pub agent_id: Option<String>,
    /// The tool.
    pub tool_id: Option<String>,
    /// The repository or working directory.
    pub repo: Option<String>,
    /// The branch.
    pub branch: Option<String>,
    /// The CI status.
    pub ci_status: Option<String>,
    /// Session tags.
    #[serde(default)]
    pub session_tags: Vec<String>,
    /// When it was first started (RFC 3339); a re-start keeps it.
    pub started_at: String,
    /// `decision.evaluate` entries recorded for it since it started.
    #[serde(default)]
    pub decisions: u64,
}

/// Params of `session.end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionEndParams {
    /// The session to forget.
    pub session_id: String,
}

/// Params of `session.show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionShowParams {
    /// The session wanted.
    pub session_id: String,
}

/// Result of `session.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    /// The live sessions, oldest first.
    pub sessions: Vec<SessionInfo>,
}

/// What a pin applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinScope {
    /// Every session of one agent.
    Agent,
    /// One session.
    Session,
}

/// Params of `policy.pin`: `policy_hash` (a version the daemon has stored) or `path` (a policy
/// file the daemon loads and stores).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinParams {
    /// Agent or session.
    pub scope: PinScope,
    /// The agent id or session id.
    pub id: String,
    /// A stored version.
    #[serde(default)]
    pub policy_hash: Option<String>,
    /// A policy file (absolute).
    #[serde(default)]
    pub path: Option<String>,
}

/// Params of `policy.unpin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnpinParams {
    /// Agent or session.
    pub scope: PinScope,
    /// The agent id or session id.
    pub id: String,
}

/// One pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Agent or session.
    pub scope: PinScope,
    /// The agent id or session id.
    pub id: String,
    /// The pinned version (`None` after an unpin).
    pub policy_hash: Option<String>,
    /// What it replaced.
    #[serde(default)]
    pub previous: Option<String>,
}

/// Result of `policy.pins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinList {
    /// Every pin.
    pub pins: Vec<Pin>,
}

/// A stored policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Its hash.
    pub policy_hash: String,
    /// Its name.
    pub name: String,
    /// `agent:<id>` / `session:<id>` pins that hold it.
    pub pinned_by: Vec<String>,
    /// Whether it is the active policy.
    pub active: bool,
}

/// Result of `policy.versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionList {
    /// Every stored version.
    pub versions: Vec<PolicyVersion>,
}

/// Method: the cloud uplink's state.
pub const CLOUD_STATUS: &str = "cloud.status";

/// One stream's progress to the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudStreamStatus {
    /// The local head's seq; absent while the chain is empty.
    pub head_seq: Option<u64>,
    /// The last seq the cloud acknowledged; absent before the first ack.
    pub acked_seq: Option<u64>,
    /// Entries the cloud does not have yet.
    pub backlog: u64,
}

/// Result of `cloud.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudStatusResult {
    /// Whether `[cloud] enabled` is set and the edition's cloud flags allow the uplink.
    pub enabled: bool,
    /// `disabled`, `disconnected`, `connecting`, `connected` or `reconnecting`.
    pub state: String,
    /// Why the state is what it is (e.g. `auth_failed`), when there is a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The configured endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The runtime's id on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// Since when the current connection is up (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<String>,
    /// When the last heartbeat was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_sent: Option<String>,
    /// When the cloud last acknowledged a heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_acked: Option<String>,
    /// When the current access token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<String>,
    /// The cloud's clock minus ours, in seconds, when over the ±30 s the protocol tolerates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_s: Option<i64>,
    /// The decision trace's progress.
    pub trace: CloudStreamStatus,
    /// The audit log's progress.
    pub audit: CloudStreamStatus,
    /// `synced`, `pending`, `disabled` or `error`.
    pub policy_sync: String,
    /// Connections made since the daemon started.
    pub connections: u64,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Method: verified cloud policies waiting to be accepted.
pub const POLICY_PENDING: &str = "policy.pending";
/// Method: makes a pending cloud policy the daemon's policy.
pub const POLICY_ACCEPT: &str = "policy.accept";

/// A cloud policy that passed verification and waits for `policy.accept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPolicy {
    /// The policy's name in the cloud's registry.
    pub name: String,
    /// Its version there.
    pub version: String,
    /// Its `policy_hash`.
    pub content_hash: String,
    /// When the daemon verified it.
    pub received_at: String,
}

/// Result of `policy.pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPendingResult {
    /// Oldest first.
    pub pending: Vec<PendingPolicy>,
    /// The accepted cloud policy's hash, if one was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
}

/// Params of `policy.accept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyAcceptParams {
    /// The full `content_hash` of a pending policy.
    pub hash: String,
}

/// Method: uploads a policy to the cloud's registry, signed by the runtime.
pub const CLOUD_POLICY_PUSH: &str = "cloud.policy_push";
/// Method: fetches and verifies the latest version of a policy from the cloud's registry.
pub const CLOUD_POLICY_PULL: &str = "cloud.policy_pull";

/// Params of `cloud.policy_push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudPolicyPushParams {
    /// The policy file's text (self-contained: no `extends`).
    pub yaml: String,
}

/// Result of `cloud.policy_push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudPolicyPushResult {
    /// The policy's name in the registry.
    pub name: String,
    /// The version the cloud gave it.
    pub version: String,
    /// Its `policy_hash`.
    pub content_hash: String,
}

/// Params of `cloud.policy_pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudPolicyPullParams {
    /// The policy's name in the registry.
    pub name: String,
}

/// Result of `cloud.policy_pull`: a version that passed the same checks as an offered one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudPolicyPullResult {
    /// The name.
    pub name: String,
    /// The latest version.
    pub version: String,
    /// Its `policy_hash`, checked against the YAML.
    pub content_hash: String,
    /// When the cloud signed it.
    pub signed_at: String,
    /// Whether the server's signature was checked (`server_public_key` configured).
    pub signature_checked: bool,
    /// The policy file.
    pub yaml: String,
}

/// Method: what the cloud witnessed of this runtime's chain (`POST /v1/witness` through the
/// uplink's credentials), for `trace integrity-check --against-cloud`.
pub const CLOUD_WITNESS: &str = "cloud.witness";

/// Params of `cloud.witness`: the REST query as is.
pub type CloudWitnessParams = crate::cloud::witness::WitnessQuery;

/// Result of `cloud.witness`: the cloud's answer as is.
pub type CloudWitnessResult = crate::cloud::witness::WitnessAnswer;

/// Method: tries a cloud configuration (token call and handshake) without keeping anything.
pub const CLOUD_TEST: &str = "cloud.test";

/// Params of `cloud.test`: the values `cloud setup` is about to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudTestParams {
    /// The WebSocket endpoint.
    pub endpoint: String,
    /// The REST base; derived from the endpoint when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// The organisation.
    pub org_id: String,
    /// The API key (sent to the token call only, never stored by the test).
    pub api_key: String,
    /// The key the cloud signs with, to check the handshake's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_public_key: Option<String>,
    /// Extra TLS roots (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// Result of `cloud.test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudTestResult {
    /// Whether the whole handshake succeeded.
    pub ok: bool,
    /// The last stage reached: `token`, `connect` or `handshake`.
    pub stage: String,
    /// What happened, for people.
    pub message: String,
}

/// What `decision.evaluate` tells an agent to do, as a type ([`EvaluateResult::decision`]).
///
/// The wire carries the action as a string (`action`), so that a daemon may add one later; this
/// type reads an action it does not know as [`DecisionAction::RequireHuman`], the answer that
/// lets nothing through on its own.
///
/// ```
/// use atlasbridge_protocol::methods::DecisionAction;
///
/// assert_eq!(DecisionAction::from_name("deny"), Some(DecisionAction::Deny));
/// assert_eq!(DecisionAction::AutoReply.to_string(), "auto_reply");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionAction {
    /// `auto_reply`: answer the prompt with `reply_value`.
    AutoReply,
    /// `require_human`: a person answers; nothing is sent on the agent's behalf.
    RequireHuman,
    /// `deny`: refuse the prompt.
    Deny,
    /// `notify_only`: nothing is answered; tell someone it happened.
    NotifyOnly,
}

impl DecisionAction {
    /// The action named `action` on the wire, if it is one of the four.
    pub fn from_name(action: &str) -> Option<Self> {
        match action {
            "auto_reply" => Some(Self::AutoReply),
            "require_human" => Some(Self::RequireHuman),
            "deny" => Some(Self::Deny),
            "notify_only" => Some(Self::NotifyOnly),
            _ => None,
        }
    }

    /// The wire name (`auto_reply`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::AutoReply => "auto_reply",
            Self::RequireHuman => "require_human",
            Self::Deny => "deny",
            Self::NotifyOnly => "notify_only",
        }
    }
}

impl std::fmt::Display for DecisionAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl EvaluateResult {
    /// [`action`](Self::action) as a [`DecisionAction`]; an action this crate does not know is
    /// [`DecisionAction::RequireHuman`].
    pub fn decision(&self) -> DecisionAction {
        DecisionAction::from_name(&self.action).unwrap_or(DecisionAction::RequireHuman)
    }
}

impl SubscriptionEnded {
    /// The seq to subscribe from to continue where this subscription stopped: `last_seq + 1`, or
    /// `None` when it sent no entry (subscribe from the seq it started at again).
    pub fn resume_from(&self) -> Option<u64> {
        self.last_seq.map(|seq| seq.saturating_add(1))
    }
}

#[cfg(test)]
mod client_type_tests {
    use super::*;

    #[test]
    fn every_action_name_round_trips_and_an_unknown_one_asks_a_person() {
        for name in crate::risk::ACTIONS {
            let action = DecisionAction::from_name(name).unwrap();
            assert_eq!(action.name(), name);
        }
        assert_eq!(DecisionAction::from_name("escalate"), None);
        let mut result: EvaluateResult = serde_json::from_value(serde_json::json!({
            "action": "escalate", "reply_value": "", "matched_rule": "", "policy_action": "",
            "autonomy_mode": "full", "risk_level": "", "risk_reasons": [], "policy_hash": "h",
            "entry_id": null, "seq": null, "entry_hash": null, "explanation": "",
        }))
        .unwrap();
        assert_eq!(result.decision(), DecisionAction::RequireHuman);
        result.action = "deny".into();
        assert_eq!(result.decision(), DecisionAction::Deny);
    }

    #[test]
    fn default_params_name_only_what_is_given() {
        let params = EvaluateParams {
            session_id: "s".into(),
            prompt_id: "p".into(),
            prompt_type: "yes_no".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&params).unwrap();
        assert_eq!(json["session_id"], "s");
        assert_eq!(json["agent_id"], serde_json::Value::Null);
        let back: EvaluateParams = serde_json::from_value(json).unwrap();
        assert_eq!(back, params);
        let record = RecordParams {
            action_taken: "deny".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&record).unwrap()["action_taken"],
            "deny"
        );
    }

    #[test]
    fn a_subscription_resumes_after_its_last_entry() {
        let ended = SubscriptionEnded {
            reason: "too_slow".into(),
            last_seq: Some(41),
        };
        assert_eq!(ended.resume_from(), Some(42));
        let none = SubscriptionEnded {
            reason: "shutdown".into(),
            last_seq: None,
        };
        assert_eq!(none.resume_from(), None);
    }
}
