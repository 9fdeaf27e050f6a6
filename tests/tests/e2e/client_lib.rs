//! The `atlasbridge` library's two clients against the real daemon: typed evaluate, record,
//! sessions and status; the daemon's errors with their codes; trace subscriptions in order, up
//! to the daemon's end notice.

use std::future::Future;

use atlasbridge::blocking;
use atlasbridge::{
    Client, ClientError, DecisionAction, ErrorCode, EvaluateParams, RecordParams,
    SessionStartParams,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{DEADLINE, Options, TestDaemon, YES_AND_DENY_DELETE, with_policy};

fn event(session: &str, prompt_id: &str, prompt_type: &str, text: &str) -> EvaluateParams {
    EvaluateParams {
        session_id: session.into(),
        prompt_id: prompt_id.into(),
        prompt_type: prompt_type.into(),
        prompt_text: text.into(),
        confidence: "high".into(),
        ..Default::default()
    }
}

fn human_reply(session: &str, prompt_id: &str, reply: &str) -> RecordParams {
    RecordParams {
        session_id: session.into(),
        prompt_id: prompt_id.into(),
        prompt_type: "free_text".into(),
        action_taken: "human_reply".into(),
        reply_value: Some(reply.into()),
        human_actor: "alice".into(),
        escalation_status: "resolved".into(),
        ..Default::default()
    }
}

fn session(id: &str) -> SessionStartParams {
    SessionStartParams {
        session_id: id.into(),
        agent_id: Some("lib-agent".into()),
        tool_id: Some("claude_code".into()),
        ..Default::default()
    }
}

fn raw_record(prompt: &str) -> Value {
    json!({
        "session_id": "writer",
        "prompt_id": prompt,
        "prompt_type": "yes_no",
        "action_taken": "auto_reply",
    })
}

/// Every await of these tests has a deadline.
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("the daemon answered within the deadline")
}

fn blocking_client(daemon: &TestDaemon) -> blocking::Client {
    let mut client = blocking::Client::connect(&daemon.socket()).unwrap();
    client.set_timeout(DEADLINE).unwrap();
    client
}

#[test]
fn the_blocking_client_decides_records_and_reports_status() {
    let daemon = with_policy("pro", YES_AND_DENY_DELETE, "");
    let mut client = blocking_client(&daemon);
    let started = client.start_session(&session("s")).unwrap();
    assert_eq!(started.agent_id.as_deref(), Some("lib-agent"));

    let yes = client
        .evaluate(&event("s", "p1", "yes_no", "Continue? [y/n]"))
        .unwrap();
    assert_eq!(yes.decision(), DecisionAction::AutoReply, "{yes:?}");
    assert_eq!(
        (yes.reply_value.as_str(), yes.matched_rule.as_str()),
        ("y", "yes")
    );
    assert_eq!(yes.seq, Some(0));
    let denied = client
        .evaluate(&event("s", "p2", "yes_no", "delete the repo? [y/n]"))
        .unwrap();
    assert_eq!(denied.decision(), DecisionAction::Deny);
    assert_eq!(denied.matched_rule, "deny-delete");
    let human = client
        .evaluate(&event("s", "p3", "free_text", "Which branch?"))
        .unwrap();
    assert_eq!(human.decision(), DecisionAction::RequireHuman, "{human:?}");

    let recorded = client.record(&human_reply("s", "p3", "main")).unwrap();
    assert_eq!(recorded.seq, Some(3));
    let stored = &daemon
        .conn()
        .ok("trace.read", json!({"from_seq": 3, "limit": 1}))["entries"][0];
    assert_eq!(stored["action_taken"], "human_reply");
    assert_eq!(stored["reply_value"], "main");
    assert_eq!(
        stored["agent_id"], "lib-agent",
        "inherited from the session"
    );
    assert_eq!(
        stored["entry_hash"].as_str(),
        recorded.entry_hash.as_deref()
    );

    let again = client
        .evaluate(&EvaluateParams {
            idempotency_key: Some("k".into()),
            ..event("s", "p4", "yes_no", "Continue? [y/n]")
        })
        .unwrap();
    let repeat = client
        .evaluate(&EvaluateParams {
            idempotency_key: Some("k".into()),
            ..event("s", "p4", "yes_no", "Continue? [y/n]")
        })
        .unwrap();
    assert!(repeat.repeated && !again.repeated);
    assert_eq!(repeat.seq, again.seq);

    let status = client.status().unwrap();
    assert_eq!(status.pid, daemon.pid());
    assert_eq!(status.trace.chain.entries, 5);
    assert_eq!(status.sessions, 1);
    assert_eq!(status.health, "ok");
    let ended = client.end_session("s").unwrap();
    assert_eq!(ended.session_id, "s");
    assert_eq!(client.status().unwrap().sessions, 0);
}

#[tokio::test]
async fn the_async_client_decides_records_and_reports_status_with_calls_in_flight() {
    let daemon = with_policy("pro", YES_AND_DENY_DELETE, "");
    let client = within(Client::connect(&daemon.socket())).await.unwrap();
    let hello = within(client.hello("e2e/1")).await.unwrap();
    assert_eq!(hello.protocol, 1);
    within(client.start_session(&session("a"))).await.unwrap();

    let yes = within(client.evaluate(&event("a", "p1", "yes_no", "Continue? [y/n]")))
        .await
        .unwrap();
    assert_eq!(yes.decision(), DecisionAction::AutoReply, "{yes:?}");
    assert_eq!(yes.reply_value, "y");
    let human = within(client.evaluate(&event("a", "p2", "free_text", "Which branch?")))
        .await
        .unwrap();
    assert_eq!(human.decision(), DecisionAction::RequireHuman);
    let recorded = within(client.record(&human_reply("a", "p2", "main")))
        .await
        .unwrap();
    assert_eq!(recorded.seq, Some(2));

    // Many calls at once on one connection: each gets its own answer.
    let events: Vec<_> = (0..16)
        .map(|i| event("a", &format!("many-{i}"), "yes_no", "delete it? [y/n]"))
        .collect();
    let answers = within(futures_util::future::join_all(
        events.iter().map(|e| client.evaluate(e)),
    ))
    .await;
    let mut seqs: Vec<u64> = answers
        .into_iter()
        .map(|answer| {
            let answer = answer.unwrap();
            assert_eq!(answer.decision(), DecisionAction::Deny);
            answer.seq.unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (3..19).collect::<Vec<_>>(), "one entry each");

    let status = within(client.status()).await.unwrap();
    assert_eq!(status.trace.chain.entries, 19);
    assert_eq!(status.sessions, 1);
    let ended = within(client.end_session("a")).await.unwrap();
    assert_eq!(ended.tool_id.as_deref(), Some("claude_code"));
}

#[tokio::test]
async fn daemon_errors_come_back_typed_with_their_code_in_both_clients() {
    // A policy that does not load: every decision is -32001, which agents treat as deny.
    let daemon = with_policy("pro", "policy_version: 1\n", "");
    let decision = event("s", "p", "yes_no", "Continue? [y/n]");

    let mut blocking = blocking_client(&daemon);
    let error = blocking.evaluate(&decision).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NoActivePolicy), "{error:?}");
    assert!(error.is_deny());
    let rpc = error.rpc().unwrap();
    assert_eq!(rpc.code.code(), -32001);
    assert!(rpc.message.contains("no active policy"), "{}", rpc.message);

    let client = within(Client::connect(&daemon.socket())).await.unwrap();
    let error = within(client.evaluate(&decision)).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NoActivePolicy), "{error:?}");
    assert!(error.is_deny());

    // Another code, with its data: a session that is not live.
    for error in [
        blocking.end_session("nobody").unwrap_err(),
        within(client.end_session("nobody")).await.unwrap_err(),
    ] {
        let ClientError::Rpc(rpc) = &error else {
            panic!("not a daemon error: {error:?}");
        };
        assert_eq!(rpc.code, ErrorCode::InvalidParams);
        assert_eq!(rpc.data.as_ref().unwrap()["field"], "session_id");
        assert!(!error.is_deny());
    }

    // The connection is still good after an error.
    assert_eq!(blocking.status().unwrap().pid, daemon.pid());
    assert_eq!(within(client.status()).await.unwrap().pid, daemon.pid());
}

#[test]
fn a_blocking_subscription_replays_then_follows_in_order_and_surfaces_its_end() {
    let mut daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let mut writer = daemon.conn();
    for i in 0..3 {
        writer.ok("decision.record", raw_record(&format!("before-{i}")));
    }
    let mut entries = blocking_client(&daemon).subscribe(Some(1)).unwrap();
    entries.set_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(entries.started().from_seq, 1);
    assert_eq!(entries.started().head.as_ref().map(|h| h.seq), Some(2));
    for i in 0..3 {
        writer.ok("decision.record", raw_record(&format!("after-{i}")));
    }
    let got: Vec<(u64, String)> = entries
        .by_ref()
        .take(5)
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.seq, entry.prompt_id)
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "before-1".to_owned()),
            (2, "before-2".to_owned()),
            (3, "after-0".to_owned()),
            (4, "after-1".to_owned()),
            (5, "after-2".to_owned()),
        ]
    );

    daemon.stop();
    match entries.next() {
        Some(Err(ClientError::SubscriptionEnded(ended))) => {
            assert_eq!(ended.reason, "shutdown");
            assert_eq!(ended.last_seq, Some(5));
            assert_eq!(ended.resume_from(), Some(6));
        }
        other => panic!("expected the end of the subscription, got {other:?}"),
    }
    assert!(entries.next().is_none(), "nothing after the end");
    assert!(entries.is_finished());
}

#[tokio::test]
async fn an_async_subscription_streams_entries_while_calls_go_on_and_surfaces_its_end() {
    let mut daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let client = within(Client::connect(&daemon.socket())).await.unwrap();
    let mut entries = within(client.subscribe(None)).await.unwrap();
    assert_eq!(entries.started().from_seq, 0);
    assert!(matches!(
        within(client.subscribe(None)).await,
        Err(ClientError::AlreadySubscribed)
    ));

    // The same connection records while it is subscribed.
    for i in 0..3 {
        let recorded = within(client.record(&RecordParams {
            session_id: "s".into(),
            prompt_id: format!("p{i}"),
            prompt_type: "yes_no".into(),
            action_taken: "auto_reply".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
        assert_eq!(recorded.seq, Some(i));
    }
    for i in 0..3 {
        let entry = within(entries.next()).await.unwrap().unwrap();
        assert_eq!((entry.seq, entry.prompt_id), (i, format!("p{i}")));
        assert_eq!(entry.session_id, "s");
    }

    daemon.stop();
    match within(entries.recv()).await {
        Some(Err(ClientError::SubscriptionEnded(ended))) => {
            assert_eq!(
                (ended.reason.as_str(), ended.last_seq),
                ("shutdown", Some(2))
            );
        }
        other => panic!("expected the end of the subscription, got {other:?}"),
    }
    assert!(within(entries.next()).await.is_none());
    assert!(matches!(
        within(client.status()).await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn an_async_subscription_keeps_its_connection_when_the_client_is_dropped() {
    let daemon = TestDaemon::start_with(Options::default().edition("pro"));
    let mut entries = within(async {
        let client = Client::connect(&daemon.socket()).await.unwrap();
        client.subscribe(Some(0)).await.unwrap()
    })
    .await;
    daemon
        .conn()
        .ok("decision.record", raw_record("after-drop"));
    let entry = within(entries.recv()).await.unwrap().unwrap();
    assert_eq!((entry.seq, entry.prompt_id.as_str()), (0, "after-drop"));
}
