//! Talk to `atlasbridged` from Rust.
//!
//! Two clients over the same protocol: [`Client`] (async, many requests in flight on one
//! connection, server notifications on a channel) for agents built on tokio, and
//! [`blocking::Client`] (one request at a time, with a timeout) for scripts and the
//! `atlasbridge` command line, which is [`cli`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), atlasbridge::ClientError> {
//! let socket = atlasbridge::default_socket()?;
//! let client = atlasbridge::Client::connect(&socket).await?;
//! let status = client.status().await?;
//! println!("atlasbridged {} (pid {})", status.version, status.pid);
//! # Ok(()) }
//! ```

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
pub use nonblocking::Client;

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
