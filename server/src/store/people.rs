//! People's rows: users, their login sessions, the failed-login throttle and OIDC logins in
//! flight. Each function runs inside the caller's org-scoped transaction, so row-level security
//! keeps organisations apart (see [`crate::db::org_transaction`]).

use std::time::{Duration, SystemTime};

use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use crate::db::DbError;
use crate::role::Role;

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its id (UUID v7).
    pub user_id: String,
    /// Lower-cased.
    pub email: String,
    /// For people.
    pub display_name: String,
    /// What it may do.
    pub role: Role,
    /// Disabled users cannot log in, and their sessions are revoked.
    pub disabled: bool,
    /// Whether a password login is possible.
    pub has_password: bool,
    /// Whether an SSO identity is linked.
    pub sso_linked: bool,
    /// When it was created.
    pub created_at: SystemTime,
}

const USER_COLUMNS: &str = "user_id, email, display_name, role, disabled_at IS NOT NULL,
     password_hash IS NOT NULL, oidc_subject IS NOT NULL, created_at";

fn user_of(row: &tokio_postgres::Row) -> User {
    User {
        user_id: row.get(0),
        email: row.get(1),
        display_name: row.get(2),
        // The column's CHECK allows the four names only.
        role: Role::parse(row.get(3)).unwrap_or(Role::Viewer),
        disabled: row.get(4),
        has_password: row.get(5),
        sso_linked: row.get(6),
        created_at: row.get(7),
    }
}

/// An address as stored: trimmed and lower-cased.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether an address is plausible: one `@` with something on both sides, no spaces, at most
/// 254 bytes. (Deliverability is the identity provider's or the mail server's business.)
pub fn plausible_email(email: &str) -> bool {
    let email = email.trim();
    email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// The organisation already has a user with this address (or this SSO identity).
    #[error("a user with this email already exists")]
    Exists,
    /// The organisation does not exist.
    #[error("no such organisation")]
    NoOrg,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What a new user is made of.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The address (normalised here).
    pub email: String,
    /// For people.
    pub display_name: String,
    /// Its role.
    pub role: Role,
    /// An argon2id PHC string, or none (SSO only).
    pub password_hash: Option<String>,
    /// A linked SSO identity (issuer, subject).
    pub oidc: Option<(String, String)>,
}

/// Creates a user of `org_id`.
pub async fn create_user(
    tx: &Transaction<'_>,
    org_id: &str,
    new: &NewUser,
) -> Result<User, CreateUserError> {
    let user_id = uuid::Uuid::now_v7().to_string();
    let (issuer, subject) = match &new.oidc {
        Some((issuer, subject)) => (Some(issuer.as_str()), Some(subject.as_str())),
        None => (None, None),
    };
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO users (org_id, user_id, email, display_name, role, password_hash,
                     oidc_issuer, oidc_subject)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {USER_COLUMNS}"
            ),
            &[
                &org_id,
                &user_id,
                &normalise_email(&new.email),
                &new.display_name,
                &new.role.as_str(),
                &new.password_hash,
                &issuer,
                &subject,
            ],
        )
        .await
        .map_err(|e| match e.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => CreateUserError::Exists,
            Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => CreateUserError::NoOrg,
            _ => CreateUserError::Db(e.into()),
        })?;
    Ok(user_of(&row))
}

/// Every user of the organisation, oldest first.
pub async fn list_users(tx: &Transaction<'_>) -> Result<Vec<User>, DbError> {
    Ok(tx
        .query(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, user_id"),
            &[],
        )
        .await?
        .iter()
        .map(user_of)
        .collect())
}

/// One user; `lock` takes its row for the rest of the transaction.
pub async fn user(
    tx: &Transaction<'_>,
    user_id: &str,
    lock: bool,
) -> Result<Option<User>, DbError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    Ok(tx
        .query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1{lock}"),
            &[&user_id],
        )
        .await?
        .as_ref()
        .map(user_of))
}

/// The user an address belongs to, with its password hash, for a login.
pub async fn login_candidate(
    tx: &Transaction<'_>,
    email: &str,
) -> Result<Option<(User, Option<String>)>, DbError> {
    Ok(tx
        .query_opt(
            &format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"),
            &[&normalise_email(email)],
        )
        .await?
        .map(|row| (user_of(&row), row.get(8))))
}

/// The user linked to an SSO identity.
pub async fn user_by_oidc(
    tx: &Transaction<'_>,
    issuer: &str,
    subject: &str,
) -> Result<Option<User>, DbError> {
    Ok(tx
        .query_opt(
            &format!(
                "SELECT {USER_COLUMNS} FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2"
            ),
            &[&issuer, &subject],
        )
        .await?
        .as_ref()
        .map(user_of))
}

/// Links an SSO identity to a user that has none yet; whether it was linked.
pub async fn link_oidc(
    tx: &Transaction<'_>,
    user_id: &str,
    issuer: &str,
    subject: &str,
) -> Result<bool, DbError> {
    let changed = tx
        .execute(
            "UPDATE users SET oidc_issuer = $2, oidc_subject = $3, updated_at = now()
             WHERE user_id = $1 AND oidc_subject IS NULL",
            &[&user_id, &issuer, &subject],
        )
        .await?;
    Ok(changed > 0)
}

/// Changes a user's role, display name or disabled state (what is `Some`); the user as it is
/// now, `None` when it does not exist. Disabling revokes its sessions in the same transaction.
pub async fn update_user(
    tx: &Transaction<'_>,
    user_id: &str,
    role: Option<Role>,
    display_name: Option<&str>,
    disabled: Option<bool>,
) -> Result<Option<User>, DbError> {
    let row = tx
        .query_opt(
            &format!(
                "UPDATE users SET
                     role = COALESCE($2, role),
                     display_name = COALESCE($3, display_name),
                     disabled_at = CASE WHEN $4::boolean IS NULL THEN disabled_at
                                        WHEN $4 THEN COALESCE(disabled_at, now())
                                        ELSE NULL END,
                     updated_at = now()
                 WHERE user_id = $1 RETURNING {USER_COLUMNS}"
            ),
            &[&user_id, &role.map(Role::as_str), &display_name, &disabled],
        )
        .await?;
    if disabled == Some(true) {
        revoke_user_sessions(tx, user_id).await?;
    }
    Ok(row.as_ref().map(user_of))
}

/// The enabled owners, their rows locked until the transaction ends: two concurrent changes
/// to owners then serialise, and neither can remove the last one.
pub async fn lock_active_owners(tx: &Transaction<'_>) -> Result<Vec<String>, DbError> {
    Ok(tx
        .query(
            "SELECT user_id FROM users WHERE role = 'owner' AND disabled_at IS NULL
             ORDER BY user_id FOR UPDATE",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Revokes every live session of a user.
pub async fn revoke_user_sessions(tx: &Transaction<'_>, user_id: &str) -> Result<u64, DbError> {
    Ok(tx
        .execute(
            "UPDATE human_sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
            &[&user_id],
        )
        .await?)
}

/// A new session's facts.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// The user.
    pub user_id: &'a str,
    /// SHA-256 of the token.
    pub token_hash: &'a str,
    /// The CSRF synchronizer token.
    pub csrf_token: &'a str,
    /// `password` or `oidc`.
    pub via: &'a str,
    /// Absolute lifetime.
    pub lifetime: Duration,
    /// The client's `User-Agent`, cut to [`MAX_USER_AGENT_CHARS`] (shown to the user only).
    pub user_agent: &'a str,
}

/// The most of a `User-Agent` kept with a session (the column's CHECK).
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// `user_agent` cut to what a session keeps, on a character boundary.
pub fn bounded_user_agent(user_agent: &str) -> String {
    user_agent.chars().take(MAX_USER_AGENT_CHARS).collect()
}

/// Opens a session; its id and absolute expiry.
pub async fn create_session(
    tx: &Transaction<'_>,
    org_id: &str,
    new: &NewSession<'_>,
) -> Result<(String, SystemTime), DbError> {
    let session_id = uuid::Uuid::now_v7().to_string();
    let lifetime_s = new.lifetime.as_secs_f64();
    let row = tx
        .query_one(
            "INSERT INTO human_sessions (org_id, session_id, token_sha256, user_id, csrf_token, via,
                 expires_at, user_agent)
             VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), $8)
             RETURNING expires_at",
            &[
                &org_id,
                &session_id,
                &new.token_hash,
                &new.user_id,
                &new.csrf_token,
                &new.via,
                &lifetime_s,
                &bounded_user_agent(new.user_agent),
            ],
        )
        .await?;
    Ok((session_id, row.get(0)))
}

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// The session.
    pub session_id: String,
    /// Its CSRF token.
    pub csrf_token: String,
    /// Its absolute expiry.
    pub expires_at: SystemTime,
    /// Whether `last_used_at` is old enough to be refreshed.
    pub stale: bool,
    /// Its user (enabled).
    pub user: User,
}

/// The live session whose token hashes to `token_hash`: not revoked, not past its absolute
/// expiry, used within `idle`, and its user not disabled.
pub async fn live_session(
    tx: &Transaction<'_>,
    token_hash: &str,
    idle: Duration,
    refresh_after: Duration,
) -> Result<Option<LiveSession>, DbError> {
    let row = tx
        .query_opt(
            "SELECT s.session_id, s.csrf_token, s.expires_at,
                 s.last_used_at < now() - make_interval(secs => $3),
                 u.user_id, u.email, u.display_name, u.role, u.disabled_at IS NOT NULL,
                 u.password_hash IS NOT NULL, u.oidc_subject IS NOT NULL, u.created_at
             FROM human_sessions s JOIN users u USING (org_id, user_id)
             WHERE s.token_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
                 AND s.last_used_at > now() - make_interval(secs => $2)
                 AND u.disabled_at IS NULL",
            &[
                &token_hash,
                &idle.as_secs_f64(),
                &refresh_after.as_secs_f64(),
            ],
        )
        .await?;
    Ok(row.map(|row| LiveSession {
        session_id: row.get(0),
        csrf_token: row.get(1),
        expires_at: row.get(2),
        stale: row.get(3),
        user: User {
            user_id: row.get(4),
            email: row.get(5),
            display_name: row.get(6),
            role: Role::parse(row.get(7)).unwrap_or(Role::Viewer),
            disabled: row.get(8),
            has_password: row.get(9),
            sso_linked: row.get(10),
            created_at: row.get(11),
        },
    }))
}

/// Marks a session used now (its idle expiry moves on).
pub async fn touch_session(tx: &Transaction<'_>, session_id: &str) -> Result<(), DbError> {
    tx.execute(
        "UPDATE human_sessions SET last_used_at = now() WHERE session_id = $1",
        &[&session_id],
    )
    .await?;
    Ok(())
}

/// Revokes one session.
pub async fn revoke_session(tx: &Transaction<'_>, session_id: &str) -> Result<(), DbError> {
    tx.execute(
        "UPDATE human_sessions SET revoked_at = now() WHERE session_id = $1 AND revoked_at IS NULL",
        &[&session_id],
    )
    .await?;
    Ok(())
}

/// The stored password hash of a user: `None` when the user does not exist, `Some(None)` when
/// it has no password (SSO only). `lock` takes its row for the rest of the transaction.
pub async fn password_hash(
    tx: &Transaction<'_>,
    user_id: &str,
    lock: bool,
) -> Result<Option<Option<String>>, DbError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    Ok(tx
        .query_opt(
            &format!("SELECT password_hash FROM users WHERE user_id = $1{lock}"),
            &[&user_id],
        )
        .await?
        .map(|row| row.get(0)))
}

/// Replaces a user's password hash, only while it is still `expected` (the hash the caller
/// verified against): a change that raced another one does nothing and answers false.
pub async fn replace_password(
    tx: &Transaction<'_>,
    user_id: &str,
    expected: &str,
    new_hash: &str,
) -> Result<bool, DbError> {
    Ok(tx
        .execute(
            "UPDATE users SET password_hash = $3, updated_at = now()
             WHERE user_id = $1 AND password_hash = $2",
            &[&user_id, &expected, &new_hash],
        )
        .await?
        > 0)
}

/// Sets a user's password hash whatever it was (an administrator's reset); whether the user
/// exists.
pub async fn set_password(
    tx: &Transaction<'_>,
    user_id: &str,
    new_hash: &str,
) -> Result<bool, DbError> {
    Ok(tx
        .execute(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE user_id = $1",
            &[&user_id, &new_hash],
        )
        .await?
        > 0)
}

/// Revokes every live session of a user but `keep`; how many.
pub async fn revoke_other_sessions(
    tx: &Transaction<'_>,
    user_id: &str,
    keep: &str,
) -> Result<u64, DbError> {
    Ok(tx
        .execute(
            "UPDATE human_sessions SET revoked_at = now()
             WHERE user_id = $1 AND session_id <> $2 AND revoked_at IS NULL",
            &[&user_id, &keep],
        )
        .await?)
}

/// Revokes one session of a user (idempotent); false when the user has no such session.
pub async fn revoke_own_session(
    tx: &Transaction<'_>,
    user_id: &str,
    session_id: &str,
) -> Result<bool, DbError> {
    Ok(tx
        .query_opt(
            "UPDATE human_sessions SET revoked_at = COALESCE(revoked_at, now())
             WHERE user_id = $1 AND session_id = $2 RETURNING 1",
            &[&user_id, &session_id],
        )
        .await?
        .is_some())
}

/// A person's session as they see it in their list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Its id.
    pub session_id: String,
    /// `password` or `oidc`.
    pub via: String,
    /// When it was opened.
    pub created_at: SystemTime,
    /// When it was last used (written at most once a minute).
    pub last_used_at: SystemTime,
    /// Absolute expiry.
    pub expires_at: SystemTime,
    /// The client's `User-Agent` at login (`""` when it sent none).
    pub user_agent: String,
}

/// A user's live sessions (not revoked, not expired, used within `idle`), newest first.
pub async fn live_sessions_of(
    tx: &Transaction<'_>,
    user_id: &str,
    idle: Duration,
) -> Result<Vec<SessionSummary>, DbError> {
    Ok(tx
        .query(
            "SELECT session_id, via, created_at, last_used_at, expires_at, user_agent
             FROM human_sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
                 AND last_used_at > now() - make_interval(secs => $2)
             ORDER BY created_at DESC, session_id DESC",
            &[&user_id, &idle.as_secs_f64()],
        )
        .await?
        .iter()
        .map(|row| SessionSummary {
            session_id: row.get(0),
            via: row.get(1),
            created_at: row.get(2),
            last_used_at: row.get(3),
            expires_at: row.get(4),
            user_agent: row.get(5),
        })
        .collect())
}

/// Seconds to wait when `email` has had `limit` failed logins in the current window of
/// `window`; `None` when it may try.
pub async fn login_locked_for(
    tx: &Transaction<'_>,
    email: &str,
    limit: u32,
    window: Duration,
) -> Result<Option<u64>, DbError> {
    let row = tx
        .query_opt(
            "SELECT failures,
                 ceil(extract(epoch FROM (window_start + make_interval(secs => $2)) - now()))::bigint
             FROM login_throttle WHERE email = $1",
            &[&normalise_email(email), &window.as_secs_f64()],
        )
        .await?;
    Ok(row.and_then(|row| {
        let failures: i32 = row.get(0);
        let left: i64 = row.get(1);
        (left > 0 && u32::try_from(failures).unwrap_or(0) >= limit)
            .then(|| u64::try_from(left).unwrap_or(1))
    }))
}

/// Counts a failed login of `email` (a new window when the last one is over), and prunes
/// windows that are over, so addresses tried once do not pile up.
pub async fn record_login_failure(
    tx: &Transaction<'_>,
    org_id: &str,
    email: &str,
    window: Duration,
) -> Result<(), DbError> {
    let window_s = window.as_secs_f64();
    tx.execute(
        "DELETE FROM login_throttle WHERE window_start < now() - make_interval(secs => $1)",
        &[&window_s],
    )
    .await?;
    tx.execute(
        "INSERT INTO login_throttle (org_id, email, window_start, failures) VALUES ($1, $2, now(), 1)
         ON CONFLICT (org_id, email) DO UPDATE SET
             failures = CASE WHEN login_throttle.window_start < now() - make_interval(secs => $3)
                             THEN 1 ELSE login_throttle.failures + 1 END,
             window_start = CASE WHEN login_throttle.window_start < now() - make_interval(secs => $3)
                                 THEN now() ELSE login_throttle.window_start END",
        &[&org_id, &normalise_email(email), &window_s],
    )
    .await?;
    Ok(())
}

/// Forgets the failures of `email` after a good login.
pub async fn clear_login_failures(tx: &Transaction<'_>, email: &str) -> Result<(), DbError> {
    tx.execute(
        "DELETE FROM login_throttle WHERE email = $1",
        &[&normalise_email(email)],
    )
    .await?;
    Ok(())
}

/// An OIDC login between redirect and callback.
#[derive(Debug, Clone)]
pub struct PendingOidcLogin {
    /// The ID token's `nonce` must be this.
    pub nonce: String,
    /// The PKCE code verifier.
    pub pkce_verifier: String,
    /// SHA-256 of the browser-binding cookie.
    pub binding_hash: String,
}

/// Keeps an OIDC login until `lifetime` has passed; prunes expired ones.
pub async fn store_oidc_login(
    tx: &Transaction<'_>,
    org_id: &str,
    state_hash: &str,
    login: &PendingOidcLogin,
    lifetime: Duration,
) -> Result<(), DbError> {
    tx.execute("DELETE FROM oidc_logins WHERE expires_at < now()", &[])
        .await?;
    tx.execute(
        "INSERT INTO oidc_logins (org_id, state_sha256, nonce, pkce_verifier, binding_sha256, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
        &[
            &org_id,
            &state_hash,
            &login.nonce,
            &login.pkce_verifier,
            &login.binding_hash,
            &lifetime.as_secs_f64(),
        ],
    )
    .await?;
    Ok(())
}

/// Takes (deletes and returns) the unexpired OIDC login of a state: each is used once.
pub async fn take_oidc_login(
    tx: &Transaction<'_>,
    state_hash: &str,
) -> Result<Option<PendingOidcLogin>, DbError> {
    Ok(tx
        .query_opt(
            "DELETE FROM oidc_logins WHERE state_sha256 = $1
             RETURNING nonce, pkce_verifier, binding_sha256, expires_at > now()",
            &[&state_hash],
        )
        .await?
        .filter(|row| row.get::<_, bool>(3))
        .map(|row| PendingOidcLogin {
            nonce: row.get(0),
            pkce_verifier: row.get(1),
            binding_hash: row.get(2),
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_and_checked_for_shape_only() {
        assert_eq!(normalise_email("  Ada@Example.COM "), "ada@example.com");
        assert!(plausible_email("ada@example.com"));
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a da@example.com",
            "a@b@c",
        ] {
            assert!(!plausible_email(bad), "{bad}");
        }
    }
}
