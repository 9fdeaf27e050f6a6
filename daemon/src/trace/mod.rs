//! The decision trace and the audit log as the daemon runs them: two hash chains, each with its
//! own writer thread, recovered at start and compared with the last known heads.

pub mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use atlasbridge_protocol::trace::verify::{self, ChainKind, VerifyOptions};
use atlasbridge_protocol::trace::{ChainHead, EntryBody, IntegrityReport};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tracing::{error, warn};

use crate::config::TraceConfig;
use crate::storage::chain::{ChainJournal, Published, Receipt, Recovery, StoredEntry, TornTail};
use crate::storage::v1::V1Journal;
use crate::storage::{AppendError, Appender};
use state::{Continuity, Heads};

/// Entries buffered per subscriber before it counts as too slow.
pub const SUBSCRIBER_BUFFER: usize = 4096;

/// `<data_dir>/trace`.
pub fn trace_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("trace")
}

/// `<data_dir>/audit`.
pub fn audit_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

/// Verifies one segment, continuing from `start` (the end of the segment before it).
pub fn verify_segment(
    path: &Path,
    kind: ChainKind,
    start: Option<&ChainHead>,
) -> Result<IntegrityReport, verify::VerifyError> {
    let options = VerifyOptions {
        kind,
        start: start.cloned(),
        ..VerifyOptions::default()
    };
    verify::verify_files(&[path.to_path_buf()], &options).map(|v| v.report)
}

/// The `{seq, entry_hash}` of one stored line, if it is a sound entry.
pub fn line_head(line: &[u8], kind: ChainKind) -> Result<ChainHead, String> {
    atlasbridge_protocol::trace::scan::check_line(line, kind)
        .map(|facts| ChainHead {
            seq: facts.seq,
            entry_hash: facts.entry_hash,
        })
        .map_err(|problem| problem.to_string())
}

/// What start-up found wrong with one chain; each finding is reported and audited.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// A torn last line was cut off.
    pub torn: Option<TornTail>,
    /// The tail does not verify: appends are refused until repair.
    pub broken: Option<IntegrityReport>,
    /// The chain is shorter than its last known head: appends are refused until repair.
    pub lost: Option<(ChainHead, Option<ChainHead>)>,
}

/// One running chain: its writer and what start-up found.
#[derive(Debug)]
pub struct Chain {
    appender: Appender<ChainJournal>,
    entries: broadcast::Sender<Arc<StoredEntry>>,
    head_seq: watch::Sender<Option<u64>>,
    dir: PathBuf,
    kind: ChainKind,
    findings: Mutex<Findings>,
}

impl Chain {
    /// Opens and recovers the chain in `dir`, compared with the head the state file recorded.
    pub fn open(
        dir: &Path,
        kind: ChainKind,
        config: &TraceConfig,
        recorded: Option<&ChainHead>,
    ) -> Result<(Self, JoinHandle<()>), crate::storage::appender::StorageError> {
        let (entries, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let (head_seq, _) = watch::channel(None);
        let published = Published {
            entries: entries.clone(),
            head_seq: head_seq.clone(),
        };
        let (mut journal, recovery) =
            ChainJournal::open(dir, kind, config.segment_max_bytes, published)?;
        head_seq.send_replace(journal.head().map(|h| h.seq));
        let Recovery {
            torn, head, broken, ..
        } = recovery;
        let mut findings = Findings {
            torn,
            broken,
            lost: None,
        };
        if findings.broken.is_none()
            && let Continuity::Lost { expected, found } = state::continuity(recorded, head.as_ref())
        {
            journal.refuse(format!(
                "the {} has {} entries but its last known head was seq {}: entries were removed; \
                 run `atlasbridge {} repair --start-new-segment` to continue from the last known head",
                kind_name(kind),
                found.as_ref().map_or(0, |h| h.seq + 1),
                expected.seq,
                if kind == ChainKind::Trace { "trace" } else { "audit" },
            ));
            findings.lost = Some((expected, found));
        }
        let name = match kind {
            ChainKind::Trace => "trace-writer",
            ChainKind::Audit => "audit-writer",
        };
        let (appender, thread) =
            Appender::spawn(name, journal, config.durability, config.batch_interval).map_err(
                |e| crate::storage::appender::StorageError(format!("cannot start the {name}: {e}")),
            )?;
        let chain = Self {
            appender,
            entries,
            head_seq,
            dir: dir.to_path_buf(),
            kind,
            findings: Mutex::new(findings),
        };
        Ok((chain, thread))
    }

    /// Appends one entry body.
    pub async fn append(&self, body: EntryBody) -> Result<Receipt, AppendError> {
        self.appender.append(body).await
    }

    /// The durable head and why appends are refused, if they are.
    pub async fn head(&self) -> Result<(Option<ChainHead>, Option<String>), AppendError> {
        self.appender
            .run(|j| (j.head().cloned(), j.refusal().map(str::to_owned)))
            .await
    }

    /// Committed entries from now on, in chain order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEntry>> {
        self.entries.subscribe()
    }

    /// The seq of the committed head, updated once per committed batch.
    pub fn watch_head(&self) -> watch::Receiver<Option<u64>> {
        self.head_seq.subscribe()
    }

    /// The chain's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which chain this is.
    pub fn kind(&self) -> ChainKind {
        self.kind
    }

    /// The writer's health: the last storage error, while unresolved.
    pub fn degraded(&self) -> Option<String> {
        self.appender.health().degraded()
    }

    /// What start-up found (cleared by a repair).
    pub fn findings(&self) -> Findings {
        self.findings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Opens a new segment linking to the last valid entry (or, when entries were removed, to
    /// the last recorded head) and accepts appends again. Returns the new segment and the head it
    /// continues from.
    pub async fn repair(&self) -> Result<(PathBuf, Option<ChainHead>), AppendError> {
        // Removed entries: continue from the last head anyone recorded, so the gap stays visible
        // as a gap. A broken tail: continue from the last entry that verified.
        let link = self.findings().lost.map(|(expected, _)| expected);
        let outcome = self
            .appender
            .run(move |journal| {
                let from = link.or_else(|| journal.head().cloned());
                journal
                    .start_new_segment(from.clone())
                    .map(|path| (path, from))
            })
            .await?;
        let (path, from) = outcome.map_err(|e| AppendError::Storage(e.0))?;
        *self.findings.lock().unwrap_or_else(|e| e.into_inner()) = Findings::default();
        Ok((path, from))
    }

    /// Stops the writer after what is queued, with a final sync.
    pub async fn stop(&self) {
        self.appender.stop().await;
    }

    /// Syncs and returns the durable head (for checkpoints).
    pub async fn synced_head(&self) -> Result<Option<ChainHead>, AppendError> {
        use crate::storage::Journal;
        self.appender
            .run(|journal| journal.sync().map(|()| journal.head().cloned()))
            .await?
            .map_err(|e| AppendError::Storage(e.0))
    }
}

fn kind_name(kind: ChainKind) -> &'static str {
    match kind {
        ChainKind::Trace => "decision trace",
        ChainKind::Audit => "audit log",
    }
}

/// The v1 trace writer (used while `decision_trace_v2` is off).
#[derive(Debug)]
pub struct V1Trace {
    appender: Appender<V1Journal>,
}

impl V1Trace {
    /// Opens the v1 file in `data_dir`.
    pub fn open(
        data_dir: &Path,
        config: &TraceConfig,
    ) -> Result<(Self, JoinHandle<()>), crate::storage::appender::StorageError> {
        let journal = V1Journal::open(data_dir)?;
        let (appender, thread) = Appender::spawn(
            "v1-writer",
            journal,
            config.durability,
            config.batch_interval,
        )
        .map_err(|e| {
            crate::storage::appender::StorageError(format!("cannot start the v1 writer: {e}"))
        })?;
        Ok((Self { appender }, thread))
    }

    /// Appends one v1 record.
    pub async fn append(&self, record: Map<String, Value>) -> Result<(), AppendError> {
        self.appender.append(record).await
    }

    /// The writer's health.
    pub fn degraded(&self) -> Option<String> {
        self.appender.health().degraded()
    }

    /// Stops the writer after what is queued, with a final sync.
    pub async fn stop(&self) {
        self.appender.stop().await;
    }
}

/// Reads stored entries `from_seq..` of the chain in `dir`, at most `limit` of them and at
/// most `max_bytes` of lines (the first entry is always returned). Blocking: run it off the
/// async workers.
pub fn read_entries(
    dir: &Path,
    kind: ChainKind,
    from_seq: u64,
    limit: usize,
    max_bytes: usize,
) -> std::io::Result<Vec<StoredEntry>> {
    use std::io::BufRead;
    let files = crate::storage::chain::list_segments(dir, kind)?;
    // Segments are named by their first seq: start with the last one that begins at or before
    // `from_seq` (repair segments may overlap; reading from the earliest candidate is safe).
    let first_seqs: Vec<u64> = files.iter().map(|f| first_seq_of(f).unwrap_or(0)).collect();
    let start = first_seqs.iter().rposition(|s| *s <= from_seq).unwrap_or(0);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for file in &files[start..] {
        let reader = std::io::BufReader::new(std::fs::File::open(file)?);
        for line in reader.split(b'\n') {
            let line = line?;
            let Ok(head) = line_head(&line, kind) else {
                continue;
            };
            if head.seq < from_seq {
                continue;
            }
            if out.len() >= limit || (!out.is_empty() && bytes + line.len() > max_bytes) {
                return Ok(out);
            }
            bytes += line.len();
            let text = String::from_utf8_lossy(&line).into_owned();
            out.push(StoredEntry {
                seq: head.seq,
                entry_hash: head.entry_hash,
                line: Arc::from(text),
            });
        }
    }
    Ok(out)
}

pub(crate) fn first_seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits: String = name
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Writes the state file, logging (not failing) on error: it is a tripwire, not the record.
pub fn store_heads(data_dir: &Path, heads: &Heads) {
    if let Err(e) = state::store(data_dir, heads) {
        error!(error = %e, "cannot write the state file");
    }
}

/// Logs a finding at start.
pub fn log_findings(kind: ChainKind, findings: &Findings) {
    if let Some(torn) = &findings.torn {
        warn!(chain = kind_name(kind), file = %torn.file.display(), bytes = torn.bytes, "cut a torn last line");
    }
    if let Some(report) = &findings.broken {
        error!(
            chain = kind_name(kind),
            first_broken_at = ?report.first_broken_at,
            kind = ?report.error.as_ref().map(|e| e.kind),
            "the chain does not verify at its tail; appends are refused until repair"
        );
    }
    if let Some((expected, found)) = &findings.lost {
        error!(
            chain = kind_name(kind),
            expected_seq = expected.seq,
            found_seq = ?found.as_ref().map(|h| h.seq),
            "entries were removed; appends are refused until repair"
        );
    }
}

/// Verifies a chain directory (with its `checkpoints.jsonl`, for the trace).
pub fn verify_chain_dir(
    dir: &Path,
    kind: ChainKind,
) -> Result<IntegrityReport, verify::VerifyError> {
    let options = VerifyOptions {
        kind,
        ..VerifyOptions::default()
    };
    verify::verify_path(dir, &options)
}

/// Adds what only the daemon knows to a report of its own chain: entries that start-up found
/// missing (the files alone may verify, being a shorter chain).
pub fn apply_findings(report: &mut IntegrityReport, findings: &Findings, data_dir: &Path) {
    use atlasbridge_protocol::trace::{BreakKind, ChainBreak};
    if report.error.is_some() {
        return;
    }
    if let Some((expected, found)) = &findings.lost {
        report.valid = false;
        report.first_broken_at = Some(found.as_ref().map_or(0, |h| h.seq + 1));
        report.error = Some(ChainBreak {
            kind: BreakKind::TruncatedAfterCheckpoint,
            file: state::path(data_dir).display().to_string(),
            line: 1,
            detail: format!(
                "the chain ends at {} but seq {} ({}) was recorded before: entries were removed",
                found
                    .as_ref()
                    .map_or_else(|| "nothing".to_owned(), |h| format!("seq {}", h.seq)),
                expected.seq,
                expected.entry_hash
            ),
        });
    }
}
