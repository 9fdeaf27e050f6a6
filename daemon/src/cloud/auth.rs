//! The API key, and the short-lived access token the cloud exchanges it for.
//!
//! The key comes from `ATLASBRIDGE_CLOUD_API_KEY`, else from where `[cloud]` says: a file
//! (`api_key_file`, which must not be readable by others) or the OS keyring (`api_key_keyring`,
//! in a build with the `keyring` feature). It is sent only to the token call; everything else
//! carries the token, which lives in memory and is renewed at 80 % of its lifetime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::rest::{ErrorBody, TokenRequest, TokenResponse};
use atlasbridge_protocol::cloud::retry::parse_retry_after;
use reqwest::StatusCode;
use url::Url;

use super::keyring::{SERVICE, SecretStore, StoreError};

/// The environment variable that holds the API key.
pub const API_KEY_ENV: &str = "ATLASBRIDGE_CLOUD_API_KEY";

/// Why a call to the cloud did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 429 or 503: try again no sooner than this.
    #[error("the cloud asked to retry in {} s (HTTP {status})", wait.as_secs())]
    RetryAfter {
        /// The status.
        status: u16,
        /// How long to wait.
        wait: Duration,
    },
    /// 401: the key or token was refused.
    #[error("the cloud refused the credentials: {0}")]
    Unauthorized(String),
    /// Anything else: network errors, other statuses, bad bodies.
    #[error("{0}")]
    Failed(String),
}

/// Where the config says the API key is kept, when the environment does not give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// Nowhere: only the environment can give it.
    Unset,
    /// `[cloud] api_key_file`: a file of mode 0600.
    File(&'a Path),
    /// `[cloud] api_key_keyring = true`: the OS keyring, service [`SERVICE`], this account (the
    /// organisation id).
    Keyring {
        /// The keyring account.
        account: &'a str,
    },
}

/// Why no API key could be found. No variant carries the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// Neither the environment nor the config names one.
    #[error(
        "no API key: set {API_KEY_ENV}, [cloud] api_key_file or [cloud] api_key_keyring \
         (run `atlasbridge cloud setup`)"
    )]
    Unset,
    /// The key file cannot be read.
    #[error("cannot read the API key file {}: {why}", path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        why: String,
    },
    /// The key file can be read by others.
    #[error(
        "the API key file {} is readable by others (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    FileShared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file holds nothing but blanks.
    #[error("the API key file {} is empty", path.display())]
    FileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The config asks for the keyring and this build has none.
    #[error(
        "the keyring feature is not built into this atlasbridged: [cloud] api_key_keyring = true \
         needs a build with `--features keyring`; otherwise use [cloud] api_key_file or \
         {API_KEY_ENV}"
    )]
    KeyringNotBuilt,
    /// There is no keyring to ask, or it refused.
    #[error(
        "the OS keyring is not available for service {SERVICE:?}, account {account:?}: {why}; \
         unlock it (on Linux, a Secret Service such as GNOME Keyring or KeePassXC must be \
         running in the daemon's session) and restart the daemon, or keep the key in a file with \
         `atlasbridge cloud setup --api-key-store file`"
    )]
    KeyringUnavailable {
        /// The keyring account.
        account: String,
        /// The keyring's reason.
        why: String,
    },
    /// The keyring has no such entry.
    #[error(
        "no API key in the OS keyring for service {SERVICE:?}, account {account:?}: run \
         `atlasbridge cloud setup --api-key-store keyring`"
    )]
    KeyringMissing {
        /// The keyring account.
        account: String,
    },
    /// The entry holds nothing but blanks.
    #[error(
        "the API key in the OS keyring (service {SERVICE:?}, account {account:?}) is empty: run \
         `atlasbridge cloud setup --api-key-store keyring`"
    )]
    KeyringEmpty {
        /// The keyring account.
        account: String,
    },
    /// The keyring answered with an error.
    #[error(
        "cannot read the API key from the OS keyring (service {SERVICE:?}, account {account:?}): \
         {why}"
    )]
    KeyringFailed {
        /// The keyring account.
        account: String,
        /// The keyring's error.
        why: String,
    },
}

/// Finds the API key: `ATLASBRIDGE_CLOUD_API_KEY` when set (read through `env`), else where
/// `source` says. `keyring` is the OS keyring, `None` in a build without one.
pub fn api_key(
    source: KeySource<'_>,
    env: impl Fn(&str) -> Option<String>,
    keyring: Option<&dyn SecretStore>,
) -> Result<String, ApiKeyError> {
    if let Some(key) = env(API_KEY_ENV).filter(|k| !k.trim().is_empty()) {
        return Ok(key.trim().to_owned());
    }
    match source {
        KeySource::Unset => Err(ApiKeyError::Unset),
        KeySource::File(path) => key_from_file(path),
        KeySource::Keyring { account } => {
            let store = keyring.ok_or(ApiKeyError::KeyringNotBuilt)?;
            let account_owned = || account.to_owned();
            match store.get(SERVICE, account) {
                Ok(Some(key)) if key.trim().is_empty() => Err(ApiKeyError::KeyringEmpty {
                    account: account_owned(),
                }),
                Ok(Some(key)) => Ok(key.trim().to_owned()),
                Ok(None) => Err(ApiKeyError::KeyringMissing {
                    account: account_owned(),
                }),
                Err(StoreError::Unavailable(why)) => Err(ApiKeyError::KeyringUnavailable {
                    account: account_owned(),
                    why,
                }),
                Err(StoreError::Failed(why)) => Err(ApiKeyError::KeyringFailed {
                    account: account_owned(),
                    why,
                }),
            }
        }
    }
}

/// The key in a file that only its owner can read.
fn key_from_file(path: &Path) -> Result<String, ApiKeyError> {
    let unreadable = |e: std::io::Error| ApiKeyError::FileUnreadable {
        path: path.to_owned(),
        why: e.to_string(),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(unreadable)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ApiKeyError::FileShared {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let key = text.trim();
    if key.is_empty() {
        return Err(ApiKeyError::FileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(key.to_owned())
}

/// An access token and when to renew it.
#[derive(Debug, Clone)]
pub struct Token {
    /// The bearer token.
    pub value: String,
    /// When it was issued (by our clock).
    pub issued: Instant,
    /// Its lifetime.
    pub lifetime: Duration,
    /// When it expires, for `cloud status`.
    pub expires_at: jiff::Timestamp,
}

impl Token {
    /// When it should be renewed: at 80 % of its lifetime.
    pub fn renew_at(&self) -> Instant {
        self.issued + self.lifetime.mul_f64(0.8)
    }
}

/// Makes the token call.
#[derive(Debug, Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    api_base: Url,
    url: Url,
    request: TokenRequest,
}

impl TokenClient {
    /// A client for `POST {api_base}/v1/auth/token`.
    pub fn new(
        http: reqwest::Client,
        api_base: &Url,
        request: TokenRequest,
    ) -> Result<Self, String> {
        let url = api_base
            .join("v1/auth/token")
            .map_err(|e| format!("bad api_base {api_base}: {e}"))?;
        Ok(Self {
            http,
            api_base: api_base.clone(),
            url,
            request,
        })
    }

    /// The HTTP client, shared with the policy registry calls.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The REST base URL.
    pub fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// Exchanges the API key for a token (one attempt).
    pub async fn fetch(&self) -> Result<Token, CallError> {
        let response = self
            .http
            .post(self.url.clone())
            .json(&self.request)
            .send()
            .await
            .map_err(|e| CallError::Failed(format!("token call to {} failed: {e}", self.url)))?;
        let response = check_status(response).await?;
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|e| CallError::Failed(format!("the token answer is not valid: {e}")))?;
        let lifetime = Duration::from_secs(token.expires_in.max(1));
        let expires_at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(
                i64::try_from(token.expires_in).unwrap_or(i64::MAX),
            ))
            .unwrap_or(jiff::Timestamp::MAX);
        Ok(Token {
            value: token.access_token,
            issued: Instant::now(),
            lifetime,
            expires_at,
        })
    }
}

/// Turns 401, 429 and 503 and other failures into [`CallError`]s; passes 2xx through.
pub async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, CallError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, jiff::Timestamp::now().as_second()));
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&body)
        .map(|e| format!("{} ({})", e.error, e.code))
        .unwrap_or_else(|_| format!("HTTP {status}"));
    Err(classify(status, retry_after, message))
}

/// The error for a failed status.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, message: String) -> CallError {
    match status {
        StatusCode::UNAUTHORIZED => CallError::Unauthorized(message),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => CallError::RetryAfter {
            status: status.as_u16(),
            // Without the header: wait like any other failure, at least a second.
            wait: retry_after.unwrap_or(Duration::from_secs(1)),
        },
        _ => CallError::Failed(format!("HTTP {status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cloud::keyring::MemoryStore;

    fn env_key(name: &str) -> Option<String> {
        (name == API_KEY_ENV).then(|| " env-key\n".to_owned())
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn keyring_with(account: &str, key: &str) -> MemoryStore {
        let store = MemoryStore::default();
        store.set(SERVICE, account, key).unwrap();
        store
    }

    #[test]
    fn the_environment_wins_and_a_shared_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "file-key\n").unwrap();
        let source = KeySource::File(&file);
        assert_eq!(api_key(source, env_key, None).unwrap(), "env-key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let error = api_key(source, no_env, None).unwrap_err().to_string();
            assert!(error.contains("readable by others (mode 644)"), "{error}");
            assert!(error.contains("chmod 600"), "{error}");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(api_key(source, no_env, None).unwrap(), "file-key");
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            api_key(source, no_env, None),
            Err(ApiKeyError::FileEmpty { .. })
        ));
        let missing = dir.path().join("absent");
        let error = api_key(KeySource::File(&missing), no_env, None).unwrap_err();
        assert!(
            matches!(error, ApiKeyError::FileUnreadable { .. }),
            "{error}"
        );
        let error = api_key(KeySource::Unset, no_env, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains(API_KEY_ENV), "{error}");
        assert!(error.contains("api_key_keyring"), "{error}");
        assert!(error.contains("atlasbridge cloud setup"), "{error}");
    }

    #[test]
    fn the_keyring_entry_of_the_org_is_read_after_the_environment() {
        let store = keyring_with("acme", " keyring-key\n");
        let source = KeySource::Keyring { account: "acme" };
        assert_eq!(api_key(source, env_key, Some(&store)).unwrap(), "env-key");
        assert_eq!(
            api_key(source, no_env, Some(&store)).unwrap(),
            "keyring-key"
        );
        // A blank variable does not hide the keyring.
        let blank = |_: &str| Some("  ".to_owned());
        assert_eq!(api_key(source, blank, Some(&store)).unwrap(), "keyring-key");
        // Another service's entry, or another org's, is not ours.
        let other = MemoryStore::default();
        other.set("not-atlasbridge", "acme", "x").unwrap();
        other.set(SERVICE, "other-org", "y").unwrap();
        assert_eq!(
            api_key(source, no_env, Some(&other)).unwrap_err(),
            ApiKeyError::KeyringMissing {
                account: "acme".into()
            }
        );
    }

    #[test]
    fn each_keyring_failure_names_the_service_the_account_and_the_fix() {
        let source = KeySource::Keyring { account: "acme" };
        let message = |store: Option<&dyn SecretStore>| {
            api_key(source, no_env, store).unwrap_err().to_string()
        };

        let error = message(None);
        assert!(
            error.starts_with("the keyring feature is not built into this atlasbridged"),
            "{error}"
        );
        assert!(error.contains("--features keyring"), "{error}");
        assert!(error.contains("api_key_file"), "{error}");

        let error = message(Some(&MemoryStore::default()));
        assert_eq!(
            error,
            "no API key in the OS keyring for service \"atlasbridge\", account \"acme\": run \
             `atlasbridge cloud setup --api-key-store keyring`"
        );

        let empty = keyring_with("acme", " ");
        let error = message(Some(&empty));
        assert!(error.contains("is empty"), "{error}");
        assert!(
            error.contains("service \"atlasbridge\", account \"acme\""),
            "{error}"
        );

        let locked =
            MemoryStore::failing(StoreError::Unavailable("the collection is locked".into()));
        let error = message(Some(&locked));
        assert!(
            error.starts_with(
                "the OS keyring is not available for service \"atlasbridge\", account \"acme\": \
                 the collection is locked;"
            ),
            "{error}"
        );
        assert!(
            error.contains("atlasbridge cloud setup --api-key-store file"),
            "{error}"
        );

        let broken = MemoryStore::failing(StoreError::Failed("D-Bus said no".into()));
        let error = message(Some(&broken));
        assert!(
            error.contains("service \"atlasbridge\", account \"acme\"): D-Bus said no"),
            "{error}"
        );
    }

    #[test]
    fn no_error_carries_the_key() {
        let store = keyring_with("acme", "s3cret-key");
        let errors = [
            api_key(
                KeySource::Keyring { account: "other" },
                no_env,
                Some(&store),
            ),
            api_key(KeySource::Keyring { account: "acme" }, no_env, None),
        ];
        for error in errors {
            let error = error.unwrap_err();
            assert!(!error.to_string().contains("s3cret"), "{error}");
            assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
        }
    }

    #[test]
    fn statuses_map_to_what_the_caller_does_next() {
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(7)),
                "x".into()
            ),
            CallError::RetryAfter {
                status: 429,
                wait: Duration::from_secs(7)
            }
        );
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, None, "x".into()),
            CallError::Unauthorized(_)
        ));
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, None, "x".into()),
            CallError::Failed(_)
        ));
    }
}
