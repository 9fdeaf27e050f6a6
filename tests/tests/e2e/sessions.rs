//! Sessions end to end: an agent registers its session once, its events inherit the fields they
//! do not give themselves (for matching and in the trace entry), the daemon counts live sessions
//! and each session's decisions, and start and end are audit events.

use serde_json::{Value, json};

use crate::support::{TestDaemon, with_policy};

/// Only a `ci` session gets automatic answers.
const CI_ONLY: &str = r#"policy_version: "1"
name: e2e-sessions
autonomy_mode: full
rules:
  - id: ci-yes
    match:
      session_tag: ci
      prompt_type: [yes_no]
    action:
      type: auto_reply
      value: "y"
defaults:
  no_match: require_human
  low_confidence: deny
"#;

/// An event that gives nothing but what it must.
fn bare(session: &str, prompt: &str) -> Value {
    json!({
        "session_id": session,
        "prompt_id": prompt,
        "prompt_type": "yes_no",
        "prompt_text": "Continue? [y/n]",
        "confidence": "high",
    })
}

fn entry_at(daemon: &TestDaemon, seq: &Value) -> Value {
    let mut conn = daemon.conn();
    conn.ok("trace.read", json!({"from_seq": seq, "limit": 1}))["entries"][0].clone()
}

fn audit_types(daemon: &TestDaemon) -> Vec<String> {
    daemon
        .audit_events()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn events_inherit_the_registered_session_and_their_own_values_win() {
    let daemon = with_policy("pro", CI_ONLY, "");
    let mut conn = daemon.conn();
    assert_eq!(conn.ok("daemon.status", json!({}))["sessions"], 0);
    let unregistered = conn.ok("decision.evaluate", bare("build-1", "p0"));
    assert_eq!(unregistered["action"], "require_human", "{unregistered}");

    let started = conn.ok(
        "session.start",
        json!({
            "session_id": "build-1",
            "agent_id": "ci-agent",
            "tool_id": "claude_code",
            "branch": "release/1",
            "ci_status": "passing",
            "session_tags": ["ci"],
        }),
    );
    assert_eq!(started["session_id"], "build-1", "{started}");
    assert_eq!(started["session_tags"], json!(["ci"]));
    assert_eq!(started["decisions"], 0);
    assert!(started["started_at"].is_string());
    conn.ok("session.start", json!({"session_id": "other"}));
    assert_eq!(conn.ok("daemon.status", json!({}))["sessions"], 2);

    // No tags, no branch: the session's are used, for matching and in the entry.
    let inherited = conn.ok("decision.evaluate", bare("build-1", "p1"));
    assert_eq!(
        (
            inherited["action"].clone(),
            inherited["matched_rule"].clone()
        ),
        (json!("auto_reply"), json!("ci-yes")),
        "{inherited}"
    );
    let entry = entry_at(&daemon, &inherited["seq"]);
    assert_eq!(entry["branch"], "release/1", "{entry}");
    assert_eq!(entry["agent_id"], "ci-agent");
    assert_eq!(entry["ci_status_snapshot"], "passing");

    // The event's own values win.
    let mut own = bare("build-1", "p2");
    own["branch"] = json!("hotfix/2");
    own["session_tags"] = json!(["interactive"]);
    let overridden = conn.ok("decision.evaluate", own);
    assert_eq!(overridden["action"], "require_human", "{overridden}");
    let entry = entry_at(&daemon, &overridden["seq"]);
    assert_eq!(entry["branch"], "hotfix/2", "{entry}");
    assert_eq!(
        entry["agent_id"], "ci-agent",
        "what it did not give is inherited"
    );

    let shown = conn.ok("session.show", json!({"session_id": "build-1"}));
    assert_eq!(shown["decisions"], 2, "{shown}");
    assert_eq!(shown["branch"], "release/1");
    let list = conn.ok("session.list", json!({}));
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["build-1", "other"], "{list}");

    // A re-start updates what it gives and keeps the rest.
    let renewed = conn.ok(
        "session.start",
        json!({"session_id": "build-1", "branch": "release/2"}),
    );
    assert_eq!(renewed["branch"], "release/2", "{renewed}");
    assert_eq!(renewed["session_tags"], json!(["ci"]));
    assert_eq!(renewed["started_at"], started["started_at"]);
    assert_eq!(renewed["decisions"], 2);
    assert_eq!(conn.ok("daemon.status", json!({}))["sessions"], 2);

    let ended = conn.ok("session.end", json!({"session_id": "build-1"}));
    assert_eq!(ended["decisions"], 2, "{ended}");
    assert_eq!(conn.ok("daemon.status", json!({}))["sessions"], 1);
    let after = conn.ok("decision.evaluate", bare("build-1", "p3"));
    assert_eq!(
        after["action"], "require_human",
        "nothing inherited: {after}"
    );

    for (method, params) in [
        ("session.end", json!({"session_id": "build-1"})),
        ("session.show", json!({"session_id": "build-1"})),
    ] {
        let refused = conn.err(method, params);
        assert_eq!(refused["code"], -32602, "{method}: {refused}");
        assert_eq!(refused["data"]["field"], "session_id");
    }
    let unknown = conn.err("session.start", json!({"session_id": "x", "colour": "red"}));
    assert_eq!(unknown["code"], -32602, "{unknown}");
    let empty = conn.err("session.start", json!({"session_id": ""}));
    assert_eq!(empty["data"]["field"], "session_id", "{empty}");

    let types = audit_types(&daemon);
    let count = |t: &str| types.iter().filter(|e| *e == t).count();
    assert_eq!(count("session_started"), 3, "{types:?}");
    assert_eq!(count("session_ended"), 1, "{types:?}");
    assert_eq!(conn.ok("trace.verify", json!({}))["valid"], true);
}

#[test]
fn sessions_from_the_cli() {
    let daemon = with_policy("pro", CI_ONLY, "");
    let started = daemon.cli(&[
        "session", "start", "cli-1", "--agent", "a", "--branch", "main", "--tag", "ci",
    ]);
    started.assert_code(0);
    assert!(
        started.stdout.starts_with("session cli-1 started"),
        "{}",
        started.stdout
    );
    daemon
        .cli(&[
            "decide",
            "--session",
            "cli-1",
            "--prompt",
            "Continue? [y/n]",
        ])
        .assert_code(0);
    let list = daemon.cli(&["session", "list"]);
    list.assert_code(0);
    assert!(list.stdout.starts_with("SESSION"), "{}", list.stdout);
    assert!(list.stdout.contains("cli-1"), "{}", list.stdout);
    let shown = daemon.cli(&["session", "show", "cli-1", "--json"]);
    shown.assert_code(0);
    let shown = shown.json();
    assert_eq!(shown["branch"], "main");
    assert_eq!(shown["decisions"], 1);
    assert!(
        shown["repo"].is_string(),
        "the current directory by default"
    );
    let ended = daemon.cli(&["session", "end", "cli-1"]);
    ended.assert_code(0);
    assert_eq!(ended.stdout.trim(), "session cli-1 ended after 1 decisions");
    let missing = daemon.cli(&["session", "show", "cli-1"]);
    missing.assert_code(1);
    assert!(
        missing.stderr.contains("no live session 'cli-1'"),
        "{}",
        missing.stderr
    );
    let none = daemon.cli(&["session", "list"]);
    none.assert_code(0);
    assert_eq!(none.stdout.trim(), "no live sessions");
}

#[test]
fn recorded_decisions_inherit_the_session_too() {
    let daemon = with_policy("pro", CI_ONLY, "");
    let mut conn = daemon.conn();
    conn.ok(
        "session.start",
        json!({"session_id": "rec", "agent_id": "claude-code", "branch": "main", "ci_status": "failing"}),
    );
    let result = conn.ok(
        "decision.record",
        json!({
            "session_id": "rec",
            "prompt_id": "p",
            "prompt_type": "yes_no",
            "action_taken": "require_human",
            "human_actor": "alice",
        }),
    );
    let entry = entry_at(&daemon, &result["seq"]);
    assert_eq!(entry["agent_id"], "claude-code", "{entry}");
    assert_eq!(entry["branch"], "main");
    assert_eq!(entry["ci_status_snapshot"], "failing");
    let shown = conn.ok("session.show", json!({"session_id": "rec"}));
    assert_eq!(shown["decisions"], 1, "{shown}");
}
