//! `atlasbridge decide`: one prompt event from a shell, decided by the daemon. The exit status
//! is the answer, so that a shell agent can branch on it without parsing anything.

use std::process::ExitCode;

use atlasbridge_protocol::methods::{self as m, EvaluateParams, EvaluateResult};
use atlasbridge_protocol::risk::PROMPT_TYPES;

use super::{CliError, Context};

/// Exit status for `require_human`.
pub(crate) const EXIT_REQUIRE_HUMAN: u8 = 10;
/// Exit status for `deny`.
pub(crate) const EXIT_DENY: u8 = 11;
/// Exit status for `notify_only`.
pub(crate) const EXIT_NOTIFY_ONLY: u8 = 12;

/// Arguments of `decide`.
#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The agent session.
    #[arg(long)]
    pub session: String,
    /// The prompt text (read by the daemon for matching and risk, never stored).
    #[arg(long)]
    pub prompt: String,
    /// yes_no, confirm_enter, multiple_choice or free_text.
    #[arg(long = "type", value_name = "TYPE", default_value = "yes_no")]
    pub prompt_type: String,
    /// high, medium or low (anything else counts as low).
    #[arg(long, default_value = "high")]
    pub confidence: String,
    /// The prompt's id [default: a new one, so that every call is a new decision].
    #[arg(long)]
    pub prompt_id: Option<String>,
    /// A repeat with the same key in the same session gets the first answer.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// The agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// The agent's tool.
    #[arg(long)]
    pub tool: Option<String>,
    /// The repository or working directory [default: the current directory].
    #[arg(long)]
    pub repo: Option<String>,
    /// The branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// passing, failing or unknown.
    #[arg(long)]
    pub ci_status: Option<String>,
    /// A session tag (repeatable; the first is the one `session_tag` rules see).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The policy hash you expect; a session pinned to another fails with a pin conflict.
    #[arg(long)]
    pub policy_hash: Option<String>,
}

pub(crate) fn run(ctx: &Context, args: &DecideArgs) -> Result<ExitCode, CliError> {
    if !PROMPT_TYPES.contains(&args.prompt_type.as_str()) {
        return Err(CliError::Failed(format!(
            "unknown --type '{}': expected one of {}",
            args.prompt_type,
            PROMPT_TYPES.join(", ")
        )));
    }
    let repo = args.repo.clone().or_else(|| {
        std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string())
    });
    let params = EvaluateParams {
        session_id: args.session.clone(),
        prompt_id: args.prompt_id.clone().unwrap_or_else(new_prompt_id),
        prompt_type: args.prompt_type.clone(),
        prompt_text: args.prompt.clone(),
        confidence: args.confidence.clone(),
        agent_id: args.agent.clone(),
        tool_id: args.tool.clone(),
        repo,
        branch: args.branch.clone(),
        ci_status: args.ci_status.clone(),
        session_tags: (!args.tags.is_empty()).then(|| args.tags.clone()),
        idempotency_key: args.idempotency_key.clone(),
        policy_hash: args.policy_hash.clone(),
    };
    let answer: EvaluateResult = ctx.connect()?.call(m::DECISION_EVALUATE, Some(params))?;
    if ctx.out.is_json() {
        ctx.out.json(&answer);
    } else {
        print_answer(&answer);
    }
    Ok(ExitCode::from(exit_status(&answer.action)))
}

/// 0 auto_reply, 10 require_human, 11 deny, 12 notify_only.
pub(crate) fn exit_status(action: &str) -> u8 {
    match action {
        "auto_reply" => 0,
        "deny" => EXIT_DENY,
        "notify_only" => EXIT_NOTIFY_ONLY,
        // Anything unexpected is treated as the safe answer.
        _ => EXIT_REQUIRE_HUMAN,
    }
}

fn print_answer(answer: &EvaluateResult) {
    let rule = if answer.matched_rule.is_empty() {
        "default".to_owned()
    } else {
        format!("rule {}", answer.matched_rule)
    };
    let value = if answer.action == "auto_reply" {
        format!(" {:?}", answer.reply_value)
    } else {
        String::new()
    };
    let risk = if answer.risk_level.is_empty() {
        String::new()
    } else {
        format!(", risk {}", answer.risk_level)
    };
    println!("{}{value} ({rule}{risk})", answer.action);
    if let Some(suggested) = &answer.suggested_action {
        println!("  the policy suggests {suggested}");
    }
    println!("  {}", answer.explanation);
    if let Some(seq) = answer.seq {
        println!("  recorded at seq {seq}");
    }
}

/// A prompt id unique to this call: the time in microseconds and the process id.
fn new_prompt_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("cli-{micros}-{}", std::process::id())
}
