//! Support for the end-to-end tests: the test cloud peer.

pub mod cloud_peer;
