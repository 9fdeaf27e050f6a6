//! Batches stored together: what a runtime sends back to back is taken from the socket as it
//! is (never waiting for more, at most `ingest_group::MAX_BATCHES` at a time) and stored in one
//! transaction, with every guarantee of a single batch: each acknowledged only after the COMMIT
//! that stored it, once per (runtime, stream, seq), frames that are not good batches answered in
//! their turn. The tests hold the chain's row lock from a session of their own, so that the
//! server is seen to wait with the frames piled up behind it, then let it go.

use std::collections::HashMap;

use crate::support::runtime::{FakeRuntime, chain, chain_from, identity};
use crate::support::{ServerOptions, TestDb, TestServer, eventually, scoped};
use atlasbridge_protocol::cloud::messages::{Ack, AuditBatch, Stream, kind};
use atlasbridge_protocol::trace::GENESIS_PREV_HASH;
use atlasbridge_server::ingest_group::MAX_BATCHES;
use serde_json::Value;

async fn setup() -> Option<(TestDb, TestServer, String)> {
    let db = TestDb::create_unmigrated().await?;
    let server = TestServer::start(&db, ServerOptions::default());
    let key = server.org_with_key("org-a");
    Some((db, server, key))
}

/// Takes the row lock the server's ingest takes first (in a transaction of the test's own) and
/// returns that transaction's connection; the lock holds until it is dropped or committed.
async fn lock_chain(db: &TestDb, runtime_id: &str) -> tokio_postgres::Client {
    let client = db.app().await;
    client
        .batch_execute("BEGIN")
        .await
        .expect("begin the holding transaction");
    client
        .execute(
            "SELECT set_config('atlasbridge.org_id', 'org-a', true)",
            &[],
        )
        .await
        .expect("scope it");
    let locked = client
        .execute(
            "SELECT 1 FROM chains WHERE runtime_id = $1 AND stream = 'trace' FOR UPDATE",
            &[&runtime_id],
        )
        .await
        .expect("lock the chain");
    assert_eq!(locked, 1, "the runtime's trace chain exists");
    client
}

/// Waits until a session of the server waits for a lock (the one the test holds).
async fn server_waits_for_the_lock(db: &TestDb) {
    let watcher = db.app().await;
    let watcher = &watcher;
    eventually(
        "the server's ingest waits for the chain's lock",
        || async move {
            watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .expect("pg_stat_activity")
                .get::<_, i64>(0)
                == 1
        },
    )
    .await;
}

/// The trace entries the server holds for `runtime_id`.
async fn stored_count(db: &TestDb, runtime_id: &str) -> i64 {
    let mut client = db.app().await;
    let tx = scoped(&mut client, "org-a").await;
    tx.query_one(
        "SELECT count(*) FROM entries WHERE runtime_id = $1",
        &[&runtime_id],
    )
    .await
    .expect("count")
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sent_back_to_back_are_stored_together_and_acked_after_their_commit() {
    let Some((db, server, key)) = setup().await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    // More one-entry batches than one transaction takes: the last ones form a group of their
    // own, split from the others at the group's bound.
    let count = MAX_BATCHES + 8;
    let entries = chain(count);
    let holder = lock_chain(&db, &runtime.runtime_id).await;
    for entry in &entries {
        runtime
            .send_batch(Stream::Trace, std::slice::from_ref(entry))
            .await;
    }
    server_waits_for_the_lock(&db).await;
    // The server waits inside its first transaction: nothing is committed, nothing acked.
    assert!(runtime.try_recv().is_none(), "an ack before the COMMIT");
    assert_eq!(stored_count(&db, &runtime.runtime_id).await, 0);
    drop(holder);

    let mut acks = Vec::new();
    while acks.last() != Some(&(count as u64 - 1)) {
        acks.push(runtime.ack_through(Stream::Trace).await);
    }
    assert!(
        acks.windows(2).all(|pair| pair[0] < pair[1]),
        "acks move forward: {acks:?}"
    );
    // The first transaction took what had arrived when it began (at least one batch); all the
    // rest had arrived by its COMMIT, so they took one or two more, never one each.
    assert!(
        (2..=3).contains(&acks.len()),
        "{count} batches took {} transactions: {acks:?}",
        acks.len()
    );
    assert_eq!(
        db.row_counts("org-a", &runtime.runtime_id, Stream::Trace)
            .await,
        (count as i64, count as i64),
        "every entry exactly once"
    );
    let status = db
        .chain_status("org-a", &runtime.runtime_id, Stream::Trace)
        .await
        .unwrap();
    assert_eq!(
        (status.status.as_str(), status.next_seq),
        ("continuous", count as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_keeps_each_frame_in_its_turn_across_streams_resends_and_bad_frames() {
    let Some((db, server, key)) = setup().await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let trace = chain(12);
    let audit = chain_from(0, GENESIS_PREV_HASH, 3, "audit");
    let holder = lock_chain(&db, &runtime.runtime_id).await;
    runtime.send_batch(Stream::Trace, &trace[..5]).await;
    // Signed by another key: answered, never stored, and it ends the group it arrives in.
    let forged = AuditBatch {
        stream: Stream::Trace,
        from_seq: 5,
        to_seq: 9,
        entries: trace[5..10].to_vec(),
    };
    runtime
        .send_signed_by(
            &identity(),
            kind::AUDIT_BATCH,
            serde_json::to_value(&forged).unwrap(),
        )
        .await;
    runtime.send_batch(Stream::Trace, &trace[5..10]).await;
    runtime.send_batch(Stream::Audit, &audit).await;
    // A resend overlapping what the group before it stores, and going further.
    runtime.send_batch(Stream::Trace, &trace[3..]).await;
    server_waits_for_the_lock(&db).await;
    assert!(runtime.try_recv().is_none(), "an answer before the COMMIT");
    drop(holder);

    // The first batch's ack, then the forged frame's error, in the order they were sent.
    assert_eq!(runtime.ack_through(Stream::Trace).await, 4);
    assert_eq!(runtime.error().await.0, "BAD_SIGNATURE");
    let mut through: HashMap<Stream, u64> = HashMap::new();
    while through.get(&Stream::Trace) != Some(&11) || through.get(&Stream::Audit) != Some(&2) {
        let envelope = runtime.recv().await;
        assert_eq!(envelope.kind, kind::ACK, "{:?}", envelope.payload);
        let ack: Ack = envelope.payload_as().unwrap();
        let (stream, seq) = (ack.stream.unwrap(), ack.through_seq.unwrap());
        if let Some(before) = through.insert(stream, seq) {
            assert!(before <= seq, "{stream:?} went back from {before} to {seq}");
        }
    }
    for (stream, sent) in [(Stream::Trace, &trace), (Stream::Audit, &audit)] {
        let stored = db.entries("org-a", &runtime.runtime_id, stream).await;
        let expected: Vec<(u64, String)> = sent
            .iter()
            .map(|e: &Value| {
                (
                    e["seq"].as_u64().unwrap(),
                    e["entry_hash"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(stored, expected, "{stream:?}: every entry exactly once");
        let status = db
            .chain_status("org-a", &runtime.runtime_id, stream)
            .await
            .unwrap();
        assert_eq!(status.status, "continuous", "{stream:?}: {status:?}");
    }
    assert!(
        db.flags("org-a", &runtime.runtime_id).await.is_empty(),
        "nothing to flag"
    );
}
