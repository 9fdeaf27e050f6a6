//! One runtime's control channel: challenge → hello → welcome, then batches, heartbeats and
//! checkpoints, each committed before it is acknowledged.
//!
//! Nothing a runtime sends can panic or stall the server: a bad frame is answered with an
//! `error` message; a database that is away closes the connection with 1013 (try again later),
//! so the runtime reconnects and resumes from where the server's durable copy ends.
//!
//! Policies: the `welcome` names the policy distributed to this runtime (the newest
//! distribution covering it), and a distribution made later, on any replica, wakes the channel
//! (see [`crate::live::LiveHub::watch_distributions`]) to offer it with
//! `policy_update_available`. The runtime's `policy_loaded` reports (its policy and local pins)
//! are stored, and so are its `session_started`, `session_ended` and `escalation_triggered`
//! (see [`crate::store::runtime_events`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use atlasbridge_protocol::cloud::Envelope;
use atlasbridge_protocol::cloud::messages::{
    Ack, AuditBatch, Challenge, Heartbeat, Hello, PROTOCOL_VERSION, PolicyRef, Resume, Stream,
    Welcome, WireError, WireHead, kind,
};
use atlasbridge_protocol::trace::checkpoint::{Checkpoint, decode_public_key, decode_signature};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use futures_util::FutureExt as _;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::auth::Claims;
use crate::db::{DbError, org_transaction};
use crate::entry_columns::parse_time;
use crate::ingest_group;
use crate::live::DistributionWatch;
use crate::metrics::BatchOutcome;
use crate::policy::report::PolicyReport;
use crate::server::AppState;
use crate::store::policies::{self as registry, DistributionRow};
use crate::store::runtime_events::{self, EscalationReport, SessionReport};
use crate::store::{self, CheckpointOutcome, HeadSource, HeadVerdict};

/// How long a runtime may take to answer the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// WebSocket close codes (RFC 6455).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
const CLOSE_INTERNAL: u16 = 1011;

/// Whether the connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Connection {
    state: Arc<AppState>,
    socket: WebSocket,
    org_id: String,
    runtime_id: String,
    /// Our last `sequence`.
    sent_sequence: u64,
    /// When the previous heartbeat arrived on this connection, to measure the interval.
    last_heartbeat: Option<Instant>,
    /// The policy last named to the runtime (in its welcome or an offer): offered once.
    offered: Option<PolicyRef>,
    /// A frame read while gathering batches that was not one: handled next, in its turn.
    pending: Option<Message>,
    /// The connection epoch this connection's hello started.
    epoch: i64,
}

/// Resolves when the organisation distributed a policy; never, once the watch is gone.
async fn next_distribution(watch: &mut Option<DistributionWatch>) {
    let ended = match watch {
        Some(receiver) => receiver.changed().await.is_err(),
        None => true,
    };
    if ended {
        *watch = None;
        std::future::pending::<()>().await;
    }
}

/// How a distribution is named on the wire.
fn policy_ref(row: &DistributionRow) -> PolicyRef {
    PolicyRef {
        name: row.name.clone(),
        version: row.version.to_string(),
        content_hash: row.content_hash.clone(),
    }
}

/// Serves one upgraded connection for the runtime and org of `claims`.
pub async fn run(socket: WebSocket, state: Arc<AppState>, claims: Claims) {
    let _open = state.metrics.channel_opened();
    let shutdown = state.shutdown.clone();
    let mut connection = Connection {
        state,
        socket,
        org_id: claims.org,
        runtime_id: claims.sub,
        sent_sequence: 0,
        last_heartbeat: None,
        offered: None,
        pending: None,
        epoch: 0,
    };
    // Watched before the welcome reads the policy, so a distribution committed in between
    // still wakes this channel.
    let mut distributions = Some(
        connection
            .state
            .live
            .watch_distributions(&connection.org_id),
    );
    let key = tokio::select! {
        () = shutdown.cancelled() => None,
        key = connection.handshake() => key,
    };
    let Some(key) = key else {
        return;
    };
    info!(runtime_id = %connection.runtime_id, org_id = %connection.org_id, "runtime connected");
    // Three heartbeat intervals of silence: the runtime is gone (it would reconnect itself).
    let idle = Duration::from_secs(
        connection
            .state
            .config
            .runtime
            .heartbeat_s
            .saturating_mul(3),
    );
    let mut flow = Flow::Continue;
    while flow == Flow::Continue {
        if let Some(message) = connection.pending.take() {
            flow = connection.on_frame(message, &key).await;
            continue;
        }
        flow = tokio::select! {
            () = shutdown.cancelled() => {
                connection.close(CLOSE_GOING_AWAY, "server shutting down").await
            }
            frame = tokio::time::timeout(idle, connection.socket.recv()) => match frame {
                Ok(Some(Ok(message))) => connection.on_frame(message, &key).await,
                Ok(Some(Err(_)) | None) => Flow::Stop,
                Err(_) => connection.close(CLOSE_POLICY, "idle").await,
            },
            () = next_distribution(&mut distributions) => connection.offer_policy().await,
        };
    }
    info!(runtime_id = %connection.runtime_id, "runtime disconnected");
    connection.publish_disconnected().await;
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    // The protocol's payload types are plain structs: they always serialise.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Connection {
    /// Tells the live stream the runtime is gone (best effort: the registry is what counts).
    async fn publish_disconnected(&mut self) {
        let published = async {
            let mut client = self.state.db.client().await?;
            let transaction = org_transaction(&mut client, &self.org_id).await?;
            store::publish_runtime_change(
                &transaction,
                &self.org_id,
                &self.runtime_id,
                "disconnected",
            )
            .await?;
            transaction.commit().await?;
            Ok::<(), DbError>(())
        }
        .await;
        if let Err(error) = published {
            debug!(runtime_id = %self.runtime_id, %error, "no live event for a disconnection");
        }
    }

    /// Challenge, hello, registry, welcome; the runtime's key when all went well.
    async fn handshake(&mut self) -> Option<VerifyingKey> {
        let mut nonce = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut nonce) {
            warn!(error = %e, "no randomness for a challenge");
            let _ = self.send_error("INTERNAL", "no randomness").await;
            let _ = self.close(CLOSE_INTERNAL, "internal error").await;
            return None;
        }
        let challenge = Challenge {
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        };
        if self.send(kind::CHALLENGE, to_value(&challenge)).await == Flow::Stop {
            return None;
        }
        let text = loop {
            match tokio::time::timeout(HELLO_TIMEOUT, self.socket.recv()).await {
                Ok(Some(Ok(Message::Text(text)))) => break text,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(_))) => {
                    self.fail_handshake("MALFORMED", "expected a text frame")
                        .await;
                    return None;
                }
                Ok(Some(Err(_)) | None) => return None,
                Err(_) => {
                    self.fail_handshake("HANDSHAKE_TIMEOUT", "no hello in time")
                        .await;
                    return None;
                }
            }
        };
        let (key, hello) = match self.check_hello(text.as_str(), &nonce) {
            Ok(checked) => checked,
            Err((code, why)) => {
                info!(runtime_id = %self.runtime_id, code, why, "handshake refused");
                self.fail_handshake(code, &why).await;
                return None;
            }
        };
        let registered = self.register(&hello).await;
        let (resume, refusals, policy) = match registered {
            Ok(registered) => registered,
            Err(e) => {
                self.database_failed(&e).await;
                return None;
            }
        };
        for refusal in refusals {
            if self.send_error("HEAD_REFUSED", &refusal).await == Flow::Stop {
                return None;
            }
        }
        self.offered.clone_from(&policy);
        let welcome = Welcome {
            session: uuid::Uuid::now_v7().to_string(),
            server_time: now_rfc3339(),
            policy,
            resume,
        };
        (self.send(kind::WELCOME, to_value(&welcome)).await == Flow::Continue).then_some(key)
    }

    /// The runtime's key and hello, or the error code and why. (Methods that await take
    /// `&mut self`: the socket is `Send` but not `Sync`, so `&Connection` could not cross an
    /// await of a task that must be `Send`.)
    fn check_hello(
        &self,
        text: &str,
        nonce: &[u8; 32],
    ) -> Result<(VerifyingKey, Hello), (&'static str, String)> {
        let envelope = Envelope::parse(text).map_err(|e| ("MALFORMED", e.to_string()))?;
        if envelope.kind != kind::HELLO {
            return Err(("EXPECTED_HELLO", format!("got {} first", envelope.kind)));
        }
        // The token was issued to one runtime of one org: the hello must be that runtime's.
        if envelope.runtime_id != self.runtime_id || envelope.org_id != self.org_id {
            return Err((
                "IDENTITY_MISMATCH",
                "the hello's runtime_id or org_id is not the token's".to_owned(),
            ));
        }
        let key = decode_public_key(&envelope.runtime_id).ok_or_else(|| {
            (
                "BAD_RUNTIME_ID",
                "runtime_id is not an Ed25519 key".to_owned(),
            )
        })?;
        envelope
            .verify(&key)
            .map_err(|e| ("BAD_SIGNATURE", format!("hello envelope: {e}")))?;
        let hello: Hello = envelope
            .payload_as()
            .map_err(|e| ("BAD_PAYLOAD", e.to_string()))?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err((
                "UNSUPPORTED_PROTOCOL",
                format!("protocol {}, expected {PROTOCOL_VERSION}", hello.protocol),
            ));
        }
        let signature = decode_signature(&hello.nonce_signature)
            .ok_or(("BAD_NONCE_SIGNATURE", "not an ed25519 signature".to_owned()))?;
        key.verify_strict(nonce, &signature).map_err(|_| {
            (
                "BAD_NONCE_SIGNATURE",
                "does not verify over the nonce".to_owned(),
            )
        })?;
        Ok((key, hello))
    }

    /// Registers the runtime and witnesses its hello heads; returns where the server's copies
    /// end, the heads it refused, and the policy distributed to it.
    async fn register(
        &mut self,
        hello: &Hello,
    ) -> Result<(Resume, Vec<String>, Option<PolicyRef>), DbError> {
        let mut client = self.state.db.client().await?;
        let transaction = org_transaction(&mut client, &self.org_id).await?;
        let registered = store::register_runtime(
            &transaction,
            &self.org_id,
            &self.runtime_id,
            &hello.agent_version,
            &hello.edition,
        )
        .await?;
        self.epoch = registered.epoch;
        let resume = registered.resume;
        let refusals = self
            .witness(
                &transaction,
                &[
                    (Stream::Trace, hello.trace_head.as_ref()),
                    (Stream::Audit, hello.audit_head.as_ref()),
                ],
                HeadSource::Hello,
            )
            .await?;
        store::publish_runtime_change(&transaction, &self.org_id, &self.runtime_id, "connected")
            .await?;
        let policy = registry::runtime_distribution(&transaction, &self.runtime_id)
            .await?
            .as_ref()
            .map(policy_ref);
        transaction.commit().await?;
        Ok((resume, refusals, policy))
    }

    /// After a distribution in the organisation: offers the runtime its policy if that is not
    /// the one it was last told of. (Most distributions are for other runtimes, or name the
    /// same version again: nothing is sent then.)
    async fn offer_policy(&mut self) -> Flow {
        let current = async {
            let mut client = self.state.db.client().await?;
            let transaction = org_transaction(&mut client, &self.org_id).await?;
            let row = registry::runtime_distribution(&transaction, &self.runtime_id).await?;
            transaction.commit().await?;
            Ok::<_, DbError>(row.as_ref().map(policy_ref))
        }
        .await;
        let offer = match current {
            Ok(Some(offer)) if self.offered.as_ref() != Some(&offer) => offer,
            Ok(_) => return Flow::Continue,
            Err(e) => {
                self.database_failed(&e).await;
                return Flow::Stop;
            }
        };
        info!(runtime_id = %self.runtime_id, name = %offer.name, version = %offer.version, "offering a policy");
        let flow = self
            .send(kind::POLICY_UPDATE_AVAILABLE, to_value(&offer))
            .await;
        self.offered = Some(offer);
        flow
    }

    async fn witness(
        &mut self,
        transaction: &tokio_postgres::Transaction<'_>,
        heads: &[(Stream, Option<&WireHead>)],
        source: HeadSource,
    ) -> Result<Vec<String>, DbError> {
        let mut refusals = Vec::new();
        for (stream, head) in heads {
            let Some(head) = head else { continue };
            let verdict = store::witness_head(
                transaction,
                &self.org_id,
                &self.runtime_id,
                *stream,
                head,
                source,
            )
            .await?;
            if let HeadVerdict::Refused { kind, detail } = verdict {
                self.state.metrics.head_refused(*stream, kind);
                refusals.push(detail);
            }
        }
        Ok(refusals)
    }

    async fn on_frame(&mut self, message: Message, key: &VerifyingKey) -> Flow {
        match message {
            Message::Text(text) => self.on_text(text.as_str(), key).await,
            Message::Binary(_) => {
                self.send_error("MALFORMED", "binary frames are not part of the protocol")
                    .await
            }
            // The WebSocket layer answers pings itself.
            Message::Ping(_) | Message::Pong(_) => Flow::Continue,
            Message::Close(_) => Flow::Stop,
        }
    }

    async fn on_text(&mut self, text: &str, key: &VerifyingKey) -> Flow {
        let envelope = match Envelope::parse(text) {
            Ok(envelope) => envelope,
            Err(e) => return self.send_error("MALFORMED", &e.to_string()).await,
        };
        if let Err(e) = envelope.verify(key) {
            warn!(runtime_id = %self.runtime_id, kind = %envelope.kind, error = %e, "dropping a message");
            return self.send_error("BAD_SIGNATURE", &e.to_string()).await;
        }
        if envelope.runtime_id != self.runtime_id || envelope.org_id != self.org_id {
            return self
                .send_error(
                    "IDENTITY_MISMATCH",
                    "runtime_id or org_id is not this connection's",
                )
                .await;
        }
        let result = match envelope.kind.as_str() {
            kind::AUDIT_BATCH => self.on_batch(envelope, key).await,
            kind::HEARTBEAT => self.on_heartbeat(&envelope).await,
            kind::CHECKPOINT => self.on_checkpoint(&envelope).await,
            kind::ERROR => {
                warn!(runtime_id = %self.runtime_id, payload = %envelope.payload, "the runtime reported an error");
                Ok(Flow::Continue)
            }
            kind::POLICY_LOADED => self.on_policy_loaded(&envelope).await,
            kind::SESSION_STARTED | kind::SESSION_ENDED => self.on_session(&envelope).await,
            kind::ESCALATION_TRIGGERED => self.on_escalation(&envelope).await,
            other => {
                debug!(runtime_id = %self.runtime_id, kind = other, "ignoring an unknown message type");
                Ok(Flow::Continue)
            }
        };
        match result {
            Ok(flow) => flow,
            Err(e) => {
                self.database_failed(&e).await;
                Flow::Stop
            }
        }
    }

    /// Stores `envelope`'s batch together with the batches already waiting behind it (never
    /// waiting for more; see [`ingest_group`]) in one transaction, then acknowledges each stream
    /// through where its contiguous prefix now ends.
    async fn on_batch(&mut self, envelope: Envelope, key: &VerifyingKey) -> Result<Flow, DbError> {
        // By value: the entries move into the batch instead of being copied.
        let batch: AuditBatch = match serde_json::from_value(envelope.payload) {
            Ok(batch) => batch,
            Err(e) => {
                self.state.metrics.batch(None, BatchOutcome::Rejected);
                let why = format!("{} payload: {e}", envelope.kind);
                return Ok(self.send_error("BAD_PAYLOAD", &why).await);
            }
        };
        let mut batches = vec![batch];
        let mut peer_gone = false;
        while batches.len() < ingest_group::MAX_BATCHES {
            let Some(received) = self.socket.recv().now_or_never() else {
                break;
            };
            match received {
                Some(Ok(Message::Text(text))) => match self.ready_batch(text.as_str(), key) {
                    Some(batch) => batches.push(batch),
                    None => {
                        self.pending = Some(Message::Text(text));
                        break;
                    }
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => {
                    self.pending = Some(other);
                    break;
                }
                Some(Err(_)) | None => {
                    peer_gone = true;
                    break;
                }
            }
        }
        let received = batches.len();
        let streams: Vec<Stream> = batches.iter().map(|batch| batch.stream).collect();
        let through = match self.store_batches(batches).await {
            Ok(through) => through,
            Err(e) => {
                for stream in streams {
                    self.state.metrics.batch(Some(stream), BatchOutcome::Failed);
                }
                return Err(e);
            }
        };
        debug!(runtime_id = %self.runtime_id, batches = received, "batches committed");
        // The acks follow the COMMIT: what they cover survives any crash from here on.
        for (stream, through_seq) in through {
            let ack = Ack {
                of: None,
                stream: Some(stream),
                through_seq: Some(through_seq),
            };
            if self.send(kind::ACK, to_value(&ack)).await == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(if peer_gone {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    /// Stores `batches` in one transaction and counts them once it committed; returns, per
    /// stream, where its contiguous prefix now ends.
    async fn store_batches(
        &mut self,
        batches: Vec<AuditBatch>,
    ) -> Result<Vec<(Stream, u64)>, DbError> {
        let mut through: Vec<(Stream, u64)> = Vec::new();
        let mut committed = Vec::with_capacity(batches.len());
        let mut client = self.state.db.client().await?;
        let transaction = org_transaction(&mut client, &self.org_id).await?;
        for batch in ingest_group::merge(batches) {
            let outcome =
                store::ingest(&transaction, &self.org_id, &self.runtime_id, &batch).await?;
            debug!(
                runtime_id = %self.runtime_id,
                stream = batch.stream.name(),
                from = batch.from_seq,
                to = batch.to_seq,
                stored = outcome.stored,
                through = ?outcome.through_seq,
                "batch ingested"
            );
            if let Some(seq) = outcome.through_seq {
                // The contiguous prefix only grows: the last answer per stream is the furthest.
                through.retain(|(stream, _)| *stream != batch.stream);
                through.push((batch.stream, seq));
            }
            committed.push((batch.stream, outcome));
        }
        transaction.commit().await?;
        for (stream, outcome) in committed {
            let findings: Vec<&'static str> =
                outcome.problems.iter().map(|(kind, _)| *kind).collect();
            self.state.metrics.batch_committed(
                stream,
                outcome.stored,
                outcome.through_seq.is_some(),
                &findings,
            );
        }
        Ok(through)
    }

    /// The batch in `text` when it is a well-formed, well-signed `audit_batch` of this
    /// connection's runtime; anything else is left for [`Self::on_frame`] to answer in turn.
    fn ready_batch(&self, text: &str, key: &VerifyingKey) -> Option<AuditBatch> {
        let envelope = Envelope::parse(text).ok()?;
        if envelope.kind != kind::AUDIT_BATCH
            || envelope.runtime_id != self.runtime_id
            || envelope.org_id != self.org_id
        {
            return None;
        }
        envelope.verify(key).ok()?;
        serde_json::from_value(envelope.payload).ok()
    }

    /// Stores what the runtime runs: its loaded policy and local pins (not acknowledged: the
    /// protocol does not ack these advisory messages).
    async fn on_policy_loaded(&mut self, envelope: &Envelope) -> Result<Flow, DbError> {
        let report = match PolicyReport::parse(&envelope.payload) {
            Ok(report) => report,
            Err(why) => return Ok(self.send_error("BAD_PAYLOAD", &why).await),
        };
        let mut client = self.state.db.client().await?;
        let transaction = org_transaction(&mut client, &self.org_id).await?;
        registry::record_report(&transaction, &self.org_id, &self.runtime_id, &report).await?;
        transaction.commit().await?;
        debug!(runtime_id = %self.runtime_id, name = %report.name, hash = %report.policy_hash, pins = report.pins.len(), "policy report stored");
        Ok(Flow::Continue)
    }

    /// Stores a session's start or end (not acknowledged, as the other advisory messages).
    async fn on_session(&mut self, envelope: &Envelope) -> Result<Flow, DbError> {
        let report = match SessionReport::parse(&envelope.payload) {
            Ok(report) => report,
            Err(why) => return Ok(self.send_error("BAD_PAYLOAD", &why).await),
        };
        let at = message_time(envelope);
        let mut client = self.state.db.client().await?;
        let transaction = org_transaction(&mut client, &self.org_id).await?;
        if envelope.kind == kind::SESSION_STARTED {
            runtime_events::record_session_started(
                &transaction,
                &self.org_id,
                &self.runtime_id,
                &report,
                at,
            )
            .await?;
        } else {
            runtime_events::record_session_ended(
                &transaction,
                &self.org_id,
                &self.runtime_id,
                &report,
                at,
            )
            .await?;
        }
        transaction.commit().await?;
        debug!(runtime_id = %self.runtime_id, kind = %envelope.kind, session_id = %report.session_id, "session report stored");
        Ok(Flow::Continue)
    }

    /// Stores an escalation, once per trace entry.
    async fn on_escalation(&mut self, envelope: &Envelope) -> Result<Flow, DbError> {
        let report = match EscalationReport::parse(&envelope.payload) {
            Ok(report) => report,
            Err(why) => return Ok(self.send_error("BAD_PAYLOAD", &why).await),
        };
        let at = message_time(envelope);
        let mut client = self.state.db.client().await?;
        let transaction = org_transaction(&mut client, &self.org_id).await?;
        let new = runtime_events::record_escalation(
            &transaction,
            &self.org_id,
            &self.runtime_id,
            &report,
            at,
        )
        .await?;
        transaction.commit().await?;
        debug!(runtime_id = %self.runtime_id, seq = report.seq, new, "escalation stored");
        Ok(Flow::Continue)
    }

    async fn on_heartbeat(&mut self, envelope: &Envelope) -> Result<Flow, DbError> {
        let heartbeat: Heartbeat = match envelope.payload_as() {
            Ok(heartbeat) => heartbeat,
            Err(e) => return Ok(self.send_error("BAD_PAYLOAD", &e.to_string()).await),
        };
        let now = Instant::now();
        let interval_ms = self.last_heartbeat.map(|previous| {
            i64::try_from(now.duration_since(previous).as_millis()).unwrap_or(i64::MAX)
        });
        self.last_heartbeat = Some(now);
        let mut client = self.state.db.client().await?;
        let transaction = org_transaction(&mut client, &self.org_id).await?;
        store::record_heartbeat(&transaction, &self.runtime_id, interval_ms).await?;
        let refusals = self
            .witness(
                &transaction,
                &[
                    (Stream::Trace, heartbeat.trace_head.as_ref()),
                    (Stream::Audit, heartbeat.audit_head.as_ref()),
                ],
                HeadSource::Heartbeat { epoch: self.epoch },
            )
            .await?;
        transaction.commit().await?;
        if let Some(first) = refusals.first() {
            return Ok(self.send_error("HEAD_REFUSED", first).await);
        }
        Ok(self.ack_of(&envelope.message_id).await)
    }

    async fn on_checkpoint(&mut self, envelope: &Envelope) -> Result<Flow, DbError> {
        let checkpoint: Checkpoint = match envelope.payload_as() {
            Ok(checkpoint) => checkpoint,
            Err(e) => return Ok(self.send_error("BAD_PAYLOAD", &e.to_string()).await),
        };
        let mut client = self.state.db.client().await?;
        let transaction = org_transaction(&mut client, &self.org_id).await?;
        let outcome = store::store_checkpoint(
            &transaction,
            &self.org_id,
            &self.runtime_id,
            &checkpoint,
            &envelope.payload,
        )
        .await?;
        transaction.commit().await?;
        match outcome {
            CheckpointOutcome::Stored(_) | CheckpointOutcome::Duplicate => {
                Ok(self.ack_of(&envelope.message_id).await)
            }
            CheckpointOutcome::Refused(why) => {
                self.state.metrics.checkpoint_refused();
                Ok(self.send_error("CHECKPOINT_REFUSED", &why).await)
            }
        }
    }

    async fn ack_of(&mut self, message_id: &str) -> Flow {
        let ack = Ack {
            of: Some(message_id.to_owned()),
            stream: None,
            through_seq: None,
        };
        self.send(kind::ACK, to_value(&ack)).await
    }

    /// Sends a signed envelope.
    async fn send(&mut self, kind: &str, payload: Value) -> Flow {
        self.sent_sequence += 1;
        let envelope = Envelope::new(
            kind,
            &self.org_id,
            &self.runtime_id,
            self.sent_sequence,
            payload,
        )
        .signed(&self.state.signing_key);
        match self
            .socket
            .send(Message::Text(envelope.to_text().into()))
            .await
        {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    async fn send_error(&mut self, code: &str, message: &str) -> Flow {
        let error = WireError {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        self.send(kind::ERROR, to_value(&error)).await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Flow {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
        Flow::Stop
    }

    async fn fail_handshake(&mut self, code: &str, why: &str) {
        let _ = self.send_error(code, why).await;
        let _ = self.close(CLOSE_POLICY, code).await;
    }

    /// Nothing was acknowledged: close so that the runtime comes back and resumes.
    async fn database_failed(&mut self, error: &DbError) {
        warn!(runtime_id = %self.runtime_id, %error, "closing a runtime connection");
        let code = if error.is_transient() {
            CLOSE_TRY_AGAIN_LATER
        } else {
            CLOSE_INTERNAL
        };
        let _ = self
            .send_error("UNAVAILABLE", "the server cannot store this now")
            .await;
        let _ = self.close(code, "try again later").await;
    }
}

/// When a runtime says a message happened: its envelope's timestamp, or now when that does
/// not parse (the message is still worth keeping).
fn message_time(envelope: &Envelope) -> SystemTime {
    parse_time(&envelope.timestamp).unwrap_or_else(SystemTime::now)
}

/// Now, RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}
