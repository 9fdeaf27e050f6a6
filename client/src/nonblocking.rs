//! The async client: one connection, many requests in flight, answers matched by id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use atlasbridge_protocol::features::{EditionInfo, FeatureList};
use atlasbridge_protocol::framing::{Frame, LineCodec, MAX_LINE_BYTES, encode_line};
use atlasbridge_protocol::jsonrpc::{
    Notification, OutgoingRequest, ServerMessage, parse_server_message,
};
use atlasbridge_protocol::methods::{
    self as m, DaemonStatus, EvaluateParams, EvaluateResult, HelloParams, HelloResult,
    RecordParams, RecordResult, SessionEndParams, SessionInfo, SessionStartParams, SubscribeParams,
    SubscribeResult,
};
use atlasbridge_protocol::trace::TraceEntry;
use atlasbridge_protocol::{ErrorObject, Id, PROTOCOL_VERSION};
use futures_util::StreamExt;
use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::tokio::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::{ClientError, SubscriptionItem, subscription_item};

type Waiter = oneshot::Sender<Result<Value, ErrorObject>>;

/// Notifications buffered for a subscriber before the reader waits for it.
const NOTIFICATION_BUFFER: usize = 1024;

/// What the connection's reader task shares with the client.
#[derive(Debug, Default)]
struct Shared {
    /// Calls waiting for their answer, by id; `None` once the connection is gone, so that a call
    /// made after that fails at once instead of waiting for an answer nobody will read.
    waiters: Mutex<Option<HashMap<u64, Waiter>>>,
    /// Where notifications go that no typed subscription takes ([`Client::notifications`]).
    notifications: Mutex<Option<mpsc::Sender<Notification>>>,
    /// The typed trace subscription ([`Client::subscribe`]): `None` while there is none;
    /// `Some(None)` while the daemon still feeds one whose [`Subscription`] was dropped.
    subscription: Mutex<Option<Option<mpsc::Sender<Notification>>>>,
}

/// Locks a mutex, also after a panic elsewhere: the maps stay consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// An async connection to the daemon, for agents built on tokio.
///
/// Calls take `&self`, so one client can be shared by many tasks (wrap it in an `Arc`); each
/// call waits only for its own answer, and answers are matched by id. A [`Subscription`] keeps
/// the connection open as long as it lives, even after the client is dropped.
///
/// Calls wait as long as the daemon takes; put a deadline around one with
/// `tokio::time::timeout` if the agent needs one.
///
/// ```no_run
/// # async fn demo() -> Result<(), atlasbridge::ClientError> {
/// let socket = atlasbridge::default_socket()?;
/// let client = atlasbridge::Client::connect(&socket).await?;
/// let status = client.status().await?;
/// println!("atlasbridged {} (pid {})", status.version, status.pid);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stream: Arc<Stream>,
    write_lock: tokio::sync::Mutex<()>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    socket: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects to the daemon's socket. Nothing listening there is
    /// [`ClientError::NotRunning`]. Must be called inside a tokio runtime: the connection's
    /// reader is a task of it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), atlasbridge::ClientError> {
    /// let socket = std::path::Path::new("/run/user/1000/atlasbridge/atlasbridged.sock");
    /// let client = atlasbridge::Client::connect(socket).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let name = socket
            .to_fs_name::<GenericFilePath>()
            .map_err(|e| ClientError::from_connect(socket.to_path_buf(), e))?;
        let stream = Stream::connect(name)
            .await
            .map_err(|e| ClientError::from_connect(socket.to_path_buf(), e))?;
        let stream = Arc::new(stream);
        let shared = Arc::new(Shared {
            waiters: Mutex::new(Some(HashMap::new())),
            ..Shared::default()
        });
        let reader = tokio::spawn(read_replies(Arc::clone(&stream), Arc::clone(&shared)));
        Ok(Self {
            inner: Arc::new(Inner {
                stream,
                write_lock: tokio::sync::Mutex::new(()),
                shared,
                next_id: AtomicU64::new(1),
                reader,
                socket: socket.to_path_buf(),
            }),
        })
    }

    /// The socket this client is connected to.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) {
    /// println!("connected to {}", client.socket().display());
    /// # }
    /// ```
    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    /// Server notifications from now on that no [`subscribe`](Self::subscribe) takes (e.g.
    /// `trace.entry` after a `trace.subscribe` sent with [`call`](Self::call)). Until this is
    /// called, they are discarded; once called, read them, or the connection stalls.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) {
    /// let mut notes = client.notifications();
    /// while let Some(note) = notes.recv().await {
    ///     println!("{}", note.method);
    /// }
    /// # }
    /// ```
    pub fn notifications(&self) -> mpsc::Receiver<Notification> {
        let (sender, receiver) = mpsc::channel(NOTIFICATION_BUFFER);
        *lock(&self.inner.shared.notifications) = Some(sender);
        receiver
    }

    /// Sends one request and waits for its answer, read as `R`. For methods without a typed
    /// method here; `params` of `None` sends none.
    ///
    /// ```no_run
    /// use atlasbridge::protocol::methods::{self as m, HeadResult};
    ///
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let head: HeadResult = client.call(m::TRACE_HEAD, None::<()>).await?;
    /// println!("{} entries", head.entries);
    /// # Ok(()) }
    /// ```
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: Option<P>,
    ) -> Result<R, ClientError> {
        let value = self.call_value(method, params).await?;
        serde_json::from_value(value).map_err(|e| {
            ClientError::Protocol(format!("{method} returned an unexpected shape: {e}"))
        })
    }

    /// Sends one request and returns its raw result.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let pins = client.call_value("policy.pins", None::<()>).await?;
    /// println!("{pins}");
    /// # Ok(()) }
    /// ```
    pub async fn call_value<P: Serialize>(
        &self,
        method: &str,
        params: Option<P>,
    ) -> Result<Value, ClientError> {
        let inner = &*self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let line = encode_line(&OutgoingRequest::new(Id::from(id), method, params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if line.len() > MAX_LINE_BYTES {
            return Err(ClientError::Protocol(format!(
                "request of {} bytes exceeds the {MAX_LINE_BYTES}-byte limit",
                line.len()
            )));
        }
        let (sender, receiver) = oneshot::channel();
        match lock(&inner.shared.waiters).as_mut() {
            Some(waiters) => waiters.insert(id, sender),
            None => return Err(ClientError::Closed),
        };
        let written = {
            let _guard = inner.write_lock.lock().await;
            let mut writer = &*inner.stream;
            writer.write_all(&line).await
        };
        if let Err(e) = written {
            if let Some(waiters) = lock(&inner.shared.waiters).as_mut() {
                waiters.remove(&id);
            }
            return Err(match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    ClientError::Closed
                }
                _ => ClientError::Io(e),
            });
        }
        match receiver.await {
            Ok(outcome) => outcome.map_err(ClientError::Rpc),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// `hello` with this crate's protocol version: the daemon's version, edition, flags and this
    /// connection's role. A daemon that does not speak it answers -32010.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let hello = client.hello("my-agent/1.0").await?;
    /// println!("{} ({}), role {}", hello.daemon, hello.edition, hello.role);
    /// # Ok(()) }
    /// ```
    pub async fn hello(&self, client_name: &str) -> Result<HelloResult, ClientError> {
        let params = HelloParams {
            protocol: PROTOCOL_VERSION,
            client: Some(client_name.to_owned()),
        };
        self.call(m::HELLO, Some(params)).await
    }

    /// `daemon.status`: the daemon's version, health, trace head, sessions, ….
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let status = client.status().await?;
    /// println!("{}: {} entries", status.health, status.trace.chain.entries);
    /// # Ok(()) }
    /// ```
    pub async fn status(&self) -> Result<DaemonStatus, ClientError> {
        self.call(m::DAEMON_STATUS, None::<()>).await
    }

    /// `edition.get`: the edition and where it was set.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// println!("{:?}", client.edition().await?);
    /// # Ok(()) }
    /// ```
    pub async fn edition(&self) -> Result<EditionInfo, ClientError> {
        self.call(m::EDITION_GET, None::<()>).await
    }

    /// `features.list`: every feature flag, whether it is on, and why.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// println!("{:?}", client.features().await?);
    /// # Ok(()) }
    /// ```
    pub async fn features(&self) -> Result<FeatureList, ClientError> {
        self.call(m::FEATURES_LIST, None::<()>).await
    }

    /// `decision.evaluate`: the policy decides one prompt event. The answer comes only once its
    /// trace entry is durable. A repeat of an `idempotency_key` in the same session gets the
    /// first answer (`repeated: true`).
    ///
    /// Errors leave the agent without a decision: treat every one as deny. The protocol names
    /// -32001 and -32004 ([`ClientError::is_deny`]).
    ///
    /// ```no_run
    /// use atlasbridge::{DecisionAction, EvaluateParams};
    ///
    /// # async fn demo(client: atlasbridge::Client) {
    /// let event = EvaluateParams {
    ///     session_id: "build-42".into(),
    ///     prompt_id: "p-1".into(),
    ///     prompt_type: "yes_no".into(),
    ///     prompt_text: "Continue? [y/n]".into(),
    ///     confidence: "high".into(),
    ///     ..Default::default()
    /// };
    /// match client.evaluate(&event).await {
    ///     Ok(answer) if answer.decision() == DecisionAction::AutoReply => {
    ///         println!("answer {:?}", answer.reply_value);
    ///     }
    ///     Ok(answer) => println!("{}: {}", answer.action, answer.explanation),
    ///     Err(e) => println!("deny: {e}"),
    /// }
    /// # }
    /// ```
    pub async fn evaluate(&self, event: &EvaluateParams) -> Result<EvaluateResult, ClientError> {
        self.call(m::DECISION_EVALUATE, Some(event)).await
    }

    /// `decision.record`: writes a decision made elsewhere (a person's answer, another tool) to
    /// the trace; the answer comes once it is durable.
    ///
    /// ```no_run
    /// use atlasbridge::RecordParams;
    ///
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let recorded = client
    ///     .record(&RecordParams {
    ///         session_id: "build-42".into(),
    ///         prompt_id: "p-1".into(),
    ///         prompt_type: "yes_no".into(),
    ///         action_taken: "human_reply".into(),
    ///         reply_value: Some("n".into()),
    ///         human_actor: "alice".into(),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// println!("recorded at seq {:?}", recorded.seq);
    /// # Ok(()) }
    /// ```
    pub async fn record(&self, decision: &RecordParams) -> Result<RecordResult, ClientError> {
        self.call(m::DECISION_RECORD, Some(decision)).await
    }

    /// `session.start`: registers a session; its later events inherit the fields given here
    /// (their own values win). Starting a live session again replaces the fields given.
    ///
    /// ```no_run
    /// use atlasbridge::SessionStartParams;
    ///
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let session = SessionStartParams {
    ///     session_id: "build-42".into(),
    ///     agent_id: Some("my-agent".into()),
    ///     ..Default::default()
    /// };
    /// client.start_session(&session).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_session(
        &self,
        session: &SessionStartParams,
    ) -> Result<SessionInfo, ClientError> {
        self.call(m::SESSION_START, Some(session)).await
    }

    /// `session.end`: forgets a live session and returns it as it was; a session that is not
    /// live is -32602.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let ended = client.end_session("build-42").await?;
    /// println!("{} decisions", ended.decisions);
    /// # Ok(()) }
    /// ```
    pub async fn end_session(&self, session_id: &str) -> Result<SessionInfo, ClientError> {
        let params = SessionEndParams {
            session_id: session_id.to_owned(),
        };
        self.call(m::SESSION_END, Some(params)).await
    }

    /// `trace.subscribe`: a stream of trace entries, replayed from `from_seq` first when given,
    /// else from the next entry written. Other calls go on working on this connection.
    ///
    /// One subscription per connection: the daemon cannot end one, so while it feeds this
    /// connection (also after the [`Subscription`] is dropped) another is
    /// [`ClientError::AlreadySubscribed`]. Once the daemon ended it
    /// ([`ClientError::SubscriptionEnded`]), subscribing again is fine.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let mut entries = client.subscribe(Some(0)).await?;
    /// while let Some(entry) = entries.recv().await {
    ///     let entry = entry?;
    ///     println!("{} {} {}", entry.seq, entry.session_id, entry.action_taken);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, from_seq: Option<u64>) -> Result<Subscription, ClientError> {
        let (sender, receiver) = mpsc::channel(NOTIFICATION_BUFFER);
        {
            // Entries may arrive before the answer: the slot must be ready before the request.
            let mut slot = lock(&self.inner.shared.subscription);
            if slot.is_some() {
                return Err(ClientError::AlreadySubscribed);
            }
            *slot = Some(Some(sender));
        }
        let started: Result<SubscribeResult, ClientError> = self
            .call(m::TRACE_SUBSCRIBE, Some(SubscribeParams { from_seq }))
            .await;
        match started {
            Ok(started) => Ok(Subscription {
                receiver,
                started,
                finished: false,
                _connection: Arc::clone(&self.inner),
            }),
            Err(e) => {
                *lock(&self.inner.shared.subscription) = None;
                Err(e)
            }
        }
    }
}

/// A trace subscription over an async connection ([`Client::subscribe`]): a
/// [`Stream`](futures_util::Stream) of trace entries, in seq order, as stored.
///
/// When the daemon ends the subscription (`trace.subscription_ended`), the stream yields
/// [`ClientError::SubscriptionEnded`], then ends; a closed connection yields
/// [`ClientError::Closed`], then ends. An entry that cannot be read yields
/// [`ClientError::Protocol`] and the feed goes on.
///
/// Read it: up to 1,024 entries wait here, and then the connection's other answers wait too
/// (the daemon drops a subscriber that falls too far behind with `too_slow`).
///
/// ```no_run
/// use atlasbridge::ClientError;
/// use futures_util::StreamExt;
///
/// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
/// let mut entries = client.subscribe(None).await?;
/// while let Some(entry) = entries.next().await {
///     match entry {
///         Ok(entry) => println!("{} {}", entry.seq, entry.action_taken),
///         Err(ClientError::SubscriptionEnded(ended)) => {
///             println!("ended ({}); resume from {:?}", ended.reason, ended.resume_from());
///         }
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<Notification>,
    started: SubscribeResult,
    finished: bool,
    /// Keeps the connection (and its reader) open while the stream lives.
    _connection: Arc<Inner>,
}

impl Subscription {
    /// The daemon's answer to `trace.subscribe`: the first seq it sends, and the head when the
    /// subscription started.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let entries = client.subscribe(None).await?;
    /// println!("from seq {}", entries.started().from_seq);
    /// # Ok(()) }
    /// ```
    pub fn started(&self) -> &SubscribeResult {
        &self.started
    }

    /// The next entry, like [`StreamExt::next`] without the import.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let mut entries = client.subscribe(None).await?;
    /// if let Some(entry) = entries.recv().await {
    ///     println!("seq {}", entry?.seq);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Option<Result<TraceEntry, ClientError>> {
        self.next().await
    }

    /// Whether the feed has ended (the daemon ended it, or the connection failed); the stream
    /// then yields `None`.
    ///
    /// ```no_run
    /// # async fn demo(client: atlasbridge::Client) -> Result<(), atlasbridge::ClientError> {
    /// let mut entries = client.subscribe(None).await?;
    /// while let Some(Ok(entry)) = entries.recv().await {
    ///     println!("seq {}", entry.seq);
    /// }
    /// println!("finished: {}", entries.is_finished());
    /// # Ok(()) }
    /// ```
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

impl futures_util::Stream for Subscription {
    type Item = Result<TraceEntry, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.finished {
            let Some(note) = futures_util::ready!(this.receiver.poll_recv(cx)) else {
                this.finished = true;
                return Poll::Ready(Some(Err(ClientError::Closed)));
            };
            if let Some(SubscriptionItem { item, ends }) = subscription_item(note) {
                this.finished = ends;
                return Poll::Ready(Some(item));
            }
        }
        Poll::Ready(None)
    }
}

async fn read_replies(stream: Arc<Stream>, shared: Arc<Shared>) {
    let mut frames = FramedRead::new(&*stream, LineCodec::new());
    while let Some(Ok(Frame::Line(line))) = frames.next().await {
        match parse_server_message(&line) {
            Ok(ServerMessage::Response {
                id: Id::Number(n),
                outcome,
            }) => {
                let waiter = n
                    .as_u64()
                    .and_then(|id| lock(&shared.waiters).as_mut()?.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
            Ok(ServerMessage::Notification(note)) => deliver(&shared, note).await,
            // Replies we did not ask for (id null, foreign ids) and malformed lines: nothing
            // waits for them.
            Ok(ServerMessage::Response { .. }) | Err(_) => {}
        }
    }
    // Connection gone: every waiter gets `Closed` when its sender is dropped here, later calls
    // fail at once, and the subscription and notification streams end.
    lock(&shared.waiters).take();
    lock(&shared.subscription).take();
    lock(&shared.notifications).take();
}

/// Hands a notification to the typed subscription when it is about the trace and there is one,
/// else to [`Client::notifications`]. Waits while the receiver's buffer is full.
async fn deliver(shared: &Shared, note: Notification) {
    let is_trace = note.method == m::TRACE_ENTRY || note.method == m::TRACE_SUBSCRIPTION_ENDED;
    if is_trace {
        let ends = note.method == m::TRACE_SUBSCRIPTION_ENDED;
        let slot = {
            let mut slot = lock(&shared.subscription);
            let current = slot.clone();
            if ends {
                // The daemon feeds it no more: a new subscription may start.
                *slot = None;
            }
            current
        };
        match slot {
            Some(Some(sender)) => {
                if sender.send(note).await.is_err() && !ends {
                    // The `Subscription` was dropped: discard the rest of its feed.
                    let mut slot = lock(&shared.subscription);
                    if let Some(live) = slot.as_mut() {
                        *live = None;
                    }
                }
                return;
            }
            // A dropped subscription's feed.
            Some(None) => return,
            None => {}
        }
    }
    let sink = lock(&shared.notifications).clone();
    if let Some(sink) = sink
        && sink.send(note).await.is_err()
    {
        *lock(&shared.notifications) = None;
    }
}
