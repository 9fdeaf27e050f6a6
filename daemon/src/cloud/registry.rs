//! The policy registry's REST calls: fetching a version (for offers and `cloud policy pull`) and
//! uploading one (`cloud policy push`). Every call carries the current token and honours 429/503
//! with `Retry-After`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use atlasbridge_protocol::cloud::rest::{PolicyUpload, PolicyVersion};
use atlasbridge_protocol::methods::{CloudPolicyPullResult, CloudPolicyPushResult};
use atlasbridge_protocol::policy::{LoadError, LoadedPolicy, load_str};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::auth::{CallError, check_status};
use super::policy_sync::Fetcher;

/// Attempts at one call (each after the wait the cloud asks for).
const ATTEMPTS: usize = 5;

/// The uplink's REST access, for requests that come over the local socket.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    /// Token, base URL, HTTP client, server key.
    pub fetcher: Fetcher,
    /// The identity key that signs uploads.
    pub identity: SigningKey,
    /// `ed25519:` + its public key.
    pub runtime_id: String,
    /// The uplink's runtime, where the calls run.
    pub runtime: tokio::runtime::Handle,
}

/// `GET {api_base}/{path}` as JSON.
pub(crate) async fn get_json<T: DeserializeOwned>(
    fetcher: &Fetcher,
    path: &str,
) -> Result<T, String> {
    call(fetcher, path, None::<&()>).await
}

/// `POST {api_base}/{path}` with a JSON body, answered with JSON.
pub(crate) async fn post_json<T: DeserializeOwned, B: serde::Serialize>(
    fetcher: &Fetcher,
    path: &str,
    body: &B,
) -> Result<T, String> {
    call(fetcher, path, Some(body)).await
}

async fn call<T: DeserializeOwned, B: serde::Serialize>(
    fetcher: &Fetcher,
    path: &str,
    body: Option<&B>,
) -> Result<T, String> {
    let url = fetcher
        .api_base
        .join(path)
        .map_err(|e| format!("bad registry address {path}: {e}"))?;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let token = fetcher
            .token
            .borrow()
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let request = match body {
            Some(body) => fetcher.http.post(url.clone()).json(body),
            None => fetcher.http.get(url.clone()),
        };
        let response = request
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        match check_status(response).await {
            Ok(response) => {
                return response
                    .json::<T>()
                    .await
                    .map_err(|e| format!("the answer of {url} is not valid: {e}"));
            }
            Err(CallError::RetryAfter { wait, status }) => {
                last = format!("HTTP {status}");
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
            }
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
    Err(format!("{url}: still {last} after {ATTEMPTS} attempts"))
}

/// The checks every version from the cloud passes before anything uses it: the server's
/// signature (when a key is configured), validity with the local loader, and that the policy's
/// own hash is its `content_hash` — which binds the YAML the signature does not cover.
pub(crate) fn check_version(
    version: &PolicyVersion,
    server_key: Option<&VerifyingKey>,
) -> Result<LoadedPolicy, String> {
    if let Some(key) = server_key
        && !version.signature_verifies(key)
    {
        return Err("the policy's signature does not verify under server_public_key".to_owned());
    }
    let label = PathBuf::from(format!("cloud:{}@{}.yaml", version.name, version.version));
    let loaded = load_str(&version.yaml, &label).map_err(|e| invalid(&e))?;
    if loaded.hash != version.content_hash {
        return Err(format!(
            "the policy hashes to {}, not to its content_hash {}",
            loaded.hash, version.content_hash
        ));
    }
    Ok(loaded)
}

/// A policy that does not load, in one line: how many errors, and the first.
fn invalid(error: &LoadError) -> String {
    let first = error
        .errors
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    format!(
        "the policy is not valid ({} errors; first: {first})",
        error.errors.len()
    )
}

/// A path segment with everything but unreserved characters percent-encoded.
pub(crate) fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Uploads `yaml` as a new version of the policy it names, signed by the runtime.
pub async fn push(client: &RegistryClient, yaml: &str) -> Result<CloudPolicyPushResult, String> {
    let loaded = load_str(yaml, Path::new("pushed-policy.yaml")).map_err(|e| invalid(&e))?;
    if loaded.sources.len() > 1 {
        return Err("a pushed policy must be self-contained (no `extends`)".to_owned());
    }
    let upload = PolicyUpload {
        yaml: yaml.to_owned(),
        content_hash: loaded.hash.clone(),
        runtime_id: client.runtime_id.clone(),
        signature: String::new(),
    }
    .sign(&client.identity);
    let path = format!(
        "v1/policies/{}/versions",
        encode_segment(&loaded.policy.name)
    );
    call(&client.fetcher, &path, Some(&upload)).await
}

#[derive(Deserialize)]
struct VersionList {
    latest_version: String,
}

/// Fetches the latest version of `name` and checks it as an offered policy is checked.
pub async fn pull(client: &RegistryClient, name: &str) -> Result<CloudPolicyPullResult, String> {
    let fetcher = &client.fetcher;
    let list: VersionList =
        get_json(fetcher, &format!("v1/policies/{}", encode_segment(name))).await?;
    let version: PolicyVersion = get_json(
        fetcher,
        &format!(
            "v1/policies/{}/versions/{}",
            encode_segment(name),
            encode_segment(&list.latest_version)
        ),
    )
    .await?;
    check_version(&version, fetcher.server_key.as_ref())?;
    Ok(CloudPolicyPullResult {
        name: version.name,
        version: version.version,
        content_hash: version.content_hash,
        signed_at: version.signed_at,
        signature_checked: fetcher.server_key.is_some(),
        yaml: version.yaml,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("team/a b"), "team%2Fa%20b");
        assert_eq!(encode_segment("v1.2_x-y~"), "v1.2_x-y~");
    }
}
