//! Signed, forward-secure checkpoints of a chain, and the key encodings they use.
//!
//! Checkpoint `n` opens epoch `n` under the default rotation (one epoch per checkpoint); in
//! general a checkpoint either stays in its predecessor's epoch or opens the next one:
//! - the checkpoint that opens epoch `e + 1` carries `epoch_public_key` (the new key) and is
//!   signed by epoch `e`'s key, which the writer then erases;
//! - a checkpoint that stays in epoch `e` carries no key and is signed by epoch `e`'s key;
//! - checkpoint 0 opens epoch 0 and is signed by the runtime identity key (`runtime_id`).
//!
//! `signature` is Ed25519 over the JCS of every other member; `checkpoint_hash` is SHA-256 of
//! the JCS of the whole checkpoint, signature included, and links the next one through
//! `prev_checkpoint_hash`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::to_canonical_vec;
use crate::hash::sha256_hex;

/// Prefix of encoded keys and signatures.
pub const ED25519_PREFIX: &str = "ed25519:";

/// `prev_checkpoint_hash` of checkpoint 0.
pub const GENESIS_CHECKPOINT_HASH: &str = crate::trace::GENESIS_PREV_HASH;

/// One checkpoint line of `checkpoints.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Position among checkpoints, from 0, without gaps.
    pub checkpoint_seq: u64,
    /// `checkpoint_hash` of the previous checkpoint.
    pub prev_checkpoint_hash: String,
    /// The signing epoch.
    pub epoch: u64,
    /// Present when this checkpoint opens `epoch`: that epoch's public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_public_key: Option<String>,
    /// The chain's head at the time (`None` while the chain is empty).
    pub seq: Option<u64>,
    /// The head's `entry_hash` (the genesis value while empty).
    pub entry_hash: String,
    /// Entries in the chain (`seq + 1`).
    pub entries: u64,
    /// RFC 3339 UTC.
    pub timestamp: String,
    /// `ed25519:` + base64url of the runtime identity public key.
    pub runtime_id: String,
    /// `ed25519:` + base64url of the signature.
    pub signature: String,
}

/// What a checkpoint says before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedCheckpoint {
    /// See [`Checkpoint`].
    pub checkpoint_seq: u64,
    /// See [`Checkpoint`].
    pub prev_checkpoint_hash: String,
    /// See [`Checkpoint`].
    pub epoch: u64,
    /// See [`Checkpoint`].
    pub epoch_public_key: Option<String>,
    /// See [`Checkpoint`].
    pub seq: Option<u64>,
    /// See [`Checkpoint`].
    pub entry_hash: String,
    /// See [`Checkpoint`].
    pub entries: u64,
    /// See [`Checkpoint`].
    pub timestamp: String,
    /// See [`Checkpoint`].
    pub runtime_id: String,
}

impl UnsignedCheckpoint {
    /// Signs it with `key` (the identity key for checkpoint 0, else the current epoch's key).
    pub fn sign(self, key: &SigningKey) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            checkpoint_seq: self.checkpoint_seq,
            prev_checkpoint_hash: self.prev_checkpoint_hash,
            epoch: self.epoch,
            epoch_public_key: self.epoch_public_key,
            seq: self.seq,
            entry_hash: self.entry_hash,
            entries: self.entries,
            timestamp: self.timestamp,
            runtime_id: self.runtime_id,
            signature: String::new(),
        };
        let signature = key.sign(&checkpoint.signing_input());
        checkpoint.signature = encode_signature(&signature);
        checkpoint
    }
}

impl Checkpoint {
    /// The bytes the signature covers: JCS of every member but `signature`.
    pub fn signing_input(&self) -> Vec<u8> {
        let mut value = self.to_value();
        if let Value::Object(members) = &mut value {
            members.remove("signature");
        }
        to_canonical_vec(&value)
    }

    /// SHA-256 of the JCS of the whole checkpoint.
    pub fn checkpoint_hash(&self) -> String {
        sha256_hex(&to_canonical_vec(&self.to_value()))
    }

    /// Whether `signature` verifies (strictly) under `key`.
    pub fn signature_verifies(&self, key: &VerifyingKey) -> bool {
        decode_signature(&self.signature)
            .is_some_and(|signature| key.verify_strict(&self.signing_input(), &signature).is_ok())
    }

    /// The checkpoint as one stored line (canonical, `\n`-terminated).
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = to_canonical_vec(&self.to_value());
        line.push(b'\n');
        line
    }

    fn to_value(&self) -> Value {
        // A struct of strings and integers always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `ed25519:` + base64url (no padding) of a public key.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{ED25519_PREFIX}{}", URL_SAFE_NO_PAD.encode(key.as_bytes()))
}

/// The public key in `ed25519:<base64url>` form, if it is one.
pub fn decode_public_key(text: &str) -> Option<VerifyingKey> {
    let raw = URL_SAFE_NO_PAD
        .decode(text.strip_prefix(ED25519_PREFIX)?)
        .ok()?;
    VerifyingKey::from_bytes(&raw.try_into().ok()?).ok()
}

/// `ed25519:` + base64url (no padding) of a signature.
pub fn encode_signature(signature: &Signature) -> String {
    format!(
        "{ED25519_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// The signature in `ed25519:<base64url>` form, if it is one.
pub fn decode_signature(text: &str) -> Option<Signature> {
    let raw = URL_SAFE_NO_PAD
        .decode(text.strip_prefix(ED25519_PREFIX)?)
        .ok()?;
    Some(Signature::from_bytes(&raw.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32])
    }

    fn unsigned(seq: u64) -> UnsignedCheckpoint {
        UnsignedCheckpoint {
            checkpoint_seq: seq,
            prev_checkpoint_hash: GENESIS_CHECKPOINT_HASH.to_owned(),
            epoch: seq,
            epoch_public_key: Some(encode_public_key(&key(9).verifying_key())),
            seq: Some(41),
            entry_hash: "ab".repeat(32),
            entries: 42,
            timestamp: "2026-11-24T01:02:03.000000Z".to_owned(),
            runtime_id: encode_public_key(&key(1).verifying_key()),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_only_under_its_key() {
        let checkpoint = unsigned(0).sign(&key(1));
        assert!(checkpoint.signature_verifies(&key(1).verifying_key()));
        assert!(!checkpoint.signature_verifies(&key(2).verifying_key()));
        let mut tampered = checkpoint;
        tampered.entries = 43;
        assert!(!tampered.signature_verifies(&key(1).verifying_key()));
    }

    #[test]
    fn lines_round_trip_and_the_hash_covers_the_signature() {
        let checkpoint = unsigned(3).sign(&key(1));
        let line = checkpoint.to_line();
        let back: Checkpoint = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, checkpoint);
        let mut resigned = checkpoint.clone();
        resigned.signature = unsigned(3).sign(&key(2)).signature;
        assert_ne!(resigned.checkpoint_hash(), checkpoint.checkpoint_hash());
    }

    #[test]
    fn keys_encode_as_prefixed_base64url() {
        let public = key(7).verifying_key();
        let text = encode_public_key(&public);
        assert!(text.starts_with("ed25519:") && !text.contains('='));
        assert_eq!(decode_public_key(&text), Some(public));
        assert_eq!(decode_public_key("ed25519:!!"), None);
        assert_eq!(decode_public_key("rsa:AAAA"), None);
    }
}
