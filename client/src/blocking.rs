//! A blocking client: one request at a time, each under a timeout. Made for scripts, hooks and
//! the command line, where starting an async runtime would cost more than the request.
//!
//! ```no_run
//! use atlasbridge::blocking::Client;
//! use atlasbridge::{DecisionAction, EvaluateParams};
//!
//! let mut client = Client::connect(&atlasbridge::default_socket()?)?;
//! let answer = client.evaluate(&EvaluateParams {
//!     session_id: "build-42".into(),
//!     prompt_id: "p-1".into(),
//!     prompt_type: "yes_no".into(),
//!     prompt_text: "Continue? [y/n]".into(),
//!     confidence: "high".into(),
//!     ..Default::default()
//! })?;
//! if answer.decision() == DecisionAction::AutoReply {
//!     println!("answer {:?}", answer.reply_value);
//! }
//! # Ok::<(), atlasbridge::ClientError>(())
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atlasbridge_protocol::features::{EditionInfo, FeatureList};
use atlasbridge_protocol::framing::{Frame, LineReader, encode_line};
use atlasbridge_protocol::jsonrpc::{
    Notification, OutgoingRequest, ServerMessage, parse_server_message,
};
use atlasbridge_protocol::methods::{
    self as m, DaemonStatus, EvaluateParams, EvaluateResult, HelloParams, HelloResult,
    RecordParams, RecordResult, SessionEndParams, SessionInfo, SessionStartParams, ShutdownResult,
    SubscribeParams, SubscribeResult,
};
use atlasbridge_protocol::trace::TraceEntry;
use atlasbridge_protocol::{Id, PROTOCOL_VERSION};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{ClientError, SubscriptionItem, subscription_item};

/// How long a call waits for its answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(unix)]
type Transport = std::os::unix::net::UnixStream;
#[cfg(not(unix))]
type Transport = interprocess::local_socket::Stream;

/// A connection to the daemon. Calls take `&mut self`: one request at a time, each waiting at
/// most the timeout ([`DEFAULT_TIMEOUT`] unless [`set_timeout`](Self::set_timeout) says
/// otherwise).
///
/// ```no_run
/// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
/// client.set_timeout(std::time::Duration::from_secs(5))?;
/// println!("atlasbridged {}", client.status()?.version);
/// # Ok::<(), atlasbridge::ClientError>(())
/// ```
#[derive(Debug)]
pub struct Client {
    writer: Transport,
    reader: LineReader<Transport>,
    socket: PathBuf,
    next_id: u64,
    timeout: Duration,
    /// Notifications that arrived while waiting for a response.
    pending_notifications: std::collections::VecDeque<Notification>,
}

impl Client {
    /// Connects to the daemon's socket. Nothing listening there is
    /// [`ClientError::NotRunning`].
    ///
    /// ```no_run
    /// use atlasbridge::{ClientError, blocking::Client};
    ///
    /// match Client::connect(std::path::Path::new("/tmp/atlasbridged.sock")) {
    ///     Ok(_) => println!("connected"),
    ///     Err(e @ ClientError::NotRunning { .. }) => println!("{e}: start atlasbridged"),
    ///     Err(e) => println!("{e}"),
    /// }
    /// ```
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let (writer, reader) =
            open(socket).map_err(|e| ClientError::from_connect(socket.to_path_buf(), e))?;
        let mut client = Self {
            writer,
            reader: LineReader::new(reader),
            socket: socket.to_path_buf(),
            next_id: 1,
            timeout: DEFAULT_TIMEOUT,
            pending_notifications: Default::default(),
        };
        client.set_timeout(DEFAULT_TIMEOUT)?;
        Ok(client)
    }

    /// The socket this client is connected to.
    ///
    /// ```no_run
    /// let client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// println!("connected to {}", client.socket().display());
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sets how long each call waits. A call that times out is [`ClientError::Timeout`]; its
    /// late answer is skipped by the next call.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.timeout = timeout;
        #[cfg(unix)]
        {
            self.writer.set_read_timeout(Some(timeout))?;
            self.writer.set_write_timeout(Some(timeout))?;
        }
        Ok(())
    }

    /// How long a read waits: `None` waits as long as it takes (a subscription's feed).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        if let Some(timeout) = timeout {
            self.timeout = timeout;
        }
        #[cfg(unix)]
        self.writer.set_read_timeout(timeout)?;
        Ok(())
    }

    /// Sends one request and waits for its answer, read as `R`. For methods without a typed
    /// method here; `params` of `None` sends none.
    ///
    /// ```no_run
    /// use atlasbridge::protocol::methods::{self as m, HeadResult};
    ///
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let head: HeadResult = client.call(m::TRACE_HEAD, None::<()>)?;
    /// println!("{} entries", head.entries);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Option<P>,
    ) -> Result<R, ClientError> {
        let value = self.call_value(method, params)?;
        serde_json::from_value(value).map_err(|e| {
            ClientError::Protocol(format!("{method} returned an unexpected shape: {e}"))
        })
    }

    /// Sends one request and returns its raw result.
    ///
    /// ```no_run
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let pins = client.call_value("policy.pins", None::<()>)?;
    /// println!("{pins}");
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn call_value<P: Serialize>(
        &mut self,
        method: &str,
        params: Option<P>,
    ) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = encode_line(&OutgoingRequest::new(Id::from(id), method, params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Err(e) = self.writer.write_all(&line) {
            let error = self.io_error(e);
            // A daemon that refuses a connection (another uid, too many connections) sends one
            // error line and closes, possibly before our request was written: read why.
            if matches!(error, ClientError::Closed)
                && let Ok(ServerMessage::Response {
                    outcome: Err(refusal),
                    ..
                }) = self.read_message()
            {
                return Err(ClientError::Rpc(refusal));
            }
            return Err(error);
        }
        loop {
            match self.read_message()? {
                ServerMessage::Response {
                    id: Id::Number(n),
                    outcome,
                } if n.as_u64() == Some(id) => {
                    return outcome.map_err(ClientError::Rpc);
                }
                // A reply to an unreadable line carries id null: it is ours, since we wait for
                // one request at a time.
                ServerMessage::Response {
                    id: Id::Null,
                    outcome: Err(e),
                } => return Err(ClientError::Rpc(e)),
                ServerMessage::Response { .. } => {}
                ServerMessage::Notification(n) => self.pending_notifications.push_back(n),
            }
        }
    }

    /// Waits for the next server notification (after a `trace.subscribe` sent with
    /// [`call`](Self::call); [`subscribe`](Self::subscribe) reads them for you).
    ///
    /// ```no_run
    /// use atlasbridge::protocol::methods::{self as m, SubscribeParams, SubscribeResult};
    ///
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let _: SubscribeResult = client.call(m::TRACE_SUBSCRIBE, Some(SubscribeParams::default()))?;
    /// let note = client.next_notification()?;
    /// println!("{}: {:?}", note.method, note.params);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn next_notification(&mut self) -> Result<Notification, ClientError> {
        if let Some(n) = self.pending_notifications.pop_front() {
            return Ok(n);
        }
        loop {
            if let ServerMessage::Notification(n) = self.read_message()? {
                return Ok(n);
            }
        }
    }

    fn read_message(&mut self) -> Result<ServerMessage, ClientError> {
        match self.reader.read_frame() {
            Ok(Some(Frame::Line(line))) => {
                parse_server_message(&line).map_err(|e| ClientError::Protocol(e.to_string()))
            }
            Ok(Some(Frame::TooLong)) => {
                Err(ClientError::Protocol("reply over the size limit".into()))
            }
            Ok(Some(Frame::TruncatedEof { .. }) | None) => Err(ClientError::Closed),
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn io_error(&self, e: std::io::Error) -> ClientError {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ClientError::Timeout(self.timeout)
            }
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                ClientError::Closed
            }
            _ => ClientError::Io(e),
        }
    }

    /// `hello` with this crate's protocol version: the daemon's version, edition, flags and this
    /// connection's role. A daemon that does not speak it answers -32010.
    ///
    /// ```no_run
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let hello = client.hello("my-script/1.0")?;
    /// println!("{} ({}), role {}", hello.daemon, hello.edition, hello.role);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn hello(&mut self, client_name: &str) -> Result<HelloResult, ClientError> {
        let params = HelloParams {
            protocol: PROTOCOL_VERSION,
            client: Some(client_name.to_owned()),
        };
        self.call(m::HELLO, Some(params))
    }

    /// `daemon.status`: the daemon's version, health, trace head, sessions, ….
    ///
    /// ```no_run
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let status = client.status()?;
    /// println!("atlasbridged {} (pid {}), {}", status.version, status.pid, status.health);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn status(&mut self) -> Result<DaemonStatus, ClientError> {
        self.call(m::DAEMON_STATUS, None::<()>)
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
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let event = EvaluateParams {
    ///     session_id: "build-42".into(),
    ///     prompt_id: "p-1".into(),
    ///     prompt_type: "yes_no".into(),
    ///     prompt_text: "Delete the branch? [y/n]".into(),
    ///     confidence: "high".into(),
    ///     ..Default::default()
    /// };
    /// let action = client.evaluate(&event).map_or(DecisionAction::Deny, |a| a.decision());
    /// println!("{action}");
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn evaluate(&mut self, event: &EvaluateParams) -> Result<EvaluateResult, ClientError> {
        self.call(m::DECISION_EVALUATE, Some(event))
    }

    /// `decision.record`: writes a decision made elsewhere (a person's answer, another tool) to
    /// the trace; the answer comes once it is durable.
    ///
    /// ```no_run
    /// use atlasbridge::RecordParams;
    ///
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let recorded = client.record(&RecordParams {
    ///     session_id: "build-42".into(),
    ///     prompt_id: "p-1".into(),
    ///     prompt_type: "yes_no".into(),
    ///     action_taken: "human_reply".into(),
    ///     reply_value: Some("n".into()),
    ///     human_actor: "alice".into(),
    ///     ..Default::default()
    /// })?;
    /// println!("recorded at seq {:?}", recorded.seq);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn record(&mut self, decision: &RecordParams) -> Result<RecordResult, ClientError> {
        self.call(m::DECISION_RECORD, Some(decision))
    }

    /// `session.start`: registers a session; its later events inherit the fields given here
    /// (their own values win). Starting a live session again replaces the fields given.
    ///
    /// ```no_run
    /// use atlasbridge::SessionStartParams;
    ///
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// client.start_session(&SessionStartParams {
    ///     session_id: "build-42".into(),
    ///     agent_id: Some("my-agent".into()),
    ///     ..Default::default()
    /// })?;
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn start_session(
        &mut self,
        session: &SessionStartParams,
    ) -> Result<SessionInfo, ClientError> {
        self.call(m::SESSION_START, Some(session))
    }

    /// `session.end`: forgets a live session and returns it as it was; a session that is not
    /// live is -32602.
    ///
    /// ```no_run
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let ended = client.end_session("build-42")?;
    /// println!("{} decisions", ended.decisions);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn end_session(&mut self, session_id: &str) -> Result<SessionInfo, ClientError> {
        let params = SessionEndParams {
            session_id: session_id.to_owned(),
        };
        self.call(m::SESSION_END, Some(params))
    }

    /// `trace.subscribe`: turns this connection into a feed of trace entries, replayed from
    /// `from_seq` first when given, else from the next entry written.
    ///
    /// The daemon cannot end a subscription, so the connection is the subscription's from now
    /// on: this takes the client. Open another connection for calls.
    ///
    /// ```no_run
    /// let client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// for entry in client.subscribe(Some(0))? {
    ///     match entry {
    ///         Ok(entry) => println!("{} {} {}", entry.seq, entry.session_id, entry.action_taken),
    ///         // `SubscriptionEnded` (too slow, or the daemon stops), or the connection failed.
    ///         Err(e) => eprintln!("{e}"),
    ///     }
    /// }
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn subscribe(mut self, from_seq: Option<u64>) -> Result<Subscription, ClientError> {
        let started: SubscribeResult =
            self.call(m::TRACE_SUBSCRIBE, Some(SubscribeParams { from_seq }))?;
        // Entries come when agents decide, which may be a long while.
        self.set_read_timeout(None)?;
        Ok(Subscription {
            client: self,
            started,
            finished: false,
        })
    }

    /// `edition.get`: the edition and where it was set.
    ///
    /// ```no_run
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// println!("{:?}", client.edition()?);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn edition(&mut self) -> Result<EditionInfo, ClientError> {
        self.call(m::EDITION_GET, None::<()>)
    }

    /// `features.list`: every feature flag, whether it is on, and why.
    ///
    /// ```no_run
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// println!("{:?}", client.features()?);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn features(&mut self) -> Result<FeatureList, ClientError> {
        self.call(m::FEATURES_LIST, None::<()>)
    }

    /// `daemon.shutdown`: the daemon answers, then drains and exits (owner only).
    ///
    /// ```no_run
    /// let mut client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// assert!(client.shutdown()?.shutting_down);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn shutdown(&mut self) -> Result<ShutdownResult, ClientError> {
        self.call(m::DAEMON_SHUTDOWN, None::<()>)
    }
}

/// A trace subscription over a blocking connection ([`Client::subscribe`]): an iterator of
/// trace entries, in seq order, as stored.
///
/// Each `next` waits for the next entry as long as it takes, unless
/// [`set_timeout`](Self::set_timeout) says otherwise. When the daemon ends the subscription
/// (`trace.subscription_ended`), the iterator yields [`ClientError::SubscriptionEnded`], then
/// ends; a closed connection yields [`ClientError::Closed`], then ends. An entry that cannot be
/// read yields [`ClientError::Protocol`] and the feed goes on.
///
/// ```no_run
/// use atlasbridge::ClientError;
///
/// let client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
/// let mut entries = client.subscribe(None)?;
/// entries.set_timeout(Some(std::time::Duration::from_secs(60)))?;
/// while let Some(entry) = entries.next() {
///     match entry {
///         Ok(entry) => println!("{} {}", entry.seq, entry.action_taken),
///         Err(ClientError::Timeout(_)) => println!("a quiet minute"),
///         Err(ClientError::SubscriptionEnded(ended)) => {
///             println!("ended ({}); resume from {:?}", ended.reason, ended.resume_from());
///         }
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok::<(), atlasbridge::ClientError>(())
/// ```
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    started: SubscribeResult,
    finished: bool,
}

impl Subscription {
    /// The daemon's answer to `trace.subscribe`: the first seq it sends, and the head when the
    /// subscription started.
    ///
    /// ```no_run
    /// let client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let entries = client.subscribe(None)?;
    /// println!("from seq {}", entries.started().from_seq);
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn started(&self) -> &SubscribeResult {
        &self.started
    }

    /// How long each `next` waits for an entry before it yields [`ClientError::Timeout`] (the
    /// subscription goes on); `None` (the default) waits as long as it takes.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.client.set_read_timeout(timeout)
    }

    /// Whether the feed has ended (the daemon ended it, or the connection failed); `next` then
    /// returns `None`.
    ///
    /// ```no_run
    /// let client = atlasbridge::blocking::Client::connect(&atlasbridge::default_socket()?)?;
    /// let mut entries = client.subscribe(None)?;
    /// let last = entries.by_ref().last();
    /// assert!(entries.is_finished());
    /// println!("{last:?}");
    /// # Ok::<(), atlasbridge::ClientError>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

impl Iterator for Subscription {
    type Item = Result<TraceEntry, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            let note = match self.client.next_notification() {
                Ok(note) => note,
                Err(e @ ClientError::Timeout(_)) => return Some(Err(e)),
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            };
            if let Some(SubscriptionItem { item, ends }) = subscription_item(note) {
                self.finished = ends;
                return Some(item);
            }
        }
        None
    }
}

#[cfg(unix)]
fn open(socket: &Path) -> std::io::Result<(Transport, Transport)> {
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    let reader = stream.try_clone()?;
    Ok((stream, reader))
}

#[cfg(not(unix))]
fn open(socket: &Path) -> std::io::Result<(Transport, Transport)> {
    use interprocess::TryClone;
    use interprocess::local_socket::GenericFilePath;
    use interprocess::local_socket::prelude::*;
    let stream = Transport::connect(socket.to_fs_name::<GenericFilePath>()?)?;
    let reader = stream.try_clone()?;
    Ok((stream, reader))
}
