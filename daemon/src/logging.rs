//! Log output: `tracing` to stderr (the journal under systemd), as text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Overrides the log filter, e.g. `ATLASBRIDGE_LOG=atlasbridged=debug`.
pub const LOG_ENV: &str = "ATLASBRIDGE_LOG";

/// The filter could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter '{filter}' (from {origin}): {message}")]
pub struct LogFilterError {
    filter: String,
    origin: &'static str,
    message: String,
}

/// Installs the global subscriber. `level` is the config's `[logging] level`; `ATLASBRIDGE_LOG`
/// takes precedence.
pub fn init(format: LogFormat, level: &str) -> Result<(), LogFilterError> {
    let (filter, origin) = match std::env::var(LOG_ENV) {
        Ok(value) if !value.is_empty() => (value, LOG_ENV),
        _ => (level.to_owned(), "[logging] level"),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| LogFilterError {
        filter: filter.clone(),
        origin,
        message: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init` fails only if a subscriber is already installed (tests); that one stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    Ok(())
}
