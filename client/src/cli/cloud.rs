//! `cloud …`: the uplink to the governance cloud. `status` asks the daemon how its link is.

use std::process::ExitCode;

use atlasbridge_protocol::methods::{self as m, CloudStatusResult, CloudStreamStatus};
use clap::Subcommand;

use super::{CliError, Context};

/// The cloud uplink.
#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// The link's state, its last heartbeat, the token's expiry and how far behind the cloud's
    /// copy of the trace is.
    Status,
}

pub(super) fn run(ctx: &Context, command: &CloudCommand) -> Result<ExitCode, CliError> {
    match command {
        CloudCommand::Status => {
            let status: CloudStatusResult = ctx.connect()?.call(m::CLOUD_STATUS, None::<()>)?;
            if ctx.out.is_json() {
                ctx.out.json(&status);
            } else {
                print!("{}", describe(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The human form of `cloud status`.
fn describe(status: &CloudStatusResult) -> String {
    if !status.enabled {
        let why = match status.reason.as_deref() {
            Some("feature_disabled") => {
                " ([cloud] enabled = true, but this edition's cloud_control_channel flag is off)"
            }
            _ => "",
        };
        return format!("Cloud governance: disabled{why}\n");
    }
    let mut out = String::new();
    let state = match &status.reason {
        Some(reason) => format!("{} ({reason})", status.state),
        None => status.state.clone(),
    };
    let mut line = |label: &str, value: &str| out.push_str(&format!("{label:<17}{value}\n"));
    line("Cloud:", &state);
    if let Some(endpoint) = &status.endpoint {
        line("Endpoint:", endpoint);
    }
    if let Some(runtime_id) = &status.runtime_id {
        line("Runtime:", runtime_id);
    }
    if let Some(since) = &status.connected_since {
        line("Connected since:", since);
    }
    let heartbeat = format!(
        "sent {}, acknowledged {}",
        status.last_heartbeat_sent.as_deref().unwrap_or("never"),
        status.last_heartbeat_acked.as_deref().unwrap_or("never")
    );
    line("Heartbeat:", &heartbeat);
    if let Some(expiry) = &status.token_expires_at {
        line("Token expires:", expiry);
    }
    if let Some(skew) = status.clock_skew_s {
        line(
            "Clock skew:",
            &format!("{skew:+} s (over the ±30 s tolerated)"),
        );
    }
    line("Trace:", &stream(&status.trace));
    line("Audit log:", &stream(&status.audit));
    line("Policy sync:", &status.policy_sync);
    line("Connections:", &status.connections.to_string());
    if let Some(error) = &status.last_error {
        line("Last error:", error);
    }
    out
}

fn stream(progress: &CloudStreamStatus) -> String {
    let head = progress
        .head_seq
        .map_or_else(|| "empty".to_owned(), |seq| format!("head {seq}"));
    let acked = progress.acked_seq.map_or_else(
        || "nothing acknowledged".to_owned(),
        |seq| format!("acknowledged through {seq}"),
    );
    format!("{head}, {acked}, {} behind", progress.backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(head: Option<u64>, acked: Option<u64>, backlog: u64) -> CloudStreamStatus {
        CloudStreamStatus {
            head_seq: head,
            acked_seq: acked,
            backlog,
        }
    }

    #[test]
    fn disabled_is_one_line_and_connected_shows_the_backlog() {
        let mut status = CloudStatusResult {
            enabled: false,
            state: "disabled".into(),
            reason: None,
            endpoint: None,
            runtime_id: None,
            connected_since: None,
            last_heartbeat_sent: None,
            last_heartbeat_acked: None,
            token_expires_at: None,
            clock_skew_s: None,
            trace: progress(None, None, 0),
            audit: progress(None, None, 0),
            policy_sync: "disabled".into(),
            connections: 0,
            last_error: None,
        };
        assert_eq!(describe(&status), "Cloud governance: disabled\n");
        status.enabled = true;
        status.state = "connected".into();
        status.trace = progress(Some(99), Some(89), 10);
        let text = describe(&status);
        assert!(text.contains("Cloud:           connected\n"), "{text}");
        assert!(
            text.contains("Trace:           head 99, acknowledged through 89, 10 behind"),
            "{text}"
        );
    }
}
