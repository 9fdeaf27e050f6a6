//! `autopilot.status`, `autopilot.pause`, `autopilot.resume` and `autopilot.stop`: the kill
//! switch. Every transition is an audit event; a command that changes nothing records nothing.

use atlasbridge_protocol::methods::AutopilotStatus;
use atlasbridge_protocol::{ErrorCode, ErrorObject};
use serde_json::json;
use tracing::{info, warn};

use super::RequestContext;
use crate::audit::Actor;
use crate::decisions::autopilot::Command;
use crate::state::Daemon;

pub(super) fn status(daemon: &Daemon) -> AutopilotStatus {
    daemon.stores().decisions.autopilot.snapshot().to_status()
}

/// Pauses, resumes or stops the autopilot and records the transition.
///
/// A pause or a stop takes effect before its audit event is written, and holds even if the write
/// fails (the failure is logged and shows in `daemon.status`): a person pulling the switch must
/// never be refused because a disk is full. A resume gives agents their automatic answers back,
/// so it happens only once its event is on record.
pub(super) async fn change(
    ctx: &RequestContext<'_>,
    command: Command,
) -> Result<AutopilotStatus, ErrorObject> {
    change_as(ctx.daemon, ctx.actor(), command).await
}

/// Flips the kill switch on behalf of `actor` (a client, or the cloud's `kill_switch`), with its
/// audit event.
pub(crate) async fn change_as(
    daemon: &crate::state::Daemon,
    actor: Actor,
    command: Command,
) -> Result<AutopilotStatus, ErrorObject> {
    let autopilot = &daemon.stores().decisions.autopilot;
    // Held across the change and its audit event, so that the log's order is the switch's.
    let _order = autopilot.serialise().await;
    let from = autopilot.state();
    let to = match autopilot.plan(command) {
        Ok(Some(to)) => to,
        Ok(None) => return Ok(autopilot.snapshot().to_status()),
        Err(refusal) => {
            return Err(
                ErrorObject::new(ErrorCode::InvalidParams, refusal.to_string())
                    .with_data(json!({ "state": from.name() })),
            );
        }
    };
    let by = describe(&actor);
    let details = json!({ "from": from.name(), "to": to.name() });
    let audit = daemon.audit();
    let apply = || {
        autopilot
            .apply(command, &by, crate::clock::now_rfc3339())
            .map_err(|refusal| ErrorObject::new(ErrorCode::InvalidParams, refusal.to_string()))
    };
    if command == Command::Resume {
        audit
            .record(command.event_type(), &actor, details)
            .await
            .map_err(|e| {
                ErrorObject::new(
                    ErrorCode::StorageFailure,
                    format!(
                        "not resumed: the audit event could not be written ({e}); the autopilot \
                         stays {}",
                        from.name()
                    ),
                )
            })?;
        apply()?;
    } else {
        apply()?;
        if audit
            .record(command.event_type(), &actor, details)
            .await
            .is_err()
        {
            warn!(
                to = to.name(),
                "the autopilot changed but its audit event was not written"
            );
        }
    }
    info!(from = from.name(), to = to.name(), by = %by, "autopilot changed");
    Ok(autopilot.snapshot().to_status())
}

/// The actor as `changed_by` shows it.
fn describe(actor: &Actor) -> String {
    match actor {
        Actor::Daemon => "daemon".to_owned(),
        Actor::Signal(name) => format!("signal {name}"),
        Actor::Cloud => "cloud".to_owned(),
        Actor::Peer { uid, pid } => {
            let uid = uid.map_or_else(|| "?".to_owned(), |uid| uid.to_string());
            match pid {
                Some(pid) => format!("uid {uid} (pid {pid})"),
                None => format!("uid {uid}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_described_briefly() {
        assert_eq!(
            describe(&Actor::Peer {
                uid: Some(1000),
                pid: Some(42)
            }),
            "uid 1000 (pid 42)"
        );
        assert_eq!(
            describe(&Actor::Peer {
                uid: None,
                pid: None
            }),
            "uid ?"
        );
        assert_eq!(describe(&Actor::Signal("HUP")), "signal HUP");
    }
}
