//! Method dispatch: the one place where a method name meets its handler, its minimum role and
//! its feature gate, and where engine errors become JSON-RPC errors.

pub(crate) mod autopilot;
mod cloud;
mod daemon;
mod decision;
mod features;
mod pins;
mod policy;
mod session;
mod trace;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::jsonrpc::decode_params;
use atlasbridge_protocol::methods::{self as m, Role};
use atlasbridge_protocol::{ErrorCode, ErrorObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::peer::Caller;
use crate::audit::Actor;
use crate::decisions::autopilot::Command;
use crate::state::Daemon;
use crate::storage::AppendError;

/// Something to do once the reply has been queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReply {
    /// Start the graceful shutdown (the caller already has its answer).
    Shutdown,
}

/// A handled request: the reply, and what to do after sending it.
#[derive(Debug)]
pub struct Handled {
    /// The result or the error.
    pub outcome: Result<Box<RawValue>, ErrorObject>,
    /// A follow-up action.
    pub after: Option<AfterReply>,
}

impl Handled {
    fn reply<T: Serialize>(result: Result<T, ErrorObject>) -> Self {
        let outcome = result.and_then(|value| {
            serde_json::value::to_raw_value(&value).map_err(|e| {
                ErrorObject::new(ErrorCode::InternalError, format!("internal error: {e}"))
            })
        });
        Self {
            outcome,
            after: None,
        }
    }

    fn error(error: ErrorObject) -> Self {
        Self {
            outcome: Err(error),
            after: None,
        }
    }
}

/// What a handler may use of the connection it serves: the reply queue (for subscriptions),
/// the signal that the connection is gone, and the daemon's task tracker.
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    /// Lines to the client.
    pub outbound: crate::ipc::reply_queue::ReplyQueue,
    /// Fired when the connection closes.
    pub closed: CancellationToken,
    /// Fired once the client has sent its last request (end of file, or the connection is
    /// being closed) and every request read has been answered: subscriptions end then, since
    /// nothing else would notice that a client which closed the socket is gone.
    pub finished: CancellationToken,
    /// Live subscriptions on this connection (a connection with one is never idle).
    pub subscriptions: Arc<AtomicUsize>,
    /// Tracks tasks that must finish before the daemon exits.
    pub tracker: TaskTracker,
}

/// Everything a handler gets.
#[derive(Debug)]
pub struct RequestContext<'a> {
    /// The daemon.
    pub daemon: &'a Arc<Daemon>,
    /// Who is calling.
    pub caller: &'a Caller,
    /// The connection.
    pub connection: &'a ConnectionHandle,
}

impl RequestContext<'_> {
    /// The caller, as the audit log names it.
    pub fn actor(&self) -> Actor {
        Actor::Peer {
            uid: self.caller.uid,
            pid: self.caller.pid,
        }
    }

    /// -32003 unless `feature` is on.
    pub fn require(&self, feature: Feature) -> Result<(), ErrorObject> {
        if self.daemon.settings().features.is_enabled(feature) {
            Ok(())
        } else {
            Err(feature_disabled(feature))
        }
    }
}

/// -32003 naming the feature and how to turn it on.
pub fn feature_disabled(feature: Feature) -> ErrorObject {
    ErrorObject::new(ErrorCode::FeatureDisabled, feature.disabled_message())
        .with_data(serde_json::json!({ "feature": feature }))
}

/// An append that did not happen: -32004 (the record was not stored; treat it as deny), or
/// -32602 for a record that cannot be stored as given.
pub fn append_error(error: AppendError) -> ErrorObject {
    match error {
        AppendError::Invalid(why) => ErrorObject::new(ErrorCode::InvalidParams, why),
        other => ErrorObject::new(
            ErrorCode::StorageFailure,
            format!("not recorded: {other}; treat this as deny"),
        ),
    }
}

/// The least role allowed to call `method`, or `None` for a method this daemon does not have.
pub fn required_role(method: &str) -> Option<Role> {
    Some(match method {
        m::HELLO
        | m::DAEMON_STATUS
        | m::EDITION_GET
        | m::FEATURES_LIST
        | m::TRACE_HEAD
        | m::TRACE_READ
        | m::TRACE_VERIFY
        | m::TRACE_SUBSCRIBE
        | m::AUDIT_HEAD
        | m::AUDIT_READ
        | m::AUDIT_VERIFY
        | m::POLICY_STATUS
        | m::AUTOPILOT_STATUS
        | m::SESSION_LIST
        | m::SESSION_SHOW
        | m::POLICY_PINS
        | m::POLICY_VERSIONS
        | m::CLOUD_STATUS
        | m::POLICY_PENDING => Role::Viewer,
        m::SESSION_START | m::SESSION_END => Role::Operator,
        // Pulling the kill switch is an admin's act, like changing the policy it overrides.
        m::AUTOPILOT_PAUSE | m::AUTOPILOT_RESUME | m::AUTOPILOT_STOP => Role::Admin,
        m::DECISION_RECORD | m::DECISION_EVALUATE => Role::Operator,
        m::TRACE_REPAIR
        | m::POLICY_RELOAD
        | m::POLICY_PIN
        | m::POLICY_UNPIN
        | m::POLICY_ACCEPT
        | m::CLOUD_POLICY_PUSH
        | m::CLOUD_TEST => Role::Admin,
        // They reach the network on the daemon's credentials.
        m::CLOUD_POLICY_PULL | m::CLOUD_WITNESS => Role::Operator,
        m::DAEMON_SHUTDOWN => Role::Owner,
        _ => return None,
    })
}

/// Runs one request.
pub async fn dispatch(ctx: &RequestContext<'_>, method: &str, params: Option<Value>) -> Handled {
    let Some(required) = required_role(method) else {
        return Handled::error(ErrorObject::new(
            ErrorCode::MethodNotFound,
            format!("unknown method '{method}'"),
        ));
    };
    if ctx.caller.role < required {
        warn!(method, role = %ctx.caller.role, uid = ?ctx.caller.uid, "request refused: role too low");
        ctx.daemon.audit().record_in_background(
            "permission_denied",
            ctx.actor(),
            serde_json::json!({ "method": method, "role": ctx.caller.role, "required_role": required }),
        );
        return Handled::error(
            ErrorObject::new(
                ErrorCode::PermissionDenied,
                format!(
                    "permission denied: {method} needs the {required} role; you are {}",
                    ctx.caller.role
                ),
            )
            .with_data(serde_json::json!({ "required_role": required, "role": ctx.caller.role })),
        );
    }
    let daemon = ctx.daemon;
    // An async fn's future is as large as its largest await point, and every request carries
    // this one: the rare methods with deep futures (the cloud's TLS and WebSocket handshakes,
    // verification, repair) are boxed, so that the two hot ones, `decision.evaluate` and
    // `decision.record`, do not pay for them. Unboxed, `cloud.test` alone cost the 32-client
    // durable throughput a fifth (docs/performance.md).
    match method {
        m::HELLO => Handled::reply(params_then(params, |p| {
            daemon::hello(daemon, ctx.caller, p)
        })),
        m::DAEMON_STATUS => match no_params(params) {
            Ok(()) => Handled::reply(Ok(Box::pin(daemon::status(daemon, ctx.caller.role)).await)),
            Err(e) => Handled::error(e),
        },
        m::DAEMON_SHUTDOWN => match no_params(params) {
            Ok(()) => Handled {
                after: Some(AfterReply::Shutdown),
                ..Handled::reply(Ok(Box::pin(daemon::shutdown(ctx)).await))
            },
            Err(e) => Handled::error(e),
        },
        m::EDITION_GET => Handled::reply(no_params(params).map(|()| features::edition(daemon))),
        m::CLOUD_STATUS => Handled::reply(no_params(params).map(|()| {
            let stores = daemon.stores();
            let trace_head = *stores.trace.watch_head().borrow();
            let audit_head = *daemon.audit().chain().watch_head().borrow();
            daemon.cloud_status().snapshot(trace_head, audit_head)
        })),
        m::FEATURES_LIST => Handled::reply(no_params(params).map(|()| features::list(daemon))),
        m::DECISION_RECORD => match decode_params(params) {
            Ok(p) => Handled::reply(decision::record(ctx, p).await),
            Err(e) => Handled::error(e),
        },
        m::DECISION_EVALUATE => match decode_params(params) {
            Ok(p) => Handled::reply(decision::evaluate(ctx, p).await),
            Err(e) => Handled::error(e),
        },
        m::POLICY_PIN => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(pins::pin(ctx, p)).await),
            Err(e) => Handled::error(e),
        },
        m::POLICY_UNPIN => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(pins::unpin(ctx, p)).await),
            Err(e) => Handled::error(e),
        },
        m::POLICY_PINS => match no_params(params) {
            Ok(()) => Handled::reply(pins::pins(ctx)),
            Err(e) => Handled::error(e),
        },
        m::POLICY_VERSIONS => match no_params(params) {
            Ok(()) => Handled::reply(pins::versions(ctx)),
            Err(e) => Handled::error(e),
        },
        m::CLOUD_TEST => match decode_params(params) {
            Ok(p) => Handled::reply(Ok(Box::pin(crate::cloud::test_config(ctx.daemon, p)).await)),
            Err(e) => Handled::error(e),
        },
        m::CLOUD_POLICY_PUSH => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(cloud::push(daemon, p)).await),
            Err(e) => Handled::error(e),
        },
        m::CLOUD_POLICY_PULL => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(cloud::pull(daemon, p)).await),
            Err(e) => Handled::error(e),
        },
        m::CLOUD_WITNESS => match (
            ctx.require(Feature::AuditIntegrityCheck),
            decode_params(params),
        ) {
            (Ok(()), Ok(p)) => Handled::reply(Box::pin(cloud::witness(daemon, p)).await),
            (Err(e), _) | (_, Err(e)) => Handled::error(e),
        },
        m::POLICY_PENDING => match no_params(params) {
            Ok(()) => Handled::reply(policy::pending(daemon)),
            Err(e) => Handled::error(e),
        },
        m::POLICY_ACCEPT => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(policy::accept(ctx, p)).await),
            Err(e) => Handled::error(e),
        },
        m::POLICY_STATUS => match no_params(params) {
            Ok(()) => Handled::reply(policy::status(daemon)),
            Err(e) => Handled::error(e),
        },
        m::POLICY_RELOAD => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(policy::reload(ctx, p)).await),
            Err(e) => Handled::error(e),
        },
        m::AUTOPILOT_STATUS => {
            Handled::reply(no_params(params).map(|()| autopilot::status(daemon)))
        }
        m::AUTOPILOT_PAUSE => match no_params(params) {
            Ok(()) => Handled::reply(Box::pin(autopilot::change(ctx, Command::Pause)).await),
            Err(e) => Handled::error(e),
        },
        m::AUTOPILOT_RESUME => match no_params(params) {
            Ok(()) => Handled::reply(Box::pin(autopilot::change(ctx, Command::Resume)).await),
            Err(e) => Handled::error(e),
        },
        m::AUTOPILOT_STOP => match no_params(params) {
            Ok(()) => Handled::reply(Box::pin(autopilot::change(ctx, Command::Stop)).await),
            Err(e) => Handled::error(e),
        },
        m::SESSION_START => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(session::start(ctx, p)).await),
            Err(e) => Handled::error(e),
        },
        m::SESSION_END => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(session::end(ctx, p)).await),
            Err(e) => Handled::error(e),
        },
        m::SESSION_LIST => Handled::reply(no_params(params).map(|()| session::list(daemon))),
        m::SESSION_SHOW => Handled::reply(params_then(params, |p| session::show(daemon, p))),
        m::TRACE_HEAD | m::AUDIT_HEAD => match no_params(params) {
            Ok(()) => Handled::reply(Box::pin(trace::head(ctx, trace::chain_of(method))).await),
            Err(e) => Handled::error(e),
        },
        m::TRACE_READ | m::AUDIT_READ => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(trace::read(ctx, trace::chain_of(method), p)).await),
            Err(e) => Handled::error(e),
        },
        m::TRACE_VERIFY | m::AUDIT_VERIFY => match no_params(params) {
            Ok(()) => Handled::reply(Box::pin(trace::verify(ctx, trace::chain_of(method))).await),
            Err(e) => Handled::error(e),
        },
        m::TRACE_SUBSCRIBE => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(trace::subscribe(ctx, p)).await),
            Err(e) => Handled::error(e),
        },
        m::TRACE_REPAIR => match decode_params(params) {
            Ok(p) => Handled::reply(Box::pin(trace::repair(ctx, p)).await),
            Err(e) => Handled::error(e),
        },
        _ => Handled::error(ErrorObject::new(
            ErrorCode::InternalError,
            format!("internal error: '{method}' has a role but no handler"),
        )),
    }
}

/// Methods without parameters accept none, `{}` or `[]`.
fn no_params(params: Option<Value>) -> Result<(), ErrorObject> {
    match params {
        None => Ok(()),
        Some(Value::Object(o)) if o.is_empty() => Ok(()),
        Some(Value::Array(a)) if a.is_empty() => Ok(()),
        Some(Value::Object(o)) => {
            let field = o.keys().next().cloned().unwrap_or_default();
            Err(ErrorObject::invalid_params(
                &field,
                format!("invalid params: this method takes none, got '{field}'"),
            ))
        }
        Some(_) => Err(ErrorObject::invalid_params(
            "params",
            "invalid params: this method takes none",
        )),
    }
}

fn params_then<P: DeserializeOwned, T>(
    params: Option<Value>,
    handler: impl FnOnce(P) -> Result<T, ErrorObject>,
) -> Result<T, ErrorObject> {
    handler(decode_params(params)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future of `dispatch`, without running it.
    fn dispatch_future_bytes() -> usize {
        fn size<'a, F: std::future::Future>(
            _: fn(&'a RequestContext<'a>, &'a str, Option<Value>) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        size(dispatch)
    }

    #[test]
    fn the_future_every_request_carries_stays_small() {
        // 3.2 KB with the rare methods boxed (the two hot ones are inline); 14.6 KB when they
        // were not, and every decision paid for it (see the comment in `dispatch`).
        let bytes = dispatch_future_bytes();
        assert!(bytes <= 4096, "dispatch's future is {bytes} bytes");
    }

    #[test]
    fn every_method_has_a_role_and_unknown_ones_have_none() {
        for method in [
            m::HELLO,
            m::DAEMON_STATUS,
            m::EDITION_GET,
            m::FEATURES_LIST,
            m::TRACE_READ,
        ] {
            assert_eq!(required_role(method), Some(Role::Viewer), "{method}");
        }
        assert_eq!(required_role(m::DECISION_RECORD), Some(Role::Operator));
        assert_eq!(required_role(m::TRACE_REPAIR), Some(Role::Admin));
        for method in [m::AUTOPILOT_STATUS, m::SESSION_LIST, m::SESSION_SHOW] {
            assert_eq!(required_role(method), Some(Role::Viewer), "{method}");
        }
        for method in [m::SESSION_START, m::SESSION_END] {
            assert_eq!(required_role(method), Some(Role::Operator), "{method}");
        }
        for method in [m::AUTOPILOT_PAUSE, m::AUTOPILOT_RESUME, m::AUTOPILOT_STOP] {
            assert_eq!(required_role(method), Some(Role::Admin), "{method}");
        }
        assert_eq!(required_role(m::DAEMON_SHUTDOWN), Some(Role::Owner));
        assert_eq!(required_role(m::CLOUD_WITNESS), Some(Role::Operator));
        assert_eq!(required_role("decision.evaluate.nope"), None);
    }

    #[test]
    fn parameterless_methods_reject_members() {
        assert!(no_params(None).is_ok());
        assert!(no_params(Some(serde_json::json!({}))).is_ok());
        let e = no_params(Some(serde_json::json!({"verbose": true}))).unwrap_err();
        assert_eq!(e.data, Some(serde_json::json!({"field": "verbose"})));
    }
}
