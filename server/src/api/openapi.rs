//! The OpenAPI 3.1 document of `/v1`, served at `/v1/openapi.json`.
//!
//! Operations and schemas come from utoipa's derives on the handlers and on the very types
//! they serialise, so bodies cannot drift from the document. The route table then adds what it
//! alone knows: each operation's minimum role (`x-min-role`), its security schemes, and the
//! error envelope as every operation's `default` answer.

use std::sync::{Arc, OnceLock};

use axum::Json;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use super::access::Access;
use super::error::ErrorEnvelope;
use super::{account, auth, distributions, keys, live, policies, routes, runtimes, search, users};

/// `POST /v1/auth/token`'s body (docs/cloud.md).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TokenRequest)]
pub struct TokenRequestSchema {
    /// An API key of the organisation (`abk_…`).
    pub api_key: String,
    /// The organisation.
    pub org_id: String,
    /// The runtime asking (`ed25519:` + its public key).
    pub runtime_id: String,
}

/// `POST /v1/auth/token`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TokenResponse)]
pub struct TokenResponseSchema {
    /// A JWT for `GET /v1/connect`.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AtlasBridge governance server",
        description = "The `/v1` API of atlasbridge-server: the runtimes' token call, control channel and policy fetches and pushes, and the API for people (login, the registry, decisions, audit events, sessions, risk, the policy registry, API keys, users, the live stream). Every answer carries `x-request-id` (the client's when it sent a well-formed one); every error is the `ErrorEnvelope`. See docs/server.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::http::token, crate::http::connect, crate::witness::query,
        auth::login, auth::logout, auth::oidc_login, auth::oidc_callback, auth::me,
        account::change_password, account::sessions, account::revoke_session,
        account::revoke_other_sessions,
        runtimes::list, runtimes::one, runtimes::chains,
        search::session, search::sessions, search::decisions, search::audit_events,
        search::risk_hourly, search::escalations,
        live::live,
        policies::list, policies::create, policies::one, policies::archive,
        policies::versions, policies::upload, policies::version, policies::test_event,
        policies::diff_versions, policies::validate,
        distributions::list, distributions::distribute, distributions::runtime_policies,
        distributions::runtime_policy,
        keys::list, keys::create, keys::revoke,
        users::list, users::create, users::update, users::reset_password,
        serve,
    ),
    components(schemas(ErrorEnvelope, TokenRequestSchema, TokenResponseSchema)),
    tags(
        (name = "runtimes", description = "The runtime registry and chain status"),
        (name = "decisions", description = "Decisions, sessions, escalations, audit events and risk"),
        (name = "auth", description = "People's login and sessions"),
        (name = "api-keys", description = "API keys of runtimes (admin)"),
        (name = "users", description = "Users and roles (admin)"),
        (name = "live", description = "The live stream"),
        (name = "policies", description = "The policy registry: policies, signed versions, validation, diff, test events, distributions, what runtimes run"),
        (name = "runtime", description = "The runtimes' side (docs/cloud.md)"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

/// The document (built once).
pub fn document() -> Arc<Value> {
    static DOCUMENT: OnceLock<Arc<Value>> = OnceLock::new();
    Arc::clone(DOCUMENT.get_or_init(|| Arc::new(build())))
}

fn build() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    document["components"]["securitySchemes"] = json!({
        "session_cookie": {
            "type": "apiKey", "in": "cookie", "name": crate::session_token::SESSION_COOKIE,
            "description": "A person's session (HttpOnly, SameSite=Strict). Changes (anything but GET) also need the session's CSRF token in `x-csrf-token`."
        },
        "session_bearer": {
            "type": "http", "scheme": "bearer",
            "description": "A person's session token (`abs_…`), for tools."
        },
        "runtime_token": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A runtime's access token from `POST /v1/auth/token`."
        },
    });
    let error_answer = json!({
        "description": "Any error: the envelope",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    });
    for route in routes() {
        let method = route.method.as_str().to_lowercase();
        let Some(operation) = document["paths"][route.path]
            .get_mut(&method)
            .and_then(Value::as_object_mut)
        else {
            // The document lacks it: the test comparing both says so.
            continue;
        };
        operation.insert("x-min-role".into(), route.access.name().into());
        let security = match route.access {
            Access::Public => json!([]),
            Access::Runtime => json!([{"runtime_token": []}]),
            Access::Person(_) => json!([{"session_cookie": []}, {"session_bearer": []}]),
            Access::PersonOrRuntime(_) => json!([
                {"session_cookie": []}, {"session_bearer": []}, {"runtime_token": []}
            ]),
        };
        operation.insert("security".into(), security);
        if let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        {
            responses
                .entry("default")
                .or_insert_with(|| error_answer.clone());
        }
    }
    document
}

/// Serves this document.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of /v1", content_type = "application/json"))
)]
pub async fn serve() -> Json<Value> {
    Json(document().as_ref().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    #[test]
    fn the_document_has_every_route_of_the_table_and_no_other() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in METHODS {
                if item.get(method).is_some() {
                    documented.insert((method.to_owned(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (r.method.as_str().to_lowercase(), r.path.to_owned()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the document: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "documented routes the server lacks: {unserved:?}"
        );
    }

    #[test]
    fn every_operation_names_its_role_its_parameters_and_the_error_envelope() {
        let document = document();
        for route in routes() {
            let operation = &document["paths"][route.path][route.method.as_str().to_lowercase()];
            assert_eq!(
                operation["x-min-role"],
                route.access.name(),
                "{}",
                route.path
            );
            assert_eq!(
                operation["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorEnvelope",
                "{}",
                route.path
            );
            // Every `{name}` of the path is a documented path parameter.
            for name in route
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            {
                let documented = operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(documented, "{} lacks path parameter {name}", route.path);
            }
        }
        let envelope = &document["components"]["schemas"]["ErrorEnvelope"]["properties"];
        for member in ["error", "code", "request_id", "details"] {
            assert!(envelope.get(member).is_some(), "{member}");
        }
    }
}
