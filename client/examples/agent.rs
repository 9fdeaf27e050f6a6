//! A small agent: it connects to `atlasbridged`, starts a session, asks the daemon about one
//! prompt, has a person answer when the policy says so, records that answer, and prints what it
//! would do. The exit status is the answer, as for `atlasbridge decide`: 0 auto_reply,
//! 10 require_human, 11 deny, 12 notify_only. Any error is a deny: an agent without a decision
//! does not act on its own.
//!
//! ```sh
//! cargo run -p atlasbridge --example agent -- --socket "$ATLASBRIDGE_SOCKET" \
//!     --prompt "Continue? [y/n]" --human-reply y
//! ```

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use atlasbridge::{
    Client, ClientError, DecisionAction, EvaluateParams, EvaluateResult, RecordParams,
    SessionStartParams,
};
use clap::Parser;

/// Ask atlasbridged about one prompt, as an agent would.
#[derive(Debug, Parser)]
struct Args {
    /// The daemon's socket [default: ATLASBRIDGE_SOCKET, else the platform default].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The agent session.
    #[arg(long, default_value = "example-session")]
    session: String,
    /// The prompt the agent met.
    #[arg(long, default_value = "Continue? [y/n]")]
    prompt: String,
    /// yes_no, confirm_enter, multiple_choice or free_text.
    #[arg(long = "type", default_value = "yes_no")]
    prompt_type: String,
    /// How sure the agent is that it read the prompt right: high, medium or low.
    #[arg(long, default_value = "high")]
    confidence: String,
    /// The person's answer when the policy asks for one [default: a line read from stdin].
    #[arg(long)]
    human_reply: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(action) => ExitCode::from(exit_status(action)),
        Err(error) => {
            eprintln!("agent: {error}; denying (fail closed)");
            if let Some(rpc) = error.rpc() {
                eprintln!("agent: the daemon answered {}", rpc.code);
            }
            ExitCode::from(exit_status(DecisionAction::Deny))
        }
    }
}

async fn run(args: &Args) -> Result<DecisionAction, ClientError> {
    let socket = match &args.socket {
        Some(socket) => socket.clone(),
        None => atlasbridge::default_socket()?,
    };
    let client = Client::connect(&socket).await?;
    let hello = client.hello("atlasbridge-example-agent/0.1").await?;
    println!("connected to {} ({})", hello.daemon, hello.edition);

    client
        .start_session(&SessionStartParams {
            session_id: args.session.clone(),
            agent_id: Some("example-agent".into()),
            tool_id: Some("example".into()),
            ..Default::default()
        })
        .await?;

    let prompt_id = format!("example-{}", std::process::id());
    let event = EvaluateParams {
        session_id: args.session.clone(),
        prompt_id: prompt_id.clone(),
        prompt_type: args.prompt_type.clone(),
        prompt_text: args.prompt.clone(),
        confidence: args.confidence.clone(),
        ..Default::default()
    };
    let answer = client.evaluate(&event).await?;
    print_answer(&answer);

    let action = answer.decision();
    if action == DecisionAction::RequireHuman {
        let reply = match &args.human_reply {
            Some(reply) => reply.clone(),
            None => ask(&args.prompt)?,
        };
        // Nobody answered: the prompt is refused, and the trace says so.
        let (action_taken, escalation_status) = if reply.is_empty() {
            ("deny", "unanswered")
        } else {
            ("human_reply", "resolved")
        };
        let recorded = client
            .record(&RecordParams {
                session_id: args.session.clone(),
                prompt_id,
                prompt_type: args.prompt_type.clone(),
                action_taken: action_taken.into(),
                reply_value: Some(reply.clone()),
                human_actor: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
                escalation_status: escalation_status.into(),
                ..Default::default()
            })
            .await?;
        match recorded.seq {
            Some(seq) => println!("recorded the person's answer {reply:?} at seq {seq}"),
            None => println!("recorded the person's answer {reply:?} (v1 trace)"),
        }
    }

    let session = client.end_session(&args.session).await?;
    println!(
        "session {} ended after {} decision(s)",
        session.session_id, session.decisions
    );
    Ok(action)
}

fn print_answer(answer: &EvaluateResult) {
    let rule = if answer.matched_rule.is_empty() {
        "a default"
    } else {
        answer.matched_rule.as_str()
    };
    match answer.decision() {
        DecisionAction::AutoReply => println!("auto_reply {:?} (by {rule})", answer.reply_value),
        other => println!("{other} (by {rule})"),
    }
    println!("  {}", answer.explanation);
    if let Some(seq) = answer.seq {
        println!("  recorded at seq {seq}");
    }
}

/// One line from the person at the terminal; empty when they gave none.
fn ask(prompt: &str) -> Result<String, ClientError> {
    println!("a person must answer: {prompt}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// 0 auto_reply, 10 require_human, 11 deny, 12 notify_only, as `atlasbridge decide`.
fn exit_status(action: DecisionAction) -> u8 {
    match action {
        DecisionAction::AutoReply => 0,
        DecisionAction::RequireHuman => 10,
        DecisionAction::Deny => 11,
        DecisionAction::NotifyOnly => 12,
    }
}
