//! Deciding one test event against a stored version, as a runtime would: the protocol crate's
//! evaluator (the rule that matches, or the default), the autonomy mode (what the agent would be
//! told), and the risk classifier of risk.md.
//!
//! What depends on a runtime's own state is taken at its neutral value and said so in the API
//! document: no `max_auto_replies` used up in the session, no `risk.require_human_at` threshold,
//! the autopilot running. With those, the answer is the one a fresh daemon gives.

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::policy::evaluate::{Evaluator, Event, RuleExplanation};
use atlasbridge_protocol::policy::{Action, AutonomyMode, Policy};
use atlasbridge_protocol::risk::{PROMPT_TYPES, RiskInput, classify};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest prompt text a test takes, in bytes.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// The most session tags a test takes.
const MAX_TAGS: usize = 32;

/// A prompt event to decide (the fields of `decision.evaluate` the policy and the risk
/// classifier read).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialEvent {
    /// The prompt text (read, never stored).
    pub prompt_text: String,
    /// `yes_no` (default), `confirm_enter`, `multiple_choice` or `free_text`.
    #[serde(default = "default_prompt_type")]
    pub prompt_type: String,
    /// `high` (default), `medium` or `low`; anything else counts as `low`.
    #[serde(default = "default_confidence")]
    pub confidence: String,
    /// The agent's tool (default `*`).
    #[serde(default)]
    pub tool_id: Option<String>,
    /// The repository or working directory.
    #[serde(default)]
    pub repo: Option<String>,
    /// The session's tags; the first is the `session_tag` rules match.
    #[serde(default)]
    pub session_tags: Vec<String>,
    /// The branch, for the risk classifier.
    #[serde(default)]
    pub branch: Option<String>,
    /// `passing`, `failing` or `unknown`, for the risk classifier.
    #[serde(default)]
    pub ci_status: Option<String>,
}

fn default_prompt_type() -> String {
    "yes_no".to_owned()
}

fn default_confidence() -> String {
    "high".to_owned()
}

/// Why a test event cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrialError {
    /// A field is out of bounds or not one of the allowed values.
    #[error("{field}: {message}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The stored policy does not compile (a validator change since it was stored).
    #[error("the policy cannot be evaluated: {0}")]
    Unevaluable(String),
}

/// The decision on a test event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrialOutcome {
    /// `off`, `assist` or `full`.
    pub autonomy_mode: String,
    /// The policy's own action (`require_human` without evaluation when the mode is `off`).
    pub policy_action: String,
    /// The reply an `auto_reply` would send; `""` otherwise.
    pub reply_value: String,
    /// The rule that decided; `""` when a default applied.
    pub matched_rule: String,
    /// What the agent would be told: the policy's action in `full` mode, `require_human` in
    /// `assist` and `off`.
    pub action_taken: String,
    /// The policy's action when the agent is told something else (assist mode).
    pub suggested_action: Option<String>,
    /// Why, in one line, as the trace entry says it.
    pub explanation: String,
    /// Every rule up to the one that decided, with the criterion that decided it.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<RuleExplanation>,
    /// `low`, `medium`, `high` or `critical` (`risk.md`, of the policy's action).
    pub risk_level: String,
    /// The table rows that fired.
    pub risk_reasons: Vec<String>,
}

impl TrialEvent {
    fn check(&self) -> Result<(), TrialError> {
        let invalid = |field, message: String| TrialError::Invalid { field, message };
        if self.prompt_text.len() > MAX_PROMPT_BYTES {
            return Err(invalid(
                "prompt_text",
                format!("at most {MAX_PROMPT_BYTES} bytes"),
            ));
        }
        if !PROMPT_TYPES.contains(&self.prompt_type.as_str()) {
            return Err(invalid(
                "prompt_type",
                format!("expected one of {}", PROMPT_TYPES.join(", ")),
            ));
        }
        if self.session_tags.len() > MAX_TAGS {
            return Err(invalid("session_tags", format!("at most {MAX_TAGS} tags")));
        }
        Ok(())
    }
}

/// Decides `event` against `policy` as a fresh runtime would.
pub fn decide(policy: &Policy, event: &TrialEvent) -> Result<TrialOutcome, TrialError> {
    event.check()?;
    let evaluator =
        Evaluator::new(policy.clone()).map_err(|e| TrialError::Unevaluable(e.to_string()))?;
    let confidence = Confidence::normalise(&event.confidence);
    let probe = Event {
        prompt_text: &event.prompt_text,
        prompt_type: &event.prompt_type,
        confidence,
        tool_id: event.tool_id.as_deref().unwrap_or("*"),
        repo: event.repo.as_deref().unwrap_or(""),
        session_tag: event.session_tags.first().map_or("", String::as_str),
    };
    let ask = Action::RequireHuman { message: None };
    // The same shaping as the daemon's decision: the mode changes what the agent is told, never
    // what the policy chose.
    let (policy_action, matched_rule, told, explanation, rules) =
        if policy.autonomy_mode == AutonomyMode::Off {
            (
                ask.clone(),
                String::new(),
                ask,
                "autonomy mode off: not evaluated, a person decides".to_owned(),
                Vec::new(),
            )
        } else {
            let decision = evaluator.evaluate(&probe);
            let mut explanation = match decision.rule {
                Some(rule) => rule
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("rule {} matched", rule.id)),
                None if confidence == Confidence::Low => {
                    "no rule matched; low confidence: defaults.low_confidence".to_owned()
                }
                None => "no rule matched: defaults.no_match".to_owned(),
            };
            let action = decision.action.clone();
            let mut told = action.clone();
            if policy.autonomy_mode == AutonomyMode::Assist
                && !matches!(told, Action::RequireHuman { .. })
            {
                told = ask;
                explanation = format!(
                    "assist mode: a person decides; the policy suggests {}",
                    action.type_name()
                );
            }
            (
                action,
                decision.matched_rule().to_owned(),
                told,
                explanation,
                evaluator.explain(&probe),
            )
        };
    let risk = classify(&RiskInput {
        action: policy_action.type_name(),
        prompt_type: &event.prompt_type,
        confidence,
        prompt_text: &event.prompt_text,
        branch: event.branch.as_deref().unwrap_or(""),
        ci_status: event.ci_status.as_deref().unwrap_or(""),
        session_tags: &event.session_tags,
    });
    let suggested_action = (told.type_name() != policy_action.type_name())
        .then(|| policy_action.type_name().to_owned());
    Ok(TrialOutcome {
        autonomy_mode: policy.autonomy_mode.as_str().to_owned(),
        policy_action: policy_action.type_name().to_owned(),
        reply_value: policy_action.reply_value().to_owned(),
        matched_rule,
        action_taken: told.type_name().to_owned(),
        suggested_action,
        explanation,
        rules,
        risk_level: risk.level.name().to_owned(),
        risk_reasons: risk.reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validation::check;

    fn event(text: &str) -> TrialEvent {
        serde_json::from_value(serde_json::json!({"prompt_text": text})).unwrap()
    }

    const POLICY: &str = "policy_version: \"1\"\nname: t\nautonomy_mode: full\nrules:\n  - id: no-rm\n    match: {contains: \"rm -rf\"}\n    action: {type: deny, reason: destructive}\n  - id: yes\n    match: {prompt_type: [yes_no], min_confidence: high}\n    action: {type: auto_reply, value: \"y\"}\n";

    #[test]
    fn the_matching_rule_decides_with_its_explanation_and_risk() {
        let policy = check(POLICY, None).unwrap().policy;
        let outcome = decide(&policy, &event("Continue? [y/n]")).unwrap();
        assert_eq!(
            (
                outcome.policy_action.as_str(),
                outcome.reply_value.as_str(),
                outcome.matched_rule.as_str(),
                outcome.action_taken.as_str()
            ),
            ("auto_reply", "y", "yes", "auto_reply")
        );
        assert_eq!(outcome.rules.len(), 2);
        assert!(!outcome.rules[0].matched && outcome.rules[1].matched);
        assert_eq!(outcome.risk_level, "low");
        let outcome = decide(&policy, &event("run rm -rf / now?")).unwrap();
        assert_eq!(
            (
                outcome.policy_action.as_str(),
                outcome.matched_rule.as_str()
            ),
            ("deny", "no-rm")
        );
        // A low-confidence event falls to the default.
        let mut low = event("Continue?");
        low.confidence = "low".into();
        let outcome = decide(&policy, &low).unwrap();
        assert_eq!(outcome.matched_rule, "");
        assert_eq!(outcome.policy_action, "require_human");
        assert!(outcome.explanation.contains("low_confidence"));
    }

    #[test]
    fn assist_mode_tells_a_person_and_suggests_the_policys_action() {
        let assist = POLICY.replace("autonomy_mode: full", "autonomy_mode: assist");
        let policy = check(&assist, None).unwrap().policy;
        let outcome = decide(&policy, &event("Continue?")).unwrap();
        assert_eq!(outcome.policy_action, "auto_reply");
        assert_eq!(outcome.action_taken, "require_human");
        assert_eq!(outcome.suggested_action.as_deref(), Some("auto_reply"));
        let off = POLICY.replace("autonomy_mode: full", "autonomy_mode: \"off\"");
        let policy = check(&off, None).unwrap().policy;
        let outcome = decide(&policy, &event("Continue?")).unwrap();
        assert_eq!(
            (
                outcome.policy_action.as_str(),
                outcome.matched_rule.as_str()
            ),
            ("require_human", "")
        );
    }

    #[test]
    fn bad_events_are_refused_by_field() {
        let policy = check(POLICY, None).unwrap().policy;
        let mut bad = event("x");
        bad.prompt_type = "maybe".into();
        assert!(matches!(
            decide(&policy, &bad),
            Err(TrialError::Invalid {
                field: "prompt_type",
                ..
            })
        ));
        let long = event(&"x".repeat(MAX_PROMPT_BYTES + 1));
        assert!(matches!(
            decide(&policy, &long),
            Err(TrialError::Invalid {
                field: "prompt_text",
                ..
            })
        ));
    }
}
