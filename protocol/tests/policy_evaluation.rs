//! Evaluation against the policy vectors (`tests/vectors/policies/cases.json`, computed by the
//! original evaluator): every case gives the expected rule, action and reply. And evaluation is
//! deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::policy::evaluate::{Evaluator, Event};
use atlasbridge_protocol::policy::load_file;
use proptest::prelude::*;
use serde_json::Value;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/policies")
}

fn cases() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(vectors().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn event(e: &Value) -> Event<'_> {
    let text = |key: &str| e[key].as_str().unwrap_or("");
    Event {
        prompt_text: text("prompt_text"),
        prompt_type: text("prompt_type"),
        confidence: Confidence::normalise(text("confidence")),
        tool_id: text("tool_id"),
        repo: text("repo"),
        session_tag: text("session_tag"),
    }
}

#[test]
fn every_case_gets_the_original_evaluators_decision() {
    let mut checked = 0;
    for (file, list) in cases() {
        if file.starts_with('_') {
            continue;
        }
        let loaded = load_file(&vectors().join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let evaluator = Evaluator::new(loaded.policy).unwrap();
        for case in list.as_array().unwrap() {
            let decision = evaluator.evaluate(&event(&case["event"]));
            let want = &case["expect"];
            let got = (
                decision.matched_rule(),
                decision.action.type_name(),
                decision.action.reply_value(),
            );
            let expected = (
                want["matched_rule"].as_str().unwrap(),
                want["action"].as_str().unwrap(),
                want["reply_value"].as_str().unwrap(),
            );
            assert_eq!(got, expected, "{file}: {}", case["event"]);
            checked += 1;
        }
    }
    assert!(checked >= 1000, "{checked} cases");
}

#[test]
fn explain_stops_at_the_deciding_rule_and_names_what_failed() {
    let loaded = load_file(&vectors().join("v1-any-none.yaml")).unwrap();
    let evaluator = Evaluator::new(loaded.policy).unwrap();
    let e = Event {
        prompt_text: "Delete the branch? [y/n]",
        prompt_type: "yes_no",
        confidence: Confidence::High,
        tool_id: "claude_code",
        repo: "/w",
        session_tag: "",
    };
    let decision = evaluator.evaluate(&e);
    let explained = evaluator.explain(&e);
    assert_eq!(explained[0].rule_id, "routine");
    assert!(!explained[0].matched);
    assert!(
        explained[0].detail.starts_with("none_of"),
        "{}",
        explained[0].detail
    );
    assert_eq!(
        explained.last().map(|r| r.matched),
        Some(decision.rule.is_some())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluation_is_deterministic(
        text in "\\PC{0,80}",
        prompt_type in prop::sample::select(vec!["yes_no", "confirm_enter", "multiple_choice", "free_text", "other"]),
        confidence in prop::sample::select(vec!["high", "medium", "low", "bogus"]),
        tool in prop::sample::select(vec!["*", "claude_code", "gemini_cli"]),
        tag in prop::sample::select(vec!["", "ci", "prod"]),
    ) {
        for file in ["v0-basic.yaml", "v0-guarded.yaml", "v1-any-none.yaml", "v1-child.yaml", "v1-tags.yaml"] {
            let loaded = load_file(&vectors().join(file)).unwrap();
            let evaluator = Evaluator::new(loaded.policy.clone()).unwrap();
            let again = Evaluator::new(loaded.policy).unwrap();
            let e = Event { prompt_text: &text, prompt_type, confidence: Confidence::normalise(confidence), tool_id: tool, repo: "/w", session_tag: tag };
            let a = evaluator.evaluate(&e);
            let b = again.evaluate(&e);
            prop_assert_eq!(a.matched_rule(), b.matched_rule());
            prop_assert_eq!(&a.action, &b.action);
            prop_assert_eq!(evaluator.evaluate(&e).action, a.action);
        }
    }
}
