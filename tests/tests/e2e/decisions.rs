//! `decision.evaluate` end to end: the policy decides, the answer is durable in the trace before
//! it is sent, repeats are idempotent across restarts, caps survive restarts, a broken reload
//! keeps the old policy, and many agents at once each get exactly one entry.

use rustix::process::Signal;
use serde_json::{Value, json};

use crate::support::{Options, TestDaemon, eventually, with_policy};

const FULL: &str = r#"policy_version: "1"
name: e2e-full
autonomy_mode: full
rules:
  - id: deny-delete
    match:
      contains: delete
    action:
      type: deny
      reason: never delete
  - id: yes
    match:
      prompt_type: [yes_no]
      min_confidence: high
    action:
      type: auto_reply
      value: "y"
    max_auto_replies: 2
defaults:
  no_match: require_human
  low_confidence: deny
"#;

fn event(session: &str, prompt: &str, text: &str) -> Value {
    json!({
        "session_id": session,
        "prompt_id": prompt,
        "prompt_type": "yes_no",
        "prompt_text": text,
        "confidence": "high",
        "tool_id": "claude_code",
        "branch": "feature/x",
    })
}

#[test]
fn without_a_policy_file_the_built_in_default_asks_a_person() {
    let daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let mut conn = daemon.conn();
    let answer = conn.ok("decision.evaluate", event("s", "p", "Continue? [y/n]"));
    assert_eq!(answer["action"], "require_human", "{answer}");
    assert_eq!(answer["matched_rule"], "default-require-human");
    assert_eq!(answer["autonomy_mode"], "assist");
    let status = conn.ok("policy.status", json!({}));
    assert_eq!(status["name"], "safe-default");
    assert_eq!(status["source"], Value::Null);
    let entry = &conn.ok("trace.read", json!({"from_seq": 0}))["entries"][0];
    assert_eq!(entry["seq"], answer["seq"]);
    assert_eq!(entry["policy_hash"], status["policy_hash"]);
    assert!(
        entry.get("prompt_text").is_none(),
        "prompt text is never stored"
    );
}

#[test]
fn the_policy_decides_and_the_entry_is_in_the_trace_before_the_answer() {
    let daemon = with_policy("pro", FULL, "");
    let mut conn = daemon.conn();
    let yes = conn.ok("decision.evaluate", event("s", "p1", "Continue? [y/n]"));
    assert_eq!(
        (
            yes["action"].clone(),
            yes["reply_value"].clone(),
            yes["matched_rule"].clone()
        ),
        (json!("auto_reply"), json!("y"), json!("yes")),
        "{yes}"
    );
    assert_eq!(yes["risk_level"], "low");
    let head = conn.ok("trace.head", json!({}));
    assert_eq!(head["seq"], yes["seq"], "durable before the answer");
    let denied = conn.ok(
        "decision.evaluate",
        event("s", "p2", "Delete the repo? [y/n]"),
    );
    assert_eq!(
        (denied["action"].clone(), denied["matched_rule"].clone()),
        (json!("deny"), json!("deny-delete"))
    );
    let mut low = event("s", "p3", "Something else");
    low["confidence"] = json!("bogus");
    low["prompt_type"] = json!("free_text");
    let defaulted = conn.ok("decision.evaluate", low);
    assert_eq!(
        (
            defaulted["action"].clone(),
            defaulted["matched_rule"].clone()
        ),
        (json!("deny"), json!("")),
        "low confidence default"
    );
    assert_eq!(conn.ok("trace.verify", json!({}))["valid"], true);
}

#[test]
fn max_auto_replies_is_counted_from_the_trace_across_a_restart() {
    let mut daemon = with_policy("pro", FULL, "");
    let mut conn = daemon.conn();
    for i in 0..2 {
        let answer = conn.ok(
            "decision.evaluate",
            event("s", &format!("p{i}"), "Continue? [y/n]"),
        );
        assert_eq!(answer["action"], "auto_reply");
    }
    let capped = conn.ok("decision.evaluate", event("s", "p2", "Continue? [y/n]"));
    assert_eq!(capped["action"], "require_human", "{capped}");
    assert_eq!(capped["suggested_action"], "auto_reply");
    assert!(
        capped["explanation"]
            .as_str()
            .unwrap()
            .contains("max_auto_replies")
    );
    let other = conn.ok(
        "decision.evaluate",
        event("other-session", "p0", "Continue? [y/n]"),
    );
    assert_eq!(other["action"], "auto_reply", "the cap is per session");
    drop(conn);
    daemon.restart();
    let after = daemon
        .conn()
        .ok("decision.evaluate", event("s", "p3", "Continue? [y/n]"));
    assert_eq!(
        after["action"], "require_human",
        "still capped after a restart: {after}"
    );
}

#[test]
fn a_repeated_idempotency_key_gets_the_first_answer_and_appends_nothing_even_after_a_restart() {
    let mut daemon = with_policy("pro", FULL, "");
    let mut conn = daemon.conn();
    let mut first_event = event("s", "p1", "Continue? [y/n]");
    first_event["idempotency_key"] = json!("k-1");
    let first = conn.ok("decision.evaluate", first_event.clone());
    let again = conn.ok("decision.evaluate", first_event.clone());
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["entry_hash"], first["entry_hash"]);
    assert_eq!(again["repeated"], true);
    // Without a key, the derived one (policy, prompt, session) makes a retry idempotent too.
    let keyless = conn.ok("decision.evaluate", event("s", "p9", "Continue? [y/n]"));
    let keyless_again = conn.ok("decision.evaluate", event("s", "p9", "Continue? [y/n]"));
    assert_eq!(keyless_again["seq"], keyless["seq"]);
    let head = conn.ok("trace.head", json!({}))["seq"].clone();
    drop(conn);
    daemon.restart();
    let mut conn = daemon.conn();
    let after = conn.ok("decision.evaluate", first_event);
    assert_eq!(after["seq"], first["seq"], "{after}");
    assert_eq!(after["action"], first["action"]);
    assert_eq!(
        conn.ok("trace.head", json!({}))["seq"],
        head,
        "nothing appended"
    );
}

#[test]
fn a_broken_reload_keeps_the_active_policy_and_says_why() {
    let daemon = with_policy("pro", FULL, "");
    let mut conn = daemon.conn();
    let before = conn.ok("policy.status", json!({}));
    assert_eq!(before["name"], "e2e-full");
    std::fs::write(
        daemon.sandbox.path("policy.yaml"),
        "policy_version: 1\nrules: [\n",
    )
    .unwrap();
    let refused = conn.err("policy.reload", json!({}));
    assert_eq!(refused["code"], -32602, "{refused}");
    assert!(
        !refused["data"]["errors"].as_array().unwrap().is_empty(),
        "{refused}"
    );
    let after = conn.ok("policy.status", json!({}));
    assert_eq!(after["policy_hash"], before["policy_hash"]);
    assert!(after["last_error"].is_array());
    let still = conn.ok("decision.evaluate", event("s", "p", "Continue? [y/n]"));
    assert_eq!(still["policy_hash"], before["policy_hash"]);
    assert!(
        daemon
            .audit_events()
            .iter()
            .any(|e| e["event_type"] == "policy_load_failed")
    );

    // SIGHUP re-reads the file too; a good file replaces the policy.
    std::fs::write(
        daemon.sandbox.path("policy.yaml"),
        FULL.replace("e2e-full", "e2e-renamed"),
    )
    .unwrap();
    daemon.signal(Signal::HUP);
    eventually("the new policy is active", || {
        daemon.conn().ok("policy.status", json!({}))["name"] == "e2e-renamed"
    });
}

#[test]
fn a_policy_that_does_not_load_at_start_fails_decisions_closed() {
    let daemon = with_policy("pro", "policy_version: 1\n", "");
    let mut conn = daemon.conn();
    let refused = conn.err("decision.evaluate", event("s", "p", "Continue? [y/n]"));
    assert_eq!(refused["code"], -32001, "{refused}");
    assert_eq!(conn.err("policy.status", json!({}))["code"], -32001);
}

#[test]
fn the_risk_threshold_holds_back_a_risky_auto_reply() {
    let daemon = with_policy("pro", FULL, "[risk]\nrequire_human_at = \"critical\"\n");
    let mut conn = daemon.conn();
    let answer = conn.ok(
        "decision.evaluate",
        event("s", "p", "git push --force? [y/n]"),
    );
    assert_eq!(answer["risk_level"], "critical", "{answer}");
    assert_eq!(answer["action"], "require_human");
    assert_eq!(answer["policy_action"], "auto_reply");
    assert_eq!(answer["suggested_action"], "auto_reply");
}

fn two_hundred_concurrent_agents_each_get_exactly_one_entry(durability: &str) {
    let daemon = with_policy(
        "pro",
        FULL,
        &format!("[daemon]\nmax_connections = 512\n\n[trace]\ndurability = \"{durability}\"\n"),
    );
    let socket = daemon.socket();
    let agents: Vec<_> = (0..200)
        .map(|agent| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut conn = crate::support::Conn::open(&socket).unwrap();
                for i in 0..3 {
                    let answer = conn.ok(
                        "decision.evaluate",
                        event(
                            &format!("agent-{agent}"),
                            &format!("p{i}"),
                            "Continue? [y/n]",
                        ),
                    );
                    assert!(answer["seq"].is_u64(), "{answer}");
                }
            })
        })
        .collect();
    for agent in agents {
        agent.join().unwrap();
    }
    let mut conn = daemon.conn();
    let mut seen = std::collections::BTreeSet::new();
    let mut from = 0u64;
    loop {
        let page = conn.ok("trace.read", json!({"from_seq": from, "limit": 1000}));
        for entry in page["entries"].as_array().unwrap() {
            let key = (
                entry["session_id"].as_str().unwrap().to_owned(),
                entry["prompt_id"].as_str().unwrap().to_owned(),
            );
            assert!(seen.insert(key), "twice: {entry}");
        }
        match page["next_seq"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), 600);
    assert_eq!(conn.ok("trace.verify", json!({}))["valid"], true);
}

#[test]
fn two_hundred_concurrent_agents_with_fsync_each_get_exactly_one_entry() {
    two_hundred_concurrent_agents_each_get_exactly_one_entry("fsync");
}

#[test]
fn two_hundred_concurrent_agents_with_batch_each_get_exactly_one_entry() {
    two_hundred_concurrent_agents_each_get_exactly_one_entry("batch");
}

/// In `none` mode appenders write their own entries when the journal is free and queue when it
/// is busy: both paths interleave here.
#[test]
fn two_hundred_concurrent_agents_with_none_each_get_exactly_one_entry() {
    two_hundred_concurrent_agents_each_get_exactly_one_entry("none");
}

#[test]
fn decide_answers_with_its_exit_status() {
    let daemon = with_policy("pro", FULL, "");
    let yes = daemon.cli(&[
        "decide",
        "--session",
        "sh",
        "--prompt",
        "Continue? [y/n]",
        "--type",
        "yes_no",
        "--confidence",
        "high",
    ]);
    yes.assert_code(0);
    assert!(
        yes.stdout
            .starts_with("auto_reply \"y\" (rule yes, risk low)"),
        "{}",
        yes.stdout
    );
    let deny = daemon.cli(&[
        "decide",
        "--session",
        "sh",
        "--prompt",
        "delete it? [y/n]",
        "--json",
    ]);
    deny.assert_code(11);
    assert_eq!(deny.json()["matched_rule"], "deny-delete");
    let ask = daemon.cli(&[
        "decide",
        "--session",
        "sh",
        "--prompt",
        "Name?",
        "--type",
        "free_text",
    ]);
    ask.assert_code(10);
    daemon
        .cli(&[
            "decide",
            "--session",
            "sh",
            "--prompt",
            "x",
            "--type",
            "yesno",
        ])
        .assert_code(1);
    // Each call without --prompt-id is a new decision; with the same key it is the same one.
    let first = daemon.cli(&[
        "decide",
        "--session",
        "k",
        "--prompt",
        "Continue? [y/n]",
        "--idempotency-key",
        "one",
        "--json",
    ]);
    let again = daemon.cli(&[
        "decide",
        "--session",
        "k",
        "--prompt",
        "Continue? [y/n]",
        "--idempotency-key",
        "one",
        "--json",
    ]);
    assert_eq!(first.json()["seq"], again.json()["seq"]);
}

#[test]
fn policy_status_and_reload_from_the_cli() {
    let daemon = with_policy("pro", FULL, "");
    let status = daemon.cli(&["policy", "status", "--json"]);
    status.assert_code(0);
    assert_eq!(status.json()["name"], "e2e-full");
    let other = daemon.sandbox.path("other.yaml");
    std::fs::write(&other, FULL.replace("e2e-full", "other")).unwrap();
    let reloaded = daemon.cli(&["policy", "reload", other.to_str().unwrap()]);
    reloaded.assert_code(0);
    assert!(reloaded.stdout.contains("other"), "{}", reloaded.stdout);
    std::fs::write(&other, "policy_version: 1\n").unwrap();
    let refused = daemon.cli(&["policy", "reload", other.to_str().unwrap()]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("must be a string"),
        "{}",
        refused.stderr
    );
    let still = daemon.cli(&["policy", "status"]);
    still.assert_code(0);
    assert!(
        still.stdout.contains("the last reload failed"),
        "{}",
        still.stdout
    );
}

#[test]
fn a_repeated_record_with_the_same_key_is_stored_once_even_after_a_restart() {
    let mut daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let record = json!({
        "session_id": "s",
        "prompt_id": "p",
        "prompt_type": "yes_no",
        "action_taken": "require_human",
        "human_actor": "alice",
        "idempotency_key": "answer-1",
    });
    let mut conn = daemon.conn();
    let first = conn.ok("decision.record", record.clone());
    let again = conn.ok("decision.record", record.clone());
    assert_eq!(again["seq"], first["seq"]);
    drop(conn);
    daemon.restart();
    let mut conn = daemon.conn();
    assert_eq!(conn.ok("decision.record", record)["seq"], first["seq"]);
    assert_eq!(
        conn.ok("trace.head", json!({}))["seq"],
        first["seq"],
        "appended once"
    );
}

#[test]
fn with_trace_v2_off_an_evaluated_decision_goes_to_the_v1_file() {
    let daemon = with_policy("community", FULL, "");
    let answer = daemon
        .conn()
        .ok("decision.evaluate", event("s", "p1", "Continue? [y/n]"));
    assert_eq!(answer["action"], "auto_reply", "{answer}");
    assert_eq!(answer["seq"], Value::Null, "no v2 entry");
    let v1 = std::fs::read_to_string(daemon.sandbox.data_dir().join("autopilot_decisions.jsonl"))
        .unwrap();
    let record: Value = serde_json::from_str(v1.lines().next().unwrap()).unwrap();
    assert_eq!(record["matched_rule_id"], "yes");
    assert_eq!(record["action_type"], "auto_reply");
    assert_eq!(record["action_value"], "y");
    assert_eq!(record["policy_hash"], answer["policy_hash"]);
    assert_eq!(record["autonomy_mode"], "full");
}
