//! Talk to `atlasbridged` from Rust: the client library for agents.
//!
//! An agent asks the daemon what to do with each prompt it meets (`decision.evaluate`); the
//! daemon decides by its policy, writes the decision to its hash-chained trace, and only then
//! answers. Decisions made elsewhere — a person's reply to a prompt the policy sent to a human —
//! are written to the same trace with `decision.record`.
//!
//! Two clients over the same protocol:
//!
//! - [`Client`] (async, on tokio): calls take `&self`, many may be in flight on one connection,
//!   and a trace subscription is a [`Stream`](futures_util::Stream) ([`Subscription`]).
//! - [`blocking::Client`]: one request at a time, each under a timeout, for scripts, hooks and
//!   the `atlasbridge` command line ([`cli`]); its subscription is an `Iterator`.
//!
//! Both return the typed params and results of [`protocol::methods`], re-exported here, and fail
//! with [`ClientError`]; an error the daemon sent is [`ClientError::Rpc`] with its code.
//!
//! # An agent loop
//!
//! Fail closed: an agent that gets an error instead of a decision must not answer the prompt on
//! its own. The protocol says so outright for -32001 (no active policy) and -32004 (the decision
//! was not stored), which [`ClientError::is_deny`] recognises; the loop below denies on every
//! error.
//!
//! ```no_run
//! use atlasbridge::{Client, ClientError, DecisionAction, EvaluateParams, RecordParams};
//! use atlasbridge::SessionStartParams;
//!
//! # async fn ask_a_person(_prompt: &str) -> String { String::new() }
//! # async fn demo(prompts: Vec<(String, String)>) -> Result<(), ClientError> {
//! let client = Client::connect(&atlasbridge::default_socket()?).await?;
//! client.hello("my-agent/1.0").await?;
//! // Later events of the session inherit these fields.
//! client
//!     .start_session(&SessionStartParams {
//!         session_id: "build-42".into(),
//!         agent_id: Some("my-agent".into()),
//!         tool_id: Some("claude_code".into()),
//!         ..Default::default()
//!     })
//!     .await?;
//! for (prompt_id, text) in prompts {
//!     let event = EvaluateParams {
//!         session_id: "build-42".into(),
//!         prompt_id: prompt_id.clone(),
//!         prompt_type: "yes_no".into(),
//!         prompt_text: text.clone(),
//!         confidence: "high".into(),
//!         ..Default::default()
//!     };
//!     let decision = match client.evaluate(&event).await {
//!         Ok(answer) => answer.decision(),
//!         Err(error) => {
//!             // No decision: deny, whatever the error was.
//!             eprintln!("denied: {error} (code {:?})", error.code());
//!             DecisionAction::Deny
//!         }
//!     };
//!     match decision {
//!         DecisionAction::AutoReply => { /* type the answer's reply_value */ }
//!         DecisionAction::RequireHuman => {
//!             // A person answers; their answer goes to the trace too.
//!             let reply = ask_a_person(&text).await;
//!             client
//!                 .record(&RecordParams {
//!                     session_id: "build-42".into(),
//!                     prompt_id,
//!                     prompt_type: "yes_no".into(),
//!                     action_taken: "human_reply".into(),
//!                     reply_value: Some(reply),
//!                     human_actor: "alice".into(),
//!                     escalation_status: "resolved".into(),
//!                     ..Default::default()
//!                 })
//!                 .await?;
//!         }
//!         DecisionAction::Deny => { /* refuse the prompt */ }
//!         DecisionAction::NotifyOnly => { /* answer nothing; tell someone */ }
//!     }
//! }
//! client.end_session("build-42").await?;
//! # Ok(()) }
//! ```
//!
//! The same loop with [`blocking::Client`] drops the `.await`s and takes `&mut self`.
//! `docs/client-library.md` shows both, and a client in Python.

pub mod blocking;
pub mod cli;
mod error;
mod nonblocking;

pub use atlasbridge_protocol as protocol;
pub use atlasbridge_protocol::methods::{
    DaemonStatus, DecisionAction, EvaluateParams, EvaluateResult, HelloResult, RecordParams,
    RecordResult, SessionInfo, SessionStartParams, SubscribeResult, SubscriptionEnded,
};
pub use atlasbridge_protocol::trace::TraceEntry;
pub use atlasbridge_protocol::{ErrorCode, ErrorObject};
pub use error::ClientError;
pub use nonblocking::{Client, Subscription};

use atlasbridge_protocol::jsonrpc::Notification;
use atlasbridge_protocol::methods as m;

/// The socket the daemon listens on by default: `ATLASBRIDGE_SOCKET`, else the platform default
/// (`$XDG_RUNTIME_DIR/atlasbridge/atlasbridged.sock` on Linux; see `docs/configuration.md`).
///
/// A program with a `--socket` option passes that path to `connect` instead.
///
/// ```no_run
/// let socket = atlasbridge::default_socket()?;
/// println!("the daemon listens on {}", socket.display());
/// # Ok::<(), atlasbridge::ClientError>(())
/// ```
pub fn default_socket() -> Result<std::path::PathBuf, ClientError> {
    atlasbridge_protocol::paths::socket_path(None, &atlasbridge_protocol::paths::ProcessEnvironment)
        .map_err(ClientError::Path)
}

/// What one notification means to a trace subscription: the item to yield, and whether it is
/// the last.
pub(crate) struct SubscriptionItem {
    /// A `trace.entry` (or why its params are not an entry), or the end as an error.
    pub(crate) item: Result<TraceEntry, ClientError>,
    /// `trace.subscription_ended`: nothing follows.
    pub(crate) ends: bool,
}

/// Reads a notification for a trace subscription; `None` for one that is not about it.
pub(crate) fn subscription_item(note: Notification) -> Option<SubscriptionItem> {
    let params = note.params.unwrap_or_default();
    match note.method.as_str() {
        m::TRACE_ENTRY => Some(SubscriptionItem {
            item: serde_json::from_value(params).map_err(|e| {
                ClientError::Protocol(format!("a trace.entry that is not a trace entry: {e}"))
            }),
            ends: false,
        }),
        m::TRACE_SUBSCRIPTION_ENDED => Some(SubscriptionItem {
            item: Err(match serde_json::from_value(params) {
                Ok(ended) => ClientError::SubscriptionEnded(ended),
                Err(e) => {
                    ClientError::Protocol(format!("a malformed trace.subscription_ended: {e}"))
                }
            }),
            ends: true,
        }),
        _ => None,
    }
}
