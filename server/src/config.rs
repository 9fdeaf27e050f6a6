//! The server's configuration: a TOML file, then `ATLASBRIDGE_SERVER_*` environment variables on
//! top (so secrets and per-replica values need not live in the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value (from the file or the environment) is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The config key or environment variable.
        key: String,
        /// Why.
        message: String,
    },
}

/// Everything the server reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where to listen (`listen`, `ATLASBRIDGE_SERVER_LISTEN`).
    pub listen: SocketAddr,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
}

/// `[database]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The app role's URL: the role the server serves as, without superuser or BYPASSRLS
    /// (`ATLASBRIDGE_SERVER_DATABASE_URL`).
    pub url: String,
    /// The owner role's URL, for migrations (`ATLASBRIDGE_SERVER_DATABASE_OWNER_URL`); when set,
    /// `serve` migrates at start.
    pub owner_url: Option<String>,
    /// The role migrations grant table access to (`ATLASBRIDGE_SERVER_DATABASE_APP_ROLE`).
    pub app_role: String,
    /// Pool size.
    pub pool_size: usize,
    /// How long a request waits for a pooled connection before it is shed with 503.
    pub pool_wait_ms: u64,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs carry passwords: never log them.
        f.debug_struct("DatabaseConfig")
            .field("app_role", &self.app_role)
            .field("pool_size", &self.pool_size)
            .field("pool_wait_ms", &self.pool_wait_ms)
            .finish_non_exhaustive()
    }
}

/// `[auth]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The HS256 secret of access tokens, at least 32 bytes, the same on every replica
    /// (`ATLASBRIDGE_SERVER_JWT_SECRET`).
    pub jwt_secret: String,
    /// Lifetime of an access token.
    pub token_lifetime_s: u64,
    /// Token calls per runtime and minute on each replica; more get 429 with `Retry-After`
    /// (0: no limit).
    pub token_requests_per_minute: u32,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("token_lifetime_s", &self.token_lifetime_s)
            .field("token_requests_per_minute", &self.token_requests_per_minute)
            .finish_non_exhaustive()
    }
}

/// `[runtime]`: the control channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// The heartbeat interval assumed until two heartbeats were measured; a runtime is inactive
    /// after three missed intervals.
    pub heartbeat_s: u64,
    /// Open control channels at most; more are refused with 503 and `Retry-After`.
    pub max_connections: usize,
    /// The server's Ed25519 key (32-byte seed, base64url), created on first `serve`
    /// (`ATLASBRIDGE_SERVER_SIGNING_KEY_FILE`). It signs everything the server sends.
    pub signing_key_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            runtime: RuntimeConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            owner_url: None,
            app_role: "atlasbridge_app".to_owned(),
            pool_size: 16,
            pool_wait_ms: 2000,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            token_lifetime_s: 3600,
            token_requests_per_minute: 60,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            heartbeat_s: 30,
            max_connections: 1000,
            signing_key_file: PathBuf::from("server-signing.key"),
        }
    }
}

/// The environment variables that override the file, and what they set.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("ATLASBRIDGE_SERVER_LISTEN", "listen"),
    ("ATLASBRIDGE_SERVER_DATABASE_URL", "database.url"),
    (
        "ATLASBRIDGE_SERVER_DATABASE_OWNER_URL",
        "database.owner_url",
    ),
    ("ATLASBRIDGE_SERVER_DATABASE_APP_ROLE", "database.app_role"),
    ("ATLASBRIDGE_SERVER_JWT_SECRET", "auth.jwt_secret"),
    (
        "ATLASBRIDGE_SERVER_SIGNING_KEY_FILE",
        "runtime.signing_key_file",
    ),
];

impl Config {
    /// Reads `path` (defaults when `None`), then applies the environment through `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
        };
        for (variable, key) in ENV_OVERRIDES {
            let Some(value) = env(variable).filter(|v| !v.is_empty()) else {
                continue;
            };
            match *key {
                "listen" => {
                    config.listen = value.parse().map_err(|e| ConfigError::Invalid {
                        key: (*variable).to_owned(),
                        message: format!("not a socket address: {e}"),
                    })?;
                }
                "database.url" => config.database.url = value,
                "database.owner_url" => config.database.owner_url = Some(value),
                "database.app_role" => config.database.app_role = value,
                "auth.jwt_secret" => config.auth.jwt_secret = value,
                "runtime.signing_key_file" => config.runtime.signing_key_file = value.into(),
                _ => {}
            }
        }
        Ok(config)
    }

    /// Checks what `serve` needs.
    pub fn check_for_serving(&self) -> Result<(), ConfigError> {
        if self.database.url.is_empty() {
            return Err(invalid(
                "database.url",
                "required (or ATLASBRIDGE_SERVER_DATABASE_URL)",
            ));
        }
        if self.auth.jwt_secret.len() < 32 {
            return Err(invalid(
                "auth.jwt_secret",
                "at least 32 bytes are required (or ATLASBRIDGE_SERVER_JWT_SECRET)",
            ));
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        if self.runtime.heartbeat_s == 0 {
            return Err(invalid("runtime.heartbeat_s", "must be at least 1"));
        }
        Ok(())
    }

    /// How long a request waits for a pooled connection.
    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.database.pool_wait_ms)
    }
}

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[database]\nurl = \"postgres://file\"\npool_size = 3\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), |name| {
            (name == "ATLASBRIDGE_SERVER_DATABASE_URL").then(|| "postgres://env".to_owned())
        })
        .unwrap();
        assert_eq!(config.database.url, "postgres://env");
        assert_eq!(config.database.pool_size, 3);
        assert_eq!(config.listen.port(), 9000);
    }

    #[test]
    fn unknown_keys_and_short_secrets_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "[database]\nurll = \"x\"\n").unwrap();
        let error = Config::load(Some(&file), |_| None).unwrap_err().to_string();
        assert!(error.contains("urll"), "{error}");
        let config = Config::load(None, |name| match name {
            "ATLASBRIDGE_SERVER_DATABASE_URL" => Some("postgres://x".to_owned()),
            "ATLASBRIDGE_SERVER_JWT_SECRET" => Some("short".to_owned()),
            _ => None,
        })
        .unwrap();
        let error = config.check_for_serving().unwrap_err().to_string();
        assert!(error.contains("jwt_secret"), "{error}");
    }
}
