//! Decision trace v2 and the audit log: entry schema, stored layout, hashing and verification.
//! Everything here works on bytes and files alone, so a third party can verify a trace without
//! the daemon.

pub mod body;
pub mod checkpoint;
pub mod entry;
pub mod repairs;
pub mod report;
pub mod scan;
pub mod verify;

pub use body::{ChainMembers, EntryBody, EntryBodyBuilder};
pub use entry::{GENESIS_PREV_HASH, SealedEntry, TRACE_VERSION, TraceEntry, seal};
pub use report::{BreakKind, ChainBreak, ChainHead, IntegrityReport, UnwitnessedTail};
pub use scan::{
    LineFacts, LineProblem, canonical_of_stored, check_line, check_line_recanonicalised,
};
pub use verify::{
    ChainKind, CheckpointFile, CheckpointVerdict, Verified, VerifyError, VerifyOptions,
    read_checkpoints, segment_files, verify_chain, verify_checkpoints, verify_files, verify_path,
};
