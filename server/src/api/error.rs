//! The error envelope of every `/v1` answer that is not a success:
//! `{"error": "...", "code": "UPPER_SNAKE", "request_id": "...", "details": {...}}`.
//!
//! A handler returns an [`ApiError`]; it becomes a response that carries the error as an
//! extension and no body yet. The request-id layer ([`super::request_id`]), which knows the
//! request's id, renders the body. Errors that axum produces itself (a body that is not JSON, a
//! method the route lacks) reach that layer without the extension and are rendered into the same
//! envelope there, so no client ever sees another error shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::warn;
use utoipa::ToSchema;

use crate::db::DbError;

/// Seconds a shed client is told to wait.
pub const RETRY_AFTER_S: u64 = 2;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// For people: what went wrong.
    pub error: String,
    /// For programs: `UPPER_SNAKE`, stable.
    pub code: String,
    /// The request's id, as in the `x-request-id` header and the server's logs.
    pub request_id: String,
    /// More about the error (which field, which role was needed); `{}` when there is nothing.
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

/// An error answer, before the request id is known.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
    retry_after_s: Option<u64>,
}

/// What the request-id layer needs to render an [`ApiError`]: it travels as a response extension.
#[derive(Debug, Clone)]
pub(crate) struct PendingError {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) details: Map<String, Value>,
}

impl ApiError {
    /// An error with `status`, a stable `code` and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after_s: None,
        }
    }

    /// Adds a member to `details`.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Tells the client when to come back (`Retry-After`, seconds).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// 400: the request is not acceptable; `field` names what is wrong.
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message).detail("field", field)
    }

    /// 404, the same for what does not exist and for what belongs to another organisation: an
    /// answer must never tell the two apart.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no such {what}"),
        )
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 503 with `Retry-After`: the server is shedding load or its database is away.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
            .retry_after(RETRY_AFTER_S)
    }

    /// 500; `why` goes to the log only.
    pub fn internal(why: &str) -> Self {
        warn!(why, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.code
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

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        DbError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(PendingError {
            code: self.code.to_owned(),
            message: self.message,
            details: self.details,
        });
        response
    }
}

/// The code of an error status that reached the envelope without an [`ApiError`] (axum's own
/// rejections).
pub(crate) fn code_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "INVALID_BODY",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        s if s.is_server_error() => "INTERNAL",
        _ => "ERROR",
    }
}
