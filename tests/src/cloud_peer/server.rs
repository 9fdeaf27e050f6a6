//! The HTTP side: the token call, the policy registry and the WebSocket upgrade.

use std::sync::Arc;
use std::time::Instant;

use atlasbridge_protocol::cloud::rest::{
    ErrorBody, PolicyUpload, PolicyVersion, TokenRequest, TokenResponse,
};
use atlasbridge_protocol::cloud::witness::WitnessQuery;
use atlasbridge_protocol::trace::checkpoint::decode_public_key;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::state::{OpenConnection, PeerState};
use super::{Refusal, Shared, connection, timestamp};

/// Frames over this are refused by the transport; the envelope's own 64 KiB limit is checked
/// (and recorded as a protocol error) above it, so an oversized message is seen, not just cut.
const MAX_FRAME_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub(super) struct App {
    shared: Arc<Shared>,
    kill: watch::Receiver<bool>,
}

pub(super) fn router(shared: Arc<Shared>, kill: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/v1/auth/token", post(token))
        .route("/v1/connect", get(connect))
        .route("/v1/policies/{name}", get(list_versions))
        .route("/v1/policies/{name}/versions", post(upload))
        .route("/v1/policies/{name}/versions/{version}", get(version))
        .route("/v1/witness", post(witness))
        .fallback(not_found)
        .with_state(App { shared, kill })
}

/// A REST error with the spec's body.
fn error(state: &mut PeerState, status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: message.to_owned(),
        code: code.to_owned(),
        request_id: state.next_request_id(),
    };
    (status, Json(body)).into_response()
}

/// A throttled answer: `status` with `Retry-After`.
fn throttled(state: &mut PeerState, status: u16, retry_after: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let code = if status == StatusCode::TOO_MANY_REQUESTS {
        "RATE_LIMITED"
    } else {
        "UNAVAILABLE"
    };
    let mut response = error(state, status, code, "try again later");
    let value = HeaderValue::from_str(retry_after).unwrap_or(HeaderValue::from_static("1"));
    response.headers_mut().insert(header::RETRY_AFTER, value);
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The runtime the request's live token was issued to, or the 401 to answer (boxed: a response
/// is large).
fn authorize(state: &mut PeerState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    match bearer(headers) {
        None => Err(Box::new(error(
            state,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing bearer token",
        ))),
        Some(token) => state.token_runtime(token, Instant::now()).ok_or_else(|| {
            Box::new(error(
                state,
                StatusCode::UNAUTHORIZED,
                "INVALID_TOKEN",
                "token unknown, expired or revoked",
            ))
        }),
    }
}

async fn not_found(State(app): State<App>) -> Response {
    app.shared
        .update(|s| error(s, StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"))
}

async fn token(State(app): State<App>, body: Bytes) -> Response {
    let shared = &app.shared;
    shared.update(|s| {
        s.token_attempts.push(Instant::now());
        if let Some((status, retry_after)) = PeerState::take_throttle(&mut s.faults.throttle_tokens)
        {
            return throttled(s, status, &retry_after);
        }
        let request: TokenRequest = match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                s.protocol_errors.push(format!("token call: {e}"));
                return error(s, StatusCode::BAD_REQUEST, "BAD_REQUEST", &e.to_string());
            }
        };
        s.token_requests.push(request.clone());
        if request.api_key != shared.api_key {
            return error(
                s,
                StatusCode::UNAUTHORIZED,
                "INVALID_API_KEY",
                "API key refused",
            );
        }
        let (access_token, expires_in) = s.issue_token(Instant::now(), &request.runtime_id);
        let body = TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in,
        };
        (StatusCode::OK, Json(body)).into_response()
    })
}

async fn connect(
    State(app): State<App>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let shared = Arc::clone(&app.shared);
    let admitted = shared.update(|s| {
        s.upgrade_attempts.push(Instant::now());
        if s.faults.refuse == Some(Refusal::ServiceUnavailable) {
            return Err(Box::new(error(
                s,
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "refusing connections",
            )));
        }
        if let Some((status, retry_after)) =
            PeerState::take_throttle(&mut s.faults.throttle_upgrades)
        {
            return Err(Box::new(throttled(s, status, &retry_after)));
        }
        let runtime_id = authorize(s, &headers)?;
        Ok(runtime_id)
    });
    let runtime_id = match admitted {
        Ok(runtime_id) => runtime_id,
        Err(response) => return *response,
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            shared.update(|s| s.protocol_errors.push(format!("upgrade: {rejection}")));
            return rejection.into_response();
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let id = shared.update(|s| {
        s.last_connection += 1;
        let id = s.last_connection;
        s.open.insert(
            id,
            OpenConnection {
                tx: tx.clone(),
                handshaken: false,
            },
        );
        id
    });
    let kill = app.kill;
    let on_upgrade_shared = Arc::clone(&shared);
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_failed_upgrade(move |e| {
            on_upgrade_shared.update(|s| {
                s.protocol_errors.push(format!("upgrade failed: {e}"));
                s.connection_closed(id);
            });
        })
        .on_upgrade(move |socket| connection::run(socket, shared, kill, id, runtime_id, tx, rx))
}

async fn list_versions(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    app.shared.update(|s| {
        if let Err(response) = authorize(s, &headers) {
            return *response;
        }
        let Some(versions) = s.policies.get(&name).filter(|v| !v.is_empty()) else {
            return error(s, StatusCode::NOT_FOUND, "NOT_FOUND", "no such policy");
        };
        let body = json!({
            "name": name,
            "latest_version": versions.last().map(|v| v.version.clone()),
            "versions": versions.iter().map(|v| json!({
                "version": v.version,
                "content_hash": v.content_hash,
                "signed_at": v.signed_at,
            })).collect::<Vec<_>>(),
        });
        (StatusCode::OK, Json(body)).into_response()
    })
}

async fn version(
    State(app): State<App>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    app.shared.update(|s| {
        if let Err(response) = authorize(s, &headers) {
            return *response;
        }
        let found = s
            .policies
            .get(&name)
            .and_then(|versions| versions.iter().find(|v| v.version == version))
            .cloned();
        match found {
            Some(stored) => (StatusCode::OK, Json(stored)).into_response(),
            None => error(
                s,
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such policy version",
            ),
        }
    })
}

async fn upload(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let shared = &app.shared;
    shared.update(|s| {
        if let Err(response) = authorize(s, &headers) {
            return *response;
        }
        let upload: PolicyUpload = match serde_json::from_slice(&body) {
            Ok(upload) => upload,
            Err(e) => {
                s.protocol_errors.push(format!("policy upload: {e}"));
                return error(s, StatusCode::BAD_REQUEST, "BAD_REQUEST", &e.to_string());
            }
        };
        let verifies = decode_public_key(&upload.runtime_id)
            .is_some_and(|key| upload.signature_verifies(&key));
        if !verifies {
            s.protocol_errors
                .push(format!("policy upload of {name}: bad signature"));
            return error(
                s,
                StatusCode::BAD_REQUEST,
                "BAD_SIGNATURE",
                "upload signature does not verify under its runtime_id",
            );
        }
        let versions = s.policies.entry(name.clone()).or_default();
        let version = (versions.len() + 1).to_string();
        versions.push(
            PolicyVersion {
                name: name.clone(),
                version: version.clone(),
                content_hash: upload.content_hash.clone(),
                yaml: upload.yaml.clone(),
                signed_at: timestamp(0),
                signature: String::new(),
            }
            .sign(&shared.server_key),
        );
        let body = json!({
            "name": name,
            "version": version,
            "content_hash": upload.content_hash,
        });
        s.uploads.push(upload);
        (StatusCode::CREATED, Json(body)).into_response()
    })
}

async fn witness(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    app.shared.update(|s| {
        s.witness_queries += 1;
        let runtime_id = match authorize(s, &headers) {
            Ok(runtime_id) => runtime_id,
            Err(response) => return *response,
        };
        let query: WitnessQuery = match serde_json::from_slice(&body) {
            Ok(query) => query,
            Err(e) => {
                s.protocol_errors.push(format!("witness query: {e}"));
                return error(s, StatusCode::BAD_REQUEST, "BAD_REQUEST", &e.to_string());
            }
        };
        let seqs = match query.seqs_wanted() {
            Ok(seqs) => seqs,
            Err(e) => {
                s.protocol_errors.push(format!("witness query: {e}"));
                return error(
                    s,
                    StatusCode::BAD_REQUEST,
                    "QUERY_TOO_LARGE",
                    &e.to_string(),
                );
            }
        };
        let answer = s.witness(&runtime_id, query.stream, &seqs);
        (StatusCode::OK, Json(answer)).into_response()
    })
}
