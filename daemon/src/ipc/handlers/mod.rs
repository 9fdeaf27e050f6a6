//! Method dispatch: the one place where a method name meets its handler, its minimum role and
//! its feature gate, and where engine errors become JSON-RPC errors.

mod daemon;
mod features;

use atlasbridge_protocol::jsonrpc::decode_params;
use atlasbridge_protocol::methods::{self as m, Role};
use atlasbridge_protocol::{ErrorCode, ErrorObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::warn;

use super::peer::Caller;
use crate::state::Daemon;

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

/// The least role allowed to call `method`, or `None` for a method this daemon does not have.
pub fn required_role(method: &str) -> Option<Role> {
    Some(match method {
        m::HELLO | m::DAEMON_STATUS | m::EDITION_GET | m::FEATURES_LIST => Role::Viewer,
        m::DAEMON_SHUTDOWN => Role::Owner,
        _ => return None,
    })
}

/// Runs one request.
pub async fn dispatch(
    daemon: &Daemon,
    caller: &Caller,
    method: &str,
    params: Option<Value>,
) -> Handled {
    let Some(required) = required_role(method) else {
        return Handled::error(ErrorObject::new(
            ErrorCode::MethodNotFound,
            format!("unknown method '{method}'"),
        ));
    };
    if caller.role < required {
        warn!(method, role = %caller.role, uid = ?caller.uid, "request refused: role too low");
        return Handled::error(
            ErrorObject::new(
                ErrorCode::PermissionDenied,
                format!(
                    "permission denied: {method} needs the {required} role; you are {}",
                    caller.role
                ),
            )
            .with_data(serde_json::json!({ "required_role": required, "role": caller.role })),
        );
    }
    match method {
        m::HELLO => Handled::reply(params_then(params, |p| daemon::hello(daemon, caller, p))),
        m::DAEMON_STATUS => Handled::reply(no_params(params).map(|()| daemon::status(daemon))),
        m::DAEMON_SHUTDOWN => match no_params(params) {
            Ok(()) => Handled {
                after: Some(AfterReply::Shutdown),
                ..Handled::reply(Ok(daemon::shutdown(caller)))
            },
            Err(e) => Handled::error(e),
        },
        m::EDITION_GET => Handled::reply(no_params(params).map(|()| features::edition(daemon))),
        m::FEATURES_LIST => Handled::reply(no_params(params).map(|()| features::list(daemon))),
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

    #[test]
    fn every_method_has_a_role_and_unknown_ones_have_none() {
        for method in [m::HELLO, m::DAEMON_STATUS, m::EDITION_GET, m::FEATURES_LIST] {
            assert_eq!(required_role(method), Some(Role::Viewer), "{method}");
        }
        assert_eq!(required_role(m::DAEMON_SHUTDOWN), Some(Role::Owner));
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
