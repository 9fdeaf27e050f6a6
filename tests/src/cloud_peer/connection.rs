//! One WebSocket connection: the challenge handshake, then batches, heartbeats and the rest,
//! with the faults applied.

use std::sync::Arc;
use std::time::Duration;

use atlasbridge_protocol::cloud::Envelope;
use atlasbridge_protocol::cloud::messages::{
    Ack, AuditBatch, Challenge, Hello, PROTOCOL_VERSION, Welcome, WireError, kind,
};
use atlasbridge_protocol::trace::checkpoint::{decode_public_key, decode_signature};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;

use super::state::{Outbound, ReceivedMessage, SentMessage};
use super::{OutgoingSigning, Shared, timestamp};

/// How long a connection may take to answer the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Connection {
    shared: Arc<Shared>,
    id: usize,
    socket: WebSocket,
    /// This connection's own queue, for delayed acks.
    tx: UnboundedSender<Outbound>,
    /// The last `sequence` sent.
    sent_sequence: u64,
    /// The token's runtime until the hello, then the hello's.
    runtime_id: String,
    /// Set by a good hello.
    runtime_key: Option<VerifyingKey>,
    nonce: [u8; 32],
}

/// Serves one upgraded connection until it closes, the peer stops, or a fault ends it.
pub(super) async fn run(
    socket: WebSocket,
    shared: Arc<Shared>,
    mut kill: watch::Receiver<bool>,
    id: usize,
    runtime_id: String,
    tx: UnboundedSender<Outbound>,
    mut rx: UnboundedReceiver<Outbound>,
) {
    let mut nonce = [0u8; 32];
    let random = getrandom::fill(&mut nonce);
    let mut connection = Connection {
        shared: Arc::clone(&shared),
        id,
        socket,
        tx,
        sent_sequence: 0,
        runtime_id,
        runtime_key: None,
        nonce,
    };
    let mut flow = match random {
        Ok(()) => {
            let challenge = Challenge {
                nonce: URL_SAFE_NO_PAD.encode(nonce),
            };
            connection
                .send(kind::CHALLENGE, to_value(&challenge), None)
                .await
        }
        Err(e) => {
            connection
                .fail_handshake("INTERNAL", &format!("no randomness for the nonce: {e}"))
                .await
        }
    };
    let hello_deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    while flow == Flow::Continue {
        let handshaken = connection.runtime_key.is_some();
        flow = tokio::select! {
            // The guard `wait_for` yields is not `Send`: let it go inside.
            () = async { let _ = kill.wait_for(|killed| *killed).await; } => Flow::Stop,
            outbound = rx.recv() => match outbound {
                Some(outbound) => connection.deliver(outbound).await,
                None => Flow::Stop,
            },
            frame = connection.socket.recv() => match frame {
                Some(Ok(message)) => connection.on_frame(message).await,
                Some(Err(_)) | None => Flow::Stop,
            },
            () = tokio::time::sleep_until(hello_deadline), if !handshaken => {
                connection.fail_handshake("HANDSHAKE_TIMEOUT", "no hello in time").await
            }
        };
    }
    shared.update(|s| s.connection_closed(id));
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    // The protocol's payload types are plain structs: they always serialise.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Connection {
    /// Sends an envelope of `kind`, numbered and signed (as `signing`, else the faults, say).
    async fn send(&mut self, kind: &str, payload: Value, signing: Option<OutgoingSigning>) -> Flow {
        self.sent_sequence += 1;
        let signing = signing.unwrap_or_else(|| self.shared.faults().outgoing);
        let envelope = Envelope::new(
            kind,
            &self.shared.org_id,
            &self.runtime_id,
            self.sent_sequence,
            payload.clone(),
        );
        let envelope = match signing {
            OutgoingSigning::Server => envelope.signed(&self.shared.server_key),
            OutgoingSigning::WrongKey => envelope.signed(&self.shared.wrong_key),
            OutgoingSigning::Unsigned => envelope,
        };
        let record = SentMessage {
            connection: self.id,
            kind: kind.to_owned(),
            sequence: self.sent_sequence,
            payload,
            signing,
        };
        self.shared.update(|s| s.sent.push(record));
        self.send_frame(Message::Text(envelope.to_text().into()))
            .await
    }

    async fn send_frame(&mut self, message: Message) -> Flow {
        match self.socket.send(message).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    async fn send_error(&mut self, code: &str, message: &str) -> Flow {
        let error = WireError {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        self.send(kind::ERROR, to_value(&error), None).await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Flow {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.send_frame(Message::Close(Some(frame))).await;
        Flow::Stop
    }

    /// Records a failed handshake, says why, and closes.
    async fn fail_handshake(&mut self, code: &str, why: &str) -> Flow {
        let id = self.id;
        self.shared.update(|s| {
            s.handshake_failures
                .push(format!("connection {id}: {code}: {why}"));
        });
        let _ = self.send_error(code, why).await;
        self.close(1008, code).await
    }

    fn protocol_error(&self, what: String) {
        let id = self.id;
        self.shared
            .update(|s| s.protocol_errors.push(format!("connection {id}: {what}")));
    }

    async fn deliver(&mut self, outbound: Outbound) -> Flow {
        match outbound {
            Outbound::Message {
                kind,
                payload,
                signing,
            } => self.send(&kind, payload, signing).await,
            Outbound::Raw(text) => self.send_frame(Message::Text(text.into())).await,
            Outbound::Close { code, reason } => self.close(code, &reason).await,
        }
    }

    async fn on_frame(&mut self, message: Message) -> Flow {
        match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            Message::Binary(_) => {
                self.protocol_error("binary frame".to_owned());
                if self.runtime_key.is_none() {
                    return self.fail_handshake("MALFORMED", "binary frame").await;
                }
                self.send_error("MALFORMED", "binary frames are not part of the protocol")
                    .await
            }
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) => Flow::Continue,
            Message::Close(_) => Flow::Stop,
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let envelope = match Envelope::parse(text) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.protocol_error(format!("unparsable frame: {e}"));
                if self.runtime_key.is_none() {
                    return self.fail_handshake("MALFORMED", &e.to_string()).await;
                }
                return self.send_error("MALFORMED", &e.to_string()).await;
            }
        };
        let Some(key) = self.runtime_key else {
            return self.on_hello(envelope, text.len()).await;
        };
        let verified = envelope.verify(&key);
        self.record(&envelope, verified.is_ok(), text.len());
        if let Err(e) = verified {
            let line = format!(
                "connection {}: {} #{}: {e}",
                self.id, envelope.kind, envelope.sequence
            );
            self.shared.update(|s| s.bad_signatures.push(line));
            return Flow::Continue;
        }
        if envelope.runtime_id != self.runtime_id {
            self.protocol_error(format!(
                "{} from runtime {} on the connection of {}",
                envelope.kind, envelope.runtime_id, self.runtime_id
            ));
        }
        match envelope.kind.as_str() {
            kind::AUDIT_BATCH => self.on_batch(&envelope).await,
            kind::HEARTBEAT | kind::CHECKPOINT => {
                self.ack(json!({"of": envelope.message_id})).await
            }
            kind::POLICY_LOADED
            | kind::SESSION_STARTED
            | kind::SESSION_ENDED
            | kind::ESCALATION_TRIGGERED
            | kind::ERROR => Flow::Continue,
            other => {
                self.protocol_error(format!("unexpected {other} after the handshake"));
                Flow::Continue
            }
        }
    }

    /// Logs a received envelope (a batch without its entries, which are stored apart).
    fn record(&self, envelope: &Envelope, verified: bool, bytes: usize) {
        let payload = match &envelope.payload {
            // Copy all but the entries: they can be 64 KiB a batch and are stored apart.
            Value::Object(members) if envelope.kind == kind::AUDIT_BATCH => {
                let mut summary: serde_json::Map<String, Value> = members
                    .iter()
                    .filter(|(name, _)| *name != "entries")
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                let count = members
                    .get("entries")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                summary.insert("entry_count".to_owned(), json!(count));
                Value::Object(summary)
            }
            other => other.clone(),
        };
        let message = ReceivedMessage {
            connection: self.id,
            kind: envelope.kind.clone(),
            message_id: envelope.message_id.clone(),
            sequence: envelope.sequence,
            payload,
            verified,
            bytes,
        };
        self.shared.update(|s| s.received.push(message));
    }

    async fn on_hello(&mut self, envelope: Envelope, bytes: usize) -> Flow {
        let checked = self.check_hello(&envelope);
        self.record(&envelope, checked.is_ok(), bytes);
        let key = match checked {
            Ok(key) => key,
            Err((code, why)) => return self.fail_handshake(code, &why).await,
        };
        if envelope.org_id != self.shared.org_id {
            self.protocol_error(format!(
                "hello from org {}, expected {}",
                envelope.org_id, self.shared.org_id
            ));
        }
        self.runtime_key = Some(key);
        self.runtime_id = envelope.runtime_id;
        let id = self.id;
        let (policy, resume, skew) = self.shared.update(|s| {
            s.connections += 1;
            if let Some(open) = s.open.get_mut(&id) {
                open.handshaken = true;
            }
            s.current = Some(id);
            (s.current_policy.clone(), s.resume(), s.faults.clock_skew_s)
        });
        let welcome = Welcome {
            session: format!("session-{id}"),
            server_time: timestamp(skew),
            policy,
            resume,
        };
        self.send(kind::WELCOME, to_value(&welcome), None).await
    }

    /// The runtime's key if `envelope` is a good hello, else the error code and why.
    fn check_hello(&self, envelope: &Envelope) -> Result<VerifyingKey, (&'static str, String)> {
        if envelope.kind != kind::HELLO {
            return Err(("EXPECTED_HELLO", format!("got {} first", envelope.kind)));
        }
        let key = decode_public_key(&envelope.runtime_id).ok_or_else(|| {
            (
                "BAD_RUNTIME_ID",
                format!("runtime_id {:?} is not an Ed25519 key", envelope.runtime_id),
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
        key.verify_strict(&self.nonce, &signature).map_err(|_| {
            (
                "BAD_NONCE_SIGNATURE",
                "does not verify over the nonce".to_owned(),
            )
        })?;
        Ok(key)
    }

    async fn on_batch(&mut self, envelope: &Envelope) -> Flow {
        let batch: AuditBatch = match envelope.payload_as() {
            Ok(batch) => batch,
            Err(e) => {
                self.protocol_error(e.to_string());
                return self.send_error("BAD_PAYLOAD", &e.to_string()).await;
            }
        };
        let (close, through) = self.shared.update(|s| {
            let mut close = None;
            if let Some(fault) = s.faults.close_mid_batch {
                s.batches_since_close += 1;
                if s.batches_since_close >= fault.after.max(1) {
                    s.batches_since_close = 0;
                    s.closed_mid_batch += 1;
                    if !fault.repeat {
                        s.faults.close_mid_batch = None;
                    }
                    close = Some(fault.commit);
                }
            }
            let through = match close {
                Some(false) => None,
                Some(true) | None => s.store_batch(&batch),
            };
            (close.is_some(), through)
        });
        if close {
            return self.close(1011, "closed mid-batch").await;
        }
        match through {
            Some(through_seq) => {
                let ack = Ack {
                    of: None,
                    stream: Some(batch.stream),
                    through_seq: Some(through_seq),
                };
                self.ack(to_value(&ack)).await
            }
            None => Flow::Continue,
        }
    }

    /// Sends an ack as the faults say: now, later, twice, or not at all.
    async fn ack(&mut self, payload: Value) -> Flow {
        let faults = self.shared.faults();
        if faults.withhold_acks {
            return Flow::Continue;
        }
        let copies = if faults.duplicate_acks { 2 } else { 1 };
        if faults.ack_delay.is_zero() {
            for _ in 0..copies {
                if self.send(kind::ACK, payload.clone(), None).await == Flow::Stop {
                    return Flow::Stop;
                }
            }
            return Flow::Continue;
        }
        // Through the connection's own queue, so the delay does not hold up reading.
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(faults.ack_delay).await;
            for _ in 0..copies {
                let _ = tx.send(Outbound::Message {
                    kind: kind::ACK.to_owned(),
                    payload: payload.clone(),
                    signing: None,
                });
            }
        });
        Flow::Continue
    }
}
