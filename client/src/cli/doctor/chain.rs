//! The head of a hash chain (the decision trace or the audit log), read from its files with the
//! daemon stopped — and never written to.
//!
//! This is the check the daemon makes at every start, done read-only: the last segment that has
//! entries is verified with the protocol crate's verifier, continuing from the last line of the
//! segment before it, and the head found is compared with the last one recorded in
//! `state/heads.json`. It reads one segment (at most `trace.segment_max_bytes`, 64 MiB by
//! default) and the last few MiB of the one before, never the whole chain; `atlasbridge trace
//! integrity-check` is the full verification.
//!
//! A torn last line — bytes after the last newline, or a last line that is not JSON — is what
//! the daemon cuts off at its next start (and records as `trace_recovered`); it is told apart
//! from a real break.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use atlasbridge_protocol::heads::{self, Continuity};
use atlasbridge_protocol::trace::repairs;
use atlasbridge_protocol::trace::verify::{self, ChainKind, VerifyOptions};
use atlasbridge_protocol::trace::{BreakKind, ChainBreak, ChainHead, check_line};

/// How far back from the end to look for the last lines (the daemon's own window).
const TAIL_WINDOW: u64 = 4 * 1024 * 1024;

/// What the files say about a chain's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainFiles {
    /// No entries, and none were recorded.
    Empty,
    /// The last segment verifies from the end of the one before it.
    Valid {
        head: ChainHead,
        /// The segment verified.
        segment: PathBuf,
        /// Entries verified in it.
        entries: u64,
        /// Bytes of a torn last line that the daemon will cut at its next start.
        torn: Option<u64>,
    },
    /// The last segment does not verify.
    Broken {
        error: ChainBreak,
        first_broken_at: Option<u64>,
    },
    /// The chain ends before the head recorded in the state file: entries were removed.
    Lost {
        expected: ChainHead,
        found: Option<ChainHead>,
        state_file: PathBuf,
    },
    /// The files could not be read.
    Unreadable(String),
}

/// `<data_dir>/trace` or `<data_dir>/audit`.
pub(crate) fn chain_dir(data_dir: &Path, kind: ChainKind) -> PathBuf {
    match kind {
        ChainKind::Trace => data_dir.join("trace"),
        ChainKind::Audit => data_dir.join("audit"),
    }
}

/// Inspects the head of the `kind` chain in `data_dir`.
pub(crate) fn inspect(data_dir: &Path, kind: ChainKind) -> ChainFiles {
    let found = match head_of_files(&chain_dir(data_dir, kind), kind) {
        Ok(found) => found,
        Err(verdict) => return verdict,
    };
    let recorded = match heads::load(data_dir) {
        Ok(recorded) => recorded,
        Err(why) => return ChainFiles::Unreadable(why),
    };
    let recorded = recorded.and_then(|h| match kind {
        ChainKind::Trace => h.trace,
        ChainKind::Audit => h.audit,
    });
    let found_head = match &found {
        ChainFiles::Valid { head, .. } => Some(head.clone()),
        _ => None,
    };
    if let Continuity::Lost { expected, found } =
        heads::continuity(recorded.as_ref(), found_head.as_ref())
    {
        return ChainFiles::Lost {
            expected,
            found,
            state_file: heads::path(data_dir),
        };
    }
    found
}

/// The verdict on the segments alone; `Err` carries a verdict that needs no state file.
fn head_of_files(dir: &Path, kind: ChainKind) -> Result<ChainFiles, ChainFiles> {
    let files = match verify::segment_files(dir, kind) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ChainFiles::Empty),
        Err(e) => {
            return Err(ChainFiles::Unreadable(format!(
                "cannot list {}: {e}",
                dir.display()
            )));
        }
    };
    // Segments opened by `trace repair` continue from the entry the repair named, not from the
    // end of the segment before them (as the daemon checks at start).
    let repairs = repairs::load(dir).map_err(|e| {
        ChainFiles::Unreadable(format!(
            "cannot read {}: {e}",
            dir.join(repairs::REPAIRS_FILE).display()
        ))
    })?;
    let repaired_from = |file: &Path| {
        file.file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| repairs::continues_from(&repairs, name))
            .cloned()
    };
    if let Some(last) = files.last()
        && std::fs::metadata(last).is_ok_and(|m| m.len() == 0)
        && let Some(from) = repaired_from(last)
    {
        return Ok(match from {
            Some(head) => ChainFiles::Valid {
                head,
                segment: last.clone(),
                entries: 0,
                torn: None,
            },
            None => ChainFiles::Empty,
        });
    }
    // A segment that cannot be stat'ed counts as non-empty, so that reading it reports why.
    let non_empty: Vec<&PathBuf> = files
        .iter()
        .filter(|f| std::fs::metadata(f).map(|m| m.len() > 0).unwrap_or(true))
        .collect();
    let Some((tail, before)) = non_empty.split_last() else {
        return Ok(ChainFiles::Empty);
    };
    let start = match (repaired_from(tail), before.last()) {
        (Some(from), _) => from,
        (None, Some(previous)) => {
            let lines = last_lines(previous).map_err(ChainFiles::Unreadable)?;
            let line = lines.complete.last().map_or(&[][..], Vec::as_slice);
            match check_line(line, kind) {
                Ok(facts) => Some(ChainHead {
                    seq: facts.seq,
                    entry_hash: facts.entry_hash,
                }),
                Err(problem) => {
                    return Err(ChainFiles::Broken {
                        error: ChainBreak {
                            kind: problem.kind,
                            file: previous.display().to_string(),
                            line: 0,
                            detail: format!(
                                "the last line of the segment before the last is unusable: {}",
                                problem.detail
                            ),
                        },
                        first_broken_at: None,
                    });
                }
            }
        }
        (None, None) => None,
    };
    let options = VerifyOptions {
        kind,
        start: start.clone(),
        ..VerifyOptions::default()
    };
    let report = verify::verify_files(&[(*tail).clone()], &options)
        .map_err(|e| ChainFiles::Unreadable(e.to_string()))?
        .report;
    let segment = (*tail).clone();
    if report.valid {
        return Ok(match report.head.or(start) {
            Some(head) => ChainFiles::Valid {
                head,
                segment,
                entries: report.entries_checked,
                torn: None,
            },
            None => ChainFiles::Empty,
        });
    }
    let Some(error) = report.error else {
        return Err(ChainFiles::Unreadable(format!(
            "{} does not verify, and the verifier gave no reason",
            segment.display()
        )));
    };
    // A break at the torn tail itself, right after the last sound line, is what the daemon
    // cuts at its next start; anything else is a real break.
    let lines = last_lines(&segment).map_err(ChainFiles::Unreadable)?;
    if let Some(torn) = lines.torn
        && error.kind == BreakKind::MalformedLine
    {
        let sound_before = match lines.complete.last() {
            Some(line) => check_line(line, kind).ok().map(|f| f.seq),
            None => start.as_ref().map(|h| h.seq),
        };
        let head = report.head.clone().or(start);
        if head.as_ref().map(|h| h.seq) == sound_before {
            return Ok(match head {
                Some(head) => ChainFiles::Valid {
                    head,
                    segment,
                    entries: report.entries_checked,
                    torn: Some(torn),
                },
                None => ChainFiles::Empty,
            });
        }
    }
    Err(ChainFiles::Broken {
        error,
        first_broken_at: report.first_broken_at,
    })
}

/// The complete lines at the end of a segment (without their newlines) before a torn tail, and
/// the torn tail's length.
#[derive(Debug, Default)]
struct LastLines {
    complete: Vec<Vec<u8>>,
    torn: Option<u64>,
}

/// Reads the last [`TAIL_WINDOW`] bytes of `path` and splits off a torn tail as the daemon does:
/// bytes after the last newline, or else a last line that is not JSON.
fn last_lines(path: &Path) -> Result<LastLines, String> {
    let io = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let mut file = File::open(path).map_err(|e| io("open", e))?;
    let len = file.metadata().map_err(|e| io("stat", e))?.len();
    let window_start = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(window_start))
        .map_err(|e| io("seek in", e))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(|e| io("read", e))?;

    let mut torn = None;
    let mut body: &[u8] = &tail;
    match body.iter().rposition(|b| *b == b'\n') {
        Some(last_newline) if last_newline + 1 < body.len() => {
            torn = Some((body.len() - last_newline - 1) as u64);
            body = &body[..=last_newline];
        }
        None if !body.is_empty() => {
            torn = Some(body.len() as u64);
            body = &[];
        }
        _ => {}
    }
    let mut complete: Vec<Vec<u8>> = body
        .split_inclusive(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\n").unwrap_or(line).to_vec())
        .collect();
    if window_start > 0 && !complete.is_empty() {
        // The window may start inside a line.
        complete.remove(0);
    }
    if torn.is_none()
        && let Some(last) = complete.last()
        && serde_json::from_slice::<serde_json::Value>(last).is_err()
    {
        torn = Some(last.len() as u64 + 1);
        complete.pop();
    }
    Ok(LastLines { complete, torn })
}

#[cfg(test)]
mod tests {
    use atlasbridge_protocol::heads::Heads;
    use atlasbridge_protocol::trace::{GENESIS_PREV_HASH, seal};
    use serde_json::{Map, Value, json};

    use super::*;

    /// `count` trace entries from `first` on, linked to `prev`; returns the lines and the last
    /// hash.
    fn entries(first: u64, count: u64, prev: &str) -> (Vec<u8>, String) {
        let mut bytes = Vec::new();
        let mut prev = prev.to_owned();
        for seq in first..first + count {
            let body: Map<String, Value> = json!({
                "trace_version": 2,
                "seq": seq,
                "session_id": "s",
                "prev_hash": prev,
            })
            .as_object()
            .unwrap()
            .clone();
            let sealed = seal(&body);
            bytes.extend_from_slice(&sealed.line);
            prev = sealed.entry_hash;
        }
        (bytes, prev)
    }

    fn segment(data: &Path, first_seq: u64, bytes: &[u8]) -> PathBuf {
        let dir = data.join("trace");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(ChainKind::Trace.segment_name(first_seq, None));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn no_directory_is_an_empty_chain() {
        let data = tempfile::tempdir().unwrap();
        assert_eq!(inspect(data.path(), ChainKind::Trace), ChainFiles::Empty);
    }

    /// A segment `trace repair` opened links back past a broken segment: it verifies from the
    /// entry the repair recorded, and a segment that links back without that record is a break.
    #[test]
    fn a_repair_segment_verifies_from_the_entry_it_was_linked_to() {
        use atlasbridge_protocol::trace::repairs::{REPAIRS_FILE, Repair};
        let data = tempfile::tempdir().unwrap();
        // The first segment runs to seq 5 (the daemon found it broken at seq 3); the repair
        // continues from seq 2.
        let (first, _) = entries(0, 6, GENESIS_PREV_HASH);
        let (_, hash_at_2) = entries(0, 3, GENESIS_PREV_HASH);
        segment(data.path(), 0, &first);
        let (repaired, last) = entries(3, 2, &hash_at_2);
        let tail = segment(data.path(), 3, &repaired);
        assert!(matches!(
            inspect(data.path(), ChainKind::Trace),
            ChainFiles::Broken { .. }
        ));
        let record = Repair {
            segment: ChainKind::Trace.segment_name(3, None),
            continues_from: Some(ChainHead {
                seq: 2,
                entry_hash: hash_at_2,
            }),
        };
        std::fs::write(data.path().join("trace").join(REPAIRS_FILE), record.line()).unwrap();
        assert_eq!(
            inspect(data.path(), ChainKind::Trace),
            ChainFiles::Valid {
                head: ChainHead {
                    seq: 4,
                    entry_hash: last
                },
                segment: tail,
                entries: 2,
                torn: None,
            }
        );
    }

    #[test]
    fn the_last_segment_verifies_from_the_end_of_the_one_before() {
        let data = tempfile::tempdir().unwrap();
        let (first, hash) = entries(0, 3, GENESIS_PREV_HASH);
        segment(data.path(), 0, &first);
        let (second, last) = entries(3, 2, &hash);
        let tail = segment(data.path(), 3, &second);
        assert_eq!(
            inspect(data.path(), ChainKind::Trace),
            ChainFiles::Valid {
                head: ChainHead {
                    seq: 4,
                    entry_hash: last
                },
                segment: tail,
                entries: 2,
                torn: None,
            }
        );
    }

    #[test]
    fn a_tampered_entry_in_the_last_segment_is_a_break_at_its_line() {
        let data = tempfile::tempdir().unwrap();
        let (bytes, _) = entries(0, 4, GENESIS_PREV_HASH);
        let text = String::from_utf8(bytes).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[2] = lines[2].replace("\"session_id\":\"s\"", "\"session_id\":\"x\"");
        let path = segment(data.path(), 0, format!("{}\n", lines.join("\n")).as_bytes());
        let ChainFiles::Broken {
            error,
            first_broken_at,
        } = inspect(data.path(), ChainKind::Trace)
        else {
            panic!("not broken");
        };
        assert_eq!(error.kind, BreakKind::HashMismatch);
        assert_eq!(error.line, 3);
        assert_eq!(error.file, path.display().to_string());
        assert_eq!(first_broken_at, Some(2));
    }

    #[test]
    fn a_torn_last_line_is_told_apart_from_a_break() {
        let data = tempfile::tempdir().unwrap();
        let (mut bytes, hash) = entries(0, 3, GENESIS_PREV_HASH);
        bytes.extend_from_slice(b"{\"trace_version\":2,\"seq\":3,\"sess");
        segment(data.path(), 0, &bytes);
        let verdict = inspect(data.path(), ChainKind::Trace);
        assert!(
            matches!(
                &verdict,
                ChainFiles::Valid { head, torn: Some(32), entries: 3, .. }
                    if head.seq == 2 && head.entry_hash == hash
            ),
            "{verdict:?}"
        );

        // A last line that ends in a newline but is not JSON is torn too.
        let (mut bytes, _) = entries(0, 2, GENESIS_PREV_HASH);
        bytes.extend_from_slice(b"{\"trace_version\":2,\n");
        segment(data.path(), 0, &bytes);
        let verdict = inspect(data.path(), ChainKind::Trace);
        assert!(
            matches!(&verdict, ChainFiles::Valid { torn: Some(20), .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_chain_shorter_than_its_recorded_head_lost_entries() {
        let data = tempfile::tempdir().unwrap();
        let (bytes, _) = entries(0, 2, GENESIS_PREV_HASH);
        segment(data.path(), 0, &bytes);
        let state = Heads {
            trace: Some(ChainHead {
                seq: 5,
                entry_hash: "ab".repeat(32),
            }),
            ..Heads::default()
        };
        std::fs::create_dir_all(data.path().join("state")).unwrap();
        std::fs::write(
            heads::path(data.path()),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let verdict = inspect(data.path(), ChainKind::Trace);
        assert!(
            matches!(&verdict, ChainFiles::Lost { expected, found: Some(found), .. }
                if expected.seq == 5 && found.seq == 1),
            "{verdict:?}"
        );
    }
}
