//! API keys as people manage them (listing, revocation with its record). Creation and the
//! runtime's checks are in [`crate::store`].

use std::time::SystemTime;

use tokio_postgres::Transaction;

use crate::db::DbError;

/// An API key's record (never its secret, which is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The public half.
    pub key_id: String,
    /// What it is for.
    pub label: String,
    /// When it was made.
    pub created_at: SystemTime,
    /// When it was revoked.
    pub revoked_at: Option<SystemTime>,
}

const COLUMNS: &str = "key_id, label, created_at, revoked_at";

fn record_of(row: &tokio_postgres::Row) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: row.get(0),
        label: row.get(1),
        created_at: row.get(2),
        revoked_at: row.get(3),
    }
}

/// Every key of the organisation, newest first.
pub async fn list(tx: &Transaction<'_>) -> Result<Vec<ApiKeyRecord>, DbError> {
    Ok(tx
        .query(
            &format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, key_id"),
            &[],
        )
        .await?
        .iter()
        .map(record_of)
        .collect())
}

/// One key.
pub async fn one(tx: &Transaction<'_>, key_id: &str) -> Result<Option<ApiKeyRecord>, DbError> {
    Ok(tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE key_id = $1"),
            &[&key_id],
        )
        .await?
        .as_ref()
        .map(record_of))
}

/// Revokes a key (a revoked one stays as it was); its record, `None` when there is no such key.
pub async fn revoke(tx: &Transaction<'_>, key_id: &str) -> Result<Option<ApiKeyRecord>, DbError> {
    tx.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
        &[&key_id],
    )
    .await?;
    one(tx, key_id).await
}
