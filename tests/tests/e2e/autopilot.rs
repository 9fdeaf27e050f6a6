//! The kill switch end to end: pause and stop hold every answer back as `require_human` while
//! the decision is still evaluated and recorded with the policy's own action; resume gives the
//! policy back; a stop lasts until the daemon restarts; every transition is an audit event.

use serde_json::{Value, json};

use crate::support::{TestDaemon, YES_AND_DENY_DELETE, with_policy};

fn event(session: &str, prompt: &str, text: &str) -> Value {
    json!({
        "session_id": session,
        "prompt_id": prompt,
        "prompt_type": "yes_no",
        "prompt_text": text,
        "confidence": "high",
    })
}

/// The autopilot events of the audit log, in order, as `(event_type, from, to)`.
fn transitions(daemon: &TestDaemon) -> Vec<(String, String, String)> {
    daemon
        .audit_events()
        .iter()
        .filter(|e| {
            e["event_type"]
                .as_str()
                .is_some_and(|t| t.starts_with("autopilot_"))
        })
        .map(|e| {
            (
                e["event_type"].as_str().unwrap().to_owned(),
                e["details"]["from"].as_str().unwrap().to_owned(),
                e["details"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn entry_at(daemon: &TestDaemon, seq: &Value) -> Value {
    let mut conn = daemon.conn();
    let page = conn.ok("trace.read", json!({"from_seq": seq, "limit": 1}));
    page["entries"][0].clone()
}

#[test]
fn pause_holds_answers_back_resume_gives_them_back_and_both_are_audited() {
    let daemon = with_policy("pro", YES_AND_DENY_DELETE, "");
    let mut conn = daemon.conn();
    let status = conn.ok("autopilot.status", json!({}));
    assert_eq!(status["state"], "running", "{status}");
    assert!(status.get("changed_by").is_none(), "{status}");
    let before = conn.ok("decision.evaluate", event("s", "p1", "Continue? [y/n]"));
    assert_eq!(before["action"], "auto_reply");

    let paused = conn.ok("autopilot.pause", json!({}));
    assert_eq!(paused["state"], "paused", "{paused}");
    assert!(
        paused["changed_by"].as_str().unwrap().starts_with("uid "),
        "{paused}"
    );
    let held = conn.ok("decision.evaluate", event("s", "p2", "Continue? [y/n]"));
    assert_eq!(held["action"], "require_human", "{held}");
    assert_eq!(held["reply_value"], "");
    assert_eq!(held["suggested_action"], "auto_reply");
    assert_eq!(held["policy_action"], "auto_reply");
    assert_eq!(
        held["matched_rule"], "yes",
        "the policy was still evaluated"
    );
    assert_eq!(held["explanation"], "autopilot paused: a person decides");
    let entry = entry_at(&daemon, &held["seq"]);
    assert_eq!(entry["policy_action"], "auto_reply", "{entry}");
    assert_eq!(entry["action_taken"], "require_human", "{entry}");
    assert_eq!(entry["reply_value"], "");
    // A deny is held back too: while paused, a person decides everything.
    let deny = conn.ok("decision.evaluate", event("s", "p3", "delete it? [y/n]"));
    assert_eq!(
        (deny["action"].clone(), deny["suggested_action"].clone()),
        (json!("require_human"), json!("deny")),
        "{deny}"
    );

    // Pausing again changes nothing and records nothing.
    let again = conn.ok("autopilot.pause", json!({}));
    assert_eq!(again, paused, "the same state, since and author");

    let resumed = conn.ok("autopilot.resume", json!({}));
    assert_eq!(resumed["state"], "running", "{resumed}");
    let after = conn.ok("decision.evaluate", event("s", "p4", "Continue? [y/n]"));
    assert_eq!(after["action"], "auto_reply", "{after}");
    assert!(after.get("suggested_action").is_none(), "{after}");
    assert_eq!(
        conn.ok("autopilot.resume", json!({}))["since"],
        resumed["since"],
        "resuming a running autopilot changes nothing"
    );

    assert_eq!(
        transitions(&daemon),
        [
            ("autopilot_paused".into(), "running".into(), "paused".into()),
            (
                "autopilot_resumed".into(),
                "paused".into(),
                "running".into()
            ),
        ]
    );
    let paused_event = daemon
        .audit_events()
        .into_iter()
        .find(|e| e["event_type"] == "autopilot_paused")
        .unwrap();
    assert!(paused_event["actor"]["uid"].is_u64(), "{paused_event}");
    assert_eq!(conn.ok("trace.verify", json!({}))["valid"], true);
    assert_eq!(conn.ok("audit.verify", json!({}))["valid"], true);
}

#[test]
fn stop_holds_answers_back_until_the_daemon_restarts() {
    let mut daemon = with_policy("pro", YES_AND_DENY_DELETE, "");
    let mut conn = daemon.conn();
    conn.ok("autopilot.pause", json!({}));
    let stopped = conn.ok("autopilot.stop", json!({}));
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let held = conn.ok("decision.evaluate", event("s", "p1", "Continue? [y/n]"));
    assert_eq!(held["action"], "require_human", "{held}");
    assert_eq!(held["suggested_action"], "auto_reply");
    assert!(
        held["explanation"]
            .as_str()
            .unwrap()
            .starts_with("autopilot stopped:"),
        "{held}"
    );
    let entry = entry_at(&daemon, &held["seq"]);
    assert_eq!(
        (
            entry["policy_action"].clone(),
            entry["action_taken"].clone()
        ),
        (json!("auto_reply"), json!("require_human"))
    );

    for method in ["autopilot.resume", "autopilot.pause"] {
        let refused = conn.err(method, json!({}));
        assert_eq!(refused["code"], -32602, "{method}: {refused}");
        assert_eq!(
            refused["message"], "the autopilot is stopped until the daemon restarts",
            "{method}"
        );
    }
    assert_eq!(
        conn.ok("autopilot.stop", json!({})),
        stopped,
        "stopping again changes nothing"
    );
    assert_eq!(
        conn.err("autopilot.stop", json!({"now": true}))["data"]["field"],
        "now"
    );
    assert_eq!(
        transitions(&daemon),
        [
            ("autopilot_paused".into(), "running".into(), "paused".into()),
            (
                "autopilot_stopped".into(),
                "paused".into(),
                "stopped".into()
            ),
        ],
        "refusals and no-ops record nothing"
    );

    let status = daemon.cli(&["autopilot", "status"]);
    status.assert_code(0);
    assert!(
        status.stdout.starts_with("autopilot stopped since "),
        "{}",
        status.stdout
    );
    let json_status = daemon.cli(&["autopilot", "status", "--json"]);
    json_status.assert_code(0);
    assert_eq!(json_status.json()["state"], "stopped");
    let refused = daemon.cli(&["autopilot", "resume"]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("stopped until the daemon restarts"),
        "{}",
        refused.stderr
    );

    drop(conn);
    daemon.restart();
    let mut conn = daemon.conn();
    assert_eq!(conn.ok("autopilot.status", json!({}))["state"], "running");
    let answer = conn.ok("decision.evaluate", event("s", "p2", "Continue? [y/n]"));
    assert_eq!(answer["action"], "auto_reply", "{answer}");
}

#[test]
fn the_cli_pauses_and_resumes() {
    let daemon = with_policy("pro", YES_AND_DENY_DELETE, "");
    let paused = daemon.cli(&["autopilot", "pause"]);
    paused.assert_code(0);
    assert!(
        paused.stdout.starts_with("autopilot paused since "),
        "{}",
        paused.stdout
    );
    assert!(paused.stdout.contains(" by uid "), "{}", paused.stdout);
    let held = daemon.cli(&["decide", "--session", "sh", "--prompt", "Continue? [y/n]"]);
    held.assert_code(10);
    assert!(
        held.stdout.contains("autopilot paused: a person decides"),
        "{}",
        held.stdout
    );
    let resumed = daemon.cli(&["autopilot", "resume", "--json"]);
    resumed.assert_code(0);
    assert_eq!(resumed.json()["state"], "running");
    daemon
        .cli(&["decide", "--session", "sh", "--prompt", "Continue? [y/n]"])
        .assert_code(0);
    let stopped = daemon.cli(&["autopilot", "stop"]);
    stopped.assert_code(0);
    assert!(
        stopped.stdout.contains("until the daemon restarts"),
        "{}",
        stopped.stdout
    );
}
