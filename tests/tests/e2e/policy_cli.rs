//! `atlasbridge policy validate|test|hash|diff`: the policy language's commands, run by the real
//! CLI on the example policies and the test vectors, with no daemon. `hash` and `diff` are
//! gated by `policy_lifecycle`; `validate` and `test` are not.

use serde_json::json;

use crate::support::{Options, Sandbox, TestDaemon};

const SAFE_DEFAULT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/policies/safe-default.yaml"
);
const STRICT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/policies/strict.yaml"
);
const V1_BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/policies/v1-base.yaml");
const V1_CHILD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/vectors/policies/v1-child.yaml"
);
const TWO_ERRORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/vectors/policies/invalid/two-errors.yaml"
);

/// A pro sandbox with no daemon: none of these commands needs one.
fn pro() -> TestDaemon {
    TestDaemon::unstarted(Sandbox::new(), Options::default().edition("pro"))
}

fn safe_default_text() -> String {
    std::fs::read_to_string(SAFE_DEFAULT).unwrap()
}

/// safe-default.yaml written differently — comments gone and added, other quoting, a flow
/// mapping for the defaults — but meaning exactly the same.
fn reformatted_safe_default() -> String {
    let text: String = safe_default_text()
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    let text = text
        .replace(
            "policy_version: \"1\"",
            "policy_version: '1'  # quoted otherwise",
        )
        .replace("name: safe-default", "name: \"safe-default\"")
        .replace("value: \"y\"", "value: y")
        .replace(
            "allowed_choices: [\"y\", \"n\"]",
            "allowed_choices: [y, 'n']",
        )
        .replace(
            "defaults:\n  no_match: require_human\n  low_confidence: require_human\n",
            "defaults: {low_confidence: require_human, no_match: require_human}\n",
        );
    assert_ne!(text, safe_default_text());
    assert!(text.contains("defaults: {"), "{text}");
    format!("# a reformatted copy\n{text}")
}

#[test]
fn validate_a_valid_policy() {
    let daemon = pro();
    let out = daemon.cli(&["policy", "validate", SAFE_DEFAULT]);
    out.assert_code(0);
    let line = out.stdout.trim_end();
    assert!(
        line.starts_with(&format!(
            "{SAFE_DEFAULT}: valid — safe-default, policy_version 1, 3 rules, autonomy assist, hash "
        )),
        "{line}"
    );
    let short = line.rsplit(' ').next().unwrap();
    assert_eq!(short.len(), 16, "{line}");

    let out = daemon.cli(&["policy", "validate", SAFE_DEFAULT, "--json"]);
    out.assert_code(0);
    let report = out.json();
    let hash = report["policy_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    assert!(hash.starts_with(short), "{hash} vs {short}");
    assert_eq!(
        report,
        json!({
            "valid": true,
            "name": "safe-default",
            "policy_version": "1",
            "rules": 3,
            "autonomy_mode": "assist",
            "policy_hash": hash,
            "errors": [],
        })
    );
}

#[test]
fn validate_reports_every_error_with_its_line() {
    let daemon = pro();
    let out = daemon.cli(&["--json", "policy", "validate", TWO_ERRORS]);
    out.assert_code(1);
    let report = out.json();
    assert_eq!(report["valid"], false);
    for key in [
        "name",
        "policy_version",
        "rules",
        "autonomy_mode",
        "policy_hash",
    ] {
        assert!(report[key].is_null(), "{key}: {report}");
    }
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{report}");
    assert_eq!(errors[0]["file"], TWO_ERRORS);
    assert_eq!(errors[0]["line"], 6);
    assert!(
        errors[0]["message"].as_str().unwrap().contains("certain"),
        "{report}"
    );
    assert_eq!(errors[0]["path"], "rules → 0 → match → min_confidence");
    assert_eq!(errors[1]["line"], 12);
    assert!(
        errors[1]["message"].as_str().unwrap().contains("value"),
        "{report}"
    );
    for error in errors {
        let keys: Vec<&str> = error
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 5, "{error}");
        assert!(error["column"].as_u64().unwrap() >= 1, "{error}");
    }

    // Human: one `file:line:col: path: message` line per error.
    let out = daemon.cli(&["policy", "validate", TWO_ERRORS]);
    out.assert_code(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with(&format!(
            "{TWO_ERRORS}:6:{}: rules → 0 → match → min_confidence: ",
            errors[0]["column"]
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!("{TWO_ERRORS}:12:")),
        "{}",
        lines[1]
    );

    // A file that cannot be read is a load error too.
    let missing = daemon.sandbox.path("missing.yaml");
    let out = daemon.cli(&["--json", "policy", "validate", missing.to_str().unwrap()]);
    out.assert_code(1);
    assert_eq!(out.json()["errors"][0]["line"], 0);
}

#[test]
fn test_evaluates_one_event_with_its_explanation() {
    let daemon = pro();
    let event = [
        "policy",
        "test",
        SAFE_DEFAULT,
        "--prompt",
        "Continue? [y/n]",
        "--type",
        "yes_no",
        "--confidence",
        "high",
    ];
    let hash = daemon
        .cli(&["--json", "policy", "validate", SAFE_DEFAULT])
        .json()["policy_hash"]
        .clone();

    let out = daemon.cli(&[&event[..], &["--json"]].concat());
    out.assert_code(0);
    assert_eq!(
        out.json(),
        json!({
            "policy_action": "auto_reply",
            "reply_value": "y",
            "matched_rule": "confident-yes",
            "policy_hash": hash,
            "explanation": "rule 'confident-yes' matched",
        })
    );

    let out = daemon.cli(&[&event[..], &["--explain", "--json"]].concat());
    out.assert_code(0);
    let result = out.json();
    assert_eq!(result["policy_action"], "auto_reply");
    assert_eq!(result["reply_value"], "y");
    assert_eq!(result["matched_rule"], "confident-yes");
    let explanation = result["explanation"].as_array().unwrap();
    let examined: Vec<(&str, bool)> = explanation
        .iter()
        .map(|e| {
            (
                e["rule_id"].as_str().unwrap(),
                e["matched"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        examined,
        [
            ("deny-destructive", false),
            ("press-enter", false),
            ("confident-yes", true)
        ]
    );
    assert!(
        explanation[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("prompt_type"),
        "{result}"
    );
    assert_eq!(explanation[2]["detail"], "all criteria hold");

    // Human: the decision, then one line per rule examined.
    let out = daemon.cli(&[&event[..], &["--explain"]].concat());
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], "auto_reply \"y\" (rule confident-yes)",
        "{}",
        out.stdout
    );
    assert!(
        lines[1].trim_start().starts_with("deny-destructive"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].trim_start().starts_with("press-enter"),
        "{}",
        out.stdout
    );
    assert!(
        lines[3].trim_start().starts_with("confident-yes")
            && lines[3].contains("all criteria hold"),
        "{}",
        out.stdout
    );
}

#[test]
fn test_falls_back_to_the_defaults_and_checks_its_input() {
    let daemon = pro();
    // Low confidence: no rule of strict.yaml matches, defaults.low_confidence (deny) applies.
    let out = daemon.cli(&[
        "--json",
        "policy",
        "test",
        STRICT,
        "--prompt",
        "Continue? [y/n]",
        "--confidence",
        "low",
    ]);
    out.assert_code(0);
    let result = out.json();
    assert_eq!(result["policy_action"], "deny");
    assert_eq!(result["matched_rule"], "");
    assert_eq!(result["reply_value"], "");
    assert!(
        result["explanation"]
            .as_str()
            .unwrap()
            .contains("low_confidence"),
        "{result}"
    );

    let out = daemon.cli(&["policy", "test", STRICT, "--prompt", "Continue? [y/n]"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "require_human (default: no_match)\n");

    // An unknown prompt type is refused, naming the valid ones.
    let out = daemon.cli(&["policy", "test", STRICT, "--prompt", "x", "--type", "yesno"]);
    out.assert_code(1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("yes_no, confirm_enter, multiple_choice, free_text"),
        "{}",
        out.stderr
    );

    // A policy that does not load: its errors, exit 1.
    let out = daemon.cli(&["policy", "test", TWO_ERRORS, "--prompt", "x"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!("{TWO_ERRORS}:6:")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{TWO_ERRORS}:12:")),
        "{}",
        out.stderr
    );
}

#[test]
fn the_hash_ignores_formatting_but_raw_does_not() {
    let daemon = pro();
    let copy = daemon
        .sandbox
        .write("reformatted.yaml", &reformatted_safe_default());
    let copy = copy.to_str().unwrap();

    let original = daemon.cli(&["policy", "hash", SAFE_DEFAULT]);
    original.assert_code(0);
    let hash = original.stdout.trim_end().to_owned();
    assert_eq!(hash.len(), 64, "{hash}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
    let reformatted = daemon.cli(&["policy", "hash", copy]);
    reformatted.assert_code(0);
    assert_eq!(reformatted.stdout.trim_end(), hash);

    let out = daemon.cli(&["--json", "policy", "hash", copy]);
    out.assert_code(0);
    assert_eq!(
        out.json(),
        json!({"policy_hash": hash, "short": &hash[..16]})
    );

    // --raw hashes the bytes, so the two files differ.
    let raw_original = daemon.cli(&["--json", "policy", "hash", "--raw", SAFE_DEFAULT]);
    raw_original.assert_code(0);
    let raw_original = raw_original.json()["raw_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw_copy = daemon.cli(&["policy", "hash", "--raw", copy]);
    raw_copy.assert_code(0);
    let raw_copy = raw_copy.stdout.trim_end().to_owned();
    assert_eq!(raw_copy.len(), 64);
    assert_ne!(raw_original, raw_copy);
    assert_ne!(raw_original, hash);

    // And the diff of the two is empty.
    let out = daemon.cli(&["policy", "diff", SAFE_DEFAULT, copy]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        format!("no difference in meaning (hash {})\n", &hash[..16])
    );
}

#[test]
fn diff_names_what_changed_in_meaning() {
    let daemon = pro();
    let out = daemon.cli(&["--json", "policy", "diff", SAFE_DEFAULT, SAFE_DEFAULT]);
    out.assert_code(0);
    let result = out.json();
    assert_eq!(result["equal"], true);
    assert_eq!(result["hash_a"], result["hash_b"]);
    assert_eq!(
        result["diff"],
        json!({"fields": [], "added": [], "removed": [], "changed": [], "moved": []})
    );

    // One reply changed: the rule and the field are named.
    let changed = daemon.sandbox.write(
        "changed.yaml",
        &safe_default_text().replace("value: \"y\"", "value: \"n\""),
    );
    let out = daemon.cli(&["policy", "diff", SAFE_DEFAULT, changed.to_str().unwrap()]);
    out.assert_code(1);
    assert_eq!(
        out.stdout,
        "~ rule 'confident-yes': action.value: \"y\" → \"n\"\n"
    );

    let out = daemon.cli(&["--json", "policy", "diff", V1_BASE, V1_CHILD]);
    out.assert_code(1);
    let result = out.json();
    assert_eq!(result["equal"], false);
    assert_ne!(result["hash_a"], result["hash_b"]);
    let diff = &result["diff"];
    assert_eq!(diff["added"][0]["id"], "child-deny-delete", "{result}");
    assert_eq!(diff["changed"][0]["id"], "base-yes", "{result}");
    assert!(
        diff["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["field"] == "name"),
        "{result}"
    );

    // A file that does not load: exit 2, with its errors.
    let out = daemon.cli(&["policy", "diff", SAFE_DEFAULT, TWO_ERRORS]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(&format!("{TWO_ERRORS}:6:")),
        "{}",
        out.stderr
    );
    let out = daemon.cli(&["--json", "policy", "diff", TWO_ERRORS, SAFE_DEFAULT]);
    out.assert_code(2);
    let error = &out.json()["error"];
    assert_eq!(error["kind"], "invalid_policy");
    assert_eq!(error["errors"].as_array().unwrap().len(), 2);
}

#[test]
fn hash_and_diff_need_policy_lifecycle_but_validate_and_test_do_not() {
    let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default());
    for args in [
        &["--json", "policy", "hash", SAFE_DEFAULT][..],
        &["--json", "policy", "hash", "--raw", SAFE_DEFAULT],
        &["--json", "policy", "diff", SAFE_DEFAULT, STRICT],
    ] {
        let out = daemon.cli(args);
        out.assert_code(3);
        assert_eq!(out.json()["error"]["kind"], "feature_disabled");
        assert!(
            out.stderr
                .contains("ATLASBRIDGE_FEATURE_POLICY_LIFECYCLE=on"),
            "{}",
            out.stderr
        );
    }
    daemon
        .cli_with(
            &["policy", "hash", SAFE_DEFAULT],
            &[("ATLASBRIDGE_FEATURE_POLICY_LIFECYCLE", "on")],
        )
        .assert_code(0);

    daemon
        .cli(&["policy", "validate", SAFE_DEFAULT])
        .assert_code(0);
    daemon
        .cli(&[
            "policy",
            "test",
            SAFE_DEFAULT,
            "--prompt",
            "Continue? [y/n]",
        ])
        .assert_code(0);
}

#[test]
fn migrate_turns_v0_into_v1_keeping_comments_and_meaning() {
    let daemon = pro();
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/vectors/policies/v0-basic.yaml"
    );
    let original = std::fs::read_to_string(source).unwrap();
    let file = daemon.sandbox.path("team.yaml");
    std::fs::write(&file, &original).unwrap();

    let dry = daemon.cli(&["policy", "migrate", file.to_str().unwrap(), "--dry-run"]);
    dry.assert_code(0);
    assert!(
        dry.stdout.contains("policy_version: \"1\""),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.starts_with("# A small v0 policy"),
        "comments kept"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        original,
        "dry run writes nothing"
    );

    daemon
        .cli(&["policy", "migrate", file.to_str().unwrap()])
        .assert_code(0);
    assert_eq!(
        std::fs::read_to_string(daemon.sandbox.path("team.yaml.v0")).unwrap(),
        original
    );
    let validated = daemon.cli(&["policy", "validate", file.to_str().unwrap(), "--json"]);
    validated.assert_code(0);
    assert_eq!(validated.json()["policy_version"], "1");
    let again = daemon.cli(&["policy", "migrate", file.to_str().unwrap()]);
    again.assert_code(1);
    assert!(again.stderr.contains("already"), "{}", again.stderr);
}
