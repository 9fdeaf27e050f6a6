//! The running server: shared state, the listener, and an orderly shutdown.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atlasbridge_protocol::trace::checkpoint::encode_public_key;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::TokenKeys;
use crate::config::Config;
use crate::db::Db;
use crate::limit::RateLimiter;
use crate::live::LiveHub;
use crate::metrics::Metrics;
use crate::oidc::{OidcClient, OidcError};
use crate::password::{PasswordError, Passwords};

/// What every request and connection shares. Nothing here is per-replica state worth keeping:
/// the database is the only store, so replicas behind a load balancer need no coordination.
#[derive(Debug)]
pub struct AppState {
    /// The pool (app role).
    pub db: Db,
    /// Issues and verifies access tokens.
    pub tokens: TokenKeys,
    /// Limits token calls per runtime (429).
    pub token_limiter: RateLimiter,
    /// Signs every envelope the server sends.
    pub signing_key: SigningKey,
    /// The configuration.
    pub config: Config,
    /// One permit per open control channel.
    pub connections: Arc<Semaphore>,
    /// Cancelled at shutdown; connections close with 1001.
    pub shutdown: CancellationToken,
    /// The WebSocket connections (control channels and live subscribers), so shutdown can
    /// wait for their close frames: upgraded connections are no longer tracked by the HTTP
    /// server's own graceful shutdown.
    pub channels: TaskTracker,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// Hashes and verifies people's passwords, a bounded number at a time.
    pub passwords: Passwords,
    /// This replica's live subscribers.
    pub live: Arc<LiveHub>,
    /// Single sign-on, when configured.
    pub oidc: Option<OidcClient>,
}

/// Why the shared state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Passwords cannot be hashed.
    #[error(transparent)]
    Passwords(#[from] PasswordError),
    /// SSO cannot be set up.
    #[error(transparent)]
    Oidc(#[from] OidcError),
}

/// Why the server key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a 32-byte base64url seed.
    #[error("{0} does not hold an Ed25519 seed (32 bytes, base64url)")]
    Malformed(String),
    /// No randomness for a new key.
    #[error("no randomness for a new server key: {0}")]
    Random(String),
}

/// Reads the server's signing key from `path`, creating it (mode 0600) when absent.
pub fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let shown = path.display().to_string();
    let io = |source| KeyError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let seed = URL_SAFE_NO_PAD
                .decode(text.trim())
                .ok()
                .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
                .ok_or_else(|| KeyError::Malformed(shown.clone()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(io)?;
            file.write_all(URL_SAFE_NO_PAD.encode(seed).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            let key = SigningKey::from_bytes(&seed);
            info!(path = %shown, public_key = %encode_public_key(&key.verifying_key()), "created the server signing key");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// How long shutdown waits for open control channels to say goodbye.
const CHANNEL_DRAIN: Duration = Duration::from_secs(5);

/// Serves on `listener` until `shutdown` is cancelled, then lets the control channels close.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = crate::http::router(Arc::clone(&state));
    // One listening connection per replica feeds the live stream (see `live`).
    let listener_task = tokio::spawn(crate::live::listen(
        Arc::clone(&state.live),
        state.db.target().clone(),
        shutdown.clone(),
    ));
    info!(
        address = %listener.local_addr()?,
        public_key = %encode_public_key(&state.signing_key.verifying_key()),
        "atlasbridge-server listening"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    state.channels.close();
    let _ = listener_task.await;
    if tokio::time::timeout(CHANNEL_DRAIN, state.channels.wait())
        .await
        .is_err()
    {
        warn!(
            open = state.channels.len(),
            "WebSocket connections still open after the drain period"
        );
    }
    Ok(())
}

/// The shared state for `config`.
pub fn state(
    config: Config,
    db: Db,
    signing_key: SigningKey,
    shutdown: CancellationToken,
) -> Result<AppState, StateError> {
    let oidc = config.oidc.clone().map(OidcClient::new).transpose()?;
    Ok(AppState {
        tokens: TokenKeys::new(
            config.auth.jwt_secret.as_bytes(),
            config.auth.token_lifetime_s,
        ),
        token_limiter: RateLimiter::per_minute(config.auth.token_requests_per_minute),
        connections: Arc::new(Semaphore::new(config.runtime.max_connections)),
        passwords: Passwords::new()?,
        live: Arc::new(LiveHub::new()),
        oidc,
        db,
        signing_key,
        config,
        shutdown,
        channels: TaskTracker::new(),
        metrics: Arc::new(Metrics::new()),
    })
}
