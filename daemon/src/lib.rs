//! `atlasbridged`, the AtlasBridge governance daemon, as a library.
//!
//! The binary's `main` only calls [`cli::main`]. Engines (config, editions) are pure and know
//! nothing of sockets; [`ipc`] is the only layer that speaks the wire protocol, and
//! [`ipc::handlers`] the only place that turns engine results into JSON-RPC replies.

pub mod audit;
pub mod checkpoints;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod decisions;
pub mod files;
pub mod ipc;
pub mod lifecycle;
pub mod logging;
pub mod roles;
pub mod service_notify;
pub mod signals;
pub mod state;
pub mod storage;
pub mod trace;

/// The daemon's version, as reported by `hello` and `daemon.status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
