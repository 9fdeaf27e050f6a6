//! Pure checks on what runtimes send: each entry's hash, the links between entries, and the
//! signature chain of checkpoints. The store applies them inside its transactions.

use atlasbridge_protocol::canonical::{compare_keys, write_canonical, write_string};
use atlasbridge_protocol::hash::{is_sha256_hex, sha256_hex};
use atlasbridge_protocol::trace::checkpoint::{
    Checkpoint, GENESIS_CHECKPOINT_HASH, decode_public_key,
};
use serde_json::{Map, Value};

/// What the server needs of one received entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFacts {
    /// Its position.
    pub seq: u64,
    /// Its id (`""` when it has none: the hash still covers it).
    pub entry_id: String,
    /// The hash it claims.
    pub entry_hash: String,
    /// The link it claims.
    pub prev_hash: String,
    /// Whether `entry_hash` is the hash of the rest of the entry.
    pub hash_ok: bool,
}

/// Why an entry cannot be taken at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed entry: {0}")]
pub struct MalformedEntry(pub String);

/// The member that carries an entry's hash.
const ENTRY_HASH: &str = "entry_hash";

/// Re-derives `entry_hash` (SHA-256 of the JCS of the entry without it, trace-format.md) and
/// reads the chain members.
pub fn examine(entry: &Value) -> Result<EntryFacts, MalformedEntry> {
    examine_for_storage(entry).map(|examined| examined.facts)
}

/// An entry checked and ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examined {
    /// Its chain members and whether its hash holds.
    pub facts: EntryFacts,
    /// The entry as JSON text, for the `body` column: the canonical bytes its hash was checked
    /// over, with `entry_hash` put back as the last member (the stored layout of
    /// trace-format.md), so that storing it costs no second encoding.
    pub text: Vec<u8>,
}

/// [`examine`], keeping the bytes it hashed as the text to store.
pub fn examine_for_storage(entry: &Value) -> Result<Examined, MalformedEntry> {
    let Value::Object(members) = entry else {
        return Err(MalformedEntry("not a JSON object".to_owned()));
    };
    let seq = members
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| MalformedEntry("no integer seq".to_owned()))?;
    // seq goes into a bigint column.
    if i64::try_from(seq).is_err() {
        return Err(MalformedEntry(format!("seq {seq} is out of range")));
    }
    let text = |name: &str| {
        members
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| MalformedEntry(format!("seq {seq}: no string {name}")))
    };
    let entry_hash = text(ENTRY_HASH)?.to_owned();
    let prev_hash = text("prev_hash")?.to_owned();
    let entry_id = members
        .get("entry_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut stored = Vec::with_capacity(1024);
    write_members_but(members, ENTRY_HASH, &mut stored);
    let hash_ok = is_sha256_hex(entry_hash.as_bytes()) && sha256_hex(&stored) == entry_hash;
    stored.pop();
    if stored.len() > 1 {
        stored.push(b',');
    }
    write_string(ENTRY_HASH, &mut stored);
    stored.push(b':');
    write_string(&entry_hash, &mut stored);
    stored.push(b'}');
    Ok(Examined {
        facts: EntryFacts {
            seq,
            entry_id,
            entry_hash,
            prev_hash,
            hash_ok,
        },
        text: stored,
    })
}

/// The canonical form (JCS) of the object `members` without its member `left_out`, written
/// from the borrowed members: no copy of the entry is made to hash it.
fn write_members_but(members: &Map<String, Value>, left_out: &str, out: &mut Vec<u8>) {
    let mut sorted: Vec<(&String, &Value)> = members
        .iter()
        .filter(|(key, _)| key.as_str() != left_out)
        .collect();
    sorted.sort_by(|a, b| compare_keys(a.0, b.0));
    out.push(b'{');
    for (i, (key, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}

/// Why the contiguous chain stops being sound at an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    /// The entry's hash is not the hash of its content (it was changed after sealing).
    HashMismatch,
    /// Its `prev_hash` is not the previous entry's hash.
    PrevMismatch,
}

impl LinkProblem {
    /// The name stored in `chains.broken_kind` (the verification report's `kind`).
    pub fn name(self) -> &'static str {
        match self {
            Self::HashMismatch => "hash_mismatch",
            Self::PrevMismatch => "prev_mismatch",
        }
    }
}

/// Judges the entry that extends a chain whose head hash is `head_hash`.
pub fn judge_link(head_hash: &str, entry: &EntryFacts) -> Option<LinkProblem> {
    if !entry.hash_ok {
        Some(LinkProblem::HashMismatch)
    } else if entry.prev_hash != head_hash {
        Some(LinkProblem::PrevMismatch)
    } else {
        None
    }
}

/// The checkpoint before the one being judged, as the server stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousCheckpoint {
    /// Its `checkpoint_hash`.
    pub checkpoint_hash: String,
    /// Its epoch.
    pub epoch: u64,
    /// The key of its epoch.
    pub epoch_key: String,
    /// The seq it covers.
    pub seq: Option<u64>,
}

/// The server's verdict on a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointVerdict {
    /// Its signature chains back to the runtime's identity key; carries its epoch's key.
    Verified {
        /// What the next checkpoint must be signed with.
        epoch_key: String,
    },
    /// Its predecessor is not held, so the key it is signed with is unknown.
    Unverifiable,
    /// It does not verify, or does not follow its predecessor.
    Bad(String),
}

/// Verifies `checkpoint` from `runtime_id` given its stored predecessor (`None` for checkpoint 0,
/// or when the predecessor was never received), with the rules of trace-format.md: checkpoint 0
/// is signed by the identity key and opens epoch 0; a checkpoint opening epoch e+1 carries its
/// key and is signed by epoch e's; the links and covered seqs never go backwards.
pub fn judge_checkpoint(
    checkpoint: &Checkpoint,
    runtime_id: &str,
    previous: Option<&PreviousCheckpoint>,
) -> CheckpointVerdict {
    let n = checkpoint.checkpoint_seq;
    if checkpoint.runtime_id != runtime_id {
        return CheckpointVerdict::Bad(format!(
            "checkpoint {n} names runtime {}, not the sender",
            checkpoint.runtime_id
        ));
    }
    let new_key = match &checkpoint.epoch_public_key {
        Some(text) => match decode_public_key(text) {
            Some(key) => Some((key, text.clone())),
            None => {
                return CheckpointVerdict::Bad(format!(
                    "checkpoint {n}'s epoch_public_key is not an Ed25519 key"
                ));
            }
        },
        None => None,
    };
    let (signer, epoch_key) = if n == 0 {
        if checkpoint.prev_checkpoint_hash != GENESIS_CHECKPOINT_HASH || checkpoint.epoch != 0 {
            return CheckpointVerdict::Bad(
                "checkpoint 0 must open epoch 0 after the genesis hash".to_owned(),
            );
        }
        let Some(identity) = decode_public_key(runtime_id) else {
            return CheckpointVerdict::Bad(format!("runtime_id {runtime_id} is not a key"));
        };
        let Some((_, text)) = new_key else {
            return CheckpointVerdict::Bad("checkpoint 0 does not carry epoch 0's key".to_owned());
        };
        (identity, text)
    } else {
        let Some(previous) = previous else {
            return CheckpointVerdict::Unverifiable;
        };
        if checkpoint.prev_checkpoint_hash != previous.checkpoint_hash {
            return CheckpointVerdict::Bad(format!(
                "checkpoint {n}'s prev_checkpoint_hash is not the hash of checkpoint {}",
                n - 1
            ));
        }
        if checkpoint.seq < previous.seq {
            return CheckpointVerdict::Bad(format!(
                "checkpoint {n} covers seq {:?}, before its predecessor's {:?}",
                checkpoint.seq, previous.seq
            ));
        }
        let Some(previous_key) = decode_public_key(&previous.epoch_key) else {
            return CheckpointVerdict::Bad(format!("checkpoint {}'s epoch key is unusable", n - 1));
        };
        match new_key {
            Some((_, text)) if Some(checkpoint.epoch) == previous.epoch.checked_add(1) => {
                (previous_key, text)
            }
            None if checkpoint.epoch == previous.epoch => {
                (previous_key, previous.epoch_key.clone())
            }
            _ => {
                return CheckpointVerdict::Bad(format!(
                    "checkpoint {n} is in epoch {} after epoch {}, which does not follow",
                    checkpoint.epoch, previous.epoch
                ));
            }
        }
    };
    if checkpoint.signature_verifies(&signer) {
        CheckpointVerdict::Verified { epoch_key }
    } else {
        CheckpointVerdict::Bad(format!("checkpoint {n}'s signature does not verify"))
    }
}

#[cfg(test)]
mod tests {
    use atlasbridge_protocol::trace::checkpoint::{UnsignedCheckpoint, encode_public_key};
    use atlasbridge_protocol::trace::{GENESIS_PREV_HASH, seal};
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    use super::*;

    fn sealed(seq: u64, prev: &str) -> Value {
        let body =
            json!({"seq": seq, "prev_hash": prev, "entry_id": format!("e{seq}"), "x": "é\u{1}"});
        let line = seal(body.as_object().unwrap()).line;
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn a_sealed_entry_verifies_and_any_change_is_a_hash_mismatch() {
        let entry = sealed(0, GENESIS_PREV_HASH);
        let facts = examine(&entry).unwrap();
        assert!(facts.hash_ok);
        assert_eq!(judge_link(GENESIS_PREV_HASH, &facts), None);
        let next = examine(&sealed(1, &facts.entry_hash)).unwrap();
        assert_eq!(judge_link(&facts.entry_hash, &next), None);
        assert_eq!(
            judge_link(GENESIS_PREV_HASH, &next),
            Some(LinkProblem::PrevMismatch)
        );
        let mut tampered = entry;
        tampered["x"] = json!("changed");
        let facts = examine(&tampered).unwrap();
        assert!(!facts.hash_ok);
        assert_eq!(
            judge_link(GENESIS_PREV_HASH, &facts),
            Some(LinkProblem::HashMismatch)
        );
    }

    #[test]
    fn the_text_to_store_is_the_stored_layout_and_the_same_entry() {
        let entry = sealed(3, GENESIS_PREV_HASH);
        let line = seal(
            json!({"seq": 3, "prev_hash": GENESIS_PREV_HASH, "entry_id": "e3", "x": "é\u{1}"})
                .as_object()
                .unwrap(),
        )
        .line;
        let examined = examine_for_storage(&entry).unwrap();
        assert!(examined.facts.hash_ok);
        // Exactly the runtime's stored line (without its newline).
        assert_eq!(examined.text, line[..line.len() - 1]);
        // A tampered entry, a hash that is not even hex, and an entry of nothing but its hash
        // are stored as themselves too.
        let mut tampered = entry;
        tampered["x"] = json!("changed");
        tampered["entry_hash"] = json!("\"quoted\"");
        let only_hash = json!({"entry_hash": "ab", "seq": 0, "prev_hash": "p"});
        for entry in [tampered, only_hash] {
            let examined = examine_for_storage(&entry).unwrap();
            assert!(!examined.facts.hash_ok);
            let stored: Value = serde_json::from_slice(&examined.text).unwrap();
            assert_eq!(stored, entry);
        }
    }

    #[test]
    fn entries_without_the_chain_members_are_malformed() {
        assert!(examine(&json!([1])).is_err());
        assert!(examine(&json!({"seq": "1", "entry_hash": "a", "prev_hash": "b"})).is_err());
        assert!(examine(&json!({"seq": 1, "prev_hash": "b"})).is_err());
        assert!(examine(&json!({"seq": u64::MAX, "entry_hash": "a", "prev_hash": "b"})).is_err());
    }

    fn checkpoint(
        n: u64,
        epoch: u64,
        prev: &str,
        new_key: Option<&SigningKey>,
        signer: &SigningKey,
        identity: &SigningKey,
    ) -> Checkpoint {
        UnsignedCheckpoint {
            checkpoint_seq: n,
            prev_checkpoint_hash: prev.to_owned(),
            epoch,
            epoch_public_key: new_key.map(|k| encode_public_key(&k.verifying_key())),
            seq: Some(n * 10),
            entry_hash: "ab".repeat(32),
            entries: n * 10 + 1,
            timestamp: "2026-11-27T00:00:00.000000Z".to_owned(),
            runtime_id: encode_public_key(&identity.verifying_key()),
        }
        .sign(signer)
    }

    #[test]
    fn checkpoints_chain_from_the_identity_key_through_epoch_keys() {
        let identity = SigningKey::from_bytes(&[1; 32]);
        let epoch0 = SigningKey::from_bytes(&[2; 32]);
        let epoch1 = SigningKey::from_bytes(&[3; 32]);
        let runtime = encode_public_key(&identity.verifying_key());
        let first = checkpoint(
            0,
            0,
            GENESIS_CHECKPOINT_HASH,
            Some(&epoch0),
            &identity,
            &identity,
        );
        let CheckpointVerdict::Verified { epoch_key } = judge_checkpoint(&first, &runtime, None)
        else {
            panic!("checkpoint 0 must verify");
        };
        let previous = PreviousCheckpoint {
            checkpoint_hash: first.checkpoint_hash(),
            epoch: 0,
            epoch_key,
            seq: first.seq,
        };
        let second = checkpoint(
            1,
            1,
            &first.checkpoint_hash(),
            Some(&epoch1),
            &epoch0,
            &identity,
        );
        assert!(matches!(
            judge_checkpoint(&second, &runtime, Some(&previous)),
            CheckpointVerdict::Verified { .. }
        ));
        // Signed by the new key instead of the previous epoch's: refused.
        let forged = checkpoint(
            1,
            1,
            &first.checkpoint_hash(),
            Some(&epoch1),
            &epoch1,
            &identity,
        );
        assert!(matches!(
            judge_checkpoint(&forged, &runtime, Some(&previous)),
            CheckpointVerdict::Bad(_)
        ));
        // Not linked to its predecessor.
        let unlinked = checkpoint(
            1,
            1,
            GENESIS_CHECKPOINT_HASH,
            Some(&epoch1),
            &epoch0,
            &identity,
        );
        assert!(matches!(
            judge_checkpoint(&unlinked, &runtime, Some(&previous)),
            CheckpointVerdict::Bad(_)
        ));
        assert_eq!(
            judge_checkpoint(&second, &runtime, None),
            CheckpointVerdict::Unverifiable
        );
        assert!(matches!(
            judge_checkpoint(&second, "ed25519:other", Some(&previous)),
            CheckpointVerdict::Bad(_)
        ));
    }
}
