//! What runtimes report as it happens — `session_started`, `session_ended`,
//! `escalation_triggered` — stored per organisation and runtime and shown by the REST API and
//! the live stream: from real `atlasbridged` daemons, and from a hand-written runtime that
//! sends messages again, out of order and malformed.

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_protocol::trace::GENESIS_PREV_HASH;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::live::subscribe;
use crate::support::api::{Api, Auth, Session};
use crate::support::daemon::TestDaemon;
use crate::support::runtime::{FakeRuntime, seal_chain};
use crate::support::{ServerOptions, TestDb, TestServer, eventually, scoped};

const PASSWORD: &str = "correct horse battery staple";
/// Text of a prompt that escalates: it must never reach the server.
const PROMPT_TEXT: &str = "Delete the production database? PROMPT-TEXT-MARKER";

/// The one session of `runtime_id` the API lists under `session_id`.
async fn session_of(api: &Api, who: &Session, runtime_id: &str, session_id: &str) -> Option<Value> {
    let path = format!(
        "/v1/sessions?runtime_id={}",
        crate::support::api::segment(runtime_id)
    );
    let answer = api.get(&path, who.bearer()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == session_id)
        .cloned()
}

async fn escalations(api: &Api, who: &Session, query: &str) -> Vec<Value> {
    let answer = api
        .get(&format!("/v1/escalations{query}"), who.bearer())
        .await;
    assert_eq!(answer.status, 200, "{query}: {:?}", answer.body);
    answer.body["escalations"].as_array().unwrap().clone()
}

/// Whether any stored row of the new tables holds `text`.
async fn stored_anywhere(db: &TestDb, org: &str, text: &str) -> bool {
    let mut client = db.app().await;
    let tx = scoped(&mut client, org).await;
    let pattern = format!("%{text}%");
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM escalations e WHERE row_to_json(e)::text LIKE $1)
                  + (SELECT count(*) FROM runtime_sessions s WHERE row_to_json(s)::text LIKE $1)",
            &[&pattern],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    row.get::<_, i64>(0) > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_sessions_and_escalations_reach_the_servers_rest_api_and_live_stream() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let api = Api::new(&server);
    let key = server.org_with_key("org-a");
    server.user("org-a", "owner@example.com", "owner", PASSWORD);
    let owner = api.login("org-a", "owner@example.com", PASSWORD).await;
    let mut live = subscribe(&server, &owner.token).await;

    let first = TestDaemon::start(&server, "org-a", &key);
    let second = TestDaemon::start(&server, "org-a", &key);
    first.wait_connected();
    second.wait_connected();
    let (first_id, second_id) = (first.runtime_id(), second.runtime_id());

    // The first daemon: a session with two answered prompts and one that needs a human, ended.
    let mut conn = first.conn();
    conn.call(
        "session.start",
        json!({"session_id": "sess-1", "agent_id": "agent-1", "tool_id": "tool-1",
               "repo": "repo-1", "session_tags": ["tag-1"]}),
    )
    .unwrap();
    first.decide("sess-1", 2);
    let escalated = conn
        .call(
            "decision.evaluate",
            json!({"session_id": "sess-1", "agent_id": "agent-1", "prompt_id": "p-esc",
                   "prompt_type": "yes_no", "prompt_text": PROMPT_TEXT, "confidence": "low"}),
        )
        .unwrap();
    assert_eq!(escalated["action"], "require_human", "{escalated}");
    let ended = conn
        .call("session.end", json!({"session_id": "sess-1"}))
        .unwrap();
    assert_eq!(ended["decisions"], 3, "{ended}");
    // The second: a session still open, with one escalation.
    let mut conn = second.conn();
    conn.call("session.start", json!({"session_id": "sess-2"}))
        .unwrap();
    let escalated_second = conn
        .call(
            "decision.evaluate",
            json!({"session_id": "sess-2", "prompt_id": "p-2", "prompt_type": "yes_no",
                   "prompt_text": PROMPT_TEXT, "confidence": "low"}),
        )
        .unwrap();
    assert_eq!(escalated_second["action"], "require_human");
    // A session started that has no decision yet.
    conn.call("session.start", json!({"session_id": "sess-3"}))
        .unwrap();

    // /v1/sessions: the decisions aggregated, with the times and counts the runtime reported.
    eventually(
        "the first session is listed, ended, with its escalation",
        || {
            let (api, owner, first_id) = (&api, &owner, &first_id);
            async move {
                session_of(api, owner, first_id, "sess-1")
                    .await
                    .is_some_and(|s| {
                        s["decisions"] == 3 && !s["ended_at"].is_null() && s["escalations"] == 1
                    })
            }
        },
    )
    .await;
    let session = session_of(&api, &owner, &first_id, "sess-1").await.unwrap();
    assert_eq!(session["decisions_at_end"], 3, "{session}");
    assert_eq!(session["agent_id"], "agent-1", "{session}");
    let (started, ended) = (
        session["started_at"].as_str().unwrap(),
        session["ended_at"].as_str().unwrap(),
    );
    // The runtime's clock when its uplink sent each message: the end follows every decision;
    // the start may trail the first decision by the uplink's lag (its events and batches are
    // sent as its loop gets to them), so only the order of start and end is certain.
    assert!(started < ended, "{session}");
    assert!(ended >= session["last_at"].as_str().unwrap(), "{session}");
    eventually(
        "the second session is listed, open, with its escalation",
        || {
            let (api, owner, second_id) = (&api, &owner, &second_id);
            async move {
                session_of(api, owner, second_id, "sess-2")
                    .await
                    .is_some_and(|s| s["escalations"] == 1)
            }
        },
    )
    .await;
    let open = session_of(&api, &owner, &second_id, "sess-2")
        .await
        .unwrap();
    assert!(
        open["ended_at"].is_null() && open["started_at"].is_string(),
        "{open}"
    );
    // The session without decisions is listed from what the runtime reported.
    eventually("the session without decisions is listed", || {
        let (api, owner, second_id) = (&api, &owner, &second_id);
        async move { session_of(api, owner, second_id, "sess-3").await.is_some() }
    })
    .await;
    let quiet = session_of(&api, &owner, &second_id, "sess-3")
        .await
        .unwrap();
    assert_eq!(quiet["decisions"], 0, "{quiet}");
    assert!(
        quiet["started_at"].is_string() && quiet["ended_at"].is_null(),
        "{quiet}"
    );
    assert_eq!(quiet["first_at"], quiet["started_at"], "{quiet}");
    // The item route says the same.
    let path = format!(
        "/v1/runtimes/{}/sessions/sess-1",
        crate::support::api::segment(&first_id)
    );
    let one = api.get(&path, owner.bearer()).await;
    assert_eq!(one.body["escalations"], 1, "{:?}", one.body);
    assert_eq!(one.body["ended_at"], session["ended_at"]);

    // /v1/escalations: both, newest first; by runtime and by session, each its own.
    let all = escalations(&api, &owner, "").await;
    assert_eq!(all.len(), 2, "{all:?}");
    let rid = crate::support::api::segment(&first_id);
    let mine = escalations(&api, &owner, &format!("?runtime_id={rid}")).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let escalation = &mine[0];
    assert_eq!(escalation["seq"], escalated["seq"]);
    assert_eq!(escalation["entry_hash"], escalated["entry_hash"]);
    assert_eq!(escalation["session_id"], "sess-1");
    assert_eq!(escalation["agent_id"], "agent-1");
    assert_eq!(escalation["prompt_id"], "p-esc");
    assert_eq!(escalation["prompt_type"], "yes_no");
    assert_eq!(escalation["risk_level"], escalated["risk_level"]);
    assert_eq!(escalation["matched_rule"], escalated["matched_rule"]);
    assert_eq!(escalation["policy_action"], escalated["policy_action"]);
    assert_eq!(escalation["policy_hash"], escalated["policy_hash"]);
    let by_session = escalations(&api, &owner, "?session_id=sess-2").await;
    assert_eq!(by_session.len(), 1);
    assert_eq!(by_session[0]["runtime_id"], second_id.as_str());
    // The escalated decision is the trace entry at that seq.
    let decisions = api
        .get(
            &format!("/v1/decisions?runtime_id={rid}&action=require_human"),
            owner.bearer(),
        )
        .await;
    assert_eq!(decisions.body["decisions"][0]["seq"], escalated["seq"]);
    // No prompt text was stored.
    assert!(!stored_anywhere(&db, "org-a", "PROMPT-TEXT-MARKER").await);

    // The live stream told of each as it happened.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let event = next_of_any(&mut live, &["session", "escalation"]).await;
        let payload = &event["payload"];
        seen.push((
            event["kind"].as_str().unwrap().to_owned(),
            payload["change"].as_str().unwrap_or_default().to_owned(),
            payload["session_id"].as_str().unwrap().to_owned(),
        ));
    }
    for expected in [
        ("session", "started", "sess-1"),
        ("escalation", "", "sess-1"),
        ("session", "ended", "sess-1"),
        ("session", "started", "sess-2"),
        ("escalation", "", "sess-2"),
        ("session", "started", "sess-3"),
    ] {
        let expected = (
            expected.0.to_owned(),
            expected.1.to_owned(),
            expected.2.to_owned(),
        );
        assert!(seen.contains(&expected), "{expected:?} in {seen:?}");
    }
}

/// The next live event of one of `kinds`.
async fn next_of_any(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    kinds: &[&str],
) -> Value {
    loop {
        let event = next_frame(socket).await;
        if kinds.iter().any(|k| event["kind"] == *k) {
            return event;
        }
    }
}

async fn next_frame(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Value {
    use futures_util::StreamExt as _;
    loop {
        let frame = tokio::time::timeout(crate::support::DEADLINE, socket.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn at(second: u32) -> String {
    format!("2026-11-27T05:00:{second:02}.000000Z")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_stored_once_bounded_in_order_and_paged() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let api = Api::new(&server);
    let key = server.org_with_key("org-a");
    server.user("org-a", "viewer@example.com", "viewer", PASSWORD);
    let viewer = api.login("org-a", "viewer@example.com", PASSWORD).await;
    let mut runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let rid = crate::support::api::segment(&runtime.runtime_id);
    // Five decisions of session s-1, so that /v1/sessions lists it.
    let decisions = seal_chain(
        0,
        GENESIS_PREV_HASH,
        (0..5)
            .map(|i| {
                json!({"timestamp": at(10 + i), "session_id": "s-1", "agent_id": "agent-1",
                       "action_taken": "require_human", "risk_level": "high"})
            })
            .collect(),
    );
    runtime.send_batch(Stream::Trace, &decisions).await;
    assert_eq!(runtime.ack_through(Stream::Trace).await, 4);

    // The start, sent twice exactly; it carries a field the server must not keep.
    let start = runtime.envelope_at(
        "session_started",
        json!({"session_id": "s-1", "agent_id": "agent-1", "repo": "repo-1",
               "session_tags": ["a", "b"], "prompt_text": "PROMPT-TEXT-MARKER"}),
        &at(1),
    );
    runtime.send_raw(Message::text(start.clone())).await;
    runtime.send_raw(Message::text(start)).await;
    // Five escalations, one of them sent again (the same message, then another stamp).
    for seq in 0..5u32 {
        let text = runtime.envelope_at(
            "escalation_triggered",
            json!({"session_id": "s-1", "agent_id": "agent-1", "seq": seq,
                   "entry_hash": decisions[seq as usize]["entry_hash"], "prompt_id": format!("p{seq}"),
                   "prompt_type": "yes_no", "risk_level": "high", "policy_action": "require_human",
                   "matched_rule": "", "policy_hash": "h"}),
            &at(10 + seq),
        );
        runtime.send_raw(Message::text(text.clone())).await;
        if seq == 2 {
            runtime.send_raw(Message::text(text)).await;
            let later = runtime.envelope_at(
                "escalation_triggered",
                json!({"session_id": "s-1", "seq": 2, "entry_hash": "other"}),
                &at(59),
            );
            runtime.send_raw(Message::text(later)).await;
        }
    }
    // The end, twice.
    let end = runtime.envelope_at(
        "session_ended",
        json!({"session_id": "s-1", "agent_id": "agent-1", "decisions": 5}),
        &at(20),
    );
    runtime.send_raw(Message::text(end.clone())).await;
    runtime.send_raw(Message::text(end.clone())).await;
    // Messages of a connection are handled in order: a heartbeat's ack comes after them all,
    // and no error came before it.
    let heartbeat = runtime.send_heartbeat(None).await;
    runtime.ack_of(&heartbeat).await;

    let session = session_of(&api, &viewer, &runtime.runtime_id, "s-1")
        .await
        .unwrap();
    assert_eq!(session["started_at"], at(1), "{session}");
    assert_eq!(session["ended_at"], at(20), "{session}");
    assert_eq!(session["decisions_at_end"], 5);
    assert_eq!(session["escalations"], 5, "each once");
    assert!(!stored_anywhere(&db, "org-a", "PROMPT-TEXT-MARKER").await);
    // Within a time range, the escalations of that range only.
    let path = format!(
        "/v1/sessions?runtime_id={rid}&from={}&to={}",
        at(11),
        at(13)
    );
    let ranged = api.get(&path, viewer.bearer()).await;
    assert_eq!(
        ranged.body["sessions"][0]["decisions"], 2,
        "{:?}",
        ranged.body
    );
    assert_eq!(ranged.body["sessions"][0]["escalations"], 2);

    // The list: newest first, the first copy of seq 2 kept, paged with the cursor.
    let all = escalations(&api, &viewer, "").await;
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [4, 3, 2, 1, 0]);
    assert_eq!(all[2]["occurred_at"], at(12));
    assert_eq!(all[2]["entry_hash"], decisions[2]["entry_hash"]);
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/escalations?limit=2&cursor={c}"),
            None => "/v1/escalations?limit=2".to_owned(),
        };
        let page = api.get(&query, viewer.bearer()).await;
        assert_eq!(page.status, 200);
        pages.push(
            page.body["escalations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_i64().unwrap())
                .collect::<Vec<_>>(),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [vec![4, 3], vec![2, 1], vec![0]]);
    let ranged = escalations(&api, &viewer, &format!("?from={}&to={}", at(11), at(13))).await;
    let seqs: Vec<i64> = ranged.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [2, 1]);
    assert!(
        escalations(&api, &viewer, "?agent_id=nobody")
            .await
            .is_empty()
    );
    assert!(
        escalations(&api, &viewer, "?runtime_id=ed25519%3Anobody")
            .await
            .is_empty()
    );
    // A cursor of another list, and a time that is none.
    let decisions_page = api.get("/v1/decisions?limit=1", viewer.bearer()).await;
    let foreign = decisions_page.body["next_cursor"].as_str().unwrap();
    api.get(
        &format!("/v1/escalations?cursor={foreign}"),
        viewer.bearer(),
    )
    .await
    .assert_error(400, "BAD_REQUEST");
    api.get("/v1/escalations?from=yesterday", viewer.bearer())
        .await
        .assert_error(400, "BAD_REQUEST");
    api.get("/v1/escalations", Auth::None)
        .await
        .assert_error(401, "UNAUTHENTICATED");

    // The daemon forgets ended sessions, so an id can start again: open once more; the old
    // end arriving again does not close it; a later end does. The first start stays.
    let again = runtime.envelope_at("session_started", json!({"session_id": "s-1"}), &at(30));
    runtime.send_raw(Message::text(again)).await;
    runtime.send_raw(Message::text(end)).await;
    let heartbeat = runtime.send_heartbeat(None).await;
    runtime.ack_of(&heartbeat).await;
    let session = session_of(&api, &viewer, &runtime.runtime_id, "s-1")
        .await
        .unwrap();
    assert!(session["ended_at"].is_null(), "{session}");
    assert!(session["decisions_at_end"].is_null(), "{session}");
    assert_eq!(session["started_at"], at(1));
    assert_eq!(
        session["agent_id"], "agent-1",
        "a start without it keeps it"
    );
    let end = runtime.envelope_at(
        "session_ended",
        json!({"session_id": "s-1", "decisions": 7}),
        &at(40),
    );
    runtime.send_raw(Message::text(end)).await;
    let heartbeat = runtime.send_heartbeat(None).await;
    runtime.ack_of(&heartbeat).await;
    let session = session_of(&api, &viewer, &runtime.runtime_id, "s-1")
        .await
        .unwrap();
    assert_eq!(session["ended_at"], at(40), "{session}");
    assert_eq!(session["decisions_at_end"], 7);

    // Malformed reports are refused with BAD_PAYLOAD and store nothing; the channel goes on.
    for (kind, payload) in [
        (
            "escalation_triggered",
            json!({"session_id": "s-9", "entry_hash": "h"}),
        ),
        (
            "escalation_triggered",
            json!({"session_id": "s-9", "seq": -1, "entry_hash": "h"}),
        ),
        (
            "session_started",
            json!({"session_id": "s-9", "repo": "r".repeat(513)}),
        ),
        ("session_ended", json!({"agent_id": "a"})),
        ("session_started", json!("not an object")),
    ] {
        runtime.send(kind, payload).await;
        let (code, _) = runtime.error().await;
        assert_eq!(code, "BAD_PAYLOAD", "{kind}");
    }
    let heartbeat = runtime.send_heartbeat(None).await;
    runtime.ack_of(&heartbeat).await;
    let mut client = db.app().await;
    let tx = scoped(&mut client, "org-a").await;
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM runtime_sessions), (SELECT count(*) FROM escalations)",
            &[],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 5));
}
