//! End-to-end tests of the real binaries. One test binary, so it links once.

// The fixture is shared by the test modules of this one binary; `pub` is how they reach it.
#![allow(unreachable_pub)]
// A test fails by panicking; in the fixture too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod concurrency;
mod decisions;
mod lifecycle;
mod policy_cli;
mod protocol_lines;
mod risk;
mod support;
mod trace;
