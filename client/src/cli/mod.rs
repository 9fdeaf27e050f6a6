//! The `atlasbridge` command line.
//!
//! Exit status: 0 success · 1 failure (the daemon refused, bad input) · 2 the daemon is not
//! running or could not be reached · 3 the feature is not enabled in this edition.
//! `--json` prints one JSON document on stdout, also for errors (`{"error": {...}}`), so that
//! scripts never have to parse human text.

mod against_cloud;
mod autopilot;
mod cloud;
mod cloud_setup;
mod completions;
mod daemon;
mod decide;
pub mod doctor;
mod hook;
pub use daemon::{DAEMON_BIN_ENV, DaemonCommand};
mod info;
mod local;
mod migrate;
mod output;
mod policy;
mod risk;
mod service;
mod session;
mod trace;
pub use autopilot::AutopilotCommand;
pub use cloud::CloudCommand;
pub use completions::CompletionsArgs;
pub use decide::DecideArgs;
pub use doctor::DoctorArgs;
pub use hook::HookCommand;
pub use migrate::MigrateArgs;
pub use policy::PolicyCommand;
pub use risk::RiskCommand;
pub use service::{ServiceArgs, ServiceCommand};
pub use session::SessionCommand;
pub use trace::{AuditCommand, CheckpointCommand, TraceCommand};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use atlasbridge_protocol::ErrorCode;
use atlasbridge_protocol::paths::{self, ProcessEnvironment};
use clap::{Parser, Subcommand};

use crate::{ClientError, blocking};
use output::Output;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the request failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: the daemon is not running or not reachable.
pub const EXIT_UNAVAILABLE: u8 = 2;
/// Exit status: the feature is not enabled in this edition.
pub const EXIT_FEATURE_DISABLED: u8 = 3;

/// Govern what AI coding agents do: drive and query the local atlasbridged daemon.
#[derive(Debug, Parser)]
#[command(name = "atlasbridge", version, about, long_about = None, propagate_version = true)]
pub struct Args {
    /// Daemon socket [default: $ATLASBRIDGE_SOCKET, else $XDG_RUNTIME_DIR/atlasbridge/atlasbridged.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print one JSON document instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the daemon's answer.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon at a glance: running, version, edition, cloud.
    Status,
    /// The active edition, where it came from, and the version.
    Edition,
    /// Every feature flag: on/off, the edition that enables it, and the source of its value.
    Features,
    /// Start, stop or inspect the daemon process.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// The decision trace: verify, read, follow, migrate, repair, export checkpoints.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// The audit log of the daemon's own events: verify, read, repair.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The risk classifier: assess a decision's inputs locally.
    #[command(subcommand)]
    Risk(RiskCommand),
    /// Ask the daemon to decide one prompt event; the exit status is the answer: 0 auto_reply,
    /// 10 require_human, 11 deny, 12 notify_only.
    Decide(DecideArgs),
    /// Policy files: validate, test an event, hash, diff.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The kill switch: pause, resume or stop automatic answers; status.
    #[command(subcommand)]
    Autopilot(AutopilotCommand),
    /// Agent sessions: start (its events inherit its fields), end, list, show.
    #[command(subcommand)]
    Session(SessionCommand),
    /// The uplink to the governance cloud: status.
    #[command(subcommand)]
    Cloud(CloudCommand),
    /// Run the daemon as a login service (systemd user unit, launchd agent): install,
    /// uninstall, status.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Agent hooks: answer a Claude Code PreToolUse event; install or uninstall the hook.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Checks the installation and prints the fix for each problem.
    ///
    /// Binaries, socket, permissions, data directory, config, policy, the heads of the trace and
    /// the audit log, disk space and cloud, with the daemon running or stopped; nothing is
    /// changed. Exit 0 when no check failed, 1 otherwise.
    Doctor(DoctorArgs),
    /// Prints the completion script for a shell.
    ///
    /// bash: `atlasbridge completions bash > ~/.local/share/bash-completion/completions/atlasbridge`;
    /// zsh: into a directory on `$fpath` as `_atlasbridge`; fish:
    /// `~/.config/fish/completions/atlasbridge.fish`.
    Completions(CompletionsArgs),
}

/// What a command needs from the global options.
#[derive(Debug)]
pub(crate) struct Context {
    pub socket: PathBuf,
    /// `--socket` as the user gave it, to repeat in suggested commands.
    pub socket_flag: Option<PathBuf>,
    pub timeout: Duration,
    pub out: Output,
}

impl Context {
    pub(crate) fn connect(&self) -> Result<blocking::Client, ClientError> {
        let mut client = blocking::Client::connect(&self.socket)?;
        client.set_timeout(self.timeout)?;
        Ok(client)
    }

    /// `atlasbridge daemon start`, with `--socket` when the user chose one.
    pub(crate) fn start_command(&self) -> String {
        match &self.socket_flag {
            Some(socket) => format!("atlasbridge --socket {} daemon start", socket.display()),
            None => "atlasbridge daemon start".to_owned(),
        }
    }
}

/// A command's failure, mapped to an exit status and a message by [`report`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Failed(String),
    /// A file could not be read (exit status 2, like an unreachable daemon).
    #[error("{0}")]
    Unreadable(String),
    /// A feature the command needs is off.
    #[error("{}", .0.disabled_message())]
    FeatureDisabled(atlasbridge_protocol::features::Feature),
}

/// Entry point of the `atlasbridge` binary.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let args = Args::parse();
    let out = Output::new(args.json);
    let socket = match paths::socket_path(args.socket.as_deref(), &ProcessEnvironment) {
        Ok(socket) => socket,
        Err(e) => {
            if let Command::Hook(HookCommand::ClaudeCode(hook_args)) = &args.command {
                return hook::answer_without_daemon(hook_args, &e.to_string());
            }
            return out.error("bad_socket_path", &e.to_string(), EXIT_FAILURE);
        }
    };
    let ctx = Context {
        socket,
        socket_flag: args.socket.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        out,
    };
    let result = match &args.command {
        Command::Status => info::status(&ctx),
        Command::Edition => info::edition(&ctx),
        Command::Features => info::features(&ctx),
        Command::Daemon(command) => daemon::run(&ctx, command),
        Command::Trace(command) => trace::run_trace(&ctx, command),
        Command::Audit(command) => trace::run_audit(&ctx, command),
        Command::Risk(command) => risk::run(&ctx, command),
        Command::Decide(args) => decide::run(&ctx, args),
        Command::Policy(command) => policy::run(&ctx, command),
        Command::Autopilot(command) => autopilot::run(&ctx, command),
        Command::Session(command) => session::run(&ctx, command),
        Command::Cloud(command) => cloud::run(&ctx, command),
        Command::Service(command) => service::run(&ctx, command),
        Command::Hook(command) => hook::run(&ctx, command),
        Command::Doctor(args) => doctor::run(&ctx, args),
        Command::Completions(args) => completions::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => report(&ctx, &e),
    }
}

/// Exit status when whoever reads our output went away (`atlasbridge trace tail | head`): what
/// a shell reports for a process killed by SIGPIPE, 128 + 13.
const EXIT_BROKEN_PIPE: i32 = 141;

/// Rust ignores SIGPIPE, so printing into a closed pipe panics with "Broken pipe" instead of
/// ending the process quietly as command-line tools do. That panic, and only that one, exits
/// with [`EXIT_BROKEN_PIPE`] and no message; any other panic is reported as before.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        report(info);
    }));
}

fn report(ctx: &Context, error: &CliError) -> ExitCode {
    let out = &ctx.out;
    match error {
        CliError::Client(ClientError::NotRunning { .. }) => out.error(
            "daemon_not_running",
            &format!("{error}; start it with `{}`", ctx.start_command()),
            EXIT_UNAVAILABLE,
        ),
        CliError::Client(ClientError::Rpc(e)) if e.code == ErrorCode::FeatureDisabled => {
            out.error("feature_disabled", &e.message, EXIT_FEATURE_DISABLED)
        }
        CliError::Client(ClientError::Rpc(e)) => out.rpc_error(e, EXIT_FAILURE),
        CliError::Client(
            ClientError::Connect { .. }
            | ClientError::Io(_)
            | ClientError::Timeout(_)
            | ClientError::Closed
            | ClientError::Protocol(_),
        ) => out.error("daemon_unreachable", &error.to_string(), EXIT_UNAVAILABLE),
        CliError::Client(ClientError::Path(_)) => {
            out.error("bad_socket_path", &error.to_string(), EXIT_FAILURE)
        }
        // The command line reads subscriptions itself; these come only from the library's.
        CliError::Client(ClientError::SubscriptionEnded(_) | ClientError::AlreadySubscribed) => {
            out.error("failed", &error.to_string(), EXIT_FAILURE)
        }
        CliError::Failed(message) => out.error("failed", message, EXIT_FAILURE),
        CliError::Unreadable(message) => out.error("unreadable", message, EXIT_UNAVAILABLE),
        CliError::FeatureDisabled(_) => out.error(
            "feature_disabled",
            &error.to_string(),
            EXIT_FEATURE_DISABLED,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
