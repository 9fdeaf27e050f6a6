//! `doctor`: what is wrong with this installation, and the command that fixes it.
//!
//! Each check prints one line, `ok|warn|fail  <check>: <finding>`, and for anything not ok the
//! fix. The checks work with the daemon stopped (then the files are read directly) and never
//! change anything: files are opened for reading only, the daemon is only asked questions, and
//! `atlasbridged --version` is the only program run.
//!
//! This file finds the facts; [`checks`] turns them into verdicts with pure functions, so that
//! every verdict is tested without a daemon.

mod chain;
mod checks;
mod config;

pub use config::{CONFIG_KEYS, ConfigKey, FEATURES_SECTION, ValueKind};

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use atlasbridge_protocol::ErrorCode;
use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::flags::FeatureSet;
use atlasbridge_protocol::methods::{self as m, CloudStatusResult, PolicyStatus};
use atlasbridge_protocol::paths::{self, Environment, ProcessEnvironment};
use atlasbridge_protocol::policy;
use atlasbridge_protocol::trace::verify::ChainKind;
use serde::Serialize;

use self::checks::{
    ActivePolicy, BinarySource, ChainView, Check, CloudFacts, CloudView, Commands, ConfigFacts,
    ConfigState, DaemonBinary, DaemonProbe, DirState, Item, KeyFile, Leftover, PolicyFile,
    PolicySummary, Role, Status,
};
use super::{CliError, Context, DAEMON_BIN_ENV, EXIT_FAILURE, EXIT_OK};
use crate::{ClientError, blocking};

/// The environment variable that holds the cloud API key (the daemon's `API_KEY_ENV`).
const CLOUD_API_KEY_ENV: &str = "ATLASBRIDGE_CLOUD_API_KEY";

/// How long the daemon may take to answer one of `doctor`'s questions.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `atlasbridged --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// What to check, when it is not the running daemon's or the default.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The data directory to check [default: the running daemon's, else $ATLASBRIDGE_DATA_DIR,
    /// else the per-user one].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The config file to check [default: the running daemon's, else $ATLASBRIDGE_CONFIG, else
    /// the per-user one].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report<'a> {
    checks: &'a [Check],
    ok: bool,
}

pub(super) fn run(ctx: &Context, args: &DoctorArgs) -> Result<ExitCode, CliError> {
    let checks = examine(ctx, args)?;
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    if ctx.out.is_json() {
        ctx.out.json(&Report {
            checks: &checks,
            ok,
        });
    } else {
        for check in &checks {
            println!(
                "{:<4}  {}: {}",
                check.status.name(),
                check.name,
                check.detail
            );
            if let Some(fix) = &check.fix {
                println!("  fix: {fix}");
            }
        }
        let count = |status| checks.iter().filter(|c| c.status == status).count();
        println!(
            "{} ok, {} warn, {} fail",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail)
        );
    }
    Ok(ExitCode::from(if ok { EXIT_OK } else { EXIT_FAILURE }))
}

/// Finds the facts and runs every check, in the order they are printed.
fn examine(ctx: &Context, args: &DoctorArgs) -> Result<Vec<Check>, CliError> {
    let env = ProcessEnvironment;
    let cli_version = env!("CARGO_PKG_VERSION");
    let (probe, mut client) = probe_daemon(ctx);
    let status = probe.status().cloned();
    let commands = Commands {
        cli: match &ctx.socket_flag {
            Some(socket) => format!("atlasbridge --socket {}", checks::shell_quote(socket)),
            None => "atlasbridge".to_owned(),
        },
        running: status.is_some(),
    };
    let uid = current_uid();

    let (data_dir, data_source) = match (&args.data_dir, &status) {
        (Some(dir), _) => (absolute(dir), "--data-dir"),
        (None, Some(status)) => (PathBuf::from(&status.data_dir), "the running daemon's"),
        (None, None) => (
            paths::data_dir(None, &env).map_err(|e| CliError::Failed(e.to_string()))?,
            if env.non_empty(paths::DATA_DIR_ENV).is_some() {
                "ATLASBRIDGE_DATA_DIR"
            } else {
                "the per-user default"
            },
        ),
    };
    let config = config_facts(args, status.as_ref(), &env)?;
    let config_file = config.state.file();

    let mut found = Vec::new();
    found.push(checks::binaries(
        cli_version,
        locate_daemon().as_ref(),
        status.is_some(),
    ));
    found.push(checks::socket(
        &ctx.socket,
        &probe,
        cli_version,
        &data_dir.join("logs").join("atlasbridged.log"),
        &commands,
    ));
    let api_key_file = config_file.and_then(|f| f.cloud.api_key_file.clone());
    found.push(checks::permissions(
        &private_paths(&ctx.socket, &data_dir, api_key_file.as_deref()),
        uid,
    ));
    found.push(checks::data_dir(
        &data_dir,
        data_source,
        &dir_state(&data_dir),
        uid,
        &commands,
    ));
    found.push(checks::config(&config, &commands));

    let policy_file = match &config.state {
        ConfigState::Absent => PolicyFile::BuiltIn,
        ConfigState::Valid(file) => match &file.policy_file {
            None => PolicyFile::BuiltIn,
            Some(path) => PolicyFile::File {
                path: path.clone(),
                result: validate_policy(path),
            },
        },
        ConfigState::Unreadable(_) | ConfigState::Invalid(_) => PolicyFile::Unknown,
    };
    let active = match client.as_mut() {
        None => ActivePolicy::NotRunning,
        Some(client) => match client.call::<_, PolicyStatus>(m::POLICY_STATUS, None::<()>) {
            Ok(status) => ActivePolicy::Active(status),
            Err(ClientError::Rpc(e)) if e.code == ErrorCode::NoActivePolicy => {
                ActivePolicy::NoneActive
            }
            Err(e) => ActivePolicy::Unknown(e.to_string()),
        },
    };
    found.push(checks::policy(&policy_file, &active, &commands));

    // The daemon's word on its own data directory; files for any other, or when it is stopped.
    let daemon_chains = status
        .as_ref()
        .filter(|s| Path::new(&s.data_dir) == data_dir.as_path());
    for kind in [ChainKind::Trace, ChainKind::Audit] {
        let view = match daemon_chains {
            Some(status) => ChainView::FromDaemon {
                health: status.health.clone(),
                chain: match kind {
                    ChainKind::Trace => status.trace.chain.clone(),
                    ChainKind::Audit => status.audit.clone(),
                },
                format: (kind == ChainKind::Trace).then(|| status.trace.format.clone()),
            },
            None => ChainView::FromFiles(chain::inspect(&data_dir, kind)),
        };
        found.push(checks::chain(kind, &view, &commands));
    }

    let measured = existing_ancestor(&data_dir);
    found.push(checks::disk(&measured, &free_space(&measured)));

    let section = match &config.state {
        ConfigState::Absent => Some(config::CloudSection::default()),
        ConfigState::Valid(file) => Some(file.cloud.clone()),
        ConfigState::Unreadable(_) | ConfigState::Invalid(_) => None,
    };
    let channel_enabled = match client.as_mut().map(blocking::Client::features) {
        Some(Ok(list)) => list
            .features
            .iter()
            .any(|f| f.name == Feature::CloudControlChannel && f.enabled),
        _ => {
            let flags = config_file.map(|f| f.flags.clone()).unwrap_or_default();
            FeatureSet::resolve(None, &env, &flags)
                .is_ok_and(|set| set.is_enabled(Feature::CloudControlChannel))
        }
    };
    let running = match client.as_mut() {
        None => CloudView::NotRunning,
        Some(client) => match client.call::<_, CloudStatusResult>(m::CLOUD_STATUS, None::<()>) {
            Ok(status) => CloudView::Status(Box::new(status)),
            Err(e) => CloudView::Unknown(e.to_string()),
        },
    };
    let cloud = CloudFacts {
        key_file: section
            .as_ref()
            .and_then(|s| s.api_key_file.as_deref())
            .map(key_file),
        ca_file_exists: section
            .as_ref()
            .and_then(|s| s.ca_file.as_deref())
            .map(Path::is_file),
        section,
        env_key: std::env::var(CLOUD_API_KEY_ENV).is_ok_and(|k| !k.trim().is_empty()),
        channel_enabled,
        running,
    };
    found.push(checks::cloud(&cloud, &commands));
    Ok(found)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Asks the daemon for its status; keeps the connection for the other questions.
fn probe_daemon(ctx: &Context) -> (DaemonProbe, Option<blocking::Client>) {
    let mut client = match blocking::Client::connect(&ctx.socket) {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) => {
            return (DaemonProbe::NotRunning(leftover(&ctx.socket)), None);
        }
        Err(e) => return (DaemonProbe::Unreachable(e.to_string()), None),
    };
    if let Err(e) = client.set_timeout(DAEMON_TIMEOUT.min(ctx.timeout)) {
        return (DaemonProbe::Unreachable(e.to_string()), None);
    }
    match client.status() {
        Ok(status) => (DaemonProbe::Running(Box::new(status)), Some(client)),
        Err(e) => (DaemonProbe::Unreachable(e.to_string()), None),
    }
}

/// What is at the socket path when nothing listens there.
fn leftover(socket: &Path) -> Leftover {
    match std::fs::symlink_metadata(socket) {
        Err(_) => Leftover::Nothing,
        Ok(meta) if is_socket(&meta) => Leftover::StaleSocket,
        Ok(_) => Leftover::NotASocket,
    }
}

#[cfg(unix)]
fn is_socket(meta: &std::fs::Metadata) -> bool {
    std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
}

#[cfg(not(unix))]
fn is_socket(_meta: &std::fs::Metadata) -> bool {
    false
}

/// The daemon binary `daemon start` would run: `$ATLASBRIDGE_DAEMON_BIN`, else `atlasbridged`
/// next to this executable, else on `PATH` — and what its `--version` prints.
fn locate_daemon() -> Option<DaemonBinary> {
    let name = format!("atlasbridged{}", std::env::consts::EXE_SUFFIX);
    let (path, source) = if let Some(bin) = std::env::var_os(DAEMON_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    {
        (bin, BinarySource::Env)
    } else if let Some(next) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
        .filter(|candidate| candidate.is_file())
    {
        (next, BinarySource::NextToCli)
    } else {
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(&name))
                .find(|candidate| candidate.is_file())
        })?;
        (on_path, BinarySource::Path)
    };
    let version = version_of(&path);
    Some(DaemonBinary {
        path,
        source,
        version,
    })
}

/// Runs `binary --version` with a deadline.
fn version_of(binary: &Path) -> Result<String, String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", VERSION_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("it exited with {}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The config file to check: `--config`, else the running daemon's, else where the daemon
/// would look.
fn config_facts(
    args: &DoctorArgs,
    status: Option<&m::DaemonStatus>,
    env: &impl Environment,
) -> Result<ConfigFacts, CliError> {
    let (path, source, explicit) = match (&args.config, status.and_then(|s| s.config_file.as_ref()))
    {
        (Some(path), _) => (absolute(path), "--config", true),
        (None, Some(loaded)) => (PathBuf::from(loaded), "the running daemon's", true),
        (None, None) => {
            let location =
                paths::config_file(None, env).map_err(|e| CliError::Failed(e.to_string()))?;
            let source = if location.explicit {
                "ATLASBRIDGE_CONFIG"
            } else {
                "the per-user default"
            };
            (location.path, source, location.explicit)
        }
    };
    let state = match std::fs::read_to_string(&path) {
        Ok(text) => match config::parse(&text, &path) {
            Ok(file) => ConfigState::Valid(file),
            Err(problems) => ConfigState::Invalid(problems),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigState::Absent,
        Err(e) => ConfigState::Unreadable(format!("cannot read it: {e}")),
    };
    Ok(ConfigFacts {
        path,
        source,
        explicit,
        state,
        daemon_loaded: status.map(|s| s.config_file.clone()),
    })
}

/// The configured policy file, through the loader of `atlasbridge policy validate`.
fn validate_policy(path: &Path) -> Result<PolicySummary, Vec<policy::PolicyError>> {
    match policy::load_file(path) {
        Ok(loaded) => Ok(PolicySummary {
            name: loaded.policy.name.clone(),
            hash: loaded.hash.clone(),
            rules: loaded.policy.rules.len(),
            autonomy: loaded.policy.autonomy_mode.as_str().to_owned(),
            source: loaded
                .sources
                .first()
                .cloned()
                .unwrap_or_else(|| path.to_path_buf()),
        }),
        Err(e) => Err(e.errors),
    }
}

/// The files the daemon keeps private: the socket's directory and the socket, the data
/// directory, `keys/` with the identity and checkpoint epoch keys, and the cloud API key file.
fn private_paths(socket: &Path, data_dir: &Path, api_key_file: Option<&Path>) -> Vec<Item> {
    let keys = data_dir.join("keys");
    let mut items = Vec::new();
    if let Some(dir) = socket.parent() {
        items.push(item(Role::SocketDir, dir, false));
    }
    let socket_item = item(Role::Socket, socket, false);
    // Something else at the socket path is the socket check's finding.
    if socket_item
        .meta
        .is_some_and(|m| m.kind == checks::FileKind::Socket)
    {
        items.push(socket_item);
    }
    items.push(item(Role::PrivateDir, data_dir, true));
    items.push(item(Role::PrivateDir, &keys, true));
    for name in ["identity.key", "epoch.key", "epoch.key.next"] {
        items.push(item(Role::Secret, &keys.join(name), true));
    }
    if let Some(file) = api_key_file {
        items.push(item(Role::Secret, file, true));
    }
    items
}

fn item(role: Role, path: &Path, follow: bool) -> Item {
    Item {
        role,
        path: path.to_path_buf(),
        meta: meta_of(path, follow),
    }
}

#[cfg(unix)]
fn meta_of(path: &Path, follow: bool) -> Option<checks::Meta> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use self::checks::FileKind;
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .ok()?;
    let kind = meta.file_type();
    Some(checks::Meta {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        kind: if kind.is_symlink() {
            FileKind::Symlink
        } else if kind.is_dir() {
            FileKind::Dir
        } else if kind.is_file() {
            FileKind::File
        } else if kind.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Other
        },
    })
}

/// Modes and owners are not checked where there are none.
#[cfg(not(unix))]
fn meta_of(_path: &Path, _follow: bool) -> Option<checks::Meta> {
    None
}

#[cfg(unix)]
fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

fn dir_state(dir: &Path) -> DirState {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirState::Missing,
        Err(e) => DirState::Unreadable(e.to_string()),
        Ok(_) => match meta_of(dir, true) {
            Some(meta) => DirState::Present {
                meta,
                writable: writable(dir),
            },
            None => DirState::Unreadable("no owner or mode on this platform".to_owned()),
        },
    }
}

/// Whether this user may create files in `dir`, asked of the kernel without creating one.
#[cfg(unix)]
fn writable(dir: &Path) -> bool {
    rustix::fs::access(
        dir,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .is_ok()
}

#[cfg(not(unix))]
fn writable(_dir: &Path) -> bool {
    true
}

/// `path`, or its nearest ancestor that exists (the data directory may not exist yet).
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(path)
        .to_path_buf()
}

/// `(available to this user, size)` of the filesystem holding `path`, in bytes.
#[cfg(unix)]
fn free_space(path: &Path) -> Result<(u64, u64), String> {
    let stats = rustix::fs::statvfs(path).map_err(|e| e.to_string())?;
    Ok((
        stats.f_bavail.saturating_mul(stats.f_frsize),
        stats.f_blocks.saturating_mul(stats.f_frsize),
    ))
}

#[cfg(not(unix))]
fn free_space(_path: &Path) -> Result<(u64, u64), String> {
    Err("not measured on this platform".to_owned())
}

fn key_file(path: &Path) -> KeyFile {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile::Missing,
        Err(e) => KeyFile::Unreadable(e.to_string()),
        Ok(meta) => KeyFile::Present {
            mode: meta_of(path, true).map_or(0o600, |m| m.mode),
            empty: meta.len() == 0,
        },
    }
}
