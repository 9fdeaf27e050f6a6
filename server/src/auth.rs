//! API keys and the access tokens they are exchanged for.
//!
//! An API key is `abk_<key_id>_<secret>`: `key_id` (16 hex) finds the row, `secret` (32 random
//! bytes, base64url) proves possession. Only SHA-256 of the secret is stored. A slow password
//! hash (argon2id) is for secrets people choose; a 256-bit random secret cannot be guessed, so a
//! fast hash loses nothing and keeps the token call cheap. The comparison is constant-time.
//!
//! Access tokens are JWTs (HS256, the shared `auth.jwt_secret`, so any replica verifies any
//! token) naming the org, the runtime and the key; the key's row is checked again on every
//! connection, so revoking a key cuts off its tokens.

use atlasbridge_protocol::hash::sha256_hex;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The prefix that makes an AtlasBridge API key recognisable (e.g. to secret scanners).
pub const API_KEY_PREFIX: &str = "abk";

/// An API key split into its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The public half: the row's id.
    pub key_id: String,
    /// The secret half.
    pub secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why an API key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a new key: {0}")]
pub struct RandomnessError(String);

impl ApiKey {
    /// A fresh key from OS randomness.
    pub fn generate() -> Result<Self, RandomnessError> {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| RandomnessError(e.to_string()))?;
        getrandom::fill(&mut secret).map_err(|e| RandomnessError(e.to_string()))?;
        Ok(Self {
            key_id: atlasbridge_protocol::hash::hex_lower(&id),
            secret: URL_SAFE_NO_PAD.encode(secret),
        })
    }

    /// The key as given to its user.
    pub fn reveal(&self) -> String {
        format!("{API_KEY_PREFIX}_{}_{}", self.key_id, self.secret)
    }

    /// Splits a presented key; `None` when it is not shaped like ours. (The secret's base64url
    /// may itself contain `_`, so only the first two separate.)
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, '_');
        let (prefix, key_id, secret) = (parts.next()?, parts.next()?, parts.next()?);
        let hex_id = key_id.len() == 16 && key_id.bytes().all(|b| b.is_ascii_hexdigit());
        (prefix == API_KEY_PREFIX && hex_id && !secret.is_empty()).then(|| Self {
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// What is stored: SHA-256 of the secret, lowercase hex.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }

    /// Whether this key's secret hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &str) -> bool {
        let ours = self.secret_hash();
        ours.len() == stored.len()
            && ours
                .bytes()
                .zip(stored.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The runtime the token was issued to.
    pub sub: String,
    /// Its organisation.
    pub org: String,
    /// The API key it was exchanged for.
    pub kid: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, expired, or malformed.
    #[error("token refused: {0}")]
    Refused(String),
    /// Signing failed (a configuration problem).
    #[error("cannot sign a token: {0}")]
    Signing(String),
}

/// Issues and checks access tokens with the shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    lifetime_s: u64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("lifetime_s", &self.lifetime_s)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the configured secret.
    pub fn new(secret: &[u8], lifetime_s: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            lifetime_s,
        }
    }

    /// A token for `runtime_id` of `org_id`, and its lifetime in seconds.
    pub fn issue(
        &self,
        org_id: &str,
        runtime_id: &str,
        key_id: &str,
    ) -> Result<(String, u64), TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: runtime_id.to_owned(),
            org: org_id.to_owned(),
            kid: key_id.to_owned(),
            iat: now,
            exp: now + self.lifetime_s,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok((token, self.lifetime_s))
    }

    /// The claims of a token this server (or a replica with the same secret) issued and that
    /// has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Refused(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_and_only_its_secret_matches() {
        let key = ApiKey::generate().unwrap();
        let text = key.reveal();
        assert!(text.starts_with("abk_"));
        let parsed = ApiKey::parse(&text).unwrap();
        assert_eq!(parsed, key);
        assert!(parsed.matches(&key.secret_hash()));
        let other = ApiKey::generate().unwrap();
        assert!(!other.matches(&key.secret_hash()));
        assert!(!format!("{key:?}").contains(&key.secret));
        for bad in [
            "",
            "abk",
            "abk_xyz_s",
            "xyz_0123456789abcdef_s",
            "abk_0123456789abcdef_",
        ] {
            assert_eq!(ApiKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_verify_only_with_the_same_secret_and_before_expiry() {
        let keys = TokenKeys::new(&[7; 32], 60);
        let (token, lifetime) = keys.issue("org-a", "ed25519:r", "k").unwrap();
        assert_eq!(lifetime, 60);
        let claims = keys.verify(&token).unwrap();
        assert_eq!(
            (claims.org.as_str(), claims.sub.as_str()),
            ("org-a", "ed25519:r")
        );
        assert!(TokenKeys::new(&[8; 32], 60).verify(&token).is_err());
        let expired = TokenKeys::new(&[7; 32], 0);
        let mut claims = claims;
        claims.exp = claims.iat.saturating_sub(3600);
        let old = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &expired.encoding)
            .unwrap();
        assert!(keys.verify(&old).is_err());
    }
}
