//! `atlasbridge hook …`: the daemon as a coding agent's permission hook.
//!
//! `hook claude-code` answers one Claude Code `PreToolUse` event (JSON on standard input) with
//! the daemon's decision, in the JSON Claude Code reads on standard output. Whatever goes wrong
//! — the daemon down, slow or refusing, input that is not a hook event — the answer is `ask`
//! (`deny` with `--fail-closed`), never `allow`, and the exit status is 0 so that Claude Code
//! reads it. `hook install|uninstall claude-code` add or remove that hook in Claude Code's
//! settings, leaving everything else in the file as it was.

mod claude_code;
mod settings;

use settings::Scope;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use atlasbridge_protocol::methods::{self as m, EvaluateResult};
use clap::{CommandFactory, Subcommand};
use serde_json::json;

use super::{CliError, Context};
use crate::{ClientError, blocking};
use claude_code::{HookDecision, PreToolUse};
use settings::{HookEntry, Outcome};

/// How long `hook claude-code` waits, for its input and the daemon's answer together, unless
/// `--timeout` says otherwise: far below Claude Code's own hook timeout, so that a slow daemon
/// gets a clear `ask` rather than Claude Code's timeout.
pub(crate) const DEFAULT_HOOK_TIMEOUT_S: u64 = 5;

/// The timeout written into Claude Code's settings is the hook's own plus this margin (process
/// start, output): Claude Code's timeout only fires when the hook itself is stuck.
const CLAUDE_TIMEOUT_MARGIN_S: u64 = 5;

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
    /// Adds the hook to an agent's settings (Claude Code: a PreToolUse hook on every tool),
    /// keeping everything else in the file; running it again changes nothing.
    Install(InstallArgs),
    /// Removes our hook from an agent's settings, and nothing else.
    Uninstall(UninstallArgs),
}

/// Arguments of `hook claude-code`.
#[derive(Debug, clap::Args)]
pub struct ClaudeCodeArgs {
    /// Without a decision from the daemon, deny the tool call instead of asking a person.
    #[arg(long)]
    pub fail_closed: bool,
}

/// The agents with a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    /// Claude Code (PreToolUse).
    ClaudeCode,
}

/// Arguments of `hook install`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The agent.
    #[arg(value_enum)]
    pub agent: Agent,
    /// Which Claude Code settings file.
    #[arg(long, value_enum, default_value_t = Scope::User)]
    pub scope: Scope,
    /// The installed hook denies, rather than asks, when the daemon gives no decision.
    #[arg(long)]
    pub fail_closed: bool,
    /// Print the resulting settings file instead of writing it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `hook uninstall`.
#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// The agent.
    #[arg(value_enum)]
    pub agent: Agent,
    /// Which Claude Code settings file.
    #[arg(long, value_enum, default_value_t = Scope::User)]
    pub scope: Scope,
    /// Print the resulting settings file instead of writing it.
    #[arg(long)]
    pub dry_run: bool,
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
        HookCommand::Install(args) => install(ctx, args, timeout_given),
        HookCommand::Uninstall(args) => uninstall(ctx, args),
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
    print_decision(&decision)
}

/// The answer when the command line itself could not be set up (say, no socket path can be
/// resolved): still `ask` (or `deny`), never a failure exit that Claude Code could take as
/// "go ahead".
pub(super) fn answer_without_daemon(args: &ClaudeCodeArgs, why: &str) -> ExitCode {
    let decision = HookDecision::failure(why, args.fail_closed);
    eprintln!("{}", decision.reason);
    print_decision(&decision).unwrap_or(ExitCode::FAILURE)
}

fn print_decision(decision: &HookDecision) -> Result<ExitCode, CliError> {
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

/// The command line Claude Code runs: this binary by its absolute path, shell-quoted, with the
/// options the install was given that the hook needs too.
fn hook_command(
    exe: &Path,
    socket: Option<&Path>,
    timeout_s: Option<u64>,
    fail_closed: bool,
) -> Result<String, CliError> {
    let utf8 = |path: &Path, what: &str| {
        path.to_str().map(str::to_owned).ok_or_else(|| {
            CliError::Failed(format!(
                "the path of {what} is not UTF-8, which a settings file cannot hold: {}",
                path.display()
            ))
        })
    };
    let mut words = vec![settings::shell_quote(&utf8(exe, "atlasbridge")?)];
    if let Some(socket) = socket {
        words.push("--socket".into());
        words.push(settings::shell_quote(&utf8(socket, "the socket")?));
    }
    if let Some(timeout) = timeout_s {
        words.push("--timeout".into());
        words.push(timeout.to_string());
    }
    words.extend(["hook".into(), "claude-code".into()]);
    if fail_closed {
        words.push("--fail-closed".into());
    }
    Ok(words.join(" "))
}

fn settings_file(scope: Scope) -> Result<std::path::PathBuf, CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::Failed(format!("cannot read the current directory: {e}")))?;
    settings::settings_file(scope, |name| std::env::var(name).ok(), &cwd)
        .map_err(|e| CliError::Failed(e.to_string()))
}

fn install(ctx: &Context, args: &InstallArgs, timeout_given: bool) -> Result<ExitCode, CliError> {
    let Agent::ClaudeCode = args.agent;
    let file = settings_file(args.scope)?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find the atlasbridge binary: {e}")))?;
    let hook_timeout = timeout_given.then_some(ctx.timeout.as_secs());
    let entry = HookEntry {
        command: hook_command(
            &exe,
            ctx.socket_flag.is_some().then_some(ctx.socket.as_path()),
            hook_timeout,
            args.fail_closed,
        )?,
        timeout_s: hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT_S) + CLAUDE_TIMEOUT_MARGIN_S,
    };
    let fail = |e: settings::SettingsError| CliError::Failed(e.to_string());
    let text = settings::read(&file).map_err(fail)?;
    let edit = settings::install(&file, text.as_deref(), &entry).map_err(fail)?;
    if !args.dry_run && edit.outcome.changes() {
        settings::write(&file, &edit.text).map_err(fail)?;
    }
    if ctx.out.is_json() {
        let mut report = json!({
            "agent": "claude-code",
            "scope": args.scope.name(),
            "file": file,
            "outcome": edit.outcome.name(),
            "written": !args.dry_run && edit.outcome.changes(),
            "command": entry.command,
            "timeout": entry.timeout_s,
        });
        if args.dry_run {
            report["settings"] = json!(edit.text);
        }
        ctx.out.json(&report);
    } else if args.dry_run {
        print!("{}", edit.text);
    } else {
        let file = file.display();
        match edit.outcome {
            Outcome::Unchanged => {
                println!("the Claude Code hook is already installed in {file}; nothing changed");
            }
            Outcome::Updated => println!("updated the Claude Code hook in {file}"),
            _ => println!("installed the Claude Code hook in {file}"),
        }
        println!("  command  {}", entry.command);
        println!(
            "  matcher  * (every tool), timeout {} s, onFailure block",
            entry.timeout_s
        );
    }
    if !args.dry_run
        && let Err(ClientError::NotRunning { .. }) = blocking::Client::connect(&ctx.socket)
    {
        eprintln!(
            "atlasbridge: note: atlasbridged is not running; until it is, Claude Code {} before \
             every tool call (start it with `{}`)",
            if args.fail_closed {
                "denies"
            } else {
                "asks a person"
            },
            ctx.start_command()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn uninstall(ctx: &Context, args: &UninstallArgs) -> Result<ExitCode, CliError> {
    let Agent::ClaudeCode = args.agent;
    let file = settings_file(args.scope)?;
    let fail = |e: settings::SettingsError| CliError::Failed(e.to_string());
    let text = settings::read(&file).map_err(fail)?;
    let edit = settings::uninstall(&file, text.as_deref()).map_err(fail)?;
    if !args.dry_run && edit.outcome.changes() {
        settings::write(&file, &edit.text).map_err(fail)?;
    }
    if ctx.out.is_json() {
        let mut report = json!({
            "agent": "claude-code",
            "scope": args.scope.name(),
            "file": file,
            "outcome": edit.outcome.name(),
            "written": !args.dry_run && edit.outcome.changes(),
        });
        if args.dry_run {
            report["settings"] = json!(edit.text);
        }
        ctx.out.json(&report);
    } else if args.dry_run {
        print!("{}", edit.text);
    } else if edit.outcome == Outcome::Removed {
        println!("removed the Claude Code hook from {}", file.display());
    } else {
        println!(
            "the Claude Code hook is not installed in {}; nothing changed",
            file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
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
    fn the_installed_command_quotes_paths_and_carries_the_options() {
        let command = hook_command(
            Path::new("/opt/my tools/atlasbridge"),
            Some(Path::new("/run/user/1000/atlasbridge/atlasbridged.sock")),
            Some(3),
            true,
        )
        .unwrap();
        assert_eq!(
            command,
            "'/opt/my tools/atlasbridge' --socket /run/user/1000/atlasbridge/atlasbridged.sock \
             --timeout 3 hook claude-code --fail-closed"
        );
        assert_eq!(
            hook_command(Path::new("/usr/bin/atlasbridge"), None, None, false).unwrap(),
            "/usr/bin/atlasbridge hook claude-code"
        );
    }

    #[test]
    fn timeouts_print_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(5)), "5");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
    }
}
