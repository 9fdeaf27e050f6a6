//! The trace v2 contract vectors (`tests/vectors/trace-v2/`, copied from the shared vectors):
//! every file verifies to the verdict `expected.json` gives, by the fast path and by the slow
//! path, sequentially and on several threads with tiny blocks; the canonical forms and hashes
//! of single entries match byte for byte.

// A test fails by panicking; in its helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use atlasbridge_protocol::canonical::to_canonical_vec;
use atlasbridge_protocol::hash::sha256_hex;
use atlasbridge_protocol::trace::{ChainKind, IntegrityReport, VerifyOptions, verify_path};
use serde_json::Value;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/trace-v2")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(vectors().join("expected.json")).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(map) => map,
        other => panic!("expected.json is not an object: {other}"),
    }
}

/// The ways of verifying that must all agree.
fn ways() -> Vec<(&'static str, VerifyOptions)> {
    let base = VerifyOptions {
        kind: ChainKind::Trace,
        threads: 1,
        ..VerifyOptions::default()
    };
    vec![
        ("fast, sequential", base.clone()),
        (
            "slow, sequential",
            VerifyOptions {
                recanonicalise: true,
                ..base.clone()
            },
        ),
        (
            "fast, 3 threads, 200-byte blocks",
            VerifyOptions {
                threads: 3,
                chunk_bytes: 200,
                ..base.clone()
            },
        ),
        (
            "slow, 2 threads, 1 KiB blocks",
            VerifyOptions {
                threads: 2,
                chunk_bytes: 1024,
                recanonicalise: true,
                ..base
            },
        ),
    ]
}

fn check(name: &str, want: &Value, report: &IntegrityReport, way: &str) {
    let context = format!("{name} ({way}): {report:?}");
    assert_eq!(Value::Bool(report.valid), want["valid"], "valid: {context}");
    assert_eq!(
        report.entries_checked,
        want["entries_checked"].as_u64().unwrap(),
        "entries_checked: {context}"
    );
    assert_eq!(
        report.first_broken_at,
        want["first_broken_at"].as_u64(),
        "first_broken_at: {context}"
    );
    let kind = report.error.as_ref().map(|e| e.kind.name());
    assert_eq!(kind, want["kind"].as_str(), "kind: {context}");
    let head = report.head.as_ref().map(|h| h.entry_hash.as_str());
    assert_eq!(head, want["head_hash"].as_str(), "head_hash: {context}");
}

#[test]
fn every_vector_verifies_to_its_expected_verdict_by_every_path() {
    let expected = expected();
    assert!(expected.len() >= 13, "the vectors are all there");
    for (name, want) in &expected {
        let path = vectors().join(name);
        for (way, options) in ways() {
            let report = verify_path(&path, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
            check(name, want, &report, way);
        }
    }
}

#[test]
fn a_break_names_the_file_and_line() {
    let report = verify_path(
        &vectors().join("edited-field.jsonl"),
        &VerifyOptions::default(),
    )
    .unwrap();
    let error = report.error.unwrap();
    assert!(error.file.ends_with("edited-field.jsonl"), "{}", error.file);
    assert_eq!(error.line, 5, "seq 4 is on line 5");
    assert!(!error.detail.is_empty());
}

#[test]
fn a_segmented_directory_reads_every_segment_in_order() {
    let report = verify_path(&vectors().join("segmented"), &VerifyOptions::default()).unwrap();
    assert_eq!(report.segments, 2);
    assert!(report.valid);
}

#[test]
fn canonical_forms_and_hashes_match_the_vectors() {
    let valid = std::fs::read_to_string(vectors().join("valid.jsonl")).unwrap();
    let lines: Vec<&str> = valid.lines().collect();
    let hashes = std::fs::read_to_string(vectors().join("hashes.txt")).unwrap();
    let mut checked = 0;
    for row in hashes.lines() {
        let (seq, hash) = row.split_once(' ').unwrap();
        let seq: usize = seq.parse().unwrap();
        let mut entry: serde_json::Map<String, Value> = serde_json::from_str(lines[seq]).unwrap();
        assert_eq!(
            entry
                .remove("entry_hash")
                .and_then(|h| h.as_str().map(str::to_owned))
                .as_deref(),
            Some(hash)
        );
        let canonical = to_canonical_vec(&Value::Object(entry));
        assert_eq!(sha256_hex(&canonical), hash, "seq {seq}");
        let vector = vectors().join(format!("canonical-{seq}.json"));
        if let Ok(bytes) = std::fs::read(&vector) {
            let bytes = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            assert_eq!(
                String::from_utf8_lossy(&canonical),
                String::from_utf8_lossy(bytes),
                "canonical-{seq}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "canonical-0 and canonical-7 were compared");
}

#[test]
fn every_vector_line_gets_the_same_verdict_by_both_paths() {
    use atlasbridge_protocol::trace::{check_line, check_line_recanonicalised};
    let mut lines = 0;
    for entry in std::fs::read_dir(vectors()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read(&path).unwrap().split(|&b| b == b'\n') {
            let fast = check_line(line, ChainKind::Trace);
            let slow = check_line_recanonicalised(line, ChainKind::Trace);
            match (&fast, &slow) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.kind, b.kind, "{}", path.display()),
                _ => panic!("{}: {fast:?} vs {slow:?}", path.display()),
            }
            lines += 1;
        }
    }
    assert!(lines > 100);
}
