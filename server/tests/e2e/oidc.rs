//! SSO against a real OpenID Connect provider written here: axum on 127.0.0.1 with an ES256
//! key, serving discovery, authorize (it approves at once), token (client secret and PKCE
//! checked) and JWKS. The provider can be told to misbehave: a wrong nonce, a wrong audience,
//! an expired ID token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use atlasbridge_protocol::hash::sha256;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::api::{Answer, Api, Auth};
use crate::support::{ServerOptions, TestDb, TestServer};

pub const CLIENT_ID: &str = "atlasbridge";
pub const CLIENT_SECRET: &str = "provider-secret";

/// How the provider answers the token call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Good,
    WrongNonce,
    WrongAudience,
    Expired,
}

#[derive(Debug)]
pub struct Provider {
    pub issuer: String,
    pkcs8: Vec<u8>,
    jwk: Value,
    /// code -> (nonce, code_challenge)
    codes: Mutex<HashMap<String, (String, String)>>,
    mode: Mutex<Mode>,
    /// (sub, email) of whoever "logs in".
    pub person: Mutex<(String, String)>,
}

async fn discovery(State(provider): State<Arc<Provider>>) -> Response {
    let issuer = &provider.issuer;
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
    .into_response()
}

async fn jwks(State(provider): State<Arc<Provider>>) -> Response {
    axum::Json(json!({"keys": [provider.jwk]})).into_response()
}

async fn authorize(
    State(provider): State<Arc<Provider>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let ok = query.get("response_type").map(String::as_str) == Some("code")
        && query.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && query.get("code_challenge_method").map(String::as_str) == Some("S256")
        && query
            .get("scope")
            .is_some_and(|s| s.split(' ').any(|s| s == "openid"));
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let code = uuid::Uuid::now_v7().simple().to_string();
    provider.codes.lock().unwrap().insert(
        code.clone(),
        (query["nonce"].clone(), query["code_challenge"].clone()),
    );
    let mut location = url::Url::parse(&query["redirect_uri"]).unwrap();
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &query["state"]);
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

async fn token(State(provider): State<Arc<Provider>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| STANDARD.decode(v).ok())
        .map(|raw| String::from_utf8_lossy(&raw).into_owned());
    if basic.as_deref() != Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}")) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let Some((nonce, challenge)) = provider.codes.lock().unwrap().remove(&form["code"]) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes())) != challenge
        || form.get("grant_type").map(String::as_str) != Some("authorization_code")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let mode = *provider.mode.lock().unwrap();
    let (sub, email) = provider.person.lock().unwrap().clone();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "iss": provider.issuer,
        "sub": sub,
        "aud": if mode == Mode::WrongAudience { "someone-else" } else { CLIENT_ID },
        "iat": now,
        "exp": if mode == Mode::Expired { now - 3600 } else { now + 300 },
        "nonce": if mode == Mode::WrongNonce { "not-the-nonce".to_owned() } else { nonce },
        "email": email,
        "email_verified": true,
        "name": "Ada",
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("key-1".to_owned());
    let id_token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&provider.pkcs8)).unwrap();
    axum::Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token}))
        .into_response()
}

/// Starts the provider on 127.0.0.1 (also the dashboard's browser test's identity provider).
pub async fn start_provider() -> Arc<Provider> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "key-1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    let provider = Arc::new(Provider {
        issuer: format!("http://{address}"),
        pkcs8: pkcs8.as_ref().to_vec(),
        jwk,
        codes: Mutex::new(HashMap::new()),
        mode: Mutex::new(Mode::Good),
        person: Mutex::new(("alice-sub".into(), "alice@example.com".into())),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/jwks", get(jwks))
        .with_state(Arc::clone(&provider));
    tokio::spawn(async move { axum::serve(listener, app).await });
    provider
}

fn oidc_config(provider: &Provider, unknown_users: &str) -> String {
    format!(
        "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         redirect_uri = \"http://127.0.0.1:9/v1/auth/oidc/callback\"\norg_id = \"org-a\"\n\
         unknown_users = \"{unknown_users}\"\nafter_login = \"/dashboard\"\n",
        provider.issuer
    )
}

/// An SSO login started on `start` and finished on `finish`: the callback's answer.
async fn sso_login(start: &Api, finish: &Api, with_binding: bool) -> (Answer, String) {
    let begun = start.get("/v1/auth/oidc/login", Auth::None).await;
    assert_eq!(begun.status, 303, "{:?}", begun.body);
    let binding_cookie = begun
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("atlasbridge_oidc="))
        .expect("a binding cookie");
    assert!(binding_cookie.contains("SameSite=Lax") && binding_cookie.contains("HttpOnly"));
    let binding = binding_cookie["atlasbridge_oidc=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let authorize = begun.header("location").unwrap();
    let url = url::Url::parse(&authorize).unwrap();
    let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs["code_challenge_method"], "S256");
    assert_eq!(pairs["code_challenge"].len(), 43);
    let at_provider = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(authorize)
        .send()
        .await
        .unwrap();
    assert_eq!(at_provider.status(), 302);
    let back = url::Url::parse(at_provider.headers()["location"].to_str().unwrap()).unwrap();
    let callback = format!("/v1/auth/oidc/callback?{}", back.query().unwrap());
    let cookie = format!("atlasbridge_oidc={binding}");
    let headers: Vec<(&str, &str)> = if with_binding {
        vec![("cookie", cookie.as_str())]
    } else {
        Vec::new()
    };
    let answer = finish
        .call(reqwest::Method::GET, &callback, Auth::None, None, &headers)
        .await;
    (answer, callback)
}

fn session_of(answer: &Answer) -> Option<String> {
    answer.set_cookies().into_iter().find_map(|c| {
        c.strip_prefix("atlasbridge_session=")
            .map(|rest| rest.split(';').next().unwrap().to_owned())
            .filter(|token| !token.is_empty())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_logs_people_in_through_any_replica_and_refuses_tokens_that_do_not_hold() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let provider = start_provider().await;
    // Replica A refuses people the organisation does not know; B creates them as viewers.
    let refuse = ServerOptions {
        extra_config: oidc_config(&provider, "refuse"),
        ..ServerOptions::default()
    };
    let create = ServerOptions {
        extra_config: oidc_config(&provider, "create_viewer"),
        ..ServerOptions::default()
    };
    let replica_a = TestServer::start(&db, refuse);
    let replica_b = TestServer::start(&db, create);
    let (ok, _, stderr) = replica_a.command(&["create-org", "org-a"]);
    assert!(ok, "{stderr}");
    let (a, b) = (Api::new(&replica_a), Api::new(&replica_b));

    // Unknown to the organisation, on the refusing replica.
    let (answer, _) = sso_login(&a, &a, true).await;
    answer.assert_error(403, "SSO_UNKNOWN_USER");
    assert_eq!(session_of(&answer), None);

    // Started on A, finished on B (which creates a viewer): state, nonce and verifier came
    // from the database.
    let (answer, callback) = sso_login(&a, &b, true).await;
    assert_eq!(answer.status, 303, "{:?}", answer.body);
    assert_eq!(answer.header("location").as_deref(), Some("/dashboard"));
    let token = session_of(&answer).expect("a session cookie");
    let me = a.get("/v1/me", Auth::Cookie(&token, None)).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["user"]["email"], "alice@example.com");
    assert_eq!(me.body["user"]["role"], "viewer");
    assert_eq!(me.body["user"]["sso_linked"], true);
    assert_eq!(me.body["user"]["has_password"], false);
    let alice = me.body["user"]["user_id"].clone();
    // A state is used once.
    let replay = b
        .call(reqwest::Method::GET, &callback, Auth::None, None, &[])
        .await;
    replay.assert_error(401, "SSO_FAILED");
    // Alice again, now known: the refusing replica lets her in as the same user.
    let (answer, _) = sso_login(&a, &a, true).await;
    let token = session_of(&answer).expect("a session");
    assert_eq!(
        a.get("/v1/me", Auth::Bearer(&token)).await.body["user"]["user_id"],
        alice
    );

    // Someone an admin created by email is linked at the first SSO login (verified email).
    replica_a.user(
        "org-a",
        "bob@example.com",
        "operator",
        "bob's long password",
    );
    *provider.person.lock().unwrap() = ("bob-sub".into(), "bob@example.com".into());
    let (answer, _) = sso_login(&a, &a, true).await;
    let token = session_of(&answer).expect("a session");
    let me = a.get("/v1/me", Auth::Bearer(&token)).await;
    assert_eq!(me.body["user"]["role"], "operator");
    assert_eq!(me.body["user"]["sso_linked"], true);

    // Another browser (no binding cookie) cannot finish a login.
    let (answer, _) = sso_login(&a, &a, false).await;
    answer.assert_error(401, "SSO_FAILED");
    assert_eq!(session_of(&answer), None);

    // ID tokens that do not hold.
    for mode in [Mode::WrongNonce, Mode::WrongAudience, Mode::Expired] {
        *provider.mode.lock().unwrap() = mode;
        let (answer, _) = sso_login(&a, &b, true).await;
        answer.assert_error(401, "SSO_FAILED");
        assert_eq!(session_of(&answer), None, "{mode:?}");
    }
    let log = replica_b.log();
    assert!(log.contains("nonce does not match"), "{log}");
    assert!(log.contains("InvalidAudience"), "{log}");
    assert!(log.contains("ExpiredSignature"), "{log}");
}
