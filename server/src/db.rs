//! The connection pool, and the one way request code touches tenant data: a transaction scoped
//! to an organisation with `SET LOCAL atlasbridge.org_id`, under which row-level security shows
//! and accepts only that organisation's rows.

use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, Transaction,
};

use crate::pg_target::{PgTarget, PgTargetError};

/// How long opening a new database connection may take before the request is answered 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the database could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Every pooled connection stayed busy for the whole wait: shed the request (503).
    #[error("the database is busy: no connection became free in time")]
    Busy,
    /// The database cannot be reached (503).
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    /// A statement failed.
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// The configured URL is not a PostgreSQL connection string, or its TLS cannot be set up.
    #[error(transparent)]
    Target(#[from] PgTargetError),
    /// The pool cannot be built.
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    /// A stored value does not read as what the server wrote (an entry's body that is not
    /// JSON): only damage to the database can cause it.
    #[error("a stored value does not read: {0}")]
    Stored(String),
}

impl DbError {
    /// Whether the request may succeed when retried later (the caller answers 503).
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Busy | DbError::Unavailable(_) => true,
            DbError::Query(e) => {
                use tokio_postgres::error::SqlState;
                // No SQLSTATE: the connection failed, not the statement.
                e.is_closed()
                    || e.code().is_none_or(|code| {
                        *code == SqlState::T_R_SERIALIZATION_FAILURE
                            || *code == SqlState::T_R_DEADLOCK_DETECTED
                            || *code == SqlState::ADMIN_SHUTDOWN
                            || *code == SqlState::CANNOT_CONNECT_NOW
                    })
            }
            DbError::Target(_) | DbError::Pool(_) | DbError::Stored(_) => false,
        }
    }
}

/// The pool the server serves from.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    /// Where the pool connects, for the connections kept outside it (the live stream's).
    target: PgTarget,
}

impl Db {
    /// A pool of at most `size` connections to `target`; a request waits at most `wait` for
    /// one. Nothing connects until the first request.
    pub fn new(target: &PgTarget, size: usize, wait: Duration) -> Result<Self, DbError> {
        let manager = Manager::from_config(
            target.config().clone(),
            target.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(wait))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        Ok(Self {
            pool,
            target: target.clone(),
        })
    }

    /// Where the pool connects.
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// The pool's size and waiters now (for the metrics).
    pub fn status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// A pooled connection, or [`DbError::Busy`] when none frees up in time.
    pub async fn client(&self) -> Result<Object, DbError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => DbError::Busy,
            PoolError::Backend(e) => DbError::Unavailable(e.to_string()),
            other => DbError::Unavailable(other.to_string()),
        })
    }
}

/// Opens a transaction on `client` in which only `org_id`'s rows exist.
///
/// `set_config(..., true)` is `SET LOCAL` with a bound parameter: the setting ends with the
/// transaction, so a pooled connection never carries one organisation into the next request.
pub async fn org_transaction<'a>(
    client: &'a mut Object,
    org_id: &str,
) -> Result<Transaction<'a>, DbError> {
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "SELECT set_config('atlasbridge.org_id', $1, true)",
            &[&org_id],
        )
        .await?;
    Ok(transaction)
}
