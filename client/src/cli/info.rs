//! `status`, `edition`, `features`.

use std::process::ExitCode;

use atlasbridge_protocol::features::Edition;
use atlasbridge_protocol::paths::EDITION_ENV;

use super::output::{duration, print_fields, print_table};
use super::{CliError, Context};

pub(super) fn status(ctx: &Context) -> Result<ExitCode, CliError> {
    let mut client = ctx.connect()?;
    let status = client.status()?;
    if ctx.out.is_json() {
        ctx.out.json(&status);
        return Ok(ExitCode::SUCCESS);
    }
    let edition = client.edition()?;
    println!(
        "atlasbridged {} running (pid {}, up {})",
        status.version,
        status.pid,
        duration(status.uptime_s)
    );
    let mut fields = vec![
        (
            "edition",
            format!("{} (from {})", edition.edition, edition.source),
        ),
        ("socket", status.socket),
        ("data", status.data_dir),
        ("cloud", status.cloud.state),
    ];
    if let Some(role) = status.role {
        fields.push(("your role", role.to_string()));
    }
    print_fields(&fields);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn edition(ctx: &Context) -> Result<ExitCode, CliError> {
    let info = ctx.connect()?.edition()?;
    if ctx.out.is_json() {
        ctx.out.json(&info);
    } else {
        println!(
            "{} (from {}) — atlasbridged {}",
            info.edition, info.source, info.version
        );
        note_local_edition(info.edition);
    }
    Ok(ExitCode::SUCCESS)
}

/// The edition is the daemon's: a different `ATLASBRIDGE_EDITION` in this shell changes nothing
/// until the daemon restarts, which is easy to miss.
fn note_local_edition(daemon_edition: Edition) {
    let Ok(local) = std::env::var(EDITION_ENV) else {
        return;
    };
    if local.parse::<Edition>().is_ok_and(|e| e != daemon_edition) {
        eprintln!(
            "note: {EDITION_ENV}={local} is set in this shell, but the running daemon uses {daemon_edition}; \
             restart it (atlasbridge daemon stop && atlasbridge daemon start) to apply"
        );
    }
}

pub(super) fn features(ctx: &Context) -> Result<ExitCode, CliError> {
    let list = ctx.connect()?.features()?;
    if ctx.out.is_json() {
        ctx.out.json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    println!("edition {} (from {})\n", list.edition, list.edition_source);
    note_local_edition(list.edition);
    let rows: Vec<Vec<String>> = list
        .features
        .iter()
        .map(|f| {
            vec![
                f.name.to_string(),
                if f.enabled { "on" } else { "off" }.to_owned(),
                f.enabled_from.to_string(),
                f.source.to_string(),
                f.description.clone(),
            ]
        })
        .collect();
    print_table(&["FEATURE", "STATE", "ON FROM", "SOURCE", "GATES"], &rows);
    Ok(ExitCode::SUCCESS)
}
