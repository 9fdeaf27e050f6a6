//! The HTTP side: the router (health and readiness, and every `/v1` route of
//! [`crate::api::routes`] behind its access layer), the runtimes' token call and the WebSocket
//! upgrade of their control channel.

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
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tracing::info;

use crate::api::error::{ApiError, ErrorEnvelope, RETRY_AFTER_S};
use crate::api::{Access, access, request_id, routes};
use crate::auth::ApiKey;
use crate::db::{DbError, org_transaction};
use crate::server::AppState;
use crate::{channel, migrate, store};

/// Frames over this are refused by the transport; the envelope's 64 KiB limit is checked on
/// top, so an oversized message is answered, not just cut.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// The routes: health, then every `/v1` route behind the layer its access needs, all behind
/// the request-id layer (which also renders every error body).
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::scrape));
    for route in routes() {
        let handler = match route.access {
            Access::Person(role) => route.handler.route_layer(middleware::from_fn_with_state(
                (Arc::clone(&state), role),
                access::require,
            )),
            Access::PersonOrRuntime(role) => {
                route.handler.route_layer(middleware::from_fn_with_state(
                    (Arc::clone(&state), role),
                    access::require_person_or_runtime,
                ))
            }
            Access::Public | Access::Runtime => route.handler,
        };
        router = router.route(route.path, handler);
    }
    router
        .fallback(crate::dashboard::serve)
        .layer(middleware::from_fn(request_id::layer))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            crate::metrics::track_http,
        ))
        .with_state(state)
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
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_MIGRATED",
            format!("migrations pending: {pending:?}"),
        )
        .retry_after(RETRY_AFTER_S))
    }
}

/// `POST /v1/auth/token`: an API key of the org, for a runtime, becomes an access token.
#[utoipa::path(
    post, path = "/v1/auth/token", tag = "runtime",
    request_body = crate::api::openapi::TokenRequestSchema,
    responses(
        (status = 200, body = crate::api::openapi::TokenResponseSchema),
        (status = 400, body = ErrorEnvelope),
        (status = 401, description = "The API key is not a live key of this organisation", body = ErrorEnvelope),
        (status = 429, description = "Too many token calls of this runtime; see Retry-After", body = ErrorEnvelope),
        (status = 503, description = "Shedding load; see Retry-After", body = ErrorEnvelope),
    )
)]
pub async fn token(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
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
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many token requests for this runtime",
        )
        .retry_after(wait_s));
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
#[utoipa::path(
    get, path = "/v1/connect", tag = "runtime",
    responses(
        (status = 101, description = "WebSocket: the control channel of docs/cloud.md (challenge, hello, welcome, then signed envelopes)"),
        (status = 401, body = ErrorEnvelope),
        (status = 503, description = "Too many open channels or the database is away; see Retry-After", body = ErrorEnvelope),
    )
)]
pub async fn connect(
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
