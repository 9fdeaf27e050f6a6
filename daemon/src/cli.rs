//! The `atlasbridged` command line and its start-up sequence.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use atlasbridge_protocol::paths::{self, ProcessEnvironment};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::LogFormat;
use crate::ipc::{server, socket};
use crate::lifecycle;
use crate::service_notify::{self, ServiceNotifier};
use crate::state::{Daemon, Settings, StartOptions};

/// Exit status for an unusable config, edition or flag (EX_CONFIG): systemd units list it in
/// `RestartPreventExitStatus` so a bad config does not restart in a loop.
pub const EXIT_CONFIG: u8 = 78;

/// The AtlasBridge governance daemon. Runs in the foreground; systemd or launchd supervise it.
#[derive(Debug, Parser)]
#[command(name = "atlasbridged", version, about, long_about = None)]
pub struct Args {
    /// Socket to listen on [default: $ATLASBRIDGE_SOCKET, else $XDG_RUNTIME_DIR/atlasbridge/atlasbridged.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Data directory [default: $ATLASBRIDGE_DATA_DIR, else ~/.local/share/atlasbridge].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Config file [default: $ATLASBRIDGE_CONFIG, else ~/.config/atlasbridge/config.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Edition: community, pro or enterprise [default: $ATLASBRIDGE_EDITION, else config, else community].
    #[arg(long, value_name = "EDITION")]
    pub edition: Option<String>,
    /// Log format [default: the config's, else text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Entry point of the `atlasbridged` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let env = ProcessEnvironment;
    let options = match start_options(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("atlasbridged: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = match Settings::load(&options.config_location, args.edition.as_deref(), &env) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("atlasbridged: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log_format = args.log_format.unwrap_or(settings.config.logging.format);
    if let Err(e) = crate::logging::init(log_format, &settings.config.logging.level) {
        eprintln!("atlasbridged: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    for warning in settings.features.warnings() {
        warn!("{warning}");
    }
    for warning in crate::roles::warnings(&settings) {
        warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("atlasbridged: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("atlasbridged: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start_options(args: &Args) -> anyhow::Result<StartOptions> {
    let env = ProcessEnvironment;
    Ok(StartOptions {
        socket: paths::socket_path(args.socket.as_deref(), &env)?,
        data_dir: paths::data_dir(args.data_dir.as_deref(), &env)?,
        config_location: paths::config_file(args.config.as_deref(), &env)?,
        cli_edition: args.edition.clone(),
    })
}

/// Claims the socket, opens the stores, serves until a stop signal or `daemon.shutdown`, then
/// drains, writes a final checkpoint and closes the stores.
pub async fn run(options: StartOptions, settings: Settings) -> anyhow::Result<()> {
    create_private_dir(&options.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            options.data_dir.display()
        )
    })?;
    let (_lock, listener, replaced_stale) =
        socket::claim(&options.socket, crate::roles::socket_group(&settings))?;
    if replaced_stale {
        warn!(socket = %options.socket.display(), "replaced a stale socket left by a daemon that did not stop cleanly");
    }
    let (stores, writer_threads, findings) = tokio::task::block_in_place(|| {
        lifecycle::open_stores(&options.data_dir, &settings.config.trace)
    })?;
    let daemon = Daemon::new(options, settings, stores);
    let settings = daemon.settings();
    info!(
        version = crate::VERSION,
        pid = std::process::id(),
        socket = %daemon.socket().display(),
        data_dir = %daemon.data_dir().display(),
        config = %settings.config_file.as_ref().map_or("(embedded defaults)".to_owned(), |p| p.display().to_string()),
        edition = %settings.features.edition(),
        durability = ?settings.config.trace.durability,
        "atlasbridged started"
    );
    lifecycle::audit_startup(&daemon, &findings, replaced_stale).await;
    // A policy that does not load leaves none active: decisions then fail closed with -32001.
    let _ = lifecycle::load_policy(&daemon, None, crate::audit::Actor::Daemon).await;

    let stop_checkpoints = CancellationToken::new();
    let checkpoints = tokio::spawn(lifecycle::run_checkpoints(
        Arc::clone(&daemon),
        stop_checkpoints.clone(),
    ));
    // Off by default: then this starts nothing and the daemon opens no network socket.
    let uplink = crate::cloud::start(&daemon);
    let notifier = Arc::new(ServiceNotifier::from_environment());
    let signals = tokio::spawn(crate::signals::watch(
        Arc::clone(&daemon),
        Arc::clone(&notifier),
    ));
    // Pinged from this runtime, so a wedged runtime stops the pings and systemd restarts us.
    let watchdog = service_notify::watchdog_interval()
        .filter(|_| notifier.is_active())
        .map(|interval| {
            let notifier = Arc::clone(&notifier);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                loop {
                    ticks.tick().await;
                    notifier.watchdog();
                }
            })
        });
    let tracker = TaskTracker::new();
    notifier.ready(&format!("listening on {}", daemon.socket().display()));
    server::accept_loop(listener, Arc::clone(&daemon), tracker.clone()).await;
    notifier.stopping("finishing in-flight requests");

    tracker.close();
    let grace = settings.config.daemon.shutdown_timeout;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(
            grace_s = grace.as_secs(),
            "in-flight requests did not finish in time; exiting anyway"
        );
    }
    if let Some(uplink) = uplink {
        uplink.stop().await;
    }
    stop_checkpoints.cancel();
    if let Err(e) = checkpoints.await {
        warn!(error = %e, "the checkpoint task failed");
    }
    lifecycle::shutdown_stores(&daemon, writer_threads, "stop requested").await;
    signals.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    info!("atlasbridged stopped");
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
