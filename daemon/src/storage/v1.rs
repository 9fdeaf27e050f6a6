//! The v1 decision trace: the unchained original format, written when `decision_trace_v2` is
//! off. One JSON object per line in `<data_dir>/autopilot_decisions.jsonl`, rotated at 10 MiB
//! to `.1`, `.2`, `.3` (the oldest rotated file is dropped, as the original did).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::appender::{Journal, StageError, StorageError};

pub use atlasbridge_protocol::migrate::V1_FILE_NAME;

/// Size at which the v1 file is rotated.
pub const V1_ROTATE_BYTES: u64 = 10 * 1024 * 1024;

/// Rotated files kept.
pub const V1_KEEP: u32 = 3;

/// The v1 journal.
#[derive(Debug)]
pub struct V1Journal {
    path: PathBuf,
    rotate_bytes: u64,
    file: Option<File>,
    len: u64,
    pending: Vec<u8>,
}

impl V1Journal {
    /// Opens (creating if needed) the v1 file in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        // The v1 file lives in the data directory itself, as in the original layout.
        Self::with_rotation(&data_dir.join(V1_FILE_NAME), V1_ROTATE_BYTES)
    }

    /// A journal that rotates at another size (tests). The file is created on the first write,
    /// so a daemon that never writes v1 leaves no v1 file behind.
    pub fn with_rotation(path: &Path, rotate_bytes: u64) -> Result<Self, StorageError> {
        let len = match std::fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io("cannot stat", path, &e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            rotate_bytes,
            file: None,
            len,
            pending: Vec::new(),
        })
    }

    fn open_file(&mut self) -> Result<(), StorageError> {
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&self.path)
            .map_err(|e| StorageError::io("cannot open", &self.path, &e))?;
        self.len = file
            .metadata()
            .map_err(|e| StorageError::io("cannot stat", &self.path, &e))?
            .len();
        self.file = Some(file);
        Ok(())
    }

    /// `autopilot_decisions.jsonl.N`.
    pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> Result<(), StorageError> {
        if let Some(file) = self.file.take() {
            file.sync_data()
                .map_err(|e| StorageError::io("cannot sync", &self.path, &e))?;
        }
        for n in (1..V1_KEEP).rev() {
            let from = Self::rotated_path(&self.path, n);
            if from.exists() {
                let to = Self::rotated_path(&self.path, n + 1);
                std::fs::rename(&from, &to)
                    .map_err(|e| StorageError::io("cannot rotate", &from, &e))?;
            }
        }
        let first = Self::rotated_path(&self.path, 1);
        std::fs::rename(&self.path, &first)
            .map_err(|e| StorageError::io("cannot rotate", &self.path, &e))?;
        self.open_file()?;
        if let Some(dir) = self.path.parent() {
            super::chain::sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Journal for V1Journal {
    type Record = Map<String, Value>;
    type Receipt = ();

    fn prepare(&mut self) -> Result<(), StorageError> {
        if self.len >= self.rotate_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn stage(&mut self, record: Map<String, Value>) -> Result<(), StageError> {
        serde_json::to_writer(&mut self.pending, &record)
            .map_err(|e| StageError::Invalid(e.to_string()))?;
        self.pending.push(b'\n');
        Ok(())
    }

    fn commit(&mut self, sync: bool) -> Result<(), StorageError> {
        if self.file.is_none() {
            self.open_file()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(StorageError(format!("{} is not open", self.path.display())));
        };
        file.write_all(&self.pending)
            .map_err(|e| StorageError::io("cannot write", &self.path, &e))?;
        if sync {
            file.sync_data()
                .map_err(|e| StorageError::io("cannot sync", &self.path, &e))?;
        }
        self.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), StorageError> {
        self.pending.clear();
        match &self.file {
            Some(file) => file
                .set_len(self.len)
                .map_err(|e| StorageError::io("cannot roll back", &self.path, &e)),
            None => Ok(()),
        }
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        match &self.file {
            Some(file) => file
                .sync_data()
                .map_err(|e| StorageError::io("cannot sync", &self.path, &e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> Map<String, Value> {
        serde_json::json!({"prompt_id": format!("p{i}"), "action_type": "require_human"})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn rotates_into_three_numbered_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(V1_FILE_NAME);
        let mut journal = V1Journal::with_rotation(&path, 100).unwrap();
        for i in 0..40 {
            journal.prepare().unwrap();
            journal.stage(record(i)).unwrap();
            journal.commit(true).unwrap();
        }
        for n in 1..=3 {
            assert!(V1Journal::rotated_path(&path, n).exists(), ".{n}");
        }
        assert!(!V1Journal::rotated_path(&path, 4).exists());
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with("\"p39\"}\n"), "{newest}");
        let older = std::fs::read_to_string(V1Journal::rotated_path(&path, 1)).unwrap();
        assert!(
            older
                .lines()
                .all(|l| serde_json::from_str::<Value>(l).is_ok())
        );
    }
}
