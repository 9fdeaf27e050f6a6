//! The peer's listener: drops connections while refusing them, and hands out connections that
//! die when the peer is stopped, so a stop looks like a killed cloud (HTTP keep-alive and
//! upgraded WebSocket connections included).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Refusal, Shared};

/// Accepts on 127.0.0.1 for the peer's HTTP server.
pub(super) struct PeerListener {
    inner: TcpListener,
    shared: Arc<Shared>,
    kill: watch::Receiver<bool>,
}

impl PeerListener {
    pub(super) fn new(
        inner: TcpListener,
        shared: Arc<Shared>,
        kill: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner,
            shared,
            kill,
        }
    }
}

impl axum::serve::Listener for PeerListener {
    type Io = KillableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    let dropped = self.shared.update(|s| {
                        let drop = s.faults.refuse == Some(Refusal::DropConnections);
                        if drop {
                            s.dropped_connections.push(Instant::now());
                        }
                        drop
                    });
                    if dropped {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    return (KillableIo::new(stream, self.kill.clone()), address);
                }
                // Out of descriptors and the like: wait a little, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP connection that fails every read and write once the peer is stopped, so whoever holds
/// it (hyper, or a WebSocket task) lets go and the socket closes.
pub(super) struct KillableIo {
    inner: TcpStream,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
    dead: bool,
}

impl KillableIo {
    fn new(inner: TcpStream, mut kill: watch::Receiver<bool>) -> Self {
        Self {
            inner,
            killed: Box::pin(async move {
                // A dropped sender means the peer is gone: dead as well.
                let _ = kill.wait_for(|killed| *killed).await;
            }),
            dead: false,
        }
    }

    /// Whether the peer was stopped; registers the task to be woken when it is.
    fn is_dead(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        self.dead
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "cloud peer stopped")
}

impl AsyncRead for KillableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(stopped()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(stopped()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_dead(cx) {
            return Poll::Ready(Err(stopped()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_dead(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
