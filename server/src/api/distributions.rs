//! Sending policies to runtimes, and seeing what they run.
//!
//! A distribution sends one version to every runtime of the organisation (present and future)
//! or to named, registered runtimes. A runtime's policy is the **newest** distribution that
//! covers it: a distribution to all replaces earlier named ones and the reverse. Connected
//! runtimes hear `policy_update_available` at once, on whichever replica holds their channel;
//! one that connects later finds it in its `welcome`. What a runtime then does is its own
//! decision (its `policy_sync`, its local policy file and pins come first): "which runtimes run
//! what" shows what each should run next to what it reports it loaded, and its local pins.

use std::collections::HashMap;
use std::sync::Arc;

use atlasbridge_protocol::trace::checkpoint::decode_public_key;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

use super::access::Person;
use super::error::{ApiError, ErrorEnvelope};
use super::paging;
use super::policies::version_number;
use crate::db::{DbError, org_transaction};
use crate::entry_columns::format_time;
use crate::policy::validation;
use crate::server::AppState;
use crate::store::policies::{
    self as registry, Actor, Distribution, DistributionRow, RuntimePolicyRow, Target,
};

/// The most runtimes one distribution may name.
pub const MAX_NAMED_RUNTIMES: usize = 1000;

/// `POST /v1/policies/{name}/distributions`: a version, to all runtimes or to named ones
/// (exactly one of `all_runtimes: true` and `runtime_ids`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Distribute {
    /// The version: `"1"`, `"2"`, …
    pub version: String,
    /// Every runtime of the organisation, present and future.
    #[serde(default)]
    pub all_runtimes: bool,
    /// Registered runtimes of the organisation (1 to 1,000).
    #[serde(default)]
    pub runtime_ids: Option<Vec<String>>,
}

/// A distribution.
#[derive(Debug, Serialize, ToSchema)]
pub struct DistributionView {
    /// Its id: a runtime's policy is the newest distribution covering it.
    pub distribution_id: i64,
    /// The policy.
    pub name: String,
    /// The version.
    pub version: String,
    /// Its hash.
    pub content_hash: String,
    /// `all` or `runtimes`.
    pub target: String,
    /// The named runtimes (for `runtimes`; empty where not listed).
    pub runtime_ids: Vec<String>,
    /// RFC 3339.
    pub distributed_at: String,
    /// The user.
    pub distributed_by: String,
}

impl From<&DistributionRow> for DistributionView {
    fn from(row: &DistributionRow) -> Self {
        Self {
            distribution_id: row.distribution_id,
            name: row.name.clone(),
            version: row.version.to_string(),
            content_hash: row.content_hash.clone(),
            target: row.target.clone(),
            runtime_ids: row.runtime_ids.clone(),
            distributed_at: format_time(row.distributed_at),
            distributed_by: row.distributed_by.clone(),
        }
    }
}

/// `GET /v1/policies/{name}/distributions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DistributionList {
    /// Newest first.
    pub distributions: Vec<DistributionView>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A version of the registry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegistryRef {
    /// The policy.
    pub name: String,
    /// The version.
    pub version: String,
}

/// The policy a runtime reported loaded.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoadedView {
    /// Its `name`.
    pub name: String,
    /// `"0"` or `"1"`.
    pub policy_version: String,
    /// Its hash.
    pub policy_hash: String,
    /// `file` or `builtin`, as the runtime says (a cloud policy it applied is a file to it).
    pub source: String,
    /// When it loaded it, as the runtime wrote it.
    pub loaded_at: String,
    /// RFC 3339, when the report arrived.
    pub reported_at: String,
    /// The registry's versions with this hash (none: a policy the registry does not hold).
    pub registry: Vec<RegistryRef>,
}

/// A runtime's local pin: an agent or a session locked to a policy hash (it beats any cloud
/// policy on that runtime).
#[derive(Debug, Serialize, ToSchema)]
pub struct PinView {
    /// `agent` or `session`.
    pub scope: String,
    /// The agent or session id.
    pub id: String,
    /// The pinned hash.
    pub policy_hash: String,
    /// RFC 3339, when the report arrived.
    pub reported_at: String,
    /// The registry's versions with this hash.
    pub registry: Vec<RegistryRef>,
}

/// What one runtime should run and what it runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimePolicyView {
    /// The runtime.
    pub runtime_id: String,
    /// The newest distribution covering it; absent when none does.
    pub distributed: Option<DistributionView>,
    /// What it last reported loaded; absent before its first report.
    pub loaded: Option<LoadedView>,
    /// Whether what it loaded is what was distributed to it; absent unless both are known.
    pub in_sync: Option<bool>,
    /// Its local pins, as last reported.
    pub pins: Vec<PinView>,
}

/// `GET /v1/runtime-policies`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimePolicyList {
    /// In `runtime_id` order.
    pub runtimes: Vec<RuntimePolicyView>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DistributionCursor {
    k: String,
    d: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct RuntimeCursor {
    k: String,
    r: String,
}

fn target_of(request: &Distribute) -> Result<Target, ApiError> {
    match (request.all_runtimes, &request.runtime_ids) {
        (true, None) => Ok(Target::All),
        (false, Some(ids)) if !ids.is_empty() && ids.len() <= MAX_NAMED_RUNTIMES => {
            if let Some(bad) = ids.iter().find(|id| decode_public_key(id).is_none()) {
                return Err(ApiError::bad_request(
                    "runtime_ids",
                    format!("{bad:?} is not a runtime id (ed25519:<base64url>)"),
                ));
            }
            Ok(Target::Runtimes(ids.clone()))
        }
        (false, Some(_)) => Err(ApiError::bad_request(
            "runtime_ids",
            format!("1 to {MAX_NAMED_RUNTIMES} runtime ids"),
        )),
        _ => Err(ApiError::bad_request(
            "all_runtimes",
            "give exactly one of all_runtimes: true and runtime_ids",
        )),
    }
}

/// Distributes a version: connected runtimes are offered it at once (`policy_update_available`,
/// on every replica), others in their next `welcome`.
#[utoipa::path(
    post, path = "/v1/policies/{name}/distributions", tag = "policies",
    params(("name" = String, Path, description = "The policy's name")),
    request_body = Distribute,
    responses(
        (status = 201, body = DistributionView),
        (status = 400, description = "A bad target, or named runtimes that are not registered (`details.unknown_runtime_ids`)", body = ErrorEnvelope),
        (status = 404, description = "No such policy or version", body = ErrorEnvelope),
        (status = 409, description = "The policy is archived", body = ErrorEnvelope),
    )
)]
pub async fn distribute(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(name): Path<String>,
    Json(request): Json<Distribute>,
) -> Result<(StatusCode, Json<DistributionView>), ApiError> {
    if !validation::valid_name(&name) {
        return Err(ApiError::not_found("policy version"));
    }
    let version =
        version_number(&request.version).ok_or_else(|| ApiError::not_found("policy version"))?;
    let target = target_of(&request)?;
    let by = Actor::User(person.user.user_id.clone());
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let outcome =
        registry::distribute(&transaction, &person.org_id, &name, version, &target, &by).await?;
    let row = match outcome {
        Distribution::Made(row) => row,
        Distribution::NoSuchVersion => return Err(ApiError::not_found("policy version")),
        Distribution::Archived => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "POLICY_ARCHIVED",
                "the policy is archived: it takes no new versions or distributions",
            ));
        }
        Distribution::UnknownRuntimes(unknown) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "UNKNOWN_RUNTIMES",
                "runtimes named that are not registered in the organisation",
            )
            .detail("field", "runtime_ids")
            .detail("unknown_runtime_ids", unknown));
        }
    };
    transaction.commit().await.map_err(DbError::from)?;
    info!(by = %person.user.user_id, name = %name, version, target = %row.target, distribution_id = row.distribution_id, "policy distributed");
    Ok((StatusCode::CREATED, Json(DistributionView::from(&row))))
}

/// The distributions of a policy, newest first.
#[utoipa::path(
    get, path = "/v1/policies/{name}/distributions", tag = "policies",
    params(("name" = String, Path, description = "The policy's name"), PageQuery),
    responses((status = 200, body = DistributionList), (status = 404, body = ErrorEnvelope))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<DistributionList>, ApiError> {
    if !validation::valid_name(&name) {
        return Err(ApiError::not_found("policy"));
    }
    let limit = paging::page_size(query.limit);
    let before = match query.cursor.as_deref() {
        Some(text) => {
            let cursor: DistributionCursor = paging::decode(text)?;
            if cursor.k != "policy_distributions" {
                return Err(ApiError::bad_request("cursor", "not a cursor of this list"));
            }
            Some(cursor.d)
        }
        None => None,
    };
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    if registry::policy(&transaction, &name).await?.is_none() {
        return Err(ApiError::not_found("policy"));
    }
    let mut rows = registry::distributions(&transaction, &name, before, limit + 1).await?;
    transaction.commit().await.map_err(DbError::from)?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| {
            paging::encode(&DistributionCursor {
                k: "policy_distributions".into(),
                d: last.distribution_id,
            })
        })
    } else {
        None
    };
    Ok(Json(DistributionList {
        distributions: rows.iter().map(DistributionView::from).collect(),
        next_cursor,
    }))
}

/// The views of `rows`, each hash matched with the registry's versions.
async fn views(
    transaction: &tokio_postgres::Transaction<'_>,
    rows: &[RuntimePolicyRow],
) -> Result<Vec<RuntimePolicyView>, DbError> {
    let mut hashes: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            row.loaded
                .iter()
                .map(|l| l.policy_hash.clone())
                .chain(row.pins.iter().map(|p| p.policy_hash.clone()))
        })
        .collect();
    hashes.sort();
    hashes.dedup();
    let mut registry_of: HashMap<String, Vec<RegistryRef>> = HashMap::new();
    for (hash, name, version) in registry::versions_with_hashes(transaction, &hashes).await? {
        registry_of.entry(hash).or_default().push(RegistryRef {
            name,
            version: version.to_string(),
        });
    }
    let known = |hash: &str| registry_of.get(hash).cloned().unwrap_or_default();
    Ok(rows
        .iter()
        .map(|row| RuntimePolicyView {
            runtime_id: row.runtime_id.clone(),
            in_sync: row
                .distributed
                .as_ref()
                .zip(row.loaded.as_ref())
                .map(|(d, l)| d.content_hash == l.policy_hash),
            distributed: row.distributed.as_ref().map(DistributionView::from),
            loaded: row.loaded.as_ref().map(|l| LoadedView {
                name: l.name.clone(),
                policy_version: l.policy_version.clone(),
                policy_hash: l.policy_hash.clone(),
                source: l.source.clone(),
                loaded_at: l.loaded_at.clone(),
                reported_at: format_time(l.reported_at),
                registry: known(&l.policy_hash),
            }),
            pins: row
                .pins
                .iter()
                .map(|p| PinView {
                    scope: p.scope.clone(),
                    id: p.scope_id.clone(),
                    policy_hash: p.policy_hash.clone(),
                    reported_at: format_time(p.reported_at),
                    registry: known(&p.policy_hash),
                })
                .collect(),
        })
        .collect())
}

/// Which runtimes run what: per runtime, the policy distributed to it, the policy it reports
/// loaded, whether they agree, and its local pins.
#[utoipa::path(
    get, path = "/v1/runtime-policies", tag = "policies",
    params(PageQuery),
    responses((status = 200, body = RuntimePolicyList), (status = 400, body = ErrorEnvelope))
)]
pub async fn runtime_policies(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Query(query): Query<PageQuery>,
) -> Result<Json<RuntimePolicyList>, ApiError> {
    let limit = paging::page_size(query.limit);
    let after = match query.cursor.as_deref() {
        Some(text) => {
            let cursor: RuntimeCursor = paging::decode(text)?;
            if cursor.k != "runtime_policies" {
                return Err(ApiError::bad_request("cursor", "not a cursor of this list"));
            }
            Some(cursor.r)
        }
        None => None,
    };
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let mut rows =
        registry::runtime_policies(&transaction, None, after.as_deref(), limit + 1).await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| {
            paging::encode(&RuntimeCursor {
                k: "runtime_policies".into(),
                r: last.runtime_id.clone(),
            })
        })
    } else {
        None
    };
    let runtimes = views(&transaction, &rows).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(RuntimePolicyList {
        runtimes,
        next_cursor,
    }))
}

/// What one runtime should run and runs.
#[utoipa::path(
    get, path = "/v1/runtimes/{runtime_id}/policy", tag = "policies",
    params(("runtime_id" = String, Path, description = "`ed25519:` + the runtime's public key")),
    responses((status = 200, body = RuntimePolicyView), (status = 404, body = ErrorEnvelope))
)]
pub async fn runtime_policy(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(runtime_id): Path<String>,
) -> Result<Json<RuntimePolicyView>, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let rows = registry::runtime_policies(&transaction, Some(&runtime_id), None, 1).await?;
    let view = views(&transaction, &rows).await?.into_iter().next();
    transaction.commit().await.map_err(DbError::from)?;
    view.map(Json).ok_or_else(|| ApiError::not_found("runtime"))
}
