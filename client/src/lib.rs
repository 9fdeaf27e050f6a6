//! Talk to `atlasbridged` from Rust.
//!
//! Two clients over the same protocol: [`Client`] (async, many requests in flight on one
//! connection, server notifications on a channel) for agents built on tokio, and
//! [`blocking::Client`] (one request at a time, with a timeout) for scripts and the
//! `atlasbridge` command line, which is [`cli`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), atlasbridge::ClientError> {
//! let socket = atlasbridge::default_socket()?;
//! let client = atlasbridge::Client::connect(&socket).await?;
//! let status = client.status().await?;
//! println!("atlasbridged {} (pid {})", status.version, status.pid);
//! # Ok(()) }
//! ```

pub mod blocking;
pub mod cli;
mod error;
mod nonblocking;

pub use error::ClientError;
pub use nonblocking::Client;

/// The socket the daemon listens on by default (`ATLASBRIDGE_SOCKET`, else the platform default).
pub fn default_socket() -> Result<std::path::PathBuf, ClientError> {
    atlasbridge_protocol::paths::socket_path(None, &atlasbridge_protocol::paths::ProcessEnvironment)
        .map_err(ClientError::Path)
}
