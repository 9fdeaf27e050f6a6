//! The lines waiting to be written to one client, bounded twice: in count (the channel, of
//! [`QUEUE_LINES`]) and in bytes (a budget of [`QUEUE_BYTES`]).
//!
//! A count alone does not bound memory: 256 queued `trace.read` replies of 1,000 entries each
//! are some 200 MiB for one client that stops reading. The byte budget is a semaphore of KiB:
//! a line takes its size in permits before it is queued and the writer gives them back once the
//! line is written. A line larger than the whole budget takes all of it, so it still goes out,
//! alone. Waiting for room holds the request's in-flight slot, which is what stops the reader.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

/// Lines queued at most.
pub const QUEUE_LINES: usize = 256;
/// Bytes queued at most (beyond one line larger than this, which goes alone).
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;

const BUDGET_KIB: u32 = (QUEUE_BYTES / 1024) as u32;

/// The sending side, shared by the request tasks and subscription feeds of one connection.
#[derive(Debug, Clone)]
pub struct ReplyQueue {
    lines: mpsc::Sender<Bytes>,
    budget: Arc<Semaphore>,
}

/// The writer's side: lines in order, and the budget to give back.
#[derive(Debug)]
pub struct QueuedLines {
    lines: mpsc::Receiver<Bytes>,
    budget: Arc<Semaphore>,
}

/// The writer is gone: the connection is closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A new queue for one connection.
pub fn reply_queue() -> (ReplyQueue, QueuedLines) {
    let (lines, receiver) = mpsc::channel(QUEUE_LINES);
    let budget = Arc::new(Semaphore::new(BUDGET_KIB as usize));
    (
        ReplyQueue {
            lines,
            budget: Arc::clone(&budget),
        },
        QueuedLines {
            lines: receiver,
            budget,
        },
    )
}

/// KiB a line takes of the budget: at least 1, at most all of it.
fn cost(line: &[u8]) -> u32 {
    u32::try_from(line.len().div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, BUDGET_KIB)
}

impl ReplyQueue {
    /// Waits until there is room for `line`, then queues it.
    pub async fn send(&self, line: Bytes) -> Result<(), Closed> {
        let cost = cost(&line);
        self.budget
            .acquire_many(cost)
            .await
            .map_err(|_| Closed)?
            .forget();
        self.lines.send(line).await.map_err(|_| {
            self.budget.add_permits(cost as usize);
            Closed
        })
    }

    /// Queues `line` only if there is room now.
    pub fn try_send(&self, line: Bytes) -> bool {
        let cost = cost(&line);
        let Ok(permit) = self.budget.try_acquire_many(cost) else {
            return false;
        };
        permit.forget();
        if self.lines.try_send(line).is_ok() {
            true
        } else {
            self.budget.add_permits(cost as usize);
            false
        }
    }
}

impl QueuedLines {
    /// The next line, waiting for one; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.lines.recv().await
    }

    /// The next line if one is queued now.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.lines.try_recv().ok()
    }

    /// Gives back the budget of lines that were written.
    pub fn written<'a>(&self, lines: impl IntoIterator<Item = &'a Bytes>) {
        let total: usize = lines.into_iter().map(|line| cost(line) as usize).sum();
        self.budget.add_permits(total);
    }
}

impl Drop for QueuedLines {
    /// Senders still waiting for room learn that there will be none.
    fn drop(&mut self) {
        self.budget.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn bytes_not_only_lines_bound_the_queue() {
        let (queue, mut lines) = reply_queue();
        let big = Bytes::from(vec![b'x'; 1024 * 1024]);
        for _ in 0..4 {
            assert!(queue.try_send(big.clone()));
        }
        // 4 MiB queued: a fifth big line, and even a small one, waits for the writer.
        assert!(!queue.try_send(big.clone()));
        assert!(!queue.try_send(Bytes::from_static(b"{}\n")));
        let first = lines.recv().await.unwrap();
        lines.written([&first]);
        assert!(queue.try_send(big.clone()));
    }

    #[tokio::test]
    async fn a_line_larger_than_the_budget_goes_alone() {
        let (queue, mut lines) = reply_queue();
        let huge = Bytes::from(vec![b'x'; QUEUE_BYTES + 10]);
        queue.send(huge.clone()).await.unwrap();
        assert!(!queue.try_send(Bytes::from_static(b"{}\n")));
        let line = lines.recv().await.unwrap();
        assert_eq!(line.len(), QUEUE_BYTES + 10);
        lines.written([&line]);
        assert!(queue.try_send(Bytes::from_static(b"{}\n")));
    }

    #[tokio::test]
    async fn a_queue_without_a_writer_is_closed_even_for_a_sender_waiting_for_room() {
        let (queue, lines) = reply_queue();
        assert!(queue.try_send(Bytes::from(vec![b'x'; QUEUE_BYTES])));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.send(Bytes::from_static(b"{}\n")).await }
        });
        tokio::task::yield_now().await;
        drop(lines);
        assert_eq!(waiting.await.unwrap(), Err(Closed));
        assert_eq!(queue.send(Bytes::from_static(b"{}\n")).await, Err(Closed));
    }
}
