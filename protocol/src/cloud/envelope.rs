//! The envelope of every control-channel message, and its signature.
//!
//! `signature` is Ed25519 over the JCS of the envelope without `signature`, in the
//! `ed25519:<base64url>` form of the trace's checkpoints.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{to_canonical_vec, write_canonical, write_string};
use crate::trace::canonical_of_stored;
use crate::trace::checkpoint::{decode_signature, encode_signature};

/// The largest message either side sends or accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One message of the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// UUID v7.
    pub message_id: String,
    /// The message type, e.g. `audit_batch`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339 UTC.
    pub timestamp: String,
    /// The organisation.
    pub org_id: String,
    /// The runtime (`ed25519:` + its public key).
    pub runtime_id: String,
    /// Monotonic per connection and direction, from 1.
    pub sequence: u64,
    /// The type's payload.
    pub payload: Value,
    /// Ed25519 over the JCS of the other members; absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Why a received message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not an envelope.
    #[error("not a valid envelope: {0}")]
    Malformed(String),
    /// No signature where one is required.
    #[error("message is unsigned")]
    Unsigned,
    /// A signature that does not verify under the expected key.
    #[error("message signature does not verify")]
    BadSignature,
}

impl Envelope {
    /// An unsigned envelope stamped now.
    pub fn new(kind: &str, org_id: &str, runtime_id: &str, sequence: u64, payload: Value) -> Self {
        Self {
            message_id: uuid::Uuid::now_v7().to_string(),
            kind: kind.to_owned(),
            timestamp: jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string(),
            org_id: org_id.to_owned(),
            runtime_id: runtime_id.to_owned(),
            sequence,
            payload,
            signature: None,
        }
    }

    /// The bytes the signature covers: JCS of every member but `signature`.
    ///
    /// Written from the members as they are, in canonical order (the keys are ASCII, so UTF-16
    /// order is byte order), like [`BatchFrame::sign`]: going through `serde_json::to_value`
    /// first copied the whole payload, every entry of a batch, for each message verified.
    pub fn signing_input(&self) -> Vec<u8> {
        // A batch's canonical form is about its message's size: one allocation, no regrowth.
        let mut out = Vec::with_capacity(MAX_MESSAGE_BYTES);
        out.extend_from_slice(b"{\"message_id\":");
        write_string(&self.message_id, &mut out);
        out.extend_from_slice(b",\"org_id\":");
        write_string(&self.org_id, &mut out);
        out.extend_from_slice(b",\"payload\":");
        write_canonical(&self.payload, &mut out);
        out.extend_from_slice(b",\"runtime_id\":");
        write_string(&self.runtime_id, &mut out);
        out.extend_from_slice(b",\"sequence\":");
        write_canonical(&Value::from(self.sequence), &mut out);
        out.extend_from_slice(b",\"timestamp\":");
        write_string(&self.timestamp, &mut out);
        out.extend_from_slice(b",\"type\":");
        write_string(&self.kind, &mut out);
        out.push(b'}');
        out
    }

    /// Signs the envelope with `key`.
    pub fn signed(mut self, key: &SigningKey) -> Self {
        self.signature = None;
        let signature = key.sign(&self.signing_input());
        self.signature = Some(encode_signature(&signature));
        self
    }

    /// Checks the signature strictly against `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), EnvelopeError> {
        let text = self.signature.as_deref().ok_or(EnvelopeError::Unsigned)?;
        let signature = decode_signature(text).ok_or(EnvelopeError::BadSignature)?;
        key.verify_strict(&self.signing_input(), &signature)
            .map_err(|_| EnvelopeError::BadSignature)
    }

    /// Parses one received text frame.
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(EnvelopeError::TooLarge(text.len()));
        }
        serde_json::from_str(text).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// The frame to send (JSON text).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The payload as `T`.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        T::deserialize(&self.payload)
            .map_err(|e| EnvelopeError::Malformed(format!("{} payload: {e}", self.kind)))
    }
}

/// A signed `audit_batch` frame built from stored lines as they are.
///
/// Stored entries are canonical JSON but for `entry_hash`, which the stored layout puts last;
/// [`canonical_of_stored`] moves it back from the bytes alone. So the envelope's canonical form
/// is written around the entries without parsing them: the same bytes
/// [`Envelope::signing_input`] gives, at the cost of a copy instead of a parse and a re-encoding
/// per entry (a line in another layout is parsed and re-encoded). `lines` are stored entry
/// lines, without their newline.
#[derive(Debug, Clone, Copy)]
pub struct BatchFrame<'a> {
    /// The organisation.
    pub org_id: &'a str,
    /// The runtime.
    pub runtime_id: &'a str,
    /// The envelope's sequence.
    pub sequence: u64,
    /// `trace` or `audit`.
    pub stream: &'a str,
    /// The first entry's seq.
    pub from_seq: u64,
    /// The last entry's seq.
    pub to_seq: u64,
}

impl BatchFrame<'_> {
    /// The signed frame, and its message id.
    pub fn sign(&self, lines: &[&str], key: &SigningKey) -> (String, String) {
        let message_id = uuid::Uuid::now_v7().to_string();
        let timestamp = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let size = lines.iter().map(|l| l.len() + 1).sum::<usize>() + 512;
        // Members in canonical (UTF-16 code unit) order; all keys here are ASCII.
        let mut text = Vec::with_capacity(size);
        text.extend_from_slice(b"{\"message_id\":");
        write_string(&message_id, &mut text);
        text.extend_from_slice(b",\"org_id\":");
        write_string(self.org_id, &mut text);
        text.extend_from_slice(b",\"payload\":{\"entries\":[");
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            match canonical_of_stored(line.as_bytes()) {
                Some(canonical) => text.extend_from_slice(&canonical),
                None => {
                    let value: Value = serde_json::from_str(line)
                        .unwrap_or_else(|_| Value::String((*line).to_owned()));
                    text.extend_from_slice(&to_canonical_vec(&value));
                }
            }
        }
        text.extend_from_slice(format!("],\"from_seq\":{},\"stream\":", self.from_seq).as_bytes());
        write_string(self.stream, &mut text);
        text.extend_from_slice(format!(",\"to_seq\":{}}},\"runtime_id\":", self.to_seq).as_bytes());
        write_string(self.runtime_id, &mut text);
        text.extend_from_slice(
            format!(",\"sequence\":{},\"timestamp\":", self.sequence).as_bytes(),
        );
        write_string(&timestamp, &mut text);
        text.extend_from_slice(b",\"type\":\"audit_batch\"}");
        let signature = encode_signature(&key.sign(&text));
        text.pop();
        text.extend_from_slice(b",\"signature\":");
        write_string(&signature, &mut text);
        text.push(b'}');
        // Every piece is UTF-8: the lines are stored text, the rest is ours.
        (String::from_utf8_lossy(&text).into_owned(), message_id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signed_envelope_verifies_and_any_change_breaks_it() {
        let envelope = Envelope::new("heartbeat", "org", "ed25519:x", 3, json!({"backlog": 0}))
            .signed(&key(1));
        envelope.verify(&key(1).verifying_key()).unwrap();
        let parsed = Envelope::parse(&envelope.to_text()).unwrap();
        parsed.verify(&key(1).verifying_key()).unwrap();
        assert_eq!(
            envelope.verify(&key(2).verifying_key()),
            Err(EnvelopeError::BadSignature)
        );
        let mut changed = envelope.clone();
        changed.sequence = 4;
        assert_eq!(
            changed.verify(&key(1).verifying_key()),
            Err(EnvelopeError::BadSignature)
        );
        let mut unsigned = envelope;
        unsigned.signature = None;
        assert_eq!(
            unsigned.verify(&key(1).verifying_key()),
            Err(EnvelopeError::Unsigned)
        );
    }

    #[test]
    fn the_signing_input_is_the_jcs_of_the_members_but_the_signature() {
        let payload = json!({
            "stream": "trace", "from_seq": 0, "to_seq": 1,
            "entries": [
                {"seq": 0, "z": "é\u{1F600}\n", "a": [1, 2.5, -3, null, true], "entry_hash": "x"},
                {"seq": 1, "nested": {"b": 1, "a": {"\u{e9}": 0, "e": 1}}, "big": 18446744073709551615u64},
            ],
        });
        let envelope =
            Envelope::new("audit_batch", "org-1", "ed25519:abc", u64::MAX, payload).signed(&key(7));
        let mut value = serde_json::to_value(&envelope).unwrap();
        value.as_object_mut().unwrap().remove("signature");
        assert_eq!(envelope.signing_input(), to_canonical_vec(&value));
    }

    #[test]
    fn the_signature_covers_the_canonical_form_without_itself() {
        let envelope = Envelope::new("ack", "o", "r", 1, json!({"b": 1, "a": 2}));
        let text = String::from_utf8(envelope.signing_input()).unwrap();
        assert!(text.starts_with(r#"{"message_id":"#), "{text}");
        assert!(text.contains(r#""payload":{"a":2,"b":1}"#), "{text}");
        assert!(!text.contains("signature"));
    }

    #[test]
    fn a_batch_frame_is_a_signed_envelope_with_the_lines_as_entries() {
        let sealed = |seq: u64, extra: Value| {
            let mut body = json!({"seq": seq, "prev_hash": "0", "x": "\u{1}é"});
            body.as_object_mut().unwrap().insert("y".into(), extra);
            let mut line = crate::trace::seal(body.as_object().unwrap()).line;
            line.pop();
            String::from_utf8(line).unwrap()
        };
        let owned = [sealed(4, json!(null)), sealed(5, json!([1, {"z": null}]))];
        // Plus one line in another layout, which takes the parse-and-encode path.
        let spaced = "{ \"seq\": 6, \"entry_hash\": \"c\" }".to_owned();
        let lines = [owned[0].as_str(), owned[1].as_str(), spaced.as_str()];
        let frame = BatchFrame {
            org_id: "org \"q\"",
            runtime_id: "ed25519:abc",
            sequence: 9,
            stream: "trace",
            from_seq: 4,
            to_seq: 6,
        };
        let (text, id) = frame.sign(&lines, &key(3));
        let envelope = Envelope::parse(&text).unwrap();
        envelope.verify(&key(3).verifying_key()).unwrap();
        assert_eq!(envelope.message_id, id);
        assert_eq!(envelope.kind, "audit_batch");
        assert_eq!(envelope.sequence, 9);
        assert_eq!(envelope.org_id, "org \"q\"");
        let batch: crate::cloud::messages::AuditBatch = envelope.payload_as().unwrap();
        assert_eq!((batch.from_seq, batch.to_seq), (4, 6));
        assert_eq!(batch.entries[1]["y"][1]["z"], Value::Null);
        assert_eq!(batch.entries[0]["x"], "\u{1}é");
        assert_eq!(batch.entries[2]["entry_hash"], "c");
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert!(matches!(
            Envelope::parse(&big),
            Err(EnvelopeError::TooLarge(_))
        ));
        assert!(matches!(
            Envelope::parse(r#"{"type":"ack"}"#),
            Err(EnvelopeError::Malformed(_))
        ));
    }
}
