//! The record of repairs: `repairs.jsonl` in a chain's directory, one line per segment that
//! `trace repair --start-new-segment` opened, with the entry its first entry links to.
//!
//! A repair segment does not continue the segment before it (that one is broken, or entries
//! are missing), so the start-up check of the tail must know where it does continue from. This
//! file says so for the repairs the daemon made, and only for those: any other segment that
//! links elsewhere is still a break. Full verification is unaffected: it reports the break a
//! repair stepped over, always.

use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ChainHead;

/// The file's name in the chain's directory.
pub const REPAIRS_FILE: &str = "repairs.jsonl";

/// One repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// The file name of the segment the repair opened.
    pub segment: String,
    /// The entry its first entry links to (`None`: the chain's start).
    pub continues_from: Option<ChainHead>,
}

impl Repair {
    /// Its line in the file, with the `\n`.
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// The repairs recorded in `dir`; none when the file is missing. A line that cannot be read is
/// skipped: it can only make a repair segment look like a break, never hide one.
pub fn load(dir: &Path) -> std::io::Result<Vec<Repair>> {
    let text = match std::fs::read_to_string(dir.join(REPAIRS_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// Where the segment named `segment` continues from, when a repair opened it.
pub fn continues_from<'a>(repairs: &'a [Repair], segment: &str) -> Option<&'a Option<ChainHead>> {
    repairs
        .iter()
        .rev()
        .find(|repair| repair.segment == segment)
        .map(|repair| &repair.continues_from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn repairs_round_trip_and_unreadable_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let first = Repair {
            segment: "decisions-000000000003.jsonl".to_owned(),
            continues_from: Some(ChainHead {
                seq: 2,
                entry_hash: "a".repeat(64),
            }),
        };
        let second = Repair {
            segment: "decisions-000000000000.r1.jsonl".to_owned(),
            continues_from: None,
        };
        let mut bytes = first.line();
        bytes.extend_from_slice(b"{not json\n");
        bytes.extend_from_slice(&second.line());
        std::fs::write(dir.path().join(REPAIRS_FILE), bytes).unwrap();
        let repairs = load(dir.path()).unwrap();
        assert_eq!(repairs, vec![first.clone(), second]);
        assert_eq!(
            continues_from(&repairs, "decisions-000000000003.jsonl"),
            Some(&first.continues_from)
        );
        assert_eq!(
            continues_from(&repairs, "decisions-000000000000.r1.jsonl"),
            Some(&None)
        );
        assert_eq!(
            continues_from(&repairs, "decisions-000000000009.jsonl"),
            None
        );
    }
}
