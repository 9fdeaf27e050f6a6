//! Load errors: each one points at a file, a line, a column and the path to the value, so a
//! person can fix every problem of a file in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

/// The path shown for a problem that belongs to the document as a whole.
pub const ROOT_PATH: &str = "(root)";

/// The separator between the segments of [`PolicyError::path`].
pub const PATH_SEPARATOR: &str = " → ";

/// One problem in one policy file.
///
/// Lines and columns count from 1; `0:0` means the problem has no place in the text (the file
/// could not be read at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    /// The file the problem is in (a base file when it came through `extends`).
    #[serde(serialize_with = "serialize_path")]
    pub file: PathBuf,
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
    /// Where in the document, e.g. `rules → 2 → match → prompt_type → 0`.
    pub path: String,
    /// What is wrong and, where it helps, what is expected.
    pub message: String,
}

impl PolicyError {
    /// A problem at `line:column` of `file`.
    pub fn new(
        file: &Path,
        line: u64,
        column: u64,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let path = path.into();
        Self {
            file: file.to_path_buf(),
            line,
            column,
            path: if path.is_empty() {
                ROOT_PATH.to_owned()
            } else {
                path
            },
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.path,
            self.message
        )
    }
}

// A path that is not UTF-8 still has to reach a JSON report, so it is written lossily rather
// than failing the whole report.
fn serialize_path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// A policy that did not load, with every problem found (never only the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// At least one problem, in file order: the file asked for first, then its bases.
    pub errors: Vec<PolicyError>,
}

impl LoadError {
    /// Wraps `errors`, which should not be empty.
    pub fn new(errors: Vec<PolicyError>) -> Self {
        Self { errors }
    }

    /// The first problem, which is usually the one to fix first.
    pub fn first(&self) -> Option<&PolicyError> {
        self.errors.first()
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Joins path segments with [`PATH_SEPARATOR`].
pub(crate) fn join_path(parent: &str, segment: &str) -> String {
    if parent.is_empty() {
        segment.to_owned()
    } else {
        format!("{parent}{PATH_SEPARATOR}{segment}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_json_shape() {
        let e = PolicyError::new(
            Path::new("policy.yaml"),
            14,
            9,
            "rules → 2 → match → prompt_type → 0",
            "expected one of yes_no, confirm_enter, multiple_choice, free_text, *",
        );
        assert_eq!(
            e.to_string(),
            "policy.yaml:14:9: rules → 2 → match → prompt_type → 0: expected one of yes_no, \
             confirm_enter, multiple_choice, free_text, *"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["file"], "policy.yaml");
        assert_eq!(json["line"], 14);
        assert_eq!(json["column"], 9);
        assert_eq!(
            json.as_object().map(|o| o.len()),
            Some(5),
            "exactly file, line, column, path, message"
        );
        let root = PolicyError::new(Path::new("p.yaml"), 1, 1, "", "empty");
        assert_eq!(root.to_string(), "p.yaml:1:1: (root): empty");
    }
}
