use std::path::PathBuf;

use atlasbridge_protocol::methods::SubscriptionEnded;
use atlasbridge_protocol::{ErrorCode, ErrorObject};

/// What can go wrong talking to the daemon.
///
/// An agent that asked for a decision and got any error has **no** decision: it must not act on
/// the prompt by itself. [`ClientError::is_deny`] tells apart the errors the protocol itself says
/// to treat as deny; the safe reading of every other one is the same.
///
/// ```
/// use atlasbridge::ClientError;
/// use atlasbridge_protocol::{ErrorCode, ErrorObject};
///
/// let error = ClientError::Rpc(ErrorObject::new(ErrorCode::StorageFailure, "disk full"));
/// assert_eq!(error.code(), Some(ErrorCode::StorageFailure));
/// assert!(error.is_deny());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket: the daemon is not running (or runs elsewhere).
    #[error("atlasbridged is not running (nothing listens on {})", socket.display())]
    NotRunning {
        /// The socket tried.
        socket: PathBuf,
        /// The connect error.
        source: std::io::Error,
    },
    /// The socket exists but may not be used by this user.
    #[error("cannot connect to {}: {source}", socket.display())]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// The connect error.
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("connection to atlasbridged failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon did not answer in time.
    #[error("atlasbridged did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The daemon closed the connection before answering.
    #[error("atlasbridged closed the connection before answering")]
    Closed,
    /// The daemon answered with a JSON-RPC error: its `code`, `message` and `data`, as sent.
    #[error("{}", .0.message)]
    Rpc(ErrorObject),
    /// The daemon sent something that is not valid protocol.
    #[error("unexpected reply from atlasbridged: {0}")]
    Protocol(String),
    /// The socket path could not be worked out.
    #[error(transparent)]
    Path(atlasbridge_protocol::paths::PathError),
    /// The daemon ended a trace subscription (`trace.subscription_ended`): `too_slow` when the
    /// subscriber fell behind, `shutdown` when the daemon stops. Subscribe again from
    /// [`SubscriptionEnded::resume_from`] to continue.
    #[error(
        "atlasbridged ended the subscription ({}){}",
        .0.reason,
        .0.last_seq.map(|seq| format!(" after seq {seq}")).unwrap_or_default()
    )]
    SubscriptionEnded(SubscriptionEnded),
    /// This connection already has a live trace subscription. The daemon cannot end one, so a
    /// second on the same connection would deliver every entry twice: open another connection.
    #[error(
        "this connection already has a trace subscription; open another connection for another one"
    )]
    AlreadySubscribed,
}

impl ClientError {
    /// The JSON-RPC error, when the daemon sent one.
    pub fn rpc(&self) -> Option<&ErrorObject> {
        match self {
            Self::Rpc(e) => Some(e),
            _ => None,
        }
    }

    /// The daemon's error code, when the daemon answered with an error.
    ///
    /// ```
    /// # use atlasbridge::ClientError;
    /// # use atlasbridge_protocol::{ErrorCode, ErrorObject};
    /// let error = ClientError::Rpc(ErrorObject::new(ErrorCode::NoActivePolicy, "no policy"));
    /// assert_eq!(error.code().map(ErrorCode::code), Some(-32001));
    /// assert_eq!(ClientError::Closed.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        self.rpc().map(|e| e.code)
    }

    /// Whether the protocol says to treat this answer as deny: -32001 (no active policy) and
    /// -32004 (the decision was not recorded).
    ///
    /// Every other error also leaves the agent without a decision; an agent that fails closed
    /// denies on those too, and this tells it which ones the daemon meant as a deny.
    pub fn is_deny(&self) -> bool {
        matches!(
            self.code(),
            Some(ErrorCode::NoActivePolicy | ErrorCode::StorageFailure)
        )
    }

    pub(crate) fn from_connect(socket: PathBuf, source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match source.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                Self::NotRunning { socket, source }
            }
            _ => Self::Connect { socket, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_codes_the_protocol_names_are_a_deny() {
        let rpc = |code| ClientError::Rpc(ErrorObject::new(code, "m"));
        assert!(rpc(ErrorCode::NoActivePolicy).is_deny());
        assert!(rpc(ErrorCode::StorageFailure).is_deny());
        assert!(!rpc(ErrorCode::InvalidParams).is_deny());
        assert!(!ClientError::Closed.is_deny());
        assert_eq!(ClientError::Closed.code(), None);
    }

    #[test]
    fn a_subscription_end_says_why_and_where() {
        let ended = ClientError::SubscriptionEnded(SubscriptionEnded {
            reason: "too_slow".into(),
            last_seq: Some(7),
        });
        assert_eq!(
            ended.to_string(),
            "atlasbridged ended the subscription (too_slow) after seq 7"
        );
        let nothing = ClientError::SubscriptionEnded(SubscriptionEnded {
            reason: "shutdown".into(),
            last_seq: None,
        });
        assert_eq!(
            nothing.to_string(),
            "atlasbridged ended the subscription (shutdown)"
        );
    }
}
