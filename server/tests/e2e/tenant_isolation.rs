//! Tenant isolation is enforced by PostgreSQL itself: row-level security on every tenant
//! table, forced for the owner too, and a server role that cannot bypass it.

use crate::support::runtime::chain;
use crate::support::{TestDb, scoped};
use atlasbridge_protocol::cloud::messages::{AuditBatch, Stream};
use atlasbridge_server::auth::ApiKey;
use atlasbridge_server::store;
use tokio_postgres::error::SqlState;

/// Every table that holds tenant rows.
const TENANT_TABLES: &[&str] = &[
    "orgs",
    "api_keys",
    "runtimes",
    "chains",
    "entries",
    "witnessed_heads",
    "checkpoints",
    "runtime_flags",
    "users",
    "human_sessions",
    "login_throttle",
    "oidc_logins",
    "runtime_sessions",
    "escalations",
];

/// Creates `org` with a key and a runtime that has streamed a few entries, as the app role.
async fn populate(db: &TestDb, org: &str, runtime_id: &str) {
    let mut client = db.app().await;
    let tx = scoped(&mut client, org).await;
    store::create_org(&tx, org, org).await.unwrap();
    let key = ApiKey::generate().unwrap();
    store::create_api_key(&tx, org, &key, "").await.unwrap();
    store::register_runtime(&tx, org, runtime_id, "test", "enterprise")
        .await
        .unwrap();
    let batch = AuditBatch {
        stream: Stream::Trace,
        from_seq: 0,
        to_seq: 2,
        entries: chain(3),
    };
    store::ingest(&tx, org, runtime_id, &batch).await.unwrap();
    tx.execute(
        "INSERT INTO runtime_flags (org_id, runtime_id, kind, detail) VALUES ($1, $2, 'test', '')",
        &[&org, &runtime_id],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO witnessed_heads (org_id, runtime_id, stream, seq, entry_hash, source)
         VALUES ($1, $2, 'trace', 2, 'x', 'heartbeat')",
        &[&org, &runtime_id],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO checkpoints (org_id, runtime_id, checkpoint_seq, checkpoint_hash,
             prev_checkpoint_hash, epoch, entry_hash, verdict, body)
         VALUES ($1, $2, 0, 'h', 'p', 0, 'e', 'unverifiable', '{}')",
        &[&org, &runtime_id],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO runtime_sessions (org_id, runtime_id, session_id, started_at)
         VALUES ($1, $2, 's1', now())",
        &[&org, &runtime_id],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO escalations (org_id, runtime_id, seq, entry_hash, session_id, occurred_at)
         VALUES ($1, $2, 0, 'h', 's1', now())",
        &[&org, &runtime_id],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO users (org_id, user_id, email, role) VALUES ($1, 'u1', 'a@example.com', 'owner')",
        &[&org],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO human_sessions (org_id, session_id, token_sha256, user_id, csrf_token, via, expires_at)
         VALUES ($1, 's1', repeat('a', 64), 'u1', 'c', 'password', now() + interval '1 hour')",
        &[&org],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO login_throttle (org_id, email, failures) VALUES ($1, 'a@example.com', 1)",
        &[&org],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO oidc_logins (org_id, state_sha256, nonce, pkce_verifier, binding_sha256, expires_at)
         VALUES ($1, repeat('b', 64), 'n', 'v', 'b', now() + interval '1 hour')",
        &[&org],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_role_cannot_bypass_row_level_security_and_every_table_forces_it() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let app = db.app().await;
    let row = app
        .query_one(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, bool>(1)),
        (false, false),
        "superusers and BYPASSRLS roles skip row-level security"
    );
    for table in TENANT_TABLES {
        let row = app
            .query_one(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class
                 WHERE oid = ('public.' || $1)::regclass",
                &[table],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, bool>(0), row.get::<_, bool>(1)),
            (true, true),
            "{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_scoped_to_one_org_can_neither_read_nor_write_another_orgs_rows() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    populate(&db, "org-a", "ed25519:runtime-a").await;
    populate(&db, "org-b", "ed25519:runtime-b").await;

    for url in [&db.app_url, &db.owner_url] {
        // Even the tables' owner is held by FORCE ROW LEVEL SECURITY.
        let mut client = TestDb::connect(url).await;
        let mut tx = scoped(&mut client, "org-a").await;
        for table in TENANT_TABLES {
            let sql =
                format!("SELECT count(*), count(*) FILTER (WHERE org_id <> 'org-a') FROM {table}");
            let row = tx.query_one(&sql, &[]).await.unwrap();
            let (all, foreign): (i64, i64) = (row.get(0), row.get(1));
            assert!(all > 0, "{table}: org-a's own rows are visible");
            assert_eq!(foreign, 0, "{table}: another org's row is visible");
            // Updating another org's rows finds none (or, on the append-only tables, the
            // server's role may not update at all).
            let savepoint = tx.savepoint("update_other_org").await.unwrap();
            let sql = format!("UPDATE {table} SET org_id = org_id WHERE org_id = 'org-b'");
            match savepoint.execute(&sql, &[]).await {
                Ok(updated) => assert_eq!(updated, 0, "{table}: org-b's rows were updatable"),
                Err(e) => assert_eq!(
                    e.code(),
                    Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                    "{table}: {e}"
                ),
            }
            savepoint.rollback().await.unwrap();
        }
        tx.rollback().await.unwrap();

        // Writing a row of org-b while scoped to org-a is refused by the policy.
        let tx = scoped(&mut client, "org-a").await;
        let error = tx
            .execute(
                "INSERT INTO runtime_flags (org_id, runtime_id, kind, detail)
                 VALUES ('org-b', 'ed25519:runtime-b', 'x', 'y')",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{error}"
        );
        tx.rollback().await.unwrap();
        // Moving a row of one's own into org-b is refused as well.
        let tx = scoped(&mut client, "org-a").await;
        let error = tx
            .execute("UPDATE runtimes SET org_id = 'org-b'", &[])
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{error}"
        );
        tx.rollback().await.unwrap();
    }

    // The store's own reads see nothing of the other org either.
    let mut client = db.app().await;
    let tx = scoped(&mut client, "org-a").await;
    assert!(
        store::chain_status(&tx, "ed25519:runtime-b", Stream::Trace)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store::runtime(&tx, "ed25519:runtime-b", 30)
            .await
            .unwrap()
            .is_none()
    );
    tx.rollback().await.unwrap();

    // No org set: no rows at all, and nothing can be written.
    let app = db.app().await;
    for table in TENANT_TABLES {
        let row = app
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 0, "{table} without an org");
    }
    let error = app
        .execute("INSERT INTO orgs (org_id, name) VALUES ('org-c', 'c')", &[])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    // The evidence is append-only for the server's role.
    let mut client = db.app().await;
    let tx = scoped(&mut client, "org-a").await;
    let error = tx.execute("DELETE FROM entries", &[]).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
}
