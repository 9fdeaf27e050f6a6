//! One thread per journal owns its file; appenders hand it records and await durability.
//!
//! Group commit: the thread takes every record waiting in its queue, stages them all, writes
//! them with one `write` and makes them durable with one `fdatasync`. Records that arrive while
//! that sync runs queue up and share the next one, so the number of syncs per second stays
//! bounded by the disk, not by the number of clients. In `batch` mode the thread replies before
//! syncing and syncs at most every interval; in `none` mode it never syncs on its own, and
//! appenders write their records themselves.
//!
//! A failed write or sync fails every record of its batch (their senders hear `Storage`, which
//! the socket layer turns into -32004), the journal is rolled back to its last durable state,
//! and the failure is reported in the shared [`StorageHealth`] until a later batch succeeds.
//! The queue is bounded by a semaphore, so a burst of appenders waits instead of growing memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, TryLockError};
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
    /// Mirrors `last_error.is_some()`, so that every append can check it without a lock.
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl StorageHealth {
    fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// The error of the last failed batch, while no batch has succeeded since.
    pub fn degraded(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, error: Option<String>) {
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        self.failing.store(error.is_some(), Ordering::Release);
        *last_error = error;
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

/// The journal and whether its writer has stopped; appenders in `none` mode lock it themselves.
struct Owned<J> {
    journal: J,
    stopped: bool,
}

type SharedJournal<J> = Arc<Mutex<Owned<J>>>;

fn lock<J>(journal: &SharedJournal<J>) -> std::sync::MutexGuard<'_, Owned<J>> {
    // A panic while holding the lock cannot leave a half-written batch behind: every batch is
    // committed or rolled back before the lock is released.
    journal.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to a journal's writer thread. Cloning it is cheap; the thread stops once every
/// handle is dropped, after a final sync.
///
/// In `fsync` and `batch` mode appends queue for the writer thread, which commits them in
/// groups. In `none` mode there is no sync to share, so an appender that finds the journal free
/// writes its own record: that saves two thread hand-offs per append, which on a small machine
/// are most of a decision's latency. Under contention it queues like the others.
pub struct Appender<J: Journal> {
    jobs: mpsc::Sender<Job<J>>,
    permits: Arc<Semaphore>,
    health: Arc<StorageHealth>,
    journal: SharedJournal<J>,
    durability: Durability,
}

impl<J: Journal> Clone for Appender<J> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            permits: Arc::clone(&self.permits),
            health: Arc::clone(&self.health),
            journal: Arc::clone(&self.journal),
            durability: self.durability,
        }
    }
}

impl<J: Journal> std::fmt::Debug for Appender<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("health", &self.health)
            .field("durability", &self.durability)
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
        let journal = Arc::new(Mutex::new(Owned {
            journal,
            stopped: false,
        }));
        let writer = Writer {
            journal: Arc::clone(&journal),
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
                journal,
                durability,
            },
            thread,
        ))
    }

    /// Appends one record and waits until it is stored (durably, in `fsync` mode).
    pub async fn append(&self, record: J::Record) -> Result<J::Receipt, AppendError> {
        let record = match self.durability {
            Durability::None => match self.append_here(record) {
                Ok(done) => return done,
                Err(busy) => busy,
            },
            Durability::Fsync | Durability::Batch => record,
        };
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

    /// Writes one record on the calling thread (a `write` to the page cache, no sync) when the
    /// journal is free; when it is busy, hands the record back for the writer thread, which
    /// groups contended appends into one `write`.
    fn append_here(&self, record: J::Record) -> Result<Result<J::Receipt, AppendError>, J::Record> {
        let mut owned = match self.journal.try_lock() {
            Ok(owned) => owned,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(record),
        };
        if owned.stopped {
            return Ok(Err(AppendError::Stopped));
        }
        Ok(
            write_batch(&mut owned.journal, &self.health, false, vec![record])
                .pop()
                .unwrap_or(Err(AppendError::Stopped)),
        )
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
    journal: SharedJournal<J>,
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
                        self.write_queued(std::mem::take(&mut appends));
                        task(&mut lock(&self.journal).journal);
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
            self.write_queued(appends);
        }
        {
            let mut owned = lock(&self.journal);
            owned.stopped = true;
            if let Err(e) = owned.journal.sync() {
                error!(error = %e, "final sync failed");
            }
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
        match lock(&self.journal).journal.sync() {
            Ok(()) => {}
            Err(e) => {
                error!(error = %e, "sync failed");
                self.health.set(Some(e.0));
            }
        }
    }

    fn write_queued(&mut self, appends: Vec<(J::Record, Reply<J::Receipt>)>) {
        if appends.is_empty() {
            return;
        }
        let (records, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        let sync = self.durability == Durability::Fsync;
        let results = write_batch(
            &mut lock(&self.journal).journal,
            &self.health,
            sync,
            records,
        );
        if self.durability == Durability::Batch
            && self.dirty_since.is_none()
            && results.iter().any(Result::is_ok)
        {
            self.dirty_since = Some(Instant::now());
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// Stages `records`, writes them with one `write` (and one sync when `sync` is set), and
/// returns each one's fate in order. A failed write or sync fails every staged record and rolls
/// the journal back to its last durable state.
fn write_batch<J: Journal>(
    journal: &mut J,
    health: &StorageHealth,
    sync: bool,
    records: Vec<J::Record>,
) -> Vec<Result<J::Receipt, AppendError>> {
    if let Err(e) = journal.prepare() {
        report_failure(health, &e, records.len());
        return records
            .iter()
            .map(|_| Err(AppendError::Storage(e.0.clone())))
            .collect();
    }
    let mut results: Vec<Result<J::Receipt, AppendError>> = records
        .into_iter()
        .map(|record| {
            journal.stage(record).map_err(|e| match e {
                StageError::Refused(why) => AppendError::Refused(why),
                StageError::Invalid(why) => AppendError::Invalid(why),
            })
        })
        .collect();
    let staged = results.iter().filter(|r| r.is_ok()).count();
    if staged == 0 {
        return results;
    }
    match journal.commit(sync) {
        Ok(()) => {
            if health.is_failing() {
                info!("storage recovered: appends succeed again");
                health.set(None);
            }
        }
        Err(e) => {
            if let Err(rollback) = journal.rollback() {
                error!(error = %rollback, "rollback after a failed write failed too");
            }
            report_failure(health, &e, staged);
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(AppendError::Storage(e.0.clone()));
                }
            }
        }
    }
    results
}

fn report_failure(health: &StorageHealth, error: &StorageError, records: usize) {
    warn!(error = %error, records, "append failed; nothing of this batch was acknowledged");
    health.set(Some(error.0.clone()));
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A journal of numbers that fails its next commit when told to.
    #[derive(Default)]
    struct Numbers {
        committed: Vec<u32>,
        staged: Vec<u32>,
        fail_next_commit: Arc<AtomicBool>,
        syncs: Arc<AtomicUsize>,
    }

    impl Journal for Numbers {
        type Record = u32;
        type Receipt = usize;

        fn prepare(&mut self) -> Result<(), StorageError> {
            Ok(())
        }

        fn stage(&mut self, record: u32) -> Result<usize, StageError> {
            if record == 0 {
                return Err(StageError::Invalid("zero".into()));
            }
            self.staged.push(record);
            Ok(self.committed.len() + self.staged.len() - 1)
        }

        fn commit(&mut self, sync: bool) -> Result<(), StorageError> {
            if self.fail_next_commit.swap(false, Ordering::SeqCst) {
                return Err(StorageError("disk full".into()));
            }
            self.committed.append(&mut self.staged);
            if sync {
                self.syncs.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }

        fn rollback(&mut self) -> Result<(), StorageError> {
            self.staged.clear();
            Ok(())
        }

        fn sync(&mut self) -> Result<(), StorageError> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn spawn(durability: Durability) -> (Appender<Numbers>, Arc<AtomicBool>, JoinHandle<()>) {
        let journal = Numbers::default();
        let fail = Arc::clone(&journal.fail_next_commit);
        let (appender, thread) =
            Appender::spawn("test-writer", journal, durability, Duration::from_millis(5))
                .expect("a thread");
        (appender, fail, thread)
    }

    async fn committed(appender: &Appender<Numbers>) -> Vec<u32> {
        appender
            .run(|j: &mut Numbers| j.committed.clone())
            .await
            .expect("running")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_mode_stores_concurrent_appends_once_in_receipt_order() {
        for durability in [Durability::Fsync, Durability::Batch, Durability::None] {
            let (appender, _, thread) = spawn(durability);
            let tasks: Vec<_> = (1..=400u32)
                .map(|n| {
                    let appender = appender.clone();
                    tokio::spawn(async move { (n, appender.append(n).await) })
                })
                .collect();
            let mut by_position = std::collections::BTreeMap::new();
            for task in tasks {
                let (n, receipt) = task.await.expect("no panic");
                let position = receipt.expect("stored");
                assert!(by_position.insert(position, n).is_none(), "{durability:?}");
            }
            let stored = committed(&appender).await;
            assert_eq!(
                stored,
                by_position.into_values().collect::<Vec<_>>(),
                "{durability:?}"
            );
            appender.stop().await;
            thread.join().expect("writer ends");
        }
    }

    #[tokio::test]
    async fn a_failed_write_in_none_mode_fails_only_its_record_and_recovers() {
        let (appender, fail, thread) = spawn(Durability::None);
        assert_eq!(appender.append(7).await, Ok(0));
        fail.store(true, Ordering::SeqCst);
        assert_eq!(
            appender.append(8).await,
            Err(AppendError::Storage("disk full".into()))
        );
        assert_eq!(appender.health().degraded().as_deref(), Some("disk full"));
        assert_eq!(
            appender.append(0).await,
            Err(AppendError::Invalid("zero".into()))
        );
        assert_eq!(appender.append(9).await, Ok(1));
        assert_eq!(appender.health().degraded(), None);
        assert_eq!(committed(&appender).await, [7, 9]);
        appender.stop().await;
        thread.join().expect("writer ends");
    }

    #[tokio::test]
    async fn appends_after_stop_fail_in_every_mode() {
        for durability in [Durability::Fsync, Durability::Batch, Durability::None] {
            let (appender, _, thread) = spawn(durability);
            assert_eq!(appender.append(1).await, Ok(0));
            appender.stop().await;
            assert_eq!(
                appender.append(2).await,
                Err(AppendError::Stopped),
                "{durability:?}"
            );
            thread.join().expect("writer ends");
        }
    }
}
