//! Support for the end-to-end tests and benchmarks: the test cloud peer, and what the benchmarks
//! measure on.

pub mod bench_fixtures;
pub mod cloud_peer;
