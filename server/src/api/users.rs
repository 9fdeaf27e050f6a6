//! Users and roles (`admin` and up): list, create, change role or name, disable.
//!
//! Owners are managed by owners only: an admin can neither create an owner, nor promote anyone
//! to owner, nor change or disable an owner. The last enabled owner of an organisation can be
//! neither demoted nor disabled (checked with the owners' rows locked, so two concurrent
//! demotions cannot both pass).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::access::Person;
use super::account::{RevokedSessions, check_new_password, no_local_password};
use super::error::{ApiError, ErrorEnvelope};
use crate::db::{DbError, org_transaction};
use crate::entry_columns::format_time;
use crate::password::{self, MIN_PASSWORD_CHARS};
use crate::role::Role;
use crate::server::AppState;
use crate::store::people::{self, CreateUserError, NewUser, User};

/// A user, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// Its id.
    pub user_id: String,
    /// Lower-cased.
    pub email: String,
    /// For people.
    pub display_name: String,
    /// What it may do.
    pub role: Role,
    /// Disabled users cannot log in.
    pub disabled: bool,
    /// Whether it can log in with a password.
    pub has_password: bool,
    /// Whether an SSO identity is linked.
    pub sso_linked: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        Self {
            user_id: user.user_id.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            role: user.role,
            disabled: user.disabled,
            has_password: user.has_password,
            sso_linked: user.sso_linked,
            created_at: format_time(user.created_at),
        }
    }
}

/// `GET /v1/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// Every user of the organisation, oldest first.
    pub users: Vec<UserView>,
}

/// `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The address (one user per address).
    pub email: String,
    /// For people.
    #[serde(default)]
    pub display_name: String,
    /// Its role (`owner` only by an owner).
    pub role: Role,
    /// A password (at least 12 characters); without one, the user logs in by SSO only.
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST /v1/users/{user_id}/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    /// The new password (at least 12 characters, at most 1024 bytes).
    pub new_password: String,
}

/// `PATCH /v1/users/{user_id}`: what is given changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// A new role.
    #[serde(default)]
    pub role: Option<Role>,
    /// A new display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Disable (revoking its sessions) or enable again.
    #[serde(default)]
    pub disabled: Option<bool>,
}

fn owners_only() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "OWNER_REQUIRED",
        "only an owner can create, change or disable owners",
    )
    .detail("required_role", "owner")
}

/// Lists the users.
#[utoipa::path(
    get, path = "/v1/users", tag = "users",
    responses((status = 200, body = UserList), (status = 403, body = ErrorEnvelope))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
) -> Result<Json<UserList>, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let users = people::list_users(&transaction).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(Json(UserList {
        users: users.iter().map(UserView::from).collect(),
    }))
}

/// Creates a user.
#[utoipa::path(
    post, path = "/v1/users", tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, body = UserView),
        (status = 400, body = ErrorEnvelope),
        (status = 403, description = "Not an admin, or an admin creating an owner", body = ErrorEnvelope),
        (status = 409, description = "The address is taken", body = ErrorEnvelope),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Json(request): Json<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if request.role == Role::Owner && person.user.role < Role::Owner {
        return Err(owners_only());
    }
    if !people::plausible_email(&request.email) {
        return Err(ApiError::bad_request("email", "not an email address"));
    }
    let password_hash = match request.password {
        Some(password) if !password::acceptable(&password) => {
            return Err(ApiError::bad_request(
                "password",
                format!("a password needs at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        Some(password) => Some(
            state
                .passwords
                .hash(password)
                .await
                .map_err(|e| ApiError::internal(&e.to_string()))?,
        ),
        None => None,
    };
    let new = NewUser {
        email: request.email,
        display_name: request.display_name,
        role: request.role,
        password_hash,
        oidc: None,
    };
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let user = match people::create_user(&transaction, &person.org_id, &new).await {
        Ok(user) => user,
        Err(CreateUserError::Exists) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "USER_EXISTS",
                "a user with this email already exists",
            ));
        }
        Err(CreateUserError::NoOrg) => return Err(ApiError::not_found("organisation")),
        Err(CreateUserError::Db(e)) => return Err(e.into()),
    };
    transaction.commit().await.map_err(DbError::from)?;
    info!(by = %person.user.user_id, user_id = %user.user_id, role = %user.role, "user created");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// Changes a user's role or display name, or disables or enables it.
#[utoipa::path(
    patch, path = "/v1/users/{user_id}", tag = "users",
    params(("user_id" = String, Path, description = "The user")),
    request_body = UpdateUser,
    responses(
        (status = 200, body = UserView),
        (status = 403, description = "Not an admin, or an admin touching owners", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "It would leave the organisation without an enabled owner", body = ErrorEnvelope),
    )
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(user_id): Path<String>,
    Json(request): Json<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    // Owners first, then the target: every change to owners takes the locks in this order.
    let owners = people::lock_active_owners(&transaction).await?;
    let target = people::user(&transaction, &user_id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let touches_owners = target.role == Role::Owner || request.role == Some(Role::Owner);
    if touches_owners && person.user.role < Role::Owner {
        return Err(owners_only());
    }
    let stays_owner =
        request.role.is_none_or(|role| role == Role::Owner) && request.disabled != Some(true);
    let is_active_owner = owners.contains(&target.user_id);
    if is_active_owner && !stays_owner && owners.len() <= 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "LAST_OWNER",
            "the last owner can be neither demoted nor disabled",
        ));
    }
    let user = people::update_user(
        &transaction,
        &user_id,
        request.role,
        request.display_name.as_deref(),
        request.disabled,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(by = %person.user.user_id, user_id = %user.user_id, role = %user.role, disabled = user.disabled, "user changed");
    Ok(Json(UserView::from(&user)))
}

/// Sets another user's password (an administrator's reset) and revokes all of that user's
/// sessions. Owners' passwords are reset by owners only; one's own password is changed with
/// `POST /v1/me/password`, which asks for the current one (a stolen administrator session must
/// not be able to take the account over); users without a local password (SSO only) keep
/// having none.
#[utoipa::path(
    post, path = "/v1/users/{user_id}/password", tag = "users",
    params(("user_id" = String, Path, description = "The user")),
    request_body = ResetPassword,
    responses(
        (status = 200, description = "Reset; every session of the user is revoked", body = RevokedSessions),
        (status = 400, description = "The new password does not meet the policy", body = ErrorEnvelope),
        (status = 403, description = "Not an admin, an admin resetting an owner (`OWNER_REQUIRED`), or one's own password (`OWN_PASSWORD`)", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "The user logs in by SSO only (`NO_LOCAL_PASSWORD`)", body = ErrorEnvelope),
    )
)]
pub async fn reset_password(
    State(state): State<Arc<AppState>>,
    Extension(person): Extension<Person>,
    Path(user_id): Path<String>,
    Json(request): Json<ResetPassword>,
) -> Result<Json<RevokedSessions>, ApiError> {
    check_new_password("new_password", &request.new_password)?;
    if user_id == person.user.user_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "OWN_PASSWORD",
            "change your own password with POST /v1/me/password, which needs the current one",
        ));
    }
    // Hashed before the transaction, so no connection and no row lock wait on argon2.
    let new_hash = state
        .passwords
        .hash(request.new_password)
        .await
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    let mut client = state.db.client().await?;
    let transaction = org_transaction(&mut client, &person.org_id).await?;
    let target = people::user(&transaction, &user_id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if target.role == Role::Owner && person.user.role < Role::Owner {
        return Err(owners_only());
    }
    if !target.has_password {
        return Err(no_local_password());
    }
    people::set_password(&transaction, &user_id, &new_hash).await?;
    let revoked = people::revoke_user_sessions(&transaction, &user_id).await?;
    // The address may have been locked out by failures; the new password is usable at once.
    people::clear_login_failures(&transaction, &target.email).await?;
    transaction.commit().await.map_err(DbError::from)?;
    info!(by = %person.user.user_id, user_id = %user_id, revoked_sessions = revoked, "password reset by an administrator");
    Ok(Json(RevokedSessions {
        revoked_sessions: revoked,
    }))
}
