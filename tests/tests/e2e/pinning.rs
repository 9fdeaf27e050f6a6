//! Policy pinning end to end: a pinned session keeps its policy version while the active policy
//! changes, a session pin beats an agent pin, a mismatched expectation is -32002, pins survive a
//! restart, and every pin and unpin is audited.

use serde_json::{Value, json};

use crate::support::{TestDaemon, with_policy};

fn policy(reply: &str) -> String {
    format!(
        "policy_version: \"1\"\nname: pin-{reply}\nautonomy_mode: full\nrules:\n  - id: yes\n    match:\n      prompt_type: [yes_no]\n    action:\n      type: auto_reply\n      value: \"{reply}\"\n"
    )
}

fn evaluate(daemon: &TestDaemon, session: &str, agent: &str) -> Value {
    daemon.conn().ok(
        "decision.evaluate",
        json!({"session_id": session, "prompt_id": format!("p-{}", rand_id()), "prompt_type": "yes_no", "confidence": "high", "agent_id": agent}),
    )
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn a_pinned_session_keeps_its_version_while_the_active_policy_changes() {
    let mut daemon = with_policy("pro", &policy("y"), "");
    let file = daemon.sandbox.path("policy.yaml");
    let pinned = daemon.cli(&[
        "policy",
        "pin",
        file.to_str().unwrap(),
        "--session",
        "s1",
        "--json",
    ]);
    pinned.assert_code(0);
    let old_hash = pinned.json()["policy_hash"].as_str().unwrap().to_owned();

    std::fs::write(&file, policy("n")).unwrap();
    daemon.cli(&["policy", "reload"]).assert_code(0);
    let new_hash = daemon.conn().ok("policy.status", json!({}))["policy_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_hash, old_hash);

    let s1 = evaluate(&daemon, "s1", "claude");
    assert_eq!(
        (
            s1["policy_hash"].as_str().unwrap(),
            s1["reply_value"].as_str().unwrap()
        ),
        (old_hash.as_str(), "y")
    );
    let s2 = evaluate(&daemon, "s2", "claude");
    assert_eq!(
        (
            s2["policy_hash"].as_str().unwrap(),
            s2["reply_value"].as_str().unwrap()
        ),
        (new_hash.as_str(), "n")
    );

    let conflict = daemon.conn().err(
        "decision.evaluate",
        json!({"session_id": "s1", "prompt_id": "c", "prompt_type": "yes_no", "policy_hash": new_hash}),
    );
    assert_eq!(conflict["code"], -32002, "{conflict}");

    // An agent pin applies to the agent's other sessions; the session pin still wins.
    daemon
        .cli(&["policy", "pin", &old_hash, "--agent", "claude"])
        .assert_code(0);
    assert_eq!(
        evaluate(&daemon, "s3", "claude")["policy_hash"],
        old_hash.as_str()
    );
    assert_eq!(
        evaluate(&daemon, "s3", "gemini")["policy_hash"],
        new_hash.as_str()
    );

    let versions = daemon.cli(&["policy", "versions", "--json"]);
    versions.assert_code(0);
    assert_eq!(versions.json()["versions"].as_array().unwrap().len(), 2);

    daemon.restart();
    assert_eq!(
        evaluate(&daemon, "s1", "x")["policy_hash"],
        old_hash.as_str(),
        "pins survive a restart"
    );
    let pins = daemon.cli(&["policy", "pins", "--json"]);
    assert_eq!(pins.json()["pins"].as_array().unwrap().len(), 2);

    daemon
        .cli(&["policy", "unpin", "--session", "s1"])
        .assert_code(0);
    daemon
        .cli(&["policy", "unpin", "--agent", "claude"])
        .assert_code(0);
    assert_eq!(
        evaluate(&daemon, "s1", "claude")["policy_hash"],
        new_hash.as_str()
    );

    let events: Vec<Value> = daemon.conn().ok("audit.read", json!({"limit": 1000}))["entries"]
        .as_array()
        .unwrap()
        .clone();
    let count = |kind: &str| events.iter().filter(|e| e["event_type"] == kind).count();
    assert_eq!((count("policy_pinned"), count("policy_unpinned")), (2, 2));
}

#[test]
fn pinning_an_unknown_hash_is_refused_and_the_feature_gates_it() {
    let daemon = with_policy("pro", &policy("y"), "");
    let out = daemon.cli(&["policy", "pin", &"0".repeat(64), "--agent", "a"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("no stored policy version"),
        "{}",
        out.stderr
    );
    daemon.cli(&["policy", "pin", "x"]).assert_code(2);

    let community = with_policy("community", &policy("y"), "");
    let file = community.sandbox.path("policy.yaml");
    community
        .cli(&["policy", "pin", file.to_str().unwrap(), "--agent", "a"])
        .assert_code(3);
}
