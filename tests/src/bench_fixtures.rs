//! What the benchmarks measure on: the events and the generated 1,000-rule policy of the
//! evaluation figures, and a realistic trace entry. Shared by the in-process benches
//! (`benches/in_process.rs`), the socket benchmarks and the report.

use std::path::Path;

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::policy::evaluate::{Evaluator, Event};
use atlasbridge_protocol::policy::{load_file, load_str};
use serde_json::{Map, Value, json};

/// Rules of the generated policy.
pub const GENERATED_RULES: usize = 1_000;

/// The events every policy is measured on: each prompt type, each confidence, destructive and
/// harmless texts, short and long, two tools, with and without the `ci` session tag.
pub fn events() -> Vec<Event<'static>> {
    const LONG: &str = "The agent wants to run the following command in /home/dev/atlas:\n\n  \
        cargo test --workspace --all-features -- --test-threads 2\n\nIt will compile 214 crates \
        and run 1,873 tests; the last run took 3 min 12 s and passed. Output is streamed to the \
        terminal and written to target/test.log. Allow this command to run? [y/n]";
    let event = |prompt_text, prompt_type, confidence, tool_id, session_tag| Event {
        prompt_text,
        prompt_type,
        confidence,
        tool_id,
        repo: "/home/dev/atlas",
        session_tag,
    };
    use Confidence::{High, Low, Medium};
    vec![
        event("Continue? [y/n]", "yes_no", High, "claude-code", ""),
        event(
            "Overwrite the existing config file? [y/n]",
            "yes_no",
            High,
            "claude-code",
            "",
        ),
        event(
            "Run `rm -rf build/` to clean? [y/n]",
            "yes_no",
            High,
            "claude-code",
            "",
        ),
        event(
            "Press Enter to continue",
            "confirm_enter",
            High,
            "claude-code",
            "",
        ),
        event(
            "Press Enter to continue",
            "confirm_enter",
            Medium,
            "codex",
            "ci",
        ),
        event(
            "Which test suite? 1) unit 2) integration 3) all",
            "multiple_choice",
            High,
            "claude-code",
            "ci",
        ),
        event(
            "Enter the commit message:",
            "free_text",
            Medium,
            "claude-code",
            "",
        ),
        event(
            "Apply the migration to the local database? (y/n)",
            "yes_no",
            Medium,
            "codex",
            "",
        ),
        event(
            "Do you want to delete the temporary branch? [y/N]",
            "yes_no",
            High,
            "claude-code",
            "",
        ),
        event(
            "git push --force origin main? [y/n]",
            "yes_no",
            High,
            "codex",
            "ci",
        ),
        event(
            "Install 3 new dependencies? [Y/n]",
            "yes_no",
            Low,
            "claude-code",
            "",
        ),
        event(
            "Select a model: 1) small 2) large",
            "multiple_choice",
            Low,
            "codex",
            "",
        ),
        event(
            "Name of the new module:",
            "free_text",
            High,
            "claude-code",
            "",
        ),
        event(
            "Proceed with the deploy to staging? [y/n]",
            "yes_no",
            High,
            "claude-code",
            "ci",
        ),
        event(
            "Allow network access for this command? [y/n]",
            "yes_no",
            Medium,
            "codex",
            "ci",
        ),
        event(LONG, "yes_no", High, "claude-code", ""),
    ]
}

/// A v1 policy of [`GENERATED_RULES`] rules: plain `contains` texts that no event holds (behind
/// varied prompt types, confidences and tools, so that some rules fail before their text is
/// searched), a regex every 100 rules, `any_of` blocks, two rules a few events reach (rule 200,
/// `staging`; rule 600, `commit message`), and a last rule that catches everything.
pub fn generated_policy() -> String {
    const WORDS: [&str; 12] = [
        "install", "upgrade", "migrate", "format", "publish", "rebase", "download", "compile",
        "restart", "approve", "archive", "rotate",
    ];
    const TYPES: [&str; 6] = [
        "[yes_no]",
        "[yes_no, confirm_enter]",
        "['*']",
        "[multiple_choice]",
        "[free_text, yes_no]",
        "['*']",
    ];
    const CONFIDENCES: [&str; 3] = ["low", "medium", "high"];
    let mut out =
        String::from("policy_version: \"1\"\nname: generated-1000\nautonomy_mode: full\nrules:\n");
    for i in 0..GENERATED_RULES {
        let word = WORDS[i % WORDS.len()];
        let types = TYPES[i % TYPES.len()];
        let confidence = CONFIDENCES[i % CONFIDENCES.len()];
        let rule = match i {
            200 => "    match: {prompt_type: [yes_no], contains: staging}\n    \
                    action: {type: auto_reply, value: \"y\"}\n"
                .to_owned(),
            600 => "    match: {prompt_type: [free_text], contains: commit message}\n    \
                    action: {type: require_human}\n"
                .to_owned(),
            _ if i == GENERATED_RULES - 1 => {
                "    match: {}\n    action: {type: require_human, message: catch-all}\n".to_owned()
            }
            _ if i % 100 == 50 => format!(
                "    match:\n      contains: '({word}|deploy)\\s+to\\s+prod-{i}\\b'\n      \
                 contains_is_regex: true\n    action: {{type: deny, reason: production}}\n"
            ),
            _ if i % 25 == 10 => format!(
                "    match:\n      any_of:\n        \
                 - {{prompt_type: {types}, contains: {word} step {i}}}\n        \
                 - {{prompt_type: {types}, contains: {word} stage {i}}}\n    \
                 action: {{type: notify_only}}\n"
            ),
            _ if i % 10 == 3 => format!(
                "    match: {{tool_id: aider, contains: {word} {i}}}\n    \
                 action: {{type: deny}}\n"
            ),
            _ => format!(
                "    match: {{prompt_type: {types}, min_confidence: {confidence}, \
                 contains: {word} item {i}}}\n    action: {{type: auto_reply, value: \"y\"}}\n"
            ),
        };
        out.push_str(&format!("  - id: r{i:04}\n"));
        out.push_str(&rule);
    }
    out.push_str("defaults:\n  no_match: require_human\n  low_confidence: deny\n");
    out
}

/// The members of a trace entry (all of the trace specification's fields, realistic values)
/// at `seq`, linked to `prev`; [`atlasbridge_protocol::trace::seal`] adds its hash.
pub fn entry_body(seq: u64, prev: &str) -> Map<String, Value> {
    let entry = json!({
        "trace_version": 2,
        "seq": seq,
        "entry_id": format!("0193a1b2-c3d4-7e5f-8a9b-{seq:012x}"),
        "timestamp": "2026-11-24T01:02:00.000000Z",
        "session_id": format!("sess-{}", seq % 97),
        "agent_id": "claude-code",
        "prompt_id": format!("prompt-{seq}"),
        "prompt_type": "yes_no",
        "policy_name": "vector-policy",
        "policy_version": "1",
        "policy_hash": "9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f",
        "matched_rule": "allow-yes-no",
        "autonomy_mode": "full",
        "policy_action": "auto_reply",
        "action_taken": "auto_reply",
        "reply_value": "y",
        "confidence": "high",
        "risk_level": "low",
        "risk_reasons": ["auto_reply with high confidence"],
        "escalation_status": "",
        "human_actor": "",
        "ci_status_snapshot": "passing",
        "branch": "feature/x",
        "idempotency_key": format!("idem-{seq}"),
        "replay_safe": true,
        "prev_hash": prev,
    });
    entry.as_object().cloned().unwrap_or_default()
}

/// The policies of `examples/policies/` and the generated 1,000-rule one, by name, fewest rules
/// first.
///
/// # Errors
/// Which policy file could not be read or loaded, and why.
pub fn policies() -> Result<Vec<(String, Evaluator)>, String> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let entries =
        std::fs::read_dir(&examples).map_err(|e| format!("{}: {e}", examples.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{}: {e}", examples.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    let mut loaded = files
        .iter()
        .map(|file| load_file(file).map_err(|e| format!("{}: {e}", file.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let generated = Path::new("generated-1000.yaml");
    loaded.push(load_str(&generated_policy(), generated).map_err(|e| format!("generated: {e}"))?);
    let mut policies = loaded
        .into_iter()
        .map(|loaded| {
            let name = loaded.policy.name.clone();
            Evaluator::new(loaded.policy)
                .map(|evaluator| (name, evaluator))
                .map_err(|e| format!("a pattern of a benchmark policy: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    policies.sort_by_key(|(_, evaluator)| evaluator.policy().rules.len());
    Ok(policies)
}
