//! The daemon's shared state: what it was started with, the reloadable settings, and the
//! shutdown signal every task watches.
//!
//! Settings are immutable snapshots behind a lock that is held only to clone an `Arc`, so a
//! reload swaps them atomically: a request sees either the old settings or the new ones, never
//! a mix.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use atlasbridge_protocol::paths::{ConfigLocation, Environment};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::checkpoints::Checkpointer;
use crate::config::{Config, ConfigError};
use crate::trace::{Chain, V1Trace};
use atlasbridge_protocol::flags::{EditionError, FeatureSet};

/// Settings that a reload replaces as a whole.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The validated config file (or the defaults).
    pub config: Config,
    /// The resolved edition and flags.
    pub features: FeatureSet,
    /// The config file that was read, if one existed.
    pub config_file: Option<PathBuf>,
}

/// Loading settings failed; nothing changes.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The edition or a flag is invalid.
    #[error(transparent)]
    Edition(#[from] EditionError),
    /// `--config`/`ATLASBRIDGE_CONFIG` names a file that does not exist.
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
}

impl Settings {
    /// Reads the config (if any) and resolves the edition and flags.
    pub fn load(
        location: &ConfigLocation,
        cli_edition: Option<&str>,
        env: &impl Environment,
    ) -> Result<Self, SettingsError> {
        let (config, config_file) = match std::fs::metadata(&location.path) {
            Ok(_) => (Config::load(&location.path)?, Some(location.path.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if location.explicit {
                    return Err(SettingsError::Missing(location.path.clone()));
                }
                (Config::default(), None)
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: location.path.clone(),
                    source,
                }
                .into());
            }
        };
        let features = FeatureSet::resolve(cli_edition, env, &config.flags())?;
        Ok(Self {
            config,
            features,
            config_file,
        })
    }
}

/// What the daemon was started with; fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The socket path.
    pub socket: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where the config file is looked for (re-read on reload).
    pub config_location: ConfigLocation,
    /// `--edition`, if given.
    pub cli_edition: Option<String>,
}

/// The storage engines the daemon runs.
#[derive(Debug)]
pub struct Stores {
    /// The decision trace v2.
    pub trace: Arc<Chain>,
    /// The v1 trace, written while `decision_trace_v2` is off.
    pub v1: V1Trace,
    /// The audit log.
    pub audit: AuditLog,
    /// The checkpoint signer (one checkpoint at a time).
    pub checkpointer: tokio::sync::Mutex<Checkpointer>,
    /// The policy and the decision service.
    pub decisions: crate::decisions::DecisionService,
}

/// State shared by every task of the daemon.
#[derive(Debug)]
pub struct Daemon {
    options: StartOptions,
    stores: Stores,
    started: Instant,
    uid: u32,
    settings: RwLock<Arc<Settings>>,
    connections: AtomicU64,
    shutdown: CancellationToken,
    cloud: Arc<crate::cloud::status::CloudStatus>,
    cloud_events: crate::cloud::events::CloudEvents,
    registry: std::sync::OnceLock<crate::cloud::registry::RegistryClient>,
}

impl Daemon {
    /// State for a daemon about to serve.
    pub fn new(options: StartOptions, settings: Settings, stores: Stores) -> Arc<Self> {
        Arc::new(Self {
            options,
            stores,
            started: Instant::now(),
            uid: current_uid(),
            settings: RwLock::new(Arc::new(settings)),
            connections: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            cloud: Arc::new(crate::cloud::status::CloudStatus::disabled()),
            cloud_events: crate::cloud::events::CloudEvents::default(),
            registry: std::sync::OnceLock::new(),
        })
    }

    /// The cloud uplink's status (`disabled` while it does not run).
    pub fn cloud_status(&self) -> Arc<crate::cloud::status::CloudStatus> {
        Arc::clone(&self.cloud)
    }

    /// The policy registry client, once the uplink runs.
    pub fn registry(&self) -> Option<&crate::cloud::registry::RegistryClient> {
        self.registry.get()
    }

    /// Set by the uplink when it starts (once).
    pub fn set_registry(&self, client: crate::cloud::registry::RegistryClient) {
        let _ = self.registry.set(client);
    }

    /// Events the uplink tells the cloud about as they happen.
    pub fn cloud_events(&self) -> &crate::cloud::events::CloudEvents {
        &self.cloud_events
    }

    /// The current settings snapshot.
    pub fn settings(&self) -> Arc<Settings> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc: the value inside
        // is still a complete snapshot.
        Arc::clone(&self.settings.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the config file and re-resolves the flags; on error the old settings stay.
    pub fn reload(&self, env: &impl Environment) -> Result<Arc<Settings>, SettingsError> {
        let fresh = Arc::new(Settings::load(
            &self.options.config_location,
            self.options.cli_edition.as_deref(),
            env,
        )?);
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// The storage engines.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.stores.audit
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.options.socket
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The daemon's effective uid (the `owner`).
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Fired once, when the daemon starts to stop.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Asks every task to stop.
    pub fn request_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Open client connections.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a connection for as long as the guard lives.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionCount {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionCount(Arc::clone(self))
    }
}

/// Decrements the connection count when dropped.
#[derive(Debug)]
pub struct ConnectionCount(Arc<Daemon>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn location(path: &Path, explicit: bool) -> ConfigLocation {
        ConfigLocation {
            path: path.to_path_buf(),
            explicit,
        }
    }

    #[test]
    fn a_missing_default_config_means_the_embedded_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = Settings::load(
            &location(&tmp.path().join("none.toml"), false),
            None,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(settings.config, Config::default());
        assert_eq!(settings.config_file, None);
    }

    #[test]
    fn a_missing_explicit_config_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Settings::load(
            &location(&tmp.path().join("none.toml"), true),
            None,
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(err, SettingsError::Missing(_)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_reload_keeps_the_old_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("config.toml");
        std::fs::write(&file, "edition = \"pro\"\n").unwrap();
        let options = StartOptions {
            socket: tmp.path().join("s"),
            data_dir: tmp.path().to_path_buf(),
            config_location: location(&file, true),
            cli_edition: None,
        };
        let env = BTreeMap::new();
        let settings = Settings::load(&options.config_location, None, &env).unwrap();
        let (stores, _threads, _findings) =
            crate::lifecycle::open_stores(tmp.path(), &settings.config.trace).unwrap();
        let daemon = Daemon::new(options, settings, stores);
        std::fs::write(
            &file,
            "edition = \"enterprise\"\n[features]\nbogus = true\n",
        )
        .unwrap();
        assert!(daemon.reload(&env).is_err());
        assert_eq!(daemon.settings().features.edition().name(), "pro");
        std::fs::write(&file, "edition = \"enterprise\"\n").unwrap();
        daemon.reload(&env).unwrap();
        assert_eq!(daemon.settings().features.edition().name(), "enterprise");
    }
}
