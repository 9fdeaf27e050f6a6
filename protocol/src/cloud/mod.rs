//! What crosses the cloud link (`docs/cloud.md`): signed envelopes over the WebSocket control
//! channel, their payloads, the REST shapes (the witness query among them), and the retry rules
//! both sides follow.
//!
//! Everything here is pure: the daemon's uplink and the test peer build on the same types.

pub mod endpoint;
pub mod envelope;
pub mod messages;
pub mod rest;
pub mod retry;
pub mod witness;

pub use envelope::{BatchFrame, Envelope, EnvelopeError, MAX_MESSAGE_BYTES};
