//! Writing the last-known-heads file (its format and reading are in
//! `atlasbridge_protocol::heads`). Written atomically (temporary file, sync, rename, directory
//! sync) after every checkpoint, after a repair and at shutdown. Entries appended after the last
//! write are the unwitnessed tail that checkpoints report; this file does not try to cover them.

use std::path::Path;

pub use atlasbridge_protocol::heads::{CheckpointMark, Continuity, Heads, continuity, load, path};

/// Replaces the state file atomically.
pub fn store(data_dir: &Path, heads: &Heads) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(heads).map_err(std::io::Error::other)?;
    crate::files::write_atomic(&path(data_dir), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atlasbridge_protocol::trace::ChainHead;

    #[test]
    fn stores_and_loads_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(load(tmp.path()).unwrap(), None);
        let head = ChainHead {
            seq: 4,
            entry_hash: "a".repeat(64),
        };
        let heads = Heads {
            trace: Some(head),
            audit: None,
            checkpoint: None,
        };
        store(tmp.path(), &heads).unwrap();
        assert_eq!(load(tmp.path()).unwrap(), Some(heads));
        assert!(!tmp.path().join("state/heads.json.tmp").exists());
    }
}
