//! People's login: passwords (`/v1/auth/login`), SSO (`/v1/auth/oidc/*`), `/v1/auth/logout`
//! and `/v1/me`.
//!
//! Every failed password login gets the same answer — unknown organisation, unknown address,
//! wrong password, disabled account or an account without a password alike — after the same
//! work (an argon2 verification, against a dummy hash when there is no real one), so answers do
//! not reveal who has an account. Failures are counted per address in the database (shared by
//! every replica); past `people.login_failures_per_window` in a window, the address gets 429
//! with `Retry-After` until the window ends, whether or not it has an account.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

use super::access::Person;
use super::error::{ApiError, ErrorEnvelope};
use super::users::UserView;
use crate::config::UnknownUsers;
use crate::db::{DbError, org_transaction};
use crate::entry_columns::format_time;
use crate::oidc::OidcError;
use crate::role::Role;
use crate::server::AppState;
use crate::session_token::{
    SESSION_COOKIE, cookie, new_token, random_secret, set_cookie, token_hash,
};
use crate::store::people::{self, CreateUserError, NewSession, NewUser};

/// The cookie binding an SSO login to the browser that started it.
pub const OIDC_BINDING_COOKIE: &str = "atlasbridge_oidc";
/// How long an SSO login may take at the provider.
const OIDC_LOGIN_LIFETIME: Duration = Duration::from_secs(600);

/// `POST /v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The organisation.
    pub org_id: String,
    /// The address.
    pub email: String,
    /// The password.
    pub password: String,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginAnswer {
    /// The session token, for `Authorization: Bearer` (tools). Browsers use the HttpOnly
    /// cookie set with this answer instead and should not keep the token.
    pub session_token: String,
    /// Echo it in `x-csrf-token` on cookie-authenticated changes.
    pub csrf_token: String,
    /// Absolute expiry (RFC 3339); idle sessions end earlier.
    pub expires_at: String,
    /// Who logged in.
    pub user: UserView,
}

/// `GET /v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeAnswer {
    /// The organisation.
    pub org_id: String,
    /// The user.
    pub user: UserView,
    /// The session.
    pub session_id: String,
    /// The session's CSRF token (for cookie-authenticated changes).
    pub csrf_token: String,
    /// Absolute expiry (RFC 3339).
    pub expires_at: String,
}

fn session_cookie(state: &AppState, token: &str, max_age_s: u64) -> HeaderValue {
    let value = set_cookie(
        SESSION_COOKIE,
        token,
        max_age_s,
        state.config.people.cookie_secure,
        "Strict",
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A new session's secrets.
struct Opened {
    token: String,
    csrf_token: String,
    expires_at: SystemTime,
}

async fn open_session(
    state: &AppState,
    transaction: &tokio_postgres::Transaction<'_>,
    org_id: &str,
    user_id: &str,
    via: &str,
    headers: &HeaderMap,
) -> Result<Opened, ApiError> {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let token = new_token(org_id).map_err(|e| ApiError::internal(&e.to_string()))?;
    let csrf_token = random_secret().map_err(|e| ApiError::internal(&e.to_string()))?;
    let (session_id, expires_at) = people::create_session(
        transaction,
        org_id,
        &NewSession {
            user_id,
            token_hash: &token_hash(&token),
            csrf_token: &csrf_token,
            via,
            lifetime: Duration::from_secs(state.config.people.session_lifetime_s),
            user_agent,
        },
    )
    .await?;
    info!(org_id, user_id, session_id, via, "session opened");
    Ok(Opened {
        token,
        csrf_token,
        expires_at,
    })
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized(
        "INVALID_CREDENTIALS",
        "unknown organisation, email or password",
    )
}

/// Logs in with a password.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A session; also set as the HttpOnly, SameSite=Strict `atlasbridge_session` cookie", body = LoginAnswer),
        (status = 401, description = "The same answer for every kind of failure", body = ErrorEnvelope),
        (status = 429, description = "Too many failures for this address; see Retry-After", body = ErrorEnvelope),
    )
)]
pub async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(request): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let people_config = &state.config.people;
    let window = Duration::from_secs(people_config.login_failure_window_s);
    let email = people::normalise_email(&request.email);
    let (org_exists, candidate) = {
        let mut client = state.db.client().await?;
        let transaction = org_transaction(&mut client, &request.org_id).await?;
        let org_exists = transaction
            .query_opt("SELECT 1 FROM orgs", &[])
            .await
            .map_err(DbError::from)?
            .is_some();
        let mut candidate = None;
        if org_exists {
            if let Some(wait_s) = people::login_locked_for(
                &transaction,
                &email,
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
            candidate = people::login_candidate(&transaction, &email).await?;
        }
        transaction.commit().await.map_err(DbError::from)?;
        (org_exists, candidate)
    };
    // No connection is held while the password is hashed.
    let (user, stored) = match candidate {
        Some((user, stored)) if !user.disabled => (Some(user), stored),
        _ => (None, None),
    };
    let verified = state.passwords.verify(request.password, stored).await;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &request.org_id).await?;
    let Some(user) = user.filter(|_| verified) else {
        if org_exists {
            people::record_login_failure(&transaction, &request.org_id, &email, window).await?;
        }
        transaction.commit().await.map_err(DbError::from)?;
        info!(org_id = %request.org_id, "password login refused");
        return Err(invalid_credentials());
    };
    people::clear_login_failures(&transaction, &email).await?;
    let opened = open_session(
        &state,
        &transaction,
        &request.org_id,
        &user.user_id,
        "password",
        &headers,
    )
    .await?;
    transaction.commit().await.map_err(DbError::from)?;
    let mut response = Json(LoginAnswer {
        session_token: opened.token.clone(),
        csrf_token: opened.csrf_token,
        expires_at: format_time(opened.expires_at),
        user: UserView::from(&user),
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, &opened.token, people_config.session_lifetime_s),
    );
    Ok(response)
}

/// Ends the session the request came with.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "The session is revoked and the cookie cleared"),
        (status = 401, body = ErrorEnvelope),
    )
)]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
) -> Result<Response, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    people::revoke_session(&transaction, &person.session_id).await?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(session_id = %person.session_id, "session closed");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}

/// Who the session belongs to.
#[utoipa::path(
    get, path = "/v1/me", tag = "auth",
    responses((status = 200, body = MeAnswer), (status = 401, body = ErrorEnvelope))
)]
pub async fn me(Extension(person): Extension<Person>) -> Json<MeAnswer> {
    Json(MeAnswer {
        org_id: person.org_id.clone(),
        user: UserView::from(&person.user),
        session_id: person.session_id.clone(),
        csrf_token: person.csrf_token.clone(),
        expires_at: format_time(person.expires_at),
    })
}

fn sso_not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "SSO_NOT_CONFIGURED",
        "single sign-on is not configured on this server",
    )
}

fn from_oidc(error: OidcError) -> ApiError {
    warn!(%error, "SSO login failed");
    match error {
        OidcError::Provider(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "SSO_PROVIDER_UNAVAILABLE",
            "the identity provider is unavailable",
        ),
        OidcError::Refused(_) | OidcError::IdToken(_) => ApiError::unauthorized(
            "SSO_FAILED",
            "the identity provider's answer was not accepted",
        ),
        OidcError::Setup(why) => ApiError::internal(&why),
    }
}

/// Starts an SSO login: redirects the browser to the identity provider.
#[utoipa::path(
    get, path = "/v1/auth/oidc/login", tag = "auth",
    responses(
        (status = 303, description = "To the provider's authorization endpoint (authorization code, PKCE S256); sets a short-lived browser-binding cookie"),
        (status = 404, description = "SSO is not configured", body = ErrorEnvelope),
        (status = 502, description = "The provider is unavailable", body = ErrorEnvelope),
    )
)]
pub async fn oidc_login(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let oidc = state.oidc.as_ref().ok_or_else(sso_not_configured)?;
    let mut beginning = oidc.begin().await.map_err(from_oidc)?;
    beginning.pending.binding_hash = token_hash(&beginning.binding);
    let org_id = &oidc.config().org_id;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, org_id).await?;
    people::store_oidc_login(
        &transaction,
        org_id,
        &token_hash(&beginning.state),
        &beginning.pending,
        OIDC_LOGIN_LIFETIME,
    )
    .await?;
    transaction.commit().await.map_err(DbError::from)?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let location = HeaderValue::from_str(&beginning.authorization_url)
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    response.headers_mut().insert(header::LOCATION, location);
    let binding = set_cookie(
        OIDC_BINDING_COOKIE,
        &beginning.binding,
        OIDC_LOGIN_LIFETIME.as_secs(),
        state.config.people.cookie_secure,
        "Lax",
    );
    if let Ok(value) = HeaderValue::from_str(&binding) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// What the provider sends back.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The state this server sent.
    pub state: Option<String>,
    /// The provider's error, when it refused.
    pub error: Option<String>,
}

/// Finishes an SSO login (any replica can): checks the state and the browser binding,
/// exchanges the code, verifies the ID token, opens a session and redirects.
#[utoipa::path(
    get, path = "/v1/auth/oidc/callback", tag = "auth",
    params(CallbackQuery),
    responses(
        (status = 303, description = "Logged in: the session cookie is set, the browser goes to `oidc.after_login`"),
        (status = 401, description = "Unknown or expired state, another browser, or an ID token that does not hold", body = ErrorEnvelope),
        (status = 403, description = "The organisation does not know this person, or the account is disabled", body = ErrorEnvelope),
        (status = 502, body = ErrorEnvelope),
    )
)]
pub async fn oidc_callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let oidc = state.oidc.as_ref().ok_or_else(sso_not_configured)?;
    if let Some(error) = query.error {
        warn!(error, "the identity provider refused the login");
        return Err(ApiError::unauthorized(
            "SSO_FAILED",
            "the identity provider refused the login",
        ));
    }
    let bad_state = || ApiError::unauthorized("SSO_FAILED", "unknown or expired login");
    let (code, login_state) = match (query.code, query.state) {
        (Some(code), Some(login_state)) => (code, login_state),
        _ => return Err(ApiError::bad_request("code", "code and state are required")),
    };
    let org_id = oidc.config().org_id.clone();
    // Taken (deleted) first, in a transaction of its own: a state is used once, even when
    // the rest of the login fails.
    let pending = {
        let mut client = state.db.client().await?;
        let transaction = org_transaction(&mut client, &org_id).await?;
        let pending = people::take_oidc_login(&transaction, &token_hash(&login_state)).await?;
        transaction.commit().await.map_err(DbError::from)?;
        pending.ok_or_else(bad_state)?
    };
    let same_browser = cookie(&headers, OIDC_BINDING_COOKIE)
        .is_some_and(|binding| token_hash(&binding) == pending.binding_hash);
    if !same_browser {
        return Err(ApiError::unauthorized(
            "SSO_FAILED",
            "this login was started in another browser",
        ));
    }
    let identity = oidc.finish(&code, &pending).await.map_err(from_oidc)?;

    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &org_id).await?;
    let mut user = people::user_by_oidc(&transaction, &identity.issuer, &identity.subject).await?;
    if user.is_none()
        && identity.email_verified
        && let Some(email) = &identity.email
        && let Some((candidate, _)) = people::login_candidate(&transaction, email).await?
        && people::link_oidc(
            &transaction,
            &candidate.user_id,
            &identity.issuer,
            &identity.subject,
        )
        .await?
    {
        info!(user_id = %candidate.user_id, "SSO identity linked to an existing user by verified email");
        user = Some(candidate);
    }
    let unknown = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "SSO_UNKNOWN_USER",
            "this organisation has no user for this identity",
        )
    };
    let user = match user {
        Some(user) => user,
        None => match oidc.config().unknown_users {
            UnknownUsers::Refuse => return Err(unknown()),
            UnknownUsers::CreateViewer => {
                let email = identity
                    .email
                    .clone()
                    .filter(|email| people::plausible_email(email))
                    .ok_or_else(unknown)?;
                let new = NewUser {
                    email,
                    display_name: identity.name.clone().unwrap_or_default(),
                    role: Role::Viewer,
                    password_hash: None,
                    oidc: Some((identity.issuer.clone(), identity.subject.clone())),
                };
                match people::create_user(&transaction, &org_id, &new).await {
                    Ok(user) => {
                        info!(user_id = %user.user_id, "SSO user created as a viewer");
                        user
                    }
                    Err(CreateUserError::Db(e)) => return Err(e.into()),
                    Err(_) => return Err(unknown()),
                }
            }
        },
    };
    if user.disabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ACCOUNT_DISABLED",
            "this account is disabled",
        ));
    }
    let opened = open_session(
        &state,
        &transaction,
        &org_id,
        &user.user_id,
        "oidc",
        &headers,
    )
    .await?;
    transaction.commit().await.map_err(DbError::from)?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let location = HeaderValue::from_str(&oidc.config().after_login)
        .unwrap_or_else(|_| HeaderValue::from_static("/"));
    response.headers_mut().insert(header::LOCATION, location);
    response.headers_mut().append(
        header::SET_COOKIE,
        session_cookie(
            &state,
            &opened.token,
            state.config.people.session_lifetime_s,
        ),
    );
    let clear = set_cookie(
        OIDC_BINDING_COOKIE,
        "",
        0,
        state.config.people.cookie_secure,
        "Lax",
    );
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}
