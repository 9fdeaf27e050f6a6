//! A test cloud peer: a real WebSocket + HTTP server on 127.0.0.1 that speaks the AtlasBridge
//! cloud protocol (`docs/cloud.md`, "Wire shapes") and injects faults on demand.
//!
//! It runs on its own tokio runtime (its own threads), so synchronous tests drive it through a
//! blocking API: start it, point the daemon at [`CloudPeer::ws_url`] and [`CloudPeer::api_base`],
//! set [`Faults`], and wait for what it stores or records.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use atlasbridge_e2e::cloud_peer::CloudPeer;
//! # use atlasbridge_protocol::cloud::messages::Stream;
//! let peer = CloudPeer::start();
//! // … start the daemon with endpoint = peer.ws_url(), api key = peer.api_key() …
//! assert!(peer.wait_for_entries(Stream::Trace, 10, Duration::from_secs(5)));
//! ```
//!
//! Nothing here panics on what a client sends: a malformed frame or body is recorded (see
//! [`PeerState::protocol_errors`]) and answered with an error. Only setting the peer up (a
//! runtime, a listener, OS randomness) panics when it fails, as a test fixture should.

mod connection;
mod io;
mod server;
mod state;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::messages::{KillSwitch, PolicyRef, Stream, kind};
use atlasbridge_protocol::cloud::rest::PolicyVersion;
use atlasbridge_protocol::trace::checkpoint::encode_public_key;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use state::Outbound;
pub use state::{PeerState, ReceivedMessage, SentMessage};

/// How long [`CloudPeer::stop`] waits for the server and its connections to wind down.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`CloudPeer::restart`] keeps trying to bind the old port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer's fixed settings.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The API key the token call accepts.
    pub api_key: String,
    /// The organisation the peer stamps on what it sends.
    pub org_id: String,
    /// `expires_in` of issued tokens, in seconds (changeable with
    /// [`CloudPeer::set_token_lifetime`]).
    pub token_lifetime_s: u64,
    /// A nice value for the peer's threads (Linux). Benchmarks set one: the peer stands in for a
    /// cloud on another machine, so its CPU should not be charged to the daemon under test.
    pub nice: Option<i32>,
    /// A CPU for the peer's threads (Linux), so that a benchmark can keep the peer off the
    /// daemon's CPUs, as a cloud on another machine would be.
    pub cpu: Option<usize>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            api_key: "test-api-key".to_owned(),
            org_id: "org-test".to_owned(),
            token_lifetime_s: 3600,
            nice: None,
            cpu: None,
        }
    }
}

/// How the peer signs what it sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutgoingSigning {
    /// With the server key ([`CloudPeer::server_public_key`]).
    #[default]
    Server,
    /// Not at all (no `signature` member).
    Unsigned,
    /// With another key, so the signature does not verify under the server key.
    WrongKey,
}

/// How [`CloudPeer::push_policy`] spoils (or not) what it publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PolicySigning {
    /// A version signed by the server key, announced in an envelope signed as the faults say.
    #[default]
    Good,
    /// The stored version's signature is by another key.
    BadSignature,
    /// The stored version is well signed but carries another `content_hash` than the announced
    /// one.
    MismatchedHash,
    /// The announcement envelope is unsigned.
    UnsignedEnvelope,
    /// The announcement envelope is signed by another key.
    WrongKeyEnvelope,
}

/// How the peer refuses WebSocket connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `GET /v1/connect` answers 503 without `Retry-After`.
    ServiceUnavailable,
    /// Every TCP connection (REST included) is closed right after accept, unanswered.
    DropConnections,
}

/// Close the connection on a batch, without acking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseMidBatch {
    /// On the `after`-th batch from now (1 = the next one).
    pub after: usize,
    /// Again every `after` batches, rather than once.
    pub repeat: bool,
    /// Store the batch's entries before closing (a cloud that committed but could not ack),
    /// rather than dropping them (one that died first).
    pub commit: bool,
}

/// Answer calls with a status and `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// 429 or 503 (any status goes).
    pub status: u16,
    /// The `Retry-After` value: delay-seconds or an HTTP date.
    pub retry_after: String,
    /// How many more calls get this answer.
    pub remaining: usize,
}

impl Throttle {
    /// The next `count` calls get `status` with `Retry-After: <seconds>`.
    pub fn new(status: u16, retry_after_s: u64, count: usize) -> Self {
        Self {
            status,
            retry_after: retry_after_s.to_string(),
            remaining: count,
        }
    }
}

/// The faults in force; each applies to events after it is set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Refuse WebSocket upgrades (or every connection) while set.
    pub refuse: Option<Refusal>,
    /// Close the connection on a batch without acking it.
    pub close_mid_batch: Option<CloseMidBatch>,
    /// Send every ack this much later.
    pub ack_delay: Duration,
    /// Send every ack twice.
    pub duplicate_acks: bool,
    /// Send no acks at all (batches are still stored).
    pub withhold_acks: bool,
    /// Answer the next token calls with a status and `Retry-After`.
    pub throttle_tokens: Option<Throttle>,
    /// Answer the next upgrade attempts with a status and `Retry-After`.
    pub throttle_upgrades: Option<Throttle>,
    /// How outgoing envelopes are signed.
    pub outgoing: OutgoingSigning,
    /// Seconds added to the welcome's `server_time` (a skewed cloud clock).
    pub clock_skew_s: i64,
}

/// What the server and its connections share.
struct Shared {
    api_key: String,
    org_id: String,
    server_key: SigningKey,
    /// Signs what is meant not to verify.
    wrong_key: SigningKey,
    state: Mutex<PeerState>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A panicking test thread must not take the peer down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes every waiter.
    fn update<R>(&self, change: impl FnOnce(&mut PeerState) -> R) -> R {
        let result = change(&mut self.lock());
        self.changed.notify_all();
        result
    }

    fn read<R>(&self, read: impl FnOnce(&PeerState) -> R) -> R {
        read(&self.lock())
    }

    fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    fn wait_until(&self, mut ready: impl FnMut(&PeerState) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if ready(&state) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// RFC 3339 UTC with microseconds, `skew_s` seconds off.
fn timestamp(skew_s: i64) -> String {
    let now = jiff::Timestamp::now();
    now.checked_add(jiff::SignedDuration::from_secs(skew_s))
        .unwrap_or(now)
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Another hash than `hash`, of the same shape: the first digit changed.
fn other_hash(hash: &str) -> String {
    let mut chars = hash.chars();
    let first = match chars.next() {
        Some('0') => '1',
        _ => '0',
    };
    std::iter::once(first).chain(chars).collect()
}

/// A server that is listening.
struct Running {
    /// `true` stops it: the listener closes and every connection is cut.
    kill: watch::Sender<bool>,
    /// Signalled when the server's task has finished.
    done: mpsc::Receiver<()>,
}

/// The test cloud peer. See the module documentation.
pub struct CloudPeer {
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
    port: u16,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for CloudPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudPeer")
            .field("port", &self.port)
            .field("running", &self.is_running())
            .field("state", &*self.shared.lock())
            .finish()
    }
}

fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    #[allow(clippy::expect_used)] // Setup: a test cannot run without OS randomness.
    getrandom::fill(&mut seed).expect("OS randomness for the peer's keys");
    SigningKey::from_bytes(&seed)
}

impl CloudPeer {
    /// Starts a peer with the default [`PeerConfig`] on a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_with(PeerConfig::default())
    }

    /// Starts a peer with `config` on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When the runtime or the listener cannot be set up.
    #[allow(clippy::expect_used)] // Setup: a fixture that cannot start fails the test.
    pub fn start_with(config: PeerConfig) -> Self {
        let nice = config.nice;
        let cpu = config.cpu;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cloud-peer")
            .on_thread_start(move || {
                #[cfg(target_os = "linux")]
                if let Some(nice) = nice {
                    // Per thread on Linux; best effort.
                    let _ = rustix::process::setpriority_process(None, nice);
                }
                #[cfg(target_os = "linux")]
                if let Some(cpu) = cpu {
                    let mut only = rustix::thread::CpuSet::new();
                    only.set(cpu);
                    // Per thread; best effort, like the nice value.
                    let _ = rustix::thread::sched_setaffinity(None, &only);
                }
            })
            .enable_all()
            .build()
            .expect("the cloud peer's runtime");
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port on 127.0.0.1 for the peer");
        let port = listener
            .local_addr()
            .expect("the peer's listening address")
            .port();
        let shared = Arc::new(Shared {
            api_key: config.api_key,
            org_id: config.org_id,
            server_key: random_key(),
            wrong_key: random_key(),
            state: Mutex::new(PeerState::new(config.token_lifetime_s)),
            changed: Condvar::new(),
        });
        let peer = Self {
            shared,
            runtime: Some(runtime),
            port,
            running: Mutex::new(None),
        };
        peer.serve(listener);
        peer
    }

    #[allow(clippy::expect_used)] // Setup, as in `start_with`.
    fn serve(&self, listener: TcpListener) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let _entered = runtime.enter();
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("the listener in the runtime");
        let (kill, kill_rx) = watch::channel(false);
        let (done_tx, done) = mpsc::channel();
        let app = server::router(Arc::clone(&self.shared), kill_rx.clone());
        let listener = io::PeerListener::new(listener, Arc::clone(&self.shared), kill_rx.clone());
        let mut signal = kill_rx;
        runtime.spawn(async move {
            let stopped = async move {
                let _ = signal.wait_for(|killed| *killed).await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await;
            let _ = done_tx.send(());
        });
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(Running { kill, done });
    }

    /// The port, the same across [`CloudPeer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ws://127.0.0.1:PORT/v1/connect`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/connect", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server key in `ed25519:<base64url>` form.
    pub fn server_public_key(&self) -> String {
        encode_public_key(&self.shared.server_key.verifying_key())
    }

    /// The server key.
    pub fn server_verifying_key(&self) -> VerifyingKey {
        self.shared.server_key.verifying_key()
    }

    /// The API key the token call accepts.
    pub fn api_key(&self) -> String {
        self.shared.api_key.clone()
    }

    /// The organisation.
    pub fn org_id(&self) -> String {
        self.shared.org_id.clone()
    }

    // ---- Faults ----

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the faults (and restarts the `close_mid_batch` count).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.update(|s| {
            s.faults = faults;
            s.batches_since_close = 0;
        });
    }

    /// Changes some faults (and restarts the `close_mid_batch` count).
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        self.shared.update(|s| {
            change(&mut s.faults);
            s.batches_since_close = 0;
        });
    }

    /// No faults.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// Refuses WebSocket upgrades (or all connections) while `Some`.
    pub fn refuse(&self, refusal: Option<Refusal>) {
        self.update_faults(|f| f.refuse = refusal);
    }

    /// Closes the connection on the `after`-th next batch without acking it; see
    /// [`CloseMidBatch`].
    pub fn close_mid_batch(&self, close: Option<CloseMidBatch>) {
        self.update_faults(|f| f.close_mid_batch = close);
    }

    /// Delays every ack by `delay` (zero: none).
    pub fn delay_acks(&self, delay: Duration) {
        self.update_faults(|f| f.ack_delay = delay);
    }

    /// Sends every ack twice.
    pub fn duplicate_acks(&self, on: bool) {
        self.update_faults(|f| f.duplicate_acks = on);
    }

    /// Sends no acks.
    pub fn withhold_acks(&self, on: bool) {
        self.update_faults(|f| f.withhold_acks = on);
    }

    /// Answers the next token calls per `throttle`.
    pub fn throttle_tokens(&self, throttle: Option<Throttle>) {
        self.update_faults(|f| f.throttle_tokens = throttle);
    }

    /// Answers the next upgrade attempts per `throttle`.
    pub fn throttle_upgrades(&self, throttle: Option<Throttle>) {
        self.update_faults(|f| f.throttle_upgrades = throttle);
    }

    /// Signs outgoing envelopes as `signing` says.
    pub fn sign_outgoing(&self, signing: OutgoingSigning) {
        self.update_faults(|f| f.outgoing = signing);
    }

    /// Sets `expires_in` of tokens issued from now on. Open connections are not affected by
    /// their token expiring; [`CloudPeer::revoke_tokens`] cuts them.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.shared.update(|s| s.token_lifetime_s = seconds);
    }

    /// Revokes every issued token and closes every open connection (close code 1008): upgrades
    /// and REST calls with an old token get 401.
    pub fn revoke_tokens(&self) {
        self.shared.update(|s| {
            s.tokens.clear();
            s.close_all(1008, "token revoked");
        });
    }

    /// Closes every open connection (close code 1001) and keeps listening.
    pub fn disconnect(&self) {
        self.shared.read(|s| s.close_all(1001, "going away"));
    }

    /// Publishes a new version of policy `name` (numbered by the peer from 1) as the current
    /// policy, and announces it with `policy_update_available` to the connected runtime, if any.
    /// Gives the version.
    pub fn push_policy(
        &self,
        name: &str,
        yaml: &str,
        content_hash: &str,
        signing: PolicySigning,
    ) -> String {
        let shared = &self.shared;
        shared.update(|s| {
            let versions = s.policies.entry(name.to_owned()).or_default();
            let version = (versions.len() + 1).to_string();
            let stored_hash = if signing == PolicySigning::MismatchedHash {
                other_hash(content_hash)
            } else {
                content_hash.to_owned()
            };
            let unsigned = PolicyVersion {
                name: name.to_owned(),
                version: version.clone(),
                content_hash: stored_hash,
                yaml: yaml.to_owned(),
                signed_at: timestamp(0),
                signature: String::new(),
            };
            let key = if signing == PolicySigning::BadSignature {
                &shared.wrong_key
            } else {
                &shared.server_key
            };
            versions.push(unsigned.sign(key));
            let announced = PolicyRef {
                name: name.to_owned(),
                version: version.clone(),
                content_hash: content_hash.to_owned(),
            };
            let envelope_signing = match signing {
                PolicySigning::UnsignedEnvelope => Some(OutgoingSigning::Unsigned),
                PolicySigning::WrongKeyEnvelope => Some(OutgoingSigning::WrongKey),
                _ => None,
            };
            s.send_current(Outbound::Message {
                kind: kind::POLICY_UPDATE_AVAILABLE.to_owned(),
                payload: serde_json::to_value(&announced).unwrap_or(Value::Null),
                signing: envelope_signing,
            });
            s.current_policy = Some(announced);
            version
        })
    }

    /// Sends `kill_switch {state, reason}` to the connected runtime; false when none is.
    pub fn send_kill_switch(&self, state: &str, reason: &str) -> bool {
        let payload = KillSwitch {
            state: state.to_owned(),
            reason: reason.to_owned(),
        };
        self.send(
            kind::KILL_SWITCH,
            serde_json::to_value(&payload).unwrap_or(Value::Null),
        )
    }

    /// Sends an envelope of `kind` (any, unknown ones included) to the connected runtime; false
    /// when none is.
    pub fn send(&self, kind: &str, payload: Value) -> bool {
        self.shared.read(|s| {
            s.send_current(Outbound::Message {
                kind: kind.to_owned(),
                payload,
                signing: None,
            })
        })
    }

    /// Sends `text` as a text frame, as is, to the connected runtime; false when none is.
    pub fn send_raw(&self, text: &str) -> bool {
        self.shared
            .read(|s| s.send_current(Outbound::Raw(text.to_owned())))
    }

    /// Sends an `error {code, message}` envelope to the connected runtime.
    pub fn send_error(&self, code: &str, message: &str) -> bool {
        self.send(kind::ERROR, json!({"code": code, "message": message}))
    }

    /// Forgets the stored entries of `stream` from `seq` on, as a cloud restored from an older
    /// backup: the next welcome resumes `stream` at `seq` (or lower, if it held less).
    pub fn forget_from(&self, stream: Stream, seq: u64) {
        self.shared.update(|s| s.forget_from(stream, seq));
    }

    /// Replaces the stored entries of `stream` from `seq` on with a rewritten chain (other
    /// content, sealed and linked), so that what the peer witnessed forks from the runtime's
    /// trace at `seq`.
    pub fn rewrite_stored_from(&self, stream: Stream, seq: u64) {
        self.shared.update(|s| s.rewrite_from(stream, seq));
    }

    /// `POST /v1/witness` requests received.
    pub fn witness_queries(&self) -> usize {
        self.with_state(PeerState::witness_queries)
    }

    /// Stops listening and cuts every connection, as if the cloud were killed. Blocks until
    /// the port is closed and the connections are gone (or 5 s passed).
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            let _ = running.kill.send(true);
            let _ = running.done.recv_timeout(STOP_TIMEOUT);
        }
        self.shared.wait_until(|s| s.open.is_empty(), STOP_TIMEOUT);
    }

    /// Stops (if running) and listens again on the same port, keeping everything stored.
    ///
    /// # Panics
    /// When the port cannot be bound again within 5 s.
    #[allow(clippy::panic)] // Setup: a fixture that cannot restart fails the test.
    pub fn restart(&self) {
        self.stop();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + REBIND_TIMEOUT;
        let listener = loop {
            // std sets SO_REUSEADDR on Unix, so the old connections in TIME_WAIT do not block.
            match TcpListener::bind(address) {
                Ok(listener) => break listener,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cloud peer: cannot listen on {address} again: {e}")
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        self.serve(listener);
    }

    /// Whether the peer is listening (not stopped).
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    // ---- Queries ----

    /// Runs `read` on the state.
    pub fn with_state<R>(&self, read: impl FnOnce(&PeerState) -> R) -> R {
        self.shared.read(read)
    }

    /// Waits until `ready` holds of the state (checked at every change), at most `timeout`;
    /// whether it held.
    pub fn wait_until(&self, ready: impl FnMut(&PeerState) -> bool, timeout: Duration) -> bool {
        self.shared.wait_until(ready, timeout)
    }

    /// The stored entries of `stream`, in seq order.
    pub fn entries(&self, stream: Stream) -> Vec<Value> {
        self.with_state(|s| s.entries(stream))
    }

    /// How many entries of `stream` are stored.
    pub fn entry_count(&self, stream: Stream) -> usize {
        self.with_state(|s| s.entry_count(stream))
    }

    /// Waits until at least `count` entries of `stream` are stored; whether they were.
    pub fn wait_for_entries(&self, stream: Stream, count: usize, timeout: Duration) -> bool {
        self.wait_until(|s| s.entry_count(stream) >= count, timeout)
    }

    /// Entries of `stream` received again after they were stored.
    pub fn duplicates(&self, stream: Stream) -> usize {
        self.with_state(|s| s.duplicates(stream))
    }

    /// One line per batch that skipped ahead of the stored entries.
    pub fn gaps(&self) -> Vec<String> {
        self.with_state(|s| s.gaps().to_vec())
    }

    /// Protocol violations the peer saw (malformed frames, unexpected types, forks, …).
    pub fn protocol_errors(&self) -> Vec<String> {
        self.with_state(|s| s.protocol_errors().to_vec())
    }

    /// Messages after the handshake whose signature did not verify.
    pub fn bad_signatures(&self) -> Vec<String> {
        self.with_state(|s| s.bad_signatures().to_vec())
    }

    /// Why each failed handshake failed.
    pub fn handshake_failures(&self) -> Vec<String> {
        self.with_state(|s| s.handshake_failures().to_vec())
    }

    /// When each token call arrived, refused ones included.
    pub fn token_attempts(&self) -> Vec<Instant> {
        self.with_state(|s| s.token_attempts().to_vec())
    }

    /// When each `GET /v1/connect` arrived, refused ones included.
    pub fn upgrade_attempts(&self) -> Vec<Instant> {
        self.with_state(|s| s.upgrade_attempts().to_vec())
    }

    /// Completed handshakes.
    pub fn connections(&self) -> usize {
        self.with_state(PeerState::connections)
    }

    /// Whether a handshaken connection is open.
    pub fn is_connected(&self) -> bool {
        self.with_state(PeerState::is_connected)
    }

    /// The payloads of the verified envelopes of `kind` received, in order.
    pub fn received(&self, kind: &str) -> Vec<Value> {
        self.with_state(|s| s.received(kind))
    }

    /// The `sequence` of every received envelope, per connection (to check they increase).
    pub fn received_sequences(&self) -> std::collections::BTreeMap<usize, Vec<u64>> {
        self.with_state(PeerState::received_sequences)
    }

    /// The payloads of the envelopes of `kind` sent, in order.
    pub fn sent(&self, kind: &str) -> Vec<Value> {
        self.with_state(|s| s.sent(kind))
    }
}

impl Drop for CloudPeer {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock()
            && let Some(running) = running.take()
        {
            let _ = running.kill.send(true);
        }
        // Does not block, so a peer may be dropped inside another runtime too.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
