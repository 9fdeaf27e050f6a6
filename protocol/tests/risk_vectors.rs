//! The risk classifier contract vectors (`tests/vectors/risk/cases.json`, copied from the shared
//! vectors): every case gives exactly the level and reasons it expects, and as the same JSON
//! object; and, over generated inputs, classification is deterministic and always explains
//! itself.

// A test fails by panicking; in its helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::risk::{
    ACTIONS, CI_STATUSES, PROMPT_TYPES, RiskAssessment, RiskInput, RiskLevel, classify,
};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::Value;

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/risk/cases.json"
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "_about")]
    _about: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    input: Input,
    expect: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    action: String,
    prompt_type: String,
    confidence: String,
    prompt_text: String,
    branch: String,
    ci_status: String,
    session_tags: Vec<String>,
}

impl Input {
    fn classify(&self) -> RiskAssessment {
        classify(&RiskInput {
            action: &self.action,
            prompt_type: &self.prompt_type,
            confidence: Confidence::normalise(&self.confidence),
            prompt_text: &self.prompt_text,
            branch: &self.branch,
            ci_status: &self.ci_status,
            session_tags: &self.session_tags,
        })
    }

    /// The same values in new allocations.
    fn rebuilt(&self) -> Input {
        let text = |s: &String| s.chars().collect::<String>();
        Input {
            action: text(&self.action),
            prompt_type: text(&self.prompt_type),
            confidence: text(&self.confidence),
            prompt_text: text(&self.prompt_text),
            branch: text(&self.branch),
            ci_status: text(&self.ci_status),
            session_tags: self.session_tags.iter().map(text).collect(),
        }
    }
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(CASES).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    let file: File = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    assert!(!file.cases.is_empty(), "{CASES} has no cases");
    file.cases
}

#[test]
fn every_vector_gives_its_level_and_reasons() {
    let cases = cases();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let expected: RiskAssessment = serde_json::from_value(case.expect.clone())
            .unwrap_or_else(|e| panic!("case {i}: expect: {e}"));
        let actual = case.input.classify();
        // Also as JSON: the object a client reads, field names included.
        if actual != expected || serde_json::to_value(&actual).unwrap() != case.expect {
            failures.push(format!(
                "case {i}: {:?}\n  expected {expected:?}\n  got      {actual:?}",
                case.input
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors disagree; the first ones:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_vectors_reach_every_level() {
    let levels: std::collections::BTreeSet<RiskLevel> = cases()
        .iter()
        .map(|c| serde_json::from_value::<RiskAssessment>(c.expect.clone()).unwrap())
        .map(|a| a.level)
        .collect();
    assert_eq!(
        levels.into_iter().collect::<Vec<_>>(),
        RiskLevel::ALL.to_vec()
    );
}

/// Every reason the classifier can give.
const REASONS: [&str; 10] = [
    "auto_reply on a destructive command",
    "auto_reply on protected branch with failing CI",
    "auto_reply on free_text prompt",
    "auto_reply with low confidence",
    "auto_reply on protected branch",
    "auto_reply with medium confidence",
    "notify_only: nothing is answered",
    "no risk factors detected",
    "session tag critical_session",
    "session tag safe_session",
];

/// One of `known`, or any short string: the table must hold for values outside the vocabulary
/// too.
fn word(known: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::sample::select(known).prop_map(str::to_owned),
        1 => "[ -~]{0,12}",
    ]
    .boxed()
}

fn input() -> impl Strategy<Value = Input> {
    static CONFIDENCES: [&str; 6] = ["high", "HIGH", "medium", "med", "low", "bogus"];
    static TEXTS: [&str; 5] = [
        "Continue? [y/n]",
        "Run rm -rf build/? [y/n]",
        "git push --force origin main? [y/n]",
        "DROP TABLE users;",
        "Reboot now?",
    ];
    static BRANCHES: [&str; 7] = [
        "",
        "main",
        " Release/2.0 ",
        "release/x",
        "production",
        "feature/foo",
        "mainline",
    ];
    static TAGS: [&str; 3] = ["critical_session", "safe_session", "other"];
    (
        word(&ACTIONS),
        word(&PROMPT_TYPES),
        word(&CONFIDENCES),
        (word(&TEXTS), "[ -~]{0,8}").prop_map(|(text, noise)| format!("{noise}{text}")),
        word(&BRANCHES),
        word(&CI_STATUSES),
        proptest::collection::vec(word(&TAGS), 0..4),
    )
        .prop_map(
            |(action, prompt_type, confidence, prompt_text, branch, ci_status, session_tags)| {
                Input {
                    action,
                    prompt_type,
                    confidence,
                    prompt_text,
                    branch,
                    ci_status,
                    session_tags,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn classification_is_deterministic_and_explained(input in input()) {
        let first = input.classify();
        // Fresh copies of the inputs: only their values may matter, not where they live.
        let again = input.rebuilt().classify();
        prop_assert_eq!(&first, &again);
        prop_assert_eq!(&first, &input.classify());

        prop_assert!(!first.reasons.is_empty());
        for reason in &first.reasons {
            prop_assert!(REASONS.contains(&reason.as_str()), "unknown reason {reason:?}");
        }
        let tag_reasons = first.reasons.iter().filter(|r| r.starts_with("session tag")).count();
        prop_assert!(tag_reasons <= 1);
        prop_assert!(first.reasons.len() > tag_reasons, "a table row always fires");
        if tag_reasons == 1 {
            prop_assert!(first.reasons.last().unwrap().starts_with("session tag"));
        }
        if input.session_tags.iter().any(|t| t == "critical_session") {
            prop_assert!(first.level >= RiskLevel::High);
        } else if input.session_tags.iter().any(|t| t == "safe_session") {
            prop_assert!(first.level <= RiskLevel::Medium);
        }
        if input.action != "auto_reply" && tag_reasons == 0 {
            prop_assert!(first.level <= RiskLevel::Low);
        }
    }
}
