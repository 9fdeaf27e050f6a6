//! `extends` (v1): loading a chain of files and merging each base under its child.
//!
//! Cycles are found on canonical paths, so `./a.yaml`, `a.yaml` and a symlink to it are one
//! file. A base that fails to load is reported at the child's `extends` line, naming the chain
//! of files, and the base's own problems follow with their own places.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::error::PolicyError;
use super::model::{Defaults, Policy, PolicyVersion};
use super::validate;
use super::yaml::Pos;

/// Longest chain of files (the first one included); no real policy comes close, and it keeps a
/// generated chain from costing unbounded work.
pub const MAX_CHAIN: usize = 32;

/// A policy with its bases merged, and every file it came from (the child first).
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) policy: Policy,
    pub(crate) sources: Vec<PathBuf>,
}

/// One file of the chain being loaded.
#[derive(Debug, Clone)]
struct Link {
    canonical: PathBuf,
    shown: PathBuf,
}

/// Loads `text` (the content of `file`) and every base it extends.
pub(crate) fn resolve(text: &str, file: &Path) -> Result<Resolved, Vec<PolicyError>> {
    let first = Link {
        canonical: canonical(file),
        shown: file.to_path_buf(),
    };
    resolve_chain(text, file, &[first])
}

fn resolve_chain(text: &str, file: &Path, chain: &[Link]) -> Result<Resolved, Vec<PolicyError>> {
    let checked = validate::check(text, file);
    let mut errors = checked.errors;
    let mut base_errors = Vec::new();
    let mut base = None;

    if let Some(extends) = checked.extends {
        let here = |message: String| {
            PolicyError::new(
                file,
                extends.pos.line,
                extends.pos.column,
                "extends",
                message,
            )
        };
        let target = base_path(file, &extends.target);
        let link = Link {
            canonical: canonical(&target),
            shown: target.clone(),
        };
        let names = |extra: &Link| {
            chain
                .iter()
                .chain(std::iter::once(extra))
                .map(|l| l.shown.display().to_string())
                .collect::<Vec<_>>()
                .join(" → ")
        };
        if chain.iter().any(|l| l.canonical == link.canonical) {
            errors.push(here(format!("circular extends: {}", names(&link))));
        } else if chain.len() >= MAX_CHAIN {
            errors.push(here(format!(
                "extends chain is longer than {MAX_CHAIN} files: {}",
                names(&link)
            )));
        } else {
            match read_policy_text(&target) {
                Err(e) => errors.push(here(format!(
                    "cannot load base policy '{}' ({}): {}",
                    extends.target,
                    target.display(),
                    e.message
                ))),
                Ok(base_text) => {
                    let mut longer = chain.to_vec();
                    longer.push(link.clone());
                    match resolve_chain(&base_text, &target, &longer) {
                        Ok(resolved) if resolved.policy.policy_version != PolicyVersion::V1 => {
                            errors.push(here(format!(
                                "base policy '{}' is policy_version \"{}\"; extends needs a \
                                 version \"1\" base (chain: {})",
                                extends.target,
                                resolved.policy.policy_version,
                                names(&link)
                            )));
                        }
                        Ok(resolved) => base = Some(resolved),
                        Err(inner) => {
                            errors.push(here(format!(
                                "base policy '{}' does not load ({} problem{}; chain: {})",
                                extends.target,
                                inner.len(),
                                if inner.len() == 1 { "" } else { "s" },
                                names(&link)
                            )));
                            base_errors = inner;
                        }
                    }
                }
            }
        }
    }

    errors.sort_by_key(|e| (e.line, e.column));
    match checked.policy {
        Some(child) if errors.is_empty() && base_errors.is_empty() => {
            let mut sources = vec![file.to_path_buf()];
            let policy = match base {
                Some(base) => {
                    sources.extend(base.sources);
                    merge(child, base.policy)
                }
                None => child,
            };
            Ok(Resolved { policy, sources })
        }
        _ => {
            errors.extend(base_errors);
            Err(errors)
        }
    }
}

/// The child's rules, then the base's rules whose ids the child does not use; the child's
/// defaults unless they are the built-in ones. Name, mode and version are the child's.
pub(crate) fn merge(child: Policy, base: Policy) -> Policy {
    let child_ids: HashSet<&str> = child.rules.iter().map(|r| r.id.as_str()).collect();
    let inherited: Vec<_> = base
        .rules
        .into_iter()
        .filter(|r| !child_ids.contains(r.id.as_str()))
        .collect();
    let defaults = if child.defaults == Defaults::default() {
        base.defaults
    } else {
        child.defaults
    };
    let mut rules = child.rules;
    rules.extend(inherited);
    Policy {
        rules,
        defaults,
        ..child
    }
}

/// `target` with `~` expanded, relative to the directory of `file`.
fn base_path(file: &Path, target: &str) -> PathBuf {
    let expanded = expand_home(target);
    if expanded.is_absolute() {
        return expanded;
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(expanded),
        _ => expanded,
    }
}

/// `~` and `~/…` name the user's home directory; `~user` forms are left alone.
pub(crate) fn expand_home(path: &str) -> PathBuf {
    let rest = if path == "~" {
        Some("")
    } else {
        path.strip_prefix("~/")
            .or_else(|| path.strip_prefix("~\\").filter(|_| cfg!(windows)))
    };
    match (rest, directories::BaseDirs::new()) {
        (Some(rest), Some(dirs)) => dirs.home_dir().join(rest),
        _ => PathBuf::from(path),
    }
}

/// The canonical path when the file exists, else the absolute one (a `load_str` name need not
/// exist), so that the cycle check still compares like with like.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The largest policy file read: far above any real policy (1,000 rules take about 200 KB), and
/// small enough that a mistaken path cannot make the loader read without end.
pub(crate) const MAX_POLICY_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a policy file as UTF-8; a problem is reported at `0:0`, or at the line and column of
/// the first byte that is not UTF-8. Only regular files are read, and at most
/// [`MAX_POLICY_FILE_BYTES`] of them: `extends: /dev/zero` or a FIFO must be an error, not a
/// loader that never returns.
pub(crate) fn read_policy_text(path: &Path) -> Result<String, PolicyError> {
    use std::io::Read as _;
    let unreadable = |why: String| {
        PolicyError::new(
            path,
            0,
            0,
            "",
            format!("cannot read the policy file: {why}"),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !metadata.is_file() {
        return Err(unreadable("it is not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(unreadable(format!(
            "it is larger than {} MiB",
            MAX_POLICY_FILE_BYTES / (1024 * 1024)
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        // Placed like every other problem: columns in characters, lines as YAML breaks them.
        let valid = String::from_utf8_lossy(&e.as_bytes()[..e.utf8_error().valid_up_to()]);
        let at = Pos::end_of(&valid);
        PolicyError::new(
            path,
            at.line,
            at.column,
            "",
            "the policy file is not valid UTF-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_a_bounded_size_are_read() {
        let error = read_policy_text(Path::new("/dev/zero")).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let error = read_policy_text(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("cannot read the policy file"),
            "{error}"
        );
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; MAX_POLICY_FILE_BYTES as usize + 1]).unwrap();
        let error = read_policy_text(&big).unwrap_err();
        assert!(error.to_string().contains("larger than 4 MiB"), "{error}");
        let fine = dir.path().join("fine.yaml");
        std::fs::write(&fine, "policy_version: \"1\"\n").unwrap();
        assert_eq!(read_policy_text(&fine).unwrap(), "policy_version: \"1\"\n");
    }

    #[test]
    fn relative_bases_follow_the_including_file() {
        assert_eq!(
            base_path(Path::new("/etc/ab/policy.yaml"), "base.yaml"),
            PathBuf::from("/etc/ab/base.yaml")
        );
        assert_eq!(
            base_path(Path::new("policy.yaml"), "base.yaml"),
            PathBuf::from("base.yaml")
        );
        assert_eq!(
            base_path(Path::new("/etc/ab/policy.yaml"), "/srv/base.yaml"),
            PathBuf::from("/srv/base.yaml")
        );
        if let Some(dirs) = directories::BaseDirs::new() {
            assert_eq!(expand_home("~/x.yaml"), dirs.home_dir().join("x.yaml"));
            assert_eq!(
                base_path(Path::new("/etc/p.yaml"), "~/x.yaml"),
                dirs.home_dir().join("x.yaml")
            );
        }
        assert_eq!(expand_home("~bob/x"), PathBuf::from("~bob/x"));
    }

    #[test]
    fn non_utf8_is_placed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, b"policy_version: \"1\"\nname: ab\xffc\n").unwrap();
        let e = read_policy_text(&path).unwrap_err();
        assert_eq!((e.line, e.column), (2, 9));
        let missing = read_policy_text(&dir.path().join("nope.yaml")).unwrap_err();
        assert_eq!((missing.line, missing.column), (0, 0));
    }

    /// Found by fuzzing (`policy_yaml`, the bytes d7 8b 97): the column counted bytes, not
    /// characters, and a lone `\r` did not start a line as it does for the YAML parser.
    #[test]
    fn non_utf8_is_placed_in_characters_and_yaml_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, b"\xd7\x8b\x97").unwrap();
        let e = read_policy_text(&path).unwrap_err();
        assert_eq!((e.line, e.column), (1, 2));
        let mut text = "a: \"é\"\rname: é\r\nb: ".as_bytes().to_vec();
        text.push(0xff);
        std::fs::write(&path, text).unwrap();
        let e = read_policy_text(&path).unwrap_err();
        assert_eq!((e.line, e.column), (3, 4));
    }
}
