//! The API key, and the short-lived access token the cloud exchanges it for.
//!
//! The key comes from `ATLASBRIDGE_CLOUD_API_KEY`, else from `[cloud] api_key_file` (which must
//! not be readable by others). It is sent only to the token call; everything else carries the
//! token, which lives in memory and is renewed at 80 % of its lifetime.

use std::path::Path;
use std::time::{Duration, Instant};

use atlasbridge_protocol::cloud::rest::{ErrorBody, TokenRequest, TokenResponse};
use atlasbridge_protocol::cloud::retry::parse_retry_after;
use reqwest::StatusCode;
use url::Url;

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

/// Finds the API key. `env` reads an environment variable.
pub fn api_key(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if let Some(key) = env(API_KEY_ENV).filter(|k| !k.trim().is_empty()) {
        return Ok(key.trim().to_owned());
    }
    let Some(path) = file else {
        return Err(format!(
            "no API key: set {API_KEY_ENV} or [cloud] api_key_file (run `atlasbridge cloud setup`)"
        ));
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "the API key file {} is readable by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("the API key file {} is empty", path.display()));
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

    #[test]
    fn the_environment_wins_and_a_shared_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "file-key\n").unwrap();
        let env_key = |name: &str| (name == API_KEY_ENV).then(|| "env-key".to_owned());
        assert_eq!(api_key(Some(&file), env_key).unwrap(), "env-key");
        let no_env = |_: &str| None;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let error = api_key(Some(&file), no_env).unwrap_err();
            assert!(error.contains("readable by others"), "{error}");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(api_key(Some(&file), no_env).unwrap(), "file-key");
        let error = api_key(None, no_env).unwrap_err();
        assert!(error.contains(API_KEY_ENV), "{error}");
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
