//! The HTTP side: health and readiness, the token call, the WebSocket upgrade, and the error
//! envelope every REST error uses.

use std::sync::Arc;
use std::time::Instant;

use atlasbridge_protocol::cloud::rest::{TokenRequest, TokenResponse};
use atlasbridge_protocol::trace::checkpoint::decode_public_key;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::{info, warn};

use crate::auth::ApiKey;
use crate::db::{DbError, org_transaction};
use crate::server::AppState;
use crate::{channel, migrate, store};

/// Frames over this are refused by the transport; the envelope's 64 KiB limit is checked on
/// top, so an oversized message is answered, not just cut.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// Seconds a shed client is told to wait.
const RETRY_AFTER_S: u64 = 2;

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/auth/token", post(token))
        .route("/v1/connect", get(connect))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/v1/witness", post(crate::witness::query))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            crate::metrics::track_http,
        ))
        .with_state(state)
}

/// A REST error: `{error, code, request_id}`, plus `Retry-After` when the client should retry.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// 503 with `Retry-After`: the server is shedding load or its database is away.
    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(RETRY_AFTER_S),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
        }
    }

    pub(crate) fn unauthorized(code: &'static str, message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        // The detail (hosts, SQL errors) goes to the log, not to the client.
        if error.is_transient() {
            warn!(%error, "shedding a request");
            Self::unavailable("the server is busy; retry later")
        } else {
            warn!(%error, "a request failed in the database");
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = uuid::Uuid::now_v7().to_string();
        if self.status.is_server_error() {
            info!(%request_id, code = self.code, message = %self.message, "request refused");
        }
        let body = json!({
            "error": self.message,
            "code": self.code,
            "request_id": request_id,
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready = the database answers and every embedded migration is applied.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let client = state.db.client().await?;
    let pending = migrate::pending(&client).await.map_err(DbError::from)?;
    if pending.is_empty() {
        Ok(Json(json!({"status": "ready"})).into_response())
    } else {
        Err(ApiError {
            retry_after_s: Some(RETRY_AFTER_S),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_MIGRATED",
                format!("migrations pending: {pending:?}"),
            )
        })
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

/// `POST /v1/auth/token`: an API key of the org, for a runtime, becomes an access token.
async fn token(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let request: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string()))?;
    if decode_public_key(&request.runtime_id).is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_RUNTIME_ID",
            "runtime_id must be an Ed25519 key as ed25519:<base64url>",
        ));
    }
    // Before any database work: a runtime stuck in a retry loop costs a map lookup.
    let client_key = format!("{}\n{}", request.org_id, request.runtime_id);
    if let Err(wait_s) = state.token_limiter.check(&client_key, Instant::now()) {
        return Err(ApiError {
            retry_after_s: Some(wait_s),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "too many token requests for this runtime",
            )
        });
    }
    let refused = || ApiError::unauthorized("INVALID_API_KEY", "API key refused");
    let key = ApiKey::parse(&request.api_key).ok_or_else(refused)?;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &request.org_id).await?;
    // Under row-level security a key of another org is simply not there.
    let valid = store::api_key_is_valid(&transaction, &key).await?;
    transaction.commit().await.map_err(DbError::from)?;
    if !valid {
        return Err(refused());
    }
    let (access_token, expires_in) = state
        .tokens
        .issue(&request.org_id, &request.runtime_id, &key.key_id)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    state.metrics.token_issued();
    info!(org_id = %request.org_id, runtime_id = %request.runtime_id, key_id = %key.key_id, "token issued");
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in,
    })
    .into_response())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `GET /v1/connect`: the control channel, for a live token whose key is not revoked.
async fn connect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)
        .ok_or_else(|| ApiError::unauthorized("UNAUTHORIZED", "missing bearer token"))?;
    let claims = state.tokens.verify(token).map_err(|_| {
        ApiError::unauthorized("INVALID_TOKEN", "token unknown, expired or revoked")
    })?;
    let permit = Arc::clone(&state.connections)
        .try_acquire_owned()
        .map_err(|_| ApiError::unavailable("too many runtime connections"))?;
    {
        let mut client = state.db.client().await?;
        let transaction = org_transaction(&mut client, &claims.org).await?;
        let live = store::api_key_is_live(&transaction, &claims.kid).await?;
        transaction.commit().await.map_err(DbError::from)?;
        if !live {
            return Err(ApiError::unauthorized(
                "INVALID_TOKEN",
                "token unknown, expired or revoked",
            ));
        }
    }
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            rejection.body_text(),
        )
    })?;
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            let channels = state.channels.clone();
            channels.track_future(async move {
                channel::run(socket, state, claims).await;
                drop(permit);
            })
        }))
}
