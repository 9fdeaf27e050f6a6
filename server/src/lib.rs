//! The AtlasBridge governance server (issue 8, Phase C): runtimes exchange an API key for a
//! token, open the control channel of `docs/cloud.md`, and stream their signed traces; the
//! server re-verifies every entry, keeps them in PostgreSQL with row-level security per
//! organisation, and witnesses each runtime's heads and checkpoints. People log in (passwords
//! or OIDC) and read it all through the `/v1` API ([`api`]) and its live stream ([`live`]).
//!
//! `main` only calls [`cli::main`]. See `docs/server.md`.

pub mod api;
pub mod auth;
pub mod chain;
pub mod channel;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod entry_columns;
pub mod http;
pub mod ingest_group;
pub mod limit;
pub mod live;
pub mod metrics;
pub mod migrate;
pub mod oidc;
pub mod password;
pub mod pg_target;
pub mod policy;
pub mod role;
pub mod server;
pub mod session_token;
pub mod store;
pub mod witness;
