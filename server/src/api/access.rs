//! Who may call what: every `/v1` route declares an [`Access`] in the route table, and this
//! layer enforces it before the handler runs.
//!
//! A person presents a session token as `Authorization: Bearer` or as the session cookie. The
//! session must be live (not revoked, within its absolute and idle expiry) and its user enabled;
//! the user's role, read afresh on every request, must be at least the route's.
//!
//! CSRF: a request authenticated by the **cookie** that changes state (any method but GET,
//! HEAD, OPTIONS) must carry the session's synchronizer token in `x-csrf-token` (given at login
//! and by `GET /v1/me`). The cookie is also `SameSite=Strict`, and bodies are JSON only (a
//! cross-site form cannot send `application/json` without a CORS preflight, which this server
//! never grants): three independent defences. Bearer requests need none, since a browser never
//! adds an `Authorization` header by itself.
//!
//! A few routes serve runtimes as well as people (the policy registry's, which the daemon
//! calls with its access token): [`Access::PersonOrRuntime`]. A bearer that is not a session
//! token (`abs_…`) is then taken for a runtime's JWT: it must verify, and the API key it was
//! issued for must still be live, as for the control channel. The handler receives a
//! [`Caller`] and decides what each may do.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use tracing::debug;

use super::error::ApiError;
use crate::auth::Claims;
use crate::db::{DbError, org_transaction};
use crate::role::Role;
use crate::server::AppState;
use crate::session_token::{
    CSRF_HEADER, Carrier, SESSION_PREFIX, org_of, presented, same_secret, token_hash,
};
use crate::store::{
    self,
    people::{self, User},
};

/// A session's `last_used_at` is written at most this often (its idle expiry is that coarse).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (login, the OpenAPI document, the token call).
    Public,
    /// A runtime's access token, checked by the handler (the control channel).
    Runtime,
    /// A person with at least this role.
    Person(Role),
    /// A person with at least this role, or a runtime of the organisation with its access token.
    PersonOrRuntime(Role),
}

impl Access {
    /// How the OpenAPI document names it (`x-min-role`: the people's role).
    pub fn name(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Runtime => "runtime",
            Access::Person(role) | Access::PersonOrRuntime(role) => role.as_str(),
        }
    }
}

/// A runtime calling with its access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCaller {
    /// Its organisation.
    pub org_id: String,
    /// `ed25519:` + its public key.
    pub runtime_id: String,
}

/// Who calls a route open to people and runtimes (a request extension).
#[derive(Debug, Clone)]
pub enum Caller {
    /// A person, role checked.
    Person(Person),
    /// A runtime.
    Runtime(RuntimeCaller),
}

impl Caller {
    /// The organisation every query of the request is scoped to.
    pub fn org_id(&self) -> &str {
        match self {
            Caller::Person(person) => &person.org_id,
            Caller::Runtime(runtime) => &runtime.org_id,
        }
    }
}

/// The authenticated person of a request (a request extension).
#[derive(Debug, Clone)]
pub struct Person {
    /// The organisation: every query of the request is scoped to it.
    pub org_id: String,
    /// The user, as of this request.
    pub user: User,
    /// The session.
    pub session_id: String,
    /// Its CSRF token.
    pub csrf_token: String,
    /// Its absolute expiry.
    pub expires_at: SystemTime,
    /// How the token came.
    pub carrier: Carrier,
}

fn unauthenticated() -> ApiError {
    ApiError::unauthorized("UNAUTHENTICATED", "no live session: log in")
}

/// The person behind a request's session token.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Person, ApiError> {
    let (token, carrier) = presented(headers).ok_or_else(unauthenticated)?;
    let org_id = org_of(&token).ok_or_else(unauthenticated)?.to_owned();
    let idle = Duration::from_secs(state.config.people.session_idle_s);
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &org_id).await?;
    let session = people::live_session(&transaction, &token_hash(&token), idle, TOUCH_EVERY)
        .await?
        .ok_or_else(unauthenticated)?;
    if session.stale {
        people::touch_session(&transaction, &session.session_id).await?;
    }
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Person {
        org_id,
        user: session.user,
        session_id: session.session_id,
        csrf_token: session.csrf_token,
        expires_at: session.expires_at,
        carrier,
    })
}

/// Whether a method changes state (and so needs the CSRF token with a cookie).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The layer on each person route: authenticates, checks CSRF and the role, and hands the
/// [`Person`] to the handler.
pub async fn require(
    State((state, minimum)): State<(Arc<AppState>, Role)>,
    mut request: Request,
    next: Next,
) -> Response {
    match admit_person(&state, minimum, request.headers(), request.method()).await {
        Ok(person) => {
            request.extensions_mut().insert(person);
            next.run(request).await
        }
        Err(refusal) => refusal,
    }
}

/// The layer on each route open to people and runtimes: a runtime's access token, or a
/// person's session as [`require`] checks it; hands the [`Caller`] to the handler.
pub async fn require_person_or_runtime(
    State((state, minimum)): State<(Arc<AppState>, Role)>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match runtime_bearer(request.headers()) {
        Some(token) => match admit_runtime(&state, &token).await {
            Ok(runtime) => Caller::Runtime(runtime),
            Err(error) => return error.into_response(),
        },
        None => match admit_person(&state, minimum, request.headers(), request.method()).await {
            Ok(person) => Caller::Person(person),
            Err(refusal) => return refusal,
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// A bearer token that is not a person's session: a runtime's JWT, if anything.
fn runtime_bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|token| !token.starts_with(SESSION_PREFIX))
        .map(str::to_owned)
}

/// The runtime behind an access token: it verifies, and its API key is still live.
async fn admit_runtime(state: &AppState, token: &str) -> Result<RuntimeCaller, ApiError> {
    let refused = || ApiError::unauthorized("INVALID_TOKEN", "token unknown, expired or revoked");
    let Claims { sub, org, kid, .. } = state.tokens.verify(token).map_err(|_| refused())?;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &org).await?;
    let live = store::api_key_is_live(&transaction, &kid).await?;
    transaction.commit().await.map_err(DbError::from)?;
    if !live {
        return Err(refused());
    }
    Ok(RuntimeCaller {
        org_id: org,
        runtime_id: sub,
    })
}

/// The person of a request, with CSRF and role checked; the refusal otherwise.
async fn admit_person(
    state: &AppState,
    minimum: Role,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Person, Response> {
    let person = match authenticate(state, headers).await {
        Ok(person) => person,
        Err(error) => return Err(error.into_response()),
    };
    if person.carrier == Carrier::Cookie && changes_state(method) {
        let echoed = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|token| same_secret(token, &person.csrf_token));
        if !echoed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "CSRF_TOKEN_REQUIRED",
                "a cookie-authenticated change needs the session's x-csrf-token header",
            )
            .into_response());
        }
    }
    if person.user.role < minimum {
        debug!(user_id = %person.user.user_id, role = %person.user.role, required = %minimum, "role too low");
        return Err(role_too_low(minimum, person.user.role).into_response());
    }
    Ok(person)
}

/// 403 for a person whose role is below `minimum`.
pub fn role_too_low(minimum: Role, role: Role) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        format!("this needs the {minimum} role"),
    )
    .detail("required_role", minimum.as_str())
    .detail("role", role.as_str())
}
