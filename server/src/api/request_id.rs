//! Request ids: every answer carries `x-request-id` — the client's own when it sent a
//! well-formed one (so a proxy's or a caller's id follows the request through), else a fresh
//! UUID v7 — and every log line written while the request is served names it (a tracing span).
//! This layer also renders every error body, so the envelope always holds the same id as the
//! header.

use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Map;
use tracing::{Instrument as _, debug, info_span, warn};

use super::error::{ErrorEnvelope, PendingError, code_of_status};

/// The header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a client.
const MAX_CLIENT_ID: usize = 128;

/// At most this much of an axum rejection's text becomes the envelope's message.
const MAX_REJECTION_TEXT: usize = 4096;

/// The id of the request being served (a request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Whether a client's id may be reused: short, and only characters that cannot forge a log line
/// or a header.
fn is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The layer: assigns the id, serves the request inside a span naming it, renders errors.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_well_formed(value))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    async move {
        let response = next.run(request).await;
        let mut response = render_error(response, &id).await;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_millis();
        if response.status().is_server_error() {
            warn!(status, elapsed_ms, "answered");
        } else {
            debug!(status, elapsed_ms, "answered");
        }
        response
    }
    .instrument(span)
    .await
}

/// An error response becomes the envelope; anything else passes unchanged.
async fn render_error(response: Response, request_id: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let pending = match parts.extensions.remove::<PendingError>() {
        Some(pending) => pending,
        None => {
            // axum's own rejection: its text says what was wrong with the request.
            let text = to_bytes(body, MAX_REJECTION_TEXT)
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
                .unwrap_or_default();
            PendingError {
                code: code_of_status(status).to_owned(),
                message: if text.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_lowercase()
                } else {
                    text
                },
                details: Map::new(),
            }
        }
    };
    if status.is_server_error() {
        warn!(code = %pending.code, message = %pending.message, "request failed");
    } else {
        debug!(code = %pending.code, message = %pending.message, "request refused");
    }
    let envelope = ErrorEnvelope {
        error: pending.message,
        code: pending.code,
        request_id: request_id.to_owned(),
        details: pending.details,
    };
    let body = serde_json::to_vec(&envelope).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_taken_from_clients() {
        assert!(is_well_formed("0190f5e2-7c1a-7d1e-9f00-123456789abc"));
        assert!(is_well_formed("lb:abc.def_1"));
        for bad in ["", "a b", "a\nb", "ä", &"x".repeat(129), "id;drop"] {
            assert!(!is_well_formed(bad), "{bad:?}");
        }
    }
}
