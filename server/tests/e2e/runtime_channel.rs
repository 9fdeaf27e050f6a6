//! The runtime side of the server, end to end: the real `atlasbridge-server` on 127.0.0.1, a real
//! PostgreSQL (a database per test), and a hand-written runtime sending exactly the frames a test
//! means (real Ed25519 keys, the protocol crate's types).

use std::time::Duration;

use crate::support::runtime::{
    FakeRuntime, chain, chain_from, head_of, hello_as, identity, open, token, token_response,
};
use crate::support::{ServerOptions, TestDb, TestServer, eventually, scoped};
use atlasbridge_protocol::cloud::messages::{Stream, WireHead};
use atlasbridge_protocol::trace::checkpoint::{
    GENESIS_CHECKPOINT_HASH, UnsignedCheckpoint, encode_public_key,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A server on a fresh database (migrated by `serve` at start), with org `org-a` and its key.
async fn setup(options: ServerOptions) -> Option<(TestDb, TestServer, String)> {
    let db = TestDb::create_unmigrated().await?;
    let server = TestServer::start(&db, options);
    let key = server.org_with_key("org-a");
    Some((db, server, key))
}

/// Asserts that the runtime's trace is `broken` first at `seq`, for `kind`.
async fn assert_broken(db: &TestDb, runtime_id: &str, seq: u64, kind: &str) {
    let status = db
        .chain_status("org-a", runtime_id, Stream::Trace)
        .await
        .unwrap();
    let (at, found, _) = status.broken.clone().expect("broken");
    assert_eq!(
        (status.status.as_str(), at, found.as_str()),
        ("broken", seq, kind),
        "{status:?}"
    );
}

fn seq_and_hash(entries: &[serde_json::Value]) -> Vec<(u64, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["entry_hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_chain_is_stored_once_acked_after_commit_and_continuous() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    assert_eq!(
        (runtime.welcome.resume.trace, runtime.welcome.resume.audit),
        (0, 0)
    );
    let entries = chain(10);
    runtime.send_batch(Stream::Trace, &entries[..6]).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 5);
    // Resent batches overlapping what is held: stored once, acked through their end.
    runtime.send_batch(Stream::Trace, &entries[4..]).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 9);
    runtime.send_batch(Stream::Trace, &entries).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 9);

    let stored = db
        .entries("org-a", &runtime.runtime_id, Stream::Trace)
        .await;
    assert_eq!(stored, seq_and_hash(&entries), "every entry exactly once");
    let status = db
        .chain_status("org-a", &runtime.runtime_id, Stream::Trace)
        .await
        .unwrap();
    assert_eq!(status.status, "continuous", "{status:?}");
    assert_eq!(status.next_seq, 10);

    // The same identity reconnecting is told where the durable copy ends.
    let identity = runtime.key.clone();
    drop(runtime);
    let again =
        FakeRuntime::connect_with(&server, "org-a", &key, identity, Some(head_of(&entries))).await;
    assert_eq!(again.welcome.resume.trace, 10);
    let record = db
        .runtime("org-a", &again.runtime_id, 30)
        .await
        .expect("registered");
    assert_eq!(
        (record.status.as_str(), record.witness_status.as_str()),
        ("active", "ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_entry_or_a_cut_link_breaks_the_chain_at_the_first_bad_seq() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let mut entries = chain(8);
    // Content changed after sealing, hash kept: a hash mismatch at seq 3.
    entries[3]["action_taken"] = json!("deny");
    runtime.send_batch(Stream::Trace, &entries).await;
    // What was received is committed (the evidence is kept) and acked.
    assert_eq!(runtime.ack_through(Stream::Trace).await, 7);
    assert_broken(&db, &runtime.runtime_id, 3, "hash_mismatch").await;
    // More good entries later do not mend it: the first bad seq stays.
    let more = chain_from(8, entries[7]["entry_hash"].as_str().unwrap(), 2, "a");
    runtime.send_batch(Stream::Trace, &more).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 9);
    let status = db
        .chain_status("org-a", &runtime.runtime_id, Stream::Trace)
        .await
        .unwrap();
    assert_eq!(
        (status.status.as_str(), status.broken.map(|b| b.0)),
        ("broken", Some(3))
    );
    let flags = db.flags("org-a", &runtime.runtime_id).await;
    assert!(
        flags.iter().any(|(kind, _)| kind == "hash_mismatch"),
        "{flags:?}"
    );

    // Another runtime whose chain is relinked: seq 5's prev_hash names no entry of it.
    let mut second = FakeRuntime::connect(&server, "org-a", &key).await;
    let mut relinked = chain(5);
    relinked.extend(chain_from(5, &"ab".repeat(32), 3, "b"));
    second.send_batch(Stream::Trace, &relinked).await;
    assert_eq!(second.ack_through(Stream::Trace).await, 7);
    assert_broken(&db, &second.runtime_id, 5, "prev_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_named_with_its_range_and_closes_when_refilled() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let entries = chain(10);
    runtime.send_batch(Stream::Trace, &entries[..5]).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 4);
    // 5 and 6 never arrive: the ack stays at 4, and the gap is named.
    runtime.send_batch(Stream::Trace, &entries[7..]).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 4);
    let status = db
        .chain_status("org-a", &runtime.runtime_id, Stream::Trace)
        .await
        .unwrap();
    assert_eq!(
        (status.status.as_str(), status.gap, status.max_seq),
        ("gap", Some((5, 6)), Some(9)),
        "{status:?}"
    );

    // A reconnect is told to resume at 5; the refill joins the held entries and is linked.
    let identity = runtime.key.clone();
    drop(runtime);
    let mut runtime = FakeRuntime::connect_with(&server, "org-a", &key, identity, None).await;
    assert_eq!(runtime.welcome.resume.trace, 5);
    runtime.send_batch(Stream::Trace, &entries[5..7]).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 9);
    let status = db
        .chain_status("org-a", &runtime.runtime_id, Stream::Trace)
        .await
        .unwrap();
    assert_eq!(
        (status.status.as_str(), status.gap, status.next_seq),
        ("continuous", None, 10)
    );
    assert_eq!(
        db.entries("org-a", &runtime.runtime_id, Stream::Trace)
            .await,
        seq_and_hash(&entries)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_forks_is_refused_and_the_runtime_flagged() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let entries = chain(6);
    runtime.send_batch(Stream::Trace, &entries).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 5);
    let good = runtime.send_heartbeat(Some(head_of(&entries))).await;
    runtime.ack_of(&good).await;

    // The same seq as the witnessed head, another hash: the runtime now shows another history.
    let forked_head = WireHead {
        seq: 5,
        entry_hash: "cd".repeat(32),
    };
    runtime.send_heartbeat(Some(forked_head)).await;
    let (code, message) = runtime.error().await;
    assert_eq!(code, "HEAD_REFUSED", "{message}");
    let record = db.runtime("org-a", &runtime.runtime_id, 30).await.unwrap();
    assert_eq!(record.witness_status, "forked", "{record:?}");
    assert_broken(&db, &runtime.runtime_id, 5, "fork").await;
    // Resending an entry with other content at a held seq is a fork as well, and is not stored.
    let mut other = FakeRuntime::connect(&server, "org-a", &key).await;
    let original = chain(4);
    other.send_batch(Stream::Trace, &original).await;
    assert_eq!(other.ack_through(Stream::Trace).await, 3);
    let rewritten = chain_from(
        0,
        atlasbridge_protocol::trace::GENESIS_PREV_HASH,
        4,
        "rewritten",
    );
    other.send_batch(Stream::Trace, &rewritten).await;
    assert_eq!(other.ack_through(Stream::Trace).await, 3);
    let status = db
        .chain_status("org-a", &other.runtime_id, Stream::Trace)
        .await
        .unwrap();
    assert_eq!(
        (status.status.as_str(), status.broken.map(|b| (b.0, b.1))),
        ("broken", Some((0, "fork".to_owned())))
    );
    assert_eq!(
        db.entries("org-a", &other.runtime_id, Stream::Trace).await,
        seq_and_hash(&original),
        "the first history is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_goes_backwards_is_refused_as_rewound() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let entries = chain(10);
    runtime.send_batch(Stream::Trace, &entries).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 9);
    let good = runtime.send_heartbeat(Some(head_of(&entries))).await;
    runtime.ack_of(&good).await;
    // The right hash of seq 5, but the chain had reached 9: its tail was cut.
    runtime.send_heartbeat(Some(head_of(&entries[..6]))).await;
    let (code, message) = runtime.error().await;
    assert_eq!(code, "HEAD_REFUSED");
    assert!(message.contains("went back"), "{message}");
    let record = db.runtime("org-a", &runtime.runtime_id, 30).await.unwrap();
    assert_eq!(record.witness_status, "rewound");
    let status = db
        .chain_status("org-a", &runtime.runtime_id, Stream::Trace)
        .await
        .unwrap();
    let (at, kind, _) = status.broken.expect("broken");
    assert_eq!((at, kind.as_str()), (6, "rewound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_left_on_a_replaced_connection_is_stale_not_a_rewind() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let identity = identity();
    let entries = chain(10);
    let mut old = FakeRuntime::connect_with(&server, "org-a", &key, identity.clone(), None).await;
    old.send_batch(Stream::Trace, &entries[..6]).await;
    assert_eq!(old.ack_through(Stream::Trace).await, 5);
    // The runtime moves to a new connection (another replica, say) and its chain grows there,
    // while the old connection is still open on the server.
    let mut new = FakeRuntime::connect_with(
        &server,
        "org-a",
        &key,
        identity,
        Some(head_of(&entries[..6])),
    )
    .await;
    new.send_batch(Stream::Trace, &entries[6..]).await;
    assert_eq!(new.ack_through(Stream::Trace).await, 9);
    let current = new.send_heartbeat(Some(head_of(&entries))).await;
    new.ack_of(&current).await;
    // A heartbeat that was queued on the old connection arrives now: its head (seq 5, the right
    // hash) is older than what the newer hello and batches showed, but it is not a rewind.
    let stale = old.send_heartbeat(Some(head_of(&entries[..6]))).await;
    old.ack_of(&stale).await;
    let record = db.runtime("org-a", &new.runtime_id, 30).await.unwrap();
    assert_eq!(record.witness_status, "ok");
    let status = db
        .chain_status("org-a", &new.runtime_id, Stream::Trace)
        .await
        .unwrap();
    assert!(status.broken.is_none(), "{status:?}");
    // A stale head is still checked for forks.
    let mut forged = entries[..6].to_vec();
    forged[5]["entry_hash"] = json!("f".repeat(64));
    old.send_heartbeat(Some(head_of(&forged))).await;
    let (code, message) = old.error().await;
    assert_eq!(code, "HEAD_REFUSED");
    assert!(message.contains("seq 5"), "{message}");
    let record = db.runtime("org-a", &new.runtime_id, 30).await.unwrap();
    assert_eq!(record.witness_status, "forked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_chain_contradicting_a_verified_checkpoint_is_a_fork() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let entries = chain(5);
    let epoch0 = identity();
    let checkpoint = UnsignedCheckpoint {
        checkpoint_seq: 0,
        prev_checkpoint_hash: GENESIS_CHECKPOINT_HASH.to_owned(),
        epoch: 0,
        epoch_public_key: Some(encode_public_key(&epoch0.verifying_key())),
        seq: Some(4),
        entry_hash: head_of(&entries).entry_hash,
        entries: 5,
        timestamp: "2026-11-27T03:00:00.000000Z".to_owned(),
        runtime_id: runtime.runtime_id.clone(),
    }
    .sign(&runtime.key);
    // The checkpoint arrives before the entries it covers (the uplink sends them apart).
    let id = runtime.send_checkpoint(&checkpoint).await;
    runtime.ack_of(&id).await;
    // Sent again: a duplicate, acked again.
    let id = runtime.send_checkpoint(&checkpoint).await;
    runtime.ack_of(&id).await;
    {
        let mut client = db.app().await;
        let tx = scoped(&mut client, "org-a").await;
        let verdict: String = tx
            .query_one(
                "SELECT verdict FROM checkpoints WHERE runtime_id = $1",
                &[&runtime.runtime_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(verdict, "verified");
    }

    // Someone holding the keys rewrites the chain and streams the rewrite: seq 4 is not what the
    // checkpoint vouched for.
    let rewritten = chain_from(
        0,
        atlasbridge_protocol::trace::GENESIS_PREV_HASH,
        5,
        "rewrite",
    );
    runtime.send_batch(Stream::Trace, &rewritten).await;
    runtime.ack_through(Stream::Trace).await;
    let status = db
        .chain_status("org-a", &runtime.runtime_id, Stream::Trace)
        .await
        .unwrap();
    let (at, kind, _) = status.broken.expect("broken");
    assert_eq!(
        (status.status.as_str(), at, kind.as_str()),
        ("broken", 4, "fork")
    );
    let record = db.runtime("org-a", &runtime.runtime_id, 30).await.unwrap();
    assert_eq!(record.witness_status, "forked");

    // A checkpoint that does not chain to the identity key is refused and flagged.
    let mut other = FakeRuntime::connect(&server, "org-a", &key).await;
    let forged = UnsignedCheckpoint {
        checkpoint_seq: 0,
        prev_checkpoint_hash: GENESIS_CHECKPOINT_HASH.to_owned(),
        epoch: 0,
        epoch_public_key: Some(encode_public_key(&epoch0.verifying_key())),
        seq: None,
        entry_hash: GENESIS_CHECKPOINT_HASH.to_owned(),
        entries: 0,
        timestamp: "2026-11-27T03:00:00.000000Z".to_owned(),
        runtime_id: other.runtime_id.clone(),
    }
    .sign(&epoch0);
    other.send_checkpoint(&forged).await;
    let (code, _) = other.error().await;
    assert_eq!(code, "CHECKPOINT_REFUSED");
    let record = db.runtime("org-a", &other.runtime_id, 30).await.unwrap();
    assert_eq!(record.witness_status, "bad_checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_tokens_are_refused_across_orgs_and_after_revocation() {
    let Some((_db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let key_b = server.org_with_key("org-b");
    let runtime_id = encode_public_key(&identity().verifying_key());
    // org-a's key does not open org-b, nor the reverse: under RLS the row is not there.
    for (org, api_key) in [("org-b", &key), ("org-a", &key_b)] {
        let response = token_response(&server, org, api_key, &runtime_id).await;
        assert_eq!(response.status(), 401, "{org}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "INVALID_API_KEY");
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    let response = token_response(&server, "org-a", "abk_0123456789abcdef_nope", &runtime_id).await;
    assert_eq!(response.status(), 401);
    let response = token_response(&server, "org-a", &key, "not-a-key").await;
    assert_eq!(response.status(), 400);
    let response = token_response(&server, "org-zzz", &key, &runtime_id).await;
    assert_eq!(response.status(), 401);

    // No token, a forged token, then a revoked key: no channel.
    assert_eq!(open(&server, "").await.err().map(|r| r.status), Some(401));
    let forged = atlasbridge_server::auth::TokenKeys::new(&[9; 32], 60)
        .issue("org-a", &runtime_id, "0123456789abcdef")
        .unwrap()
        .0;
    assert_eq!(
        open(&server, &forged).await.err().map(|r| r.status),
        Some(401)
    );
    let token = token(&server, "org-a", &key, &runtime_id).await;
    assert!(open(&server, &token).await.is_ok());
    let key_id = key.split('_').nth(1).unwrap();
    let (ok, _, stderr) = server.command(&["revoke-api-key", "org-a", key_id]);
    assert!(ok, "{stderr}");
    assert_eq!(
        open(&server, &token).await.err().map(|r| r.status),
        Some(401)
    );
    // Revoking in org-b does not reach org-a's keys (and this one is already gone).
    let (ok, _, _) = server.command(&["revoke-api-key", "org-b", key_id]);
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_is_inactive_after_three_missed_heartbeats() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    // Two heartbeats a second apart: the server measures the interval (a second leaves a
    // three-second margin for the `active` reading below, even on a loaded machine).
    let first = runtime.send_heartbeat(None).await;
    runtime.ack_of(&first).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = runtime.send_heartbeat(None).await;
    runtime.ack_of(&second).await;
    let record = db.runtime("org-a", &runtime.runtime_id, 30).await.unwrap();
    assert_eq!(record.status, "active");
    assert!(record.first_seen <= record.last_seen, "{record:?}");
    // Silence for more than three intervals.
    let runtime_id = runtime.runtime_id.clone();
    eventually("the runtime turns inactive", || {
        let db = &db;
        let runtime_id = runtime_id.clone();
        async move {
            db.runtime("org-a", &runtime_id, 30)
                .await
                .is_some_and(|r| r.status == "inactive")
        }
    })
    .await;
    // A heartbeat brings it back.
    let third = runtime.send_heartbeat(None).await;
    runtime.ack_of(&third).await;
    let record = db.runtime("org-a", &runtime.runtime_id, 30).await.unwrap();
    assert_eq!(record.status, "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_shed_with_503_and_retry_after() {
    let options = ServerOptions {
        pool_size: 1,
        pool_wait_ms: 200,
        max_connections: 1,
        ..ServerOptions::default()
    };
    let Some((db, server, key)) = setup(options).await else {
        return;
    };
    // One control channel at most: the second is refused until the first closes.
    let first = FakeRuntime::connect(&server, "org-a", &key).await;
    let runtime_id = encode_public_key(&identity().verifying_key());
    let second_token = token(&server, "org-a", &key, &runtime_id).await;
    let refused = open(&server, &second_token).await.expect_err("refused");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.retry_after.as_deref(), Some("2"));
    drop(first);

    // The only pooled connection stuck behind a lock: the next request is shed, not queued.
    let mut owner = TestDb::connect(&db.owner_url).await;
    let lock = owner.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let blocked = {
        let server_url = server.http_url("/v1/auth/token");
        let body = json!({"api_key": key, "org_id": "org-a", "runtime_id": runtime_id});
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(server_url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let observer = TestDb::connect(&db.owner_url).await;
    eventually("the token call waits for the lock", || {
        let observer = &observer;
        async move {
            observer
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'api_keys'::regclass",
                    &[],
                )
                .await
                .map(|row| row.get::<_, i64>(0) > 0)
                .unwrap_or(false)
        }
    })
    .await;
    let shed = token_response(&server, "org-a", &key, &runtime_id).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["code"], "UNAVAILABLE");
    lock.commit().await.unwrap();
    assert_eq!(
        blocked.await.unwrap().unwrap(),
        200,
        "the waiting call completes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_unmigrated_database_and_health_differs_from_readiness() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let options = ServerOptions {
        migrate_at_start: false,
        ..ServerOptions::default()
    };
    let server = TestServer::unstarted(&db, options.clone());
    let (ok, stderr) = server.launch_expecting_failure();
    assert!(!ok);
    assert!(stderr.contains("atlasbridge-server migrate"), "{stderr}");
    let (ok, _, stderr) = server.command(&["migrate"]);
    assert!(!ok, "migrate needs the owner URL");
    assert!(stderr.contains("owner_url"), "{stderr}");

    let db = TestDb::create().await.expect("a database");
    let server = TestServer::start(&db, options);
    assert_eq!(
        crate::support::http_status(server.address, "/healthz"),
        Some(200)
    );
    assert_eq!(
        crate::support::http_status(server.address, "/readyz"),
        Some(200)
    );
    assert_eq!(
        crate::support::http_status(server.address, "/v1/nothing"),
        Some(404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_runtime_channels_as_going_away_and_exits_cleanly() {
    let Some((_db, mut server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let entries = chain(3);
    runtime.send_batch(Stream::Trace, &entries).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 2);
    let terminate = tokio::task::spawn_blocking(move || {
        let clean = server.terminate();
        (clean, server)
    });
    assert_eq!(runtime.closed().await, Some(1001));
    let (clean, server) = terminate.await.unwrap();
    assert!(clean, "exit status after SIGTERM:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_do_not_verify_or_parse_are_answered_and_never_stored() {
    let Some((db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let entries = chain(3);
    let batch = json!({"stream": "trace", "from_seq": 0, "to_seq": 2, "entries": entries});
    // Signed by another key than the runtime's.
    runtime
        .send_signed_by(&identity(), "audit_batch", batch.clone())
        .await;
    assert_eq!(runtime.error().await.0, "BAD_SIGNATURE");
    // Not JSON, not text, too large, the wrong payload.
    runtime.send_raw(Message::text("{not json")).await;
    assert_eq!(runtime.error().await.0, "MALFORMED");
    runtime.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(runtime.error().await.0, "MALFORMED");
    runtime.send_raw(Message::text("x".repeat(70 * 1024))).await;
    assert_eq!(runtime.error().await.0, "MALFORMED");
    runtime
        .send("audit_batch", json!({"stream": "nowhere"}))
        .await;
    assert_eq!(runtime.error().await.0, "BAD_PAYLOAD");
    runtime.send("heartbeat", json!([1, 2])).await;
    assert_eq!(runtime.error().await.0, "BAD_PAYLOAD");
    runtime
        .send("checkpoint", json!({"checkpoint_seq": "zero"}))
        .await;
    assert_eq!(runtime.error().await.0, "BAD_PAYLOAD");
    assert!(
        db.entries("org-a", &runtime.runtime_id, Stream::Trace)
            .await
            .is_empty()
    );
    // The connection is still good for what verifies.
    runtime.send("audit_batch", batch).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_from_another_runtime_than_the_tokens_is_refused() {
    let Some((_db, server, key)) = setup(ServerOptions::default()).await else {
        return;
    };
    // A token for one identity…
    let holder = identity();
    let token = token(
        &server,
        "org-a",
        &key,
        &encode_public_key(&holder.verifying_key()),
    )
    .await;
    let socket = open(&server, &token)
        .await
        .expect("the upgrade is accepted");
    // …used by another, which signs its hello correctly with its own key.
    let (code, close) = hello_as(socket, &identity(), "org-a").await;
    assert_eq!(code, "IDENTITY_MISMATCH");
    assert_eq!(close, Some(1008));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_calling_for_tokens_too_often_gets_429_with_retry_after() {
    let options = ServerOptions {
        token_requests_per_minute: 2,
        ..ServerOptions::default()
    };
    let Some((_db, server, key)) = setup(options).await else {
        return;
    };
    let runtime_id = encode_public_key(&identity().verifying_key());
    for _ in 0..2 {
        token(&server, "org-a", &key, &runtime_id).await;
    }
    let limited = token_response(&server, "org-a", &key, &runtime_id).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    // Another runtime of the org is not held back.
    let other = encode_public_key(&identity().verifying_key());
    token(&server, "org-a", &key, &other).await;
}
