//! The policy registry's own logic, apart from storage and HTTP: checking an uploaded policy
//! with the runtimes' loader ([`validation`]), signing a version for runtimes ([`sign_version`]),
//! deciding a test event as a runtime would ([`trial`]), and reading what runtimes report they
//! run ([`report`]).
//!
//! Everything that reads policy text goes through `atlasbridge_protocol::policy`, the code the
//! daemons run, so what the server accepts is exactly what a runtime loads, and the hash the
//! server records is the hash a runtime computes.

pub mod report;
pub mod trial;
pub mod validation;

use atlasbridge_protocol::cloud::rest::PolicyVersion;
use atlasbridge_protocol::trace::checkpoint::encode_public_key;
use ed25519_dalek::SigningKey;

/// A version as runtimes fetch it, signed by `key` over the JCS of `{name, version,
/// content_hash, signed_at}` (cloud.md): the YAML is not covered, but a runtime checks that the
/// YAML hashes to the signed `content_hash`, which binds it.
pub fn sign_version(
    key: &SigningKey,
    name: &str,
    version: i32,
    content_hash: &str,
    yaml: &str,
    signed_at: &str,
) -> PolicyVersion {
    PolicyVersion {
        name: name.to_owned(),
        version: version.to_string(),
        content_hash: content_hash.to_owned(),
        yaml: yaml.to_owned(),
        signed_at: signed_at.to_owned(),
        signature: String::new(),
    }
    .sign(key)
}

/// How a signing key is named in the database (`ed25519:` + base64url of the public key).
pub fn signer_name(key: &SigningKey) -> String {
    encode_public_key(&key.verifying_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_version_verifies_under_the_server_key_only() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let version = sign_version(
            &key,
            "p",
            2,
            &"ab".repeat(32),
            "policy_version: \"1\"\n",
            "2026-11-27T00:00:00.000000Z",
        );
        assert_eq!(version.version, "2");
        assert!(version.signature_verifies(&key.verifying_key()));
        let other = SigningKey::from_bytes(&[4; 32]);
        assert!(!version.signature_verifies(&other.verifying_key()));
        assert!(signer_name(&key).starts_with("ed25519:"));
    }
}
