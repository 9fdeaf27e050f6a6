//! The cloud uplink (`docs/cloud.md`): off by default, and then nothing here runs — no socket,
//! no name lookup. When `[cloud] enabled = true` and the edition's `cloud_control_channel` flag
//! is on, one task keeps a WebSocket to the cloud: it authenticates with the API key, streams
//! the decision trace (and, with `cloud_audit_stream`, the audit log) from a persisted cursor,
//! sends heartbeats, and reconnects with backoff. The cloud observes; the daemon decides.

pub mod auth;
pub mod config;
pub mod cursor;
pub mod events;
pub mod keyring;
pub mod link;
pub mod policy_sync;
pub mod reader;
pub mod registry;
pub mod status;
pub mod tls;
pub mod witness;

use std::sync::Arc;
use std::time::Duration;

use atlasbridge_protocol::cloud::rest::TokenRequest;
use atlasbridge_protocol::cloud::retry::Backoff;
use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::trace::checkpoint::encode_public_key;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::auth::{CallError, Token, TokenClient};
use self::link::{Ended, LinkContext};
use self::status::{CloudStatus, LinkState};
use crate::state::Daemon;

/// A connection that stayed up this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(60);

/// The scheduling priority (nice value) of the uplink's threads on Linux: decisions always get
/// the CPU first.
const UPLINK_NICE: i32 = 10;

/// The running uplink.
#[derive(Debug)]
pub struct Uplink {
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Uplink {
    /// Closes the connection and waits for the cursor to be written.
    pub async fn stop(self) {
        self.stop.cancel();
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            _ => warn!("the cloud uplink thread failed"),
        }
    }
}

/// Lowers the calling thread's priority (Linux threads have their own nice value; elsewhere the
/// call would change the whole process, so it is not made).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, UPLINK_NICE) {
        warn!(error = %e, "cannot lower the cloud uplink's priority");
    }
}

/// Starts the uplink if the config and the edition allow it; `None` otherwise (and then the
/// daemon makes no network call at all).
pub fn start(daemon: &Arc<Daemon>) -> Option<Uplink> {
    let settings = daemon.settings();
    let config = &settings.config.cloud;
    if !config.enabled {
        return None;
    }
    let status = daemon.cloud_status();
    let endpoint = config.endpoint.clone()?;
    status.update(|s| {
        s.enabled = true;
        s.endpoint = Some(endpoint.to_string());
    });
    if !settings.features.is_enabled(Feature::CloudControlChannel) {
        warn!(
            "[cloud] enabled = true, but the cloud_control_channel feature is off for this edition; \
             the uplink does not start"
        );
        status.update(|s| s.enabled = false);
        status.set_state(LinkState::Disabled, Some("feature_disabled"));
        return None;
    }
    // Its own runtime on its own, lower-priority threads: streaming, signing and fetching never
    // compete on equal terms with the workers that answer agents.
    let stop = CancellationToken::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cloud-uplink")
        .on_thread_start(lower_priority)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            warn!(error = %e, "cannot start the cloud uplink's runtime");
            status.set_error(&format!("cannot start the uplink: {e}"));
            status.set_state(LinkState::Disconnected, Some("misconfigured"));
            return None;
        }
    };
    let task = run(Arc::clone(daemon), stop.clone());
    let thread = std::thread::Builder::new()
        .name("cloud-uplink".to_owned())
        .spawn(move || {
            lower_priority();
            runtime.block_on(task);
            // In-flight policy fetches end with the runtime.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
        });
    match thread {
        Ok(thread) => Some(Uplink { stop, thread }),
        Err(e) => {
            warn!(error = %e, "cannot start the cloud uplink's thread");
            None
        }
    }
}

async fn run(daemon: Arc<Daemon>, stop: CancellationToken) {
    let status = daemon.cloud_status();
    status.set_state(LinkState::Connecting, None);
    let ctx = match prepare(&daemon).await {
        Ok(ctx) => ctx,
        Err(why) => {
            warn!(error = %why, "the cloud uplink cannot start");
            status.set_error(&why);
            status.set_state(LinkState::Disconnected, Some("misconfigured"));
            return;
        }
    };
    let api_key = match find_api_key(&daemon, &status, &stop).await {
        Some(Ok(key)) => key,
        Some(Err(why)) => {
            warn!(error = %why, "the cloud uplink cannot start");
            status.set_error(&why);
            status.set_state(LinkState::Disconnected, Some("misconfigured"));
            return;
        }
        None => {
            status.set_state(LinkState::Disconnected, Some("stopped"));
            return;
        }
    };
    let (tokens, mut cursors) = match (
        token_client(&daemon, &ctx, api_key),
        cursor::load(&ctx.cursor_path),
    ) {
        (Ok(tokens), Ok(cursors)) => (tokens, cursors),
        (Err(why), _) | (_, Err(why)) => {
            warn!(error = %why, "the cloud uplink cannot start");
            status.set_error(&why);
            status.set_state(LinkState::Disconnected, Some("misconfigured"));
            return;
        }
    };
    let (token_tx, mut token_rx) = watch::channel(None);
    let mut ctx = ctx;
    ctx.fetcher = Some(policy_sync::Fetcher {
        http: tokens.http().clone(),
        api_base: tokens.api_base().clone(),
        token: token_rx.clone(),
        server_key: ctx.server_key,
        mode: daemon.settings().config.cloud.policy_sync,
    });
    if let Some(fetcher) = &ctx.fetcher {
        daemon.set_registry(registry::RegistryClient {
            fetcher: fetcher.clone(),
            identity: ctx.identity.clone(),
            runtime_id: ctx.runtime_id.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
    }
    let renew_now = Arc::new(Notify::new());
    let keeper = tokio::spawn(keep_token(
        tokens,
        token_tx,
        Arc::clone(&renew_now),
        Arc::clone(&status),
        stop.clone(),
    ));
    let mut backoff = Backoff::default();
    let mut refused_in_a_row = 0u32;
    loop {
        // Wait for a token the keeper has not been told is refused.
        let current = tokio::select! {
            () = stop.cancelled() => break,
            token = token_rx.wait_for(Option::is_some) => match token {
                Ok(token) => token.as_ref().map(|t: &Token| t.value.clone()).unwrap_or_default(),
                Err(_) => break,
            },
        };
        match link::serve(&ctx, &current, &mut cursors, &stop).await {
            Ended::Stopped => break,
            Ended::Unauthorized(why) => {
                status.set_error(&why);
                refused_in_a_row += 1;
                // A fresh token at once; if the cloud refuses that one too, back off.
                if refused_in_a_row > 1
                    && !wait_backoff(&mut backoff, &status, "auth_failed", &stop).await
                {
                    break;
                }
                renew_now.notify_one();
                let renewed = tokio::select! {
                    () = stop.cancelled() => break,
                    renewed = token_rx.wait_for(|t| t.as_ref().is_none_or(|t| t.value != current)) => renewed,
                };
                if renewed.is_err() {
                    break;
                }
            }
            Ended::RetryAfter(wait) => {
                refused_in_a_row = 0;
                status.set_error(&format!("upgrade: retry after {} s", wait.as_secs()));
                status.set_state(LinkState::Reconnecting, Some("rate_limited"));
                if !sleep_or_stop(wait, &stop).await {
                    break;
                }
            }
            Ended::Failed { why, healthy } => {
                refused_in_a_row = 0;
                if healthy >= HEALTHY {
                    backoff.reset();
                }
                info!(why, "the cloud connection ended");
                status.set_error(&why);
                if !wait_backoff(&mut backoff, &status, "connection_lost", &stop).await {
                    break;
                }
            }
        }
    }
    stop.cancel();
    if let Err(e) = keeper.await {
        warn!(error = %e, "the cloud token task failed");
    }
    if let Err(e) = cursor::store(&ctx.cursor_path, &cursors) {
        warn!(error = %e, "cannot write the cloud cursor");
    }
    status.set_state(LinkState::Disconnected, Some("stopped"));
}

/// Keeps a valid access token published: fetches one, renews it at 80 % of its lifetime (so a
/// long-lived connection's REST calls never carry an expired one), and fetches a new one at once
/// when told the current one was refused. Honours Retry-After; backs off on other failures.
async fn keep_token(
    tokens: TokenClient,
    publish: watch::Sender<Option<Token>>,
    renew_now: Arc<Notify>,
    status: Arc<CloudStatus>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        match tokens.fetch().await {
            Ok(fresh) => {
                backoff.reset();
                status.update(|s| s.token_expires_at = Some(fresh.expires_at.to_string()));
                let renew_at = fresh.renew_at();
                publish.send_replace(Some(fresh));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(renew_at.into()) => {}
                    () = renew_now.notified() => {}
                }
            }
            Err(CallError::RetryAfter { status: code, wait }) => {
                info!(
                    status = code,
                    wait_s = wait.as_secs(),
                    "the token call asked to wait"
                );
                status.set_error(&format!(
                    "token call: HTTP {code}, retry after {} s",
                    wait.as_secs()
                ));
                status.set_state(LinkState::Reconnecting, Some("rate_limited"));
                if !sleep_or_stop(wait, &stop).await {
                    return;
                }
            }
            Err(e) => {
                let reason = match e {
                    CallError::Unauthorized(_) => "auth_failed",
                    _ => "unreachable",
                };
                warn!(error = %e, "cannot get an access token");
                status.set_error(&e.to_string());
                if !wait_backoff(&mut backoff, &status, reason, &stop).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps the next backoff wait in state `reconnecting`; false when stopped meanwhile.
async fn wait_backoff(
    backoff: &mut Backoff,
    status: &CloudStatus,
    reason: &str,
    stop: &CancellationToken,
) -> bool {
    let wait = backoff.next_wait(random_unit());
    status.set_state(LinkState::Reconnecting, Some(reason));
    sleep_or_stop(wait, stop).await
}

async fn sleep_or_stop(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// A random draw in [0, 1) for the jitter.
fn random_unit() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

async fn prepare(daemon: &Arc<Daemon>) -> Result<LinkContext, String> {
    let settings = daemon.settings();
    let config = &settings.config.cloud;
    let endpoint = config
        .endpoint
        .clone()
        .ok_or("[cloud] enabled = true needs an endpoint")?;
    let (identity, checkpoints_path) = {
        let checkpointer = daemon.stores().checkpointer.lock().await;
        (
            checkpointer.identity().clone(),
            checkpointer.path().to_path_buf(),
        )
    };
    let runtime_id = encode_public_key(&identity.verifying_key());
    let needs_tls = endpoint.scheme() == "wss"
        || config
            .api_base
            .as_ref()
            .is_some_and(|u| u.scheme() == "https");
    let tls = if needs_tls {
        Some(tls::client_config(config.ca_file.as_deref())?)
    } else {
        None
    };
    daemon.cloud_status().update(|s| {
        s.runtime_id = Some(runtime_id.clone());
        s.policy_sync = if settings.features.is_enabled(Feature::CloudPolicySync) {
            "synced".to_owned()
        } else {
            "disabled".to_owned()
        };
    });
    let data_dir = daemon.data_dir();
    Ok(LinkContext {
        daemon: Arc::clone(daemon),
        status: daemon.cloud_status(),
        endpoint,
        org_id: config.org_id.clone(),
        identity,
        runtime_id,
        server_key: config.server_public_key,
        tls,
        heartbeat: config.heartbeat,
        window: config.buffer_events,
        stream_audit: settings.features.is_enabled(Feature::CloudAuditStream),
        honor_kill_switch: config.honor_kill_switch,
        cursor_path: cursor::cursor_path(data_dir),
        checkpoints_path,
        fetcher: None,
        trace_dir: crate::trace::trace_dir(data_dir),
        audit_dir: crate::trace::audit_dir(data_dir),
    })
}

/// How long the key lookup may take before `cloud status` says what it is waiting for.
const KEYRING_PATIENCE: Duration = Duration::from_secs(5);

/// Finds the API key (`auth::api_key`) on a blocking thread: the OS keyring may wait for a
/// person to unlock it, and that must neither hold the runtime nor keep the daemon from
/// stopping. `None` when stopped first.
async fn find_api_key(
    daemon: &Daemon,
    status: &CloudStatus,
    stop: &CancellationToken,
) -> Option<Result<String, String>> {
    let config = daemon.settings().config.cloud.clone();
    let from_keyring = matches!(config.key_source(), auth::KeySource::Keyring { .. });
    let mut lookup = tokio::task::spawn_blocking(move || {
        auth::api_key(
            config.key_source(),
            |name| std::env::var(name).ok(),
            keyring::os_store(),
        )
        .map_err(|e| e.to_string())
    });
    let patience = tokio::time::sleep(KEYRING_PATIENCE);
    tokio::pin!(patience);
    let mut waiting = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            () = &mut patience, if from_keyring && !waiting => {
                waiting = true;
                status.set_error(&format!(
                    "waiting for the OS keyring (service {:?}): is it locked?",
                    keyring::SERVICE
                ));
            }
            joined = &mut lookup => {
                return Some(joined.unwrap_or_else(|e| Err(format!("the API key lookup failed: {e}"))));
            }
        }
    }
}

fn token_client(
    daemon: &Daemon,
    ctx: &LinkContext,
    api_key: String,
) -> Result<TokenClient, String> {
    let settings = daemon.settings();
    let config = &settings.config.cloud;
    let api_base = config
        .api_base
        .clone()
        .ok_or("[cloud] needs an api_base (it could not be derived from the endpoint)")?;
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("atlasbridged/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = &ctx.tls {
        builder = builder.tls_backend_preconfigured((**tls).clone());
    }
    let http = builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
    TokenClient::new(
        http,
        &api_base,
        TokenRequest {
            api_key,
            org_id: config.org_id.clone(),
            runtime_id: ctx.runtime_id.clone(),
        },
    )
}

/// Tries a configuration `cloud setup` is about to write: the token call, then the WebSocket
/// handshake, then closes. Runs only when asked (by an admin); nothing is kept.
pub async fn test_config(
    daemon: &Arc<Daemon>,
    params: atlasbridge_protocol::methods::CloudTestParams,
) -> atlasbridge_protocol::methods::CloudTestResult {
    use atlasbridge_protocol::cloud::endpoint::{derive_api_base, parse_api_base, parse_endpoint};
    use atlasbridge_protocol::methods::CloudTestResult;
    let result = |ok: bool, stage: &str, message: String| CloudTestResult {
        ok,
        stage: stage.to_owned(),
        message,
    };
    let endpoint = match parse_endpoint(&params.endpoint) {
        Ok(endpoint) => endpoint,
        Err(e) => return result(false, "config", e),
    };
    let api_base = match params.api_base.as_deref().map(parse_api_base) {
        Some(Ok(base)) => base,
        Some(Err(e)) => return result(false, "config", e),
        None => match derive_api_base(&endpoint) {
            Some(base) => base,
            None => return result(false, "config", "no api_base for this endpoint".into()),
        },
    };
    let server_key = match params.server_public_key.as_deref() {
        None => None,
        Some(text) => match atlasbridge_protocol::trace::checkpoint::decode_public_key(text) {
            Some(key) => Some(key),
            None => {
                return result(
                    false,
                    "config",
                    "server_public_key must be an Ed25519 key as `ed25519:<base64url>`".into(),
                );
            }
        },
    };
    let needs_tls = endpoint.scheme() == "wss" || api_base.scheme() == "https";
    let tls = if needs_tls {
        match tls::client_config(params.ca_file.as_deref().map(std::path::Path::new)) {
            Ok(tls) => Some(tls),
            Err(e) => return result(false, "config", e),
        }
    } else {
        None
    };
    let identity = daemon.stores().checkpointer.lock().await.identity().clone();
    let runtime_id = encode_public_key(&identity.verifying_key());
    let data_dir = daemon.data_dir();
    let ctx = LinkContext {
        daemon: Arc::clone(daemon),
        // A scratch status: the test must not change what `cloud status` shows.
        status: Arc::new(CloudStatus::disabled()),
        endpoint,
        org_id: params.org_id.clone(),
        identity,
        runtime_id: runtime_id.clone(),
        server_key,
        tls,
        heartbeat: Duration::from_secs(10),
        window: 1,
        stream_audit: false,
        honor_kill_switch: false,
        cursor_path: cursor::cursor_path(data_dir),
        checkpoints_path: data_dir.join("unused"),
        fetcher: None,
        trace_dir: crate::trace::trace_dir(data_dir),
        audit_dir: crate::trace::audit_dir(data_dir),
    };
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(tls) = &ctx.tls {
        builder = builder.tls_backend_preconfigured((**tls).clone());
    }
    let http = match builder.build() {
        Ok(http) => http,
        Err(e) => return result(false, "config", format!("cannot set up HTTP: {e}")),
    };
    let tokens = match TokenClient::new(
        http,
        &api_base,
        TokenRequest {
            api_key: params.api_key,
            org_id: params.org_id,
            runtime_id,
        },
    ) {
        Ok(tokens) => tokens,
        Err(e) => return result(false, "config", e),
    };
    let token = match tokens.fetch().await {
        Ok(token) => token,
        Err(e) => return result(false, "token", e.to_string()),
    };
    match link::probe(&ctx, &token.value).await {
        Ok(session) => result(
            true,
            "handshake",
            format!("connected: token issued, handshake done (cloud session {session})"),
        ),
        Err(why) => result(false, "handshake", why),
    }
}
