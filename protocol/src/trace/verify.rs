//! Streaming verification of a hash chain (the decision trace or the audit log), with or
//! without its signed checkpoints. Needs only the files, never the daemon.
//!
//! Files are read in blocks of a few MiB cut at line ends, so memory stays flat whatever their
//! size. On large inputs a reader thread hands the blocks through a bounded channel to worker
//! threads; each worker checks its block on its own (hashes, canonical form, the links between
//! its lines) and returns a small summary, and the calling thread merges the summaries in file
//! order, checking the links between blocks. A break is a property of one line and the line
//! before it, so the verdict — including which line broke first and why — is the same for
//! every thread count and block size; the tests hold it to that.
//!
//! Checkpoints are read whole: there is one per many entries or seconds, so they stay small
//! next to the chain they vouch for.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use ed25519_dalek::VerifyingKey;
use jiff::Timestamp;

use super::checkpoint::{Checkpoint, GENESIS_CHECKPOINT_HASH, decode_public_key};
use super::entry::GENESIS_PREV_HASH;
use super::report::{BreakKind, ChainBreak, ChainHead, IntegrityReport, UnwitnessedTail};
use super::scan::{Checked, LineProblem, Scanner, shorten};
use crate::canonical::parse_strict;

/// The checkpoints file in a trace directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// Block size when [`VerifyOptions::chunk_bytes`] is 0.
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;

/// The longest line a chain may hold; a longer one is a `malformed_line`. It bounds the
/// reader's memory on a file without line ends.
pub const MAX_ENTRY_BYTES: usize = 64 << 20;

/// The longest checkpoint line (they are a few hundred bytes).
const MAX_CHECKPOINT_LINE: u64 = 64 << 10;

/// Which chain: they share the envelope and the hash rule, not the file names or the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChainKind {
    /// The decision trace: `decisions-<12+ digits>.jsonl`, every entry has `trace_version` 2.
    #[default]
    Trace,
    /// The audit log: `audit-<digits>.jsonl`, no version member.
    Audit,
}

impl ChainKind {
    /// The prefix of this chain's segment file names.
    pub fn segment_prefix(self) -> &'static str {
        match self {
            Self::Trace => "decisions-",
            Self::Audit => "audit-",
        }
    }

    /// The file name of the segment whose first entry is `first_seq`: 12 digits at least, so
    /// that names sort in chain order. A segment opened by a repair at a seq an existing
    /// segment already starts at gets the tag `.r<n>`, which sorts after the untagged name
    /// because `r` sorts after `j`.
    pub fn segment_name(self, first_seq: u64, repair: Option<u32>) -> String {
        let prefix = self.segment_prefix();
        match repair {
            None => format!("{prefix}{first_seq:012}.jsonl"),
            Some(n) => format!("{prefix}{first_seq:012}.r{n}.jsonl"),
        }
    }

    /// Whether `name` is one of this chain's segment files: the prefix, the first seq in
    /// digits (at least 12 for the trace), optionally the `.r<n>` tag a repair gives, and
    /// `.jsonl`.
    pub fn is_segment_name(self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(self.segment_prefix())
            .and_then(|rest| rest.strip_suffix(".jsonl"))
        else {
            return false;
        };
        let (digits, tag) = match rest.split_once('.') {
            Some((digits, tag)) => (digits, Some(tag)),
            None => (rest, None),
        };
        let min_digits = match self {
            Self::Trace => 12,
            Self::Audit => 1,
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let tag_ok = tag.is_none_or(|tag| {
            tag.strip_prefix('r')
                .is_some_and(|n| !n.is_empty() && all_digits(n))
        });
        digits.len() >= min_digits && all_digits(digits) && tag_ok
    }
}

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Which chain the files hold.
    pub kind: ChainKind,
    /// Continue from this head instead of the genesis: the first entry must have `seq`
    /// `start.seq + 1` and `prev_hash` `start.entry_hash`.
    pub start: Option<ChainHead>,
    /// Worker threads; 0 uses every available core. Small inputs use none.
    pub threads: usize,
    /// Block size in bytes; 0 means [`DEFAULT_CHUNK_BYTES`]. Changes speed, never verdicts.
    pub chunk_bytes: usize,
    /// A checkpoints file to verify the chain against (e.g. an exported copy). For a directory,
    /// [`verify_path`] uses its own `checkpoints.jsonl` when this is `None`.
    pub checkpoints: Option<PathBuf>,
    /// The `runtime_id` the checkpoints must carry (one known from elsewhere, e.g. the cloud);
    /// otherwise checkpoint 0's is trusted.
    pub trusted_runtime_id: Option<String>,
    /// The time against which the unwitnessed tail's age is measured; `None` is now.
    pub now: Option<Timestamp>,
    /// Parse and re-canonicalise every line instead of hashing the stored bytes when they are
    /// already canonical. Several times slower; the verdict is the same, which is what an
    /// auditor who trusts only the slow path can confirm with it.
    pub recanonicalise: bool,
}

/// The files could not be read: no verdict (exit status 2, unlike a broken chain).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Listing, opening or reading failed.
    #[error("cannot read {path}: {source}", path = path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A verification thread died (a bug, never the input's fault).
    #[error("a verification thread failed")]
    Worker,
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The verdict on a chain, and the hashes it was asked to collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The report.
    pub report: IntegrityReport,
    /// `entry_hash` at each requested `seq` among the entries that verified.
    pub hashes: BTreeMap<u64, String>,
}

/// The segment files of `kind` in `dir`, in chain order (by name). Other files, such as
/// `checkpoints.jsonl`, are left out.
pub fn segment_files(dir: &Path, kind: ChainKind) -> io::Result<Vec<PathBuf>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str()
            && kind.is_segment_name(name)
            && entry.file_type()?.is_file()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names.into_iter().map(|name| dir.join(name)).collect())
}

/// Verifies a segment file or a directory of segments (with the directory's
/// `checkpoints.jsonl`, if it has one and no other was given).
pub fn verify_path(path: &Path, options: &VerifyOptions) -> Result<IntegrityReport, VerifyError> {
    let metadata = std::fs::metadata(path).map_err(read_error(path))?;
    if !metadata.is_dir() {
        return verify_files(&[path.to_path_buf()], options).map(|v| v.report);
    }
    let files = segment_files(path, options.kind).map_err(read_error(path))?;
    let own = path.join(CHECKPOINTS_FILE);
    if options.checkpoints.is_none() && own.is_file() {
        let options = VerifyOptions {
            checkpoints: Some(own),
            ..options.clone()
        };
        return verify_files(&files, &options).map(|v| v.report);
    }
    verify_files(&files, options).map(|v| v.report)
}

/// Verifies the chain held by `files` (in chain order), and against `options.checkpoints` if
/// set.
pub fn verify_files(files: &[PathBuf], options: &VerifyOptions) -> Result<Verified, VerifyError> {
    let Some(path) = &options.checkpoints else {
        return verify_chain(files, options, &[]);
    };
    let checkpoints = read_checkpoints(path)?;
    let seqs: Vec<u64> = checkpoints
        .checkpoints
        .iter()
        .filter_map(|c| c.seq)
        .collect();
    let mut verified = verify_chain(files, options, &seqs)?;
    verify_checkpoints(&checkpoints, &verified, options).apply(&mut verified.report);
    Ok(verified)
}

/// Verifies the chain alone (`options.checkpoints` is ignored), collecting the `entry_hash` of
/// each entry whose `seq` is in `collect`. Without checkpoints the whole chain is unwitnessed.
pub fn verify_chain(
    files: &[PathBuf],
    options: &VerifyOptions,
    collect: &[u64],
) -> Result<Verified, VerifyError> {
    let mut want = collect.to_vec();
    want.sort_unstable();
    want.dedup();
    let chunk_bytes = match options.chunk_bytes {
        0 => DEFAULT_CHUNK_BYTES,
        n => n,
    };
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    // A file that cannot be stat'ed counts as small here and fails in order when it is read.
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();

    let mut merge = Merge::new(files, options);
    let context = Context {
        kind: options.kind,
        want: &want,
        recanonicalise: options.recanonicalise,
    };
    if threads <= 1 || total <= chunk_bytes as u64 {
        sequential(files, chunk_bytes, &context, &mut merge)?;
    } else {
        parallel(files, chunk_bytes, threads, &context, &mut merge)?;
    }
    Ok(merge.finish())
}

/// What every block needs to know.
#[derive(Debug)]
struct Context<'a> {
    kind: ChainKind,
    want: &'a [u64],
    recanonicalise: bool,
}

fn sequential(
    files: &[PathBuf],
    chunk_bytes: usize,
    context: &Context<'_>,
    merge: &mut Merge<'_>,
) -> Result<(), VerifyError> {
    let mut reader = ChunkReader::new(files, chunk_bytes);
    let mut scanner = Scanner::new();
    let mut buffer = Vec::new();
    while let Some(chunk) = reader.next(buffer)? {
        let summary = chunk.verify(context, &mut scanner);
        if merge.absorb(chunk.file, summary) {
            break;
        }
        buffer = chunk.data;
    }
    Ok(())
}

enum Outcome {
    Verified { file: usize, summary: Box<Summary> },
    Failed(VerifyError),
}

fn parallel(
    files: &[PathBuf],
    chunk_bytes: usize,
    threads: usize,
    context: &Context<'_>,
    merge: &mut Merge<'_>,
) -> Result<(), VerifyError> {
    let cancel = AtomicBool::new(false);
    // Bounded: the reader may run only this far ahead of the workers, which bounds memory.
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<(u64, Chunk)>(threads);
    // Shared by the workers only, so that it closes if they all stop and the reader unblocks.
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    let (outcome_tx, outcome_rx) = mpsc::channel::<(u64, Outcome)>();
    // Blocks go back to the reader: allocating and faulting in fresh megabytes costs more
    // than the check.
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();

    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads + 1);
        let cancel = &cancel;
        {
            let outcome_tx = outcome_tx.clone();
            handles.push(scope.spawn(move || {
                let mut reader = ChunkReader::new(files, chunk_bytes);
                let mut index = 0u64;
                while !cancel.load(Ordering::Relaxed) {
                    let buffer = free_rx.try_recv().unwrap_or_default();
                    match reader.next(buffer) {
                        Ok(Some(chunk)) => {
                            if chunk_tx.send((index, chunk)).is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            // Reported in order: it matters only if nothing broke before it.
                            let _ = outcome_tx.send((index, Outcome::Failed(error)));
                            break;
                        }
                    }
                    index += 1;
                }
            }));
        }
        for _ in 0..threads {
            let chunk_rx = Arc::clone(&chunk_rx);
            let outcome_tx = outcome_tx.clone();
            let free_tx = free_tx.clone();
            handles.push(scope.spawn(move || {
                let mut scanner = Scanner::new();
                loop {
                    let next = match chunk_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    let Ok((index, chunk)) = next else { break };
                    // Keep draining after a verdict so the reader is never left blocked.
                    if !cancel.load(Ordering::Relaxed) {
                        let summary = Box::new(chunk.verify(context, &mut scanner));
                        let outcome = Outcome::Verified {
                            file: chunk.file,
                            summary,
                        };
                        let _ = outcome_tx.send((index, outcome));
                    }
                    let _ = free_tx.send(chunk.data);
                }
            }));
        }
        drop(chunk_rx);
        drop(outcome_tx);
        drop(free_tx);

        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        let mut result = Ok(());
        'merge: for (index, outcome) in &outcome_rx {
            pending.insert(index, outcome);
            while let Some(outcome) = pending.remove(&next) {
                next += 1;
                let settled = match outcome {
                    Outcome::Verified { file, summary } => merge.absorb(file, *summary),
                    Outcome::Failed(error) => {
                        result = Err(error);
                        true
                    }
                };
                if settled {
                    cancel.store(true, Ordering::Relaxed);
                    break 'merge;
                }
            }
        }
        drop(outcome_rx);
        let mut panicked = false;
        for handle in handles {
            panicked |= handle.join().is_err();
        }
        if panicked && result.is_ok() && !merge.is_settled() {
            result = Err(VerifyError::Worker);
        }
        result
    })
}

/// Reads files as blocks of whole lines.
#[derive(Debug)]
struct ChunkReader<'a> {
    files: &'a [PathBuf],
    next_file: usize,
    current: Option<(usize, File)>,
    /// The start of a line that did not fit in the last block.
    carry: Vec<u8>,
    chunk_bytes: usize,
    done: bool,
}

/// A block of lines from one file: every line ends in `\n` except, at the end of a file, a
/// torn one.
#[derive(Debug)]
struct Chunk {
    file: usize,
    data: Vec<u8>,
    /// The block is one line longer than [`MAX_ENTRY_BYTES`], cut short.
    overlong: bool,
}

impl<'a> ChunkReader<'a> {
    fn new(files: &'a [PathBuf], chunk_bytes: usize) -> Self {
        Self {
            files,
            next_file: 0,
            current: None,
            carry: Vec::new(),
            chunk_bytes,
            done: false,
        }
    }

    /// The next block, reusing `buffer`; `None` after the last file.
    fn next(&mut self, mut buffer: Vec<u8>) -> Result<Option<Chunk>, VerifyError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let (file_index, file) = match &mut self.current {
                Some((index, file)) => (*index, file),
                None => {
                    let Some(path) = self.files.get(self.next_file) else {
                        return Ok(None);
                    };
                    let file = File::open(path).map_err(read_error(path))?;
                    self.current = Some((self.next_file, file));
                    self.next_file += 1;
                    self.carry.clear();
                    continue;
                }
            };
            let path = &self.files[file_index];
            buffer.clear();
            buffer.extend_from_slice(&self.carry);
            self.carry.clear();
            loop {
                let searched = buffer.len();
                let want = match self.chunk_bytes.checked_sub(searched) {
                    Some(room) if room > 0 => room,
                    _ => self.chunk_bytes,
                };
                let read = file
                    .take(want as u64)
                    .read_to_end(&mut buffer)
                    .map_err(read_error(path))?;
                if read < want {
                    // End of file: whatever is left is the last block, torn line and all.
                    self.current = None;
                    if buffer.is_empty() {
                        break;
                    }
                    return Ok(Some(Chunk {
                        file: file_index,
                        data: buffer,
                        overlong: false,
                    }));
                }
                // The carried part holds no line end, so only the new bytes need a look.
                if let Some(end) = memchr::memrchr(b'\n', &buffer[searched..]) {
                    let end = searched + end + 1;
                    self.carry.extend_from_slice(&buffer[end..]);
                    buffer.truncate(end);
                    return Ok(Some(Chunk {
                        file: file_index,
                        data: buffer,
                        overlong: false,
                    }));
                }
                if buffer.len() > MAX_ENTRY_BYTES {
                    // Nothing after a line this long can matter: the chain breaks here.
                    self.done = true;
                    buffer.clear();
                    return Ok(Some(Chunk {
                        file: file_index,
                        data: buffer,
                        overlong: true,
                    }));
                }
            }
        }
    }
}

/// What a worker learns from one block, assuming its first line links to what came before.
#[derive(Debug)]
struct Summary {
    first: Option<First>,
    /// Lines in the block (meaningful when it verified to the end).
    lines: u64,
    /// Entries that verified.
    verified: u64,
    /// The last entry that verified.
    last: Option<(u64, [u8; 64])>,
    /// The first break after the first line.
    problem: Option<Problem>,
    /// `(seq, entry_hash)` of verified entries whose seq was asked for.
    collected: Vec<(u64, [u8; 64])>,
}

/// The first line of a block, whose links only the merge can check.
#[derive(Debug)]
enum First {
    /// Malformed or of the wrong version: broken whatever came before.
    Broken(LineProblem),
    /// Sound so far: `seq` and `prev_hash` are for the merge to check, then the hash.
    Sound {
        seq: u64,
        prev_hash: Vec<u8>,
        hash_problem: Option<LineProblem>,
    },
}

#[derive(Debug)]
struct Problem {
    /// 1-based line within the block.
    line: u64,
    /// The seq the line should have had.
    expected: Option<u64>,
    problem: LineProblem,
}

impl Chunk {
    fn verify(&self, context: &Context<'_>, scanner: &mut Scanner) -> Summary {
        let mut summary = Summary {
            first: None,
            lines: 0,
            verified: 0,
            last: None,
            problem: None,
            collected: Vec::new(),
        };
        if self.overlong {
            summary.first = Some(First::Broken(LineProblem::malformed(format!(
                "the line is longer than {MAX_ENTRY_BYTES} bytes"
            ))));
            return summary;
        }
        let data = self.data.as_slice();
        let mut start = 0;
        let mut wanted = 0;
        let mut ends = memchr::memchr_iter(b'\n', data);
        while start < data.len() {
            let (line, terminated) = match ends.next() {
                Some(end) => (&data[start..end], true),
                None => (&data[start..], false),
            };
            start += line.len() + 1;
            summary.lines += 1;
            let checked = if terminated {
                scanner.check(line, context.kind, context.recanonicalise)
            } else {
                Err(LineProblem::malformed(
                    "no newline at the end of the file: a torn write",
                ))
            };
            let Some((last_seq, last_hash)) = summary.last else {
                // The first line: report what it is and let the merge link it.
                match checked {
                    Err(problem) => summary.first = Some(First::Broken(problem)),
                    Ok(checked) => {
                        let sound = checked.hash_problem.is_none();
                        summary.first = Some(First::Sound {
                            seq: checked.seq,
                            prev_hash: scanner.prev_hash().to_vec(),
                            hash_problem: checked.hash_problem,
                        });
                        if sound {
                            wanted = context.want.partition_point(|&w| w < checked.seq);
                            summary.verified = 1;
                            summary.last = Some((checked.seq, checked.entry_hash));
                            collect(
                                &mut summary,
                                context.want,
                                &mut wanted,
                                checked.seq,
                                checked.entry_hash,
                            );
                            continue;
                        }
                    }
                }
                return summary;
            };
            let expected = last_seq.checked_add(1);
            let problem = match checked {
                Err(problem) => Some(problem),
                Ok(checked) if Some(checked.seq) != expected => {
                    Some(seq_gap(checked.seq, expected))
                }
                Ok(Checked {
                    hash_problem: Some(problem),
                    ..
                }) => Some(problem),
                Ok(_) if scanner.prev_hash() != last_hash.as_slice() => Some(prev_mismatch(
                    scanner.prev_hash(),
                    &last_hash,
                    Some(last_seq),
                )),
                Ok(checked) => {
                    summary.verified += 1;
                    summary.last = Some((checked.seq, checked.entry_hash));
                    collect(
                        &mut summary,
                        context.want,
                        &mut wanted,
                        checked.seq,
                        checked.entry_hash,
                    );
                    None
                }
            };
            if let Some(problem) = problem {
                summary.problem = Some(Problem {
                    line: summary.lines,
                    expected,
                    problem,
                });
                return summary;
            }
        }
        summary
    }
}

fn collect(summary: &mut Summary, want: &[u64], cursor: &mut usize, seq: u64, hash: [u8; 64]) {
    // Verified seqs only go up by one, so one cursor walks `want` once per block.
    while want.get(*cursor).is_some_and(|&w| w < seq) {
        *cursor += 1;
    }
    if want.get(*cursor) == Some(&seq) {
        summary.collected.push((seq, hash));
    }
}

fn seq_gap(seq: u64, expected: Option<u64>) -> LineProblem {
    let detail = match expected {
        Some(expected) => format!("seq is {seq}, expected {expected}"),
        None => format!("seq is {seq}, but the previous entry has the largest possible seq"),
    };
    LineProblem {
        kind: BreakKind::SeqGap,
        detail,
    }
}

fn prev_mismatch(prev_hash: &[u8], expected: &[u8], of_seq: Option<u64>) -> LineProblem {
    let detail = match of_seq {
        Some(seq) => format!(
            "prev_hash {} is not the entry_hash of seq {seq} ({})",
            shorten(prev_hash),
            shorten(expected)
        ),
        None => format!(
            "prev_hash {} is not the genesis value ({})",
            shorten(prev_hash),
            shorten(expected)
        ),
    };
    LineProblem {
        kind: BreakKind::PrevMismatch,
        detail,
    }
}

/// Joins block summaries in chain order.
#[derive(Debug)]
struct Merge<'a> {
    files: &'a [PathBuf],
    /// The seq the next entry must have (`None` after `u64::MAX`).
    expected: Option<u64>,
    /// The hash the next entry's `prev_hash` must be.
    expected_prev: Vec<u8>,
    head: Option<ChainHead>,
    entries: u64,
    file: Option<usize>,
    lines_before: u64,
    hashes: BTreeMap<u64, String>,
    broken: Option<(u64, ChainBreak)>,
}

impl<'a> Merge<'a> {
    fn new(files: &'a [PathBuf], options: &VerifyOptions) -> Self {
        let (expected, expected_prev) = match &options.start {
            Some(head) => (head.seq.checked_add(1), head.entry_hash.as_bytes().to_vec()),
            None => (Some(0), GENESIS_PREV_HASH.as_bytes().to_vec()),
        };
        Self {
            files,
            expected,
            expected_prev,
            head: options.start.clone(),
            entries: 0,
            file: None,
            lines_before: 0,
            hashes: BTreeMap::new(),
            broken: None,
        }
    }

    fn is_settled(&self) -> bool {
        self.broken.is_some()
    }

    /// Takes the next block's summary; true once the chain has broken (nothing after matters).
    fn absorb(&mut self, file: usize, summary: Summary) -> bool {
        if self.file != Some(file) {
            self.file = Some(file);
            self.lines_before = 0;
        }
        let Some(first) = summary.first else {
            return false;
        };
        let first_problem = match first {
            First::Broken(problem) => Some(problem),
            First::Sound { seq, .. } if Some(seq) != self.expected => {
                Some(seq_gap(seq, self.expected))
            }
            First::Sound {
                hash_problem: Some(problem),
                ..
            } => Some(problem),
            First::Sound { prev_hash, .. } if prev_hash != self.expected_prev => {
                let of_seq = self.head.as_ref().map(|h| h.seq);
                Some(prev_mismatch(&prev_hash, &self.expected_prev, of_seq))
            }
            First::Sound { .. } => None,
        };
        if let Some(problem) = first_problem {
            self.break_at(file, 1, self.expected, problem);
            return true;
        }
        self.entries += summary.verified;
        for (seq, hash) in &summary.collected {
            self.hashes
                .insert(*seq, String::from_utf8_lossy(hash).into_owned());
        }
        if let Some((seq, hash)) = summary.last {
            self.expected = seq.checked_add(1);
            self.expected_prev.clear();
            self.expected_prev.extend_from_slice(&hash);
            self.head = Some(ChainHead {
                seq,
                entry_hash: String::from_utf8_lossy(&hash).into_owned(),
            });
        }
        if let Some(problem) = summary.problem {
            self.break_at(file, problem.line, problem.expected, problem.problem);
            return true;
        }
        self.lines_before += summary.lines;
        false
    }

    fn break_at(&mut self, file: usize, line: u64, expected: Option<u64>, problem: LineProblem) {
        let error = ChainBreak {
            kind: problem.kind,
            file: self
                .files
                .get(file)
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            line: self.lines_before + line,
            detail: problem.detail,
        };
        self.broken = Some((expected.unwrap_or(u64::MAX), error));
    }

    fn finish(self) -> Verified {
        let (first_broken_at, error) = match self.broken {
            Some((at, error)) => (Some(at), Some(error)),
            None => (None, None),
        };
        let unwitnessed_tail = self.head.as_ref().map(|head| UnwitnessedTail {
            from_seq: 0,
            to_seq: head.seq,
            seconds: None,
        });
        Verified {
            report: IntegrityReport {
                valid: error.is_none(),
                entries_checked: self.entries,
                segments: self.files.len() as u64,
                head: self.head,
                first_broken_at,
                error,
                unwitnessed_tail,
                checkpoints_checked: 0,
            },
            hashes: self.hashes,
        }
    }
}

/// A checkpoints file as read: the checkpoints up to the first line that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The checkpoints, in file order.
    pub checkpoints: Vec<Checkpoint>,
    /// The first malformed line (1-based) and why; nothing after it was read.
    pub malformed: Option<(u64, String)>,
}

/// Reads a checkpoints file. A line that is not a checkpoint (not `\n`-terminated, not a JSON
/// object with unique keys, unknown or missing members, a timestamp that is not RFC 3339) ends
/// the reading and is reported as `malformed_line` by [`verify_checkpoints`].
pub fn read_checkpoints(path: &Path) -> Result<CheckpointFile, VerifyError> {
    let mut reader = BufReader::new(File::open(path).map_err(read_error(path))?);
    let mut result = CheckpointFile {
        path: path.to_path_buf(),
        checkpoints: Vec::new(),
        malformed: None,
    };
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_CHECKPOINT_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(read_error(path))?;
        if read == 0 {
            return Ok(result);
        }
        number += 1;
        let parsed = match line.strip_suffix(b"\n") {
            Some(body) => parse_checkpoint(body),
            None if line.len() as u64 > MAX_CHECKPOINT_LINE => Err(format!(
                "the line is longer than {MAX_CHECKPOINT_LINE} bytes"
            )),
            None => Err("no newline at the end of the file: a torn write".to_owned()),
        };
        match parsed {
            Ok(checkpoint) => result.checkpoints.push(checkpoint),
            Err(detail) => {
                result.malformed = Some((number, detail));
                return Ok(result);
            }
        }
    }
}

fn parse_checkpoint(line: &[u8]) -> Result<Checkpoint, String> {
    if line.is_empty() {
        return Err("empty line".to_owned());
    }
    let value = parse_strict(line).map_err(|e| format!("not a JSON object: {e}"))?;
    if !value.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let checkpoint: Checkpoint =
        serde_json::from_value(value).map_err(|e| format!("not a checkpoint: {e}"))?;
    checkpoint
        .timestamp
        .parse::<Timestamp>()
        .map_err(|e| format!("timestamp {:?} is not RFC 3339: {e}", checkpoint.timestamp))?;
    Ok(checkpoint)
}

/// The verdict on a checkpoints file against a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVerdict {
    /// Checkpoints that verified before the first problem.
    pub checkpoints_checked: u64,
    /// The first problem: the seq it concerns (see [`verify_checkpoints`]) and the break.
    pub problem: Option<(u64, ChainBreak)>,
    /// Entries after the last checkpoint that verified.
    pub unwitnessed_tail: Option<UnwitnessedTail>,
}

impl CheckpointVerdict {
    /// Adds this verdict to the chain's report. Of a chain break and a checkpoint problem, the
    /// one at the lower seq is reported; the chain's wins a tie.
    pub fn apply(&self, report: &mut IntegrityReport) {
        report.checkpoints_checked = self.checkpoints_checked;
        report.unwitnessed_tail = self.unwitnessed_tail.clone();
        if let Some((at, error)) = &self.problem
            && report.first_broken_at.is_none_or(|chain_at| *at < chain_at)
        {
            report.valid = false;
            report.first_broken_at = Some(*at);
            report.error = Some(error.clone());
        }
    }
}

/// The epoch state after a checkpoint that verified.
#[derive(Debug)]
struct Anchor<'a> {
    checkpoint: &'a Checkpoint,
    hash: String,
    /// The current epoch's key, which must sign the next checkpoint.
    key: VerifyingKey,
}

/// Verifies checkpoints against a chain verified by [`verify_chain`] with their seqs
/// collected.
///
/// In order, per checkpoint: continuity (`checkpoint_seq` from 0 without gaps,
/// `prev_checkpoint_hash`, `seq` never going back: `checkpoint_gap`); the signature chain
/// (same `runtime_id` throughout, the trusted one if given; checkpoint 0 opens epoch 0 and is
/// signed by the identity key; each later one stays in its predecessor's epoch without a key,
/// or opens the next with a key, and is signed by the current epoch's key: `bad_signature`);
/// `entries` = `seq` + 1 and the hash at `seq` (`checkpoint_mismatch`); the chain still
/// reaching `seq` (`truncated_after_checkpoint`).
///
/// The seq a problem concerns is the checkpoint's `seq` (0 while the chain was empty); for a
/// truncation, the first missing entry; for a malformed line, the first entry after the last
/// sound checkpoint.
pub fn verify_checkpoints(
    file: &CheckpointFile,
    chain: &Verified,
    options: &VerifyOptions,
) -> CheckpointVerdict {
    let shown = file.path.display().to_string();
    let head = chain.report.head.as_ref();
    let mut anchor: Option<Anchor<'_>> = None;
    let mut checked = 0;
    let mut problem = None;
    for (index, checkpoint) in file.checkpoints.iter().enumerate() {
        match check_checkpoint(checkpoint, index as u64, anchor.as_ref(), chain, options) {
            Ok(next) => {
                anchor = Some(next);
                checked += 1;
            }
            Err((kind, at, detail)) => {
                let line = index as u64 + 1;
                problem = Some((
                    at,
                    ChainBreak {
                        kind,
                        file: shown.clone(),
                        line,
                        detail,
                    },
                ));
                break;
            }
        }
    }
    let last = anchor.map(|a| a.checkpoint);
    // The first entry no sound checkpoint covers.
    let unwitnessed_from = last.map_or(Some(0), |c| c.seq.map_or(Some(0), |s| s.checked_add(1)));
    if problem.is_none()
        && let Some((line, detail)) = &file.malformed
    {
        let at = unwitnessed_from.unwrap_or(u64::MAX);
        let error = ChainBreak {
            kind: BreakKind::MalformedLine,
            file: shown,
            line: *line,
            detail: detail.clone(),
        };
        problem = Some((at, error));
    }
    let unwitnessed_tail = match (head, unwitnessed_from) {
        (Some(head), Some(from_seq)) if from_seq <= head.seq => {
            let seconds = last.map(|last| {
                let now = options.now.unwrap_or_else(Timestamp::now);
                // Timestamps were checked when the file was read.
                let at = last
                    .timestamp
                    .parse::<Timestamp>()
                    .map_or(0, |t| t.as_second());
                u64::try_from(now.as_second().saturating_sub(at)).unwrap_or(0)
            });
            Some(UnwitnessedTail {
                from_seq,
                to_seq: head.seq,
                seconds,
            })
        }
        _ => None,
    };
    CheckpointVerdict {
        checkpoints_checked: checked,
        problem,
        unwitnessed_tail,
    }
}

type CheckpointProblem = (BreakKind, u64, String);

fn check_checkpoint<'a>(
    checkpoint: &'a Checkpoint,
    index: u64,
    previous: Option<&Anchor<'a>>,
    chain: &Verified,
    options: &VerifyOptions,
) -> Result<Anchor<'a>, CheckpointProblem> {
    let at = checkpoint.seq.unwrap_or(0);
    let gap = |detail: String| (BreakKind::CheckpointGap, at, detail);
    let bad = |detail: String| (BreakKind::BadSignature, at, detail);
    let n = checkpoint.checkpoint_seq;

    if n != index {
        return Err(gap(format!("checkpoint_seq is {n}, expected {index}")));
    }
    let expected_link = previous.map_or(GENESIS_CHECKPOINT_HASH, |p| p.hash.as_str());
    if checkpoint.prev_checkpoint_hash != expected_link {
        return Err(gap(format!(
            "prev_checkpoint_hash of checkpoint {n} is not the hash of checkpoint {}",
            index.wrapping_sub(1)
        )));
    }
    if let Some(previous) = previous
        && checkpoint.seq < previous.checkpoint.seq
    {
        return Err(gap(format!(
            "checkpoint {n} covers seq {}, before checkpoint {}'s {}",
            show_seq(checkpoint.seq),
            previous.checkpoint.checkpoint_seq,
            show_seq(previous.checkpoint.seq)
        )));
    }

    let epoch = checkpoint.epoch;
    let new_key = match &checkpoint.epoch_public_key {
        Some(text) => Some(decode_public_key(text).ok_or_else(|| {
            bad(format!(
                "checkpoint {n}'s epoch_public_key is not an Ed25519 key"
            ))
        })?),
        None => None,
    };
    let (signer, key) = match previous {
        None => {
            let runtime_id = &checkpoint.runtime_id;
            if let Some(trusted) = &options.trusted_runtime_id
                && trusted != runtime_id
            {
                return Err(bad(format!(
                    "runtime_id {runtime_id} is not the trusted {trusted}"
                )));
            }
            let identity = decode_public_key(runtime_id)
                .ok_or_else(|| bad(format!("runtime_id {runtime_id} is not an Ed25519 key")))?;
            if epoch != 0 {
                return Err(bad(format!("checkpoint 0 is in epoch {epoch}, not 0")));
            }
            let key = new_key
                .ok_or_else(|| bad("checkpoint 0 does not carry epoch 0's key".to_owned()))?;
            (identity, key)
        }
        Some(previous) => {
            let first_id = &previous.checkpoint.runtime_id;
            if &checkpoint.runtime_id != first_id {
                return Err(bad(format!(
                    "checkpoint {n} names runtime_id {}, not {first_id}",
                    checkpoint.runtime_id
                )));
            }
            let current = previous.checkpoint.epoch;
            match new_key {
                Some(key) if Some(epoch) == current.checked_add(1) => (previous.key, key),
                None if epoch == current => (previous.key, previous.key),
                Some(_) => {
                    return Err(bad(format!(
                        "checkpoint {n} opens epoch {epoch} after epoch {current}"
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "checkpoint {n} is in epoch {epoch} after epoch {current}, without a key"
                    )));
                }
            }
        }
    };
    if !checkpoint.signature_verifies(&signer) {
        let whose = if previous.is_none() {
            "the runtime identity key".to_owned()
        } else {
            format!("epoch {}'s key", previous.map_or(0, |p| p.checkpoint.epoch))
        };
        return Err(bad(format!(
            "checkpoint {n}'s signature does not verify under {whose}"
        )));
    }

    let mismatch = |detail: String| (BreakKind::CheckpointMismatch, at, detail);
    match checkpoint.seq {
        None if checkpoint.entries != 0 || checkpoint.entry_hash != GENESIS_PREV_HASH => {
            return Err(mismatch(format!(
                "checkpoint {n} covers no entry but says entries {} and entry_hash {}",
                checkpoint.entries,
                shorten(checkpoint.entry_hash.as_bytes())
            )));
        }
        None => {}
        Some(seq) => {
            if Some(checkpoint.entries) != seq.checked_add(1) {
                return Err(mismatch(format!(
                    "checkpoint {n} covers seq {seq} but says entries {}",
                    checkpoint.entries
                )));
            }
            let Some(head) = chain.report.head.as_ref().filter(|h| h.seq >= seq) else {
                let first_missing = chain.report.head.as_ref().map_or(0, |h| h.seq + 1);
                return Err((
                    BreakKind::TruncatedAfterCheckpoint,
                    first_missing,
                    format!(
                        "checkpoint {n} witnessed seq {seq}, but the chain ends {}",
                        chain.report.head.as_ref().map_or_else(
                            || "before its first entry".to_owned(),
                            |h| format!("at seq {}", h.seq)
                        )
                    ),
                ));
            };
            let known = chain.hashes.get(&seq).or_else(|| {
                let start = options.start.as_ref().filter(|s| s.seq == seq);
                start
                    .map(|s| &s.entry_hash)
                    .or((head.seq == seq).then_some(&head.entry_hash))
            });
            // Entries before a `start` were not read: nothing to compare them with.
            if let Some(known) = known
                && *known != checkpoint.entry_hash
            {
                return Err(mismatch(format!(
                    "checkpoint {n} witnessed entry_hash {} at seq {seq}, the chain has {known}",
                    shorten(checkpoint.entry_hash.as_bytes())
                )));
            }
        }
    }
    Ok(Anchor {
        checkpoint,
        hash: checkpoint.checkpoint_hash(),
        key,
    })
}

fn show_seq(seq: Option<u64>) -> String {
    seq.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_in_chain_order() {
        let kind = ChainKind::Trace;
        let mut names = vec![
            kind.segment_name(50, Some(1)),
            kind.segment_name(1_000_000_000_000, None),
            kind.segment_name(50, None),
            kind.segment_name(0, None),
        ];
        names.sort();
        assert_eq!(
            names,
            [
                "decisions-000000000000.jsonl",
                "decisions-000000000050.jsonl",
                "decisions-000000000050.r1.jsonl",
                "decisions-1000000000000.jsonl"
            ]
        );
        assert!(names.iter().all(|n| kind.is_segment_name(n)));
        assert!(ChainKind::Audit.is_segment_name(&ChainKind::Audit.segment_name(3, None)));
    }

    #[test]
    fn other_names_are_not_segments() {
        for name in [
            "checkpoints.jsonl",
            "decisions-6.jsonl",
            "decisions-000000000006.json",
            "decisions-000000000006.x1.jsonl",
            "decisions-000000000006.r.jsonl",
            "audit-000000000006.jsonl",
            ".decisions-000000000006.jsonl.partial",
        ] {
            assert!(!ChainKind::Trace.is_segment_name(name), "{name}");
        }
    }
}
