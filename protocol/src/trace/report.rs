//! The verification report of `trace-format.md`, shared by `trace.verify`,
//! `atlasbridge trace integrity-check` and `atlasbridge audit verify`.

use serde::{Deserialize, Serialize};

/// Where a chain ends: its last verified entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The entry's `seq`.
    pub seq: u64,
    /// The entry's `entry_hash`.
    pub entry_hash: String,
}

/// What broke the chain first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// Not a JSON object, not `\n`-terminated, a duplicate key, or a required member missing.
    MalformedLine,
    /// The stored `entry_hash` is not the hash of the entry's canonical form.
    HashMismatch,
    /// `prev_hash` is not the previous entry's hash.
    PrevMismatch,
    /// `seq` is not the previous `seq` + 1 (or 0 first).
    SeqGap,
    /// `trace_version` is not 2.
    VersionMismatch,
    /// A checkpoint does not match the chain at its `seq`.
    CheckpointMismatch,
    /// Checkpoints are missing or out of order.
    CheckpointGap,
    /// The chain ends before a checkpoint's `seq`: entries that were witnessed are gone.
    TruncatedAfterCheckpoint,
    /// A checkpoint's signature does not verify under the key its epoch requires.
    BadSignature,
}

impl BreakKind {
    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedLine => "malformed_line",
            Self::HashMismatch => "hash_mismatch",
            Self::PrevMismatch => "prev_mismatch",
            Self::SeqGap => "seq_gap",
            Self::VersionMismatch => "version_mismatch",
            Self::CheckpointMismatch => "checkpoint_mismatch",
            Self::CheckpointGap => "checkpoint_gap",
            Self::TruncatedAfterCheckpoint => "truncated_after_checkpoint",
            Self::BadSignature => "bad_signature",
        }
    }
}

impl std::fmt::Display for BreakKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where and why the chain broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    /// The kind of break.
    pub kind: BreakKind,
    /// The file holding the offending line (a segment, or the checkpoints file).
    pub file: String,
    /// Its 1-based line number in that file.
    pub line: u64,
    /// One sentence for a person.
    pub detail: String,
}

/// Entries after the last checkpoint: nobody can vouch for them yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwitnessedTail {
    /// First unwitnessed `seq`.
    pub from_seq: u64,
    /// Last unwitnessed `seq` (the head).
    pub to_seq: u64,
    /// Age of the newest checkpoint in seconds; `None` when there is no checkpoint at all.
    pub seconds: Option<u64>,
}

/// The verdict on a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// Whether every check passed.
    pub valid: bool,
    /// Entries that verified before the first break (all of them when valid).
    pub entries_checked: u64,
    /// Segment files read.
    pub segments: u64,
    /// The last entry that verified; `None` for an empty chain.
    pub head: Option<ChainHead>,
    /// The `seq` where the chain broke (the `seq` the broken line should have had).
    pub first_broken_at: Option<u64>,
    /// The first break.
    pub error: Option<ChainBreak>,
    /// Entries not covered by a checkpoint; `None` when the last checkpoint covers the head.
    pub unwitnessed_tail: Option<UnwitnessedTail>,
    /// Checkpoints that verified (0 when none were checked).
    #[serde(default)]
    pub checkpoints_checked: u64,
}
