//! `risk …`: the risk classifier, run locally on inputs given on the command line.

use std::process::ExitCode;

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::risk::{self, ACTIONS, CI_STATUSES, PROMPT_TYPES, RiskInput};
use clap::Subcommand;

use super::{CliError, Context, local};

/// The risk classifier.
#[derive(Debug, Subcommand)]
pub enum RiskCommand {
    /// The level and reasons the classifier gives a decision. Runs locally: no daemon needed,
    /// nothing is recorded.
    Assess {
        /// The policy's action: auto_reply, require_human, deny or notify_only.
        #[arg(long, value_name = "ACTION")]
        action: String,
        /// The prompt type: yes_no, confirm_enter, multiple_choice or free_text.
        #[arg(long = "type", value_name = "TYPE")]
        prompt_type: String,
        /// high, medium or low (anything else counts as low).
        #[arg(long, value_name = "CONFIDENCE")]
        confidence: String,
        /// The prompt text (checked for destructive commands).
        #[arg(long, value_name = "TEXT")]
        prompt: Option<String>,
        /// The branch.
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
        /// passing, failing or unknown.
        #[arg(long, value_name = "STATUS")]
        ci_status: Option<String>,
        /// A session tag (critical_session, safe_session, …); repeatable.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
}

pub(super) fn run(ctx: &Context, command: &RiskCommand) -> Result<ExitCode, CliError> {
    match command {
        RiskCommand::Assess {
            action,
            prompt_type,
            confidence,
            prompt,
            branch,
            ci_status,
            tags,
        } => {
            local::require(ctx, Feature::RiskClassifier)?;
            let prompt = prompt.as_deref().unwrap_or_default();
            let branch = branch.as_deref().unwrap_or_default();
            let ci_status = ci_status.as_deref().unwrap_or_default();
            // The classifier matches these exactly, so a typo would silently read as "no risk
            // factor": refuse it instead.
            one_of("--action", action, &ACTIONS)?;
            one_of("--type", prompt_type, &PROMPT_TYPES)?;
            one_of("--ci-status", ci_status, &CI_STATUSES)?;
            let assessment = risk::classify(&RiskInput {
                action,
                prompt_type,
                confidence: Confidence::normalise(confidence),
                prompt_text: prompt,
                branch,
                ci_status,
                session_tags: tags,
            });
            if ctx.out.is_json() {
                ctx.out.json(&assessment);
            } else {
                let level = assessment.level.name();
                let indent = " ".repeat(level.len() + 2);
                for (i, reason) in assessment.reasons.iter().enumerate() {
                    if i == 0 {
                        println!("{level}: {reason}");
                    } else {
                        println!("{indent}{reason}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn one_of(option: &str, value: &str, valid: &[&str]) -> Result<(), CliError> {
    if valid.contains(&value) {
        return Ok(());
    }
    let names: Vec<&str> = valid.iter().copied().filter(|v| !v.is_empty()).collect();
    let empty_too = if names.len() < valid.len() {
        " (or empty)"
    } else {
        ""
    };
    Err(CliError::Failed(format!(
        "unknown {option} '{value}': expected one of {}{empty_too}",
        names.join(", ")
    )))
}
