//! The decision service behind `decision.evaluate`: choose the policy, evaluate, apply the caps,
//! the autonomy mode and the risk threshold, classify, append to the trace, and answer only once
//! the entry is durable. It fails closed: no policy is -32001, a failed append -32004.

pub mod autopilot;
pub mod entry;
pub mod memory;
pub mod pins;
pub mod policy;
pub mod sessions;

use std::sync::Arc;

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::methods::{EvaluateParams, EvaluateResult};
use atlasbridge_protocol::policy::evaluate::{Event, default_idempotency_key};
use atlasbridge_protocol::policy::{Action, AutonomyMode};
use atlasbridge_protocol::risk::{RiskInput, classify};
use atlasbridge_protocol::{ErrorCode, ErrorObject};
use serde_json::json;

use self::autopilot::{Autopilot, State};
use self::memory::{Claim, Memory};
use self::pins::PinStore;
use self::policy::{ActivePolicy, PolicyState};
use self::sessions::Sessions;
use crate::state::Daemon;

/// The policy state and what past decisions constrain.
#[derive(Debug)]
pub struct DecisionService {
    /// The active policy.
    pub policy: PolicyState,
    /// Idempotency answers and auto-reply counts.
    pub memory: Memory,
    /// The kill switch.
    pub autopilot: Autopilot,
    /// Registered sessions, whose fields their events inherit.
    pub sessions: Sessions,
    /// Stored policy versions and the pins to them.
    pub pins: PinStore,
}

/// What the agent is told, and why, before the trace entry exists.
struct Outcome {
    told: Action,
    policy_action: String,
    matched_rule: String,
    suggested: Option<String>,
    explanation: String,
    risk_level: String,
    risk_reasons: Vec<String>,
}

impl DecisionService {
    /// A service whose memory is rebuilt from the trace in `trace_dir` and whose pins are read
    /// from `data_dir`.
    pub fn open(data_dir: &std::path::Path, trace_dir: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self {
            pins: PinStore::open(data_dir).map_err(std::io::Error::other)?,
            policy: PolicyState::default(),
            memory: Memory::rebuild(trace_dir)?,
            autopilot: Autopilot::default(),
            sessions: Sessions::default(),
        })
    }

    /// Decides one event, durably; a repeat of an idempotency key gets the first answer. An
    /// event of a registered session inherits the session's fields it does not give itself.
    pub async fn evaluate(
        &self,
        daemon: &Daemon,
        mut params: EvaluateParams,
    ) -> Result<EvaluateResult, ErrorObject> {
        // Before anything reads the event: matching, risk and the entry all see the same fields.
        self.sessions.inherit(&mut params);
        let policy = self.choose_policy(daemon, &params)?;
        let key = params.idempotency_key.clone().unwrap_or_else(|| {
            default_idempotency_key(policy.short_hash(), &params.prompt_id, &params.session_id)
        });
        loop {
            // Enabled before the claim, so an answer given in between still wakes this request.
            let changed = self.memory.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.memory.claim(&params.session_id, &key) {
                Claim::Answered(answer) => {
                    let mut repeated = (*answer).clone();
                    repeated.repeated = true;
                    return Ok(repeated);
                }
                // Whatever the first request's fate, look again: an answer, or a free key.
                Claim::Busy => changed.await,
                Claim::Mine(ticket) => {
                    // A failed decision drops the ticket, which frees the key.
                    let result = self.decide(daemon, &policy, &params, &key).await?;
                    ticket.answer(Arc::new(result.clone()));
                    return Ok(result);
                }
            }
        }
    }

    /// The session's pin, else the agent's, else the active policy. A client that names the
    /// policy it expects and is pinned to another gets -32002.
    fn choose_policy(
        &self,
        daemon: &Daemon,
        params: &EvaluateParams,
    ) -> Result<Arc<ActivePolicy>, ErrorObject> {
        let pinning = daemon
            .settings()
            .features
            .is_enabled(Feature::PolicyPinning);
        let pinned = pinning
            .then(|| {
                self.pins
                    .pinned(&params.session_id, params.agent_id.as_deref())
            })
            .flatten();
        if let Some((scope, hash)) = &pinned
            && let Some(expected) = &params.policy_hash
            && expected != hash
        {
            return Err(ErrorObject::new(
                ErrorCode::PinConflict,
                format!(
                    "pin conflict: this {} is pinned to policy {hash}, not {expected}",
                    pins::scope_name(*scope)
                ),
            )
            .with_data(json!({ "pinned": hash, "requested": expected })));
        }
        if let Some((_, hash)) = pinned {
            // A pinned version that cannot be read fails closed, never falls back to another.
            return self.pins.version(&hash).map_err(|e| {
                ErrorObject::new(
                    ErrorCode::NoActivePolicy,
                    format!("the pinned policy is unavailable: {e}"),
                )
            });
        }
        self.policy.active().ok_or_else(|| {
            ErrorObject::new(
                ErrorCode::NoActivePolicy,
                "no active policy: the configured policy did not load (see policy.status); \
                 treat as deny",
            )
        })
    }

    async fn decide(
        &self,
        daemon: &Daemon,
        policy: &ActivePolicy,
        params: &EvaluateParams,
        key: &str,
    ) -> Result<EvaluateResult, ErrorObject> {
        let outcome = self.outcome(daemon, policy, params);
        let rules = policy.evaluator.policy();
        let mode = rules.autonomy_mode.as_str();
        let reply_value = outcome.told.reply_value().to_owned();
        let told = outcome.told.type_name();
        let stored = entry::append(
            daemon,
            &entry::Entry {
                session_id: &params.session_id,
                agent_id: entry::or_empty(&params.agent_id),
                prompt_id: &params.prompt_id,
                prompt_type: &params.prompt_type,
                policy_name: &rules.name,
                policy_version: rules.policy_version.as_str(),
                policy_hash: &policy.hash,
                matched_rule: &outcome.matched_rule,
                autonomy_mode: mode,
                policy_action: &outcome.policy_action,
                action_taken: told,
                reply_value: &reply_value,
                confidence: Confidence::normalise(&params.confidence),
                risk_level: &outcome.risk_level,
                risk_reasons: &outcome.risk_reasons,
                escalation_status: "",
                human_actor: "",
                ci_status: entry::or_empty(&params.ci_status),
                branch: entry::or_empty(&params.branch),
                idempotency_key: key,
                replay_safe: told != "auto_reply",
                explanation: &outcome.explanation,
            },
        )
        .await?;
        if told == "auto_reply" && !outcome.matched_rule.is_empty() {
            self.memory
                .count_auto_reply(&params.session_id, &outcome.matched_rule);
        }
        self.sessions.count_decision(&params.session_id);
        if told == "require_human" {
            daemon.cloud_events().emit(
                atlasbridge_protocol::cloud::messages::kind::ESCALATION_TRIGGERED,
                json!({
                    "session_id": params.session_id,
                    "agent_id": params.agent_id,
                    "prompt_id": params.prompt_id,
                    "prompt_type": params.prompt_type,
                    "matched_rule": outcome.matched_rule,
                    "policy_action": outcome.policy_action,
                    "risk_level": outcome.risk_level,
                    "policy_hash": policy.hash,
                    "seq": stored.seq,
                    "entry_hash": stored.entry_hash,
                }),
            );
        }
        Ok(EvaluateResult {
            action: told.to_owned(),
            reply_value,
            suggested_action: outcome.suggested,
            matched_rule: outcome.matched_rule,
            policy_action: outcome.policy_action,
            autonomy_mode: mode.to_owned(),
            risk_level: outcome.risk_level,
            risk_reasons: outcome.risk_reasons,
            policy_hash: policy.hash.clone(),
            entry_id: stored.entry_id,
            seq: stored.seq,
            entry_hash: stored.entry_hash,
            explanation: outcome.explanation,
            repeated: false,
        })
    }

    /// The policy's decision, then what shapes the answer, in order: `max_auto_replies`, the
    /// autonomy mode, the risk threshold, the kill switch.
    fn outcome(&self, daemon: &Daemon, policy: &ActivePolicy, params: &EvaluateParams) -> Outcome {
        let settings = daemon.settings();
        let rules = policy.evaluator.policy();
        let tags = params.session_tags.clone().unwrap_or_default();
        let event = Event {
            prompt_text: &params.prompt_text,
            prompt_type: &params.prompt_type,
            confidence: Confidence::normalise(&params.confidence),
            tool_id: params.tool_id.as_deref().unwrap_or("*"),
            repo: params.repo.as_deref().unwrap_or(""),
            session_tag: tags.first().map_or("", String::as_str),
        };
        let ask = Action::RequireHuman { message: None };
        let (policy_action, matched_rule, mut told, mut explanation) =
            if rules.autonomy_mode == AutonomyMode::Off {
                (
                    ask.clone(),
                    String::new(),
                    ask.clone(),
                    "autonomy mode off: not evaluated, a person decides".to_owned(),
                )
            } else {
                let decision = policy.evaluator.evaluate(&event);
                let explanation = match decision.rule {
                    Some(rule) => rule
                        .description
                        .clone()
                        .unwrap_or_else(|| format!("rule {} matched", rule.id)),
                    None if event.confidence == Confidence::Low => {
                        "no rule matched; low confidence: defaults.low_confidence".to_owned()
                    }
                    None => "no rule matched: defaults.no_match".to_owned(),
                };
                let action = decision.action.clone();
                let mut told = action.clone();
                let mut why = explanation;
                if let Some(rule) = decision.rule
                    && let Some(cap) = rule.max_auto_replies
                    && matches!(action, Action::AutoReply { .. })
                    && self.memory.auto_replies(&params.session_id, &rule.id) >= cap
                {
                    told = ask.clone();
                    why = format!(
                        "rule {} reached max_auto_replies ({cap}) in this session",
                        rule.id
                    );
                }
                if rules.autonomy_mode == AutonomyMode::Assist
                    && !matches!(told, Action::RequireHuman { .. })
                {
                    told = ask.clone();
                    why = format!(
                        "assist mode: a person decides; the policy suggests {}",
                        action.type_name()
                    );
                }
                (action, decision.matched_rule().to_owned(), told, why)
            };
        let (risk_level, risk_reasons) = if settings.features.is_enabled(Feature::RiskClassifier) {
            let risk = classify(&RiskInput {
                action: policy_action.type_name(),
                prompt_type: &params.prompt_type,
                confidence: event.confidence,
                prompt_text: &params.prompt_text,
                branch: params.branch.as_deref().unwrap_or(""),
                ci_status: params.ci_status.as_deref().unwrap_or(""),
                session_tags: &tags,
            });
            if let Some(threshold) = settings.config.risk.require_human_at
                && risk.level >= threshold
                && matches!(told, Action::AutoReply { .. })
            {
                told = ask;
                explanation = format!(
                    "risk {} is at or above risk.require_human_at ({threshold}): a person decides",
                    risk.level
                );
            }
            (risk.level.name().to_owned(), risk.reasons)
        } else {
            (String::new(), Vec::new())
        };
        // Last, so that its explanation wins: while the autopilot is not running, the reason a
        // person decides is the kill switch, whatever else would also have held the answer back.
        // The policy's action is still evaluated and recorded as `policy_action`.
        match self.autopilot.state() {
            State::Running => {}
            State::Paused => {
                told = Action::RequireHuman { message: None };
                explanation = "autopilot paused: a person decides".to_owned();
            }
            State::Stopped => {
                told = Action::RequireHuman { message: None };
                explanation =
                    "autopilot stopped: a person decides until the daemon restarts".to_owned();
            }
        }
        let suggested = (told.type_name() != policy_action.type_name())
            .then(|| policy_action.type_name().to_owned());
        Outcome {
            policy_action: policy_action.type_name().to_owned(),
            told,
            matched_rule,
            suggested,
            explanation,
            risk_level,
            risk_reasons,
        }
    }
}
