//! `atlasbridge risk assess`: the classifier run locally by the real CLI, gated by
//! `risk_classifier` like every other pro feature.

use serde_json::json;

use crate::support::{Options, Sandbox, TestDaemon};

/// A pro sandbox with no daemon: the command must not need one.
fn pro() -> TestDaemon {
    TestDaemon::unstarted(Sandbox::new(), Options::default().edition("pro"))
}

const DESTRUCTIVE: [&str; 11] = [
    "risk",
    "assess",
    "--action",
    "auto_reply",
    "--type",
    "yes_no",
    "--confidence",
    "high",
    "--prompt",
    "git push --force origin main? [y/n]",
    "--json",
];

#[test]
fn a_destructive_auto_reply_is_critical() {
    let out = pro().cli(&DESTRUCTIVE);
    out.assert_code(0);
    assert_eq!(
        out.json(),
        json!({
            "risk_level": "critical",
            "risk_reasons": ["auto_reply on a destructive command"],
        })
    );
}

#[test]
fn human_output_gives_the_level_then_one_reason_per_line() {
    let daemon = pro();
    let out = daemon.cli(&DESTRUCTIVE[..DESTRUCTIVE.len() - 1]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "critical: auto_reply on a destructive command\n"
    );

    let out = daemon.cli(&[
        "risk",
        "assess",
        "--action",
        "auto_reply",
        "--type",
        "free_text",
        "--confidence",
        "bogus",
        "--branch",
        " Release/2.0 ",
        "--tag",
        "other",
        "--tag",
        "safe_session",
    ]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "medium: auto_reply on free_text prompt\n\
         \x20       auto_reply with low confidence\n\
         \x20       session tag safe_session\n"
    );
}

#[test]
fn an_unknown_prompt_type_or_action_is_refused_naming_the_valid_ones() {
    let daemon = pro();
    let out = daemon.cli(&[
        "risk",
        "assess",
        "--action",
        "auto_reply",
        "--type",
        "yesno",
        "--confidence",
        "high",
    ]);
    out.assert_code(1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("yes_no, confirm_enter, multiple_choice, free_text"),
        "{}",
        out.stderr
    );

    let out = daemon.cli(&[
        "--json",
        "risk",
        "assess",
        "--action",
        "reply",
        "--type",
        "yes_no",
        "--confidence",
        "high",
    ]);
    out.assert_code(1);
    let message = out.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("auto_reply, require_human, deny, notify_only"),
        "{message}"
    );
}

#[test]
fn in_the_community_edition_the_command_is_disabled() {
    let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default());
    let out = daemon.cli(&DESTRUCTIVE);
    out.assert_code(3);
    assert_eq!(out.json()["error"]["kind"], "feature_disabled");
    assert!(
        out.stderr
            .contains("ATLASBRIDGE_FEATURE_RISK_CLASSIFIER=on"),
        "{}",
        out.stderr
    );

    // The flag alone turns it on, whatever the edition.
    daemon
        .cli_with(
            &DESTRUCTIVE,
            &[("ATLASBRIDGE_FEATURE_RISK_CLASSIFIER", "on")],
        )
        .assert_code(0);
}

#[test]
fn recorded_decisions_carry_the_risk_verdict_when_the_classifier_is_on() {
    let daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let mut conn = daemon.conn();
    let params = json!({
        "session_id": "s",
        "prompt_id": "p",
        "prompt_type": "yes_no",
        "confidence": "high",
        "prompt_text": "Run git reset --hard? [y/n]",
        "action_taken": "auto_reply",
        "reply_value": "y",
        "branch": "main",
    });
    let result = conn.ok("decision.record", params.clone());
    assert_eq!(result["risk_level"], "critical", "{result}");
    let entry = &conn.ok("trace.read", json!({"from_seq": 0}))["entries"][0];
    assert_eq!(entry["risk_level"], "critical");
    assert_eq!(
        entry["risk_reasons"],
        json!(["auto_reply on a destructive command"])
    );
    assert!(
        entry.get("prompt_text").is_none(),
        "the prompt text is never stored"
    );

    let community = TestDaemon::start();
    let result = community.conn().ok("decision.record", params);
    assert_eq!(result["risk_level"], "", "off in community: {result}");
}
