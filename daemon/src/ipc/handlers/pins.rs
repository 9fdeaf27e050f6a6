//! `policy.pin`, `policy.unpin`, `policy.pins` (feature `policy_pinning`) and `policy.versions`
//! (feature `policy_lifecycle`).

use std::path::PathBuf;

use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::methods::{
    Pin, PinList, PinParams, PinScope, PolicyVersion, UnpinParams, VersionList,
};
use atlasbridge_protocol::{ErrorCode, ErrorObject};
use serde_json::json;

use super::RequestContext;
use crate::decisions::pins::{PinError, Scope};
use crate::decisions::policy::PolicyState;

fn scope(scope: PinScope) -> Scope {
    match scope {
        PinScope::Agent => Scope::Agent,
        PinScope::Session => Scope::Session,
    }
}

fn wire_scope(scope: Scope) -> PinScope {
    match scope {
        Scope::Agent => PinScope::Agent,
        Scope::Session => PinScope::Session,
    }
}

fn pin_error(error: &PinError) -> ErrorObject {
    match error {
        PinError::UnknownVersion(_) => {
            ErrorObject::invalid_params("policy_hash", error.to_string())
        }
        PinError::Damaged(_) | PinError::Io(_) => {
            ErrorObject::new(ErrorCode::StorageFailure, error.to_string())
        }
    }
}

pub(super) async fn pin(ctx: &RequestContext<'_>, params: PinParams) -> Result<Pin, ErrorObject> {
    ctx.require(Feature::PolicyPinning)?;
    if params.id.is_empty() {
        return Err(ErrorObject::invalid_params("id", "id must not be empty"));
    }
    let decisions = &ctx.daemon.stores().decisions;
    let hash = match (params.policy_hash, params.path) {
        (Some(hash), None) => hash,
        (None, Some(path)) => {
            // Load the file on its own, without touching the active policy, and store it.
            let file = PathBuf::from(path);
            let loaded = tokio::task::block_in_place(|| PolicyState::default().load(Some(&file)))
                .map_err(|e| {
                ErrorObject::invalid_params("path", e.to_string())
                    .with_data(json!({ "field": "path", "errors": e.errors() }))
            })?;
            decisions.pins.keep(&loaded).map_err(|e| pin_error(&e))?;
            loaded.hash.clone()
        }
        _ => {
            return Err(ErrorObject::invalid_params(
                "policy_hash",
                "give exactly one of policy_hash and path",
            ));
        }
    };
    let previous = decisions
        .pins
        .pin(scope(params.scope), &params.id, &hash)
        .map_err(|e| pin_error(&e))?;
    let _ = ctx
        .daemon
        .audit()
        .record(
            "policy_pinned",
            &ctx.actor(),
            json!({ "scope": params.scope, "id": params.id, "policy_hash": hash, "previous": previous }),
        )
        .await;
    report_pins(ctx.daemon);
    Ok(Pin {
        scope: params.scope,
        id: params.id,
        policy_hash: Some(hash),
        previous,
    })
}

/// Tells the cloud (when linked) the policy in force with the pins as they are now.
fn report_pins(daemon: &crate::state::Daemon) {
    if let Some(active) = daemon.stores().decisions.policy.active() {
        daemon.cloud_events().emit(
            atlasbridge_protocol::cloud::messages::kind::POLICY_LOADED,
            crate::cloud::events::policy_loaded(daemon, &active),
        );
    }
}

pub(super) async fn unpin(
    ctx: &RequestContext<'_>,
    params: UnpinParams,
) -> Result<Pin, ErrorObject> {
    ctx.require(Feature::PolicyPinning)?;
    let previous = ctx
        .daemon
        .stores()
        .decisions
        .pins
        .unpin(scope(params.scope), &params.id)
        .map_err(|e| pin_error(&e))?;
    if previous.is_some() {
        let _ = ctx
            .daemon
            .audit()
            .record(
                "policy_unpinned",
                &ctx.actor(),
                json!({ "scope": params.scope, "id": params.id, "previous": previous }),
            )
            .await;
        report_pins(ctx.daemon);
    }
    Ok(Pin {
        scope: params.scope,
        id: params.id,
        policy_hash: None,
        previous,
    })
}

pub(super) fn pins(ctx: &RequestContext<'_>) -> Result<PinList, ErrorObject> {
    ctx.require(Feature::PolicyPinning)?;
    let pins = ctx
        .daemon
        .stores()
        .decisions
        .pins
        .list()
        .into_iter()
        .map(|(s, id, hash)| Pin {
            scope: wire_scope(s),
            id,
            policy_hash: Some(hash),
            previous: None,
        })
        .collect();
    Ok(PinList { pins })
}

pub(super) fn versions(ctx: &RequestContext<'_>) -> Result<VersionList, ErrorObject> {
    ctx.require(Feature::PolicyLifecycle)?;
    let decisions = &ctx.daemon.stores().decisions;
    let active = decisions.policy.active().map(|a| a.hash.clone());
    let versions = tokio::task::block_in_place(|| decisions.pins.versions())
        .map_err(|e| pin_error(&e))?
        .into_iter()
        .map(|v| PolicyVersion {
            active: active.as_deref() == Some(v.policy_hash.as_str()),
            policy_hash: v.policy_hash,
            name: v.name,
            pinned_by: v.pinned_by,
        })
        .collect();
    Ok(VersionList { versions })
}
