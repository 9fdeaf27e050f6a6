//! The policy registry end to end: real `atlasbridged` daemons take what the server distributes
//! (signed, hash verified by them) and decide with it; a daemon that connects later gets it in
//! its welcome; an invalid upload changes nothing; another organisation's runtimes never see it.
//! Then the registry for people (roles, validation, diff, test events, archive), version numbers
//! under concurrent uploads, distribution across replicas, and the runtimes' own calls.

use std::path::Path;

use atlasbridge_protocol::cloud::messages::{PolicyRef, kind};
use atlasbridge_protocol::cloud::rest::{PolicyUpload, PolicyVersion};
use atlasbridge_protocol::policy::load_str;
use atlasbridge_protocol::trace::checkpoint::decode_public_key;
use serde_json::{Value, json};

use crate::support::api::{Api, Session, segment};
use crate::support::daemon::{POLICY, TestDaemon};
use crate::support::runtime::{FakeRuntime, id_of, identity, token};
use crate::support::{DEADLINE, ServerOptions, TestDb, TestServer, eventually};

const PASSWORD: &str = "correct horse battery staple";

/// The hash the runtimes' loader gives `yaml`.
fn hash_of(yaml: &str) -> String {
    load_str(yaml, Path::new("test.yaml"))
        .expect("a valid policy")
        .hash
}

/// A policy of `name` whose one rule answers yes/no prompts with `reply`.
fn policy_named(name: &str, reply: &str) -> String {
    format!(
        "policy_version: \"1\"\nname: {name}\nautonomy_mode: full\nrules:\n  - id: yes\n    match:\n      prompt_type: [yes_no]\n    action:\n      type: auto_reply\n      value: \"{reply}\"\n"
    )
}

/// A policy with three problems, on lines 6, 7 and 9.
const INVALID: &str = "policy_version: \"1\"\nname: server-e2e\nrules:\n  - id: yes\n    match:\n      prompt_type: [maybe]\n    action: {type: auto_reply}\n    # the value is missing, and a key is unknown:\nbogus: 1\n";

/// Uploads `yaml` as a new version of `name`: (status, body).
async fn upload(api: &Api, person: &Session, name: &str, yaml: &str) -> (u16, Value) {
    let answer = api
        .post(
            &format!("/v1/policies/{}/versions", segment(name)),
            person.bearer(),
            json!({"yaml": yaml}),
        )
        .await;
    (answer.status, answer.body)
}

/// Distributes version `version` of `name` to every runtime.
async fn distribute_to_all(api: &Api, person: &Session, name: &str, version: &str) -> Value {
    let answer = api
        .post(
            &format!("/v1/policies/{}/distributions", segment(name)),
            person.bearer(),
            json!({"version": version, "all_runtimes": true}),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    answer.body
}

/// The trace entry of a daemon at `seq`.
fn trace_entry(daemon: &TestDaemon, seq: u64) -> Value {
    let page = daemon
        .conn()
        .call("trace.read", json!({"from_seq": seq, "limit": 1}))
        .expect("trace.read");
    page["entries"][0].clone()
}

/// Waits until `daemon` runs the policy of hash `hash` and has audited applying it (the audit
/// event follows the switch).
async fn runs(daemon: &TestDaemon, hash: &str) {
    eventually("the daemon applies the distributed policy", || {
        let active = daemon.policy_status()["policy_hash"].clone();
        let applied = daemon
            .audit_event_types()
            .iter()
            .any(|e| e == "cloud_policy_applied");
        async move { active == hash && applied }
    })
    .await;
}

/// The next message of a hand-written runtime that is an offer.
async fn next_offer(runtime: &mut FakeRuntime) -> PolicyRef {
    loop {
        let envelope = runtime.recv().await;
        if envelope.kind == kind::POLICY_UPDATE_AVAILABLE {
            return envelope.payload_as().expect("an offer");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_policy_reaches_every_daemon_of_its_org_signed_and_decides_their_next_prompts()
 {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let api = Api::new(&server);
    let key_a = server.org_with_key("org-a");
    let key_b = server.org_with_key("org-b");
    server.user("org-a", "op-a@example.com", "operator", PASSWORD);
    server.user("org-b", "op-b@example.com", "operator", PASSWORD);
    let operator_a = api.login("org-a", "op-a@example.com", PASSWORD).await;
    let operator_b = api.login("org-b", "op-b@example.com", PASSWORD).await;

    // Two daemons on the built-in default (assist mode: a person decides everything), and a
    // runtime of the other organisation.
    let first = TestDaemon::start_following_the_cloud(&server, "org-a", &key_a);
    let second = TestDaemon::start_following_the_cloud(&server, "org-a", &key_a);
    let mut other_org = FakeRuntime::connect(&server, "org-b", &key_b).await;
    assert_eq!(other_org.welcome.policy, None);
    let builtin = first.policy_status()["policy_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    for daemon in [&first, &second] {
        let answer = daemon.decide_one("before", "p0");
        assert_eq!(answer["action"], "require_human", "{answer}");
        assert_eq!(answer["policy_hash"], builtin.as_str());
    }
    // Both are connected (registered) before the distribution, so they hear it as an offer.
    for daemon in [&first, &second] {
        let id = daemon.runtime_id();
        eventually("the daemon is registered", || {
            let (db, id) = (&db, id.clone());
            async move { db.runtime("org-a", &id, 30).await.is_some() }
        })
        .await;
    }

    // Upload: numbered 1, hashed exactly as the runtimes' loader hashes it.
    let hash = hash_of(POLICY);
    let (status, uploaded) = upload(&api, &operator_a, "server-e2e", POLICY).await;
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(
        uploaded,
        json!({"name": "server-e2e", "version": "1", "content_hash": hash})
    );

    // An invalid upload: every problem with its line, column and field; nothing changes.
    let refused = api
        .post(
            "/v1/policies/server-e2e/versions",
            operator_a.bearer(),
            json!({"yaml": INVALID}),
        )
        .await;
    refused.assert_error(422, "INVALID_POLICY");
    let problems = refused.body["details"]["errors"]
        .as_array()
        .unwrap()
        .clone();
    let lines: Vec<u64> = problems
        .iter()
        .map(|p| p["line"].as_u64().unwrap())
        .collect();
    assert!(
        lines.contains(&6) && lines.contains(&7) && lines.contains(&9),
        "{problems:?}"
    );
    for problem in &problems {
        assert!(problem["column"].as_u64().unwrap() > 0, "{problem}");
        assert!(
            problem["field"].as_str().is_some_and(|f| !f.is_empty()),
            "{problem}"
        );
        assert!(problem["message"].is_string(), "{problem}");
    }
    let detail = api
        .get("/v1/policies/server-e2e", operator_a.bearer())
        .await;
    assert_eq!(detail.body["latest_version"], "1");
    assert_eq!(detail.body["versions"].as_array().unwrap().len(), 1);

    // Distribute to all: both daemons verify the server's signature and the hash, apply it,
    // and decide their next prompts with it.
    let distribution = distribute_to_all(&api, &operator_a, "server-e2e", "1").await;
    assert_eq!(distribution["content_hash"], hash.as_str());
    assert_eq!(distribution["target"], "all");
    for daemon in [&first, &second] {
        runs(daemon, &hash).await;
        let answer = daemon.decide_one("after", "p1");
        assert_eq!(answer["action"], "auto_reply", "{answer}");
        assert_eq!(answer["reply_value"], "y");
        assert_eq!(answer["matched_rule"], "yes");
        assert_eq!(answer["policy_hash"], hash.as_str());
        // The trace records the distributed policy's hash for this decision …
        let entry = trace_entry(daemon, answer["seq"].as_u64().unwrap());
        assert_eq!(entry["policy_hash"], hash.as_str(), "{entry}");
        assert_eq!(entry["entry_id"], answer["entry_id"]);
        // … the daemon checked what it applied (its audit log says so, and nothing was refused) …
        let events = daemon.audit_event_types();
        assert!(
            events.iter().any(|e| e == "cloud_policy_offered"),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| e == "cloud_policy_applied"),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| e == "cloud_policy_rejected"),
            "{events:?}"
        );
        // … and the server holds that decision with that hash.
        let runtime_id = daemon.runtime_id();
        let entry_id = answer["entry_id"].clone();
        eventually("the server holds the decision", || {
            let (api, operator_a, runtime_id, entry_id) =
                (&api, &operator_a, runtime_id.clone(), entry_id.clone());
            async move {
                let found = api
                    .get(
                        &format!("/v1/decisions?runtime_id={}", segment(&runtime_id)),
                        operator_a.bearer(),
                    )
                    .await;
                found.body["decisions"]
                    .as_array()
                    .is_some_and(|list| list.iter().any(|d| d["entry_id"] == entry_id))
            }
        })
        .await;
        let found = api
            .get(
                &format!("/v1/decisions?runtime_id={}", segment(&runtime_id)),
                operator_a.bearer(),
            )
            .await;
        let decision = found.body["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["entry_id"] == answer["entry_id"])
            .unwrap()
            .clone();
        assert_eq!(decision["action"], "auto_reply");
        assert_eq!(decision["entry"]["policy_hash"], hash.as_str());
        assert_eq!(decision["hash_ok"], true);
    }

    // A daemon that connects after the distribution gets it in its welcome.
    let late = TestDaemon::start_following_the_cloud(&server, "org-a", &key_a);
    runs(&late, &hash).await;
    let answer = late.decide_one("late", "p0");
    assert_eq!(answer["action"], "auto_reply", "{answer}");
    assert_eq!(answer["policy_hash"], hash.as_str());

    // Which runtimes run what: all three run what was distributed to them.
    let ids: Vec<String> = [&first, &second, &late]
        .iter()
        .map(|d| d.runtime_id())
        .collect();
    eventually("every runtime reports the distributed policy", || {
        let (api, operator_a) = (&api, &operator_a);
        async move {
            let list = api.get("/v1/runtime-policies", operator_a.bearer()).await;
            let runtimes = list.body["runtimes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            runtimes.len() == 3 && runtimes.iter().all(|r| r["in_sync"] == true)
        }
    })
    .await;
    for id in &ids {
        let one = api
            .get(
                &format!("/v1/runtimes/{}/policy", segment(id)),
                operator_a.bearer(),
            )
            .await;
        assert_eq!(one.status, 200, "{:?}", one.body);
        assert_eq!(one.body["distributed"]["version"], "1");
        assert_eq!(one.body["loaded"]["policy_hash"], hash.as_str());
        assert_eq!(
            one.body["loaded"]["registry"],
            json!([{"name": "server-e2e", "version": "1"}])
        );
    }

    // The other organisation saw nothing of it: its runtime's next message is its own
    // organisation's distribution, and A's policy does not exist for it.
    let b_policy = policy_named("org-b-policy", "n");
    let (status, _) = upload(&api, &operator_b, "org-b-policy", &b_policy).await;
    assert_eq!(status, 201);
    distribute_to_all(&api, &operator_b, "org-b-policy", "1").await;
    let offer = next_offer(&mut other_org).await;
    assert_eq!(
        offer,
        PolicyRef {
            name: "org-b-policy".into(),
            version: "1".into(),
            content_hash: hash_of(&b_policy),
        }
    );
    let b_token = token(&server, "org-b", &key_b, &other_org.runtime_id).await;
    let http = reqwest::Client::new();
    for path in [
        "/v1/policies/server-e2e",
        "/v1/policies/server-e2e/versions/1",
    ] {
        let response = http
            .get(server.http_url(path))
            .bearer_auth(&b_token)
            .timeout(DEADLINE)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let b_view = api.get("/v1/runtime-policies", operator_b.bearer()).await;
    let text = b_view.body.to_string();
    assert!(!text.contains(&hash), "{text}");
    for id in &ids {
        assert!(!text.contains(id.as_str()), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_pushes_and_pulls_through_the_registry_and_reports_its_pins() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let api = Api::new(&server);
    let key = server.org_with_key("org-a");
    server.user("org-a", "viewer@example.com", "viewer", PASSWORD);
    let viewer = api.login("org-a", "viewer@example.com", PASSWORD).await;
    let daemon = TestDaemon::start(&server, "org-a", &key);
    let runtime_id = daemon.runtime_id();
    daemon.wait_connected();

    // `cloud policy push`: an upload by this runtime, signed by its identity key.
    let pushed = policy_named("pushed", "y");
    let result = daemon
        .conn()
        .call("cloud.policy_push", json!({"yaml": pushed}))
        .expect("the push succeeds");
    assert_eq!(
        result,
        json!({"name": "pushed", "version": "1", "content_hash": hash_of(&pushed)})
    );
    let versions = api
        .get("/v1/policies/pushed/versions", viewer.bearer())
        .await;
    assert_eq!(
        versions.body["versions"][0]["uploaded_by"],
        json!({"kind": "runtime", "id": runtime_id})
    );
    let policy = api.get("/v1/policies/pushed", viewer.bearer()).await;
    assert_eq!(
        policy.body["created_by"],
        json!({"kind": "runtime", "id": runtime_id})
    );
    // Pushing the same content again adds nothing.
    let again = daemon
        .conn()
        .call("cloud.policy_push", json!({"yaml": pushed}))
        .expect("the push succeeds");
    assert_eq!(again["version"], "1");

    // `cloud policy pull`: the latest version, its signature checked by the daemon.
    let pulled = daemon
        .conn()
        .call("cloud.policy_pull", json!({"name": "pushed"}))
        .expect("the pull succeeds");
    assert_eq!(pulled["version"], "1");
    assert_eq!(pulled["signature_checked"], true);
    assert_eq!(pulled["yaml"], pushed.as_str());

    // A local pin is reported to the server, with the loaded policy, and the dashboard hears it.
    let mut live = crate::live::subscribe(&server, &viewer.token).await;
    let loaded = daemon.policy_status()["policy_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    daemon
        .conn()
        .call(
            "policy.pin",
            json!({"scope": "agent", "id": "claude", "policy_hash": loaded}),
        )
        .expect("the pin is made");
    loop {
        let event = crate::live::next_of(&mut live, "runtime_policy").await["payload"].clone();
        assert_eq!(event["runtime_id"], runtime_id.as_str(), "{event}");
        assert_eq!(event["policy_hash"], loaded.as_str(), "{event}");
        if event["pins"] == 1 {
            break;
        }
    }
    let one = api
        .get(
            &format!("/v1/runtimes/{}/policy", segment(&runtime_id)),
            viewer.bearer(),
        )
        .await;
    assert_eq!(one.body["pins"][0]["scope"], "agent");
    assert_eq!(one.body["pins"][0]["id"], "claude");
    assert_eq!(one.body["pins"][0]["policy_hash"], loaded.as_str());
    assert_eq!(one.body["loaded"]["policy_hash"], loaded.as_str());
    assert_eq!(one.body["loaded"]["name"], "server-e2e");
    // Nothing was distributed to it, so nothing to be in sync with.
    assert_eq!(one.body["distributed"], Value::Null);
    assert_eq!(one.body["in_sync"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_numbered_without_gaps_or_reuse_under_concurrent_uploads() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let server = TestServer::start(
        &db,
        ServerOptions {
            pool_size: 16,
            // The uploads queue on the policy's row lock, each holding a pooled connection: on a
            // loaded machine a 2-second wait for one sheds some with 503, which is the server
            // doing its job, not what this test is about.
            pool_wait_ms: 30_000,
            ..ServerOptions::default()
        },
    );
    let api = Api::new(&server);
    server.org_with_key("org-a");
    server.user("org-a", "op@example.com", "operator", PASSWORD);
    let operator = api.login("org-a", "op@example.com", PASSWORD).await;

    const UPLOADS: usize = 24;
    let mut tasks = Vec::new();
    for i in 0..UPLOADS {
        let (api, operator) = (api.clone(), operator.clone());
        tasks.push(tokio::spawn(async move {
            let yaml = policy_named("raced", &format!("reply-{i}"));
            let (status, body) = upload(&api, &operator, "raced", &yaml).await;
            assert_eq!(status, 201, "{body}");
            (body["version"].as_str().unwrap().to_owned(), hash_of(&yaml))
        }));
    }
    let mut numbers = Vec::new();
    let mut by_version = std::collections::HashMap::new();
    for task in tasks {
        let (version, hash) = task.await.unwrap();
        numbers.push(version.parse::<usize>().unwrap());
        by_version.insert(version, hash);
    }
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=UPLOADS).collect::<Vec<_>>(),
        "no gaps, no doubles"
    );
    // Each number holds the content that was given it, signed by the server.
    let server_key = decode_public_key(&server.public_key()).unwrap();
    for (version, hash) in &by_version {
        let answer = api
            .get(
                &format!("/v1/policies/raced/versions/{version}"),
                operator.bearer(),
            )
            .await;
        let signed: PolicyVersion = serde_json::from_value(answer.body).unwrap();
        assert_eq!(&signed.content_hash, hash);
        assert_eq!(&hash_of(&signed.yaml), hash);
        assert!(signed.signature_verifies(&server_key), "{version}");
    }
    // Paged newest first, the cursor walking down to 1.
    let mut seen = Vec::new();
    let mut path = "/v1/policies/raced/versions?limit=10".to_owned();
    loop {
        let page = api.get(&path, operator.bearer()).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        for v in page.body["versions"].as_array().unwrap() {
            seen.push(v["version"].as_str().unwrap().parse::<usize>().unwrap());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/policies/raced/versions?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, (1..=UPLOADS).rev().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_read_validate_diff_and_test_and_operators_change_the_registry() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let api = Api::new(&server);
    server.org_with_key("org-a");
    server.user("org-a", "viewer@example.com", "viewer", PASSWORD);
    server.user("org-a", "op@example.com", "operator", PASSWORD);
    let viewer = api.login("org-a", "viewer@example.com", PASSWORD).await;
    let operator = api.login("org-a", "op@example.com", PASSWORD).await;
    // The dashboard hears every change to the registry, and only changes.
    let mut live = crate::live::subscribe(&server, &viewer.token).await;
    let v1 = POLICY.to_owned();
    let v2 = POLICY.replace("value: \"y\"", "value: \"yes\"").replace(
        "rules:\n",
        "rules:\n  - id: no-rm\n    match: {contains: \"rm -rf\"}\n    action: {type: deny, reason: destructive}\n",
    );

    // Viewers read; writing needs an operator.
    let refused = api
        .post(
            "/v1/policies",
            viewer.bearer(),
            json!({"name": "server-e2e"}),
        )
        .await;
    refused.assert_error(403, "FORBIDDEN");
    assert_eq!(refused.body["details"]["required_role"], "operator");
    let (status, _) = upload(&api, &viewer, "server-e2e", &v1).await;
    assert_eq!(status, 403);
    let created = api
        .post(
            "/v1/policies",
            operator.bearer(),
            json!({"name": "server-e2e", "description": "the test policy", "yaml": v1}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["latest_version"], "1");
    assert_eq!(created.body["latest_content_hash"], hash_of(&v1).as_str());
    api.post(
        "/v1/policies",
        operator.bearer(),
        json!({"name": "server-e2e"}),
    )
    .await
    .assert_error(409, "POLICY_EXISTS");
    // A version's name must be its policy's; marked where it is written.
    let renamed = v1.replace("name: server-e2e", "name: other");
    let answer = api
        .post(
            "/v1/policies/server-e2e/versions",
            operator.bearer(),
            json!({"yaml": renamed}),
        )
        .await;
    answer.assert_error(422, "INVALID_POLICY");
    assert_eq!(
        answer.body["details"]["errors"],
        json!([{"line": 2, "column": 7, "field": "name",
                "message": "the policy is named 'other' but is a version of 'server-e2e': a version's name must be its policy's"}])
    );
    // `extends` would read the server's files: refused at its line, nothing read.
    let extending = format!("{v1}extends: /etc/passwd\n");
    let answer = api
        .post(
            "/v1/policies/server-e2e/versions",
            operator.bearer(),
            json!({"yaml": extending}),
        )
        .await;
    answer.assert_error(422, "INVALID_POLICY");
    assert_eq!(answer.body["details"]["errors"][0]["field"], "extends");
    assert!(!answer.body.to_string().contains("root:"));
    // A content hash the person validated must match.
    let answer = api
        .post(
            "/v1/policies/server-e2e/versions",
            operator.bearer(),
            json!({"yaml": v2, "content_hash": hash_of(&v1)}),
        )
        .await;
    answer.assert_error(400, "CONTENT_HASH_MISMATCH");
    let (status, body) = upload(&api, &operator, "server-e2e", &v2).await;
    assert_eq!((status, body["version"].clone()), (201, json!("2")));
    // The newest content again: nothing new.
    let (status, body) = upload(&api, &operator, "server-e2e", &v2).await;
    assert_eq!((status, body["version"].clone()), (200, json!("2")));

    // Validation without storing: the editor's live check, for viewers too.
    let verdict = api
        .post(
            "/v1/policy-validation",
            viewer.bearer(),
            json!({"yaml": INVALID}),
        )
        .await;
    assert_eq!(verdict.status, 200);
    assert_eq!(verdict.body["valid"], false);
    assert!(verdict.body["errors"].as_array().unwrap().len() >= 3);
    let verdict = api
        .post(
            "/v1/policy-validation",
            viewer.bearer(),
            json!({"yaml": v2, "name": "server-e2e"}),
        )
        .await;
    assert_eq!(
        (
            verdict.body["valid"].clone(),
            verdict.body["rules"].clone(),
            verdict.body["content_hash"].clone()
        ),
        (json!(true), json!(2), json!(hash_of(&v2)))
    );
    let list = api.get("/v1/policies", viewer.bearer()).await;
    assert_eq!(
        list.body["policies"].as_array().unwrap().len(),
        1,
        "validation stored nothing"
    );

    // The structural diff between two versions.
    let diff = api
        .get("/v1/policies/server-e2e/diff?from=1&to=2", viewer.bearer())
        .await;
    assert_eq!(diff.status, 200, "{:?}", diff.body);
    assert_eq!(diff.body["equal"], false);
    assert_eq!(diff.body["from"]["content_hash"], hash_of(&v1).as_str());
    assert_eq!(diff.body["diff"]["added"][0]["id"], "no-rm");
    assert_eq!(diff.body["diff"]["changed"][0]["id"], "yes");
    assert_eq!(
        diff.body["diff"]["changed"][0]["changes"][0]["field"],
        "action.value"
    );
    let same = api
        .get("/v1/policies/server-e2e/diff?from=2&to=2", viewer.bearer())
        .await;
    assert_eq!(same.body["equal"], true);
    api.get("/v1/policies/server-e2e/diff?from=1&to=9", viewer.bearer())
        .await
        .assert_error(404, "NOT_FOUND");

    // A test event against each version: the decision, the rule, the explanation, the risk.
    let tested = api
        .post(
            "/v1/policies/server-e2e/versions/2/test",
            viewer.bearer(),
            json!({"prompt_text": "Run rm -rf build? [y/n]"}),
        )
        .await;
    assert_eq!(tested.status, 200, "{:?}", tested.body);
    assert_eq!(tested.body["policy_action"], "deny");
    assert_eq!(tested.body["matched_rule"], "no-rm");
    assert_eq!(tested.body["explanation"], "rule no-rm matched");
    assert_eq!(tested.body["content_hash"], hash_of(&v2).as_str());
    assert_eq!(tested.body["rules"][0]["matched"], true);
    let tested = api
        .post(
            "/v1/policies/server-e2e/versions/1/test",
            viewer.bearer(),
            json!({"prompt_text": "Run rm -rf build? [y/n]"}),
        )
        .await;
    assert_eq!(tested.body["policy_action"], "auto_reply");
    assert_eq!(tested.body["reply_value"], "y");
    assert_eq!(tested.body["action_taken"], "auto_reply");
    assert_eq!(tested.body["risk_level"], "critical");
    let tested = api
        .post(
            "/v1/policies/server-e2e/versions/1/test",
            viewer.bearer(),
            json!({"prompt_text": "Which one?", "prompt_type": "free_text", "confidence": "low"}),
        )
        .await;
    assert_eq!(tested.body["matched_rule"], "");
    assert_eq!(tested.body["policy_action"], "require_human");
    api.post(
        "/v1/policies/server-e2e/versions/1/test",
        viewer.bearer(),
        json!({"prompt_text": "x", "prompt_type": "maybe"}),
    )
    .await
    .assert_error(400, "BAD_REQUEST");

    // Distributions need registered runtimes and an operator.
    let answer = api
        .post(
            "/v1/policies/server-e2e/distributions",
            operator.bearer(),
            json!({"version": "1", "runtime_ids": [id_of(&identity())]}),
        )
        .await;
    answer.assert_error(400, "UNKNOWN_RUNTIMES");
    api.post(
        "/v1/policies/server-e2e/distributions",
        operator.bearer(),
        json!({"version": "1", "all_runtimes": true, "runtime_ids": []}),
    )
    .await
    .assert_error(400, "BAD_REQUEST");
    api.post(
        "/v1/policies/server-e2e/distributions",
        viewer.bearer(),
        json!({"version": "1", "all_runtimes": true}),
    )
    .await
    .assert_error(403, "FORBIDDEN");
    api.post(
        "/v1/policies/server-e2e/distributions",
        operator.bearer(),
        json!({"version": "3", "all_runtimes": true}),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    distribute_to_all(&api, &operator, "server-e2e", "2").await;
    distribute_to_all(&api, &operator, "server-e2e", "1").await;
    let history = api
        .get("/v1/policies/server-e2e/distributions", viewer.bearer())
        .await;
    let versions: Vec<&str> = history.body["distributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2"], "newest first");

    // Archived: kept and readable, but no new versions or distributions.
    let archived = api
        .delete("/v1/policies/server-e2e", operator.bearer())
        .await;
    assert_eq!(archived.status, 200);
    assert!(archived.body["archived_at"].is_string());
    let again = api
        .delete("/v1/policies/server-e2e", operator.bearer())
        .await;
    assert_eq!(again.body["archived_at"], archived.body["archived_at"]);
    let (status, _) = upload(&api, &operator, "server-e2e", &v1).await;
    assert_eq!(status, 409);
    api.post(
        "/v1/policies/server-e2e/distributions",
        operator.bearer(),
        json!({"version": "1", "all_runtimes": true}),
    )
    .await
    .assert_error(409, "POLICY_ARCHIVED");
    assert_eq!(
        api.get("/v1/policies/server-e2e/versions/1", viewer.bearer())
            .await
            .status,
        200
    );
    let listed = api.get("/v1/policies", viewer.bearer()).await;
    assert_eq!(listed.body["policies"], json!([]));
    let listed = api
        .get("/v1/policies?include_archived=true", viewer.bearer())
        .await;
    assert_eq!(listed.body["policies"][0]["name"], "server-e2e");

    let operator_id = json!({"kind": "user", "id": operator.user_id});
    let mut heard = Vec::new();
    for _ in 0..6 {
        let event = crate::live::next_of(&mut live, "policy").await["payload"].clone();
        assert_eq!(event["name"], "server-e2e", "{event}");
        assert_eq!(event["by"], operator_id, "{event}");
        heard.push((
            event["change"].as_str().unwrap().to_owned(),
            event["version"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let expected = [
        ("created", ""),
        ("version_uploaded", "1"),
        ("version_uploaded", "2"),
        ("distributed", "2"),
        ("distributed", "1"),
        ("archived", ""),
    ];
    assert_eq!(
        heard,
        expected.map(|(c, v)| (c.to_owned(), v.to_owned())),
        "refused uploads, the repeated upload and the repeated archive publish nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distribution_made_through_one_replica_is_offered_by_the_other_and_named_runtimes_only() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let replica_a = TestServer::start(&db, ServerOptions::default());
    // Replicas share the signing key (docs/server.md); the second is given the first's.
    let mut replica_b = TestServer::unstarted(&db, ServerOptions::default());
    std::fs::copy(
        replica_a.dir.path().join("server.key"),
        replica_b.dir.path().join("server.key"),
    )
    .unwrap();
    replica_b.launch();
    let api_a = Api::new(&replica_a);
    let key = replica_a.org_with_key("org-a");
    replica_a.user("org-a", "op@example.com", "operator", PASSWORD);
    let operator = api_a.login("org-a", "op@example.com", PASSWORD).await;

    let mut named = FakeRuntime::connect(&replica_b, "org-a", &key).await;
    let mut unnamed = FakeRuntime::connect(&replica_b, "org-a", &key).await;
    let yaml = policy_named("fleet", "y");
    let (status, _) = upload(&api_a, &operator, "fleet", &yaml).await;
    assert_eq!(status, 201);
    let answer = api_a
        .post(
            "/v1/policies/fleet/distributions",
            operator.bearer(),
            json!({"version": "1", "runtime_ids": [named.runtime_id]}),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body["runtime_ids"], json!([named.runtime_id]));
    let offer = next_offer(&mut named).await;
    assert_eq!(
        offer,
        PolicyRef {
            name: "fleet".into(),
            version: "1".into(),
            content_hash: hash_of(&yaml),
        }
    );
    // The other runtime was not named: the next offer it hears is the distribution to all.
    let second = policy_named("fleet", "yes");
    upload(&api_a, &operator, "fleet", &second).await;
    distribute_to_all(&api_a, &operator, "fleet", "2").await;
    assert_eq!(next_offer(&mut unnamed).await.version, "2");
    assert_eq!(next_offer(&mut named).await.version, "2");
    // One that connects now is told in its welcome, through either replica.
    let late = FakeRuntime::connect(&replica_a, "org-a", &key).await;
    assert_eq!(
        late.welcome.policy.as_ref().map(|p| p.version.as_str()),
        Some("2")
    );
    // What replica B serves is signed with the shared key.
    let runtime_token = token(&replica_b, "org-a", &key, &late.runtime_id).await;
    let served: PolicyVersion = reqwest::Client::new()
        .get(replica_b.http_url("/v1/policies/fleet/versions/2"))
        .bearer_auth(&runtime_token)
        .timeout(DEADLINE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_a = decode_public_key(&replica_a.public_key()).unwrap();
    assert!(served.signature_verifies(&key_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_calls_are_checked_and_a_replaced_server_key_signs_again() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut server = TestServer::start(&db, ServerOptions::default());
    let api = Api::new(&server);
    let key = server.org_with_key("org-a");
    server.user("org-a", "viewer@example.com", "viewer", PASSWORD);
    let viewer = api.login("org-a", "viewer@example.com", PASSWORD).await;
    let runtime = FakeRuntime::connect(&server, "org-a", &key).await;
    let runtime_token = token(&server, "org-a", &key, &runtime.runtime_id).await;
    let http = reqwest::Client::new();
    let yaml = policy_named("pushed", "y");
    let hash = hash_of(&yaml);
    let base = server.http_url("");
    let push = |body: Value| {
        let (http, url, runtime_token) = (
            http.clone(),
            format!("{base}/v1/policies/pushed/versions"),
            runtime_token.clone(),
        );
        async move {
            let response = http
                .post(url)
                .bearer_auth(runtime_token)
                .json(&body)
                .timeout(DEADLINE)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let signed = |content_hash: &str, runtime_id: &str, signer: &ed25519_dalek::SigningKey| {
        serde_json::to_value(
            PolicyUpload {
                yaml: yaml.clone(),
                content_hash: content_hash.to_owned(),
                runtime_id: runtime_id.to_owned(),
                signature: String::new(),
            }
            .sign(signer),
        )
        .unwrap()
    };
    // Unsigned, signed by another key, for another runtime, or with a wrong hash: refused.
    let (status, body) = push(json!({"yaml": yaml})).await;
    assert_eq!((status, body["code"].clone()), (400, json!("BAD_REQUEST")));
    let stranger = identity();
    let (status, body) = push(signed(&hash, &runtime.runtime_id, &stranger)).await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("BAD_SIGNATURE"))
    );
    let stranger_id = id_of(&stranger);
    let (status, body) = push(signed(&hash, &stranger_id, &stranger)).await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("IDENTITY_MISMATCH"))
    );
    let (status, body) = push(signed(&"0".repeat(64), &runtime.runtime_id, &runtime.key)).await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("CONTENT_HASH_MISMATCH"))
    );
    assert_eq!(
        api.get("/v1/policies", viewer.bearer()).await.body["policies"],
        json!([]),
        "nothing was stored"
    );
    let (status, body) = push(signed(&hash, &runtime.runtime_id, &runtime.key)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"name": "pushed", "version": "1", "content_hash": hash})
    );

    // A runtime reads the registry, but not the people's routes.
    let get = |path: &str, bearer: &str| {
        let (http, url, bearer) = (http.clone(), format!("{base}{path}"), bearer.to_owned());
        async move {
            http.get(url)
                .bearer_auth(bearer)
                .timeout(DEADLINE)
                .send()
                .await
                .unwrap()
        }
    };
    let list = get("/v1/policies/pushed", &runtime_token).await;
    assert_eq!(list.status(), 200);
    let list: Value = list.json().await.unwrap();
    assert_eq!(list["latest_version"], "1");
    assert_eq!(list["versions"][0]["content_hash"], hash.as_str());
    assert_eq!(get("/v1/policies", &runtime_token).await.status(), 401);
    assert_eq!(
        get("/v1/policies/pushed/versions/1", "not-a-token")
            .await
            .status(),
        401
    );

    // The server's key is replaced: what it serves is signed again with the new key.
    let old_key = decode_public_key(&server.public_key()).unwrap();
    server.kill();
    std::fs::remove_file(server.dir.path().join("server.key")).unwrap();
    server.launch();
    let new_key = decode_public_key(&server.public_key()).unwrap();
    assert_ne!(old_key, new_key);
    let runtime_token = token(&server, "org-a", &key, &runtime.runtime_id).await;
    let served: PolicyVersion = get("/v1/policies/pushed/versions/1", &runtime_token)
        .await
        .json()
        .await
        .unwrap();
    assert!(served.signature_verifies(&new_key));
    assert!(!served.signature_verifies(&old_key));
    assert_eq!(served.content_hash, hash);

    // Revoking the API key cuts the runtime off the registry too.
    let (ok, _, stderr) =
        server.command(&["revoke-api-key", "org-a", key.split('_').nth(1).unwrap()]);
    assert!(ok, "{stderr}");
    assert_eq!(
        get("/v1/policies/pushed/versions/1", &runtime_token)
            .await
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_manual_mode_a_distributed_policy_waits_for_accept_and_stays_after_a_restart() {
    let Some(db) = TestDb::create_unmigrated().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let api = Api::new(&server);
    let key = server.org_with_key("org-a");
    server.user("org-a", "op@example.com", "operator", PASSWORD);
    let operator = api.login("org-a", "op@example.com", PASSWORD).await;
    let mut daemon = TestDaemon::start_accepting_by_hand(&server, "org-a", &key);
    daemon.wait_connected();
    let before = daemon.policy_status()["policy_hash"].clone();

    let yaml = policy_named("team", "n");
    let hash = hash_of(&yaml);
    let (status, uploaded) = upload(&api, &operator, "team", &yaml).await;
    assert_eq!(status, 201, "{uploaded}");
    distribute_to_all(&api, &operator, "team", "1").await;
    eventually("the distributed policy is pending on the daemon", || {
        let pending = daemon.conn().call("policy.pending", json!({})).unwrap();
        let waiting = pending["pending"][0]["content_hash"] == hash.as_str();
        async move { waiting }
    })
    .await;
    assert_eq!(
        daemon.policy_status()["policy_hash"],
        before,
        "manual: nothing applied yet"
    );
    let answer = daemon.decide_one("s", "before-accept");
    assert_eq!(answer["action"], "require_human", "{answer}");

    daemon
        .conn()
        .call("policy.accept", json!({"hash": hash}))
        .expect("policy.accept");
    assert_eq!(daemon.policy_status()["policy_hash"], hash.as_str());
    let answer = daemon.decide_one("s", "after-accept");
    assert_eq!(
        (answer["action"].as_str(), answer["reply_value"].as_str()),
        (Some("auto_reply"), Some("n")),
        "{answer}"
    );
    let types = daemon.audit_event_types();
    for event_type in ["cloud_policy_pending", "cloud_policy_accepted"] {
        assert!(
            types.iter().any(|t| t == event_type),
            "{event_type}: {types:?}"
        );
    }
    // The server learns what the runtime now runs.
    let runtime_id = daemon.runtime_id();
    eventually(
        "the server knows the runtime runs the accepted policy",
        || {
            let (api, operator, runtime_id, hash) =
                (&api, &operator, runtime_id.clone(), hash.clone());
            async move {
                let answer = api.get("/v1/runtime-policies", operator.bearer()).await;
                answer.body.to_string().contains(&runtime_id)
                    && answer.body.to_string().contains(&hash)
            }
        },
    )
    .await;

    daemon.restart(&key);
    assert_eq!(
        daemon.policy_status()["policy_hash"],
        hash.as_str(),
        "the accepted policy survives a restart"
    );
}
