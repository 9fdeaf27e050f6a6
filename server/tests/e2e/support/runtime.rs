//! A hand-written runtime: a real Ed25519 identity speaking the control channel with the
//! protocol crate's types, so a test can send exactly the batch, head or checkpoint it means.

use std::time::Duration;

use atlasbridge_protocol::cloud::Envelope;
use atlasbridge_protocol::cloud::messages::{
    Ack, AuditBatch, Challenge, Heartbeat, Hello, PROTOCOL_VERSION, Stream, Welcome, WireHead, kind,
};
use atlasbridge_protocol::cloud::rest::{TokenRequest, TokenResponse};
use atlasbridge_protocol::trace::checkpoint::{Checkpoint, encode_public_key, encode_signature};
use atlasbridge_protocol::trace::{GENESIS_PREV_HASH, seal};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{DEADLINE, TestServer};

/// A fresh identity key from OS randomness.
pub fn identity() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("randomness");
    SigningKey::from_bytes(&seed)
}

/// The runtime id of `key` (`ed25519:` + its public key).
pub fn id_of(key: &SigningKey) -> String {
    encode_public_key(&key.verifying_key())
}

/// A chain of `count` sealed trace entries, as the daemon stores them, starting at `from` after
/// `prev` (the genesis hash for a chain from 0).
pub fn chain_from(from: u64, prev: &str, count: usize, tag: &str) -> Vec<Value> {
    let mut entries = Vec::with_capacity(count);
    let mut prev = prev.to_owned();
    for seq in from..from + count as u64 {
        let body = json!({
            "trace_version": 2,
            "seq": seq,
            "entry_id": uuid::Uuid::now_v7().to_string(),
            "timestamp": "2026-11-27T03:00:00.000000Z",
            "session_id": format!("session-{tag}"),
            "agent_id": "agent",
            "prompt_id": format!("p{seq}"),
            "prompt_type": "yes_no",
            "policy_action": "auto_reply",
            "action_taken": "auto_reply",
            "risk_level": "low",
            "risk_reasons": [],
            "replay_safe": false,
            "prev_hash": prev,
        });
        let sealed = seal(body.as_object().expect("an object"));
        prev = sealed.entry_hash.clone();
        entries.push(serde_json::from_slice(&sealed.line).expect("a sealed line is JSON"));
    }
    entries
}

/// Seals `bodies` into a chain from seq `from` after `prev`: each gets its `seq`, `prev_hash`,
/// an `entry_id` when it has none, and its `entry_hash`.
pub fn seal_chain(from: u64, prev: &str, bodies: Vec<Value>) -> Vec<Value> {
    let mut prev = prev.to_owned();
    bodies
        .into_iter()
        .zip(from..)
        .map(|(mut body, seq)| {
            let members = body.as_object_mut().expect("an object");
            members.insert("seq".into(), seq.into());
            members.insert("prev_hash".into(), prev.clone().into());
            members
                .entry("entry_id")
                .or_insert_with(|| uuid::Uuid::now_v7().to_string().into());
            let sealed = seal(members);
            prev = sealed.entry_hash.clone();
            serde_json::from_slice(&sealed.line).expect("a sealed line is JSON")
        })
        .collect()
}

/// A chain of `count` entries from seq 0.
pub fn chain(count: usize) -> Vec<Value> {
    chain_from(0, GENESIS_PREV_HASH, count, "a")
}

/// The head of `entries` (the last one).
pub fn head_of(entries: &[Value]) -> WireHead {
    let last = entries.last().expect("a non-empty chain");
    WireHead {
        seq: last["seq"].as_u64().expect("seq"),
        entry_hash: last["entry_hash"].as_str().expect("hash").to_owned(),
    }
}

/// Asks for a token; the raw response, for tests of refusals.
pub async fn token_response(
    server: &TestServer,
    org: &str,
    api_key: &str,
    runtime_id: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.http_url("/v1/auth/token"))
        .json(&TokenRequest {
            api_key: api_key.to_owned(),
            org_id: org.to_owned(),
            runtime_id: runtime_id.to_owned(),
        })
        .timeout(DEADLINE)
        .send()
        .await
        .expect("the token call is answered")
}

/// A token, or the test fails.
pub async fn token(server: &TestServer, org: &str, api_key: &str, runtime_id: &str) -> String {
    let response = token_response(server, org, api_key, runtime_id).await;
    assert_eq!(response.status(), 200, "token call refused");
    let body: TokenResponse = response.json().await.expect("a token response");
    body.access_token
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A refused upgrade: its status and `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub retry_after: Option<String>,
}

/// Opens the WebSocket with `token`: the socket, or the refusal.
pub async fn open(server: &TestServer, token: &str) -> Result<Socket, Refused> {
    let mut request = server.ws_url().into_client_request().expect("a request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }),
        Err(e) => panic!("cannot open the control channel: {e}"),
    }
}

/// The next envelope, or the close code when the server closes instead.
async fn next_envelope(socket: &mut Socket) -> Result<Envelope, Option<u16>> {
    loop {
        let frame = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("the server answers in time");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Ok(Envelope::parse(text.as_str()).expect("an envelope"));
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Answers the challenge on `socket` with a hello of `key`'s runtime (well signed by it):
/// the code of the server's `error`, and the close code that follows.
pub async fn hello_as(mut socket: Socket, key: &SigningKey, org: &str) -> (String, Option<u16>) {
    let challenge: Challenge = next_envelope(&mut socket)
        .await
        .expect("a challenge")
        .payload_as()
        .expect("a challenge payload");
    let nonce = URL_SAFE_NO_PAD
        .decode(challenge.nonce)
        .expect("base64url nonce");
    let runtime_id = encode_public_key(&key.verifying_key());
    let hello = Hello {
        agent_version: "test".to_owned(),
        protocol: PROTOCOL_VERSION,
        edition: "enterprise".to_owned(),
        nonce_signature: encode_signature(&key.sign(&nonce)),
        trace_head: None,
        audit_head: None,
    };
    let envelope = Envelope::new(
        kind::HELLO,
        org,
        &runtime_id,
        1,
        serde_json::to_value(&hello).expect("hello"),
    )
    .signed(key);
    socket
        .send(Message::text(envelope.to_text()))
        .await
        .expect("send the hello");
    let error = next_envelope(&mut socket).await.expect("an error");
    assert_eq!(error.kind, kind::ERROR);
    let code = error.payload["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let close = next_envelope(&mut socket).await.err().flatten();
    (code, close)
}

/// A connected runtime after a good handshake.
pub struct FakeRuntime {
    pub key: SigningKey,
    pub runtime_id: String,
    pub org: String,
    pub welcome: Welcome,
    socket: Socket,
    sequence: u64,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime")
            .field("runtime_id", &self.runtime_id)
            .finish_non_exhaustive()
    }
}

impl FakeRuntime {
    /// Token, upgrade, challenge, hello (with `heads`), welcome.
    pub async fn connect_with(
        server: &TestServer,
        org: &str,
        api_key: &str,
        key: SigningKey,
        trace_head: Option<WireHead>,
    ) -> Self {
        let runtime_id = encode_public_key(&key.verifying_key());
        let token = token(server, org, api_key, &runtime_id).await;
        let socket = open(server, &token).await.expect("the upgrade is accepted");
        let mut runtime = Self {
            key,
            runtime_id,
            org: org.to_owned(),
            welcome: Welcome {
                session: String::new(),
                server_time: String::new(),
                policy: None,
                resume: atlasbridge_protocol::cloud::messages::Resume { trace: 0, audit: 0 },
            },
            socket,
            sequence: 0,
        };
        let challenge = runtime.recv().await;
        assert_eq!(challenge.kind, kind::CHALLENGE);
        let challenge: Challenge = challenge.payload_as().expect("a challenge");
        let nonce = URL_SAFE_NO_PAD
            .decode(challenge.nonce)
            .expect("base64url nonce");
        let hello = Hello {
            agent_version: "test".to_owned(),
            protocol: PROTOCOL_VERSION,
            edition: "enterprise".to_owned(),
            nonce_signature: encode_signature(&runtime.key.sign(&nonce)),
            trace_head,
            audit_head: None,
        };
        runtime
            .send(kind::HELLO, serde_json::to_value(&hello).expect("hello"))
            .await;
        let mut answer = runtime.recv().await;
        while answer.kind == kind::ERROR {
            answer = runtime.recv().await;
        }
        assert_eq!(answer.kind, kind::WELCOME, "{answer:?}");
        runtime.welcome = answer.payload_as().expect("a welcome");
        runtime
    }

    /// A new identity, connected.
    pub async fn connect(server: &TestServer, org: &str, api_key: &str) -> Self {
        Self::connect_with(server, org, api_key, identity(), None).await
    }

    /// Sends a signed envelope; returns its message id.
    pub async fn send(&mut self, kind: &str, payload: Value) -> String {
        self.sequence += 1;
        let envelope = Envelope::new(kind, &self.org, &self.runtime_id, self.sequence, payload)
            .signed(&self.key);
        self.socket
            .send(Message::text(envelope.to_text()))
            .await
            .expect("send to the server");
        envelope.message_id
    }

    /// A signed envelope stamped `timestamp` (the runtime's clock), as text: sent with
    /// [`Self::send_raw`], as often as a test wants the very same message to arrive.
    pub fn envelope_at(&mut self, kind: &str, payload: Value, timestamp: &str) -> String {
        self.sequence += 1;
        let mut envelope = Envelope::new(kind, &self.org, &self.runtime_id, self.sequence, payload);
        envelope.timestamp = timestamp.to_owned();
        envelope.signed(&self.key).to_text()
    }

    /// Sends a raw frame, as a broken or hostile runtime would.
    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("send to the server");
    }

    /// Sends an envelope of this runtime signed by `signer` (another key: it must not verify).
    pub async fn send_signed_by(&mut self, signer: &SigningKey, kind: &str, payload: Value) {
        self.sequence += 1;
        let envelope =
            Envelope::new(kind, &self.org, &self.runtime_id, self.sequence, payload).signed(signer);
        self.send_raw(Message::text(envelope.to_text())).await;
    }

    /// Sends `entries` (of `stream`) as one batch.
    pub async fn send_batch(&mut self, stream: Stream, entries: &[Value]) -> String {
        let seq = |e: &Value| e["seq"].as_u64().unwrap_or(0);
        let batch = AuditBatch {
            stream,
            from_seq: entries.first().map_or(0, seq),
            to_seq: entries.last().map_or(0, seq),
            entries: entries.to_vec(),
        };
        self.send(
            kind::AUDIT_BATCH,
            serde_json::to_value(&batch).expect("batch"),
        )
        .await
    }

    /// Sends a heartbeat showing `trace_head`.
    pub async fn send_heartbeat(&mut self, trace_head: Option<WireHead>) -> String {
        let heartbeat = Heartbeat {
            uptime_s: 1,
            edition: "enterprise".to_owned(),
            version: "test".to_owned(),
            active_sessions: 0,
            trace_head,
            audit_head: None,
            policy_hash: String::new(),
            backlog: 0,
        };
        self.send(
            kind::HEARTBEAT,
            serde_json::to_value(&heartbeat).expect("heartbeat"),
        )
        .await
    }

    /// Sends a checkpoint.
    pub async fn send_checkpoint(&mut self, checkpoint: &Checkpoint) -> String {
        self.send(
            kind::CHECKPOINT,
            serde_json::to_value(checkpoint).expect("checkpoint"),
        )
        .await
    }

    /// The next envelope from the server; its signature must verify under `server_key` when
    /// given.
    pub async fn recv(&mut self) -> Envelope {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("the server answers in time")
                .expect("the connection is open")
                .expect("a frame");
            match frame {
                Message::Text(text) => return Envelope::parse(text.as_str()).expect("an envelope"),
                Message::Close(frame) => panic!("the server closed the connection: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next envelope if one has arrived already, without waiting.
    pub fn try_recv(&mut self) -> Option<Envelope> {
        use futures_util::FutureExt as _;
        loop {
            match self.socket.next().now_or_never()? {
                Some(Ok(Message::Text(text))) => {
                    return Some(Envelope::parse(text.as_str()).expect("an envelope"));
                }
                Some(Ok(Message::Close(frame))) => {
                    panic!("the server closed the connection: {frame:?}")
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the connection failed: {e}"),
                None => panic!("the connection ended"),
            }
        }
    }

    /// Reads until the server closes the connection: the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("the server closes in time");
            match frame {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The ack of a batch of `stream`: its `through_seq`.
    pub async fn ack_through(&mut self, stream: Stream) -> u64 {
        let envelope = self.recv().await;
        assert_eq!(
            envelope.kind,
            kind::ACK,
            "expected an ack: {:?}",
            envelope.payload
        );
        let ack: Ack = envelope.payload_as().expect("an ack");
        assert_eq!(ack.stream, Some(stream));
        ack.through_seq.expect("a through_seq")
    }

    /// The ack of message `of`.
    pub async fn ack_of(&mut self, of: &str) {
        let envelope = self.recv().await;
        assert_eq!(
            envelope.kind,
            kind::ACK,
            "expected an ack: {:?}",
            envelope.payload
        );
        let ack: Ack = envelope.payload_as().expect("an ack");
        assert_eq!(ack.of.as_deref(), Some(of));
    }

    /// The next message, which must be an `error`: its code and message.
    pub async fn error(&mut self) -> (String, String) {
        let envelope = self.recv().await;
        assert_eq!(
            envelope.kind,
            kind::ERROR,
            "expected an error: {:?}",
            envelope.payload
        );
        (
            envelope.payload["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            envelope.payload["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    /// Waits `for_` without expecting anything.
    pub async fn idle(for_: Duration) {
        tokio::time::sleep(for_).await;
    }
}
