//! People on the real server: the error envelope and request ids, password logins, sessions by
//! cookie and by bearer, CSRF, roles, and the rules about owners.

use serde_json::json;

use crate::support::api::{Api, Auth};
use crate::support::{ServerOptions, TestDb, TestServer};

const PASSWORD: &str = "correct horse battery staple";

async fn setup(options: ServerOptions) -> Option<(TestDb, TestServer, Api)> {
    let db = TestDb::create().await?;
    let server = TestServer::start(&db, options);
    let (ok, _, stderr) = server.command(&["create-org", "org-a"]);
    assert!(ok, "{stderr}");
    server.user("org-a", "owner@example.com", "owner", PASSWORD);
    let api = Api::new(&server);
    Some((db, server, api))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_and_every_error_the_same_envelope() {
    let Some((_db, server, api)) = setup(ServerOptions::default()).await else {
        return;
    };
    // An unknown route, a method a route lacks, a body that is not JSON, no session.
    api.get("/v1/nothing-here", Auth::None)
        .await
        .assert_error(404, "NOT_FOUND");
    api.delete("/v1/me", Auth::None)
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");
    let answer = api
        .call(
            reqwest::Method::POST,
            "/v1/auth/login",
            Auth::None,
            None,
            &[("content-type", "text/plain")],
        )
        .await;
    answer.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let answer = api
        .post("/v1/auth/login", Auth::None, json!({"org_id": "org-a"}))
        .await;
    answer.assert_error(422, "INVALID_BODY");
    assert!(
        answer.body["error"].as_str().unwrap().contains("email"),
        "{:?}",
        answer.body
    );
    api.get("/v1/runtimes", Auth::None)
        .await
        .assert_error(401, "UNAUTHENTICATED");

    // A client's well-formed id is kept (and logged); a malformed one is replaced.
    let answer = api
        .call(
            reqwest::Method::GET,
            "/v1/runtimes",
            Auth::None,
            None,
            &[("x-request-id", "trace-me-0042")],
        )
        .await;
    assert_eq!(
        answer.header("x-request-id").as_deref(),
        Some("trace-me-0042")
    );
    assert_eq!(answer.body["request_id"], "trace-me-0042");
    let answer = api
        .call(
            reqwest::Method::GET,
            "/v1/runtimes",
            Auth::None,
            None,
            &[("x-request-id", "no spaces; please")],
        )
        .await;
    let replaced = answer.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
    // Successes carry one too, and ids differ per request.
    let first = api.get("/healthz", Auth::None).await;
    let second = api.get("/v1/openapi.json", Auth::None).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_ne!(first.header("x-request-id"), second.header("x-request-id"));
    assert!(
        server.log().contains("trace-me-0042"),
        "the request id is in the log:\n{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_login_gives_a_session_usable_as_cookie_and_as_bearer_token() {
    let Some((_db, _server, api)) = setup(ServerOptions::default()).await else {
        return;
    };
    let answer = api
        .login_answer("org-a", "  Owner@Example.com ", PASSWORD)
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let token = answer.body["session_token"].as_str().unwrap().to_owned();
    let csrf = answer.body["csrf_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("abs_org-a."));
    assert_eq!(answer.body["user"]["role"], "owner");
    assert_eq!(answer.body["user"]["email"], "owner@example.com");
    let cookie = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("atlasbridge_session="))
        .expect("a session cookie");
    assert_eq!(
        cookie,
        format!("atlasbridge_session={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"),
        "HttpOnly, Strict; not Secure because the test config turns it off"
    );

    for auth in [Auth::Bearer(&token), Auth::Cookie(&token, None)] {
        let me = api.get("/v1/me", auth).await;
        assert_eq!(me.status, 200, "{:?}", me.body);
        assert_eq!(me.body["org_id"], "org-a");
        assert_eq!(me.body["csrf_token"], csrf.as_str());
    }

    // Changes by cookie need the CSRF token; by bearer they do not.
    let body = json!({"label": "ci"});
    api.call(
        reqwest::Method::POST,
        "/v1/api-keys",
        Auth::Cookie(&token, None),
        Some(body.clone()),
        &[],
    )
    .await
    .assert_error(403, "CSRF_TOKEN_REQUIRED");
    api.call(
        reqwest::Method::POST,
        "/v1/api-keys",
        Auth::Cookie(&token, Some("not-the-token")),
        Some(body.clone()),
        &[],
    )
    .await
    .assert_error(403, "CSRF_TOKEN_REQUIRED");
    let created = api
        .post(
            "/v1/api-keys",
            Auth::Cookie(&token, Some(&csrf)),
            body.clone(),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let created = api.post("/v1/api-keys", Auth::Bearer(&token), body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert!(
        created.body["api_key"]
            .as_str()
            .unwrap()
            .starts_with("abk_")
    );
    let listed = api.get("/v1/api-keys", Auth::Bearer(&token)).await;
    assert_eq!(listed.body["api_keys"].as_array().unwrap().len(), 2);
    assert!(
        listed.body["api_keys"][0].get("api_key").is_none(),
        "a secret is shown once"
    );

    // Logging out ends the session everywhere and clears the cookie.
    let out = api
        .call(
            reqwest::Method::POST,
            "/v1/auth/logout",
            Auth::Cookie(&token, Some(&csrf)),
            None,
            &[],
        )
        .await;
    assert_eq!(out.status, 204);
    assert!(out.set_cookies()[0].contains("Max-Age=0"));
    api.get("/v1/me", Auth::Bearer(&token))
        .await
        .assert_error(401, "UNAUTHENTICATED");
    // A token of the right shape that was never issued, and garbage.
    let forged = format!("abs_org-a.{}", "A".repeat(43));
    api.get("/v1/me", Auth::Bearer(&forged))
        .await
        .assert_error(401, "UNAUTHENTICATED");
    api.get("/v1/me", Auth::Cookie("abs_x", None))
        .await
        .assert_error(401, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_look_the_same_whoever_they_are_for_and_are_rate_limited() {
    let options = ServerOptions {
        login_failures_per_window: 3,
        ..ServerOptions::default()
    };
    let Some((_db, server, api)) = setup(options).await else {
        return;
    };
    let owner = api.login("org-a", "owner@example.com", PASSWORD).await;
    server.user("org-a", "gone@example.com", "viewer", PASSWORD);
    let gone = api.login("org-a", "gone@example.com", PASSWORD).await;
    let disabled = api
        .patch(
            &format!("/v1/users/{}", gone.user_id),
            owner.bearer(),
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(disabled.status, 200, "{:?}", disabled.body);
    assert_eq!(disabled.body["disabled"], true);
    // Disabling revoked its session.
    api.get("/v1/me", gone.bearer())
        .await
        .assert_error(401, "UNAUTHENTICATED");
    // An SSO-only user (no password).
    let sso_only = api
        .post(
            "/v1/users",
            owner.bearer(),
            json!({"email": "sso@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(sso_only.status, 201);

    let attempts = [
        ("org-a", "owner@example.com", "wrong password!"),
        ("org-a", "nobody@example.com", PASSWORD),
        ("org-z", "owner@example.com", PASSWORD),
        ("org-a", "gone@example.com", PASSWORD),
        ("org-a", "sso@example.com", PASSWORD),
    ];
    let mut messages = Vec::new();
    for (org, email, password) in attempts {
        let answer = api.login_answer(org, email, password).await;
        answer.assert_error(401, "INVALID_CREDENTIALS");
        assert!(answer.set_cookies().is_empty());
        messages.push(answer.body["error"].clone());
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");

    // Past the limit an address is refused, known or not, even with the right password.
    for email in ["owner@example.com", "nobody@example.com"] {
        for _ in 0..3 {
            let _ = api.login_answer("org-a", email, "wrong password!").await;
        }
        let locked = api.login_answer("org-a", email, PASSWORD).await;
        locked.assert_error(429, "RATE_LIMITED");
        let wait: u64 = locked.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=900).contains(&wait), "{wait}");
    }
    // Another address is not affected, and a good login clears its own count.
    server.user("org-a", "other@example.com", "viewer", PASSWORD);
    let _ = api
        .login_answer("org-a", "other@example.com", "wrong password!")
        .await;
    let _ = api.login("org-a", "other@example.com", PASSWORD).await;
    for _ in 0..2 {
        let _ = api
            .login_answer("org-a", "other@example.com", "wrong password!")
            .await;
    }
    let _ = api.login("org-a", "other@example.com", PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_needs_its_role_and_only_owners_manage_owners() {
    let Some((_db, server, api)) = setup(ServerOptions::default()).await else {
        return;
    };
    let owner = api.login("org-a", "owner@example.com", PASSWORD).await;
    let mut sessions = Vec::new();
    for role in ["viewer", "operator", "admin"] {
        let email = format!("{role}@example.com");
        let created = api
            .post(
                "/v1/users",
                owner.bearer(),
                json!({"email": email, "role": role, "password": PASSWORD, "display_name": role}),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        sessions.push(api.login("org-a", &email, PASSWORD).await);
    }
    let (viewer, operator, admin) = (&sessions[0], &sessions[1], &sessions[2]);

    // Reading is for everyone; keys and users for admins.
    for session in [viewer, operator, admin, &owner] {
        assert_eq!(api.get("/v1/runtimes", session.bearer()).await.status, 200);
        assert_eq!(api.get("/v1/decisions", session.bearer()).await.status, 200);
    }
    for session in [viewer, operator] {
        let refused = api.get("/v1/users", session.bearer()).await;
        refused.assert_error(403, "FORBIDDEN");
        assert_eq!(refused.body["details"]["required_role"], "admin");
        api.post("/v1/api-keys", session.bearer(), json!({}))
            .await
            .assert_error(403, "FORBIDDEN");
    }
    assert_eq!(api.get("/v1/users", admin.bearer()).await.status, 200);

    // An admin manages everyone but owners.
    api.post(
        "/v1/users",
        admin.bearer(),
        json!({"email": "boss@example.com", "role": "owner", "password": PASSWORD}),
    )
    .await
    .assert_error(403, "OWNER_REQUIRED");
    let path = |session: &crate::support::api::Session| format!("/v1/users/{}", session.user_id);
    api.patch(&path(viewer), admin.bearer(), json!({"role": "owner"}))
        .await
        .assert_error(403, "OWNER_REQUIRED");
    api.patch(&path(&owner), admin.bearer(), json!({"disabled": true}))
        .await
        .assert_error(403, "OWNER_REQUIRED");
    let promoted = api
        .patch(&path(viewer), admin.bearer(), json!({"role": "operator"}))
        .await;
    assert_eq!(promoted.body["role"], "operator", "{:?}", promoted.body);
    // The new role holds from the next request on, in the same session.
    let me = api.get("/v1/me", viewer.bearer()).await;
    assert_eq!(me.body["user"]["role"], "operator");
    api.post(
        "/v1/users",
        admin.bearer(),
        json!({"email": "viewer@example.com", "role": "viewer"}),
    )
    .await
    .assert_error(409, "USER_EXISTS");
    api.post(
        "/v1/users",
        admin.bearer(),
        json!({"email": "short@example.com", "role": "viewer", "password": "short"}),
    )
    .await
    .assert_error(400, "BAD_REQUEST");

    // The last owner stays.
    api.patch(&path(&owner), owner.bearer(), json!({"role": "admin"}))
        .await
        .assert_error(409, "LAST_OWNER");
    api.patch(&path(&owner), owner.bearer(), json!({"disabled": true}))
        .await
        .assert_error(409, "LAST_OWNER");
    let second = api
        .patch(&path(admin), owner.bearer(), json!({"role": "owner"}))
        .await;
    assert_eq!(second.body["role"], "owner", "{:?}", second.body);
    let demoted = api
        .patch(&path(&owner), owner.bearer(), json!({"role": "admin"}))
        .await;
    assert_eq!(demoted.body["role"], "admin", "{:?}", demoted.body);
    api.patch(&path(admin), admin.bearer(), json!({"role": "viewer"}))
        .await
        .assert_error(409, "LAST_OWNER");
    api.patch(
        "/v1/users/no-such-user",
        admin.bearer(),
        json!({"role": "viewer"}),
    )
    .await
    .assert_error(404, "NOT_FOUND");

    // The CLI refuses what the API refuses.
    let (ok, _, stderr) = server.command_with_stdin(
        &[
            "create-user",
            "--org",
            "org-a",
            "--email",
            "x@example.com",
            "--role",
            "root",
        ],
        "",
    );
    assert!(!ok && stderr.contains("unknown role"), "{stderr}");
    let (ok, _, stderr) = server.command_with_stdin(
        &[
            "create-user",
            "--org",
            "org-a",
            "--email",
            "y@example.com",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!ok && stderr.contains("at least 12"), "{stderr}");
}
