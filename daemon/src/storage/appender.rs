//! One thread per journal owns its file; appenders hand it records and await durability.
//!
//! Group commit: the thread takes every record waiting in its queue, stages them all, writes
//! them with one `write` and makes them durable with one `fdatasync`. Records that arrive while
//! that sync runs queue up and share the next one, so the number of syncs per second stays
//! bounded by the disk, not by the number of clients. In `batch` mode the thread replies before
//! syncing and syncs at most every interval; in `none` mode it never syncs on its own.
//!
//! A failed write or sync fails every record of its batch (their senders hear `Storage`, which
//! the socket layer turns into -32004), the journal is rolled back to its last durable state,
//! and the failure is reported in the shared [`StorageHealth`] until a later batch succeeds.
//! The queue is bounded by a semaphore, so a burst of appenders waits instead of growing memory.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{error, info, warn};

use crate::config::Durability;

/// Records waiting for the writer thread, per journal.
pub const QUEUE_CAPACITY: usize = 65_536;

/// Records staged into one write.
const MAX_BATCH: usize = 4096;

/// A file (or set of files) that records are appended to.
pub trait Journal: Send + 'static {
    /// What an appender submits.
    type Record: Send + 'static;
    /// What an appender gets back once its record is stored.
    type Receipt: Send + 'static;

    /// Called once per batch before staging: the place to rotate to a new file.
    fn prepare(&mut self) -> Result<(), StorageError>;
    /// Encodes one record into the pending batch, advancing in-memory state.
    fn stage(&mut self, record: Self::Record) -> Result<Self::Receipt, StageError>;
    /// Writes the pending batch, and syncs it when `sync` is set.
    fn commit(&mut self, sync: bool) -> Result<(), StorageError>;
    /// Undoes everything staged since the last successful commit (file and memory).
    fn rollback(&mut self) -> Result<(), StorageError>;
    /// Makes everything committed durable.
    fn sync(&mut self) -> Result<(), StorageError>;
}

/// Why one record was not staged (the rest of the batch is unaffected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// The journal refuses appends (a broken chain awaiting repair).
    #[error("{0}")]
    Refused(String),
    /// The record cannot be stored as given.
    #[error("{0}")]
    Invalid(String),
}

/// The disk failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

impl StorageError {
    /// An I/O error with what was being done.
    pub fn io(what: &str, path: &std::path::Path, error: &std::io::Error) -> Self {
        Self(format!("{what} {}: {error}", path.display()))
    }
}

/// Why an append failed; the record was **not** stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Writing or syncing failed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The journal refuses appends.
    #[error("{0}")]
    Refused(String),
    /// The record itself is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The daemon is stopping.
    #[error("the trace writer has stopped")]
    Stopped,
}

/// Shared view of a journal's health.
#[derive(Debug, Default)]
pub struct StorageHealth {
    last_error: Mutex<Option<String>>,
}

impl StorageHealth {
    /// The error of the last failed batch, while no batch has succeeded since.
    pub fn degraded(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }
}

type Reply<R> = oneshot::Sender<Result<R, AppendError>>;
type Task<J> = Box<dyn FnOnce(&mut J) + Send>;

enum Job<J: Journal> {
    Append {
        record: J::Record,
        reply: Reply<J::Receipt>,
        _permit: OwnedSemaphorePermit,
    },
    Run(Task<J>),
    /// Finish what is queued before it, sync, and exit (the daemon is stopping).
    Stop(oneshot::Sender<()>),
}

/// Handle to a journal's writer thread. Cloning it is cheap; the thread stops once every
/// handle is dropped, after a final sync.
pub struct Appender<J: Journal> {
    jobs: mpsc::Sender<Job<J>>,
    permits: Arc<Semaphore>,
    health: Arc<StorageHealth>,
}

impl<J: Journal> Clone for Appender<J> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            permits: Arc::clone(&self.permits),
            health: Arc::clone(&self.health),
        }
    }
}

impl<J: Journal> std::fmt::Debug for Appender<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl<J: Journal> Appender<J> {
    /// Starts the writer thread for `journal`.
    pub fn spawn(
        name: &str,
        journal: J,
        durability: Durability,
        batch_interval: Duration,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (jobs, queue) = mpsc::channel();
        let health = Arc::new(StorageHealth::default());
        let writer = Writer {
            journal,
            queue,
            durability,
            batch_interval,
            health: Arc::clone(&health),
            dirty_since: None,
        };
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || writer.run())?;
        Ok((
            Self {
                jobs,
                permits: Arc::new(Semaphore::new(QUEUE_CAPACITY)),
                health,
            },
            thread,
        ))
    }

    /// Appends one record and waits until it is stored (durably, in `fsync` mode).
    pub async fn append(&self, record: J::Record) -> Result<J::Receipt, AppendError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AppendError::Stopped)?;
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Append {
                record,
                reply,
                _permit: permit,
            })
            .map_err(|_| AppendError::Stopped)?;
        answer.await.unwrap_or(Err(AppendError::Stopped))
    }

    /// Runs `task` on the writer thread, between batches, with the journal to itself.
    pub async fn run<T: Send + 'static>(
        &self,
        task: impl FnOnce(&mut J) -> T + Send + 'static,
    ) -> Result<T, AppendError> {
        let (reply, answer) = oneshot::channel();
        let job: Task<J> = Box::new(move |journal| {
            let _ = reply.send(task(journal));
        });
        self.jobs
            .send(Job::Run(job))
            .map_err(|_| AppendError::Stopped)?;
        answer.await.map_err(|_| AppendError::Stopped)
    }

    /// Stops the writer thread after everything queued so far, with a final sync. Appends after
    /// that fail with [`AppendError::Stopped`].
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.jobs.send(Job::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }

    /// The journal's health.
    pub fn health(&self) -> &StorageHealth {
        &self.health
    }
}

struct Writer<J: Journal> {
    journal: J,
    queue: mpsc::Receiver<Job<J>>,
    durability: Durability,
    batch_interval: Duration,
    health: Arc<StorageHealth>,
    /// In `batch` mode: when the oldest unsynced commit happened.
    dirty_since: Option<Instant>,
}

impl<J: Journal> Writer<J> {
    fn run(mut self) {
        let mut stopped = None;
        while stopped.is_none() {
            let Some(first) = self.next_job() else {
                break;
            };
            let mut appends = Vec::new();
            let mut job = Some(first);
            while let Some(current) = job.take() {
                match current {
                    Job::Append {
                        record,
                        reply,
                        _permit,
                    } => appends.push((record, reply)),
                    Job::Run(task) => {
                        // Tasks see only committed state: flush the appends queued before them.
                        self.write_batch(std::mem::take(&mut appends));
                        task(&mut self.journal);
                    }
                    Job::Stop(done) => {
                        stopped = Some(done);
                        break;
                    }
                }
                if appends.len() < MAX_BATCH {
                    job = self.queue.try_recv().ok();
                }
            }
            self.write_batch(appends);
        }
        if let Err(e) = self.journal.sync() {
            error!(error = %e, "final sync failed");
        }
        // Dropping the queue here makes later appends fail with `Stopped` instead of waiting.
        drop(self.queue);
        if let Some(done) = stopped {
            let _ = done.send(());
        }
    }

    /// Waits for the next job; in `batch` mode wakes up to sync when the interval is over.
    /// `None` once every handle is gone.
    fn next_job(&mut self) -> Option<Job<J>> {
        loop {
            let Some(since) = self.dirty_since else {
                return self.queue.recv().ok();
            };
            let deadline = since + self.batch_interval;
            let now = Instant::now();
            // Checked before receiving: under a steady stream of jobs a timeout never fires.
            if now >= deadline {
                self.sync_now();
                continue;
            }
            match self.queue.recv_timeout(deadline - now) {
                Ok(job) => return Some(job),
                Err(RecvTimeoutError::Timeout) => self.sync_now(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn sync_now(&mut self) {
        self.dirty_since = None;
        match self.journal.sync() {
            Ok(()) => {}
            Err(e) => {
                error!(error = %e, "sync failed");
                self.health.set(Some(e.0));
            }
        }
    }

    fn write_batch(&mut self, appends: Vec<(J::Record, Reply<J::Receipt>)>) {
        if appends.is_empty() {
            return;
        }
        if let Err(e) = self.journal.prepare() {
            self.fail(appends.into_iter().map(|(_, reply)| reply).collect(), &e);
            return;
        }
        let mut staged = Vec::with_capacity(appends.len());
        for (record, reply) in appends {
            match self.journal.stage(record) {
                Ok(receipt) => staged.push((receipt, reply)),
                Err(StageError::Refused(why)) => {
                    let _ = reply.send(Err(AppendError::Refused(why)));
                }
                Err(StageError::Invalid(why)) => {
                    let _ = reply.send(Err(AppendError::Invalid(why)));
                }
            }
        }
        if staged.is_empty() {
            return;
        }
        let sync = self.durability == Durability::Fsync;
        match self.journal.commit(sync) {
            Ok(()) => {
                if self.health.degraded().is_some() {
                    info!("storage recovered: appends succeed again");
                    self.health.set(None);
                }
                if self.durability == Durability::Batch && self.dirty_since.is_none() {
                    self.dirty_since = Some(Instant::now());
                }
                for (receipt, reply) in staged {
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(e) => {
                if let Err(rollback) = self.journal.rollback() {
                    error!(error = %rollback, "rollback after a failed write failed too");
                }
                self.fail(staged.into_iter().map(|(_, reply)| reply).collect(), &e);
            }
        }
    }

    fn fail(&self, replies: Vec<Reply<J::Receipt>>, error: &StorageError) {
        warn!(error = %error, records = replies.len(), "append failed; nothing of this batch was acknowledged");
        self.health.set(Some(error.0.clone()));
        for reply in replies {
            let _ = reply.send(Err(AppendError::Storage(error.0.clone())));
        }
    }
}
