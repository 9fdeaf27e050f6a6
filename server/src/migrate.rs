//! Embedded SQL migrations, applied in order by the owner role.
//!
//! A small hand-rolled runner rather than a migration crate: one table (`schema_migrations`:
//! version, name, SHA-256 of the SQL), every pending migration and the grants applied in one
//! transaction (PostgreSQL DDL is transactional, so a failed migration leaves nothing behind),
//! under an advisory lock so that replicas starting together migrate once. A migration that
//! was applied and then edited is refused by its checksum: applied migrations never change.

use atlasbridge_protocol::hash::sha256_hex;
use tokio_postgres::Client;

use crate::pg_target::PgTarget;
use tracing::{info, warn};

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its position; applied in increasing order.
    pub version: i32,
    /// For people.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "runtime_ingest",
        sql: include_str!("../migrations/0001_runtime_ingest.sql"),
    },
    Migration {
        version: 2,
        name: "people",
        sql: include_str!("../migrations/0002_people.sql"),
    },
    Migration {
        version: 3,
        name: "decision_columns",
        sql: include_str!("../migrations/0003_decision_columns.sql"),
    },
    Migration {
        version: 4,
        name: "policies",
        sql: include_str!("../migrations/0004_policies.sql"),
    },
    Migration {
        version: 5,
        name: "cheaper_ingest",
        sql: include_str!("../migrations/0005_cheaper_ingest.sql"),
    },
    Migration {
        version: 6,
        name: "sessions_escalations",
        sql: include_str!("../migrations/0006_sessions_escalations.sql"),
    },
    Migration {
        version: 7,
        name: "connection_epochs",
        sql: include_str!("../migrations/0007_connection_epochs.sql"),
    },
];

/// Tables the app role may read and append to but never change or delete: the evidence, the
/// registry's versions and distributions (a version never changes; history is not rewritten),
/// and the escalations runtimes reported.
const APPEND_ONLY_TABLES: &[&str] = &[
    "entries",
    "witnessed_heads",
    "checkpoints",
    "runtime_flags",
    "policy_versions",
    "policy_distributions",
    "policy_distribution_targets",
    "escalations",
];
/// Tables the app role may read, insert and update.
const MUTABLE_TABLES: &[&str] = &[
    "orgs",
    "api_keys",
    "runtimes",
    "chains",
    "users",
    "human_sessions",
    "policies",
    "runtime_policies",
    "runtime_sessions",
];
/// State the app role also deletes: login throttle windows, OIDC logins in flight, and the pins
/// a runtime reports (each report replaces the previous).
const EPHEMERAL_TABLES: &[&str] = &["login_throttle", "oidc_logins", "policy_pins"];

/// An arbitrary constant naming our advisory lock.
const MIGRATION_LOCK: i64 = 0x4154_4c41_5342_5247;

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A statement failed.
    #[error("migration failed: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// An applied migration differs from the embedded one.
    #[error(
        "migration {version} ({name}) was applied with other content; applied migrations never change"
    )]
    Changed {
        /// Its version.
        version: i32,
        /// Its name.
        name: &'static str,
    },
    /// The app role name is not a plain identifier.
    #[error("app role {0:?} is not a plain lower-case identifier")]
    BadRole(String),
}

/// Connects to `owner` (the owner role's target), applies what is pending and grants `app_role`
/// its access; returns the versions applied now.
pub async fn migrate(owner: &PgTarget, app_role: &str) -> Result<Vec<i32>, MigrateError> {
    if !is_plain_identifier(app_role) {
        return Err(MigrateError::BadRole(app_role.to_owned()));
    }
    let (mut client, connection) = owner.connect().await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "the migration connection ended with an error");
        }
    });
    let applied = apply(&mut client, app_role).await;
    drop(client);
    let _ = driver.await;
    applied
}

async fn apply(client: &mut Client, app_role: &str) -> Result<Vec<i32>, MigrateError> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 checksum    text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let rows = transaction
        .query("SELECT version, checksum FROM schema_migrations", &[])
        .await?;
    let done: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let checksum = sha256_hex(migration.sql.as_bytes());
        match done.iter().find(|(v, _)| *v == migration.version) {
            Some((_, stored)) if *stored == checksum => continue,
            Some(_) => {
                return Err(MigrateError::Changed {
                    version: migration.version,
                    name: migration.name,
                });
            }
            None => {}
        }
        transaction.batch_execute(migration.sql).await?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[&migration.version, &migration.name, &checksum],
            )
            .await?;
        info!(
            version = migration.version,
            name = migration.name,
            "migration applied"
        );
        applied.push(migration.version);
    }
    // Grants every time, so a renamed or recreated app role is caught up too.
    let mut grants = format!(
        "GRANT USAGE ON SCHEMA public TO {app_role};
         GRANT SELECT ON schema_migrations TO {app_role};"
    );
    for table in APPEND_ONLY_TABLES {
        grants.push_str(&format!("GRANT SELECT, INSERT ON {table} TO {app_role};"));
    }
    for table in MUTABLE_TABLES {
        grants.push_str(&format!(
            "GRANT SELECT, INSERT, UPDATE ON {table} TO {app_role};"
        ));
    }
    for table in EPHEMERAL_TABLES {
        grants.push_str(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {app_role};"
        ));
    }
    transaction.batch_execute(&grants).await?;
    transaction.commit().await?;
    Ok(applied)
}

/// The embedded versions the database has not applied (empty: the schema is current).
pub async fn pending(client: &Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT version FROM schema_migrations", &[])
        .await;
    let applied: Vec<i32> = match rows {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        // No table at all: nothing is applied.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}

/// A role name we can put into GRANT unquoted.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_role_names_are_plain() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(is_plain_identifier("atlasbridge_app"));
        assert!(!is_plain_identifier("app; DROP TABLE entries"));
        assert!(!is_plain_identifier("App"));
        assert!(!is_plain_identifier(""));
    }
}
