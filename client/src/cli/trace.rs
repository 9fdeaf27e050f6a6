//! `trace …` and `audit …`: reading, verifying, repairing and exporting the daemon's chains.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::heads::{self, Continuity};
use atlasbridge_protocol::methods::{
    self as m, ChainName, ReadParams, ReadResult, RepairParams, RepairResult, SubscribeParams,
};
use atlasbridge_protocol::trace::verify::{self, ChainKind, VerifyOptions};
use atlasbridge_protocol::trace::{BreakKind, ChainBreak, IntegrityReport};
use clap::Subcommand;
use serde_json::Value;

use super::migrate::{self, MigrateArgs};
use super::output::duration;
use super::{CliError, Context, EXIT_FAILURE, EXIT_OK, local};

/// The decision trace.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Verify the hash chain and checkpoints: the daemon's own trace, or PATH (a segment file or
    /// a trace directory). Works with the daemon stopped.
    IntegrityCheck {
        /// A segment file or a trace directory [default: the daemon's trace].
        path: Option<PathBuf>,
        /// Verify against these checkpoints (an exported copy) instead of the directory's own.
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
        /// Also compare the chain with what the governance server witnessed of it, through the
        /// running daemon's uplink: exit 0 agrees, 1 forks or lost entries, 4 the server holds
        /// nothing past some seq yet, 5 the server could not be asked.
        #[arg(long)]
        against_cloud: bool,
    },
    /// The last entries; with --follow, new ones as they are written.
    Tail {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u32,
        /// Keep printing new entries.
        #[arg(short, long)]
        follow: bool,
    },
    /// One entry, as stored.
    Show {
        /// Its seq.
        seq: u64,
    },
    /// Build a v2 chain from a v1 trace file (and its rotated .1–.3).
    Migrate(MigrateArgs),
    /// Continue a chain that does not verify, or lost entries, in a new segment that links to
    /// the last valid entry. Nothing is deleted; the repair is an audit event.
    Repair {
        /// Required: say that a new segment is what you want.
        #[arg(long, required = true)]
        start_new_segment: bool,
    },
    /// Signed checkpoints.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
}

/// Checkpoints.
#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Copy the checkpoints somewhere agents cannot write (another host, a git remote, paper),
    /// to verify against later with `trace integrity-check --checkpoints FILE`.
    Export {
        /// The file to write [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// The audit log.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit log's hash chain: the daemon's own, or PATH. Works with the daemon
    /// stopped.
    Verify {
        /// An audit segment file or directory [default: the daemon's audit log].
        path: Option<PathBuf>,
        /// Also compare the log with what the governance server witnessed of it, through the
        /// running daemon's uplink: exit 0 agrees, 1 forks or lost events, 4 the server holds
        /// nothing past some seq yet, 5 the server could not be asked.
        #[arg(long)]
        against_cloud: bool,
    },
    /// The last audit events.
    Tail {
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u32,
    },
    /// Continue an audit log that does not verify, or lost events, in a new segment.
    Repair {
        /// Required: say that a new segment is what you want.
        #[arg(long, required = true)]
        start_new_segment: bool,
    },
}

pub(super) fn run_trace(ctx: &Context, command: &TraceCommand) -> Result<ExitCode, CliError> {
    match command {
        TraceCommand::IntegrityCheck {
            path,
            checkpoints,
            against_cloud,
        } => integrity_check(
            ctx,
            ChainKind::Trace,
            path.as_deref(),
            checkpoints.as_deref(),
            *against_cloud,
        ),
        TraceCommand::Tail { lines, follow } => tail(ctx, ChainName::Trace, *lines, *follow),
        TraceCommand::Show { seq } => show(ctx, *seq),
        TraceCommand::Migrate(args) => migrate::run(ctx, args),
        TraceCommand::Repair { .. } => repair(ctx, ChainName::Trace),
        TraceCommand::Checkpoint(CheckpointCommand::Export { out }) => {
            export_checkpoints(ctx, out.as_deref())
        }
    }
}

pub(super) fn run_audit(ctx: &Context, command: &AuditCommand) -> Result<ExitCode, CliError> {
    match command {
        AuditCommand::Verify {
            path,
            against_cloud,
        } => integrity_check(ctx, ChainKind::Audit, path.as_deref(), None, *against_cloud),
        AuditCommand::Tail { lines } => tail(ctx, ChainName::Audit, *lines, false),
        AuditCommand::Repair { .. } => repair(ctx, ChainName::Audit),
    }
}

fn chain_dir(data_dir: &Path, kind: ChainKind) -> PathBuf {
    match kind {
        ChainKind::Trace => data_dir.join("trace"),
        ChainKind::Audit => data_dir.join("audit"),
    }
}

/// Exit status of a report: 0 valid, 1 broken.
fn report_status(report: &IntegrityReport) -> ExitCode {
    ExitCode::from(if report.valid { EXIT_OK } else { EXIT_FAILURE })
}

fn integrity_check(
    ctx: &Context,
    kind: ChainKind,
    path: Option<&Path>,
    checkpoints: Option<&Path>,
    against_cloud: bool,
) -> Result<ExitCode, CliError> {
    local::require(ctx, Feature::AuditIntegrityCheck)?;
    let (target, data_dir) = match path {
        Some(path) => (path.to_path_buf(), None),
        None => {
            let data_dir = local::data_dir(ctx)?;
            (chain_dir(&data_dir, kind), Some(data_dir))
        }
    };
    let options = VerifyOptions {
        kind,
        checkpoints: checkpoints.map(Path::to_path_buf),
        ..VerifyOptions::default()
    };
    // Read before the files: the daemon records a head or a checkpoint only after writing what
    // it names, so a record read first is never ahead of files read after it, even while the
    // daemon goes on writing (read after, it could name a checkpoint written in between).
    let recorded = data_dir
        .as_deref()
        .and_then(|data_dir| heads::load(data_dir).ok().flatten());
    // The daemon's own directory, removed whole, is an empty chain: the recorded heads below
    // then tell that entries existed. A path the user named must exist.
    let verified = if data_dir.is_some() && !target.exists() {
        verify::verify_files(&[], &options).map(|v| v.report)
    } else {
        verify::verify_path(&target, &options)
    };
    let mut report = verified.map_err(|e| CliError::Unreadable(e.to_string()))?;
    if let Some(data_dir) = data_dir {
        compare_with_recorded_heads(&mut report, recorded.as_ref(), &data_dir, kind, &target);
    }
    if against_cloud {
        if !ctx.out.is_json() {
            print_report(kind, &target, &report);
        }
        let files = chain_files(&target, kind)?;
        return super::against_cloud::run(ctx, kind, &files, &report);
    }
    if ctx.out.is_json() {
        ctx.out.json(&report);
    } else {
        print_report(kind, &target, &report);
    }
    Ok(report_status(&report))
}

/// The segment files of `target` (a segment file or a chain directory; none when the daemon's
/// own directory is gone).
fn chain_files(target: &Path, kind: ChainKind) -> Result<Vec<PathBuf>, CliError> {
    if target.is_dir() {
        verify::segment_files(target, kind)
            .map_err(|e| CliError::Unreadable(format!("cannot read {}: {e}", target.display())))
    } else if target.exists() {
        Ok(vec![target.to_path_buf()])
    } else {
        Ok(Vec::new())
    }
}

/// For the daemon's own chains: what the state file remembers must still be there.
fn compare_with_recorded_heads(
    report: &mut IntegrityReport,
    recorded: Option<&heads::Heads>,
    data_dir: &Path,
    kind: ChainKind,
    target: &Path,
) {
    if report.error.is_some() {
        return;
    }
    let Some(recorded) = recorded else {
        return;
    };
    let recorded_head = match kind {
        ChainKind::Trace => recorded.trace.as_ref(),
        ChainKind::Audit => recorded.audit.as_ref(),
    };
    let state_file = heads::path(data_dir).display().to_string();
    if let Continuity::Lost { expected, found } =
        heads::continuity(recorded_head, report.head.as_ref())
    {
        report.valid = false;
        report.first_broken_at = Some(found.as_ref().map_or(0, |h| h.seq + 1));
        report.error = Some(ChainBreak {
            kind: BreakKind::TruncatedAfterCheckpoint,
            file: state_file,
            line: 1,
            detail: format!(
                "the chain ends before seq {}, which was recorded: entries were removed",
                expected.seq
            ),
        });
        return;
    }
    if kind == ChainKind::Trace
        && let Some(mark) = &recorded.checkpoint
        && report.checkpoints_checked <= mark.checkpoint_seq
    {
        report.valid = false;
        report.first_broken_at = mark.seq;
        report.error = Some(ChainBreak {
            kind: BreakKind::CheckpointGap,
            file: target.join("checkpoints.jsonl").display().to_string(),
            line: report.checkpoints_checked + 1,
            detail: format!(
                "checkpoint {} was written, but only {} checkpoints are there: checkpoints were removed",
                mark.checkpoint_seq, report.checkpoints_checked
            ),
        });
    }
}

fn print_report(kind: ChainKind, target: &Path, report: &IntegrityReport) {
    let what = match kind {
        ChainKind::Trace => "trace",
        ChainKind::Audit => "audit log",
    };
    let head = report.head.as_ref().map_or_else(
        || "empty".to_owned(),
        |h| {
            format!(
                "head seq {} ({}…)",
                h.seq,
                &h.entry_hash[..h.entry_hash.len().min(16)]
            )
        },
    );
    let segments = if report.segments == 1 {
        "segment"
    } else {
        "segments"
    };
    if report.valid {
        println!(
            "{what} is valid: {} entries in {} {segments}, {head}",
            report.entries_checked, report.segments
        );
        if report.checkpoints_checked > 0 {
            println!("  checkpoints: {} verified", report.checkpoints_checked);
        }
    } else if let Some(error) = &report.error {
        let at = report
            .first_broken_at
            .map_or_else(String::new, |s| format!(" at seq {s}"));
        println!("{what} is BROKEN{at}: {}", error.kind);
        println!("  {}:{}: {}", error.file, error.line, error.detail);
        println!(
            "  {} entries verified before the break ({head})",
            report.entries_checked
        );
    }
    if let Some(tail) = &report.unwitnessed_tail {
        let age = tail.seconds.map_or_else(
            || "no checkpoint at all".to_owned(),
            |s| format!("last checkpoint {} ago", duration(s)),
        );
        println!(
            "  unwitnessed: seq {}–{} ({age}); only a checkpoint can vouch for them",
            tail.from_seq, tail.to_seq
        );
    }
    if report.head.is_none() && report.valid {
        println!("  (read {})", target.display());
    }
}

fn tail(ctx: &Context, chain: ChainName, lines: u32, follow: bool) -> Result<ExitCode, CliError> {
    let mut client = ctx.connect()?;
    let head_method = if chain == ChainName::Trace {
        m::TRACE_HEAD
    } else {
        m::AUDIT_HEAD
    };
    let read_method = if chain == ChainName::Trace {
        m::TRACE_READ
    } else {
        m::AUDIT_READ
    };
    let head: m::HeadResult = client.call(head_method, None::<()>)?;
    let from_seq = head.entries.saturating_sub(u64::from(lines));
    let mut next = Some(from_seq);
    let mut shown = 0u64;
    while let Some(from) = next.filter(|_| head.entries > 0) {
        let params = ReadParams {
            from_seq: from,
            limit: lines.clamp(1, m::MAX_READ_LIMIT),
        };
        let page: ReadResult = client.call(read_method, Some(params))?;
        for entry in &page.entries {
            print_entry(ctx, chain, entry);
            shown += 1;
        }
        next = page
            .next_seq
            .filter(|_| shown < u64::from(lines) && !page.entries.is_empty());
    }
    if follow && chain == ChainName::Trace {
        let _: m::SubscribeResult = client.call(
            m::TRACE_SUBSCRIBE,
            Some(SubscribeParams {
                from_seq: Some(head.entries),
            }),
        )?;
        client.set_timeout(std::time::Duration::from_secs(365 * 24 * 3600))?;
        loop {
            let note = client.next_notification()?;
            match note.method.as_str() {
                m::TRACE_ENTRY => print_entry(ctx, chain, &note.params.unwrap_or(Value::Null)),
                m::TRACE_SUBSCRIPTION_ENDED => {
                    let reason = note
                        .params
                        .as_ref()
                        .and_then(|p| p["reason"].as_str().map(str::to_owned));
                    return Err(CliError::Failed(format!(
                        "the daemon ended the subscription ({})",
                        reason.unwrap_or_else(|| "no reason".to_owned())
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One entry: as stored (one JSON line) with `--json`, else a short line.
fn print_entry(ctx: &Context, chain: ChainName, entry: &Value) {
    if ctx.out.is_json() {
        println!("{}", serde_json::to_string(entry).unwrap_or_default());
        return;
    }
    let text = |key: &str| {
        entry
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let seq = entry.get("seq").and_then(Value::as_u64).unwrap_or_default();
    let when = text("timestamp");
    let when = when.get(..19).unwrap_or(&when).replace('T', " ");
    match chain {
        ChainName::Trace => {
            let rule = text("matched_rule");
            let risk = text("risk_level");
            println!(
                "{seq:>8}  {when}  {:<13}  {:<9}  {}/{}{}",
                text("action_taken"),
                if risk.is_empty() {
                    "-".to_owned()
                } else {
                    risk
                },
                text("session_id"),
                text("prompt_id"),
                if rule.is_empty() {
                    String::new()
                } else {
                    format!("  rule {rule}")
                }
            );
        }
        ChainName::Audit => {
            let details = entry
                .get("details")
                .map(Value::to_string)
                .unwrap_or_default();
            let details = if details.chars().count() > 100 {
                format!("{}…", details.chars().take(100).collect::<String>())
            } else {
                details
            };
            println!("{seq:>8}  {when}  {:<22}  {details}", text("event_type"));
        }
    }
}

fn show(ctx: &Context, seq: u64) -> Result<ExitCode, CliError> {
    let mut client = ctx.connect()?;
    let page: ReadResult = client.call(
        m::TRACE_READ,
        Some(ReadParams {
            from_seq: seq,
            limit: 1,
        }),
    )?;
    let Some(entry) = page
        .entries
        .into_iter()
        .find(|e| e.get("seq").and_then(Value::as_u64) == Some(seq))
    else {
        return Err(CliError::Failed(format!(
            "there is no entry with seq {seq}"
        )));
    };
    if ctx.out.is_json() {
        ctx.out.json(&entry);
    } else if let Value::Object(members) = &entry {
        let width = members.keys().map(String::len).max().unwrap_or(0);
        for (key, value) in members {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{key:<width$}  {shown}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn repair(ctx: &Context, chain: ChainName) -> Result<ExitCode, CliError> {
    let mut client = ctx.connect()?;
    let result: RepairResult = client.call(m::TRACE_REPAIR, Some(RepairParams { chain }))?;
    if ctx.out.is_json() {
        ctx.out.json(&result);
    } else {
        let from = result.continues_from.as_ref().map_or_else(
            || "the start of the chain".to_owned(),
            |h| format!("seq {} ({}…)", h.seq, &h.entry_hash[..16]),
        );
        println!(
            "repaired: new segment {} continues from {from}",
            result.new_segment
        );
        if let Some(seq) = result.audit_seq {
            println!("  recorded as audit event seq {seq}; nothing was deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export_checkpoints(ctx: &Context, out: Option<&Path>) -> Result<ExitCode, CliError> {
    let data_dir = local::data_dir(ctx)?;
    let source = chain_dir(&data_dir, ChainKind::Trace).join("checkpoints.jsonl");
    let bytes = std::fs::read(&source)
        .map_err(|e| CliError::Unreadable(format!("cannot read {}: {e}", source.display())))?;
    let count = bytes.iter().filter(|b| **b == b'\n').count();
    match out {
        Some(out) => {
            std::fs::write(out, &bytes)
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", out.display())))?;
            if ctx.out.is_json() {
                ctx.out.json(
                    &serde_json::json!({ "exported": count, "out": out.display().to_string() }),
                );
            } else {
                println!("exported {count} checkpoints to {}", out.display());
                println!(
                    "  verify later with: atlasbridge trace integrity-check --checkpoints {}",
                    out.display()
                );
            }
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| CliError::Failed(e.to_string()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
