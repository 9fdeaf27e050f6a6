use std::path::PathBuf;

use atlasbridge_protocol::ErrorObject;

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
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
    /// The daemon answered with an error.
    #[error("{}", .0.message)]
    Rpc(ErrorObject),
    /// The daemon sent something that is not valid protocol.
    #[error("unexpected reply from atlasbridged: {0}")]
    Protocol(String),
    /// The socket path could not be worked out.
    #[error(transparent)]
    Path(atlasbridge_protocol::paths::PathError),
}

impl ClientError {
    /// The JSON-RPC error, when the daemon sent one.
    pub fn rpc(&self) -> Option<&ErrorObject> {
        match self {
            Self::Rpc(e) => Some(e),
            _ => None,
        }
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
