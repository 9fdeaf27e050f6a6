//! Decision trace v2 and the audit log: entry schema, stored layout, hashing and verification.
//! Everything here works on bytes and files alone, so a third party can verify a trace without
//! the daemon.

pub mod checkpoint;
pub mod entry;
pub mod report;

pub use entry::{GENESIS_PREV_HASH, SealedEntry, TRACE_VERSION, TraceEntry, seal};
pub use report::{BreakKind, ChainBreak, ChainHead, IntegrityReport, UnwitnessedTail};
