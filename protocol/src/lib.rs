//! Everything two AtlasBridge processes must agree on.
//!
//! This crate is data and codecs only: it has no runtime and does no I/O beyond the
//! `Read`/`Write` and codec traits it is handed, so a third-party client or verifier can
//! depend on it without pulling in the daemon.
//!
//! - [`framing`]: newline-delimited frames with the 1 MiB cap, as a sans-IO decoder, a tokio
//!   codec and a blocking reader.
//! - [`jsonrpc`]: JSON-RPC 2.0 envelopes and the parsing of one incoming line.
//! - [`error_code`]: the error codes of the protocol.
//! - [`methods`]: method names and their typed parameters and results.
//! - [`features`]: editions and feature flags: names, defaults, and the shapes clients see.
//! - [`flags`]: resolving the edition and every flag from flag, environment and config.
//! - [`paths`]: the socket, data and config locations, resolved the same way on both sides.
//! - [`policy`]: the policy language: loading, checking, the normal form, its hash and diff.
//! - [`risk`]: the deterministic risk classifier.

pub mod canonical;
pub mod cloud;
pub mod confidence;
pub mod error_code;
pub mod features;
pub mod flags;
pub mod framing;
pub mod hash;
pub mod heads;
pub mod jsonrpc;
pub mod methods;
pub mod migrate;
pub mod paths;
pub mod policy;
pub mod risk;
pub mod trace;

pub use error_code::ErrorCode;
pub use framing::{Frame, LineCodec, LineDecoder, MAX_LINE_BYTES};
pub use jsonrpc::{ErrorObject, Id, Incoming, Request, Response};

/// The protocol major version this crate speaks (`hello`'s `protocol`).
pub const PROTOCOL_VERSION: u32 = 1;
