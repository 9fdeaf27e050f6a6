//! `decision.record`: a decision made elsewhere (a person's answer, another tool's) is written
//! to the trace like any other: in the v2 chain, or the v1 file while `decision_trace_v2` is off.

use std::sync::Arc;

use atlasbridge_protocol::ErrorObject;
use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::methods::{EvaluateParams, EvaluateResult, RecordParams, RecordResult};
use atlasbridge_protocol::risk::{RiskAssessment, RiskInput, classify};

use super::RequestContext;

use crate::decisions::entry::{self, Entry};
use crate::decisions::memory::Claim;

pub(crate) use atlasbridge_protocol::risk::PROMPT_TYPES;

/// Longest accepted identifier (session, prompt, agent…).
const MAX_ID_CHARS: usize = 256;

/// Longest accepted free value (reply, repo path…).
const MAX_VALUE_CHARS: usize = 4096;

fn check_id(field: &str, value: &str) -> Result<(), ErrorObject> {
    if value.is_empty() {
        return Err(ErrorObject::invalid_params(
            field,
            format!("{field} must not be empty"),
        ));
    }
    check_len(field, value, MAX_ID_CHARS)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ErrorObject> {
    if value.chars().count() > max {
        return Err(ErrorObject::invalid_params(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(())
}

fn validate(params: &RecordParams) -> Result<(), ErrorObject> {
    check_id("session_id", &params.session_id)?;
    check_id("prompt_id", &params.prompt_id)?;
    if !PROMPT_TYPES.contains(&params.prompt_type.as_str()) {
        return Err(ErrorObject::invalid_params(
            "prompt_type",
            format!("prompt_type must be one of {}", PROMPT_TYPES.join(", ")),
        ));
    }
    check_id("action_taken", &params.action_taken)?;
    check_len("action_taken", &params.action_taken, 64)?;
    for (field, value) in [
        ("agent_id", &params.agent_id),
        ("tool_id", &params.tool_id),
        ("idempotency_key", &params.idempotency_key),
    ] {
        if let Some(value) = value {
            check_len(field, value, MAX_ID_CHARS)?;
        }
    }
    for (field, value) in [
        ("repo", &params.repo),
        ("branch", &params.branch),
        ("ci_status", &params.ci_status),
        ("reply_value", &params.reply_value),
        ("prompt_text", &params.prompt_text),
    ] {
        if let Some(value) = value {
            check_len(field, value, MAX_VALUE_CHARS)?;
        }
    }
    check_len("human_actor", &params.human_actor, MAX_ID_CHARS)?;
    check_len("escalation_status", &params.escalation_status, 64)?;
    Ok(())
}

/// Longest prompt text `decision.evaluate` reads (it is matched and classified, never stored).
const MAX_PROMPT_CHARS: usize = 64 * 1024;

fn validate_event(params: &EvaluateParams) -> Result<(), ErrorObject> {
    check_id("session_id", &params.session_id)?;
    check_id("prompt_id", &params.prompt_id)?;
    if !PROMPT_TYPES.contains(&params.prompt_type.as_str()) {
        return Err(ErrorObject::invalid_params(
            "prompt_type",
            format!("prompt_type must be one of {}", PROMPT_TYPES.join(", ")),
        ));
    }
    check_len("prompt_text", &params.prompt_text, MAX_PROMPT_CHARS)?;
    for (field, value) in [
        ("agent_id", &params.agent_id),
        ("tool_id", &params.tool_id),
        ("idempotency_key", &params.idempotency_key),
    ] {
        if let Some(value) = value {
            check_id(field, value)?;
            check_len(field, value, MAX_ID_CHARS)?;
        }
    }
    for (field, value) in [
        ("repo", &params.repo),
        ("branch", &params.branch),
        ("ci_status", &params.ci_status),
    ] {
        if let Some(value) = value {
            check_len(field, value, MAX_VALUE_CHARS)?;
        }
    }
    for (index, tag) in params.session_tags.iter().flatten().enumerate() {
        check_len(&format!("session_tags[{index}]"), tag, MAX_ID_CHARS)?;
    }
    Ok(())
}

pub(super) async fn evaluate(
    ctx: &RequestContext<'_>,
    params: EvaluateParams,
) -> Result<EvaluateResult, ErrorObject> {
    validate_event(&params)?;
    ctx.daemon
        .stores()
        .decisions
        .evaluate(ctx.daemon, params)
        .await
}

/// A repeat of an idempotency key in a session gets the first result and appends nothing, as
/// for `decision.evaluate` (they share the key space: one key, one decision).
pub(super) async fn record(
    ctx: &RequestContext<'_>,
    mut params: RecordParams,
) -> Result<RecordResult, ErrorObject> {
    validate(&params)?;
    ctx.daemon
        .stores()
        .decisions
        .sessions
        .inherit_record(&mut params);
    let sessions = &ctx.daemon.stores().decisions.sessions;
    let session_id = params.session_id.clone();
    let Some(key) = params.idempotency_key.clone().filter(|k| !k.is_empty()) else {
        let result = append_record(ctx, params).await?;
        sessions.count_decision(&session_id);
        return Ok(result);
    };
    let memory = &ctx.daemon.stores().decisions.memory;
    loop {
        let changed = memory.changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match memory.claim(&params.session_id, &key) {
            Claim::Answered(first) => {
                return Ok(RecordResult {
                    entry_id: first.entry_id.clone(),
                    seq: first.seq,
                    entry_hash: first.entry_hash.clone(),
                    risk_level: first.risk_level.clone(),
                });
            }
            Claim::Busy => changed.await,
            Claim::Mine(ticket) => {
                let action = params.action_taken.clone();
                let reply = params.reply_value.clone().unwrap_or_default();
                // A failed append drops the ticket, which frees the key.
                let result = append_record(ctx, params).await?;
                sessions.count_decision(&session_id);
                ticket.answer(Arc::new(recorded_answer(&result, action, reply)));
                return Ok(result);
            }
        }
    }
}

/// What a repeat of a recorded decision is answered with.
fn recorded_answer(result: &RecordResult, action: String, reply_value: String) -> EvaluateResult {
    EvaluateResult {
        policy_action: String::new(),
        suggested_action: None,
        action,
        reply_value,
        matched_rule: String::new(),
        autonomy_mode: String::new(),
        risk_level: result.risk_level.clone(),
        risk_reasons: Vec::new(),
        policy_hash: String::new(),
        entry_id: result.entry_id.clone(),
        seq: result.seq,
        entry_hash: result.entry_hash.clone(),
        explanation: "a recorded decision".to_owned(),
        repeated: true,
    }
}

async fn append_record(
    ctx: &RequestContext<'_>,
    params: RecordParams,
) -> Result<RecordResult, ErrorObject> {
    let risk = assess(ctx, &params);
    let (risk_level, risk_reasons) = match risk {
        Some(risk) => (risk.level.name().to_owned(), risk.reasons),
        None => (String::new(), Vec::new()),
    };
    let recorded_by = format!(
        "recorded by {}",
        if params.human_actor.is_empty() {
            "a client"
        } else {
            params.human_actor.as_str()
        }
    );
    let stored = entry::append(
        ctx.daemon,
        &Entry {
            session_id: &params.session_id,
            agent_id: entry::or_empty(&params.agent_id),
            prompt_id: &params.prompt_id,
            prompt_type: &params.prompt_type,
            policy_name: "",
            policy_version: "",
            policy_hash: "",
            matched_rule: "",
            autonomy_mode: "",
            policy_action: "",
            action_taken: &params.action_taken,
            reply_value: entry::or_empty(&params.reply_value),
            confidence: Confidence::normalise(&params.confidence),
            risk_level: &risk_level,
            risk_reasons: &risk_reasons,
            escalation_status: &params.escalation_status,
            human_actor: &params.human_actor,
            ci_status: entry::or_empty(&params.ci_status),
            branch: entry::or_empty(&params.branch),
            idempotency_key: entry::or_empty(&params.idempotency_key),
            replay_safe: false,
            explanation: &recorded_by,
        },
    )
    .await?;
    // The v1 record has no risk member; its result reports none either.
    let risk_level = if stored.seq.is_some() {
        risk_level
    } else {
        String::new()
    };
    Ok(RecordResult {
        entry_id: stored.entry_id,
        seq: stored.seq,
        entry_hash: stored.entry_hash,
        risk_level,
    })
}

/// The risk classifier's verdict on what was done, when the `risk_classifier` feature is on.
/// The prompt text is read here and never stored.
fn assess(ctx: &RequestContext<'_>, params: &RecordParams) -> Option<RiskAssessment> {
    if !ctx
        .daemon
        .settings()
        .features
        .is_enabled(Feature::RiskClassifier)
    {
        return None;
    }
    let no_tags = Vec::new();
    Some(classify(&RiskInput {
        action: &params.action_taken,
        prompt_type: &params.prompt_type,
        confidence: atlasbridge_protocol::confidence::Confidence::normalise(&params.confidence),
        prompt_text: params.prompt_text.as_deref().unwrap_or(""),
        branch: params.branch.as_deref().unwrap_or(""),
        ci_status: params.ci_status.as_deref().unwrap_or(""),
        session_tags: params.session_tags.as_ref().unwrap_or(&no_tags),
    }))
}
