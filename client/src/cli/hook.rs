//! `atlasbridge hook …`: the daemon as a coding agent's permission hook.
//!
//! `hook claude-code` answers one Claude Code `PreToolUse` event (JSON on standard input) with
//! the daemon's decision, in the JSON Claude Code reads on standard output. Whatever goes wrong
//! — the daemon down, slow or refusing, input that is not a hook event — the answer is `ask`
//! (`deny` with `--fail-closed`), never `allow`, and the exit status is 0 so that Claude Code
//! reads it.

mod claude_code;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use atlasbridge_protocol::methods::{self as m, EvaluateResult};
use clap::{CommandFactory, Subcommand};

use super::{CliError, Context};
use crate::{ClientError, blocking};
use claude_code::{HookDecision, PreToolUse};

/// How long `hook claude-code` waits, for its input and the daemon's answer together, unless
/// `--timeout` says otherwise: far below Claude Code's own hook timeout, so that a slow daemon
/// gets a clear `ask` rather than Claude Code's timeout.
pub(crate) const DEFAULT_HOOK_TIMEOUT_S: u64 = 5;

/// Longest hook input read (a `Write` event carries the whole file).
const MAX_INPUT_BYTES: u64 = 32 * 1024 * 1024;

/// Agent hooks.
#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Answers one Claude Code PreToolUse event (JSON on standard input) with the daemon's
    /// decision: allow, deny or ask. Without a decision (daemon down, timeout, refusal, bad
    /// input) the answer is ask, or deny with --fail-closed; never allow. Exit 0 once a decision
    /// is printed. Waits 5 s at most for its input and the answer together (--timeout changes
    /// it).
    ClaudeCode(ClaudeCodeArgs),
}

/// Arguments of `hook claude-code`.
#[derive(Debug, clap::Args)]
pub struct ClaudeCodeArgs {
    /// Without a decision from the daemon, deny the tool call instead of asking a person.
    #[arg(long)]
    pub fail_closed: bool,
}

pub(super) fn run(ctx: &Context, command: &HookCommand) -> Result<ExitCode, CliError> {
    let timeout_given = timeout_given(std::env::args_os());
    match command {
        HookCommand::ClaudeCode(args) => {
            let timeout = if timeout_given {
                ctx.timeout
            } else {
                Duration::from_secs(DEFAULT_HOOK_TIMEOUT_S)
            };
            claude_code_hook(ctx, timeout, args.fail_closed)
        }
    }
}

/// Whether `--timeout` is on the command line (its default, 30 s, is for commands a person
/// waits on; the hook has its own).
fn timeout_given(args: impl IntoIterator<Item = OsString>) -> bool {
    super::Args::command()
        .try_get_matches_from(args)
        .ok()
        .and_then(|matches| matches.value_source("timeout"))
        == Some(clap::parser::ValueSource::CommandLine)
}

fn claude_code_hook(
    ctx: &Context,
    timeout: Duration,
    fail_closed: bool,
) -> Result<ExitCode, CliError> {
    let decision = match decide(ctx, timeout) {
        Ok(answer) => HookDecision::from_answer(&answer),
        Err(why) => {
            let decision = HookDecision::failure(&why, fail_closed);
            eprintln!("{}", decision.reason);
            decision
        }
    };
    let mut line = decision.to_json().to_string();
    line.push('\n');
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Failed(format!("cannot print the hook decision: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the event and asks the daemon, all within `timeout`; `Err` says why there is no
/// decision.
fn decide(ctx: &Context, timeout: Duration) -> Result<EvaluateResult, String> {
    let deadline = Instant::now() + timeout;
    let input = read_input(timeout)?;
    let event = PreToolUse::parse(&input).map_err(|e| e.to_string())?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(no_answer(timeout));
    }
    let ask = || -> Result<EvaluateResult, ClientError> {
        let mut client = blocking::Client::connect(&ctx.socket)?;
        client.set_timeout(remaining)?;
        client.call(m::DECISION_EVALUATE, Some(event.to_params()))
    };
    ask().map_err(|e| match e {
        ClientError::NotRunning { .. } => {
            format!("{e}; start it with `{}`", ctx.start_command())
        }
        ClientError::Timeout(_) => no_answer(timeout),
        ClientError::Rpc(error) => format!(
            "the daemon refused the event ({}: {})",
            error.code.code(),
            error.message
        ),
        other => other.to_string(),
    })
}

fn no_answer(timeout: Duration) -> String {
    format!("atlasbridged did not answer within {} s", seconds(timeout))
}

fn seconds(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{:.1}", duration.as_secs_f64())
    }
}

/// Standard input, read to its end within `timeout` (Claude Code writes the event and closes
/// it; a caller that never closes it gets an answer anyway).
fn read_input(timeout: Duration) -> Result<Vec<u8>, String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut input = Vec::new();
        let result = std::io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut input)
            .map(|_| input);
        let _ = sender.send(result);
    });
    match receiver.recv_timeout(timeout) {
        Ok(Ok(input)) if input.len() as u64 > MAX_INPUT_BYTES => Err(format!(
            "the hook input is larger than {} MiB",
            MAX_INPUT_BYTES / 1024 / 1024
        )),
        Ok(Ok(input)) => Ok(input),
        Ok(Err(e)) => Err(format!("cannot read the hook input: {e}")),
        Err(_) => Err(format!(
            "no hook input on standard input within {} s",
            seconds(timeout)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(args: &[&str]) -> bool {
        timeout_given(args.iter().map(OsString::from))
    }

    #[test]
    fn the_hooks_timeout_is_its_own_unless_the_command_line_sets_one() {
        assert!(!given(&["atlasbridge", "hook", "claude-code"]));
        assert!(given(&[
            "atlasbridge",
            "--timeout",
            "2",
            "hook",
            "claude-code"
        ]));
        assert!(given(&[
            "atlasbridge",
            "hook",
            "claude-code",
            "--timeout",
            "2"
        ]));
        assert!(given(&[
            "atlasbridge",
            "hook",
            "claude-code",
            "--timeout=30"
        ]));
        assert!(!given(&[
            "atlasbridge",
            "--socket",
            "/tmp/s",
            "hook",
            "install",
            "claude-code"
        ]));
    }

    #[test]
    fn timeouts_print_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(5)), "5");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
    }
}
