//! The server end to end: the real `atlasbridge-server` binary on 127.0.0.1, a real PostgreSQL
//! (a database per test), hand-written runtimes and real `atlasbridged` daemons. One test binary,
//! so it links once.
//!
//! Needs `scripts/postgres.sh start && eval "$(scripts/postgres.sh url)"`; see `support`.

// The fixtures are shared by the modules of this one binary; `pub` is how they reach them.
#![allow(unreachable_pub)]
// A test fails by panicking; in the fixtures too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod cross_tenant;
mod daemons;
mod dashboard;
mod database_tls;
mod ingest;
mod live;
mod metrics;
mod oidc;
mod people;
mod policies;
mod replicas;
mod runtime_channel;
mod runtime_reports;
mod search;
mod support;
mod tenant_isolation;
mod witness;
