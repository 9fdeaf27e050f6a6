//! The policy registry for people and runtimes: policies (list, create, archive), their
//! versions (list, get signed, upload), validation without storing (the editor's live check),
//! the structural diff of two versions, and a test event decided against a version.
//!
//! Three routes serve runtimes too, with exactly the shapes of cloud.md: `GET
//! /v1/policies/{name}`, `GET /v1/policies/{name}/versions/{version}` (what a daemon fetches
//! after `policy_update_available`) and `POST /v1/policies/{name}/versions` (`atlasbridge cloud
//! policy push`, recorded as an upload by that runtime).
//!
//! An upload never changes what any runtime runs: only a distribution does (see
//! [`super::distributions`]).

use std::sync::Arc;

use atlasbridge_protocol::cloud::rest::{PolicyUpload, PolicyVersion};
use atlasbridge_protocol::policy::{LoadedPolicy, diff};
use atlasbridge_protocol::trace::checkpoint::decode_public_key;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

use super::access::{Caller, Person};
use super::error::{ApiError, ErrorEnvelope};
use super::paging;
use crate::db::{DbError, org_transaction};
use crate::entry_columns::format_time;
use crate::policy::trial::{self, TrialError, TrialEvent, TrialOutcome};
use crate::policy::validation::{self, PolicyProblem};
use crate::policy::{sign_version, signer_name};
use crate::server::AppState;
use crate::store::policies::{
    self as registry, Actor, CreateRefused, NewVersion, PolicyRow, Upload, VersionRow,
};

/// Versions listed with a policy at most (the newest); the versions route pages through all.
const VERSIONS_WITH_POLICY: usize = 1000;

/// Who did something.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActorView {
    /// `user` or `runtime`.
    pub kind: String,
    /// The user id, or the runtime id (`ed25519:…`).
    pub id: String,
}

impl From<&Actor> for ActorView {
    fn from(actor: &Actor) -> Self {
        Self {
            kind: actor.kind().to_owned(),
            id: actor.id().to_owned(),
        }
    }
}

/// A policy of the registry.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySummary {
    /// Its name (every version's YAML names it).
    pub name: String,
    /// For people.
    pub description: String,
    /// The newest version (`"1"`, `"2"`, …); absent before the first upload.
    pub latest_version: Option<String>,
    /// The newest version's `content_hash`.
    pub latest_content_hash: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Who created it (by creating it, or by uploading its first version).
    pub created_by: ActorView,
    /// RFC 3339, once archived: no new versions, no new distributions.
    pub archived_at: Option<String>,
    /// The user who archived it.
    pub archived_by: Option<String>,
}

fn latest(row: &PolicyRow) -> Option<String> {
    (row.latest_version > 0).then(|| row.latest_version.to_string())
}

impl From<&PolicyRow> for PolicySummary {
    fn from(row: &PolicyRow) -> Self {
        Self {
            name: row.name.clone(),
            description: row.description.clone(),
            latest_version: latest(row),
            latest_content_hash: row.latest_hash.clone(),
            created_at: format_time(row.created_at),
            created_by: ActorView::from(&row.created_by),
            archived_at: row.archived_at.map(format_time),
            archived_by: row.archived_by.clone(),
        }
    }
}

/// `GET /v1/policies`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    /// In name order.
    pub policies: Vec<PolicySummary>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A version as cloud.md lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionRef {
    /// `"1"`, `"2"`, …
    pub version: String,
    /// Its `policy_hash`.
    pub content_hash: String,
    /// When the server signed it.
    pub signed_at: String,
}

/// `GET /v1/policies/{name}`: cloud.md's shape (`name`, `latest_version`, `versions`) and the
/// policy's record.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyDetail {
    /// Its name.
    pub name: String,
    /// The newest version; absent before the first upload.
    pub latest_version: Option<String>,
    /// The newest 1,000 versions, oldest first (`GET …/versions` pages through all).
    pub versions: Vec<VersionRef>,
    /// For people.
    pub description: String,
    /// RFC 3339.
    pub created_at: String,
    /// Who created it.
    pub created_by: ActorView,
    /// RFC 3339, once archived.
    pub archived_at: Option<String>,
    /// The user who archived it.
    pub archived_by: Option<String>,
}

/// A version with its record.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// `"1"`, `"2"`, …
    pub version: String,
    /// Its `policy_hash`.
    pub content_hash: String,
    /// When the server signed it (the exact string signed).
    pub signed_at: String,
    /// RFC 3339.
    pub uploaded_at: String,
    /// A person, or a runtime (`cloud policy push`).
    pub uploaded_by: ActorView,
}

impl From<&VersionRow> for VersionView {
    fn from(row: &VersionRow) -> Self {
        Self {
            version: row.version.to_string(),
            content_hash: row.content_hash.clone(),
            signed_at: row.signed_at.clone(),
            uploaded_at: format_time(row.uploaded_at),
            uploaded_by: ActorView::from(&row.uploaded_by),
        }
    }
}

/// `GET /v1/policies/{name}/versions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    /// The policy.
    pub name: String,
    /// Newest first.
    pub versions: Vec<VersionView>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/policies/{name}/versions/{version}`: what runtimes fetch (cloud.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedVersion {
    /// The policy.
    pub name: String,
    /// `"1"`, `"2"`, …
    pub version: String,
    /// Its `policy_hash` (policy-language.md), as the runtimes' loader computes it.
    pub content_hash: String,
    /// The YAML as uploaded.
    pub yaml: String,
    /// RFC 3339, when the server signed it.
    pub signed_at: String,
    /// `ed25519:` + the server key's signature over the JCS of the other members but `yaml`.
    pub signature: String,
}

impl From<PolicyVersion> for SignedVersion {
    fn from(version: PolicyVersion) -> Self {
        Self {
            name: version.name,
            version: version.version,
            content_hash: version.content_hash,
            yaml: version.yaml,
            signed_at: version.signed_at,
            signature: version.signature,
        }
    }
}

/// `POST /v1/policies`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// Its name: 1 to 128 characters, no control characters, no white space at either end.
    pub name: String,
    /// For people.
    #[serde(default)]
    pub description: String,
    /// A first version, validated like an upload.
    #[serde(default)]
    pub yaml: Option<String>,
}

/// `POST /v1/policies/{name}/versions`. People send `yaml` (and may send the `content_hash`
/// they validated, which must then match); a runtime sends cloud.md's signed upload: `yaml`,
/// `content_hash`, its `runtime_id` and its identity key's `signature` over the JCS of
/// `{content_hash, runtime_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadVersion {
    /// The policy file.
    pub yaml: String,
    /// Its `policy_hash`; required from runtimes.
    #[serde(default)]
    pub content_hash: Option<String>,
    /// The uploading runtime; runtimes only.
    #[serde(default)]
    pub runtime_id: Option<String>,
    /// The runtime's signature; runtimes only.
    #[serde(default)]
    pub signature: Option<String>,
}

/// An uploaded version (cloud.md's answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadedVersion {
    /// The policy.
    pub name: String,
    /// The version the server numbered it.
    pub version: String,
    /// Its `policy_hash`.
    pub content_hash: String,
}

/// `POST /v1/policy-validation`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidatePolicy {
    /// The policy file.
    pub yaml: String,
    /// The registry name it is meant for: its `name` must then be this.
    #[serde(default)]
    pub name: Option<String>,
}

/// The verdict on a policy (the shape of `atlasbridge policy validate --json`, with the
/// registry's `content_hash` for its `policy_hash`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Validation {
    /// Whether it loads.
    pub valid: bool,
    /// Its `name`, when valid.
    pub name: Option<String>,
    /// `"0"` or `"1"`, when valid.
    pub policy_version: Option<String>,
    /// How many rules, when valid.
    pub rules: Option<usize>,
    /// `off`, `assist` or `full`, when valid.
    pub autonomy_mode: Option<String>,
    /// Its `policy_hash`, when valid.
    pub content_hash: Option<String>,
    /// Every problem, in text order (empty when valid).
    pub errors: Vec<PolicyProblem>,
}

/// Filters of `GET /v1/policies`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// Also archived policies (default false).
    pub include_archived: Option<bool>,
    /// Rows per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Paging of `GET /v1/policies/{name}/versions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// Rows per page (default 100, at most 500).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The two versions of `GET /v1/policies/{name}/diff`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The version diffed from.
    pub from: String,
    /// The version diffed to.
    pub to: String,
}

/// `GET /v1/policies/{name}/diff`: what changes in meaning from one version to the other.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDiff {
    /// The policy.
    pub name: String,
    /// The version diffed from.
    pub from: VersionRef,
    /// The version diffed to.
    pub to: VersionRef,
    /// Whether they mean the same (then their hashes are equal).
    pub equal: bool,
    /// `{fields, added, removed, changed, moved}` as `atlasbridge policy diff --json` prints it:
    /// root fields, rules added and removed, rules changed field by field and rules moved, by id.
    #[schema(value_type = Object)]
    pub diff: Value,
}

/// `POST /v1/policies/{name}/versions/{version}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialAnswer {
    /// The policy.
    pub name: String,
    /// The version decided with.
    pub version: String,
    /// Its hash (the `policy_hash` a runtime's trace would record).
    pub content_hash: String,
    /// The decision.
    #[serde(flatten)]
    pub outcome: TrialOutcome,
}

#[derive(Debug, Serialize, Deserialize)]
struct NameCursor {
    k: String,
    n: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct VersionCursor {
    k: String,
    v: i32,
}

/// A version number from a path or query: decimal, from 1. Anything else names no version.
pub fn version_number(text: &str) -> Option<i32> {
    let plain =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    plain.then(|| text.parse().ok()).flatten()
}

/// A policy name from a path: one that cannot exist is simply not found.
fn known_name(name: &str) -> Result<(), ApiError> {
    if validation::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::not_found("policy"))
    }
}

/// 422 with every problem in `details.errors`, for the editor to mark.
pub fn invalid_policy(problems: &[PolicyProblem]) -> ApiError {
    let first = problems
        .first()
        .map(|p| {
            format!(
                "; first, at {}:{} ({}): {}",
                p.line, p.column, p.field, p.message
            )
        })
        .unwrap_or_default();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_POLICY",
        format!(
            "the policy is not valid: {} problem(s){first}",
            problems.len()
        ),
    )
    .detail(
        "errors",
        serde_json::to_value(problems).unwrap_or(Value::Array(Vec::new())),
    )
}

/// Loads `yaml` for the registry off the async workers (the validator is CPU work).
async fn check(
    yaml: String,
    name: Option<String>,
) -> Result<Result<LoadedPolicy, Vec<PolicyProblem>>, ApiError> {
    tokio::task::spawn_blocking(move || validation::check(&yaml, name.as_deref()))
        .await
        .map_err(|e| ApiError::internal(&format!("the validator stopped: {e}")))
}

fn archived() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "POLICY_ARCHIVED",
        "the policy is archived: it takes no new versions or distributions",
    )
}

/// Lists the policies.
#[utoipa::path(
    get, path = "/v1/policies", tag = "policies",
    params(PolicyQuery),
    responses((status = 200, body = PolicyList), (status = 400, body = ErrorEnvelope))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Query(query): Query<PolicyQuery>,
) -> Result<Json<PolicyList>, ApiError> {
    let limit = paging::page_size(query.limit);
    let after = match query.cursor.as_deref() {
        Some(text) => {
            let cursor: NameCursor = paging::decode(text)?;
            if cursor.k != "policies" {
                return Err(ApiError::bad_request("cursor", "not a cursor of this list"));
            }
            Some(cursor.n)
        }
        None => None,
    };
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let mut rows = registry::list_policies(
        &transaction,
        query.include_archived.unwrap_or(false),
        after.as_deref(),
        limit + 1,
    )
    .await?;
    transaction.commit().await.map_err(DbError::from)?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| {
            paging::encode(&NameCursor {
                k: "policies".into(),
                n: last.name.clone(),
            })
        })
    } else {
        None
    };
    Ok(Json(PolicyList {
        policies: rows.iter().map(PolicySummary::from).collect(),
        next_cursor,
    }))
}

/// Creates a policy, with a first version when `yaml` is given.
#[utoipa::path(
    post, path = "/v1/policies", tag = "policies",
    request_body = CreatePolicy,
    responses(
        (status = 201, body = PolicySummary),
        (status = 400, body = ErrorEnvelope),
        (status = 409, description = "A policy of this name exists (possibly archived)", body = ErrorEnvelope),
        (status = 422, description = "The YAML is not valid: `details.errors` holds every problem with its line, column and field", body = ErrorEnvelope),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Json(request): Json<CreatePolicy>,
) -> Result<(StatusCode, Json<PolicySummary>), ApiError> {
    if !validation::valid_name(&request.name) {
        return Err(ApiError::bad_request(
            "name",
            "1 to 128 characters, no control characters, no white space at either end",
        ));
    }
    if request.description.chars().count() > 2000 {
        return Err(ApiError::bad_request(
            "description",
            "at most 2000 characters",
        ));
    }
    let first = match request.yaml {
        Some(yaml) => {
            let loaded = check(yaml.clone(), Some(request.name.clone()))
                .await?
                .map_err(|problems| invalid_policy(&problems))?;
            Some((yaml, loaded))
        }
        None => None,
    };
    let by = Actor::User(person.user.user_id.clone());
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let created = registry::create_policy(
        &transaction,
        &person.org_id,
        &request.name,
        &request.description,
        &by,
    )
    .await?;
    if matches!(created, Err(CreateRefused::Exists)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "POLICY_EXISTS",
            "a policy of this name exists (archived policies keep their name)",
        ));
    }
    if let Some((yaml, loaded)) = &first {
        let new = NewVersion {
            yaml,
            content_hash: &loaded.hash,
            by: &by,
            upload_signature: None,
        };
        registry::add_version(
            &transaction,
            &person.org_id,
            &request.name,
            new,
            &state.signing_key,
        )
        .await?;
    }
    let row = registry::policy(&transaction, &request.name)
        .await?
        .ok_or_else(|| ApiError::internal("a policy just created is missing"))?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(by = %person.user.user_id, name = %request.name, "policy created");
    Ok((StatusCode::CREATED, Json(PolicySummary::from(&row))))
}

/// One policy with its versions (cloud.md's shape, used by `atlasbridge cloud policy pull`).
#[utoipa::path(
    get, path = "/v1/policies/{name}", tag = "policies",
    params(("name" = String, Path, description = "The policy's name")),
    responses(
        (status = 200, body = PolicyDetail),
        (status = 404, description = "No such policy (for a runtime: or no version yet)", body = ErrorEnvelope),
    )
)]
pub async fn one(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<PolicyDetail>, ApiError> {
    known_name(&name)?;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, caller.org_id()).await?;
    let row = registry::policy(&transaction, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("policy"))?;
    let mut versions = registry::versions(&transaction, &name, None, VERSIONS_WITH_POLICY).await?;
    transaction.commit().await.map_err(DbError::from)?;
    // A runtime asks for the latest version to fetch it: a policy with none has nothing for it.
    if matches!(caller, Caller::Runtime(_)) && versions.is_empty() {
        return Err(ApiError::not_found("policy"));
    }
    versions.reverse();
    Ok(Json(PolicyDetail {
        name: row.name.clone(),
        latest_version: latest(&row),
        versions: versions
            .iter()
            .map(|v| VersionRef {
                version: v.version.to_string(),
                content_hash: v.content_hash.clone(),
                signed_at: v.signed_at.clone(),
            })
            .collect(),
        description: row.description.clone(),
        created_at: format_time(row.created_at),
        created_by: ActorView::from(&row.created_by),
        archived_at: row.archived_at.map(format_time),
        archived_by: row.archived_by.clone(),
    }))
}

/// Archives a policy: it keeps its versions (still readable, by people and runtimes) but takes
/// no new versions and no new distributions. What runtimes run does not change.
#[utoipa::path(
    delete, path = "/v1/policies/{name}", tag = "policies",
    params(("name" = String, Path, description = "The policy's name")),
    responses((status = 200, description = "The policy, archived (archiving twice changes nothing)", body = PolicySummary), (status = 404, body = ErrorEnvelope))
)]
pub async fn archive(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(name): Path<String>,
) -> Result<Json<PolicySummary>, ApiError> {
    known_name(&name)?;
    let by = Actor::User(person.user.user_id.clone());
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let row = registry::archive_policy(&transaction, &person.org_id, &name, &by)
        .await?
        .ok_or_else(|| ApiError::not_found("policy"))?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(by = %person.user.user_id, name = %name, "policy archived");
    Ok(Json(PolicySummary::from(&row)))
}

/// The versions of a policy with who uploaded them, newest first.
#[utoipa::path(
    get, path = "/v1/policies/{name}/versions", tag = "policies",
    params(("name" = String, Path, description = "The policy's name"), VersionQuery),
    responses((status = 200, body = VersionList), (status = 404, body = ErrorEnvelope))
)]
pub async fn versions(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<VersionList>, ApiError> {
    known_name(&name)?;
    let limit = paging::page_size(query.limit);
    let before = match query.cursor.as_deref() {
        Some(text) => {
            let cursor: VersionCursor = paging::decode(text)?;
            if cursor.k != "policy_versions" {
                return Err(ApiError::bad_request("cursor", "not a cursor of this list"));
            }
            Some(cursor.v)
        }
        None => None,
    };
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    if registry::policy(&transaction, &name).await?.is_none() {
        return Err(ApiError::not_found("policy"));
    }
    let mut rows = registry::versions(&transaction, &name, before, limit + 1).await?;
    transaction.commit().await.map_err(DbError::from)?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| {
            paging::encode(&VersionCursor {
                k: "policy_versions".into(),
                v: last.version,
            })
        })
    } else {
        None
    };
    Ok(Json(VersionList {
        name,
        versions: rows.iter().map(VersionView::from).collect(),
        next_cursor,
    }))
}

/// One version, signed by the server: what a runtime fetches after `policy_update_available`.
#[utoipa::path(
    get, path = "/v1/policies/{name}/versions/{version}", tag = "policies",
    params(
        ("name" = String, Path, description = "The policy's name"),
        ("version" = String, Path, description = "The version: `1`, `2`, …"),
    ),
    responses((status = 200, body = SignedVersion), (status = 404, body = ErrorEnvelope))
)]
pub async fn version(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<SignedVersion>, ApiError> {
    known_name(&name)?;
    let number = version_number(&version).ok_or_else(|| ApiError::not_found("policy version"))?;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, caller.org_id()).await?;
    let row = registry::version(&transaction, &name, number)
        .await?
        .ok_or_else(|| ApiError::not_found("policy version"))?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(SignedVersion::from(served(&state, row))))
}

/// A stored version as runtimes get it. Signed with another key than the server's (the key was
/// replaced), it is signed again now, so runtimes configured with the current key accept it.
fn served(state: &AppState, row: VersionRow) -> PolicyVersion {
    let yaml = row.yaml.unwrap_or_default();
    if row.signer_key == signer_name(&state.signing_key) {
        return PolicyVersion {
            name: row.name,
            version: row.version.to_string(),
            content_hash: row.content_hash,
            yaml,
            signed_at: row.signed_at,
            signature: row.signature,
        };
    }
    warn!(name = %row.name, version = row.version, "re-signing a version signed by a former server key");
    sign_version(
        &state.signing_key,
        &row.name,
        row.version,
        &row.content_hash,
        &yaml,
        &format_time(std::time::SystemTime::now()),
    )
}

/// The uploader and the runtime's signature, after checking a runtime's signed upload.
fn runtime_upload(
    runtime_id: &str,
    request: &UploadVersion,
    computed_hash: &str,
) -> Result<String, ApiError> {
    let (Some(content_hash), Some(claimed), Some(signature)) = (
        request.content_hash.as_deref(),
        request.runtime_id.as_deref(),
        request.signature.as_deref(),
    ) else {
        return Err(ApiError::bad_request(
            "signature",
            "a runtime's upload carries content_hash, runtime_id and signature",
        ));
    };
    if claimed != runtime_id {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "IDENTITY_MISMATCH",
            "runtime_id is not the token's runtime",
        ));
    }
    let upload = PolicyUpload {
        yaml: request.yaml.clone(),
        content_hash: content_hash.to_owned(),
        runtime_id: claimed.to_owned(),
        signature: signature.to_owned(),
    };
    let verifies = decode_public_key(claimed).is_some_and(|key| upload.signature_verifies(&key));
    if !verifies {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_SIGNATURE",
            "the upload's signature does not verify under its runtime_id",
        ));
    }
    if content_hash != computed_hash {
        return Err(hash_mismatch(content_hash, computed_hash));
    }
    Ok(signature.to_owned())
}

fn hash_mismatch(given: &str, computed: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "CONTENT_HASH_MISMATCH",
        "content_hash is not the policy's hash",
    )
    .detail("content_hash", given)
    .detail("computed", computed)
}

/// Uploads a new version (numbered by the server; a policy of that name is created when there
/// is none). The YAML is checked with the runtimes' own loader; its `name` must be the policy's.
/// Uploading the newest version's content again adds nothing (200 with that version).
#[utoipa::path(
    post, path = "/v1/policies/{name}/versions", tag = "policies",
    params(("name" = String, Path, description = "The policy's name")),
    request_body = UploadVersion,
    responses(
        (status = 201, description = "A new version", body = UploadedVersion),
        (status = 200, description = "The newest version already had this content", body = UploadedVersion),
        (status = 400, description = "A runtime's upload is unsigned, badly signed, for another runtime, or its content_hash is not the policy's", body = ErrorEnvelope),
        (status = 409, description = "The policy is archived", body = ErrorEnvelope),
        (status = 422, description = "The YAML is not valid: `details.errors` holds every problem with its line, column and field", body = ErrorEnvelope),
    )
)]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(request): Json<UploadVersion>,
) -> Result<(StatusCode, Json<UploadedVersion>), ApiError> {
    if !validation::valid_name(&name) {
        return Err(ApiError::bad_request(
            "name",
            "1 to 128 characters, no control characters, no white space at either end",
        ));
    }
    let loaded = check(request.yaml.clone(), Some(name.clone()))
        .await?
        .map_err(|problems| invalid_policy(&problems))?;
    let (by, upload_signature) = match &caller {
        Caller::Runtime(runtime) => {
            let signature = runtime_upload(&runtime.runtime_id, &request, &loaded.hash)?;
            (Actor::Runtime(runtime.runtime_id.clone()), Some(signature))
        }
        Caller::Person(person) => {
            if request.runtime_id.is_some() || request.signature.is_some() {
                return Err(ApiError::bad_request(
                    "signature",
                    "runtime_id and signature belong to a runtime's upload",
                ));
            }
            if let Some(given) = request.content_hash.as_deref()
                && given != loaded.hash
            {
                return Err(hash_mismatch(given, &loaded.hash));
            }
            (Actor::User(person.user.user_id.clone()), None)
        }
    };
    let new = NewVersion {
        yaml: &request.yaml,
        content_hash: &loaded.hash,
        by: &by,
        upload_signature: upload_signature.as_deref(),
    };
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, caller.org_id()).await?;
    let outcome = registry::add_version(
        &transaction,
        caller.org_id(),
        &name,
        new,
        &state.signing_key,
    )
    .await?;
    let (status, row) = match outcome {
        Upload::Added(row) => (StatusCode::CREATED, row),
        Upload::Unchanged(row) => (StatusCode::OK, row),
        Upload::Archived => return Err(archived()),
    };
    transaction.commit().await.map_err(DbError::from)?;
    if status == StatusCode::CREATED {
        info!(by = %by.id(), by_kind = by.kind(), name = %name, version = row.version, content_hash = %row.content_hash, "policy version uploaded");
    }
    Ok((
        status,
        Json(UploadedVersion {
            name,
            version: row.version.to_string(),
            content_hash: row.content_hash,
        }),
    ))
}

/// Validates a policy without storing anything: the editor's live check. Always 200; the
/// verdict is in the body.
#[utoipa::path(
    post, path = "/v1/policy-validation", tag = "policies",
    request_body = ValidatePolicy,
    responses((status = 200, body = Validation))
)]
pub async fn validate(
    Extension(_person): Extension<Person>,
    Json(request): Json<ValidatePolicy>,
) -> Result<Json<Validation>, ApiError> {
    let verdict = check(request.yaml, request.name).await?;
    Ok(Json(match verdict {
        Ok(loaded) => Validation {
            valid: true,
            name: Some(loaded.policy.name.clone()),
            policy_version: Some(loaded.policy.policy_version.as_str().to_owned()),
            rules: Some(loaded.policy.rules.len()),
            autonomy_mode: Some(loaded.policy.autonomy_mode.as_str().to_owned()),
            content_hash: Some(loaded.hash),
            errors: Vec::new(),
        },
        Err(errors) => Validation {
            valid: false,
            name: None,
            policy_version: None,
            rules: None,
            autonomy_mode: None,
            content_hash: None,
            errors,
        },
    }))
}

/// A stored version loaded again (it loaded when it was stored).
async fn stored_policy(
    state: &AppState,
    org_id: &str,
    name: &str,
    version: &str,
) -> Result<(VersionRow, LoadedPolicy), ApiError> {
    known_name(name)?;
    let number = version_number(version).ok_or_else(|| ApiError::not_found("policy version"))?;
    let row = {
        let mut client = state.db.client().await?;
        let transaction = org_transaction(&mut client, org_id).await?;
        let row = registry::version(&transaction, name, number)
            .await?
            .ok_or_else(|| ApiError::not_found("policy version"))?;
        transaction.commit().await.map_err(DbError::from)?;
        row
    };
    let loaded = check(row.yaml.clone().unwrap_or_default(), None)
        .await?
        .map_err(|problems| invalid_policy(&problems))?;
    Ok((row, loaded))
}

fn version_ref(row: &VersionRow) -> VersionRef {
    VersionRef {
        version: row.version.to_string(),
        content_hash: row.content_hash.clone(),
        signed_at: row.signed_at.clone(),
    }
}

/// The structural diff between two versions (the protocol crate's `policy::diff`): root
/// fields, rules added, removed, changed field by field, and moved.
#[utoipa::path(
    get, path = "/v1/policies/{name}/diff", tag = "policies",
    params(("name" = String, Path, description = "The policy's name"), DiffQuery),
    responses((status = 200, body = VersionDiff), (status = 404, body = ErrorEnvelope))
)]
pub async fn diff_versions(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(name): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Result<Json<VersionDiff>, ApiError> {
    let (from_row, from) = stored_policy(&state, &person.org_id, &name, &query.from).await?;
    let (to_row, to) = stored_policy(&state, &person.org_id, &name, &query.to).await?;
    let changes = diff(&from.policy, &to.policy);
    Ok(Json(VersionDiff {
        name,
        from: version_ref(&from_row),
        to: version_ref(&to_row),
        equal: changes.is_empty(),
        diff: serde_json::to_value(&changes).unwrap_or(Value::Null),
    }))
}

/// Decides a test event against a version, as a fresh runtime would: the matched rule, the
/// policy's action, what the agent would be told (autonomy mode), the explanation rule by
/// rule, and the risk level (risk.md). A runtime's own state is taken as neutral: no
/// `max_auto_replies` used up, no `risk.require_human_at` threshold, the autopilot running.
#[utoipa::path(
    post, path = "/v1/policies/{name}/versions/{version}/test", tag = "policies",
    params(
        ("name" = String, Path, description = "The policy's name"),
        ("version" = String, Path, description = "The version: `1`, `2`, …"),
    ),
    request_body = TrialEvent,
    responses((status = 200, body = TrialAnswer), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope))
)]
pub async fn test_event(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path((name, version)): Path<(String, String)>,
    Json(event): Json<TrialEvent>,
) -> Result<Json<TrialAnswer>, ApiError> {
    let (row, loaded) = stored_policy(&state, &person.org_id, &name, &version).await?;
    let outcome = tokio::task::spawn_blocking(move || trial::decide(&loaded.policy, &event))
        .await
        .map_err(|e| ApiError::internal(&format!("the evaluator stopped: {e}")))?
        .map_err(|error| match error {
            TrialError::Invalid { field, message } => ApiError::bad_request(field, message),
            TrialError::Unevaluable(why) => ApiError::internal(&why),
        })?;
    Ok(Json(TrialAnswer {
        name,
        version: row.version.to_string(),
        content_hash: row.content_hash,
        outcome,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_are_plain_decimals_from_one() {
        assert_eq!(version_number("1"), Some(1));
        assert_eq!(version_number("42"), Some(42));
        for bad in ["", "0", "01", "-1", "+1", "1.0", "v1", "99999999999"] {
            assert_eq!(version_number(bad), None, "{bad}");
        }
    }
}
