//! TLS to PostgreSQL: a server whose URLs say `sslmode=verify-full` migrates, serves, ingests
//! and listens over connections whose certificate it verified; with a CA that did not sign the
//! database's certificate it refuses to connect at all, so nothing falls back to plain text.

use std::path::Path;

use atlasbridge_protocol::cloud::messages::Stream;

use crate::support::runtime::{FakeRuntime, chain};
use crate::support::{ServerOptions, TestDb, TestServer, database_ca_file, eventually};

/// A CA certificate that signed nothing the test cluster holds.
fn unrelated_ca() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pg-test-ca.pem"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reaches_its_database_over_verified_tls() {
    let Some(ca) = database_ca_file() else {
        return;
    };
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };

    let unverifiable = TestServer::unstarted(
        &db,
        ServerOptions {
            database_ca_file: Some(unrelated_ca().to_owned()),
            ..ServerOptions::default()
        },
    );
    let (migrated, _, stderr) = unverifiable.command(&["migrate"]);
    assert!(!migrated, "migrated through an unverified certificate");
    assert!(
        stderr.contains("certificate") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    let (served, log) = unverifiable.launch_expecting_failure();
    assert!(!served, "served through an unverified certificate: {log}");

    let server = TestServer::start(
        &db,
        ServerOptions {
            database_ca_file: Some(ca),
            ..ServerOptions::default()
        },
    );
    let key = server.org_with_key("org-a");
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let entries = chain(5);
    runtime.send_batch(Stream::Trace, &entries).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 4);
    assert_eq!(
        db.entries("org-a", &runtime.runtime_id, Stream::Trace)
            .await
            .len(),
        5
    );
    eventually("the live stream's connection listens over TLS", || {
        let log = server.log();
        async move { log.contains("listening for live events") }
    })
    .await;
    assert!(
        server.log().contains("encrypted=true"),
        "the server does not say its connections are encrypted"
    );
}
