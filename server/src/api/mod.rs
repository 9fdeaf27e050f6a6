//! The `/v1` API: one table of routes ([`routes`]) from which the router is built, each with the
//! [`Access`] it requires, and from which the OpenAPI document takes each operation's minimum
//! role. A test compares that table with the document both ways, so neither can have a route the
//! other lacks.

pub mod access;
pub mod account;
pub mod auth;
pub mod distributions;
pub mod error;
pub mod keys;
pub mod live;
pub mod openapi;
pub mod paging;
pub mod policies;
pub mod request_id;
pub mod runtimes;
pub mod search;
pub mod users;

use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

pub use access::Access;

use crate::role::Role;
use crate::server::AppState;

/// One route of `/v1`.
#[derive(Debug)]
pub struct Route {
    /// Its method.
    pub method: Method,
    /// Its path, in the OpenAPI (and axum) template syntax: `/v1/runtimes/{runtime_id}`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What serves it.
    pub handler: MethodRouter<Arc<AppState>>,
}

fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, Arc<AppState>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    Route {
        method,
        path,
        access,
        handler: on(filter, handler),
    }
}

/// Every `/v1` route.
pub fn routes() -> Vec<Route> {
    use Access::{Person, PersonOrRuntime, Public, Runtime};
    use Method as M;
    let viewer = Person(Role::Viewer);
    let operator = Person(Role::Operator);
    let admin = Person(Role::Admin);
    vec![
        // The runtime side (docs/cloud.md).
        route(M::POST, "/v1/auth/token", Public, crate::http::token),
        route(M::GET, "/v1/connect", Runtime, crate::http::connect),
        route(M::POST, "/v1/witness", Runtime, crate::witness::query),
        // People's login.
        route(M::POST, "/v1/auth/login", Public, auth::login),
        route(M::POST, "/v1/auth/logout", viewer, auth::logout),
        route(M::GET, "/v1/auth/oidc/login", Public, auth::oidc_login),
        route(
            M::GET,
            "/v1/auth/oidc/callback",
            Public,
            auth::oidc_callback,
        ),
        route(M::GET, "/v1/me", viewer, auth::me),
        route(M::POST, "/v1/me/password", viewer, account::change_password),
        route(M::GET, "/v1/me/sessions", viewer, account::sessions),
        route(
            M::DELETE,
            "/v1/me/sessions/{session_id}",
            viewer,
            account::revoke_session,
        ),
        route(
            M::POST,
            "/v1/me/sessions/revoke-others",
            viewer,
            account::revoke_other_sessions,
        ),
        // Reading.
        route(M::GET, "/v1/runtimes", viewer, runtimes::list),
        route(M::GET, "/v1/runtimes/{runtime_id}", viewer, runtimes::one),
        route(
            M::GET,
            "/v1/runtimes/{runtime_id}/chains",
            viewer,
            runtimes::chains,
        ),
        route(
            M::GET,
            "/v1/runtimes/{runtime_id}/sessions/{session_id}",
            viewer,
            search::session,
        ),
        route(M::GET, "/v1/sessions", viewer, search::sessions),
        route(M::GET, "/v1/decisions", viewer, search::decisions),
        route(M::GET, "/v1/audit-events", viewer, search::audit_events),
        route(M::GET, "/v1/escalations", viewer, search::escalations),
        route(M::GET, "/v1/risk/hourly", viewer, search::risk_hourly),
        route(M::GET, "/v1/live", viewer, live::live),
        // The policy registry: people read and test (viewer), operators change it; runtimes
        // fetch versions and push new ones (docs/cloud.md).
        route(M::GET, "/v1/policies", viewer, policies::list),
        route(M::POST, "/v1/policies", operator, policies::create),
        route(
            M::GET,
            "/v1/policies/{name}",
            PersonOrRuntime(Role::Viewer),
            policies::one,
        ),
        route(
            M::DELETE,
            "/v1/policies/{name}",
            operator,
            policies::archive,
        ),
        route(
            M::GET,
            "/v1/policies/{name}/versions",
            viewer,
            policies::versions,
        ),
        route(
            M::POST,
            "/v1/policies/{name}/versions",
            PersonOrRuntime(Role::Operator),
            policies::upload,
        ),
        route(
            M::GET,
            "/v1/policies/{name}/versions/{version}",
            PersonOrRuntime(Role::Viewer),
            policies::version,
        ),
        route(
            M::POST,
            "/v1/policies/{name}/versions/{version}/test",
            viewer,
            policies::test_event,
        ),
        route(
            M::GET,
            "/v1/policies/{name}/diff",
            viewer,
            policies::diff_versions,
        ),
        route(M::POST, "/v1/policy-validation", viewer, policies::validate),
        route(
            M::GET,
            "/v1/policies/{name}/distributions",
            viewer,
            distributions::list,
        ),
        route(
            M::POST,
            "/v1/policies/{name}/distributions",
            operator,
            distributions::distribute,
        ),
        route(
            M::GET,
            "/v1/runtime-policies",
            viewer,
            distributions::runtime_policies,
        ),
        route(
            M::GET,
            "/v1/runtimes/{runtime_id}/policy",
            viewer,
            distributions::runtime_policy,
        ),
        // Administration.
        route(M::GET, "/v1/api-keys", admin, keys::list),
        route(M::POST, "/v1/api-keys", admin, keys::create),
        route(M::DELETE, "/v1/api-keys/{key_id}", admin, keys::revoke),
        route(M::GET, "/v1/users", admin, users::list),
        route(M::POST, "/v1/users", admin, users::create),
        route(M::PATCH, "/v1/users/{user_id}", admin, users::update),
        route(
            M::POST,
            "/v1/users/{user_id}/password",
            admin,
            users::reset_password,
        ),
        // The document itself.
        route(M::GET, "/v1/openapi.json", Public, openapi::serve),
    ]
}
