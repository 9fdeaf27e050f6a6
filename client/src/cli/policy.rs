//! `policy …`: the policy language's commands for people and scripts. `validate`, `test`,
//! `hash` and `diff` read the files themselves — no daemon needed — with the same loader and
//! evaluator the daemon runs; `status` and `reload` ask the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::hash::sha256_hex;
use atlasbridge_protocol::methods::{
    self as m, Pin, PinList, PinParams, PinScope, PolicyAcceptParams, PolicyPendingResult,
    PolicyReloadParams, PolicyStatus, UnpinParams, VersionList,
};
use atlasbridge_protocol::policy::evaluate::{Evaluator, Event};
use atlasbridge_protocol::policy::{self, Action, AutonomyMode, LoadedPolicy, PolicyError};
use atlasbridge_protocol::risk::PROMPT_TYPES;
use clap::Subcommand;
use serde_json::{Value, json};

use super::output::{print_fields, print_table};
use super::{CliError, Context, EXIT_FAILURE, EXIT_UNAVAILABLE, local};

/// The policy language.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Checks a policy file: valid, or every problem with its line and column.
    ///
    /// Exit 0 valid, 1 invalid (a file that cannot be read is invalid too).
    Validate {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Evaluates one prompt event against a policy file, without the daemon.
    ///
    /// The same loader and evaluator as the daemon's, so the same decision. The action shown is
    /// the policy's own; the autonomy mode does not change it.
    Test {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The prompt text.
        #[arg(long, value_name = "TEXT")]
        prompt: String,
        /// The prompt type: yes_no, confirm_enter, multiple_choice or free_text.
        #[arg(long = "type", value_name = "TYPE", default_value = "yes_no")]
        prompt_type: String,
        /// high, medium or low (anything else counts as low).
        #[arg(long, value_name = "CONFIDENCE", default_value = "high")]
        confidence: String,
        /// The agent's tool id.
        #[arg(long = "tool", value_name = "ID", default_value = "*")]
        tool_id: String,
        /// The repository or working directory.
        #[arg(long, value_name = "PATH", default_value = "")]
        repo: String,
        /// The session's tag.
        #[arg(long, value_name = "TAG", default_value = "")]
        session_tag: String,
        /// Show, for every rule examined, the criterion that held or failed.
        #[arg(long)]
        explain: bool,
    },
    /// Prints the policy_hash of a policy file.
    ///
    /// SHA-256 of the normalised policy: comments, key order, quoting and white space do not
    /// change it; any change of meaning does.
    Hash {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// SHA-256 of the file's bytes instead.
        #[arg(long)]
        raw: bool,
    },
    /// What changes in meaning from policy A to policy B.
    ///
    /// Exit 0 equal in meaning, 1 different, 2 when either does not load.
    Diff {
        /// The first policy file.
        #[arg(value_name = "A")]
        a: PathBuf,
        /// The second policy file.
        #[arg(value_name = "B")]
        b: PathBuf,
    },
    /// Turns a v0 policy into v1, keeping comments and layout: only `policy_version` changes,
    /// and the result is checked to mean exactly the same.
    Migrate {
        /// The v0 policy file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write the v1 policy here [default: replace FILE, keeping the original as FILE.v0].
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Print the v1 policy instead of writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// The daemon's active policy: name, hash, source, and the errors of a failed reload.
    Status,
    /// Locks an agent or a session to one policy version, whatever the active policy becomes.
    /// Pins persist across restarts; a session pin beats an agent pin.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["agent", "session"])))]
    Pin {
        /// A policy file, or the full hash of a version the daemon has stored (`policy versions`).
        #[arg(value_name = "FILE|HASH")]
        policy: String,
        /// Pin every session of this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Pin this session.
        #[arg(long)]
        session: Option<String>,
    },
    /// Removes the pin of an agent or a session.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["agent", "session"])))]
    Unpin {
        /// The agent.
        #[arg(long)]
        agent: Option<String>,
        /// The session.
        #[arg(long)]
        session: Option<String>,
    },
    /// Every pin.
    Pins,
    /// The policy versions the daemon has stored, with their pins.
    Versions,
    /// Policies the cloud offered that passed verification and wait to be accepted.
    Pending,
    /// Makes a pending cloud policy the daemon's policy, across restarts (admin role). Refused
    /// while a local [policy] file is configured: the local file always takes precedence.
    Accept {
        /// The full content hash, as `policy pending` shows it.
        hash: String,
    },
    /// Makes the daemon read its policy file again (or FILE). A policy that does not load never
    /// replaces the active one: its errors are printed and the command exits 1.
    Reload {
        /// Load this file instead of the configured one.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

pub(super) fn run(ctx: &Context, command: &PolicyCommand) -> Result<ExitCode, CliError> {
    match command {
        PolicyCommand::Validate { file } => Ok(validate(ctx, file)),
        PolicyCommand::Test {
            file,
            prompt,
            prompt_type,
            confidence,
            tool_id,
            repo,
            session_tag,
            explain,
        } => {
            if !PROMPT_TYPES.contains(&prompt_type.as_str()) {
                return Err(CliError::Failed(format!(
                    "unknown --type '{prompt_type}': expected one of {}",
                    PROMPT_TYPES.join(", ")
                )));
            }
            let event = Event {
                prompt_text: prompt,
                prompt_type,
                confidence: Confidence::normalise(confidence),
                tool_id,
                repo,
                session_tag,
            };
            test(ctx, file, &event, *explain)
        }
        PolicyCommand::Hash { file, raw } => {
            local::require(ctx, Feature::PolicyLifecycle)?;
            hash(ctx, file, *raw)
        }
        PolicyCommand::Diff { a, b } => {
            local::require(ctx, Feature::PolicyLifecycle)?;
            Ok(diff(ctx, a, b))
        }
        PolicyCommand::Pin {
            policy,
            agent,
            session,
        } => {
            let (scope, id) = target(agent.as_ref(), session.as_ref());
            let file = Path::new(policy);
            let (policy_hash, path) = if file.is_file() {
                let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
                (None, Some(absolute.display().to_string()))
            } else {
                (Some(policy.clone()), None)
            };
            let pin: Pin = ctx.connect()?.call(
                m::POLICY_PIN,
                Some(PinParams {
                    scope,
                    id,
                    policy_hash,
                    path,
                }),
            )?;
            if ctx.out.is_json() {
                ctx.out.json(&pin);
            } else {
                println!(
                    "{} {} pinned to {}{}",
                    scope_text(pin.scope),
                    pin.id,
                    pin.policy_hash.unwrap_or_default(),
                    pin.previous
                        .map(|p| format!(" (was {p})"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Unpin { agent, session } => {
            let (scope, id) = target(agent.as_ref(), session.as_ref());
            let pin: Pin = ctx
                .connect()?
                .call(m::POLICY_UNPIN, Some(UnpinParams { scope, id }))?;
            if ctx.out.is_json() {
                ctx.out.json(&pin);
            } else if let Some(previous) = &pin.previous {
                println!(
                    "{} {} unpinned (was {previous})",
                    scope_text(pin.scope),
                    pin.id
                );
            } else {
                println!("{} {} was not pinned", scope_text(pin.scope), pin.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Pins => {
            let list: PinList = ctx.connect()?.call(m::POLICY_PINS, None::<()>)?;
            if ctx.out.is_json() {
                ctx.out.json(&list);
            } else if list.pins.is_empty() {
                println!("no pins");
            } else {
                let rows: Vec<Vec<String>> = list
                    .pins
                    .iter()
                    .map(|p| {
                        vec![
                            scope_text(p.scope).to_owned(),
                            p.id.clone(),
                            p.policy_hash.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(&["SCOPE", "ID", "POLICY HASH"], &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Versions => {
            let list: VersionList = ctx.connect()?.call(m::POLICY_VERSIONS, None::<()>)?;
            if ctx.out.is_json() {
                ctx.out.json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.policy_hash.clone(),
                            v.name.clone(),
                            if v.active {
                                "active".to_owned()
                            } else {
                                String::new()
                            },
                            v.pinned_by.join(", "),
                        ]
                    })
                    .collect();
                print_table(&["POLICY HASH", "NAME", "", "PINNED BY"], &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Migrate {
            file,
            output,
            dry_run,
        } => migrate(ctx, file, output.as_deref(), *dry_run),
        PolicyCommand::Pending => {
            let list: PolicyPendingResult = ctx.connect()?.call(m::POLICY_PENDING, None::<()>)?;
            if ctx.out.is_json() {
                ctx.out.json(&list);
            } else if list.pending.is_empty() {
                println!("No cloud policy is pending.");
            } else {
                let rows: Vec<Vec<String>> = list
                    .pending
                    .iter()
                    .map(|p| {
                        vec![
                            p.content_hash.clone(),
                            p.name.clone(),
                            p.version.clone(),
                            p.received_at.clone(),
                        ]
                    })
                    .collect();
                print_table(&["CONTENT HASH", "NAME", "VERSION", "RECEIVED"], &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Accept { hash } => {
            let status: PolicyStatus = ctx.connect()?.call(
                m::POLICY_ACCEPT,
                Some(PolicyAcceptParams { hash: hash.clone() }),
            )?;
            print_status(ctx, &status);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Status => {
            let status: PolicyStatus = ctx.connect()?.call(m::POLICY_STATUS, None::<()>)?;
            print_status(ctx, &status);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Reload { file } => {
            // The daemon resolves a relative path against its own working directory.
            let path = file
                .as_ref()
                .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
                .map(|f| f.display().to_string());
            let status: PolicyStatus = ctx
                .connect()?
                .call(m::POLICY_RELOAD, Some(PolicyReloadParams { path }))?;
            print_status(ctx, &status);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn migrate(
    ctx: &Context,
    file: &Path,
    output: Option<&Path>,
    dry_run: bool,
) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Unreadable(format!("cannot read {}: {e}", file.display())))?;
    let migrated =
        policy::migrate::v0_to_v1(&text, file).map_err(|e| CliError::Failed(e.to_string()))?;
    if dry_run {
        print!("{migrated}");
        return Ok(ExitCode::SUCCESS);
    }
    let target = output.unwrap_or(file);
    if output.is_none() {
        let mut backup = file.as_os_str().to_owned();
        backup.push(".v0");
        std::fs::write(&backup, &text).map_err(|e| {
            CliError::Failed(format!(
                "cannot keep the original as {}: {e}",
                Path::new(&backup).display()
            ))
        })?;
    }
    std::fs::write(target, &migrated)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", target.display())))?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "migrated": true, "output": target }));
    } else {
        println!(
            "{}: policy_version \"1\" written to {}",
            file.display(),
            target.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The pin target clap guarantees: exactly one of `--agent` and `--session`.
fn target(agent: Option<&String>, session: Option<&String>) -> (PinScope, String) {
    match (agent, session) {
        (Some(agent), _) => (PinScope::Agent, agent.clone()),
        (None, session) => (PinScope::Session, session.cloned().unwrap_or_default()),
    }
}

fn scope_text(scope: PinScope) -> &'static str {
    match scope {
        PinScope::Agent => "agent",
        PinScope::Session => "session",
    }
}

fn print_status(ctx: &Context, status: &PolicyStatus) {
    if ctx.out.is_json() {
        ctx.out.json(status);
        return;
    }
    print_fields(&[
        (
            "policy",
            format!("{} (policy_version {})", status.name, status.policy_version),
        ),
        ("hash", status.policy_hash.clone()),
        ("autonomy", status.autonomy_mode.clone()),
        ("rules", status.rules.to_string()),
        (
            "source",
            status
                .source
                .clone()
                .unwrap_or_else(|| "built-in safe-default".to_owned()),
        ),
        ("loaded", status.loaded_at.clone()),
    ]);
    if let Some(errors) = &status.last_error {
        println!("the last reload failed; the policy above stays active:");
        for error in errors {
            println!(
                "  {}:{}:{}: {}: {}",
                error["file"].as_str().unwrap_or(""),
                error["line"],
                error["column"],
                error["path"].as_str().unwrap_or(""),
                error["message"].as_str().unwrap_or("")
            );
        }
    }
}

fn validate(ctx: &Context, file: &Path) -> ExitCode {
    match policy::load_file(file) {
        Ok(loaded) => {
            let p = &loaded.policy;
            if ctx.out.is_json() {
                ctx.out.json(&json!({
                    "valid": true,
                    "name": p.name,
                    "policy_version": p.policy_version.as_str(),
                    "rules": p.rules.len(),
                    "autonomy_mode": p.autonomy_mode.as_str(),
                    "policy_hash": loaded.hash,
                    "errors": [],
                }));
            } else {
                let count = p.rules.len();
                println!(
                    "{}: valid — {}, policy_version {}, {count} rule{}, autonomy {}, hash {}",
                    file.display(),
                    p.name,
                    p.policy_version,
                    if count == 1 { "" } else { "s" },
                    p.autonomy_mode,
                    loaded.short_hash(),
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if ctx.out.is_json() {
                ctx.out.json(&json!({
                    "valid": false,
                    "name": null,
                    "policy_version": null,
                    "rules": null,
                    "autonomy_mode": null,
                    "policy_hash": null,
                    "errors": e.errors,
                }));
            } else {
                // The verdict is this command's output, so the problems go to stdout.
                for error in &e.errors {
                    println!("{error}");
                }
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn test(
    ctx: &Context,
    file: &Path,
    event: &Event<'_>,
    explain: bool,
) -> Result<ExitCode, CliError> {
    let loaded = match policy::load_file(file) {
        Ok(loaded) => loaded,
        Err(e) => return Ok(load_failed(ctx, &e.errors, EXIT_FAILURE)),
    };
    let LoadedPolicy { policy, hash, .. } = loaded;
    let autonomy_mode = policy.autonomy_mode;
    let evaluator =
        Evaluator::new(policy).map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
    let decision = evaluator.evaluate(event);
    let explanations = if explain {
        evaluator.explain(event)
    } else {
        Vec::new()
    };
    // Which default applied, when no rule did.
    let default_key = if event.confidence == Confidence::Low {
        "low_confidence"
    } else {
        "no_match"
    };

    if ctx.out.is_json() {
        let explanation = if explain {
            serde_json::to_value(&explanations).unwrap_or(Value::Null)
        } else {
            Value::String(match decision.rule {
                Some(rule) => rule
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("rule '{}' matched", rule.id)),
                None => format!("no rule matched; defaults.{default_key} applies"),
            })
        };
        ctx.out.json(&json!({
            "policy_action": decision.action.type_name(),
            "reply_value": decision.action.reply_value(),
            "matched_rule": decision.matched_rule(),
            "policy_hash": hash,
            "explanation": explanation,
        }));
        return Ok(ExitCode::SUCCESS);
    }

    let mut line = decision.action.type_name().to_owned();
    if let Action::AutoReply { value, .. } = &decision.action {
        line.push_str(&format!(" {value:?}"));
    }
    match decision.rule {
        Some(rule) => line.push_str(&format!(" (rule {})", rule.id)),
        None => line.push_str(&format!(" (default: {default_key})")),
    }
    let note = match &decision.action {
        Action::RequireHuman { message } | Action::NotifyOnly { message } => message.as_deref(),
        Action::Deny { reason } => reason.as_deref(),
        Action::AutoReply { .. } => None,
    };
    if let Some(note) = note {
        line.push_str(&format!(": {note}"));
    }
    println!("{line}");
    if explain {
        let width = explanations
            .iter()
            .map(|e| e.rule_id.chars().count())
            .max()
            .unwrap_or(0);
        for e in &explanations {
            let verdict = if e.matched { "match" } else { "no" };
            println!("  {:<width$}  {verdict:<5}  {}", e.rule_id, e.detail);
        }
    }
    match autonomy_mode {
        AutonomyMode::Full => {}
        AutonomyMode::Assist => println!(
            "(autonomy assist: the agent is told require_human, with this as the suggestion)"
        ),
        AutonomyMode::Off => {
            println!("(autonomy off: the agent is told require_human)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn hash(ctx: &Context, file: &Path, raw: bool) -> Result<ExitCode, CliError> {
    if raw {
        let bytes = std::fs::read(file)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", file.display())))?;
        let digest = sha256_hex(&bytes);
        if ctx.out.is_json() {
            ctx.out.json(&json!({ "raw_sha256": digest }));
        } else {
            println!("{digest}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = match policy::load_file(file) {
        Ok(loaded) => loaded,
        Err(e) => return Ok(load_failed(ctx, &e.errors, EXIT_FAILURE)),
    };
    if ctx.out.is_json() {
        ctx.out.json(&json!({
            "policy_hash": loaded.hash,
            "short": loaded.short_hash(),
        }));
    } else {
        println!("{}", loaded.hash);
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(ctx: &Context, a: &Path, b: &Path) -> ExitCode {
    let (loaded_a, loaded_b) = match (policy::load_file(a), policy::load_file(b)) {
        (Ok(la), Ok(lb)) => (la, lb),
        (ra, rb) => {
            // Every problem of both files, so that one run shows all there is to fix.
            let errors: Vec<PolicyError> = [ra.err(), rb.err()]
                .into_iter()
                .flatten()
                .flat_map(|e| e.errors)
                .collect();
            return load_failed(ctx, &errors, EXIT_UNAVAILABLE);
        }
    };
    let changes = policy::diff(&loaded_a.policy, &loaded_b.policy);
    let equal = changes.is_empty();
    if ctx.out.is_json() {
        ctx.out.json(&json!({
            "equal": equal,
            "hash_a": loaded_a.hash,
            "hash_b": loaded_b.hash,
            "diff": changes,
        }));
    } else if equal {
        println!("no difference in meaning (hash {})", loaded_a.short_hash());
    } else {
        print!("{changes}");
    }
    if equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// A policy that did not load: every problem on stderr, one per line, and with `--json` an
/// `{"error": {"kind": "invalid_policy", "message", "errors"}}` document on stdout.
fn load_failed(ctx: &Context, errors: &[PolicyError], code: u8) -> ExitCode {
    for error in errors {
        eprintln!("{error}");
    }
    if ctx.out.is_json() {
        let message = match errors {
            [only] => only.to_string(),
            [first, ..] => format!("{first} (and {} more)", errors.len() - 1),
            [] => "the policy does not load".to_owned(),
        };
        ctx.out.json(&json!({ "error": {
            "kind": "invalid_policy",
            "message": message,
            "errors": errors,
        }}));
    }
    ExitCode::from(code)
}
