//! Reads a chain's stored lines in order from a seq on, following the writer as it appends and
//! rotates. The uplink streams from here: the trace files are the buffer, so nothing waits in
//! memory while the cloud is away.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use atlasbridge_protocol::trace::verify::ChainKind;

use crate::storage::chain::list_segments;

/// One stored entry: its seq and its line (canonical JSON, without the newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The entry's seq.
    pub seq: u64,
    /// The stored line.
    pub text: String,
}

/// A cursor over the chain in `dir`.
#[derive(Debug)]
pub struct ChainReader {
    dir: PathBuf,
    kind: ChainKind,
    /// The segments as last listed, and the one being read.
    segments: Vec<PathBuf>,
    current: usize,
    file: Option<BufReader<File>>,
    /// Bytes of a line the writer has not finished yet.
    partial: Vec<u8>,
    /// A line read but not returned because the batch was full.
    held: Option<Line>,
    next_seq: u64,
}

impl ChainReader {
    /// A reader that starts at `from_seq`.
    pub fn new(dir: &Path, kind: ChainKind, from_seq: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            kind,
            segments: Vec::new(),
            current: 0,
            file: None,
            partial: Vec::new(),
            held: None,
            next_seq: from_seq,
        }
    }

    /// The seq the next line read will have.
    pub fn next_seq(&self) -> u64 {
        self.held.as_ref().map_or(self.next_seq, |line| line.seq)
    }

    /// Up to `limit` lines and about `max_bytes` of them (a first line larger than that comes
    /// alone), from the next seq on; empty when the writer has nothing newer yet.
    pub fn read(&mut self, limit: usize, max_bytes: usize) -> std::io::Result<Vec<Line>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < limit {
            let line = match self.held.take() {
                Some(line) => line,
                None => match self.next_line()? {
                    Some(line) => line,
                    None => break,
                },
            };
            if !out.is_empty() && bytes + line.text.len() > max_bytes {
                self.held = Some(line);
                break;
            }
            bytes += line.text.len();
            out.push(line);
        }
        Ok(out)
    }

    fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if self.file.is_none() && !self.open_start()? {
                return Ok(None);
            }
            let Some(file) = self.file.as_mut() else {
                return Ok(None);
            };
            let read = file.read_until(b'\n', &mut self.partial)?;
            if read == 0 || self.partial.last() != Some(&b'\n') {
                // The end of this segment for now: either the writer will add to it, or it has
                // moved on to a newer one and this one is complete.
                if !self.move_to_next_segment()? {
                    return Ok(None);
                }
                continue;
            }
            self.partial.pop();
            let line = std::mem::take(&mut self.partial);
            let Ok(head) = crate::trace::line_head(&line, self.kind) else {
                // Start-up recovery cuts torn lines; a line that still does not parse is not an
                // entry and cannot be streamed.
                continue;
            };
            if head.seq < self.next_seq {
                continue;
            }
            self.next_seq = head.seq + 1;
            return Ok(Some(Line {
                seq: head.seq,
                text: String::from_utf8_lossy(&line).into_owned(),
            }));
        }
    }

    /// Opens the last segment that starts at or before the next seq. False when there is none.
    fn open_start(&mut self) -> std::io::Result<bool> {
        self.segments = list_segments(&self.dir, self.kind)?;
        if self.segments.is_empty() {
            return Ok(false);
        }
        self.current = self
            .segments
            .iter()
            .rposition(|s| crate::trace::first_seq_of(s).is_some_and(|f| f <= self.next_seq))
            .unwrap_or(0);
        self.file = Some(BufReader::new(File::open(&self.segments[self.current])?));
        self.partial.clear();
        Ok(true)
    }

    /// Moves to the segment after the current one, if the writer has started it.
    fn move_to_next_segment(&mut self) -> std::io::Result<bool> {
        let listed = list_segments(&self.dir, self.kind)?;
        let Some(position) = listed
            .iter()
            .position(|s| Some(s) == self.segments.get(self.current))
        else {
            // The segment vanished (a test removed it, or a repair renamed files): start over.
            self.segments = listed;
            self.file = None;
            return Ok(false);
        };
        if position + 1 >= listed.len() {
            return Ok(false);
        }
        if !self.partial.is_empty() {
            tracing::warn!(
                bytes = self.partial.len(),
                "skipping an unterminated line at the end of a complete segment"
            );
            self.partial.clear();
        }
        self.segments = listed;
        self.current = position + 1;
        self.file = Some(BufReader::new(File::open(&self.segments[self.current])?));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atlasbridge_protocol::trace::{ChainMembers, EntryBodyBuilder, GENESIS_PREV_HASH};
    use std::io::Write;

    /// Writes entries `seqs` as a valid chain into segment files of the given first seqs.
    fn write_chain(dir: &Path, segments: &[(u64, u64)]) {
        let mut prev = GENESIS_PREV_HASH.to_owned();
        for &(first, last) in segments {
            let name = ChainKind::Trace.segment_name(first, None);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap();
            for seq in first..=last {
                let mut body = EntryBodyBuilder::with_capacity(1);
                body.u64("trace_version", 2);
                let sealed = body.finish().seal(ChainMembers {
                    seq,
                    prev_hash: &prev,
                    entry_id: &format!("id-{seq}"),
                    timestamp: "2026-11-26T00:00:00.000000Z",
                });
                file.write_all(&sealed.line).unwrap();
                prev = sealed.entry_hash;
            }
        }
    }

    fn seqs(lines: &[Line]) -> Vec<u64> {
        lines.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn reads_across_segments_from_any_seq_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        write_chain(dir.path(), &[(0, 4), (5, 9)]);
        let mut reader = ChainReader::new(dir.path(), ChainKind::Trace, 3);
        assert_eq!(seqs(&reader.read(4, usize::MAX).unwrap()), [3, 4, 5, 6]);
        assert_eq!(seqs(&reader.read(100, usize::MAX).unwrap()), [7, 8, 9]);
        assert!(reader.read(100, usize::MAX).unwrap().is_empty());
        let mut small = ChainReader::new(dir.path(), ChainKind::Trace, 0);
        let first = small.read(100, 1).unwrap();
        assert_eq!(
            seqs(&first),
            [0],
            "a line larger than the budget comes alone"
        );
        assert_eq!(seqs(&small.read(2, usize::MAX).unwrap()), [1, 2]);
    }

    #[test]
    fn follows_the_writer_through_unfinished_lines_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = ChainReader::new(dir.path(), ChainKind::Trace, 0);
        assert!(
            reader.read(10, usize::MAX).unwrap().is_empty(),
            "no segment yet"
        );
        write_chain(dir.path(), &[(0, 1)]);
        let path = dir.path().join(ChainKind::Trace.segment_name(0, None));
        let whole = std::fs::read(&path).unwrap();
        let cut = whole.len() - 10;
        std::fs::write(&path, &whole[..cut]).unwrap();
        assert_eq!(seqs(&reader.read(10, usize::MAX).unwrap()), [0]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&whole[cut..])
            .unwrap();
        assert_eq!(seqs(&reader.read(10, usize::MAX).unwrap()), [1]);
        // The writer rotates: the reader moves on to the new segment.
        let dir2 = tempfile::tempdir().unwrap();
        write_chain(dir2.path(), &[(0, 1), (2, 3)]);
        let second = ChainKind::Trace.segment_name(2, None);
        std::fs::copy(dir2.path().join(&second), dir.path().join(&second)).unwrap();
        assert_eq!(seqs(&reader.read(10, usize::MAX).unwrap()), [2, 3]);
    }
}
