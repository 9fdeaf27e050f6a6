//! `policy.status`, `policy.reload`, and the cloud's pending policies: `policy.pending`,
//! `policy.accept`.

use std::path::PathBuf;

use atlasbridge_protocol::methods::{
    PolicyAcceptParams, PolicyPendingResult, PolicyReloadParams, PolicyStatus,
};
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

/// The verified cloud policies waiting for `policy.accept`, and the accepted one.
pub(super) fn pending(daemon: &Daemon) -> Result<PolicyPendingResult, ErrorObject> {
    let book = crate::cloud::policy_sync::read_book(daemon.data_dir())
        .map_err(|e| ErrorObject::new(ErrorCode::InternalError, e))?;
    Ok(PolicyPendingResult {
        pending: book.pending,
        accepted: book.accepted,
    })
}

/// Makes a pending cloud policy the daemon's policy (unless a local `[policy] file` is
/// configured, which always takes precedence: then accepting is refused, so nothing looks
/// applied that is not).
pub(super) async fn accept(
    ctx: &RequestContext<'_>,
    params: PolicyAcceptParams,
) -> Result<PolicyStatus, ErrorObject> {
    let daemon = ctx.daemon;
    if let Some(file) = &daemon.settings().config.policy.file {
        return Err(ErrorObject::invalid_params(
            "hash",
            format!(
                "the local policy file {} takes precedence over cloud policies; remove [policy] \
                 file from the config to use cloud policies",
                file.display()
            ),
        ));
    }
    let data_dir = daemon.data_dir().to_path_buf();
    let hash = params.hash.clone();
    let path = tokio::task::block_in_place(|| crate::cloud::policy_sync::accept(&data_dir, &hash))
        .map_err(|e| ErrorObject::invalid_params("hash", e))?;
    match crate::lifecycle::load_policy(daemon, Some(path), ctx.actor()).await {
        Ok(active) => {
            let _ = daemon
                .audit()
                .record(
                    "cloud_policy_accepted",
                    &ctx.actor(),
                    json!({ "content_hash": params.hash }),
                )
                .await;
            Ok(summary(&active, None))
        }
        Err(errors) => Err(ErrorObject::new(
            ErrorCode::InvalidParams,
            format!(
                "the accepted policy did not load; the active policy stays: {}",
                errors.first().map(ToString::to_string).unwrap_or_default()
            ),
        )
        .with_data(json!({ "field": "hash", "errors": errors }))),
    }
}
