//! Durable, append-only storage: the group-commit appender and the journals it drives (the
//! hash-chained v2 segments of the trace and the audit log, and the unchained v1 file).

pub mod appender;
pub mod chain;
pub mod v1;

pub use appender::{AppendError, Appender, Journal};
