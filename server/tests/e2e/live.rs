//! The live stream across replicas: two real servers on one database; what a runtime streams
//! through one reaches the subscribers of its organisation on the other, and only them; a
//! subscriber that stops reading is dropped instead of buffered for.

use std::time::Duration;

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_server::live;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::api::Api;
use crate::support::runtime::{FakeRuntime, chain};
use crate::support::{DEADLINE, ServerOptions, TestDb, TestServer, scoped};

const PASSWORD: &str = "correct horse battery staple";

type Socket = WebSocketStream<TcpStream>;

/// Opens `/v1/live` with a session token; `receive_buffer` shrinks the socket's buffer.
async fn open(server: &TestServer, token: &str, receive_buffer: Option<u32>) -> Socket {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    let stream = socket.connect(server.address).await.unwrap();
    let mut request = format!("ws://{}/v1/live", server.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("the live upgrade is accepted");
    socket
}

/// The next event, `None` when the server closed.
async fn next_event(socket: &mut Socket) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("an event in time");
        match frame {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Subscribes, and waits for `subscribed` (from then on nothing is missed).
pub async fn subscribe(server: &TestServer, token: &str) -> Socket {
    let mut socket = open(server, token, None).await;
    let first = next_event(&mut socket).await.expect("subscribed");
    assert_eq!(first["kind"], "subscribed", "{first}");
    socket
}

/// The next event that is not a `runtime_status`.
pub async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let event = next_event(socket).await.expect("an event");
        if event["kind"] == kind {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_ingested_on_one_replica_reaches_its_orgs_subscribers_on_another_only() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let replica_a = TestServer::start(&db, ServerOptions::default());
    let replica_b = TestServer::start(&db, ServerOptions::default());
    let key_a = replica_a.org_with_key("org-a");
    let key_b = replica_a.org_with_key("org-b");
    replica_a.user("org-a", "a@example.com", "viewer", PASSWORD);
    replica_a.user("org-b", "b@example.com", "viewer", PASSWORD);
    let api_b = Api::new(&replica_b);
    let person_a = api_b.login("org-a", "a@example.com", PASSWORD).await;
    let person_b = api_b.login("org-b", "b@example.com", PASSWORD).await;
    let mut watcher_a = subscribe(&replica_b, &person_a.token).await;
    let mut watcher_b = subscribe(&replica_b, &person_b.token).await;

    let mut runtime = FakeRuntime::connect(&replica_a, "org-a", &key_a).await;
    let connected = next_event(&mut watcher_a).await.unwrap();
    assert_eq!(connected["kind"], "runtime_status");
    assert_eq!(
        connected["payload"]["runtime_id"],
        runtime.runtime_id.as_str()
    );
    assert_eq!(connected["payload"]["change"], "connected");

    let entries = chain(3);
    runtime.send_batch(Stream::Trace, &entries).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 2);
    for (seq, entry) in entries.iter().enumerate() {
        let event = next_of(&mut watcher_a, "decision").await;
        let summary = &event["payload"];
        assert_eq!(summary["runtime_id"], runtime.runtime_id.as_str());
        assert_eq!(summary["seq"], seq as u64);
        assert_eq!(summary["entry_id"], entry["entry_id"]);
        assert_eq!(summary["session_id"], entry["session_id"]);
        assert_eq!(summary["risk"], "low");
        assert_eq!(summary["hash_ok"], true);
        assert!(
            summary.get("entry").is_none() && summary.get("prev_hash").is_none(),
            "a summary, not the entry"
        );
    }
    // A gap changes the chain's status: that is published too.
    runtime
        .send_batch(
            Stream::Trace,
            &crate::support::runtime::chain_from(5, &"0".repeat(64), 1, "x"),
        )
        .await;
    let status = next_of(&mut watcher_a, "chain_status").await;
    assert_eq!(status["payload"]["status"], "gap");
    assert_eq!(
        (
            status["payload"]["gap_from"].as_u64(),
            status["payload"]["gap_to"].as_u64()
        ),
        (Some(3), Some(4))
    );

    // Org B's subscriber heard nothing of it: its first event is its own runtime's.
    let mut other = FakeRuntime::connect(&replica_a, "org-b", &key_b).await;
    let first = next_event(&mut watcher_b).await.unwrap();
    assert_eq!(
        first["payload"]["runtime_id"],
        other.runtime_id.as_str(),
        "{first}"
    );
    other.send_batch(Stream::Trace, &chain(1)).await;
    let decision = next_of(&mut watcher_b, "decision").await;
    assert_eq!(decision["payload"]["runtime_id"], other.runtime_id.as_str());

    // A logged-out session cannot subscribe.
    let refused = tokio_tungstenite::connect_async({
        let mut request = format!("ws://{}/v1/live", replica_b.address)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            "Bearer abs_org-a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                .parse()
                .unwrap(),
        );
        request
    })
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_dropped_while_others_get_everything() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let (ok, _, stderr) = server.command(&["create-org", "org-a"]);
    assert!(ok, "{stderr}");
    server.user("org-a", "a@example.com", "viewer", PASSWORD);
    let api = Api::new(&server);
    let person = api.login("org-a", "a@example.com", PASSWORD).await;
    let mut reader = subscribe(&server, &person.token).await;
    let mut sleeper = open(&server, &person.token, Some(4096)).await;
    let first = next_event(&mut sleeper).await.unwrap();
    assert_eq!(first["kind"], "subscribed");

    // Events near the size limit, published as other code would (inside a transaction), in
    // rounds the reading subscriber keeps up with; the other one never reads again.
    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 100;
    let blob = "x".repeat(7000);
    let mut client = db.app().await;
    let rss_before = server.rss_kib();
    for round in 0..ROUNDS {
        let tx = scoped(&mut client, "org-a").await;
        for n in 0..PER_ROUND {
            let payload = json!({"n": round * PER_ROUND + n, "blob": blob});
            live::publish(&tx, "org-a", "test_event", &payload)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        for n in 0..PER_ROUND {
            let event = next_event(&mut reader).await.expect("the reader keeps up");
            assert_eq!(event["kind"], "test_event");
            assert_eq!(event["payload"]["n"], (round * PER_ROUND + n) as u64);
        }
    }
    let rss_after = server.rss_kib();
    // Some 28 MB went out: buffered for the sleeper, they would show.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "the server kept what the sleeper did not read: {rss_before} KiB -> {rss_after} KiB"
    );

    // The sleeper now reads what the kernel held for it, then finds the stream ended.
    let mut received = 0;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while next_event(&mut sleeper).await.is_some() {
            received += 1;
        }
    })
    .await;
    assert!(ended.is_ok(), "the server ended the sleeper's stream");
    assert!(
        received < ROUNDS * PER_ROUND,
        "it got {received} of {}",
        ROUNDS * PER_ROUND
    );
    assert!(
        server.log().contains("dropping a live subscriber"),
        "{}",
        server.log()
    );
}
