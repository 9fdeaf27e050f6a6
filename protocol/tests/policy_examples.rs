//! The example policies shipped in `examples/policies/` load, and decide what their comments
//! say they decide.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::policy::evaluate::{Evaluator, Event};
use atlasbridge_protocol::policy::load_file;

fn example(name: &str) -> Evaluator {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies")
        .join(name);
    let loaded = load_file(&path).unwrap_or_else(|e| panic!("{name}:\n{e}"));
    Evaluator::new(loaded.policy).unwrap()
}

fn decide(
    evaluator: &Evaluator,
    text: &str,
    prompt_type: &str,
    confidence: &str,
    tag: &str,
) -> (String, String) {
    let decision = evaluator.evaluate(&Event {
        prompt_text: text,
        prompt_type,
        confidence: Confidence::normalise(confidence),
        tool_id: "claude_code",
        repo: "/home/me/app",
        session_tag: tag,
    });
    (
        decision.matched_rule().to_owned(),
        decision.action.type_name().to_owned(),
    )
}

fn pair(rule: &str, action: &str) -> (String, String) {
    (rule.to_owned(), action.to_owned())
}

#[test]
fn every_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            load_file(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            loaded += 1;
        }
    }
    assert_eq!(loaded, 3);
}

#[test]
fn safe_default_answers_only_harmless_prompts() {
    let p = example("safe-default.yaml");
    assert_eq!(
        decide(&p, "Continue? [y/n]", "yes_no", "high", ""),
        pair("confident-yes", "auto_reply")
    );
    assert_eq!(
        decide(&p, "Overwrite config? [y/n]", "yes_no", "high", ""),
        pair("", "require_human")
    );
    assert_eq!(
        decide(&p, "Run git push --force? [y/n]", "yes_no", "high", ""),
        pair("deny-destructive", "deny")
    );
    assert_eq!(
        decide(&p, "Press Enter", "confirm_enter", "high", ""),
        pair("press-enter", "auto_reply")
    );
    assert_eq!(
        decide(&p, "Continue? [y/n]", "yes_no", "medium", ""),
        pair("", "require_human")
    );
}

#[test]
fn ci_denies_what_it_does_not_answer() {
    let p = example("ci.yaml");
    assert_eq!(
        decide(&p, "Run the tests? [y/n]", "yes_no", "medium", "ci"),
        pair("ci-yes", "auto_reply")
    );
    assert_eq!(
        decide(&p, "Run the tests? [y/n]", "yes_no", "medium", ""),
        pair("", "deny")
    );
    assert_eq!(
        decide(&p, "Pick one: 1) a 2) b", "multiple_choice", "high", "ci"),
        pair("ci-first-choice", "auto_reply")
    );
    assert_eq!(
        decide(&p, "Describe the change", "free_text", "high", "ci"),
        pair("", "deny")
    );
}

#[test]
fn strict_never_answers() {
    let p = example("strict.yaml");
    assert_eq!(
        decide(&p, "Continue? [y/n]", "yes_no", "high", ""),
        pair("", "require_human")
    );
    assert_eq!(
        decide(&p, "DROP TABLE users? [y/n]", "yes_no", "high", ""),
        pair("strict-deny-destructive", "deny")
    );
    assert_eq!(
        decide(&p, "Commit message?", "free_text", "high", ""),
        pair("strict-ask-free-text", "require_human")
    );
    assert_eq!(
        decide(&p, "Continue? [y/n]", "yes_no", "low", ""),
        pair("", "deny")
    );
}
