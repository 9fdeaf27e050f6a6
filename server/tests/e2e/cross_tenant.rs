//! Cross-tenant proof through every route: a person of org B walks every operation of the
//! served OpenAPI document against org A's objects (ids taken from A's data). Items are 404
//! exactly like ids that never existed, lists hold none of A's rows, writes are refused and A's
//! data is unchanged afterwards. A route the walk has no case for fails the test, so a new
//! route cannot skip this proof.

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_protocol::trace::GENESIS_PREV_HASH;
use atlasbridge_server::live;
use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::api::{Answer, Api, Auth, Session, segment};
use crate::support::runtime::{FakeRuntime, seal_chain, token_response};
use crate::support::{ServerOptions, TestDb, TestServer, scoped};

const PASSWORD: &str = "correct horse battery staple";

/// What org A looks like to A: compared before and after B's walk.
async fn snapshot(api: &Api, a: &Session) -> Vec<Value> {
    let mut views = Vec::new();
    for path in [
        "/v1/runtimes",
        "/v1/decisions",
        "/v1/sessions",
        "/v1/escalations",
        "/v1/audit-events",
        "/v1/api-keys",
        "/v1/users",
        "/v1/policies?include_archived=true",
        "/v1/policies/policy-of-a",
        "/v1/policies/policy-of-a/versions",
        "/v1/policies/policy-of-a/distributions",
        "/v1/runtime-policies",
    ] {
        let answer = api.get(path, a.bearer()).await;
        assert_eq!(answer.status, 200, "{path}");
        let mut body = answer.body;
        // Liveness is computed at read time; it is not what B could change.
        if let Some(runtimes) = body["runtimes"].as_array_mut() {
            for runtime in runtimes {
                runtime["status"] = Value::Null;
            }
        }
        views.push(body);
    }
    views
}

/// The next text frame of a live socket, as JSON.
async fn next_text<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut WebSocketStream<S>) -> Value {
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

/// The envelope without its request id.
fn without_request_id(answer: &Answer) -> Value {
    let mut body = answer.body.clone();
    body["request_id"] = Value::Null;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_of_another_org_can_neither_see_nor_change_anything_through_any_route() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let server = TestServer::start(&db, ServerOptions::default());
    let api = Api::new(&server);
    let key_a = server.org_with_key("org-a");
    let key_b = server.org_with_key("org-b");
    let owner_a_id = server.user("org-a", "owner-a@example.com", "owner", PASSWORD);
    server.user("org-b", "owner-b@example.com", "owner", PASSWORD);
    let a = api.login("org-a", "owner-a@example.com", PASSWORD).await;
    let b = api.login("org-b", "owner-b@example.com", PASSWORD).await;

    // A's data: a runtime with decisions of one session and audit events, a key made through
    // the API, a second user.
    let mut runtime_a = FakeRuntime::connect(&server, "org-a", &key_a).await;
    let decisions = seal_chain(
        0,
        GENESIS_PREV_HASH,
        (0..4)
            .map(|i| {
                json!({"timestamp": format!("2026-11-27T03:0{i}:00.000000Z"), "session_id": "session-of-a",
                       "agent_id": "agent-of-a", "action_taken": "deny", "risk_level": "high"})
            })
            .collect(),
    );
    runtime_a.send_batch(Stream::Trace, &decisions).await;
    assert_eq!(runtime_a.ack_through(Stream::Trace).await, 3);
    let audit = seal_chain(
        0,
        GENESIS_PREV_HASH,
        vec![json!({"timestamp": "2026-11-27T03:00:00.000000Z", "event_type": "event-of-a"})],
    );
    runtime_a.send_batch(Stream::Audit, &audit).await;
    assert_eq!(runtime_a.ack_through(Stream::Audit).await, 0);
    let made = api
        .post("/v1/api-keys", a.bearer(), json!({"label": "label-of-a"}))
        .await;
    assert_eq!(made.status, 201);
    let key_id_a = made.body["key_id"].as_str().unwrap().to_owned();
    let user_a = api
        .post(
            "/v1/users",
            a.bearer(),
            json!({"email": "viewer-a@example.com", "role": "viewer", "password": PASSWORD}),
        )
        .await;
    let user_id_a = user_a.body["user_id"].as_str().unwrap().to_owned();
    // A's policy, distributed to its runtime, which reports a pin.
    let policy_a = "policy_version: \"1\"\nname: policy-of-a\nrules:\n  - id: rule-of-a\n    match: {}\n    action: {type: deny}\n";
    let made = api
        .post(
            "/v1/policies",
            a.bearer(),
            json!({"name": "policy-of-a", "yaml": policy_a}),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let hash_a = made.body["latest_content_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let distributed = api
        .post(
            "/v1/policies/policy-of-a/distributions",
            a.bearer(),
            json!({"version": "1", "runtime_ids": [runtime_a.runtime_id]}),
        )
        .await;
    assert_eq!(distributed.status, 201, "{:?}", distributed.body);
    runtime_a
        .send(
            "policy_loaded",
            json!({"name": "policy-of-a", "policy_version": "1", "policy_hash": hash_a,
                   "source": "file", "loaded_at": "2026-11-27T03:00:00Z",
                   "pins": [{"scope": "agent", "id": "pin-of-a", "policy_hash": hash_a}]}),
        )
        .await;
    crate::support::eventually("A's pin is stored", || {
        let (api, a) = (&api, &a);
        async move {
            api.get("/v1/runtime-policies", a.bearer()).await.body["runtimes"][0]["pins"]
                .as_array()
                .is_some_and(|pins| pins.len() == 1)
        }
    })
    .await;
    // A's runtime reports the session and an escalation in it.
    runtime_a
        .send(
            "session_started",
            json!({"session_id": "session-of-a", "agent_id": "agent-of-a", "repo": "repo-of-a"}),
        )
        .await;
    runtime_a
        .send(
            "escalation_triggered",
            json!({"session_id": "session-of-a", "agent_id": "agent-of-a", "seq": 3,
                   "entry_hash": decisions[3]["entry_hash"], "prompt_id": "prompt-of-a",
                   "matched_rule": "rule-of-a"}),
        )
        .await;
    crate::support::eventually("A's escalation is stored", || {
        let (api, a) = (&api, &a);
        async move {
            api.get("/v1/escalations", a.bearer()).await.body["escalations"]
                .as_array()
                .is_some_and(|list| list.len() == 1)
        }
    })
    .await;
    let a_session_id = api.get("/v1/me", a.bearer()).await.body["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // B has data of its own, so its lists are not trivially empty.
    let mut runtime_b = FakeRuntime::connect(&server, "org-b", &key_b).await;
    runtime_b
        .send_batch(Stream::Trace, &crate::support::runtime::chain(2))
        .await;
    assert_eq!(runtime_b.ack_through(Stream::Trace).await, 1);

    // Whatever of A's identifies it; none may appear in anything B is shown.
    let secrets_of_a = [
        runtime_a.runtime_id.clone(),
        key_id_a.clone(),
        owner_a_id.clone(),
        user_id_a.clone(),
        "owner-a@example.com".to_owned(),
        "session-of-a".to_owned(),
        "agent-of-a".to_owned(),
        "event-of-a".to_owned(),
        "label-of-a".to_owned(),
        "policy-of-a".to_owned(),
        "rule-of-a".to_owned(),
        "pin-of-a".to_owned(),
        "repo-of-a".to_owned(),
        "prompt-of-a".to_owned(),
        a_session_id.clone(),
        hash_a.clone(),
        decisions[0]["entry_id"].as_str().unwrap().to_owned(),
    ];
    let assert_nothing_of_a = |path: &str, answer: &Answer| {
        let text = answer.body.to_string();
        for secret in &secrets_of_a {
            assert!(
                !text.contains(secret.as_str()),
                "{path} shows A's {secret}: {text}"
            );
        }
    };
    let before = snapshot(&api, &a).await;

    // B's runtime, for the routes runtimes may call too.
    let runtime_b_token =
        crate::support::runtime::token(&server, "org-b", &key_b, &runtime_b.runtime_id).await;
    let runtime_get = |path: String| {
        let (url, token) = (server.http_url(&path), runtime_b_token.clone());
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let mut body: Value = response.json().await.unwrap();
            body["request_id"] = Value::Null;
            (status, body)
        }
    };

    let document = api.get("/v1/openapi.json", Auth::None).await.body;
    let mut walked = 0;
    let mut deferred_upload = None;
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // A's ids in the path, and a twin with ids that never existed.
            let fill = |runtime: &str, session: &str, key: &str, user: &str, policy: &str| {
                template
                    .replace("{runtime_id}", &segment(runtime))
                    .replace("{session_id}", &segment(session))
                    .replace("{key_id}", &segment(key))
                    .replace("{user_id}", &segment(user))
                    .replace("{name}", &segment(policy))
                    .replace("{version}", "1")
            };
            let path = fill(
                &runtime_a.runtime_id,
                "session-of-a",
                &key_id_a,
                &user_id_a,
                "policy-of-a",
            );
            let nowhere = fill(
                "ed25519:nobody",
                "no-session",
                "0000000000000000",
                "no-user",
                "no-policy",
            );
            let rid = segment(&runtime_a.runtime_id);
            match (method.as_str(), template.as_str()) {
                // Item reads and writes on A's ids: the same 404 as for ids that never were.
                ("GET", "/v1/runtimes/{runtime_id}")
                | ("GET", "/v1/runtimes/{runtime_id}/chains")
                | ("GET", "/v1/runtimes/{runtime_id}/sessions/{session_id}")
                | ("DELETE", "/v1/api-keys/{key_id}")
                | ("PATCH", "/v1/users/{user_id}")
                | ("POST", "/v1/users/{user_id}/password")
                | ("GET", "/v1/runtimes/{runtime_id}/policy")
                | ("GET", "/v1/policies/{name}")
                | ("DELETE", "/v1/policies/{name}")
                | ("GET", "/v1/policies/{name}/versions")
                | ("GET", "/v1/policies/{name}/versions/{version}")
                | ("POST", "/v1/policies/{name}/versions/{version}/test")
                | ("GET", "/v1/policies/{name}/distributions")
                | ("POST", "/v1/policies/{name}/distributions")
                | ("GET", "/v1/policies/{name}/diff") => {
                    let body = match (method.as_str(), template.as_str()) {
                        ("PATCH", _) => Some(json!({"role": "viewer", "disabled": true})),
                        (_, "/v1/users/{user_id}/password") => {
                            Some(json!({"new_password": "a password of b's choosing"}))
                        }
                        (_, "/v1/policies/{name}/versions/{version}/test") => {
                            Some(json!({"prompt_text": "Continue?"}))
                        }
                        (_, "/v1/policies/{name}/distributions") if method == Method::POST => {
                            Some(json!({"version": "1", "all_runtimes": true}))
                        }
                        _ => None,
                    };
                    let query = if template.ends_with("/diff") {
                        "?from=1&to=1"
                    } else {
                        ""
                    };
                    let (path, nowhere) = (format!("{path}{query}"), format!("{nowhere}{query}"));
                    let answer = api
                        .call(method.clone(), &path, b.bearer(), body.clone(), &[])
                        .await;
                    // The routes runtimes call: B's runtime is told the same.
                    if method == Method::GET
                        && matches!(
                            template.as_str(),
                            "/v1/policies/{name}" | "/v1/policies/{name}/versions/{version}"
                        )
                    {
                        let (status, body) = runtime_get(path.clone()).await;
                        assert_eq!(status, 404, "{path}: {body}");
                        assert_eq!(body, runtime_get(nowhere.clone()).await.1, "{path}");
                    }
                    answer.assert_error(404, "NOT_FOUND");
                    let twin = api
                        .call(method.clone(), &nowhere, b.bearer(), body, &[])
                        .await;
                    assert_eq!(
                        without_request_id(&answer),
                        without_request_id(&twin),
                        "{path}"
                    );
                }
                // Lists, also filtered by A's ids: nothing of A.
                ("GET", "/v1/runtimes")
                | ("GET", "/v1/api-keys")
                | ("GET", "/v1/users")
                | ("GET", "/v1/runtime-policies") => {
                    let answer = api.get(&path, b.bearer()).await;
                    assert_eq!(answer.status, 200);
                    assert_nothing_of_a(&path, &answer);
                }
                ("GET", "/v1/decisions")
                | ("GET", "/v1/sessions")
                | ("GET", "/v1/escalations")
                | ("GET", "/v1/audit-events") => {
                    for query in [
                        String::new(),
                        format!("?runtime_id={rid}"),
                        "?session_id=session-of-a".to_owned(),
                        "?agent_id=agent-of-a".to_owned(),
                        "?event_type=event-of-a".to_owned(),
                    ] {
                        let answer = api.get(&format!("{path}{query}"), b.bearer()).await;
                        assert_eq!(answer.status, 200, "{path}{query}: {:?}", answer.body);
                        assert_nothing_of_a(&path, &answer);
                        let list = ["decisions", "sessions", "escalations", "events"]
                            .iter()
                            .find_map(|name| answer.body.get(*name))
                            .unwrap();
                        // Filtered by A's runtime, B's own rows go too.
                        if query.starts_with("?runtime_id") {
                            assert_eq!(list, &json!([]), "{path}{query}");
                        }
                    }
                }
                ("GET", "/v1/risk/hourly") => {
                    for query in [
                        "?from=2026-11-27T00:00:00Z&to=2026-11-28T00:00:00Z".to_owned(),
                        format!(
                            "?from=2026-11-27T00:00:00Z&to=2026-11-28T00:00:00Z&runtime_id={rid}"
                        ),
                    ] {
                        let answer = api.get(&format!("{path}{query}"), b.bearer()).await;
                        assert_eq!(answer.status, 200);
                        assert_nothing_of_a(&path, &answer);
                    }
                }
                // Creations land in B, never in A (checked by the snapshot).
                ("POST", "/v1/api-keys") => {
                    let answer = api.post(&path, b.bearer(), json!({"label": "b"})).await;
                    assert_eq!(answer.status, 201);
                }
                ("GET", "/v1/policies") => {
                    let answer = api
                        .get(&format!("{path}?include_archived=true"), b.bearer())
                        .await;
                    assert_eq!(answer.status, 200);
                    assert_nothing_of_a(&path, &answer);
                }
                ("POST", "/v1/policies") => {
                    let answer = api
                        .post(&path, b.bearer(), json!({"name": "policy-of-b"}))
                        .await;
                    assert_eq!(answer.status, 201, "{:?}", answer.body);
                    // B names A's runtime in a distribution of its own policy: not one of B's.
                    let upload = api
                        .post(
                            "/v1/policies/policy-of-b/versions",
                            b.bearer(),
                            json!({"yaml": "policy_version: \"1\"\nname: policy-of-b\n"}),
                        )
                        .await;
                    assert_eq!(upload.status, 201, "{:?}", upload.body);
                    api.post(
                        "/v1/policies/policy-of-b/distributions",
                        b.bearer(),
                        json!({"version": "1", "runtime_ids": [runtime_a.runtime_id]}),
                    )
                    .await
                    .assert_error(400, "UNKNOWN_RUNTIMES");
                }
                ("POST", "/v1/policies/{name}/versions") => {
                    // Done after the walk: it creates B's own policy of A's policy's name, which
                    // the item cases above must not find.
                    deferred_upload = Some(path.clone());
                }
                ("POST", "/v1/policy-validation") => {
                    let answer = api
                        .post(
                            &path,
                            b.bearer(),
                            json!({"yaml": "policy_version: \"1\"\n", "name": "policy-of-a"}),
                        )
                        .await;
                    assert_eq!(answer.status, 200);
                    assert_eq!(answer.body["valid"], false, "the name is not the default's");
                }
                ("POST", "/v1/users") => {
                    // A's address is free in B: organisations do not share users.
                    let answer = api
                        .post(
                            &path,
                            b.bearer(),
                            json!({"email": "owner-a@example.com", "role": "viewer"}),
                        )
                        .await;
                    assert_eq!(answer.status, 201, "{:?}", answer.body);
                    assert_ne!(answer.body["user_id"], owner_a_id.as_str());
                }
                ("GET", "/v1/me/sessions") => {
                    let answer = api.get(&path, b.bearer()).await;
                    assert_eq!(answer.status, 200);
                    assert_nothing_of_a(&path, &answer);
                }
                ("DELETE", "/v1/me/sessions/{session_id}") => {
                    // A's login session is not B's to revoke: the 404 of one that never was.
                    let mine = format!("/v1/me/sessions/{}", segment(&a_session_id));
                    let answer = api.delete(&mine, b.bearer()).await;
                    answer.assert_error(404, "NOT_FOUND");
                    let twin = api.delete("/v1/me/sessions/no-session", b.bearer()).await;
                    assert_eq!(without_request_id(&answer), without_request_id(&twin));
                    assert_eq!(api.get("/v1/me", a.bearer()).await.status, 200);
                }
                ("POST", "/v1/me/sessions/revoke-others") => {
                    let answer = api.call(method.clone(), &path, b.bearer(), None, &[]).await;
                    assert_eq!(answer.status, 200, "{:?}", answer.body);
                    assert_eq!(api.get("/v1/me", a.bearer()).await.status, 200);
                    assert_eq!(api.get("/v1/me", b.bearer()).await.status, 200);
                }
                ("POST", "/v1/me/password") => {
                    // A person of B changes B's password; A's, the same before, stays.
                    server.user("org-b", "changer-b@example.com", "viewer", PASSWORD);
                    let twin = api.login("org-b", "changer-b@example.com", PASSWORD).await;
                    let answer = api
                        .post(
                            &path,
                            twin.bearer(),
                            json!({"current_password": PASSWORD, "new_password": "b's very own password"}),
                        )
                        .await;
                    assert_eq!(answer.status, 200, "{:?}", answer.body);
                    assert_eq!(api.get("/v1/me", a.bearer()).await.status, 200);
                    api.login("org-a", "owner-a@example.com", PASSWORD).await;
                }
                ("GET", "/v1/me") => {
                    let answer = api.get(&path, b.bearer()).await;
                    assert_eq!(answer.body["org_id"], "org-b");
                    assert_nothing_of_a(&path, &answer);
                }
                ("POST", "/v1/auth/logout") => {
                    let spare = api.login("org-b", "owner-b@example.com", PASSWORD).await;
                    assert_eq!(
                        api.call(method.clone(), &path, spare.bearer(), None, &[])
                            .await
                            .status,
                        204
                    );
                    // Only that session ended.
                    assert_eq!(api.get("/v1/me", a.bearer()).await.status, 200);
                    assert_eq!(api.get("/v1/me", b.bearer()).await.status, 200);
                }
                ("POST", "/v1/auth/login") => {
                    // A's person does not exist in B.
                    api.login_answer("org-b", "viewer-a@example.com", PASSWORD)
                        .await
                        .assert_error(401, "INVALID_CREDENTIALS");
                }
                ("POST", "/v1/auth/token") => {
                    // A's API key does not open B, nor B's A.
                    let answer =
                        token_response(&server, "org-b", &key_a, &runtime_a.runtime_id).await;
                    assert_eq!(answer.status(), 401);
                    let answer =
                        token_response(&server, "org-a", &key_b, &runtime_b.runtime_id).await;
                    assert_eq!(answer.status(), 401);
                }
                ("GET", "/v1/connect") => {
                    // A person's session is no runtime token.
                    let answer = api.get(&path, b.bearer()).await;
                    answer.assert_error(401, "INVALID_TOKEN");
                }
                ("POST", "/v1/witness") => {
                    // A person's session is no runtime token, and B's runtime learns of its own
                    // chain only: no member of the query can name A's.
                    let query = json!({"stream": "trace", "seqs": [0, 1, 2, 3]});
                    api.post(&path, b.bearer(), query.clone())
                        .await
                        .assert_error(401, "INVALID_TOKEN");
                    let token_b = crate::support::runtime::token(
                        &server,
                        "org-b",
                        &key_b,
                        &runtime_b.runtime_id,
                    )
                    .await;
                    let answer = api.post(&path, Auth::Bearer(&token_b), query).await;
                    assert_eq!(answer.status, 200, "{}", answer.body);
                    assert_eq!(answer.body["runtime_id"], runtime_b.runtime_id.as_str());
                    assert_nothing_of_a(&path, &answer);
                }
                ("GET", "/v1/auth/oidc/login") | ("GET", "/v1/auth/oidc/callback") => {
                    // No SSO on this server: nothing to reveal either way.
                    let answer = api.get(&format!("{path}?code=c&state=s"), Auth::None).await;
                    answer.assert_error(404, "SSO_NOT_CONFIGURED");
                }
                ("GET", "/v1/live") => {
                    // B's subscriber: an event of A never reaches it (its next event is B's).
                    let mut request = format!("ws://{}/v1/live", server.address)
                        .into_client_request()
                        .unwrap();
                    request.headers_mut().insert(
                        "authorization",
                        format!("Bearer {}", b.token).parse().unwrap(),
                    );
                    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                    assert_eq!(next_text(&mut socket).await["kind"], "subscribed");
                    let mut client = db.app().await;
                    for org in ["org-a", "org-b"] {
                        let tx = scoped(&mut client, org).await;
                        live::publish(&tx, org, "marker", &json!({"org": org}))
                            .await
                            .unwrap();
                        tx.commit().await.unwrap();
                    }
                    let event = next_text(&mut socket).await;
                    assert_eq!(event["payload"]["org"], "org-b", "{event}");
                }
                ("GET", "/v1/openapi.json") => {
                    assert_eq!(api.get(&path, b.bearer()).await.status, 200);
                }
                (method, template) => panic!("no cross-tenant case for {method} {template}"),
            }
            walked += 1;
        }
    }
    assert!(walked >= 43, "walked {walked} operations");
    // B uploads to A's policy's name: that is B's own policy, numbered from 1; A's is untouched.
    let path = deferred_upload.expect("the upload route was walked");
    let yaml = "policy_version: \"1\"\nname: policy-of-a\nrules: []\n";
    let answer = api.post(&path, b.bearer(), json!({"yaml": yaml})).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body["version"], "1");
    assert_eq!(snapshot(&api, &a).await, before, "A's data is unchanged");
    // And A's key still works.
    let answer = token_response(&server, "org-a", &key_a, &runtime_a.runtime_id).await;
    assert_eq!(answer.status(), 200);
    let keys = api.get("/v1/api-keys", a.bearer()).await;
    assert!(
        keys.body["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked_at"].is_null())
    );
    let users = api.get("/v1/users", a.bearer()).await;
    assert!(
        users.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["disabled"] == false)
    );
}
