//! `daemon start|stop|status`.
//!
//! `start` spawns `atlasbridged` detached (its own process group, stdin closed, output to a log
//! file in the data directory) and returns once the socket answers. The daemon itself never
//! forks: under systemd or launchd it is started directly and stays in the foreground.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use atlasbridge_protocol::paths::{self, ProcessEnvironment};
use clap::Subcommand;
use serde::Serialize;

use super::output::{duration, print_fields};
use super::{CliError, Context, EXIT_UNAVAILABLE};
use crate::{ClientError, blocking};

/// Names the daemon binary to start, overriding the search next to `atlasbridge` and on PATH.
pub const DAEMON_BIN_ENV: &str = "ATLASBRIDGE_DAEMON_BIN";

/// The daemon process.
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start atlasbridged in the background and wait until it answers.
    Start {
        /// Data directory for the daemon [default: $ATLASBRIDGE_DATA_DIR, else the per-user one].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Config file for the daemon.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Edition for the daemon: community, pro or enterprise.
        #[arg(long, value_name = "EDITION")]
        edition: Option<String>,
        /// Seconds to wait for the daemon to answer.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        wait: u64,
    },
    /// Ask atlasbridged to finish in-flight work and exit, and wait until it has.
    Stop {
        /// Seconds to wait for the process to exit.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        wait: u64,
    },
    /// Whether atlasbridged is running, and its process facts.
    Status,
}

pub(super) fn run(ctx: &Context, command: &DaemonCommand) -> Result<ExitCode, CliError> {
    match command {
        DaemonCommand::Start {
            data_dir,
            config,
            edition,
            wait,
        } => start(
            ctx,
            &StartArgs {
                data_dir: data_dir.as_deref(),
                config: config.as_deref(),
                edition: edition.as_deref(),
            },
            Duration::from_secs(*wait),
        ),
        DaemonCommand::Stop { wait } => stop(ctx, Duration::from_secs(*wait)),
        DaemonCommand::Status => status(ctx),
    }
}

struct StartArgs<'a> {
    data_dir: Option<&'a Path>,
    config: Option<&'a Path>,
    edition: Option<&'a str>,
}

#[derive(Serialize)]
struct StartReport {
    started: bool,
    pid: u32,
    socket: String,
    log: Option<String>,
}

fn start(ctx: &Context, args: &StartArgs<'_>, wait: Duration) -> Result<ExitCode, CliError> {
    if let Ok(mut client) = ctx.connect()
        && let Ok(status) = client.status()
    {
        let report = StartReport {
            started: false,
            pid: status.pid,
            socket: status.socket,
            log: None,
        };
        if ctx.out.is_json() {
            ctx.out.json(&report);
        } else {
            println!(
                "atlasbridged is already running (pid {}) on {}",
                report.pid, report.socket
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let data_dir = paths::data_dir(args.data_dir, &ProcessEnvironment)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let log_path = data_dir.join("logs").join("atlasbridged.log");
    let log = open_log(&log_path).map_err(|e| {
        CliError::Failed(format!(
            "cannot open the daemon log {}: {e}",
            log_path.display()
        ))
    })?;
    let log_err = log
        .try_clone()
        .map_err(|e| CliError::Failed(e.to_string()))?;

    let binary = daemon_binary();
    let mut command = Command::new(&binary);
    command
        .arg("--socket")
        .arg(&ctx.socket)
        .arg("--data-dir")
        .arg(&data_dir);
    if let Some(config) = args.config {
        command.arg("--config").arg(config);
    }
    if let Some(edition) = args.edition {
        command.arg("--edition").arg(edition);
    }
    command.stdin(Stdio::null()).stdout(log).stderr(log_err);
    // Its own process group: a Ctrl-C in this terminal must not reach the daemon.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| {
        CliError::Failed(format!(
            "cannot start {}: {e} (set {DAEMON_BIN_ENV} to the daemon binary)",
            binary.display()
        ))
    })?;

    let pid = wait_until_answering(ctx, &mut child, &log_path, wait)?;
    let report = StartReport {
        started: true,
        pid,
        socket: ctx.socket.display().to_string(),
        log: Some(log_path.display().to_string()),
    };
    if ctx.out.is_json() {
        ctx.out.json(&report);
    } else {
        println!("atlasbridged started (pid {pid}) on {}", report.socket);
        println!("  log: {}", log_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// `$ATLASBRIDGE_DAEMON_BIN`, else `atlasbridged` next to this executable, else on `PATH`.
pub(super) fn daemon_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(DAEMON_BIN_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(bin);
    }
    let name = format!("atlasbridged{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
        .filter(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Polls the socket with a growing pause until the daemon answers, the child exits, or time
/// runs out.
fn wait_until_answering(
    ctx: &Context,
    child: &mut Child,
    log: &Path,
    wait: Duration,
) -> Result<u32, CliError> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Ok(mut client) = blocking::Client::connect(&ctx.socket)
            && let Ok(status) = client.status()
        {
            return Ok(status.pid);
        }
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(CliError::Failed(format!(
                "atlasbridged exited ({exit}) before answering: {}",
                last_line(log).unwrap_or_else(|| format!("see {}", log.display()))
            )));
        }
        if Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "atlasbridged (pid {}) did not answer on {} within {}s; see {}",
                child.id(),
                ctx.socket.display(),
                wait.as_secs(),
                log.display()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn last_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
}

#[derive(Serialize)]
struct StopReport {
    stopped: bool,
    pid: Option<u32>,
}

fn stop(ctx: &Context, wait: Duration) -> Result<ExitCode, CliError> {
    let mut client = match ctx.connect() {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) => {
            if ctx.out.is_json() {
                ctx.out.json(&StopReport {
                    stopped: false,
                    pid: None,
                });
            } else {
                println!("atlasbridged is not running");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    let pid = client.status()?.pid;
    client.shutdown()?;
    drop(client);
    let deadline = Instant::now() + wait;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "atlasbridged (pid {pid}) is still running after {}s",
                wait.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if ctx.out.is_json() {
        ctx.out.json(&StopReport {
            stopped: true,
            pid: Some(pid),
        });
    } else {
        println!("atlasbridged stopped (pid {pid})");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // Signal 0 checks existence; EPERM would mean it exists under another user.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    false
}

fn status(ctx: &Context) -> Result<ExitCode, CliError> {
    let status = match ctx.connect().and_then(|mut c| c.status()) {
        Ok(status) => status,
        Err(ClientError::NotRunning { .. }) => {
            let message = format!(
                "atlasbridged is not running on {}; start it with `{}`",
                ctx.socket.display(),
                ctx.start_command()
            );
            if ctx.out.is_json() {
                ctx.out.json(&serde_json::json!({
                    "running": false,
                    "socket": ctx.socket.display().to_string(),
                }));
            }
            eprintln!("{message}");
            return Ok(ExitCode::from(EXIT_UNAVAILABLE));
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.out.is_json() {
        let mut report =
            serde_json::to_value(&status).map_err(|e| CliError::Failed(e.to_string()))?;
        if let Some(object) = report.as_object_mut() {
            object.insert("running".to_owned(), serde_json::Value::Bool(true));
        }
        ctx.out.json(&report);
        return Ok(ExitCode::SUCCESS);
    }
    println!("atlasbridged is running");
    print_fields(&[
        ("pid", status.pid.to_string()),
        ("version", status.version),
        ("uptime", duration(status.uptime_s)),
        ("socket", status.socket),
        ("data", status.data_dir),
        (
            "config",
            status
                .config_file
                .unwrap_or_else(|| "(embedded defaults)".to_owned()),
        ),
        ("clients", status.connections.to_string()),
    ]);
    Ok(ExitCode::SUCCESS)
}
