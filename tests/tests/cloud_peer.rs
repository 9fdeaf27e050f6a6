//! The test cloud peer's own tests: a WebSocket client and plain HTTP calls against it.

// A test fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use atlasbridge_e2e::cloud_peer::{
    CloseMidBatch, CloudPeer, OutgoingSigning, PolicySigning, Refusal, Throttle,
};
use atlasbridge_protocol::cloud::Envelope;
use atlasbridge_protocol::cloud::messages::{Ack, Challenge, Stream, Welcome, WireError, kind};
use atlasbridge_protocol::cloud::rest::{PolicyUpload, PolicyVersion, TokenResponse};
use atlasbridge_protocol::trace::checkpoint::{encode_public_key, encode_signature};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

/// A runtime identity and what it needs to talk to the peer.
struct Runtime {
    key: SigningKey,
    id: String,
    org: String,
    sequence: u64,
    http: reqwest::Client,
}

impl Runtime {
    fn new(peer: &CloudPeer) -> Self {
        let key = SigningKey::from_bytes(&[7; 32]);
        Self {
            id: encode_public_key(&key.verifying_key()),
            key,
            org: peer.org_id(),
            sequence: 0,
            // No pooled connections: the peer's stop and refusal faults cut them.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    async fn token_call(&self, peer: &CloudPeer, api_key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/auth/token", peer.api_base()))
            .json(&json!({"api_key": api_key, "org_id": self.org, "runtime_id": self.id}))
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, peer: &CloudPeer) -> String {
        let response = self.token_call(peer, &peer.api_key()).await;
        assert_eq!(response.status(), 200);
        let token: TokenResponse = response.json().await.unwrap();
        assert_eq!(token.token_type, "Bearer");
        token.access_token
    }

    /// Opens the WebSocket with `token`; the HTTP status when refused.
    async fn open(peer: &CloudPeer, token: &str) -> Result<Ws, u16> {
        let mut request = peer.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("connect: {e}"),
        }
    }

    fn envelope(&mut self, kind: &str, payload: Value) -> Message {
        self.sequence += 1;
        let envelope =
            Envelope::new(kind, &self.org, &self.id, self.sequence, payload).signed(&self.key);
        Message::text(envelope.to_text())
    }

    fn hello(&mut self, nonce_signature: String) -> Message {
        self.envelope(
            kind::HELLO,
            json!({
                "agent_version": "0.1.0", "protocol": 1, "edition": "community",
                "nonce_signature": nonce_signature, "trace_head": null, "audit_head": null,
            }),
        )
    }

    /// Token, connect, challenge, hello, welcome.
    async fn handshake(&mut self, peer: &CloudPeer) -> (Ws, Welcome) {
        let token = self.token(peer).await;
        let mut ws = Self::open(peer, &token).await.unwrap();
        let challenge = next(&mut ws, peer).await;
        assert_eq!(challenge.kind, kind::CHALLENGE);
        let challenge: Challenge = challenge.payload_as().unwrap();
        let nonce = URL_SAFE_NO_PAD.decode(challenge.nonce).unwrap();
        assert_eq!(nonce.len(), 32);
        let hello = self.hello(encode_signature(&self.key.sign(&nonce)));
        ws.send(hello).await.unwrap();
        self.sequence = 1;
        let welcome = next(&mut ws, peer).await;
        assert_eq!(welcome.kind, kind::WELCOME);
        assert_eq!(welcome.runtime_id, self.id);
        (ws, welcome.payload_as().unwrap())
    }

    fn batch(&mut self, stream: Stream, seqs: std::ops::RangeInclusive<u64>) -> Message {
        let entries: Vec<Value> = seqs
            .clone()
            .map(|seq| json!({"seq": seq, "entry_id": format!("e{seq}")}))
            .collect();
        self.envelope(
            kind::AUDIT_BATCH,
            json!({"stream": stream, "from_seq": seqs.start(), "to_seq": seqs.end(), "entries": entries}),
        )
    }
}

/// The next envelope, checked to be signed by the server key and from the peer's org.
async fn next(ws: &mut Ws, peer: &CloudPeer) -> Envelope {
    let envelope = next_unchecked(ws).await;
    envelope.verify(&peer.server_verifying_key()).unwrap();
    assert_eq!(envelope.org_id, peer.org_id());
    envelope
}

async fn next_unchecked(ws: &mut Ws) -> Envelope {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("an open connection")
            .unwrap();
        match frame {
            Message::Text(text) => return Envelope::parse(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Whether the peer ends the connection (a close frame, EOF or a reset) within `WAIT`.
async fn closes(ws: &mut Ws) -> bool {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn a_good_handshake_gets_a_signed_welcome_resuming_at_zero() {
    let peer = CloudPeer::start();
    block_on(async {
        let mut runtime = Runtime::new(&peer);
        let (_ws, welcome) = runtime.handshake(&peer).await;
        assert_eq!(welcome.resume.trace, 0);
        assert_eq!(welcome.resume.audit, 0);
        assert_eq!(welcome.policy, None);
        assert!(peer.is_connected());
    });
    assert_eq!(peer.connections(), 1);
    // The client's socket went with the block.
    assert!(peer.wait_until(|s| !s.is_connected(), WAIT));
    assert_eq!(peer.received(kind::HELLO).len(), 1);
    assert!(peer.handshake_failures().is_empty());
    assert_eq!(peer.token_attempts().len(), 1);
    assert_eq!(peer.upgrade_attempts().len(), 1);
}

#[test]
fn a_wrong_nonce_signature_gets_an_error_and_the_connection_closes() {
    let peer = CloudPeer::start();
    block_on(async {
        let mut runtime = Runtime::new(&peer);
        let token = runtime.token(&peer).await;
        let mut ws = Runtime::open(&peer, &token).await.unwrap();
        let challenge = next(&mut ws, &peer).await;
        assert_eq!(challenge.kind, kind::CHALLENGE);
        let wrong = encode_signature(&runtime.key.sign(b"not the nonce"));
        ws.send(runtime.hello(wrong)).await.unwrap();
        let error = next(&mut ws, &peer).await;
        assert_eq!(error.kind, kind::ERROR);
        let error: WireError = error.payload_as().unwrap();
        assert_eq!(error.code, "BAD_NONCE_SIGNATURE");
        assert!(closes(&mut ws).await);
    });
    assert_eq!(peer.connections(), 0);
    assert_eq!(peer.handshake_failures().len(), 1);
    assert!(peer.wait_until(|s| s.open_connections() == 0, WAIT));
}

#[test]
fn batches_are_stored_and_acked_resends_count_as_duplicates_and_gaps_are_recorded() {
    let peer = CloudPeer::start();
    block_on(async {
        let mut runtime = Runtime::new(&peer);
        let (mut ws, _) = runtime.handshake(&peer).await;

        ws.send(runtime.batch(Stream::Trace, 0..=2)).await.unwrap();
        let ack: Ack = next(&mut ws, &peer).await.payload_as().unwrap();
        assert_eq!(ack.stream, Some(Stream::Trace));
        assert_eq!(ack.through_seq, Some(2));

        // A resend overlapping what is stored: only the new entries are kept.
        ws.send(runtime.batch(Stream::Trace, 1..=4)).await.unwrap();
        let ack: Ack = next(&mut ws, &peer).await.payload_as().unwrap();
        assert_eq!(ack.through_seq, Some(4));

        // A gap: nothing stored, the ack stays where it was.
        ws.send(runtime.batch(Stream::Trace, 7..=8)).await.unwrap();
        let ack: Ack = next(&mut ws, &peer).await.payload_as().unwrap();
        assert_eq!(ack.through_seq, Some(4));

        // A heartbeat is acked by message id.
        let heartbeat = runtime.envelope(kind::HEARTBEAT, json!({"backlog": 0}));
        let heartbeat_id = Envelope::parse(heartbeat.to_text().unwrap())
            .unwrap()
            .message_id;
        ws.send(heartbeat).await.unwrap();
        let ack: Ack = next(&mut ws, &peer).await.payload_as().unwrap();
        assert_eq!(ack.of, Some(heartbeat_id));
    });
    let seqs: Vec<u64> = peer
        .entries(Stream::Trace)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert_eq!(peer.duplicates(Stream::Trace), 2);
    assert_eq!(peer.entry_count(Stream::Audit), 0);
    assert_eq!(peer.gaps().len(), 1, "{:?}", peer.gaps());
    assert!(peer.gaps()[0].contains("expected seq 5, got 7"));
    assert_eq!(peer.received(kind::HEARTBEAT), [json!({"backlog": 0})]);
    let batches = peer.received(kind::AUDIT_BATCH);
    assert_eq!(
        batches[0],
        json!({"stream": "trace", "from_seq": 0, "to_seq": 2, "entry_count": 3})
    );
    let sequences = peer.received_sequences();
    assert_eq!(sequences.values().next().unwrap(), &[1, 2, 3, 4, 5]);
    assert!(
        peer.protocol_errors().is_empty(),
        "{:?}",
        peer.protocol_errors()
    );
}

#[test]
fn malformed_and_badly_signed_frames_are_recorded_without_ending_the_connection() {
    let peer = CloudPeer::start();
    block_on(async {
        let mut runtime = Runtime::new(&peer);
        let (mut ws, _) = runtime.handshake(&peer).await;
        ws.send(Message::text("{not json")).await.unwrap();
        assert_eq!(next(&mut ws, &peer).await.kind, kind::ERROR);
        ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
        assert_eq!(next(&mut ws, &peer).await.kind, kind::ERROR);
        // Signed by another key: ignored, not stored.
        let mut other = Runtime::new(&peer);
        other.key = SigningKey::from_bytes(&[9; 32]);
        other.id = runtime.id.clone();
        ws.send(other.batch(Stream::Audit, 0..=0)).await.unwrap();
        // Still served.
        ws.send(runtime.batch(Stream::Audit, 0..=1)).await.unwrap();
        let ack: Ack = next(&mut ws, &peer).await.payload_as().unwrap();
        assert_eq!(ack.through_seq, Some(1));
    });
    assert_eq!(
        peer.protocol_errors().len(),
        2,
        "{:?}",
        peer.protocol_errors()
    );
    assert_eq!(peer.bad_signatures().len(), 1);
    assert_eq!(peer.entry_count(Stream::Audit), 2);
    assert_eq!(peer.duplicates(Stream::Audit), 0);
}

#[test]
fn the_token_call_refuses_a_wrong_key_and_upgrades_need_a_live_token() {
    let peer = CloudPeer::start();
    block_on(async {
        let runtime = Runtime::new(&peer);
        let response = runtime.token_call(&peer, "wrong").await;
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "INVALID_API_KEY");
        assert!(body["request_id"].is_string());

        assert_eq!(Runtime::open(&peer, "tok-unknown").await.err(), Some(401));
        let response = runtime
            .http
            .get(format!("{}/v1/policies/p", peer.api_base()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);

        // Revoked: the open connection is closed and the old token refused.
        let token = runtime.token(&peer).await;
        let mut ws = Runtime::open(&peer, &token).await.unwrap();
        assert_eq!(next(&mut ws, &peer).await.kind, kind::CHALLENGE);
        peer.revoke_tokens();
        assert!(closes(&mut ws).await);
        assert_eq!(Runtime::open(&peer, &token).await.err(), Some(401));

        // A token issued with no lifetime left is refused at once.
        peer.set_token_lifetime(0);
        let expired = runtime.token(&peer).await;
        assert_eq!(Runtime::open(&peer, &expired).await.err(), Some(401));
    });
    assert_eq!(peer.token_attempts().len(), 3);
    assert_eq!(peer.upgrade_attempts().len(), 4);
}

#[test]
fn throttled_calls_get_retry_after_then_pass() {
    let peer = CloudPeer::start();
    peer.throttle_tokens(Some(Throttle::new(429, 7, 1)));
    peer.throttle_upgrades(Some(Throttle::new(503, 3, 2)));
    block_on(async {
        let runtime = Runtime::new(&peer);
        let response = runtime.token_call(&peer, &peer.api_key()).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        let token = runtime.token(&peer).await;

        let mut request = peer.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
                assert_eq!(response.headers()["retry-after"], "3");
            }
            other => panic!("expected 503, got {other:?}"),
        }
        assert_eq!(Runtime::open(&peer, &token).await.err(), Some(503));
        assert!(Runtime::open(&peer, &token).await.is_ok());

        peer.refuse(Some(Refusal::ServiceUnavailable));
        assert_eq!(Runtime::open(&peer, &token).await.err(), Some(503));
        peer.refuse(Some(Refusal::DropConnections));
        assert!(
            runtime
                .http
                .post(format!("{}/v1/auth/token", peer.api_base()))
                .send()
                .await
                .is_err()
        );
    });
    assert_eq!(peer.token_attempts().len(), 2);
    assert_eq!(peer.upgrade_attempts().len(), 4);
    assert_eq!(peer.with_state(|s| s.dropped_connections().len()), 1);
    assert_eq!(peer.faults().throttle_upgrades, None);
}

#[test]
fn a_restart_keeps_the_port_and_the_entries_and_forgetting_lowers_the_resume() {
    let peer = CloudPeer::start();
    let port = peer.port();
    block_on(async {
        let mut runtime = Runtime::new(&peer);
        let (mut ws, _) = runtime.handshake(&peer).await;
        ws.send(runtime.batch(Stream::Trace, 0..=5)).await.unwrap();
        ws.send(runtime.batch(Stream::Audit, 0..=1)).await.unwrap();
        assert_eq!(next(&mut ws, &peer).await.kind, kind::ACK);
        assert_eq!(next(&mut ws, &peer).await.kind, kind::ACK);

        peer.stop();
        assert!(!peer.is_running());
        assert!(closes(&mut ws).await);
        assert!(!peer.is_connected());
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());

        peer.restart();
        assert_eq!(peer.port(), port);
        let (_ws, welcome) = runtime.handshake(&peer).await;
        assert_eq!((welcome.resume.trace, welcome.resume.audit), (6, 2));

        peer.forget_from(Stream::Trace, 3);
        let (_ws, welcome) = runtime.handshake(&peer).await;
        assert_eq!((welcome.resume.trace, welcome.resume.audit), (3, 2));
    });
    assert_eq!(peer.entry_count(Stream::Trace), 3);
    assert_eq!(peer.connections(), 3);
}

#[test]
fn closing_mid_batch_does_not_ack_and_does_not_store() {
    let peer = CloudPeer::start();
    peer.close_mid_batch(Some(CloseMidBatch {
        after: 2,
        repeat: false,
        commit: false,
    }));
    block_on(async {
        let mut runtime = Runtime::new(&peer);
        let (mut ws, _) = runtime.handshake(&peer).await;
        ws.send(runtime.batch(Stream::Trace, 0..=1)).await.unwrap();
        assert_eq!(next(&mut ws, &peer).await.kind, kind::ACK);
        ws.send(runtime.batch(Stream::Trace, 2..=3)).await.unwrap();
        assert!(closes(&mut ws).await);
    });
    assert_eq!(peer.entry_count(Stream::Trace), 2);
    assert_eq!(peer.with_state(|s| s.closed_mid_batch()), 1);
    assert_eq!(peer.faults().close_mid_batch, None);
}

#[test]
fn acks_can_come_twice_late_or_unsigned() {
    let peer = CloudPeer::start();
    peer.duplicate_acks(true);
    peer.delay_acks(Duration::from_millis(100));
    block_on(async {
        let mut runtime = Runtime::new(&peer);
        let (mut ws, _) = runtime.handshake(&peer).await;
        let sent = std::time::Instant::now();
        ws.send(runtime.batch(Stream::Trace, 0..=0)).await.unwrap();
        let first = next(&mut ws, &peer).await;
        assert!(sent.elapsed() >= Duration::from_millis(100));
        let second = next(&mut ws, &peer).await;
        assert_eq!(first.payload, second.payload);
        assert!(second.sequence > first.sequence);

        peer.clear_faults();
        peer.sign_outgoing(OutgoingSigning::Unsigned);
        ws.send(runtime.batch(Stream::Trace, 1..=1)).await.unwrap();
        let unsigned = next_unchecked(&mut ws).await;
        assert_eq!(unsigned.kind, kind::ACK);
        assert_eq!(unsigned.signature, None);

        peer.sign_outgoing(OutgoingSigning::WrongKey);
        assert!(peer.send_kill_switch("paused", "maintenance"));
        let wrong = next_unchecked(&mut ws).await;
        assert_eq!(wrong.kind, kind::KILL_SWITCH);
        assert!(wrong.verify(&peer.server_verifying_key()).is_err());
    });
}

#[test]
fn a_pushed_policy_is_announced_and_served_and_uploads_are_verified() {
    let peer = CloudPeer::start();
    let hash = "ab".repeat(32);
    block_on(async {
        let mut runtime = Runtime::new(&peer);
        let (mut ws, _) = runtime.handshake(&peer).await;
        let version = peer.push_policy("team", "rules: []\n", &hash, PolicySigning::Good);
        assert_eq!(version, "1");
        let announcement = next(&mut ws, &peer).await;
        assert_eq!(announcement.kind, kind::POLICY_UPDATE_AVAILABLE);
        assert_eq!(
            announcement.payload,
            json!({"name": "team", "version": "1", "content_hash": hash})
        );

        let token = runtime.token(&peer).await;
        let fetched: PolicyVersion = runtime
            .http
            .get(format!("{}/v1/policies/team/versions/1", peer.api_base()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(fetched.signature_verifies(&peer.server_verifying_key()));
        assert_eq!(fetched.yaml, "rules: []\n");

        peer.push_policy("team", "rules: []\n", &hash, PolicySigning::BadSignature);
        let announcement = next(&mut ws, &peer).await;
        assert_eq!(announcement.payload["version"], "2");
        let fetched: PolicyVersion = runtime
            .http
            .get(format!("{}/v1/policies/team/versions/2", peer.api_base()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!fetched.signature_verifies(&peer.server_verifying_key()));

        let missing = runtime
            .http
            .get(format!("{}/v1/policies/team/versions/9", peer.api_base()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);

        let upload = PolicyUpload {
            yaml: "rules: []\n".to_owned(),
            content_hash: hash.clone(),
            runtime_id: runtime.id.clone(),
            signature: String::new(),
        };
        let url = format!("{}/v1/policies/team/versions", peer.api_base());
        let bad = runtime
            .http
            .post(&url)
            .bearer_auth(&token)
            .json(&upload)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let good = runtime
            .http
            .post(&url)
            .bearer_auth(&token)
            .json(&upload.sign(&runtime.key))
            .send()
            .await
            .unwrap();
        assert_eq!(good.status(), 201);
        let body: Value = good.json().await.unwrap();
        assert_eq!(
            body,
            json!({"name": "team", "version": "3", "content_hash": hash})
        );

        let list: Value = runtime
            .http
            .get(format!("{}/v1/policies/team", peer.api_base()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["latest_version"], "3");
        assert_eq!(list["versions"].as_array().unwrap().len(), 3);

        // The next welcome names the current policy.
        let (_ws, welcome) = runtime.handshake(&peer).await;
        assert_eq!(welcome.policy.unwrap().version, "2");
    });
    assert_eq!(peer.with_state(|s| s.uploads().len()), 1);
}
