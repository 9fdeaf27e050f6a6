//! A blocking client: one request at a time, each under a timeout. Made for scripts and the
//! command line, where starting an async runtime would cost more than the request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atlasbridge_protocol::features::{EditionInfo, FeatureList};
use atlasbridge_protocol::framing::{Frame, LineReader, encode_line};
use atlasbridge_protocol::jsonrpc::{
    Notification, OutgoingRequest, ServerMessage, parse_server_message,
};
use atlasbridge_protocol::methods::{
    self as m, DaemonStatus, HelloParams, HelloResult, ShutdownResult,
};
use atlasbridge_protocol::{Id, PROTOCOL_VERSION};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ClientError;

/// How long a call waits for its answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(unix)]
type Transport = std::os::unix::net::UnixStream;
#[cfg(not(unix))]
type Transport = interprocess::local_socket::Stream;

/// A connection to the daemon.
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
    /// Connects to the daemon's socket.
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
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sets how long each call waits.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.timeout = timeout;
        #[cfg(unix)]
        {
            self.writer.set_read_timeout(Some(timeout))?;
            self.writer.set_write_timeout(Some(timeout))?;
        }
        Ok(())
    }

    /// Sends one request and waits for its answer.
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

    /// Waits for the next server notification (after a subscription).
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

    /// `hello` with this crate's protocol version.
    pub fn hello(&mut self, client_name: &str) -> Result<HelloResult, ClientError> {
        let params = HelloParams {
            protocol: PROTOCOL_VERSION,
            client: Some(client_name.to_owned()),
        };
        self.call(m::HELLO, Some(params))
    }

    /// `daemon.status`.
    pub fn status(&mut self) -> Result<DaemonStatus, ClientError> {
        self.call(m::DAEMON_STATUS, None::<()>)
    }

    /// `edition.get`.
    pub fn edition(&mut self) -> Result<EditionInfo, ClientError> {
        self.call(m::EDITION_GET, None::<()>)
    }

    /// `features.list`.
    pub fn features(&mut self) -> Result<FeatureList, ClientError> {
        self.call(m::FEATURES_LIST, None::<()>)
    }

    /// `daemon.shutdown`: the daemon answers, then drains and exits.
    pub fn shutdown(&mut self) -> Result<ShutdownResult, ClientError> {
        self.call(m::DAEMON_SHUTDOWN, None::<()>)
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
