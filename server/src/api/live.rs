//! `GET /v1/live`: the live stream of a person's organisation, over WebSocket.
//!
//! After the upgrade the server sends `{"kind": "subscribed", "payload": {"org_id"}}` once its
//! replica is listening, then one text frame per event: `{"kind", "payload"}` with kind
//! `decision` (a summary), `runtime_status`, `chain_status`, `resync` (events may have been
//! missed: refetch), and whatever other code publishes (see [`crate::live::publish`]). Frames
//! from the client are ignored.
//!
//! A subscriber is closed with 1008 when it falls more than [`crate::live::EVENTS_PER_ORG`]
//! events behind or a frame cannot be written within [`SEND_TIMEOUT`]: the server never
//! buffers without bound for a slow reader. Its session is checked again every minute, so a
//! logout, an expiry or a disabled user ends the stream too.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info};

use super::access::{Person, authenticate};
use super::error::{ApiError, ErrorEnvelope};
use crate::live::{LiveEvent, kind};
use crate::server::AppState;

/// How long one frame may take to write before the subscriber is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new subscriber waits for its replica's listening connection.
const LISTEN_WAIT: Duration = Duration::from_secs(10);
/// How often the session behind a stream is checked again.
const SESSION_RECHECK: Duration = Duration::from_secs(60);
/// Largest frame accepted from a subscriber (they have nothing to say).
const MAX_CLIENT_FRAME: usize = 4096;

const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// Subscribes to the organisation's live events.
#[utoipa::path(
    get, path = "/v1/live", tag = "live",
    responses(
        (status = 101, description = "WebSocket: text frames `{\"kind\", \"payload\"}`; first `subscribed`, then `decision`, `runtime_status`, `chain_status`, `resync`, …"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
    )
)]
pub async fn live(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            rejection.body_text(),
        )
    })?;
    Ok(upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| {
            let tracker = state.channels.clone();
            tracker.track_future(serve(socket, state, person, headers))
        }))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

async fn serve(mut socket: WebSocket, state: Arc<AppState>, person: Person, headers: HeaderMap) {
    // Subscribed before `subscribed` is sent, so nothing published after it is missed.
    let mut events = state.live.subscribe(&person.org_id);
    if !state.live.wait_listening(LISTEN_WAIT).await {
        close(
            &mut socket,
            CLOSE_TRY_AGAIN_LATER,
            "live events unavailable",
        )
        .await;
        return;
    }
    let hello = LiveEvent {
        kind: kind::SUBSCRIBED.to_owned(),
        payload: json!({"org_id": person.org_id}),
    };
    let hello = serde_json::to_string(&hello).unwrap_or_default();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    info!(org_id = %person.org_id, user_id = %person.user.user_id, "live subscriber");
    let shutdown = state.shutdown.clone();
    let mut recheck = tokio::time::interval(SESSION_RECHECK);
    recheck.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                close(&mut socket, CLOSE_GOING_AWAY, "server shutting down").await;
                break;
            }
            event = events.recv() => match event {
                Ok(text) => {
                    let sent = tokio::time::timeout(
                        SEND_TIMEOUT,
                        socket.send(Message::Text(text.as_ref().into())),
                    )
                    .await;
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            info!(user_id = %person.user.user_id, "dropping a live subscriber that stopped reading");
                            break;
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    info!(user_id = %person.user.user_id, missed, "dropping a live subscriber that fell behind");
                    close(&mut socket, CLOSE_POLICY, "too slow: events were dropped; reconnect and refetch").await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            frame = socket.recv() => match frame {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = recheck.tick() => {
                if authenticate(&state, &headers).await.is_err() {
                    close(&mut socket, CLOSE_POLICY, "session ended").await;
                    break;
                }
            }
        }
    }
    debug!(user_id = %person.user.user_id, "live subscriber gone");
}
