//! A hash chain on disk: the decision trace v2 and the audit log share this journal.
//!
//! The journal assigns `seq`, `prev_hash`, `entry_id` and `timestamp` at staging time, seals
//! each entry in the stored layout and appends it to the active segment. Committed entries are
//! published, in chain order, to subscribers.
//!
//! Opening a journal recovers it: a torn last line (no `\n`, or not JSON) is cut off and
//! reported; the last non-empty segment is verified against the end of the one before it; a
//! chain that does not verify at its tail makes the journal refuse appends until it is repaired
//! with a new segment that links to the last valid entry. Nothing is ever deleted except the
//! bytes of a torn line, which were never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atlasbridge_protocol::trace::repairs::{self, Repair};
use atlasbridge_protocol::trace::verify::ChainKind;
use atlasbridge_protocol::trace::{
    ChainHead, ChainMembers, EntryBody, GENESIS_PREV_HASH, IntegrityReport,
};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::appender::{Journal, StageError, StorageError};

/// An entry as stored, for readers and subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its `seq`.
    pub seq: u64,
    /// Its `entry_hash`.
    pub entry_hash: String,
    /// The stored line without its `\n` (canonical JSON).
    pub line: Arc<str>,
}

/// What an append reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The assigned `seq`.
    pub seq: u64,
    /// The entry's hash.
    pub entry_hash: String,
    /// The assigned `entry_id`.
    pub entry_id: String,
    /// The assigned `timestamp`.
    pub timestamp: String,
}

/// Bytes cut off the end of a segment at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// How many bytes were dropped.
    pub bytes: u64,
}

/// What opening a journal found.
#[derive(Debug)]
pub struct Recovery {
    /// A torn last line that was cut off.
    pub torn: Option<TornTail>,
    /// The chain's head after recovery.
    pub head: Option<ChainHead>,
    /// Set when the tail does not verify: the journal refuses appends until repaired.
    pub broken: Option<IntegrityReport>,
    /// Segment files found.
    pub segments: usize,
}

struct ActiveSegment {
    file: File,
    path: PathBuf,
    /// Bytes known to be written.
    len: u64,
}

/// Where committed entries are announced.
#[derive(Debug, Clone)]
pub struct Published {
    /// Every committed entry, for readers that want the lines (built only while one listens).
    pub entries: broadcast::Sender<Arc<StoredEntry>>,
    /// The seq of the committed head, for readers that only count: it wakes them once per
    /// batch, not once per entry.
    pub head_seq: watch::Sender<Option<u64>>,
}

/// The journal of one chain directory.
pub struct ChainJournal {
    dir: PathBuf,
    kind: ChainKind,
    segment_max_bytes: u64,
    active: Option<ActiveSegment>,
    /// The head as of the last successful commit (`None`: the chain is empty).
    committed: Option<ChainHead>,
    staged_head: Option<ChainHead>,
    pending: Vec<u8>,
    pending_entries: Vec<StoredEntry>,
    /// Why appends are refused (a broken tail awaiting repair, a failed rollback).
    refusal: Option<String>,
    published: Published,
    /// A repair segment starting where an existing segment starts gets this tag.
    next_repair_tag: Option<u32>,
}

impl std::fmt::Debug for ChainJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainJournal")
            .field("dir", &self.dir)
            .field("committed", &self.committed)
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

/// The segments of the chain of `kind` in `dir`, in chain order; a missing directory has none.
pub fn list_segments(dir: &Path, kind: ChainKind) -> std::io::Result<Vec<PathBuf>> {
    match atlasbridge_protocol::trace::segment_files(dir, kind) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        listed => listed,
    }
}

impl ChainJournal {
    /// Opens (creating if needed) the chain in `dir`, recovering its tail.
    pub fn open(
        dir: &Path,
        kind: ChainKind,
        segment_max_bytes: u64,
        published: Published,
    ) -> Result<(Self, Recovery), StorageError> {
        create_private_dir(dir).map_err(|e| StorageError::io("cannot create", dir, &e))?;
        let files =
            list_segments(dir, kind).map_err(|e| StorageError::io("cannot list", dir, &e))?;
        let mut journal = Self {
            dir: dir.to_path_buf(),
            kind,
            segment_max_bytes,
            active: None,
            committed: None,
            staged_head: None,
            pending: Vec::new(),
            pending_entries: Vec::new(),
            refusal: None,
            published,
            next_repair_tag: None,
        };
        let mut recovery = Recovery {
            torn: None,
            head: None,
            broken: None,
            segments: files.len(),
        };
        let Some(last) = files.last() else {
            return Ok((journal, recovery));
        };
        recovery.torn = cut_torn_tail(last)?;

        let repairs =
            repairs::load(dir).map_err(|e| StorageError::io("cannot read repairs in", dir, &e))?;
        let repaired_from = |file: &Path| {
            file.file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| repairs::continues_from(&repairs, name))
                .cloned()
        };
        // A repair that no entry followed yet: the chain continues from where it said.
        if let Some(from) = std::fs::metadata(last)
            .is_ok_and(|m| m.len() == 0)
            .then(|| repaired_from(last))
            .flatten()
        {
            journal.committed = from;
            journal.staged_head = journal.committed.clone();
            recovery.head = journal.committed.clone();
            journal.active = Some(open_for_append(last)?);
            return Ok((journal, recovery));
        }

        // The last segment with entries, and the head it continues from: the end of the one
        // before it, or the entry a repair linked it to.
        let non_empty: Vec<&PathBuf> = files
            .iter()
            .filter(|f| std::fs::metadata(f).map(|m| m.len() > 0).unwrap_or(true))
            .collect();
        if let Some(tail_index) = non_empty.len().checked_sub(1) {
            let tail = non_empty[tail_index];
            let start = match (repaired_from(tail), tail_index.checked_sub(1)) {
                (Some(from), _) => from,
                (None, Some(before)) => Some(last_head(non_empty[before], kind)?),
                (None, None) => None,
            };
            let report = crate::trace::verify_segment(tail, kind, start.as_ref())
                .map_err(|e| StorageError(format!("cannot verify {}: {e}", tail.display())))?;
            if report.valid {
                journal.committed = report.head.or(start);
            } else {
                journal.committed = report.head.clone().or(start);
                journal.refusal = Some(format!(
                    "the chain is broken at seq {} ({}); run `atlasbridge trace repair --start-new-segment`",
                    report
                        .first_broken_at
                        .map_or_else(|| "?".to_owned(), |s| s.to_string()),
                    report.error.as_ref().map_or("unknown", |e| e.kind.name()),
                ));
                recovery.broken = Some(report);
            }
        }
        journal.staged_head = journal.committed.clone();
        recovery.head = journal.committed.clone();
        if recovery.broken.is_none() {
            journal.active = Some(open_for_append(last)?);
        }
        Ok((journal, recovery))
    }

    /// The durable head.
    pub fn head(&self) -> Option<&ChainHead> {
        self.committed.as_ref()
    }

    /// Entries in the chain (the head's seq + 1).
    pub fn entries(&self) -> u64 {
        self.committed.as_ref().map_or(0, |h| h.seq + 1)
    }

    /// Why appends are refused, if they are.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// The chain's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses appends from now on (e.g. the trace was found shorter than its last known head).
    pub fn refuse(&mut self, why: String) {
        self.refusal = Some(why);
    }

    /// Continues the chain in a new segment whose first entry links to `from` (the last valid
    /// entry), and accepts appends again. Existing segments are left as they are.
    pub fn start_new_segment(&mut self, from: Option<ChainHead>) -> Result<PathBuf, StorageError> {
        if let Some(active) = self.active.take() {
            active
                .file
                .sync_data()
                .map_err(|e| StorageError::io("cannot sync", &active.path, &e))?;
        }
        let first_seq = from.as_ref().map_or(0, |h| h.seq + 1);
        let mut tag = None;
        while self
            .dir
            .join(self.kind.segment_name(first_seq, tag))
            .exists()
        {
            tag = Some(tag.map_or(1, |n| n + 1));
        }
        self.next_repair_tag = tag;
        // Recorded before the segment exists: a segment that links elsewhere without this
        // record is a break at the next start.
        self.record_repair(&Repair {
            segment: self.kind.segment_name(first_seq, tag),
            continues_from: from.clone(),
        })?;
        self.committed = from;
        self.staged_head = self.committed.clone();
        self.published
            .head_seq
            .send_replace(self.committed.as_ref().map(|h| h.seq));
        self.refusal = None;
        let path = self.create_segment(first_seq)?;
        Ok(path)
    }

    fn record_repair(&self, repair: &Repair) -> Result<(), StorageError> {
        let path = self.dir.join(repairs::REPAIRS_FILE);
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .map_err(|e| StorageError::io("cannot open", &path, &e))?;
        file.write_all(&repair.line())
            .and_then(|()| file.sync_data())
            .map_err(|e| StorageError::io("cannot write", &path, &e))?;
        sync_dir(&self.dir)
    }

    fn create_segment(&mut self, first_seq: u64) -> Result<PathBuf, StorageError> {
        let name = self
            .kind
            .segment_name(first_seq, self.next_repair_tag.take());
        let path = self.dir.join(name);
        let mut options = OpenOptions::new();
        options.append(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|e| StorageError::io("cannot create", &path, &e))?;
        sync_dir(&self.dir)?;
        self.active = Some(ActiveSegment {
            file,
            path: path.clone(),
            len: 0,
        });
        Ok(path)
    }
}

impl Journal for ChainJournal {
    type Record = EntryBody;
    type Receipt = Receipt;

    fn prepare(&mut self) -> Result<(), StorageError> {
        if let Some(active) = &self.active
            && active.len >= self.segment_max_bytes
        {
            active
                .file
                .sync_data()
                .map_err(|e| StorageError::io("cannot sync", &active.path, &e))?;
            self.active = None;
        }
        Ok(())
    }

    fn stage(&mut self, body: EntryBody) -> Result<Receipt, StageError> {
        if let Some(why) = &self.refusal {
            return Err(StageError::Refused(why.clone()));
        }
        let (seq, prev_hash) = match &self.staged_head {
            Some(head) => (head.seq + 1, head.entry_hash.as_str()),
            None => (0, GENESIS_PREV_HASH),
        };
        let entry_id = match body.entry_id() {
            Some(id) => id.to_owned(),
            None => uuid::Uuid::now_v7().to_string(),
        };
        let timestamp = match body.timestamp() {
            Some(t) => t.to_owned(),
            None => crate::clock::now_rfc3339(),
        };
        let sealed = body.seal(ChainMembers {
            seq,
            prev_hash,
            entry_id: &entry_id,
            timestamp: &timestamp,
        });
        self.pending.extend_from_slice(&sealed.line);
        if self.published.entries.receiver_count() > 0 {
            let text = &sealed.line[..sealed.line.len() - 1];
            self.pending_entries.push(StoredEntry {
                seq,
                entry_hash: sealed.entry_hash.clone(),
                line: Arc::from(String::from_utf8_lossy(text)),
            });
        }
        self.staged_head = Some(ChainHead {
            seq,
            entry_hash: sealed.entry_hash.clone(),
        });
        Ok(Receipt {
            seq,
            entry_hash: sealed.entry_hash,
            entry_id,
            timestamp,
        })
    }

    fn commit(&mut self, sync: bool) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.active.is_none() {
            let first_seq = self.committed.as_ref().map_or(0, |h| h.seq + 1);
            self.create_segment(first_seq)?;
        }
        let Some(active) = self.active.as_mut() else {
            return Err(StorageError("no active segment".to_owned()));
        };
        active
            .file
            .write_all(&self.pending)
            .map_err(|e| StorageError::io("cannot write", &active.path, &e))?;
        if sync {
            active
                .file
                .sync_data()
                .map_err(|e| StorageError::io("cannot sync", &active.path, &e))?;
        }
        active.len += self.pending.len() as u64;
        self.pending.clear();
        self.committed = self.staged_head.clone();
        for entry in self.pending_entries.drain(..) {
            // No subscriber is not an error.
            let _ = self.published.entries.send(Arc::new(entry));
        }
        self.published
            .head_seq
            .send_replace(self.committed.as_ref().map(|h| h.seq));
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), StorageError> {
        self.pending.clear();
        self.pending_entries.clear();
        self.staged_head = self.committed.clone();
        if let Some(active) = &self.active
            && let Err(e) = active.file.set_len(active.len)
        {
            self.refusal = Some(format!(
                "a failed write left {} in an unknown state ({e}); restart atlasbridged to recover it",
                active.path.display()
            ));
            return Err(StorageError::io("cannot roll back", &active.path, &e));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        match &self.active {
            Some(active) => active
                .file
                .sync_data()
                .map_err(|e| StorageError::io("cannot sync", &active.path, &e)),
            None => Ok(()),
        }
    }
}

fn open_for_append(path: &Path) -> Result<ActiveSegment, StorageError> {
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| StorageError::io("cannot open", path, &e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io("cannot stat", path, &e))?
        .len();
    Ok(ActiveSegment {
        file,
        path: path.to_path_buf(),
        len,
    })
}

/// How far back from the end to look for the last line: a line is at most about 1 MiB.
const TAIL_WINDOW: u64 = 4 * 1024 * 1024;

/// Cuts a torn last line: bytes after the last `\n`, or a last line that is not JSON.
fn cut_torn_tail(path: &Path) -> Result<Option<TornTail>, StorageError> {
    let io = |what: &str, e: &std::io::Error| StorageError::io(what, path, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io("cannot open", &e))?;
    let len = file.metadata().map_err(|e| io("cannot stat", &e))?.len();
    if len == 0 {
        return Ok(None);
    }
    let window_start = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(window_start))
        .map_err(|e| io("cannot seek", &e))?;
    let mut tail = Vec::with_capacity((len - window_start) as usize);
    file.read_to_end(&mut tail)
        .map_err(|e| io("cannot read", &e))?;

    let mut keep = len;
    if tail.last() != Some(&b'\n') {
        keep = window_start
            + tail
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p as u64 + 1);
    } else {
        let body = &tail[..tail.len() - 1];
        let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if serde_json::from_slice::<Value>(&body[start..]).is_err() {
            keep = window_start + start as u64;
        }
    }
    if keep == len {
        return Ok(None);
    }
    file.set_len(keep).map_err(|e| io("cannot truncate", &e))?;
    file.sync_all().map_err(|e| io("cannot sync", &e))?;
    Ok(Some(TornTail {
        file: path.to_path_buf(),
        bytes: len - keep,
    }))
}

/// The head at the end of a (complete) segment, from its last line.
fn last_head(path: &Path, kind: ChainKind) -> Result<ChainHead, StorageError> {
    let io = |what: &str, e: &std::io::Error| StorageError::io(what, path, e);
    let mut file = File::open(path).map_err(|e| io("cannot open", &e))?;
    let len = file.metadata().map_err(|e| io("cannot stat", &e))?.len();
    let window_start = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(window_start))
        .map_err(|e| io("cannot seek", &e))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)
        .map_err(|e| io("cannot read", &e))?;
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    crate::trace::line_head(&body[start..], kind).map_err(|why| {
        StorageError(format!(
            "the last line of {} is unusable: {why}",
            path.display()
        ))
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a new file's directory entry durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("cannot sync directory", dir, &e))?;
    Ok(())
}
