//! Evaluation of one prompt event against a policy: a pure function of the policy and the event.
//!
//! It lives in the protocol crate, next to the model, because two programs run it: the daemon
//! for every decision, and `atlasbridge policy test`, which must give the same answer without a
//! daemon (and the CLI may not depend on the daemon crate).
//!
//! Regexes are compiled once, when a policy is prepared for evaluation ([`Evaluator::new`]), with
//! the same [`pattern::compile`] that validated them at load, so what loaded is what runs.

use regex::Regex;
use serde::Serialize;

use super::model::{Action, Criteria, DefaultAction, Policy, Rule};
use super::pattern::{self, PatternError};
use crate::confidence::Confidence;

/// One prompt event, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The prompt text (read, never stored).
    pub prompt_text: &'a str,
    /// `yes_no`, `confirm_enter`, `multiple_choice` or `free_text`.
    pub prompt_type: &'a str,
    /// The event's confidence, normalised.
    pub confidence: Confidence,
    /// The agent's tool.
    pub tool_id: &'a str,
    /// The repository or working directory.
    pub repo: &'a str,
    /// The session's tag (`""` when none).
    pub session_tag: &'a str,
}

/// Why a rule did or did not match, for `--explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleExplanation {
    /// The rule.
    pub rule_id: String,
    /// Whether its criteria held.
    pub matched: bool,
    /// The criterion that decided: the first that failed, or `"all criteria hold"`.
    pub detail: String,
}

/// The policy's decision on one event (before the autonomy mode, the kill switch, the risk
/// threshold or `max_auto_replies` shape what the agent is told).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    /// The rule that decided, `None` when a default applied.
    pub rule: Option<&'p Rule>,
    /// The action: the rule's, or the default's.
    pub action: Action,
}

impl Decision<'_> {
    /// `matched_rule` as the trace records it: the rule id, or `""` for a default.
    pub fn matched_rule(&self) -> &str {
        self.rule.map_or("", |r| r.id.as_str())
    }
}

/// A policy prepared for evaluation.
#[derive(Debug, Clone)]
pub struct Evaluator {
    policy: Policy,
    rules: Vec<CompiledCriteria>,
}

/// A criteria block with its pattern compiled and its needle lower-cased.
#[derive(Debug, Clone)]
struct CompiledCriteria {
    contains: Option<Needle>,
    any_of: Option<Vec<CompiledCriteria>>,
    none_of: Option<Vec<CompiledCriteria>>,
}

#[derive(Debug, Clone)]
enum Needle {
    Text(String),
    Pattern(Regex),
}

impl CompiledCriteria {
    fn new(criteria: &Criteria) -> Result<Self, PatternError> {
        let contains = match &criteria.contains {
            None => None,
            Some(c) if c.is_regex => Some(Needle::Pattern(pattern::compile(&c.text)?)),
            Some(c) => Some(Needle::Text(c.text.to_lowercase())),
        };
        let blocks = |list: &Option<Vec<Criteria>>| {
            list.as_ref()
                .map(|blocks| blocks.iter().map(Self::new).collect::<Result<Vec<_>, _>>())
                .transpose()
        };
        Ok(Self {
            contains,
            any_of: blocks(&criteria.any_of)?,
            none_of: blocks(&criteria.none_of)?,
        })
    }
}

/// The event with its text lower-cased once, for the substring tests.
struct Prepared<'a> {
    event: &'a Event<'a>,
    lower_text: String,
}

impl Evaluator {
    /// Prepares `policy`. A pattern that does not compile fails here; a policy that went through
    /// the loader never does.
    pub fn new(policy: Policy) -> Result<Self, PatternError> {
        let rules = policy
            .rules
            .iter()
            .map(|rule| CompiledCriteria::new(&rule.matcher))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { policy, rules })
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The first rule whose criteria hold decides; with none, a `low`-confidence event gets
    /// `defaults.low_confidence` and any other `defaults.no_match`.
    pub fn evaluate(&self, event: &Event<'_>) -> Decision<'_> {
        let prepared = Prepared {
            event,
            lower_text: event.prompt_text.to_lowercase(),
        };
        for (rule, compiled) in self.policy.rules.iter().zip(&self.rules) {
            if block_fails(&rule.matcher, compiled, &prepared).is_none() {
                return Decision {
                    rule: Some(rule),
                    action: rule.action.clone(),
                };
            }
        }
        Decision {
            rule: None,
            action: self.default_action(event.confidence).to_action(),
        }
    }

    /// Every rule up to and including the one that decides, with the criterion that decided.
    pub fn explain(&self, event: &Event<'_>) -> Vec<RuleExplanation> {
        let prepared = Prepared {
            event,
            lower_text: event.prompt_text.to_lowercase(),
        };
        let mut out = Vec::new();
        for (rule, compiled) in self.policy.rules.iter().zip(&self.rules) {
            let failed = block_fails(&rule.matcher, compiled, &prepared);
            let matched = failed.is_none();
            out.push(RuleExplanation {
                rule_id: rule.id.clone(),
                matched,
                detail: failed.map_or_else(
                    || "all criteria hold".to_owned(),
                    |f| f.describe(&rule.matcher, compiled, event),
                ),
            });
            if matched {
                break;
            }
        }
        out
    }

    fn default_action(&self, confidence: Confidence) -> DefaultAction {
        self.policy.defaults.for_confidence(confidence)
    }
}

/// The first criterion of a block that failed. Plain data, so that `evaluate` — which only needs
/// to know whether a rule holds — allocates nothing; `explain` renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Tool,
    Repo,
    PromptType,
    MinConfidence,
    MaxConfidence,
    Contains,
    SessionTag,
    AnyOf { blocks: usize },
    NoneOf { index: usize },
}

impl Failure {
    fn describe(
        self,
        criteria: &Criteria,
        compiled: &CompiledCriteria,
        event: &Event<'_>,
    ) -> String {
        match self {
            Self::Tool => format!("tool_id: {:?} is not {:?}", event.tool_id, criteria.tool_id),
            Self::Repo => format!(
                "repo: {:?} does not start with {:?}",
                event.repo,
                criteria.repo.as_deref().unwrap_or("")
            ),
            Self::PromptType => {
                let listed: Vec<&str> = criteria.prompt_type.iter().map(|f| f.as_str()).collect();
                format!(
                    "prompt_type: {:?} is not one of [{}]",
                    event.prompt_type,
                    listed.join(", ")
                )
            }
            Self::MinConfidence => format!(
                "min_confidence: {} is below {}",
                event.confidence, criteria.min_confidence
            ),
            Self::MaxConfidence => format!(
                "max_confidence: {} is above {}",
                event.confidence,
                criteria.max_confidence.map_or("", |c| c.name())
            ),
            Self::Contains => match &compiled.contains {
                Some(Needle::Pattern(regex)) => {
                    format!("contains: the prompt does not match /{}/", regex.as_str())
                }
                Some(Needle::Text(needle)) => {
                    format!("contains: the prompt does not contain {needle:?}")
                }
                None => "contains".to_owned(),
            },
            Self::SessionTag => format!(
                "session_tag: {:?} is not {:?}",
                event.session_tag,
                criteria.session_tag.as_deref().unwrap_or("")
            ),
            Self::AnyOf { blocks: 0 } => "any_of: an empty list never holds".to_owned(),
            Self::AnyOf { blocks } => format!("any_of: none of the {blocks} blocks holds"),
            Self::NoneOf { index } => format!("none_of: block {index} holds"),
        }
    }
}

/// `None` when every criterion of the block holds, else the first that failed — checked in the
/// order of the language: tool, repo, prompt type, min and max confidence, contains, session
/// tag, then `any_of` and `none_of`.
fn block_fails(
    criteria: &Criteria,
    compiled: &CompiledCriteria,
    p: &Prepared<'_>,
) -> Option<Failure> {
    let event = p.event;
    if criteria.tool_id != "*" && criteria.tool_id != event.tool_id {
        return Some(Failure::Tool);
    }
    if let Some(repo) = &criteria.repo
        && !event.repo.starts_with(repo.as_str())
    {
        return Some(Failure::Repo);
    }
    if !criteria
        .prompt_type
        .iter()
        .any(|filter| filter.accepts(event.prompt_type))
    {
        return Some(Failure::PromptType);
    }
    if event.confidence < criteria.min_confidence {
        return Some(Failure::MinConfidence);
    }
    if criteria
        .max_confidence
        .is_some_and(|max| event.confidence > max)
    {
        return Some(Failure::MaxConfidence);
    }
    let contains = match &compiled.contains {
        Some(Needle::Text(needle)) => p.lower_text.contains(needle.as_str()),
        Some(Needle::Pattern(regex)) => regex.is_match(event.prompt_text),
        None => true,
    };
    if !contains {
        return Some(Failure::Contains);
    }
    if let Some(tag) = &criteria.session_tag
        && (event.session_tag.is_empty() || event.session_tag != tag)
    {
        return Some(Failure::SessionTag);
    }
    if let (Some(blocks), Some(compiled_blocks)) = (&criteria.any_of, &compiled.any_of) {
        let held = blocks
            .iter()
            .zip(compiled_blocks)
            .any(|(block, compiled)| block_fails(block, compiled, p).is_none());
        if !held {
            return Some(Failure::AnyOf {
                blocks: blocks.len(),
            });
        }
    }
    if let (Some(blocks), Some(compiled_blocks)) = (&criteria.none_of, &compiled.none_of) {
        let holding = blocks
            .iter()
            .zip(compiled_blocks)
            .position(|(block, compiled)| block_fails(block, compiled, p).is_none());
        if let Some(index) = holding {
            return Some(Failure::NoneOf { index });
        }
    }
    None
}

/// The default idempotency key when a client gives none: the first 16 hex of
/// SHA-256(`"{policy_hash_short}:{prompt_id}:{session_id}"`).
pub fn default_idempotency_key(
    policy_hash_short: &str,
    prompt_id: &str,
    session_id: &str,
) -> String {
    let digest =
        crate::hash::sha256_hex(format!("{policy_hash_short}:{prompt_id}:{session_id}").as_bytes());
    digest[..16].to_owned()
}
