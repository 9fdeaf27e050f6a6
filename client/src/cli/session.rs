//! `session …`: register an agent's session once, so that its events inherit the agent, tool,
//! repo, branch, CI status and tags without repeating them; list, show and end sessions.

use std::process::ExitCode;

use atlasbridge_protocol::methods::{
    self as m, SessionEndParams, SessionInfo, SessionList, SessionShowParams, SessionStartParams,
};
use clap::Subcommand;

use super::output::{print_fields, print_table};
use super::{CliError, Context};

/// Agent sessions.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Registers a session (or updates a live one: the options given replace, the others stay).
    /// Its events inherit every field they do not give themselves.
    Start {
        /// The session id the agent's events carry.
        #[arg(value_name = "SESSION")]
        session: String,
        /// The agent.
        #[arg(long)]
        agent: Option<String>,
        /// The agent's tool.
        #[arg(long)]
        tool: Option<String>,
        /// The repository or working directory [default: the current directory].
        #[arg(long)]
        repo: Option<String>,
        /// The branch.
        #[arg(long)]
        branch: Option<String>,
        /// passing, failing or unknown.
        #[arg(long)]
        ci_status: Option<String>,
        /// A session tag (repeatable; the first is the one `session_tag` rules see).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Ends a session: its later events inherit nothing.
    End {
        /// The session.
        #[arg(value_name = "SESSION")]
        session: String,
    },
    /// The live sessions, oldest first.
    List,
    /// One live session.
    Show {
        /// The session.
        #[arg(value_name = "SESSION")]
        session: String,
    },
}

pub(super) fn run(ctx: &Context, command: &SessionCommand) -> Result<ExitCode, CliError> {
    match command {
        SessionCommand::Start {
            session,
            agent,
            tool,
            repo,
            branch,
            ci_status,
            tags,
        } => {
            let repo = repo.clone().or_else(|| {
                std::env::current_dir()
                    .ok()
                    .map(|d| d.display().to_string())
            });
            let params = SessionStartParams {
                session_id: session.clone(),
                agent_id: agent.clone(),
                tool_id: tool.clone(),
                repo,
                branch: branch.clone(),
                ci_status: ci_status.clone(),
                // Without --tag the registered tags stay, as for every other option.
                session_tags: (!tags.is_empty()).then(|| tags.clone()),
            };
            let started: SessionInfo = ctx.connect()?.call(m::SESSION_START, Some(params))?;
            print_session(
                ctx,
                &started,
                &format!("session {} started", started.session_id),
            );
        }
        SessionCommand::End { session } => {
            let params = SessionEndParams {
                session_id: session.clone(),
            };
            let ended: SessionInfo = ctx.connect()?.call(m::SESSION_END, Some(params))?;
            if ctx.out.is_json() {
                ctx.out.json(&ended);
            } else {
                println!(
                    "session {} ended after {} decisions",
                    ended.session_id, ended.decisions
                );
            }
        }
        SessionCommand::List => {
            let list: SessionList = ctx.connect()?.call(m::SESSION_LIST, None::<()>)?;
            if ctx.out.is_json() {
                ctx.out.json(&list);
            } else if list.sessions.is_empty() {
                println!("no live sessions");
            } else {
                let rows: Vec<Vec<String>> = list
                    .sessions
                    .iter()
                    .map(|s| {
                        vec![
                            s.session_id.clone(),
                            or_dash(&s.agent_id),
                            or_dash(&s.branch),
                            tags(s),
                            s.decisions.to_string(),
                            s.started_at.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &["SESSION", "AGENT", "BRANCH", "TAGS", "DECISIONS", "STARTED"],
                    &rows,
                );
            }
        }
        SessionCommand::Show { session } => {
            let params = SessionShowParams {
                session_id: session.clone(),
            };
            let shown: SessionInfo = ctx.connect()?.call(m::SESSION_SHOW, Some(params))?;
            print_session(ctx, &shown, &format!("session {}", shown.session_id));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_session(ctx: &Context, session: &SessionInfo, title: &str) {
    if ctx.out.is_json() {
        ctx.out.json(session);
        return;
    }
    println!("{title}");
    print_fields(&[
        ("agent", or_dash(&session.agent_id)),
        ("tool", or_dash(&session.tool_id)),
        ("repo", or_dash(&session.repo)),
        ("branch", or_dash(&session.branch)),
        ("ci", or_dash(&session.ci_status)),
        ("tags", tags(session)),
        ("started", session.started_at.clone()),
        ("decisions", session.decisions.to_string()),
    ]);
}

fn or_dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

fn tags(session: &SessionInfo) -> String {
    if session.session_tags.is_empty() {
        "-".to_owned()
    } else {
        session.session_tags.join(",")
    }
}
