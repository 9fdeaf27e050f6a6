//! The async client: one connection, many requests in flight, answers matched by id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use atlasbridge_protocol::features::{EditionInfo, FeatureList};
use atlasbridge_protocol::framing::{Frame, LineCodec, MAX_LINE_BYTES, encode_line};
use atlasbridge_protocol::jsonrpc::{
    Notification, OutgoingRequest, ServerMessage, parse_server_message,
};
use atlasbridge_protocol::methods::{self as m, DaemonStatus, HelloParams, HelloResult};
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

use crate::ClientError;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, ErrorObject>>>>>;
type NotificationSink = Arc<Mutex<Option<mpsc::Sender<Notification>>>>;

/// Notifications buffered for a subscriber before the reader waits for it.
const NOTIFICATION_BUFFER: usize = 1024;

/// An async connection to the daemon. Calls take `&self`, so one client can be shared by many
/// tasks (wrap it in an `Arc`); each call waits only for its own answer.
#[derive(Debug)]
pub struct Client {
    stream: Arc<Stream>,
    write_lock: tokio::sync::Mutex<()>,
    waiters: Waiters,
    notifications: NotificationSink,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    socket: PathBuf,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects to the daemon's socket.
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let name = socket
            .to_fs_name::<GenericFilePath>()
            .map_err(|e| ClientError::from_connect(socket.to_path_buf(), e))?;
        let stream = Stream::connect(name)
            .await
            .map_err(|e| ClientError::from_connect(socket.to_path_buf(), e))?;
        let stream = Arc::new(stream);
        let waiters: Waiters = Arc::default();
        let notifications: NotificationSink = Arc::default();
        let reader = tokio::spawn(read_replies(
            Arc::clone(&stream),
            Arc::clone(&waiters),
            Arc::clone(&notifications),
        ));
        Ok(Self {
            stream,
            write_lock: tokio::sync::Mutex::new(()),
            waiters,
            notifications,
            next_id: AtomicU64::new(1),
            reader,
            socket: socket.to_path_buf(),
        })
    }

    /// The socket this client is connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Server notifications (e.g. `trace.entry` after `trace.subscribe`) from now on. Until this
    /// is called, notifications are discarded; once called, read them, or the connection stalls.
    pub fn notifications(&self) -> mpsc::Receiver<Notification> {
        let (sender, receiver) = mpsc::channel(NOTIFICATION_BUFFER);
        *self.notifications.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        receiver
    }

    /// Sends one request and waits for its answer.
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
    pub async fn call_value<P: Serialize>(
        &self,
        method: &str,
        params: Option<P>,
    ) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = encode_line(&OutgoingRequest::new(Id::from(id), method, params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if line.len() > MAX_LINE_BYTES {
            return Err(ClientError::Protocol(format!(
                "request of {} bytes exceeds the {MAX_LINE_BYTES}-byte limit",
                line.len()
            )));
        }
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, sender);
        let written = {
            let _guard = self.write_lock.lock().await;
            let mut writer = &*self.stream;
            writer.write_all(&line).await
        };
        if let Err(e) = written {
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(ClientError::Io(e));
        }
        match receiver.await {
            Ok(outcome) => outcome.map_err(ClientError::Rpc),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// `hello` with this crate's protocol version.
    pub async fn hello(&self, client_name: &str) -> Result<HelloResult, ClientError> {
        let params = HelloParams {
            protocol: PROTOCOL_VERSION,
            client: Some(client_name.to_owned()),
        };
        self.call(m::HELLO, Some(params)).await
    }

    /// `daemon.status`.
    pub async fn status(&self) -> Result<DaemonStatus, ClientError> {
        self.call(m::DAEMON_STATUS, None::<()>).await
    }

    /// `edition.get`.
    pub async fn edition(&self) -> Result<EditionInfo, ClientError> {
        self.call(m::EDITION_GET, None::<()>).await
    }

    /// `features.list`.
    pub async fn features(&self) -> Result<FeatureList, ClientError> {
        self.call(m::FEATURES_LIST, None::<()>).await
    }
}

async fn read_replies(stream: Arc<Stream>, waiters: Waiters, notifications: NotificationSink) {
    let mut frames = FramedRead::new(&*stream, LineCodec::new());
    while let Some(Ok(Frame::Line(line))) = frames.next().await {
        match parse_server_message(&line) {
            Ok(ServerMessage::Response {
                id: Id::Number(n),
                outcome,
            }) => {
                let waiter = n.as_u64().and_then(|id| {
                    waiters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id)
                });
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
            Ok(ServerMessage::Notification(note)) => {
                let sink = notifications
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(sink) = sink
                    && sink.send(note).await.is_err()
                {
                    *notifications.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
            // Replies we did not ask for (id null, foreign ids) and malformed lines: nothing
            // waits for them.
            Ok(ServerMessage::Response { .. }) | Err(_) => {}
        }
    }
    // Connection gone: every waiter gets `Closed` when its sender is dropped here.
    waiters.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
