//! The last known heads of the trace and the audit log, kept by the daemon in
//! `<data_dir>/state/heads.json`, outside the trace directory, so that an emptied or shortened
//! trace is noticed (by the daemon at start, and by `atlasbridge trace integrity-check`) instead
//! of silently becoming a new chain.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::trace::ChainHead;

/// The last checkpoint written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMark {
    /// Its `checkpoint_seq`.
    pub checkpoint_seq: u64,
    /// Its `checkpoint_hash`.
    pub checkpoint_hash: String,
    /// The trace `seq` it covers.
    pub seq: Option<u64>,
}

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heads {
    /// The decision trace's head.
    pub trace: Option<ChainHead>,
    /// The audit log's head.
    pub audit: Option<ChainHead>,
    /// The last checkpoint.
    pub checkpoint: Option<CheckpointMark>,
}

/// `<data_dir>/state/heads.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("heads.json")
}

/// Reads the state file; `None` when there is none yet (first start).
pub fn load(data_dir: &Path) -> Result<Option<Heads>, String> {
    let file = path(data_dir);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is unreadable: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// How the recovered head compares with the last known one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuity {
    /// The chain reaches at least as far as the state file says.
    Intact,
    /// The chain is shorter than, or diverges from, what was recorded.
    Lost {
        /// What the state file recorded.
        expected: ChainHead,
        /// What was found (`None`: no entries at all).
        found: Option<ChainHead>,
    },
}

/// Compares a recovered head with the recorded one. A recovered chain may be longer (entries
/// after the last state write); it may not be shorter.
pub fn continuity(recorded: Option<&ChainHead>, found: Option<&ChainHead>) -> Continuity {
    match (recorded, found) {
        (None, _) => Continuity::Intact,
        (Some(expected), Some(found)) if found.seq >= expected.seq => Continuity::Intact,
        (Some(expected), found) => Continuity::Lost {
            expected: expected.clone(),
            found: found.cloned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64) -> ChainHead {
        ChainHead {
            seq,
            entry_hash: format!("{seq:064}"),
        }
    }

    #[test]
    fn a_shorter_or_missing_chain_is_a_loss() {
        assert_eq!(continuity(None, None), Continuity::Intact);
        assert_eq!(
            continuity(Some(&head(5)), Some(&head(9))),
            Continuity::Intact
        );
        assert_eq!(
            continuity(Some(&head(5)), Some(&head(5))),
            Continuity::Intact
        );
        assert!(matches!(
            continuity(Some(&head(5)), Some(&head(2))),
            Continuity::Lost { .. }
        ));
        assert!(matches!(
            continuity(Some(&head(5)), None),
            Continuity::Lost { found: None, .. }
        ));
    }
}
