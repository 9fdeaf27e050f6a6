//! What the peer holds and records: stored entries, the log of every message both ways, issued
//! tokens, policies, open connections, and the faults in force.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::messages::{
    AuditBatch, PolicyRef, Resume, Stream, WireHead, kind,
};
use atlasbridge_protocol::cloud::rest::{PolicyUpload, PolicyVersion, TokenRequest};
use atlasbridge_protocol::cloud::witness::{WitnessAnswer, WitnessedChain, WitnessedHash};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::{Faults, OutgoingSigning, Throttle};

/// A message the peer received and could parse as an envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// The connection it came on (numbered from 1 per peer, in upgrade order).
    pub connection: usize,
    /// The envelope's `type`.
    pub kind: String,
    /// The envelope's `message_id`.
    pub message_id: String,
    /// The envelope's `sequence`.
    pub sequence: u64,
    /// The payload; for `audit_batch` without `entries` (they are in [`PeerState::entries`]), and
    /// with `entry_count` instead, so a million entries are not held twice.
    pub payload: Value,
    /// Whether its signature verified under the runtime's key.
    pub verified: bool,
    /// The frame's size in bytes.
    pub bytes: usize,
}

/// A message the peer sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    /// The connection it went on.
    pub connection: usize,
    /// The envelope's `type`.
    pub kind: String,
    /// The envelope's `sequence`.
    pub sequence: u64,
    /// The payload.
    pub payload: Value,
    /// How it was signed.
    pub signing: OutgoingSigning,
}

/// What the peer hands a connection's task to send.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// An envelope of `kind`; `signing` overrides the faults' choice for this one message.
    Message {
        kind: String,
        payload: Value,
        signing: Option<OutgoingSigning>,
    },
    /// A text frame as is (for malformed-frame tests).
    Raw(String),
    /// A close frame, then the end of the connection.
    Close { code: u16, reason: String },
}

/// One stream's durable copy.
#[derive(Default)]
struct StreamStore {
    /// Compact JSON of entries `0..len`, contiguous: index = seq. Text rather than `Value` keeps
    /// a million entries near their wire size.
    entries: Vec<Box<str>>,
    duplicates: usize,
}

#[derive(Debug)]
pub(crate) struct IssuedToken {
    pub(crate) expires_at: Instant,
    pub(crate) runtime_id: String,
}

#[derive(Debug)]
pub(crate) struct OpenConnection {
    pub(crate) tx: UnboundedSender<Outbound>,
    pub(crate) handshaken: bool,
}

/// Everything the peer knows, behind one lock; [`super::CloudPeer::wait_until`] hands it to a
/// predicate.
pub struct PeerState {
    streams: [StreamStore; 2],
    pub(crate) gaps: Vec<String>,
    pub(crate) protocol_errors: Vec<String>,
    pub(crate) bad_signatures: Vec<String>,
    pub(crate) handshake_failures: Vec<String>,
    pub(crate) token_attempts: Vec<Instant>,
    pub(crate) token_requests: Vec<TokenRequest>,
    pub(crate) upgrade_attempts: Vec<Instant>,
    pub(crate) dropped_connections: Vec<Instant>,
    pub(crate) connections: usize,
    pub(crate) closed_mid_batch: usize,
    pub(crate) received: Vec<ReceivedMessage>,
    pub(crate) sent: Vec<SentMessage>,
    pub(crate) uploads: Vec<PolicyUpload>,
    pub(crate) witness_queries: usize,

    pub(crate) faults: Faults,
    /// Batches seen since `close_mid_batch` was last set or fired.
    pub(crate) batches_since_close: usize,
    pub(crate) token_lifetime_s: u64,
    pub(crate) tokens: HashMap<String, IssuedToken>,
    pub(crate) tokens_issued: u64,
    pub(crate) requests: u64,
    pub(crate) policies: BTreeMap<String, Vec<PolicyVersion>>,
    pub(crate) current_policy: Option<PolicyRef>,
    pub(crate) open: BTreeMap<usize, OpenConnection>,
    pub(crate) last_connection: usize,
    /// The connection that completed the latest handshake and is still open.
    pub(crate) current: Option<usize>,
}

impl fmt::Debug for PeerState {
    // A summary: the full state can hold a million entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerState")
            .field("trace_entries", &self.entry_count(Stream::Trace))
            .field("audit_entries", &self.entry_count(Stream::Audit))
            .field("gaps", &self.gaps)
            .field("protocol_errors", &self.protocol_errors)
            .field("bad_signatures", &self.bad_signatures)
            .field("handshake_failures", &self.handshake_failures)
            .field("connections", &self.connections)
            .field("open", &self.open.len())
            .field("current", &self.current)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Trace => 0,
        Stream::Audit => 1,
    }
}

fn seq_of(entry: &Value) -> Option<u64> {
    entry.get("seq").and_then(Value::as_u64)
}

impl PeerState {
    pub(crate) fn new(token_lifetime_s: u64) -> Self {
        Self {
            streams: Default::default(),
            gaps: Vec::new(),
            protocol_errors: Vec::new(),
            bad_signatures: Vec::new(),
            handshake_failures: Vec::new(),
            token_attempts: Vec::new(),
            token_requests: Vec::new(),
            upgrade_attempts: Vec::new(),
            dropped_connections: Vec::new(),
            connections: 0,
            closed_mid_batch: 0,
            received: Vec::new(),
            sent: Vec::new(),
            uploads: Vec::new(),
            witness_queries: 0,
            faults: Faults::default(),
            batches_since_close: 0,
            token_lifetime_s,
            tokens: HashMap::new(),
            tokens_issued: 0,
            requests: 0,
            policies: BTreeMap::new(),
            current_policy: None,
            open: BTreeMap::new(),
            last_connection: 0,
            current: None,
        }
    }

    /// The stored entries of `stream`, in seq order (parsed on each call).
    pub fn entries(&self, stream: Stream) -> Vec<Value> {
        self.streams[index(stream)]
            .entries
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect()
    }

    /// How many entries of `stream` are stored (= the next seq the peer wants).
    pub fn entry_count(&self, stream: Stream) -> usize {
        self.streams[index(stream)].entries.len()
    }

    /// Entries of `stream` received again after they were stored.
    pub fn duplicates(&self, stream: Stream) -> usize {
        self.streams[index(stream)].duplicates
    }

    /// One line per batch that skipped ahead of the stored entries.
    pub fn gaps(&self) -> &[String] {
        &self.gaps
    }

    /// Frames and payloads the peer could not make sense of, and other protocol violations.
    pub fn protocol_errors(&self) -> &[String] {
        &self.protocol_errors
    }

    /// Messages after the handshake whose signature did not verify (and that were ignored).
    pub fn bad_signatures(&self) -> &[String] {
        &self.bad_signatures
    }

    /// Why each failed handshake failed.
    pub fn handshake_failures(&self) -> &[String] {
        &self.handshake_failures
    }

    /// When each token call arrived, refused ones included.
    pub fn token_attempts(&self) -> &[Instant] {
        &self.token_attempts
    }

    /// The token calls' bodies (that parsed).
    pub fn token_requests(&self) -> &[TokenRequest] {
        &self.token_requests
    }

    /// When each `GET /v1/connect` arrived, refused ones included.
    pub fn upgrade_attempts(&self) -> &[Instant] {
        &self.upgrade_attempts
    }

    /// When each TCP connection dropped by [`super::Refusal::DropConnections`] arrived.
    pub fn dropped_connections(&self) -> &[Instant] {
        &self.dropped_connections
    }

    /// Completed handshakes (welcomes sent).
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Connections closed by the `close_mid_batch` fault.
    pub fn closed_mid_batch(&self) -> usize {
        self.closed_mid_batch
    }

    /// WebSocket connections open now, handshaken or not.
    pub fn open_connections(&self) -> usize {
        self.open.len()
    }

    /// Whether a handshaken connection is open.
    pub fn is_connected(&self) -> bool {
        self.current.is_some()
    }

    /// Every envelope received, in order.
    pub fn received_messages(&self) -> &[ReceivedMessage] {
        &self.received
    }

    /// The payloads of the verified envelopes of `kind`, in order.
    pub fn received(&self, kind: &str) -> Vec<Value> {
        self.received
            .iter()
            .filter(|m| m.verified && m.kind == kind)
            .map(|m| m.payload.clone())
            .collect()
    }

    /// How many verified envelopes of `kind` arrived.
    pub fn received_count(&self, kind: &str) -> usize {
        self.received
            .iter()
            .filter(|m| m.verified && m.kind == kind)
            .count()
    }

    /// The `sequence` of every received envelope, per connection.
    pub fn received_sequences(&self) -> BTreeMap<usize, Vec<u64>> {
        let mut map: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for message in &self.received {
            map.entry(message.connection)
                .or_default()
                .push(message.sequence);
        }
        map
    }

    /// Every envelope sent, in order.
    pub fn sent_messages(&self) -> &[SentMessage] {
        &self.sent
    }

    /// The payloads of the sent envelopes of `kind`, in order.
    pub fn sent(&self, kind: &str) -> Vec<Value> {
        self.sent
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| m.payload.clone())
            .collect()
    }

    /// Policies uploaded with a good signature.
    pub fn uploads(&self) -> &[PolicyUpload] {
        &self.uploads
    }

    /// `POST /v1/witness` requests answered or refused.
    pub fn witness_queries(&self) -> usize {
        self.witness_queries
    }

    /// The versions of policy `name`, oldest first.
    pub fn policy_versions(&self, name: &str) -> Vec<PolicyVersion> {
        self.policies.get(name).cloned().unwrap_or_default()
    }

    /// The faults in force.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The `resume` of a welcome now.
    pub(crate) fn resume(&self) -> Resume {
        Resume {
            trace: self.entry_count(Stream::Trace) as u64,
            audit: self.entry_count(Stream::Audit) as u64,
        }
    }

    pub(crate) fn next_request_id(&mut self) -> String {
        self.requests += 1;
        format!("req-{}", self.requests)
    }

    /// Issues a token valid for the current lifetime.
    pub(crate) fn issue_token(&mut self, now: Instant, runtime_id: &str) -> (String, u64) {
        self.tokens_issued += 1;
        let token = format!("tok-{}", self.tokens_issued);
        let lifetime = self.token_lifetime_s;
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                expires_at: now + Duration::from_secs(lifetime),
                runtime_id: runtime_id.to_owned(),
            },
        );
        (token, lifetime)
    }

    /// The runtime a live token was issued to, if `token` is live.
    pub(crate) fn token_runtime(&self, token: &str, now: Instant) -> Option<String> {
        self.tokens
            .get(token)
            .filter(|t| now < t.expires_at)
            .map(|t| t.runtime_id.clone())
    }

    /// Takes one use of a throttle, giving the status and `Retry-After` to answer with.
    pub(crate) fn take_throttle(slot: &mut Option<Throttle>) -> Option<(u16, String)> {
        let throttle = slot.as_mut()?;
        if throttle.remaining == 0 {
            *slot = None;
            return None;
        }
        throttle.remaining -= 1;
        let answer = (throttle.status, throttle.retry_after.clone());
        if throttle.remaining == 0 {
            *slot = None;
        }
        Some(answer)
    }

    /// Stores what of `batch` extends the stream; gives the last contiguous seq, if any.
    pub(crate) fn store_batch(&mut self, batch: &AuditBatch) -> Option<u64> {
        let name = batch.stream.name();
        let first = batch.entries.first().and_then(seq_of);
        let last = batch.entries.last().and_then(seq_of);
        if batch.entries.is_empty() {
            self.protocol_errors.push(format!(
                "{name}: empty batch {}..={}",
                batch.from_seq, batch.to_seq
            ));
        } else if first != Some(batch.from_seq) || last != Some(batch.to_seq) {
            self.protocol_errors.push(format!(
                "{name}: batch says {}..={} but carries {first:?}..={last:?}",
                batch.from_seq, batch.to_seq
            ));
        }
        let mut errors = Vec::new();
        let mut gap = None;
        let store = &mut self.streams[index(batch.stream)];
        for entry in &batch.entries {
            let Some(seq) = seq_of(entry) else {
                errors.push(format!("{name}: an entry without an integer seq"));
                continue;
            };
            let next = store.entries.len() as u64;
            let text = entry.to_string();
            if seq == next {
                store.entries.push(text.into_boxed_str());
            } else if seq < next {
                store.duplicates += 1;
                // Resent entries must be the same entries: a changed one is a fork.
                let stored = usize::try_from(seq).ok().and_then(|i| store.entries.get(i));
                if stored.is_some_and(|s| **s != *text) {
                    errors.push(format!("{name}: seq {seq} resent with different content"));
                }
            } else if gap.is_none() {
                gap = Some(format!(
                    "{name}: expected seq {next}, got {seq} (batch {}..={})",
                    batch.from_seq, batch.to_seq
                ));
            }
        }
        let stored = store.entries.len() as u64;
        self.protocol_errors.extend(errors);
        self.gaps.extend(gap);
        stored.checked_sub(1)
    }

    /// What the peer witnessed of `stream` for `runtime_id`, as `POST /v1/witness` answers:
    /// its stored entries (always contiguous, so always `continuous`) and the heads shown in
    /// verified hellos, heartbeats and checkpoints.
    pub(crate) fn witness(&self, runtime_id: &str, stream: Stream, seqs: &[u64]) -> WitnessAnswer {
        let held = self.streams[index(stream)].entries.len() as u64;
        let member = match stream {
            Stream::Trace => "trace_head",
            Stream::Audit => "audit_head",
        };
        let heads: Vec<WitnessedHash> = self
            .received
            .iter()
            .filter(|m| m.verified)
            .filter_map(|m| {
                let head = match m.kind.as_str() {
                    kind::HELLO | kind::HEARTBEAT => m.payload.get(member)?,
                    kind::CHECKPOINT if stream == Stream::Trace => &m.payload,
                    _ => return None,
                };
                Some(WitnessedHash {
                    seq: head.get("seq")?.as_u64()?,
                    entry_hash: head.get("entry_hash")?.as_str()?.to_owned(),
                    source: m.kind.clone(),
                })
            })
            .collect();
        let highest_head = heads.iter().max_by_key(|h| h.seq).map(|h| WireHead {
            seq: h.seq,
            entry_hash: h.entry_hash.clone(),
        });
        let mut hashes = Vec::new();
        for seq in seqs {
            let stored = usize::try_from(*seq)
                .ok()
                .and_then(|i| self.streams[index(stream)].entries.get(i))
                .and_then(|text| serde_json::from_str::<Value>(text).ok());
            if let Some(hash) = stored
                .as_ref()
                .and_then(|entry| entry.get("entry_hash"))
                .and_then(Value::as_str)
            {
                hashes.push(WitnessedHash {
                    seq: *seq,
                    entry_hash: hash.to_owned(),
                    source: "entry".to_owned(),
                });
            }
            let mut shown: Vec<&WitnessedHash> = heads.iter().filter(|h| h.seq == *seq).collect();
            shown.dedup_by(|a, b| a.entry_hash == b.entry_hash && a.source == b.source);
            hashes.extend(shown.into_iter().cloned());
        }
        let known = held > 0 || highest_head.is_some();
        WitnessAnswer {
            runtime_id: runtime_id.to_owned(),
            stream,
            chain: known.then(|| WitnessedChain {
                status: "continuous".to_owned(),
                next_seq: held,
                max_seq: held.checked_sub(1),
                gap: None,
                broken: None,
            }),
            witness_status: known.then(|| "ok".to_owned()),
            highest_head,
            hashes,
        }
    }

    /// Replaces the stored entries of `stream` from `seq` on with a chain of other content,
    /// sealed and linked from the entry before: what a peer that was sent a rewritten chain
    /// would hold.
    pub(crate) fn rewrite_from(&mut self, stream: Stream, seq: u64) {
        let store = &mut self.streams[index(stream)];
        let start = usize::try_from(seq).unwrap_or(usize::MAX);
        let mut prev = start
            .checked_sub(1)
            .and_then(|i| store.entries.get(i))
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|entry| entry.get("entry_hash")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| atlasbridge_protocol::trace::GENESIS_PREV_HASH.to_owned());
        for text in store.entries.iter_mut().skip(start) {
            let Ok(Value::Object(mut entry)) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            entry.insert("rewritten".to_owned(), Value::Bool(true));
            entry.insert("prev_hash".to_owned(), Value::String(prev));
            entry.remove("entry_hash");
            let sealed = atlasbridge_protocol::trace::seal(&entry);
            prev = sealed.entry_hash;
            *text = String::from_utf8_lossy(&sealed.line)
                .trim_end()
                .to_owned()
                .into_boxed_str();
        }
    }

    /// Keeps only the entries of `stream` before `seq`.
    pub(crate) fn forget_from(&mut self, stream: Stream, seq: u64) {
        let keep = usize::try_from(seq).unwrap_or(usize::MAX);
        self.streams[index(stream)].entries.truncate(keep);
    }

    pub(crate) fn connection_closed(&mut self, id: usize) {
        self.open.remove(&id);
        if self.current == Some(id) {
            self.current = None;
        }
    }

    /// Queues `outbound` on the current connection; false when none is open.
    pub(crate) fn send_current(&self, outbound: Outbound) -> bool {
        self.current
            .and_then(|id| self.open.get(&id))
            .is_some_and(|c| c.tx.send(outbound).is_ok())
    }

    /// Closes every open connection with `code`.
    pub(crate) fn close_all(&self, code: u16, reason: &str) {
        for connection in self.open.values() {
            let _ = connection.tx.send(Outbound::Close {
                code,
                reason: reason.to_owned(),
            });
        }
    }
}
