//! `cloud …`: the uplink to the governance cloud. `status` asks the daemon how its link is.

use std::process::ExitCode;

use std::path::{Path, PathBuf};

use atlasbridge_protocol::methods::{
    self as m, CloudPolicyPullParams, CloudPolicyPullResult, CloudPolicyPushParams,
    CloudPolicyPushResult, CloudStatusResult, CloudStreamStatus,
};
use atlasbridge_protocol::policy;
use clap::Subcommand;
use serde_json::json;

use super::{CliError, Context};

/// The cloud uplink.
#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// The link's state, its last heartbeat, the token's expiry and how far behind the cloud's
    /// copy of the trace is.
    Status,
    /// The cloud's policy registry, through the daemon's link.
    #[command(subcommand)]
    Policy(CloudPolicyCommand),
    /// Configures the uplink: asks for what is missing on a terminal (flags for scripts),
    /// validates it, tests the connection through the running daemon, and writes the [cloud]
    /// section of the config file (mode 0600). The API key is never shown.
    Setup(super::cloud_setup::SetupArgs),
}

/// The cloud's policy registry.
#[derive(Debug, Subcommand)]
pub enum CloudPolicyCommand {
    /// Uploads a local policy file as a new version of the policy it names, signed by this
    /// runtime (admin role). The file must load and be self-contained (no `extends`).
    Push {
        /// The policy file.
        file: PathBuf,
    },
    /// Fetches the latest version of a policy, checked as an offered one is (signature, hash,
    /// validity), and prints it or writes it to a file. Nothing is applied.
    Pull {
        /// The policy's name in the registry.
        name: String,
        /// Write the policy here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What changes in meaning from the cloud's latest version of NAME to a local policy file
    /// (the daemon's active policy file when none is given). Exit 0 equal, 1 different.
    Diff {
        /// The policy's name in the registry.
        name: String,
        /// The local policy file.
        file: Option<PathBuf>,
    },
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
        CloudCommand::Policy(command) => run_policy(ctx, command),
        CloudCommand::Setup(args) => super::cloud_setup::run(ctx, args),
    }
}

fn run_policy(ctx: &Context, command: &CloudPolicyCommand) -> Result<ExitCode, CliError> {
    match command {
        CloudPolicyCommand::Push { file } => {
            // Checked here first, so that a bad file is reported with its lines before anything
            // is sent.
            let loaded = policy::load_file(file).map_err(|e| invalid_file(file, &e))?;
            let yaml = std::fs::read_to_string(file).map_err(|e| {
                CliError::Unreadable(format!("cannot read {}: {e}", file.display()))
            })?;
            let pushed: CloudPolicyPushResult = ctx
                .connect()?
                .call(m::CLOUD_POLICY_PUSH, Some(CloudPolicyPushParams { yaml }))?;
            if ctx.out.is_json() {
                ctx.out.json(&pushed);
            } else {
                println!(
                    "pushed {} as version {} (hash {})",
                    pushed.name,
                    pushed.version,
                    loaded.short_hash()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CloudPolicyCommand::Pull { name, out } => {
            let pulled = pull(ctx, name)?;
            match out {
                Some(path) => {
                    std::fs::write(path, &pulled.yaml).map_err(|e| {
                        CliError::Failed(format!("cannot write {}: {e}", path.display()))
                    })?;
                    if ctx.out.is_json() {
                        ctx.out.json(&pulled);
                    } else {
                        println!(
                            "{} version {} written to {} (hash {}{})",
                            pulled.name,
                            pulled.version,
                            path.display(),
                            pulled.content_hash,
                            if pulled.signature_checked {
                                ", signature verified"
                            } else {
                                ""
                            }
                        );
                    }
                }
                None if ctx.out.is_json() => ctx.out.json(&pulled),
                None => print!("{}", pulled.yaml),
            }
            Ok(ExitCode::SUCCESS)
        }
        CloudPolicyCommand::Diff { name, file } => {
            let local_file = match file {
                Some(file) => file.clone(),
                None => active_policy_file(ctx)?,
            };
            let local =
                policy::load_file(&local_file).map_err(|e| invalid_file(&local_file, &e))?;
            let pulled = pull(ctx, name)?;
            let label = PathBuf::from(format!("cloud:{}@{}", pulled.name, pulled.version));
            let cloud =
                policy::load_str(&pulled.yaml, &label).map_err(|e| invalid_file(&label, &e))?;
            let changes = policy::diff(&cloud.policy, &local.policy);
            let equal = changes.is_empty();
            if ctx.out.is_json() {
                ctx.out.json(&json!({
                    "equal": equal,
                    "cloud": { "name": pulled.name, "version": pulled.version, "hash": cloud.hash },
                    "local": { "file": local_file, "hash": local.hash },
                    "diff": changes,
                }));
            } else if equal {
                println!(
                    "no difference in meaning between {} version {} and {} (hash {})",
                    pulled.name,
                    pulled.version,
                    local_file.display(),
                    local.short_hash()
                );
            } else {
                print!("{changes}");
            }
            Ok(if equal {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::EXIT_FAILURE)
            })
        }
    }
}

fn pull(ctx: &Context, name: &str) -> Result<CloudPolicyPullResult, CliError> {
    Ok(ctx.connect()?.call(
        m::CLOUD_POLICY_PULL,
        Some(CloudPolicyPullParams {
            name: name.to_owned(),
        }),
    )?)
}

/// The file of the daemon's active policy.
fn active_policy_file(ctx: &Context) -> Result<PathBuf, CliError> {
    let status: m::PolicyStatus = ctx.connect()?.call(m::POLICY_STATUS, None::<()>)?;
    status.source.map(PathBuf::from).ok_or_else(|| {
        CliError::Failed(
            "the daemon's active policy is the built-in default, not a file: name a FILE".into(),
        )
    })
}

fn invalid_file(file: &Path, error: &policy::LoadError) -> CliError {
    let lines: Vec<String> = error.errors.iter().map(ToString::to_string).collect();
    CliError::Failed(format!(
        "{} does not load:\n{}",
        file.display(),
        lines.join("\n")
    ))
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
