//! The REST shapes: the token call and the policy registry.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::canonical::to_canonical_vec;
use crate::trace::checkpoint::{decode_signature, encode_signature};

/// `POST /v1/auth/token` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// The API key.
    pub api_key: String,
    /// The organisation.
    pub org_id: String,
    /// The runtime.
    pub runtime_id: String,
}

/// `POST /v1/auth/token` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Every REST error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// For people.
    pub error: String,
    /// UPPER_SNAKE.
    pub code: String,
    /// For the cloud's logs.
    #[serde(default)]
    pub request_id: String,
}

/// `GET /v1/policies/{name}/versions/{version}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The policy's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its `policy_hash`.
    pub content_hash: String,
    /// The policy file.
    pub yaml: String,
    /// RFC 3339.
    pub signed_at: String,
    /// The server key's signature over the JCS of the other members but `yaml`.
    pub signature: String,
}

impl PolicyVersion {
    /// The bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        to_canonical_vec(&json!({
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "signed_at": self.signed_at,
        }))
    }

    /// Signs it (the cloud's side, and the test peer's).
    pub fn sign(mut self, key: &SigningKey) -> Self {
        self.signature = encode_signature(&key.sign(&self.signing_input()));
        self
    }

    /// Whether the signature verifies strictly under `key`.
    pub fn signature_verifies(&self, key: &VerifyingKey) -> bool {
        decode_signature(&self.signature)
            .is_some_and(|s| key.verify_strict(&self.signing_input(), &s).is_ok())
    }
}

/// `POST /v1/policies/{name}/versions` request, signed by the runtime over the JCS of the other
/// members but `yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyUpload {
    /// The policy file.
    pub yaml: String,
    /// Its `policy_hash`.
    pub content_hash: String,
    /// The uploading runtime.
    pub runtime_id: String,
    /// The runtime's signature.
    pub signature: String,
}

impl PolicyUpload {
    /// The bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        let value: Value = json!({
            "content_hash": self.content_hash,
            "runtime_id": self.runtime_id,
        });
        to_canonical_vec(&value)
    }

    /// Signs it with the runtime's identity key.
    pub fn sign(mut self, key: &SigningKey) -> Self {
        self.signature = encode_signature(&key.sign(&self.signing_input()));
        self
    }

    /// Whether the signature verifies strictly under `key`.
    pub fn signature_verifies(&self, key: &VerifyingKey) -> bool {
        decode_signature(&self.signature)
            .is_some_and(|s| key.verify_strict(&self.signing_input(), &s).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_version_signature_covers_everything_but_the_yaml() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let version = PolicyVersion {
            name: "p".into(),
            version: "2".into(),
            content_hash: "ab".into(),
            yaml: "x: 1".into(),
            signed_at: "2026-11-26T00:00:00Z".into(),
            signature: String::new(),
        }
        .sign(&key);
        assert!(version.signature_verifies(&key.verifying_key()));
        let mut other_yaml = version.clone();
        other_yaml.yaml = "y: 2".into();
        assert!(other_yaml.signature_verifies(&key.verifying_key()));
        let mut other_hash = version;
        other_hash.content_hash = "cd".into();
        assert!(!other_hash.signature_verifies(&key.verifying_key()));
    }
}
