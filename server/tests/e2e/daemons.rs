//! Real `atlasbridged` daemons linked to the real server — the cloud link's end-to-end cases that
//! need no injected fault, against the server instead of the test peer: what they decide arrives
//! once, in order, verified; a server killed mid-stream and restarted, a daemon killed
//! mid-stream and restarted, and a server restored from an older backup lose and double
//! nothing; access tokens are renewed on an open connection.
use atlasbridge_protocol::cloud::messages::Stream;

use crate::support::agent::{Agent, decide_more};
use crate::support::daemon::{Conn, TestDaemon, event};
use crate::support::{ServerOptions, TestDb, TestServer, eventually, scoped};

/// Waits until the server holds exactly the daemon's local trace (same seqs, same hashes, each
/// once), then checks the chain's verdict and the registry.
async fn assert_server_holds_the_trace(db: &TestDb, daemon: &TestDaemon) {
    let runtime_id = daemon.runtime_id();
    let local = daemon.local_chain(Stream::Trace);
    assert!(!local.is_empty());
    db.wait_for_exactly("org-a", &runtime_id, &local).await;
    // The audit log streams too; it keeps growing (link events), so its prefix must match.
    eventually("the audit log arrives, continuous", || {
        let (db, runtime_id) = (db, runtime_id.clone());
        async move {
            db.chain_status("org-a", &runtime_id, Stream::Audit)
                .await
                .is_some_and(|s| s.status == "continuous" && s.next_seq > 0)
        }
    })
    .await;
    let held = db.entries("org-a", &runtime_id, Stream::Audit).await;
    let local_audit = daemon.local_chain(Stream::Audit);
    assert_eq!(
        held[..],
        local_audit[..held.len()],
        "the audit copy is a prefix of the log"
    );
    // Its signed checkpoints reach the witness, and each verifies back to the identity key
    // through the epoch keys.
    eventually("checkpoints arrive", || {
        let (db, runtime_id) = (db, runtime_id.clone());
        async move { db.checkpoint_verdicts("org-a", &runtime_id).await.len() >= 2 }
    })
    .await;
    let verdicts = db.checkpoint_verdicts("org-a", &runtime_id).await;
    assert!(
        verdicts
            .iter()
            .enumerate()
            .all(|(i, (seq, verdict))| *seq == i as i64 && verdict == "verified"),
        "{verdicts:?}"
    );
    // Active once its heartbeats flow again: right after a server restart the last one can be
    // older than three intervals until the daemon's reconnect backoff has run its course.
    eventually("the runtime is active", || {
        let (db, runtime_id) = (db, runtime_id.clone());
        async move {
            db.runtime("org-a", &runtime_id, 30)
                .await
                .is_some_and(|record| record.status == "active")
        }
    })
    .await;
    let record = db
        .runtime("org-a", &runtime_id, 30)
        .await
        .expect("registered");
    assert_eq!(record.witness_status, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_stream_their_decisions_and_both_chains_are_continuous() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let key = server.org_with_key("org-a");
    let first = TestDaemon::start(&server, "org-a", &key);
    let second = TestDaemon::start(&server, "org-a", &key);
    first.decide("s1", 30);
    second.decide("s2", 20);
    assert_ne!(first.runtime_id(), second.runtime_id());
    assert_server_holds_the_trace(&db, &first).await;
    assert_server_holds_the_trace(&db, &second).await;
    // The daemons are connected, saw their heartbeats acked, and were never refused.
    for daemon in [&first, &second] {
        let status = daemon.cloud_status();
        assert_eq!(status["state"], "connected", "{status}");
        assert!(status["last_heartbeat_acked"].is_string(), "{status}");
        assert!(status["last_error"].is_null(), "{status}");
        assert_eq!(status["clock_skew_s"], serde_json::Value::Null, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_and_restarted_loses_and_doubles_nothing() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let mut server = TestServer::start(&db, ServerOptions::default());
    let key = server.org_with_key("org-a");
    let daemons = [
        TestDaemon::start(&server, "org-a", &key),
        TestDaemon::start(&server, "org-a", &key),
    ];
    let first_id = daemons[0].runtime_id();
    let agents = [
        Agent::start(&daemons[0], "s1"),
        Agent::start(&daemons[1], "s2"),
    ];
    // Mid-stream: the server already holds part of the trace and more is on its way.
    eventually("entries flow in", || {
        let (db, id) = (&db, first_id.clone());
        async move { db.entries("org-a", &id, Stream::Trace).await.len() >= 20 }
    })
    .await;
    server.kill();
    // Decisions go on while the server is down; the trace is the buffer.
    decide_more(&[&agents[0], &agents[1]], 30).await;
    server.launch();
    decide_more(&[&agents[0], &agents[1]], 30).await;
    let [first_agent, second_agent] = agents;
    assert!(first_agent.stop() > 60);
    assert!(second_agent.stop() > 60);
    for daemon in &daemons {
        assert_server_holds_the_trace(&db, daemon).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_stream_resumes_from_its_cursor_without_doubles() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let key = server.org_with_key("org-a");
    let mut daemon = TestDaemon::start(&server, "org-a", &key);
    daemon.decide("a", 50);
    assert_server_holds_the_trace(&db, &daemon).await;
    let runtime_id = daemon.runtime_id();

    // An agent decides until its daemon dies under it (SIGKILL, as a crash) with entries on
    // their way: those are sent again after the restart and stored once.
    let socket = daemon.socket();
    let agent = std::thread::spawn(move || {
        let Ok(mut conn) = Conn::open(&socket) else {
            return 0;
        };
        let mut made = 0;
        while conn
            .call("decision.evaluate", event("b", &format!("q{made}")))
            .is_ok()
        {
            made += 1;
        }
        made
    });
    eventually("entries stream while the agent decides", || {
        let (db, id) = (&db, runtime_id.clone());
        async move { db.entries("org-a", &id, Stream::Trace).await.len() >= 80 }
    })
    .await;
    daemon.restart(&key);
    let made = agent.join().expect("the agent thread");
    assert!(made > 0);
    daemon.decide("c", 20);
    assert_server_holds_the_trace(&db, &daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_that_expire_every_few_seconds_are_renewed_on_one_connection() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let server = TestServer::start(
        &db,
        ServerOptions {
            token_lifetime_s: 6,
            ..ServerOptions::default()
        },
    );
    let key = server.org_with_key("org-a");
    let daemon = TestDaemon::start(&server, "org-a", &key);
    daemon.decide("a", 5);
    let runtime_id = daemon.runtime_id();
    let count = |what: &str| {
        server
            .log()
            .lines()
            .filter(|line| line.contains(what) && line.contains(&runtime_id))
            .count()
    };
    eventually("three tokens were issued to the runtime", || {
        let issued = count("token issued");
        async move { issued >= 3 }
    })
    .await;
    assert_eq!(count("runtime connected"), 1, "the connection stayed up");
    daemon.decide("b", 5);
    assert_server_holds_the_trace(&db, &daemon).await;
    assert_eq!(count("runtime connected"), 1, "the connection stayed up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restored_from_an_older_backup_is_refilled_from_the_daemons_trace() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let mut server = TestServer::start(&db, ServerOptions::default());
    let key = server.org_with_key("org-a");
    let daemon = TestDaemon::start(&server, "org-a", &key);
    daemon.decide("a", 50);
    assert_server_holds_the_trace(&db, &daemon).await;
    let runtime_id = daemon.runtime_id();

    // The database loses the trace from seq 20 on, as a restore of a backup taken then would:
    // the daemon, told at its next welcome where the server's copy ends, sends the rest again
    // although it had them acknowledged.
    server.kill();
    let mut owner = TestDb::connect(&db.owner_url).await;
    let tx = scoped(&mut owner, "org-a").await;
    tx.execute(
        "DELETE FROM entries WHERE runtime_id = $1 AND stream = 'trace' AND seq >= 20",
        &[&runtime_id],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE chains SET next_seq = 20, max_seq = 19,
             head_hash = (SELECT entry_hash FROM entries
                          WHERE runtime_id = $1 AND stream = 'trace' AND seq = 19)
         WHERE runtime_id = $1 AND stream = 'trace'",
        &[&runtime_id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.entries("org-a", &runtime_id, Stream::Trace).await.len(),
        20
    );
    server.launch();
    daemon.decide("b", 5);
    assert_server_holds_the_trace(&db, &daemon).await;
}
