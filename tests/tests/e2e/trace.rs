//! The decision trace and the audit log through the real daemon: appends, reads, subscriptions,
//! verification, crashes, torn tails, repairs, lost entries, rotation, a full disk, v1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::process::Signal;
use serde_json::{Value, json};

use crate::support::{Conn, Options, Sandbox, TestDaemon, eventually};

pub fn record_params(session: &str, prompt: &str) -> Value {
    json!({
        "session_id": session,
        "prompt_id": prompt,
        "prompt_type": "yes_no",
        "confidence": "high",
        "prompt_text": "Continue? [y/n]",
        "action_taken": "auto_reply",
        "reply_value": "y",
        "human_actor": "e2e",
    })
}

fn pro() -> Options {
    Options::default().edition("pro")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("decisions-")
        })
        .collect();
    files.sort();
    files
}

/// Records `count` decisions (prompts `p0`, `p1`, …), stops the daemon cleanly, and returns the
/// last result.
fn record_then_stop(daemon: &mut TestDaemon, count: usize) -> Value {
    let mut conn = daemon.conn();
    let mut last = Value::Null;
    for i in 0..count {
        last = conn.ok("decision.record", record_params("s", &format!("p{i}")));
    }
    drop(conn);
    daemon.stop();
    last
}

fn trace_dir(daemon: &TestDaemon) -> PathBuf {
    daemon.sandbox.data_dir().join("trace")
}

fn all_entries(conn: &mut Conn) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut from = 0;
    loop {
        let page = conn.ok("trace.read", json!({"from_seq": from, "limit": 1000}));
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_seq"].as_u64() {
            Some(next) => from = next,
            None => return entries,
        }
    }
}

#[test]
fn a_recorded_decision_is_durable_chained_and_readable() {
    let daemon = TestDaemon::start_with(pro());
    let mut conn = daemon.conn();
    let first = conn.ok("decision.record", record_params("s1", "p1"));
    assert_eq!(first["seq"], 0);
    let second = conn.ok("decision.record", record_params("s1", "p2"));
    assert_eq!(second["seq"], 1);
    let head = conn.ok("trace.head", json!({}));
    assert_eq!(
        head,
        json!({"seq": 1, "entry_hash": second["entry_hash"], "entries": 2})
    );

    let entries = all_entries(&mut conn);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["prev_hash"], first["entry_hash"]);
    assert_eq!(entries[1]["prompt_id"], "p2");
    assert_eq!(entries[1]["trace_version"], 2);
    assert!(
        entries[0].get("prompt_text").is_none(),
        "prompt text is never stored"
    );
    assert!(
        !std::fs::read_to_string(&segments(&trace_dir(&daemon))[0])
            .unwrap()
            .contains("Continue?")
    );

    let report = conn.ok("trace.verify", json!({}));
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["entries_checked"], 2);
    assert_eq!(report["head"]["entry_hash"], second["entry_hash"]);

    let status = conn.ok("daemon.status", json!({}));
    assert_eq!(status["health"], "ok");
    assert_eq!(status["trace"]["format"], "v2");
    assert_eq!(status["trace"]["entries"], 2);
    assert_eq!(status["trace"]["durability"], "fsync");
}

#[test]
fn bad_record_params_are_refused_with_the_field() {
    let daemon = TestDaemon::start_with(pro());
    let mut conn = daemon.conn();
    let mut params = record_params("s", "p");
    params["prompt_type"] = json!("essay");
    let error = conn.err("decision.record", params);
    assert_eq!(
        (error["code"].clone(), error["data"]["field"].clone()),
        (json!(-32602), json!("prompt_type"))
    );
    let error = conn.err("decision.record", json!({"session_id": "s"}));
    assert_eq!(error["code"], -32602);
    assert_eq!(
        conn.ok("trace.head", json!({}))["entries"],
        0,
        "nothing was written"
    );
}

#[test]
fn verification_is_gated_by_audit_integrity_check() {
    let daemon = TestDaemon::start();
    let error = daemon.conn().err("trace.verify", json!({}));
    assert_eq!(error["code"], -32003);
    assert_eq!(error["data"]["feature"], "audit_integrity_check");
    let out = daemon.cli(&["trace", "integrity-check"]);
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("ATLASBRIDGE_FEATURE_AUDIT_INTEGRITY_CHECK=on"),
        "{}",
        out.stderr
    );
}

#[test]
fn with_trace_v2_off_decisions_go_to_the_v1_file() {
    let daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    let result = conn.ok("decision.record", record_params("s1", "p1"));
    assert_eq!(result["seq"], json!(null));
    let v1 = std::fs::read_to_string(daemon.sandbox.data_dir().join("autopilot_decisions.jsonl"))
        .unwrap();
    let line: Value = serde_json::from_str(v1.lines().next().unwrap()).unwrap();
    assert_eq!(line["prompt_id"], "p1");
    assert_eq!(line["action_type"], "auto_reply");
    assert_eq!(line["matched_rule_id"], json!(null));
    assert_eq!(conn.ok("daemon.status", json!({}))["trace"]["format"], "v1");
    assert_eq!(conn.ok("trace.head", json!({}))["entries"], 0);
}

#[test]
fn a_rotated_v1_set_written_by_the_daemon_migrates_once_and_verifies() {
    let mut daemon = TestDaemon::start();
    let mut conn = daemon.conn();
    for i in 0..3 {
        conn.ok("decision.record", record_params("s", &format!("old-{i}")));
    }
    drop(conn);
    daemon.stop();
    let v1 = daemon.sandbox.data_dir().join("autopilot_decisions.jsonl");
    std::fs::rename(
        &v1,
        daemon
            .sandbox
            .data_dir()
            .join("autopilot_decisions.jsonl.1"),
    )
    .unwrap();
    daemon.launch();
    let mut conn = daemon.conn();
    for i in 0..2 {
        conn.ok("decision.record", record_params("s", &format!("new-{i}")));
    }
    let before = std::fs::read(&v1).unwrap();

    let out = daemon.sandbox.path("migrated");
    let first = daemon.cli(&[
        "trace",
        "migrate",
        v1.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    first.assert_code(0);
    let summary = first.json();
    assert_eq!(
        (
            summary["migrated"].clone(),
            summary["already_migrated"].clone()
        ),
        (json!(5), json!(0)),
        "{summary}"
    );
    assert!(
        summary["sources"][0]
            .as_str()
            .unwrap()
            .ends_with(".jsonl.1"),
        "oldest first: {summary}"
    );
    assert_eq!(
        std::fs::read(&v1).unwrap(),
        before,
        "the source is never modified"
    );

    let again = daemon.cli(&[
        "trace",
        "migrate",
        v1.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    again.assert_code(0);
    assert!(
        again.stdout.contains("nothing to migrate"),
        "{}",
        again.stdout
    );

    // Verification is a pro feature and the running daemon is community: ask offline.
    drop(conn);
    daemon.stop();
    let check = daemon.cli_with(
        &["trace", "integrity-check", out.to_str().unwrap(), "--json"],
        &[("ATLASBRIDGE_EDITION", "pro")],
    );
    check.assert_code(0);
    assert_eq!(check.json()["entries_checked"], 5);
    let first_entry: Value = serde_json::from_str(
        std::fs::read_to_string(segments(&out)[0].clone())
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first_entry["prompt_id"], "old-0");
    assert_eq!(first_entry["migrated_from"], "v1");
    assert_eq!(first_entry["v1_line"], 1);
}

#[test]
fn migrating_a_v1_file_with_a_bad_line_names_the_line_and_writes_nothing() {
    let sandbox = crate::support::Sandbox::new();
    let source = sandbox.path("autopilot_decisions.jsonl");
    std::fs::write(&source, "{\"timestamp\":\"2026-11-24T01:02:03+00:00\",\"prompt_id\":\"a\"}\n{\"prompt_id\":\"b\"}\n").unwrap();
    let daemon = TestDaemon::unstarted(sandbox, Options::default());
    let out = daemon.cli(&["trace", "migrate", source.to_str().unwrap()]);
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("autopilot_decisions.jsonl:2: field `timestamp`: missing"),
        "{}",
        out.stderr
    );
    assert!(!daemon.sandbox.path("trace-migrated").exists());
    let skipped = daemon.cli(&[
        "trace",
        "migrate",
        source.to_str().unwrap(),
        "--skip-invalid",
        "--json",
    ]);
    skipped.assert_code(0);
    assert_eq!(skipped.json()["migrated"], 1);
    assert_eq!(skipped.json()["skipped"][0]["at"]["line"], 2);
}

#[test]
fn the_cli_tails_shows_and_follows_the_trace() {
    let daemon = TestDaemon::start_with(pro());
    let mut conn = daemon.conn();
    for i in 0..4 {
        conn.ok("decision.record", record_params("s", &format!("p{i}")));
    }
    let tail = daemon.cli(&["trace", "tail", "-n", "2", "--json"]);
    tail.assert_code(0);
    let seqs: Vec<u64> = tail
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [2, 3]);
    let human = daemon.cli(&["trace", "tail"]);
    human.assert_code(0);
    assert_eq!(human.stdout.lines().count(), 4, "{}", human.stdout);
    assert!(human.stdout.contains("p3"), "{}", human.stdout);

    let show = daemon.cli(&["trace", "show", "1", "--json"]);
    show.assert_code(0);
    assert_eq!(show.json()["prompt_id"], "p1");
    daemon.cli(&["trace", "show", "99"]).assert_code(1);

    let mut follower = std::process::Command::new(crate::support::CLI)
        .env_clear()
        .envs(daemon.env())
        .arg("--socket")
        .arg(daemon.socket())
        .args(["trace", "tail", "-n", "1", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Reading a pipe has no timeout: a watchdog kills the follower if the test hangs.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let pid = rustix::process::Pid::from_child(&follower);
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(crate::support::DEADLINE).is_err() {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    });
    let mut lines = std::io::BufReader::new(follower.stdout.take().unwrap());
    let mut read_seq = || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(read_seq(), 3, "the last stored entry first");
    conn.ok("decision.record", record_params("s", "p4"));
    conn.ok("decision.record", record_params("s", "p5"));
    assert_eq!(
        (read_seq(), read_seq()),
        (4, 5),
        "then new ones as they are written"
    );
    done.send(()).unwrap();
    watchdog.join().unwrap();
    follower.kill().unwrap();
    follower.wait().unwrap();

    let audit = daemon.cli(&["audit", "tail", "--json"]);
    audit.assert_code(0);
    assert!(audit.stdout.contains("daemon_started"), "{}", audit.stdout);
}

#[test]
fn subscribers_get_the_replay_then_live_entries_in_order() {
    let daemon = TestDaemon::start_with(pro());
    let mut writer = daemon.conn();
    for i in 0..3 {
        writer.ok(
            "decision.record",
            record_params("s", &format!("before-{i}")),
        );
    }
    let mut subscriber = daemon.conn();
    let started = subscriber.ok("trace.subscribe", json!({"from_seq": 1}));
    assert_eq!(started["from_seq"], 1);
    for i in 0..3 {
        writer.ok("decision.record", record_params("s", &format!("after-{i}")));
    }
    let seqs: Vec<u64> = (0..5)
        .map(|_| {
            let note = subscriber.read();
            assert_eq!(note["method"], "trace.entry");
            note["params"]["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[test]
fn a_slow_subscriber_is_dropped_without_slowing_the_writer() {
    let daemon = TestDaemon::start_with(pro().config("[trace]\ndurability = \"none\"\n"));
    let mut subscriber = daemon.conn();
    subscriber.ok("trace.subscribe", json!({}));
    // Never read the subscription while far more entries than its buffers hold are written.
    let socket = daemon.socket();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(&socket).unwrap();
                for i in 0..2500 {
                    conn.ok("decision.record", record_params("s", &format!("w{w}-{i}")));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("every decision succeeded");
    }
    let mut ended = None;
    while let Some(message) = subscriber.try_read() {
        if message["method"] == "trace.subscription_ended" {
            ended = Some(message);
            break;
        }
    }
    let ended = ended.expect("a final notification");
    assert_eq!(ended["params"]["reason"], "too_slow", "{ended}");
    assert_eq!(daemon.conn().ok("trace.head", json!({}))["entries"], 10_000);
}

#[test]
fn segments_rotate_under_load_and_the_chain_continues_across_files() {
    let daemon = TestDaemon::start_with(pro().config("[trace]\nsegment_max_bytes = 4096\n"));
    let socket = daemon.socket();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(&socket).unwrap();
                (0..40)
                    .map(|i| {
                        conn.ok("decision.record", record_params("s", &format!("w{w}-{i}")))["seq"]
                            .as_u64()
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..320).collect::<Vec<_>>(), "every seq exactly once");
    let files = segments(&trace_dir(&daemon));
    assert!(files.len() > 10, "{} segments", files.len());
    let mut conn = daemon.conn();
    assert_eq!(all_entries(&mut conn).len(), 320);
    let report = conn.ok("trace.verify", json!({}));
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["segments"], files.len());
    let out = daemon.cli(&["trace", "integrity-check", "--json"]);
    out.assert_code(0);
    assert_eq!(out.json()["entries_checked"], 320);
}

#[test]
fn a_torn_last_line_is_cut_at_start_and_audited() {
    let mut daemon = TestDaemon::start_with(pro());
    record_then_stop(&mut daemon, 5);
    let last = segments(&trace_dir(&daemon)).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(b"{\"trace_version\":2,\"seq\":5,\"sess");
    std::fs::write(&last, &bytes).unwrap();

    daemon.launch();
    let mut conn = daemon.conn();
    assert_eq!(conn.ok("trace.head", json!({}))["seq"], 4);
    assert_eq!(std::fs::metadata(&last).unwrap().len() as usize, whole);
    let next = conn.ok("decision.record", record_params("s", "p5"));
    assert_eq!(next["seq"], 5);
    let recovered = daemon
        .audit_events()
        .into_iter()
        .find(|e| e["event_type"] == "trace_recovered")
        .unwrap();
    assert_eq!(recovered["details"]["bytes_dropped"], 32);
    assert_eq!(conn.ok("trace.verify", json!({}))["valid"], true);
}

#[test]
fn a_tampered_tail_stops_appends_until_repair_which_deletes_nothing() {
    let mut daemon = TestDaemon::start_with(pro());
    record_then_stop(&mut daemon, 6);
    let last = segments(&trace_dir(&daemon)).pop().unwrap();
    let text = std::fs::read_to_string(&last).unwrap();
    let edited = text.replacen("\"prompt_id\":\"p3\"", "\"prompt_id\":\"pX\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&last, &edited).unwrap();

    daemon.launch();
    let mut conn = daemon.conn();
    let status = conn.ok("daemon.status", json!({}));
    assert_eq!(status["health"], "broken", "{status}");
    assert!(
        status["trace"]["problem"]
            .as_str()
            .unwrap()
            .contains("broken at seq 3"),
        "{status}"
    );
    let refused = conn.err("decision.record", record_params("s", "p6"));
    assert_eq!(refused["code"], -32004, "{refused}");

    let out = daemon.cli(&["trace", "repair", "--start-new-segment"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("continues from seq 2"),
        "{}",
        out.stdout
    );
    let next = conn.ok("decision.record", record_params("s", "p6"));
    assert_eq!(
        next["seq"], 3,
        "the new segment links to the last valid entry"
    );
    assert_eq!(
        std::fs::read_to_string(&last).unwrap(),
        edited,
        "the broken segment is kept as it is"
    );
    let events = daemon.audit_events();
    assert!(events.iter().any(|e| e["event_type"] == "chain_broken"));
    let repaired = events
        .iter()
        .find(|e| e["event_type"] == "chain_repaired")
        .unwrap();
    assert_eq!(repaired["details"]["continues_from"]["seq"], 2);
    let status = conn.ok("daemon.status", json!({}));
    assert_eq!(status["health"], "ok", "{status}");
    let report = conn.ok("trace.verify", json!({}));
    assert_eq!(
        (report["valid"].clone(), report["first_broken_at"].clone()),
        (json!(false), json!(3)),
        "the break stays on record: {report}"
    );

    // The repair holds across a restart: the repair segment is checked from the entry it links
    // to, not from the end of the broken segment before it.
    drop(conn);
    daemon.restart();
    let mut conn = daemon.conn();
    let status = conn.ok("daemon.status", json!({}));
    assert_eq!(status["health"], "ok", "{status}");
    let next = conn.ok("decision.record", record_params("s", "p7"));
    assert_eq!(next["seq"], 4, "{next}");
}

#[test]
fn an_emptied_trace_directory_is_reported_not_silently_restarted() {
    let mut daemon = TestDaemon::start_with(pro());
    let last = record_then_stop(&mut daemon, 5);
    for segment in segments(&trace_dir(&daemon)) {
        std::fs::remove_file(segment).unwrap();
    }

    let out = daemon.cli(&["trace", "integrity-check", "--json"]);
    out.assert_code(1);
    assert_eq!(
        out.json()["error"]["kind"],
        "truncated_after_checkpoint",
        "{}",
        out.stdout
    );

    daemon.launch();
    let mut conn = daemon.conn();
    assert_eq!(conn.ok("daemon.status", json!({}))["health"], "broken");
    assert_eq!(
        conn.err("decision.record", record_params("s", "p5"))["code"],
        -32004
    );
    assert!(
        daemon
            .audit_events()
            .iter()
            .any(|e| e["event_type"] == "entries_missing")
    );
    daemon
        .cli(&["trace", "repair", "--start-new-segment"])
        .assert_code(0);
    let next = conn.ok("decision.record", record_params("s", "p5"));
    assert_eq!(next["seq"], 5, "continues after the last recorded head");
    let entries = all_entries(&mut conn);
    assert_eq!(entries[0]["prev_hash"], last["entry_hash"]);

    drop(conn);
    daemon.restart();
    let mut conn = daemon.conn();
    let status = conn.ok("daemon.status", json!({}));
    assert_eq!(
        status["health"], "ok",
        "the repair holds across a restart: {status}"
    );
    assert_eq!(
        conn.ok("decision.record", record_params("s", "p6"))["seq"],
        6
    );
}

#[test]
fn a_removed_trace_directory_is_reported_from_the_state_file_and_repaired() {
    let mut daemon = TestDaemon::start_with(pro());
    let last = record_then_stop(&mut daemon, 3);
    std::fs::remove_dir_all(trace_dir(&daemon)).unwrap();

    let out = daemon.cli(&["trace", "integrity-check", "--json"]);
    out.assert_code(1);
    let report = out.json();
    assert_eq!(
        report["error"]["kind"], "truncated_after_checkpoint",
        "{report}"
    );
    assert!(
        report["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("heads.json"),
        "{report}"
    );

    daemon.launch();
    let mut conn = daemon.conn();
    assert_eq!(conn.ok("daemon.status", json!({}))["health"], "broken");
    assert!(
        daemon
            .audit_events()
            .iter()
            .any(|e| e["event_type"] == "entries_missing")
    );
    daemon
        .cli(&["trace", "repair", "--start-new-segment"])
        .assert_code(0);
    let next = conn.ok("decision.record", record_params("s", "p3"));
    assert_eq!(next["seq"], 3, "continues after the last recorded head");
    assert_eq!(all_entries(&mut conn)[0]["prev_hash"], last["entry_hash"]);
}

#[test]
fn checkpoints_come_every_interval_when_idle_and_at_shutdown() {
    let mut daemon = TestDaemon::start_with(pro().config("[trace]\ncheckpoint_interval_s = 1\n"));
    let mut conn = daemon.conn();
    conn.ok("decision.record", record_params("s", "p0"));
    let file = trace_dir(&daemon).join("checkpoints.jsonl");
    let count = || {
        std::fs::read_to_string(&file)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    // Checkpoint 0 is written by a task of its own at start: count from it, not from before it.
    eventually("checkpoint 0", || count() >= 1);
    let before = count();
    eventually("two more checkpoints while nothing is appended", || {
        count() >= before + 2
    });
    let status = conn.ok("daemon.status", json!({}));
    assert!(
        status["checkpoint"]["checkpoint_seq"].as_u64().unwrap() >= 2,
        "{status}"
    );
    drop(conn);
    let idle = count();
    daemon.stop();
    assert!(count() > idle, "a checkpoint at shutdown");
    let report = daemon.cli(&["trace", "integrity-check", "--json"]);
    report.assert_code(0);
    let report = report.json();
    assert_eq!(report["unwitnessed_tail"], Value::Null, "{report}");
    assert_eq!(
        report["checkpoints_checked"].as_u64().unwrap() as usize,
        count()
    );
}

#[test]
fn a_deleted_checkpoints_file_is_caught_and_the_daemon_reanchors_on_record() {
    let mut daemon = TestDaemon::start_with(pro());
    let mut conn = daemon.conn();
    conn.ok("decision.record", record_params("s", "p0"));
    drop(conn);
    daemon.stop();
    std::fs::remove_file(trace_dir(&daemon).join("checkpoints.jsonl")).unwrap();
    let out = daemon.cli(&["trace", "integrity-check", "--json"]);
    out.assert_code(1);
    assert_eq!(
        out.json()["error"]["kind"],
        "checkpoint_gap",
        "{}",
        out.stdout
    );
    daemon.launch();
    let event = daemon
        .audit_events()
        .into_iter()
        .find(|e| e["event_type"] == "checkpoints_reanchored");
    assert!(event.is_some(), "the re-anchoring is an audit event");
}

#[test]
fn checkpoints_exported_elsewhere_catch_a_rewritten_chain() {
    let mut daemon =
        TestDaemon::start_with(pro().config("[trace]\ncheckpoint_every_entries = 5\n"));
    record_then_stop(&mut daemon, 12);
    let exported = daemon.sandbox.path("witness.jsonl");
    daemon
        .cli(&[
            "trace",
            "checkpoint",
            "export",
            "--out",
            exported.to_str().unwrap(),
        ])
        .assert_code(0);
    let clean = daemon.cli(&[
        "trace",
        "integrity-check",
        "--checkpoints",
        exported.to_str().unwrap(),
        "--json",
    ]);
    clean.assert_code(0);
    assert!(clean.json()["checkpoints_checked"].as_u64().unwrap() >= 3);

    // Rewrite everything from seq 4 with valid hashes: a plain chain cannot tell.
    rewrite_from(&segments(&trace_dir(&daemon)), 4);
    let plain = daemon.cli(&[
        "trace",
        "integrity-check",
        trace_dir(&daemon)
            .join(segments(&trace_dir(&daemon))[0].file_name().unwrap())
            .to_str()
            .unwrap(),
        "--json",
    ]);
    assert_eq!(plain.json()["valid"], true, "{}", plain.stdout);
    let witnessed = daemon.cli(&[
        "trace",
        "integrity-check",
        "--checkpoints",
        exported.to_str().unwrap(),
        "--json",
    ]);
    witnessed.assert_code(1);
    assert_eq!(
        witnessed.json()["error"]["kind"],
        "checkpoint_mismatch",
        "{}",
        witnessed.stdout
    );
}

/// Changes every entry from `from_seq` on and re-seals the chain so that it links and hashes.
fn rewrite_from(files: &[PathBuf], from_seq: u64) {
    let mut prev: Option<String> = None;
    for file in files {
        let mut out = Vec::new();
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let mut entry: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
            let seq = entry["seq"].as_u64().unwrap();
            if seq >= from_seq {
                entry.insert("reply_value".into(), json!("rewritten"));
                if let Some(prev) = &prev {
                    entry.insert("prev_hash".into(), json!(prev));
                }
            }
            entry.remove("entry_hash");
            let sealed = atlasbridge_protocol::trace::seal(&entry);
            prev = Some(sealed.entry_hash.clone());
            out.extend_from_slice(&sealed.line);
        }
        std::fs::write(file, out).unwrap();
    }
}

#[test]
fn a_full_disk_fails_the_request_with_32004_and_the_daemon_reports_degraded() {
    if !Path::new("/usr/bin/prlimit").exists() {
        eprintln!("skipped: prlimit is not installed");
        return;
    }
    let sandbox = Sandbox::new();
    let mut options = pro();
    options.wrapper = vec![
        "/usr/bin/prlimit".into(),
        "--fsize=24576".into(),
        "--".into(),
    ];
    let daemon = TestDaemon::start_in(sandbox, options);
    let mut conn = daemon.conn();
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        match conn.call("decision.record", record_params("s", &format!("p{i}"))) {
            Ok(result) => acked.push(result["seq"].as_u64().unwrap()),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let refused = refused.expect("the file size limit is reached");
    assert_eq!(refused["code"], -32004, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("treat this as deny")
    );
    let status = conn.ok("daemon.status", json!({}));
    assert_eq!(status["health"], "degraded", "{status}");
    let entries = all_entries(&mut conn);
    let stored: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(stored, acked, "every acknowledged entry and nothing else");
}

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_entry() {
    // A fixed seed keeps the kill points reproducible; the stress script raises the rounds.
    let rounds: u64 = std::env::var("ATLASBRIDGE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut daemon = TestDaemon::start_with(pro());
    let acked: Arc<Mutex<BTreeMap<u64, (String, String)>>> = Arc::default();
    for round in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 5 + rng % 120;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let socket = daemon.socket();
                let acked = Arc::clone(&acked);
                let count = Arc::clone(&count);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let Ok(mut conn) = Conn::open(&socket) else {
                        return;
                    };
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let prompt = format!("r{round}-c{c}-{i}");
                        i += 1;
                        match conn.try_call("decision.record", record_params("crash", &prompt)) {
                            Ok(Ok(result)) => {
                                let seq = result["seq"].as_u64().unwrap();
                                let hash = result["entry_hash"].as_str().unwrap().to_owned();
                                acked.lock().unwrap().insert(seq, (prompt, hash));
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        eventually("enough acknowledged appends", || {
            count.load(Ordering::Relaxed) >= kill_after
        });
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        daemon.launch();
        let mut conn = daemon.conn();
        let entries = all_entries(&mut conn);
        let by_seq: BTreeMap<u64, &Value> = entries
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e))
            .collect();
        for (seq, (prompt, hash)) in acked.lock().unwrap().iter() {
            let entry = by_seq
                .get(seq)
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} is missing"));
            assert_eq!(entry["prompt_id"], json!(prompt), "round {round}");
            assert_eq!(entry["entry_hash"], json!(hash), "round {round}");
        }
        let report = conn.ok("trace.verify", json!({}));
        assert_eq!(report["valid"], true, "round {round}: {report}");
        conn.ok(
            "decision.record",
            record_params("crash", &format!("after-{round}")),
        );
    }
}
