//! Signed, forward-secure checkpoints of the decision trace, and the keys that sign them.
//!
//! Keys live in `<data_dir>/keys/` (0700; files 0600):
//! - `identity.key`: the runtime identity, created on first start; `runtime_id` is its public
//!   key. It signs checkpoint 0, which opens epoch 0.
//! - `epoch.key`: the current epoch's key, prefixed with its epoch number.
//!
//! Every checkpoint opens a new epoch: it carries the new epoch's public key and is signed by
//! the previous epoch's key, which is then overwritten with zeros, synced, and replaced by the
//! new one. Whoever steals `epoch.key` can sign only from the current epoch on; every earlier
//! checkpoint was signed by a key that no longer exists. The new key is written (as
//! `epoch.key.next`) before the checkpoint that announces it, so a crash at any point leaves
//! either the old or the new key matching the last checkpoint on disk.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use atlasbridge_protocol::trace::ChainHead;
use atlasbridge_protocol::trace::checkpoint::{
    Checkpoint, GENESIS_CHECKPOINT_HASH, UnsignedCheckpoint, decode_public_key, encode_public_key,
};
use ed25519_dalek::SigningKey;

use crate::trace::state::CheckpointMark;

/// The checkpoints file in the trace directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// Something went wrong with keys or the checkpoints file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File-system trouble.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A key file is not usable.
    #[error("{} is not a valid key file", .0.display())]
    BadKey(PathBuf),
    /// No randomness for a new key.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Why the checkpoint sequence had to start over (reported and audited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reanchor {
    /// What was found.
    pub reason: String,
    /// Where the previous checkpoints file was moved, if there was one.
    pub moved_to: Option<PathBuf>,
}

/// The signer of checkpoints.
pub struct Checkpointer {
    keys_dir: PathBuf,
    checkpoints: PathBuf,
    identity: SigningKey,
    /// The current epoch and its key; `None` before checkpoint 0.
    epoch: Option<(u64, SigningKey)>,
    last: Option<Checkpoint>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("checkpoints", &self.checkpoints)
            .field("epoch", &self.epoch.as_ref().map(|(e, _)| *e))
            .field("last", &self.last.as_ref().map(|c| c.checkpoint_seq))
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Loads (or creates) the keys and finds where the checkpoint sequence stands. `recorded` is
    /// the last checkpoint the state file knows of.
    pub fn open(
        data_dir: &Path,
        trace_dir: &Path,
        recorded: Option<&CheckpointMark>,
    ) -> Result<(Self, Option<Reanchor>), CheckpointError> {
        let keys_dir = data_dir.join("keys");
        create_private_dir(&keys_dir).map_err(io_error("cannot create", &keys_dir))?;
        let identity = load_or_create_identity(&keys_dir.join("identity.key"))?;
        let checkpoints = trace_dir.join(CHECKPOINTS_FILE);
        let mut signer = Self {
            keys_dir,
            checkpoints,
            identity,
            epoch: None,
            last: None,
        };

        let last = read_last_checkpoint(&signer.checkpoints)?;
        let reanchor_reason = match (&last, recorded) {
            (None, None) => None,
            (None, Some(mark)) => Some(format!(
                "the checkpoints file is missing or empty, but checkpoint {} was written before",
                mark.checkpoint_seq
            )),
            (Some(last), Some(mark)) if last.checkpoint_seq < mark.checkpoint_seq => Some(format!(
                "the checkpoints file ends at checkpoint {}, but checkpoint {} was written before",
                last.checkpoint_seq, mark.checkpoint_seq
            )),
            (Some(last), _) => match signer.adopt_epoch_key(last)? {
                true => None,
                false => Some(format!(
                    "no epoch key matches checkpoint {} (epoch {}); the key was lost or replaced",
                    last.checkpoint_seq, last.epoch
                )),
            },
        };
        if let Some(reason) = reanchor_reason {
            let moved_to = signer.set_aside_checkpoints()?;
            signer.epoch = None;
            signer.last = None;
            return Ok((signer, Some(Reanchor { reason, moved_to })));
        }
        signer.last = last;
        Ok((signer, None))
    }

    /// The runtime identity key, for signing what the uplink sends (it never leaves the
    /// machine).
    pub fn identity(&self) -> &SigningKey {
        &self.identity
    }

    /// `ed25519:<base64url>` of the identity public key.
    pub fn runtime_id(&self) -> String {
        encode_public_key(&self.identity.verifying_key())
    }

    /// The last checkpoint written.
    pub fn last(&self) -> Option<&Checkpoint> {
        self.last.as_ref()
    }

    /// The checkpoints file.
    pub fn path(&self) -> &Path {
        &self.checkpoints
    }

    /// Writes the next checkpoint of the chain whose durable head is `head`, opening a new epoch
    /// and erasing the previous epoch's key.
    pub fn write(
        &mut self,
        head: Option<&ChainHead>,
        timestamp: String,
    ) -> Result<Checkpoint, CheckpointError> {
        let (checkpoint_seq, prev_checkpoint_hash) = match &self.last {
            Some(last) => (last.checkpoint_seq + 1, last.checkpoint_hash()),
            None => (0, GENESIS_CHECKPOINT_HASH.to_owned()),
        };
        let next_epoch = self.epoch.as_ref().map_or(0, |(epoch, _)| epoch + 1);
        let next_key = generate_key()?;
        let next_path = self.keys_dir.join("epoch.key.next");
        write_key_file(&next_path, Some(next_epoch), &next_key)?;

        let unsigned = UnsignedCheckpoint {
            checkpoint_seq,
            prev_checkpoint_hash,
            epoch: next_epoch,
            epoch_public_key: Some(encode_public_key(&next_key.verifying_key())),
            seq: head.map(|h| h.seq),
            entry_hash: head.map_or_else(
                || atlasbridge_protocol::trace::GENESIS_PREV_HASH.to_owned(),
                |h| h.entry_hash.clone(),
            ),
            entries: head.map_or(0, |h| h.seq + 1),
            timestamp,
            runtime_id: self.runtime_id(),
        };
        let checkpoint = match &self.epoch {
            Some((_, key)) => unsigned.sign(key),
            None => unsigned.sign(&self.identity),
        };
        append_line(&self.checkpoints, &checkpoint.to_line())?;

        // The checkpoint is durable: the previous epoch's key must not outlive it.
        let current_path = self.keys_dir.join("epoch.key");
        erase_file(&current_path)?;
        std::fs::rename(&next_path, &current_path)
            .map_err(io_error("cannot install", &current_path))?;
        sync_dir(&self.keys_dir)?;
        self.epoch = Some((next_epoch, next_key));
        self.last = Some(checkpoint.clone());
        Ok(checkpoint)
    }

    /// The mark the state file keeps of the last checkpoint.
    pub fn mark(&self) -> Option<CheckpointMark> {
        self.last.as_ref().map(|c| CheckpointMark {
            checkpoint_seq: c.checkpoint_seq,
            checkpoint_hash: c.checkpoint_hash(),
            seq: c.seq,
        })
    }

    /// Finds the key of the last checkpoint's epoch in `epoch.key` or, after a crash between
    /// writing a checkpoint and installing its key, in `epoch.key.next`.
    fn adopt_epoch_key(&mut self, last: &Checkpoint) -> Result<bool, CheckpointError> {
        let Some(expected) = last.epoch_public_key.as_deref().and_then(decode_public_key) else {
            return Ok(false);
        };
        let current = self.keys_dir.join("epoch.key");
        let next = self.keys_dir.join("epoch.key.next");
        for candidate in [&current, &next] {
            if let Some((Some(epoch), key)) = read_key_file(candidate)?
                && epoch == last.epoch
                && key.verifying_key() == expected
            {
                if candidate == &next {
                    erase_file(&current)?;
                    std::fs::rename(&next, &current)
                        .map_err(io_error("cannot install", &current))?;
                    sync_dir(&self.keys_dir)?;
                }
                self.epoch = Some((epoch, key));
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn set_aside_checkpoints(&self) -> Result<Option<PathBuf>, CheckpointError> {
        if !self.checkpoints.exists() {
            return Ok(None);
        }
        let stamp = jiff::Timestamp::now().as_second();
        let mut name = self.checkpoints.as_os_str().to_owned();
        name.push(format!(".orphaned-{stamp}"));
        let target = PathBuf::from(name);
        std::fs::rename(&self.checkpoints, &target)
            .map_err(io_error("cannot move", &self.checkpoints))?;
        Ok(Some(target))
    }
}

fn generate_key() -> Result<SigningKey, CheckpointError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| CheckpointError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

fn load_or_create_identity(path: &Path) -> Result<SigningKey, CheckpointError> {
    if let Some((_, key)) = read_key_file(path)? {
        return Ok(key);
    }
    let key = generate_key()?;
    write_key_file(path, None, &key)?;
    Ok(key)
}

/// Key files: an optional 8-byte big-endian epoch, then the 32-byte secret.
fn read_key_file(path: &Path) -> Result<Option<(Option<u64>, SigningKey)>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot read", path)(e)),
    };
    let (epoch, secret) = match bytes.len() {
        32 => (None, &bytes[..]),
        40 => {
            let mut epoch = [0u8; 8];
            epoch.copy_from_slice(&bytes[..8]);
            (Some(u64::from_be_bytes(epoch)), &bytes[8..])
        }
        _ => return Ok(None),
    };
    if secret.iter().all(|b| *b == 0) {
        // An erased key.
        return Ok(None);
    }
    let secret: [u8; 32] = secret
        .try_into()
        .map_err(|_| CheckpointError::BadKey(path.to_path_buf()))?;
    Ok(Some((epoch, SigningKey::from_bytes(&secret))))
}

fn write_key_file(
    path: &Path,
    epoch: Option<u64>,
    key: &SigningKey,
) -> Result<(), CheckpointError> {
    let mut bytes = Vec::with_capacity(40);
    if let Some(epoch) = epoch {
        bytes.extend_from_slice(&epoch.to_be_bytes());
    }
    bytes.extend_from_slice(key.as_bytes());
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(io_error("cannot create", path))?;
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    bytes.fill(0);
    written.map_err(io_error("cannot write", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Overwrites a key file with zeros in place and syncs it.
fn erase_file(path: &Path) -> Result<(), CheckpointError> {
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("cannot open", path)(e)),
    };
    let len = file
        .metadata()
        .map_err(io_error("cannot stat", path))?
        .len();
    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.write_all(&zeros)
        .and_then(|()| file.sync_all())
        .map_err(io_error("cannot erase", path))
}

fn append_line(path: &Path, line: &[u8]) -> Result<(), CheckpointError> {
    let existed = path.exists();
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io_error("cannot open", path))?;
    file.write_all(line)
        .and_then(|()| file.sync_data())
        .map_err(io_error("cannot write", path))?;
    if !existed {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// The last complete checkpoint line of the file (a torn last line is ignored).
fn read_last_checkpoint(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot open", path)(e)),
    };
    let len = file
        .metadata()
        .map_err(io_error("cannot stat", path))?
        .len();
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))
        .map_err(io_error("cannot seek", path))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)
        .map_err(io_error("cannot read", path))?;
    Ok(tail
        .split(|b| *b == b'\n')
        .rev()
        .filter(|line| !line.is_empty())
        .find_map(|line| serde_json::from_slice::<Checkpoint>(line).ok()))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("cannot sync", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64) -> ChainHead {
        ChainHead {
            seq,
            entry_hash: format!("{seq:064}"),
        }
    }

    #[test]
    fn each_checkpoint_opens_an_epoch_signed_by_the_previous_key() {
        let tmp = tempfile::tempdir().unwrap();
        let trace_dir = tmp.path().join("trace");
        std::fs::create_dir_all(&trace_dir).unwrap();
        let (mut signer, reanchor) = Checkpointer::open(tmp.path(), &trace_dir, None).unwrap();
        assert!(reanchor.is_none());
        let identity = signer.identity.verifying_key();
        let first = signer
            .write(None, "2026-11-24T00:00:00.000000Z".into())
            .unwrap();
        assert_eq!(
            (first.checkpoint_seq, first.epoch, first.seq, first.entries),
            (0, 0, None, 0)
        );
        assert!(first.signature_verifies(&identity));
        let epoch0 = decode_public_key(first.epoch_public_key.as_deref().unwrap()).unwrap();

        let second = signer
            .write(Some(&head(9)), "2026-11-24T00:01:00.000000Z".into())
            .unwrap();
        assert_eq!(
            (
                second.checkpoint_seq,
                second.epoch,
                second.seq,
                second.entries
            ),
            (1, 1, Some(9), 10)
        );
        assert_eq!(second.prev_checkpoint_hash, first.checkpoint_hash());
        assert!(second.signature_verifies(&epoch0));
        assert!(!second.signature_verifies(&identity));

        // Epoch 0's key is gone from disk: only epoch 1's remains.
        let (epoch, key) = read_key_file(&tmp.path().join("keys/epoch.key"))
            .unwrap()
            .unwrap();
        assert_eq!(epoch, Some(1));
        assert_ne!(key.verifying_key(), epoch0);
        assert!(!tmp.path().join("keys/epoch.key.next").exists());
    }

    /// A fresh checkpointer in `data_dir` that has written checkpoint 0 of an empty trace.
    fn after_checkpoint_zero(data_dir: &Path) -> (PathBuf, Checkpointer) {
        let trace_dir = data_dir.join("trace");
        std::fs::create_dir_all(&trace_dir).unwrap();
        let (mut signer, _) = Checkpointer::open(data_dir, &trace_dir, None).unwrap();
        signer
            .write(None, "2026-11-24T00:00:00.000000Z".into())
            .unwrap();
        (trace_dir, signer)
    }

    #[test]
    fn reopening_continues_the_sequence() {
        let tmp = tempfile::tempdir().unwrap();
        let (trace_dir, signer) = after_checkpoint_zero(tmp.path());
        let mark = signer.mark();
        drop(signer);
        let (mut signer, reanchor) =
            Checkpointer::open(tmp.path(), &trace_dir, mark.as_ref()).unwrap();
        assert!(reanchor.is_none());
        let next = signer
            .write(Some(&head(0)), "2026-11-24T00:01:00.000000Z".into())
            .unwrap();
        assert_eq!(next.checkpoint_seq, 1);
    }

    #[test]
    fn a_crash_before_installing_the_new_key_is_recovered() {
        let tmp = tempfile::tempdir().unwrap();
        let (trace_dir, mut signer) = after_checkpoint_zero(tmp.path());
        // Simulate: checkpoint 1 written with a new key, but the key never installed.
        let keys = tmp.path().join("keys");
        let installed = std::fs::read(keys.join("epoch.key")).unwrap();
        signer
            .write(Some(&head(3)), "2026-11-24T00:01:00.000000Z".into())
            .unwrap();
        std::fs::rename(keys.join("epoch.key"), keys.join("epoch.key.next")).unwrap();
        std::fs::write(keys.join("epoch.key"), &installed).unwrap();
        let (signer, reanchor) =
            Checkpointer::open(tmp.path(), &trace_dir, signer.mark().as_ref()).unwrap();
        assert!(reanchor.is_none(), "{reanchor:?}");
        assert_eq!(signer.epoch.as_ref().map(|(e, _)| *e), Some(1));
    }

    #[test]
    fn a_missing_checkpoints_file_restarts_the_sequence_and_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let (trace_dir, signer) = after_checkpoint_zero(tmp.path());
        let mark = signer.mark();
        std::fs::remove_file(trace_dir.join(CHECKPOINTS_FILE)).unwrap();
        let (signer, reanchor) = Checkpointer::open(tmp.path(), &trace_dir, mark.as_ref()).unwrap();
        let reanchor = reanchor.unwrap();
        assert!(reanchor.reason.contains("missing"), "{}", reanchor.reason);
        assert!(signer.last().is_none());
    }
}
