//! `atlasbridge trace migrate`: builds a v2 chain from a v1 trace (see
//! `atlasbridge_protocol::migrate` for the mapping and why re-running is safe).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atlasbridge_protocol::migrate::{
    self, DEFAULT_OUT_DIR, MigrateError, MigrateOptions, MigrateSummary,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::print_fields;
use super::{CliError, Context, EXIT_OK};

/// Arguments of `trace migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The v1 trace: `autopilot_decisions.jsonl` (its rotated `.1`, `.2`, … are read first,
    /// oldest first), one rotated copy alone, or a data directory.
    pub source: PathBuf,
    /// Where to write the v2 segments [default: `trace-migrated/` next to SOURCE]. Running
    /// again into the same directory adds only what is new.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Leave out lines that are not v1 decisions, and list them, instead of stopping at the
    /// first one.
    #[arg(long)]
    pub skip_invalid: bool,
}

pub(crate) fn run(ctx: &Context, args: &MigrateArgs) -> Result<ExitCode, CliError> {
    let sources = migrate::source_files(&args.source).map_err(into_cli_error)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.source));
    let total: u64 = sources
        .iter()
        .filter_map(|s| std::fs::metadata(s).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress_bar(total, ctx.out.is_json());
    let options = MigrateOptions {
        skip_invalid: args.skip_invalid,
        ..MigrateOptions::default()
    };
    let result = migrate::migrate(&sources, &out, &options, &mut |read| bar.set_position(read));
    bar.finish_and_clear();
    let summary = result.map_err(into_cli_error)?;
    if ctx.out.is_json() {
        ctx.out.json(&summary);
    } else {
        print_summary(&summary);
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// `trace-migrated/` in the source's directory (or in the source, when it is a directory).
fn default_out(source: &Path) -> PathBuf {
    if source.is_dir() {
        return source.join(DEFAULT_OUT_DIR);
    }
    source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(DEFAULT_OUT_DIR)
}

/// A byte-count bar on a terminal; nothing at all when stderr is not one or JSON was asked for.
fn progress_bar(total: u64, json: bool) -> ProgressBar {
    let target = if json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "migrating {bar:30} {binary_bytes}/{binary_total_bytes} ({eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

fn into_cli_error(error: MigrateError) -> CliError {
    match error {
        MigrateError::NoSource(_) | MigrateError::Io { .. } | MigrateError::Verify(_) => {
            CliError::Unreadable(error.to_string())
        }
        MigrateError::Invalid(_) | MigrateError::OutputBroken { .. } => {
            CliError::Failed(error.to_string())
        }
    }
}

fn print_summary(summary: &MigrateSummary) {
    if summary.migrated == 0 {
        println!(
            "nothing to migrate: {} already holds all {} v1 decisions",
            summary.out.display(),
            summary.already_migrated
        );
    } else {
        println!(
            "migrated {} v1 decisions into {}",
            summary.migrated,
            summary.out.display()
        );
    }
    let sources: Vec<String> = summary
        .sources
        .iter()
        .map(|s| s.display().to_string())
        .collect();
    let mut fields = vec![
        ("read", sources.join(", ")),
        ("already there", summary.already_migrated.to_string()),
    ];
    if let Some(head) = &summary.head {
        fields.push(("head", format!("seq {} {}", head.seq, head.entry_hash)));
    }
    if !summary.skipped.is_empty() {
        fields.push((
            "skipped",
            format!("{} invalid lines", summary.skipped.len()),
        ));
    }
    print_fields(&fields);
    for skipped in &summary.skipped {
        println!("  skipped {skipped}");
    }
}
