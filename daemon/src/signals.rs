//! Signals: SIGTERM and SIGINT start a graceful shutdown (a second one exits at once); SIGHUP
//! reloads the config file, keeping the old settings if the new ones do not load.

use std::sync::Arc;

use atlasbridge_protocol::paths::ProcessEnvironment;
use tracing::{error, info, warn};

use crate::service_notify::ServiceNotifier;
use crate::state::Daemon;

/// Exit status when a second stop signal cuts the drain short (128 + SIGINT, as shells do).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Watches signals until the process exits.
#[cfg(unix)]
pub async fn watch(daemon: Arc<Daemon>, notifier: Arc<ServiceNotifier>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    // A file-size limit must make writes fail (and requests get -32004), not kill the daemon:
    // handling SIGXFSZ replaces its default action.
    let _file_size_limit = signal(SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw()))?;
    let mut stop_signals = 0u32;
    loop {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            _ = hangup.recv() => {
                notifier.reloading();
                reload(&daemon);
                let _ = crate::lifecycle::load_policy(
                    &daemon,
                    None,
                    crate::audit::Actor::Signal("SIGHUP"),
                )
                .await;
                notifier.ready("reloaded");
                continue;
            }
        };
        stop_signals += 1;
        if stop_signals > 1 {
            warn!(
                signal = name,
                "second stop signal: exiting without waiting for in-flight requests"
            );
            std::process::exit(FORCED_EXIT_CODE);
        }
        info!(signal = name, "stopping: finishing in-flight requests");
        daemon.request_shutdown();
    }
}

/// Ctrl-C only, where Unix signals do not exist.
#[cfg(not(unix))]
pub async fn watch(daemon: Arc<Daemon>, _notifier: Arc<ServiceNotifier>) -> std::io::Result<()> {
    tokio::signal::ctrl_c().await?;
    info!("stopping: finishing in-flight requests");
    daemon.request_shutdown();
    tokio::signal::ctrl_c().await?;
    warn!("second stop signal: exiting without waiting for in-flight requests");
    std::process::exit(FORCED_EXIT_CODE);
}

/// Reloads the settings, logging the outcome.
pub fn reload(daemon: &Daemon) {
    let before = daemon.settings();
    match daemon.reload(&ProcessEnvironment) {
        Ok(after) => {
            for warning in after.features.warnings() {
                warn!("{warning}");
            }
            for warning in crate::roles::warnings(&after) {
                warn!("{warning}");
            }
            if crate::roles::socket_group(&before) != crate::roles::socket_group(&after) {
                warn!(
                    "the socket's group and mode are set at start: restart the daemon to apply the \
                     new [roles] socket_group"
                );
            }
            let changed: Vec<_> = after
                .features
                .list()
                .features
                .into_iter()
                .filter(|f| before.features.is_enabled(f.name) != f.enabled)
                .map(|f| format!("{}={}", f.name, if f.enabled { "on" } else { "off" }))
                .collect();
            info!(
                edition = %after.features.edition(),
                changed = %changed.join(","),
                roles_in_force = crate::roles::in_force(&after).is_some(),
                "config reloaded (connection limits and roles apply to new connections; max_connections at restart)"
            );
        }
        Err(e) => error!(error = %e, "config reload failed; keeping the previous settings"),
    }
}
