//! A person's own account (`viewer` and up): changing one's password, and listing and revoking
//! one's login sessions.
//!
//! A password change needs the current password, so a session left open on someone else's
//! screen cannot take the account over. Wrong current passwords count as failed logins of the
//! address (the same shared throttle as `/v1/auth/login`), or a stolen session could guess the
//! password at leisure. A change revokes every other session of the user and keeps the one it
//! came with. Users without a local password (SSO only) have nothing to change here: their
//! identity provider owns their credentials.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::access::Person;
use super::error::{ApiError, ErrorEnvelope};
use crate::db::{DbError, org_transaction};
use crate::entry_columns::format_time;
use crate::password::{self, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
use crate::server::AppState;
use crate::store::people::{self, SessionSummary};

/// `POST /v1/me/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password the account has now.
    pub current_password: String,
    /// The new one (at least 12 characters, at most 1024 bytes).
    pub new_password: String,
}

/// What a password change or reset, or revoking other sessions, did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedSessions {
    /// How many login sessions of the user it revoked.
    pub revoked_sessions: u64,
}

/// One of the person's login sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginSessionView {
    /// Its id.
    pub session_id: String,
    /// How it was opened: `password` or `oidc`.
    pub via: String,
    /// RFC 3339.
    pub created_at: String,
    /// When it was last used (RFC 3339; written at most once a minute).
    pub last_used_at: String,
    /// Its absolute expiry (RFC 3339); an idle session ends earlier.
    pub expires_at: String,
    /// The `User-Agent` the client logged in with (at most 256 characters; `""`: none sent).
    pub user_agent: String,
    /// Whether this is the session of this request.
    pub current: bool,
}

/// `GET /v1/me/sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginSessionList {
    /// The live sessions, newest first.
    pub sessions: Vec<LoginSessionView>,
}

/// The policy on new passwords, the same as when a user is created.
pub fn check_new_password(field: &str, password: &str) -> Result<(), ApiError> {
    if password::acceptable(password) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            field,
            format!(
                "a password needs at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_BYTES} bytes"
            ),
        ))
    }
}

/// 409 for a user who logs in by SSO only.
pub fn no_local_password() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "NO_LOCAL_PASSWORD",
        "this user logs in by single sign-on only and has no password here",
    )
}

/// Changes the person's own password.
#[utoipa::path(
    post, path = "/v1/me/password", tag = "auth",
    request_body = ChangePassword,
    responses(
        (status = 200, description = "Changed; every other session of the user is revoked, this one is kept", body = RevokedSessions),
        (status = 400, description = "The new password does not meet the policy", body = ErrorEnvelope),
        (status = 403, description = "The current password is wrong (`WRONG_PASSWORD`; counted as a failed login)", body = ErrorEnvelope),
        (status = 409, description = "SSO only (`NO_LOCAL_PASSWORD`), or the password changed meanwhile (`PASSWORD_CHANGED`)", body = ErrorEnvelope),
        (status = 429, description = "Too many failures for this address; see Retry-After", body = ErrorEnvelope),
    )
)]
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Json(request): Json<ChangePassword>,
) -> Result<Json<RevokedSessions>, ApiError> {
    check_new_password("new_password", &request.new_password)?;
    let people_config = &state.config.people;
    let window = Duration::from_secs(people_config.login_failure_window_s);
    let email = &person.user.email;
    let user_id = &person.user.user_id;
    let stored = {
        let mut client = state.db.client().await?;
        let transaction = org_transaction(&mut client, &person.org_id).await?;
        if let Some(wait_s) = people::login_locked_for(
            &transaction,
            email,
            people_config.login_failures_per_window,
            window,
        )
        .await?
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "too many failed logins for this address; retry later",
            )
            .retry_after(wait_s));
        }
        let stored = people::password_hash(&transaction, user_id, false).await?;
        transaction.commit().await.map_err(DbError::from)?;
        // The session's user exists (the layer just read it); gone since, it is no account.
        stored
            .ok_or_else(|| ApiError::unauthorized("UNAUTHENTICATED", "no live session: log in"))?
    };
    let Some(stored) = stored else {
        return Err(no_local_password());
    };
    // No connection is held while passwords are hashed.
    let verified = state
        .passwords
        .verify(request.current_password, Some(stored.clone()))
        .await;
    if !verified {
        let mut client = state.db.client().await?;
        let transaction = org_transaction(&mut client, &person.org_id).await?;
        people::record_login_failure(&transaction, &person.org_id, email, window).await?;
        transaction.commit().await.map_err(DbError::from)?;
        info!(user_id = %user_id, "password change refused: wrong current password");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "WRONG_PASSWORD",
            "the current password is wrong",
        ));
    }
    let new_hash = state
        .passwords
        .hash(request.new_password)
        .await
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    if !people::replace_password(&transaction, user_id, &stored, &new_hash).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "PASSWORD_CHANGED",
            "the password was changed meanwhile; try again",
        ));
    }
    let revoked = people::revoke_other_sessions(&transaction, user_id, &person.session_id).await?;
    people::clear_login_failures(&transaction, email).await?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(user_id = %user_id, session_id = %person.session_id, revoked_sessions = revoked, "password changed by its user");
    Ok(Json(RevokedSessions {
        revoked_sessions: revoked,
    }))
}

fn session_view(row: SessionSummary, current: &str) -> LoginSessionView {
    LoginSessionView {
        current: row.session_id == current,
        created_at: format_time(row.created_at),
        last_used_at: format_time(row.last_used_at),
        expires_at: format_time(row.expires_at),
        session_id: row.session_id,
        via: row.via,
        user_agent: row.user_agent,
    }
}

/// Lists the person's live login sessions.
#[utoipa::path(
    get, path = "/v1/me/sessions", tag = "auth",
    responses((status = 200, body = LoginSessionList), (status = 401, body = ErrorEnvelope))
)]
pub async fn sessions(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
) -> Result<Json<LoginSessionList>, ApiError> {
    let idle = Duration::from_secs(state.config.people.session_idle_s);
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let rows = people::live_sessions_of(&transaction, &person.user.user_id, idle).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(LoginSessionList {
        sessions: rows
            .into_iter()
            .map(|row| session_view(row, &person.session_id))
            .collect(),
    }))
}

/// Revokes one of the person's sessions (this one too, if named: then it is a logout that
/// leaves the cookie in place, to be refused from now on).
#[utoipa::path(
    delete, path = "/v1/me/sessions/{session_id}", tag = "auth",
    params(("session_id" = String, Path, description = "One of the person's sessions")),
    responses(
        (status = 204, description = "Revoked (again: still 204)"),
        (status = 404, description = "Not a session of this person", body = ErrorEnvelope),
    )
)]
pub async fn revoke_session(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(session_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let found = people::revoke_own_session(&transaction, &person.user.user_id, &session_id).await?;
    if !found {
        return Err(ApiError::not_found("session"));
    }
    transaction.commit().await.map_err(DbError::from)?;
    info!(user_id = %person.user.user_id, session_id, "session revoked by its user");
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every session of the person but this one.
#[utoipa::path(
    post, path = "/v1/me/sessions/revoke-others", tag = "auth",
    responses((status = 200, body = RevokedSessions, description = "`revoked_sessions`: how many were revoked"), (status = 401, body = ErrorEnvelope))
)]
pub async fn revoke_other_sessions(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
) -> Result<Json<RevokedSessions>, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let revoked =
        people::revoke_other_sessions(&transaction, &person.user.user_id, &person.session_id)
            .await?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(user_id = %person.user.user_id, revoked_sessions = revoked, "other sessions revoked by their user");
    Ok(Json(RevokedSessions {
        revoked_sessions: revoked,
    }))
}
