//! One connection to the cloud, from the upgrade to its end: the handshake, then streaming both
//! chains from where the cloud's copy ends, heartbeats, acks, and the cloud's advisory messages.
//!
//! Nothing here touches a decision: the link reads the chains' files, and the only local change
//! the cloud can cause is pausing or resuming the autopilot, and only with
//! `honor_kill_switch = true`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::envelope::{BatchFrame, Envelope, MAX_MESSAGE_BYTES};
use atlasbridge_protocol::cloud::messages::{
    Ack, Challenge, Heartbeat, Hello, KillSwitch, PROTOCOL_VERSION, PolicyRef, Stream, Welcome,
    WireHead, kind,
};
use atlasbridge_protocol::cloud::retry::parse_retry_after;
use atlasbridge_protocol::trace::ChainHead;
use atlasbridge_protocol::trace::checkpoint::encode_signature;
use atlasbridge_protocol::trace::verify::ChainKind;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use super::cursor::{self, Cursors};
use super::reader::ChainReader;
use super::status::{CloudStatus, LinkState};
use crate::audit::Actor;
use crate::state::Daemon;

/// Room left in a message for the envelope around a batch's entries.
const ENVELOPE_ROOM: usize = 2048;

/// Entries per batch at most (a batch is also bounded by the message size).
const MAX_BATCH_ENTRIES: usize = 500;

/// How long the upgrade and the handshake may take at most: the stale limit of a connection
/// (three heartbeat intervals), and never more than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the cursor file is rewritten while acks arrive. Each write syncs a file and its
/// directory, and on a shared disk every sync makes the trace's own syncs wait: rarely, then.
/// A crash loses at most this much progress, which only means those entries are sent again.
const CURSOR_FLUSH: Duration = Duration::from_secs(5);

/// How long new entries wait to be sent with the ones that follow. The cloud observes; a fifth of
/// a second later is nothing to it, while waking to send every 20 ms (as first measured) doubled
/// the p99 of local decisions on a 2-vCPU machine (docs/benchmarks.md).
const LINGER: Duration = Duration::from_millis(200);

/// The clock difference the protocol tolerates before `cloud status` reports it.
const MAX_SKEW_S: i64 = 30;

/// What the link needs that does not change while the daemon runs.
#[derive(Debug, Clone)]
pub struct LinkContext {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// The shared status.
    pub status: Arc<CloudStatus>,
    /// The WebSocket endpoint.
    pub endpoint: Url,
    /// The organisation.
    pub org_id: String,
    /// The identity key and its encoded public key.
    pub identity: SigningKey,
    /// `ed25519:` + the identity's public key.
    pub runtime_id: String,
    /// The key the cloud signs with, when configured.
    pub server_key: Option<VerifyingKey>,
    /// TLS for `wss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Between heartbeats.
    pub heartbeat: Duration,
    /// Entries in flight per stream at most.
    pub window: u64,
    /// Whether audit batches are sent (the `cloud_audit_stream` flag).
    pub stream_audit: bool,
    /// Whether the cloud's kill switch is obeyed.
    pub honor_kill_switch: bool,
    /// Where the cursors live.
    pub cursor_path: std::path::PathBuf,
    /// The signed checkpoints (`checkpoints.jsonl`).
    pub checkpoints_path: std::path::PathBuf,
    /// Fetches offered policies (set once the token keeper runs).
    pub fetcher: Option<super::policy_sync::Fetcher>,
    /// The chains' directories.
    pub trace_dir: std::path::PathBuf,
    /// See `trace_dir`.
    pub audit_dir: std::path::PathBuf,
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The daemon is stopping.
    Stopped,
    /// The upgrade was refused with 401.
    Unauthorized(String),
    /// 429 or 503 on the upgrade: wait this long.
    RetryAfter(Duration),
    /// Anything else; `healthy` is how long the connection was up after the handshake.
    Failed {
        /// Why.
        why: String,
        /// Time connected, zero when the handshake never completed.
        healthy: Duration,
    },
}

/// One stream's sending state within a connection.
struct Outbound {
    stream: Stream,
    reader: Option<ChainReader>,
    /// Batches sent and not acknowledged: (to_seq, entries, when sent).
    in_flight: VecDeque<(u64, u64, Instant)>,
    in_flight_entries: u64,
    /// The last seq sent, if any.
    sent_through: Option<u64>,
    /// The chain's head, as the writer last announced it.
    head: watch::Receiver<Option<u64>>,
}

/// Connects, runs the handshake and serves the connection until it ends.
pub async fn serve(
    ctx: &LinkContext,
    token: &str,
    cursors: &mut Cursors,
    stop: &CancellationToken,
) -> Ended {
    let request = match upgrade_request(&ctx.endpoint, token) {
        Ok(request) => request,
        Err(why) => {
            return Ended::Failed {
                why,
                healthy: Duration::ZERO,
            };
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connector = ctx
        .tls
        .as_ref()
        .map(|tls| tokio_tungstenite::Connector::Rustls(Arc::clone(tls)));
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    let handshake_timeout = (ctx.heartbeat * 3).min(HANDSHAKE_TIMEOUT);
    let connected = tokio::select! {
        () = stop.cancelled() => return Ended::Stopped,
        connected = tokio::time::timeout(handshake_timeout, connecting) => connected,
    };
    let (socket, _) = match connected {
        Err(_) => {
            return failed("the WebSocket upgrade timed out");
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, jiff::Timestamp::now().as_second()));
            return match status {
                401 => Ended::Unauthorized("the cloud refused the token (HTTP 401)".into()),
                429 | 503 => Ended::RetryAfter(retry_after.unwrap_or(Duration::from_secs(1))),
                _ => failed(&format!(
                    "the WebSocket upgrade was refused (HTTP {status})"
                )),
            };
        }
        Ok(Err(e)) => return failed(&format!("cannot connect to {}: {e}", ctx.endpoint)),
        Ok(Ok(connected)) => connected,
    };
    let mut session = Session {
        ctx,
        socket,
        sequence: 0,
        checkpoints_in_flight: std::collections::HashMap::new(),
    };
    let handshake = tokio::time::timeout(handshake_timeout, session.handshake());
    let welcome = match tokio::select! {
        () = stop.cancelled() => return Ended::Stopped,
        welcome = handshake => welcome,
    } {
        Err(_) => return failed("the handshake timed out"),
        Ok(Err(why)) => return failed(&why),
        Ok(Ok(welcome)) => welcome,
    };
    let since = Instant::now();
    ctx.status.update(|s| {
        s.state = LinkState::Connected.name().to_owned();
        s.reason = None;
        s.connected_since = Some(crate::clock::now_rfc3339());
        s.connections += 1;
        s.clock_skew_s = clock_skew(&welcome.server_time);
    });
    info!(endpoint = %ctx.endpoint, session = %welcome.session, "connected to the cloud");
    if let (Some(offer), Some(fetcher)) = (&welcome.policy, &ctx.fetcher)
        && super::policy_sync::is_new(&ctx.daemon, offer)
    {
        // Published while the link was down: the same as an offer now.
        tokio::spawn(super::policy_sync::handle_offer(
            Arc::clone(&ctx.daemon),
            Arc::clone(&ctx.status),
            fetcher.clone(),
            offer.clone(),
        ));
    }
    let why = session.run(&welcome, cursors, stop).await;
    // Whatever happened, keep what was acknowledged.
    if let Err(e) = cursor::store(&ctx.cursor_path, cursors) {
        warn!(error = %e, "cannot write the cloud cursor");
    }
    match why {
        None => Ended::Stopped,
        Some(why) => Ended::Failed {
            why,
            healthy: since.elapsed(),
        },
    }
}

/// Connects and completes the handshake, then closes: what `cloud setup` uses to test a
/// configuration. The welcome's session id, or why it failed.
pub async fn probe(ctx: &LinkContext, token: &str) -> Result<String, String> {
    let request = upgrade_request(&ctx.endpoint, token)?;
    let connector = ctx
        .tls
        .as_ref()
        .map(|tls| tokio_tungstenite::Connector::Rustls(Arc::clone(tls)));
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    let (socket, _) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| "the WebSocket upgrade timed out".to_owned())?
        .map_err(|e| match e {
            tungstenite::Error::Http(response) => format!(
                "the WebSocket upgrade was refused (HTTP {})",
                response.status().as_u16()
            ),
            e => format!("cannot connect to {}: {e}", ctx.endpoint),
        })?;
    let mut session = Session {
        ctx,
        socket,
        sequence: 0,
        checkpoints_in_flight: std::collections::HashMap::new(),
    };
    let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, session.handshake())
        .await
        .map_err(|_| "the handshake timed out".to_owned())??;
    let _ = session.socket.close(None).await;
    Ok(welcome.session)
}

fn failed(why: &str) -> Ended {
    Ended::Failed {
        why: why.to_owned(),
        healthy: Duration::ZERO,
    }
}

fn upgrade_request(
    endpoint: &Url,
    token: &str,
) -> Result<tungstenite::handshake::client::Request, String> {
    let mut request = endpoint
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad endpoint {endpoint}: {e}"))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the access token is not a valid header value".to_owned())?;
    request.headers_mut().insert("authorization", bearer);
    Ok(request)
}

/// The cloud's clock minus ours, when beyond what the protocol tolerates.
fn clock_skew(server_time: &str) -> Option<i64> {
    let server = server_time.parse::<jiff::Timestamp>().ok()?;
    let skew = server.as_second() - jiff::Timestamp::now().as_second();
    (skew.abs() > MAX_SKEW_S).then_some(skew)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Session<'a> {
    ctx: &'a LinkContext,
    socket: Socket,
    /// The last outbound envelope's sequence.
    sequence: u64,
    /// Checkpoint messages sent and not acknowledged: message id → `checkpoint_seq`.
    checkpoints_in_flight: std::collections::HashMap<String, u64>,
}

impl Session<'_> {
    async fn send(&mut self, kind: &str, payload: Value) -> Result<String, String> {
        self.sequence += 1;
        let envelope = Envelope::new(
            kind,
            &self.ctx.org_id,
            &self.ctx.runtime_id,
            self.sequence,
            payload,
        )
        .signed(&self.ctx.identity);
        let id = envelope.message_id.clone();
        self.socket
            .send(Message::text(envelope.to_text()))
            .await
            .map_err(|e| format!("cannot send {kind}: {e}"))?;
        Ok(id)
    }

    /// The next envelope from the cloud that is acceptable; `Err` when the connection ended.
    async fn receive(&mut self) -> Result<Envelope, String> {
        loop {
            let frame = match self.socket.next().await {
                None => return Err("the cloud closed the connection".to_owned()),
                Some(Err(e)) => return Err(format!("the connection failed: {e}")),
                Some(Ok(frame)) => frame,
            };
            match frame {
                Message::Text(text) => {
                    if let Some(envelope) = self.accept(text.as_str()) {
                        return Ok(envelope);
                    }
                }
                Message::Close(frame) => {
                    let why = frame.map_or_else(String::new, |f| format!(": {}", f.reason));
                    return Err(format!("the cloud closed the connection{why}"));
                }
                // tungstenite answers pings itself; binary frames are not part of the protocol.
                Message::Binary(_) => debug!("ignoring a binary frame from the cloud"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Parses and checks one frame; a bad or badly signed one is dropped and audited.
    fn accept(&self, text: &str) -> Option<Envelope> {
        let envelope = match Envelope::parse(text) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.reject("unparsable", &e.to_string());
                return None;
            }
        };
        if let Some(key) = &self.ctx.server_key
            && let Err(e) = envelope.verify(key)
        {
            self.reject(&envelope.kind, &e.to_string());
            return None;
        }
        Some(envelope)
    }

    fn reject(&self, kind: &str, why: &str) {
        warn!(kind, why, "dropped a message from the cloud");
        self.ctx
            .status
            .set_error(&format!("dropped a {kind} message: {why}"));
        self.ctx.daemon.audit().record_in_background(
            "cloud_message_rejected",
            Actor::Cloud,
            json!({ "type": kind, "reason": why }),
        );
    }

    async fn handshake(&mut self) -> Result<Welcome, String> {
        let challenge = self.receive().await?;
        if challenge.kind != kind::CHALLENGE {
            return Err(format!(
                "the cloud opened with {} instead of challenge",
                challenge.kind
            ));
        }
        let Challenge { nonce } = challenge.payload_as().map_err(|e| e.to_string())?;
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce.as_bytes())
            .map_err(|e| format!("the challenge's nonce is not base64url: {e}"))?;
        let settings = self.ctx.daemon.settings();
        let (trace_head, audit_head) = heads(&self.ctx.daemon).await;
        let hello = Hello {
            agent_version: crate::VERSION.to_owned(),
            protocol: PROTOCOL_VERSION,
            edition: settings.features.edition().to_string(),
            nonce_signature: encode_signature(&self.ctx.identity.sign(&nonce)),
            trace_head,
            audit_head,
        };
        self.send(kind::HELLO, to_value(&hello)).await?;
        loop {
            let answer = self.receive().await?;
            match answer.kind.as_str() {
                kind::WELCOME => return answer.payload_as().map_err(|e| e.to_string()),
                kind::ERROR => {
                    return Err(format!(
                        "the cloud refused the handshake: {}",
                        answer.payload
                    ));
                }
                other => debug!(kind = other, "ignoring a message before welcome"),
            }
        }
    }

    /// Serves the connection; `None` when stopped, else why it ended.
    async fn run(
        &mut self,
        welcome: &Welcome,
        cursors: &mut Cursors,
        stop: &CancellationToken,
    ) -> Option<String> {
        let ctx = self.ctx;
        let stores = ctx.daemon.stores();
        let mut outbound = vec![Outbound::new(
            Stream::Trace,
            &ctx.trace_dir,
            start_seq(welcome, cursors, Stream::Trace),
            stores.trace.watch_head(),
        )];
        if ctx.stream_audit {
            outbound.push(Outbound::new(
                Stream::Audit,
                &ctx.audit_dir,
                start_seq(welcome, cursors, Stream::Audit),
                ctx.daemon.audit().chain().watch_head(),
            ));
        }
        let mut heartbeat = tokio::time::interval(ctx.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_inbound = Instant::now();
        let mut cursor_dirty = false;
        let mut flush = tokio::time::interval(CURSOR_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When to send what the chains hold next: at once on connecting and when an ack opens
        // the window, [`LINGER`] after a new entry otherwise. Acks are read meanwhile.
        let mut pump_at = Some(tokio::time::Instant::now());
        if let Err(why) = self.send_checkpoints(cursors).await {
            return Some(why);
        }
        let mut events = ctx.daemon.cloud_events().subscribe();
        // The policy in force and the local pins, whatever happened while the link was down.
        if let Some(active) = stores.decisions.policy.active() {
            let payload = super::events::policy_loaded(&ctx.daemon, &active);
            if let Err(why) = self.send(kind::POLICY_LOADED, payload).await {
                return Some(why);
            }
        }
        loop {
            if pump_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                pump_at = None;
                for out in &mut outbound {
                    if let Err(why) = self.pump(out).await {
                        return Some(why);
                    }
                    publish_progress(&ctx.status, out, cursors);
                }
            }
            let linger = async {
                match pump_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let (first, rest) = outbound.split_at_mut(1);
            let trace_head = &mut first[0].head;
            let audit_changed = async {
                match rest.first_mut() {
                    Some(audit) => audit.head.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => {
                    let _ = self.socket.close(None).await;
                    return None;
                }
                frame = self.receive() => {
                    last_inbound = Instant::now();
                    let envelope = match frame {
                        Ok(envelope) => envelope,
                        Err(why) => return Some(why),
                    };
                    if self.handle(envelope, &mut outbound, cursors).await {
                        cursor_dirty = true;
                        pump_at = Some(tokio::time::Instant::now());
                    }
                }
                _ = heartbeat.tick() => {
                    if last_inbound.elapsed() > ctx.heartbeat * 3 {
                        return Some(format!(
                            "no message from the cloud for {} s: the connection is stale",
                            last_inbound.elapsed().as_secs()
                        ));
                    }
                    // A cloud that answers heartbeats but never acknowledges a batch would hold
                    // the window shut forever: after the stale limit, start over from the cursor.
                    if let Some(waited) = outbound.iter().filter_map(Outbound::oldest_unacked).max()
                        && waited > ctx.heartbeat * 3
                    {
                        return Some(format!(
                            "a batch sent {} s ago is still not acknowledged",
                            waited.as_secs()
                        ));
                    }
                    if let Err(why) = self.send_checkpoints(cursors).await {
                        return Some(why);
                    }
                    let payload = heartbeat_payload(&ctx.daemon, cursors).await;
                    if let Err(why) = self.send(kind::HEARTBEAT, payload).await {
                        return Some(why);
                    }
                    ctx.status.update(|s| s.last_heartbeat_sent = Some(crate::clock::now_rfc3339()));
                }
                // Not listened to while a send is already due: each entry would wake this thread
                // (and make the trace writer wake it) for nothing.
                _ = trace_head.changed(), if pump_at.is_none() => {
                    pump_at = Some(tokio::time::Instant::now() + LINGER);
                }
                _ = audit_changed, if pump_at.is_none() => {
                    pump_at = Some(tokio::time::Instant::now() + LINGER);
                }
                () = linger => {}
                event = events.recv() => match event {
                    Ok(event) => {
                        if let Err(why) = self.send(event.kind, event.payload).await {
                            return Some(why);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        // Advisory only: the chains carry the durable record of each.
                        debug!(missed, "the uplink fell behind the local events");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                },
                _ = flush.tick(), if cursor_dirty => {
                    cursor_dirty = false;
                    if let Err(e) = cursor::store(&ctx.cursor_path, cursors) {
                        warn!(error = %e, "cannot write the cloud cursor");
                    }
                }
            }
        }
    }

    /// Sends the signed checkpoints the cloud has not acknowledged and that are not on their way
    /// (checkpoints come every 10,000 entries or 60 s, so looking at each heartbeat suffices).
    async fn send_checkpoints(&mut self, cursors: &Cursors) -> Result<(), String> {
        let path = self.ctx.checkpoints_path.clone();
        let after = cursors.checkpoint;
        let read = tokio::task::spawn_blocking(move || read_checkpoints(&path, after)).await;
        let checkpoints = match read {
            Ok(Ok(checkpoints)) => checkpoints,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the checkpoints to send");
                return Ok(());
            }
            Err(e) => return Err(format!("the checkpoint reader failed: {e}")),
        };
        for (checkpoint_seq, checkpoint) in checkpoints {
            if self
                .checkpoints_in_flight
                .values()
                .any(|s| *s == checkpoint_seq)
            {
                continue;
            }
            let id = self.send(kind::CHECKPOINT, checkpoint).await?;
            self.checkpoints_in_flight.insert(id, checkpoint_seq);
        }
        Ok(())
    }

    /// Sends batches of `out` while its window has room and the chain has entries.
    async fn pump(&mut self, out: &mut Outbound) -> Result<(), String> {
        while out.in_flight_entries < self.ctx.window && out.behind() {
            let room = usize::try_from(self.ctx.window - out.in_flight_entries)
                .unwrap_or(usize::MAX)
                .min(MAX_BATCH_ENTRIES);
            let Some(mut reader) = out.reader.take() else {
                return Ok(());
            };
            let read = tokio::task::spawn_blocking(move || {
                let lines = reader.read(room, MAX_MESSAGE_BYTES - ENVELOPE_ROOM);
                (reader, lines)
            })
            .await;
            let (reader, lines) = read.map_err(|e| format!("the trace reader failed: {e}"))?;
            out.reader = Some(reader);
            let lines = lines.map_err(|e| format!("cannot read the {}: {e}", out.stream.name()))?;
            let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
                return Ok(());
            };
            let (from_seq, to_seq) = (first.seq, last.seq);
            let count = lines.len() as u64;
            let texts: Vec<&str> = lines.iter().map(|line| line.text.as_str()).collect();
            self.sequence += 1;
            // The stored lines go out as they are: no parse, no re-encoding per entry.
            let (frame, _) = BatchFrame {
                org_id: &self.ctx.org_id,
                runtime_id: &self.ctx.runtime_id,
                sequence: self.sequence,
                stream: out.stream.name(),
                from_seq,
                to_seq,
            }
            .sign(&texts, &self.ctx.identity);
            self.socket
                .send(Message::text(frame))
                .await
                .map_err(|e| format!("cannot send audit_batch: {e}"))?;
            out.in_flight.push_back((to_seq, count, Instant::now()));
            out.in_flight_entries += count;
            out.sent_through = Some(to_seq);
        }
        Ok(())
    }

    /// Acts on one message from the cloud; true when a cursor moved.
    async fn handle(
        &mut self,
        envelope: Envelope,
        outbound: &mut [Outbound],
        cursors: &mut Cursors,
    ) -> bool {
        let ctx = self.ctx;
        match envelope.kind.as_str() {
            kind::ACK => {
                let Ok(ack) = envelope.payload_as::<Ack>() else {
                    self.reject(kind::ACK, "the payload is not an ack");
                    return false;
                };
                if let Some(of) = &ack.of {
                    if let Some(checkpoint_seq) = self.checkpoints_in_flight.remove(of) {
                        return cursors.advance_checkpoint(checkpoint_seq);
                    }
                    ctx.status
                        .update(|s| s.last_heartbeat_acked = Some(crate::clock::now_rfc3339()));
                }
                let (Some(stream), Some(through)) = (ack.stream, ack.through_seq) else {
                    return false;
                };
                let Some(out) = outbound.iter_mut().find(|o| o.stream == stream) else {
                    return false;
                };
                // The cloud cannot have what was never sent on this connection or before it.
                let through = match out.sent_through {
                    Some(sent) => through.min(sent),
                    None => return false,
                };
                while out
                    .in_flight
                    .front()
                    .is_some_and(|(to, _, _)| *to <= through)
                {
                    if let Some((_, count, _)) = out.in_flight.pop_front() {
                        out.in_flight_entries -= count;
                    }
                }
                cursors.advance(stream, through)
            }
            kind::KILL_SWITCH => {
                self.kill_switch(&envelope).await;
                false
            }
            kind::POLICY_UPDATE_AVAILABLE => {
                let Ok(offer) = envelope.payload_as::<PolicyRef>() else {
                    self.reject(
                        kind::POLICY_UPDATE_AVAILABLE,
                        "the payload is not a policy reference",
                    );
                    return false;
                };
                info!(name = %offer.name, version = %offer.version, "the cloud offers a policy");
                if !super::policy_sync::is_new(&ctx.daemon, &offer) {
                    // Active, pending, or refused before: a registry's versions do not change.
                    debug!(name = %offer.name, version = %offer.version, "already handled");
                    return false;
                }
                if let Some(fetcher) = ctx.fetcher.clone() {
                    // Its own task: fetching must not hold up the stream.
                    tokio::spawn(super::policy_sync::handle_offer(
                        Arc::clone(&ctx.daemon),
                        Arc::clone(&ctx.status),
                        fetcher,
                        offer,
                    ));
                }
                false
            }
            kind::ERROR => {
                warn!(payload = %envelope.payload, "the cloud reported an error");
                ctx.status
                    .set_error(&format!("the cloud said: {}", envelope.payload));
                false
            }
            other => {
                debug!(
                    kind = other,
                    "ignoring a message type this runtime does not know"
                );
                false
            }
        }
    }

    async fn kill_switch(&self, envelope: &Envelope) {
        use crate::decisions::autopilot::Command;
        let ctx = self.ctx;
        let Ok(switch) = envelope.payload_as::<KillSwitch>() else {
            self.reject(kind::KILL_SWITCH, "the payload is not a kill switch");
            return;
        };
        if !ctx.honor_kill_switch {
            info!(state = %switch.state, "ignoring the cloud's kill switch (honor_kill_switch = false)");
            ctx.daemon.audit().record_in_background(
                "cloud_kill_switch_ignored",
                Actor::Cloud,
                json!({ "state": switch.state, "reason": switch.reason }),
            );
            return;
        }
        let command = match switch.state.as_str() {
            "paused" => Command::Pause,
            "running" => Command::Resume,
            other => {
                self.reject(kind::KILL_SWITCH, &format!("unknown state '{other}'"));
                return;
            }
        };
        match crate::ipc::handlers::autopilot::change_as(&ctx.daemon, Actor::Cloud, command).await {
            Ok(status) => {
                info!(state = %status.state, reason = %switch.reason, "the cloud's kill switch changed the autopilot");
            }
            Err(e) => warn!(error = %e.message, "the cloud's kill switch was not applied"),
        }
    }
}

impl Outbound {
    /// How long the oldest batch in flight has waited for its ack.
    fn oldest_unacked(&self) -> Option<Duration> {
        self.in_flight.front().map(|(_, _, sent)| sent.elapsed())
    }

    /// Whether the chain has entries not sent yet.
    fn behind(&self) -> bool {
        match (*self.head.borrow(), self.sent_through) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(head), Some(sent)) => head > sent,
        }
    }

    fn new(
        stream: Stream,
        dir: &std::path::Path,
        from_seq: u64,
        head: watch::Receiver<Option<u64>>,
    ) -> Self {
        let kind = match stream {
            Stream::Trace => ChainKind::Trace,
            Stream::Audit => ChainKind::Audit,
        };
        Self {
            stream,
            reader: Some(ChainReader::new(dir, kind, from_seq)),
            in_flight: VecDeque::new(),
            in_flight_entries: 0,
            sent_through: from_seq.checked_sub(1),
            head,
        }
    }
}

/// Where to start a stream: where the cloud's copy ends, or earlier when the cursor says the
/// cloud acknowledged less (a cloud restored from an older backup is refilled from the trace).
fn start_seq(welcome: &Welcome, cursors: &Cursors, stream: Stream) -> u64 {
    welcome.resume.next(stream).min(cursors.next(stream))
}

fn publish_progress(status: &CloudStatus, out: &Outbound, cursors: &Cursors) {
    status.set_acked(out.stream, cursors.acked(out.stream));
}

async fn heads(daemon: &Daemon) -> (Option<WireHead>, Option<WireHead>) {
    let wire = |head: Option<ChainHead>| {
        head.map(|h| WireHead {
            seq: h.seq,
            entry_hash: h.entry_hash,
        })
    };
    let stores = daemon.stores();
    let trace = stores.trace.head().await.ok().and_then(|(head, _)| head);
    let audit = daemon
        .audit()
        .chain()
        .head()
        .await
        .ok()
        .and_then(|(head, _)| head);
    (wire(trace), wire(audit))
}

async fn heartbeat_payload(daemon: &Daemon, cursors: &Cursors) -> Value {
    let (trace_head, audit_head) = heads(daemon).await;
    let backlog = trace_head.as_ref().map_or(0, |h| {
        (h.seq + 1).saturating_sub(cursors.next(Stream::Trace))
    });
    let stores = daemon.stores();
    let heartbeat = Heartbeat {
        uptime_s: daemon.uptime_s(),
        edition: daemon.settings().features.edition().to_string(),
        version: crate::VERSION.to_owned(),
        active_sessions: stores.decisions.sessions.len() as u64,
        trace_head,
        audit_head,
        policy_hash: stores
            .decisions
            .policy
            .active()
            .map_or_else(String::new, |p| p.hash.clone()),
        backlog,
    };
    to_value(&heartbeat)
}

/// The checkpoints after `after` (all when `None`), at most 100, as (checkpoint_seq, object).
fn read_checkpoints(
    path: &std::path::Path,
    after: Option<u64>,
) -> std::io::Result<Vec<(u64, Value)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|checkpoint| {
            let seq = checkpoint.get("checkpoint_seq")?.as_u64()?;
            after.is_none_or(|a| seq > a).then_some((seq, checkpoint))
        })
        .take(100)
        .collect())
}

fn to_value(value: &impl serde::Serialize) -> Value {
    // The payload types are plain structs of strings, numbers and values: they always serialise.
    serde_json::to_value(value).unwrap_or(Value::Null)
}
