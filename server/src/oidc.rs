//! OpenID Connect single sign-on: the authorization code flow with PKCE (S256).
//!
//! [`OidcClient::begin`] makes the provider's authorization URL with a fresh `state`, `nonce` and
//! PKCE verifier; the caller keeps them in the database (so any replica can finish the login).
//! [`OidcClient::finish`] exchanges the code at the token endpoint and checks the ID token: its
//! signature against the provider's JWKS (asymmetric algorithms only), `iss`, `aud` (and `azp`
//! when there are several audiences), `exp`, and the `nonce`. The discovery document and the
//! JWKS are fetched when first needed and kept for an hour; a token signed by a key the JWKS
//! does not hold makes one early refetch (providers rotate keys), at most every 30 seconds.

use std::time::{Duration, Instant};

use atlasbridge_protocol::hash::sha256;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::config::{OidcConfig, https_or_loopback};
use crate::session_token::{random_secret, same_secret};
use crate::store::people::PendingOidcLogin;

/// How long a fetched discovery document or JWKS is used.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// The earliest a JWKS is refetched for an unknown key.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Calls to the provider give up after this.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the provider.
const MAX_PROVIDER_BODY: usize = 1 << 20;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_S: u64 = 60;

/// Why an SSO login failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense (502).
    #[error("the identity provider is unavailable: {0}")]
    Provider(String),
    /// The provider refused the code (401).
    #[error("the identity provider refused the login: {0}")]
    Refused(String),
    /// The ID token does not hold (401).
    #[error("the ID token is not acceptable: {0}")]
    IdToken(String),
    /// Setting up the HTTP client or randomness failed.
    #[error("SSO is misconfigured: {0}")]
    Setup(String),
}

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// Who logged in, as the ID token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `iss`.
    pub issuer: String,
    /// `sub`: stable per issuer.
    pub subject: String,
    /// `email`, when given.
    pub email: Option<String>,
    /// `email_verified`.
    pub email_verified: bool,
    /// `name`, when given.
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: serde_json::Value,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    name: Option<String>,
}

/// How many audiences `aud` names (jsonwebtoken has checked that ours is among them).
fn audience_count(aud: &serde_json::Value) -> usize {
    match aud {
        serde_json::Value::String(_) => 1,
        serde_json::Value::Array(all) => all.len(),
        _ => 0,
    }
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// A login about to be sent to the provider.
#[derive(Debug, Clone)]
pub struct Beginning {
    /// Where to send the browser.
    pub authorization_url: String,
    /// The `state` (kept hashed).
    pub state: String,
    /// The browser-binding cookie's value (kept hashed).
    pub binding: String,
    /// What the callback needs.
    pub pending: PendingOidcLogin,
}

/// Talks to one provider.
#[derive(Debug)]
pub struct OidcClient {
    config: OidcConfig,
    http: reqwest::Client,
    discovery: Mutex<Option<(Discovery, Instant)>>,
    jwks: Mutex<Option<(JwkSet, Instant)>>,
}

/// The PKCE S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()))
}

impl OidcClient {
    /// A client for the configured provider (nothing is fetched yet).
    pub fn new(config: OidcConfig) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            // A provider's endpoints answer directly; following redirects would let one send
            // our client secret elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Setup(e.to_string()))?;
        Ok(Self {
            config,
            http,
            discovery: Mutex::new(None),
            jwks: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(reqwest::StatusCode, T), OidcError> {
        let mut response = request
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("{what}: {e}")))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| OidcError::Provider(format!("{what}: {e}")))?
        {
            if body.len() + chunk.len() > MAX_PROVIDER_BODY {
                return Err(OidcError::Provider(format!("{what}: answer too large")));
            }
            body.extend_from_slice(&chunk);
        }
        let value = serde_json::from_slice(&body).map_err(|e| {
            OidcError::Provider(format!(
                "{what}: status {status}, not the expected JSON: {e}"
            ))
        })?;
        Ok((status, value))
    }

    async fn discovery(&self) -> Result<Discovery, OidcError> {
        let mut cached = self.discovery.lock().await;
        if let Some((discovery, at)) = cached.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Ok(discovery.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let (status, discovery): (_, Discovery) = self
            .fetch_json(self.http.get(&url), "discovery document")
            .await?;
        if !status.is_success() {
            return Err(OidcError::Provider(format!(
                "discovery document: status {status}"
            )));
        }
        // OpenID Connect Discovery 1.0, 4.3: the document must name the issuer we asked.
        if discovery.issuer != self.config.issuer {
            return Err(OidcError::Provider(format!(
                "the discovery document names issuer {:?}, not the configured {:?}",
                discovery.issuer, self.config.issuer
            )));
        }
        for endpoint in [
            &discovery.authorization_endpoint,
            &discovery.token_endpoint,
            &discovery.jwks_uri,
        ] {
            let secure = url::Url::parse(endpoint).is_ok_and(|url| https_or_loopback(&url));
            if !secure {
                return Err(OidcError::Provider(format!(
                    "endpoint {endpoint:?} is not https"
                )));
            }
        }
        info!(issuer = %discovery.issuer, "OIDC discovery document fetched");
        *cached = Some((discovery.clone(), Instant::now()));
        Ok(discovery)
    }

    async fn jwks(&self, jwks_uri: &str, refetch: bool) -> Result<JwkSet, OidcError> {
        let mut cached = self.jwks.lock().await;
        if let Some((keys, at)) = cached.as_ref() {
            let fresh = at.elapsed() < CACHE_FOR;
            let may_refetch = at.elapsed() >= REFETCH_AFTER;
            if fresh && !(refetch && may_refetch) {
                return Ok(keys.clone());
            }
        }
        let (status, keys): (_, JwkSet) = self.fetch_json(self.http.get(jwks_uri), "JWKS").await?;
        if !status.is_success() {
            return Err(OidcError::Provider(format!("JWKS: status {status}")));
        }
        debug!(keys = keys.keys.len(), "OIDC JWKS fetched");
        *cached = Some((keys.clone(), Instant::now()));
        Ok(keys)
    }

    /// A fresh login: the authorization URL and what to keep for the callback.
    pub async fn begin(&self) -> Result<Beginning, OidcError> {
        let discovery = self.discovery().await?;
        let fresh = || random_secret().map_err(|e| OidcError::Setup(e.to_string()));
        let (state, nonce, verifier, binding) = (fresh()?, fresh()?, fresh()?, fresh()?);
        let mut url = url::Url::parse(&discovery.authorization_endpoint)
            .map_err(|e| OidcError::Provider(format!("authorization endpoint: {e}")))?;
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(
            self.config
                .scopes
                .iter()
                .filter(|scope| *scope != "openid")
                .cloned(),
        );
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(Beginning {
            authorization_url: url.into(),
            state,
            binding,
            pending: PendingOidcLogin {
                nonce,
                pkce_verifier: verifier,
                binding_hash: String::new(),
            },
        })
    }

    /// Exchanges `code` and checks the ID token against `pending`'s nonce.
    pub async fn finish(
        &self,
        code: &str,
        pending: &PendingOidcLogin,
    ) -> Result<Identity, OidcError> {
        let discovery = self.discovery().await?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.config.redirect_uri)
            .append_pair("code_verifier", &pending.pkce_verifier)
            .append_pair("client_id", &self.config.client_id)
            .finish();
        let mut request = self
            .http
            .post(&discovery.token_endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form);
        if !self.config.client_secret.is_empty() {
            // client_secret_basic, the default method of OpenID Connect Core 9.
            request = request.basic_auth(
                form_encode(&self.config.client_id),
                Some(form_encode(&self.config.client_secret)),
            );
        }
        let (status, answer): (_, TokenAnswer) = self.fetch_json(request, "token endpoint").await?;
        if !status.is_success() {
            return Err(OidcError::Refused(format!(
                "token endpoint: status {status}"
            )));
        }
        let id_token = answer
            .id_token
            .ok_or_else(|| OidcError::Refused("no id_token in the token answer".to_owned()))?;
        self.verify(&id_token, &discovery, &pending.nonce).await
    }

    async fn verify(
        &self,
        id_token: &str,
        discovery: &Discovery,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| OidcError::IdToken(format!("header: {e}")))?;
        if !asymmetric(header.alg) {
            return Err(OidcError::IdToken(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let mut keys = self.jwks(&discovery.jwks_uri, false).await?;
        let mut key = select_key(&keys, header.kid.as_deref());
        if key.is_none() {
            keys = self.jwks(&discovery.jwks_uri, true).await?;
            key = select_key(&keys, header.kid.as_deref());
        }
        let jwk = key.ok_or_else(|| {
            OidcError::IdToken(format!("no key {:?} in the provider's JWKS", header.kid))
        })?;
        let decoding = DecodingKey::from_jwk(jwk)
            .map_err(|e| OidcError::IdToken(format!("provider key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_S;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdClaims>(id_token, &decoding, &validation)
            .map_err(|e| OidcError::IdToken(e.to_string()))?
            .claims;
        // OpenID Connect Core 3.1.3.7: with several audiences, azp must be us.
        if audience_count(&claims.aud) > 1
            && claims.azp.as_deref() != Some(self.config.client_id.as_str())
        {
            return Err(OidcError::IdToken(
                "several audiences and azp is not this client".to_owned(),
            ));
        }
        let nonce_ok = claims
            .nonce
            .as_deref()
            .is_some_and(|got| same_secret(got, nonce));
        if !nonce_ok {
            return Err(OidcError::IdToken("the nonce does not match".to_owned()));
        }
        Ok(Identity {
            issuer: claims.iss,
            subject: claims.sub,
            email: claims.email,
            email_verified: claims.email_verified.unwrap_or(false),
            name: claims.name,
        })
    }
}

/// RFC 6749 2.3.1: client id and secret are form-encoded before HTTP Basic.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn asymmetric(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    )
}

fn select_key<'a>(keys: &'a JwkSet, kid: Option<&str>) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => keys.find(kid),
        // No kid: only unambiguous when the provider has one key.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_base64url_of_sha256_without_padding() {
        // Computed independently (Python's hashlib and base64, padding stripped).
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r2wW1gFWFOEjXk"),
            "dZrJz5b___3oA5uVny1DZqEO9NM98brdg_f4AEY03Bc"
        );
        assert!(!asymmetric(Algorithm::HS256));
        assert!(asymmetric(Algorithm::ES256));
    }
}
