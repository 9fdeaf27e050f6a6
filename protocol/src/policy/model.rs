//! The normalised policy: what a policy file means once it is loaded, `extends` merged and every
//! default filled in. Its JSON form is what [`Policy::hash`] hashes, so two files that mean the
//! same thing have one identity whatever their comments, key order or quoting.
//!
//! Only data lives here: regexes are kept as text (validated at load) so the serialised form stays
//! plain JSON; [`super::pattern::compile`] builds the matcher with the flags the language fixes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical;
use crate::confidence::Confidence;
use crate::hash::sha256_hex;

/// Hex characters in [`Policy::short_hash`].
pub const SHORT_HASH_LEN: usize = 16;

/// A loaded policy in normal form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The language version the file declared.
    pub policy_version: PolicyVersion,
    /// `name`, `"default"` when the file has none.
    pub name: String,
    /// `autonomy_mode`, `assist` when the file has none.
    pub autonomy_mode: AutonomyMode,
    /// In file order (after `extends`: the child's, then the base's it does not shadow); the
    /// first rule whose criteria hold decides.
    pub rules: Vec<Rule>,
    /// What applies when no rule matches.
    pub defaults: Defaults,
}

/// `policy_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyVersion {
    /// `"0"`: flat criteria only.
    #[serde(rename = "0")]
    V0,
    /// `"1"`: adds `extends`, `max_confidence`, `session_tag`, `any_of`, `none_of`.
    #[serde(rename = "1")]
    V1,
}

impl PolicyVersion {
    /// The string a file writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0 => "0",
            Self::V1 => "1",
        }
    }
}

impl std::fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `autonomy_mode`: what the agent is told, never what is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutonomyMode {
    /// No evaluation; every answer is `require_human`.
    Off,
    /// Evaluated; the answer is `require_human` carrying the policy's action as a suggestion.
    Assist,
    /// The policy's action is the answer.
    Full,
}

impl AutonomyMode {
    /// The name a file writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Assist => "assist",
            Self::Full => "full",
        }
    }

    /// Parses the exact name a file writes.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "off" => Some(Self::Off),
            "assist" => Some(Self::Assist),
            "full" => Some(Self::Full),
            _ => None,
        }
    }
}

impl std::fmt::Display for AutonomyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `defaults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// For an event no rule matched whose confidence is not `low`.
    pub no_match: DefaultAction,
    /// For an event no rule matched whose confidence is `low` (or unknown, which counts as low).
    pub low_confidence: DefaultAction,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            no_match: DefaultAction::RequireHuman,
            low_confidence: DefaultAction::RequireHuman,
        }
    }
}

impl Defaults {
    /// The default that applies to an unmatched event of this confidence.
    pub fn for_confidence(&self, confidence: Confidence) -> DefaultAction {
        if confidence == Confidence::Low {
            self.low_confidence
        } else {
            self.no_match
        }
    }
}

/// What a default may be: never an automatic answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// Ask a person.
    RequireHuman,
    /// Refuse.
    Deny,
}

impl DefaultAction {
    /// The name a file writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequireHuman => "require_human",
            Self::Deny => "deny",
        }
    }

    /// The same decision as a rule action (no message or reason).
    pub fn to_action(self) -> Action {
        match self {
            Self::RequireHuman => Action::RequireHuman { message: None },
            Self::Deny => Action::Deny { reason: None },
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique in the policy; `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
    pub id: String,
    /// Free text for people.
    pub description: Option<String>,
    /// When the rule applies (the file's `match`).
    #[serde(rename = "match")]
    pub matcher: Criteria,
    /// What it decides.
    pub action: Action,
    /// Per session and rule; once reached the decision becomes `require_human`.
    pub max_auto_replies: Option<u32>,
}

/// A block of match criteria: every given criterion must hold. Absent criteria hold, so the
/// normal form spells each one out with the value that always holds where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    /// `"*"` or the exact, case-sensitive tool id.
    pub tool_id: String,
    /// Plain prefix of the event's repo/cwd.
    pub repo: Option<String>,
    /// The event's prompt type must be one of these; `["*"]` (the default) holds for every
    /// type, and an empty list (written `prompt_type: []`) for none, as in the original.
    pub prompt_type: Vec<PromptTypeFilter>,
    /// The event's confidence must be at least this (default `low`).
    pub min_confidence: Confidence,
    /// v1: the event's confidence must be at most this.
    pub max_confidence: Option<Confidence>,
    /// Text or regex the prompt must contain.
    pub contains: Option<Contains>,
    /// v1: exact equality with the event's session tag.
    pub session_tag: Option<String>,
    /// v1: holds if any block holds; an empty list never holds.
    pub any_of: Option<Vec<Criteria>>,
    /// v1: fails if any block holds; an empty list always passes.
    pub none_of: Option<Vec<Criteria>>,
}

impl Default for Criteria {
    /// The empty block `{}`, which every event satisfies.
    fn default() -> Self {
        Self {
            tool_id: ANY_TOOL.to_owned(),
            repo: None,
            prompt_type: vec![PromptTypeFilter::Any],
            min_confidence: Confidence::Low,
            max_confidence: None,
            contains: None,
            session_tag: None,
            any_of: None,
            none_of: None,
        }
    }
}

/// The `tool_id` that matches every tool.
pub const ANY_TOOL: &str = "*";

/// `contains` with its `contains_is_regex` flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contains {
    /// Non-empty; a pattern when `is_regex`.
    pub text: String,
    /// Regex search (unanchored, case-insensitive, `.` matches newline) instead of a
    /// case-insensitive substring test.
    pub is_regex: bool,
}

/// An entry of `prompt_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PromptTypeFilter {
    /// `yes_no`.
    #[serde(rename = "yes_no")]
    YesNo,
    /// `confirm_enter`.
    #[serde(rename = "confirm_enter")]
    ConfirmEnter,
    /// `multiple_choice`.
    #[serde(rename = "multiple_choice")]
    MultipleChoice,
    /// `free_text`.
    #[serde(rename = "free_text")]
    FreeText,
    /// `*`: any type.
    #[serde(rename = "*")]
    Any,
}

impl PromptTypeFilter {
    /// Every name a file may write, in the order error messages list them.
    pub const NAMES: [&'static str; 5] = [
        "yes_no",
        "confirm_enter",
        "multiple_choice",
        "free_text",
        "*",
    ];

    /// The name a file writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::YesNo => "yes_no",
            Self::ConfirmEnter => "confirm_enter",
            Self::MultipleChoice => "multiple_choice",
            Self::FreeText => "free_text",
            Self::Any => "*",
        }
    }

    /// Parses the exact name a file writes.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "yes_no" => Some(Self::YesNo),
            "confirm_enter" => Some(Self::ConfirmEnter),
            "multiple_choice" => Some(Self::MultipleChoice),
            "free_text" => Some(Self::FreeText),
            "*" => Some(Self::Any),
            _ => None,
        }
    }

    /// Whether an event of `prompt_type` (as the client sent it) passes this entry.
    pub fn accepts(self, prompt_type: &str) -> bool {
        self == Self::Any || self.as_str() == prompt_type
    }
}

/// A rule's decision, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Answer for the user.
    AutoReply {
        /// 0–4096 characters; `"\n"` presses Enter.
        value: String,
        /// Checked against `value` at load; kept for the evaluator and for people.
        constraints: ReplyConstraints,
    },
    /// Ask a person.
    RequireHuman {
        /// Extra context for the person.
        message: Option<String>,
    },
    /// Refuse.
    Deny {
        /// Why, for the person and the trace.
        reason: Option<String>,
    },
    /// Tell a person, answer nothing, wait for nothing.
    NotifyOnly {
        /// The notification text.
        message: Option<String>,
    },
}

impl Action {
    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::AutoReply { .. } => "auto_reply",
            Self::RequireHuman { .. } => "require_human",
            Self::Deny { .. } => "deny",
            Self::NotifyOnly { .. } => "notify_only",
        }
    }

    /// The reply an `auto_reply` sends, `""` for every other action (as the trace records it).
    pub fn reply_value(&self) -> &str {
        match self {
            Self::AutoReply { value, .. } => value,
            _ => "",
        }
    }
}

/// `auto_reply`'s `constraints`, with their defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyConstraints {
    /// 1–4096 characters.
    pub max_length: Option<u32>,
    /// The value must be ASCII digits only.
    pub numeric_only: bool,
    /// The value must be one of these (non-empty when given).
    pub allowed_choices: Option<Vec<String>>,
    /// Kept from the original language, which never acted on it.
    pub allow_free_text: bool,
}

impl Default for ReplyConstraints {
    fn default() -> Self {
        Self {
            max_length: None,
            numeric_only: false,
            allowed_choices: None,
            allow_free_text: true,
        }
    }
}

impl Policy {
    /// The normal form as JSON: the input of [`Policy::hash`] and of [`super::diff()`].
    pub fn to_json(&self) -> Value {
        // Cannot fail: every field is a string, bool, integer, list or struct with string keys.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `policy_hash`: lowercase hex SHA-256 of the RFC 8785 form of [`Policy::to_json`].
    pub fn hash(&self) -> String {
        sha256_hex(&canonical::to_canonical_vec(&self.to_json()))
    }

    /// The first 16 hex of [`Policy::hash`], for display (and the default idempotency key).
    pub fn short_hash(&self) -> String {
        let mut hash = self.hash();
        hash.truncate(SHORT_HASH_LEN);
        hash
    }

    /// The rule with this id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// The policy used when none is configured: every prompt goes to a person.
pub fn builtin_default() -> Policy {
    Policy {
        policy_version: PolicyVersion::V0,
        name: "safe-default".to_owned(),
        autonomy_mode: AutonomyMode::Assist,
        rules: vec![Rule {
            id: "default-require-human".to_owned(),
            description: Some("Catch-all: route every prompt to the human operator.".to_owned()),
            matcher: Criteria::default(),
            action: Action::RequireHuman {
                message: Some(
                    "No policy file configured — all prompts require human input.".to_owned(),
                ),
            },
            max_auto_replies: None,
        }],
        defaults: Defaults::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_default_shape_and_stable_hash() {
        let p = builtin_default();
        assert_eq!(p.policy_version, PolicyVersion::V0);
        assert_eq!(p.name, "safe-default");
        assert_eq!(p.autonomy_mode, AutonomyMode::Assist);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].id, "default-require-human");
        assert_eq!(p.rules[0].matcher, Criteria::default());
        assert_eq!(p.rules[0].action.type_name(), "require_human");
        assert_eq!(p.hash(), builtin_default().hash());
        assert_eq!(p.hash().len(), 64);
        assert_eq!(p.short_hash(), p.hash()[..SHORT_HASH_LEN]);
    }

    #[test]
    fn normal_form_spells_out_every_field() {
        let json = builtin_default().to_json();
        let rule = &json["rules"][0];
        assert_eq!(json["policy_version"], "0");
        assert_eq!(rule["match"]["tool_id"], "*");
        assert_eq!(rule["match"]["prompt_type"], serde_json::json!(["*"]));
        assert_eq!(rule["match"]["min_confidence"], "low");
        assert!(rule["match"]["any_of"].is_null());
        assert_eq!(rule["action"]["type"], "require_human");
        assert_eq!(json["defaults"]["no_match"], "require_human");
        let back: Policy = serde_json::from_value(json).unwrap();
        assert_eq!(back, builtin_default());
    }

    #[test]
    fn defaults_follow_confidence() {
        let d = Defaults {
            no_match: DefaultAction::Deny,
            low_confidence: DefaultAction::RequireHuman,
        };
        assert_eq!(
            d.for_confidence(Confidence::Low),
            DefaultAction::RequireHuman
        );
        assert_eq!(d.for_confidence(Confidence::High), DefaultAction::Deny);
    }
}
