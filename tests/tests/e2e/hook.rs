//! `atlasbridge hook claude-code` and `hook install|uninstall claude-code` against the real
//! daemon: Claude Code's recorded `PreToolUse` events (tests/fixtures/claude-code) are decided by
//! a policy and land in the trace; without a decision the hook asks (or denies with
//! `--fail-closed`) and never allows; the installer merges into Claude Code's settings files.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{CLI, CliOutput, Options, Sandbox, TestDaemon, with_policy};

const POLICY: &str = r#"policy_version: "1"
name: e2e-hook
autonomy_mode: full
rules:
  - id: no-recursive-delete
    description: Recursive deletes are never run by an agent.
    match:
      tool_id: Bash
      contains: 'rm\s+-(r|rf|fr)\b'
      contains_is_regex: true
    action:
      type: deny
      reason: recursive delete
  - id: git-status
    match:
      tool_id: Bash
      contains: git status
    action:
      type: auto_reply
      value: allow
  - id: deploy-writes
    description: Deployment files are changed by a person.
    match:
      any_of:
        - tool_id: Write
          contains: /home/dev/app/deploy/
        - tool_id: Edit
          contains: /home/dev/app/deploy/
    action:
      type: require_human
  - id: source-edits
    match:
      tool_id: Edit
      contains: /home/dev/app/src/
    action:
      type: auto_reply
      value: allow
defaults:
  no_match: require_human
  low_confidence: deny
"#;

/// The hook's own timeout in these tests: generous, so that a loaded machine never turns a
/// decision into a timeout.
const TIMEOUT: &str = "20";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/claude-code")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// Runs `hook claude-code` (plus `extra` options) with `input` on standard input.
fn hook(daemon: &TestDaemon, extra: &[&str], input: &str) -> CliOutput {
    let mut args = vec!["--timeout", TIMEOUT, "hook", "claude-code"];
    args.extend_from_slice(extra);
    daemon.cli_with_stdin(&args, &[], Some(input))
}

/// The decision the hook printed: exit 0, one JSON document in Claude Code's format.
#[track_caller]
fn decision(out: &CliOutput) -> (String, String) {
    out.assert_code(0);
    let answer = out.json();
    let specific = &answer["hookSpecificOutput"];
    assert_eq!(specific["hookEventName"], "PreToolUse", "{answer}");
    assert_eq!(
        answer.as_object().unwrap().len(),
        1,
        "only hookSpecificOutput: {answer}"
    );
    (
        specific["permissionDecision"].as_str().unwrap().to_owned(),
        specific["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// The trace seq a reason names (`(trace #N)`).
fn trace_seq(reason: &str) -> u64 {
    let start = reason
        .find("(trace #")
        .unwrap_or_else(|| panic!("{reason}"))
        + 8;
    let digits: String = reason[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

fn trace_entry(daemon: &TestDaemon, seq: u64) -> Value {
    let page = daemon
        .conn()
        .ok("trace.read", json!({"from_seq": seq, "limit": 1}));
    page["entries"][0].clone()
}

#[test]
fn the_recorded_events_are_decided_by_the_policy_and_land_in_the_trace() {
    let daemon = with_policy("pro", POLICY, "");
    for (file, permission, reason_start, rule, action) in [
        (
            "bash.json",
            "allow",
            "atlasbridge: rule 'git-status' → auto_reply, risk HIGH (trace #",
            "git-status",
            "auto_reply",
        ),
        (
            "edit.json",
            "allow",
            "atlasbridge: rule 'source-edits' → auto_reply, risk HIGH (trace #",
            "source-edits",
            "auto_reply",
        ),
        (
            "write.json",
            "ask",
            "atlasbridge: rule 'deploy-writes' → require_human, risk LOW (trace #",
            "deploy-writes",
            "require_human",
        ),
    ] {
        let event = fixture_json(file);
        let (decided, reason) = decision(&hook(&daemon, &[], &fixture(file)));
        assert_eq!(decided, permission, "{file}: {reason}");
        assert!(reason.starts_with(reason_start), "{file}: {reason}");
        let entry = trace_entry(&daemon, trace_seq(&reason));
        assert_eq!(entry["session_id"], event["session_id"], "{entry}");
        assert_eq!(entry["prompt_id"], event["tool_use_id"], "{entry}");
        assert_eq!(entry["agent_id"], "claude-code");
        assert_eq!(entry["prompt_type"], "free_text");
        assert_eq!(entry["confidence"], "high");
        assert_eq!(entry["matched_rule"], rule);
        assert_eq!(entry["action_taken"], action);
        assert!(entry.get("prompt_text").is_none(), "never stored: {entry}");
    }
    let described = decision(&hook(&daemon, &[], &fixture("write.json"))).1;
    assert!(
        described.ends_with(": Deployment files are changed by a person."),
        "the rule's description follows: {described}"
    );
}

#[test]
fn a_destructive_command_is_denied_and_a_repeat_gets_the_first_answer() {
    let daemon = with_policy("pro", POLICY, "");
    let mut event = fixture_json("bash.json");
    event["tool_input"]["command"] = json!("rm -rf build/ && git status");
    event["tool_use_id"] = json!("toolu_01RmRfBuild000000000000");
    let (decided, reason) = decision(&hook(&daemon, &[], &event.to_string()));
    assert_eq!(decided, "deny", "{reason}");
    assert!(
        reason.starts_with("atlasbridge: rule 'no-recursive-delete' → deny, risk LOW (trace #"),
        "{reason}"
    );
    let seq = trace_seq(&reason);
    assert_eq!(trace_entry(&daemon, seq)["action_taken"], "deny");

    // The same tool call again (Claude Code retrying the hook): the first answer, no new entry.
    let head = daemon.conn().ok("trace.head", json!({}));
    let (again, reason) = decision(&hook(&daemon, &[], &event.to_string()));
    assert_eq!(again, "deny");
    assert!(
        reason.contains(&format!("(trace #{seq}, a repeat)")),
        "{reason}"
    );
    assert_eq!(daemon.conn().ok("trace.head", json!({})), head);

    // Without a tool_use_id the call itself is the id: the same call is a repeat too.
    event.as_object_mut().unwrap().remove("tool_use_id");
    let first = decision(&hook(&daemon, &[], &event.to_string())).1;
    let second = decision(&hook(&daemon, &[], &event.to_string())).1;
    assert!(!first.contains("a repeat"), "{first}");
    assert!(
        second.contains(&format!("(trace #{}, a repeat)", trace_seq(&first))),
        "{second}"
    );
}

#[test]
fn without_the_daemon_the_hook_asks_and_with_fail_closed_it_denies() {
    let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default());
    let (decided, reason) = decision(&hook(&daemon, &[], &fixture("bash.json")));
    assert_eq!(decided, "ask", "{reason}");
    assert!(
        reason.starts_with("atlasbridge: atlasbridged is not running"),
        "{reason}"
    );
    assert!(reason.contains("daemon start`"), "{reason}");
    assert!(reason.ends_with("; a person decides"), "{reason}");

    let out = hook(&daemon, &["--fail-closed"], &fixture("bash.json"));
    let (decided, reason) = decision(&out);
    assert_eq!(decided, "deny", "{reason}");
    assert!(reason.ends_with("; denied (--fail-closed)"), "{reason}");
    assert!(
        out.stderr.contains("atlasbridged is not running"),
        "the reason is on stderr too: {}",
        out.stderr
    );
}

/// When no socket path can be made (here: a relative `--socket` from a working directory that
/// was deleted), the command line cannot start normally; the hook still answers.
#[test]
fn without_a_usable_socket_path_the_hook_still_answers() {
    let sandbox = Sandbox::new();
    let gone = sandbox.path("gone");
    for (extra, expected) in [("", "ask"), ("--fail-closed", "deny")] {
        std::fs::create_dir_all(&gone).unwrap();
        let script = format!(
            "cd {gone} && rmdir {gone} && exec {cli} --socket relative.sock hook claude-code {extra}",
            gone = gone.display(),
            cli = CLI,
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(fixture("bash.json").as_bytes()).unwrap();
        }
        let out = CliOutput::from(child.wait_with_output().unwrap());
        let (decided, reason) = decision(&out);
        assert_eq!(decided, expected, "{reason}");
        assert!(reason.contains("relative.sock"), "{reason}");
    }
}

#[test]
fn input_that_is_not_a_hook_event_is_answered_with_ask() {
    let daemon = with_policy("pro", POLICY, "");
    let mut post = fixture_json("bash.json");
    post["hook_event_name"] = json!("PostToolUse");
    for (input, why) in [
        ("this is not json", "the hook input is not JSON"),
        ("", "the hook input is not JSON"),
        ("[\"Bash\"]", "the hook input is not a JSON object"),
        ("{}", "the hook input has no `session_id` string"),
        (
            r#"{"session_id": "s", "tool_name": "Bash", "tool_input": "ls"}"#,
            "`tool_input` is not a JSON object",
        ),
        (&post.to_string(), "the hook event is \"PostToolUse\""),
    ] {
        let (decided, reason) = decision(&hook(&daemon, &[], input));
        assert_eq!(decided, "ask", "{input:?}: {reason}");
        assert!(reason.contains(why), "{input:?}: {reason}");
        let (decided, _) = decision(&hook(&daemon, &["--fail-closed"], input));
        assert_eq!(decided, "deny", "{input:?}");
    }
    // Nothing was decided, so nothing was recorded.
    assert_eq!(
        daemon.conn().ok("trace.head", json!({}))["entries"],
        0,
        "no entry for input that is not an event"
    );
}

#[test]
fn a_daemon_without_a_policy_or_without_an_answer_gets_ask() {
    let daemon = with_policy("pro", "policy_version: 1\n", "");
    let (decided, reason) = decision(&hook(&daemon, &[], &fixture("edit.json")));
    assert_eq!(decided, "ask", "{reason}");
    assert!(
        reason.contains("the daemon refused the event (-32001: no active policy"),
        "{reason}"
    );

    // Something listens on the socket but never answers: the hook's timeout answers.
    let silent = TestDaemon::unstarted(Sandbox::new(), Options::default());
    std::fs::create_dir_all(silent.socket().parent().unwrap()).unwrap();
    let _listener = UnixListener::bind(silent.socket()).unwrap();
    let started = Instant::now();
    let out = silent.cli_with_stdin(
        &["--timeout", "1", "hook", "claude-code", "--fail-closed"],
        &[],
        Some(&fixture("bash.json")),
    );
    let (decided, reason) = decision(&out);
    assert_eq!(decided, "deny", "{reason}");
    assert_eq!(
        reason,
        "atlasbridge: atlasbridged did not answer within 1 s; denied (--fail-closed)"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A sandbox for the installer: a home and a project directory.
struct Settings {
    daemon: TestDaemon,
}

impl Settings {
    fn new() -> Self {
        let daemon = TestDaemon::unstarted(Sandbox::new(), Options::default());
        std::fs::create_dir_all(daemon.sandbox.path("home")).unwrap();
        std::fs::create_dir_all(daemon.sandbox.path("project")).unwrap();
        Self { daemon }
    }

    fn user_file(&self) -> PathBuf {
        self.daemon.sandbox.path("home/.claude/settings.json")
    }

    fn project_file(&self, name: &str) -> PathBuf {
        self.daemon.sandbox.path("project/.claude").join(name)
    }

    /// The CLI in the project directory (with `--socket`, like every test run).
    fn cli(&self, args: &[&str]) -> CliOutput {
        let output = Command::new(CLI)
            .env_clear()
            .envs(self.daemon.env())
            .current_dir(self.daemon.sandbox.path("project"))
            .arg("--socket")
            .arg(self.daemon.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        CliOutput::from(output)
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Our hook entry in a settings document.
fn our_groups(settings: &Value) -> Vec<Value> {
    settings["hooks"]["PreToolUse"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|group| {
            group["hooks"].as_array().into_iter().flatten().any(|h| {
                h["command"]
                    .as_str()
                    .is_some_and(|c| c.contains(" hook claude-code"))
            })
        })
        .cloned()
        .collect()
}

#[test]
fn install_writes_the_user_settings_and_the_installed_command_answers() {
    let settings = Settings::new();
    let out = settings.cli(&["hook", "install", "claude-code"]);
    out.assert_code(0);
    let file = settings.user_file();
    assert!(
        out.stdout.starts_with(&format!(
            "installed the Claude Code hook in {}\n",
            file.display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("atlasbridged is not running"),
        "a note says the daemon is down: {}",
        out.stderr
    );
    let written = read_json(&file);
    let command = format!(
        "{CLI} --socket {} hook claude-code",
        settings.daemon.socket().display()
    );
    assert_eq!(
        written,
        json!({"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [{
            "type": "command",
            "command": command,
            "timeout": 10,
            "onFailure": "block",
        }]}]}})
    );

    // What Claude Code will run: the command through a shell, the event on its stdin.
    let mut daemon = settings.daemon;
    std::fs::write(daemon.sandbox.path("policy.yaml"), POLICY).unwrap();
    daemon.options = Options::default().edition("pro").config(&format!(
        "[policy]\nfile = \"{}\"\n",
        daemon.sandbox.path("policy.yaml").display()
    ));
    daemon.launch();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .env_clear()
        .envs(daemon.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        fixture("bash.json").as_bytes(),
    )
    .unwrap();
    let out = CliOutput::from(child.wait_with_output().unwrap());
    let (decided, reason) = decision(&out);
    assert_eq!(decided, "allow", "{reason}");
    assert!(reason.contains("rule 'git-status'"), "{reason}");
}

#[test]
fn install_merges_into_existing_settings_and_running_it_again_changes_nothing() {
    let settings = Settings::new();
    let file = settings.project_file("settings.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // Written by hand: its members are not in alphabetical order.
    let original = r#"{
  "permissions": {"allow": ["Bash(npm test)"], "deny": ["Read(./.env)"]},
  "model": "opus",
  "hooks": {
    "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "./guard.sh"}]}],
    "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]
  },
  "env": {"FOO": "1"}
}"#;
    std::fs::write(&file, original).unwrap();
    let before: Value = serde_json::from_str(original).unwrap();

    let out = settings.cli(&[
        "--timeout",
        "3",
        "hook",
        "install",
        "claude-code",
        "--scope",
        "project",
        "--fail-closed",
    ]);
    out.assert_code(0);
    let after = read_json(&file);
    let mut expected = before;
    expected["hooks"]["PreToolUse"]
        .as_array_mut()
        .unwrap()
        .push(json!({"matcher": "*", "hooks": [{
            "type": "command",
            "command": format!(
                "{CLI} --socket {} --timeout 3 hook claude-code --fail-closed",
                settings.daemon.socket().display()
            ),
            "timeout": 8,
            "onFailure": "block",
        }]}));
    assert_eq!(after, expected);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.find("\"permissions\"").unwrap() < text.find("\"model\"").unwrap()
            && text.find("\"model\"").unwrap() < text.find("\"hooks\"").unwrap()
            && text.find("\"hooks\"").unwrap() < text.find("\"env\"").unwrap()
            && text.find("\"PreToolUse\"").unwrap() < text.find("\"Stop\"").unwrap(),
        "the members keep their order: {text}"
    );

    let again = settings.cli(&[
        "--timeout",
        "3",
        "hook",
        "install",
        "claude-code",
        "--scope",
        "project",
        "--fail-closed",
        "--json",
    ]);
    again.assert_code(0);
    let report = again.json();
    assert_eq!(report["outcome"], "unchanged", "{report}");
    assert_eq!(report["written"], false);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // Installed again without the options: the same entry, updated in place, not a second one.
    let out = settings.cli(&["hook", "install", "claude-code", "--scope", "project"]);
    out.assert_code(0);
    assert!(
        out.stdout.starts_with("updated the Claude Code hook in "),
        "{}",
        out.stdout
    );
    let updated = read_json(&file);
    let ours = our_groups(&updated);
    assert_eq!(ours.len(), 1, "{updated}");
    assert_eq!(ours[0]["hooks"][0]["timeout"], 10);
    assert_eq!(updated["hooks"]["PreToolUse"].as_array().unwrap().len(), 2);
}

#[test]
fn uninstall_removes_only_our_entry() {
    let settings = Settings::new();
    let file = settings.project_file("settings.local.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let before = json!({
        "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "./guard.sh"}]}]},
        "outputStyle": "concise",
    });
    std::fs::write(&file, serde_json::to_string_pretty(&before).unwrap()).unwrap();
    settings
        .cli(&["hook", "install", "claude-code", "--scope", "local"])
        .assert_code(0);
    assert_eq!(our_groups(&read_json(&file)).len(), 1);

    let out = settings.cli(&["hook", "uninstall", "claude-code", "--scope", "local"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout.trim(),
        format!("removed the Claude Code hook from {}", file.display())
    );
    assert_eq!(read_json(&file), before);

    let out = settings.cli(&["hook", "uninstall", "claude-code", "--scope", "local"]);
    out.assert_code(0);
    assert!(out.stdout.contains("is not installed"), "{}", out.stdout);
    // A file that does not exist is not created.
    let out = settings.cli(&["hook", "uninstall", "claude-code"]);
    out.assert_code(0);
    assert!(!settings.user_file().exists());
}

#[test]
fn a_malformed_settings_file_is_reported_with_its_position_and_left_untouched() {
    let settings = Settings::new();
    let file = settings.user_file();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let text = "{\n  \"model\": \"opus\",\n  \"hooks\": {\n    \"PreToolUse\": [\n  }\n}\n";
    std::fs::write(&file, text).unwrap();
    for args in [
        &["hook", "install", "claude-code"][..],
        &["hook", "install", "claude-code", "--dry-run"],
        &["hook", "uninstall", "claude-code"],
    ] {
        let out = settings.cli(args);
        out.assert_code(1);
        assert!(
            out.stderr
                .contains(&format!("{}:5:3: not valid JSON", file.display())),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("left as it is"), "{}", out.stderr);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }
}

#[test]
fn dry_run_prints_the_result_and_writes_nothing() {
    let settings = Settings::new();
    let file = settings.project_file("settings.json");
    let out = settings.cli(&[
        "hook",
        "install",
        "claude-code",
        "--scope",
        "project",
        "--dry-run",
    ]);
    out.assert_code(0);
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(our_groups(&printed).len(), 1, "{printed}");
    assert_eq!(
        printed["hooks"]["PreToolUse"][0]["hooks"][0]["onFailure"],
        "block"
    );
    assert!(!file.exists());
    assert!(!file.parent().unwrap().exists(), "not even the directory");
}
