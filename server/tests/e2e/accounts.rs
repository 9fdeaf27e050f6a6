//! People's own accounts on the real server: changing one's password (the current one needed,
//! the other sessions revoked, this one kept), listing and revoking one's sessions, an
//! administrator's reset within the role rules, and the CLI's `reset-password` for a person
//! locked out.

use atlasbridge_server::session_token::token_hash;
use reqwest::Method;
use serde_json::json;

use crate::support::api::{Api, Auth, Session, segment};
use crate::support::{ServerOptions, TestDb, TestServer, scoped};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase";

async fn setup(options: ServerOptions) -> Option<(TestDb, TestServer, Api)> {
    let db = TestDb::create().await?;
    let server = TestServer::start(&db, options);
    let (ok, _, stderr) = server.command(&["create-org", "org-a"]);
    assert!(ok, "{stderr}");
    server.user("org-a", "owner@example.com", "owner", PASSWORD);
    let api = Api::new(&server);
    Some((db, server, api))
}

/// Logs in with a `User-Agent` of the test's choosing.
async fn login_as_agent(api: &Api, email: &str, password: &str, agent: &str) -> Session {
    let answer = api
        .call(
            Method::POST,
            "/v1/auth/login",
            Auth::None,
            Some(json!({"org_id": "org-a", "email": email, "password": password})),
            &[("user-agent", agent)],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    Session {
        token: answer.body["session_token"].as_str().unwrap().to_owned(),
        csrf: answer.body["csrf_token"].as_str().unwrap().to_owned(),
        user_id: answer.body["user"]["user_id"].as_str().unwrap().to_owned(),
    }
}

async fn session_id(api: &Api, session: &Session) -> String {
    let me = api.get("/v1/me", session.bearer()).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    me.body["session_id"].as_str().unwrap().to_owned()
}

async fn live(api: &Api, session: &Session) -> bool {
    match api.get("/v1/me", session.bearer()).await.status {
        200 => true,
        401 => false,
        other => panic!("GET /v1/me answered {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_changes_their_password_keeping_this_session_and_ending_the_others() {
    let Some((db, server, api)) = setup(ServerOptions::default()).await else {
        return;
    };
    server.user("org-a", "ada@example.com", "viewer", PASSWORD);
    let this = login_as_agent(&api, "ada@example.com", PASSWORD, "browser-one/1.0").await;
    let other = login_as_agent(&api, "ada@example.com", PASSWORD, "tool-two/2.0").await;
    let owner = api.login("org-a", "owner@example.com", PASSWORD).await;

    // The policy on the new password, the current one checked, CSRF with the cookie.
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    api.post("/v1/me/password", this.bearer(), change(PASSWORD, "short"))
        .await
        .assert_error(400, "BAD_REQUEST");
    api.post(
        "/v1/me/password",
        Auth::Cookie(&this.token, None),
        change(PASSWORD, NEW_PASSWORD),
    )
    .await
    .assert_error(403, "CSRF_TOKEN_REQUIRED");
    api.post(
        "/v1/me/password",
        this.bearer(),
        change("not the password at all", NEW_PASSWORD),
    )
    .await
    .assert_error(403, "WRONG_PASSWORD");
    // A wrong current password is a failed login of the address (the shared throttle).
    let mut client = db.app().await;
    let tx = scoped(&mut client, "org-a").await;
    let failures: i32 = tx
        .query_one(
            "SELECT failures FROM login_throttle WHERE email = 'ada@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(failures, 1);
    assert!(live(&api, &this).await && live(&api, &other).await);
    api.login("org-a", "ada@example.com", PASSWORD).await;

    // Changed through the cookie with its CSRF token: the other sessions end, this one and the
    // owner's stay.
    let changed = api
        .post(
            "/v1/me/password",
            Auth::Cookie(&this.token, Some(&this.csrf)),
            change(PASSWORD, NEW_PASSWORD),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(changed.body["revoked_sessions"], 2, "{:?}", changed.body);
    assert!(live(&api, &this).await);
    assert!(!live(&api, &other).await);
    assert!(live(&api, &owner).await);
    api.login_answer("org-a", "ada@example.com", PASSWORD)
        .await
        .assert_error(401, "INVALID_CREDENTIALS");
    api.login("org-a", "ada@example.com", NEW_PASSWORD).await;
    // The old password no longer counts as the current one.
    api.post("/v1/me/password", this.bearer(), change(PASSWORD, PASSWORD))
        .await
        .assert_error(403, "WRONG_PASSWORD");

    // A user without a local password (SSO only) has nothing to change here.
    let created = api
        .post(
            "/v1/users",
            owner.bearer(),
            json!({"email": "sso@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let sso_user = created.body["user_id"].as_str().unwrap().to_owned();
    // Its session as an SSO login would open it.
    let token = &format!("abs_org-a.{}", "s".repeat(43));
    let tx = scoped(&mut client, "org-a").await;
    tx.execute(
        "INSERT INTO human_sessions (org_id, session_id, token_sha256, user_id, csrf_token, via, expires_at)
         VALUES ('org-a', 'sso-session', $1, $2, 'csrf', 'oidc', now() + interval '1 hour')",
        &[&token_hash(token), &sso_user],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    api.post(
        "/v1/me/password",
        Auth::Bearer(token),
        change("anything at all", NEW_PASSWORD),
    )
    .await
    .assert_error(409, "NO_LOCAL_PASSWORD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_lists_their_sessions_and_revokes_one_or_all_the_others() {
    let Some((_db, server, api)) = setup(ServerOptions::default()).await else {
        return;
    };
    server.user("org-a", "ada@example.com", "viewer", PASSWORD);
    let first = login_as_agent(&api, "ada@example.com", PASSWORD, "browser-one/1.0").await;
    let second = login_as_agent(&api, "ada@example.com", PASSWORD, "tool-two/2.0").await;
    let third = api.login("org-a", "ada@example.com", PASSWORD).await;
    let owner = api.login("org-a", "owner@example.com", PASSWORD).await;
    let (first_id, second_id, third_id, owner_id) = (
        session_id(&api, &first).await,
        session_id(&api, &second).await,
        session_id(&api, &third).await,
        session_id(&api, &owner).await,
    );

    let list = api.get("/v1/me/sessions", first.bearer()).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let sessions = list.body["sessions"].as_array().unwrap();
    let ids: Vec<&str> = sessions
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    // Newest first, only this user's.
    assert_eq!(ids, [&third_id, &second_id, &first_id], "{sessions:?}");
    let current: Vec<bool> = sessions
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, [false, false, true]);
    assert_eq!(sessions[2]["user_agent"], "browser-one/1.0");
    assert_eq!(sessions[1]["user_agent"], "tool-two/2.0");
    for session in sessions {
        assert_eq!(session["via"], "password");
        for time in ["created_at", "last_used_at", "expires_at"] {
            assert!(session[time].as_str().unwrap().ends_with('Z'), "{session}");
        }
    }

    // One revoked: it ends at once and leaves the list; again is still 204.
    let path = format!("/v1/me/sessions/{}", segment(&third_id));
    assert_eq!(api.delete(&path, first.bearer()).await.status, 204);
    assert!(!live(&api, &third).await);
    assert_eq!(api.delete(&path, first.bearer()).await.status, 204);
    let list = api.get("/v1/me/sessions", first.bearer()).await;
    assert_eq!(list.body["sessions"].as_array().unwrap().len(), 2);
    // Another person's session is not one's own to revoke: 404 as for one that never was.
    let path = format!("/v1/me/sessions/{}", segment(&owner_id));
    api.delete(&path, first.bearer())
        .await
        .assert_error(404, "NOT_FOUND");
    api.delete("/v1/me/sessions/no-such-session", first.bearer())
        .await
        .assert_error(404, "NOT_FOUND");
    assert!(live(&api, &owner).await);
    // CSRF with the cookie, as for every change.
    api.call(
        Method::POST,
        "/v1/me/sessions/revoke-others",
        Auth::Cookie(&first.token, None),
        None,
        &[],
    )
    .await
    .assert_error(403, "CSRF_TOKEN_REQUIRED");

    // All the others: the second ends, this one and the owner's stay.
    let answer = api
        .call(
            Method::POST,
            "/v1/me/sessions/revoke-others",
            Auth::Cookie(&first.token, Some(&first.csrf)),
            None,
            &[],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["revoked_sessions"], 1);
    assert!(live(&api, &first).await);
    assert!(!live(&api, &second).await);
    assert!(live(&api, &owner).await);
    let list = api.get("/v1/me/sessions", first.bearer()).await;
    let ids: Vec<&str> = list.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first_id.as_str()]);
    // Revoking one's own current session logs it out.
    let path = format!("/v1/me/sessions/{}", segment(&first_id));
    assert_eq!(api.delete(&path, first.bearer()).await.status, 204);
    assert!(!live(&api, &first).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_reset_passwords_within_the_role_rules_and_the_cli_lets_a_locked_out_owner_in() {
    let options = ServerOptions {
        login_failures_per_window: 3,
        ..ServerOptions::default()
    };
    let Some((_db, server, api)) = setup(options).await else {
        return;
    };
    let admin_id = server.user("org-a", "admin@example.com", "admin", PASSWORD);
    let operator_id = server.user("org-a", "operator@example.com", "operator", PASSWORD);
    let viewer_id = server.user("org-a", "viewer@example.com", "viewer", PASSWORD);
    let owner = api.login("org-a", "owner@example.com", PASSWORD).await;
    let admin = api.login("org-a", "admin@example.com", PASSWORD).await;
    let operator = api.login("org-a", "operator@example.com", PASSWORD).await;
    let viewer = api.login("org-a", "viewer@example.com", PASSWORD).await;
    let viewer_again = api.login("org-a", "viewer@example.com", PASSWORD).await;
    let reset = |user_id: &str| format!("/v1/users/{}/password", segment(user_id));
    let body = json!({"new_password": NEW_PASSWORD});

    // Viewers and operators cannot.
    for (who, session) in [("viewer", &viewer), ("operator", &operator)] {
        let answer = api
            .post(&reset(&admin_id), session.bearer(), body.clone())
            .await;
        answer.assert_error(403, "FORBIDDEN");
        assert_eq!(answer.body["details"]["role"], who);
    }
    // An admin cannot reset an owner, nor itself (that needs the current password).
    api.post(&reset(&owner.user_id), admin.bearer(), body.clone())
        .await
        .assert_error(403, "OWNER_REQUIRED");
    api.post(&reset(&admin_id), admin.bearer(), body.clone())
        .await
        .assert_error(403, "OWN_PASSWORD");
    api.post(&reset("no-such-user"), admin.bearer(), body.clone())
        .await
        .assert_error(404, "NOT_FOUND");
    api.post(
        &reset(&viewer_id),
        admin.bearer(),
        json!({"new_password": "short"}),
    )
    .await
    .assert_error(400, "BAD_REQUEST");
    api.post(
        &reset(&viewer_id),
        Auth::Cookie(&admin.token, None),
        body.clone(),
    )
    .await
    .assert_error(403, "CSRF_TOKEN_REQUIRED");
    assert!(
        live(&api, &viewer).await,
        "nothing refused changed anything"
    );
    api.login("org-a", "viewer@example.com", PASSWORD).await;

    // An admin resets a viewer: every session of the viewer ends, the new password works.
    let answer = api
        .post(&reset(&viewer_id), admin.bearer(), body.clone())
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["revoked_sessions"], 3);
    assert!(!live(&api, &viewer).await && !live(&api, &viewer_again).await);
    assert!(live(&api, &admin).await);
    api.login_answer("org-a", "viewer@example.com", PASSWORD)
        .await
        .assert_error(401, "INVALID_CREDENTIALS");
    api.login("org-a", "viewer@example.com", NEW_PASSWORD).await;
    // An owner resets an operator (and could an owner).
    let answer = api
        .post(&reset(&operator_id), owner.bearer(), body.clone())
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(!live(&api, &operator).await);
    // SSO-only users keep having no password.
    let created = api
        .post(
            "/v1/users",
            admin.bearer(),
            json!({"email": "sso@example.com", "role": "viewer"}),
        )
        .await;
    let sso_user = created.body["user_id"].as_str().unwrap().to_owned();
    api.post(&reset(&sso_user), admin.bearer(), body.clone())
        .await
        .assert_error(409, "NO_LOCAL_PASSWORD");
    let users = api.get("/v1/users", admin.bearer()).await;
    let sso = users.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == sso_user.as_str())
        .unwrap()
        .clone();
    assert_eq!(sso["has_password"], false);

    // The owner forgets the password and is locked out by failures; the CLI lets it back in.
    for _ in 0..3 {
        api.login_answer("org-a", "owner@example.com", "a wrong guess here")
            .await
            .assert_error(401, "INVALID_CREDENTIALS");
    }
    api.login_answer("org-a", "owner@example.com", PASSWORD)
        .await
        .assert_error(429, "RATE_LIMITED");
    let (ok, _, stderr) = server.command(&[
        "reset-password",
        "--org",
        "org-a",
        "--email",
        "owner@example.com",
    ]);
    assert!(!ok, "the password comes from stdin only: {stderr}");
    let (ok, _, stderr) = server.command_with_stdin(
        &[
            "reset-password",
            "--org",
            "org-a",
            "--email",
            "owner@example.com",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!ok && stderr.contains("at least 12"), "{stderr}");
    let (ok, _, stderr) = server.command_with_stdin(
        &[
            "reset-password",
            "--org",
            "org-a",
            "--email",
            "nobody@example.com",
            "--password-stdin",
        ],
        &format!("{NEW_PASSWORD}\n"),
    );
    assert!(!ok && stderr.contains("no user"), "{stderr}");
    assert!(live(&api, &owner).await, "refused resets changed nothing");
    let (ok, stdout, stderr) = server.command_with_stdin(
        &[
            "reset-password",
            "--org",
            "org-a",
            "--email",
            "Owner@Example.com",
            "--password-stdin",
        ],
        &format!("{NEW_PASSWORD}\n"),
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&owner.user_id) && stdout.contains("revoked 1 sessions"),
        "{stdout}"
    );
    assert!(!live(&api, &owner).await);
    api.login("org-a", "owner@example.com", NEW_PASSWORD).await;
}
