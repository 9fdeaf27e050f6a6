//! `session.start`, `session.end`, `session.list` and `session.show`: the session registry whose
//! fields the events of a session inherit. Start and end are audit events.

use atlasbridge_protocol::methods::{
    SessionEndParams, SessionInfo, SessionList, SessionShowParams, SessionStartParams,
};
use atlasbridge_protocol::{ErrorCode, ErrorObject};
use serde_json::json;

use super::RequestContext;
use crate::decisions::sessions::SessionError;
use crate::state::Daemon;

/// Longest accepted identifier, as for `decision.evaluate`.
const MAX_ID_CHARS: usize = 256;

/// Longest accepted free value (repo path, branch…), as for `decision.evaluate`.
const MAX_VALUE_CHARS: usize = 4096;

/// Most tags a session keeps: the registry holds up to 10,000 sessions in memory, so what one
/// session may hold is bounded too.
const MAX_TAGS: usize = 32;

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ErrorObject> {
    if value.chars().count() > max {
        return Err(ErrorObject::invalid_params(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(())
}

fn check_session_id(value: &str) -> Result<(), ErrorObject> {
    if value.is_empty() {
        return Err(ErrorObject::invalid_params(
            "session_id",
            "session_id must not be empty",
        ));
    }
    check_len("session_id", value, MAX_ID_CHARS)
}

fn validate(params: &SessionStartParams) -> Result<(), ErrorObject> {
    check_session_id(&params.session_id)?;
    for (field, value, max) in [
        ("agent_id", &params.agent_id, MAX_ID_CHARS),
        ("tool_id", &params.tool_id, MAX_ID_CHARS),
        ("repo", &params.repo, MAX_VALUE_CHARS),
        ("branch", &params.branch, MAX_VALUE_CHARS),
        ("ci_status", &params.ci_status, MAX_VALUE_CHARS),
    ] {
        if let Some(value) = value {
            check_len(field, value, max)?;
        }
    }
    let tags = params.session_tags.as_deref().unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(ErrorObject::invalid_params(
            "session_tags",
            format!("session_tags holds more than {MAX_TAGS} tags"),
        ));
    }
    for (index, tag) in tags.iter().enumerate() {
        check_len(&format!("session_tags[{index}]"), tag, MAX_ID_CHARS)?;
    }
    Ok(())
}

fn not_live(session_id: &str) -> ErrorObject {
    ErrorObject::invalid_params("session_id", format!("no live session '{session_id}'"))
}

/// What the audit log keeps of a session: everything but the counters.
fn audited(session: &SessionInfo) -> serde_json::Value {
    json!({
        "session_id": session.session_id,
        "agent_id": session.agent_id,
        "tool_id": session.tool_id,
        "repo": session.repo,
        "branch": session.branch,
        "ci_status": session.ci_status,
        "session_tags": session.session_tags,
    })
}

pub(super) async fn start(
    ctx: &RequestContext<'_>,
    params: SessionStartParams,
) -> Result<SessionInfo, ErrorObject> {
    validate(&params)?;
    let started = ctx
        .daemon
        .stores()
        .decisions
        .sessions
        .start(params, crate::clock::now_rfc3339())
        .map_err(|e| match e {
            SessionError::Full => ErrorObject::new(ErrorCode::Overloaded, e.to_string()),
        })?;
    let mut details = audited(&started.session);
    details["renewed"] = json!(started.renewed);
    // The session is registered whether or not the event is written: it only fills in fields an
    // agent could have sent itself. A failure is logged by the audit log.
    let _ = ctx
        .daemon
        .audit()
        .record("session_started", &ctx.actor(), details.clone())
        .await;
    ctx.daemon.cloud_events().emit(
        atlasbridge_protocol::cloud::messages::kind::SESSION_STARTED,
        details,
    );
    Ok(started.session)
}

pub(super) async fn end(
    ctx: &RequestContext<'_>,
    params: SessionEndParams,
) -> Result<SessionInfo, ErrorObject> {
    check_session_id(&params.session_id)?;
    let Some(session) = ctx
        .daemon
        .stores()
        .decisions
        .sessions
        .end(&params.session_id)
    else {
        return Err(not_live(&params.session_id));
    };
    let mut details = audited(&session);
    details["decisions"] = json!(session.decisions);
    let _ = ctx
        .daemon
        .audit()
        .record("session_ended", &ctx.actor(), details.clone())
        .await;
    ctx.daemon.cloud_events().emit(
        atlasbridge_protocol::cloud::messages::kind::SESSION_ENDED,
        details,
    );
    Ok(session)
}

pub(super) fn list(daemon: &Daemon) -> SessionList {
    SessionList {
        sessions: daemon.stores().decisions.sessions.list(),
    }
}

pub(super) fn show(daemon: &Daemon, params: SessionShowParams) -> Result<SessionInfo, ErrorObject> {
    daemon
        .stores()
        .decisions
        .sessions
        .get(&params.session_id)
        .ok_or_else(|| not_live(&params.session_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_params_are_bounded() {
        let ok = SessionStartParams {
            session_id: "s".into(),
            session_tags: Some(vec!["ci".into()]),
            ..SessionStartParams::default()
        };
        assert!(validate(&ok).is_ok());
        let empty = SessionStartParams::default();
        assert_eq!(
            validate(&empty).unwrap_err().data,
            Some(json!({"field": "session_id"}))
        );
        let many = SessionStartParams {
            session_tags: Some(vec!["t".into(); MAX_TAGS + 1]),
            ..ok.clone()
        };
        assert_eq!(
            validate(&many).unwrap_err().data,
            Some(json!({"field": "session_tags"}))
        );
        let long = SessionStartParams {
            session_tags: Some(vec!["ci".into(), "x".repeat(MAX_ID_CHARS + 1)]),
            ..ok
        };
        assert_eq!(
            validate(&long).unwrap_err().data,
            Some(json!({"field": "session_tags[1]"}))
        );
    }
}
