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
    /// `[people]`: human sessions and password logins.
    pub people: PeopleConfig,
    /// `[oidc]`: single sign-on, off when absent.
    pub oidc: Option<OidcConfig>,
}

/// `[people]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeopleConfig {
    /// A session ends this long after login, however busy.
    pub session_lifetime_s: u64,
    /// A session ends after this long unused.
    pub session_idle_s: u64,
    /// The `Secure` attribute of the session cookie. Leave it on behind TLS; off only for plain
    /// HTTP on loopback (tests, a first try), where browsers would drop a Secure cookie.
    pub cookie_secure: bool,
    /// Failed password logins per address and window before it is refused with 429.
    pub login_failures_per_window: u32,
    /// The window of that count.
    pub login_failure_window_s: u64,
}

/// What an SSO login of someone the organisation does not know yet gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownUsers {
    /// Refused: an admin creates the user first (with the same email, linked at first login).
    Refuse,
    /// Created as a viewer.
    CreateViewer,
}

/// `[oidc]`: OpenID Connect, authorization code flow with PKCE (S256).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// This server's client id at the provider.
    pub client_id: String,
    /// Its client secret (`ATLASBRIDGE_SERVER_OIDC_CLIENT_SECRET`); empty for a public client.
    #[serde(default)]
    pub client_secret: String,
    /// Where the provider sends the browser back: this server's `/v1/auth/oidc/callback`.
    pub redirect_uri: String,
    /// The organisation SSO logins belong to.
    pub org_id: String,
    /// What to do with someone the organisation does not know.
    #[serde(default = "refuse")]
    pub unknown_users: UnknownUsers,
    /// Scopes asked for (`openid` is always added).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Where the browser goes after a successful login.
    #[serde(default = "default_after_login")]
    pub after_login: String,
}

fn refuse() -> UnknownUsers {
    UnknownUsers::Refuse
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_after_login() -> String {
    "/".into()
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("org_id", &self.org_id)
            .field("unknown_users", &self.unknown_users)
            .finish_non_exhaustive()
    }
}

impl Default for PeopleConfig {
    fn default() -> Self {
        Self {
            session_lifetime_s: 12 * 3600,
            session_idle_s: 30 * 60,
            cookie_secure: true,
            login_failures_per_window: 10,
            login_failure_window_s: 15 * 60,
        }
    }
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
    /// PEM certificates to verify the database's TLS certificate with instead of the system's
    /// roots, when the URLs say `sslmode=require` (`ATLASBRIDGE_SERVER_DATABASE_CA_FILE`).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs carry passwords: never log them.
        f.debug_struct("DatabaseConfig")
            .field("app_role", &self.app_role)
            .field("pool_size", &self.pool_size)
            .field("pool_wait_ms", &self.pool_wait_ms)
            .field("ca_file", &self.ca_file)
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
            people: PeopleConfig::default(),
            oidc: None,
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
            ca_file: None,
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
    ("ATLASBRIDGE_SERVER_DATABASE_CA_FILE", "database.ca_file"),
    ("ATLASBRIDGE_SERVER_JWT_SECRET", "auth.jwt_secret"),
    (
        "ATLASBRIDGE_SERVER_SIGNING_KEY_FILE",
        "runtime.signing_key_file",
    ),
    (
        "ATLASBRIDGE_SERVER_OIDC_CLIENT_SECRET",
        "oidc.client_secret",
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
                "database.ca_file" => config.database.ca_file = Some(value.into()),
                "auth.jwt_secret" => config.auth.jwt_secret = value,
                "runtime.signing_key_file" => config.runtime.signing_key_file = value.into(),
                "oidc.client_secret" => {
                    if let Some(oidc) = config.oidc.as_mut() {
                        oidc.client_secret = value;
                    }
                }
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
        if self.people.session_lifetime_s == 0 || self.people.session_idle_s == 0 {
            return Err(invalid(
                "people.session_lifetime_s",
                "session lifetimes must be at least 1 s",
            ));
        }
        if self.people.login_failure_window_s == 0 {
            return Err(invalid(
                "people.login_failure_window_s",
                "must be at least 1",
            ));
        }
        if let Some(oidc) = &self.oidc {
            oidc.check()?;
        }
        Ok(())
    }

    /// How long a request waits for a pooled connection.
    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.database.pool_wait_ms)
    }
}

impl OidcConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let issuer = url::Url::parse(&self.issuer)
            .map_err(|e| invalid("oidc.issuer", &format!("not a URL: {e}")))?;
        if !https_or_loopback(&issuer) {
            return Err(invalid(
                "oidc.issuer",
                "must be https:// (http:// only on a loopback host)",
            ));
        }
        let redirect = url::Url::parse(&self.redirect_uri)
            .map_err(|e| invalid("oidc.redirect_uri", &format!("not a URL: {e}")))?;
        if !https_or_loopback(&redirect) {
            return Err(invalid(
                "oidc.redirect_uri",
                "must be https:// (http:// only on a loopback host)",
            ));
        }
        if self.client_id.is_empty() {
            return Err(invalid("oidc.client_id", "required"));
        }
        let org_ok = !self.org_id.is_empty()
            && self.org_id.len() <= 63
            && self
                .org_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !org_ok {
            return Err(invalid("oidc.org_id", "not an organisation id"));
        }
        Ok(())
    }
}

/// TLS, except to this machine.
pub fn https_or_loopback(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(name)) => name == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
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
