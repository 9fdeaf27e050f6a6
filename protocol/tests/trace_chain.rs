//! Verification of generated chains: every kind of tampering is caught at the right seq with
//! the same verdict whatever the path, thread count or block size; checkpoints catch what a
//! plain chain cannot (a rewrite with valid hashes, a deletion of the tail) and their
//! signature chain holds.

// A test fails by panicking; in its helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use atlasbridge_protocol::trace::checkpoint::{
    Checkpoint, GENESIS_CHECKPOINT_HASH, UnsignedCheckpoint, encode_public_key,
};
use atlasbridge_protocol::trace::{
    BreakKind, ChainHead, ChainKind, GENESIS_PREV_HASH, IntegrityReport, SealedEntry,
    VerifyOptions, seal, verify_files, verify_path,
};
use ed25519_dalek::SigningKey;
use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn body(seq: u64, prev: &str, note: &str) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "trace_version": 2,
        "seq": seq,
        "prev_hash": prev,
        "session_id": "s",
        "prompt_id": format!("p{seq}"),
        "note": note,
        "risk_level": "low",
        "confidence": 0.75,
    }) else {
        unreachable!()
    };
    map
}

/// A chain of `n` entries continuing from `start`.
fn chain_from(start: Option<&ChainHead>, n: u64, note: &str) -> Vec<SealedEntry> {
    let mut prev = start.map_or(GENESIS_PREV_HASH.to_owned(), |h| h.entry_hash.clone());
    let first = start.map_or(0, |h| h.seq + 1);
    (first..first + n)
        .map(|seq| {
            let sealed = seal(&body(seq, &prev, note));
            prev.clone_from(&sealed.entry_hash);
            sealed
        })
        .collect()
}

fn chain(n: u64) -> Vec<SealedEntry> {
    chain_from(None, n, "")
}

fn bytes(entries: &[SealedEntry]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|e| e.line.iter().copied())
        .collect()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn options() -> VerifyOptions {
    VerifyOptions {
        threads: 1,
        ..VerifyOptions::default()
    }
}

/// Every way of verifying, which must agree on everything but timing.
fn verdicts(files: &[PathBuf], base: &VerifyOptions) -> IntegrityReport {
    let ways = [
        VerifyOptions {
            threads: 1,
            ..base.clone()
        },
        VerifyOptions {
            threads: 1,
            recanonicalise: true,
            ..base.clone()
        },
        VerifyOptions {
            threads: 4,
            chunk_bytes: 700,
            ..base.clone()
        },
        VerifyOptions {
            threads: 2,
            chunk_bytes: 4096,
            recanonicalise: true,
            ..base.clone()
        },
    ];
    let mut reports = ways.iter().map(|o| verify_files(files, o).unwrap().report);
    let first = reports.next().unwrap();
    for other in reports {
        assert_eq!(other, first);
    }
    first
}

fn broken(report: &IntegrityReport) -> (BreakKind, u64) {
    let error = report
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("not broken: {report:?}"));
    assert!(!report.valid);
    (error.kind, report.first_broken_at.unwrap())
}

#[test]
fn a_long_chain_verifies_the_same_on_any_thread_count_and_block_size() {
    let dir = tempfile::tempdir().unwrap();
    let entries = chain(3000);
    let file = write(dir.path(), "decisions-000000000000.jsonl", &bytes(&entries));
    let report = verdicts(&[file], &options());
    assert!(report.valid, "{report:?}");
    assert_eq!(report.entries_checked, 3000);
    assert_eq!(report.head.unwrap().entry_hash, entries[2999].entry_hash);
}

#[test]
fn a_chain_split_across_segments_links_between_files() {
    let dir = tempfile::tempdir().unwrap();
    let entries = chain(50);
    write(
        dir.path(),
        "decisions-000000000000.jsonl",
        &bytes(&entries[..20]),
    );
    write(
        dir.path(),
        "decisions-000000000020.jsonl",
        &bytes(&entries[20..]),
    );
    write(dir.path(), "notes.txt", b"not a segment\n");
    let report = verify_path(dir.path(), &options()).unwrap();
    assert!(
        report.valid && report.segments == 2 && report.entries_checked == 50,
        "{report:?}"
    );

    // A missing middle segment is a seq gap at its first entry, in the next file.
    std::fs::remove_file(dir.path().join("decisions-000000000000.jsonl")).unwrap();
    write(
        dir.path(),
        "decisions-000000000000.jsonl",
        &bytes(&entries[..10]),
    );
    let report = verify_path(dir.path(), &options()).unwrap();
    assert_eq!(broken(&report), (BreakKind::SeqGap, 10));
    assert!(
        report
            .error
            .unwrap()
            .file
            .ends_with("decisions-000000000020.jsonl")
    );
}

#[test]
fn a_start_head_continues_a_chain_verified_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let entries = chain(10);
    let file = write(dir.path(), "tail.jsonl", &bytes(&entries[6..]));
    let start = ChainHead {
        seq: 5,
        entry_hash: entries[5].entry_hash.clone(),
    };
    let report = verdicts(
        std::slice::from_ref(&file),
        &VerifyOptions {
            start: Some(start),
            ..options()
        },
    );
    assert!(report.valid, "{report:?}");
    let wrong = ChainHead {
        seq: 5,
        entry_hash: entries[4].entry_hash.clone(),
    };
    let report = verdicts(
        &[file],
        &VerifyOptions {
            start: Some(wrong),
            ..options()
        },
    );
    assert_eq!(broken(&report), (BreakKind::PrevMismatch, 6));
}

#[test]
fn the_audit_chain_has_no_version_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut prev = GENESIS_PREV_HASH.to_owned();
    let mut data = Vec::new();
    for seq in 0..5u64 {
        let Value::Object(map) =
            json!({"seq": seq, "prev_hash": prev, "event_type": "daemon_started"})
        else {
            unreachable!()
        };
        let sealed = seal(&map);
        prev = sealed.entry_hash;
        data.extend_from_slice(&sealed.line);
    }
    let file = write(dir.path(), "audit-000000000000.jsonl", &data);
    let audit = VerifyOptions {
        kind: ChainKind::Audit,
        ..options()
    };
    assert!(
        verify_files(std::slice::from_ref(&file), &audit)
            .unwrap()
            .report
            .valid
    );
    let as_trace = verify_files(&[file], &options()).unwrap().report;
    assert_eq!(broken(&as_trace), (BreakKind::VersionMismatch, 0));
}

#[test]
fn an_unreadable_path_is_an_error_not_a_verdict() {
    let missing = Path::new("/nonexistent/atlasbridge/decisions");
    let error = verify_path(missing, &options()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("/nonexistent/atlasbridge/decisions"),
        "{error}"
    );
}

#[test]
fn a_line_without_end_is_malformed_even_when_its_bytes_are_sound() {
    let dir = tempfile::tempdir().unwrap();
    let entries = chain(4);
    let mut data = bytes(&entries);
    data.pop();
    let file = write(dir.path(), "t.jsonl", &data);
    let report = verdicts(&[file], &options());
    assert_eq!(broken(&report), (BreakKind::MalformedLine, 3));
    assert_eq!(report.entries_checked, 3);
}

/// One way to tamper with a stored chain, and where verification must say it broke.
#[derive(Debug, Clone)]
enum Tamper {
    /// Change one byte inside entry `at` (not its final brace or newline).
    FlipByte {
        at: usize,
        offset: prop::sample::Index,
        byte: u8,
    },
    Delete {
        at: usize,
    },
    Swap {
        at: usize,
    },
    Duplicate {
        at: usize,
    },
    /// Replace entry `at` and re-hash it, without touching the next entry.
    EditAndRehash {
        at: usize,
    },
    Truncate {
        at: usize,
        keep: prop::sample::Index,
    },
}

fn tamper_strategy(n: usize) -> impl Strategy<Value = Tamper> {
    let at = 0..n;
    prop_oneof![
        (at.clone(), any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(at, offset, byte)| Tamper::FlipByte { at, offset, byte }),
        at.clone().prop_map(|at| Tamper::Delete { at }),
        (0..n - 1).prop_map(|at| Tamper::Swap { at }),
        at.clone().prop_map(|at| Tamper::Duplicate { at }),
        at.clone().prop_map(|at| Tamper::EditAndRehash { at }),
        (at, any::<prop::sample::Index>()).prop_map(|(at, keep)| Tamper::Truncate { at, keep }),
    ]
}

/// The tampered lines, and the seq at which the chain must break (`None`: it must stay valid,
/// which only a flip that leaves the bytes equal may do).
fn apply(entries: &[SealedEntry], tamper: &Tamper) -> (Vec<Vec<u8>>, Option<u64>) {
    let mut lines: Vec<Vec<u8>> = entries.iter().map(|e| e.line.clone()).collect();
    let seq = |at: usize| at as u64;
    match *tamper {
        Tamper::FlipByte { at, offset, byte } => {
            let line = &mut lines[at];
            let i = offset.index(line.len() - 2);
            let same = line[i] == byte;
            line[i] = byte;
            (lines, (!same).then_some(seq(at)))
        }
        Tamper::Delete { at } => {
            lines.remove(at);
            // Deleting the last entry leaves a shorter, sound chain: only checkpoints see it.
            (lines, (at + 1 < entries.len()).then_some(seq(at)))
        }
        Tamper::Swap { at } => {
            lines.swap(at, at + 1);
            (lines, Some(seq(at)))
        }
        Tamper::Duplicate { at } => {
            let copy = lines[at].clone();
            lines.insert(at + 1, copy);
            (lines, Some(seq(at + 1)))
        }
        Tamper::EditAndRehash { at } => {
            let prev = if at == 0 {
                GENESIS_PREV_HASH.to_owned()
            } else {
                entries[at - 1].entry_hash.clone()
            };
            lines[at] = seal(&body(seq(at), &prev, "edited")).line;
            (lines, (at + 1 < entries.len()).then_some(seq(at + 1)))
        }
        Tamper::Truncate { at, keep } => {
            let cut = keep.index(lines[at].len() - 1) + 1;
            lines[at].truncate(cut);
            lines.truncate(at + 1);
            // A cut that keeps every byte but the newline is still a torn line.
            (lines, Some(seq(at)))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn every_tampering_is_caught_at_its_seq_by_every_path(tamper in tamper_strategy(24)) {
        let entries = chain(24);
        let (lines, breaks_at) = apply(&entries, &tamper);
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "t.jsonl", &lines.concat());
        let report = verdicts(&[file], &options());
        match breaks_at {
            Some(at) => {
                prop_assert!(!report.valid, "{tamper:?} went unnoticed");
                prop_assert_eq!(report.first_broken_at, Some(at), "{:?}: {:?}", tamper, report.error);
                prop_assert_eq!(report.entries_checked, at);
            }
            None => prop_assert!(report.valid),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_get_one_verdict(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "t.jsonl", &data);
        let report = verdicts(&[file], &options());
        prop_assert!(report.valid == data.is_empty(), "{:?}", report);
    }
}

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        // Escapes, controls, surrogate-pair characters and the BMP's upper end, which JCS
        // orders differently from UTF-8.
        "[\\x00-\\x1f\"\\\\/a-z\u{7f}\u{e000}\u{fffd}\u{10000}-\u{10ffff}]{0,40}",
        // Large strings: several blocks of the verifier's reader on their own.
        proptest::collection::vec(any::<char>(), 1000..40_000).prop_map(String::from_iter),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_entries_round_trip_and_verify(notes in proptest::collection::vec(arbitrary_text(), 1..6)) {
        let mut prev = GENESIS_PREV_HASH.to_owned();
        let mut bodies = Vec::new();
        let mut data = Vec::new();
        for (seq, note) in notes.iter().enumerate() {
            let body = body(seq as u64, &prev, note);
            let sealed = seal(&body);
            prev.clone_from(&sealed.entry_hash);
            data.extend_from_slice(&sealed.line);
            bodies.push((body, sealed.entry_hash));
        }
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "t.jsonl", &data);
        let report = verdicts(std::slice::from_ref(&file), &options());
        prop_assert!(report.valid, "{:?}", report);
        prop_assert_eq!(report.entries_checked, notes.len() as u64);
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, (body, hash)) in text.lines().zip(&bodies) {
            let mut stored: Map<String, Value> = serde_json::from_str(line).unwrap();
            prop_assert_eq!(stored.remove("entry_hash"), Some(Value::String(hash.clone())));
            prop_assert_eq!(&stored, body);
        }
    }
}

// Checkpoints.

fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

const IDENTITY: u8 = 1;

/// The epoch key of epoch `n` (distinct from the identity's).
fn epoch_key(n: u64) -> SigningKey {
    key(100 + u8::try_from(n).unwrap())
}

/// Checkpoints at each of `seqs` in the default rotation: checkpoint n opens epoch n.
fn checkpoints(entries: &[SealedEntry], seqs: &[u64]) -> Vec<Checkpoint> {
    let mut out: Vec<Checkpoint> = Vec::new();
    for (n, &seq) in seqs.iter().enumerate() {
        let n = n as u64;
        let unsigned = UnsignedCheckpoint {
            checkpoint_seq: n,
            prev_checkpoint_hash: out.last().map_or(
                GENESIS_CHECKPOINT_HASH.to_owned(),
                Checkpoint::checkpoint_hash,
            ),
            epoch: n,
            epoch_public_key: Some(encode_public_key(&epoch_key(n).verifying_key())),
            seq: Some(seq),
            entry_hash: entries[usize::try_from(seq).unwrap()].entry_hash.clone(),
            entries: seq + 1,
            timestamp: format!("2026-11-24T00:00:{:02}Z", n),
            runtime_id: encode_public_key(&key(IDENTITY).verifying_key()),
        };
        let signer = if n == 0 {
            key(IDENTITY)
        } else {
            epoch_key(n - 1)
        };
        out.push(unsigned.sign(&signer));
    }
    out
}

struct Witnessed {
    dir: tempfile::TempDir,
    entries: Vec<SealedEntry>,
}

impl Witnessed {
    /// 30 entries in one segment, checkpoints at 9, 19 and 29.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let entries = chain(30);
        write(dir.path(), "decisions-000000000000.jsonl", &bytes(&entries));
        let this = Self { dir, entries };
        this.write_checkpoints(&checkpoints(&this.entries, &[9, 19, 29]));
        this
    }

    fn write_checkpoints(&self, list: &[Checkpoint]) {
        let data: Vec<u8> = list.iter().flat_map(Checkpoint::to_line).collect();
        write(self.dir.path(), "checkpoints.jsonl", &data);
    }

    fn verify(&self) -> IntegrityReport {
        let now = "2026-11-24T00:01:00Z".parse::<Timestamp>().unwrap();
        verify_path(
            self.dir.path(),
            &VerifyOptions {
                now: Some(now),
                ..options()
            },
        )
        .unwrap()
    }
}

#[test]
fn a_witnessed_chain_verifies_with_its_checkpoints() {
    let witnessed = Witnessed::new();
    let report = witnessed.verify();
    assert!(report.valid, "{report:?}");
    assert_eq!(report.checkpoints_checked, 3);
    assert_eq!(report.unwitnessed_tail, None);
}

#[test]
fn entries_after_the_last_checkpoint_are_an_unwitnessed_tail_not_a_break() {
    let witnessed = Witnessed::new();
    witnessed.write_checkpoints(&checkpoints(&witnessed.entries, &[9, 19]));
    let report = witnessed.verify();
    assert!(report.valid, "{report:?}");
    let tail = report.unwitnessed_tail.unwrap();
    assert_eq!(
        (tail.from_seq, tail.to_seq, tail.seconds),
        (20, 29, Some(59))
    );
}

#[test]
fn a_rewritten_chain_with_valid_hashes_is_a_checkpoint_mismatch() {
    let witnessed = Witnessed::new();
    let kept = &witnessed.entries[..15];
    let start = ChainHead {
        seq: 14,
        entry_hash: kept[14].entry_hash.clone(),
    };
    let mut rewritten = bytes(kept);
    rewritten.extend(bytes(&chain_from(Some(&start), 15, "rewritten")));
    write(
        witnessed.dir.path(),
        "decisions-000000000000.jsonl",
        &rewritten,
    );
    let report = witnessed.verify();
    assert_eq!(broken(&report), (BreakKind::CheckpointMismatch, 19));
    assert_eq!(report.checkpoints_checked, 1);
    assert!(report.error.unwrap().file.ends_with("checkpoints.jsonl"));
}

#[test]
fn a_deleted_tail_is_truncated_after_checkpoint() {
    let witnessed = Witnessed::new();
    write(
        witnessed.dir.path(),
        "decisions-000000000000.jsonl",
        &bytes(&witnessed.entries[..25]),
    );
    let report = witnessed.verify();
    assert_eq!(broken(&report), (BreakKind::TruncatedAfterCheckpoint, 25));
}

#[test]
fn a_chain_break_before_a_checkpoint_problem_is_the_one_reported() {
    let witnessed = Witnessed::new();
    let mut data = bytes(&witnessed.entries);
    let text = String::from_utf8(data.clone())
        .unwrap()
        .replacen("\"p4\"", "\"pX\"", 1);
    data = text.into_bytes();
    write(witnessed.dir.path(), "decisions-000000000000.jsonl", &data);
    assert_eq!(broken(&witnessed.verify()), (BreakKind::HashMismatch, 4));
}

#[test]
fn a_missing_checkpoint_is_a_gap() {
    let witnessed = Witnessed::new();
    let mut list = checkpoints(&witnessed.entries, &[9, 19, 29]);
    list.remove(1);
    witnessed.write_checkpoints(&list);
    let report = witnessed.verify();
    assert_eq!(broken(&report).0, BreakKind::CheckpointGap);
    assert_eq!(report.error.unwrap().line, 2);
}

#[test]
fn a_checkpoint_signed_by_the_wrong_key_is_a_bad_signature() {
    let witnessed = Witnessed::new();
    let mut list = checkpoints(&witnessed.entries, &[9, 19, 29]);
    // Re-sign checkpoint 2 with its own epoch's key instead of epoch 1's (which the writer
    // erased): exactly what a thief of the current key could do.
    let c = &list[2];
    let forged = UnsignedCheckpoint {
        checkpoint_seq: c.checkpoint_seq,
        prev_checkpoint_hash: c.prev_checkpoint_hash.clone(),
        epoch: c.epoch,
        epoch_public_key: c.epoch_public_key.clone(),
        seq: c.seq,
        entry_hash: c.entry_hash.clone(),
        entries: c.entries,
        timestamp: c.timestamp.clone(),
        runtime_id: c.runtime_id.clone(),
    }
    .sign(&epoch_key(2));
    list[2] = forged;
    witnessed.write_checkpoints(&list);
    assert_eq!(broken(&witnessed.verify()), (BreakKind::BadSignature, 29));
}

#[test]
fn a_foreign_runtime_is_refused_when_one_is_trusted() {
    let witnessed = Witnessed::new();
    let stranger = encode_public_key(&key(2).verifying_key());
    let options = VerifyOptions {
        trusted_runtime_id: Some(stranger),
        ..options()
    };
    let report = verify_path(witnessed.dir.path(), &options).unwrap();
    assert_eq!(broken(&report).0, BreakKind::BadSignature);
}

#[test]
fn a_torn_checkpoint_line_is_malformed_after_the_last_sound_one() {
    let witnessed = Witnessed::new();
    let list = checkpoints(&witnessed.entries, &[9, 19, 29]);
    let mut data: Vec<u8> = list[..2].iter().flat_map(Checkpoint::to_line).collect();
    data.extend_from_slice(&list[2].to_line()[..40]);
    write(witnessed.dir.path(), "checkpoints.jsonl", &data);
    let report = witnessed.verify();
    assert_eq!(broken(&report), (BreakKind::MalformedLine, 20));
    assert_eq!(report.checkpoints_checked, 2);
}

#[test]
fn an_exported_copy_can_stand_in_for_the_directorys_own() {
    let witnessed = Witnessed::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("witness.jsonl");
    std::fs::copy(witnessed.dir.path().join("checkpoints.jsonl"), &copy).unwrap();
    // The attacker replaces the directory's checkpoints along with the chain.
    let kept = &witnessed.entries[..5];
    let start = ChainHead {
        seq: 4,
        entry_hash: kept[4].entry_hash.clone(),
    };
    let mut rewritten = bytes(kept);
    let forged = chain_from(Some(&start), 25, "forged");
    rewritten.extend(bytes(&forged));
    write(
        witnessed.dir.path(),
        "decisions-000000000000.jsonl",
        &rewritten,
    );
    let all: Vec<SealedEntry> = kept.iter().cloned().chain(forged).collect();
    witnessed.write_checkpoints(&checkpoints(&all, &[9, 19, 29]));
    assert!(
        witnessed.verify().valid,
        "their own checkpoints agree with them"
    );
    let options = VerifyOptions {
        checkpoints: Some(copy),
        ..options()
    };
    let report = verify_path(witnessed.dir.path(), &options).unwrap();
    assert_eq!(broken(&report), (BreakKind::CheckpointMismatch, 9));
}

#[test]
fn a_tail_cut_after_the_last_checkpoint_is_unwitnessed_not_broken() {
    let witnessed = Witnessed::new();
    witnessed.write_checkpoints(&checkpoints(&witnessed.entries, &[9, 19]));
    write(
        witnessed.dir.path(),
        "decisions-000000000000.jsonl",
        &bytes(&witnessed.entries[..25]),
    );
    let report = witnessed.verify();
    assert!(
        report.valid,
        "a plain chain cannot see this cut: {report:?}"
    );
    let tail = report.unwitnessed_tail.unwrap();
    assert_eq!((tail.from_seq, tail.to_seq), (20, 24));
}

#[test]
fn a_segment_removed_from_the_middle_is_a_seq_gap_in_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let entries = chain(30);
    write(
        dir.path(),
        "decisions-000000000000.jsonl",
        &bytes(&entries[..10]),
    );
    write(
        dir.path(),
        "decisions-000000000010.jsonl",
        &bytes(&entries[10..20]),
    );
    write(
        dir.path(),
        "decisions-000000000020.jsonl",
        &bytes(&entries[20..]),
    );
    std::fs::remove_file(dir.path().join("decisions-000000000010.jsonl")).unwrap();
    let report = verify_path(dir.path(), &options()).unwrap();
    assert_eq!(broken(&report), (BreakKind::SeqGap, 10));
    assert_eq!(report.entries_checked, 10);
    let error = report.error.unwrap();
    assert!(
        error.file.ends_with("decisions-000000000020.jsonl"),
        "{}",
        error.file
    );
    assert_eq!(error.line, 1);
}
