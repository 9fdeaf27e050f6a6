//! Claude Code's `PreToolUse` hook: the event it sends on standard input, the prompt event the
//! daemon decides, and the decision printed back. Pure: no I/O here, so every mapping is a unit
//! test.
//!
//! Claude Code documents the event as one JSON object: `session_id`, `transcript_path`, `cwd`,
//! `permission_mode`, `hook_event_name`, `tool_name`, `tool_input`, `tool_use_id` (and more over
//! time: unknown members are ignored). The answer is
//! `{"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision", "permissionDecisionReason"}}`
//! on standard output with exit status 0.

use atlasbridge_protocol::canonical::to_canonical_vec;
use atlasbridge_protocol::hash::sha256_hex;
use atlasbridge_protocol::methods::{EvaluateParams, EvaluateResult};
use serde_json::{Map, Value, json};

/// The `agent_id` of every event: agent pins and the trace name the agent.
pub(crate) const AGENT_ID: &str = "claude-code";

/// A tool call is free text the agent wrote (a command, a path, arguments), not an answer to a
/// yes/no question: `free_text` keeps rules written for terminal prompts (`yes_no`,
/// `confirm_enter`) from allowing tool calls by accident, and an automatic allow is classified
/// `high` risk (`critical` for a destructive command).
pub(crate) const PROMPT_TYPE: &str = "free_text";

/// The event is exactly what Claude Code is about to run, not a prompt read off a terminal.
pub(crate) const CONFIDENCE: &str = "high";

/// The only hook event this command answers.
pub(crate) const HOOK_EVENT: &str = "PreToolUse";

/// Tools whose prompt text is one member of their input.
const TEXT_MEMBERS: &[(&str, &str)] = &[
    ("Bash", "command"),
    ("Edit", "file_path"),
    ("MultiEdit", "file_path"),
    ("Write", "file_path"),
    ("Read", "file_path"),
    ("NotebookEdit", "notebook_path"),
];

/// Why standard input is not a `PreToolUse` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EventError {
    /// Not JSON at all.
    #[error("the hook input is not JSON ({0})")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("the hook input is not a JSON object")]
    NotAnObject,
    /// A required member is absent, or not a string.
    #[error("the hook input has no `{0}` string")]
    Missing(&'static str),
    /// A required member is an empty string.
    #[error("the hook input has an empty `{0}`")]
    Empty(&'static str),
    /// `tool_input` is not an object.
    #[error("the hook input's `tool_input` is not a JSON object")]
    ToolInputNotAnObject,
    /// Another hook event than `PreToolUse`.
    #[error("the hook event is {0:?}, not PreToolUse")]
    WrongEvent(String),
}

/// The members of a `PreToolUse` event the decision uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PreToolUse {
    pub session_id: String,
    pub cwd: Option<String>,
    pub tool_name: String,
    pub tool_input: Map<String, Value>,
    pub tool_use_id: Option<String>,
}

impl PreToolUse {
    /// Reads one event. `session_id`, `tool_name` and `tool_input` are required;
    /// `hook_event_name`, when present, must be `PreToolUse`.
    pub(crate) fn parse(input: &[u8]) -> Result<Self, EventError> {
        let value: Value =
            serde_json::from_slice(input).map_err(|e| EventError::NotJson(e.to_string()))?;
        let Value::Object(mut event) = value else {
            return Err(EventError::NotAnObject);
        };
        if let Some(name) = event.get("hook_event_name") {
            match name.as_str() {
                Some(HOOK_EVENT) => {}
                Some(other) => return Err(EventError::WrongEvent(other.to_owned())),
                None => return Err(EventError::Missing("hook_event_name")),
            }
        }
        let session_id = required(&event, "session_id")?;
        let tool_name = required(&event, "tool_name")?;
        let tool_input = match event.remove("tool_input") {
            Some(Value::Object(input)) => input,
            Some(_) => return Err(EventError::ToolInputNotAnObject),
            None => return Err(EventError::Missing("tool_input")),
        };
        let optional = |name: &str| {
            event
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Self {
            session_id,
            cwd: optional("cwd"),
            tool_name,
            tool_input,
            tool_use_id: optional("tool_use_id"),
        })
    }

    /// What the policy's `contains` criteria and the risk classifier read: Bash's `command`, the
    /// file path of Edit, MultiEdit, Write and Read (`notebook_path` of NotebookEdit), and for
    /// any other tool (or a member that is missing) its whole input as compact JSON, members
    /// sorted by name.
    pub(crate) fn prompt_text(&self) -> String {
        let member = TEXT_MEMBERS
            .iter()
            .find(|(tool, _)| *tool == self.tool_name)
            .and_then(|(_, member)| self.tool_input.get(*member))
            .and_then(Value::as_str);
        match member {
            Some(text) => text.to_owned(),
            None => {
                let input = Value::Object(self.tool_input.clone());
                String::from_utf8_lossy(&to_canonical_vec(&input)).into_owned()
            }
        }
    }

    /// Unique per tool call and the same for a repeat of it, so that the daemon's idempotency
    /// (keyed by policy, prompt id and session) answers a repeat with the first decision:
    /// Claude Code's `tool_use_id` when it sends one, else `cc-` and the first 32 hex digits of
    /// the SHA-256 of the canonical JSON of the tool name and input.
    pub(crate) fn prompt_id(&self) -> String {
        if let Some(id) = &self.tool_use_id {
            return id.clone();
        }
        let call = json!({ "tool_name": self.tool_name, "tool_input": self.tool_input });
        let digest = sha256_hex(&to_canonical_vec(&call));
        format!("cc-{}", digest.get(..32).unwrap_or(&digest))
    }

    /// The prompt event for `decision.evaluate`.
    pub(crate) fn to_params(&self) -> EvaluateParams {
        EvaluateParams {
            session_id: self.session_id.clone(),
            prompt_id: self.prompt_id(),
            prompt_type: PROMPT_TYPE.to_owned(),
            prompt_text: self.prompt_text(),
            confidence: CONFIDENCE.to_owned(),
            agent_id: Some(AGENT_ID.to_owned()),
            tool_id: Some(self.tool_name.clone()),
            repo: self.cwd.clone(),
            branch: None,
            ci_status: None,
            session_tags: None,
            idempotency_key: None,
            policy_hash: None,
        }
    }
}

fn required(event: &Map<String, Value>, name: &'static str) -> Result<String, EventError> {
    match event.get(name).and_then(Value::as_str) {
        Some("") => Err(EventError::Empty(name)),
        Some(value) => Ok(value.to_owned()),
        None => Err(EventError::Missing(name)),
    }
}

/// Claude Code's `permissionDecision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    Allow,
    Deny,
    Ask,
}

impl Permission {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Ask => "ask",
        }
    }

    /// `auto_reply` allows, `deny` denies; `require_human`, `notify_only` and anything unknown
    /// ask: `notify_only` means the policy answers nothing itself, which for a tool call is
    /// Claude Code's own permission prompt.
    pub(crate) fn for_action(action: &str) -> Self {
        match action {
            "auto_reply" => Self::Allow,
            "deny" => Self::Deny,
            _ => Self::Ask,
        }
    }
}

/// What the hook prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookDecision {
    pub permission: Permission,
    pub reason: String,
}

impl HookDecision {
    /// The daemon's answer: the rule (or the default), the action, the risk level and the trace
    /// entry, then the daemon's explanation when it says more than that the rule matched.
    pub(crate) fn from_answer(answer: &EvaluateResult) -> Self {
        let mut reason = if answer.matched_rule.is_empty() {
            "atlasbridge: default".to_owned()
        } else {
            format!("atlasbridge: rule '{}'", answer.matched_rule)
        };
        reason.push_str(" → ");
        reason.push_str(&answer.action);
        if !answer.risk_level.is_empty() {
            reason.push_str(", risk ");
            reason.push_str(&answer.risk_level.to_uppercase());
        }
        match (answer.seq, answer.repeated) {
            (Some(seq), false) => reason.push_str(&format!(" (trace #{seq})")),
            (Some(seq), true) => reason.push_str(&format!(" (trace #{seq}, a repeat)")),
            (None, true) => reason.push_str(" (a repeat)"),
            (None, false) => {}
        }
        let routine = format!("rule {} matched", answer.matched_rule);
        if !answer.explanation.is_empty() && answer.explanation != routine {
            reason.push_str(": ");
            reason.push_str(&answer.explanation);
        }
        Self {
            permission: Permission::for_action(&answer.action),
            reason,
        }
    }

    /// No decision from the daemon (or no event to decide): a person decides, or with
    /// `--fail-closed` the call is denied. Never allowed.
    pub(crate) fn failure(why: &str, fail_closed: bool) -> Self {
        if fail_closed {
            Self {
                permission: Permission::Deny,
                reason: format!("atlasbridge: {why}; denied (--fail-closed)"),
            }
        } else {
            Self {
                permission: Permission::Ask,
                reason: format!("atlasbridge: {why}; a person decides"),
            }
        }
    }

    /// The JSON Claude Code reads on standard output.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "hookSpecificOutput": {
                "hookEventName": HOOK_EVENT,
                "permissionDecision": self.permission.as_str(),
                "permissionDecisionReason": self.reason,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tool: &str, input: Value) -> Value {
        json!({
            "session_id": "abc123",
            "transcript_path": "/home/me/.claude/projects/x/abc123.jsonl",
            "cwd": "/home/me/app",
            "permission_mode": "default",
            "hook_event_name": "PreToolUse",
            "tool_name": tool,
            "tool_input": input,
            "tool_use_id": "toolu_01",
        })
    }

    fn parse(value: &Value) -> Result<PreToolUse, EventError> {
        PreToolUse::parse(value.to_string().as_bytes())
    }

    fn answer(action: &str, rule: &str, risk: &str, seq: Option<u64>) -> EvaluateResult {
        EvaluateResult {
            action: action.to_owned(),
            reply_value: String::new(),
            suggested_action: None,
            matched_rule: rule.to_owned(),
            policy_action: action.to_owned(),
            autonomy_mode: "full".to_owned(),
            risk_level: risk.to_owned(),
            risk_reasons: Vec::new(),
            policy_hash: "0".repeat(64),
            entry_id: None,
            seq,
            entry_hash: None,
            explanation: format!("rule {rule} matched"),
            repeated: false,
        }
    }

    #[test]
    fn a_bash_event_becomes_a_free_text_prompt_event_with_the_command() {
        let params = parse(&event(
            "Bash",
            json!({"command": "git status", "description": "Show the status"}),
        ))
        .unwrap()
        .to_params();
        assert_eq!(params.session_id, "abc123");
        assert_eq!(params.prompt_id, "toolu_01");
        assert_eq!(params.prompt_type, "free_text");
        assert_eq!(params.prompt_text, "git status");
        assert_eq!(params.confidence, "high");
        assert_eq!(params.agent_id.as_deref(), Some("claude-code"));
        assert_eq!(params.tool_id.as_deref(), Some("Bash"));
        assert_eq!(params.repo.as_deref(), Some("/home/me/app"));
        assert_eq!(params.idempotency_key, None);
        assert_eq!(params.policy_hash, None);
    }

    #[test]
    fn file_tools_send_their_path_and_other_tools_their_compact_input() {
        for (tool, input, text) in [
            (
                "Edit",
                json!({"file_path": "/a/b.rs", "old_string": "x", "new_string": "y"}),
                "/a/b.rs",
            ),
            (
                "MultiEdit",
                json!({"file_path": "/a/c.rs", "edits": []}),
                "/a/c.rs",
            ),
            (
                "Write",
                json!({"file_path": "/a/d.rs", "content": "z"}),
                "/a/d.rs",
            ),
            (
                "Read",
                json!({"file_path": "/a/e.rs", "limit": 5}),
                "/a/e.rs",
            ),
            (
                "NotebookEdit",
                json!({"notebook_path": "/a/n.ipynb", "new_source": ""}),
                "/a/n.ipynb",
            ),
            (
                "WebFetch",
                json!({"url": "https://example.com", "prompt": "summarise"}),
                r#"{"prompt":"summarise","url":"https://example.com"}"#,
            ),
            (
                "Bash",
                json!({"description": "no command"}),
                r#"{"description":"no command"}"#,
            ),
            ("Write", json!({"file_path": 7}), r#"{"file_path":7}"#),
        ] {
            let parsed = parse(&event(tool, input)).unwrap();
            assert_eq!(parsed.prompt_text(), text, "{tool}");
            assert_eq!(parsed.to_params().tool_id.as_deref(), Some(tool));
        }
    }

    #[test]
    fn without_a_tool_use_id_the_prompt_id_is_a_hash_of_the_call() {
        let mut first = event("Bash", json!({"command": "ls", "timeout": 5}));
        first.as_object_mut().unwrap().remove("tool_use_id");
        let id = parse(&first).unwrap().prompt_id();
        assert!(id.starts_with("cc-") && id.len() == 35, "{id}");
        // The same call, its members in another order and another session: the same id (the
        // session is part of the daemon's idempotency key already).
        let reordered = json!({
            "tool_input": {"timeout": 5, "command": "ls"},
            "tool_name": "Bash",
            "session_id": "other",
        });
        assert_eq!(parse(&reordered).unwrap().prompt_id(), id);
        let other =
            json!({"tool_input": {"command": "ls -a"}, "tool_name": "Bash", "session_id": "s"});
        assert_ne!(parse(&other).unwrap().prompt_id(), id);
        let other_tool = json!({"tool_input": {"command": "ls", "timeout": 5}, "tool_name": "Shell", "session_id": "s"});
        assert_ne!(parse(&other_tool).unwrap().prompt_id(), id);
    }

    #[test]
    fn unknown_members_are_ignored_and_optional_ones_may_be_missing() {
        let minimal = json!({
            "session_id": "s",
            "tool_name": "Glob",
            "tool_input": {"pattern": "**/*.rs"},
            "some_future_member": {"x": 1},
        });
        let parsed = parse(&minimal).unwrap();
        assert_eq!(parsed.cwd, None);
        assert_eq!(parsed.tool_use_id, None);
        assert_eq!(parsed.to_params().repo, None);
    }

    #[test]
    fn input_that_is_not_a_pre_tool_use_event_is_refused_with_the_reason() {
        let cases: Vec<(&[u8], EventError)> = vec![
            (b"", EventError::NotJson("EOF while parsing a value at line 1 column 0".into())),
            (b"[1]", EventError::NotAnObject),
            (br#"{"tool_name":"Bash","tool_input":{}}"#, EventError::Missing("session_id")),
            (
                br#"{"session_id":"","tool_name":"Bash","tool_input":{}}"#,
                EventError::Empty("session_id"),
            ),
            (br#"{"session_id":"s","tool_input":{}}"#, EventError::Missing("tool_name")),
            (
                br#"{"session_id":"s","tool_name":3,"tool_input":{}}"#,
                EventError::Missing("tool_name"),
            ),
            (br#"{"session_id":"s","tool_name":"Bash"}"#, EventError::Missing("tool_input")),
            (
                br#"{"session_id":"s","tool_name":"Bash","tool_input":"ls"}"#,
                EventError::ToolInputNotAnObject,
            ),
            (
                br#"{"hook_event_name":"PostToolUse","session_id":"s","tool_name":"Bash","tool_input":{}}"#,
                EventError::WrongEvent("PostToolUse".into()),
            ),
            (
                br#"{"hook_event_name":null,"session_id":"s","tool_name":"Bash","tool_input":{}}"#,
                EventError::Missing("hook_event_name"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                PreToolUse::parse(input),
                Err(expected),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn actions_map_to_permissions_and_nothing_unknown_allows() {
        for (action, permission) in [
            ("auto_reply", Permission::Allow),
            ("deny", Permission::Deny),
            ("require_human", Permission::Ask),
            ("notify_only", Permission::Ask),
            ("something_new", Permission::Ask),
            ("", Permission::Ask),
        ] {
            assert_eq!(Permission::for_action(action), permission, "{action}");
        }
    }

    #[test]
    fn the_reason_names_the_rule_the_action_the_risk_and_the_trace_entry() {
        let decision = HookDecision::from_answer(&answer("deny", "no-rm", "low", Some(42)));
        assert_eq!(decision.permission, Permission::Deny);
        assert_eq!(
            decision.reason,
            "atlasbridge: rule 'no-rm' → deny, risk LOW (trace #42)"
        );

        let mut assist = answer("require_human", "git-status", "high", Some(7));
        assist.policy_action = "auto_reply".into();
        assist.suggested_action = Some("auto_reply".into());
        assist.explanation = "assist mode: a person decides; the policy suggests auto_reply".into();
        assert_eq!(
            HookDecision::from_answer(&assist).reason,
            "atlasbridge: rule 'git-status' → require_human, risk HIGH (trace #7): \
             assist mode: a person decides; the policy suggests auto_reply"
        );

        let mut default = answer("require_human", "", "", None);
        default.explanation = "no rule matched: defaults.no_match".into();
        default.repeated = true;
        let decision = HookDecision::from_answer(&default);
        assert_eq!(decision.permission, Permission::Ask);
        assert_eq!(
            decision.reason,
            "atlasbridge: default → require_human (a repeat): no rule matched: defaults.no_match"
        );

        let mut described = answer("auto_reply", "reads", "high", Some(3));
        described.explanation = "Reading is harmless".into();
        described.repeated = true;
        let decision = HookDecision::from_answer(&described);
        assert_eq!(decision.permission, Permission::Allow);
        assert_eq!(
            decision.reason,
            "atlasbridge: rule 'reads' → auto_reply, risk HIGH (trace #3, a repeat): Reading is harmless"
        );

        let notify = HookDecision::from_answer(&answer("notify_only", "tell", "none", Some(9)));
        assert_eq!(notify.permission, Permission::Ask);
    }

    #[test]
    fn a_failure_asks_or_with_fail_closed_denies_and_never_allows() {
        let open = HookDecision::failure("atlasbridged is not running", false);
        assert_eq!(open.permission, Permission::Ask);
        assert_eq!(
            open.reason,
            "atlasbridge: atlasbridged is not running; a person decides"
        );
        let closed = HookDecision::failure("atlasbridged is not running", true);
        assert_eq!(closed.permission, Permission::Deny);
        assert_eq!(
            closed.reason,
            "atlasbridge: atlasbridged is not running; denied (--fail-closed)"
        );
    }

    #[test]
    fn the_output_is_claude_codes_pre_tool_use_decision() {
        let decision = HookDecision {
            permission: Permission::Ask,
            reason: "why".into(),
        };
        assert_eq!(
            decision.to_json(),
            json!({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "ask",
                "permissionDecisionReason": "why",
            }})
        );
    }
}
