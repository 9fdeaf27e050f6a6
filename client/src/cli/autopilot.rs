//! `autopilot …`: the kill switch. `pause` holds every automatic answer back until `resume`;
//! `stop` holds them back until the daemon restarts. Decisions are still evaluated and recorded.

use std::process::ExitCode;

use atlasbridge_protocol::methods::{self as m, AutopilotStatus};
use clap::Subcommand;

use super::{CliError, Context};

/// The kill switch.
#[derive(Debug, Subcommand)]
pub enum AutopilotCommand {
    /// The autopilot's state: running, paused or stopped, since when and by whom.
    Status,
    /// Every answer is require_human until `autopilot resume` (admin role).
    Pause,
    /// The policy answers again (admin role). A stopped autopilot cannot be resumed.
    Resume,
    /// Every answer is require_human until the daemon restarts (admin role).
    Stop,
}

pub(super) fn run(ctx: &Context, command: &AutopilotCommand) -> Result<ExitCode, CliError> {
    let method = match command {
        AutopilotCommand::Status => m::AUTOPILOT_STATUS,
        AutopilotCommand::Pause => m::AUTOPILOT_PAUSE,
        AutopilotCommand::Resume => m::AUTOPILOT_RESUME,
        AutopilotCommand::Stop => m::AUTOPILOT_STOP,
    };
    let status: AutopilotStatus = ctx.connect()?.call(method, None::<()>)?;
    if ctx.out.is_json() {
        ctx.out.json(&status);
    } else {
        println!("{}", describe(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// `autopilot paused since T by uid 1000 (pid 42): every answer is require_human`.
fn describe(status: &AutopilotStatus) -> String {
    let by = status
        .changed_by
        .as_ref()
        .map(|by| format!(" by {by}"))
        .unwrap_or_default();
    let meaning = match status.state.as_str() {
        "running" => "the policy answers",
        "paused" => "every answer is require_human until `atlasbridge autopilot resume`",
        "stopped" => "every answer is require_human until the daemon restarts",
        _ => "unknown state",
    };
    format!(
        "autopilot {} since {}{by}: {meaning}",
        status.state, status.since
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_what_the_state_means() {
        let status = AutopilotStatus {
            state: "paused".into(),
            since: "2026-01-01T00:00:00.000000Z".into(),
            changed_by: Some("uid 1000 (pid 42)".into()),
        };
        assert_eq!(
            describe(&status),
            "autopilot paused since 2026-01-01T00:00:00.000000Z by uid 1000 (pid 42): every \
             answer is require_human until `atlasbridge autopilot resume`"
        );
        let first = AutopilotStatus {
            state: "running".into(),
            since: "t".into(),
            changed_by: None,
        };
        assert_eq!(
            describe(&first),
            "autopilot running since t: the policy answers"
        );
    }
}
