//! `policy.status` and `policy.reload`.

use std::path::PathBuf;

use atlasbridge_protocol::methods::{PolicyReloadParams, PolicyStatus};
use atlasbridge_protocol::{ErrorCode, ErrorObject};
use serde_json::json;

use super::RequestContext;
use crate::decisions::policy::ActivePolicy;
use crate::state::Daemon;

pub(super) fn status(daemon: &Daemon) -> Result<PolicyStatus, ErrorObject> {
    let state = &daemon.stores().decisions.policy;
    let last_error = state
        .last_error()
        .map(|errors| errors.iter().map(|e| json!(e)).collect());
    match state.active() {
        Some(active) => Ok(summary(&active, last_error)),
        None => Err(ErrorObject::new(
            ErrorCode::NoActivePolicy,
            "no active policy: the configured policy did not load",
        )
        .with_data(json!({ "errors": last_error }))),
    }
}

fn summary(active: &ActivePolicy, last_error: Option<Vec<serde_json::Value>>) -> PolicyStatus {
    let policy = active.evaluator.policy();
    PolicyStatus {
        name: policy.name.clone(),
        policy_version: policy.policy_version.as_str().to_owned(),
        policy_hash: active.hash.clone(),
        autonomy_mode: policy.autonomy_mode.as_str().to_owned(),
        rules: policy.rules.len(),
        source: active.source.as_ref().map(|p| p.display().to_string()),
        loaded_at: active.loaded_at.clone(),
        last_error,
    }
}

/// Loads the configured policy file again (or `path`); a policy that fails to load never
/// replaces the active one: its errors are returned (-32602 with `data.errors`) and audited.
pub(super) async fn reload(
    ctx: &RequestContext<'_>,
    params: PolicyReloadParams,
) -> Result<PolicyStatus, ErrorObject> {
    let file = params.path.map(PathBuf::from);
    match crate::lifecycle::load_policy(ctx.daemon, file, ctx.actor()).await {
        Ok(active) => Ok(summary(&active, None)),
        Err(errors) => Err(ErrorObject::new(
            ErrorCode::InvalidParams,
            format!(
                "the policy did not load ({} errors); the active policy stays: {}",
                errors.len(),
                errors.first().map(ToString::to_string).unwrap_or_default()
            ),
        )
        .with_data(json!({ "field": "path", "errors": errors }))),
    }
}
