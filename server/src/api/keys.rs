//! API keys (`admin` and up): list, create (the key is shown once), revoke.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::access::Person;
use super::error::{ApiError, ErrorEnvelope};
use crate::auth::ApiKey;
use crate::db::{DbError, org_transaction};
use crate::entry_columns::format_time;
use crate::server::AppState;
use crate::store::{self, api_keys::ApiKeyRecord};

/// Longest label.
const MAX_LABEL_CHARS: usize = 200;

/// An API key, as listed (the secret is never kept, so never shown again).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The public half (`abk_<key_id>_…`).
    pub key_id: String,
    /// What it is for.
    pub label: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(record: &ApiKeyRecord) -> Self {
        Self {
            key_id: record.key_id.clone(),
            label: record.label.clone(),
            created_at: format_time(record.created_at),
            revoked_at: record.revoked_at.map(format_time),
        }
    }
}

/// `GET /v1/api-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Newest first.
    pub api_keys: Vec<ApiKeyView>,
}

/// `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for.
    #[serde(default)]
    pub label: String,
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The whole key, for the runtime's configuration. Not kept by the server.
    pub api_key: String,
    /// The public half.
    pub key_id: String,
    /// What it is for.
    pub label: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Lists the organisation's API keys.
#[utoipa::path(
    get, path = "/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = ApiKeyList), (status = 403, body = ErrorEnvelope))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let keys = store::api_keys::list(&transaction).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(ApiKeyList {
        api_keys: keys.iter().map(ApiKeyView::from).collect(),
    }))
}

/// Creates an API key; the answer is the only time its secret is shown.
#[utoipa::path(
    post, path = "/v1/api-keys", tag = "api-keys",
    request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Json(request): Json<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    if request.label.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::bad_request(
            "label",
            format!("at most {MAX_LABEL_CHARS} characters"),
        ));
    }
    let key = ApiKey::generate().map_err(|e| ApiError::internal(&e.to_string()))?;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    store::create_api_key(&transaction, &person.org_id, &key, &request.label).await?;
    let record = store::api_keys::one(&transaction, &key.key_id)
        .await?
        .ok_or_else(|| ApiError::internal("a key just created is missing"))?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(by = %person.user.user_id, key_id = %key.key_id, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            api_key: key.reveal(),
            key_id: record.key_id,
            label: record.label,
            created_at: format_time(record.created_at),
        }),
    ))
}

/// Revokes an API key: tokens issued for it stop working at their next use.
#[utoipa::path(
    delete, path = "/v1/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path, description = "The key's public half")),
    responses((status = 200, description = "The key, revoked (revoking twice changes nothing)", body = ApiKeyView), (status = 404, body = ErrorEnvelope))
)]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(key_id): Path<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let record = store::api_keys::revoke(&transaction, &key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(by = %person.user.user_id, key_id = %key_id, "API key revoked");
    Ok(Json(ApiKeyView::from(&record)))
}
