//! A runtime as the server sees one: a real Ed25519 identity, a token from the API key, the
//! control channel's handshake, then its chain in signed `audit_batch` frames, as many in
//! flight as its window allows (the daemon keeps `buffer_events`, 10,000 entries, in flight).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::messages::{
    Ack, Challenge, Hello, PROTOCOL_VERSION, Welcome, kind,
};
use atlasbridge_protocol::cloud::rest::{TokenRequest, TokenResponse};
use atlasbridge_protocol::cloud::{BatchFrame, Envelope, MAX_MESSAGE_BYTES};
use atlasbridge_protocol::trace::checkpoint::{encode_public_key, encode_signature};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::entries::Sealed;

/// Entries per batch at most, and the room left for the envelope: the daemon's own bounds
/// (`daemon/src/cloud/link.rs`), so batches are as large as a real runtime's.
const MAX_BATCH_ENTRIES: usize = 500;
const ENVELOPE_ROOM: usize = 2048;

/// Entries in flight at most (the daemon's `buffer_events` default).
pub(crate) const WINDOW_ENTRIES: usize = 10_000;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A signed `audit_batch`, ready to send.
struct Frame {
    text: String,
    to_seq: u64,
    entries: usize,
}

/// A runtime with its chain framed and signed before the clock starts, so that the client's
/// own work is not in the figure.
pub(crate) struct Runtime {
    key: SigningKey,
    pub runtime_id: String,
    org_id: String,
    frames: Vec<Frame>,
}

/// What one runtime's stream measured.
pub(crate) struct Streamed {
    /// When its first batch went out.
    pub first_sent: Instant,
    /// When the ack of its last entry arrived.
    pub last_acked: Instant,
    pub batches: usize,
    /// Acks received: the server acknowledges once per COMMIT, so batches per ack is how many
    /// batches it stored together.
    pub acks: usize,
}

impl Runtime {
    /// A fresh identity (OS randomness) and its `entries` framed into batches as the daemon
    /// frames them.
    pub(crate) fn new(org_id: &str, entries: &[Sealed]) -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("OS randomness");
        let key = SigningKey::from_bytes(&seed);
        let runtime_id = encode_public_key(&key.verifying_key());
        let mut frames = Vec::new();
        let mut rest = entries;
        // The hello is message 1 of the connection; batches follow.
        let mut sequence = 2;
        while !rest.is_empty() {
            let mut size = 0;
            let mut count = 0;
            for entry in rest.iter().take(MAX_BATCH_ENTRIES) {
                if count > 0 && size + entry.line.len() + 1 > MAX_MESSAGE_BYTES - ENVELOPE_ROOM {
                    break;
                }
                size += entry.line.len() + 1;
                count += 1;
            }
            let (batch, after) = rest.split_at(count);
            let lines: Vec<&str> = batch.iter().map(|e| e.line.as_str()).collect();
            let from_seq = (entries.len() - rest.len()) as u64;
            let to_seq = from_seq + count as u64 - 1;
            let (text, _) = BatchFrame {
                org_id,
                runtime_id: &runtime_id,
                sequence,
                stream: "trace",
                from_seq,
                to_seq,
            }
            .sign(&lines, &key);
            frames.push(Frame {
                text,
                to_seq,
                entries: count,
            });
            sequence += 1;
            rest = after;
        }
        Self {
            key,
            runtime_id,
            org_id: org_id.to_owned(),
            frames,
        }
    }

    /// Entries per batch, on average.
    pub(crate) fn mean_batch(&self) -> f64 {
        let entries: usize = self.frames.iter().map(|f| f.entries).sum();
        entries as f64 / self.frames.len().max(1) as f64
    }

    /// Asks for a token and opens the channel through the handshake: ready to stream.
    pub(crate) async fn connect(&self, http: &str, ws: &str, api_key: &str) -> Socket {
        let token: TokenResponse = reqwest::Client::new()
            .post(format!("{http}/v1/auth/token"))
            .json(&TokenRequest {
                api_key: api_key.to_owned(),
                org_id: self.org_id.clone(),
                runtime_id: self.runtime_id.clone(),
            })
            .send()
            .await
            .expect("the token call is answered")
            .error_for_status()
            .expect("a token")
            .json()
            .await
            .expect("a token response");
        let mut request = ws.into_client_request().expect("a WebSocket request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", token.access_token)
                .parse()
                .expect("a header value"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the control channel opens");
        let challenge: Challenge = next_envelope(&mut socket)
            .await
            .payload_as()
            .expect("a challenge");
        let nonce = URL_SAFE_NO_PAD
            .decode(challenge.nonce)
            .expect("a base64url nonce");
        let hello = Hello {
            agent_version: "bench".to_owned(),
            protocol: PROTOCOL_VERSION,
            edition: "enterprise".to_owned(),
            nonce_signature: encode_signature(&self.key.sign(&nonce)),
            trace_head: None,
            audit_head: None,
        };
        let envelope = Envelope::new(
            kind::HELLO,
            &self.org_id,
            &self.runtime_id,
            1,
            serde_json::to_value(&hello).expect("a hello"),
        )
        .signed(&self.key);
        socket
            .send(Message::text(envelope.to_text()))
            .await
            .expect("send the hello");
        let welcome = next_envelope(&mut socket).await;
        assert_eq!(welcome.kind, kind::WELCOME, "{:?}", welcome.payload);
        let welcome: Welcome = welcome.payload_as().expect("a welcome");
        assert_eq!(welcome.resume.trace, 0, "a fresh runtime resumes from 0");
        socket
    }

    /// Streams every frame, at most [`WINDOW_ENTRIES`] entries unacknowledged, until the last
    /// entry is acknowledged.
    pub(crate) async fn stream(mut self, socket: Socket) -> Streamed {
        let (mut sink, mut source) = socket.split();
        let last_seq = self.frames.last().map_or(0, |f| f.to_seq);
        let batches = self.frames.len();
        let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
        let mut in_flight_entries = 0;
        let mut acks = 0;
        let mut frames = std::mem::take(&mut self.frames).into_iter().peekable();
        let first_sent = Instant::now();
        loop {
            while let Some(frame) = frames.next_if(|f| {
                in_flight.is_empty() || in_flight_entries + f.entries <= WINDOW_ENTRIES
            }) {
                in_flight.push_back((frame.to_seq, frame.entries));
                in_flight_entries += frame.entries;
                sink.feed(Message::text(frame.text))
                    .await
                    .expect("send a batch");
            }
            sink.flush().await.expect("send the batches");
            let message = source
                .next()
                .await
                .expect("the server keeps the channel open")
                .expect("a frame");
            let Message::Text(text) = message else {
                continue;
            };
            let envelope = Envelope::parse(text.as_str()).expect("an envelope");
            assert_eq!(envelope.kind, kind::ACK, "{:?}", envelope.payload);
            let ack: Ack = envelope.payload_as().expect("an ack");
            let through = ack.through_seq.expect("a batch ack names through_seq");
            acks += 1;
            while let Some(&(to_seq, entries)) = in_flight.front() {
                if to_seq > through {
                    break;
                }
                in_flight_entries -= entries;
                in_flight.pop_front();
            }
            if through >= last_seq {
                let last_acked = Instant::now();
                let _ = sink.close().await;
                return Streamed {
                    first_sent,
                    last_acked,
                    batches,
                    acks,
                };
            }
        }
    }
}

async fn next_envelope(socket: &mut Socket) -> Envelope {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("the server answers in time")
            .expect("the channel stays open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return Envelope::parse(text.as_str()).expect("an envelope");
        }
    }
}
