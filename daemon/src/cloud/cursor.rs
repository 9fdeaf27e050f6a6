//! The uplink's persisted cursors: per stream, the last seq the cloud acknowledged.
//!
//! `<data_dir>/cloud/cursor`, JSON, replaced atomically. The cursor only ever moves forward, and
//! only on an ack; losing its last moves (a crash between an ack and the next write) only makes
//! the uplink send those entries again, which the cloud deduplicates.

use std::path::{Path, PathBuf};

use atlasbridge_protocol::cloud::messages::Stream;
use serde::{Deserialize, Serialize};

/// The last acknowledged seq of each stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    /// The decision trace.
    pub trace: Option<u64>,
    /// The audit log.
    pub audit: Option<u64>,
    /// The last checkpoint (`checkpoint_seq`) the cloud acknowledged.
    #[serde(default)]
    pub checkpoint: Option<u64>,
}

impl Cursors {
    /// The last acknowledged seq of `stream`.
    pub fn acked(&self, stream: Stream) -> Option<u64> {
        match stream {
            Stream::Trace => self.trace,
            Stream::Audit => self.audit,
        }
    }

    /// Moves `stream`'s cursor forward to `seq`; false when that is not forward.
    pub fn advance(&mut self, stream: Stream, seq: u64) -> bool {
        let slot = match stream {
            Stream::Trace => &mut self.trace,
            Stream::Audit => &mut self.audit,
        };
        if slot.is_some_and(|current| current >= seq) {
            return false;
        }
        *slot = Some(seq);
        true
    }

    /// Moves the checkpoint cursor forward to `checkpoint_seq`; false when that is not forward.
    pub fn advance_checkpoint(&mut self, checkpoint_seq: u64) -> bool {
        if self
            .checkpoint
            .is_some_and(|current| current >= checkpoint_seq)
        {
            return false;
        }
        self.checkpoint = Some(checkpoint_seq);
        true
    }

    /// The first seq of `stream` the cloud does not have by the cursor.
    pub fn next(&self, stream: Stream) -> u64 {
        self.acked(stream).map_or(0, |seq| seq + 1)
    }
}

/// `<data_dir>/cloud/cursor`.
pub fn cursor_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cloud").join("cursor")
}

/// Reads the cursors; a missing file is the start of both streams.
pub fn load(path: &Path) -> Result<Cursors, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("cannot read the cloud cursor {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cursors::default()),
        Err(e) => Err(format!(
            "cannot read the cloud cursor {}: {e}",
            path.display()
        )),
    }
}

/// Writes the cursors atomically.
pub fn store(path: &Path, cursors: &Cursors) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(cursors).map_err(std::io::Error::other)?;
    crate::files::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_only_move_forward_and_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = cursor_path(dir.path());
        assert_eq!(load(&path).unwrap(), Cursors::default());
        let mut cursors = Cursors::default();
        assert_eq!(cursors.next(Stream::Trace), 0);
        assert!(cursors.advance(Stream::Trace, 9));
        assert!(!cursors.advance(Stream::Trace, 3));
        assert!(cursors.advance(Stream::Audit, 0));
        store(&path, &cursors).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, cursors);
        assert_eq!(loaded.next(Stream::Trace), 10);
        assert_eq!(loaded.next(Stream::Audit), 1);
    }

    #[test]
    fn a_damaged_cursor_is_an_error_not_a_restart_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = cursor_path(dir.path());
        store(&path, &Cursors::default()).unwrap();
        std::fs::write(&path, b"{oops").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .contains("cannot read the cloud cursor")
        );
    }
}
