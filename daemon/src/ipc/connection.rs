//! One client connection: a reader that turns lines into requests, a task per request, and a
//! writer that sends replies in whatever order they finish.
//!
//! Every queue here is bounded, so a client can only ever cost the daemon a fixed amount of
//! memory:
//! - at most `max_requests_in_flight` requests run at once; when all are busy the reader stops
//!   reading, and the kernel's socket buffer pushes back on the client;
//! - replies wait in a queue of at most [`reply_queue::QUEUE_LINES`] lines and
//!   [`reply_queue::QUEUE_BYTES`] bytes; a client that stops reading fills it, which holds its
//!   in-flight slots, which stops its reader — and after `write_timeout` without progress the
//!   connection is closed. Other clients are never involved.
//!
//! On shutdown the reader stops taking new lines, requests already taken run to completion and
//! their replies are flushed, then the connection is closed. Lines the daemon had not read yet
//! get no reply; the client sees end-of-file and retries against the next daemon.
//!
//! When the client closes its end (or the reader stops for any other reason), the requests
//! already read are answered, then its subscriptions end and the connection closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use atlasbridge_protocol::framing::{Frame, LineCodec, MAX_LINE_BYTES};
use atlasbridge_protocol::jsonrpc::{Incoming, Response, parse_incoming};
use atlasbridge_protocol::methods as m;
use atlasbridge_protocol::{ErrorCode, ErrorObject, Id};
use bytes::Bytes;
use futures_util::StreamExt;
use interprocess::local_socket::tokio::Stream;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::handlers::{self, AfterReply, ConnectionHandle, RequestContext};
use super::peer::Caller;
use super::reply_queue::{self, QueuedLines, ReplyQueue};
use crate::state::Daemon;

/// `trace.read`/`audit.read` requests of one connection running at once. Their replies are up to
/// 768 KiB each, so 64 of them waiting for room in the reply queue would cost about 100 MiB per
/// client; four keep that to a few MiB, and pages are read one after another anyway.
const PAGE_READS_IN_FLIGHT: usize = 4;

/// Writes are gathered up to this many bytes before one `write_all`.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Limits of one connection, read from the settings when it opens.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Close after this long without a request, when nothing is in flight.
    pub idle_timeout: Duration,
    /// Close when a write makes no progress for this long.
    pub write_timeout: Duration,
    /// Requests running at once.
    pub max_in_flight: usize,
}

/// Serves one accepted, authorised connection until it ends.
pub async fn serve(
    stream: Stream,
    daemon: Arc<Daemon>,
    caller: Caller,
    limits: Limits,
    tracker: TaskTracker,
) {
    let stream = Arc::new(stream);
    let closed = CancellationToken::new();
    let (outbound, queue) = reply_queue::reply_queue();
    let writer = tokio::spawn(write_replies(
        Arc::clone(&stream),
        queue,
        limits.write_timeout,
        closed.clone(),
    ));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let page_reads = Arc::new(Semaphore::new(PAGE_READS_IN_FLIGHT));
    let finished = CancellationToken::new();

    let connection = Connection {
        daemon,
        caller,
        limits,
        handle: ConnectionHandle {
            outbound,
            closed,
            finished: finished.clone(),
            subscriptions: Arc::new(AtomicUsize::new(0)),
            tracker,
        },
        in_flight: Arc::clone(&in_flight),
        page_reads,
    };
    connection.read_requests(&stream).await;
    drop(connection);

    // Let every request already taken finish; each one holds a permit until its reply is queued.
    let all = u32::try_from(limits.max_in_flight).unwrap_or(u32::MAX);
    let _drained = in_flight.acquire_many(all).await;
    // Then end the subscriptions: their feeds hold the reply queue open, and a client that has
    // closed the socket is only noticed when a write fails, which on a quiet trace is never.
    finished.cancel();
    // The writer ends once the queue is empty and every sender is gone.
    if let Err(e) = writer.await {
        warn!(error = %e, "connection writer task failed");
    }
}

struct Connection {
    daemon: Arc<Daemon>,
    caller: Caller,
    limits: Limits,
    /// The reply queue, the closed signal (set by the writer when the client can no longer be
    /// written to), the subscription count.
    handle: ConnectionHandle,
    in_flight: Arc<Semaphore>,
    /// Of those, requests that read a page of a chain (large replies).
    page_reads: Arc<Semaphore>,
}

impl Connection {
    async fn read_requests(&self, stream: &Stream) {
        let mut frames = FramedRead::new(stream, LineCodec::new());
        let shutdown = self.daemon.shutdown_token();
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.handle.closed.cancelled() => return,
                next = tokio::time::timeout(self.limits.idle_timeout, frames.next()) => next,
            };
            let frame = match next {
                Err(_idle) => {
                    let busy = self.in_flight.available_permits() < self.limits.max_in_flight
                        || self.handle.subscriptions.load(Ordering::Relaxed) > 0;
                    if !busy {
                        debug!(
                            timeout_s = self.limits.idle_timeout.as_secs(),
                            "closing idle connection"
                        );
                        return;
                    }
                    continue;
                }
                Ok(None) => return,
                Ok(Some(Err(e))) => {
                    debug!(error = %e, "read failed; closing connection");
                    return;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                Frame::Line(line) => {
                    if !self.accept_line(&line).await {
                        return;
                    }
                }
                Frame::TooLong => {
                    let error = ErrorObject::new(
                        ErrorCode::MessageTooLarge,
                        format!("message too large: lines are limited to {MAX_LINE_BYTES} bytes"),
                    );
                    warn!(pid = ?self.caller.pid, "over-long line; closing the connection");
                    self.reply(Response::error(Id::Null, error)).await;
                    return;
                }
                Frame::TruncatedEof { bytes } => {
                    debug!(bytes, "connection ended in the middle of a line");
                    return;
                }
            }
        }
    }

    /// Parses one line and starts its request. Returns false when the connection must end.
    async fn accept_line(&self, line: &[u8]) -> bool {
        let (id, method, params) = match parse_incoming(line) {
            Err(rejection) => {
                return self
                    .reply(Response::error(rejection.id, rejection.error))
                    .await;
            }
            Ok(Incoming::Request(r)) => (Some(r.id), r.method, r.params),
            Ok(Incoming::Notification(n)) => (None, n.method, n.params),
        };
        let permit = tokio::select! {
            biased;
            () = self.daemon.shutdown_token().cancelled() => return false,
            () = self.handle.closed.cancelled() => return false,
            permit = Arc::clone(&self.in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return false,
            },
        };
        let page_read = if method == m::TRACE_READ || method == m::AUDIT_READ {
            tokio::select! {
                biased;
                () = self.daemon.shutdown_token().cancelled() => return false,
                () = self.handle.closed.cancelled() => return false,
                permit = Arc::clone(&self.page_reads).acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_closed) => return false,
                },
            }
        } else {
            None
        };
        let daemon = Arc::clone(&self.daemon);
        let caller = self.caller.clone();
        let handle = self.handle.clone();
        self.handle.tracker.spawn(async move {
            let ctx = RequestContext {
                daemon: &daemon,
                caller: &caller,
                connection: &handle,
            };
            let handled = handlers::dispatch(&ctx, &method, params).await;
            if let Some(id) = id {
                // Encoded, then dropped: only the line waits for room in the queue.
                let line = encode(&Response {
                    id,
                    outcome: handled.outcome,
                });
                enqueue(&handle.outbound, &handle.closed, line).await;
            }
            drop(page_read);
            drop(permit);
            match handled.after {
                Some(AfterReply::Shutdown) => daemon.request_shutdown(),
                None => {}
            }
        });
        true
    }

    async fn reply(&self, response: Response) -> bool {
        enqueue(
            &self.handle.outbound,
            &self.handle.closed,
            encode(&response),
        )
        .await
    }
}

/// Serialises a reply as one line; a reply that cannot be serialised becomes -32603.
fn encode(response: &Response) -> Bytes {
    match atlasbridge_protocol::framing::encode_line(response) {
        Ok(line) => Bytes::from(line),
        Err(e) => {
            warn!(error = %e, "cannot serialise a reply");
            let fallback = Response::error(
                response.id.clone(),
                ErrorObject::new(
                    ErrorCode::InternalError,
                    "internal error: reply not serialisable",
                ),
            );
            Bytes::from(atlasbridge_protocol::framing::encode_line(&fallback).unwrap_or_default())
        }
    }
}

/// Queues a line for the writer; false once the connection is closed.
async fn enqueue(outbound: &ReplyQueue, closed: &CancellationToken, line: Bytes) -> bool {
    tokio::select! {
        biased;
        () = closed.cancelled() => false,
        sent = outbound.send(line) => sent.is_ok(),
    }
}

async fn write_replies(
    stream: Arc<Stream>,
    mut queue: QueuedLines,
    write_timeout: Duration,
    closed: CancellationToken,
) {
    let mut writer = &*stream;
    let mut batch = Vec::with_capacity(8 * 1024);
    let mut taken: Vec<Bytes> = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        taken.clear();
        taken.push(first);
        while batch.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Some(more) => {
                    batch.extend_from_slice(&more);
                    taken.push(more);
                }
                None => break,
            }
        }
        match tokio::time::timeout(write_timeout, writer.write_all(&batch)).await {
            Ok(Ok(())) => queue.written(&taken),
            Ok(Err(e)) => {
                debug!(error = %e, "write failed; closing connection");
                closed.cancel();
                return;
            }
            Err(_) => {
                warn!(
                    timeout_s = write_timeout.as_secs(),
                    "client stopped reading; closing connection"
                );
                closed.cancel();
                return;
            }
        }
    }
    let _ = tokio::time::timeout(write_timeout, writer.shutdown()).await;
    closed.cancel();
}
