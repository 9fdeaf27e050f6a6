//! End-to-end tests of the real binaries. One test binary, so it links once.

// The fixture is shared by the test modules of this one binary; `pub` is how they reach it.
#![allow(unreachable_pub)]
// A test fails by panicking; in the fixture too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod against_cloud;
mod autopilot;
mod cli;
mod client_lib;
mod cloud;
mod completions;
mod concurrency;
mod decisions;
mod doctor;
mod hook;
mod lifecycle;
mod pinning;
mod policy_cli;
mod protocol_lines;
mod python_client;
mod readme;
mod risk;
mod roles;
mod service;
mod sessions;
mod support;
mod trace;
