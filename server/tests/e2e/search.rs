//! The people's reading API on the real server, over what hand-written runtimes streamed:
//! the registry, decisions with every filter and the keyset cursor, sessions, audit events and
//! the hourly risk counts.

use std::collections::BTreeMap;

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_protocol::trace::GENESIS_PREV_HASH;
use serde_json::{Value, json};

use crate::support::api::{Api, Session, segment};
use crate::support::runtime::{FakeRuntime, seal_chain};
use crate::support::{ServerOptions, TestDb, TestServer};

const PASSWORD: &str = "correct horse battery staple";
const ACTIONS: [&str; 3] = ["auto_reply", "deny", "require_human"];
const RISKS: [&str; 5] = ["none", "low", "medium", "high", "critical"];

/// What the test expects of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    at: String,
    runtime_id: String,
    seq: u64,
    session: String,
    agent: String,
    action: String,
    risk: String,
}

fn time(minutes: u64) -> String {
    format!(
        "2026-11-27T{:02}:{:02}:00.000000Z",
        3 + minutes / 60,
        minutes % 60
    )
}

/// Decisions of one runtime at the given minutes after 03:00.
fn decisions(runtime_id: &str, minutes: &[u64], offset: usize) -> (Vec<Value>, Vec<Expected>) {
    let mut bodies = Vec::new();
    let mut expected = Vec::new();
    for (i, minute) in minutes.iter().enumerate() {
        let k = i + offset;
        let e = Expected {
            at: time(*minute),
            runtime_id: runtime_id.to_owned(),
            seq: i as u64,
            session: format!("s{}", k % 3),
            agent: format!("a{}", k % 2),
            action: ACTIONS[(k / 2) % 3].to_owned(),
            risk: RISKS[k % 5].to_owned(),
        };
        bodies.push(json!({
            "trace_version": 2, "timestamp": e.at, "session_id": e.session, "agent_id": e.agent,
            "prompt_id": format!("p{k}"), "prompt_type": "yes_no", "policy_action": e.action,
            "action_taken": e.action, "risk_level": e.risk, "risk_reasons": [], "replay_safe": false,
        }));
        expected.push(e);
    }
    (seal_chain(0, GENESIS_PREV_HASH, bodies), expected)
}

/// Which decisions a query should find.
type Selects<'a> = Box<dyn Fn(&Expected) -> bool + 'a>;

/// Newest first, ties by runtime then seq, descending: the API's order.
fn ordered(mut all: Vec<Expected>) -> Vec<Expected> {
    all.sort_by(|a, b| (&b.at, &b.runtime_id, b.seq).cmp(&(&a.at, &a.runtime_id, a.seq)));
    all
}

/// Every page of `path` (which has a query already), `limit` at a time: (runtime, seq) pairs.
async fn all_pages(api: &Api, session: &Session, path: &str, list: &str) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.to_owned(),
        };
        let page = api.get(&url, session.bearer()).await;
        assert_eq!(page.status, 200, "{url}: {:?}", page.body);
        for row in page.body[list].as_array().unwrap() {
            found.push((
                row["runtime_id"].as_str().unwrap().to_owned(),
                row["seq"].as_u64().unwrap(),
            ));
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return found,
        }
    }
    panic!("paging did not end");
}

fn keys(expected: &[Expected]) -> Vec<(String, u64)> {
    expected
        .iter()
        .map(|e| (e.runtime_id.clone(), e.seq))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_sessions_audit_events_and_risk_are_searched_with_stable_cursors() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let key = server.org_with_key("org-a");
    server.user("org-a", "viewer@example.com", "viewer", PASSWORD);
    let api = Api::new(&server);
    let viewer = api.login("org-a", "viewer@example.com", PASSWORD).await;

    let mut one = FakeRuntime::connect(&server, "org-a", &key).await;
    let mut two = FakeRuntime::connect(&server, "org-a", &key).await;
    // One: every 5 minutes over two hours, two decisions sharing a time. Two: interleaved, one
    // at the same time as one of One's (the tie is broken by runtime, then seq).
    let mut minutes_one: Vec<u64> = (0..24).map(|i| i * 5).collect();
    minutes_one[11] = minutes_one[10];
    let minutes_two: Vec<u64> = vec![1, 7, 12, 25, 25, 33, 50, 61, 88, 100];
    let (entries_one, expected_one) = decisions(&one.runtime_id, &minutes_one, 0);
    let (entries_two, expected_two) = decisions(&two.runtime_id, &minutes_two, 24);
    one.send_batch(Stream::Trace, &entries_one).await;
    assert_eq!(one.ack_through(Stream::Trace).await, 23);
    two.send_batch(Stream::Trace, &entries_two).await;
    assert_eq!(two.ack_through(Stream::Trace).await, 9);
    let all = ordered(expected_one.iter().chain(&expected_two).cloned().collect());

    // Every page, 7 at a time: all decisions once, in order.
    let found = all_pages(&api, &viewer, "/v1/decisions?limit=7", "decisions").await;
    assert_eq!(found, keys(&all));

    // Each filter, and combinations, paged 3 at a time.
    let r1 = segment(&one.runtime_id);
    let r2 = segment(&two.runtime_id);
    let (id_one, id_two) = (one.runtime_id.clone(), two.runtime_id.clone());
    let cases: Vec<(String, Selects<'_>)> = vec![
        (
            format!("runtime_id={r1}"),
            Box::new(|e| e.runtime_id == id_one),
        ),
        ("session_id=s1".into(), Box::new(|e| e.session == "s1")),
        ("agent_id=a0".into(), Box::new(|e| e.agent == "a0")),
        ("action=deny".into(), Box::new(|e| e.action == "deny")),
        (
            "risk=high,critical".into(),
            Box::new(|e| e.risk == "high" || e.risk == "critical"),
        ),
        (
            format!("from={}&to={}", time(25), time(61)),
            Box::new(|e| e.at >= time(25) && e.at < time(61)),
        ),
        (
            format!("runtime_id={r2}&risk=low,none&agent_id=a1"),
            Box::new(|e| {
                e.runtime_id == id_two && (e.risk == "low" || e.risk == "none") && e.agent == "a1"
            }),
        ),
        (
            format!(
                "session_id=s2&action=auto_reply,require_human&from={}",
                time(20)
            ),
            Box::new(|e| e.session == "s2" && e.action != "deny" && e.at >= time(20)),
        ),
    ];
    for (query, keep) in &cases {
        let expected: Vec<Expected> = all.iter().filter(|e| keep(e)).cloned().collect();
        assert!(!expected.is_empty(), "{query} selects something");
        let found = all_pages(
            &api,
            &viewer,
            &format!("/v1/decisions?limit=3&{query}"),
            "decisions",
        )
        .await;
        assert_eq!(found, keys(&expected), "{query}");
    }
    drop(cases);

    // A decision carries its searchable fields and the entry as received.
    let page = api.get("/v1/decisions?limit=1", viewer.bearer()).await;
    let first = &page.body["decisions"][0];
    let newest = &all[0];
    assert_eq!(first["occurred_at"], newest.at.as_str());
    assert_eq!(first["action"], newest.action.as_str());
    assert_eq!(first["risk"], newest.risk.as_str());
    assert_eq!(first["hash_ok"], true);
    assert_eq!(
        first["entry"]["prompt_id"].as_str().unwrap().chars().next(),
        Some('p')
    );
    for bad in [
        "cursor=garbage",
        "from=yesterday",
        "risk=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q",
    ] {
        api.get(&format!("/v1/decisions?{bad}"), viewer.bearer())
            .await
            .assert_error(400, "BAD_REQUEST");
    }
    // A cursor of one list is not one of another.
    let runtimes_page = api.get("/v1/runtimes?limit=1", viewer.bearer()).await;
    let runtimes_cursor = runtimes_page.body["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    api.get(
        &format!("/v1/decisions?cursor={runtimes_cursor}"),
        viewer.bearer(),
    )
    .await
    .assert_error(400, "BAD_REQUEST");

    // Sessions: aggregated per (runtime, session), most recently active first.
    let mut groups: BTreeMap<(String, String), Vec<&Expected>> = BTreeMap::new();
    for e in &all {
        groups
            .entry((e.runtime_id.clone(), e.session.clone()))
            .or_default()
            .push(e);
    }
    let found = {
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("/v1/sessions?limit=2&cursor={c}"),
                None => "/v1/sessions?limit=2".to_owned(),
            };
            let page = api.get(&url, viewer.bearer()).await;
            assert_eq!(page.status, 200, "{:?}", page.body);
            found.extend(page.body["sessions"].as_array().unwrap().iter().cloned());
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        found
    };
    assert_eq!(found.len(), groups.len());
    let lasts: Vec<String> = found
        .iter()
        .map(|s| s["last_at"].as_str().unwrap().to_owned())
        .collect();
    assert!(lasts.windows(2).all(|w| w[0] >= w[1]), "{lasts:?}");
    for session in &found {
        let key = (
            session["runtime_id"].as_str().unwrap().to_owned(),
            session["session_id"].as_str().unwrap().to_owned(),
        );
        let members = &groups[&key];
        assert_eq!(session["decisions"], members.len() as u64);
        assert_eq!(
            session["first_at"],
            members.iter().map(|e| &e.at).min().unwrap().as_str()
        );
        assert_eq!(
            session["last_at"],
            members.iter().map(|e| &e.at).max().unwrap().as_str()
        );
        for action in ACTIONS {
            let count = members.iter().filter(|e| e.action == action).count() as u64;
            assert_eq!(
                session["actions"]
                    .get(action)
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                count
            );
        }
        for risk in RISKS {
            let count = members.iter().filter(|e| e.risk == risk).count() as u64;
            assert_eq!(
                session["risks"]
                    .get(risk)
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                count
            );
        }
    }
    let one_session = api
        .get(&format!("/v1/runtimes/{r1}/sessions/s1"), viewer.bearer())
        .await;
    assert_eq!(one_session.status, 200, "{:?}", one_session.body);
    assert_eq!(
        one_session.body["decisions"],
        groups[&(one.runtime_id.clone(), "s1".to_owned())].len() as u64
    );
    api.get(&format!("/v1/runtimes/{r1}/sessions/s9"), viewer.bearer())
        .await
        .assert_error(404, "NOT_FOUND");
    let filtered = api
        .get(
            &format!("/v1/sessions?runtime_id={r2}&agent_id=a1"),
            viewer.bearer(),
        )
        .await;
    assert!(
        filtered.body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["runtime_id"] == two.runtime_id.as_str() && s["agent_id"] == "a1")
    );

    // Audit events.
    let audit_bodies: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "timestamp": time(i * 10),
                "event_type": if i % 2 == 0 { "daemon_started" } else { "policy_loaded" },
                "actor": "daemon", "details": {},
            })
        })
        .collect();
    let audit = seal_chain(0, GENESIS_PREV_HASH, audit_bodies);
    one.send_batch(Stream::Audit, &audit).await;
    assert_eq!(one.ack_through(Stream::Audit).await, 4);
    let events = api
        .get(
            "/v1/audit-events?event_type=policy_loaded&limit=1",
            viewer.bearer(),
        )
        .await;
    assert_eq!(events.status, 200, "{:?}", events.body);
    assert_eq!(events.body["events"][0]["seq"], 3);
    let found = all_pages(&api, &viewer, "/v1/audit-events?limit=2", "events").await;
    assert_eq!(
        found,
        (0..5)
            .rev()
            .map(|s| (one.runtime_id.clone(), s))
            .collect::<Vec<_>>()
    );
    let found = all_pages(
        &api,
        &viewer,
        &format!("/v1/audit-events?runtime_id={r2}"),
        "events",
    )
    .await;
    assert!(found.is_empty());

    // The heat map: per runtime and hour, per level.
    let heatmap = api
        .get(
            &format!("/v1/risk/hourly?from={}&to={}", time(0), time(180)),
            viewer.bearer(),
        )
        .await;
    assert_eq!(heatmap.status, 200, "{:?}", heatmap.body);
    let mut expected_hours: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    for e in &all {
        let hour = format!("{}:00:00.000000Z", &e.at[..13]);
        *expected_hours
            .entry((hour, e.runtime_id.clone()))
            .or_default()
            .entry(e.risk.clone())
            .or_default() += 1;
    }
    let rows = heatmap.body["hours"].as_array().unwrap();
    assert_eq!(rows.len(), expected_hours.len(), "{rows:?}");
    for row in rows {
        let counts = &expected_hours[&(
            row["hour"].as_str().unwrap().to_owned(),
            row["runtime_id"].as_str().unwrap().to_owned(),
        )];
        for risk in RISKS {
            assert_eq!(row[risk], counts.get(risk).copied().unwrap_or(0), "{row}");
        }
        assert_eq!(row["unclassified"], 0);
    }
    api.get(
        &format!("/v1/risk/hourly?from={}&to=2027-01-01T00:00:00Z", time(0)),
        viewer.bearer(),
    )
    .await
    .assert_error(400, "BAD_REQUEST");

    // The registry: both runtimes, their chains continuous, paged by runtime id.
    let listed = api.get("/v1/runtimes", viewer.bearer()).await;
    let runtimes = listed.body["runtimes"].as_array().unwrap();
    let mut ids: Vec<&str> = runtimes
        .iter()
        .map(|r| r["runtime_id"].as_str().unwrap())
        .collect();
    let mut want = vec![one.runtime_id.as_str(), two.runtime_id.as_str()];
    want.sort_unstable();
    ids.sort_unstable();
    assert_eq!(ids, want);
    let page_one = api.get("/v1/runtimes?limit=1", viewer.bearer()).await;
    let cursor = page_one.body["next_cursor"].as_str().unwrap();
    let page_two = api
        .get(
            &format!("/v1/runtimes?limit=1&cursor={cursor}"),
            viewer.bearer(),
        )
        .await;
    assert_eq!(page_two.body["runtimes"][0]["runtime_id"], want[1]);
    assert!(page_two.body["next_cursor"].is_null());
    let detail = api
        .get(&format!("/v1/runtimes/{r1}"), viewer.bearer())
        .await;
    assert_eq!(detail.status, 200, "{:?}", detail.body);
    assert_eq!(detail.body["status"], "active");
    assert_eq!(detail.body["witness_status"], "ok");
    assert_eq!(detail.body["flags"], json!([]));
    let chains = api
        .get(&format!("/v1/runtimes/{r1}/chains"), viewer.bearer())
        .await;
    let chains = chains.body["chains"].as_array().unwrap().clone();
    assert_eq!(
        chains
            .iter()
            .map(|c| (
                c["stream"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["next_seq"].as_u64().unwrap()
            ))
            .collect::<Vec<_>>(),
        vec![("trace", "continuous", 24), ("audit", "continuous", 5)]
    );
    api.get("/v1/runtimes/ed25519:unknown", viewer.bearer())
        .await
        .assert_error(404, "NOT_FOUND");
    api.get("/v1/runtimes/ed25519:unknown/chains", viewer.bearer())
        .await
        .assert_error(404, "NOT_FOUND");
}
